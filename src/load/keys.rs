//! What the generator knows about the keys it wrote, for the verify phase.
//!
//! Each write to a key could race with another client's write to the same key on
//! another connection, and then nobody could say which value must be left. So
//! when verifying, every key has one *owner*: client `key % clients`. Writes
//! (put, del, incr, create, update) go only to keys the sending client owns; a
//! write draw of key `k` by client `c` becomes the key of `c` in the same block of
//! `clients` consecutive keys. A client's requests for one key leave on one
//! connection and come back in order, so after each acknowledged write the owner
//! knows exactly what the key holds.
//!
//! Per owned key the book keeps two numbers: how many writes were issued (the
//! write counter, from which the value's bytes are derived, see
//! [`super::wire::value_tag`]) and what the last acknowledged reply says the key
//! holds. Memory is 8 bytes per data key and 8 per counter key, plus a byte of
//! flags per key, split among the threads that own them.
//!
//! A write refused with `UNAVAILABLE` or `STALE` was applied nowhere (gtstore's
//! promise, docs/protocol.md): the key keeps what it held, and is verified as
//! before. A key whose write may have been applied (`ERR UNKNOWN`, no reply, a
//! broken connection, any other error) is *unknown*: it might hold either value,
//! so it is not verified, only counted ([`KeyBook::uncertain`]). Keys never
//! written in this run are unknown too (they may hold data from an earlier run),
//! and are neither verified nor counted.
//!
//! Caveat: with a skewed key distribution, ownership spreads the writes to a hot
//! key over the `clients` keys of its block; reads are not affected.

use super::wire::Space;

/// What the owner knows a data key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// Not verifiable.
    Unknown,
    /// Absent: deleted, or a create/update said so.
    Absent,
    /// The value of this write counter.
    Present(u32),
}

/// The keys a thread's clients own and what is known of them.
pub struct KeyBook {
    clients: u64,
    first: u64,
    width: u64,
    keys: u64,
    issued: Vec<u32>,
    data: Vec<u32>,
    counters: Vec<i64>,
    /// Per slot: bit 0, the data key's last write has an unknown outcome; bit
    /// 1, the counter key's.
    uncertain: Vec<u8>,
    /// Inconsistencies seen live by an owner (for example, an update answered
    /// NOT_FOUND for a key whose last acknowledged write stored a value).
    pub anomalies: u64,
}

const UNKNOWN_COUNT: i64 = i64::MIN;

impl KeyBook {
    /// The book for clients `first..first + width` of `clients`, over `keys` keys.
    pub fn new(keys: u64, clients: u64, first: u64, width: u64) -> KeyBook {
        let blocks = keys.div_ceil(clients.max(1));
        let slots = (blocks * width) as usize;
        KeyBook {
            clients,
            first,
            width,
            keys,
            issued: vec![0; slots],
            data: vec![0; slots],
            counters: vec![UNKNOWN_COUNT; slots],
            uncertain: vec![0; slots],
            anomalies: 0,
        }
    }

    /// The key in `key`'s block that `client` (a global client index) owns, if
    /// it is below the key count.
    pub fn owned_key(keys: u64, clients: u64, client: u64, key: u64) -> Option<u64> {
        let base = key - key % clients;
        let k = base + client;
        if k < keys {
            Some(k)
        } else if base >= clients {
            Some(base - clients + client)
        } else {
            None
        }
    }

    fn slot(&self, key: u32) -> usize {
        let k = key as u64;
        let owner = k % self.clients;
        debug_assert!(owner >= self.first && owner < self.first + self.width);
        ((k / self.clients) * self.width + owner - self.first) as usize
    }

    /// How many slots the book has (keys owned, plus a few past the key count).
    pub fn slots(&self) -> usize {
        self.data.len()
    }

    /// The key of slot `slot`, if it is a real key.
    pub fn key_of_slot(&self, slot: usize) -> Option<u32> {
        let s = slot as u64;
        let k = (s / self.width) * self.clients + self.first + s % self.width;
        (k < self.keys).then_some(k as u32)
    }

    /// Issues the next write counter of a data key.
    pub fn next_counter(&mut self, key: u32) -> u32 {
        let i = self.slot(key);
        self.issued[i] = self.issued[i].wrapping_add(1).max(1);
        self.issued[i]
    }

    /// What is known of data key `key`.
    pub fn known(&self, key: u32) -> Known {
        match self.data[self.slot(key)] {
            0 => Known::Unknown,
            1 => Known::Absent,
            c => Known::Present(c - 1),
        }
    }

    /// Records what an acknowledged reply says data key `key` holds.
    pub fn set(&mut self, key: u32, k: Known) {
        let i = self.slot(key);
        self.data[i] = match k {
            Known::Unknown => 0,
            Known::Absent => 1,
            Known::Present(c) => c + 1,
        };
    }

    /// The known count of counter key `key`.
    pub fn count(&self, key: u32) -> Option<i64> {
        let c = self.counters[self.slot(key)];
        (c != UNKNOWN_COUNT).then_some(c)
    }

    /// Records counter `key`'s count (None: unknown).
    pub fn set_count(&mut self, key: u32, count: Option<i64>) {
        let i = self.slot(key);
        self.counters[i] = count.unwrap_or(UNKNOWN_COUNT);
    }

    /// Records whether key `key` of `space` was last written with an unknown
    /// outcome (it may or may not have been applied).
    pub fn set_uncertain(&mut self, space: Space, key: u32, uncertain: bool) {
        let i = self.slot(key);
        let bit = match space {
            Space::Data => 1,
            Space::Counter => 2,
        };
        if uncertain {
            self.uncertain[i] |= bit;
        } else {
            self.uncertain[i] &= !bit;
        }
    }

    /// Whether slot `slot` of `space` was last written with an unknown outcome.
    pub fn uncertain(&self, space: Space, slot: usize) -> bool {
        let bit = match space {
            Space::Data => 1,
            Space::Counter => 2,
        };
        self.uncertain[slot] & bit != 0
    }

    /// Whether slot `slot` of `space` holds anything to verify.
    pub fn verifiable(&self, space: Space, slot: usize) -> bool {
        match space {
            Space::Data => self.data[slot] != 0,
            Space::Counter => self.counters[slot] != UNKNOWN_COUNT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_one_owner_and_a_slot() {
        let (keys, clients) = (103u64, 10u64);
        // Two threads: clients 0..4 and 4..10.
        let a = KeyBook::new(keys, clients, 0, 4);
        let b = KeyBook::new(keys, clients, 4, 6);
        let mut seen = vec![0; keys as usize];
        for book in [&a, &b] {
            for s in 0..book.slots() {
                if let Some(k) = book.key_of_slot(s) {
                    assert_eq!(book.slot(k), s);
                    seen[k as usize] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
    }

    #[test]
    fn owned_key_stays_in_the_block_and_in_range() {
        let (keys, clients) = (103u64, 10u64);
        for c in 0..clients {
            for k in 0..keys {
                let o = KeyBook::owned_key(keys, clients, c, k).unwrap();
                assert!(o < keys);
                assert_eq!(o % clients, c);
                assert!(o.abs_diff(k) < 2 * clients);
            }
        }
        // Fewer keys than clients: some clients own nothing.
        assert_eq!(KeyBook::owned_key(3, 10, 5, 1), None);
        assert_eq!(KeyBook::owned_key(3, 10, 2, 1), Some(2));
    }

    #[test]
    fn states_round_trip() {
        let mut b = KeyBook::new(50, 5, 0, 5);
        assert_eq!(b.known(7), Known::Unknown);
        let c = b.next_counter(7);
        assert_eq!(c, 1);
        b.set(7, Known::Present(c));
        assert_eq!(b.known(7), Known::Present(1));
        b.set(7, Known::Absent);
        assert_eq!(b.known(7), Known::Absent);
        assert_eq!(b.count(7), None);
        b.set_count(7, Some(0));
        assert_eq!(b.count(7), Some(0));
        assert!(b.verifiable(Space::Counter, b.slot(7)));
        assert!(!b.verifiable(Space::Data, b.slot(8)));
    }
}
