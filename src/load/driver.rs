//! One thread's share of the load: a [`Service`] on the project's reactor that
//! owns some clients and their connections.
//!
//! Every connection is switched to raw mode as soon as it connects; the driver
//! writes requests with `SendBytes` and parses replies itself from `Data`. A
//! client keeps up to `--pipeline` requests in flight; each reply pops the
//! oldest pending request of its connection (replies come back in order) and
//! the client refills at once. Requests are appended to a per-connection buffer
//! during the turn and handed to the reactor once, at the end of the turn, so a
//! burst of pipelined requests leaves in one write.
//!
//! Partition-aware clients hold one connection per storage node and send each
//! request to the key's owner on the ring. When the manager publishes a new
//! ring, a client stops issuing until its requests in flight are answered and
//! its connections to any new node are up, then routes by the new ring: the
//! requests for one key never race each other on two connections.
//!
//! Phases: connect, load (warmup, then measured), drain (no new requests;
//! replies still count), verify (read back every key whose content is known),
//! done. A watchdog fails requests that get no reply for [`STALL_NS`].

use super::keys::{KeyBook, Known};
use super::rng::{Rng, Zipf};
use super::spec::{KeyDist, Op};
use super::stats::{Stats, Tick};
use super::wire::{self, Outcome, Proto, Space, Template, KEY_LEN};
use super::{Msg, Settings};
use crate::reactor::{ConnId, Input, Millis, Output, Service};
use crate::ring::Ring;
use bytes::{Buf, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Requests that get no reply for this long fail with `TIMEOUT` (and their
/// connection is closed, since a late reply would be matched to the wrong one).
pub const STALL_NS: u64 = 5_000_000_000;

/// Requests in flight per client during the verify phase (at least).
pub const VERIFY_PIPELINE: usize = 32;

/// A last progress tick shorter than this (the drain after a timed run) is not
/// reported on its own.
pub const MIN_LAST_TICK_NS: u64 = 250_000_000;

const TIMER_INIT: u64 = 0;
const TIMER_TICK: u64 = 1;
const TIMER_MEASURE: u64 = 2;
const TIMER_END: u64 = 3;

/// The latest ring the manager published, shared with every thread.
pub struct RingBoard {
    /// Its epoch (checked every turn without locking).
    pub epoch: AtomicU64,
    /// The ring.
    pub ring: Mutex<Arc<Ring>>,
}

/// How clients reach the target.
#[derive(Clone, Debug)]
pub enum Routing {
    /// One connection per storage node per client; requests go to the key's owner.
    Aware,
    /// Each client has one connection, to these addresses round-robin (label,
    /// address). With a ring board, shares are counted by the key's owner.
    Contacts(Vec<(String, SocketAddr)>),
}

/// What is shared, read-only, by every thread.
pub struct Shared {
    /// The settings.
    pub s: Settings,
    /// The protocol.
    pub proto: Proto,
    /// How to reach the target.
    pub routing: Routing,
    /// The manager's ring, when there is one.
    pub board: Option<Arc<RingBoard>>,
    /// Value lengths.
    pub sizes: Vec<usize>,
    /// The Zipf sampler, if keys are drawn by Zipf.
    pub zipf: Option<Zipf>,
    /// Encoded requests.
    pub templates: Templates,
    /// When the load started (every thread's clock).
    pub t0: Instant,
    /// Set by the main thread to stop everything.
    pub abort: AtomicBool,
}

/// Every request the run can send, encoded once.
pub struct Templates {
    get: Template,
    get_counter: Template,
    del: Template,
    incr: Template,
    ping: Template,
    put: Vec<Template>,
    create: Vec<Template>,
    update: Vec<Template>,
}

impl Templates {
    /// Encodes the requests of `proto`, with the value lengths `sizes` for the
    /// value-carrying ops of `mix`.
    pub fn new(proto: Proto, sizes: &[usize], mix: &super::Mix) -> Templates {
        let each = |op| {
            if !mix.contains(op) {
                return Vec::new();
            }
            sizes
                .iter()
                .map(|&n| Template::new(proto, op, Space::Data, n))
                .collect()
        };
        Templates {
            get: Template::new(proto, Op::Get, Space::Data, 0),
            get_counter: Template::new(proto, Op::Get, Space::Counter, 0),
            del: Template::new(proto, Op::Del, Space::Data, 0),
            incr: Template::new(proto, Op::Incr, Space::Counter, 0),
            ping: Template::new(proto, Op::Ping, Space::Data, 0),
            put: each(Op::Put),
            create: each(Op::Create),
            update: each(Op::Update),
        }
    }

    fn of(&self, op: Op, size: usize) -> &Template {
        match op {
            Op::Get => &self.get,
            Op::Put => &self.put[size],
            Op::Del => &self.del,
            Op::Incr => &self.incr,
            Op::Create => &self.create[size],
            Op::Update => &self.update[size],
            Op::Ping => &self.ping,
        }
    }
}

/// What the verify phase found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyCounts {
    /// Keys read back.
    pub checked: u64,
    /// Written, acknowledged, and now absent.
    pub missing: u64,
    /// Present with other bytes than the last acknowledged write.
    pub wrong: u64,
    /// Deleted (acknowledged), yet present.
    pub undeleted: u64,
    /// Could not be read back (an error reply, no connection).
    pub errors: u64,
    /// Inconsistencies seen live by a key's owner (see [`KeyBook::anomalies`]).
    pub anomalies: u64,
}

impl VerifyCounts {
    /// Adds another thread's counts.
    pub fn merge(&mut self, o: &VerifyCounts) {
        self.checked += o.checked;
        self.missing += o.missing;
        self.wrong += o.wrong;
        self.undeleted += o.undeleted;
        self.errors += o.errors;
        self.anomalies += o.anomalies;
    }

    /// Keys found lost or damaged.
    pub fn lost(&self) -> u64 {
        self.missing + self.wrong + self.undeleted + self.anomalies
    }
}

/// A thread's results.
pub struct ThreadResult {
    /// Counts of the measured phase.
    pub stats: Stats,
    /// What the verify phase found.
    pub verify: VerifyCounts,
    /// Connections that broke (closed or reset by the peer, a reply that did not
    /// parse, a stall) or could not be opened again.
    pub broken: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkState {
    Connecting,
    Up,
    Down,
}

struct Link {
    conn: Option<ConnId>,
    node: usize,
    client: usize,
    state: LinkState,
    rbuf: BytesMut,
    out: BytesMut,
    dirty: bool,
    pending: VecDeque<Pending>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Warmup,
    Measured,
    Verify(Space),
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    op: Op,
    kind: Kind,
    key: u32,
    counter: u32,
    share: u32,
    sent_ns: u64,
}

struct Client {
    global: u64,
    rng: Rng,
    /// Measured requests this client sends (`--requests`).
    quota: Option<u64>,
    /// Requests sent so far (all phases), for `--key-dist seq`.
    sent: u64,
    inflight: usize,
    /// Link per node index (Aware), or one link at index 0 (Contacts).
    links: Vec<Option<usize>>,
    ring: Option<Arc<Ring>>,
    dead: bool,
}

struct Node {
    label: String,
    addr: SocketAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Load,
    Verify,
    Done,
}

/// One thread's state machine.
pub struct Driver {
    sh: Arc<Shared>,
    thread: usize,
    tx: Sender<Msg>,
    clients: Vec<Client>,
    links: Vec<Link>,
    by_conn: HashMap<ConnId, usize>,
    nodes: Vec<Node>,
    node_of_id: HashMap<u32, usize>,
    latest: Option<Arc<Ring>>,
    phase: Phase,
    measuring: bool,
    stop_issuing: bool,
    measure_start_ns: u64,
    last_measured_ns: u64,
    last_reply_ns: u64,
    inflight: usize,
    book: Option<KeyBook>,
    stats: Stats,
    node_counts: Vec<u64>,
    tick: Tick,
    tick_start_ns: u64,
    ticking: bool,
    verify: VerifyCounts,
    /// Connections that broke (see [`ThreadResult::broken`]).
    broken: u64,
    verify_cursor: (Space, usize),
    verify_done: bool,
    dirty: Vec<usize>,
    /// Reactor milliseconds at `t0`.
    r0: i64,
    scratch: Vec<u8>,
}

impl Driver {
    /// The driver for thread `thread`, owning global clients `first..first + count`.
    /// With `--requests N`, client `c` sends the measured requests `c`, `c +
    /// clients`, ... below `N`.
    pub fn new(sh: Arc<Shared>, thread: usize, first: u64, count: u64, tx: Sender<Msg>) -> Driver {
        let s = &sh.s;
        let book = (s.verify && s.mix.writes())
            .then(|| KeyBook::new(s.keys, s.clients as u64, first, count));
        let all = s.clients as u64;
        let clients = (first..first + count)
            .map(|g| Client {
                global: g,
                rng: Rng::new(s.seed, g),
                quota: s.requests.map(|n| (n + all - 1 - g) / all),
                sent: 0,
                inflight: 0,
                links: Vec::new(),
                ring: None,
                dead: false,
            })
            .collect();
        let measuring = s.warmup_ns == 0;
        Driver {
            thread,
            tx,
            clients,
            links: Vec::new(),
            by_conn: HashMap::new(),
            nodes: Vec::new(),
            node_of_id: HashMap::new(),
            latest: None,
            phase: Phase::Connecting,
            measuring,
            stop_issuing: false,
            measure_start_ns: 0,
            last_measured_ns: 0,
            last_reply_ns: 0,
            inflight: 0,
            book,
            stats: Stats::default(),
            node_counts: Vec::new(),
            tick: Tick::new(1),
            tick_start_ns: 0,
            ticking: true,
            verify: VerifyCounts::default(),
            broken: 0,
            verify_cursor: (Space::Data, 0),
            verify_done: false,
            dirty: Vec::new(),
            r0: 0,
            scratch: Vec::new(),
            sh,
        }
    }

    fn now_ns(&self) -> u64 {
        self.sh.t0.elapsed().as_nanos() as u64
    }

    /// Reactor time for `ns` after `t0`.
    fn at(&self, ns: u64) -> Millis {
        (self.r0 + (ns / 1_000_000) as i64).max(0) as Millis
    }

    fn node_index(&mut self, label: String, addr: SocketAddr) -> usize {
        if let Some(i) = self.nodes.iter().position(|n| n.label == label) {
            return i;
        }
        self.nodes.push(Node { label, addr });
        self.node_counts.push(0);
        self.nodes.len() - 1
    }

    /// Adds the ring's nodes to the node table.
    fn learn_ring(&mut self, ring: &Ring) {
        for n in ring.nodes() {
            if self.node_of_id.contains_key(&n.id) {
                continue;
            }
            let Some(addr) = super::resolve(&n.addr).ok() else {
                log::warn!("node {} has an unusable address {}", n.id, n.addr);
                continue;
            };
            let i = self.node_index(format!("{} {}", n.id, n.addr), addr);
            self.node_of_id.insert(n.id, i);
        }
    }

    fn open_link(&mut self, client: usize, node: usize, out: &mut Vec<Output>) -> usize {
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

    fn init(&mut self, now: Millis, out: &mut Vec<Output>) {
        self.r0 = now as i64 - (self.now_ns() / 1_000_000) as i64;
        let sh = self.sh.clone();
        match &sh.routing {
            Routing::Aware => {
                let ring = sh
                    .board
                    .as_ref()
                    .expect("partition-aware routing has a ring")
                    .ring
                    .lock()
                    .expect("ring lock")
                    .clone();
                self.learn_ring(&ring);
                let serving = Arc::new(ring.serving());
                for c in 0..self.clients.len() {
                    for n in serving.nodes() {
                        let node = self.node_of_id[&n.id];
                        self.ensure_link(c, node, out);
                    }
                    self.clients[c].ring = Some(serving.clone());
                }
                self.latest = Some(serving);
            }
            Routing::Contacts(list) => {
                if let Some(b) = &sh.board {
                    let ring = b.ring.lock().expect("ring lock").clone();
                    self.learn_ring(&ring);
                    self.latest = Some(Arc::new(ring.serving()));
                }
                for c in 0..self.clients.len() {
                    let (label, addr) = &list[self.clients[c].global as usize % list.len()];
                    let node = self.node_index(label.clone(), *addr);
                    let l = self.open_link(c, node, out);
                    self.clients[c].links = vec![Some(l)];
                }
            }
        }
        let s = &self.sh.s;
        out.push(Output::Timer {
            at: self.at(1_000_000_000),
            id: TIMER_TICK,
        });
        if s.warmup_ns > 0 {
            out.push(Output::Timer {
                at: self.at(s.warmup_ns),
                id: TIMER_MEASURE,
            });
        }
        if let Some(d) = s.duration_ns {
            out.push(Output::Timer {
                at: self.at(s.warmup_ns + d),
                id: TIMER_END,
            });
        }
    }

    fn ensure_link(&mut self, c: usize, node: usize, out: &mut Vec<Output>) {
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
    fn check_board(&mut self, out: &mut Vec<Output>) {
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
    fn adopt(&mut self, c: usize) -> bool {
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
    fn route(&self, c: usize, space: Space, key: Option<u32>) -> Option<(usize, usize)> {
        let owner_of = |ring: &Ring, key: u32| {
            let mut kb = [0u8; KEY_LEN];
            wire::key_bytes(space, key, &mut kb);
            ring.owner(&kb)
        };
        let cl = &self.clients[c];
        let up = |l: &usize| self.links[*l].state == LinkState::Up;
        match self.sh.routing {
            Routing::Aware => {
                let ring = cl.ring.as_ref()?;
                let want = key
                    .and_then(|k| owner_of(ring, k))
                    .and_then(|id| self.node_of_id.get(&id))
                    .and_then(|&n| cl.links.get(n).copied().flatten())
                    .filter(up);
                let l = want.or_else(|| {
                    // No owner link (a ping, or the owner's link is down): any live one,
                    // rotating.
                    let n = cl.links.len();
                    (0..n)
                        .filter_map(|i| cl.links[(cl.inflight + i) % n])
                        .find(up)
                })?;
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

    fn push_request(&mut self, l: usize, t: &Template, key: u32, tag: &[u8; wire::TAG_LEN]) {
        let link = &mut self.links[l];
        t.emit(&mut link.out, key, tag);
        if !link.dirty {
            link.dirty = true;
            self.dirty.push(l);
        }
    }

    /// Issues load requests for client `c` until its pipeline is full.
    fn fill(&mut self, c: usize) {
        if self.phase == Phase::Verify {
            return self.fill_verify(c);
        }
        if self.phase != Phase::Load || !self.adopt(c) {
            return;
        }
        let sh = self.sh.clone();
        let s = &sh.s;
        let mut now = None;
        while self.clients[c].inflight < s.pipeline && !self.stop_issuing && !self.clients[c].dead {
            let measuring = self.measuring;
            let cl = &mut self.clients[c];
            if measuring && cl.quota == Some(0) {
                break;
            }
            let op = s.mix.pick(cl.rng.below(s.mix.total()));
            let mut key = match (&sh.zipf, s.key_dist) {
                (Some(z), _) => z.sample(&mut cl.rng),
                (None, KeyDist::Sequential) => (cl.global + cl.sent * s.clients as u64) % s.keys,
                (None, _) => cl.rng.below(s.keys),
            };
            cl.sent += 1;
            let mut counter = 1;
            if op.writes() {
                if let Some(book) = &mut self.book {
                    key = KeyBook::owned_key(s.keys, s.clients as u64, cl.global, key)
                        .expect("every client owns a key when verifying writes");
                    if op.has_value() {
                        counter = book.next_counter(key as u32);
                    }
                }
            }
            let key = key as u32;
            let space = wire::space_of(op);
            let Some((l, share)) = self.route(c, space, (op != Op::Ping).then_some(key)) else {
                self.clients[c].dead = true;
                break;
            };
            let size = wire::size_index(s.seed, key, counter, sh.sizes.len());
            let tag = if op.has_value() {
                wire::value_tag(s.seed, key, counter)
            } else {
                [0; wire::TAG_LEN]
            };
            self.push_request(l, sh.templates.of(op, size), key, &tag);
            let sent_ns = *now.get_or_insert_with(|| self.now_ns());
            let kind = if self.measuring {
                if let Some(q) = &mut self.clients[c].quota {
                    *q -= 1;
                }
                Kind::Measured
            } else {
                Kind::Warmup
            };
            self.links[l].pending.push_back(Pending {
                op,
                kind,
                key,
                counter,
                share: share as u32,
                sent_ns,
            });
            self.clients[c].inflight += 1;
            self.inflight += 1;
        }
    }

    /// The next key to verify, advancing the cursor.
    fn next_verify(&mut self) -> Option<(Space, u32)> {
        let book = self.book.as_ref()?;
        loop {
            let (space, slot) = self.verify_cursor;
            if slot >= book.slots() {
                if space == Space::Data {
                    self.verify_cursor = (Space::Counter, 0);
                    continue;
                }
                return None;
            }
            self.verify_cursor.1 += 1;
            if book.verifiable(space, slot) {
                if let Some(k) = book.key_of_slot(slot) {
                    return Some((space, k));
                }
            }
        }
    }

    fn fill_verify(&mut self, c: usize) {
        let sh = self.sh.clone();
        let depth = sh.s.pipeline.max(VERIFY_PIPELINE);
        while self.clients[c].inflight < depth {
            let Some((space, key)) = self.next_verify() else {
                self.verify_done = true;
                return;
            };
            let Some((l, share)) = self.route(c, space, Some(key)) else {
                self.verify.errors += 1;
                continue;
            };
            let t = match space {
                Space::Data => &sh.templates.get,
                Space::Counter => &sh.templates.get_counter,
            };
            self.push_request(l, t, key, &[0; wire::TAG_LEN]);
            self.links[l].pending.push_back(Pending {
                op: Op::Get,
                kind: Kind::Verify(space),
                key,
                counter: 0,
                share: share as u32,
                sent_ns: 0,
            });
            self.clients[c].inflight += 1;
            self.inflight += 1;
        }
    }

    /// Handles one reply (or a failure) to `p`; `value` is the reply's value bytes.
    fn complete(&mut self, c: usize, p: Pending, outcome: &Outcome, value: &[u8], now_ns: u64) {
        self.clients[c].inflight -= 1;
        self.inflight -= 1;
        self.last_reply_ns = now_ns;
        match p.kind {
            Kind::Verify(space) => self.check(space, p.key, outcome, value),
            Kind::Warmup | Kind::Measured => {
                if p.op.writes() {
                    self.record_write(&p, outcome);
                }
                let lat = now_ns.saturating_sub(p.sent_ns).max(1);
                let is_err = matches!(outcome, Outcome::Error(_));
                self.tick.requests += 1;
                self.tick.errors += u64::from(is_err);
                self.tick.latency.saturating_record(lat);
                if p.kind == Kind::Measured {
                    let st = &mut self.stats;
                    st.requests += 1;
                    st.latency.saturating_record(lat);
                    let oc = &mut st.ops[p.op.index()];
                    oc.requests += 1;
                    match outcome {
                        Outcome::Ok | Outcome::Value(_) | Outcome::Counter(_) => oc.hits += 1,
                        Outcome::Miss => oc.misses += 1,
                        Outcome::Conflict => oc.conflicts += 1,
                        Outcome::Error(code) => {
                            oc.errors += 1;
                            *st.errors.entry(code.clone()).or_default() += 1;
                        }
                    }
                    self.node_counts[p.share as usize] += 1;
                    self.last_measured_ns = now_ns;
                }
            }
        }
    }

    /// What an owner's acknowledged (or failed) write says its key now holds.
    fn record_write(&mut self, p: &Pending, outcome: &Outcome) {
        let Some(book) = &mut self.book else {
            return;
        };
        if p.op == Op::Incr {
            let next = match (book.count(p.key), outcome) {
                (before, Outcome::Counter(v)) => {
                    if before.is_some_and(|b| b.checked_add(1) != Some(*v)) {
                        book.anomalies += 1;
                    }
                    Some(*v)
                }
                (before, Outcome::Miss) => {
                    book.anomalies += u64::from(before.is_some());
                    None
                }
                _ => None,
            };
            book.set_count(p.key, next);
            return;
        }
        let before = book.known(p.key);
        let present = matches!(before, Known::Present(_));
        let absent = before == Known::Absent;
        let after = match (p.op, outcome) {
            (Op::Put, Outcome::Ok) => Known::Present(p.counter),
            (Op::Create, Outcome::Ok) => {
                book.anomalies += u64::from(present);
                Known::Present(p.counter)
            }
            (Op::Create, Outcome::Conflict) => {
                book.anomalies += u64::from(absent);
                before
            }
            (Op::Update, Outcome::Ok) => {
                book.anomalies += u64::from(absent);
                Known::Present(p.counter)
            }
            (Op::Update, Outcome::Miss) | (Op::Del, Outcome::Miss) => {
                book.anomalies += u64::from(present);
                Known::Absent
            }
            (Op::Del, Outcome::Ok) => {
                book.anomalies += u64::from(absent);
                Known::Absent
            }
            _ => Known::Unknown,
        };
        book.set(p.key, after);
    }

    /// Compares a read-back with what the key's owner knows.
    fn check(&mut self, space: Space, key: u32, outcome: &Outcome, value: &[u8]) {
        let Some(book) = &self.book else {
            return;
        };
        let v = &mut self.verify;
        v.checked += 1;
        match space {
            Space::Counter => {
                let want = book.count(key);
                match outcome {
                    Outcome::Value(_) => {
                        let got = crate::protocol::kv::parse_i64(value.trim_ascii_end());
                        if got != want {
                            v.wrong += 1;
                        }
                    }
                    Outcome::Miss => v.missing += 1,
                    _ => v.errors += 1,
                }
            }
            Space::Data => match (book.known(key), outcome) {
                (Known::Present(c), Outcome::Value(_)) => {
                    let s = &self.sh.s;
                    let len = self.sh.sizes[wire::size_index(s.seed, key, c, self.sh.sizes.len())];
                    wire::expected_value(s.seed, key, c, len, &mut self.scratch);
                    if value != &self.scratch[..] {
                        v.wrong += 1;
                    }
                }
                (Known::Present(_), Outcome::Miss) => v.missing += 1,
                (Known::Absent, Outcome::Miss) => {}
                (Known::Absent, Outcome::Value(_)) => v.undeleted += 1,
                _ => v.errors += 1,
            },
        }
    }

    /// Fails every request pending on link `l` with `code` and marks it down.
    fn fail_link(&mut self, l: usize, code: &str, out: &mut Vec<Output>) {
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

    fn on_data(&mut self, l: usize, data: BytesMut, out: &mut Vec<Output>) {
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

    fn on_down(&mut self, l: usize, out: &mut Vec<Output>) {
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

    fn send_tick(&mut self, now_ns: u64) {
        let next = Tick::new(self.tick.second + 1);
        let mut t = std::mem::replace(&mut self.tick, next);
        t.span_ns = now_ns.saturating_sub(self.tick_start_ns);
        // A tick is warmup if most of it was.
        let warm = if self.measuring {
            self.measure_start_ns.saturating_sub(self.tick_start_ns)
        } else {
            t.span_ns
        };
        t.warmup = warm * 2 > t.span_ns;
        self.tick_start_ns = now_ns;
        let _ = self.tx.send(Msg::Tick(self.thread, t));
    }

    /// Moves to the next phase when the current one is over.
    fn advance(&mut self, out: &mut Vec<Output>) {
        if self.phase == Phase::Load {
            let measuring = self.measuring;
            if self
                .clients
                .iter()
                .all(|c| c.dead || (measuring && c.quota == Some(0)))
            {
                self.stop_issuing = true;
            }
            if !self.stop_issuing || self.inflight > 0 {
                return;
            }
            let now = self.now_ns();
            self.stats.measured_ns = self.last_measured_ns.saturating_sub(self.measure_start_ns);
            if self.ticking {
                self.ticking = false;
                // The last, partial second: reported unless it is only the drain.
                let mut last = self.tick.second;
                if now.saturating_sub(self.tick_start_ns) >= MIN_LAST_TICK_NS {
                    self.send_tick(now);
                } else {
                    last -= 1;
                }
                let _ = self.tx.send(Msg::LoadDone(self.thread, last));
            }
            self.phase = Phase::Verify;
            self.last_reply_ns = now;
            self.verify_done = self.book.is_none();
            for c in 0..self.clients.len() {
                self.fill_verify(c);
            }
        }
        if self.phase == Phase::Verify && self.verify_done && self.inflight == 0 {
            self.finish(out);
        }
    }

    fn finish(&mut self, out: &mut Vec<Output>) {
        self.phase = Phase::Done;
        let mut stats = std::mem::take(&mut self.stats);
        for (i, n) in self.nodes.iter().enumerate() {
            if self.node_counts[i] > 0 {
                stats.nodes.insert(n.label.clone(), self.node_counts[i]);
            }
        }
        let mut verify = self.verify;
        verify.anomalies = self.book.as_ref().map_or(0, |b| b.anomalies);
        let _ = self.tx.send(Msg::Finished(
            self.thread,
            Box::new(ThreadResult {
                stats,
                verify,
                broken: self.broken,
            }),
        ));
        for link in &self.links {
            if let Some(conn) = link.conn {
                out.push(Output::Close { conn });
            }
        }
        out.push(Output::Stop);
    }

    fn fatal(&mut self, why: String, out: &mut Vec<Output>) {
        self.phase = Phase::Done;
        let _ = self.tx.send(Msg::Failed(self.thread, why));
        out.push(Output::Stop);
    }
}

impl Service for Driver {
    fn step(&mut self, now: Millis, input: Input, out: &mut Vec<Output>) {
        if self.phase == Phase::Done {
            return;
        }
        match input {
            Input::Timer { id: TIMER_INIT } => self.init(now, out),
            Input::Connected { conn, tag } => {
                let l = tag as usize;
                out.push(Output::Raw { conn });
                self.by_conn.insert(conn, l);
                self.links[l].conn = Some(conn);
                self.links[l].state = LinkState::Up;
                if self.phase == Phase::Connecting
                    && self.links.iter().all(|k| k.state == LinkState::Up)
                {
                    self.phase = Phase::Load;
                    let now_ns = self.now_ns();
                    self.tick_start_ns = now_ns;
                    self.last_reply_ns = now_ns;
                    if self.measuring {
                        self.measure_start_ns = now_ns;
                    }
                    for c in 0..self.clients.len() {
                        self.fill(c);
                    }
                    self.advance(out);
                } else if self.phase != Phase::Connecting {
                    self.fill(self.links[l].client);
                }
            }
            Input::ConnectFailed { tag } => {
                let l = tag as usize;
                let addr = self.nodes[self.links[l].node].addr;
                if self.phase == Phase::Connecting {
                    return self.fatal(format!("cannot connect to {addr}"), out);
                }
                log::warn!("cannot connect to {addr}");
                self.links[l].state = LinkState::Down;
                self.broken += 1;
                self.on_down(l, out);
                self.advance(out);
            }
            Input::Data { conn, data } => {
                if let Some(&l) = self.by_conn.get(&conn) {
                    if self.links[l].state == LinkState::Up {
                        self.on_data(l, data, out);
                        self.advance(out);
                    }
                }
            }
            Input::Eof { conn } | Input::Closed { conn } => {
                if let Some(&l) = self.by_conn.get(&conn) {
                    self.on_down(l, out);
                    self.advance(out);
                }
            }
            Input::Timer { id: TIMER_TICK } => {
                if self.sh.abort.load(Ordering::Relaxed) {
                    self.phase = Phase::Done;
                    out.push(Output::Stop);
                    return;
                }
                let now_ns = self.now_ns();
                if self.ticking && self.phase == Phase::Load {
                    self.send_tick(now_ns);
                }
                if self.inflight > 0 && now_ns.saturating_sub(self.last_reply_ns) > STALL_NS {
                    for l in 0..self.links.len() {
                        if !self.links[l].pending.is_empty() {
                            self.fail_link(l, "TIMEOUT", out);
                            self.on_down(l, out);
                        }
                    }
                }
                if self.phase == Phase::Connecting && now_ns > STALL_NS {
                    return self.fatal("connecting took over 5 s".into(), out);
                }
                // The tick just sent covered second `second - 1`; the next one ends
                // at `second` whole seconds after t0 (counted, not read off a clock
                // that could fire a millisecond early).
                let next = self.tick.second.max(now_ns / 1_000_000_000 + 1);
                out.push(Output::Timer {
                    at: self.at(next * 1_000_000_000),
                    id: TIMER_TICK,
                });
                self.advance(out);
            }
            Input::Timer { id: TIMER_MEASURE } => {
                self.measuring = true;
                self.measure_start_ns = self.now_ns();
                self.advance(out);
            }
            Input::Timer { id: TIMER_END } => {
                self.stop_issuing = true;
                self.advance(out);
            }
            _ => {}
        }
    }

    fn turn_end(&mut self, _now: Millis, out: &mut Vec<Output>) {
        if self.phase == Phase::Done {
            return;
        }
        if self.phase != Phase::Connecting {
            self.check_board(out);
        }
        for l in std::mem::take(&mut self.dirty) {
            let link = &mut self.links[l];
            link.dirty = false;
            if let (Some(conn), false) = (link.conn, link.out.is_empty()) {
                out.push(Output::SendBytes {
                    conn,
                    bytes: link.out.split().freeze(),
                });
            }
        }
    }
}
