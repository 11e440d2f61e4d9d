//! The simulated world: processes, virtual time, and a model of TCP between them.
//!
//! Every process is an [`Actor`] (the manager, a storage node, a simulated
//! client, or any other [`Service`]) with a `127.0.0.1:PORT` address that is never
//! bound. The world keeps a queue of events ordered by virtual time and drives the
//! actors exactly as the reactor does (see `src/reactor/mod.rs`):
//!
//! - `Output::Connect` reaches the target after a network delay. If the target is
//!   up (or paused: the kernel still accepts), it gets `Accepted { listener: 0 }`
//!   and the caller `Connected` one delay later; if it is crashed, exited or not
//!   listening the caller gets `ConnectFailed` (a reset); across a partition the
//!   connect fails after [`NetConfig::connect_timeout`].
//! - `Send` and `SendBytes` put bytes on the connection's direction, delivered in
//!   order after a random delay (so messages reorder across connections only),
//!   sometimes split in two pieces. Each end keeps the reactor's own
//!   [`ConnBuf`], so frames are cut out, held, and followed by `Eof` exactly as in
//!   the reactor, under the per-connection limit (`max_payload`, raised by
//!   `Output::Trust`; outbound connections start at the member limit): a broken
//!   stream surfaces as `FrameError`, after which nothing more is read.
//! - `Close` sends a FIN after the bytes already queued (at the end of the turn,
//!   as the reactor flushes first), discards input from then on, and removes the
//!   connection, with `Closed`, once the peer's FIN arrives or
//!   [`NetConfig::linger`] passes. The peer gets its frames, then `Eof`. Bytes
//!   that reach a connection whose owner already removed it get a reset back
//!   (peer: `Closed`), as TCP does.
//! - `Hold` stops delivery on a connection (bytes wait in its buffer), `Raw`
//!   switches it to `Input::Data`, `Timer` fires at its time (timers at the same
//!   instant fire in id order, after the I/O of that instant, like the reactor),
//!   `Stop` ends the process at the end of its turn (its connections send FIN).
//! - [`Service::turn_end`] is called once for every process that got inputs at an
//!   instant, after all of that instant's inputs.
//!
//! Faults: [`World::crash`] drops a process's state and resets its connections
//! (peers get `Closed` once the reset arrives); [`World::restart`] builds a fresh
//! actor from the process's factory and delivers timer 0, as `Reactor::run` does;
//! [`World::pause`] is SIGSTOP (inputs and timers wait, bytes queue up, connects
//! to it still complete); [`World::partition`] holds every byte across the cut
//! and fails connects across it, optionally resetting the cut connections after a
//! while; [`World::reset`] resets one connection and loses its bytes in flight
//! (TCP's form of message loss).
//!
//! Determinism: everything the world iterates is ordered (`BTreeMap`, vectors),
//! events at one instant are ordered by their content, not by when they were
//! queued, and each delay is a hash of the seed and *which* message it is
//! (connection, direction, sequence number), not a draw from a shared stream. The
//! services iterate `HashMap`s with per-process random order, which can change the
//! order of their outputs to different connections within one step; none of that
//! reaches the schedule, so a seed replays exactly. [`World::fingerprint`] hashes
//! every delivered input so tests can check that.
//!
//! Caveats: no output buffers, so the reactor's high/low-water backpressure and
//! its write caps are not modelled (`Hold` is); a connection's bytes are never
//! lost without a reset (TCP retransmits); a partition does not reset connections
//! unless asked to; a crash keeps the bytes that already left the process.

use super::client::{Client, Stamp};
use super::rng::hash;
use crate::coordinator::Manager;
use crate::protocol;
use crate::reactor::{ConnBuf, ConnId, Input, Marks, Millis, Output, Service, Signal};
use crate::storage::StorageNode;
use bytes::{Bytes, BytesMut};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::net::SocketAddr;

/// A process's index in the world.
pub type ProcId = usize;

/// Network tunables.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Smallest one-way delay, in ms.
    pub min_delay: Millis,
    /// Largest one-way delay for most messages, in ms.
    pub max_delay: Millis,
    /// Chance (0..1) that a message takes a slow path instead.
    pub slow_chance: f64,
    /// Largest delay of the slow path, in ms.
    pub slow_delay: Millis,
    /// Chance (0..1) that a message is split in two pieces that arrive apart.
    pub split_chance: f64,
    /// How long a connect across a partition takes to fail, in ms.
    pub connect_timeout: Millis,
    /// How long a closing connection waits for the peer's FIN, in ms.
    pub linger: Millis,
    /// Largest payload a server accepts from a client (the reactor's `max_payload`).
    pub max_payload: u32,
    /// Largest payload on outbound and trusted connections.
    pub member_max_payload: u32,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            min_delay: 1,
            max_delay: 10,
            slow_chance: 0.02,
            slow_delay: 200,
            split_chance: 0.1,
            connect_timeout: 1_000,
            linger: 2_000,
            max_payload: protocol::DEFAULT_MAX_PAYLOAD,
            member_max_payload: 1 << 30,
        }
    }
}

/// The logic a process runs.
pub enum Actor {
    /// The manager.
    Manager(Manager),
    /// A storage node (boxed: it is much larger than the others).
    Node(Box<StorageNode>),
    /// A simulated client.
    Client(Client),
    /// Anything else.
    Other(Box<dyn Service>),
}

impl Actor {
    fn service(&mut self) -> &mut dyn Service {
        match self {
            Actor::Manager(m) => m,
            Actor::Node(n) => n.as_mut(),
            Actor::Client(c) => c,
            Actor::Other(s) => s.as_mut(),
        }
    }
}

/// Builds a fresh actor for a (re)starting process.
pub type Factory = Box<dyn FnMut() -> Actor>;

/// Where a process stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcState {
    /// Running.
    Up,
    /// Stopped like SIGSTOP: nothing is delivered until it resumes.
    Paused,
    /// Crashed (state lost); may be restarted.
    Crashed,
    /// Exited by itself (`Output::Stop`); may be restarted.
    Exited,
}

/// One simulated process.
pub struct Proc {
    /// A name for traces (`manager`, `n3`, `c1`).
    pub name: String,
    /// Its address.
    pub addr: SocketAddr,
    /// Where it stands.
    pub state: ProcState,
    /// Whether it accepts connections.
    pub listens: bool,
    actor: Option<Actor>,
    factory: Factory,
    /// Bumped on every crash or exit: events of an earlier life are ignored.
    life: u32,
    /// Inputs waiting while paused.
    stalled: VecDeque<Input>,
    /// Its connections: id -> (connection number, end).
    conns: BTreeMap<ConnId, (u64, usize)>,
    /// Ends that asked to close this turn: their FIN leaves at the turn's end.
    fins: Vec<(u64, usize)>,
    stopping: bool,
    connects: u64,
}

impl Proc {
    /// The actor, if the process is alive.
    pub fn actor(&self) -> Option<&Actor> {
        self.actor.as_ref()
    }
}

#[derive(Clone, Debug)]
enum Chunk {
    Data(Bytes),
    Fin,
    Rst,
}

#[derive(Default)]
struct Pipe {
    chunks: VecDeque<(Millis, Chunk)>,
    sent: u64,
    last: Millis,
}

struct End {
    proc: ProcId,
    life: u32,
    id: ConnId,
    /// `Accepted` or `Connected` was handed to the process (maybe still queued
    /// while it is paused).
    told: bool,
    /// `Accepted` or `Connected` was delivered: frames may follow.
    announced: bool,
    /// Bytes received, limits, holds, end of stream and close, decided as the
    /// reactor decides them.
    buf: ConnBuf,
    rst_in: bool,
    fin_sent: bool,
    /// Removed from its process (closed, or the process died).
    gone: bool,
    rst_sent: bool,
    /// The caller's connect tag (end 0 only).
    tag: u64,
}

struct Conn {
    ends: [End; 2],
    /// `pipes[d]` carries bytes from `ends[d]` to the other end.
    pipes: [Pipe; 2],
}

/// What the queue holds. The derived order breaks ties inside one instant: I/O
/// first, timers last (by process, then id), as in a reactor turn.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Syn {
        from: ProcId,
        life: u32,
        tag: u64,
        to: ProcId,
        n: u64,
    },
    Refused {
        from: ProcId,
        life: u32,
        tag: u64,
    },
    Established {
        conn: u64,
    },
    Arrive {
        conn: u64,
        dir: usize,
    },
    Pump {
        conn: u64,
        end: usize,
    },
    Linger {
        conn: u64,
        end: usize,
    },
    Remove {
        conn: u64,
        end: usize,
    },
    CutReset {
        generation: u64,
    },
    Timer {
        proc: ProcId,
        life: u32,
        id: u64,
    },
}

/// The world: processes, connections, the event queue and the clock.
pub struct World {
    seed: u64,
    /// Network tunables.
    pub net: NetConfig,
    now: Millis,
    /// Inputs delivered so far (the second half of a [`Stamp`]).
    delivered: u64,
    procs: Vec<Proc>,
    by_addr: BTreeMap<SocketAddr, ProcId>,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    queue: BinaryHeap<Reverse<(Millis, Ev)>>,
    touched: BTreeSet<ProcId>,
    cuts: BTreeSet<(ProcId, ProcId)>,
    cut_generation: u64,
    fingerprint: u64,
    trace: Option<VecDeque<String>>,
    trace_lines: usize,
    scratch: Vec<Output>,
}

/// Lines of trace kept by default when tracing is on.
const TRACE_LINES: usize = 400;

impl World {
    /// An empty world whose randomness comes from `seed`.
    pub fn new(seed: u64, net: NetConfig) -> World {
        World {
            seed,
            net,
            now: 0,
            delivered: 0,
            procs: Vec::new(),
            by_addr: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            queue: BinaryHeap::new(),
            touched: BTreeSet::new(),
            cuts: BTreeSet::new(),
            cut_generation: 0,
            fingerprint: 0,
            trace: None,
            trace_lines: TRACE_LINES,
            scratch: Vec::new(),
        }
    }

    /// Keeps the last few hundred delivered inputs for [`World::trace`].
    pub fn enable_trace(&mut self) {
        self.enable_trace_lines(TRACE_LINES);
    }

    /// Keeps the last `lines` delivered inputs for [`World::trace`].
    pub fn enable_trace_lines(&mut self, lines: usize) {
        self.trace_lines = lines.max(1);
        self.trace = Some(VecDeque::new());
    }

    /// The last delivered inputs, one line each (empty unless enabled).
    pub fn trace(&self) -> Vec<String> {
        self.trace
            .as_ref()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The virtual time, in ms.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// The current point in the total order of events.
    pub fn stamp(&self) -> Stamp {
        (self.now, self.delivered)
    }

    /// A hash of every input delivered so far: equal for equal runs.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Adds a process and starts it (timer 0 at once, as `Reactor::run` does).
    pub fn spawn(
        &mut self,
        name: &str,
        addr: SocketAddr,
        listens: bool,
        mut factory: Factory,
    ) -> ProcId {
        assert!(!self.by_addr.contains_key(&addr), "{addr} is taken");
        let id = self.procs.len();
        let actor = factory();
        self.procs.push(Proc {
            name: name.to_string(),
            addr,
            state: ProcState::Up,
            listens,
            actor: Some(actor),
            factory,
            life: 0,
            stalled: VecDeque::new(),
            conns: BTreeMap::new(),
            fins: Vec::new(),
            stopping: false,
            connects: 0,
        });
        self.by_addr.insert(addr, id);
        self.at(
            self.now,
            Ev::Timer {
                proc: id,
                life: 0,
                id: 0,
            },
        );
        id
    }

    /// A process.
    pub fn proc(&self, id: ProcId) -> &Proc {
        &self.procs[id]
    }

    /// Every process, by id.
    pub fn procs(&self) -> &[Proc] {
        &self.procs
    }

    /// The process at `addr`.
    pub fn by_addr(&self, addr: SocketAddr) -> Option<ProcId> {
        self.by_addr.get(&addr).copied()
    }

    /// A client actor, if `id` is a live client.
    pub fn client(&self, id: ProcId) -> Option<&Client> {
        match self.procs[id].actor.as_ref() {
            Some(Actor::Client(c)) => Some(c),
            _ => None,
        }
    }

    /// Points client `id` at another server (takes effect at its next connect).
    pub fn client_retarget(&mut self, id: ProcId, target: SocketAddr) {
        if let Some(Actor::Client(c)) = self.procs[id].actor.as_mut() {
            if let Some(conn) = c.retarget(target) {
                self.inject(id, vec![Output::Close { conn }]);
            }
        }
    }

    /// Starts a request on client `id` now. Panics if `id` is not a live client.
    pub fn client_start(&mut self, id: ProcId, request: super::client::Request, key: Bytes) {
        let stamp = self.stamp();
        self.delivered += 1;
        let now = self.now;
        let mut out = std::mem::take(&mut self.scratch);
        match self.procs[id].actor.as_mut() {
            Some(Actor::Client(c)) => {
                c.clock = stamp;
                c.start(now, request, key, &mut out);
            }
            _ => panic!("process {id} is not a live client"),
        }
        for o in out.drain(..) {
            self.apply(id, o);
        }
        self.scratch = out;
        self.touched.insert(id);
        self.end_turn();
    }

    /// Carries out `outputs` as if process `p` had pushed them now (for tests).
    pub fn inject(&mut self, p: ProcId, outputs: Vec<Output>) {
        for o in outputs {
            self.apply(p, o);
        }
        self.touched.insert(p);
        self.end_turn();
    }

    /// Open connections (with at least one end still open).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    fn at(&mut self, t: Millis, ev: Ev) {
        self.queue.push(Reverse((t.max(self.now), ev)));
    }

    /// The delay of message `n` on direction `dir` of connection `conn`.
    fn delay(&self, kind: u64, a: u64, b: u64, n: u64) -> Millis {
        let h = hash(self.seed, &[kind, a, b, n]);
        let net = &self.net;
        let slow = (h >> 40) as f64 / (1u64 << 24) as f64 <= net.slow_chance;
        let (lo, hi) = if slow {
            (net.max_delay, net.slow_delay.max(net.max_delay))
        } else {
            (net.min_delay, net.max_delay.max(net.min_delay))
        };
        lo + (h & 0xff_ffff) % (hi - lo + 1)
    }

    fn is_cut(&self, a: ProcId, b: ProcId) -> bool {
        !self.cuts.is_empty() && self.cuts.contains(&(a.min(b), a.max(b)))
    }

    fn end_mut(&mut self, conn: u64, end: usize) -> Option<&mut End> {
        self.conns.get_mut(&conn).map(|c| &mut c.ends[end])
    }

    /// Runs until virtual time `t` (events at `t` included).
    pub fn run_until(&mut self, t: Millis) {
        while let Some(Reverse((at, _))) = self.queue.peek() {
            if *at > t {
                break;
            }
            self.step_instant();
        }
        self.now = self.now.max(t);
    }

    /// Runs for `ms` of virtual time.
    pub fn run_for(&mut self, ms: Millis) {
        self.run_until(self.now + ms);
    }

    /// Runs until `done` holds (checked after each instant) or `limit` ms pass;
    /// returns whether it held.
    pub fn run_while(&mut self, limit: Millis, mut done: impl FnMut(&World) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            match self.queue.peek() {
                Some(Reverse((at, _))) if *at <= end => self.step_instant(),
                _ => {
                    self.now = end;
                    return done(self);
                }
            }
        }
    }

    /// Processes every event of the next instant, then the turn ends.
    fn step_instant(&mut self) {
        let Some(Reverse((t, _))) = self.queue.peek() else {
            return;
        };
        self.now = *t;
        loop {
            while let Some(Reverse((at, _))) = self.queue.peek() {
                if *at != self.now {
                    break;
                }
                let Reverse((_, ev)) = self.queue.pop().expect("peeked");
                self.handle(ev);
            }
            if self.touched.is_empty() {
                break;
            }
            self.end_turn();
            match self.queue.peek() {
                Some(Reverse((at, _))) if *at == self.now => {}
                _ => break,
            }
        }
    }

    /// `turn_end` for every process touched this instant, then FINs and exits.
    fn end_turn(&mut self) {
        while let Some(p) = self.touched.pop_first() {
            if self.procs[p].state == ProcState::Up {
                let mut out = std::mem::take(&mut self.scratch);
                if let Some(a) = self.procs[p].actor.as_mut() {
                    a.service().turn_end(self.now, &mut out);
                }
                for o in out.drain(..) {
                    self.apply(p, o);
                }
                self.scratch = out;
            }
            for (conn, end) in std::mem::take(&mut self.procs[p].fins) {
                self.send_fin(conn, end);
            }
            if self.procs[p].stopping {
                self.exit(p, ProcState::Exited);
            }
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Timer { proc, life, id } => {
                if self.procs[proc].life == life {
                    self.deliver(proc, Input::Timer { id });
                }
            }
            Ev::Syn {
                from,
                life,
                tag,
                to,
                n,
            } => self.on_syn(from, life, tag, to, n),
            Ev::Refused { from, life, tag } => {
                if self.procs[from].life == life {
                    self.deliver(from, Input::ConnectFailed { tag });
                }
            }
            Ev::Established { conn } => {
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                let e = &c.ends[0];
                if e.gone || self.procs[e.proc].life != e.life {
                    return;
                }
                let (p, id, tag) = (e.proc, e.id, e.tag);
                self.deliver(p, Input::Connected { conn: id, tag });
            }
            Ev::Arrive { conn, dir } => self.on_arrive(conn, dir),
            Ev::Pump { conn, end } => self.pump(conn, end),
            Ev::Linger { conn, end } => {
                if self
                    .conns
                    .get(&conn)
                    .is_some_and(|c| c.ends[end].buf.closing() && !c.ends[end].gone)
                {
                    self.remove_end(conn, end, true);
                }
            }
            Ev::Remove { conn, end } => self.remove_end(conn, end, true),
            Ev::CutReset { generation } => {
                if generation == self.cut_generation {
                    let cut: Vec<u64> = self
                        .conns
                        .iter()
                        .filter(|(_, c)| self.is_cut(c.ends[0].proc, c.ends[1].proc))
                        .map(|(n, _)| *n)
                        .collect();
                    for n in cut {
                        self.reset(n);
                    }
                }
            }
        }
    }

    fn on_syn(&mut self, from: ProcId, life: u32, tag: u64, to: ProcId, n: u64) {
        if self.procs[from].life != life || self.procs[from].actor.is_none() {
            return;
        }
        let target = &self.procs[to];
        let refused = !target.listens
            || matches!(target.state, ProcState::Crashed | ProcState::Exited)
            || target.actor.is_none();
        if refused {
            let d = self.delay(1, from as u64, to as u64, n);
            self.at(self.now + d, Ev::Refused { from, life, tag });
            return;
        }
        if self.is_cut(from, to) {
            let t = self.now + self.net.connect_timeout;
            self.at(t, Ev::Refused { from, life, tag });
            return;
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        let idx = (conn * 2) as u32;
        let mk = |proc: ProcId, life: u32, id: ConnId, max_payload: u32| End {
            proc,
            life,
            id,
            told: false,
            announced: false,
            buf: ConnBuf::new(max_payload, Marks::NONE),
            rst_in: false,
            fin_sent: false,
            gone: false,
            rst_sent: false,
            tag,
        };
        let caller = mk(from, life, ConnId::new(idx, 1), self.net.member_max_payload);
        let callee = mk(
            to,
            self.procs[to].life,
            ConnId::new(idx + 1, 1),
            self.net.max_payload,
        );
        let (cid, tid) = (caller.id, callee.id);
        self.conns.insert(
            conn,
            Conn {
                ends: [caller, callee],
                pipes: [Pipe::default(), Pipe::default()],
            },
        );
        self.procs[from].conns.insert(cid, (conn, 0));
        self.procs[to].conns.insert(tid, (conn, 1));
        self.deliver(
            to,
            Input::Accepted {
                conn: tid,
                listener: 0,
            },
        );
        let d = self.delay(2, conn, 0, 0);
        self.at(self.now + d, Ev::Established { conn });
    }

    /// Steps process `p` with `input` now (or queues it while paused).
    fn deliver(&mut self, p: ProcId, input: Input) {
        if let Input::Accepted { conn, .. } | Input::Connected { conn, .. } = &input {
            if let Some(&(c, e)) = self.procs[p].conns.get(conn) {
                if let Some(end) = self.end_mut(c, e) {
                    end.told = true;
                }
            }
        }
        match self.procs[p].state {
            ProcState::Paused => {
                self.procs[p].stalled.push_back(input);
                return;
            }
            ProcState::Crashed | ProcState::Exited => return,
            ProcState::Up => {}
        }
        let announce = match &input {
            Input::Accepted { conn, .. } | Input::Connected { conn, .. } => {
                self.procs[p].conns.get(conn).copied()
            }
            _ => None,
        };
        if let Some((c, e)) = announce {
            if let Some(end) = self.end_mut(c, e) {
                end.announced = true;
            }
            self.at(self.now, Ev::Pump { conn: c, end: e });
        }
        self.delivered += 1;
        self.note(p, &input);
        let stamp = self.stamp();
        let now = self.now;
        let mut out = std::mem::take(&mut self.scratch);
        let Some(actor) = self.procs[p].actor.as_mut() else {
            return;
        };
        if let Actor::Client(c) = actor {
            c.clock = stamp;
        }
        actor.service().step(now, input, &mut out);
        self.touched.insert(p);
        for o in out.drain(..) {
            self.apply(p, o);
        }
        self.scratch = out;
    }

    /// Folds an input into the fingerprint (and the trace, if on).
    fn note(&mut self, p: ProcId, input: &Input) {
        let idx = |c: &ConnId| -> u64 {
            let s = c.to_string();
            s.bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
        };
        let (kind, a, b) = match input {
            Input::Accepted { conn, .. } => (1, idx(conn), 0),
            Input::Connected { conn, tag } => (2, idx(conn), *tag),
            Input::ConnectFailed { tag } => (3, *tag, 0),
            Input::Frame { conn, frame } => (
                4,
                idx(conn),
                (frame.op as u64) << 56 ^ frame.client_id << 24 ^ frame.payload.len() as u64,
            ),
            Input::FrameError { conn, .. } => (5, idx(conn), 0),
            Input::Data { conn, data } => (6, idx(conn), data.len() as u64),
            Input::Eof { conn } => (7, idx(conn), 0),
            Input::Closed { conn } => (8, idx(conn), 0),
            Input::Timer { id } => (9, *id, 0),
            Input::Signal(s) => (10, *s as u64, 0),
        };
        self.fingerprint = hash(self.fingerprint, &[self.now, p as u64, kind, a, b]);
        if let Some(t) = self.trace.as_mut() {
            let mut line = format!("{:>7} {:<8} {:?}", self.now, self.procs[p].name, input);
            line.truncate(200);
            if t.len() >= self.trace_lines {
                t.pop_front();
            }
            t.push_back(line);
        }
    }

    /// Adds `## text` to the trace (if on), for the driver's own notes.
    pub fn trace_note(&mut self, text: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            if t.len() >= self.trace_lines {
                t.pop_front();
            }
            t.push_back(format!("{:>7} ## {}", self.now, text()));
        }
    }

    /// Adds a line to the trace (if on): a fault, or a frame a process sent.
    fn trace_line(&mut self, line: impl FnOnce(&World) -> String) {
        if self.trace.is_none() {
            return;
        }
        let mut line = line(self);
        line.truncate(200);
        let t = self.trace.as_mut().expect("checked");
        if t.len() >= self.trace_lines {
            t.pop_front();
        }
        t.push_back(line);
    }

    /// The name of the process at the other end of `p`'s connection `conn`.
    fn peer_name(&self, p: ProcId, conn: ConnId) -> &str {
        match self.lookup(p, conn) {
            Some((c, e)) => &self.procs[self.conns[&c].ends[1 - e].proc].name,
            None => "?",
        }
    }

    fn lookup(&self, p: ProcId, conn: ConnId) -> Option<(u64, usize)> {
        self.procs[p].conns.get(&conn).copied()
    }

    /// Carries out one output of process `p`.
    fn apply(&mut self, p: ProcId, out: Output) {
        let now = self.now;
        match out {
            Output::Send { conn, frame } => {
                self.trace_line(|w| {
                    format!(
                        "{:>7} {:<8} => {} {} cid {} nid {} {}",
                        w.now,
                        w.procs[p].name,
                        w.peer_name(p, conn),
                        protocol::op::name(frame.op),
                        frame.client_id,
                        frame.node_id,
                        brief_payload(frame.op, &frame.payload)
                    )
                });
                let mut b = BytesMut::with_capacity(frame.wire_len());
                protocol::encode(
                    &mut b,
                    frame.op,
                    frame.client_id,
                    frame.node_id,
                    &frame.payload,
                );
                self.send_bytes(p, conn, b.freeze());
            }
            Output::SendBytes { conn, bytes } => self.send_bytes(p, conn, bytes),
            Output::Raw { conn } => {
                if let Some((c, e)) = self.lookup(p, conn) {
                    self.conns.get_mut(&c).expect("listed").ends[e]
                        .buf
                        .set_raw();
                    self.at(now, Ev::Pump { conn: c, end: e });
                }
            }
            Output::Close { conn } => {
                if let Some((c, e)) = self.lookup(p, conn) {
                    let end = &mut self.conns.get_mut(&c).expect("listed").ends[e];
                    if end.buf.close() {
                        self.procs[p].fins.push((c, e));
                        let t = now + self.net.linger;
                        self.at(t, Ev::Linger { conn: c, end: e });
                    }
                }
            }
            Output::Connect { addr, tag } => {
                self.trace_line(|w| {
                    format!(
                        "{:>7} {:<8} => connect {addr} tag {tag}",
                        w.now, w.procs[p].name
                    )
                });
                let proc = &mut self.procs[p];
                proc.connects += 1;
                let (n, life) = (proc.connects, proc.life);
                let d = self.delay(3, p as u64, tag, n);
                match self.by_addr.get(&addr).copied() {
                    Some(to) => self.at(
                        now + d,
                        Ev::Syn {
                            from: p,
                            life,
                            tag,
                            to,
                            n,
                        },
                    ),
                    None => self.at(now + d, Ev::Refused { from: p, life, tag }),
                }
            }
            Output::Timer { at, id } => {
                let life = self.procs[p].life;
                self.at(at, Ev::Timer { proc: p, life, id });
            }
            Output::Trust { conn } => {
                if let Some((c, e)) = self.lookup(p, conn) {
                    let max = self.net.member_max_payload;
                    self.conns.get_mut(&c).expect("listed").ends[e]
                        .buf
                        .set_max_payload(max);
                }
            }
            Output::Hold { conn, hold } => {
                if let Some((c, e)) = self.lookup(p, conn) {
                    self.conns.get_mut(&c).expect("listed").ends[e]
                        .buf
                        .set_held(hold);
                    if !hold {
                        self.at(now, Ev::Pump { conn: c, end: e });
                    }
                }
            }
            Output::Stop => self.procs[p].stopping = true,
        }
    }

    fn send_bytes(&mut self, p: ProcId, conn: ConnId, bytes: Bytes) {
        let Some((c, e)) = self.lookup(p, conn) else {
            return;
        };
        let end = &self.conns[&c].ends[e];
        if end.gone || end.fin_sent {
            return;
        }
        self.push_chunk(c, e, Chunk::Data(bytes));
    }

    /// Puts a chunk on direction `dir` of connection `c`, in order after the rest.
    fn push_chunk(&mut self, c: u64, dir: usize, chunk: Chunk) {
        let now = self.now;

        let n = self.conns[&c].pipes[dir].sent;
        let d = self.delay(4, c, dir as u64, n);
        let split = hash(self.seed, &[5, c, dir as u64, n]);
        let pipe = &mut self.conns.get_mut(&c).expect("caller checked").pipes[dir];
        pipe.sent += 1;
        let mut at = (now + d).max(pipe.last);
        match chunk {
            Chunk::Data(b)
                if b.len() >= 2
                    && (split >> 40) as f64 / (1u64 << 24) as f64 <= self.net.split_chance =>
            {
                let cut = 1 + (split as usize % (b.len() - 1));
                pipe.chunks.push_back((at, Chunk::Data(b.slice(..cut))));
                self.queue.push(Reverse((at, Ev::Arrive { conn: c, dir })));
                at += 1 + (split >> 20) % 20;
                pipe.chunks.push_back((at, Chunk::Data(b.slice(cut..))));
            }
            chunk => pipe.chunks.push_back((at, chunk)),
        }
        pipe.last = at;
        self.queue.push(Reverse((at, Ev::Arrive { conn: c, dir })));
    }

    fn send_fin(&mut self, c: u64, e: usize) {
        let Some(end) = self.end_mut(c, e) else {
            return;
        };
        if end.gone || end.fin_sent {
            return;
        }
        end.fin_sent = true;
        let fin_in = end.buf.eof_seen();
        self.push_chunk(c, e, Chunk::Fin);
        if fin_in {
            self.at(self.now, Ev::Remove { conn: c, end: e });
        }
    }

    fn on_arrive(&mut self, c: u64, dir: usize) {
        let r = 1 - dir;
        let Some(conn) = self.conns.get(&c) else {
            return;
        };
        if self.is_cut(conn.ends[dir].proc, conn.ends[r].proc) {
            return; // held until the partition heals
        }
        let now = self.now;
        let mut reply_rst = false;
        let conn = self.conns.get_mut(&c).expect("checked");
        while conn.pipes[dir]
            .chunks
            .front()
            .is_some_and(|(at, _)| *at <= now)
        {
            let (_, chunk) = conn.pipes[dir].chunks.pop_front().expect("checked");

            let end = &mut conn.ends[r];
            match chunk {
                Chunk::Data(b) => {
                    if end.gone {
                        if !end.rst_sent {
                            end.rst_sent = true;
                            reply_rst = true;
                        }
                    } else if !end.rst_in {
                        // After a reset nothing more is read: the bytes that
                        // were in flight when it happened are lost, so what the
                        // peer sent later would follow a gap in the stream.
                        end.buf.push_input(&b);
                    }
                }
                Chunk::Fin => end.buf.set_eof(),
                Chunk::Rst => end.rst_in = true,
            }
        }
        let gone = conn.ends[r].gone;
        if reply_rst && !conn.ends[dir].gone {
            self.push_chunk(c, r, Chunk::Rst);
        }
        if !gone {
            self.pump(c, r);
        }
    }

    /// Delivers what end `e` of connection `c` can take now.
    fn pump(&mut self, c: u64, e: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(&c) else {
                return;
            };
            let end = &mut conn.ends[e];
            if end.gone || !end.announced || self.procs[end.proc].state != ProcState::Up {
                return;
            }
            let (p, id) = (end.proc, end.id);
            if end.buf.closing() {
                if end.buf.eof_seen() && end.fin_sent {
                    self.remove_end(c, e, true);
                }
                return;
            }
            if end.buf.held() && !end.rst_in {
                return;
            }
            if let Some(input) = end.buf.next_input(id) {
                self.deliver(p, input);
                continue;
            }
            if end.rst_in {
                self.remove_end(c, e, true);
            } else if let Some(eof) = end.buf.take_eof(id) {
                self.deliver(p, eof);
            }
            return;
        }
    }

    /// Removes end `e` of connection `c` from its process, telling the process
    /// (`Closed`, or `ConnectFailed` if it never heard of the connection).
    fn remove_end(&mut self, c: u64, e: usize, notify: bool) {
        let Some(conn) = self.conns.get_mut(&c) else {
            return;
        };
        let end = &mut conn.ends[e];
        if end.gone {
            return;
        }
        end.gone = true;
        let (p, id, told, tag, life) = (end.proc, end.id, end.told, end.tag, end.life);
        let both = conn.ends[1 - e].gone;
        if both {
            self.conns.remove(&c);
        }
        if self.procs[p].life != life {
            return;
        }
        self.procs[p].conns.remove(&id);
        if notify {
            if told {
                self.deliver(p, Input::Closed { conn: id });
            } else if e == 0 {
                self.deliver(p, Input::ConnectFailed { tag });
            }
        }
    }

    /// The process dies: its connections close (FIN on exit, reset on a crash).
    fn exit(&mut self, p: ProcId, state: ProcState) {
        let conns = std::mem::take(&mut self.procs[p].conns);
        for (_, (c, e)) in conns {
            let Some(end) = self.end_mut(c, e) else {
                continue;
            };
            if end.gone {
                continue;
            }
            end.gone = true;
            let fin_sent = end.fin_sent;
            let other_gone = self.conns[&c].ends[1 - e].gone;
            if other_gone {
                self.conns.remove(&c);
                continue;
            }
            match state {
                ProcState::Exited if !fin_sent => self.push_chunk(c, e, Chunk::Fin),
                ProcState::Exited => {}
                _ => self.push_chunk(c, e, Chunk::Rst),
            }
        }
        let proc = &mut self.procs[p];
        proc.actor = None;
        proc.state = state;
        proc.life += 1;
        proc.stalled.clear();
        proc.fins.clear();
        proc.stopping = false;
        self.touched.remove(&p);
    }

    /// Crashes process `p`: its state is lost and its connections reset.
    pub fn crash(&mut self, p: ProcId) {
        self.trace_line(|w| format!("{:>7} ## crash {}", w.now, w.procs[p].name));
        if self.procs[p].actor.is_some() {
            self.exit(p, ProcState::Crashed);
        }
    }

    /// Restarts a crashed or exited process with a fresh actor from its factory.
    pub fn restart(&mut self, p: ProcId) {
        self.trace_line(|w| format!("{:>7} ## restart {}", w.now, w.procs[p].name));
        let proc = &mut self.procs[p];
        if proc.actor.is_some() {
            return;
        }
        proc.actor = Some((proc.factory)());
        proc.state = ProcState::Up;
        let life = proc.life;
        self.at(
            self.now,
            Ev::Timer {
                proc: p,
                life,
                id: 0,
            },
        );
    }

    /// Pauses process `p` (SIGSTOP).
    pub fn pause(&mut self, p: ProcId) {
        self.trace_line(|w| format!("{:>7} ## pause {}", w.now, w.procs[p].name));
        if self.procs[p].state == ProcState::Up {
            self.procs[p].state = ProcState::Paused;
        }
    }

    /// Resumes a paused process (SIGCONT): what waited is delivered now.
    pub fn resume(&mut self, p: ProcId) {
        self.trace_line(|w| format!("{:>7} ## resume {}", w.now, w.procs[p].name));
        if self.procs[p].state != ProcState::Paused {
            return;
        }
        self.procs[p].state = ProcState::Up;
        while let Some(input) = self.procs[p].stalled.pop_front() {
            self.deliver(p, input);
            if self.procs[p].state != ProcState::Up {
                break;
            }
        }
        let ends: Vec<(u64, usize)> = self.procs[p].conns.values().copied().collect();
        for (c, e) in ends {
            self.pump(c, e);
        }
        self.end_turn();
    }

    /// Delivers a signal to process `p` now.
    pub fn signal(&mut self, p: ProcId, sig: Signal) {
        self.deliver(p, Input::Signal(sig));
        self.end_turn();
    }

    /// Cuts the network between every two of `groups` (processes in no group keep
    /// talking to everyone). With `reset_after`, connections still cut after that
    /// many ms are reset, as TCP gives up retransmitting.
    pub fn partition(&mut self, groups: &[Vec<ProcId>], reset_after: Option<Millis>) {
        self.trace_line(|w| {
            let names: Vec<Vec<&str>> = groups
                .iter()
                .map(|g| g.iter().map(|&q| w.procs[q].name.as_str()).collect())
                .collect();
            format!("{:>7} ## partition {names:?} reset {reset_after:?}", w.now)
        });
        for (i, g) in groups.iter().enumerate() {
            for h in &groups[i + 1..] {
                for &a in g {
                    for &b in h {
                        if a != b {
                            self.cuts.insert((a.min(b), a.max(b)));
                        }
                    }
                }
            }
        }
        self.cut_generation += 1;
        if let Some(ms) = reset_after {
            let generation = self.cut_generation;
            self.at(self.now + ms, Ev::CutReset { generation });
        }
    }

    /// Whether any cut is in place.
    pub fn partitioned(&self) -> bool {
        !self.cuts.is_empty()
    }

    /// Removes every cut; held bytes flow again.
    pub fn heal(&mut self) {
        self.trace_line(|w| format!("{:>7} ## heal", w.now));
        self.cuts.clear();
        self.cut_generation += 1;
        let mut wake = Vec::new();
        for (&c, conn) in &self.conns {
            for dir in 0..2 {
                if let Some((at, _)) = conn.pipes[dir].chunks.front() {
                    wake.push((*at, c, dir));
                }
            }
        }
        for (at, conn, dir) in wake {
            self.at(at.max(self.now + 1), Ev::Arrive { conn, dir });
        }
    }

    /// Numbers of the live connections, for picking one to reset.
    pub fn connection_numbers(&self) -> Vec<u64> {
        self.conns.keys().copied().collect()
    }

    /// Resets every connection between processes `a` and `b`.
    pub fn reset_between(&mut self, a: ProcId, b: ProcId) {
        let between: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                let (x, y) = (c.ends[0].proc, c.ends[1].proc);
                (x, y) == (a, b) || (x, y) == (b, a)
            })
            .map(|(n, _)| *n)
            .collect();
        for c in between {
            self.reset(c);
        }
    }

    /// Resets connection `c`: bytes in flight are lost, both ends get `Closed`.
    pub fn reset(&mut self, c: u64) {
        let Some(conn) = self.conns.get(&c) else {
            return;
        };
        let (a, b) = (conn.ends[0].proc, conn.ends[1].proc);
        self.trace_line(|w| {
            let (a, b) = (&w.procs[a].name, &w.procs[b].name);
            format!("{:>7} ## reset connection {c} {a}-{b}", w.now)
        });
        let conn = self.conns.get_mut(&c).expect("checked");
        for p in conn.pipes.iter_mut() {
            p.chunks.clear();
        }
        for e in 0..2 {
            if !self.conns[&c].ends[e].gone {
                self.push_chunk(c, e, Chunk::Rst);
            }
        }
    }

    /// The live storage node of process `p`.
    pub fn node(&self, p: ProcId) -> Option<&StorageNode> {
        match self.procs[p].actor.as_ref() {
            Some(Actor::Node(n)) => Some(n),
            _ => None,
        }
    }

    /// The live manager of process `p`.
    pub fn manager(&self, p: ProcId) -> Option<&Manager> {
        match self.procs[p].actor.as_ref() {
            Some(Actor::Manager(m)) => Some(m),
            _ => None,
        }
    }

    /// Whether any event is queued.
    pub fn idle(&self) -> bool {
        self.queue.is_empty()
    }
}

/// A payload for the trace: a ring as `epoch E: id=state ...`, anything else
/// as escaped bytes.
fn brief_payload(op: u8, payload: &[u8]) -> String {
    if !matches!(op, protocol::op::RING_UPDATE | protocol::op::JOINED) {
        return format!("{:?}", Bytes::copy_from_slice(payload));
    }
    let text = String::from_utf8_lossy(payload);
    let mut out = String::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["epoch", e] => out.push_str(&format!("epoch {e}:")),
            ["node", id, _addr, state, ..] => out.push_str(&format!(" {id}={state}")),
            [id] if out.is_empty() => out.push_str(&format!("id {id} ")),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Frame;
    use std::cell::RefCell;
    use std::rc::Rc;

    type Log = Rc<RefCell<Vec<String>>>;

    /// Records every input in a shared log, one short line each.
    struct Probe(Log);

    impl Service for Probe {
        fn step(&mut self, _now: Millis, input: Input, _out: &mut Vec<Output>) {
            let line = match input {
                Input::Accepted { conn, .. } => format!("accepted {conn}"),
                Input::Connected { conn, tag } => format!("connected {conn} tag {tag}"),
                Input::ConnectFailed { tag } => format!("failed tag {tag}"),
                Input::Frame { conn, frame } => {
                    format!("frame {conn} {}", String::from_utf8_lossy(&frame.payload))
                }
                Input::FrameError { conn, error, .. } => format!("error {conn} {:?}", error.code),
                Input::Data { conn, data } => format!("data {conn} {}", data.len()),
                Input::Eof { conn } => format!("eof {conn}"),
                Input::Closed { conn } => format!("closed {conn}"),
                Input::Timer { id } => format!("timer {id}"),
                Input::Signal(s) => format!("signal {s:?}"),
            };
            self.0.borrow_mut().push(line);
        }
    }

    fn world() -> (World, ProcId, ProcId, Log, Log) {
        let mut w = World::new(3, NetConfig::default());
        let (la, lb): (Log, Log) = Default::default();
        let (ca, cb) = (la.clone(), lb.clone());
        let a = w.spawn(
            "a",
            "127.0.0.1:1".parse().unwrap(),
            true,
            Box::new(move || Actor::Other(Box::new(Probe(ca.clone())))),
        );
        let b = w.spawn(
            "b",
            "127.0.0.1:2".parse().unwrap(),
            true,
            Box::new(move || Actor::Other(Box::new(Probe(cb.clone())))),
        );
        w.run_for(1);
        (w, a, b, la, lb)
    }

    fn take(l: &Log) -> Vec<String> {
        std::mem::take(&mut *l.borrow_mut())
    }

    fn connect(w: &mut World, a: ProcId, b: ProcId) -> (ConnId, ConnId) {
        let addr = w.proc(b).addr;
        w.inject(a, vec![Output::Connect { addr, tag: 9 }]);
        w.run_for(500);
        let ca = *w.procs[a].conns.keys().next().unwrap();
        let cb = *w.procs[b].conns.keys().next().unwrap();
        (ca, cb)
    }

    fn send(conn: ConnId, text: &str) -> Output {
        Output::Send {
            conn,
            frame: Frame::new(11, 1, 0, text.to_string()),
        }
    }

    #[test]
    fn frames_in_order_then_eof_then_closed_on_both_sides() {
        let (mut w, a, b, la, lb) = world();
        assert_eq!(take(&la), ["timer 0"]);
        assert_eq!(take(&lb), ["timer 0"]);
        let (ca, cb) = connect(&mut w, a, b);
        assert_eq!(take(&la), [format!("connected {ca} tag 9")]);
        let msgs: Vec<Output> = (0..50).map(|i| send(ca, &format!("m{i}"))).collect();
        w.inject(a, msgs);
        w.inject(a, vec![Output::Close { conn: ca }]);
        w.run_for(1_000);
        let got = take(&lb);
        assert_eq!(got[0], format!("accepted {cb}"));
        let frames: Vec<String> = (0..50).map(|i| format!("frame {cb} m{i}")).collect();
        assert_eq!(got[1..51], frames[..]);
        assert_eq!(got[51..], [format!("eof {cb}")]);
        assert!(take(&la).is_empty(), "a waits for b's FIN (linger)");
        w.inject(b, vec![Output::Close { conn: cb }]);
        w.run_for(1_000);
        assert_eq!(take(&la), [format!("closed {ca}")]);
        assert_eq!(take(&lb), [format!("closed {cb}")]);
        assert_eq!(w.connections(), 0);
    }

    #[test]
    fn a_broken_stream_is_a_frame_error_and_nothing_more() {
        let (mut w, a, b, _la, lb) = world();
        let (ca, cb) = connect(&mut w, a, b);
        take(&lb);
        w.inject(
            a,
            vec![
                send(ca, "ok"),
                Output::SendBytes {
                    conn: ca,
                    bytes: Bytes::from_static(b"11 x 0 1\n"),
                },
                send(ca, "never"),
            ],
        );
        w.run_for(1_000);
        assert_eq!(
            take(&lb),
            [format!("frame {cb} ok"), format!("error {cb} BadFrame")]
        );
    }

    #[test]
    fn connects_fail_when_nobody_listens_and_crashes_reset() {
        let (mut w, a, b, la, lb) = world();
        w.inject(
            a,
            vec![Output::Connect {
                addr: "127.0.0.1:3".parse().unwrap(),
                tag: 4,
            }],
        );
        w.run_for(100);
        assert_eq!(take(&la)[1..], ["failed tag 4".to_string()]);
        let (ca, _) = connect(&mut w, a, b);
        take(&la);
        w.crash(b);
        w.run_for(100);
        assert_eq!(take(&la), [format!("closed {ca}")]);
        w.inject(
            a,
            vec![Output::Connect {
                addr: w.proc(b).addr,
                tag: 5,
            }],
        );
        w.run_for(100);
        assert_eq!(take(&la), ["failed tag 5"]);
        take(&lb);
        w.restart(b);
        w.run_for(1);
        assert_eq!(take(&lb), ["timer 0"]);
    }

    #[test]
    fn nothing_sent_after_a_reset_is_read_past_the_gap() {
        let (mut w, a, b, _la, lb) = world();
        let (ca, cb) = connect(&mut w, a, b);
        take(&lb);
        // Every message takes 5 ms: what `a` sends after the reset arrives in
        // the same instant as the reset.
        (w.net.min_delay, w.net.max_delay, w.net.slow_chance) = (5, 5, 0.0);
        w.net.split_chance = 0.0;
        w.inject(a, vec![send(ca, "lost")]);
        let c = w.connection_numbers()[0];
        w.reset(c);
        // `a` has not heard of the reset yet and goes on sending.
        w.inject(a, vec![send(ca, "after")]);
        w.run_for(1_000);
        assert_eq!(take(&lb), [format!("closed {cb}")]);
    }

    #[test]
    fn partitions_hold_bytes_and_pauses_hold_everything() {
        let (mut w, a, b, la, lb) = world();
        let (ca, cb) = connect(&mut w, a, b);
        take(&la);
        take(&lb);
        w.partition(&[vec![a], vec![b]], None);
        w.inject(a, vec![send(ca, "held")]);
        w.run_for(5_000);
        assert!(take(&lb).is_empty());
        w.inject(
            a,
            vec![Output::Connect {
                addr: w.proc(b).addr,
                tag: 6,
            }],
        );
        w.run_for(999);
        assert!(take(&la).is_empty());
        w.run_for(100);
        assert_eq!(take(&la), ["failed tag 6"]);
        w.heal();
        w.run_for(100);
        assert_eq!(take(&lb), [format!("frame {cb} held")]);

        w.pause(b);
        let t = w.now();
        w.inject(b, vec![Output::Timer { at: t + 10, id: 77 }]);
        w.inject(a, vec![send(ca, "later")]);
        w.run_for(3_000);
        assert!(take(&lb).is_empty());
        w.resume(b);
        assert_eq!(
            take(&lb),
            ["timer 77".to_string(), format!("frame {cb} later")]
        );
    }
}
