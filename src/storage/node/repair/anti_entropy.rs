//! Anti-entropy: replicas compare their data in the background and exchange only
//! what differs, so copies converge even when nobody reads them and every hint
//! was lost.
//!
//! Each node keeps a digest per token range of the serving ring (see
//! [`super::digest`]), updated as its data changes. The lead replica of a range
//! (the first reachable node of its serving preference list) compares it with
//! each other replica in turn, one comparison at a time, at most
//! [`NodeConfig::anti_entropy_rate`] comparisons started a second:
//!
//! 1. `AE_DIGEST` (its root) to the peer. The peer answers `OK` if its root is
//!    the same (done), or its leaves (`AE_LEAVES`).
//! 2. The lead lists its entries (key, version, tombstone or not; no values)
//!    under the leaves that differ, in `AE_KEYS`, at most [`KEYS_BYTES`] of them
//!    (whole leaves; the rest wait for the next comparison of the range).
//! 3. The peer answers `AE_DIFF`: its entries that are newer than the lead's, or
//!    that the lead lacks (with values, at most [`DIFF_BYTES`]), and the keys
//!    whose entries it wants (the lead's are newer, or it lacks them).
//! 4. The lead stores the peer's entries and pushes the wanted ones in
//!    `MIGRATE` chunks. Both go through the node's one write path (`store`:
//!    the newer version wins, an equal one is a repeat, tombstones stay), with
//!    the HLC moved past every version taken, as for any peer's records. The
//!    keys it took from the peer are owed to the range's other replicas, like
//!    hints (see `resync.rs`), so they need not wait for their own comparison.
//!
//! With N replicas each range's lead converges with every other replica, so
//! all of them converge with each other. The lead takes its (range, peer)
//! pairs in turn; a comparison whose differing leaves did not all fit in one
//! `AE_KEYS` is repeated at once (at the same rate) before it moves on.
//!
//! Nothing is compared without an id and a ring, with N = 1, while any move is
//! pending (the ring has joining or leaving nodes, or this node hands keys
//! over), or while this node leaves. A node catching up compares as any other
//! (newer versions win, so what it lacks costs nothing; and a catch-up that
//! never ends must not leave its ranges uncompared). A peer answers only for a range its
//! ring (of the same epoch) has and it replicates; otherwise it refuses
//! (`off-list`) and the comparison is dropped. A peer that is catching up
//! answers: its copies are real, and a catch-up that never ends (a peer that
//! never pushes) is exactly what anti-entropy must still repair.
//!
//! Tombstone collection and anti-entropy agree through the purge floors (see
//! [`super::digest`]): a live entry is never created by anti-entropy on a node
//! that holds nothing for the key if the node collected a newer tombstone in
//! that key's bucket (or may have, before it started). A collected delete
//! therefore stays deleted even when an old copy comes back from outside the
//! protocol; such a copy stays on the node that has it (until it is read,
//! since read repair has no such rule) and its range keeps being compared.
//!
//! Caveats: a comparison lists every entry under each differing leaf, so with
//! many keys per range and scattered differences the lists approach the
//! range's key count (names and versions, not values). The digests of every
//! range of the ring are kept, not only those this node replicates.

use super::super::moves::handoff::CHUNK_BYTES;
use super::digest::{Digests, Floors, LEAVES};
use super::*;
use crate::protocol::cluster::ae::{keys_frame, put_stub, stub_len};
use crate::protocol::cluster::{record_len, Stub};
use crate::ring::Token;
use crate::storage::engine::EntryRef;
use std::collections::BTreeMap;

/// Bytes of stubs one `AE_KEYS` carries at most (whole leaves; at least one).
pub const KEYS_BYTES: usize = 256 << 10;
/// Bytes of records one `AE_DIFF` carries at most.
pub const DIFF_BYTES: usize = 1 << 20;

/// A range's comparisons, for STATUS.
#[derive(Debug, Default, Clone, Copy)]
pub(in super::super) struct RangeStat {
    /// When its last comparison completed.
    last: Option<Millis>,
    /// Keys repaired by its comparisons (pulled and pushed).
    repaired: u64,
}

/// The comparison in flight.
struct Compare {
    /// Its id, carried by the mesh's waiter.
    id: u64,
    /// The range's last token.
    end: Token,
    peer: u32,
    /// The leaves listed in `AE_KEYS`, when that was sent.
    listed: Vec<u16>,
    /// Not every differing leaf fit in `AE_KEYS`.
    truncated: bool,
}

/// Anti-entropy's state: the digests, the floors, and the comparisons.
pub(in super::super) struct AntiEntropy {
    pub(in super::super) digests: Digests,
    pub(in super::super) floors: Floors,
    /// When the next comparison may start.
    next_at: Millis,
    /// Index of the next (range, peer) pair among this node's.
    cursor: usize,
    in_flight: Option<Compare>,
    next_id: u64,
    /// Per range, by its last token.
    stats: BTreeMap<Token, RangeStat>,
    /// Comparisons completed.
    compared: u64,
    /// Keys repaired, all ranges.
    repaired: u64,
    /// Payload bytes of the messages and replies anti-entropy sent, and of
    /// the records it owed to other replicas.
    bytes: u64,
}

impl AntiEntropy {
    /// Nothing compared yet.
    pub(in super::super) fn new() -> AntiEntropy {
        AntiEntropy {
            digests: Digests::default(),
            floors: Floors::new(0),
            next_at: 0,
            cursor: 0,
            in_flight: None,
            next_id: 1,
            stats: BTreeMap::new(),
            compared: 0,
            repaired: 0,
            bytes: 0,
        }
    }

    /// The process started at wall clock `wall_ms`: tombstones its earlier
    /// lives collected are at most `grace_ms` older.
    /// Comparisons completed, keys repaired, payload bytes sent (`/metrics`).
    pub(in super::super) fn counters(&self) -> [u64; 3] {
        [self.compared, self.repaired, self.bytes]
    }

    /// Counts `n` payload bytes sent.
    fn sent(&mut self, n: usize) {
        self.bytes += n as u64;
    }

    pub(in super::super) fn started(&mut self, wall_ms: u64, grace_ms: u64) {
        let start = match wall_ms.checked_sub(grace_ms) {
            Some(ms) if ms > 0 => (ms << 16) | 0xffff,
            _ => 0,
        };
        self.floors = Floors::new(start);
    }
}

/// Whether `leaf` is in the sorted list `set`.
fn listed(set: &[u16], leaf: usize) -> bool {
    set.binary_search(&(leaf as u16)).is_ok()
}

impl StorageNode {
    /// An entry changed from `old` to `new` (version, live): the digests follow.
    pub(in super::super) fn ae_changed(
        &mut self,
        hash: u64,
        old: Option<(u64, bool)>,
        new: Option<(u64, bool)>,
    ) {
        self.anti_entropy.digests.replace(hash, old, new);
    }

    /// The digest leaf of key hash `hash`, fetched into the cache ahead of a
    /// write that will change it (see [`Digests::slot`]).
    pub(in super::super) fn ae_slot(&self, hash: u64) -> Option<usize> {
        self.anti_entropy.digests.slot(hash)
    }

    /// [`StorageNode::ae_changed`] with the leaf [`StorageNode::ae_slot`] found.
    pub(in super::super) fn ae_changed_at(
        &mut self,
        slot: Option<usize>,
        hash: u64,
        old: Option<(u64, bool)>,
        new: Option<(u64, bool)>,
    ) {
        self.anti_entropy.digests.replace_at(slot, hash, old, new);
    }

    /// After a ring was installed (and keys maybe dropped): rebuilds the
    /// digests if the ranges changed or keys went.
    pub(in super::super) fn ae_ring_installed(&mut self, dropped: bool) {
        let ae = &mut self.anti_entropy;
        let bounds = self.serving_pref.bounds();
        if dropped || ae.digests.bounds() != bounds {
            ae.digests.rebuild(bounds, &self.engine);
            ae.stats.retain(|t, _| bounds.binary_search(t).is_ok());
            ae.in_flight = None;
        }
    }

    /// Whether this node may compare now (see the module docs).
    fn ae_may_compare(&self) -> bool {
        self.node_id != 0
            && self.ring.replicas >= 2
            && self.cfg.anti_entropy_rate > 0
            && !self.ring.has_moves()
            && self.handoff.is_none()
            && !self.membership.leaving
    }

    /// The (range end, peer) pairs this node compares: each range it leads,
    /// with each other reachable replica.
    fn ae_pairs(&self) -> Vec<(Token, u32)> {
        let me = self.node_id;
        let mut pairs = Vec::new();
        for &end in self.anti_entropy.digests.bounds() {
            if self.live_lead(end) != Some(me) {
                continue;
            }
            for &peer in self.serving_pref.get(end) {
                if peer != me && self.reachable(peer) {
                    pairs.push((end, peer));
                }
            }
        }
        pairs
    }

    /// Starts the next comparison if one is due (called every tick, when one
    /// completes, and by a timer when one completed before the next was due).
    pub(in super::super) fn pump_anti_entropy(&mut self, now: Millis, out: &mut Vec<Output>) {
        let ae = &self.anti_entropy;
        if ae.in_flight.is_some() || !self.ae_may_compare() {
            return;
        }
        if now < ae.next_at {
            let id = TIMER_ANTI_ENTROPY;
            return out.push(Output::Timer { at: ae.next_at, id });
        }
        let pairs = self.ae_pairs();
        if pairs.is_empty() {
            return;
        }
        let (end, peer) = pairs[self.anti_entropy.cursor % pairs.len()];
        let ae = &mut self.anti_entropy;
        ae.cursor %= pairs.len();
        ae.next_at = now + 1000 / Millis::from(self.cfg.anti_entropy_rate.max(1));
        let Some(range) = ae.digests.range_ending(end) else {
            return;
        };
        let id = ae.next_id;
        ae.next_id += 1;
        let frame = Message::AeDigest {
            end,
            epoch: self.ring.epoch,
            root: ae.digests.root(range),
        }
        .encode();
        ae.in_flight = Some(Compare {
            id,
            end,
            peer,
            listed: Vec::new(),
            truncated: false,
        });
        ae.sent(frame.payload.len());
        self.send_comparison(now, (id, peer), frame, out);
    }

    /// Sends the comparison in flight's next message to its peer; a link that
    /// cannot take it ends the comparison.
    fn send_comparison(
        &mut self,
        now: Millis,
        (id, peer): (u64, u32),
        frame: Frame,
        out: &mut Vec<Output>,
    ) {
        let deadline = now + self.cfg.request_timeout_ms;
        let token = Waiter::AntiEntropy { id };
        if self
            .mesh
            .forward(peer, frame, token, 1, deadline, out)
            .is_err()
        {
            self.anti_entropy.in_flight = None;
        }
    }

    /// A comparison's message failed (unreachable, timed out): it is dropped.
    pub(in super::super) fn ae_failed(&mut self, id: u64) {
        let ae = &mut self.anti_entropy;
        if ae.in_flight.as_ref().is_some_and(|c| c.id == id) {
            ae.in_flight = None;
            ae.cursor += 1;
        }
    }

    /// The peer's answer to this node's `AE_DIGEST` or `AE_KEYS`.
    pub(in super::super) fn ae_answer(
        &mut self,
        now: Millis,
        id: u64,
        frame: &Frame,
        out: &mut Vec<Output>,
    ) {
        let Some(c) = self.anti_entropy.in_flight.take_if(|c| c.id == id) else {
            return;
        };
        match Reply::decode(frame) {
            Ok(Reply::Ok) => self.ae_done(now, &c, 0),
            Ok(Reply::Leaves(leaves)) if c.listed.is_empty() => {
                self.ae_send_keys(now, c, &leaves, out);
            }
            Ok(Reply::Diff { records, wants }) if !c.listed.is_empty() => {
                let n = self.ae_apply_diff(now, &c, records, &wants, out);
                self.ae_done(now, &c, n);
            }
            _ => self.anti_entropy.cursor += 1,
        }
        self.pump_anti_entropy(now, out);
    }

    /// A comparison of `c`'s range completed, `n` keys repaired.
    fn ae_done(&mut self, now: Millis, c: &Compare, n: u64) {
        let ae = &mut self.anti_entropy;
        let stat = ae.stats.entry(c.end).or_default();
        stat.last = Some(now);
        stat.repaired += n;
        ae.compared += 1;
        ae.repaired += n;
        if !c.truncated {
            ae.cursor += 1;
        }
    }

    /// The entries this node holds in range `range` under the sorted leaves
    /// `set`, with their ring hashes.
    fn ae_entries(&self, range: usize, set: &[u16]) -> Vec<(u64, EntryRef<'_>)> {
        let d = &self.anti_entropy.digests;
        let (_, end) = d.span(range);
        (self.engine.sector_for(end).iter())
            .map(|e| (hash64(e.key), e))
            .filter(|(h, _)| d.contains(range, *h) && listed(set, d.leaf_of(range, *h)))
            .collect()
    }

    /// The peer's leaves differ from ours somewhere: list our entries under
    /// the leaves that differ, as many whole leaves as fit in [`KEYS_BYTES`].
    fn ae_send_keys(&mut self, now: Millis, mut c: Compare, theirs: &[u64], out: &mut Vec<Output>) {
        let d = &self.anti_entropy.digests;
        let Some(range) = d.range_ending(c.end).filter(|_| theirs.len() == LEAVES) else {
            self.anti_entropy.cursor += 1;
            return;
        };
        let ours = d.leaves(range);
        let differ: Vec<u16> = (0..LEAVES)
            .filter(|&l| ours[l] != theirs[l])
            .map(|l| l as u16)
            .collect();
        if differ.is_empty() {
            return self.ae_done(now, &c, 0);
        }
        let entries = self.ae_entries(range, &differ);
        let mut per_leaf: BTreeMap<usize, Vec<&EntryRef<'_>>> = BTreeMap::new();
        for (h, e) in &entries {
            per_leaf.entry(d.leaf_of(range, *h)).or_default().push(e);
        }
        let mut buf = BytesMut::new();
        for &leaf in &differ {
            let list = per_leaf.get(&(leaf as usize)).map_or(&[][..], |v| &v[..]);
            let size: usize = list.iter().map(|e| stub_len(e.key.len())).sum();
            if !c.listed.is_empty() && buf.len() + size > KEYS_BYTES {
                c.truncated = true;
                break;
            }
            c.listed.push(leaf);
            for e in list {
                put_stub(&mut buf, e.key, e.version, e.value.is_some());
            }
        }
        let frame = keys_frame(c.end, &c.listed, &buf);
        self.anti_entropy.sent(frame.payload.len());
        let (id, peer) = (c.id, c.peer);
        self.anti_entropy.in_flight = Some(c);
        self.send_comparison(now, (id, peer), frame, out);
    }

    /// Stores the peer's newer entries and pushes the ones it wants; returns
    /// how many keys that repaired.
    fn ae_apply_diff(
        &mut self,
        now: Millis,
        c: &Compare,
        records: Vec<Record>,
        wants: &[Bytes],
        out: &mut Vec<Output>,
    ) -> u64 {
        let Some(range) = self.anti_entropy.digests.range_ending(c.end) else {
            return 0;
        };
        let wall = self.cfg.clock_base_ms + now;
        let mut pulled = Vec::new();
        for r in records {
            let h = hash64(&r.key);
            let d = &self.anti_entropy.digests;
            if !d.contains(range, h) || !listed(&c.listed, d.leaf_of(range, h)) {
                continue;
            }
            let held = self.engine.entry_ref_hashed(h, &r.key).map(|e| e.version);
            let creates_live = held.is_none() && r.value.is_some();
            if self.hlc.admits(wall, r.version).is_err()
                || held.is_some_and(|v| v >= r.version)
                || (creates_live && !self.anti_entropy.floors.admits(h, r.version))
            {
                continue;
            }
            self.hlc.observe(r.version);
            if self.store((&r.key, h), r.version, r.value.as_deref(), None) == Applied::Stored {
                pulled.push(r.key);
            }
        }
        // What the peer had, the range's other replicas may lack too: they are
        // owed it like a hint, without waiting for their own comparison.
        let me = self.node_id;
        for &other in self.serving_pref.get(c.end) {
            if other != me && other != c.peer && !pulled.is_empty() {
                self.repair.resync.owe(other, pulled.iter().cloned());
                let size: usize = (pulled.iter())
                    .filter_map(|k| self.engine.entry_ref(k))
                    .map(|e| record_len(e.key.len(), e.value.map(<[u8]>::len)))
                    .sum();
                self.anti_entropy.sent(size);
            }
        }
        pulled.len() as u64 + self.ae_push(now, c, range, wants, out)
    }

    /// Pushes this node's entries of `wants` (keys of the compared leaves) to
    /// the peer in `MIGRATE` chunks; returns how many.
    fn ae_push(
        &mut self,
        now: Millis,
        c: &Compare,
        range: usize,
        wants: &[Bytes],
        out: &mut Vec<Output>,
    ) -> u64 {
        let d = &self.anti_entropy.digests;
        let mut chunks = Vec::new();
        let mut buf = BytesMut::new();
        let mut n = 0;
        for key in wants {
            let h = hash64(key);
            if !d.contains(range, h) || !listed(&c.listed, d.leaf_of(range, h)) {
                continue;
            }
            let Some(e) = self.engine.entry_ref_hashed(h, key) else {
                continue;
            };
            put_record(&mut buf, key, e.version, e.value);
            n += 1;
            if buf.len() >= CHUNK_BYTES {
                chunks.push(std::mem::take(&mut buf).freeze());
            }
        }
        if !buf.is_empty() {
            chunks.push(buf.freeze());
        }
        let deadline = now + self.cfg.request_timeout_ms;
        for payload in chunks {
            self.anti_entropy.sent(payload.len());
            let frame = Frame::new(op::MIGRATE, 0, 0, payload);
            let _ = (self.mesh).forward(c.peer, frame, Waiter::Ignore, 1, deadline, out);
        }
        n
    }

    /// A peer's `AE_DIGEST`: `OK` if the roots match, else our leaves.
    pub(in super::super) fn ae_serve_digest(
        &mut self,
        end: Token,
        epoch: u64,
        root: u64,
    ) -> (u8, Bytes) {
        let range = match self.ae_serving_range(end, epoch) {
            Ok(r) => r,
            Err(refusal) => return reply(Reply::Refused(refusal)),
        };
        let d = &self.anti_entropy.digests;
        if d.root(range) == root {
            return reply(Reply::Ok);
        }
        let answer = reply(Reply::Leaves(d.leaves(range).to_vec()));
        self.anti_entropy.sent(answer.1.len());
        answer
    }

    /// The range ending at `end` if this node answers comparisons of it: same
    /// ring epoch, a range of its ring, and a replica of it.
    fn ae_serving_range(&self, end: Token, epoch: u64) -> Result<usize, Refusal> {
        let off = Refusal::OffList {
            epoch: self.ring.epoch,
        };
        let range = (self.anti_entropy.digests.range_ending(end)).ok_or(off)?;
        if epoch != self.ring.epoch || self.node_id == 0 {
            return Err(off);
        }
        self.check_replica_of(end)?;
        Ok(range)
    }

    /// A peer's `AE_KEYS`: our entries under those leaves that are newer or
    /// that it lacks, and the keys we want from it.
    pub(in super::super) fn ae_serve_keys(
        &mut self,
        end: Token,
        leaves: &[u16],
        stubs: &[Stub],
    ) -> (u8, Bytes) {
        let range = match self.ae_serving_range(end, self.ring.epoch) {
            Ok(r) => r,
            Err(refusal) => return reply(Reply::Refused(refusal)),
        };
        let mut set: Vec<u16> = leaves
            .iter()
            .copied()
            .filter(|&l| (l as usize) < LEAVES)
            .collect();
        set.sort_unstable();
        set.dedup();
        let d = &self.anti_entropy.digests;
        let mut theirs: HashMap<&[u8], (u64, bool)> = HashMap::with_capacity(stubs.len());
        for s in stubs {
            let h = hash64(&s.key);
            if d.contains(range, h) && listed(&set, d.leaf_of(range, h)) {
                theirs.insert(&s.key, (s.version, s.live));
            }
        }
        let (mut records, mut wants, mut bytes) = (Vec::new(), Vec::new(), 0);
        for (_, e) in self.ae_entries(range, &set) {
            let newer = match theirs.remove(e.key) {
                Some((v, _)) if v > e.version => {
                    wants.push(Bytes::copy_from_slice(e.key));
                    false
                }
                Some((v, _)) => v < e.version,
                None => true,
            };
            let size = record_len(e.key.len(), e.value.map(<[u8]>::len));
            if newer && bytes + size <= DIFF_BYTES {
                bytes += size;
                records.push(Record {
                    key: Bytes::copy_from_slice(e.key),
                    version: e.version,
                    value: e.value.map(Bytes::copy_from_slice),
                });
            }
        }
        for (key, (version, live)) in theirs {
            if !live || self.anti_entropy.floors.admits(hash64(key), version) {
                wants.push(Bytes::copy_from_slice(key));
            }
        }
        let answer = reply(Reply::Diff { records, wants });
        self.anti_entropy.sent(answer.1.len());
        answer
    }

    /// The `anti_entropy` object of STATUS: the rate, the node's counters (the
    /// payload bytes it sent for anti-entropy among them), and
    /// per range this node leads the age of its last comparison and the keys
    /// its comparisons repaired.
    pub(in super::super) fn ae_status(&self, now: Millis) -> serde_json::Value {
        let ae = &self.anti_entropy;
        let me = self.node_id;
        let ranges: Vec<serde_json::Value> = (ae.digests.bounds().iter())
            .filter(|&&end| me != 0 && self.serving_pref.get(end).first() == Some(&me))
            .map(|&end| {
                let s = ae.stats.get(&end).copied().unwrap_or_default();
                serde_json::json!({
                    "end": end,
                    "age_ms": s.last.map(|t| now.saturating_sub(t)),
                    "keys_repaired": s.repaired,
                })
            })
            .collect();
        serde_json::json!({
            "rate": self.cfg.anti_entropy_rate,
            "comparisons": ae.compared,
            "keys_repaired": ae.repaired,
            "bytes_sent": ae.bytes,
            "ranges": ranges,
        })
    }
}

/// A reply's op and payload.
fn reply(r: Reply) -> (u8, Bytes) {
    let f = r.encode();
    (f.op, f.payload)
}
