//! The auction rules at the moment a bid is accepted, and the auction API that shows them, over
//! the real stack. Each test inserts its own auctions with the admin pool.

use std::time::{Duration, Instant};

use auction_common::domain::{format_ts, now_micros};
use auction_common::registry::BidEncoder;
use auction_common::{AuctionId, Bid, BidderName, Price};
use chrono::{DateTime, Utc};
use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

use crate::helpers::{eventually, produce, TestApp, TestStack};

/// What an auction is created with; the rest as migration 0003's defaults.
struct NewAuction {
    id: u64,
    starting_price: &'static str,
    min_increment: &'static str,
    reserve_price: Option<&'static str>,
    ends_at: DateTime<Utc>,
    extend_seconds: u32,
}

impl NewAuction {
    fn open(id: u64) -> Self {
        Self { id, starting_price: "0.01", min_increment: "0.01", reserve_price: None, ends_at: now_micros() + chrono::Duration::hours(1), extend_seconds: 0 }
    }
}

async fn insert_auction(stack: &TestStack, a: NewAuction) {
    let mut conn = stack.pool.get_conn().await.unwrap();
    conn.exec_drop(
        "INSERT INTO auction (id, title, description, starting_price, min_increment, reserve_price, ends_at, extend_seconds)
         VALUES (?, ?, 'made by a test', ?, ?, ?, ?, ?)",
        (a.id, format!("Lot {}", a.id), a.starting_price, a.min_increment, a.reserve_price, a.ends_at.naive_utc(), a.extend_seconds),
    )
    .await
    .unwrap();
}

async fn sql(stack: &TestStack, statement: &str) {
    stack.pool.get_conn().await.unwrap().query_drop(statement).await.unwrap();
}

/// Status and JSON body of a bid posted through the API.
async fn bid(app: &TestApp, auction: u64, name: &str, price: &str) -> (u16, Value) {
    let response = app.post_bid_json(&auction.to_string(), json!({"name": name, "price": price})).await;
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn auction(app: &TestApp, id: u64) -> Value {
    let response = app.get(&format!("/api/auctions/{id}")).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn parse_ts(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("a time, got {v}"))).unwrap().with_timezone(&Utc)
}

/// Bids as another site process would have produced them, with the times given.
async fn produce_bids(stack: &TestStack, bids: &[Bid]) {
    let encoder = BidEncoder::new(&stack.registry, &stack.kafka.topic).unwrap();
    let mut payloads = Vec::new();
    for b in bids {
        payloads.push((b.bid_id.to_string(), encoder.encode(b).await.unwrap()));
    }
    produce(stack, &payloads).await;
}

fn bid_at(auction: u64, name: &str, price: &str, bid_ts: DateTime<Utc>) -> Bid {
    let mut b = Bid::accept(AuctionId::new(auction).unwrap(), BidderName::parse(name).unwrap(), Price::parse(price).unwrap());
    b.bid_ts = bid_ts;
    b
}

#[tokio::test]
async fn a_first_bid_below_the_starting_price_is_refused_naming_the_minimum() {
    let stack = TestStack::new().await;
    insert_auction(&stack, NewAuction { starting_price: "12.50", min_increment: "0.50", ..NewAuction::open(10) }).await;
    let app = stack.spawn_web().await;

    let (status, refused) = bid(&app, 10, "Ada", "12.49").await;

    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"], "price: must be at least 12.50 (the starting price)");
    assert_eq!((&refused["field"], &refused["minimum"]), (&json!("price"), &json!("12.50")));
    let (status, body) = bid(&app, 10, "Ada", "12.50").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(stack.messages_in_topic(), 1, "only the accepted bid is in Kafka");
    stack.cleanup().await;
}

#[tokio::test]
async fn a_later_bid_below_the_highest_plus_the_increment_is_refused_naming_the_minimum() {
    let stack = TestStack::new().await;
    insert_auction(&stack, NewAuction { starting_price: "10", min_increment: "0.50", ..NewAuction::open(11) }).await;
    let app = stack.spawn_web().await;
    assert_eq!(bid(&app, 11, "Ada", "12.50").await.0, 202);

    for too_low in ["12.50", "12.99", "5"] {
        let (status, refused) = bid(&app, 11, "Bob", too_low).await;
        assert_eq!(status, 422, "{too_low}: {refused}");
        assert_eq!(refused["error"], "price: must be at least 13.00 (the highest bid plus the minimum increment)");
        assert_eq!(refused["minimum"], "13.00");
    }
    assert_eq!(bid(&app, 11, "Bob", "13").await.0, 202);
    let view = auction(&app, 11).await;
    assert_eq!((&view["highest_bid"]["name"], &view["minimum_next_bid"], &view["bid_count"]), (&json!("Bob"), &json!("13.50"), &json!(2)));
    assert_eq!(stack.messages_in_topic(), 2, "refused bids are never produced");
    stack.cleanup().await;
}

#[tokio::test]
async fn a_bid_on_an_auction_past_its_end_gets_409_naming_when_it_closed_and_nothing_is_produced() {
    let stack = TestStack::new().await;
    let ended = now_micros() - chrono::Duration::minutes(5);
    insert_auction(&stack, NewAuction { ends_at: ended, ..NewAuction::open(12) }).await;
    let app = stack.spawn_web().await;

    let (status, refused) = bid(&app, 12, "Ada", "100").await;

    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"], format!("auction 12 closed at {}; it takes no more bids", format_ts(&ended)));
    let view = auction(&app, 12).await;
    assert_eq!((&view["status"], &view["minimum_next_bid"], &view["ends_at"]), (&json!("closed"), &json!(null), &json!(format_ts(&ended))));
    assert_eq!(stack.messages_in_topic(), 0);
    stack.cleanup().await;
}

#[tokio::test]
async fn an_auction_closed_in_sql_after_the_site_cached_it_refuses_bids_within_one_refresh() {
    let stack = TestStack::new().await;
    insert_auction(&stack, NewAuction::open(13)).await;
    let app = stack.spawn_web().await;
    assert_eq!(bid(&app, 13, "Ada", "1").await.0, 202);

    sql(&stack, "UPDATE auction SET closed_at = UTC_TIMESTAMP(6) WHERE id = 13").await;
    let closed_at = Instant::now();
    let view = eventually(Duration::from_secs(5), "auction 13 shown closed", || async {
        let v = auction(&app, 13).await;
        (v["status"] == "closed").then_some(v)
    })
    .await;
    assert!(closed_at.elapsed() < Duration::from_millis(2500), "seen after {:?}: more than one refresh", closed_at.elapsed());
    let produced = stack.messages_in_topic();

    let (status, refused) = bid(&app, 13, "Bob", "50").await;

    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"], format!("auction 13 closed at {}; it takes no more bids", view["ends_at"].as_str().unwrap()));
    assert_eq!(view["winner"]["name"], "Ada");
    assert_eq!(stack.messages_in_topic(), produced, "nothing produced after the close was seen");
    stack.cleanup().await;
}

#[tokio::test]
async fn a_bid_in_the_last_extend_seconds_moves_ends_at_in_the_api_at_once() {
    let stack = TestStack::new().await;
    let ends_at = now_micros() + chrono::Duration::seconds(30);
    insert_auction(&stack, NewAuction { ends_at, extend_seconds: 120, ..NewAuction::open(14) }).await;
    let far = now_micros() + chrono::Duration::hours(1);
    insert_auction(&stack, NewAuction { ends_at: far, extend_seconds: 120, ..NewAuction::open(15) }).await;
    let app = stack.spawn_web().await;
    assert_eq!(parse_ts(&auction(&app, 14).await["ends_at"]), ends_at);

    let (status, accepted) = bid(&app, 14, "Ada", "1").await;
    assert_eq!(status, 202);
    let extended = auction(&app, 14).await;
    assert_eq!(parse_ts(&extended["ends_at"]), parse_ts(&accepted["bid_ts"]) + chrono::Duration::seconds(120), "{extended}");
    assert_eq!(extended["extend_seconds"], 120);

    assert_eq!(bid(&app, 15, "Ada", "1").await.0, 202);
    assert_eq!(parse_ts(&auction(&app, 15).await["ends_at"]), far, "a bid long before the end does not move it");
    stack.cleanup().await;
}

#[tokio::test]
async fn a_closed_auction_shows_the_greatest_price_as_winner_the_earliest_on_a_tie() {
    let stack = TestStack::new().await;
    let ended = now_micros() - chrono::Duration::seconds(10);
    insert_auction(&stack, NewAuction { ends_at: ended, ..NewAuction::open(20) }).await;
    let at = |secs_before_end: i64| ended - chrono::Duration::seconds(secs_before_end);
    // As two site replicas may have accepted them: a tie on the price, the later one first.
    let bids = [bid_at(20, "low", "15.00", at(50)), bid_at(20, "later", "20.00", at(20)), bid_at(20, "earlier", "20.00", at(30)), bid_at(20, "too late", "99", at(-1))];
    produce_bids(&stack, &bids).await;
    let writer = stack.spawn_db_writer("writers");
    let app = stack.spawn_web().await;

    let view = eventually(Duration::from_secs(20), "3 bids counted", || async {
        let v = auction(&app, 20).await;
        (v["bid_count"] == 3).then_some(v)
    })
    .await;

    assert_eq!(view["status"], "closed");
    assert_eq!(view["winner"], json!({"name": "earlier", "price": "20.00", "bid_ts": format_ts(&at(30))}));
    assert_eq!(view["highest_bid"], view["winner"]);
    assert!(view.get("no_winner_reason").is_none(), "{view}");
    assert_eq!(view["last_bid_ts"], format_ts(&at(20)), "the bid after the end does not count");
    let recent: Value = app.get("/api/auctions/20/bids").await.json().await.unwrap();
    let names: Vec<&str> = recent["bids"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["later", "earlier", "low"], "newest first, the late bid left out");
    writer.stop().await;
    stack.cleanup().await;
}

#[tokio::test]
async fn a_closed_auction_without_bids_or_below_its_reserve_has_a_null_winner_and_says_why() {
    let stack = TestStack::new().await;
    let ended = now_micros() - chrono::Duration::seconds(10);
    insert_auction(&stack, NewAuction { ends_at: ended, ..NewAuction::open(30) }).await;
    insert_auction(&stack, NewAuction { ends_at: ended, reserve_price: Some("100"), ..NewAuction::open(31) }).await;
    insert_auction(&stack, NewAuction { reserve_price: Some("100"), ..NewAuction::open(32) }).await;
    produce_bids(&stack, &[bid_at(31, "Ada", "50", ended - chrono::Duration::seconds(60))]).await;
    let writer = stack.spawn_db_writer("writers");
    let app = stack.spawn_web().await;

    let no_bids = auction(&app, 30).await;
    assert_eq!((&no_bids["winner"], &no_bids["no_winner_reason"]), (&json!(null), &json!("no bids")), "{no_bids}");
    let below = eventually(Duration::from_secs(20), "the bid on 31 counted", || async {
        let v = auction(&app, 31).await;
        (v["bid_count"] == 1).then_some(v)
    })
    .await;
    assert_eq!((&below["winner"], &below["no_winner_reason"]), (&json!(null), &json!("reserve not met")), "{below}");
    assert_eq!((&below["has_reserve"], &below["reserve_met"], &below["highest_bid"]["price"]), (&json!(true), &json!(false), &json!("50.00")));
    let open = auction(&app, 32).await;
    assert!(open.get("winner").is_none() && open.get("no_winner_reason").is_none(), "an open auction has no winner yet: {open}");
    assert_eq!((&open["status"], &open["has_reserve"], &open["reserve_met"]), (&json!("open"), &json!(true), &json!(false)));

    let list: Value = app.get("/api/auctions").await.json().await.unwrap();
    let ids: Vec<u64> = list["auctions"].as_array().unwrap().iter().map(|a| a["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 4, "auction 1 and the test's three: {list}");
    assert_eq!(&ids[..2], [32, 1], "open first, the soonest end first: {list}");
    writer.stop().await;
    stack.cleanup().await;
}

#[tokio::test]
async fn the_processs_own_acked_bid_shows_at_once_and_is_counted_once_after_the_db_writer_stored_it() {
    let stack = TestStack::new().await;
    insert_auction(&stack, NewAuction::open(40)).await;
    let app = stack.spawn_web().await;
    let replica = stack.spawn_web().await;
    assert_eq!(auction(&replica, 40).await["bid_count"], 0);

    let (status, accepted) = bid(&app, 40, "Ada", "10").await;
    assert_eq!(status, 202);
    let view = auction(&app, 40).await;
    assert_eq!(view["bid_count"], 1, "before the db-writer ran: {view}");
    assert_eq!(view["highest_bid"], json!({"name": "Ada", "price": "10.00", "bid_ts": accepted["bid_ts"]}));
    assert_eq!(view["last_bid_ts"], accepted["bid_ts"]);
    assert_eq!(view["minimum_next_bid"], "10.01");
    let recent: Value = app.get("/api/auctions/40/bids").await.json().await.unwrap();
    assert_eq!(recent["bids"][0]["bid_id"], accepted["bid_id"], "{recent}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(auction(&app, 40).await["bid_count"], 1, "still shown after a refresh found it not recorded");
    assert_eq!(auction(&replica, 40).await["bid_count"], 0, "another process sees it only once recorded");

    let writer = stack.spawn_db_writer("writers");
    let bid_path = format!("/api/bids/{}", accepted["bid_id"].as_str().unwrap());
    eventually(Duration::from_secs(20), "the bid recorded", || async {
        let v: Value = app.get(&bid_path).await.json().await.unwrap();
        (v["status"] == "recorded").then_some(())
    })
    .await;
    eventually(Duration::from_secs(5), "the replica sees the stored bid", || async { (auction(&replica, 40).await["bid_count"] == 1).then_some(()) }).await;
    // Across several refreshes, the bid is counted once: in the stored standing or in the
    // process's own overlay, never both.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(2500) {
        let v = auction(&app, 40).await;
        assert_eq!((&v["bid_count"], &v["highest_bid"]["name"]), (&json!(1), &json!("Ada")), "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bid(&app, 40, "Bob", "10.01").await.0, 202);
    assert_eq!(auction(&app, 40).await["bid_count"], 2);
    writer.stop().await;
    stack.cleanup().await;
}

#[tokio::test]
async fn the_list_holds_auctions_ended_within_seven_days_and_an_older_one_still_answers_by_id() {
    let stack = TestStack::new().await;
    for (id, days_ago) in [(40, 2), (41, 8)] {
        insert_auction(&stack, NewAuction { ends_at: now_micros() - chrono::Duration::days(days_ago), ..NewAuction::open(id) }).await;
    }
    // An auction that ended 8 days ago by its first end, but whose bids moved the end to 1 day ago.
    insert_auction(&stack, NewAuction { ends_at: now_micros() - chrono::Duration::days(9), ..NewAuction::open(42) }).await;
    let mut conn = stack.pool.get_conn().await.unwrap();
    conn.exec_drop(
        "INSERT INTO auction_standing (auction_id, bid_count, last_bid_ts, current_ends_at, updated_at) VALUES (42, 0, NULL, ?, UTC_TIMESTAMP(6))",
        ((now_micros() - chrono::Duration::days(1)).naive_utc(),),
    )
    .await
    .unwrap();
    drop(conn);
    let app = stack.spawn_web().await;

    let list: Value = app.get("/api/auctions").await.json().await.unwrap();
    let mut ids: Vec<u64> = list["auctions"].as_array().unwrap().iter().map(|a| a["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 40, 42], "open, ended 2 days ago, extended to 1 day ago; not the one ended 8 days ago: {list}");
    for _ in 0..2 {
        let old = app.get("/api/auctions/41").await;
        assert_eq!(old.status(), 200);
        let old: Value = old.json().await.unwrap();
        assert_eq!((old["status"].as_str(), old["no_winner_reason"].as_str()), (Some("closed"), Some("no bids")), "{old}");
        // Across a refresh of the board as well.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let page = app.get("/auctions/41").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Lot 41"));
    stack.cleanup().await;
}

#[tokio::test]
async fn bids_racing_on_one_auction_in_one_process_are_accepted_only_an_increment_apart() {
    let stack = TestStack::new().await;
    insert_auction(&stack, NewAuction { starting_price: "1.00", min_increment: "1.00", ..NewAuction::open(50) }).await;
    let app = stack.spawn_web().await;
    // The same price 40 times at once: the first checked is accepted, every other one is below
    // it plus the increment, whether or not Kafka has acked the first yet.
    let same = futures::future::join_all((0..40).map(|i| app.post_bid_json("50", json!({"name": format!("same {i}"), "price": "10.00"})))).await;
    let statuses: Vec<u16> = same.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 422).count(), 39, "{statuses:?}");
    // Prices from 11 to 70 in a shuffled order, all at once: whatever is accepted is, in bid_ts
    // order, each at least the increment above the one before.
    let mut prices: Vec<u32> = (11..=70).collect();
    prices.reverse();
    prices.rotate_left(17);
    let racing = futures::future::join_all(prices.iter().map(|p| app.post_bid_json("50", json!({"name": format!("racer {p}"), "price": format!("{p}.00")})))).await;
    let mut accepted: Vec<(String, f64)> = Vec::new();
    for response in racing {
        let status = response.status().as_u16();
        assert!(matches!(status, 202 | 422), "{status}");
        if status == 202 {
            let bid: Value = response.json().await.unwrap();
            accepted.push((bid["bid_ts"].as_str().unwrap().to_owned(), bid["price"].as_str().unwrap().parse().unwrap()));
        }
    }
    accepted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut last = 10.0;
    for (ts, price) in &accepted {
        assert!(*price >= last + 1.0, "accepted {price} at {ts} after {last}: {accepted:?}");
        last = *price;
    }
    assert!(!accepted.is_empty());
    stack.cleanup().await;
}
