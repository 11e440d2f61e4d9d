//! Test harness: starts the real binaries on 127.0.0.1 with port 0, learns where
//! they listen from their log line, and kills them on drop, even when a test fails.
#![allow(dead_code)]

use gtstore::client::{manager_call, Client, Connection};
use gtstore::protocol::op;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Reply timeout used by test clients.
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
        let manager = Proc::start(env!("CARGO_BIN_EXE_gtstore-manager"), &["--port", "0"]);
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
