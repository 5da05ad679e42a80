//! The JSON API and the health endpoints.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use auction_common::{AuctionId, Bid, BidderName, Price, ValidationError};
use rdkafka::producer::Producer;
use serde::Deserialize;
use serde_json::{json, value::RawValue};

use crate::error::ApiError;
use crate::startup::SharedState;

/// Validates a bid, checks its auction exists, and produces it; returns once the broker acked.
/// The form and the JSON API both come through here.
pub async fn accept_bid(state: &SharedState, auction: &str, name: &str, price: &str) -> Result<Bid, ApiError> {
    let auction_id = parse_auction_id(auction)?;
    let name = BidderName::parse(name)?;
    let price = Price::parse(price)?;
    let auction = state.store.auction(auction_id).await.map_err(ApiError::database)?;
    match auction {
        None => return Err(ApiError::NotFound(auction_id.to_string())),
        Some(a) if !a.open => return Err(ApiError::Closed(auction_id.to_string())),
        Some(_) => {}
    }
    let bid = Bid::accept(auction_id, name, price);
    state.publisher.publish(&bid).await.map_err(ApiError::from_publish)?;
    Ok(bid)
}

pub fn parse_auction_id(raw: &str) -> Result<AuctionId, ApiError> {
    let shown: String = raw.chars().take(30).collect();
    raw.parse::<u64>()
        .ok()
        .and_then(|id| AuctionId::new(id).ok())
        .ok_or(ApiError::NotFound(format!("{shown:?}")))
}

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

pub async fn place_bid(state: SharedState, path: web::Path<String>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let (name, price) = read_body(&body)?;
    let bid = accept_bid(&state, &path, &name, &price).await?;
    Ok(HttpResponse::Accepted().json(bid))
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
            let metadata = web::block(move || state.publisher.producer().client().fetch_metadata(Some(&topic), LIMIT)).await;
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
    let mysql = async {
        match actix_web::rt::time::timeout(LIMIT, state.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 3 s".to_owned()),
        }
    };
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
