//! One RESP connection: its FIFO of commands, in order, and how each finished one
//! is rendered (see the parent module for the design).

use super::client::{ClientState, ListFilter};
use super::listing::Listing;
use super::{Item, NodeFacts, HOLD_BYTES, HOLD_ENTRIES, REDIS_VERSION};
use crate::protocol::resp::{self, Limits, Parser};
use crate::protocol::{int, op, ErrorCode, Frame};
use crate::reactor::{ConnId, Millis, Output};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;

/// What a command waiting for the node's facts needs.
#[derive(Debug)]
pub(super) enum Fact {
    /// DBSIZE: the node's key count.
    DbSize,
    /// INFO.
    Info,
    /// CLIENT LIST: every RESP connection of the node that the filter keeps.
    Clients(ListFilter),
}

/// How a finished command is rendered.
#[derive(Debug)]
pub(super) enum Shape {
    /// `+OK`; `$-1` if a conditional write was refused (SET NX/XX).
    Ok,
    /// `+OK` once every write succeeded, else an error that says how many of
    /// them failed, with the first failure's code and message (MSET).
    Writes,
    /// The value, or `$-1` (GET).
    Bulk,
    /// How many requests found their key (DEL, EXISTS).
    Count,
    /// The counter (INCR and friends).
    Int,
    /// One element per request (MGET).
    Array,
    /// `+PONG`, or the message as a bulk string.
    Pong { echo: bool },
    /// Rendered already.
    Done(Bytes),
    /// Waits for the node's facts.
    Facts(Fact),
    /// Rendered already; the connection closes after it.
    Last(Bytes),
    /// The keys of a SCAN or KEYS.
    List(Box<Listing>),
}

#[derive(Debug)]
pub(super) struct Pending {
    shape: Shape,
    /// Native replies still to come.
    left: usize,
    /// The first error among the replies, as `-` line text.
    error: Option<Bytes>,
    /// Native requests sent, and how many of them were answered with `ERR`.
    total: usize,
    failed: usize,
    count: i64,
    /// A conditional write was refused.
    refused: bool,
    /// The value of a one-request command (GET, PING with a message): kept apart
    /// from `values` so the common case allocates no vector.
    value: Option<Bytes>,
    /// The values of an MGET, in request order.
    values: Vec<Option<Bytes>>,
    /// Bytes held in `value`, `values` or the rendered reply.
    bytes: usize,
}

impl Pending {
    pub(super) fn new(shape: Shape, left: usize) -> Pending {
        let bytes = match &shape {
            Shape::Done(b) | Shape::Last(b) => b.len(),
            _ => 0,
        };
        Pending {
            shape,
            left,
            error: None,
            total: left,
            failed: 0,
            count: 0,
            refused: false,
            value: None,
            values: Vec::new(),
            bytes,
        }
    }

    fn finished(&self) -> bool {
        self.left == 0 && !matches!(self.shape, Shape::Facts(_))
    }

    /// Takes one native reply.
    fn absorb(&mut self, f: &Frame) {
        self.left -= 1;
        if f.op == op::ERR {
            self.failed += 1;
            if self.error.is_none() {
                self.error = Some(native_error(&f.payload));
            }
            return;
        }
        if let (Shape::List(l), op::VALUE | op::STALE) = (&mut self.shape, f.op) {
            self.bytes += l.take(f.op, &f.payload);
            return;
        }
        let ok = match (&self.shape, f.op) {
            (Shape::Ok | Shape::Writes, op::OK) => true,
            (Shape::Ok, op::CONFLICT | op::NOT_FOUND) => {
                self.refused = true;
                true
            }
            (Shape::Bulk | Shape::Array, op::VALUE | op::NOT_FOUND)
            | (Shape::Pong { .. }, op::PONG) => {
                let v = (f.op != op::NOT_FOUND).then(|| f.payload.clone());
                self.bytes += v.as_ref().map_or(0, |v| v.len());
                if matches!(self.shape, Shape::Array) {
                    self.values.push(v);
                } else {
                    self.value = v;
                }
                true
            }
            (Shape::Count, op::OK) => {
                self.count += 1;
                true
            }
            (Shape::Count, op::NOT_FOUND) => true,
            (Shape::Int, op::VALUE) => match int::parse_canonical(&f.payload) {
                Some(n) => {
                    self.count = n;
                    true
                }
                None => false,
            },
            _ => false,
        };
        if !ok && self.error.is_none() {
            self.error = Some(Bytes::from(format!(
                "ERR unexpected {} reply from the node",
                op::name(f.op)
            )));
        }
    }

    /// Appends the RESP reply.
    fn render(self, out: &mut BytesMut) {
        if let Some(e) = &self.error {
            if matches!(self.shape, Shape::Writes) && self.failed > 0 {
                return resp::error(out, &writes_failed(e, self.failed, self.total));
            }
            resp::error(out, e);
            return;
        }
        match self.shape {
            Shape::Ok if self.refused => resp::nil(out),
            Shape::Ok | Shape::Writes => resp::simple(out, b"OK"),
            Shape::Count | Shape::Int => resp::integer(out, self.count),
            Shape::Pong { echo: false } => resp::simple(out, b"PONG"),
            Shape::Bulk | Shape::Pong { echo: true } => match &self.value {
                Some(v) => resp::bulk(out, v),
                _ => resp::nil(out),
            },
            Shape::Array => {
                resp::array(out, self.values.len());
                for v in &self.values {
                    match v {
                        Some(v) => resp::bulk(out, v),
                        None => resp::nil(out),
                    }
                }
            }
            Shape::Done(b) | Shape::Last(b) => out.extend_from_slice(&b),
            Shape::List(l) => l.render(out),
            Shape::Facts(_) => unreachable!("facts are filled before rendering"),
        }
    }
}

/// A native `ERR` payload (`CODE message`) as a RESP error line: `NOTINT` reads as
/// Redis words it (an overflow apart from a value that is not an integer).
fn native_error(payload: &[u8]) -> Bytes {
    if let Some(message) = payload
        .strip_prefix(ErrorCode::NotInt.as_str().as_bytes())
        .and_then(|m| m.strip_prefix(b" "))
    {
        if message == int::OVERFLOW.as_bytes() {
            return Bytes::from(format!("ERR {}", int::OVERFLOW));
        }
        return Bytes::from_static(NOT_AN_INTEGER.as_bytes());
    }
    let mut v = b"ERR ".to_vec();
    v.extend_from_slice(payload);
    Bytes::from(v)
}

/// The error of a multi-key write (MSET) of which `failed` of `total` writes
/// failed, `first` the first failure's error line (`ERR CODE message`): `ERR
/// CODE 3 of 10 keys failed; the first: message`.
fn writes_failed(first: &[u8], failed: usize, total: usize) -> Vec<u8> {
    let rest = first.strip_prefix(b"ERR ").unwrap_or(first);
    let (code, message) = match memchr::memchr(b' ', rest) {
        Some(sp) => (&rest[..sp], &rest[sp + 1..]),
        None => (rest, &b""[..]),
    };
    let mut line = b"ERR ".to_vec();
    line.extend_from_slice(code);
    line.extend_from_slice(format!(" {failed} of {total} keys failed; the first: ").as_bytes());
    line.extend_from_slice(message);
    line
}

/// Redis's reply text for an argument or stored value that is not an integer.
pub(super) const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

/// A rendered error reply.
pub(super) fn err_reply(text: &str) -> Bytes {
    let mut out = BytesMut::new();
    resp::error(&mut out, text.as_bytes());
    out.freeze()
}

/// One RESP connection's state.
#[derive(Debug)]
pub struct RespSession {
    limits: Limits,
    parser: Parser,
    /// The arguments of the command being served (reused from command to command).
    args: Vec<Bytes>,
    /// Input not yet cut into commands.
    buf: BytesMut,
    queue: VecDeque<Pending>,
    /// Bytes held by `queue`.
    queued: usize,
    /// Replies finished and not yet handed out.
    ready: BytesMut,
    /// Tag of the next native request.
    next_tag: u64,
    /// Tag the next native reply must carry.
    expect_tag: u64,
    /// A protocol error or QUIT is queued: input is ignored from now on.
    pub(super) stopped: bool,
    /// The last reply is out: the connection should close.
    close_due: bool,
    /// What CLIENT and HELLO report and set.
    pub(super) client: ClientState,
    /// Whether the reactor is holding the connection (as last told by any Hold).
    pub(super) held: bool,
    /// Whether the node holds the connection for its own reply backlog.
    pub(super) node_held: bool,
    /// Bytes of replies taken so far: native replies' payloads and the
    /// session's own answers (see [`super::RespFront::served`]).
    pub(super) served: usize,
    /// Listed in the front's `touched` this step.
    pub(super) touched: bool,
    /// The end tokens of the ring's ranges, as the node routes by (SCAN, KEYS).
    pub(super) ring: Arc<[u64]>,
}

impl RespSession {
    /// A session for a fresh connection; `id` is what `CLIENT ID` reports.
    pub fn new(limits: Limits, id: u64) -> RespSession {
        RespSession {
            limits,
            parser: Parser::new(),
            args: Vec::new(),
            buf: BytesMut::new(),
            queue: VecDeque::new(),
            queued: 0,
            ready: BytesMut::new(),
            next_tag: 1,
            expect_tag: 1,
            stopped: false,
            close_due: false,
            client: ClientState::new(id),
            held: false,
            node_held: false,
            served: 0,
            touched: false,
            ring: Arc::from(Vec::new()),
        }
    }

    /// The connection was accepted at `now` (CLIENT LIST's `age`).
    pub fn connected_at(&mut self, now: Millis) {
        self.client.created = now;
        self.client.last = now;
    }

    /// Appends this connection's CLIENT LIST line, as of `now`.
    pub(super) fn info_line(&self, now: Millis, out: &mut Vec<u8>) {
        self.client.info_line(now, self.buf.len(), out);
    }

    /// Takes bytes read from the connection at `now`; returns what the node must
    /// do, in order. Bytes of an incomplete command are kept for the next call.
    /// (The node serves a command at a time instead: [`RespSession::take_input`],
    /// [`RespSession::next_command`], [`RespSession::finish`].)
    pub fn feed(&mut self, now: Millis, data: BytesMut) -> Vec<Item> {
        let mut items = Vec::new();
        self.take_input(now, data);
        while self.next_command(&mut items) {}
        self.finish(&mut items);
        items
    }

    /// Takes bytes read from the connection at `now`, to be cut into commands by
    /// [`RespSession::next_command`].
    pub fn take_input(&mut self, now: Millis, data: BytesMut) {
        if self.stopped {
            return;
        }
        self.client.last = now;
        if self.buf.is_empty() {
            self.buf = data;
        } else {
            self.buf.unsplit(data);
        }
    }

    /// Cuts the next whole command out of the input and appends what the node
    /// must do for it to `items`; false when there is none (only part of one is
    /// left, or input stopped after a protocol error or QUIT).
    pub fn next_command(&mut self, items: &mut Vec<Item>) -> bool {
        if self.stopped || self.buf.is_empty() {
            return false;
        }
        let mut args = std::mem::take(&mut self.args);
        let parsed = self
            .parser
            .parse_into(&mut self.buf, &self.limits, &mut args);
        if let Ok(true) = parsed {
            self.command(&args, items);
        }
        args.clear();
        if args.capacity() <= 64 {
            self.args = args;
        }
        match parsed {
            Ok(true) => !self.stopped,
            Ok(false) => false,
            Err(e) => {
                let text = format!("ERR Protocol error: {}", e.message);
                self.push(Pending::new(Shape::Last(err_reply(&text)), 0));
                self.stopped = true;
                false
            }
        }
    }

    /// The input not yet cut into commands, taken out of the session (the node
    /// hands it back to the reactor with `Output::Unread` when this step's
    /// replies are large enough: the rest waits for the connection's output to
    /// drain).
    pub fn take_unparsed(&mut self) -> Option<BytesMut> {
        if self.stopped || self.buf.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.buf))
    }

    /// Ends a batch of [`RespSession::next_command`] calls: appends the replies
    /// ready so far and, if the session is done, a close.
    pub fn finish(&mut self, items: &mut Vec<Item>) {
        if self.stopped || self.buf.is_empty() {
            // Do not pin the read chunk the last command arrived in.
            self.buf = BytesMut::new();
        }
        self.flush_ready(items);
        if self.take_close() {
            items.push(Item::Close);
        }
    }

    /// Takes the node's reply to one of this session's requests (replies come in
    /// request order); returns the RESP bytes now ready, if any.
    pub fn reply(&mut self, frame: &Frame) -> Option<Bytes> {
        self.absorb_reply(frame);
        self.take_ready()
    }

    /// Takes the node's reply like [`RespSession::reply`] but leaves the RESP bytes
    /// it finishes in the session, so the replies of one step leave in one buffer
    /// (see [`super::RespFront::deliver`]); [`RespSession::take_ready`] takes them.
    pub(super) fn absorb_reply(&mut self, frame: &Frame) {
        if self.close_due || (self.stopped && self.queue.is_empty()) {
            return;
        }
        if frame.client_id != self.expect_tag {
            log::error!(
                "RESP session: reply tagged {} where {} was due; closing",
                frame.client_id,
                self.expect_tag
            );
            self.queue.clear();
            self.queued = 0;
            self.stopped = true;
            self.close_due = true;
            resp::error(&mut self.ready, b"ERR internal error: reply out of order");
            return;
        }
        self.expect_tag += 1;
        self.served += frame.payload.len();
        if let Some(p) = self.queue.iter_mut().find(|p| p.left > 0) {
            let before = p.bytes;
            p.absorb(frame);
            self.queued += p.bytes - before;
        }
        self.release();
    }

    /// What the oldest command waiting for the node's facts needs, if any.
    pub(super) fn waiting_fact(&self) -> Option<&Fact> {
        self.queue.iter().find_map(|p| match &p.shape {
            Shape::Facts(f) => Some(f),
            _ => None,
        })
    }

    /// Answers the oldest command waiting for the node's facts (DBSIZE or INFO);
    /// returns the RESP bytes now ready, if any.
    pub fn facts(&mut self, facts: NodeFacts) -> Option<Bytes> {
        let info = matches!(self.waiting_fact()?, Fact::Info);
        self.fill_facts(|out| {
            if info {
                let text = format!(
                    "# Server\r\nredis_version:{REDIS_VERSION}\r\ngtstore_version:{}\r\n\
                     redis_mode:standalone\r\ngtstore_node_id:{}\r\n\r\n# Keyspace\r\n\
                     db0:keys={},expires=0,avg_ttl=0\r\n",
                    env!("CARGO_PKG_VERSION"),
                    facts.node_id,
                    facts.keys
                );
                resp::bulk(out, text.as_bytes());
            } else {
                resp::integer(out, facts.keys as i64);
            }
        })
    }

    /// Renders the reply of the oldest command waiting for facts with `render`;
    /// returns the RESP bytes now ready, if any.
    pub(super) fn fill_facts(&mut self, render: impl FnOnce(&mut BytesMut)) -> Option<Bytes> {
        let p = self
            .queue
            .iter_mut()
            .find(|p| matches!(p.shape, Shape::Facts(_)))?;
        let mut out = BytesMut::new();
        render(&mut out);
        let out = out.freeze();
        p.bytes = out.len();
        self.queued += out.len();
        p.shape = Shape::Done(out);
        self.release();
        self.take_ready()
    }

    /// Whether the connection should close now (its last reply is out); true once.
    pub fn take_close(&mut self) -> bool {
        std::mem::take(&mut self.close_due)
    }

    /// Whether the backlog is over the hold bounds.
    pub fn over(&self) -> bool {
        self.queue.len() > HOLD_ENTRIES || self.queued > HOLD_BYTES
    }

    /// Whether the backlog is low enough to read again.
    pub fn drained(&self) -> bool {
        self.queue.len() <= HOLD_ENTRIES / 2 && self.queued <= HOLD_BYTES / 2
    }

    /// Commands waiting for their reply.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn push(&mut self, p: Pending) {
        self.queued += p.bytes;
        self.served += p.bytes;
        self.queue.push_back(p);
        self.release();
    }

    /// The replies finished so far, if any.
    pub(super) fn take_ready(&mut self) -> Option<Bytes> {
        if self.ready.is_empty() {
            return None;
        }
        let bytes = self.ready.split().freeze();
        if self.ready.capacity() > 64 << 10 {
            // Do not keep the tail of a buffer grown for a large reply.
            self.ready = BytesMut::new();
        }
        Some(bytes)
    }

    /// A command answered here.
    pub(super) fn local(&mut self, reply: Bytes) {
        self.push(Pending::new(Shape::Done(reply), 0));
    }

    /// A command served by native requests.
    pub(super) fn native(
        &mut self,
        shape: Shape,
        frames: impl ExactSizeIterator<Item = (u8, Bytes)>,
        items: &mut Vec<Item>,
    ) {
        self.push(Pending::new(shape, frames.len()));
        for (op, payload) in frames {
            items.push(Item::Request(Frame::new(op, self.next_tag, 0, payload)));
            self.next_tag += 1;
        }
    }

    /// Hands what is ready to the node.
    pub(super) fn flush_ready(&mut self, items: &mut Vec<Item>) {
        if let Some(bytes) = self.take_ready() {
            items.push(Item::Send(bytes));
        }
    }

    /// Sends what is ready on `conn`.
    pub(super) fn flush(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        if let Some(bytes) = self.take_ready() {
            out.push(Output::SendBytes { conn, bytes });
        }
    }

    /// Encodes every finished entry at the front of the FIFO.
    pub(super) fn release(&mut self) {
        while self.queue.front().is_some_and(Pending::finished) {
            let p = self.queue.pop_front().expect("checked");
            self.queued -= p.bytes;
            if matches!(p.shape, Shape::Last(_)) {
                self.close_due = true;
            }
            p.render(&mut self.ready);
        }
    }
}
