//! Kafka clients, all built from [`KafkaConfig`].

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;

use crate::config::KafkaConfig;

/// A Kafka error as it may be logged or shown: rdkafka writes a refused setting's value into its
/// message (`Client config error: … <name> <value>`), and that value may be a password (say a
/// `sasl.jaas.config` line of a Java properties file given as `KAFKA_PROPERTIES_FILE`). Here the
/// setting is named and its value never appears.
pub fn describe(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, description, name, value) => {
            let description = if value.is_empty() { description.clone() } else { description.replace(value.as_str(), "***") };
            format!("the Kafka client setting {name} was refused: {description}")
        }
        other => other.to_string(),
    }
}

/// Settings every client shares: where the brokers are and how to connect (TLS, SASL, then the
/// pass-through properties). Every Kafka client of the project starts from this. Callers set
/// their own properties after it, so the delivery settings of [`bid_producer`] and
/// [`consumer_config`] cannot be overridden by a pass-through property.
pub fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    let security = &config.security;
    c.set("security.protocol", security.protocol.as_str());
    if let Some(mechanism) = security.sasl_mechanism {
        c.set("sasl.mechanism", mechanism.as_str());
    }
    if let Some(username) = &security.sasl_username {
        c.set("sasl.username", username);
    }
    if let Some(password) = security.sasl_password() {
        c.set("sasl.password", password.expose());
    }
    if let Some(ca) = &security.ssl_ca_location {
        c.set("ssl.ca.location", ca.to_string_lossy());
    }
    for (name, value) in security.extra_properties() {
        c.set(name, value);
    }
    // sasl.password stays out of logs: rdkafka's `Debug` of a ClientConfig leaves sensitive keys
    // out, and librdkafka masks them when it dumps its configuration (`debug=conf`).
    c
}

/// The producer for bids: the broker acks only once every in-sync replica has the bid, and
/// idempotence keeps a retried send from being written twice. `delivery_timeout` bounds how
/// long a send may wait for that ack, retries included.
pub fn bid_producer(config: &KafkaConfig, delivery_timeout: Duration) -> Result<FutureProducer, KafkaError> {
    client_config(config)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "2")
        .set("message.timeout.ms", delivery_timeout.as_millis().to_string())
        .set("socket.connection.setup.timeout.ms", "3000")
        .create()
}

/// A consumer group member that never stores an offset by itself: the caller stores each
/// message's offset once its bid is durable, and librdkafka commits what was stored
/// (periodically, on partition revoke, and on close).
pub fn consumer_config(config: &KafkaConfig, group_id: &str) -> ClientConfig {
    let mut c = client_config(config);
    c.set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("partition.assignment.strategy", "cooperative-sticky");
    c
}

/// Creates the bids topic with the configured partitions if it does not exist yet.
/// The replication factor is the broker's default.
pub async fn ensure_topic(config: &KafkaConfig) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config).create()?;
    let topic = NewTopic::new(&config.topic, config.topic_partitions, TopicReplication::Fixed(-1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&topic], &options).await? {
        match result {
            Ok(_) => log::info!("created topic {} with {} partitions", config.topic, config.topic_partitions),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                log::error!("creating topic {name} failed: {code}");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::producer::BaseProducer;

    #[test]
    fn a_refused_setting_is_named_and_its_value_never_shown() {
        let secret = "password='s3cret-marker'";
        let refused = ClientConfig::new().set("sasl.jaas.config", secret).create::<BaseProducer>().err().expect("librdkafka refuses a Java setting");
        assert!(refused.to_string().contains("s3cret-marker"), "rdkafka's own text shows the value: {refused}");
        let shown = describe(&refused);
        assert!(!shown.contains("s3cret-marker") && shown.contains("sasl.jaas.config"), "{shown}");
        // librdkafka's own description repeats an invalid value: that goes too.
        let invalid = ClientConfig::new().set("security.protocol", "hunter2-marker").create::<BaseProducer>().err().expect("an invalid value");
        assert!(invalid.to_string().contains("hunter2-marker"), "{invalid}");
        assert!(!describe(&invalid).contains("hunter2-marker") && describe(&invalid).contains("security.protocol"), "{}", describe(&invalid));
    }
}
