//! Producing bids to Kafka. A bid counts as accepted only when the broker acked it
//! (acks=all, idempotent producer); until then the bidder waits, and a failure is reported.

use std::time::Duration;

use auction_common::registry::{BidEncoder, CodecError};
use auction_common::Bid;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the schema registry did not answer in time: {0}")]
    RegistryUnavailable(CodecError),
    #[error("the bid could not be encoded: {0}")]
    Encoding(CodecError),
    #[error("the site is receiving more bids than Kafka takes right now")]
    Overloaded,
    #[error("Kafka did not acknowledge the bid in time: {0}")]
    KafkaUnavailable(KafkaError),
}

pub struct BidPublisher {
    producer: FutureProducer,
    encoder: BidEncoder,
    topic: String,
}

impl BidPublisher {
    pub fn new(producer: FutureProducer, encoder: BidEncoder, topic: String) -> Self {
        Self { producer, encoder, topic }
    }

    pub async fn register_schema(&self) -> Result<u32, CodecError> {
        self.encoder.register().await
    }

    /// Encodes the bid and waits for the broker's ack. Keyed by `bid_id`.
    pub async fn publish(&self, bid: &Bid) -> Result<(), PublishError> {
        let payload = self.encoder.encode(bid).await.map_err(|e| {
            if e.is_retriable() {
                PublishError::RegistryUnavailable(e)
            } else {
                PublishError::Encoding(e)
            }
        })?;
        let key = bid.bid_id.to_string();
        let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
        // The queue wait is bounded too: a full local queue means Kafka is behind, and the
        // bidder is better told to retry than left hanging.
        match self.producer.send(record, Timeout::After(Duration::from_millis(500))).await {
            Ok(delivery) => {
                log::debug!("bid {key} acked at {}/{}/{}", self.topic, delivery.partition, delivery.offset);
                Ok(())
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Err(PublishError::Overloaded),
            Err((e, _)) => Err(PublishError::KafkaUnavailable(e)),
        }
    }

    /// Waits for queued bids to be acked; dropping a producer would purge them.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            log::error!("bids still unacknowledged at shutdown: {e}");
        }
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }
}
