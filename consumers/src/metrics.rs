//! What a consumer serves on its own port (`--metrics-addr`, `METRICS_ADDR`; off unless set):
//! `GET /metrics` in Prometheus text format and `GET /readyz` as JSON.
//!
//! Metrics, each with the label `group` (the consumer group):
//! - `auction_db_rows_written_total` (db-writer) or `auction_csv_lines_written_total`
//!   (file-backup): bids made durable by this process; `auction_consumer_duplicates_total`:
//!   bids found already stored (redeliveries);
//! - `auction_consumer_batch_size` (bids per batch written) and
//!   `auction_consumer_write_latency_seconds` (one successful write: MySQL transaction
//!   committed, or CSV appended and fsynced);
//! - `auction_consumer_retries_total{cause}`: attempts that failed and will be retried
//!   (`write`, `registry`, `dead_letter_topic`, `topic`);
//! - `auction_consumer_dead_letters_total{class}` (`poison`, `rejected`);
//! - `auction_consumer_lag{partition}`: per assigned partition, the partition's end offset
//!   minus this consumer's position (the next offset it will be handed), from librdkafka's
//!   statistics every [`STATS_INTERVAL_MS`] ms: the consumer's own view, at no cost per message
//!   and with no request of its own to the broker. A partition that moves to another member
//!   leaves this gauge. The statistics are served by the same polls as the messages, so while
//!   the loop holds a batch it cannot write, the gauge keeps its last value (and `/readyz`
//!   says why it is stalled);
//! - `auction_consumer_assigned_partitions`: how many partitions this member holds (0: idle).
//!
//! `/readyz` answers 200 when the consumer holds partitions and is not stalled (its last write,
//! registry call and dead-letter send succeeded, or nothing had to be written yet), 503
//! otherwise; the body is the same either way ([`Readiness`]).

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::pipeline::{ConsumerStatus, Role};

/// How often librdkafka reports the offsets the lag is computed from.
pub const STATS_INTERVAL_MS: u64 = 5000;

const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0];
const WRITE_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

pub struct ConsumerMetrics {
    registry: Registry,
    pub written: IntCounter,
    pub duplicates: IntCounter,
    pub batch_size: Histogram,
    pub write_latency: Histogram,
    retries: IntCounterVec,
    dead_letters: IntCounterVec,
    lag: IntGaugeVec,
    /// The partitions `lag` has a value for, so those no longer assigned can be removed.
    lag_partitions: Mutex<BTreeSet<i32>>,
    assigned: IntGauge,
}

impl std::fmt::Debug for ConsumerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsumerMetrics")
    }
}

impl ConsumerMetrics {
    pub fn new(role: Role, group: &str) -> prometheus::Result<Self> {
        // Its own registry, labelled with the group: consumers in one process (the tests) count apart.
        let registry = Registry::new_custom(None, Some(HashMap::from([("group".to_owned(), group.to_owned())])))?;
        let written = match role {
            Role::DbWriter => IntCounter::new("auction_db_rows_written_total", "Bids inserted into MySQL table bid by this process")?,
            Role::FileBackup => IntCounter::new("auction_csv_lines_written_total", "Bids appended to the CSV file (and fsynced) by this process")?,
        };
        let duplicates = IntCounter::new("auction_consumer_duplicates_total", "Bids found already stored (redeliveries), not written again")?;
        let batch_size = Histogram::with_opts(HistogramOpts::new("auction_consumer_batch_size", "Bids per batch written").buckets(BATCH_BUCKETS.to_vec()))?;
        let write_latency = Histogram::with_opts(
            HistogramOpts::new("auction_consumer_write_latency_seconds", "One successful write of a batch, until it is durable")
                .buckets(WRITE_BUCKETS.to_vec()),
        )?;
        let retries = IntCounterVec::new(Opts::new("auction_consumer_retries_total", "Failed attempts that will be retried, by cause"), &["cause"])?;
        let dead_letters =
            IntCounterVec::new(Opts::new("auction_consumer_dead_letters_total", "Messages sent to the dead-letter topic, by class"), &["class"])?;
        let lag = IntGaugeVec::new(
            Opts::new("auction_consumer_lag", "Per assigned partition: its end offset minus this consumer's position"),
            &["partition"],
        )?;
        let assigned = IntGauge::new("auction_consumer_assigned_partitions", "Partitions this member of the group holds")?;
        registry.register(Box::new(written.clone()))?;
        registry.register(Box::new(duplicates.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(write_latency.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(dead_letters.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        registry.register(Box::new(assigned.clone()))?;
        Ok(Self {
            registry,
            written,
            duplicates,
            batch_size,
            write_latency,
            retries,
            dead_letters,
            lag,
            lag_partitions: Mutex::new(BTreeSet::new()),
            assigned,
        })
    }

    pub fn retried(&self, cause: &str) {
        self.retries.with_label_values(&[cause]).inc();
    }

    pub fn dead_letter(&self, class: &str) {
        self.dead_letters.with_label_values(&[class]).inc();
    }

    /// The partitions held now: the lag of the others is removed, not left at its last value.
    pub fn assigned(&self, partitions: &[i32]) {
        self.assigned.set(partitions.len() as i64);
        self.set_lag(partitions, &[]);
    }

    /// Sets the lag of `lags` and drops the lag of every partition not in `keep`.
    fn set_lag(&self, keep: &[i32], lags: &[(i32, i64)]) {
        let Ok(mut known) = self.lag_partitions.lock() else { return };
        for &(partition, lag) in lags {
            self.lag.with_label_values(&[&partition.to_string()]).set(lag);
            known.insert(partition);
        }
        known.retain(|p| {
            let held = keep.contains(p);
            if !held {
                let _ = self.lag.remove_label_values(&[&p.to_string()]);
            }
            held
        });
    }

    /// Takes librdkafka's statistics (JSON) for `topic`: the lag of each partition in `assigned`.
    pub fn lag_from_stats(&self, json: &[u8], topic: &str, assigned: &[i32]) {
        match serde_json::from_slice::<Stats>(json) {
            Ok(stats) => {
                let lags: Vec<(i32, i64)> = stats
                    .topics
                    .get(topic)
                    .map(|t| t.partitions.values().filter(|p| assigned.contains(&p.partition)).filter_map(|p| Some((p.partition, p.lag()?))).collect())
                    .unwrap_or_default();
                self.set_lag(assigned, &lags);
            }
            Err(e) => log::debug!("librdkafka statistics not understood: {e}"),
        }
    }

    fn render(&self) -> prometheus::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(4096);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

/// The part of librdkafka's statistics (STATISTICS.md) the lag is computed from.
#[derive(Deserialize)]
struct Stats {
    #[serde(default)]
    topics: HashMap<String, TopicStats>,
}

#[derive(Deserialize)]
struct TopicStats {
    #[serde(default)]
    partitions: HashMap<String, PartitionStats>,
}

/// Offsets as librdkafka reports them; negative means not known (yet).
#[derive(Deserialize)]
struct PartitionStats {
    partition: i32,
    /// The next offset the application will be handed: the consumer's position.
    app_offset: i64,
    committed_offset: i64,
    lo_offset: i64,
    hi_offset: i64,
    /// The last stable offset: the end a read_committed consumer (librdkafka's default) reads to.
    ls_offset: i64,
}

impl PartitionStats {
    /// End minus position. Before anything was handed over since the assignment, the position
    /// is where the group resumes (its committed offset); with neither known, an empty
    /// partition has no lag and any other is not known yet.
    fn lag(&self) -> Option<i64> {
        let end = if self.ls_offset >= 0 { self.ls_offset } else { self.hi_offset };
        if end < 0 {
            return None;
        }
        let position = [self.app_offset, self.committed_offset].into_iter().find(|&o| o >= 0);
        match position {
            Some(p) => Some((end - p).max(0)),
            None if end == self.lo_offset => Some(0),
            None => None,
        }
    }
}

/// The body of `/readyz`; every field is documented in README ("Watching the consumers").
#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// `db-writer` or `file-backup`; null until the consumer loop has started.
    pub role: Option<&'static str>,
    pub group: Option<String>,
    pub topic: Option<String>,
    pub assigned_partitions: Vec<i32>,
    /// When a batch was last made durable (RFC 3339 UTC, microseconds); null before the first.
    pub last_write_at: Option<String>,
    /// MySQL rows inserted (db-writer) or CSV lines appended (file-backup) by this process.
    pub rows_written: u64,
    pub duplicates: u64,
    pub dead_letters: u64,
    /// Why the consumer is holding its batch, if it is.
    pub stalled: Option<String>,
}

impl Readiness {
    pub fn of(status: &ConsumerStatus) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let running = status.running();
        let assigned_partitions = status.assigned_partitions();
        let stalled = status.stalled();
        Self {
            ready: running.is_some() && !assigned_partitions.is_empty() && stalled.is_none(),
            role: running.map(|r| r.role.as_str()),
            group: running.map(|r| r.group.clone()),
            topic: running.map(|r| r.topic.clone()),
            assigned_partitions,
            last_write_at: status.last_write().map(|t| auction_common::domain::format_ts(&t)),
            rows_written: status.written.load(Relaxed),
            duplicates: status.duplicates.load(Relaxed),
            dead_letters: status.dead_letters.load(Relaxed),
            stalled,
        }
    }
}

async fn readyz(status: web::Data<ConsumerStatus>) -> HttpResponse {
    let readiness = Readiness::of(&status);
    if readiness.ready {
        HttpResponse::Ok().json(readiness)
    } else {
        HttpResponse::ServiceUnavailable().json(readiness)
    }
}

async fn metrics(status: web::Data<ConsumerStatus>) -> HttpResponse {
    // Before the loop starts there is nothing to count yet: an empty exposition.
    let rendered = status.running().map_or(Ok(Vec::new()), |r| r.metrics.render());
    match rendered {
        Ok(body) => HttpResponse::Ok().insert_header((header::CONTENT_TYPE, TextEncoder::new().format_type())).body(body),
        Err(e) => {
            log::error!("encoding the metrics failed: {e}");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// The consumer's HTTP endpoint: one worker thread, stopped with the consumer.
pub struct MetricsServer {
    address: SocketAddr,
    handle: ServerHandle,
    task: JoinHandle<std::io::Result<()>>,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port) and serves `/metrics` and `/readyz` of `status`.
    pub fn start(addr: &str, status: Arc<ConsumerStatus>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).with_context(|| format!("Failed to bind the metrics address {addr}"))?;
        let address = listener.local_addr()?;
        let status = web::Data::from(status);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(status.clone())
                .route("/metrics", web::get().to(metrics))
                .route("/readyz", web::get().to(readyz))
        })
        .workers(1)
        // The consumer handles SIGTERM and SIGINT itself (finish the batch, commit, leave).
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        log::info!("metrics on http://{address}/metrics, readiness on http://{address}/readyz");
        Ok(Self { address, handle, task })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
        if let Err(e) = self.task.await {
            log::warn!("the metrics server ended abnormally: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(app: i64, committed: i64, lo: i64, hi: i64) -> PartitionStats {
        PartitionStats { partition: 0, app_offset: app, committed_offset: committed, lo_offset: lo, hi_offset: hi, ls_offset: hi }
    }

    #[test]
    fn lag_is_the_end_minus_the_position_or_the_committed_offset_before_any_message() {
        assert_eq!(partition(40, 30, 0, 50).lag(), Some(10));
        assert_eq!(partition(-1001, 30, 0, 50).lag(), Some(20), "nothing handed over yet: from the committed offset");
        assert_eq!(partition(-1001, -1001, 7, 7).lag(), Some(0), "an empty partition");
        assert_eq!(partition(-1001, -1001, 0, 7).lag(), None, "not known yet");
        assert_eq!(partition(5, -1001, 0, -1).lag(), None, "no end known");
    }

    #[test]
    fn lag_comes_from_librdkafka_statistics_for_assigned_partitions_only() {
        let m = ConsumerMetrics::new(Role::DbWriter, "g").unwrap();
        let p = |n: i32, app: i64, hi: i64| {
            format!(r#""{n}":{{"partition":{n},"app_offset":{app},"committed_offset":-1001,"lo_offset":0,"hi_offset":{hi},"ls_offset":{hi},"fetch_state":"active"}}"#)
        };
        let json = format!(r#"{{"name":"c","topics":{{"bids":{{"topic":"bids","partitions":{{{},{},{}}}}}}}}}"#, p(0, 3, 10), p(1, 5, 5), p(-1, -1001, -1001));
        m.lag_from_stats(json.as_bytes(), "bids", &[0, 1]);
        let text = String::from_utf8(m.render().unwrap()).unwrap();
        assert!(text.contains(r#"auction_consumer_lag{partition="0",group="g"} 7"#), "{text}");
        assert!(text.contains(r#"auction_consumer_lag{partition="1",group="g"} 0"#), "{text}");
        m.assigned(&[1]);
        let text = String::from_utf8(m.render().unwrap()).unwrap();
        assert!(!text.contains(r#"partition="0""#), "a partition no longer held leaves the gauge: {text}");
        assert!(text.contains(r#"auction_consumer_assigned_partitions{group="g"} 1"#), "{text}");
    }
}
