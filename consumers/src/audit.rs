//! `auction-consumer audit`: checks that every bid in Kafka is in MySQL table `bid` and in the
//! CSV audit file, exactly once.
//!
//! What it guarantees, and how:
//! - The bids audited are a snapshot: the end offset of every partition is captured at start
//!   and the topic is read up to it (from the beginning, or with `--since` from the first
//!   offset at that time), without a consumer group. Bids produced later are not audited, and
//!   MySQL rows and CSV lines accepted after the snapshot are left out of the comparison.
//! - With `--since`, a bid is audited when its `bid_ts` is at or after that time, in Kafka, in
//!   MySQL and in the CSV alike, so the three are compared over the same bids.
//! - A bid in Kafka but not (yet) in MySQL or the CSV may only be lagging: while any is
//!   missing, the missing ones are looked up again every second (MySQL by `bid_id`, the CSV
//!   from where it was read to), for up to `--settle-secs`, before they count as missing.
//! - Exit 0 when every audited bid is in MySQL and in the CSV and no `bid_id` is there twice;
//!   exit 1 otherwise, naming up to 20 bids of each kind. Messages that are not bids, a bid
//!   repeated in Kafka (a producer retry after an unknown outcome; consumers deduplicate by
//!   `bid_id`), re-published dead letters, and rows not in Kafka (older than the topic's
//!   retention, or a recreated topic) are reported but are not failures.
//!
//! Cost: memory is one 17-byte entry (plus hash-table slack) per distinct bid in Kafka, and one
//! per MySQL row or CSV line that is not in Kafka; MySQL rows are streamed and the CSV is read
//! line by line. It copes with millions of bids.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use auction_common::config::{DatabaseConfig, KafkaConfig, RegistryConfig};
use auction_common::domain::format_ts;
use auction_common::registry::BidDecoder;
use auction_common::retry::Backoff;
use auction_common::Bid;
use chrono::{DateTime, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::{Pool, Row, Value};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use uuid::Uuid;

use crate::dlq::{self, json, SnapshotReader};

#[derive(clap::Args, Debug, Clone)]
pub struct AuditArgs {
    #[command(flatten)]
    pub kafka: KafkaConfig,
    #[command(flatten)]
    pub registry: RegistryConfig,
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// The CSV audit file written by file-backup (it may not exist: then every bid is missing from it).
    #[arg(long = "backup-csv", env = "BACKUP_CSV", default_value = "data/bids.csv")]
    pub backup_csv: PathBuf,
    /// Audit only bids accepted at or after this time, RFC 3339 (e.g. 2025-06-01T12:00:00Z).
    /// Default: every bid the topic still holds.
    #[arg(long = "since", env = "AUDIT_SINCE", value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// How long bids missing from MySQL or the CSV may take to arrive (consumer lag) before
    /// they count as missing, in seconds.
    #[arg(long = "settle-secs", env = "AUDIT_SETTLE_SECS", default_value_t = 30)]
    pub settle_secs: u64,
    /// Print one JSON object instead of the report.
    #[arg(long = "json", env = "AUDIT_JSON")]
    pub json: bool,
}

fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{e}: expected an RFC 3339 time such as 2025-06-01T12:00:00Z"))
}

/// Runs the audit, prints the report (or JSON), and fails when a bid is missing or doubled.
pub async fn run_command(args: AuditArgs, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let summary = audit(&args, &shutdown).await?;
    if args.json {
        println!("{}", summary.to_json());
    } else {
        print!("{summary}");
    }
    if !summary.passed() {
        bail!("audit failed: {}", summary.problems().join("; "));
    }
    Ok(())
}

/// How many ids each list in the report names.
pub const SHOWN_IDS: usize = 20;
/// Above this many missing bids, a recheck re-reads the whole table rather than asking by id.
const RECHECK_BY_ID_MAX: usize = 10_000;
/// How long the registry may stay unreachable while decoding before the audit gives up.
const REGISTRY_PATIENCE: Duration = Duration::from_secs(60);

/// What the audit found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSummary {
    pub topic: String,
    pub partitions: usize,
    pub since: Option<DateTime<Utc>>,
    /// When the end offsets were captured; later bids are not audited.
    pub snapshot_at: DateTime<Utc>,
    pub kafka: KafkaCounts,
    pub mysql: SinkReport,
    pub csv: SinkReport,
    /// How long the audit waited for lagging bids.
    pub waited: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaCounts {
    /// Messages read (up to the snapshot).
    pub messages: u64,
    /// Distinct `bid_id`s audited.
    pub bids: u64,
    /// Messages that do not decode as a bid (they went, or will go, to the dead-letter topic).
    pub not_bids: u64,
    /// Distinct bids that are in the topic more than once.
    pub repeated_bids: u64,
    /// Messages carrying a bid already seen.
    pub repeated_messages: u64,
    /// Messages that are re-published dead letters (header `dlq.replay.group`).
    pub replayed_messages: u64,
    /// Bids read but accepted before `--since`.
    pub before_since: u64,
}

/// One copy (MySQL or the CSV) compared with Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkReport {
    /// "MySQL" or "CSV <path>".
    pub name: String,
    /// False when the CSV file does not exist.
    pub exists: bool,
    /// Rows (lines) in the audited time range.
    pub rows: u64,
    /// Bids in Kafka that are not here.
    pub missing: u64,
    /// The first missing ones, oldest first.
    pub missing_ids: Vec<String>,
    /// `bid_id`s here more than once.
    pub duplicated: u64,
    pub duplicated_ids: Vec<String>,
    /// Distinct `bid_id`s here that are not in Kafka (informational).
    pub not_in_kafka: u64,
    /// Rows whose `bid_id` or `bid_ts` does not parse.
    pub malformed: u64,
}

impl SinkReport {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.duplicated == 0
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.missing > 0 {
            problems.push(format!("{} missing from {}", dlq::count(self.missing, "bid"), self.name));
        }
        if self.duplicated > 0 {
            problems.push(format!("{} more than once in {}", dlq::count(self.duplicated, "bid"), self.name));
        }
        problems
    }

    fn to_json(&self) -> String {
        json::Object::new()
            .str("name", &self.name)
            .bool("exists", self.exists)
            .num("rows", self.rows)
            .num("missing", self.missing)
            .raw("missing_ids", &json::strings(&self.missing_ids))
            .num("duplicated", self.duplicated)
            .raw("duplicated_ids", &json::strings(&self.duplicated_ids))
            .num("not_in_kafka", self.not_in_kafka)
            .num("malformed", self.malformed)
            .finish()
    }
}

impl AuditSummary {
    /// Nothing missing from, and nothing doubled in, MySQL or the CSV.
    pub fn passed(&self) -> bool {
        self.mysql.ok() && self.csv.ok()
    }

    pub fn problems(&self) -> Vec<String> {
        [self.mysql.problems(), self.csv.problems()].concat()
    }

    pub fn to_json(&self) -> String {
        let k = &self.kafka;
        let kafka = json::Object::new()
            .num("messages", k.messages)
            .num("bids", k.bids)
            .num("not_bids", k.not_bids)
            .num("repeated_bids", k.repeated_bids)
            .num("repeated_messages", k.repeated_messages)
            .num("replayed_messages", k.replayed_messages)
            .num("before_since", k.before_since)
            .finish();
        json::Object::new()
            .str("topic", &self.topic)
            .num("partitions", self.partitions)
            .opt_str("since", self.since.as_ref().map(format_ts).as_deref())
            .str("snapshot_at", &format_ts(&self.snapshot_at))
            .raw("kafka", &kafka)
            .raw("mysql", &self.mysql.to_json())
            .raw("csv", &self.csv.to_json())
            .num("waited_ms", self.waited.as_millis())
            .bool("passed", self.passed())
            .raw("problems", &json::strings(&self.problems()))
            .finish()
    }
}

/// `ids` as an indented list, then "and N more" when `total` is larger.
fn write_ids(f: &mut fmt::Formatter<'_>, ids: &[String], total: u64) -> fmt::Result {
    for id in ids {
        writeln!(f, "      {id}")?;
    }
    if total > ids.len() as u64 {
        writeln!(f, "      and {} more", total - ids.len() as u64)?;
    }
    Ok(())
}

impl fmt::Display for AuditSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.kafka;
        write!(f, "audit of topic {} ({} partitions) up to its end at {}", self.topic, self.partitions, format_ts(&self.snapshot_at))?;
        match self.since {
            Some(since) => writeln!(f, ", bids since {}", format_ts(&since))?,
            None => writeln!(f)?,
        }
        writeln!(f, "  bids in Kafka:               {} distinct, in {} messages", k.bids, k.messages)?;
        writeln!(f, "  messages that are not bids:  {}", k.not_bids)?;
        writeln!(
            f,
            "  repeated in Kafka:           {} bids, {} extra messages (informational: a producer retry; consumers deduplicate by bid_id)",
            k.repeated_bids, k.repeated_messages
        )?;
        writeln!(f, "  re-published dead letters:   {}", k.replayed_messages)?;
        if self.since.is_some() {
            writeln!(f, "  bids before --since:         {} (not audited)", k.before_since)?;
        }
        for sink in [&self.mysql, &self.csv] {
            let absent = if sink.exists { "" } else { " (the file does not exist)" };
            writeln!(f, "  in {}: {}{absent}", sink.name, sink.rows)?;
        }
        for sink in [&self.mysql, &self.csv] {
            writeln!(f, "  missing from {}: {}", sink.name, sink.missing)?;
            write_ids(f, &sink.missing_ids, sink.missing)?;
        }
        for sink in [&self.mysql, &self.csv] {
            writeln!(f, "  duplicated in {}: {}", sink.name, sink.duplicated)?;
            write_ids(f, &sink.duplicated_ids, sink.duplicated)?;
        }
        for sink in [&self.mysql, &self.csv] {
            writeln!(
                f,
                "  in {} but not in Kafka: {} (informational: older than the topic's retention, or the topic was recreated)",
                sink.name, sink.not_in_kafka
            )?;
            if sink.malformed > 0 {
                writeln!(f, "  rows of {} whose bid_id or bid_ts does not parse: {}", sink.name, sink.malformed)?;
            }
        }
        if self.waited > Duration::ZERO {
            writeln!(f, "  waited {:.1} s for lagging consumers", self.waited.as_secs_f64())?;
        }
        if self.passed() {
            writeln!(f, "result: OK, every bid in Kafka is in MySQL and in the CSV exactly once")
        } else {
            writeln!(f, "result: FAILED, {}", self.problems().join("; "))
        }
    }
}

type Id = [u8; 16];

fn id_text(id: &Id) -> String {
    Uuid::from_bytes(*id).hyphenated().to_string()
}

fn parse_id(text: &[u8]) -> Option<Id> {
    Uuid::try_parse_ascii(text).ok().map(Uuid::into_bytes)
}

/// Per bid in Kafka, a byte of flags: repeated in Kafka, and seen (twice) in each copy.
const REPEATED: u8 = 1;

/// MySQL or the CSV.
#[derive(Debug, Clone, Copy)]
enum Target {
    MySql,
    Csv,
}

impl Target {
    fn seen(self) -> u8 {
        match self {
            Target::MySql => 2,
            Target::Csv => 8,
        }
    }

    fn doubled(self) -> u8 {
        self.seen() << 1
    }
}

/// The bids read from Kafka.
struct KafkaBids {
    flags: HashMap<Id, u8>,
    counts: KafkaCounts,
    latest_bid_ts: Option<DateTime<Utc>>,
}

impl KafkaBids {
    fn missing_from(&self, copy: Target) -> usize {
        self.flags.values().filter(|f| *f & copy.seen() == 0).count()
    }

    fn missing_ids(&self, copy: Target) -> Vec<Id> {
        self.flags.iter().filter(|(_, f)| *f & copy.seen() == 0).map(|(id, _)| *id).collect()
    }
}

/// One copy's rows compared with the Kafka bids, as they are read.
struct Tally {
    copy: Target,
    rows: u64,
    malformed: u64,
    /// Rows not in Kafka, with whether they were seen twice.
    outside: HashMap<Id, bool>,
    duplicated: u64,
    duplicated_ids: Vec<Id>,
}

impl Tally {
    fn new(copy: Target) -> Self {
        Self { copy, rows: 0, malformed: 0, outside: HashMap::new(), duplicated: 0, duplicated_ids: Vec::new() }
    }

    /// Forgets everything read, to read the copy again from the start.
    fn reset(&mut self, kafka: &mut KafkaBids) {
        let mask = !(self.copy.seen() | self.copy.doubled());
        kafka.flags.values_mut().for_each(|f| *f &= mask);
        *self = Self::new(self.copy);
    }

    fn visit(&mut self, kafka: &mut KafkaBids, id: Id) {
        self.rows += 1;
        let (seen, doubled) = (self.copy.seen(), self.copy.doubled());
        let newly_doubled = match kafka.flags.get_mut(&id) {
            Some(f) if *f & seen == 0 => {
                *f |= seen;
                false
            }
            Some(f) => {
                let newly = *f & doubled == 0;
                *f |= doubled;
                newly
            }
            None => match self.outside.entry(id) {
                Entry::Vacant(e) => {
                    e.insert(false);
                    false
                }
                Entry::Occupied(mut e) => !std::mem::replace(e.get_mut(), true),
            },
        };
        if newly_doubled {
            self.duplicated += 1;
            if self.duplicated_ids.len() < SHOWN_IDS {
                self.duplicated_ids.push(id);
            }
        }
    }

    fn report(&self, name: String, exists: bool, kafka: &KafkaBids) -> SinkReport {
        let mut missing = kafka.missing_ids(self.copy);
        missing.sort_unstable();
        SinkReport {
            name,
            exists,
            rows: self.rows,
            missing: missing.len() as u64,
            missing_ids: missing.iter().take(SHOWN_IDS).map(id_text).collect(),
            duplicated: self.duplicated,
            duplicated_ids: self.duplicated_ids.iter().map(id_text).collect(),
            not_in_kafka: self.outside.len() as u64,
            malformed: self.malformed,
        }
    }
}

/// The `bid_ts` range compared: from `--since` to the snapshot.
#[derive(Debug, Clone, Copy)]
struct Window {
    since: Option<DateTime<Utc>>,
    until: DateTime<Utc>,
}

impl Window {
    fn contains(&self, ts: DateTime<Utc>) -> bool {
        self.since.is_none_or(|s| ts >= s) && ts <= self.until
    }
}

/// Audits the topic against MySQL and the CSV; see the module doc for what it guarantees.
pub async fn audit(args: &AuditArgs, shutdown: &watch::Receiver<bool>) -> anyhow::Result<AuditSummary> {
    let (mut kafka, partitions, snapshot_at) = read_kafka(args, shutdown).await?;
    // A web host's clock a little ahead must not push its bids out of the compared range.
    let window = Window { since: args.since, until: kafka.latest_bid_ts.map_or(snapshot_at, |t| t.max(snapshot_at)) };

    let pool = auction_common::db::pool(&args.database).with_context(|| format!("Invalid DATABASE_URL {}", args.database.redacted_url()))?;
    let mut mysql = Tally::new(Target::MySql);
    let mut csv = Tally::new(Target::Csv);
    let mut cursor = CsvCursor::new(&args.backup_csv);
    let mut waited = Duration::ZERO;
    let result = async {
        read_mysql(&pool, &window, None, &mut mysql, &mut kafka).await?;
        read_csv(&mut cursor, &window, &mut csv, &mut kafka)?;
        let waiting = Instant::now();
        loop {
            let (missing_mysql, missing_csv) = (kafka.missing_from(Target::MySql), kafka.missing_from(Target::Csv));
            if (missing_mysql == 0 && missing_csv == 0) || waited >= Duration::from_secs(args.settle_secs) {
                return Ok::<_, anyhow::Error>(());
            }
            log::info!("{missing_mysql} bids not in MySQL and {missing_csv} not in the CSV yet; looking again in 1 s");
            sleep_or_stop(Duration::from_secs(1), shutdown).await?;
            waited = waiting.elapsed();
            if missing_mysql > RECHECK_BY_ID_MAX {
                mysql.reset(&mut kafka);
                read_mysql(&pool, &window, None, &mut mysql, &mut kafka).await?;
            } else if missing_mysql > 0 {
                let ids = kafka.missing_ids(Target::MySql);
                read_mysql(&pool, &window, Some(&ids), &mut mysql, &mut kafka).await?;
            }
            if missing_csv > 0 {
                read_csv(&mut cursor, &window, &mut csv, &mut kafka)?;
            }
        }
    }
    .await;
    pool.disconnect().await.ok();
    result?;

    Ok(AuditSummary {
        topic: args.kafka.topic.clone(),
        partitions,
        since: args.since,
        snapshot_at,
        mysql: mysql.report("MySQL".into(), true, &kafka),
        csv: csv.report(format!("CSV {}", args.backup_csv.display()), cursor.exists, &kafka),
        kafka: kafka.counts,
        waited,
    })
}

async fn sleep_or_stop(duration: Duration, shutdown: &watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut shutdown = shutdown.clone();
    if *shutdown.borrow() {
        bail!("interrupted");
    }
    tokio::select! {
        _ = shutdown.changed() => bail!("interrupted"),
        _ = tokio::time::sleep(duration) => Ok(()),
    }
}

/// Reads the topic up to its end offsets at start; returns the bids, the partition count and
/// when the end offsets were captured.
async fn read_kafka(args: &AuditArgs, shutdown: &watch::Receiver<bool>) -> anyhow::Result<(KafkaBids, usize, DateTime<Utc>)> {
    let topic = &args.kafka.topic;
    let consumer = dlq::reading_consumer(&args.kafka, None).context("Failed to create a Kafka consumer")?;
    let bounds = dlq::partition_bounds(&consumer, topic)
        .with_context(|| format!("Failed to read the offsets of topic {topic}"))?
        .ok_or_else(|| anyhow!("topic {topic} does not exist on {}", args.kafka.brokers))?;
    let snapshot_at = Utc::now();
    let mut starts: Vec<(i32, Offset, i64)> = bounds.iter().map(|b| (b.partition, Offset::Beginning, b.high)).collect();
    if let Some(since) = args.since {
        // A minute early: a bid's message is stamped when it is sent, a moment after its bid_ts.
        let from_ms = (since - chrono::Duration::minutes(1)).timestamp_millis();
        let mut asked = TopicPartitionList::new();
        for b in &bounds {
            asked.add_partition_offset(topic, b.partition, Offset::Offset(from_ms)).context("Failed to ask offsets for --since")?;
        }
        let found = consumer
            .offsets_for_times(asked, Duration::from_secs(10))
            .with_context(|| format!("Failed to find the offsets of {topic} at {}", format_ts(&since)))?;
        for (partition, start, _) in &mut starts {
            *start = found.find_partition(topic, *partition).map_or(Offset::Beginning, |e| e.offset());
        }
    }
    let decoder = BidDecoder::new(&args.registry).context("Failed to create the schema registry client")?;
    let mut reader = SnapshotReader::assign(&consumer, topic, &starts).with_context(|| format!("Failed to assign topic {topic}"))?;
    let mut kafka = KafkaBids { flags: HashMap::new(), counts: KafkaCounts::default(), latest_bid_ts: None };
    let mut progress = Instant::now();
    while let Some(m) = reader.next(&consumer, shutdown).await.with_context(|| format!("Failed to read topic {topic}"))? {
        let c = &mut kafka.counts;
        c.messages += 1;
        if m.headers().and_then(|h| dlq::header(h, dlq::REPLAY_GROUP_HEADER)).is_some() {
            c.replayed_messages += 1;
        }
        let where_ = format!("{topic}/{}/{}", m.partition(), m.offset());
        let Some(bid) = decode(&decoder, m.payload(), &where_, shutdown).await? else {
            c.not_bids += 1;
            continue;
        };
        if args.since.is_some_and(|s| bid.bid_ts < s) {
            c.before_since += 1;
            continue;
        }
        kafka.latest_bid_ts = kafka.latest_bid_ts.max(Some(bid.bid_ts));
        match kafka.flags.entry(*bid.bid_id.as_uuid().as_bytes()) {
            Entry::Vacant(e) => {
                e.insert(0);
                c.bids += 1;
            }
            Entry::Occupied(mut e) => {
                c.repeated_messages += 1;
                if *e.get() & REPEATED == 0 {
                    *e.get_mut() |= REPEATED;
                    c.repeated_bids += 1;
                }
            }
        }
        if progress.elapsed() > Duration::from_secs(10) {
            log::info!("read {} messages of {topic} so far ({} bids)", c.messages, c.bids);
            progress = Instant::now();
        }
    }
    Ok((kafka, bounds.len(), snapshot_at))
}

/// The bid in `payload`, `None` if it is not one; waits out an unreachable registry for up to
/// [`REGISTRY_PATIENCE`].
async fn decode(decoder: &BidDecoder, payload: Option<&[u8]>, where_: &str, shutdown: &watch::Receiver<bool>) -> anyhow::Result<Option<Bid>> {
    let started = Instant::now();
    let mut backoff = Backoff::new();
    let mut shutdown = shutdown.clone();
    loop {
        match decoder.decode(payload).await {
            Ok(bid) => return Ok(Some(bid)),
            Err(e) if e.is_retriable() => {
                if started.elapsed() > REGISTRY_PATIENCE {
                    bail!("Failed to decode {where_}: the schema registry was unavailable for {} s: {e}", REGISTRY_PATIENCE.as_secs());
                }
                log::warn!("{where_}: schema registry unavailable, retrying: {e}");
                backoff.wait(&mut shutdown).await.map_err(|_| anyhow!("interrupted"))?;
            }
            Err(e) => {
                log::debug!("{where_}: not a bid: {e}");
                return Ok(None);
            }
        }
    }
}

/// Reads `bid_id`s of table `bid` into `tally`: every row in `window`, or only the rows of `ids`.
async fn read_mysql(pool: &Pool, window: &Window, ids: Option<&[Id]>, tally: &mut Tally, kafka: &mut KafkaBids) -> anyhow::Result<()> {
    let mut conn = pool.get_conn().await.context("Failed to connect to MySQL")?;
    let mut take = |row: Row| match row.get_opt::<Vec<u8>, _>(0).and_then(Result::ok).and_then(|b| parse_id(&b)) {
        Some(id) => tally.visit(kafka, id),
        None => tally.malformed += 1,
    };
    let Some(ids) = ids else {
        let until: Value = window.until.naive_utc().into();
        let (sql, params) = match window.since {
            Some(since) => ("SELECT bid_id FROM bid WHERE bid_ts >= ? AND bid_ts <= ?", vec![since.naive_utc().into(), until]),
            None => ("SELECT bid_id FROM bid WHERE bid_ts <= ?", vec![until]),
        };
        let mut rows = conn.exec_iter(sql, params).await.context("Failed to read table bid")?;
        rows.for_each(&mut take).await.context("Failed to read table bid")?;
        return Ok(());
    };
    for chunk in ids.chunks(500) {
        let sql = format!("SELECT bid_id FROM bid WHERE bid_id IN ({})", vec!["?"; chunk.len()].join(","));
        let params: Vec<Value> = chunk.iter().map(|id| id_text(id).into()).collect();
        let mut rows = conn.exec_iter(sql, params).await.context("Failed to look up missing bids in table bid")?;
        rows.for_each(&mut take).await.context("Failed to look up missing bids in table bid")?;
    }
    Ok(())
}

/// Where the CSV was read to, so a recheck reads only what was appended since.
struct CsvCursor {
    path: PathBuf,
    exists: bool,
    /// Byte offset after the last complete line read.
    position: u64,
    inode: u64,
}

impl CsvCursor {
    fn new(path: &Path) -> Self {
        Self { path: path.to_owned(), exists: false, position: 0, inode: 0 }
    }
}

/// Reads the complete lines of the CSV after the cursor into `tally` (a line being written has
/// no newline yet and waits for the next read). Starts over if the file was replaced or cut.
fn read_csv(cursor: &mut CsvCursor, window: &Window, tally: &mut Tally, kafka: &mut KafkaBids) -> anyhow::Result<()> {
    let path = cursor.path.clone();
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if cursor.exists {
                tally.reset(kafka);
                *cursor = CsvCursor::new(&path);
            }
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("Failed to open {}", path.display())),
    };
    let meta = file.metadata().with_context(|| format!("Failed to read {}", path.display()))?;
    if cursor.exists && (meta.ino() != cursor.inode || meta.len() < cursor.position) {
        log::info!("{} was replaced or cut while auditing; reading it again", path.display());
        tally.reset(kafka);
        cursor.position = 0;
    }
    cursor.exists = true;
    cursor.inode = meta.ino();
    let start = cursor.position;
    let end = end_of_complete_lines(&mut file, start, meta.len()).with_context(|| format!("Failed to read {}", path.display()))?;
    if end <= start {
        return Ok(());
    }
    file.seek(SeekFrom::Start(start)).with_context(|| format!("Failed to read {}", path.display()))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(start == 0)
        .flexible(true)
        .from_reader(BufReader::with_capacity(1 << 20, file.take(end - start)));
    if start == 0 {
        let header = reader.byte_headers().with_context(|| format!("Failed to read the header of {}", path.display()))?;
        if header.get(0) != Some(b"bid_id") || header.get(4) != Some(b"bid_ts") {
            bail!("{} is not a bid backup: its header does not start bid_id,auction_id,name,price,bid_ts", path.display());
        }
    }
    let mut record = csv::ByteRecord::new();
    while reader.read_byte_record(&mut record).with_context(|| format!("Failed to read {}", path.display()))? {
        let id = record.get(0).and_then(parse_id);
        let ts = record.get(4).and_then(|t| std::str::from_utf8(t).ok()).and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        match (id, ts) {
            (Some(id), Some(ts)) if window.contains(ts.with_timezone(&Utc)) => tally.visit(kafka, id),
            (Some(_), Some(_)) => {}
            _ => tally.malformed += 1,
        }
    }
    cursor.position = end;
    Ok(())
}

/// The offset just after the last newline in `file[from..len]`, or `from` if there is none.
fn end_of_complete_lines(file: &mut File, from: u64, len: u64) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = len;
    while end > from {
        let start = end.saturating_sub(buf.len() as u64).max(from);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        [n; 16]
    }

    fn kafka_with(ids: &[Id]) -> KafkaBids {
        KafkaBids { flags: ids.iter().map(|i| (*i, 0)).collect(), counts: KafkaCounts::default(), latest_bid_ts: None }
    }

    #[test]
    fn a_tally_names_missing_and_doubled_bids_and_counts_rows_not_in_kafka() {
        let mut kafka = kafka_with(&[id(1), id(2), id(3)]);
        let mut tally = Tally::new(Target::Csv);
        for row in [id(1), id(2), id(2), id(2), id(9), id(9)] {
            tally.visit(&mut kafka, row);
        }
        let report = tally.report("CSV".into(), true, &kafka);
        assert_eq!((report.rows, report.missing, report.duplicated, report.not_in_kafka), (6, 1, 2, 1));
        assert_eq!(report.missing_ids, vec![id_text(&id(3))]);
        assert_eq!(report.duplicated_ids, vec![id_text(&id(2)), id_text(&id(9))]);
        // The other copy's flags are its own.
        assert_eq!(kafka.missing_from(Target::MySql), 3);
        tally.reset(&mut kafka);
        assert_eq!(kafka.missing_from(Target::Csv), 3);
    }

    #[test]
    fn only_complete_lines_are_read() {
        let path = std::env::temp_dir().join(format!("audit-lines-{}", std::process::id()));
        std::fs::write(&path, b"a\nbb\nccc").expect("a temporary file");
        let mut file = File::open(&path).expect("the temporary file");
        assert_eq!(end_of_complete_lines(&mut file, 0, 8).ok(), Some(5));
        assert_eq!(end_of_complete_lines(&mut file, 5, 8).ok(), Some(5));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn since_must_be_an_rfc3339_time() {
        assert!(parse_since("2025-06-01T12:00:00Z").is_ok());
        assert!(parse_since("2025-06-01T14:00:00.5+02:00").is_ok());
        assert!(parse_since("yesterday").expect_err("not a time").contains("RFC 3339"));
    }
}
