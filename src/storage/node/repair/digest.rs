//! The digests anti-entropy compares (see [`super::anti_entropy`]), and the
//! purge floors that keep it from bringing collected deletes back.
//!
//! # Digests
//!
//! One digest per token range of the serving ring (the range `(previous token,
//! token]`, named by its last token), each [`LEAVES`] leaves that split the
//! range's hashes into equal slices. A leaf is the XOR of [`entry_hash`] over
//! every entry (tombstones included) the engine holds in its slice. XOR makes an
//! update O(1): a write toggles the old entry's hash out and the new one's in, a
//! collected tombstone toggles out. The node does that in its two data-changing
//! methods (`store`, `purge`); dropping keys after a ring change, or a
//! change of the ring's tokens, rebuilds every digest from the engine (one pass
//! over the keys, at a moment the node already makes one). Memory is fixed per
//! range (`LEAVES * 8` bytes), nothing per key.
//!
//! Two replicas with the same ring cut a range into the same leaves, so equal
//! leaves mean (but for a 2^-64 chance) the same entries, and a leaf that differs
//! names the slice whose keys must be listed. A range's root is the XOR of its
//! leaves, i.e. of every entry in the range.
//!
//! # Purge floors
//!
//! A tombstone is collected once every replica holds it (`tombstones.rs`), so
//! afterwards no replica holds an older value of the key, unless one is brought
//! back from outside the protocol (an old data directory restored). If one is,
//! anti-entropy would see a key one replica has and the others lack, and copy
//! it: the delete would be undone. So each node keeps, per [`FLOOR_BUCKETS`]
//! slice of the hash space, the highest version of a tombstone it collected
//! there, and anti-entropy never creates a live key on a node that holds no
//! entry for it when the offered version is at or below that floor. A process
//! starts with every floor at the newest version a tombstone it could have
//! collected before it started may have had (its start time less the grace: a
//! tombstone is collected only once that old), since the floors are not kept on
//! disk. The price: a live key lost from a replica is not recreated there by
//! anti-entropy if a newer tombstone was collected in the same bucket (or, after a
//! restart, if it is older than the start less the grace); catch-up after a
//! restart and read repair still bring it. Caveat: floors are per node, and
//! only the lead of a comparison and the peer check theirs; keys the lead
//! pulled are owed to the range's third replica without that replica's floor.
//! So a node that was not among a key's replicas when its tombstone was
//! collected, and started before that, may still take a restored stale copy.

use crate::ring::{hash64, Token};
use crate::storage::engine::Engine;

/// Leaves per range. More leaves list fewer keys per differing leaf, and cost
/// `8` bytes each per range in memory and in every leaf exchange.
pub const LEAVES: usize = 256;

/// Buckets of the purge floors (by the top bits of the key's ring hash); 8 bytes
/// each. More buckets refuse fewer lost keys by mistake.
pub const FLOOR_BUCKETS: usize = 1 << 14;

/// Fixed forever (every node must compute the same digests): a 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The hash of one entry: its key's ring hash, its version, and whether it is
/// live. Part of the wire protocol: every node must compute it the same way.
pub fn entry_hash(ring_hash: u64, version: u64, live: bool) -> u64 {
    mix(ring_hash ^ mix(version ^ (live as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

/// The digests of every range of one serving ring.
#[derive(Debug, Default)]
pub struct Digests {
    /// The ranges' last tokens, ascending (the serving ring's tokens).
    bounds: Vec<Token>,
    /// `LEAVES` per range, range by range.
    leaves: Vec<u64>,
}

impl Digests {
    /// The ranges' last tokens.
    pub fn bounds(&self) -> &[Token] {
        &self.bounds
    }

    /// The index of the range holding `hash` (`None` without ranges).
    pub fn range_of(&self, hash: u64) -> Option<usize> {
        if self.bounds.is_empty() {
            return None;
        }
        let i = self.bounds.partition_point(|&t| t < hash);
        Some(if i == self.bounds.len() { 0 } else { i })
    }

    /// The index of the range ending at `end`, if it is one.
    pub fn range_ending(&self, end: Token) -> Option<usize> {
        self.bounds.binary_search(&end).ok()
    }

    /// The range `i`'s first hash minus one (exclusive start) and last hash.
    pub fn span(&self, i: usize) -> (u64, u64) {
        let prev = if i == 0 { self.bounds.len() - 1 } else { i - 1 };
        (self.bounds[prev], self.bounds[i])
    }

    /// Whether `hash` is in range `i`.
    pub fn contains(&self, i: usize, hash: u64) -> bool {
        self.range_of(hash) == Some(i)
    }

    /// The leaf of `hash` within range `i` (which must hold it).
    pub fn leaf_of(&self, i: usize, hash: u64) -> usize {
        let (start, end) = self.span(i);
        let len: u128 = if self.bounds.len() == 1 {
            1 << 64
        } else {
            end.wrapping_sub(start) as u128
        };
        let offset = hash.wrapping_sub(start).wrapping_sub(1) as u128;
        ((offset * LEAVES as u128) / len) as usize
    }

    /// Range `i`'s leaves.
    pub fn leaves(&self, i: usize) -> &[u64] {
        &self.leaves[i * LEAVES..(i + 1) * LEAVES]
    }

    /// Range `i`'s root: the XOR of its leaves.
    pub fn root(&self, i: usize) -> u64 {
        self.leaves(i).iter().fold(0, |a, &l| a ^ l)
    }

    /// Toggles one entry in (or out: XOR is its own inverse).
    pub fn toggle(&mut self, hash: u64, version: u64, live: bool) {
        self.replace(hash, Some((version, live)), None);
    }

    /// Toggles a key's `old` entry (version, live) out and its `new` one in:
    /// both are in the one leaf of the key's ring hash `hash`, found once.
    pub fn replace(&mut self, hash: u64, old: Option<(u64, bool)>, new: Option<(u64, bool)>) {
        let slot = self.slot(hash);
        self.replace_at(slot, hash, old, new);
    }

    /// Where the leaf of ring hash `hash` is kept (`None` without ranges),
    /// for [`Digests::replace_at`]. Asks the processor to fetch that leaf
    /// into its cache: a write finds this slot before it looks its key up
    /// in the engine, so the leaf's cache miss (the leaves of every range
    /// are far larger than the cache, and a key's leaf is random) overlaps
    /// the engine's instead of following it.
    pub fn slot(&self, hash: u64) -> Option<usize> {
        let i = self.range_of(hash)?;
        let slot = i * LEAVES + self.leaf_of(i, hash);
        if let Some(leaf) = self.leaves.get(slot) {
            prefetch(leaf);
        }
        Some(slot)
    }

    /// [`Digests::replace`] with the key's leaf found by [`Digests::slot`]
    /// (the ranges unchanged since).
    pub fn replace_at(
        &mut self,
        slot: Option<usize>,
        hash: u64,
        old: Option<(u64, bool)>,
        new: Option<(u64, bool)>,
    ) {
        let entry = |e: Option<(u64, bool)>| e.map_or(0, |(v, live)| entry_hash(hash, v, live));
        if let Some(leaf) = slot.and_then(|s| self.leaves.get_mut(s)) {
            *leaf ^= entry(old) ^ entry(new);
        }
    }

    /// Recomputes every digest for the ranges ending at `bounds` from `engine`.
    pub fn rebuild(&mut self, bounds: &[Token], engine: &Engine) {
        self.bounds = bounds.to_vec();
        self.leaves = vec![0; bounds.len() * LEAVES];
        for token in engine.tokens() {
            let Some(sector) = engine.sector_of_token(token) else {
                continue;
            };
            for e in sector.iter() {
                self.toggle(hash64(e.key), e.version, e.value.is_some());
            }
        }
    }
}

/// Asks the processor to bring the cache line holding `x` into its caches
/// (a hint: no effect on what the program computes; none on other targets).
#[inline(always)]
fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing into the program and cannot fault;
    // `x` is a valid reference anyway.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((x as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// The purge floors (see the module docs).
#[derive(Debug)]
pub struct Floors {
    /// Highest version of a tombstone collected per bucket.
    buckets: Box<[u64]>,
    /// What every bucket starts at: tombstones collected before this process.
    start: u64,
}

impl Floors {
    /// Floors of a process whose earlier lives may have collected tombstones up
    /// to version `start`.
    pub fn new(start: u64) -> Floors {
        Floors {
            buckets: vec![0; FLOOR_BUCKETS].into_boxed_slice(),
            start,
        }
    }

    fn bucket(hash: u64) -> usize {
        (hash >> (64 - FLOOR_BUCKETS.trailing_zeros())) as usize
    }

    /// A tombstone at `version` was collected for a key of ring hash `hash`.
    pub fn collected(&mut self, hash: u64, version: u64) {
        let b = &mut self.buckets[Self::bucket(hash)];
        *b = (*b).max(version);
    }

    /// Whether anti-entropy may create a live key of ring hash `hash` at
    /// `version` on a node holding no entry for it.
    pub fn admits(&self, hash: u64, version: u64) -> bool {
        version > self.start.max(self.buckets[Self::bucket(hash)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(keys: u32) -> Engine {
        let mut e = Engine::new([u64::MAX / 4, u64::MAX / 2, u64::MAX]);
        for i in 0..keys {
            let live = i % 7 != 0;
            let value: Option<&[u8]> = if live { Some(b"v") } else { None };
            e.apply(format!("k{i}").as_bytes(), 10 + i as u64, value, None);
        }
        e
    }

    #[test]
    fn leaves_split_each_range_and_cover_it() {
        let mut d = Digests::default();
        let top = u64::MAX - (1 << 30);
        let bounds = [1 << 20, 1 << 40, top];
        d.rebuild(&bounds, &Engine::default());
        // Range 0 wraps: (top, 2^20].
        assert_eq!(d.range_of(50), Some(0));
        assert_eq!(d.range_of(u64::MAX), Some(0));
        assert_eq!(d.range_of((1 << 20) + 1), Some(1));
        assert_eq!(d.range_of(top), Some(2));
        assert_eq!(d.leaf_of(0, top + 1), 0);
        assert_eq!(d.leaf_of(0, 1 << 20), LEAVES - 1);
        assert_eq!(d.leaf_of(1, (1 << 20) + 1), 0);
        assert_eq!(d.leaf_of(1, 1 << 40), LEAVES - 1);
        assert_eq!(d.leaf_of(2, (1 << 40) + 1), 0);
        assert_eq!(d.leaf_of(2, top), LEAVES - 1);
        // A range shorter than its leaves uses some of them.
        d.rebuild(&[100, 200], &Engine::default());
        assert_eq!(d.leaf_of(1, 200), 99 * LEAVES / 100);
        // One range: the whole ring.
        d.rebuild(&[7], &Engine::default());
        assert_eq!(d.leaf_of(0, 8), 0);
        assert_eq!(d.leaf_of(0, 7), LEAVES - 1);
        assert_eq!(d.leaf_of(0, 7 + (1 << 63)), LEAVES / 2 - 1);
    }

    #[test]
    fn toggles_match_a_rebuild_and_undo_themselves() {
        let bounds = [u64::MAX / 3, u64::MAX / 3 * 2, u64::MAX - 1];
        let mut e = engine(500);
        let mut d = Digests::default();
        d.rebuild(&bounds, &e);
        // A write: old entry out, new in (one call, or one toggle each).
        let h = hash64(b"k3");
        let mut d2 = Digests::default();
        d2.rebuild(&bounds, &e);
        d.toggle(h, 13, true);
        d.toggle(h, 99, false);
        d2.replace(h, Some((13, true)), Some((99, false)));
        assert_eq!(d.leaves, d2.leaves);
        e.apply(b"k3", 99, None, None);
        let mut fresh = Digests::default();
        fresh.rebuild(&bounds, &e);
        assert_eq!(d.leaves, fresh.leaves);
        let changed: Vec<usize> = (0..3).filter(|&i| d.root(i) != 0).collect();
        assert_eq!(changed.len(), 3, "every range holds keys");
        // An empty engine's digests are zero; a different version differs.
        let mut other = Digests::default();
        other.rebuild(&bounds, &Engine::default());
        assert!((0..3).all(|i| other.root(i) == 0));
        let i = d.range_of(h).unwrap();
        d.toggle(h, 99, false);
        d.toggle(h, 98, false);
        assert_ne!(d.root(i), fresh.root(i));
        assert_eq!(
            (0..LEAVES)
                .filter(|&l| d.leaves(i)[l] != fresh.leaves(i)[l])
                .collect::<Vec<_>>(),
            vec![d.leaf_of(i, h)]
        );
    }

    #[test]
    fn floors_refuse_old_versions_in_their_bucket_only() {
        let mut f = Floors::new(5);
        assert!(!f.admits(1, 5));
        assert!(f.admits(1, 6));
        f.collected(1, 50);
        assert!(!f.admits(2, 50), "same bucket");
        assert!(f.admits(2, 51));
        assert!(f.admits(u64::MAX, 6), "another bucket");
    }
}
