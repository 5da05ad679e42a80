//! `file-backup`: appends each bid to a CSV audit file (RFC 4180, header once, values as bid).
//!
//! A batch is appended, flushed and fsynced before its offsets are stored. Each row carries its
//! topic, partition and offset; on start the file is read once for the highest offset per
//! partition, and a redelivered bid at or below it is not appended again. A torn last line (a
//! crash mid-write, never fsynced, so its offset was never stored) is cut off. One process owns
//! the file at a time (an exclusive lock), so run one replica per file.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use auction_common::domain::format_ts;

use crate::pipeline::{Record, Sink, SinkError, WriteOutcome};

pub const HEADER: [&str; 8] = ["bid_id", "auction_id", "name", "price", "bid_ts", "topic", "partition", "offset"];

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

/// Per topic, per partition, the highest offset in the file. Keyed by topic first so the
/// per-record check borrows the record's topic instead of allocating a key.
type Watermarks = HashMap<String, HashMap<i32, i64>>;

fn raise(marks: &mut Watermarks, topic: &str, partition: i32, offset: i64) {
    if !marks.contains_key(topic) {
        marks.insert(topic.to_owned(), HashMap::new());
    }
    if let Some(partitions) = marks.get_mut(topic) {
        let mark = partitions.entry(partition).or_insert(offset);
        *mark = (*mark).max(offset);
    }
}

pub struct CsvSink {
    path: PathBuf,
    file: File,
    /// Highest offset in the file, per topic and partition.
    written: Watermarks,
}

impl CsvSink {
    pub fn open(path: &Path) -> Result<Self, BackupError> {
        let open_err = |e| BackupError::Open(path.to_owned(), e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(open_err)?;
        file.try_lock().map_err(|_| BackupError::Locked(path.to_owned()))?;
        cut_torn_line(&mut file).map_err(open_err)?;
        let written = read_watermarks(path, &mut file)?;
        let mut sink = Self { path: path.to_owned(), file, written };
        if sink.file.metadata().map_err(open_err)?.len() == 0 {
            sink.append(|w| w.write_record(HEADER)).map_err(|e| BackupError::Read(path.to_owned(), e.to_string()))?;
        }
        let seen: usize = sink.written.values().map(HashMap::len).sum();
        log::info!("appending to {} ({seen} partitions seen before)", path.display());
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

fn read_watermarks(path: &Path, file: &mut File) -> Result<Watermarks, BackupError> {
    let read_err = |e: String| BackupError::Read(path.to_owned(), e);
    file.seek(SeekFrom::Start(0)).map_err(|e| read_err(e.to_string()))?;
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(&*file);
    let mut marks = HashMap::new();
    if file.metadata().map_err(|e| read_err(e.to_string()))?.len() == 0 {
        return Ok(marks);
    }
    let headers: Vec<String> = reader.headers().map_err(|e| read_err(e.to_string()))?.iter().map(str::to_owned).collect();
    if headers != HEADER {
        return Err(BackupError::Header(path.to_owned(), headers));
    }
    for row in reader.records() {
        let row = row.map_err(|e| read_err(e.to_string()))?;
        let (Some(topic), Some(partition), Some(offset)) = (row.get(5), row.get(6), row.get(7)) else {
            return Err(read_err(format!("row {:?} has too few columns", row.position())));
        };
        let (Ok(partition), Ok(offset)) = (partition.parse::<i32>(), offset.parse::<i64>()) else {
            return Err(read_err(format!("row {:?} has a bad partition or offset", row.position())));
        };
        raise(&mut marks, topic, partition, offset);
    }
    Ok(marks)
}

impl Sink for CsvSink {
    async fn write(&mut self, records: &[Record]) -> Result<WriteOutcome, SinkError> {
        let fresh: Vec<&Record> = records
            .iter()
            .filter(|r| self.written.get(r.topic.as_str()).and_then(|p| p.get(&r.partition)).is_none_or(|&mark| r.offset > mark))
            .collect();
        let outcome = WriteOutcome { written: fresh.len() as u64, duplicates: (records.len() - fresh.len()) as u64 };
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
        .map_err(|e| SinkError(format!("{}: {e}", self.path.display())))?;
        for r in fresh {
            raise(&mut self.written, &r.topic, r.partition, r.offset);
        }
        Ok(outcome)
    }
}
