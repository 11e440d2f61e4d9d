//! The entry codec: how entries travel between nodes (handoff, hints and resync
//! `MIGRATE` chunks, `REPLICATE`, and `REPL_READ` answers).
//!
//! A chunk is a run of entries `KLEN(u32 BE) KEY VERSION(u64 BE) FLAG(u8)
//! [VLEN(u32 BE) VALUE]`: FLAG 1 carries a value, FLAG 0 is a tombstone.

use super::engine::Entry;
use bytes::{BufMut, BytesMut};

/// Appends one entry in chunk format.
pub fn put_entry(buf: &mut BytesMut, k: &[u8], e: &Entry) {
    put_entry_parts(buf, k, e.version, e.value.as_deref());
}

/// Appends one entry in chunk format from its parts (`value` `None`: tombstone).
pub fn put_entry_parts(buf: &mut BytesMut, k: &[u8], version: u64, value: Option<&[u8]>) {
    buf.reserve(4 + k.len() + 8 + 1 + value.map_or(0, |v| 4 + v.len()));
    buf.put_u32(k.len() as u32);
    buf.put_slice(k);
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

/// One parsed chunk entry: key, version, value (`None`: tombstone).
pub type ChunkEntry<'a> = (&'a [u8], u64, Option<&'a [u8]>);

/// Parses a chunk; `None` if malformed.
pub fn parse_chunk(mut p: &[u8]) -> Option<Vec<ChunkEntry<'_>>> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let field = p.get(..n)?;
        *p = &p[n..];
        Some(field)
    }
    fn len(p: &mut &[u8]) -> Option<usize> {
        Some(u32::from_be_bytes(take(p, 4)?.try_into().ok()?) as usize)
    }
    let mut out = Vec::new();
    while !p.is_empty() {
        let n = len(&mut p)?;
        let k = take(&mut p, n)?;
        let version = u64::from_be_bytes(take(&mut p, 8)?.try_into().ok()?);
        let value = match take(&mut p, 1)?[0] {
            0 => None,
            1 => {
                let n = len(&mut p)?;
                Some(take(&mut p, n)?)
            }
            _ => return None,
        };
        out.push((k, version, value));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn entries_round_trip_with_versions_and_tombstones() {
        let mut buf = BytesMut::new();
        let live = Entry {
            version: 7,
            value: Some(Bytes::from_static(b"val")),
        };
        let gone = Entry {
            version: u64::MAX,
            value: None,
        };
        put_entry(&mut buf, b"a", &live);
        put_entry(&mut buf, b"bb", &gone);
        let parsed = parse_chunk(&buf).unwrap();
        assert_eq!(
            parsed,
            vec![
                (&b"a"[..], 7, Some(&b"val"[..])),
                (&b"bb"[..], u64::MAX, None)
            ]
        );
        // Every strict prefix but the one ending between entries is malformed.
        let first = 4 + 1 + 8 + 1 + 4 + 3;
        for cut in 1..buf.len() {
            assert_eq!(
                parse_chunk(&buf[..cut]).is_some(),
                cut == first,
                "cut {cut}"
            );
        }
        let mut bad = buf.to_vec();
        bad[4 + 1 + 8] = 2;
        assert!(parse_chunk(&bad).is_none());
    }
}
