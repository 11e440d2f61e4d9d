//! `gtstore cluster`, the local launcher, as a person meets it: through a
//! pseudo-terminal (a whole line arriving in one write, the terminal closing), with
//! its shell fed from a pipe, and killed outright. Every test checks that no process
//! the launcher started is left behind; a failed test kills what it found.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const GTSTORE: &str = env!("CARGO_BIN_EXE_gtstore");
/// How long a test waits for anything (a start, a reply, a process to go).
const WAIT: Duration = Duration::from_secs(20);

/// The master side of a pseudo-terminal, with everything read from it so far.
struct Pty {
    master: File,
    seen: Vec<u8>,
}

impl Pty {
    /// Opens a new pty pair; returns the master and the slave.
    fn open() -> (Pty, File) {
        let master = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open("/dev/ptmx")
            .expect("open /dev/ptmx");
        let fd = master.as_raw_fd();
        let mut name = [0u8; 128];
        // SAFETY: plain libc calls on a valid fd and a buffer of the given length.
        unsafe {
            assert_eq!(libc::grantpt(fd), 0, "grantpt");
            assert_eq!(libc::unlockpt(fd), 0, "unlockpt");
            assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr().cast(), name.len()), 0);
            let size = libc::winsize {
                ws_row: 40,
                ws_col: 200,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            libc::ioctl(fd, libc::TIOCSWINSZ, &size);
        }
        let end = name.iter().position(|&b| b == 0).unwrap();
        let path = std::str::from_utf8(&name[..end]).unwrap().to_string();
        let slave = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&path)
            .expect("open the pty slave");
        (
            Pty {
                master,
                seen: Vec::new(),
            },
            slave,
        )
    }

    /// Starts `cmd` as the leader of a new session whose controlling terminal is the
    /// slave, with stdin, stdout and stderr on it (as a terminal window would).
    fn spawn(cmd: &mut Command) -> (Pty, Child) {
        let (pty, slave) = Pty::open();
        let io = |f: &File| Stdio::from(OwnedFd::from(f.try_clone().unwrap()));
        cmd.stdin(io(&slave)).stdout(io(&slave)).stderr(io(&slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start under a pty");
        drop(slave);
        (pty, child)
    }

    /// Reads what is there within `wait` (at most one poll).
    fn pump(&mut self, wait: Duration) {
        let mut fds = libc::pollfd {
            fd: self.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut fds, 1, wait.as_millis() as i32) };
        if n <= 0 {
            return;
        }
        let mut buf = [0u8; 4096];
        loop {
            match self.master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Waits until the output after byte `from` contains `want`; returns the offset
    /// just past it.
    #[track_caller]
    fn expect(&mut self, from: usize, want: &str) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            let hay = &self.seen[from.min(self.seen.len())..];
            if let Some(i) = find(hay, want.as_bytes()) {
                return from + i + want.len();
            }
            assert!(
                Instant::now() < deadline,
                "no {want:?} on the terminal; it shows:\n{}",
                String::from_utf8_lossy(&self.seen)
            );
            self.pump(Duration::from_millis(50));
        }
    }

    /// Writes `bytes` in one write, as a terminal does for a fast typist.
    fn type_in(&mut self, bytes: &[u8]) {
        let n = self.master.write(bytes).expect("write to the pty");
        assert_eq!(n, bytes.len(), "one write");
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether `pid` still exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// The pids of the processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(parent) {
            found.push(pid);
        }
    }
    found
}

/// The launcher under test and the pids of the processes it started. On drop (a
/// failed test) everything still there is killed.
struct Launcher {
    child: Child,
    pids: Vec<u32>,
}

impl Launcher {
    /// Waits until the launcher has `n` children, and remembers them.
    #[track_caller]
    fn wait_children(&mut self, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let kids = children_of(self.child.id());
            for pid in &kids {
                if !self.pids.contains(pid) {
                    self.pids.push(*pid);
                }
            }
            if kids.len() >= n {
                return;
            }
            assert!(Instant::now() < deadline, "launcher has {kids:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until none of the processes the launcher started is alive.
    #[track_caller]
    fn assert_all_gone(&self) {
        assert!(!self.pids.is_empty());
        let deadline = Instant::now() + WAIT;
        while self.pids.iter().any(|&p| alive(p)) {
            let left: Vec<u32> = self.pids.iter().copied().filter(|&p| alive(p)).collect();
            assert!(Instant::now() < deadline, "left behind: {left:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the launcher itself to exit; returns its status.
    #[track_caller]
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "the launcher did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for &pid in &self.pids {
            if alive(pid) {
                // SAFETY: a plain kill(2) of a pid this test saw the launcher start.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

/// `gtstore cluster --nodes N --base-port 0` under a pty; waits for its prompt.
fn launch_in_pty(nodes: usize) -> (Pty, Launcher) {
    let mut cmd = Command::new(GTSTORE);
    cmd.args(["cluster", "--nodes", &nodes.to_string(), "--base-port", "0"])
        .env("TERM", "xterm")
        .env("HOME", std::env::temp_dir());
    let (mut pty, child) = Pty::spawn(&mut cmd);
    let mut launcher = Launcher {
        child,
        pids: Vec::new(),
    };
    pty.expect(0, "gtstore> ");
    launcher.wait_children(nodes + 1);
    (pty, launcher)
}

#[test]
fn a_line_typed_in_one_write_runs_at_once() {
    let (mut pty, launcher) = launch_in_pty(1);
    let mut at = pty.seen.len();
    // The logs keep coming above the prompt while a person types.
    for (line, reply) in [("put a 1\r", "OK"), ("get a\r", "1"), ("ping\r", "PONG")] {
        pty.type_in(line.as_bytes());
        at = pty.expect(at, reply);
        at = pty.expect(at, "gtstore> ");
    }
    pty.type_in(b"exit\r");
    let mut launcher = launcher;
    assert!(launcher.wait_exit().success());
    launcher.assert_all_gone();
}
