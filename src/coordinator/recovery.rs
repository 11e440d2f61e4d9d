//! Recovering the membership after a manager restart.
//!
//! The manager keeps membership in memory only, and learns it back from the
//! nodes. A node that knows a ring offers it when it registers (`NODE_JOIN`'s
//! `offer`). While the manager is *recovering* (it started empty and has made no
//! membership change of its own: no new node, no leave or drop, no settled move),
//! it adopts an offered ring whose epoch is above every ring it adopted before:
//! node ids, addresses, tokens and joining/leaving states as offered, the others
//! `down` until they register, the next node id above every offered one, and its
//! own epoch above the offered one. So nodes reconnecting in any order, the first
//! with an older ring than the second, end up with their old ids and tokens (the
//! newest ring wins). Once the manager makes a change of its own, offers are
//! ignored: its own ring is then the newest.
//!
//! The recovery window. A brand-new node (no offer, an address the membership
//! does not know) must not register first: it would end recovery, and members
//! that came later would get new ids and tokens and drop the data they held. So
//! for [`ManagerConfig::recovery_ms`](super::ManagerConfig) after it starts, a
//! recovering manager refuses such a node's `NODE_JOIN` with `ERR UNAVAILABLE
//! manager is recovering its membership (N ms left)`; the node closes the link and
//! tries again with its backoff, and is registered once the window is over.
//! Members reconnect within their own backoff (2 s at most by default), so a
//! window a little longer than that lets every live member offer its ring first.
//! Each refused node is logged once, and the end of the window once. Clients
//! see the same state: STATUS carries `recovering_ms_left`, and requests that
//! cannot be served yet (HELLO with no node up, RING with an empty ring, DROP of
//! a node not heard from) get the same error.
//!
//! Caveats: a member that comes back after the window, when a new node has
//! registered since, still gets a new id and tokens (recovery is over). The window
//! also delays the first registrations of a brand-new cluster (the manager cannot
//! tell the two apart); `recovery_ms = 0` turns it off. The offered N, R and W are
//! ignored: the manager's flags decide.

use super::{Manager, NodeRecord};
use crate::protocol::{Error, ErrorCode};
use crate::reactor::Millis;
use crate::ring::{NodeEntry, NodeState, Ring};
use std::collections::HashMap;

impl Manager {
    /// Milliseconds left in the recovery window: above 0 while the manager is
    /// recovering and within [`ManagerConfig::recovery_ms`](super::ManagerConfig)
    /// of its start, 0 otherwise.
    pub fn recovering_ms_left(&self) -> Millis {
        if !self.recovering {
            return 0;
        }
        let end = self.started.unwrap_or(self.now) + self.cfg.recovery_ms;
        end.saturating_sub(self.now)
    }

    /// The error for a request that must wait for the recovery window, if it
    /// is still open.
    pub(super) fn recovering_error(&self) -> Option<Error> {
        let left = self.recovering_ms_left();
        (left > 0).then(|| {
            Error::new(
                ErrorCode::Unavailable,
                format!("manager is recovering its membership ({left} ms left)"),
            )
        })
    }

    /// Whether a `NODE_JOIN` from `addr` must wait: the recovery window is open
    /// and `addr` is not a member. Refusals are logged once per address.
    pub(super) fn turn_away(&mut self, addr: &str) -> Result<(), Error> {
        let Some(e) = self.recovering_error() else {
            return Ok(());
        };
        if self.id_at(addr).is_some() {
            return Ok(());
        }
        if self.turned_away.insert(addr.to_string()) {
            log::info!(
                "node at {addr} is new; it registers once the membership is recovered \
                 ({} ms left)",
                self.recovering_ms_left()
            );
        }
        Err(e)
    }

    /// Takes `offer`, a ring offered by the node at `from`, if the manager is
    /// recovering and it is newer than every ring adopted so far.
    pub(super) fn consider_offer(&mut self, offer: Option<&Ring>, from: &str, now: Millis) {
        match offer {
            Some(ring) if self.recovering && ring.epoch > self.adopted => {
                self.adopt(ring, from, now)
            }
            _ => {}
        }
    }

    /// Adopts `ring` as the membership: ids, addresses, tokens as offered; nodes
    /// linked now keep their links and are up, the others are down until they
    /// register.
    fn adopt(&mut self, ring: &Ring, from: &str, now: Millis) {
        let mut linked: HashMap<String, NodeRecord> = std::mem::take(&mut self.nodes)
            .into_values()
            .filter(|n| n.conn.is_some())
            .map(|n| (n.entry.addr.clone(), n))
            .collect();
        self.links.clear();
        for e in ring.nodes() {
            let old = linked.remove(&e.addr);
            let conn = old.as_ref().and_then(|n| n.conn);
            let state = match e.state {
                NodeState::Joining | NodeState::Leaving => e.state,
                _ if conn.is_some() => NodeState::Up,
                _ => NodeState::Down,
            };
            if let Some(c) = conn {
                self.links.insert(c, e.id);
            }
            let mut rec = NodeRecord::new(NodeEntry { state, ..e.clone() }, now);
            if let Some(old) = old {
                rec.keys = old.keys;
                rec.conn = old.conn;
                rec.last_seen = old.last_seen;
                rec.down_at = old.down_at;
            }
            self.nodes.insert(e.id, rec);
        }
        for (addr, n) in linked {
            // Registered by an older ring this one no longer has: it must register
            // again (and is then a new node).
            log::warn!("node at {addr} is not in the adopted ring; closing its link");
            self.to_close.extend(n.conn);
        }
        let top = ring.nodes().iter().map(|n| n.id).max().unwrap_or(0);
        self.next_node_id = self.next_node_id.max(top.saturating_add(1));
        self.epoch = self.epoch.max(ring.epoch) + 1;
        self.adopted = ring.epoch;
        self.handoff_done.clear();
        log::info!(
            "recovered the membership from {from}: ring epoch {} with {} nodes (now epoch {})",
            ring.epoch,
            self.nodes.len(),
            self.epoch
        );
    }

    /// At each tick: once the window is over, says so if nodes were waiting
    /// for it (they register at their next retry).
    pub(super) fn recovery_tick(&mut self) {
        if self.turned_away.is_empty() || self.recovering_ms_left() > 0 {
            return;
        }
        let waiting = std::mem::take(&mut self.turned_away);
        log::info!(
            "recovery window over; {} new node(s) may register now: {}",
            waiting.len(),
            waiting.into_iter().collect::<Vec<_>>().join(", ")
        );
    }

    /// Ends recovery: the manager made a membership change of its own.
    pub(super) fn end_recovery(&mut self) {
        self.recovering = false;
        self.turned_away.clear();
    }
}
