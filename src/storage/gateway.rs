//! The gateway between the node's service and its fronts.
//!
//! A front (the RESP one in [`super::resp`], the HTTP one in [`super::http`])
//! owns connections that do not speak the native protocol. It wraps the node's
//! service from the outside, through two narrow paths:
//!
//! - Requests in: the front turns what its client asked into native request
//!   [`Frame`]s, each tagged (its `client_id`) with a number counted per
//!   connection, and the node serves them as requests from that connection,
//!   through the same entry a native client's requests take (routing,
//!   forwarding, quorum rounds, reply order, holds; `submit` in
//!   `node/gateway.rs`).
//! - Events out: every reply to a client connection leaves the node through
//!   its reply order (`node/routing/order.rs`), which hands it to
//!   [`Gateway::send`]. A native connection's reply goes onto the wire as an
//!   `Output::Send`; a front's connection gets a typed [`Delivery`] instead, in
//!   the same order: the [`Event::Reply`] to each request, in request order,
//!   the node's [`Event::Hold`]s for the connection's reply backlog, and an
//!   [`Event::Close`] when the node ends the connection. The node hands the
//!   deliveries to their front ([`Gateway::pop`]), and the front turns them
//!   into its own bytes and holds.
//!
//! So the node never writes a native frame on a front's connection, a front
//! never reads or rewrites the node's outputs, and a front's bytes leave in the
//! order the front renders them, whatever else the node outputs in the step.

use crate::protocol::Frame;
use crate::reactor::{ConnId, Output};
use std::collections::VecDeque;

/// Which front a connection belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Front {
    /// The RESP front ([`super::resp`]).
    Resp,
    /// The HTTP front ([`super::http`]).
    Http,
}

/// What the node's service tells a front about one of its connections.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// The node's reply to one of the front's requests on the connection
    /// (replies come in request order; the request's tag is the `client_id`).
    Reply(Frame),
    /// The connection's reply backlog in the node crossed its bounds: stop
    /// reading it (`true`) or read it again (`false`), as far as the node is
    /// concerned (the front may hold it for its own reasons too).
    Hold(bool),
    /// The node ends the connection, after the replies before this.
    Close,
}

/// An [`Event`] for a front's connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The front the connection belongs to.
    pub front: Front,
    /// The connection.
    pub conn: ConnId,
    /// What happened.
    pub event: Event,
}

/// Which connections belong to fronts, and the deliveries waiting for them.
#[derive(Debug, Default)]
pub struct Gateway {
    fronts: crate::reactor::ConnMap<Front>,
    queue: VecDeque<Delivery>,
}

impl Gateway {
    /// `conn` belongs to `front` from now on.
    pub fn open(&mut self, conn: ConnId, front: Front) {
        self.fronts.insert(conn, front);
    }

    /// `conn` is gone.
    pub fn closed(&mut self, conn: ConnId) {
        self.fronts.remove(&conn);
    }

    /// The front `conn` belongs to, if any.
    pub fn front(&self, conn: ConnId) -> Option<Front> {
        if self.fronts.is_empty() {
            return None;
        }
        self.fronts.get(&conn).copied()
    }

    /// The reply `frame` to client connection `conn`: onto the wire for a
    /// native connection, to its front for a front's.
    pub fn send(&mut self, conn: ConnId, frame: Frame, out: &mut Vec<Output>) {
        match self.front(conn) {
            Some(front) => self.queue.push_back(Delivery {
                front,
                conn,
                event: Event::Reply(frame),
            }),
            None => out.push(Output::Send { conn, frame }),
        }
    }

    /// Ends client connection `conn` after what was sent to it.
    pub fn close(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        match self.front(conn) {
            Some(front) => self.queue.push_back(Delivery {
                front,
                conn,
                event: Event::Close,
            }),
            None => out.push(Output::Close { conn }),
        }
    }

    /// Stops (`hold`) or resumes reading client connection `conn` for the
    /// node's reply backlog.
    pub fn hold(&mut self, conn: ConnId, hold: bool, out: &mut Vec<Output>) {
        match self.front(conn) {
            Some(front) => self.queue.push_back(Delivery {
                front,
                conn,
                event: Event::Hold(hold),
            }),
            None => out.push(Output::Hold { conn, hold }),
        }
    }

    /// Whether deliveries wait.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The oldest delivery waiting, taken.
    pub fn pop(&mut self) -> Option<Delivery> {
        self.queue.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::op;

    #[test]
    fn native_connections_get_outputs_and_fronts_get_deliveries_in_order() {
        let (native, resp, http) = (ConnId::new(1, 1), ConnId::new(2, 1), ConnId::new(3, 1));
        let mut g = Gateway::default();
        g.open(resp, Front::Resp);
        g.open(http, Front::Http);
        let mut out = Vec::new();
        let ok = |tag| Frame::new(op::OK, tag, 1, "");
        g.send(native, ok(1), &mut out);
        g.send(resp, ok(2), &mut out);
        g.hold(http, true, &mut out);
        g.send(http, ok(3), &mut out);
        g.close(resp, &mut out);
        g.close(native, &mut out);
        assert!(
            matches!(
                &out[..],
                [Output::Send { conn: a, frame }, Output::Close { conn: b }]
                    if *a == native && *b == native && frame.client_id == 1
            ),
            "{out:?}"
        );
        let got: Vec<Delivery> = std::iter::from_fn(|| g.pop()).collect();
        assert!(g.is_empty());
        let d = |front, conn, event| Delivery { front, conn, event };
        assert_eq!(
            got,
            vec![
                d(Front::Resp, resp, Event::Reply(ok(2))),
                d(Front::Http, http, Event::Hold(true)),
                d(Front::Http, http, Event::Reply(ok(3))),
                d(Front::Resp, resp, Event::Close),
            ]
        );
        // Once closed, the connection id is a native one again.
        g.closed(resp);
        g.send(resp, ok(4), &mut out);
        assert!(g.is_empty());
        assert!(matches!(out.last(), Some(Output::Send { .. })));
    }
}
