//! The front door: refused names, CSRF, security headers, body limits, bad input, the bid rate
//! limit and the admin API and page, all over the real stack.

use std::time::{Duration, Instant};

use auction_web::SecurityConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{eventually, TestApp, TestStack};

const ADMIN_TOKEN: &str = "dev-admin-token";

/// A page with forms as a browser holds it: its session cookie and its forms' hidden fields.
pub struct FormPage {
    pub cookie: String,
    pub csrf_token: String,
    pub idempotency_key: Option<String>,
    pub html: String,
}

impl FormPage {
    /// The form's hidden fields plus `typed`.
    pub fn fields<'a>(&'a self, typed: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut fields = vec![("csrf_token", self.csrf_token.as_str())];
        if let Some(key) = &self.idempotency_key {
            fields.push(("idempotency_key", key.as_str()));
        }
        fields.extend_from_slice(typed);
        fields
    }
}

/// The value of the first `<input name="{name}" value="…">` in `html` (values here never hold quotes).
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let start = html.find(&format!("name=\"{name}\" value=\""))? + name.len() + 15;
    Some(html[start..].split('"').next()?.to_owned())
}

/// GETs a page with forms, as a browser seeing the site for the first time.
pub async fn form_page(app: &TestApp, path: &str) -> FormPage {
    let response = app.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    let set_cookie = response.headers().get("set-cookie").expect("a page with forms gives a session cookie").to_str().unwrap().to_owned();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    assert!(cookie.starts_with("csrf_session="), "{set_cookie}");
    let html = response.text().await.unwrap();
    let csrf_token = hidden_field(&html, "csrf_token").expect("the form carries a CSRF token");
    FormPage { cookie, csrf_token, idempotency_key: hidden_field(&html, "idempotency_key"), html }
}

pub async fn post_form(app: &TestApp, path: &str, cookie: Option<&str>, fields: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.client.post(format!("{}{path}", app.address)).form(fields);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.expect("POST")
}

pub async fn post_admin(app: &TestApp, token: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = app.client.post(format!("{}/api/auctions", app.address)).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("POST /api/auctions")
}

/// Creates an auction through the admin API; its id.
pub async fn create_auction(app: &TestApp, token: &str, body: Value) -> u64 {
    let response = post_admin(app, Some(token), &body).await;
    assert_eq!(response.status(), 201, "{body}");
    let created: Value = response.json().await.unwrap();
    created["id"].as_u64().expect("an id")
}

async fn auction_rows(stack: &TestStack) -> Vec<(u64, String)> {
    use mysql_async::prelude::Queryable;
    let mut conn = stack.pool.get_conn().await.unwrap();
    conn.query("SELECT id, title FROM auction ORDER BY id").await.unwrap()
}

#[tokio::test]
async fn names_with_bidirectional_controls_or_only_invisible_characters_get_400_naming_name_and_nothing_is_produced() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let refused = [
        ("Ada\u{202E}rekcah", "bidirectional control"),
        ("\u{2066}Ada\u{2069}", "bidirectional control"),
        ("Ada\u{200F}", "bidirectional control"),
        ("\u{061C}Ada", "bidirectional control"),
        ("\u{200B}", "visible character"),
        ("\u{200B}\u{200D}\u{2060}", "visible character"),
        ("\u{3164}", "visible character"),
        ("\u{115F}\u{1160}", "visible character"),
        ("\u{2800}", "visible character"),
        ("\u{FEFF}\u{FE0F}", "visible character"),
    ];
    for (name, why) in refused {
        let response = app.post_bid_json("1", json!({"name": name, "price": "10"})).await;
        assert_eq!(response.status(), 400, "{name:?}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["field"], "name", "{name:?}: {error}");
        assert!(error["error"].as_str().unwrap().starts_with("name: ") && error["error"].as_str().unwrap().contains(why), "{error}");
    }
    let page = form_page(&app, "/auctions/1").await;
    let response = post_form(&app, "/auctions/1/bids", Some(&page.cookie), &page.fields(&[("name", "\u{3164}\u{3164}"), ("price", "10")])).await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("id=\"name-error\">must contain a visible character"));
    assert_eq!(stack.messages_in_topic(), 0, "a refused name is never produced");
    stack.cleanup().await;
}

#[tokio::test]
async fn a_form_post_without_a_valid_csrf_token_gets_403_and_changes_nothing() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let page = form_page(&app, "/auctions/1").await;
    let other = form_page(&app, "/auctions/1").await;
    assert_ne!(page.cookie, other.cookie, "each browser gets its own session");
    let bid = [("name", "Mallory"), ("price", "10")];
    let (expires, rest) = page.csrf_token.split_once('.').unwrap();
    let stretched = format!("{}.{rest}", expires.parse::<i64>().unwrap() + 86_400);
    let mut flipped = page.csrf_token.clone();
    let last = if flipped.ends_with('0') { "1" } else { "0" };
    flipped.replace_range(flipped.len() - 1.., last);
    let cases: Vec<(&str, Option<&str>, Vec<(&str, &str)>)> = vec![
        ("no token, no cookie", None, bid.to_vec()),
        ("no token", Some(&page.cookie), bid.to_vec()),
        ("a token without its cookie", None, [vec![("csrf_token", page.csrf_token.as_str())], bid.to_vec()].concat()),
        ("another browser's token", Some(&page.cookie), [vec![("csrf_token", other.csrf_token.as_str())], bid.to_vec()].concat()),
        ("a stretched expiry", Some(&page.cookie), [vec![("csrf_token", stretched.as_str())], bid.to_vec()].concat()),
        ("a forged signature", Some(&page.cookie), [vec![("csrf_token", flipped.as_str())], bid.to_vec()].concat()),
        ("garbage", Some(&page.cookie), [vec![("csrf_token", "<script>")], bid.to_vec()].concat()),
    ];
    for (what, cookie, fields) in cases {
        let response = post_form(&app, "/auctions/1/bids", cookie, &fields).await;
        assert_eq!(response.status(), 403, "{what}");
        let html = response.text().await.unwrap();
        assert!(html.contains("Form not accepted") && html.contains("Nothing was changed"), "{what}: {html}");
        assert!(!html.contains("<script>"), "{what}");
    }
    let admin = form_page(&app, "/admin").await;
    let response = post_form(
        &app,
        "/admin/auctions",
        Some(&admin.cookie),
        &[("admin_token", ADMIN_TOKEN), ("title", "Sneaky"), ("starting_price", "1"), ("min_increment", "1"), ("duration", "1"), ("duration_unit", "days")],
    )
    .await;
    assert_eq!(response.status(), 403, "the admin form needs its token too");

    assert_eq!(stack.messages_in_topic(), 0, "no bid was produced");
    assert_eq!(auction_rows(&stack).await.len(), 1, "no auction was created");
    stack.cleanup().await;
}

#[tokio::test]
async fn a_form_rendered_by_one_replica_is_accepted_by_another_with_the_same_secret() {
    let stack = TestStack::new().await;
    let mut config = stack.web_config();
    config.security.csrf_secret = "a secret both replicas share".parse().unwrap();
    let (one, two) = (TestApp::spawn(config.clone()).await, TestApp::spawn(config).await);

    let page = form_page(&one, "/auctions/1").await;
    let response = post_form(&two, "/auctions/1/bids", Some(&page.cookie), &page.fields(&[("name", "Ada"), ("price", "10")])).await;
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let html = two.get(&location).await.text().await.unwrap();
    assert!(html.contains("Bid added!"), "{html}");

    let mut config = stack.web_config();
    config.security.csrf_secret = "another secret".parse().unwrap();
    let stranger = TestApp::spawn(config).await;
    let page = form_page(&one, "/auctions/1").await;
    let response = post_form(&stranger, "/auctions/1/bids", Some(&page.cookie), &page.fields(&[("name", "Ada"), ("price", "11")])).await;
    assert_eq!(response.status(), 403, "a replica with another secret does not accept it");
    assert_eq!(stack.messages_in_topic(), 1);
    stack.cleanup().await;
}

#[tokio::test]
async fn security_headers_are_on_pages_api_answers_errors_and_static_files() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let paths = ["/", "/auctions/1", "/api/auctions/1", "/api/auctions/999999", "/admin", "/no-such-page", "/static/site.css", "/static/site.js"];
    for path in paths {
        let response = app.get(path).await;
        let headers = response.headers();
        let csp = headers.get("content-security-policy").unwrap_or_else(|| panic!("{path}: no CSP")).to_str().unwrap();
        for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "same-origin", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
    }
    let home = app.get("/").await.text().await.unwrap();
    assert!(!home.contains("<style") && !home.contains("style=") && !home.contains("<script>"), "nothing inline: {home}");
    let css_url = home.split("<link rel=\"stylesheet\" href=\"").nth(1).and_then(|s| s.split('"').next()).expect("a stylesheet link");
    let css = app.get(css_url).await;
    assert_eq!(css.status(), 200);
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert!(css.headers()["cache-control"].to_str().unwrap().contains("max-age=31536000"));
    assert!(css.text().await.unwrap().contains(".notice"));
    stack.cleanup().await;
}

/// Sends a request with a chunked body (no Content-Length) over a raw connection; its status.
async fn post_chunked(app: &TestApp, path: &str, content_type: &str, body: &[u8]) -> u16 {
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(4096) {
        // The server may answer and close before it has read everything: that is the point.
        if stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.is_err()
            || stream.write_all(chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {answer:?}"))
}

#[tokio::test]
async fn a_body_over_16_kib_gets_413_with_a_clear_message_and_nothing_is_produced() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let big_name = "x".repeat(17 * 1024);

    let response = app.post_bid_json("1", json!({"name": big_name, "price": "10"})).await;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["field"], "body", "{error}");
    assert!(error["error"].as_str().unwrap().contains("at most 16384 bytes (16 KiB)"), "{error}");

    let response = post_admin(&app, Some(ADMIN_TOKEN), &json!({"title": big_name})).await;
    assert_eq!(response.status(), 413);

    let page = form_page(&app, "/auctions/1").await;
    let response = post_form(&app, "/auctions/1/bids", Some(&page.cookie), &page.fields(&[("name", &big_name), ("price", "10")])).await;
    assert_eq!(response.status(), 413);
    let html = response.text().await.unwrap();
    assert!(html.contains("Too much data") && html.contains("16 KiB"), "{html}");

    let body = json!({"name": big_name, "price": "10"}).to_string();
    assert_eq!(post_chunked(&app, "/api/auctions/1/bids", "application/json", body.as_bytes()).await, 413, "chunked, without a length");
    let form = format!("name={big_name}&price=10");
    assert_eq!(post_chunked(&app, "/auctions/1/bids", "application/x-www-form-urlencoded", form.as_bytes()).await, 413);

    let just_under = json!({"name": "Ada", "price": "10", "pad": "y".repeat(16 * 1024 - 60)}).to_string();
    assert!(just_under.len() <= 16 * 1024);
    let response = app.client.post(format!("{}/api/auctions/1/bids", app.address)).header("content-type", "application/json").body(just_under).send().await.unwrap();
    assert_eq!(response.status(), 202, "a body of 16 KiB is fine");
    assert_eq!(stack.messages_in_topic(), 1, "only that bid was produced");
    stack.cleanup().await;
}

#[tokio::test]
async fn no_bad_input_yields_a_5xx_and_none_produces_anything() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let url = |path: &str| format!("{}{path}", app.address);
    let json_bodies: &[(&str, &[u8])] = &[
        ("empty", b""),
        ("not json", b"{not json"),
        ("truncated", br#"{"name": "Ada", "price": "#),
        ("array", br#"["Ada", "10"]"#),
        ("number", b"42"),
        ("null", b"null"),
        ("name a number", br#"{"name": 7, "price": "10"}"#),
        ("name an object", br#"{"name": {"a": 1}, "price": "10"}"#),
        ("price an object", br#"{"name": "Ada", "price": {"v": 10}}"#),
        ("price a bool", br#"{"name": "Ada", "price": true}"#),
        ("price text", br#"{"name": "Ada", "price": "ten"}"#),
        ("price over-precise", br#"{"name": "Ada", "price": "10.001"}"#),
        ("price exponent", br#"{"name": "Ada", "price": 1e3}"#),
        ("price huge", br#"{"name": "Ada", "price": 99999999999999999999999999999999999999}"#),
        ("price negative", br#"{"name": "Ada", "price": -1}"#),
        ("price NaN", br#"{"name": "Ada", "price": "NaN"}"#),
        ("name too long", br#"{"name": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "price": "10"}"#),
        ("name with NUL", b"{\"name\": \"A\\u0000da\", \"price\": \"10\"}"),
        ("lone surrogate", br#"{"name": "\ud800", "price": "10"}"#),
        ("invalid UTF-8", b"{\"name\": \"\xff\xfe\", \"price\": \"10\"}"),
        ("deep nesting", &[b'['; 5000]),
    ];
    let mut checked = 0;
    for (what, body) in json_bodies {
        let response = app.client.post(url("/api/auctions/1/bids")).header("content-type", "application/json").body(body.to_vec()).send().await.unwrap();
        let status = response.status();
        assert!(status.is_client_error(), "{what}: {status} {}", response.text().await.unwrap_or_default());
        checked += 1;
    }
    let json_requests: &[(&str, &str, Value)] = &[
        ("unknown auction", "/api/auctions/999999/bids", json!({"name": "Ada", "price": "10"})),
        ("auction zero", "/api/auctions/0/bids", json!({"name": "Ada", "price": "10"})),
        ("auction text", "/api/auctions/abc/bids", json!({"name": "Ada", "price": "10"})),
        ("auction too big", "/api/auctions/99999999999999999999999/bids", json!({"name": "Ada", "price": "10"})),
        ("auction negative", "/api/auctions/-1/bids", json!({"name": "Ada", "price": "10"})),
    ];
    for (what, path, body) in json_requests {
        let status = app.client.post(url(path)).json(body).send().await.unwrap().status();
        assert!(status.is_client_error(), "{what}: {status}");
        checked += 1;
    }
    let wrong_content_type = app.client.post(url("/api/auctions/1/bids")).header("content-type", "text/plain").body("name=Ada&price=10").send().await.unwrap();
    assert!(wrong_content_type.status().is_client_error(), "{}", wrong_content_type.status());
    for path in ["/api/auctions/abc", "/api/auctions/999999", "/api/bids/not-a-uuid", "/api/bids/00000000-0000-0000-0000-000000000000", "/auctions/abc",
                 "/auctions/%00", "/admin?created=abc", "/auctions/1?placed=<script>"] {
        let status = app.get(path).await.status();
        assert!(status.as_u16() < 500, "{path}: {status}");
        checked += 1;
    }
    let page = form_page(&app, "/auctions/1").await;
    let forms: &[(&str, &[(&str, &str)])] = &[
        ("no fields", &[]),
        ("no price", &[("name", "Ada")]),
        ("price text", &[("name", "Ada"), ("price", "ten")]),
        ("price over-precise", &[("name", "Ada"), ("price", "1.001")]),
        ("price with separators", &[("name", "Ada"), ("price", "1,000")]),
        ("bad idempotency key", &[("name", "Ada"), ("price", "10"), ("idempotency_key", "has spaces in it")]),
    ];
    for (what, typed) in forms {
        let mut fields = vec![("csrf_token", page.csrf_token.as_str())];
        fields.extend_from_slice(typed);
        let status = post_form(&app, "/auctions/1/bids", Some(&page.cookie), &fields).await.status();
        assert!(status.is_client_error(), "form {what}: {status}");
        checked += 1;
    }
    let raw_form = app.client.post(url("/auctions/1/bids")).header("content-type", "application/x-www-form-urlencoded").header("cookie", &page.cookie)
        .body(format!("csrf_token={}&name=%FF%FE&price=ten", page.csrf_token)).send().await.unwrap();
    assert!(raw_form.status().is_client_error(), "invalid UTF-8 in a form: {}", raw_form.status());
    let admin_bodies = [json!({}), json!({"title": 5}), json!({"title": "x", "starting_price": "abc", "min_increment": "1", "duration_seconds": 5}), json!([1])];
    for body in admin_bodies {
        let status = post_admin(&app, Some(ADMIN_TOKEN), &body).await.status();
        assert_eq!(status, 400, "{body}");
        checked += 1;
    }
    assert!(checked > 40);
    assert_eq!(stack.messages_in_topic(), 0, "nothing bad was produced");
    assert_eq!(auction_rows(&stack).await.len(), 1, "no auction was created");
    stack.cleanup().await;
}

#[tokio::test]
async fn bids_over_the_rate_limit_get_429_with_retry_after_and_other_pages_are_not_limited() {
    let stack = TestStack::new().await;
    let mut config = stack.web_config();
    config.security = SecurityConfig { bid_rate_per_sec: 1, bid_rate_burst: 3, ..SecurityConfig::default() };
    let app = TestApp::spawn(config).await;

    for price in ["10", "11", "12"] {
        let response = app.post_bid_json("1", json!({"name": "Ada", "price": price})).await;
        assert_eq!(response.status(), 202, "within the burst");
    }
    let response = app.post_bid_json("1", json!({"name": "Ada", "price": "13"})).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let error: Value = response.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("too many bids from your address"), "{error}");

    let page = form_page(&app, "/auctions/1").await;
    let response = post_form(&app, "/auctions/1/bids", Some(&page.cookie), &page.fields(&[("name", "Ada"), ("price", "14")])).await;
    assert_eq!(response.status(), 429, "the form counts against the same address");
    assert!(response.headers().contains_key("retry-after"));
    assert!(response.text().await.unwrap().contains("Slow down"));
    assert_eq!(app.get("/").await.status(), 200, "pages are not limited");
    assert_eq!(app.get("/api/auctions/1").await.status(), 200);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = app.post_bid_json("1", json!({"name": "Ada", "price": "15"})).await;
    assert_eq!(response.status(), 202, "a token came back after a second");
    assert_eq!(stack.messages_in_topic(), 4);
    stack.cleanup().await;
}

#[tokio::test]
async fn the_admin_api_needs_the_token_and_creates_an_auction_shown_within_a_second() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let body = json!({"title": "<script>alert('lamp')</script>", "description": "Brass, 1920s.\nWorks.", "starting_price": 1234.5,
                      "min_increment": "10", "reserve_price": "2000", "duration_seconds": 3600});

    for token in [None, Some("wrong"), Some("dev-admin-toke"), Some("")] {
        let response = post_admin(&app, token, &body).await;
        assert_eq!(response.status(), 401, "{token:?}");
        assert!(response.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"), "{token:?}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].as_str().unwrap().starts_with("Authorization:"), "{error}");
    }
    let response = app.client.post(format!("{}/api/auctions", app.address)).basic_auth("admin", Some(ADMIN_TOKEN)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401, "Basic is not Bearer");
    assert_eq!(auction_rows(&stack).await.len(), 1, "nothing was created");

    let response = post_admin(&app, Some(ADMIN_TOKEN), &json!({"title": "Lamp", "starting_price": "10", "min_increment": "1", "ends_at": "2001-01-01T00:00:00Z"})).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["field"], "ends_at", "{error}");

    let asked = Instant::now();
    let id = create_auction(&app, ADMIN_TOKEN, body).await;
    assert!(id > 1);
    let home = eventually(Duration::from_secs(3), "the new auction on /", || async {
        let home = app.get("/").await.text().await.unwrap();
        home.contains(&format!("href=\"/auctions/{id}\"")).then_some(home)
    })
    .await;
    assert!(asked.elapsed() < Duration::from_millis(2500), "shown within about a second: {:?}", asked.elapsed());
    assert!(home.contains("&lt;script&gt;alert(") && !home.contains("<script>alert"), "the title is escaped");
    assert!(home.contains("starts at 1,234.50"), "{home}");
    let page = app.get(&format!("/auctions/{id}")).await.text().await.unwrap();
    assert!(page.contains("&lt;script&gt;alert(") && !page.contains("<script>alert"), "{page}");
    assert!(page.contains("Brass, 1920s.\nWorks."), "{page}");
    assert!(page.contains("<dd>not met yet</dd>"), "{page}");

    use mysql_async::prelude::Queryable;
    let mut conn = stack.pool.get_conn().await.unwrap();
    let standing: Option<(u64, String)> =
        conn.exec_first("SELECT bid_count, DATE_FORMAT(current_ends_at, '%Y-%m-%dT%H:%i:%s') FROM auction_standing WHERE auction_id = ?", (id,)).await.unwrap();
    let ends: Option<String> = conn.exec_first("SELECT DATE_FORMAT(ends_at, '%Y-%m-%dT%H:%i:%s') FROM auction WHERE id = ?", (id,)).await.unwrap();
    drop(conn);
    let (count, current_end) = standing.expect("its standing row was created with it");
    assert_eq!((count, Some(current_end)), (0, ends));
    stack.cleanup().await;
}

#[tokio::test]
async fn the_admin_page_creates_an_auction_with_the_token_typed_into_it() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let page = form_page(&app, "/admin").await;
    let typed = |token: &'static str, title: &'static str| {
        vec![("admin_token", token), ("title", title), ("description", ""), ("starting_price", "5"), ("min_increment", "0.5"),
             ("reserve_price", ""), ("duration", "2"), ("duration_unit", "hours"), ("extend_seconds", "60")]
    };

    let response = post_form(&app, "/admin/auctions", Some(&page.cookie), &page.fields(&typed("wrong", "Desk"))).await;
    assert_eq!(response.status(), 401);
    let html = response.text().await.unwrap();
    assert!(html.contains("id=\"admin_token-error\">is not the admin token"), "{html}");
    assert!(html.contains("value=\"Desk\"") && !html.contains("value=\"wrong\""), "values kept, the token never echoed");

    let response = post_form(&app, "/admin/auctions", Some(&page.cookie), &page.fields(&typed(ADMIN_TOKEN, "   "))).await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("id=\"title-error\">is required"));

    let response = post_form(&app, "/admin/auctions", Some(&page.cookie), &page.fields(&typed(ADMIN_TOKEN, "Desk <oak>"))).await;
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/admin?created="), "{location}");
    let html = app.get(&location).await.text().await.unwrap();
    assert!(html.contains("Auction #2 created."), "{html}");
    eventually(Duration::from_secs(3), "the new auction's page", || async {
        let page = app.get("/auctions/2").await.text().await.unwrap();
        (page.contains("Desk &lt;oak&gt;") && page.contains("a bid in the last 1 min moves the end to 1 min after it")).then_some(())
    })
    .await;
    stack.cleanup().await;
}
