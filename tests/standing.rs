//! The standing the db-writer keeps per auction, checked against the bid rows in MySQL.

use std::time::Duration;

use auction_common::auction::{ranks_above, LEADING_ORDER_SQL};
use auction_common::registry::BidEncoder;
use auction_common::{AuctionId, Bid, BidderName, Price};
use chrono::{DateTime, Utc};
use mysql_async::prelude::Queryable;

use crate::helpers::{eventually, produce, produce_to, TestStack};

type StandingRow = (u64, Option<String>, Option<String>, Option<String>, Option<String>, String);

async fn standing(stack: &TestStack, auction: u64) -> Option<StandingRow> {
    let mut conn = stack.pool.get_conn().await.unwrap();
    conn.exec_first(
        "SELECT bid_count, highest_bid_id, highest_name, CAST(highest_price AS CHAR),
                DATE_FORMAT(highest_bid_ts, '%Y-%m-%dT%H:%i:%s.%fZ'), DATE_FORMAT(current_ends_at, '%Y-%m-%dT%H:%i:%s.%fZ')
           FROM auction_standing WHERE auction_id = ?",
        (auction,),
    )
    .await
    .unwrap()
}

fn bid_at(auction: u64, name: &str, price: &str, ts: DateTime<Utc>) -> Bid {
    let mut b = Bid::accept(AuctionId::new(auction).unwrap(), BidderName::parse(name).unwrap(), Price::parse(price).unwrap());
    b.bid_ts = ts;
    b
}

async fn encode_all(stack: &TestStack, bids: &[Bid]) -> Vec<(String, Vec<u8>)> {
    let encoder = BidEncoder::new(&stack.registry, &stack.kafka.topic).unwrap();
    let mut out = Vec::new();
    for b in bids {
        out.push((b.bid_id.to_string(), encoder.encode(b).await.unwrap()));
    }
    out
}

#[tokio::test]
async fn the_standing_counts_each_stored_bid_once_and_its_leader_is_the_one_the_sql_order_puts_first() {
    let stack = TestStack::new().await;
    let now = auction_common::domain::now_micros();
    let ts = |ms: i64| now - chrono::Duration::milliseconds(10_000 - ms);
    // Ties on price, one tie on time too: the order must still be total.
    let bids = vec![
        bid_at(1, "a", "10.00", ts(1)),
        bid_at(1, "b", "12.50", ts(2)),
        bid_at(1, "c", "12.50", ts(3)),
        bid_at(1, "d", "12.50", ts(2)),
        bid_at(1, "e", "11.00", ts(4)),
    ];
    let mut payloads = encode_all(&stack, &bids).await;
    // Every bid twice: a redelivery must not count again.
    payloads.extend(payloads.clone());
    produce(&stack, &payloads).await;
    let writer = stack.spawn_db_writer("writers");
    eventually(Duration::from_secs(30), "5 rows", || async { (stack.bid_rows().await.len() == 5).then_some(()) }).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    writer.stop().await;

    let row = standing(&stack, 1).await.expect("a standing for auction 1");
    assert_eq!(row.0, 5, "each bid once");
    let mut conn = stack.pool.get_conn().await.unwrap();
    let first_by_sql: Option<String> =
        conn.query_first(format!("SELECT bid_id FROM bid WHERE auction_id = 1 ORDER BY {LEADING_ORDER_SQL} LIMIT 1")).await.unwrap();
    let first_by_rust = bids.iter().fold(None::<&Bid>, |best, b| match best {
        Some(x) if !ranks_above((b.price, b.bid_ts, b.bid_id), (x.price, x.bid_ts, x.bid_id)) => Some(x),
        _ => Some(b),
    });
    let first_by_rust = first_by_rust.unwrap().bid_id.to_string();
    assert_eq!(first_by_sql.as_deref(), Some(first_by_rust.as_str()), "the SQL order and the Rust rule agree");
    assert_eq!(row.1.as_deref(), Some(first_by_rust.as_str()), "the standing's leader is that bid");
    assert_eq!(row.3.as_deref(), Some("12.50"));
    drop(conn);

    // A second group reading the whole topic again changes nothing.
    let again = stack.spawn_db_writer("rebuild");
    tokio::time::sleep(Duration::from_secs(4)).await;
    again.stop().await;
    assert_eq!(standing(&stack, 1).await.unwrap(), row);
    stack.cleanup().await;
}

#[tokio::test]
async fn a_bid_placed_in_an_extension_counts_even_when_stored_before_the_bid_that_opened_it() {
    let stack = TestStack::new().await;
    let ends_at = auction_common::domain::now_micros() - chrono::Duration::seconds(600);
    let mut conn = stack.pool.get_conn().await.unwrap();
    conn.exec_drop(
        "INSERT INTO auction (id, title, starting_price, min_increment, ends_at, extend_seconds) VALUES (2, 'Sniped', 1, 1, ?, 120)",
        (ends_at.naive_utc(),),
    )
    .await
    .unwrap();
    drop(conn);
    let opener = bid_at(2, "opener", "5", ends_at - chrono::Duration::seconds(30));
    let sniper = bid_at(2, "sniper", "6", ends_at + chrono::Duration::seconds(60));
    let too_late = bid_at(2, "too late", "99", ends_at + chrono::Duration::seconds(600));
    let writer = stack.spawn_db_writer("writers");

    // The bid placed in the extension is stored first: on its own it is after the end.
    produce_to(&stack, Some(0), &encode_all(&stack, std::slice::from_ref(&sniper)).await).await;
    eventually(Duration::from_secs(30), "the sniper's row", || async { (stack.bid_rows().await.len() == 1).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(standing(&stack, 2).await.unwrap().0, 0, "not counted yet");

    produce_to(&stack, Some(1), &encode_all(&stack, &[opener, too_late]).await).await;
    eventually(Duration::from_secs(30), "all 3 rows", || async { (stack.bid_rows().await.len() == 3).then_some(()) }).await;
    let row = eventually(Duration::from_secs(10), "the standing to count 2", || async {
        standing(&stack, 2).await.filter(|s| s.0 == 2)
    })
    .await;
    assert_eq!(row.2.as_deref(), Some("sniper"), "the bid in the extension leads");
    let expected_end = chrono::DateTime::parse_from_rfc3339(&row.5).unwrap();
    assert_eq!(expected_end, sniper.bid_ts + chrono::Duration::seconds(120), "the end moved to the sniper's time plus 120 s");
    writer.stop().await;
    stack.cleanup().await;
}
