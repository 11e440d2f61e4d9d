//! Who is in the cluster: registration (`NODE_JOIN`), ids, and departures
//! (`LEAVE` from a node, `DROP` from the operator).
//!
//! A storage node opens a link and, once the member handshake (`admin.rs`) has
//! checked its proof of the cluster secret, its `NODE_JOIN` gives its
//! advertised address and how many tokens it wants. A node is known by its
//! address: one that comes back on the same address gets its old id and tokens
//! (and, if failure detection marked it down meanwhile, `catch_up` in `JOINED`:
//! it may have missed writes). A new node gets the next id and tokens from
//! [`super::tokens`]; it joins as `joining` if others serve already (they hand it
//! its ranges first), as `up` otherwise.
//!
//! A departing node that is up becomes `leaving` and hands its data over; a
//! `joining` one holds nothing and is removed at once; a `down` one is dropped
//! as a pending move (with N > 1: `leaving` in the ring, its ranges handed
//! over by their other holders, see [`super::tokens`]) or, with N = 1 (its keys
//! are lost) or nobody left to take its tokens, removed at once, but only once
//! its lease is over (a `DROP` before then is refused, see [`super::lease`]).
//! A node's
//! own `LEAVE` proves it alive: one marked down
//! meanwhile is back first (its heartbeats were late), and leaves with a
//! handoff. A leave is refused only to a node alone in the ring (no other node
//! that is not leaving itself): nobody could take its data. Peers that are
//! down do not refuse it: the node stays `leaving`, serving, and the move
//! waits for them by the flip rules of [`super::tokens`] (they come back, or
//! are dropped). Should every other node go (dropped, or gone while joining)
//! before the move settles, the leave is called off (see
//! [`Manager::call_off_stranded_leaves`]): the node is `up` again, and asks
//! again, to be refused. A node dropped or removed at once
//! (down, or joining) whose process is still linked (paused, or cut off with
//! its link open) has that link closed: the process registers again and, its
//! address no longer known, joins as a new node (a dropped one's registration
//! is turned away with `ERR UNAVAILABLE` until its move settles, as peers
//! reach nodes by address).

use super::{Manager, NodeRecord};
use crate::protocol::cluster::NodeRef;
use crate::protocol::{Error, ErrorCode, Message};
use crate::reactor::{ConnId, Millis};
use crate::ring::{NodeEntry, NodeState, Ring};

/// Most tokens a node may ask for.
const MAX_TOKENS: u32 = 4096;

/// A `NODE_JOIN`'s fields.
pub(super) struct Join<'a> {
    pub addr: &'a str,
    pub tokens: u32,
    pub offer: Option<&'a Ring>,
}

impl Manager {
    /// Registers the node sending `join` on `conn`; the answer is `JOINED`.
    pub(super) fn join(
        &mut self,
        now: Millis,
        conn: ConnId,
        join: Join<'_>,
    ) -> Result<Message, Error> {
        if !(1..=MAX_TOKENS).contains(&join.tokens) {
            return Err(Error::new(
                ErrorCode::BadOp,
                format!("NODE_JOIN needs TOKENS in 1..={MAX_TOKENS}"),
            ));
        }
        let addr = join.addr;
        self.consider_offer(join.offer, addr, now);
        self.turn_away(addr)?;
        if (self.nodes.values()).any(|n| n.dropped && n.entry.addr == addr) {
            // One address, one node in the ring: peers reach nodes by address.
            return Err(Error::new(
                ErrorCode::Unavailable,
                format!("the node at {addr} was dropped and its move has not settled; retry"),
            ));
        }
        let existing = self.id_at(addr);
        let id = match existing {
            Some(id) => id,
            None => self.add_node(now, addr, join.tokens),
        };
        let node = self.nodes.get_mut(&id).expect("present or inserted above");
        if let Some(old) = node.conn.replace(conn) {
            self.links.remove(&old);
        }
        node.last_seen = now;
        // A new process, or the same one on a new link: its heartbeats say.
        node.keys = 0;
        let missed = std::mem::take(&mut node.missed);
        if node.entry.state == NodeState::Down {
            let others_serve = existing.is_none()
                && (self.nodes.values())
                    .any(|n| n.entry.id != id && n.entry.state == NodeState::Up);
            let node = self.nodes.get_mut(&id).expect("present");
            node.entry.state = match others_serve {
                true => NodeState::Joining,
                false => NodeState::Up,
            };
            self.epoch += 1;
            log::info!(
                "node {id} at {addr} is {} (epoch {})",
                node.entry.state,
                self.epoch
            );
        }
        self.links.insert(conn, id);
        Ok(Message::Joined {
            node_id: id,
            catch_up: missed,
            ring: self.ring(),
        })
    }

    /// Adds a node the membership does not know, with the next id and a token
    /// plan; it starts `down` until its registration finishes.
    fn add_node(&mut self, now: Millis, addr: &str, tokens: u32) -> u32 {
        self.end_recovery();
        let id = self.next_node_id;
        self.next_node_id += 1;
        let entry = NodeEntry {
            id,
            addr: addr.to_string(),
            state: NodeState::Down,
            tokens: self.plan_new_tokens(id, addr, tokens as usize),
        };
        self.nodes.insert(id, NodeRecord::new(entry, now));
        log::info!("node {id} joined at {addr}");
        id
    }

    /// Removes node `id` from the membership at once (a down node dropped, a
    /// joining one that leaves). If its process is still linked (a down node
    /// paused or cut off, not gone), the link is closed at the end of the step,
    /// after the new ring went out on it: a node that asked to leave sees it
    /// left and exits; any other registers again, as a new node, instead of
    /// running on outside the ring with an id the manager no longer knows.
    pub(super) fn forget_node(&mut self, id: u32) {
        let Some(rec) = self.nodes.remove(&id) else {
            return;
        };
        self.to_close.extend(rec.conn);
    }

    /// Finds a node the operator named.
    pub(super) fn find_node(&self, node: &NodeRef) -> Option<u32> {
        match node {
            NodeRef::Id(id) => self.nodes.contains_key(id).then_some(*id),
            NodeRef::Addr(addr) => self.id_at(addr),
        }
    }

    /// A node's own `LEAVE` (SIGTERM) on its link: it is alive, so one marked
    /// down meanwhile is back first (as a heartbeat would bring it) and
    /// leaves with a handoff instead of being dropped.
    pub(super) fn leave_asked(&mut self, now: Millis, id: u32) -> Result<(), Error> {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.last_seen = now;
        }
        self.back_up(id);
        self.leave(id)
    }

    /// Starts the departure of node `id` (its `LEAVE`, or the operator's
    /// `DROP`).
    pub(super) fn leave(&mut self, id: u32) -> Result<(), Error> {
        let state = self
            .nodes
            .get(&id)
            .map(|n| n.entry.state)
            .ok_or_else(|| Error::new(ErrorCode::BadKey, format!("no node {id}")))?;
        if let Some(e) = self.lease_still_runs(id) {
            return Err(e);
        }
        self.end_recovery();
        match state {
            NodeState::Leaving => {}
            NodeState::Joining => {
                // It holds nothing yet.
                self.forget_node(id);
                self.epoch += 1;
            }
            NodeState::Down => self.drop_down_node(id),
            NodeState::Up if !self.has_heir(id) => {
                return Err(Error::new(
                    ErrorCode::Unavailable,
                    "the only node in the ring cannot leave: no other node can take its data",
                ))
            }
            NodeState::Up => {
                let n = self.nodes.get_mut(&id).expect("looked up above");
                n.entry.state = NodeState::Leaving;
                self.epoch += 1;
                log::info!("node {id} is leaving (epoch {})", self.epoch);
            }
        }
        Ok(())
    }

    /// Whether a node other than `id` could take `id`'s tokens: one in the
    /// ring that is not leaving itself. A down one counts: the move waits for
    /// it to come back (or to be dropped).
    fn has_heir(&self, id: u32) -> bool {
        (self.nodes.values()).any(|n| n.entry.id != id && n.entry.state != NodeState::Leaving)
    }

    /// Calls off the leaves that no node is left to take over (every node in
    /// the ring is leaving: the others were dropped or went away while
    /// joining). They serve as `up` again; each process, seeing that while it
    /// wants to leave, asks again and is refused (see the node's membership).
    /// Dropped nodes among them are removed at once instead, which changes
    /// the lists at once: so only once their leases are over (see `lease.rs`;
    /// until then the moves wait for them, and nothing flips).
    pub(super) fn call_off_stranded_leaves(&mut self) {
        let leaving = |n: &NodeRecord| n.entry.state == NodeState::Leaving;
        if self.nodes.is_empty() || !self.nodes.values().all(leaving) {
            return;
        }
        if (self.nodes.values()).any(|n| n.dropped && !self.lease_over(n)) {
            return;
        }
        let dropped: Vec<u32> = (self.nodes.values().filter(|n| n.dropped))
            .map(|n| n.entry.id)
            .collect();
        for id in dropped {
            self.forget_node(id);
        }
        for n in self.nodes.values_mut() {
            n.entry.state = NodeState::Up;
            log::warn!(
                "node {} cannot leave: no other node is left to take its data",
                n.entry.id
            );
        }
        self.epoch += 1;
    }
}
