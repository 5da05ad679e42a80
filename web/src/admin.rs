//! Creating auctions: `POST /api/auctions` with `Authorization: Bearer <ADMIN_TOKEN>`, and the
//! `/admin` page, whose form carries the token typed into it.
//!
//! The token is checked before anything else is read, in constant time (SHA-256 digests of
//! both, compared with `subtle`), so neither the answer nor its timing tells how much of a
//! guess was right. The auction row and its `auction_standing` row are inserted in one
//! transaction, so the board never sees an auction without a standing. The board shows a new
//! auction at its next refresh (within `STANDING_REFRESH_MS`); its page and bids find it at once.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use auction_common::domain::{check_displayable, is_bidi_control, ValidationError};
use auction_common::{AuctionId, Price};
use chrono::{DateTime, SubsecRound, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::{Pool, TxOpts};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, value::RawValue};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tera::Context;
use tokio::runtime::Handle;

use crate::pages::{forbidden, render, FormSession};
use crate::security::csrf::Session;
use crate::security::{FrontDoor, Secret, DEV_ADMIN_TOKEN};
use crate::state::SharedState;
use crate::templates::ADMIN;

pub const TITLE_MAX_CHARS: usize = 200;
pub const DESCRIPTION_MAX_CHARS: usize = 2000;
/// The longest an auction may run, and the latest it may end: ten years, to catch a unit
/// mistake (milliseconds for seconds) rather than to limit anyone.
pub const MAX_RUN_SECS: i64 = 10 * 365 * 86_400;
pub const DEFAULT_EXTEND_SECONDS: u32 = 120;
/// The longest anti-sniping window: a day.
pub const MAX_EXTEND_SECONDS: u32 = 86_400;

/// Why an admin request is refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("Authorization: {0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("body: {0}")]
    BadBody(String),
    #[error("the auction database cannot be reached; try again shortly")]
    Unavailable,
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AdminError::Invalid(_) | AdminError::BadBody(_) => StatusCode::BAD_REQUEST,
            AdminError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        let body = match self {
            AdminError::Unauthorized(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"auction admin\""));
                json!({ "error": self.to_string() })
            }
            AdminError::Invalid(e) => json!({ "error": self.to_string(), "field": e.field }),
            AdminError::BadBody(_) => json!({ "error": self.to_string(), "field": "body" }),
            AdminError::Unavailable => {
                response.insert_header((header::RETRY_AFTER, "1"));
                json!({ "error": self.to_string() })
            }
        };
        response.json(body)
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> ValidationError {
    ValidationError { field, message: message.into() }
}

/// The admin token, kept as its digest: comparing digests of equal length in constant time
/// leaks neither the token's length nor how much of a guess matched.
pub struct AdminToken([u8; 32]);

impl AdminToken {
    pub fn new(secret: &Secret) -> Self {
        if secret.expose() == DEV_ADMIN_TOKEN {
            log::warn!("ADMIN_TOKEN is the development default: set a token of your own before this site faces the internet");
        }
        Self(Sha256::digest(secret.expose().as_bytes()).into())
    }

    pub fn matches(&self, given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        bool::from(digest.ct_eq(&self.0))
    }

    /// Checks `Authorization: Bearer <token>`.
    fn check_header(&self, req: &HttpRequest) -> Result<(), AdminError> {
        let value = req.headers().get(header::AUTHORIZATION).ok_or(AdminError::Unauthorized("missing; send Bearer <ADMIN_TOKEN>"))?;
        let value = value.to_str().map_err(|_| AdminError::Unauthorized("must be Bearer <ADMIN_TOKEN>"))?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(AdminError::Unauthorized("must be Bearer <ADMIN_TOKEN>"))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AdminError::Unauthorized("must be Bearer <ADMIN_TOKEN>"));
        }
        if !self.matches(token.trim()) {
            return Err(AdminError::Unauthorized("the token is not the admin token"));
        }
        Ok(())
    }
}

/// An auction to create, every field valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuction {
    pub title: String,
    pub description: String,
    pub starting_price: Price,
    pub min_increment: Decimal,
    pub reserve_price: Option<Price>,
    pub ends_at: DateTime<Utc>,
    pub extend_seconds: u32,
}

/// The fields as sent, as text; JSON and the form both come down to this.
#[derive(Debug, Default)]
struct Draft {
    title: Option<String>,
    description: Option<String>,
    starting_price: Option<String>,
    min_increment: Option<String>,
    reserve_price: Option<String>,
    ends_at: Option<String>,
    duration_seconds: Option<String>,
    extend_seconds: Option<String>,
}

fn price_field(field: &'static str, raw: &str) -> Result<Price, ValidationError> {
    Price::parse(raw).map_err(|e| invalid(field, e.message))
}

fn whole_number(field: &'static str, raw: &str, max: u64) -> Result<u64, ValidationError> {
    raw.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| invalid(field, format!("must be a whole number from 0 to {max}; got {:?}", raw.chars().take(30).collect::<String>())))
}

impl NewAuction {
    fn validate(draft: Draft, now: DateTime<Utc>) -> Result<Self, ValidationError> {
        let title = draft.title.as_deref().map(str::trim).unwrap_or_default();
        let chars = title.chars().count();
        if chars == 0 {
            return Err(invalid("title", format!("is required: 1 to {TITLE_MAX_CHARS} characters")));
        }
        if chars > TITLE_MAX_CHARS {
            return Err(invalid("title", format!("is {chars} characters long; at most {TITLE_MAX_CHARS} are allowed")));
        }
        check_displayable("title", title)?;

        let description = draft.description.as_deref().unwrap_or_default().replace("\r\n", "\n");
        let description = description.trim();
        let chars = description.chars().count();
        if chars > DESCRIPTION_MAX_CHARS {
            return Err(invalid("description", format!("is {chars} characters long; at most {DESCRIPTION_MAX_CHARS} are allowed")));
        }
        if description.chars().any(|c| (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c)) {
            return Err(invalid("description", "must not contain control characters other than newline and tab, nor bidirectional controls"));
        }

        let starting_price = price_field("starting_price", draft.starting_price.as_deref().ok_or_else(|| invalid("starting_price", "is required: a price such as 10.00"))?)?;
        let min_increment = price_field("min_increment", draft.min_increment.as_deref().ok_or_else(|| invalid("min_increment", "is required: an amount such as 1.00"))?)?.get();
        let reserve_price = match draft.reserve_price.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => Some(price_field("reserve_price", raw)?),
        };

        let latest = now + chrono::Duration::seconds(MAX_RUN_SECS);
        let ends_at = match (draft.ends_at.as_deref(), draft.duration_seconds.as_deref()) {
            (Some(_), Some(_)) => return Err(invalid("ends_at", "give either ends_at or duration_seconds, not both")),
            (None, None) => return Err(invalid("ends_at", "is required (RFC 3339, such as 2030-01-31T18:00:00Z), or duration_seconds instead")),
            (Some(raw), None) => {
                let shown: String = raw.chars().take(40).collect();
                let at = DateTime::parse_from_rfc3339(raw.trim())
                    .map_err(|_| invalid("ends_at", format!("must be a time in RFC 3339, such as 2030-01-31T18:00:00Z; got {shown:?}")))?
                    .with_timezone(&Utc)
                    .trunc_subsecs(6);
                if at <= now {
                    return Err(invalid("ends_at", format!("must be in the future; it is {shown} and now is {}", auction_common::domain::format_ts(&now))));
                }
                if at > latest {
                    return Err(invalid("ends_at", "must be within ten years"));
                }
                at
            }
            (None, Some(raw)) => {
                let secs = whole_number("duration_seconds", raw, MAX_RUN_SECS as u64)?;
                if secs == 0 {
                    return Err(invalid("duration_seconds", "must be at least 1"));
                }
                (now + chrono::Duration::seconds(secs as i64)).trunc_subsecs(6)
            }
        };
        let extend_seconds = match draft.extend_seconds.as_deref().map(str::trim) {
            None | Some("") => DEFAULT_EXTEND_SECONDS,
            Some(raw) => whole_number("extend_seconds", raw, u64::from(MAX_EXTEND_SECONDS))? as u32,
        };
        Ok(Self { title: title.to_owned(), description: description.to_owned(), starting_price, min_increment, reserve_price, ends_at, extend_seconds })
    }

    /// `{title, description?, starting_price, min_increment, reserve_price?, ends_at | duration_seconds, extend_seconds?}`;
    /// prices as numbers or strings, exact.
    pub fn from_json(body: &[u8], now: DateTime<Utc>) -> Result<Self, AdminError> {
        let expected = r#"must be a JSON object like {"title": "Lamp", "starting_price": "10.00", "min_increment": "1.00", "duration_seconds": 3600}"#;
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(AdminError::BadBody(expected.to_owned()));
        }
        let fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(body).map_err(|e| AdminError::BadBody(format!("{expected} ({e})")))?;
        let mut draft = Draft::default();
        for (name, raw) in &fields {
            let raw = raw.get();
            match name.as_str() {
                "title" => draft.title = json_text("title", raw)?,
                "description" => draft.description = json_text("description", raw)?,
                "starting_price" => draft.starting_price = json_number("starting_price", raw)?,
                "min_increment" => draft.min_increment = json_number("min_increment", raw)?,
                "reserve_price" => draft.reserve_price = json_number("reserve_price", raw)?,
                "ends_at" => draft.ends_at = json_text("ends_at", raw)?,
                "duration_seconds" => draft.duration_seconds = json_number("duration_seconds", raw)?,
                "extend_seconds" => draft.extend_seconds = json_number("extend_seconds", raw)?,
                other => {
                    let shown: String = other.chars().take(40).collect();
                    return Err(AdminError::BadBody(format!(
                        "unknown field {shown:?}; the fields are title, description, starting_price, min_increment, reserve_price, ends_at, duration_seconds, extend_seconds"
                    )));
                }
            }
        }
        Ok(Self::validate(draft, now)?)
    }
}

/// A JSON string field (null counts as absent).
fn json_text(field: &'static str, raw: &str) -> Result<Option<String>, ValidationError> {
    match raw {
        "null" => Ok(None),
        _ => serde_json::from_str::<String>(raw).map(Some).map_err(|_| invalid(field, "must be a string")),
    }
}

/// A JSON number or decimal string, as its exact digits (null counts as absent).
fn json_number(field: &'static str, raw: &str) -> Result<Option<String>, ValidationError> {
    match raw {
        "null" => Ok(None),
        _ if raw.starts_with('"') => serde_json::from_str::<String>(raw).map(Some).map_err(|_| invalid(field, "must be a number or a decimal string")),
        _ if raw.starts_with(|c: char| c.is_ascii_digit() || c == '-') => Ok(Some(raw.to_owned())),
        _ => Err(invalid(field, "must be a number or a decimal string, such as 12.50 or \"12.50\"")),
    }
}

/// Writes new auctions. Its own small pool: creating an auction never waits behind page reads.
pub struct AuctionWriter {
    pool: Pool,
    connect_timeout: Duration,
    query_timeout: Duration,
    /// Runs every MySQL call: a pooled connection belongs to the runtime that opened it, and
    /// each HTTP worker has its own (see `Store::call`).
    runtime: Handle,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no MySQL connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("MySQL did not answer within {0:?}")]
    QueryTimeout(Duration),
    #[error(transparent)]
    Mysql(#[from] mysql_async::Error),
    #[error("the MySQL call was cut short: {0}")]
    Interrupted(String),
}

impl AuctionWriter {
    pub fn new(pool: Pool, connect_timeout: Duration, query_timeout: Duration, runtime: Handle) -> Self {
        Self { pool, connect_timeout, query_timeout, runtime }
    }

    /// Inserts the auction and its standing (no bids, ending at `ends_at`) in one transaction.
    pub async fn create(&self, auction: NewAuction) -> Result<AuctionId, WriteError> {
        let (pool, connect, query) = (self.pool.clone(), self.connect_timeout, self.query_timeout);
        let task = self.runtime.spawn(async move {
            let mut conn = tokio::time::timeout(connect, pool.get_conn()).await.map_err(|_| WriteError::ConnectTimeout(connect))??;
            let insert = async move {
                let mut tx = conn.start_transaction(TxOpts::default()).await?;
                tx.exec_drop(
                    "INSERT INTO auction (title, description, starting_price, min_increment, reserve_price, ends_at, extend_seconds)
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        &auction.title,
                        &auction.description,
                        auction.starting_price.get(),
                        auction.min_increment,
                        auction.reserve_price.map(Price::get),
                        auction.ends_at.naive_utc(),
                        auction.extend_seconds,
                    ),
                )
                .await?;
                let id = tx.last_insert_id().ok_or_else(|| mysql_async::Error::Other("INSERT INTO auction gave no id".into()))?;
                tx.exec_drop(
                    "INSERT INTO auction_standing (auction_id, bid_count, current_ends_at, updated_at) VALUES (?, 0, ?, UTC_TIMESTAMP(6))",
                    (id, auction.ends_at.naive_utc()),
                )
                .await?;
                tx.commit().await?;
                Ok::<u64, mysql_async::Error>(id)
            };
            let id = tokio::time::timeout(query, insert).await.map_err(|_| WriteError::QueryTimeout(query))??;
            AuctionId::new(id).map_err(|e| WriteError::Mysql(mysql_async::Error::Other(Box::new(e))))
        });
        task.await.map_err(|e| WriteError::Interrupted(e.to_string()))?
    }
}

/// What the admin endpoints share, one per process.
pub struct Admin {
    token: AdminToken,
    writer: AuctionWriter,
}

impl Admin {
    pub fn new(token: &Secret, writer: AuctionWriter) -> Self {
        Self { token: AdminToken::new(token), writer }
    }

    async fn create(&self, auction: NewAuction) -> Result<AuctionId, AdminError> {
        let title = auction.title.clone();
        match self.writer.create(auction).await {
            Ok(id) => {
                log::info!("auction {id} created: {title:?}");
                Ok(id)
            }
            Err(e) => {
                log::warn!("creating auction {title:?} failed: {e}");
                Err(AdminError::Unavailable)
            }
        }
    }
}

/// `POST /api/auctions`.
pub async fn create_auction(admin: web::Data<Admin>, req: HttpRequest, body: web::Bytes) -> Result<HttpResponse, AdminError> {
    admin.token.check_header(&req)?;
    let auction = NewAuction::from_json(&body, Utc::now())?;
    let id = admin.create(auction).await?;
    Ok(HttpResponse::Created().insert_header((header::LOCATION, format!("/api/auctions/{id}"))).json(json!({ "id": id })))
}

// ---------------------------------------------------------------------------------------------
// The /admin page

/// The admin form as shown: its values (never the token) and the errors beside its fields.
#[derive(Debug, Serialize)]
struct AdminFormShown {
    title: String,
    description: String,
    starting_price: String,
    min_increment: String,
    reserve_price: String,
    duration: String,
    duration_unit: String,
    extend_seconds: String,
    errors: BTreeMap<&'static str, String>,
    message: Option<String>,
}

impl Default for AdminFormShown {
    fn default() -> Self {
        Self {
            title: String::new(),
            description: String::new(),
            starting_price: String::new(),
            min_increment: "1.00".into(),
            reserve_price: String::new(),
            duration: "7".into(),
            duration_unit: "days".into(),
            extend_seconds: DEFAULT_EXTEND_SECONDS.to_string(),
            errors: BTreeMap::new(),
            message: None,
        }
    }
}

#[derive(Serialize)]
struct Unit {
    value: &'static str,
    label: &'static str,
}

const UNITS: [(&str, &str, u64); 4] = [("minutes", "minutes", 60), ("hours", "hours", 3600), ("days", "days", 86_400), ("seconds", "seconds", 1)];

#[derive(Deserialize)]
pub struct AdminQuery {
    created: Option<u64>,
}

#[derive(Deserialize)]
pub struct AdminForm {
    csrf_token: Option<String>,
    #[serde(default)]
    admin_token: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    starting_price: String,
    #[serde(default)]
    min_increment: String,
    #[serde(default)]
    reserve_price: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    duration_unit: String,
    #[serde(default)]
    extend_seconds: String,
}

fn admin_page(state: &SharedState, door: &FrontDoor, req: &HttpRequest, created: Option<u64>, form: &AdminFormShown, status: StatusCode) -> HttpResponse {
    let now = Utc::now();
    let forms = FormSession::new(req, door, now);
    let mut context: Context = crate::pages::base_context(now);
    forms.add_to(&mut context);
    context.insert("created", &created);
    context.insert("form", form);
    context.insert("units", &UNITS.iter().map(|&(value, label, _)| Unit { value, label }).collect::<Vec<_>>());
    let info = req.connection_info();
    context.insert("origin", &format!("{}://{}", info.scheme(), info.host()));
    let mut response = render(&state.templates, ADMIN, status, &context, Some(&forms));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"auction admin\""));
    }
    response
}

/// `GET /admin`.
pub async fn page(state: SharedState, door: web::Data<FrontDoor>, req: HttpRequest, query: web::Query<AdminQuery>) -> HttpResponse {
    admin_page(&state, &door, &req, query.created, &AdminFormShown::default(), StatusCode::OK)
}

/// `POST /admin/auctions`: the form; 303 to `/admin?created=N` once created.
pub async fn create_from_form(
    state: SharedState,
    door: web::Data<FrontDoor>,
    admin: web::Data<Admin>,
    req: HttpRequest,
    form: web::Form<AdminForm>,
) -> HttpResponse {
    if let Err(e) = door.csrf.verify(Session::from_request(&req).as_ref(), form.csrf_token.as_deref(), Utc::now()) {
        return forbidden(&state.templates, &e, "/admin");
    }
    let mut shown = AdminFormShown {
        title: form.title.clone(),
        description: form.description.clone(),
        starting_price: form.starting_price.clone(),
        min_increment: form.min_increment.clone(),
        reserve_price: form.reserve_price.clone(),
        duration: form.duration.clone(),
        duration_unit: form.duration_unit.clone(),
        extend_seconds: form.extend_seconds.clone(),
        errors: BTreeMap::new(),
        message: None,
    };
    if !admin.token.matches(form.admin_token.trim()) {
        shown.errors.insert("admin_token", "is not the admin token (ADMIN_TOKEN)".into());
        shown.message = Some("The auction was not created: the admin token is wrong.".into());
        return admin_page(&state, &door, &req, None, &shown, StatusCode::UNAUTHORIZED);
    }
    let draft = form_draft(&form);
    let result = match draft {
        Ok(draft) => NewAuction::validate(draft, Utc::now()).map_err(AdminError::from),
        Err(e) => Err(AdminError::from(e)),
    };
    let auction = match result {
        Ok(auction) => auction,
        Err(AdminError::Invalid(e)) => {
            // The form asks for a duration in a unit; the rule speaks of seconds.
            let field = if e.field == "duration_seconds" { "duration" } else { e.field };
            shown.errors.insert(field, e.message.clone());
            shown.message = Some("The auction was not created: check the field marked below.".into());
            return admin_page(&state, &door, &req, None, &shown, StatusCode::BAD_REQUEST);
        }
        Err(e) => return message_for(&state, &e),
    };
    match admin.create(auction).await {
        Ok(id) => HttpResponse::SeeOther().insert_header((header::LOCATION, format!("/admin?created={id}"))).finish(),
        Err(e) => message_for(&state, &e),
    }
}

fn message_for(state: &SharedState, e: &AdminError) -> HttpResponse {
    crate::pages::message_page(&state.templates, e.status_code(), "The auction was not created", &format!("{e}."))
}

/// The form's fields as the rules read them: its duration and unit in seconds.
fn form_draft(form: &AdminForm) -> Result<Draft, ValidationError> {
    let unit = UNITS
        .iter()
        .find(|(value, _, _)| *value == form.duration_unit)
        .map(|&(_, _, secs)| secs)
        .ok_or_else(|| invalid("duration", "unit must be seconds, minutes, hours or days"))?;
    let amount = whole_number("duration", &form.duration, MAX_RUN_SECS as u64)?;
    let seconds = amount.checked_mul(unit).filter(|s| *s <= MAX_RUN_SECS as u64).ok_or_else(|| invalid("duration", "must be at most ten years"))?;
    let optional = |s: &str| (!s.trim().is_empty()).then(|| s.to_owned());
    Ok(Draft {
        title: Some(form.title.clone()),
        description: Some(form.description.clone()),
        starting_price: optional(&form.starting_price),
        min_increment: optional(&form.min_increment),
        reserve_price: optional(&form.reserve_price),
        ends_at: None,
        duration_seconds: Some(seconds.to_string()),
        extend_seconds: optional(&form.extend_seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: serde_json::Value) -> Result<NewAuction, AdminError> {
        NewAuction::from_json(body.to_string().as_bytes(), Utc::now())
    }

    fn field(body: serde_json::Value) -> &'static str {
        match parse(body.clone()) {
            Err(AdminError::Invalid(e)) => e.field,
            Err(AdminError::BadBody(_)) => "body",
            other => panic!("{body} -> {other:?}"),
        }
    }

    #[test]
    fn a_valid_auction_reads_exact_prices_and_defaults_its_window() {
        let a = parse(json!({"title": " Lamp ", "starting_price": 10.5, "min_increment": "0.50", "duration_seconds": 60})).unwrap();
        assert_eq!((a.title.as_str(), a.starting_price.to_string(), a.min_increment.to_string()), ("Lamp", "10.50".into(), "0.50".into()));
        assert_eq!((a.extend_seconds, a.reserve_price, a.description.as_str()), (120, None, ""));
        let secs = (a.ends_at - Utc::now()).num_seconds();
        assert!((58..=60).contains(&secs), "{secs}");
        let end = (Utc::now() + chrono::Duration::days(400)).trunc_subsecs(0);
        let in_paris = end.with_timezone(&chrono::FixedOffset::east_opt(7200).unwrap()).to_rfc3339();
        let a = parse(json!({"title": "Chair", "starting_price": "1", "min_increment": "1", "reserve_price": "99.99",
                             "ends_at": in_paris, "extend_seconds": 0, "description": "Oak.\r\nSturdy."}))
        .unwrap();
        assert_eq!(a.ends_at, end, "{in_paris} is read as UTC");
        assert_eq!((a.extend_seconds, a.reserve_price.map(|p| p.to_string())), (0, Some("99.99".into())));
        assert_eq!(a.description, "Oak.\nSturdy.");
    }

    #[test]
    fn invalid_fields_are_named() {
        let ok = json!({"title": "Lamp", "starting_price": "10", "min_increment": "1", "duration_seconds": 60});
        let with = |k: &str, v: serde_json::Value| {
            let mut b = ok.clone();
            b[k] = v;
            b
        };
        assert_eq!(field(with("title", json!(""))), "title");
        assert_eq!(field(with("title", json!("x".repeat(201)))), "title");
        assert_eq!(field(with("title", json!("\u{202E}pmaL"))), "title");
        assert_eq!(field(with("title", json!("\u{200B}"))), "title");
        assert_eq!(field(with("title", json!(7))), "title");
        assert_eq!(field(with("description", json!("x".repeat(2001)))), "description");
        assert_eq!(field(with("description", json!("a\u{2066}b"))), "description");
        assert_eq!(field(with("starting_price", json!("0"))), "starting_price");
        assert_eq!(field(with("starting_price", json!(1.005))), "starting_price");
        assert_eq!(field(with("starting_price", json!(true))), "starting_price");
        assert_eq!(field(with("min_increment", json!("-1"))), "min_increment");
        assert_eq!(field(with("reserve_price", json!("abc"))), "reserve_price");
        assert_eq!(field(with("duration_seconds", json!(0))), "duration_seconds");
        assert_eq!(field(with("duration_seconds", json!(-5))), "duration_seconds");
        assert_eq!(field(with("duration_seconds", json!(1.5))), "duration_seconds");
        assert_eq!(field(with("ends_at", json!("2001-01-01T00:00:00Z"))), "ends_at", "both given");
        assert_eq!(field(with("extend_seconds", json!(86_401))), "extend_seconds");
        assert_eq!(field(with("reserve", json!("1"))), "body", "a misspelt field is not ignored");
        let mut no_end = ok.clone();
        no_end.as_object_mut().unwrap().remove("duration_seconds");
        assert_eq!(field(no_end.clone()), "ends_at");
        let mut past = no_end.clone();
        past["ends_at"] = json!("2001-01-01T00:00:00Z");
        assert_eq!(field(past), "ends_at");
        let mut garbled = no_end;
        garbled["ends_at"] = json!("yesterday");
        assert_eq!(field(garbled), "ends_at");
        for body in [&b"[1]"[..], b"not json", b"{\"title\": }", b""] {
            assert!(matches!(NewAuction::from_json(body, Utc::now()), Err(AdminError::BadBody(_))), "{body:?}");
        }
    }

    #[test]
    fn the_token_matches_only_itself() {
        let token = AdminToken::new(&"s3cret".parse().unwrap());
        assert!(token.matches("s3cret"));
        for wrong in ["", "s3cre", "s3cret ", "S3CRET", "s3cret-and-more"] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn the_form_duration_is_read_in_its_unit() {
        let form = AdminForm {
            csrf_token: None,
            admin_token: String::new(),
            title: "Lamp".into(),
            description: String::new(),
            starting_price: "10".into(),
            min_increment: "1".into(),
            reserve_price: " ".into(),
            duration: "90".into(),
            duration_unit: "minutes".into(),
            extend_seconds: String::new(),
        };
        let draft = form_draft(&form).unwrap();
        assert_eq!(draft.duration_seconds.as_deref(), Some("5400"));
        assert_eq!(draft.reserve_price, None);
        let bad_unit = AdminForm { duration_unit: "weeks".into(), ..form };
        assert_eq!(form_draft(&bad_unit).unwrap_err().field, "duration");
    }
}
