//! The startup check every program runs before it serves or consumes: the settings make sense,
//! Kafka answers a metadata request, the registry answers `GET /subjects`, MySQL answers a ping.
//!
//! What must hold: a problem that waiting cannot fix — SASL authentication refused, a
//! certificate not trusted, the registry answering 401, MySQL refusing the user, a setting that
//! cannot work — stops the program with a message naming exactly what failed, instead of the
//! program retrying silently forever. A service that merely cannot be reached yet (connection
//! refused, no answer in time) is logged at warn and the program starts anyway: the stack may
//! start after it, and the programs already wait for a service that is down (the site answers
//! 503 and `/readyz` says why, the consumers hold their batch).
//!
//! Secrets never appear in these messages: URLs are shown without credentials, and librdkafka,
//! reqwest and MySQL name the user, never the password.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rdkafka::ClientConfig;

use crate::config::{DatabaseConfig, KafkaConfig, RegistryConfig};
use crate::{db, kafka, registry};

/// How long each service may take to answer the startup check.
pub const STARTUP_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The services a program uses; `None` for those it does not talk to.
#[derive(Default, Clone, Copy)]
pub struct Endpoints<'a> {
    pub kafka: Option<&'a KafkaConfig>,
    pub registry: Option<&'a RegistryConfig>,
    pub database: Option<&'a DatabaseConfig>,
}

/// Every problem found that waiting would not fix, one a line.
#[derive(Debug, thiserror::Error)]
#[error("startup check failed:\n  - {}", .0.join("\n  - "))]
pub struct StartupError(pub Vec<String>);

/// What one check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Finding {
    Ok(String),
    /// Not reachable now; may be later.
    Unreachable(String),
    /// Will not work until a setting or a credential is changed.
    Refused(String),
}

/// Runs the checks of `endpoints` side by side, each bounded by `timeout`.
pub async fn check(endpoints: Endpoints<'_>, timeout: Duration) -> Result<(), StartupError> {
    let (kafka, registry, database) = tokio::join!(
        async {
            match endpoints.kafka {
                Some(config) => Some(check_kafka(config, timeout).await),
                None => None,
            }
        },
        async {
            match endpoints.registry {
                Some(config) => Some(check_registry(config, timeout).await),
                None => None,
            }
        },
        async {
            match endpoints.database {
                Some(config) => Some(check_database(config, timeout).await),
                None => None,
            }
        },
    );
    let mut refused = Vec::new();
    for finding in [kafka, registry, database].into_iter().flatten() {
        match finding {
            Finding::Ok(what) => log::info!("startup check: {what}"),
            Finding::Unreachable(what) => log::warn!("startup check: {what}; starting anyway, and waiting for it"),
            Finding::Refused(what) => {
                log::error!("startup check: {what}");
                refused.push(what);
            }
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(StartupError(refused))
    }
}

// --- Kafka -----------------------------------------------------------------------------------

/// Keeps what librdkafka reports through its error callback: authentication and TLS failures
/// come only this way (a metadata request just times out).
#[derive(Default, Clone)]
struct ErrorCapture(Arc<Mutex<Vec<Reported>>>);

/// An error librdkafka reported: its code, if it has one, and its text.
type Reported = (Option<RDKafkaErrorCode>, String);

impl ErrorCapture {
    fn seen(&self) -> Vec<Reported> {
        self.0.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl ClientContext for ErrorCapture {
    /// Connection failures ("FAIL") are kept too: some come only as log lines. They are
    /// logged at debug only, as the check's own message names them.
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        log::debug!(target: "librdkafka", "librdkafka during the startup check: {fac} {log_message}");
        if fac == "FAIL" {
            if let Ok(mut seen) = self.0.lock() {
                seen.push((None, log_message.to_owned()));
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log::debug!("librdkafka error during the startup check: {error}: {reason}");
        if let Ok(mut seen) = self.0.lock() {
            seen.push((error.rdkafka_error_code(), reason.to_owned()));
        }
    }
}

impl ProducerContext for ErrorCapture {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Names the cause of a failed connection from what librdkafka reported, if it is one that
/// waiting will not fix.
fn kafka_refusal(config: &KafkaConfig, seen: &[Reported]) -> Option<String> {
    let security = &config.security;
    for (code, reason) in seen {
        let lower = reason.to_ascii_lowercase();
        if *code == Some(RDKafkaErrorCode::Authentication) || lower.contains("sasl authentication error") {
            return Some(format!(
                "SASL authentication failed for user {} (mechanism {}) at Kafka {}: {reason}",
                security.sasl_username.as_deref().unwrap_or("(none)"),
                security.sasl_mechanism.map_or("(none)", |m| m.as_str()),
                config.brokers
            ));
        }
        if lower.contains("certificate verify failed") {
            let trusted = match &security.ssl_ca_location {
                Some(ca) => format!("KAFKA_SSL_CA_LOCATION={}", ca.display()),
                None => "the system's CA certificates".to_owned(),
            };
            return Some(format!("certificate not trusted: the Kafka broker at {} showed a certificate that {trusted} does not vouch for: {reason}", config.brokers));
        }
        if *code == Some(RDKafkaErrorCode::SSL) || lower.contains("ssl handshake failed") {
            return Some(format!("TLS handshake with Kafka at {} failed (is KAFKA_SECURITY_PROTOCOL right for this port?): {reason}", config.brokers));
        }
        // A TLS listener accepts a plaintext client's connection, then closes it unanswered.
        if !security.protocol.uses_tls() && lower.contains("disconnected") && lower.contains("in state apiversion_query") {
            return Some(format!(
                "Kafka at {} closed the connection without answering KAFKA_SECURITY_PROTOCOL={} (a TLS listener does this: SSL or SASL_SSL?): {reason}",
                config.brokers,
                security.protocol.as_str()
            ));
        }
    }
    None
}

/// One metadata request through a client built like every other (see [`kafka::client_config`]).
pub async fn check_kafka(config: &KafkaConfig, timeout: Duration) -> Finding {
    if let Err(e) = config.security.validate() {
        return Finding::Refused(e.to_string());
    }
    let capture = ErrorCapture::default();
    let client_config: ClientConfig = kafka::client_config(config);
    let producer: BaseProducer<ErrorCapture> = match client_config.create_with_context(capture.clone()) {
        Ok(producer) => producer,
        Err(e) => return Finding::Refused(format!("Kafka client settings refused: {}", kafka::describe(&e))),
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // The metadata request blocks: on a thread of its own, detached, so a failure found
    // early through the error callback is reported at once rather than after the timeout.
    let metadata_producer = Arc::new(producer);
    let poller = Arc::clone(&metadata_producer);
    std::thread::spawn(move || {
        let answer = metadata_producer.client().fetch_metadata(None, timeout).map(|m| m.brokers().len());
        let _ = done_tx.send(answer);
    });
    let start = Instant::now();
    loop {
        // Serves the error callback.
        poller.poll(Duration::ZERO);
        let seen = capture.seen();
        if let Some(refusal) = kafka_refusal(config, &seen) {
            return Finding::Refused(refusal);
        }
        match done_rx.try_recv() {
            Ok(Ok(brokers)) => {
                return Finding::Ok(format!(
                    "Kafka at {} answered ({brokers} broker(s), {})",
                    config.brokers,
                    config.security.protocol.as_str()
                ))
            }
            Ok(Err(e)) => {
                let last = seen.last().map(|(_, r)| r.clone()).unwrap_or_else(|| e.to_string());
                return Finding::Unreachable(format!("Kafka at {} did not answer a metadata request in {timeout:?}: {last}", config.brokers));
            }
            Err(_) if seen.iter().any(|(code, _)| *code == Some(RDKafkaErrorCode::AllBrokersDown)) => {
                let last = seen.iter().rev().find(|(code, _)| *code != Some(RDKafkaErrorCode::AllBrokersDown)).map(|(_, r)| r.as_str());
                return Finding::Unreachable(format!("Kafka at {} cannot be reached: {}", config.brokers, last.unwrap_or("all brokers are down")));
            }
            Err(_) if start.elapsed() > timeout + Duration::from_secs(1) => {
                return Finding::Unreachable(format!("Kafka at {} did not answer a metadata request in {timeout:?}", config.brokers));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

// --- registry --------------------------------------------------------------------------------

fn is_certificate_problem(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("certificate verify failed") || lower.contains("self-signed certificate") || lower.contains("unable to get local issuer")
}

/// `GET <url>/subjects` with the client every registry call uses.
pub async fn check_registry(config: &RegistryConfig, timeout: Duration) -> Finding {
    if let Err(e) = config.validate() {
        return Finding::Refused(e.to_string());
    }
    let http = match registry::http_client(config) {
        Ok(http) => http,
        Err(e) => return Finding::Refused(e),
    };
    let shown = format!("{}/subjects", config.redacted_url().trim_end_matches('/'));
    let url = format!("{}/subjects", config.url.trim_end_matches('/'));
    let answer = match tokio::time::timeout(timeout, http.get(url).send()).await {
        Err(_) => return Finding::Unreachable(format!("the registry at {shown} did not answer in {timeout:?}")),
        Ok(answer) => answer,
    };
    match answer {
        Ok(response) if response.status().is_success() => Finding::Ok(format!("the registry at {shown} answered {}", response.status())),
        Ok(response) => {
            let status = response.status();
            let hint = match status.as_u16() {
                401 | 403 => match &config.security.username {
                    Some(user) => format!(" for user {user}: check SCHEMA_REGISTRY_USERNAME and SCHEMA_REGISTRY_PASSWORD"),
                    None => ": it wants credentials (SCHEMA_REGISTRY_USERNAME and SCHEMA_REGISTRY_PASSWORD)".to_owned(),
                },
                404 => ": SCHEMA_REGISTRY_URL must be the base of the Confluent API (…/apis/ccompat/v7 on Apicurio)".to_owned(),
                _ => String::new(),
            };
            let finding = format!("registry answered {status} at {shown}{hint}");
            if status.is_server_error() {
                Finding::Unreachable(finding)
            } else {
                Finding::Refused(finding)
            }
        }
        Err(e) => {
            let (connect, timed_out) = (e.is_connect(), e.is_timeout());
            let cause = registry::error_chain(&e.without_url());
            if is_certificate_problem(&cause) {
                let trusted = match &config.security.ca_location {
                    Some(ca) => format!("SCHEMA_REGISTRY_CA_LOCATION={}", ca.display()),
                    None => "the system's CA certificates".to_owned(),
                };
                Finding::Refused(format!("certificate not trusted: the registry at {shown} showed a certificate that {trusted} does not vouch for: {cause}"))
            } else if connect || timed_out {
                Finding::Unreachable(format!("the registry at {shown} cannot be reached: {cause}"))
            } else {
                Finding::Refused(format!("the registry at {shown} failed: {cause}"))
            }
        }
    }
}

// --- MySQL -----------------------------------------------------------------------------------

/// A connection of its own (not from a pool, so nothing is kept) and a ping.
pub async fn check_database(config: &DatabaseConfig, timeout: Duration) -> Finding {
    let shown = config.redacted_url();
    if let Err(e) = db::connection(config) {
        return Finding::Refused(e.to_string());
    }
    let pool = match db::pool(&DatabaseConfig { max_connections: 1, ..config.clone() }) {
        Ok(pool) => pool,
        Err(e) => return Finding::Refused(format!("DATABASE_URL {shown}: {e}")),
    };
    let attempt = async {
        use mysql_async::prelude::Queryable;
        let mut conn = pool.get_conn().await?;
        conn.ping().await
    };
    let finding = match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Finding::Unreachable(format!("MySQL at {shown} did not answer in {timeout:?}")),
        Ok(Ok(())) => Finding::Ok(format!("MySQL at {shown} answered")),
        Ok(Err(e)) => {
            let cause = registry::error_chain(&e);
            match &e {
                mysql_async::Error::Server(server) => Finding::Refused(format!("MySQL at {shown} refused the connection: {} (error {})", server.message, server.code)),
                _ if is_certificate_problem(&cause) => {
                    Finding::Refused(format!("certificate not trusted: MySQL at {shown} showed a certificate that the CA given does not vouch for: {cause}"))
                }
                mysql_async::Error::Driver(_) => Finding::Refused(format!("MySQL at {shown}: {cause}")),
                _ => Finding::Unreachable(format!("MySQL at {shown} cannot be reached: {cause}")),
            }
        }
    };
    let _ = pool.disconnect().await;
    finding
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SaslMechanism, SecurityProtocol};

    #[test]
    fn librdkafka_reports_become_messages_naming_the_cause() {
        let mut config = KafkaConfig::new("b:9094", "bids");
        config.security.protocol = SecurityProtocol::SaslSsl;
        config.security.sasl_mechanism = Some(SaslMechanism::ScramSha512);
        config.security.sasl_username = Some("alice".into());
        let auth = [(Some(RDKafkaErrorCode::Authentication), "sasl_ssl://b:9094/bootstrap: SASL authentication error: Authentication failed".to_owned())];
        let message = kafka_refusal(&config, &auth).expect("a refusal");
        assert!(message.starts_with("SASL authentication failed for user alice (mechanism SCRAM-SHA-512)"), "{message}");
        let tls = [(Some(RDKafkaErrorCode::SSL), "ssl://b:9094/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed".to_owned())];
        let message = kafka_refusal(&config, &tls).expect("a refusal");
        assert!(message.starts_with("certificate not trusted: "), "{message}");
        let down = [(Some(RDKafkaErrorCode::BrokerTransportFailure), "Connect to ipv4#127.0.0.1:1 failed: Connection refused".to_owned())];
        assert_eq!(kafka_refusal(&config, &down), None);
        let plaintext = KafkaConfig::new("b:9094", "bids");
        let closed = [(None, "b:9094/bootstrap: Disconnected: connection closed by peer: receive 0 after POLLIN (after 1ms in state APIVERSION_QUERY)".to_owned())];
        let message = kafka_refusal(&plaintext, &closed).expect("a refusal");
        assert!(message.contains("KAFKA_SECURITY_PROTOCOL=PLAINTEXT (a TLS listener does this"), "{message}");
    }
}
