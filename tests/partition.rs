//! The partition suite: a manager and five storage nodes (N=3 R=2 W=2), each
//! process in its own network namespace on one bridge (tests/netns), clients in
//! a namespace of their own that reaches every node, and partitions made by the
//! kernel while the clients run: one node cut off, a 2|3 split with the manager
//! on either side, a node that sees both halves while they cannot see each
//! other, the manager as that bridge, all of these in a row with no healthy time
//! between, and healing.
//!
//! Each partition is checked to have bitten: the manager must report exactly the
//! nodes it cut off as down, and some client operation must have failed or timed
//! out while it was in force.
//!
//! Every scenario checks, once healed, that the shared keys' histories are
//! linearizable (the simulator's checker, `gtstore::sim::linearizability`, fed
//! with real-time records) and that every acknowledged write of a fresh key
//! reads back through quorum reads, and that clients made progress before the
//! cut and after the heal (so a test cannot pass by doing nothing).
//!
//! Two tests state what the node does not do yet and are ignored until it does:
//! a node that cannot reach the manager must not acknowledge writes it cannot
//! place, and `ERR UNAVAILABLE` must mean the write was applied nowhere.
//!
//! Needs root (network namespaces) and iproute2; elsewhere every test prints a
//! `SKIP` notice and passes. Run it alone with `cargo test --test partition`.

mod common;
mod netns;

use gtstore::client::manager_call;
use gtstore::protocol::op;
use gtstore::sim::linearizability::{self, Limits, Verdict};
use gtstore::sim::{Outcome, Record, Request};
use netns::workload::{
    self, client_loop, drop_unavailable_writes, tally, ClientLog, Progress, COUNTERS, REGISTERS,
    SUCCESS,
};
use netns::Net;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The cluster secret: the processes listen off loopback, where the built-in
/// default is refused.
const SECRET: &str = "partition-suite-secret";

/// Search steps the checker may take per key (5x its default: a partition
/// leaves many writes pending, and a history it cannot finish fails the test).
const CHECK_STEPS: u64 = 10_000_000;

/// Storage nodes per cluster.
const NODES: usize = 5;

/// Concurrent clients.
const CLIENTS: usize = 4;

/// The manager marks a silent node down after this long (ms).
const DOWN_AFTER: &str = "1000";

/// Bound on every wait of a scenario.
const WAIT: Duration = Duration::from_secs(30);

/// A partition is kept, once the manager sees it, while the clients finish this
/// many operations (whatever their outcome), or for [`HOLD`] if that is sooner.
const OPS_DURING: usize = 120;

/// Longest a partition is kept once the manager sees it (most operations may
/// be waiting out their timeout).
const HOLD: Duration = Duration::from_secs(8);

/// Writes sent to a node that cannot reach the manager.
const LONE_WRITES: usize = 20;

/// Successful operations the clients must see before the cut and after the heal.
const OPS_HEALTHY: usize = 100;

/// A running cluster inside namespaces, with its clients.
struct Setup {
    net: Net,
    /// Host of the manager.
    manager: usize,
    /// Hosts of the storage nodes, node `i` on `nodes[i]`.
    nodes: Vec<usize>,
    /// Host of the clients.
    client: usize,
    manager_addr: String,
    node_addrs: Vec<String>,
    start: Instant,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    clients: Vec<JoinHandle<ClientLog>>,
    /// Each partition's window (from its cut to the next change), in the
    /// history's clock (ns since `start`).
    partitioned: Vec<(u64, u64)>,
    /// Whether a write answered `ERR UNAVAILABLE` counts as applied nowhere
    /// (instead of as a write that may or may not have happened).
    strict_unavailable: bool,
}

impl Setup {
    /// Starts the cluster and waits until every node is live, or `None` to skip.
    fn new(test: &str) -> Option<Setup> {
        let mut net = Net::new(test)?;
        let manager = net.add_host();
        let nodes: Vec<usize> = (0..NODES).map(|_| net.add_host()).collect();
        let client = net.add_host();
        let ip = net.host(manager).ip.clone();
        let m = net.spawn(
            manager,
            env!("CARGO_BIN_EXE_gtstore-manager"),
            &[
                "--host",
                &ip,
                "--port",
                "0",
                "--secret",
                SECRET,
                "--recovery-ms",
                "0",
                "--down-after",
                DOWN_AFTER,
                "--replicas",
                "3",
                "--read-quorum",
                "2",
                "--write-quorum",
                "2",
            ],
        );
        let manager_addr = net.proc(m).addr.clone();
        let mut node_addrs = Vec::new();
        for &h in &nodes {
            let ip = net.host(h).ip.clone();
            let p = net.spawn(
                h,
                env!("CARGO_BIN_EXE_gtstore-storage"),
                &[
                    "--host",
                    &ip,
                    "--port",
                    "0",
                    "--manager",
                    &manager_addr,
                    "--secret",
                    SECRET,
                ],
            );
            node_addrs.push(net.proc(p).addr.clone());
        }
        let s = Setup {
            net,
            manager,
            nodes,
            client,
            manager_addr,
            node_addrs,
            start: Instant::now(),
            stop: Arc::new(AtomicBool::new(false)),
            progress: Arc::new(Progress::default()),
            clients: Vec::new(),
            partitioned: Vec::new(),
            strict_unavailable: false,
        };
        s.wait_states(&[], "every node live");
        Some(s)
    }

    /// The manager's STATUS, read from the clients' namespace (`Null` if it
    /// cannot be reached).
    fn status(&self) -> serde_json::Value {
        let addr = self.manager_addr.clone();
        self.net.within(self.client, move || {
            manager_call(&addr, op::STATUS, Duration::from_secs(2))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(serde_json::Value::Null)
        })
    }

    /// Waits until the manager reports exactly the nodes `down` as down and
    /// every other node live.
    fn wait_states(&self, down: &[usize], what: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.status();
            let ok = s["nodes"].as_array().is_some_and(|ns| {
                ns.len() == self.node_addrs.len()
                    && ns.iter().all(|n| {
                        let i = self.node_addrs.iter().position(|a| n["addr"] == a.as_str());
                        let want = if i.is_some_and(|i| down.contains(&i)) {
                            "down"
                        } else {
                            "up"
                        };
                        n["state"] == want
                    })
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "never {what}: {s}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the clients.
    fn start_clients(&mut self) {
        for c in 0..CLIENTS {
            let (nodes, start) = (self.node_addrs.clone(), self.start);
            let (stop, progress) = (self.stop.clone(), self.progress.clone());
            let h = self.net.spawn_within(self.client, move || {
                client_loop(c, nodes, start, stop, progress)
            });
            self.clients.push(h);
        }
    }

    /// Waits until `n` more operations have ended with a success reply.
    fn wait_ops(&self, n: usize, what: &str) {
        let count = || self.progress.answered.load(Ordering::Relaxed);
        let target = count() + n;
        let deadline = Instant::now() + WAIT;
        while count() < target {
            assert!(
                Instant::now() < deadline,
                "clients stalled {what}: {} of {target}",
                count()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Keeps the current partition while the clients finish `n` more operations
    /// (whatever their outcome), for at most `hold`.
    fn hold(&self, n: usize, hold: Duration) {
        let finished = || self.progress.finished.load(Ordering::Relaxed);
        let target = finished() + n;
        let until = Instant::now() + hold;
        while finished() < target && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the clients, reads every shared key once more and every
    /// acknowledged fresh write back, and checks the history.
    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let mut history: Vec<Record> = Vec::new();
        let mut acked = Vec::new();
        for h in std::mem::take(&mut self.clients) {
            let log = h.join().expect("client thread");
            history.extend(log.records);
            acked.extend(log.acked);
        }
        for &(from, to) in &self.partitioned {
            let during = tally(history.iter().filter(|r| (from..to).contains(&r.invoked.0)));
            eprintln!("partition of {} ms: {during:?}", (to - from) / 1_000_000);
            assert!(
                during.keys().any(|k| !SUCCESS.contains(&k.as_str())),
                "a partition never failed an operation: {during:?}"
            );
        }
        history.extend(self.final_reads());
        let lost = self.read_back(acked.clone());
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged writes not read back after healing, e.g. {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(5)]
        );
        let mut applied = Vec::new();
        if self.strict_unavailable {
            let history_now = std::mem::take(&mut history);
            (history, applied) = drop_unavailable_writes(history_now);
        }
        let (history, pruned) = workload::prune_unobserved(history);
        let ops = history.len();
        let checking = Instant::now();
        match linearizability::check(&history, Limits { steps: CHECK_STEPS }) {
            Verdict::Linearizable => {}
            Verdict::Violation { key, history } => panic!(
                "history of {} is not linearizable (clients c0..c{CLIENTS}, c{CLIENTS} the final \
                 reads; times in ns since the start; partitions from..to {:?}):\n{history}\
                 PUTs answered UNAVAILABLE (left out) whose value was read: {applied:#?}",
                String::from_utf8_lossy(&key),
                self.partitioned,
            ),
            Verdict::TooLong { key, ops } => panic!(
                "history of {} ({ops} ops) too long to check",
                String::from_utf8_lossy(&key)
            ),
        }
        eprintln!(
            "{ops} shared-key operations linearizable (checked in {:?}; {pruned} unobserved \
             indeterminate writes left out), {} acknowledged writes read back",
            checking.elapsed(),
            acked.len()
        );
    }

    /// One GET per shared key after the heal, recorded like the clients' ops
    /// (client index `CLIENTS`), retried until it gets an answer.
    fn final_reads(&self) -> Vec<Record> {
        let (nodes, start) = (self.node_addrs.clone(), self.start);
        self.net.within(self.client, move || {
            let mut client = netns::workload::Client::new(CLIENTS, nodes, start);
            let deadline = Instant::now() + WAIT;
            let mut out = Vec::new();
            for key in REGISTERS.iter().chain(COUNTERS.iter()) {
                loop {
                    let rec = client.run(key.as_bytes(), Request::Get);
                    let answered = matches!(rec.outcome, Outcome::Value(_) | Outcome::NotFound);
                    out.push(rec);
                    if answered {
                        break;
                    }
                    assert!(Instant::now() < deadline, "{key} never readable: {out:?}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            out
        })
    }

    /// Reads every `(key, value)` back through quorum reads, spread over the
    /// nodes; returns those that do not read back (after retries of errors).
    fn read_back(&self, mut want: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(String, String)> {
        let nodes = self.node_addrs.clone();
        self.net.within(self.client, move || {
            let deadline = Instant::now() + WAIT;
            let mut round = 0;
            loop {
                let addr = &nodes[round % nodes.len()];
                let mut bad = Vec::new();
                let mut wrong = Vec::new();
                for chunk in want.chunks(512) {
                    let got = read_batch(addr, chunk);
                    for ((k, v), got) in chunk.iter().zip(got) {
                        match got {
                            Some(g) if g == *v => {}
                            Some(g) => wrong.push((
                                String::from_utf8_lossy(k).into_owned(),
                                String::from_utf8_lossy(&g).into_owned(),
                            )),
                            None => bad.push((k.clone(), v.clone())),
                        }
                    }
                }
                if !wrong.is_empty() || bad.is_empty() {
                    return wrong;
                }
                want = bad;
                round += 1;
                if Instant::now() > deadline {
                    return want
                        .iter()
                        .map(|(k, _)| (String::from_utf8_lossy(k).into(), "no answer".into()))
                        .collect();
                }
            }
        })
    }
}

/// GETs `batch` pipelined through `addr`: per key, `Some(what came back)` for a
/// value or NOT_FOUND, `None` for an error or no answer.
fn read_batch(addr: &str, batch: &[(Vec<u8>, Vec<u8>)]) -> Vec<Option<Vec<u8>>> {
    let mut out = vec![None; batch.len()];
    let Ok(mut conn) = gtstore::client::Connection::connect(addr, Duration::from_secs(5)) else {
        return out;
    };
    for (k, _) in batch {
        conn.queue(op::GET, 0, &[k]);
    }
    if conn.flush().is_err() {
        return out;
    }
    for slot in out.iter_mut() {
        match conn.recv() {
            Ok(f) if f.op == op::VALUE => *slot = Some(f.payload.to_vec()),
            Ok(f) if f.op == op::NOT_FOUND => *slot = Some(b"(not found)".to_vec()),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    out
}

/// One partition of a scenario.
struct Phase {
    /// Makes the cut (on a healed network).
    cut: fn(&mut Setup),
    /// The nodes the manager reports down once the cut is in force.
    down: &'static [usize],
}

/// Runs a scenario: healthy load, then each phase's partition in turn while the
/// clients run (the previous one healed at the moment the next is cut), then
/// healing, healthy load, and the checks.
fn scenario(test: &str, phases: &[Phase]) {
    scenario_with(test, phases, false);
}

/// [`scenario`], with `strict_unavailable` as [`Setup`] has it.
fn scenario_with(test: &str, phases: &[Phase], strict_unavailable: bool) {
    let Some(mut s) = Setup::new(test) else {
        return;
    };
    s.strict_unavailable = strict_unavailable;
    s.start_clients();
    s.wait_ops(OPS_HEALTHY, "before the partition");
    for (n, phase) in phases.iter().enumerate() {
        let from = workload::stamp(s.start).0;
        s.net.heal();
        (phase.cut)(&mut s);
        s.wait_states(phase.down, &format!("partitioned as phase {n} expects"));
        s.hold(OPS_DURING, HOLD);
        s.partitioned.push((from, workload::stamp(s.start).0));
    }
    s.net.heal();
    s.wait_states(&[], "healed");
    s.wait_ops(OPS_HEALTHY, "after healing");
    s.finish();
}

/// Node 2 cut off from everyone: its port on the bridge goes down.
fn cut_node_2(s: &mut Setup) {
    let h = s.nodes[2];
    s.net.link(h, false);
}

/// The manager with nodes 0 and 1 | nodes 2, 3 and 4.
fn split_manager_minority(s: &mut Setup) {
    let minority = [s.manager, s.nodes[0], s.nodes[1]];
    let majority = [s.nodes[2], s.nodes[3], s.nodes[4]];
    s.net.split(&[&minority, &majority]);
}

/// Nodes 0 and 1 | the manager with nodes 2, 3 and 4.
fn split_manager_majority(s: &mut Setup) {
    let minority = [s.nodes[0], s.nodes[1]];
    let majority = [s.manager, s.nodes[2], s.nodes[3], s.nodes[4]];
    s.net.split(&[&minority, &majority]);
}

/// The manager with nodes 0 and 1 | nodes 3 and 4; node 2 sees both halves.
fn bridge_node_2(s: &mut Setup) {
    let left = [s.manager, s.nodes[0], s.nodes[1]];
    let right = [s.nodes[3], s.nodes[4]];
    s.net.split(&[&left, &right]);
}

/// Nodes 0, 1 and 2 | nodes 3 and 4; the manager sees both halves, so it
/// reports every node up while half the ring cannot reach the other.
fn bridge_manager(s: &mut Setup) {
    let left = [s.nodes[0], s.nodes[1], s.nodes[2]];
    let right = [s.nodes[3], s.nodes[4]];
    s.net.split(&[&left, &right]);
}

#[test]
fn one_node_cut_off_then_healed() {
    let phase = Phase {
        cut: cut_node_2,
        down: &[2],
    };
    scenario("one_node_cut_off_then_healed", &[phase]);
}

#[test]
fn split_two_three_manager_with_the_minority() {
    let phase = Phase {
        cut: split_manager_minority,
        down: &[2, 3, 4],
    };
    scenario("split_two_three_manager_with_the_minority", &[phase]);
}

#[test]
fn split_two_three_manager_with_the_majority() {
    let phase = Phase {
        cut: split_manager_majority,
        down: &[0, 1],
    };
    scenario("split_two_three_manager_with_the_majority", &[phase]);
}

#[test]
fn bridge_node_sees_both_halves() {
    let phase = Phase {
        cut: bridge_node_2,
        down: &[3, 4],
    };
    scenario("bridge_node_sees_both_halves", &[phase]);
}

#[test]
fn bridge_manager_sees_both_halves() {
    let phase = Phase {
        cut: bridge_manager,
        down: &[],
    };
    scenario("bridge_manager_sees_both_halves", &[phase]);
}

/// The partition changes under the clients' feet, with no healthy time
/// between one shape and the next.
#[test]
fn partitions_change_under_load() {
    scenario("partitions_change_under_load", &CHANGING);
}

/// The partitions of [`partitions_change_under_load`], in order.
const CHANGING: [Phase; 4] = [
    Phase {
        cut: cut_node_2,
        down: &[2],
    },
    Phase {
        cut: split_manager_minority,
        down: &[2, 3, 4],
    },
    Phase {
        cut: split_manager_majority,
        down: &[0, 1],
    },
    Phase {
        cut: bridge_node_2,
        down: &[3, 4],
    },
];

/// `ERR UNAVAILABLE` must mean the write was applied nowhere: the same run as
/// [`partitions_change_under_load`], with every write so answered left out of
/// the history (it did not happen), is still linearizable.
#[test]
#[ignore = "issue 13: a write answered ERR UNAVAILABLE may have been applied by some \
            replica, and later reads return it"]
fn unavailable_means_applied_nowhere() {
    scenario_with("unavailable_means_applied_nowhere", &CHANGING, true);
}

/// A storage node started while it cannot reach the manager (a sixth node, on
/// the far side of a cut from the manager only) must not acknowledge a write it
/// cannot place with the cluster's N and W: once the cut heals and it joins,
/// every write it acknowledged reads back through quorum reads.
#[test]
#[ignore = "issue 13: a node with no id and no ring yet serves PUT as a lone N=1 store; \
            its acknowledged writes stay on it alone or are dropped once it joins"]
fn node_started_cut_off_from_the_manager() {
    let Some(mut s) = Setup::new("node_started_cut_off_from_the_manager") else {
        return;
    };
    let h = s.net.add_host();
    let manager = s.manager;
    s.net.block(h, manager);
    let ip = s.net.host(h).ip.clone();
    let bin = env!("CARGO_BIN_EXE_gtstore-storage");
    let args = [
        "--host",
        &ip,
        "--port",
        "0",
        "--manager",
        &s.manager_addr,
        "--secret",
        SECRET,
    ];
    let p = s.net.spawn(h, bin, &args);
    let addr = s.net.proc(p).addr.clone();
    let lone = addr.clone();
    let acked = s.net.within(s.client, move || {
        let mut acked = Vec::new();
        let Ok(mut conn) = gtstore::client::Connection::connect(&lone, Duration::from_secs(5))
        else {
            return acked;
        };
        for i in 0..LONE_WRITES {
            let (k, v) = (format!("lone/{i}"), format!("v{i}"));
            let klen = k.len().to_string();
            let parts: [&[u8]; 4] = [klen.as_bytes(), b" ", k.as_bytes(), v.as_bytes()];
            match conn.call(op::PUT, 0, &parts) {
                Ok(f) if f.op == op::OK => acked.push((k.into_bytes(), v.into_bytes())),
                Ok(_) | Err(gtstore::client::ClientError::Server(_)) => {}
                Err(_) => break,
            }
        }
        acked
    });
    s.net.heal();
    s.node_addrs.push(addr);
    s.wait_states(&[], "the sixth node live");
    let lost = s.read_back(acked.clone());
    assert!(
        lost.is_empty(),
        "the lone node acknowledged {} writes; {} do not read back once it joined: {:?}",
        acked.len(),
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

// ---------------------------------------------------------------------------
// The harness itself.
// ---------------------------------------------------------------------------

/// Whether a TCP connection from host `from` to `to` opens within `wait`.
fn reaches(net: &Net, from: usize, to: std::net::SocketAddr, wait: Duration) -> bool {
    net.within(from, move || {
        std::net::TcpStream::connect_timeout(&to, wait).is_ok()
    })
}

/// Checks every ordered pair of `hosts` (listening on `addr`): connects where
/// `cut(a, b)` is false (given time for a lost SYN to be sent again), fails
/// where it is true.
fn check_pairs(
    net: &Net,
    hosts: &[usize],
    addr: &[std::net::SocketAddr],
    cut: impl Fn(usize, usize) -> bool,
    what: &str,
) {
    for (a, &from) in hosts.iter().enumerate() {
        for (b, &to) in addr.iter().enumerate() {
            let (blocked, wait) = match cut(a, b) {
                true => (true, Duration::from_millis(300)),
                false => (false, Duration::from_secs(5)),
            };
            assert_eq!(reaches(net, from, to, wait), !blocked, "{a} -> {b} {what}");
        }
    }
}

/// Blackholes cut exactly the pairs asked for, both ways; a port taken down
/// cuts its host off from everyone; healing restores everything.
#[test]
fn harness_cuts_and_heals() {
    let Some(mut net) = Net::new("harness_cuts_and_heals") else {
        return;
    };
    let hosts: Vec<usize> = (0..3).map(|_| net.add_host()).collect();
    // Listeners (the kernel completes handshakes without an accept).
    let listeners: Vec<std::net::TcpListener> = hosts
        .iter()
        .map(|&h| {
            let ip = net.host(h).ip.clone();
            net.within(h, move || {
                std::net::TcpListener::bind((ip.as_str(), 0)).unwrap()
            })
        })
        .collect();
    let addr: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    check_pairs(&net, &hosts, &addr, |_, _| false, "at the start");
    net.block(hosts[0], hosts[1]);
    let pair = |a, b| (a, b) == (0, 1) || (a, b) == (1, 0);
    check_pairs(&net, &hosts, &addr, pair, "with 0|1 blocked");
    net.heal();
    net.link(hosts[2], false);
    let lone = |a, b| (a == 2) != (b == 2);
    check_pairs(&net, &hosts, &addr, lone, "with host 2's port down");
    net.heal();
    check_pairs(&net, &hosts, &addr, |_, _| false, "healed");
}

/// The namespaces this test process has now.
fn namespaces() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// A test that panics leaves no process and no namespace behind, and a
/// namespace left by a test process that no longer runs is swept.
#[test]
fn harness_cleans_up() {
    if !netns::is_root("harness_cleans_up") {
        return;
    }
    // No process can have a pid above the kernel's limit (2^22).
    let stale = format!("{}{}-0-h0", netns::PREFIX, (1 << 22) + 1);
    let left = std::process::Command::new("ip")
        .args(["netns", "add", &stale])
        .output()
        .is_ok_and(|o| o.status.success());
    let seen = std::sync::Mutex::new(None);
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Some(mut net) = Net::new("harness_cleans_up") else {
            return;
        };
        let h = net.add_host();
        let ip = net.host(h).ip.clone();
        let bin = env!("CARGO_BIN_EXE_gtstore-manager");
        let p = net.spawn(h, bin, &["--host", &ip, "--port", "0", "--secret", SECRET]);
        *seen.lock().unwrap() = Some((net.namespaces(), net.proc(p).pid()));
        panic!("on purpose: the harness must clean up");
    }));
    let Some((names, pid)) = seen.into_inner().unwrap() else {
        return; // skipped: no namespaces here
    };
    assert!(run.is_err());
    let now = namespaces();
    assert!(left, "could not make the stale namespace {stale}");
    assert!(!now.contains(&stale), "stale namespace not swept: {now:?}");
    for n in names {
        assert!(!now.contains(&n), "{n} left behind: {now:?}");
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} left running"
    );
}

/// A record on key `k` for the pruning test: (invoked, completed) in ns.
fn rec(client: usize, request: Request, at: (u64, Option<u64>), outcome: Outcome) -> Record {
    Record {
        client,
        key: bytes::Bytes::from_static(b"k"),
        request,
        invoked: (at.0, 0),
        completed: at.1.map(|t| (t, 0)),
        outcome,
    }
}

/// Leaving out unobserved indeterminate writes changes no verdict: an
/// indeterminate write whose value was read stays (and its violation is
/// found), one nobody saw on a present key goes, and one on a key not yet
/// shown present stays (a CONFLICT may need it).
#[test]
fn pruning_keeps_every_verdict() {
    let put = |v: &'static str| Request::Put(bytes::Bytes::from_static(v.as_bytes()));
    let val = |v: &'static str| Outcome::Value(bytes::Bytes::from_static(v.as_bytes()));
    let verdict = |h: Vec<Record>| {
        let (h, pruned) = workload::prune_unobserved(h);
        let ok = linearizability::check(&h, Limits::default()) == Verdict::Linearizable;
        (ok, pruned)
    };
    let seen_then_gone = vec![
        rec(0, put("a"), (0, Some(1)), Outcome::Ok),
        rec(1, put("b"), (2, None), Outcome::NoReply),
        rec(2, Request::Get, (3, Some(4)), val("b")),
        rec(2, Request::Get, (5, Some(6)), val("a")),
    ];
    assert_eq!(verdict(seen_then_gone), (false, 0));
    let never_seen = vec![
        rec(0, put("a"), (0, Some(1)), Outcome::Ok),
        rec(1, put("b"), (2, None), Outcome::NoReply),
        rec(1, put("c"), (3, None), Outcome::Err("UNAVAILABLE x".into())),
        rec(2, Request::Get, (4, Some(5)), val("a")),
    ];
    assert_eq!(verdict(never_seen), (true, 2));
    let needed_for_a_conflict = vec![
        rec(0, put("a"), (0, None), Outcome::NoReply),
        rec(
            1,
            Request::Create("b".into()),
            (1, Some(2)),
            Outcome::Conflict,
        ),
    ];
    assert_eq!(verdict(needed_for_a_conflict), (true, 0));
}
