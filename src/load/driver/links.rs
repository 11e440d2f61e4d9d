//! A driver's connections and routing: links per client and node, following the
//! manager's ring, choosing the link for a key, parsing replies, and failing a
//! link's requests when it breaks.

use super::{Driver, Link, LinkState, Node, Outcome, Routing};
use crate::load::cluster::{key_slot, SlotMap};
use crate::load::wire::{self, Space, KEY_LEN};
use crate::reactor::Output;
use crate::ring::Ring;
use bytes::{Buf, BytesMut};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Driver {
    pub(super) fn node_index(&mut self, label: String, addr: SocketAddr) -> usize {
        if let Some(i) = self.nodes.iter().position(|n| n.label == label) {
            return i;
        }
        self.nodes.push(Node { label, addr });
        self.node_counts.push(0);
        self.nodes.len() - 1
    }

    /// Adds the ring's nodes to the node table.
    pub(super) fn learn_ring(&mut self, ring: &Ring) {
        for n in ring.nodes() {
            if self.node_of_id.contains_key(&n.id) {
                continue;
            }
            let Some(addr) = crate::load::resolve(&n.addr).ok() else {
                log::warn!("node {} has an unusable address {}", n.id, n.addr);
                continue;
            };
            let i = self.node_index(format!("{} {}", n.id, n.addr), addr);
            self.node_of_id.insert(n.id, i);
        }
    }

    pub(super) fn open_link(&mut self, client: usize, node: usize, out: &mut Vec<Output>) -> usize {
        let l = self.links.len();
        self.links.push(Link {
            conn: None,
            node,
            client,
            state: LinkState::Connecting,
            rbuf: BytesMut::new(),
            out: BytesMut::new(),
            dirty: false,
            pending: VecDeque::new(),
        });
        out.push(Output::Connect {
            addr: self.nodes[node].addr,
            tag: l as u64,
        });
        l
    }

    pub(super) fn ensure_link(&mut self, c: usize, node: usize, out: &mut Vec<Output>) {
        if self.clients[c].links.len() <= node {
            self.clients[c].links.resize(node + 1, None);
        }
        let usable =
            self.clients[c].links[node].is_some_and(|l| self.links[l].state != LinkState::Down);
        if !usable {
            let l = self.open_link(c, node, out);
            self.clients[c].links[node] = Some(l);
        }
    }

    /// A new ring from the manager: learn its nodes, connect every client to the
    /// ones it serves from, and let clients switch over once drained.
    pub(super) fn check_board(&mut self, out: &mut Vec<Output>) {
        let Some(board) = self.sh.board.clone() else {
            return;
        };
        let epoch = board.epoch.load(Ordering::Acquire);
        if self.latest.as_ref().is_some_and(|r| r.epoch == epoch) {
            return;
        }
        let ring = board.ring.lock().expect("ring lock").clone();
        self.learn_ring(&ring);
        let serving = Arc::new(ring.serving());
        if matches!(self.sh.routing, Routing::Aware) {
            for c in 0..self.clients.len() {
                if self.clients[c].dead {
                    continue;
                }
                for n in serving.nodes() {
                    let node = self.node_of_id[&n.id];
                    self.ensure_link(c, node, out);
                }
            }
        }
        self.latest = Some(serving);
        for c in 0..self.clients.len() {
            self.fill(c);
        }
    }

    /// Switches a partition-aware client to the latest ring if it can.
    pub(super) fn adopt(&mut self, c: usize) -> bool {
        let Some(latest) = &self.latest else {
            return true;
        };
        let cl = &self.clients[c];
        let Some(mine) = &cl.ring else {
            return true;
        };
        if mine.epoch == latest.epoch {
            return true;
        }
        if cl.inflight > 0 {
            return false;
        }
        let connecting = cl
            .links
            .iter()
            .flatten()
            .any(|&l| self.links[l].state == LinkState::Connecting);
        if connecting {
            return false;
        }
        self.clients[c].ring = Some(latest.clone());
        true
    }

    /// The link for `key` (None: ping) and the node index its request counts for.
    pub(super) fn route(&self, c: usize, space: Space, key: Option<u32>) -> Option<(usize, usize)> {
        let owner_of = |ring: &Ring, key: u32| {
            let mut kb = [0u8; KEY_LEN];
            wire::key_bytes(space, key, &mut kb);
            ring.owner(&kb)
        };
        let cl = &self.clients[c];
        let up = |l: &usize| self.links[*l].state == LinkState::Up;
        // Any live link of this client, rotating with its requests in flight.
        let any_live = || {
            let n = cl.links.len();
            (0..n)
                .filter_map(|i| cl.links[(cl.inflight + i) % n])
                .find(up)
        };
        match self.sh.routing {
            Routing::Aware => {
                let ring = cl.ring.as_ref()?;
                let want = key
                    .and_then(|k| owner_of(ring, k))
                    .and_then(|id| self.node_of_id.get(&id))
                    .and_then(|&n| cl.links.get(n).copied().flatten())
                    .filter(up);
                // No owner link (a ping, or the owner's link is down): any live one.
                let l = want.or_else(any_live)?;
                Some((l, self.links[l].node))
            }
            Routing::Slots => {
                let want = key
                    .map(|k| {
                        let mut kb = [0u8; KEY_LEN];
                        wire::key_bytes(space, k, &mut kb);
                        self.slots[key_slot(&kb) as usize]
                    })
                    .filter(|&n| n != SlotMap::NONE)
                    .and_then(|n| cl.links.get(n as usize).copied().flatten())
                    .filter(up);
                // A ping, a slot no master serves, or its master's link is down:
                // any live link (a wrong node answers MOVED).
                let l = want.or_else(any_live)?;
                Some((l, self.links[l].node))
            }
            Routing::Contacts(_) => {
                let l = cl.links.first().copied().flatten().filter(up)?;
                let share = match (&self.latest, key) {
                    (Some(ring), Some(k)) => owner_of(ring, k)
                        .and_then(|id| self.node_of_id.get(&id).copied())
                        .unwrap_or(self.links[l].node),
                    _ => self.links[l].node,
                };
                Some((l, share))
            }
        }
    }

    /// Fails every request pending on link `l` with `code` and marks it down.
    pub(super) fn fail_link(&mut self, l: usize, code: &str, out: &mut Vec<Output>) {
        let now = self.now_ns();
        let pending = std::mem::take(&mut self.links[l].pending);
        let c = self.links[l].client;
        let err = Outcome::Error(code.to_string());
        for p in pending {
            self.complete(c, p, &err, &[], now);
        }
        let link = &mut self.links[l];
        link.state = LinkState::Down;
        self.broken += 1;
        link.rbuf = BytesMut::new();
        link.out = BytesMut::new();
        if let Some(conn) = link.conn {
            out.push(Output::Close { conn });
        }
    }

    pub(super) fn on_data(&mut self, l: usize, data: BytesMut, out: &mut Vec<Output>) {
        let proto = self.sh.proto;
        let mut rbuf = std::mem::take(&mut self.links[l].rbuf);
        if rbuf.is_empty() {
            rbuf = data;
        } else {
            rbuf.extend_from_slice(&data);
        }
        let now = self.now_ns();
        let c = self.links[l].client;
        let mut at = 0;
        let mut broken = None;
        while at < rbuf.len() {
            let Some(op) = self.links[l].pending.front().map(|p| p.op) else {
                broken = Some("a reply to no request".to_string());
                break;
            };
            match wire::parse_reply(proto, op, &rbuf[at..]) {
                Ok(Some((outcome, used))) => {
                    let p = self.links[l].pending.pop_front().expect("front exists");
                    if let Some(r) = self.redirect_of(&outcome, &rbuf[at..at + used]) {
                        self.redirect(l, p, r, out);
                        at += used;
                        continue;
                    }
                    let value = match &outcome {
                        Outcome::Value(r) => &rbuf[at + r.start..at + r.end],
                        _ => &[][..],
                    };
                    self.complete(c, p, &outcome, value, now);
                    at += used;
                }
                Ok(None) => break,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        rbuf.advance(at);
        self.links[l].rbuf = rbuf;
        if let Some(why) = broken {
            log::warn!("{}: {why}; closing", self.nodes[self.links[l].node].label);
            self.fail_link(l, "BADREPLY", out);
        }
        self.fill(c);
    }

    pub(super) fn on_down(&mut self, l: usize, out: &mut Vec<Output>) {
        if self.links[l].state != LinkState::Down {
            self.fail_link(l, "CLOSED", out);
        }
        let c = self.links[l].client;
        let any_up = self.clients[c]
            .links
            .iter()
            .flatten()
            .any(|&x| self.links[x].state != LinkState::Down);
        if !any_up {
            self.clients[c].dead = true;
        }
        self.fill(c);
    }
}
