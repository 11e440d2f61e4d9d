//! The event loop: one thread, one `mio::Poll`, connections in a `slab::Slab`.
//!
//! The reactor does all I/O and owns the clock; the logic it serves is a
//! [`Service`], a state machine that takes one [`Input`] at a time and answers with
//! [`Output`]s. The reactor knows frames (it cuts them out of the byte stream) but
//! nothing of the store.
//!
//! One turn of the loop, in the style of redis' `ae.c`:
//!
//! 1. Poll, with the next timer deadline as the timeout (zero if work is pending).
//! 2. For each event: accept, finish a non-blocking connect, read, or write.
//!    Reads go into a per-connection `BytesMut`; whole frames are cut out and handed
//!    to the service one by one. Replies are appended to the connection's output
//!    buffer, not written.
//! 3. Revisit the pending list: connections whose read budget ran out this turn or
//!    that were just unpaused. mio is edge-triggered, so a connection that still has
//!    data in its socket will get no new event and must be revisited by us.
//! 4. Fire due timers.
//! 5. Flush every connection with pending output, once: a burst of pipelined replies
//!    leaves in one syscall. At most [`Config::write_cap`] bytes per connection per
//!    turn; `WRITABLE` interest is registered only while output is left over.
//! 6. Close connections that finished closing, at the end of the turn, never in the
//!    middle of a dispatch (slab keys are reused, and each [`ConnId`] carries a
//!    generation so a stale id never reaches a new connection).
//!
//! Each connection's buffers and flow state are a [`ConnBuf`] (`conn.rs`), the
//! same type the simulator drives, so both decide alike when a frame, a framing
//! error or `Eof` is handed over, when input stops, and when a close may proceed.
//! Accepting, dialing and dropping connections are in `connections.rs`.
//!
//! Backpressure: when a connection's pending output passes [`Config::high_water`],
//! the reactor stops reading from it, and stops handing over what it already read,
//! at the next frame (a raw connection's service gives back the commands it did
//! not serve with `Output::Unread`), until the output drains below
//! [`Config::low_water`]. A client that pipelines forever and never reads
//! therefore costs at most the high-water mark plus the replies of one request.
//! Output that arrives for a connection after it paused (answers to requests
//! forwarded to other nodes before the pause) is bounded by a hard limit,
//! [`Config::output_limit`]: a client connection with more queued is dropped, as
//! redis drops a client past its `client-output-buffer-limit`. Proven members
//! (`Output::Trust`) have no hard limit. A service streaming a long reply asks
//! with `Output::WhenDrained` after each piece and sends the next on
//! `Input::Drained`, once the output is at or below [`Config::low_water`].
//!
//! Fairness: one connection gets at most [`Config::read_budget`] bytes read and
//! [`Config::turn_output`] bytes of replies produced per turn before the others
//! get a go (it is revisited next turn, after the flush), and at most
//! [`Config::write_cap`] bytes written.
//!
//! Closing: `Output::Close` flushes what is pending, shuts down the write side, then
//! reads and discards until the peer closes or [`Config::linger`] passes. Closing a
//! socket with unread input makes the kernel send a reset, which could destroy an
//! `ERR` reply before the peer reads it; draining first avoids that.
//!
//! Caveats: address resolution is the caller's job (outputs carry `SocketAddr`s);
//! timers cannot be cancelled, so services ignore timer ids they no longer expect.

mod config;
mod conn;
mod connections;
pub mod link;
mod service;

pub use config::Config;
pub use conn::{ConnBuf, Marks};
pub use service::{reply_error, ConnId, ConnMap, IdHasher, Input, Millis, Output, Service, Signal};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Non-blocking connect in flight.
    Connecting(u64),
    /// Reading and writing.
    Open,
    /// Flushing before shutdown; no more reads.
    Closing,
    /// Write side shut; discarding input until EOF or the deadline.
    Draining(Millis),
}

struct Conn {
    stream: TcpStream,
    gen: u32,
    phase: Phase,
    buf: ConnBuf,
    writable_registered: bool,
    /// The service asked for `Input::Drained` (`Output::WhenDrained`).
    notify_drained: bool,
}

enum Entry {
    Listener(TcpListener, usize),
    Conn(Box<Conn>),
}

/// A connection by id, borrowing only the slab (so other fields stay usable).
fn conn_in(entries: &mut Slab<Entry>, id: ConnId) -> Option<&mut Conn> {
    match entries.get_mut(id.idx as usize) {
        Some(Entry::Conn(c)) if c.gen == id.gen => Some(c),
        _ => None,
    }
}

const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);

/// The event loop.
pub struct Reactor {
    poll: Poll,
    entries: Slab<Entry>,
    next_gen: u32,
    listeners: usize,
    timers: BinaryHeap<Reverse<(Millis, u64)>>,
    start: Instant,
    /// The clock as last read ([`Reactor::now`]): read once after each poll, for
    /// the timers and at the turn's end, and carried by every input delivered
    /// in between (a clock read per frame cost more than the frame's dispatch).
    clock: Millis,
    cfg: Config,
    outputs: Vec<Output>,
    deferred: VecDeque<Input>,
    dirty: Vec<ConnId>,
    pending: Vec<ConnId>,
    /// Connections whose output drained as their service asked: told next turn.
    drained: Vec<ConnId>,
    draining: Vec<ConnId>,
    to_remove: Vec<ConnId>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    stopping: bool,
    /// Where sockets are read into before the bytes are appended to a connection's
    /// buffer: zero-filled once and reused, so a read does not zero a fresh chunk
    /// of the connection's buffer first (safe Rust cannot read into uninitialized
    /// memory). Grows to the largest read asked for (at most the read budget).
    scratch: Vec<u8>,
    /// Socket reads made (test builds: the tests count them per request).
    #[cfg(test)]
    socket_reads: u64,
}

impl Reactor {
    /// A reactor with the given tunables.
    pub fn new(cfg: Config) -> io::Result<Reactor> {
        Ok(Reactor {
            poll: Poll::new()?,
            entries: Slab::with_capacity(1024),
            next_gen: 1,
            listeners: 0,
            timers: BinaryHeap::new(),
            start: Instant::now(),
            clock: 0,
            cfg,
            outputs: Vec::with_capacity(64),
            deferred: VecDeque::new(),
            dirty: Vec::new(),
            pending: Vec::new(),
            drained: Vec::new(),
            draining: Vec::new(),
            to_remove: Vec::new(),
            signals: None,
            stopping: false,
            scratch: Vec::new(),
            #[cfg(test)]
            socket_reads: 0,
        })
    }

    /// Binds a listener on `addr` (mio's bind: `SO_REUSEADDR` and a backlog of
    /// 1024, so a burst of connects is not dropped); returns its index (as reported
    /// in `Input::Accepted`) and the address it is bound to.
    pub fn bind(&mut self, addr: SocketAddr) -> io::Result<(usize, SocketAddr)> {
        let l = TcpListener::bind(addr)?;
        let local = l.local_addr()?;
        Ok((self.add_listener(l)?, local))
    }

    /// Adds a bound listener; returns its index (as reported in `Input::Accepted`).
    pub fn listen(&mut self, listener: std::net::TcpListener) -> io::Result<usize> {
        listener.set_nonblocking(true)?;
        self.add_listener(TcpListener::from_std(listener))
    }

    fn add_listener(&mut self, mut l: TcpListener) -> io::Result<usize> {
        let index = self.listeners;
        let entry = self.entries.vacant_entry();
        self.poll
            .registry()
            .register(&mut l, Token(entry.key()), Interest::READABLE)?;
        entry.insert(Entry::Listener(l, index));
        self.listeners += 1;
        Ok(index)
    }

    /// Delivers SIGTERM and SIGINT as `Input::Signal` instead of killing the process.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut s = signal_hook_mio::v1_0::Signals::new([SIGTERM, SIGINT])?;
        self.poll
            .registry()
            .register(&mut s, SIGNAL_TOKEN, Interest::READABLE)?;
        self.signals = Some(s);
        Ok(())
    }

    /// Reads the clock (and keeps it for the inputs delivered until the next read).
    fn now(&mut self) -> Millis {
        self.clock = self.start.elapsed().as_millis() as Millis;
        self.clock
    }

    /// Runs until the service outputs `Stop`. `init` is delivered first, as a timer
    /// with id 0, so the service can start its connects and timers.
    pub fn run<S: Service>(&mut self, svc: &mut S) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        self.deliver(svc, Input::Timer { id: 0 });
        loop {
            let now = self.now();
            if self.stopping && self.dirty.is_empty() {
                return Ok(());
            }
            let busy = !self.pending.is_empty() || !self.dirty.is_empty();
            let timeout = if busy || !self.drained.is_empty() {
                Some(Duration::ZERO)
            } else {
                let t = self.timers.peek().map(|Reverse((at, _))| *at);
                let d = self.draining_deadline();
                match (t, d) {
                    (None, None) => None,
                    (a, b) => {
                        let at = a.unwrap_or(Millis::MAX).min(b.unwrap_or(Millis::MAX));
                        Some(Duration::from_millis(at.saturating_sub(now)))
                    }
                }
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.now();
            for ev in events.iter() {
                let token = ev.token();
                if token == SIGNAL_TOKEN {
                    self.on_signals(svc);
                    continue;
                }
                match self.entries.get(token.0) {
                    Some(Entry::Listener(..)) => self.accept(svc, token.0),
                    Some(Entry::Conn(c)) => {
                        let id = ConnId::new(token.0 as u32, c.gen);
                        if let Phase::Connecting(tag) = c.phase {
                            self.finish_connect(svc, id, tag);
                        } else {
                            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                                // Without an end of stream or an error in the
                                // event, a short read means the socket is empty.
                                let short_ends = !(ev.is_read_closed() || ev.is_error());
                                self.read(svc, id, short_ends);
                            }
                            if ev.is_writable() {
                                self.flush(id);
                            }
                        }
                    }
                    None => {} // a connection closed earlier this turn
                }
            }
            for id in std::mem::take(&mut self.pending) {
                if let Some(c) = self.conn_mut(id) {
                    c.buf.unmark_pending();
                    self.read(svc, id, false);
                }
            }
            let now = self.now();
            while let Some(Reverse((at, id))) = self.timers.peek().copied() {
                if at > now {
                    break;
                }
                self.timers.pop();
                self.deliver(svc, Input::Timer { id });
            }
            for id in std::mem::take(&mut self.drained) {
                if self.conn(id).is_some() {
                    self.deliver(svc, Input::Drained { conn: id });
                }
            }
            self.turn_end(svc);
            for id in std::mem::take(&mut self.dirty) {
                if let Some(c) = self.conn_mut(id) {
                    c.buf.unmark_dirty();
                    self.flush(id);
                }
            }
            self.expire_drains(now);
            for id in std::mem::take(&mut self.to_remove) {
                self.remove(svc, id);
            }
        }
    }

    fn draining_deadline(&self) -> Option<Millis> {
        self.draining
            .iter()
            .filter_map(|&id| match self.conn(id).map(|c| c.phase) {
                Some(Phase::Draining(at)) => Some(at),
                _ => None,
            })
            .min()
    }

    fn expire_drains(&mut self, now: Millis) {
        let mut i = 0;
        while i < self.draining.len() {
            let id = self.draining[i];
            match self.conn(id).map(|c| c.phase) {
                Some(Phase::Draining(at)) if at > now => i += 1,
                Some(Phase::Draining(_)) => {
                    self.to_remove.push(id);
                    self.draining.swap_remove(i);
                }
                _ => {
                    self.draining.swap_remove(i);
                }
            }
        }
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        match self.entries.get(id.idx as usize) {
            Some(Entry::Conn(c)) if c.gen == id.gen => Some(c),
            _ => None,
        }
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        conn_in(&mut self.entries, id)
    }

    fn on_signals<S: Service>(&mut self, svc: &mut S) {
        let mut got = Vec::new();
        if let Some(s) = self.signals.as_mut() {
            for sig in s.pending() {
                got.push(if sig == signal_hook::consts::SIGTERM {
                    Signal::Terminate
                } else {
                    Signal::Interrupt
                });
            }
        }
        for sig in got {
            self.deliver(svc, Input::Signal(sig));
        }
    }

    /// Lets the service close the turn, then applies what it asks.
    fn turn_end<S: Service>(&mut self, svc: &mut S) {
        let now = self.now();
        svc.turn_end(now, &mut self.outputs);
        let mut outs = std::mem::take(&mut self.outputs);
        for out in outs.drain(..) {
            self.apply(now, out);
        }
        self.outputs = outs;
        let deferred = self.deferred.pop_front();
        if let Some(input) = deferred {
            self.deliver(svc, input);
        }
    }

    /// Steps the service and applies what it asks, then any inputs that arose.
    fn deliver<S: Service>(&mut self, svc: &mut S, input: Input) {
        self.deferred.push_back(input);
        while let Some(input) = self.deferred.pop_front() {
            let now = self.clock;
            svc.step(now, input, &mut self.outputs);
            let mut outs = std::mem::take(&mut self.outputs);
            for out in outs.drain(..) {
                self.apply(now, out);
            }
            self.outputs = outs;
        }
    }

    fn apply(&mut self, now: Millis, out: Output) {
        match out {
            Output::Send { conn, frame } => {
                let Some(c) = self.conn_mut(conn) else {
                    return;
                };
                if !matches!(c.phase, Phase::Open | Phase::Closing) {
                    return;
                }
                c.buf.queue_frame(&frame);
                if c.buf.over_limit() {
                    return self.drop_over_limit(now, conn);
                }
                if c.buf.mark_dirty() {
                    self.dirty.push(conn);
                }
            }
            Output::SendBytes { conn, bytes } => {
                let Some(c) = self.conn_mut(conn) else {
                    return;
                };
                if !matches!(c.phase, Phase::Open | Phase::Closing) {
                    return;
                }
                c.buf.queue_bytes(&bytes);
                if c.buf.over_limit() {
                    return self.drop_over_limit(now, conn);
                }
                if c.buf.mark_dirty() {
                    self.dirty.push(conn);
                }
            }
            Output::Unread { conn, data } => {
                if let Some(c) = self.conn_mut(conn) {
                    c.buf.unread(data);
                }
            }
            Output::WhenDrained { conn } => {
                if let Some(c) = conn_in(&mut self.entries, conn) {
                    c.notify_drained = c.buf.output_len() > self.cfg.low_water;
                    if !c.notify_drained {
                        self.drained.push(conn);
                    }
                }
            }
            Output::Yield { conn } => {
                if let Some(c) = self.conn_mut(conn) {
                    c.buf.set_yield();
                }
            }
            Output::Raw { conn } => {
                if let Some(c) = self.conn_mut(conn) {
                    c.buf.set_raw();
                    self.mark_pending(conn);
                }
            }
            Output::Close { conn } => {
                let Some(c) = self.conn_mut(conn) else {
                    return;
                };
                match c.phase {
                    Phase::Open => {
                        c.phase = Phase::Closing;
                        c.buf.close();
                        if c.buf.mark_dirty() {
                            self.dirty.push(conn);
                        }
                    }
                    Phase::Connecting(_) => self.to_remove.push(conn),
                    _ => {}
                }
            }
            Output::Connect { addr, tag } => match self.connect(addr, tag) {
                Ok(()) => {}
                Err(e) => {
                    log::debug!("connect to {addr} failed at once: {e}");
                    self.deferred.push_back(Input::ConnectFailed { tag });
                }
            },
            Output::Timer { at, id } => self.timers.push(Reverse((at.max(now), id))),
            Output::Trust { conn } => {
                let max = self.cfg.member_max_payload;
                if let Some(c) = self.conn_mut(conn) {
                    c.buf.set_max_payload(max);
                }
            }
            Output::Hold { conn, hold } => {
                if let Some(c) = self.conn_mut(conn) {
                    c.buf.set_held(hold);
                    if !hold {
                        self.mark_pending(conn);
                    }
                }
            }
            Output::Stop => self.stopping = true,
        }
    }

    fn mark_pending(&mut self, id: ConnId) {
        if let Some(c) = self.conn_mut(id) {
            if c.buf.mark_pending() {
                self.pending.push(id);
            }
        }
    }

    /// Reads and dispatches frames until the socket is empty, the read budget or
    /// the turn's share of replies is spent, or backpressure pauses the
    /// connection. After the peer's end of stream, the frames left in the
    /// buffer are dispatched, then `Eof`.
    ///
    /// With `short_ends`, a read that returns less than it asked for ends the
    /// reading as `WouldBlock` would, saving the read that would only say so
    /// (one system call per request for a client that sends one at a time).
    /// That is sound with edge-triggered readiness: a short read took all the
    /// socket held, and anything arriving later, an end of stream included,
    /// raises a new event. The caller passes `false` when the event reported
    /// an end of stream or an error (they arrived before the read and raise
    /// no new event) and when there is no event (a connection read again
    /// after its budget), so those read on until the socket says so.
    fn read<S: Service>(&mut self, svc: &mut S, id: ConnId, short_ends: bool) {
        let mut budget = self.cfg.read_budget;
        let mut emptied = false;
        let share = self.cfg.turn_output;
        let Some(start) = self.conn(id).map(|c| c.buf.output_len()) else {
            return;
        };
        loop {
            // Dispatch every whole frame already buffered.
            loop {
                let Some(c) = self.conn_mut(id) else { return };
                if let Phase::Draining(_) = c.phase {
                    break;
                }
                if c.phase != Phase::Open {
                    return;
                }
                if c.buf.output_len().saturating_sub(start) >= share {
                    // This turn's share of replies is used: the rest waits.
                    self.mark_pending(id);
                    return;
                }
                if let Some(input) = c.buf.next_input(id) {
                    self.deliver(svc, input);
                    if self.conn_mut(id).is_some_and(|c| c.buf.take_yield()) {
                        // Input given back or a yield: revisit later.
                        self.mark_pending(id);
                        return;
                    }
                    continue;
                }
                if let Some(eof) = c.buf.take_eof(id) {
                    self.deliver(svc, eof);
                    return;
                }
                if c.buf.stopped() {
                    return;
                }
                break;
            }
            let chunk = self.cfg.read_chunk;
            let scratch = &mut self.scratch;
            let Some(c) = conn_in(&mut self.entries, id) else {
                return;
            };
            let draining = matches!(c.phase, Phase::Draining(_));
            if c.buf.input_ended() && !draining {
                return;
            }
            if emptied && !draining {
                c.buf.release_idle_input();
                return;
            }
            if budget == 0 {
                self.mark_pending(id);
                return;
            }
            let want = if draining {
                chunk
            } else {
                chunk.max(c.buf.input_spare()).min(budget.max(chunk))
            };
            if scratch.len() < want {
                scratch.resize(want, 0);
            }
            #[cfg(test)]
            {
                self.socket_reads += 1;
            }
            let r = c.stream.read(&mut scratch[..want]);
            match r {
                Ok(0) if draining => {
                    self.to_remove.push(id);
                    return;
                }
                Ok(0) => c.buf.set_eof(),
                Ok(n) => {
                    c.buf.push_input(&scratch[..n]);
                    budget = budget.saturating_sub(n);
                    emptied = short_ends && n < want;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Idle: an empty buffer is released rather than kept per connection.
                    c.buf.release_idle_input();
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("read {id}: {e}");
                    self.to_remove.push(id);
                    return;
                }
            }
        }
    }

    /// Writes pending output, up to the per-turn cap.
    fn flush(&mut self, id: ConnId) {
        let cap = self.cfg.write_cap;
        let linger = self.cfg.linger;
        let now = self.clock;
        let Some(c) = conn_in(&mut self.entries, id) else {
            return;
        };
        if matches!(c.phase, Phase::Connecting(_) | Phase::Draining(_)) {
            return;
        }
        let mut written = 0;
        let mut blocked = false;
        let mut resumed = false;
        while c.buf.output_len() > 0 && written < cap {
            let end = c.buf.output_len().min(cap - written);
            match c.stream.write(&c.buf.output()[..end]) {
                Ok(0) => {
                    self.to_remove.push(id);
                    return;
                }
                Ok(n) => {
                    resumed |= c.buf.wrote(n);
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("write {id}: {e}");
                    self.to_remove.push(id);
                    return;
                }
            }
        }
        let token = Token(id.idx as usize);
        if c.buf.output_len() == 0 {
            if c.writable_registered {
                c.writable_registered = false;
                let _ = self
                    .poll
                    .registry()
                    .reregister(&mut c.stream, token, Interest::READABLE);
            }
            if c.buf.drained() && c.phase == Phase::Closing {
                let _ = c.stream.shutdown(Shutdown::Write);
                c.phase = Phase::Draining(now + linger);
                self.draining.push(id);
                self.mark_pending(id);
                return;
            }
        } else if blocked {
            if !c.writable_registered {
                c.writable_registered = true;
                let _ = self.poll.registry().reregister(
                    &mut c.stream,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                );
            }
        } else if c.buf.mark_dirty() {
            // Cap reached without blocking: continue next turn.
            self.dirty.push(id);
        }
        if c.notify_drained && c.buf.output_len() <= self.cfg.low_water {
            c.notify_drained = false;
            self.drained.push(id);
        }
        if resumed {
            self.mark_pending(id);
        }
    }

    fn remove<S: Service>(&mut self, svc: &mut S, id: ConnId) {
        let connected = match self.conn(id) {
            Some(c) => !matches!(c.phase, Phase::Connecting(_)),
            None => return,
        };
        self.drop_entry(id);
        if connected {
            self.deliver(svc, Input::Closed { conn: id });
        }
    }

    /// Pending output bytes of a connection (for tests and stats).
    pub fn pending_output(&self, id: ConnId) -> Option<usize> {
        self.conn(id).map(|c| c.buf.output_len())
    }

    /// Number of open connections.
    pub fn connections(&self) -> usize {
        self.entries.len() - self.listeners
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::io::{Read, Write};

    /// Upper-cases whatever a raw connection sends, a line at a time, and holds
    /// the replies until the end of the turn (as a group commit would).
    struct Shout {
        held: Vec<Output>,
        turns: usize,
    }

    impl Service for Shout {
        fn step(&mut self, _now: Millis, input: Input, out: &mut Vec<Output>) {
            match input {
                Input::Accepted { conn, .. } => out.push(Output::Raw { conn }),
                Input::Data { conn, data } => {
                    let up = data.to_ascii_uppercase();
                    if up.starts_with(b"BYE") {
                        out.push(Output::Stop);
                    }
                    self.held.push(Output::SendBytes {
                        conn,
                        bytes: Bytes::from(up),
                    });
                }
                Input::Eof { conn } => out.push(Output::Close { conn }),
                _ => {}
            }
        }

        fn turn_end(&mut self, _now: Millis, out: &mut Vec<Output>) {
            self.turns += 1;
            out.append(&mut self.held);
        }
    }

    /// A reactor serving [`Shout`] on a thread: its address, and the thread,
    /// which returns the turns and the socket reads once a client says bye.
    fn shout_server() -> (SocketAddr, std::thread::JoinHandle<(usize, u64)>) {
        let mut reactor = Reactor::new(Config::default()).unwrap();
        let (_, addr) = reactor.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let server = std::thread::spawn(move || {
            let mut svc = Shout {
                held: Vec::new(),
                turns: 0,
            };
            reactor.run(&mut svc).unwrap();
            (svc.turns, reactor.socket_reads)
        });
        (addr, server)
    }

    fn connect(addr: SocketAddr) -> std::net::TcpStream {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    #[test]
    fn raw_connections_get_bytes_and_replies_wait_for_the_turn_end() {
        let (addr, server) = shout_server();
        let mut s = connect(addr);
        let mut got = [0u8; 6];
        s.write_all(b"hello\n").unwrap();
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"HELLO\n");
        // Not a frame: a framed connection would have answered BADFRAME.
        s.write_all(b"bye!!\n").unwrap();
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"BYE!!\n");
        assert!(server.join().unwrap().0 >= 2);
    }

    #[test]
    fn a_client_sending_one_request_at_a_time_costs_one_read_each() {
        let (addr, server) = shout_server();
        let mut s = connect(addr);
        let mut got = [0u8; 6];
        for _ in 0..50 {
            s.write_all(b"hello\n").unwrap();
            s.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"HELLO\n");
        }
        // A last line with the end of stream right behind it: the reply
        // comes, and so does the close (the end of stream is not missed).
        let mut last = connect(addr);
        last.write_all(b"later\n").unwrap();
        last.shutdown(std::net::Shutdown::Write).unwrap();
        let mut all = Vec::new();
        last.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"LATER\n");
        s.write_all(b"bye!!\n").unwrap();
        s.read_exact(&mut got).unwrap();
        let (_, reads) = server.join().unwrap();
        // Each short read ends its turn's reading: no read that would only
        // say the socket is empty (that was 2 per request).
        assert!(reads <= 50 + 10, "{reads} socket reads for 52 requests");
    }

    /// Answers each line of a raw connection with 1 MiB, at once; `stop` stops.
    struct Flood {
        closed: usize,
    }

    impl Service for Flood {
        fn step(&mut self, _now: Millis, input: Input, out: &mut Vec<Output>) {
            match input {
                Input::Accepted { conn, .. } => out.push(Output::Raw { conn }),
                Input::Data { conn, data } if data.starts_with(b"stop") => {
                    out.push(Output::SendBytes {
                        conn,
                        bytes: Bytes::from_static(b"bye"),
                    });
                    out.push(Output::Stop);
                }
                Input::Data { conn, data } => {
                    for _ in data.iter().filter(|&&b| b == b'\n') {
                        let bytes = Bytes::from(vec![b'x'; 1 << 20]);
                        out.push(Output::SendBytes { conn, bytes });
                    }
                }
                Input::Closed { .. } => self.closed += 1,
                _ => {}
            }
        }
    }

    #[test]
    fn a_client_past_the_hard_output_limit_is_dropped_and_others_go_on() {
        let cfg = Config {
            max_payload: 1024,
            high_water: 64 << 10,
            low_water: 16 << 10,
            output_limit: 2 << 20,
            ..Config::default()
        };
        let mut reactor = Reactor::new(cfg).unwrap();
        let (_, addr) = reactor.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let server = std::thread::spawn(move || {
            let mut svc = Flood { closed: 0 };
            reactor.run(&mut svc).unwrap();
            svc.closed
        });
        let mut hog = std::net::TcpStream::connect(addr).unwrap();
        hog.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        hog.write_all(&b"more\n".repeat(10)).unwrap();
        let mut got = 0;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match hog.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("the connection should be dropped: {e}"),
            }
        }
        assert!(got < 10 << 20, "cut short: {got} bytes");
        let mut other = std::net::TcpStream::connect(addr).unwrap();
        other
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        other.write_all(b"stop\n").unwrap();
        let mut bye = [0u8; 3];
        other.read_exact(&mut bye).unwrap();
        assert_eq!(&bye, b"bye");
        assert!(server.join().unwrap() >= 1, "the service was told");
    }

    /// Streams `left` pieces of 256 KiB to a raw connection that sends a
    /// line, each after the last drained; counts the `Drained` it was told.
    struct Stream {
        left: usize,
        drained: usize,
    }

    impl Stream {
        fn piece(&mut self, conn: ConnId, out: &mut Vec<Output>) {
            self.left -= 1;
            let bytes = Bytes::from(vec![b'a' + (self.left % 26) as u8; 256 << 10]);
            out.push(Output::SendBytes { conn, bytes });
            if self.left == 0 {
                out.push(Output::Stop);
            } else {
                out.push(Output::WhenDrained { conn });
            }
        }
    }

    impl Service for Stream {
        fn step(&mut self, _now: Millis, input: Input, out: &mut Vec<Output>) {
            match input {
                Input::Accepted { conn, .. } => out.push(Output::Raw { conn }),
                Input::Data { conn, .. } => self.piece(conn, out),
                Input::Drained { conn } => {
                    self.drained += 1;
                    self.piece(conn, out);
                }
                _ => {}
            }
        }
    }

    #[test]
    fn a_stream_goes_on_each_time_its_output_drains() {
        let cfg = Config {
            high_water: 64 << 10,
            low_water: 16 << 10,
            ..Config::default()
        };
        let mut reactor = Reactor::new(cfg).unwrap();
        let (_, addr) = reactor.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let server = std::thread::spawn(move || {
            let mut svc = Stream {
                left: 20,
                drained: 0,
            };
            reactor.run(&mut svc).unwrap();
            svc.drained
        });
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"go\n").unwrap();
        let mut got = vec![0u8; 20 * (256 << 10)];
        s.read_exact(&mut got).unwrap();
        for (i, piece) in got.chunks(256 << 10).enumerate() {
            let want = b'a' + ((19 - i) % 26) as u8;
            assert!(piece.iter().all(|&b| b == want), "piece {i} in order");
        }
        assert_eq!(server.join().unwrap(), 19, "one Drained per piece asked");
    }
}
