//! HTTP connections on the reactor: buffering, keep-alive, pipelining and
//! replies in request order.
//!
//! A [`Front`] serves the connections of one HTTP listener. The service hands
//! it what the reactor reports for those connections (accepted, data, EOF,
//! closed) and pulls requests out with [`Front::next`]; each request gets a
//! [`RequestId`] and a slot in its connection's reply queue. The service answers
//! with [`Front::respond`] (a whole reply) or streams one with
//! [`Front::stream_start`], [`Front::stream_chunk`] and [`Front::stream_end`],
//! at once or later: replies leave in request order whatever order they are
//! given in, so several requests sent in one write (pipelining) are answered in
//! order. The reply at the head of the queue is written as it comes; the ones
//! behind it wait in their slots.
//!
//! Keep-alive: a connection stays open until a request says `Connection: close`
//! (or is HTTP/1.0 without `keep-alive`), the peer closes, or a request is
//! refused. After such a request nothing more is read from the stream; the
//! connection closes once its reply is out. A refused request (see
//! [`super::request`]) gets its error reply after the replies before it.
//!
//! Bounds: at most [`Limits::max_pipeline`] requests wait for replies on one
//! connection; beyond that `next` returns `None` and the reactor is asked to
//! hold the connection, released once replies go out (call `next` again after
//! a late reply: requests already buffered are not announced by the reactor
//! again). Buffered input is bounded by the head and body limits.
//!
//! Caveats: a streamed reply's producer must pace itself; the reactor stops
//! reading a connection whose output is over its high-water mark, but nothing
//! stops a service from queueing more.

use super::request::{self, Parsed, Request};
use super::response::{self, Response};
use super::Limits;
use crate::reactor::{ConnId, Output};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// One request: its connection and its place in that connection's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId {
    /// The connection it came on.
    pub conn: ConnId,
    /// Its number on that connection, from 0.
    pub seq: u64,
}

/// A reply not yet (wholly) written.
struct Slot {
    seq: u64,
    /// Bytes waiting behind earlier replies.
    bytes: BytesMut,
    /// The whole reply is in `bytes` (or already out).
    done: bool,
    /// Answer `HEAD`: no body.
    head_only: bool,
    /// Close the connection after this reply.
    close: bool,
}

/// One HTTP connection.
#[derive(Default)]
struct Conn {
    input: BytesMut,
    queue: VecDeque<Slot>,
    next_seq: u64,
    /// No more requests are read (close asked, refused, or EOF).
    stop_reading: bool,
    /// The peer sent EOF.
    eof: bool,
    /// `100 Continue` already sent for the request being read.
    continued: bool,
    /// The reactor was asked to hold this connection.
    held: bool,
    /// A close was queued: ignore everything else.
    closed: bool,
}

/// The HTTP connections of one listener.
pub struct Front {
    limits: Limits,
    conns: crate::reactor::ConnMap<Conn>,
}

impl Front {
    /// A front with no connections.
    pub fn new(limits: Limits) -> Front {
        Front {
            limits,
            conns: Default::default(),
        }
    }

    /// Whether `conn` is one of this front's connections.
    pub fn owns(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// A connection arrived on the HTTP listener: its bytes come raw from now on.
    pub fn accepted(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        self.conns.insert(conn, Conn::default());
        out.push(Output::Raw { conn });
    }

    /// Bytes arrived on `conn`; take the requests with [`Front::next`].
    pub fn data(&mut self, conn: ConnId, data: BytesMut) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.stop_reading {
                if c.input.is_empty() {
                    c.input = data;
                } else {
                    c.input.extend_from_slice(&data);
                }
            }
        }
    }

    /// The peer will send no more: answer what is complete, then close.
    pub fn eof(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.eof = true;
        }
        self.maybe_close(conn, out);
    }

    /// `conn` is gone.
    pub fn closed(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
    }

    /// The next whole request on `conn`, if there is one and the pipeline has
    /// room. A refused request is answered here (its error reply queued, the
    /// connection closing after it) and `None` returned.
    pub fn next(&mut self, conn: ConnId, out: &mut Vec<Output>) -> Option<(RequestId, Request)> {
        let limits = self.limits.clone();
        let c = self.conns.get_mut(&conn)?;
        if c.closed || c.stop_reading {
            self.maybe_close(conn, out);
            return None;
        }
        if c.queue.len() >= limits.max_pipeline {
            if !c.held {
                c.held = true;
                out.push(Output::Hold { conn, hold: true });
            }
            return None;
        }
        match request::parse(&mut c.input, &limits) {
            Ok(Parsed::Request(req)) => {
                c.continued = false;
                let seq = c.next_seq;
                c.next_seq += 1;
                let close = !req.keep_alive;
                c.stop_reading |= close;
                c.queue.push_back(Slot {
                    seq,
                    bytes: BytesMut::new(),
                    done: false,
                    head_only: req.method == "HEAD",
                    close,
                });
                Some((RequestId { conn, seq }, req))
            }
            Ok(Parsed::Incomplete { expects_continue }) => {
                if expects_continue && !c.continued && c.queue.is_empty() && !c.eof {
                    c.continued = true;
                    out.push(Output::SendBytes {
                        conn,
                        bytes: Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"),
                    });
                }
                if c.eof {
                    c.stop_reading = true;
                }
                self.maybe_close(conn, out);
                None
            }
            Err(refusal) => {
                c.stop_reading = true;
                c.input = BytesMut::new();
                let seq = c.next_seq;
                c.next_seq += 1;
                c.queue.push_back(Slot {
                    seq,
                    bytes: BytesMut::new(),
                    done: false,
                    head_only: false,
                    close: true,
                });
                let reply = Response::error(refusal.status, &refusal.message);
                self.respond(RequestId { conn, seq }, &reply, out);
                None
            }
        }
    }

    /// The whole reply to request `id`.
    pub fn respond(&mut self, id: RequestId, reply: &Response, out: &mut Vec<Output>) {
        let Some(slot) = self.slot(id) else { return };
        let bytes = reply.encode(slot.head_only, slot.close);
        slot.bytes.extend_from_slice(&bytes);
        slot.done = true;
        self.release(id.conn, out);
    }

    /// Starts a streamed (chunked) reply to request `id`.
    pub fn stream_start(
        &mut self,
        id: RequestId,
        status: u16,
        headers: &[(&'static str, String)],
        out: &mut Vec<Output>,
    ) {
        let Some(slot) = self.slot(id) else { return };
        let head = response::chunked_head(status, headers, slot.close);
        slot.bytes.extend_from_slice(&head);
        self.release(id.conn, out);
    }

    /// One piece of a streamed reply.
    pub fn stream_chunk(&mut self, id: RequestId, data: &[u8], out: &mut Vec<Output>) {
        let Some(slot) = self.slot(id) else { return };
        if !slot.head_only {
            slot.bytes.extend_from_slice(&response::chunk(data));
        }
        self.release(id.conn, out);
    }

    /// Ends a streamed reply.
    pub fn stream_end(&mut self, id: RequestId, out: &mut Vec<Output>) {
        let Some(slot) = self.slot(id) else { return };
        if !slot.head_only {
            slot.bytes.extend_from_slice(response::LAST_CHUNK);
        }
        slot.done = true;
        self.release(id.conn, out);
    }

    fn slot(&mut self, id: RequestId) -> Option<&mut Slot> {
        let c = self.conns.get_mut(&id.conn).filter(|c| !c.closed)?;
        c.queue.iter_mut().find(|s| s.seq == id.seq && !s.done)
    }

    /// Writes what the head of the queue has, and every finished reply behind it.
    fn release(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        while let Some(head) = c.queue.front_mut() {
            if !head.bytes.is_empty() {
                let bytes = head.bytes.split().freeze();
                out.push(Output::SendBytes { conn, bytes });
            }
            if !head.done {
                break;
            }
            let close = head.close;
            c.queue.pop_front();
            if close {
                c.closed = true;
                c.queue.clear();
                out.push(Output::Close { conn });
                return;
            }
        }
        if c.held && c.queue.len() < self.limits.max_pipeline {
            c.held = false;
            out.push(Output::Hold { conn, hold: false });
        }
        self.maybe_close(conn, out);
    }

    /// Closes a connection that will get no more requests once its replies are out.
    fn maybe_close(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closed || !c.queue.is_empty() {
            return;
        }
        // After EOF, requests still buffered are answered first (the caller's
        // `next` loop takes them); a trailing partial request is dropped.
        let buffered_whole = c.eof
            && !c.stop_reading
            && matches!(
                request::parse(&mut c.input.clone(), &self.limits),
                Ok(Parsed::Request(_))
            );
        if (c.stop_reading || c.eof) && !buffered_whole {
            c.closed = true;
            out.push(Output::Close { conn });
        }
    }
}
