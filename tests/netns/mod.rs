//! Network-namespace harness for the partition suite: every process of a test in
//! its own namespace, all of them on one bridge, and partitions made by the
//! kernel.
//!
//! Layout of one [`Net`]:
//! - a bridge namespace (`TAG-br`) holding a Linux bridge `br0` and one end of
//!   every host's veth pair (`v0`, `v1`, ...). It has no address and no route; the
//!   root namespace and its interfaces are never touched;
//! - one namespace per host (`TAG-h0`, `TAG-h1`, ...), with loopback up and the
//!   other end of its veth pair as `eth0`, addressed `SUBNET.(10+i)/24`. There is
//!   no default route, no NAT and no link to any host interface, so traffic
//!   cannot leave the test's namespaces. Every `Net` has its own bridge, so
//!   parallel tests may reuse the same addresses without meeting.
//!
//! `TAG` is `gtpt-PID-COUNTER`: unique per test process and per `Net`, and the
//! PID lets [`Net::new`] sweep what a killed test run left behind (namespaces
//! whose PID no longer runs).
//!
//! Processes start with `ip netns exec NS BINARY ...`, which `exec`s the binary
//! in place, so the child's pid is the server's and killing it kills the server.
//! Test threads reach the namespaces with [`Net::within`]: a thread that calls
//! `setns(CLONE_NEWNET)` opens its sockets in that namespace.
//!
//! Partitions, with iproute2 only (no nftables needed):
//! - [`Net::link`]: the host's port on the bridge goes down (or up): the host is
//!   cut off from everyone, silently (packets are dropped, nothing is refused);
//! - [`Net::block`]: a `blackhole` route to each other's address in both hosts'
//!   namespaces, so neither side's packets leave: a silent, symmetric cut between
//!   two hosts that leaves their other links alone. Any shape (a split, a
//!   bridge node that sees both halves) is a set of such pairs.
//!
//! [`Net::heal`] undoes both. Dropping a `Net` kills its processes and deletes
//! its namespaces, also when the test panicked. Without root or `ip`,
//! [`Net::new`] prints a notice and returns `None`, and the test skips.

pub mod workload;

use crate::common::Proc;
use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Prefix of every namespace this suite creates (the sweep deletes only these).
pub const PREFIX: &str = "gtpt-";

/// The /24 every test's hosts are addressed in; it exists only inside the
/// test's namespaces.
pub const SUBNET: &str = "10.77.0";

/// Log lines of each process printed when a test fails.
const LOG_TAIL: usize = 15;

/// Bound on the wait for a link taken up to be ready.
const LINK_UP_WAIT: Duration = Duration::from_secs(5);

/// Numbers the `Net`s of one test process.
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Runs `ip ARGS`; the error is its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Kills every process in namespace `ns` and deletes it.
fn remove_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2) with a pid read from the kernel's list of the
                // namespace's processes; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = ip(&["netns", "del", ns]);
}

/// Deletes namespaces of this suite whose test process no longer runs.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove_namespace(name);
        }
    }
}

/// Whether this process runs as root; if not, prints that `test` skips.
pub fn is_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIP {test}: the partition suite needs root (network namespaces)");
    }
    root
}

/// Waits until `dev` in namespace `ns` reports its operational state UP.
fn wait_oper_up(ns: &str, dev: &str) {
    let deadline = Instant::now() + LINK_UP_WAIT;
    loop {
        let out = Command::new("ip")
            .args(["-n", ns, "-o", "link", "show", dev])
            .output()
            .expect("ip link show");
        if String::from_utf8_lossy(&out.stdout).contains(" state UP ") {
            return;
        }
        assert!(Instant::now() < deadline, "{dev} in {ns} never came up");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One host: a namespace with an address on the bridge.
#[derive(Clone, Debug)]
pub struct Host {
    /// The namespace's name.
    pub ns: String,
    /// Its address.
    pub ip: String,
    /// Its veth end in the bridge namespace.
    port: String,
}

/// A test's namespaces, their processes and the partitions in force.
pub struct Net {
    tag: String,
    bridge: String,
    hosts: Vec<Host>,
    procs: Vec<Proc>,
    /// Host pairs (lower index first) cut by blackhole routes.
    blocked: BTreeSet<(usize, usize)>,
    /// Hosts whose bridge port is down.
    down: BTreeSet<usize>,
}

impl Net {
    /// Creates the bridge namespace, or prints why the suite cannot run here and
    /// returns `None` (not root, no `ip`, namespaces not allowed).
    pub fn new(test: &str) -> Option<Net> {
        if !is_root(test) {
            return None;
        }
        sweep_stale();
        let tag = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let net = Net {
            bridge: format!("{tag}-br"),
            tag,
            hosts: Vec::new(),
            procs: Vec::new(),
            blocked: BTreeSet::new(),
            down: BTreeSet::new(),
        };
        let b = net.bridge.clone();
        // Everything a host needs, tried once here, so a kernel without veth or
        // bridges skips instead of failing half-way.
        let veth = [
            "-n", &b, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1",
        ];
        let made = ip(&["netns", "add", &b])
            .and_then(|()| ip(&["-n", &b, "link", "add", "br0", "type", "bridge"]))
            .and_then(|()| ip(&["-n", &b, "link", "set", "br0", "up"]))
            .and_then(|()| ip(&veth))
            .and_then(|()| ip(&["-n", &b, "link", "del", "probe0"]));
        match made {
            Ok(()) => Some(net),
            Err(e) => {
                eprintln!("SKIP {test}: cannot make network namespaces ({e})");
                drop(net);
                None
            }
        }
    }

    /// Adds a host namespace on the bridge and returns its index.
    pub fn add_host(&mut self) -> usize {
        let i = self.hosts.len();
        let host = Host {
            ns: format!("{}-h{i}", self.tag),
            ip: format!("{SUBNET}.{}", 10 + i),
            port: format!("v{i}"),
        };
        let (b, ns, port) = (self.bridge.as_str(), host.ns.as_str(), host.port.as_str());
        let cidr = format!("{}/24", host.ip);
        let steps: [&[&str]; 7] = [
            &["netns", "add", ns],
            &["-n", ns, "link", "set", "lo", "up"],
            &[
                "-n", b, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
            &["-n", b, "link", "set", port, "master", "br0"],
            &["-n", b, "link", "set", port, "up"],
            &["-n", ns, "addr", "add", &cidr, "dev", "eth0"],
            &["-n", ns, "link", "set", "eth0", "up"],
        ];
        // Registered first, so a failure below still deletes the namespace.
        self.hosts.push(host.clone());
        for step in steps {
            ip(step).unwrap_or_else(|e| panic!("setting up host {i}: {e}"));
        }
        wait_oper_up(b, port);
        wait_oper_up(ns, "eth0");
        i
    }

    /// Every namespace of this `Net`, the bridge's first.
    pub fn namespaces(&self) -> Vec<String> {
        let hosts = self.hosts.iter().map(|h| h.ns.clone());
        std::iter::once(self.bridge.clone()).chain(hosts).collect()
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Starts `bin args` inside host `i`'s namespace and waits for its
    /// `listening on` line; returns its index for [`Net::proc`].
    pub fn spawn(&mut self, i: usize, bin: &str, args: &[&str]) -> usize {
        let mut full = vec!["netns", "exec", self.hosts[i].ns.as_str(), bin];
        full.extend_from_slice(args);
        self.procs.push(Proc::start("ip", &full));
        self.procs.len() - 1
    }

    /// Process `p` (in start order).
    pub fn proc(&self, p: usize) -> &Proc {
        &self.procs[p]
    }

    /// Runs `f` on a thread inside host `i`'s namespace and returns its result
    /// (a panic in `f` panics here).
    pub fn within<T: Send + 'static>(&self, i: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn_within(i, f)
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// Starts a thread inside host `i`'s namespace running `f`.
    pub fn spawn_within<T: Send + 'static>(
        &self,
        i: usize,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.hosts[i].ns);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on an fd we hold open; it changes only this thread's
            // network namespace, which is what this thread is for.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            drop(file);
            f()
        })
    }

    /// Takes host `i`'s port on the bridge down (`up` false) or up again.
    pub fn link(&mut self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&[
            "-n",
            &self.bridge,
            "link",
            "set",
            &self.hosts[i].port,
            state,
        ])
        .unwrap();
        if up {
            // The kernel turns a carrier change into "ready to send" later (its
            // link watch may wait up to a second); packets sent before are lost.
            wait_oper_up(&self.bridge, &self.hosts[i].port);
            wait_oper_up(&self.hosts[i].ns, "eth0");
            self.down.remove(&i);
        } else {
            self.down.insert(i);
        }
    }

    /// Cuts hosts `a` and `b` off from each other, both ways.
    pub fn block(&mut self, a: usize, b: usize) {
        let pair = (a.min(b), a.max(b));
        if a == b || !self.blocked.insert(pair) {
            return;
        }
        self.route(pair, "add");
    }

    /// Cuts every host of each side off from every host of every other side.
    pub fn split(&mut self, sides: &[&[usize]]) {
        for (s, side) in sides.iter().enumerate() {
            for other in &sides[s + 1..] {
                for &a in side.iter() {
                    for &b in other.iter() {
                        self.block(a, b);
                    }
                }
            }
        }
    }

    /// Removes every cut: blackhole routes deleted, every port up.
    pub fn heal(&mut self) {
        for pair in std::mem::take(&mut self.blocked) {
            self.route(pair, "del");
        }
        for i in std::mem::take(&mut self.down) {
            self.link(i, true);
        }
        // Addresses that went unanswered while cut are marked unreachable in the
        // neighbour (ARP) tables for a while; forget them so the heal is at once.
        for h in &self.hosts {
            ip(&["-n", &h.ns, "neigh", "flush", "all"]).unwrap();
        }
    }

    /// Adds or deletes the blackhole routes of one pair.
    fn route(&self, (a, b): (usize, usize), verb: &str) {
        for (from, to) in [(a, b), (b, a)] {
            let dst = format!("{}/32", self.hosts[to].ip);
            ip(&["-n", &self.hosts[from].ns, "route", verb, "blackhole", &dst]).unwrap();
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, p) in self.procs.iter().enumerate() {
                let log = p.log();
                let tail = &log[log.len().saturating_sub(LOG_TAIL)..];
                eprintln!("process {i} ({}), last log lines:", p.addr);
                for line in tail {
                    eprintln!("  {line}");
                }
            }
        }
        // Processes first: a namespace whose processes still run outlives `del`.
        self.procs.clear();
        for h in &self.hosts {
            remove_namespace(&h.ns);
        }
        remove_namespace(&self.bridge);
    }
}
