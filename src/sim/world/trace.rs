//! The world's trace: one line per delivered input and sent frame, kept in a
//! bounded ring for failing seeds to print, and the fingerprint of every input.

use super::{ProcId, World};
use crate::protocol;
use crate::reactor::{ConnId, Input};
use crate::sim::rng::hash;
use bytes::Bytes;
use std::collections::VecDeque;

/// Lines of trace kept by default when tracing is on.
pub(super) const TRACE_LINES: usize = 400;

/// A payload for the trace: a ring as `epoch E: id=state ...`, anything else
/// as escaped bytes.
pub(super) fn brief_payload(op: u8, payload: &[u8]) -> String {
    if !matches!(op, protocol::op::RING_UPDATE | protocol::op::JOINED) {
        return format!("{:?}", Bytes::copy_from_slice(payload));
    }
    let text = String::from_utf8_lossy(payload);
    let mut out = String::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["epoch", e] => out.push_str(&format!("epoch {e}:")),
            ["node", id, _addr, state, ..] => out.push_str(&format!(" {id}={state}")),
            [id] if out.is_empty() => out.push_str(&format!("id {id} ")),
            _ => {}
        }
    }
    out
}

impl World {
    /// Keeps the last few hundred delivered inputs for [`World::trace`].
    pub fn enable_trace(&mut self) {
        self.enable_trace_lines(TRACE_LINES);
    }

    /// Keeps the last `lines` delivered inputs for [`World::trace`].
    pub fn enable_trace_lines(&mut self, lines: usize) {
        self.trace_lines = lines.max(1);
        self.trace = Some(VecDeque::new());
    }

    /// The last delivered inputs, one line each (empty unless enabled).
    pub fn trace(&self) -> Vec<String> {
        self.trace
            .as_ref()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Folds an input into the fingerprint (and the trace, if on).
    pub(super) fn note(&mut self, p: ProcId, input: &Input) {
        let idx = |c: &ConnId| -> u64 {
            let s = c.to_string();
            s.bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
        };
        let (kind, a, b) = match input {
            Input::Accepted { conn, .. } => (1, idx(conn), 0),
            Input::Connected { conn, tag } => (2, idx(conn), *tag),
            Input::ConnectFailed { tag } => (3, *tag, 0),
            Input::Frame { conn, frame } => (
                4,
                idx(conn),
                (frame.op as u64) << 56 ^ frame.client_id << 24 ^ frame.payload.len() as u64,
            ),
            Input::FrameError { conn, .. } => (5, idx(conn), 0),
            Input::Data { conn, data } => (6, idx(conn), data.len() as u64),
            Input::Eof { conn } => (7, idx(conn), 0),
            Input::Closed { conn } => (8, idx(conn), 0),
            Input::Timer { id } => (9, *id, 0),
            Input::Signal(s) => (10, *s as u64, 0),
            Input::Drained { conn } => (11, idx(conn), 0),
        };
        self.fingerprint = hash(self.fingerprint, &[self.now, p as u64, kind, a, b]);
        if let Some(t) = self.trace.as_mut() {
            let mut line = format!("{:>7} {:<8} {:?}", self.now, self.procs[p].name, input);
            line.truncate(200);
            if t.len() >= self.trace_lines {
                t.pop_front();
            }
            t.push_back(line);
        }
    }

    /// Adds `## text` to the trace (if on), for the driver's own notes.
    pub fn trace_note(&mut self, text: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            if t.len() >= self.trace_lines {
                t.pop_front();
            }
            t.push_back(format!("{:>7} ## {}", self.now, text()));
        }
    }

    /// Adds a line to the trace (if on): a fault, or a frame a process sent.
    pub(super) fn trace_line(&mut self, line: impl FnOnce(&World) -> String) {
        if self.trace.is_none() {
            return;
        }
        let mut line = line(self);
        line.truncate(200);
        let t = self.trace.as_mut().expect("checked");
        if t.len() >= self.trace_lines {
            t.pop_front();
        }
        t.push_back(line);
    }

    /// The name of the process at the other end of `p`'s connection `conn`.
    pub(super) fn peer_name(&self, p: ProcId, conn: ConnId) -> &str {
        match self.lookup(p, conn) {
            Some((c, e)) => &self.procs[self.conns[&c].ends[1 - e].proc].name,
            None => "?",
        }
    }
}
