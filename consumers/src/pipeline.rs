//! The consume loop shared by every sink.
//!
//! Guarantee: a bid's offset is stored only after the sink reported the bid durable (MySQL
//! commit, CSV fsync), and librdkafka commits only stored offsets (every second, on partition
//! revoke and on close). A crash therefore redelivers bids, never skips them; each sink makes a
//! redelivered bid a no-op (MySQL: unique `bid_id`; CSV: per-partition offset watermark).
//!
//! Messages are taken in batches that close on size or on time. A sink failure is retried with
//! capped, jittered backoff and the batch is held (nothing is skipped). A message that is not a
//! valid bid (poison) is logged with its topic/partition/offset, counted, and passed over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auction_common::config::{KafkaConfig, RegistryConfig};
use auction_common::registry::BidDecoder;
use auction_common::{kafka, Bid};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;

/// A decoded bid and where it came from.
#[derive(Debug, Clone)]
pub struct Record {
    pub bid: Bid,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Where bids go. `write` returns only once the records are durable; it may be called again
/// with records it already wrote (redelivery) and must then not write them twice.
pub trait Sink {
    fn write(&mut self, records: &[Record]) -> impl std::future::Future<Output = Result<WriteOutcome, SinkError>> + Send;
}

/// How many records a write stored, and how many it recognised as already stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    pub written: u64,
    pub duplicates: u64,
}

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub kafka: KafkaConfig,
    pub registry: RegistryConfig,
    pub group_id: String,
    pub batch_max_size: usize,
    pub batch_max_wait: Duration,
}

/// What a running consumer reports: its partitions and counts. Shared with whoever started it.
#[derive(Debug, Default)]
pub struct ConsumerStatus {
    assigned: Mutex<Vec<i32>>,
    pub written: AtomicU64,
    pub duplicates: AtomicU64,
    pub poison: AtomicU64,
}

impl ConsumerStatus {
    pub fn assigned_partitions(&self) -> Vec<i32> {
        self.assigned.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

/// Keeps [`ConsumerStatus`] in step with the group's assignment.
struct GroupContext {
    status: Arc<ConsumerStatus>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut partitions: Vec<i32> = consumer
            .assignment()
            .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        partitions.sort_unstable();
        match rebalance {
            Rebalance::Error(e) => log::warn!("rebalance failed: {e}"),
            _ => log::info!("assigned partitions now {partitions:?}"),
        }
        if let Ok(mut assigned) = self.status.assigned.lock() {
            *assigned = partitions;
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => log::debug!("committed {offsets:?}"),
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => log::warn!("offset commit failed (will be retried with the next commit): {e}"),
        }
    }
}

type GroupConsumer = StreamConsumer<GroupContext>;

/// Consumes until `shutdown` turns true, then writes what it holds, commits and returns.
pub async fn run<S: Sink>(
    settings: ConsumerSettings,
    mut sink: S,
    status: Arc<ConsumerStatus>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let decoder = BidDecoder::new(&settings.registry)?;
    let consumer: GroupConsumer = kafka::consumer_config(&settings.kafka, &settings.group_id)
        .create_with_context(GroupContext { status: status.clone() })?;

    // The topic may not exist yet on a fresh stack; wait for it rather than die.
    let mut backoff = Backoff::new();
    while let Err(e) = kafka::ensure_topic(&settings.kafka).await {
        log::warn!("topic {} not available yet: {e}", settings.kafka.topic);
        if backoff.wait(&mut shutdown).await.is_err() {
            return Ok(());
        }
    }
    consumer.subscribe(&[&settings.kafka.topic])?;
    log::info!("group {} consuming {}", settings.group_id, settings.kafka.topic);

    let mut progress = Progress::new();
    loop {
        let batch = collect_batch(&consumer, &decoder, &settings, &status, &mut shutdown).await;
        let stopping = *shutdown.borrow();
        if !batch.records.is_empty() {
            let Some(outcome) = write_with_retry(&mut sink, &batch.records, &mut shutdown).await else {
                log::info!("stopping with {} bids unwritten; they will be redelivered", batch.records.len());
                break;
            };
            status.written.fetch_add(outcome.written, Ordering::Relaxed);
            status.duplicates.fetch_add(outcome.duplicates, Ordering::Relaxed);
            log::debug!("wrote {} bids ({} already present)", outcome.written, outcome.duplicates);
        }
        store_offsets(&consumer, &settings.kafka.topic, &batch.next_offsets);
        progress.report(&status);
        if stopping {
            break;
        }
    }
    if let Err(e) = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
        if !matches!(e, KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) {
            log::warn!("final offset commit failed: {e}");
        }
    }
    log::info!("group {} stopped", settings.group_id);
    Ok(())
}

struct Batch {
    records: Vec<Record>,
    /// Per partition, the offset after the last message taken (written or passed over).
    next_offsets: HashMap<i32, i64>,
}

async fn collect_batch(
    consumer: &GroupConsumer,
    decoder: &BidDecoder,
    settings: &ConsumerSettings,
    status: &ConsumerStatus,
    shutdown: &mut watch::Receiver<bool>,
) -> Batch {
    let mut batch = Batch { records: Vec::new(), next_offsets: HashMap::new() };
    let mut deadline: Option<Instant> = None;
    while batch.records.len() < settings.batch_max_size && !*shutdown.borrow() {
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::from_millis(500),
        };
        if wait.is_zero() {
            break;
        }
        let message = tokio::select! {
            _ = shutdown.changed() => break,
            m = tokio::time::timeout(wait, consumer.recv()) => m,
        };
        match message {
            Err(_) if deadline.is_some() => break,
            Err(_) => continue,
            Ok(Err(e)) => {
                log::warn!("Kafka error while consuming: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Ok(m)) => {
                deadline.get_or_insert_with(|| Instant::now() + settings.batch_max_wait);
                match decode(&m, decoder, status, shutdown).await {
                    Decoded::Bid(record) => batch.records.push(record),
                    Decoded::Poison => {}
                    // Its offset must not be stored: it was neither written nor passed over.
                    Decoded::Interrupted => break,
                }
                batch.next_offsets.insert(m.partition(), m.offset() + 1);
            }
        }
    }
    batch
}

enum Decoded {
    Bid(Record),
    /// Not a valid bid: counted, logged, and passed over.
    Poison,
    /// Shutdown came while the registry was unreachable.
    Interrupted,
}

/// Decodes a message, retrying while the registry is unreachable.
async fn decode(
    m: &BorrowedMessage<'_>,
    decoder: &BidDecoder,
    status: &ConsumerStatus,
    shutdown: &mut watch::Receiver<bool>,
) -> Decoded {
    let mut backoff = Backoff::new();
    loop {
        match decoder.decode(m.payload()).await {
            Ok(bid) => {
                return Decoded::Bid(Record { bid, topic: m.topic().to_owned(), partition: m.partition(), offset: m.offset() })
            }
            Err(e) if e.is_retriable() => {
                log::warn!("{}/{}/{}: registry unavailable, retrying: {e}", m.topic(), m.partition(), m.offset());
                if backoff.wait(shutdown).await.is_err() {
                    return Decoded::Interrupted;
                }
            }
            Err(e) => {
                status.poison.fetch_add(1, Ordering::Relaxed);
                log::error!("{}/{}/{}: not a valid bid, passed over: {e}", m.topic(), m.partition(), m.offset());
                return Decoded::Poison;
            }
        }
    }
}

/// `None` if shutdown came before the write succeeded.
async fn write_with_retry<S: Sink>(sink: &mut S, records: &[Record], shutdown: &mut watch::Receiver<bool>) -> Option<WriteOutcome> {
    let mut backoff = Backoff::new();
    loop {
        match sink.write(records).await {
            Ok(outcome) => return Some(outcome),
            Err(e) => {
                log::warn!("writing {} bids failed, retrying in {:?}: {e}", records.len(), backoff.delay);
                // On shutdown, give up; the offsets were not stored, so the bids come again.
                if backoff.wait(shutdown).await.is_err() {
                    return None;
                }
            }
        }
    }
}

fn store_offsets(consumer: &GroupConsumer, topic: &str, next_offsets: &HashMap<i32, i64>) {
    if next_offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (&partition, &offset) in next_offsets {
        if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            log::error!("{topic}/{partition}: bad offset {offset}: {e}");
        }
    }
    // Fails for a partition revoked meanwhile; its new owner will redeliver, harmlessly.
    if let Err(e) = consumer.store_offsets(&tpl) {
        log::info!("could not store offsets {next_offsets:?} (partition revoked?): {e}");
    }
}

/// An info line every 10 s while bids flow, so operators see progress without debug logs.
struct Progress {
    since: Instant,
    written: u64,
    duplicates: u64,
    poison: u64,
}

impl Progress {
    const EVERY: Duration = Duration::from_secs(10);

    fn new() -> Self {
        Self { since: Instant::now(), written: 0, duplicates: 0, poison: 0 }
    }

    fn report(&mut self, status: &ConsumerStatus) {
        if self.since.elapsed() < Self::EVERY {
            return;
        }
        let now = (
            status.written.load(Ordering::Relaxed),
            status.duplicates.load(Ordering::Relaxed),
            status.poison.load(Ordering::Relaxed),
        );
        if now != (self.written, self.duplicates, self.poison) {
            log::info!(
                "last {:.0} s: {} bids written, {} already present, {} poison passed over; partitions {:?}",
                self.since.elapsed().as_secs_f64(),
                now.0 - self.written,
                now.1 - self.duplicates,
                now.2 - self.poison,
                status.assigned_partitions()
            );
        }
        (self.written, self.duplicates, self.poison) = now;
        self.since = Instant::now();
    }
}

/// Capped exponential backoff with jitter, cut short by shutdown.
struct Backoff {
    delay: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self { delay: Self::FIRST }
    }

    /// Sleeps; `Err` if shutdown was asked for.
    async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), ()> {
        if *shutdown.borrow() {
            return Err(());
        }
        let jittered = self.delay.mul_f64(0.5 + fastrand::f64());
        self.delay = (self.delay * 2).min(Self::CAP);
        tokio::select! {
            _ = shutdown.changed() => Err(()),
            _ = tokio::time::sleep(jittered) => Ok(()),
        }
    }
}
