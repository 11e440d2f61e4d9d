//! `SCAN cursor [MATCH pattern] [COUNT n]` and `KEYS pattern`: the cluster's
//! keys, through the native SCAN op (see `storage::node::scan`), which lists
//! the keys in the order of (ring hash, key) from a cursor that is a point of
//! the hash space, served by a replica that holds the cursor's range.
//!
//! SCAN sends one native SCAN per call, at the cursor, asking for `COUNT`
//! keys; MATCH filters what comes back, so a call may return fewer keys than
//! `COUNT`, even none, as Redis's may. The cursor is the native one, a decimal
//! `u64` as Redis clients expect (`redis-cli --scan` parses it as a number):
//! `0` starts and ends a walk, any other value is the hash the walk resumes
//! at, so a cursor is valid on any connection and any node, and it does not
//! depend on the ring: a walk returns every key that exists for all of it
//! exactly once even while nodes join and leave. When the nodes disagree on
//! the ring for a moment (the native SCAN is answered `STALE`), the call
//! answers the same cursor and no keys, and the client's next call retries;
//! at cursor 0, which would read as the end, it answers `-TRYAGAIN` instead.
//! Keys written or deleted during a walk may or may not appear.
//!
//! KEYS asks every range of the node's ring at once, in parallel, for up to
//! [`KEYS_MAX`] keys each (the range wrapping past the top as two pieces);
//! when the cluster holds more than [`KEYS_MAX`] keys it answers an error
//! naming the bound (use SCAN), else the keys that match, in hash order. A
//! range that another node's ring cuts short (a ring change under way) makes
//! it answer an error asking to retry. Caveat: the native SCAN replies carry
//! the values too, so a KEYS on a large cluster briefly holds up to one
//! bounded reply per range.

use super::pattern::Pattern;
use super::session::err_reply;
use crate::protocol::{op, resp};
use crate::storage::node::scan::{cursor_after, parse_reply, Scan};
use bytes::{Bytes, BytesMut};

/// Keys a SCAN call asks for when it names no `COUNT` (Redis's default).
pub const DEFAULT_COUNT: usize = 10;
/// Most keys the cluster may hold for KEYS to answer.
pub const KEYS_MAX: usize = 10_000;

/// The error of a KEYS over its bound.
const KEYS_TOO_MANY: &str =
    "ERR KEYS answers only while the cluster holds at most 10000 keys; use SCAN";

/// A SCAN or KEYS waiting for its native replies.
#[derive(Debug)]
pub(super) struct Listing {
    /// A SCAN's cursor (answered again after `STALE`); `None` for KEYS.
    scan: Option<u64>,
    /// KEYS: the pieces of the hash space asked, by their first hash, with
    /// their last, and the keys each answered (kept apart to answer in order).
    pieces: Vec<(u64, u64, Vec<Bytes>)>,
    pattern: Pattern,
    keys: Vec<Bytes>,
    /// Keys seen (KEYS: before filtering, for the bound).
    seen: usize,
    /// A KEYS over its bound, or a malformed reply: the error to answer.
    error: Option<&'static str>,
    /// The cursor a SCAN answers.
    cursor: u64,
    /// KEYS: replies taken, in the order the pieces were asked.
    taken: usize,
}

/// A SCAN command's listing and its one native request, or Redis's error.
pub(super) fn scan(args: &[Bytes]) -> Result<(Listing, Scan), Bytes> {
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
    let mut listing = Listing::new(pattern);
    listing.scan = Some(cursor);
    Ok((listing, Scan::walk(cursor, count)))
}

/// A KEYS command's listing and its native requests, one per range of the
/// ring whose ranges end at `bounds` (the wrapping range as two pieces).
pub(super) fn keys(pattern: &[u8], bounds: &[u64]) -> (Listing, Vec<Scan>) {
    let mut pieces = Vec::new();
    let mut first = 0u64;
    for &b in bounds {
        pieces.push((first, b, Vec::new()));
        first = cursor_after(b);
    }
    if first != 0 || bounds.is_empty() {
        pieces.push((first, u64::MAX, Vec::new()));
    }
    let asks = (pieces.iter())
        .map(|&(cursor, end, _)| Scan {
            cursor,
            end,
            count: KEYS_MAX,
        })
        .collect();
    let mut listing = Listing::new(Pattern::new(pattern));
    listing.pieces = pieces;
    (listing, asks)
}

impl Listing {
    fn new(pattern: Pattern) -> Listing {
        Listing {
            scan: None,
            pieces: Vec::new(),
            pattern,
            keys: Vec::new(),
            seen: 0,
            error: None,
            cursor: 0,
            taken: 0,
        }
    }

    /// Takes one native SCAN reply (`VALUE` or `STALE`); returns the bytes of
    /// keys kept.
    pub(super) fn take(&mut self, reply_op: u8, payload: &Bytes) -> usize {
        let piece = self.taken;
        self.taken += 1;
        let parsed = match reply_op {
            op::VALUE => parse_reply(payload),
            _ => None,
        };
        let Some((records, next)) = parsed else {
            if let Some(cursor) = self.scan.filter(|&c| c != 0 && reply_op == op::STALE) {
                self.cursor = cursor;
            } else if self.scan.is_some() && reply_op == op::STALE {
                // Cursor 0 again would read as "done".
                self.error = Some("TRYAGAIN the ring is changing; call SCAN 0 again");
            } else if reply_op == op::STALE {
                self.error = Some("ERR the ring is changing; retry KEYS");
            } else {
                self.error = Some("ERR a node sent a malformed SCAN reply");
            }
            return 0;
        };
        self.seen += records.len();
        let mut bytes = 0;
        let mut kept = Vec::new();
        for (k, _) in records {
            if self.pattern.matches(&k) {
                bytes += k.len();
                kept.push(k);
            }
        }
        if self.scan.is_some() {
            self.cursor = next;
            self.keys = kept;
            return bytes;
        }
        let Some((_, end, keys)) = self.pieces.get_mut(piece) else {
            self.error = Some("ERR a node sent a malformed SCAN reply");
            return 0;
        };
        *keys = kept;
        if next != cursor_after(*end) {
            // The piece was cut short: too many keys, or a node's ring cut it.
            self.error.get_or_insert(if self.seen >= KEYS_MAX {
                KEYS_TOO_MANY
            } else {
                "ERR the ring is changing; retry KEYS"
            });
        } else if self.seen > KEYS_MAX {
            self.error = Some(KEYS_TOO_MANY);
        }
        bytes
    }

    /// Appends the RESP reply.
    pub(super) fn render(&self, out: &mut BytesMut) {
        if let Some(e) = self.error {
            return resp::error(out, e.as_bytes());
        }
        if self.scan.is_some() {
            resp::array(out, 2);
            resp::bulk(out, self.cursor.to_string().as_bytes());
            resp::array(out, self.keys.len());
            for k in &self.keys {
                resp::bulk(out, k);
            }
            return;
        }
        let keys = self.pieces.iter().flat_map(|p| &p.2);
        resp::array(out, keys.clone().count());
        for k in keys {
            resp::bulk(out, k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::node::scan::put_record;

    fn reply(next: u64, keys: &[&str]) -> Bytes {
        let mut p = format!("{next} ").into_bytes();
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
    fn scan_cursors_are_hash_points() {
        let (mut l, ask) = scan(&args(&["SCAN", "0", "COUNT", "2"])).unwrap();
        assert_eq!(ask, Scan::walk(0, 2));
        l.take(op::VALUE, &reply(12345, &["a", "b"]));
        assert_eq!(
            rendered(&l),
            "*2\r\n$5\r\n12345\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"
        );
        let (mut l, ask) = scan(&args(&["SCAN", "12345", "MATCH", "c*"])).unwrap();
        assert_eq!(ask, Scan::walk(12345, DEFAULT_COUNT));
        l.take(op::VALUE, &reply(0, &["c1", "d"]));
        assert_eq!(rendered(&l), "*2\r\n$1\r\n0\r\n*1\r\n$2\r\nc1\r\n");
        // STALE: the same cursor again, no keys.
        let (mut l, _) = scan(&args(&["SCAN", "77"])).unwrap();
        l.take(op::STALE, &Bytes::from_static(b"9"));
        assert_eq!(rendered(&l), "*2\r\n$2\r\n77\r\n*0\r\n");
        let (mut l, _) = scan(&args(&["SCAN", "0"])).unwrap();
        l.take(op::STALE, &Bytes::from_static(b"9"));
        assert!(rendered(&l).starts_with("-TRYAGAIN "));
        let (mut l, _) = scan(&args(&["SCAN", "77"])).unwrap();
        l.take(op::VALUE, &Bytes::from_static(b"x"));
        assert!(rendered(&l).starts_with("-ERR a node sent a malformed"));
        for bad in [
            &["SCAN", "x"][..],
            &["SCAN", "-1"],
            &["SCAN", "18446744073709551616"],
            &["SCAN", "0", "COUNT", "0"],
            &["SCAN", "0", "MATCH"],
            &["SCAN", "0", "TYPE", "string"],
        ] {
            assert!(scan(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_asks_every_range_and_is_bounded() {
        let (mut l, asks) = keys(b"a*", &[]);
        assert_eq!(asks.len(), 1);
        assert_eq!((asks[0].cursor, asks[0].end), (0, u64::MAX));
        l.take(op::VALUE, &reply(0, &["ab", "b", "a"]));
        assert_eq!(rendered(&l), "*2\r\n$2\r\nab\r\n$1\r\na\r\n");
        let (mut l, asks) = keys(b"*", &[10, 20]);
        let spans: Vec<(u64, u64)> = asks.iter().map(|a| (a.cursor, a.end)).collect();
        assert_eq!(spans, [(0, 10), (11, 20), (21, u64::MAX)]);
        l.take(op::VALUE, &reply(11, &["x"]));
        l.take(op::VALUE, &reply(21, &["y"]));
        l.take(op::VALUE, &reply(0, &[]));
        assert_eq!(rendered(&l), "*2\r\n$1\r\nx\r\n$1\r\ny\r\n");
        let (mut l, _) = keys(b"*", &[u64::MAX]);
        assert_eq!(l.pieces.len(), 1);
        l.take(op::VALUE, &reply(5, &["x"]));
        assert!(rendered(&l).starts_with("-ERR the ring is changing"));
        let (mut l, _) = keys(b"*", &[]);
        let many: Vec<String> = (0..KEYS_MAX).map(|i| format!("k{i}")).collect();
        let many: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
        l.take(op::VALUE, &reply(99, &many));
        assert!(rendered(&l).starts_with("-ERR KEYS answers only"));
        assert!(rendered(&l).contains(&KEYS_MAX.to_string()));
    }
}
