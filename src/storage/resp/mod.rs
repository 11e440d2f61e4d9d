//! The RESP front: a storage node speaking RESP2 (the Redis protocol) on a second
//! port, so `redis-cli`, `redis-benchmark` and Redis client libraries can use it.
//!
//! The front is a gateway around the node's service (see
//! [`super::gateway`]). A [`RespSession`] per connection turns Redis commands
//! into the node's own requests ([`Frame`]s of the native protocol), and the
//! node serves those frames as requests from that connection: the same
//! forwarding to the key's owner, the same replication and reply ordering, the
//! same backpressure. The node's replies come back as typed gateway events
//! ([`RespFront::deliver`]) and the session renders them as RESP; the bytes a
//! step finished leave at its end ([`RespFront::end_step`]). Nothing here does
//! I/O or touches the data; the node drives it (see `node/resp.rs`).
//! [`RespFront`] holds every session of a node and answers what needs all of
//! them (`CLIENT LIST`).
//!
//! The parts: `session` (the per-connection FIFO of commands and how finished
//! ones are rendered), `commands` (what each data command becomes), `listing`
//! (SCAN and KEYS), `pattern` (their glob patterns), `client` (the
//! connection's own state: `HELLO`, `AUTH`, `CLIENT`, and the `CLIENT LIST` line).
//!
//! How commands map (see docs/protocol.md, "RESP front"):
//!
//! - one native request: GET, SET (PUT; CREATE with NX, UPDATE with XX), INCR,
//!   DECR, INCRBY, DECRBY (INCR with a delta), PING;
//! - one request per key, aggregated into one reply: MGET (an array), MSET (`+OK`),
//!   DEL and EXISTS (the count of keys that were there);
//! - walks of the cluster with the native SCAN: SCAN (one page per call, the
//!   cursor a point of the hash space) and KEYS (every range at once, bounded),
//!   see `listing`;
//! - answered from the node's own facts: DBSIZE (this node's key count, not the
//!   cluster's), INFO, and CLIENT LIST (this node's RESP connections);
//! - answered by the session alone: ECHO, COMMAND, CONFIG GET, CLIENT, HELLO,
//!   AUTH, SELECT 0, QUIT, and errors for wrong arity and unknown commands.
//!
//! Replies follow Redis 7 byte for byte where gtstore claims a command
//! (tests/redis_compat.rs compares them with a real redis-server): the same
//! arity and unknown-command errors, integers only in canonical form (see
//! `protocol::int`), `ERR increment or decrement would overflow`, HELLO answered
//! as a RESP2-only server (`-NOPROTO` for version 3 and up).
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
//! at a time (`Input::Data`), and the node serves its commands one by one, handing
//! the session its replies after each, until this step's replies to the connection
//! ([`RespFront::served`]) reach [`STEP_OUTPUT`]; the rest of the
//! input goes back to the reactor (`Output::Unread`), which hands it over again
//! only while the connection's queued output is below the high-water mark. So a
//! connection that pipelines `GET` of a large value and never reads is stopped
//! within one command of the mark, not after a whole read of commands.
//!
//! Caveats: no expiry (SET EX/PX/EXAT/PXAT/GET are refused after Redis's own
//! syntax checks; KEEPTTL, with no TTL to keep, is a plain SET), one database
//! (SELECT 0 only), no transactions, pub/sub or scripts; a multi-key command is not
//! atomic (each key is its own request, maybe on different nodes), and when some
//! of its requests fail the command replies with the first error (MSET's says
//! how many of its writes failed); empty keys,
//! which Redis allows, get the node's `BADKEY` error. The reactor does not tell a
//! service its peers' addresses or sockets, so `CLIENT LIST` shows `addr=?:0
//! laddr=?:0 fd=-1`, Redis's own marks for "unknown"; its memory fields are 0.

mod client;
mod commands;
mod listing;
mod pattern;
mod session;
#[cfg(test)]
mod tests;

pub use session::RespSession;

use super::gateway::Event;
use crate::protocol::resp::{self, Limits};
use crate::protocol::Frame;
use crate::reactor::{ConnId, Millis, Output};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

/// The index of the RESP listener: the node's native listener is bound first (0),
/// the RESP one second.
pub const LISTENER: usize = 1;
/// FIFO entries on one connection above which the node stops reading it.
pub const HOLD_ENTRIES: usize = 8192;
/// Bytes of answers waiting in one connection's FIFO above which the node stops
/// reading it.
pub const HOLD_BYTES: usize = 4 << 20;
/// Bytes of replies one step serves a RESP connection before the rest of its
/// input goes back to the reactor (`Output::Unread`), which hands it over again
/// once the connection's output is below its high-water mark and the turn's
/// share allows: the output bound is checked between commands.
pub const STEP_OUTPUT: usize = 64 << 10;
/// The Redis version whose replies the front follows, as HELLO and INFO report it.
pub const REDIS_VERSION: &str = "7.2.0";

/// What the node must do for the session, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// Serve this native request as if a client had sent it on the connection.
    Request(Frame),
    /// A command needs the node's facts: call [`RespFront::facts`] (or
    /// [`RespSession::facts`]).
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

/// Every RESP session of a node, and the gateway events the node delivers to them.
#[derive(Debug)]
pub struct RespFront {
    limits: Limits,
    /// The password every connection must give (AUTH) before other commands.
    password: Option<Bytes>,
    sessions: crate::reactor::ConnMap<RespSession>,
    next_id: u64,
    /// Connections whose backlog changed this step (replies to send, hold
    /// checks).
    touched: Vec<ConnId>,
    /// The time of the last input (for CLIENT LIST's ages).
    now: Millis,
    /// The end tokens of the ring's ranges, as the node routes by.
    ring: Arc<[u64]>,
}

impl RespFront {
    /// A front with no connections; commands are bounded by `limits`.
    pub fn new(limits: Limits) -> RespFront {
        RespFront {
            limits,
            password: None,
            sessions: Default::default(),
            next_id: 1,
            touched: Vec::new(),
            now: 0,
            ring: Arc::from(Vec::new()),
        }
    }

    /// The ring's ranges end at `bounds` (the node routes by them): SCAN and
    /// KEYS walk these.
    pub fn set_ring(&mut self, bounds: &[u64]) {
        if *self.ring != *bounds {
            self.ring = Arc::from(bounds);
        }
    }

    /// Every connection from now on must `AUTH` with `password` (Redis's
    /// `requirepass`) before any command but AUTH, HELLO and QUIT.
    pub fn require_password(&mut self, password: Bytes) {
        self.password = Some(password);
    }

    /// Whether `conn` is a RESP connection.
    pub fn has(&self, conn: ConnId) -> bool {
        self.sessions.contains_key(&conn)
    }

    /// A connection arrived on the RESP listener at `now`: switch it to raw bytes.
    pub fn accept(&mut self, now: Millis, conn: ConnId, out: &mut Vec<Output>) {
        self.now = now;
        let mut session = RespSession::new(self.limits.clone(), self.next_id);
        session.connected_at(now);
        if let Some(p) = &self.password {
            session.client.require(p.clone());
        }
        self.next_id += 1;
        self.sessions.insert(conn, session);
        out.push(Output::Raw { conn });
    }

    /// Bytes arrived on a RESP connection at `now` (see [`RespSession::feed`]).
    pub fn feed(&mut self, now: Millis, conn: ConnId, data: BytesMut) -> Vec<Item> {
        self.now = now;
        let Some(s) = self.sessions.get_mut(&conn) else {
            return vec![Item::Close];
        };
        if !std::mem::replace(&mut s.touched, true) {
            self.touched.push(conn);
        }
        if !Arc::ptr_eq(&s.ring, &self.ring) {
            s.ring = self.ring.clone();
        }
        s.feed(now, data)
    }

    /// Bytes arrived on a RESP connection at `now`, kept for
    /// [`RespFront::next_command`]; false if `conn` has no session.
    pub fn take_input(&mut self, now: Millis, conn: ConnId, data: BytesMut) -> bool {
        self.now = now;
        let Some(s) = self.sessions.get_mut(&conn) else {
            return false;
        };
        if !std::mem::replace(&mut s.touched, true) {
            self.touched.push(conn);
        }
        if !Arc::ptr_eq(&s.ring, &self.ring) {
            s.ring = self.ring.clone();
        }
        s.take_input(now, data);
        true
    }

    /// See [`RespSession::next_command`].
    pub fn next_command(&mut self, conn: ConnId, items: &mut Vec<Item>) -> bool {
        (self.sessions.get_mut(&conn)).is_some_and(|s| s.next_command(items))
    }

    /// See [`RespSession::take_unparsed`].
    pub fn take_unparsed(&mut self, conn: ConnId) -> Option<BytesMut> {
        self.sessions.get_mut(&conn)?.take_unparsed()
    }

    /// See [`RespSession::finish`].
    pub fn finish(&mut self, conn: ConnId, items: &mut Vec<Item>) {
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.finish(items);
        }
    }

    /// The node's facts for the oldest DBSIZE, INFO or CLIENT LIST waiting on
    /// `conn`; returns the RESP bytes now ready, if any.
    pub fn facts(&mut self, conn: ConnId, facts: NodeFacts) -> Option<Bytes> {
        let session = self.sessions.get(&conn)?;
        let list = match session.waiting_fact()? {
            session::Fact::Clients(filter) => {
                let mut all: Vec<&RespSession> = self.sessions.values().collect();
                all.sort_by_key(|s| s.client.id);
                let mut text = Vec::new();
                for s in all.into_iter().filter(|s| filter.keeps(s.client.id)) {
                    s.info_line(self.now, &mut text);
                }
                Some(text)
            }
            _ => None,
        };
        let s = self.sessions.get_mut(&conn)?;
        match list {
            Some(text) => s.fill_facts(|out| resp::bulk(out, &text)),
            None => s.facts(facts),
        }
    }

    /// The connection is gone.
    pub fn closed(&mut self, conn: ConnId) {
        self.sessions.remove(&conn);
    }

    /// Bytes of replies the session of `conn` has taken so far (native replies'
    /// payloads and its own answers): the node serves a connection's input until
    /// this grew by [`STEP_OUTPUT`] in one step.
    pub fn served(&self, conn: ConnId) -> usize {
        self.sessions.get(&conn).map_or(0, |s| s.served)
    }

    /// Takes the node's `event` for RESP connection `conn` (see
    /// [`crate::storage::gateway`]). A reply fills its command's entry; the RESP
    /// bytes it finishes wait in the session and leave at
    /// [`RespFront::end_step`], so a pipelined batch answered in one step leaves
    /// in one buffer. A hold of the node's is reconciled with the session's own
    /// (the connection stays held while either wants it); a close sends what is
    /// ready first.
    pub fn deliver(&mut self, conn: ConnId, event: Event, out: &mut Vec<Output>) {
        let Some(s) = self.sessions.get_mut(&conn) else {
            if event == Event::Close {
                out.push(Output::Close { conn });
            }
            return;
        };
        match event {
            Event::Reply(frame) => {
                s.absorb_reply(&frame);
                if !std::mem::replace(&mut s.touched, true) {
                    self.touched.push(conn);
                }
                if s.take_close() {
                    s.flush(conn, out);
                    out.push(Output::Close { conn });
                }
            }
            Event::Hold(hold) => {
                s.node_held = hold;
                if (hold || !s.over()) && s.held != hold {
                    s.held = hold;
                    out.push(Output::Hold { conn, hold });
                }
            }
            Event::Close => {
                s.flush(conn, out);
                out.push(Output::Close { conn });
            }
        }
    }

    /// Ends the node's step: sends the RESP bytes each session finished in it,
    /// and holds a connection whose backlog is over its bounds, or reads it
    /// again once the backlog drained and the node does not hold it either.
    pub fn end_step(&mut self, out: &mut Vec<Output>) {
        for conn in self.touched.drain(..) {
            let Some(s) = self.sessions.get_mut(&conn) else {
                continue;
            };
            s.touched = false;
            s.flush(conn, out);
            if !s.held && s.over() {
                s.held = true;
                out.push(Output::Hold { conn, hold: true });
            } else if s.held && s.drained() && !s.node_held {
                s.held = false;
                out.push(Output::Hold { conn, hold: false });
            }
        }
    }
}
