//! `SCAN cursor [MATCH pattern] [COUNT n]` and `KEYS pattern`: the cluster's
//! keys, through the native SCAN op (see `storage::node::scan`), which lists
//! one token range of the ring after a key, served by the range's lead
//! replica. Both walk the ranges in the order [`Scan::of_range`] gives.
//!
//! SCAN sends one native SCAN per call, for the range at the cursor, asking
//! for `COUNT` keys; MATCH filters what comes back, so a call may return fewer
//! keys than `COUNT`, even none, as Redis's may. The cursor is a decimal
//! number, as Redis clients expect (`redis-cli --scan` parses it as one): `0`
//! starts and ends a walk; `1` up to 2^32 - 1 is "the start of range `I`";
//! a larger one names a place inside a range (a range and the last key
//! listed), kept by the connection: the last [`CURSORS_KEPT`] such places
//! are kept, and an older or foreign one is an error. While the ring does not
//! change, a walk returns every key that exists for all of it exactly once; a
//! ring change during a walk may miss or repeat keys (the ranges move), and
//! a cursor past the new ring's ranges is an error.
//!
//! KEYS asks every range at once, in parallel, for up to [`KEYS_MAX`] keys
//! each; when the cluster holds more than [`KEYS_MAX`] keys it answers an
//! error naming the bound (use SCAN), else the keys that match, range by
//! range. Caveat: the native SCAN replies carry the values too, so a KEYS on
//! a large cluster briefly holds up to one bounded reply per range.

use super::pattern::Pattern;
use super::session::err_reply;
use crate::protocol::resp;
use crate::storage::node::scan::{parse_reply, Scan};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// Keys a SCAN call asks for when it names no `COUNT` (Redis's default).
pub const DEFAULT_COUNT: usize = 10;
/// Most keys the cluster may hold for KEYS to answer.
pub const KEYS_MAX: usize = 10_000;
/// Places inside a range (cursors above 2^32) a connection keeps.
pub const CURSORS_KEPT: usize = 64;
/// The first cursor that names a kept place rather than a range's start.
const PLACE_BASE: u64 = 1 << 32;

/// The places inside ranges handed out as cursors on one connection.
#[derive(Debug, Default)]
pub(super) struct Cursors {
    issued: u64,
    kept: VecDeque<(u64, usize, Bytes)>,
}

impl Cursors {
    /// A cursor for "range `range`, after key `after`".
    fn place(&mut self, range: usize, after: Bytes) -> u64 {
        let id = PLACE_BASE + self.issued;
        self.issued += 1;
        self.kept.push_back((id, range, after));
        if self.kept.len() > CURSORS_KEPT {
            self.kept.pop_front();
        }
        id
    }

    /// The range and key after which cursor `c` resumes.
    fn find(&self, c: u64) -> Option<(usize, Bytes)> {
        if c < PLACE_BASE {
            return Some((c as usize, Bytes::new()));
        }
        let (_, range, after) = self.kept.iter().find(|(id, _, _)| *id == c)?;
        Some((*range, after.clone()))
    }
}

/// A SCAN or KEYS waiting for its native replies.
#[derive(Debug)]
pub(super) struct Listing {
    /// The range a SCAN lists; `None` for KEYS.
    range: Option<usize>,
    /// The ranges of the ring when the command came.
    ranges: usize,
    pattern: Pattern,
    keys: Vec<Bytes>,
    /// Keys seen (KEYS: before filtering, for the bound).
    seen: usize,
    /// A KEYS over its bound, or a malformed reply: the error to answer.
    error: Option<&'static str>,
    /// Where a SCAN that stopped inside its range resumes.
    resume: Option<(usize, Bytes)>,
    /// The cursor a SCAN answers.
    cursor: u64,
}

/// A SCAN command's listing and its one native request, or Redis's error.
pub(super) fn scan(
    args: &[Bytes],
    bounds: &[u64],
    cursors: &Cursors,
) -> Result<(Listing, Scan), Bytes> {
    let cursor = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| err_reply("ERR invalid cursor"))?;
    let mut pattern = Pattern::new(b"*");
    let mut count = DEFAULT_COUNT;
    let mut rest = args[2..].chunks(2);
    for opt in rest.by_ref() {
        let [name, value] = opt else {
            return Err(err_reply("ERR syntax error"));
        };
        if name.eq_ignore_ascii_case(b"MATCH") {
            pattern = Pattern::new(value);
        } else if name.eq_ignore_ascii_case(b"COUNT") {
            count = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| err_reply(super::session::NOT_AN_INTEGER))?
                .try_into()
                .ok()
                .filter(|&n: &usize| n >= 1)
                .ok_or_else(|| err_reply("ERR syntax error"))?;
        } else {
            return Err(err_reply("ERR syntax error"));
        }
    }
    let ranges = bounds.len().max(1);
    let (range, after) = cursors.find(cursor).ok_or_else(|| {
        err_reply(&format!(
            "ERR invalid cursor: not one of the last {CURSORS_KEPT} this connection was given; start again at 0"
        ))
    })?;
    if range >= ranges {
        return Err(err_reply(
            "ERR invalid cursor: past the ring's ranges (the ring changed); start again at 0",
        ));
    }
    let listing = Listing::new(Some(range), ranges, pattern);
    Ok((listing, Scan::of_range(bounds, range, after, count)))
}

/// A KEYS command's listing and its native requests, one per range.
pub(super) fn keys(pattern: &[u8], bounds: &[u64]) -> (Listing, Vec<Scan>) {
    let ranges = bounds.len().max(1);
    let asks = (0..ranges)
        .map(|r| Scan::of_range(bounds, r, Bytes::new(), KEYS_MAX))
        .collect();
    (Listing::new(None, ranges, Pattern::new(pattern)), asks)
}

impl Listing {
    fn new(range: Option<usize>, ranges: usize, pattern: Pattern) -> Listing {
        Listing {
            range,
            ranges,
            pattern,
            keys: Vec::new(),
            seen: 0,
            error: None,
            resume: None,
            cursor: 0,
        }
    }

    /// Takes one native SCAN reply's payload; returns the bytes of keys kept.
    pub(super) fn take(&mut self, payload: &Bytes) -> usize {
        let Some((records, more)) = parse_reply(payload) else {
            self.error = Some("ERR a node sent a malformed SCAN reply");
            return 0;
        };
        let last = records.last().map(|(k, _)| k.clone());
        let mut bytes = 0;
        self.seen += records.len();
        for (k, _) in records {
            if self.error.is_none() && self.pattern.matches(&k) {
                bytes += k.len();
                self.keys.push(k);
            }
        }
        match self.range {
            None if more || self.seen > KEYS_MAX => {
                self.error = Some(
                    "ERR KEYS answers only while the cluster holds at most 10000 keys; use SCAN",
                );
                self.keys = Vec::new();
            }
            None => {}
            Some(r) => match last.filter(|_| more) {
                Some(after) => self.resume = Some((r, after)),
                None if r + 1 < self.ranges => self.cursor = r as u64 + 1,
                None => self.cursor = 0,
            },
        }
        bytes
    }

    /// Turns a place to resume at into a cursor the connection keeps.
    pub(super) fn settle(&mut self, cursors: &mut Cursors) {
        if let Some((range, after)) = self.resume.take() {
            self.cursor = cursors.place(range, after);
        }
    }

    /// Appends the RESP reply.
    pub(super) fn render(&self, out: &mut BytesMut) {
        if let Some(e) = self.error {
            return resp::error(out, e.as_bytes());
        }
        if self.range.is_some() {
            resp::array(out, 2);
            resp::bulk(out, self.cursor.to_string().as_bytes());
        }
        resp::array(out, self.keys.len());
        for k in &self.keys {
            resp::bulk(out, k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::node::scan::put_record;

    fn reply(more: bool, keys: &[&str]) -> Bytes {
        let mut p = vec![if more { b'1' } else { b'0' }];
        for k in keys {
            put_record(&mut p, k.as_bytes(), b"v");
        }
        Bytes::from(p)
    }

    fn args(a: &[&str]) -> Vec<Bytes> {
        a.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    fn rendered(l: &Listing) -> String {
        let mut out = BytesMut::new();
        l.render(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn scan_cursors_walk_the_ranges() {
        let bounds = [10, 20, 30];
        let mut cursors = Cursors::default();
        let (mut l, ask) = scan(&args(&["SCAN", "0", "COUNT", "2"]), &bounds, &cursors).unwrap();
        assert_eq!((ask.lo, ask.hi, ask.count), (30, 10, 2));
        l.take(&reply(true, &["a", "b"]));
        l.settle(&mut cursors);
        assert_eq!(
            rendered(&l),
            format!(
                "*2\r\n${}\r\n{}\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n",
                10, PLACE_BASE
            )
        );
        let c = PLACE_BASE.to_string();
        let (mut l, ask) = scan(&args(&["SCAN", &c, "MATCH", "c*"]), &bounds, &cursors).unwrap();
        assert_eq!(
            (ask.lo, ask.hi, &ask.after[..], ask.count),
            (30, 10, &b"b"[..], 10)
        );
        l.take(&reply(false, &["c1", "d"]));
        l.settle(&mut cursors);
        assert_eq!(rendered(&l), "*2\r\n$1\r\n1\r\n*1\r\n$2\r\nc1\r\n");
        let (mut l, ask) = scan(&args(&["SCAN", "2"]), &bounds, &cursors).unwrap();
        assert_eq!((ask.lo, ask.hi), (20, 30));
        l.take(&reply(false, &[]));
        assert_eq!(rendered(&l), "*2\r\n$1\r\n0\r\n*0\r\n");
        for bad in [
            &["SCAN", "x"][..],
            &["SCAN", "3"],
            &["SCAN", "0", "COUNT", "0"],
            &["SCAN", "0", "MATCH"],
            &["SCAN", "0", "TYPE", "string"],
            &["SCAN", "4294967297"],
        ] {
            assert!(scan(&args(bad), &bounds, &cursors).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_is_bounded() {
        let (mut l, asks) = keys(b"a*", &[]);
        assert_eq!(asks.len(), 1);
        l.take(&reply(false, &["ab", "b", "a"]));
        assert_eq!(rendered(&l), "*2\r\n$2\r\nab\r\n$1\r\na\r\n");
        let (mut l, asks) = keys(b"*", &[1, 2]);
        assert_eq!(asks.len(), 2);
        l.take(&reply(true, &["x"]));
        l.take(&reply(false, &["y"]));
        assert!(rendered(&l).starts_with("-ERR KEYS answers only"));
        assert!(rendered(&l).contains(&KEYS_MAX.to_string()));
    }
}
