//! The auction board: every auction with its rules and its standing, the one source every page
//! and the JSON API read, and the one the rules at acceptance decide against.
//!
//! Interface (for handlers, through `state.board`):
//! - [`Board::auction`]`(id) -> Option<AuctionView>`: from memory only, never waits on MySQL.
//! - [`Board::find_auction`]`(id).await -> Result<Option<AuctionView>, StoreError>`: the same,
//!   but an id the board does not hold is looked up in MySQL once (an auction created since the
//!   last refresh); use it where a page or a bid names an auction.
//! - [`Board::auctions`]`() -> Vec<AuctionView>`: every auction known, open first, then by end.
//! - [`Board::recent_bids`]`(id, limit).await -> Result<Vec<Bid>, StoreError>`: newest first, at
//!   most [`RECENT_BIDS_MAX`], bids at or after the end left out.
//! - [`AuctionView`]: `is_open(now)`, `ends_at()` (the end in force: after extensions, or
//!   `closed_at`), `minimum_next_bid()` (2 decimals), `outcome(now)` (`None` while open).
//!
//! What a view holds: the stored standing (the `auction_standing` row the db-writer keeps in the
//! same transaction as the bid rows) plus every bid this process acked that the db-writer had not
//! recorded at the last refresh, applied with [`Standing::apply`] the moment Kafka acked it. So a
//! bidder sees their own bid at once, and this process decides the next bid against it.
//!
//! Freshness: a background task ([`Board::spawn_refresh`]) re-reads the whole board every
//! `STANDING_REFRESH_MS` (1000) with one query over `auction` LEFT JOIN `auction_standing` (the
//! auctions still open or ended within the last 7 days, read through indexes on their ends, so
//! the cost does not grow with every auction ever made; an older one is looked up by id when a
//! page or a bid names it), and in
//! the same consistent snapshot asks which pending bids are recorded; those leave the overlay
//! exactly when they enter the stored standing, so none is counted twice. The new snapshot is
//! swapped in; readers copy from memory and never wait on MySQL, so a page costs the same at ten
//! million bids as at ten. Closing (`ends_at` passing, or `closed_at` set in SQL) is seen within
//! one refresh, and the end is checked against the clock on every read and every bid.
//!
//! If MySQL cannot be reached the last snapshot keeps being served and bids keep being decided
//! against it; the log says how stale it is. Memory: every auction with its texts, plus at most
//! `ACKED_BIDS_MAX` pending bids (beyond it the oldest leaves the overlay: the view may then
//! count fewer bids until the db-writer catches up, never more).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use auction_common::auction::{AuctionRules, Outcome, Refusal, Standing};
use auction_common::{AuctionId, Bid, BidId, Price};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio::task::JoinHandle;

use crate::store::{AuctionRecord, Store, StoreError};

/// Most bids [`Board::recent_bids`] returns; also how many are read from MySQL per auction.
pub const RECENT_BIDS_MAX: usize = 20;
/// How long an auction's latest bids read from MySQL are reused.
const RECENT_BIDS_TTL: Duration = Duration::from_secs(1);
/// Most ids remembered as "no such auction" between two refreshes (each one cost a lookup).
const ABSENT_MAX: usize = 10_000;
/// Most direct lookups running at once.
const LOOKUPS_AT_ONCE: usize = 2;
/// While MySQL stays unreachable, how often the log repeats how stale the board is.
const STALE_LOG_EVERY: Duration = Duration::from_secs(10);

/// One auction as the board shows it now.
#[derive(Debug, Clone)]
pub struct AuctionView {
    pub id: AuctionId,
    pub title: String,
    pub description: String,
    pub rules: AuctionRules,
    /// The stored standing plus this process's acked, not yet recorded bids.
    pub standing: Standing,
}

/// Money as the site shows and compares it: two decimals.
pub fn cents(mut amount: Decimal) -> Decimal {
    amount.rescale(Price::SCALE);
    amount
}

impl AuctionView {
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.standing.is_open(&self.rules, now)
    }

    /// The end in force: `ends_at` moved by anti-sniping, or `closed_at` if it came first.
    pub fn ends_at(&self) -> DateTime<Utc> {
        self.standing.end(&self.rules)
    }

    /// The smallest acceptable next bid (whether or not the auction is still open).
    pub fn minimum_next_bid(&self) -> Decimal {
        cents(self.standing.minimum_next_bid(&self.rules))
    }

    /// How it ended, once it has.
    pub fn outcome(&self, now: DateTime<Utc>) -> Option<Outcome> {
        self.standing.outcome(&self.rules, now)
    }

    /// Whether a bid of `price` placed at `bid_ts` is accepted by the auction's rules.
    pub fn check(&self, price: Price, bid_ts: DateTime<Utc>) -> Result<(), Refusal> {
        self.standing.check(&self.rules, price, bid_ts).map_err(|refusal| match refusal {
            Refusal::TooLow { minimum, reason } => Refusal::TooLow { minimum: cents(minimum), reason },
            closed => closed,
        })
    }
}

/// The board's settings (see `WebConfig` for what each means).
#[derive(Debug, Clone, Copy)]
pub struct BoardSettings {
    pub refresh: Duration,
    pub pending_max: usize,
}

pub struct Board {
    store: Arc<Store>,
    settings: BoardSettings,
    live: RwLock<Live>,
    /// Direct lookups of auctions the board does not hold, one per id at a time: each looks at
    /// the board again once its turn comes, so a burst of requests for one new (or unknown) id
    /// costs one query. An entry lives while its lookup runs.
    lookups: Mutex<HashMap<AuctionId, Arc<tokio::sync::Mutex<()>>>>,
    /// At most this many direct lookups at once, so requests for made-up ids cannot take every
    /// MySQL connection.
    lookup_slots: tokio::sync::Semaphore,
    /// Per auction, its latest stored bids and when they were read; the slot's lock makes
    /// concurrent readers of an expired entry wait for one query instead of each sending it.
    /// Slots exist only for auctions on the board, so the map is as bounded as the board.
    recent: Mutex<HashMap<AuctionId, Arc<tokio::sync::Mutex<Option<RecentBids>>>>>,
    /// One refresh at a time: an older snapshot swapped in after a newer one would take back
    /// what the newer one showed. Holds when the last attempt ended and how.
    refreshing: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

struct RecentBids {
    read_at: Instant,
    bids: Arc<Vec<Bid>>,
}

#[derive(Default)]
struct Live {
    auctions: HashMap<AuctionId, Entry>,
    /// Bids acked here and not seen recorded yet, oldest first; each is also in its entry's
    /// `pending`.
    pending: VecDeque<(AuctionId, BidId)>,
    /// When the snapshot in use was read (None until the first refresh succeeds).
    loaded_at: Option<Instant>,
    /// Ids looked up directly and not found since the last refresh.
    absent: HashSet<AuctionId>,
}

struct Entry {
    title: String,
    description: String,
    rules: AuctionRules,
    /// As MySQL had it.
    stored: Standing,
    /// `stored` with `pending` applied.
    standing: Standing,
    pending: Vec<Bid>,
    /// When the row was read: an entry read directly after a refresh's snapshot began is kept
    /// when that snapshot is swapped in, since the snapshot could not see the auction.
    read_at: Instant,
}

impl Entry {
    fn new(record: AuctionRecord, read_at: Instant) -> Self {
        Self {
            title: record.title,
            description: record.description,
            rules: record.rules,
            standing: record.standing.clone(),
            stored: record.standing,
            pending: Vec::new(),
            read_at,
        }
    }

    fn view(&self) -> AuctionView {
        AuctionView {
            id: self.rules.id,
            title: self.title.clone(),
            description: self.description.clone(),
            rules: self.rules.clone(),
            standing: self.standing.clone(),
        }
    }
}

/// Open auctions first (the soonest to end first), then closed ones (the latest to end first).
fn board_order(now: DateTime<Utc>) -> impl Fn(&AuctionView, &AuctionView) -> std::cmp::Ordering {
    move |a, b| {
        let (open_a, open_b) = (a.is_open(now), b.is_open(now));
        open_b.cmp(&open_a).then_with(|| if open_a { a.ends_at().cmp(&b.ends_at()) } else { b.ends_at().cmp(&a.ends_at()) }).then(a.id.cmp(&b.id))
    }
}

impl Board {
    /// An empty board; [`Board::spawn_refresh`] fills it. Until the first refresh, every
    /// auction asked for is looked up directly.
    pub fn new(store: Arc<Store>, settings: BoardSettings) -> Self {
        Self {
            store,
            settings,
            live: RwLock::new(Live::default()),
            lookups: Mutex::new(HashMap::new()),
            lookup_slots: tokio::sync::Semaphore::new(LOOKUPS_AT_ONCE),
            recent: Mutex::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(None),
        }
    }

    // Every critical section leaves `Live` consistent, so a panic elsewhere cannot have left
    // it half-updated.
    fn read(&self) -> RwLockReadGuard<'_, Live> {
        self.live.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Live> {
        self.live.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The auction as the board holds it now; `None` also for an auction created since the
    /// last refresh (see [`Board::find_auction`]).
    pub fn auction(&self, id: AuctionId) -> Option<AuctionView> {
        self.read().auctions.get(&id).map(Entry::view)
    }

    /// Every auction on the board: open first (soonest end first), then closed (latest first).
    pub fn auctions(&self) -> Vec<AuctionView> {
        let mut all: Vec<AuctionView> = self.read().auctions.values().map(Entry::view).collect();
        all.sort_by(board_order(Utc::now()));
        all
    }

    /// How old the snapshot in use is; `None` before the first refresh succeeded.
    pub fn age(&self) -> Option<Duration> {
        self.read().loaded_at.map(|t| t.elapsed())
    }

    /// The auction, looked up in MySQL if the board does not hold it (once per refresh for an
    /// id that does not exist).
    pub async fn find_auction(&self, id: AuctionId) -> Result<Option<AuctionView>, StoreError> {
        if let Some(known) = self.known(id) {
            return Ok(known);
        }
        let turn = {
            let mut lookups = self.lookups.lock().unwrap_or_else(PoisonError::into_inner);
            // Entries of lookups whose request was dropped midway are left behind: swept here.
            if lookups.len() >= 1024 {
                lookups.retain(|_, turn| Arc::strong_count(turn) > 1);
            }
            Arc::clone(lookups.entry(id).or_default())
        };
        let _this_id = turn.lock().await;
        if let Some(known) = self.known(id) {
            return Ok(known);
        }
        let found = {
            // Closed only when the board is dropped, and nothing waits on it then.
            let _slot = self.lookup_slots.acquire().await.map_err(|e| StoreError::Interrupted(e.to_string()))?;
            let read_at = Instant::now();
            self.store.auction(id).await.map(|found| (found, read_at))
        };
        let view = found.map(|(found, read_at)| {
            let mut live = self.write();
            match found {
                // A refresh may have brought it in meanwhile, with bids applied: that entry stays.
                Some(record) => Some(live.auctions.entry(id).or_insert_with(|| Entry::new(record, read_at)).view()),
                None => {
                    if live.absent.len() >= ABSENT_MAX {
                        live.absent.clear();
                    }
                    live.absent.insert(id);
                    None
                }
            }
        });
        // Only now that the board has the answer: a request arriving meanwhile waited on this turn.
        self.lookups.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        view
    }

    /// What the board says about the id: `Some(Some)` on it, `Some(None)` looked up since the
    /// last refresh and not found, `None` not known either way.
    fn known(&self, id: AuctionId) -> Option<Option<AuctionView>> {
        let live = self.read();
        if let Some(entry) = live.auctions.get(&id) {
            return Some(Some(entry.view()));
        }
        live.absent.contains(&id).then_some(None)
    }

    /// Counts a bid Kafka acked for this process at once: it shows in every view and the next
    /// bid is decided against it, until the db-writer's standing includes it.
    pub fn record_acked(&self, bid: &Bid) {
        let mut live = self.write();
        let Some(entry) = live.auctions.get_mut(&bid.auction_id) else {
            // Not on the board (removed from MySQL meanwhile): nothing shows it.
            log::warn!("bid {} acked for auction {}, which is not on the board", bid.bid_id, bid.auction_id);
            return;
        };
        if entry.pending.iter().any(|b| b.bid_id == bid.bid_id) {
            return;
        }
        entry.standing.apply(&entry.rules, bid);
        entry.pending.push(bid.clone());
        live.pending.push_back((bid.auction_id, bid.bid_id));
        while live.pending.len() > self.settings.pending_max.max(1) {
            let Some((auction, oldest)) = live.pending.pop_front() else { break };
            // It stays in the entry's standing until the next refresh rebuilds it without it.
            if let Some(entry) = live.auctions.get_mut(&auction) {
                entry.pending.retain(|b| b.bid_id != oldest);
            }
            log::warn!("more than {} acked bids not yet recorded by the db-writer: bid {oldest} leaves the board's overlay", self.settings.pending_max);
        }
    }

    /// The auction's latest bids, newest first: the last [`RECENT_BIDS_MAX`] stored (read at most
    /// once a second per auction) merged with this process's pending ones; bids at or after the
    /// end are left out, since they do not count. Empty for an auction not on the board. If
    /// MySQL cannot be reached, the last bids read are reused (an error only if there are none).
    pub async fn recent_bids(&self, id: AuctionId, limit: usize) -> Result<Vec<Bid>, StoreError> {
        if !self.read().auctions.contains_key(&id) {
            return Ok(Vec::new());
        }
        let slot = {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.len() > self.read().auctions.len() + 64 {
                let live = self.read();
                recent.retain(|id, _| live.auctions.contains_key(id));
            }
            Arc::clone(recent.entry(id).or_default())
        };
        let stored = {
            let mut cached = slot.lock().await;
            match cached.as_ref() {
                Some(c) if c.read_at.elapsed() < RECENT_BIDS_TTL => Arc::clone(&c.bids),
                _ => match self.store.latest_bids(id, RECENT_BIDS_MAX).await {
                    Ok(bids) => {
                        let bids = Arc::new(bids);
                        *cached = Some(RecentBids { read_at: Instant::now(), bids: Arc::clone(&bids) });
                        bids
                    }
                    Err(e) => match cached.as_ref() {
                        Some(c) => {
                            log::warn!("latest bids of auction {id}: MySQL unavailable ({e}); showing those read {:?} ago", c.read_at.elapsed());
                            Arc::clone(&c.bids)
                        }
                        None => return Err(e),
                    },
                },
            }
        };
        let live = self.read();
        let Some(entry) = live.auctions.get(&id) else { return Ok(Vec::new()) };
        let end = entry.standing.end(&entry.rules);
        let stored_ids: HashSet<BidId> = stored.iter().map(|b| b.bid_id).collect();
        // Pending bids are in ack order, close to bid_ts order: the newest are at the back.
        let pending = entry.pending.iter().rev().take(RECENT_BIDS_MAX).filter(|b| !stored_ids.contains(&b.bid_id));
        let mut bids: Vec<Bid> = stored.iter().chain(pending).filter(|b| b.bid_ts < end).cloned().collect();
        bids.sort_by(|a, b| b.bid_ts.cmp(&a.bid_ts).then_with(|| b.bid_id.to_string().cmp(&a.bid_id.to_string())));
        bids.truncate(limit.min(RECENT_BIDS_MAX));
        Ok(bids)
    }

    /// Reads a new snapshot and swaps it in. Refreshes run one at a time; an attempt that was
    /// running when this call was made answers for it too (its snapshot, at most one query
    /// older than the call, or its error), so callers piling up while MySQL is out of reach
    /// wait for one attempt, not one each.
    pub async fn refresh(self: &Arc<Self>) -> Result<(), StoreError> {
        let called = Instant::now();
        let mut last = self.refreshing.lock().await;
        if let Some((_, outcome)) = last.as_ref().filter(|(ended, _)| *ended >= called) {
            return outcome.clone().map_err(StoreError::Shared);
        }
        let outcome = self.read_and_swap(Instant::now()).await;
        *last = Some((Instant::now(), outcome.as_ref().map(|_| ()).map_err(ToString::to_string)));
        outcome
    }

    async fn read_and_swap(self: &Arc<Self>, started: Instant) -> Result<(), StoreError> {
        let board = Arc::clone(self);
        let snapshot = self.store.board_snapshot(move || board.read().pending.iter().map(|(_, id)| *id).collect()).await?;
        let mut fresh: HashMap<AuctionId, Entry> =
            snapshot.auctions.into_iter().map(|record| (record.rules.id, Entry::new(record, started))).collect();

        let mut live = self.write();
        let old = std::mem::take(&mut live.auctions);
        let mut pending_bids: HashMap<BidId, Bid> = HashMap::new();
        for (id, mut entry) in old {
            pending_bids.extend(entry.pending.drain(..).map(|b| (b.bid_id, b)));
            if !fresh.contains_key(&id) && entry.read_at > started {
                entry.standing = entry.stored.clone();
                fresh.insert(id, entry);
            }
        }
        // A bid acked after the snapshot's pending ids were taken was not asked about: it stays
        // pending and is asked about at the next refresh.
        let mut still_pending = VecDeque::with_capacity(live.pending.len());
        for (auction, bid_id) in live.pending.drain(..) {
            if snapshot.recorded.contains(&bid_id) {
                continue;
            }
            let (Some(entry), Some(bid)) = (fresh.get_mut(&auction), pending_bids.remove(&bid_id)) else { continue };
            entry.pending.push(bid);
            still_pending.push_back((auction, bid_id));
        }
        for entry in fresh.values_mut().filter(|e| !e.pending.is_empty()) {
            let mut standing = entry.stored.clone();
            standing.apply_in_order(&entry.rules, entry.pending.iter());
            entry.standing = standing;
        }
        live.auctions = fresh;
        live.pending = still_pending;
        live.loaded_at = Some(started);
        live.absent.clear();
        Ok(())
    }

    /// Refreshes every `settings.refresh` until the board is dropped. A failed refresh keeps
    /// the last snapshot in use and says how stale it is.
    pub fn spawn_refresh(self: &Arc<Self>) -> JoinHandle<()> {
        let board: Weak<Self> = Arc::downgrade(self);
        let every = self.settings.refresh;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing_since: Option<Instant> = None;
            let mut last_warned: Option<Instant> = None;
            loop {
                tick.tick().await;
                let Some(board) = board.upgrade() else { return };
                match board.refresh().await {
                    Ok(()) => {
                        if let Some(since) = failing_since.take() {
                            log::info!("auction board refreshed again after {:?} of failures", since.elapsed());
                        }
                        last_warned = None;
                    }
                    Err(e) => {
                        failing_since.get_or_insert_with(Instant::now);
                        if last_warned.is_none_or(|t| t.elapsed() >= STALE_LOG_EVERY) {
                            let age = board.age().map_or("no snapshot loaded yet".to_owned(), |a| format!("serving a snapshot {:.1} s old", a.as_secs_f64()));
                            log::warn!("auction board not refreshed: {e}; {age}");
                            last_warned = Some(Instant::now());
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auction_common::BidderName;

    fn view(ends_in_secs: i64, extend_seconds: u32) -> AuctionView {
        let rules = AuctionRules {
            id: AuctionId::new(3).unwrap(),
            starting_price: Price::parse("10").unwrap(),
            min_increment: Decimal::new(5, 1),
            reserve_price: None,
            ends_at: Utc::now() + chrono::Duration::seconds(ends_in_secs),
            extend_seconds,
            closed_at: None,
        };
        let standing = Standing::new(&rules);
        AuctionView { id: rules.id, title: "t".into(), description: String::new(), rules, standing }
    }

    #[test]
    fn minimums_are_shown_with_two_decimals() {
        let mut v = view(60, 0);
        assert_eq!(v.minimum_next_bid().to_string(), "10.00");
        let bid = Bid::accept(v.id, BidderName::parse("a").unwrap(), Price::parse("10").unwrap());
        v.standing.apply(&v.rules, &bid);
        assert_eq!(v.minimum_next_bid().to_string(), "10.50");
        match v.check(Price::parse("10.4").unwrap(), Utc::now()) {
            Err(Refusal::TooLow { minimum, .. }) => assert_eq!(minimum.to_string(), "10.50"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_board_lists_open_auctions_first_soonest_end_first() {
        let mut a = view(600, 0);
        a.id = AuctionId::new(1).unwrap();
        let mut b = view(60, 0);
        b.id = AuctionId::new(2).unwrap();
        let mut closed = view(-60, 0);
        closed.id = AuctionId::new(3).unwrap();
        let mut all = [closed, a, b];
        all.sort_by(board_order(Utc::now()));
        assert_eq!(all.map(|v| v.id.get()), [2, 1, 3]);
    }
}
