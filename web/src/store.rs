//! Reads from MySQL: auctions and their highest bids. The site never writes bids there.
//!
//! Every read is bounded in time: getting a connection (waiting for the pool, or opening one:
//! TCP and handshake) and then the query each have a limit, so a MySQL that accepts
//! connections but never answers costs a request a 503 after a few seconds, not a hang.
//! mysql_async has no socket timeouts of its own, hence the limits here.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::RwLock;
use std::time::Duration;

use auction_common::domain::{format_ts, AuctionId, BidId};
use chrono::{NaiveDateTime, TimeZone, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool};
use rust_decimal::Decimal;
use serde::Serialize;
use tokio::runtime::Handle;

#[derive(Debug, Clone, Serialize)]
pub struct Auction {
    pub id: u64,
    pub title: String,
    pub open: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct HighestBid {
    pub name: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    pub bid_ts: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuctionView {
    pub id: u64,
    pub title: String,
    pub highest_bid: Option<HighestBid>,
    pub bid_count: u64,
}

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
    /// Open auctions already seen. Bids check their auction here first, so the hot path does
    /// not touch MySQL; an id not in it is looked up (new auctions work at once).
    known: RwLock<HashMap<u64, Auction>>,
}

/// The highest bid of one auction: greatest price, earliest bid on a tie (index ix_bid_auction_highest).
const VIEW_SQL: &str = "SELECT a.id, a.title, h.name, h.price, h.bid_ts,
        (SELECT COUNT(*) FROM bid c WHERE c.auction_id = a.id) AS bid_count
   FROM auction a
   LEFT JOIN bid h ON h.id = (SELECT b.id FROM bid b WHERE b.auction_id = a.id
                              ORDER BY b.price DESC, b.bid_ts ASC, b.id ASC LIMIT 1)";

type ViewRow = (u64, String, Option<String>, Option<Decimal>, Option<NaiveDateTime>, u64);

fn utc(ts: NaiveDateTime) -> String {
    format_ts(&Utc.from_utc_datetime(&ts))
}

fn to_view((id, title, name, price, bid_ts, bid_count): ViewRow) -> AuctionView {
    let highest_bid = match (name, price, bid_ts) {
        (Some(name), Some(price), Some(ts)) => Some(HighestBid { name, price, bid_ts: utc(ts) }),
        _ => None,
    };
    AuctionView { id, title, highest_bid, bid_count }
}

/// One MySQL call: given a connection, the query's future.
type Query<T> = Box<dyn for<'c> FnOnce(&'c mut Conn) -> Pin<Box<dyn Future<Output = Result<T, mysql_async::Error>> + Send + 'c>> + Send>;

impl Store {
    /// `runtime` runs every MySQL call (see [`Store::call`]): it must outlive the HTTP workers.
    pub fn new(pool: Pool, timeouts: StoreTimeouts, runtime: Handle) -> Self {
        Self { pool, timeouts, runtime, known: RwLock::new(HashMap::new()) }
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

    /// The auction, if it exists.
    pub async fn auction(&self, id: AuctionId) -> Result<Option<Auction>, StoreError> {
        if let Some(a) = self.known.read().ok().and_then(|k| k.get(&id.get()).cloned()) {
            return Ok(Some(a));
        }
        let row: Option<(u64, String, bool)> = self
            .call(Box::new(move |conn| Box::pin(conn.exec_first("SELECT id, title, closed_at IS NULL FROM auction WHERE id = ?", (id.get(),)))))
            .await?;
        let found = row.map(|(id, title, open)| Auction { id, title, open });
        if let (Some(a), Ok(mut known)) = (found.as_ref().filter(|a| a.open), self.known.write()) {
            known.insert(a.id, a.clone());
        }
        Ok(found)
    }

    pub async fn auction_view(&self, id: AuctionId) -> Result<Option<AuctionView>, StoreError> {
        let row: Option<ViewRow> =
            self.call(Box::new(move |conn| Box::pin(conn.exec_first(format!("{VIEW_SQL} WHERE a.id = ?"), (id.get(),))))).await?;
        Ok(row.map(to_view))
    }

    /// The open auctions, oldest first.
    pub async fn open_auctions(&self) -> Result<Vec<AuctionView>, StoreError> {
        let rows: Vec<ViewRow> =
            self.call(Box::new(|conn| Box::pin(conn.query(format!("{VIEW_SQL} WHERE a.closed_at IS NULL ORDER BY a.id LIMIT 200"))))).await?;
        Ok(rows.into_iter().map(to_view).collect())
    }

    /// A bid as the db-writer stored it, if it has been written yet.
    pub async fn bid(&self, bid_id: BidId) -> Result<Option<StoredBid>, StoreError> {
        let bid_id = bid_id.to_string();
        let row: Option<(String, u64, String, Decimal, NaiveDateTime)> = self
            .call(Box::new(move |conn| Box::pin(conn.exec_first("SELECT bid_id, auction_id, name, price, bid_ts FROM bid WHERE bid_id = ?", (bid_id,)))))
            .await?;
        Ok(row.map(|(bid_id, auction_id, name, price, ts)| StoredBid { bid_id, auction_id, name, price, bid_ts: utc(ts) }))
    }
}
