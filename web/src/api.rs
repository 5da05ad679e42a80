//! The JSON API and the health endpoints: adapters over [`crate::bidding`] and the store.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use auction_common::{BidId, ValidationError};
use rdkafka::producer::Producer;
use serde::Deserialize;
use serde_json::{json, value::RawValue};

use crate::bidding::{parse_auction_id, BidRequest, BidStatus};
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

pub async fn get_auction(state: SharedState, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_auction_id(&path)?;
    let view = state.store.auction_view(id).await.map_err(ApiError::database)?;
    let view = view.ok_or_else(|| ApiError::NotFound(id.to_string()))?;
    Ok(HttpResponse::Ok().json(view))
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
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "kafka": show(kafka),
        "schema_registry": show(registry),
        "mysql": show(mysql),
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
