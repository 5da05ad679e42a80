//! The bidders of `make chaos` (scripts/chaos.sh): several clients place bids through the JSON
//! API for a fixed time while the script kills and restarts the pipeline's processes and
//! services; then this waits for every acked bid to reach MySQL and the CSV and prints one line:
//!
//! `acked N, in MySQL N (duplicates 0), in CSV N (duplicates 0), 5xx answers K`
//!
//! and exits 1 if an acked bid is missing from either, or stored twice. Each client bids on its
//! own auction with strictly rising prices, so every bid meets the auction's rules. A bid whose
//! answer was a 5xx or no answer is retried with the same `Idempotency-Key` until it is acked or
//! the run ends, as a careful client would: the retry can never make a second bid.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

fn arg(name: &str, default: &str) -> String {
    let flag = format!("--{name}=");
    std::env::args().find_map(|a| a.strip_prefix(&flag).map(str::to_owned)).unwrap_or_else(|| default.to_owned())
}

#[derive(Default)]
struct ClientTally {
    acked: Vec<String>,
    server_errors: u64,
    refused: u64,
}

async fn bidder(client: reqwest::Client, url: String, auction: u64, run: String, until: Instant) -> ClientTally {
    let mut tally = ClientTally::default();
    let mut price = 1u64;
    while Instant::now() < until {
        let key = format!("chaos-{run}-{auction}-{price}");
        let body = serde_json::json!({"name": format!("chaos {auction}"), "price": format!("{price}.00")});
        // The same bid, with the same key, until it is acked or the run ends.
        loop {
            let answer = client
                .post(format!("{url}/api/auctions/{auction}/bids"))
                .header("Idempotency-Key", &key)
                .json(&body)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            match answer {
                Ok(r) if r.status().as_u16() == 202 => {
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    if let Some(id) = v["bid_id"].as_str() {
                        tally.acked.push(id.to_owned());
                    }
                    break;
                }
                Ok(r) if r.status().is_server_error() => tally.server_errors += 1,
                Ok(r) if r.status().as_u16() == 409 || r.status().as_u16() == 429 => {}
                Ok(r) => {
                    tally.refused += 1;
                    eprintln!("auction {auction}: bid {price} refused with {}: {}", r.status(), r.text().await.unwrap_or_default());
                    break;
                }
                Err(_) => tally.server_errors += 1,
            }
            if Instant::now() >= until + Duration::from_secs(30) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        price += 1;
    }
    tally
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = arg("url", "http://127.0.0.1:18080");
    let clients: u64 = arg("clients", "8").parse()?;
    let first_auction: u64 = arg("first-auction", "1001").parse()?;
    let seconds: u64 = arg("seconds", "120").parse()?;
    let settle: u64 = arg("settle-seconds", "180").parse()?;
    let database_url = arg("database-url", "mysql://analyst:analyst@127.0.0.1:13306/auction");
    let csv = PathBuf::from(arg("csv", ".stack-chaos/bids.csv"));
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

    let client = reqwest::Client::builder().build()?;
    let until = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|i| tokio::spawn(bidder(client.clone(), url.clone(), first_auction + i, run.clone(), until)))
        .collect();
    let mut acked = Vec::new();
    let (mut server_errors, mut refused) = (0, 0);
    for t in tasks {
        let tally = t.await?;
        acked.extend(tally.acked);
        server_errors += tally.server_errors;
        refused += tally.refused;
    }
    eprintln!("load done: {} acked, {server_errors} 5xx or no answer, {refused} refused; waiting for MySQL and the CSV", acked.len());

    let pool = mysql_async::Pool::new(database_url.as_str());
    let deadline = Instant::now() + Duration::from_secs(settle);
    let (in_mysql, mysql_dups, in_csv, csv_dups) = loop {
        let mut mysql: HashMap<String, u32> = HashMap::new();
        if let Ok(mut conn) = pool.get_conn().await {
            let rows: Vec<String> = conn
                .exec("SELECT bid_id FROM bid WHERE auction_id BETWEEN ? AND ?", (first_auction, first_auction + clients - 1))
                .await
                .unwrap_or_default();
            for id in rows {
                *mysql.entry(id).or_default() += 1;
            }
        }
        let mut lines: HashMap<String, u32> = HashMap::new();
        if let Ok(file) = std::fs::File::open(&csv) {
            for row in csv::Reader::from_reader(file).records().flatten() {
                if let Some(id) = row.get(0) {
                    *lines.entry(id.to_owned()).or_default() += 1;
                }
            }
        }
        let in_mysql = acked.iter().filter(|id| mysql.contains_key(*id)).count();
        let in_csv = acked.iter().filter(|id| lines.contains_key(*id)).count();
        let mysql_dups = acked.iter().filter(|id| mysql.get(*id).is_some_and(|&n| n > 1)).count();
        let csv_dups = acked.iter().filter(|id| lines.get(*id).is_some_and(|&n| n > 1)).count();
        if (in_mysql == acked.len() && in_csv == acked.len()) || Instant::now() >= deadline {
            break (in_mysql, mysql_dups, in_csv, csv_dups);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    println!(
        "acked {}, in MySQL {in_mysql} (duplicates {mysql_dups}), in CSV {in_csv} (duplicates {csv_dups}), 5xx answers {server_errors}",
        acked.len()
    );
    let ok = in_mysql == acked.len() && in_csv == acked.len() && mysql_dups == 0 && csv_dups == 0 && !acked.is_empty();
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
