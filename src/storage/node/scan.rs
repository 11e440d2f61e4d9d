//! SCAN: the live keys and values of one token range, in key order, a page at
//! a time (see docs/protocol.md, "SCAN").
//!
//! A client's SCAN is served by the range's lead replica (the first reachable
//! node of its preference list, as for a key-value request): here when that is
//! this node, else forwarded to it over the mesh, its reply relayed in order.
//! A SCAN from a peer is served from this node's own data. Serving one reads
//! the engine's sector that holds the range (the sector of this node's first
//! token at or after the range's end), keeps the live keys in the range after
//! `AFTER`, sorts them and answers the first `COUNT` (fewer past
//! [`SCAN_REPLY_BYTES`]), saying whether the range holds more after them.
//!
//! Caveats: one replica answers (no read quorum, no repair), so a write it has
//! not received yet is missed; a page costs a pass over the sector and a sort
//! of the range's keys.

use super::*;
use crate::protocol::frame::parse_decimal;

/// Most records one SCAN reply carries.
pub const MAX_SCAN_COUNT: u64 = 10_000;
/// Bytes of records above which a SCAN reply stops early (it always carries
/// at least one record).
pub const SCAN_REPLY_BYTES: usize = 4 << 20;

/// A parsed SCAN request: the range `(lo, hi]` of ring hashes (wrapping past
/// the top when `lo >= hi`; the whole ring when they are equal), how many
/// records at most, and the key to list after (empty: from the start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The range's start, exclusive.
    pub lo: u64,
    /// The range's end, inclusive.
    pub hi: u64,
    /// Most records wanted.
    pub count: usize,
    /// List keys greater than this one.
    pub after: Bytes,
}

impl Scan {
    /// The request's payload.
    pub fn payload(&self) -> Bytes {
        let mut p = format!("{} {} {} ", self.lo, self.hi, self.count).into_bytes();
        p.extend_from_slice(&self.after);
        Bytes::from(p)
    }

    /// Parses a payload.
    pub fn parse(payload: &Bytes) -> Result<Scan, Error> {
        let bad = || {
            Error::new(
                ErrorCode::BadKey,
                "SCAN payload must be LO SP HI SP COUNT SP AFTER",
            )
        };
        let mut at = 0;
        let mut field = |max: u64| {
            let rest = payload.get(at..).ok_or_else(bad)?;
            let sp = memchr::memchr(b' ', &rest[..rest.len().min(21)]).ok_or_else(bad)?;
            at += sp + 1;
            parse_decimal(&rest[..sp], max).ok_or_else(bad)
        };
        let (lo, hi, count) = (field(u64::MAX)?, field(u64::MAX)?, field(MAX_SCAN_COUNT)?);
        Ok(Scan {
            lo,
            hi,
            count: count as usize,
            after: payload.slice(at..),
        })
    }

    /// The SCAN of range `range` of the ring whose ranges end at `bounds`
    /// (range 0 wraps past the top of the hash space; no bounds, a ring not
    /// known yet, is one range, the whole ring), for up to `count` keys after
    /// `after`. The cluster-wide walks (HTTP `GET /fetch`, RESP `SCAN` and
    /// `KEYS`) go through the ranges in this order.
    pub fn of_range(bounds: &[u64], range: usize, after: Bytes, count: usize) -> Scan {
        let n = bounds.len();
        let (lo, hi) = if n == 0 {
            (0, 0)
        } else {
            (bounds[(range + n - 1) % n], bounds[range % n])
        };
        Scan {
            lo,
            hi,
            count: count.min(MAX_SCAN_COUNT as usize),
            after,
        }
    }

    /// Whether ring hash `h` is in the range.
    pub fn holds(&self, h: u64) -> bool {
        match self.lo.cmp(&self.hi) {
            std::cmp::Ordering::Less => self.lo < h && h <= self.hi,
            std::cmp::Ordering::Greater => h > self.lo || h <= self.hi,
            std::cmp::Ordering::Equal => true,
        }
    }
}

/// Appends one record of a SCAN reply: `KLEN SP KEY VLEN SP VALUE`.
pub fn put_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(format!("{} ", key.len()).as_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(format!("{} ", value.len()).as_bytes());
    out.extend_from_slice(value);
}

/// The records of a SCAN reply and whether the range may hold more keys
/// after the last of them, or `None` if it is malformed.
pub fn parse_reply(payload: &Bytes) -> Option<(Vec<(Bytes, Bytes)>, bool)> {
    let more = match payload.first()? {
        b'0' => false,
        b'1' => true,
        _ => return None,
    };
    let mut records = Vec::new();
    let mut at = 1;
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
    Some((records, more))
}

impl StorageNode {
    /// A SCAN request: served here or forwarded to the range's lead replica.
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
                return self.conns.order.ready(conn, frame, out);
            }
        };
        if member {
            let payload = self.scan_local(&scan);
            let frame = Frame::new(op::VALUE, f.client_id, me, payload);
            return out.push(Output::Send { conn, frame });
        }
        // Before it has a ring, a node serves every key itself.
        let lead = if me == 0 {
            Some(me)
        } else {
            self.live_lead(scan.hi)
        };
        match lead {
            None => {
                let e = Error::new(ErrorCode::Unavailable, "every replica of the range is down");
                let frame = Frame::error(f.client_id, me, &e);
                self.conns.order.ready(conn, frame, out);
            }
            Some(lead) if lead != me => {
                let seq = self.conns.order.reserve(conn);
                let token = Waiter::Client {
                    conn,
                    seq,
                    client_id: f.client_id,
                };
                let deadline = now + self.cfg.request_timeout_ms;
                if let Err(fwd) = self.mesh.forward(lead, f, token, 1, deadline, out) {
                    self.fail_forwards(now, vec![*fwd], ErrorCode::Unavailable, out);
                }
            }
            Some(_) => {
                let payload = self.scan_local(&scan);
                let frame = Frame::new(op::VALUE, f.client_id, me, payload);
                self.conns.order.ready(conn, frame, out);
            }
        }
    }

    /// The reply payload of `scan` from this node's own data.
    fn scan_local(&self, scan: &Scan) -> Bytes {
        let mut tokens = self.engine.tokens();
        let first = self.engine.tokens().next();
        let token = tokens.find(|&t| t >= scan.hi).or(first);
        let Some(sector) = token.and_then(|t| self.engine.sector_of_token(t)) else {
            return Bytes::new();
        };
        let mut found: Vec<(&[u8], &[u8])> = sector
            .iter()
            .filter(|e| e.key > &scan.after[..] && scan.holds(hash64(e.key)))
            .filter_map(|e| e.value.map(|v| (e.key, v)))
            .collect();
        found.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut out = vec![b'0'];
        let mut taken = 0;
        for (k, v) in found.iter().take(scan.count) {
            if out.len() > SCAN_REPLY_BYTES {
                break;
            }
            put_record(&mut out, k, v);
            taken += 1;
        }
        if taken < found.len() {
            out[0] = b'1';
        }
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_records_round_trip() {
        let s = Scan {
            lo: 5,
            hi: u64::MAX,
            count: 100,
            after: Bytes::from_static(b"a b"),
        };
        assert_eq!(Scan::parse(&s.payload()).unwrap(), s);
        assert!(Scan::parse(&Bytes::from_static(b"1 2")).is_err());
        assert!(Scan::parse(&Bytes::from_static(b"1 2 99999999 ")).is_err());
        let mut p = vec![b'1'];
        put_record(&mut p, b"k 1", b"");
        put_record(&mut p, b"k2", b"v v");
        let (recs, more) = parse_reply(&Bytes::from(p)).unwrap();
        assert!(more);
        assert_eq!(&recs[1].1[..], b"v v");
        assert_eq!(&recs[0].0[..], b"k 1");
        assert!(parse_reply(&Bytes::from_static(b"05 ab")).is_none());
        assert_eq!(
            parse_reply(&Bytes::from_static(b"0")),
            Some((vec![], false))
        );
        let wrap = Scan {
            lo: 10,
            hi: 3,
            count: 1,
            after: Bytes::new(),
        };
        assert!(wrap.holds(11) && wrap.holds(3) && !wrap.holds(5));
    }
}
