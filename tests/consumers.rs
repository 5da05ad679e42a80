use std::collections::{HashMap, HashSet};
use std::time::Duration;

use auction_common::registry::{BidDecoder, BidEncoder};
use auction_common::{kafka, Bid};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

use crate::helpers::{bid, csv_rows, dead_letters, eventually, produce, TestStack};


#[tokio::test]
async fn bids_posted_through_the_api_land_exactly_once_in_mysql_and_in_the_csv() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let writers = [stack.spawn_db_writer("writers"), stack.spawn_db_writer("writers")];
    let csv = stack.csv_path();
    let backup = stack.spawn_file_backup("backup", &csv);

    // One after another: each must beat the one before by the increment to be accepted.
    let mut accepted: HashMap<String, Value> = HashMap::new();
    for i in 0..60 {
        let response = app.post_bid_json("1", json!({"name": format!("bidder {i}, \"the\" best"), "price": format!("{}.{:02}", 10 + i, i)})).await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        accepted.insert(body["bid_id"].as_str().unwrap().to_owned(), body);
    }
    assert_eq!(accepted.len(), 60);

    let rows = eventually(Duration::from_secs(30), "60 rows in MySQL", || async {
        let rows = stack.bid_rows().await;
        (rows.len() >= 60).then_some(rows)
    })
    .await;
    let csv_lines = eventually(Duration::from_secs(30), "60 lines in the CSV", || async {
        let rows = csv_rows(&csv);
        (rows.len() >= 60).then_some(rows)
    })
    .await;
    // Let any duplicate that was on its way arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stack.bid_rows().await.len(), 60, "each bid exactly once in MySQL");
    assert_eq!(csv_rows(&csv).len(), 60, "each bid exactly once in the CSV");

    for (bid_id, auction_id, name, price, bid_ts) in rows {
        let sent = &accepted[&bid_id];
        assert_eq!((auction_id, name.as_str(), price.as_str(), bid_ts.as_str()), (1, sent["name"].as_str().unwrap(), sent["price"].as_str().unwrap(), sent["bid_ts"].as_str().unwrap()));
    }
    let mut seen = HashSet::new();
    for line in csv_lines {
        let sent = &accepted[&line[0]];
        assert!(seen.insert(line[0].to_owned()), "duplicate {}", &line[0]);
        assert_eq!(&line[1], "1");
        assert_eq!(&line[2], sent["name"].as_str().unwrap());
        assert_eq!(&line[3], sent["price"].as_str().unwrap());
        assert_eq!(&line[4], sent["bid_ts"].as_str().unwrap());
    }
    let raw = std::fs::read_to_string(&csv).unwrap();
    assert!(raw.starts_with("bid_id,auction_id,name,price,bid_ts,topic,partition,offset\n"), "{raw}");
    assert!(raw.contains(",\"bidder 7, \"\"the\"\" best\",17.07,"), "RFC 4180 quoting: {raw}");

    for w in writers {
        w.stop().await;
    }
    backup.stop().await;
    stack.cleanup().await;
}

#[tokio::test]
async fn two_db_writers_share_the_partitions_and_a_redelivered_bid_is_written_once() {
    let stack = TestStack::new().await;
    let writers = [stack.spawn_db_writer("writers"), stack.spawn_db_writer("writers")];
    let assigned = eventually(Duration::from_secs(30), "both writers assigned", || async {
        let a: Vec<Vec<i32>> = writers.iter().map(|w| w.status.assigned_partitions()).collect();
        (a.iter().all(|p| !p.is_empty()) && a.iter().map(Vec::len).sum::<usize>() == 6).then_some(a)
    })
    .await;
    let mut all: Vec<i32> = assigned.concat();
    all.sort_unstable();
    assert_eq!(all, vec![0, 1, 2, 3, 4, 5], "the partitions are split, none shared: {assigned:?}");

    let encoder = BidEncoder::new(&stack.registry, &stack.kafka.topic).unwrap();
    let bids: Vec<Bid> = (0..40).map(|i| bid(&format!("b{i}"), &format!("{}.50", i + 1))).collect();
    let mut payloads = Vec::new();
    for b in &bids {
        let payload = encoder.encode(b).await.unwrap();
        // Every bid twice: what a producer retry or a consumer redelivery looks like.
        payloads.push((b.bid_id.to_string(), payload.clone()));
        payloads.push((b.bid_id.to_string(), payload));
    }
    produce(&stack, &payloads).await;

    eventually(Duration::from_secs(30), "80 messages handled", || async {
        let handled: u64 = writers.iter().map(|w| w.status.written.load(std::sync::atomic::Ordering::Relaxed) + w.status.duplicates.load(std::sync::atomic::Ordering::Relaxed)).sum();
        (handled >= 80).then_some(())
    })
    .await;
    let rows = stack.bid_rows().await;
    assert_eq!(rows.len(), 40, "each bid once");
    let ids: HashSet<String> = rows.into_iter().map(|r| r.0).collect();
    assert_eq!(ids, bids.iter().map(|b| b.bid_id.to_string()).collect());
    for w in writers {
        w.stop().await;
    }
    stack.cleanup().await;
}

#[tokio::test]
async fn file_backup_does_not_append_a_redelivered_bid_twice() {
    let stack = TestStack::new().await;
    let encoder = BidEncoder::new(&stack.registry, &stack.kafka.topic).unwrap();
    let csv = stack.csv_path();
    let mut payloads = Vec::new();
    for i in 0..10 {
        let b = bid(&format!("first {i}"), "5.00");
        payloads.push((b.bid_id.to_string(), encoder.encode(&b).await.unwrap()));
    }
    produce(&stack, &payloads).await;
    let backup = stack.spawn_file_backup("backup-a", &csv);
    eventually(Duration::from_secs(30), "10 lines", || async { (csv_rows(&csv).len() == 10).then_some(()) }).await;
    backup.stop().await;

    // A new group has no committed offsets; the file, not the group, says where to resume.
    let again = stack.spawn_file_backup("backup-b", &csv);
    let mut more = Vec::new();
    for i in 0..5 {
        let b = bid(&format!("second {i}"), "6.00");
        more.push((b.bid_id.to_string(), encoder.encode(&b).await.unwrap()));
    }
    produce(&stack, &more).await;
    eventually(Duration::from_secs(30), "the 5 new bids in the file", || async { (csv_rows(&csv).len() >= 15).then_some(()) }).await;
    // Let a redelivery that was on its way arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    again.stop().await;

    let rows = csv_rows(&csv);
    assert_eq!(rows.len(), 15, "10 + 5, none twice");
    let ids: HashSet<&str> = rows.iter().map(|r| r.get(0).unwrap()).collect();
    assert_eq!(ids.len(), 15);
    let raw = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(raw.matches("bid_id,auction_id").count(), 1, "one header");
    stack.cleanup().await;
}

#[tokio::test]
async fn a_poison_message_goes_to_the_dead_letter_topic_and_later_bids_still_land() {
    let stack = TestStack::new().await;
    let encoder = BidEncoder::new(&stack.registry, &stack.kafka.topic).unwrap();
    let good = bid("after the poison", "7.00");
    let payloads = vec![
        ("poison".to_owned(), b"not avro at all".to_vec()),
        ("k".to_owned(), vec![0, 0, 0, 0]),
        (good.bid_id.to_string(), encoder.encode(&good).await.unwrap()),
    ];
    // All on one partition, so the good bid comes after the poison.
    let producer: FutureProducer = kafka::bid_producer(&stack.kafka, Duration::from_secs(10)).unwrap();
    for (key, payload) in &payloads {
        producer.send(FutureRecord::to(&stack.kafka.topic).key(key).payload(payload).partition(0), Duration::from_secs(5)).await.map_err(|(e, _)| e).unwrap();
    }
    let writer = stack.spawn_db_writer("writers");

    let rows = eventually(Duration::from_secs(30), "the good bid in MySQL", || async {
        let rows = stack.bid_rows().await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, good.bid_id.to_string());
    eventually(Duration::from_secs(30), "both poison messages in the dead-letter topic", || async {
        (writer.status.dead_letters.load(std::sync::atomic::Ordering::Relaxed) == 2).then_some(())
    })
    .await;
    let letters = dead_letters(&stack).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0].key.as_deref(), Some("poison"));
    assert_eq!(letters[0].payload, b"not avro at all");
    for (letter, offset) in letters.iter().zip(["0", "1"]) {
        assert_eq!(letter.header("dlq.class"), Some("poison"));
        assert_eq!(letter.header("dlq.source.topic"), Some(stack.kafka.topic.as_str()));
        assert_eq!(letter.header("dlq.source.partition"), Some("0"));
        assert_eq!(letter.header("dlq.source.offset"), Some(offset));
        assert_eq!(letter.header("dlq.group"), Some(format!("writers-{}", stack.suffix).as_str()));
        assert!(letter.header("dlq.error").is_some_and(|e| e.contains("wire-format")), "{letter:?}");
    }
    writer.stop().await;
    stack.cleanup().await;
}

#[tokio::test]
async fn bids_round_trip_through_the_real_registry() {
    let stack = TestStack::new().await;
    let encoder = BidEncoder::new(&stack.registry, &stack.kafka.topic).unwrap();
    let decoder = BidDecoder::new(&stack.registry).unwrap();
    let original = bid("Zoë <round> \"trip\"", "9999999999.99");

    let bytes = encoder.encode(&original).await.unwrap();
    assert_eq!(bytes[0], 0, "Confluent wire format: magic byte");
    let decoded = decoder.decode(Some(&bytes)).await.unwrap();

    assert_eq!(decoded, original);
    let id = encoder.register().await.unwrap();
    assert_eq!(u32::from_be_bytes(bytes[1..5].try_into().unwrap()), id, "the registered schema's id");
    stack.cleanup().await;
}

#[tokio::test]
async fn a_db_writer_that_cannot_reach_mysql_stores_no_offset_so_a_healthy_one_writes_every_bid() {
    let stack = TestStack::new().await;
    let encoder = BidEncoder::new(&stack.registry, &stack.kafka.topic).unwrap();
    let mut payloads = Vec::new();
    for i in 0..12 {
        let b = bid(&format!("held {i}"), "3.00");
        payloads.push((b.bid_id.to_string(), encoder.encode(&b).await.unwrap()));
    }
    produce(&stack, &payloads).await;

    let broken = auction_common::config::DatabaseConfig::new("mysql://auction:auction@127.0.0.1:1/none", 1);
    let sink = auction_consumers::db_writer::MySqlSink::new(&broken).unwrap();
    let failing = crate::helpers::RunningConsumer::spawn(stack.consumer_settings("writers"), sink);
    eventually(Duration::from_secs(30), "the broken writer to take partitions", || async {
        (!failing.status.assigned_partitions().is_empty()).then_some(())
    })
    .await;
    // Long enough for several retries, and for an offset commit if one were (wrongly) stored.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(failing.status.stalled().is_some_and(|s| s.contains("MySQL")), "it says why it holds");
    failing.stop().await;
    // What Kafka holds for the group: no committed offset on any partition.
    let group = format!("writers-{}", stack.suffix);
    let committed = stack.committed_offsets(&group);
    assert!(committed.iter().all(|o| *o == rdkafka::Offset::Invalid), "no offset committed: {committed:?}");
    assert!(stack.bid_rows().await.is_empty());

    let healthy = stack.spawn_db_writer("writers");
    let rows = eventually(Duration::from_secs(30), "every held bid in MySQL", || async {
        let rows = stack.bid_rows().await;
        (rows.len() >= 12).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 12);
    healthy.stop().await;
    stack.cleanup().await;
}
