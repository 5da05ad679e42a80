//! A map that forgets: at most `capacity` entries, each kept at most `ttl` after it was
//! inserted; the oldest goes first. What the site remembers per process (idempotency keys,
//! bids it acked) lives in one of these, so no request pattern can grow its memory.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

pub struct BoundedMap<K, V> {
    capacity: usize,
    ttl: Option<Duration>,
    entries: HashMap<K, Slot<V>>,
    /// Insertion order: the sequence number of each live entry, so the oldest is found (and
    /// dropped) in O(log n) and a removed entry leaves nothing behind.
    order: BTreeMap<u64, K>,
    next_seq: u64,
}

struct Slot<V> {
    seq: u64,
    inserted: Instant,
    value: V,
}

impl<K: Eq + Hash + Clone, V> BoundedMap<K, V> {
    /// `capacity` is raised to 1: a map that can hold nothing would make every caller's
    /// insert-then-read sequence fail.
    pub fn new(capacity: usize, ttl: Option<Duration>) -> Self {
        Self { capacity: capacity.max(1), ttl, entries: HashMap::new(), order: BTreeMap::new(), next_seq: 0 }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The live entry under `key`, with its sequence number (which names this very insertion:
    /// a later insert under the same key gets another one).
    pub fn get_mut(&mut self, key: &K) -> Option<(u64, &mut V)> {
        self.forget_expired();
        self.entries.get_mut(key).map(|slot| (slot.seq, &mut slot.value))
    }

    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.get_mut(key).map(|(_, v)| &*v)
    }

    /// Inserts (or replaces) the entry under `key`, forgetting the oldest entries beyond the
    /// capacity. Returns the new entry's sequence number.
    pub fn insert(&mut self, key: K, value: V) -> u64 {
        self.forget_expired();
        self.remove(&key);
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            self.entries.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, key.clone());
        self.entries.insert(key, Slot { seq, inserted: Instant::now(), value });
        seq
    }

    /// Removes the entry under `key` only if it is still insertion `seq`.
    pub fn remove_if_seq(&mut self, key: &K, seq: u64) -> bool {
        if self.entries.get(key).is_some_and(|slot| slot.seq == seq) {
            self.remove(key);
            true
        } else {
            false
        }
    }

    fn remove(&mut self, key: &K) {
        if let Some(slot) = self.entries.remove(key) {
            self.order.remove(&slot.seq);
        }
    }

    fn forget_expired(&mut self) {
        let Some(ttl) = self.ttl else { return };
        while let Some((_, key)) = self.order.first_key_value() {
            let expired = self.entries.get(key).is_none_or(|slot| slot.inserted.elapsed() >= ttl);
            if !expired {
                break;
            }
            if let Some((_, key)) = self.order.pop_first() {
                self.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entry_goes_first_when_full() {
        let mut map = BoundedMap::new(2, None);
        map.insert("a", 1);
        map.insert("b", 2);
        map.insert("a", 3); // re-inserted: now the newest
        map.insert("c", 4);
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(&"b"), None);
        assert_eq!(map.get(&"a"), Some(&3));
        assert_eq!(map.get(&"c"), Some(&4));
    }

    #[test]
    fn entries_are_forgotten_after_their_ttl() {
        let mut map = BoundedMap::new(10, Some(Duration::from_millis(30)));
        map.insert("a", 1);
        std::thread::sleep(Duration::from_millis(40));
        map.insert("b", 2);
        assert_eq!(map.get(&"a"), None);
        assert_eq!(map.get(&"b"), Some(&2));
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn removal_by_sequence_leaves_a_newer_insertion_alone() {
        let mut map = BoundedMap::new(10, None);
        let first = map.insert("a", 1);
        let second = map.insert("a", 2);
        assert!(!map.remove_if_seq(&"a", first));
        assert_eq!(map.get(&"a"), Some(&2));
        assert!(map.remove_if_seq(&"a", second));
        assert_eq!(map.len(), 0);
        assert!(map.order.is_empty(), "nothing is left behind in the order index");
    }

    #[test]
    fn memory_stays_bounded_whatever_is_inserted() {
        let mut map = BoundedMap::new(100, None);
        for i in 0..10_000 {
            map.insert(i, i);
            if i % 3 == 0 {
                map.remove(&i);
            }
        }
        assert!(map.len() <= 100 && map.order.len() == map.len());
    }
}
