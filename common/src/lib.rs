//! What the site and the consumers share: the bid model with its validation, the Avro
//! schema and codec, and one place that builds every Kafka, registry and MySQL client
//! from configuration.

pub mod auction;
pub mod auction_db;
pub mod avro;
pub mod config;
pub mod db;
pub mod domain;
pub mod kafka;
pub mod preflight;
pub mod registry;
pub mod retry;

pub use domain::{AuctionId, Bid, BidId, BidderName, Price, ValidationError};
