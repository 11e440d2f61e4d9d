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
//! Caveats: values carry no version yet, so two writers to one key are ordered only
//! by the node that applies them; deletes remove the entry outright.

use crate::protocol::{kv, Error, ErrorCode};
use crate::ring::{hash64, Token};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};

/// One token's keys.
#[derive(Default, Debug, Clone)]
pub struct Sector {
    map: HashMap<Bytes, Bytes>,
}

impl Sector {
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Iterates over the pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.map.iter()
    }
}

/// Outcome of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Done.
    Ok,
    /// CREATE found the key.
    Conflict,
    /// UPDATE did not find the key.
    NotFound,
}

/// All of a node's sectors.
#[derive(Debug, Clone)]
pub struct Engine {
    sectors: BTreeMap<Token, Sector>,
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

    /// Keys whose hash satisfies `pred`.
    pub fn keys_where(&self, mut pred: impl FnMut(u64) -> bool) -> Vec<Bytes> {
        self.sectors
            .values()
            .flat_map(|s| s.map.keys())
            .filter(|k| pred(hash64(k)))
            .cloned()
            .collect()
    }

    /// Removes every key whose hash satisfies `pred`; returns how many.
    pub fn remove_where(&mut self, mut pred: impl FnMut(u64) -> bool) -> usize {
        let before = self.keys;
        for s in self.sectors.values_mut() {
            s.map.retain(|k, _| !pred(hash64(k)));
        }
        self.keys = self.sectors.values().map(|s| s.map.len()).sum();
        before - self.keys
    }

    /// The tokens held, in ring order.
    pub fn tokens(&self) -> impl Iterator<Item = Token> + '_ {
        self.sectors.keys().copied()
    }

    /// A sector by token.
    pub fn sector_of_token(&self, token: Token) -> Option<&Sector> {
        self.sectors.get(&token)
    }

    /// Total keys.
    pub fn len(&self) -> usize {
        self.keys
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// Reads a key.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.sector(key).map.get(key).cloned()
    }

    /// Whether a key exists.
    pub fn exists(&self, key: &[u8]) -> bool {
        self.sector(key).map.contains_key(key)
    }

    /// Stores a value (copied), replacing any old one.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        let v = Bytes::copy_from_slice(value);
        let s = self.sector_mut(key);
        if let Some(slot) = s.map.get_mut(key) {
            *slot = v;
        } else {
            s.map.insert(Bytes::copy_from_slice(key), v);
            self.keys += 1;
        }
    }

    /// Removes a key; false if it was absent.
    pub fn delete(&mut self, key: &[u8]) -> bool {
        let removed = self.sector_mut(key).map.remove(key).is_some();
        if removed {
            self.keys -= 1;
        }
        removed
    }

    /// Stores only if absent.
    pub fn create(&mut self, key: &[u8], value: &[u8]) -> Written {
        if self.exists(key) {
            return Written::Conflict;
        }
        self.put(key, value);
        Written::Ok
    }

    /// Stores only if present.
    pub fn update(&mut self, key: &[u8], value: &[u8]) -> Written {
        match self.sector_mut(key).map.get_mut(key) {
            Some(slot) => {
                *slot = Bytes::copy_from_slice(value);
                Written::Ok
            }
            None => Written::NotFound,
        }
    }

    /// Adds `delta` to the decimal count at `key` (absent = 0); returns the new count.
    pub fn incr(&mut self, key: &[u8], delta: i64) -> Result<i64, Error> {
        let current = match self.sector(key).map.get(key) {
            None => 0,
            Some(v) => kv::parse_i64(v)
                .ok_or_else(|| Error::new(ErrorCode::NotInt, "value is not a decimal integer"))?,
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| Error::new(ErrorCode::NotInt, "increment would overflow"))?;
        self.put(key, next.to_string().as_bytes());
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semantics() {
        let mut e = Engine::new([10, 1 << 40, u64::MAX / 2]);
        assert_eq!(e.get(b"k"), None);
        e.put(b"k", b"v");
        assert_eq!(e.get(b"k").as_deref(), Some(&b"v"[..]));
        assert_eq!(e.create(b"k", b"x"), Written::Conflict);
        assert_eq!(e.update(b"nope", b"x"), Written::NotFound);
        assert_eq!(e.update(b"k", b""), Written::Ok);
        assert_eq!(
            e.get(b"k").as_deref(),
            Some(&b""[..]),
            "empty values are values"
        );
        assert!(e.exists(b"k"));
        assert_eq!(e.len(), 1);
        assert!(e.delete(b"k"));
        assert!(!e.delete(b"k"));
        assert_eq!(e.len(), 0);
    }

    #[test]
    fn incr_rules() {
        let mut e = Engine::default();
        assert_eq!(e.incr(b"c", 1), Ok(1));
        assert_eq!(e.incr(b"c", -5), Ok(-4));
        assert_eq!(e.get(b"c").as_deref(), Some(&b"-4"[..]));
        e.put(b"s", b"abc");
        assert_eq!(e.incr(b"s", 1).unwrap_err().code, ErrorCode::NotInt);
        e.put(b"m", i64::MAX.to_string().as_bytes());
        assert_eq!(e.incr(b"m", 1).unwrap_err().code, ErrorCode::NotInt);
        assert_eq!(
            e.get(b"m").as_deref(),
            Some(i64::MAX.to_string().as_bytes())
        );
        e.put(b"sp", b" 1");
        assert_eq!(e.incr(b"sp", 1).unwrap_err().code, ErrorCode::NotInt);
    }

    #[test]
    fn keys_land_in_their_token_sector_and_survive_retokening() {
        let mut e = Engine::default();
        for i in 0..1000u32 {
            e.put(format!("key{i}").as_bytes(), &i.to_be_bytes());
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
    }
}
