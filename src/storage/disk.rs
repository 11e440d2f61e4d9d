//! The file system as the data directory sees it: a small [`Disk`] trait with
//! the few operations the log ([`super::wal`]) and the node's identity and lock
//! ([`super::durable`]) need, and [`RealDisk`], the one over `std::fs`.
//!
//! # Why a trait
//!
//! Every byte a node keeps goes through this interface, so another
//! implementation can stand in for the operating system. The simulator's
//! (`crate::sim::disk`) keeps files in memory, loses writes that were not synced
//! when a node crashes (all of them, or a prefix, tearing the last record), and
//! can make an fsync fail. The log's recovery then runs against exactly the
//! states a real crash can leave.
//!
//! # What the trait promises (and what the log relies on)
//!
//! - Bytes written to a file are durable only after [`DiskFile::sync_data`] (or
//!   `sync_all`) on it returned `Ok`.
//! - A name created, renamed or removed is durable only after
//!   [`Disk::sync_dir`] on its directory returned `Ok`.
//! - After a failed sync nothing is promised about the bytes it covered: the
//!   caller must treat them as lost (see the log's caveats).
//! - Paths are plain: a directory and a file name joined, no `..`, no links.
//!
//! # Caveats
//!
//! - The lock ([`Disk::lock`]) is advisory: on [`RealDisk`] it reads `/proc/PID`
//!   to tell whether the process named in the `LOCK` file is alive.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::Path;

/// An open file: read, write and seek like a [`File`], plus length, truncation
/// and the two syncs.
pub trait DiskFile: Read + Write + Seek + Debug + Send {
    /// The file's length in bytes.
    fn size(&mut self) -> io::Result<u64>;
    /// Cuts (or extends with zeros) the file to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes the file's bytes durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Makes the file's bytes and metadata durable (`fsync`).
    fn sync_all(&mut self) -> io::Result<()>;
}

/// The operations on directories and names a data directory needs.
pub trait Disk: Debug + Send + Sync {
    /// Creates `dir` and its missing parents; its name is made durable too.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Whether `dir` exists as a directory.
    fn is_dir(&self, dir: &Path) -> bool;
    /// The names of the entries of `dir` (not sorted).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading and writing, at offset 0.
    fn open(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Creates (or truncates) a file for reading and writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Reads a whole (small) file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file (`NotFound` if there is none).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the names in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the lock of `dir` for this process, or says who holds it.
    fn lock(&self, dir: &Path) -> io::Result<()>;
    /// Gives the lock of `dir` up (a clean exit; errors are ignored).
    fn unlock(&self, dir: &Path);
}

/// Name of the lock file in a data directory.
pub const LOCK_FILE: &str = "LOCK";

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealDisk;

impl DiskFile for File {
    fn size(&mut self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn sync_all(&mut self) -> io::Result<()> {
        File::sync_all(self)
    }
}

impl Disk for RealDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        // A new directory's own name must be durable too, or a power loss could
        // take the whole directory, acknowledged writes and all.
        fs::create_dir_all(dir)?;
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        self.sync_dir(parent)
    }

    fn is_dir(&self, dir: &Path) -> bool {
        dir.is_dir()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(f))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(f))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock(&self, dir: &Path) -> io::Result<()> {
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
        write().map_err(|e| with_path(e, &path, "cannot write"))
    }

    fn unlock(&self, dir: &Path) {
        let _ = fs::remove_file(dir.join(LOCK_FILE));
    }
}

/// `e` with `what` and the path in front of its message.
pub fn with_path(e: io::Error, path: &Path, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}
