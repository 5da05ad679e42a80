//! The HTML site: the open auctions with their highest bids, and a bid form for each.
//! A form post answers with POST/redirect/GET: the redirect names the bid, and the page it
//! leads to says "Bid added!" with the bid's id once the broker acked it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use auction_common::domain::format_ts;
use auction_common::Bid;
use serde::{Deserialize, Serialize};
use tera::{Context, Tera};

use crate::api::accept_bid;
use crate::error::ApiError;
use crate::startup::SharedState;
use crate::store::{AuctionView, HighestBid};

const INDEX: &str = "index.html";

pub struct Pages {
    tera: Tera,
    /// Bids this process accepted through the form, so the page after the redirect can show
    /// them before the db-writer has stored them. Bounded: the oldest are forgotten.
    recent: Mutex<RecentBids>,
}

struct RecentBids {
    order: VecDeque<String>,
    bids: HashMap<String, Bid>,
}

impl RecentBids {
    const CAPACITY: usize = 10_000;

    fn insert(&mut self, bid: Bid) {
        let id = bid.bid_id.to_string();
        if self.order.len() == Self::CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.bids.remove(&oldest);
            }
        }
        self.order.push_back(id.clone());
        self.bids.insert(id, bid);
    }
}

impl Pages {
    pub fn new() -> Result<Self, tera::Error> {
        let mut tera = Tera::new();
        // Embedded, so the binary serves the templates it was built and tested with.
        tera.add_raw_template(INDEX, include_str!("../../templates/index.html"))?;
        let recent = RecentBids { order: VecDeque::new(), bids: HashMap::new() };
        Ok(Self { tera, recent: Mutex::new(recent) })
    }

    fn remember(&self, bid: Bid) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.insert(bid);
        }
    }

    fn recent(&self, bid_id: &str) -> Option<Bid> {
        self.recent.lock().ok()?.bids.get(bid_id).cloned()
    }
}

#[derive(Deserialize)]
pub struct HomeQuery {
    placed: Option<String>,
}

/// The bid named by `?placed=`, as the page shows it.
#[derive(Serialize)]
struct Placed {
    bid_id: String,
    auction_id: u64,
    name: String,
    price: String,
    bid_ts: String,
    /// Whether the db-writer has stored it in MySQL yet.
    recorded: bool,
}

/// A form that was refused, shown again with its values and the reason.
#[derive(Serialize)]
struct FormError {
    auction_id: String,
    message: String,
    name: String,
    price: String,
}

pub async fn home(state: SharedState, query: web::Query<HomeQuery>) -> HttpResponse {
    let placed = match &query.placed {
        Some(id) => find_placed(&state, id).await,
        None => None,
    };
    render(&state, StatusCode::OK, placed, None).await
}

async fn find_placed(state: &SharedState, bid_id: &str) -> Option<Placed> {
    if let Ok(Some(b)) = state.store.bid(bid_id).await {
        return Some(Placed {
            bid_id: b.bid_id,
            auction_id: b.auction_id,
            name: b.name,
            price: b.price.to_string(),
            bid_ts: b.bid_ts,
            recorded: true,
        });
    }
    state.pages.recent(bid_id).map(|b| Placed {
        bid_id: b.bid_id.to_string(),
        auction_id: b.auction_id.get(),
        name: b.name.to_string(),
        price: b.price.to_string(),
        bid_ts: format_ts(&b.bid_ts),
        recorded: false,
    })
}

#[derive(Deserialize)]
pub struct BidForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    price: String,
}

pub async fn place_bid(state: SharedState, path: web::Path<String>, form: web::Form<BidForm>) -> HttpResponse {
    match accept_bid(&state, &path, &form.name, &form.price).await {
        Ok(bid) => {
            let location = format!("/?placed={}#auction-{}", bid.bid_id, bid.auction_id);
            state.pages.remember(bid);
            HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
        }
        Err(e) => {
            let status = actix_web::ResponseError::status_code(&e);
            let message = match &e {
                ApiError::Unavailable(_) | ApiError::Internal => format!("Your bid was NOT placed: {e}."),
                _ => format!("Your bid was not placed: {e}."),
            };
            let error = FormError { auction_id: path.into_inner(), message, name: form.name.clone(), price: form.price.clone() };
            render(&state, status, None, Some(error)).await
        }
    }
}

async fn render(state: &SharedState, status: StatusCode, placed: Option<Placed>, error: Option<FormError>) -> HttpResponse {
    let (mut auctions, db_error) = match state.store.open_auctions().await {
        Ok(a) => (a, None),
        Err(e) => {
            log::warn!("MySQL unavailable for the homepage: {e}");
            (Vec::new(), Some("Current bids cannot be shown right now: the auction database is not reachable."))
        }
    };
    if let Some(p) = placed.as_ref().filter(|p| !p.recorded) {
        include_unrecorded(&mut auctions, p);
    }
    let status = if db_error.is_some() && status == StatusCode::OK { StatusCode::SERVICE_UNAVAILABLE } else { status };
    let mut context = Context::new();
    context.insert("auctions", &auctions);
    context.insert("placed", &placed);
    context.insert("error", &error);
    context.insert("db_error", &db_error);
    match state.pages.tera.render(INDEX, &context) {
        Ok(html) => HttpResponse::build(status).content_type("text/html; charset=utf-8").body(html),
        Err(e) => {
            log::error!("rendering {INDEX} failed: {e:?}");
            HttpResponse::InternalServerError().body("internal error")
        }
    }
}

/// A bid the broker acked but the db-writer has not stored yet still counts for the highest bid.
fn include_unrecorded(auctions: &mut [AuctionView], placed: &Placed) {
    let Some(view) = auctions.iter_mut().find(|a| a.id == placed.auction_id) else { return };
    let Ok(price) = placed.price.parse() else { return };
    let beats = match &view.highest_bid {
        None => true,
        // Same format and zone, so the timestamps compare as text.
        Some(h) => (price, std::cmp::Reverse(&placed.bid_ts)) > (h.price, std::cmp::Reverse(&h.bid_ts)),
    };
    if beats {
        view.highest_bid = Some(HighestBid { name: placed.name.clone(), price, bid_ts: placed.bid_ts.clone() });
    }
    view.bid_count += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_is_escaped_and_a_refused_form_keeps_its_values() {
        let pages = Pages::new().unwrap();
        let auctions = vec![AuctionView {
            id: 1,
            title: "Lamp <b>".into(),
            highest_bid: Some(HighestBid { name: "<script>x</script>".into(), price: "12.50".parse().unwrap(), bid_ts: "t".into() }),
            bid_count: 3,
        }];
        let error = FormError { auction_id: "1".into(), message: "price: bad".into(), name: "\"Ada\"".into(), price: "1.234".into() };
        let mut context = Context::new();
        context.insert("auctions", &auctions);
        context.insert("placed", &None::<Placed>);
        context.insert("error", &Some(error));
        context.insert("db_error", &None::<String>);
        let html = pages.tera.render(INDEX, &context).unwrap();
        assert!(html.contains("&lt;script&gt;x&lt;&#x2F;script&gt;") || html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("Lamp &lt;b&gt;"));
        assert!(html.contains("value=\"&quot;Ada&quot;\""), "{html}");
        assert!(html.contains("value=\"1.234\""), "{html}");
        assert!(html.contains("3 bids"));
    }
}
