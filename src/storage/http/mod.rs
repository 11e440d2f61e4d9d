//! The storage node's HTTP front: a gateway that turns seed 002's JSON
//! endpoints into the node's own requests and their replies back into JSON.
//!
//! It wraps the node's service like the RESP front (see [`super::gateway`]):
//! the node serves the native requests an HTTP request becomes as requests
//! from that connection (the same routing to the key's lead replica, the same
//! quorum rounds, forwarding and reply order), and every reply to an HTTP
//! connection comes back as a typed gateway event ([`HttpFront::deliver`]),
//! counted towards the HTTP request it belongs to. The front's bytes go
//! straight to the step's outputs, in the order the [`Front`] releases them.
//! Nothing here does I/O or touches the data.
//!
//! The endpoints (docs/protocol.md, "HTTP front"; bodies in
//! [`crate::http::json`]):
//!
//! - `PUT /set`: one native `PUT` per pair, all in flight at once; the reply
//!   counts the writes that were acknowledged and lists the keys that were not
//!   (`[{"keys_added": N, "keys_failed": [...]}]`), so one failure hides no
//!   other.
//! - `POST /fetch`: one `GET` per key; the pairs found, in request order.
//! - `POST /query`: one `EXISTS` per key; `true` or `false` per key.
//! - `GET /fetch`: the cluster's pairs through native SCANs, streamed chunked
//!   a page per drained connection, or one page with `limit` (see `scan`).
//! - `GET /metrics`: Prometheus text (see [`metrics`]), from the node's facts.
//!
//! When a read of `/fetch` or `/query` fails (no read quorum, a timeout), the
//! reply is a `503` naming the keys that could not be read rather than an
//! answer that silently leaves them out. A body that does not parse, or a key
//! that is empty or longer than [`kv::MAX_KEY`], is a `400` before anything is
//! sent to the node: a request is applied wholly or not at all until its keys
//! go out, and then each key's outcome is reported.
//!
//! Order. Native replies to a connection come in request order, so each
//! connection keeps a FIFO of HTTP requests waiting for replies, each with the
//! number still due; a reply goes to the oldest that waits. Each native request
//! carries a tag counted per connection and its reply must carry the tag
//! expected next; a mismatch is a broken invariant, answered `500` and the
//! connection closed. The HTTP replies leave in request order through the
//! [`Front`] (keep-alive, pipelining, limits).
//!
//! Client password. When the node has one, every request (`/metrics` too) must
//! carry `Authorization: Bearer <password>`; any other gets `401` with
//! `WWW-Authenticate: Bearer`, and nothing is sent to the node.
//!
//! Bounds. A body is at most the node's frame limit (`413` above, from the
//! [`Front`]), so an HTTP request becomes at most that many bytes of native
//! requests; a `/fetch` whose values add up to more than the frame limit is
//! answered `413` (`reply_too_large`) instead of being built. A connection is
//! held (not read) while the [`Front`]'s pipeline is full or the node's reply
//! backlog for it is over its bounds, and read again when both drained.

pub mod metrics;
mod scan;

use super::gateway::Event;
use crate::http::json::{self, Datum};
use crate::http::{self as web, Front, Limits, RequestId, Response};
use crate::protocol::{batch, kv, op, Frame};
use crate::reactor::{ConnId, Millis, Output};
use bytes::{Bytes, BytesMut};
use metrics::Stats;
use serde_json::json;
use std::collections::VecDeque;

/// The endpoints: path and methods (`HEAD` goes with `GET`).
const ENDPOINTS: &[(&str, &[&str])] = &[
    ("/set", &["PUT"]),
    ("/fetch", &["GET", "POST"]),
    ("/query", &["POST"]),
    ("/metrics", &["GET"]),
];

/// What the node must do for the front.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// Serve this native request as if a client had sent it on the connection.
    Request(Frame),
    /// `GET /metrics`: answer it with [`HttpFront::metrics`].
    Metrics(RequestId),
}

/// Which key-value endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Set,
    Fetch,
    Query,
    /// `GET /fetch`.
    Scan,
}

impl Kind {
    fn endpoint(self) -> &'static str {
        match self {
            Kind::Set => "/set",
            Kind::Fetch | Kind::Scan => "/fetch",
            Kind::Query => "/query",
        }
    }

    fn op(self) -> u8 {
        match self {
            Kind::Set => op::PUT,
            Kind::Fetch => op::GET,
            Kind::Query => op::EXISTS,
            Kind::Scan => op::SCAN,
        }
    }
}

/// An HTTP request waiting for its native replies.
struct Job {
    id: RequestId,
    kind: Kind,
    started: Millis,
    keys: Vec<Bytes>,
    /// Replies taken so far (the next one is for `keys[done]`).
    done: usize,
    /// Writes acknowledged (`/set`).
    added: u64,
    /// Indices of keys whose request failed, and the first failure's text.
    failed: Vec<usize>,
    first_error: Option<String>,
    /// Values found (`/fetch`), with their key's index.
    found: Vec<(usize, Bytes)>,
    /// Whether each key exists (`/query`).
    exists: Vec<bool>,
    /// Bytes of values held in `found`.
    bytes: usize,
    /// The page of a `GET /fetch`.
    scan: Option<Box<scan::ScanJob>>,
}

/// One HTTP connection's gateway state.
#[derive(Default)]
struct Conn {
    jobs: VecDeque<Job>,
    next_tag: u64,
    expect_tag: u64,
    /// Holds wanted by the node (reply backlog) and by the front (pipeline).
    node_held: bool,
    front_held: bool,
    /// Whether the reactor is holding the connection.
    held: bool,
    /// A broken invariant: nothing more is served.
    broken: bool,
}

/// The HTTP listener's connections and the node's HTTP counters.
pub struct HttpFront {
    listener: usize,
    front: Front,
    conns: crate::reactor::ConnMap<Conn>,
    /// Largest `/fetch` reply, in value bytes.
    max_reply: usize,
    /// Connections whose front hold was lifted, or whose `GET /fetch` is
    /// done: to be served again ([`HttpFront::take_work`]).
    resume: Vec<ConnId>,
    /// Native requests to send (the next SCAN of a page).
    requests: Vec<(ConnId, Frame)>,
    /// The node's HTTP counters (see [`metrics`]).
    pub stats: Stats,
    /// The client password every request must carry (`Authorization: Bearer`).
    password: Option<Bytes>,
}

impl HttpFront {
    /// A front for listener `listener`; bodies and `/fetch` replies are bounded
    /// by `max_body` bytes.
    pub fn new(listener: usize, max_body: usize) -> HttpFront {
        HttpFront {
            listener,
            front: Front::new(Limits {
                max_body,
                ..Limits::default()
            }),
            conns: Default::default(),
            max_reply: max_body,
            resume: Vec::new(),
            requests: Vec::new(),
            stats: Stats::new(),
            password: None,
        }
    }

    /// Every request from now on, `/metrics` included, must carry
    /// `Authorization: Bearer <password>`; others get `401`.
    pub fn require_password(&mut self, password: Bytes) {
        self.password = Some(password);
    }

    /// Whether `req` carries the password (or none is required).
    fn authorized(&self, req: &web::Request) -> bool {
        let Some(want) = &self.password else {
            return true;
        };
        let Some(value) = req.header("authorization") else {
            return false;
        };
        let given = match value.iter().position(|&b| b == b' ') {
            Some(i) if value[..i].eq_ignore_ascii_case(b"bearer") => &value[i + 1..],
            _ => return false,
        };
        given.len() == want.len()
            && given
                .iter()
                .zip(want.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// The listener this front serves.
    pub fn listener(&self) -> usize {
        self.listener
    }

    /// Whether `conn` is one of this front's connections.
    pub fn has(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// Open HTTP connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// A connection arrived on the HTTP listener: its bytes come raw from now on.
    pub fn accept(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        let c = Conn {
            next_tag: 1,
            expect_tag: 1,
            ..Conn::default()
        };
        self.conns.insert(conn, c);
        self.front.accepted(conn, out);
    }

    /// Bytes arrived on `conn`; take what they ask for with [`HttpFront::serve`].
    pub fn data(&mut self, conn: ConnId, data: BytesMut) {
        self.front.data(conn, data);
    }

    /// The peer will send no more.
    pub fn eof(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        self.front.eof(conn, out);
    }

    /// `conn` is gone.
    pub fn closed(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
        self.front.closed(conn);
    }

    /// Takes every whole request buffered on `conn` (while the pipeline has
    /// room, and no `GET /fetch` is in progress on it) at `now`: what the node
    /// must do for them, in order. Replies the front gives itself go to `out`.
    pub fn serve(&mut self, now: Millis, conn: ConnId, out: &mut Vec<Output>) -> Vec<Item> {
        let mut items = Vec::new();
        loop {
            let scanning = |c: &Conn| c.jobs.back().is_some_and(|j| j.kind == Kind::Scan);
            if self
                .conns
                .get(&conn)
                .is_none_or(|c| c.broken || scanning(c))
            {
                break;
            }
            let mut fo = Vec::new();
            let next = self.front.next(conn, &mut fo);
            self.absorb_front(fo, out);
            let Some((id, req)) = next else { break };
            if !self.authorized(&req) {
                let reply = error_reply(401, "auth", "the client password is required", None)
                    .with_header("WWW-Authenticate", "Bearer realm=\"gtstore\"");
                self.reply(id, "other", &reply, out);
                continue;
            }
            match web::route(&req, ENDPOINTS) {
                Err(reply) => self.reply(id, "other", &reply, out),
                Ok(i) if ENDPOINTS[i].0 == "/metrics" => items.push(Item::Metrics(id)),
                Ok(_) if req.method != "POST" && req.path == "/fetch" => {
                    self.start_scan(now, id, req.query.as_deref(), &mut items, out)
                }
                Ok(i) => {
                    let kind = [Kind::Set, Kind::Fetch, Kind::Query][i];
                    self.start(now, id, kind, &req.body, &mut items, out);
                }
            }
        }
        items
    }

    /// Parses a key-value request and sends its native requests, or answers it.
    fn start(
        &mut self,
        now: Millis,
        id: RequestId,
        kind: Kind,
        body: &[u8],
        items: &mut Vec<Item>,
        out: &mut Vec<Output>,
    ) {
        let parsed = match kind {
            Kind::Set => json::parse_set(body),
            _ => json::parse_keys(body).map(|ks| ks.into_iter().map(|k| (k, vec![])).collect()),
        };
        let pairs = match parsed {
            Ok(p) => p,
            Err(e) => return self.reply(id, kind.endpoint(), &e.response(), out),
        };
        if let Some((i, (k, _))) =
            (pairs.iter().enumerate()).find(|(_, (k, _))| kv::check_key(k).is_err())
        {
            let reply = bad_key(i, k.len());
            return self.reply(id, kind.endpoint(), &reply, out);
        }
        if pairs.is_empty() {
            let reply = finish_empty(kind);
            return self.reply(id, kind.endpoint(), &reply, out);
        }
        let c = self
            .conns
            .get_mut(&id.conn)
            .expect("served connections exist");
        let mut keys = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            let key = Bytes::from(k);
            let (o, payload) = match kind {
                Kind::Set => batch::key_request(&key, Some(&v)),
                Kind::Fetch => batch::key_request(&key, None),
                _ => (kind.op(), key.clone()),
            };
            items.push(Item::Request(Frame::new(o, c.next_tag, 0, payload)));
            c.next_tag += 1;
            keys.push(key);
        }
        c.jobs.push_back(Job {
            id,
            kind,
            started: now,
            exists: Vec::new(),
            keys,
            done: 0,
            added: 0,
            failed: Vec::new(),
            first_error: None,
            found: Vec::new(),
            bytes: 0,
            scan: None,
        });
    }

    /// Starts a page of `GET /fetch`: its first SCAN, or its error reply.
    fn start_scan(
        &mut self,
        now: Millis,
        id: RequestId,
        query: Option<&str>,
        items: &mut Vec<Item>,
        out: &mut Vec<Output>,
    ) {
        let job = match scan::ScanJob::start(query, self.max_reply) {
            Ok(j) => j,
            Err(reply) => return self.reply(id, "/fetch", &reply, out),
        };
        let c = self
            .conns
            .get_mut(&id.conn)
            .expect("served connections exist");
        let frame = Frame::new(op::SCAN, c.next_tag, 0, job.ask().payload());
        c.next_tag += 1;
        items.push(Item::Request(frame));
        c.jobs.push_back(Job {
            id,
            kind: Kind::Scan,
            started: now,
            exists: Vec::new(),
            keys: Vec::new(),
            done: 0,
            added: 0,
            failed: Vec::new(),
            first_error: None,
            found: Vec::new(),
            bytes: 0,
            scan: Some(Box::new(job)),
        });
    }

    /// What the front needs of the node next: the native requests to send,
    /// `(connection, frame)` (the next SCAN of a `GET /fetch`), and the
    /// connections to serve again ([`HttpFront::serve`]).
    pub fn take_work(&mut self) -> (Vec<(ConnId, Frame)>, Vec<ConnId>) {
        (
            std::mem::take(&mut self.requests),
            std::mem::take(&mut self.resume),
        )
    }

    /// Answers `GET /metrics` with the node's `facts`.
    pub fn metrics(&mut self, id: RequestId, facts: &metrics::NodeFacts, out: &mut Vec<Output>) {
        let text = metrics::exposition(&self.stats, facts, self.listener);
        let reply = Response::new(200, crate::http::metrics::CONTENT_TYPE, text)
            .with_header("Cache-Control", "no-store");
        self.reply(id, "/metrics", &reply, out);
    }

    /// Sends `reply` to request `id`, counting it.
    fn reply(
        &mut self,
        id: RequestId,
        endpoint: &'static str,
        reply: &Response,
        out: &mut Vec<Output>,
    ) {
        self.stats.http(endpoint, reply.status);
        let mut fo = Vec::new();
        self.front.respond(id, reply, &mut fo);
        self.absorb_front(fo, out);
    }

    /// Passes the front's outputs on, turning its holds into the connection's.
    fn absorb_front(&mut self, fo: Vec<Output>, out: &mut Vec<Output>) {
        for o in fo {
            match o {
                Output::Hold { conn, hold } => self.set_hold(conn, false, hold, out),
                o => out.push(o),
            }
        }
    }

    /// Records a hold wanted by the node (`node`) or the front, and tells the
    /// reactor when the connection's hold changes. A lifted front hold means
    /// requests may wait in its buffer: the connection is served again.
    fn set_hold(&mut self, conn: ConnId, node: bool, hold: bool, out: &mut Vec<Output>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !node && c.front_held && !hold {
            self.resume.push(conn);
        }
        if node {
            c.node_held = hold;
        } else {
            c.front_held = hold;
        }
        let want = c.node_held || c.front_held;
        if want != c.held {
            c.held = want;
            out.push(Output::Hold { conn, hold: want });
        }
    }

    /// Takes the node's `event` for HTTP connection `conn` at `now` (see
    /// [`crate::storage::gateway`]): a reply counts towards the HTTP request it
    /// belongs to (a finished request is answered), a hold of the node's is
    /// reconciled with the front's own, and a close closes. Afterwards,
    /// [`HttpFront::take_work`] says what the node should do next.
    pub fn deliver(&mut self, now: Millis, conn: ConnId, event: Event, out: &mut Vec<Output>) {
        match event {
            Event::Reply(frame) => self.absorb(now, conn, frame, out),
            Event::Hold(hold) => self.set_hold(conn, true, hold, out),
            Event::Close => out.push(Output::Close { conn }),
        }
    }

    /// One native reply to HTTP connection `conn`.
    fn absorb(&mut self, now: Millis, conn: ConnId, frame: Frame, out: &mut Vec<Output>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.broken {
            return;
        }
        if frame.client_id != c.expect_tag || c.jobs.is_empty() {
            log::error!(
                "HTTP front: reply tagged {} where {} was due; closing",
                frame.client_id,
                c.expect_tag
            );
            c.broken = true;
            let ids: Vec<RequestId> = c.jobs.drain(..).map(|j| j.id).collect();
            let reply = Response::error(500, "internal error: reply out of order");
            for id in ids {
                self.reply(id, "other", &reply, out);
            }
            out.push(Output::Close { conn });
            return;
        }
        c.expect_tag += 1;
        let job = c.jobs.front_mut().expect("checked");
        if job.scan.is_some() {
            return self.scan_reply(now, conn, frame, out);
        }
        let i = job.done;
        job.done += 1;
        self.stats.key_result(job.kind.op(), &frame);
        match (job.kind, frame.op) {
            (Kind::Set, op::OK) => job.added += 1,
            (Kind::Fetch, op::VALUE) => {
                // Past the bound the reply is a 413: stop keeping values.
                job.bytes += frame.payload.len();
                if job.bytes <= self.max_reply {
                    job.found.push((i, frame.payload));
                }
            }
            (Kind::Fetch, op::NOT_FOUND) => {}
            (Kind::Query, op::OK | op::NOT_FOUND) => job.exists.push(frame.op == op::OK),
            (_, o) => {
                job.failed.push(i);
                if job.kind == Kind::Query {
                    job.exists.push(false);
                }
                if job.first_error.is_none() {
                    let text = match o {
                        op::ERR => String::from_utf8_lossy(&frame.payload).into_owned(),
                        o => format!("unexpected {} reply", op::name(o)),
                    };
                    job.first_error = Some(text);
                }
            }
        }
        if job.done < job.keys.len() {
            return;
        }
        let job = c.jobs.pop_front().expect("checked");
        let (endpoint, id) = (job.kind.endpoint(), job.id);
        let reply = finish(&job, self.max_reply);
        self.stats
            .latency(job.kind.op(), now.saturating_sub(job.started));
        self.reply(id, endpoint, &reply, out);
    }
}

/// A JSON error reply with a kind (as [`json::BodyError::response`] writes them).
fn error_reply(
    status: u16,
    kind: &str,
    message: &str,
    extra: Option<(&str, serde_json::Value)>,
) -> Response {
    let mut v = json!({ "error": message, "kind": kind, "status": status });
    if let Some((k, x)) = extra {
        v[k] = x;
    }
    Response::json(status, &v)
}

/// The 503 for a native read that failed.
fn read_failed(frame: &Frame) -> Response {
    let text = match frame.op {
        op::ERR => String::from_utf8_lossy(&frame.payload).into_owned(),
        o => format!("unexpected {} reply", op::name(o)),
    };
    error_reply(
        503,
        "unavailable",
        &format!("a range could not be read: {text}"),
        None,
    )
}

/// The 400 for a key that is empty or too long.
fn bad_key(item: usize, len: usize) -> Response {
    let why = if len == 0 {
        "empty key".to_string()
    } else {
        format!("key of {len} bytes exceeds {}", kv::MAX_KEY)
    };
    error_reply(400, "bad_key", &format!("item {item} key: {why}"), None)
}

/// The reply to a request with no keys.
fn finish_empty(kind: Kind) -> Response {
    let text = match kind {
        Kind::Set => json::set_reply(0, std::iter::empty()),
        Kind::Fetch => json::fetch_reply(std::iter::empty()),
        Kind::Query | Kind::Scan => json::query_reply(std::iter::empty()),
    };
    Response::new(200, "application/json", text)
}

/// The reply to a request whose native replies are all in.
fn finish(job: &Job, max_reply: usize) -> Response {
    let failed = || {
        let keys: Vec<Datum> = job
            .failed
            .iter()
            .map(|&i| Datum::of(&job.keys[i]))
            .collect();
        serde_json::to_value(keys).unwrap_or_default()
    };
    if job.kind != Kind::Set && !job.failed.is_empty() {
        let message = format!(
            "{} of {} keys could not be read: {}",
            job.failed.len(),
            job.keys.len(),
            job.first_error.as_deref().unwrap_or("")
        );
        return error_reply(
            503,
            "unavailable",
            &message,
            Some(("keys_failed", failed())),
        );
    }
    let text = match job.kind {
        Kind::Set => {
            let keys = job.failed.iter().map(|&i| &job.keys[i][..]);
            json::set_reply(job.added, keys)
        }
        Kind::Fetch if job.bytes > max_reply => {
            let message = format!(
                "the values found add up to {} bytes, over the limit of {max_reply}: fetch fewer keys",
                job.bytes
            );
            return error_reply(413, "reply_too_large", &message, None);
        }
        Kind::Fetch => {
            json::fetch_reply(job.found.iter().map(|(i, v)| (&job.keys[*i][..], &v[..])))
        }
        Kind::Query | Kind::Scan => json::query_reply(
            (job.keys.iter())
                .zip(&job.exists)
                .map(|(k, &e)| (&k[..], e)),
        ),
    };
    Response::new(200, "application/json", text)
}

#[cfg(test)]
mod tests;
