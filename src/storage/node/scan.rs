//! SCAN: the cluster's live keys and values in one order that does not depend
//! on the ring, a page at a time (see docs/protocol.md, "SCAN").
//!
//! Order and cursor. Every key sorts by `(ring hash, key)`. A cursor is a ring
//! hash `C`: the keys whose hash is below `C` are done (`0` starts a walk).
//! A SCAN `C END COUNT` lists, in that order, the live keys whose hash is in
//! `[C, E]`, where `E` is `END` or, if smaller, the end of the token range
//! that holds `C` in the serving node's ring (a range wrapping past the top
//! of the hash space ends at `u64::MAX`). It stops after `COUNT` keys (or
//! [`SCAN_REPLY_BYTES`]), but only between two hashes, never inside the keys
//! of one hash, so the next cursor is always a single number: the hash after
//! the last one listed whole (`0` once the page reached `u64::MAX`). Because
//! cursors name points of the hash space, not ranges, a walk that changes
//! servers between pages, or meets a different ring at every page, neither
//! skips nor repeats a key: each page covers `[C, next)` from one node that
//! holds all of it.
//!
//! Who answers. A page is served by a replica of the range holding `C` in the
//! serving node's own ring: a node serves a SCAN when it is on that range's
//! preference list and not catching up (a node back from a restart, or given a
//! dropped node's ranges, lacks keys until its catch-up ends); a client's SCAN
//! is served at the range's lead replica. Otherwise the node forwards it to
//! the lead (or, when the lead is this node catching up, to the next reachable
//! replica), counting hops as key-value forwards do. Nodes join the serving
//! ring only after their handoff is acknowledged, so a node that routes by a
//! ring holds the ranges that ring gives it; while two nodes disagree on the
//! ring a forward can go round: past `MAX_HOPS` hops the SCAN is answered
//! `STALE`, which walkers retry (the rings agree again within moments).
//!
//! Caveats: keys written or deleted during a walk may or may not appear; one
//! replica answers each page (no read quorum, no repair), so a write it has not
//! received yet is missed; a page costs a pass over the sectors holding its
//! range and a sort of the keys found there. A node that is down and not yet
//! dropped is not waited for by a move, so its keys may be missing on the
//! nodes that took its ranges until repair brings them.

use super::*;
use crate::protocol::frame::parse_decimal;

/// Most records one SCAN reply carries (more only when keys share a hash).
pub const MAX_SCAN_COUNT: u64 = 10_000;
/// Bytes of records above which a SCAN reply stops early (it always carries
/// the keys of at least one hash).
pub const SCAN_REPLY_BYTES: usize = 4 << 20;

/// A parsed SCAN request: list from hash `cursor` through hash `end` at most
/// (and through the end of the cursor's range), up to `count` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The first hash to list.
    pub cursor: u64,
    /// The last hash to list at most (`u64::MAX` for a whole walk).
    pub end: u64,
    /// Most records wanted.
    pub count: usize,
}

impl Scan {
    /// A page of a whole walk at `cursor`, of up to `count` records.
    pub fn walk(cursor: u64, count: usize) -> Scan {
        Scan {
            cursor,
            end: u64::MAX,
            count: count.clamp(1, MAX_SCAN_COUNT as usize),
        }
    }

    /// The request's payload.
    pub fn payload(&self) -> Bytes {
        Bytes::from(format!("{} {} {}", self.cursor, self.end, self.count))
    }

    /// Parses a payload; never panics.
    pub fn parse(payload: &[u8]) -> Result<Scan, Error> {
        let bad = || {
            Error::new(
                ErrorCode::BadKey,
                "SCAN payload must be CURSOR SP END SP COUNT (END >= CURSOR, 1 <= COUNT <= 10000)",
            )
        };
        let mut fields = payload.split(|&b| b == b' ');
        let mut field = |max: u64| {
            let f = fields.next().ok_or_else(bad)?;
            parse_decimal(f, max).ok_or_else(bad)
        };
        let (cursor, end, count) = (field(u64::MAX)?, field(u64::MAX)?, field(MAX_SCAN_COUNT)?);
        if fields.next().is_some() || end < cursor || count == 0 {
            return Err(bad());
        }
        Ok(Scan {
            cursor,
            end,
            count: count as usize,
        })
    }
}

/// The last hash of the token range holding `hash` in a ring whose ranges
/// end at `bounds` (ascending): the range's token, or `u64::MAX` for the
/// range that wraps past the top (and for a ring of no ranges).
pub fn range_end(bounds: &[u64], hash: u64) -> u64 {
    let i = bounds.partition_point(|&t| t < hash);
    bounds.get(i).copied().unwrap_or(u64::MAX)
}

/// The cursor after a page that listed every hash through `last`: `0` (done)
/// past the top of the hash space.
pub fn cursor_after(last: u64) -> u64 {
    last.wrapping_add(1)
}

/// Appends one record of a SCAN reply: `KLEN SP KEY VLEN SP VALUE`.
pub fn put_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(format!("{} ", key.len()).as_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(format!("{} ", value.len()).as_bytes());
    out.extend_from_slice(value);
}

/// The records of a SCAN reply (`NEXT SP` then records) and the next cursor
/// (`0`: the walk is done), or `None` if it is malformed. Never panics.
pub fn parse_reply(payload: &Bytes) -> Option<(Vec<(Bytes, Bytes)>, u64)> {
    let sp = memchr::memchr(b' ', &payload[..payload.len().min(21)])?;
    let next = parse_decimal(&payload[..sp], u64::MAX)?;
    let mut records = Vec::new();
    let mut at = sp + 1;
    let field = |at: &mut usize| {
        let rest = &payload[*at..];
        let sp = memchr::memchr(b' ', &rest[..rest.len().min(11)])?;
        let len = parse_decimal(&rest[..sp], u32::MAX as u64)? as usize;
        let start = *at + sp + 1;
        let end = start.checked_add(len).filter(|&e| e <= payload.len())?;
        *at = end;
        Some(payload.slice(start..end))
    };
    while at < payload.len() {
        let key = field(&mut at)?;
        let value = field(&mut at)?;
        records.push((key, value));
    }
    Some((records, next))
}

impl StorageNode {
    /// A SCAN request: served here when this node holds the cursor's range
    /// (see the module docs), else forwarded towards a node that does.
    pub(super) fn on_scan(
        &mut self,
        now: Millis,
        conn: ConnId,
        member: bool,
        f: Frame,
        out: &mut Vec<Output>,
    ) {
        let me = self.node_id;
        let scan = match Scan::parse(&f.payload) {
            Ok(s) => s,
            Err(e) => {
                let frame = Frame::error(f.client_id, me, &e);
                return self.answer_scan(conn, member, frame, out);
            }
        };
        let pref = self.serving_pref.get(scan.cursor);
        let holds = pref.contains(&me) && self.reachable(me) && self.repair.catch_up.is_none();
        let lead = self.live_lead(scan.cursor);
        if holds && (member || lead == Some(me)) {
            let payload = self.scan_local(&scan);
            let frame = Frame::new(op::VALUE, f.client_id, me, payload);
            return self.answer_scan(conn, member, frame, out);
        }
        let target = match lead {
            Some(l) if l != me => Some(l),
            _ => (pref.iter().copied()).find(|&id| id != me && self.reachable(id)),
        };
        let hops = if member { f.node_id } else { 0 };
        let frame = match target {
            None => {
                let e = Error::new(
                    ErrorCode::Unavailable,
                    "no replica of the range can serve it",
                );
                Frame::error(f.client_id, me, &e)
            }
            Some(_) if hops >= MAX_HOPS => {
                // The nodes disagree on the ring for a moment: the walker retries.
                Frame::new(op::STALE, f.client_id, me, self.ring.epoch.to_string())
            }
            Some(t) => return self.forward_request(now, conn, member, f, t, out),
        };
        self.answer_scan(conn, member, frame, out);
    }

    /// Sends a SCAN's answer: at once to a peer, in order to a client.
    fn answer_scan(&mut self, conn: ConnId, member: bool, frame: Frame, out: &mut Vec<Output>) {
        if member {
            out.push(Output::Send { conn, frame });
        } else {
            self.conns.order.ready(conn, frame, out);
        }
    }

    /// The reply payload of `scan` from this node's own data: the keys of
    /// `[cursor, end]` (the end cut at the cursor's range), by (hash, key).
    fn scan_local(&self, scan: &Scan) -> Bytes {
        let first = scan.cursor;
        let last = range_end(self.serving_pref.bounds(), first).min(scan.end);
        // The sectors that may hold hashes of [first, last]: a sector holds
        // (previous token, token], the first one also what wraps past the top.
        let tokens: Vec<u64> = self.engine.tokens().collect();
        let start = tokens.partition_point(|&t| t < first);
        let mut sectors = Vec::new();
        for &t in &tokens[start..] {
            sectors.push(t);
            if t >= last {
                break;
            }
        }
        if sectors.last().is_none_or(|&t| t < last) && start > 0 {
            sectors.extend(tokens.first().copied());
        }
        let mut found: Vec<(u64, &[u8], &[u8])> = sectors
            .iter()
            .filter_map(|&t| self.engine.sector_of_token(t))
            .flat_map(|s| s.iter())
            .filter_map(|e| Some((hash64(e.key), e.key, e.value?)))
            .filter(|(h, _, _)| (first..=last).contains(h))
            .collect();
        found.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let mut records = Vec::new();
        let mut i = 0;
        while i < found.len() && i < scan.count && records.len() <= SCAN_REPLY_BYTES {
            // Whole hashes only: the next cursor is then a hash.
            let h = found[i].0;
            while i < found.len() && found[i].0 == h {
                put_record(&mut records, found[i].1, found[i].2);
                i += 1;
            }
        }
        let next = match found.get(i) {
            Some(&(h, _, _)) => h,
            None => cursor_after(last),
        };
        let mut payload = format!("{next} ").into_bytes();
        payload.extend_from_slice(&records);
        Bytes::from(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        let s = Scan {
            cursor: 5,
            end: u64::MAX,
            count: 100,
        };
        assert_eq!(Scan::parse(&s.payload()).unwrap(), s);
        assert_eq!(Scan::walk(7, 0).count, 1);
        assert_eq!(Scan::walk(7, 1 << 40).count, MAX_SCAN_COUNT as usize);
        for bad in [
            &b""[..],
            b"1 2",
            b"1 2 3 ",
            b"1 2 3 4",
            b"1 2 0",
            b"5 4 1",
            b"1 2 99999999",
            b"18446744073709551616 1 1",
            b"-1 2 3",
            b"1  2 3",
            b"\xff 2 3",
        ] {
            assert!(Scan::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn replies_parse_back_and_malformed_ones_are_none() {
        let mut p = b"42 ".to_vec();
        put_record(&mut p, b"k 1", b"");
        put_record(&mut p, b"k2", b"v v");
        let (recs, next) = parse_reply(&Bytes::from(p)).unwrap();
        assert_eq!(next, 42);
        assert_eq!(&recs[1].1[..], b"v v");
        assert_eq!(&recs[0].0[..], b"k 1");
        assert_eq!(parse_reply(&Bytes::from_static(b"0 ")), Some((vec![], 0)));
        for bad in [
            &b""[..],
            b"0",
            b"x ",
            b"1 5 ab",
            b"1 2 ab",
            b"1 2 ab1",
            b"1 2 ab9 x",
            b"1 99999999999 a",
            b"18446744073709551616 ",
        ] {
            assert!(
                parse_reply(&Bytes::copy_from_slice(bad)).is_none(),
                "{bad:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_without_panicking(
            bytes in proptest::collection::vec(proptest::sample::select(b"0123456789 x\xff".to_vec()), 0..48),
        ) {
            let _ = Scan::parse(&bytes);
            let _ = parse_reply(&Bytes::from(bytes));
        }

        #[test]
        fn requests_and_replies_survive_encode_and_parse(
            cursor: u64,
            span: u64,
            count in 1usize..=10_000,
            next: u64,
            records in proptest::collection::vec((proptest::collection::vec(0u8.., 1..8), proptest::collection::vec(0u8.., 0..8)), 0..5),
        ) {
            let s = Scan { cursor, end: cursor.saturating_add(span), count };
            proptest::prop_assert_eq!(Scan::parse(&s.payload()).unwrap(), s);
            let mut p = format!("{next} ").into_bytes();
            for (k, v) in &records {
                put_record(&mut p, k, v);
            }
            let (got, n) = parse_reply(&Bytes::from(p)).unwrap();
            proptest::prop_assert_eq!(n, next);
            let got: Vec<(Vec<u8>, Vec<u8>)> = got.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            proptest::prop_assert_eq!(got, records);
        }
    }

    #[test]
    fn ranges_end_at_their_token_and_the_wrap_at_the_top() {
        let bounds = [10, 20, 30];
        assert_eq!(range_end(&bounds, 0), 10);
        assert_eq!(range_end(&bounds, 10), 10);
        assert_eq!(range_end(&bounds, 11), 20);
        assert_eq!(range_end(&bounds, 31), u64::MAX);
        assert_eq!(range_end(&[], 5), u64::MAX);
        assert_eq!(cursor_after(u64::MAX), 0);
        assert_eq!(cursor_after(10), 11);
    }

    /// A node (id 3) of a ring where it owns hashes up to 2^63 and node 4 the
    /// rest (N = 1), holding `keys` of its own.
    fn node_with(keys: &[&str]) -> StorageNode {
        use crate::storage::node::tests::{step, with_manager};
        let (mut n, link) = with_manager();
        let ring = format!(
            "3\nepoch 7\nreplicas 1 1 1\nnode 3 127.0.0.1:7001 up {}\nnode 4 127.0.0.1:7002 up {}\n",
            1u64 << 63,
            u64::MAX
        );
        let frame = Frame::new(op::JOINED, 0, 0, ring);
        step(&mut n, 2, Input::Frame { conn: link, frame });
        for (i, k) in keys.iter().enumerate() {
            n.engine.apply(k.as_bytes(), 1 + i as u64, Some(b"v"), None);
        }
        n
    }

    #[test]
    fn pages_are_served_by_the_range_holder_and_end_between_hashes() {
        use crate::storage::node::tests::{member, sent, step};
        let mine: Vec<String> = (0..200)
            .map(|i| format!("k{i}"))
            .filter(|k| hash64(k.as_bytes()) <= 1 << 63)
            .take(3)
            .collect();
        let mut by_hash = mine.clone();
        by_hash.sort_by_key(|k| hash64(k.as_bytes()));
        let mut n = node_with(&mine.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        let client = ConnId::new(5, 1);
        let ask = |n: &mut StorageNode, conn: ConnId, hops: u32, cursor: u64, count: usize| {
            let scan = Scan::walk(cursor, count).payload();
            let frame = Frame::new(op::SCAN, 9, hops, scan);
            step(n, 3, Input::Frame { conn, frame })
        };
        // Two of its three keys, in hash order; the next cursor is the third's hash.
        let s = sent(&ask(&mut n, client, 0, 0, 2));
        let (records, next) = parse_reply(&Bytes::from(s[0].2.clone())).unwrap();
        let keys: Vec<&[u8]> = records.iter().map(|r| &r.0[..]).collect();
        let want: Vec<&[u8]> = by_hash[..2].iter().map(|k| k.as_bytes()).collect();
        assert_eq!((s[0].1, keys), (op::VALUE, want));
        assert_eq!(next, hash64(by_hash[2].as_bytes()));
        // The rest: the page ends at the end of its range, 2^63.
        let s = sent(&ask(&mut n, client, 0, next, 10));
        let (records, next) = parse_reply(&Bytes::from(s[0].2.clone())).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(next, (1 << 63) + 1);
        // Node 4's range: forwarded there, not answered from here.
        let out = ask(&mut n, client, 0, next, 10);
        assert!(sent(&out).iter().all(|s| s.0 != client), "{out:?}");
        // A peer's SCAN for its own range is served; one that went round too
        // often is answered STALE (the walker asks again).
        let peer = member(&mut n, 6);
        let s = sent(&ask(&mut n, peer, 1, 0, 10));
        assert_eq!(s[0].1, op::VALUE);
        let s = sent(&ask(&mut n, peer, MAX_HOPS, next, 10));
        assert_eq!((s[0].0, s[0].1, &s[0].2[..]), (peer, op::STALE, &b"7"[..]));
        // A bad payload is refused (on another connection: replies to
        // `client` wait behind the forward, in order).
        let other = ConnId::new(7, 1);
        let frame = Frame::new(op::SCAN, 9, 0, &b"5 4 1"[..]);
        let s = sent(&step(&mut n, 4, Input::Frame { conn: other, frame }));
        assert_eq!(s[0].1, op::ERR);
    }
}
