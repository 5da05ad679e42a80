//! `db-writer`: stores bids in MySQL table `bid`. Run two or more replicas in one group to
//! share the partitions.
//!
//! Each batch is one transaction: the bids of the batch already stored are looked up by
//! `bid_id` (unique key), the others are inserted with one multi-row INSERT, and the whole is
//! committed before the pipeline stores the offsets. A redelivered bid is therefore found and
//! not written again, and the transaction knows exactly which rows it added. Two writers racing
//! on the same bid (a rebalance hand-over) make the second fail on the unique key; its batch is
//! retried and then finds the bid stored.
//!
//! The same transaction keeps each auction's row in `auction_standing` (highest bid, bid count,
//! last bid, end after extensions), counting only the rows it inserted, with the rules of
//! [`auction_common::auction`]; so a redelivery changes nothing and reading a standing costs
//! the same at ten million bids as at ten.
//!
//! A plain INSERT in strict mode, not `INSERT IGNORE`: IGNORE would turn a value the column
//! cannot hold into a silent truncation. The programs' user needs SELECT and INSERT, and UPDATE
//! on `auction_standing` only.
//!
//! Errors are classified ([`classify`]): those that pass by themselves are retried; those only
//! an operator can fix (privilege, unknown column, missing table) hold the batch; a bid the
//! table refuses for what it is (data too long) is found by writing the batch one bid at a
//! time, and goes to the dead-letter topic while the others are written.

use std::collections::{BTreeMap, HashSet};

use auction_common::config::DatabaseConfig;
use auction_common::{auction_db, db, Bid, BidId, BidderName, Price};
use chrono::{NaiveDateTime, Timelike};
use mysql_async::prelude::Queryable;
use mysql_async::{Pool, Transaction, TxOpts, Value};
use rust_decimal::Decimal;

use crate::pipeline::{Record, Role, Sink, SinkError, WriteOutcome};

pub struct MySqlSink {
    pool: Pool,
}

impl MySqlSink {
    pub fn new(config: &DatabaseConfig) -> Result<Self, mysql_async::Error> {
        Ok(Self { pool: db::pool(config)? })
    }
}

/// What a MySQL error means for the bids being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Connection lost, server restarting, deadlock, lock wait, duplicate key from a racing writer.
    Retriable,
    /// Privilege, unknown column or table, and anything not known to pass or to be about one row.
    Permanent,
    /// This bid cannot be stored as it is (data too long, out of range, incorrect value).
    Row,
}

/// Server error codes (https://mariadb.com/kb/en/mariadb-error-code-reference/).
pub fn classify(e: &mysql_async::Error) -> ErrorClass {
    match e {
        mysql_async::Error::Server(s) => match s.code {
            // ER_DUP_ENTRY: another writer stored the bid since we looked; look again.
            1062 => ErrorClass::Retriable,
            // lock wait timeout, deadlock, too many connections, server shutdown, connection
            // killed, query interrupted, read-only (a failover in progress), out of memory.
            1205 | 1213 | 1040 | 1053 | 1927 | 1317 | 1290 | 1836 | 1037 | 1041 | 1203 => ErrorClass::Retriable,
            // data too long, out of range, incorrect value, null in a NOT NULL column, check constraint.
            1406 | 1264 | 1366 | 1292 | 1048 | 3819 | 4025 | 1265 => ErrorClass::Row,
            _ => ErrorClass::Permanent,
        },
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => ErrorClass::Retriable,
        mysql_async::Error::Other(_) | mysql_async::Error::Url(_) => ErrorClass::Permanent,
    }
}

fn sink_error(e: mysql_async::Error) -> SinkError {
    let class = classify(&e);
    let text = format!("MySQL ({class:?}): {e}");
    match class {
        ErrorClass::Retriable => SinkError::Retriable(text),
        ErrorClass::Permanent | ErrorClass::Row => SinkError::Permanent(text),
    }
}

fn placeholders(rows: usize, one: &str) -> String {
    let mut s = String::with_capacity(rows * (one.len() + 1));
    for i in 0..rows {
        if i > 0 {
            s.push(',');
        }
        s.push_str(one);
    }
    s
}

/// Writes the records in one transaction; returns (written, duplicates).
async fn write_transaction(pool: &Pool, records: &[&Record]) -> Result<(u64, u64), mysql_async::Error> {
    let mut conn = pool.get_conn().await?;
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let ids: Vec<Value> = records.iter().map(|r| r.bid.bid_id.to_string().into()).collect();
    let stored: Vec<String> =
        tx.exec(format!("SELECT bid_id FROM bid WHERE bid_id IN ({})", placeholders(ids.len(), "?")), ids).await?;
    let mut seen: HashSet<String> = stored.into_iter().collect();
    let mut params: Vec<Value> = Vec::with_capacity(records.len() * 5);
    let mut fresh = 0usize;
    let mut inserted: Vec<&Bid> = Vec::with_capacity(records.len());
    for r in records {
        let b = &r.bid;
        // A bid may come twice in one batch (a producer retry); the first copy counts.
        if !seen.insert(b.bid_id.to_string()) {
            continue;
        }
        inserted.push(b);
        params.push(b.bid_id.to_string().into());
        params.push(b.auction_id.get().into());
        params.push(b.name.as_str().into());
        params.push(b.price.get().into());
        params.push(b.bid_ts.naive_utc().into());
        fresh += 1;
    }
    if fresh > 0 {
        let sql = format!(
            "INSERT INTO bid (bid_id, auction_id, name, price, bid_ts) VALUES {}",
            placeholders(fresh, "(?,?,?,?,?)")
        );
        tx.exec_drop(sql, params).await?;
        update_standings(&mut tx, &inserted).await?;
        update_activity(&mut tx, &inserted).await?;
    }
    tx.commit().await?;
    Ok((fresh as u64, (records.len() - fresh) as u64))
}

/// Brings the standing of every auction with bids in `inserted` (rows this transaction added,
/// and only those) up to date, in the same transaction. Auctions are locked in id order, so two
/// writers cannot deadlock on each other's standings.
async fn update_standings(tx: &mut Transaction<'_>, inserted: &[&Bid]) -> Result<(), mysql_async::Error> {
    let mut by_auction: BTreeMap<u64, Vec<&Bid>> = BTreeMap::new();
    for b in inserted {
        by_auction.entry(b.auction_id.get()).or_default().push(b);
    }
    for (auction_id, bids) in by_auction {
        let Some(rules) = auction_db::rules(tx, auction_id).await? else {
            log::warn!("{} bids for auction {auction_id}, which does not exist: recorded, counted in no standing", bids.len());
            continue;
        };
        let mut standing = auction_db::lock_standing(tx, &rules).await?;
        let mut previous_end = standing.end(&rules);
        standing.apply_in_order(&rules, bids.iter().copied());
        // A bid placed in an extension can be stored before the bid that opened the extension
        // (they may sit in different partitions): once the end moves, the stored bids placed
        // in the reopened span count too, so the order consumers see bids in does not matter.
        let batch: HashSet<String> = bids.iter().map(|b| b.bid_id.to_string()).collect();
        while let Some((from, to)) = standing.reopened_since(&rules, previous_end) {
            previous_end = to;
            let rows: Vec<(String, String, Decimal, NaiveDateTime)> = tx
                .exec(
                    "SELECT bid_id, name, price, bid_ts FROM bid WHERE auction_id = ? AND bid_ts >= ? AND bid_ts < ?",
                    (auction_id, from.naive_utc(), to.naive_utc()),
                )
                .await?;
            let again: Vec<Bid> = rows
                .into_iter()
                .filter(|row| !batch.contains(&row.0))
                .filter_map(|(id, name, price, ts)| {
                    Some(Bid {
                        bid_id: BidId::parse(&id).ok()?,
                        auction_id: rules.id,
                        name: BidderName::parse(&name).ok()?,
                        price: Price::new(price).ok()?,
                        bid_ts: auction_db::utc(ts),
                    })
                })
                .collect();
            standing.apply_in_order(&rules, again.iter());
        }
        auction_db::save_standing(tx, rules.id, &standing).await?;
    }
    Ok(())
}

/// Adds the inserted bids to the analysts' summaries (`bids_per_minute`, `bidder_activity`;
/// see sql/README.md), in the same transaction, keys in sorted order so writers lock alike.
async fn update_activity(tx: &mut Transaction<'_>, inserted: &[&Bid]) -> Result<(), mysql_async::Error> {
    let mut per_minute: BTreeMap<(NaiveDateTime, u64), u64> = BTreeMap::new();
    let mut per_bidder: BTreeMap<(&str, u64), (u64, Decimal, NaiveDateTime)> = BTreeMap::new();
    for b in inserted {
        let ts = b.bid_ts.naive_utc();
        let minute = ts.with_second(0).and_then(|t| t.with_nanosecond(0)).unwrap_or(ts);
        *per_minute.entry((minute, b.auction_id.get())).or_default() += 1;
        let entry = per_bidder.entry((b.name.as_str(), b.auction_id.get())).or_insert((0, b.price.get(), ts));
        entry.0 += 1;
        entry.1 = entry.1.max(b.price.get());
        entry.2 = entry.2.max(ts);
    }
    let mut params: Vec<Value> = Vec::with_capacity(per_minute.len() * 3);
    for ((minute, auction), n) in &per_minute {
        params.extend([(*minute).into(), (*auction).into(), (*n).into()]);
    }
    tx.exec_drop(
        format!(
            "INSERT INTO bids_per_minute (minute, auction_id, bids) VALUES {} ON DUPLICATE KEY UPDATE bids = bids + VALUES(bids)",
            placeholders(per_minute.len(), "(?,?,?)")
        ),
        params,
    )
    .await?;
    let mut params: Vec<Value> = Vec::with_capacity(per_bidder.len() * 5);
    for ((name, auction), (n, highest, last)) in &per_bidder {
        params.extend([(*name).into(), (*auction).into(), (*n).into(), (*highest).into(), (*last).into()]);
    }
    tx.exec_drop(
        format!(
            "INSERT INTO bidder_activity (name, auction_id, bids, highest_price, last_bid_ts) VALUES {}
             ON DUPLICATE KEY UPDATE bids = bids + VALUES(bids), highest_price = GREATEST(highest_price, VALUES(highest_price)),
                                     last_bid_ts = GREATEST(last_bid_ts, VALUES(last_bid_ts))",
            placeholders(per_bidder.len(), "(?,?,?,?,?)")
        ),
        params,
    )
    .await?;
    // Sorted by name, as bidder_activity above, so concurrent writers lock rows in one order.
    let mut per_name: BTreeMap<&str, (u64, Decimal, NaiveDateTime)> = BTreeMap::new();
    for ((name, _), (n, highest, last)) in &per_bidder {
        let entry = per_name.entry(name).or_insert((0, *highest, *last));
        entry.0 += n;
        entry.1 = entry.1.max(*highest);
        entry.2 = entry.2.max(*last);
    }
    let mut params: Vec<Value> = Vec::with_capacity(per_name.len() * 4);
    for (name, (n, highest, last)) in &per_name {
        params.extend([(*name).into(), (*n).into(), (*highest).into(), (*last).into()]);
    }
    tx.exec_drop(
        format!(
            "INSERT INTO bidder_totals (name, bids, highest_price, last_bid_ts) VALUES {}
             ON DUPLICATE KEY UPDATE bids = bids + VALUES(bids), highest_price = GREATEST(highest_price, VALUES(highest_price)),
                                     last_bid_ts = GREATEST(last_bid_ts, VALUES(last_bid_ts))",
            placeholders(per_name.len(), "(?,?,?,?)")
        ),
        params,
    )
    .await
}

impl Sink for MySqlSink {
    const ROLE: Role = Role::DbWriter;

    async fn write(&mut self, records: &[Record]) -> Result<WriteOutcome, SinkError> {
        let all: Vec<&Record> = records.iter().collect();
        match write_transaction(&self.pool, &all).await {
            Ok((written, duplicates)) => return Ok(WriteOutcome { written, duplicates, rejected: Vec::new() }),
            Err(e) if classify(&e) != ErrorClass::Row => return Err(sink_error(e)),
            Err(e) => log::warn!("a bid of the batch was refused ({e}); writing the batch one bid at a time to find it"),
        }
        // One bid at a time: those refused for what they are go aside, the rest are written.
        let mut outcome = WriteOutcome::default();
        for (index, record) in records.iter().enumerate() {
            match write_transaction(&self.pool, &[record]).await {
                Ok((written, duplicates)) => {
                    outcome.written += written;
                    outcome.duplicates += duplicates;
                }
                Err(e) if classify(&e) == ErrorClass::Row => outcome.rejected.push((index, format!("MySQL refused the bid: {e}"))),
                Err(e) => return Err(sink_error(e)),
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError { code, message: "m".into(), state: "HY000".into() })
    }

    #[test]
    fn errors_are_classified_by_what_fixes_them() {
        assert_eq!(classify(&server(1213)), ErrorClass::Retriable, "deadlock");
        assert_eq!(classify(&server(1205)), ErrorClass::Retriable, "lock wait");
        assert_eq!(classify(&server(1062)), ErrorClass::Retriable, "a racing writer stored it");
        assert_eq!(classify(&server(1142)), ErrorClass::Permanent, "INSERT denied");
        assert_eq!(classify(&server(1054)), ErrorClass::Permanent, "unknown column");
        assert_eq!(classify(&server(1146)), ErrorClass::Permanent, "no such table");
        assert_eq!(classify(&server(1406)), ErrorClass::Row, "data too long");
        let io = mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::other("reset")));
        assert_eq!(classify(&io), ErrorClass::Retriable);
    }
}
