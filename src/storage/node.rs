//! The storage node as a state machine.
//!
//! [`StorageNode::step`] takes one reactor [`Input`] and pushes [`Output`]s; it never
//! touches a socket or a clock, so tests and simulations can drive it directly.
//!
//! What it does today:
//! - serves every key-value op of the protocol. A request for a key whose token
//!   another node owns is forwarded over the mesh (see [`super::mesh`]) and the
//!   owner's reply is relayed, keeping each client connection's replies in request
//!   order (see [`super::order`]). A request that arrives from another member is
//!   always served locally, so a request is forwarded at most once;
//! - keeps a link to the manager: connects with doubling backoff, registers with
//!   `NODE_JOIN` (`SECRET SP HOST:PORT SP TOKENS`), receives its node id and the ring
//!   in `JOINED` and every later ring in `RING_UPDATE`, and sends a `HEARTBEAT` with
//!   its key count every [`NodeConfig::heartbeat_ms`]. It serves requests all the
//!   while, before it has an id too (its replies then carry node id 0, and with no
//!   ring it serves every key itself);
//! - keeps a link to every other node of the ring (the mesh);
//! - refuses ops 50-99 with `ERR BADOP` on connections that have not proven they
//!   are cluster members (by a `NODE_JOIN` carrying the cluster secret).
//!
//! Caveats: no data moves when the ring changes yet, so keys written before a node
//! joins and now owned by it are not found through the new owner; nothing is
//! replicated; a forwarded request to a down owner fails with `ERR UNAVAILABLE`.

use super::engine::{Engine, Written};
use super::mesh::{Forward, Mesh};
use super::order::ReplyOrder;
use crate::protocol::{kv, op, Error, ErrorCode, Frame};
use crate::reactor::link::Link;
use crate::reactor::{reply_error, ConnId, Input, Millis, Output, Service};
use crate::ring::{hash64, NodeState, Ring};
use bytes::Bytes;
use std::collections::HashSet;
use std::net::SocketAddr;

const TIMER_INIT: u64 = 0;
const TIMER_MANAGER: u64 = 1;
const TIMER_HEARTBEAT: u64 = 2;
const TIMER_TICK: u64 = 3;
const TAG_MANAGER: u64 = 1;

/// Settings of a storage node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The address other processes reach this node at (`HOST:PORT`).
    pub advertise: String,
    /// The manager's address.
    pub manager: SocketAddr,
    /// Shared secret that proves cluster membership (no spaces).
    pub secret: String,
    /// Tokens (virtual nodes) this node asks for.
    pub tokens: u32,
    /// Heartbeat period to the manager, in ms.
    pub heartbeat_ms: Millis,
    /// First reconnect delay to the manager, in ms.
    pub retry_base_ms: Millis,
    /// Largest reconnect delay to the manager and peers, in ms.
    pub retry_cap_ms: Millis,
    /// A forwarded request not answered in this many ms gets `ERR TIMEOUT`.
    pub request_timeout_ms: Millis,
    /// Period of the housekeeping tick (peer reconnects, request deadlines), in ms.
    pub tick_ms: Millis,
}

impl NodeConfig {
    /// Defaults for a node advertising `advertise` and registering with `manager`.
    pub fn new(advertise: String, manager: SocketAddr) -> NodeConfig {
        NodeConfig {
            advertise,
            manager,
            secret: crate::DEFAULT_SECRET.to_string(),
            tokens: crate::DEFAULT_TOKENS,
            heartbeat_ms: 500,
            retry_base_ms: 100,
            retry_cap_ms: 2_000,
            request_timeout_ms: 5_000,
            tick_ms: 100,
        }
    }
}

/// A storage node's whole state.
pub struct StorageNode {
    cfg: NodeConfig,
    node_id: u32,
    ring: Ring,
    engine: Engine,
    manager: Link,
    members: HashSet<ConnId>,
    mesh: Mesh,
    order: ReplyOrder,
}

impl StorageNode {
    /// A fresh node with no data and no id.
    pub fn new(cfg: NodeConfig) -> StorageNode {
        let manager = Link::new(cfg.retry_base_ms, cfg.retry_cap_ms);
        let mesh = Mesh::new(cfg.retry_base_ms, cfg.retry_cap_ms);
        StorageNode {
            mesh,
            order: ReplyOrder::default(),
            cfg,
            node_id: 0,
            ring: Ring::empty(),
            engine: Engine::default(),
            manager,
            members: HashSet::new(),
        }
    }

    /// The id the manager gave this node (0 until registered).
    pub fn node_id(&self) -> u32 {
        self.node_id
    }

    /// The engine, for inspection.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn connect_manager(&mut self, out: &mut Vec<Output>) {
        self.manager.connecting();
        out.push(Output::Connect {
            addr: self.cfg.manager,
            tag: TAG_MANAGER,
        });
    }

    fn manager_down(&mut self, now: Millis, out: &mut Vec<Output>) {
        let at = self.manager.failed(now);
        out.push(Output::Timer {
            at,
            id: TIMER_MANAGER,
        });
    }

    fn on_manager_frame(&mut self, frame: Frame, out: &mut Vec<Output>) {
        match frame.op {
            op::RING_UPDATE => match Ring::decode(&frame.payload) {
                Ok(ring) => self.install_ring(ring, out),
                Err(e) => log::warn!("bad ring from the manager: {e}"),
            },
            op::JOINED => {
                let text = &frame.payload[..];
                let Some(nl) = memchr::memchr(b'\n', text) else {
                    log::warn!("JOINED without a ring");
                    return;
                };
                let id = std::str::from_utf8(&text[..nl])
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok());
                match (id, Ring::decode(&text[nl + 1..])) {
                    (Some(id), Ok(ring)) => {
                        if self.node_id != id {
                            log::info!("registered with the manager as node {id}");
                        }
                        self.node_id = id;
                        self.install_ring(ring, out);
                    }
                    (_, Err(e)) => log::warn!("bad ring from the manager: {e}"),
                    (None, _) => log::warn!("bad node id from the manager"),
                }
            }
            op::ERR => log::error!(
                "the manager refused us: {}",
                Error::from_payload(&frame.payload)
            ),
            other => log::debug!("ignoring op {other} from the manager"),
        }
    }

    fn install_ring(&mut self, ring: Ring, out: &mut Vec<Output>) {
        if let Some(me) = ring.node(self.node_id) {
            if !me.tokens.is_empty() && !self.engine.tokens().eq(me.tokens.iter().copied()) {
                self.engine.set_tokens(me.tokens.iter().copied());
            }
        }
        log::debug!("ring epoch {} installed", ring.epoch);
        let failed = self.mesh.set_members(self.node_id, &ring, out);
        self.ring = ring;
        self.fail_forwards(failed, ErrorCode::Unavailable, out);
    }

    /// Answers forwards that will get no reply from their peer.
    fn fail_forwards(&mut self, fwds: Vec<Forward>, code: ErrorCode, out: &mut Vec<Output>) {
        for f in fwds {
            let err = Error::new(
                code,
                match code {
                    ErrorCode::Timeout => format!("node {} did not answer in time", f.peer),
                    _ => format!("node {} is unreachable", f.peer),
                },
            );
            let frame = Frame::error(f.client_id, self.node_id, &err);
            self.order.fill(f.conn, f.seq, frame, out);
        }
    }

    /// The node a client's key-value request must go to, or `None` to serve here.
    fn route(&self, f: &Frame) -> Result<Option<u32>, Error> {
        let key = match f.op {
            op::PUT | op::CREATE | op::UPDATE | op::INCR => kv::split_kv(&f.payload)?.0,
            op::GET | op::DELETE | op::EXISTS => kv::key(&f.payload)?,
            _ => return Ok(None),
        };
        match self.ring.owner_of_hash(hash64(&key)) {
            None => Ok(None),
            Some(owner) if owner == self.node_id => Ok(None),
            Some(owner) => match self.ring.node(owner).map(|n| n.state) {
                Some(NodeState::Down) => Err(Error::new(
                    ErrorCode::Unavailable,
                    format!("node {owner}, the key's owner, is down"),
                )),
                _ => Ok(Some(owner)),
            },
        }
    }

    /// Serves one request from a client or a peer.
    fn on_request(&mut self, now: Millis, conn: ConnId, f: Frame, out: &mut Vec<Output>) {
        if !self.members.contains(&conn) {
            match self.route(&f) {
                Ok(None) => {}
                Ok(Some(owner)) => {
                    let seq = self.order.reserve(conn);
                    let deadline = now + self.cfg.request_timeout_ms;
                    if let Err(fwd) =
                        self.mesh
                            .forward(owner, f, conn, seq, self.node_id, deadline, out)
                    {
                        self.fail_forwards(vec![fwd], ErrorCode::Unavailable, out);
                    }
                    return;
                }
                Err(e) => {
                    let frame = Frame::error(f.client_id, self.node_id, &e);
                    self.order.ready(conn, frame, out);
                    return;
                }
            }
        }
        match self.execute(conn, &f) {
            Ok((op, payload)) => {
                let frame = Frame::new(op, f.client_id, self.node_id, payload);
                self.order.ready(conn, frame, out);
            }
            Err(e) if e.code.closes_connection() => {
                reply_error(out, conn, f.client_id, self.node_id, &e)
            }
            Err(e) => {
                let frame = Frame::error(f.client_id, self.node_id, &e);
                self.order.ready(conn, frame, out);
            }
        }
    }

    /// A reply from a peer to one of our forwards: relay it to the client.
    fn on_peer_reply(&mut self, frame: Frame, out: &mut Vec<Output>) {
        if let Some(fwd) = self.mesh.reply(&frame) {
            let reply = Frame::new(frame.op, fwd.client_id, self.node_id, frame.payload);
            self.order.fill(fwd.conn, fwd.seq, reply, out);
        }
    }

    fn hello(&self) -> Frame {
        let payload = format!(
            "{} {} {}",
            self.cfg.secret, self.cfg.advertise, self.cfg.tokens
        );
        Frame::new(op::NODE_JOIN, 0, self.node_id, payload)
    }

    fn execute(&mut self, conn: ConnId, f: &Frame) -> Result<(u8, Bytes), Error> {
        let ok = |written: Written| match written {
            Written::Ok => (op::OK, Bytes::new()),
            Written::Conflict => (op::CONFLICT, Bytes::new()),
            Written::NotFound => (op::NOT_FOUND, Bytes::new()),
        };
        let found = |yes: bool| {
            if yes {
                (op::OK, Bytes::new())
            } else {
                (op::NOT_FOUND, Bytes::new())
            }
        };
        Ok(match f.op {
            op::PING => (op::PONG, f.payload.clone()),
            op::GET => match self.engine.get(&kv::key(&f.payload)?) {
                Some(v) => (op::VALUE, v),
                None => (op::NOT_FOUND, Bytes::new()),
            },
            op::PUT => {
                let (k, v) = kv::split_kv(&f.payload)?;
                self.engine.put(&k, &v);
                (op::OK, Bytes::new())
            }
            op::DELETE => found(self.engine.delete(&kv::key(&f.payload)?)),
            op::EXISTS => found(self.engine.exists(&kv::key(&f.payload)?)),
            op::CREATE => {
                let (k, v) = kv::split_kv(&f.payload)?;
                ok(self.engine.create(&k, &v))
            }
            op::UPDATE => {
                let (k, v) = kv::split_kv(&f.payload)?;
                ok(self.engine.update(&k, &v))
            }
            op::INCR => {
                let (k, delta) = kv::split_incr(&f.payload)?;
                let n = self.engine.incr(&k, delta)?;
                (op::VALUE, Bytes::from(n.to_string()))
            }
            op::HELLO | op::RING | op::STATUS => {
                return Err(Error::new(
                    ErrorCode::BadOp,
                    format!(
                        "{} is a manager request; the manager is at {}",
                        op::name(f.op),
                        self.cfg.manager
                    ),
                ))
            }
            op::NODE_JOIN => {
                let secret = f.payload.split(|&b| b == b' ').next().unwrap_or(b"");
                if secret != self.cfg.secret.as_bytes() {
                    return Err(Error::new(ErrorCode::Auth, "wrong cluster secret"));
                }
                self.members.insert(conn);
                (op::OK, Bytes::new())
            }
            o if op::is_internal(o) => {
                return Err(Error::new(
                    ErrorCode::BadOp,
                    if self.members.contains(&conn) {
                        format!("op {o} is not served by a storage node")
                    } else {
                        format!("op {o} is reserved for cluster members")
                    },
                ))
            }
            o => {
                return Err(Error::new(
                    ErrorCode::BadOp,
                    format!("unknown or reply op {o}"),
                ))
            }
        })
    }
}

impl Service for StorageNode {
    fn step(&mut self, now: Millis, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::Timer { id: TIMER_INIT } => {
                self.connect_manager(out);
                out.push(Output::Timer {
                    at: now + self.cfg.heartbeat_ms,
                    id: TIMER_HEARTBEAT,
                });
                out.push(Output::Timer {
                    at: now + self.cfg.tick_ms,
                    id: TIMER_TICK,
                });
            }
            Input::Timer { id: TIMER_TICK } => {
                let late = self.mesh.tick(now, out);
                self.fail_forwards(late, ErrorCode::Timeout, out);
                out.push(Output::Timer {
                    at: now + self.cfg.tick_ms,
                    id: TIMER_TICK,
                });
            }
            Input::Timer { id: TIMER_MANAGER } => {
                if self.manager.due(now) {
                    self.connect_manager(out);
                }
            }
            Input::Timer {
                id: TIMER_HEARTBEAT,
            } => {
                if let Some(conn) = self.manager.conn() {
                    out.push(Output::Send {
                        conn,
                        frame: Frame::new(
                            op::HEARTBEAT,
                            0,
                            self.node_id,
                            self.engine.len().to_string(),
                        ),
                    });
                }
                out.push(Output::Timer {
                    at: now + self.cfg.heartbeat_ms,
                    id: TIMER_HEARTBEAT,
                });
            }
            Input::Timer { .. } => {}
            Input::Connected { conn, tag } if tag == TAG_MANAGER => {
                self.manager.up(conn);
                out.push(Output::Send {
                    conn,
                    frame: self.hello(),
                });
            }
            Input::Connected { conn, tag } if Mesh::owns_tag(tag) => {
                let hello = self.hello();
                self.mesh.connected(tag, conn, hello, out);
            }
            Input::Connected { conn, .. } => out.push(Output::Close { conn }),
            Input::ConnectFailed { tag } if tag == TAG_MANAGER => {
                log::debug!("manager {} unreachable; retrying", self.cfg.manager);
                self.manager_down(now, out);
            }
            Input::ConnectFailed { tag } if Mesh::owns_tag(tag) => {
                self.mesh.connect_failed(tag, now);
            }
            Input::ConnectFailed { .. } => {}
            Input::Accepted { .. } => {}
            Input::Frame { conn, frame } => {
                if self.manager.conn() == Some(conn) {
                    self.on_manager_frame(frame, out);
                } else if self.mesh.is_link(conn) {
                    self.on_peer_reply(frame, out);
                } else {
                    self.on_request(now, conn, frame, out);
                }
            }
            Input::FrameError { conn, error } => {
                reply_error(out, conn, 0, self.node_id, &error);
                out.push(Output::Close { conn });
            }
            Input::Eof { conn } => self.order.eof(conn, out),
            Input::Closed { conn } => {
                self.members.remove(&conn);
                self.order.closed(conn);
                if let Some(lost) = self.mesh.closed(conn, now) {
                    self.fail_forwards(lost, ErrorCode::Unavailable, out);
                }
                if self.manager.conn() == Some(conn) {
                    log::warn!("lost the manager link; reconnecting");
                    self.manager_down(now, out);
                }
            }
            Input::Signal(sig) => {
                log::info!("{sig:?}: shutting down");
                out.push(Output::Stop);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NodeConfig {
        NodeConfig::new("127.0.0.1:7001".into(), "127.0.0.1:7000".parse().unwrap())
    }

    /// Steps `node` with `input` and returns what it asked for.
    fn step(node: &mut StorageNode, now: Millis, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        node.step(now, input, &mut out);
        out
    }

    fn sent(out: &[Output]) -> Vec<(ConnId, u8, Vec<u8>)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { conn, frame } => Some((*conn, frame.op, frame.payload.to_vec())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn registers_with_backoff_and_serves_meanwhile() {
        let mut n = StorageNode::new(cfg());
        let out = step(&mut n, 0, Input::Timer { id: TIMER_INIT });
        assert!(matches!(
            out[0],
            Output::Connect {
                tag: TAG_MANAGER,
                ..
            }
        ));
        // The manager is not up: the retry is scheduled with a doubling delay.
        let out = step(&mut n, 5, Input::ConnectFailed { tag: TAG_MANAGER });
        assert!(matches!(
            out[0],
            Output::Timer {
                at: 105,
                id: TIMER_MANAGER
            }
        ));
        let out = step(&mut n, 105, Input::Timer { id: TIMER_MANAGER });
        assert!(matches!(out[0], Output::Connect { .. }));
        let out = step(&mut n, 110, Input::ConnectFailed { tag: TAG_MANAGER });
        assert!(matches!(out[0], Output::Timer { at: 310, .. }));

        // A client is served before the node has an id.
        let client = ConnId::new(5, 1);
        let put = Frame::new(op::PUT, 9, 0, &b"1 kv"[..]);
        let out = step(
            &mut n,
            120,
            Input::Frame {
                conn: client,
                frame: put,
            },
        );
        assert_eq!(sent(&out), vec![(client, op::OK, vec![])]);

        // The manager answers; the node joins and keeps its data under its tokens.
        let link = ConnId::new(1, 2);
        let out = step(
            &mut n,
            310,
            Input::Connected {
                conn: link,
                tag: TAG_MANAGER,
            },
        );
        assert_eq!(
            sent(&out),
            vec![(link, op::NODE_JOIN, b"gtstore 127.0.0.1:7001 64".to_vec())]
        );
        let ring = "3\nepoch 1\nreplicas 1 1 1\nnode 3 127.0.0.1:7001 up 10,20,30\n";
        step(
            &mut n,
            311,
            Input::Frame {
                conn: link,
                frame: Frame::new(op::JOINED, 0, 0, ring),
            },
        );
        assert_eq!(n.node_id(), 3);
        assert_eq!(n.engine().tokens().collect::<Vec<_>>(), vec![10, 20, 30]);
        let out = step(
            &mut n,
            312,
            Input::Frame {
                conn: client,
                frame: Frame::new(op::GET, 9, 0, &b"k"[..]),
            },
        );
        match &out[0] {
            Output::Send { frame, .. } => {
                assert_eq!(
                    (frame.op, frame.client_id, frame.node_id),
                    (op::VALUE, 9, 3)
                );
                assert_eq!(&frame.payload[..], b"v");
            }
            o => panic!("unexpected {o:?}"),
        }
        // Losing the link schedules a reconnect.
        let out = step(&mut n, 400, Input::Closed { conn: link });
        assert!(matches!(
            out[0],
            Output::Timer {
                at: 500,
                id: TIMER_MANAGER
            }
        ));
    }

    #[test]
    fn membership_ops_need_a_proof() {
        let mut n = StorageNode::new(cfg());
        let c = ConnId::new(7, 1);
        let out = step(
            &mut n,
            0,
            Input::Frame {
                conn: c,
                frame: Frame::new(op::HEARTBEAT, 0, 0, "1"),
            },
        );
        assert_eq!(out.len(), 1, "BADOP keeps the connection open");
        assert!(sent(&out)[0].2.starts_with(b"BADOP"));
        let out = step(
            &mut n,
            0,
            Input::Frame {
                conn: c,
                frame: Frame::new(op::NODE_JOIN, 0, 0, "nope 1:2 3"),
            },
        );
        assert!(sent(&out)[0].2.starts_with(b"AUTH"));
        assert!(matches!(out[1], Output::Close { conn } if conn == c));
        let out = step(
            &mut n,
            0,
            Input::Frame {
                conn: c,
                frame: Frame::new(op::NODE_JOIN, 0, 0, "gtstore 1:2 3"),
            },
        );
        assert_eq!(sent(&out), vec![(c, op::OK, vec![])]);
    }
}
