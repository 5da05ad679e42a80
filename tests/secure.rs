//! The programs over the stack's secure endpoints, as they would run against a managed cluster:
//! Kafka's SASL_SSL listener (SCRAM-SHA-512, a certificate of the stack's own CA), the registry
//! behind https and basic auth, and MariaDB over TLS (`ssl-mode=VERIFY_IDENTITY`). The endpoints are read from `TEST_SECURE_<setting>`
//! variables, the settings `make -s secure-env` prints (`make -s secure-env | sed
//! 's/^/TEST_SECURE_/'` for a stack on other ports), with stack.sh's defaults.
//!
//! The consumers are started through their command line, so the flags are tested too.

use std::time::{Duration, Instant};

use auction_common::config::{DatabaseConfig, KafkaConfig, RegistryConfig, SaslMechanism, Secret, SecurityProtocol};
use mysql_async::prelude::Queryable;
use auction_consumers::cli::{self, Cli};
use auction_web::Application;
use clap::Parser;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::helpers::{csv_rows, eventually, TestApp, TestStack};

fn setting(name: &str, default: &str) -> String {
    std::env::var(format!("TEST_SECURE_{name}")).unwrap_or_else(|_| default.to_owned())
}

/// The secure endpoints, with stack.sh's defaults.
struct Secure {
    brokers: String,
    kafka_user: String,
    kafka_password: String,
    kafka_ca: String,
    registry_url: String,
    registry_user: String,
    registry_password: String,
    registry_ca: String,
    database_ca: String,
}

impl Secure {
    fn from_env() -> Self {
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/../.stack/tls/ca.crt");
        Self {
            brokers: setting("KAFKA_BROKERS", "127.0.0.1:9094"),
            kafka_user: setting("KAFKA_SASL_USERNAME", "auction"),
            kafka_password: setting("KAFKA_SASL_PASSWORD", "auction-kafka-secret"),
            kafka_ca: setting("KAFKA_SSL_CA_LOCATION", ca),
            registry_url: setting("SCHEMA_REGISTRY_URL", "https://127.0.0.1:8444/apis/ccompat/v7"),
            registry_user: setting("SCHEMA_REGISTRY_USERNAME", "auction"),
            registry_password: setting("SCHEMA_REGISTRY_PASSWORD", "auction-registry-secret"),
            registry_ca: setting("SCHEMA_REGISTRY_CA_LOCATION", ca),
            database_ca: setting("DATABASE_SSL_CA", ca),
        }
    }

    fn kafka(&self, topic: &str) -> KafkaConfig {
        let mut kafka = KafkaConfig::new(&self.brokers, topic);
        kafka.security.protocol = SecurityProtocol::SaslSsl;
        kafka.security.sasl_mechanism = Some(SaslMechanism::ScramSha512);
        kafka.security.sasl_username = Some(self.kafka_user.clone());
        kafka.security.sasl_password = Some(Secret::new(&self.kafka_password));
        kafka.security.ssl_ca_location = Some(self.kafka_ca.clone().into());
        kafka
    }

    fn registry(&self) -> RegistryConfig {
        let mut registry = RegistryConfig::new(&self.registry_url);
        registry.security.username = Some(self.registry_user.clone());
        registry.security.password = Some(Secret::new(&self.registry_password));
        registry.security.ca_location = Some(self.registry_ca.clone().into());
        registry
    }

    /// The test's database, over TLS with the host name checked.
    fn database(&self, stack: &TestStack) -> DatabaseConfig {
        let mut database = DatabaseConfig::new(format!("{}?ssl-mode=VERIFY_IDENTITY", stack.database.url), 4);
        database.security.ssl_ca = Some(self.database_ca.clone().into());
        database
    }

    /// The flags of a consumer over the secure endpoints, as an operator would type them.
    fn consumer_flags(&self, stack: &TestStack) -> Vec<String> {
        [
            ("--kafka-brokers", self.brokers.as_str()),
            ("--bids-topic", stack.kafka.topic.as_str()),
            ("--kafka-security-protocol", "SASL_SSL"),
            ("--kafka-sasl-mechanism", "SCRAM-SHA-512"),
            ("--kafka-sasl-username", &self.kafka_user),
            ("--kafka-sasl-password", &self.kafka_password),
            ("--kafka-ssl-ca-location", &self.kafka_ca),
            ("--schema-registry-url", &self.registry_url),
            ("--schema-registry-username", &self.registry_user),
            ("--schema-registry-password", &self.registry_password),
            ("--schema-registry-ca-location", &self.registry_ca),
            ("--batch-max-wait-ms", "20"),
        ]
        .into_iter()
        .map(|(flag, value)| format!("{flag}={value}"))
        .collect()
    }
}

/// `auction-consumer <subcommand> <flags>` run as a task, as the binary runs it.
struct Consumer {
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Consumer {
    fn spawn(args: Vec<String>) -> Self {
        let cli = Cli::try_parse_from(std::iter::once("auction-consumer".to_owned()).chain(args)).expect("the flags parse");
        let (stop, shutdown) = watch::channel(false);
        Self { stop, task: tokio::spawn(cli::run(cli.command, shutdown)) }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.expect("consumer task").expect("the consumer ends cleanly");
    }
}

/// The whole error chain of a failed start, as the binary prints it.
async fn web_start_error(config: auction_web::WebConfig) -> String {
    match Application::build(config).await {
        Ok(_) => panic!("the site started"),
        Err(e) => format!("{e:#}"),
    }
}

async fn consumer_start_error(args: Vec<String>) -> String {
    let cli = Cli::try_parse_from(std::iter::once("auction-consumer".to_owned()).chain(args)).expect("the flags parse");
    let (_stop, shutdown) = watch::channel(false);
    match tokio::time::timeout(Duration::from_secs(30), cli::run(cli.command, shutdown)).await {
        Ok(Err(e)) => format!("{e:#}"),
        Ok(Ok(())) => panic!("the consumer ran and ended"),
        Err(_) => panic!("the consumer ran on for 30 s instead of stopping at the startup check"),
    }
}

#[tokio::test]
async fn a_bid_goes_over_sasl_ssl_and_the_authenticated_registry_into_mysql_over_tls_and_the_csv() {
    let stack = TestStack::new().await;
    let secure = Secure::from_env();
    let mut config = stack.web_config();
    config.kafka = secure.kafka(&stack.kafka.topic);
    config.registry = secure.registry();
    config.database = secure.database(&stack);
    let app = TestApp::spawn(config).await;
    let csv = stack.csv_path();
    let database = secure.database(&stack);
    let mut writer_flags = vec![
        "db-writer".to_owned(),
        format!("--consumer-group=secure-db-{}", stack.suffix),
        format!("--database-url={}", database.url),
        format!("--database-ssl-ca={}", secure.database_ca),
    ];
    writer_flags.extend(secure.consumer_flags(&stack));
    // The file-backup takes its passwords from files, as from mounted Docker or Kubernetes secrets,
    // and a librdkafka property from a properties file.
    let secrets = csv.parent().expect("the CSV's folder").join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("kafka"), format!("{}\n", secure.kafka_password)).unwrap();
    std::fs::write(secrets.join("registry"), format!("{}\n", secure.registry_password)).unwrap();
    std::fs::write(secrets.join("kafka.properties"), "# as a managed cluster's console hands them out\nclient.id=secure-file-backup\n").unwrap();
    let mut backup_flags = vec!["file-backup".to_owned(), format!("--consumer-group=secure-csv-{}", stack.suffix), format!("--backup-csv={}", csv.display())];
    backup_flags.extend(secure.consumer_flags(&stack).into_iter().filter(|flag| !flag.contains("-password=")));
    backup_flags.push(format!("--kafka-sasl-password-file={}", secrets.join("kafka").display()));
    backup_flags.push(format!("--schema-registry-password-file={}", secrets.join("registry").display()));
    backup_flags.push(format!("--kafka-properties-file={}", secrets.join("kafka.properties").display()));
    let writer = Consumer::spawn(writer_flags);
    let backup = Consumer::spawn(backup_flags);

    let response = app.post_bid_json("1", json!({"name": "Grace", "price": "41.50"})).await;
    assert_eq!(response.status(), 202);
    let bid: Value = response.json().await.unwrap();
    let bid_id = bid["bid_id"].as_str().expect("a bid id").to_owned();

    let rows = eventually(Duration::from_secs(30), "the bid in MySQL", || async {
        let rows = stack.bid_rows().await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].0.as_str(), rows[0].2.as_str(), rows[0].3.as_str()), (bid_id.as_str(), "Grace", "41.50"));
    let lines = eventually(Duration::from_secs(30), "the bid in the CSV", || async {
        let lines = csv_rows(&csv);
        (!lines.is_empty()).then_some(lines)
    })
    .await;
    assert_eq!(lines.len(), 1);
    assert!(lines[0].iter().any(|field| field == bid_id), "{:?}", lines[0]);
    assert_eq!(stack.messages_in_topic(), 1);
    // What the programs' MySQL sessions are: encrypted.
    let pool = auction_common::db::pool(&database).expect("pool");
    let mut conn = pool.get_conn().await.expect("a TLS connection");
    let tls: Option<(String, String)> = conn.query_first("SHOW SESSION STATUS LIKE 'Ssl_version'").await.expect("status");
    assert!(tls.as_ref().is_some_and(|(_, version)| version.starts_with("TLS")), "{tls:?}");
    drop(conn);
    pool.disconnect().await.ok();
    writer.stop().await;
    backup.stop().await;
    stack.cleanup().await;
}

#[tokio::test]
async fn a_wrong_kafka_password_stops_the_site_and_the_consumers_at_once_naming_the_user() {
    let stack = TestStack::new().await;
    let secure = Secure { kafka_password: "not-the-password".into(), ..Secure::from_env() };
    let mut config = stack.web_config();
    config.kafka = secure.kafka(&stack.kafka.topic);
    config.registry = secure.registry();

    let start = Instant::now();
    let error = web_start_error(config).await;
    assert!(error.contains(&format!("SASL authentication failed for user {}", secure.kafka_user)), "{error}");
    assert!(!error.contains("not-the-password"), "the password shows: {error}");
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());

    let mut flags = vec!["file-backup".to_owned(), format!("--backup-csv={}", stack.csv_path().display())];
    flags.extend(secure.consumer_flags(&stack));
    let error = consumer_start_error(flags).await;
    assert!(error.contains(&format!("SASL authentication failed for user {}", secure.kafka_user)), "{error}");
    assert!(!error.contains("not-the-password"), "the password shows: {error}");
    assert!(!stack.csv_path().exists(), "the file-backup opened its file before the check");
    stack.cleanup().await;
}

#[tokio::test]
async fn a_ca_that_does_not_sign_the_certificates_stops_the_site_naming_each_certificate_problem() {
    let stack = TestStack::new().await;
    // The system's CAs: real ones, none of which signed the stack's certificates.
    let system_cas = "/etc/ssl/certs/ca-certificates.crt".to_owned();
    let secure = Secure { kafka_ca: system_cas.clone(), registry_ca: system_cas.clone(), database_ca: system_cas, ..Secure::from_env() };
    let mut config = stack.web_config();
    config.kafka = secure.kafka(&stack.kafka.topic);
    config.registry = secure.registry();
    config.database = secure.database(&stack);

    let start = Instant::now();
    let error = web_start_error(config).await;
    assert!(error.contains(&format!("certificate not trusted: the Kafka broker at {}", secure.brokers)), "{error}");
    assert!(error.contains("certificate not trusted: the registry at https://"), "{error}");
    assert!(error.contains("certificate not trusted: MySQL at mysql://auction:***@"), "{error}");
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    stack.cleanup().await;
}

#[tokio::test]
async fn a_wrong_registry_password_stops_the_site_naming_the_401_and_the_url_without_credentials() {
    let stack = TestStack::new().await;
    let secure = Secure { registry_password: "not-the-registry-password".into(), ..Secure::from_env() };
    let mut config = stack.web_config();
    config.kafka = secure.kafka(&stack.kafka.topic);
    config.registry = secure.registry();

    let error = web_start_error(config).await;
    let url = format!("{}/subjects", secure.registry_url);
    assert!(error.contains(&format!("registry answered 401 Unauthorized at {url} for user {}", secure.registry_user)), "{error}");
    assert!(!error.contains("not-the-registry-password"), "the password shows: {error}");

    let mut flags = vec!["db-writer".to_owned(), format!("--database-url={}", stack.database.url)];
    flags.extend(secure.consumer_flags(&stack));
    let error = consumer_start_error(flags).await;
    assert!(error.contains("registry answered 401 Unauthorized"), "{error}");
    stack.cleanup().await;
}
