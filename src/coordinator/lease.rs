//! Leases: how long a node may serve data without hearing from the manager,
//! and what the manager waits for because of them.
//!
//! Nothing but time stops a node nobody can reach (cut off by a partition, or
//! paused), so a node stops itself: it serves data only under a lease from the
//! manager (see the storage node's membership). Every `HEARTBEAT` of a member on
//! its current link is answered with `LEASE SENT LEASE_MS`, `SENT` echoing the
//! node's clock when it sent the heartbeat; `NODE_JOIN` gets one too (after
//! `JOINED`) when it carries `SENT`. The node's lease then ends at its clock's
//! `SENT + LEASE_MS`, no later than the manager's `last_seen + lease_ms` (taken
//! at receipt, after the send). Leases go out at the end of the step, after any
//! new ring, on the same ordered link: a renewed lease always comes with the
//! current ring. Dropped nodes (their link closed) and nodes no longer in the
//! ring get none.
//!
//! By the manager's clock a node's lease is over once `now > last_seen +
//! lease_ms + LEASE_MARGIN_MS` ([`Manager::lease_over`]). A restarted manager
//! takes every node it has not heard from as seen when it learned of it (after
//! its own start): any lease granted before the restart has run out by then.
//! The manager waits for a lease where a node it gave up on could otherwise
//! still decide a key by an older ring:
//!
//! - The flip of a move that drops nodes waits, for each dropped node, until it
//!   has reported the epoch's handoff or its lease is over (see
//!   [`super::tokens`]): at the flip no dropped node still serves an older ring.
//! - A drop that changes the lists at once (N = 1, or no node left to take the
//!   tokens) waits until the node's lease is over: with `dead_after_ms`, the
//!   tick drops the node only then; an operator's `DROP` before then is refused
//!   with `ERR UNAVAILABLE` saying how long to wait. A leave called off as
//!   stranded (see `membership.rs`), which removes the dropped nodes among
//!   the leaving ones at once, waits for their leases too.
//!
//! The cost: without the manager for `lease_ms`, nodes stop serving data; a
//! dropped node's move flips, or its one-step drop happens, at least `lease_ms`
//! after the manager last heard from it.

use super::{Manager, NodeRecord};
use crate::protocol::{Error, ErrorCode, Message};
use crate::reactor::{ConnId, Millis, Output};
use crate::ring::NodeState;

/// Added to a lease's length when the manager decides it is over, in ms: room
/// for the node's clock running slower than the manager's over one lease.
pub const LEASE_MARGIN_MS: Millis = 200;

impl Manager {
    /// Queues a lease for the member on `conn`, whose message was sent at
    /// `sent` by its own clock: sent at the end of the step (after any new
    /// ring). Only for a node on its current link, in the ring and not dropped.
    pub(super) fn grant_lease(&mut self, conn: ConnId, sent: u64) {
        let Some(&id) = self.links.get(&conn) else {
            return;
        };
        let current = (self.nodes.get(&id)).is_some_and(|n| n.conn == Some(conn) && !n.dropped);
        if current {
            self.leases.push((conn, sent));
        }
    }

    /// Sends the leases queued in this step, except on links being closed.
    pub(super) fn send_leases(&mut self, out: &mut Vec<Output>) {
        let lease_ms = self.cfg.lease_ms;
        for (conn, sent) in std::mem::take(&mut self.leases) {
            if self.to_close.contains(&conn) || !self.links.contains_key(&conn) {
                continue;
            }
            let frame = Message::Lease { sent, lease_ms }.encode();
            out.push(Output::Send { conn, frame });
        }
    }

    /// Whether `n`'s lease is over by the manager's clock: every lease it was
    /// granted ended before now.
    pub(super) fn lease_over(&self, n: &NodeRecord) -> bool {
        self.now > self.lease_end(n)
    }

    /// When `n`'s lease is over at the latest, by the manager's clock.
    fn lease_end(&self, n: &NodeRecord) -> Millis {
        n.last_seen
            .saturating_add(self.cfg.lease_ms)
            .saturating_add(LEASE_MARGIN_MS)
    }

    /// Whether dropping down node `id` would change the lists at once (N = 1,
    /// or no node left to take its tokens) instead of starting a move.
    pub(super) fn drop_is_one_step(&self, id: u32) -> bool {
        let heir = (self.nodes.values())
            .any(|n| n.entry.id != id && n.entry.state != NodeState::Leaving && !n.dropped);
        self.cfg.replicas <= 1 || !heir
    }

    /// The refusal of a one-step drop of down node `id` whose lease may still
    /// run, if it may.
    pub(super) fn lease_still_runs(&self, id: u32) -> Option<Error> {
        let n = self.nodes.get(&id)?;
        if n.entry.state != NodeState::Down || !self.drop_is_one_step(id) || self.lease_over(n) {
            return None;
        }
        let left = self.lease_end(n) + 1 - self.now;
        Some(Error::new(
            ErrorCode::Unavailable,
            format!(
                "node {id} may still be serving: its lease from the manager runs for up to \
                 {left} ms more; drop it again then"
            ),
        ))
    }
}
