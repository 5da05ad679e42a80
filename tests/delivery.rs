//! The loss paths of issue 5, each over the real stack: what the consumers do when the
//! registry, the table or the topic is not what they expect, and when partitions move.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use auction_common::config::DatabaseConfig;
use auction_common::kafka;
use auction_common::registry::BidEncoder;
use auction_consumers::db_writer::MySqlSink;
use auction_consumers::file_backup::CsvSink;
use auction_consumers::pipeline;
use rdkafka::consumer::Consumer;
use mysql_async::prelude::Queryable;

use crate::helpers::{bid, csv_rows, dead_letters, delete_topics, eventually, produce, produce_to, RunningConsumer, TestStack};

async fn encoded(stack: &TestStack, names: &[&str]) -> Vec<(String, Vec<u8>)> {
    let encoder = BidEncoder::new(&stack.registry, &stack.kafka.topic).unwrap();
    let mut payloads = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let b = bid(name, &format!("{}.00", i + 1));
        payloads.push((b.bid_id.to_string(), encoder.encode(&b).await.unwrap()));
    }
    payloads
}

#[tokio::test]
async fn a_registry_answering_404_holds_the_bids_and_the_right_url_later_backs_them_all_up() {
    let stack = TestStack::new().await;
    let names: Vec<String> = (0..20).map(|i| format!("held {i}")).collect();
    let payloads = encoded(&stack, &names.iter().map(String::as_str).collect::<Vec<_>>()).await;
    produce(&stack, &payloads).await;
    let csv = stack.csv_path();

    // A typo in the registry path: every schema lookup answers 404.
    let mut settings = stack.consumer_settings("backup");
    settings.registry.url = format!("{}/typo", stack.registry.url);
    let (path, topic) = (csv.clone(), stack.kafka.clone());
    let wrong = RunningConsumer::spawn_with(move |status, shutdown| async move {
        let sink = CsvSink::open(&path, &topic).await?;
        pipeline::run(settings, sink, status, shutdown).await
    });
    let stalled = eventually(Duration::from_secs(30), "the backup to say it is stalled", || async { wrong.status.stalled() }).await;
    assert!(stalled.contains("schema registry") && stalled.contains("404"), "{stalled}");
    // Long enough for several retries and an offset commit, were one (wrongly) stored.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(csv_rows(&csv).is_empty(), "nothing written while the registry cannot be used");
    assert_eq!(wrong.status.dead_letters.load(Ordering::Relaxed), 0, "a registry failure is not poison");
    wrong.stop().await;
    assert!(dead_letters(&stack).await.is_empty());

    let right = stack.spawn_file_backup("backup", &csv);
    let rows = eventually(Duration::from_secs(30), "all 20 bids in the CSV", || async {
        let rows = csv_rows(&csv);
        (rows.len() >= 20).then_some(rows)
    })
    .await;
    let ids: HashSet<&str> = rows.iter().map(|r| r.get(0).unwrap()).collect();
    assert_eq!(ids, payloads.iter().map(|(k, _)| k.as_str()).collect());
    assert_eq!(rows.len(), 20);
    right.stop().await;
    stack.cleanup().await;
}

#[tokio::test]
async fn a_csv_written_from_an_earlier_incarnation_of_the_topic_is_moved_aside_and_the_new_topic_backed_up_in_full() {
    let stack = TestStack::new().await;
    let csv = stack.csv_path();
    produce(&stack, &encoded(&stack, &["old 1", "old 2", "old 3", "old 4", "old 5", "old 6"]).await).await;
    let first = stack.spawn_file_backup("backup", &csv);
    eventually(Duration::from_secs(30), "6 lines", || async { (csv_rows(&csv).len() == 6).then_some(()) }).await;
    first.stop().await;

    // The topic is deleted and created again: offsets start at 0 again.
    delete_topics(&stack.kafka, &[&stack.kafka.topic]).await.unwrap();
    eventually(Duration::from_secs(60), "the topic to be created again", || async { kafka::ensure_topic(&stack.kafka).await.ok() }).await;
    let fresh = encoded(&stack, &["new 1", "new 2", "new 3", "new 4"]).await;
    eventually(Duration::from_secs(30), "the new topic's partitions to have leaders", || async {
        let consumer: rdkafka::consumer::BaseConsumer = kafka::client_config(&stack.kafka).create().unwrap();
        (0..6).all(|p| consumer.fetch_watermarks(&stack.kafka.topic, p, Duration::from_secs(1)).is_ok()).then_some(())
    })
    .await;
    produce(&stack, &fresh).await;

    let second = stack.spawn_file_backup("backup", &csv);
    let wanted: HashSet<String> = fresh.iter().map(|(k, _)| k.clone()).collect();
    eventually(Duration::from_secs(30), "the 4 new bids in a new file", || async {
        let ids: HashSet<String> = csv_rows(&csv).iter().map(|r| r[0].to_owned()).collect();
        (ids == wanted).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    second.stop().await;
    assert_eq!(csv_rows(&csv).len(), 4, "the new file holds the new topic's bids, each once");

    let dir = csv.parent().unwrap();
    let aside: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("bids.csv.other-topic-"))
        .collect();
    assert_eq!(aside.len(), 1, "the old file is kept aside");
    assert_eq!(csv_rows(&aside[0].path()).len(), 6, "with its 6 bids");
    stack.cleanup().await;
}

#[tokio::test]
async fn partitions_revoked_and_given_back_within_one_batch_never_repeat_a_csv_line() {
    let stack = TestStack::new().await;
    let csv = stack.csv_path();
    let names: Vec<String> = (0..60).map(|i| format!("moving {i}")).collect();
    let payloads = encoded(&stack, &names.iter().map(String::as_str).collect::<Vec<_>>()).await;
    produce(&stack, &payloads).await;

    // The backup holds one long batch while partitions move away and come back.
    let mut settings = stack.consumer_settings("moving");
    settings.batch_max_wait = Duration::from_secs(15);
    settings.batch_max_size = 10_000;
    let (path, topic) = (csv.clone(), stack.kafka.clone());
    let backup = RunningConsumer::spawn_with(move |status, shutdown| async move {
        let sink = CsvSink::open(&path, &topic).await?;
        pipeline::run(settings, sink, status, shutdown).await
    });
    eventually(Duration::from_secs(30), "the backup to own all 6 partitions", || async {
        (backup.status.assigned_partitions().len() == 6).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A member that never stores an offset (MySQL out of reach) joins and leaves: the backup
    // loses partitions with bids in hand, then gets them back from offsets nobody committed.
    let unreachable = DatabaseConfig::new("mysql://auction:auction@127.0.0.1:1/none", 1);
    let visitor = RunningConsumer::spawn(stack.consumer_settings("moving"), MySqlSink::new(&unreachable).unwrap());
    eventually(Duration::from_secs(30), "the visitor to take partitions", || async {
        (!visitor.status.assigned_partitions().is_empty()).then_some(())
    })
    .await;
    assert!(backup.status.assigned_partitions().len() < 6);
    visitor.stop().await;
    eventually(Duration::from_secs(30), "the partitions to come back", || async {
        (backup.status.assigned_partitions().len() == 6).then_some(())
    })
    .await;
    assert!(csv_rows(&csv).is_empty(), "still within the first batch");

    eventually(Duration::from_secs(40), "60 lines", || async { (csv_rows(&csv).len() >= 60).then_some(()) }).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    backup.stop().await;
    let rows = csv_rows(&csv);
    let ids: HashSet<&str> = rows.iter().map(|r| r.get(0).unwrap()).collect();
    assert_eq!(ids.len(), 60);
    assert_eq!(rows.len(), 60, "no line twice");
    stack.cleanup().await;
}

#[tokio::test]
async fn a_bid_the_table_refuses_goes_to_the_dead_letter_topic_and_the_rest_of_the_partition_is_written() {
    let stack = TestStack::new().await;
    // The column was narrowed by hand: a longer name cannot be stored as it is.
    let mut admin = stack.pool.get_conn().await.unwrap();
    admin.query_drop("ALTER TABLE bid MODIFY name VARCHAR(8) NOT NULL").await.unwrap();
    drop(admin);
    let payloads = encoded(&stack, &["short 1", "a name far too long", "short 2"]).await;
    produce_to(&stack, Some(0), &payloads).await;

    let writer = stack.spawn_db_writer("writers");
    let rows = eventually(Duration::from_secs(30), "the two short bids in MySQL", || async {
        let rows = stack.bid_rows().await;
        (rows.len() >= 2).then_some(rows)
    })
    .await;
    let names: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(names, ["short 1", "short 2"], "nothing truncated, nothing stalled");
    eventually(Duration::from_secs(30), "the refused bid in the dead-letter topic", || async {
        (writer.status.dead_letters.load(Ordering::Relaxed) == 1).then_some(())
    })
    .await;
    let letters = dead_letters(&stack).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].key.as_deref(), Some(payloads[1].0.as_str()));
    assert_eq!(letters[0].payload, payloads[1].1, "the original bytes");
    assert_eq!(letters[0].header("dlq.class"), Some("rejected"));
    assert_eq!(letters[0].header("dlq.source.offset"), Some("1"));
    assert!(letters[0].header("dlq.error").is_some_and(|e| e.contains("1406") || e.contains("too long")), "{letters:?}");
    assert_eq!(writer.status.stalled(), None);
    writer.stop().await;
    stack.cleanup().await;
}

#[tokio::test]
async fn a_missing_table_holds_the_batch_names_the_first_bid_and_writes_everything_once_fixed() {
    let stack = TestStack::new().await;
    let mut admin = stack.pool.get_conn().await.unwrap();
    admin.query_drop("RENAME TABLE bid TO bid_moved").await.unwrap();
    let payloads = encoded(&stack, &["first", "second", "third"]).await;
    produce_to(&stack, Some(0), &payloads).await;

    let writer = stack.spawn_db_writer("writers");
    let stalled = eventually(Duration::from_secs(30), "the writer to report a permanent error", || async { writer.status.stalled() }).await;
    assert!(stalled.starts_with("permanent"), "{stalled}");
    assert!(stalled.contains(&payloads[0].0), "names the first bid: {stalled}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(writer.status.dead_letters.load(Ordering::Relaxed), 0, "a table problem is not the bids' fault");

    admin.query_drop("RENAME TABLE bid_moved TO bid").await.unwrap();
    drop(admin);
    let rows = eventually(Duration::from_secs(60), "the held bids in MySQL", || async {
        let rows = stack.bid_rows().await;
        (rows.len() >= 3).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 3);
    eventually(Duration::from_secs(10), "the writer to report progress again", || async {
        writer.status.stalled().is_none().then_some(())
    })
    .await;
    writer.stop().await;
    assert!(dead_letters(&stack).await.is_empty());
    stack.cleanup().await;
}
