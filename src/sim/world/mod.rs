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
//! (TCP's form of message loss); each end whose process lives gets `Closed`,
//! also when the other end's process is gone.
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
//! Files: this one holds the processes, the event queue and the dispatch of
//! outputs; `net.rs` the model of TCP, `faults.rs` the faults, `clients.rs` the
//! controls of the simulated clients, `trace.rs` the trace and fingerprint.
//!
//! Caveats: no output buffers, so the reactor's high/low-water backpressure and
//! its write caps are not modelled (`Hold` is); a connection's bytes are never
//! lost without a reset (TCP retransmits); a partition does not reset connections
//! unless asked to; a crash keeps the bytes that already left the process.

mod clients;
mod faults;
mod net;
mod trace;

use super::client::{Client, Stamp};
use super::rng::hash;
use crate::coordinator::Manager;
use crate::protocol;
use crate::reactor::{ConnBuf, ConnId, Input, Millis, Output, Service};
use crate::storage::durable::DurableNode;
use crate::storage::StorageNode;
use bytes::{Bytes, BytesMut};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::net::SocketAddr;
use trace::{brief_payload, TRACE_LINES};

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
    Node(Box<DurableNode>),
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
    Drained {
        proc: ProcId,
        life: u32,
        conn: ConnId,
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
            Ev::Drained { proc, life, conn } => {
                if self.procs[proc].life == life {
                    self.deliver(proc, Input::Drained { conn });
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

    fn lookup(&self, p: ProcId, conn: ConnId) -> Option<(u64, usize)> {
        self.procs[p].conns.get(&conn).copied()
    }

    /// Process `p` sends `frame` on `conn`: encoded, then carried as bytes.
    fn send_frame(&mut self, p: ProcId, conn: ConnId, frame: protocol::Frame) {
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

    /// Process `p` connects to `addr`: a SYN after a delay, or a refusal when
    /// no process listens there.
    fn connect(&mut self, p: ProcId, addr: std::net::SocketAddr, tag: u64) {
        let now = self.now;
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

    /// Carries out one output of process `p`.
    fn apply(&mut self, p: ProcId, out: Output) {
        let now = self.now;
        match out {
            Output::Send { conn, frame } => self.send_frame(p, conn, frame),
            Output::SendBytes { conn, bytes } => self.send_bytes(p, conn, bytes),
            Output::Raw { conn } => {
                if let Some((c, e)) = self.lookup(p, conn) {
                    self.conns.get_mut(&c).expect("listed").ends[e]
                        .buf
                        .set_raw();
                    self.at(now, Ev::Pump { conn: c, end: e });
                }
            }
            // The simulator has no output buffers: nothing piles up.
            Output::Yield { .. } => {}
            // Nor does output wait: it has drained at once.
            Output::WhenDrained { conn } => {
                let life = self.procs[p].life;
                self.at(
                    now,
                    Ev::Drained {
                        proc: p,
                        life,
                        conn,
                    },
                );
            }
            Output::Unread { conn, data } => {
                if let Some((c, e)) = self.lookup(p, conn) {
                    let end = &mut self.conns.get_mut(&c).expect("listed").ends[e];
                    end.buf.unread(data);
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
            Output::Connect { addr, tag } => self.connect(p, addr, tag),
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
                Input::Drained { conn } => format!("drained {conn}"),
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
    fn a_reset_after_the_peer_crashed_still_closes_the_live_end() {
        let (mut w, a, b, la, _lb) = world();
        let (ca, _) = connect(&mut w, a, b);
        take(&la);
        (w.net.min_delay, w.net.max_delay, w.net.slow_chance) = (5, 5, 0.0);
        // `b` crashes; its reset is in flight when the connection is reset
        // too, which loses it: the reset itself must reach `a`.
        w.crash(b);
        let c = w.connection_numbers()[0];
        w.reset(c);
        w.run_for(1_000);
        assert_eq!(take(&la), [format!("closed {ca}")]);
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
