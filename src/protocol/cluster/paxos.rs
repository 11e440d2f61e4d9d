//! The payloads of a conditional op's Paxos messages: `PREPARE`, `ACCEPT`
//! and the `PROMISE` reply, and the proposer's [`View`] of the key that
//! `PREPARE` and `ACCEPT` carry.
//!
//! A view is the proposer's ring epoch and the key's serving and settled
//! preference lists by that ring: `EPOCH(u64 BE) NS(u8) NODE(u32 BE)*NS
//! NT(u8) NODE(u32 BE)*NT`. A replica whose ring is newer than the view's and
//! gives the key other lists refuses the message (`REFUSED stale-ring EPOCH`):
//! the proposer counts majorities of lists that are no longer the key's (see
//! the node's `replication` module).

use super::record::{parse_one_record, parse_record, put_record, Record};
use super::{be_u64, malformed, Error, Reply};
use crate::protocol::kv::check_key;
use bytes::{BufMut, Bytes, BytesMut};

/// A proposer's view of a key: its ring's epoch and the key's lists by it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// The epoch of the proposer's ring.
    pub epoch: u64,
    /// The key's serving preference list by that ring.
    pub serving: Vec<u32>,
    /// The key's settled preference list (once pending moves are done).
    pub settled: Vec<u32>,
}

impl View {
    /// Appends the view's wire form. Lists longer than 255 nodes are cut
    /// (a preference list is N nodes long).
    pub fn put(&self, buf: &mut BytesMut) {
        buf.put_u64(self.epoch);
        for list in [&self.serving, &self.settled] {
            let n = list.len().min(u8::MAX as usize);
            buf.put_u8(n as u8);
            for &id in &list[..n] {
                buf.put_u32(id);
            }
        }
    }

    /// Reads a view from `p` at `*at`, moving `*at` past it.
    pub fn parse(p: &[u8], at: &mut usize, what: &str) -> Result<View, Error> {
        let short = || malformed(what, "its view is cut short");
        let epoch = p.get(*at..*at + 8).ok_or_else(short)?;
        let epoch = be_u64(epoch);
        *at += 8;
        let mut lists = [Vec::new(), Vec::new()];
        for list in lists.iter_mut() {
            let n = *p.get(*at).ok_or_else(short)? as usize;
            *at += 1;
            let ids = p.get(*at..*at + 4 * n).ok_or_else(short)?;
            *at += 4 * n;
            list.extend(
                ids.chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
        let [serving, settled] = lists;
        Ok(View {
            epoch,
            serving,
            settled,
        })
    }
}

/// `PREPARE`: `BALLOT(u64 BE) VIEW KEY`.
pub(super) fn prepare_payload(ballot: u64, view: &View, key: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + 18 + key.len());
    buf.put_u64(ballot);
    view.put(&mut buf);
    buf.put_slice(key);
    buf.freeze()
}

/// Reads a `PREPARE` payload: the ballot, the view and the key.
pub(super) fn decode_prepare(p: &Bytes) -> Result<(u64, View, Bytes), Error> {
    if p.len() < 8 {
        return Err(malformed("PREPARE", "shorter than its ballot"));
    }
    let ballot = be_u64(&p[..8]);
    let mut at = 8;
    let view = View::parse(p, &mut at, "PREPARE")?;
    let key = p.slice(at..);
    check_key(&key)?;
    Ok((ballot, view, key))
}

/// `ACCEPT`: `HAS_VIEW(u8: 0 or 1) [VIEW] RECORD`. A proposer's accept round
/// carries its view; a move's copy of an accepted proposal to the nodes it
/// adds carries none (it is not a round, and counts toward no quorum).
pub(super) fn accept_payload(record: &Record, view: Option<&View>) -> Bytes {
    let mut buf = BytesMut::new();
    match view {
        Some(v) => {
            buf.put_u8(1);
            v.put(&mut buf);
        }
        None => buf.put_u8(0),
    }
    put_record(
        &mut buf,
        &record.key,
        record.version,
        record.value.as_deref(),
    );
    buf.freeze()
}

/// Reads an `ACCEPT` payload: the proposal and the proposer's view, if any.
pub(super) fn decode_accept(p: &Bytes) -> Result<(Record, Option<View>), Error> {
    let mut at = 1;
    let view = match p.first() {
        Some(0) => None,
        Some(1) => Some(View::parse(p, &mut at, "ACCEPT")?),
        _ => return Err(malformed("ACCEPT", "HAS_VIEW must be 0, or 1 and VIEW")),
    };
    Ok((parse_one_record(p, at, "ACCEPT")?, view))
}

/// `PROMISE`: two optional records, each behind a flag byte.
pub(super) fn promise_payload(committed: &Option<Record>, accepted: &Option<Record>) -> Bytes {
    let mut buf = BytesMut::new();
    for r in [committed, accepted] {
        match r {
            Some(r) => {
                buf.put_u8(1);
                put_record(&mut buf, &r.key, r.version, r.value.as_deref());
            }
            None => buf.put_u8(0),
        }
    }
    buf.freeze()
}

/// Reads a `PROMISE` payload.
pub(super) fn decode_promise(p: &Bytes) -> Result<Reply, Error> {
    let mut at = 0;
    let mut take = || -> Result<Option<Record>, Error> {
        let flag = *p.get(at).ok_or_else(|| malformed("PROMISE", "cut short"))?;
        at += 1;
        match flag {
            0 => Ok(None),
            1 => parse_record(p, &mut at).map(Some),
            f => Err(malformed(
                "PROMISE",
                &format!("flag {f} is neither 0 nor 1"),
            )),
        }
    };
    let committed = take()?;
    let accepted = take()?;
    if at != p.len() {
        return Err(malformed("PROMISE", "bytes after its entries"));
    }
    Ok(Reply::Promise {
        committed,
        accepted,
    })
}
