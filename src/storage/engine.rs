//! The engine: a node's data, kept in sectors, one per ring token it holds.
//!
//! A token owns the key hashes in (previous token, token]; the sector of a token is
//! a hash map from key to value for exactly those keys, so a token moves between
//! nodes as a unit (a sector is detached, streamed and attached). Keys and values
//! are copied once on the way in, so a stored value never pins the read buffer its
//! request arrived in.
//!
//! Before the node knows the ring it holds one sector, at token `u64::MAX`, that
//! covers the whole hash space; [`Engine::set_tokens`] re-buckets keys when the
//! token set changes.
//!
//! Every entry carries a version (a u64 from the node's hybrid logical clock, see
//! [`Hlc`]) and a delete leaves a tombstone: an entry with a version and no value,
//! so an older copy of the key arriving later (a move, a late replica write) cannot
//! bring it back. [`Engine::apply`] is the one way data changes: a higher version
//! wins, an equal one is a harmless repeat, a lower one is refused. What CREATE,
//! UPDATE and INCR mean is decided apart from storage, by [`decide`], so a node can
//! decide against the newest copy it read from any replica.
//!
//! Caveat: tombstones are kept (they cost a key and a version each).

use crate::protocol::{kv, op, Error, ErrorCode, Frame};
use crate::ring::{hash64, Token};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};

/// A stored version and value; `value: None` is a tombstone (a delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Orders writes to one key: higher wins.
    pub version: u64,
    /// The value, or `None` once deleted.
    pub value: Option<Bytes>,
}

/// One token's keys.
#[derive(Default, Debug, Clone)]
pub struct Sector {
    map: HashMap<Bytes, Entry>,
}

impl Sector {
    /// Number of entries, tombstones included.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Iterates over the entries, tombstones included.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Entry)> {
        self.map.iter()
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
        Engine { sectors, keys: 0 }
    }

    /// The token whose sector holds `hash`.
    fn token_of(&self, hash: u64) -> Token {
        match self.sectors.range(hash..).next() {
            Some((t, _)) => *t,
            None => *self.sectors.keys().next().expect("at least one sector"),
        }
    }

    fn sector(&self, key: &[u8]) -> &Sector {
        &self.sectors[&self.token_of(hash64(key))]
    }

    fn sector_mut(&mut self, key: &[u8]) -> &mut Sector {
        let t = self.token_of(hash64(key));
        self.sectors.get_mut(&t).expect("token_of returns a sector")
    }

    /// Replaces the token set, moving every key to the sector that now covers it.
    pub fn set_tokens(&mut self, tokens: impl IntoIterator<Item = Token>) {
        let old = std::mem::take(&mut self.sectors);
        let fresh = Engine::new(tokens);
        self.sectors = fresh.sectors;
        for (_, sector) in old {
            for (k, v) in sector.map {
                self.sector_mut(&k).map.insert(k, v);
            }
        }
    }

    /// Keys (tombstones included) whose hash satisfies `pred`.
    pub fn keys_where(&self, mut pred: impl FnMut(u64) -> bool) -> Vec<Bytes> {
        self.sectors
            .values()
            .flat_map(|s| s.map.keys())
            .filter(|k| pred(hash64(k)))
            .cloned()
            .collect()
    }

    /// Removes every entry whose hash satisfies `pred`; returns how many live keys
    /// went.
    pub fn remove_where(&mut self, mut pred: impl FnMut(u64) -> bool) -> usize {
        let before = self.keys;
        for s in self.sectors.values_mut() {
            s.map.retain(|k, _| !pred(hash64(k)));
        }
        self.recount();
        before - self.keys
    }

    fn recount(&mut self) {
        self.keys = self
            .sectors
            .values()
            .flat_map(|s| s.map.values())
            .filter(|e| e.value.is_some())
            .count();
    }

    /// The tokens held, in ring order.
    pub fn tokens(&self) -> impl Iterator<Item = Token> + '_ {
        self.sectors.keys().copied()
    }

    /// A sector by token.
    pub fn sector_of_token(&self, token: Token) -> Option<&Sector> {
        self.sectors.get(&token)
    }

    /// Live keys.
    pub fn len(&self) -> usize {
        self.keys
    }

    /// Whether no live key is stored.
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// Reads a key's live value.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.entry(key).and_then(|e| e.value.clone())
    }

    /// A key's entry, tombstones included.
    pub fn entry(&self, key: &[u8]) -> Option<&Entry> {
        self.sector(key).map.get(key)
    }

    /// A key's version (0 if the engine never saw it).
    pub fn version(&self, key: &[u8]) -> u64 {
        self.entry(key).map_or(0, |e| e.version)
    }

    /// Whether a key has a live value.
    pub fn exists(&self, key: &[u8]) -> bool {
        self.entry(key).is_some_and(|e| e.value.is_some())
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
        let held = self.version(key);
        if held == version && held != 0 {
            return Applied::Stored;
        }
        if held > version || base.is_some_and(|b| held > b) {
            return Applied::Newer(held);
        }
        let entry = Entry {
            version,
            value: value.map(Bytes::copy_from_slice),
        };
        let live = entry.value.is_some() as isize;
        let s = self.sector_mut(key);
        let was = match s.map.get_mut(key) {
            Some(slot) => {
                let was = slot.value.is_some() as isize;
                *slot = entry;
                was
            }
            None => {
                s.map.insert(Bytes::copy_from_slice(key), entry);
                0
            }
        };
        self.keys = (self.keys as isize + live - was) as usize;
        Applied::Stored
    }
}

impl Engine {
    /// Forgets `key` if its entry is a tombstone at exactly `version`; returns
    /// whether it did. (Tombstone collection: see the node's sweep.)
    pub fn remove_tombstone(&mut self, key: &[u8], version: u64) -> bool {
        let s = self.sector_mut(key);
        let gone = s
            .map
            .get(key)
            .is_some_and(|e| e.version == version && e.value.is_none());
        if gone {
            s.map.remove(key);
        }
        gone
    }

    /// Puts back `prev` (`None`: no entry) if the key's entry is still the one at
    /// `version`: undoes a write that its replicas refused.
    pub fn restore(&mut self, key: &[u8], version: u64, prev: Option<Entry>) {
        if self.version(key) != version {
            return;
        }
        let s = self.sector_mut(key);
        let was = s.map.remove(key).is_some_and(|e| e.value.is_some()) as usize;
        let now = prev.as_ref().is_some_and(|e| e.value.is_some()) as usize;
        if let Some(e) = prev {
            s.map.insert(Bytes::copy_from_slice(key), e);
        }
        self.keys = self.keys + now - was;
    }
}

/// What a key-value request does, decided against the key's current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The reply op (`OK`, `VALUE`, `NOT_FOUND`, `CONFLICT`, `PONG`).
    pub reply: u8,
    /// The reply payload.
    pub payload: Bytes,
    /// The write to make, if any: `Some(None)` deletes.
    pub write: Option<Option<Bytes>>,
}

/// Decides a key-value request (`PUT`, `GET`, `DELETE`, `EXISTS`, `CREATE`,
/// `UPDATE`, `INCR`) against `current`, the newest live value of its key. Pure: the
/// caller applies the write with a new version. Errors are the protocol's (`BADKEY`,
/// `NOTINT`); an op that is not a key-value request is `BADOP`.
pub fn decide(f: &Frame, current: Option<&Bytes>) -> Result<Decision, Error> {
    let done = |reply: u8, payload: Bytes, write: Option<Option<Bytes>>| {
        Ok(Decision {
            reply,
            payload,
            write,
        })
    };
    let found = |yes: bool| if yes { op::OK } else { op::NOT_FOUND };
    match f.op {
        op::GET => match current {
            Some(v) => done(op::VALUE, v.clone(), None),
            None => done(op::NOT_FOUND, Bytes::new(), None),
        },
        op::EXISTS => done(found(current.is_some()), Bytes::new(), None),
        op::PUT => {
            let (_, v) = kv::split_kv(&f.payload)?;
            done(op::OK, Bytes::new(), Some(Some(v)))
        }
        op::DELETE => match current {
            Some(_) => done(op::OK, Bytes::new(), Some(None)),
            None => done(op::NOT_FOUND, Bytes::new(), None),
        },
        op::CREATE => {
            let (_, v) = kv::split_kv(&f.payload)?;
            match current {
                Some(_) => done(op::CONFLICT, Bytes::new(), None),
                None => done(op::OK, Bytes::new(), Some(Some(v))),
            }
        }
        op::UPDATE => {
            let (_, v) = kv::split_kv(&f.payload)?;
            match current {
                Some(_) => done(op::OK, Bytes::new(), Some(Some(v))),
                None => done(op::NOT_FOUND, Bytes::new(), None),
            }
        }
        op::INCR => {
            let (_, delta) = kv::split_incr(&f.payload)?;
            let count = match current {
                None => 0,
                Some(v) => kv::parse_i64(v).ok_or_else(|| {
                    Error::new(ErrorCode::NotInt, "value is not a decimal integer")
                })?,
            };
            let next = count
                .checked_add(delta)
                .ok_or_else(|| Error::new(ErrorCode::NotInt, "increment would overflow"))?;
            let text = Bytes::from(next.to_string());
            done(op::VALUE, text.clone(), Some(Some(text)))
        }
        other => Err(Error::bad_op(other, false, "a storage node")),
    }
}

/// A hybrid logical clock: versions are `milliseconds << 16 | counter`, never
/// repeat on one node, grow with the wall clock, and jump past every version the
/// node has seen, so a write ordered after another by causality gets a higher
/// version even across nodes whose clocks differ.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hlc {
    last: u64,
}

impl Hlc {
    /// A version above `floor`, above every earlier one, and at least the wall
    /// clock `wall_ms`.
    pub fn next(&mut self, wall_ms: u64, floor: u64) -> u64 {
        let v = (wall_ms << 16).max(self.last + 1).max(floor + 1);
        self.last = v;
        v
    }

    /// Remembers a version seen elsewhere.
    pub fn observe(&mut self, version: u64) {
        self.last = self.last.max(version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(e: &mut Engine, k: &[u8], v: &[u8], version: u64) {
        assert_eq!(e.apply(k, version, Some(v), None), Applied::Stored);
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

    fn frame(op: u8, payload: &[u8]) -> Frame {
        Frame::new(op, 1, 0, Bytes::copy_from_slice(payload))
    }

    #[test]
    fn decisions() {
        let v = Bytes::from_static(b"v");
        let d = |o, p: &[u8], cur: Option<&Bytes>| decide(&frame(o, p), cur).unwrap();
        assert_eq!(d(op::GET, b"k", Some(&v)).payload, v);
        assert_eq!(d(op::GET, b"k", None).reply, op::NOT_FOUND);
        assert_eq!(d(op::EXISTS, b"k", Some(&v)).reply, op::OK);
        let put = d(op::PUT, b"1 kx", None);
        assert_eq!(
            (put.reply, put.write),
            (op::OK, Some(Some(Bytes::from("x"))))
        );
        assert_eq!(d(op::DELETE, b"k", Some(&v)).write, Some(None));
        assert_eq!(d(op::DELETE, b"k", None).reply, op::NOT_FOUND);
        assert_eq!(d(op::CREATE, b"1 kx", Some(&v)).reply, op::CONFLICT);
        assert_eq!(d(op::CREATE, b"1 kx", Some(&v)).write, None);
        assert_eq!(d(op::UPDATE, b"1 kx", None).reply, op::NOT_FOUND);
        assert_eq!(
            d(op::UPDATE, b"1 k", Some(&v)).write,
            Some(Some(Bytes::new()))
        );
        let n = Bytes::from_static(b"-4");
        let inc = d(op::INCR, b"1 k 5", Some(&n));
        assert_eq!((inc.reply, &inc.payload[..]), (op::VALUE, &b"1"[..]));
        assert_eq!(d(op::INCR, b"1 k", None).payload, Bytes::from("1"));
        let code = |p: &[u8], cur: &[u8]| {
            decide(&frame(op::INCR, p), Some(&Bytes::copy_from_slice(cur)))
                .unwrap_err()
                .code
        };
        assert_eq!(code(b"1 k", b"abc"), ErrorCode::NotInt);
        assert_eq!(code(b"1 k", b" 1"), ErrorCode::NotInt);
        assert_eq!(
            code(b"1 k 1", i64::MAX.to_string().as_bytes()),
            ErrorCode::NotInt
        );
        assert_eq!(
            decide(&frame(op::PUT, b"9 k"), None).unwrap_err().code,
            ErrorCode::BadKey
        );
    }

    #[test]
    fn the_clock_never_repeats_and_passes_what_it_saw() {
        let mut c = Hlc::default();
        let a = c.next(1000, 0);
        assert_eq!(a, 1000 << 16);
        let b = c.next(1000, 0);
        assert!(b > a);
        let back_in_time = c.next(999, 0);
        assert!(back_in_time > b);
        c.observe(5000 << 16);
        assert!(c.next(1001, 0) > 5000 << 16);
        assert!(c.next(0, u64::MAX >> 1) > u64::MAX >> 1);
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
            for (k, _) in s.iter() {
                let h = hash64(k);
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
}
