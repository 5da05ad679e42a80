//! The HTML site: `/` lists the open auctions and the recently closed ones; `/auctions/{id}`
//! shows one with its bid form, its latest bids and, once closed, how it ended. Both read the
//! auction board (memory, refreshed every second, plus the bids this process acked), never
//! MySQL per view, except an auction page's latest bids (cached a second per auction).
//!
//! A form post answers with POST/redirect/GET: the redirect leads to the auction page, which
//! says "Bid added!" with the bid's id once the broker acked it. A refused form comes back with
//! the values typed and the message beside the field it concerns.
//!
//! Each form carries an idempotency key made when the page was rendered (a refused form comes
//! back with the same key: sending it twice places its bid at most once) and a CSRF token
//! (see [`crate::security::csrf`]).
//!
//! Money reads `1,234.50`; times read "3 min left" / "2 s ago", with the exact UTC time in
//! the `datetime` and `title` of a `<time>`. `/static/site.js` keeps them ticking against the
//! server's clock; without it the pages work the same, with the times as rendered.

use std::sync::LazyLock;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use auction_common::auction::{Leader, Outcome, Refusal};
use auction_common::domain::format_ts;
use auction_common::{AuctionId, BidId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tera::Context;

use crate::bidding::{parse_auction_id, BidRequest, BidStatus};
use crate::board::{AuctionView, RECENT_BIDS_MAX};
use crate::error::ApiError;
use crate::idempotency::IdempotencyKey;
use crate::rendered::NOW_MS_MARK;
use crate::security::csrf::{CsrfError, Session};
use crate::security::FrontDoor;
use crate::state::{Listing, SharedState};
use crate::templates::{Templates, AUCTION, DASHBOARD, INDEX, MESSAGE};

/// How many closed auctions `/` lists.
const RECENTLY_CLOSED_MAX: usize = 10;
/// How many open auctions a page of `/` lists.
pub const HOME_PAGE_SIZE: usize = 50;
/// A board older than this is said to be stale on `/`.
const STALE_AFTER_SECS: u64 = 5;

// ---------------------------------------------------------------------------------------------
// Static files

/// A file served under `/static/`, embedded. Its URL carries a hash of its content, so it can
/// be cached for a year and a new build is still fetched at once.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    url: String,
}

impl Asset {
    fn new(path: &str, body: &'static str, content_type: &'static str) -> Self {
        let digest = Sha256::digest(body.as_bytes());
        let version: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        Self { body, content_type, url: format!("{path}?v={version}") }
    }

    fn respond(&self) -> HttpResponse {
        HttpResponse::Ok()
            .content_type(self.content_type)
            .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
            .body(self.body)
    }
}

static CSS: LazyLock<Asset> = LazyLock::new(|| Asset::new("/static/site.css", include_str!("../static/site.css"), "text/css; charset=utf-8"));
static JS: LazyLock<Asset> =
    LazyLock::new(|| Asset::new("/static/site.js", include_str!("../static/site.js"), "text/javascript; charset=utf-8"));
static LIVE_JS: LazyLock<Asset> =
    LazyLock::new(|| Asset::new("/static/live.js", include_str!("../static/live.js"), "text/javascript; charset=utf-8"));

pub async fn stylesheet() -> HttpResponse {
    CSS.respond()
}

pub async fn script() -> HttpResponse {
    JS.respond()
}

pub async fn live_script() -> HttpResponse {
    LIVE_JS.respond()
}

// ---------------------------------------------------------------------------------------------
// How money and time read

/// An amount as people read it: thousands separators and two decimals (`1,234.50`).
pub fn money(amount: Decimal) -> String {
    let rounded = amount.round_dp(2);
    let text = format!("{:.2}", rounded.abs());
    let (whole, cents) = text.split_once('.').unwrap_or((&text, "00"));
    let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if rounded.is_sign_negative() && !rounded.is_zero() { "-" } else { "" };
    format!("{sign}{grouped}.{cents}")
}

/// A span of time in words; `/static/site.js` words it the same way.
fn span(secs: i64) -> String {
    let secs = secs.max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    // The larger unit, and the next one down when it is not zero.
    let (major, minor) = match secs {
        0..60 => (format!("{secs} s"), 0),
        60..600 => (format!("{m} min"), secs % 60),
        600..3600 => (format!("{m} min"), 0),
        3600..86_400 => (format!("{h} h"), m % 60),
        _ => (format!("{d} d"), h % 24),
    };
    let unit = match secs {
        60..600 => "s",
        3600..86_400 => "min",
        _ => "h",
    };
    if minor == 0 { major } else { format!("{major} {minor} {unit}") }
}

/// A moment as a page shows it: in words relative to the page's time, and exactly.
#[derive(Debug, Serialize)]
struct Moment {
    /// RFC 3339, UTC, microseconds.
    exact: String,
    /// Milliseconds since the epoch, for the script.
    ms: i64,
    relative: String,
}

impl Moment {
    fn new(at: DateTime<Utc>, relative: String) -> Self {
        Self { exact: format_ts(&at), ms: at.timestamp_millis(), relative }
    }

    /// "3 min left" (whole seconds rounded up, so it says "0 s" only once it has ended).
    fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        let millis = (at - now).num_milliseconds().max(0);
        Self::new(at, format!("{} left", span((millis + 999) / 1000)))
    }

    /// "2 s ago".
    fn since(at: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        Self::new(at, format!("{} ago", span((now - at).num_seconds())))
    }
}

// ---------------------------------------------------------------------------------------------
// What the templates get

#[derive(Debug, Serialize)]
struct LeaderShown {
    name: String,
    price: String,
    at: Moment,
}

impl LeaderShown {
    fn new(leader: &Leader, now: DateTime<Utc>) -> Self {
        Self { name: leader.name.to_string(), price: money(leader.price.get()), at: Moment::since(leader.bid_ts, now) }
    }
}

/// How a closed auction ended, in words.
#[derive(Debug, Serialize)]
struct OutcomeShown {
    /// `winner`, `no_bids` or `reserve_not_met` (a CSS class).
    kind: &'static str,
    /// One line, for the list on `/`.
    summary: String,
    headline: String,
    detail: String,
}

impl OutcomeShown {
    fn new(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Winner(w) => Self {
                kind: "winner",
                summary: format!("won by {} with {}", w.name, money(w.price.get())),
                headline: format!("Won by {}", w.name),
                detail: format!("with a bid of {}.", money(w.price.get())),
            },
            Outcome::NoBids => Self {
                kind: "no_bids",
                summary: "no winner: no bids".into(),
                headline: "No winner".into(),
                detail: "The auction ended without any bids.".into(),
            },
            Outcome::ReserveNotMet { highest } => Self {
                kind: "reserve_not_met",
                summary: format!("no winner: the reserve price was not met (highest bid {})", money(highest.price.get())),
                headline: "No winner: reserve not met".into(),
                detail: format!("The highest bid, {} by {}, did not meet the reserve price.", money(highest.price.get()), highest.name),
            },
        }
    }
}

/// An auction on `/`.
#[derive(Debug, Serialize)]
struct Card {
    id: u64,
    title: String,
    highest: Option<LeaderShown>,
    bid_count: u64,
    ends: Moment,
    starting_price: String,
    minimum_next_bid: String,
    outcome: Option<OutcomeShown>,
}

impl Card {
    fn new(view: &AuctionView, now: DateTime<Utc>) -> Self {
        let outcome = view.outcome(now);
        let ends = if outcome.is_some() { Moment::since(view.ends_at(), now) } else { Moment::until(view.ends_at(), now) };
        Self {
            id: view.id.get(),
            title: view.title.clone(),
            highest: view.standing.highest.as_ref().map(|h| LeaderShown::new(h, now)),
            bid_count: view.standing.bid_count,
            ends,
            starting_price: money(view.rules.starting_price.get()),
            minimum_next_bid: money(view.minimum_next_bid()),
            outcome: outcome.as_ref().map(OutcomeShown::new),
        }
    }
}

/// One auction on its page.
#[derive(Debug, Serialize)]
struct Detail {
    #[serde(flatten)]
    card: Card,
    description: String,
    open: bool,
    min_increment: String,
    /// Whether there is a reserve and whether it is met; never its amount.
    reserve: &'static str,
    extend_note: Option<String>,
    /// As the price field takes it (no separators), for its placeholder.
    minimum_next_bid_plain: String,
}

impl Detail {
    fn new(view: &AuctionView, now: DateTime<Utc>) -> Self {
        let card = Card::new(view, now);
        let open = card.outcome.is_none();
        let reserve = match (view.rules.reserve_price, &view.standing.highest) {
            (None, _) => "none",
            (Some(reserve), Some(h)) if h.price >= reserve => "met",
            (Some(_), _) if open => "not met yet",
            (Some(_), _) => "not met",
        };
        let extend = view.rules.extend_seconds;
        let extend_note = (extend > 0).then(|| {
            let window = span(i64::from(extend));
            format!("a bid in the last {window} moves the end to {window} after it")
        });
        Self {
            card,
            description: view.description.clone(),
            open,
            min_increment: money(view.rules.min_increment),
            reserve,
            extend_note,
            minimum_next_bid_plain: view.minimum_next_bid().to_string(),
        }
    }
}

#[derive(Debug, Serialize)]
struct BidRow {
    bid_id: String,
    name: String,
    price: String,
    at: Moment,
}

/// The bid named by `?placed=`, as the page shows it.
#[derive(Debug, Serialize)]
struct Placed {
    bid_id: String,
    name: String,
    price: String,
    /// As the form takes it: "1234.50".
    price_plain: String,
    at: Moment,
    /// Whether the db-writer has stored it in MySQL yet.
    recorded: bool,
}

/// The bid form: what was typed and why it was refused, or a fresh one.
#[derive(Debug, Default, Serialize)]
struct BidFormShown {
    name: String,
    price: String,
    idempotency_key: String,
    name_error: Option<String>,
    price_error: Option<String>,
    /// What is not about one field (the auction closed, Kafka did not answer…).
    message: Option<String>,
}

impl BidFormShown {
    fn fresh() -> Self {
        Self { idempotency_key: new_form_key(), ..Self::default() }
    }
}

fn new_form_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// What every page gets: the server's clock and the static files' URLs.
pub(crate) fn base_context(now: DateTime<Utc>) -> Context {
    let mut context = Context::new();
    context.insert("server_now", &format_ts(&now));
    context.insert("server_now_ms", &now.timestamp_millis());
    context.insert("css_url", &CSS.url);
    context.insert("js_url", &JS.url);
    context.insert("live_js_url", &LIVE_JS.url);
    context
}

/// A page with forms: their CSRF token, and the session cookie it is bound to if the browser
/// has none yet.
pub(crate) struct FormSession {
    token: String,
    set_cookie: Option<String>,
}

impl FormSession {
    pub(crate) fn new(req: &HttpRequest, door: &FrontDoor, now: DateTime<Utc>) -> Self {
        let (session, set_cookie) = Session::for_request(req);
        Self { token: door.csrf.token(&session, now), set_cookie }
    }

    pub(crate) fn add_to(&self, context: &mut Context) {
        context.insert("csrf_token", &self.token);
    }
}

/// Renders `template`; pages are never cached (their forms carry tokens and keys).
pub(crate) fn render(templates: &Templates, template: &str, status: StatusCode, context: &Context, forms: Option<&FormSession>) -> HttpResponse {
    match templates.render(template, context) {
        Ok(html) => {
            let mut response = HttpResponse::build(status);
            response.content_type("text/html; charset=utf-8").insert_header((header::CACHE_CONTROL, "no-store"));
            if let Some(cookie) = forms.and_then(|f| f.set_cookie.as_deref()) {
                response.insert_header((header::SET_COOKIE, cookie));
            }
            response.body(html)
        }
        Err(e) => {
            log::error!("rendering {template} failed: {e:?}");
            HttpResponse::InternalServerError().content_type("text/plain; charset=utf-8").body("internal error: a page could not be rendered")
        }
    }
}

/// A page that only says something (an error, a refusal), with a link onward.
pub fn message_page(templates: &Templates, status: StatusCode, title: &str, message: &str) -> HttpResponse {
    message_page_back(templates, status, title, message, None)
}

fn message_page_back(templates: &Templates, status: StatusCode, title: &str, message: &str, back: Option<(&str, &str)>) -> HttpResponse {
    let mut context = base_context(Utc::now());
    context.insert("title", title);
    context.insert("message", message);
    context.insert("back", &back.map(|(href, _)| href));
    context.insert("back_label", &back.map(|(_, label)| label));
    render(templates, MESSAGE, status, &context, None)
}

fn not_found(state: &SharedState, what: &str) -> HttpResponse {
    message_page(&state.templates, StatusCode::NOT_FOUND, "Not found", &format!("There is no auction {what}."))
}

fn unavailable(state: &SharedState) -> HttpResponse {
    message_page(
        &state.templates,
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again shortly",
        "The auctions cannot be shown right now: the auction database is not reachable.",
    )
}

/// The 403 for a form post without a valid CSRF token; nothing was done.
pub(crate) fn forbidden(templates: &Templates, error: &CsrfError, back: &str) -> HttpResponse {
    log::info!("form post refused: {error}");
    let message = format!("This form cannot be accepted: {error}. Nothing was changed. Reload the page and send the form again.");
    message_page_back(templates, StatusCode::FORBIDDEN, "Form not accepted", &message, Some((back, "Reload the page")))
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// `/?page=N`: the open auctions, soonest end first, [`HOME_PAGE_SIZE`] a page, and (on the
/// first page) the most recently closed. Listed at most once a second and rendered at most once
/// a second per page (see [`crate::rendered`]): its cost does not grow with the requests or the
/// bids; the live feed moves an open page within the second.
pub async fn home(state: SharedState, query: web::Query<HomeQuery>) -> HttpResponse {
    let page = match query.page.as_deref().map(str::parse::<u32>) {
        None => 1,
        Some(Ok(page)) if page >= 1 => page,
        Some(_) => {
            return message_page_back(
                &state.templates,
                StatusCode::BAD_REQUEST,
                "No such page",
                "page must be a whole number from 1 up.",
                Some(("/", "First page")),
            )
        }
    };
    // Until the board's first refresh succeeded there is nothing to show; try once more now.
    if state.board.age().is_none() {
        if let Err(e) = state.board.refresh().await {
            log::warn!("the auction board cannot be loaded for the homepage: {e}");
            let mut context = base_context(Utc::now());
            context.insert("open", &Vec::<Card>::new());
            context.insert("closed", &Vec::<Card>::new());
            context.insert("notice", &None::<String>);
            context.insert("pages", &None::<Pages>);
            context.insert("db_error", "Current auctions cannot be shown right now: the auction database is not reachable.");
            return render(&state.templates, INDEX, StatusCode::SERVICE_UNAVAILABLE, &context, None);
        }
    }
    let now = Utc::now();
    let listing = state.home_listing.get_or_make(now, || {
        let (open, closed) = state.board.auctions().into_iter().partition(|a| a.is_open(now));
        Listing { open, closed }
    });
    let pages = Pages::new(page, listing.open.len());
    // Every page past the last is the same page, so asking for them costs one render a second.
    let key = if pages.first == 0 && page > 1 { 0 } else { page };
    let rendered = state.home_pages.get_or_render(key, now, || {
        let first = (page as usize - 1).saturating_mul(HOME_PAGE_SIZE);
        let open: Vec<Card> = listing.open.iter().skip(first).take(HOME_PAGE_SIZE).map(|a| Card::new(a, now)).collect();
        // The board lists closed auctions latest end first.
        let closed: Vec<Card> =
            if page == 1 { listing.closed.iter().take(RECENTLY_CLOSED_MAX).map(|a| Card::new(a, now)).collect() } else { Vec::new() };
        let notice = state.board.age().filter(|age| age.as_secs() >= STALE_AFTER_SECS).map(|age| {
            format!(
                "Standings may be up to {} old: the auction database is not answering right now. Bids still go through.",
                span(i64::try_from(age.as_secs()).unwrap_or(i64::MAX))
            )
        });
        let mut context = base_context(now);
        context.insert("server_now_ms", NOW_MS_MARK);
        context.insert("open", &open);
        context.insert("closed", &closed);
        context.insert("notice", &notice);
        context.insert("pages", &Some(pages));
        context.insert("db_error", &None::<String>);
        state.templates.render(INDEX, &context)
    });
    match rendered {
        Ok(page) => HttpResponse::Ok().content_type("text/html; charset=utf-8").insert_header((header::CACHE_CONTROL, "no-store")).body(page.at(Utc::now())),
        Err(e) => {
            log::error!("rendering {INDEX} failed: {e:?}");
            HttpResponse::InternalServerError().content_type("text/plain; charset=utf-8").body("internal error: a page could not be rendered")
        }
    }
}

/// `/dashboard`: filled and kept live by `/static/live.js` from the feed (see [`crate::feed`]).
pub async fn dashboard(state: SharedState) -> HttpResponse {
    render(&state.templates, DASHBOARD, StatusCode::OK, &base_context(Utc::now()), None)
}

#[derive(Deserialize)]
pub struct HomeQuery {
    page: Option<String>,
}

/// Where a page of `/` is among all of them.
#[derive(Debug, Serialize)]
struct Pages {
    page: u32,
    count: u32,
    /// How many open auctions there are in all.
    open_total: usize,
    /// The 1-based positions of the first and last auction on this page (0, 0 if none).
    first: usize,
    last: usize,
    previous: Option<u32>,
    next: Option<u32>,
    size: usize,
}

impl Pages {
    fn new(page: u32, open_total: usize) -> Self {
        let count = u32::try_from(open_total.div_ceil(HOME_PAGE_SIZE).max(1)).unwrap_or(u32::MAX);
        let first = (page as usize - 1).saturating_mul(HOME_PAGE_SIZE);
        let last = open_total.min(first.saturating_add(HOME_PAGE_SIZE));
        Self {
            page,
            count,
            open_total,
            first: if first < last { first + 1 } else { 0 },
            last: if first < last { last } else { 0 },
            previous: (page > 1).then(|| page.min(count.saturating_add(1)) - 1),
            next: (page < count).then_some(page + 1),
            size: HOME_PAGE_SIZE,
        }
    }
}

#[derive(Deserialize)]
pub struct AuctionQuery {
    placed: Option<String>,
}

/// `/auctions/{id}`.
pub async fn auction(
    state: SharedState,
    door: web::Data<FrontDoor>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<AuctionQuery>,
) -> HttpResponse {
    let Ok(id) = parse_auction_id(&path) else { return not_found(&state, &format!("{:?}", path.chars().take(30).collect::<String>())) };
    let placed = match query.placed.as_deref().and_then(|raw| BidId::parse(raw).ok()) {
        Some(bid_id) => find_placed(&state, bid_id, id).await,
        None => None,
    };
    auction_page(&state, &door, &req, id, placed, BidFormShown::fresh(), StatusCode::OK).await
}

async fn auction_page(
    state: &SharedState,
    door: &FrontDoor,
    req: &HttpRequest,
    id: AuctionId,
    placed: Option<Placed>,
    form: BidFormShown,
    status: StatusCode,
) -> HttpResponse {
    let view = match state.board.find_auction(id).await {
        Ok(Some(view)) => view,
        Ok(None) => return not_found(state, &id.to_string()),
        Err(e) => {
            log::warn!("auction {id} cannot be shown: {e}");
            return unavailable(state);
        }
    };
    let (bids, bids_error) = match state.board.recent_bids(id, RECENT_BIDS_MAX).await {
        Ok(bids) => (bids, None),
        Err(e) => {
            log::warn!("latest bids of auction {id} cannot be shown: {e}");
            (Vec::new(), Some("The latest bids cannot be shown right now: the auction database is not reachable."))
        }
    };
    let now = Utc::now();
    let rows: Vec<BidRow> = bids
        .iter()
        .map(|b| BidRow { bid_id: b.bid_id.to_string(), name: b.name.to_string(), price: money(b.price.get()), at: Moment::since(b.bid_ts, now) })
        .collect();
    let forms = FormSession::new(req, door, now);
    let mut context = base_context(now);
    forms.add_to(&mut context);
    context.insert("a", &Detail::new(&view, now));
    context.insert("bids", &rows);
    context.insert("bids_error", &bids_error);
    context.insert("placed", &placed);
    context.insert("form", &form);
    render(&state.templates, AUCTION, status, &context, Some(&forms))
}

async fn find_placed(state: &SharedState, bid_id: BidId, auction: AuctionId) -> Option<Placed> {
    // With MySQL out of reach, a bid acked here can still be shown.
    let status = state.bidding.find(bid_id).await.unwrap_or_else(|_| state.bidding.acked(bid_id).map(BidStatus::Pending))?;
    let now = Utc::now();
    let placed = match status {
        BidStatus::Recorded(b) if b.auction_id == auction.get() => Placed {
            at: match DateTime::parse_from_rfc3339(&b.bid_ts) {
                Ok(ts) => Moment::since(ts.with_timezone(&Utc), now),
                Err(_) => Moment { exact: b.bid_ts.clone(), ms: 0, relative: b.bid_ts.clone() },
            },
            bid_id: b.bid_id,
            name: b.name,
            price: money(b.price),
            price_plain: b.price.to_string(),
            recorded: true,
        },
        BidStatus::Pending(b) if b.auction_id == auction => Placed {
            bid_id: b.bid_id.to_string(),
            name: b.name.to_string(),
            price: money(b.price.get()),
            price_plain: b.price.get().to_string(),
            at: Moment::since(b.bid_ts, now),
            recorded: false,
        },
        // A bid on another auction is not this page's to announce.
        _ => return None,
    };
    Some(placed)
}

#[derive(Deserialize)]
pub struct BidForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    price: String,
    /// Absent from pages rendered before keys existed: such a form is placed without one.
    idempotency_key: Option<String>,
    csrf_token: Option<String>,
}

/// `POST /auctions/{id}/bids`: the bid form.
pub async fn place_bid(
    state: SharedState,
    door: web::Data<FrontDoor>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<BidForm>,
) -> HttpResponse {
    let page = format!("/auctions/{}", path.chars().filter(char::is_ascii_digit).take(20).collect::<String>());
    if let Err(e) = door.csrf.verify(Session::from_request(&req).as_ref(), form.csrf_token.as_deref(), Utc::now()) {
        return forbidden(&state.templates, &e, &page);
    }
    let Ok(id) = parse_auction_id(&path) else { return not_found(&state, &format!("{:?}", path.chars().take(30).collect::<String>())) };
    let placed = async {
        let key = form.idempotency_key.as_deref().map(|k| IdempotencyKey::parse(k.as_bytes())).transpose()?;
        let request = BidRequest::parse(&path, &form.name, &form.price)?;
        state.bidding.place(request, key).await
    };
    let error = match placed.await {
        Ok(bid) => {
            let location = format!("/auctions/{}?placed={}#placed", bid.auction_id, bid.bid_id);
            return HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish();
        }
        Err(ApiError::NotFound(_)) => return not_found(&state, &id.to_string()),
        Err(e) => e,
    };
    let status = actix_web::ResponseError::status_code(&error);
    let shown = refused_form(&form, &error);
    auction_page(&state, &door, &req, id, None, shown, status).await
}

/// The refused form as it comes back: its values, its key, and the reason beside its field.
fn refused_form(form: &BidForm, e: &ApiError) -> BidFormShown {
    // The refused form keeps its key, so sending it again cannot place a second bid; only a
    // key that can no longer serve this form is replaced.
    let key_unusable = matches!(e, ApiError::KeyReused) || matches!(e, ApiError::Invalid(v) if v.field == IdempotencyKey::HEADER);
    let idempotency_key = match &form.idempotency_key {
        Some(key) if !key_unusable => key.clone(),
        _ => new_form_key(),
    };
    let mut shown = BidFormShown { name: form.name.clone(), price: form.price.clone(), idempotency_key, ..BidFormShown::default() };
    let beside = match e {
        ApiError::Refused(Refusal::TooLow { minimum, reason }) => Some(format!("must be at least {} ({reason})", money(*minimum))),
        ApiError::Invalid(v) if v.field == "name" || v.field == "price" => Some(v.message.clone()),
        _ => None,
    };
    match (e.field(), beside) {
        (Some("name"), Some(message)) => {
            shown.name_error = Some(message);
            shown.message = Some("Your bid was not placed: check your name below.".into());
        }
        (Some("price"), Some(message)) => {
            shown.price_error = Some(message);
            shown.message = Some("Your bid was not placed: check your bid below.".into());
        }
        _ => {
            shown.message = Some(match e {
                ApiError::OutcomeUnknown { bid_id, .. } if !key_unusable && form.idempotency_key.is_some() => format!(
                    "Your bid {bid_id} could not be confirmed: {e}. Sending this form again is safe: it cannot place the bid twice."
                ),
                ApiError::KeyInFlight => "Your bid is still being processed. Send the form again in a moment to see how it ended.".to_owned(),
                ApiError::KeyReused => "This form was already used for a different bid. Check your bid and send it again.".to_owned(),
                ApiError::Unavailable(_) | ApiError::Busy(_) | ApiError::OutcomeUnknown { .. } | ApiError::Internal => {
                    format!("Your bid was NOT placed: {e}.")
                }
                _ => format!("Your bid was not placed: {e}."),
            });
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use auction_common::auction::{AuctionRules, Standing};
    use auction_common::{Bid, BidderName, Price};

    #[test]
    fn money_reads_with_thousands_separators_and_two_decimals() {
        let cases = [
            ("0.5", "0.50"),
            ("7", "7.00"),
            ("999.99", "999.99"),
            ("1000", "1,000.00"),
            ("1234.5", "1,234.50"),
            ("123456.78", "123,456.78"),
            ("1234567", "1,234,567.00"),
            ("9999999999.99", "9,999,999,999.99"),
        ];
        for (amount, shown) in cases {
            assert_eq!(money(amount.parse().unwrap()), shown, "{amount}");
        }
    }

    #[test]
    fn spans_read_in_the_largest_units_that_matter() {
        let cases = [(0, "0 s"), (2, "2 s"), (59, "59 s"), (60, "1 min"), (200, "3 min 20 s"), (600, "10 min"), (3599, "59 min"),
            (3600, "1 h"), (5400, "1 h 30 min"), (86_400, "1 d"), (200_000, "2 d 7 h")];
        for (secs, words) in cases {
            assert_eq!(span(secs), words, "{secs}");
        }
        let now = Utc::now();
        assert_eq!(Moment::until(now + chrono::Duration::milliseconds(180_200), now).relative, "3 min 1 s left");
        assert_eq!(Moment::since(now - chrono::Duration::milliseconds(2_900), now).relative, "2 s ago");
        assert!(Moment::since(now, now).exact.ends_with('Z'));
    }

    fn view(reserve: Option<&str>, ends_in_secs: i64) -> AuctionView {
        let rules = AuctionRules {
            id: AuctionId::new(4).unwrap(),
            starting_price: Price::parse("1000").unwrap(),
            min_increment: Decimal::new(2500, 2),
            reserve_price: reserve.map(|r| Price::parse(r).unwrap()),
            ends_at: Utc::now() + chrono::Duration::seconds(ends_in_secs),
            extend_seconds: 120,
            closed_at: None,
        };
        let standing = Standing::new(&rules);
        AuctionView { id: rules.id, title: "Lamp <b>".into(), description: "Brass.\nWorks.".into(), rules, standing }
    }

    fn bid_on(view: &mut AuctionView, name: &str, price: &str) {
        let mut bid = Bid::accept(view.id, BidderName::parse(name).unwrap(), Price::parse(price).unwrap());
        bid.bid_ts = view.rules.ends_at - chrono::Duration::seconds(3600);
        view.standing.apply(&view.rules, &bid);
    }

    fn render_auction(view: &AuctionView, form: BidFormShown) -> String {
        let templates = Templates::new().unwrap();
        let now = Utc::now();
        let mut context = base_context(now);
        context.insert("csrf_token", "token-of-the-form");
        context.insert("a", &Detail::new(view, now));
        context.insert("bids", &Vec::<BidRow>::new());
        context.insert("bids_error", &None::<String>);
        context.insert("placed", &None::<Placed>);
        context.insert("form", &form);
        templates.render(AUCTION, &context).unwrap()
    }

    #[test]
    fn an_auction_page_escapes_user_text_and_puts_each_error_beside_its_field() {
        let mut v = view(None, 3600);
        bid_on(&mut v, "<script>alert(1)</script>", "1234.5");
        let form = BidFormShown {
            name: "\"Ada\"".into(),
            price: "1.234".into(),
            idempotency_key: "key-of-the-refused-form".into(),
            price_error: Some("must be at least 1,259.50".into()),
            message: Some("Your bid was not placed: check your bid below.".into()),
            ..BidFormShown::default()
        };
        let html = render_auction(&v, form);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;"), "{html}");
        assert!(html.contains("Lamp &lt;b&gt;"));
        assert!(html.contains("1,234.50"), "money as people read it");
        assert!(html.contains("value=\"&quot;Ada&quot;\""), "{html}");
        assert!(html.contains("value=\"1.234\""));
        assert!(html.contains("id=\"price-error\">must be at least 1,259.50<"), "{html}");
        assert!(!html.contains("id=\"name-error\""));
        assert!(html.contains("name=\"idempotency_key\" value=\"key-of-the-refused-form\""));
        assert!(html.contains("name=\"csrf_token\" value=\"token-of-the-form\""));
        assert!(!html.contains("style=") && !html.contains("<style"), "the CSP allows no inline style");
        assert!(!html.contains("<script>"), "nor inline script");
    }

    #[test]
    fn a_closed_auction_shows_how_it_ended_and_no_form() {
        let mut v = view(Some("2000"), -10);
        let html = render_auction(&v, BidFormShown::fresh());
        assert!(html.contains("The auction ended without any bids.") && !html.contains("<form"), "{html}");
        bid_on(&mut v, "Low", "1500");
        let html = render_auction(&v, BidFormShown::fresh());
        assert!(html.contains("did not meet the reserve price") && html.contains("1,500.00"), "{html}");
        bid_on(&mut v, "Grace", "2500");
        let html = render_auction(&v, BidFormShown::fresh());
        assert!(html.contains("Won by Grace") && html.contains("2,500.00"), "{html}");
    }

    #[test]
    fn a_too_low_bid_is_explained_beside_the_price_with_the_minimum() {
        let form = BidForm { name: "Ada".into(), price: "5".into(), idempotency_key: Some("k1".into()), csrf_token: None };
        let refusal = ApiError::Refused(Refusal::TooLow { minimum: Decimal::new(123_450, 2), reason: "the starting price" });
        let shown = refused_form(&form, &refusal);
        assert_eq!(shown.price_error.as_deref(), Some("must be at least 1,234.50 (the starting price)"));
        assert_eq!((shown.idempotency_key.as_str(), shown.name.as_str(), shown.price.as_str()), ("k1", "Ada", "5"));
        let invalid = ApiError::Invalid(auction_common::ValidationError { field: "name", message: "is required".into() });
        assert_eq!(refused_form(&form, &invalid).name_error.as_deref(), Some("is required"));
    }

    #[test]
    fn static_files_are_versioned_by_their_content() {
        assert!(CSS.url.starts_with("/static/site.css?v=") && JS.url.starts_with("/static/site.js?v="));
        assert_ne!(CSS.url.split('=').nth(1), JS.url.split('=').nth(1));
    }
}
