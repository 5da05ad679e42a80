//! Auctions and standings in MySQL: the one mapping between the `auction` and
//! `auction_standing` rows and [`AuctionRules`] / [`Standing`], used by the db-writer (which
//! keeps standings) and the site (which reads them).

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use mysql_async::prelude::Queryable;
use rust_decimal::Decimal;

use crate::auction::{AuctionRules, Leader, Standing};
use crate::domain::{AuctionId, BidId, BidderName, Price};

pub fn utc(ts: NaiveDateTime) -> DateTime<Utc> {
    Utc.from_utc_datetime(&ts)
}

/// The columns of `auction` that make [`AuctionRules`], in [`rules_from_row`]'s order.
pub const RULES_COLUMNS: &str = "a.id, a.starting_price, a.min_increment, a.reserve_price, a.ends_at, a.extend_seconds, a.closed_at";
pub type RulesRow = (u64, Decimal, Decimal, Option<Decimal>, NaiveDateTime, u32, Option<NaiveDateTime>);

/// The columns of `auction_standing` that make a [`Standing`], in [`standing_from_row`]'s order.
pub const STANDING_COLUMNS: &str =
    "s.bid_count, s.highest_bid_id, s.highest_name, s.highest_price, s.highest_bid_ts, s.last_bid_ts, s.current_ends_at";
pub type StandingRow =
    (Option<u64>, Option<String>, Option<String>, Option<Decimal>, Option<NaiveDateTime>, Option<NaiveDateTime>, Option<NaiveDateTime>);

/// A row that does not make a valid auction (edited by hand past the rules).
#[derive(Debug, thiserror::Error)]
#[error("auction {0}: {1}")]
pub struct BadRow(pub u64, pub String);

pub fn rules_from_row((id, starting, increment, reserve, ends_at, extend, closed_at): RulesRow) -> Result<AuctionRules, BadRow> {
    let bad = |what: &str| BadRow(id, what.to_owned());
    Ok(AuctionRules {
        id: AuctionId::new(id).map_err(|e| bad(&e.to_string()))?,
        starting_price: Price::new(starting).map_err(|e| bad(&e.to_string()))?,
        min_increment: increment,
        reserve_price: reserve.map(Price::new).transpose().map_err(|e| bad(&e.to_string()))?,
        ends_at: utc(ends_at),
        extend_seconds: extend,
        closed_at: closed_at.map(utc),
    })
}

/// The standing in a row of `auction_standing` (all NULL when the auction has none yet).
pub fn standing_from_row(rules: &AuctionRules, row: StandingRow) -> Result<Standing, BadRow> {
    let (count, bid_id, name, price, bid_ts, last, ends) = row;
    let Some(current_ends_at) = ends else { return Ok(Standing::new(rules)) };
    let bad = |what: String| BadRow(rules.id.get(), what);
    let highest = match (bid_id, name, price, bid_ts) {
        (Some(id), Some(name), Some(price), Some(ts)) => Some(Leader {
            bid_id: BidId::parse(&id).map_err(|e| bad(e.to_string()))?,
            name: BidderName::recorded(&name).map_err(|e| bad(e.to_string()))?,
            price: Price::new(price).map_err(|e| bad(e.to_string()))?,
            bid_ts: utc(ts),
        }),
        _ => None,
    };
    Ok(Standing { bid_count: count.unwrap_or(0), highest, last_bid_ts: last.map(utc), current_ends_at: utc(current_ends_at) })
}

/// An auction's rules, if it exists.
pub async fn rules<Q: Queryable>(conn: &mut Q, id: u64) -> Result<Option<AuctionRules>, mysql_async::Error> {
    let row: Option<RulesRow> = conn.exec_first(format!("SELECT {RULES_COLUMNS} FROM auction a WHERE a.id = ?"), (id,)).await?;
    row.map(rules_from_row).transpose().map_err(|e| mysql_async::Error::Other(Box::new(e)))
}

/// The auction's standing, its row created if missing and locked until the transaction ends,
/// so two writers of the same auction take turns.
pub async fn lock_standing(tx: &mut mysql_async::Transaction<'_>, rules: &AuctionRules) -> Result<Standing, mysql_async::Error> {
    // IGNORE only skips the row that exists already; every value here is known good.
    tx.exec_drop(
        "INSERT IGNORE INTO auction_standing (auction_id, current_ends_at, updated_at) VALUES (?, ?, UTC_TIMESTAMP(6))",
        (rules.id.get(), rules.ends_at.naive_utc()),
    )
    .await?;
    let row: Option<StandingRow> = tx
        .exec_first(format!("SELECT {STANDING_COLUMNS} FROM auction_standing s WHERE s.auction_id = ? FOR UPDATE"), (rules.id.get(),))
        .await?;
    let row = row.unwrap_or((None, None, None, None, None, None, None));
    standing_from_row(rules, row).map_err(|e| mysql_async::Error::Other(Box::new(e)))
}

pub async fn save_standing(tx: &mut mysql_async::Transaction<'_>, id: AuctionId, s: &Standing) -> Result<(), mysql_async::Error> {
    let h = s.highest.as_ref();
    let params: Vec<mysql_async::Value> = vec![
        s.bid_count.into(),
        h.map(|h| h.bid_id.to_string()).into(),
        h.map(|h| h.name.as_str().to_owned()).into(),
        h.map(|h| h.price.get()).into(),
        h.map(|h| h.bid_ts.naive_utc()).into(),
        s.last_bid_ts.map(|t| t.naive_utc()).into(),
        s.current_ends_at.naive_utc().into(),
        id.get().into(),
    ];
    tx.exec_drop(
        "UPDATE auction_standing SET bid_count = ?, highest_bid_id = ?, highest_name = ?, highest_price = ?, highest_bid_ts = ?,
                last_bid_ts = ?, current_ends_at = ?, updated_at = UTC_TIMESTAMP(6) WHERE auction_id = ?",
        params,
    )
    .await
}
