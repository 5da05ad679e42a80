//! Command line of `auction-consumer`. Every flag is also an environment variable.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use auction_common::config::{DatabaseConfig, KafkaConfig, RegistryConfig};
use auction_common::preflight::{self, Endpoints};
use tokio::sync::watch;

use crate::db_writer::MySqlSink;
use crate::file_backup::CsvSink;
use crate::metrics::MetricsServer;
use crate::pipeline::{self, ConsumerSettings, ConsumerStatus};

#[derive(clap::Parser, Debug)]
#[command(name = "auction-consumer", version, about = "Consumer groups of the auction bid stream")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Write bids to MySQL table `bid` (consumer group bid-db-writers; run two or more).
    DbWriter {
        /// Consumer group; replicas in one group share the partitions.
        #[arg(long = "consumer-group", env = "CONSUMER_GROUP", default_value = "bid-db-writers")]
        group: String,
        #[command(flatten)]
        consume: ConsumeArgs,
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Append bids to a CSV audit file (consumer group bid-file-backup; one per file).
    FileBackup {
        #[arg(long = "consumer-group", env = "CONSUMER_GROUP", default_value = "bid-file-backup")]
        group: String,
        /// The CSV file bids are appended to.
        #[arg(long = "backup-csv", env = "BACKUP_CSV", default_value = "data/bids.csv")]
        backup_csv: PathBuf,
        #[command(flatten)]
        consume: ConsumeArgs,
    },
    /// Apply the MySQL schema migrations in sql/migrations (needs a user allowed to create tables).
    Migrate {
        /// MySQL URL of a user with DDL rights on the database.
        #[arg(long = "admin-database-url", env = "ADMIN_DATABASE_URL", default_value = "mysql://auction_admin:auction_admin@127.0.0.1:3306/auction", hide_env_values = true)]
        url: String,
    },
    /// Dead letters in `<topic>.dlq`: list them, or re-publish them to their source topic.
    Dlq {
        #[command(subcommand)]
        command: crate::dlq::DlqCommand,
    },
    /// Check that every bid in Kafka is in MySQL and in the CSV exactly once (exit 1 if not).
    Audit(crate::audit::AuditArgs),
    /// Each consumer group of the topic: members, partitions, committed and end offsets, lag.
    Status(crate::status::StatusArgs),
    /// Write a static HTML report with charts from the analysts' views (read-only analyst user).
    Report(crate::report::ReportArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub kafka: KafkaConfig,
    #[command(flatten)]
    pub registry: RegistryConfig,
    /// A batch is written once it holds this many bids...
    #[arg(long = "batch-max-size", env = "BATCH_MAX_SIZE", default_value_t = 500)]
    pub batch_max_size: usize,
    /// ...or once its first bid has waited this long.
    #[arg(long = "batch-max-wait-ms", env = "BATCH_MAX_WAIT_MS", default_value_t = 50)]
    pub batch_max_wait_ms: u64,
    /// Serve GET /metrics (Prometheus) and GET /readyz on this address, e.g. 127.0.0.1:9101;
    /// off unless set, since every consumer on a machine needs a port of its own.
    #[arg(long = "metrics-addr", env = "METRICS_ADDR")]
    pub metrics_addr: Option<String>,
}

impl ConsumeArgs {
    pub fn settings(&self, group: &str) -> ConsumerSettings {
        ConsumerSettings {
            kafka: self.kafka.clone(),
            registry: self.registry.clone(),
            group_id: group.to_owned(),
            batch_max_size: self.batch_max_size.max(1),
            batch_max_wait: Duration::from_millis(self.batch_max_wait_ms),
        }
    }
}

impl Command {
    /// The services the command talks to, for the startup check.
    fn endpoints(&self) -> Endpoints<'_> {
        match self {
            Command::DbWriter { consume, database, .. } => {
                Endpoints { kafka: Some(&consume.kafka), registry: Some(&consume.registry), database: Some(database) }
            }
            Command::FileBackup { consume, .. } => Endpoints { kafka: Some(&consume.kafka), registry: Some(&consume.registry), database: None },
            Command::Migrate { .. } => Endpoints::default(),
            Command::Dlq { command: crate::dlq::DlqCommand::List(args) } => Endpoints { kafka: Some(&args.kafka), ..Endpoints::default() },
            Command::Dlq { command: crate::dlq::DlqCommand::Replay(args) } => Endpoints { kafka: Some(&args.kafka), ..Endpoints::default() },
            Command::Audit(args) => Endpoints { kafka: Some(&args.kafka), registry: Some(&args.registry), database: Some(&args.database) },
            Command::Status(args) => Endpoints { kafka: Some(&args.kafka), ..Endpoints::default() },
            Command::Report(args) => Endpoints { database: Some(&args.database), ..Endpoints::default() },
        }
    }
}

/// Runs a command until it finishes or `shutdown` turns true, after the startup check of the
/// services it uses (a refused credential or certificate ends it with an error naming it).
pub async fn run(command: Command, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    preflight::check(command.endpoints(), preflight::STARTUP_CHECK_TIMEOUT).await?;
    let status = Arc::new(ConsumerStatus::default());
    match command {
        Command::DbWriter { group, consume, database } => {
            let sink = MySqlSink::new(&database).with_context(|| format!("Invalid DATABASE_URL {}", database.redacted_url()))?;
            let server = serve_metrics(&consume, &status)?;
            stopping_server(server, pipeline::run(consume.settings(&group), sink, status, shutdown).await).await
        }
        Command::FileBackup { group, backup_csv, consume } => {
            let server = serve_metrics(&consume, &status)?;
            let run = async { pipeline::run(consume.settings(&group), CsvSink::open(&backup_csv, &consume.kafka).await?, status, shutdown).await };
            stopping_server(server, run.await).await
        }
        Command::Migrate { url } => {
            let config = DatabaseConfig::new(url, 1);
            let pool = auction_common::db::pool(&config).with_context(|| format!("Invalid ADMIN_DATABASE_URL {}", config.redacted_url()))?;
            let applied = auction_common::db::migrate(&pool)
                .await
                .with_context(|| format!("Failed to migrate {}", config.redacted_url()))?;
            log::info!("migrations applied: {applied:?} (none means up to date)");
            pool.disconnect().await?;
            Ok(())
        }
        Command::Dlq { command } => crate::dlq::run_command(command, shutdown).await,
        Command::Audit(args) => crate::audit::run_command(args, shutdown).await,
        Command::Status(args) => crate::status::run_command(args).await,
        Command::Report(args) => crate::report::run_command(args).await,
    }
}

fn serve_metrics(consume: &ConsumeArgs, status: &Arc<ConsumerStatus>) -> anyhow::Result<Option<MetricsServer>> {
    consume.metrics_addr.as_deref().map(|addr| MetricsServer::start(addr, Arc::clone(status))).transpose()
}

async fn stopping_server(server: Option<MetricsServer>, result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Some(server) = server {
        server.stop().await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::{Cli, Command};
    use clap::{CommandFactory, Parser};

    #[test]
    fn subcommands_parse_with_their_defaults() {
        Cli::command().debug_assert();
        let Command::DbWriter { group, database, .. } = Cli::try_parse_from(["auction-consumer", "db-writer"]).unwrap().command else {
            panic!("db-writer")
        };
        assert_eq!((group.as_str(), database.url.as_str()), ("bid-db-writers", "mysql://auction:auction@127.0.0.1:3306/auction"));
        let Command::FileBackup { group, backup_csv, .. } = Cli::try_parse_from(["auction-consumer", "file-backup"]).unwrap().command else {
            panic!("file-backup")
        };
        assert_eq!((group.as_str(), backup_csv.to_str()), ("bid-file-backup", Some("data/bids.csv")));
        let Command::Report(report) = Cli::try_parse_from(["auction-consumer", "report"]).unwrap().command else { panic!("report") };
        assert_eq!(report.database.url, crate::report::ANALYST_DATABASE_URL, "the report reads as the read-only analyst");
    }
}
