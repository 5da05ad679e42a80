//! The consumer groups that turn the bid stream into durable copies: `db-writer` (MySQL) and
//! `file-backup` (a CSV audit file). Both run the same loop ([`pipeline`]) over a different
//! [`pipeline::Sink`].

pub mod audit;
pub mod cli;
pub mod db_writer;
pub mod dlq;
pub mod file_backup;
pub mod metrics;
pub mod pipeline;
pub mod report;
pub mod status;
