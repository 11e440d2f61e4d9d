//! The manager's logic as a state machine: membership, ids, token assignment,
//! failure detection and the answers to clients' HELLO, RING and STATUS.
//!
//! The manager is not on the data path: clients ask it once for an id, a contact
//! node and (if partition-aware) the ring, then talk to storage nodes directly.
//!
//! Membership: a storage node opens a link and sends `NODE_JOIN` with the cluster
//! secret, its advertised address and how many tokens it wants. A node is known by
//! its address: one that comes back on the same address gets its old id and tokens.
//! A new node gets the next id and tokens chosen by [`crate::ring::plan_tokens`] to
//! even out ownership. Every membership change bumps the ring's epoch.
//!
//! Failure detection: a node is `up` while its link is open and its heartbeats
//! arrive; after [`ManagerConfig::down_after_ms`] without one, or when the link
//! closes, it is marked `down` (a periodic tick checks). Round-robin contact
//! recommendations skip down nodes.
//!
//! Recovery after a restart: the manager keeps membership in memory only, and
//! learns it back from the nodes. A node that knows a ring offers it when it
//! registers (`NODE_JOIN`'s payload, then `LF` and the RING text). While the
//! manager is *recovering* (it started empty and has made no membership change of
//! its own: no new node, no leave or drop, no settled move), it adopts an offered
//! ring whose epoch is above every ring it adopted before: node ids, addresses,
//! tokens and joining/leaving states as offered, the others `down` until they
//! register, the next node id above every offered one, and its own epoch above the
//! offered one. So nodes reconnecting in any order, the first with an older ring
//! than the second, end up with their old ids and tokens (the newest ring wins).
//! Once the manager makes a change of its own, offers are ignored: its own ring is
//! then the newest.
//!
//! A brand-new node (no offer, an address the membership does not know) must not
//! register first: it would end recovery, and members that came later would get
//! new ids and tokens and drop the data they held. So for
//! [`ManagerConfig::recovery_ms`] after it starts, a recovering manager refuses such
//! a node's `NODE_JOIN` with `ERR UNAVAILABLE`; the node closes the link and tries
//! again with its backoff, and is registered once the window is over. Members
//! reconnect within their own backoff (2 s at most by default), so a window a
//! little longer than that lets every live member offer its ring first.
//!
//! Caveats: a member that comes back after the window, when a new node has
//! registered since, still gets a new id and tokens (recovery is over). The window
//! also delays the first registrations of a brand-new cluster (the manager cannot
//! tell the two apart); `recovery_ms = 0` turns it off. The offered N, R and W are
//! ignored: the manager's flags decide.

use crate::protocol::{op, Error, ErrorCode, Frame};
use crate::reactor::{reply_error, ConnId, Input, Millis, Output, Service};
use crate::ring::{
    hash64, join_token_count, plan_handoff, plan_tokens, NodeEntry, NodeState, Ring,
};
use bytes::Bytes;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

const TIMER_INIT: u64 = 0;
const TIMER_TICK: u64 = 1;

/// Settings of the manager.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// Shared secret nodes must present (no spaces).
    pub secret: String,
    /// Replicas per key (N).
    pub replicas: u32,
    /// Read quorum (R).
    pub read_quorum: u32,
    /// Write quorum (W).
    pub write_quorum: u32,
    /// A node silent this long is marked down, in ms.
    pub down_after_ms: Millis,
    /// A node down this long is dropped from the ring, in ms, so its ranges are
    /// re-replicated onto the others; `None`: only `gtstore drop` does that.
    pub dead_after_ms: Option<Millis>,
    /// Period of the failure-detection tick, in ms.
    pub tick_ms: Millis,
    /// For this long after the manager starts (ms), while it is still recovering
    /// the membership from the nodes' offered rings, a node the membership does not
    /// know is refused with `ERR UNAVAILABLE` and retries (see the module docs).
    /// 0 (the default here; the binary's `--recovery-ms` defaults to 3000): none.
    pub recovery_ms: Millis,
}

impl Default for ManagerConfig {
    fn default() -> ManagerConfig {
        ManagerConfig {
            secret: crate::DEFAULT_SECRET.to_string(),
            replicas: 1,
            read_quorum: 1,
            write_quorum: 1,
            down_after_ms: 2_000,
            dead_after_ms: None,
            tick_ms: 100,
            recovery_ms: 0,
        }
    }
}

#[derive(Debug)]
struct NodeRecord {
    entry: NodeEntry,
    keys: u64,
    conn: Option<ConnId>,
    last_seen: Millis,
    /// When it was last marked down.
    down_at: Millis,
    /// Marked down by failure detection since it last registered: it may have
    /// missed writes, and is told so when it registers again.
    missed: bool,
    /// Its heartbeats say it is catching up (see the storage node).
    catching_up: bool,
}

/// The manager's whole state.
pub struct Manager {
    cfg: ManagerConfig,
    epoch: u64,
    nodes: BTreeMap<u32, NodeRecord>,
    next_node_id: u32,
    next_client_id: u64,
    rr: usize,
    links: HashMap<ConnId, u32>,
    /// The epoch last pushed to the nodes.
    pushed_epoch: u64,
    /// The last epoch each node finished its handoff for.
    handoff_done: HashMap<u32, u64>,
    /// No membership change of our own yet: offered rings may be adopted.
    recovering: bool,
    /// The epoch of the newest ring adopted from a node (0: none).
    adopted: u64,
    /// Links to close at the end of the step (members an adopted ring dropped).
    to_close: Vec<ConnId>,
    /// When the first input arrived: the recovery window counts from here.
    started: Option<Millis>,
}

impl Manager {
    /// A manager with no members.
    pub fn new(cfg: ManagerConfig) -> Manager {
        Manager {
            cfg,
            epoch: 0,
            nodes: BTreeMap::new(),
            next_node_id: 1,
            next_client_id: 1,
            rr: 0,
            links: HashMap::new(),
            pushed_epoch: 0,
            handoff_done: HashMap::new(),
            recovering: true,
            adopted: 0,
            to_close: Vec::new(),
            started: None,
        }
    }

    /// Whether a `NODE_JOIN` from `addr` must wait: the manager is still
    /// recovering, within its recovery window, and `addr` is not a member (see the
    /// module docs).
    fn turns_away(&self, now: Millis, addr: &str) -> bool {
        let window_end = self.started.unwrap_or(now) + self.cfg.recovery_ms;
        self.recovering && now < window_end && !self.nodes.values().any(|n| n.entry.addr == addr)
    }

    /// Adopts `ring`, offered by a registering node, as the membership (see the
    /// module docs): ids, addresses, tokens as offered; nodes linked now keep
    /// their links and are up, the others are down until they register.
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
            let rec = NodeRecord {
                entry: NodeEntry { state, ..e.clone() },
                keys: old.as_ref().map_or(0, |n| n.keys),
                conn,
                last_seen: old.as_ref().map_or(now, |n| n.last_seen),
                down_at: old.map_or(now, |n| n.down_at),
                missed: false,
                catching_up: false,
            };
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

    /// When every serving node has handed over what it must for this epoch, the
    /// joining nodes start serving and the leaving ones leave: a new epoch.
    fn maybe_settle(&mut self) {
        let ring = self.ring();
        if !ring.has_moves() {
            return;
        }
        let waiting: Vec<u32> = self
            .nodes
            .values()
            .filter(|n| matches!(n.entry.state, NodeState::Up | NodeState::Leaving))
            // While recovering, a node that must hand over but has not registered
            // yet is waited for too: it may be the only holder of the keys.
            .filter(|n| n.conn.is_some() || self.recovering)
            .filter(|n| self.handoff_done.get(&n.entry.id) != Some(&self.epoch))
            .map(|n| n.entry.id)
            .collect();
        if !waiting.is_empty() {
            return;
        }
        self.recovering = false;
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
                None => {
                    log::info!("node {id} handed its data over and left the ring");
                    self.nodes.remove(&id);
                }
            }
        }
        self.epoch += 1;
    }

    /// Starts the departure of node `id`.
    fn leave(&mut self, id: u32) -> Result<(), Error> {
        self.recovering = false;
        let serving = self
            .nodes
            .values()
            .filter(|n| n.entry.state == NodeState::Up && n.entry.id != id)
            .count();
        let n = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| Error::new(ErrorCode::BadKey, format!("no node {id}")))?;
        match n.entry.state {
            NodeState::Leaving => Ok(()),
            NodeState::Joining => {
                // It holds nothing yet.
                self.nodes.remove(&id);
                self.epoch += 1;
                Ok(())
            }
            NodeState::Down => {
                // Nothing to hand over: its tokens go straight to the others.
                let points: Vec<(u64, u32)> = self
                    .nodes
                    .values()
                    .flat_map(|n| n.entry.tokens.iter().map(move |&t| (t, n.entry.id)))
                    .collect();
                for (t, to) in plan_handoff(&points, id) {
                    if let Some(r) = self.nodes.get_mut(&to) {
                        r.entry.tokens.push(t);
                    }
                }
                self.nodes.remove(&id);
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
                Ok(())
            }
            NodeState::Up if serving == 0 => Err(Error::new(
                ErrorCode::Unavailable,
                "the last serving node cannot leave",
            )),
            NodeState::Up => {
                n.entry.state = NodeState::Leaving;
                self.epoch += 1;
                log::info!("node {id} is leaving (epoch {})", self.epoch);
                Ok(())
            }
        }
    }

    /// Finds a node by decimal id or address.
    fn find_node(&self, what: &[u8]) -> Option<u32> {
        let text = std::str::from_utf8(what).ok()?.trim();
        if let Ok(id) = text.parse::<u32>() {
            return self.nodes.contains_key(&id).then_some(id);
        }
        self.nodes
            .values()
            .find(|n| n.entry.addr == text)
            .map(|n| n.entry.id)
    }

    /// Sends the ring to every connected node if it changed since the last push.
    fn push_ring(&mut self, out: &mut Vec<Output>) {
        if self.epoch == self.pushed_epoch {
            return;
        }
        self.pushed_epoch = self.epoch;
        let text = Bytes::from(self.ring().encode());
        for &conn in self.links.keys() {
            out.push(Output::Send {
                conn,
                frame: Frame::new(op::RING_UPDATE, 0, 0, text.clone()),
            });
        }
    }

    /// The current ring.
    pub fn ring(&self) -> Ring {
        Ring::new(
            self.epoch,
            self.cfg.replicas,
            self.cfg.read_quorum,
            self.cfg.write_quorum,
            self.nodes.values().map(|n| n.entry.clone()).collect(),
        )
    }

    /// STATUS as JSON.
    pub fn status_json(&self) -> serde_json::Value {
        let ring = self.ring();
        let share: HashMap<u32, f64> = ring.ownership().into_iter().collect();
        let up: Vec<&NodeRecord> = self
            .nodes
            .values()
            .filter(|n| n.entry.state == NodeState::Up)
            .collect();
        let total: u64 = self.nodes.values().map(|n| n.keys).sum();
        let max = up.iter().map(|n| n.keys).max().unwrap_or(0);
        let mean = if up.is_empty() {
            0.0
        } else {
            up.iter().map(|n| n.keys).sum::<u64>() as f64 / up.len() as f64
        };
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .values()
            .map(|n| {
                json!({
                    "id": n.entry.id,
                    "addr": n.entry.addr,
                    "state": n.entry.state.as_str(),
                    "token_count": n.entry.tokens.len(),
                    "tokens": n.entry.tokens,
                    "share": share.get(&n.entry.id).copied().unwrap_or(0.0),
                    "keys": n.keys,
                    "catching_up": n.catching_up,
                })
            })
            .collect();
        json!({
            "epoch": self.epoch,
            "replicas": self.cfg.replicas,
            "effective_replicas": (self.cfg.replicas as usize).min(up.len()),
            "read_quorum": self.cfg.read_quorum,
            "write_quorum": self.cfg.write_quorum,
            "live_nodes": up.len(),
            "total_keys": total,
            "max_over_mean_keys": if mean > 0.0 { max as f64 / mean } else { 0.0 },
            "nodes": nodes,
        })
    }

    fn next_contact(&mut self) -> Option<&NodeRecord> {
        let up: Vec<u32> = self
            .nodes
            .values()
            .filter(|n| n.entry.state == NodeState::Up)
            .map(|n| n.entry.id)
            .collect();
        if up.is_empty() {
            return None;
        }
        let id = up[self.rr % up.len()];
        self.rr = self.rr.wrapping_add(1);
        self.nodes.get(&id)
    }

    fn join(&mut self, now: Millis, conn: ConnId, payload: &[u8]) -> Result<Bytes, Error> {
        let (payload, offer) = match memchr::memchr(b'\n', payload) {
            Some(i) => (&payload[..i], Some(&payload[i + 1..])),
            None => (payload, None),
        };
        let text = std::str::from_utf8(payload)
            .map_err(|_| Error::new(ErrorCode::BadOp, "NODE_JOIN payload is not text"))?;
        let mut words = text.split(' ');
        let (secret, addr, tokens) = (words.next(), words.next(), words.next());
        if secret != Some(self.cfg.secret.as_str()) {
            return Err(Error::new(ErrorCode::Auth, "wrong cluster secret"));
        }
        let addr = addr
            .filter(|a| !a.is_empty())
            .ok_or_else(|| Error::new(ErrorCode::BadOp, "NODE_JOIN needs HOST:PORT"))?;
        let count: usize = tokens
            .and_then(|t| t.parse().ok())
            .filter(|&t| (1..=4096).contains(&t))
            .ok_or_else(|| Error::new(ErrorCode::BadOp, "NODE_JOIN needs TOKENS in 1..=4096"))?;
        match offer.map(Ring::decode) {
            Some(Ok(ring)) if self.recovering && ring.epoch > self.adopted => {
                self.adopt(&ring, addr, now)
            }
            Some(Err(e)) => log::warn!("node at {addr} offered a bad ring: {e}"),
            _ => {}
        }
        if self.turns_away(now, addr) {
            log::info!("node at {addr} is new; it registers once the membership is recovered");
            return Err(Error::new(
                ErrorCode::Unavailable,
                "the manager is recovering the membership; retry",
            ));
        }
        let existing = self
            .nodes
            .values()
            .find(|n| n.entry.addr == addr)
            .map(|n| n.entry.id);
        let id = match existing {
            Some(id) => id,
            None => {
                self.recovering = false;
                let id = self.next_node_id;
                self.next_node_id += 1;
                let points: Vec<(u64, u32)> = self
                    .nodes
                    .values()
                    .flat_map(|n| n.entry.tokens.iter().map(move |&t| (t, n.entry.id)))
                    .collect();
                let count = join_token_count(&points, count);
                let tokens = plan_tokens(&points, id, count, hash64(addr.as_bytes()));
                self.nodes.insert(
                    id,
                    NodeRecord {
                        entry: NodeEntry {
                            id,
                            addr: addr.to_string(),
                            state: NodeState::Down,
                            tokens,
                        },
                        keys: 0,
                        conn: None,
                        last_seen: now,
                        down_at: now,
                        missed: false,
                        catching_up: false,
                    },
                );
                log::info!("node {id} joined at {addr}");
                id
            }
        };
        let node = self.nodes.get_mut(&id).expect("inserted above");
        if let Some(old) = node.conn.replace(conn) {
            self.links.remove(&old);
        }
        node.last_seen = now;
        // A new process, or the same one on a new link: its heartbeats say.
        node.keys = 0;
        let missed = std::mem::take(&mut node.missed);
        if node.entry.state == NodeState::Down {
            let others_serve = existing.is_none()
                && self
                    .nodes
                    .values()
                    .any(|n| n.entry.id != id && n.entry.state == NodeState::Up);
            let node = self.nodes.get_mut(&id).expect("inserted above");
            node.entry.state = if others_serve {
                NodeState::Joining
            } else {
                NodeState::Up
            };
            self.epoch += 1;
            log::info!(
                "node {id} at {addr} is {} (epoch {})",
                node.entry.state,
                self.epoch
            );
        }
        self.links.insert(conn, id);
        let mut reply = match missed {
            true => format!("{id} catch-up\n"),
            false => format!("{id}\n"),
        };
        reply.push_str(&self.ring().encode());
        Ok(Bytes::from(reply))
    }

    fn mark_down(&mut self, now: Millis, id: u32, why: &str) {
        if let Some(n) = self.nodes.get_mut(&id) {
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
    }

    fn tick(&mut self, now: Millis) {
        let late: Vec<u32> = self
            .nodes
            .values()
            .filter(|n| {
                n.entry.state == NodeState::Up
                    && now.saturating_sub(n.last_seen) > self.cfg.down_after_ms
            })
            .map(|n| n.entry.id)
            .collect();
        for id in late {
            self.mark_down(now, id, "no heartbeat");
        }
        let Some(dead_after) = self.cfg.dead_after_ms else {
            return;
        };
        let dead: Vec<u32> = self
            .nodes
            .values()
            .filter(|n| {
                n.entry.state == NodeState::Down && now.saturating_sub(n.down_at) > dead_after
            })
            .map(|n| n.entry.id)
            .collect();
        for id in dead {
            log::warn!("node {id} has been down for over {dead_after} ms: dropping it");
            if let Err(e) = self.leave(id) {
                log::warn!("cannot drop node {id}: {e}");
            }
        }
    }

    fn execute(
        &mut self,
        now: Millis,
        conn: ConnId,
        f: &Frame,
    ) -> Result<Option<(u8, Bytes)>, Error> {
        let member = self.links.get(&conn).copied();
        Ok(Some(match f.op {
            op::PING => (op::PONG, f.payload.clone()),
            op::HELLO => {
                let client = self.next_client_id;
                let Some(n) = self.next_contact() else {
                    return Err(Error::new(ErrorCode::Unavailable, "no storage node is up"));
                };
                let payload = format!("{client} {} {}", n.entry.id, n.entry.addr);
                self.next_client_id += 1;
                (op::WELCOME, Bytes::from(payload))
            }
            op::RING => (op::RING_REPLY, Bytes::from(self.ring().encode())),
            op::STATUS => (
                op::STATUS_REPLY,
                Bytes::from(self.status_json().to_string()),
            ),
            op::NODE_JOIN => (op::JOINED, self.join(now, conn, &f.payload)?),
            op::DROP => match self.find_node(&f.payload) {
                Some(id) => {
                    self.leave(id)?;
                    (op::OK, Bytes::new())
                }
                None => (op::NOT_FOUND, Bytes::new()),
            },
            op::LEAVE if member.is_some() => {
                self.leave(member.expect("checked"))?;
                (op::OK, Bytes::new())
            }
            op::HANDOFF_DONE if member.is_some() => {
                let epoch = std::str::from_utf8(&f.payload)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| Error::new(ErrorCode::BadOp, "HANDOFF_DONE needs EPOCH"))?;
                self.handoff_done.insert(member.expect("checked"), epoch);
                return Ok(None);
            }
            op::HEARTBEAT if member.is_some() => {
                let id = member.expect("checked");
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.last_seen = now;
                    // `KEYS`, then ` catching-up` while the node catches up.
                    let text = std::str::from_utf8(&f.payload).unwrap_or("");
                    let (keys, flag) = text.split_once(' ').unwrap_or((text, ""));
                    n.keys = keys.parse().unwrap_or(n.keys);
                    n.catching_up = flag == "catching-up";
                    if n.entry.state == NodeState::Down {
                        // It saw the ring marking it down on this link, and
                        // catches up by itself.
                        n.missed = false;
                        n.entry.state = NodeState::Up;
                        self.epoch += 1;
                        log::info!("node {id} is back (epoch {})", self.epoch);
                    }
                }
                return Ok(None);
            }
            o if (op::PING..=op::INCR).contains(&o) => {
                return Err(Error::new(
                    ErrorCode::BadOp,
                    "key-value requests go to a storage node (HELLO names one)",
                ))
            }
            o => return Err(Error::bad_op(o, member.is_some(), "the manager")),
        }))
    }
}

impl Service for Manager {
    fn step(&mut self, now: Millis, input: Input, out: &mut Vec<Output>) {
        self.started.get_or_insert(now);
        match input {
            Input::Timer { id: TIMER_INIT } | Input::Timer { id: TIMER_TICK } => {
                self.tick(now);
                out.push(Output::Timer {
                    at: now + self.cfg.tick_ms,
                    id: TIMER_TICK,
                });
            }
            Input::Frame { conn, frame } => match self.execute(now, conn, &frame) {
                Ok(None) => {}
                Ok(Some((op, payload))) => out.push(Output::Send {
                    conn,
                    frame: Frame::new(op, frame.client_id, 0, payload),
                }),
                Err(e) => reply_error(out, conn, frame.client_id, 0, &e),
            },
            Input::FrameError {
                conn,
                error,
                client_id,
            } => {
                reply_error(out, conn, client_id, 0, &error);
                out.push(Output::Close { conn });
            }
            Input::Eof { conn } => out.push(Output::Close { conn }),
            // The manager never switches a connection to raw mode.
            Input::Data { conn, .. } => out.push(Output::Close { conn }),
            Input::Closed { conn } => {
                if let Some(id) = self.links.remove(&conn) {
                    if self.nodes.get(&id).and_then(|n| n.conn) == Some(conn) {
                        let n = self.nodes.get_mut(&id).expect("present");
                        n.conn = None;
                        if n.entry.state == NodeState::Joining {
                            log::warn!("node {id} went away while joining");
                            self.recovering = false;
                            self.nodes.remove(&id);
                            self.epoch += 1;
                        } else {
                            self.mark_down(now, id, "link closed");
                        }
                    }
                }
            }
            Input::Signal(sig) => {
                log::info!("{sig:?}: shutting down");
                out.push(Output::Stop);
            }
            Input::Timer { .. }
            | Input::Accepted { .. }
            | Input::Connected { .. }
            | Input::ConnectFailed { .. } => {}
        }
        self.maybe_settle();
        self.push_ring(out);
        for conn in self.to_close.drain(..) {
            out.push(Output::Close { conn });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(m: &mut Manager, now: Millis, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        m.step(now, input, &mut out);
        out
    }

    fn reply(out: &[Output]) -> (u8, String) {
        match &out[0] {
            Output::Send { frame, .. } => {
                (frame.op, String::from_utf8_lossy(&frame.payload).into())
            }
            o => panic!("expected a reply, got {o:?}"),
        }
    }

    fn join(m: &mut Manager, now: Millis, conn: ConnId, addr: &str) -> (u8, String) {
        let f = Frame::new(op::NODE_JOIN, 0, 0, format!("gtstore {addr} 8"));
        reply(&step(m, now, Input::Frame { conn, frame: f }))
    }

    #[test]
    fn ids_round_robin_and_failure_detection() {
        let mut m = Manager::new(ManagerConfig::default());
        let client = ConnId::new(9, 1);
        let hello = || Input::Frame {
            conn: client,
            frame: Frame::new(op::HELLO, 0, 0, ""),
        };
        assert!(reply(&step(&mut m, 0, hello()))
            .1
            .starts_with("UNAVAILABLE"));

        let (a, b) = (ConnId::new(1, 1), ConnId::new(2, 1));
        let (op_a, text_a) = join(&mut m, 0, a, "127.0.0.1:7001");
        assert_eq!(op_a, op::JOINED);
        assert!(text_a.starts_with("1\nepoch 1\n"));
        let (_, text_b) = join(&mut m, 0, b, "127.0.0.1:7002");
        assert!(text_b.starts_with("2\nepoch 2\n"));
        assert!(text_b.contains("node 2 127.0.0.1:7002 joining"), "{text_b}");
        // Node 2 serves once node 1 has handed its share over.
        assert_eq!(reply(&step(&mut m, 0, hello())).1, "1 1 127.0.0.1:7001");
        let done = Input::Frame {
            conn: a,
            frame: Frame::new(op::HANDOFF_DONE, 0, 1, "2"),
        };
        step(&mut m, 0, done);
        assert_eq!(m.ring().epoch, 3);
        assert_eq!(m.ring().node(2).unwrap().state, NodeState::Up);

        let w: Vec<String> = (0..4).map(|_| reply(&step(&mut m, 1, hello())).1).collect();
        assert_eq!(
            w,
            [
                "2 2 127.0.0.1:7002",
                "3 1 127.0.0.1:7001",
                "4 2 127.0.0.1:7002",
                "5 1 127.0.0.1:7001"
            ]
        );

        // Node 2 falls silent: after down_after it is down and skipped.
        let hb = Input::Frame {
            conn: a,
            frame: Frame::new(op::HEARTBEAT, 0, 1, "42"),
        };
        assert!(step(&mut m, 1_500, hb).is_empty());
        step(&mut m, 2_100, Input::Timer { id: TIMER_TICK });
        let s = m.status_json();
        assert_eq!(s["live_nodes"], 1);
        assert_eq!(s["nodes"][0]["keys"], 42);
        assert_eq!(s["nodes"][1]["state"], "down");
        assert!(reply(&step(&mut m, 2_101, hello()))
            .1
            .ends_with("127.0.0.1:7001"));

        // It comes back on the same address, on a new link: same id, same tokens,
        // and it is told it was down (it may have missed writes).
        let tokens_before = m.ring().node(2).unwrap().tokens.clone();
        let b2 = ConnId::new(2, 2);
        assert!(join(&mut m, 3_000, b2, "127.0.0.1:7002")
            .1
            .starts_with("2 catch-up\n"));
        assert_eq!(m.ring().node(2).unwrap().tokens, tokens_before);
        // The old link closing late does not mark it down again.
        step(&mut m, 3_001, Input::Closed { conn: b });
        assert_eq!(m.status_json()["live_nodes"], 2);
    }

    /// NODE_JOIN offering `ring` from `addr`.
    fn join_offering(m: &mut Manager, conn: ConnId, addr: &str, ring: &str) -> (u8, String) {
        let f = Frame::new(op::NODE_JOIN, 0, 0, format!("gtstore {addr} 8\n{ring}"));
        reply(&step(m, 0, Input::Frame { conn, frame: f }))
    }

    const OLD: &str = "epoch 5\nreplicas 3 2 2\n\
        node 1 127.0.0.1:7001 up 10,40\n\
        node 2 127.0.0.1:7002 up 20,50\n";
    const NEW: &str = "epoch 7\nreplicas 3 2 2\n\
        node 1 127.0.0.1:7001 up 10,40\n\
        node 2 127.0.0.1:7002 down 20,50\n\
        node 4 127.0.0.1:7004 up 30,60\n";

    fn tokens(m: &Manager, id: u32) -> Vec<u64> {
        m.ring()
            .node(id)
            .map(|n| n.tokens.clone())
            .unwrap_or_default()
    }

    #[test]
    fn a_restarted_manager_adopts_the_newest_offered_ring() {
        let mut m = Manager::new(ManagerConfig::default());
        // The first node back knows an older ring: adopted, the others down.
        let (op_a, text) = join_offering(&mut m, ConnId::new(1, 1), "127.0.0.1:7002", OLD);
        assert_eq!(op_a, op::JOINED);
        assert!(text.starts_with("2\n"), "{text}");
        assert_eq!(tokens(&m, 2), vec![20, 50]);
        assert_eq!(m.ring().node(1).unwrap().state, NodeState::Down);
        assert_eq!(m.ring().node(2).unwrap().state, NodeState::Up);
        assert!(m.ring().epoch > 5);
        // The second knows a newer one: it wins, node 2 keeps its link and id.
        let (_, text) = join_offering(&mut m, ConnId::new(2, 1), "127.0.0.1:7004", NEW);
        assert!(text.starts_with("4\n"), "{text}");
        let r = m.ring();
        assert!(r.epoch > 7, "epoch {} must pass every offered one", r.epoch);
        assert_eq!(r.nodes().len(), 3);
        assert_eq!(tokens(&m, 4), vec![30, 60]);
        assert_eq!(r.node(2).unwrap().state, NodeState::Up, "still linked");
        assert_eq!(r.node(1).unwrap().state, NodeState::Down);
        // Node 2's heartbeats still count for node 2.
        let hb = Frame::new(op::HEARTBEAT, 0, 2, "77");
        step(
            &mut m,
            1,
            Input::Frame {
                conn: ConnId::new(1, 1),
                frame: hb,
            },
        );
        assert_eq!(m.status_json()["nodes"][1]["keys"], 77);
        // An older offer later changes nothing; node 1 gets its id back.
        let (_, text) = join_offering(&mut m, ConnId::new(3, 1), "127.0.0.1:7001", OLD);
        assert!(text.starts_with("1\n"), "{text}");
        assert_eq!(tokens(&m, 4), vec![30, 60]);
        assert_eq!(m.status_json()["live_nodes"], 3);
        // A new node gets an id above every offered one: no reuse.
        let (_, text) = join(&mut m, 0, ConnId::new(4, 1), "127.0.0.1:7009");
        assert!(text.starts_with("5\n"), "{text}");
        // That was a change of our own: offers are ignored from now on.
        let epoch = m.ring().epoch;
        let newer = NEW.replace("epoch 7", &format!("epoch {}", epoch + 10));
        let newer = newer.replace("30,60", "31,61");
        join_offering(&mut m, ConnId::new(2, 2), "127.0.0.1:7004", &newer);
        assert_eq!(tokens(&m, 4), vec![30, 60]);
    }

    #[test]
    fn a_manager_that_formed_the_cluster_ignores_offers() {
        let mut m = Manager::new(ManagerConfig::default());
        join(&mut m, 0, ConnId::new(1, 1), "127.0.0.1:7001");
        let before = m.ring().encode();
        join_offering(&mut m, ConnId::new(1, 2), "127.0.0.1:7001", NEW);
        assert_eq!(m.ring().node(1).unwrap().tokens.len(), 8);
        assert!(m.ring().node(4).is_none());
        assert_eq!(m.ring().encode(), before, "no change at all");
    }

    #[test]
    fn an_adopted_ring_drops_links_it_does_not_know() {
        let mut m = Manager::new(ManagerConfig::default());
        let five =
            "epoch 5\nreplicas 1 1 1\nnode 1 127.0.0.1:7001 up 20\nnode 3 127.0.0.1:7003 up 10\n";
        join_offering(&mut m, ConnId::new(1, 1), "127.0.0.1:7003", five);
        // Node 3 left by epoch 7 (the newer ring has no node 3).
        let out = {
            let f = Frame::new(
                op::NODE_JOIN,
                0,
                0,
                format!("gtstore 127.0.0.1:7001 8\n{NEW}"),
            );
            step(
                &mut m,
                0,
                Input::Frame {
                    conn: ConnId::new(2, 1),
                    frame: f,
                },
            )
        };
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Close { conn } if *conn == ConnId::new(1, 1))),
            "{out:?} {}",
            m.ring().encode()
        );
        assert!(m.ring().node(3).is_none());
        assert_eq!(m.ring().node(1).unwrap().state, NodeState::Up);
    }

    #[test]
    fn dead_after_drops_a_down_node_and_gives_its_tokens_away() {
        let mut m = Manager::new(ManagerConfig {
            replicas: 2,
            dead_after_ms: Some(5_000),
            ..ManagerConfig::default()
        });
        let (a, b, c) = (ConnId::new(1, 1), ConnId::new(2, 1), ConnId::new(3, 1));
        join(&mut m, 0, a, "127.0.0.1:7001");
        for (conn, addr) in [(b, "127.0.0.1:7002"), (c, "127.0.0.1:7003")] {
            join(&mut m, 0, conn, addr);
            for from in [a, b] {
                let done = Frame::new(op::HANDOFF_DONE, 0, 1, m.ring().epoch.to_string());
                step(
                    &mut m,
                    0,
                    Input::Frame {
                        conn: from,
                        frame: done,
                    },
                );
            }
        }
        assert_eq!(m.status_json()["live_nodes"], 3);
        let tokens_of_3 = m.ring().node(3).unwrap().tokens.len();
        step(&mut m, 1_000, Input::Closed { conn: c });
        assert_eq!(m.ring().node(3).unwrap().state, NodeState::Down);
        // Down, but not for long enough.
        step(&mut m, 5_900, Input::Timer { id: TIMER_TICK });
        assert!(m.ring().node(3).is_some());
        let hb = |conn| Input::Frame {
            conn,
            frame: Frame::new(op::HEARTBEAT, 0, 0, "0"),
        };
        step(&mut m, 6_100, hb(a));
        step(&mut m, 6_100, hb(b));
        step(&mut m, 6_100, Input::Timer { id: TIMER_TICK });
        let ring = m.ring();
        assert!(ring.node(3).is_none(), "node 3 is dropped");
        let kept: usize = [1, 2]
            .iter()
            .map(|&id| ring.node(id).unwrap().tokens.len())
            .sum();
        assert_eq!(kept, 2 * 8 + tokens_of_3, "its tokens went to the others");
        assert_eq!(m.status_json()["live_nodes"], 2);
    }

    #[test]
    fn a_new_node_waits_until_the_recovery_window_is_over() {
        let mut m = Manager::new(ManagerConfig {
            recovery_ms: 3_000,
            ..ManagerConfig::default()
        });
        step(&mut m, 1_000, Input::Timer { id: TIMER_INIT });
        // A brand-new node is first (the old members are still backing off): it
        // is told to retry, and nothing changes.
        let newcomer = |m: &mut Manager, now: Millis, conn| {
            let f = Frame::new(op::NODE_JOIN, 0, 0, "gtstore 127.0.0.1:7009 8");
            reply(&step(m, now, Input::Frame { conn, frame: f }))
        };
        let (code, text) = newcomer(&mut m, 1_100, ConnId::new(9, 1));
        assert_eq!(code, op::ERR);
        assert!(text.starts_with("UNAVAILABLE "), "{text}");
        assert!(m.ring().nodes().is_empty());
        // The old members come back and offer their rings: ids and tokens kept.
        let (_, text) = join_offering(&mut m, ConnId::new(2, 1), "127.0.0.1:7002", OLD);
        assert!(text.starts_with("2\n"), "{text}");
        let (code, _) = newcomer(&mut m, 2_000, ConnId::new(9, 2));
        assert_eq!(code, op::ERR, "still inside the window");
        let (_, text) = join_offering(&mut m, ConnId::new(4, 1), "127.0.0.1:7004", NEW);
        assert!(text.starts_with("4\n"), "the newer ring wins: {text}");
        // A member of the adopted ring needs no offer to be let in.
        let plain = Frame::new(op::NODE_JOIN, 0, 0, "gtstore 127.0.0.1:7001 8");
        let (code, text) = reply(&step(
            &mut m,
            2_500,
            Input::Frame {
                conn: ConnId::new(1, 1),
                frame: plain,
            },
        ));
        assert_eq!((code, &text[..2]), (op::JOINED, "1\n"));
        assert_eq!(m.status_json()["live_nodes"], 3);
        // After the window the new node registers, with a fresh id, joining the
        // recovered membership.
        let (code, text) = newcomer(&mut m, 4_000, ConnId::new(9, 3));
        assert_eq!(code, op::JOINED);
        assert!(text.starts_with("5\n"), "{text}");
        assert_eq!(m.ring().node(5).unwrap().state, NodeState::Joining);
        assert_eq!((tokens(&m, 1), tokens(&m, 4)), (vec![10, 40], vec![30, 60]));
    }

    #[test]
    fn without_a_recovery_window_a_new_node_registers_at_once() {
        let mut m = Manager::new(ManagerConfig::default());
        step(&mut m, 1_000, Input::Timer { id: TIMER_INIT });
        let (code, text) = join(&mut m, 1_001, ConnId::new(1, 1), "127.0.0.1:7001");
        assert_eq!(code, op::JOINED);
        assert!(text.starts_with("1\n"), "{text}");
    }

    #[test]
    fn member_ops_need_a_join() {
        let mut m = Manager::new(ManagerConfig::default());
        let c = ConnId::new(3, 1);
        let hb = Input::Frame {
            conn: c,
            frame: Frame::new(op::HEARTBEAT, 0, 0, "1"),
        };
        assert!(reply(&step(&mut m, 0, hb)).1.starts_with("BADOP"));
        let bad = Input::Frame {
            conn: c,
            frame: Frame::new(op::NODE_JOIN, 0, 0, "wrong 1:1 8"),
        };
        let out = step(&mut m, 0, bad);
        assert!(reply(&out).1.starts_with("AUTH"));
        assert!(matches!(out[1], Output::Close { .. }));
    }
}
