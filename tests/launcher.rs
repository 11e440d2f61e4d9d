//! `gtstore cluster`, the local launcher, as a person meets it: through a
//! pseudo-terminal (a whole line arriving in one write, the terminal closing), with
//! its shell fed from a pipe, and killed outright. Every test checks that no process
//! the launcher started is left behind; a failed test kills what it found.

mod common;

use common::children_of;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
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
        .env("HOME", std::env::temp_dir())
        // No node cache (it cannot be created under /dev/null).
        .env("XDG_CACHE_HOME", "/dev/null");
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
    // (The value is one no log line holds.)
    for (line, reply) in [
        ("put a v4lue\r", "OK"),
        ("get a\r", "v4lue"),
        ("ping\r", "PONG"),
    ] {
        pty.type_in(line.as_bytes());
        at = pty.expect(at, reply);
        at = pty.expect(at, "gtstore> ");
    }
    // Child logs above the prompt carry one label per process: role, id, port.
    let screen = String::from_utf8_lossy(&pty.seen).into_owned();
    assert!(screen.contains("[manager :"), "{screen}");
    assert!(screen.contains("[node 1 :"), "{screen}");
    pty.type_in(b"exit\r");
    let mut launcher = launcher;
    assert!(launcher.wait_exit().success());
    launcher.assert_all_gone();
}

/// Lines from a pipe, read by a thread.
fn lines_of(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Receives lines until one satisfies `want`; returns it.
#[track_caller]
fn wait_line(rx: &Receiver<String>, what: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if want(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no {what}; saw {seen:#?}"),
        }
    }
}

/// `gtstore cluster` started from `exe` with its shell on a pipe.
fn launch_piped(
    exe: &Path,
    args: &[&str],
) -> (
    Launcher,
    std::process::ChildStdin,
    Receiver<String>,
    Receiver<String>,
) {
    let mut cmd = Command::new(exe);
    cmd.args(["cluster", "--base-port", "0"])
        .args(args)
        // No node cache (it cannot be created under /dev/null).
        .env("XDG_CACHE_HOME", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A freshly copied binary is "busy" while a child forked by another test thread
    // still holds the copy's write descriptor (until that child's exec).
    let deadline = Instant::now() + WAIT;
    let mut child = loop {
        match cmd.spawn() {
            Ok(child) => break child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("start gtstore cluster: {e}"),
        }
    };
    let stdout = lines_of(child.stdout.take().unwrap());
    let stderr = lines_of(child.stderr.take().unwrap());
    let stdin = child.stdin.take().unwrap();
    let launcher = Launcher {
        child,
        pids: Vec::new(),
    };
    (launcher, stdin, stdout, stderr)
}

/// Whether a shell answer is `value`, shown raw or quoted.
fn is_value(line: &str, value: &str) -> bool {
    line == value || line == format!("\"{value}\"")
}

#[test]
fn the_gtstore_binary_alone_runs_a_cluster_and_restarts_a_node() {
    // Only the one binary, in a directory of its own: the children are itself.
    let dir = std::env::temp_dir().join(format!("gtstore-launcher-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let exe = dir.join("gtstore");
    std::fs::copy(GTSTORE, &exe).unwrap();
    let (mut launcher, mut stdin, stdout, stderr) = launch_piped(&exe, &["--nodes", "3"]);
    wait_line(&stdout, "the manager line", |l| {
        l.starts_with("manager at ")
    });
    launcher.wait_children(4);
    assert_eq!(launcher.pids.len(), 4);
    for &pid in &launcher.pids {
        let exe_of = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(exe_of, exe, "child {pid} runs {exe_of:?}");
    }
    // Node 3 is killed and dropped; node 2 is killed and restarted on its port with
    // its data; the keys stay readable.
    stdin
        .write_all(b"put a 1\nput b 2\nkill 3\ndrop 3\n")
        .unwrap();
    for want in ["OK", "OK"] {
        assert_eq!(wait_line(&stdout, want, |_| true), want);
    }
    let killed = wait_line(&stdout, "kill's answer", |_| true);
    assert!(
        killed.starts_with("[node 3 :") && killed.ends_with("killed"),
        "{killed}"
    );
    let dropped = wait_line(&stdout, "drop's answer", |_| true);
    assert!(
        dropped.starts_with("node 3 ") && dropped.contains("removed from the ring"),
        "{dropped}"
    );
    stdin.write_all(b"kill 2\nrestart 2\n").unwrap();
    let killed = wait_line(&stdout, "kill's answer", |_| true);
    assert!(
        killed.starts_with("[node 2 :") && killed.ends_with("killed"),
        "{killed}"
    );
    let port = killed["[node 2 :".len()..]
        .split(']')
        .next()
        .unwrap()
        .to_string();
    let again = wait_line(&stdout, "restart's answer", |_| true);
    assert!(
        again.starts_with(&format!("[node 2 :{port}] up again")),
        "{again}"
    );
    // A read while node 2 catches up may get UNAVAILABLE, which the guarantees allow.
    for (key, value) in [("a", "1"), ("b", "2")] {
        let deadline = Instant::now() + WAIT;
        loop {
            stdin.write_all(format!("get {key}\n").as_bytes()).unwrap();
            let answer = wait_line(&stdout, "get's answer", |_| true);
            if is_value(&answer, value) {
                break;
            }
            assert!(answer.contains("UNAVAILABLE"), "get {key}: {answer}");
            assert!(Instant::now() < deadline, "get {key}: {answer}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    stdin.write_all(b"exit\n").unwrap();
    assert!(launcher.wait_exit().success());
    launcher.assert_all_gone();
    // One label per process, naming its id and port.
    let log: Vec<String> = stderr.try_iter().collect();
    assert!(log.iter().any(|l| l.starts_with("[manager :")), "{log:?}");
    for id in 1..=3 {
        let label = format!("[node {id} :");
        assert!(
            log.iter().any(|l| l.starts_with(&label)),
            "no {label} in {log:?}"
        );
    }
    assert!(!log.iter().any(|l| l.contains("storage #")), "{log:?}");
    // The scratch data directories went with the cluster.
    let scratch = format!("gtstore-cluster-{}-", launcher.child.id());
    let left = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(&scratch));
    assert!(!left, "scratch directory left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn closing_the_terminal_stops_every_child() {
    let (pty, mut launcher) = launch_in_pty(2);
    drop(pty);
    launcher.assert_all_gone();
    // It ends by itself (the signal, or the shell seeing the terminal go), not by a
    // crash.
    let status = launcher.wait_exit();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), None, "{status:?}");
}

#[test]
fn sigterm_to_the_launcher_stops_every_child() {
    let (mut launcher, _stdin, stdout, _stderr) =
        launch_piped(Path::new(GTSTORE), &["--nodes", "2"]);
    wait_line(&stdout, "the manager line", |l| {
        l.starts_with("manager at ")
    });
    launcher.wait_children(3);
    // SAFETY: kill(2) of the child this test started.
    unsafe { libc::kill(launcher.child.id() as i32, libc::SIGTERM) };
    launcher.assert_all_gone();
    assert_eq!(launcher.wait_exit().code(), Some(128 + libc::SIGTERM));
}

#[test]
fn children_die_with_a_killed_launcher() {
    let (mut launcher, _stdin, stdout, _stderr) =
        launch_piped(Path::new(GTSTORE), &["--nodes", "2"]);
    wait_line(&stdout, "the manager line", |l| {
        l.starts_with("manager at ")
    });
    launcher.wait_children(3);
    // A shell command starts one more node: its parent-death signal must hold too
    // (it is started from the launcher's main thread).
    let mut stdin = _stdin;
    stdin.write_all(b"add\n").unwrap();
    wait_line(&stdout, "add's answer", |l| l.contains("up (pid"));
    launcher.wait_children(4);
    launcher.child.kill().unwrap();
    launcher.child.wait().unwrap();
    launcher.assert_all_gone();
}

/// Runs `gtstore ARGS`, expecting clap's usage error.
#[track_caller]
fn refused(args: &[&str], says: &str) {
    let out = Command::new(GTSTORE)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "gtstore {args:?}: {err}");
    assert!(err.contains(says), "gtstore {args:?}: {err}");
}

#[test]
fn a_flag_that_does_not_apply_is_an_error() {
    refused(&["cluster", "--manager", "127.0.0.1:1"], "--manager");
    refused(&["cluster", "--node", "127.0.0.1:1"], "--node");
    refused(&["--manager", "127.0.0.1:1", "cluster"], "--manager");
    refused(&["--node", "127.0.0.1:1", "storage"], "--node");
    refused(&["--timeout", "3", "manager"], "--timeout");
    refused(&["manager", "--tokens", "3"], "--tokens");
    refused(&["storage", "--replicas", "3"], "--replicas");
}

/// Waits for the `listening on` line of a server started with RUST_LOG=warn.
fn listening_line(bin: &str, args: &[&str]) -> String {
    let mut child = Command::new(bin)
        .args(args)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stderr.take().unwrap());
    let line = std::panic::catch_unwind(|| {
        wait_line(&lines, "listening line", |l| l.contains(" listening on "))
    });
    let _ = child.kill();
    let _ = child.wait();
    line.unwrap_or_else(|_| panic!("{bin} {args:?}: no listening line"))
}

#[test]
fn the_listening_line_shows_whatever_rust_log_says() {
    for (bin, args) in [
        (GTSTORE, &["manager"][..]),
        (env!("CARGO_BIN_EXE_gtstore-manager"), &[][..]),
        (GTSTORE, &["storage", "--manager", "127.0.0.1:1"][..]),
        (
            env!("CARGO_BIN_EXE_gtstore-storage"),
            &["--manager", "127.0.0.1:1"][..],
        ),
    ] {
        let line = listening_line(bin, args);
        let at = line
            .find(" listening on 127.0.0.1:")
            .unwrap_or_else(|| panic!("{line}"));
        let port: u16 = line[at + 24..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_ne!(port, 0, "{line}");
    }
}
