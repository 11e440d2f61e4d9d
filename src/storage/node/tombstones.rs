//! Tombstone collection. A delete leaves a tombstone so that an older copy of the
//! key arriving later (a late replica write, a hint, a move) cannot bring it back.
//! The key's lead replica collects a tombstone once it is older than the grace
//! period and every node of the key's preference lists (the serving and the
//! settled one) confirms it holds exactly that tombstone: then no replica holds an
//! older value. The grace period covers older copies still in flight. It sends
//! `PURGE` to each, which forgets the key only if its entry is still that
//! tombstone. Nothing is collected while a move is pending, or while any replica
//! is unreachable. With N = 1 the owner collects its own tombstones.
//!
//! Anti-entropy (`repair/anti_entropy.rs`) copies a key one replica has and
//! another lacks, which is also what an old copy of a collected key looks like
//! (an old data directory restored). The two agree through the purge floors
//! (`repair/digest.rs`): every collection here raises the floor of the key's
//! bucket to the tombstone's version, and anti-entropy never creates a live key
//! on a node that holds nothing for it at or below that floor.

use super::*;

/// Tombstone collection in progress.
pub(super) struct Collector {
    /// Tombstones being checked on every replica before they are collected.
    pub(super) purges: HashMap<u64, PurgeCheck>,
    /// The id the next tombstone check gets.
    pub(super) next_purge: u64,
    /// When the next tombstone sweep is due.
    pub(super) next_sweep: Millis,
    /// Tombstones collected since the last sweep logged it.
    pub(super) collected: usize,
}

impl Collector {
    /// Nothing in progress yet.
    pub(super) fn new() -> Collector {
        Collector {
            purges: Default::default(),
            next_purge: 1,
            next_sweep: Default::default(),
            collected: Default::default(),
        }
    }
}

/// A tombstone this node leads the collection of, being confirmed on every replica.
pub(super) struct PurgeCheck {
    key: Bytes,
    version: u64,
    /// Every other node of the key's preference lists.
    members: Vec<u32>,
    /// Those that have not confirmed yet.
    waiting: Vec<u32>,
}

impl StorageNode {
    pub(super) fn sweep_tombstones(&mut self, now: Millis, out: &mut Vec<Output>) {
        let grace = self.cfg.tombstone_grace_ms;
        if now < self.tombstones.next_sweep
            || self.node_id == 0
            || self.ring.has_moves()
            || self.repair.catch_up.is_some()
        {
            return;
        }
        self.tombstones.next_sweep = now + (grace / 2).clamp(100, 5_000);
        if self.tombstones.collected > 0 {
            let n = std::mem::take(&mut self.tombstones.collected);
            log::info!("collected {n} tombstones");
        }
        let tokens: Vec<u64> = self.engine.tokens().collect();
        // Entries minus live keys: skip the scan when there is no tombstone.
        let entries: usize = (tokens.iter())
            .filter_map(|&t| self.engine.sector_of_token(t))
            .map(|s| s.len())
            .sum();
        if entries == self.engine.len() {
            return;
        }
        let wall = self.cfg.clock_base_ms + now;
        let room = MAX_PURGES.saturating_sub(self.tombstones.purges.len());
        let mut old: Vec<(Bytes, u64)> = Vec::new();
        for t in tokens {
            let Some(sector) = self.engine.sector_of_token(t) else {
                continue;
            };
            let aged = |v: u64| (v >> 16).saturating_add(grace) <= wall;
            for e in sector.iter() {
                if e.value.is_none() && aged(e.version) && old.len() < room {
                    old.push((Bytes::copy_from_slice(e.key), e.version));
                }
            }
        }
        let me = self.node_id;
        for (key, version) in old {
            let h = hash64(&key);
            if self.ring.replicas <= 1 {
                self.purge(&key, version);
                continue;
            }
            if self.live_lead(h) != Some(me)
                || self.tombstones.purges.values().any(|c| c.key == key)
            {
                continue;
            }
            let mut members: Vec<u32> = (self.serving_pref.get(h).iter())
                .chain(self.settled_pref.get(h))
                .copied()
                .filter(|&id| id != me)
                .collect();
            members.sort_unstable();
            members.dedup();
            if members.iter().any(|&id| !self.reachable(id)) {
                continue;
            }
            let id = self.tombstones.next_purge;
            self.tombstones.next_purge += 1;
            let deadline = now + self.cfg.request_timeout_ms;
            let fence = self.fence_of(h);
            for &peer in &members {
                let frame = Message::ReplRead {
                    fence,
                    key: key.clone(),
                }
                .encode();
                let token = Waiter::Purge { id };
                // A failed send leaves the check waiting; its deadline ends it.
                let _ = self.mesh.forward(peer, frame, token, 1, deadline, out);
            }
            let waiting = members.clone();
            let check = PurgeCheck {
                key,
                version,
                members,
                waiting,
            };
            self.tombstones.purges.insert(id, check);
        }
    }

    /// A replica's copy for tombstone check `id`: the check goes on only if it is
    /// the same tombstone; once all confirmed, every replica forgets it.
    pub(super) fn purge_answer(
        &mut self,
        now: Millis,
        id: u64,
        peer: u32,
        frame: &Frame,
        out: &mut Vec<Output>,
    ) {
        let Some(c) = self.tombstones.purges.get_mut(&id) else {
            return;
        };
        let same = matches!(
            Reply::decode(frame),
            Ok(Reply::Found(r)) if r.value.is_none() && r.version == c.version
        );
        if !same {
            self.tombstones.purges.remove(&id);
            return;
        }
        c.waiting.retain(|&p| p != peer);
        if !c.waiting.is_empty() {
            return;
        }
        let c = self.tombstones.purges.remove(&id).expect("checked above");
        let purge = Message::Purge {
            version: c.version,
            key: c.key.clone(),
        }
        .encode();
        let deadline = now + self.cfg.request_timeout_ms;
        for peer in c.members {
            let frame = purge.clone();
            let _ = (self.mesh).forward(peer, frame, Waiter::Ignore, 1, deadline, out);
        }
        self.purge(&c.key, c.version);
    }
}
