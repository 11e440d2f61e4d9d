//! Repair: bringing replicas that missed writes up to date. A node that may lack
//! writes (restarted, back from down, given new ranges) catches up by asking its
//! peers for their keys (`SYNC_REQ`, see [`resync::CatchUp`]); the
//! writes other replicas missed (hints) and the keys nodes became responsible for
//! are pushed to them in `MIGRATE` chunks (see [`resync`]).

pub(super) mod anti_entropy;
pub(super) mod digest;
pub(super) mod resync;

use super::*;

/// Bringing replicas up to date: hints and resync owed to peers, and this
/// node's own catch-up.
pub(super) struct Repair {
    /// Writes other replicas missed, and keys nodes are newly responsible for.
    pub(super) resync: Resync,
    /// This node's catch-up, while it waits for its peers' pushes.
    pub(super) catch_up: Option<CatchUp>,
    /// Peers a catch-up went without because they were down: they may hold
    /// writes nobody else has, so this node is behind on the keys it shares
    /// with them (see [`StorageNode::behind`]) until they are back and have
    /// pushed them, or are out of the ring. By peer: when it was last asked
    /// and the round it was asked in (0: not asked yet).
    pub(super) unheard: std::collections::BTreeMap<u32, (Millis, u64)>,
    /// This process has installed a ring (the first one starts a catch-up if
    /// it lists this node serving: a restarted node cannot know what it missed).
    pub(super) seen_ring: bool,
    /// A ring showed this node down: it catches up once it is back.
    pub(super) was_down: bool,
    /// This process started serving without the data it had acknowledged (a
    /// restart without a data directory): writes it acknowledged may now be
    /// on one other replica alone, so `unheard` peers hold it back.
    pub(super) lost_writes: bool,
}

impl Repair {
    /// Nothing in progress yet.
    pub(super) fn new() -> Repair {
        Repair {
            resync: Default::default(),
            catch_up: Default::default(),
            unheard: Default::default(),
            seen_ring: Default::default(),
            was_down: Default::default(),
            lost_writes: Default::default(),
        }
    }
}

impl StorageNode {
    /// Asks the peers a catch-up went without (see `unheard`) for their keys
    /// once the ring has them live again, and again every
    /// [`CATCH_UP_ASK_MS`] until they answer (`SYNC_DONE`, see
    /// [`StorageNode::unheard_done`]); forgets those out of the ring.
    pub(super) fn ask_unheard(&mut self, now: Millis, out: &mut Vec<Output>) {
        let ring = &self.ring;
        self.repair.unheard.retain(|&p, _| ring.node(p).is_some());
        let round = self.cfg.clock_base_ms + now;
        let back: Vec<u32> = (self.repair.unheard.iter_mut())
            .filter(|(&p, _)| ring.node(p).is_some_and(|e| e.state != NodeState::Down))
            .filter(|(_, (at, asked))| *asked == 0 || now >= at + CATCH_UP_ASK_MS)
            .map(|(&p, ask)| {
                *ask = (now, round);
                p
            })
            .collect();
        let waiting = self.repair.catch_up.as_ref().map(|c| &c.waiting);
        let ask = Message::SyncReq {
            node_id: self.node_id,
            round,
            epoch: self.ring.epoch,
        }
        .encode();
        let deadline = now + self.cfg.request_timeout_ms;
        for peer in back {
            if waiting.is_some_and(|w| w.contains(&peer)) {
                continue;
            }
            log::info!("node {peer} is back; asking it for the keys it holds");
            let frame = ask.clone();
            let _ = (self.mesh).forward(peer, frame, Waiter::Ignore, 1, deadline, out);
        }
    }

    /// Whether installing `ring` (before it replaces the current one) leaves
    /// this node lacking writes: `Some(None)` for any key (a restart: the first
    /// ring of this process lists it serving; or it was down and is back),
    /// `Some(Some(lists))` for the keys outside the preference lists it had
    /// (it was given a dropped node's ranges), `None` if it lacks nothing.
    #[allow(clippy::option_option)]
    pub(super) fn needs_catch_up(
        &mut self,
        ring: &Ring,
        serving: &Ring,
        serving_pref: &PrefTable,
    ) -> Option<Option<[PrefTable; 2]>> {
        let me = self.node_id;
        let first = !std::mem::replace(&mut self.repair.seen_ring, true);
        if me == 0 || ring.replicas < 2 {
            return None;
        }
        let state = ring.node(me).map(|n| n.state);
        if state == Some(NodeState::Down) {
            self.repair.was_down = true;
            return None;
        }
        // Not serving yet (a new node): the handoff fills it.
        serving.node(me)?;
        if first || std::mem::take(&mut self.repair.was_down) {
            self.repair.lost_writes |= first && self.journal.is_none();
            return Some(None);
        }
        let old = [&self.serving_pref, &self.settled_pref];
        gained(me, old, serving_pref).then(|| Some(old.map(Clone::clone)))
    }

    /// Starts a catch-up round (see [`CatchUp`]): asks every live peer for
    /// everything the two share. `known`: the preference lists this node was on
    /// before, when it only gained ranges; a round already under way keeps the
    /// widest view of what may be missing.
    pub(super) fn start_catch_up(
        &mut self,
        now: Millis,
        known: Option<[PrefTable; 2]>,
        out: &mut Vec<Output>,
    ) {
        let me = self.node_id;
        if self
            .repair
            .catch_up
            .as_ref()
            .is_some_and(|c| c.known.is_none())
        {
            // Already asking for every key: the pushes under way cover this too
            // (writes it misses meanwhile are hinted).
            return;
        }
        let prev = self.repair.catch_up.take();
        let known = match prev.as_ref() {
            Some(p) => p.known.as_ref().and(known.as_ref()).and(p.known.clone()),
            None => known,
        };
        let round = (self.cfg.clock_base_ms + now).max(prev.as_ref().map_or(0, |p| p.round + 1));
        let (live, down): (Vec<_>, Vec<_>) = (self.ring.nodes().iter())
            .filter(|e| e.id != me)
            .partition(|e| e.state != NodeState::Down);
        (self.repair.unheard).extend(down.iter().map(|e| (e.id, (now, 0))));
        let waiting = live.iter().map(|e| e.id).collect();
        log::info!(
            "epoch {}: catching up ({}): asking {:?} for their keys (round {round})",
            self.ring.epoch,
            if known.is_some() {
                "new ranges"
            } else {
                "every key"
            },
            waiting
        );
        self.repair.catch_up = Some(CatchUp {
            round,
            waiting,
            known,
            since: prev.map_or(now, |p| p.since),
            asked_at: now,
        });
        self.ask_catch_up(now, out);
        self.catch_up_progress(now, None);
    }

    /// Sends this round's `SYNC_REQ` to every peer that has not answered.
    pub(super) fn ask_catch_up(&mut self, now: Millis, out: &mut Vec<Output>) {
        let Some(c) = self.repair.catch_up.as_mut() else {
            return;
        };
        c.asked_at = now;
        let ask = Message::SyncReq {
            node_id: self.node_id,
            round: c.round,
            epoch: self.ring.epoch,
        }
        .encode();
        let deadline = now + self.cfg.request_timeout_ms;
        for &peer in &c.waiting {
            let frame = ask.clone();
            let _ = (self.mesh).forward(peer, frame, Waiter::Ignore, 1, deadline, out);
        }
    }

    /// Counts `done` (a peer's `SYNC_DONE`: peer, round), forgets peers the
    /// ring has down or gone, and ends the catch-up once nobody is left.
    pub(super) fn catch_up_progress(&mut self, now: Millis, done: Option<(u32, u64)>) {
        let Some(c) = self.repair.catch_up.as_mut() else {
            return;
        };
        if let Some((peer, _)) = done.filter(|d| d.1 == c.round) {
            c.waiting.remove(&peer);
        }
        let ring = &self.ring;
        let unheard = &mut self.repair.unheard;
        c.waiting.retain(|&p| {
            let live = ring.node(p).is_some_and(|e| e.state != NodeState::Down);
            if !live {
                unheard.insert(p, (now, 0));
            }
            live
        });
        if c.waiting.is_empty() {
            log::info!(
                "caught up: every live peer pushed its keys ({} ms)",
                now.saturating_sub(c.since)
            );
            self.repair.catch_up = None;
        }
    }

    /// Ends a catch-up as if every peer had answered (tests of other things).
    #[cfg(test)]
    pub(crate) fn end_catch_up(&mut self) {
        self.repair.catch_up = None;
    }

    /// Whether this node may lack writes to the key with hash `hash`.
    pub(super) fn behind(&self, hash: u64) -> bool {
        let catching_up = self.repair.catch_up.as_ref();
        catching_up.is_some_and(|c| c.behind(self.node_id, hash))
            || (self.repair.lost_writes
                && !self.repair.unheard.is_empty()
                && self.shares_with_unheard(hash))
    }

    /// Whether the key with ring hash `hash` is listed (serving or settled)
    /// with a peer a catch-up went without: a write acknowledged by that peer
    /// and by this node's lost copy (see `Repair::lost_writes`) may be on
    /// that peer alone. A node that kept its data needs no such wait: a write
    /// it missed is on W other replicas.
    fn shares_with_unheard(&self, hash: u64) -> bool {
        let lists = [self.serving_pref.get(hash), self.settled_pref.get(hash)];
        let unheard = |id: &u32| self.repair.unheard.contains_key(id);
        lists.iter().any(|l| l.iter().any(unheard))
    }

    /// The peers this node is behind on (see [`StorageNode::behind`]):
    /// those its catch-up went without, if it restarted without its data.
    pub(super) fn awaiting_peers(&self) -> Vec<u32> {
        match self.repair.lost_writes {
            true => self.repair.unheard.keys().copied().collect(),
            false => Vec::new(),
        }
    }

    /// A peer's `SYNC_DONE` of `round`: if it answers this node's ask of a
    /// peer its catch-up went without, that peer has pushed what it holds.
    pub(super) fn unheard_done(&mut self, peer: u32, round: u64) {
        if self
            .repair
            .unheard
            .get(&peer)
            .is_some_and(|&(_, r)| r == round)
        {
            log::info!("node {peer}, back, pushed the keys it holds");
            self.repair.unheard.remove(&peer);
        }
    }

    /// Queues the keys this node must push because `ring` makes nodes newly
    /// responsible for them (back from down, or given a dropped node's tokens);
    /// see [`newly_responsible`].
    pub(super) fn owe_newcomers(&mut self, ring: &Ring, serving: &Ring, now_serving: &PrefTable) {
        let me = self.node_id;
        let n = ring.replicas.max(1) as usize;
        let old = &self.ring;
        let down = |r: &Ring, id: u32| r.node(id).is_none_or(|e| e.state == NodeState::Down);
        // Only a node that is live now and was down, absent or differently
        // placed before can be newly responsible for anything.
        let changed = serving.nodes().iter().any(|e| {
            e.state != NodeState::Down
                && old
                    .node(e.id)
                    .is_none_or(|o| o.state == NodeState::Down || o.tokens != e.tokens)
        });
        if n < 2 || old.is_empty() || !changed {
            return;
        }
        let (was_serving, was_settled) = (&self.serving_pref, &self.settled_pref);
        let mut owed: std::collections::BTreeMap<u32, Vec<Bytes>> = Default::default();
        for key in self.engine.keys_where(|h| now_serving.get(h).contains(&me)) {
            let h = hash64(&key);
            let old_live: Vec<u32> = was_serving
                .get(h)
                .iter()
                .chain(was_settled.get(h))
                .copied()
                .filter(|&id| !down(old, id))
                .collect();
            for t in newly_responsible(&old_live, now_serving.get(h), |id| down(ring, id), me) {
                owed.entry(t).or_default().push(key.clone());
            }
        }
        for (peer, keys) in owed {
            if self.repair.resync.is_asking(peer) {
                continue;
            }
            log::info!(
                "epoch {}: node {peer} is newly responsible for {} keys here; resyncing it",
                ring.epoch,
                keys.len()
            );
            self.repair.resync.owe(peer, keys);
        }
    }

    /// Sends the hint and resync chunks the windows allow to reachable peers.
    pub(super) fn pump_resync(&mut self, now: Millis, out: &mut Vec<Output>) {
        let n = self.ring.replicas.max(1) as usize;
        if self.node_id == 0 || n < 2 {
            return;
        }
        let me = self.node_id;
        let ready: HashSet<u32> = (self.ring.nodes().iter())
            .map(|e| e.id)
            .filter(|&p| p != me && self.reachable(p))
            .collect();
        self.repair.resync.start_asks(self.ring.epoch);
        for peer in self.repair.resync.take_full(|p| ready.contains(&p)) {
            let (serving, settled) = (&self.serving_pref, &self.settled_pref);
            let keys = (self.engine)
                .keys_where(|h| serving.get(h).contains(&peer) || settled.get(h).contains(&peer));
            log::info!("resyncing {} keys to node {peer}", keys.len());
            self.repair.resync.owe(peer, keys);
        }
        let chunks = (self.repair.resync).next_chunks(&self.engine, |p| ready.contains(&p));
        for (peer, payload, keys) in chunks {
            let frame = Frame::new(op::MIGRATE, 0, 0, payload);
            let deadline = now + self.cfg.request_timeout_ms;
            let token = Waiter::Resync { keys };
            if let Err(fwd) = self.mesh.forward(peer, frame, token, 1, deadline, out) {
                if let Waiter::Resync { keys } = fwd.token {
                    self.repair.resync.failed(peer, keys);
                }
            }
        }
        for (peer, round) in self.repair.resync.finished_asks() {
            log::info!("pushed node {peer} every key it asked for (round {round})");
            let frame = Message::SyncDone { node_id: me, round }.encode();
            let deadline = now + self.cfg.request_timeout_ms;
            let _ = (self.mesh).forward(peer, frame, Waiter::Ignore, 1, deadline, out);
        }
    }
}
