//! The bidding site. A bid is validated, Avro-encoded with the registered schema and produced
//! to Kafka; the bidder is told "accepted" only after the broker acked it. The site never
//! writes a bid to MySQL: it reads auctions and their standings from it (the board), and
//! writes only the auctions an operator creates through the admin API. It also reads the bids
//! topic itself, outside any consumer group, for the live pages and `/dashboard` (`feed`).

mod admin;
mod api;
mod bidding;
mod board;
mod bounded;
mod error;
mod feed;
mod health;
mod idempotency;
mod metrics;
mod pages;
mod publish;
mod rendered;
mod security;
mod startup;
mod state;
mod store;
mod templates;

pub use health::DashboardConfig;
pub use security::SecurityConfig;
pub use startup::{Application, Limits, StopHandle, WebConfig};
