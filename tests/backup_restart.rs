//! What a file-backup restart reads, over the real stack: the checkpoint next to the CSV
//! (`<file>.positions`) and the end of the file, never the whole file; and every bid still in
//! the file exactly once whether the checkpoint is current, missing or older than the file.

use std::collections::HashSet;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use auction_common::domain::format_ts;
use auction_common::registry::BidEncoder;
use auction_consumers::file_backup::{checkpoint_path, CsvSink, StartupRead, HEADER, WINDOW_BYTES};

use crate::helpers::{bid, csv_rows, eventually, produce, RunningConsumer, TestStack};

async fn encoded(stack: &TestStack, label: &str, count: usize) -> Vec<(String, Vec<u8>)> {
    let encoder = BidEncoder::new(&stack.registry, &stack.kafka.topic).expect("encoder");
    let mut payloads = Vec::new();
    for i in 0..count {
        let b = bid(&format!("{label} {i}"), &format!("{}.25", i + 1));
        payloads.push((b.bid_id.to_string(), encoder.encode(&b).await.expect("encoded")));
    }
    payloads
}

/// Opens the file as `auction-consumer file-backup` does, and runs the consumer on it under a
/// group of its own (no committed offsets: where it reads from is the file's doing).
async fn start(stack: &TestStack, csv: &Path, group: &str) -> (RunningConsumer, StartupRead) {
    let sink = CsvSink::open(csv, &stack.kafka).await.expect("the CSV opens");
    let read = sink.startup_read();
    (RunningConsumer::spawn(stack.consumer_settings(group), sink), read)
}

/// The bid ids of the test's topic in the file's rows from byte `from` (a line's start; 0 for
/// the whole file), one entry per row.
fn topic_ids(csv: &Path, from: u64, topic: &str) -> Vec<String> {
    let rows = if from == 0 {
        csv_rows(csv)
    } else {
        let mut file = std::fs::File::open(csv).expect("the CSV");
        file.seek(SeekFrom::Start(from)).expect("seek");
        csv::ReaderBuilder::new().has_headers(false).from_reader(file).records().map(|r| r.expect("a well-formed CSV row")).collect()
    };
    rows.iter().filter(|r| &r[5] == topic).map(|r| r[0].to_owned()).collect()
}

/// Waits until the file (from byte `from`) holds every bid of `produced`, then lets a stray
/// redelivery arrive, and checks that each is there once.
async fn each_once(stack: &TestStack, csv: &Path, from: u64, produced: &[(String, Vec<u8>)], what: &str) {
    let wanted: HashSet<String> = produced.iter().map(|(k, _)| k.clone()).collect();
    eventually(Duration::from_secs(60), what, || async {
        let ids: HashSet<String> = topic_ids(csv, from, &stack.kafka.topic).into_iter().collect();
        (ids == wanted).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(topic_ids(csv, from, &stack.kafka.topic).len(), produced.len(), "{what}: each bid exactly once");
}

#[tokio::test]
async fn bids_produced_while_file_backup_was_stopped_land_once_whether_its_checkpoint_is_current_missing_or_older_than_the_file() {
    let stack = TestStack::new().await;
    let csv = stack.csv_path();
    let checkpoint = checkpoint_path(&csv);
    let mut produced = encoded(&stack, "first", 30).await;
    produce(&stack, &produced).await;
    let (backup, read) = start(&stack, &csv, "backup-1").await;
    assert!(!read.from_checkpoint, "a new file: {read:?}");
    each_once(&stack, &csv, 0, &produced, "the first 30 bids").await;
    backup.stop().await;
    let older = std::fs::read(&checkpoint).expect("a clean stop leaves a checkpoint");

    // The checkpoint a clean stop left.
    let more = encoded(&stack, "while stopped", 20).await;
    produce(&stack, &more).await;
    produced.extend(more);
    let (backup, read) = start(&stack, &csv, "backup-2").await;
    assert!(read.from_checkpoint, "{read:?}");
    each_once(&stack, &csv, 0, &produced, "the 20 bids produced while stopped").await;
    assert_eq!(backup.status.duplicates.load(Ordering::Relaxed), 0, "each partition read from after the file's highest offset, nothing again");
    backup.stop().await;

    // No checkpoint: the whole file is read once, and a checkpoint written.
    std::fs::remove_file(&checkpoint).expect("remove the checkpoint");
    let more = encoded(&stack, "without checkpoint", 20).await;
    produce(&stack, &more).await;
    produced.extend(more);
    let (backup, read) = start(&stack, &csv, "backup-3").await;
    assert!(!read.from_checkpoint && read.bytes_read >= read.file_bytes, "{read:?}");
    assert!(checkpoint.exists(), "written again at start");
    each_once(&stack, &csv, 0, &produced, "the 20 bids produced while the checkpoint was gone").await;
    assert_eq!(backup.status.duplicates.load(Ordering::Relaxed), 0);
    backup.stop().await;

    // A crash between a batch's fsync and the checkpoint's rename leaves an older checkpoint.
    std::fs::write(&checkpoint, &older).expect("restore the older checkpoint");
    let more = encoded(&stack, "with an old checkpoint", 20).await;
    produce(&stack, &more).await;
    produced.extend(more);
    let (backup, read) = start(&stack, &csv, "backup-4").await;
    assert!(read.from_checkpoint, "the older checkpoint still describes the file's beginning: {read:?}");
    each_once(&stack, &csv, 0, &produced, "the 20 bids produced after the old checkpoint").await;
    assert_eq!(backup.status.duplicates.load(Ordering::Relaxed), 0, "the rows after the old checkpoint raised the positions");
    // The same bid published again (a retry after an unknown outcome): in the window read at start.
    produce(&stack, &produced[35..36]).await;
    eventually(Duration::from_secs(30), "the bid published twice to be seen", || async {
        (backup.status.duplicates.load(Ordering::Relaxed) == 1).then_some(())
    })
    .await;
    backup.stop().await;
    assert_eq!(topic_ids(&csv, 0, &stack.kafka.topic).len(), produced.len(), "the bid published twice is in the file once");

    let raw = std::fs::read_to_string(&csv).expect("the CSV");
    assert_eq!(raw.matches("bid_id,auction_id").count(), 1, "one header");
    stack.cleanup().await;
}

/// Writes the header and `lines` rows of `topic` (6 partitions, offsets in order) to `csv`.
fn pad(csv: &Path, topic: &str, lines: usize) {
    std::fs::create_dir_all(csv.parent().expect("a directory")).expect("directory");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(csv).expect("the CSV"));
    writeln!(out, "{}", HEADER.join(",")).expect("header");
    let ts = format_ts(&chrono::Utc::now());
    for i in 0..lines {
        let (partition, offset) = (i % 6, i / 6);
        writeln!(out, "{},{},earlier bidder {i},{}.50,{ts},{topic},{partition},{offset}", uuid::Uuid::now_v7(), 1 + i % 50, 1 + i % 900).expect("row");
    }
    out.into_inner().expect("flushed").sync_all().expect("synced");
}

/// The file is padded with rows of an earlier topic, which the file-backup reads as it would any
/// (the file keeps rows of every topic it was written from); the test's topic then adds real
/// bids. `BACKUP_RESTART_PADDING_LINES` (1,000,000) sets the padding; the test prints how long
/// an opening took with and without the checkpoint.
#[tokio::test]
async fn restarting_on_a_file_of_a_million_lines_reads_only_its_end() {
    let lines: usize = std::env::var("BACKUP_RESTART_PADDING_LINES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let stack = TestStack::new().await;
    let csv = stack.csv_path();
    let earlier = format!("{}-earlier", stack.kafka.topic);
    pad(&csv, &earlier, lines);
    // The checks read the rows after the padding only, so that they keep up on a large file.
    let padded = std::fs::metadata(&csv).expect("the CSV").len();

    let mut produced = encoded(&stack, "real", 100).await;
    produce(&stack, &produced).await;
    let (backup, read) = start(&stack, &csv, "backup-1").await;
    assert!(!read.from_checkpoint && read.bytes_read >= read.file_bytes, "a file from before checkpoints is read whole once: {read:?}");
    each_once(&stack, &csv, padded, &produced, "the 100 real bids after the padding").await;
    backup.stop().await;

    let more = encoded(&stack, "while stopped", 50).await;
    produce(&stack, &more).await;
    produced.extend(more);

    // Today's reading, for comparison: the whole file, as without a checkpoint.
    let saved = std::fs::read(checkpoint_path(&csv)).expect("checkpoint");
    std::fs::remove_file(checkpoint_path(&csv)).expect("remove the checkpoint");
    let clock = Instant::now();
    let whole = CsvSink::open(&csv, &stack.kafka).await.expect("opens");
    let whole_took = clock.elapsed();
    let whole_read = whole.startup_read();
    drop(whole);
    std::fs::write(checkpoint_path(&csv), &saved).expect("put the checkpoint back");

    let clock = Instant::now();
    let sink = CsvSink::open(&csv, &stack.kafka).await.expect("opens");
    let took = clock.elapsed();
    let read = sink.startup_read();
    println!(
        "file-backup start on a CSV of {lines} earlier lines + 100 bids ({:.1} MB): without the checkpoint read {:.1} MB in {:.2?} \
         ({whole_took:.2?} with the check against the topic); with it read {:.1} MB in {:.2?} ({took:.2?})",
        read.file_bytes as f64 / 1e6,
        whole_read.bytes_read as f64 / 1e6,
        whole_read.took,
        read.bytes_read as f64 / 1e6,
        read.took
    );
    assert!(read.from_checkpoint, "{read:?}");
    assert!(read.bytes_read <= WINDOW_BYTES + 1024 * 1024, "a bounded read, whatever the file's size: {read:?}");
    if lines >= 1_000_000 {
        assert!(read.file_bytes > 3 * WINDOW_BYTES, "the file is well beyond the window: {read:?}");
    }

    let backup = RunningConsumer::spawn(stack.consumer_settings("backup-2"), sink);
    each_once(&stack, &csv, padded, &produced, "the 50 bids produced while stopped").await;
    assert_eq!(backup.status.duplicates.load(Ordering::Relaxed), 0, "read from after the file's highest offsets");
    backup.stop().await;
    assert_eq!(csv_rows(&csv).len(), lines + produced.len(), "the earlier rows untouched, each real bid once");
    stack.cleanup().await;
}
