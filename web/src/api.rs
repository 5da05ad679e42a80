//! The JSON API and the health endpoints: adapters over [`crate::bidding`], the board and
//! the store. Auctions are read from the board (memory), never from MySQL per request.
//!
//! Money is a string with 2 decimals; times are RFC 3339 UTC with microseconds.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use auction_common::auction::{Leader, Outcome};
use auction_common::domain::{format_ts, now_micros};
use auction_common::{BidId, ValidationError};
use chrono::{DateTime, Utc};
use rdkafka::producer::Producer;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, value::RawValue};

use crate::bidding::{parse_auction_id, BidRequest, BidStatus};
use crate::board::{cents, AuctionView, RECENT_BIDS_MAX};
use crate::error::ApiError;
use crate::idempotency::IdempotencyKey;
use crate::state::SharedState;

/// The JSON body of a bid. `price` is read as raw JSON so a number keeps its exact digits.
#[derive(Deserialize)]
struct BidBody {
    name: Option<serde_json::Value>,
    price: Option<Box<RawValue>>,
}

fn invalid(field: &'static str, message: &str) -> ApiError {
    ApiError::Invalid(ValidationError { field, message: message.to_owned() })
}

/// `{"name": string, "price": number or string}` into the raw texts of each field.
fn read_body(body: &[u8]) -> Result<(String, String), ApiError> {
    let expected = r#"must be a JSON object like {"name": "Ada", "price": "12.50"}"#;
    // serde would also read a struct from a JSON array; only an object is a bid.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::BadBody(expected.to_owned()));
    }
    let parsed: BidBody = serde_json::from_slice(body).map_err(|e| ApiError::BadBody(format!("{expected} ({e})")))?;
    let name = match parsed.name {
        Some(serde_json::Value::String(s)) => s,
        None | Some(serde_json::Value::Null) => return Err(invalid("name", "is required: a string of 1 to 100 characters")),
        Some(_) => return Err(invalid("name", "must be a string of 1 to 100 characters")),
    };
    let price = match parsed.price.as_deref().map(RawValue::get) {
        None | Some("null") => return Err(invalid("price", "is required: a number above 0 with at most 2 decimals")),
        Some(raw) if raw.starts_with('"') => serde_json::from_str::<String>(raw).map_err(|_| invalid("price", "must be a decimal string"))?,
        Some(raw) if raw.starts_with(|c: char| c.is_ascii_digit() || c == '-') => raw.to_owned(),
        Some(_) => return Err(invalid("price", "must be a number or a decimal string, such as 12.50 or \"12.50\"")),
    };
    Ok((name, price))
}

/// The `Idempotency-Key` header, if sent (once).
fn idempotency_key(request: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = request.headers().get_all(IdempotencyKey::HEADER);
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(invalid(IdempotencyKey::HEADER, "must be sent once"));
    }
    Ok(Some(IdempotencyKey::parse(value.as_bytes())?))
}

pub async fn place_bid(state: SharedState, request: HttpRequest, path: web::Path<String>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&request)?;
    let (name, price) = read_body(&body)?;
    let bid = BidRequest::parse(&path, &name, &price)?;
    let bid = state.bidding.place(bid, key).await?;
    Ok(HttpResponse::Accepted().json(bid))
}

/// `recorded` once the db-writer stored the bid, `pending` while only this process knows it
/// was acked; 404 otherwise (the outcome of a 503 may still turn out either way), 400 for an
/// id that is not a UUID.
pub async fn get_bid(state: SharedState, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let bid_id = BidId::parse(&path)?;
    match state.bidding.find(bid_id).await? {
        Some(BidStatus::Recorded(bid)) => Ok(HttpResponse::Ok().json(json!({ "status": "recorded", "bid": bid }))),
        Some(BidStatus::Pending(bid)) => Ok(HttpResponse::Ok().json(json!({ "status": "pending", "bid": bid }))),
        None => Err(ApiError::BidNotFound(bid_id)),
    }
}

/// A bid as the auction API shows it (the leading bid, or the winner).
#[derive(Serialize)]
struct BidJson {
    name: String,
    price: String,
    bid_ts: String,
}

impl From<&Leader> for BidJson {
    fn from(l: &Leader) -> Self {
        Self { name: l.name.as_str().to_owned(), price: money(l.price.get()), bid_ts: format_ts(&l.bid_ts) }
    }
}

/// One auction in `GET /api/auctions/{id}` and `GET /api/auctions`.
#[derive(Serialize)]
struct AuctionJson {
    id: u64,
    title: String,
    description: String,
    /// "open" until the end in force, then "closed".
    status: &'static str,
    starting_price: String,
    min_increment: String,
    /// The reserve itself is not shown, only whether there is one and whether the highest bid meets it.
    has_reserve: bool,
    reserve_met: bool,
    /// The end in force: after anti-sniping extensions, or when an operator closed it.
    ends_at: String,
    extend_seconds: u32,
    /// Null once closed.
    minimum_next_bid: Option<String>,
    highest_bid: Option<BidJson>,
    bid_count: u64,
    last_bid_ts: Option<String>,
    server_time: String,
    /// Only once closed: the winning bid, or null with `no_winner_reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    winner: Option<Option<BidJson>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    no_winner_reason: Option<&'static str>,
}

fn money(amount: Decimal) -> String {
    cents(amount).to_string()
}

impl AuctionJson {
    fn new(view: &AuctionView, now: DateTime<Utc>) -> Self {
        let (rules, standing) = (&view.rules, &view.standing);
        let highest = standing.highest.as_ref();
        let outcome = view.outcome(now);
        let (winner, no_winner_reason) = match &outcome {
            None => (None, None),
            Some(Outcome::Winner(w)) => (Some(Some(BidJson::from(w))), None),
            Some(Outcome::NoBids) => (Some(None), Some("no bids")),
            Some(Outcome::ReserveNotMet { .. }) => (Some(None), Some("reserve not met")),
        };
        Self {
            id: view.id.get(),
            title: view.title.clone(),
            description: view.description.clone(),
            status: if outcome.is_none() { "open" } else { "closed" },
            starting_price: money(rules.starting_price.get()),
            min_increment: money(rules.min_increment),
            has_reserve: rules.reserve_price.is_some(),
            reserve_met: rules.reserve_price.is_none_or(|reserve| highest.is_some_and(|h| h.price >= reserve)),
            ends_at: format_ts(&view.ends_at()),
            extend_seconds: rules.extend_seconds,
            minimum_next_bid: outcome.is_none().then(|| money(view.minimum_next_bid())),
            highest_bid: highest.map(BidJson::from),
            bid_count: standing.bid_count,
            last_bid_ts: standing.last_bid_ts.as_ref().map(format_ts),
            server_time: format_ts(&now),
            winner,
            no_winner_reason,
        }
    }
}

/// One auction as the board holds it: the stored standing plus this process's acked bids.
pub async fn get_auction(state: SharedState, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_auction_id(&path)?;
    let view = state.board.find_auction(id).await.map_err(ApiError::database)?;
    let view = view.ok_or_else(|| ApiError::NotFound(id.to_string()))?;
    Ok(HttpResponse::Ok().json(AuctionJson::new(&view, now_micros())))
}

/// `GET /api/auctions/{id}/bids`: the auction's latest bids (at most 20), newest first,
/// this process's acked bids included.
pub async fn recent_bids(state: SharedState, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_auction_id(&path)?;
    state.board.find_auction(id).await.map_err(ApiError::database)?.ok_or_else(|| ApiError::NotFound(id.to_string()))?;
    let bids = state.board.recent_bids(id, RECENT_BIDS_MAX).await.map_err(ApiError::database)?;
    let bids: Vec<serde_json::Value> = bids
        .iter()
        .map(|b| json!({ "bid_id": b.bid_id, "name": b.name, "price": money(b.price.get()), "bid_ts": format_ts(&b.bid_ts) }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "auction_id": id, "bids": bids })))
}

/// `GET /api/auctions`; serialized as it is (not through `json!`, which would build a map per
/// auction first and cost more than everything else the request does).
#[derive(Serialize)]
struct AuctionList {
    auctions: Vec<AuctionJson>,
    server_time: String,
}

/// The board's auctions (open, or ended in the last 7 days): open first (soonest end first),
/// then closed (latest end first). Before the board's first refresh it is read at once: a site
/// just started lists what MySQL holds, not an empty list; 503 if MySQL cannot say.
pub async fn list_auctions(state: SharedState) -> Result<HttpResponse, ApiError> {
    if state.board.age().is_none() {
        state.board.refresh().await.map_err(ApiError::database)?;
    }
    let now = now_micros();
    let auctions = state.board.auctions().iter().map(|view| AuctionJson::new(view, now)).collect();
    Ok(HttpResponse::Ok().json(AuctionList { auctions, server_time: format_ts(&now) }))
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when Kafka (with the bids topic), the registry and MySQL all answer.
pub async fn readyz(state: SharedState) -> HttpResponse {
    const LIMIT: Duration = Duration::from_secs(3);
    let kafka = {
        let state = state.clone();
        async move {
            let topic = state.readiness.kafka.topic.clone();
            let metadata = web::block(move || state.bidding.publisher().producer().client().fetch_metadata(Some(&topic), LIMIT)).await;
            match metadata {
                Ok(Ok(m)) if m.topics().first().is_some_and(|t| t.error().is_none() && !t.partitions().is_empty()) => Ok(()),
                Ok(Ok(_)) => Err("the bids topic does not exist yet".to_owned()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    let registry = async {
        let url = format!("{}/subjects", state.readiness.registry_url.trim_end_matches('/'));
        match state.readiness.http.get(url).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("answered {}", r.status())),
            Err(e) => Err(e.to_string()),
        }
    };
    // Bounded by the store's own connect and query timeouts.
    let mysql = async { state.store.ping().await.map_err(|e| e.to_string()) };
    let (kafka, registry, mysql) = tokio::join!(kafka, registry, mysql);
    let ready = kafka.is_ok() && registry.is_ok() && mysql.is_ok();
    let show = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".to_owned());
    // Informational: a board not refreshed lately is served on, as the last snapshot.
    let board = state.board.age().map_or("no snapshot loaded yet".to_owned(), |age| format!("snapshot {} ms old", age.as_millis()));
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "kafka": show(kafka),
        "schema_registry": show(registry),
        "mysql": show(mysql),
        "board": board,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_prices_keep_their_exact_digits() {
        let (_, price) = read_body(br#"{"name":"Ada","price":12.30}"#).unwrap();
        assert_eq!(price, "12.30");
        let (_, price) = read_body(br#"{"name":"Ada","price":"0.10"}"#).unwrap();
        assert_eq!(price, "0.10");
    }

    #[test]
    fn json_body_errors_name_the_field() {
        let field = |body: &[u8]| match read_body(body) {
            Err(ApiError::Invalid(e)) => e.field,
            Err(ApiError::BadBody(_)) => "body",
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(field(br#"{"price":"1"}"#), "name");
        assert_eq!(field(br#"{"name":7,"price":"1"}"#), "name");
        assert_eq!(field(br#"{"name":"Ada"}"#), "price");
        assert_eq!(field(br#"{"name":"Ada","price":true}"#), "price");
        assert_eq!(field(br#"{"name":"Ada","price":[1]}"#), "price");
        assert_eq!(field(b"not json"), "body");
        assert_eq!(field(br#"["Ada", "10"]"#), "body");
    }
}
