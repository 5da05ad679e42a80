//! The bidding site. A bid is validated, Avro-encoded with the registered schema and produced
//! to Kafka; the bidder is told "accepted" only after the broker acked it. The site never
//! writes MySQL: it reads auctions and highest bids from it.

mod api;
mod error;
mod pages;
mod publish;
mod startup;
mod store;

pub use startup::{Application, WebConfig};
