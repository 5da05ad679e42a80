use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{eventually, TestApp, TestStack};

#[tokio::test]
async fn a_valid_bid_is_acked_with_202_and_the_accepted_bid() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let before = chrono::Utc::now();

    let response = app.post_bid_json("1", json!({"name": "  Ada Lovelace ", "price": 12.5})).await;

    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert!(uuid::Uuid::parse_str(body["bid_id"].as_str().unwrap()).is_ok(), "{body}");
    assert_eq!(body["auction_id"], 1);
    assert_eq!(body["name"], "Ada Lovelace");
    assert_eq!(body["price"], "12.50");
    let ts = chrono::DateTime::parse_from_rfc3339(body["bid_ts"].as_str().unwrap()).unwrap();
    assert!(ts >= before - chrono::Duration::seconds(1) && ts <= chrono::Utc::now(), "server time, not the client's: {ts}");
    assert_eq!(stack.messages_in_topic(), 1, "the acked bid is in Kafka");
    stack.cleanup().await;
}

#[tokio::test]
async fn invalid_fields_get_400_naming_the_field_and_nothing_is_produced() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let long_name = "x".repeat(101);
    let cases = [
        (json!({"price": "10"}), "name"),
        (json!({"name": "", "price": "10"}), "name"),
        (json!({"name": "   ", "price": "10"}), "name"),
        (json!({"name": long_name, "price": "10"}), "name"),
        (json!({"name": "tab\there", "price": "10"}), "name"),
        (json!({"name": 42, "price": "10"}), "name"),
        (json!({"name": "Ada"}), "price"),
        (json!({"name": "Ada", "price": 0}), "price"),
        (json!({"name": "Ada", "price": "-5"}), "price"),
        (json!({"name": "Ada", "price": 1.005}), "price"),
        (json!({"name": "Ada", "price": "10000000000.00"}), "price"),
        (json!({"name": "Ada", "price": "ten"}), "price"),
        (json!({"name": "Ada", "price": "1e3"}), "price"),
        (json!({"name": "Ada", "price": true}), "price"),
        (json!(["Ada", 10]), "body"),
    ];
    for (body, field) in cases {
        let response = app.post_bid_json("1", body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["field"], field, "{body} -> {error}");
        assert!(error["error"].as_str().unwrap().starts_with(&format!("{field}:")), "{error}");
    }
    let response = app
        .client
        .post(format!("{}/api/auctions/1/bids", app.address))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    assert_eq!(stack.messages_in_topic(), 0, "a rejected bid is never produced");
    stack.cleanup().await;
}

#[tokio::test]
async fn an_unknown_auction_gets_404_and_nothing_is_produced() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;

    for auction in ["999999", "0", "abc", "-1"] {
        let response = app.post_bid_json(auction, json!({"name": "Ada", "price": "10"})).await;
        assert_eq!(response.status(), 404, "auction {auction}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].as_str().unwrap().contains("not found"), "{error}");
        assert_eq!(app.get(&format!("/api/auctions/{auction}")).await.status(), 404);
    }
    assert_eq!(stack.messages_in_topic(), 0);
    stack.cleanup().await;
}

#[tokio::test]
async fn kafka_out_of_reach_gets_503_in_bounded_time() {
    let stack = TestStack::new().await;
    let mut config = stack.web_config();
    config.kafka.brokers = "127.0.0.1:1".into();
    config.delivery_timeout_ms = 1500;
    let app = TestApp::spawn(config).await;

    let start = Instant::now();
    let response = app.post_bid_json("1", json!({"name": "Ada", "price": "10"})).await;

    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let error: Value = response.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("Kafka"), "{error}");
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_ne!(ready["kafka"], "ok", "{ready}");
    assert_eq!(ready["mysql"], "ok", "{ready}");
    stack.cleanup().await;
}

#[tokio::test]
async fn registry_out_of_reach_gets_503_and_nothing_is_produced() {
    let stack = TestStack::new().await;
    let mut config = stack.web_config();
    config.registry.url = "http://127.0.0.1:1/apis/ccompat/v7".into();
    let app = TestApp::spawn(config).await;

    let response = app.post_bid_json("1", json!({"name": "Ada", "price": "10"})).await;

    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("registry"), "{error}");
    assert_eq!(stack.messages_in_topic(), 0);
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_ne!(ready["schema_registry"], "ok", "{ready}");
    stack.cleanup().await;
}

#[tokio::test]
async fn health_and_readiness_answer_200_on_a_working_stack() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;

    assert_eq!(app.get("/healthz").await.status(), 200);
    let ready = eventually(Duration::from_secs(20), "readyz 200", || async {
        let r = app.get("/readyz").await;
        (r.status() == 200).then_some(r)
    })
    .await;
    let body: Value = ready.json().await.unwrap();
    for (check, answer) in [("status", "ready"), ("kafka", "ok"), ("schema_registry", "ok"), ("mysql", "ok")] {
        assert_eq!(body[check], answer, "{body}");
    }
    let board = body["board"].as_str().unwrap_or_default();
    assert!(board.starts_with("snapshot ") || board == "no snapshot loaded yet", "{body}");
    stack.cleanup().await;
}

#[tokio::test]
async fn auction_api_shows_the_highest_bid_and_the_count_once_recorded() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let writer = stack.spawn_db_writer("writers");

    let empty: Value = app.get("/api/auctions/1").await.json().await.unwrap();
    assert_eq!((&empty["id"], &empty["title"], &empty["status"]), (&json!(1), &json!("The first auction"), &json!("open")), "{empty}");
    assert_eq!((&empty["highest_bid"], &empty["bid_count"], &empty["minimum_next_bid"]), (&json!(null), &json!(0), &json!("0.01")), "{empty}");

    let mut accepted = Vec::new();
    for (name, price) in [("first", "10.00"), ("second", "10.01"), ("third", "12")] {
        let r = app.post_bid_json("1", json!({"name": name, "price": price})).await;
        assert_eq!(r.status(), 202);
        accepted.push(r.json::<Value>().await.unwrap());
    }

    let view: Value = eventually(Duration::from_secs(20), "3 bids in MySQL", || async {
        let v: Value = app.get("/api/auctions/1").await.json().await.unwrap();
        (v["bid_count"] == 3).then_some(v)
    })
    .await;
    assert_eq!(view["highest_bid"]["name"], "third");
    assert_eq!(view["highest_bid"]["price"], "12.00");
    assert_eq!(view["highest_bid"]["bid_ts"], accepted[2]["bid_ts"]);
    assert_eq!(view["minimum_next_bid"], "12.01");
    writer.stop().await;
    stack.cleanup().await;
}

#[tokio::test]
async fn a_closed_auction_gets_409_and_nothing_is_produced() {
    use mysql_async::prelude::Queryable;
    let stack = TestStack::new().await;
    let mut conn = stack.pool.get_conn().await.unwrap();
    conn.query_drop("INSERT INTO auction (id, title, closed_at) VALUES (7, 'Sold lamp', UTC_TIMESTAMP(6))").await.unwrap();
    drop(conn);
    let app = stack.spawn_web().await;

    let response = app.post_bid_json("7", json!({"name": "Ada", "price": "10"})).await;

    assert_eq!(response.status(), 409);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("closed"), "{error}");
    assert_eq!(stack.messages_in_topic(), 0);
    stack.cleanup().await;
}
