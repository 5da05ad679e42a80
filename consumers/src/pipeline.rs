//! The consume loop shared by every sink.
//!
//! Guarantee: a bid's offset is stored only after the sink reported the bid durable (MySQL
//! commit, CSV fsync) or after the message was acked by the dead-letter topic, and librdkafka
//! commits only stored offsets (every second, synchronously when partitions are revoked, and
//! on close). A crash therefore redelivers bids, never skips them; each sink makes a
//! redelivered bid a no-op (MySQL: unique `bid_id`; CSV: its own per-partition position and a
//! window of recent `bid_id`s).
//!
//! Messages are taken in batches that close on size or on time. What happens to a message
//! depends on why it cannot be written, never on a guess:
//! - the schema registry cannot be reached or used (any status, transport error or timeout):
//!   the message is held and retried with capped, jittered backoff; the batch before it is
//!   written, nothing after it is taken, and [`ConsumerStatus::stalled`] says why;
//! - the message is malformed in itself (no wire-format header, Avro that does not decode with
//!   the schema it names, a record that breaks a bid rule): it goes to `<topic>.dlq` with
//!   headers naming the error and where it came from, and the loop moves on;
//! - the sink fails in a way that may pass (connection lost, deadlock, lock wait): the batch is
//!   held and retried;
//! - the sink fails in a way only an operator can fix (privilege, unknown column, missing
//!   table): the batch is held, retried slowly, logged at error with the first bid, and the
//!   status says so;
//! - the sink refuses one bid for what it is (data too long): that bid goes to the dead-letter
//!   topic and the rest of the batch is written.
//!
//! Partitions revoked by a rebalance take their unwritten bids with them: those are dropped
//! from the batch in hand (their offsets were never stored, so the next owner reads them
//! again), and what was stored is committed before the partitions are handed over. A batch is
//! therefore never written by both the old and the new owner.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use auction_common::config::{KafkaConfig, RegistryConfig};
use auction_common::domain::now_micros;
use auction_common::registry::{BidDecoder, CodecError};
use auction_common::retry::Backoff;
use auction_common::{kafka, Bid};
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::dlq::{self, DeadLetter, DeadLetterClass};
use crate::metrics::{ConsumerMetrics, STATS_INTERVAL_MS};

/// A decoded bid, where it came from, and the bytes it came as (for the dead-letter topic).
#[derive(Debug, Clone)]
pub struct Record {
    pub bid: Bid,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// Why a write failed, which decides what the loop does next.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// May pass by itself (connection lost, deadlock, lock wait, disk full): retry the batch.
    #[error("{0}")]
    Retriable(String),
    /// Every bid would fail the same way until an operator acts (privilege, unknown column,
    /// missing table): hold the batch, retry slowly, report not ready.
    #[error("{0}")]
    Permanent(String),
    /// This process cannot go on writing (e.g. the CSV was written from another incarnation
    /// of the topic): stop with this message; the offsets of the batch are not stored.
    #[error("{0}")]
    Fatal(String),
}

impl SinkError {
    pub fn class(&self) -> &'static str {
        match self {
            SinkError::Retriable(_) => "retriable",
            SinkError::Permanent(_) => "permanent",
            SinkError::Fatal(_) => "fatal",
        }
    }
}

/// What a consumer process is, as its metrics and `/readyz` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    DbWriter,
    FileBackup,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::DbWriter => "db-writer",
            Role::FileBackup => "file-backup",
        }
    }
}

/// Where bids go. `write` returns only once the records it reports written are durable; it may
/// be called again with records it already wrote (redelivery) and must then not write them twice.
pub trait Sink {
    const ROLE: Role;

    fn write(&mut self, records: &[Record]) -> impl std::future::Future<Output = Result<WriteOutcome, SinkError>> + Send;

    /// The positions the sink keeps itself, if it does (the CSV file knows what it holds): each
    /// partition assigned to this process is read from the one after its highest offset there.
    /// `None`: from the group's committed offsets.
    fn positions(&self) -> Option<Positions> {
        None
    }
}

/// How many records a write stored, how many it recognised as already stored, and which it
/// refused for what they are (by index into the records; they go to the dead-letter topic).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    pub written: u64,
    pub duplicates: u64,
    pub rejected: Vec<(usize, String)>,
}

/// Per topic and partition, the highest offset a sink holds. Shared between the sink, which
/// raises it after each durable write, and the rebalance callback, which seeks past it.
#[derive(Debug, Clone, Default)]
pub struct Positions(Arc<Mutex<HashMap<String, HashMap<i32, i64>>>>);

impl Positions {
    pub fn highest(&self, topic: &str, partition: i32) -> Option<i64> {
        self.0.lock().ok()?.get(topic)?.get(&partition).copied()
    }

    pub fn raise(&self, topic: &str, partition: i32, offset: i64) {
        let Ok(mut marks) = self.0.lock() else { return };
        if !marks.contains_key(topic) {
            marks.insert(topic.to_owned(), HashMap::new());
        }
        if let Some(partitions) = marks.get_mut(topic) {
            let mark = partitions.entry(partition).or_insert(offset);
            *mark = (*mark).max(offset);
        }
    }

    pub fn partitions_known(&self) -> usize {
        self.0.lock().map(|m| m.values().map(HashMap::len).sum()).unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub kafka: KafkaConfig,
    pub registry: RegistryConfig,
    pub group_id: String,
    pub batch_max_size: usize,
    pub batch_max_wait: Duration,
}

/// What a running consumer reports: its partitions, counts, and why it is stalled if it is.
/// Shared with whoever started it.
#[derive(Debug, Default)]
pub struct ConsumerStatus {
    assigned: Mutex<Vec<i32>>,
    stalled: Mutex<Option<String>>,
    pub written: AtomicU64,
    pub duplicates: AtomicU64,
    /// Messages sent to the dead-letter topic (malformed, or refused by the sink).
    pub dead_letters: AtomicU64,
    /// Re-publications of dead letters meant for another consumer group, passed over.
    pub skipped_replays: AtomicU64,
    running: OnceLock<Running>,
    last_write: Mutex<Option<DateTime<Utc>>>,
}

/// What the consumer loop is, known once it starts, and the metrics it keeps.
#[derive(Debug)]
pub struct Running {
    pub role: Role,
    pub group: String,
    pub topic: String,
    pub metrics: ConsumerMetrics,
}

impl ConsumerStatus {
    pub fn assigned_partitions(&self) -> Vec<i32> {
        self.assigned.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Why the consumer is holding its batch (registry, sink or dead-letter topic failing), or
    /// `None` while it makes progress. A stalled consumer is not ready.
    pub fn stalled(&self) -> Option<String> {
        self.stalled.lock().ok().and_then(|s| s.clone())
    }

    fn set_stalled(&self, cause: Option<String>) {
        if let Ok(mut stalled) = self.stalled.lock() {
            *stalled = cause;
        }
    }

    /// The loop's role, group and metrics; `None` until it has started.
    pub fn running(&self) -> Option<&Running> {
        self.running.get()
    }

    /// When a batch was last made durable.
    pub fn last_write(&self) -> Option<DateTime<Utc>> {
        self.last_write.lock().ok().and_then(|t| *t)
    }

    fn wrote(&self, outcome: &WriteOutcome, size: usize, took: Duration) {
        self.written.fetch_add(outcome.written, Ordering::Relaxed);
        self.duplicates.fetch_add(outcome.duplicates, Ordering::Relaxed);
        if let Ok(mut last) = self.last_write.lock() {
            *last = Some(now_micros());
        }
        if let Some(m) = self.metrics() {
            m.written.inc_by(outcome.written);
            m.duplicates.inc_by(outcome.duplicates);
            m.batch_size.observe(size as f64);
            m.write_latency.observe(took.as_secs_f64());
        }
    }

    fn metrics(&self) -> Option<&ConsumerMetrics> {
        self.running.get().map(|r| &r.metrics)
    }

    fn retried(&self, cause: &str) {
        if let Some(m) = self.metrics() {
            m.retried(cause);
        }
    }
}

/// Keeps [`ConsumerStatus`] in step with the group's assignment, seeks a sink's own positions
/// on assignment, and on revocation commits what was stored and notes the partitions so the
/// loop drops their unwritten bids.
struct GroupContext {
    status: Arc<ConsumerStatus>,
    topic: String,
    positions: Option<Positions>,
    revoked: Mutex<Vec<i32>>,
}

impl GroupContext {
    fn take_revoked(&self) -> Vec<i32> {
        self.revoked.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default()
    }

    fn seek_own_positions(&self, tpl: &mut TopicPartitionList) {
        let Some(positions) = &self.positions else { return };
        let wanted: Vec<(String, i32, Offset)> = tpl
            .elements()
            .iter()
            .map(|e| {
                let offset = positions.highest(e.topic(), e.partition()).map_or(Offset::Beginning, |o| Offset::Offset(o + 1));
                (e.topic().to_owned(), e.partition(), offset)
            })
            .collect();
        for (topic, partition, offset) in wanted {
            log::info!("{topic}/{partition}: reading from {offset:?}, after what the file holds");
            if let Err(e) = tpl.set_partition_offset(&topic, partition, offset) {
                log::error!("{topic}/{partition}: cannot set the start offset {offset:?}: {e}");
            }
        }
    }
}

impl ClientContext for GroupContext {
    /// Every [`STATS_INTERVAL_MS`], served by the same polls as the messages: the lag gauge.
    fn stats_raw(&self, statistics: &[u8]) {
        if let Some(m) = self.status.metrics() {
            m.lag_from_stats(statistics, &self.topic, &self.status.assigned_partitions());
        }
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.seek_own_positions(tpl);
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                log::info!("partitions {revoked:?} revoked; dropping their unwritten bids, committing what was written");
                if let Ok(mut r) = self.revoked.lock() {
                    r.extend(revoked);
                }
                // Every offset stored so far belongs to a durable write: commit it before the
                // partitions go, so their next owner starts right after it.
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    Err(e) => log::warn!("commit on revoke failed (the next owner may redeliver, harmlessly): {e}"),
                }
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                log::warn!("rebalance failed: {}", RDKafkaErrorCode::from(other));
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
        };
        if let Err(e) = result {
            log::error!("applying the rebalance failed: {e}");
        }
        let mut partitions: Vec<i32> = consumer
            .assignment()
            .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        partitions.sort_unstable();
        log::info!("assigned partitions now {partitions:?}");
        if let Some(m) = self.status.metrics() {
            m.assigned(&partitions);
        }
        if let Ok(mut assigned) = self.status.assigned.lock() {
            *assigned = partitions;
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => log::debug!("committed {offsets:?}"),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => log::warn!("offset commit failed (will be retried with the next commit): {e}"),
        }
    }
}

type GroupConsumer = StreamConsumer<GroupContext>;

/// Consumes until `shutdown` turns true, then writes what it holds, commits and leaves the
/// group. Returns an error only when the sink says it cannot go on ([`SinkError::Fatal`]).
pub async fn run<S: Sink>(
    settings: ConsumerSettings,
    mut sink: S,
    status: Arc<ConsumerStatus>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let decoder = BidDecoder::new(&settings.registry)?;
    let metrics = ConsumerMetrics::new(S::ROLE, &settings.group_id).context("Failed to register the metrics")?;
    let running = Running { role: S::ROLE, group: settings.group_id.clone(), topic: settings.kafka.topic.clone(), metrics };
    if status.running.set(running).is_err() {
        anyhow::bail!("this ConsumerStatus already belongs to a running consumer");
    }
    let context = GroupContext {
        status: status.clone(),
        topic: settings.kafka.topic.clone(),
        positions: sink.positions(),
        revoked: Mutex::new(Vec::new()),
    };
    let consumer: GroupConsumer = kafka::consumer_config(&settings.kafka, &settings.group_id)
        .set("statistics.interval.ms", STATS_INTERVAL_MS.to_string())
        .create_with_context(context)
        .map_err(|e| anyhow::anyhow!("Failed to create the Kafka consumer: {}", kafka::describe(&e)))?;
    let dead_letters = DeadLetterQueue {
        producer: kafka::bid_producer(&settings.kafka, Duration::from_secs(30))
            .map_err(|e| anyhow::anyhow!("Failed to create the dead-letter producer: {}", kafka::describe(&e)))?,
        topic: dlq::dlq_topic(&settings.kafka.topic),
        group: settings.group_id.clone(),
    };

    // The topics may not exist yet on a fresh stack; wait for them rather than die.
    let mut backoff = Backoff::new();
    loop {
        let ready = match kafka::ensure_topic(&settings.kafka).await {
            Ok(()) => dlq::ensure_dlq_topic(&settings.kafka).await,
            Err(e) => Err(e),
        };
        match ready {
            Ok(()) => break,
            Err(e) => {
                log::warn!("topic {} or its dead-letter topic not available yet: {e}", settings.kafka.topic);
                status.set_stalled(Some(format!("Kafka topic not available: {e}")));
                status.retried("topic");
                if backoff.wait(&mut shutdown).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
    status.set_stalled(None);
    consumer.subscribe(&[&settings.kafka.topic])?;
    log::info!("group {} consuming {}", settings.group_id, settings.kafka.topic);

    let mut progress = Progress::new();
    let mut held: Option<OwnedMessage> = None;
    let mut kafka_errors = ErrorReport { since: Instant::now().checked_sub(Duration::from_secs(60)).unwrap_or_else(Instant::now), count: 0 };
    let result = loop {
        let mut batch = collect_batch(&consumer, &decoder, &settings, &status, &mut shutdown, &mut held, &mut kafka_errors).await;
        let stopping = *shutdown.borrow();
        if !batch.records.is_empty() {
            let started = Instant::now();
            match write_with_retry(&mut sink, &batch.records, &status, &mut shutdown).await {
                Ok(Some(outcome)) => {
                    progress.batch(&batch, &outcome, started.elapsed());
                    for (index, reason) in outcome.rejected {
                        if let Some(r) = batch.records.get(index) {
                            batch.letters.push(Letter::rejected(r, reason, &settings.group_id));
                        }
                    }
                }
                Ok(None) => {
                    log::info!("stopping with {} bids unwritten; they will be redelivered", batch.records.len());
                    break Ok(());
                }
                Err(e) => break Err(e),
            }
        }
        if dead_letters.deliver(&batch.letters, &status, &mut shutdown).await.is_err() {
            log::info!("stopping with dead letters unsent; their messages will be redelivered");
            break Ok(());
        }
        store_offsets(&consumer, &settings.kafka.topic, &batch.next_offsets);
        progress.report(&status);
        if stopping {
            break Ok(());
        }
    };
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => log::warn!("final offset commit failed: {e}"),
    }
    // Dropping the consumer closes it: it leaves the group, so its partitions move at once.
    drop(consumer);
    dead_letters.producer_flush();
    log::info!("group {} stopped", settings.group_id);
    result
}

/// When Kafka errors were last reported, and how many came since.
struct ErrorReport {
    since: Instant,
    count: u64,
}

/// A message for the dead-letter topic: its original key and payload, and why.
struct Letter {
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    letter: DeadLetter,
}

impl Letter {
    fn poison<M: Message>(m: &M, error: &CodecError, group: &str) -> Self {
        Self {
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            letter: DeadLetter {
                error: error.to_string(),
                class: DeadLetterClass::Poison,
                source_topic: m.topic().to_owned(),
                partition: m.partition(),
                offset: m.offset(),
                group: group.to_owned(),
            },
        }
    }

    fn rejected(r: &Record, reason: String, group: &str) -> Self {
        Self {
            key: r.key.clone(),
            payload: Some(r.payload.clone()),
            letter: DeadLetter {
                error: reason,
                class: DeadLetterClass::Rejected,
                source_topic: r.topic.clone(),
                partition: r.partition,
                offset: r.offset,
                group: group.to_owned(),
            },
        }
    }
}

struct DeadLetterQueue {
    producer: FutureProducer,
    topic: String,
    group: String,
}

impl DeadLetterQueue {
    /// Sends every letter, holding (with backoff) while the dead-letter topic cannot take them:
    /// a message leaves the partition only once it is somewhere.
    async fn deliver(&self, letters: &[Letter], status: &ConsumerStatus, shutdown: &mut watch::Receiver<bool>) -> Result<(), ()> {
        for l in letters {
            let mut backoff = Backoff::new();
            loop {
                match dlq::send(&self.producer, &self.topic, l.key.as_deref(), l.payload.as_deref(), &l.letter).await {
                    Ok(()) => {
                        status.dead_letters.fetch_add(1, Ordering::Relaxed);
                        if let Some(m) = status.metrics() {
                            m.dead_letter(l.letter.class.as_str());
                        }
                        log::error!(
                            "{}/{}/{}: {} message sent to {} (group {}): {}",
                            l.letter.source_topic,
                            l.letter.partition,
                            l.letter.offset,
                            l.letter.class.as_str(),
                            self.topic,
                            self.group,
                            l.letter.error
                        );
                        break;
                    }
                    Err(e) => {
                        let cause = format!("cannot send a dead letter to {}: {e}", self.topic);
                        log::warn!("{cause}; retrying");
                        status.set_stalled(Some(cause));
                        status.retried("dead_letter_topic");
                        if backoff.wait(shutdown).await.is_err() {
                            return Err(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn producer_flush(&self) {
        use rdkafka::producer::Producer;
        if let Err(e) = self.producer.flush(Duration::from_secs(5)) {
            log::warn!("dead-letter producer not flushed at shutdown: {e}");
        }
    }
}

#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    letters: Vec<Letter>,
    /// Per partition, the offset after the last message taken (written, sent aside, or passed over).
    next_offsets: HashMap<i32, i64>,
    /// Per partition, the first and last offset taken: what the logs show.
    ranges: BTreeMap<i32, (i64, i64)>,
}

impl Batch {
    /// Forgets everything taken from partitions this process no longer owns.
    fn drop_partitions(&mut self, revoked: &[i32]) {
        if revoked.is_empty() {
            return;
        }
        let before = self.records.len() + self.letters.len();
        self.records.retain(|r| !revoked.contains(&r.partition));
        self.letters.retain(|l| !revoked.contains(&l.letter.partition));
        self.next_offsets.retain(|p, _| !revoked.contains(p));
        self.ranges.retain(|p, _| !revoked.contains(p));
        let dropped = before - self.records.len() - self.letters.len();
        if dropped > 0 {
            log::info!("dropped {dropped} unwritten messages of revoked partitions {revoked:?}; their next owner reads them");
        }
    }
}

/// What to do with one message.
enum Decoded {
    Bid(Record),
    Poison(Letter),
    /// A dead letter re-published for another group, which already handled the original.
    OtherGroupsReplay,
}

/// Decodes a message; `Err` when the registry cannot be used (hold the message).
async fn decode<M: Message>(m: &M, decoder: &BidDecoder, group: &str) -> Result<Decoded, CodecError> {
    if let Some(replay_group) = m.headers().and_then(dlq::replayed_for_group) {
        if replay_group != group {
            return Ok(Decoded::OtherGroupsReplay);
        }
    }
    match decoder.decode(m.payload()).await {
        Ok(bid) => Ok(Decoded::Bid(Record {
            bid,
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        })),
        Err(e) if e.is_retriable() => Err(e),
        Err(e) => Ok(Decoded::Poison(Letter::poison(m, &e, group))),
    }
}

impl Batch {
    fn take(&mut self, decoded: Decoded, partition: i32, offset: i64) {
        match decoded {
            Decoded::Bid(record) => self.records.push(record),
            Decoded::Poison(letter) => self.letters.push(letter),
            Decoded::OtherGroupsReplay => {}
        }
        self.next_offsets.insert(partition, offset + 1);
        let range = self.ranges.entry(partition).or_insert((offset, offset));
        *range = (range.0.min(offset), range.1.max(offset));
    }
}

async fn collect_batch(
    consumer: &GroupConsumer,
    decoder: &BidDecoder,
    settings: &ConsumerSettings,
    status: &ConsumerStatus,
    shutdown: &mut watch::Receiver<bool>,
    held: &mut Option<OwnedMessage>,
    kafka_errors: &mut ErrorReport,
) -> Batch {
    let mut batch = Batch::default();
    // A message held because the registry failed comes first, before anything after it.
    if let Some(m) = held.take() {
        let mut backoff = Backoff::new();
        loop {
            match decode(&m, decoder, &settings.group_id).await {
                Ok(decoded) => {
                    status.set_stalled(None);
                    log::info!("{}/{}/{}: the schema registry answers again; going on", m.topic(), m.partition(), m.offset());
                    count_replay(&decoded, status);
                    batch.take(decoded, m.partition(), m.offset());
                    break;
                }
                Err(e) => {
                    hold_message(&m, &e, status);
                    if backoff.wait(shutdown).await.is_err() {
                        *held = Some(m);
                        return batch;
                    }
                }
            }
        }
    }
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
        // Revocations are served inside recv(): apply them before taking anything more.
        batch.drop_partitions(&consumer.context().take_revoked());
        match message {
            // Nothing came for a while: hand back what there is (maybe nothing), so the caller's
            // summary line still comes on time.
            Err(_) => break,
            Ok(Err(e)) => {
                // librdkafka reconnects by itself; say so once every 10 s, not five times a second.
                if kafka_errors.since.elapsed() >= Duration::from_secs(10) {
                    log::warn!("Kafka error while consuming ({} more since the last report): {e}", kafka_errors.count);
                    *kafka_errors = ErrorReport { since: Instant::now(), count: 0 };
                } else {
                    kafka_errors.count += 1;
                    log::debug!("Kafka error while consuming: {e}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Ok(m)) => {
                deadline.get_or_insert_with(|| Instant::now() + settings.batch_max_wait);
                match decode(&m, decoder, &settings.group_id).await {
                    Ok(decoded) => {
                        count_replay(&decoded, status);
                        batch.take(decoded, m.partition(), m.offset());
                    }
                    Err(e) => {
                        // Close the batch here: what came before is written, this message is
                        // held (its offset is not stored) and retried first in the next batch.
                        hold_message(&m, &e, status);
                        *held = Some(m.detach());
                        break;
                    }
                }
            }
        }
    }
    batch.drop_partitions(&consumer.context().take_revoked());
    batch
}

fn count_replay(decoded: &Decoded, status: &ConsumerStatus) {
    if let Decoded::OtherGroupsReplay = decoded {
        status.skipped_replays.fetch_add(1, Ordering::Relaxed);
    }
}

fn hold_message<M: Message>(m: &M, e: &CodecError, status: &ConsumerStatus) {
    let cause = format!("{}/{}/{}: held, the schema registry cannot be used: {e}", m.topic(), m.partition(), m.offset());
    log::warn!("{cause}; retrying");
    status.set_stalled(Some(cause));
    status.retried("registry");
}

/// `Ok(None)` if shutdown came before the write succeeded; `Err` if the sink cannot go on.
async fn write_with_retry<S: Sink>(
    sink: &mut S,
    records: &[Record],
    status: &ConsumerStatus,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<Option<WriteOutcome>> {
    let mut backoff = Backoff::new();
    let mut slow = false;
    loop {
        let attempt = Instant::now();
        match sink.write(records).await {
            Ok(outcome) => {
                status.set_stalled(None);
                status.wrote(&outcome, records.len(), attempt.elapsed());
                return Ok(Some(outcome));
            }
            Err(SinkError::Fatal(e)) => return Err(anyhow::anyhow!(e)),
            Err(e) => {
                let first = &records[0];
                let cause = format!(
                    "{} error writing {} bids (first {} at {}/{}/{}): {e}",
                    e.class(),
                    records.len(),
                    first.bid.bid_id,
                    first.topic,
                    first.partition,
                    first.offset
                );
                if let SinkError::Permanent(_) = e {
                    // Only an operator can fix this: say so loudly, and retry slowly.
                    log::error!("{cause}; holding the batch until it is fixed");
                    if !slow {
                        backoff = Backoff::with_cap(Duration::from_secs(30));
                        slow = true;
                    }
                } else {
                    log::warn!("{cause}; retrying in about {:?}", backoff.delay());
                }
                status.set_stalled(Some(cause));
                status.retried("write");
                // On shutdown, give up; the offsets were not stored, so the bids come again.
                if backoff.wait(shutdown).await.is_err() {
                    return Ok(None);
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

/// One line per batch at debug, and a summary at info every few seconds while bids flow, so
/// operators see progress without a line per bid.
struct Progress {
    since: Instant,
    batches: u64,
    bids: u64,
    writing: Duration,
    /// Per partition, the first and last offset written since the last summary.
    ranges: BTreeMap<i32, (i64, i64)>,
    written: u64,
    duplicates: u64,
    dead_letters: u64,
}

impl Progress {
    const EVERY: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self {
            since: Instant::now(),
            batches: 0,
            bids: 0,
            writing: Duration::ZERO,
            ranges: BTreeMap::new(),
            written: 0,
            duplicates: 0,
            dead_letters: 0,
        }
    }

    /// `took`: from the first attempt to the durable write, retries included.
    fn batch(&mut self, batch: &Batch, outcome: &WriteOutcome, took: Duration) {
        log::debug!(
            "batch of {} bids written in {} ms ({} new, {} already stored, {} refused); partitions:offsets {}",
            batch.records.len(),
            took.as_millis(),
            outcome.written,
            outcome.duplicates,
            outcome.rejected.len(),
            show_ranges(&batch.ranges)
        );
        self.batches += 1;
        self.bids += batch.records.len() as u64;
        self.writing += took;
        for (&partition, &(first, last)) in &batch.ranges {
            let range = self.ranges.entry(partition).or_insert((first, last));
            *range = (range.0.min(first), range.1.max(last));
        }
    }

    fn report(&mut self, status: &ConsumerStatus) {
        if self.since.elapsed() < Self::EVERY {
            return;
        }
        let now = (
            status.written.load(Ordering::Relaxed),
            status.duplicates.load(Ordering::Relaxed),
            status.dead_letters.load(Ordering::Relaxed),
        );
        if self.batches > 0 || now != (self.written, self.duplicates, self.dead_letters) {
            log::info!(
                "last {:.0} s: {} batches, {} bids ({} written, {} already present, {} sent to the dead-letter topic), {} ms writing; partitions:offsets {}; assigned {:?}",
                self.since.elapsed().as_secs_f64(),
                self.batches,
                self.bids,
                now.0 - self.written,
                now.1 - self.duplicates,
                now.2 - self.dead_letters,
                self.writing.as_millis(),
                show_ranges(&self.ranges),
                status.assigned_partitions()
            );
        }
        (self.written, self.duplicates, self.dead_letters) = now;
        (self.batches, self.bids, self.writing) = (0, 0, Duration::ZERO);
        self.ranges.clear();
        self.since = Instant::now();
    }
}

/// `0:120-135 3:40-52`: per partition, the first and last offset.
fn show_ranges(ranges: &BTreeMap<i32, (i64, i64)>) -> String {
    let mut out = String::new();
    for (partition, (first, last)) in ranges {
        let sep = if out.is_empty() { "" } else { " " };
        let _ = write!(out, "{sep}{partition}:{first}-{last}");
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}
