//! Keeps the replies on each client connection in request order.
//!
//! Most requests are answered at once, but a forwarded one is answered when the
//! key's owner replies, maybe after requests that arrived later. Each connection
//! with a reply outstanding gets a queue of slots, one per request since the
//! oldest unanswered one; a reply fills its slot and every filled slot at the front
//! leaves. Connections with nothing outstanding keep no state at all, so the common
//! case costs one hash lookup.
//!
//! Every reply to a client connection leaves through here, and through the
//! [`Gateway`]: onto the wire for a native connection, to its front as a typed
//! event for a front's (RESP, HTTP; see [`crate::storage::gateway`]). So do the
//! node's holds of a client connection and its closes.
//!
//! Replies held back are bounded: the node stops reading a connection whose
//! backlog is large (holds), but replies to requests already forwarded keep
//! coming; past [`HELD_LIMIT`] bytes the connection is closed and its held
//! replies dropped, as the reactor drops one whose queued output passes its hard
//! limit.
//!
//! Batches (MGET, MSET; see `super::super::batch`) take one slot on their
//! client's connection. Their per-key requests are served as if they came on
//! a connection of the batch's own, an id the reactor never hands out (see
//! [`is_batch`]); their replies are collected here instead of sent, and once
//! the last is in, the batch's reply fills its slot. The keys a batch has in
//! flight count towards its connection's outstanding replies (holds).

use super::super::batch::Collector;
use crate::protocol::Frame;
use crate::reactor::{ConnId, Output};
use crate::storage::gateway::Gateway;
use std::collections::VecDeque;

/// Payload bytes of replies held back on one connection above which it is
/// closed and they are dropped.
pub const HELD_LIMIT: usize = 64 << 20;

#[derive(Default)]
struct Slots {
    /// Sequence number of `queue[0]`.
    head: u64,
    queue: VecDeque<Option<Frame>>,
    /// The client sent EOF: close once the queue drains.
    eof: bool,
    /// Payload bytes of the replies waiting in `queue`.
    bytes: usize,
    /// Keys of this connection's batches still in flight.
    batch_keys: usize,
}

/// The first id of a batch's own connection: the reactor's slab never reaches
/// `u32::MAX` entries, so it never hands out an id at or above this one.
const FIRST_BATCH: ConnId = ConnId::new(u32::MAX, 0);

/// Whether `conn` is a batch's own connection id rather than a real one.
pub fn is_batch(conn: ConnId) -> bool {
    conn >= FIRST_BATCH
}

/// Per-connection reply queues.
#[derive(Default)]
pub struct ReplyOrder {
    conns: crate::reactor::ConnMap<Slots>,
    /// Where replies go: the wire, or a front's connection.
    pub gateway: Gateway,
    /// The batches in flight, by their own connection id.
    batches: crate::reactor::ConnMap<Collector>,
    /// The generation of the last batch id handed out.
    last_batch: u32,
}

impl ReplyOrder {
    /// A reply that is ready now: sent at once unless an earlier one is outstanding.
    pub fn ready(&mut self, conn: ConnId, frame: Frame, out: &mut Vec<Output>) {
        let Some(frame) = self.batch_part(conn, frame, out) else {
            return;
        };
        match self.conns.get_mut(&conn) {
            Some(s) => {
                s.bytes += frame.payload.len();
                s.queue.push_back(Some(frame));
                self.check_limit(conn, out);
            }
            None => self.gateway.send(conn, frame, out),
        }
    }

    /// A reply that ends the connection: sent at once, ahead of any reply still
    /// outstanding on it, then the connection is closed.
    pub fn last(&mut self, conn: ConnId, frame: Frame, out: &mut Vec<Output>) {
        self.gateway.send(conn, frame, out);
        self.gateway.close(conn, out);
    }

    /// Stops (`hold`) or resumes reading `conn` (see [`Gateway::hold`]).
    pub fn hold(&mut self, conn: ConnId, hold: bool, out: &mut Vec<Output>) {
        self.gateway.hold(conn, hold, out);
    }

    /// Closes `conn` and drops its held replies if they passed [`HELD_LIMIT`].
    fn check_limit(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        let Some(held) = self.conns.get(&conn).map(|s| s.bytes) else {
            return;
        };
        if held > HELD_LIMIT {
            log::warn!(
                "closing client connection {conn}: {held} bytes of replies held back \
                 behind an unanswered request, over the limit of {HELD_LIMIT}"
            );
            self.conns.remove(&conn);
            self.gateway.close(conn, out);
        }
    }

    /// Reserves the place of a reply that will come later; returns its number.
    pub fn reserve(&mut self, conn: ConnId) -> u64 {
        if is_batch(conn) {
            // A batch's parts are told apart by their client ids, not slots.
            return 0;
        }
        let s = self.conns.entry(conn).or_default();
        s.queue.push_back(None);
        s.head + s.queue.len() as u64 - 1
    }

    /// Fills a reserved place and sends every reply now in order. A reply for a
    /// connection that has gone away is dropped.
    pub fn fill(&mut self, conn: ConnId, seq: u64, frame: Frame, out: &mut Vec<Output>) {
        let Some(frame) = self.batch_part(conn, frame, out) else {
            return;
        };
        let Some(s) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(slot) = seq
            .checked_sub(s.head)
            .and_then(|i| s.queue.get_mut(i as usize))
        else {
            return;
        };
        s.bytes += frame.payload.len();
        *slot = Some(frame);
        while let Some(Some(_)) = s.queue.front() {
            let frame = s.queue.pop_front().flatten().expect("checked");
            s.bytes -= frame.payload.len();
            s.head += 1;
            self.gateway.send(conn, frame, out);
        }
        if s.queue.is_empty() {
            if s.eof {
                self.gateway.close(conn, out);
            }
            self.conns.remove(&conn);
        } else {
            self.check_limit(conn, out);
        }
    }

    /// The client will send no more: close now, or once its replies are out.
    pub fn eof(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        match self.conns.get_mut(&conn) {
            Some(s) => s.eof = true,
            None => self.gateway.close(conn, out),
        }
    }

    /// The connection is gone.
    pub fn closed(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
        self.gateway.closed(conn);
    }

    /// Replies outstanding on `conn`, a batch's keys in flight counted each.
    pub fn outstanding(&self, conn: ConnId) -> usize {
        self.conns
            .get(&conn)
            .map_or(0, |s| s.queue.len() + s.batch_keys)
    }

    /// Takes a slot on `conn` for a batch of `keys` keys from the client's
    /// request `client_id`; returns the batch's own connection id, on which its
    /// per-key requests are to be served, each with its key's index as its
    /// client id.
    pub fn open_batch(&mut self, conn: ConnId, client_id: u64, keys: usize) -> ConnId {
        let seq = self.reserve(conn);
        let s = self.conns.get_mut(&conn).expect("reserved above");
        s.batch_keys += keys;
        let id = loop {
            self.last_batch = self.last_batch.wrapping_add(1);
            let id = ConnId::new(u32::MAX, self.last_batch);
            if !self.batches.contains_key(&id) {
                break id;
            }
        };
        let collector = Collector::new((conn, seq, client_id), keys);
        self.batches.insert(id, collector);
        id
    }

    /// Batches in flight.
    pub fn batches(&self) -> usize {
        self.batches.len()
    }

    /// A reply to one key of a batch is collected (`None`); once the batch's
    /// last is in, the batch's reply fills its slot. Any other reply is
    /// returned.
    fn batch_part(&mut self, conn: ConnId, frame: Frame, out: &mut Vec<Output>) -> Option<Frame> {
        if !is_batch(conn) {
            return Some(frame);
        }
        let b = self.batches.get_mut(&conn)?;
        if !b.take(frame) {
            return None;
        }
        let b = self.batches.remove(&conn).expect("looked up above");
        let (client, seq) = b.client();
        if let Some(s) = self.conns.get_mut(&client) {
            s.batch_keys = s.batch_keys.saturating_sub(b.keys());
        }
        let reply = b.reply();
        self.fill(client, seq, reply, out);
        None
    }

    /// Payload bytes of the replies held back on `conn`.
    pub fn queued_bytes(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |s| s.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(n: u64) -> Frame {
        Frame::new(21, n, 0, "")
    }

    fn ids(out: &[Output]) -> Vec<u64> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { frame, .. } => Some(frame.client_id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn late_replies_keep_request_order() {
        let mut o = ReplyOrder::default();
        let c = ConnId::new(1, 1);
        let mut out = Vec::new();
        o.ready(c, f(1), &mut out);
        let a = o.reserve(c);
        o.ready(c, f(3), &mut out);
        let b = o.reserve(c);
        o.ready(c, f(5), &mut out);
        assert_eq!(ids(&out), [1]);
        o.fill(c, b, f(4), &mut out);
        assert_eq!(ids(&out), [1], "4 waits for 2");
        o.eof(c, &mut out);
        o.fill(c, a, f(2), &mut out);
        assert_eq!(ids(&out), [1, 2, 3, 4, 5]);
        assert!(matches!(out.last(), Some(Output::Close { .. })));
        assert_eq!(o.outstanding(c), 0);
        o.fill(c, a, f(9), &mut out);
        assert_eq!(ids(&out).len(), 5, "a stale fill is ignored");
    }

    #[test]
    fn replies_held_past_the_limit_close_the_connection() {
        let mut o = ReplyOrder::default();
        let c = ConnId::new(1, 1);
        let mut out = Vec::new();
        let head = o.reserve(c);
        let big = |n| Frame::new(21, n, 0, vec![0u8; HELD_LIMIT / 2 + 1]);
        let (a, b) = (o.reserve(c), o.reserve(c));
        o.fill(c, a, big(2), &mut out);
        o.ready(c, Frame::new(21, 3, 0, ""), &mut out);
        assert!(out.is_empty(), "under the limit: held");
        o.fill(c, b, big(4), &mut out);
        assert!(
            matches!(out[..], [Output::Close { conn }] if conn == c),
            "{out:?}"
        );
        assert_eq!((o.outstanding(c), o.queued_bytes(c)), (0, 0), "dropped");
        o.fill(c, head, f(1), &mut out);
        assert_eq!(out.len(), 1, "late replies are dropped");
    }
}
