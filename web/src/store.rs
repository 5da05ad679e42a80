//! Reads from MySQL: the auction board's snapshot (every auction with its stored standing, in
//! one query), one auction looked up directly, an auction's latest bids, and one bid by id.
//! The site never writes there.
//!
//! Every read is bounded in time: getting a connection (waiting for the pool, or opening one:
//! TCP and handshake) and then the query each have a limit, so a MySQL that accepts
//! connections but never answers costs a request a 503 after a few seconds, not a hang.
//! mysql_async has no socket timeouts of its own, hence the limits here.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use auction_common::auction::{AuctionRules, Standing};
use auction_common::auction_db::{self, RulesRow, StandingRow, RULES_COLUMNS, STANDING_COLUMNS};
use auction_common::domain::{format_ts, AuctionId, Bid, BidId, BidderName, Price};
use chrono::{NaiveDateTime, TimeZone, Utc};
use mysql_async::prelude::{FromValue, Queryable};
use mysql_async::{Conn, Pool, Row, TxOpts, Value};
use rust_decimal::Decimal;
use serde::Serialize;
use tokio::runtime::Handle;

#[derive(Debug, Clone, Serialize)]
pub struct StoredBid {
    pub bid_id: String,
    pub auction_id: u64,
    pub name: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    pub bid_ts: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no MySQL connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("MySQL did not answer within {0:?}")]
    QueryTimeout(Duration),
    #[error(transparent)]
    Mysql(#[from] mysql_async::Error),
    #[error("the MySQL call was cut short: {0}")]
    Interrupted(String),
    /// What a call made meanwhile for the same answer met (the board's refresh).
    #[error("{0}")]
    Shared(String),
}

/// How long each step of a read may take.
#[derive(Debug, Clone, Copy)]
pub struct StoreTimeouts {
    /// Waiting for a pooled connection or opening a new one.
    pub connect: Duration,
    /// One query on a connection.
    pub query: Duration,
}

pub struct Store {
    pool: Pool,
    timeouts: StoreTimeouts,
    runtime: Handle,
}

/// An auction as MySQL holds it: its texts, its rules and its stored standing (what the
/// db-writer recorded; bids acked but not yet written are not in it).
#[derive(Debug, Clone)]
pub struct AuctionRecord {
    pub title: String,
    pub description: String,
    pub rules: AuctionRules,
    pub standing: Standing,
}

/// What one refresh of the board reads, all in one consistent snapshot of the database.
pub struct BoardSnapshot {
    pub auctions: Vec<AuctionRecord>,
    /// Of the pending bid ids asked about, those the db-writer has recorded.
    pub recorded: HashSet<BidId>,
}

/// The auction and its standing in one row; a LEFT JOIN because an auction has no standing
/// row until its first bid is recorded.
fn auction_sql() -> String {
    format!("SELECT a.title, a.description, {RULES_COLUMNS}, {STANDING_COLUMNS} FROM auction a LEFT JOIN auction_standing s ON s.auction_id = a.id")
}

/// How long after its end an auction stays on the board (and in `GET /api/auctions`); an older
/// one is looked up by id when asked for.
pub const BOARD_ENDED_WINDOW_DAYS: i64 = 7;

/// The board's auctions: those whose end in force (`ends_at`, or `current_ends_at` after
/// extensions, which is never earlier) is after the cutoff. Two index ranges
/// (ix_auction_ends_at, ix_standing_current_ends_at), so the cost follows the auctions on the
/// board, not every auction ever made.
fn board_sql() -> String {
    let sql = auction_sql();
    format!("{sql} WHERE a.ends_at >= ? UNION ALL {sql} WHERE a.ends_at < ? AND s.current_ends_at >= ?")
}

/// Pending ids are asked about this many at a time, so no statement grows without bound.
const RECORDED_IDS_PER_QUERY: usize = 1000;

fn column<T: FromValue>(row: &mut Row, index: usize) -> Result<T, String> {
    match row.take_opt::<T, usize>(index) {
        Some(Ok(value)) => Ok(value),
        Some(Err(e)) => Err(format!("column {index}: {e}")),
        None => Err(format!("column {index} is missing")),
    }
}

fn record_from_row(mut row: Row) -> Result<AuctionRecord, String> {
    let title: String = column(&mut row, 0)?;
    let description: String = column(&mut row, 1)?;
    let rules: RulesRow =
        (column(&mut row, 2)?, column(&mut row, 3)?, column(&mut row, 4)?, column(&mut row, 5)?, column(&mut row, 6)?, column(&mut row, 7)?, column(&mut row, 8)?);
    let standing: StandingRow =
        (column(&mut row, 9)?, column(&mut row, 10)?, column(&mut row, 11)?, column(&mut row, 12)?, column(&mut row, 13)?, column(&mut row, 14)?, column(&mut row, 15)?);
    let rules = auction_db::rules_from_row(rules).map_err(|e| e.to_string())?;
    let standing = auction_db::standing_from_row(&rules, standing).map_err(|e| e.to_string())?;
    Ok(AuctionRecord { title, description, rules, standing })
}

/// Rows that do not make a valid auction (edited by hand past the rules) are left out, loudly:
/// one bad row must not take the whole board down.
fn records(rows: Vec<Row>) -> Vec<AuctionRecord> {
    rows.into_iter()
        .filter_map(|row| record_from_row(row).map_err(|e| log::error!("an auction row is left off the board: {e}")).ok())
        .collect()
}

fn utc(ts: NaiveDateTime) -> String {
    format_ts(&Utc.from_utc_datetime(&ts))
}

/// One MySQL call: given a connection, the query's future.
type Query<T> = Box<dyn for<'c> FnOnce(&'c mut Conn) -> Pin<Box<dyn Future<Output = Result<T, mysql_async::Error>> + Send + 'c>> + Send>;

impl Store {
    /// `runtime` runs every MySQL call (see [`Store::call`]): it must outlive the HTTP workers.
    pub fn new(pool: Pool, timeouts: StoreTimeouts, runtime: Handle) -> Self {
        Self { pool, timeouts, runtime }
    }

    /// Runs one query on a pooled connection, each step within its timeout.
    ///
    /// The call runs on the runtime the store was built on, not the HTTP worker's: each
    /// actix worker has a runtime of its own, a pooled connection's socket belongs to the
    /// runtime that opened it, and a worker with nothing left to do stops first at shutdown,
    /// which would break every pooled connection it opened while other workers still finish
    /// their requests.
    async fn call<T: Send + 'static>(&self, query: Query<T>) -> Result<T, StoreError> {
        let (pool, timeouts) = (self.pool.clone(), self.timeouts);
        let task = self.runtime.spawn(async move {
            // A GetConn dropped by the timeout gives its pool slot back (mysql_async cancels it).
            let mut conn = match tokio::time::timeout(timeouts.connect, pool.get_conn()).await {
                Ok(conn) => conn?,
                Err(_) => return Err(StoreError::ConnectTimeout(timeouts.connect)),
            };
            // A command cut short leaves its connection marked disconnected (mysql_async sets
            // the mark while a command runs), so the pool throws it away rather than handing a
            // late answer to the next query.
            match tokio::time::timeout(timeouts.query, query(&mut conn)).await {
                Ok(result) => Ok(result?),
                Err(_) => Err(StoreError::QueryTimeout(timeouts.query)),
            }
        });
        task.await.map_err(|e| StoreError::Interrupted(e.to_string()))?
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(Box::new(|conn| Box::pin(conn.ping()))).await
    }

    /// Every auction on the board (open, or ended within [`BOARD_ENDED_WINDOW_DAYS`]) with its
    /// stored standing, and which of `pending()` (bid ids acked by this
    /// process) the db-writer has recorded, both read in one consistent snapshot: a bid is in
    /// the stored standing exactly when it is in `recorded`, so the board counts it once.
    /// `pending` is called once the snapshot is established, so a bid acked before then is
    /// asked about in the same snapshot.
    pub async fn board_snapshot(&self, pending: impl FnOnce() -> Vec<BidId> + Send + 'static) -> Result<BoardSnapshot, StoreError> {
        self.call(Box::new(move |conn| {
            Box::pin(async move {
                let mut opts = TxOpts::default();
                opts.with_consistent_snapshot(true).with_readonly(true);
                let mut tx = conn.start_transaction(opts).await?;
                let cutoff = (Utc::now() - chrono::Duration::days(BOARD_ENDED_WINDOW_DAYS)).naive_utc();
                let rows: Vec<Row> = tx.exec(board_sql(), (cutoff, cutoff, cutoff)).await?;
                let pending = pending();
                let mut recorded = HashSet::new();
                for chunk in pending.chunks(RECORDED_IDS_PER_QUERY) {
                    let ids: Vec<Value> = chunk.iter().map(|id| id.to_string().into()).collect();
                    let marks = vec!["?"; ids.len()].join(",");
                    let found: Vec<String> = tx.exec(format!("SELECT bid_id FROM bid WHERE bid_id IN ({marks})"), ids).await?;
                    recorded.extend(found.iter().filter_map(|id| BidId::parse(id).ok()));
                }
                tx.commit().await?;
                Ok(BoardSnapshot { auctions: records(rows), recorded })
            })
        }))
        .await
    }

    /// One auction and its stored standing, if it exists.
    pub async fn auction(&self, id: AuctionId) -> Result<Option<AuctionRecord>, StoreError> {
        let rows: Vec<Row> =
            self.call(Box::new(move |conn| Box::pin(conn.exec(format!("{} WHERE a.id = ?", auction_sql()), (id.get(),))))).await?;
        Ok(records(rows).into_iter().next())
    }

    /// The auction's latest `limit` bids as stored, newest first. Reads the newest end of index
    /// ix_bid_auction_ts (auction_id, bid_ts, then the primary key), so it costs the same
    /// however many bids the auction has.
    pub async fn latest_bids(&self, id: AuctionId, limit: usize) -> Result<Vec<Bid>, StoreError> {
        let rows: Vec<(String, String, Decimal, NaiveDateTime)> = self
            .call(Box::new(move |conn| {
                Box::pin(conn.exec(
                    "SELECT bid_id, name, price, bid_ts FROM bid WHERE auction_id = ? ORDER BY bid_ts DESC, id DESC LIMIT ?",
                    (id.get(), limit as u64),
                ))
            }))
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(bid_id, name, price, ts)| {
                let bid = (|| {
                    Ok::<_, auction_common::ValidationError>(Bid {
                        bid_id: BidId::parse(&bid_id)?,
                        auction_id: id,
                        name: BidderName::parse(&name)?,
                        price: Price::new(price)?,
                        bid_ts: auction_db::utc(ts),
                    })
                })();
                bid.map_err(|e| log::error!("bid {bid_id} of auction {id} is not shown, its row is not a valid bid: {e}")).ok()
            })
            .collect())
    }

    /// A bid as the db-writer stored it, if it has been written yet.
    pub async fn bid(&self, bid_id: BidId) -> Result<Option<StoredBid>, StoreError> {
        let bid_id = bid_id.to_string();
        let row: Option<(String, u64, String, Decimal, NaiveDateTime)> = self
            .call(Box::new(move |conn| Box::pin(conn.exec_first("SELECT bid_id, auction_id, name, price, bid_ts FROM bid WHERE bid_id = ?", (bid_id,)))))
            .await?;
        Ok(row.map(|(bid_id, auction_id, name, price, ts)| StoredBid { bid_id, auction_id, name, price, bid_ts: utc(ts) }))
    }

    /// Bids recorded over every auction, and the newest one's `bid_ts`: from
    /// `auction_standing` (a row per auction), so the cost does not grow with the bids.
    pub async fn bid_totals(&self) -> Result<(u64, Option<chrono::DateTime<Utc>>), StoreError> {
        let row: Option<(Option<Decimal>, Option<NaiveDateTime>)> = self
            .call(Box::new(|conn| Box::pin(conn.query_first("SELECT SUM(bid_count), MAX(last_bid_ts) FROM auction_standing"))))
            .await?;
        let (count, newest) = row.unwrap_or((None, None));
        let count = count.and_then(|c| u64::try_from(c).ok()).unwrap_or(0);
        Ok((count, newest.map(auction_db::utc)))
    }

    /// Bids per minute (every auction together) from `since` on, from `bids_per_minute`.
    pub async fn bids_per_minute(&self, since: NaiveDateTime) -> Result<Vec<(NaiveDateTime, u64)>, StoreError> {
        let rows: Vec<(NaiveDateTime, Decimal)> = self
            .call(Box::new(move |conn| {
                Box::pin(conn.exec("SELECT minute, SUM(bids) FROM bids_per_minute WHERE minute >= ? GROUP BY minute ORDER BY minute", (since,)))
            }))
            .await?;
        Ok(rows.into_iter().map(|(minute, bids)| (minute, u64::try_from(bids).unwrap_or(0))).collect())
    }

    /// The `limit` bidders with the most bids over every auction, most first: the last entries
    /// of index ix_bidder_totals_bids, so the cost does not grow with the bidders.
    pub async fn top_bidders(&self, limit: usize) -> Result<Vec<(String, u64)>, StoreError> {
        self.call(Box::new(move |conn| {
            Box::pin(conn.exec("SELECT name, bids FROM bidder_totals ORDER BY bids DESC, name DESC LIMIT ?", (limit as u64,)))
        }))
        .await
    }
}
