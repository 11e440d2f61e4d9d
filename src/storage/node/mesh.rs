//! The mesh: one persistent outbound connection from this node to every other
//! node of the ring, and the requests forwarded over them.
//!
//! Each peer is a [`Link`] (connect, the member handshake to prove membership,
//! doubling backoff after a failure). Forwards wait until this node's `NODE_JOIN`
//! went out on the link ([`Mesh::proven`]). A forwarded request is the client's frame unchanged
//! except for its client id, which becomes a node-local *tag*; the owner's reply
//! comes back on the same connection carrying that tag, and is matched to the
//! waiting client. Many forwards are in flight on one connection at once.
//! Requests for a peer whose link is not up yet wait (until their deadline) and
//! leave as soon as it connects.
//!
//! Everything here is pure state: connects and sends are pushed as outputs, and a
//! failed or expired forward is handed back to the caller to answer. Each forward
//! carries a token of the caller's type `T`, opaque to the mesh, that comes back
//! with the forward's reply or failure and tells the caller who was waiting.

use crate::protocol::{op, Frame};
use crate::reactor::link::{Link, LinkState};
use crate::reactor::{ConnId, Millis, Output};
use crate::ring::Ring;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;
use std::net::SocketAddr;

/// A map keyed by ids this node hands out itself (forward tags, request ids):
/// counters, never chosen by a peer, so they need no keyed hash, only one
/// that spreads consecutive ids (see [`IdHasher`](crate::reactor::IdHasher)).
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<crate::reactor::IdHasher>>;

/// Tags of outbound peer connects are this plus the peer's node id.
pub const PEER_TAG: u64 = 1 << 32;

/// Whether a connect's `tag` is one of the mesh's.
pub fn owns_tag(tag: u64) -> bool {
    tag >= PEER_TAG
}

/// A request sent to (or waiting for) another node.
#[derive(Debug)]
pub struct Forward<T> {
    /// The caller's token: who waits for the answer.
    pub token: T,
    /// The node it went to.
    pub peer: u32,
    /// When to give up.
    pub deadline: Millis,
    /// The frame, until it is sent.
    unsent: Option<Frame>,
}

impl<T> Forward<T> {
    /// Whether its frame left for the peer (then the peer may have acted on
    /// it, answer or not); a forward still waiting for its link was not.
    pub fn sent(&self) -> bool {
        self.unsent.is_none()
    }
}

struct Peer {
    addr: SocketAddr,
    /// Left the ring: no new forwards; closed once its replies are in.
    retired: bool,
    link: Link,
    /// Tags of forwards waiting for the link.
    waiting: Vec<u64>,
    /// The link is up and this node's `NODE_JOIN` went out on it: forwards may
    /// follow (the peer serves them in order, after the join).
    proven: bool,
}

/// Peers and forwards, each forward with its caller's token of type `T`.
pub struct Mesh<T> {
    peers: BTreeMap<u32, Peer>,
    by_conn: crate::reactor::ConnMap<u32>,
    forwards: IdMap<Forward<T>>,
    next_tag: u64,
    retry_base: Millis,
    retry_cap: Millis,
}

impl<T> Mesh<T> {
    /// An empty mesh whose links retry after `retry_base` ms, doubling to `retry_cap`.
    pub fn new(retry_base: Millis, retry_cap: Millis) -> Mesh<T> {
        Mesh {
            peers: BTreeMap::new(),
            by_conn: Default::default(),
            forwards: IdMap::default(),
            next_tag: 1,
            retry_base,
            retry_cap,
        }
    }

    /// Makes the peer set match the ring (every node but `me`); starts connects.
    /// Returns forwards to peers that left the ring.
    pub fn set_members(&mut self, me: u32, ring: &Ring, out: &mut Vec<Output>) -> Vec<Forward<T>> {
        let mut wanted: BTreeMap<u32, SocketAddr> = BTreeMap::new();
        for n in ring.nodes() {
            if n.id == me {
                continue;
            }
            match n.addr.parse() {
                Ok(a) => {
                    wanted.insert(n.id, a);
                }
                Err(_) => log::warn!("node {} has an unusable address {}", n.id, n.addr),
            }
        }
        let gone: Vec<u32> = self
            .peers
            .keys()
            .filter(|id| wanted.get(id) != self.peers.get(id).map(|p| &p.addr))
            .copied()
            .collect();
        let mut failed = Vec::new();
        for id in gone {
            let sent = self
                .forwards
                .values()
                .any(|f| f.peer == id && f.unsent.is_none());
            let p = self.peers.get_mut(&id).expect("listed");
            if sent && p.link.conn().is_some() && !wanted.contains_key(&id) {
                // Replies to what it was sent are still coming: keep the link.
                p.retired = true;
                continue;
            }
            failed.extend(self.retire(id, out));
        }
        for (id, addr) in wanted {
            if let Some(p) = self.peers.get_mut(&id) {
                p.retired = false;
            }
            if let std::collections::btree_map::Entry::Vacant(e) = self.peers.entry(id) {
                e.insert(Peer {
                    addr,
                    retired: false,
                    link: Link::new(self.retry_base, self.retry_cap),
                    waiting: Vec::new(),
                    proven: false,
                });
                self.connect(id, out);
            }
        }
        failed
    }

    fn connect(&mut self, id: u32, out: &mut Vec<Output>) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.link.connecting();
            out.push(Output::Connect {
                addr: p.addr,
                tag: PEER_TAG + id as u64,
            });
        }
    }

    /// Drops peer `id` and its link; returns its forwards.
    fn retire(&mut self, id: u32, out: &mut Vec<Output>) -> Vec<Forward<T>> {
        if let Some(p) = self.peers.remove(&id) {
            if let Some(conn) = p.link.conn() {
                self.by_conn.remove(&conn);
                out.push(Output::Close { conn });
            }
        }
        self.fail_peer(id)
    }

    /// Removes and returns every forward to `peer` (sent or waiting).
    fn fail_peer(&mut self, peer: u32) -> Vec<Forward<T>> {
        let tags: Vec<u64> = self
            .forwards
            .iter()
            .filter(|(_, f)| f.peer == peer)
            .map(|(t, _)| *t)
            .collect();
        if let Some(p) = self.peers.get_mut(&peer) {
            p.waiting.clear();
        }
        tags.into_iter()
            .filter_map(|t| self.forwards.remove(&t))
            .collect()
    }

    /// Periodic work: retry due links; returns forwards past their deadline.
    pub fn tick(&mut self, now: Millis, out: &mut Vec<Output>) -> Vec<Forward<T>> {
        let done: Vec<u32> = self
            .peers
            .iter()
            .filter(|(id, p)| p.retired && !self.forwards.values().any(|f| f.peer == **id))
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            self.retire(id, out);
        }
        let due: Vec<u32> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.retired && p.link.due(now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.connect(id, out);
        }
        let late: Vec<u64> = self
            .forwards
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        late.into_iter()
            .filter_map(|t| self.forwards.remove(&t))
            .collect()
    }

    /// A link came up: says hello (`hello` is the `MEMBER_HELLO` frame); what
    /// waits keeps waiting for [`Mesh::proven`].
    pub fn connected(&mut self, tag: u64, conn: ConnId, hello: Frame, out: &mut Vec<Output>) {
        let id = (tag - PEER_TAG) as u32;
        let Some(p) = self.peers.get_mut(&id) else {
            out.push(Output::Close { conn });
            return;
        };
        if p.link.state != LinkState::Connecting {
            out.push(Output::Close { conn });
            return;
        }
        p.link.up(conn);
        self.by_conn.insert(conn, id);
        p.proven = false;
        out.push(Output::Send { conn, frame: hello });
    }

    /// The peer on `conn` proved the cluster secret: sends `join` (this node's
    /// `NODE_JOIN`), then what was waiting.
    pub fn proven(&mut self, conn: ConnId, join: Frame, out: &mut Vec<Output>) {
        let Some(p) = self
            .by_conn
            .get(&conn)
            .and_then(|id| self.peers.get_mut(id))
        else {
            return;
        };
        if p.link.conn() != Some(conn) || p.proven {
            return;
        }
        p.proven = true;
        out.push(Output::Send { conn, frame: join });
        for tag in std::mem::take(&mut p.waiting) {
            if let Some(frame) = self.forwards.get_mut(&tag).and_then(|f| f.unsent.take()) {
                out.push(Output::Send { conn, frame });
            }
        }
    }

    /// A connect failed: back off. Forwards waiting for this peer keep waiting
    /// until their deadline.
    pub fn connect_failed(&mut self, tag: u64, now: Millis) {
        let id = (tag - PEER_TAG) as u32;
        if let Some(p) = self.peers.get_mut(&id) {
            if p.link.state == LinkState::Connecting {
                p.link.failed(now);
            }
        }
    }

    /// A connection closed. If it was a peer link, returns the forwards that were
    /// in flight on it (their outcome is unknown).
    pub fn closed(&mut self, conn: ConnId, now: Millis) -> Option<Vec<Forward<T>>> {
        let id = self.by_conn.remove(&conn)?;
        let p = self.peers.get_mut(&id)?;
        if p.link.conn() == Some(conn) {
            p.link.failed(now);
            p.proven = false;
        }
        let in_flight: Vec<u64> = self
            .forwards
            .iter()
            .filter(|(_, f)| f.peer == id && f.unsent.is_none())
            .map(|(t, _)| *t)
            .collect();
        Some(
            in_flight
                .into_iter()
                .filter_map(|t| self.forwards.remove(&t))
                .collect(),
        )
    }

    /// Whether `conn` is one of our outbound peer links.
    pub fn is_link(&self, conn: ConnId) -> bool {
        self.by_conn.contains_key(&conn)
    }

    /// Whether `id` is a peer of the mesh (a forward to it is taken, sent or
    /// waiting for its link).
    pub fn knows(&self, id: u32) -> bool {
        self.peers.get(&id).is_some_and(|p| !p.retired)
    }

    /// Whether `id` is a peer with a link that is up.
    pub fn is_up(&self, id: u32) -> bool {
        self.peers.get(&id).is_some_and(|p| p.link.conn().is_some())
    }

    /// Whether the link to peer `id` broke or failed to connect and is waiting to
    /// retry: the peer is probably gone (crashed, or cut off), so requests are
    /// routed around it until the link is back.
    pub fn is_unreachable(&self, id: u32) -> bool {
        self.peers
            .get(&id)
            .is_some_and(|p| matches!(p.link.state, LinkState::Backoff(_)))
    }

    /// Sends `frame` to node `peer`, its NODEID set to `hops` (how many nodes
    /// have forwarded it, this one included). Returns the forward back if `peer` is
    /// not in the mesh.
    pub fn forward(
        &mut self,
        peer: u32,
        mut frame: Frame,
        token: T,
        hops: u32,
        deadline: Millis,
        out: &mut Vec<Output>,
    ) -> Result<(), Box<Forward<T>>> {
        let tag = self.next_tag;
        self.next_tag += 1;
        frame.client_id = tag;
        frame.node_id = hops;
        let mut fwd = Forward {
            token,
            peer,
            deadline,
            unsent: None,
        };
        let Some(p) = self.peers.get_mut(&peer) else {
            return Err(Box::new(fwd));
        };
        match p.link.conn().filter(|_| p.proven) {
            Some(link) => out.push(Output::Send { conn: link, frame }),
            None => {
                fwd.unsent = Some(frame);
                p.waiting.push(tag);
            }
        }
        self.forwards.insert(tag, fwd);
        Ok(())
    }

    /// A frame arrived on a peer link: the reply to forward `frame.client_id`.
    /// Returns the forward it answers (None for the hello's OK or unknown tags).
    pub fn reply(&mut self, frame: &Frame) -> Option<Forward<T>> {
        if frame.client_id == 0 {
            if frame.op == op::ERR {
                log::error!(
                    "a peer refused our hello: {}",
                    String::from_utf8_lossy(&frame.payload)
                );
            }
            return None;
        }
        self.forwards.remove(&frame.client_id)
    }

    /// Forwards in flight or waiting.
    pub fn in_flight(&self) -> usize {
        self.forwards.len()
    }
}
