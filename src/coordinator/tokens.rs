//! Token plans and ring changes: where a new node's tokens go, where a dropped
//! node's tokens go, when pending moves settle, and pushing each new ring.
//!
//! A new node gets tokens chosen by [`crate::ring::plan_tokens`] to even out
//! ownership (at least the count it asked for, more if the others hold many;
//! [`crate::ring::join_token_count`]). A down node that is dropped (with N > 1,
//! and a node left to take its tokens) becomes a pending move, as a leave:
//! `leaving` in the ring, so its ranges go to their new holders by
//! [`crate::ring::plan_handoff`] when the move settles, and meanwhile
//! conditional ops count joint majorities of the old and new lists. It cannot
//! hand its data over; the other holders of each range do, as in every move.
//! The manager never counts it as a holder, and waits for it only until its
//! lease is over (see `lease.rs`): then it serves no older ring, and the move
//! settles without it. With N = 1 (its keys are gone with it), or with no node
//! left to take its tokens, it is removed in one step, once its lease is over.
//!
//! Moves: a ring with `joining` or `leaving` nodes has pending moves. Each serving
//! node streams what it must hand over and reports `HANDOFF_DONE` for the epoch;
//! once every serving node has (while recovering, also those not registered yet:
//! one may be the only holder of some keys), the ring settles: joining nodes
//! serve, leaving ones are removed, and the epoch moves on.
//!
//! At the end of every step, a ring whose epoch moved is pushed to every linked
//! node as `RING_UPDATE`.

use super::Manager;
use crate::protocol::Message;
use crate::reactor::Output;
use crate::ring::{hash64, join_token_count, plan_handoff, plan_tokens, NodeState};

impl Manager {
    /// Tokens for new node `id` at `addr`, which asked for `count`.
    pub(super) fn plan_new_tokens(&self, id: u32, addr: &str, count: usize) -> Vec<u64> {
        let points = self.points();
        let count = join_token_count(&points, count);
        plan_tokens(&points, id, count, hash64(addr.as_bytes()))
    }

    /// Drops down node `id`: a pending move (see the module docs) when N > 1
    /// and a node that is neither leaving nor dropped can take its tokens,
    /// else removed at once with its tokens given straight to the others.
    /// Either way its link, if still open, is closed.
    pub(super) fn drop_down_node(&mut self, id: u32) {
        if !self.drop_is_one_step(id) {
            let rec = self.nodes.get_mut(&id).expect("a down node");
            rec.entry.state = NodeState::Leaving;
            rec.dropped = true;
            // Closed after the new ring went out on it (see `forget_node`).
            self.to_close.extend(rec.conn.take());
            self.epoch += 1;
            log::warn!(
                "node {id} was down and is dropped: the other holders of its \
                 ranges hand them to their new holders (epoch {})",
                self.epoch
            );
            return;
        }
        self.remove_down_node(id);
    }

    /// Removes node `id`, giving its tokens straight to the others.
    fn remove_down_node(&mut self, id: u32) {
        for (t, to) in plan_handoff(&self.points(), id) {
            if let Some(r) = self.nodes.get_mut(&to) {
                r.entry.tokens.push(t);
            }
        }
        self.forget_node(id);
        self.epoch += 1;
        if self.cfg.replicas > 1 {
            log::warn!(
                "node {id} was down and is dropped; its ranges are copied \
                 again from the other replicas (epoch {})",
                self.epoch
            );
        } else {
            log::warn!("node {id} was down and is dropped; its data is lost");
        }
    }

    /// When every serving node has handed over what it must for this epoch, the
    /// joining nodes start serving and the leaving ones leave: a new epoch.
    pub(super) fn maybe_settle(&mut self) {
        let ring = self.ring();
        if !ring.has_moves() {
            return;
        }
        let single = self.cfg.replicas == 1;
        let waiting = self
            .nodes
            .values()
            .filter(|n| match n.entry.state {
                // A dropped node's lease may still run: it may still serve
                // its old ring, and a lead there may decide a key with
                // holders the new lists do not meet (see `lease.rs`).
                NodeState::Leaving if n.dropped => !self.lease_over(n),
                // While recovering, a node that must hand over but has not
                // registered yet is waited for too: it may be the only holder
                // of the keys.
                NodeState::Up | NodeState::Leaving => {
                    !n.dropped && (n.conn.is_some() || self.recovering)
                }
                // With one copy a down node is the only holder of its keys:
                // the move waits for it to come back (or to be dropped), or
                // the keys it moves would arrive empty at their new owners
                // while it still holds them.
                NodeState::Down => single,
                NodeState::Joining => false,
            })
            .any(|n| self.handoff_done.get(&n.entry.id) != Some(&self.epoch));
        if waiting || self.holders_missing(&ring) {
            return;
        }
        self.end_recovery();
        let settled = ring.settled();
        let ids: Vec<u32> = self.nodes.keys().copied().collect();
        for id in ids {
            match settled.node(id) {
                Some(n) => {
                    let rec = self.nodes.get_mut(&id).expect("listed");
                    if rec.entry.state == NodeState::Joining {
                        log::info!("node {id} now serves its tokens");
                    }
                    rec.entry.tokens = n.tokens.clone();
                    rec.entry.state = n.state;
                }
                None => match self.nodes.remove(&id).is_some_and(|r| r.dropped) {
                    true => log::info!("dropped node {id} is out of the ring"),
                    false => log::info!("node {id} handed its data over and left the ring"),
                },
            }
        }
        self.epoch += 1;
    }

    /// Whether some range the pending moves give to a new node has too few of
    /// its current holders up to hand it over: fewer than N - W + 1 of its
    /// serving list, the fewest that meet every write quorum of that list,
    /// than N - R + 1, the fewest that meet every read quorum (each of them
    /// runs the move's ring and so refuses a plain read of a lead whose ring
    /// predates it: see the node's replica fence), or than a majority of it.
    /// The newcomer would then count as a replica without the range's newest
    /// writes, and a quorum of it and another holder that lacks them could
    /// miss an acknowledged write. The majority
    /// is for conditional ops: every holder counted here has reported the
    /// handoff of this epoch, so it runs the ring that started the move and
    /// refuses Paxos rounds of a lead whose ring predates it; with a majority
    /// of the serving list doing so, no such lead decides after the flip
    /// (docs/architecture.md, section 6, "Joint majorities"). The flip waits
    /// until enough holders are back, or a down one is dropped: a dropped
    /// holder is never live, and the count needed is capped at the holders
    /// not dropped, so this count never waits for a dropped one (when dropped
    /// holders are a majority of a list, all the others are needed; the flip
    /// waits for a dropped one's lease instead, see `lease.rs`).
    fn holders_missing(&self, ring: &crate::ring::Ring) -> bool {
        let n = ring.replicas.max(1) as usize;
        // The fewest holders that meet every write quorum and every read
        // quorum of the list, and a majority of it.
        let quorum = ring.write_quorum.min(ring.read_quorum).max(1) as usize;
        let need_of = |len: usize| (n + 1).saturating_sub(quorum).max(len / 2 + 1).min(len);
        let (serving, settled) = (ring.serving(), ring.settled());
        let (from, to) = (serving.pref_table(n), settled.pref_table(n));
        let live = |id: &u32| {
            self.nodes.get(id).is_some_and(|r| {
                matches!(r.entry.state, NodeState::Up | NodeState::Leaving)
                    && !r.dropped
                    && (r.conn.is_some() || self.recovering)
            })
        };
        let kept = |id: &&u32| self.nodes.get(id).is_none_or(|r| !r.dropped);
        let bounds = from.bounds().iter().chain(to.bounds().iter());
        bounds.into_iter().any(|&t| {
            let (old, new) = (from.get(t), to.get(t));
            let adds = new.iter().any(|id| !old.contains(id));
            let holders = old.iter().filter(kept).count();
            adds && old.iter().filter(|id| live(id)).count() < need_of(old.len()).min(holders)
        })
    }

    /// Sends the ring to every linked node if it changed since the last push.
    pub(super) fn push_ring(&mut self, out: &mut Vec<Output>) {
        if self.epoch == self.pushed_epoch {
            return;
        }
        self.pushed_epoch = self.epoch;
        let frame = Message::RingUpdate { ring: self.ring() }.encode();
        for &conn in self.links.keys() {
            out.push(Output::Send {
                conn,
                frame: frame.clone(),
            });
        }
    }
}
