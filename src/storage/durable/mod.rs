//! A storage node's data directory: the durability log ([`super::wal`]) wired to
//! the node, plus the node's identity (its id and last ring) and a lock. All
//! its file I/O goes through a [`Disk`] ([`RealDisk`] in the binary, the
//! simulator's in-memory disk in `crate::sim::disk`).
//!
//! # Durability as outputs
//!
//! The node is a state machine and never touches a file. During a step it
//! records what must reach the disk in its [`Journal`]: every change to the
//! engine's data (a write through `StorageNode::store`, a collected tombstone
//! through `StorageNode::purge`; a conditional write stores nothing before its
//! commit, so nothing is ever undone, though logs that hold restore records from
//! older versions still replay them), every Paxos promise and acceptance (a
//! ballot record of the key's acceptor slot, see the node's `ballots`: not
//! data, replay hands them back to the node, and a snapshot carries the live
//! ones), a snapshot after it dropped
//! keys, and its identity after it installed a ring. [`DurableNode`], the
//! wrapper both the binary and the simulator run, takes those requests after
//! each step and performs them here: [`Durable::perform`] appends the changes
//! (replaying the log in order rebuilds the engine exactly; the one change not
//! logged is the drop of keys a ring change moved elsewhere, which a snapshot
//! follows), then [`Durable::after_step`] applies the hold rule.
//!
//! # The rule
//!
//! No output that could depend on a record leaves the process before the record
//! is committed:
//!
//! - After each step the wrapper calls [`Durable::after_step`]. If records are
//!   buffered and not yet committed, every output of that step (replies, timers,
//!   closes, trust and hold changes) is moved into a held list, except what goes
//!   out on the node's own outbound links (to peers and to the manager). Once
//!   anything is held in a turn, every later step's outputs of that turn are held
//!   too, behind it.
//! - Why outbound links may pass: what a node sends on them are requests
//!   (forwards, `REPLICATE`, `REPL_READ`, `MIGRATE` chunks) and reports
//!   (heartbeats, `HANDOFF_DONE`), never an acknowledgement of one of its own
//!   writes; a replica's `OK` to a `REPLICATE` goes back on the *lead replica's*
//!   link, an inbound connection here, and is held like a client's reply. So a
//!   lead's copies reach the replicas while its own fsync runs, and the two
//!   fsyncs of a replicated write overlap instead of following each other. The
//!   rule depends only on the connection, so every connection keeps its order.
//! - At the end of the reactor's loop turn, [`Durable::turn_end`] commits the log
//!   (one `write` and, with `--fsync batch`, one `fdatasync` for the whole turn),
//!   then releases the held outputs to the reactor, which flushes them. This is
//!   the group commit: a turn that took a thousand pipelined writes costs one
//!   fsync, and none of their acknowledgements leaves before it.
//! - A step that runs after the reactor's turn end (a connection closed at the end
//!   of the turn, say) may append records too; its outputs are then held until the
//!   next turn end, and a timer due at once makes sure that turn comes without
//!   waiting for network events.
//! - With `--fsync always` the log writes and fsyncs each record inside the
//!   append, so nothing is ever uncommitted after a step and nothing is held: one
//!   fsync per record, before its acknowledgement. With `--fsync never` records
//!   are held like `batch` and written (to the page cache) at the turn end without
//!   an fsync: a process crash loses nothing acknowledged, a kernel crash or power
//!   loss may.
//!
//! # Snapshots
//!
//! At a turn end, when the log says one is due ([`Wal::snapshot_due`]) or the node
//! has just dropped keys it no longer holds after a ring change ([`Durable::want_snapshot`]:
//! otherwise a restart would replay them and resurrect keys the node handed over),
//! the whole engine is written as a snapshot and the log starts afresh.
//!
//! # Identity
//!
//! The file `identity` holds the node's id and the last ring it installed
//! (`gtstore-identity 1`, the id, then the RING text), replaced atomically (temp
//! file, fsync, rename, fsync the directory) at the turn end after the id or the
//! ring's epoch changes (never inside `step`). A restarted node installs that ring before anything else, so it routes
//! as before, and offers it to the manager when it registers: a restarted manager
//! recovers the membership from the nodes.
//!
//! # Lock
//!
//! The file `LOCK` holds the process id of the node using the directory. A node
//! refuses a directory whose `LOCK` names another live process; a `LOCK` left by a
//! crashed node (its process is gone) is taken over. Liveness is read from
//! `/proc/PID`, so on systems without `/proc` the lock is advisory only.
//!
//! # Caveats
//!
//! - A failed write or fsync is fatal: the node drops every held output (no
//!   acknowledgement for a write that may not be on disk), stops, and its binary
//!   exits with an error; a restart recovers what is on disk. This is
//!   PostgreSQL's answer too (it panics on a failed fsync): after one, the
//!   kernel may have dropped the dirty pages and marked them clean, so a retry
//!   could succeed for data that is gone. The simulator injects failed fsyncs
//!   and restarts the stopped node (see `crate::sim::chaos`).
//! - A failed write of the identity file is only logged: the data is in the
//!   log, and the next ring installed tries again. A node that crashes before
//!   then restarts with the older ring and learns the newer one from the
//!   manager.
//! - A snapshot is written synchronously at a turn end: the node stalls while the
//!   whole engine is encoded and synced (see [`super::wal`]).
//! - Keys dropped after a ring change are gone from disk only once the snapshot
//!   that follows is written; a crash in between brings them back on restart (the
//!   next ring the node installs drops them again).
//! - A data directory of an older format (version 1: no purges or restores) is
//!   rewritten as a snapshot when it is opened. If that snapshot fails (a full
//!   disk), the node goes on logging into the old files, and an older build
//!   would then cut its log at the first purge or restore.

mod journal;
mod service;

pub use journal::{Journal, Requests};
pub use service::{DurableNode, HELD_YIELD_BYTES};

use super::disk::{with_path, Disk, RealDisk};
use super::engine::{Engine, Entry};
use super::wal::{Change, Fsync, Record, Recovery, Wal, WalStats, FORMAT_VERSION};
use crate::reactor::{ConnId, Millis, Output};
use crate::ring::Ring;
use bytes::Bytes;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

pub use super::disk::LOCK_FILE;

/// Timer id the node uses to wake the loop when outputs are held outside a turn.
/// Ignored when it fires: the turn end that follows it does the work.
pub const TIMER_COMMIT: u64 = u64::MAX - 1;

/// Name of the identity file in a data directory.
pub const IDENTITY_FILE: &str = "identity";
/// First line of the identity file.
const IDENTITY_MAGIC: &str = "gtstore-identity 1";

/// What a node found in its data directory on start.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Records replayed (snapshot and log).
    pub records: usize,
    /// How many of them came from the snapshot.
    pub from_snapshot: usize,
    /// Live keys in the engine afterwards.
    pub keys: usize,
    /// Bytes cut from a torn or corrupt log tail (0 if clean).
    pub cut: u64,
    /// Why they were cut.
    pub cut_reason: Option<String>,
    /// The node id saved in the identity file (0 if none).
    pub node_id: u32,
    /// The epoch of the saved ring (0 if none).
    pub epoch: u64,
}

/// The open data directory of a node.
#[derive(Debug)]
pub struct Durable {
    wal: Wal,
    /// Records appended but not yet committed.
    uncommitted: bool,
    /// Outputs waiting for the commit, in the order the node produced them.
    held: Vec<Output>,
    /// Outputs are being held this turn: later steps queue behind them.
    holding: bool,
    /// Bytes of replies in `held`.
    held_bytes: usize,
    /// The wake-up timer was already asked for since the last turn end.
    woken: bool,
    /// A snapshot is wanted at the next turn end (keys were dropped).
    snapshot_wanted: bool,
    /// Set by the first failed write, fsync or snapshot switch.
    failed: Option<String>,
    /// `Output::Stop` was already pushed after a failure.
    stopped: bool,
    /// The identity last saved: (node id, ring epoch).
    saved: (u32, u64),
    /// An identity to save at the next turn end (the node installed a ring).
    unsaved: Option<(u32, Ring)>,
    /// The identity read on open, until the node installs it.
    restored: Option<(u32, Ring)>,
    /// The Paxos acceptor state replayed on open ([`Change::Ballot`]s, in log
    /// order), until the node takes it.
    ballots: Vec<Change>,
}

impl Durable {
    /// Opens (creating if needed) the data directory `dir`: takes the lock,
    /// recovers the log and reads the identity file. The log's records are
    /// returned for the node to replay into its engine.
    pub fn open(dir: &Path, fsync: Fsync) -> io::Result<(Durable, Recovery)> {
        Durable::open_on(Arc::new(RealDisk), dir, fsync)
    }

    /// [`Durable::open`] on any [`Disk`] (the simulator's, say).
    pub fn open_on(
        disk: Arc<dyn Disk>,
        dir: &Path,
        fsync: Fsync,
    ) -> io::Result<(Durable, Recovery)> {
        disk.create_dir_all(dir)
            .map_err(|e| with_path(e, dir, "cannot create the data directory"))?;
        disk.lock(dir)?;
        let opened = read_identity(disk.as_ref(), dir)
            .and_then(|restored| Ok((restored, Wal::open_on(disk.clone(), dir, fsync)?)));
        let (restored, (wal, rec)) = match opened {
            Ok(v) => v,
            Err(e) => {
                disk.unlock(dir);
                return Err(e);
            }
        };
        let saved = restored.as_ref().map_or((0, 0), |(id, r)| (*id, r.epoch));
        let d = Durable {
            wal,
            uncommitted: false,
            held: Vec::new(),
            holding: false,
            held_bytes: 0,
            woken: false,
            snapshot_wanted: false,
            failed: None,
            stopped: false,
            saved,
            unsaved: None,
            restored,
            ballots: Vec::new(),
        };
        Ok((d, rec))
    }

    /// Replays what [`Durable::open`] recovered into `engine` (not logged again);
    /// returns a summary and the highest version seen (the node's clock must
    /// continue above it). A data directory in an older format is then rewritten
    /// as a snapshot in the current one, before anything is logged (see
    /// [`super::wal`], "Format versions").
    pub fn replay(&mut self, rec: Recovery, engine: &mut Engine) -> (Recovered, u64) {
        let mut newest = 0;
        for c in rec.records.iter() {
            newest = newest.max(c.newest_version());
            match c {
                Change::Ballot { .. } => self.ballots.push(c.clone()),
                _ => replay_change(engine, c),
            }
        }
        if self.wal.format() < FORMAT_VERSION {
            log::info!(
                "{}: format version {} found; rewriting it as version {FORMAT_VERSION}",
                self.wal.dir().display(),
                self.wal.format()
            );
            // No ballots: an older format has none.
            self.snapshot(engine, Vec::new());
        }
        let found = Recovered {
            records: rec.records.len(),
            from_snapshot: rec.from_snapshot,
            keys: engine.len(),
            cut: rec.cut,
            cut_reason: rec.cut_reason,
            node_id: self.saved.0,
            epoch: self.saved.1,
        };
        (found, newest)
    }

    /// The node id and ring saved by the previous run, once (the node installs
    /// them on its first step).
    pub fn take_identity(&mut self) -> Option<(u32, Ring)> {
        self.restored.take()
    }

    /// The Paxos acceptor state the log held ([`Change::Ballot`]s in log
    /// order: a key's last one is its state), once (the node restores it
    /// before it runs).
    pub fn take_ballots(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.ballots)
    }

    /// The saved identity, without taking it: (node id, ring epoch).
    pub fn identity(&self) -> (u32, u64) {
        self.saved
    }

    /// Appends a record of a write the engine just stored. With `--fsync always`
    /// it is on disk when this returns; otherwise at the next [`Durable::turn_end`].
    pub fn log(&mut self, key: &[u8], version: u64, value: Option<&[u8]>) {
        self.log_change(&Change::Put(Record {
            key: Bytes::copy_from_slice(key),
            value: value.map(Bytes::copy_from_slice),
            version,
        }));
    }

    /// Appends a record that the engine forgot `key`, the tombstone at `version`.
    pub fn log_purge(&mut self, key: &[u8], version: u64) {
        self.log_change(&Change::Purge {
            key: Bytes::copy_from_slice(key),
            version,
        });
    }

    /// Appends a record that the engine undid the write of `key` at `version`,
    /// putting `prev` back (`None`: no entry).
    pub fn log_restore(&mut self, key: &[u8], version: u64, prev: Option<&Entry>) {
        self.log_change(&Change::Restore {
            key: Bytes::copy_from_slice(key),
            version,
            prev: prev.map(|e| (e.version, e.value.clone())),
        });
    }

    /// Performs what a step asked for: appends its changes in order, and
    /// notes the snapshot and the identity for the turn end.
    pub fn perform(&mut self, req: Requests) {
        for c in &req.changes {
            self.log_change(c);
        }
        if req.snapshot {
            self.want_snapshot();
        }
        if let Some((id, ring)) = req.identity {
            self.save_identity(id, &ring);
        }
    }

    fn log_change(&mut self, change: &Change) {
        if self.failed.is_some() {
            return;
        }
        match self.wal.append_change(change) {
            Ok(()) => self.uncommitted |= self.wal.fsync() != Fsync::Always,
            Err(e) => self.fail(format!("cannot append to the log: {e}")),
        }
    }

    /// Called at the end of every node step with the index of the step's first
    /// output: holds the step's outputs while records await their commit, except
    /// those on connections for which `passes` is true (the node's outbound links).
    pub fn after_step(
        &mut self,
        now: Millis,
        mark: usize,
        out: &mut Vec<Output>,
        passes: impl Fn(ConnId) -> bool,
    ) {
        if self.failed.is_some() {
            out.truncate(mark);
            self.stop(out);
            return;
        }
        if !(self.uncommitted || self.holding) || out.len() == mark {
            return;
        }
        let before = self.held.len();
        let step: Vec<Output> = out.drain(mark..).collect();
        for o in step {
            let pass = match &o {
                Output::Send { conn, .. }
                | Output::SendBytes { conn, .. }
                | Output::Close { conn } => passes(*conn),
                // Input handed back must be in place before more is read, and a
                // yield is about this turn.
                Output::Unread { .. } | Output::Yield { .. } => true,
                _ => false,
            };
            if pass {
                out.push(o);
            } else {
                self.held_bytes += match &o {
                    Output::Send { frame, .. } => frame.payload.len(),
                    Output::SendBytes { bytes, .. } => bytes.len(),
                    _ => 0,
                };
                self.held.push(o);
            }
        }
        if self.held.len() == before {
            return;
        }
        self.holding = true;
        if !self.woken {
            self.woken = true;
            out.push(Output::Timer {
                at: now,
                id: TIMER_COMMIT,
            });
        }
    }

    /// Called once per loop turn: commits the turn's records (the group commit),
    /// takes a snapshot if one is due, then releases the held outputs.
    pub fn turn_end(&mut self, engine: &Engine, out: &mut Vec<Output>) {
        self.turn_end_with(engine, Vec::new, out);
    }

    /// [`Durable::turn_end`] for a node whose Paxos acceptor holds state:
    /// `ballots` gives it ([`Change::Ballot`]s) if a snapshot is taken, which
    /// keeps it (the log it replaces held it).
    pub fn turn_end_with(
        &mut self,
        engine: &Engine,
        ballots: impl FnOnce() -> Vec<Change>,
        out: &mut Vec<Output>,
    ) {
        if self.failed.is_none() {
            match self.wal.commit() {
                Ok(()) => self.uncommitted = false,
                Err(e) => self.fail(format!("cannot commit the log: {e}")),
            }
        }
        if self.failed.is_none() && (self.snapshot_wanted || self.wal.snapshot_due()) {
            self.snapshot(engine, ballots());
        }
        self.write_identity();
        self.holding = false;
        self.woken = false;
        self.held_bytes = 0;
        if self.failed.is_some() {
            self.held.clear();
            self.stop(out);
        } else {
            out.append(&mut self.held);
        }
    }

    /// Bytes of replies held for this turn's commit (the node stops taking
    /// input for the turn when they pile up).
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Asks for a snapshot at the next turn end (the node dropped keys).
    pub fn want_snapshot(&mut self) {
        self.snapshot_wanted = true;
    }

    fn snapshot(&mut self, engine: &Engine, ballots: Vec<Change>) {
        self.snapshot_wanted = false;
        let live = engine
            .tokens()
            .filter_map(|t| engine.sector_of_token(t))
            .flat_map(|s| s.iter())
            .map(|e| Record {
                key: Bytes::copy_from_slice(e.key),
                value: e.value.map(Bytes::copy_from_slice),
                version: e.version,
            });
        match self.wal.snapshot_with(live, ballots) {
            Ok(()) => log::info!(
                "snapshot of {} keys written ({} bytes)",
                engine.len(),
                self.wal.stats().snapshot_bytes
            ),
            Err(e) => {
                // Before the switch the old generation stays usable and the log
                // retries later; after it, the log refuses all work (fatal).
                if self.wal.commit().is_err() {
                    self.fail(format!("snapshot failed and the log is unusable: {e}"));
                } else {
                    log::warn!("snapshot failed, will retry: {e}");
                }
            }
        }
    }

    /// Asks for the node's id and ring to be saved at the next turn end, if
    /// either changed since the last save (the file is written outside `step`).
    pub fn save_identity(&mut self, node_id: u32, ring: &Ring) {
        if self.saved != (node_id, ring.epoch) {
            self.unsaved = Some((node_id, ring.clone()));
        }
    }

    /// Writes the identity asked for since the last turn end. A failure is
    /// logged, not fatal: the data itself is in the log.
    fn write_identity(&mut self) {
        let Some((node_id, ring)) = self.unsaved.take() else {
            return;
        };
        if self.saved == (node_id, ring.epoch) || self.failed.is_some() {
            return;
        }
        match write_identity(self.wal.disk().as_ref(), self.wal.dir(), node_id, &ring) {
            Ok(()) => self.saved = (node_id, ring.epoch),
            Err(e) => log::warn!("cannot save the node's identity: {e}"),
        }
    }

    /// Why the data directory stopped working, if it did.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The log's counters.
    pub fn stats(&self) -> WalStats {
        self.wal.stats()
    }

    /// Lowers the log size at which snapshots become due (tests).
    pub fn set_snapshot_floor(&mut self, bytes: u64) {
        self.wal.set_snapshot_floor(bytes);
    }

    fn fail(&mut self, why: String) {
        if self.failed.is_none() {
            log::error!("{}: {why}; stopping", self.wal.dir().display());
            self.failed = Some(why);
        }
    }

    fn stop(&mut self, out: &mut Vec<Output>) {
        if !self.stopped {
            self.stopped = true;
            out.push(Output::Stop);
        }
    }
}

impl Drop for Durable {
    /// A clean exit gives the lock up; a crash leaves it for the next start.
    fn drop(&mut self) {
        self.wal.disk().unlock(self.wal.dir());
    }
}

/// Applies one recovered change to `engine`, as the node applied it before.
fn replay_change(engine: &mut Engine, change: &Change) {
    match change {
        Change::Put(r) => {
            engine.apply(&r.key, r.version, r.value.as_deref(), None);
        }
        Change::Purge { key, version } => {
            engine.remove_tombstone(key, *version);
        }
        Change::Restore { key, version, prev } => {
            let prev = prev.as_ref().map(|(v, value)| Entry {
                version: *v,
                value: value.clone(),
            });
            engine.restore(key, *version, prev);
        }
        // Not data: the node's acceptor takes them (see `Durable::take_ballots`).
        Change::Ballot { .. } => {}
    }
}

/// Reads `dir/identity`: `None` if there is none, an error if it is unreadable.
fn read_identity(disk: &dyn Disk, dir: &Path) -> io::Result<Option<(u32, Ring)>> {
    let path = dir.join(IDENTITY_FILE);
    let text = match disk.read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(with_path(e, &path, "cannot read")),
    };
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}; refusing to start", path.display()),
        )
    };
    let mut parts = text.splitn(3, |&b| b == b'\n');
    if parts.next() != Some(IDENTITY_MAGIC.as_bytes()) {
        return Err(bad("not a gtstore identity file"));
    }
    let id = parts
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.parse::<u32>().ok())
        .ok_or_else(|| bad("bad node id"))?;
    let ring = Ring::decode(parts.next().unwrap_or_default())
        .map_err(|e| bad(&format!("bad ring: {e}")))?;
    Ok(Some((id, ring)))
}

/// Replaces `dir/identity` atomically.
fn write_identity(disk: &dyn Disk, dir: &Path, node_id: u32, ring: &Ring) -> io::Result<()> {
    let path = dir.join(IDENTITY_FILE);
    let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let mut f = disk.create(&tmp)?;
    write!(f, "{IDENTITY_MAGIC}\n{node_id}\n{}", ring.encode())?;
    f.sync_all()?;
    drop(f);
    disk.rename(&tmp, &path)?;
    disk.sync_dir(dir)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod change_tests;

#[cfg(test)]
mod paxos_tests;
