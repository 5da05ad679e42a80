//! `db-writer`: stores bids in MySQL table `bid`. Each batch is one multi-row INSERT, atomic on
//! its own; a bid already present (same `bid_id`, unique key) is left as it is, so redelivery
//! writes nothing twice. Run two or more replicas in one group to share the partitions.
//!
//! `INSERT IGNORE` rather than `ON DUPLICATE KEY UPDATE`, so the programs' MySQL user needs no
//! UPDATE right. IGNORE would also turn a too-long value into a warning, but every value here
//! passed the domain types, which match the column sizes; any warning other than a duplicate
//! key is logged as an error all the same.

use auction_common::db;
use auction_common::config::DatabaseConfig;
use mysql_async::prelude::Queryable;
use mysql_async::{Pool, Value};

use crate::pipeline::{Record, Sink, SinkError, WriteOutcome};

pub struct MySqlSink {
    pool: Pool,
}

impl MySqlSink {
    pub fn new(config: &DatabaseConfig) -> Result<Self, mysql_async::Error> {
        Ok(Self { pool: db::pool(config)? })
    }
}

/// ER_DUP_ENTRY: the bid is already stored.
const DUPLICATE_KEY: u32 = 1062;

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from("INSERT IGNORE INTO bid (bid_id, auction_id, name, price, bid_ts) VALUES ");
    for i in 0..rows {
        sql.push_str(if i == 0 { "(?,?,?,?,?)" } else { ",(?,?,?,?,?)" });
    }
    sql
}

impl Sink for MySqlSink {
    async fn write(&mut self, records: &[Record]) -> Result<WriteOutcome, SinkError> {
        let mut params: Vec<Value> = Vec::with_capacity(records.len() * 5);
        for r in records {
            let b = &r.bid;
            params.push(b.bid_id.to_string().into());
            params.push(b.auction_id.get().into());
            params.push(b.name.as_str().into());
            params.push(b.price.get().into());
            params.push(b.bid_ts.naive_utc().into());
        }
        let fail = |e: mysql_async::Error| SinkError(format!("MySQL: {e}"));
        let mut conn = self.pool.get_conn().await.map_err(fail)?;
        conn.exec_drop(insert_sql(records.len()), params).await.map_err(fail)?;
        let written = conn.affected_rows();
        let duplicates = records.len() as u64 - written.min(records.len() as u64);
        if u64::from(conn.get_warnings()) > duplicates {
            let warnings: Vec<(String, u32, String)> = conn.query("SHOW WARNINGS").await.map_err(fail)?;
            for (level, code, message) in warnings.iter().filter(|w| w.1 != DUPLICATE_KEY) {
                log::error!("MySQL {level} {code} while writing bids: {message}");
            }
        }
        Ok(WriteOutcome { written, duplicates })
    }
}
