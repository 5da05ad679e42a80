//! `file-backup`: appends each bid to a CSV audit file (RFC 4180, header once, values as bid).
//!
//! What must hold: every bid of the topic is in the file once, and a restart costs the same
//! for a file of ten lines and one of ten million.
//! - The file is its own record of progress. Each row carries its topic, partition and offset;
//!   each partition assigned to the process is read from the offset after the file's highest
//!   one for it (from the beginning for a new file), whatever the group's committed offsets
//!   say. A batch is appended, flushed and fsynced before its offsets are stored; a torn last
//!   line (a crash mid-write, never fsynced, so never stored) is cut off.
//! - A restart does not read the whole file. After a batch's fsync, at most once every
//!   [`CHECKPOINT_INTERVAL`], and on a clean stop, the positions are written next to the file
//!   in `<file>.positions` (a temporary file, fsynced, renamed over the old one): the file's
//!   length, the line ending at that length, and per topic and partition the highest offset
//!   and its bid id. On start the checkpoint is taken only if the file still has that line
//!   ending at that length; the rows after it (none after a clean stop, at most a second's
//!   worth after a crash) raise the positions, and the recent bid ids come from the file's last
//!   [`WINDOW_BYTES`]: a start reads that, 64 KiB and the rows after the checkpoint, whatever
//!   the file's size (measured: 0.2 s for a file of ten million lines, 10 s before). What a
//!   checkpoint names was fsynced before it was written, so one older than the file (a crash
//!   between the two) only means more rows to read. A missing, unreadable or mismatched
//!   checkpoint (the file cut, replaced or restored) is logged and the whole file read once, as
//!   the first start of a file from before checkpoints does; a new checkpoint is then written.
//!   Not after every batch: that would add two fsyncs to the batch's one (measured here 2.6 ms
//!   for a batch, 8.5 ms with a checkpoint).
//! - The file belongs to one incarnation of the topic. On start, for each partition, the bid at
//!   the file's highest offset must be the message at that offset in Kafka. If the topic was
//!   recreated or the cluster rebuilt, it is not: the file is moved aside (logged at warn), its
//!   checkpoint removed, and a new file is filled from the start of the topic. An offset at or
//!   below what the file holds arriving while running means the same thing: the process stops
//!   with a message saying so instead of skipping bids, and the check on restart moves the file
//!   aside.
//! - A bid id already in the file (a retried publish of the same bid, or the same bid twice in
//!   a batch) is not appended again, over a window of the last [`RECENT_PER_PARTITION`] bids of
//!   each partition; after a restart, of those among the file's last [`WINDOW_BYTES`] (about
//!   330,000 rows of the usual 100 bytes: the whole window of a 6-partition topic). Rows hold
//!   no line breaks (bidder names refuse control characters), so the window starts at the
//!   first full line of those bytes.
//! - One process owns the file at a time (an exclusive lock): run one file-backup per file.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use auction_common::config::KafkaConfig;
use auction_common::domain::format_ts;
use auction_common::kafka;
use auction_common::retry::Backoff;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::pipeline::{Positions, Record, Role, Sink, SinkError, WriteOutcome};

pub const HEADER: [&str; 8] = ["bid_id", "auction_id", "name", "price", "bid_ts", "topic", "partition", "offset"];

/// How many recent bid ids per partition are remembered to drop a bid published twice.
pub const RECENT_PER_PARTITION: usize = 50_000;

/// How much of the end of the file a restart reads for the recent bid ids: the bound on a
/// restart's reading, whatever the file's size.
pub const WINDOW_BYTES: u64 = 32 * 1024 * 1024;

/// How often at most the checkpoint is rewritten; a restart reads what was appended since.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Rows are well under this (a 100-character name is at most 400 bytes): how far back from the
/// end a torn line, or the last full line, is looked for.
const LONGEST_LINE: u64 = 64 * 1024;

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

/// Per topic and partition, the file's highest offset and the bid id on it.
type Marks = HashMap<(String, i32), (i64, String)>;

/// What opening the file read: a restart's cost, for the log and for whoever checks it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartupRead {
    /// The file's length once opened (after a torn line was cut).
    pub file_bytes: u64,
    /// Bytes of the file read to open it.
    pub bytes_read: u64,
    /// Whether the positions came from the checkpoint; if not, the whole file was read.
    pub from_checkpoint: bool,
    /// How long reading took (not the check against the topic that follows).
    pub took: Duration,
}

/// What reading the file found: positions, the bid at each partition's highest offset, recent ids.
#[derive(Default)]
struct FileState {
    positions: Positions,
    marks: Marks,
    recent: RecentIds,
    /// The file's last line, with its newline (empty for an empty file).
    last_line: Vec<u8>,
    /// Whether `<file>.positions` already describes the file as it is.
    checkpoint_current: bool,
    read: StartupRead,
}

impl FileState {
    fn take(&mut self, bid_id: &str, topic: &str, partition: i32, offset: i64, id: u128) {
        self.positions.raise(topic, partition, offset);
        raise_mark(&mut self.marks, topic, partition, offset, bid_id);
        self.recent.insert(partition, id);
    }
}

fn raise_mark(marks: &mut Marks, topic: &str, partition: i32, offset: i64, bid_id: &str) {
    match marks.get_mut(&(topic.to_owned(), partition)) {
        Some(mark) if offset < mark.0 => {}
        Some(mark) => *mark = (offset, bid_id.to_owned()),
        None => {
            marks.insert((topic.to_owned(), partition), (offset, bid_id.to_owned()));
        }
    }
}

/// `<file>.positions`: what a restart needs from the file up to `csv_bytes`.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    /// The file's length when written; every byte before it was fsynced first.
    csv_bytes: u64,
    /// The line ending at `csv_bytes`, newline included: the file is still the one described
    /// only if it has this line there.
    last_line: String,
    marks: Vec<CheckpointMark>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointMark {
    topic: String,
    partition: i32,
    offset: i64,
    bid_id: String,
}

/// Where the checkpoint of `csv` is kept: beside it, `<file name>.positions`.
pub fn checkpoint_path(csv: &Path) -> PathBuf {
    let mut name = csv.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "bids.csv".into());
    name.push(".positions");
    csv.with_file_name(name)
}

pub struct CsvSink {
    path: PathBuf,
    file: File,
    positions: Positions,
    marks: Marks,
    recent: RecentIds,
    last_line: Vec<u8>,
    /// When the checkpoint was last written by this process (`None`: never, or the last
    /// attempt failed), and whether rows were appended since.
    checkpointed: Option<Instant>,
    behind: bool,
    startup: StartupRead,
}

impl CsvSink {
    /// Opens (or creates) the file, checks that it was written from the topic `kafka` names
    /// (moving it aside if not; see the module doc), and takes its lock.
    pub async fn open(path: &Path, kafka: &KafkaConfig) -> Result<Self, BackupError> {
        let (file, state) = open_locked(path, WINDOW_BYTES)?;
        if let Some(reason) = other_incarnation(&state, kafka).await {
            drop(file);
            let aside = aside_path(path);
            std::fs::rename(path, &aside).map_err(|e| BackupError::Open(path.to_owned(), e))?;
            // The checkpoint describes the file moved aside; the new file gets its own.
            match std::fs::remove_file(checkpoint_path(path)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    log::warn!("cannot remove {}: {e}; the new file's first checkpoint replaces it", checkpoint_path(path).display())
                }
                _ => {}
            }
            log::warn!(
                "{} was written from another incarnation of topic {} ({reason}); moved it to {} and starting a new file, filled from the start of the topic",
                path.display(),
                kafka.topic,
                aside.display()
            );
            let (file, state) = open_locked(path, WINDOW_BYTES)?;
            return Self::start(path, file, state);
        }
        Self::start(path, file, state)
    }

    /// What opening the file read.
    pub fn startup_read(&self) -> StartupRead {
        self.startup
    }

    fn start(path: &Path, file: File, state: FileState) -> Result<Self, BackupError> {
        let mut sink = Self {
            path: path.to_owned(),
            file,
            positions: state.positions,
            marks: state.marks,
            recent: state.recent,
            last_line: state.last_line,
            checkpointed: state.checkpoint_current.then(Instant::now),
            behind: !state.checkpoint_current,
            startup: state.read,
        };
        let open_err = |e| BackupError::Open(path.to_owned(), e);
        if sink.file.metadata().map_err(open_err)?.len() == 0 {
            sink.append(|w| w.write_record(HEADER)).map_err(|e| BackupError::Read(path.to_owned(), e.to_string()))?;
        }
        // What this start read beyond the checkpoint is not read again by the next one.
        if sink.behind {
            sink.checkpoint();
        }
        let read = sink.startup;
        log::info!(
            "appending to {} ({} partitions seen before; read {} of its {} bytes in {:.0?}, {})",
            path.display(),
            sink.positions.partitions_known(),
            read.bytes_read,
            read.file_bytes,
            read.took,
            if read.from_checkpoint { "positions from its checkpoint" } else { "the whole file" }
        );
        Ok(sink)
    }

    /// Appends rows and makes them durable; on failure the file is cut back to where it was,
    /// so a retry does not leave half a batch twice.
    fn append(&mut self, rows: impl FnOnce(&mut csv::Writer<Vec<u8>>) -> csv::Result<()>) -> std::io::Result<()> {
        let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
        rows(&mut writer).map_err(std::io::Error::other)?;
        let bytes = writer.into_inner().map_err(|e| std::io::Error::other(e.to_string()))?;
        let start = self.file.metadata()?.len();
        let result = (&self.file).write_all(&bytes).and_then(|()| self.file.sync_data());
        if result.is_err() {
            let _ = self.file.set_len(start);
        }
        result?;
        self.last_line = last_line_of(&bytes).to_vec();
        self.behind = true;
        Ok(())
    }

    /// Writes the checkpoint now. A failure costs only reading more on the next start, so it is
    /// logged and tried again after the next batch rather than holding bids back.
    fn checkpoint(&mut self) {
        match self.write_checkpoint() {
            Ok(()) => {
                self.checkpointed = Some(Instant::now());
                self.behind = false;
            }
            Err(e) => {
                self.checkpointed = None;
                log::warn!(
                    "cannot write {}: {e}; the next start reads the rows appended since the last checkpoint",
                    checkpoint_path(&self.path).display()
                )
            }
        }
    }

    fn write_checkpoint(&self) -> std::io::Result<()> {
        if self.last_line.is_empty() {
            return Err(std::io::Error::other("the file's last line is not known"));
        }
        let mut marks: Vec<CheckpointMark> = self
            .marks
            .iter()
            .map(|((topic, partition), (offset, bid_id))| CheckpointMark { topic: topic.clone(), partition: *partition, offset: *offset, bid_id: bid_id.clone() })
            .collect();
        marks.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let checkpoint =
            Checkpoint { csv_bytes: self.file.metadata()?.len(), last_line: String::from_utf8(self.last_line.clone()).map_err(std::io::Error::other)?, marks };
        let target = checkpoint_path(&self.path);
        let mut temp_name = target.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        temp_name.push(".tmp");
        let temp = target.with_file_name(temp_name);
        let mut file = File::create(&temp)?;
        file.write_all(&serde_json::to_vec(&checkpoint).map_err(std::io::Error::other)?)?;
        // Synced before the rename, so a crash leaves the old checkpoint or the whole new one.
        // The directory is not synced: a rename lost in a crash leaves the older checkpoint,
        // which is still true of the file, only further behind.
        file.sync_data()?;
        std::fs::rename(&temp, &target)
    }
}

/// A clean stop leaves the checkpoint level with the file, so the next start reads no rows
/// after it; only a crash leaves up to [`CHECKPOINT_INTERVAL`] of rows to read again.
impl Drop for CsvSink {
    fn drop(&mut self) {
        if self.behind {
            self.checkpoint();
        }
    }
}

/// Opens and locks the file, cuts a torn line, and reads what a start needs: the rows after the
/// checkpoint and the last `window` bytes if the checkpoint holds, the whole file if not.
fn open_locked(path: &Path, window: u64) -> Result<(File, FileState), BackupError> {
    let clock = Instant::now();
    let open_err = |e| BackupError::Open(path.to_owned(), e);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(open_err)?;
    }
    let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(open_err)?;
    file.try_lock().map_err(|_| BackupError::Locked(path.to_owned()))?;
    let mut state = FileState::default();
    let last_line = cut_torn_line(&mut file, &mut state.read.bytes_read).map_err(open_err)?;
    let len = file.metadata().map_err(open_err)?.len();
    state.read.file_bytes = len;
    if len == 0 {
        state.read.took = clock.elapsed();
        return Ok((file, state));
    }
    let checkpoint = match &last_line {
        // Then no checkpoint can be checked against the file, nor written for it: the file is
        // read whole, and the header and rows say what is wrong with it.
        None => Err(format!("the last line of {} is longer than {LONGEST_LINE} bytes", path.display())),
        Some(_) => load_checkpoint(path, &mut file, len, &mut state.read.bytes_read),
    };
    let from = match checkpoint {
        Ok(Some(checkpoint)) => {
            for mark in checkpoint.marks {
                state.positions.raise(&mark.topic, mark.partition, mark.offset);
                raise_mark(&mut state.marks, &mark.topic, mark.partition, mark.offset, &mark.bid_id);
            }
            state.read.from_checkpoint = true;
            state.checkpoint_current = checkpoint.csv_bytes == len;
            checkpoint.csv_bytes.min(len.saturating_sub(window))
        }
        Ok(None) => {
            log::info!("{} has no checkpoint yet: reading the whole file once", path.display());
            0
        }
        Err(reason) => {
            log::warn!("not using {}: {reason}; reading the whole file once", checkpoint_path(path).display());
            0
        }
    };
    read_rows(path, &mut file, from, &mut state)?;
    state.last_line = last_line.unwrap_or_default();
    state.read.took = clock.elapsed();
    Ok((file, state))
}

fn aside_path(path: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "bids.csv".into());
    path.with_file_name(format!("{name}.other-topic-{stamp}"))
}

/// Cuts the file after its last newline, and returns its last full line (`None` if it is
/// longer than [`LONGEST_LINE`]; empty for an empty file).
fn cut_torn_line(file: &mut File, bytes_read: &mut u64) -> std::io::Result<Option<Vec<u8>>> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Some(Vec::new()));
    }
    let tail_start = len.saturating_sub(LONGEST_LINE);
    file.seek(SeekFrom::Start(tail_start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    *bytes_read += tail.len() as u64;
    if tail.last() != Some(&b'\n') {
        let keep = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        log::warn!("cutting a torn last line ({} bytes) left by an interrupted write", tail.len() - keep);
        file.set_len(tail_start + keep as u64)?;
        file.sync_data()?;
        tail.truncate(keep);
    }
    let line = last_line_of(&tail);
    // A line that reaches the start of what was read may have begun before it.
    let whole = tail_start == 0 || line.len() < tail.len();
    Ok(whole.then(|| line.to_vec()))
}

/// The last line of `bytes` (which end with a newline, or are empty), newline included.
fn last_line_of(bytes: &[u8]) -> &[u8] {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    &bytes[start..]
}

/// The checkpoint, if there is one and it describes this file (`Err` says why it does not).
fn load_checkpoint(path: &Path, file: &mut File, len: u64, bytes_read: &mut u64) -> Result<Option<Checkpoint>, String> {
    let text = match std::fs::read(checkpoint_path(path)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let checkpoint: Checkpoint = serde_json::from_slice(&text).map_err(|e| format!("it does not parse ({e})"))?;
    if checkpoint.csv_bytes > len {
        return Err(format!("it describes {} bytes but {} has {len}", checkpoint.csv_bytes, path.display()));
    }
    // The recorded line, and the newline before it unless it is the first line.
    let line = checkpoint.last_line.as_bytes();
    let line_start = checkpoint.csv_bytes.checked_sub(line.len() as u64).filter(|_| line.ends_with(b"\n"));
    let Some(line_start) = line_start else {
        return Err("its last line is not a line ending at its length".to_owned());
    };
    let read_from = line_start.saturating_sub(1);
    let mut found = vec![0; (checkpoint.csv_bytes - read_from) as usize];
    file.seek(SeekFrom::Start(read_from)).and_then(|_| file.read_exact(&mut found)).map_err(|e| e.to_string())?;
    *bytes_read += found.len() as u64;
    let expected: Vec<u8> = if line_start == 0 { line.to_vec() } else { [b"\n", line].concat() };
    if found != expected {
        return Err(format!("{} does not have the line it records at byte {line_start}", path.display()));
    }
    Ok(Some(checkpoint))
}

/// Reads the rows from byte `from` (the whole file, header checked, from 0; otherwise from the
/// first full line at or after `from`) into `state`.
fn read_rows(path: &Path, file: &mut File, from: u64, state: &mut FileState) -> Result<(), BackupError> {
    let read_err = |e: String| BackupError::Read(path.to_owned(), e);
    // One byte before `from` is read so that a line starting exactly at `from` is kept whole.
    file.seek(SeekFrom::Start(from.saturating_sub(1))).map_err(|e| read_err(e.to_string()))?;
    let mut counted = 0;
    let mut input = BufReader::with_capacity(1 << 20, Counted { inner: &*file, count: &mut counted });
    if from > 0 {
        input.read_until(b'\n', &mut Vec::new()).map_err(|e| read_err(e.to_string()))?;
    }
    let mut reader = csv::ReaderBuilder::new().has_headers(from == 0).from_reader(input);
    if from == 0 {
        let headers: Vec<String> = reader.headers().map_err(|e| read_err(e.to_string()))?.iter().map(str::to_owned).collect();
        if headers != HEADER {
            return Err(BackupError::Header(path.to_owned(), headers));
        }
    }
    for row in reader.records() {
        let row = row.map_err(|e| read_err(e.to_string()))?;
        let (Some(bid_id), Some(topic), Some(partition), Some(offset)) = (row.get(0), row.get(5), row.get(6), row.get(7)) else {
            return Err(read_err(format!("row {:?} has too few columns", row.position())));
        };
        let (Ok(partition), Ok(offset), Ok(id)) = (partition.parse::<i32>(), offset.parse::<i64>(), uuid::Uuid::parse_str(bid_id)) else {
            return Err(read_err(format!("row {:?} has a bad bid_id, partition or offset", row.position())));
        };
        state.take(bid_id, topic, partition, offset, id.as_u128());
    }
    drop(reader);
    state.read.bytes_read += counted;
    Ok(())
}

/// Counts the bytes read through it.
struct Counted<'a, R> {
    inner: R,
    count: &'a mut u64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.count += n as u64;
        Ok(n)
    }
}

/// Why the file was not written from the topic `kafka` names now, if it was not. Waits (with
/// backoff) while Kafka cannot be asked: a file is never moved aside on a guess.
async fn other_incarnation(state: &FileState, kafka: &KafkaConfig) -> Option<String> {
    let marks: Vec<(i32, i64, String)> = state
        .marks
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
/// has there (bids are keyed by bid id). All partitions are fetched at once: asked one after
/// another, each waited about 0.7 s for its first message (4.5 s of a 6-partition restart).
fn compare_with_topic(kafka: &KafkaConfig, marks: &[(i32, i64, String)]) -> Result<Option<String>, KafkaError> {
    const LIMIT: Duration = Duration::from_secs(10);
    let consumer: BaseConsumer = kafka::client_config(kafka).set("enable.auto.commit", "false").set("group.id", "auction-file-backup-check").create()?;
    let mut tpl = TopicPartitionList::new();
    let mut wanted: HashMap<i32, (i64, &str)> = HashMap::new();
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
        tpl.add_partition_offset(&kafka.topic, *partition, Offset::Offset(*offset))?;
        wanted.insert(*partition, (*offset, bid_id.as_str()));
    }
    if wanted.is_empty() {
        return Ok(None);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + LIMIT;
    while !wanted.is_empty() {
        let message = consumer.poll(deadline.saturating_duration_since(Instant::now())).ok_or(KafkaError::NoMessageReceived)??;
        // Only the first message of each partition, the one at the assigned offset, is compared.
        let partition = message.partition();
        let Some((offset, bid_id)) = wanted.remove(&partition) else { continue };
        let key = message.key().map(String::from_utf8_lossy).unwrap_or_default();
        if message.offset() != offset || key != bid_id {
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
            raise_mark(&mut self.marks, &r.topic, r.partition, r.offset, &r.bid.bid_id.to_string());
            self.recent.insert(r.partition, r.bid.bid_id.as_uuid().as_u128());
        }
        if self.checkpointed.is_none_or(|at| at.elapsed() >= CHECKPOINT_INTERVAL) {
            self.checkpoint();
        }
        Ok(outcome)
    }

    fn positions(&self) -> Option<Positions> {
        Some(self.positions.clone())
    }
}

#[cfg(test)]
mod tests {
    //! The file's side of a restart; the topic's side (the incarnation check, reading from the
    //! file's positions) is in the integration tests, over a real broker.
    use super::*;
    use auction_common::{AuctionId, Bid, BidderName, Price};

    const TOPIC: &str = "bids";

    /// A CSV path in a directory of its own, removed at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("file-backup-unit-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).expect("scratch directory");
            Self(dir)
        }

        fn csv(&self) -> PathBuf {
            self.0.join("bids.csv")
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn open(path: &Path, window: u64) -> CsvSink {
        let (file, state) = open_locked(path, window).expect("the file opens");
        CsvSink::start(path, file, state).expect("the sink starts")
    }

    /// Writes `per_partition` new bids to each of partitions 0..3, in batches of 100, each
    /// offset after the sink's highest; returns them.
    async fn fill(sink: &mut CsvSink, per_partition: i64) -> Vec<Record> {
        let mut records = Vec::new();
        for partition in 0..3 {
            let next = sink.positions.highest(TOPIC, partition).map_or(0, |o| o + 1);
            for offset in next..next + per_partition {
                let name = BidderName::parse(&format!("bidder {partition}-{offset}")).expect("name");
                let bid = Bid::accept(AuctionId::new(1).expect("auction"), name, Price::parse("12.50").expect("price"));
                records.push(Record { bid, topic: TOPIC.into(), partition, offset, key: None, payload: Vec::new() });
            }
        }
        for batch in records.chunks(100) {
            let outcome = sink.write(batch).await.expect("the batch is written");
            assert_eq!(outcome.written, batch.len() as u64);
        }
        records
    }

    fn highest(sink: &CsvSink) -> Vec<Option<i64>> {
        (0..3).map(|p| sink.positions.highest(TOPIC, p)).collect()
    }

    fn csv_len(path: &Path) -> u64 {
        std::fs::metadata(path).expect("the file").len()
    }

    #[tokio::test]
    async fn a_restart_reads_the_same_bytes_from_a_small_file_and_one_a_hundred_times_larger() {
        let window = 64 * 1024;
        let mut reads = Vec::new();
        for per_partition in [1_000, 100_000] {
            let scratch = Scratch::new();
            let mut sink = open(&scratch.csv(), window);
            fill(&mut sink, per_partition).await;
            drop(sink);

            let again = open(&scratch.csv(), window);
            let read = again.startup_read();
            assert!(read.from_checkpoint, "{read:?}");
            assert_eq!(read.file_bytes, csv_len(&scratch.csv()));
            assert_eq!(highest(&again), vec![Some(per_partition - 1); 3], "positions from the checkpoint");
            reads.push(read);
        }
        let (small, large) = (reads[0], reads[1]);
        assert!(large.file_bytes > 90 * small.file_bytes, "{small:?} {large:?}");
        // The window, the last line checked against the checkpoint and the torn-line check: all
        // bounded, none growing with the file.
        assert!(large.bytes_read <= window + 2 * LONGEST_LINE + 1024 * 1024, "{large:?}");
        // Equal but for the last lines' lengths ("bidder 2-999" against "bidder 2-99999").
        assert!(large.bytes_read.abs_diff(small.bytes_read) < 64, "the same reading whatever the file's size: {small:?} {large:?}");
    }

    #[tokio::test]
    async fn a_checkpoint_older_than_the_file_is_caught_up_from_the_rows_after_it() {
        // A window smaller than what was appended after the checkpoint: those rows are read
        // because they follow the checkpoint, not because they are at the end.
        let window = 4 * 1024;
        let scratch = Scratch::new();
        let csv = scratch.csv();
        let mut sink = open(&csv, window);
        fill(&mut sink, 100).await;
        drop(sink);
        let old = std::fs::read(checkpoint_path(&csv)).expect("a checkpoint after a clean stop");

        let mut sink = open(&csv, window);
        let later = fill(&mut sink, 50).await;
        drop(sink);
        // A crash between a batch's fsync and the checkpoint's rename leaves the older one.
        std::fs::write(checkpoint_path(&csv), &old).expect("restore the older checkpoint");

        let mut sink = open(&csv, window);
        let read = sink.startup_read();
        assert!(read.from_checkpoint && read.bytes_read > 150 * 90, "the 150 rows after the checkpoint read: {read:?}");
        assert_eq!(highest(&sink), vec![Some(149); 3], "the rows after the checkpoint raised the positions");
        let outcome = sink.write(&later[..10]).await.expect("a redelivery");
        assert_eq!(outcome, WriteOutcome { written: 0, duplicates: 10, rejected: Vec::new() }, "bids after the checkpoint are known");
        drop(sink);
        assert_eq!(csv_rows(&csv), 450);
        let next = open(&csv, window).startup_read();
        assert!(next.from_checkpoint && next.bytes_read < window + 2 * LONGEST_LINE + 1024, "caught up once: {next:?}");
    }

    #[tokio::test]
    async fn a_missing_unreadable_or_mismatched_checkpoint_means_one_whole_read() {
        let scratch = Scratch::new();
        let csv = scratch.csv();
        let mut sink = open(&csv, WINDOW_BYTES);
        fill(&mut sink, 200).await;
        drop(sink);
        let good = std::fs::read_to_string(checkpoint_path(&csv)).expect("checkpoint");
        let len = csv_len(&csv);
        let spoiled: [(&str, Option<String>); 4] = [
            ("missing", None),
            ("unreadable", Some("{\"csv_bytes\": 12".to_owned())),
            ("longer than the file", Some(good.replace(&format!("\"csv_bytes\":{len}"), &format!("\"csv_bytes\":{}", len + 10)))),
            ("another last line", Some(good.replace("bidder 2-199", "bidder 2-198"))),
        ];
        for (what, checkpoint) in spoiled {
            match &checkpoint {
                None => std::fs::remove_file(checkpoint_path(&csv)).expect("remove"),
                Some(text) => {
                    assert_ne!(text, &good, "{what}: the checkpoint is spoiled");
                    std::fs::write(checkpoint_path(&csv), text).expect("spoil")
                }
            }
            let sink = open(&csv, WINDOW_BYTES);
            let read = sink.startup_read();
            assert!(!read.from_checkpoint && read.bytes_read >= len, "{what}: the whole file read: {read:?}");
            assert_eq!(highest(&sink), vec![Some(199); 3], "{what}");
            drop(sink);
            assert_eq!(std::fs::read_to_string(checkpoint_path(&csv)).expect("rewritten"), good, "{what}: the checkpoint written again");
            assert!(open(&csv, WINDOW_BYTES).startup_read().from_checkpoint, "{what}: the next start uses it");
        }
    }

    #[tokio::test]
    async fn a_torn_line_after_the_checkpoint_is_cut_and_the_checkpoint_still_holds() {
        let scratch = Scratch::new();
        let csv = scratch.csv();
        let mut sink = open(&csv, WINDOW_BYTES);
        fill(&mut sink, 20).await;
        drop(sink);
        let len = csv_len(&csv);
        let mut file = OpenOptions::new().append(true).open(&csv).expect("open");
        file.write_all(b"0193a5b2-0000-7000-8000-00000000,1,half a ro").expect("a torn write");
        drop(file);

        let mut sink = open(&csv, WINDOW_BYTES);
        assert_eq!(csv_len(&csv), len, "the torn line is cut");
        assert!(sink.startup_read().from_checkpoint);
        fill(&mut sink, 1).await;
        drop(sink);
        assert_eq!(csv_rows(&csv), 63);
    }

    #[tokio::test]
    async fn after_a_restart_a_bid_within_the_window_is_not_appended_again() {
        let scratch = Scratch::new();
        let csv = scratch.csv();
        let mut sink = open(&csv, WINDOW_BYTES);
        let written = fill(&mut sink, 300).await;
        drop(sink);

        let mut sink = open(&csv, WINDOW_BYTES);
        // The same bid published again lands at a new offset of its partition.
        let mut again = written[250].clone();
        again.offset = sink.positions.highest(TOPIC, again.partition).expect("a position") + 1;
        let outcome = sink.write(&[again]).await.expect("written");
        assert_eq!(outcome.duplicates, 1, "known from the window read at start");
        drop(sink);
        assert_eq!(csv_rows(&csv), 900);
    }

    fn csv_rows(path: &Path) -> usize {
        csv::Reader::from_path(path).expect("the file").records().count()
    }
}
