//! Delivery under faults, as a bidder sees it: idempotency keys on the API and the form, bid
//! lookup, the limit on bids in flight, a MySQL that goes silent, and a graceful stop.
//! Faults are made with a TCP proxy in front of the real Kafka or MariaDB that the test turns
//! into a black hole (connections accepted, never a byte back) or slows down.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auction_common::kafka;
use auction_web::Application;
use mysql_async::prelude::Queryable;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{eventually, TestApp, TestStack};

const KEY_HEADER: &str = "Idempotency-Key";

/// What a client sees of an answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

impl Answer {
    async fn of(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = response.text().await.expect("a body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Self { status, retry_after, body }
    }

    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }

    fn text(&self) -> &str {
        self.body.as_str().unwrap_or_default()
    }
}

async fn post_bid(client: &reqwest::Client, address: &str, auction: &str, body: &Value, key: Option<&str>) -> Answer {
    let mut request = client.post(format!("{address}/api/auctions/{auction}/bids")).json(body);
    if let Some(key) = key {
        request = request.header(KEY_HEADER, key);
    }
    Answer::of(request.send().await.expect("POST answered")).await
}

async fn get(app: &TestApp, path: &str) -> Answer {
    Answer::of(app.get(path).await).await
}

/// The keys (bid ids) of every message in the test's topic, read from the beginning.
fn bid_ids_in_topic(stack: &TestStack) -> Vec<String> {
    let consumer: BaseConsumer = kafka::client_config(&stack.kafka)
        .set("group.id", format!("web-delivery-reader-{}", stack.suffix))
        .create()
        .expect("consumer");
    let mut partitions = TopicPartitionList::new();
    let mut expected = 0;
    for p in 0..stack.kafka.topic_partitions {
        let (low, high) = consumer.fetch_watermarks(&stack.kafka.topic, p, Duration::from_secs(5)).expect("watermarks");
        expected += high - low;
        partitions.add_partition_offset(&stack.kafka.topic, p, Offset::Offset(low)).expect("partition");
    }
    consumer.assign(&partitions).expect("assign");
    let mut ids = Vec::new();
    let start = Instant::now();
    while (ids.len() as i64) < expected && start.elapsed() < Duration::from_secs(20) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            ids.push(m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default());
        }
    }
    ids
}

/// The first address of a `host:port` list.
fn first_address(list: &str) -> SocketAddr {
    list.split(',').next().and_then(|a| a.trim().parse().ok()).expect("an ip:port address")
}

/// `mysql://user:pass@host:port/db` with another `host:port`. Over TCP only: by default
/// mysql_async moves a connection to 127.0.0.1 onto MySQL's Unix socket, around the proxy.
fn with_address(url: &str, address: SocketAddr) -> String {
    let at = url.rfind('@').expect("a user in the URL") + 1;
    let slash = url[at..].find('/').map_or(url.len(), |s| at + s);
    let joiner = if url.contains('?') { '&' } else { '?' };
    format!("{}{address}{}{joiner}prefer_socket=false", &url[..at], &url[slash..])
}

fn mysql_address(url: &str) -> SocketAddr {
    let at = url.rfind('@').expect("a user in the URL") + 1;
    let host = url[at..].split('/').next().expect("host:port");
    host.parse().expect("an ip:port address")
}

/// A TCP endpoint in front of a real server. Silent (the start): connections are accepted and
/// never get a byte back, and connections already forwarding stop getting answers.
/// Forwarding: bytes go both ways, answers delayed by `delay` if set.
struct FaultyProxy {
    address: SocketAddr,
    forwarding: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    connections: Arc<AtomicUsize>,
}

impl FaultyProxy {
    async fn start(upstream: Option<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = Self {
            address: listener.local_addr().expect("address"),
            forwarding: Arc::new(AtomicBool::new(false)),
            delay_ms: Arc::new(AtomicU64::new(0)),
            connections: Arc::new(AtomicUsize::new(0)),
        };
        let (forwarding, delay_ms, connections) = (proxy.forwarding.clone(), proxy.delay_ms.clone(), proxy.connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                connections.fetch_add(1, Ordering::SeqCst);
                let (forwarding, delay_ms) = (forwarding.clone(), delay_ms.clone());
                tokio::spawn(async move {
                    match upstream.filter(|_| forwarding.load(Ordering::SeqCst)) {
                        Some(upstream) => pipe(client, upstream, forwarding, delay_ms).await,
                        None => hold(client, forwarding).await,
                    }
                });
            }
        });
        proxy
    }

    fn forward(&self) {
        self.forwarding.store(true, Ordering::SeqCst);
    }

    fn silence(&self) {
        self.forwarding.store(false, Ordering::SeqCst);
    }

    fn delay_answers(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Keeps a connection open and silent; closes it once the proxy forwards, so the client
/// reconnects through the working path.
async fn hold(client: TcpStream, forwarding: Arc<AtomicBool>) {
    while !forwarding.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(client);
}

async fn pipe(client: TcpStream, upstream: SocketAddr, forwarding: Arc<AtomicBool>, delay_ms: Arc<AtomicU64>) {
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    let answers = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let delay = delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            // Silenced: the answer is lost, as with a peer that drops packets.
            if forwarding.load(Ordering::SeqCst) && client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(requests, answers);
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_gets_the_same_bid_and_produces_nothing() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let key = uuid::Uuid::new_v4().to_string();
    let bid = json!({"name": "Ada", "price": "12.50"});

    let first = post_bid(&app.client, &app.address, "1", &bid, Some(&key)).await;
    let again = post_bid(&app.client, &app.address, "1", &bid, Some(&key)).await;
    // The same bid written differently is the same request once validated.
    let same = post_bid(&app.client, &app.address, "1", &json!({"name": " Ada ", "price": 12.5}), Some(&key)).await;

    assert_eq!(first.status, 202, "{first:?}");
    assert_eq!((again.status, &again.body), (202, &first.body), "the same answer: same bid_id and bid_ts");
    assert_eq!((same.status, &same.body), (202, &first.body));
    assert_eq!(stack.messages_in_topic(), 1, "one bid produced");

    for (auction, other) in [("1", json!({"name": "Ada", "price": "13.00"})), ("1", json!({"name": "Eve", "price": "12.50"})), ("999999", bid.clone())] {
        let refused = post_bid(&app.client, &app.address, auction, &other, Some(&key)).await;
        assert_eq!(refused.status, 422, "{other} -> {refused:?}");
        assert_eq!(refused.body["field"], KEY_HEADER);
        assert!(refused.error().starts_with("Idempotency-Key:") && refused.error().contains("was used for a different bid"), "{refused:?}");
    }
    assert_eq!(stack.messages_in_topic(), 1, "nothing produced for a reused key");
    stack.cleanup().await;
}

#[tokio::test]
async fn a_request_refused_for_bad_input_keeps_its_key_free_and_malformed_keys_get_400() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let key = uuid::Uuid::new_v4().to_string();

    let bad_price = post_bid(&app.client, &app.address, "1", &json!({"name": "Ada", "price": "1.234"}), Some(&key)).await;
    let no_auction = post_bid(&app.client, &app.address, "999999", &json!({"name": "Ada", "price": "10"}), Some(&key)).await;
    let fixed = post_bid(&app.client, &app.address, "1", &json!({"name": "Ada", "price": "10"}), Some(&key)).await;
    // Each accepted bid below beats the one before it (auction 1's increment is 0.01).

    assert_eq!((bad_price.status, &bad_price.body["field"]), (400, &json!("price")), "{bad_price:?}");
    assert_eq!(no_auction.status, 404, "{no_auction:?}");
    assert_eq!(fixed.status, 202, "the key was not used up: {fixed:?}");

    let too_long = "k".repeat(201);
    let longest = "k".repeat(200);
    for bad in ["", "two words", too_long.as_str()] {
        let refused = post_bid(&app.client, &app.address, "1", &json!({"name": "Ada", "price": "10"}), Some(bad)).await;
        assert_eq!(refused.status, 400, "key {bad:?}: {refused:?}");
        assert_eq!(refused.body["field"], KEY_HEADER);
        assert!(refused.error().starts_with("Idempotency-Key:"), "{refused:?}");
    }
    let non_ascii = reqwest::header::HeaderValue::from_bytes("clé".as_bytes()).expect("header bytes");
    let twice = app.client.post(format!("{}/api/auctions/1/bids", app.address)).header(KEY_HEADER, "a").header(KEY_HEADER, "b");
    for request in [app.client.post(format!("{}/api/auctions/1/bids", app.address)).header(KEY_HEADER, non_ascii), twice] {
        let refused = Answer::of(request.json(&json!({"name": "Ada", "price": "10"})).send().await.expect("answered")).await;
        assert_eq!((refused.status, &refused.body["field"]), (400, &json!(KEY_HEADER)), "{refused:?}");
    }
    let longest_key = post_bid(&app.client, &app.address, "1", &json!({"name": "Ada", "price": "11"}), Some(&longest)).await;
    assert_eq!(longest_key.status, 202, "200 characters are allowed");

    // Without a key, every request is a new bid, as before.
    let a = post_bid(&app.client, &app.address, "1", &json!({"name": "Ada", "price": "12"}), None).await;
    let b = post_bid(&app.client, &app.address, "1", &json!({"name": "Ada", "price": "13"}), None).await;
    assert_eq!((a.status, b.status), (202, 202));
    assert_ne!(a.body["bid_id"], b.body["bid_id"]);
    assert_eq!(stack.messages_in_topic(), 4);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_bid_whose_outcome_is_unknown_is_retried_as_the_same_bid_and_stored_once() {
    let stack = TestStack::new().await;
    let kafka_proxy = FaultyProxy::start(Some(first_address(&stack.kafka.brokers))).await;
    let mut config = stack.web_config();
    config.kafka.brokers = kafka_proxy.address.to_string();
    config.delivery_timeout_ms = 3000;
    let app = TestApp::spawn(config).await;
    let writer = stack.spawn_db_writer("writers");
    let key = uuid::Uuid::new_v4().to_string();
    let bid = json!({"name": "Ada", "price": "42.00"});

    let first = {
        let (client, address, bid, key) = (app.client.clone(), app.address.clone(), bid.clone(), key.clone());
        tokio::spawn(async move { post_bid(&client, &address, "1", &bid, Some(&key)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let meanwhile = post_bid(&app.client, &app.address, "1", &bid, Some(&key)).await;
    let first = first.await.expect("first request");

    assert_eq!(meanwhile.status, 409, "{meanwhile:?}");
    assert_eq!(meanwhile.retry_after.as_deref(), Some("1"));
    assert_eq!(meanwhile.body["field"], KEY_HEADER);
    assert!(meanwhile.error().contains("still being processed"), "{meanwhile:?}");
    assert_eq!(first.status, 503, "{first:?}");
    assert_eq!(first.retry_after.as_deref(), Some("1"));
    assert!(first.error().contains("Kafka") && first.error().contains("may or may not"), "{first:?}");
    let bid_id = first.body["bid_id"].as_str().expect("the 503 names the bid").to_owned();
    assert_eq!(get(&app, &format!("/api/bids/{bid_id}")).await.status, 404, "not acked, not stored");

    kafka_proxy.forward();
    let accepted = eventually(Duration::from_secs(60), "the retry is acked", || async {
        let retry = post_bid(&app.client, &app.address, "1", &bid, Some(&key)).await;
        if retry.status == 503 {
            assert_eq!(retry.body["bid_id"], bid_id.as_str(), "every retry is the same bid: {retry:?}");
            return None;
        }
        Some(retry)
    })
    .await;

    assert_eq!(accepted.status, 202, "{accepted:?}");
    assert_eq!(accepted.body["bid_id"], bid_id.as_str());
    let replay = post_bid(&app.client, &app.address, "1", &bid, Some(&key)).await;
    assert_eq!((replay.status, &replay.body), (202, &accepted.body));
    let rows = eventually(Duration::from_secs(20), "the bid in MySQL", || async {
        let rows = stack.bid_rows().await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stack.bid_rows().await, rows, "nothing more arrives");
    assert_eq!(rows.len(), 1, "one bid however many attempts: {rows:?}");
    assert_eq!((rows[0].0.as_str(), rows[0].4.as_str()), (bid_id.as_str(), accepted.body["bid_ts"].as_str().expect("bid_ts")));
    let ids = bid_ids_in_topic(&stack);
    assert!(!ids.is_empty() && ids.iter().all(|id| *id == bid_id), "only this bid in Kafka: {ids:?}");
    let looked_up = get(&app, &format!("/api/bids/{bid_id}")).await;
    assert_eq!((looked_up.status, &looked_up.body), (200, &json!({"status": "recorded", "bid": accepted.body})));
    writer.stop().await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bids_beyond_the_in_flight_limit_get_503_at_once_and_an_unknown_outcome_names_its_bid() {
    let stack = TestStack::new().await;
    let kafka_black_hole = FaultyProxy::start(None).await;
    let mut config = stack.web_config();
    config.kafka.brokers = kafka_black_hole.address.to_string();
    config.delivery_timeout_ms = 2500;
    config.limits.max_bids_in_flight = 1;
    let app = TestApp::spawn(config).await;
    let bid = json!({"name": "Ada", "price": "10"});

    let first = {
        let (client, address, bid) = (app.client.clone(), app.address.clone(), bid.clone());
        tokio::spawn(async move { post_bid(&client, &address, "1", &bid, None).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let burst = futures::future::join_all((0..5).map(|_| post_bid(&app.client, &app.address, "1", &bid, None))).await;
    let burst_took = started.elapsed();
    let first = first.await.expect("first request");

    for refused in &burst {
        assert_eq!(refused.status, 503, "{refused:?}");
        assert_eq!(refused.retry_after.as_deref(), Some("1"));
        assert!(refused.error().contains("in flight"), "{refused:?}");
        assert!(refused.body.get("bid_id").is_none(), "nothing was produced: {refused:?}");
    }
    assert!(burst_took < Duration::from_secs(1), "refused at once, not queued: {burst_took:?}");
    assert_eq!(first.status, 503, "{first:?}");
    assert!(first.error().contains("Kafka") && !first.error().contains("in flight"), "{first:?}");
    let bid_id = first.body["bid_id"].as_str().expect("an unknown outcome names its bid, key or not");
    assert!(uuid::Uuid::parse_str(bid_id).is_ok());
    let looked_up = get(&app, &format!("/api/bids/{bid_id}")).await;
    assert_eq!(looked_up.status, 404, "{looked_up:?}");
    assert!(kafka_black_hole.connections() > 0, "the site did reach the black hole");

    // The permit came back with the first bid's answer.
    let next = post_bid(&app.client, &app.address, "1", &bid, None).await;
    assert!(next.status == 503 && next.body.get("bid_id").is_some(), "{next:?}");
    stack.cleanup().await;
}

#[tokio::test]
async fn an_acked_bid_is_pending_until_the_db_writer_records_it() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let accepted = post_bid(&app.client, &app.address, "1", &json!({"name": "Ada", "price": "7.5"}), None).await;
    assert_eq!(accepted.status, 202);
    let bid_id = accepted.body["bid_id"].as_str().expect("bid_id").to_owned();

    let pending = get(&app, &format!("/api/bids/{bid_id}")).await;
    assert_eq!((pending.status, &pending.body), (200, &json!({"status": "pending", "bid": accepted.body})));

    let writer = stack.spawn_db_writer("writers");
    let recorded = eventually(Duration::from_secs(20), "the bid recorded", || async {
        let a = get(&app, &format!("/api/bids/{bid_id}")).await;
        (a.body["status"] == "recorded").then_some(a)
    })
    .await;
    assert_eq!((recorded.status, &recorded.body), (200, &json!({"status": "recorded", "bid": accepted.body})));

    let unknown = get(&app, &format!("/api/bids/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(unknown.error().contains("not found"), "{unknown:?}");
    let malformed = get(&app, "/api/bids/not-a-uuid").await;
    assert_eq!((malformed.status, &malformed.body["field"]), (400, &json!("bid_id")), "{malformed:?}");
    writer.stop().await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_mysql_that_never_answers_every_page_and_endpoint_answers_in_bounded_time() {
    let stack = TestStack::new().await;
    let mysql_black_hole = FaultyProxy::start(None).await;
    let mut config = stack.web_config();
    config.database.url = with_address(&stack.database.url, mysql_black_hole.address);
    config.limits.database_connect_timeout_ms = 1000;
    config.limits.database_query_timeout_ms = 1000;
    let app = TestApp::spawn(config).await;
    let limit = Duration::from_millis(2000);

    let started = Instant::now();
    let auction = get(&app, "/api/auctions/1").await;
    assert!(started.elapsed() < limit, "took {:?}", started.elapsed());
    assert_eq!((auction.status, auction.retry_after.as_deref()), (503, Some("1")), "{auction:?}");
    assert!(auction.error().contains("database"), "{auction:?}");

    let started = Instant::now();
    let bid = post_bid(&app.client, &app.address, "1", &json!({"name": "Ada", "price": "10"}), None).await;
    assert!(started.elapsed() < limit, "took {:?}", started.elapsed());
    assert_eq!(bid.status, 503, "{bid:?}");
    assert!(bid.error().contains("database"), "{bid:?}");

    let started = Instant::now();
    let lookup = get(&app, &format!("/api/bids/{}", uuid::Uuid::now_v7())).await;
    assert!(started.elapsed() < limit, "took {:?}", started.elapsed());
    assert_eq!(lookup.status, 503, "{lookup:?}");

    let started = Instant::now();
    let home = get(&app, "/").await;
    assert!(started.elapsed() < limit, "took {:?}", started.elapsed());
    assert_eq!(home.status, 503);
    assert!(home.text().contains("the auction database is not reachable"));

    let started = Instant::now();
    let ready = get(&app, "/readyz").await;
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    assert_eq!(ready.status, 503);
    assert_ne!(ready.body["mysql"], "ok", "{ready:?}");

    assert!(mysql_black_hole.connections() > 0, "a black hole, not a refused port");
    assert_eq!(stack.messages_in_topic(), 0);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysql_that_goes_silent_costs_a_503_per_request_and_the_site_recovers_when_it_answers_again() {
    // Auctions are served from the board's last snapshot whatever MySQL does; a bid lookup
    // still asks MySQL on every request.
    let unknown_bid = || format!("/api/bids/{}", uuid::Uuid::now_v7());
    let stack = TestStack::new().await;
    let mysql = FaultyProxy::start(Some(mysql_address(&stack.database.url))).await;
    mysql.forward();
    let mut config = stack.web_config();
    config.database.url = with_address(&stack.database.url, mysql.address);
    config.limits.database_connect_timeout_ms = 1000;
    config.limits.database_query_timeout_ms = 1000;
    let app = TestApp::spawn(config).await;
    let pool_size = stack.database.max_connections;
    let paths: Vec<String> = (0..pool_size + 2).map(|_| unknown_bid()).collect();
    let warm = futures::future::join_all(paths[..pool_size].iter().map(|path| get(&app, path))).await;
    assert!(warm.iter().all(|a| a.status == 404), "{warm:?}");
    eventually(Duration::from_secs(10), "the board loaded", || async { get(&app, "/readyz").await.body["board"].as_str()?.starts_with("snapshot").then_some(()) }).await;

    mysql.silence();
    // More requests than the pool has connections, each query lost on the way back: a
    // connection whose query timed out must not keep its place in the pool.
    let started = Instant::now();
    let answers = futures::future::join_all(paths.iter().map(|path| get(&app, path))).await;
    assert!(started.elapsed() < Duration::from_millis(2500), "took {:?}", started.elapsed());
    for answer in &answers {
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(answer.error().contains("database"), "{answer:?}");
    }
    assert_eq!(get(&app, "/api/auctions/1").await.status, 200, "the last snapshot is still served");

    mysql.forward();
    eventually(Duration::from_secs(10), "answers again", || async { (get(&app, &unknown_bid()).await.status == 404).then_some(()) }).await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_timed_out_leaves_no_late_answer_for_the_next_request() {
    let stack = TestStack::new().await;
    let mysql = FaultyProxy::start(Some(mysql_address(&stack.database.url))).await;
    mysql.forward();
    let mut config = stack.web_config();
    config.database.url = with_address(&stack.database.url, mysql.address);
    config.limits.database_connect_timeout_ms = 1000;
    config.limits.database_query_timeout_ms = 1000;
    let app = TestApp::spawn(config).await;
    // A stored bid: looking it up asks MySQL on every request (auctions come from the board).
    let stored = uuid::Uuid::now_v7().to_string();
    stack.pool.get_conn().await.expect("conn")
        .exec_drop("INSERT INTO bid (bid_id, auction_id, name, price, bid_ts) VALUES (?, 1, 'Ada', 10, UTC_TIMESTAMP(6))", (stored.as_str(),))
        .await.expect("insert a bid");
    let auction = get(&app, &format!("/api/bids/{stored}")).await;
    assert_eq!(auction.status, 200);

    mysql.delay_answers(Duration::from_millis(1500));
    let slow = get(&app, &format!("/api/bids/{stored}")).await;
    assert_eq!(slow.status, 503, "{slow:?}");
    mysql.delay_answers(Duration::ZERO);

    // The late answer is still on its way; whatever connection the next queries get, each
    // reads its own answer.
    for _ in 0..3 {
        let unknown = get(&app, &format!("/api/bids/{}", uuid::Uuid::now_v7())).await;
        assert_eq!(unknown.status, 404, "{unknown:?}");
        let again = get(&app, &format!("/api/bids/{stored}")).await;
        assert_eq!((again.status, &again.body), (200, &auction.body));
    }
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_lets_the_bids_in_flight_finish_and_every_acked_bid_is_in_kafka() {
    let stack = TestStack::new().await;
    // A slow MySQL holds the bids at the auction check, so they are in flight when the stop
    // comes: each bid is on an auction of its own, created after the board's first snapshot
    // (the next is a minute away), so each is looked up in MySQL.
    let mysql = FaultyProxy::start(Some(mysql_address(&stack.database.url))).await;
    mysql.forward();
    mysql.delay_answers(Duration::from_millis(250));
    let mut config = stack.web_config();
    config.database.url = with_address(&stack.database.url, mysql.address);
    config.limits.database_connect_timeout_ms = 10_000;
    config.limits.database_query_timeout_ms = 10_000;
    config.limits.standing_refresh_ms = 60_000;
    let app = Application::build(config).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let stop = app.stop_handle();
    let running = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(10), "the board's first snapshot", || async {
        let ready: Value = client.get(format!("{address}/readyz")).send().await.ok()?.json().await.ok()?;
        ready["board"].as_str()?.starts_with("snapshot").then_some(())
    })
    .await;
    let mut conn = stack.pool.get_conn().await.expect("conn");
    conn.query_drop("INSERT INTO auction (id, title) VALUES (101, 'a'), (102, 'b'), (103, 'c'), (104, 'd'), (105, 'e'), (106, 'f'), (107, 'g'), (108, 'h')")
        .await
        .expect("insert auctions");
    drop(conn);

    let bids: Vec<_> = (0..8)
        .map(|i| {
            let (client, address) = (client.clone(), address.clone());
            tokio::spawn(async move { post_bid(&client, &address, &(101 + i).to_string(), &json!({"name": format!("bidder {i}"), "price": "10"}), None).await })
        })
        .collect();
    eventually(Duration::from_secs(10), "bids at the auction check", || async { (mysql.connections() >= 2).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    stop.stop();

    // Connections still in the listen backlog are closed unanswered, later ones refused.
    eventually(Duration::from_secs(2), "new connections go unanswered", || async {
        reqwest::Client::new().get(format!("{address}/healthz")).send().await.err()
    })
    .await;
    let mut acked = Vec::new();
    for bid in bids {
        let answer = bid.await.expect("every bid in flight gets an answer");
        assert_eq!(answer.status, 202, "{answer:?}");
        acked.push(answer.body["bid_id"].as_str().expect("bid_id").to_owned());
    }
    let stopped = tokio::time::timeout(Duration::from_secs(10), running).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "stopped cleanly: {stopped:?}");
    assert!(asked.elapsed() < Duration::from_secs(10), "took {:?}", asked.elapsed());

    let mut in_kafka = bid_ids_in_topic(&stack);
    in_kafka.sort();
    acked.sort();
    assert_eq!(in_kafka, acked, "every acked bid is in Kafka, once");
    stack.cleanup().await;
}
