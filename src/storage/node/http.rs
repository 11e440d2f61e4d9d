//! The HTTP front's hooks in the node (see [`super::super::http`]): HTTP
//! connections come from the front's listener; the native requests their
//! requests become are served by `on_request` like any client's, and the
//! replies come back to the front through the gateway (see `gateway.rs`).

use super::*;
use crate::storage::gateway::Front;
use crate::storage::http::metrics::{self, LinkState, NodeFacts};
use crate::storage::http::{HttpFront, Item as HttpItem};

impl StorageNode {
    /// Serves HTTP on listener `listener` (the index the reactor gave its
    /// bind), bodies bounded by `max_body` bytes.
    pub fn enable_http(&mut self, listener: usize, max_body: usize) {
        let mut front = HttpFront::new(listener, max_body);
        if let Some(p) = self.client_auth.as_ref().map(|a| a.password()) {
            front.require_password(Bytes::from(p.to_string()));
        }
        self.http = Some(Box::new(front));
    }

    /// Counts an input for `/metrics` and takes the ones that belong to the
    /// HTTP front; returns the input when the rest of the node should see it.
    pub(super) fn http_input(
        &mut self,
        now: Millis,
        input: Input,
        out: &mut Vec<Output>,
    ) -> Option<Input> {
        let Some(h) = self.http.as_mut() else {
            return Some(input);
        };
        match &input {
            Input::Frame { frame, .. } => h.stats.frame(frame.op),
            Input::Accepted { conn, listener } => {
                h.stats.accepted(*conn, *listener);
                if *listener == h.listener() {
                    h.accept(*conn, out);
                    self.conns.order.gateway.open(*conn, Front::Http);
                    return None;
                }
            }
            Input::Data { conn, .. } | Input::Eof { conn } if h.has(*conn) => {
                match input {
                    Input::Data { conn, data } => {
                        h.data(conn, data);
                        self.serve_http(now, conn, out);
                    }
                    _ => h.eof(*conn, out),
                }
                return None;
            }
            Input::Drained { conn } if h.has(*conn) => {
                h.drained(*conn);
                return None;
            }
            Input::Closed { conn } => {
                h.stats.closed(*conn);
                h.closed(*conn);
            }
            _ => {}
        }
        Some(input)
    }

    /// Serves every whole request buffered on HTTP connection `conn`.
    pub(super) fn serve_http(&mut self, now: Millis, conn: ConnId, out: &mut Vec<Output>) {
        let Some(h) = self.http.as_mut() else { return };
        for item in h.serve(now, conn, out) {
            match item {
                HttpItem::Request(frame) => self.submit(now, conn, frame, out),
                HttpItem::Metrics(id) => {
                    let facts = self.metrics_facts();
                    self.http
                        .as_mut()
                        .expect("checked")
                        .metrics(id, &facts, out);
                }
            }
        }
    }

    /// Notes a client request for `/metrics` (see `Stats::request`), when
    /// the node serves HTTP.
    pub(super) fn count_request(
        &mut self,
        now: Millis,
        conn: ConnId,
        front: metrics::Front,
        op: u8,
    ) {
        if let Some(h) = self.http.as_mut() {
            h.stats.request(front, conn, op, now);
        }
    }

    /// Counts the step's replies to native clients (the outputs since
    /// `mark`); the fronts' replies are counted as the gateway hands them
    /// over (`deliver`).
    pub(super) fn count_replies(&mut self, now: Millis, mark: usize, out: &[Output]) {
        let Some(h) = self.http.as_mut().filter(|h| h.stats.waiting()) else {
            return;
        };
        for o in &out[mark..] {
            if let Output::Send { conn, frame } = o {
                h.stats.replied(*conn, frame, now);
            }
        }
    }

    /// What `/metrics` reads from the node's state.
    fn metrics_facts(&self) -> NodeFacts {
        let peers = (self.ring.nodes().iter()).filter(|n| n.id != self.node_id);
        let links = peers
            .map(|n| {
                let state = if self.mesh.is_up(n.id) {
                    LinkState::Up
                } else if self.mesh.is_unreachable(n.id) {
                    LinkState::Unreachable
                } else {
                    LinkState::Connecting
                };
                (n.id, state)
            })
            .collect();
        let hints = (self.ring.nodes().iter()).map(|n| self.repair.resync.owed(n.id));
        NodeFacts {
            node_id: self.node_id,
            epoch: self.ring.epoch,
            keys: self.engine.len(),
            bytes: self.engine.bytes(),
            move_bytes: (self.handoff.as_ref()).map_or(0, |h| h.unsent_bytes(&self.engine)),
            batches_in_flight: self.conns.order.batches(),
            hints_pending: hints.sum(),
            catching_up: self.repair.catch_up.is_some(),
            moves_remaining: self.handoff.as_ref().map_or(0, Handoff::remaining),
            rounds_in_flight: self.rounds.pending.len(),
            forwards_in_flight: self.mesh.in_flight(),
            links,
            anti_entropy: self.anti_entropy.counters(),
        }
    }
}
