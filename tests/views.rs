//! The analysts' views (sql/README.md) give the right figures for a known set of bids.

use std::time::Duration;

use auction_common::domain::now_micros;
use auction_common::registry::BidEncoder;
use auction_common::{AuctionId, Bid, BidderName, Price};
use chrono::{DateTime, Timelike, Utc};
use mysql_async::prelude::Queryable;

use crate::helpers::{eventually, produce, TestStack};

fn bid_at(auction: u64, name: &str, price: &str, ts: DateTime<Utc>) -> Bid {
    let mut b = Bid::accept(AuctionId::new(auction).unwrap(), BidderName::parse(name).unwrap(), Price::parse(price).unwrap());
    b.bid_ts = ts;
    b
}

#[tokio::test]
async fn the_views_count_bids_bidders_minutes_and_winners_as_the_bids_say() {
    let stack = TestStack::new().await;
    let now = now_micros();
    // On a whole minute, so the bids below fall in the minutes the test says.
    let ended = (now - chrono::Duration::minutes(30)).with_second(0).and_then(|t| t.with_nanosecond(0)).unwrap();
    let mut conn = stack.pool.get_conn().await.unwrap();
    // Auction 2 closed (reserve met), auction 3 closed (reserve not met); auction 1 is open.
    conn.exec_drop(
        "INSERT INTO auction (id, title, starting_price, min_increment, reserve_price, ends_at, extend_seconds) VALUES
           (2, 'Closed, sold', 1, 1, 10, ?, 0), (3, 'Closed, unsold', 1, 1, 500, ?, 0)",
        (ended.naive_utc(), ended.naive_utc()),
    )
    .await
    .unwrap();
    drop(conn);
    let m = |minutes_before_end: i64, secs: i64| ended - chrono::Duration::minutes(minutes_before_end) + chrono::Duration::seconds(secs);
    let bids = vec![
        bid_at(1, "Ada", "5.00", now - chrono::Duration::seconds(5)),
        bid_at(1, "Bob", "6.00", now - chrono::Duration::seconds(4)),
        bid_at(1, "Ada", "7.00", now - chrono::Duration::seconds(3)),
        bid_at(2, "Ada", "20.00", m(10, 1)),
        bid_at(2, "Cy", "25.00", m(10, 30)),
        bid_at(2, "Bob", "30.00", m(9, 10)),
        bid_at(3, "Cy", "40.00", m(2, 0)),
    ];
    let encoder = BidEncoder::new(&stack.registry, &stack.kafka.topic).unwrap();
    let mut payloads = Vec::new();
    for b in &bids {
        payloads.push((b.bid_id.to_string(), encoder.encode(b).await.unwrap()));
    }
    payloads.extend(payloads.clone()); // redelivered: counted once
    produce(&stack, &payloads).await;
    let writer = stack.spawn_db_writer("writers");
    eventually(Duration::from_secs(30), "7 rows", || async { (stack.bid_rows().await.len() == 7).then_some(()) }).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    writer.stop().await;

    let mut conn = stack.pool.get_conn().await.unwrap();
    type Summary = (u64, String, u64, u64, Option<String>, Option<String>, Option<String>);
    let summary: Vec<Summary> = conn
        .query("SELECT auction_id, status, bids, distinct_bidders, CAST(highest_price AS CHAR), highest_bidder, winner FROM v_auction_summary ORDER BY auction_id")
        .await
        .unwrap();
    assert_eq!(
        summary,
        vec![
            (1, "open".into(), 3, 2, Some("7.00".into()), Some("Ada".into()), None),
            (2, "closed".into(), 3, 3, Some("30.00".into()), Some("Bob".into()), Some("Bob".into())),
            (3, "closed".into(), 1, 1, Some("40.00".into()), Some("Cy".into()), None),
        ]
    );

    let per_minute: Vec<(String, u64, u64)> = conn
        .query("SELECT DATE_FORMAT(minute, '%H:%i'), auction_id, bids FROM v_bids_per_minute WHERE auction_id = 2 ORDER BY minute")
        .await
        .unwrap();
    let minute = |t: DateTime<Utc>| t.format("%H:%M").to_string();
    assert_eq!(per_minute, vec![(minute(m(10, 0)), 2, 2), (minute(m(9, 0)), 2, 1)]);
    let total: Option<u64> = conn.query_first("SELECT CAST(SUM(bids) AS UNSIGNED) FROM v_bids_per_minute").await.unwrap();
    assert_eq!(total, Some(7));

    let top: Vec<(String, u64, u64, String)> =
        conn.query("SELECT name, CAST(bids AS UNSIGNED), auctions, CAST(highest_price AS CHAR) FROM v_top_bidders ORDER BY bids DESC, name").await.unwrap();
    assert_eq!(
        top,
        vec![("Ada".into(), 3, 2, "20.00".into()), ("Bob".into(), 2, 2, "30.00".into()), ("Cy".into(), 2, 2, "40.00".into())]
    );
    // The per-bidder totals the dashboard reads agree with the view.
    let totals: Vec<(String, u64, String)> =
        conn.query("SELECT name, bids, CAST(highest_price AS CHAR) FROM bidder_totals ORDER BY bids DESC, name").await.unwrap();
    assert_eq!(totals, vec![("Ada".into(), 3, "20.00".into()), ("Bob".into(), 2, "30.00".into()), ("Cy".into(), 2, "40.00".into())]);

    let titled: Vec<(String, String)> = conn.query("SELECT name, auction_title FROM v_bids WHERE auction_id = 3").await.unwrap();
    assert_eq!(titled, vec![("Cy".into(), "Closed, unsold".into())]);
    // The views of migration 0002 still answer, from the standings.
    let highest: Vec<(u64, String)> = conn.query("SELECT auction_id, name FROM auction_highest_bid ORDER BY auction_id").await.unwrap();
    assert_eq!(highest, vec![(1, "Ada".into()), (2, "Bob".into()), (3, "Cy".into())]);
    drop(conn);
    stack.cleanup().await;
}

#[tokio::test]
async fn late_bids_are_recorded_but_not_counted_and_names_differing_in_case_are_different_bidders() {
    let stack = TestStack::new().await;
    let end = (now_micros() - chrono::Duration::minutes(10)).with_nanosecond(0).unwrap();
    let mut conn = stack.pool.get_conn().await.unwrap();
    conn.exec_drop(
        "INSERT INTO auction (id, title, starting_price, min_increment, ends_at, extend_seconds) VALUES (2, 'Sniped', 1, 1, ?, 60)",
        (end.naive_utc(),),
    )
    .await
    .unwrap();
    drop(conn);
    let at = |secs: i64| end + chrono::Duration::seconds(secs);
    let bids = vec![
        bid_at(2, "Ada", "10.00", at(-300)),
        // In the last minute: the end moves to 30 s after the end...
        bid_at(2, "ada", "11.00", at(-30)),
        // ...so this one counts and moves it again, to end + 70 s...
        bid_at(2, "ADA", "12.00", at(10)),
        // ...and this one comes too late: recorded, not counted, not the highest.
        bid_at(2, "Bob", "50.00", at(120)),
    ];
    let encoder = BidEncoder::new(&stack.registry, &stack.kafka.topic).unwrap();
    let mut payloads = Vec::new();
    for b in &bids {
        payloads.push((b.bid_id.to_string(), encoder.encode(b).await.unwrap()));
    }
    produce(&stack, &payloads).await;
    let writer = stack.spawn_db_writer("writers");
    eventually(Duration::from_secs(30), "4 rows", || async { (stack.bid_rows().await.len() == 4).then_some(()) }).await;
    writer.stop().await;

    let mut conn = stack.pool.get_conn().await.unwrap();
    let ts = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    type Summary = (String, u64, u64, String, String, Option<String>, String);
    let summary: Option<Summary> = conn
        .query_first(
            "SELECT status, bids, distinct_bidders, CAST(highest_price AS CHAR), highest_bidder, winner, DATE_FORMAT(ends_at, '%Y-%m-%dT%H:%i:%s.%f')
             FROM v_auction_summary WHERE auction_id = 2",
        )
        .await
        .unwrap();
    assert_eq!(
        summary,
        // distinct_bidders counts every recorded bid's bidder, the late one included (sql/README.md).
        Some(("closed".into(), 3, 4, "12.00".into(), "ADA".into(), Some("ADA".into()), ts(at(70))))
    );
    let recorded: Vec<(String, String, String)> = conn
        .query("SELECT name, CAST(price AS CHAR), DATE_FORMAT(bid_ts, '%Y-%m-%dT%H:%i:%s.%f') FROM v_bids WHERE auction_id = 2 ORDER BY bid_ts")
        .await
        .unwrap();
    assert_eq!(
        recorded,
        bids.iter().map(|b| (b.name.as_str().to_owned(), b.price.get().to_string(), ts(b.bid_ts))).collect::<Vec<_>>(),
        "every bid, late or not, exactly as placed"
    );
    let per_minute: Option<u64> =
        conn.query_first("SELECT CAST(SUM(bids) AS UNSIGNED) FROM v_bids_per_minute WHERE auction_id = 2").await.unwrap();
    assert_eq!(per_minute, Some(4));
    let top: Vec<(String, u64, String)> = conn
        .query("SELECT name, CAST(bids AS UNSIGNED), DATE_FORMAT(last_bid_ts, '%Y-%m-%dT%H:%i:%s.%f') FROM v_top_bidders ORDER BY last_bid_ts")
        .await
        .unwrap();
    let names: Vec<&str> = top.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(names, ["Ada", "ada", "ADA", "Bob"], "one row per exact name");
    assert!(top.iter().all(|t| t.1 == 1));
    assert_eq!(top[3].2, ts(at(120)));

    // The first schema's views: counted bids, the first bid stored, the same leader.
    let old: Option<(u64, String, String, String)> = conn
        .query_first(
            "SELECT bid_count, DATE_FORMAT(first_bid_ts, '%Y-%m-%dT%H:%i:%s.%f'), CAST(highest_price AS CHAR), highest_bidder
             FROM auction_summary WHERE auction_id = 2",
        )
        .await
        .unwrap();
    assert_eq!(old, Some((3, ts(at(-300)), "12.00".into(), "ADA".into())));
    let highest: Option<(String, String)> =
        conn.query_first("SELECT name, CAST(price AS CHAR) FROM auction_highest_bid WHERE auction_id = 2").await.unwrap();
    assert_eq!(highest, Some(("ADA".into(), "12.00".into())));
    drop(conn);
    stack.cleanup().await;
}
