//! Placing a bid, the site's one use case; the JSON API and the form are thin adapters over it.
//!
//! A bid request is validated; its auction must exist (404). Then, holding the auction's turn
//! (below), the bid is stamped (`bid_ts`), checked against the auction's rules at that instant
//! on the freshest standing this process knows (the board: stored standing plus every bid this
//! process acked, plus the bids of this process still waiting for Kafka's ack), encoded and
//! registered as in flight; the turn passes and the bid is produced. It is accepted once the
//! broker acked it, and counted on the board at once, before it leaves the in-flight list. So in
//! one process every accepted bid beats the one accepted before it by the increment, and an
//! anti-sniping extension it causes shows at once. Refusals: closed (409, naming when), below
//! the minimum (422, naming it).
//!
//! The turn: one bid per auction at a time is between its stamp and its registration as in
//! flight in this process (microseconds), not until its ack: a hot auction's bids are checked
//! one after another and wait for Kafka together. A bid in flight that Kafka refuses leaves
//! the list; the bids checked against it meanwhile had to beat it, so they beat what remains.
//! Different auctions do not wait on each other. A bid waits for its turn at most the Kafka
//! delivery timeout, then gets a 503. Several web processes do not share turns: two replicas
//! may accept bids at the same moment that are closer than the increment (the winner is still
//! the greatest price, earliest on a tie, as the db-writer counts them).
//!
//! Under faults:
//! - at most `max_bids_in_flight` bids are being handled at once; beyond that a request gets
//!   a 503 at once, so a stalled Kafka costs bounded memory;
//! - a failure before the bid was handed to the producer means it was not placed; after, its
//!   outcome is unknown and the answer names its `bid_id`;
//! - with an idempotency key (see [`crate::idempotency`]), a retry never makes a second bid:
//!   it replays the ack, or produces the identical bid again (same `bid_id`, `bid_ts` and
//!   bytes), which the consumers store once since they deduplicate by `bid_id`.
//!
//! The bids this process acked are kept (bounded) so a bid can be shown before the db-writer
//! has stored it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use auction_common::{AuctionId, Bid, BidId, BidderName, Price};
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::board::Board;
use crate::bounded::BoundedMap;
use crate::error::ApiError;
use crate::idempotency::{Claim, IdempotencyKey, IdempotencyKeys, Reservation};
use crate::metrics::{refusal_reason, WebMetrics};
use crate::publish::BidPublisher;
use crate::store::{Store, StoredBid};

/// A bid request whose fields are valid; what an idempotency key is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BidRequest {
    pub auction_id: AuctionId,
    pub name: BidderName,
    pub price: Price,
}

impl BidRequest {
    /// The texts as the bidder sent them. An auction id that is not one is "not found", like
    /// any auction that does not exist.
    pub fn parse(auction: &str, name: &str, price: &str) -> Result<Self, ApiError> {
        let auction_id = parse_auction_id(auction)?;
        Ok(Self { auction_id, name: BidderName::parse(name)?, price: Price::parse(price)? })
    }
}

pub fn parse_auction_id(raw: &str) -> Result<AuctionId, ApiError> {
    let shown: String = raw.chars().take(30).collect();
    raw.parse::<u64>()
        .ok()
        .and_then(|id| AuctionId::new(id).ok())
        .ok_or(ApiError::NotFound(format!("{shown:?}")))
}

/// A bid and its encoded bytes: produced again unchanged when its outcome was unknown.
#[derive(Clone)]
struct Attempt {
    bid: Bid,
    payload: Arc<[u8]>,
}

/// Where a bid is, as far as this process can tell.
pub enum BidStatus {
    /// The db-writer stored it in MySQL.
    Recorded(StoredBid),
    /// This process got the broker's ack; it is not in MySQL yet.
    Pending(Bid),
}

/// The bounds the use case keeps (see `WebConfig` for what each means).
pub struct BiddingLimits {
    pub max_bids_in_flight: usize,
    pub idempotency_keys_max: usize,
    pub idempotency_key_ttl: Duration,
    pub acked_bids_max: usize,
    /// How long a bid may wait for its auction's turn.
    pub turn_wait: Duration,
}

/// One auction's turn: held by a bid from its stamp until it is registered as in flight.
type Turn = OwnedMutexGuard<()>;

/// Per auction, the bids of this process checked and handed on to Kafka, not yet acked or
/// refused: the next bid on the auction is checked against the board plus these. Bounded by
/// `max_bids_in_flight`.
type InFlightBids = Arc<Mutex<HashMap<AuctionId, Vec<Bid>>>>;

/// A bid's place in [`InFlightBids`], given back when dropped (after the ack put it on the
/// board, or once it failed), whatever ends the producing task.
struct InFlight {
    bids: InFlightBids,
    bid: Bid,
}

impl InFlight {
    fn register(bids: &InFlightBids, bid: &Bid) -> Self {
        bids.lock().unwrap_or_else(PoisonError::into_inner).entry(bid.auction_id).or_default().push(bid.clone());
        Self { bids: Arc::clone(bids), bid: bid.clone() }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut bids = self.bids.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = bids.get_mut(&self.bid.auction_id) {
            list.retain(|b| b.bid_id != self.bid.bid_id);
            if list.is_empty() {
                bids.remove(&self.bid.auction_id);
            }
        }
    }
}

pub struct Bidding {
    store: Arc<Store>,
    board: Arc<Board>,
    publisher: BidPublisher,
    /// Per auction on the board (an id that does not exist gets none, so the map is bounded by
    /// the auctions there are); unused ones are dropped as the map grows.
    turns: Mutex<HashMap<AuctionId, Arc<tokio::sync::Mutex<()>>>>,
    turn_wait: Duration,
    in_flight_bids: InFlightBids,
    keys: IdempotencyKeys<BidRequest, Attempt>,
    acked: Mutex<BoundedMap<BidId, Bid>>,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    metrics: Arc<WebMetrics>,
}

impl Bidding {
    pub fn new(store: Arc<Store>, board: Arc<Board>, publisher: BidPublisher, limits: &BiddingLimits, metrics: Arc<WebMetrics>) -> Self {
        // A semaphore holds at most this many permits.
        let max_in_flight = limits.max_bids_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            store,
            board,
            publisher,
            turns: Mutex::new(HashMap::new()),
            turn_wait: limits.turn_wait,
            in_flight_bids: Arc::default(),
            keys: IdempotencyKeys::new(limits.idempotency_keys_max, limits.idempotency_key_ttl),
            acked: Mutex::new(BoundedMap::new(limits.acked_bids_max, None)),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            metrics,
        }
    }

    /// Bids being handled now (checked, encoded, or waiting for Kafka's ack).
    pub fn in_flight(&self) -> usize {
        self.max_in_flight.saturating_sub(self.in_flight.available_permits())
    }

    pub fn publisher(&self) -> &BidPublisher {
        &self.publisher
    }

    /// Places the bid; returns once the broker acked it (or, for a key seen before, the bid
    /// that was acked for it). Every refusal decided here is counted in the metrics.
    pub async fn place(self: &Arc<Self>, request: BidRequest, key: Option<IdempotencyKey>) -> Result<Bid, ApiError> {
        let placed = self.place_uncounted(request, key).await;
        if let Some(reason) = placed.as_ref().err().and_then(refusal_reason) {
            self.metrics.refused(reason);
        }
        placed
    }

    async fn place_uncounted(self: &Arc<Self>, request: BidRequest, key: Option<IdempotencyKey>) -> Result<Bid, ApiError> {
        let (reservation, earlier) = match key.map(|key| self.keys.claim(key, &request)) {
            None => (None, None),
            Some(Claim::Fresh(reservation)) => (Some(reservation), None),
            Some(Claim::Retry(reservation, attempt)) => {
                log::info!("idempotency key retried: producing bid {} again, its outcome was unknown", attempt.bid.bid_id);
                (Some(reservation), Some(attempt))
            }
            Some(Claim::Replay(attempt)) => return Ok(attempt.bid),
            Some(Claim::InFlight) => return Err(ApiError::KeyInFlight),
            Some(Claim::Mismatch) => return Err(ApiError::KeyReused),
        };
        // Refused here or below, before producing, the reservation gives the key back as it was.
        let permit = Arc::clone(&self.in_flight).try_acquire_owned().map_err(|_| ApiError::Busy(self.max_in_flight))?;
        let (attempt, in_flight) = match earlier {
            // Not checked or stamped again: it is the bid the earlier request may have placed.
            Some(attempt) => (attempt, None),
            None => {
                let (attempt, in_flight) = self.new_attempt(request).await?;
                (attempt, Some(in_flight))
            }
        };
        let bid_id = attempt.bid.bid_id;
        // Waited for in a task of its own: a bidder who hangs up does not cancel it, so the key,
        // the acked bids and the board still learn how it ended, and the permit and the bid's
        // place among those in flight are held until then.
        let this = Arc::clone(self);
        match tokio::spawn(async move { this.produce(attempt, reservation, permit, in_flight).await }).await {
            Ok(result) => result,
            Err(e) => {
                log::error!("the task producing bid {bid_id} ended without a result: {e}");
                Err(ApiError::OutcomeUnknown { bid_id, cause: "the wait for Kafka's ack was interrupted".into() })
            }
        }
    }

    /// The auction's turn, waited for at most `turn_wait`.
    async fn turn(&self, auction: AuctionId) -> Result<Turn, ApiError> {
        let gate = {
            let mut turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
            if turns.len() >= 1024 {
                turns.retain(|_, gate| Arc::strong_count(gate) > 1);
            }
            Arc::clone(turns.entry(auction).or_default())
        };
        tokio::time::timeout(self.turn_wait, gate.lock_owned())
            .await
            .map_err(|_| ApiError::Unavailable(format!("auction {auction} is taking too many bids at once")))
    }

    async fn new_attempt(&self, request: BidRequest) -> Result<(Attempt, InFlight), ApiError> {
        let id = request.auction_id;
        let not_found = || ApiError::NotFound(id.to_string());
        // Exists first, so no turn is made for an id that names no auction.
        self.board.find_auction(id).await.map_err(ApiError::database)?.ok_or_else(not_found)?;
        let _turn = self.turn(id).await?;
        // Read again with the turn held: every bid before it in this process is on the board
        // (acked) or in flight.
        let mut auction = self.board.auction(id).ok_or_else(not_found)?;
        let in_flight: Vec<Bid> = self.in_flight_bids.lock().unwrap_or_else(PoisonError::into_inner).get(&id).cloned().unwrap_or_default();
        auction.standing.apply_in_order(&auction.rules, in_flight.iter());
        // Stamped before the check, so the bid is judged at the instant it carries.
        let bid = Bid::accept(id, request.name, request.price);
        auction.check(bid.price, bid.bid_ts)?;
        let payload = self.publisher.encode(&bid).await.map_err(|e| ApiError::from_publish(e, bid.bid_id))?;
        let in_flight = InFlight::register(&self.in_flight_bids, &bid);
        Ok((Attempt { bid, payload: payload.into() }, in_flight))
    }

    async fn produce(
        &self,
        attempt: Attempt,
        mut reservation: Option<Reservation<BidRequest, Attempt>>,
        _permit: OwnedSemaphorePermit,
        // Dropped when this returns: after an ack has put the bid on the board.
        _in_flight: Option<InFlight>,
    ) -> Result<Bid, ApiError> {
        if let Some(r) = reservation.as_mut() {
            r.producing(attempt.clone());
        }
        let started = Instant::now();
        let sent = self.publisher.send(attempt.bid.bid_id, &attempt.payload).await;
        self.metrics.produced(started.elapsed(), sent.is_ok());
        match sent {
            Ok(()) => {
                self.metrics.accepted();
                // On the board before it leaves the in-flight list: the next bid is always
                // checked against it.
                self.board.record_acked(&attempt.bid);
                self.acked.lock().unwrap_or_else(PoisonError::into_inner).insert(attempt.bid.bid_id, attempt.bid.clone());
                let bid = attempt.bid.clone();
                if let Some(r) = reservation {
                    r.acked(attempt);
                }
                Ok(bid)
            }
            // Dropped, the reservation leaves the key "unknown" with this attempt.
            Err(e) if e.outcome_unknown() => Err(ApiError::from_publish(e, attempt.bid.bid_id)),
            Err(e) => {
                if let Some(r) = reservation {
                    r.not_produced();
                }
                Err(ApiError::from_publish(e, attempt.bid.bid_id))
            }
        }
    }

    /// A bid this process acked, if it still remembers it.
    pub fn acked(&self, bid_id: BidId) -> Option<Bid> {
        self.acked.lock().unwrap_or_else(PoisonError::into_inner).get(&bid_id).cloned()
    }

    /// Where the bid is: in MySQL, or acked here and on its way there.
    pub async fn find(&self, bid_id: BidId) -> Result<Option<BidStatus>, ApiError> {
        if let Some(stored) = self.store.bid(bid_id).await.map_err(ApiError::database)? {
            return Ok(Some(BidStatus::Recorded(stored)));
        }
        Ok(self.acked(bid_id).map(BidStatus::Pending))
    }
}
