//! A token bucket per client address, in this process's memory.
//!
//! Each address may take `rate` requests a second on average and `burst` at once. Memory is
//! bounded: at most `clients_max` addresses are tracked. An address whose bucket has filled up
//! again is idle, and forgetting it changes nothing (a new bucket starts full), so idle ones
//! go first; only when every tracked address is active is the fullest bucket of a small sample
//! forgotten, which can only let that client through sooner, never refuse anyone.
//!
//! With several web replicas each keeps its own buckets: a client spread over `n` replicas
//! gets up to `n` times the rate.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Independent locks, so HTTP workers rarely wait for each other.
const SHARDS: usize = 16;
/// How many entries to look at when every tracked address is active.
const EVICTION_SAMPLE: usize = 16;

struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Shard {
    buckets: HashMap<IpAddr, Bucket>,
    /// When idle buckets were last swept out; sweeping is O(n), so at most once a second.
    swept: Option<Instant>,
}

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    per_shard: usize,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl RateLimiter {
    pub fn new(rate_per_sec: u32, burst: u32, clients_max: usize) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard { buckets: HashMap::new(), swept: None })).collect();
        Self {
            rate: f64::from(rate_per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            per_shard: clients_max.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            shards,
        }
    }

    pub fn rate_per_sec(&self) -> f64 {
        self.rate
    }

    pub fn burst(&self) -> f64 {
        self.burst
    }

    /// Takes one token for `ip`; when there is none, how long until there is.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let index = (self.hasher.hash_one(ip) as usize) % self.shards.len();
        let mut shard = self.shards[index].lock().unwrap_or_else(PoisonError::into_inner);
        if !shard.buckets.contains_key(&ip) && shard.buckets.len() >= self.per_shard {
            self.make_room(&mut shard, now);
        }
        let bucket = match shard.buckets.entry(ip) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Bucket { tokens: self.burst, at: now }),
        };
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }

    fn make_room(&self, shard: &mut Shard, now: Instant) {
        if shard.swept.is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1)) {
            shard.swept = Some(now);
            let (rate, burst) = (self.rate, self.burst);
            shard.buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
            if shard.buckets.len() < self.per_shard {
                return;
            }
        }
        // The fullest bucket of the sample: forgetting it hands the least back to its client.
        let (rate, burst) = (self.rate, self.burst);
        let fullness = |b: &Bucket| (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(burst);
        let fullest = shard.buckets.iter().take(EVICTION_SAMPLE).max_by(|a, b| fullness(a.1).total_cmp(&fullness(b.1))).map(|(ip, _)| *ip);
        if let Some(ip) = fullest {
            shard.buckets.remove(&ip);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).buckets.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn a_client_gets_its_burst_then_the_rate_and_is_told_when_to_come_back() {
        let limiter = RateLimiter::new(2, 3, 100);
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check(ip(1), t), Ok(()));
        }
        let wait = limiter.check(ip(1), t).expect_err("the burst is spent");
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(limiter.check(ip(2), t), Ok(()), "another client has its own bucket");
        assert_eq!(limiter.check(ip(1), t + Duration::from_millis(500)), Ok(()));
        assert!(limiter.check(ip(1), t + Duration::from_millis(500)).is_err());
        for _ in 0..3 {
            assert_eq!(limiter.check(ip(1), t + Duration::from_secs(10)), Ok(()), "refilled up to the burst, no more");
        }
        assert!(limiter.check(ip(1), t + Duration::from_secs(10)).is_err());
    }

    #[test]
    fn memory_stays_bounded_whatever_the_number_of_clients() {
        let limiter = RateLimiter::new(1, 5, 160);
        let t = Instant::now();
        for n in 0..10_000 {
            let _ = limiter.check(ip(n), t + Duration::from_millis(u64::from(n)));
        }
        assert!(limiter.tracked() <= 160, "{}", limiter.tracked());
    }

    #[test]
    fn idle_clients_are_forgotten_before_active_ones() {
        let limiter = RateLimiter::new(1, 2, 4 * SHARDS);
        let t = Instant::now();
        // A busy client: its bucket is empty, so forgetting it would hand it a new burst.
        let busy = ip(7);
        assert!(limiter.check(busy, t).is_ok() && limiter.check(busy, t).is_ok());
        assert!(limiter.check(busy, t).is_err());
        let soon = t + Duration::from_millis(100);
        for n in 100..10_000 {
            let _ = limiter.check(ip(n), soon);
        }
        assert!(limiter.check(busy, soon).is_err(), "still limited: others made room");
        assert!(limiter.tracked() <= 4 * SHARDS);
    }
}
