//! Randomized load and faults, and the invariants checked after them.
//!
//! [`Load`] keeps a few clients busy with random requests over a small key space
//! (so that they contend), each client pinned to a node and moved to another one
//! when its node stops answering. [`run_seed`] builds a cluster of a manager and
//! five or more nodes with the replication of a [`Setup`] (N = 1, or the real
//! manager's N = 3, R = 2, W = 2), runs load for a while under a [`Faults`] mix
//! chosen from the seed, heals everything, lets hinted handoff and resync run,
//! and checks:
//!
//! - [`check_copies`]: every key has the newest entry on all N nodes of its
//!   preference list (checked before any read, so read repair cannot mask it);
//! - [`check_no_hangs`]: no request went unanswered past the client's timeout;
//! - [`check_history`]: no acknowledged write lost, every key's history
//!   linearizable (when [`Setup::checks_durability`]).
//!
//! The checks live in [`super::invariants`].
//!
//! Fault mixes: [`Faults::benign`] (delays, reordering, split reads, joins,
//! leaves, short pauses) loses no state. [`Faults::crashy`] adds crashes of
//! memory-only nodes, restarts, partitions and connection resets without
//! limit. [`Faults::within`] is crashy under a crash budget: at most that many
//! nodes *lack state* at once, a node lacking state from its crash until it has
//! restarted and [`caught_up`]. With N replicas, R + W > N and a budget below
//! W, every acknowledged write keeps a copy on a node that never lost it, so the
//! durability checks are on; otherwise a crash may lose data by design and only
//! the liveness and repair invariants are checked.
//!
//! Seeds that fail because of a known bug in the node are listed in
//! [`KNOWN_FAILURES`], skipped by [`run_seeds`] and replayed by
//! ignored tests.
//!
//! Caveat: [`caught_up`] is an oracle (it reads every engine); the nodes cannot
//! know it, so the budget says what the guarantee assumes, not what an operator
//! can observe.

pub use super::invariants::{
    caught_up, check_copies, check_history, check_no_hangs, read_everywhere,
};

use super::client::{Outcome, Request};
use super::cluster::{node_addr, Cluster, ClusterConfig, DataDirs};
use super::disk::DiskFaults;
use super::rng::Rng;
use super::world::{ProcId, ProcState};
use crate::reactor::{Millis, Signal};
use crate::ring::{hash64, NodeState};
use bytes::Bytes;

/// Random requests from a few sequential clients.
pub struct Load {
    /// The load's client processes.
    pub clients: Vec<ProcId>,
    rng: Rng,
    keys: usize,
    serial: u64,
}

impl Load {
    /// `clients` clients over `keys` keys, on random live nodes.
    pub fn new(c: &mut Cluster, clients: usize, keys: usize, seed: u64) -> Load {
        let mut rng = Rng::new(seed ^ 0x10ad);
        let live = c.live_nodes();
        let ids = (0..clients)
            .map(|_| c.add_client(node_addr(*rng.pick(&live))))
            .collect();
        Load {
            clients: ids,
            rng,
            keys,
            serial: 0,
        }
    }

    /// The keys the load uses.
    pub fn keys(&self) -> Vec<Bytes> {
        (0..self.keys).map(Self::key).collect()
    }

    fn key(i: usize) -> Bytes {
        // Every fourth key is a counter (INCR), the others hold strings.
        Bytes::from(if i % 4 == 3 {
            format!("n{i}")
        } else {
            format!("k{i}")
        })
    }

    /// Starts a request on every idle client.
    fn issue(&mut self, c: &mut Cluster) {
        for j in 0..self.clients.len() {
            let p = self.clients[j];
            let Some(cl) = c.world.client(p) else {
                continue;
            };
            if cl.busy() {
                continue;
            }
            let failed = matches!(
                cl.last().map(|r| &r.outcome),
                Some(Outcome::NotSent | Outcome::NoReply)
            );
            if failed {
                // Its node may be gone: move to a node that serves.
                let ring = c.ring();
                let serving: Vec<usize> = c
                    .live_nodes()
                    .into_iter()
                    .filter(|&i| {
                        ring.nodes()
                            .iter()
                            .any(|n| n.addr == node_addr(i).to_string() && n.state == NodeState::Up)
                    })
                    .collect();
                if !serving.is_empty() {
                    let to = node_addr(*self.rng.pick(&serving));
                    c.world.client_retarget(p, to);
                }
            }
            let i = self.rng.below(self.keys as u64) as usize;
            let key = Self::key(i);
            self.serial += 1;
            let value = Bytes::from(format!("c{j}-{}", self.serial));
            let roll = self.rng.below(100);
            let request = if i % 4 == 3 {
                match roll {
                    0..=49 => Request::Incr(self.rng.range(1, 5) as i64),
                    50..=89 => Request::Get,
                    _ => Request::Delete,
                }
            } else {
                match roll {
                    0..=39 => Request::Get,
                    40..=74 => Request::Put(value),
                    75..=84 => Request::Delete,
                    85..=92 => Request::Create(value),
                    _ => Request::Update(value),
                }
            };
            c.world.client_start(p, request, key);
        }
    }

    /// Runs the load for `ms` of virtual time.
    pub fn run(&mut self, c: &mut Cluster, ms: Millis) {
        let end = c.world.now() + ms;
        loop {
            self.issue(c);
            let left = end.saturating_sub(c.world.now());
            if left == 0 {
                return;
            }
            let clients = &self.clients;
            let idle = c.world.run_while(left, |w| {
                clients
                    .iter()
                    .any(|&p| w.client(p).is_some_and(|cl| !cl.busy()))
            });
            if !idle {
                return;
            }
        }
    }

    /// Runs until no request is in flight (or `limit` ms); returns whether so.
    pub fn drain(&self, c: &mut Cluster, limit: Millis) -> bool {
        let clients = &self.clients;
        c.world.run_while(limit, |w| {
            clients
                .iter()
                .all(|&p| w.client(p).is_none_or(|cl| !cl.busy()))
        })
    }
}

/// A fault mix.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Pause a node for up to this long (0: never), in ms.
    pub max_pause: Millis,
    /// Let nodes join and leave (SIGTERM or DROP).
    pub membership: bool,
    /// Crash and restart nodes.
    pub crashes: bool,
    /// Partition nodes from each other and from the manager.
    pub partitions: bool,
    /// Reset random connections.
    pub resets: bool,
    /// The crash budget: at most this many storage nodes *lack state* at once,
    /// where a node lacks state from its crash until it has restarted and
    /// [`caught_up`]. `None`: no limit. Pauses, partitions and resets lose no
    /// state and are not limited.
    pub max_lacking: Option<usize>,
}

impl Faults {
    /// Delays, reordering, split reads, joins, leaves, short pauses: no fault
    /// that loses state or a message.
    pub fn benign() -> Faults {
        Faults {
            max_pause: 1_500,
            membership: true,
            crashes: false,
            partitions: false,
            resets: false,
            max_lacking: None,
        }
    }

    /// Everything, with no limit on how many nodes are down at once.
    pub fn crashy() -> Faults {
        Faults {
            max_pause: 4_000,
            membership: true,
            crashes: true,
            partitions: true,
            resets: true,
            max_lacking: None,
        }
    }

    /// Everything, with at most `budget` nodes lacking state at once (see
    /// [`Faults::max_lacking`]).
    pub fn within(budget: usize) -> Faults {
        Faults {
            max_lacking: Some(budget),
            ..Faults::crashy()
        }
    }
}

/// One randomized run's shape: cluster size, length, faults and replication.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    /// Storage nodes at the start (up to three more may join).
    pub nodes: usize,
    /// Virtual time of load and faults, in ms.
    pub ms: Millis,
    /// The fault mix.
    pub faults: Faults,
    /// Replicas per key (N).
    pub replicas: u32,
    /// Read quorum (R).
    pub read_quorum: u32,
    /// Write quorum (W).
    pub write_quorum: u32,
    /// Which nodes keep a data directory on a simulated disk (see
    /// [`super::cluster`]); a crash of such a node loses only what its disk had
    /// not synced.
    pub data_dirs: DataDirs,
}

/// Odds that one sync of a simulated disk fails, in runs with data
/// directories: a few per seed. The node stops; the run restarts it.
pub const FSYNC_FAIL_CHANCE: f64 = 0.000_5;

impl Setup {
    /// One copy per key (N = R = W = 1).
    pub fn single(nodes: usize, ms: Millis, faults: Faults) -> Setup {
        Setup {
            nodes,
            ms,
            faults,
            replicas: 1,
            read_quorum: 1,
            write_quorum: 1,
            data_dirs: DataDirs::None,
        }
    }

    /// The same run with data directories on the nodes `dirs` names.
    pub fn on_disks(self, dirs: DataDirs) -> Setup {
        Setup {
            data_dirs: dirs,
            ..self
        }
    }

    /// The real manager's defaults: N = 3, R = 2, W = 2.
    pub fn replicated(nodes: usize, ms: Millis, faults: Faults) -> Setup {
        Setup {
            replicas: 3,
            read_quorum: 2,
            write_quorum: 2,
            ..Setup::single(nodes, ms, faults)
        }
    }

    /// Whether the run must keep every acknowledged write and stay
    /// linearizable: always without crashes or when every node keeps a data
    /// directory (a crash then loses nothing acknowledged); otherwise only when
    /// keys are replicated with overlapping quorums (R + W > N) and the crash
    /// budget keeps fewer than W nodes lacking state at once, so that every
    /// acknowledged write keeps a copy on a node that did not lose it.
    pub fn checks_durability(&self) -> bool {
        if !self.faults.crashes || self.data_dirs == DataDirs::All {
            return true;
        }
        let overlapping = self.read_quorum + self.write_quorum > self.replicas;
        let budget = self.faults.max_lacking;
        self.replicas > 1 && overlapping && budget.is_some_and(|b| b < self.write_quorum as usize)
    }
}

/// What one seed did, for the summary line.
#[derive(Debug, Default)]
pub struct Report {
    /// Operations in the history.
    pub ops: usize,
    /// Faults injected.
    pub faults: usize,
    /// Node crashes among them.
    pub crashes: usize,
    /// Crashes of nodes with a data directory (they restart with it).
    pub disk_crashes: usize,
    /// Syncs the simulated disks failed (each stops its node).
    pub failed_syncs: u64,
    /// Crashes that tore a file's unsynced tail.
    pub torn: u64,
    /// Virtual time at the end, in ms.
    pub end: Millis,
    /// The world's fingerprint (equal runs, equal prints).
    pub fingerprint: u64,
}

/// Runs one seed: a cluster of `setup.nodes` nodes, load and faults for
/// `setup.ms`, then heal, settle, let repair run and check. `Err` explains the
/// first broken invariant.
pub fn run_seed(seed: u64, setup: &Setup) -> Result<Report, String> {
    let mut rng = Rng::new(seed);
    let mut cfg = ClusterConfig::new(seed);
    cfg.net.max_delay = rng.range(2, 20);
    cfg.net.slow_chance = [0.0, 0.01, 0.05][rng.below(3) as usize];
    cfg.manager.replicas = setup.replicas;
    cfg.manager.read_quorum = setup.read_quorum;
    cfg.manager.write_quorum = setup.write_quorum;
    cfg.data_dirs = setup.data_dirs;
    cfg.disk_faults = DiskFaults {
        torn: true,
        fsync_fails: FSYNC_FAIL_CHANCE,
    };
    let mut c = Cluster::new(cfg);
    // SIM_TRACE=N prints the last N inputs of a failing run.
    let tracing = std::env::var("SIM_TRACE").ok().and_then(|s| s.parse().ok());
    if let Some(lines) = tracing {
        c.world.enable_trace_lines(lines);
    }
    let result = run_cluster(&mut c, &mut rng, seed, setup);
    if result.is_err() && tracing.is_some() {
        for line in c.world.trace() {
            eprintln!("{line}");
        }
        let ids: Vec<String> = (c.ring().nodes().iter())
            .map(|n| format!("id {} = n{}", n.id, c.number_at(&n.addr).unwrap_or(0)))
            .collect();
        eprintln!("ring: {}; {}", c.ring_line(), ids.join(", "));
    }
    result
}

/// How long, after the faults heal and the ring settles, hinted handoff and
/// resync get to bring every key back to N copies, in virtual ms.
pub const REPAIR_LIMIT_MS: Millis = 30_000;

fn run_cluster(c: &mut Cluster, rng: &mut Rng, seed: u64, setup: &Setup) -> Result<Report, String> {
    let copies = setup.replicas as usize;
    for i in 1..=setup.nodes {
        c.start_node(i);
        c.world.run_for(300);
    }
    if !c.settle(30_000) {
        return Err(format!("the first ring did not settle: {}", c.ring_line()));
    }
    let mut load = Load::new(
        c,
        3 + rng.below(3) as usize,
        4 + rng.below(12) as usize,
        seed,
    );
    let keys = load.keys();
    let mut chaos = Chaos::new(setup);
    let end = c.world.now() + setup.ms;
    while c.world.now() < end {
        load.run(c, rng.range(50, 400));
        let now = c.world.now();
        chaos.wake_due(c, now);
        chaos.restart_stopped(c, rng, now);
        // A node waiting for its restart (crashed, or stopped by a failed
        // fsync, which leaves it `Exited` like a node that left) still lacks.
        let waiting = &chaos.crashed;
        (chaos.lacking)
            .retain(|&p| waiting.iter().any(|e| e.0 == p) || !caught_up(c, p, &keys, copies));
        chaos.note_ring(c, &keys);
        if c.world.partitioned() && rng.chance(0.3) {
            c.world.heal();
        }
        chaos.inject(c, rng, now);
    }
    chaos.heal_all(c, rng);
    if !load.drain(c, 30_000) {
        return Err("requests still in flight 30 s after the faults healed".into());
    }
    if !c.settle(120_000) {
        let why = c.unsettled().unwrap_or_default();
        return Err(format!(
            "did not settle after healing: {} ({why})",
            c.ring_line()
        ));
    }
    check_after_healing(c, &keys, setup, chaos.report)
}

/// After the faults healed and the ring settled: waits for repair, checks the
/// copies, reads every key everywhere and checks the history.
fn check_after_healing(
    c: &mut Cluster,
    keys: &[Bytes],
    setup: &Setup,
    mut report: Report,
) -> Result<Report, String> {
    let copies = setup.replicas as usize;
    // Let hints and resync run (the nodes push them on their 100 ms tick), then
    // check the copies before any read can repair them.
    let mut repaired = false;
    let repair_end = c.world.now() + REPAIR_LIMIT_MS;
    while !repaired && c.world.now() < repair_end {
        c.world.run_for(100);
        repaired = check_copies(c, keys, copies).is_ok();
    }
    let copies_ok = check_copies(c, keys, copies)
        .map_err(|e| format!("{} s after healing: {e}", REPAIR_LIMIT_MS / 1000));
    read_everywhere(c, keys);
    let history = c.history();
    report.ops = history.len();
    report.end = c.world.now();
    report.fingerprint = c.world.fingerprint();
    for d in c.disks.values() {
        let s = d.stats();
        report.failed_syncs += s.failed_syncs;
        report.torn += s.torn;
    }
    // Every request is answered, or fails when its own connection breaks (a
    // node that leaves exits with requests in flight on its client connections).
    check_no_hangs(&history)?;
    if setup.checks_durability() {
        check_history(&history)?;
    }
    copies_ok?;
    Ok(report)
}

/// The faults in force during a run, and the count of those injected.
struct Chaos {
    nodes: usize,
    faults: Faults,
    copies: usize,
    /// The number of the next node to start.
    next_node: usize,
    /// Paused nodes and when they resume.
    paused: Vec<(ProcId, Millis)>,
    /// Crashed nodes and when they restart.
    crashed: Vec<(ProcId, Millis)>,
    /// Nodes lacking state: crashed, or restarted and not caught up yet.
    lacking: Vec<ProcId>,
    /// Failed syncs seen per node's disk (a new one stopped the node).
    failed_syncs: std::collections::BTreeMap<usize, u64>,
    /// Nodes sent a SIGTERM (since their last crash): never sent another, as
    /// a second SIGTERM stops a node at once, without its handoff.
    terminated: Vec<ProcId>,
    seen_epoch: u64,
    report: Report,
}

impl Chaos {
    fn new(setup: &Setup) -> Chaos {
        Chaos {
            nodes: setup.nodes,
            faults: setup.faults,
            copies: setup.replicas as usize,
            next_node: setup.nodes + 1,
            paused: Vec::new(),
            crashed: Vec::new(),
            lacking: Vec::new(),
            failed_syncs: Default::default(),
            terminated: Vec::new(),
            seen_epoch: 0,
            report: Report::default(),
        }
    }

    /// Resumes and restarts the nodes whose time has come.
    fn wake_due(&mut self, c: &mut Cluster, now: Millis) {
        for (p, until) in std::mem::take(&mut self.paused) {
            if until <= now {
                c.world.resume(p);
            } else {
                self.paused.push((p, until));
            }
        }
        for (p, until) in std::mem::take(&mut self.crashed) {
            if until <= now {
                c.world.restart(p);
            } else {
                self.crashed.push((p, until));
            }
        }
    }

    /// Schedules the restart of nodes whose disk failed a sync (they stopped),
    /// as an operator or a supervisor would.
    fn restart_stopped(&mut self, c: &mut Cluster, rng: &mut Rng, now: Millis) {
        for (&i, d) in &c.disks {
            let failed = d.stats().failed_syncs;
            let seen = self.failed_syncs.entry(i).or_default();
            if failed == *seen {
                continue;
            }
            *seen = failed;
            let p = c.nodes[&i];
            let stopped = c.world.proc(p).state == ProcState::Exited;
            if stopped && !self.crashed.iter().any(|e| e.0 == p) {
                self.crashed.push((p, now + rng.range(200, 5_000)));
                // An outage like a crash's, counted against the same budget.
                if !self.lacking.contains(&p) {
                    self.lacking.push(p);
                }
            }
        }
    }

    /// Notes a new ring in the trace, with every key's preference list.
    fn note_ring(&mut self, c: &mut Cluster, keys: &[Bytes]) {
        let epoch = c.ring().epoch;
        if epoch == self.seen_epoch {
            return;
        }
        self.seen_epoch = epoch;
        let copies = self.copies;
        let (line, ring) = (c.ring_line(), c.ring().serving());
        c.world.trace_note(|| {
            let lists: Vec<String> = (keys.iter())
                .map(|k| {
                    let l = ring.preference_list(hash64(k), copies);
                    format!("{}={l:?}", String::from_utf8_lossy(k))
                })
                .collect();
            format!("{line}; serving lists by id: {}", lists.join(" "))
        });
    }

    /// Maybe injects one fault, as the roll and the fault mix allow.
    fn inject(&mut self, c: &mut Cluster, rng: &mut Rng, now: Millis) {
        let (nodes, faults) = (self.nodes, self.faults);
        let report = &mut self.report;
        let ring = c.ring();
        let live = c.live_nodes();
        let up: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&i| {
                ring.nodes()
                    .iter()
                    .any(|n| n.addr == node_addr(i).to_string() && n.state == NodeState::Up)
            })
            .collect();
        let roll = rng.below(100);
        let victim = |rng: &mut Rng| c.nodes[rng.pick(&up)];
        let may_crash = faults.max_lacking.is_none_or(|b| self.lacking.len() < b);
        match roll {
            0..=9 if faults.max_pause > 0 && !up.is_empty() => {
                let p = victim(rng);
                if c.world.proc(p).state == ProcState::Up {
                    c.world.pause(p);
                    self.paused
                        .push((p, now + rng.range(100, faults.max_pause)));
                    report.faults += 1;
                }
            }
            10..=13 if faults.membership && self.next_node <= nodes + 3 && !ring.has_moves() => {
                c.start_node(self.next_node);
                self.next_node += 1;
                report.faults += 1;
            }
            14..=16 if faults.membership && up.len() > nodes - 1 && !ring.has_moves() => {
                let i = *rng.pick(&up);
                let p = c.nodes[&i];
                if rng.chance(0.5) {
                    // A leave by SIGTERM, once: the node may still show `up`
                    // (paused, or its LEAVE not through yet), and a second
                    // SIGTERM would stop it at once, an exit no mix intends.
                    if self.terminated.contains(&p) {
                        return;
                    }
                    self.terminated.push(p);
                    c.world.signal(p, Signal::Terminate);
                } else {
                    let m = c.manager_client();
                    let req = Request::Other(crate::protocol::op::DROP);
                    c.world
                        .client_start(m, req, Bytes::from(node_addr(i).to_string()));
                }
                report.faults += 1;
            }
            20..=24 if faults.crashes && up.len() > 1 && may_crash => {
                let p = victim(rng);
                c.world.crash(p);
                // Its restart is a new process, which may be told to leave.
                self.terminated.retain(|&q| q != p);
                self.crashed.push((p, now + rng.range(200, 5_000)));
                // A node with a data directory keeps what it acknowledged, but
                // it still counts against the budget until it caught up with
                // what it missed while down: the budget bounds the outages
                // repair must cover, not only the losses.
                if c.number_of(p).is_some_and(|i| c.disks.contains_key(&i)) {
                    report.disk_crashes += 1;
                }
                if !self.lacking.contains(&p) {
                    self.lacking.push(p);
                }
                report.faults += 1;
                report.crashes += 1;
            }
            25..=29 if faults.partitions && !c.world.partitioned() => {
                let mut side: Vec<ProcId> = vec![];
                let mut other: Vec<ProcId> = vec![c.manager];
                for &i in &live {
                    if rng.chance(0.4) {
                        side.push(c.nodes[&i]);
                    } else {
                        other.push(c.nodes[&i]);
                    }
                }
                let reset = rng.chance(0.5).then(|| rng.range(500, 5_000));
                c.world.partition(&[side, other], reset);
                report.faults += 1;
            }
            30..=39 if faults.resets => {
                let conns = c.world.connection_numbers();
                if !conns.is_empty() {
                    c.world.reset(*rng.pick(&conns));
                    report.faults += 1;
                }
            }
            _ => {}
        }
    }

    /// Heals the partition and the disks, and wakes every paused, crashed and
    /// stopped node.
    fn heal_all(&mut self, c: &mut Cluster, rng: &mut Rng) {
        c.world.heal();
        // The disks stop failing; nodes a failed sync stopped come back.
        for d in c.disks.values() {
            d.set_faults(DiskFaults {
                torn: true,
                fsync_fails: 0.0,
            });
        }
        self.restart_stopped(c, rng, c.world.now());
        for (p, _) in std::mem::take(&mut self.paused) {
            c.world.resume(p);
        }
        for (p, _) in std::mem::take(&mut self.crashed) {
            c.world.restart(p);
        }
    }
}

/// The seeds to run: `SIM_SEED=S` runs only `S`; `SIM_SEEDS=N` runs `N` seeds
/// from `first`; otherwise `default` seeds from `first`.
pub fn seeds(first: u64, default: u64) -> Vec<u64> {
    if let Some(s) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![s];
    }
    let n = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (first..first + n).collect()
}

/// Seeds that fail because of a known bug in the node, with the bug, described
/// in docs/architecture.md section 9. [`run_seeds`] skips them unless `SIM_SEED`
/// names one; an ignored test replays each (`cargo test --lib -- --ignored
/// known_`). Remove a seed once its bug is fixed.
///
/// All four pass as of commit 27beb3e: later changes moved their schedules
/// (the restart case may also be covered by `SYNC_REQ`). The bugs are not
/// verified fixed, so they stay listed until someone checks each mechanism.
pub const KNOWN_FAILURES: &[(u64, &str)] = &[];

/// Runs `run` on every seed of [`seeds`] except the [`KNOWN_FAILURES`] (unless
/// `SIM_SEED` asks for one) and panics with the failing seeds and how to replay
/// them.
pub fn run_seeds(name: &str, seeds: &[u64], run: impl Fn(u64) -> Result<Report, String>) {
    let mut failed = Vec::new();
    let (mut ops, mut faults, mut crashes) = (0, 0, 0);
    let (mut disk_crashes, mut failed_syncs, mut torn) = (0, 0, 0);
    let replaying = std::env::var("SIM_SEED").is_ok();
    for &s in seeds {
        if let Some((_, why)) = KNOWN_FAILURES.iter().find(|k| k.0 == s && !replaying) {
            eprintln!("{name}: seed {s} skipped, a known failure: {why}");
            continue;
        }
        match run(s) {
            Ok(r) => {
                ops += r.ops;
                faults += r.faults;
                crashes += r.crashes;
                disk_crashes += r.disk_crashes;
                failed_syncs += r.failed_syncs;
                torn += r.torn;
            }
            Err(e) => {
                eprintln!("{name}: seed {s} failed (replay: SIM_SEED={s}): {e}");
                failed.push(s);
            }
        }
    }
    eprintln!(
        "{name}: {} seeds, {ops} ops, {faults} faults ({crashes} crashes, {disk_crashes} \
         with a data directory; {failed_syncs} failed fsyncs, {torn} torn tails), {} failed",
        seeds.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{name}: seeds {failed:?} failed; replay one with SIM_SEED=<seed>"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Virtual time of load and faults per seed in CI, in ms.
    const MS: Millis = 6_000;

    #[test]
    fn sim_benign_faults_lose_nothing_and_stay_linearizable() {
        let seeds = seeds(1, 40);
        run_seeds("benign N=1", &seeds, |s| {
            run_seed(s, &Setup::single(5, MS, Faults::benign()))
        });
    }

    #[test]
    fn sim_replicated_benign_faults_lose_nothing_and_stay_linearizable() {
        let seeds = seeds(2_000_000, 60);
        run_seeds("benign N=3", &seeds, |s| {
            run_seed(s, &Setup::replicated(5, MS, Faults::benign()))
        });
    }

    #[test]
    fn sim_replicated_crashes_within_the_budget_lose_nothing() {
        let seeds = seeds(3_000_000, 120);
        run_seeds("crash N=3 W=2, one node lacking at a time", &seeds, |s| {
            run_seed(s, &crash_setup())
        });
    }

    #[test]
    fn sim_crashes_partitions_and_resets_never_hang_a_request() {
        let seeds = seeds(1_000_000, 40);
        run_seeds("crashy N=3, no budget", &seeds, |s| {
            run_seed(s, &Setup::replicated(5, MS, Faults::crashy()))
        });
    }

    #[test]
    fn sim_single_copy_on_data_dirs_crashes_lose_nothing() {
        let seeds = seeds(4_000_000, 30);
        // No joins or leaves: with one copy, a key whose owner is down when a
        // join moves it arrives empty at its new owner, data directory or not.
        let faults = Faults {
            membership: false,
            ..Faults::crashy()
        };
        run_seeds(
            "crashy N=1 without joins, every node on a disk",
            &seeds,
            |s| run_seed(s, &Setup::single(5, MS, faults).on_disks(DataDirs::All)),
        );
    }

    #[test]
    fn sim_replicated_on_data_dirs_crashes_without_budget_lose_nothing() {
        let seeds = seeds(5_000_000, 30);
        // Crashes, pauses, joins and leaves, but no partitions or resets: a
        // lost link lets two nodes coordinate one key at once, which breaks
        // linearizability with or without a data directory.
        let faults = Faults {
            partitions: false,
            resets: false,
            ..Faults::crashy()
        };
        run_seeds("crashes N=3, every node on a disk", &seeds, |s| {
            run_seed(s, &Setup::replicated(5, MS, faults).on_disks(DataDirs::All))
        });
    }

    #[test]
    fn sim_replicated_crashes_within_the_budget_some_nodes_on_disks() {
        let seeds = seeds(6_000_000, 30);
        run_seeds("crash N=3 W=2, odd nodes on a disk", &seeds, |s| {
            run_seed(s, &crash_setup().on_disks(DataDirs::Odd))
        });
    }

    #[test]
    fn the_durability_checks_follow_the_budget() {
        let r = |f| Setup::replicated(5, MS, f);
        assert!(r(Faults::benign()).checks_durability());
        assert!(r(Faults::within(1)).checks_durability());
        assert!(!r(Faults::within(2)).checks_durability());
        assert!(!r(Faults::crashy()).checks_durability());
        assert!(!Setup::single(5, MS, Faults::within(1)).checks_durability());
        assert!(Setup::single(5, MS, Faults::benign()).checks_durability());
        let disks = |s: Setup| s.on_disks(DataDirs::All).checks_durability();
        assert!(disks(Setup::single(5, MS, Faults::crashy())));
        assert!(disks(r(Faults::crashy())));
        assert!(!Setup::single(5, MS, Faults::crashy()).checks_durability());
        assert!(!r(Faults::crashy())
            .on_disks(DataDirs::Odd)
            .checks_durability());
    }

    fn crash_setup() -> Setup {
        Setup::replicated(5, MS, Faults::within(1))
    }

    /// A DELETE decided on a read that saw c0-65 is refused by the replicas,
    /// which hold the newer acknowledged PUT c0-72; its tombstone stays on the
    /// coordinator with a version above c0-72's, so that node refuses c0-72
    /// and answers later reads with the tombstone, read repair spreads it, and
    /// the acknowledged c0-72 is gone while the DELETE answered NOT_FOUND.
    /// (Seeds 3000051 and 3000052 showed the same bug through a CREATE and a
    /// DELETE before the hint fixes changed their schedules.) Fixed by putting
    /// the coordinator's entry back and retrying over the refused copies
    /// (commit 0a630e3).
    #[test]
    fn fixed_refused_delete_hides_an_acknowledged_put_3000141() {
        run_seed(3_000_141, &crash_setup()).unwrap();
    }

    /// Node 4 crashes and restarts at the same instant (the load phase ended):
    /// its new NODE_JOIN reaches the manager before the reset of its old link,
    /// the manager keeps it up, the ring never changes, and nothing resynced it.
    /// Covered now because a restarted process catches up by itself (its first
    /// ring lists it serving: it asks every peer). The seed had stopped showing
    /// the bug before that fix (other fixes moved its schedule); it stays as a
    /// regression test, like the three below.
    #[test]
    fn fixed_unnoticed_restart_is_never_refilled_3000492() {
        run_seed(3_000_492, &crash_setup()).unwrap();
    }

    /// Node 5 comes back while node 7 joins; node 2 owes it key k4, but node 7's
    /// join flips 64 ms later, takes node 2 off k4's list, and node 2 drops k4
    /// before its queued push leaves. Node 5 is on the list both before and
    /// after the flip, so nobody owes it anything any more. Covered now because
    /// node 5, back from down, catches up: every live peer pushes it everything
    /// they share, so another holder of k4 sends it.
    #[test]
    fn fixed_resync_dropped_at_a_flip_3000625() {
        run_seed(3_000_625, &crash_setup()).unwrap();
    }

    /// k2's list is nodes 2, 6, 5. Node 5 (crashed, empty) comes back while
    /// nodes 2 and 6 are down (a pause and a partition): no live holder can
    /// push. When node 2 comes back it is newly responsible itself and pushes
    /// nothing to node 5, which holds k2 in nobody's view as owed. Covered now:
    /// a catch-up remembers the peers it went without because they were down
    /// and asks each for its keys once it is back.
    #[test]
    fn fixed_no_pusher_left_3000948() {
        run_seed(3_000_948, &crash_setup()).unwrap();
    }

    /// An unbudgeted crash run (three nodes down at once): node 4 comes back
    /// empty while node 2, which holds k6's newest entry, is down, and node 1
    /// pushes nothing to it. Not traced to the end; its shape matches 3000948's.
    #[test]
    fn fixed_no_pusher_left_unbudgeted_1000015() {
        run_seed(1_000_015, &Setup::replicated(5, MS, Faults::crashy())).unwrap();
    }

    // Seeds that failed and whose bugs are fixed, replayed so they stay fixed.
    // A seed pins a schedule that changes with the node's code, so each bug
    // also has a focused unit test in the node (named in its comment).

    /// A late answer to an INCR's read round arrived after the round had moved
    /// on to writing and was taken for the replica's refusal of the write; its
    /// real acknowledgement was then ignored, the write "failed", and its retry
    /// applied the INCR a second time on top of a write built on the first.
    /// (`quorum::tests::the_read_and_write_phases_of_an_attempt_have_different_tags`.)
    #[test]
    fn fixed_late_read_answer_taken_for_a_refusal_2000666() {
        run_seed(2_000_666, &Setup::replicated(5, MS, Faults::benign())).unwrap();
    }

    /// Node 5, paused through a leave, came back with its old ring and
    /// coordinated an INCR against a node that had left the ring (still in its
    /// exit grace, with a copy five writes old); then it and the new
    /// coordinator both wrote the key in the same millisecond with the same
    /// version, so both writes were acknowledged. (`node::tests::
    /// replica_requests_for_keys_this_node_does_not_keep_are_refused`,
    /// `engine::tests::two_writers_never_make_the_same_version`.)
    #[test]
    fn fixed_stale_quorum_member_and_equal_versions_3000044() {
        run_seed(3_000_044, &crash_setup()).unwrap();
    }

    /// At a join's flip, the old coordinator's INCR was read by the new one
    /// (from a replica that took it) and built upon; the old one's write was
    /// then refused by the newer version and retried: applied twice.
    #[test]
    fn fixed_retry_after_another_coordinators_refusal_2000300() {
        run_seed(2_000_300, &Setup::replicated(5, MS, Faults::benign())).unwrap();
    }

    /// A joining node whose JOINED answer was late served a DELETE its peers
    /// routed to it alone, unreplicated, while the old coordinator served
    /// another: both answered OK for one value. (`node::tests::
    /// a_node_not_yet_registered_does_not_serve_keys_peers_route_to_it`.)
    #[test]
    fn fixed_unregistered_node_coordinating_2000423() {
        run_seed(2_000_423, &Setup::replicated(5, MS, Faults::benign())).unwrap();
    }

    /// N = 1, a move pending: the old owner applied an INCR and copied it to
    /// the next owner; a GET read it there; the next owner, already the owner
    /// after the flip, had taken another INCR and refused the copy, so the
    /// read value vanished. Fixed: the old owner applies a moving key's write
    /// only once the next owner took it. (No unit test: the N = 1 move path
    /// is covered by this seed and by the integration tests of moves.)
    #[test]
    fn fixed_uncommitted_write_read_during_a_move_438() {
        run_seed(438, &Setup::single(5, MS, Faults::benign())).unwrap();
    }

    /// N = 1: node 5, leaving, handed counter n3 to node 6 and from then on
    /// forwarded n3's requests there (the write fence), so its own copy
    /// stayed at 19 while node 6 counted on to 31. Node 3 went down: a new
    /// epoch with the same move started a new handoff, the fence was gone
    /// until it was acknowledged, and node 5 served GETs from its old copy
    /// (19). Fixed: the fence outlives an epoch that keeps the key's next
    /// owner (`moves/handoff.rs`; `moves::tests::the_fence_outlives_...`).
    /// Seed 9403 shows it with the other fixes of this group in place (a
    /// move that waits for a down node spans more epochs) and fails without
    /// this one; 6552 also passes with only the manager's fix below.
    #[test]
    fn fixed_fence_lost_at_a_ring_change_that_keeps_the_move_6552_9403() {
        for seed in [6_552, 9_403] {
            run_seed(seed, &Setup::single(5, MS, Faults::benign())).unwrap();
        }
    }

    /// N = 1: node 1, leaving, copied an UPDATE of k5 to its next owner,
    /// node 5; before the acknowledgement came, node 6 joined and took k5
    /// over, and node 1's handoff for that ring sent node 6 k5 without the
    /// UPDATE (not applied yet). The acknowledgement then applied it on node
    /// 1 alone and answered OK; at the flip node 6 served the older value.
    /// Fixed: an acknowledged copy whose key now moves to another node is
    /// copied there too before it is applied and answered
    /// (`moves::tests::a_copy_taken_after_the_next_owner_changed_...`, which
    /// fails without it; this seed's schedule also passes with any one of the
    /// other fixes of this group).
    #[test]
    fn fixed_write_copied_to_a_replaced_next_owner_6736() {
        run_seed(6_736, &Setup::single(5, MS, Faults::benign())).unwrap();
    }

    /// N = 1: node 4, leaving, sent counter n7 (5) to node 1, which still had
    /// a ring two epochs old (its manager link was slow), took it and
    /// acknowledged; installing the next ring, which did not give it n7 yet,
    /// it dropped n7, and at the flip it owned n7 empty (an INCR 1 gave 1).
    /// Fixed: a node refuses moved data for keys its ring does not give it,
    /// and the sender sends again (`local.rs`, `check_replica_of`).
    #[test]
    fn fixed_moved_key_dropped_by_a_late_ring_9152() {
        run_seed(9_152, &Setup::single(5, MS, Faults::benign())).unwrap();
    }

    /// N = 1: node 1, paused, owned k0 when node 6 joined; the manager
    /// marked node 1 down and flipped the ring without its handoff, so node
    /// 6 answered a CREATE of k0 OK as if absent while node 1, back, still
    /// held k0's acknowledged value. Fixed: with one copy the manager waits
    /// for down nodes' handoffs too (`coordinator/tokens.rs`).
    #[test]
    fn fixed_flip_past_a_down_single_owner_9722() {
        run_seed(9_722, &Setup::single(5, MS, Faults::benign())).unwrap();
    }

    /// A simulator bug, not the node's: node 2 answered the client's DELETE
    /// and exited (its leave done); a reset of that connection then dropped
    /// the reply and the FIN in flight and, node 2's end being gone, gave the
    /// client nothing, so it waited out its 12 s timeout. A real client sees
    /// the connection close. Fixed in `World::reset` (seeds 1003756,
    /// 3003072 and 3008594 had the same shape, with a crash or a leave).
    #[test]
    fn fixed_reset_after_the_peer_died_hides_the_close_6004882() {
        run_seed(6_004_882, &crash_setup().on_disks(DataDirs::Odd)).unwrap();
    }

    /// Two rings serving one counter while nodes crashed and a node joined: a
    /// DELETE acknowledged by the new ring's lead was missed by a GET that a
    /// node the manager had marked down served by its old ring, from itself
    /// and another such node. Closed by three rules: plain replica requests
    /// carry the lead's fence (ring epoch and a mark of the key's lists) and
    /// a replica on a newer ring that lists the key otherwise refuses them; a
    /// move flips only while N - R + 1, N - W + 1 and a majority of each
    /// moving range's holders run its ring; and a plain read during a move
    /// needs R copies of the key's old list and of its new one.
    #[test]
    fn two_rings_serving_one_key_3000144() {
        run_seed(3_000_144, &crash_setup()).unwrap();
    }

    /// Found while fencing plain requests: a GET refused by both replicas
    /// (their rings were newer) was retried at a tick in the very turn its
    /// first attempt's speculative timer fired; that timer sent the turn's
    /// queued asks while the read was out of the pending map, so its new asks
    /// were dropped and it never answered. Fixed: a spare entry of an earlier
    /// attempt is skipped (2008725 and, without a budget, 1006465 too).
    #[test]
    fn fixed_retried_read_lost_its_asks_2000279() {
        run_seed(2_000_279, &Setup::replicated(5, MS, Faults::benign())).unwrap();
    }

    /// Found while fencing plain requests: a leaving node led an INCR whose
    /// commit came after the move's flip took it off the key's lists; the
    /// commit's REPLICATE carried the fence of the ring the op started by,
    /// so the new list's holders refused it, and the lead counted its own
    /// copy (off the list now) with the newcomer's toward W. A GET on the new
    /// ring then read the value from before. Fixed: a write round's fence is
    /// the ring's as it sends, and a commit counts the lead's copy only if
    /// its ring still lists it.
    #[test]
    fn fixed_commit_after_the_flip_that_took_its_lead_off_2007646() {
        run_seed(2_007_646, &Setup::replicated(5, MS, Faults::benign())).unwrap();
    }

    /// Found while fencing plain requests: a PUT acknowledged by two of a
    /// key's three nodes, one of which then restarted without a data
    /// directory while the other was paused; the restarted node's catch-up
    /// went without the paused one, and a GET read it and the third replica,
    /// which both lacked the PUT. Fixed: a node that restarted empty stays
    /// behind on the keys it shares with a peer its catch-up went without
    /// until that peer has pushed.
    #[test]
    fn fixed_catch_up_without_the_only_other_holder_6009506() {
        run_seed(6_009_506, &crash_setup().on_disks(DataDirs::Odd)).unwrap();
    }

    /// Found while building Paxos: a DELETE's accept round failed as soon as
    /// a newcomer refused, before another replica's acceptance arrived, and was
    /// answered UNAVAILABLE; a later lead found the accepted DELETE and
    /// finished it. Fixed: an accept that may have reached a replica is
    /// UNKNOWN (`replication::tests::an_accept_refused_after_this_node_accepted_is_unknown_and_never_stored`).
    #[test]
    fn fixed_failed_accept_finished_by_another_lead_3000606() {
        run_seed(3_000_606, &crash_setup()).unwrap();
    }

    /// Two leads of one counter: node 3 found node 5's accepted 19, and its
    /// accept of it (to finish it) was refused by node 5's higher ballot; its
    /// next attempt decided and committed 20 but still counted as finishing
    /// another proposal, so it started again and applied the INCR a second
    /// time (21). Fixed: each attempt starts as this op's own
    /// (`replication::tests::an_op_whose_finishing_of_another_proposal_was_refused_is_applied_once`).
    #[test]
    fn fixed_incr_applied_twice_after_finishing_another_proposal_2003918() {
        run_seed(2_003_918, &Setup::replicated(5, MS, Faults::benign())).unwrap();
    }

    /// Node 6 joined while nodes 2 and 4, which held k0's two newest
    /// acknowledged PUTs, were paused and marked down and node 3, the third
    /// holder, had crashed: the join flipped, node 6 served k0 without them,
    /// and a GET from node 6 and the restarted, empty node 3 returned an older
    /// value. Fixed: the manager flips a move only while N - W + 1 holders of
    /// every moving range are up to hand it over
    /// (`coordinator::tests::a_move_flips_only_while_enough_holders_of_each_range_are_up`).
    /// Sixteen other seeds of the 10,000-seed N = 3 runs (3002299, 5007885,
    /// ...) held a flip the same way and pass with it.
    #[test]
    fn fixed_join_flipped_with_the_holders_down_3001267() {
        run_seed(3_001_267, &crash_setup()).unwrap();
    }

    /// The same with every node on a disk: n11's holders (nodes 1, 2, 3) were
    /// all down when node 6's join flipped, then node 7's took nodes 1 and 3
    /// off its list; an acknowledged INCR's 3 was gone and a GET said
    /// NOT_FOUND.
    #[test]
    fn fixed_join_flipped_with_the_holders_down_on_disks_5007885() {
        let faults = Faults {
            partitions: false,
            resets: false,
            ..Faults::crashy()
        };
        let setup = Setup::replicated(5, MS, faults).on_disks(DataDirs::All);
        run_seed(5_007_885, &setup).unwrap();
    }

    /// Node 2 led an INCR on n11 (list 2, 3, 1; node 3 crashed) and paused
    /// after nodes 2 and 1 accepted its proposal 3: chosen, not committed.
    /// Node 6's join then took node 1 off n11's list and, with node 2 down,
    /// node 6 led the next INCR with node 3: neither had the proposal (a move
    /// carried only committed entries), so it decided 2 on the empty key and
    /// the chosen 3 was lost. Fixed: a move hands over accepted proposals too
    /// (`ACCEPT` of the same ballot to the nodes it adds), and a newcomer
    /// takes and keeps those from before it started
    /// (`paxos::tests::a_newcomer_takes_and_keeps_a_handed_over_proposal_from_before_its_start`).
    #[test]
    fn fixed_accepted_proposal_left_behind_by_a_move_3003497() {
        run_seed(3_003_497, &crash_setup()).unwrap();
    }

    /// A PUT of c3-19 was stored by its lead and read; a DELETE (Paxos, on
    /// another lead) removed it; a replica holding the DELETE's newer version
    /// then refused the PUT's write round, and the PUT was written again with
    /// a version above the DELETE: c3-19 came back after an acknowledged
    /// DELETE. Fixed: a PUT refused by a newer version fails `ERR UNKNOWN`
    /// and is not written again
    /// (`replication::tests::a_put_refused_by_a_newer_version_is_unknown_and_not_written_again`).
    /// Seeds 3002685 and 5002237 were the same.
    #[test]
    fn fixed_put_written_again_above_a_delete_5001912() {
        let faults = Faults {
            partitions: false,
            resets: false,
            ..Faults::crashy()
        };
        let setup = Setup::replicated(5, MS, faults).on_disks(DataDirs::All);
        run_seed(5_001_912, &setup).unwrap();
    }

    /// [`fixed_put_written_again_above_a_delete_5001912`] in a budgeted crash
    /// run: c2-33 read, overwritten by c0-38, then written again.
    #[test]
    fn fixed_put_written_again_3002685() {
        run_seed(3_002_685, &crash_setup()).unwrap();
    }

    /// Node 1, paused, was marked down and dropped (DROP) while its manager
    /// link stayed open. Back from the pause it installed a ring without
    /// itself and ran on outside the ring, its heartbeats ignored (the manager
    /// had forgotten its id), so the ring never settled. Ten more seeds of the
    /// 10,000-seed runs had the same shape (1007306, 5002262, 6008145, ...).
    /// Fixed: the manager closes a dropped node's link, and the process
    /// registers again as a new node (`coordinator::tests::
    /// a_dropped_node_still_linked_is_cut_off_and_joins_again_as_a_new_node`).
    #[test]
    fn fixed_dropped_node_running_outside_the_ring_3009852() {
        run_seed(3_009_852, &crash_setup()).unwrap();
    }

    /// The driver sent SIGTERM to paused node 1 twice (its ring still showed
    /// it `up`, the first signal waiting for the pause to end); both arrived
    /// at once, and a second SIGTERM stops a node without its handoff. Its
    /// keys (N = 1, memory only) were gone and it stayed `down` in the ring
    /// for good. Five more seeds (6276, 1009216, 3005465, 3007457, 6005391)
    /// had a second SIGTERM reach a node whose LEAVE had not got through (a
    /// pause or a partition). Fixed in the driver, not the node: a node gets
    /// one SIGTERM (a leave), never the "stop now" of a second.
    #[test]
    fn fixed_second_sigterm_from_the_driver_6042() {
        run_seed(6_042, &Setup::single(5, MS, Faults::benign())).unwrap();
    }

    /// A partition cut nodes 1, 2, 4, 5 and 6 off the manager; before it
    /// noticed, the driver told node 1 to leave (SIGTERM), and its LEAVE
    /// waited in the partition. At the heal it came right behind node 1's
    /// heartbeat, when the manager had every other node down: node 1 was "the
    /// last serving node" and was refused, exited without a handoff, and stayed
    /// `down` in the ring for good (no `--dead-after`). Fixed: only a node
    /// alone in the ring is refused; node 1 stays `leaving`, serving, and its
    /// move waits until the nodes its keys go to are back
    /// (`coordinator::tests::a_node_leaves_while_its_peers_are_down_and_moves_once_they_are_back`).
    #[test]
    fn fixed_leave_refused_with_the_peers_down_3001798() {
        run_seed(3_001_798, &crash_setup()).unwrap();
    }

    #[test]
    fn a_seed_replays_exactly() {
        let setup = Setup::replicated(5, 3_000, Faults::within(1));
        let a = run_seed(77, &setup).unwrap();
        let b = run_seed(77, &setup).unwrap();
        assert_eq!((a.fingerprint, a.ops, a.end), (b.fingerprint, b.ops, b.end));
        let c = run_seed(78, &setup).unwrap();
        assert_ne!(a.fingerprint, c.fingerprint);
    }
}
