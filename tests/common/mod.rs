//! Test harness: starts the real binaries on 127.0.0.1 with port 0, learns where
//! they listen from their log line, and kills them on drop, even when a test fails.
#![allow(dead_code)]

pub mod http;

use gtstore::client::{manager_call, Client, Connection};
use gtstore::protocol::op;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Reply timeout used by test clients.
/// Manager flags for one copy per key (N = R = W = 1).
pub const SINGLE_COPY: &[&str] = &[
    "--replicas",
    "1",
    "--read-quorum",
    "1",
    "--write-quorum",
    "1",
];

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A child process killed on drop.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// `HOST:PORT` it listens on.
    pub addr: String,
    /// Every log line so far (for debugging failures).
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `bin` with `args` and waits for its `listening on` line.
    pub fn start(bin: &str, args: &[&str]) -> Proc {
        let mut child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on ") {
                    let addr = line[at + 13..].split_whitespace().next().unwrap_or("");
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.to_string());
                    }
                }
                log2.lock().unwrap().push(line);
            }
        });
        let mut p = Proc {
            child,
            addr: String::new(),
            log,
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => p.addr = addr,
            Err(_) => panic!("{bin} did not say where it listens: {:?}", p.log()),
        }
        p
    }

    /// The log so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The log once a line matches `want`, or as it stands after `within`:
    /// lines reach it through a reader thread, so a line the process wrote
    /// before it answered a request may not be there yet when the answer is.
    pub fn log_once(&self, want: impl Fn(&str) -> bool, within: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.iter().any(|l| want(l)) || start.elapsed() >= within {
                return log;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// The `HOST:PORT` of a storage node's RESP listener (started with
    /// `--resp-port`), from its `RESP listening on` log line.
    pub fn resp_addr(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.log().iter().find_map(|l| {
                let at = l.find("RESP listening on ")?;
                l[at + 18..].split_whitespace().next().map(str::to_string)
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no RESP listening line: {:?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A manager and some storage nodes.
pub struct Cluster {
    /// The manager.
    pub manager: Proc,
    /// The storage nodes, in start order.
    pub nodes: Vec<Proc>,
}

impl Cluster {
    /// Starts a manager and `n` storage nodes and waits until all are live.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// Like `start`, with extra flags for every storage node.
    pub fn start_with(n: usize, node_args: &[&str]) -> Cluster {
        Cluster::start_full(n, &[], node_args)
    }

    /// Like `start`, with extra flags for the manager and for every storage node.
    /// The cluster is new, so the manager gets no recovery window (`--recovery-ms
    /// 0`) unless `manager_args` sets one: nodes register at once.
    pub fn start_full(n: usize, manager_args: &[&str], node_args: &[&str]) -> Cluster {
        let mut args = vec!["--port", "0"];
        if !manager_args.contains(&"--recovery-ms") {
            args.extend_from_slice(&["--recovery-ms", "0"]);
        }
        args.extend_from_slice(manager_args);
        let manager = Proc::start(env!("CARGO_BIN_EXE_gtstore-manager"), &args);
        let mut c = Cluster {
            manager,
            nodes: Vec::new(),
        };
        for _ in 0..n {
            c.add_node(node_args);
        }
        c.wait_live(n);
        c
    }

    /// Starts one more storage node.
    pub fn add_node(&mut self, extra: &[&str]) -> usize {
        let mut args = vec!["--port", "0", "--manager", self.manager.addr.as_str()];
        args.extend_from_slice(extra);
        let p = Proc::start(env!("CARGO_BIN_EXE_gtstore-storage"), &args);
        self.nodes.push(p);
        self.nodes.len() - 1
    }

    /// Kills node `i` (SIGKILL) if it still runs and starts it again on the same
    /// address with `extra` flags, as a fresh process.
    pub fn restart_node(&mut self, i: usize, extra: &[&str]) {
        let old = &mut self.nodes[i];
        let _ = old.child.kill();
        let _ = old.child.wait();
        let port = old.addr.rsplit(':').next().expect("HOST:PORT").to_string();
        let mut args = vec![
            "--port",
            port.as_str(),
            "--manager",
            self.manager.addr.as_str(),
        ];
        args.extend_from_slice(extra);
        self.nodes[i] = Proc::start(env!("CARGO_BIN_EXE_gtstore-storage"), &args);
    }

    /// Waits until the manager reports node `i` in `state`.
    pub fn wait_state(&self, i: usize, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let node = self.node_status(i);
            if node["state"] == state {
                return;
            }
            assert!(Instant::now() < deadline, "node {i} never {state}: {node}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Live keys node `i` reports to the manager (heartbeats, every 500 ms).
    pub fn keys_of(&self, i: usize) -> u64 {
        self.node_status(i)["keys"].as_u64().unwrap_or(0)
    }

    /// Node `i`'s entry in the manager's STATUS (`null` if it is not listed).
    pub fn node_status(&self, i: usize) -> serde_json::Value {
        let s = self.status();
        let addr = self.nodes[i].addr.as_str();
        let nodes = s["nodes"].as_array().unwrap();
        let node = nodes.iter().find(|n| n["addr"] == addr);
        node.cloned().unwrap_or(serde_json::Value::Null)
    }

    /// The manager's STATUS JSON.
    pub fn status(&self) -> serde_json::Value {
        let bytes = manager_call(&self.manager.addr, op::STATUS, TIMEOUT).expect("STATUS");
        serde_json::from_slice(&bytes).expect("STATUS is JSON")
    }

    /// Waits until the manager reports `n` live nodes.
    pub fn wait_live(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let live = self.status()["live_nodes"].as_u64().unwrap_or(0) as usize;
            if live == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {live} of {n} nodes live; manager log: {:?}",
                self.manager.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An anonymous client on node `i`.
    pub fn node_client(&self, i: usize) -> Client {
        Client::connect_node(&self.nodes[i].addr, TIMEOUT).expect("connect to node")
    }

    /// A raw framed connection to node `i`.
    pub fn raw(&self, i: usize) -> Connection {
        Connection::connect(&self.nodes[i].addr, TIMEOUT).expect("connect to node")
    }
}

/// Reads key `key(n)` for every `n` of `ns` through `addr`, pipelined, and returns
/// each `n` whose value is not `value(n)`, with what came back instead.
pub fn read_back(
    addr: &str,
    ns: &[usize],
    key: impl Fn(usize) -> Vec<u8>,
    value: impl Fn(usize) -> Vec<u8>,
) -> Vec<(usize, String)> {
    let mut conn = Connection::connect(addr, TIMEOUT).unwrap();
    let mut bad = Vec::new();
    for batch in ns.chunks(256) {
        for &n in batch {
            conn.queue(op::GET, 0, &[&key(n)]);
        }
        conn.flush().unwrap();
        for &n in batch {
            let f = conn.recv().unwrap();
            if f.op != op::VALUE || f.payload[..] != value(n)[..] {
                bad.push((n, String::from_utf8_lossy(&f.payload).into_owned()));
            }
        }
    }
    bad
}

/// Sends signal `sig` (`KILL`, `STOP`, `CONT`, ...) to process `pid`.
pub fn kill(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

// ---------------------------------------------------------------------------
// Raw wire helpers: exact bytes over std::net::TcpStream, every read bounded.
// ---------------------------------------------------------------------------

/// Encodes one frame exactly as the contract spells it: `OP CLIENTID NODEID LEN\n`
/// followed by the payload. Used for requests and for expected replies alike.
pub fn frame(op: u8, client_id: u64, node_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = format!("{op} {client_id} {node_id} {}\n", payload.len()).into_bytes();
    v.extend_from_slice(payload);
    v
}

/// A `KV` payload: `KLEN SP KEY VALUE`.
pub fn kv(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = format!("{} ", key.len()).into_bytes();
    v.extend_from_slice(key);
    v.extend_from_slice(value);
    v
}

/// Bytes shown to a person: printable ASCII as is, the rest escaped, long runs cut.
pub fn show(bytes: &[u8]) -> String {
    let cut = bytes.len() > 200;
    let mut s: String = bytes[..bytes.len().min(200)]
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if cut {
        s.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    s
}

/// One frame as read off the wire, with its raw header line.
#[derive(Debug, Clone)]
pub struct RawFrame {
    /// The header line including its LF, byte for byte.
    pub header: Vec<u8>,
    /// Op.
    pub op: u8,
    /// Client id.
    pub client_id: u64,
    /// Node id.
    pub node_id: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The payload's first word (the code of an `ERR`).
    pub fn code(&self) -> String {
        let end = self
            .payload
            .iter()
            .position(|&b| b == b' ')
            .unwrap_or(self.payload.len());
        String::from_utf8_lossy(&self.payload[..end]).into_owned()
    }
}

/// A raw TCP connection for byte-exact tests. Reads time out, so a test fails
/// instead of hanging.
pub struct Wire {
    /// The socket.
    pub stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    /// Wraps an accepted `stream` (a fake server's side), with the same timeouts.
    pub fn accepted(stream: std::net::TcpStream) -> Wire {
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects to `addr` with a 10 s read/write timeout.
    pub fn connect(addr: &str) -> Wire {
        use std::net::ToSocketAddrs;
        let sa = addr
            .to_socket_addrs()
            .expect("resolve")
            .next()
            .expect("an address");
        let stream = std::net::TcpStream::connect_timeout(&sa, TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes all of `bytes` in one `write_all`.
    pub fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).expect("write to server");
    }

    /// Reads more into the buffer; false on EOF. Panics on a timeout or error.
    fn fill(&mut self) -> bool {
        use std::io::Read;
        let mut chunk = [0u8; 64 << 10];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!(
                    "read from server failed ({e}); got so far: {}",
                    show(&self.buf)
                ),
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(
                self.fill(),
                "server closed after {} of {n} expected bytes: {}",
                self.buf.len(),
                show(&self.buf)
            );
        }
        self.buf.drain(..n).collect()
    }

    /// Reads `want.len()` bytes and asserts they are exactly `want`.
    pub fn expect(&mut self, want: &[u8]) {
        let got = self.read_n(want.len());
        if got != want {
            let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
            let from = at.saturating_sub(40);
            panic!(
                "reply differs at byte {at} of {}:\n  want ...{}\n  got  ...{}",
                want.len(),
                show(&want[from..(at + 80).min(want.len())]),
                show(&got[from..(at + 80).min(got.len())])
            );
        }
    }

    /// Reads one frame.
    pub fn frame(&mut self) -> RawFrame {
        let lf = loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                break i;
            }
            assert!(
                self.buf.len() < 64,
                "reply header too long: {}",
                show(&self.buf)
            );
            assert!(
                self.fill(),
                "server closed before a whole header: {}",
                show(&self.buf)
            );
        };
        let header: Vec<u8> = self.buf.drain(..=lf).collect();
        let text = std::str::from_utf8(&header[..lf]).expect("ASCII header");
        let f: Vec<&str> = text.split(' ').collect();
        assert_eq!(f.len(), 4, "reply header has 4 fields: {text:?}");
        let len: usize = f[3].parse().expect("LEN");
        let payload = self.read_n(len);
        RawFrame {
            op: f[0].parse().expect("OP"),
            client_id: f[1].parse().expect("CLIENTID"),
            node_id: f[2].parse().expect("NODEID"),
            payload,
            header,
        }
    }

    /// Reads one frame and asserts it is `29 CLIENTID NODEID LEN\nCODE ...`, with
    /// a header in canonical form. Returns the message.
    pub fn expect_err(&mut self, client_id: u64, node_id: u32, code: &str) -> String {
        let f = self.frame();
        let canonical = format!("29 {client_id} {node_id} {}\n", f.payload.len());
        assert_eq!(
            show(&f.header),
            show(canonical.as_bytes()),
            "ERR header (payload {})",
            show(&f.payload)
        );
        assert_eq!(
            f.code(),
            code,
            "ERR code; whole payload: {}",
            show(&f.payload)
        );
        assert!(
            f.payload.len() > code.len() + 1 && f.payload[code.len()] == b' ',
            "ERR payload is `CODE SP message`: {}",
            show(&f.payload)
        );
        String::from_utf8_lossy(&f.payload[code.len() + 1..]).into_owned()
    }

    /// Asserts the server closes the connection (EOF, or a reset) within `within`,
    /// with no further bytes sent first.
    pub fn expect_closed_within(&mut self, within: Duration) {
        use std::io::Read;
        assert!(
            self.buf.is_empty(),
            "unexpected bytes before close: {}",
            show(&self.buf)
        );
        self.stream.set_read_timeout(Some(within)).unwrap();
        let mut b = [0u8; 4096];
        match self.stream.read(&mut b) {
            Ok(0) => {}
            Ok(n) => panic!("expected close, got more bytes: {}", show(&b[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the server to close the connection: {e}"),
        }
        self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    }

    /// Asserts the server closes the connection cleanly (read returns 0) soon.
    pub fn expect_eof(&mut self) {
        use std::io::Read;
        assert!(
            self.buf.is_empty(),
            "unexpected bytes before close: {}",
            show(&self.buf)
        );
        self.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 4096];
        match self.stream.read(&mut b) {
            Ok(0) => {}
            Ok(n) => panic!("expected EOF, got more bytes: {}", show(&b[..n])),
            Err(e) => panic!("expected EOF (read returning 0), got {e}"),
        }
    }

    /// Sends a PING and checks the exact PONG: proves the connection is usable.
    pub fn ping_ok(&mut self, node_id: u32) {
        self.send(&frame(10, 0, 0, b"still-here"));
        self.expect(&frame(20, 0, node_id, b"still-here"));
    }
}

/// The node id a storage node puts in its replies, once it has registered with
/// the manager (polls PING for up to 10 s until the id is not 0).
pub fn node_id_of(addr: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut w = Wire::connect(addr);
    loop {
        w.send(&frame(10, 0, 0, b""));
        let f = w.frame();
        assert_eq!(f.op, 20, "PONG expected, got {}", show(&f.payload));
        if f.node_id != 0 {
            return f.node_id;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} never learned its node id"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `addr` still serves: a fresh connection GETs `key` and must see `value`.
pub fn assert_serves(addr: &str, node_id: u32, key: &[u8], value: &[u8]) {
    let mut w = Wire::connect(addr);
    w.send(&frame(13, 0, 0, key));
    w.expect(&frame(22, 0, node_id, value));
}

/// Runs the member handshake on `w` as a node advertising `addr` under `secret`
/// (docs/protocol.md): `MEMBER_HELLO`, checks the `MEMBER_CHALLENGE` answer if
/// `secret` is the other side's too, sends `NODE_JOIN` with the proof (`TOKENS`
/// 8) and returns the reply.
pub fn member_join(w: &mut Wire, addr: &str, secret: &[u8]) -> RawFrame {
    use gtstore::protocol::auth;
    let client = auth::os_random::<{ auth::NONCE_LEN }>().unwrap();
    w.send(&frame(
        op::MEMBER_HELLO,
        0,
        0,
        auth::to_hex(&client).as_bytes(),
    ));
    let answer = w.frame();
    assert_eq!(answer.op, op::MEMBER_CHALLENGE, "{}", show(&answer.payload));
    let words: Vec<&[u8]> = answer.payload.split(|&b| b == b' ').collect();
    let server: auth::Nonce = auth::from_hex(words[0]).expect("a hex nonce");
    let role = auth::member_role(addr);
    let proof = auth::proof(secret, &server, &client, &role);
    let join = format!("{} {addr} 8", auth::to_hex(&proof));
    w.send(&frame(op::NODE_JOIN, 0, 0, join.as_bytes()));
    w.frame()
}

/// Runs the `gtstore` CLI with `args` (after `--manager manager --timeout 5`),
/// `input` on stdin and `cache` as its `XDG_CACHE_HOME` (the node cache: give a
/// directory of the test's own, or `/dev/null` for none), and waits for it.
pub fn run_gtstore(
    manager: &str,
    cache: &std::path::Path,
    args: &[&std::ffi::OsStr],
    input: &[u8],
) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gtstore"))
        .args(["--manager", manager, "--timeout", "5"])
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .env_remove("GTSTORE_MANAGER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gtstore");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("gtstore output");
    writer.join().unwrap();
    out
}

/// A mode-600 file holding `secret` and a line feed, removed on drop.
pub struct SecretFile(std::path::PathBuf);

impl SecretFile {
    /// Writes it under the temporary directory, named after `name` and this process.
    pub fn new(name: &str, secret: &str) -> SecretFile {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir();
        let path = dir.join(format!("gtstore-secret-{name}-{}", std::process::id()));
        std::fs::write(&path, format!("{secret}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        SecretFile(path)
    }

    /// Its path, for a `--...-file` flag.
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The pids of the processes whose parent is `parent` (from /proc).
pub fn children_of(parent: u32) -> Vec<u32> {
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
