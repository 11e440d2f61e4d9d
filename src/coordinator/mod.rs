//! The manager's logic as a state machine: membership, ids, token assignment,
//! failure detection, recovery of the membership after a restart, the
//! answers to clients' HELLO, RING and STATUS, and (on its HTTP listener) the
//! status page and the metrics.
//!
//! The manager is not on the data path: clients ask it once for an id, a contact
//! node and (if partition-aware) the ring, then talk to storage nodes directly.
//! It keeps the membership in memory only; a restarted manager learns it back
//! from the nodes.
//!
//! [`Manager`] is driven through [`Service::step`](crate::reactor::Service) like
//! every state machine here: an input (a frame, a closed link, a timer) in,
//! outputs (frames to send, links to close, the next timer) out. Frames between
//! the manager and the nodes are the typed [`crate::protocol::Message`]s; the
//! client requests (PING, HELLO, RING, STATUS) stay plain frames. The code is
//! split by concern, each file one `impl Manager` block:
//!
//! - `dispatch`: `step`, and which handler each input and message goes to;
//!   the gate that keeps ops 50-99 for members.
//! - `membership`: `NODE_JOIN` (a known address gets its old id and tokens
//!   back, a new one the next id), `LEAVE` and `DROP`.
//! - `tokens`: token plans (a new node's tokens, a dropped down node's tokens
//!   handed to the others), settling the moves once every handoff is done, and
//!   pushing each new ring to the nodes.
//! - `failure`: heartbeats, links that close, the tick that marks silent nodes
//!   down and (with `dead_after_ms`) drops nodes down for too long.
//! - `lease`: the lease each heartbeat renews, and the drops and flips that
//!   wait for a dropped node's lease to be over.
//! - `recovery`: adopting the rings nodes offer after a manager restart, and
//!   the recovery window that keeps new nodes (and clients) waiting meanwhile.
//! - `status`: the STATUS JSON and HELLO's round-robin contact node.
//! - `admin`: `AUTH` and the admin credential that DROP needs.
//! - `http`: the HTTP listener's endpoints: the status page, `/status.json`
//!   and `/metrics`.
//!
//! Every membership change bumps the ring's epoch; [`Manager::ring`] builds the
//! ring from the node records, and the step ends by pushing it if the epoch moved.
//!
//! Caveats: a single manager, with no standby; while it is down clients that
//! already know a node keep working for a lease's length (`lease_ms`), then
//! the nodes stop serving data until it is back; nothing joins, leaves or is
//! marked down meanwhile.

use crate::protocol::auth::{Nonce, NonceSource};
use crate::reactor::{ConnId, Millis};
use crate::ring::{NodeEntry, Ring};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

mod admin;
mod dispatch;
mod failure;
mod http;
mod lease;
mod membership;
mod recovery;
mod status;
mod tokens;

#[cfg(test)]
mod tests;

/// The timer the reactor fires once at start.
const TIMER_INIT: u64 = 0;
/// The periodic failure-detection tick.
const TIMER_TICK: u64 = 1;

/// Settings of the manager.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// Shared secret nodes must present (no spaces).
    pub secret: String,
    /// The secret an admin proves with `AUTH` before DROP (see `admin.rs`).
    pub admin_secret: String,
    /// Key of the nonces `AUTH` hands out: random in a process (the binary fills
    /// it from the OS), fixed in tests and the simulator.
    pub nonce_key: [u8; 32],
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
    /// know is refused with `ERR UNAVAILABLE` and retries (see `recovery.rs`).
    /// 0 (the default here; the binary's `--recovery-ms` defaults to 3000): none.
    pub recovery_ms: Millis,
    /// How long a node may serve data after it sent the heartbeat the manager
    /// last answered, in ms (see `lease.rs`). Above 0 and above the nodes'
    /// heartbeat period.
    pub lease_ms: Millis,
}

impl Default for ManagerConfig {
    fn default() -> ManagerConfig {
        ManagerConfig {
            secret: crate::DEFAULT_SECRET.to_string(),
            admin_secret: crate::DEFAULT_SECRET.to_string(),
            nonce_key: [0; 32],
            replicas: 1,
            read_quorum: 1,
            write_quorum: 1,
            down_after_ms: 2_000,
            dead_after_ms: None,
            tick_ms: 100,
            recovery_ms: 0,
            lease_ms: 10_000,
        }
    }
}

/// What the manager knows of one storage node.
#[derive(Debug)]
struct NodeRecord {
    /// Its id, address, state and tokens, as the ring lists them.
    entry: NodeEntry,
    /// Keys it holds, from its last heartbeat.
    keys: u64,
    /// Its manager link, while open.
    conn: Option<ConnId>,
    /// When it was last heard from (or, for a node not heard from since the
    /// manager started, when the manager learned of it): its lease is over
    /// `lease_ms` after this (see `lease.rs`).
    last_seen: Millis,
    /// When it was last marked down.
    down_at: Millis,
    /// Marked down by failure detection since it last registered: it may have
    /// missed writes, and is told so when it registers again.
    missed: bool,
    /// Its heartbeats say it is catching up (see the storage node).
    catching_up: bool,
    /// Dropped while down (see [`super::tokens`]): `leaving` in the ring until
    /// its move settles, never waited for nor counted as a holder, its link
    /// closed and its address free for a new node.
    dropped: bool,
}

impl NodeRecord {
    /// A record for a node first heard from at `now`.
    fn new(entry: NodeEntry, now: Millis) -> NodeRecord {
        NodeRecord {
            entry,
            keys: 0,
            conn: None,
            last_seen: now,
            down_at: now,
            missed: false,
            catching_up: false,
            dropped: false,
        }
    }
}

pub use http::HTTP_LISTENER;
pub use lease::LEASE_MARGIN_MS;

/// The manager's whole state.
pub struct Manager {
    /// Boxed: the manager is one of the simulator's actors, kept small.
    cfg: Box<ManagerConfig>,
    epoch: u64,
    nodes: BTreeMap<u32, NodeRecord>,
    next_node_id: u32,
    next_client_id: u64,
    /// Round-robin position for HELLO's contact node.
    rr: usize,
    /// Member links: connection -> node id.
    links: crate::reactor::ConnMap<u32>,
    /// The epoch last pushed to the nodes.
    pushed_epoch: u64,
    /// The last epoch each node finished its handoff for.
    handoff_done: HashMap<u32, u64>,
    /// No membership change of our own yet: offered rings may be adopted.
    recovering: bool,
    /// The epoch of the newest ring adopted from a node (0: none).
    adopted: u64,
    /// Addresses of new nodes already told to wait for the recovery window
    /// (so each is logged once, not at every retry).
    turned_away: BTreeSet<String>,
    /// Links to close at the end of the step (members an adopted ring dropped).
    to_close: Vec<ConnId>,
    /// Leases to send at the end of the step: (link, the node's `SENT`).
    leases: Vec<(ConnId, u64)>,
    /// When the first input arrived: the recovery window counts from here.
    started: Option<Millis>,
    /// The time of the step being run.
    now: Millis,
    /// `AUTH` state (boxed: rarely touched, and it keeps `Manager` small).
    auth: Box<AuthState>,
    /// The HTTP listener's connections and the counters for `/metrics` (boxed:
    /// the manager's own fields stay small).
    http: Box<http::Web>,
}

/// Who proved the admin credential, and the nonces handed out for it.
struct AuthState {
    /// Where `AUTH` nonces come from.
    nonces: NonceSource,
    /// The nonce each connection was last challenged with, until it answers.
    challenges: HashMap<ConnId, Nonce>,
    /// Connections that proved the admin credential.
    admins: HashSet<ConnId>,
    /// Member handshakes answered and not yet proven: each connection's
    /// (manager nonce, node nonce), consumed by its `NODE_JOIN`.
    members: HashMap<ConnId, (Nonce, Nonce)>,
}

impl Manager {
    /// A manager with no members.
    pub fn new(cfg: ManagerConfig) -> Manager {
        let nonces = NonceSource::new(cfg.nonce_key);
        Manager {
            cfg: Box::new(cfg),
            epoch: 0,
            nodes: BTreeMap::new(),
            next_node_id: 1,
            next_client_id: 1,
            rr: 0,
            links: Default::default(),
            pushed_epoch: 0,
            handoff_done: HashMap::new(),
            recovering: true,
            adopted: 0,
            turned_away: BTreeSet::new(),
            to_close: Vec::new(),
            leases: Vec::new(),
            started: None,
            now: 0,
            auth: Box::new(AuthState {
                nonces,
                challenges: HashMap::new(),
                admins: HashSet::new(),
                members: HashMap::new(),
            }),
            http: Box::new(http::Web::new()),
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

    /// Every node's tokens, as (token, node id) points.
    fn points(&self) -> Vec<(u64, u32)> {
        self.nodes
            .values()
            .flat_map(|n| n.entry.tokens.iter().map(move |&t| (t, n.entry.id)))
            .collect()
    }

    /// The id of the node at `addr`, if the membership has one.
    fn id_at(&self, addr: &str) -> Option<u32> {
        self.nodes
            .values()
            .find(|n| n.entry.addr == addr && !n.dropped)
            .map(|n| n.entry.id)
    }
}
