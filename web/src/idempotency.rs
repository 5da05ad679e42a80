//! Idempotency keys, with Stripe's semantics, per web process.
//!
//! A client that may retry sends a key with its request. The first request with a key claims
//! it; what it produced and how that ended is remembered under the key with the request it
//! was for, so a retry
//! - of a request that was acked gets the same answer again, and nothing is produced;
//! - of a request whose outcome is unknown (the produce was attempted, no ack came) produces
//!   the very same attempt again, so it can land at most once however often it is retried
//!   (the consumers deduplicate by `bid_id`);
//! - arriving while the first is still being processed is told to wait;
//! - carrying a different request is refused: a key names one request.
//!
//! A request refused before anything was produced gives its key back. Keys live in a
//! [`BoundedMap`]: a key older than its TTL, or pushed out by newer ones, is forgotten, and a
//! retry with it counts as a new request. A restarted process knows no keys.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use auction_common::ValidationError;

use crate::bounded::BoundedMap;

/// The value of an `Idempotency-Key` header (or the form's hidden field): 1 to 200 visible
/// ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const HEADER: &'static str = "Idempotency-Key";
    pub const MAX_LEN: usize = 200;

    pub fn parse(raw: &[u8]) -> Result<Self, ValidationError> {
        let visible = raw.iter().all(|b| (0x21..=0x7e).contains(b));
        match std::str::from_utf8(raw) {
            Ok(text) if visible && !raw.is_empty() && raw.len() <= Self::MAX_LEN => Ok(Self(text.to_owned())),
            _ => Err(ValidationError {
                field: Self::HEADER,
                message: format!(
                    "must be 1 to {} visible ASCII characters (no spaces), such as a UUID; got {} bytes",
                    Self::MAX_LEN,
                    raw.len()
                ),
            }),
        }
    }
}

/// The keys claimed in this process. `R` is what a key is bound to (the validated request),
/// `A` what was produced for it (the attempt to replay).
pub struct IdempotencyKeys<R, A> {
    table: Arc<Mutex<BoundedMap<IdempotencyKey, Entry<R, A>>>>,
}

struct Entry<R, A> {
    request: R,
    state: State<A>,
}

enum State<A> {
    /// A request holds the key's [`Reservation`] right now.
    InFlight,
    Acked(A),
    /// Produced, but whether it was written is not known: a retry produces it again.
    Unknown(A),
}

/// What a request may do with its key.
pub enum Claim<R, A> {
    /// First use of the key: go ahead, and settle the reservation.
    Fresh(Reservation<R, A>),
    /// An earlier attempt's outcome is unknown: produce this same attempt again.
    Retry(Reservation<R, A>, A),
    /// Acked before: answer with it again.
    Replay(A),
    /// Another request with this key is being processed now.
    InFlight,
    /// The key was used for a different request.
    Mismatch,
}

impl<R: Clone + PartialEq, A: Clone> IdempotencyKeys<R, A> {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self { table: Arc::new(Mutex::new(BoundedMap::new(capacity, Some(ttl)))) }
    }

    pub fn claim(&self, key: IdempotencyKey, request: &R) -> Claim<R, A> {
        let mut table = lock(&self.table);
        match table.get_mut(&key) {
            Some((_, entry)) if entry.request != *request => Claim::Mismatch,
            Some((_, Entry { state: State::InFlight, .. })) => Claim::InFlight,
            Some((_, Entry { state: State::Acked(attempt), .. })) => Claim::Replay(attempt.clone()),
            Some((seq, entry)) => {
                let State::Unknown(attempt) = std::mem::replace(&mut entry.state, State::InFlight) else {
                    unreachable!("the arms above took InFlight and Acked")
                };
                let reservation = Reservation::new(&self.table, key, seq, request.clone(), Some(attempt.clone()));
                Claim::Retry(reservation, attempt)
            }
            None => {
                let seq = table.insert(key.clone(), Entry { request: request.clone(), state: State::InFlight });
                Claim::Fresh(Reservation::new(&self.table, key, seq, request.clone(), None))
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the map consistent, so a panic elsewhere cannot have
    // left it half-updated.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A request's hold on its key. Dropped without being settled (the request was cancelled,
/// or refused before producing), it puts the key back as it was; once [`Self::producing`]
/// was called, it leaves the key "unknown" instead, since the attempt may have been written.
pub struct Reservation<R, A> {
    table: Arc<Mutex<BoundedMap<IdempotencyKey, Entry<R, A>>>>,
    key: IdempotencyKey,
    seq: u64,
    /// Taken when the verdict has to be written back as a new entry.
    request: Option<R>,
    /// What the key held before this request: an unknown attempt, or nothing.
    previous: Option<A>,
    /// What the key is left with if this request ends without a verdict.
    on_drop: Option<A>,
    settled: bool,
}

impl<R, A: Clone> Reservation<R, A> {
    fn new(table: &Arc<Mutex<BoundedMap<IdempotencyKey, Entry<R, A>>>>, key: IdempotencyKey, seq: u64, request: R, previous: Option<A>) -> Self {
        Self { table: Arc::clone(table), key, seq, request: Some(request), on_drop: previous.clone(), previous, settled: false }
    }

    /// The attempt is about to be handed to Kafka.
    pub fn producing(&mut self, attempt: A) {
        self.on_drop = Some(attempt);
    }

    /// The broker acked the attempt: retries get it back.
    pub fn acked(mut self, attempt: A) {
        self.settle(Some(State::Acked(attempt)));
    }

    /// Nothing was handed to Kafka after all: the key is as it was before this request.
    pub fn not_produced(mut self) {
        let state = self.previous.take().map(State::Unknown);
        self.settle(state);
    }
}

impl<R, A> Reservation<R, A> {
    /// Writes the verdict under the key; `None` forgets the key. If the key was pushed out of
    /// the map meanwhile, a verdict goes back in (as the newest): forgetting an attempt that
    /// may have been written would let a retry make a second bid.
    fn settle(&mut self, state: Option<State<A>>) {
        self.settled = true;
        let mut table = lock(&self.table);
        match (table.get_mut(&self.key), state) {
            (Some((seq, entry)), Some(state)) if seq == self.seq => entry.state = state,
            (Some((seq, _)), None) if seq == self.seq => {
                table.remove_if_seq(&self.key, seq);
            }
            (None, Some(state)) => {
                if let Some(request) = self.request.take() {
                    table.insert(self.key.clone(), Entry { request, state });
                }
            }
            // Claimed anew by another request after this one was forgotten, or nothing to keep.
            _ => {}
        }
    }
}

impl<R, A> Drop for Reservation<R, A> {
    fn drop(&mut self) {
        if !self.settled {
            let state = self.on_drop.take().map(State::Unknown);
            self.settle(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Keys = IdempotencyKeys<&'static str, u32>;

    fn key(k: &str) -> IdempotencyKey {
        IdempotencyKey::parse(k.as_bytes()).expect("a valid key")
    }

    fn keys() -> Keys {
        IdempotencyKeys::new(100, Duration::from_secs(60))
    }

    #[test]
    fn keys_are_1_to_200_visible_ascii_characters() {
        assert!(IdempotencyKey::parse(b"a").is_ok());
        assert!(IdempotencyKey::parse("k".repeat(200).as_bytes()).is_ok());
        assert!(IdempotencyKey::parse(b"!~{}-_0").is_ok());
        for bad in [&b""[..], "k".repeat(201).as_bytes(), b"a b", b"a	b", "é".as_bytes(), b"ab"] {
            let err = IdempotencyKey::parse(bad).expect_err("refused");
            assert_eq!(err.field, "Idempotency-Key");
        }
    }

    #[test]
    fn an_acked_request_is_replayed_and_a_different_one_is_refused() {
        let keys = keys();
        let Claim::Fresh(reservation) = keys.claim(key("k"), &"bid") else { panic!("fresh") };
        assert!(matches!(keys.claim(key("k"), &"bid"), Claim::InFlight));
        reservation.acked(7);
        assert!(matches!(keys.claim(key("k"), &"bid"), Claim::Replay(7)));
        assert!(matches!(keys.claim(key("k"), &"other"), Claim::Mismatch));
    }

    #[test]
    fn a_request_that_produced_nothing_gives_its_key_back() {
        let keys = keys();
        let Claim::Fresh(reservation) = keys.claim(key("k"), &"bid") else { panic!("fresh") };
        reservation.not_produced();
        assert!(matches!(keys.claim(key("k"), &"other"), Claim::Fresh(_)));
        let Claim::Fresh(reservation) = keys.claim(key("k2"), &"bid") else { panic!("fresh") };
        drop(reservation); // cancelled before producing
        assert!(matches!(keys.claim(key("k2"), &"bid"), Claim::Fresh(_)));
    }

    #[test]
    fn an_unknown_outcome_is_retried_with_the_same_attempt_until_acked() {
        let keys = keys();
        let Claim::Fresh(mut reservation) = keys.claim(key("k"), &"bid") else { panic!("fresh") };
        reservation.producing(7);
        drop(reservation); // no ack came
        let Claim::Retry(reservation, attempt) = keys.claim(key("k"), &"bid") else { panic!("retry") };
        assert_eq!(attempt, 7);
        assert!(matches!(keys.claim(key("k"), &"bid"), Claim::InFlight));
        reservation.not_produced(); // e.g. the in-flight limit: still unknown, not forgotten
        let Claim::Retry(reservation, attempt) = keys.claim(key("k"), &"bid") else { panic!("retry again") };
        reservation.acked(attempt);
        assert!(matches!(keys.claim(key("k"), &"bid"), Claim::Replay(7)));
    }

    #[test]
    fn a_verdict_outlives_the_eviction_of_its_key() {
        let keys: Keys = IdempotencyKeys::new(1, Duration::from_secs(60));
        let Claim::Fresh(mut reservation) = keys.claim(key("a"), &"bid") else { panic!("fresh") };
        reservation.producing(1);
        let Claim::Fresh(_other) = keys.claim(key("b"), &"bid") else { panic!("fresh") }; // pushes "a" out
        drop(reservation);
        assert!(matches!(keys.claim(key("a"), &"bid"), Claim::Retry(_, 1)));
    }
}
