//! The MySQL pool and the schema migrations in `sql/migrations`, applied in order, once each.

use std::path::PathBuf;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, SslOpts};

use crate::config::{ConfigError, DatabaseConfig};

/// Versioned migrations, embedded so every binary carries the schema it was built for.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "init", include_str!("../../sql/migrations/0001_init.sql")),
    (2, "analyst_views", include_str!("../../sql/migrations/0002_analyst_views.sql")),
    (3, "auction_rules_and_standing", include_str!("../../sql/migrations/0003_auction_rules_and_standing.sql")),
    (4, "analyst_summaries", include_str!("../../sql/migrations/0004_analyst_summaries.sql")),
    (5, "bid_time_index", include_str!("../../sql/migrations/0005_bid_time_index.sql")),
    (6, "bidder_totals", include_str!("../../sql/migrations/0006_bidder_totals.sql")),
    (7, "board_window", include_str!("../../sql/migrations/0007_board_window.sql")),
];

/// TLS to MySQL, as `ssl-mode` names it in the MySQL clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disabled,
    /// Encrypted, whatever certificate the server shows.
    Required,
    /// Encrypted, the certificate signed by a trusted CA, whatever name it is for.
    VerifyCa,
    /// Encrypted, the certificate signed by a trusted CA and for the host connected to.
    VerifyIdentity,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, ConfigError> {
        match value.to_ascii_uppercase().as_str() {
            "DISABLED" => Ok(Self::Disabled),
            "REQUIRED" => Ok(Self::Required),
            "VERIFY_CA" => Ok(Self::VerifyCa),
            "VERIFY_IDENTITY" => Ok(Self::VerifyIdentity),
            _ => Err(ConfigError {
                setting: "DATABASE_URL",
                problem: format!(
                    "ssl-mode={value} is not supported: use DISABLED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY (PREFERRED would fall back to plaintext silently)"
                ),
            }),
        }
    }
}

/// What connecting takes: the URL mysql_async understands (the `ssl-mode` and `ssl-ca`
/// parameters taken out, as it refuses parameters it does not know), the TLS mode and CA file.
#[derive(Debug, PartialEq, Eq)]
pub struct Connection {
    pub url: String,
    pub ssl_mode: SslMode,
    pub ssl_ca: Option<PathBuf>,
}

/// Reads `ssl-mode` and `ssl-ca` from the URL (`ssl_mode`, `sslmode`, `ssl_ca` too) and
/// DATABASE_SSL_CA. A CA without a mode means VERIFY_CA, as the mysql client does.
pub fn connection(config: &DatabaseConfig) -> Result<Connection, ConfigError> {
    let (base, query) = config.url.split_once('?').unwrap_or((config.url.as_str(), ""));
    let mut kept = Vec::new();
    let (mut mode, mut ca) = (None, config.security.ssl_ca.clone());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name.to_ascii_lowercase().replace('_', "-").as_str() {
            "ssl-mode" | "sslmode" => mode = Some(SslMode::parse(value)?),
            "ssl-ca" => ca = Some(PathBuf::from(value)),
            _ => kept.push(pair),
        }
    }
    let ssl_mode = mode.unwrap_or(if ca.is_some() { SslMode::VerifyCa } else { SslMode::Disabled });
    if ssl_mode == SslMode::Disabled && ca.is_some() {
        return Err(ConfigError { setting: "DATABASE_SSL_CA", problem: "given with ssl-mode=DISABLED in DATABASE_URL".into() });
    }
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok(Connection { url, ssl_mode, ssl_ca: ca })
}

fn ssl_opts(connection: &Connection) -> Option<SslOpts> {
    let opts = match connection.ssl_mode {
        SslMode::Disabled => return None,
        SslMode::Required => SslOpts::default().with_danger_accept_invalid_certs(true).with_danger_skip_domain_validation(true),
        SslMode::VerifyCa => SslOpts::default().with_danger_skip_domain_validation(true),
        SslMode::VerifyIdentity => SslOpts::default(),
    };
    Some(match &connection.ssl_ca {
        Some(ca) => opts.with_root_certs(vec![ca.clone().into()]),
        None => opts,
    })
}

pub fn pool(config: &DatabaseConfig) -> Result<Pool, mysql_async::Error> {
    let connection = connection(config).map_err(|e| mysql_async::Error::Other(e.to_string().into()))?;
    let opts = Opts::from_url(&connection.url)?;
    let constraints = PoolConstraints::new(1, config.max_connections.max(1)).unwrap_or_default();
    let mut builder = OptsBuilder::from_opts(opts).ssl_opts(ssl_opts(&connection));
    if let Some(password) = config.security.password() {
        builder = builder.pass(Some(password.expose()));
    }
    let builder = builder
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

#[cfg(test)]
mod tests {
    use super::*;

    fn connection_of(url: &str) -> Result<Connection, ConfigError> {
        connection(&DatabaseConfig::new(url, 1))
    }

    #[test]
    fn ssl_mode_in_the_url_picks_the_tls_checks_and_leaves_the_url_mysql_async_reads() {
        let c = connection_of("mysql://u:p@db:3306/auction?ssl-mode=VERIFY_IDENTITY&ssl-ca=/etc/ca.pem&prefer_socket=false").unwrap();
        assert_eq!(c.url, "mysql://u:p@db:3306/auction?prefer_socket=false");
        assert_eq!((c.ssl_mode, c.ssl_ca), (SslMode::VerifyIdentity, Some(PathBuf::from("/etc/ca.pem"))));
        assert_eq!(connection_of("mysql://u:p@db/auction?ssl_mode=required").unwrap().ssl_mode, SslMode::Required);
        assert_eq!(connection_of("mysql://u:p@db/auction").unwrap(), Connection { url: "mysql://u:p@db/auction".into(), ssl_mode: SslMode::Disabled, ssl_ca: None });
        assert_eq!(connection_of("mysql://u:p@db/auction?ssl-ca=/ca.pem").unwrap().ssl_mode, SslMode::VerifyCa);
    }

    #[test]
    fn an_unknown_ssl_mode_is_refused_naming_the_setting_and_the_choices() {
        let error = connection_of("mysql://u:secret@db/auction?ssl-mode=PREFERRED").unwrap_err();
        assert_eq!(error.setting, "DATABASE_URL");
        assert!(error.problem.contains("DISABLED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY"), "{error}");
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}
