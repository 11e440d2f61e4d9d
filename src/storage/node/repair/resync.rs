//! Bringing replicas that missed writes up to date: hinted handoff and resync.
//!
//! A replica misses writes while it is down, paused or cut off. Two things give
//! them back to it, both by pushing the current entry of each key it may lack, in
//! `MIGRATE` chunks (the receiver keeps whichever version is newer, so a push that
//! arrives late or twice is harmless):
//! - **hints**: a lead replica whose write round did not reach a replica (it was
//!   skipped as unreachable, or had not acknowledged when the round ended)
//!   remembers the key for that replica. Hints are pushed as soon as the replica
//!   is reachable again. Hints per peer are capped ([`HINT_CAP`]); past the cap
//!   they are dropped and the peer is owed a full resync instead;
//! - **resync**: when a ring arrives in which a node is newly responsible for a
//!   key (it was down and is back, or it took over a dropped node's tokens),
//!   every other live node of the key's preference list pushes the key to it
//!   (see [`newly_responsible`]). With N = 3 that sends up to two copies of each
//!   key; one pusher would halve that, but a pusher that died mid-way would leave
//!   keys behind with nobody else to send them. A memory-only node that restarts
//!   is empty, and this is how it is refilled.
//!
//! Pushes to a peer are windowed ([`super::super::moves::handoff::WINDOW`] chunks of at most
//! [`super::super::moves::handoff::CHUNK_BYTES`] in flight), so they yield to normal traffic;
//! the keys of a chunk that fails or times out are queued again.

use super::super::moves::handoff::{CHUNK_BYTES, WINDOW};
use crate::protocol::cluster::put_record;
use crate::ring::PrefTable;
use crate::storage::engine::Engine;
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

/// Hinted keys kept per peer; beyond this the peer is owed a full resync.
pub const HINT_CAP: usize = 100_000;

#[derive(Default)]
struct Owed {
    /// Keys to push, in order (may repeat).
    queue: VecDeque<Bytes>,
    /// Hinted keys in `queue`, to keep hints unique.
    hinted: HashSet<Bytes>,
    /// Chunks sent and not yet acknowledged.
    in_flight: usize,
    /// Hints overflowed: push every key shared with the peer.
    full: bool,
}

/// A peer's `SYNC_REQ`, kept until every key it asked for is pushed.
struct Ask {
    round: u64,
    /// The ring the asker had; the push starts once this node has it too, so
    /// that "the keys the two share" covers the asker's new ranges.
    epoch: u64,
    /// Its full resync is queued.
    started: bool,
}

/// What this node owes other nodes.
#[derive(Default)]
pub struct Resync {
    peers: BTreeMap<u32, Owed>,
    /// Keys pushed so far (for logs and tests).
    pub pushed: u64,
    asks: BTreeMap<u32, Ask>,
    /// The last round answered per peer: asked again (its `SYNC_DONE` was
    /// lost), it is answered again once nothing is owed.
    answered: BTreeMap<u32, u64>,
}

impl Resync {
    /// Remembers that `peer` missed a write to `key`.
    pub fn hint(&mut self, peer: u32, key: &Bytes) {
        let o = self.peers.entry(peer).or_default();
        if o.full || o.hinted.contains(key) {
            return;
        }
        if o.hinted.len() >= HINT_CAP {
            log::warn!("more than {HINT_CAP} hints for node {peer}: it gets a full resync");
            o.hinted.clear();
            o.queue.clear();
            o.full = true;
            return;
        }
        o.hinted.insert(key.clone());
        o.queue.push_back(key.clone());
    }

    /// Owes `peer` every key of `keys`.
    pub fn owe(&mut self, peer: u32, keys: impl IntoIterator<Item = Bytes>) {
        self.peers.entry(peer).or_default().queue.extend(keys);
    }

    /// Owes `peer` every key the two share (it asked: it restarted). Supersedes
    /// whatever was queued for it.
    pub fn want_full(&mut self, peer: u32) {
        let o = self.peers.entry(peer).or_default();
        o.queue.clear();
        o.hinted.clear();
        o.full = true;
    }

    /// Peers owed a full resync (they asked, or their hints overflowed); clears the flag, as the
    /// caller is about to queue the keys.
    pub fn take_full(&mut self, ready: impl Fn(u32) -> bool) -> Vec<u32> {
        self.peers
            .iter_mut()
            .filter(|(id, o)| o.full && ready(**id))
            .map(|(id, o)| {
                o.full = false;
                *id
            })
            .collect()
    }

    /// Forgets a peer that left the ring.
    pub fn forget(&mut self, peer: u32) {
        self.peers.remove(&peer);
        self.asks.remove(&peer);
        self.answered.remove(&peer);
    }

    /// `peer` asks (`SYNC_REQ` round `round`) for every key the two share as of
    /// ring `epoch`. A repeated ask of a round in progress changes nothing; one
    /// of a round already answered is answered again once nothing is owed.
    pub fn asked(&mut self, peer: u32, round: u64, epoch: u64) {
        if self.asks.get(&peer).is_some_and(|a| a.round == round) {
            return;
        }
        let started = round != 0 && self.answered.get(&peer) == Some(&round);
        let ask = Ask {
            round,
            epoch,
            started,
        };
        self.asks.insert(peer, ask);
    }

    /// Queues a full resync for every ask whose ring this node has (`epoch`).
    pub fn start_asks(&mut self, epoch: u64) {
        let due: Vec<u32> = (self.asks.iter_mut())
            .filter(|(_, a)| !a.started && a.epoch <= epoch)
            .map(|(&peer, a)| {
                a.started = true;
                peer
            })
            .collect();
        for peer in due {
            self.want_full(peer);
        }
    }

    /// The asks now fully pushed, as (peer, round), to answer with `SYNC_DONE`.
    pub fn finished_asks(&mut self) -> Vec<(u32, u64)> {
        let idle =
            |o: Option<&Owed>| o.is_none_or(|o| o.queue.is_empty() && o.in_flight == 0 && !o.full);
        let done: Vec<(u32, u64)> = (self.asks.iter())
            .filter(|(p, a)| a.started && idle(self.peers.get(p)))
            .map(|(&p, a)| (p, a.round))
            .collect();
        for &(peer, round) in &done {
            self.asks.remove(&peer);
            self.answered.insert(peer, round);
        }
        done
    }

    /// Whether `peer` has an ask in progress (it pulls a full resync: keys
    /// owed to it otherwise would be pushed twice).
    pub fn is_asking(&self, peer: u32) -> bool {
        self.asks.contains_key(&peer)
    }

    /// Keys owed to `peer` and not yet acknowledged (chunks in flight count as
    /// one key each, a lower bound).
    pub fn owed(&self, peer: u32) -> usize {
        self.peers
            .get(&peer)
            .map_or(0, |o| o.queue.len() + o.in_flight)
    }

    /// Whether anything is owed to anyone.
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.peers
            .values()
            .all(|o| o.queue.is_empty() && o.in_flight == 0 && !o.full)
    }

    /// Builds the chunks the window allows now for the peers `ready` accepts, as
    /// (peer, payload, the keys it carries). Entries are read from `engine` now, so
    /// each push carries the newest entry this node holds.
    pub fn next_chunks(
        &mut self,
        engine: &Engine,
        ready: impl Fn(u32) -> bool,
    ) -> Vec<(u32, Bytes, Vec<Bytes>)> {
        let mut chunks = Vec::new();
        for (&peer, o) in self.peers.iter_mut().filter(|(id, _)| ready(**id)) {
            while o.in_flight < WINDOW && !o.queue.is_empty() {
                let mut buf = BytesMut::new();
                let mut keys = Vec::new();
                while buf.len() < CHUNK_BYTES {
                    let Some(k) = o.queue.pop_front() else {
                        break;
                    };
                    o.hinted.remove(&k);
                    if let Some(e) = engine.entry_ref(&k) {
                        put_record(&mut buf, &k, e.version, e.value);
                        keys.push(k);
                    }
                }
                if !keys.is_empty() {
                    o.in_flight += 1;
                    self.pushed += keys.len() as u64;
                    chunks.push((peer, buf.freeze(), keys));
                }
            }
        }
        chunks
    }

    /// A chunk to `peer` was acknowledged.
    pub fn acked(&mut self, peer: u32) {
        if let Some(o) = self.peers.get_mut(&peer) {
            o.in_flight = o.in_flight.saturating_sub(1);
        }
    }

    /// A chunk to `peer` failed: its keys are owed again.
    pub fn failed(&mut self, peer: u32, keys: Vec<Bytes>) {
        if let Some(o) = self.peers.get_mut(&peer) {
            o.in_flight = o.in_flight.saturating_sub(1);
            self.pushed = self.pushed.saturating_sub(keys.len() as u64);
            o.queue.extend(keys);
        }
    }
}

/// The nodes `me` must push a key to after a ring change, given the key's
/// preference list before (`old_live`: the nodes that held it or were receiving
/// it, down ones left out) and now (`new`, down nodes included, with `down`
/// telling which). A node is newly responsible if it is in `new`, not down, and
/// not in `old_live`. Every node of `new` that is neither newly responsible nor
/// down pushes, so the push survives the death of any one pusher.
pub fn newly_responsible(
    old_live: &[u32],
    new: &[u32],
    down: impl Fn(u32) -> bool,
    me: u32,
) -> Vec<u32> {
    let fresh: Vec<u32> = new
        .iter()
        .copied()
        .filter(|&id| !old_live.contains(&id) && !down(id))
        .collect();
    if fresh.is_empty() {
        return fresh;
    }
    if new.contains(&me) && !fresh.contains(&me) && !down(me) {
        fresh
    } else {
        Vec::new()
    }
}

/// Whether `ring`'s preference lists (`new`) put `me` on a range that neither
/// of the lists it had before (`old`: serving and settled) did: it was given
/// ranges whose writes it never saw. Checked at every bound of the three
/// tables, as each list is constant between consecutive bounds of their union.
pub fn gained(me: u32, old: [&PrefTable; 2], new: &PrefTable) -> bool {
    let bounds = new
        .bounds()
        .iter()
        .chain(old[0].bounds())
        .chain(old[1].bounds());
    bounds.copied().any(|b| {
        new.get(b).contains(&me) && !old[0].get(b).contains(&me) && !old[1].get(b).contains(&me)
    })
}

/// This node's own catch-up: it may lack writes (it restarted, was marked
/// down, or was given new ranges), so it asked every live peer for a full
/// resync (`SYNC_REQ`) and waits for each to answer `SYNC_DONE`. Until then it
/// does not count as an up-to-date copy of the keys it may lack: it refuses to
/// answer quorum reads of them, and its own copy does not count toward R when it
/// leads a key. It still stores every write it is sent.
pub struct CatchUp {
    /// Identifies this round's asks (wall-clock ms when it started, or more).
    pub round: u64,
    /// The peers that have not answered.
    pub waiting: BTreeSet<u32>,
    /// The preference lists it was on before it was given new ranges: the keys
    /// it may lack are those outside them. `None`: it may lack any key.
    pub known: Option<[PrefTable; 2]>,
    /// When the round started and when it last asked, in reactor ms.
    pub since: u64,
    pub asked_at: u64,
}

impl CatchUp {
    /// Whether the key with hash `hash` may be missing writes here.
    pub fn behind(&self, me: u32, hash: u64) -> bool {
        match &self.known {
            None => true,
            Some([s, t]) => !s.get(hash).contains(&me) && !t.get(hash).contains(&me),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_live_old_holder_pushes_to_the_newly_responsible() {
        let up = |_| false;
        // Node 3 was down and is back: nodes 1 and 2 push, node 3 does not.
        assert_eq!(newly_responsible(&[1, 2], &[1, 3, 2], up, 1), vec![3]);
        assert_eq!(newly_responsible(&[1, 2], &[1, 3, 2], up, 2), vec![3]);
        assert!(newly_responsible(&[1, 2], &[1, 3, 2], up, 3).is_empty());
        // Node 1 is down now: node 2 pushes alone; node 4, not listed, does not.
        let one_down = |id| id == 1;
        assert_eq!(newly_responsible(&[2], &[1, 3, 2], one_down, 2), vec![3]);
        assert!(newly_responsible(&[2], &[1, 3, 2], one_down, 1).is_empty());
        assert!(newly_responsible(&[2], &[1, 3, 2], one_down, 4).is_empty());
        // A dropped node's range went to node 4.
        assert_eq!(newly_responsible(&[1, 2], &[1, 2, 4], up, 1), vec![4]);
        // Nothing changed, or only a node went down: nobody pushes.
        assert!(newly_responsible(&[1, 2, 3], &[1, 2, 3], up, 1).is_empty());
        assert!(newly_responsible(&[1, 2, 3], &[1, 2, 3], one_down, 2).is_empty());
        // No live old holder: nobody can push (read repair is all that is left).
        assert!(newly_responsible(&[], &[5, 6], up, 5).is_empty());
    }

    fn engine_with(keys: &[&str]) -> Engine {
        let mut e = Engine::default();
        for (i, k) in keys.iter().enumerate() {
            e.apply(k.as_bytes(), i as u64 + 1, Some(b"v"), None);
        }
        e
    }

    #[test]
    fn hints_are_unique_windowed_and_requeued_on_failure() {
        let engine = engine_with(&["a", "b", "c"]);
        let mut r = Resync::default();
        for k in ["a", "b", "a", "c"] {
            r.hint(7, &Bytes::from(k));
        }
        assert_eq!(r.owed(7), 3);
        // Not ready: nothing leaves.
        assert!(r.next_chunks(&engine, |_| false).is_empty());
        let chunks = r.next_chunks(&engine, |p| p == 7);
        assert_eq!(chunks.len(), 1);
        let (peer, payload, keys) = &chunks[0];
        assert_eq!((*peer, keys.len()), (7, 3));
        let parsed = crate::protocol::cluster::parse_records(payload).unwrap();
        let names: Vec<&[u8]> = parsed.iter().map(|e| &e.key[..]).collect();
        assert_eq!(names, [&b"a"[..], b"b", b"c"]);
        assert!(!r.is_idle());
        r.failed(7, keys.clone());
        assert_eq!(r.owed(7), 3);
        let again = r.next_chunks(&engine, |_| true);
        assert_eq!(again[0].2.len(), 3);
        r.acked(7);
        assert!(r.is_idle());
        // A full resync supersedes what was queued.
        r.owe(7, [Bytes::from("a")]);
        r.want_full(7);
        assert_eq!((r.owed(7), r.take_full(|_| true)), (0, vec![7]));
        // A key gone from the engine (dropped meanwhile) is skipped.
        r.owe(7, [Bytes::from("zzz")]);
        assert!(r.next_chunks(&engine, |_| true).is_empty());
        assert!(r.is_idle());
    }

    #[test]
    fn too_many_hints_become_a_full_resync() {
        let mut r = Resync::default();
        for i in 0..=HINT_CAP {
            r.hint(3, &Bytes::from(i.to_string()));
        }
        assert_eq!(r.owed(3), 0);
        assert!(!r.is_idle());
        assert!(r.take_full(|_| false).is_empty());
        assert_eq!(r.take_full(|_| true), vec![3]);
        assert!(r.is_idle());
    }

    #[test]
    fn the_window_bounds_chunks_in_flight() {
        let big = vec![b'x'; CHUNK_BYTES];
        let mut e = Engine::default();
        let keys: Vec<Bytes> = (0..10).map(|i| Bytes::from(format!("k{i}"))).collect();
        for k in &keys {
            e.apply(k, 1, Some(&big), None);
        }
        let mut r = Resync::default();
        r.owe(2, keys);
        assert_eq!(r.next_chunks(&e, |_| true).len(), WINDOW);
        assert!(r.next_chunks(&e, |_| true).is_empty());
        r.acked(2);
        assert_eq!(r.next_chunks(&e, |_| true).len(), 1);
    }

    #[test]
    fn an_ask_waits_for_its_ring_then_for_every_push() {
        let e = engine_with(&["a", "b"]);
        let mut r = Resync::default();
        r.asked(2, 50, 8);
        // This node has ring 7: the ask waits, it is not answered yet.
        r.start_asks(7);
        assert!(r.take_full(|_| true).is_empty());
        assert!(r.finished_asks().is_empty());
        r.start_asks(8);
        assert_eq!(r.take_full(|_| true), vec![2]);
        r.owe(2, e.keys_where(|_| true));
        assert!(r.finished_asks().is_empty(), "keys are still owed");
        let chunks = r.next_chunks(&e, |_| true);
        assert!(r.finished_asks().is_empty(), "a chunk is in flight");
        for _ in chunks {
            r.acked(2);
        }
        assert_eq!(r.finished_asks(), vec![(2, 50)]);
        assert!(!r.is_asking(2));
        // Asked again for that round (the answer was lost): answered again at
        // once, with no second push. A new round pushes everything again.
        r.asked(2, 50, 8);
        assert_eq!(r.finished_asks(), vec![(2, 50)]);
        r.asked(2, 51, 8);
        r.start_asks(8);
        assert_eq!(r.take_full(|_| true), vec![2]);
    }
}
