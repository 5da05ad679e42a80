//! `auction-consumer report`: a static HTML report of the auctions for people without Power BI,
//! read from the analysts' views (sql/README.md) as the read-only `analyst` user.
//!
//! The page is one file that opens from disk and makes no request of its own: the charts are
//! inline SVG whose geometry is computed here, the styles are inline, no script. Every text
//! that comes from the data (auction titles, bidder names) goes through the template's HTML
//! autoescaping, including the labels inside the SVG, so nothing here builds markup by hand.
//!
//! Each query reads a view backed by a summary the db-writer keeps (or, for the price ladders,
//! the bids of a handful of auctions by index), so the report costs about the same at a million
//! bids as at ten.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use auction_common::config::DatabaseConfig;
use auction_common::domain::format_ts;
use chrono::{DateTime, NaiveDateTime, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::TxOpts;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::Serialize;

/// The read-only analysts' user of the local stack (scripts/stack.sh), so the report needs no
/// right to change anything.
pub const ANALYST_DATABASE_URL: &str = "mysql://analyst:analyst@127.0.0.1:3306/auction";

const TEMPLATE: &str = include_str!("../../templates/report.html");

/// Width of every chart's drawing, in SVG user units (the page scales it to its column).
const CHART_WIDTH: f64 = 960.0;
/// Room on the left of the column and ladder charts for the y-axis labels.
const AXIS_LEFT: f64 = 90.0;
/// Room on the left of the bar charts for the auction titles and bidder names.
const LABEL_LEFT: f64 = 300.0;
/// At most this many columns in "bids over time": the bucket grows (minute, 5 min, ...) until they fit.
const MAX_COLUMNS: i64 = 120;
/// A price ladder draws every bid as a dot up to this many bids; beyond, only the step line,
/// from the greatest price per horizontal unit.
const LADDER_MAX_DOTS: usize = 300;

#[derive(clap::Args, Debug)]
// The same DATABASE_URL as the other commands, but defaulting to the read-only analyst user.
#[command(mut_arg("database_url", |a| a.default_value(ANALYST_DATABASE_URL)))]
pub struct ReportArgs {
    /// The HTML file to write (its folder is created if missing).
    #[arg(long = "out", env = "REPORT_OUT", default_value = "target/report/auction-report.html")]
    pub out: PathBuf,
    /// Auctions in the "bids per auction" chart and table (the busiest first).
    #[arg(long = "report-auctions", env = "REPORT_AUCTIONS", default_value_t = 15)]
    pub auctions: usize,
    /// Bidders in the "top bidders" chart and table.
    #[arg(long = "report-bidders", env = "REPORT_BIDDERS", default_value_t = 10)]
    pub bidders: usize,
    /// Price ladders drawn, for the busiest auctions.
    #[arg(long = "report-ladders", env = "REPORT_LADDERS", default_value_t = 4)]
    pub ladders: usize,
    #[command(flatten)]
    pub database: DatabaseConfig,
}

/// Reads the views, renders the page and writes it to `args.out`; prints the file's path.
pub async fn run_command(args: ReportArgs) -> anyhow::Result<()> {
    let pool = auction_common::db::pool(&args.database).with_context(|| format!("Invalid DATABASE_URL {}", args.database.redacted_url()))?;
    let mut conn = pool.get_conn().await.with_context(|| format!("Failed to connect to {}", args.database.redacted_url()))?;
    // One snapshot for every query, so the page's figures agree with each other while the
    // db-writers go on writing.
    let mut options = TxOpts::default();
    options.with_consistent_snapshot(true).with_readonly(true);
    let mut snapshot = conn
        .start_transaction(options)
        .await
        .with_context(|| format!("Failed to start a read-only transaction on {}", args.database.redacted_url()))?;
    let report = read(&mut snapshot, &args, &args.database.redacted_url())
        .await
        .with_context(|| format!("Failed to read the analysts' views from {}", args.database.redacted_url()))?;
    snapshot.rollback().await.ok();
    drop(conn);
    pool.disconnect().await.ok();
    let html = render(&report)?;
    write(&args.out, &html).with_context(|| format!("Failed to write {}", args.out.display()))?;
    let shown = std::fs::canonicalize(&args.out).unwrap_or(args.out.clone());
    println!("{}", shown.display());
    Ok(())
}

fn write(path: &Path, html: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, html)
}

/// Everything the template shows; numbers already formatted, chart geometry already computed.
#[derive(Debug, Serialize)]
pub struct Report {
    generated_at: String,
    source: String,
    auctions: String,
    open_auctions: String,
    bids_recorded: String,
    bids_counted: String,
    bidders: String,
    highest: Option<HighestBid>,
    over_time: Option<ColumnChart>,
    per_auction: Option<BarChart>,
    busiest: Vec<AuctionRow>,
    top_bidders: Option<BarChart>,
    bidders_table: Vec<BidderRow>,
    ladders: Vec<Ladder>,
}

#[derive(Debug, Serialize)]
struct HighestBid {
    price: String,
    bidder: String,
    auction_id: u64,
    title: String,
}

#[derive(Debug, Serialize)]
struct AuctionRow {
    auction_id: u64,
    title: String,
    status: String,
    bids: String,
    bidders: String,
    highest_price: Option<String>,
    highest_bidder: Option<String>,
    winner: Option<String>,
    ends_at: Stamp,
}

#[derive(Debug, Serialize)]
struct BidderRow {
    name: String,
    bids: String,
    auctions: String,
    highest_price: String,
    last_bid: Stamp,
}

/// A time shown to the minute, with the exact value (RFC 3339, microseconds) for `title`.
#[derive(Debug, Serialize)]
struct Stamp {
    short: String,
    exact: String,
}

impl Stamp {
    fn of(ts: NaiveDateTime) -> Self {
        let utc = ts.and_utc();
        Self { short: utc.format("%Y-%m-%d %H:%M").to_string(), exact: format_ts(&utc) }
    }
}

/// Vertical columns over time with a y axis.
#[derive(Debug, Serialize)]
struct ColumnChart {
    width: f64,
    height: f64,
    plot_left: f64,
    plot_right: f64,
    plot_top: f64,
    plot_bottom: f64,
    bucket: &'static str,
    grid: Vec<GridLine>,
    columns: Vec<Column>,
    x_labels: Vec<XLabel>,
}

#[derive(Debug, Serialize)]
struct GridLine {
    y: f64,
    label: String,
}

#[derive(Debug, Serialize)]
struct Column {
    x: f64,
    y: f64,
    width: f64,
    height: f64,
    tip: String,
}

#[derive(Debug, Serialize)]
struct XLabel {
    x: f64,
    label: String,
}

/// Horizontal bars, one per row, the label on the left and the value at the bar's end.
#[derive(Debug, Serialize)]
struct BarChart {
    width: f64,
    height: f64,
    label_right: f64,
    bars: Vec<Bar>,
}

#[derive(Debug, Serialize)]
struct Bar {
    y: f64,
    text_y: f64,
    width: f64,
    label: String,
    value: String,
    value_x: f64,
}

/// How one auction's price went up: its highest price so far as a step line, and its bids.
#[derive(Debug, Serialize)]
struct Ladder {
    auction_id: u64,
    title: String,
    bids: String,
    width: f64,
    height: f64,
    plot_left: f64,
    plot_right: f64,
    plot_top: f64,
    plot_bottom: f64,
    grid: Vec<GridLine>,
    x_labels: Vec<XLabel>,
    /// SVG path data (numbers and commands only).
    path: String,
    dots: Vec<Dot>,
}

#[derive(Debug, Serialize)]
struct Dot {
    x: f64,
    y: f64,
    tip: String,
}

async fn read<Q: Queryable>(conn: &mut Q, args: &ReportArgs, source: &str) -> Result<Report, mysql_async::Error> {
    let (auctions, open_auctions, bids_counted): (u64, u64, u64) = conn
        .query_first("SELECT COUNT(*), CAST(COALESCE(SUM(status = 'open'), 0) AS UNSIGNED), CAST(COALESCE(SUM(bids), 0) AS UNSIGNED) FROM v_auction_summary")
        .await?
        .unwrap_or_default();
    let (bids_recorded, first_minute, last_minute): (u64, Option<NaiveDateTime>, Option<NaiveDateTime>) = conn
        .query_first("SELECT CAST(COALESCE(SUM(bids), 0) AS UNSIGNED), MIN(minute), MAX(minute) FROM v_bids_per_minute")
        .await?
        .unwrap_or((0, None, None));
    let bidders: u64 = conn.query_first("SELECT COUNT(*) FROM v_top_bidders").await?.unwrap_or(0);
    let highest: Option<(Decimal, String, u64, String)> = conn
        .query_first(
            "SELECT highest_price, highest_bidder, auction_id, title FROM v_auction_summary
             WHERE highest_price IS NOT NULL ORDER BY highest_price DESC, highest_bid_ts, auction_id LIMIT 1",
        )
        .await?;

    let over_time = match (first_minute, last_minute) {
        (Some(first), Some(last)) => Some(over_time(conn, first.and_utc(), last.and_utc()).await?),
        _ => None,
    };

    type SummaryRow = (u64, String, String, u64, u64, Option<Decimal>, Option<String>, Option<String>, NaiveDateTime);
    let busiest: Vec<SummaryRow> = conn
        .exec(
            "SELECT auction_id, title, status, bids, distinct_bidders, highest_price, highest_bidder, winner, ends_at
             FROM v_auction_summary WHERE bids > 0 ORDER BY bids DESC, auction_id LIMIT ?",
            (args.auctions as u64,),
        )
        .await?;
    let per_auction = bar_chart(busiest.iter().map(|r| (format!("#{} {}", r.0, r.1), r.3)).collect());

    type BidderSql = (String, u64, u64, Decimal, NaiveDateTime);
    let top: Vec<BidderSql> = conn
        .exec(
            "SELECT name, CAST(bids AS UNSIGNED), auctions, highest_price, last_bid_ts FROM v_top_bidders
             ORDER BY bids DESC, name LIMIT ?",
            (args.bidders as u64,),
        )
        .await?;
    let top_bidders = bar_chart(top.iter().map(|r| (r.0.clone(), r.1)).collect());

    let mut ladders = Vec::new();
    for row in busiest.iter().take(args.ladders) {
        if let Some(ladder) = read_ladder(conn, row.0, &row.1).await? {
            ladders.push(ladder);
        }
    }

    Ok(Report {
        generated_at: format_ts(&auction_common::domain::now_micros()),
        source: source.to_owned(),
        auctions: count(auctions),
        open_auctions: count(open_auctions),
        bids_recorded: count(bids_recorded),
        bids_counted: count(bids_counted),
        bidders: count(bidders),
        highest: highest.map(|(price, bidder, auction_id, title)| HighestBid { price: money(price), bidder, auction_id, title }),
        over_time,
        per_auction,
        busiest: busiest
            .into_iter()
            .map(|(auction_id, title, status, bids, bidders, highest_price, highest_bidder, winner, ends_at)| AuctionRow {
                auction_id,
                title,
                status,
                bids: count(bids),
                bidders: count(bidders),
                highest_price: highest_price.map(money),
                highest_bidder,
                winner,
                ends_at: Stamp::of(ends_at),
            })
            .collect(),
        top_bidders,
        bidders_table: top
            .into_iter()
            .map(|(name, bids, auctions, highest, last)| BidderRow {
                name,
                bids: count(bids),
                auctions: count(auctions),
                highest_price: money(highest),
                last_bid: Stamp::of(last),
            })
            .collect(),
        ladders,
    })
}

/// The bucket sizes "bids over time" may use, smallest first, with their names.
const BUCKETS: [(i64, &str); 9] = [
    (60, "minute"),
    (300, "5 minutes"),
    (900, "15 minutes"),
    (3600, "hour"),
    (3 * 3600, "3 hours"),
    (6 * 3600, "6 hours"),
    (86_400, "day"),
    (7 * 86_400, "week"),
    (30 * 86_400, "30 days"),
];

/// Bids per bucket from the first minute with bids to the last, empty buckets included.
async fn over_time<Q: Queryable>(conn: &mut Q, first: DateTime<Utc>, last: DateTime<Utc>) -> Result<ColumnChart, mysql_async::Error> {
    let span = (last - first).num_seconds() + 60;
    let (bucket, bucket_name) = BUCKETS.iter().copied().find(|(b, _)| span / b < MAX_COLUMNS).unwrap_or(BUCKETS[BUCKETS.len() - 1]);
    // Buckets aligned on the Unix epoch (UTC midnight for days); the pool's session is UTC, so
    // UNIX_TIMESTAMP reads `minute` as the UTC time it is.
    let rows: Vec<(i64, u64)> = conn
        .exec(
            "SELECT CAST(FLOOR(UNIX_TIMESTAMP(minute) / ?) AS SIGNED) AS b, CAST(SUM(bids) AS UNSIGNED)
             FROM v_bids_per_minute GROUP BY b ORDER BY b",
            (bucket,),
        )
        .await?;
    let start = first.timestamp().div_euclid(bucket);
    let end = last.timestamp().div_euclid(bucket);
    let n = (end - start + 1).max(1) as usize;
    let mut counts = vec![0u64; n];
    for (b, bids) in rows {
        if let Some(slot) = usize::try_from(b - start).ok().and_then(|i| counts.get_mut(i)) {
            *slot += bids;
        }
    }
    // Room on the right for half of the last time label, which is centred on its column.
    let (height, top, bottom, right) = (260.0, 12.0, 226.0, CHART_WIDTH - 45.0);
    let max = axis_max(counts.iter().copied().max().unwrap_or(0) as f64, 1.0);
    let step = (right - AXIS_LEFT) / n as f64;
    let label_at = |i: usize| {
        let t = DateTime::from_timestamp((start + i as i64) * bucket, 0).unwrap_or(first);
        if bucket >= 86_400 { t.format("%Y-%m-%d").to_string() } else { t.format("%m-%d %H:%M").to_string() }
    };
    let columns = counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(i, c)| {
            let h = (bottom - top) * (*c as f64) / max;
            Column {
                x: round1(AXIS_LEFT + step * i as f64 + step * 0.1),
                y: round1(bottom - h),
                width: round1((step * 0.8).max(1.0)),
                height: round1(h),
                tip: format!("{} UTC: {} bids", label_at(i), count(*c)),
            }
        })
        .collect();
    // About six labels along the axis, on bucket boundaries.
    let every = n.div_ceil(6).max(1);
    let x_labels = (0..n).step_by(every).map(|i| XLabel { x: round1(AXIS_LEFT + step * (i as f64 + 0.5)), label: label_at(i) }).collect();
    Ok(ColumnChart {
        width: CHART_WIDTH,
        height,
        plot_left: AXIS_LEFT,
        plot_right: right,
        plot_top: top,
        plot_bottom: bottom,
        bucket: bucket_name,
        grid: grid(top, bottom, max, |v| count(v.round() as u64)),
        columns,
        x_labels,
    })
}

fn bar_chart(rows: Vec<(String, u64)>) -> Option<BarChart> {
    let max = rows.iter().map(|r| r.1).max().filter(|m| *m > 0)? as f64;
    let (row_height, bar_height) = (26.0, 18.0);
    let room = CHART_WIDTH - LABEL_LEFT - 90.0;
    let bars = rows
        .into_iter()
        .enumerate()
        .map(|(i, (label, value))| {
            let width = (room * value as f64 / max).max(1.0);
            Bar {
                y: round1(i as f64 * row_height + 4.0),
                text_y: round1(i as f64 * row_height + 4.0 + bar_height - 4.0),
                width: round1(width),
                label: truncate(&label, 42),
                value: count(value),
                value_x: round1(LABEL_LEFT + width + 6.0),
            }
        })
        .collect::<Vec<_>>();
    Some(BarChart { width: CHART_WIDTH, height: round1(bars.len() as f64 * row_height + 8.0), label_right: LABEL_LEFT - 8.0, bars })
}

/// A point a ladder is drawn from: one bid (with its bidder, drawn as a dot), or for a busy
/// auction the greatest price bid in one horizontal unit of the chart, at the unit's first bid.
struct LadderPoint {
    price: Decimal,
    ts: NaiveDateTime,
    name: Option<String>,
}

/// Geometry of a ladder chart: it takes half the page's width.
const LADDER_WIDTH: f64 = CHART_WIDTH / 2.0 - 10.0;
const LADDER_RIGHT: f64 = CHART_WIDTH / 2.0 - 24.0;

/// Reads one auction's bids for its ladder: every bid when there are few, else the greatest
/// price per horizontal unit, so a busy auction costs one grouped index range read, not a
/// transfer of all its bids.
async fn read_ladder<Q: Queryable>(conn: &mut Q, auction_id: u64, title: &str) -> Result<Option<Ladder>, mysql_async::Error> {
    let span: Option<(u64, Option<NaiveDateTime>, Option<NaiveDateTime>)> =
        conn.exec_first("SELECT COUNT(*), MIN(bid_ts), MAX(bid_ts) FROM v_bids WHERE auction_id = ?", (auction_id,)).await?;
    let Some((bids, Some(first), Some(last))) = span else { return Ok(None) };
    let points: Vec<LadderPoint> = if bids as usize <= LADDER_MAX_DOTS {
        let rows: Vec<(Decimal, NaiveDateTime, String)> =
            conn.exec("SELECT price, bid_ts, name FROM v_bids WHERE auction_id = ? ORDER BY bid_ts, bid_id", (auction_id,)).await?;
        rows.into_iter().map(|(price, ts, name)| LadderPoint { price, ts, name: Some(name) }).collect()
    } else {
        let span_us = (last - first).num_microseconds().unwrap_or(i64::MAX).max(1);
        let unit_us = (span_us / (LADDER_RIGHT - AXIS_LEFT) as i64).max(1);
        let rows: Vec<(NaiveDateTime, Decimal)> = conn
            .exec(
                "SELECT MIN(bid_ts), MAX(price) FROM v_bids WHERE auction_id = ?
                 GROUP BY FLOOR(TIMESTAMPDIFF(MICROSECOND, ?, bid_ts) / ?) ORDER BY 1",
                (auction_id, first, unit_us),
            )
            .await?;
        rows.into_iter().map(|(ts, price)| LadderPoint { price, ts, name: None }).collect()
    };
    Ok(ladder(auction_id, title, bids, first, last, &points))
}

/// The ladder of one auction: the highest price so far as a step line (one vertical step per
/// horizontal unit at most), and a dot for each point that is a bid.
fn ladder(auction_id: u64, title: &str, bids: u64, first: NaiveDateTime, last: NaiveDateTime, points: &[LadderPoint]) -> Option<Ladder> {
    let (height, top, bottom, left, right) = (240.0, 12.0, 206.0, AXIS_LEFT, LADDER_RIGHT);
    let y_max = axis_max(points.iter().map(|p| p.price).max()?.to_f64()?, 0.01);
    let span_us = (last - first).num_microseconds().unwrap_or(i64::MAX).max(1) as f64;
    let x_of = |ts: NaiveDateTime| left + (right - left) * ((ts - first).num_microseconds().unwrap_or(0) as f64 / span_us);
    let y_of = |p: Decimal| bottom - (bottom - top) * p.to_f64().unwrap_or(0.0) / y_max;

    // (x, y) of each rise of the highest price; rises in the same unit keep only the last.
    let mut rises: Vec<(f64, f64)> = Vec::new();
    let mut best: Option<Decimal> = None;
    for p in points {
        if best.is_some_and(|b| p.price <= b) {
            continue;
        }
        best = Some(p.price);
        let (x, y) = (round1(x_of(p.ts)), round1(y_of(p.price)));
        match rises.last_mut() {
            Some(prev) if x - prev.0 < 1.0 => prev.1 = y,
            _ => rises.push((x, y)),
        }
    }
    let mut path = String::new();
    for (i, (x, y)) in rises.iter().enumerate() {
        path.push_str(&if i == 0 { format!("M{x} {y}") } else { format!(" H{x} V{y}") });
    }
    path.push_str(&format!(" H{}", round1(right)));
    let dots = points
        .iter()
        .filter_map(|p| {
            let name = p.name.as_ref()?;
            Some(Dot { x: round1(x_of(p.ts)), y: round1(y_of(p.price)), tip: format!("{name}: {} at {}", money(p.price), Stamp::of(p.ts).exact) })
        })
        .collect();
    let (first, last) = (first.and_utc(), last.and_utc());
    let short = |t: DateTime<Utc>| if last - first > chrono::Duration::days(2) { t.format("%Y-%m-%d").to_string() } else { t.format("%m-%d %H:%M").to_string() };
    Some(Ladder {
        auction_id,
        title: title.to_owned(),
        bids: count(bids),
        width: LADDER_WIDTH,
        height,
        plot_left: left,
        plot_right: right,
        plot_top: top,
        plot_bottom: bottom,
        grid: grid(top, bottom, y_max, |v| money(Decimal::from_f64_retain(v).unwrap_or_default())),
        x_labels: vec![XLabel { x: left, label: short(first) }, XLabel { x: right, label: short(last) }],
        path,
        dots,
    })
}

/// Five horizontal lines from 0 to `max`, labelled.
fn grid(top: f64, bottom: f64, max: f64, label: impl Fn(f64) -> String) -> Vec<GridLine> {
    (0..=4).map(|i| GridLine { y: round1(bottom - (bottom - top) * i as f64 / 4.0), label: label(max * i as f64 / 4.0) }).collect()
}

/// The top of an axis that reads in four equal, round steps (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8
/// times a power of ten), the smallest reaching `v`. A step is a whole number of `unit`s (1 for
/// counts, 0.01 for money), so no gridline is labelled with a rounded value.
fn axis_max(v: f64, unit: f64) -> f64 {
    let quarter = (v / 4.0).max(unit);
    let magnitude = 10f64.powf(quarter.log10().floor());
    let whole = |s: &f64| ((s / unit).round() - s / unit).abs() < 1e-9;
    let step = [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .filter(whole)
        .find(|s| *s >= quarter - 1e-9)
        .unwrap_or(10.0 * magnitude);
    4.0 * step
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max_chars - 1).collect();
        t.push('…');
        t
    }
}

/// `1234567` as `1,234,567`.
pub fn count(n: u64) -> String {
    group_thousands(&n.to_string())
}

/// An amount as the site shows it: two decimals, thousands grouped (`1,234.50`).
pub fn money(d: Decimal) -> String {
    let mut d = d.round_dp(2);
    d.rescale(2);
    let text = d.to_string();
    let (int, frac) = text.split_once('.').unwrap_or((&text, "00"));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    format!("{sign}{}.{frac}", group_thousands(digits))
}

fn group_thousands(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The page for `report` (the template, HTML-autoescaped).
pub fn render(report: &Report) -> Result<String, tera::Error> {
    let mut tera = tera::Tera::new();
    tera.add_raw_template("report.html", TEMPLATE)?;
    let mut context = tera::Context::new();
    context.insert("r", report);
    tera.render("report.html", &context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn amounts_and_counts_read_as_on_the_site() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(money(d("1234.5")), "1,234.50");
        assert_eq!(money(d("0.01")), "0.01");
        assert_eq!(money(d("9999999999.99")), "9,999,999,999.99");
        assert_eq!(money(d("100")), "100.00");
        assert_eq!(count(1_000_000), "1,000,000");
        assert_eq!(count(999), "999");
    }

    #[test]
    fn axes_read_in_four_round_steps_of_whole_units() {
        assert_eq!(axis_max(0.0, 1.0), 4.0);
        assert_eq!(axis_max(5.0, 1.0), 8.0, "quarters of 1.5 bids would be labelled 2 and 3 for 1.5 and 3");
        assert_eq!(axis_max(9.0, 1.0), 12.0);
        assert_eq!(axis_max(150_000.0, 1.0), 160_000.0);
        assert_eq!(axis_max(21.0, 0.01), 24.0);
        assert_eq!(axis_max(0.05, 0.01), 0.08, "never a step of half a cent");
        assert_eq!(axis_max(508_473.81, 0.01), 600_000.0);
    }

    #[test]
    fn a_ladder_steps_up_at_each_new_highest_price_only() {
        let t = |s: u32| NaiveDateTime::parse_from_str(&format!("2026-12-01 10:00:{s:02}"), "%Y-%m-%d %H:%M:%S").unwrap();
        let p = |price: &str, s: u32| LadderPoint { price: Decimal::from_str(price).unwrap(), ts: t(s), name: Some("a".into()) };
        let points = vec![p("10", 0), p("5", 10), p("20", 20), p("21", 20)];
        let ladder = ladder(1, "x", 4, t(0), t(20), &points).unwrap();
        // Starts at the first bid, ignores the lower one, one step up for the two rises at 20 s
        // (same horizontal unit, the greater kept), then runs to the right edge.
        assert_eq!(ladder.path.matches('V').count(), 1, "{}", ladder.path);
        assert_eq!(ladder.dots.len(), 4);
        assert_eq!(ladder.grid.last().unwrap().label, "24.00");
    }
}
