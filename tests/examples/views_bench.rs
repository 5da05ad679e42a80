//! How fast the analysts' views answer over a million bids (`make bench-views`).
//!
//! Fills a private database (`auction_test_views_<run>`, on the stack's MariaDB) with auctions
//! and bids the way production does: the bids go through the db-writer's own sink
//! ([`MySqlSink`]), in batches of `--batch` bids spread over `--writers` writers as partitions
//! spread them, so `bid`, the standings and the analysts' summaries (`bids_per_minute`,
//! `bidder_activity`) are written by the same transactions as in production and agree with
//! each other. Kafka is left out: it does not change what is stored, and on two cores it would
//! triple the time of the fill. Then it times `SELECT * FROM <view>` (every row fetched by the
//! client, as an import refresh does) and a typical filtered query on each view, and prints a
//! table of figures.
//!
//! Flags: `--bids=1000000 --auctions=1000 --bidders=20000 --days=14 --writers=2 --batch=500`,
//! `--keep` to keep the database, `--database=auction_test_views_<run>` to time a kept one again
//! (after a new migration, which is applied first) without filling it.

use std::time::{Duration, Instant};

use auction_common::config::DatabaseConfig;
use auction_common::{db, AuctionId, Bid, BidId, BidderName, Price};
use auction_consumers::db_writer::MySqlSink;
use auction_consumers::pipeline::{Record, Sink};
use chrono::{DateTime, NaiveDateTime, Utc};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use rust_decimal::Decimal;

fn arg(name: &str, default: &str) -> String {
    let flag = format!("--{name}=");
    std::env::args().find_map(|a| a.strip_prefix(&flag).map(str::to_owned)).unwrap_or_else(|| default.to_owned())
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == format!("--{name}"))
}

struct AuctionPlan {
    id: u64,
    starts: DateTime<Utc>,
    ends: DateTime<Utc>,
    starting: Decimal,
    increment: Decimal,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bids: usize = arg("bids", "1000000").parse()?;
    let auctions: u64 = arg("auctions", "1000").parse()?;
    let bidders: usize = arg("bidders", "20000").parse()?;
    let days: i64 = arg("days", "14").parse()?;
    let writers: usize = arg("writers", "2").parse::<usize>()?.max(1);
    let batch: usize = arg("batch", "500").parse::<usize>()?.max(1);
    let server = std::env::var("TEST_MYSQL_ADMIN_URL").unwrap_or_else(|_| "mysql://auction_admin:auction_admin@127.0.0.1:3306".into());
    let app = std::env::var("TEST_MYSQL_APP_URL").unwrap_or_else(|_| "mysql://auction:auction@127.0.0.1:3306".into());
    let reuse = arg("database", "");
    let db_name = if reuse.is_empty() { format!("auction_test_views_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]) } else { reuse.clone() };
    // Only the databases the stack lets the tests' users touch.
    anyhow::ensure!(db_name.starts_with("auction_test_"), "--database must be named auction_test_*");

    if reuse.is_empty() {
        let admin = mysql_async::Pool::new(server.as_str());
        admin.get_conn().await?.query_drop(format!("CREATE DATABASE {db_name} CHARACTER SET utf8mb4")).await?;
        admin.disconnect().await?;
    }
    let admin = db::pool(&DatabaseConfig::new(format!("{server}/{db_name}"), 2))?;
    let applied = db::migrate(&admin).await?;
    println!("database {db_name}; migrations applied now: {applied:?}");

    if reuse.is_empty() {
        let plans = create_auctions(&admin, auctions, days).await?;
        let all = plan_bids(&plans, bids, bidders);
        let database = DatabaseConfig::new(format!("{app}/{db_name}"), 2);
        fill(&database, all, writers, batch).await?;
        // InnoDB refreshes a table's statistics in the background after 10% of it changed; a
        // database that grew by a million rows in minutes would be timed with the optimizer
        // still seeing it nearly empty (a 1-hour range of v_bids then read per auction: 300 ms
        // instead of 50), which a production table growing bid by bid never is.
        admin.get_conn().await?.query_drop("ANALYZE TABLE bid, auction, auction_standing, bids_per_minute, bidder_activity").await?;
    }

    let reader = db::pool(&DatabaseConfig::new(format!("{app}/{db_name}"), 1))?;
    let mut conn = reader.get_conn().await?;
    let (stored, busiest): (u64, u64) = conn
        .query_first("SELECT (SELECT COUNT(*) FROM bid), (SELECT auction_id FROM auction_standing ORDER BY bid_count DESC LIMIT 1)")
        .await?
        .unwrap_or_default();
    let last_ts: Option<NaiveDateTime> = conn.query_first("SELECT MAX(last_bid_ts) FROM auction_standing").await?;
    let last_ts = last_ts.unwrap_or_default();
    let hour_ago = (last_ts - chrono::Duration::hours(1)).format("%Y-%m-%d %H:%M:%S").to_string();
    let day_ago = (last_ts - chrono::Duration::days(1)).format("%Y-%m-%d %H:%M:%S").to_string();
    let sizes: Vec<(String, u64)> = conn
        .query(format!(
            "SELECT table_name, table_rows FROM information_schema.tables WHERE table_schema = '{db_name}' AND table_type = 'BASE TABLE' ORDER BY table_name"
        ))
        .await?;
    println!("\n{stored} bids stored; busiest auction {busiest}; last bid {last_ts} UTC; table rows (estimates): {sizes:?}");

    let queries: Vec<(&str, String)> = vec![
        ("v_bids", "SELECT * FROM v_bids".into()),
        ("v_bids", format!("SELECT * FROM v_bids WHERE auction_id = {busiest} ORDER BY bid_ts")),
        ("v_bids", format!("SELECT * FROM v_bids WHERE bid_ts >= '{hour_ago}'")),
        ("v_bids", format!("SELECT * FROM v_bids WHERE bid_ts >= '{day_ago}' AND bid_ts < '{day_ago}' + INTERVAL 1 HOUR")),
        ("v_auction_summary", "SELECT * FROM v_auction_summary".into()),
        ("v_auction_summary", "SELECT * FROM v_auction_summary WHERE status = 'open' ORDER BY bids DESC LIMIT 20".into()),
        ("v_bids_per_minute", "SELECT * FROM v_bids_per_minute".into()),
        ("v_bids_per_minute", format!("SELECT minute, SUM(bids) FROM v_bids_per_minute WHERE minute >= '{day_ago}' GROUP BY minute")),
        ("v_bids_per_minute", format!("SELECT * FROM v_bids_per_minute WHERE auction_id = {busiest}")),
        ("v_top_bidders", "SELECT * FROM v_top_bidders".into()),
        ("v_top_bidders", "SELECT * FROM v_top_bidders ORDER BY bids DESC LIMIT 10".into()),
        ("v_top_bidders", "SELECT * FROM v_top_bidders WHERE name = 'bidder-00001'".into()),
        ("auction_highest_bid", "SELECT * FROM auction_highest_bid".into()),
        ("auction_highest_bid", format!("SELECT * FROM auction_highest_bid WHERE auction_id = {busiest}")),
        ("auction_summary", "SELECT * FROM auction_summary".into()),
        ("auction_summary", format!("SELECT * FROM auction_summary WHERE auction_id = {busiest}")),
    ];
    println!("\n| view | query | rows | first ms | best of 3 ms |");
    println!("|---|---|---:|---:|---:|");
    let mut slow = 0;
    for (view, sql) in &queries {
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..3 {
            let start = Instant::now();
            rows = fetch_all(&mut conn, sql).await?;
            times.push(start.elapsed());
        }
        let best = times.iter().min().copied().unwrap_or_default();
        if best > Duration::from_secs(1) {
            slow += 1;
        }
        println!("| {view} | `{sql}` | {rows} | {} | {} |", times[0].as_millis(), best.as_millis());
    }
    drop(conn);
    reader.disconnect().await?;
    println!("\n{slow} queries over a second (best of 3).");

    if flag("keep") || !reuse.is_empty() {
        println!("kept database {db_name}: time it again with --database={db_name}; drop it with DROP DATABASE {db_name}");
        admin.disconnect().await?;
    } else {
        admin.get_conn().await?.query_drop(format!("DROP DATABASE {db_name}")).await?;
        admin.disconnect().await?;
    }
    Ok(())
}

/// Runs `sql` and fetches every row, as a client importing the result does; returns the count.
async fn fetch_all(conn: &mut mysql_async::Conn, sql: &str) -> Result<usize, mysql_async::Error> {
    let mut result = conn.query_iter(sql).await?;
    let mut rows = 0;
    let mut stream = result.stream::<mysql_async::Row>().await?.ok_or_else(|| mysql_async::Error::Other("no result set".into()))?;
    while let Some(row) = stream.next().await {
        row?;
        rows += 1;
    }
    Ok(rows)
}

/// Auctions 2..=n+1 (1 is the seed's) spread over the last `days`: about a third still open,
/// lasting 1 hour to 3 days, some with a reserve, half with anti-sniping.
async fn create_auctions(pool: &mysql_async::Pool, n: u64, days: i64) -> anyhow::Result<Vec<AuctionPlan>> {
    let now = auction_common::domain::now_micros();
    let mut plans = Vec::new();
    let mut conn = pool.get_conn().await?;
    let mut rng = fastrand::Rng::with_seed(7);
    for id in 2..n + 2 {
        let duration = chrono::Duration::minutes(rng.i64(60..=3 * 24 * 60));
        let ends = if rng.u8(0..3) == 0 { now + chrono::Duration::minutes(rng.i64(10..=2 * 24 * 60)) } else { now - chrono::Duration::minutes(rng.i64(1..=days * 24 * 60)) };
        // Every auction has begun: bids are placed in the past.
        let starts = (ends - duration).max(now - chrono::Duration::days(days)).min(now - chrono::Duration::minutes(10));
        let starting = Decimal::new(rng.i64(100..=10_000), 2);
        let increment = Decimal::new([50, 100, 500][rng.usize(0..3)], 2);
        let reserve = (rng.u8(0..10) < 3).then(|| starting * Decimal::from(rng.i64(2..=50)));
        let extend: u32 = if rng.bool() { 120 } else { 0 };
        conn.exec_drop(
            "INSERT INTO auction (id, title, description, starting_price, min_increment, reserve_price, ends_at, extend_seconds, created_at)
             VALUES (?, ?, '', ?, ?, ?, ?, ?, ?)",
            (id, format!("Lot {id}: {}", ["a clock", "a bicycle", "a painting", "a lamp", "a chair"][id as usize % 5]), starting, increment, reserve, ends.naive_utc(), extend, starts.naive_utc()),
        )
        .await?;
        plans.push(AuctionPlan { id, starts, ends, starting, increment });
    }
    Ok(plans)
}

/// `total` bids over the auctions, a few auctions taking most of them (Zipf-like), each
/// auction's prices a ladder that rises by one to three increments a bid and its bids spread
/// over its life up to now; bidders Zipf-like too. Sorted by `bid_ts`, as they reach Kafka.
fn plan_bids(plans: &[AuctionPlan], total: usize, bidders: usize) -> Vec<Bid> {
    let now = auction_common::domain::now_micros();
    let mut rng = fastrand::Rng::with_seed(11);
    let weights: Vec<f64> = (0..plans.len()).map(|i| 1.0 / ((i + 1) as f64).powf(0.9)).collect();
    let sum: f64 = weights.iter().sum();
    let bidder_weights: Vec<f64> = (0..bidders).map(|i| 1.0 / ((i + 1) as f64).powf(0.7)).collect();
    let bidder_cdf: Vec<f64> = bidder_weights.iter().scan(0.0, |acc, w| { *acc += w; Some(*acc) }).collect();
    let bidder_total = bidder_cdf.last().copied().unwrap_or(1.0);
    let names: Vec<BidderName> = (1..=bidders).map(|i| BidderName::parse(&format!("bidder-{i:05}")).expect("a valid name")).collect();
    let mut all = Vec::with_capacity(total);
    let mut left = total;
    for (i, plan) in plans.iter().enumerate() {
        let n = if i + 1 == plans.len() { left } else { ((total as f64) * weights[i] / sum).round() as usize }.min(left);
        left -= n;
        let until = plan.ends.min(now);
        let span_us = (until - plan.starts).num_microseconds().unwrap_or(0).max(1);
        let mut times: Vec<i64> = (0..n).map(|_| rng.i64(0..span_us)).collect();
        times.sort_unstable();
        let mut price = plan.starting;
        for offset in times {
            let r = rng.f64() * bidder_total;
            let who = bidder_cdf.partition_point(|c| *c < r).min(bidders - 1);
            all.push(Bid {
                bid_id: BidId::generate(),
                auction_id: AuctionId::new(plan.id).expect("auction id"),
                name: names[who].clone(),
                price: Price::new(price).expect("a valid price"),
                bid_ts: plan.starts + chrono::Duration::microseconds(offset),
            });
            price += plan.increment * Decimal::from(rng.i64(1..=3));
        }
    }
    all.sort_by_key(|b| b.bid_ts);
    all
}

/// Writes `bids` through `writers` db-writer sinks at once, batch `i` to writer `i % writers`.
async fn fill(database: &DatabaseConfig, bids: Vec<Bid>, writers: usize, batch: usize) -> anyhow::Result<()> {
    let total = bids.len();
    let start = Instant::now();
    let batches: Vec<Vec<Bid>> = bids.chunks(batch).map(|c| c.to_vec()).collect();
    drop(bids);
    let mut lanes: Vec<Vec<Vec<Bid>>> = (0..writers).map(|_| Vec::new()).collect();
    for (i, b) in batches.into_iter().enumerate() {
        lanes[i % writers].push(b);
    }
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (lane, work) in lanes.into_iter().enumerate() {
        let mut sink = MySqlSink::new(database)?;
        let written = written.clone();
        tasks.push(tokio::spawn(async move {
            let mut offset = 0i64;
            for bids in work {
                let records: Vec<Record> = bids
                    .into_iter()
                    .map(|bid| {
                        offset += 1;
                        Record { bid, topic: "bids".into(), partition: lane as i32, offset, key: None, payload: Vec::new() }
                    })
                    .collect();
                let outcome = loop {
                    match sink.write(&records).await {
                        Ok(outcome) => break outcome,
                        // As the pipeline does: a deadlock or lock wait is retried.
                        Err(e) if e.class() == "retriable" => tokio::time::sleep(Duration::from_millis(50)).await,
                        Err(e) => return Err(anyhow::anyhow!("writer {lane}: {e}")),
                    }
                };
                let before = written.fetch_add(outcome.written, std::sync::atomic::Ordering::Relaxed);
                if (before + outcome.written) / 100_000 > before / 100_000 {
                    let done = before + outcome.written;
                    println!("  {done} bids written, {:.0} bids/s", done as f64 / start.elapsed().as_secs_f64());
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("filled {total} bids through the db-writer's sink in {secs:.0} s ({:.0} bids/s)", total as f64 / secs);
    Ok(())
}
