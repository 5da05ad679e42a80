//! `GET /metrics`: what the site did with the bids it was sent, in Prometheus text format.
//!
//! - `auction_bids_accepted_total`: bids the broker acked (each bid once: a replayed
//!   idempotency key is not counted again), so it can be held against the rows the db-writer
//!   stores.
//! - `auction_bids_refused_total{reason}`: bid requests answered with anything else. The front
//!   door's refusals are counted by [`count_refusals`] around the two bid routes (`invalid` 400,
//!   `csrf` 403, `not_found` 404, `too_large` 413, `rate_limited` 429); the use case counts
//!   what it decides itself ([`refusal_reason`]: `closed`, `too_low`, `busy`, `unavailable`,
//!   `outcome_unknown`, `key_in_flight`, `key_reused`, `internal`). The two never see the same
//!   status, so each refusal is counted once.
//! - `auction_produce_latency_seconds{outcome}`: from handing a bid to the producer to the
//!   broker's ack (`acked`) or to the error (`failed`).
//! - `auction_bids_in_flight`: bids being checked, encoded or waiting for Kafka's ack, read at
//!   scrape time (at most `MAX_BIDS_IN_FLIGHT`).
//!
//! One registry per [`crate::Application`], not the process-wide default one: two sites in one
//! process (the tests) count apart.

use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use auction_common::auction::Refusal;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::error::ApiError;
use crate::state::SharedState;

pub struct WebMetrics {
    registry: Registry,
    accepted: IntCounter,
    refused: IntCounterVec,
    produce_latency: HistogramVec,
    in_flight: IntGauge,
}

/// Kafka acks in a few ms on a healthy cluster; the delivery timeout is 5 s by default.
const PRODUCE_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl WebMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let accepted = IntCounter::new("auction_bids_accepted_total", "Bids the broker acked (each bid once)")?;
        let refused = IntCounterVec::new(
            Opts::new("auction_bids_refused_total", "Bid requests not accepted, by reason"),
            &["reason"],
        )?;
        let produce_latency = HistogramVec::new(
            HistogramOpts::new("auction_produce_latency_seconds", "From handing a bid to the producer to the broker's ack or the error")
                .buckets(PRODUCE_BUCKETS.to_vec()),
            &["outcome"],
        )?;
        let in_flight = IntGauge::new("auction_bids_in_flight", "Bids being checked, encoded or waiting for Kafka's ack")?;
        registry.register(Box::new(accepted.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(produce_latency.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(Self { registry, accepted, refused, produce_latency, in_flight })
    }

    pub fn accepted(&self) {
        self.accepted.inc();
    }

    pub fn refused(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
    }

    pub fn produced(&self, took: Duration, acked: bool) {
        let outcome = if acked { "acked" } else { "failed" };
        self.produce_latency.with_label_values(&[outcome]).observe(took.as_secs_f64());
    }

    /// The text exposition of every metric, with the in-flight gauge read now.
    fn render(&self, in_flight: usize) -> Result<Vec<u8>, prometheus::Error> {
        self.in_flight.set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        let mut out = Vec::with_capacity(4096);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

/// The reason a refusal of the use case is counted under; `None` for the refusals the front
/// door counts (see the module doc), so none is counted twice.
pub fn refusal_reason(e: &ApiError) -> Option<&'static str> {
    Some(match e {
        ApiError::Refused(Refusal::Closed { .. }) => "closed",
        ApiError::Refused(Refusal::TooLow { .. }) => "too_low",
        ApiError::KeyInFlight => "key_in_flight",
        ApiError::KeyReused => "key_reused",
        ApiError::Unavailable(_) => "unavailable",
        ApiError::Busy(_) => "busy",
        ApiError::OutcomeUnknown { .. } => "outcome_unknown",
        ApiError::Internal => "internal",
        ApiError::Invalid(_) | ApiError::BadBody(_) | ApiError::NotFound(_) | ApiError::BidNotFound(_) => return None,
    })
}

/// The reason a front-door refusal is counted under, by its status.
fn front_door_reason(status: StatusCode) -> Option<&'static str> {
    match status {
        StatusCode::BAD_REQUEST => Some("invalid"),
        StatusCode::FORBIDDEN => Some("csrf"),
        StatusCode::NOT_FOUND => Some("not_found"),
        StatusCode::PAYLOAD_TOO_LARGE => Some("too_large"),
        StatusCode::TOO_MANY_REQUESTS => Some("rate_limited"),
        _ => None,
    }
}

/// Around the whole app (outside the body limit, which answers 413 before any route): counts
/// the front door's refusals of a bid, that is a POST to `/api/auctions/{id}/bids` or
/// `/auctions/{id}/bids`.
pub async fn count_refusals(req: ServiceRequest, next: Next<impl MessageBody + 'static>) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let is_bid = req.method() == actix_web::http::Method::POST && is_bid_path(req.path());
    let metrics = is_bid.then(|| req.app_data::<web::Data<WebMetrics>>().cloned()).flatten();
    let response = next.call(req).await?.map_into_boxed_body();
    if let (Some(m), Some(reason)) = (metrics, front_door_reason(response.status())) {
        m.refused(reason);
    }
    Ok(response)
}

/// `/api/auctions/{id}/bids` or `/auctions/{id}/bids`, whatever `{id}` is (a bad id is a refusal too).
fn is_bid_path(path: &str) -> bool {
    let rest = path.strip_prefix("/api").unwrap_or(path);
    rest.strip_prefix("/auctions/")
        .and_then(|r| r.strip_suffix("/bids"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

pub async fn metrics(state: SharedState, metrics: web::Data<WebMetrics>) -> HttpResponse {
    match metrics.render(state.bidding.in_flight()) {
        Ok(body) => HttpResponse::Ok().insert_header((header::CONTENT_TYPE, TextEncoder::new().format_type())).body(body),
        Err(e) => {
            log::error!("encoding the metrics failed: {e}");
            HttpResponse::InternalServerError().finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bid_paths_count_as_bids() {
        for path in ["/api/auctions/1/bids", "/auctions/7/bids", "/auctions/x/bids"] {
            assert!(is_bid_path(path), "{path}");
        }
        for path in ["/api/auctions", "/api/auctions/1", "/auctions/1/bids/2", "/auctions//bids", "/api/bids/1", "/admin/auctions"] {
            assert!(!is_bid_path(path), "{path}");
        }
    }

    #[test]
    fn the_exposition_names_each_metric_with_its_unit() {
        let m = WebMetrics::new().unwrap();
        m.accepted();
        m.refused("too_low");
        m.produced(Duration::from_millis(3), true);
        let text = String::from_utf8(m.render(2).unwrap()).unwrap();
        assert!(text.contains("auction_bids_accepted_total 1"), "{text}");
        assert!(text.contains("auction_bids_refused_total{reason=\"too_low\"} 1"), "{text}");
        assert!(text.contains("auction_produce_latency_seconds_count{outcome=\"acked\"} 1"), "{text}");
        assert!(text.contains("auction_bids_in_flight 2"), "{text}");
    }
}
