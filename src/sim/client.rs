//! A simulated client: one connection to one server, one request at a time, and a
//! record of every operation for the linearizability checker.
//!
//! A client is a [`Service`] like the servers, so it talks to them through the
//! simulated TCP of [`super::world`]: it connects, sends native request frames
//! (docs/protocol.md), and cuts the replies out of the byte stream with the real
//! parser. It is sequential (the next request waits for the previous reply), which
//! is what the checker expects of one "process" in a history.
//!
//! An operation that gets no reply (the connection reset, the node crashed, the
//! client gave up after [`Client::timeout`]) is recorded as [`Outcome::NoReply`]:
//! it may or may not have taken effect. The client then drops its connection so a
//! late reply cannot be matched to the next request, and reconnects on demand.
//!
//! Every third client (index 2, 5, ...) sends its GETs and PUTs as one-key
//! MGET and MSET batches and unwraps the one result, so the batch path (its
//! own connection ids, the collection of per-key replies) runs under the same
//! faults and the same checker as single requests.
//!
//! DROP needs the admin credential: before the first one on a connection the client
//! runs the manager's `AUTH` exchange (frames with client id 0) with the default
//! admin secret and a fixed client nonce, so the run stays deterministic.

use crate::protocol::auth::{proof, AuthRequest, NONCE_LEN, ROLE_ADMIN};
use crate::protocol::{batch, op, Frame};
use crate::reactor::{ConnId, Input, Millis, Output, Service};
use bytes::Bytes;
use std::net::SocketAddr;

/// What a client asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// PUT key value.
    Put(Bytes),
    /// GET key.
    Get,
    /// DELETE key.
    Delete,
    /// CREATE key value (only if absent).
    Create(Bytes),
    /// UPDATE key value (only if present).
    Update(Bytes),
    /// INCR key delta.
    Incr(i64),
    /// Any other request, sent as is (the payload is the "key" field); used for
    /// manager ops such as DROP. Never part of a checked history.
    Other(u8),
}

impl Request {
    /// Whether the request may change the key.
    pub fn is_write(&self) -> bool {
        !matches!(self, Request::Get | Request::Other(_))
    }

    /// The request as a one-key batch (MGET, MSET) for `key`, if it is a GET
    /// or a PUT.
    pub fn batch_frame(&self, key: &[u8], client_id: u64) -> Option<Frame> {
        let (o, payload) = match self {
            Request::Get => (op::MGET, batch::encode_keys(&[key])),
            Request::Put(v) => (op::MSET, batch::encode_pairs(&[(key, v)])),
            _ => return None,
        };
        Some(Frame::new(o, client_id, 0, payload))
    }

    /// The request as a frame for `key`.
    pub fn frame(&self, key: &[u8], client_id: u64) -> Frame {
        let kv = |v: &[u8]| {
            let mut p = format!("{} ", key.len()).into_bytes();
            p.extend_from_slice(key);
            p.extend_from_slice(v);
            p
        };
        let (o, payload) = match self {
            Request::Put(v) => (op::PUT, kv(v)),
            Request::Get => (op::GET, key.to_vec()),
            Request::Delete => (op::DELETE, key.to_vec()),
            Request::Create(v) => (op::CREATE, kv(v)),
            Request::Update(v) => (op::UPDATE, kv(v)),
            Request::Incr(d) => (op::INCR, kv(format!(" {d}").as_bytes())),
            Request::Other(o) => (*o, key.to_vec()),
        };
        Frame::new(o, client_id, 0, payload)
    }
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `OK`.
    Ok,
    /// `VALUE` with its payload.
    Value(Bytes),
    /// `NOT_FOUND`.
    NotFound,
    /// `CONFLICT`.
    Conflict,
    /// `ERR`: the payload (`CODE message`).
    Err(String),
    /// Any other reply op.
    Other(u8, Bytes),
    /// The connection could not be opened: the request was never sent.
    NotSent,
    /// No reply: reset, crash or client timeout. May or may not have taken effect.
    NoReply,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Ok => write!(f, "OK"),
            Outcome::Value(v) => write!(f, "{}", String::from_utf8_lossy(v)),
            Outcome::NotFound => write!(f, "NOT_FOUND"),
            Outcome::Conflict => write!(f, "CONFLICT"),
            Outcome::Err(e) => write!(f, "ERR {}", e.split(' ').next().unwrap_or("")),
            Outcome::Other(o, _) => write!(f, "{}", op::name(*o)),
            Outcome::NotSent => write!(f, "NOT_SENT"),
            Outcome::NoReply => write!(f, "NO_REPLY"),
        }
    }
}

/// A point on the simulation's total order of events: virtual ms, then the
/// number of inputs delivered so far (ties inside one ms are real orderings too).
pub type Stamp = (Millis, u64);

/// One operation of a history.
#[derive(Clone, Debug)]
pub struct Record {
    /// The client that ran it.
    pub client: usize,
    /// The key (for `Request::Other`, the payload).
    pub key: Bytes,
    /// What was asked.
    pub request: Request,
    /// When it was sent.
    pub invoked: Stamp,
    /// When the outcome was known (`None` while in flight).
    pub completed: Option<Stamp>,
    /// The outcome (`NoReply` while in flight).
    pub outcome: Outcome,
}

/// Timer ids at or above this are the client's own (request deadlines).
const TIMER_BASE: u64 = 1 << 40;

/// A sequential simulated client.
pub struct Client {
    /// Its number in the simulation (copied into records).
    pub index: usize,
    /// The server it talks to.
    pub target: SocketAddr,
    /// How long to wait for a reply before recording `NoReply`, in ms.
    pub timeout: Millis,
    /// Set by the simulator before each step: the current [`Stamp`].
    pub clock: Stamp,
    conn: Option<ConnId>,
    connecting: bool,
    /// Index in `history` of the operation in flight.
    pending: Option<usize>,
    history: Vec<Record>,
    next_connect: u64,
    /// The connection passed the admin `AUTH`.
    admin: bool,
    /// GETs and PUTs go as one-key batches (see the module docs).
    batches: bool,
    /// The request in flight went as a batch.
    batched: bool,
}

impl Client {
    /// A client of the server at `target`.
    pub fn new(index: usize, target: SocketAddr, timeout: Millis) -> Client {
        Client {
            index,
            target,
            timeout,
            clock: (0, 0),
            conn: None,
            connecting: false,
            pending: None,
            history: Vec::new(),
            next_connect: 1,
            admin: false,
            batches: index % 3 == 2,
            batched: false,
        }
    }

    /// Talks to `target` from the next request on; returns the connection to the
    /// old target, which the caller must close.
    pub fn retarget(&mut self, target: SocketAddr) -> Option<ConnId> {
        if target == self.target || self.pending.is_some() {
            return None;
        }
        self.target = target;
        self.conn.take()
    }

    /// Whether a request is in flight.
    pub fn busy(&self) -> bool {
        self.pending.is_some()
    }

    /// Every operation so far, in invocation order.
    pub fn history(&self) -> &[Record] {
        &self.history
    }

    /// The last operation (the one `start` recorded last).
    pub fn last(&self) -> Option<&Record> {
        self.history.last()
    }

    /// Starts a request (the client must not be busy). Returns its index.
    pub fn start(&mut self, now: Millis, request: Request, key: Bytes, out: &mut Vec<Output>) {
        assert!(self.pending.is_none(), "client {} is busy", self.index);
        let id = self.history.len();
        self.history.push(Record {
            client: self.index,
            key,
            request,
            invoked: self.clock,
            completed: None,
            outcome: Outcome::NoReply,
        });
        self.pending = Some(id);
        out.push(Output::Timer {
            at: now + self.timeout,
            id: TIMER_BASE + id as u64,
        });
        match self.conn {
            Some(conn) => self.send(conn, out),
            None if self.connecting => {}
            None => {
                self.connecting = true;
                self.next_connect += 1;
                out.push(Output::Connect {
                    addr: self.target,
                    tag: self.next_connect,
                });
            }
        }
    }

    fn send(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        if let Some(i) = self.pending {
            let r = &self.history[i];
            if r.request == Request::Other(op::DROP) && !self.admin {
                let frame = Frame::new(op::AUTH, 0, 0, Bytes::new());
                out.push(Output::Send { conn, frame });
                return;
            }
            let id = 1 + i as u64;
            let batch = self.batches.then(|| r.request.batch_frame(&r.key, id));
            self.batched = matches!(batch, Some(Some(_)));
            let frame = batch
                .flatten()
                .unwrap_or_else(|| r.request.frame(&r.key, id));
            out.push(Output::Send { conn, frame });
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(i) = self.pending.take() {
            let r = &mut self.history[i];
            r.completed = Some(self.clock);
            r.outcome = outcome;
        }
    }

    /// Drops the connection (after a timeout or an unexpected frame).
    fn abandon(&mut self, out: &mut Vec<Output>) {
        self.admin = false;
        if let Some(conn) = self.conn.take() {
            out.push(Output::Close { conn });
        }
    }
}

impl Client {
    /// A reply in the admin `AUTH` exchange: prove on `CHALLENGE`, send the
    /// waiting request on `OK`; anything else ends the request with it.
    fn on_auth_reply(&mut self, conn: ConnId, frame: Frame, out: &mut Vec<Output>) {
        match frame.op {
            op::CHALLENGE => {
                let secret = crate::DEFAULT_SECRET.as_bytes();
                let Some(server) = crate::protocol::auth::from_hex(&frame.payload) else {
                    self.finish(Outcome::Other(op::CHALLENGE, frame.payload));
                    return self.abandon(out);
                };
                let client = [self.index as u8; NONCE_LEN];
                let prove = AuthRequest::Prove {
                    role: ROLE_ADMIN.into(),
                    client,
                    proof: proof(secret, &server, &client, ROLE_ADMIN),
                };
                let frame = Frame::new(op::AUTH, 0, 0, prove.encode());
                out.push(Output::Send { conn, frame });
            }
            op::OK => {
                self.admin = true;
                self.send(conn, out);
            }
            o => {
                let payload = String::from_utf8_lossy(&frame.payload).into_owned();
                self.finish(match o {
                    op::ERR => Outcome::Err(payload),
                    _ => Outcome::Other(o, frame.payload),
                });
                self.abandon(out);
            }
        }
    }
}

impl Service for Client {
    fn step(&mut self, _now: Millis, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::Connected { conn, tag } => {
                if !self.connecting || tag != self.next_connect {
                    out.push(Output::Close { conn });
                    return;
                }
                self.connecting = false;
                self.conn = Some(conn);
                self.admin = false;
                self.send(conn, out);
            }
            Input::ConnectFailed { tag } if tag == self.next_connect && self.connecting => {
                self.connecting = false;
                self.finish(Outcome::NotSent);
            }
            Input::Frame { conn, frame } if Some(conn) == self.conn && frame.client_id == 0 => {
                self.on_auth_reply(conn, frame, out)
            }
            Input::Frame { conn, frame } if Some(conn) == self.conn => {
                let expected = self.pending.map(|i| 1 + i as u64);
                if expected != Some(frame.client_id) {
                    // A reply to an abandoned request, or garbage: trust nothing.
                    self.finish(Outcome::NoReply);
                    self.abandon(out);
                    return;
                }
                let frame = match self.batched {
                    true => unwrap_batch(frame),
                    false => frame,
                };
                self.finish(match frame.op {
                    op::OK => Outcome::Ok,
                    op::VALUE => Outcome::Value(frame.payload),
                    op::NOT_FOUND => Outcome::NotFound,
                    op::CONFLICT => Outcome::Conflict,
                    op::ERR => Outcome::Err(String::from_utf8_lossy(&frame.payload).into()),
                    o => Outcome::Other(o, frame.payload),
                });
            }
            Input::Timer { id }
                if id >= TIMER_BASE && self.pending == Some((id - TIMER_BASE) as usize) =>
            {
                self.finish(Outcome::NoReply);
                self.abandon(out);
                if self.connecting {
                    // Ignore the connect's late answer.
                    self.connecting = false;
                    self.next_connect += 1;
                }
            }
            Input::Eof { conn } | Input::FrameError { conn, .. } if Some(conn) == self.conn => {
                self.finish(Outcome::NoReply);
                self.abandon(out);
            }
            Input::Closed { conn } if Some(conn) == self.conn => {
                self.conn = None;
                self.finish(Outcome::NoReply);
            }
            Input::Eof { conn } | Input::Data { conn, .. } | Input::FrameError { conn, .. } => {
                out.push(Output::Close { conn })
            }
            _ => {}
        }
    }
}

/// The one result of a one-key batch's reply, as the single request's reply
/// (an `ERR` for the whole batch stays one); a reply that is not one result is
/// left as it is (an unexpected `VALUE` to the checker).
fn unwrap_batch(frame: Frame) -> Frame {
    if frame.op != op::VALUE {
        return frame;
    }
    match batch::decode_results(&frame.payload).as_deref() {
        Ok([one]) => Frame::new(one.op, frame.client_id, frame.node_id, one.payload.clone()),
        _ => Frame::new(op::PONG, frame.client_id, frame.node_id, frame.payload),
    }
}
