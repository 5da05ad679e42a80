//! Producing bids to Kafka. A bid counts as accepted only when the broker acked it
//! (acks=all, idempotent producer); until then the bidder waits, and a failure is reported.
//!
//! Encoding and sending are separate steps so a bid whose outcome is unknown can be sent
//! again byte for byte: what matters to a caller is whether a failure happened before the
//! bid was handed to the producer (nothing can have been written) or after (it may have
//! been: [`PublishError::outcome_unknown`]).

use std::time::{Duration, Instant};

use auction_common::registry::{BidEncoder, CodecError};
use auction_common::{Bid, BidId};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the schema registry did not answer in time: {0}")]
    RegistryUnavailable(CodecError),
    #[error("the bid could not be encoded: {0}")]
    Encoding(CodecError),
    #[error("the site is receiving more bids than Kafka takes right now")]
    Overloaded,
    #[error("Kafka did not take the bid: {0}")]
    NotQueued(KafkaError),
    #[error("Kafka did not acknowledge the bid in time: {0}")]
    Unacknowledged(KafkaError),
}

impl PublishError {
    /// Whether the bid was handed to the producer, so it may have been written although no
    /// ack came.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, PublishError::Unacknowledged(_))
    }
}

/// How long a bid may wait for room in the producer's local queue. A full queue means Kafka
/// is behind, and the bidder is better told to retry than left hanging.
const QUEUE_WAIT: Duration = Duration::from_millis(500);

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

    /// The bid in the wire format, with the registered schema's id.
    pub async fn encode(&self, bid: &Bid) -> Result<Vec<u8>, PublishError> {
        self.encoder.encode(bid).await.map_err(|e| {
            if e.is_retriable() {
                PublishError::RegistryUnavailable(e)
            } else {
                PublishError::Encoding(e)
            }
        })
    }

    /// Produces the encoded bid, keyed by `bid_id`, and waits for the broker's ack.
    pub async fn send(&self, bid_id: BidId, payload: &[u8]) -> Result<(), PublishError> {
        let key = bid_id.to_string();
        let started = Instant::now();
        let delivery = loop {
            let record = FutureRecord::to(&self.topic).key(&key).payload(payload);
            match self.producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) if started.elapsed() < QUEUE_WAIT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => return Err(PublishError::Overloaded),
                Err((e, _)) => return Err(PublishError::NotQueued(e)),
            }
        };
        match delivery.await {
            Ok(Ok(delivery)) => {
                log::debug!("bid {key} acked at {}/{}/{}", self.topic, delivery.partition, delivery.offset);
                Ok(())
            }
            Ok(Err((e, _))) => Err(PublishError::Unacknowledged(e)),
            // The producer lives as long as the publisher; should it go, the bid's fate is unknown.
            Err(_canceled) => Err(PublishError::Unacknowledged(KafkaError::Canceled)),
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
