//! The payloads of anti-entropy's messages (`AE_DIGEST`, `AE_KEYS`) and
//! replies (`AE_LEAVES`, `AE_DIFF`). All binary, big endian. Decoding checks
//! every length against the payload before it reads, so what it allocates is
//! bounded by the payload's size, and it never panics.

use super::{be_u64, malformed, parse_record, put_record, Message, Record, Reply, Stub};
use crate::protocol::error::Error;
use crate::protocol::frame::Frame;
use crate::protocol::kv::check_key;
use bytes::{BufMut, Bytes, BytesMut};

/// Most leaves an `AE_LEAVES` may carry (and leaves an `AE_KEYS` may name).
pub const MAX_LEAVES: usize = 4096;

/// Bytes a [`Stub`] takes on the wire.
pub fn stub_len(key: usize) -> usize {
    4 + key + 8 + 1
}

pub(super) fn digest_payload(end: u64, epoch: u64, root: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(24);
    buf.put_u64(end);
    buf.put_u64(epoch);
    buf.put_u64(root);
    buf.freeze()
}

pub(super) fn decode_digest(p: &Bytes) -> Result<Message, Error> {
    if p.len() != 24 {
        return Err(malformed("AE_DIGEST", "expected END EPOCH ROOT (24 bytes)"));
    }
    Ok(Message::AeDigest {
        end: be_u64(&p[..8]),
        epoch: be_u64(&p[8..16]),
        root: be_u64(&p[16..]),
    })
}

/// Appends one stub.
pub fn put_stub(buf: &mut BytesMut, key: &[u8], version: u64, live: bool) {
    buf.reserve(stub_len(key.len()));
    buf.put_u32(key.len() as u32);
    buf.put_slice(key);
    buf.put_u64(version);
    buf.put_u8(live as u8);
}

pub(super) fn keys_payload(end: u64, leaves: &[u16], stubs: &[Stub]) -> Bytes {
    let mut buf = BytesMut::new();
    for s in stubs {
        put_stub(&mut buf, &s.key, s.version, s.live);
    }
    keys_frame(end, leaves, &buf).payload
}

/// The `AE_KEYS` frame of `leaves` (at most [`MAX_LEAVES`]) and `stubs`, a run
/// written by [`put_stub`]: the same bytes as [`Message::AeKeys`] encodes,
/// without a [`Stub`] per entry.
pub fn keys_frame(end: u64, leaves: &[u16], stubs: &[u8]) -> Frame {
    let mut buf = BytesMut::with_capacity(10 + 2 * leaves.len() + stubs.len());
    buf.put_u64(end);
    buf.put_u16(leaves.len() as u16);
    for &l in leaves {
        buf.put_u16(l);
    }
    buf.put_slice(stubs);
    Frame::new(crate::protocol::op::AE_KEYS, 0, 0, buf.freeze())
}

/// `n` bytes of `p` from `at`, or an error naming `what`.
fn take<'a>(p: &'a Bytes, at: &mut usize, n: usize, what: &str) -> Result<&'a [u8], Error> {
    let end = (at.checked_add(n))
        .filter(|&e| e <= p.len())
        .ok_or_else(|| malformed(what, "cut short"))?;
    let out = &p[*at..end];
    *at = end;
    Ok(out)
}

fn u32_at(p: &Bytes, at: &mut usize, what: &str) -> Result<usize, Error> {
    let b = take(p, at, 4, what)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// A key (`KLEN(u32 BE) KEY`) at `at`, checked.
fn key_at(p: &Bytes, at: &mut usize, what: &str) -> Result<Bytes, Error> {
    let len = u32_at(p, at, what)?;
    take(p, at, len, what)?;
    let key = p.slice(*at - len..*at);
    check_key(&key)?;
    Ok(key)
}

pub(super) fn decode_keys(p: &Bytes) -> Result<Message, Error> {
    let what = "AE_KEYS";
    let mut at = 0;
    let end = be_u64(take(p, &mut at, 8, what)?);
    let count = take(p, &mut at, 2, what)?;
    let count = u16::from_be_bytes([count[0], count[1]]) as usize;
    if count > MAX_LEAVES {
        return Err(malformed(what, "too many leaves"));
    }
    let raw = take(p, &mut at, 2 * count, what)?;
    let leaves = raw
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let mut stubs = Vec::new();
    while at < p.len() {
        let key = key_at(p, &mut at, what)?;
        let version = be_u64(take(p, &mut at, 8, what)?);
        let live = match take(p, &mut at, 1, what)?[0] {
            0 => false,
            1 => true,
            _ => return Err(malformed(what, "LIVE is neither 0 nor 1")),
        };
        stubs.push(Stub { key, version, live });
    }
    Ok(Message::AeKeys { end, leaves, stubs })
}

pub(super) fn leaves_payload(leaves: &[u64]) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 * leaves.len());
    for &l in leaves {
        buf.put_u64(l);
    }
    buf.freeze()
}

pub(super) fn decode_leaves(p: &Bytes) -> Result<Vec<u64>, Error> {
    if !p.len().is_multiple_of(8) || p.len() / 8 > MAX_LEAVES {
        return Err(malformed("AE_LEAVES", "expected at most 4096 u64 leaves"));
    }
    Ok(p.chunks_exact(8).map(be_u64).collect())
}

pub(super) fn diff_payload(records: &[Record], wants: &[Bytes]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u32(records.len() as u32);
    for r in records {
        put_record(&mut buf, &r.key, r.version, r.value.as_deref());
    }
    for k in wants {
        buf.put_u32(k.len() as u32);
        buf.put_slice(k);
    }
    buf.freeze()
}

pub(super) fn decode_diff(p: &Bytes) -> Result<Reply, Error> {
    let what = "AE_DIFF";
    let mut at = 0;
    let count = u32_at(p, &mut at, what)?;
    // Never more records than bytes: the count cannot make us loop for nothing.
    if count > p.len() {
        return Err(malformed(what, "COUNT exceeds the payload"));
    }
    let mut records = Vec::new();
    for _ in 0..count {
        if at >= p.len() {
            return Err(malformed(what, "fewer records than COUNT"));
        }
        records.push(parse_record(p, &mut at)?);
    }
    let mut wants = Vec::new();
    while at < p.len() {
        wants.push(key_at(p, &mut at, what)?);
    }
    Ok(Reply::Diff { records, wants })
}
