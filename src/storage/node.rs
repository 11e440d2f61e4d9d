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
//!   its key count every [`NodeConfig::heartbeat_ms`]. A registration answered
//!   with `ERR UNAVAILABLE` (a restarted manager still recovering the membership)
//!   is tried again on a new link after a doubling delay. It serves requests all
//!   the while, before it has an id too (its replies then carry node id 0, and
//!   with no ring it serves every key itself);
//! - keeps a link to every other node of the ring (the mesh);
//! - refuses ops 50-99 with `ERR BADOP` on connections that have not proven they
//!   are cluster members (by a `NODE_JOIN` carrying the cluster secret);
//! - with a data directory, logs every write it stores before any reply that
//!   depends on it leaves, and recovers from it on start (see [`super::durable`]).
//!
//! - moves keys when the ring changes (see [`super::handoff`]), with a write fence
//!   for N = 1;
//! - with N > 1, coordinates every request of the keys it is the first reachable
//!   replica of, in quorum rounds (see [`super::quorum`]), and brings replicas
//!   that missed writes up to date (hints and resync, see [`super::resync`]);
//! - collects tombstones once every replica holds them (see the sweep below);
//! - leaves on SIGTERM: asks the manager (`LEAVE`), hands its keys over and exits
//!   once out of the ring. It exits without a handoff, with a warning saying where
//!   its data stays, when no handoff can happen: the manager refuses the leave,
//!   its link is down at the signal, or it stays down for 3 s while leaving. A
//!   second SIGTERM, or SIGINT, stops it at once.
//!
//! Caveats: with N = 1 a forwarded request to a down owner fails with `ERR
//! UNAVAILABLE`; the rest are in docs/architecture.md, "Known caveats".

use super::durable::{Durable, Recovered};
use super::engine::{decide, Applied, Engine, Entry, Hlc};
use super::handoff::{parse_chunk, put_entry, Handoff};
use super::mesh::{Forward, Mesh, ReplyTo};
use super::order::ReplyOrder;
use super::quorum::{Pending, Progress, Requester, Round, MAX_ATTEMPTS};
use super::resp::{self, Item, NodeFacts, RespFront};
use super::resync::{gained, newly_responsible, CatchUp, Resync};
use crate::protocol::{kv, op, Error, ErrorCode, Frame};
use crate::reactor::link::{Link, LinkState};
use crate::reactor::{reply_error, ConnId, Input, Millis, Output, Service, Signal};
use crate::ring::{hash64, NodeState, PrefTable, Ring};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

const TIMER_INIT: u64 = 0;
const TIMER_MANAGER: u64 = 1;
const TIMER_HEARTBEAT: u64 = 2;
const TIMER_TICK: u64 = 3;
const TIMER_LEAVE: u64 = 4;
const TIMER_ORPHAN: u64 = 5;
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
/// How often a node catching up asks the peers that have not answered again
/// (their answer, or the ask, may have been lost with a broken link), in ms.
const CATCH_UP_ASK_MS: Millis = 3_000;
/// What a replica says when, by its ring, it is not on a key's lists.
const OFF_LIST: &str = "is not a replica of this key";
/// How a replica that is catching up begins its refusal of a quorum read.
const CATCHING_UP: &str = "catching up";
/// Tombstone collection checks in flight at most.
const MAX_PURGES: usize = 256;

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
    /// The wall clock (ms since the Unix epoch) at reactor time 0: versions start
    /// from it (see [`Hlc`]). 0 in tests and simulations.
    pub clock_base_ms: u64,
    /// A tombstone older than this (by its version's clock) is collected once
    /// every replica of its key holds it, in ms.
    pub tombstone_grace_ms: Millis,
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
            clock_base_ms: 0,
            tombstone_grace_ms: 60_000,
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
    /// Preference lists of `serving` and `settled` (N nodes), per token range.
    serving_pref: PrefTable,
    settled_pref: PrefTable,
    handoff: Option<Handoff>,
    /// This node asked to leave (SIGTERM).
    leaving: bool,
    /// A `LEAVE` went to the manager on this link and is not answered yet.
    awaiting_left: bool,
    /// Leaving, and the manager link has been down since then: exit at
    /// [`LEAVE_ORPHAN_MS`] after it unless the link comes back.
    orphaned_at: Option<Millis>,
    /// Out of the ring and about to exit: never register with the manager again.
    exiting: bool,
    /// Client connections not being read because of their reply backlog.
    held: HashSet<ConnId>,
    /// Connections that just proved membership (drained into `Output::Trust`).
    trusted: Vec<ConnId>,
    /// Versions for the writes this node decides.
    hlc: Hlc,
    /// Requests this node coordinates over replicas, by id.
    pending: HashMap<u64, Pending>,
    next_pending: u64,
    /// Keys with a write in progress here, and the requests waiting their turn:
    /// one write at a time per key, in arrival order, so pipelined requests take
    /// effect in order and read-modify-writes do not refuse each other's bases.
    busy: HashMap<Bytes, std::collections::VecDeque<u64>>,
    /// Waiting requests whose turn came (started at the end of the step).
    ready_turns: Vec<u64>,
    /// The RESP front, when the node serves RESP on listener 1.
    resp: Option<RespFront>,
    /// Writes other replicas missed, and keys nodes are newly responsible for.
    resync: Resync,
    /// Tombstones being checked on every replica before they are collected.
    purges: HashMap<u64, PurgeCheck>,
    next_purge: u64,
    /// When the next tombstone sweep is due.
    next_sweep: Millis,
    /// Tombstones collected since the last sweep logged it.
    collected: usize,
    /// This process has installed a ring (the first one starts a catch-up if
    /// it lists this node serving: a restarted node cannot know what it missed).
    seen_ring: bool,
    /// A ring showed this node down: it catches up once it is back.
    was_down: bool,
    /// Peers a catch-up went without because they were down: they may hold
    /// writes nobody else has, so they are asked once they are back.
    unheard: std::collections::BTreeSet<u32>,
    /// This node's catch-up, while it waits for its peers' pushes.
    catch_up: Option<CatchUp>,
    /// Requests to start again at the next tick (a replica's newer ring said
    /// the key moved: this node's ring should catch up first).
    retry_soon: Vec<u64>,
    /// The data directory, when the node has one (see [`super::durable`]).
    durable: Option<Durable>,
    /// `NODE_JOIN` went to the manager on this link and is not answered yet.
    awaiting_joined: bool,
    /// Registrations the manager turned away in a row (`ERR UNAVAILABLE` while it
    /// recovers the membership): the next attempt waits longer each time.
    join_refusals: u32,
}

/// A tombstone this node coordinates, being confirmed on every replica.
struct PurgeCheck {
    key: Bytes,
    version: u64,
    /// Every other node of the key's preference lists.
    members: Vec<u32>,
    /// Those that have not confirmed yet.
    waiting: Vec<u32>,
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
            serving_pref: PrefTable::default(),
            settled_pref: PrefTable::default(),
            handoff: None,
            leaving: false,
            awaiting_left: false,
            orphaned_at: None,
            exiting: false,
            held: HashSet::new(),
            trusted: Vec::new(),
            resp: None,
            resync: Resync::default(),
            purges: HashMap::new(),
            next_purge: 1,
            next_sweep: 0,
            collected: 0,
            seen_ring: false,
            was_down: false,
            unheard: Default::default(),
            catch_up: None,
            retry_soon: Vec::new(),
            durable: None,
            awaiting_joined: false,
            join_refusals: 0,
            cfg,
            node_id: 0,
            ring: Ring::empty(),
            engine: Engine::default(),
            hlc: Hlc::default(),
            pending: HashMap::new(),
            next_pending: 1,
            busy: HashMap::new(),
            ready_turns: Vec::new(),
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

    /// The last ring this node installed, for inspection.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Opens the data directory `dir` (before the node runs) and replays it into
    /// the engine; from then on every write is logged there before it is
    /// acknowledged (see [`super::durable`]).
    pub fn open_data_dir(
        &mut self,
        dir: &std::path::Path,
        fsync: super::wal::Fsync,
    ) -> std::io::Result<Recovered> {
        let (mut d, rec) = Durable::open(dir, fsync)?;
        let (found, newest) = d.replay(rec, &mut self.engine);
        self.hlc.observe(newest);
        self.durable = Some(d);
        Ok(found)
    }

    /// Why the data directory stopped working, if it did (the node then stops).
    pub fn durability_failed(&self) -> Option<&str> {
        self.durable.as_ref().and_then(Durable::failed)
    }

    /// The data directory, if the node has one (inspection, tests).
    pub fn durable_mut(&mut self) -> Option<&mut Durable> {
        self.durable.as_mut()
    }

    fn connect_manager(&mut self, out: &mut Vec<Output>) {
        self.manager.connecting();
        out.push(Output::Connect {
            addr: self.cfg.manager,
            tag: TAG_MANAGER,
        });
    }

    fn manager_down(&mut self, now: Millis, out: &mut Vec<Output>) {
        if self.exiting {
            return;
        }
        self.manager_lost(now, out);
        let at = self.manager.failed(now);
        out.push(Output::Timer {
            at,
            id: TIMER_MANAGER,
        });
    }

    /// The manager link is gone: a `LEAVE` on it will not be answered, and a
    /// leaving node starts counting towards [`LEAVE_ORPHAN_MS`].
    fn manager_lost(&mut self, now: Millis, out: &mut Vec<Output>) {
        self.awaiting_left = false;
        if self.leaving && !self.exiting && self.orphaned_at.is_none() {
            log::warn!(
                "lost the manager while leaving; exiting in {LEAVE_ORPHAN_MS} ms \
                 unless it comes back"
            );
            self.orphaned_at = Some(now);
            out.push(Output::Timer {
                at: now + LEAVE_ORPHAN_MS,
                id: TIMER_ORPHAN,
            });
        }
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
                // `NODEID`, or `NODEID catch-up` when the manager had this
                // node down: it may have missed writes.
                let first = std::str::from_utf8(&text[..nl]).unwrap_or("");
                let (id, behind) = match first.split_once(' ') {
                    Some((id, "catch-up")) => (id, true),
                    _ => (first, false),
                };
                match (id.parse::<u32>().ok(), Ring::decode(&text[nl + 1..])) {
                    (Some(id), Ok(ring)) => {
                        self.awaiting_joined = false;
                        self.join_refusals = 0;
                        if self.node_id != id {
                            log::info!("registered with the manager as node {id}");
                        }
                        self.node_id = id;
                        self.was_down |= behind;
                        self.hlc.set_writer(id);
                        self.install_ring(ring, now, out);
                        if self.leaving && !self.exiting {
                            // Registered again while leaving (the manager link
                            // broke): ask again, the LEAVE may have been lost.
                            self.send_leave(out);
                        }
                    }
                    (_, Err(e)) => log::warn!("bad ring from the manager: {e}"),
                    (None, _) => log::warn!("bad node id from the manager"),
                }
            }
            op::ERR if self.awaiting_joined => {
                self.awaiting_joined = false;
                let e = Error::from_payload(&frame.payload);
                if e.code != ErrorCode::Unavailable {
                    log::error!("the manager refused us: {e}");
                    return;
                }
                // Not now (a restarted manager recovering the membership): drop
                // the link and register again later, backing off.
                self.join_refusals += 1;
                let delay = (self.cfg.retry_base_ms << self.join_refusals.min(16))
                    .min(self.cfg.retry_cap_ms);
                if self.join_refusals == 1 {
                    log::info!("the manager cannot register us yet ({e}); retrying");
                } else {
                    log::debug!("the manager cannot register us yet ({e}); retry in {delay} ms");
                }
                if let Some(conn) = self.manager.conn() {
                    out.push(Output::Close { conn });
                }
                self.manager_lost(now, out);
                self.manager.state = LinkState::Backoff(now + delay);
                out.push(Output::Timer {
                    at: now + delay,
                    id: TIMER_MANAGER,
                });
            }
            op::ERR if self.awaiting_left => {
                self.awaiting_left = false;
                log::warn!(
                    "the manager refused our leave ({}); exiting without handing the \
                     data over: {}",
                    Error::from_payload(&frame.payload),
                    self.data_left_behind()
                );
                out.push(Output::Stop);
            }
            op::OK if self.awaiting_left => self.awaiting_left = false,
            op::ERR => log::error!(
                "the manager refused us: {}",
                Error::from_payload(&frame.payload)
            ),
            other => log::debug!("ignoring op {other} from the manager"),
        }
    }

    /// Asks the manager to start this node's departure (its answer: `OK`, or an
    /// `ERR` that makes the node exit without a handoff).
    fn send_leave(&mut self, out: &mut Vec<Output>) {
        if let Some(conn) = self.manager.conn() {
            self.awaiting_left = true;
            out.push(Output::Send {
                conn,
                frame: Frame::new(op::LEAVE, 0, self.node_id, Bytes::new()),
            });
        }
    }

    /// Where this node's data stays when it exits without a handoff (for the log).
    fn data_left_behind(&self) -> &'static str {
        match (self.durable.is_some(), self.ring.replicas > 1) {
            (true, true) => "its keys stay on disk and on the other replicas",
            (true, false) => "its keys stay on disk until it is started again",
            (false, true) => "the other replicas still hold its keys",
            (false, false) => "its keys are lost (no replicas, no --data-dir)",
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
            self.exiting = true;
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
        let n = ring.replicas.max(1) as usize;
        let (serving_pref, settled_pref) = (serving.pref_table(n), settled.pref_table(n));
        let catch_up = self.needs_catch_up(&ring, &serving, &serving_pref);
        if me != 0 && ring.node(me).is_some() {
            let held = |h| serving_pref.get(h).contains(&me) || settled_pref.get(h).contains(&me);
            let dropped = self.engine.remove_where(|h| !held(h));
            if dropped > 0 {
                log::info!("dropped {dropped} keys now held by other nodes");
                if let Some(d) = self.durable.as_mut() {
                    d.want_snapshot();
                }
            }
            self.owe_newcomers(&ring, &serving, &serving_pref);
        }
        let failed = self.mesh.set_members(me, &ring, out);
        let gone: Vec<u32> = self
            .ring
            .nodes()
            .iter()
            .map(|n| n.id)
            .filter(|&id| ring.node(id).is_none())
            .collect();
        if let Some(d) = self.durable.as_mut() {
            d.save_identity(me, &ring);
        }
        self.ring = ring;
        self.serving = serving;
        self.settled = settled;
        self.serving_pref = serving_pref;
        self.settled_pref = settled_pref;
        self.fail_forwards(now, failed, ErrorCode::Unavailable, out);
        for id in gone {
            self.resync.forget(id);
        }
        self.start_handoff(now, out);
        match catch_up {
            Some(known) => self.start_catch_up(now, known, out),
            None => self.catch_up_progress(now, None),
        }
        self.ask_unheard(now, out);
        self.pump_resync(now, out);
    }

    /// Asks the peers a catch-up went without (see `unheard`) for their keys
    /// once the ring has them live again. Nothing waits for their answer.
    fn ask_unheard(&mut self, now: Millis, out: &mut Vec<Output>) {
        let ring = &self.ring;
        let back: Vec<u32> = (self.unheard.iter().copied())
            .filter(|&p| ring.node(p).is_some_and(|e| e.state != NodeState::Down))
            .collect();
        self.unheard
            .retain(|&p| ring.node(p).is_some() && !back.contains(&p));
        let waiting = self.catch_up.as_ref().map(|c| &c.waiting);
        let round = self.cfg.clock_base_ms + now;
        let payload = format!("{} {round} {}", self.node_id, self.ring.epoch);
        let deadline = now + self.cfg.request_timeout_ms;
        for peer in back {
            if waiting.is_some_and(|w| w.contains(&peer)) {
                continue;
            }
            log::info!("node {peer} is back; asking it for the keys it holds");
            let frame = Frame::new(op::SYNC_REQ, 0, 0, payload.clone());
            let _ = (self.mesh).forward(peer, frame, ReplyTo::Ignore, 1, deadline, out);
        }
    }

    /// Whether installing `ring` (before it replaces the current one) leaves
    /// this node lacking writes: `Some(None)` for any key (a restart: the first
    /// ring of this process lists it serving; or it was down and is back),
    /// `Some(Some(lists))` for the keys outside the preference lists it had
    /// (it was given a dropped node's ranges), `None` if it lacks nothing.
    #[allow(clippy::option_option)]
    fn needs_catch_up(
        &mut self,
        ring: &Ring,
        serving: &Ring,
        serving_pref: &PrefTable,
    ) -> Option<Option<[PrefTable; 2]>> {
        let me = self.node_id;
        let first = !std::mem::replace(&mut self.seen_ring, true);
        if me == 0 || ring.replicas < 2 {
            return None;
        }
        let state = ring.node(me).map(|n| n.state);
        if state == Some(NodeState::Down) {
            self.was_down = true;
            return None;
        }
        // Not serving yet (a new node): the handoff fills it.
        serving.node(me)?;
        if first || std::mem::take(&mut self.was_down) {
            return Some(None);
        }
        let old = [&self.serving_pref, &self.settled_pref];
        gained(me, old, serving_pref).then(|| Some(old.map(Clone::clone)))
    }

    /// Starts a catch-up round (see [`CatchUp`]): asks every live peer for
    /// everything the two share. `known`: the preference lists this node was on
    /// before, when it only gained ranges; a round already under way keeps the
    /// widest view of what may be missing.
    fn start_catch_up(
        &mut self,
        now: Millis,
        known: Option<[PrefTable; 2]>,
        out: &mut Vec<Output>,
    ) {
        let me = self.node_id;
        if self.catch_up.as_ref().is_some_and(|c| c.known.is_none()) {
            // Already asking for every key: the pushes under way cover this too
            // (writes it misses meanwhile are hinted).
            return;
        }
        let prev = self.catch_up.take();
        let known = match prev.as_ref() {
            Some(p) => p.known.as_ref().and(known.as_ref()).and(p.known.clone()),
            None => known,
        };
        let round = (self.cfg.clock_base_ms + now).max(prev.as_ref().map_or(0, |p| p.round + 1));
        let (live, down): (Vec<_>, Vec<_>) = (self.ring.nodes().iter())
            .filter(|e| e.id != me)
            .partition(|e| e.state != NodeState::Down);
        self.unheard.extend(down.iter().map(|e| e.id));
        let waiting = live.iter().map(|e| e.id).collect();
        log::info!(
            "epoch {}: catching up ({}): asking {:?} for their keys (round {round})",
            self.ring.epoch,
            if known.is_some() {
                "new ranges"
            } else {
                "every key"
            },
            waiting
        );
        self.catch_up = Some(CatchUp {
            round,
            waiting,
            known,
            since: prev.map_or(now, |p| p.since),
            asked_at: now,
        });
        self.ask_catch_up(now, out);
        self.catch_up_progress(now, None);
    }

    /// Sends this round's `SYNC_REQ` to every peer that has not answered.
    fn ask_catch_up(&mut self, now: Millis, out: &mut Vec<Output>) {
        let Some(c) = self.catch_up.as_mut() else {
            return;
        };
        c.asked_at = now;
        let payload = format!("{} {} {}", self.node_id, c.round, self.ring.epoch);
        let deadline = now + self.cfg.request_timeout_ms;
        for &peer in &c.waiting {
            let frame = Frame::new(op::SYNC_REQ, 0, 0, payload.clone());
            let _ = (self.mesh).forward(peer, frame, ReplyTo::Ignore, 1, deadline, out);
        }
    }

    /// Counts `done` (a peer's `SYNC_DONE`: peer, round), forgets peers the
    /// ring has down or gone, and ends the catch-up once nobody is left.
    fn catch_up_progress(&mut self, now: Millis, done: Option<(u32, u64)>) {
        let Some(c) = self.catch_up.as_mut() else {
            return;
        };
        if let Some((peer, _)) = done.filter(|d| d.1 == c.round) {
            c.waiting.remove(&peer);
        }
        let ring = &self.ring;
        let unheard = &mut self.unheard;
        c.waiting.retain(|&p| {
            let live = ring.node(p).is_some_and(|e| e.state != NodeState::Down);
            if !live {
                unheard.insert(p);
            }
            live
        });
        if c.waiting.is_empty() {
            log::info!(
                "caught up: every live peer pushed its keys ({} ms)",
                now.saturating_sub(c.since)
            );
            self.catch_up = None;
        }
    }

    /// Ends a catch-up as if every peer had answered (tests of other things).
    #[cfg(test)]
    pub(crate) fn end_catch_up(&mut self) {
        self.catch_up = None;
    }

    /// Whether this node may lack writes to the key with hash `hash`.
    fn behind(&self, hash: u64) -> bool {
        (self.catch_up.as_ref()).is_some_and(|c| c.behind(self.node_id, hash))
    }

    /// Queues the keys this node must push because `ring` makes nodes newly
    /// responsible for them (back from down, or given a dropped node's tokens);
    /// see [`newly_responsible`].
    fn owe_newcomers(&mut self, ring: &Ring, serving: &Ring, now_serving: &PrefTable) {
        let me = self.node_id;
        let n = ring.replicas.max(1) as usize;
        let old = &self.ring;
        let down = |r: &Ring, id: u32| r.node(id).is_none_or(|e| e.state == NodeState::Down);
        // Only a node that is live now and was down, absent or differently
        // placed before can be newly responsible for anything.
        let changed = serving.nodes().iter().any(|e| {
            e.state != NodeState::Down
                && old
                    .node(e.id)
                    .is_none_or(|o| o.state == NodeState::Down || o.tokens != e.tokens)
        });
        if n < 2 || old.is_empty() || !changed {
            return;
        }
        let (was_serving, was_settled) = (&self.serving_pref, &self.settled_pref);
        let mut owed: std::collections::BTreeMap<u32, Vec<Bytes>> = Default::default();
        for key in self.engine.keys_where(|h| now_serving.get(h).contains(&me)) {
            let h = hash64(&key);
            let old_live: Vec<u32> = was_serving
                .get(h)
                .iter()
                .chain(was_settled.get(h))
                .copied()
                .filter(|&id| !down(old, id))
                .collect();
            for t in newly_responsible(&old_live, now_serving.get(h), |id| down(ring, id), me) {
                owed.entry(t).or_default().push(key.clone());
            }
        }
        for (peer, keys) in owed {
            if self.resync.is_asking(peer) {
                continue;
            }
            log::info!(
                "epoch {}: node {peer} is newly responsible for {} keys here; resyncing it",
                ring.epoch,
                keys.len()
            );
            self.resync.owe(peer, keys);
        }
    }

    /// Sends the hint and resync chunks the windows allow to reachable peers.
    fn pump_resync(&mut self, now: Millis, out: &mut Vec<Output>) {
        let n = self.ring.replicas.max(1) as usize;
        if self.node_id == 0 || n < 2 {
            return;
        }
        let me = self.node_id;
        let ready: HashSet<u32> = (self.ring.nodes().iter())
            .map(|e| e.id)
            .filter(|&p| p != me && self.reachable(p))
            .collect();
        self.resync.start_asks(self.ring.epoch);
        for peer in self.resync.take_full(|p| ready.contains(&p)) {
            let (serving, settled) = (&self.serving_pref, &self.settled_pref);
            let keys = (self.engine)
                .keys_where(|h| serving.get(h).contains(&peer) || settled.get(h).contains(&peer));
            log::info!("resyncing {} keys to node {peer}", keys.len());
            self.resync.owe(peer, keys);
        }
        let chunks = (self.resync).next_chunks(&self.engine, |p| ready.contains(&p));
        for (peer, payload, keys) in chunks {
            let frame = Frame::new(op::MIGRATE, 0, 0, payload);
            let deadline = now + self.cfg.request_timeout_ms;
            let reply_to = ReplyTo::Resync { keys };
            if let Err(fwd) = self.mesh.forward(peer, frame, reply_to, 1, deadline, out) {
                if let ReplyTo::Resync { keys } = fwd.reply_to {
                    self.resync.failed(peer, keys);
                }
            }
        }
        for (peer, round) in self.resync.finished_asks() {
            log::info!("pushed node {peer} every key it asked for (round {round})");
            let frame = Frame::new(op::SYNC_DONE, 0, 0, format!("{me} {round}"));
            let deadline = now + self.cfg.request_timeout_ms;
            let _ = (self.mesh).forward(peer, frame, ReplyTo::Ignore, 1, deadline, out);
        }
    }

    /// Lists what this node must hand over for the current ring and starts sending.
    fn start_handoff(&mut self, now: Millis, out: &mut Vec<Output>) {
        let me = self.node_id;
        self.handoff = None;
        if me == 0 || !self.ring.has_moves() || self.serving.node(me).is_none() {
            return;
        }
        let (serving, settled) = (&self.serving_pref, &self.settled_pref);
        // Every node that holds a key now sends it to each node the move adds to
        // the key's preference list (with N = 1: the new owner).
        let keys: Vec<(u32, Bytes)> = self
            .engine
            .keys_where(|h| serving.get(h).contains(&me))
            .into_iter()
            .flat_map(|k| {
                let h = hash64(&k);
                let now = serving.get(h);
                settled
                    .get(h)
                    .iter()
                    .filter(move |t| !now.contains(t))
                    .map(move |&t| (t, k.clone()))
            })
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
    fn fail_forwards(
        &mut self,
        now: Millis,
        fwds: Vec<Forward>,
        code: ErrorCode,
        out: &mut Vec<Output>,
    ) {
        for f in fwds {
            let err = Error::new(
                code,
                match code {
                    ErrorCode::Timeout => format!("node {} did not answer in time", f.peer),
                    _ => format!("node {} is unreachable", f.peer),
                },
            );
            match f.reply_to {
                ReplyTo::Replica { id, round } => {
                    self.replica_answer(now, id, round, f.peer, None, code, out);
                }
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
                ReplyTo::Resync { keys } => self.resync.failed(f.peer, keys),
                ReplyTo::Purge { id } => {
                    self.purges.remove(&id);
                }
                ReplyTo::Ignore => {}
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
        if member && me == 0 && key.is_some() {
            // A peer routed a key here by a ring that lists this node, but the
            // manager's answer (our id and the ring) has not arrived: serving it
            // alone, unreplicated, would make a second coordinator of the key
            // (seed 2000423: two DELETEs of one value both answered OK).
            let e = Error::new(ErrorCode::Unavailable, "this node is still joining; retry");
            return out.push(Output::Send {
                conn,
                frame: Frame::error(f.client_id, me, &e),
            });
        }
        let replicated = self.ring.replicas > 1;
        let (serving_owner, settled_owner) = match &key {
            Some(k) if me != 0 && replicated => {
                // The coordinator; when every replica is down, the first of them
                // (the forwarding path below then answers UNAVAILABLE).
                let h = hash64(k);
                let first = self.serving.owner_of_hash(h);
                (
                    self.live_coordinator(h).or(first),
                    self.settled_coordinator(h),
                )
            }
            Some(k) if me != 0 => {
                let h = hash64(k);
                (self.serving.owner_of_hash(h), self.settled.owner_of_hash(h))
            }
            _ => (None, None),
        };
        if !member && me != 0 && f.node_id == me && serving_owner.is_some_and(|o| o != me) {
            // A partition-aware client routed this here by an older ring.
            let epoch = self.ring.epoch.to_string();
            let frame = Frame::new(op::STALE, f.client_id, me, epoch);
            self.order.ready(conn, frame, out);
            return;
        }
        // The write fence of a move (N = 1): once this node's handoff for the
        // epoch is acknowledged, the next owner holds everything, so the keys
        // moving away are served there (it takes forwarded requests before the
        // flip), never again here. Two nodes never both accept writes to a key.
        let fenced = !replicated
            && serving_owner == Some(me)
            && settled_owner.is_some_and(|n| n != me)
            && self
                .handoff
                .as_ref()
                .is_some_and(|h| h.epoch == self.ring.epoch && h.done());
        let here = !fenced
            && (serving_owner.is_none_or(|o| o == me) || (member && settled_owner == Some(me)));
        if !here {
            let owner = if fenced {
                settled_owner.expect("fenced means a next owner")
            } else {
                serving_owner.expect("not here means an owner")
            };
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
                self.fail_forwards(now, vec![*fwd], ErrorCode::Unavailable, out);
            }
            return;
        }
        if let (Some(k), true, true) = (&key, replicated, serving_owner.is_some()) {
            let k = k.clone();
            self.coordinate(now, conn, f, k, out);
            return;
        }
        // The version a pending move's copy of this write is decided against.
        let before = match (&key, settled_owner) {
            (Some(k), Some(next)) if next != me => self.engine.version(k),
            _ => 0,
        };
        let reply = match self.execute(now, conn, key.as_ref(), &f) {
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
                // Conditional on what this node held before the write: if the next
                // owner already took a newer write (the flip reached it first), the
                // copy is refused and the client gets an error, not a lost update.
                let mut payload = BytesMut::new();
                payload.extend_from_slice(&before.to_be_bytes());
                if let Some(e) = self.engine.entry(&key) {
                    put_entry(&mut payload, &key, &e);
                }
                let copy = Frame::new(op::REPLICATE, 0, 0, payload.freeze());
                let seq = self.order.reserve(conn);
                let reply_to = ReplyTo::Mirror {
                    conn,
                    seq,
                    result: reply,
                };
                let deadline = now + self.cfg.request_timeout_ms;
                if let Err(fwd) = self.mesh.forward(next, copy, reply_to, 1, deadline, out) {
                    self.fail_forwards(now, vec![*fwd], ErrorCode::Unavailable, out);
                }
            }
            // Peers match replies by tag, not by order: answering a member at once
            // keeps a replica's answer from waiting behind requests this node is
            // still coordinating for that member (which may wait on the answer).
            _ if member => out.push(Output::Send { conn, frame: reply }),
            _ => self.order.ready(conn, reply, out),
        }
    }

    /// A reply from a peer to one of our forwards.
    fn on_peer_reply(&mut self, now: Millis, frame: Frame, out: &mut Vec<Output>) {
        let Some(fwd) = self.mesh.reply(&frame) else {
            return;
        };
        match fwd.reply_to {
            ReplyTo::Replica { id, round } => {
                let code = ErrorCode::Unavailable;
                self.replica_answer(now, id, round, fwd.peer, Some(frame), code, out);
            }
            ReplyTo::Client {
                conn,
                seq,
                client_id,
            } => {
                let reply = Frame::new(frame.op, client_id, self.node_id, frame.payload);
                self.order.fill(conn, seq, reply, out);
            }
            ReplyTo::Mirror { conn, seq, result } => {
                if frame.op != op::OK {
                    let e = Error::new(
                        ErrorCode::Unavailable,
                        "the key is moving and its new owner refused the write; retry",
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
            ReplyTo::Purge { id } => self.purge_answer(now, id, fwd.peer, &frame, out),
            ReplyTo::Ignore => {}
            ReplyTo::Resync { keys } => {
                if frame.op == op::OK {
                    self.resync.acked(fwd.peer);
                } else {
                    self.resync.failed(fwd.peer, keys);
                }
                self.pump_resync(now, out);
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

    /// Applies a write to the engine and, if it was stored, logs it. With
    /// [`StorageNode::purge`] and [`StorageNode::undo`], the only ways the node's
    /// data changes (besides dropping keys a ring change moved away, which a
    /// snapshot follows): each logs what it changed (see [`super::durable`]).
    fn store(
        &mut self,
        key: &[u8],
        version: u64,
        value: Option<&[u8]>,
        base: Option<u64>,
    ) -> Applied {
        let held = self.engine.version(key);
        let applied = self.engine.apply(key, version, value, base);
        if let (Some(d), Applied::Stored, true) = (self.durable.as_mut(), applied, held != version)
        {
            d.log(key, version, value);
        }
        applied
    }

    /// Forgets `key` if its entry is still the tombstone at `version` (tombstone
    /// collection), and logs that it did; counts it for the sweep's log line.
    fn purge(&mut self, key: &[u8], version: u64) {
        if self.engine.remove_tombstone(key, version) {
            self.collected += 1;
            if let Some(d) = self.durable.as_mut() {
                d.log_purge(key, version);
            }
        }
    }

    /// Undoes this node's own write of `key` at `version`, which its replicas
    /// refused: the entry goes back to `prev` (`None`: no entry) if it is still
    /// that write, and that is logged, so a restart does not bring the write back.
    fn undo(&mut self, key: &[u8], version: u64, prev: Option<Entry>) {
        let logged = prev.clone();
        if self.engine.restore(key, version, prev) {
            if let Some(d) = self.durable.as_mut() {
                d.log_restore(key, version, logged.as_ref());
            }
        }
    }

    /// `NODE_JOIN` for the manager: offers the ring this node knows (`LF` and the
    /// RING text after the usual payload), so a restarted manager can recover.
    fn manager_hello(&self) -> Frame {
        let mut hello = self.hello();
        if self.node_id != 0 && self.ring.node(self.node_id).is_some() {
            let mut payload = BytesMut::from(&hello.payload[..]);
            payload.extend_from_slice(b"\n");
            payload.extend_from_slice(self.ring.encode().as_bytes());
            hello.payload = payload.freeze();
        }
        hello
    }

    fn hello(&self) -> Frame {
        let payload = format!(
            "{} {} {}",
            self.cfg.secret, self.cfg.advertise, self.cfg.tokens
        );
        Frame::new(op::NODE_JOIN, 0, self.node_id, payload)
    }

    fn execute(
        &mut self,
        now: Millis,
        conn: ConnId,
        key: Option<&Bytes>,
        f: &Frame,
    ) -> Result<(u8, Bytes), Error> {
        if let Some(key) = key {
            let d = decide(f, self.engine.get(key).as_ref())?;
            if let Some(write) = d.write {
                let wall = self.cfg.clock_base_ms + now;
                let version = self.hlc.next(wall, self.engine.version(key));
                self.store(key, version, write.as_deref(), None);
            }
            return Ok((d.reply, d.payload));
        }
        if self.members.contains(&conn) {
            self.check_replica_of(f)?;
        }
        Ok(match f.op {
            op::PING => (op::PONG, f.payload.clone()),
            op::STATUS => {
                let facts = super::status::Facts {
                    node_id: self.node_id,
                    addr: &self.cfg.advertise,
                    ring: &self.ring,
                    serving: &self.serving_pref,
                    engine: &self.engine,
                    catching_up: self.catch_up.is_some(),
                    ring_received: self.seen_ring,
                    moving: self.handoff.is_some(),
                    leaving: self.leaving,
                    manager_link: self.manager.conn().is_some(),
                };
                (op::STATUS_REPLY, super::status::reply(&facts))
            }
            op::HELLO | op::RING => {
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
            op::REPLICATE if self.members.contains(&conn) => {
                let bad = || Error::new(ErrorCode::BadOp, "malformed REPLICATE");
                let base = f.payload.get(..8).ok_or_else(bad)?;
                let base = u64::from_be_bytes(base.try_into().map_err(|_| bad())?);
                let entries = parse_chunk(&f.payload[8..]).ok_or_else(bad)?;
                let [(k, version, value)] = entries[..] else {
                    return Err(bad());
                };
                self.hlc.observe(version);
                let base = (base != u64::MAX).then_some(base);
                match self.store(k, version, value, base) {
                    Applied::Stored => (op::OK, Bytes::new()),
                    Applied::Newer(v) => (op::CONFLICT, Bytes::from(v.to_string())),
                }
            }
            op::REPL_READ if self.members.contains(&conn) && self.behind(hash64(&f.payload)) => {
                let why = format!("{CATCHING_UP}: this copy may lack writes");
                return Err(Error::new(ErrorCode::Unavailable, why));
            }
            op::REPL_READ if self.members.contains(&conn) => match self.engine.entry(&f.payload) {
                Some(e) => {
                    let mut chunk = BytesMut::new();
                    put_entry(&mut chunk, &f.payload, &e);
                    (op::VALUE, chunk.freeze())
                }
                None => (op::NOT_FOUND, Bytes::new()),
            },
            op::SYNC_REQ if self.members.contains(&conn) => {
                let bad = || Error::new(ErrorCode::BadOp, "SYNC_REQ needs NODEID [ROUND EPOCH]");
                let [peer, round, epoch] = decimals(&f.payload).ok_or_else(bad)?;
                let peer = u32::try_from(peer).map_err(|_| bad())?;
                if self.ring.node(peer).is_some() && peer != self.node_id {
                    log::info!("node {peer} is catching up and asks for its keys (round {round})");
                    self.resync.asked(peer, round, epoch);
                }
                (op::OK, Bytes::new())
            }
            op::SYNC_DONE if self.members.contains(&conn) => {
                let bad = || Error::new(ErrorCode::BadOp, "SYNC_DONE needs NODEID ROUND");
                let [peer, round, _] = decimals(&f.payload).ok_or_else(bad)?;
                let peer = u32::try_from(peer).map_err(|_| bad())?;
                self.catch_up_progress(now, Some((peer, round)));
                (op::OK, Bytes::new())
            }
            op::PURGE if self.members.contains(&conn) && f.payload.len() >= 8 => {
                let version = u64::from_be_bytes(f.payload[..8].try_into().expect("8 bytes"));
                let key = &f.payload[8..];
                self.purge(key, version);
                (op::OK, Bytes::new())
            }
            op::MIGRATE if self.members.contains(&conn) => {
                let entries = parse_chunk(&f.payload)
                    .ok_or_else(|| Error::new(ErrorCode::BadOp, "malformed MIGRATE chunk"))?;
                for (k, version, value) in entries {
                    self.hlc.observe(version);
                    self.store(k, version, value, None);
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

/// Whether `f` is a replica's `ERR UNAVAILABLE` refusal whose text says `why`:
/// [`CATCHING_UP`] (it may lack the key's writes) or [`OFF_LIST`] (by its ring
/// it is not on the key's lists; see `check_replica_of`).
fn refused_for(f: &Frame, why: &str) -> bool {
    f.op == op::ERR && {
        let e = Error::from_payload(&f.payload);
        e.code == ErrorCode::Unavailable && e.message.contains(why)
    }
}

/// Up to three decimal numbers separated by single spaces (at least one);
/// missing ones are 0.
fn decimals(payload: &[u8]) -> Option<[u64; 3]> {
    let mut out = [0; 3];
    let text = std::str::from_utf8(payload).ok()?;
    let mut words = text.split(' ');
    for slot in out.iter_mut() {
        match words.next() {
            Some(w) => *slot = w.parse().ok()?,
            None => break,
        }
    }
    words.next().is_none().then_some(out)
}

/// The key of pending request `id` (empty if it is gone).
fn p_key(pending: &HashMap<u64, Pending>, id: u64) -> Bytes {
    pending.get(&id).map(|p| p.key.clone()).unwrap_or_default()
}

/// Coordinating requests over replicas (see [`super::quorum`]).
impl StorageNode {
    /// Whether node `id` is worth sending to: not down in the ring, and (for a
    /// peer) its link is not waiting to reconnect after a failure.
    fn reachable(&self, id: u32) -> bool {
        let up = self
            .ring
            .node(id)
            .is_some_and(|n| n.state != NodeState::Down);
        up && (id == self.node_id || !self.mesh.is_unreachable(id))
    }

    /// The key's coordinator as this node sees it: the first node of its
    /// preference list that is reachable. A crashed coordinator is skipped as
    /// soon as its link breaks, before the manager marks it down.
    fn live_coordinator(&self, hash: u64) -> Option<u32> {
        let pref = self.serving_pref.get(hash);
        pref.iter().copied().find(|&id| self.reachable(id))
    }

    /// The key's coordinator once pending moves settle: the first node of its
    /// settled preference list that is not down.
    fn settled_coordinator(&self, hash: u64) -> Option<u32> {
        let up = |id: u32| (self.settled.node(id)).is_some_and(|n| n.state != NodeState::Down);
        self.settled_pref
            .get(hash)
            .iter()
            .copied()
            .find(|&id| up(id))
    }

    /// The live replicas of `hash` other than this node, and the live nodes a
    /// pending move adds to its preference list.
    fn replica_targets(&self, hash: u64) -> (usize, Vec<u32>, Vec<u32>) {
        let me = self.node_id;
        let pref = self.serving_pref.get(hash);
        let live = |id: &u32| *id != me && self.reachable(*id);
        let others: Vec<u32> = pref.iter().copied().filter(live).collect();
        let newcomers: Vec<u32> = (self.settled_pref.get(hash).iter().copied())
            .filter(|id| !pref.contains(id) && live(id))
            .collect();
        (pref.len(), others, newcomers)
    }

    /// Refuses a replica request (`REPL_READ`, `REPLICATE`) for a key this node
    /// is not a replica of by its own ring: on neither the key's serving nor its
    /// settled preference list. Such a node (one that left the ring and is in its
    /// exit grace, or one a ring change took off the key's list) stopped getting
    /// the key's writes, or dropped the key, so its copy must not count toward a
    /// quorum: a coordinator still routing by an older ring (paused through the
    /// change, say) would take it for a current copy and decide against it.
    /// Seed 3000044 of the simulator's crash runs lost five acknowledged writes
    /// that way. With N = 1, or before this node has a ring, nothing is refused.
    fn check_replica_of(&self, f: &Frame) -> Result<(), Error> {
        let me = self.node_id;
        if me == 0 || self.ring.replicas < 2 || self.ring.is_empty() {
            return Ok(());
        }
        let key = match f.op {
            op::REPL_READ => &f.payload[..],
            op::REPLICATE => match f.payload.get(8..).and_then(parse_chunk) {
                Some(entries) if entries.len() == 1 => entries[0].0,
                _ => return Ok(()),
            },
            _ => return Ok(()),
        };
        let h = hash64(key);
        if self.serving_pref.get(h).contains(&me) || self.settled_pref.get(h).contains(&me) {
            return Ok(());
        }
        Err(Error::new(
            ErrorCode::Unavailable,
            format!("node {me} {OFF_LIST} (ring epoch {})", self.ring.epoch),
        ))
    }

    /// Starts coordinating a key-value request this node is the coordinator of.
    fn coordinate(
        &mut self,
        now: Millis,
        conn: ConnId,
        request: Frame,
        key: Bytes,
        out: &mut Vec<Output>,
    ) {
        let (listed, _, _) = self.replica_targets(hash64(&key));
        let listed = listed.max(1);
        // A node catching up keeps its own copy in the round but does not count
        // it: it needs R copies from the others.
        let behind = self.behind(hash64(&key)) as usize;
        // Kept until the replicas answer: copied, so it does not pin the read
        // buffer it arrived in (a client that never reads would pin many).
        let mut request = request;
        request.payload = Bytes::copy_from_slice(&request.payload);
        let key = Bytes::copy_from_slice(&key);
        let seq = self.order.reserve(conn);
        let id = self.next_pending;
        self.next_pending += 1;
        let pending = Pending {
            requester: Requester {
                conn,
                seq,
                client_id: request.client_id,
            },
            request,
            key,
            read_need: (self.ring.read_quorum as usize).clamp(1, listed) + behind,
            write_need: (self.ring.write_quorum as usize).clamp(1, listed),
            attempts: 0,
            round: Round::Reading {
                copies: Vec::new(),
                waiting: Vec::new(),
            },
            failure: ErrorCode::Unavailable,
            holds_key: false,
            refused: Vec::new(),
            undo: None,
            lagging: Vec::new(),
            off_list: false,
        };
        // Requests for one key run in arrival order: a write holds the key until
        // it is answered, and whatever arrives meanwhile waits its turn. Reads that
        // find the key free run at once (they see every write applied here).
        let writes = !matches!(pending.request.op, op::GET | op::EXISTS);
        let key = pending.key.clone();
        let mut pending = pending;
        if let Some(queue) = self.busy.get_mut(&key) {
            pending.holds_key = true;
            self.pending.insert(id, pending);
            return queue.push_back(id);
        }
        if writes {
            pending.holds_key = true;
            self.busy.insert(key, Default::default());
        }
        self.pending.insert(id, pending);
        self.start_round(now, id, out);
    }

    /// Starts (or restarts) a request: a write round for PUT, a read round for
    /// everything else.
    fn start_round(&mut self, now: Millis, id: u64, out: &mut Vec<Output>) {
        let Some(key) = self.pending.get(&id).map(|p| p.key.clone()) else {
            return;
        };
        let (_, others, newcomers) = self.replica_targets(hash64(&key));
        let p = self.pending.get_mut(&id).expect("checked above");
        p.attempts += 1;
        if p.request.op == op::PUT {
            let value = match kv::split_kv(&p.request.payload) {
                Ok((_, v)) => v,
                Err(e) => return self.finish(id, Err(e), out),
            };
            let result = Frame::new(op::OK, 0, 0, Bytes::new());
            let wall = self.cfg.clock_base_ms + now;
            let version = self.hlc.next(wall, self.engine.version(&key));
            self.store(&key, version, Some(&value), None);
            let entry = Entry {
                version,
                value: Some(value),
            };
            let mut targets = others;
            targets.extend(newcomers.iter().copied());
            return self.write_round(now, id, entry, None, result, targets, newcomers, 1, out);
        }
        let local = self.engine.entry(&key);
        p.round = Round::Reading {
            copies: vec![(self.node_id, local)],
            waiting: others.clone(),
        };
        let round = p.round_tag();
        let done = p.read_need <= 1;
        let alone = others.is_empty();
        let failed = self.ask_replicas(now, id, round, others, op::REPL_READ, key, out);
        if done {
            return self.finish_read(now, id, out);
        }
        if alone {
            // Nobody to wait for: no answer would ever end the round.
            return self.too_few_reachable(id, out);
        }
        self.unreachable_replicas(now, id, round, failed, out);
    }

    /// Sends `op` with `payload` to each of `peers` for round `round` of request
    /// `id`; returns the peers it could not be sent to.
    #[allow(clippy::too_many_arguments)]
    fn ask_replicas(
        &mut self,
        now: Millis,
        id: u64,
        round: u32,
        peers: Vec<u32>,
        op: u8,
        payload: Bytes,
        out: &mut Vec<Output>,
    ) -> Vec<u32> {
        let deadline = now + self.cfg.request_timeout_ms;
        peers
            .into_iter()
            .filter(|&peer| {
                let frame = Frame::new(op, 0, 0, payload.clone());
                let reply_to = ReplyTo::Replica { id, round };
                let sent = self.mesh.forward(peer, frame, reply_to, 1, deadline, out);
                sent.is_err()
            })
            .collect()
    }

    /// Counts `peers` as answering nothing in round `round` of request `id`.
    fn unreachable_replicas(
        &mut self,
        now: Millis,
        id: u64,
        round: u32,
        peers: Vec<u32>,
        out: &mut Vec<Output>,
    ) {
        for peer in peers {
            let code = ErrorCode::Unavailable;
            self.replica_answer(now, id, round, peer, None, code, out);
        }
    }

    /// Sends `entry` to `targets` and waits for the acknowledgements.
    #[allow(clippy::too_many_arguments)]
    fn write_round(
        &mut self,
        now: Millis,
        id: u64,
        entry: Entry,
        base: Option<u64>,
        result: Frame,
        targets: Vec<u32>,
        newcomers: Vec<u32>,
        acks: usize,
        out: &mut Vec<Output>,
    ) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        let mut payload = BytesMut::new();
        payload.extend_from_slice(&base.unwrap_or(u64::MAX).to_be_bytes());
        put_entry(&mut payload, &p.key, &entry);
        let payload = payload.freeze();
        p.round = Round::Writing {
            result,
            acks,
            waiting: targets.clone(),
            newcomers,
            newest_refusal: 0,
        };
        let round = p.round_tag();
        let done = acks >= p.write_need
            && matches!(&p.round, Round::Writing { newcomers, .. } if newcomers.is_empty());
        let alone = targets.is_empty();
        let failed = self.ask_replicas(now, id, round, targets, op::REPLICATE, payload, out);
        // Replicas this write cannot reach now get it later (hinted handoff),
        // and so do the nodes a pending move adds to the key's list: they count
        // as holding it once the ring flips.
        let key = p_key(&self.pending, id);
        let h = hash64(&key);
        let (serving, settled) = (self.serving_pref.get(h), self.settled_pref.get(h));
        let mut listed = serving.to_vec();
        listed.extend(settled.iter().filter(|id| !serving.contains(id)));
        for peer in listed {
            if peer != self.node_id && (!self.reachable(peer) || failed.contains(&peer)) {
                self.resync.hint(peer, &key);
            }
        }
        if done {
            return self.write_done(id, out);
        }
        if alone {
            return self.too_few_reachable(id, out);
        }
        self.unreachable_replicas(now, id, round, failed, out);
    }

    /// Fails request `id` at once: too few of its replicas are reachable for a
    /// quorum, and none was asked, so no answer would end the round.
    fn too_few_reachable(&mut self, id: u64, out: &mut Vec<Output>) {
        let e = Error::new(
            ErrorCode::Unavailable,
            "too few of the key's replicas are reachable",
        );
        self.finish(id, Err(e), out);
    }

    /// A replica answered (`frame`) or will not (`None`, for the reason `code`).
    #[allow(clippy::too_many_arguments)]
    fn replica_answer(
        &mut self,
        now: Millis,
        id: u64,
        round: u32,
        peer: u32,
        frame: Option<Frame>,
        code: ErrorCode,
        out: &mut Vec<Output>,
    ) {
        let Some(p) = self.pending.get_mut(&id).filter(|p| p.round_tag() == round) else {
            return;
        };
        if frame.is_none() && code == ErrorCode::Timeout {
            p.failure = ErrorCode::Timeout;
        }
        let progress = match &p.round {
            Round::Reading { .. } => {
                if frame.as_ref().is_some_and(|f| refused_for(f, CATCHING_UP)) {
                    p.lagging.push(peer);
                }
                if frame.as_ref().is_some_and(|f| refused_for(f, OFF_LIST)) {
                    p.off_list = true;
                }
                let copy = frame.and_then(|f| match f.op {
                    op::NOT_FOUND => Some(None),
                    op::VALUE => parse_chunk(&f.payload).and_then(|e| match e[..] {
                        [(_, version, value)] => Some(Some(Entry {
                            version,
                            value: value.map(Bytes::copy_from_slice),
                        })),
                        _ => None,
                    }),
                    _ => None,
                });
                if let Some(Some(e)) = &copy {
                    self.hlc.observe(e.version);
                }
                p.copy_from(peer, copy)
            }
            Round::Writing { .. } => {
                let answer = match frame {
                    Some(f) if f.op == op::OK => Ok(()),
                    Some(f) if f.op == op::CONFLICT => Err(std::str::from_utf8(&f.payload)
                        .ok()
                        .and_then(|t| t.parse::<u64>().ok())),
                    _ => Err(None),
                };
                match answer {
                    Err(Some(v)) => self.hlc.observe(v),
                    // No answer (its link broke, it timed out): it may lack the
                    // write, and the round no longer waits for it.
                    Err(None) => self.resync.hint(peer, &p.key),
                    Ok(()) => {}
                }
                p.ack_from(peer, answer)
            }
        };
        match progress {
            Progress::Waiting => {}
            Progress::ReadDone => self.finish_read(now, id, out),
            Progress::WriteDone => self.write_done(id, out),
            Progress::Failed => {
                let refused = matches!(
                    &p.round,
                    Round::Writing { newest_refusal, .. } if *newest_refusal > 0
                );
                if refused {
                    // A replica holds something newer than this write's base: the
                    // write lost. Its copies (here and on replicas that took it)
                    // must not count as the newest when the key is decided again.
                    // Its own copy goes back to what it was.
                    if let Some((version, prev)) = p.undo.take() {
                        p.refused.push(version);
                        let key = p.key.clone();
                        self.undo(&key, version, prev);
                    }
                }
                let Some(p) = self.pending.get(&id) else {
                    return;
                };
                if refused && p.attempts < MAX_ATTEMPTS {
                    self.start_round(now, id, out);
                } else if p.off_list && p.attempts < MAX_ATTEMPTS {
                    // A replica's ring no longer has it on the key's list: this
                    // node's ring is about to change too (a leave or drop just
                    // flipped). Try again at the next tick, with that ring.
                    if let Some(p) = self.pending.get_mut(&id) {
                        p.off_list = false;
                    }
                    self.retry_soon.push(id);
                } else {
                    let e = Error::new(
                        p.failure,
                        format!(
                            "too few of the key's replicas answered (round {})",
                            p.attempts
                        ),
                    );
                    self.finish(id, Err(e), out);
                }
            }
        }
    }

    /// A read round has its copies: answer, repair, or decide and write.
    fn finish_read(&mut self, now: Millis, id: u64, out: &mut Vec<Output>) {
        let Some(p) = self.pending.get(&id) else {
            return;
        };
        let (version, value) = p.newest();
        if p.refused.iter().max().is_some_and(|&mine| version > mine) {
            // This request's write was refused, and a copy newer than that write
            // exists: another coordinator wrote the key since, maybe deciding
            // on this very write (read from a replica that took it). Deciding
            // again could apply it twice (seed 2000300), so the outcome stays
            // unknown to the client.
            let e = Error::new(
                ErrorCode::Unavailable,
                "the key changed elsewhere while this write was refused; it may have been applied",
            );
            return self.finish(id, Err(e), out);
        }
        let base = p.highest();
        let decision = match decide(&p.request, value.as_ref()) {
            Ok(d) => d,
            Err(e) => return self.finish(id, Err(e), out),
        };
        let key = p.key.clone();
        let result = Frame::new(decision.reply, 0, 0, decision.payload);
        match decision.write {
            None => {
                // Nothing to change, but copies older than the newest are brought up
                // to date before the answer, so no later read can see them.
                let stale = if version > 0 {
                    p.stale(version)
                } else {
                    vec![]
                };
                if stale.is_empty() && (version == 0 || p.lagging.is_empty()) {
                    return self.finish(id, Ok(result), out);
                }
                let lagging = p.lagging.clone();
                let holders = match &p.round {
                    Round::Reading { copies, .. } => copies.len() - stale.len(),
                    Round::Writing { .. } => 0,
                };
                let entry = Entry { version, value };
                let mut acks = holders;
                let me = self.node_id;
                if stale.contains(&me) {
                    self.store(&key, version, entry.value.as_deref(), None);
                    acks += 1;
                }
                let mut targets: Vec<u32> = stale.into_iter().filter(|&n| n != me).collect();
                // Replicas that are catching up get the newest copy too.
                targets.extend(lagging);
                self.write_round(now, id, entry, None, result, targets, vec![], acks, out);
            }
            Some(write) => {
                let wall = self.cfg.clock_base_ms + now;
                let next = self.hlc.next(wall, base);
                let prev = self.engine.entry(&key);
                match self.store(&key, next, write.as_deref(), Some(base)) {
                    Applied::Stored => {
                        if let Some(p) = self.pending.get_mut(&id) {
                            p.undo = Some((next, prev));
                        }
                    }
                    Applied::Newer(v) => {
                        // Something newer reached this node meanwhile: decide again.
                        self.hlc.observe(v);
                        let attempts = self.pending.get(&id).map_or(0, |p| p.attempts);
                        if attempts < MAX_ATTEMPTS {
                            return self.start_round(now, id, out);
                        }
                        let e = Error::new(ErrorCode::Unavailable, "the key kept changing");
                        return self.finish(id, Err(e), out);
                    }
                }
                let (_, others, newcomers) = self.replica_targets(hash64(&key));
                let entry = Entry {
                    version: next,
                    value: write,
                };
                let mut targets = others;
                targets.extend(newcomers.iter().copied());
                self.write_round(
                    now,
                    id,
                    entry,
                    Some(base),
                    result,
                    targets,
                    newcomers,
                    1,
                    out,
                );
            }
        }
    }

    fn write_done(&mut self, id: u64, out: &mut Vec<Output>) {
        let result = match self.pending.get_mut(&id).map(|p| &mut p.round) {
            Some(Round::Writing { result, .. }) => {
                std::mem::replace(result, Frame::new(0, 0, 0, Bytes::new()))
            }
            _ => return,
        };
        self.finish(id, Ok(result), out);
    }

    /// Answers a coordinated request and forgets it.
    fn finish(&mut self, id: u64, result: Result<Frame, Error>, out: &mut Vec<Output>) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        if let Round::Writing { waiting, .. } = &p.round {
            // Replicas that had not acknowledged when the round ended.
            for &peer in waiting {
                self.resync.hint(peer, &p.key);
            }
        }
        if p.holds_key {
            // The key's next request may start.
            if let Some(queue) = self.busy.get_mut(&p.key) {
                match queue.pop_front() {
                    Some(next) => self.ready_turns.push(next),
                    None => {
                        self.busy.remove(&p.key);
                    }
                }
            }
        }
        let r = p.requester;
        let frame = match result {
            Ok(f) => Frame::new(f.op, r.client_id, self.node_id, f.payload),
            Err(e) => Frame::error(r.client_id, self.node_id, &e),
        };
        self.order.fill(r.conn, r.seq, frame, out);
    }
}

// Tombstone collection. A delete leaves a tombstone so that an older copy of the
// key arriving later (a late replica write, a hint, a move) cannot bring it back.
// The key's coordinator collects a tombstone once it is older than the grace
// period and every node of the key's preference lists (the serving and the
// settled one) confirms it holds exactly that tombstone: then no replica holds an
// older value. The grace period covers older copies still in flight. It sends
// PURGE to each, which forgets the key only if its entry is still that
// tombstone. Nothing is collected while a move is pending, or while any replica
// is unreachable. With N = 1 the owner collects its own tombstones.
impl StorageNode {
    fn sweep_tombstones(&mut self, now: Millis, out: &mut Vec<Output>) {
        let grace = self.cfg.tombstone_grace_ms;
        if now < self.next_sweep
            || self.node_id == 0
            || self.ring.has_moves()
            || self.catch_up.is_some()
        {
            return;
        }
        self.next_sweep = now + (grace / 2).clamp(100, 5_000);
        if self.collected > 0 {
            let n = std::mem::take(&mut self.collected);
            log::info!("collected {n} tombstones");
        }
        let tokens: Vec<u64> = self.engine.tokens().collect();
        // Entries minus live keys: skip the scan when there is no tombstone.
        let entries: usize = (tokens.iter())
            .filter_map(|&t| self.engine.sector_of_token(t))
            .map(|s| s.len())
            .sum();
        if entries == self.engine.len() {
            return;
        }
        let wall = self.cfg.clock_base_ms + now;
        let room = MAX_PURGES.saturating_sub(self.purges.len());
        let mut old: Vec<(Bytes, u64)> = Vec::new();
        for t in tokens {
            let Some(sector) = self.engine.sector_of_token(t) else {
                continue;
            };
            let aged = |v: u64| (v >> 16).saturating_add(grace) <= wall;
            for e in sector.iter() {
                if e.value.is_none() && aged(e.version) && old.len() < room {
                    old.push((Bytes::copy_from_slice(e.key), e.version));
                }
            }
        }
        let me = self.node_id;
        for (key, version) in old {
            let h = hash64(&key);
            if self.ring.replicas <= 1 {
                self.purge(&key, version);
                continue;
            }
            if self.live_coordinator(h) != Some(me) || self.purges.values().any(|c| c.key == key) {
                continue;
            }
            let mut members: Vec<u32> = (self.serving_pref.get(h).iter())
                .chain(self.settled_pref.get(h))
                .copied()
                .filter(|&id| id != me)
                .collect();
            members.sort_unstable();
            members.dedup();
            if members.iter().any(|&id| !self.reachable(id)) {
                continue;
            }
            let id = self.next_purge;
            self.next_purge += 1;
            let deadline = now + self.cfg.request_timeout_ms;
            for &peer in &members {
                let frame = Frame::new(op::REPL_READ, 0, 0, key.clone());
                let reply_to = ReplyTo::Purge { id };
                // A failed send leaves the check waiting; its deadline ends it.
                let _ = self.mesh.forward(peer, frame, reply_to, 1, deadline, out);
            }
            let waiting = members.clone();
            let check = PurgeCheck {
                key,
                version,
                members,
                waiting,
            };
            self.purges.insert(id, check);
        }
    }

    /// A replica's copy for tombstone check `id`: the check goes on only if it is
    /// the same tombstone; once all confirmed, every replica forgets it.
    fn purge_answer(
        &mut self,
        now: Millis,
        id: u64,
        peer: u32,
        frame: &Frame,
        out: &mut Vec<Output>,
    ) {
        let Some(c) = self.purges.get_mut(&id) else {
            return;
        };
        let same = frame.op == op::VALUE
            && parse_chunk(&frame.payload)
                .is_some_and(|e| matches!(e[..], [(_, v, None)] if v == c.version));
        if !same {
            self.purges.remove(&id);
            return;
        }
        c.waiting.retain(|&p| p != peer);
        if !c.waiting.is_empty() {
            return;
        }
        let c = self.purges.remove(&id).expect("checked above");
        let mut payload = BytesMut::with_capacity(8 + c.key.len());
        payload.extend_from_slice(&c.version.to_be_bytes());
        payload.extend_from_slice(&c.key);
        let payload = payload.freeze();
        let deadline = now + self.cfg.request_timeout_ms;
        for peer in c.members {
            let frame = Frame::new(op::PURGE, 0, 0, payload.clone());
            let _ = (self.mesh).forward(peer, frame, ReplyTo::Ignore, 1, deadline, out);
        }
        self.purge(&c.key, c.version);
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
        for item in front.feed(now, conn, data) {
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
        if let Some((id, ring)) = self.durable.as_mut().and_then(Durable::take_identity) {
            // Restarted with a data directory: route by the last ring at once.
            self.node_id = id;
            self.hlc.set_writer(id);
            self.install_ring(ring, now, out);
        }
        let resp = self.resp.as_mut();
        match input {
            Input::Accepted { conn, listener } if listener == resp::LISTENER && resp.is_some() => {
                resp.expect("checked").accept(now, conn, out);
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
        // Requests whose key just became free.
        while let Some(id) = self.ready_turns.pop() {
            self.start_round(now, id, out);
        }
        if let Some(r) = self.resp.as_mut() {
            r.translate(mark, out, &self.held);
        }
        // Last: outputs that may depend on uncommitted log records wait for the
        // turn's commit.
        let (mesh, manager) = (&self.mesh, self.manager.conn());
        if let Some(d) = self.durable.as_mut() {
            d.after_step(now, mark, out, |c| mesh.is_link(c) || manager == Some(c));
        }
    }

    fn turn_end(&mut self, _now: Millis, out: &mut Vec<Output>) {
        if let Some(d) = self.durable.as_mut() {
            d.turn_end(&self.engine, out);
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
                self.fail_forwards(now, late, ErrorCode::Timeout, out);
                if self.handoff.as_ref().is_some_and(|h| h.failed) {
                    self.start_handoff(now, out);
                } else {
                    self.pump_handoff(now, out);
                }
                self.pump_resync(now, out);
                for id in std::mem::take(&mut self.retry_soon) {
                    self.start_round(now, id, out);
                }
                if self
                    .catch_up
                    .as_ref()
                    .is_some_and(|c| now >= c.asked_at + CATCH_UP_ASK_MS)
                {
                    self.ask_catch_up(now, out);
                }
                self.sweep_tombstones(now, out);
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
                    let mut text = self.engine.len().to_string();
                    if self.catch_up.is_some() {
                        text.push_str(" catching-up");
                    }
                    out.push(Output::Send {
                        conn,
                        frame: Frame::new(op::HEARTBEAT, 0, self.node_id, text),
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
            Input::Timer { id: TIMER_ORPHAN } => {
                let gone = self.orphaned_at.is_some_and(|t| now >= t + LEAVE_ORPHAN_MS);
                if gone && !self.exiting {
                    log::warn!(
                        "the manager has been unreachable for {LEAVE_ORPHAN_MS} ms; \
                         exiting without handing the data over: {}",
                        self.data_left_behind()
                    );
                    out.push(Output::Stop);
                }
            }
            Input::Timer { .. } => {}
            Input::Connected { conn, tag } if tag == TAG_MANAGER => {
                self.manager.up(conn);
                self.orphaned_at = None;
                self.awaiting_joined = true;
                out.push(Output::Send {
                    conn,
                    frame: self.manager_hello(),
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
                    self.fail_forwards(now, lost, ErrorCode::Unavailable, out);
                    self.apply_holds(None, out);
                }
                if self.manager.conn() == Some(conn) {
                    log::warn!("lost the manager link; reconnecting");
                    self.manager_down(now, out);
                }
            }
            Input::Signal(Signal::Terminate) if !self.leaving => match self.manager.conn() {
                Some(_) if self.ring.node(self.node_id).is_some() => {
                    log::info!("SIGTERM: handing data over before leaving");
                    self.leaving = true;
                    self.send_leave(out);
                    out.push(Output::Timer {
                        at: now + LEAVE_DEADLINE_MS,
                        id: TIMER_LEAVE,
                    });
                }
                _ => {
                    log::warn!(
                        "SIGTERM without a manager: exiting without a handoff; {}",
                        self.data_left_behind()
                    );
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

    /// A started node whose manager link (returned) is up, not yet registered.
    fn with_manager() -> (StorageNode, ConnId) {
        let mut n = StorageNode::new(cfg());
        let link = ConnId::new(1, 1);
        step(&mut n, 0, Input::Timer { id: TIMER_INIT });
        let up = Input::Connected {
            conn: link,
            tag: TAG_MANAGER,
        };
        step(&mut n, 1, up);
        (n, link)
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

    /// A cluster member's connection to `n`, proven with NODE_JOIN.
    fn member(n: &mut StorageNode, idx: u32) -> ConnId {
        let c = ConnId::new(idx, 1);
        let hello = Frame::new(op::NODE_JOIN, 0, 0, "gtstore 127.0.0.1:7009 16");
        step(
            n,
            0,
            Input::Frame {
                conn: c,
                frame: hello,
            },
        );
        c
    }

    #[test]
    fn a_node_not_yet_registered_does_not_serve_keys_peers_route_to_it() {
        let mut n = StorageNode::new(cfg());
        let peer = member(&mut n, 8);
        let get = Frame::new(op::GET, 5, 1, &b"k"[..]);
        let out = step(
            &mut n,
            1,
            Input::Frame {
                conn: peer,
                frame: get,
            },
        );
        let s = sent(&out);
        assert_eq!((s.len(), s[0].1), (1, op::ERR), "{out:?}");
        assert!(s[0].2.starts_with(b"UNAVAILABLE"), "{s:?}");
        // A plain client is still served (see registers_with_backoff_...).
        let client = ConnId::new(9, 1);
        let get = Frame::new(op::GET, 5, 0, &b"k"[..]);
        let out = step(
            &mut n,
            2,
            Input::Frame {
                conn: client,
                frame: get,
            },
        );
        assert_eq!(sent(&out), vec![(client, op::NOT_FOUND, vec![])]);
    }

    #[test]
    fn replica_requests_for_keys_this_node_does_not_keep_are_refused() {
        let (mut n, link) = with_manager();
        let q = u64::MAX / 4;
        let text = format!(
            "epoch 7\nreplicas 3 2 2\nnode 3 127.0.0.1:7001 up {}\nnode 4 127.0.0.1:7002 up {}\n\
             node 5 127.0.0.1:7003 up {}\nnode 6 127.0.0.1:7004 up {}\n",
            q,
            2 * q,
            3 * q,
            u64::MAX
        );
        let ring = Ring::decode(text.as_bytes()).unwrap();
        let joined = Frame::new(op::JOINED, 0, 0, format!("3\n{text}"));
        step(
            &mut n,
            2,
            Input::Frame {
                conn: link,
                frame: joined,
            },
        );
        // Its first ring lists it serving, so it is catching up; that refusal is
        // not what this test is about.
        n.catch_up = None;
        let lists = |k: &String| ring.preference_list(hash64(k.as_bytes()), 3);
        let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        let kept = keys.iter().find(|k| lists(k).contains(&3)).unwrap();
        let other = keys.iter().find(|k| !lists(k).contains(&3)).unwrap();
        let peer = member(&mut n, 8);
        let ask = |n: &mut StorageNode, o: u8, payload: Bytes| {
            let f = Frame::new(o, 11, 1, payload);
            let out = step(
                n,
                3,
                Input::Frame {
                    conn: peer,
                    frame: f,
                },
            );
            sent(&out)
                .into_iter()
                .map(|s| (s.1, s.2))
                .collect::<Vec<_>>()
        };
        let read = |k: &String| Bytes::from(k.clone());
        let write = |k: &String| {
            let mut p = BytesMut::new();
            p.extend_from_slice(&u64::MAX.to_be_bytes());
            let e = Entry {
                version: 9 << 16,
                value: Some(Bytes::from_static(b"v")),
            };
            put_entry(&mut p, k.as_bytes(), &e);
            p.freeze()
        };
        assert_eq!(
            ask(&mut n, op::REPLICATE, write(kept)),
            vec![(op::OK, vec![])]
        );
        let got = ask(&mut n, op::REPL_READ, read(kept));
        assert_eq!(got[0].0, op::VALUE, "{got:?}");
        for (o, payload) in [(op::REPL_READ, read(other)), (op::REPLICATE, write(other))] {
            let got = ask(&mut n, o, payload);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].0, op::ERR, "{got:?}");
            assert!(got[0].1.starts_with(b"UNAVAILABLE"), "{got:?}");
        }
        assert_eq!(
            n.engine().entry(other.as_bytes()),
            None,
            "refused, not stored"
        );
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

    #[test]
    fn a_request_routed_by_an_old_ring_gets_stale() {
        let (mut n, link) = with_manager();
        // Node 3 owns everything up to hash 2^63, node 4 the rest.
        let ring = format!(
            "3\nepoch 7\nreplicas 1 1 1\nnode 3 127.0.0.1:7001 up {}\nnode 4 127.0.0.1:7002 up {}\n",
            1u64 << 63,
            u64::MAX
        );
        step(
            &mut n,
            2,
            Input::Frame {
                conn: link,
                frame: Frame::new(op::JOINED, 0, 0, ring),
            },
        );
        let (mine, theirs) = {
            let mut mine = None;
            let mut theirs = None;
            for i in 0..100u32 {
                let k = format!("k{i}");
                if hash64(k.as_bytes()) <= 1u64 << 63 {
                    mine.get_or_insert(k);
                } else {
                    theirs.get_or_insert(k);
                }
            }
            (mine.unwrap(), theirs.unwrap())
        };
        let client = ConnId::new(5, 1);
        let ask = |n: &mut StorageNode, key: &str, node_id: u32| {
            let f = Frame::new(op::GET, 9, node_id, key.to_string());
            step(
                n,
                3,
                Input::Frame {
                    conn: client,
                    frame: f,
                },
            )
        };
        // Routed here for a key node 4 serves: STALE with our epoch.
        assert_eq!(
            sent(&ask(&mut n, &theirs, 3)),
            vec![(client, op::STALE, b"7".to_vec())]
        );
        // Routed here for our own key: served.
        assert_eq!(
            sent(&ask(&mut n, &mine, 3)),
            vec![(client, op::NOT_FOUND, vec![])]
        );
        // Not routed (NODEID 0) or routed elsewhere: forwarded, no STALE.
        for node_id in [0, 4] {
            let out = ask(&mut n, &theirs, node_id);
            assert!(sent(&out).iter().all(|s| s.1 != op::STALE), "{out:?}");
        }
    }

    /// Ring text for nodes 1-3 (N = 3, R = W = 2) with node `id`'s state set.
    fn three(epoch: u64, states: [&str; 3]) -> String {
        let mut text = format!("epoch {epoch}\nreplicas 3 2 2\n");
        for (i, state) in states.iter().enumerate() {
            let token = (i as u64 + 1) << 60;
            text.push_str(&format!(
                "node {} 127.0.0.1:700{} {state} {token}\n",
                i + 1,
                i + 1
            ));
        }
        text
    }

    #[test]
    fn a_node_that_may_lack_writes_catches_up_before_it_answers_quorum_reads() {
        let (mut n, manager) = with_manager();
        let peer = ConnId::new(2, 1);
        let frame = |op, text: String| Input::Frame {
            conn: manager,
            frame: Frame::new(op, 0, 0, text),
        };
        // A fresh process whose first ring lists it serving: it may lack anything.
        let joined = format!("1\n{}", three(3, ["up", "up", "up"]));
        step(&mut n, 2, frame(op::JOINED, joined));
        let round = n.catch_up.as_ref().map(|c| c.round).expect("catching up");
        assert_eq!(n.catch_up.as_ref().unwrap().waiting, [2, 3].into());
        // Node 2 proves membership, then asks for a quorum read: refused.
        let hello = format!("{} 127.0.0.1:7002 8", crate::DEFAULT_SECRET);
        let from_peer = |op, payload: String| Input::Frame {
            conn: peer,
            frame: Frame::new(op, 7, 1, payload),
        };
        step(&mut n, 3, from_peer(op::NODE_JOIN, hello));
        let read =
            |n: &mut StorageNode, now| sent(&step(n, now, from_peer(op::REPL_READ, "k".into())));
        let out = read(&mut n, 4);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, op::ERR);
        assert!(
            refused_for(&Frame::new(op::ERR, 0, 0, out[0].2.clone()), CATCHING_UP),
            "{out:?}"
        );
        // Its heartbeat says so.
        let beat = sent(&step(
            &mut n,
            500,
            Input::Timer {
                id: TIMER_HEARTBEAT,
            },
        ));
        assert_eq!(
            beat,
            vec![(manager, op::HEARTBEAT, b"0 catching-up".to_vec())]
        );
        // A SYNC_DONE of another round counts for nothing; node 2's does.
        step(
            &mut n,
            5,
            from_peer(op::SYNC_DONE, format!("2 {}", round + 1)),
        );
        assert_eq!(n.catch_up.as_ref().unwrap().waiting, [2, 3].into());
        step(&mut n, 6, from_peer(op::SYNC_DONE, format!("2 {round}")));
        assert_eq!(n.catch_up.as_ref().unwrap().waiting, [3].into());
        // Node 3 goes down: nobody is left to wait for. It is asked once back.
        step(
            &mut n,
            7,
            frame(op::RING_UPDATE, three(4, ["up", "up", "down"])),
        );
        assert!(n.catch_up.is_none());
        assert!(n.unheard.contains(&3));
        assert_eq!(read(&mut n, 8)[0].1, op::NOT_FOUND);
        step(
            &mut n,
            9,
            frame(op::RING_UPDATE, three(5, ["up", "up", "up"])),
        );
        assert!(n.unheard.is_empty());
        assert!(
            n.catch_up.is_none(),
            "a peer coming back is no reason to catch up"
        );
        // A ring marks this node down, then up: it catches up again.
        step(
            &mut n,
            10,
            frame(op::RING_UPDATE, three(6, ["down", "up", "up"])),
        );
        assert!(n.catch_up.is_none(), "it waits until it is back");
        step(
            &mut n,
            11,
            frame(op::RING_UPDATE, three(7, ["up", "up", "up"])),
        );
        assert!(n.catch_up.as_ref().is_some_and(|c| c.known.is_none()));
        assert_eq!(read(&mut n, 12)[0].1, op::ERR);
    }

    #[test]
    fn a_node_given_new_ranges_is_behind_on_those_only() {
        let (mut n, manager) = with_manager();
        // Four nodes, N = 2: node 1 holds its own range and node 4's.
        let ring = |epoch, with_3: bool| {
            let mut text = format!("epoch {epoch}\nreplicas 2 1 2\n");
            for id in [1u64, 2, 3, 4].into_iter().filter(|&i| with_3 || i != 3) {
                text.push_str(&format!("node {id} 127.0.0.1:700{id} up {}\n", id << 60));
            }
            text
        };
        let frame = |op, text: String| Input::Frame {
            conn: manager,
            frame: Frame::new(op, 0, 0, text),
        };
        step(
            &mut n,
            2,
            frame(op::JOINED, format!("1\n{}", ring(3, true))),
        );
        // The restart's catch-up is not what this test is about.
        n.catch_up = None;
        // Node 3 is dropped: node 1 is now on node 3's range too (hashes in
        // (2^61, 3 * 2^60]), and behind there only.
        step(&mut n, 3, frame(op::RING_UPDATE, ring(4, false)));
        assert!(n.catch_up.as_ref().is_some_and(|c| c.known.is_some()));
        assert!(n.behind(3 << 60));
        assert!(
            !n.behind(1 << 60),
            "it was a replica of its own range before"
        );
        assert!(!n.behind(4 << 60), "and of node 4's");
    }

    #[test]
    fn a_registration_the_manager_turns_away_is_retried_with_backoff() {
        let mut n = StorageNode::new(cfg());
        step(&mut n, 0, Input::Timer { id: TIMER_INIT });
        let refused = Frame::new(
            op::ERR,
            0,
            0,
            "UNAVAILABLE the manager is recovering the membership; retry",
        );
        let mut at = 0;
        for (i, delay) in [200, 400, 800, 1_600, 2_000, 2_000].into_iter().enumerate() {
            let link = ConnId::new(1, i as u32 + 1);
            let out = step(
                &mut n,
                at,
                Input::Connected {
                    conn: link,
                    tag: TAG_MANAGER,
                },
            );
            assert_eq!(sent(&out)[0].1, op::NODE_JOIN);
            let out = step(
                &mut n,
                at + 1,
                Input::Frame {
                    conn: link,
                    frame: refused.clone(),
                },
            );
            // The link is dropped and a retry is due later each time, never an exit.
            assert!(
                matches!(out[0], Output::Close { conn } if conn == link),
                "{out:?}"
            );
            let retry = at + 1 + delay;
            assert!(
                matches!(out[1], Output::Timer { at, id: TIMER_MANAGER } if at == retry),
                "{out:?}"
            );
            assert!(!out.iter().any(|o| matches!(o, Output::Stop)));
            assert!(step(&mut n, retry - 1, Input::Timer { id: TIMER_MANAGER }).is_empty());
            // The closed link reporting in late changes nothing.
            assert!(step(&mut n, retry - 1, Input::Closed { conn: link }).is_empty());
            let out = step(&mut n, retry, Input::Timer { id: TIMER_MANAGER });
            assert!(
                matches!(
                    out[0],
                    Output::Connect {
                        tag: TAG_MANAGER,
                        ..
                    }
                ),
                "{out:?}"
            );
            at = retry + 1;
        }
        // Once registered, the count starts again.
        let link = ConnId::new(1, 99);
        step(
            &mut n,
            at,
            Input::Connected {
                conn: link,
                tag: TAG_MANAGER,
            },
        );
        let joined = Frame::new(
            op::JOINED,
            0,
            0,
            "1\nepoch 1\nreplicas 1 1 1\nnode 1 127.0.0.1:7001 up 5\n",
        );
        step(
            &mut n,
            at,
            Input::Frame {
                conn: link,
                frame: joined,
            },
        );
        assert_eq!(n.node_id(), 1);
        assert_eq!(n.join_refusals, 0);
    }

    #[test]
    fn a_leaving_node_asks_again_after_a_reconnect_and_gives_up_on_a_lost_manager() {
        let mut n = StorageNode::new(cfg());
        step(&mut n, 0, Input::Timer { id: TIMER_INIT });
        let ring = "1\nepoch 1\nreplicas 3 2 2\nnode 1 127.0.0.1:7001 up 5\n";
        let register = |n: &mut StorageNode, now: Millis, link: ConnId| {
            step(
                n,
                now,
                Input::Connected {
                    conn: link,
                    tag: TAG_MANAGER,
                },
            );
            let joined = Frame::new(op::JOINED, 0, 0, ring);
            step(
                n,
                now,
                Input::Frame {
                    conn: link,
                    frame: joined,
                },
            )
        };
        let link = ConnId::new(1, 1);
        register(&mut n, 1, link);
        let out = step(&mut n, 10, Input::Signal(Signal::Terminate));
        assert_eq!(sent(&out), vec![(link, op::LEAVE, vec![])]);
        // The link breaks before the answer, and comes back within the grace:
        // the node registers again and asks again; the old timer does nothing.
        step(&mut n, 20, Input::Closed { conn: link });
        let link = ConnId::new(1, 2);
        let out = register(&mut n, 500, link);
        assert!(sent(&out).contains(&(link, op::LEAVE, vec![])), "{out:?}");
        let ok = Frame::new(op::OK, 0, 0, Bytes::new());
        step(
            &mut n,
            501,
            Input::Frame {
                conn: link,
                frame: ok,
            },
        );
        assert!(step(
            &mut n,
            20 + LEAVE_ORPHAN_MS,
            Input::Timer { id: TIMER_ORPHAN }
        )
        .is_empty());
        // Lost again, for good this time: the node exits after the grace.
        let lost = 3 * LEAVE_ORPHAN_MS;
        let out = step(&mut n, lost, Input::Closed { conn: link });
        let at = lost + LEAVE_ORPHAN_MS;
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Timer { at: t, id: TIMER_ORPHAN } if *t == at)));
        assert!(step(&mut n, at - 1, Input::Timer { id: TIMER_ORPHAN }).is_empty());
        let out = step(&mut n, at, Input::Timer { id: TIMER_ORPHAN });
        assert!(matches!(out[..], [Output::Stop]), "{out:?}");
    }
}
