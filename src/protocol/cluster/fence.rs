//! The fence a lead's plain replica requests carry (`REPLICATE`, `REPL_READ`,
//! `REPL_READS`): the lead's ring epoch and a mark of the key's lists by that
//! ring, `EPOCH(u64 BE) MARK(u64 BE)`; and the payloads of `REPLICATE` and
//! `REPL_READ` (`REPL_READS` is in `reads.rs`).
//!
//! A replica whose ring is newer than the epoch and whose lists of the key
//! give another mark refuses the request (`REFUSED stale-ring EPOCH`): the
//! lead counts quorums of lists that are no longer the key's, and a quorum of
//! the old lists need not meet one of the new. A Paxos round carries its
//! lists in full (a [`View`](super::View)); a plain request, sent for every
//! GET and PUT, carries 16 bytes instead. The mark is a 64-bit hash of the two
//! lists in order, so two different lists pass for the same with a chance of
//! about 2^-64 per request from a stale lead.

use super::record::{parse_one_record, put_record, Record};
use super::{be_u64, malformed, Error, Message};
use crate::protocol::kv::check_key;
use bytes::{BufMut, Bytes, BytesMut};

/// The bytes of a [`Fence`] on the wire.
pub const FENCE_LEN: usize = 16;

/// A lead's ring epoch and the mark of a key's lists by that ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fence {
    /// The epoch of the lead's ring.
    pub epoch: u64,
    /// [`lists_mark`] of the key's serving and settled lists by that ring.
    pub mark: u64,
}

impl Fence {
    /// Appends the wire form.
    pub fn put(&self, buf: &mut BytesMut) {
        buf.put_u64(self.epoch);
        buf.put_u64(self.mark);
    }

    /// Reads a fence from `p` at `*at`, moving `*at` past it.
    pub fn parse(p: &[u8], at: &mut usize, what: &str) -> Result<Fence, Error> {
        let b = (p.get(*at..*at + FENCE_LEN)).ok_or_else(|| malformed(what, "no fence"))?;
        *at += FENCE_LEN;
        Ok(Fence {
            epoch: be_u64(&b[..8]),
            mark: be_u64(&b[8..]),
        })
    }

    /// Whether a replica whose ring has epoch `epoch` and gives the key lists
    /// of mark `mark()` serves the request: the lead's ring is as new, or it
    /// lists the key alike. The mark is computed only for an older lead.
    pub fn admits(&self, epoch: u64, mark: impl FnOnce() -> u64) -> bool {
        self.epoch >= epoch || self.mark == mark()
    }
}

/// `FLAGS(u8) [BASE(u64 BE)] [FENCE] RECORD`: a `REPLICATE`'s payload.
pub(super) fn replicate_payload(base: Option<u64>, fence: Option<Fence>, r: &Record) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u8(u8::from(base.is_some()) | u8::from(fence.is_some()) << 1);
    if let Some(b) = base {
        buf.put_u64(b);
    }
    if let Some(f) = fence {
        f.put(&mut buf);
    }
    put_record(&mut buf, &r.key, r.version, r.value.as_deref());
    buf.freeze()
}

/// Reads a `REPLICATE`'s payload.
pub(super) fn decode_replicate(p: &Bytes) -> Result<Message, Error> {
    const WHAT: &str = "REPLICATE";
    let flags = *p.first().ok_or_else(|| malformed(WHAT, "empty"))?;
    if flags > 3 {
        return Err(malformed(WHAT, "FLAGS must be 0 to 3"));
    }
    let mut at = 1;
    let base = match flags & 1 {
        0 => None,
        _ => {
            let b = (p.get(1..9)).ok_or_else(|| malformed(WHAT, "no BASE"))?;
            at = 9;
            Some(be_u64(b))
        }
    };
    let fence = match flags & 2 {
        0 => None,
        _ => Some(Fence::parse(p, &mut at, WHAT)?),
    };
    let record = parse_one_record(p, at, WHAT)?;
    Ok(Message::Replicate {
        base,
        fence,
        record,
    })
}

/// Reads a `REPL_READ`'s payload, `FENCE KEY`.
pub(super) fn decode_repl_read(p: &Bytes) -> Result<Message, Error> {
    let fence = Fence::parse(p, &mut 0, "REPL_READ")?;
    let key = p.slice(FENCE_LEN..);
    check_key(&key)?;
    Ok(Message::ReplRead { fence, key })
}

/// A mark of a key's serving and settled lists: equal lists give equal marks,
/// on every node.
pub fn lists_mark(serving: &[u32], settled: &[u32]) -> u64 {
    let mut h: u64 = 0x6a09_e667_f3bc_c908;
    for (i, list) in [serving, settled].into_iter().enumerate() {
        for &id in list {
            h = mix(h ^ u64::from(id));
        }
        // The end of a list, so [1, 2] [3] and [1] [2, 3] differ.
        h = mix(h ^ (u64::MAX - i as u64));
    }
    h
}

/// One round of a 64-bit finalizer: every input bit moves every output bit.
fn mix(mut h: u64) -> u64 {
    h = (h ^ (h >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_tell_lists_apart() {
        let base = lists_mark(&[1, 2, 3], &[1, 2, 3]);
        assert_eq!(base, lists_mark(&[1, 2, 3], &[1, 2, 3]));
        for other in [
            lists_mark(&[1, 2, 3], &[1, 2, 4]),
            lists_mark(&[1, 2, 4], &[1, 2, 3]),
            lists_mark(&[2, 1, 3], &[1, 2, 3]),
            lists_mark(&[1, 2], &[3, 1, 2, 3]),
            lists_mark(&[], &[]),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn a_fence_admits_newer_leads_and_alike_lists() {
        let f = Fence { epoch: 5, mark: 7 };
        assert!(f.admits(5, || 8));
        assert!(f.admits(4, || 8));
        assert!(f.admits(9, || 7));
        assert!(!f.admits(6, || 8));
        let mut buf = BytesMut::new();
        f.put(&mut buf);
        assert_eq!(buf.len(), FENCE_LEN);
        let mut at = 0;
        assert_eq!(Fence::parse(&buf, &mut at, "X").unwrap(), f);
        assert_eq!(at, FENCE_LEN);
        assert!(Fence::parse(&buf[..15], &mut 0, "X").is_err());
    }
}
