//! The state of one connection's byte streams, apart from its socket.
//!
//! [`ConnBuf`] holds what the reactor and the simulator (`src/sim/world`) both need
//! to know about a connection and decide the same way: the bytes read but not yet
//! handed to the service, the bytes queued but not yet written, and the flags that
//! say whether input may be handed over now.
//!
//! - Input: bytes are appended with [`ConnBuf::push_input`]; [`ConnBuf::next_input`]
//!   cuts the next [`Input`] out of them (a frame, a framing error after which
//!   nothing more is read, or, in raw mode, everything buffered), and
//!   [`ConnBuf::take_eof`] yields `Eof` once the peer's end of stream was seen and
//!   every whole frame before it was handed over.
//! - Holds: input stops while the service asked for it (`Output::Hold`) or while
//!   the output queue is above the high-water mark ([`Marks::high`]); the latter
//!   lifts when a write brings the queue down to the low-water mark
//!   ([`Marks::low`]). The check comes before every frame (and, in raw mode,
//!   before every hand-over: a service that stops between commands gives the rest
//!   back with [`ConnBuf::unread`]), so a client that pipelines forever and never
//!   reads costs at most the high-water mark plus the replies of one command.
//! - Hard limit: a client connection whose queued output passes [`Marks::limit`]
//!   (replies that were already on their way when it paused: answers to
//!   forwarded requests, say) is over its limit ([`ConnBuf::over_limit`]); the
//!   reactor then drops it, queued output and all, as redis does past its
//!   `client-output-buffer-limit`. Proven members have no limit
//!   ([`ConnBuf::set_max_payload`] lifts it).
//! - The pending list: mio is edge-triggered, so a connection that is resumed, or
//!   whose read budget ran out, gets no new event and must be revisited without one.
//!   [`ConnBuf::mark_pending`] says whether to put it on the reactor's list (at most
//!   once until [`ConnBuf::unmark_pending`]); the same for the list of connections
//!   with output to flush ([`ConnBuf::mark_dirty`]).
//! - Close after drain: after [`ConnBuf::close`] input is discarded, queued output
//!   still leaves, and [`ConnBuf::drained`] says when the write side may be shut.
//! - Memory: buffers larger than [`Marks::shrink_above`] are released once empty
//!   (after a large frame), and an idle connection's empty read buffer is released
//!   ([`ConnBuf::release_idle_input`]).
//!
//! The simulator has no output buffers (its bytes leave at once), so it uses the
//! input side, holds and close; the reactor uses all of it.

use super::{ConnId, Input};
use crate::protocol::{self, Error, Frame, Parse};
use bytes::{Buf, BytesMut};

/// A connection's output limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marks {
    /// Queued output above which input stops.
    pub high: usize,
    /// Queued output at or below which stopped input resumes.
    pub low: usize,
    /// Buffers with more capacity than this are released once empty.
    pub shrink_above: usize,
    /// Queued output above which a client connection is dropped.
    pub limit: usize,
}

impl Marks {
    /// No output limits (a connection whose output never queues).
    pub const NONE: Marks = Marks {
        high: usize::MAX,
        low: usize::MAX,
        shrink_above: usize::MAX,
        limit: usize::MAX,
    };
}

/// One connection's buffers and flow state.
#[derive(Debug)]
pub struct ConnBuf {
    inbuf: BytesMut,
    outbuf: BytesMut,
    marks: Marks,
    /// Largest payload accepted.
    max_payload: u32,
    /// Input goes to the service unparsed.
    raw: bool,
    /// The service asked to stop input.
    held: bool,
    /// Output above high water: input stopped until it drains to low water.
    paused: bool,
    /// The framing broke: nothing more is read.
    broken: bool,
    /// The peer's end of stream was seen.
    eof_in: bool,
    /// `Eof` was handed to the service.
    eof_told: bool,
    /// Close was asked: input is discarded, output drains.
    closing: bool,
    in_pending: bool,
    in_dirty: bool,
    /// The service gave input back: nothing more is handed over this turn.
    yielded: bool,
}

impl ConnBuf {
    /// An open connection accepting payloads up to `max_payload`.
    pub fn new(max_payload: u32, marks: Marks) -> ConnBuf {
        ConnBuf {
            inbuf: BytesMut::new(),
            outbuf: BytesMut::new(),
            marks,
            max_payload,
            raw: false,
            held: false,
            paused: false,
            broken: false,
            eof_in: false,
            eof_told: false,
            closing: false,
            in_pending: false,
            in_dirty: false,
            yielded: false,
        }
    }

    /// Accepts payloads up to `max` from now on, and lifts the hard output limit
    /// (`Output::Trust`: a proven member).
    pub fn set_max_payload(&mut self, max: u32) {
        self.max_payload = max;
        self.marks.limit = usize::MAX;
    }

    /// Whether queued output passed the hard limit ([`Marks::limit`]): the
    /// connection must be dropped.
    pub fn over_limit(&self) -> bool {
        self.outbuf.len() > self.marks.limit
    }

    /// Puts bytes the service did not use back in front of the read buffer (raw
    /// mode): they are handed over again, with what arrives after them, once
    /// input is not stopped, and not before the reactor's next visit
    /// ([`ConnBuf::take_yield`]).
    pub fn unread(&mut self, mut bytes: BytesMut) {
        if self.closing || self.broken || bytes.is_empty() {
            return;
        }
        self.yielded = true;
        if !self.inbuf.is_empty() {
            bytes.extend_from_slice(&self.inbuf);
        }
        self.inbuf = bytes;
    }

    /// Hands over no more input until the reactor's next visit (`Output::Yield`).
    pub fn set_yield(&mut self) {
        self.yielded = true;
    }

    /// Whether the service gave input back since the last call: the reactor
    /// stops handing this connection input until its next visit.
    pub fn take_yield(&mut self) -> bool {
        std::mem::take(&mut self.yielded)
    }

    /// Drops every queued byte (a connection dropped at its hard limit).
    pub fn discard_output(&mut self) {
        self.outbuf = BytesMut::new();
    }

    /// Hands input over unparsed from now on (`Output::Raw`).
    pub fn set_raw(&mut self) {
        self.raw = true;
    }

    /// Stops (true) or resumes (false) input at the service's request.
    pub fn set_held(&mut self, hold: bool) {
        self.held = hold;
    }

    /// Whether the service holds input.
    pub fn held(&self) -> bool {
        self.held
    }

    /// Appends bytes read from the peer (dropped once closing or broken).
    pub fn push_input(&mut self, bytes: &[u8]) {
        if !self.closing && !self.broken {
            self.inbuf.extend_from_slice(bytes);
        }
    }

    /// Room left in the read buffer without growing it.
    pub fn input_spare(&self) -> usize {
        self.inbuf.capacity() - self.inbuf.len()
    }

    /// Releases the read buffer if it is empty (an idle connection keeps none).
    pub fn release_idle_input(&mut self) {
        if self.inbuf.is_empty() && self.inbuf.capacity() > 0 {
            self.inbuf = BytesMut::new();
        }
    }

    /// The peer sent its end of stream.
    pub fn set_eof(&mut self) {
        self.eof_in = true;
    }

    /// Whether the peer's end of stream was seen.
    pub fn eof_seen(&self) -> bool {
        self.eof_in
    }

    /// Whether nothing more will be read: the peer ended its stream or the framing
    /// broke.
    pub fn input_ended(&self) -> bool {
        self.eof_in || self.broken
    }

    /// Whether input is stopped (held by the service or by output above high
    /// water), checking the high-water mark first.
    pub fn stopped(&mut self) -> bool {
        if self.outbuf.len() > self.marks.high {
            self.paused = true;
        }
        self.held || self.paused
    }

    /// The next input for the service from the buffered bytes, if one may be
    /// handed over now: a frame, a framing error (after which nothing more is
    /// read), or in raw mode everything buffered.
    pub fn next_input(&mut self, conn: ConnId) -> Option<Input> {
        if self.closing || self.broken || self.stopped() || self.inbuf.is_empty() {
            return None;
        }
        if self.raw {
            let data = self.inbuf.split();
            return Some(Input::Data { conn, data });
        }
        match protocol::parse(&mut self.inbuf, self.max_payload) {
            Ok(Parse::Frame(frame)) => Some(Input::Frame { conn, frame }),
            Ok(Parse::Incomplete { need }) => {
                let have = self.inbuf.len();
                self.inbuf.reserve(need.saturating_sub(have));
                None
            }
            Err(error) => Some(self.broke(conn, error)),
        }
    }

    /// The framing broke: read no more, drop the input, and say why.
    fn broke(&mut self, conn: ConnId, error: Error) -> Input {
        self.broken = true;
        let client_id = header_client_id(&self.inbuf);
        self.inbuf = BytesMut::new();
        Input::FrameError {
            conn,
            error,
            client_id,
        }
    }

    /// `Eof`, once: when the peer ended its stream, input is not stopped, and
    /// [`ConnBuf::next_input`] has nothing more (at most a partial frame is left).
    pub fn take_eof(&mut self, conn: ConnId) -> Option<Input> {
        if !self.eof_in || self.eof_told || self.broken || self.closing || self.stopped() {
            return None;
        }
        self.eof_told = true;
        Some(Input::Eof { conn })
    }

    /// Queues a frame for the peer.
    pub fn queue_frame(&mut self, frame: &Frame) {
        protocol::encode(
            &mut self.outbuf,
            frame.op,
            frame.client_id,
            frame.node_id,
            &frame.payload,
        );
    }

    /// Queues bytes for the peer as they are.
    pub fn queue_bytes(&mut self, bytes: &[u8]) {
        self.outbuf.extend_from_slice(bytes);
    }

    /// The queued output.
    pub fn output(&self) -> &[u8] {
        &self.outbuf
    }

    /// Bytes of queued output.
    pub fn output_len(&self) -> usize {
        self.outbuf.len()
    }

    /// `n` bytes of output were written. Once the queue is empty, oversized
    /// buffers are released. Returns true when this lifted a high-water stop, so
    /// the connection must be revisited (put on the pending list).
    pub fn wrote(&mut self, n: usize) -> bool {
        self.outbuf.advance(n);
        if self.outbuf.is_empty() {
            if self.outbuf.capacity() > self.marks.shrink_above {
                self.outbuf = BytesMut::new();
            }
            if self.inbuf.is_empty() && self.inbuf.capacity() > self.marks.shrink_above {
                self.inbuf = BytesMut::new();
            }
        }
        if self.paused && self.outbuf.len() <= self.marks.low {
            self.paused = false;
            return true;
        }
        false
    }

    /// Asks to close: input is discarded from now on, queued output still leaves.
    /// Returns false if the connection was already closing.
    pub fn close(&mut self) -> bool {
        if self.closing {
            return false;
        }
        self.closing = true;
        self.inbuf = BytesMut::new();
        true
    }

    /// Whether close was asked.
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// Whether close was asked and every queued byte has been written: the write
    /// side may be shut.
    pub fn drained(&self) -> bool {
        self.closing && self.outbuf.is_empty()
    }

    /// Marks the connection for a revisit; true if it was not marked yet (put it
    /// on the pending list).
    pub fn mark_pending(&mut self) -> bool {
        !std::mem::replace(&mut self.in_pending, true)
    }

    /// Taken off the pending list.
    pub fn unmark_pending(&mut self) {
        self.in_pending = false;
    }

    /// Marks the connection as having output to flush; true if it was not marked
    /// yet (put it on the flush list).
    pub fn mark_dirty(&mut self) -> bool {
        !std::mem::replace(&mut self.in_dirty, true)
    }

    /// Taken off the flush list.
    pub fn unmark_dirty(&mut self) {
        self.in_dirty = false;
    }
}

/// The client id of the header at the front of `buf`, if it parses (0 if not).
fn header_client_id(buf: &[u8]) -> u64 {
    let window = &buf[..buf.len().min(protocol::MAX_HEADER)];
    memchr::memchr(b'\n', window)
        .and_then(|lf| protocol::frame::parse_header(&window[..lf]).ok())
        .map_or(0, |h| h.client_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{op, ErrorCode};
    use bytes::Bytes;

    const ID: ConnId = ConnId::new(1, 1);
    const MARKS: Marks = Marks {
        high: 100,
        low: 40,
        shrink_above: 1 << 16,
        limit: 1000,
    };

    fn frame(n: u64) -> Frame {
        Frame {
            op: op::GET,
            client_id: n,
            node_id: 0,
            payload: Bytes::from_static(b"key"),
        }
    }

    fn wire(frames: &[Frame]) -> Vec<u8> {
        let mut b = BytesMut::new();
        for f in frames {
            protocol::encode(&mut b, f.op, f.client_id, f.node_id, &f.payload);
        }
        b.to_vec()
    }

    fn ids(buf: &mut ConnBuf) -> Vec<u64> {
        let mut got = Vec::new();
        while let Some(input) = buf.next_input(ID) {
            match input {
                Input::Frame { frame, .. } => got.push(frame.client_id),
                other => panic!("unexpected {other:?}"),
            }
        }
        got
    }

    #[test]
    fn frames_come_out_whole_in_any_split_then_eof() {
        let bytes = wire(&[frame(1), frame(2), frame(3)]);
        for cut in 0..bytes.len() {
            let mut b = ConnBuf::new(1024, MARKS);
            b.push_input(&bytes[..cut]);
            let mut got = ids(&mut b);
            assert!(b.take_eof(ID).is_none(), "no eof before the peer ends");
            b.push_input(&bytes[cut..]);
            b.set_eof();
            got.extend(ids(&mut b));
            assert_eq!(got, [1, 2, 3], "cut at {cut}");
            assert!(matches!(b.take_eof(ID), Some(Input::Eof { .. })));
            assert!(b.take_eof(ID).is_none(), "eof once");
        }
    }

    #[test]
    fn a_broken_stream_is_one_error_and_nothing_more() {
        let mut b = ConnBuf::new(1024, MARKS);
        b.push_input(b"not a frame at all\n");
        b.set_eof();
        match b.next_input(ID) {
            Some(Input::FrameError { error, .. }) => assert_eq!(error.code, ErrorCode::BadFrame),
            other => panic!("unexpected {other:?}"),
        }
        b.push_input(&wire(&[frame(1)]));
        assert!(b.next_input(ID).is_none());
        assert!(b.take_eof(ID).is_none(), "no eof after a broken stream");
        assert!(b.input_ended());
    }

    #[test]
    fn raw_mode_hands_over_everything_buffered() {
        let mut b = ConnBuf::new(1024, MARKS);
        b.set_raw();
        b.push_input(b"PING\r\n");
        b.push_input(b"PI");
        match b.next_input(ID) {
            Some(Input::Data { data, .. }) => assert_eq!(&data[..], b"PING\r\nPI"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(b.next_input(ID).is_none());
    }

    #[test]
    fn output_above_high_water_stops_input_until_low_water() {
        let mut b = ConnBuf::new(1024, MARKS);
        b.push_input(&wire(&[frame(1), frame(2)]));
        b.queue_bytes(&[b'x'; 101]);
        assert!(b.next_input(ID).is_none(), "above high water");
        b.set_eof();
        assert!(b.take_eof(ID).is_none(), "eof waits behind the frames");
        assert!(!b.wrote(50), "51 left: still above low water");
        assert!(b.next_input(ID).is_none());
        assert!(b.wrote(11), "40 left: resumes, revisit it");
        assert!(!b.wrote(0), "told once");
        assert_eq!(ids(&mut b), [1, 2]);
        assert!(b.take_eof(ID).is_some());
    }

    #[test]
    fn unread_bytes_come_back_first_once_output_drains() {
        let mut b = ConnBuf::new(1024, MARKS);
        b.set_raw();
        b.push_input(b"GET a\r\nGET b\r\n");
        let Some(Input::Data { mut data, .. }) = b.next_input(ID) else {
            panic!("no data");
        };
        let rest = data.split_off(7);
        b.queue_bytes(&[b'x'; 101]);
        b.unread(rest);
        b.push_input(b"GET c\r\n");
        assert!(b.next_input(ID).is_none(), "above high water");
        b.wrote(101);
        match b.next_input(ID) {
            Some(Input::Data { data, .. }) => assert_eq!(&data[..], b"GET b\r\nGET c\r\n"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn past_the_hard_limit_until_trusted() {
        let mut b = ConnBuf::new(1024, MARKS);
        b.queue_bytes(&[b'x'; 1000]);
        assert!(!b.over_limit());
        b.queue_bytes(b"y");
        assert!(b.over_limit());
        b.set_max_payload(1 << 20);
        assert!(!b.over_limit(), "members have no limit");
        b.discard_output();
        assert_eq!(b.output_len(), 0);
    }

    #[test]
    fn at_high_water_exactly_input_goes_on() {
        let mut b = ConnBuf::new(1024, MARKS);
        b.queue_bytes(&[b'x'; 100]);
        b.push_input(&wire(&[frame(7)]));
        assert_eq!(ids(&mut b), [7]);
    }

    #[test]
    fn a_hold_stops_frames_and_eof_until_released() {
        let mut b = ConnBuf::new(1024, MARKS);
        b.push_input(&wire(&[frame(1), frame(2)]));
        b.set_eof();
        assert!(b.next_input(ID).is_some());
        b.set_held(true);
        assert!(b.next_input(ID).is_none());
        assert!(b.take_eof(ID).is_none());
        b.set_held(false);
        assert_eq!(ids(&mut b), [2]);
        assert!(b.take_eof(ID).is_some());
    }

    #[test]
    fn close_discards_input_and_drains_output() {
        let mut b = ConnBuf::new(1024, MARKS);
        b.push_input(&wire(&[frame(1)]));
        b.queue_frame(&frame(9));
        assert!(b.close());
        assert!(!b.close(), "closing once");
        assert!(b.next_input(ID).is_none(), "buffered input is dropped");
        b.push_input(&wire(&[frame(2)]));
        b.set_eof();
        assert!(b.next_input(ID).is_none() && b.take_eof(ID).is_none());
        assert!(!b.drained(), "the reply is still queued");
        b.queue_bytes(b"+OK\r\n");
        let n = b.output_len();
        let mut expect = wire(&[frame(9)]);
        expect.extend_from_slice(b"+OK\r\n");
        assert_eq!(b.output(), &expect[..]);
        b.wrote(n);
        assert!(b.drained());
    }

    #[test]
    fn pending_and_dirty_lists_take_a_connection_once() {
        let mut b = ConnBuf::new(1024, MARKS);
        assert!(b.mark_pending());
        assert!(!b.mark_pending());
        b.unmark_pending();
        assert!(b.mark_pending());
        assert!(b.mark_dirty());
        assert!(!b.mark_dirty());
        b.unmark_dirty();
        assert!(b.mark_dirty());
    }

    #[test]
    fn large_buffers_are_released_once_empty() {
        let mut b = ConnBuf::new(1 << 20, MARKS);
        b.outbuf.reserve(100_000);
        b.queue_bytes(b"xy");
        b.wrote(1);
        assert!(b.outbuf.capacity() > 90_000, "kept while not empty");
        b.wrote(1);
        assert_eq!(b.outbuf.capacity(), 0);
        b.inbuf.reserve(100_000);
        b.wrote(0);
        assert_eq!(b.inbuf.capacity(), 0);
        b.push_input(b"z");
        b.inbuf.clear();
        b.release_idle_input();
        assert_eq!(b.inbuf.capacity(), 0);
    }
}
