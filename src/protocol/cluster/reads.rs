//! The payloads of a batch of replica reads: `REPL_READS` (the keys a lead
//! asks one replica for in one loop turn) and its answer `COPIES` (one
//! `REPL_READ` answer per key, in order). Binary, big endian. Decoding checks
//! every length against the payload before it reads, so what it allocates is
//! bounded by the payload's size, and it never panics; keys and answers stay
//! views of the frame's payload.

use super::{be_u64, malformed, put_record, record_len, Fence, Message, Reply, FENCE_LEN};
use crate::protocol::error::Error;
use crate::protocol::frame::Frame;
use crate::protocol::kv::check_key;
use crate::protocol::op;
use bytes::{BufMut, Bytes, BytesMut};

/// `FENCE KEY`: a lone `REPL_READ`.
pub(super) fn read_payload(fence: Fence, key: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(FENCE_LEN + key.len());
    fence.put(&mut buf);
    buf.put_slice(key);
    buf.freeze()
}

/// `EPOCH(u64 BE) COUNT(u32 BE)` then `MARK(u64 BE) KLEN(u32 BE) KEY` for
/// each key.
pub(super) fn keys_payload<'a>(
    epoch: u64,
    keys: impl ExactSizeIterator<Item = (u64, &'a [u8])> + Clone,
) -> Bytes {
    let len = 12 + keys.clone().map(|(_, k)| 12 + k.len()).sum::<usize>();
    let mut buf = BytesMut::with_capacity(len);
    buf.put_u64(epoch);
    buf.put_u32(keys.len() as u32);
    for (mark, k) in keys {
        buf.put_u64(mark);
        buf.put_u32(k.len() as u32);
        buf.put_slice(k);
    }
    buf.freeze()
}

/// The frame of a [`Message::ReplReads`] of `keys` (with their marks) by a
/// ring of `epoch`, written from borrowed keys (the same bytes as the
/// message's `encode`).
pub fn repl_reads<'a>(
    epoch: u64,
    keys: impl ExactSizeIterator<Item = (u64, &'a [u8])> + Clone,
) -> Frame {
    Frame::new(op::REPL_READS, 0, 0, keys_payload(epoch, keys))
}

/// Reads a big-endian `u32` at `*at` and moves past it.
fn take_u32(p: &[u8], at: &mut usize, what: &str) -> Result<usize, Error> {
    let b = p
        .get(*at..*at + 4)
        .ok_or_else(|| malformed(what, "cut short"))?;
    *at += 4;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Reads a big-endian `u64` at `*at` and moves past it.
fn take_u64(p: &[u8], at: &mut usize, what: &str) -> Result<u64, Error> {
    let b = p
        .get(*at..*at + 8)
        .ok_or_else(|| malformed(what, "cut short"))?;
    *at += 8;
    Ok(be_u64(b))
}

/// Cuts `len` bytes at `*at` out of `p` and moves past them.
fn take_bytes(p: &Bytes, at: &mut usize, len: usize, what: &str) -> Result<Bytes, Error> {
    let end = at
        .checked_add(len)
        .filter(|&e| e <= p.len())
        .ok_or_else(|| malformed(what, "cut short"))?;
    let b = p.slice(*at..end);
    *at = end;
    Ok(b)
}

/// Checks that the payload ends where its last item did.
fn finished(p: &[u8], at: usize, what: &str) -> Result<(), Error> {
    if at == p.len() {
        Ok(())
    } else {
        Err(malformed(what, "bytes after its last item"))
    }
}

pub(super) fn decode_keys(p: &Bytes) -> Result<Message, Error> {
    const WHAT: &str = "REPL_READS";
    let mut at = 0;
    let epoch = take_u64(p, &mut at, WHAT)?;
    let count = take_u32(p, &mut at, WHAT)?;
    // Each key takes at least 13 bytes: a larger count is cut short anyway.
    let mut keys = Vec::with_capacity(count.min(p.len() / 13));
    for _ in 0..count {
        let mark = take_u64(p, &mut at, WHAT)?;
        let len = take_u32(p, &mut at, WHAT)?;
        let key = take_bytes(p, &mut at, len, WHAT)?;
        check_key(&key)?;
        keys.push((mark, key));
    }
    finished(p, at, WHAT)?;
    Ok(Message::ReplReads { epoch, keys })
}

/// `COUNT(u32 BE)` then `OP(u8) LEN(u32 BE) PAYLOAD` for each answer.
pub(super) fn copies_payload(answers: &[Frame]) -> Bytes {
    let len = 4 + answers.iter().map(|f| 5 + f.payload.len()).sum::<usize>();
    let mut buf = BytesMut::with_capacity(len);
    buf.put_u32(answers.len() as u32);
    for f in answers {
        buf.put_u8(f.op);
        buf.put_u32(f.payload.len() as u32);
        buf.put_slice(&f.payload);
    }
    buf.freeze()
}

/// Bytes of answers past which a `COPIES` carries no more values: each
/// further entry is answered `REPL_READ` (empty), "ask for it alone", so a
/// batch of large values never becomes one huge frame (each comes back in
/// its own `VALUE`, as a lone `REPL_READ`'s would).
pub const COPIES_BUDGET: usize = 256 << 10;

/// Bytes of keys a `REPL_READS` carries at most (past its first key): a lead
/// with more asks for one replica in a turn sends several.
pub const REPL_READS_BUDGET: usize = 256 << 10;

/// Writes a `COPIES` reply answer by answer, straight into its payload (no
/// frame per answer): what [`Reply::Copies`] encodes, for a replica
/// answering many keys.
pub struct CopiesWriter {
    buf: BytesMut,
}

impl CopiesWriter {
    /// A reply of `count` answers (exactly that many must follow).
    pub fn new(count: usize) -> CopiesWriter {
        let mut buf = BytesMut::with_capacity(4 + count * 32);
        buf.put_u32(count as u32);
        CopiesWriter { buf }
    }

    /// Adds an answer of op `code` with `payload`.
    pub fn answer(&mut self, code: u8, payload: &[u8]) {
        self.buf.put_u8(code);
        self.buf.put_u32(payload.len() as u32);
        self.buf.put_slice(payload);
    }

    /// Adds a `VALUE` answer: the entry of `key` at `version` (no value: a
    /// tombstone); or, if it would take the reply past [`COPIES_BUDGET`], an
    /// empty `REPL_READ`: ask for this key alone.
    pub fn found(&mut self, key: &[u8], version: u64, value: Option<&[u8]>) {
        let len = record_len(key.len(), value.map(<[u8]>::len));
        if self.buf.len() + 5 + len > COPIES_BUDGET {
            return self.answer(op::REPL_READ, &[]);
        }
        self.buf.put_u8(op::VALUE);
        self.buf.put_u32(len as u32);
        put_record(&mut self.buf, key, version, value);
    }

    /// The `COPIES` frame (`CLIENTID` and `NODEID` 0).
    pub fn finish(self) -> Frame {
        Frame::new(op::COPIES, 0, 0, self.buf.freeze())
    }
}

pub(super) fn decode_copies(p: &Bytes) -> Result<Reply, Error> {
    const WHAT: &str = "COPIES";
    let mut at = 0;
    let count = take_u32(p, &mut at, WHAT)?;
    let mut answers = Vec::with_capacity(count.min(p.len() / 5));
    for _ in 0..count {
        let code = *p.get(at).ok_or_else(|| malformed(WHAT, "cut short"))?;
        at += 1;
        if matches!(code, op::COPIES) {
            return Err(malformed(WHAT, "an answer may not be a COPIES"));
        }
        let len = take_u32(p, &mut at, WHAT)?;
        let payload = take_bytes(p, &mut at, len, WHAT)?;
        answers.push(Frame::new(code, 0, 0, payload));
    }
    finished(p, at, WHAT)?;
    Ok(Reply::Copies(answers))
}
