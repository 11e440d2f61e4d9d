//! What passes between the reactor and the logic it drives: the [`Service`] trait,
//! its [`Input`]s (events) and [`Output`]s (effects), and the ids they name.
//!
//! The same vocabulary drives a service in the simulator (`src/sim/world`), so a
//! service cannot tell a real event loop from a simulated one.

use crate::protocol::{Error, Frame};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::SocketAddr;

/// Milliseconds since the reactor started (or since a simulation began).
pub type Millis = u64;

/// Names one connection for its whole life: a slab index plus a generation, so an
/// id kept after its connection closed never matches the next one in that slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnId {
    pub(super) idx: u32,
    pub(super) gen: u32,
}

impl Hash for ConnId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // One word: with [`IdHasher`], one multiplication.
        state.write_u64(u64::from(self.idx) << 32 | u64::from(self.gen));
    }
}

/// A map keyed by connection ids. They are handed out by the reactor (a slab
/// index and a generation), never chosen by a peer, so the map needs no keyed
/// hash: [`IdHasher`] is one multiplication where SipHash took a few percent
/// of a node's time under load (several look-ups per request).
pub type ConnMap<V> = HashMap<ConnId, V, BuildHasherDefault<IdHasher>>;

/// Hashes a `u64` id by one multiplication with an odd constant (Fibonacci
/// hashing): consecutive ids land in distinct buckets, and the high bits the
/// table also looks at are mixed. Only for ids the process hands out itself
/// (connection ids, request ids, forward tags): a peer that chose the keys
/// could crowd one bucket.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl ConnId {
    /// Builds an id (for simulations and tests).
    pub const fn new(idx: u32, gen: u32) -> ConnId {
        ConnId { idx, gen }
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}.{}", self.idx, self.gen)
    }
}

/// A process signal, delivered as an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: leave gracefully.
    Terminate,
    /// SIGINT: stop.
    Interrupt,
}

/// What happened.
#[derive(Debug)]
pub enum Input {
    /// A connection was accepted on listener number `listener`.
    Accepted {
        /// The new connection.
        conn: ConnId,
        /// Index of the listener, in the order they were added.
        listener: usize,
    },
    /// An outbound connect tagged `tag` succeeded.
    Connected {
        /// The new connection.
        conn: ConnId,
        /// The tag given in `Output::Connect`.
        tag: u64,
    },
    /// An outbound connect tagged `tag` failed.
    ConnectFailed {
        /// The tag given in `Output::Connect`.
        tag: u64,
    },
    /// A whole frame arrived.
    Frame {
        /// Where from.
        conn: ConnId,
        /// The frame.
        frame: Frame,
    },
    /// The byte stream broke the framing rules; nothing more is read from `conn`.
    FrameError {
        /// Where from.
        conn: ConnId,
        /// `BADFRAME` or `TOOLARGE`.
        error: Error,
        /// The offending request's client id, when its header could be read
        /// (`TOOLARGE`), else 0.
        client_id: u64,
    },
    /// Bytes read from a connection in raw mode (see `Output::Raw`): everything
    /// read since the last `Data`, unparsed. The service keeps what it cannot use yet.
    Data {
        /// Where from.
        conn: ConnId,
        /// The bytes.
        data: BytesMut,
    },
    /// The peer will send no more; every whole frame it sent was delivered before this.
    Eof {
        /// Which connection.
        conn: ConnId,
    },
    /// The connection is gone (reset, closed by either side). Always the last input
    /// for a connection that was accepted or connected.
    Closed {
        /// Which connection.
        conn: ConnId,
    },
    /// A timer set with `Output::Timer` is due.
    Timer {
        /// Its id.
        id: u64,
    },
    /// A signal arrived.
    Signal(Signal),
    /// The connection's queued output drained below the low-water mark after
    /// the service asked with `Output::WhenDrained` (once per ask).
    Drained {
        /// Which connection.
        conn: ConnId,
    },
}

/// What to do.
#[derive(Debug)]
pub enum Output {
    /// Queue a frame on a connection (flushed at the end of the turn).
    Send {
        /// Where to.
        conn: ConnId,
        /// What.
        frame: Frame,
    },
    /// Queue bytes as they are (a raw-mode connection's output, or a frame encoded
    /// ahead of time).
    SendBytes {
        /// Where to.
        conn: ConnId,
        /// What.
        bytes: Bytes,
    },
    /// Put bytes a raw connection's service did not use back in front of its
    /// read buffer: they come back (with anything read since) in a later
    /// `Input::Data`, on the reactor's next visit to the connection (after other
    /// connections had their go) and once its output is below the high-water
    /// mark. A service that stops serving commands when a step's replies pile up
    /// gives the rest back this way, so the high-water check falls between
    /// commands, not between reads.
    Unread {
        /// Which connection.
        conn: ConnId,
        /// The bytes not used, in order.
        data: BytesMut,
    },
    /// Deliver `Input::Drained { conn }` once the connection's queued output is
    /// at or below the low-water mark (at once, on the next turn, if it is
    /// already): a service streaming a long reply asks for more only then.
    WhenDrained {
        /// Which connection.
        conn: ConnId,
    },
    /// Hand a connection no more input this turn: it is revisited on the next
    /// (a service whose replies for the turn are piling up where the reactor
    /// cannot see them, waiting for a group commit, say).
    Yield {
        /// Which connection.
        conn: ConnId,
    },
    /// Switch a connection to raw mode: from now on its input arrives as
    /// `Input::Data` instead of being cut into frames (another protocol runs on
    /// it). Backpressure and holds work as for framed connections.
    Raw {
        /// Which connection.
        conn: ConnId,
    },
    /// Flush, then close the connection.
    Close {
        /// Which one.
        conn: ConnId,
    },
    /// Open an outbound connection; answered by `Connected` or `ConnectFailed`.
    Connect {
        /// Where to.
        addr: SocketAddr,
        /// Echoed in the answer.
        tag: u64,
    },
    /// Deliver `Input::Timer { id }` at time `at`.
    Timer {
        /// When, in reactor milliseconds.
        at: Millis,
        /// Echoed in the input.
        id: u64,
    },
    /// The peer proved it is a cluster member: accept frames up to
    /// [`super::Config::member_max_payload`] from it.
    Trust {
        /// Which connection.
        conn: ConnId,
    },
    /// Stop (true) or resume (false) reading requests from a connection: the
    /// service's own backlog for it is too large.
    Hold {
        /// Which connection.
        conn: ConnId,
        /// Hold or release.
        hold: bool,
    },
    /// Flush everything and leave the loop.
    Stop,
}

/// The logic the reactor drives.
pub trait Service {
    /// Takes one input at time `now` and pushes outputs to `out`.
    fn step(&mut self, now: Millis, input: Input, out: &mut Vec<Output>);

    /// Called once per loop turn, after every input of the turn and before any
    /// output is written: the place for work that covers a whole turn (one
    /// `fsync` for a batch of writes, releasing the replies it covers).
    fn turn_end(&mut self, _now: Millis, _out: &mut Vec<Output>) {}
}

/// Queues an `ERR` reply on `conn` and, when the error means the stream can no
/// longer be trusted, a close after it.
pub fn reply_error(out: &mut Vec<Output>, conn: ConnId, client_id: u64, node_id: u32, err: &Error) {
    out.push(Output::Send {
        conn,
        frame: Frame::error(client_id, node_id, err),
    });
    if err.code.closes_connection() {
        out.push(Output::Close { conn });
    }
}
