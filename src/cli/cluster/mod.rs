//! `gtstore cluster`: a whole cluster on this machine, for trying things out.
//!
//! The launcher starts a manager and N storage nodes, all on 127.0.0.1, as child
//! processes of its own executable (`gtstore manager ...`, `gtstore storage ...`), so
//! the one `gtstore` binary is all it needs. A thread per child pipe re-prints the
//! child's log with one label per process, `[manager :PORT]` or `[node ID :PORT]`
//! (`?` until the port or the id is known), and watches for the line that says
//! `listening on HOST:PORT`, which is how the launcher learns the ports when the OS
//! picks them (`--base-port 0`). Once every process listens and the manager's STATUS
//! shows every node up, it prints where everything is and opens the shell, with extra
//! commands: `add` (one more storage node), `drop ID` (the manager's DROP: a graceful
//! leave, or for a dead node its removal from the ring), `kill ID` (SIGKILL: a crash),
//! `restart ID` (a dead node again, on its old port and data) and `nodes`.
//!
//! Each cluster gets a random secret (24 bytes from the OS, in hex), which its
//! children get in their environment (`GTSTORE_SECRET`), never on their command
//! line; it is the manager's admin secret too, which `drop` proves. It is also
//! written, mode 600, to `cluster.secret` in the data root, so `gtstore drop
//! --admin-secret-file` works from another terminal.
//!
//! Each node keeps its data in a directory of its own (`node-K` under `--data-dir`,
//! or under a scratch directory the launcher removes when it stops), so that a
//! restarted node comes back with its id and its data. The manager is started with
//! `--recovery-ms 0`: a fresh cluster has no membership to recover.
//!
//! Cleaning up is the point of the design (see `procs.rs`). The children run in their
//! own process group, so a Ctrl-C on the terminal reaches only the launcher. Leaving
//! the shell (`exit`, Ctrl-D, Ctrl-C at the prompt, end of piped input) stops every
//! child: SIGINT (the servers' "stop now"), up to 3 s of grace, then SIGKILL, each
//! reaped. SIGINT, SIGTERM and SIGHUP (the terminal closed) to the launcher do the
//! same from a signal thread, which then ends the launcher with status 128 + the
//! signal. If the launcher is killed outright, the children die with it
//! (`PR_SET_PDEATHSIG`, Linux only).
//!
//! While the shell's line editor is active, log lines go through its external
//! printer, which redraws the prompt and the half-typed line below them.
//!
//! Caveats: Unix only; on other Unixes than Linux a SIGKILL of the launcher leaves
//! its children running. A SIGKILL of the launcher leaves its scratch directory
//! behind in the system's temp dir. Lines a node logs before it says where it
//! listens are labelled with port `?` when the OS picks the port.

mod commands;
mod procs;

use super::shell::Shell;
use super::status::{self, NodeInfo};
use super::{Reply, Request, Session, Target, EXIT_ERROR, EXIT_OK};
use procs::{lock, Shared};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use procs::STOP_GRACE;

/// How long to wait for a process to listen, or for the nodes to be up.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The address every process listens on.
pub const HOST: &str = "127.0.0.1";

/// One-line description of `gtstore cluster` (`--help`).
pub const ABOUT: &str =
    "Start a local cluster (a manager and N storage nodes) and open a shell on it";
/// What `gtstore cluster --help` says.
pub const LONG_ABOUT: &str = "\
Start a local cluster (a manager and N storage nodes) and open a shell on it.

Everything runs on 127.0.0.1 as child processes of this same program (`gtstore \
manager`, `gtstore storage`), whose logs are shown with one label per process: \
`[manager :PORT]`, `[node ID :PORT]`. Once all nodes are up, the launcher prints \
where each process listens and opens the shell, with extra commands: `add` (start \
one more node), `drop ID` (the manager's DROP: the node hands its data over and \
leaves; a dead node is removed from the ring), `kill ID` (SIGKILL: a crash), \
`restart ID` (start a dead node again on its old port and data) and `nodes`.

Each cluster gets a random secret, passed to its processes in their environment \
(never on their command line, which `ps` shows); it is the admin secret too, which \
`drop` proves to the manager. It is also kept in DATA/cluster.secret (mode 600) \
for `gtstore drop --admin-secret-file` from another terminal.

Leaving the shell (exit, Ctrl-D, Ctrl-C, end of piped input) stops every child: \
SIGINT (stop now), then SIGKILL after 3 s. So do SIGINT, SIGTERM and SIGHUP (a \
closed terminal) sent to the launcher; if the launcher is killed outright, its \
children die with it (Linux).";

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
    /// Keep node k's data in DIR/node-k, and leave it there at exit [default: a
    /// scratch directory removed at exit].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seconds the shell waits for a connection or a reply [default: 10].
    #[arg(long, value_name = "SECS", value_parser = super::parse_timeout)]
    pub timeout: Option<Duration>,
}

/// Starts the cluster, runs the shell on it, stops it. Returns the exit status.
pub fn run(cfg: ClusterConfig) -> u8 {
    let shared: Shared = Arc::default();
    let sink = LogSink::default();
    if let Err(e) = watch_signals(&shared, &sink) {
        eprintln!("gtstore: cluster: cannot catch signals: {e}");
        return EXIT_ERROR;
    }
    let result = Cluster::start(cfg, shared, sink).and_then(|mut cluster| {
        print!("{}", cluster.describe());
        println!(
            "admin secret in {0} (mode 600): gtstore drop ID --admin-secret-file {0}",
            cluster.secret_file().display()
        );
        println!(
            "manager at {0}; from another terminal: gtstore --manager {0} status",
            cluster.manager_addr
        );
        let _ = io::stdout().flush();
        let target = cluster.target.clone();
        let outcome = Shell::new(target, Some(&mut cluster)).run(None);
        cluster.shutdown();
        outcome.map_err(|e| format!("shell: {e}"))
    });
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let _ = writeln!(io::stderr(), "gtstore: cluster: {e}");
            EXIT_ERROR
        }
    }
}

/// Starts the thread that, on SIGINT, SIGTERM or SIGHUP, stops every child, puts
/// the terminal back and ends the launcher.
fn watch_signals(shared: &Shared, sink: &LogSink) -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let terminal = procs::Terminal::save();
    let (shared, sink) = (Arc::clone(shared), sink.clone());
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Some(sig) = signals.forever().next() else {
                return;
            };
            let name = match sig {
                SIGHUP => "SIGHUP",
                SIGTERM => "SIGTERM",
                _ => "SIGINT",
            };
            // Held until the process ends: nothing starts or stops a child after.
            let mut reg = lock(&shared);
            // The line editor's printer would show nothing once the process ends:
            // the terminal goes back to normal and the lines go to stderr.
            terminal.restore();
            sink.detach();
            sink.print(format!(
                "gtstore: {name}: stopping {} process(es)",
                reg.live.len()
            ));
            procs::stop_all(&mut reg, &|line| sink.print(line));
            std::process::exit(procs::signal_exit_code(sig));
        })?;
    Ok(())
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
        // Not eprintln!: the terminal may be gone (SIGHUP), and that must not panic.
        let _ = writeln!(io::stderr(), "{line}");
    }

    /// Prints on stderr from now on.
    fn detach(&self) {
        *lock(&self.0) = None;
    }
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

/// A process's log label: its role, id and port, as far as they are known.
#[derive(Clone, Debug)]
struct Label {
    role: Role,
    id: Option<u32>,
    port: Option<u16>,
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let port = self.port.map_or("?".into(), |p| p.to_string());
        match self.role {
            Role::Manager => write!(f, "manager :{port}"),
            Role::Node => {
                let id = self.id.map_or("?".into(), |id| id.to_string());
                write!(f, "node {id} :{port}")
            }
        }
    }
}

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':')?.1.parse().ok()
}

/// One launched process.
struct Proc {
    role: Role,
    /// Its log label, shared with its readers.
    label: Arc<Mutex<Label>>,
    pid: u32,
    /// Where it listens, once it said so.
    addr: Option<String>,
    /// A node's data directory.
    data_dir: Option<PathBuf>,
    /// Its exit status, once reaped.
    exited: Option<ExitStatus>,
}

impl Proc {
    fn id(&self) -> Option<u32> {
        lock(&self.label).id
    }

    fn label(&self) -> String {
        lock(&self.label).to_string()
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
    procs: Vec<Proc>,
    shared: Shared,
    /// Where node k's data directory goes.
    data_root: PathBuf,
    readers: Vec<JoinHandle<()>>,
    events_tx: Sender<Event>,
    events: Receiver<Event>,
    sink: LogSink,
    /// Storage nodes started so far (for `--base-port` numbering).
    started_nodes: u32,
    manager_addr: String,
    target: Target,
    /// The cluster secret, random per cluster (hex); also the admin secret.
    secret: String,
}

impl Cluster {
    /// Starts the manager and the nodes and waits until they are all up. On error,
    /// whatever was started is stopped again (by `Drop`).
    fn start(cfg: ClusterConfig, shared: Shared, sink: LogSink) -> Result<Cluster, String> {
        if cfg.nodes == 0 {
            return Err("--nodes must be at least 1".into());
        }
        if cfg.base_port != 0 && u32::from(cfg.base_port) + cfg.nodes > u32::from(u16::MAX) {
            return Err(format!(
                "--base-port {} leaves no room for {} nodes",
                cfg.base_port, cfg.nodes
            ));
        }
        let data_root = match &cfg.data_dir {
            Some(dir) => dir.clone(),
            None => {
                let dir = scratch_dir()?;
                lock(&shared).scratch = Some(dir.clone());
                dir
            }
        };
        let (events_tx, events) = mpsc::channel();
        let mut cluster = Cluster {
            target: Target {
                manager: String::new(),
                node: None,
                timeout: cfg.timeout.unwrap_or(super::DEFAULT_TIMEOUT),
                password: None,
            },
            cfg,
            procs: Vec::new(),
            shared,
            data_root,
            readers: Vec::new(),
            events_tx,
            events,
            sink,
            started_nodes: 0,
            manager_addr: String::new(),
            secret: crate::protocol::auth::to_hex(&crate::protocol::auth::os_random::<24>()?),
        };
        write_secret(&cluster.secret_file(), &cluster.secret)?;
        let port = cluster.cfg.base_port.to_string();
        let m = cluster.spawn(
            Role::Manager,
            None,
            None,
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

    /// Where the cluster's secret is kept for `gtstore drop --admin-secret-file`:
    /// `cluster.secret` in the data root (the scratch directory, removed at exit,
    /// or `--data-dir`, where it stays, mode 600, until the next launch replaces it).
    fn secret_file(&self) -> PathBuf {
        self.data_root.join("cluster.secret")
    }

    /// Starts `gtstore ROLE ARGS` with its pipes read by logging threads; returns
    /// its index.
    fn spawn(
        &mut self,
        role: Role,
        id: Option<u32>,
        data_dir: Option<PathBuf>,
        args: &[&str],
    ) -> Result<usize, String> {
        let mut argv = vec![match role {
            Role::Manager => "manager".to_string(),
            Role::Node => "storage".to_string(),
        }];
        argv.extend(args.iter().map(|a| a.to_string()));
        if let Some(dir) = &data_dir {
            argv.extend(["--data-dir".to_string(), dir.display().to_string()]);
        }
        let port = args
            .windows(2)
            .find(|w| w[0] == "--port")
            .and_then(|w| w[1].parse().ok())
            .filter(|&p: &u16| p != 0);
        let mut child = procs::spawn(&self.shared, role, &argv, &self.secret)?;
        let index = self.procs.len();
        let label = Arc::new(Mutex::new(Label { role, id, port }));
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
            pid: child.id(),
            addr: None,
            data_dir,
            exited: None,
        });
        // Reaped by pid from now on (see `procs`); dropping `child` leaves it be.
        drop(child);
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

    /// Starts a storage node on `port` with data in `dir`.
    fn spawn_storage(&mut self, id: Option<u32>, port: u16, dir: PathBuf) -> Result<usize, String> {
        let port = port.to_string();
        let manager = self.manager_addr.clone();
        let mut args = vec!["--host", HOST, "--port", &port, "--manager", &manager];
        let tokens = self.cfg.tokens.map(|t| t.to_string());
        if let Some(t) = &tokens {
            args.extend(["--tokens", t.as_str()]);
        }
        self.spawn(Role::Node, id, Some(dir), &args)
    }

    /// Starts one more storage node; returns its index.
    fn spawn_node(&mut self) -> Result<usize, String> {
        self.started_nodes += 1;
        let k = self.started_nodes;
        let port = match self.cfg.base_port {
            0 => 0,
            base => u32::from(base) + k,
        };
        let port = u16::try_from(port).map_err(|_| "no port left above --base-port")?;
        let dir = self.data_root.join(format!("node-{k}"));
        self.spawn_storage(None, port, dir)
    }

    /// Reaps process `index` if it has exited; true if it is gone.
    fn reap(&mut self, index: usize) -> bool {
        let p = &mut self.procs[index];
        if p.exited.is_none() {
            p.exited = procs::reap(&self.shared, p.pid);
        }
        p.exited.is_some()
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
            for &i in which {
                if self.procs[i].addr.is_none() && self.reap(i) {
                    return Err(format!(
                        "{} {} before it listened (see its log above)",
                        self.procs[i].label(),
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

    /// Learns node ids from STATUS by matching the addresses of running nodes.
    fn learn_ids(&mut self, nodes: &[NodeInfo]) {
        for p in self.procs.iter().filter(|p| p.role == Role::Node) {
            let (Some(addr), None) = (&p.addr, p.exited) else {
                continue;
            };
            if let Some(n) = nodes.iter().rev().find(|n| &n.addr == addr) {
                lock(&p.label).id = Some(n.id);
            }
        }
    }

    /// Waits until STATUS shows the nodes `which` up, and at least as many live
    /// nodes as are running here.
    fn wait_up(&mut self, which: &[usize]) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last;
        loop {
            let nodes: Vec<usize> = (0..self.procs.len())
                .filter(|&i| self.procs[i].role == Role::Node)
                .collect();
            let running = nodes.into_iter().filter(|&i| !self.reap(i)).count() as u64;
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
                if self.reap(i) {
                    let p = &self.procs[i];
                    return Err(format!("{} {}", p.label(), p.state()));
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
        for i in 0..self.procs.len() {
            self.reap(i);
        }
        let rows: Vec<Vec<String>> = self
            .procs
            .iter()
            .map(|p| {
                vec![
                    match p.role {
                        Role::Manager => "manager".into(),
                        Role::Node => "node".into(),
                    },
                    match p.role {
                        Role::Manager => "-".into(),
                        Role::Node => p.id().map_or("?".into(), |id| id.to_string()),
                    },
                    p.addr.clone().unwrap_or_else(|| "?".into()),
                    p.pid.to_string(),
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

    /// Stops every process (see `procs::stop_all`) and joins the log threads. Safe
    /// to call more than once.
    pub fn shutdown(&mut self) {
        {
            let mut reg = lock(&self.shared);
            if !reg.live.is_empty() {
                self.sink
                    .print(format!("gtstore: stopping {} process(es)", reg.live.len()));
            }
            let sink = self.sink.clone();
            for (pid, status) in procs::stop_all(&mut reg, &|line| sink.print(line)) {
                if let Some(p) = self.procs.iter_mut().find(|p| p.pid == pid) {
                    p.exited.get_or_insert(status);
                }
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
        self.sink.detach();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Writes `secret` and a newline to `path`, readable by its owner only.
fn write_secret(path: &std::path::Path, secret: &str) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |e: io::Error| format!("cannot write {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    // An older file keeps its mode through open(2): set it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    writeln!(f, "{secret}").map_err(fail)
}

/// Makes a fresh directory for the nodes' data under the system's temp dir.
fn scratch_dir() -> Result<PathBuf, String> {
    let base = std::env::temp_dir();
    for n in 0..100 {
        let dir = base.join(format!("gtstore-cluster-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot make {}: {e}", dir.display())),
        }
    }
    Err(format!(
        "cannot make a scratch directory in {}",
        base.display()
    ))
}

/// Reads one child pipe line by line.
struct LogReader {
    index: usize,
    label: Arc<Mutex<Label>>,
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
                lock(&self.label).port = port_of(&addr);
                let _ = self.events.send(Event::Listening {
                    index: self.index,
                    addr,
                });
            }
            if let Some(id) = registered_id(text) {
                // A hint only: the launcher's ids come from STATUS.
                lock(&self.label).id = Some(id);
            }
            let label = lock(&self.label).to_string();
            self.sink.print(format!("[{label}] {text}"));
        }
        if self.announce_exit {
            let label = lock(&self.label).to_string();
            self.sink.print(format!("[{label}] exited"));
        }
    }
}

/// The `HOST:PORT` after `listening on ` in a log line (not `RESP listening on`).
pub fn listening_addr(line: &str) -> Option<String> {
    const MARK: &str = "listening on ";
    let at = line.find(MARK)?;
    if line[..at].ends_with("RESP ") {
        return None;
    }
    let rest = &line[at + MARK.len()..];
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
