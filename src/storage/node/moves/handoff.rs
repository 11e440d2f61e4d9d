//! The sending side of a data move: keys this node serves now but that belong to
//! another node once pending joins and leaves settle.
//!
//! When a ring with joining or leaving nodes arrives, the node lists the keys it
//! must hand over, per new owner, and streams them as `MIGRATE` frames of at most
//! [`CHUNK_BYTES`], with at most [`WINDOW`] chunks unacknowledged per target: the
//! move is bounded in memory and yields to normal traffic. Values are read when a
//! chunk is built, not when the list is made, and writes that arrive meanwhile are
//! copied to the new owner before they are acknowledged (see the node), so the new
//! owner ends with the latest value whichever comes first. When every chunk is
//! acknowledged the node tells the manager (`HANDOFF_DONE`), which flips the ring
//! once every serving node has.
//!
//! The write fence outlives its epoch. Once a handoff is acknowledged, the keys it
//! moved are served by their next owner (the sender forwards them there), so the
//! sender's copies fall behind. A ring change that keeps the move going (another
//! node joins, one goes down) starts a new handoff, but the sender must not serve
//! those keys from its old copies meanwhile: each handoff keeps the settled rings
//! since the last one that was acknowledged ([`Handoff::fence`]), and a key stays
//! fenced while every one of them gives it the same next owner as now.
//!
//! A chunk is a run of records ([`crate::protocol::cluster::put_record`]); the receiver
//! applies each by version, so a chunk can arrive late or twice.

use crate::protocol::cluster::put_record;
use crate::ring::Ring;
use crate::storage::engine::Engine;
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;

/// Largest chunk payload, in bytes (one large value may exceed it alone).
pub const CHUNK_BYTES: usize = 256 << 10;
/// Chunks in flight per target.
pub const WINDOW: usize = 4;

struct Outgoing {
    keys: Vec<Bytes>,
    next: usize,
    in_flight: usize,
}

/// One handoff, for one ring epoch.
pub struct Handoff {
    /// The epoch it serves.
    pub epoch: u64,
    targets: BTreeMap<u32, Outgoing>,
    /// A chunk failed: the handoff must start again.
    pub failed: bool,
    /// HANDOFF_DONE was sent.
    pub reported: bool,
    /// The ring once the moves of this handoff's epoch settle.
    pub settled: Ring,
    /// The settled rings of the epochs since the last acknowledged handoff,
    /// that one's first (empty when none was acknowledged since the moves
    /// began): a key whose next owner is the same in all of them and now was
    /// handed over and is served there.
    pub fence: Vec<Ring>,
}

impl Handoff {
    /// A handoff of `keys` (each with its new owner) for the ring whose
    /// settled form is `settled`, after the handoff `prior` (of this epoch or
    /// an earlier one), whose fence it carries on.
    pub fn new(
        epoch: u64,
        keys: Vec<(u32, Bytes)>,
        settled: Ring,
        prior: Option<Handoff>,
    ) -> Handoff {
        let fence = match prior {
            None => Vec::new(),
            // A retry of this epoch's handoff: nothing changed.
            Some(p) if p.epoch == epoch => p.fence,
            Some(p) if p.done() => vec![p.settled],
            Some(mut p) if !p.fence.is_empty() => {
                p.fence.push(p.settled);
                p.fence
            }
            Some(_) => Vec::new(),
        };
        let mut targets: BTreeMap<u32, Outgoing> = BTreeMap::new();
        for (t, k) in keys {
            targets
                .entry(t)
                .or_insert_with(|| Outgoing {
                    keys: Vec::new(),
                    next: 0,
                    in_flight: 0,
                })
                .keys
                .push(k);
        }
        Handoff {
            epoch,
            targets,
            failed: false,
            reported: false,
            settled,
            fence,
        }
    }

    /// Whether the key with ring hash `hash`, whose next owner is `next`, was
    /// handed over to it already: by this handoff (once it is done) or by an
    /// earlier one whose fence still holds (see the module docs). Its writes
    /// then belong to `next` alone.
    pub fn fenced(&self, hash: u64, next: u32) -> bool {
        if self.done() {
            return true;
        }
        !self.fence.is_empty() && (self.fence.iter()).all(|r| r.owner_of_hash(hash) == Some(next))
    }

    /// Keys still to send or unacknowledged.
    pub fn remaining(&self) -> usize {
        self.targets
            .values()
            .map(|o| o.keys.len() - o.next + o.in_flight)
            .sum()
    }

    /// Bytes of the keys not sent yet and their values, as held now (the
    /// chunks in flight not counted). Walks those keys: for a scrape, not the
    /// hot path.
    pub fn unsent_bytes(&self, engine: &Engine) -> usize {
        let keys = self.targets.values().flat_map(|o| &o.keys[o.next..]);
        let value = |k: &[u8]| {
            engine
                .entry_ref(k)
                .and_then(|e| e.value)
                .map_or(0, <[u8]>::len)
        };
        keys.map(|k| k.len() + value(k)).sum()
    }

    /// Builds the chunks the window allows now, as (target, payload).
    pub fn next_chunks(&mut self, engine: &Engine) -> Vec<(u32, Bytes)> {
        let mut chunks = Vec::new();
        for (&target, o) in self.targets.iter_mut() {
            while o.in_flight < WINDOW && o.next < o.keys.len() {
                let mut buf = BytesMut::new();
                while o.next < o.keys.len() && buf.len() < CHUNK_BYTES {
                    let k = &o.keys[o.next];
                    o.next += 1;
                    if let Some(e) = engine.entry_ref(k) {
                        put_record(&mut buf, k, e.version, e.value);
                    }
                }
                if !buf.is_empty() {
                    o.in_flight += 1;
                    chunks.push((target, buf.freeze()));
                }
            }
        }
        chunks
    }

    /// One message other than a chunk (an accepted proposal) was sent to
    /// `target` ahead of its chunks: the handoff is done only once it is
    /// answered too ([`Handoff::acked`]).
    pub fn sent_other(&mut self, target: u32) {
        let o = self.targets.entry(target).or_insert_with(|| Outgoing {
            keys: Vec::new(),
            next: 0,
            in_flight: 0,
        });
        o.in_flight += 1;
    }

    /// A chunk to `target` was acknowledged.
    pub fn acked(&mut self, target: u32) {
        if let Some(o) = self.targets.get_mut(&target) {
            o.in_flight = o.in_flight.saturating_sub(1);
        }
    }

    /// Everything sent and acknowledged.
    pub fn done(&self) -> bool {
        !self.failed && self.remaining() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::cluster::parse_records;

    #[test]
    fn chunks_are_bounded_windowed_and_parse_back() {
        let mut e = Engine::default();
        let mut keys = Vec::new();
        for i in 0..2000u32 {
            let k = format!("k{i}");
            let v = (i % 10 != 0).then_some(&[7u8; 1000][..]);
            e.apply(k.as_bytes(), 1 + i as u64, v, None);
            keys.push((1 + i % 2, Bytes::from(k)));
        }
        let mut h = Handoff::new(5, keys, Ring::empty(), None);
        let first = h.next_chunks(&e);
        assert_eq!(first.len(), 2 * WINDOW, "window per target");
        assert!(h.next_chunks(&e).is_empty());
        let mut seen = 0;
        for (_, c) in &first {
            assert!(c.len() < CHUNK_BYTES + 1100);
            seen += parse_records(c).unwrap().len();
        }
        let mut rounds = 0;
        while !h.done() {
            h.acked(1);
            h.acked(2);
            for (_, c) in h.next_chunks(&e) {
                seen += parse_records(&c).unwrap().len();
            }
            rounds += 1;
            assert!(rounds < 100);
        }
        assert_eq!(seen, 2000);
        assert!(parse_records(&Bytes::from_static(&[0, 0, 0, 9, 1])).is_err());
    }

    #[test]
    fn a_handed_proposal_keeps_the_handoff_open_until_answered() {
        let e = Engine::default();
        let mut h = Handoff::new(5, Vec::new(), Ring::empty(), None);
        assert!(h.done(), "nothing to hand over");
        h.sent_other(3);
        assert!(!h.done() && h.next_chunks(&e).is_empty());
        h.acked(3);
        assert!(h.done());
    }
}
