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
//! Memory layout. An entry is one heap allocation holding, in order, the version
//! (8 bytes), a varint of `key length << 1 | live`, the key and the value; the
//! sector's table (hashbrown's `HashTable`) holds only the 16-byte pointer to it.
//! So a key of 13 bytes with a 100-byte value costs one allocation of 122 bytes
//! plus a table slot, where a map of `Bytes` to a version and a `Bytes` cost two
//! allocations and 72 bytes a slot. The table is hashed with the key's ring hash
//! ([`hash64`], computed once to find the sector anyway) times an odd constant:
//! within a sector the ring hashes share their top bits, and the table takes its
//! 7-bit tags from the top, so they are mixed first. A read copies the value out
//! ([`Engine::get`] returns an owned `Bytes`); an overwrite of the same length
//! reuses the entry's allocation.
//!
//! Caveat: tombstones are kept (they cost a key and a version each).

use crate::ring::{hash64, Token};
use bytes::Bytes;
use hashbrown::HashTable;
use std::collections::BTreeMap;

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

/// Bytes before the varint in a record: the version.
const VERSION_LEN: usize = 8;

/// One entry in one allocation: version (little endian), varint of
/// `key length << 1 | live`, key, value.
#[derive(Clone, PartialEq, Eq)]
struct Record(Box<[u8]>);

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("key", &self.key())
            .field("version", &self.version())
            .field("value", &self.value())
            .finish()
    }
}

/// Appends `n` as a LEB128 varint.
fn put_varint(buf: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        buf.push(n as u8 | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

/// Bytes `n` takes as a varint.
fn varint_len(n: u64) -> usize {
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}

impl Record {
    fn new(key: &[u8], version: u64, value: Option<&[u8]>) -> Record {
        let tag = (key.len() as u64) << 1 | value.is_some() as u64;
        let len = VERSION_LEN + varint_len(tag) + key.len() + value.map_or(0, <[u8]>::len);
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&version.to_le_bytes());
        put_varint(&mut buf, tag);
        buf.extend_from_slice(key);
        buf.extend_from_slice(value.unwrap_or_default());
        debug_assert_eq!(buf.len(), len);
        Record(buf.into_boxed_slice())
    }

    /// Where the key starts, its length, and whether the value is live.
    #[inline]
    fn layout(&self) -> (usize, usize, bool) {
        let b = &self.0;
        let first = b[VERSION_LEN];
        let (tag, at) = if first < 0x80 {
            (first as u64, VERSION_LEN + 1)
        } else {
            let mut tag = 0u64;
            let mut shift = 0;
            let mut at = VERSION_LEN;
            loop {
                let byte = b[at];
                tag |= ((byte & 0x7f) as u64) << shift;
                at += 1;
                if byte < 0x80 {
                    break;
                }
                shift += 7;
            }
            (tag, at)
        };
        (at, (tag >> 1) as usize, tag & 1 == 1)
    }

    #[inline]
    fn version(&self) -> u64 {
        let mut v = [0u8; VERSION_LEN];
        v.copy_from_slice(&self.0[..VERSION_LEN]);
        u64::from_le_bytes(v)
    }

    #[inline]
    fn key(&self) -> &[u8] {
        let (at, klen, _) = self.layout();
        &self.0[at..at + klen]
    }

    #[inline]
    fn live(&self) -> bool {
        self.layout().2
    }

    #[inline]
    fn value(&self) -> Option<&[u8]> {
        let (at, klen, live) = self.layout();
        live.then(|| &self.0[at + klen..])
    }

    fn view(&self) -> EntryRef<'_> {
        let (at, klen, live) = self.layout();
        EntryRef {
            key: &self.0[at..at + klen],
            version: self.version(),
            value: live.then(|| &self.0[at + klen..]),
        }
    }

    /// Replaces version and value, in place when the size stays the same.
    fn set(&mut self, version: u64, value: Option<&[u8]>) {
        let (at, klen, _) = self.layout();
        let tag = (klen as u64) << 1 | value.is_some() as u64;
        let vlen = value.map_or(0, <[u8]>::len);
        if self.0.len() - at - klen == vlen && at == VERSION_LEN + varint_len(tag) {
            self.0[..VERSION_LEN].copy_from_slice(&version.to_le_bytes());
            let mut header = Vec::with_capacity(at - VERSION_LEN);
            put_varint(&mut header, tag);
            self.0[VERSION_LEN..at].copy_from_slice(&header);
            self.0[at + klen..].copy_from_slice(value.unwrap_or_default());
        } else {
            let key = &self.0[at..at + klen];
            *self = Record::new(key, version, value);
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

/// Bytes of a live record's key and value; 0 for a tombstone.
fn live_bytes(r: &Record) -> usize {
    r.value().map_or(0, |v| r.key().len() + v.len())
}

fn record_hash(r: &Record) -> u64 {
    table_hash(hash64(r.key()))
}

/// One token's keys.
#[derive(Default, Debug, Clone)]
pub struct Sector {
    table: HashTable<Record>,
}

impl Sector {
    /// Number of entries, tombstones included.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Bytes the sector's table takes (its buckets and control bytes), not
    /// counting the entries it points to.
    pub fn table_bytes(&self) -> usize {
        // hashbrown keeps 7/8 of its power-of-two buckets usable (all of
        // them below 8), plus a control byte per bucket and one group's
        // worth more.
        let cap = self.table.capacity();
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
    }

    /// Iterates over the entries, tombstones included.
    pub fn iter(&self) -> impl Iterator<Item = EntryRef<'_>> {
        self.table.iter().map(Record::view)
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<&Record> {
        self.table.find(table_hash(hash), |r| r.key() == key)
    }

    fn insert(&mut self, hash: u64, r: Record) {
        self.table.insert_unique(table_hash(hash), r, record_hash);
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

/// All of a node's sectors.
#[derive(Debug, Clone)]
pub struct Engine {
    sectors: BTreeMap<Token, Sector>,
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
        let mut sectors: BTreeMap<Token, Sector> =
            tokens.into_iter().map(|t| (t, Sector::default())).collect();
        if sectors.is_empty() {
            sectors.insert(Token::MAX, Sector::default());
        }
        Engine {
            sectors,
            keys: 0,
            bytes: 0,
        }
    }

    /// The token whose sector holds `hash`.
    fn token_of(&self, hash: u64) -> Token {
        match self.sectors.range(hash..).next() {
            Some((t, _)) => *t,
            None => *self.sectors.keys().next().expect("at least one sector"),
        }
    }

    fn sector(&self, hash: u64) -> &Sector {
        &self.sectors[&self.token_of(hash)]
    }

    fn sector_mut(&mut self, hash: u64) -> &mut Sector {
        let t = self.token_of(hash);
        self.sectors.get_mut(&t).expect("token_of returns a sector")
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
        self.sectors = fresh.sectors;
        for (_, sector) in old {
            for r in sector.table {
                let hash = hash64(r.key());
                self.sector_mut(hash).insert(hash, r);
            }
        }
    }

    /// Keys (tombstones included) whose hash satisfies `pred`.
    pub fn keys_where(&self, mut pred: impl FnMut(u64) -> bool) -> Vec<Bytes> {
        self.sectors
            .values()
            .flat_map(|s| s.table.iter())
            .map(Record::key)
            .filter(|k| pred(hash64(k)))
            .map(Bytes::copy_from_slice)
            .collect()
    }

    /// Removes every entry whose hash satisfies `pred`; returns how many live keys
    /// went.
    pub fn remove_where(&mut self, mut pred: impl FnMut(u64) -> bool) -> usize {
        let (mut gone, mut bytes) = (0, 0);
        for s in self.sectors.values_mut() {
            s.table.retain(|r| {
                let remove = pred(hash64(r.key()));
                gone += (remove && r.live()) as usize;
                bytes += if remove { live_bytes(r) } else { 0 };
                !remove
            });
        }
        self.keys -= gone;
        self.bytes -= bytes;
        gone
    }

    /// The tokens held, in ring order.
    pub fn tokens(&self) -> impl Iterator<Item = Token> + '_ {
        self.sectors.keys().copied()
    }

    /// The sector holding the key hash `hash`.
    pub fn sector_for(&self, hash: u64) -> &Sector {
        self.sector(hash)
    }

    /// A sector by token.
    pub fn sector_of_token(&self, token: Token) -> Option<&Sector> {
        self.sectors.get(&token)
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
        self.apply_hashed(hash64(key), key, version, value, base).0
    }

    /// [`Engine::apply`] of a key whose ring hash the caller has; also says
    /// whether the entry changed (storing the version already held is a
    /// harmless repeat that changes nothing).
    pub fn apply_hashed(
        &mut self,
        hash: u64,
        key: &[u8],
        version: u64,
        value: Option<&[u8]>,
        base: Option<u64>,
    ) -> (Applied, bool) {
        let s = self.sector_mut(hash);
        let live = value.is_some() as isize;
        let now_bytes = value.map_or(0, |v| key.len() + v.len());
        let mut was_bytes = 0;
        let was = match s.table.find_mut(table_hash(hash), |r| r.key() == key) {
            Some(r) => {
                let held = r.version();
                if held == version && held != 0 {
                    return (Applied::Stored, false);
                }
                if held > version || base.is_some_and(|b| held > b) {
                    return (Applied::Newer(held), false);
                }
                let was = r.live() as isize;
                was_bytes = live_bytes(r);
                r.set(version, value);
                was
            }
            None => {
                s.insert(hash, Record::new(key, version, value));
                0
            }
        };
        self.keys = (self.keys as isize + live - was) as usize;
        self.bytes = self.bytes + now_bytes - was_bytes;
        (Applied::Stored, true)
    }
}

impl Engine {
    /// Forgets `key` if its entry is a tombstone at exactly `version`; returns
    /// whether it did. (Tombstone collection: see the node's sweep.)
    pub fn remove_tombstone(&mut self, key: &[u8], version: u64) -> bool {
        let hash = hash64(key);
        let s = self.sector_mut(hash);
        match s.table.find_entry(table_hash(hash), |r| r.key() == key) {
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
        let Ok(e) = s.table.find_entry(table_hash(hash), |r| r.key() == key) else {
            return false;
        };
        if e.get().version() != version {
            return false;
        }
        let was = e.get().live() as usize;
        let was_bytes = live_bytes(e.get());
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
mod tests {
    use super::*;

    #[test]
    fn bytes_follow_writes_deletes_undos_and_removals() {
        let mut e = Engine::default();
        put(&mut e, b"k", b"value", 1);
        put(&mut e, b"k2", b"v", 1);
        assert_eq!(e.bytes(), 6 + 3);
        put(&mut e, b"k", b"vv", 2);
        assert_eq!(e.bytes(), 3 + 3);
        let prev = e.entry(b"k");
        assert_eq!(e.apply(b"k", 3, None, None), Applied::Stored);
        assert_eq!(e.bytes(), 3, "a tombstone holds no value");
        assert!(e.restore(b"k", 3, prev));
        assert_eq!(e.bytes(), 6);
        assert_eq!(e.remove_where(|_| true), 2);
        assert_eq!(e.bytes(), 0);
    }

    fn put(e: &mut Engine, k: &[u8], v: &[u8], version: u64) {
        assert_eq!(e.apply(k, version, Some(v), None), Applied::Stored);
    }

    #[test]
    fn tombstones_go_only_at_their_version_and_refused_writes_are_undone() {
        let mut e = Engine::default();
        put(&mut e, b"k", b"v", 5);
        // Not a tombstone: stays.
        assert!(!e.remove_tombstone(b"k", 5));
        assert_eq!(e.apply(b"k", 6, None, None), Applied::Stored);
        assert!(!e.remove_tombstone(b"k", 5), "another version");
        assert!(e.remove_tombstone(b"k", 6));
        assert_eq!(e.entry(b"k"), None);
        assert!(!e.remove_tombstone(b"k", 6), "already gone");

        // Undo puts the previous entry back, only over the write it undoes.
        put(&mut e, b"a", b"old", 10);
        let prev = e.entry(b"a");
        put(&mut e, b"a", b"refused", 12);
        e.restore(b"a", 11, None);
        assert_eq!(e.get(b"a").as_deref(), Some(&b"refused"[..]));
        e.restore(b"a", 12, prev);
        assert_eq!(e.get(b"a").as_deref(), Some(&b"old"[..]));
        assert_eq!(e.version(b"a"), 10);
        assert_eq!(e.len(), 1);
        // A key that did not exist before its refused write goes away.
        put(&mut e, b"new", b"x", 20);
        e.restore(b"new", 20, None);
        assert_eq!((e.entry(b"new"), e.len()), (None, 1));
    }

    #[test]
    fn higher_versions_win_and_tombstones_stay() {
        let mut e = Engine::new([10, 1 << 40, u64::MAX / 2]);
        assert_eq!((e.get(b"k"), e.version(b"k")), (None, 0));
        put(&mut e, b"k", b"v1", 5);
        assert_eq!(e.apply(b"k", 4, Some(b"old"), None), Applied::Newer(5));
        assert_eq!(
            e.apply(b"k", 5, Some(b"v1"), None),
            Applied::Stored,
            "repeat"
        );
        assert_eq!(e.get(b"k").as_deref(), Some(&b"v1"[..]));
        put(&mut e, b"k", b"", 9);
        assert_eq!(e.get(b"k").as_deref(), Some(&b""[..]), "empty is a value");
        assert_eq!(e.len(), 1);
        // A delete leaves a tombstone that keeps older copies out.
        assert_eq!(e.apply(b"k", 12, None, None), Applied::Stored);
        assert!(!e.exists(b"k"));
        assert_eq!(e.len(), 0);
        assert_eq!(e.entry(b"k").unwrap().version, 12);
        assert_eq!(e.apply(b"k", 11, Some(b"zombie"), None), Applied::Newer(12));
        assert_eq!(e.get(b"k"), None);
        put(&mut e, b"k", b"back", 13);
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn conditional_writes_need_their_base() {
        let mut e = Engine::default();
        put(&mut e, b"c", b"1", 10);
        // Decided against version 10: fine while 10 is the newest held.
        assert_eq!(e.apply(b"c", 20, Some(b"2"), Some(10)), Applied::Stored);
        // Decided against 10, but 20 is here now: refused.
        assert_eq!(e.apply(b"c", 30, Some(b"2"), Some(10)), Applied::Newer(20));
        // A replica that is behind the base accepts.
        assert_eq!(e.apply(b"new", 30, Some(b"x"), Some(25)), Applied::Stored);
    }

    #[test]
    fn keys_land_in_their_token_sector_and_survive_retokening() {
        let mut e = Engine::default();
        for i in 0..1000u32 {
            put(&mut e, format!("key{i}").as_bytes(), &i.to_be_bytes(), 1);
        }
        let tokens: Vec<u64> = (1..=16u64).map(|i| i * (u64::MAX / 16)).collect();
        e.set_tokens(tokens.clone());
        assert_eq!(e.tokens().collect::<Vec<_>>(), tokens);
        let mut total = 0;
        let mut prev = 0u64;
        for &t in &tokens {
            let s = e.sector_of_token(t).unwrap();
            for entry in s.iter() {
                let h = hash64(entry.key);
                // Token t owns (prev, t]; the first token also takes the wrap-around.
                assert!(
                    h <= t && (h > prev || t == tokens[0])
                        || h > *tokens.last().unwrap() && t == tokens[0]
                );
            }
            total += s.len();
            prev = t;
        }
        assert_eq!(total, 1000);
        for i in 0..1000u32 {
            assert_eq!(
                e.get(format!("key{i}").as_bytes()).as_deref(),
                Some(&i.to_be_bytes()[..])
            );
        }
        assert_eq!(e.remove_where(|_| true), 1000);
        assert!(e.is_empty());
    }

    #[test]
    fn varints_round_trip() {
        for n in [0u64, 1, 127, 128, 300, 16_383, 16_384, 1 << 40, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, n);
            assert_eq!(buf.len(), varint_len(n), "{n}");
        }
        // Keys whose tagged length needs one, two and three varint bytes.
        let mut e = Engine::default();
        for len in [0usize, 1, 63, 64, 200, 8191, 8192, 65_535] {
            let key = vec![b'k'; len];
            let value = vec![len as u8; len % 7];
            put(&mut e, &key, &value, 3);
            let got = e.entry_ref(&key).unwrap();
            assert_eq!((got.key, got.version), (&key[..], 3));
            assert_eq!(got.value, Some(&value[..]));
            assert_eq!(e.apply(&key, 4, None, None), Applied::Stored);
            assert_eq!(
                e.entry(&key).unwrap(),
                Entry {
                    version: 4,
                    value: None
                }
            );
        }
        assert_eq!(e.len(), 0);
    }

    /// What the engine did before it packed entries: a map of key to entry.
    #[derive(Default)]
    struct Model {
        map: std::collections::HashMap<Vec<u8>, (u64, Option<Vec<u8>>)>,
    }

    impl Model {
        fn apply(
            &mut self,
            k: &[u8],
            version: u64,
            value: Option<&[u8]>,
            base: Option<u64>,
        ) -> Applied {
            let held = self.map.get(k).map_or(0, |e| e.0);
            if held == version && held != 0 {
                return Applied::Stored;
            }
            if held > version || base.is_some_and(|b| held > b) {
                return Applied::Newer(held);
            }
            self.map
                .insert(k.to_vec(), (version, value.map(<[u8]>::to_vec)));
            Applied::Stored
        }

        fn live(&self) -> usize {
            self.map.values().filter(|e| e.1.is_some()).count()
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Apply(u8, u64, Option<Vec<u8>>, Option<u64>),
        Retoken(Vec<u64>),
        RemoveBelow(u64),
    }

    fn op_strategy() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let value = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40));
        prop_oneof![
            20 => (any::<u8>(), 0u64..40, value, proptest::option::of(0u64..40))
                .prop_map(|(k, v, val, b)| Op::Apply(k, v, val, b)),
            1 => proptest::collection::vec(any::<u64>(), 0..6).prop_map(Op::Retoken),
            1 => any::<u64>().prop_map(Op::RemoveBelow),
        ]
    }

    /// Key `i` of a small set, with lengths on both sides of the one-byte varint.
    fn model_key(i: u8) -> Vec<u8> {
        let len = [1usize, 5, 13, 63, 64, 130][i as usize % 6];
        let mut k = vec![b'a' + i % 26; len];
        k[0] = i;
        k
    }

    proptest::proptest! {
        #[test]
        fn behaves_like_a_map_of_entries(ops in proptest::collection::vec(op_strategy(), 1..200)) {
            let mut e = Engine::new([u64::MAX / 3, u64::MAX / 3 * 2]);
            let mut m = Model::default();
            for op in ops {
                match op {
                    Op::Apply(k, v, val, base) => {
                        let k = model_key(k % 48);
                        proptest::prop_assert_eq!(
                            e.apply(&k, v, val.as_deref(), base),
                            m.apply(&k, v, val.as_deref(), base)
                        );
                    }
                    Op::Retoken(tokens) => e.set_tokens(tokens),
                    Op::RemoveBelow(cut) => {
                        let before = m.live();
                        m.map.retain(|k, _| hash64(k) >= cut);
                        proptest::prop_assert_eq!(e.remove_where(|h| h < cut), before - m.live());
                    }
                }
                proptest::prop_assert_eq!(e.len(), m.live());
            }
            for i in 0..48u8 {
                let k = model_key(i);
                let want = m.map.get(&k);
                proptest::prop_assert_eq!(e.version(&k), want.map_or(0, |w| w.0));
                proptest::prop_assert_eq!(e.exists(&k), want.is_some_and(|w| w.1.is_some()));
                proptest::prop_assert_eq!(
                    e.get(&k).map(|b| b.to_vec()),
                    want.and_then(|w| w.1.clone())
                );
                proptest::prop_assert_eq!(
                    e.entry(&k),
                    want.map(|w| Entry { version: w.0, value: w.1.clone().map(Bytes::from) })
                );
            }
            let mut keys: Vec<Vec<u8>> = e.keys_where(|_| true).into_iter().map(|k| k.to_vec()).collect();
            keys.sort();
            let mut want: Vec<Vec<u8>> = m.map.keys().cloned().collect();
            want.sort();
            proptest::prop_assert_eq!(&keys, &want);
            let held: usize = e.tokens().map(|t| e.sector_of_token(t).unwrap().len()).sum();
            proptest::prop_assert_eq!(held, m.map.len());
        }
    }
}
