//! The front door: what every request passes before a handler sees it, and the checks a form
//! post must pass.
//!
//! - Headers on every response ([`headers`]): a Content-Security-Policy without inline script
//!   or style (the pages load `/static/site.css` and `/static/site.js`), no sniffing, no
//!   framing, no referrer to other sites.
//! - Bodies over [`MAX_BODY_BYTES`] get a 413 with a message that says so ([`limit_body`]).
//! - Bid endpoints are rate limited per client address ([`limit_bids`], [`rate_limit`]).
//! - Forms carry a CSRF token signed with a key every replica shares ([`csrf`]), so a page
//!   rendered by one replica can be posted to another.

pub mod csrf;
pub mod rate_limit;

use std::convert::Infallible;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use self::csrf::Csrf;
use self::rate_limit::RateLimiter;

/// The largest request body accepted, JSON and forms alike.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Development defaults of the secrets: fine on a laptop, public in this repository, so every
/// deployment must set its own (the site logs a warning while they are in use).
pub const DEV_CSRF_SECRET: &str = "dev-csrf-secret-change-me";
pub const DEV_ADMIN_TOKEN: &str = "dev-admin-token";

/// A secret setting: never shown by `Debug`, so a logged config cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// A secret must not be empty: an empty admin token would let anyone in.
fn non_empty_secret(raw: &str) -> Result<Secret, String> {
    if raw.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(Secret(raw.to_owned()))
}

const DEFAULT_CSRF_TOKEN_LIFETIME_SECS: u64 = 4 * 3600;
const DEFAULT_BID_RATE_PER_SEC: u32 = 100_000;
const DEFAULT_BID_RATE_BURST: u32 = 200_000;
const DEFAULT_BID_RATE_CLIENTS_MAX: usize = 100_000;

/// Secrets and limits of the front door.
#[derive(clap::Args, Debug, Clone)]
pub struct SecurityConfig {
    /// Key that signs the CSRF tokens of the forms (HMAC-SHA256); every web replica must have the
    /// same. The default is for development only: set your own (32 random bytes, e.g.
    /// `openssl rand -hex 32`).
    #[arg(long = "csrf-secret", env = "CSRF_SECRET", default_value = DEV_CSRF_SECRET, hide_env_values = true,
          value_parser = non_empty_secret)]
    pub csrf_secret: Secret,
    /// How long a rendered form stays valid, in seconds: a form posted later gets a 403 asking
    /// to reload the page.
    #[arg(long = "csrf-token-lifetime-secs", env = "CSRF_TOKEN_LIFETIME_SECS", default_value_t = DEFAULT_CSRF_TOKEN_LIFETIME_SECS,
          value_parser = clap::value_parser!(u64).range(60..=30 * 86_400))]
    pub csrf_token_lifetime_secs: u64,
    /// Bearer token of `POST /api/auctions` and of the `/admin` page. The default is for
    /// development only: set your own.
    #[arg(long = "admin-token", env = "ADMIN_TOKEN", default_value = DEV_ADMIN_TOKEN, hide_env_values = true,
          value_parser = non_empty_secret)]
    pub admin_token: Secret,
    /// Bids per second one client address may place on average (API and form together).
    #[arg(long = "bid-rate-per-sec", env = "BID_RATE_PER_SEC", default_value_t = DEFAULT_BID_RATE_PER_SEC,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub bid_rate_per_sec: u32,
    /// Bids one client address may place at once after a quiet spell (the bucket's size).
    #[arg(long = "bid-rate-burst", env = "BID_RATE_BURST", default_value_t = DEFAULT_BID_RATE_BURST,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub bid_rate_burst: u32,
    /// Most client addresses the rate limit tracks at once; idle ones are forgotten first.
    #[arg(long = "bid-rate-clients-max", env = "BID_RATE_CLIENTS_MAX", default_value_t = DEFAULT_BID_RATE_CLIENTS_MAX)]
    pub bid_rate_clients_max: usize,
    /// Take the client's address from the last entry of `X-Forwarded-For` (the one the proxy in
    /// front added). Only behind such a proxy: otherwise every client could pick its address.
    #[arg(long = "trust-x-forwarded-for", env = "TRUST_X_FORWARDED_FOR", default_value_t = false)]
    pub trust_x_forwarded_for: bool,
}

impl Default for SecurityConfig {
    /// The same values as the flags' defaults.
    fn default() -> Self {
        Self {
            csrf_secret: Secret(DEV_CSRF_SECRET.to_owned()),
            csrf_token_lifetime_secs: DEFAULT_CSRF_TOKEN_LIFETIME_SECS,
            admin_token: Secret(DEV_ADMIN_TOKEN.to_owned()),
            bid_rate_per_sec: DEFAULT_BID_RATE_PER_SEC,
            bid_rate_burst: DEFAULT_BID_RATE_BURST,
            bid_rate_clients_max: DEFAULT_BID_RATE_CLIENTS_MAX,
            trust_x_forwarded_for: false,
        }
    }
}

/// The front door's shared state, one per process (every HTTP worker uses the same).
pub struct FrontDoor {
    pub csrf: Csrf,
    pub bids: RateLimiter,
    trust_x_forwarded_for: bool,
}

impl FrontDoor {
    pub fn new(config: &SecurityConfig) -> Self {
        if config.csrf_secret.expose() == DEV_CSRF_SECRET {
            log::warn!("CSRF_SECRET is the development default: set a secret of your own before this site faces the internet");
        }
        Self {
            csrf: Csrf::new(&config.csrf_secret, Duration::from_secs(config.csrf_token_lifetime_secs)),
            bids: RateLimiter::new(config.bid_rate_per_sec, config.bid_rate_burst, config.bid_rate_clients_max),
            trust_x_forwarded_for: config.trust_x_forwarded_for,
        }
    }

    /// The address a rate limit counts against: the peer, or what the trusted proxy saw.
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        if self.trust_x_forwarded_for {
            let forwarded = req.headers().get_all("x-forwarded-for").filter_map(|v| v.to_str().ok()).last();
            if let Some(ip) = forwarded.and_then(|v| v.rsplit(',').next()).and_then(|ip| ip.trim().parse().ok()) {
                return Some(ip);
            }
        }
        req.peer_addr().map(|a| a.ip())
    }
}

/// The Content-Security-Policy of every response: nothing inline, nothing from elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Security headers added to every response (a handler's own value of one of them wins).
pub fn headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::REFERRER_POLICY, "same-origin"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add(("cross-origin-opener-policy", "same-origin"))
}

/// Whether the answer to this request is JSON (the API) rather than a page.
fn wants_json(req: &HttpRequest) -> bool {
    req.path().starts_with("/api/")
}

/// A refusal in the form the client reads: `{"error": …}` for the API, a message page otherwise.
fn refusal(req: &HttpRequest, status: StatusCode, field: Option<&str>, title: &str, message: &str) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    response.insert_header((header::CACHE_CONTROL, "no-store"));
    if wants_json(req) {
        let body = match field {
            Some(field) => json!({ "error": format!("{field}: {message}"), "field": field }),
            None => json!({ "error": message }),
        };
        return response.json(body);
    }
    match req.app_data::<crate::state::SharedState>() {
        Some(state) => crate::pages::message_page(&state.templates, status, title, message),
        None => response.content_type("text/plain; charset=utf-8").body(format!("{title}\n\n{message}\n")),
    }
}

fn too_large(req: &HttpRequest, length: Option<usize>) -> HttpResponse {
    let size = length.map(|n| format!("is {n} bytes; ")).unwrap_or_default();
    let message = format!("{size}at most {MAX_BODY_BYTES} bytes (16 KiB) are accepted");
    refusal(req, StatusCode::PAYLOAD_TOO_LARGE, Some("body"), "Too much data", &message)
}

/// Refuses bodies over [`MAX_BODY_BYTES`]: at once when `Content-Length` says so, and with the
/// same message when an extractor finds out while reading a body sent without one (every
/// extractor's limit is the same, set in the routes).
pub async fn limit_body(req: ServiceRequest, next: Next<impl MessageBody + 'static>) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let length = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<usize>().ok());
    if length.is_some_and(|n| n > MAX_BODY_BYTES) {
        let response = too_large(req.request(), length);
        return Ok(req.into_response(response));
    }
    let response = next.call(req).await?;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let (req, _) = response.into_parts();
        let replaced = too_large(&req, None);
        return Ok(ServiceResponse::new(req, replaced));
    }
    Ok(response.map_into_boxed_body())
}

/// Counts a bid request against its client's rate limit; over it, a 429 with `Retry-After`.
pub async fn limit_bids(req: ServiceRequest, next: Next<impl MessageBody + 'static>) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(door) = req.app_data::<web::Data<FrontDoor>>().cloned() else {
        log::error!("the bid rate limit is not configured (no FrontDoor in the app data): bids are not limited");
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    if let Some(ip) = door.client_ip(req.request()) {
        if let Err(wait) = door.bids.check(ip, Instant::now()) {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            log::debug!("rate limit: bid from {ip} refused, retry in {secs} s");
            let message = format!(
                "too many bids from your address (at most {} a second, {} at once); try again in {secs} s",
                door.bids.rate_per_sec(),
                door.bids.burst()
            );
            let mut response = refusal(req.request(), StatusCode::TOO_MANY_REQUESTS, None, "Slow down", &message);
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
            return Ok(req.into_response(response));
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Only {
        #[command(flatten)]
        security: SecurityConfig,
    }

    #[test]
    fn defaults_match_the_flags_and_secrets_never_show_in_debug_output() {
        let parsed = Only::try_parse_from(["x"]).expect("defaults parse").security;
        assert_eq!(format!("{parsed:?}"), format!("{:?}", SecurityConfig::default()));
        let custom = Only::try_parse_from(["x", "--admin-token", "s3cret-token", "--csrf-secret", "k3y"]).expect("parse").security;
        let shown = format!("{custom:?}");
        assert!(!shown.contains("s3cret-token") && !shown.contains("k3y"), "{shown}");
        assert!(Only::try_parse_from(["x", "--admin-token", ""]).is_err(), "an empty token would let anyone in");
        assert!(Only::try_parse_from(["x", "--bid-rate-per-sec", "0"]).is_err());
    }

    #[test]
    fn the_policy_allows_nothing_inline() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
        for directive in ["script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"] {
            assert!(CONTENT_SECURITY_POLICY.contains(directive), "{directive}");
        }
    }
}
