//! Failure detection: heartbeats, closed links, and the periodic tick.
//!
//! A node is `up` while its link is open and its heartbeats arrive; after
//! [`ManagerConfig::down_after_ms`](super::ManagerConfig) without one, or when its
//! link closes, it is marked `down` (the tick, every `tick_ms`, checks) and
//! remembered as having missed writes (`JOINED` tells it so when it registers
//! again). A heartbeat on the link of a node marked down brings it back `up`: it
//! saw the ring marking it down on that link and catches up by itself. With
//! `dead_after_ms`, a node down that long is dropped (see [`super::membership`])
//! so its ranges get N copies again on the others (a drop that changes the
//! lists at once only once its lease is over, see [`super::lease`]). HELLO's contact
//! recommendations skip down nodes.
//!
//! A node that goes away while `joining` held nothing yet and is removed.

use super::Manager;
use crate::reactor::{ConnId, Millis};
use crate::ring::NodeState;

impl Manager {
    /// A heartbeat from member `id`: `keys` held, and whether it is catching up.
    pub(super) fn heartbeat(&mut self, now: Millis, id: u32, keys: u64, catching_up: bool) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        self.http.stats.heartbeat(now.saturating_sub(n.last_seen));
        n.last_seen = now;
        n.keys = keys;
        n.catching_up = catching_up;
        self.back_up(id);
    }

    /// Node `id`, if marked down, is back `up`: a message on its link shows it
    /// alive, and it saw the ring marking it down on that link, so it catches
    /// up by itself.
    pub(super) fn back_up(&mut self, id: u32) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if n.entry.state == NodeState::Down && n.conn.is_some() {
            n.missed = false;
            n.entry.state = NodeState::Up;
            self.epoch += 1;
            log::info!("node {id} is back (epoch {})", self.epoch);
        }
    }

    /// Connection `conn` closed; if it was a member's current link, the member
    /// is down (or gone, if it was joining).
    pub(super) fn link_closed(&mut self, now: Millis, conn: ConnId) {
        let Some(id) = self.links.remove(&conn) else {
            return;
        };
        let Some(n) = self.nodes.get_mut(&id).filter(|n| n.conn == Some(conn)) else {
            return;
        };
        n.conn = None;
        if n.entry.state == NodeState::Joining {
            log::warn!("node {id} went away while joining");
            self.end_recovery();
            self.nodes.remove(&id);
            self.epoch += 1;
        } else {
            self.mark_down(now, id, "link closed");
        }
    }

    /// Marks node `id` down, if it was up or leaving.
    fn mark_down(&mut self, now: Millis, id: u32, why: &str) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if matches!(n.entry.state, NodeState::Up | NodeState::Leaving) {
            n.entry.state = NodeState::Down;
            n.down_at = now;
            n.missed = true;
            n.catching_up = false;
            self.epoch += 1;
            log::warn!(
                "node {id} at {} is down: {why} (epoch {})",
                n.entry.addr,
                self.epoch
            );
        }
    }

    /// The periodic check: silent nodes are marked down, and (with
    /// `dead_after_ms`) nodes down for too long are dropped.
    pub(super) fn tick(&mut self, now: Millis) {
        let down_after = self.cfg.down_after_ms;
        let late: Vec<u32> = (self.nodes.values())
            .filter(|n| n.entry.state == NodeState::Up)
            .filter(|n| now.saturating_sub(n.last_seen) > down_after)
            .map(|n| n.entry.id)
            .collect();
        for id in late {
            self.mark_down(now, id, "no heartbeat");
        }
        let Some(dead_after) = self.cfg.dead_after_ms else {
            return;
        };
        let dead: Vec<u32> = (self.nodes.values())
            .filter(|n| n.entry.state == NodeState::Down)
            .filter(|n| now.saturating_sub(n.down_at) > dead_after)
            // A one-step drop waits for the node's lease (see `lease.rs`).
            .filter(|n| self.lease_over(n) || !self.drop_is_one_step(n.entry.id))
            .map(|n| n.entry.id)
            .collect();
        for id in dead {
            log::warn!("node {id} has been down for over {dead_after} ms: dropping it");
            if let Err(e) = self.leave(id) {
                log::warn!("cannot drop node {id}: {e}");
            }
        }
    }
}
