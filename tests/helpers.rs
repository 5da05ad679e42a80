use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auction_common::config::{DatabaseConfig, KafkaConfig, RegistryConfig};
use auction_common::{db, kafka};
use auction_consumers::db_writer::MySqlSink;
use auction_consumers::file_backup::CsvSink;
use auction_consumers::metrics::MetricsServer;
use auction_consumers::pipeline::{self, ConsumerSettings, ConsumerStatus};
use auction_web::{Application, WebConfig};
use mysql_async::prelude::Queryable;
use mysql_async::Pool;
use auction_common::{AuctionId, Bid, BidderName, Price};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinHandle;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// One test's private slice of the real stack: its own topic and database.
pub struct TestStack {
    pub suffix: String,
    pub kafka: KafkaConfig,
    pub registry: RegistryConfig,
    pub database: DatabaseConfig,
    pub pool: Pool,
    db_name: String,
    server_url: String,
}

impl TestStack {
    pub async fn new() -> Self {
        let _ = env_logger::builder().is_test(true).try_init();
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let kafka = KafkaConfig::new(env_or("KAFKA_BROKERS", "127.0.0.1:9092"), format!("bids-test-{suffix}"));
        let registry = RegistryConfig::new(env_or("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7"));
        // auction_admin may create databases named auction_test_*.
        let server_url = env_or("TEST_MYSQL_ADMIN_URL", "mysql://auction_admin:auction_admin@127.0.0.1:3306");
        let db_name = format!("auction_test_{suffix}");
        let admin = Pool::new(server_url.as_str());
        let mut conn = admin.get_conn().await.expect("MariaDB is up (make stack-up)");
        conn.query_drop(format!("CREATE DATABASE {db_name} CHARACTER SET utf8mb4")).await.expect("create test database");
        drop(conn);
        admin.disconnect().await.ok();
        let admin_db = DatabaseConfig::new(format!("{server_url}/{db_name}"), 4);
        let pool = db::pool(&admin_db).expect("pool");
        db::migrate(&pool).await.expect("migrations apply");
        // The programs connect as the same least-privileged user as in production.
        let app_user = env_or("TEST_MYSQL_APP_URL", "mysql://auction:auction@127.0.0.1:3306");
        let database = DatabaseConfig::new(format!("{app_user}/{db_name}"), 4);
        kafka::ensure_topic(&kafka).await.expect("Kafka is up (make stack-up)");
        Self { suffix, kafka, registry, database, pool, db_name, server_url }
    }

    pub fn web_config(&self) -> WebConfig {
        WebConfig {
            bind_addr: "127.0.0.1:0".into(),
            delivery_timeout_ms: 5000,
            http_workers: Some(2),
            kafka: self.kafka.clone(),
            registry: self.registry.clone(),
            database: self.database.clone(),
            limits: Default::default(),
            security: Default::default(),
            dashboard: Default::default(),
        }
    }

    pub async fn spawn_web(&self) -> TestApp {
        TestApp::spawn(self.web_config()).await
    }

    pub fn consumer_settings(&self, group: &str) -> ConsumerSettings {
        ConsumerSettings {
            kafka: self.kafka.clone(),
            registry: self.registry.clone(),
            group_id: format!("{group}-{}", self.suffix),
            batch_max_size: 100,
            batch_max_wait: Duration::from_millis(20),
        }
    }

    pub fn spawn_db_writer(&self, group: &str) -> RunningConsumer {
        let sink = MySqlSink::new(&self.database).expect("db-writer sink");
        RunningConsumer::spawn(self.consumer_settings(group), sink)
    }

    /// A file-backup on `csv`; the file is opened (and checked against the topic) in the task.
    pub fn spawn_file_backup(&self, group: &str, csv: &PathBuf) -> RunningConsumer {
        let settings = self.consumer_settings(group);
        let (csv, kafka) = (csv.clone(), self.kafka.clone());
        RunningConsumer::spawn_with(move |status, shutdown| async move {
            let sink = CsvSink::open(&csv, &kafka).await?;
            pipeline::run(settings, sink, status, shutdown).await
        })
    }

    pub fn csv_path(&self) -> PathBuf {
        std::env::temp_dir().join(format!("auction-test-{}", self.suffix)).join("bids.csv")
    }

    /// Rows of `bid` as (bid_id, auction_id, name, price, bid_ts as text).
    pub async fn bid_rows(&self) -> Vec<(String, u64, String, String, String)> {
        let mut conn = self.pool.get_conn().await.expect("conn");
        conn.query("SELECT bid_id, auction_id, name, CAST(price AS CHAR), DATE_FORMAT(bid_ts, '%Y-%m-%dT%H:%i:%s.%fZ') FROM bid ORDER BY id")
            .await
            .expect("select bids")
    }

    /// How many messages the topic holds, over all partitions.
    pub fn messages_in_topic(&self) -> i64 {
        let consumer: BaseConsumer = kafka::client_config(&self.kafka).create().expect("consumer");
        (0..self.kafka.topic_partitions)
            .map(|p| {
                // Just after the topic is made, a partition may not have its leader yet: ask again.
                let mut attempt = 0;
                loop {
                    match consumer.fetch_watermarks(&self.kafka.topic, p, Duration::from_secs(5)) {
                        Ok((low, high)) => break high - low,
                        Err(_) if attempt < 20 => {
                            attempt += 1;
                            std::thread::sleep(Duration::from_millis(250));
                        }
                        Err(e) => panic!("watermarks of partition {p}: {e}"),
                    }
                }
            })
            .sum()
    }

    /// The offsets `group` has committed on each partition of the test's topic, as Kafka holds them.
    pub fn committed_offsets(&self, group: &str) -> Vec<Offset> {
        let consumer: BaseConsumer = kafka::client_config(&self.kafka).set("group.id", group).create().expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.kafka.topic_partitions {
            tpl.add_partition(&self.kafka.topic, p);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
        committed.elements().iter().map(|e| e.offset()).collect()
    }

    /// Drops the test's database and topic; leaves them for inspection if the test failed.
    pub async fn cleanup(self) {
        let dlq = format!("{}.dlq", self.kafka.topic);
        let _ = delete_topics(&self.kafka, &[&self.kafka.topic, &dlq]).await;
        self.pool.disconnect().await.ok();
        let admin = Pool::new(self.server_url.as_str());
        if let Ok(mut conn) = admin.get_conn().await {
            let _ = conn.query_drop(format!("DROP DATABASE {}", self.db_name)).await;
        }
        admin.disconnect().await.ok();
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("auction-test-{}", self.suffix)));
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
}

impl TestApp {
    pub async fn spawn(config: WebConfig) -> Self {
        let app = Application::build(config).await.expect("app builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Self { address, client }
    }

    pub async fn post_bid_json(&self, auction: &str, body: serde_json::Value) -> reqwest::Response {
        self.client.post(format!("{}/api/auctions/{auction}/bids", self.address)).json(&body).send().await.expect("POST")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.address)).send().await.expect("GET")
    }
}

pub struct RunningConsumer {
    pub status: Arc<ConsumerStatus>,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningConsumer {
    pub fn spawn<S: pipeline::Sink + Send + 'static>(settings: ConsumerSettings, sink: S) -> Self {
        Self::spawn_with(move |status, shutdown| pipeline::run(settings, sink, status, shutdown))
    }

    /// Runs `consume` (which builds its sink, then runs the pipeline) as a task.
    pub fn spawn_with<F, Fut>(consume: F) -> Self
    where
        F: FnOnce(Arc<ConsumerStatus>, watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let status = Arc::new(ConsumerStatus::default());
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(consume(status.clone(), shutdown));
        Self { status, stop, task }
    }


    /// Asks it to stop as SIGTERM would, and waits until it has.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.expect("consumer task").expect("consumer ends cleanly");
    }
}

impl RunningConsumer {
    /// Serves its `/metrics` and `/readyz` on a free port, as `--metrics-addr` does; the base
    /// URL, and the server to stop at the end.
    pub fn serve_metrics(&self) -> (String, MetricsServer) {
        let server = MetricsServer::start("127.0.0.1:0", self.status.clone()).expect("metrics server starts");
        (format!("http://{}", server.address()), server)
    }
}

/// `GET {base}/metrics`: the Prometheus text.
pub async fn scrape(base: &str) -> String {
    let response = reqwest::get(format!("{base}/metrics")).await.expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    response.text().await.expect("metrics text")
}

/// The value of the sample `name` whose labels include every one of `labels`, as Prometheus
/// reads the text format (`name{a="x",b="y"} 12`).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        let has: Vec<(&str, &str)> = label_text
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('=').map(|(k, v)| (k, v.trim_matches('"'))))
            .collect();
        (metric == name && labels.iter().all(|l| has.contains(l))).then(|| value.parse().ok()).flatten()
    })
}

/// Polls `check` until it returns Some, or panics after `limit` with `what`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn bid(name: &str, price: &str) -> Bid {
    Bid::accept(AuctionId::new(1).expect("auction 1"), BidderName::parse(name).expect("a valid name"), Price::parse(price).expect("a valid price"))
}

/// The rows of a CSV backup (an absent file has none).
pub fn csv_rows(path: &std::path::Path) -> Vec<csv::StringRecord> {
    let Ok(file) = std::fs::File::open(path) else { return Vec::new() };
    csv::Reader::from_reader(file).records().map(|r| r.expect("a well-formed CSV row")).collect()
}

/// Produces (key, payload) pairs to the test's topic, in order, each acked.
pub async fn produce(stack: &TestStack, payloads: &[(String, Vec<u8>)]) {
    produce_to(stack, None, payloads).await
}

/// The same, all to one partition when given (so their order is the order consumed).
pub async fn produce_to(stack: &TestStack, partition: Option<i32>, payloads: &[(String, Vec<u8>)]) {
    let producer: FutureProducer = kafka::bid_producer(&stack.kafka, Duration::from_secs(10)).expect("producer");
    for (key, payload) in payloads {
        let mut record = FutureRecord::to(&stack.kafka.topic).key(key).payload(payload);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        producer.send(record, Duration::from_secs(5)).await.map_err(|(e, _)| e).expect("broker acks");
    }
}

/// A message of the dead-letter topic, as a user of `kafka-console-consumer` would see it.
#[derive(Debug)]
pub struct DeadLetterSeen {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl DeadLetterSeen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Everything in `<topic>.dlq`, in order (it has one partition).
pub async fn dead_letters(stack: &TestStack) -> Vec<DeadLetterSeen> {
    let topic = format!("{}.dlq", stack.kafka.topic);
    let consumer: BaseConsumer = kafka::client_config(&stack.kafka).set("group.id", "test-dlq-reader").create().expect("consumer");
    let Ok((low, high)) = consumer.fetch_watermarks(&topic, 0, Duration::from_secs(5)) else { return Vec::new() };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(low)).expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut seen = Vec::new();
    let start = Instant::now();
    while (seen.len() as i64) < high - low && start.elapsed() < Duration::from_secs(20) {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) else { continue };
        let headers = m
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect())
            .unwrap_or_default();
        seen.push(DeadLetterSeen { key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()), payload: m.payload().unwrap_or_default().to_vec(), headers });
    }
    seen
}

/// Deletes topics (each test cleans up its own).
pub async fn delete_topics(kafka: &KafkaConfig, names: &[&str]) -> Result<(), rdkafka::error::KafkaError> {
    let admin: AdminClient<DefaultClientContext> = kafka::client_config(kafka).create()?;
    for result in admin.delete_topics(names, &AdminOptions::new()).await? {
        if let Err((name, code)) = result {
            if code != rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition {
                eprintln!("deleting topic {name}: {code}");
            }
        }
    }
    Ok(())
}
