//! The pipeline's health and the figures the dashboard charts, gathered by one task per web
//! process every [`EVERY`] (the top bidders every [`TOP_EVERY`]) and handed to the feed, so
//! open dashboards add nothing to the load on Kafka or MySQL.
//!
//! - Lag per consumer group (`DASHBOARD_CONSUMER_GROUPS`): end offset minus committed offset,
//!   summed over the topic's partitions, read from Kafka as `auction-consumer status` does.
//! - Rows written per second: how fast the bid count of `auction_standing` (kept by the
//!   db-writer in the same transaction as the bid rows) grows, and the newest `bid_ts` there:
//!   how far behind MySQL is.
//! - The newest line of the CSV backup (`BACKUP_CSV`), when this machine can read the file:
//!   its last line only, so the cost does not grow with the file.
//! - Bids per minute over the last hour (`bids_per_minute`) and the top bidders
//!   (`bidder_activity`), the summaries the db-writer keeps.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auction_common::config::KafkaConfig;
use auction_common::domain::format_ts;
use auction_common::kafka;
use chrono::{DateTime, NaiveDateTime, TimeZone, Timelike, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio::sync::watch;

use crate::store::{Store, StoreError};

/// How often the health is gathered.
pub const EVERY: Duration = Duration::from_secs(2);
/// How often the top bidders are read (a scan of `bidder_activity`).
const TOP_EVERY: Duration = Duration::from_secs(10);
/// Most bidders listed.
pub const TOP_BIDDERS: usize = 10;
/// Kafka calls' limit.
const KAFKA_LIMIT: Duration = Duration::from_secs(3);
/// How much of the CSV's end is read to find its last line.
const CSV_TAIL_BYTES: u64 = 16 * 1024;

/// The dashboard's settings.
#[derive(clap::Args, Debug, Clone)]
pub struct DashboardConfig {
    /// Consumer groups whose lag `/dashboard` shows, comma-separated.
    #[arg(long = "dashboard-consumer-groups", env = "DASHBOARD_CONSUMER_GROUPS", default_value = "bid-db-writers,bid-file-backup", value_delimiter = ',')]
    pub consumer_groups: Vec<String>,
    /// The file-backup's CSV, if this machine can read it: `/dashboard` shows how old its
    /// newest line is (unset: "not visible from this web process").
    #[arg(long = "backup-csv", env = "BACKUP_CSV")]
    pub backup_csv: Option<PathBuf>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self { consumer_groups: vec!["bid-db-writers".into(), "bid-file-backup".into()], backup_csv: None }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    /// When this was gathered (UTC).
    pub checked_at: Option<String>,
    pub groups: Vec<GroupLag>,
    /// Bids recorded in MySQL per second over the last interval.
    pub rows_per_second: Option<f64>,
    pub mysql_bids: Option<u64>,
    /// The newest bid in MySQL.
    pub newest_row: Option<Moment>,
    pub csv: CsvHealth,
    /// The last 60 minutes, oldest first; minutes without bids are there with 0.
    pub bids_per_minute: Vec<MinuteCount>,
    pub top_bidders: Vec<BidderCount>,
    /// Why the MySQL figures are missing or old, if they are.
    pub database_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupLag {
    pub group: String,
    /// Messages not yet processed, over every partition; None if unknown.
    pub lag: Option<i64>,
    pub partitions: usize,
    /// Partitions the group has committed nothing for yet (their whole log counts as lag).
    pub uncommitted: usize,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Moment {
    pub ts: String,
    pub ms: i64,
}

impl Moment {
    fn new(at: DateTime<Utc>) -> Self {
        Self { ts: format_ts(&at), ms: at.timestamp_millis() }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CsvHealth {
    /// Whether this web process knows where the CSV is.
    pub visible: bool,
    pub newest_line: Option<Moment>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MinuteCount {
    /// The minute's start, UTC, "HH:MM".
    pub minute: String,
    pub ms: i64,
    pub bids: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BidderCount {
    pub name: String,
    pub bids: u64,
}

pub type HealthWatch = watch::Receiver<Health>;

/// Starts the gathering task; it ends when `stop` turns true.
pub fn spawn(store: Arc<Store>, kafka_config: KafkaConfig, config: DashboardConfig, mut stop: watch::Receiver<bool>) -> HealthWatch {
    let (sender, receiver) = watch::channel(Health::default());
    tokio::spawn(async move {
        let mut gatherer = Gatherer { store, kafka_config, config, consumers: Vec::new(), last_count: None, top: (None, Vec::new()), logged: HashMap::new() };
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            let health = gatherer.gather().await;
            if sender.send(health).is_err() {
                return;
            }
        }
    });
    receiver
}

struct Gatherer {
    store: Arc<Store>,
    kafka_config: KafkaConfig,
    config: DashboardConfig,
    /// One per group, made once (it never joins its group: it only reads committed offsets).
    consumers: Vec<(String, Option<Arc<BaseConsumer>>)>,
    /// The bid count and when it was read, for the rate.
    last_count: Option<(u64, Instant)>,
    /// When the top bidders were last read, and what they were.
    top: (Option<Instant>, Vec<BidderCount>),
    /// Per source, the last problem logged and when: logged again once it changes or a minute passed.
    logged: HashMap<&'static str, (String, Instant)>,
}

impl Gatherer {
    fn log_once(&mut self, source: &'static str, problem: String) {
        let repeat = self.logged.get(source).is_some_and(|(last, at)| *last == problem && at.elapsed() < Duration::from_secs(60));
        if !repeat {
            log::warn!("{problem}");
            self.logged.insert(source, (problem, Instant::now()));
        }
    }

    async fn gather(&mut self) -> Health {
        let now = Utc::now();
        let mut health = Health { checked_at: Some(format_ts(&now)), ..Health::default() };
        health.groups = self.lags().await;
        for group in &mut health.groups {
            if let Some(error) = group.error.take() {
                self.log_once("kafka", format!("dashboard: lag of group {}: {error}", group.group));
                group.error = Some("Kafka did not say; see the web process's log".into());
            }
        }
        let mut database_errors = Vec::new();
        match self.store.bid_totals().await {
            Ok((count, newest)) => {
                let read_at = Instant::now();
                if let Some((before, at)) = self.last_count {
                    let secs = read_at.duration_since(at).as_secs_f64();
                    if secs > 0.0 {
                        health.rows_per_second = Some(count.saturating_sub(before) as f64 / secs);
                    }
                }
                self.last_count = Some((count, read_at));
                health.mysql_bids = Some(count);
                health.newest_row = newest.map(Moment::new);
            }
            Err(e) => database_errors.push(e),
        }
        let hour_ago = now - chrono::Duration::minutes(59);
        let first_minute = hour_ago.with_second(0).and_then(|t| t.with_nanosecond(0)).unwrap_or(hour_ago);
        match self.store.bids_per_minute(first_minute.naive_utc()).await {
            Ok(counts) => health.bids_per_minute = every_minute(first_minute, &counts),
            Err(e) => database_errors.push(e),
        }
        if self.top.0.is_none_or(|at| at.elapsed() >= TOP_EVERY) {
            match self.store.top_bidders(TOP_BIDDERS).await {
                Ok(top) => self.top = (Some(Instant::now()), top.into_iter().map(|(name, bids)| BidderCount { name, bids }).collect()),
                Err(e) => database_errors.push(e),
            }
        }
        health.top_bidders = self.top.1.clone();
        // Every visitor of /dashboard sees these: what failed, never how (user names, addresses
        // and paths go to this process's log only).
        health.database_error = database_errors.first().map(|e: &StoreError| {
            self.log_once("mysql", format!("dashboard: MySQL: {e}"));
            "The auction database is not answering; the web process's log says why.".to_owned()
        });
        health.csv = match &self.config.backup_csv {
            None => CsvHealth::default(),
            Some(path) => {
                let path = path.clone();
                match tokio::task::spawn_blocking(move || newest_csv_line(&path)).await {
                    Ok(Ok(newest)) => CsvHealth { visible: true, newest_line: newest.map(Moment::new), error: None },
                    Ok(Err(e)) => {
                        self.log_once("csv", format!("dashboard: the CSV backup cannot be read: {e}"));
                        CsvHealth { visible: true, newest_line: None, error: Some("see the web process's log".into()) }
                    }
                    Err(e) => CsvHealth { visible: true, newest_line: None, error: Some(e.to_string()) },
                }
            }
        };
        health
    }

    async fn lags(&mut self) -> Vec<GroupLag> {
        if self.consumers.is_empty() {
            for group in &self.config.consumer_groups {
                let consumer = kafka::client_config(&self.kafka_config)
                    .set("group.id", group)
                    .set("enable.auto.commit", "false")
                    .create::<BaseConsumer>()
                    .map_err(|e| log::warn!("dashboard: no Kafka client for group {group}: {}", kafka::describe(&e)))
                    .ok()
                    .map(Arc::new);
                self.consumers.push((group.clone(), consumer));
            }
        }
        let mut lags = Vec::with_capacity(self.consumers.len());
        for (group, consumer) in &self.consumers {
            let Some(consumer) = consumer else {
                lags.push(GroupLag { group: group.clone(), lag: None, partitions: 0, uncommitted: 0, error: Some("no Kafka client".into()) });
                continue;
            };
            let (consumer, topic, name) = (Arc::clone(consumer), self.kafka_config.topic.clone(), group.clone());
            let lag = tokio::task::spawn_blocking(move || group_lag(&consumer, &topic, &name)).await;
            lags.push(lag.unwrap_or_else(|e| GroupLag { group: group.clone(), lag: None, partitions: 0, uncommitted: 0, error: Some(e.to_string()) }));
        }
        lags
    }
}

fn group_lag(consumer: &BaseConsumer, topic: &str, group: &str) -> GroupLag {
    let failed = |error: String| GroupLag { group: group.to_owned(), lag: None, partitions: 0, uncommitted: 0, error: Some(error) };
    let metadata = match consumer.fetch_metadata(Some(topic), KAFKA_LIMIT) {
        Ok(m) => m,
        Err(e) => return failed(format!("Kafka: {e}")),
    };
    let partitions: Vec<i32> = metadata.topics().first().map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
    if partitions.is_empty() {
        return failed(format!("topic {topic} has no partitions yet"));
    }
    let mut list = TopicPartitionList::new();
    for &p in &partitions {
        list.add_partition(topic, p);
    }
    let committed = match consumer.committed_offsets(list, KAFKA_LIMIT) {
        Ok(c) => c,
        Err(e) => return failed(format!("committed offsets: {e}")),
    };
    let (mut lag, mut uncommitted) = (0i64, 0usize);
    for &p in &partitions {
        let (low, high) = match consumer.fetch_watermarks(topic, p, KAFKA_LIMIT) {
            Ok(w) => w,
            Err(e) => return failed(format!("end offsets: {e}")),
        };
        match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(at)) => lag += (high - at).max(0),
            _ => {
                uncommitted += 1;
                lag += (high - low).max(0);
            }
        }
    }
    GroupLag { group: group.to_owned(), lag: Some(lag), partitions: partitions.len(), uncommitted, error: None }
}

/// The 60 minutes from `first`, each with its count (0 where MySQL has none).
fn every_minute(first: DateTime<Utc>, counts: &[(NaiveDateTime, u64)]) -> Vec<MinuteCount> {
    (0..60)
        .map(|i| {
            let minute = first + chrono::Duration::minutes(i);
            let bids = counts.iter().find(|(m, _)| Utc.from_utc_datetime(m) == minute).map_or(0, |(_, n)| *n);
            MinuteCount { minute: minute.format("%H:%M").to_string(), ms: minute.timestamp_millis(), bids }
        })
        .collect()
}

/// The `bid_ts` of the CSV's last line (None while it holds only its header).
fn newest_csv_line(path: &Path) -> Result<Option<DateTime<Utc>>, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let start = len.saturating_sub(CSV_TAIL_BYTES);
    file.seek(SeekFrom::Start(start)).map_err(|e| e.to_string())?;
    let mut tail = String::new();
    file.take(CSV_TAIL_BYTES).read_to_string(&mut tail).map_err(|e| format!("{}: {e}", path.display()))?;
    let Some(line) = tail.lines().rev().find(|l| !l.trim().is_empty()) else { return Ok(None) };
    if line.starts_with("bid_id,") {
        return Ok(None);
    }
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(line.as_bytes());
    let record = reader.records().next().ok_or("the last line is empty")?.map_err(|e| e.to_string())?;
    // Columns: bid_id, auction_id, name, price, bid_ts, topic, partition, offset.
    let ts = record.get(4).ok_or("the last line has no bid_ts")?;
    DateTime::parse_from_rfc3339(ts).map(|t| Some(t.with_timezone(&Utc))).map_err(|e| format!("bid_ts {ts:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csv_age_comes_from_its_last_line_and_a_header_alone_has_none() {
        let dir = std::env::temp_dir().join(format!("health-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bids.csv");
        std::fs::write(&path, "bid_id,auction_id,name,price,bid_ts,topic,partition,offset\n").unwrap();
        assert_eq!(newest_csv_line(&path), Ok(None));
        std::fs::write(
            &path,
            "bid_id,auction_id,name,price,bid_ts,topic,partition,offset\n\
             a,1,\"Ann, \"\"the\"\" bidder\",10.00,2026-12-03T08:00:00.000001Z,bids,0,0\n\
             b,1,Bob,11.00,2026-12-03T08:00:01.250000Z,bids,0,1\n",
        )
        .unwrap();
        let newest = newest_csv_line(&path).unwrap().unwrap();
        assert_eq!(format_ts(&newest), "2026-12-03T08:00:01.250000Z");
        assert!(newest_csv_line(&dir.join("missing.csv")).unwrap_err().contains("missing.csv"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn every_minute_of_the_hour_is_listed_with_zero_where_there_were_no_bids() {
        let first = Utc.with_ymd_and_hms(2026, 12, 3, 8, 0, 0).unwrap();
        let counts = vec![(first.naive_utc() + chrono::Duration::minutes(2), 7)];
        let minutes = every_minute(first, &counts);
        assert_eq!(minutes.len(), 60);
        assert_eq!((minutes[0].minute.as_str(), minutes[0].bids), ("08:00", 0));
        assert_eq!((minutes[2].minute.as_str(), minutes[2].bids), ("08:02", 7));
        assert_eq!(minutes[59].minute, "08:59");
    }
}
