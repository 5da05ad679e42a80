//! What every request handler may use: built once at startup, shared by every worker.

use std::sync::Arc;

use actix_web::web;
use auction_common::config::KafkaConfig;

use crate::bidding::Bidding;
use crate::board::Board;
use crate::board::AuctionView;
use crate::rendered::{PageCache, PerSecond};
use crate::store::Store;
use crate::templates::Templates;

pub struct AppState {
    pub bidding: Arc<Bidding>,
    /// Every auction with its standing, served from memory: what pages and the API read.
    pub board: Arc<Board>,
    pub store: Arc<Store>,
    pub templates: Templates,
    pub readiness: Readiness,
    /// `/` as rendered in the current second, and the open and closed auctions it lists.
    pub home_pages: PageCache,
    pub home_listing: PerSecond<Listing>,
}

/// What `/readyz` checks.
pub struct Readiness {
    pub kafka: KafkaConfig,
    pub registry_url: String,
    pub http: reqwest::Client,
}

pub type SharedState = web::Data<AppState>;

/// The board's auctions as `/` lists them: open ones soonest end first, closed ones latest end first.
pub struct Listing {
    pub open: Vec<AuctionView>,
    pub closed: Vec<AuctionView>,
}
