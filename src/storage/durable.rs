//! A storage node's data directory: the durability log ([`super::wal`]) wired to
//! the node, plus the node's identity (its id and last ring) and a lock.
//!
//! # The rule
//!
//! Every change to the engine's data is logged here: a write (through the node's
//! `StorageNode::store`), a collected tombstone (`StorageNode::purge`) and an
//! undone write (`StorageNode::undo`, when a conditional write's replicas refused
//! it). Each of those node methods applies the change and, when the engine
//! changed, appends a [`Change`] here; replaying the log in order rebuilds the
//! engine exactly. (The one change not logged is the drop of keys a ring change
//! moved elsewhere; a snapshot follows it, see below.) No output that could
//! depend on a record leaves the process before the record is committed:
//!
//! - After each `step` the node calls [`Durable::after_step`]. If records are
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
//!   exits with an error. A restart recovers what is on disk.
//! - A snapshot is written synchronously at a turn end: the node stalls while the
//!   whole engine is encoded and synced (see [`super::wal`]).
//! - Keys dropped after a ring change are gone from disk only once the snapshot
//!   that follows is written; a crash in between brings them back on restart (the
//!   next ring the node installs drops them again).
//! - A data directory of an older format (version 1: no purges or restores) is
//!   rewritten as a snapshot when it is opened. If that snapshot fails (a full
//!   disk), the node goes on logging into the old files, and an older build
//!   would then cut its log at the first purge or restore.

use super::engine::{Engine, Entry};
use super::wal::{Change, Fsync, Record, Recovery, Wal, WalStats, FORMAT_VERSION};
use crate::reactor::{ConnId, Millis, Output};
use crate::ring::Ring;
use bytes::Bytes;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Timer id the node uses to wake the loop when outputs are held outside a turn.
/// Ignored when it fires: the turn end that follows it does the work.
pub const TIMER_COMMIT: u64 = u64::MAX - 1;

/// Name of the identity file in a data directory.
pub const IDENTITY_FILE: &str = "identity";
/// Name of the lock file in a data directory.
pub const LOCK_FILE: &str = "LOCK";
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
    /// Removed on drop (a clean exit); a crash leaves it for the next start.
    lock: PathBuf,
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
}

impl Durable {
    /// Opens (creating if needed) the data directory `dir`: takes the lock,
    /// recovers the log and reads the identity file. The log's records are
    /// returned for the node to replay into its engine.
    pub fn open(dir: &Path, fsync: Fsync) -> io::Result<(Durable, Recovery)> {
        fs::create_dir_all(dir)
            .map_err(|e| with_path(e, dir, "cannot create the data directory"))?;
        let lock = take_lock(dir)?;
        let restored = read_identity(dir)?;
        let (wal, rec) = match Wal::open(dir, fsync) {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_file(&lock);
                return Err(e);
            }
        };
        let saved = restored.as_ref().map_or((0, 0), |(id, r)| (*id, r.epoch));
        let d = Durable {
            wal,
            lock,
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
        for c in &rec.records {
            replay_change(engine, c);
            newest = newest.max(c.newest_version());
        }
        if self.wal.format() < FORMAT_VERSION {
            log::info!(
                "{}: format version {} found; rewriting it as version {FORMAT_VERSION}",
                self.wal.dir().display(),
                self.wal.format()
            );
            self.snapshot(engine);
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
        if self.failed.is_none() {
            match self.wal.commit() {
                Ok(()) => self.uncommitted = false,
                Err(e) => self.fail(format!("cannot commit the log: {e}")),
            }
        }
        if self.failed.is_none() && (self.snapshot_wanted || self.wal.snapshot_due()) {
            self.snapshot(engine);
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

    fn snapshot(&mut self, engine: &Engine) {
        self.snapshot_wanted = false;
        let started = std::time::Instant::now();
        let live = engine
            .tokens()
            .filter_map(|t| engine.sector_of_token(t))
            .flat_map(|s| s.iter())
            .map(|e| Record {
                key: Bytes::copy_from_slice(e.key),
                value: e.value.map(Bytes::copy_from_slice),
                version: e.version,
            });
        match self.wal.snapshot(live) {
            Ok(()) => log::info!(
                "snapshot of {} keys written in {} ms ({} bytes)",
                engine.len(),
                started.elapsed().as_millis(),
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
        match write_identity(self.wal.dir(), node_id, &ring) {
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
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.lock);
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
    }
}

fn with_path(e: io::Error, path: &Path, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Takes `dir/LOCK` for this process, or says which live process holds it.
fn take_lock(dir: &Path) -> io::Result<PathBuf> {
    let path = dir.join(LOCK_FILE);
    let me = std::process::id();
    match fs::read_to_string(&path) {
        Ok(text) => {
            if let Ok(pid) = text.trim().parse::<u32>() {
                if pid != me && Path::new(&format!("/proc/{pid}")).exists() {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!(
                            "data directory {} is in use by process {pid} \
                             (delete {} if that process is not a gtstore node)",
                            dir.display(),
                            path.display()
                        ),
                    ));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(with_path(e, &path, "cannot read")),
    }
    let write = || -> io::Result<()> {
        let mut f = File::create(&path)?;
        writeln!(f, "{me}")?;
        f.sync_all()
    };
    write().map_err(|e| with_path(e, &path, "cannot write"))?;
    Ok(path)
}

/// Reads `dir/identity`: `None` if there is none, an error if it is unreadable.
fn read_identity(dir: &Path) -> io::Result<Option<(u32, Ring)>> {
    let path = dir.join(IDENTITY_FILE);
    let text = match fs::read(&path) {
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
fn write_identity(dir: &Path, node_id: u32, ring: &Ring) -> io::Result<()> {
    let path = dir.join(IDENTITY_FILE);
    let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    write!(f, "{IDENTITY_MAGIC}\n{node_id}\n{}", ring.encode())?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Frame;

    fn none(_: ConnId) -> bool {
        false
    }

    /// A fresh directory under the system temp dir, removed on drop.
    pub(super) struct TempDir(pub(super) PathBuf);

    impl TempDir {
        pub(super) fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicU64, Ordering};
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("gtstore-durable-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn reply(n: u32) -> Output {
        Output::Send {
            conn: ConnId::new(n, 1),
            frame: Frame::new(21, 0, 0, Bytes::new()),
        }
    }

    fn is_reply(o: &Output, n: u32) -> bool {
        matches!(o, Output::Send { conn, .. } if *conn == ConnId::new(n, 1))
    }

    #[test]
    fn batch_holds_outputs_until_the_turn_commits() {
        let dir = TempDir::new("batch");
        let (mut d, rec) = Durable::open(&dir.0, Fsync::Batch).unwrap();
        assert!(rec.records.is_empty());
        let mut out = Vec::new();
        // A step with no record passes its outputs through.
        out.push(reply(1));
        d.after_step(0, 0, &mut out, none);
        assert_eq!(out.len(), 1);
        // A step that logged: its outputs are held, a wake-up timer is asked for.
        out.clear();
        d.log(b"k", 5, Some(b"v"));
        out.push(reply(2));
        d.after_step(0, 0, &mut out, none);
        assert!(matches!(
            out[..],
            [Output::Timer {
                id: TIMER_COMMIT,
                ..
            }]
        ));
        // A later step of the same turn queues behind, even without a record.
        out.clear();
        out.push(reply(3));
        d.after_step(0, 0, &mut out, none);
        assert!(out.is_empty());
        assert_eq!(d.stats().fsyncs, 0);
        // The turn end commits with one fsync, then releases in order.
        let engine = Engine::default();
        d.turn_end(&engine, &mut out);
        assert_eq!(d.stats().fsyncs, 1);
        assert_eq!(out.len(), 2);
        assert!(is_reply(&out[0], 2) && is_reply(&out[1], 3));
        // The next turn starts clear.
        out.clear();
        out.push(reply(4));
        d.after_step(1, 0, &mut out, none);
        assert_eq!(out.len(), 1);
        drop(d);
        let (_, rec) = Durable::open(&dir.0, Fsync::Batch).unwrap();
        assert_eq!(rec.records.len(), 1);
        assert_eq!(&rec.records[0].key()[..], b"k");
    }

    #[test]
    fn outbound_links_pass_and_held_outputs_keep_their_order() {
        let dir = TempDir::new("pass");
        let (mut d, _) = Durable::open(&dir.0, Fsync::Batch).unwrap();
        let link = |c: ConnId| c == ConnId::new(9, 1);
        d.log(b"k", 1, Some(b"v"));
        let mut out = vec![reply(1), reply(2), reply(9), reply(3)];
        d.after_step(0, 0, &mut out, link);
        // The copy to a peer leaves now; the replies wait, in order.
        assert!(is_reply(&out[0], 9));
        assert!(matches!(out[1], Output::Timer { .. }));
        assert_eq!(out.len(), 2);
        out.clear();
        d.turn_end(&Engine::default(), &mut out);
        let order: Vec<bool> = [1, 2, 3]
            .iter()
            .zip(&out)
            .map(|(&n, o)| is_reply(o, n))
            .collect();
        assert_eq!(order, [true, true, true], "{out:?}");
    }

    #[test]
    fn always_syncs_each_record_and_holds_nothing() {
        let dir = TempDir::new("always");
        let (mut d, _) = Durable::open(&dir.0, Fsync::Always).unwrap();
        let mut out = vec![reply(1)];
        d.log(b"a", 1, Some(b"1"));
        d.log(b"b", 2, None);
        d.after_step(0, 0, &mut out, none);
        assert_eq!(out.len(), 1, "nothing held");
        assert_eq!(d.stats().fsyncs, 2, "one fsync per record");
    }

    #[test]
    fn never_holds_until_written_but_does_not_sync() {
        let dir = TempDir::new("never");
        let (mut d, _) = Durable::open(&dir.0, Fsync::Never).unwrap();
        let mut out = Vec::new();
        d.log(b"a", 1, Some(b"1"));
        out.push(reply(1));
        d.after_step(0, 0, &mut out, none);
        assert!(!out.iter().any(|o| is_reply(o, 1)));
        d.turn_end(&Engine::default(), &mut out);
        assert!(out.iter().any(|o| is_reply(o, 1)));
        assert_eq!((d.stats().commits, d.stats().fsyncs), (1, 0));
    }

    #[test]
    fn identity_round_trips_and_a_live_lock_is_refused() {
        let dir = TempDir::new("identity");
        let ring =
            Ring::decode(b"epoch 4\nreplicas 3 2 2\nnode 2 127.0.0.1:7002 up 5,9\n").unwrap();
        {
            let (mut d, _) = Durable::open(&dir.0, Fsync::Batch).unwrap();
            assert!(d.take_identity().is_none());
            d.save_identity(2, &ring);
            assert_eq!(d.identity(), (0, 0), "saved at the turn end");
            d.turn_end(&Engine::default(), &mut Vec::new());
            assert_eq!(d.identity(), (2, 4));
        }
        // A LOCK naming a live process other than us (our parent) is refused.
        let parent = std::os::unix::process::parent_id();
        fs::write(dir.0.join(LOCK_FILE), format!("{parent}\n")).unwrap();
        let e = Durable::open(&dir.0, Fsync::Batch).unwrap_err();
        assert!(e.to_string().contains("in use by process"), "{e}");
        // One naming a dead process is taken over.
        fs::write(dir.0.join(LOCK_FILE), format!("{}\n", u32::MAX - 7)).unwrap();
        let (mut d, _) = Durable::open(&dir.0, Fsync::Batch).unwrap();
        let (id, got) = d.take_identity().expect("saved identity");
        assert_eq!((id, got.encode()), (2, ring.encode()));
        drop(d);
        // A damaged identity file is an error, not a silent fresh start.
        fs::write(dir.0.join(IDENTITY_FILE), "gtstore-identity 1\nx\n").unwrap();
        let e = Durable::open(&dir.0, Fsync::Batch).unwrap_err();
        assert!(e.to_string().contains("bad node id"), "{e}");
    }

    #[test]
    fn a_node_acknowledges_after_the_commit_and_recovers_after_a_restart() {
        use crate::protocol::op;
        use crate::reactor::{Input, Service};
        use crate::storage::{NodeConfig, StorageNode};
        let dir = TempDir::new("node");
        let cfg = NodeConfig::new("127.0.0.1:7001".into(), "127.0.0.1:7000".parse().unwrap());
        let client = ConnId::new(5, 1);
        let link = ConnId::new(1, 1);
        let ring = "3\nepoch 2\nreplicas 1 1 1\nnode 3 127.0.0.1:7001 up 10,20\n";
        {
            let mut n = StorageNode::new(cfg.clone());
            n.open_data_dir(&dir.0, Fsync::Batch).unwrap();
            let mut out = Vec::new();
            n.step(0, Input::Timer { id: 0 }, &mut out);
            n.test_link_up(1, link, 1, &mut out);
            let joined = Frame::new(op::JOINED, 0, 0, ring);
            n.step(
                2,
                Input::Frame {
                    conn: link,
                    frame: joined,
                },
                &mut out,
            );
            out.clear();
            let put = Frame::new(op::PUT, 9, 0, &b"1 kv"[..]);
            n.step(
                3,
                Input::Frame {
                    conn: client,
                    frame: put,
                },
                &mut out,
            );
            let acked = |out: &[Output]| {
                out.iter().any(|o| {
                    matches!(o, Output::Send { conn, frame }
                    if *conn == client && frame.op == op::OK)
                })
            };
            assert!(!acked(&out), "no ack before the commit: {out:?}");
            assert_eq!(n.durable_mut().unwrap().stats().fsyncs, 0);
            n.turn_end(3, &mut out);
            assert!(acked(&out), "the ack follows the commit: {out:?}");
            assert_eq!(n.durable_mut().unwrap().stats().fsyncs, 1);
            // A GET logs nothing and is answered at once.
            out.clear();
            let get = Frame::new(op::GET, 9, 0, &b"k"[..]);
            n.step(
                4,
                Input::Frame {
                    conn: client,
                    frame: get,
                },
                &mut out,
            );
            assert!(matches!(&out[..], [Output::Send { frame, .. }] if frame.op == op::VALUE));
        }
        // Restarted: the key is back, and so are the id and the ring, before the
        // manager answers.
        let mut n = StorageNode::new(cfg);
        let found = n.open_data_dir(&dir.0, Fsync::Batch).unwrap();
        assert_eq!(
            (found.records, found.keys, found.node_id, found.epoch),
            (1, 1, 3, 2)
        );
        assert_eq!(n.engine().get(b"k").as_deref(), Some(&b"v"[..]));
        let mut out = Vec::new();
        n.step(0, Input::Timer { id: 0 }, &mut out);
        assert_eq!((n.node_id(), n.ring().epoch), (3, 2));
        // Its registration offers that ring to the manager.
        out.clear();
        n.test_link_up(1, link, 1, &mut out);
        let offered = out.iter().find_map(|o| match o {
            Output::Send { frame, .. } if frame.op == op::NODE_JOIN => Some(frame.payload.clone()),
            _ => None,
        });
        let offered = offered.expect("a NODE_JOIN");
        let (proof, rest) = offered.split_at(64);
        assert!(crate::protocol::auth::from_hex::<32>(proof).is_some());
        assert_eq!(
            rest,
            &b" 127.0.0.1:7001 64\nepoch 2\nreplicas 1 1 1\nnode 3 127.0.0.1:7001 up 10,20\n"[..]
        );
    }

    #[test]
    fn turn_end_snapshots_when_asked_and_recovery_sees_it() {
        let dir = TempDir::new("snap");
        let mut engine = Engine::default();
        {
            let (mut d, _) = Durable::open(&dir.0, Fsync::Batch).unwrap();
            for i in 0..10u64 {
                let k = format!("k{i}");
                engine.apply(k.as_bytes(), i + 1, Some(b"v"), None);
                d.log(k.as_bytes(), i + 1, Some(b"v"));
            }
            let mut out = Vec::new();
            d.turn_end(&engine, &mut out);
            // Drop half the keys (as a ring change would), then snapshot.
            engine.remove_where(|h| h % 2 == 0);
            d.want_snapshot();
            d.turn_end(&engine, &mut out);
            assert_eq!(d.stats().snapshots, 1);
        }
        let (_, rec) = Durable::open(&dir.0, Fsync::Batch).unwrap();
        assert_eq!(rec.records.len(), engine.len());
        assert_eq!(rec.from_snapshot, engine.len());
        for r in &rec.records {
            assert_eq!(engine.version(r.key()), r.newest_version());
        }
    }
}

#[cfg(test)]
mod change_tests {
    //! Purges and undone writes: logged, and replayed in order after a restart.
    use super::*;
    use crate::protocol::{op, Frame};
    use crate::reactor::{Input, Service};
    use crate::storage::engine::Entry;
    use crate::storage::{NodeConfig, StorageNode};

    use super::tests::TempDir;

    fn entry(version: u64, value: Option<&[u8]>) -> Entry {
        Entry {
            version,
            value: value.map(Bytes::copy_from_slice),
        }
    }

    /// Replays `dir` into a fresh engine, as a restarting node does.
    fn recovered(dir: &Path) -> Engine {
        let (mut d, rec) = Durable::open(dir, Fsync::Batch).unwrap();
        let mut engine = Engine::default();
        d.replay(rec, &mut engine);
        engine
    }

    #[test]
    fn replay_applies_purges_and_restores_in_log_order() {
        let dir = TempDir::new("replay");
        let mut engine = Engine::default();
        {
            let (mut d, _) = Durable::open(&dir.0, Fsync::Batch).unwrap();
            // What a node does, change by change, logging as it goes.
            let put = |e: &mut Engine, d: &mut Durable, k: &[u8], v: u64, val: Option<&[u8]>| {
                e.apply(k, v, val, None);
                d.log(k, v, val);
            };
            put(&mut engine, &mut d, b"gone", 1, Some(b"x"));
            put(&mut engine, &mut d, b"gone", 2, None);
            assert!(engine.remove_tombstone(b"gone", 2));
            d.log_purge(b"gone", 2);
            put(&mut engine, &mut d, b"fresh", 3, Some(b"refused"));
            assert!(engine.restore(b"fresh", 3, None));
            d.log_restore(b"fresh", 3, None);
            put(&mut engine, &mut d, b"old", 4, Some(b"first"));
            put(&mut engine, &mut d, b"old", 6, Some(b"refused"));
            let prev = entry(4, Some(b"first"));
            assert!(engine.restore(b"old", 6, Some(prev.clone())));
            d.log_restore(b"old", 6, Some(&prev));
            put(&mut engine, &mut d, b"dead", 5, None);
            put(&mut engine, &mut d, b"dead", 7, Some(b"refused"));
            assert!(engine.restore(b"dead", 7, Some(entry(5, None))));
            d.log_restore(b"dead", 7, Some(&entry(5, None)));
            // A key written again after its restore keeps the later write.
            put(&mut engine, &mut d, b"fresh", 8, Some(b"later"));
            let mut out = Vec::new();
            d.turn_end(&engine, &mut out);
        }
        let got = recovered(&dir.0);
        let want = [
            (&b"gone"[..], None),
            (b"fresh", Some(entry(8, Some(b"later")))),
            (b"old", Some(entry(4, Some(b"first")))),
            (b"dead", Some(entry(5, None))),
        ];
        for (key, e) in &want {
            assert_eq!(&got.entry(key), e, "{}", String::from_utf8_lossy(key));
            assert_eq!(&engine.entry(key), e, "the live engine agrees");
        }
        assert_eq!((got.len(), engine.len()), (2, 2));
        // A snapshot of the recovered state says the same.
        {
            let (mut d, rec) = Durable::open(&dir.0, Fsync::Batch).unwrap();
            let mut e = Engine::default();
            d.replay(rec, &mut e);
            d.want_snapshot();
            d.turn_end(&e, &mut Vec::new());
            assert_eq!(d.stats().snapshots, 1);
        }
        let again = recovered(&dir.0);
        for (key, e) in &want {
            assert_eq!(&again.entry(key), e);
        }
    }

    #[test]
    fn a_version_1_directory_is_rewritten_before_anything_is_logged() {
        let dir = TempDir::new("upgrade");
        {
            let (mut d, _) = Durable::open(&dir.0, Fsync::Batch).unwrap();
            d.log(b"k", 1, Some(b"v"));
            d.turn_end(&Engine::default(), &mut Vec::new());
        }
        // Make it what a version-1 build left: the same log, version 1.
        let log = dir.0.join("log-000001");
        let mut bytes = fs::read(&log).unwrap();
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32fast::hash(&bytes[0..20]);
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
        fs::write(&log, &bytes).unwrap();
        let (mut d, rec) = Durable::open(&dir.0, Fsync::Batch).unwrap();
        let mut engine = Engine::default();
        d.replay(rec, &mut engine);
        assert_eq!(d.stats().snapshots, 1, "rewritten as a snapshot");
        assert!(!log.exists() && dir.0.join("snap-000002").exists());
        d.log_purge(b"k", 1);
        d.turn_end(&engine, &mut Vec::new());
        drop(d);
        assert_eq!(recovered(&dir.0).get(b"k").as_deref(), Some(&b"v"[..]));
    }

    const NODE: &str = "127.0.0.1:7001";

    /// A node on `dir` registered with a manager that gave it `ring` (id first).
    fn node(
        dir: &Path,
        ring: &str,
        cfg: impl FnOnce(&mut NodeConfig),
    ) -> (StorageNode, Vec<Output>) {
        let mut c = NodeConfig::new(NODE.into(), "127.0.0.1:7000".parse().unwrap());
        cfg(&mut c);
        let mut n = StorageNode::new(c);
        n.open_data_dir(dir, Fsync::Batch).unwrap();
        let mut out = Vec::new();
        let link = ConnId::new(1, 1);
        n.step(0, Input::Timer { id: 0 }, &mut out);
        n.test_link_up(1, link, 1, &mut out);
        let joined = Frame::new(op::JOINED, 0, 0, ring.to_string());
        n.step(
            2,
            Input::Frame {
                conn: link,
                frame: joined,
            },
            &mut out,
        );
        (n, out)
    }

    fn frame_in(n: &mut StorageNode, now: Millis, conn: ConnId, f: Frame) -> Vec<Output> {
        let mut out = Vec::new();
        n.step(now, Input::Frame { conn, frame: f }, &mut out);
        n.turn_end(now, &mut out);
        out
    }

    /// The one frame with op `op` sent on `conn`.
    fn sent(out: &[Output], conn: ConnId, op: u8) -> Frame {
        let found: Vec<&Frame> = out
            .iter()
            .filter_map(|o| match o {
                Output::Send { conn: c, frame } if *c == conn && frame.op == op => Some(frame),
                _ => None,
            })
            .collect();
        assert_eq!(found.len(), 1, "one op {op} on {conn:?} in {out:?}");
        found[0].clone()
    }

    #[test]
    fn a_collected_tombstone_stays_collected_after_a_restart() {
        let dir = TempDir::new("purge");
        let ring = format!("1\nepoch 2\nreplicas 1 1 1\nnode 1 {NODE} up 10,20\n");
        let (client, peer) = (ConnId::new(5, 1), ConnId::new(6, 1));
        {
            let (mut n, _) = node(&dir.0, &ring, |_| {});
            frame_in(&mut n, 3, client, Frame::new(op::PUT, 1, 0, &b"1 kv"[..]));
            frame_in(&mut n, 4, client, Frame::new(op::DELETE, 2, 0, &b"k"[..]));
            let version = n.engine().entry(b"k").expect("a tombstone").version;
            // A lead that confirmed it on every replica says PURGE.
            n.test_peer_joins(5, peer, "127.0.0.1:7002", &mut Vec::new());
            let mut payload = version.to_be_bytes().to_vec();
            payload.extend_from_slice(b"k");
            let out = frame_in(&mut n, 6, peer, Frame::new(op::PURGE, 0, 2, payload));
            assert_eq!(sent(&out, peer, op::OK).payload.len(), 0);
            assert_eq!(n.engine().entry(b"k"), None);
        }
        let (n, _) = node(&dir.0, &ring, |_| {});
        assert_eq!(n.engine().entry(b"k"), None, "the tombstone is not back");
    }

    #[test]
    fn a_refused_conditional_write_is_never_stored_nor_back_after_a_restart() {
        let dir = TempDir::new("undo");
        // Node 1 (this one) holds every hash but 0, so it leads "k"; node
        // 2 is its replica.
        let ring = format!(
            "1\nepoch 2\nreplicas 2 2 2\nnode 1 {NODE} up {}\nnode 2 127.0.0.1:7002 up 0\n",
            u64::MAX
        );
        let (client, link) = (ConnId::new(5, 1), ConnId::new(7, 1));
        {
            let (mut n, out) = node(&dir.0, &ring, |_| {});
            let tag = out
                .iter()
                .find_map(|o| match o {
                    Output::Connect { tag, .. } if *tag != 1 => Some(*tag),
                    _ => None,
                })
                .expect("a connect to node 2");
            let mut out = Vec::new();
            n.test_link_up(3, link, tag, &mut out);
            // It restarted into a ring that lists it serving, so it is catching
            // up and would wait for a copy from node 2 beyond its own.
            n.end_catch_up();
            let out = frame_in(
                &mut n,
                4,
                client,
                Frame::new(op::CREATE, 1, 0, &b"1 kv"[..]),
            );
            let prepare = sent(&out, link, op::PREPARE);
            let mut promise = crate::protocol::cluster::Reply::Promise {
                committed: None,
                accepted: None,
            }
            .encode();
            promise.client_id = prepare.client_id;
            let out = frame_in(&mut n, 5, link, promise);
            let accept = sent(&out, link, op::ACCEPT);
            assert_eq!(n.engine().entry(b"k"), None, "a proposal is not data");
            // Node 2 promised a higher ballot: the CREATE is refused there.
            let newer = (1u64 << 40).to_string();
            let refusal = Frame::new(op::CONFLICT, accept.client_id, 2, newer);
            frame_in(&mut n, 6, link, refusal);
            assert_eq!(n.engine().entry(b"k"), None, "never stored");
        }
        let (n, _) = node(&dir.0, &ring, |_| {});
        assert_eq!(
            n.engine().entry(b"k"),
            None,
            "and not there after a restart"
        );
    }

    #[test]
    fn replies_piling_up_behind_the_commit_yield_the_connection() {
        use crate::protocol::op;
        use crate::reactor::{Input, Service};
        use crate::storage::{NodeConfig, StorageNode};
        let dir = TempDir::new("yield");
        let cfg = NodeConfig::new("127.0.0.1:7001".into(), "127.0.0.1:7000".parse().unwrap());
        let client = ConnId::new(5, 1);
        let mut n = StorageNode::new(cfg);
        n.open_data_dir(&dir.0, Fsync::Batch).unwrap();
        // A node serves client requests only as a member.
        n.join_alone();
        let mut out = Vec::new();
        let ask = |n: &mut StorageNode, payload: Vec<u8>, op: u8, out: &mut Vec<Output>| {
            out.clear();
            let frame = Frame::new(op, 1, 0, payload);
            n.step(
                5,
                Input::Frame {
                    conn: client,
                    frame,
                },
                out,
            );
            out.iter()
                .any(|o| matches!(o, Output::Yield { conn } if *conn == client))
        };
        let mut big = b"1 b".to_vec();
        big.extend(vec![b'v'; 1 << 20]);
        assert!(!ask(&mut n, big, op::PUT, &mut out));
        n.turn_end(5, &mut out);
        // A write in this turn: every later reply waits for its commit.
        assert!(!ask(&mut n, b"1 x1".to_vec(), op::PUT, &mut out));
        let yields: Vec<bool> = (0..6)
            .map(|_| ask(&mut n, b"b".to_vec(), op::GET, &mut out))
            .collect();
        assert_eq!(yields, [false, false, false, false, true, true]);
        n.turn_end(5, &mut out);
        assert!(!ask(&mut n, b"b".to_vec(), op::GET, &mut out), "a new turn");
    }
}
