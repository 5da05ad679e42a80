//! The live feed: what `/dashboard`, `/` and `/auctions/{id}` show without a reload, sent as
//! server-sent events by `GET /api/feed`.
//!
//! One feed per web process, however many pages are open on it:
//! - `bids`: the process reads the bids topic itself (every partition, from its end, outside any
//!   consumer group and committing nothing), so a bid accepted by any replica reaches the pages
//!   within about [`FLUSH_EVERY`] of Kafka's ack. One event per [`FLUSH_EVERY`] carries the
//!   newest [`BIDS_PER_EVENT`] bids and, for every auction that had bids meanwhile, the best of
//!   them (greatest price, earliest on a tie), so a busy topic costs a page five events a second,
//!   not one per bid.
//! - `board`: once a second, the [`BOARD_AUCTIONS_MAX`] open auctions ending soonest (highest,
//!   bid count, end in force: the board's view, see [`crate::board`]) and how many are open,
//!   bids per minute over the last hour, the top bidders and the pipeline's health
//!   ([`crate::health`]). Built once a second, whatever the number of pages.
//!
//! Fan-out: one broadcast channel of events serialized once. It holds the last
//! [`EVENTS_BUFFERED`] events; a page that falls further behind is dropped (its stream ends;
//! the browser's EventSource reconnects by itself and starts again from the current board), so
//! a slow client never makes the process buffer without bound. On shutdown every stream ends at
//! once, so open pages do not hold the drain.
//!
//! The feed is for display only: it decides nothing. A bid refused at the door never reaches
//! Kafka, so never shows; a bid the feed cannot decode is logged and left out.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use auction_common::auction::ranks_above;
use auction_common::config::{KafkaConfig, RegistryConfig};
use auction_common::domain::format_ts;
use auction_common::registry::BidDecoder;
use auction_common::{kafka, Bid};
use chrono::{DateTime, Utc};
use futures::stream::{self, Stream, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::board::{AuctionView, Board};
use crate::health::{Health, HealthWatch};
use crate::pages::money;

/// How often gathered bids go out as one event.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Most bids one `bids` event lists (the dashboard shows the latest 20).
pub const BIDS_PER_EVENT: usize = 20;
/// Events a page may fall behind before it is dropped.
pub const EVENTS_BUFFERED: usize = 64;
/// Most open auctions a `board` event lists (soonest end first): the first page of `/`. Every
/// open page gets each `board` event (about 350 bytes an auction, once a second); an auction
/// further down still gets its new highest bids from the `bids` events.
pub const BOARD_AUCTIONS_MAX: usize = 50;
/// How often the topic's partitions are looked up again (partitions may be added).
const PARTITIONS_EVERY: Duration = Duration::from_secs(30);
/// While Kafka or the registry fails, how often the log says so.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// One bid as pages show it.
#[derive(Debug, Clone, Serialize)]
pub struct BidShown {
    pub auction_id: u64,
    pub bid_id: String,
    pub name: String,
    /// Exact, as the API takes it: "1234.50".
    pub price: String,
    /// As people read it: "1,234.50".
    pub shown: String,
    pub bid_ts: String,
    pub ms: i64,
}

impl BidShown {
    fn new(bid: &Bid) -> Self {
        Self {
            auction_id: bid.auction_id.get(),
            bid_id: bid.bid_id.to_string(),
            name: bid.name.as_str().to_owned(),
            price: bid.price.get().to_string(),
            shown: money(bid.price.get()),
            bid_ts: format_ts(&bid.bid_ts),
            ms: bid.bid_ts.timestamp_millis(),
        }
    }
}

#[derive(Serialize)]
struct BidsEvent<'a> {
    /// Newest first.
    bids: &'a [BidShown],
    /// Per auction with bids since the last event, the best of them.
    leaders: Vec<BidShown>,
}

/// One open auction in a `board` event.
#[derive(Serialize)]
struct AuctionLive {
    id: u64,
    title: String,
    highest: Option<LeaderLive>,
    bid_count: u64,
    ends_ms: i64,
    ends_at: String,
    minimum_next_bid: String,
    /// As the form takes it: "1234.50".
    minimum_next_plain: String,
    min_increment: String,
    open: bool,
}

#[derive(Serialize)]
struct LeaderLive {
    name: String,
    price: String,
    shown: String,
    ms: i64,
}

impl AuctionLive {
    fn new(view: &AuctionView, now: DateTime<Utc>) -> Self {
        Self {
            id: view.id.get(),
            title: view.title.clone(),
            highest: view.standing.highest.as_ref().map(|h| LeaderLive {
                name: h.name.as_str().to_owned(),
                price: h.price.get().to_string(),
                shown: money(h.price.get()),
                ms: h.bid_ts.timestamp_millis(),
            }),
            bid_count: view.standing.bid_count,
            ends_ms: view.ends_at().timestamp_millis(),
            ends_at: format_ts(&view.ends_at()),
            minimum_next_bid: money(view.minimum_next_bid()),
            minimum_next_plain: view.minimum_next_bid().to_string(),
            min_increment: crate::board::cents(view.rules.min_increment).to_string(),
            open: view.is_open(now),
        }
    }
}

#[derive(Serialize)]
struct BoardEvent<'a> {
    server_now_ms: i64,
    open_total: usize,
    auctions: Vec<AuctionLive>,
    health: &'a Health,
}

/// The process's one feed.
pub struct Feed {
    events: broadcast::Sender<Bytes>,
    /// The newest bids seen, newest first, for a page that connects now.
    recent: Mutex<VecDeque<BidShown>>,
    /// The last `board` event, for a page that connects now.
    board: Mutex<Option<Bytes>>,
    stop: watch::Receiver<bool>,
}

/// One server-sent event.
fn frame(event: &str, data: &impl Serialize) -> Bytes {
    // serde_json never writes a raw newline inside a value, so the data is one `data:` line.
    let json = serde_json::to_string(data).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    Bytes::from(format!("event: {event}\ndata: {json}\n\n"))
}

impl Feed {
    pub fn new(stop: watch::Receiver<bool>) -> Arc<Self> {
        let (events, _) = broadcast::channel(EVENTS_BUFFERED);
        Arc::new(Self { events, recent: Mutex::new(VecDeque::new()), board: Mutex::new(None), stop })
    }

    /// Sends the bids gathered since the last call (oldest first) as one event.
    fn publish_bids(&self, bids: &[Bid]) {
        if bids.is_empty() {
            return;
        }
        let mut best: HashMap<u64, &Bid> = HashMap::new();
        for bid in bids {
            best.entry(bid.auction_id.get())
                .and_modify(|b| {
                    if ranks_above((bid.price, bid.bid_ts, bid.bid_id), (b.price, b.bid_ts, b.bid_id)) {
                        *b = bid;
                    }
                })
                .or_insert(bid);
        }
        let newest: Vec<BidShown> = bids.iter().rev().take(BIDS_PER_EVENT).map(BidShown::new).collect();
        let event = frame("bids", &BidsEvent { bids: &newest, leaders: best.values().map(|b| BidShown::new(b)).collect() });
        {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            for bid in newest.into_iter().rev() {
                recent.push_front(bid);
            }
            recent.truncate(BIDS_PER_EVENT);
        }
        // No page open: nothing to do.
        let _ = self.events.send(event);
    }

    fn publish_board(&self, board: &Board, health: &Health) {
        let now = Utc::now();
        let open: Vec<AuctionView> = board.auctions().into_iter().filter(|a| a.is_open(now)).collect();
        let event = frame(
            "board",
            &BoardEvent {
                server_now_ms: now.timestamp_millis(),
                open_total: open.len(),
                auctions: open.iter().take(BOARD_AUCTIONS_MAX).map(|a| AuctionLive::new(a, now)).collect(),
                health,
            },
        );
        *self.board.lock().unwrap_or_else(PoisonError::into_inner) = Some(event.clone());
        let _ = self.events.send(event);
    }

    /// What a page connecting now gets: the current board and the newest bids, then every event.
    pub fn subscribe(&self) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
        let receiver = self.events.subscribe();
        let mut first: Vec<Bytes> = Vec::with_capacity(3);
        // Tells EventSource how long to wait before reconnecting after the stream ends.
        first.push(Bytes::from_static(b"retry: 1000\n\n"));
        if let Some(board) = self.board.lock().unwrap_or_else(PoisonError::into_inner).clone() {
            first.push(board);
        }
        let recent: Vec<BidShown> = self.recent.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect();
        if !recent.is_empty() {
            first.push(frame("bids", &BidsEvent { bids: &recent, leaders: Vec::new() }));
        }
        let stop = self.stop.clone();
        let live = stream::unfold((receiver, stop), |(mut receiver, mut stop)| async move {
            if *stop.borrow() {
                return None;
            }
            let received = tokio::select! {
                received = receiver.recv() => received,
                _ = stop.wait_for(|stop| *stop) => return None,
            };
            match received {
                Ok(event) => Some((Ok(event), (receiver, stop))),
                // Too far behind (or the feed is gone): drop this page; it reconnects.
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    log::debug!("a feed client fell {missed} events behind and is dropped");
                    None
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        stream::iter(first.into_iter().map(Ok)).chain(live)
    }

    /// Builds and sends the `board` event once a second until the process stops.
    pub fn spawn_board(self: &Arc<Self>, board: Arc<Board>, health: HealthWatch) {
        let feed = Arc::clone(self);
        tokio::spawn(async move {
            let mut stop = feed.stop.clone();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|stop| *stop) => return,
                }
                let health = health.borrow().clone();
                feed.publish_board(&board, &health);
            }
        });
    }

    /// Reads every bid from the topic's end and sends them in `bids` events, until the process
    /// stops. Kafka or registry failures are logged (at most every 10 s) and retried.
    pub fn spawn_bids(self: &Arc<Self>, kafka_config: KafkaConfig, registry: RegistryConfig) {
        let feed = Arc::clone(self);
        tokio::spawn(async move {
            let mut stop = feed.stop.clone();
            let reading = feed.read_bids(&kafka_config, &registry);
            tokio::select! {
                () = reading => {}
                _ = stop.wait_for(|stop| *stop) => {}
            }
        });
    }

    async fn read_bids(&self, kafka_config: &KafkaConfig, registry: &RegistryConfig) {
        let mut last_error_log: Option<Instant> = None;
        let mut log_error = |what: String| {
            if last_error_log.is_none_or(|at| at.elapsed() >= ERROR_LOG_EVERY) {
                log::warn!("live feed: {what}");
                last_error_log = Some(Instant::now());
            }
        };
        let (consumer, decoder) = loop {
            let consumer: Result<StreamConsumer, _> = kafka::client_config(kafka_config)
                // Never joins the group (partitions are assigned, not subscribed) and commits
                // nothing; librdkafka wants a group id all the same.
                .set("group.id", "auction-web-live-feed")
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("enable.partition.eof", "false")
                .set("fetch.wait.max.ms", "50")
                .create();
            match (consumer, BidDecoder::new(registry)) {
                (Ok(consumer), Ok(decoder)) => break (consumer, decoder),
                (Err(e), _) => log_error(format!("cannot create the Kafka consumer: {}", kafka::describe(&e))),
                (_, Err(e)) => log_error(format!("cannot create the registry client: {e}")),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let consumer = Arc::new(consumer);
        let mut assigned = 0usize;
        let mut looked_up = Instant::now() - PARTITIONS_EVERY;
        let mut gathered: Vec<Bid> = Vec::new();
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if looked_up.elapsed() >= PARTITIONS_EVERY || assigned == 0 {
                looked_up = Instant::now();
                match partitions(&consumer, &kafka_config.topic).await {
                    Ok(count) if count > assigned => {
                        let mut list = TopicPartitionList::new();
                        for partition in 0..count {
                            // Partitions already read keep their place; new ones start at their end.
                            let position = consumer
                                .position()
                                .ok()
                                .and_then(|p| p.find_partition(&kafka_config.topic, partition as i32).map(|e| e.offset()))
                                .filter(|o| matches!(o, Offset::Offset(_)))
                                .unwrap_or(Offset::End);
                            let _ = list.add_partition_offset(&kafka_config.topic, partition as i32, position);
                        }
                        match consumer.assign(&list) {
                            Ok(()) => {
                                log::info!("live feed: reading {count} partitions of {}", kafka_config.topic);
                                assigned = count;
                            }
                            Err(e) => log_error(format!("cannot assign the partitions of {}: {e}", kafka_config.topic)),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => log_error(e),
                }
                if assigned == 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            tokio::select! {
                message = consumer.recv() => match message {
                    Ok(message) => match decoder.decode(message.payload()).await {
                        Ok(bid) => gathered.push(bid),
                        Err(e) => log_error(format!(
                            "a message is not shown ({}/{}@{}): {e}", message.topic(), message.partition(), message.offset()
                        )),
                    },
                    Err(e) => log_error(format!("Kafka: {e}")),
                },
                _ = tick.tick() => {
                    self.publish_bids(&gathered);
                    gathered.clear();
                }
            }
        }
    }
}

/// How many partitions the topic has (0 while it does not exist).
async fn partitions(consumer: &Arc<StreamConsumer>, topic: &str) -> Result<usize, String> {
    let (consumer, name) = (Arc::clone(consumer), topic.to_owned());
    let metadata = tokio::task::spawn_blocking(move || consumer.fetch_metadata(Some(&name), Duration::from_secs(5)))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot read the partitions of {topic}: {e}"))?;
    Ok(metadata.topics().first().filter(|t| t.error().is_none()).map_or(0, |t| t.partitions().len()))
}

/// `GET /api/feed`: the live feed as `text/event-stream`.
pub async fn events(feed: web::Data<Arc<Feed>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // Proxies such as nginx would otherwise hold events back to fill a buffer.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(feed.subscribe())
}

#[cfg(test)]
mod tests {
    use super::*;
    use auction_common::{AuctionId, BidderName, Price};
    use futures::StreamExt;

    fn bid(auction: u64, name: &str, price: &str) -> Bid {
        Bid::accept(AuctionId::new(auction).unwrap(), BidderName::parse(name).unwrap(), Price::parse(price).unwrap())
    }

    async fn next_event(stream: &mut (impl Stream<Item = Result<Bytes, actix_web::Error>> + Unpin)) -> Option<String> {
        let item = tokio::time::timeout(Duration::from_secs(2), stream.next()).await.expect("the stream neither hangs nor waits");
        item.map(|bytes| String::from_utf8(bytes.expect("an event").to_vec()).expect("utf-8"))
    }

    fn data_of(event: &str) -> serde_json::Value {
        let json = event.lines().find_map(|l| l.strip_prefix("data: ")).expect("a data line");
        serde_json::from_str(json).expect("JSON data")
    }

    #[tokio::test]
    async fn a_bids_event_lists_the_newest_bids_first_and_each_auctions_best_bid() {
        let (_stop, stopped) = watch::channel(false);
        let feed = Feed::new(stopped);
        let mut stream = Box::pin(feed.subscribe());
        assert_eq!(next_event(&mut stream).await.as_deref(), Some("retry: 1000\n\n"));
        feed.publish_bids(&[bid(1, "Ann", "10"), bid(1, "Bob", "12"), bid(2, "<b>Cy</b>", "5"), bid(1, "Dee", "12")]);
        let event = next_event(&mut stream).await.expect("a bids event");
        assert!(event.starts_with("event: bids\n"), "{event}");
        let data = data_of(&event);
        let names: Vec<&str> = data["bids"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Dee", "<b>Cy</b>", "Bob", "Ann"]);
        let mut leaders: Vec<(u64, &str, &str)> = data["leaders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b["auction_id"].as_u64().unwrap(), b["name"].as_str().unwrap(), b["shown"].as_str().unwrap()))
            .collect();
        leaders.sort();
        // Bob and Dee bid the same: the earlier one leads.
        assert_eq!(leaders, [(1, "Bob", "12.00"), (2, "<b>Cy</b>", "5.00")]);
        // A page opening now gets the newest bids at once.
        let mut late = Box::pin(feed.subscribe());
        next_event(&mut late).await;
        let recent = next_event(&mut late).await.expect("the recent bids");
        assert_eq!(data_of(&recent)["bids"].as_array().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn a_page_that_falls_too_far_behind_is_dropped_not_buffered() {
        let (_stop, stopped) = watch::channel(false);
        let feed = Feed::new(stopped);
        let mut stream = Box::pin(feed.subscribe());
        next_event(&mut stream).await;
        for i in 0..EVENTS_BUFFERED + 5 {
            feed.publish_bids(&[bid(1, "Ann", &format!("{}.00", i + 1))]);
        }
        assert_eq!(next_event(&mut stream).await, None, "a client behind by more than {EVENTS_BUFFERED} events is dropped");
        // One that keeps up keeps getting events.
        let mut keeping_up = Box::pin(feed.subscribe());
        next_event(&mut keeping_up).await;
        next_event(&mut keeping_up).await;
        feed.publish_bids(&[bid(1, "Bob", "999.00")]);
        assert!(next_event(&mut keeping_up).await.expect("an event").contains("Bob"));
    }

    #[tokio::test]
    async fn every_open_page_ends_when_the_site_stops() {
        let (stop, stopped) = watch::channel(false);
        let feed = Feed::new(stopped);
        let mut stream = Box::pin(feed.subscribe());
        next_event(&mut stream).await;
        stop.send(true).unwrap();
        assert_eq!(next_event(&mut stream).await, None);
    }
}
