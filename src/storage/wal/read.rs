//! Reading the files back: the record reader that stops at the first torn,
//! corrupt or inconsistent record, snapshot loading and log replay.

use super::format::*;
use super::{invalid, Change, BUF_KEEP};
use crate::storage::disk::{Disk, DiskFile};
use std::io::{self, BufReader, Read};
use std::path::Path;

/// What the next bytes of a file hold.
pub(super) enum Item {
    Record(Change),
    /// A snapshot footer with its record count.
    Footer(u64),
    /// A clean end of file.
    End,
    /// Not a valid record: why.
    Bad(String),
}

/// Reads framed records from a file of known length, never trusting a length field
/// beyond the bytes that remain.
pub(super) struct Reader<'a> {
    r: BufReader<&'a mut dyn DiskFile>,
    pos: u64,
    len: u64,
    body: Vec<u8>,
}

impl<'a> Reader<'a> {
    /// A reader over `file` (already past its header) at offset `pos` of `len`.
    fn new(file: &'a mut dyn DiskFile, pos: u64, len: u64) -> Reader<'a> {
        Reader {
            r: BufReader::with_capacity(256 << 10, file),
            pos,
            len,
            body: Vec::new(),
        }
    }

    /// The next item; `pos` moves past it only if it is a record or a footer.
    /// Errors are real I/O errors, not bad content.
    fn next(&mut self, footer_allowed: bool) -> io::Result<Item> {
        let remaining = self.len - self.pos;
        if remaining == 0 {
            return Ok(Item::End);
        }
        if remaining < FRAME_LEN {
            return Ok(Item::Bad(format!(
                "torn record: {remaining} bytes, shorter than a frame"
            )));
        }
        let mut frame = [0u8; FRAME_LEN as usize];
        self.r.read_exact(&mut frame)?;
        let len_field = u32::from_le_bytes(frame[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
        let after_frame = remaining - FRAME_LEN;
        if footer_allowed && len_field == FOOTER_MARK {
            if after_frame < FOOTER_LEN - FRAME_LEN {
                return Ok(Item::Bad("torn footer".to_string()));
            }
            let mut count = [0u8; 8];
            self.r.read_exact(&mut count)?;
            let mut h = crc32fast::Hasher::new();
            h.update(&frame[0..4]);
            h.update(&count);
            if h.finalize() != crc {
                return Ok(Item::Bad("footer checksum mismatch".to_string()));
            }
            self.pos += FOOTER_LEN;
            return Ok(Item::Footer(u64::from_le_bytes(count)));
        }
        if len_field > MAX_BODY {
            return Ok(Item::Bad(format!(
                "record length {len_field} is above the maximum {MAX_BODY}"
            )));
        }
        if u64::from(len_field) > after_frame {
            return Ok(Item::Bad(format!(
                "torn record: length {len_field} runs past the end of the file \
                 ({after_frame} bytes left)"
            )));
        }
        if u64::from(len_field) < BODY_FIXED {
            return Ok(Item::Bad(format!(
                "record length {len_field} is below the minimum {BODY_FIXED}"
            )));
        }
        // Bounded by the bytes left in the file, checked just above.
        self.body.resize(len_field as usize, 0);
        self.r.read_exact(&mut self.body)?;
        let mut h = crc32fast::Hasher::new();
        h.update(&frame[0..4]);
        h.update(&self.body);
        if h.finalize() != crc {
            return Ok(Item::Bad("checksum mismatch".to_string()));
        }
        match decode_body(&self.body) {
            Ok(rec) => {
                self.pos += FRAME_LEN + u64::from(len_field);
                if self.body.capacity() > BUF_KEEP {
                    self.body = Vec::new();
                }
                Ok(Item::Record(rec))
            }
            Err(why) => Ok(Item::Bad(why)),
        }
    }
}

/// Reads a whole snapshot into `out`; returns the file's size and format version.
/// Any flaw is an error.
pub(super) fn read_snapshot(
    disk: &dyn Disk,
    path: &Path,
    generation: u64,
    out: &mut Vec<Change>,
) -> io::Result<(u64, u32)> {
    let mut file = disk.open(path)?;
    let len = file.size()?;
    let corrupt = |what: String| {
        invalid(format!(
            "snapshot {} is corrupt ({what}); refusing to start from a partial state. \
             No file was changed; restore the data directory from a replica or a backup",
            path.display()
        ))
    };
    let mut h = [0u8; HEADER_LEN as usize];
    let got = read_up_to(file.as_mut(), &mut h)?;
    let format = check_header(&h[..got], SNAP_MAGIC, generation, path)
        .map_err(|e| corrupt(e.to_string()))?;
    let start = out.len();
    let mut reader = Reader::new(file.as_mut(), HEADER_LEN, len);
    loop {
        let at = reader.pos;
        match reader.next(true)? {
            Item::Record(rec @ (Change::Put(_) | Change::Ballot { .. })) => out.push(rec),
            Item::Record(_) => {
                return Err(corrupt(format!(
                    "a purge or restore record at offset {at}: a snapshot holds entries \
                     and ballots only"
                )))
            }
            Item::Footer(count) => {
                let read = (out.len() - start) as u64;
                if count != read {
                    return Err(corrupt(format!(
                        "footer counts {count} records, {read} were read"
                    )));
                }
                if reader.pos != len {
                    return Err(corrupt(format!(
                        "{} bytes after the footer",
                        len - reader.pos
                    )));
                }
                return Ok((len, format));
            }
            Item::End => return Err(corrupt("no footer: the file is truncated".to_string())),
            Item::Bad(why) => return Err(corrupt(format!("{why} at offset {at}"))),
        }
    }
}

/// What replaying a log found.
pub(super) struct Replay {
    /// The format version in the log's header.
    pub(super) format: u32,
    pub(super) file_len: u64,
    /// Offset just past the last good record.
    pub(super) good_len: u64,
    pub(super) cut_reason: Option<String>,
}

/// Replays a log into `out`, stopping at the first bad record.
pub(super) fn replay_log(
    file: &mut dyn DiskFile,
    path: &Path,
    generation: u64,
    out: &mut Vec<Change>,
) -> io::Result<Replay> {
    let len = file.size()?;
    let mut h = [0u8; HEADER_LEN as usize];
    let got = read_up_to(file, &mut h)?;
    let format = check_header(&h[..got], LOG_MAGIC, generation, path)?;
    let mut reader = Reader::new(file, HEADER_LEN, len);
    loop {
        let at = reader.pos;
        match reader.next(false)? {
            Item::Record(rec) => out.push(rec),
            Item::End => {
                return Ok(Replay {
                    format,
                    file_len: len,
                    good_len: len,
                    cut_reason: None,
                })
            }
            Item::Bad(why) => {
                return Ok(Replay {
                    format,
                    file_len: len,
                    good_len: at,
                    cut_reason: Some(format!("{}: {why} at offset {at}", path.display())),
                })
            }
            Item::Footer(_) => unreachable!("footers are only read in snapshots"),
        }
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
pub(super) fn read_up_to(file: &mut dyn DiskFile, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
