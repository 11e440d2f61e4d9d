//! Records: one versioned entry of a key, the unit replicas exchange
//! (`KLEN(u32 BE) KEY VERSION(u64 BE) FLAG(u8) [VLEN(u32 BE) VALUE]`, FLAG 1 with
//! a value, 0 for a tombstone), written by [`put_record`] and read by
//! [`parse_records`]; a handoff chunk is a run of them.

use super::super::error::Error;
use super::super::kv::check_key;
use super::{be_u64, malformed};
use bytes::{BufMut, Bytes, BytesMut};

/// One versioned entry of a key: what moves between replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The key.
    pub key: Bytes,
    /// Orders writes to the key: higher wins.
    pub version: u64,
    /// The value, or `None` for a tombstone.
    pub value: Option<Bytes>,
}

/// Bytes [`put_record`] writes for a key of `key` bytes and a value of `value`
/// bytes (`None`: a tombstone).
pub fn record_len(key: usize, value: Option<usize>) -> usize {
    4 + key + 8 + 1 + value.map_or(0, |v| 4 + v)
}

/// Appends one record.
pub fn put_record(buf: &mut BytesMut, key: &[u8], version: u64, value: Option<&[u8]>) {
    buf.reserve(record_len(key.len(), value.map(<[u8]>::len)));
    buf.put_u32(key.len() as u32);
    buf.put_slice(key);
    buf.put_u64(version);
    match value {
        Some(v) => {
            buf.put_u8(1);
            buf.put_u32(v.len() as u32);
            buf.put_slice(v);
        }
        None => buf.put_u8(0),
    }
}

/// Parses a run of records (a `MIGRATE` chunk); keys and values are views of
/// `payload`. An empty payload is an empty run.
pub fn parse_records(payload: &Bytes) -> Result<Vec<Record>, Error> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < payload.len() {
        out.push(parse_record(payload, &mut at)?);
    }
    Ok(out)
}

/// Parses the one record that fills `payload` from `at` to its end.
pub(super) fn parse_one_record(
    payload: &Bytes,
    mut at: usize,
    what: &str,
) -> Result<Record, Error> {
    let record = parse_record(payload, &mut at)?;
    if at != payload.len() {
        return Err(malformed(what, "bytes after its entry"));
    }
    Ok(record)
}

pub(super) fn parse_record(payload: &Bytes, at: &mut usize) -> Result<Record, Error> {
    fn take(payload: &Bytes, at: &mut usize, n: usize) -> Result<std::ops::Range<usize>, Error> {
        let end = at
            .checked_add(n)
            .filter(|&e| e <= payload.len())
            .ok_or_else(|| malformed("entry", "cut short"))?;
        let range = *at..end;
        *at = end;
        Ok(range)
    }
    fn u32_at(payload: &Bytes, at: &mut usize) -> Result<usize, Error> {
        let r = take(payload, at, 4)?;
        let mut b = [0u8; 4];
        b.copy_from_slice(&payload[r]);
        Ok(u32::from_be_bytes(b) as usize)
    }
    let klen = u32_at(payload, at)?;
    let key = payload.slice(take(payload, at, klen)?);
    let version = be_u64(&payload[take(payload, at, 8)?]);
    let flag = payload[take(payload, at, 1)?][0];
    let value = match flag {
        0 => None,
        1 => {
            let vlen = u32_at(payload, at)?;
            Some(payload.slice(take(payload, at, vlen)?))
        }
        f => return Err(malformed("entry", &format!("flag {f} is neither 0 nor 1"))),
    };
    check_key(&key)?;
    Ok(Record {
        key,
        version,
        value,
    })
}
