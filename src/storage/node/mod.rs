//! The storage node as a state machine.
//!
//! [`StorageNode::step`] takes one reactor [`Input`] and pushes [`Output`]s; it never
//! touches a socket or a clock, so tests and simulations can drive it directly.
//! `step` only dispatches: each input goes to the part of the node it concerns,
//! and each part owns its fields and lives in its own file:
//!
//! - `membership` (`Membership`): the link to the manager. Connects with
//!   doubling backoff, registers after the member handshake (`handshake`) with
//!   `NODE_JOIN` (`PROOF SP HOST:PORT SP TOKENS SP SENT`), receives its node id and the ring in `JOINED` and every later ring
//!   in `RING_UPDATE`, installs each ring, sends a `HEARTBEAT` with its key count
//!   every [`NodeConfig::heartbeat_ms`], and leaves on SIGTERM (asks the manager,
//!   hands its keys over, exits once out of the ring; without a handoff, with a
//!   warning saying where its data stays, when none can happen). A registration
//!   that fails for a reason that may pass is retried with backoff; a refused
//!   cluster secret stops the node ([`StorageNode::failure`]). Until it has an id
//!   and a ring it serves no key: every key-value request, on every port, is
//!   answered `ERR UNAVAILABLE not yet a member of a cluster: ...` (PING and
//!   STATUS are still answered), so it never acknowledges a write the cluster
//!   cannot place with its N and W.
//! - `lease`: the lease each `HEARTBEAT` (and `NODE_JOIN`) earns from the
//!   manager; with none running the node serves no data and refuses a lead's
//!   round messages, so a node the manager dropped while it was cut off stops
//!   deciding keys before the others serve them by a newer ring.
//! - `routing` (`Connections`): where each request is served. A key-value
//!   request is served here when this node is the key's owner (N = 1) or its
//!   lead replica (N > 1); otherwise it is forwarded over the mesh (see
//!   `mesh.rs`) and the reply relayed, or answered `STALE` for a client
//!   routing by an older ring. Replies leave each client connection in request
//!   order (see `routing/order.rs`), and connections with too many replies held
//!   back stop being read. Ops 50-99 are refused with `ERR BADOP` on connections
//!   that have not proven membership (the member handshake: `MEMBER_HELLO`,
//!   then a `NODE_JOIN` whose HMAC proves the cluster secret; see `handshake`).
//! - `local`: serving from this node's own data: key-value ops on keys it serves
//!   alone, and the cluster messages peers send it (`REPLICATE`, `REPL_READ`,
//!   `MIGRATE`, ...), which never pass through routing. The only writes to the
//!   engine are here (store, purge), each logged with a data directory (see
//!   [`super::durable`]).
//! - `replication` (`Rounds`): with N > 1, the quorum rounds of the requests
//!   this node leads (see `replication/round.rs`), read repair and conditional ops.
//! - `repair` (`Repair`): hints and resync to peers that missed writes, and this
//!   node's catch-up when it may lack writes itself (see `repair/resync.rs`);
//!   anti-entropy (`AntiEntropy`): digests of the data per range, compared with
//!   the other replicas in the background (see `repair/anti_entropy.rs`).
//! - `moves`: the handoff of keys a ring change moves (see `moves/handoff.rs`),
//!   and with N = 1 the write fence and the copy of each write to a moving key's
//!   next owner.
//! - `tombstones` (`Collector`): tombstones are collected once every replica
//!   holds them.
//! - `resp` and `http`: the fronts' hooks (see [`super::resp`],
//!   [`super::http`]): their listeners' inputs, the native requests their
//!   clients' requests become, the facts they answer from (DBSIZE, `/metrics`).
//! - `gateway`: the replies, holds and closes the reply order gives a front's
//!   connection reach the front as typed events (see [`super::gateway`]), handed
//!   over after each RESP command and at the end of the step; the node never
//!   writes a native frame on a front's connection.
//! - `client_auth` (`ClientAuth`): the optional client password; a client
//!   connection that has not proven it may only PING and AUTH.
//! - `scan`: SCAN, the cluster's keys by (ring hash, key) a page at a time
//!   from a cursor that is a point of the hash space, served by a replica
//!   holding the cursor's range.
//! - `batch`: MGET and MSET, each key served as its own request, the results
//!   collected into one reply.
//!
//! - `mesh` (`Mesh`): one link to every other node, and the messages in flight
//!   on them.
//!
//! Every message to the manager and to peers is a typed
//! [`crate::protocol::cluster::Message`], and a replica's answers a `Reply` (a
//! refusal a `Refusal`); no payload is parsed here. Every message this node
//! sends over the mesh carries a `Waiter`, the token that says who waits for its
//! answer. A request's key is hashed once, when it arrives, and the hash travels
//! with it.
//!
//! Caveats: with N = 1 a forwarded request to a down owner fails with `ERR
//! UNAVAILABLE`; the rest are in docs/architecture.md, "Known caveats".

#[cfg(test)]
mod ae_tests;
mod ballots;
mod batch;
mod client_auth;
mod gateway;
mod handshake;
mod http;
mod lease;
#[cfg(test)]
mod lease_tests;
mod local;
mod membership;
pub(super) mod mesh;
mod moves;
#[cfg(test)]
mod outcome_tests;
mod repair;
mod replication;
mod resp;
mod routing;
pub(crate) mod scan;
#[cfg(test)]
mod spare_tests;
#[cfg(test)]
mod tests;
mod tombstones;

use membership::Membership;
use repair::anti_entropy::AntiEntropy;
use repair::Repair;
use replication::Rounds;
use replication::{answer_of, outcome_unknown};
use routing::Connections;
use tombstones::Collector;

use super::durable::Journal;
use super::engine::{Applied, Engine, Entry};
use super::hlc::Hlc;
use super::ops::decide;
use super::resp::RespFront;
use crate::protocol::cluster::{put_record, Message, Record, Refusal, Reply};
use crate::protocol::{kv, op, Error, ErrorCode, Frame};
use crate::reactor::link::{Link, LinkState};
use crate::reactor::{reply_error, ConnId, Input, Millis, Output, Service, Signal};
use crate::ring::{hash64, NodeState, PrefTable, Ring};
use bytes::{Bytes, BytesMut};
use mesh::{Forward, Mesh};
use moves::handoff::Handoff;
use repair::resync::{gained, newly_responsible, CatchUp, Resync};
use replication::round::{Answer, Pending, Phase, Progress, Requester, Round, MAX_ATTEMPTS};
use routing::order::ReplyOrder;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

/// Timer ids: the reactor's first input (start the manager link and the clocks),
const TIMER_INIT: u64 = 0;
/// the next manager connect is due,
const TIMER_MANAGER: u64 = 1;
/// a heartbeat is due ([`NodeConfig::heartbeat_ms`]),
const TIMER_HEARTBEAT: u64 = 2;
/// the housekeeping tick ([`NodeConfig::tick_ms`]),
const TIMER_TICK: u64 = 3;
/// a departure's deadline ([`LEAVE_DEADLINE_MS`], [`EXIT_GRACE_MS`]),
const TIMER_LEAVE: u64 = 4;
/// a leaving node's lost manager ([`LEAVE_ORPHAN_MS`]),
const TIMER_ORPHAN: u64 = 5;
/// and the next anti-entropy comparison is due ([`NodeConfig::anti_entropy_rate`]).
const TIMER_ANTI_ENTROPY: u64 = 6;
/// The heartbeat period of a node ([`NodeConfig::heartbeat_ms`]), in ms: each
/// heartbeat renews the node's lease, so the manager's lease must be longer.
pub const HEARTBEAT_MS: Millis = 500;
/// The connect tag of the manager link (the mesh's are from `mesh::PEER_TAG`).
const TAG_MANAGER: u64 = 1;
/// A request is forwarded at most this many times (rings can disagree briefly).
const MAX_HOPS: u32 = 3;
/// How long a leaving node waits for its handoff before it exits anyway, in ms.
const LEAVE_DEADLINE_MS: Millis = 120_000;
/// How long a leaving node waits for a lost manager link to come back before it
/// exits without handing its data over, in ms (the manager is gone: the whole
/// cluster is being stopped, say, and no handoff can be coordinated).
const LEAVE_ORPHAN_MS: Millis = 3_000;
/// How long a node that has left the ring keeps forwarding before it exits, in ms.
const EXIT_GRACE_MS: Millis = 1_500;
/// Replies held back on one connection (behind an unanswered forward) above which
/// the node stops reading that connection's requests; it reads again below half.
const HOLD_SLOTS: usize = 1024;
/// Bytes of replies held back on one connection above which reading stops.
const HOLD_BYTES: usize = 4 << 20;
/// How often a refusal of a peer's version too far ahead is logged at most, per
/// peer connection, in ms.
const AHEAD_LOG_MS: Millis = 60_000;
/// How often a node catching up asks the peers that have not answered again
/// (their answer, or the ask, may have been lost with a broken link), in ms.
const CATCH_UP_ASK_MS: Millis = 3_000;
/// Tombstone collection checks in flight at most.
const MAX_PURGES: usize = 256;
/// Anti-entropy comparisons started per second by default
/// ([`NodeConfig::anti_entropy_rate`]).
pub const DEFAULT_ANTI_ENTROPY_RATE: u32 = 10;

/// Who waits for the answer to a message this node sent over the mesh: the
/// token each forward carries (see [`Mesh`]).
#[derive(Debug)]
enum Waiter {
    /// A client: relay the peer's reply into its slot.
    Client {
        /// The client connection.
        conn: ConnId,
        /// Its reply slot (see [`ReplyOrder`]).
        seq: u64,
        /// The client's own id, restored on the reply.
        client_id: u64,
        /// The request may change its key: if the forward fails after it was
        /// sent, the client is told the outcome is unknown.
        write: bool,
    },
    /// A client whose write was decided here and sent to the key's next owner:
    /// once the copy is acknowledged, apply `record` here and send `result`.
    Mirror {
        /// The client connection.
        conn: ConnId,
        /// Its reply slot.
        seq: u64,
        /// The reply decided here.
        result: Frame,
        /// The write.
        record: Record,
        /// A copy went to the key's earlier next owner already (a ring
        /// change moved the key to another one meanwhile).
        again: bool,
    },
    /// Replicas' answers to a batch of plain reads (`REPL_READS`, see
    /// `replication/reads.rs`): (request id, round tag) per key, in order.
    Replicas {
        /// The asks, in the order of the keys sent.
        asks: Vec<replication::ReadAsk>,
    },
    /// A replica's answer to a request served over replicas (see `replication/round.rs`).
    Replica {
        /// The request's id at this node.
        id: u64,
        /// Which of its rounds asked.
        round: u32,
        /// The request's key (a replica that never gets a write is hinted it).
        key: Bytes,
    },
    /// A chunk of a handoff.
    Migrate {
        /// The ring epoch the handoff belongs to.
        epoch: u64,
    },
    /// An accepted proposal a handoff sent ahead of its chunks (see `moves`).
    HandedProposal {
        /// The ring epoch the handoff belongs to.
        epoch: u64,
    },
    /// A replica's copy of a tombstone this node wants to collect.
    Purge {
        /// The check's id.
        id: u64,
    },
    /// A message whose answer changes nothing (PURGE, SYNC_REQ).
    Ignore,
    /// A step of an anti-entropy comparison (see `repair/anti_entropy.rs`).
    AntiEntropy {
        /// The comparison's id.
        id: u64,
    },
    /// A chunk of hints or resync (see [`Resync`]).
    Resync {
        /// The keys it carries, owed again if it fails.
        keys: Vec<bytes::Bytes>,
    },
}

/// Settings of a storage node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The address other processes reach this node at (`HOST:PORT`).
    pub advertise: String,
    /// The manager's address.
    pub manager: SocketAddr,
    /// Shared secret that proves cluster membership (no spaces); never sent, only
    /// proven (see `handshake`).
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
    /// The wall clock (ms since the Unix epoch) at reactor time 0: versions start
    /// from it (see [`Hlc`]). 0 in tests and simulations.
    pub clock_base_ms: u64,
    /// A tombstone older than this (by its version's clock) is collected once
    /// every replica of its key holds it, in ms.
    pub tombstone_grace_ms: Millis,
    /// Key of the nonces of this node's member handshakes: random in a process
    /// (the binary fills it from the OS); by default derived from `advertise`, so
    /// tests and the simulator stay deterministic.
    pub nonce_key: [u8; 32],
    /// Anti-entropy comparisons (one token range with one peer) this node
    /// starts per second at most; 0 turns anti-entropy off.
    pub anti_entropy_rate: u32,
    /// Serve no data without a lease from the manager (see `lease.rs`). Always
    /// on in the binary; the simulator turns it off to show what it prevents.
    pub lease_fence: bool,
}

impl NodeConfig {
    /// Defaults for a node advertising `advertise` and registering with `manager`.
    pub fn new(advertise: String, manager: SocketAddr) -> NodeConfig {
        NodeConfig {
            nonce_key: test_nonce_key(&advertise),
            advertise,
            manager,
            secret: crate::DEFAULT_SECRET.to_string(),
            tokens: crate::DEFAULT_TOKENS,
            heartbeat_ms: HEARTBEAT_MS,
            retry_base_ms: 100,
            retry_cap_ms: 2_000,
            request_timeout_ms: 5_000,
            tick_ms: 100,
            clock_base_ms: 0,
            tombstone_grace_ms: 60_000,
            anti_entropy_rate: DEFAULT_ANTI_ENTROPY_RATE,
            lease_fence: true,
        }
    }
}

/// A fixed nonce key made from `advertise` (distinct per node, not secret).
fn test_nonce_key(advertise: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    for (i, b) in advertise.bytes().enumerate() {
        key[i % 32] ^= b;
    }
    key
}

/// A storage node's whole state.
pub struct StorageNode {
    cfg: NodeConfig,
    node_id: u32,
    ring: Ring,
    engine: Engine,
    mesh: Mesh<Waiter>,
    /// `ring` as requests are routed now (joining nodes not yet serving).
    serving: Ring,
    /// `ring` once pending moves are done.
    settled: Ring,
    /// Preference lists of `serving` and `settled` (N nodes), per token range.
    serving_pref: PrefTable,
    settled_pref: PrefTable,
    handoff: Option<Handoff>,
    /// Versions for the writes this node decides.
    hlc: Hlc,
    /// The RESP front, when the node serves RESP on listener 1.
    resp: Option<RespFront>,
    /// The client password and who proved it, when one is set (`client_auth.rs`).
    client_auth: Option<Box<client_auth::ClientAuth>>,
    /// The HTTP front, when the node serves HTTP (see [`super::http`]).
    http: Option<Box<super::http::HttpFront>>,
    /// What this step asks of the data directory, when the node has one (see
    /// [`super::durable`]); the wrapper around the node performs it.
    journal: Option<Journal>,
    /// The manager link and this node's place in the membership: registration,
    /// leaving, and why it stopped for good if it did.
    membership: Membership,
    /// The requests this node serves over replicas as their keys' lead replica.
    rounds: Rounds,
    /// Bringing replicas up to date: hints and resync owed to peers, and this
    /// node's own catch-up.
    repair: Repair,
    /// Tombstone collection in progress.
    tombstones: Collector,
    /// Digests of this node's data and background comparisons with its peers.
    anti_entropy: AntiEntropy,
    /// The connections this node serves: which are proven members, each client's
    /// reply order, and which are held (not read) for their reply backlog.
    conns: Connections,
    /// The member handshakes in progress (see [`handshake`]).
    handshakes: handshake::Handshakes,
}

impl StorageNode {
    /// A fresh node with no data and no id.
    pub fn new(cfg: NodeConfig) -> StorageNode {
        let mesh = Mesh::new(cfg.retry_base_ms, cfg.retry_cap_ms);
        StorageNode {
            membership: Membership::new(&cfg),
            rounds: Rounds::new(),
            repair: Repair::new(),
            tombstones: Collector::new(),
            anti_entropy: AntiEntropy::new(),
            conns: Connections::new(),
            handshakes: handshake::Handshakes::new(cfg.nonce_key),
            mesh,
            serving: Ring::empty(),
            settled: Ring::empty(),
            serving_pref: PrefTable::default(),
            settled_pref: PrefTable::default(),
            handoff: None,
            resp: None,
            client_auth: None,
            http: None,
            journal: None,
            cfg,
            node_id: 0,
            ring: Ring::empty(),
            engine: Engine::default(),
            hlc: Hlc::default(),
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

    /// The last ring this node installed, for inspection.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Gives the node a data directory: from now on it records in `journal`
    /// every change to its data, and its ring installs (see
    /// [`super::durable::DurableNode`], which performs them).
    pub fn set_journal(&mut self, journal: Journal) {
        self.journal = Some(journal);
        self.rounds.acceptor.log_changes();
    }

    /// The journal of a node with a data directory.
    pub fn journal_mut(&mut self) -> Option<&mut Journal> {
        self.journal.as_mut()
    }

    /// The engine, to replay a data directory into before the node runs.
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// Moves the node's clock past `version` (the newest one recovered).
    pub fn observe_version(&mut self, version: u64) {
        self.hlc.observe(version);
    }

    /// Whether `conn` is one of this node's own outbound links (to peers and to
    /// the manager): what a node sends there never acknowledges one of its own
    /// writes, so it need not wait for a commit (see [`super::durable`]).
    pub fn is_outbound_link(&self, conn: ConnId) -> bool {
        self.mesh.is_link(conn) || self.membership.manager.conn() == Some(conn)
    }

    /// Test support: makes this node the only member (id 1) of a one-node ring
    /// with N = 1, as if the manager had answered (with a lease that never
    /// runs out), so that it serves keys.
    #[cfg(test)]
    pub(crate) fn join_alone(&mut self) {
        let text = format!(
            "epoch 1\nreplicas 1 1 1\nnode 1 {} up 1\n",
            self.cfg.advertise
        );
        let ring = Ring::decode(text.as_bytes()).expect("a valid ring");
        self.node_id = 1;
        self.hlc.set_writer(1);
        self.install_ring(ring, 0, &mut Vec::new());
        self.membership.lease_until = Millis::MAX;
    }

    /// Why the node stopped on its own, if it did: the manager refused its
    /// cluster secret (a failed data directory is the wrapper's to say, see
    /// [`super::durable::DurableNode::failure`]). The process then exits with
    /// an error saying so.
    pub fn failure(&self) -> Option<String> {
        self.membership.fatal.clone()
    }

    /// Whether node `id` is worth sending to: not down in the ring, and (for a
    /// peer) its link is not waiting to reconnect after a failure.
    fn reachable(&self, id: u32) -> bool {
        let up = self
            .ring
            .node(id)
            .is_some_and(|n| n.state != NodeState::Down);
        up && (id == self.node_id || !self.mesh.is_unreachable(id))
    }
}

impl Service for StorageNode {
    fn step(&mut self, now: Millis, input: Input, out: &mut Vec<Output>) {
        let mark = out.len();
        // Ballots made before this process started are refused (see `paxos`).
        (self.rounds.acceptor).begin(self.cfg.clock_base_ms + now);
        if let Some((id, ring)) = self.journal.as_mut().and_then(Journal::take_identity) {
            // Restarted with a data directory: route by the last ring at once.
            self.node_id = id;
            self.hlc.set_writer(id);
            self.install_ring(ring, now, out);
        }
        let input = self.http_input(now, input, out);
        if let Some(input) = input.and_then(|i| self.resp_input(now, i, out)) {
            self.step_native(now, input, out);
        }
        // Requests whose key just became free.
        while let Some(id) = self.rounds.ready_turns.pop() {
            self.restart(now, id, out);
        }
        self.count_replies(now, mark, out);
        // The fronts' replies (see `gateway.rs`).
        self.end_fronts(now, out);
        self.log_ballots();
        debug_assert!(self.no_frames_to_fronts(&out[mark..]), "{out:?}");
    }

    fn turn_end(&mut self, now: Millis, out: &mut Vec<Output>) {
        let mark = out.len();
        // The turn's plain reads ask their replicas (see `replication/reads.rs`).
        self.send_reads(now, out);
        while let Some(id) = self.rounds.ready_turns.pop() {
            self.restart(now, id, out);
        }
        self.count_replies(now, mark, out);
        self.end_fronts(now, out);
        self.log_ballots();
        debug_assert!(self.no_frames_to_fronts(&out[mark..]), "{out:?}");
    }
}

impl StorageNode {
    /// Everything but the fronts' own inputs: dispatches each input to the
    /// part of the node it concerns.
    fn step_native(&mut self, now: Millis, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::Timer { id } => self.on_timer(now, id, out),
            Input::Connected { conn, tag } if tag == TAG_MANAGER => self.manager_up(conn, out),
            Input::Connected { conn, tag } if mesh::owns_tag(tag) => {
                let hello = self.member_hello(conn);
                self.mesh.connected(tag, conn, hello, out);
            }
            Input::Connected { conn, .. } => out.push(Output::Close { conn }),
            Input::ConnectFailed { tag } if tag == TAG_MANAGER => {
                self.manager_unreachable(now, out);
            }
            Input::ConnectFailed { tag } if mesh::owns_tag(tag) => {
                self.mesh.connect_failed(tag, now);
            }
            Input::ConnectFailed { .. } | Input::Accepted { .. } => {}
            Input::Frame { conn, frame } => self.on_frame(now, conn, frame, out),
            Input::FrameError {
                conn,
                error,
                client_id,
            } => {
                reply_error(out, conn, client_id, self.node_id, &error);
                out.push(Output::Close { conn });
            }
            Input::Eof { conn } => self.conns.order.eof(conn, out),
            // No listener of this node is raw yet.
            Input::Data { conn, .. } => out.push(Output::Close { conn }),
            Input::Closed { conn } => self.on_closed(now, conn, out),
            Input::Signal(sig) => self.on_signal(now, sig, out),
            // Only the HTTP front asks to hear of drained output.
            Input::Drained { .. } => {}
        }
    }

    fn on_timer(&mut self, now: Millis, id: u64, out: &mut Vec<Output>) {
        match id {
            TIMER_INIT => {
                let wall = self.cfg.clock_base_ms + now;
                (self.anti_entropy).started(wall, self.cfg.tombstone_grace_ms);
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
            TIMER_TICK => self.on_tick(now, out),
            TIMER_MANAGER if self.membership.manager.due(now) => self.connect_manager(out),
            TIMER_HEARTBEAT => self.heartbeat(now, out),
            TIMER_LEAVE => self.leave_deadline(out),
            TIMER_ORPHAN => self.orphan_deadline(now, out),
            TIMER_ANTI_ENTROPY => self.pump_anti_entropy(now, out),
            replication::TIMER_SPARES => self.spares_due(now, out),
            _ => {}
        }
    }

    /// Housekeeping every [`NodeConfig::tick_ms`]: forwards past their deadline,
    /// handoff, hints and resync, retries, catch-up asks, tombstones, holds.
    fn on_tick(&mut self, now: Millis, out: &mut Vec<Output>) {
        self.lease_tick(now);
        let late = self.mesh.tick(now, out);
        self.fail_forwards(now, late, ErrorCode::Timeout, out);
        if self.handoff.as_ref().is_some_and(|h| h.failed) {
            self.start_handoff(now, out);
        } else {
            self.pump_handoff(now, out);
        }
        self.pump_resync(now, out);
        (self.rounds.acceptor).sweep(self.cfg.clock_base_ms + now);
        for id in std::mem::take(&mut self.rounds.retry_soon) {
            self.restart(now, id, out);
        }
        let catch_up = self.repair.catch_up.as_ref();
        if catch_up.is_some_and(|c| now >= c.asked_at + CATCH_UP_ASK_MS) {
            self.ask_catch_up(now, out);
        }
        if !self.repair.unheard.is_empty() {
            self.ask_unheard(now, out);
        }
        self.sweep_tombstones(now, out);
        self.pump_anti_entropy(now, out);
        self.apply_holds(None, out);
        out.push(Output::Timer {
            at: now + self.cfg.tick_ms,
            id: TIMER_TICK,
        });
    }

    /// A frame: from the manager, a peer's reply on one of this node's links,
    /// or a request (from a client or a peer).
    fn on_frame(&mut self, now: Millis, conn: ConnId, frame: Frame, out: &mut Vec<Output>) {
        if self.membership.manager.conn() == Some(conn) {
            self.on_manager_frame(now, frame, out);
        } else if self.mesh.is_link(conn) && frame.op == op::MEMBER_CHALLENGE {
            match self.answer_challenge(conn, &frame, None, None) {
                Ok(join) => self.mesh.proven(conn, join, out),
                Err(why) => {
                    log::error!("closing a peer link: the peer sent {why}");
                    out.push(Output::Close { conn });
                }
            }
        } else if self.mesh.is_link(conn) {
            self.on_peer_reply(now, frame, out);
            self.apply_holds(None, out);
        } else if self.client_request(now, conn, &frame, out) {
            let batch = matches!(frame.op, op::MGET | op::MSET);
            if batch && !self.conns.members.contains(&conn) {
                self.on_batch(now, conn, frame, out);
            } else {
                self.on_request(now, conn, frame, out);
            }
            for conn in self.conns.trusted.drain(..) {
                out.push(Output::Trust { conn });
            }
            self.apply_holds(Some(conn), out);
        }
    }

    /// A request from a client or a peer arrived: notes a client's for
    /// `/metrics`, then checks the client password (see `client_auth`); false
    /// if it was answered there.
    fn client_request(
        &mut self,
        now: Millis,
        conn: ConnId,
        frame: &Frame,
        out: &mut Vec<Output>,
    ) -> bool {
        use crate::storage::http::metrics::Front;
        // Members' replies are matched by tag, not order: not counted.
        if !op::is_internal(frame.op) && !self.conns.members.contains(&conn) {
            self.count_request(now, conn, Front::Native, frame.op);
        }
        self.client_gate(conn, frame, out)
    }

    fn on_closed(&mut self, now: Millis, conn: ConnId, out: &mut Vec<Output>) {
        self.forget_handshake(conn);
        self.forget_client_auth(conn);
        self.conns.members.remove(&conn);
        self.conns.order.closed(conn);
        self.conns.held.remove(&conn);
        self.conns.ahead_logged.remove(&conn);
        if let Some(lost) = self.mesh.closed(conn, now) {
            self.fail_forwards(now, lost, ErrorCode::Unavailable, out);
            self.apply_holds(None, out);
        }
        if self.membership.manager.conn() == Some(conn) {
            self.manager_closed(now, out);
        }
    }
}
