//! `auction-consumer report` (`make report`) and the Power BI kit in powerbi/: the page shows
//! the figures the analysts' views give, read as the read-only analyst user, escapes what
//! bidders typed, and needs nothing but the file.

use std::path::PathBuf;
use std::time::Duration;

use auction_common::domain::now_micros;
use auction_common::registry::BidEncoder;
use auction_common::{AuctionId, Bid, BidderName, Price};
use auction_consumers::cli::{self, Cli};
use chrono::DateTime;
use clap::Parser;
use mysql_async::prelude::Queryable;

use crate::helpers::{eventually, produce, TestStack};

const SCRIPT_NAME: &str = "<script>alert(1)</script>";

fn bid_at(auction: u64, name: &str, price: &str, ts: DateTime<chrono::Utc>) -> Bid {
    let mut b = Bid::accept(AuctionId::new(auction).unwrap(), BidderName::parse(name).unwrap(), Price::parse(price).unwrap());
    b.bid_ts = ts;
    b
}

/// The analyst user on the test's own database (scripts/stack.sh grants it SELECT on the
/// tests' databases, as on `auction`).
fn analyst_url(stack: &TestStack) -> String {
    let server = std::env::var("TEST_MYSQL_ANALYST_URL").unwrap_or_else(|_| "mysql://analyst:analyst@127.0.0.1:3306".into());
    let db = stack.database.url.rsplit('/').next().unwrap().to_owned();
    format!("{server}/{db}")
}

/// Runs `auction-consumer report --out <file>` as a user would, and returns the page.
async fn run_report(stack: &TestStack, out: &PathBuf) -> String {
    let url = analyst_url(stack);
    let parsed = Cli::try_parse_from(["auction-consumer", "report", "--out", out.to_str().unwrap(), "--database-url", &url]).unwrap();
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    cli::run(parsed.command, shutdown).await.unwrap_or_else(|e| {
        panic!("the report is written as the analyst user: {e:#} (access denied? `make stack-up` applies scripts/stack.sh's grants: SELECT on auction_test_* for analyst)")
    });
    std::fs::read_to_string(out).expect("the report file")
}

/// The HTML between `start` and the next `end`, after `start`.
fn section<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let from = html.find(start).unwrap_or_else(|| panic!("{start} in the page"));
    let rest = &html[from..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

#[tokio::test]
async fn the_report_shows_the_figures_of_the_views_and_escapes_what_bidders_typed() {
    let stack = TestStack::new().await;
    let now = now_micros();
    let mut conn = stack.pool.get_conn().await.unwrap();
    conn.exec_drop(
        "INSERT INTO auction (id, title, starting_price, min_increment, ends_at, extend_seconds) VALUES
           (2, 'Lamp <b>& \"shade\"</b>', 1, 1, ?, 0), (3, 'A quiet lot', 1, 1, ?, 0)",
        ((now + chrono::Duration::hours(2)).naive_utc(), (now + chrono::Duration::hours(2)).naive_utc()),
    )
    .await
    .unwrap();
    drop(conn);
    let s = |secs: i64| now - chrono::Duration::seconds(secs);
    let bids = vec![
        bid_at(1, "Ada", "5.00", s(300)),
        bid_at(1, "Bob", "6.00", s(250)),
        bid_at(1, "Ada", "7.00", s(200)),
        bid_at(2, "Ada", "20.00", s(190)),
        bid_at(2, SCRIPT_NAME, "25.00", s(120)),
        bid_at(2, "Ada", "1234.50", s(60)),
        bid_at(3, "Cy", "40.00", s(30)),
    ];
    let encoder = BidEncoder::new(&stack.registry, &stack.kafka.topic).unwrap();
    let mut payloads = Vec::new();
    for b in &bids {
        payloads.push((b.bid_id.to_string(), encoder.encode(b).await.unwrap()));
    }
    produce(&stack, &payloads).await;
    let writer = stack.spawn_db_writer("writers");
    eventually(Duration::from_secs(30), "7 rows", || async { (stack.bid_rows().await.len() == 7).then_some(()) }).await;
    writer.stop().await;

    let out = stack.csv_path().with_file_name("report").join("auction-report.html");
    let html = run_report(&stack, &out).await;

    // What the views say, read separately.
    let mut conn = stack.pool.get_conn().await.unwrap();
    let total: u64 = conn.query_first("SELECT CAST(SUM(bids) AS UNSIGNED) FROM v_bids_per_minute").await.unwrap().unwrap();
    let (top_name, top_bids): (String, u64) =
        conn.query_first("SELECT name, CAST(bids AS UNSIGNED) FROM v_top_bidders ORDER BY bids DESC, name LIMIT 1").await.unwrap().unwrap();
    let highest: Vec<(u64, String)> = conn
        .query("SELECT auction_id, CAST(highest_price AS CHAR) FROM v_auction_summary WHERE highest_price IS NOT NULL ORDER BY auction_id")
        .await
        .unwrap();
    drop(conn);
    assert_eq!((total, top_name.as_str(), top_bids), (7, "Ada", 4));
    assert_eq!(highest, vec![(1, "7.00".into()), (2, "1234.50".into()), (3, "40.00".into())]);

    assert!(html.contains(r#"id="bids-recorded">7</span>"#), "total bids in:\n{html}");
    assert!(html.contains(r#"id="bidders">4</span>"#), "distinct bidders");
    assert!(html.contains(r#"id="highest-price">1,234.50</span>"#), "the highest bid, as the site writes amounts");
    let first_bidder = section(&html, r#"<tr class="bidder">"#, "</tr>");
    assert!(first_bidder.contains(">Ada</td>") && first_bidder.contains(">4</td>"), "top bidder and count: {first_bidder}");
    for (auction, price) in [(1, "7.00"), (2, "1,234.50"), (3, "40.00")] {
        let row = section(&html, &format!(r#"<tr id="auction-{auction}">"#), "</tr>");
        assert!(row.contains(&format!(">{price}</td>")), "auction {auction} highest {price}: {row}");
    }
    // Charts: a column for the bids, a bar per auction and per bidder, a ladder per busy auction.
    assert!(html.matches(r#"<rect class="column""#).count() >= 1);
    assert_eq!(html.matches(r#"<rect class="bar""#).count(), 3 + 4);
    assert_eq!(html.matches(r#"<path class="ladder""#).count(), 3);

    assert!(!html.contains(SCRIPT_NAME) && !html.contains("<script"), "a bidder's name is never markup");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "and is shown as typed");
    assert!(!html.contains("<b>&") && html.contains("Lamp &lt;b&gt;&amp;"), "auction titles are escaped too");
    // Opens from disk: nothing fetched from anywhere, and the password never shown.
    for outside in ["http://", "https://", " src=", "url(", "@import"] {
        assert!(!html.contains(outside), "{outside} in the page");
    }
    assert!(!html.contains(":analyst@"), "the database password is not in the page");
    stack.cleanup().await;
}

#[tokio::test]
async fn the_report_of_a_database_without_bids_says_so() {
    let stack = TestStack::new().await;
    let out = stack.csv_path().with_file_name("empty").join("report.html");
    let html = run_report(&stack, &out).await;
    assert!(html.contains(r#"id="bids-recorded">0</span>"#));
    assert!(html.contains(r#"id="auctions">1</span>"#), "auction 1 is seeded");
    assert_eq!(html.matches("No bids yet.").count(), 2, "bids over time and price ladders");
    stack.cleanup().await;
}

#[test]
fn the_power_bi_connection_file_names_the_local_database() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../powerbi");
    let pbids: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("auction.pbids")).unwrap()).expect("valid JSON");
    let connections = pbids["connections"].as_array().expect("connections");
    assert_eq!(connections.len(), 1);
    let details = &connections[0]["details"];
    assert_eq!(details["protocol"], "mysql");
    assert_eq!(details["address"]["server"], "127.0.0.1:3306");
    assert_eq!(details["address"]["database"], "auction");
    assert_eq!(connections[0]["mode"], "Import", "the MySQL connector imports");

    let theme: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("auction-theme.json")).unwrap()).expect("valid JSON");
    assert!(theme["name"].is_string());
    let colors = theme["dataColors"].as_array().expect("dataColors");
    assert!(colors.len() >= 6 && colors.iter().all(|c| c.as_str().is_some_and(|c| c.len() == 7 && c.starts_with('#'))));
    let dax = std::fs::read_to_string(dir.join("measures.dax")).unwrap();
    for measure in ["Total Bids", "Distinct Bidders", "Highest Bid", "Bids per Minute", "Time to Close"] {
        assert!(dax.contains(&format!("{measure} =")), "measure {measure}");
    }
}
