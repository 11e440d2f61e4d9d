//! The byte layout of the log and snapshot files (described in the parent
//! module): file headers, record framing, and the body of each [`Change`].

use super::{invalid, Change, Record};
use bytes::Bytes;
use std::io;
use std::path::Path;

/// Magic at the start of a log file.
pub const LOG_MAGIC: [u8; 8] = *b"GTSTLOG\0";

/// Magic at the start of a snapshot file.
pub const SNAP_MAGIC: [u8; 8] = *b"GTSTSNP\0";

/// Format version written in every file header.
pub const FORMAT_VERSION: u32 = 3;

/// Oldest format version read (files with writes only); older or newer is refused.
pub const MIN_FORMAT_VERSION: u32 = 1;

/// Record kind: a tombstone.
pub(super) const KIND_TOMBSTONE: u8 = 0;

/// Record kind: a value.
pub(super) const KIND_VALUE: u8 = 1;

/// Record kind: a collected tombstone (format 2).
pub(super) const KIND_PURGE: u8 = 2;

/// Record kind: an undone write (format 2).
pub(super) const KIND_RESTORE: u8 = 3;

/// Record kind: a key's Paxos acceptor state, its promise and accepted
/// proposal (format 3).
pub(super) const KIND_BALLOT: u8 = 4;

/// Bytes of a restore's previous entry, or a ballot's accepted proposal,
/// besides its value (version and kind).
pub(super) const PREV_FIXED: usize = 9;

/// Bytes in a file header.
pub const HEADER_LEN: u64 = 24;

/// Bytes of a record's frame before its body (length and checksum).
pub const FRAME_LEN: u64 = 8;

/// Bytes of a body besides the key and value (version, key length, kind, value length).
pub const BODY_FIXED: u64 = 17;

/// Largest body a record may have; a longer length field is corruption.
pub const MAX_BODY: u32 = 1 << 30;

/// Length field that marks a snapshot's footer.
pub(super) const FOOTER_MARK: u32 = u32::MAX;

/// Bytes in a snapshot's footer.
pub(super) const FOOTER_LEN: u64 = 16;

pub(super) fn header(magic: [u8; 8], generation: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(&magic);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a header read from `path` and returns its format version; the error says
/// what is wrong.
pub(super) fn check_header(
    h: &[u8],
    magic: [u8; 8],
    generation: u64,
    path: &Path,
) -> io::Result<u32> {
    let what = if h.len() < HEADER_LEN as usize {
        Some(format!("file shorter than its {HEADER_LEN}-byte header"))
    } else if h[0..8] != magic {
        Some("wrong magic (not a gtstore file of this kind)".to_string())
    } else if u32::from_le_bytes(h[20..24].try_into().expect("4 bytes"))
        != crc32fast::hash(&h[0..20])
    {
        Some("header checksum mismatch".to_string())
    } else if !(MIN_FORMAT_VERSION..=FORMAT_VERSION)
        .contains(&u32::from_le_bytes(h[8..12].try_into().expect("4 bytes")))
    {
        Some(format!(
            "format version {} (this build reads {MIN_FORMAT_VERSION} to {FORMAT_VERSION})",
            u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"))
        ))
    } else if u64::from_le_bytes(h[12..20].try_into().expect("8 bytes")) != generation {
        Some(format!(
            "header says generation {}, name says {generation}",
            u64::from_le_bytes(h[12..20].try_into().expect("8 bytes"))
        ))
    } else {
        None
    };
    match what {
        None => Ok(u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"))),
        Some(what) => Err(invalid(format!("{}: bad header: {what}", path.display()))),
    }
}

/// Appends one framed write record to `out`; on error `out` is unchanged.
pub(super) fn encode(rec: &Record, out: &mut Vec<u8>) -> io::Result<()> {
    let kind = if rec.value.is_some() {
        KIND_VALUE
    } else {
        KIND_TOMBSTONE
    };
    let value = rec.value.as_deref().unwrap_or_default();
    encode_body(out, rec.version, &rec.key, kind, &[value])
}

/// Appends one framed record of any kind to `out`; on error `out` is unchanged.
pub(super) fn encode_change(change: &Change, out: &mut Vec<u8>) -> io::Result<()> {
    match change {
        Change::Put(rec) => encode(rec, out),
        Change::Purge { key, version } => encode_body(out, *version, key, KIND_PURGE, &[]),
        Change::Restore { key, version, prev } => {
            encode_with_entry(out, (*version, key, KIND_RESTORE), prev.as_ref())
        }
        Change::Ballot {
            key,
            promised,
            accepted,
        } => encode_with_entry(out, (*promised, key, KIND_BALLOT), accepted.as_ref()),
    }
}

/// Appends a record whose value field is an optional entry (a version, a
/// kind, a value): a restore's previous entry, a ballot's accepted proposal.
fn encode_with_entry(
    out: &mut Vec<u8>,
    (version, key, kind): (u64, &[u8], u8),
    entry: Option<&(u64, Option<Bytes>)>,
) -> io::Result<()> {
    match entry {
        None => encode_body(out, version, key, kind, &[]),
        Some((ev, value)) => {
            let entry_kind = [if value.is_some() {
                KIND_VALUE
            } else {
                KIND_TOMBSTONE
            }];
            let parts = [
                &ev.to_le_bytes()[..],
                &entry_kind,
                value.as_deref().unwrap_or_default(),
            ];
            encode_body(out, version, key, kind, &parts)
        }
    }
}

/// Appends one framed record to `out`: the body's value field is `value`'s parts,
/// concatenated. On error `out` is unchanged.
pub(super) fn encode_body(
    out: &mut Vec<u8>,
    version: u64,
    key: &[u8],
    kind: u8,
    value: &[&[u8]],
) -> io::Result<()> {
    let value_len: usize = value.iter().map(|p| p.len()).sum();
    let body = BODY_FIXED + key.len() as u64 + value_len as u64;
    if body > u64::from(MAX_BODY) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("record of {body} bytes is above the log's maximum of {MAX_BODY}"),
        ));
    }
    let start = out.len();
    out.reserve(FRAME_LEN as usize + body as usize);
    out.extend_from_slice(&(body as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.push(kind);
    out.extend_from_slice(&(value_len as u32).to_le_bytes());
    for part in value {
        out.extend_from_slice(part);
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[start..start + 4]);
    crc.update(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.finalize().to_le_bytes());
    Ok(())
}

/// Parses a body whose checksum passed; the error says which field is inconsistent.
pub(super) fn decode_body(body: &[u8]) -> Result<Change, String> {
    let fixed = BODY_FIXED as usize;
    if body.len() < fixed {
        return Err(format!("body of {} bytes is too short", body.len()));
    }
    let version = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
    let key_len = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
    if key_len > body.len() - fixed {
        return Err(format!("key length {key_len} runs past the body"));
    }
    let key = &body[12..12 + key_len];
    let kind = body[12 + key_len];
    let value_len = u32::from_le_bytes(
        body[13 + key_len..17 + key_len]
            .try_into()
            .expect("4 bytes"),
    ) as usize;
    if fixed + key_len + value_len != body.len() {
        return Err(format!(
            "key length {key_len} and value length {value_len} do not add up to the body's {}",
            body.len()
        ));
    }
    let key = Bytes::copy_from_slice(key);
    let field = &body[fixed + key_len..];
    let value = match kind {
        KIND_TOMBSTONE if value_len == 0 => None,
        KIND_TOMBSTONE => return Err(format!("tombstone with a value length of {value_len}")),
        KIND_VALUE => Some(Bytes::copy_from_slice(field)),
        KIND_PURGE if value_len == 0 => return Ok(Change::Purge { key, version }),
        KIND_PURGE => return Err(format!("purge with a value length of {value_len}")),
        KIND_RESTORE => {
            let prev = decode_entry(field, "restore")?;
            return Ok(Change::Restore { key, version, prev });
        }
        KIND_BALLOT => {
            let accepted = decode_entry(field, "ballot")?;
            return Ok(Change::Ballot {
                key,
                promised: version,
                accepted,
            });
        }
        k => return Err(format!("unknown record kind {k}")),
    };
    Ok(Change::Put(Record {
        key,
        value,
        version,
    }))
}

/// Parses the optional entry in a restore's or a ballot's value field (`what`
/// names the record kind in the error).
fn decode_entry(field: &[u8], what: &str) -> Result<Option<(u64, Option<Bytes>)>, String> {
    let n = field.len();
    if n == 0 {
        return Ok(None);
    }
    if n < PREV_FIXED {
        return Err(format!("{what} with an entry of {n} bytes"));
    }
    let version = u64::from_le_bytes(field[0..8].try_into().expect("8 bytes"));
    let value = match field[8] {
        KIND_TOMBSTONE if n == PREV_FIXED => None,
        KIND_VALUE => Some(Bytes::copy_from_slice(&field[PREV_FIXED..])),
        k => return Err(format!("{what} with an entry of kind {k} and {n} bytes")),
    };
    Ok(Some((version, value)))
}
