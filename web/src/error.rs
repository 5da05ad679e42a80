//! Errors of the JSON API, each mapped to a status code and a message that says what to fix.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use auction_common::ValidationError;
use serde_json::json;

use crate::publish::PublishError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("body: {0}")]
    BadBody(String),
    #[error("auction {0} not found")]
    NotFound(String),
    #[error("auction {0} is closed and takes no more bids")]
    Closed(String),
    #[error("{0}; try again shortly")]
    Unavailable(String),
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn from_publish(e: PublishError) -> Self {
        match e {
            PublishError::Encoding(e) => {
                log::error!("encoding a valid bid failed: {e}");
                ApiError::Internal
            }
            other => {
                log::warn!("bid not accepted: {other}");
                ApiError::Unavailable(other.to_string())
            }
        }
    }

    pub fn database(e: mysql_async::Error) -> Self {
        log::warn!("MySQL unavailable: {e}");
        ApiError::Unavailable("the auction database cannot be reached".into())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) | ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Closed(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::Unavailable(_) = self {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        let body = match self {
            ApiError::Invalid(e) => json!({ "error": self.to_string(), "field": e.field }),
            ApiError::BadBody(_) => json!({ "error": self.to_string(), "field": "body" }),
            _ => json!({ "error": self.to_string() }),
        };
        response.json(body)
    }
}
