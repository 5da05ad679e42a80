//! Reads from MySQL: auctions and their highest bids. The site never writes bids there.

use std::collections::HashMap;
use std::sync::RwLock;

use auction_common::domain::{format_ts, AuctionId};
use chrono::{NaiveDateTime, TimeZone, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::Pool;
use rust_decimal::Decimal;
use serde::Serialize;

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

pub struct Store {
    pool: Pool,
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

impl Store {
    pub fn new(pool: Pool) -> Self {
        Self { pool, known: RwLock::new(HashMap::new()) }
    }

    pub async fn ping(&self) -> Result<(), mysql_async::Error> {
        self.pool.get_conn().await?.ping().await
    }

    /// The auction, if it exists.
    pub async fn auction(&self, id: AuctionId) -> Result<Option<Auction>, mysql_async::Error> {
        if let Some(a) = self.known.read().ok().and_then(|k| k.get(&id.get()).cloned()) {
            return Ok(Some(a));
        }
        let mut conn = self.pool.get_conn().await?;
        let row: Option<(u64, String, bool)> =
            conn.exec_first("SELECT id, title, closed_at IS NULL FROM auction WHERE id = ?", (id.get(),)).await?;
        let found = row.map(|(id, title, open)| Auction { id, title, open });
        if let (Some(a), Ok(mut known)) = (found.as_ref().filter(|a| a.open), self.known.write()) {
            known.insert(a.id, a.clone());
        }
        Ok(found)
    }

    pub async fn auction_view(&self, id: AuctionId) -> Result<Option<AuctionView>, mysql_async::Error> {
        let mut conn = self.pool.get_conn().await?;
        let row: Option<ViewRow> = conn.exec_first(format!("{VIEW_SQL} WHERE a.id = ?"), (id.get(),)).await?;
        Ok(row.map(to_view))
    }

    /// The open auctions, oldest first.
    pub async fn open_auctions(&self) -> Result<Vec<AuctionView>, mysql_async::Error> {
        let mut conn = self.pool.get_conn().await?;
        let rows: Vec<ViewRow> = conn.query(format!("{VIEW_SQL} WHERE a.closed_at IS NULL ORDER BY a.id LIMIT 200")).await?;
        Ok(rows.into_iter().map(to_view).collect())
    }

    /// A bid as the db-writer stored it, if it has been written yet.
    pub async fn bid(&self, bid_id: &str) -> Result<Option<StoredBid>, mysql_async::Error> {
        let mut conn = self.pool.get_conn().await?;
        let row: Option<(String, u64, String, Decimal, NaiveDateTime)> = conn
            .exec_first("SELECT bid_id, auction_id, name, price, bid_ts FROM bid WHERE bid_id = ?", (bid_id,))
            .await?;
        Ok(row.map(|(bid_id, auction_id, name, price, ts)| StoredBid { bid_id, auction_id, name, price, bid_ts: utc(ts) }))
    }
}
