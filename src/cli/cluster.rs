//! `gtstore cluster`: a whole cluster on this machine, for trying things out.
//!
//! The launcher starts `gtstore-manager` and N `gtstore-storage` processes (found
//! next to the running `gtstore` unless `--bin-dir` says where), all on 127.0.0.1.
//! A thread per child pipe re-prints the child's log with a prefix (`[manager] `,
//! `[node 2] `) and watches for the line that says `listening on HOST:PORT`, which is
//! how the launcher learns the ports when they are picked by the OS (`--base-port
//! 0`). Once every process listens and the manager's STATUS shows every node up, it
//! prints where everything is and opens the shell, with extra commands: `add`
//! (one more storage node), `drop ID` (the manager's DROP: a graceful leave), `kill ID`
//! (SIGKILL: a crash) and `nodes`.
//!
//! Cleaning up is the point of the design. The children run in their own process
//! group, so a Ctrl-C on the terminal reaches only the launcher, which catches
//! SIGINT, SIGTERM and SIGHUP as a flag and leaves the shell. Every child is owned by
//! a [`Cluster`] whose `Drop` stops them all: SIGINT, up to 3 s of grace, then
//! SIGKILL, and each is reaped. SIGINT, not SIGTERM: to a storage node SIGTERM
//! means "hand your data over and leave the ring" (what `drop ID` asks through the
//! manager), not what stopping the whole cluster wants (every node would try to hand
//! its data over); SIGINT is the servers' "stop now". That runs on every way out,
//! including an error half-way through the start. The manager is started with
//! `--recovery-ms 0`: a fresh cluster has no membership to recover.
//!
//! Caveats: a SIGKILL of the launcher itself cannot be caught; its children then
//! keep running (they are in another process group) and must be stopped by hand.
//! Unix only.

use super::shell::{Extras, Shell};
use super::status::{self, NodeInfo};
use super::{Reply, Request, Session, Target, EXIT_ERROR, EXIT_OK};
use crate::client::Connection;
use crate::protocol::op;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long to wait for a process to listen, or for the nodes to be up.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a child has to exit after SIGINT before it gets SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// The address every process listens on.
pub const HOST: &str = "127.0.0.1";

/// What `gtstore cluster` was asked for (these are its flags).
#[derive(clap::Args, Clone, Debug)]
pub struct ClusterConfig {
    /// Storage nodes to start.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// The manager's port; node k gets PORT+k. 0: let the OS pick free ports.
    #[arg(long, value_name = "PORT", default_value_t = crate::DEFAULT_MANAGER_PORT)]
    pub base_port: u16,
    /// Tokens (virtual nodes) per storage node [default: the node's].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub tokens: Option<u32>,
    /// Where gtstore-manager and gtstore-storage are [default: next to gtstore].
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
}

/// Starts the cluster, runs the shell on it (each request with `timeout`), stops
/// it. Returns the exit status.
pub fn run(cfg: ClusterConfig, timeout: Duration) -> u8 {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("gtstore: cluster: cannot catch signal {sig}: {e}");
            return EXIT_ERROR;
        }
    }
    let result = Cluster::start(cfg, timeout, Arc::clone(&stop)).and_then(|mut cluster| {
        print!("{}", cluster.describe());
        println!(
            "manager at {0}; from another terminal: gtstore --manager {0} status",
            cluster.manager_addr
        );
        let _ = io::stdout().flush();
        let target = cluster.target.clone();
        let outcome = Shell::new(target, Some(&mut cluster)).run(Some(&stop));
        if stop.load(Ordering::SeqCst) {
            eprintln!("gtstore: interrupted");
        }
        cluster.shutdown();
        outcome.map_err(|e| format!("shell: {e}"))
    });
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("gtstore: cluster: {e}");
            EXIT_ERROR
        }
    }
}

/// Where the launcher prints child logs: stderr, or the shell's external printer
/// while the line editor is active (so a log line does not garble the prompt).
#[derive(Clone, Default)]
struct LogSink(Arc<Mutex<Option<Box<dyn rustyline::ExternalPrinter + Send>>>>);

impl LogSink {
    fn print(&self, line: String) {
        let mut printer = lock(&self.0);
        if let Some(p) = printer.as_mut() {
            if p.print(format!("{line}\n")).is_ok() {
                return;
            }
            *printer = None;
        }
        drop(printer);
        eprintln!("{line}");
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the pipe readers tell the launcher.
enum Event {
    /// Process `index` logged that it listens on `addr`.
    Listening { index: usize, addr: String },
}

/// The role of a launched process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Manager,
    Node,
}

/// One launched process.
struct Proc {
    role: Role,
    /// Prefix of its log lines, shared with its readers (it changes once the node's
    /// id is known).
    label: Arc<Mutex<String>>,
    child: Child,
    /// Where it listens, once it said so.
    addr: Option<String>,
    /// Its node id as STATUS reports it (0 for the manager).
    id: Option<u32>,
    /// Its exit status, once reaped.
    exited: Option<ExitStatus>,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reaps the process if it has exited; true if it is gone.
    fn reap(&mut self) -> bool {
        if self.exited.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
            }
        }
        self.exited.is_some()
    }

    /// Sends `signal` (`TERM`, `INT`) with the `kill` program, falling back to
    /// SIGKILL if that fails.
    fn signal(&mut self, signal: &str) {
        if self.reap() {
            return;
        }
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !sent {
            let _ = self.child.kill();
        }
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        if !self.reap() {
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.exited = Some(status);
            }
        }
    }

    fn state(&self) -> String {
        match self.exited {
            None => "running".into(),
            Some(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                (Some(c), _) => format!("exited ({c})"),
                (None, Some(sig)) => format!("killed (signal {sig})"),
                _ => "exited".into(),
            },
        }
    }
}

/// A running local cluster. Dropping it stops and reaps every process.
pub struct Cluster {
    cfg: ClusterConfig,
    bin_dir: PathBuf,
    procs: Vec<Proc>,
    readers: Vec<JoinHandle<()>>,
    events_tx: Sender<Event>,
    events: Receiver<Event>,
    sink: LogSink,
    stop: Arc<AtomicBool>,
    /// Storage nodes started so far (for `--base-port` numbering).
    started_nodes: u32,
    manager_addr: String,
    target: Target,
}

impl Cluster {
    /// Starts the manager and the nodes and waits until they are all up. On error,
    /// whatever was started is stopped again (by `Drop`).
    pub fn start(
        cfg: ClusterConfig,
        timeout: Duration,
        stop: Arc<AtomicBool>,
    ) -> Result<Cluster, String> {
        if cfg.nodes == 0 {
            return Err("--nodes must be at least 1".into());
        }
        if cfg.base_port != 0 && u32::from(cfg.base_port) + cfg.nodes > u32::from(u16::MAX) {
            return Err(format!(
                "--base-port {} leaves no room for {} nodes",
                cfg.base_port, cfg.nodes
            ));
        }
        let bin_dir = match &cfg.bin_dir {
            Some(d) => d.clone(),
            None => std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .ok_or("cannot tell where gtstore runs from; give --bin-dir")?,
        };
        for name in ["gtstore-manager", "gtstore-storage"] {
            if !bin_dir.join(name).is_file() {
                return Err(format!(
                    "{name} not found in {} (build it, or give --bin-dir)",
                    bin_dir.display()
                ));
            }
        }
        let (events_tx, events) = mpsc::channel();
        let mut cluster = Cluster {
            target: Target {
                manager: String::new(),
                node: None,
                timeout,
            },
            cfg,
            bin_dir,
            procs: Vec::new(),
            readers: Vec::new(),
            events_tx,
            events,
            sink: LogSink::default(),
            stop,
            started_nodes: 0,
            manager_addr: String::new(),
        };
        let port = cluster.cfg.base_port.to_string();
        let m = cluster.spawn(
            Role::Manager,
            "manager".into(),
            // A fresh cluster: there is no membership to recover, so the
            // manager need not hold brand-new nodes back.
            &["--host", HOST, "--port", &port, "--recovery-ms", "0"],
        )?;
        cluster.manager_addr = cluster.wait_listening(&[m])?;
        cluster.target.manager = cluster.manager_addr.clone();
        let mut started = Vec::new();
        for _ in 0..cluster.cfg.nodes {
            started.push(cluster.spawn_node()?);
        }
        cluster.wait_listening(&started)?;
        cluster.wait_up(&started)?;
        Ok(cluster)
    }

    /// Starts a child with its pipes read by logging threads.
    fn spawn(&mut self, role: Role, label: String, args: &[&str]) -> Result<usize, String> {
        let name = match role {
            Role::Manager => "gtstore-manager",
            Role::Node => "gtstore-storage",
        };
        let mut child = Command::new(self.bin_dir.join(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let index = self.procs.len();
        let label = Arc::new(Mutex::new(label));
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ];
        self.procs.push(Proc {
            role,
            label: Arc::clone(&label),
            child,
            addr: None,
            id: if role == Role::Manager { Some(0) } else { None },
            exited: None,
        });
        for (n, pipe) in pipes.into_iter().enumerate() {
            let Some(pipe) = pipe else { continue };
            let reader = LogReader {
                index,
                label: Arc::clone(&label),
                sink: self.sink.clone(),
                events: self.events_tx.clone(),
                announce_exit: n == 0,
            };
            let handle = std::thread::Builder::new()
                .name(format!("log-{index}-{n}"))
                .spawn(move || reader.run(pipe))
                .map_err(|e| format!("cannot start a log thread: {e}"))?;
            self.readers.push(handle);
        }
        Ok(index)
    }

    /// Starts one more storage node; returns its index.
    fn spawn_node(&mut self) -> Result<usize, String> {
        self.started_nodes += 1;
        let k = self.started_nodes;
        let port = match self.cfg.base_port {
            0 => 0,
            base => u32::from(base) + k,
        };
        if port > u32::from(u16::MAX) {
            return Err("no port left above --base-port".into());
        }
        let port = port.to_string();
        let manager = self.manager_addr.clone();
        let mut args = vec!["--host", HOST, "--port", &port, "--manager", &manager];
        let tokens = self.cfg.tokens.map(|t| t.to_string());
        if let Some(t) = &tokens {
            args.extend(["--tokens", t.as_str()]);
        }
        self.spawn(Role::Node, format!("storage #{k}"), &args)
    }

    /// Takes in what the log readers reported.
    fn drain_events(&mut self, wait: Duration) {
        let mut next = self.events.recv_timeout(wait).ok();
        while let Some(Event::Listening { index, addr }) = next {
            if let Some(p) = self.procs.get_mut(index) {
                p.addr.get_or_insert(addr);
            }
            next = self.events.try_recv().ok();
        }
    }

    fn check_stop(&self) -> Result<(), String> {
        if self.stop.load(Ordering::SeqCst) {
            Err("interrupted".into())
        } else {
            Ok(())
        }
    }

    fn label(&self, index: usize) -> String {
        lock(&self.procs[index].label).clone()
    }

    /// Waits until every process in `which` has logged where it listens; returns the
    /// address of the last one.
    fn wait_listening(&mut self, which: &[usize]) -> Result<String, String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.drain_events(Duration::from_millis(50));
            if which.iter().all(|&i| self.procs[i].addr.is_some()) {
                let last = which.last().expect("at least one process");
                return Ok(self.procs[*last].addr.clone().unwrap_or_default());
            }
            self.check_stop()?;
            for &i in which {
                if self.procs[i].addr.is_none() && self.procs[i].reap() {
                    return Err(format!(
                        "{} {} before it listened (see its log above)",
                        self.label(i),
                        self.procs[i].state()
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no `listening on` log line after {} s",
                    START_TIMEOUT.as_secs()
                ));
            }
        }
    }

    /// Asks the manager for STATUS.
    fn status(&self) -> Result<serde_json::Value, String> {
        let mut s = Session::new(self.target.clone());
        match s.execute(&Request::Status) {
            Ok(Reply::Text(t)) => status::parse_status(&t),
            Ok(other) => Err(format!("unexpected reply {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Learns node ids from STATUS by matching addresses.
    fn learn_ids(&mut self, nodes: &[NodeInfo]) {
        for p in self.procs.iter_mut().filter(|p| p.role == Role::Node) {
            let Some(addr) = &p.addr else { continue };
            if let Some(n) = nodes.iter().rev().find(|n| &n.addr == addr) {
                if p.id != Some(n.id) {
                    p.id = Some(n.id);
                    *lock(&p.label) = format!("node {}", n.id);
                }
            }
        }
    }

    /// Waits until STATUS shows the nodes `which` up, and at least as many live
    /// nodes as are running here.
    fn wait_up(&mut self, which: &[usize]) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last;
        loop {
            self.check_stop()?;
            let running = self
                .procs
                .iter_mut()
                .filter(|p| p.role == Role::Node)
                .map(|p| !p.reap())
                .filter(|&alive| alive)
                .count() as u64;
            match self.status() {
                Ok(st) => {
                    let nodes = status::nodes(&st);
                    self.learn_ids(&nodes);
                    let up = |i: &usize| {
                        let addr = self.procs[*i].addr.as_deref();
                        nodes
                            .iter()
                            .any(|n| Some(n.addr.as_str()) == addr && n.state == "up")
                    };
                    let live = status::live_nodes(&st);
                    if live >= running && which.iter().all(up) {
                        return Ok(());
                    }
                    last = format!("{live} of {running} nodes live");
                }
                Err(e) => last = e,
            }
            for &i in which {
                if self.procs[i].reap() {
                    return Err(format!("{} {}", self.label(i), self.procs[i].state()));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the manager's STATUS after {} s: {last}",
                    START_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A table of the launched processes.
    pub fn describe(&mut self) -> String {
        let rows: Vec<Vec<String>> = self
            .procs
            .iter_mut()
            .map(|p| {
                p.reap();
                vec![
                    match p.role {
                        Role::Manager => "manager".into(),
                        Role::Node => "node".into(),
                    },
                    p.id.map_or("?".into(), |id| id.to_string()),
                    p.addr.clone().unwrap_or_else(|| "?".into()),
                    p.pid().to_string(),
                    p.state(),
                ]
            })
            .collect();
        status::table(
            &["PROCESS", "ID", "ADDRESS", "PID", "STATE"],
            &[false, true, false, true, false],
            &rows,
        )
    }

    /// Finds the running node with id `arg`, refreshing ids from STATUS if needed.
    /// Asks the manager to drop node `id` (op DROP): the node hands its data over,
    /// leaves the ring and exits.
    fn drop_node(&self, id: &[u8]) -> Result<(), String> {
        let timeout = self.target.timeout;
        let mut m = Connection::connect(&self.manager_addr, timeout).map_err(|e| e.to_string())?;
        match m.call(op::DROP, 0, &[id]) {
            Ok(f) if f.op == op::OK => Ok(()),
            Ok(f) => Err(format!("the manager answered {}", op::name(f.op))),
            Err(e) => Err(e.to_string()),
        }
    }

    fn find_node(&mut self, arg: &[u8]) -> Result<usize, String> {
        let id: u32 = std::str::from_utf8(arg)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "ID must be a node id (see nodes)".to_string())?;
        let find = |procs: &[Proc]| {
            procs
                .iter()
                .rposition(|p| p.role == Role::Node && p.id == Some(id))
        };
        let index = match find(&self.procs) {
            Some(i) => i,
            None => {
                if let Ok(st) = self.status() {
                    self.learn_ids(&status::nodes(&st));
                }
                find(&self.procs).ok_or_else(|| format!("no launched node has id {id}"))?
            }
        };
        if self.procs[index].reap() {
            return Err(format!(
                "node {id} is not running ({})",
                self.procs[index].state()
            ));
        }
        Ok(index)
    }

    fn add(&mut self) -> Result<String, String> {
        let i = self.spawn_node()?;
        let started = self.wait_listening(&[i]).and_then(|_| self.wait_up(&[i]));
        if let Err(e) = started {
            self.procs[i].kill();
            return Err(format!("the new node did not come up: {e}"));
        }
        let p = &self.procs[i];
        Ok(format!(
            "node {} up at {} (pid {})",
            p.id.map_or("?".into(), |id| id.to_string()),
            p.addr.as_deref().unwrap_or("?"),
            p.pid()
        ))
    }

    /// Stops every process, the nodes first and then the manager: SIGINT, up to
    /// [`STOP_GRACE`], SIGKILL; reaps them and joins the log threads. Safe to call more than once.
    pub fn shutdown(&mut self) {
        let running = self
            .procs
            .iter_mut()
            .map(|p| !p.reap())
            .filter(|&a| a)
            .count();
        if running > 0 {
            self.sink
                .print(format!("gtstore: stopping {running} process(es)"));
        }
        // Nodes first, while the manager can still hear them leave; then the manager.
        for role in [Role::Node, Role::Manager] {
            let mut group: Vec<&mut Proc> =
                self.procs.iter_mut().filter(|p| p.role == role).collect();
            for p in group.iter_mut() {
                p.signal("INT");
            }
            let deadline = Instant::now() + STOP_GRACE;
            while group.iter_mut().any(|p| !p.reap()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            for p in group.iter_mut().filter(|p| p.exited.is_none()) {
                self.sink.print(format!(
                    "gtstore: {} (pid {}) still running after SIGINT; killing it",
                    lock(&p.label),
                    p.pid()
                ));
                p.kill();
            }
        }
        // The pipes close when the children exit, so the readers end soon; do not
        // hang on one whose pipe some other process still holds.
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.readers.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for h in self.readers.drain(..) {
            if h.is_finished() {
                let _ = h.join();
            }
        }
        *lock(&self.sink.0) = None;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Extras for Cluster {
    fn help(&self) -> &str {
        "cluster commands:
  add                  start one more storage node
  drop ID              graceful leave of node ID (the manager's DROP)
  kill ID              SIGKILL node ID (crash)
  nodes                the launched processes
"
    }

    fn run(&mut self, cmd: &str, args: &[Vec<u8>], out: &mut dyn Write) -> Option<io::Result<()>> {
        let result = match (cmd, args) {
            ("add", []) => self.add(),
            ("drop", [id]) => self.find_node(id).and_then(|i| {
                self.drop_node(id)?;
                Ok(format!(
                    "{} (pid {}): handing its data over, then leaving",
                    self.label(i),
                    self.procs[i].pid()
                ))
            }),
            ("kill", [id]) => self.find_node(id).map(|i| {
                self.procs[i].kill();
                format!("{} (pid {}): killed", self.label(i), self.procs[i].pid())
            }),
            ("nodes", []) => {
                if let Ok(st) = self.status() {
                    self.learn_ids(&status::nodes(&st));
                }
                return Some(out.write_all(self.describe().as_bytes()));
            }
            ("add" | "nodes", _) => Err(format!("usage: {cmd}")),
            ("drop" | "kill", _) => Err(format!("usage: {cmd} ID")),
            _ => return None,
        };
        Some(match result {
            Ok(line) => writeln!(out, "{line}"),
            Err(e) => writeln!(out, "error: {e}"),
        })
    }

    fn set_printer(&mut self, printer: Box<dyn rustyline::ExternalPrinter + Send>) {
        *lock(&self.sink.0) = Some(printer);
    }
}

/// Reads one child pipe line by line.
struct LogReader {
    index: usize,
    label: Arc<Mutex<String>>,
    sink: LogSink,
    events: Sender<Event>,
    /// Say so when the pipe closes (done for stderr only).
    announce_exit: bool,
}

impl LogReader {
    fn run(self, pipe: Box<dyn Read + Send>) {
        let mut input = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match input.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            if let Some(addr) = listening_addr(text) {
                let _ = self.events.send(Event::Listening {
                    index: self.index,
                    addr,
                });
            }
            if let Some(id) = registered_id(text) {
                // A hint only: the launcher's ids come from STATUS.
                *lock(&self.label) = format!("node {id}");
            }
            let label = lock(&self.label).clone();
            self.sink.print(format!("[{label}] {text}"));
        }
        if self.announce_exit {
            let label = lock(&self.label).clone();
            self.sink.print(format!("[{label}] exited"));
        }
    }
}

/// The `HOST:PORT` after `listening on ` in a log line.
pub fn listening_addr(line: &str) -> Option<String> {
    const MARK: &str = "listening on ";
    let rest = &line[line.find(MARK)? + MARK.len()..];
    let word = rest.split_whitespace().next()?;
    let word = word.trim_end_matches([',', ';', '.', ')']);
    let (host, port) = word.rsplit_once(':')?;
    (!host.is_empty() && port.parse::<u16>().is_ok()).then(|| word.to_string())
}

/// The id in a storage node's `registered with the manager as node ID` log line.
fn registered_id(line: &str) -> Option<u32> {
    const MARK: &str = "registered with the manager as node ";
    let rest = &line[line.find(MARK)? + MARK.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listening_address() {
        let m = "[2026-01-01T00:00:00.000Z INFO  gtstore_manager] gtstore-manager listening on 127.0.0.1:40999";
        assert_eq!(listening_addr(m).as_deref(), Some("127.0.0.1:40999"));
        let s = "[.. INFO gtstore_storage] gtstore-storage listening on 127.0.0.1:35493 (manager 127.0.0.1:40999)";
        assert_eq!(listening_addr(s).as_deref(), Some("127.0.0.1:35493"));
        assert_eq!(
            listening_addr("listening on 127.0.0.1:7001."),
            Some("127.0.0.1:7001".into())
        );
        assert_eq!(listening_addr("not listening yet"), None);
        assert_eq!(listening_addr("listening on nothing"), None);
        assert_eq!(listening_addr("listening on host:notaport"), None);
        let r = "[.. INFO  gtstore::storage::node] registered with the manager as node 12";
        assert_eq!(registered_id(r), Some(12));
        assert_eq!(registered_id("node 12 joined"), None);
    }
}
