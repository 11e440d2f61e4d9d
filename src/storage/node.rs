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
use super::handoff::{parse_chunk, Handoff};
use super::mesh::{Forward, Mesh, ReplyTo};
use super::order::ReplyOrder;
use super::resp::{self, Item, NodeFacts, RespFront};
use crate::protocol::{kv, op, Error, ErrorCode, Frame};
use crate::reactor::link::Link;
use crate::reactor::{reply_error, ConnId, Input, Millis, Output, Service, Signal};
use crate::ring::{hash64, NodeState, Ring};
use bytes::{Bytes, BytesMut};
use std::collections::HashSet;
use std::net::SocketAddr;

const TIMER_INIT: u64 = 0;
const TIMER_MANAGER: u64 = 1;
const TIMER_HEARTBEAT: u64 = 2;
const TIMER_TICK: u64 = 3;
const TIMER_LEAVE: u64 = 4;
const TAG_MANAGER: u64 = 1;
/// A request is forwarded at most this many times (rings can disagree briefly).
const MAX_HOPS: u32 = 3;
/// How long a leaving node waits for its handoff before it exits anyway, in ms.
const LEAVE_DEADLINE_MS: Millis = 120_000;
/// How long a node that has left the ring keeps forwarding before it exits, in ms.
const EXIT_GRACE_MS: Millis = 1_500;
/// Replies held back on one connection (behind an unanswered forward) above which
/// the node stops reading that connection's requests; it reads again below half.
const HOLD_SLOTS: usize = 4096;
/// Bytes of replies held back on one connection above which reading stops.
const HOLD_BYTES: usize = 4 << 20;

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
    /// `ring` as requests are routed now (joining nodes not yet serving).
    serving: Ring,
    /// `ring` once pending moves are done.
    settled: Ring,
    handoff: Option<Handoff>,
    /// This node asked to leave (SIGTERM).
    leaving: bool,
    /// Client connections not being read because of their reply backlog.
    held: HashSet<ConnId>,
    /// Connections that just proved membership (drained into `Output::Trust`).
    trusted: Vec<ConnId>,
    /// The RESP front, when the node serves RESP on listener 1.
    resp: Option<RespFront>,
}

impl StorageNode {
    /// A fresh node with no data and no id.
    pub fn new(cfg: NodeConfig) -> StorageNode {
        let manager = Link::new(cfg.retry_base_ms, cfg.retry_cap_ms);
        let mesh = Mesh::new(cfg.retry_base_ms, cfg.retry_cap_ms);
        StorageNode {
            mesh,
            order: ReplyOrder::default(),
            serving: Ring::empty(),
            settled: Ring::empty(),
            handoff: None,
            leaving: false,
            held: HashSet::new(),
            trusted: Vec::new(),
            resp: None,
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

    fn on_manager_frame(&mut self, now: Millis, frame: Frame, out: &mut Vec<Output>) {
        match frame.op {
            op::RING_UPDATE => match Ring::decode(&frame.payload) {
                Ok(ring) => self.install_ring(ring, now, out),
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
                        self.install_ring(ring, now, out);
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

    fn install_ring(&mut self, ring: Ring, now: Millis, out: &mut Vec<Output>) {
        let me = self.node_id;
        let was_leaving = self
            .ring
            .node(me)
            .is_some_and(|n| n.state == NodeState::Leaving);
        let serving = ring.serving();
        let settled = ring.settled();
        log::debug!("ring epoch {} installed", ring.epoch);
        if me != 0 && ring.node(me).is_none() && (was_leaving || self.leaving) {
            // Other nodes may still route by the previous ring for a moment: keep
            // forwarding to the new owners for a grace period, then exit.
            log::info!("handed everything over and left the ring; exiting soon");
            out.push(Output::Timer {
                at: now + EXIT_GRACE_MS,
                id: TIMER_LEAVE,
            });
        }
        // Sectors: the tokens this node serves now and the ones it will serve.
        let mut tokens: Vec<u64> = [&serving, &settled]
            .iter()
            .filter_map(|r| r.node(me))
            .flat_map(|n| n.tokens.iter().copied())
            .collect();
        tokens.sort_unstable();
        tokens.dedup();
        if !tokens.is_empty() && !self.engine.tokens().eq(tokens.iter().copied()) {
            self.engine.set_tokens(tokens);
        }
        if me != 0 && ring.node(me).is_some() {
            let dropped = self.engine.remove_where(|h| {
                serving.owner_of_hash(h) != Some(me) && settled.owner_of_hash(h) != Some(me)
            });
            if dropped > 0 {
                log::info!("dropped {dropped} keys now held by other nodes");
            }
        }
        let failed = self.mesh.set_members(me, &ring, out);
        self.ring = ring;
        self.serving = serving;
        self.settled = settled;
        self.fail_forwards(failed, ErrorCode::Unavailable, out);
        self.start_handoff(now, out);
    }

    /// Lists what this node must hand over for the current ring and starts sending.
    fn start_handoff(&mut self, now: Millis, out: &mut Vec<Output>) {
        let me = self.node_id;
        self.handoff = None;
        if me == 0 || !self.ring.has_moves() || self.serving.node(me).is_none() {
            return;
        }
        let (serving, settled) = (&self.serving, &self.settled);
        let keys: Vec<(u32, Bytes)> = self
            .engine
            .keys_where(|h| {
                serving.owner_of_hash(h) == Some(me)
                    && settled.owner_of_hash(h).is_some_and(|o| o != me)
            })
            .into_iter()
            .filter_map(|k| settled.owner_of_hash(hash64(&k)).map(|o| (o, k)))
            .collect();
        log::info!(
            "epoch {}: handing {} keys over",
            self.ring.epoch,
            keys.len()
        );
        self.handoff = Some(Handoff::new(self.ring.epoch, keys));
        self.pump_handoff(now, out);
    }

    /// Sends the chunks the window allows; reports to the manager when done.
    fn pump_handoff(&mut self, now: Millis, out: &mut Vec<Output>) {
        let Some(h) = self.handoff.as_mut() else {
            return;
        };
        let epoch = h.epoch;
        for (target, payload) in h.next_chunks(&self.engine) {
            let frame = Frame::new(op::MIGRATE, 0, 0, payload);
            let deadline = now + self.cfg.request_timeout_ms;
            let reply_to = ReplyTo::Migrate { epoch };
            if self
                .mesh
                .forward(target, frame, reply_to, 1, deadline, out)
                .is_err()
            {
                h.failed = true;
            }
        }
        if h.done() && !h.reported {
            if let Some(conn) = self.manager.conn() {
                h.reported = true;
                out.push(Output::Send {
                    conn,
                    frame: Frame::new(op::HANDOFF_DONE, 0, self.node_id, epoch.to_string()),
                });
            }
        }
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
            match f.reply_to {
                ReplyTo::Client {
                    conn,
                    seq,
                    client_id,
                } => {
                    let frame = Frame::error(client_id, self.node_id, &err);
                    self.order.fill(conn, seq, frame, out);
                }
                ReplyTo::Mirror { conn, seq, result } => {
                    let frame = Frame::error(result.client_id, self.node_id, &err);
                    self.order.fill(conn, seq, frame, out);
                }
                ReplyTo::Migrate { epoch } => {
                    if let Some(h) = self.handoff.as_mut().filter(|h| h.epoch == epoch) {
                        h.failed = true;
                    }
                }
            }
        }
    }

    /// The key of a key-value request, or `None` for other ops.
    fn request_key(f: &Frame) -> Result<Option<Bytes>, Error> {
        Ok(Some(match f.op {
            op::PUT | op::CREATE | op::UPDATE | op::INCR => kv::split_kv(&f.payload)?.0,
            op::GET | op::DELETE | op::EXISTS => kv::key(&f.payload)?,
            _ => return Ok(None),
        }))
    }

    /// Serves one request from a client or a peer.
    fn on_request(&mut self, now: Millis, conn: ConnId, f: Frame, out: &mut Vec<Output>) {
        let me = self.node_id;
        let member = self.members.contains(&conn);
        let key = match Self::request_key(&f) {
            Ok(k) => k,
            Err(e) => {
                let frame = Frame::error(f.client_id, me, &e);
                self.order.ready(conn, frame, out);
                return;
            }
        };
        let (serving_owner, settled_owner) = match &key {
            Some(k) if me != 0 => {
                let h = hash64(k);
                (self.serving.owner_of_hash(h), self.settled.owner_of_hash(h))
            }
            _ => (None, None),
        };
        let here = serving_owner.is_none_or(|o| o == me) || (member && settled_owner == Some(me));
        if !here {
            let owner = serving_owner.expect("not here means an owner");
            let hops = if member { f.node_id } else { 0 };
            let down = self
                .ring
                .node(owner)
                .is_some_and(|n| n.state == NodeState::Down);
            if down || hops >= MAX_HOPS {
                let e = Error::new(
                    ErrorCode::Unavailable,
                    if down {
                        format!("node {owner}, the key's owner, is down")
                    } else {
                        "the ring is changing; retry".to_string()
                    },
                );
                let frame = Frame::error(f.client_id, me, &e);
                self.order.ready(conn, frame, out);
                return;
            }
            let seq = self.order.reserve(conn);
            let reply_to = ReplyTo::Client {
                conn,
                seq,
                client_id: f.client_id,
            };
            let deadline = now + self.cfg.request_timeout_ms;
            if let Err(fwd) = self
                .mesh
                .forward(owner, f, reply_to, hops + 1, deadline, out)
            {
                self.fail_forwards(vec![*fwd], ErrorCode::Unavailable, out);
            }
            return;
        }
        let reply = match self.execute(conn, &f) {
            Ok((op, payload)) => Frame::new(op, f.client_id, me, payload),
            Err(e) if e.code.closes_connection() => {
                reply_error(out, conn, f.client_id, me, &e);
                return;
            }
            Err(e) => Frame::error(f.client_id, me, &e),
        };
        let mutated = matches!(
            (f.op, reply.op),
            (op::PUT | op::CREATE | op::UPDATE | op::DELETE, op::OK) | (op::INCR, op::VALUE)
        );
        match (key, settled_owner) {
            (Some(key), Some(next)) if mutated && next != me && serving_owner == Some(me) => {
                // A move is pending: the next owner gets a copy before the client
                // gets its answer.
                let copy = match self.engine.get(&key) {
                    Some(v) => {
                        let mut p = Vec::with_capacity(key.len() + v.len() + 8);
                        p.extend_from_slice(format!("{} ", key.len()).as_bytes());
                        p.extend_from_slice(&key);
                        p.extend_from_slice(&v);
                        Frame::new(op::PUT, 0, 0, p)
                    }
                    None => Frame::new(op::DELETE, 0, 0, key),
                };
                let seq = self.order.reserve(conn);
                let reply_to = ReplyTo::Mirror {
                    conn,
                    seq,
                    result: reply,
                };
                let deadline = now + self.cfg.request_timeout_ms;
                if let Err(fwd) = self.mesh.forward(next, copy, reply_to, 1, deadline, out) {
                    self.fail_forwards(vec![*fwd], ErrorCode::Unavailable, out);
                }
            }
            _ => self.order.ready(conn, reply, out),
        }
    }

    /// A reply from a peer to one of our forwards.
    fn on_peer_reply(&mut self, now: Millis, frame: Frame, out: &mut Vec<Output>) {
        let Some(fwd) = self.mesh.reply(&frame) else {
            return;
        };
        match fwd.reply_to {
            ReplyTo::Client {
                conn,
                seq,
                client_id,
            } => {
                let reply = Frame::new(frame.op, client_id, self.node_id, frame.payload);
                self.order.fill(conn, seq, reply, out);
            }
            ReplyTo::Mirror { conn, seq, result } => {
                if frame.op == op::ERR {
                    let e = Error::new(
                        ErrorCode::Unavailable,
                        "the key is moving and its new owner refused the write",
                    );
                    let reply = Frame::error(result.client_id, self.node_id, &e);
                    self.order.fill(conn, seq, reply, out);
                } else {
                    self.order.fill(conn, seq, result, out);
                }
            }
            ReplyTo::Migrate { epoch } => {
                if let Some(h) = self.handoff.as_mut().filter(|h| h.epoch == epoch) {
                    if frame.op == op::OK {
                        h.acked(fwd.peer);
                    } else {
                        h.failed = true;
                    }
                }
                self.pump_handoff(now, out);
            }
        }
    }

    /// Stops reading connections whose held-back replies grew too large, and
    /// resumes the ones that drained. A client that pipelines without reading
    /// thus costs bounded memory even when its replies wait for other nodes.
    fn apply_holds(&mut self, client: Option<ConnId>, out: &mut Vec<Output>) {
        let order = &self.order;
        if let Some(c) = client {
            let over = order.outstanding(c) > HOLD_SLOTS || order.queued_bytes(c) > HOLD_BYTES;
            if over && self.held.insert(c) {
                out.push(Output::Hold {
                    conn: c,
                    hold: true,
                });
            }
        }
        if self.held.is_empty() {
            return;
        }
        let drained: Vec<ConnId> = self
            .held
            .iter()
            .copied()
            .filter(|&c| {
                order.outstanding(c) <= HOLD_SLOTS / 2 && order.queued_bytes(c) <= HOLD_BYTES / 2
            })
            .collect();
        for conn in drained {
            self.held.remove(&conn);
            out.push(Output::Hold { conn, hold: false });
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
                self.trusted.push(conn);
                (op::OK, Bytes::new())
            }
            op::MIGRATE if self.members.contains(&conn) => {
                let entries = parse_chunk(&f.payload)
                    .ok_or_else(|| Error::new(ErrorCode::BadOp, "malformed MIGRATE chunk"))?;
                for (k, v) in entries {
                    self.engine.put(k, v);
                }
                (op::OK, Bytes::new())
            }
            o => {
                let member = self.members.contains(&conn);
                return Err(Error::bad_op(o, member, "a storage node"));
            }
        })
    }
}

// The RESP front (see `super::resp`): RESP connections come from listener 1; their
// commands become native requests served by `on_request` like any client's, and
// every native reply to them is turned back into RESP at the end of the step.
impl StorageNode {
    /// Serves RESP2 on listener [`resp::LISTENER`], commands bounded by `limits`.
    pub fn enable_resp(&mut self, limits: crate::protocol::resp::Limits) {
        self.resp = Some(RespFront::new(limits));
    }

    /// Bytes from a RESP connection: serve each command it completes, in order.
    fn on_resp_data(&mut self, now: Millis, conn: ConnId, data: BytesMut, out: &mut Vec<Output>) {
        let Some(front) = self.resp.as_mut() else {
            return;
        };
        for item in front.feed(conn, data) {
            match item {
                Item::Request(frame) => {
                    self.on_request(now, conn, frame, out);
                    self.apply_holds(Some(conn), out);
                }
                Item::Facts => {
                    let facts = NodeFacts {
                        node_id: self.node_id,
                        keys: self.engine.len(),
                    };
                    let front = self.resp.as_mut().expect("checked");
                    if let Some(bytes) = front.facts(conn, facts) {
                        out.push(Output::SendBytes { conn, bytes });
                    }
                }
                Item::Send(bytes) => out.push(Output::SendBytes { conn, bytes }),
                Item::Close => out.push(Output::Close { conn }),
            }
        }
    }
}

impl Service for StorageNode {
    fn step(&mut self, now: Millis, input: Input, out: &mut Vec<Output>) {
        let mark = out.len();
        let resp = self.resp.as_mut();
        match input {
            Input::Accepted { conn, listener } if listener == resp::LISTENER && resp.is_some() => {
                resp.expect("checked").accept(conn, out);
            }
            Input::Data { conn, data } if resp.as_ref().is_some_and(|r| r.has(conn)) => {
                self.on_resp_data(now, conn, data, out);
            }
            input => {
                if let (Input::Closed { conn }, Some(r)) = (&input, resp) {
                    r.closed(*conn);
                }
                self.step_native(now, input, out);
            }
        }
        if let Some(r) = self.resp.as_mut() {
            r.translate(mark, out, &self.held);
        }
    }
}

impl StorageNode {
    /// Everything but the RESP front's own inputs.
    fn step_native(&mut self, now: Millis, input: Input, out: &mut Vec<Output>) {
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
                if self.handoff.as_ref().is_some_and(|h| h.failed) {
                    self.start_handoff(now, out);
                } else {
                    self.pump_handoff(now, out);
                }
                self.apply_holds(None, out);
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
            Input::Timer { id: TIMER_LEAVE } => {
                if self.ring.node(self.node_id).is_some() {
                    log::warn!("the handoff did not finish in time; exiting anyway");
                }
                out.push(Output::Stop);
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
                    self.on_manager_frame(now, frame, out);
                } else if self.mesh.is_link(conn) {
                    self.on_peer_reply(now, frame, out);
                    self.apply_holds(None, out);
                } else {
                    self.on_request(now, conn, frame, out);
                    for conn in self.trusted.drain(..) {
                        out.push(Output::Trust { conn });
                    }
                    self.apply_holds(Some(conn), out);
                }
            }
            Input::FrameError {
                conn,
                error,
                client_id,
            } => {
                reply_error(out, conn, client_id, self.node_id, &error);
                out.push(Output::Close { conn });
            }
            Input::Eof { conn } => self.order.eof(conn, out),
            // No listener of this node is raw yet.
            Input::Data { conn, .. } => out.push(Output::Close { conn }),
            Input::Closed { conn } => {
                self.members.remove(&conn);
                self.order.closed(conn);
                self.held.remove(&conn);
                if let Some(lost) = self.mesh.closed(conn, now) {
                    self.fail_forwards(lost, ErrorCode::Unavailable, out);
                    self.apply_holds(None, out);
                }
                if self.manager.conn() == Some(conn) {
                    log::warn!("lost the manager link; reconnecting");
                    self.manager_down(now, out);
                }
            }
            Input::Signal(Signal::Terminate) if !self.leaving => match self.manager.conn() {
                Some(conn) if self.ring.node(self.node_id).is_some() => {
                    log::info!("SIGTERM: handing data over before leaving");
                    self.leaving = true;
                    out.push(Output::Send {
                        conn,
                        frame: Frame::new(op::LEAVE, 0, self.node_id, Bytes::new()),
                    });
                    out.push(Output::Timer {
                        at: now + LEAVE_DEADLINE_MS,
                        id: TIMER_LEAVE,
                    });
                }
                _ => {
                    log::warn!("SIGTERM without a manager: exiting without a handoff");
                    out.push(Output::Stop);
                }
            },
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
