//! The manager's HTTP endpoints, on its second listener
//! ([`HTTP_LISTENER`]): `GET /` (the status page), `GET /status.json` (the
//! STATUS JSON) and `GET /metrics` (Prometheus text).
//!
//! Connections on that listener are run by a [`Front`] (keep-alive,
//! pipelining, limits); every endpoint answers at once from the manager's
//! state. The status page is one self-contained HTML file
//! (`status_page.html`: inline style and script, no external assets) whose
//! script fetches `/status.json` every second and draws the nodes, the ring
//! and the moves in progress.
//!
//! The metrics are the manager's view of the cluster (nodes by state, the
//! ring's epoch, each node's tokens, share and last reported keys, moves,
//! the recovery window) and of its own work (requests by op and result,
//! heartbeats and the gaps between them, open connections, HTTP requests).

use super::Manager;
use crate::http::metrics::{self, Exposition, Histogram, Kind};
use crate::http::{self, Front, Limits, Response};
use crate::reactor::{ConnId, Millis, Output};
use crate::ring::NodeState;
use std::collections::{BTreeMap, HashMap};

/// The index of the HTTP listener: the native listener is bound first (0).
pub const HTTP_LISTENER: usize = 1;

/// Largest request body the manager reads (its endpoints take none).
const MAX_BODY: usize = 64 << 10;

/// Upper bounds of the heartbeat-gap histogram, in seconds.
const GAP_BUCKETS: &[f64] = &[0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0];

/// The status page.
const PAGE: &str = include_str!("status_page.html");

/// The endpoints: path and methods (`HEAD` goes with `GET`).
const ENDPOINTS: &[(&str, &[&str])] = &[
    ("/", &["GET"]),
    ("/status.json", &["GET"]),
    ("/metrics", &["GET"]),
];

/// Counters of the manager's own work, for `/metrics`.
pub(super) struct Stats {
    /// Frames answered, by op name and result (`ok` or the error code).
    requests: BTreeMap<(&'static str, &'static str), u64>,
    /// Heartbeats received.
    heartbeats: u64,
    /// Time between a node's heartbeats, in seconds.
    heartbeat_gap: Histogram,
    /// Open connections on the native listener.
    native_conns: u64,
    /// HTTP replies, by endpoint (or `other`) and status.
    http: BTreeMap<(&'static str, u16), u64>,
}

impl Stats {
    pub(super) fn new() -> Stats {
        Stats {
            requests: BTreeMap::new(),
            heartbeats: 0,
            heartbeat_gap: Histogram::new(GAP_BUCKETS),
            native_conns: 0,
            http: BTreeMap::new(),
        }
    }

    /// A frame with op `op` was answered with `result`.
    pub(super) fn request(&mut self, op: u8, result: &'static str) {
        *self
            .requests
            .entry((crate::protocol::op::name(op), result))
            .or_default() += 1;
    }

    /// A heartbeat arrived `gap` ms after the node was last heard from.
    pub(super) fn heartbeat(&mut self, gap: Millis) {
        self.heartbeats += 1;
        self.heartbeat_gap.observe(gap as f64 / 1000.0);
    }

    /// A native connection opened (`true`) or closed.
    pub(super) fn native_conn(&mut self, open: bool) {
        if open {
            self.native_conns += 1;
        } else {
            self.native_conns = self.native_conns.saturating_sub(1);
        }
    }
}

/// The manager's HTTP side: the listener's connections and the counters.
pub(super) struct Web {
    /// The HTTP listener's connections.
    pub(super) front: Front,
    /// Counters of the manager's work.
    pub(super) stats: Stats,
}

impl Web {
    pub(super) fn new() -> Web {
        Web {
            front: Front::new(Limits {
                max_body: MAX_BODY,
                ..Limits::default()
            }),
            stats: Stats::new(),
        }
    }
}

impl Manager {
    /// Answers every whole request buffered on HTTP connection `conn`.
    pub(super) fn serve_http(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        while let Some((id, req)) = self.http.front.next(conn, out) {
            let (endpoint, reply) = match http::route(&req, ENDPOINTS) {
                Ok(i) => (ENDPOINTS[i].0, self.endpoint(i)),
                Err(reply) => ("other", reply),
            };
            *self
                .http
                .stats
                .http
                .entry((endpoint, reply.status))
                .or_default() += 1;
            self.http.front.respond(id, &reply, out);
        }
    }

    fn endpoint(&self, i: usize) -> Response {
        match ENDPOINTS[i].0 {
            "/" => Response::new(200, "text/html; charset=utf-8", PAGE),
            "/status.json" => Response::json(200, &self.status_json()),
            _ => Response::new(200, metrics::CONTENT_TYPE, self.metrics_text()),
        }
        .with_header("Cache-Control", "no-store")
    }

    /// The Prometheus exposition of the manager's view and work.
    pub fn metrics_text(&self) -> String {
        let mut e = Exposition::new();
        self.cluster_metrics(&mut e);
        self.node_metrics(&mut e);
        self.work_metrics(&mut e);
        e.finish()
    }

    fn cluster_metrics(&self, e: &mut Exposition) {
        let name = "gtstore_manager_nodes";
        e.family(
            name,
            Kind::Gauge,
            "Storage nodes in the membership, by state.",
        );
        for state in NodeState::ALL {
            let n = self
                .nodes
                .values()
                .filter(|n| n.entry.state == state)
                .count();
            e.sample(name, &[("state", state.as_str())], n as f64);
        }
        let gauges: [(&str, &str, f64); 4] = [
            (
                "gtstore_manager_ring_epoch",
                "The ring's epoch: bumped by every membership change.",
                self.epoch as f64,
            ),
            (
                "gtstore_manager_replicas",
                "N: how many nodes hold each key.",
                self.cfg.replicas as f64,
            ),
            (
                "gtstore_manager_moves_pending",
                "1 while the ring has joining or leaving nodes whose moves have not settled.",
                if self.ring().has_moves() { 1.0 } else { 0.0 },
            ),
            (
                "gtstore_manager_recovering_seconds_left",
                "Time left in the recovery window after a manager restart (recovering_ms_left).",
                self.recovering_ms_left() as f64 / 1000.0,
            ),
        ];
        for (name, help, v) in gauges {
            e.family(name, Kind::Gauge, help).sample(name, &[], v);
        }
    }

    fn node_metrics(&self, e: &mut Exposition) {
        let share: HashMap<u32, f64> = self.ring().ownership().into_iter().collect();
        let ids: Vec<String> = self.nodes.keys().map(u32::to_string).collect();
        type Of = fn(&super::NodeRecord, f64) -> f64;
        let families: [(&str, &str, Of); 4] = [
            (
                "gtstore_manager_node_up",
                "1 if the node is up, else 0.",
                |n, _| (n.entry.state == NodeState::Up) as u8 as f64,
            ),
            (
                "gtstore_manager_node_tokens",
                "Tokens (virtual nodes) the node holds on the ring.",
                |n, _| n.entry.tokens.len() as f64,
            ),
            (
                "gtstore_manager_node_ring_share",
                "Share of the hash space the node's tokens own (0 to 1).",
                |_, share| share,
            ),
            (
                "gtstore_manager_node_keys",
                "Keys the node reported holding in its last heartbeat.",
                |n, _| n.keys as f64,
            ),
        ];
        for (name, help, of) in families {
            e.family(name, Kind::Gauge, help);
            for (n, id) in self.nodes.values().zip(&ids) {
                let s = share.get(&n.entry.id).copied().unwrap_or(0.0);
                let labels = [("node", id.as_str()), ("addr", n.entry.addr.as_str())];
                e.sample(name, &labels, of(n, s));
            }
        }
    }

    fn work_metrics(&self, e: &mut Exposition) {
        let s = &self.http.stats;
        let name = "gtstore_manager_requests_total";
        e.family(
            name,
            Kind::Counter,
            "Frames the manager answered, by op and result.",
        );
        for ((op, result), n) in &s.requests {
            e.sample(name, &[("op", op), ("result", result)], *n as f64);
        }
        let name = "gtstore_manager_heartbeats_received_total";
        e.family(
            name,
            Kind::Counter,
            "Heartbeats received from storage nodes.",
        )
        .sample(name, &[], s.heartbeats as f64);
        let name = "gtstore_manager_heartbeat_gap_seconds";
        e.family(
            name,
            Kind::Histogram,
            "Time between a node's heartbeat and the last time it was heard from.",
        )
        .histogram(name, &[], &s.heartbeat_gap);
        let name = "gtstore_manager_connections";
        e.family(
            name,
            Kind::Gauge,
            "Open client and node connections, by listener.",
        )
        .sample(name, &[("listener", "native")], s.native_conns as f64)
        .sample(
            name,
            &[("listener", "http")],
            self.http.front.connections() as f64,
        );
        let name = "gtstore_manager_http_requests_total";
        e.family(
            name,
            Kind::Counter,
            "HTTP requests answered, by endpoint and status.",
        );
        for ((endpoint, status), n) in &s.http {
            let status = status.to_string();
            e.sample(
                name,
                &[("endpoint", endpoint), ("status", &status)],
                *n as f64,
            );
        }
    }
}
