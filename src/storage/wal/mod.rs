//! The durability log: an append-only file of checksummed records, group commit,
//! snapshots that bound its size, and recovery on start.
//!
//! # Files
//!
//! A data directory holds one *generation* `G` at a time: an optional snapshot
//! `snap-G` (the state when the generation began) and the log `log-G` (every change
//! since). Generation 1 starts from the empty state and has no snapshot; every later
//! generation must have one. Names carry the generation in decimal, zero-padded to
//! six digits (`snap-000007`, `log-000007`); recovery parses the number, so wider
//! numbers work too. Files ending in `.tmp` are unfinished and are deleted on open;
//! files whose names do not match are left alone.
//!
//! # Byte layout (all integers little-endian)
//!
//! Both kinds of file start with a 24-byte header:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..8 | magic: `GTSTLOG\0` for a log, `GTSTSNP\0` for a snapshot |
//! | 8..12 | format version, u32: [`FORMAT_VERSION`] when written; [`MIN_FORMAT_VERSION`] and up are read |
//! | 12..20 | generation, u64 (must match the file name) |
//! | 20..24 | CRC-32 of bytes 0..20 |
//!
//! Then records, each framed as:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..4 | body length `L`, u32 (at most [`MAX_BODY`]) |
//! | 4..8 | CRC-32 (IEEE, `crc32fast`) of bytes 0..4 followed by the body |
//! | 8..8+L | body |
//!
//! and the body is:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..8 | version, u64 |
//! | 8..12 | key length `K`, u32 |
//! | 12..12+K | key |
//! | 12+K | kind: 0 = tombstone, 1 = value, 2 = purge, 3 = restore, 4 = ballot |
//! | 13+K..17+K | value length `V`, u32 |
//! | 17+K..17+K+V | value (kind 1), previous entry (kind 3), accepted proposal (kind 4), nothing (kinds 0, 2) |
//!
//! Each body is one [`Change`] to the node's data:
//!
//! - kinds 0 and 1, a *write* ([`Change::Put`]): the key's entry becomes a
//!   tombstone (0, `V = 0`) or the value (1) at the version;
//! - kind 2, a *purge* ([`Change::Purge`], `V = 0`): a collected tombstone; replay
//!   forgets the key if its entry is still the tombstone at the version;
//! - kind 3, a *restore* ([`Change::Restore`]): a write its replicas refused is
//!   undone; replay puts the previous entry back if the key's entry is still at
//!   the version. The value field holds that previous entry: empty (`V = 0`) for
//!   "no entry", else its version (u64), its kind (u8: 0 tombstone, 1 value) and
//!   its value (so `V = 9` for a tombstone, `V >= 9` for a value).
//! - kind 4, a *ballot* ([`Change::Ballot`]): a key's Paxos acceptor state, not
//!   data; the version field is the ballot it promised, and the value field its
//!   accepted proposal laid out as a restore's previous entry (empty: none).
//!   Replay hands ballots to the node's acceptor, a key's last one winning.
//!
//! A body is consistent only if `L = 17 + K + V` exactly, the kind is one of these,
//! and `V` fits the kind as above. Snapshots hold writes and ballots only (the
//! state, not its history: the entries, then the acceptor's live slots); a
//! purge or restore in a snapshot is corruption. A snapshot ends with a footer that is framed like a
//! record whose length field is `0xFFFF_FFFF`: the marker, a CRC-32 of the marker
//! and the count, and the record count as a u64 (16 bytes), which must be the last
//! bytes of the file.
//!
//! # Format versions
//!
//! Version 1 had writes only (kinds 0 and 1); version 2 added purges and restores;
//! version 3 ballots. This build reads older files unchanged ([`Wal::format`]
//! tells which version the current generation's files have), and the node
//! rewrites such a data directory as a current snapshot when it opens it, before
//! it logs anything, so no older file ever holds a record of a newer kind. An
//! older build refuses a newer file with an error naming the file and both
//! versions, instead of cutting the log at the first record it does not know.
//!
//! # Group commit
//!
//! [`Wal::append`] encodes a record into an in-memory buffer. [`Wal::commit`],
//! called once per event-loop turn before the replies of that turn are released,
//! writes the whole buffer with one `write` and, in [`Fsync::Batch`] mode, makes it
//! durable with one `fdatasync`. So a turn that applied a thousand writes costs one
//! write and one flush, and no reply leaves before the records it acknowledges are
//! on disk. [`Fsync::Always`] writes and syncs inside every `append` (the slowest,
//! and no stronger than `Batch` for acknowledged writes, since replies wait for
//! `commit` anyway; it bounds what an unacknowledged in-flight write may lose to
//! nothing). [`Fsync::Never`] writes on commit and never syncs.
//!
//! # Snapshots
//!
//! The log grows with every write, so when [`Wal::snapshot_due`] says so (the log
//! is past [`SNAPSHOT_FLOOR`] and past twice the last snapshot) the node passes its
//! live state, every key's latest record with tombstones, to [`Wal::snapshot`],
//! which starts generation `G+1`:
//!
//! 1. commit what is buffered to `log-G`;
//! 2. write `snap-(G+1).tmp`, fsync it;
//! 3. rename it to `snap-(G+1)`, fsync the directory: from here the new snapshot is
//!    the state of record;
//! 4. create `log-(G+1)` the same way (temp file with the header, fsync, rename,
//!    fsync the directory) and switch appends to it;
//! 5. delete `snap-G` and `log-G`, fsync the directory.
//!
//! A crash before step 3 leaves generation `G` whole (the temp file is deleted on
//! open); a crash after it leaves `snap-(G+1)` complete, and open creates the
//! missing log and deletes the older files. Disk use stays near three times the live
//! state at most: a snapshot plus a log up to twice its size (plus the old pair
//! for the moment of a snapshot). Snapshot files are always fsynced, whatever the
//! mode: the rename protocol is only crash-safe if the data is on disk before the
//! name is.
//!
//! # Recovery
//!
//! [`Wal::open`] picks the highest generation found. Its snapshot must read back
//! whole (header, every record, footer with the right count, nothing after it);
//! anything else is an error, never a silently empty or partial state. The older
//! pair, if it survived a crash during cleanup, is *not* used as a fallback: a
//! snapshot may legitimately differ from a replay of the older files (a node drops
//! keys it hands to others without logging tombstones for them), so the older pair
//! is not an unambiguous substitute, and the operator is told instead. The log is
//! then replayed record by record; the first record that runs past the end of the
//! file (torn), fails its checksum (a flipped bit) or is inconsistent ends recovery:
//! it and everything after it are cut, the file is truncated there and synced, and
//! [`Recovery`] reports how many bytes went and why. A corrupt length never
//! allocates more than the file holds: a body is read only after its length was
//! checked against [`MAX_BODY`] and the bytes that remain.
//!
//! # What each mode guarantees
//!
//! - `always` and `batch`: a write whose reply was released survives a process
//!   crash, a kernel crash and a power loss (on a disk that honours flushes).
//! - `never`: a write survives a process crash once its turn committed (it is in the
//!   kernel's page cache), but a kernel crash or power loss may lose whatever the
//!   kernel had not flushed yet, typically the last few seconds. What comes back is
//!   still a prefix of the log, never a log with a hole: if the disk kept later
//!   pages and lost earlier ones, the cut falls at the first damaged record and the
//!   intact records after it go too.
//! - No mode survives a disk that lies about flushes or silently loses synced data.
//!   The checksums make such damage visible: in a log it ends recovery at the
//!   damaged record (everything after it is cut, even intact records), in a
//!   snapshot it makes open fail.
//!
//! # Where the code is
//!
//! This file holds the [`Wal`] itself (open, append, group commit, snapshots);
//! `format.rs` the byte layout, `read.rs` the reader and recovery, `files.rs` the
//! data directory (names, scan, file creation, snapshot writing), `tests.rs` the
//! unit tests. Every file operation goes through a [`Disk`] ([`Wal::open`] uses
//! the real one, [`Wal::open_on`] any other, such as the simulator's).
//!
//! # Caveats
//!
//! - After a failed write or fsync the log refuses all further work (every call
//!   returns an error): after a failed fsync the kernel may have dropped the dirty
//!   pages, so retrying could report success for data that is gone. The node should
//!   stop; a restart recovers what is on disk.
//! - One process per data directory. The log itself does not enforce it; the
//!   node's `LOCK` file does (see [`super::durable`]).
//! - A snapshot is written synchronously, on the caller's thread: the event loop
//!   stalls while the whole live state is encoded, written and synced.
//! - Recovery reads every record into memory (the node needs them all anyway).
//! - The buffer of a turn is bounded only by what the node appends in one turn.
//! - Dropping a [`Wal`] does not commit: records not yet committed were never
//!   acknowledged, and a clean shutdown calls [`Wal::commit`] first.

mod files;
mod format;
mod read;

pub use format::{
    BODY_FIXED, FORMAT_VERSION, FRAME_LEN, HEADER_LEN, LOG_MAGIC, MAX_BODY, MIN_FORMAT_VERSION,
    SNAP_MAGIC,
};

use super::disk::{Disk, DiskFile, RealDisk};
use bytes::Bytes;
use files::*;
use format::*;
use read::*;
use std::fmt;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// Log size below which no snapshot is due, whatever the last snapshot's size.
pub const SNAPSHOT_FLOOR: u64 = 64 << 20;
/// After a failed snapshot, the log must grow by this much more before another is due.
pub const SNAPSHOT_RETRY_BYTES: u64 = 8 << 20;
/// A turn's buffer that grew past this is shrunk back after its commit.
const BUF_KEEP: usize = 1 << 20;

/// How the log reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Write and fsync inside every append.
    Always,
    /// Write and fsync once per commit (one per event-loop turn).
    Batch,
    /// Write on commit, never fsync: the OS flushes when it likes.
    Never,
}

impl FromStr for Fsync {
    type Err = String;

    fn from_str(s: &str) -> Result<Fsync, String> {
        match s {
            "always" => Ok(Fsync::Always),
            "batch" => Ok(Fsync::Batch),
            "never" => Ok(Fsync::Never),
            _ => Err(format!(
                "unknown fsync mode {s:?} (expected always, batch or never)"
            )),
        }
    }
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fsync::Always => "always",
            Fsync::Batch => "batch",
            Fsync::Never => "never",
        })
    }
}

/// One logged write, or one entry of a snapshot. `value: None` is a tombstone (a
/// delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key.
    pub key: Bytes,
    /// The value, or `None` for a tombstone.
    pub value: Option<Bytes>,
    /// The write's version.
    pub version: u64,
}

/// One change to a node's data, as the log keeps it. Replaying the changes in log
/// order rebuilds the engine exactly (see the module docs for the byte layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A write the engine stored: the key's entry is now this one.
    Put(Record),
    /// A collected tombstone: `key` is forgotten if its entry is still the
    /// tombstone at `version`.
    Purge {
        /// The key.
        key: Bytes,
        /// The tombstone's version.
        version: u64,
    },
    /// An undone write (its replicas refused it): if `key`'s entry is still the
    /// one at `version`, it goes back to `prev`, a version and a value (`None`: a
    /// tombstone), or to no entry at all (`prev: None`).
    Restore {
        /// The key.
        key: Bytes,
        /// The version of the write undone.
        version: u64,
        /// The entry before that write: its version and value, or `None` if the
        /// key had none.
        prev: Option<(u64, Option<Bytes>)>,
    },
    /// A key's Paxos acceptor state, as a whole: the highest ballot it
    /// promised and the proposal it accepted (its ballot and value, `None`
    /// value: a DELETE's tombstone), if any. The last one of a key replaces
    /// the earlier ones; none of it is data until a write commits it.
    Ballot {
        /// The key.
        key: Bytes,
        /// The highest ballot promised.
        promised: u64,
        /// The accepted proposal: its ballot (its version) and value.
        accepted: Option<(u64, Option<Bytes>)>,
    },
}

impl From<Record> for Change {
    fn from(r: Record) -> Change {
        Change::Put(r)
    }
}

/// Tests compare recovered changes with the writes they logged.
#[cfg(test)]
impl PartialEq<Record> for Change {
    fn eq(&self, other: &Record) -> bool {
        matches!(self, Change::Put(r) if r == other)
    }
}

impl Change {
    /// The key the change is about.
    pub fn key(&self) -> &Bytes {
        match self {
            Change::Put(r) => &r.key,
            Change::Purge { key, .. }
            | Change::Restore { key, .. }
            | Change::Ballot { key, .. } => key,
        }
    }

    /// The highest version the change names (the node's clock must pass it).
    pub fn newest_version(&self) -> u64 {
        match self {
            Change::Put(r) => r.version,
            Change::Purge { version, .. } => *version,
            Change::Restore { version, prev, .. } => {
                (*version).max(prev.as_ref().map_or(0, |p| p.0))
            }
            Change::Ballot {
                promised, accepted, ..
            } => (*promised).max(accepted.as_ref().map_or(0, |p| p.0)),
        }
    }
}

/// What [`Wal::open`] found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Every change that survived, in log order: the snapshot's writes first, then
    /// the log's changes.
    pub records: Vec<Change>,
    /// How many of `records` came from the snapshot.
    pub from_snapshot: usize,
    /// Bytes cut from a torn or corrupt tail (0 if the log was clean).
    pub cut: u64,
    /// Why they were cut (file, offset, what was wrong).
    pub cut_reason: Option<String>,
    /// The generation the log continues in.
    pub generation: u64,
}

/// Counters for STATUS and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Current generation.
    pub generation: u64,
    /// Record bytes in the log since the last snapshot, buffered ones included.
    pub log_bytes: u64,
    /// Size of the current snapshot file (0 if none).
    pub snapshot_bytes: u64,
    /// Records appended since open.
    pub records: u64,
    /// Writes to the log since open: one per commit that had records buffered (one
    /// per append with [`Fsync::Always`]).
    pub commits: u64,
    /// Log fsyncs done since open.
    pub fsyncs: u64,
    /// Snapshots taken since open.
    pub snapshots: u64,
}

/// The durability log of one data directory.
#[derive(Debug)]
pub struct Wal {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    fsync: Fsync,
    generation: u64,
    /// The oldest format version among the current generation's files.
    format: u32,
    /// The current log, positioned at its end.
    file: Box<dyn DiskFile>,
    /// Bytes written to the current log (header included).
    len: u64,
    /// Encoded records not yet written.
    buf: Vec<u8>,
    /// Whether written bytes await an fsync.
    unsynced: bool,
    snapshot_bytes: u64,
    snapshot_floor: u64,
    /// No snapshot is due before the log reaches this size (set by a failed one).
    retry_at: u64,
    stats: WalStats,
    /// Set by a failed write or fsync; every later call fails with it.
    failed: Option<String>,
}

/// Where a test stops a snapshot, to simulate a crash there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
enum Stage {
    /// `snap-N.tmp` written and synced, not renamed.
    TmpWritten,
    /// `snap-N` in place, `log-N` not created.
    Renamed,
    /// `log-N` created, old files not deleted.
    LogCreated,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`, recovers what is there, and cuts
    /// a bad tail on disk so new appends follow the last good record.
    ///
    /// Errors: content that cannot be trusted (a corrupt snapshot, a bad header, a
    /// missing snapshot) is `InvalidData` with a message naming the file; other I/O
    /// errors carry the directory's name.
    pub fn open(dir: &Path, fsync: Fsync) -> io::Result<(Wal, Recovery)> {
        Wal::open_on(Arc::new(RealDisk), dir, fsync)
    }

    /// [`Wal::open`] on any [`Disk`] (the simulator's, say).
    pub fn open_on(disk: Arc<dyn Disk>, dir: &Path, fsync: Fsync) -> io::Result<(Wal, Recovery)> {
        Wal::open_inner(disk, dir, fsync).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData {
                e
            } else {
                io::Error::new(e.kind(), format!("data directory {}: {e}", dir.display()))
            }
        })
    }

    fn open_inner(disk: Arc<dyn Disk>, dir: &Path, fsync: Fsync) -> io::Result<(Wal, Recovery)> {
        let d = disk.as_ref();
        // A new directory's name is made durable too (see `Disk::create_dir_all`).
        d.create_dir_all(dir)?;
        let found = scan(d, dir)?;
        let mut dir_dirty = false;
        let generation = found
            .snaps
            .iter()
            .chain(found.logs.iter())
            .copied()
            .max()
            .unwrap_or(1);
        let mut rec = Recovery {
            generation,
            ..Recovery::default()
        };

        let snap_path = dir.join(snap_name(generation));
        let mut format = FORMAT_VERSION;
        let snapshot_bytes = if found.snaps.contains(&generation) {
            let (bytes, version) = read_snapshot(d, &snap_path, generation, &mut rec.records)?;
            format = version;
            bytes
        } else if generation == 1 {
            0
        } else {
            return Err(invalid(format!(
                "{}: generation {generation} has a log but no snapshot {}; \
                 refusing to start from a partial state",
                dir.display(),
                snap_name(generation)
            )));
        };
        rec.from_snapshot = rec.records.len();

        let log_path = dir.join(log_name(generation));
        let (mut file, len) = if found.logs.contains(&generation) {
            let mut file = d.open(&log_path)?;
            let replay = replay_log(file.as_mut(), &log_path, generation, &mut rec.records)?;
            format = format.min(replay.format);
            if let Some(reason) = replay.cut_reason {
                rec.cut = replay.file_len - replay.good_len;
                rec.cut_reason = Some(reason);
                file.set_len(replay.good_len)?;
                file.sync_all()?;
            }
            (file, replay.good_len)
        } else {
            (create_log(d, dir, generation)?, HEADER_LEN)
        };
        file.seek(SeekFrom::Start(len))?;

        // The state is recovered: what is left over from interrupted work can go.
        for tmp in &found.tmps {
            remove_if_present(d, tmp)?; // create_log may have reused the name
            dir_dirty = true;
        }

        for &g in found.snaps.iter().filter(|&&g| g < generation) {
            remove_if_present(d, &dir.join(snap_name(g)))?;
            dir_dirty = true;
        }
        for &g in found.logs.iter().filter(|&&g| g < generation) {
            remove_if_present(d, &dir.join(log_name(g)))?;
            dir_dirty = true;
        }
        if dir_dirty {
            d.sync_dir(dir)?;
        }

        let wal = Wal {
            disk,
            dir: dir.to_path_buf(),
            fsync,
            generation,
            format,
            file,
            len,
            buf: Vec::new(),
            unsynced: false,
            snapshot_bytes,
            snapshot_floor: SNAPSHOT_FLOOR,
            retry_at: 0,
            stats: WalStats {
                generation,
                snapshot_bytes,
                ..WalStats::default()
            },
            failed: None,
        };
        Ok((wal, rec))
    }

    /// Queues a record. With [`Fsync::Always`] it is written and fsynced before this
    /// returns; otherwise it is buffered until [`Wal::commit`]. A record whose body
    /// would pass [`MAX_BODY`] is refused (`InvalidInput`) and nothing is queued.
    pub fn append(&mut self, rec: &Record) -> io::Result<()> {
        self.check()?;
        encode(rec, &mut self.buf)?;
        self.appended()
    }

    /// Queues any [`Change`], like [`Wal::append`] does a write.
    pub fn append_change(&mut self, change: &Change) -> io::Result<()> {
        self.check()?;
        encode_change(change, &mut self.buf)?;
        self.appended()
    }

    fn appended(&mut self) -> io::Result<()> {
        self.stats.records += 1;
        if self.fsync == Fsync::Always {
            self.flush(true)?;
        }
        Ok(())
    }

    /// Writes what is buffered; fsyncs with [`Fsync::Batch`] (and `Always`). Called
    /// once per event-loop turn, before the replies the records cover are released.
    /// Cheap when nothing is buffered: no system call at all.
    pub fn commit(&mut self) -> io::Result<()> {
        self.check()?;
        self.flush(self.fsync != Fsync::Never)
    }

    /// Whether the log has grown enough (past the snapshot floor, [`SNAPSHOT_FLOOR`]
    /// unless set otherwise, and past twice the last snapshot) that a snapshot
    /// should be taken. After a failed snapshot it stays false until the log has
    /// grown by [`SNAPSHOT_RETRY_BYTES`], so a full disk is not retried every turn.
    pub fn snapshot_due(&self) -> bool {
        let log = self.log_bytes();
        self.failed.is_none()
            && log >= self.snapshot_floor
            && log >= self.retry_at
            && log >= self.snapshot_bytes.saturating_mul(2)
    }

    /// Sets the log size below which no snapshot is due (tests, small nodes).
    pub fn set_snapshot_floor(&mut self, bytes: u64) {
        self.snapshot_floor = bytes;
    }

    /// Writes a snapshot of the live state (every key's latest record, tombstones
    /// included) and drops the log it replaces. Crash-safe at every point: temp
    /// file, fsync, rename, fsync the directory; a crash mid-snapshot leaves the
    /// previous snapshot and log recoverable. Buffered records are committed first.
    ///
    /// An error before the new snapshot is in place (writing, syncing or renaming
    /// the temp file, a record too large) leaves the log usable in its old
    /// generation; an error after that makes it refuse further work (the disk may
    /// then be ahead of it).
    pub fn snapshot(&mut self, live: impl Iterator<Item = Record>) -> io::Result<()> {
        self.snapshot_until(live, None)
    }

    /// [`Wal::snapshot`] of the live entries and the Paxos acceptor state
    /// (`ballots`, [`Change::Ballot`]s), which the new generation keeps too.
    pub fn snapshot_with(
        &mut self,
        live: impl Iterator<Item = Record>,
        ballots: Vec<Change>,
    ) -> io::Result<()> {
        self.snapshot_until(live.map(Change::Put).chain(ballots), None)
    }

    fn snapshot_until<C: Into<Change>>(
        &mut self,
        live: impl Iterator<Item = C>,
        crash_after: Option<Stage>,
    ) -> io::Result<()> {
        self.commit()?;
        let next = self.generation + 1;
        let tmp = self.dir.join(format!("{}.tmp", snap_name(next)));
        let d = self.disk.clone();
        let d = d.as_ref();
        let written = write_snapshot(d, &tmp, next, live).and_then(|bytes| {
            if crash_after != Some(Stage::TmpWritten) {
                d.rename(&tmp, &self.dir.join(snap_name(next)))?;
            }
            Ok(bytes)
        });
        let bytes = match written {
            Ok(bytes) => bytes,
            Err(e) => {
                // Nothing is in place yet: generation G is still the state of record.
                let _ = d.remove(&tmp);
                self.retry_at = self.log_bytes() + SNAPSHOT_RETRY_BYTES;
                return Err(e);
            }
        };
        if crash_after == Some(Stage::TmpWritten) {
            return Ok(());
        }
        let switched = (|| {
            d.sync_dir(&self.dir)?;
            if crash_after == Some(Stage::Renamed) {
                return Ok(None);
            }
            create_log(d, &self.dir, next).map(Some)
        })();
        let file = match switched {
            Ok(Some(file)) => file,
            Ok(None) => return Ok(()),
            Err(e) => return Err(self.fail(e, "snapshot switch")),
        };
        if crash_after == Some(Stage::LogCreated) {
            return Ok(());
        }
        let old = self.generation;
        self.file = file;
        self.generation = next;
        self.format = FORMAT_VERSION;
        self.len = HEADER_LEN;
        self.unsynced = false;
        self.snapshot_bytes = bytes;
        self.retry_at = 0;
        self.stats.generation = next;
        self.stats.snapshot_bytes = bytes;
        self.stats.snapshots += 1;
        // The new generation is durable; the old files are leftovers that the next
        // open would delete anyway, so failing to delete them is only logged.
        let cleanup = remove_if_present(d, &self.dir.join(log_name(old)))
            .and_then(|()| remove_if_present(d, &self.dir.join(snap_name(old))))
            .and_then(|()| d.sync_dir(&self.dir));
        if let Err(e) = cleanup {
            log::warn!(
                "{}: could not delete generation {old}: {e}",
                self.dir.display()
            );
        }
        Ok(())
    }

    /// Counters: bytes in the log since the last snapshot, records appended, fsyncs
    /// done, and more (for STATUS and metrics).
    pub fn stats(&self) -> WalStats {
        WalStats {
            log_bytes: self.log_bytes(),
            ..self.stats
        }
    }

    /// The format version of the current generation's files (the older of the
    /// snapshot's and the log's). Below [`FORMAT_VERSION`], the log must not get
    /// purges or restores: a snapshot first moves the directory to the current
    /// format (see the module docs).
    pub fn format(&self) -> u32 {
        self.format
    }

    /// The fsync mode.
    pub fn fsync(&self) -> Fsync {
        self.fsync
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The disk the log is on.
    pub fn disk(&self) -> &Arc<dyn Disk> {
        &self.disk
    }

    fn log_bytes(&self) -> u64 {
        self.len - HEADER_LEN + self.buf.len() as u64
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(why) => Err(io::Error::other(format!(
                "durability log unusable after an earlier failure: {why}"
            ))),
        }
    }

    /// Records a fatal failure and passes the error on.
    fn fail(&mut self, e: io::Error, what: &str) -> io::Error {
        self.failed = Some(format!("{what}: {e}"));
        e
    }

    fn flush(&mut self, sync: bool) -> io::Result<()> {
        if !self.buf.is_empty() {
            if let Err(e) = self.file.write_all(&self.buf) {
                return Err(self.fail(e, "write"));
            }
            self.len += self.buf.len() as u64;
            self.buf.clear();
            if self.buf.capacity() > BUF_KEEP {
                self.buf.shrink_to(BUF_KEEP / 16);
            }
            self.unsynced = true;
            self.stats.commits += 1;
        }
        if sync && self.unsynced {
            if let Err(e) = self.file.sync_data() {
                return Err(self.fail(e, "fsync"));
            }
            self.unsynced = false;
            self.stats.fsyncs += 1;
        }
        Ok(())
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests;
