//! `auction-consumer status` reads groups, members, partitions and lag from Kafka.

use std::time::Duration;

use auction_common::registry::BidEncoder;
use auction_consumers::status;

use crate::helpers::{bid, eventually, produce, TestStack};

#[tokio::test]
async fn status_lists_two_db_writers_with_their_partitions_and_lag_going_to_zero() {
    let stack = TestStack::new().await;
    let encoder = BidEncoder::new(&stack.registry, &stack.kafka.topic).unwrap();
    let mut payloads = Vec::new();
    for i in 0..30 {
        let b = bid(&format!("lagging {i}"), &format!("{}.00", i + 1));
        payloads.push((b.bid_id.to_string(), encoder.encode(&b).await.unwrap()));
    }
    produce(&stack, &payloads).await;
    let group = format!("writers-{}", stack.suffix);
    let kafka = stack.kafka.clone();
    let read = move || {
        let kafka = kafka.clone();
        async move { tokio::task::spawn_blocking(move || status::groups(&kafka)).await.unwrap().unwrap() }
    };
    assert!(read().await.iter().all(|g| g.group != group), "no group before the writers start");

    let writers = [stack.spawn_db_writer("writers"), stack.spawn_db_writer("writers")];
    let seen = eventually(Duration::from_secs(60), "two members sharing the 6 partitions with no lag", || async {
        let groups = read().await;
        let g = groups.into_iter().find(|g| g.group == group)?;
        let mut all: Vec<i32> = g.members.iter().flat_map(|m| m.2.clone()).collect();
        all.sort_unstable();
        (g.members.len() == 2 && g.members.iter().all(|m| !m.2.is_empty()) && all == vec![0, 1, 2, 3, 4, 5] && g.total_lag == 0)
            .then_some(g)
    })
    .await;
    assert_eq!(seen.partitions.iter().map(|p| p.end).sum::<i64>(), 30, "end offsets add up to the bids produced");
    assert!(seen.partitions.iter().all(|p| p.member.is_some()));
    for w in writers {
        w.stop().await;
    }
    stack.cleanup().await;
}
