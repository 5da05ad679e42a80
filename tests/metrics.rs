//! `/metrics` of the site and of the consumers move as bids flow; a consumer's `/readyz` says
//! what it holds and why it is not ready.

use std::time::Duration;

use auction_common::config::DatabaseConfig;
use auction_common::registry::BidEncoder;
use auction_consumers::db_writer::MySqlSink;
use auction_web::SecurityConfig;
use serde_json::{json, Value};

use crate::helpers::{bid, csv_rows, eventually, produce, sample, scrape, RunningConsumer, TestApp, TestStack};
use crate::site::{form_page, post_form};

#[tokio::test]
async fn the_site_counts_every_acked_bid_once_and_each_refusal_under_its_reason() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let text = scrape(&app.address).await;
    assert_eq!(sample(&text, "auction_bids_accepted_total", &[]), Some(0.0), "{text}");

    for i in 0..5 {
        let response = app.post_bid_json("1", json!({"name": format!("bidder {i}"), "price": format!("{}.00", 10 + i)})).await;
        assert_eq!(response.status(), 202);
    }
    // A retry with the same Idempotency-Key gets the same 202 and produces nothing: not counted again.
    for _ in 0..2 {
        let response = app
            .client
            .post(format!("{}/api/auctions/1/bids", app.address))
            .header("Idempotency-Key", "metrics-retry-1")
            .json(&json!({"name": "Ada", "price": "20.00"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    // Through the form too: one accepted, one too low.
    let page = form_page(&app, "/auctions/1").await;
    let response = post_form(&app, "/auctions/1/bids", Some(&page.cookie), &page.fields(&[("name", "Eve"), ("price", "30")])).await;
    assert_eq!(response.status(), 303);
    let page = form_page(&app, "/auctions/1").await;
    let response = post_form(&app, "/auctions/1/bids", Some(&page.cookie), &page.fields(&[("name", "Eve"), ("price", "2")])).await;
    assert_eq!(response.status(), 422);

    assert_eq!(app.post_bid_json("1", json!({"name": "Low", "price": "1.00"})).await.status(), 422);
    assert_eq!(app.post_bid_json("1", json!({"name": "", "price": "99.00"})).await.status(), 400);
    assert_eq!(app.post_bid_json("999999", json!({"name": "Ada", "price": "99.00"})).await.status(), 404);
    let no_token = post_form(&app, "/auctions/1/bids", None, &[("name", "Mallory"), ("price", "99")]).await;
    assert_eq!(no_token.status(), 403);
    let huge = app.client.post(format!("{}/api/auctions/1/bids", app.address)).body(vec![b' '; 20_000]).send().await.unwrap();
    assert_eq!(huge.status(), 413);

    let text = scrape(&app.address).await;
    assert_eq!(sample(&text, "auction_bids_accepted_total", &[]), Some(7.0), "5 API bids, 1 keyed bid, 1 form bid:\n{text}");
    assert_eq!(stack.messages_in_topic(), 7, "what the counter says is what Kafka holds");
    let refused = |reason: &str| sample(&text, "auction_bids_refused_total", &[("reason", reason)]);
    assert_eq!(refused("too_low"), Some(2.0), "{text}");
    assert_eq!(refused("invalid"), Some(1.0), "{text}");
    assert_eq!(refused("not_found"), Some(1.0), "{text}");
    assert_eq!(refused("csrf"), Some(1.0), "{text}");
    assert_eq!(refused("too_large"), Some(1.0), "{text}");
    assert_eq!(refused("closed"), None, "no auction was closed: {text}");
    assert_eq!(sample(&text, "auction_produce_latency_seconds_count", &[("outcome", "acked")]), Some(7.0), "{text}");
    assert_eq!(sample(&text, "auction_bids_in_flight", &[]), Some(0.0), "{text}");
    stack.cleanup().await;
}

#[tokio::test]
async fn a_rate_limited_bid_is_counted_as_refused_and_not_as_accepted() {
    let stack = TestStack::new().await;
    let mut config = stack.web_config();
    config.security = SecurityConfig { bid_rate_per_sec: 1, bid_rate_burst: 2, ..SecurityConfig::default() };
    let app = TestApp::spawn(config).await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(app.post_bid_json("1", json!({"name": format!("fast {i}"), "price": format!("{}.00", 50 + i)})).await.status().as_u16());
    }
    assert_eq!(statuses, [202, 202, 429], "a burst of 2, then one new bid a second");

    let text = scrape(&app.address).await;
    assert_eq!(sample(&text, "auction_bids_refused_total", &[("reason", "rate_limited")]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "auction_bids_accepted_total", &[]), Some(2.0), "{text}");
    stack.cleanup().await;
}

#[tokio::test]
async fn consumer_counters_reach_the_bids_stored_and_readyz_names_the_partitions_held() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    for i in 0..12 {
        let response = app.post_bid_json("1", json!({"name": format!("bidder {i}"), "price": format!("{}.00", 10 + i)})).await;
        assert_eq!(response.status(), 202);
    }
    let csv = stack.csv_path();
    let writer = stack.spawn_db_writer("writers");
    let backup = stack.spawn_file_backup("backup", &csv);
    let (writer_url, writer_server) = writer.serve_metrics();
    let (backup_url, backup_server) = backup.serve_metrics();
    let writers_group = format!("writers-{}", stack.suffix);
    let backup_group = format!("backup-{}", stack.suffix);

    eventually(Duration::from_secs(60), "the db-writer's rows counter at 12", || async {
        let text = scrape(&writer_url).await;
        (sample(&text, "auction_db_rows_written_total", &[("group", &writers_group)]) == Some(12.0)).then_some(())
    })
    .await;
    eventually(Duration::from_secs(60), "the file-backup's lines counter at 12", || async {
        let text = scrape(&backup_url).await;
        (sample(&text, "auction_csv_lines_written_total", &[("group", &backup_group)]) == Some(12.0)).then_some(())
    })
    .await;
    assert_eq!(stack.bid_rows().await.len(), 12, "the counter is what MySQL holds");
    assert_eq!(csv_rows(&csv).len(), 12, "the counter is what the CSV holds");

    let text = scrape(&writer_url).await;
    assert_eq!(sample(&text, "auction_consumer_batch_size_sum", &[]), Some(12.0), "every bid was in one written batch: {text}");
    assert!(sample(&text, "auction_consumer_write_latency_seconds_count", &[]).is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(sample(&text, "auction_csv_lines_written_total", &[]), None, "a db-writer writes no CSV lines: {text}");
    assert_eq!(sample(&text, "auction_consumer_assigned_partitions", &[]), Some(6.0), "{text}");
    // librdkafka reports the offsets every 5 s; once it has, every partition is caught up.
    eventually(Duration::from_secs(30), "a lag of 0 on each of the 6 partitions", || async {
        let text = scrape(&writer_url).await;
        (0..6).all(|p| sample(&text, "auction_consumer_lag", &[("partition", &p.to_string())]) == Some(0.0)).then_some(())
    })
    .await;

    for (url, role, group) in [(&writer_url, "db-writer", &writers_group), (&backup_url, "file-backup", &backup_group)] {
        let response = reqwest::get(format!("{url}/readyz")).await.unwrap();
        assert_eq!(response.status(), 200, "{role}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["ready"], true, "{body}");
        assert_eq!(body["role"], role, "{body}");
        assert_eq!(body["group"], group.as_str(), "{body}");
        assert_eq!(body["topic"], stack.kafka.topic.as_str(), "{body}");
        assert_eq!(body["assigned_partitions"], json!([0, 1, 2, 3, 4, 5]), "{body}");
        assert_eq!(body["rows_written"], 12, "{body}");
        assert_eq!(body["stalled"], Value::Null, "{body}");
        let last = body["last_write_at"].as_str().expect("a last write time");
        let parsed = chrono::DateTime::parse_from_rfc3339(last).expect("RFC 3339");
        assert!(last.ends_with('Z') && last.split('.').nth(1).is_some_and(|f| f.len() == 7), "UTC with microseconds: {last}");
        assert!(chrono::Utc::now().signed_duration_since(parsed) < chrono::Duration::seconds(120), "{last}");
    }

    writer_server.stop().await;
    backup_server.stop().await;
    writer.stop().await;
    backup.stop().await;
    stack.cleanup().await;
}

#[tokio::test]
async fn a_db_writer_that_cannot_reach_mysql_answers_503_on_readyz_saying_why_and_counts_its_retries() {
    let stack = TestStack::new().await;
    let encoder = BidEncoder::new(&stack.registry, &stack.kafka.topic).unwrap();
    let b = bid("Ada", "10.00");
    produce(&stack, &[(b.bid_id.to_string(), encoder.encode(&b).await.unwrap())]).await;
    // Nothing listens on port 1: every connection is refused, a failure that may pass, so retried.
    let nowhere = DatabaseConfig::new("mysql://auction:auction@127.0.0.1:1/auction", 1);
    let writer = RunningConsumer::spawn(stack.consumer_settings("writers"), MySqlSink::new(&nowhere).unwrap());
    let (url, server) = writer.serve_metrics();

    let body: Value = eventually(Duration::from_secs(60), "readyz 503 naming the stall", || async {
        let response = reqwest::get(format!("{url}/readyz")).await.ok()?;
        let status = response.status();
        let body: Value = response.json().await.ok()?;
        (status == 503 && body["stalled"].is_string()).then_some(body)
    })
    .await;
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["role"], "db-writer", "{body}");
    assert!(body["stalled"].as_str().unwrap().contains("MySQL"), "{body}");
    assert_eq!(body["rows_written"], 0, "{body}");
    assert_eq!(body["last_write_at"], Value::Null, "{body}");
    let text = scrape(&url).await;
    assert!(sample(&text, "auction_consumer_retries_total", &[("cause", "write")]).is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(sample(&text, "auction_db_rows_written_total", &[]), Some(0.0), "{text}");

    server.stop().await;
    writer.stop().await;
    stack.cleanup().await;
}
