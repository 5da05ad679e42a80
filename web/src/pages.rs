//! The HTML site: the open auctions with their highest bids, and a bid form for each.
//! A form post answers with POST/redirect/GET: the redirect names the bid, and the page it
//! leads to says "Bid added!" with the bid's id once the broker acked it.
//!
//! Each form carries an idempotency key made when the page was rendered, and a refused form
//! comes back with the same key: sending a form twice (a double click, a retry after an
//! error) places its bid at most once.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use auction_common::domain::format_ts;
use auction_common::BidId;
use serde::{Deserialize, Serialize};
use tera::Context;

use crate::bidding::{BidRequest, BidStatus};
use crate::error::ApiError;
use crate::idempotency::IdempotencyKey;
use crate::state::SharedState;
use crate::store::{AuctionView, HighestBid};
use crate::templates::INDEX;

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
    /// The key the form is sent with again.
    idempotency_key: String,
}

/// An auction as the page shows it, with the idempotency key its form sends.
#[derive(Serialize)]
struct AuctionCard {
    #[serde(flatten)]
    view: AuctionView,
    form_key: String,
}

fn new_form_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub async fn home(state: SharedState, query: web::Query<HomeQuery>) -> HttpResponse {
    let placed = match query.placed.as_deref().and_then(|id| BidId::parse(id).ok()) {
        Some(id) => find_placed(&state, id).await,
        None => None,
    };
    render(&state, StatusCode::OK, placed, None).await
}

async fn find_placed(state: &SharedState, bid_id: BidId) -> Option<Placed> {
    // With MySQL out of reach, a bid acked here can still be shown.
    let status = state.bidding.find(bid_id).await.unwrap_or_else(|_| state.bidding.acked(bid_id).map(BidStatus::Pending))?;
    Some(match status {
        BidStatus::Recorded(b) => Placed {
            bid_id: b.bid_id,
            auction_id: b.auction_id,
            name: b.name,
            price: b.price.to_string(),
            bid_ts: b.bid_ts,
            recorded: true,
        },
        BidStatus::Pending(b) => Placed {
            bid_id: b.bid_id.to_string(),
            auction_id: b.auction_id.get(),
            name: b.name.to_string(),
            price: b.price.to_string(),
            bid_ts: format_ts(&b.bid_ts),
            recorded: false,
        },
    })
}

#[derive(Deserialize)]
pub struct BidForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    price: String,
    /// Absent from pages rendered before keys existed: such a form is placed without one.
    idempotency_key: Option<String>,
}

pub async fn place_bid(state: SharedState, path: web::Path<String>, form: web::Form<BidForm>) -> HttpResponse {
    let placed = async {
        let key = form.idempotency_key.as_deref().map(|k| IdempotencyKey::parse(k.as_bytes())).transpose()?;
        let request = BidRequest::parse(&path, &form.name, &form.price)?;
        state.bidding.place(request, key).await
    };
    match placed.await {
        Ok(bid) => {
            let location = format!("/?placed={}#auction-{}", bid.bid_id, bid.auction_id);
            HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
        }
        Err(e) => {
            let status = actix_web::ResponseError::status_code(&e);
            // The refused form keeps its key, so sending it again cannot place a second bid;
            // only a key that can no longer serve this form is replaced.
            let key_unusable = matches!(&e, ApiError::KeyReused) || matches!(&e, ApiError::Invalid(v) if v.field == IdempotencyKey::HEADER);
            let idempotency_key = match &form.idempotency_key {
                Some(key) if !key_unusable => key.clone(),
                _ => new_form_key(),
            };
            let message = match &e {
                ApiError::OutcomeUnknown { bid_id, .. } if !key_unusable && form.idempotency_key.is_some() => format!(
                    "Your bid {bid_id} could not be confirmed: {e}. Sending this form again is safe: it cannot place the bid twice."
                ),
                ApiError::KeyInFlight => "Your bid is still being processed. Send the form again in a moment to see how it ended.".to_owned(),
                ApiError::KeyReused => "This form was already used for a different bid. Check your bid and send it again.".to_owned(),
                ApiError::Unavailable(_) | ApiError::Busy(_) | ApiError::OutcomeUnknown { .. } | ApiError::Internal => {
                    format!("Your bid was NOT placed: {e}.")
                }
                _ => format!("Your bid was not placed: {e}."),
            };
            let error = FormError {
                auction_id: path.into_inner(),
                message,
                name: form.name.clone(),
                price: form.price.clone(),
                idempotency_key,
            };
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
    context.insert("auctions", &cards(auctions, error.as_ref()));
    context.insert("placed", &placed);
    context.insert("error", &error);
    context.insert("db_error", &db_error);
    match state.templates.render(INDEX, &context) {
        Ok(html) => HttpResponse::build(status).content_type("text/html; charset=utf-8").body(html),
        Err(e) => {
            log::error!("rendering {INDEX} failed: {e:?}");
            HttpResponse::InternalServerError().body("internal error")
        }
    }
}

/// A fresh key for each form, but the refused one's own key for the refused form.
fn cards(auctions: Vec<AuctionView>, error: Option<&FormError>) -> Vec<AuctionCard> {
    auctions
        .into_iter()
        .map(|view| {
            let form_key = match error {
                Some(e) if e.auction_id == view.id.to_string() => e.idempotency_key.clone(),
                _ => new_form_key(),
            };
            AuctionCard { view, form_key }
        })
        .collect()
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
    use crate::templates::Templates;

    #[test]
    fn user_text_is_escaped_and_a_refused_form_keeps_its_values_and_key() {
        let templates = Templates::new().unwrap();
        let auctions = vec![
            AuctionView {
                id: 1,
                title: "Lamp <b>".into(),
                highest_bid: Some(HighestBid { name: "<script>x</script>".into(), price: "12.50".parse().unwrap(), bid_ts: "t".into() }),
                bid_count: 3,
            },
            AuctionView { id: 2, title: "Chair".into(), highest_bid: None, bid_count: 0 },
        ];
        let error = FormError {
            auction_id: "1".into(),
            message: "price: bad".into(),
            name: "\"Ada\"".into(),
            price: "1.234".into(),
            idempotency_key: "key-of-the-refused-form".into(),
        };
        let mut context = Context::new();
        context.insert("auctions", &cards(auctions, Some(&error)));
        context.insert("placed", &None::<Placed>);
        context.insert("error", &Some(error));
        context.insert("db_error", &None::<String>);
        let html = templates.render(INDEX, &context).unwrap();
        assert!(html.contains("&lt;script&gt;x&lt;&#x2F;script&gt;") || html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("Lamp &lt;b&gt;"));
        assert!(html.contains("value=\"&quot;Ada&quot;\""), "{html}");
        assert!(html.contains("value=\"1.234\""), "{html}");
        assert!(html.contains("3 bids"));
        assert!(html.contains("name=\"idempotency_key\" value=\"key-of-the-refused-form\""), "{html}");
        assert_eq!(html.matches("name=\"idempotency_key\"").count(), 2, "one key per form");
    }
}
