//! The dead-letter topic `<topic>.dlq`: messages a consumer group could not write, with
//! headers naming the error, where they came from and which group sent them aside. The
//! original key and payload are kept unchanged so a replay re-publishes exactly what came.

use std::time::Duration;

use auction_common::config::KafkaConfig;
use auction_common::domain::{format_ts, now_micros};
use auction_common::kafka;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

pub const ERROR_HEADER: &str = "dlq.error";
pub const CLASS_HEADER: &str = "dlq.class";
pub const SOURCE_TOPIC_HEADER: &str = "dlq.source.topic";
pub const SOURCE_PARTITION_HEADER: &str = "dlq.source.partition";
pub const SOURCE_OFFSET_HEADER: &str = "dlq.source.offset";
pub const GROUP_HEADER: &str = "dlq.group";
pub const AT_HEADER: &str = "dlq.at";
/// On a re-published dead letter: the group that sent it aside. Other groups already handled
/// the original, so they pass it over.
pub const REPLAY_GROUP_HEADER: &str = "dlq.replay.group";
/// On a re-published dead letter: `<dlq topic>/<partition>/<offset>` it came from.
pub const REPLAY_OF_HEADER: &str = "dlq.replay.of";

pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterClass {
    /// The message is malformed in itself: no wire-format header, Avro that does not decode
    /// with the schema it names, a record that breaks a bid rule.
    Poison,
    /// A sink refused this one bid for what it is (e.g. MySQL "data too long").
    Rejected,
}

impl DeadLetterClass {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterClass::Poison => "poison",
            DeadLetterClass::Rejected => "rejected",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "poison" => Some(DeadLetterClass::Poison),
            "rejected" => Some(DeadLetterClass::Rejected),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub error: String,
    pub class: DeadLetterClass,
    pub source_topic: String,
    pub partition: i32,
    pub offset: i64,
    pub group: String,
}

/// Creates `<topic>.dlq` (one partition) if it does not exist yet.
pub async fn ensure_dlq_topic(config: &KafkaConfig) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = kafka::client_config(config).create()?;
    let name = dlq_topic(&config.topic);
    let topic = NewTopic::new(&name, 1, TopicReplication::Fixed(-1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&topic], &options).await? {
        match result {
            Ok(_) => log::info!("created dead-letter topic {name}"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}

/// Produces the original key and payload to the dead-letter topic with headers saying why and
/// from where; returns once the broker acked it.
pub async fn send(
    producer: &FutureProducer,
    dlq_topic: &str,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    letter: &DeadLetter,
) -> Result<(), KafkaError> {
    let (partition, offset, at) = (letter.partition.to_string(), letter.offset.to_string(), format_ts(&now_micros()));
    let headers = OwnedHeaders::new()
        .insert(Header { key: ERROR_HEADER, value: Some(letter.error.as_str()) })
        .insert(Header { key: CLASS_HEADER, value: Some(letter.class.as_str()) })
        .insert(Header { key: SOURCE_TOPIC_HEADER, value: Some(letter.source_topic.as_str()) })
        .insert(Header { key: SOURCE_PARTITION_HEADER, value: Some(partition.as_str()) })
        .insert(Header { key: SOURCE_OFFSET_HEADER, value: Some(offset.as_str()) })
        .insert(Header { key: GROUP_HEADER, value: Some(letter.group.as_str()) })
        .insert(Header { key: AT_HEADER, value: Some(at.as_str()) });
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(dlq_topic).headers(headers);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    producer.send(record, Timeout::After(Duration::from_secs(5))).await.map(|_| ()).map_err(|(e, _)| e)
}

/// The group a re-published dead letter is meant for, if the message is one.
pub fn replayed_for_group<H: Headers>(headers: &H) -> Option<String> {
    headers
        .iter()
        .find(|h| h.key == REPLAY_GROUP_HEADER)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
