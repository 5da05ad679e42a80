//! Load benchmark of the whole pipeline, run by `make bench` against a running system
//! (`make up`). It posts bids to the JSON API with a fixed number of requests in flight, then
//! waits until every one of them is in MySQL and in the CSV, and prints:
//! acked bids per second and latency percentiles at the API, and end-to-end bids per second
//! into MySQL and into the CSV. Bounded in count and time; loopback only.
//!
//! Every bid must meet the auction's rules, so the bench creates its own auctions (one per
//! request in flight, starting price and increment 0.01, open for a day, no anti-sniping) with
//! the admin MySQL user, and each in-flight slot posts strictly increasing prices to its own
//! auction, one after another. Bids refused by the rules (422, 409) are counted apart from
//! the acked ones, never in the bids/s.
//!
//! `--hot` puts every slot on one auction instead (a hot auction): each request takes the next
//! price of one shared counter, so bids that overtake each other on the way are refused (422);
//! the figure then is how many bids one auction decides per second, acked and refused.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use mysql_async::prelude::Queryable;

fn arg(name: &str, default: &str) -> String {
    let flag = format!("--{name}=");
    std::env::args().find_map(|a| a.strip_prefix(&flag).map(str::to_owned)).unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = arg("url", "http://127.0.0.1:8080");
    let bids: usize = arg("bids", "20000").parse()?;
    let concurrency: usize = arg("concurrency", "64").parse()?;
    let database_url = arg("database-url", "mysql://analyst:analyst@127.0.0.1:3306/auction");
    // The stack's admin user (scripts/stack.sh), which may create auctions.
    let admin_password = std::env::var("ADMIN_DB_PASSWORD").unwrap_or_else(|_| "auction_admin".to_owned());
    let admin_database_url = arg("admin-database-url", &format!("mysql://auction_admin:{admin_password}@127.0.0.1:3306/auction"));
    let csv = PathBuf::from(arg("csv", "data/bids.csv"));
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let concurrency = concurrency.clamp(1, bids.max(1));
    let hot = std::env::args().any(|a| a == "--hot");
    let auctions = create_auctions(&admin_database_url, &run, if hot { 1 } else { concurrency }).await?;
    let auctions: Vec<u64> = if hot { vec![auctions[0]; concurrency] } else { auctions };
    let next_cents = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));

    // The checks below look only at what is new since now, so that polling a large table or
    // file does not take CPU from the system being measured.
    let pool = mysql_async::Pool::new(database_url.as_str());
    let first_id: u64 = pool.get_conn().await?.query_first("SELECT COALESCE(MAX(id), 0) FROM bid").await?.unwrap_or(0);
    let csv_start = std::fs::metadata(&csv).map(|m| m.len()).unwrap_or(0);

    println!(
        "posting {bids} bids to {url}/api/auctions/{{{}..={}}}/bids, {concurrency} in flight, {} (run {run})",
        auctions[0],
        auctions[auctions.len() - 1],
        if hot { "all on one auction" } else { "one auction each" }
    );
    let start = Instant::now();
    // Slot k posts bids k, k + concurrency, ... to its own auction, each one cent above the last.
    let results: Vec<(u16, Duration)> = stream::iter(auctions.iter().copied().enumerate())
        .map(|(slot, auction)| {
            let (client, run, next_cents) = (client.clone(), run.clone(), std::sync::Arc::clone(&next_cents));
            let endpoint = format!("{url}/api/auctions/{auction}/bids");
            async move {
                let mut results = Vec::new();
                for (n, i) in (slot..bids).step_by(concurrency).enumerate() {
                    let cents = if hot { next_cents.fetch_add(1, std::sync::atomic::Ordering::Relaxed) } else { n + 1 };
                    let body = serde_json::json!({"name": format!("bench-{run}-{i}"), "price": format!("{}.{:02}", cents / 100, cents % 100)});
                    let sent = Instant::now();
                    let status = match client.post(&endpoint).json(&body).send().await {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    };
                    results.push((status, sent.elapsed()));
                }
                results
            }
        })
        .buffer_unordered(concurrency)
        .flat_map(stream::iter)
        .collect()
        .await;
    let api_elapsed = start.elapsed();
    let accepted = results.iter().filter(|(s, _)| *s == 202).count();
    let refused = results.iter().filter(|(s, _)| matches!(*s, 409 | 422)).count();
    let mut latencies: Vec<Duration> = results.iter().map(|(_, d)| *d).collect();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "API:   {accepted}/{bids} acked (202) in {:.2} s = {:.0} bids/s; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        api_elapsed.as_secs_f64(),
        accepted as f64 / api_elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        pct(1.0).as_secs_f64() * 1e3,
    );
    if refused > 0 {
        println!("       {refused} refused by the auction rules (409/422): not counted above");
    }
    if hot {
        println!(
            "HOT:   one auction decided {} bids in {:.2} s = {:.0} decided bids/s ({accepted} acked, {refused} refused)",
            accepted + refused,
            api_elapsed.as_secs_f64(),
            (accepted + refused) as f64 / api_elapsed.as_secs_f64()
        );
    }
    if accepted + refused < bids {
        let mut other: Vec<u16> = results.iter().map(|(s, _)| *s).filter(|s| !matches!(*s, 202 | 409 | 422)).collect();
        other.sort_unstable();
        other.dedup();
        println!("       other statuses (0 = no answer): {other:?}");
    }

    let pattern = format!("bench-{run}-%");
    let marker = format!(",bench-{run}-");
    let mut csv_read = csv_start;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut in_mysql, mut in_csv, mut mysql_done, mut csv_done) = (0usize, 0usize, None, None);
    while (mysql_done.is_none() || csv_done.is_none()) && Instant::now() < deadline {
        if mysql_done.is_none() {
            let mut conn = pool.get_conn().await?;
            in_mysql = conn.exec_first("SELECT COUNT(*) FROM bid WHERE id > ? AND name LIKE ?", (first_id, &pattern)).await?.unwrap_or(0);
            if in_mysql >= accepted {
                mysql_done = Some(start.elapsed());
            }
        }
        if csv_done.is_none() {
            let (lines, read_to) = new_lines(&csv, csv_read)?;
            in_csv += lines.matches(&marker).count();
            csv_read = read_to;
            if in_csv >= accepted {
                csv_done = Some(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (what, count, done) in [("MySQL", in_mysql, mysql_done), ("CSV", in_csv, csv_done)] {
        match done {
            Some(t) => println!(
                "{what:<6} all {count} bids landed {:.2} s after the first post = {:.0} bids/s end to end",
                t.as_secs_f64(),
                count as f64 / t.as_secs_f64()
            ),
            None => println!("{what:<6} only {count} of {accepted} bids after 120 s"),
        }
    }
    pool.disconnect().await?;
    Ok(())
}

/// Creates `count` open auctions for the run; returns their ids.
async fn create_auctions(admin_database_url: &str, run: &str, count: usize) -> anyhow::Result<Vec<u64>> {
    let pool = mysql_async::Pool::new(admin_database_url);
    let mut conn = pool.get_conn().await?;
    let mut ids = Vec::with_capacity(count);
    for slot in 0..count {
        conn.exec_drop(
            "INSERT INTO auction (title, description, starting_price, min_increment, ends_at, extend_seconds)
             VALUES (?, 'created by pipeline_bench', 0.01, 0.01, UTC_TIMESTAMP(6) + INTERVAL 1 DAY, 0)",
            (format!("bench {run} slot {slot}"),),
        )
        .await?;
        ids.push(conn.last_insert_id().ok_or_else(|| anyhow::anyhow!("MySQL gave no id for the new auction"))?);
    }
    drop(conn);
    pool.disconnect().await?;
    Ok(ids)
}

/// The complete lines appended to `path` since byte `from`, and where they end.
fn new_lines(path: &std::path::Path, from: u64) -> std::io::Result<(String, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else { return Ok((String::new(), from)) };
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    bytes.truncate(complete);
    Ok((String::from_utf8_lossy(&bytes).into_owned(), from + complete as u64))
}
