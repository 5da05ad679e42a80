use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{eventually, TestApp, TestStack};
use crate::site::{create_auction, form_page, post_form};

#[tokio::test]
async fn a_form_bid_redirects_to_its_auction_page_saying_bid_added_and_the_homepage_shows_the_new_highest_bid() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let writer = stack.spawn_db_writer("writers");
    let home = app.get("/").await.text().await.unwrap();
    assert!(home.contains("The first auction") && home.contains("No bids yet"), "{home}");
    assert!(home.contains("href=\"/auctions/1\""), "the homepage links to the auction page");

    let page = form_page(&app, "/auctions/1").await;
    let response = post_form(&app, "/auctions/1/bids", Some(&page.cookie), &page.fields(&[("name", "<b>Eve</b> & co"), ("price", "25.5")])).await;
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/auctions/1?placed="), "{location}");
    let bid_id = location.trim_start_matches("/auctions/1?placed=").split('#').next().unwrap().to_owned();

    let page = app.get(&location).await.text().await.unwrap();
    assert!(page.contains("Bid added!"), "{page}");
    assert!(page.contains(&bid_id), "the bid id is shown");
    assert!(page.contains("&lt;b&gt;Eve&lt;") && !page.contains("<b>Eve</b>"), "user text is escaped");
    assert!(page.contains("id=\"highest\">25.50<"), "this process's own bid shows at once: {page}");

    eventually(Duration::from_secs(20), "the homepage shows the new highest bid, recorded", || async {
        let home = app.get("/").await.text().await.unwrap();
        let recorded = stack.bid_rows().await.len() == 1;
        (recorded && home.contains("<p class=\"price\" data-field=\"price\">25.50</p>") && home.contains("&lt;b&gt;Eve&lt;")).then_some(())
    })
    .await;
    writer.stop().await;
    stack.cleanup().await;
}

#[tokio::test]
async fn a_form_with_a_bad_price_comes_back_with_the_reason_beside_the_price_and_the_values_typed() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;

    let page = form_page(&app, "/auctions/1").await;
    let response = post_form(&app, "/auctions/1/bids", Some(&page.cookie), &page.fields(&[("name", "Ada"), ("price", "12.345")])).await;

    assert_eq!(response.status(), 400);
    let html = response.text().await.unwrap();
    assert!(html.contains("Your bid was not placed: check your bid below."), "{html}");
    assert!(html.contains("<p class=\"field-error\" id=\"price-error\">must be a number above 0 with at most 2 decimals"), "{html}");
    assert!(!html.contains("id=\"name-error\""), "the name was fine");
    assert!(html.contains("value=\"12.345\"") && html.contains("value=\"Ada\""), "the typed values are kept");
    let key = page.idempotency_key.as_deref().expect("the form has a key");
    assert!(html.contains(&format!("name=\"idempotency_key\" value=\"{key}\"")), "the refused form keeps its key");

    let response = post_form(&app, "/auctions/1/bids", Some(&page.cookie), &page.fields(&[("name", "\u{202E}evA"), ("price", "12")])).await;
    assert_eq!(response.status(), 400);
    let html = response.text().await.unwrap();
    assert!(html.contains("id=\"name-error\">must not contain bidirectional control characters"), "{html}");
    assert_eq!(stack.messages_in_topic(), 0);
    stack.cleanup().await;
}

#[tokio::test]
async fn a_bid_below_the_minimum_comes_back_naming_the_smallest_amount_accepted() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let token = "dev-admin-token";
    let id = create_auction(&app, token, json!({"title": "Clock", "starting_price": "1000", "min_increment": "250", "duration_seconds": 600})).await;

    let path = format!("/auctions/{id}");
    let page = form_page(&app, &path).await;
    assert!(page.html.contains("At least <span id=\"minimum-next\">1,000.00</span>"), "{}", page.html);
    let response = post_form(&app, &format!("{path}/bids"), Some(&page.cookie), &page.fields(&[("name", "Ada"), ("price", "999.99")])).await;
    assert!(response.status().is_client_error(), "{}", response.status());
    let html = response.text().await.unwrap();
    assert!(html.contains("id=\"price-error\">must be at least 1,000.00"), "{html}");
    assert!(html.contains("value=\"999.99\""));
    assert_eq!(stack.messages_in_topic(), 0);
    stack.cleanup().await;
}

#[tokio::test]
async fn money_shows_with_thousands_separators_and_the_page_lists_the_last_20_bids() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;

    for i in 0..23 {
        let price = format!("{}.50", 1234 + i);
        let response = app.post_bid_json("1", json!({"name": format!("bidder {i}"), "price": price})).await;
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    }

    let page = app.get("/auctions/1").await.text().await.unwrap();
    assert!(page.contains("id=\"highest\">1,256.50<"), "{page}");
    assert!(page.contains("<td class=\"num\">1,234.50</td>") || page.contains("1,237.50"), "{page}");
    let rows = page.split("<tbody>").nth(1).and_then(|t| t.split("</tbody>").next()).unwrap_or_default().matches("<tr").count();
    assert_eq!(rows, 20, "{page}");
    assert!(page.contains("The last 20 of 23 bids."), "{page}");
    assert!(page.contains("bidder 22") && !page.contains("bidder 2<"), "newest first");
    let home = app.get("/").await.text().await.unwrap();
    assert!(home.contains("<p class=\"price\" data-field=\"price\">1,256.50</p>") && home.contains("<dd data-field=\"count\">23</dd>"), "{home}");
    stack.cleanup().await;
}

#[tokio::test]
async fn closed_auctions_show_the_winner_or_why_there_is_none_and_take_no_form() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let writer = stack.spawn_db_writer("writers");
    let token = "dev-admin-token";
    let short = |title: &str, reserve: Option<&str>| {
        json!({"title": title, "starting_price": "10", "min_increment": "1", "reserve_price": reserve, "duration_seconds": 3, "extend_seconds": 0})
    };
    let won = create_auction(&app, token, short("Won lamp", None)).await;
    let unsold = create_auction(&app, token, short("Unsold chair", None)).await;
    let reserved = create_auction(&app, token, short("Reserved vase", Some("5000"))).await;
    for (auction, name, price) in [(won, "Ada", "10"), (won, "Grace <3", "1500"), (reserved, "Linus", "4999.99")] {
        let response = app.post_bid_json(&auction.to_string(), json!({"name": name, "price": price})).await;
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    }

    let closed_page = |id: u64| {
        let app = &app;
        eventually(Duration::from_secs(10), "the auction to close", move || async move {
            let page = app.get(&format!("/auctions/{id}")).await.text().await.unwrap();
            page.contains("badge closed").then_some(page)
        })
    };
    let page = closed_page(won).await;
    assert!(page.contains("Won by Grace &lt;3") && page.contains("1,500.00"), "{page}");
    assert!(!page.contains("<form"), "a closed auction takes no bids");
    let page = closed_page(unsold).await;
    assert!(page.contains("The auction ended without any bids."), "{page}");
    let page = closed_page(reserved).await;
    assert!(page.contains("No winner: reserve not met") && page.contains("4,999.99 by Linus"), "{page}");
    assert!(!page.contains("5,000"), "the reserve's amount stays secret");

    let home = app.get("/").await.text().await.unwrap();
    let closed = home.split("Recently closed").nth(1).unwrap_or_default();
    assert!(closed.contains("won by Grace &lt;3 with 1,500.00") && closed.contains("no winner: no bids"), "{home}");
    assert!(closed.contains("the reserve price was not met"), "{home}");

    let page = form_page(&app, "/auctions/1").await;
    let response = post_form(&app, &format!("/auctions/{won}/bids"), Some(&page.cookie), &page.fields(&[("name", "Late"), ("price", "9999")])).await;
    assert_eq!(response.status(), 409, "a bid on a closed auction is refused");
    let html = response.text().await.unwrap();
    assert!(html.contains("Your bid was not placed") && html.contains("closed"), "{html}");
    writer.stop().await;
    stack.cleanup().await;
}

#[tokio::test]
async fn an_unknown_auction_page_is_404() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    for path in ["/auctions/424242", "/auctions/0", "/auctions/abc", "/auctions/99999999999999999999999"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        assert!(response.text().await.unwrap().contains("There is no auction"), "{path}");
    }
    stack.cleanup().await;
}

#[tokio::test]
async fn with_mysql_out_of_reach_the_homepage_and_bids_answer_503_with_a_reason() {
    let stack = TestStack::new().await;
    let mut config = stack.web_config();
    config.database.url = "mysql://auction:auction@127.0.0.1:1/auction".into();
    let app = TestApp::spawn(config).await;

    let home = app.get("/").await;
    assert_eq!(home.status(), 503);
    assert!(home.text().await.unwrap().contains("the auction database is not reachable"));
    let response = app.post_bid_json("1", json!({"name": "Ada", "price": "10"})).await;
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("database"), "{error}");
    assert_eq!(stack.messages_in_topic(), 0, "a bid on an auction that could not be checked is not produced");
    stack.cleanup().await;
}

/// The idempotency keys of the page's forms, in order.
fn form_keys(page: &str) -> Vec<String> {
    const FIELD: &str = "name=\"idempotency_key\" value=\"";
    page.match_indices(FIELD).filter_map(|(at, _)| page[at + FIELD.len()..].split('"').next().map(str::to_owned)).collect()
}

#[tokio::test]
async fn the_bid_form_carries_a_fresh_key_so_sending_it_twice_places_one_bid() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let first = form_page(&app, "/auctions/1").await;
    let second = form_page(&app, "/auctions/1").await;
    let (keys, other_keys) = (form_keys(&first.html), form_keys(&second.html));
    assert_eq!(keys.len(), 1, "one form, one key");
    assert!(uuid::Uuid::parse_str(&keys[0]).is_ok(), "{keys:?}");
    assert_ne!(keys, other_keys, "a new key each time the page is rendered");
    let send = |page: &'static str, name: &'static str, price: &'static str, key: String| {
        let (app, cookie, token) = (&app, first.cookie.clone(), first.csrf_token.clone());
        async move {
            let fields = [("csrf_token", token.as_str()), ("idempotency_key", key.as_str()), ("name", name), ("price", price)];
            post_form(app, page, Some(&cookie), &fields).await
        }
    };

    let placed = send("/auctions/1/bids", "Ada", "15", keys[0].clone()).await;
    let resent = send("/auctions/1/bids", "Ada", "15", keys[0].clone()).await;
    assert_eq!((placed.status().as_u16(), resent.status().as_u16()), (303, 303));
    assert_eq!(placed.headers()["location"], resent.headers()["location"], "the same bid");
    assert_eq!(stack.messages_in_topic(), 1);

    // A refused form comes back with its key, so fixing and resending it is still one bid.
    let fresh = form_keys(&app.get("/auctions/1").await.text().await.unwrap())[0].clone();
    let refused = send("/auctions/1/bids", "Eve", "15.555", fresh.clone()).await;
    assert_eq!(refused.status(), 400);
    let page = refused.text().await.unwrap();
    assert_eq!(form_keys(&page), vec![fresh.clone()]);
    let fixed = send("/auctions/1/bids", "Eve", "15.55", fresh).await;
    assert_eq!(fixed.status(), 303);
    assert_eq!(stack.messages_in_topic(), 2);

    // A key used for another bid cannot serve this form: it comes back with a new one.
    let reused = send("/auctions/1/bids", "Ada", "99", keys[0].clone()).await;
    assert_eq!(reused.status(), 422);
    let page = reused.text().await.unwrap();
    assert!(page.contains("already used for a different bid"), "{page}");
    let new_key = form_keys(&page);
    assert!(new_key.len() == 1 && new_key[0] != keys[0], "{new_key:?}");
    assert_eq!(stack.messages_in_topic(), 2);
    stack.cleanup().await;
}

#[tokio::test]
async fn the_homepage_lists_open_auctions_fifty_a_page_soonest_end_first() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    // With the seeded auction 1 (ending in 30 days, so last), 56 open auctions.
    for i in 0..55 {
        create_auction(&app, "dev-admin-token", json!({"title": format!("Lot {i:02}"), "starting_price": "10", "min_increment": "1", "duration_seconds": 600 + i})).await;
    }
    let first = eventually(Duration::from_secs(10), "the board lists all 56", || async {
        let home = app.get("/").await.text().await.unwrap();
        home.contains("1&ndash;50 of 56 open auctions").then_some(home)
    })
    .await;
    assert_eq!(first.matches("<li class=\"card\"").count(), 50, "{first}");
    assert!(first.contains("Lot 00") && first.contains("Lot 49") && !first.contains("Lot 50"), "soonest end first: {first}");
    assert!(first.contains("href=\"/?page=2\" rel=\"next\""), "{first}");

    let second = app.get("/?page=2").await;
    assert_eq!(second.status(), 200);
    let second = second.text().await.unwrap();
    assert_eq!(second.matches("<li class=\"card\"").count(), 6, "{second}");
    assert!(second.contains("Lot 54") && second.contains("The first auction") && second.contains("51&ndash;56 of 56"), "{second}");
    assert!(second.contains("href=\"/?page=1\" rel=\"prev\""), "{second}");

    for page in [3, 9] {
        let beyond = app.get(&format!("/?page={page}")).await.text().await.unwrap();
        assert!(beyond.contains("There is no such page: 56 auctions are open, 50 to a page, so 2 pages."), "{beyond}");
    }
    for bad in ["0", "x", "-1", "1.5"] {
        let response = app.get(&format!("/?page={bad}")).await;
        assert_eq!(response.status(), 400, "page={bad}");
        assert!(response.text().await.unwrap().contains("page must be a whole number from 1 up."), "page={bad}");
    }
    stack.cleanup().await;
}

#[tokio::test]
async fn the_homepage_carries_the_servers_clock_at_the_moment_it_is_sent() {
    let stack = TestStack::new().await;
    let app = stack.spawn_web().await;
    let mut clocks = Vec::new();
    for _ in 0..3 {
        let home = app.get("/").await.text().await.unwrap();
        let ms: i64 = home.split("data-server-now-ms=\"").nth(1).and_then(|r| r.split('"').next()).and_then(|v| v.parse().ok()).expect("the page carries the clock");
        clocks.push(ms);
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    // The page is rendered once a second at most, but each response has its own time.
    assert!(clocks[1] - clocks[0] >= 100 && clocks[2] - clocks[1] >= 100, "{clocks:?}");
    stack.cleanup().await;
}
