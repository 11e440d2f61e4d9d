//! The RESP front: a storage node speaking RESP2 (the Redis protocol) on a second
//! port, so `redis-cli`, `redis-benchmark` and Redis client libraries can use it.
//!
//! A [`RespSession`] per connection turns Redis commands into the node's own
//! requests ([`Frame`]s of the native protocol) and the node's replies back into
//! RESP. The node serves those frames exactly as if a native client had sent them
//! on that connection: the same forwarding to the key's owner, the same replication
//! and reply ordering, the same backpressure. Nothing here does I/O or touches the
//! data; the node drives it (see `StorageNode::step`).
//!
//! How commands map (see docs/protocol.md, "RESP front"):
//!
//! - one native request: GET, SET (PUT; CREATE with NX, UPDATE with XX), INCR,
//!   DECR, INCRBY, DECRBY (INCR with a delta), PING;
//! - one request per key, aggregated into one reply: MGET (an array), MSET (`+OK`),
//!   DEL and EXISTS (the count of keys that were there);
//! - answered from the node's own facts: DBSIZE (this node's key count, not the
//!   cluster's) and INFO;
//! - answered by the session alone: ECHO, COMMAND, CONFIG GET, CLIENT, SELECT 0,
//!   QUIT, and errors for wrong arity and unknown commands.
//!
//! Order. Replies on a connection leave in command order. The node answers a
//! connection's native requests in request order, so the session keeps one FIFO
//! entry per command, in order, saying what the command still waits for and how to
//! render it; a reply fills the oldest entry that waits for one, and every finished
//! entry at the front is encoded. A command answered locally is an entry that is
//! finished at once, so it waits behind the native ones before it. Each native
//! request carries a tag (its client id, counted per session) and its reply must
//! carry the tag expected next: a mismatch is a broken invariant, reported as
//! `-ERR` and a closed connection, never a misattributed reply.
//!
//! Bounds. Commands are bounded by [`Limits`] (a protocol error, `-ERR Protocol
//! error: ...`, then the connection closes, after the replies to earlier commands).
//! What waits in the FIFO (answers queued behind a slow forward, values of a half
//! answered MGET) is counted; above [`HOLD_ENTRIES`] entries or [`HOLD_BYTES`] bytes
//! the node stops reading the connection until it drains below half.
//!
//! Backpressure granularity: the reactor hands a raw connection's input over a read
//! at a time (`Input::Data`, up to one read chunk, 64 KiB by default), and the
//! session serves every command in it before the reactor's output high-water mark
//! is checked again; a framed connection is checked between frames. So one read of
//! small GETs for a very large value can queue that value many times over (a
//! 64 KiB read of `GET k` lines is about 10,000 replies). Checking between commands
//! needs the reactor to let the service leave unconsumed bytes in its read buffer.
//!
//! Caveats: no expiry (SET EX/PX/KEEPTTL/GET are refused), one database (SELECT 0
//! only), no transactions, pub/sub or scripts; a multi-key command is not atomic
//! (each key is its own request, maybe on different nodes), and when some of its
//! requests fail the command replies with the first error; empty keys, which Redis
//! allows, get the node's `BADKEY` error.

use crate::protocol::resp::{self, Limits, Parser};
use crate::protocol::{kv, op, ErrorCode, Frame};
use crate::reactor::{ConnId, Output};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet, VecDeque};
use std::iter::once;

/// The index of the RESP listener: the node's native listener is bound first (0),
/// the RESP one second.
pub const LISTENER: usize = 1;
/// FIFO entries on one connection above which the node stops reading it.
pub const HOLD_ENTRIES: usize = 8192;
/// Bytes of answers waiting in one connection's FIFO above which the node stops
/// reading it.
pub const HOLD_BYTES: usize = 4 << 20;

/// The configuration parameters `CONFIG GET` reports (what redis-benchmark asks).
const CONFIG: &[(&str, &str)] = &[
    ("save", ""),
    ("appendonly", "no"),
    ("databases", "1"),
    ("maxmemory", "0"),
];

/// Commands the front knows, for `COMMAND COUNT`.
const COMMANDS: &[&str] = &[
    "PING", "ECHO", "GET", "SET", "DEL", "EXISTS", "INCR", "INCRBY", "DECR", "DECRBY", "MGET",
    "MSET", "DBSIZE", "COMMAND", "CONFIG", "INFO", "CLIENT", "SELECT", "QUIT",
];

/// What the node must do for the session, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// Serve this native request as if a client had sent it on the connection.
    Request(Frame),
    /// A command needs the node's facts: call [`RespSession::facts`].
    Facts,
    /// Send these reply bytes now.
    Send(Bytes),
    /// Close the connection (after what was sent).
    Close,
}

/// What a node tells about itself (DBSIZE, INFO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    /// The node's id (0 before it registered).
    pub node_id: u32,
    /// Keys the node holds itself.
    pub keys: usize,
}

/// How a finished command is rendered.
#[derive(Debug)]
enum Shape {
    /// `+OK`; `$-1` if a conditional write was refused (SET NX/XX, MSET).
    Ok,
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
    /// Waits for the node's facts: DBSIZE (false) or INFO (true).
    Facts { info: bool },
    /// Rendered already; the connection closes after it.
    Last(Bytes),
}

#[derive(Debug)]
struct Pending {
    shape: Shape,
    /// Native replies still to come.
    left: usize,
    /// The first error among the replies, as `-` line text.
    error: Option<Bytes>,
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
    fn new(shape: Shape, left: usize) -> Pending {
        let bytes = match &shape {
            Shape::Done(b) | Shape::Last(b) => b.len(),
            _ => 0,
        };
        Pending {
            shape,
            left,
            error: None,
            count: 0,
            refused: false,
            value: None,
            values: Vec::new(),
            bytes,
        }
    }

    fn finished(&self) -> bool {
        self.left == 0 && !matches!(self.shape, Shape::Facts { .. })
    }

    /// Takes one native reply.
    fn absorb(&mut self, f: &Frame) {
        self.left -= 1;
        if f.op == op::ERR {
            if self.error.is_none() {
                self.error = Some(native_error(&f.payload));
            }
            return;
        }
        let ok = match (&self.shape, f.op) {
            (Shape::Ok, op::OK) => true,
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
            (Shape::Int, op::VALUE) => match kv::parse_i64(&f.payload) {
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
            resp::error(out, e);
            return;
        }
        match self.shape {
            Shape::Ok if self.refused => resp::nil(out),
            Shape::Ok => resp::simple(out, b"OK"),
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
            Shape::Facts { .. } => unreachable!("facts are filled before rendering"),
        }
    }
}

/// A native `ERR` payload (`CODE message`) as a RESP error line.
fn native_error(payload: &[u8]) -> Bytes {
    if payload.starts_with(ErrorCode::NotInt.as_str().as_bytes()) {
        return Bytes::from_static(b"ERR value is not an integer or out of range");
    }
    let mut v = b"ERR ".to_vec();
    v.extend_from_slice(payload);
    Bytes::from(v)
}

/// A rendered error reply.
fn err_reply(text: &str) -> Bytes {
    let mut out = BytesMut::new();
    resp::error(&mut out, text.as_bytes());
    out.freeze()
}

/// Printable text of an argument for an error message, at most `max` bytes of it.
fn shown(arg: &[u8], max: usize) -> String {
    arg[..arg.len().min(max)]
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

fn wrong_arity(name: &[u8]) -> Bytes {
    err_reply(&format!(
        "ERR wrong number of arguments for '{}' command",
        shown(name, 64).to_ascii_lowercase()
    ))
}

/// `*` and `?` globbing, as CONFIG GET patterns use.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((&c, rest)) => match text.split_first() {
            Some((&t, tail)) if c == b'?' || c.eq_ignore_ascii_case(&t) => glob(rest, tail),
            _ => false,
        },
    }
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
    stopped: bool,
    /// The last reply is out: the connection should close.
    close_due: bool,
    /// The id CLIENT ID reports.
    id: u64,
    /// The name CLIENT SETNAME set.
    name: Option<Bytes>,
    /// Whether the reactor is holding the connection (as last told by any Hold).
    held: bool,
    /// Listed in the front's `touched` this step.
    touched: bool,
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
            id,
            name: None,
            held: false,
            touched: false,
        }
    }

    /// Takes bytes read from the connection; returns what the node must do, in
    /// order. Bytes of an incomplete command are kept for the next call.
    pub fn feed(&mut self, data: BytesMut) -> Vec<Item> {
        let mut items = Vec::new();
        if self.stopped {
            return items;
        }
        if self.buf.is_empty() {
            self.buf = data;
        } else {
            self.buf.unsplit(data);
        }
        loop {
            let mut args = std::mem::take(&mut self.args);
            let parsed = self
                .parser
                .parse_into(&mut self.buf, &self.limits, &mut args);
            if let Ok(true) = parsed {
                self.command(&args, &mut items);
            }
            args.clear();
            if args.capacity() <= 64 {
                self.args = args;
            }
            match parsed {
                Ok(true) => {
                    if self.stopped {
                        break;
                    }
                }
                Ok(false) => break,
                Err(e) => {
                    let text = format!("ERR Protocol error: {}", e.message);
                    self.push(Pending::new(Shape::Last(err_reply(&text)), 0));
                    self.stopped = true;
                    break;
                }
            }
        }
        if self.stopped || self.buf.is_empty() {
            // Do not pin the read chunk the last command arrived in.
            self.buf = BytesMut::new();
        }
        self.flush_ready(&mut items);
        if self.take_close() {
            items.push(Item::Close);
        }
        items
    }

    /// Takes the node's reply to one of this session's requests (replies come in
    /// request order); returns the RESP bytes now ready, if any.
    pub fn reply(&mut self, frame: &Frame) -> Option<Bytes> {
        self.absorb_reply(frame);
        self.take_ready()
    }

    /// Takes the node's reply like [`RespSession::reply`] but leaves the RESP bytes
    /// it finishes in the session, so the replies of one step leave in one buffer
    /// (see [`RespFront::translate`]); [`RespSession::take_ready`] takes them.
    fn absorb_reply(&mut self, frame: &Frame) {
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
        if let Some(p) = self.queue.iter_mut().find(|p| p.left > 0) {
            let before = p.bytes;
            p.absorb(frame);
            self.queued += p.bytes - before;
        }
        self.release();
    }

    /// Answers the oldest command waiting for the node's facts; returns the RESP
    /// bytes now ready, if any.
    pub fn facts(&mut self, facts: NodeFacts) -> Option<Bytes> {
        let p = self
            .queue
            .iter_mut()
            .find(|p| matches!(p.shape, Shape::Facts { .. }))?;
        let info = matches!(p.shape, Shape::Facts { info: true });
        let mut out = BytesMut::new();
        if info {
            let text = format!(
                "# Server\r\nredis_version:7.0.0\r\ngtstore_version:{}\r\nredis_mode:standalone\r\n\
                 gtstore_node_id:{}\r\n\r\n# Keyspace\r\ndb0:keys={},expires=0,avg_ttl=0\r\n",
                env!("CARGO_PKG_VERSION"),
                facts.node_id,
                facts.keys
            );
            resp::bulk(&mut out, text.as_bytes());
        } else {
            resp::integer(&mut out, facts.keys as i64);
        }
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

    fn push(&mut self, p: Pending) {
        self.queued += p.bytes;
        self.queue.push_back(p);
        self.release();
    }

    /// The replies finished so far, if any.
    fn take_ready(&mut self) -> Option<Bytes> {
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
    fn local(&mut self, reply: Bytes) {
        self.push(Pending::new(Shape::Done(reply), 0));
    }

    /// A command served by native requests.
    fn native(
        &mut self,
        shape: Shape,
        frames: impl ExactSizeIterator<Item = (u8, Bytes)>,
        items: &mut Vec<Item>,
    ) {
        self.flush_ready(items);
        self.push(Pending::new(shape, frames.len()));
        for (op, payload) in frames {
            items.push(Item::Request(Frame::new(op, self.next_tag, 0, payload)));
            self.next_tag += 1;
        }
    }

    /// Hands what is ready to the node before anything that must come after it.
    fn flush_ready(&mut self, items: &mut Vec<Item>) {
        if let Some(bytes) = self.take_ready() {
            items.push(Item::Send(bytes));
        }
    }

    /// Encodes every finished entry at the front of the FIFO.
    fn release(&mut self) {
        while self.queue.front().is_some_and(Pending::finished) {
            let p = self.queue.pop_front().expect("checked");
            self.queued -= p.bytes;
            if matches!(p.shape, Shape::Last(_)) {
                self.close_due = true;
            }
            p.render(&mut self.ready);
        }
    }

    fn command(&mut self, args: &[Bytes], items: &mut Vec<Item>) {
        let mut upper = [0u8; 16];
        let name = &args[0];
        let n = args.len();
        let key = if name.len() <= upper.len() {
            upper[..name.len()].copy_from_slice(name);
            upper.make_ascii_uppercase();
            &upper[..name.len()]
        } else {
            &b"?"[..]
        };
        let arity = |ok: bool| ok.then_some(()).ok_or_else(|| wrong_arity(name));
        let result: Result<(), Bytes> = match key {
            b"GET" => arity(n == 2)
                .map(|()| self.native(Shape::Bulk, once((op::GET, args[1].clone())), items)),
            b"SET" => arity(n >= 3).and_then(|()| self.set(args, items)),
            b"DEL" | b"EXISTS" => arity(n >= 2).map(|()| {
                let o = if key == b"DEL" {
                    op::DELETE
                } else {
                    op::EXISTS
                };
                let frames = args[1..].iter().map(|k| (o, k.clone()));
                self.native(Shape::Count, frames, items)
            }),
            b"INCR" | b"DECR" => arity(n == 2).map(|()| {
                let delta = if key == b"INCR" { 1 } else { -1 };
                self.native(Shape::Int, once(incr(&args[1], delta)), items)
            }),
            b"INCRBY" | b"DECRBY" => arity(n == 3).and_then(|()| {
                let by = kv::parse_i64(&args[2])
                    .ok_or_else(|| err_reply("ERR value is not an integer or out of range"))?;
                let delta = if key == b"INCRBY" {
                    by
                } else {
                    by.checked_neg()
                        .ok_or_else(|| err_reply("ERR decrement would overflow"))?
                };
                self.native(Shape::Int, once(incr(&args[1], delta)), items);
                Ok(())
            }),
            b"MGET" => arity(n >= 2).map(|()| {
                let frames = args[1..].iter().map(|k| (op::GET, k.clone()));
                self.native(Shape::Array, frames, items)
            }),
            b"MSET" => arity(n >= 3 && n % 2 == 1).map(|()| {
                let frames = args[1..]
                    .chunks(2)
                    .map(|kv| (op::PUT, kv_payload(&kv[0], &kv[1])));
                self.native(Shape::Ok, frames, items)
            }),
            b"PING" => arity(n <= 2).map(|()| {
                let payload = args.get(1).cloned().unwrap_or_default();
                let shape = Shape::Pong { echo: n == 2 };
                self.native(shape, once((op::PING, payload)), items)
            }),
            b"ECHO" => arity(n == 2).map(|()| {
                let mut out = BytesMut::new();
                resp::bulk(&mut out, &args[1]);
                self.local(out.freeze())
            }),
            b"DBSIZE" | b"INFO" => arity(key == b"INFO" || n == 1).map(|()| {
                self.flush_ready(items);
                let info = key == b"INFO";
                self.push(Pending::new(Shape::Facts { info }, 0));
                items.push(Item::Facts);
            }),
            b"COMMAND" => self.command_command(args).map(|r| self.local(r)),
            b"CONFIG" => self.config(args).map(|r| self.local(r)),
            b"CLIENT" => self.client(args).map(|r| self.local(r)),
            b"SELECT" => arity(n == 2).and_then(|()| {
                if &args[1][..] == b"0" {
                    self.local(Bytes::from_static(b"+OK\r\n"));
                    Ok(())
                } else {
                    Err(err_reply("ERR DB index is out of range"))
                }
            }),
            b"QUIT" => {
                self.push(Pending::new(Shape::Last(Bytes::from_static(b"+OK\r\n")), 0));
                self.stopped = true;
                Ok(())
            }
            _ => {
                let mut text = format!(
                    "ERR unknown command '{}', with args beginning with: ",
                    shown(name, 128)
                );
                for a in args[1..].iter().take(8) {
                    text.push_str(&format!("'{}' ", shown(a, 32)));
                }
                Err(err_reply(&text))
            }
        };
        if let Err(reply) = result {
            self.local(reply);
        }
    }

    /// SET key value [NX|XX]
    fn set(&mut self, args: &[Bytes], items: &mut Vec<Item>) -> Result<(), Bytes> {
        let mut o = op::PUT;
        for opt in &args[3..] {
            let nx = opt.eq_ignore_ascii_case(b"NX");
            if nx || opt.eq_ignore_ascii_case(b"XX") {
                if o != op::PUT {
                    return Err(err_reply("ERR syntax error"));
                }
                o = if nx { op::CREATE } else { op::UPDATE };
            } else if [&b"EX"[..], b"PX", b"EXAT", b"PXAT", b"KEEPTTL", b"GET"]
                .iter()
                .any(|x| opt.eq_ignore_ascii_case(x))
            {
                return Err(err_reply(&format!(
                    "ERR SET option '{}' is not supported by gtstore",
                    shown(opt, 16)
                )));
            } else {
                return Err(err_reply("ERR syntax error"));
            }
        }
        self.native(Shape::Ok, once((o, kv_payload(&args[1], &args[2]))), items);
        Ok(())
    }

    fn command_command(&self, args: &[Bytes]) -> Result<Bytes, Bytes> {
        let sub = args.get(1).map(|s| s.to_ascii_uppercase());
        let mut out = BytesMut::new();
        match sub.as_deref() {
            // The details Redis gives are not kept: clients fall back to their own.
            None | Some(b"DOCS") => resp::array(&mut out, 0),
            Some(b"COUNT") => resp::integer(&mut out, COMMANDS.len() as i64),
            Some(b"INFO") => {
                resp::array(&mut out, args.len() - 2);
                for _ in 2..args.len() {
                    resp::nil(&mut out);
                }
            }
            Some(other) => {
                return Err(err_reply(&format!(
                    "ERR unknown subcommand '{}' of COMMAND",
                    shown(other, 32)
                )))
            }
        }
        Ok(out.freeze())
    }

    fn config(&self, args: &[Bytes]) -> Result<Bytes, Bytes> {
        let sub = args.get(1).map(|s| s.to_ascii_uppercase());
        match sub.as_deref() {
            Some(b"GET") if args.len() >= 3 => {
                let found: Vec<&(&str, &str)> = CONFIG
                    .iter()
                    .filter(|(k, _)| args[2..].iter().any(|p| glob(p, k.as_bytes())))
                    .collect();
                let mut out = BytesMut::new();
                resp::array(&mut out, found.len() * 2);
                for (k, v) in found {
                    resp::bulk(&mut out, k.as_bytes());
                    resp::bulk(&mut out, v.as_bytes());
                }
                Ok(out.freeze())
            }
            Some(b"GET") => Err(wrong_arity(b"config|get")),
            Some(other) => Err(err_reply(&format!(
                "ERR CONFIG {} is not supported by gtstore",
                shown(other, 32)
            ))),
            None => Err(wrong_arity(b"config")),
        }
    }

    fn client(&mut self, args: &[Bytes]) -> Result<Bytes, Bytes> {
        let sub = args.get(1).map(|s| s.to_ascii_uppercase());
        let mut out = BytesMut::new();
        match (sub.as_deref(), args.len()) {
            (Some(b"SETNAME"), 3) => {
                self.name = (!args[2].is_empty()).then(|| args[2].clone());
                resp::simple(&mut out, b"OK");
            }
            (Some(b"SETINFO"), 4) | (Some(b"NO-EVICT" | b"NO-TOUCH"), 3) => {
                resp::simple(&mut out, b"OK")
            }
            (Some(b"GETNAME"), 2) => match &self.name {
                Some(n) => resp::bulk(&mut out, n),
                None => resp::nil(&mut out),
            },
            (Some(b"ID"), 2) => resp::integer(&mut out, self.id as i64),
            (Some(b"INFO" | b"LIST"), _) => {
                let name = self
                    .name
                    .as_deref()
                    .map(|n| shown(n, 64))
                    .unwrap_or_default();
                let line = format!("id={} name={} db=0 resp=2\n", self.id, name);
                resp::bulk(&mut out, line.as_bytes());
            }
            (Some(other), _) => {
                return Err(err_reply(&format!(
                    "ERR unknown subcommand or wrong number of arguments for CLIENT {}",
                    shown(other, 32)
                )))
            }
            (None, _) => return Err(wrong_arity(b"client")),
        }
        Ok(out.freeze())
    }
}

/// A `KV` payload: `KLEN SP KEY VALUE`.
fn kv_payload(key: &[u8], value: &[u8]) -> Bytes {
    let mut p = Vec::with_capacity(key.len() + value.len() + 6);
    p.extend_from_slice(key.len().to_string().as_bytes());
    p.push(b' ');
    p.extend_from_slice(key);
    p.extend_from_slice(value);
    Bytes::from(p)
}

/// An INCR request: `KLEN SP KEY [SP DELTA]`.
fn incr(key: &[u8], delta: i64) -> (u8, Bytes) {
    let mut p = kv_payload(key, b"").to_vec();
    if delta != 1 {
        p.extend_from_slice(format!(" {delta}").as_bytes());
    }
    (op::INCR, Bytes::from(p))
}

/// Every RESP session of a node, and the glue between them and the node's outputs.
#[derive(Debug)]
pub struct RespFront {
    limits: Limits,
    sessions: HashMap<ConnId, RespSession>,
    next_id: u64,
    /// Connections whose backlog changed this step (hold checks).
    touched: Vec<ConnId>,
    scratch: Vec<Output>,
}

impl RespFront {
    /// A front with no connections; commands are bounded by `limits`.
    pub fn new(limits: Limits) -> RespFront {
        RespFront {
            limits,
            sessions: HashMap::new(),
            next_id: 1,
            touched: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Whether `conn` is a RESP connection.
    pub fn has(&self, conn: ConnId) -> bool {
        self.sessions.contains_key(&conn)
    }

    /// A connection arrived on the RESP listener: switch it to raw bytes.
    pub fn accept(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        let session = RespSession::new(self.limits.clone(), self.next_id);
        self.next_id += 1;
        self.sessions.insert(conn, session);
        out.push(Output::Raw { conn });
    }

    /// Bytes arrived on a RESP connection (see [`RespSession::feed`]).
    pub fn feed(&mut self, conn: ConnId, data: BytesMut) -> Vec<Item> {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return vec![Item::Close];
        };
        if !std::mem::replace(&mut s.touched, true) {
            self.touched.push(conn);
        }
        s.feed(data)
    }

    /// The node's facts for the oldest DBSIZE or INFO waiting on `conn`.
    pub fn facts(&mut self, conn: ConnId, facts: NodeFacts) -> Option<Bytes> {
        self.sessions.get_mut(&conn)?.facts(facts)
    }

    /// The connection is gone.
    pub fn closed(&mut self, conn: ConnId) {
        self.sessions.remove(&conn);
    }

    /// Rewrites the outputs pushed since `mark`: a native reply to a RESP
    /// connection becomes RESP bytes (or nothing, while its command waits for
    /// more), followed by a close if that was the session's last reply. Holds are
    /// reconciled: `node_held` are the connections the node itself holds; a
    /// connection stays held while either the node or its session wants it.
    ///
    /// Consecutive replies to one session (a pipelined batch answered in one step)
    /// leave as one `SendBytes`: the session's reply bytes are taken when the run
    /// of its replies ends, before any other output, so the order of outputs is
    /// kept.
    pub fn translate(&mut self, mark: usize, out: &mut Vec<Output>, node_held: &HashSet<ConnId>) {
        if self.sessions.is_empty() {
            self.touched.clear();
            return;
        }
        self.scratch.extend(out.drain(mark..));
        // The session whose replies are rendered but not yet taken.
        let mut open: Option<ConnId> = None;
        let take = |sessions: &mut HashMap<ConnId, RespSession>,
                    open: &mut Option<ConnId>,
                    out: &mut Vec<Output>| {
            if let Some(conn) = open.take() {
                if let Some(bytes) = sessions.get_mut(&conn).and_then(|s| s.take_ready()) {
                    out.push(Output::SendBytes { conn, bytes });
                }
            }
        };
        for o in self.scratch.drain(..) {
            let conn = match &o {
                Output::Send { conn, .. } | Output::Hold { conn, .. } => *conn,
                _ => {
                    take(&mut self.sessions, &mut open, out);
                    out.push(o);
                    continue;
                }
            };
            if open.is_some_and(|c| c != conn) || matches!(o, Output::Hold { .. }) {
                take(&mut self.sessions, &mut open, out);
            }
            let Some(s) = self.sessions.get_mut(&conn) else {
                out.push(o);
                continue;
            };
            match o {
                Output::Send { frame, .. } => {
                    s.absorb_reply(&frame);
                    open = Some(conn);
                    if s.take_close() {
                        take(&mut self.sessions, &mut open, out);
                        out.push(Output::Close { conn });
                    }
                    let s = self.sessions.get_mut(&conn).expect("looked up above");
                    if !std::mem::replace(&mut s.touched, true) {
                        self.touched.push(conn);
                    }
                }
                Output::Hold { hold, .. } => {
                    if hold || !s.over() {
                        s.held = hold;
                        out.push(Output::Hold { conn, hold });
                    }
                }
                o => out.push(o),
            }
        }
        take(&mut self.sessions, &mut open, out);
        for conn in self.touched.drain(..) {
            let Some(s) = self.sessions.get_mut(&conn) else {
                continue;
            };
            s.touched = false;
            if !s.held && s.over() {
                s.held = true;
                out.push(Output::Hold { conn, hold: true });
            } else if s.held && s.drained() && !node_held.contains(&conn) {
                s.held = false;
                out.push(Output::Hold { conn, hold: false });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> RespSession {
        RespSession::new(Limits::new(1 << 20), 7)
    }

    fn cmd(args: &[&str]) -> BytesMut {
        let mut b = BytesMut::new();
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        resp::command(&mut b, &a);
        b
    }

    /// The native requests among `items`.
    fn requests(items: &[Item]) -> Vec<(u8, Vec<u8>, u64)> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Request(f) => Some((f.op, f.payload.to_vec(), f.client_id)),
                _ => None,
            })
            .collect()
    }

    /// Every byte the session sends: items now, replies later.
    fn sent(items: &[Item]) -> Vec<u8> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Send(b) => Some(b.to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn answer(s: &mut RespSession, tag: u64, op: u8, payload: &str) -> Vec<u8> {
        s.reply(&Frame::new(op, tag, 3, payload.to_string()))
            .map(|b| b.to_vec())
            .unwrap_or_default()
    }

    #[test]
    fn single_key_commands_map_to_native_requests() {
        // The command, the request it becomes, the node's reply, the RESP reply.
        type Case<'a> = (&'a [&'a str], u8, &'a str, u8, &'a str, &'a str);
        let cases: &[Case] = &[
            (&["GET", "k"], op::GET, "k", op::VALUE, "v", "$1\r\nv\r\n"),
            (&["get", "k"], op::GET, "k", op::NOT_FOUND, "", "$-1\r\n"),
            (&["SET", "k", "v"], op::PUT, "1 kv", op::OK, "", "+OK\r\n"),
            (
                &["SET", "k", "v", "nx"],
                op::CREATE,
                "1 kv",
                op::CONFLICT,
                "",
                "$-1\r\n",
            ),
            (
                &["SET", "k", "v", "XX"],
                op::UPDATE,
                "1 kv",
                op::NOT_FOUND,
                "",
                "$-1\r\n",
            ),
            (
                &["SET", "k", "v", "XX"],
                op::UPDATE,
                "1 kv",
                op::OK,
                "",
                "+OK\r\n",
            ),
            (&["INCR", "n"], op::INCR, "1 n", op::VALUE, "5", ":5\r\n"),
            (
                &["DECR", "n"],
                op::INCR,
                "1 n -1",
                op::VALUE,
                "-1",
                ":-1\r\n",
            ),
            (
                &["INCRBY", "n", "10"],
                op::INCR,
                "1 n 10",
                op::VALUE,
                "10",
                ":10\r\n",
            ),
            (
                &["DECRBY", "n", "-3"],
                op::INCR,
                "1 n 3",
                op::VALUE,
                "3",
                ":3\r\n",
            ),
            (
                &["INCR", "s"],
                op::INCR,
                "1 s",
                op::ERR,
                "NOTINT not a number",
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["GET", "k"],
                op::GET,
                "k",
                op::ERR,
                "UNAVAILABLE node 2 is down",
                "-ERR UNAVAILABLE node 2 is down\r\n",
            ),
            (&["PING"], op::PING, "", op::PONG, "", "+PONG\r\n"),
            (
                &["PING", "hi"],
                op::PING,
                "hi",
                op::PONG,
                "hi",
                "$2\r\nhi\r\n",
            ),
            (&["DEL", "k"], op::DELETE, "k", op::OK, "", ":1\r\n"),
            (
                &["EXISTS", "k"],
                op::EXISTS,
                "k",
                op::NOT_FOUND,
                "",
                ":0\r\n",
            ),
            (
                &["GET", "k"],
                op::GET,
                "k",
                op::OK,
                "",
                "-ERR unexpected OK reply from the node\r\n",
            ),
        ];
        for (args, req, payload, rep, rpayload, want) in cases {
            let mut s = session();
            let items = s.feed(cmd(args));
            assert_eq!(
                requests(&items),
                vec![(*req, payload.as_bytes().to_vec(), 1)],
                "{args:?}"
            );
            assert!(sent(&items).is_empty());
            let got = answer(&mut s, 1, *rep, rpayload);
            assert_eq!(String::from_utf8_lossy(&got), *want, "{args:?}");
            assert_eq!(s.pending(), 0);
        }
    }

    #[test]
    fn multi_key_commands_aggregate() {
        let mut s = session();
        let items = s.feed(cmd(&["MGET", "a", "b", "c"]));
        assert_eq!(requests(&items).len(), 3);
        assert!(answer(&mut s, 1, op::VALUE, "1").is_empty());
        assert!(answer(&mut s, 2, op::NOT_FOUND, "").is_empty());
        let got = answer(&mut s, 3, op::VALUE, "");
        assert_eq!(&got[..], b"*3\r\n$1\r\n1\r\n$-1\r\n$0\r\n\r\n");

        let items = s.feed(cmd(&["MSET", "a", "1", "bb", "2"]));
        assert_eq!(
            requests(&items),
            vec![
                (op::PUT, b"1 a1".to_vec(), 4),
                (op::PUT, b"2 bb2".to_vec(), 5)
            ]
        );
        assert!(answer(&mut s, 4, op::OK, "").is_empty());
        assert_eq!(&answer(&mut s, 5, op::OK, "")[..], b"+OK\r\n");

        let items = s.feed(cmd(&["DEL", "a", "b", "a"]));
        assert_eq!(requests(&items).len(), 3);
        answer(&mut s, 6, op::OK, "");
        answer(&mut s, 7, op::NOT_FOUND, "");
        assert_eq!(&answer(&mut s, 8, op::OK, "")[..], b":2\r\n");

        // The first error wins, once every reply is in.
        s.feed(cmd(&["EXISTS", "a", "b"]));
        assert!(answer(&mut s, 9, op::ERR, "TIMEOUT slow").is_empty());
        assert_eq!(
            &answer(&mut s, 10, op::OK, "")[..],
            b"-ERR TIMEOUT slow\r\n"
        );
    }

    #[test]
    fn local_answers_keep_their_place_behind_pending_ones() {
        let mut s = session();
        let mut wire = cmd(&["ECHO", "first"]);
        wire.extend_from_slice(&cmd(&["GET", "k"]));
        wire.extend_from_slice(&cmd(&["ECHO", "second"]));
        wire.extend_from_slice(&cmd(&["DBSIZE"]));
        wire.extend_from_slice(&cmd(&["NOSUCH", "x"]));
        let items = s.feed(wire);
        assert_eq!(items[0], Item::Send(Bytes::from_static(b"$5\r\nfirst\r\n")));
        assert!(matches!(items[1], Item::Request(_)));
        assert_eq!(items[2], Item::Facts);
        assert_eq!(items.len(), 3);
        assert!(
            s.facts(NodeFacts {
                node_id: 3,
                keys: 12
            })
            .is_none(),
            "waits for GET"
        );
        let got = answer(&mut s, 1, op::VALUE, "v");
        assert_eq!(
            String::from_utf8_lossy(&got),
            "$1\r\nv\r\n$6\r\nsecond\r\n:12\r\n\
             -ERR unknown command 'NOSUCH', with args beginning with: 'x' \r\n"
        );
    }

    #[test]
    fn local_commands() {
        let cases: &[(&[&str], &str)] = &[
            (&["ECHO", "a b"], "$3\r\na b\r\n"),
            (&["COMMAND", "DOCS"], "*0\r\n"),
            (&["command"], "*0\r\n"),
            (&["COMMAND", "COUNT"], ":19\r\n"),
            (&["COMMAND", "INFO", "get"], "*1\r\n$-1\r\n"),
            (&["CONFIG", "GET", "save"], "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
            (
                &["CONFIG", "GET", "appendonly"],
                "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
            ),
            (&["CONFIG", "GET", "nope"], "*0\r\n"),
            (
                &["CONFIG", "GET", "*only", "SAVE"],
                "*4\r\n$4\r\nsave\r\n$0\r\n\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
            ),
            (
                &["CONFIG", "SET", "x", "y"],
                "-ERR CONFIG SET is not supported by gtstore\r\n",
            ),
            (&["CLIENT", "SETNAME", "bob"], "+OK\r\n"),
            (&["CLIENT", "GETNAME"], "$-1\r\n"),
            (&["CLIENT", "ID"], ":7\r\n"),
            (&["CLIENT", "SETINFO", "lib-name", "x"], "+OK\r\n"),
            (&["SELECT", "0"], "+OK\r\n"),
            (&["SELECT", "1"], "-ERR DB index is out of range\r\n"),
            (
                &["GET"],
                "-ERR wrong number of arguments for 'get' command\r\n",
            ),
            (
                &["GET", "a", "b"],
                "-ERR wrong number of arguments for 'get' command\r\n",
            ),
            (
                &["MSET", "a"],
                "-ERR wrong number of arguments for 'mset' command\r\n",
            ),
            (
                &["MSET", "a", "1", "b"],
                "-ERR wrong number of arguments for 'mset' command\r\n",
            ),
            (
                &["DBSIZE", "x"],
                "-ERR wrong number of arguments for 'dbsize' command\r\n",
            ),
            (
                &["SET", "k", "v", "EX", "10"],
                "-ERR SET option 'EX' is not supported by gtstore\r\n",
            ),
            (&["SET", "k", "v", "NX", "XX"], "-ERR syntax error\r\n"),
            (&["SET", "k", "v", "bogus"], "-ERR syntax error\r\n"),
            (
                &["INCRBY", "k", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["DECRBY", "k", "-9223372036854775808"],
                "-ERR decrement would overflow\r\n",
            ),
            (
                &["FLUSHALL", "a\r\nb"],
                "-ERR unknown command 'FLUSHALL', with args beginning with: 'a??b' \r\n",
            ),
        ];
        for (args, want) in cases {
            let items = session().feed(cmd(args));
            assert!(requests(&items).is_empty(), "{args:?}");
            assert_eq!(String::from_utf8_lossy(&sent(&items)), *want, "{args:?}");
        }
        let mut s = session();
        s.feed(cmd(&["CLIENT", "SETNAME", "bob"]));
        assert_eq!(
            &sent(&s.feed(cmd(&["CLIENT", "GETNAME"])))[..],
            b"$3\r\nbob\r\n"
        );
    }

    #[test]
    fn info_and_dbsize_use_the_node_facts() {
        let mut s = session();
        let items = s.feed(cmd(&["DBSIZE"]));
        assert_eq!(items, vec![Item::Facts]);
        let got = s
            .facts(NodeFacts {
                node_id: 2,
                keys: 41,
            })
            .unwrap();
        assert_eq!(&got[..], b":41\r\n");
        s.feed(cmd(&["INFO"]));
        let got = s
            .facts(NodeFacts {
                node_id: 2,
                keys: 41,
            })
            .unwrap();
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with('$') && text.contains("db0:keys=41,"),
            "{text}"
        );
        assert!(text.contains("gtstore_node_id:2\r\n"), "{text}");
    }

    #[test]
    fn protocol_error_answers_after_earlier_replies_then_closes() {
        let mut s = session();
        let mut wire = cmd(&["GET", "k"]);
        wire.extend_from_slice(b"*1\r\n$x\r\n");
        let items = s.feed(wire);
        assert_eq!(items.len(), 1);
        assert!(
            s.feed(cmd(&["PING"])).is_empty(),
            "input after the error is ignored"
        );
        let got = answer(&mut s, 1, op::NOT_FOUND, "");
        assert_eq!(
            String::from_utf8_lossy(&got),
            "$-1\r\n-ERR Protocol error: invalid bulk length\r\n"
        );
        assert!(s.take_close());
        assert!(!s.take_close());

        // With nothing pending, the error and the close come at once.
        let items = session().feed(BytesMut::from(&b"*1\r\n$99999999999\r\n"[..]));
        assert!(
            matches!(&items[0], Item::Send(b) if b.starts_with(b"-ERR Protocol error: bulk length"))
        );
        assert_eq!(items[1], Item::Close);
    }

    #[test]
    fn quit_answers_ok_and_closes() {
        let mut wire = cmd(&["QUIT"]);
        wire.extend_from_slice(&cmd(&["PING"]));
        let items = session().feed(wire);
        assert_eq!(
            items,
            vec![Item::Send(Bytes::from_static(b"+OK\r\n")), Item::Close]
        );
    }

    #[test]
    fn a_reply_out_of_order_closes_instead_of_lying() {
        let mut s = session();
        s.feed(cmd(&["GET", "a"]));
        s.feed(cmd(&["GET", "b"]));
        let got = answer(&mut s, 2, op::VALUE, "x");
        assert!(got.starts_with(b"-ERR internal error"));
        assert!(s.take_close());
        assert!(answer(&mut s, 1, op::VALUE, "y").is_empty());
    }

    #[test]
    fn inline_commands_and_split_input() {
        let mut s = session();
        let items = s.feed(BytesMut::from(&b"SET k hello\r\nGE"[..]));
        assert_eq!(requests(&items), vec![(op::PUT, b"1 khello".to_vec(), 1)]);
        let items = s.feed(BytesMut::from(&b"T k\n"[..]));
        assert_eq!(requests(&items), vec![(op::GET, b"k".to_vec(), 2)]);
    }

    #[test]
    fn backlog_is_bounded_by_holds() {
        let mut front = RespFront::new(Limits::new(1 << 20));
        let conn = ConnId::new(4, 1);
        let mut out = Vec::new();
        front.accept(conn, &mut out);
        assert!(matches!(out[0], Output::Raw { .. }));
        out.clear();
        // One GET stays unanswered; ECHOs pile up behind it.
        let mut wire = cmd(&["GET", "slow"]);
        for _ in 0..(HOLD_ENTRIES + 1) {
            wire.extend_from_slice(&cmd(&["ECHO", "x"]));
        }
        let items = front.feed(conn, wire);
        assert_eq!(requests(&items).len(), 1);
        let held = HashSet::new();
        front.translate(0, &mut out, &held);
        assert!(
            matches!(out[..], [Output::Hold { hold: true, .. }]),
            "{out:?}"
        );
        out.clear();
        // The node releases its own hold: the session still wants it.
        out.push(Output::Hold { conn, hold: false });
        front.translate(0, &mut out, &held);
        assert!(out.is_empty(), "{out:?}");
        // The reply drains everything and the hold goes.
        out.push(Output::Send {
            conn,
            frame: Frame::new(op::NOT_FOUND, 1, 1, ""),
        });
        front.translate(0, &mut out, &held);
        match &out[..] {
            [Output::SendBytes { bytes, .. }, Output::Hold { hold: false, .. }] => {
                assert_eq!(bytes.len(), 5 + (HOLD_ENTRIES + 1) * 7)
            }
            o => panic!("{o:?}"),
        }
        // Not a RESP connection: left alone.
        let other = ConnId::new(5, 1);
        let mut out = vec![Output::Send {
            conn: other,
            frame: Frame::new(op::OK, 1, 1, ""),
        }];
        front.translate(0, &mut out, &held);
        assert!(matches!(out[..], [Output::Send { .. }]));
    }

    #[test]
    fn a_node_serves_resp_connections_through_its_native_path() {
        use crate::reactor::{Input, Service};
        use crate::storage::{NodeConfig, StorageNode};
        let cfg = NodeConfig::new("127.0.0.1:7001".into(), "127.0.0.1:7000".parse().unwrap());
        let mut node = StorageNode::new(cfg);
        node.enable_resp(Limits::new(1 << 20));
        let mut step = |input: Input| {
            let mut out = Vec::new();
            node.step(0, input, &mut out);
            out
        };
        let (resp_conn, native_conn) = (ConnId::new(1, 1), ConnId::new(2, 1));
        let out = step(Input::Accepted {
            conn: resp_conn,
            listener: LISTENER,
        });
        assert!(matches!(out[..], [Output::Raw { conn }] if conn == resp_conn));
        // A native client's connection is untouched by the front.
        assert!(step(Input::Accepted {
            conn: native_conn,
            listener: 0
        })
        .is_empty());
        let mut wire = cmd(&["SET", "k", "v"]);
        wire.extend_from_slice(&cmd(&["MGET", "k", "x"]));
        wire.extend_from_slice(&cmd(&["DBSIZE"]));
        wire.extend_from_slice(b"PING\r\n");
        let out = step(Input::Data {
            conn: resp_conn,
            data: wire,
        });
        let bytes: Vec<u8> = out
            .iter()
            .flat_map(|o| match o {
                Output::SendBytes { conn, bytes } if *conn == resp_conn => bytes.to_vec(),
                o => panic!("unexpected {o:?}"),
            })
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            "+OK\r\n*2\r\n$1\r\nv\r\n$-1\r\n:1\r\n+PONG\r\n"
        );
        // The native connection sees the same data, in native frames.
        let out = step(Input::Frame {
            conn: native_conn,
            frame: Frame::new(op::GET, 5, 0, "k"),
        });
        assert!(
            matches!(&out[..], [Output::Send { frame, .. }] if frame.op == op::VALUE && frame.payload == "v")
        );
        // A protocol error: the reply, then the close; the session is gone once closed.
        let out = step(Input::Data {
            conn: resp_conn,
            data: BytesMut::from(&b"*1\r\n$x\r\n"[..]),
        });
        assert!(
            matches!(&out[..], [Output::SendBytes { .. }, Output::Close { .. }]),
            "{out:?}"
        );
        step(Input::Closed { conn: resp_conn });
        let out = step(Input::Data {
            conn: resp_conn,
            data: cmd(&["PING"]),
        });
        assert!(matches!(out[..], [Output::Close { .. }]), "{out:?}");
    }

    #[test]
    fn a_pipelined_batch_leaves_in_one_buffer() {
        use crate::reactor::{Input, Service};
        use crate::storage::{NodeConfig, StorageNode};
        let cfg = NodeConfig::new("127.0.0.1:7001".into(), "127.0.0.1:7000".parse().unwrap());
        let mut node = StorageNode::new(cfg);
        node.enable_resp(Limits::new(1 << 20));
        let conn = ConnId::new(1, 1);
        let mut out = Vec::new();
        node.step(
            0,
            Input::Accepted {
                conn,
                listener: LISTENER,
            },
            &mut out,
        );
        let mut wire = cmd(&["SET", "a", "1"]);
        for c in [
            &["GET", "a"][..],
            &["GET", "b"],
            &["ECHO", "e"],
            &["GET", "a"],
        ] {
            wire.extend_from_slice(&cmd(c));
        }
        out.clear();
        node.step(0, Input::Data { conn, data: wire }, &mut out);
        // Every reply of the batch (the ECHO's, answered by the session, waits in
        // order behind the GET before it) leaves in one buffer.
        let sends: Vec<String> = out
            .iter()
            .map(|o| match o {
                Output::SendBytes { bytes, .. } => String::from_utf8_lossy(bytes).into_owned(),
                o => panic!("unexpected {o:?}"),
            })
            .collect();
        assert_eq!(
            sends.concat(),
            "+OK\r\n$1\r\n1\r\n$-1\r\n$1\r\ne\r\n$1\r\n1\r\n"
        );
        assert_eq!(sends.len(), 1, "{sends:?}");
    }

    #[test]
    fn glob_patterns() {
        assert!(glob(b"*", b"save"));
        assert!(glob(b"s?ve", b"SAVE"));
        assert!(glob(b"*only", b"appendonly"));
        assert!(!glob(b"save?", b"save"));
    }
}
