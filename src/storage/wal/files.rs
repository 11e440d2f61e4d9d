//! The data directory: file names by generation, finding the current generation,
//! creating files with the rename protocol, writing a snapshot, and directory
//! syncs.

use super::format::*;
use super::Change;
use crate::storage::disk::{Disk, DiskFile};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

pub(super) fn snap_name(generation: u64) -> String {
    format!("snap-{generation:06}")
}

pub(super) fn log_name(generation: u64) -> String {
    format!("log-{generation:06}")
}

/// The files of a data directory, by kind.
#[derive(Default)]
pub(super) struct Found {
    pub(super) snaps: Vec<u64>,
    pub(super) logs: Vec<u64>,
    pub(super) tmps: Vec<PathBuf>,
}

pub(super) fn parse_generation(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub(super) fn scan(disk: &dyn Disk, dir: &Path) -> io::Result<Found> {
    let mut found = Found::default();
    for name in disk.list(dir)? {
        let (stem, tmp) = match name.strip_suffix(".tmp") {
            Some(stem) => (stem, true),
            None => (name.as_str(), false),
        };
        let (is_snap, number) = if let Some(n) = stem.strip_prefix("snap-") {
            (true, n)
        } else if let Some(n) = stem.strip_prefix("log-") {
            (false, n)
        } else {
            continue;
        };
        let Some(generation) = parse_generation(number) else {
            continue;
        };
        if tmp {
            found.tmps.push(dir.join(&name));
        } else if is_snap {
            found.snaps.push(generation);
        } else {
            found.logs.push(generation);
        }
    }
    Ok(found)
}

pub(super) fn remove_if_present(disk: &dyn Disk, path: &Path) -> io::Result<()> {
    match disk.remove(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Creates `log-N` durably: a temp file with the header, fsync, rename, fsync the
/// directory. The returned handle is positioned after the header.
pub(super) fn create_log(
    disk: &dyn Disk,
    dir: &Path,
    generation: u64,
) -> io::Result<Box<dyn DiskFile>> {
    let path = dir.join(log_name(generation));
    let tmp = dir.join(format!("{}.tmp", log_name(generation)));
    let mut file = disk.create(&tmp)?;
    file.write_all(&header(LOG_MAGIC, generation))?;
    file.sync_all()?;
    disk.rename(&tmp, &path)?;
    disk.sync_dir(dir)?;
    Ok(file)
}

/// Writes a complete snapshot to `path` and fsyncs it; returns its size.
pub(super) fn write_snapshot(
    disk: &dyn Disk,
    path: &Path,
    generation: u64,
    live: impl Iterator<Item = impl Into<Change>>,
) -> io::Result<u64> {
    let file = disk.create(path)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&header(SNAP_MAGIC, generation))?;
    let mut bytes = HEADER_LEN;
    let mut count = 0u64;
    let mut buf = Vec::new();
    for rec in live {
        buf.clear();
        encode_change(&rec.into(), &mut buf)?;
        w.write_all(&buf)?;
        bytes += buf.len() as u64;
        count += 1;
    }
    let mark = FOOTER_MARK.to_le_bytes();
    let count = count.to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&mark);
    h.update(&count);
    w.write_all(&mark)?;
    w.write_all(&h.finalize().to_le_bytes())?;
    w.write_all(&count)?;
    bytes += FOOTER_LEN;
    let mut file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(bytes)
}
