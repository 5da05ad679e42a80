//! The dead-letter topic `<topic>.dlq`, and the `dlq list` and `dlq replay` commands.
//!
//! A consumer group sends a message there when it can never write it: the message is malformed
//! in itself ([`DeadLetterClass::Poison`]) or a sink refused that one bid for good
//! ([`DeadLetterClass::Rejected`]). The dead letter is the original key and payload, unchanged,
//! with string headers saying why, from where and for which group ([`send`]).
//!
//! Guarantees:
//! - [`send`] returns `Ok` only once the broker acked the dead letter, so a consumer may store
//!   the source offset right after it: the message has left the partition only once it is here.
//! - `dlq list` reads every partition of the dead-letter topic from its beginning up to the end
//!   offsets it saw when it started, then stops. It joins no group and commits nothing.
//! - `dlq replay` re-publishes each dead letter to its source topic with the same key and
//!   payload, plus [`REPLAY_GROUP_HEADER`] (the group that dead-lettered it: only that group
//!   handles the copy, the others already handled the original) and [`REPLAY_OF_HEADER`]. Its
//!   progress is the committed offset of a consumer group on the dead-letter topic, committed
//!   synchronously after each re-publication was acked. Running it again therefore re-publishes
//!   nothing already replayed, and a crash re-publishes at most the letter in hand, which the
//!   consumers drop as a duplicate by `bid_id`. Two replays with the same progress group at the
//!   same time are not kept apart: run one at a time.
//!
//! Replay re-publishes the bytes as they are, so a letter whose cause was not fixed (a poison
//! message, a bid the table still refuses) comes back as a new dead letter, which the next
//! replay would publish again. Fix the cause first, and look with `--dry-run`.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::Context;
use auction_common::config::KafkaConfig;
use auction_common::domain::format_ts;
use auction_common::kafka;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;

/// Why the message could not be written, in words for whoever reads the dead letter.
pub const ERROR_HEADER: &str = "dlq.error";
/// [`DeadLetterClass::as_str`].
pub const CLASS_HEADER: &str = "dlq.class";
pub const SOURCE_TOPIC_HEADER: &str = "dlq.source.topic";
pub const SOURCE_PARTITION_HEADER: &str = "dlq.source.partition";
pub const SOURCE_OFFSET_HEADER: &str = "dlq.source.offset";
/// The consumer group that gave up on the message.
pub const GROUP_HEADER: &str = "dlq.group";
/// When it was dead-lettered: RFC 3339, UTC, microseconds.
pub const AT_HEADER: &str = "dlq.at";
/// On a re-published dead letter in the source topic: the only group that should handle it.
pub const REPLAY_GROUP_HEADER: &str = "dlq.replay.group";
/// On a re-published dead letter in the source topic: `<dlq topic>/<partition>/<offset>`.
pub const REPLAY_OF_HEADER: &str = "dlq.replay.of";

/// The dead-letter topic of `topic`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Creates `<topic>.dlq` (one partition) if it does not exist yet. Its messages never expire:
/// a dead letter waits for an operator, who may be away for longer than the broker's default
/// retention; replay's progress is an offset, so old letters cost disk, not work.
pub async fn ensure_dlq_topic(config: &KafkaConfig) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = kafka::client_config(config).create()?;
    let name = dlq_topic(&config.topic);
    let topic = NewTopic::new(&name, 1, TopicReplication::Fixed(-1)).set("retention.ms", "-1");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&topic], &options).await? {
        match result {
            Ok(_) => log::info!("created dead-letter topic {name}"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                log::error!("creating dead-letter topic {name} failed: {code}");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}

/// Why a message became a dead letter; decides whether replaying it can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterClass {
    /// Malformed in itself: no wire-format header, Avro that does not decode with the schema it
    /// names, or a record that breaks a bid rule. Replaying it fails again unless the schema or
    /// the rules changed.
    Poison,
    /// A valid bid that a sink refused for good (e.g. MySQL "data too long"). Replay it once the
    /// sink is fixed.
    Rejected,
}

impl DeadLetterClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poison => "poison",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "poison" => Some(Self::Poison),
            "rejected" => Some(Self::Rejected),
            _ => None,
        }
    }
}

impl fmt::Display for DeadLetterClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why and from where a message was dead-lettered; travels as the dead letter's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub error: String,
    pub class: DeadLetterClass,
    pub source_topic: String,
    pub partition: i32,
    pub offset: i64,
    pub group: String,
}

impl DeadLetter {
    fn headers(&self, at: &str) -> OwnedHeaders {
        let (partition, offset) = (self.partition.to_string(), self.offset.to_string());
        [
            (ERROR_HEADER, self.error.as_str()),
            (CLASS_HEADER, self.class.as_str()),
            (SOURCE_TOPIC_HEADER, self.source_topic.as_str()),
            (SOURCE_PARTITION_HEADER, partition.as_str()),
            (SOURCE_OFFSET_HEADER, offset.as_str()),
            (GROUP_HEADER, self.group.as_str()),
            (AT_HEADER, at),
        ]
        .into_iter()
        .fold(OwnedHeaders::new_with_capacity(7), |headers, (key, value)| headers.insert(Header { key, value: Some(value) }))
    }
}

/// Sends the original key and payload to `dlq_topic` with the letter's headers, and returns
/// once the broker acked it.
pub async fn send(
    producer: &FutureProducer,
    dlq_topic: &str,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    letter: &DeadLetter,
) -> Result<(), KafkaError> {
    let mut record = FutureRecord::<[u8], [u8]>::to(dlq_topic).headers(letter.headers(&format_ts(&chrono::Utc::now())));
    record.key = key;
    record.payload = payload;
    producer.send(record, Timeout::After(Duration::from_secs(5))).await.map(|_| ()).map_err(|(e, _)| e)
}

/// The first value of header `name`, if the headers have it with a value.
pub fn header<'h, H: Headers + ?Sized>(headers: &'h H, name: &str) -> Option<&'h [u8]> {
    (0..headers.count()).filter_map(|i| headers.try_get(i)).find(|h| h.key == name).and_then(|h| h.value)
}

/// On a message of the source topic (`m.headers().and_then(replayed_for_group)`): the group a
/// replayed dead letter is meant for. A consumer of any other group skips the message: it
/// already handled the original.
pub fn replayed_for_group<H: Headers + ?Sized>(headers: &H) -> Option<String> {
    header(headers, REPLAY_GROUP_HEADER).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A dead letter read back from the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLetter {
    pub dlq_topic: String,
    pub dlq_partition: i32,
    pub dlq_offset: i64,
    pub letter: DeadLetter,
    /// When it was dead-lettered, as written in [`AT_HEADER`].
    pub at: String,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

impl StoredLetter {
    /// `<dlq topic>/<partition>/<offset>`, the value of [`REPLAY_OF_HEADER`] on its replay.
    pub fn position(&self) -> String {
        format!("{}/{}/{}", self.dlq_topic, self.dlq_partition, self.dlq_offset)
    }

    /// The key as text when it is printable UTF-8 (a `bid_id`), else as hex.
    pub fn key_text(&self) -> String {
        match self.key.as_deref() {
            None => "-".to_owned(),
            Some(key) => match std::str::from_utf8(key) {
                Ok(text) if !text.chars().any(char::is_control) => text.to_owned(),
                _ => format!("0x{}", key.iter().map(|b| format!("{b:02x}")).collect::<String>()),
            },
        }
    }
}

/// Why a message of the dead-letter topic is not a dead letter this code can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LetterError {
    #[error("header {0} is missing")]
    Missing(&'static str),
    #[error("header {0} is {1:?}, not {2}")]
    Invalid(&'static str, String, &'static str),
}

/// Reads a dead letter back from a message of the dead-letter topic.
pub fn parse_letter<M: Message>(m: &M) -> Result<StoredLetter, LetterError> {
    let text = |name: &'static str| -> Result<String, LetterError> {
        let value = m.headers().and_then(|h| header(h, name)).ok_or(LetterError::Missing(name))?;
        String::from_utf8(value.to_vec())
            .map_err(|e| LetterError::Invalid(name, String::from_utf8_lossy(e.as_bytes()).into_owned(), "UTF-8 text"))
    };
    let class = text(CLASS_HEADER)?;
    let class = DeadLetterClass::parse(&class).ok_or(LetterError::Invalid(CLASS_HEADER, class, "poison or rejected"))?;
    let partition = text(SOURCE_PARTITION_HEADER)?;
    let partition = partition.parse().map_err(|_| LetterError::Invalid(SOURCE_PARTITION_HEADER, partition, "a partition number"))?;
    let offset = text(SOURCE_OFFSET_HEADER)?;
    let offset = offset.parse().map_err(|_| LetterError::Invalid(SOURCE_OFFSET_HEADER, offset, "an offset"))?;
    Ok(StoredLetter {
        dlq_topic: m.topic().to_owned(),
        dlq_partition: m.partition(),
        dlq_offset: m.offset(),
        letter: DeadLetter {
            error: text(ERROR_HEADER)?,
            class,
            source_topic: text(SOURCE_TOPIC_HEADER)?,
            partition,
            offset,
            group: text(GROUP_HEADER)?,
        },
        at: text(AT_HEADER)?,
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
    })
}

// ---------------------------------------------------------------------------------------------
// Reading a topic up to a snapshot of its end offsets (dlq list, dlq replay, audit).

/// Why reading a topic stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("interrupted by shutdown")]
    Interrupted,
    #[error("no message from {topic} for {secs} s while partitions {partitions:?} were not read to their end (last error: {last_error})")]
    Stalled { topic: String, secs: u64, partitions: Vec<i32>, last_error: String },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// A partition's offsets when the read started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionBounds {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
}

/// The partitions of `topic` with their low and high watermarks; `None` if the topic does not
/// exist.
pub fn partition_bounds<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str) -> Result<Option<Vec<PartitionBounds>>, KafkaError> {
    const TIMEOUT: Duration = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else { return Ok(None) };
    match found.error() {
        None => {}
        Some(e) if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition => return Ok(None),
        Some(e) => return Err(KafkaError::MetadataFetch(e.into())),
    }
    let mut bounds = Vec::with_capacity(found.partitions().len());
    for p in found.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), TIMEOUT)?;
        bounds.push(PartitionBounds { partition: p.id(), low, high });
    }
    bounds.sort_by_key(|b| b.partition);
    Ok(Some(bounds))
}

/// Reads the assigned partitions of one topic up to the high watermarks captured before, so it
/// ends even while producers keep writing. Polls without blocking, so other tasks on the same
/// runtime (consumers in tests) keep running.
pub(crate) struct SnapshotReader {
    topic: String,
    /// Partitions not read to their end yet, with the offset to read up to (exclusive).
    remaining: HashMap<i32, i64>,
    stall_limit: Duration,
}

impl SnapshotReader {
    /// Assigns each partition in `starts` (partition, first offset, end offset) to `consumer`.
    /// The consumer must be created with `enable.partition.eof=true`.
    pub(crate) fn assign<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str, starts: &[(i32, Offset, i64)]) -> Result<Self, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        let mut remaining = HashMap::new();
        for &(partition, start, end) in starts {
            let empty = match start {
                Offset::Offset(o) => o >= end,
                Offset::End => true,
                _ => false,
            };
            if !empty {
                tpl.add_partition_offset(topic, partition, start)?;
                remaining.insert(partition, end);
            }
        }
        consumer.assign(&tpl)?;
        Ok(Self { topic: topic.to_owned(), remaining, stall_limit: Duration::from_secs(60) })
    }

    /// The next message below the snapshot, `None` once every partition was read to its end.
    pub(crate) async fn next<'c, C: ConsumerContext>(
        &mut self,
        consumer: &'c BaseConsumer<C>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Option<BorrowedMessage<'c>>, ReadError> {
        let mut last_event = Instant::now();
        let mut last_error = String::from("none");
        loop {
            if self.remaining.is_empty() {
                return Ok(None);
            }
            if *shutdown.borrow() {
                return Err(ReadError::Interrupted);
            }
            match consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => {
                    last_event = Instant::now();
                    let Some(&end) = self.remaining.get(&m.partition()).filter(|_| m.topic() == self.topic) else { continue };
                    if m.offset() + 1 >= end {
                        self.remaining.remove(&m.partition());
                    }
                    if m.offset() < end {
                        return Ok(Some(m));
                    }
                }
                // The end now is at or past the snapshot's: everything below it was delivered.
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    last_event = Instant::now();
                    self.remaining.remove(&partition);
                }
                Some(Err(e)) => {
                    log::warn!("reading {}: {e}", self.topic);
                    last_error = e.to_string();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                None => tokio::time::sleep(Duration::from_millis(5)).await,
            }
            if last_event.elapsed() > self.stall_limit {
                let mut partitions: Vec<i32> = self.remaining.keys().copied().collect();
                partitions.sort_unstable();
                return Err(ReadError::Stalled { topic: self.topic.clone(), secs: self.stall_limit.as_secs(), partitions, last_error });
            }
        }
    }
}

/// The group id of consumers that only read by assignment. librdkafka refuses `assign` without
/// a group id, but such a consumer never joins the group and commits nothing, so the group
/// never exists on the broker.
const READER_GROUP: &str = "auction-consumer-reader";

/// Reaching the end of a partition is how a snapshot read ends, not an error: rdkafka would log
/// every one at error level.
pub(crate) struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => log::debug!("librdkafka: {reason}"),
            error => log::error!("librdkafka: {error}: {reason}"),
        }
    }
}

impl ConsumerContext for ReaderContext {}

pub(crate) type ReadingConsumer = BaseConsumer<ReaderContext>;

/// A consumer that reads by assignment: no offset is stored or committed automatically (only
/// `group`'s, when given, by an explicit commit), and the end of each partition is reported so
/// reads up to a snapshot can tell they are done.
pub(crate) fn reading_consumer(kafka: &KafkaConfig, group: Option<&str>) -> Result<ReadingConsumer, KafkaError> {
    kafka::client_config(kafka)
        .set("group.id", group.unwrap_or(READER_GROUP))
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create_with_context(ReaderContext)
}

// ---------------------------------------------------------------------------------------------
// The commands.

/// `auction-consumer dlq …`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum DlqCommand {
    /// Print every dead letter in `<topic>.dlq`, oldest first, then a count. Joins no group.
    List(ListArgs),
    /// Re-publish dead letters to their source topic, each once (progress is a consumer group
    /// on the dead-letter topic).
    Replay(ReplayArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ListArgs {
    #[command(flatten)]
    pub kafka: KafkaConfig,
    /// Print one JSON object per dead letter instead of a line of text (the count goes to stderr).
    #[arg(long = "json", env = "DLQ_JSON")]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub kafka: KafkaConfig,
    /// Replay only the letters dead-lettered by this consumer group; the others are left for a
    /// replay without the filter (each filter keeps its own progress group).
    #[arg(long = "group-filter", env = "DLQ_GROUP_FILTER")]
    pub group_filter: Option<String>,
    /// Consumer group on the dead-letter topic that records how far replay got. Default:
    /// `<topic>.dlq-replay`, or `<topic>.dlq-replay.<group filter>` with --group-filter.
    #[arg(long = "replay-group", env = "DLQ_REPLAY_GROUP")]
    pub replay_group: Option<String>,
    /// Print what would be replayed; publish nothing and record no progress.
    #[arg(long = "dry-run", env = "DLQ_DRY_RUN")]
    pub dry_run: bool,
    /// How long one re-publication may wait for the broker's ack, retries included.
    #[arg(long = "delivery-timeout-ms", env = "KAFKA_DELIVERY_TIMEOUT_MS", default_value_t = 10_000)]
    pub delivery_timeout_ms: u64,
}

impl ReplayArgs {
    /// The consumer group holding this replay's progress.
    pub fn progress_group(&self) -> String {
        match (&self.replay_group, &self.group_filter) {
            (Some(group), _) => group.clone(),
            (None, Some(filter)) => format!("{}-replay.{filter}", dlq_topic(&self.kafka.topic)),
            (None, None) => format!("{}-replay", dlq_topic(&self.kafka.topic)),
        }
    }
}

/// Runs a `dlq` command, printing to stdout.
pub async fn run_command(command: DlqCommand, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    match command {
        DlqCommand::List(args) => {
            let summary = list(&args.kafka, &shutdown, |entry| println!("{}", if args.json { entry.to_json() } else { entry.to_line() })).await?;
            if args.json {
                eprintln!("{summary}");
            } else {
                println!("{summary}");
            }
        }
        DlqCommand::Replay(args) => {
            let summary = replay(&args, &shutdown, |r| println!("{}", r.to_line())).await?;
            println!("{summary}");
        }
    }
    Ok(())
}

/// One message of the dead-letter topic, as `dlq list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    Letter(StoredLetter),
    /// A message without the dead-letter headers (not written by [`send`]).
    Unreadable { partition: i32, offset: i64, reason: LetterError },
}

/// "1 bid", "2 bids".
pub(crate) fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

const ERROR_SHOWN_CHARS: usize = 200;

/// The error on one line, cut to a readable length.
fn short_error(error: &str) -> String {
    let one_line: String = error.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match one_line.char_indices().nth(ERROR_SHOWN_CHARS) {
        Some((cut, _)) => format!("{}… ({} chars)", &one_line[..cut], error.chars().count()),
        None => one_line,
    }
}

impl Listed {
    pub fn to_line(&self) -> String {
        match self {
            Listed::Letter(s) => format!(
                "{}/{} {} group={} source={}/{}/{} key={} at={} error={}",
                s.dlq_partition,
                s.dlq_offset,
                s.letter.class,
                s.letter.group,
                s.letter.source_topic,
                s.letter.partition,
                s.letter.offset,
                s.key_text(),
                s.at,
                short_error(&s.letter.error)
            ),
            Listed::Unreadable { partition, offset, reason } => format!("{partition}/{offset} not a dead letter: {reason}"),
        }
    }

    pub fn to_json(&self) -> String {
        match self {
            Listed::Letter(s) => json::Object::new()
                .num("dlq_partition", s.dlq_partition)
                .num("dlq_offset", s.dlq_offset)
                .str("class", s.letter.class.as_str())
                .str("group", &s.letter.group)
                .str("source_topic", &s.letter.source_topic)
                .num("source_partition", s.letter.partition)
                .num("source_offset", s.letter.offset)
                .opt_str("key", s.key.as_deref().map(|_| s.key_text()).as_deref())
                .num("payload_bytes", s.payload.as_ref().map_or(0, Vec::len))
                .str("at", &s.at)
                .str("error", &s.letter.error)
                .finish(),
            Listed::Unreadable { partition, offset, reason } => json::Object::new()
                .num("dlq_partition", partition)
                .num("dlq_offset", offset)
                .str("unreadable", &reason.to_string())
                .finish(),
        }
    }
}

/// What `dlq list` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListSummary {
    pub dlq_topic: String,
    pub topic_exists: bool,
    pub letters: u64,
    pub unreadable: u64,
}

impl fmt::Display for ListSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.topic_exists {
            return write!(f, "0 dead letters: {} does not exist (no consumer has needed it yet)", self.dlq_topic);
        }
        write!(f, "{} in {}", count(self.letters, "dead letter"), self.dlq_topic)?;
        if self.unreadable > 0 {
            write!(f, ", and {} not a dead letter", count(self.unreadable, "message"))?;
        }
        Ok(())
    }
}

/// Hands every message of `<topic>.dlq`, up to its end when the call started, to `each`.
pub async fn list(kafka: &KafkaConfig, shutdown: &watch::Receiver<bool>, mut each: impl FnMut(Listed)) -> anyhow::Result<ListSummary> {
    let topic = dlq_topic(&kafka.topic);
    let mut summary = ListSummary { dlq_topic: topic.clone(), ..ListSummary::default() };
    let consumer = reading_consumer(kafka, None).context("Failed to create a Kafka consumer")?;
    let Some(bounds) = partition_bounds(&consumer, &topic).with_context(|| format!("Failed to read the offsets of {topic}"))? else {
        return Ok(summary);
    };
    summary.topic_exists = true;
    let starts: Vec<(i32, Offset, i64)> = bounds.iter().map(|b| (b.partition, Offset::Offset(b.low), b.high)).collect();
    let mut reader = SnapshotReader::assign(&consumer, &topic, &starts).with_context(|| format!("Failed to assign {topic}"))?;
    while let Some(m) = reader.next(&consumer, shutdown).await.with_context(|| format!("Failed to read {topic}"))? {
        match parse_letter(&m) {
            Ok(letter) => {
                summary.letters += 1;
                each(Listed::Letter(letter));
            }
            Err(reason) => {
                summary.unreadable += 1;
                each(Listed::Unreadable { partition: m.partition(), offset: m.offset(), reason });
            }
        }
    }
    Ok(summary)
}

/// One dead letter replay re-published (or, on a dry run, would have).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub letter: StoredLetter,
    /// Where the copy landed: (partition, offset) in the source topic; `None` on a dry run.
    pub to: Option<(i32, i64)>,
}

impl Replayed {
    pub fn to_line(&self) -> String {
        let l = &self.letter;
        let target = match self.to {
            Some((partition, offset)) => format!("replayed {} -> {}/{partition}/{offset}", l.position(), l.letter.source_topic),
            None => format!("would replay {} -> {}", l.position(), l.letter.source_topic),
        };
        format!(
            "{target} group={} class={} source={}/{}/{} key={}",
            l.letter.group,
            l.letter.class,
            l.letter.source_topic,
            l.letter.partition,
            l.letter.offset,
            l.key_text()
        )
    }
}

/// What `dlq replay` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub dlq_topic: String,
    pub progress_group: String,
    pub dry_run: bool,
    /// Re-published (or, on a dry run, to be).
    pub replayed: u64,
    /// Dead-lettered by a group other than `--group-filter`; passed over by this progress group.
    pub other_groups: u64,
    /// Messages without the dead-letter headers; passed over.
    pub unreadable: u64,
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run { "would replay" } else { "replayed" };
        write!(f, "{verb} {} from {} (progress group {})", count(self.replayed, "dead letter"), self.dlq_topic, self.progress_group)?;
        if self.other_groups > 0 {
            write!(f, "; {} of other groups passed over", self.other_groups)?;
        }
        if self.unreadable > 0 {
            write!(f, "; {} not a dead letter, passed over", count(self.unreadable, "message"))?;
        }
        Ok(())
    }
}

/// Re-publishes the dead letters after the progress group's committed offset, up to the end
/// of the dead-letter topic when the call started, handing each to `each` once it was acked.
pub async fn replay(args: &ReplayArgs, shutdown: &watch::Receiver<bool>, mut each: impl FnMut(&Replayed)) -> anyhow::Result<ReplaySummary> {
    let topic = dlq_topic(&args.kafka.topic);
    let group = args.progress_group();
    let mut summary = ReplaySummary { dlq_topic: topic.clone(), progress_group: group.clone(), dry_run: args.dry_run, ..ReplaySummary::default() };
    let consumer = reading_consumer(&args.kafka, Some(&group)).context("Failed to create a Kafka consumer")?;
    let Some(bounds) = partition_bounds(&consumer, &topic).with_context(|| format!("Failed to read the offsets of {topic}"))? else {
        return Ok(summary);
    };
    let mut asked = TopicPartitionList::new();
    for b in &bounds {
        asked.add_partition(&topic, b.partition);
    }
    let committed = consumer
        .committed_offsets(asked, Duration::from_secs(10))
        .with_context(|| format!("Failed to read the progress of group {group} on {topic}"))?;
    let starts: Vec<(i32, Offset, i64)> = bounds
        .iter()
        .map(|b| {
            let start = match committed.find_partition(&topic, b.partition).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o.max(b.low),
                _ => b.low,
            };
            (b.partition, Offset::Offset(start), b.high)
        })
        .collect();
    let producer = kafka::bid_producer(&args.kafka, Duration::from_millis(args.delivery_timeout_ms)).context("Failed to create the Kafka producer")?;
    let mut reader = SnapshotReader::assign(&consumer, &topic, &starts).with_context(|| format!("Failed to assign {topic}"))?;

    while let Some(m) = reader.next(&consumer, shutdown).await.with_context(|| format!("Failed to read {topic}"))? {
        let (partition, offset) = (m.partition(), m.offset());
        match parse_letter(&m) {
            Err(reason) => {
                log::warn!("{topic}/{partition}/{offset} is not a dead letter, passed over: {reason}");
                summary.unreadable += 1;
            }
            Ok(letter) if args.group_filter.as_ref().is_some_and(|g| *g != letter.letter.group) => summary.other_groups += 1,
            Ok(letter) if args.dry_run => {
                summary.replayed += 1;
                each(&Replayed { letter, to: None });
            }
            Ok(letter) => {
                let to = republish(&producer, &letter).await.with_context(|| {
                    format!("Failed to re-publish {} to {}; nothing after it was replayed", letter.position(), letter.letter.source_topic)
                })?;
                summary.replayed += 1;
                each(&Replayed { letter, to: Some(to) });
            }
        }
        if !args.dry_run {
            let mut done = TopicPartitionList::new();
            done.add_partition_offset(&topic, partition, Offset::Offset(offset + 1))?;
            consumer
                .commit(&done, CommitMode::Sync)
                .with_context(|| format!("Failed to record replay progress {topic}/{partition}/{offset} in group {group}"))?;
        }
    }
    Ok(summary)
}

/// Produces the letter's key and payload to its source topic with the replay headers; returns
/// where it landed once acked.
async fn republish(producer: &FutureProducer, letter: &StoredLetter) -> Result<(i32, i64), KafkaError> {
    let position = letter.position();
    let headers = OwnedHeaders::new_with_capacity(2)
        .insert(Header { key: REPLAY_GROUP_HEADER, value: Some(letter.letter.group.as_str()) })
        .insert(Header { key: REPLAY_OF_HEADER, value: Some(position.as_str()) });
    let mut record = FutureRecord::<[u8], [u8]>::to(&letter.letter.source_topic).headers(headers);
    record.key = letter.key.as_deref();
    record.payload = letter.payload.as_deref();
    let delivery = producer.send(record, Timeout::After(Duration::from_secs(5))).await.map_err(|(e, _)| e)?;
    Ok((delivery.partition, delivery.offset))
}

/// Just enough JSON writing for the commands' `--json` output (this crate has no JSON library).
pub(crate) mod json {
    use std::fmt::{Display, Write};

    /// A JSON string literal.
    pub(crate) fn string(text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 2);
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if u32::from(c) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// A JSON array of strings.
    pub(crate) fn strings<S: AsRef<str>>(items: &[S]) -> String {
        format!("[{}]", items.iter().map(|s| string(s.as_ref())).collect::<Vec<_>>().join(","))
    }

    /// Builds one JSON object, fields in the order they are added.
    pub(crate) struct Object(String);

    impl Object {
        pub(crate) fn new() -> Self {
            Self(String::from("{"))
        }

        /// A value that is already JSON (a nested object, an array).
        pub(crate) fn raw(mut self, key: &str, json: &str) -> Self {
            if self.0.len() > 1 {
                self.0.push(',');
            }
            self.0.push_str(&string(key));
            self.0.push(':');
            self.0.push_str(json);
            self
        }

        pub(crate) fn str(self, key: &str, value: &str) -> Self {
            self.raw(key, &string(value))
        }

        pub(crate) fn opt_str(self, key: &str, value: Option<&str>) -> Self {
            match value {
                Some(v) => self.str(key, v),
                None => self.raw(key, "null"),
            }
        }

        /// An integer (the caller passes only integer types).
        pub(crate) fn num(self, key: &str, value: impl Display) -> Self {
            self.raw(key, &value.to_string())
        }

        pub(crate) fn bool(self, key: &str, value: bool) -> Self {
            self.raw(key, if value { "true" } else { "false" })
        }

        pub(crate) fn finish(mut self) -> String {
            self.0.push('}');
            self.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::OwnedMessage;
    use rdkafka::Timestamp;

    fn letter() -> DeadLetter {
        DeadLetter {
            error: "name: is 101 characters long".into(),
            class: DeadLetterClass::Rejected,
            source_topic: "bids".into(),
            partition: 3,
            offset: 42,
            group: "bid-db-writers".into(),
        }
    }

    #[test]
    fn a_dead_letter_reads_back_from_its_headers_with_key_and_payload_unchanged() {
        let headers = letter().headers("2025-01-02T03:04:05.678901Z");
        let m = OwnedMessage::new(Some(vec![0, 1, 2]), Some(b"key-1".to_vec()), "bids.dlq".into(), Timestamp::NotAvailable, 0, 7, Some(headers));
        let stored = parse_letter(&m).expect("a dead letter");
        assert_eq!(stored.letter, letter());
        assert_eq!((stored.dlq_topic.as_str(), stored.dlq_partition, stored.dlq_offset), ("bids.dlq", 0, 7));
        assert_eq!(stored.at, "2025-01-02T03:04:05.678901Z");
        assert_eq!((stored.key.as_deref(), stored.payload.as_deref()), (Some(&b"key-1"[..]), Some(&[0u8, 1, 2][..])));
        assert_eq!(stored.position(), "bids.dlq/0/7");
    }

    #[test]
    fn a_message_without_dead_letter_headers_is_named_unreadable() {
        let m = OwnedMessage::new(Some(vec![1]), None, "bids.dlq".into(), Timestamp::NotAvailable, 0, 0, None);
        assert_eq!(parse_letter(&m), Err(LetterError::Missing(CLASS_HEADER)));
    }

    #[test]
    fn classes_round_trip_through_their_names() {
        for class in [DeadLetterClass::Poison, DeadLetterClass::Rejected] {
            assert_eq!(DeadLetterClass::parse(class.as_str()), Some(class));
        }
        assert_eq!(DeadLetterClass::parse("Poison"), None);
    }

    #[test]
    fn replay_group_is_read_from_the_headers() {
        let headers = OwnedHeaders::new().insert(Header { key: REPLAY_GROUP_HEADER, value: Some("bid-file-backup") });
        assert_eq!(replayed_for_group(&headers).as_deref(), Some("bid-file-backup"));
        assert_eq!(replayed_for_group(&OwnedHeaders::new()), None);
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_control_characters() {
        assert_eq!(json::string("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\u0001é\"");
        let object = json::Object::new().str("k", "v").num("n", -3).opt_str("none", None).bool("ok", true).finish();
        assert_eq!(object, r#"{"k":"v","n":-3,"none":null,"ok":true}"#);
    }

    #[test]
    fn long_errors_are_cut_to_one_readable_line() {
        let shown = short_error(&format!("first\nsecond {}", "x".repeat(500)));
        assert!(shown.starts_with("first second "), "{shown}");
        assert!(shown.ends_with("… (513 chars)"), "{shown}");
    }
}
