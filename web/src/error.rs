//! Errors of the JSON API, each mapped to a status code and a message that says what to fix.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use auction_common::auction::Refusal;
use auction_common::{BidId, ValidationError};
use serde_json::json;

use crate::idempotency::IdempotencyKey;
use crate::publish::PublishError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("body: {0}")]
    BadBody(String),
    #[error("auction {0} not found")]
    NotFound(String),
    #[error("bid {0} not found: this site process did not accept it and it is not in the auction database")]
    BidNotFound(BidId),
    /// Refused by the auction's rules: closed (409), or a price below the minimum (422).
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("Idempotency-Key: an earlier request with this key is still being processed; retry in a moment")]
    KeyInFlight,
    #[error("Idempotency-Key: this key was used for a different bid (another auction, name or price); use a new key for a new bid")]
    KeyReused,
    #[error("{0}; try again shortly")]
    Unavailable(String),
    #[error("too many bids in flight to Kafka (limit {0}); try again shortly")]
    Busy(usize),
    /// The bid was handed to Kafka and no ack came: it may or may not have been written.
    #[error("{cause}; bid {bid_id} may or may not have been recorded: retry with the same Idempotency-Key, or look it up at /api/bids/{bid_id}")]
    OutcomeUnknown { bid_id: BidId, cause: String },
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// `bid_id` is the bid that was being published, named in the answer when its outcome is unknown.
    pub fn from_publish(e: PublishError, bid_id: BidId) -> Self {
        match e {
            PublishError::Encoding(e) => {
                log::error!("encoding a valid bid failed: {e}");
                ApiError::Internal
            }
            e if e.outcome_unknown() => {
                log::warn!("bid {bid_id} outcome unknown: {e}");
                ApiError::OutcomeUnknown { bid_id, cause: e.to_string() }
            }
            other => {
                log::warn!("bid not accepted: {other}");
                ApiError::Unavailable(other.to_string())
            }
        }
    }

    /// The input field the error is about, if one: a form shows the message beside it.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ApiError::Invalid(e) => Some(e.field),
            ApiError::BadBody(_) => Some("body"),
            ApiError::Refused(Refusal::TooLow { .. }) => Some("price"),
            ApiError::KeyInFlight | ApiError::KeyReused => Some(IdempotencyKey::HEADER),
            _ => None,
        }
    }

    pub fn database(e: StoreError) -> Self {
        log::warn!("MySQL unavailable: {e}");
        ApiError::Unavailable("the auction database cannot be reached".into())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) | ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) | ApiError::BidNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Refused(Refusal::Closed { .. }) | ApiError::KeyInFlight => StatusCode::CONFLICT,
            ApiError::Refused(Refusal::TooLow { .. }) | ApiError::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) | ApiError::Busy(_) | ApiError::OutcomeUnknown { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unavailable(_) | ApiError::Busy(_) | ApiError::OutcomeUnknown { .. } | ApiError::KeyInFlight) {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        let mut body = json!({ "error": self.to_string() });
        if let Some(field) = self.field() {
            body["field"] = field.into();
        }
        match self {
            // The smallest price that would have been accepted, as a string with 2 decimals.
            ApiError::Refused(Refusal::TooLow { minimum, .. }) => body["minimum"] = minimum.to_string().into(),
            ApiError::OutcomeUnknown { bid_id, .. } => body["bid_id"] = bid_id.to_string().into(),
            _ => {}
        }
        response.json(body)
    }
}
