//! The storage node's `GET /metrics`: Prometheus text from counters the node
//! bumps as it goes ([`Stats`], one increment per event) and facts it reads
//! from its state when scraped ([`NodeFacts`]).
//!
//! Counted as they happen: frames received by op (clients', peers' and the
//! manager's alike), connections accepted and open by listener, HTTP requests
//! by endpoint and status with their latency, and the native requests the
//! HTTP front sent by op and result (`ok`, `not_found`, or the error code:
//! `UNAVAILABLE` and `TIMEOUT` are quorum failures). Read at scrape time: keys
//! held, hints owed to peers, whether a catch-up is in progress, keys left to
//! hand over in a move, requests in quorum rounds and forwards in flight, and
//! each mesh link's state.
//!
//! Client requests on the native and RESP ports are counted by front, op and
//! result, with their latency: each is noted with its arrival time in a FIFO
//! per connection ([`Stats::request`]), and the node's replies to the
//! connection, which leave in request order, take them off
//! ([`Stats::replied`]). The FIFOs live as long as their connections, so a
//! request costs a push and a pop, no allocation; the clock is the node's
//! step time, in milliseconds. Bytes held are the engine's running total of
//! live keys and values.
//!
//! Caveats: the latency is the node's own (from the step that read the
//! request to the step that replied), not the time a request waited in socket
//! buffers, in whole milliseconds; a batch (MGET, MSET) counts as one request;
//! a RESP command answered by the front alone (ECHO, CLIENT, ...) is not
//! counted. The counts are only kept on a node that serves HTTP (where they
//! can be scraped).

use crate::http::metrics::{Exposition, Histogram, Kind};
use crate::protocol::{op, ErrorCode, Frame};
use crate::reactor::{ConnId, Millis};
use std::collections::{BTreeMap, VecDeque};

/// Upper bounds of the HTTP request latency histogram, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The port a client request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// The native protocol.
    Native = 0,
    /// RESP (native requests its commands became).
    Resp = 1,
}

impl Front {
    const ALL: [Front; 2] = [Front::Native, Front::Resp];

    fn as_str(self) -> &'static str {
        match self {
            Front::Native => "native",
            Front::Resp => "resp",
        }
    }
}

/// The result labels of client requests: by reply op, then each error code.
const RESULTS: [&str; 16] = [
    "ok",
    "not_found",
    "conflict",
    "stale",
    "other",
    "BADFRAME",
    "TOOLARGE",
    "BADOP",
    "BADKEY",
    "NOTINT",
    "UNAVAILABLE",
    "TIMEOUT",
    "UNKNOWN",
    "LIMIT",
    "AUTH",
    "INTERNAL",
];

/// Results that are quorum failures: too few replicas reachable, no quorum
/// in time, or a write whose quorum failed after it was sent.
const QUORUM_FAILURES: [&str; 3] = ["UNAVAILABLE", "TIMEOUT", "UNKNOWN"];

/// The index in [`RESULTS`] of a reply.
fn result_index(reply: &Frame) -> usize {
    match reply.op {
        op::NOT_FOUND => 1,
        op::CONFLICT => 2,
        op::STALE => 3,
        op::ERR => {
            let word = reply.payload.split(|&b| b == b' ').next().unwrap_or(&[]);
            (ErrorCode::from_word(word))
                .and_then(|c| RESULTS.iter().position(|r| *r == c.as_str()))
                .unwrap_or(4)
        }
        op::OK | op::VALUE | op::PONG | op::STATUS_REPLY | op::CHALLENGE => 0,
        _ => 4,
    }
}

/// Client requests by front, op and result, with their latency.
struct Requests {
    /// Counts: `[front][op][result]`.
    counts: Box<[[[u64; RESULTS.len()]; 256]; 2]>,
    /// Latency histograms: `[front * 256 + op]`, made on an op's first reply.
    latency: Vec<Option<Histogram>>,
    /// Requests waiting for their reply, per connection, in order: the op,
    /// the front and the arrival time.
    waiting: crate::reactor::ConnMap<VecDeque<(u8, Front, Millis)>>,
}

impl Requests {
    fn new() -> Requests {
        Requests {
            counts: Box::new([[[0; RESULTS.len()]; 256]; 2]),
            latency: (0..512).map(|_| None).collect(),
            waiting: Default::default(),
        }
    }
}

/// What the node counts as it goes.
pub struct Stats {
    /// Frames received, by op code.
    frames: Box<[u64; 256]>,
    /// Connections accepted, by listener index.
    accepted: BTreeMap<usize, u64>,
    /// Open accepted connections and their listener.
    open: crate::reactor::ConnMap<usize>,
    /// HTTP replies by endpoint (or `other`) and status.
    http: BTreeMap<(&'static str, u16), u64>,
    /// The HTTP front's native requests by op and result.
    keys: BTreeMap<(&'static str, &'static str), u64>,
    /// Latency of the HTTP key-value requests, by op of their native requests.
    latency: BTreeMap<&'static str, Histogram>,
    /// Native and RESP client requests.
    requests: Requests,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats::new()
    }
}

impl Stats {
    /// Nothing counted yet.
    pub fn new() -> Stats {
        Stats {
            frames: Box::new([0; 256]),
            accepted: BTreeMap::new(),
            open: Default::default(),
            http: BTreeMap::new(),
            keys: BTreeMap::new(),
            latency: BTreeMap::new(),
            requests: Requests::new(),
        }
    }

    /// A client request with op `op` arrived on `conn` (by `front`) at `now`.
    pub fn request(&mut self, front: Front, conn: ConnId, op: u8, now: Millis) {
        let r = &mut self.requests;
        r.waiting
            .entry(conn)
            .or_default()
            .push_back((op, front, now));
    }

    /// Whether any request waits for its reply (see [`Stats::replied`]).
    pub fn waiting(&self) -> bool {
        !self.requests.waiting.is_empty()
    }

    /// The node sent `reply` on `conn` at `now`: if it answers a client
    /// request noted with [`Stats::request`], it is counted.
    pub fn replied(&mut self, conn: ConnId, reply: &Frame, now: Millis) {
        let r = &mut self.requests;
        let Some((o, front, at)) = r.waiting.get_mut(&conn).and_then(VecDeque::pop_front) else {
            return;
        };
        r.counts[front as usize][o as usize][result_index(reply)] += 1;
        r.latency[front as usize * 256 + o as usize]
            .get_or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(now.saturating_sub(at) as f64 / 1000.0);
    }

    /// A frame with op `op` arrived.
    pub fn frame(&mut self, op: u8) {
        self.frames[op as usize] += 1;
    }

    /// A connection was accepted on listener `listener`.
    pub fn accepted(&mut self, conn: ConnId, listener: usize) {
        *self.accepted.entry(listener).or_default() += 1;
        self.open.insert(conn, listener);
    }

    /// A connection closed.
    pub fn closed(&mut self, conn: ConnId) {
        self.open.remove(&conn);
        self.requests.waiting.remove(&conn);
    }

    /// An HTTP reply with `status` to a request for `endpoint`.
    pub(super) fn http(&mut self, endpoint: &'static str, status: u16) {
        *self.http.entry((endpoint, status)).or_default() += 1;
    }

    /// The reply to one of the front's native requests with op `op`.
    pub(super) fn key_result(&mut self, op: u8, reply: &Frame) {
        let result = match reply.op {
            op::OK | op::VALUE => "ok",
            op::NOT_FOUND => "not_found",
            op::ERR => {
                let word = reply.payload.split(|&b| b == b' ').next().unwrap_or(&[]);
                ErrorCode::from_word(word).map_or("error", ErrorCode::as_str)
            }
            op::STALE => "stale",
            _ => "unexpected",
        };
        *self.keys.entry((op::name(op), result)).or_default() += 1;
    }

    /// An HTTP request whose native requests have op `op` took `ms`.
    pub(super) fn latency(&mut self, op: u8, ms: Millis) {
        (self.latency.entry(op::name(op)))
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(ms as f64 / 1000.0);
    }
}

/// The state of one mesh link, as `/metrics` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Connected.
    Up,
    /// Broken or refused; waiting to retry.
    Unreachable,
    /// Not connected yet.
    Connecting,
}

impl LinkState {
    const ALL: [LinkState; 3] = [LinkState::Up, LinkState::Unreachable, LinkState::Connecting];

    fn as_str(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Unreachable => "unreachable",
            LinkState::Connecting => "connecting",
        }
    }
}

/// What the node reads from its state when scraped.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    /// The node's id (0 before it registered).
    pub node_id: u32,
    /// The ring's epoch as this node last installed it.
    pub epoch: u64,
    /// Live keys held.
    pub keys: usize,
    /// Bytes of the live keys and values held.
    pub bytes: usize,
    /// Bytes of the keys (and values) left to send in the move in progress.
    pub move_bytes: usize,
    /// Batches (MGET, MSET) waiting for some of their keys.
    pub batches_in_flight: usize,
    /// Keys owed to peers (hints and resync).
    pub hints_pending: usize,
    /// Whether this node is catching up on writes it may have missed.
    pub catching_up: bool,
    /// Keys left to hand over in the move in progress.
    pub moves_remaining: usize,
    /// Requests in quorum rounds this node leads.
    pub rounds_in_flight: usize,
    /// Requests forwarded to peers and not answered yet.
    pub forwards_in_flight: usize,
    /// Each peer's link.
    pub links: Vec<(u32, LinkState)>,
    /// Anti-entropy's counters: comparisons completed, keys repaired, payload
    /// bytes sent.
    pub anti_entropy: [u64; 3],
}

/// The names the node's listeners are labelled with, by index.
fn listener_name(index: usize, http: usize) -> String {
    match index {
        0 => "native".into(),
        i if i == http => "http".into(),
        crate::storage::resp::LISTENER => "resp".into(),
        i => i.to_string(),
    }
}

/// The exposition of `stats` and `facts`; the HTTP listener is `http`.
pub fn exposition(stats: &Stats, facts: &NodeFacts, http: usize) -> String {
    let mut e = Exposition::new();
    state_metrics(&mut e, facts);
    let name = "gtstore_node_frames_received_total";
    e.family(
        name,
        Kind::Counter,
        "Frames received, by op (clients', peers' and the manager's).",
    );
    for (code, &n) in stats.frames.iter().enumerate().filter(|(_, &n)| n > 0) {
        e.sample(name, &[("op", op::name(code as u8))], n as f64);
    }
    let name = "gtstore_node_connections_accepted_total";
    e.family(name, Kind::Counter, "Connections accepted, by listener.");
    for (&l, &n) in &stats.accepted {
        e.sample(name, &[("listener", &listener_name(l, http))], n as f64);
    }
    let name = "gtstore_node_connections";
    e.family(name, Kind::Gauge, "Open accepted connections, by listener.");
    let mut open: BTreeMap<usize, u64> = stats.accepted.keys().map(|&l| (l, 0)).collect();
    for &l in stats.open.values() {
        *open.entry(l).or_default() += 1;
    }
    for (l, n) in open {
        e.sample(name, &[("listener", &listener_name(l, http))], n as f64);
    }
    let name = "gtstore_node_http_requests_total";
    e.family(
        name,
        Kind::Counter,
        "HTTP requests answered, by endpoint and status.",
    );
    for (&(endpoint, status), &n) in &stats.http {
        let status = status.to_string();
        e.sample(
            name,
            &[("endpoint", endpoint), ("status", &status)],
            n as f64,
        );
    }
    let name = "gtstore_node_http_key_requests_total";
    e.family(
        name,
        Kind::Counter,
        "Native requests the HTTP front sent, one per key, by op and result (UNAVAILABLE and TIMEOUT are quorum failures).",
    );
    for (&(o, result), &n) in &stats.keys {
        e.sample(name, &[("op", o), ("result", result)], n as f64);
    }
    requests(&mut e, stats);
    let name = "gtstore_node_http_request_duration_seconds";
    e.family(
        name,
        Kind::Histogram,
        "Time from an HTTP key-value request's arrival to its reply, by the op of its native requests.",
    );
    for (o, h) in &stats.latency {
        e.histogram(name, &[("op", o)], h);
    }
    let counters = [
        (
            "gtstore_node_anti_entropy_comparisons_total",
            "Anti-entropy comparisons (a token range with a peer) this node completed.",
        ),
        (
            "gtstore_node_anti_entropy_keys_repaired_total",
            "Keys anti-entropy took from peers or pushed to them.",
        ),
        (
            "gtstore_node_anti_entropy_sent_bytes_total",
            "Payload bytes anti-entropy sent (digests, leaves, key lists, entries).",
        ),
    ];
    for ((name, help), v) in counters.into_iter().zip(facts.anti_entropy) {
        e.family(name, Kind::Counter, help)
            .sample(name, &[], v as f64);
    }
    e.finish()
}

/// The native and RESP client requests, and the quorum failures of every
/// front.
fn requests(e: &mut Exposition, stats: &Stats) {
    let r = &stats.requests;
    let name = "gtstore_node_requests_total";
    e.family(
        name,
        Kind::Counter,
        "Client requests on the native and RESP ports answered, by front, op and result (ok, not_found, conflict, stale, other, or the error code).",
    );
    let mut failures = [0u64; 2];
    for front in Front::ALL {
        for (o, counts) in r.counts[front as usize].iter().enumerate() {
            for (i, &n) in counts.iter().enumerate().filter(|(_, &n)| n > 0) {
                let labels = [
                    ("front", front.as_str()),
                    ("op", op::name(o as u8)),
                    ("result", RESULTS[i]),
                ];
                e.sample(name, &labels, n as f64);
                if QUORUM_FAILURES.contains(&RESULTS[i]) {
                    failures[front as usize] += n;
                }
            }
        }
    }
    let name = "gtstore_node_request_duration_seconds";
    e.family(
        name,
        Kind::Histogram,
        "Time from a native or RESP client request's arrival to its reply at this node (millisecond resolution), by front and op.",
    );
    for front in Front::ALL {
        for o in 0..256 {
            if let Some(h) = &r.latency[front as usize * 256 + o] {
                e.histogram(
                    name,
                    &[("front", front.as_str()), ("op", op::name(o as u8))],
                    h,
                );
            }
        }
    }
    let name = "gtstore_node_quorum_failures_total";
    e.family(
        name,
        Kind::Counter,
        "Client requests (HTTP: per key) answered UNAVAILABLE, TIMEOUT or UNKNOWN, by front.",
    );
    let http: u64 = (stats.keys.iter())
        .filter(|((_, result), _)| QUORUM_FAILURES.contains(result))
        .map(|(_, &n)| n)
        .sum();
    for front in Front::ALL {
        e.sample(
            name,
            &[("front", front.as_str())],
            failures[front as usize] as f64,
        );
    }
    e.sample(name, &[("front", "http")], http as f64);
}

/// The gauges read from the node's state.
fn state_metrics(e: &mut Exposition, f: &NodeFacts) {
    let gauges: [(&str, &str, f64); 11] = [
        (
            "gtstore_node_id",
            "The node's id (0 before it registered).",
            f.node_id as f64,
        ),
        (
            "gtstore_node_ring_epoch",
            "The epoch of the ring this node routes by.",
            f.epoch as f64,
        ),
        (
            "gtstore_node_keys",
            "Live keys this node holds.",
            f.keys as f64,
        ),
        (
            "gtstore_node_bytes",
            "Bytes of the live keys and values this node holds (no overhead counted).",
            f.bytes as f64,
        ),
        (
            "gtstore_node_move_bytes_pending",
            "Bytes of the keys and values left to send in the move in progress (chunks in flight not counted).",
            f.move_bytes as f64,
        ),
        (
            "gtstore_node_batches_in_flight",
            "Batches (MGET, MSET) waiting for some of their keys.",
            f.batches_in_flight as f64,
        ),
        (
            "gtstore_node_hints_pending",
            "Keys owed to peers that missed writes or newly hold them (hints and resync).",
            f.hints_pending as f64,
        ),
        (
            "gtstore_node_catching_up",
            "1 while this node catches up on writes it may have missed, else 0.",
            f.catching_up as u8 as f64,
        ),
        (
            "gtstore_node_move_keys_pending",
            "Keys left to hand over in the move in progress.",
            f.moves_remaining as f64,
        ),
        (
            "gtstore_node_quorum_rounds_in_flight",
            "Requests in quorum rounds this node leads.",
            f.rounds_in_flight as f64,
        ),
        (
            "gtstore_node_forwards_in_flight",
            "Requests forwarded to peers and not answered yet.",
            f.forwards_in_flight as f64,
        ),
    ];
    for (name, help, v) in gauges {
        e.family(name, Kind::Gauge, help).sample(name, &[], v);
    }
    let name = "gtstore_node_mesh_links";
    e.family(name, Kind::Gauge, "Links to peers, by state.");
    for state in LinkState::ALL {
        let n = f.links.iter().filter(|(_, s)| *s == state).count();
        e.sample(name, &[("state", state.as_str())], n as f64);
    }
    let name = "gtstore_node_mesh_link_up";
    e.family(
        name,
        Kind::Gauge,
        "1 if the link to the peer is up, else 0.",
    );
    for (peer, state) in &f.links {
        let peer = peer.to_string();
        e.sample(
            name,
            &[("peer", &peer)],
            (*state == LinkState::Up) as u8 as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_requests_are_counted_by_front_op_and_result_in_reply_order() {
        let mut s = Stats::new();
        let (a, b) = (ConnId::new(1, 1), ConnId::new(2, 1));
        s.request(Front::Native, a, op::PUT, 10);
        s.request(Front::Native, a, op::GET, 10);
        s.request(Front::Resp, b, op::GET, 11);
        s.replied(a, &Frame::new(op::OK, 0, 1, ""), 15);
        s.replied(b, &Frame::new(op::ERR, 0, 1, "TIMEOUT late"), 20);
        s.replied(a, &Frame::new(op::NOT_FOUND, 0, 1, ""), 40);
        // A reply with no request noted (a member's, say) changes nothing.
        s.replied(a, &Frame::new(op::OK, 0, 1, ""), 41);
        let text = exposition(&s, &NodeFacts::default(), 2);
        for want in [
            "gtstore_node_requests_total{front=\"native\",op=\"PUT\",result=\"ok\"} 1\n",
            "gtstore_node_requests_total{front=\"native\",op=\"GET\",result=\"not_found\"} 1\n",
            "gtstore_node_requests_total{front=\"resp\",op=\"GET\",result=\"TIMEOUT\"} 1\n",
            "gtstore_node_request_duration_seconds_bucket{front=\"native\",op=\"GET\",le=\"0.025\"} 0\n",
            "gtstore_node_request_duration_seconds_bucket{front=\"native\",op=\"GET\",le=\"0.05\"} 1\n",
            "gtstore_node_quorum_failures_total{front=\"resp\"} 1\n",
            "gtstore_node_quorum_failures_total{front=\"native\"} 0\n",
        ] {
            assert!(text.contains(want), "no {want:?} in\n{text}");
        }
        s.closed(a);
        assert!(!s.requests.waiting.contains_key(&a));
    }
}
