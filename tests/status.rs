//! `auction-consumer status` reads groups, members, partitions and lag from Kafka.

use std::time::Duration;

use auction_common::registry::BidEncoder;
use auction_consumers::status;

use crate::helpers::{bid, eventually, produce, sample, scrape, TestStack};

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

    // Each writer's own view agrees with Kafka's: its /readyz names the partitions status shows
    // for one member, and its lag gauge reaches 0 on each of them.
    let served: Vec<_> = writers.iter().map(|w| w.serve_metrics()).collect();
    let mut from_readyz = Vec::new();
    for (url, _) in &served {
        let body: serde_json::Value = reqwest::get(format!("{url}/readyz")).await.unwrap().json().await.unwrap();
        let parts: Vec<i32> = serde_json::from_value(body["assigned_partitions"].clone()).unwrap();
        eventually(Duration::from_secs(30), "a lag of 0 on each partition the writer holds", || async {
            let text = scrape(url).await;
            parts.iter().all(|p| sample(&text, "auction_consumer_lag", &[("partition", &p.to_string())]) == Some(0.0)).then_some(())
        })
        .await;
        from_readyz.push(parts);
    }
    let mut from_status: Vec<Vec<i32>> = seen.members.iter().map(|m| m.2.clone()).collect();
    from_readyz.sort();
    from_status.sort();
    assert_eq!(from_readyz, from_status, "each writer holds what status says its member holds");
    for (_, server) in served {
        server.stop().await;
    }
    for w in writers {
        w.stop().await;
    }
    stack.cleanup().await;
}
