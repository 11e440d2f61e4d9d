//! The engine: a node's data, kept in sectors, one per ring token it holds.
//!
//! A token owns the key hashes in (previous token, token]; the sector of a token is
//! a hash table of exactly those keys, so a token moves between nodes as a unit (a
//! sector is detached, streamed and attached). Keys and values are copied once on
//! the way in, so a stored value never pins the read buffer its request arrived in.
//!
//! Before the node knows the ring it holds one sector, at token `u64::MAX`, that
//! covers the whole hash space; [`Engine::set_tokens`] re-buckets keys when the
//! token set changes.
//!
//! Every entry carries a version (a u64 from the node's hybrid logical clock, see
//! [`super::hlc::Hlc`]) and a delete leaves a tombstone: an entry with a version and no value,
//! so an older copy of the key arriving later (a move, a late replica write) cannot
//! bring it back. [`Engine::apply`] is the one way data changes: a higher version
//! wins, an equal one is a harmless repeat, a lower one is refused. What CREATE,
//! UPDATE and INCR mean is decided apart from storage, by [`super::ops::decide`], so a node can
//! decide against the newest copy it read from any replica.
//!
//! Memory layout. An entry is one heap allocation (`engine/record.rs`) holding
//! the version, its lengths, the key and the value; a sector's tables
//! (hashbrown's `HashTable`) hold only an 8-byte pointer to it, and read the
//! lengths from the entry's header. A 13-byte key with a 100-byte value costs
//! one allocation of 123 bytes (mimalloc's 128-byte class) plus a table bucket
//! of 9 bytes (the pointer and hashbrown's control byte). A hashbrown table
//! keeps at most 7/8 of its power-of-two buckets full, so one table per sector
//! would cost between 10 and 21 bytes a key, the most just past a doubling; a
//! sector splits its keys by hash among `PARTS` (4) tables of unequal shares,
//! which double at different sizes, so a key costs between about 13 and 17
//! (14 at scenario 4's million keys in 64 sectors, against 19 for one table).
//! `cargo run --release --example engine_bytes` measures the engine's bytes per
//! key and the tables' share of them.
//!
//! The tables are hashed with the key's ring hash ([`hash64`], computed once to
//! find the sector anyway) times an odd constant: within a sector the ring
//! hashes share their top bits, and a table takes its 7-bit tags from the top,
//! so they are mixed first. A read copies the value out ([`Engine::get`]
//! returns an owned `Bytes`); an overwrite with a value of the same length
//! rewrites the entry in place.
//!
//! Caveats: tombstones are kept (they cost a key and a version each); an
//! entry's size class can hold up to a quarter more than the entry (5 bytes of
//! 128 in scenario 4); and a table is still 44% to 87% full.

use crate::ring::{hash64, Token};
use bytes::Bytes;
use hashbrown::HashTable;

mod record;
use record::Record;

/// A stored version and value; `value: None` is a tombstone (a delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Orders writes to one key: higher wins.
    pub version: u64,
    /// The value, or `None` once deleted.
    pub value: Option<Bytes>,
}

/// A stored entry, borrowed from the engine (no copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// The key.
    pub key: &'a [u8],
    /// Orders writes to one key: higher wins.
    pub version: u64,
    /// The value, or `None` once deleted.
    pub value: Option<&'a [u8]>,
}

impl EntryRef<'_> {
    /// An owned copy of the version and value.
    pub fn to_entry(&self) -> Entry {
        Entry {
            version: self.version,
            value: self.value.map(Bytes::copy_from_slice),
        }
    }
}

/// The table hash of a key whose ring hash is `ring_hash`: an odd multiplier
/// spreads the low bits (random within a sector) into the top bits the table uses
/// for its tags, and keeps the low bits it uses for the bucket a bijection of the
/// ring hash's own.
#[inline]
fn table_hash(ring_hash: u64) -> u64 {
    ring_hash.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn record_hash(r: &Record) -> u64 {
    table_hash(hash64(r.key()))
}

/// Tables a sector's keys are split among, by hash. Each table doubles on its
/// own, at a different key count, so a sector's buckets grow in steps of about
/// 2^(1/4) rather than 2: at no key count are all of a sector's tables just
/// past a doubling (where a single table would have 56% of its buckets empty).
const PARTS: usize = 4;

/// Where each table's share of the hash ends, in 65536ths of bits 32..48 of
/// the table hash: shares in the ratios 1 : 2^(1/4) : 2^(1/2) : 2^(3/4)
/// (0.189, 0.225, 0.268, 0.318), so each doubles a quarter octave of sector
/// size after the one before.
const PART_ENDS: [u16; PARTS - 1] = [12_400, 27_146, 44_682];

/// Which of a sector's tables holds table hash `th`. Bits 32..48 of the table
/// hash are independent of the low bits its table uses for the bucket and of
/// the top seven it takes for tags.
#[inline]
fn part(th: u64) -> usize {
    let s = (th >> 32) as u16;
    PART_ENDS.iter().map(|&end| (s >= end) as usize).sum()
}

/// One token's keys.
#[derive(Default, Debug, Clone)]
pub struct Sector {
    parts: [HashTable<Record>; PARTS],
}

impl Sector {
    /// Number of entries, tombstones included.
    pub fn len(&self) -> usize {
        self.parts.iter().map(HashTable::len).sum()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(HashTable::is_empty)
    }

    /// Bytes the sector's tables take (their buckets and control bytes), not
    /// counting the entries they point to.
    pub fn table_bytes(&self) -> usize {
        // hashbrown keeps 7/8 of its power-of-two buckets usable (all of
        // them below 8), plus a control byte per bucket and one group's
        // worth more.
        let bytes = |cap: usize| {
            let buckets = if cap < 8 {
                cap.next_power_of_two()
            } else {
                cap / 7 * 8
            };
            if buckets == 0 {
                0
            } else {
                buckets * (std::mem::size_of::<Record>() + 1) + 16
            }
        };
        self.parts.iter().map(|t| bytes(t.capacity())).sum()
    }

    /// Iterates over the entries, tombstones included.
    pub fn iter(&self) -> impl Iterator<Item = EntryRef<'_>> {
        self.records().map(Record::view)
    }

    fn records(&self) -> impl Iterator<Item = &Record> {
        self.parts.iter().flat_map(HashTable::iter)
    }

    /// The table hash of ring hash `hash`, and the table that holds it.
    #[inline]
    fn table_mut(&mut self, hash: u64) -> (u64, &mut HashTable<Record>) {
        let th = table_hash(hash);
        (th, &mut self.parts[part(th)])
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<&Record> {
        let th = table_hash(hash);
        self.parts[part(th)].find(th, |r| r.key() == key)
    }

    fn insert(&mut self, hash: u64, r: Record) {
        let (th, table) = self.table_mut(hash);
        table.insert_unique(th, r, record_hash);
    }
}

/// Outcome of [`Engine::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Stored (or the same version was already there).
    Stored,
    /// Refused: the engine holds this newer version (or, for a conditional write,
    /// a version other than the one the decision was based on).
    Newer(u64),
}

/// What one write did to the engine ([`Engine::apply_hashed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Stored, or refused for a newer version.
    pub applied: Applied,
    /// `None` if nothing changed (refused, or the version was already held);
    /// otherwise the entry the write replaced as (version, live), `None`
    /// for a key the engine did not hold.
    pub replaced: Option<Option<(u64, bool)>>,
}

/// All of a node's sectors.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The tokens held, ascending (never empty): `sectors[i]` holds the keys
    /// whose hash falls in the range ending at `tokens[i]`. Two vectors rather
    /// than a map: finding a key's sector, on every engine access, is one
    /// binary search over contiguous words rather than tree walks.
    tokens: Vec<Token>,
    /// The sectors, in the order of `tokens`.
    sectors: Vec<Sector>,
    /// Live keys (tombstones not counted).
    keys: usize,
    /// Bytes of the live keys and their values (tombstones and the table's own
    /// overhead not counted).
    bytes: usize,
}

impl Default for Engine {
    fn default() -> Engine {
        Engine::new([])
    }
}

impl Engine {
    /// An empty engine with one sector per token (one covering all if none given).
    pub fn new(tokens: impl IntoIterator<Item = Token>) -> Engine {
        let mut tokens: Vec<Token> = tokens.into_iter().collect();
        tokens.sort_unstable();
        tokens.dedup();
        if tokens.is_empty() {
            tokens.push(Token::MAX);
        }
        Engine {
            sectors: tokens.iter().map(|_| Sector::default()).collect(),
            tokens,
            keys: 0,
            bytes: 0,
        }
    }

    /// The index of the sector that holds `hash`: the first token at or
    /// above it, wrapping to the first.
    fn index_of(&self, hash: u64) -> usize {
        let i = self.tokens.partition_point(|&t| t < hash);
        if i == self.tokens.len() {
            0
        } else {
            i
        }
    }

    fn sector(&self, hash: u64) -> &Sector {
        &self.sectors[self.index_of(hash)]
    }

    fn sector_mut(&mut self, hash: u64) -> &mut Sector {
        let i = self.index_of(hash);
        &mut self.sectors[i]
    }

    fn record(&self, key: &[u8]) -> Option<&Record> {
        self.record_hashed(hash64(key), key)
    }

    fn record_hashed(&self, hash: u64, key: &[u8]) -> Option<&Record> {
        self.sector(hash).find(hash, key)
    }

    /// Replaces the token set, moving every key to the sector that now covers it.
    pub fn set_tokens(&mut self, tokens: impl IntoIterator<Item = Token>) {
        let old = std::mem::take(&mut self.sectors);
        let fresh = Engine::new(tokens);
        (self.tokens, self.sectors) = (fresh.tokens, fresh.sectors);
        for sector in old {
            for r in sector.parts.into_iter().flatten() {
                let hash = hash64(r.key());
                self.sector_mut(hash).insert(hash, r);
            }
        }
    }

    /// Keys (tombstones included) whose hash satisfies `pred`.
    pub fn keys_where(&self, mut pred: impl FnMut(u64) -> bool) -> Vec<Bytes> {
        self.sectors
            .iter()
            .flat_map(Sector::records)
            .map(Record::key)
            .filter(|k| pred(hash64(k)))
            .map(Bytes::copy_from_slice)
            .collect()
    }

    /// Removes every entry whose hash satisfies `pred`; returns how many live keys
    /// went.
    pub fn remove_where(&mut self, mut pred: impl FnMut(u64) -> bool) -> usize {
        let (mut gone, mut bytes) = (0, 0);
        for s in &mut self.sectors {
            for table in &mut s.parts {
                table.retain(|r| {
                    let remove = pred(hash64(r.key()));
                    gone += (remove && r.live()) as usize;
                    bytes += if remove { r.live_bytes() } else { 0 };
                    !remove
                });
            }
        }
        self.keys -= gone;
        self.bytes -= bytes;
        gone
    }

    /// The tokens held, in ring order.
    pub fn tokens(&self) -> impl Iterator<Item = Token> + '_ {
        self.tokens.iter().copied()
    }

    /// The sector holding the key hash `hash`.
    pub fn sector_for(&self, hash: u64) -> &Sector {
        self.sector(hash)
    }

    /// A sector by token.
    pub fn sector_of_token(&self, token: Token) -> Option<&Sector> {
        let i = self.tokens.binary_search(&token).ok()?;
        self.sectors.get(i)
    }

    /// Live keys.
    pub fn len(&self) -> usize {
        self.keys
    }

    /// Bytes of the live keys and their values (tombstones and overhead not
    /// counted).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether no live key is stored.
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// Reads a key's live value (a copy).
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.record(key)
            .and_then(Record::value)
            .map(Bytes::copy_from_slice)
    }

    /// A key's entry, tombstones included (a copy).
    pub fn entry(&self, key: &[u8]) -> Option<Entry> {
        self.entry_ref(key).map(|e| e.to_entry())
    }

    /// A key's entry, tombstones included, borrowed.
    pub fn entry_ref(&self, key: &[u8]) -> Option<EntryRef<'_>> {
        self.record(key).map(Record::view)
    }

    /// [`Engine::entry_ref`] of a key whose ring hash ([`hash64`]) the caller has.
    pub fn entry_ref_hashed(&self, hash: u64, key: &[u8]) -> Option<EntryRef<'_>> {
        self.record_hashed(hash, key).map(Record::view)
    }

    /// [`Engine::version`] of a key whose ring hash the caller has.
    pub fn version_hashed(&self, hash: u64, key: &[u8]) -> u64 {
        self.record_hashed(hash, key).map_or(0, Record::version)
    }

    /// A key's version (0 if the engine never saw it).
    pub fn version(&self, key: &[u8]) -> u64 {
        self.record(key).map_or(0, Record::version)
    }

    /// Whether a key has a live value.
    pub fn exists(&self, key: &[u8]) -> bool {
        self.record(key).is_some_and(Record::live)
    }

    /// Stores `value` (`None`: a tombstone) at `version` if that is newer than what
    /// is held. With `base`, the write was decided against the copy at version
    /// `base` and is refused if this engine holds anything newer than `base`.
    /// The key and value are copied, so they never pin a read buffer.
    pub fn apply(
        &mut self,
        key: &[u8],
        version: u64,
        value: Option<&[u8]>,
        base: Option<u64>,
    ) -> Applied {
        self.apply_hashed(hash64(key), key, version, value, base)
            .applied
    }

    /// [`Engine::apply`] of a key whose ring hash the caller has; also says
    /// what the write replaced (storing the version already held is a
    /// harmless repeat that changes nothing). One look-up of the key.
    pub fn apply_hashed(
        &mut self,
        hash: u64,
        key: &[u8],
        version: u64,
        value: Option<&[u8]>,
        base: Option<u64>,
    ) -> Change {
        self.apply_with(hash, key, value, base, |_| version)
    }

    /// Stores `value` (`None`: a tombstone) at the version `version_of` picks
    /// from the version held (0 if none), which must be above it: a lead
    /// replica's unconditional write, decided and stored in one look-up of
    /// the key. Returns the version and what it replaced.
    pub fn apply_next_hashed(
        &mut self,
        hash: u64,
        key: &[u8],
        value: Option<&[u8]>,
        version_of: impl FnOnce(u64) -> u64,
    ) -> (u64, Change) {
        let mut picked = 0;
        let change = self.apply_with(hash, key, value, None, |held| {
            picked = version_of(held);
            picked
        });
        (picked, change)
    }

    /// The one way an entry is written: finds the key once, asks `version_of`
    /// for the version to write given the one held (0 if none), and stores it
    /// unless the held one is the same or newer (or newer than `base`).
    fn apply_with(
        &mut self,
        hash: u64,
        key: &[u8],
        value: Option<&[u8]>,
        base: Option<u64>,
        version_of: impl FnOnce(u64) -> u64,
    ) -> Change {
        let s = self.sector_mut(hash);
        let live = value.is_some() as isize;
        let now_bytes = value.map_or(0, |v| key.len() + v.len());
        let mut was_bytes = 0;
        let (th, table) = s.table_mut(hash);
        let unchanged = |applied| Change {
            applied,
            replaced: None,
        };
        let replaced = match table.find_mut(th, |r| r.key() == key) {
            Some(r) => {
                let held = r.version();
                let version = version_of(held);
                if held == version && held != 0 {
                    return unchanged(Applied::Stored);
                }
                if held > version || base.is_some_and(|b| held > b) {
                    return unchanged(Applied::Newer(held));
                }
                was_bytes = r.live_bytes();
                let old = (held, r.live());
                r.set(version, value);
                Some(old)
            }
            None => {
                let version = version_of(0);
                table.insert_unique(th, Record::new(key, version, value), record_hash);
                None
            }
        };
        let was = replaced.is_some_and(|(_, live)| live) as isize;
        self.keys = (self.keys as isize + live - was) as usize;
        self.bytes = self.bytes + now_bytes - was_bytes;
        Change {
            applied: Applied::Stored,
            replaced: Some(replaced),
        }
    }
}

impl Engine {
    /// Forgets `key` if its entry is a tombstone at exactly `version`; returns
    /// whether it did. (Tombstone collection: see the node's sweep.)
    pub fn remove_tombstone(&mut self, key: &[u8], version: u64) -> bool {
        let hash = hash64(key);
        let (th, table) = self.sector_mut(hash).table_mut(hash);
        match table.find_entry(th, |r| r.key() == key) {
            Ok(e) if e.get().version() == version && !e.get().live() => {
                e.remove();
                true
            }
            _ => false,
        }
    }

    /// Puts back `prev` (`None`: no entry) if the key's entry is still the one at
    /// `version`: replays a restore record of an older log (nodes no longer
    /// write them: a conditional write is stored only at its commit). Returns
    /// whether it did.
    pub fn restore(&mut self, key: &[u8], version: u64, prev: Option<Entry>) -> bool {
        let hash = hash64(key);
        let s = self.sector_mut(hash);
        let Ok(e) = s
            .table_mut(hash)
            .1
            .find_entry(table_hash(hash), |r| r.key() == key)
        else {
            return false;
        };
        if e.get().version() != version {
            return false;
        }
        let was = e.get().live() as usize;
        let was_bytes = e.get().live_bytes();
        e.remove();
        let now = prev.as_ref().is_some_and(|e| e.value.is_some()) as usize;
        let now_bytes = (prev.as_ref())
            .and_then(|e| e.value.as_ref())
            .map_or(0, |v| key.len() + v.len());
        if let Some(p) = prev {
            s.insert(hash, Record::new(key, p.version, p.value.as_deref()));
        }
        self.keys = self.keys + now - was;
        self.bytes = self.bytes + now_bytes - was_bytes;
        true
    }
}

#[cfg(test)]
mod tests;
