//! `auction-consumer audit`, `dlq list` and `dlq replay` over the real stack: the library
//! functions for exact values, and the built binary for exit codes and what an operator reads.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use auction_common::kafka;
use auction_common::registry::BidEncoder;
use auction_common::Bid;
use auction_consumers::audit::{self, AuditArgs};
use auction_consumers::dlq::{self, DeadLetter, DeadLetterClass, Listed, ReplayArgs};
use mysql_async::prelude::Queryable;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio::sync::watch;

use crate::helpers::{bid, csv_rows, eventually, produce, TestStack};

/// The `auction-consumer` binary. The test crate links only the library, so the binary is
/// built here once per run, with the profile and target directory of this test binary.
fn consumer_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("the test binary's path");
            let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test binary>");
            let target_dir = profile_dir.parent().expect("the target directory");
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev",
                Some(other) => other,
            };
            let status = std::process::Command::new(option_env!("CARGO").unwrap_or("cargo"))
                .args(["build", "--quiet", "-p", "auction-consumers", "--bin", "auction-consumer", "--profile", profile, "--target-dir"])
                .arg(target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building auction-consumer failed");
            profile_dir.join("auction-consumer")
        })
        .clone()
}

/// Runs `auction-consumer <args>` against the test's topic, registry and database.
async fn run_binary(stack: &TestStack, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let env = [
        ("KAFKA_BROKERS", stack.kafka.brokers.clone()),
        ("BIDS_TOPIC", stack.kafka.topic.clone()),
        ("SCHEMA_REGISTRY_URL", stack.registry.url.clone()),
        ("DATABASE_URL", stack.database.url.clone()),
        ("RUST_LOG", "warn".to_owned()),
        ("RUST_BACKTRACE", "0".to_owned()),
        ("RUST_LIB_BACKTRACE", "0".to_owned()),
    ];
    tokio::task::spawn_blocking(move || std::process::Command::new(consumer_binary()).args(args).envs(env).output().expect("auction-consumer runs"))
        .await
        .expect("the binary's task")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn audit_args(stack: &TestStack, csv: &Path, settle_secs: u64) -> AuditArgs {
    AuditArgs {
        kafka: stack.kafka.clone(),
        registry: stack.registry.clone(),
        database: stack.database.clone(),
        backup_csv: csv.to_owned(),
        since: None,
        settle_secs,
        json: false,
    }
}

/// A shutdown signal that never fires (its sender lives as long as the test).
fn no_shutdown() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}

async fn encoded(stack: &TestStack, bids: &[Bid]) -> Vec<(String, Vec<u8>)> {
    let encoder = BidEncoder::new(&stack.registry, &stack.kafka.topic).expect("encoder");
    let mut payloads = Vec::new();
    for b in bids {
        payloads.push((b.bid_id.to_string(), encoder.encode(b).await.expect("the registry encodes")));
    }
    payloads
}

/// Produces `bids`, runs a db-writer and a file-backup until each has all of them, and stops
/// both, so nothing changes MySQL or the CSV after this returns.
async fn bids_in_mysql_and_csv(stack: &TestStack, bids: &[Bid], extra: &[(String, Vec<u8>)]) -> PathBuf {
    let mut payloads = encoded(stack, bids).await;
    payloads.extend_from_slice(extra);
    produce(stack, &payloads).await;
    let csv = stack.csv_path();
    let writer = stack.spawn_db_writer("writers");
    let backup = stack.spawn_file_backup("backup", &csv);
    eventually(Duration::from_secs(60), "every bid in MySQL and in the CSV", || async {
        (stack.bid_rows().await.len() >= bids.len() && csv_rows(&csv).len() >= bids.len()).then_some(())
    })
    .await;
    writer.stop().await;
    backup.stop().await;
    csv
}

async fn delete_dlq_topic(stack: &TestStack) {
    let _ = crate::helpers::delete_topics(&stack.kafka, &[&dlq::dlq_topic(&stack.kafka.topic)]).await;
}

#[tokio::test]
async fn audit_passes_when_every_bid_in_kafka_is_in_mysql_and_in_the_csv_exactly_once() {
    let stack = TestStack::new().await;
    let bids: Vec<Bid> = (0..30).map(|i| bid(&format!("audited {i}"), &format!("{}.25", i + 1))).collect();
    // A producer retry after an unknown outcome (the same bid twice) and a message that is not
    // a bid: both reported, neither a failure.
    let mut extra = encoded(&stack, &bids[..1]).await;
    extra.push(("junk".to_owned(), b"not a bid".to_vec()));
    let csv = bids_in_mysql_and_csv(&stack, &bids, &extra).await;

    let (_stop, shutdown) = no_shutdown();
    let summary = audit::audit(&audit_args(&stack, &csv, 5), &shutdown).await.expect("the audit runs");

    assert!(summary.passed(), "{summary}");
    let k = &summary.kafka;
    assert_eq!((k.messages, k.bids, k.not_bids, k.repeated_bids, k.repeated_messages), (32, 30, 1, 1, 1), "{summary}");
    for sink in [&summary.mysql, &summary.csv] {
        assert_eq!((sink.rows, sink.missing, sink.duplicated, sink.not_in_kafka), (30, 0, 0, 0), "{}: {summary}", sink.name);
    }
    assert_eq!(summary.waited, Duration::ZERO, "nothing was lagging");

    let csv_arg = csv.to_string_lossy().into_owned();
    let output = run_binary(&stack, &["audit", "--backup-csv", &csv_arg, "--settle-secs", "5"]).await;
    assert_eq!(output.status.code(), Some(0), "{}{}", stdout(&output), stderr(&output));
    let report = stdout(&output);
    assert!(report.contains("bids in Kafka:               30 distinct, in 32 messages"), "{report}");
    assert!(report.contains("missing from MySQL: 0"), "{report}");
    assert!(report.contains("result: OK"), "{report}");

    let output = run_binary(&stack, &["audit", "--backup-csv", &csv_arg, "--json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json: Value = serde_json::from_str(&stdout(&output)).expect("one JSON object");
    assert_eq!((json["passed"].as_bool(), json["kafka"]["bids"].as_u64(), json["csv"]["rows"].as_u64()), (Some(true), Some(30), Some(30)));

    delete_dlq_topic(&stack).await;
    stack.cleanup().await;
}

#[tokio::test]
async fn audit_fails_naming_the_bid_whose_row_was_deleted_from_mysql() {
    let stack = TestStack::new().await;
    let bids: Vec<Bid> = (0..10).map(|i| bid(&format!("row {i}"), "4.00")).collect();
    let csv = bids_in_mysql_and_csv(&stack, &bids, &[]).await;
    let gone = bids[3].bid_id.to_string();
    let mut conn = stack.pool.get_conn().await.expect("conn");
    conn.exec_drop("DELETE FROM bid WHERE bid_id = ?", (&gone,)).await.expect("delete the row");
    drop(conn);

    let (_stop, shutdown) = no_shutdown();
    let summary = audit::audit(&audit_args(&stack, &csv, 2), &shutdown).await.expect("the audit runs");

    assert!(!summary.passed());
    assert_eq!((summary.mysql.missing, &summary.mysql.missing_ids), (1, &vec![gone.clone()]), "{summary}");
    assert_eq!(summary.mysql.rows, 9);
    assert!(summary.csv.ok(), "{summary}");
    assert!(summary.waited >= Duration::from_secs(2), "it waited for the bid to arrive before calling it missing: {summary}");
    assert_eq!(summary.problems(), vec!["1 bid missing from MySQL".to_owned()]);

    let csv_arg = csv.to_string_lossy().into_owned();
    let output = run_binary(&stack, &["audit", "--backup-csv", &csv_arg, "--settle-secs", "1"]).await;
    assert_eq!(output.status.code(), Some(1), "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains(&format!("missing from MySQL: 1\n      {gone}\n")), "{}", stdout(&output));
    assert!(stderr(&output).contains("audit failed: 1 bid missing from MySQL"), "{}", stderr(&output));

    delete_dlq_topic(&stack).await;
    stack.cleanup().await;
}

#[tokio::test]
async fn audit_fails_naming_a_bid_missing_from_the_csv_and_a_bid_written_there_twice() {
    let stack = TestStack::new().await;
    let bids: Vec<Bid> = (0..10).map(|i| bid(&format!("line {i}"), "5.50")).collect();
    let csv = bids_in_mysql_and_csv(&stack, &bids, &[]).await;
    let (removed, doubled) = (bids[2].bid_id.to_string(), bids[7].bid_id.to_string());
    let text = std::fs::read_to_string(&csv).expect("the CSV");
    let doubled_line = text.lines().find(|l| l.starts_with(&doubled)).expect("the line to double").to_owned();
    let mut edited: String = text.lines().filter(|l| !l.starts_with(&removed)).map(|l| format!("{l}\n")).collect();
    edited.push_str(&format!("{doubled_line}\n"));
    std::fs::write(&csv, edited).expect("edit the CSV");

    let (_stop, shutdown) = no_shutdown();
    let summary = audit::audit(&audit_args(&stack, &csv, 1), &shutdown).await.expect("the audit runs");

    assert!(!summary.passed());
    assert_eq!((summary.csv.missing, &summary.csv.missing_ids), (1, &vec![removed.clone()]), "{summary}");
    assert_eq!((summary.csv.duplicated, &summary.csv.duplicated_ids), (1, &vec![doubled.clone()]), "{summary}");
    assert_eq!(summary.csv.rows, 10, "9 bids, one of them twice");
    assert!(summary.mysql.ok(), "{summary}");

    let csv_arg = csv.to_string_lossy().into_owned();
    let output = run_binary(&stack, &["audit", "--backup-csv", &csv_arg, "--settle-secs", "1", "--json"]).await;
    assert_eq!(output.status.code(), Some(1), "{}{}", stdout(&output), stderr(&output));
    let json: Value = serde_json::from_str(&stdout(&output)).expect("one JSON object");
    assert_eq!(json["passed"], Value::Bool(false));
    assert_eq!(json["csv"]["missing_ids"], serde_json::json!([removed]));
    assert_eq!(json["csv"]["duplicated_ids"], serde_json::json!([doubled]));

    delete_dlq_topic(&stack).await;
    stack.cleanup().await;
}

#[tokio::test]
async fn audit_since_a_time_compares_only_bids_accepted_from_then_on() {
    let stack = TestStack::new().await;
    let mut bids: Vec<Bid> = (0..8).map(|i| bid(&format!("since {i}"), "6.00")).collect();
    for old in &mut bids[..4] {
        old.bid_ts -= chrono::Duration::hours(2);
    }
    let csv = bids_in_mysql_and_csv(&stack, &bids, &[]).await;
    let old_gone = bids[0].bid_id.to_string();
    let mut conn = stack.pool.get_conn().await.expect("conn");
    conn.exec_drop("DELETE FROM bid WHERE bid_id = ?", (&old_gone,)).await.expect("delete an old row");
    drop(conn);
    let (_stop, shutdown) = no_shutdown();

    let mut args = audit_args(&stack, &csv, 1);
    args.since = Some(chrono::Utc::now() - chrono::Duration::hours(1));
    let recent = audit::audit(&args, &shutdown).await.expect("the audit runs");
    assert!(recent.passed(), "{recent}");
    assert_eq!((recent.kafka.bids, recent.kafka.before_since, recent.mysql.rows, recent.csv.rows), (4, 4, 4, 4), "{recent}");
    assert_eq!((recent.mysql.not_in_kafka, recent.csv.not_in_kafka), (0, 0), "{recent}");

    args.since = None;
    let everything = audit::audit(&args, &shutdown).await.expect("the audit runs");
    assert_eq!(everything.mysql.missing_ids, vec![old_gone], "{everything}");

    delete_dlq_topic(&stack).await;
    stack.cleanup().await;
}

fn letter(stack: &TestStack, class: DeadLetterClass, group: &str, offset: i64) -> DeadLetter {
    DeadLetter {
        error: format!("MySQL 1406: Data too long for column 'name' at row 1\n(offset {offset})"),
        class,
        source_topic: stack.kafka.topic.clone(),
        partition: 3,
        offset,
        group: group.to_owned(),
    }
}

/// Sends dead letters as a consumer would: (key, payload, letter).
async fn send_letters(stack: &TestStack, letters: &[(Option<String>, Vec<u8>, DeadLetter)]) {
    dlq::ensure_dlq_topic(&stack.kafka).await.expect("the dead-letter topic");
    let producer: FutureProducer = kafka::bid_producer(&stack.kafka, Duration::from_secs(10)).expect("producer");
    let topic = dlq::dlq_topic(&stack.kafka.topic);
    for (key, payload, letter) in letters {
        dlq::send(&producer, &topic, key.as_deref().map(str::as_bytes), Some(payload), letter).await.expect("the broker acks the dead letter");
    }
}

/// A message of the source topic: key, payload, headers.
type Seen = (Option<Vec<u8>>, Vec<u8>, Vec<(String, String)>);

/// Every message of the test's topic, partition by partition.
fn source_messages(stack: &TestStack) -> Vec<Seen> {
    // librdkafka wants a group id to assign partitions; this one never joins or commits.
    let consumer: BaseConsumer = kafka::client_config(&stack.kafka).set("group.id", "test-source-reader").create().expect("consumer");
    let expected = stack.messages_in_topic();
    let mut tpl = TopicPartitionList::new();
    for p in 0..stack.kafka.topic_partitions {
        tpl.add_partition_offset(&stack.kafka.topic, p, Offset::Beginning).expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut seen = Vec::new();
    let start = std::time::Instant::now();
    while (seen.len() as i64) < expected && start.elapsed() < Duration::from_secs(20) {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else { continue };
        let headers = m
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect())
            .unwrap_or_default();
        seen.push((m.key().map(<[u8]>::to_vec), m.payload().unwrap_or_default().to_vec(), headers));
    }
    seen
}

fn replay_args(stack: &TestStack, group_filter: Option<&str>, dry_run: bool) -> ReplayArgs {
    ReplayArgs {
        kafka: stack.kafka.clone(),
        group_filter: group_filter.map(str::to_owned),
        replay_group: None,
        dry_run,
        delivery_timeout_ms: 10_000,
    }
}

#[tokio::test]
async fn dlq_list_shows_each_dead_letter_with_every_header_it_was_sent_with() {
    let stack = TestStack::new().await;
    let rejected = bid("a name the table refused", "7.00");
    let payload = encoded(&stack, std::slice::from_ref(&rejected)).await.remove(0).1;
    let group = format!("bid-db-writers-{}", stack.suffix);
    let sent = vec![
        (Some(rejected.bid_id.to_string()), payload, letter(&stack, DeadLetterClass::Rejected, &group, 42)),
        (None, vec![0xff, 0x00, 0x01], letter(&stack, DeadLetterClass::Poison, "bid-file-backup", 43)),
    ];
    send_letters(&stack, &sent).await;
    let (_stop, shutdown) = no_shutdown();

    let mut listed = Vec::new();
    let summary = dlq::list(&stack.kafka, &shutdown, |l| listed.push(l)).await.expect("the list runs");

    assert_eq!((summary.letters, summary.unreadable), (2, 0));
    assert_eq!(listed.len(), 2);
    for (i, (entry, (key, payload, letter))) in listed.iter().zip(&sent).enumerate() {
        let Listed::Letter(stored) = entry else { panic!("a dead letter: {entry:?}") };
        assert_eq!(&stored.letter, letter);
        assert_eq!((stored.dlq_partition, stored.dlq_offset), (0, i as i64));
        assert_eq!(stored.key.as_deref(), key.as_deref().map(str::as_bytes));
        assert_eq!(stored.payload.as_ref(), Some(payload), "the original payload, unchanged");
        let at = chrono::DateTime::parse_from_rfc3339(&stored.at).expect("dlq.at is RFC 3339");
        assert!(stored.at.ends_with('Z') && stored.at.len() == "2025-01-01T00:00:00.000000Z".len(), "UTC with microseconds: {}", stored.at);
        assert!((chrono::Utc::now() - at.to_utc()).num_seconds() < 60);
    }

    let output = run_binary(&stack, &["dlq", "list"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    let topic = &stack.kafka.topic;
    let expected_first = format!("0/0 rejected group={group} source={topic}/3/42 key={} at=", rejected.bid_id);
    assert!(lines[0].starts_with(&expected_first), "{lines:#?}");
    assert!(lines[0].ends_with("error=MySQL 1406: Data too long for column 'name' at row 1 (offset 42)"), "{lines:#?}");
    assert!(lines[1].starts_with(&format!("0/1 poison group=bid-file-backup source={topic}/3/43 key=- at=")), "{lines:#?}");
    assert_eq!(lines[2], format!("2 dead letters in {topic}.dlq"));

    let output = run_binary(&stack, &["dlq", "list", "--json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let objects: Vec<Value> = stdout(&output).lines().map(|l| serde_json::from_str(l).expect("a JSON object per line")).collect();
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0]["class"], "rejected");
    assert_eq!(objects[0]["group"], group.as_str());
    assert_eq!(objects[0]["source_offset"], 42);
    assert_eq!(objects[0]["key"], rejected.bid_id.to_string().as_str());
    assert_eq!(objects[0]["error"], sent[0].2.error.as_str(), "the whole error, newline included");
    assert_eq!(objects[1]["key"], Value::Null);
    assert_eq!(objects[1]["payload_bytes"], 3);

    delete_dlq_topic(&stack).await;
    stack.cleanup().await;
}

#[tokio::test]
async fn dlq_replay_republishes_each_dead_letter_once_with_its_replay_headers() {
    let stack = TestStack::new().await;
    let bids = [bid("replayed for the writers", "8.00"), bid("replayed for the backup", "9.00")];
    let payloads = encoded(&stack, &bids).await;
    let groups = [format!("writers-{}", stack.suffix), format!("backup-{}", stack.suffix)];
    let sent: Vec<_> = payloads
        .iter()
        .zip(&groups)
        .enumerate()
        .map(|(i, ((key, payload), group))| (Some(key.clone()), payload.clone(), letter(&stack, DeadLetterClass::Rejected, group, i as i64)))
        .collect();
    send_letters(&stack, &sent).await;
    let (_stop, shutdown) = no_shutdown();
    let dlq_topic = dlq::dlq_topic(&stack.kafka.topic);

    let mut planned = Vec::new();
    let dry = dlq::replay(&replay_args(&stack, None, true), &shutdown, |r| planned.push(r.clone())).await.expect("a dry run");
    assert_eq!(dry.replayed, 2);
    assert!(planned.iter().all(|r| r.to.is_none()));
    assert_eq!(stack.messages_in_topic(), 0, "a dry run publishes nothing");

    let mut replayed = Vec::new();
    let summary = dlq::replay(&replay_args(&stack, None, false), &shutdown, |r| replayed.push(r.clone())).await.expect("the replay runs");
    assert_eq!((summary.replayed, summary.other_groups, summary.unreadable), (2, 0, 0));
    assert_eq!(summary.progress_group, format!("{dlq_topic}-replay"));

    let mut seen = source_messages(&stack);
    assert_eq!(seen.len(), 2, "{seen:?}");
    seen.sort_by_key(|(_, _, headers)| headers.iter().find(|(k, _)| k == dlq::REPLAY_OF_HEADER).map(|(_, v)| v.clone()));
    for (i, ((key, payload, headers), ((sent_key, sent_payload, _), group))) in seen.iter().zip(sent.iter().zip(&groups)).enumerate() {
        assert_eq!(key.as_deref(), sent_key.as_deref().map(str::as_bytes), "same key");
        assert_eq!(payload, sent_payload, "same payload");
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(header(dlq::REPLAY_GROUP_HEADER), Some(group.as_str()));
        assert_eq!(header(dlq::REPLAY_OF_HEADER), Some(format!("{dlq_topic}/0/{i}").as_str()));
    }
    let landed: Vec<_> = replayed.iter().map(|r| r.to.expect("where it landed")).collect();
    assert_eq!(landed.len(), 2);

    let again = dlq::replay(&replay_args(&stack, None, false), &shutdown, |_| {}).await.expect("the replay runs again");
    assert_eq!(again.replayed, 0, "{again}");
    let output = run_binary(&stack, &["dlq", "replay"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), format!("replayed 0 dead letters from {dlq_topic} (progress group {dlq_topic}-replay)"));
    assert_eq!(stack.messages_in_topic(), 2, "nothing published twice");

    delete_dlq_topic(&stack).await;
    stack.cleanup().await;
}

#[tokio::test]
async fn dlq_replay_with_a_group_filter_republishes_only_that_groups_letters() {
    let stack = TestStack::new().await;
    let bids = [bid("first", "1.00"), bid("second", "2.00"), bid("third", "3.00")];
    let payloads = encoded(&stack, &bids).await;
    let groups = ["writers", "backup", "writers"];
    let sent: Vec<_> = payloads
        .iter()
        .zip(groups)
        .enumerate()
        .map(|(i, ((key, payload), group))| (Some(key.clone()), payload.clone(), letter(&stack, DeadLetterClass::Poison, group, i as i64)))
        .collect();
    send_letters(&stack, &sent).await;
    let (_stop, shutdown) = no_shutdown();

    let mut replayed = Vec::new();
    let writers = dlq::replay(&replay_args(&stack, Some("writers"), false), &shutdown, |r| replayed.push(r.letter.dlq_offset)).await.expect("replay");
    assert_eq!((writers.replayed, writers.other_groups), (2, 1));
    assert_eq!(replayed, vec![0, 2]);
    let again = dlq::replay(&replay_args(&stack, Some("writers"), false), &shutdown, |_| {}).await.expect("replay");
    assert_eq!(again.replayed, 0);

    let backup = dlq::replay(&replay_args(&stack, Some("backup"), false), &shutdown, |_| {}).await.expect("replay");
    assert_eq!((backup.replayed, backup.other_groups), (1, 2), "another filter keeps its own progress");
    assert_eq!(stack.messages_in_topic(), 3);

    delete_dlq_topic(&stack).await;
    stack.cleanup().await;
}
