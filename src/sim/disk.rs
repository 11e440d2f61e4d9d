//! A simulated disk: files in memory, each with a durable part and the bytes
//! written since its last sync, and a directory of names with the same split.
//!
//! It implements [`Disk`], so a node's data directory (the log, its snapshots,
//! the identity file) can live on it inside the simulator. What it models:
//!
//! - **Unsynced writes.** A file's bytes become durable at
//!   [`DiskFile::sync_data`]; a name created, renamed or removed becomes durable
//!   at [`Disk::sync_dir`] of its directory. [`SimDisk::crash`] (a power loss,
//!   or a process crash on a kernel that loses its page cache) takes every file
//!   and name back to its durable state.
//! - **Torn writes.** With [`DiskFaults::torn`], a crash keeps a random prefix of
//!   each file's unsynced appended bytes instead of none of them, so the last
//!   record of a log may be cut anywhere: recovery must find it by its length
//!   and checksum and cut it.
//! - **Failing fsync.** With [`DiskFaults::fsync_fails`], a sync fails with that
//!   probability (and [`SimDisk::fail_next_sync`] makes the next one fail).
//!   A failed file sync leaves its bytes unsynced; a failed directory sync
//!   leaves its names unsynced. The node's answer is to stop (see
//!   [`crate::storage::durable`]); the simulator may restart it, and the
//!   restart sees what was durable.
//!
//! Randomness comes from the disk's own seeded [`Rng`], so a run stays a pure
//! function of its seed. Directories are made durable when created.
//!
//! Caveats: a crash keeps only a *prefix* of a file's unsynced tail (a real disk
//! may keep later pages and lose earlier ones; the log's checksums cut at the
//! first damaged record either way); an unsynced truncation or overwrite is
//! undone whole; the lock is a no-op (one process per simulated disk).

use super::rng::Rng;
use crate::storage::disk::{Disk, DiskFile};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The faults a simulated disk injects.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskFaults {
    /// A crash keeps a random prefix of each file's unsynced appended bytes.
    pub torn: bool,
    /// Probability that a sync (file or directory) fails.
    pub fsync_fails: f64,
}

/// Counters of what the disk did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Successful file syncs.
    pub syncs: u64,
    /// Syncs that were made to fail.
    pub failed_syncs: u64,
    /// Crashes.
    pub crashes: u64,
    /// Unsynced bytes dropped by crashes.
    pub lost_bytes: u64,
    /// Crashes that kept part of a file's unsynced tail.
    pub torn: u64,
}

/// A file's contents: what a read sees and what a crash leaves. The common
/// case, appends after the last sync, costs no copy: the durable part is the
/// first `synced` bytes of `data`. Only an unsynced change below that (an
/// overwrite, a truncation) saves a copy of the durable bytes first.
#[derive(Debug, Default, Clone)]
struct Inode {
    data: Vec<u8>,
    synced: usize,
    /// The durable contents, once an unsynced change touched them.
    saved: Option<Vec<u8>>,
}

impl Inode {
    /// About to change `data` from offset `at`: keep the durable bytes if the
    /// change reaches them.
    fn touch(&mut self, at: usize) {
        if at < self.synced && self.saved.is_none() {
            self.saved = Some(self.data[..self.synced].to_vec());
        }
    }

    fn sync(&mut self) {
        self.synced = self.data.len();
        self.saved = None;
    }
}

#[derive(Debug)]
struct State {
    rng: Rng,
    faults: DiskFaults,
    fail_next: bool,
    /// What a lookup sees: path -> inode.
    names: BTreeMap<PathBuf, u64>,
    /// What a crash leaves: the names as of each directory's last sync.
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    files: HashMap<u64, Inode>,
    next_inode: u64,
    stats: DiskStats,
}

impl State {
    /// Whether this sync fails (counted).
    fn sync_fails(&mut self) -> bool {
        let fail = self.fail_next || self.rng.chance(self.faults.fsync_fails);
        self.fail_next = false;
        if fail {
            self.stats.failed_syncs += 1;
        }
        fail
    }
}

/// A simulated disk, shared by handle: clones are the same disk.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

/// The message of the error a failed simulated sync returns.
pub const SIM_FSYNC_FAILURE: &str = "simulated fsync failure";

fn failed_sync() -> io::Error {
    io::Error::other(SIM_FSYNC_FAILURE)
}

impl SimDisk {
    /// An empty disk whose random choices follow `seed`.
    pub fn new(seed: u64, faults: DiskFaults) -> SimDisk {
        let state = State {
            rng: Rng::new(seed),
            faults,
            fail_next: false,
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            dirs: BTreeSet::new(),
            files: HashMap::new(),
            next_inode: 1,
            stats: DiskStats::default(),
        };
        SimDisk {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // One thread drives the simulation; a poisoned lock means a test
        // already panicked, and its state is as good as any.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loses what was not synced: every name goes back to its directory's last
    /// sync, every file to its last sync (plus, with [`DiskFaults::torn`], a
    /// random prefix of the bytes appended after it).
    pub fn crash(&self) {
        let mut s = self.lock_state();
        let s = &mut *s;
        s.stats.crashes += 1;
        s.names = s.durable_names.clone();
        let live: BTreeSet<u64> = s.names.values().copied().collect();
        s.files.retain(|ino, _| live.contains(ino));
        let mut inodes: Vec<u64> = s.files.keys().copied().collect();
        inodes.sort_unstable(); // the rng draws in a fixed order
        for ino in inodes {
            let f = s.files.get_mut(&ino).expect("listed");
            if let Some(saved) = f.saved.take() {
                // An unsynced overwrite or truncation is undone whole.
                f.data = saved;
            } else {
                let mut keep = f.synced;
                let extra = (f.data.len() - keep) as u64;
                if extra > 0 && s.faults.torn {
                    let kept = s.rng.below(extra + 1) as usize;
                    s.stats.torn += u64::from(kept > 0);
                    keep += kept;
                }
                s.stats.lost_bytes += (f.data.len() - keep) as u64;
                f.data.truncate(keep);
            }
            f.sync();
        }
    }

    /// Makes the next sync fail, whatever the odds.
    pub fn fail_next_sync(&self) {
        self.lock_state().fail_next = true;
    }

    /// Sets the faults from now on.
    pub fn set_faults(&self, faults: DiskFaults) {
        self.lock_state().faults = faults;
    }

    /// What the disk did so far.
    pub fn stats(&self) -> DiskStats {
        self.lock_state().stats
    }

    /// The contents of `path` as a read sees them (tests).
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock_state();
        let ino = s.names.get(path)?;
        s.files.get(ino).map(|f| f.data.clone())
    }

    /// Replaces the contents of `path` (tests that damage a file), synced.
    pub fn set_contents(&self, path: &Path, data: Vec<u8>) {
        let mut s = self.lock_state();
        if let Some(&ino) = s.names.get(path) {
            let f = s.files.get_mut(&ino).expect("named");
            f.data = data;
            f.sync();
        }
    }

    fn handle(&self, ino: u64) -> Box<dyn DiskFile> {
        Box::new(SimFile {
            state: self.state.clone(),
            ino,
            pos: 0,
        })
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock_state();
        for d in dir.ancestors() {
            s.dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    fn is_dir(&self, dir: &Path) -> bool {
        self.lock_state().dirs.contains(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock_state();
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let names = s.names.keys().filter(|p| p.parent() == Some(dir));
        Ok(names
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let ino = *self
            .lock_state()
            .names
            .get(path)
            .ok_or_else(|| not_found(path))?;
        Ok(self.handle(ino))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut s = self.lock_state();
        let parent = path.parent().unwrap_or(Path::new(""));
        if !s.dirs.contains(parent) {
            return Err(not_found(parent));
        }
        let ino = match s.names.get(path) {
            Some(&ino) => {
                let f = s.files.get_mut(&ino).expect("named");
                f.touch(0);
                f.data.clear();
                ino
            }
            None => {
                let ino = s.next_inode;
                s.next_inode += 1;
                s.files.insert(ino, Inode::default());
                s.names.insert(path.to_path_buf(), ino);
                ino
            }
        };
        drop(s);
        Ok(self.handle(ino))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.contents(path).ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock_state();
        let ino = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock_state();
        s.names
            .remove(path)
            .map(drop)
            .ok_or_else(|| not_found(path))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock_state();
        if s.sync_fails() {
            return Err(failed_sync());
        }
        let s = &mut *s;
        s.durable_names.retain(|p, _| p.parent() != Some(dir));
        for (p, &ino) in &s.names {
            if p.parent() == Some(dir) {
                s.durable_names.insert(p.clone(), ino);
            }
        }
        Ok(())
    }

    fn lock(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn unlock(&self, _dir: &Path) {}
}

/// An open file on a [`SimDisk`].
#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    pos: u64,
}

impl SimFile {
    fn with<T>(&mut self, f: impl FnOnce(&mut State, u64, &mut u64) -> T) -> T {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s, self.ino, &mut self.pos)
    }
}

/// The inode's contents; a file removed and lost in a crash reads as empty.
fn inode(s: &mut State, ino: u64) -> &mut Inode {
    s.files.entry(ino).or_default()
}

impl Read for SimFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.with(|s, ino, pos| {
            let data = &inode(s, ino).data;
            let at = (*pos as usize).min(data.len());
            let n = buf.len().min(data.len() - at);
            buf[..n].copy_from_slice(&data[at..at + n]);
            *pos += n as u64;
            Ok(n)
        })
    }
}

impl Write for SimFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.with(|s, ino, pos| {
            let f = inode(s, ino);
            let at = *pos as usize;
            f.touch(at);
            let data = &mut f.data;
            if data.len() < at + buf.len() {
                data.resize(at + buf.len(), 0);
            }
            data[at..at + buf.len()].copy_from_slice(buf);
            *pos += buf.len() as u64;
            Ok(buf.len())
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for SimFile {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.with(|s, ino, pos| {
            let len = inode(s, ino).data.len() as i128;
            let at = match to {
                SeekFrom::Start(n) => i128::from(n),
                SeekFrom::End(d) => len + i128::from(d),
                SeekFrom::Current(d) => i128::from(*pos) + i128::from(d),
            };
            let at = u64::try_from(at)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seek before 0"))?;
            *pos = at;
            Ok(at)
        })
    }
}

impl DiskFile for SimFile {
    fn size(&mut self) -> io::Result<u64> {
        self.with(|s, ino, _| Ok(inode(s, ino).data.len() as u64))
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.with(|s, ino, _| {
            let f = inode(s, ino);
            f.touch(len as usize);
            f.data.resize(len as usize, 0);
            Ok(())
        })
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.with(|s, ino, _| {
            if s.sync_fails() {
                return Err(failed_sync());
            }
            s.stats.syncs += 1;
            inode(s, ino).sync();
            Ok(())
        })
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

#[cfg(test)]
mod tests;
