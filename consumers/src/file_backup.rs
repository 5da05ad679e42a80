//! `file-backup`: appends each bid to a CSV audit file (RFC 4180, header once, values as bid).
//!
//! What must hold: every bid of the topic is in the file once.
//! - The file is its own record of progress. Each row carries its topic, partition and offset;
//!   on start the file is read for the highest offset per partition, and each partition
//!   assigned to the process is read from the offset after it (from the beginning for a new
//!   file), whatever the group's committed offsets say. A batch is appended, flushed and
//!   fsynced before its offsets are stored; a torn last line (a crash mid-write, never
//!   fsynced, so never stored) is cut off.
//! - The file belongs to one incarnation of the topic. On start, for each partition, the bid at
//!   the file's highest offset must be the message at that offset in Kafka. If the topic was
//!   recreated or the cluster rebuilt, it is not: the file is moved aside (logged at warn) and
//!   a new file is filled from the start of the topic. An offset at or below what the file
//!   holds arriving while running means the same thing: the process stops with a message
//!   saying so instead of skipping bids, and the check on restart moves the file aside.
//! - A bid id already in the file (a retried publish of the same bid, or the same bid twice in
//!   a batch) is not appended again, over a window of the last bids of each partition.
//! - One process owns the file at a time (an exclusive lock): run one file-backup per file.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use auction_common::config::KafkaConfig;
use auction_common::domain::format_ts;
use auction_common::kafka;
use auction_common::retry::Backoff;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::pipeline::{Positions, Record, Role, Sink, SinkError, WriteOutcome};

pub const HEADER: [&str; 8] = ["bid_id", "auction_id", "name", "price", "bid_ts", "topic", "partition", "offset"];

/// How many recent bid ids per partition are remembered to drop a bid published twice.
const RECENT_PER_PARTITION: usize = 50_000;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot open {0}: {1}")]
    Open(PathBuf, std::io::Error),
    #[error("{0} is being written by another file-backup process")]
    Locked(PathBuf),
    #[error("{0} is not a bid backup: its header is {1:?}, expected {HEADER:?}")]
    Header(PathBuf, Vec<String>),
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, String),
}

/// The last bid ids of each partition, bounded.
#[derive(Default)]
struct RecentIds {
    order: HashMap<i32, VecDeque<u128>>,
    ids: HashMap<i32, HashSet<u128>>,
}

impl RecentIds {
    fn contains(&self, partition: i32, id: u128) -> bool {
        self.ids.get(&partition).is_some_and(|s| s.contains(&id))
    }

    fn insert(&mut self, partition: i32, id: u128) {
        let order = self.order.entry(partition).or_default();
        let ids = self.ids.entry(partition).or_default();
        if !ids.insert(id) {
            return;
        }
        order.push_back(id);
        if order.len() > RECENT_PER_PARTITION {
            if let Some(old) = order.pop_front() {
                ids.remove(&old);
            }
        }
    }
}

/// What reading the file found: positions, the bid at each partition's highest offset, recent ids.
#[derive(Default)]
struct FileState {
    positions: Positions,
    at_mark: HashMap<(String, i32), (i64, String)>,
    recent: RecentIds,
}

pub struct CsvSink {
    path: PathBuf,
    file: File,
    positions: Positions,
    recent: RecentIds,
}

impl CsvSink {
    /// Opens (or creates) the file, checks that it was written from the topic `kafka` names
    /// (moving it aside if not; see the module doc), and takes its lock.
    pub async fn open(path: &Path, kafka: &KafkaConfig) -> Result<Self, BackupError> {
        let (file, state) = open_locked(path)?;
        if let Some(reason) = other_incarnation(&state, kafka).await {
            drop(file);
            let aside = aside_path(path);
            std::fs::rename(path, &aside).map_err(|e| BackupError::Open(path.to_owned(), e))?;
            log::warn!(
                "{} was written from another incarnation of topic {} ({reason}); moved it to {} and starting a new file, filled from the start of the topic",
                path.display(),
                kafka.topic,
                aside.display()
            );
            let (file, state) = open_locked(path)?;
            return Self::start(path, file, state);
        }
        Self::start(path, file, state)
    }

    fn start(path: &Path, file: File, state: FileState) -> Result<Self, BackupError> {
        let mut sink = Self { path: path.to_owned(), file, positions: state.positions, recent: state.recent };
        let open_err = |e| BackupError::Open(path.to_owned(), e);
        if sink.file.metadata().map_err(open_err)?.len() == 0 {
            sink.append(|w| w.write_record(HEADER)).map_err(|e| BackupError::Read(path.to_owned(), e.to_string()))?;
        }
        log::info!("appending to {} ({} partitions seen before)", path.display(), sink.positions.partitions_known());
        Ok(sink)
    }

    /// Appends rows and makes them durable; on failure the file is cut back to where it was,
    /// so a retry does not leave half a batch twice.
    fn append(&mut self, rows: impl FnOnce(&mut csv::Writer<&File>) -> csv::Result<()>) -> std::io::Result<()> {
        let start = self.file.metadata()?.len();
        let result = (|| {
            let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(&self.file);
            rows(&mut writer)?;
            writer.flush()?;
            drop(writer);
            self.file.sync_data()
        })();
        if result.is_err() {
            let _ = self.file.set_len(start);
        }
        result.map_err(std::io::Error::other)
    }
}

fn open_locked(path: &Path) -> Result<(File, FileState), BackupError> {
    let open_err = |e| BackupError::Open(path.to_owned(), e);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(open_err)?;
    }
    let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(open_err)?;
    file.try_lock().map_err(|_| BackupError::Locked(path.to_owned()))?;
    cut_torn_line(&mut file).map_err(open_err)?;
    let state = read_state(path, &mut file)?;
    Ok((file, state))
}

fn aside_path(path: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "bids.csv".into());
    path.with_file_name(format!("{name}.other-topic-{stamp}"))
}

/// Cuts the file after its last newline.
fn cut_torn_line(file: &mut File) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let tail_start = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(tail_start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    if tail.last() == Some(&b'\n') {
        return Ok(());
    }
    let keep = tail.iter().rposition(|&b| b == b'\n').map_or(tail_start, |i| tail_start + i as u64 + 1);
    log::warn!("cutting a torn last line ({} bytes) left by an interrupted write", len - keep);
    file.set_len(keep)?;
    file.sync_data()
}

fn read_state(path: &Path, file: &mut File) -> Result<FileState, BackupError> {
    let read_err = |e: String| BackupError::Read(path.to_owned(), e);
    let mut state = FileState::default();
    if file.metadata().map_err(|e| read_err(e.to_string()))?.len() == 0 {
        return Ok(state);
    }
    file.seek(SeekFrom::Start(0)).map_err(|e| read_err(e.to_string()))?;
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(&*file);
    let headers: Vec<String> = reader.headers().map_err(|e| read_err(e.to_string()))?.iter().map(str::to_owned).collect();
    if headers != HEADER {
        return Err(BackupError::Header(path.to_owned(), headers));
    }
    for row in reader.records() {
        let row = row.map_err(|e| read_err(e.to_string()))?;
        let (Some(bid_id), Some(topic), Some(partition), Some(offset)) = (row.get(0), row.get(5), row.get(6), row.get(7)) else {
            return Err(read_err(format!("row {:?} has too few columns", row.position())));
        };
        let (Ok(partition), Ok(offset), Ok(id)) = (partition.parse::<i32>(), offset.parse::<i64>(), uuid::Uuid::parse_str(bid_id)) else {
            return Err(read_err(format!("row {:?} has a bad bid_id, partition or offset", row.position())));
        };
        state.positions.raise(topic, partition, offset);
        let mark = state.at_mark.entry((topic.to_owned(), partition)).or_insert((offset, bid_id.to_owned()));
        if offset >= mark.0 {
            *mark = (offset, bid_id.to_owned());
        }
        state.recent.insert(partition, id.as_u128());
    }
    Ok(state)
}

/// Why the file was not written from the topic `kafka` names now, if it was not. Waits (with
/// backoff) while Kafka cannot be asked: a file is never moved aside on a guess.
async fn other_incarnation(state: &FileState, kafka: &KafkaConfig) -> Option<String> {
    let marks: Vec<(i32, i64, String)> = state
        .at_mark
        .iter()
        .filter(|((topic, _), _)| *topic == kafka.topic)
        .map(|((_, partition), (offset, bid_id))| (*partition, *offset, bid_id.clone()))
        .collect();
    if marks.is_empty() {
        return None;
    }
    let mut backoff = Backoff::new();
    loop {
        let config = kafka.clone();
        let marks = marks.clone();
        match tokio::task::spawn_blocking(move || compare_with_topic(&config, &marks)).await {
            Ok(Ok(verdict)) => return verdict,
            Ok(Err(e)) => log::warn!("cannot check the backup file against topic {} yet: {e}; retrying", kafka.topic),
            Err(e) => log::warn!("checking the backup file against the topic failed: {e}; retrying"),
        }
        backoff.sleep().await;
    }
}

/// For each partition, the message at the file's highest offset must carry the bid id the file
/// has there (bids are keyed by bid id).
fn compare_with_topic(kafka: &KafkaConfig, marks: &[(i32, i64, String)]) -> Result<Option<String>, KafkaError> {
    const LIMIT: Duration = Duration::from_secs(10);
    let consumer: BaseConsumer = kafka::client_config(kafka).set("enable.auto.commit", "false").set("group.id", "auction-file-backup-check").create()?;
    for (partition, offset, bid_id) in marks {
        let (low, high) = match consumer.fetch_watermarks(&kafka.topic, *partition, LIMIT) {
            Ok(w) => w,
            Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                return Ok(Some(format!("the file holds partition {partition}, which topic {} does not have", kafka.topic)))
            }
            Err(e) => return Err(e),
        };
        if high <= *offset {
            return Ok(Some(format!(
                "the file holds offset {offset} of partition {partition}, but the topic's partition ends before offset {high}"
            )));
        }
        if low > *offset {
            log::info!("{}/{partition}: offset {offset} was removed by retention; cannot compare, assuming the same topic", kafka.topic);
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&kafka.topic, *partition, Offset::Offset(*offset))?;
        consumer.assign(&tpl)?;
        let message = consumer.poll(LIMIT).ok_or(KafkaError::NoMessageReceived)??;
        let key = message.key().map(String::from_utf8_lossy).unwrap_or_default();
        if message.offset() != *offset || key != bid_id.as_str() {
            return Ok(Some(format!(
                "offset {offset} of partition {partition} holds bid {bid_id} in the file but {key:?} in Kafka (at offset {})",
                message.offset()
            )));
        }
    }
    Ok(None)
}

impl Sink for CsvSink {
    const ROLE: Role = Role::FileBackup;

    async fn write(&mut self, records: &[Record]) -> Result<WriteOutcome, SinkError> {
        let mut fresh: Vec<&Record> = Vec::with_capacity(records.len());
        let mut in_batch: HashSet<u128> = HashSet::with_capacity(records.len());
        for r in records {
            let id = r.bid.bid_id.as_uuid().as_u128();
            let known = self.recent.contains(r.partition, id) || !in_batch.insert(id);
            if let Some(mark) = self.positions.highest(&r.topic, r.partition).filter(|&m| r.offset <= m) {
                if known {
                    continue;
                }
                return Err(SinkError::Fatal(format!(
                    "{}/{}/{} is at or below the highest offset {} holds for that partition ({mark}) but its bid {} is not there: \
                     the topic was recreated or the cluster rebuilt since the file was written. Restart file-backup: it moves \
                     the file aside and starts a new one from the start of the topic",
                    r.topic,
                    r.partition,
                    r.offset,
                    self.path.display(),
                    r.bid.bid_id
                )));
            }
            if !known {
                fresh.push(r);
            }
        }
        let outcome = WriteOutcome { written: fresh.len() as u64, duplicates: (records.len() - fresh.len()) as u64, rejected: Vec::new() };
        if fresh.is_empty() {
            return Ok(outcome);
        }
        self.append(|w| {
            for r in &fresh {
                let b = &r.bid;
                w.write_record([
                    b.bid_id.to_string().as_str(),
                    &b.auction_id.to_string(),
                    b.name.as_str(),
                    &b.price.to_string(),
                    &format_ts(&b.bid_ts),
                    &r.topic,
                    &r.partition.to_string(),
                    &r.offset.to_string(),
                ])?;
            }
            Ok(())
        })
        .map_err(|e| SinkError::Retriable(format!("{}: {e}", self.path.display())))?;
        for r in fresh {
            self.positions.raise(&r.topic, r.partition, r.offset);
            self.recent.insert(r.partition, r.bid.bid_id.as_uuid().as_u128());
        }
        Ok(outcome)
    }

    fn positions(&self) -> Option<Positions> {
        Some(self.positions.clone())
    }
}
