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
//! Redis Cluster clients likewise hold one connection per master and send each
//! request to the master of its key's slot, by the thread's copy of the slot
//! map. A `-MOVED` reply corrects the map and sends the request again to the
//! node named; `-ASK` sends it again once, after `ASKING`, without touching the
//! map. The request keeps its first send time, so its latency includes the
//! detour; after [`MAX_REDIRECTS`] hops it fails with the redirect's code.
//!
//! Phases: connect, load (warmup, then measured), drain (no new requests;
//! replies still count), verify (read back every key whose content is known),
//! done. A watchdog fails requests that get no reply for [`STALL_NS`].
//!
//! This file holds the phases, issuing and completing requests; `links.rs` the
//! connections and routing, `slots.rs` Redis Cluster's slot map and redirects,
//! `verify.rs` what the driver knows of its keys and the verify phase.

mod auth;
mod links;
mod slots;
mod verify;

pub use verify::VerifyCounts;

use super::cluster::SlotMap;
use super::keys::KeyBook;
use super::rng::{Rng, Zipf};
use super::spec::{KeyDist, Op};
use super::stats::{Stats, Tick};
use super::wire::{self, Outcome, Proto, Space, Template};
use super::{Msg, Settings};
use crate::reactor::{ConnId, Input, Millis, Output, Service};
use crate::ring::Ring;
use bytes::BytesMut;
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

/// Redirects one request may follow before it fails.
pub const MAX_REDIRECTS: u8 = 5;

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
    /// Redis Cluster: one connection per master per client; requests go to the
    /// master of the key's slot ([`Shared::slots`]).
    Slots,
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
    /// The Redis Cluster slot map at the start (with [`Routing::Slots`]).
    pub slots: Option<Arc<SlotMap>>,
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
    /// Connected, proving the client password (see `auth.rs`).
    Authing,
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
    /// The `ASKING` before a request sent on after `-ASK`: not counted.
    Asking,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    op: Op,
    kind: Kind,
    key: u32,
    counter: u32,
    share: u32,
    sent_ns: u64,
    /// Redirects followed so far.
    hops: u8,
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
    by_conn: crate::reactor::ConnMap<usize>,
    nodes: Vec<Node>,
    node_of_id: HashMap<u32, usize>,
    /// Redis Cluster: per slot, the node index of its master (or `SlotMap::NONE`).
    slots: Vec<u16>,
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
            by_conn: Default::default(),
            nodes: Vec::new(),
            node_of_id: HashMap::new(),
            slots: Vec::new(),
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
            Routing::Slots => self.init_slots(out),
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
                hops: 0,
            });
            self.clients[c].inflight += 1;
            self.inflight += 1;
        }
    }

    /// Handles one reply (or a failure) to `p`; `value` is the reply's value bytes.
    fn complete(&mut self, c: usize, p: Pending, outcome: &Outcome, value: &[u8], now_ns: u64) {
        if p.kind == Kind::Asking {
            return;
        }
        self.clients[c].inflight -= 1;
        self.inflight -= 1;
        self.last_reply_ns = now_ns;
        match p.kind {
            Kind::Verify(space) => self.check(space, p.key, outcome, value),
            Kind::Asking => {}
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

    /// Link `l` is connected (and proved the client password, if one is set).
    fn link_up(&mut self, l: usize, out: &mut Vec<Output>) {
        self.links[l].state = LinkState::Up;
        // Requests redirected here while it connected.
        if !self.links[l].out.is_empty() && !self.links[l].dirty {
            self.links[l].dirty = true;
            self.dirty.push(l);
        }
        if self.phase == Phase::Connecting && self.links.iter().all(|k| k.state == LinkState::Up) {
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
                if !self.start_auth(l, conn, out) {
                    self.link_up(l, out);
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
                    match self.links[l].state {
                        LinkState::Up => {
                            self.on_data(l, data, out);
                            self.advance(out);
                        }
                        LinkState::Authing => self.on_auth_data(l, conn, data, out),
                        _ => {}
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
