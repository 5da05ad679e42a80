//! Load benchmark of the whole pipeline, run by `make bench` against a running system
//! (`make up`). It posts bids to the JSON API with a fixed number of requests in flight, then
//! waits until every one of them is in MySQL and in the CSV, and prints:
//! acked bids per second and latency percentiles at the API, and end-to-end bids per second
//! into MySQL and into the CSV. Bounded in count and time; loopback only.

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
    let csv = PathBuf::from(arg("csv", "data/bids.csv"));
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let endpoint = format!("{url}/api/auctions/1/bids");

    // The checks below look only at what is new since now, so that polling a large table or
    // file does not take CPU from the system being measured.
    let pool = mysql_async::Pool::new(database_url.as_str());
    let first_id: u64 = pool.get_conn().await?.query_first("SELECT COALESCE(MAX(id), 0) FROM bid").await?.unwrap_or(0);
    let csv_start = std::fs::metadata(&csv).map(|m| m.len()).unwrap_or(0);

    println!("posting {bids} bids to {endpoint}, {concurrency} in flight (run {run})");
    let start = Instant::now();
    let results: Vec<(u16, Duration)> = stream::iter(0..bids)
        .map(|i| {
            let client = client.clone();
            let endpoint = endpoint.clone();
            let body = serde_json::json!({"name": format!("bench-{run}-{i}"), "price": format!("{}.{:02}", 1 + i % 1000, i % 100)});
            async move {
                let sent = Instant::now();
                let status = match client.post(&endpoint).json(&body).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                (status, sent.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let api_elapsed = start.elapsed();
    let accepted = results.iter().filter(|(s, _)| *s == 202).count();
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
    if accepted < bids {
        let mut other: Vec<u16> = results.iter().map(|(s, _)| *s).filter(|s| *s != 202).collect();
        other.dedup();
        println!("       other statuses: {other:?}");
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
