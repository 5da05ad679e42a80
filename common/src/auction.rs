//! The rules of an auction, in one place: which bid leads, which bids count, when the auction
//! ends (anti-sniping included), the smallest acceptable next bid, and who won.
//!
//! The site decides against a [`Standing`] (the stored one plus the bids it acked itself); the
//! db-writer keeps the stored one with the same code, so both agree. Everything here is a pure
//! function of the auction's rules and its bids, so a standing can be recomputed from the log.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::domain::{format_ts, AuctionId, Bid, BidId, BidderName, Price};

/// The order in which bids lead, as SQL: the greatest price, the earliest `bid_ts` on a tie,
/// then the smallest `bid_id` (so the order is total and recomputable from the bids alone).
/// [`ranks_above`] is the same rule in Rust; a test holds the two to the same answer.
pub const LEADING_ORDER_SQL: &str = "price DESC, bid_ts ASC, bid_id ASC";

/// Whether bid `a` leads bid `b` (see [`LEADING_ORDER_SQL`]).
pub fn ranks_above(a: (Price, DateTime<Utc>, BidId), b: (Price, DateTime<Utc>, BidId)) -> bool {
    (a.0, std::cmp::Reverse(a.1), std::cmp::Reverse(a.2.to_string())) > (b.0, std::cmp::Reverse(b.1), std::cmp::Reverse(b.2.to_string()))
}

/// What an auction is, as its creator set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuctionRules {
    pub id: AuctionId,
    pub starting_price: Price,
    #[serde(with = "rust_decimal::serde::str")]
    pub min_increment: Decimal,
    pub reserve_price: Option<Price>,
    #[serde(serialize_with = "crate::domain::serialize_ts")]
    pub ends_at: DateTime<Utc>,
    pub extend_seconds: u32,
    /// Closed early by an operator, if it was.
    #[serde(skip)]
    pub closed_at: Option<DateTime<Utc>>,
}

/// The bid that leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leader {
    pub bid_id: BidId,
    pub name: BidderName,
    pub price: Price,
    #[serde(serialize_with = "crate::domain::serialize_ts")]
    pub bid_ts: DateTime<Utc>,
}

impl Leader {
    fn key(&self) -> (Price, DateTime<Utc>, BidId) {
        (self.price, self.bid_ts, self.bid_id)
    }
}

impl From<&Bid> for Leader {
    fn from(b: &Bid) -> Self {
        Self { bid_id: b.bid_id, name: b.name.clone(), price: b.price, bid_ts: b.bid_ts }
    }
}

/// Where an auction stands: what its counted bids add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub bid_count: u64,
    pub highest: Option<Leader>,
    pub last_bid_ts: Option<DateTime<Utc>>,
    /// `ends_at`, moved later by bids placed in the anti-sniping window.
    pub current_ends_at: DateTime<Utc>,
}

/// Why a bid is refused by the auction's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("auction {auction} closed at {}; it takes no more bids", format_ts(.closed_at))]
    Closed { auction: AuctionId, closed_at: DateTime<Utc> },
    #[error("price: must be at least {minimum} ({reason})")]
    TooLow { minimum: Decimal, reason: &'static str },
}

/// How a closed auction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Winner(Leader),
    NoBids,
    ReserveNotMet { highest: Leader },
}

impl Standing {
    /// An auction without bids.
    pub fn new(rules: &AuctionRules) -> Self {
        Self { bid_count: 0, highest: None, last_bid_ts: None, current_ends_at: rules.ends_at }
    }

    /// When the auction ends (or ended): its end after extensions, or when it was closed early.
    pub fn end(&self, rules: &AuctionRules) -> DateTime<Utc> {
        match rules.closed_at {
            Some(closed) => closed.min(self.current_ends_at),
            None => self.current_ends_at,
        }
    }

    pub fn is_open(&self, rules: &AuctionRules, now: DateTime<Utc>) -> bool {
        now < self.end(rules)
    }

    /// Counts a bid placed before the end, and moves the end for a bid in the anti-sniping
    /// window (to its `bid_ts + extend_seconds`). The end only ever moves to the greatest
    /// `bid_ts + extend_seconds`, so the order bids are applied in does not change it.
    /// Returns whether the bid counted.
    pub fn apply(&mut self, rules: &AuctionRules, bid: &Bid) -> bool {
        if bid.bid_ts >= self.end(rules) {
            return false;
        }
        self.bid_count += 1;
        self.last_bid_ts = Some(self.last_bid_ts.map_or(bid.bid_ts, |t| t.max(bid.bid_ts)));
        let candidate = Leader::from(bid);
        if self.highest.as_ref().is_none_or(|h| ranks_above(candidate.key(), h.key())) {
            self.highest = Some(candidate);
        }
        if rules.extend_seconds > 0 {
            let extended = bid.bid_ts + Duration::seconds(i64::from(rules.extend_seconds));
            self.current_ends_at = self.current_ends_at.max(extended);
        }
        true
    }

    /// Applies bids in `bid_ts` order; returns how many counted.
    pub fn apply_in_order<'a>(&mut self, rules: &AuctionRules, bids: impl IntoIterator<Item = &'a Bid>) -> usize {
        let mut sorted: Vec<&Bid> = bids.into_iter().collect();
        sorted.sort_by(|a, b| a.bid_ts.cmp(&b.bid_ts).then_with(|| a.bid_id.to_string().cmp(&b.bid_id.to_string())));
        sorted.into_iter().filter(|b| self.apply(rules, b)).count()
    }

    /// The span of time a bid could not count in before but can now, because the end moved
    /// later than `previous_end`: bids placed in it that were seen earlier must be applied again
    /// (a bid placed in an extension may reach a consumer before the bid that opened it).
    pub fn reopened_since(&self, rules: &AuctionRules, previous_end: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let end = self.end(rules);
        (end > previous_end).then_some((previous_end, end))
    }

    /// The smallest price the next bid may have.
    pub fn minimum_next_bid(&self, rules: &AuctionRules) -> Decimal {
        match &self.highest {
            Some(h) => h.price.get() + rules.min_increment,
            None => rules.starting_price.get(),
        }
    }

    /// Whether a bid of `price` placed at `now` would be accepted.
    pub fn check(&self, rules: &AuctionRules, price: Price, now: DateTime<Utc>) -> Result<(), Refusal> {
        if !self.is_open(rules, now) {
            return Err(Refusal::Closed { auction: rules.id, closed_at: self.end(rules) });
        }
        let minimum = self.minimum_next_bid(rules);
        if price.get() < minimum {
            let reason = if self.highest.is_some() { "the highest bid plus the minimum increment" } else { "the starting price" };
            return Err(Refusal::TooLow { minimum, reason });
        }
        Ok(())
    }

    /// How the auction ended, once it has.
    pub fn outcome(&self, rules: &AuctionRules, now: DateTime<Utc>) -> Option<Outcome> {
        if self.is_open(rules, now) {
            return None;
        }
        Some(match &self.highest {
            None => Outcome::NoBids,
            Some(h) if rules.reserve_price.is_some_and(|r| h.price < r) => Outcome::ReserveNotMet { highest: h.clone() },
            Some(h) => Outcome::Winner(h.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(extend_seconds: u32) -> AuctionRules {
        AuctionRules {
            id: AuctionId::new(7).unwrap(),
            starting_price: Price::parse("10").unwrap(),
            min_increment: Decimal::new(50, 2),
            reserve_price: Some(Price::parse("20").unwrap()),
            ends_at: DateTime::from_timestamp(1_000_000, 0).unwrap(),
            extend_seconds,
            closed_at: None,
        }
    }

    fn bid_at(name: &str, price: &str, secs: i64) -> Bid {
        let mut b = Bid::accept(AuctionId::new(7).unwrap(), BidderName::parse(name).unwrap(), Price::parse(price).unwrap());
        b.bid_ts = DateTime::from_timestamp(secs, 0).unwrap();
        b
    }

    #[test]
    fn the_first_bid_needs_the_starting_price_and_later_ones_the_increment() {
        let r = rules(0);
        let mut s = Standing::new(&r);
        let now = DateTime::from_timestamp(999_000, 0).unwrap();
        assert_eq!(s.check(&r, Price::parse("9.99").unwrap(), now), Err(Refusal::TooLow { minimum: Decimal::new(1000, 2), reason: "the starting price" }));
        assert!(s.check(&r, Price::parse("10").unwrap(), now).is_ok());
        s.apply(&r, &bid_at("a", "10", 999_000));
        let err = s.check(&r, Price::parse("10.49").unwrap(), now).unwrap_err();
        assert_eq!(err.to_string(), "price: must be at least 10.50 (the highest bid plus the minimum increment)");
        assert!(s.check(&r, Price::parse("10.50").unwrap(), now).is_ok());
    }

    #[test]
    fn nothing_placed_at_or_after_the_end_counts() {
        let r = rules(0);
        let mut s = Standing::new(&r);
        assert!(s.apply(&r, &bid_at("early", "10", 999_999)));
        assert!(!s.apply(&r, &bid_at("late", "99", 1_000_000)));
        assert_eq!((s.bid_count, s.highest.as_ref().map(|h| h.name.as_str())), (1, Some("early")));
        let after = DateTime::from_timestamp(1_000_000, 0).unwrap();
        assert!(matches!(s.check(&r, Price::parse("99").unwrap(), after), Err(Refusal::Closed { .. })));
    }

    #[test]
    fn a_bid_in_the_last_window_extends_the_end_and_readmitting_makes_the_order_irrelevant() {
        let r = rules(120);
        let bids = [bid_at("a", "10", 999_000), bid_at("b", "11", 999_950), bid_at("c", "12", 1_000_040)];
        let mut forward = Standing::new(&r);
        assert_eq!(forward.apply_in_order(&r, bids.iter()), 3);
        assert_eq!(forward.current_ends_at, DateTime::from_timestamp(1_000_160, 0).unwrap());
        assert_eq!(forward.highest.as_ref().unwrap().name.as_str(), "c");

        // c (placed in b's extension) is seen before b: it does not count yet...
        let mut late = Standing::new(&r);
        assert_eq!(late.apply_in_order(&r, [&bids[2]]), 0);
        let before = late.end(&r);
        assert_eq!(late.apply_in_order(&r, [&bids[0], &bids[1]]), 2);
        // ...until b moved the end past it: the bids placed in the window it opened are applied again.
        let window = late.reopened_since(&r, before).expect("b opened a window");
        assert!(window.0 <= bids[2].bid_ts && bids[2].bid_ts < window.1);
        assert_eq!(late.apply_in_order(&r, [&bids[2]]), 1);
        assert_eq!(late, forward);
    }

    #[test]
    fn the_winner_is_the_greatest_price_earliest_on_a_tie_and_must_meet_the_reserve() {
        let r = rules(0);
        let closed = DateTime::from_timestamp(1_000_001, 0).unwrap();
        let mut s = Standing::new(&r);
        assert_eq!(s.outcome(&r, closed), Some(Outcome::NoBids));
        s.apply(&r, &bid_at("low", "15", 999_000));
        assert!(matches!(s.outcome(&r, closed), Some(Outcome::ReserveNotMet { .. })));
        s.apply(&r, &bid_at("second", "25", 999_500));
        s.apply(&r, &bid_at("first", "25", 999_400));
        match s.outcome(&r, closed) {
            Some(Outcome::Winner(w)) => assert_eq!(w.name.as_str(), "first"),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.outcome(&r, DateTime::from_timestamp(999_999, 0).unwrap()), None, "still open");
    }

    #[test]
    fn an_auction_closed_early_ends_then() {
        let mut r = rules(120);
        r.closed_at = Some(DateTime::from_timestamp(999_000, 0).unwrap());
        let mut s = Standing::new(&r);
        assert!(!s.apply(&r, &bid_at("after close", "50", 999_001)));
        assert_eq!(s.end(&r), DateTime::from_timestamp(999_000, 0).unwrap());
    }
}
