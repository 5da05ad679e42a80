//! The bidding site. A bid is validated, Avro-encoded with the registered schema and produced
//! to Kafka; the bidder is told "accepted" only after the broker acked it. The site never
//! writes MySQL: it reads auctions and highest bids from it.

mod api;
mod bidding;
mod bounded;
mod error;
mod idempotency;
mod pages;
mod publish;
mod startup;
mod state;
mod store;
mod templates;

pub use startup::{Application, Limits, StopHandle, WebConfig};
