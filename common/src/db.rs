//! The MySQL pool and the schema migrations in `sql/migrations`, applied in order, once each.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};

use crate::config::DatabaseConfig;

/// Versioned migrations, embedded so every binary carries the schema it was built for.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "init", include_str!("../../sql/migrations/0001_init.sql")),
    (2, "analyst_views", include_str!("../../sql/migrations/0002_analyst_views.sql")),
    (3, "auction_rules_and_standing", include_str!("../../sql/migrations/0003_auction_rules_and_standing.sql")),
    (4, "analyst_summaries", include_str!("../../sql/migrations/0004_analyst_summaries.sql")),
    (5, "bid_time_index", include_str!("../../sql/migrations/0005_bid_time_index.sql")),
    (6, "bidder_totals", include_str!("../../sql/migrations/0006_bidder_totals.sql")),
];

pub fn pool(config: &DatabaseConfig) -> Result<Pool, mysql_async::Error> {
    let opts = Opts::from_url(&config.url)?;
    let constraints = PoolConstraints::new(1, config.max_connections.max(1)).unwrap_or_default();
    let builder = OptsBuilder::from_opts(opts)
        .pool_opts(PoolOpts::default().with_constraints(constraints))
        .conn_ttl(Some(Duration::from_secs(300)))
        .stmt_cache_size(64)
        // Sessions speak UTC, so DATETIME values read and written here are UTC whatever the server's zone.
        // Strict: a value a column cannot hold is an error, never a silent truncation.
        .init(vec!["SET time_zone = '+00:00'", "SET sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,ERROR_FOR_DIVISION_BY_ZERO'"]);
    Ok(Pool::new(builder))
}

/// Applies the migrations not applied yet. Safe to run from several processes at once: a
/// named lock lets one at a time through.
pub async fn migrate(pool: &Pool) -> Result<Vec<u32>, mysql_async::Error> {
    let mut conn = pool.get_conn().await?;
    let locked: Option<i64> = conn.query_first("SELECT GET_LOCK('auction_schema_migrations', 60)").await?;
    if locked != Some(1) {
        return Err(mysql_async::Error::Other("another process held the migration lock for 60 s".into()));
    }
    let result = apply_pending(&mut conn).await;
    conn.query_drop("DO RELEASE_LOCK('auction_schema_migrations')").await?;
    result
}

async fn apply_pending(conn: &mut mysql_async::Conn) -> Result<Vec<u32>, mysql_async::Error> {
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
           version    INT UNSIGNED NOT NULL PRIMARY KEY,
           name       VARCHAR(100) NOT NULL,
           applied_at DATETIME(6)  NOT NULL DEFAULT (UTC_TIMESTAMP(6))
         ) ENGINE = InnoDB",
    )
    .await?;
    let applied: Vec<u32> = conn.query("SELECT version FROM schema_migrations").await?;
    let mut newly = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        log::info!("applying migration {version:04} {name}");
        conn.query_drop(sql).await?;
        conn.exec_drop("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (version, name)).await?;
        newly.push(version);
    }
    Ok(newly)
}
