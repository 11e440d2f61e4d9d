//! `gtstore-load`: a load generator for gtstore, any RESP server and memcached,
//! so one tool measures all of them the same way in one run.
//!
//! # Design
//!
//! The generator must not be the bottleneck. It runs on the project's reactor
//! ([`crate::reactor`]), one reactor per `--threads`, each owning its share of
//! the `--clients`. A client keeps `--pipeline` requests in flight on raw-mode
//! connections; requests are encoded once per op and value length as templates
//! and patched in place (key digits, value tag) as they are copied into a
//! connection's output ([`wire`]). Replies are parsed straight from the read
//! buffer without copying. Each thread counts into its own HDR histogram and
//! counters ([`stats`]); the main thread merges them once a second for the
//! progress line and at the end for the report, and reads the process's CPU time
//! so a reader can tell whether the tool was busy.
//!
//! Targets: a gtstore cluster through its manager (partition-aware: the client
//! fetches the ring, connects to every storage node and sends each request to the
//! key's owner; the ring is fetched again every second and clients follow it), a
//! gtstore cluster through contact nodes (each client talks to one node, which
//! forwards), a RESP server (Redis) or memcached.
//!
//! Randomness is seeded (`--seed`): each client draws its ops and keys from its
//! own generator ([`rng`]), uniform or Zipf. Values carry a tag derived from
//! `(seed, key, write counter)`, so at the end the verify phase can read back
//! every key whose last write it knows and say exactly how many were lost,
//! storing only a counter per key ([`keys`]).
//!
//! # Caveats
//!
//! - With verification on (the default), a client writes only keys it owns (see
//!   [`keys`]); a hot Zipf key's writes are spread over `--clients` neighbouring
//!   keys. `--no-verify` lifts this.
//! - Latency is measured from the moment a request is queued in the tool to the
//!   moment its reply is parsed, so it includes the tool's own queueing; with
//!   the tool's CPU well under one core per thread that share is small.
//! - Partition-aware clients pause briefly on every ring change (they wait for
//!   their requests in flight), which shows as a dip in the progress line.
//! - Redis Cluster is not supported (no MOVED handling): drive one node, or use
//!   `redis-benchmark --cluster`.
//! - CPU time comes from `/proc/self/stat`, in 1/100 s ticks.

pub mod driver;
pub mod keys;
pub mod rng;
pub mod spec;
pub mod stats;
pub mod wire;

use crate::client::manager_call;
use crate::protocol::op;
use crate::ring::Ring;
use driver::{Driver, RingBoard, Routing, Shared, Templates, ThreadResult, VerifyCounts};
use serde_json::json;
use spec::{KeyDist, Mix, Op, ValueSize};
use stats::{cpu_seconds, fmt_ns, thousands, Stats, Tick};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use wire::Proto;

/// Largest total size of the encoded request templates.
pub const MAX_TEMPLATE_BYTES: usize = 512 << 20;

/// What to drive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A gtstore cluster: through the manager (partition-aware) when `contacts`
    /// is empty, else through the contact nodes (the manager, if given, is used
    /// only to count each node's share).
    Gtstore {
        /// The manager's `HOST:PORT`.
        manager: Option<String>,
        /// Contact nodes' `HOST:PORT`s.
        contacts: Vec<String>,
    },
    /// A RESP server.
    Resp(String),
    /// A memcached server.
    Memcached(String),
}

impl Target {
    /// The target the flags name: `--manager` and/or `--nodes`, or `--resp`, or
    /// `--memcached`.
    pub fn from_flags(
        manager: Option<String>,
        nodes: Option<String>,
        resp: Option<String>,
        memcached: Option<String>,
    ) -> Result<Target, String> {
        let contacts: Vec<String> = nodes
            .as_deref()
            .map(|n| {
                n.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if nodes.is_some() && contacts.is_empty() {
            return Err("--nodes: no address given".into());
        }
        let gtstore = manager.is_some() || !contacts.is_empty();
        match (gtstore, resp, memcached) {
            (true, None, None) => Ok(Target::Gtstore { manager, contacts }),
            (false, Some(r), None) => Ok(Target::Resp(r)),
            (false, None, Some(m)) => Ok(Target::Memcached(m)),
            (false, None, None) => {
                Err("no target: give --manager, --nodes, --resp or --memcached".into())
            }
            _ => Err("give one target: --manager/--nodes, --resp or --memcached".into()),
        }
    }

    /// The protocol it speaks.
    pub fn proto(&self) -> Proto {
        match self {
            Target::Gtstore { .. } => Proto::Gtstore,
            Target::Resp(_) => Proto::Resp,
            Target::Memcached(_) => Proto::Memcached,
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Gtstore {
                manager: Some(m),
                contacts,
            } if contacts.is_empty() => format!("gtstore, partition-aware via manager {m}"),
            Target::Gtstore { manager, contacts } => format!(
                "gtstore, through contact nodes {}{}",
                contacts.join(","),
                manager
                    .as_ref()
                    .map(|m| format!(" (ring from {m})"))
                    .unwrap_or_default()
            ),
            Target::Resp(a) => format!("resp {a}"),
            Target::Memcached(a) => format!("memcached {a}"),
        }
    }
}

/// A run's settings, checked by [`Settings::check`].
#[derive(Clone, Debug)]
pub struct Settings {
    /// What to drive.
    pub target: Target,
    /// Client connections (partition-aware clients hold one per node).
    pub clients: usize,
    /// Requests in flight per client.
    pub pipeline: usize,
    /// Measured requests to send (after the warmup), if the run is counted.
    pub requests: Option<u64>,
    /// Length of the measured phase, if the run is timed.
    pub duration_ns: Option<u64>,
    /// Length of the warmup (not measured).
    pub warmup_ns: u64,
    /// The op mix.
    pub mix: Mix,
    /// Keys are `key:000000000` up to `keys - 1` (and `cnt:...` for counters).
    pub keys: u64,
    /// How keys are drawn.
    pub key_dist: KeyDist,
    /// Value sizes.
    pub value_size: ValueSize,
    /// Seed for every random choice.
    pub seed: u64,
    /// Reactor threads.
    pub threads: usize,
    /// Read back what was written at the end.
    pub verify: bool,
    /// Print a progress line each second (on stderr).
    pub progress: bool,
}

/// Seconds (a flag's value) as nanoseconds.
pub fn seconds(s: f64, flag: &str) -> Result<u64, String> {
    if !(0.0..=1e6).contains(&s) {
        return Err(format!(
            "{flag}: {s} is not a number of seconds 0..=1000000"
        ));
    }
    Ok((s * 1e9) as u64)
}

impl Settings {
    /// Settings for `target` with the flags' defaults.
    pub fn new(target: Target) -> Settings {
        Settings {
            target,
            clients: 50,
            pipeline: 1,
            requests: None,
            duration_ns: None,
            warmup_ns: 0,
            mix: Mix::parse("get=90,put=10").expect("default mix"),
            keys: 100_000,
            key_dist: KeyDist::Uniform,
            value_size: ValueSize { min: 100, max: 100 },
            seed: 1,
            threads: 1,
            verify: true,
            progress: true,
        }
    }

    /// Checks the combination; fills in a 10 s duration when neither requests nor
    /// duration is given.
    pub fn check(&mut self) -> Result<(), String> {
        if self.clients == 0 || self.clients > 100_000 {
            return Err("--clients must be 1..=100000".into());
        }
        if self.pipeline == 0 || self.pipeline > 100_000 {
            return Err("--pipeline must be 1..=100000".into());
        }
        if self.threads == 0 || self.threads > 256 {
            return Err("--threads must be 1..=256".into());
        }
        if self.threads > self.clients {
            return Err(format!(
                "--threads {} is more than --clients {}",
                self.threads, self.clients
            ));
        }
        if self.keys == 0 || self.keys > wire::MAX_KEYS {
            return Err(format!("--keys must be 1..={}", wire::MAX_KEYS));
        }
        if self.verify && self.mix.writes() && self.keys < self.clients as u64 {
            return Err(format!(
                "--keys {} is below --clients {}: when verifying, each client writes \
                 only keys it owns (raise --keys, or pass --no-verify)",
                self.keys, self.clients
            ));
        }
        if self.duration_ns == Some(0) {
            return Err("--duration must be above 0".into());
        }
        if self.requests.is_none() && self.duration_ns.is_none() {
            self.duration_ns = Some(10_000_000_000);
        }
        let steps = self.value_size.steps();
        let per_op: usize = steps.iter().sum();
        let value_ops = [Op::Put, Op::Create, Op::Update]
            .iter()
            .filter(|o| self.mix.contains(**o))
            .count();
        if per_op.saturating_mul(value_ops) > MAX_TEMPLATE_BYTES {
            return Err(format!(
                "--value-size {}: the encoded requests would take over {} MiB",
                self.value_size,
                MAX_TEMPLATE_BYTES >> 20
            ));
        }
        Ok(())
    }
}

/// What threads tell the main thread.
pub enum Msg {
    /// One second of one thread's progress.
    Tick(usize, Tick),
    /// A thread's load phase ended; its last tick was this second.
    LoadDone(usize, u64),
    /// A thread finished.
    Finished(usize, Box<ThreadResult>),
    /// A thread gave up.
    Failed(usize, String),
}

/// Resolves `HOST:PORT`.
pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to nothing"))
}

fn fetch_ring(manager: &str) -> Result<Ring, String> {
    let text = manager_call(manager, op::RING, Duration::from_secs(5))
        .map_err(|e| format!("RING from {manager}: {e}"))?;
    Ring::decode(&text).map_err(|e| format!("RING from {manager}: {e}"))
}

/// The whole run's results.
pub struct Report {
    /// What was driven.
    pub target: String,
    /// Its protocol.
    pub proto: Proto,
    /// The settings used.
    pub settings: Settings,
    /// Measured-phase counts, merged.
    pub stats: Stats,
    /// What verification found (None when it was off).
    pub verify: Option<VerifyCounts>,
    /// Connections that broke or could not be opened again, over the whole run.
    pub broken: u64,
    /// CPU seconds (user, system) and wall seconds over the measured phase.
    pub cpu: Option<(f64, f64, f64)>,
    /// The progress lines' figures.
    pub per_second: Vec<Tick>,
}

impl Report {
    /// Measured requests per second.
    pub fn throughput(&self) -> f64 {
        if self.stats.measured_ns == 0 {
            0.0
        } else {
            self.stats.requests as f64 * 1e9 / self.stats.measured_ns as f64
        }
    }

    /// Keys lost or damaged, plus keys that could not be checked.
    pub fn lost(&self) -> u64 {
        self.verify.map_or(0, |v| v.lost() + v.errors)
    }

    /// Why the run failed, if it did: measured requests answered with an error,
    /// keys the verify phase could not read, or connections that broke. A failed
    /// run's figures do not measure the target.
    pub fn failure(&self) -> Option<String> {
        let mut why = Vec::new();
        if self.stats.error_total() > 0 {
            let codes: Vec<String> = self
                .stats
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {}", thousands(*v)))
                .collect();
            why.push(format!(
                "{} requests failed ({})",
                thousands(self.stats.error_total()),
                codes.join(", ")
            ));
        }
        if let Some(v) = self.verify.filter(|v| v.errors > 0) {
            why.push(format!(
                "{} keys could not be read back",
                thousands(v.errors)
            ));
        }
        if self.broken > 0 {
            why.push(format!("{} connections broke", thousands(self.broken)));
        }
        (!why.is_empty()).then(|| format!("the run failed: {}", why.join(", ")))
    }

    /// The exit status the report calls for: 2 if the run failed (see
    /// [`Report::failure`]), else 1 if verification found lost data, else 0.
    pub fn exit_status(&self) -> u8 {
        if self.failure().is_some() {
            2
        } else if self.lost() > 0 {
            1
        } else {
            0
        }
    }

    /// The tool's CPU use as a percentage of one core.
    pub fn cpu_percent(&self) -> Option<f64> {
        self.cpu
            .filter(|c| c.2 > 0.0)
            .map(|(u, s, w)| (u + s) / w * 100.0)
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let s = &self.settings;
        let h = &self.stats.latency;
        let us = |ns: u64| ns as f64 / 1e3;
        let total = self.stats.requests.max(1) as f64;
        let ops: serde_json::Map<String, serde_json::Value> = Op::ALL
            .iter()
            .filter(|o| self.stats.ops[o.index()].requests > 0 || s.mix.contains(**o))
            .map(|o| {
                let c = &self.stats.ops[o.index()];
                (
                    o.name().to_string(),
                    json!({"requests": c.requests, "hits": c.hits, "misses": c.misses,
                           "conflicts": c.conflicts, "errors": c.errors}),
                )
            })
            .collect();
        let nodes: Vec<serde_json::Value> = self
            .stats
            .nodes
            .iter()
            .map(|(k, v)| json!({"node": k, "requests": v, "share": *v as f64 / total}))
            .collect();
        let per_second: Vec<serde_json::Value> = self
            .per_second
            .iter()
            .map(|t| {
                json!({"second": t.second, "requests": t.requests, "throughput": t.rate(),
                       "p50_us": us(t.latency.value_at_quantile(0.5)),
                       "p99_us": us(t.latency.value_at_quantile(0.99)),
                       "max_us": us(t.latency.max()),
                       "errors": t.errors, "warmup": t.warmup})
            })
            .collect();
        json!({
            "target": self.target,
            "protocol": self.proto.name(),
            "clients": s.clients,
            "pipeline": s.pipeline,
            "threads": s.threads,
            "mix": s.mix.to_string(),
            "keys": s.keys,
            "key_dist": s.key_dist.to_string(),
            "value_size": s.value_size.to_string(),
            "seed": s.seed,
            "measured_s": self.stats.measured_ns as f64 / 1e9,
            "requests": self.stats.requests,
            "throughput": self.throughput(),
            "latency_us": {
                "p50": us(h.value_at_quantile(0.5)),
                "p90": us(h.value_at_quantile(0.9)),
                "p99": us(h.value_at_quantile(0.99)),
                "p99.9": us(h.value_at_quantile(0.999)),
                "max": us(h.max()),
                "mean": h.mean() / 1e3,
            },
            "ops": ops,
            "errors": self.stats.errors,
            "errors_total": self.stats.error_total(),
            "nodes": nodes,
            "cpu": self.cpu.map(|(u, sy, w)| json!({
                "user_s": u, "sys_s": sy, "wall_s": w,
                "percent_of_one_core": (u + sy) / w.max(1e-9) * 100.0})),
            "verify": self.verify.map(|v| json!({
                "checked": v.checked, "missing": v.missing, "wrong": v.wrong,
                "undeleted": v.undeleted, "anomalies": v.anomalies, "errors": v.errors,
                "lost": v.lost()})),
            "connections_broken": self.broken,
            "failure": self.failure(),
            "per_second": per_second,
        })
    }

    /// The report as a table for people.
    pub fn human(&self) -> String {
        let s = &self.settings;
        let h = &self.stats.latency;
        let mut o = String::new();
        let _ = writeln!(o, "target    {}", self.target);
        let _ = writeln!(
            o,
            "workload  {} clients x pipeline {}, {} thread(s), mix {}, {} keys {}, values {} B, seed {}",
            s.clients, s.pipeline, s.threads, s.mix, s.keys, s.key_dist, s.value_size, s.seed
        );
        let _ = writeln!(
            o,
            "measured  {:.2} s, {} requests, {} req/s",
            self.stats.measured_ns as f64 / 1e9,
            thousands(self.stats.requests),
            thousands(self.throughput().round() as u64)
        );
        let _ = writeln!(
            o,
            "latency   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (HdrHistogram, 3 digits)",
            fmt_ns(h.value_at_quantile(0.5)),
            fmt_ns(h.value_at_quantile(0.9)),
            fmt_ns(h.value_at_quantile(0.99)),
            fmt_ns(h.value_at_quantile(0.999)),
            fmt_ns(h.max())
        );
        let _ = writeln!(
            o,
            "ops       {:<7} {:>12} {:>12} {:>12} {:>10} {:>8}",
            "op", "requests", "hit/ok", "miss", "conflict", "errors"
        );
        for op in Op::ALL {
            let c = &self.stats.ops[op.index()];
            if c.requests == 0 && !s.mix.contains(op) {
                continue;
            }
            let _ = writeln!(
                o,
                "          {:<7} {:>12} {:>12} {:>12} {:>10} {:>8}",
                op.name(),
                thousands(c.requests),
                thousands(c.hits),
                thousands(c.misses),
                thousands(c.conflicts),
                thousands(c.errors)
            );
        }
        if self.stats.errors.is_empty() {
            let _ = writeln!(o, "errors    none");
        } else {
            let list: Vec<String> = self
                .stats
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {}", thousands(*v)))
                .collect();
            let _ = writeln!(o, "errors    {}", list.join(", "));
        }
        let total = self.stats.requests.max(1) as f64;
        for (i, (k, v)) in self.stats.nodes.iter().enumerate() {
            let _ = writeln!(
                o,
                "{}{:<28} {:>12} {:>6.1}%",
                if i == 0 { "nodes     " } else { "          " },
                k,
                thousands(*v),
                *v as f64 * 100.0 / total
            );
        }
        if let (Some(p), Some((u, sy, w))) = (self.cpu_percent(), self.cpu) {
            let _ = writeln!(
                o,
                "cpu       {p:.0}% of one core (user {u:.2} s + sys {sy:.2} s over {w:.2} s)"
            );
        }
        match self.verify {
            None => {
                let _ = writeln!(o, "verify    off");
            }
            Some(v) => {
                let _ = writeln!(
                    o,
                    "verify    {} keys read back: {} missing, {} wrong, {} undeleted, {} anomalies, {} unreadable: {}",
                    thousands(v.checked),
                    v.missing,
                    v.wrong,
                    v.undeleted,
                    v.anomalies,
                    v.errors,
                    if v.lost() + v.errors == 0 { "nothing lost" } else { "LOST DATA" }
                );
            }
        }
        if let Some(why) = self.failure() {
            let _ = writeln!(o, "result    FAILED: {why}");
        }
        o
    }
}

/// Runs the load and returns the report.
pub fn run(mut s: Settings) -> Result<Report, String> {
    s.check()?;
    let proto = s.target.proto();
    let (routing, manager) = match &s.target {
        Target::Gtstore { manager, contacts } if contacts.is_empty() => {
            (Routing::Aware, manager.clone())
        }
        Target::Gtstore { manager, contacts } => {
            let list = contacts
                .iter()
                .map(|a| Ok((a.clone(), resolve(a)?)))
                .collect::<Result<Vec<_>, String>>()?;
            (Routing::Contacts(list), manager.clone())
        }
        Target::Resp(a) | Target::Memcached(a) => {
            (Routing::Contacts(vec![(a.clone(), resolve(a)?)]), None)
        }
    };
    let board = match &manager {
        Some(m) => {
            let ring = fetch_ring(m)?;
            if matches!(routing, Routing::Aware) && ring.serving().is_empty() {
                return Err(format!("the manager at {m} has no serving storage node"));
            }
            Some(Arc::new(RingBoard {
                epoch: AtomicU64::new(ring.epoch),
                ring: Mutex::new(Arc::new(ring)),
            }))
        }
        None => None,
    };
    let sizes = s.value_size.steps();
    let zipf = match s.key_dist {
        KeyDist::Zipf(theta) => Some(rng::Zipf::new(s.keys, theta)?),
        KeyDist::Uniform | KeyDist::Sequential => None,
    };
    let templates = Templates::new(proto, &sizes, &s.mix);
    let target = s.target.describe();
    let threads = s.threads;
    let clients = s.clients as u64;
    let warmup = Duration::from_nanos(s.warmup_ns);
    let progress = s.progress;
    let sh = Arc::new(Shared {
        s: s.clone(),
        proto,
        routing,
        board: board.clone(),
        sizes,
        zipf,
        templates,
        t0: Instant::now(),
        abort: AtomicBool::new(false),
    });
    let mut cpu_start = (warmup.is_zero())
        .then(|| cpu_seconds().map(|c| (c, Instant::now())))
        .flatten();
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for t in 0..threads as u64 {
        let first = t * clients / threads as u64;
        let count = (t + 1) * clients / threads as u64 - first;
        let (sh, tx) = (sh.clone(), tx.clone());
        let h = std::thread::Builder::new()
            .name(format!("load-{t}"))
            .spawn(move || -> Result<(), String> {
                let mut reactor = crate::reactor::Reactor::new(crate::reactor::Config::default())
                    .map_err(|e| e.to_string())?;
                let mut d = Driver::new(sh, t as usize, first, count, tx.clone());
                let r = reactor.run(&mut d).map_err(|e| e.to_string());
                if let Err(e) = &r {
                    let _ = tx.send(Msg::Failed(t as usize, format!("reactor: {e}")));
                }
                r
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        handles.push(h);
    }
    drop(tx);
    let mut ticks: BTreeMap<u64, (Tick, Vec<bool>)> = BTreeMap::new();
    let mut done_at: Vec<Option<u64>> = vec![None; threads];
    let mut next_second = 1u64;
    let mut per_second = Vec::new();
    let mut results: Vec<Box<ThreadResult>> = Vec::new();
    let mut failure = None;
    let mut cpu_end = None;
    let mut finished = 0;
    let mut next_poll = sh.t0 + Duration::from_secs(1);
    while finished < threads {
        let now = Instant::now();
        let mut wake = now + Duration::from_millis(200);
        if cpu_start.is_none() {
            wake = wake.min(sh.t0 + warmup);
        }
        if board.is_some() {
            wake = wake.min(next_poll);
        }
        match rx.recv_timeout(wake.saturating_duration_since(now)) {
            Ok(Msg::Tick(t, tick)) => {
                let e = ticks
                    .entry(tick.second)
                    .or_insert_with(|| (Tick::new(tick.second), vec![false; threads]));
                e.0.merge(&tick);
                e.1[t] = true;
            }
            Ok(Msg::LoadDone(t, last)) => {
                done_at[t] = Some(last);
                if done_at.iter().all(|d| d.is_some()) {
                    cpu_end = cpu_seconds().map(|c| (c, Instant::now()));
                }
            }
            Ok(Msg::Finished(_, r)) => {
                results.push(r);
                finished += 1;
            }
            Ok(Msg::Failed(_, e)) => {
                failure.get_or_insert(e);
                sh.abort.store(true, Ordering::Relaxed);
                finished += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // Print every second all threads have reported (or finished before).
        while let Some((tick, got)) = ticks.get(&next_second) {
            let ready = got
                .iter()
                .zip(&done_at)
                .all(|(g, d)| *g || d.is_some_and(|d| d < next_second));
            if !ready {
                break;
            }
            if progress {
                eprintln!("{}", tick.line());
            }
            let (tick, _) = ticks.remove(&next_second).expect("present");
            per_second.push(tick);
            next_second += 1;
        }
        let now = Instant::now();
        if cpu_start.is_none() && now >= sh.t0 + warmup {
            cpu_start = cpu_seconds().map(|c| (c, now));
        }
        if let (Some(b), Some(m)) = (&board, &manager) {
            if now >= next_poll {
                next_poll = now + Duration::from_secs(1);
                match fetch_ring(m) {
                    Ok(ring) if ring.epoch != b.epoch.load(Ordering::Acquire) => {
                        log::info!("ring epoch {} from the manager", ring.epoch);
                        let epoch = ring.epoch;
                        *b.ring.lock().expect("ring lock") = Arc::new(ring);
                        b.epoch.store(epoch, Ordering::Release);
                    }
                    Ok(_) => {}
                    Err(e) => log::debug!("{e}"),
                }
            }
        }
    }
    sh.abort.store(true, Ordering::Relaxed);
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert("a load thread panicked".to_string());
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let mut stats = Stats::default();
    let mut verify = VerifyCounts::default();
    let mut broken = 0;
    for r in &results {
        stats.merge(&r.stats);
        verify.merge(&r.verify);
        broken += r.broken;
    }
    let cpu = match (cpu_start, cpu_end) {
        (Some(((u0, s0), t0)), Some(((u1, s1), t1))) => {
            Some((u1 - u0, s1 - s0, t1.duration_since(t0).as_secs_f64()))
        }
        _ => None,
    };
    let verify = (s.verify).then_some(verify);
    Ok(Report {
        target,
        proto,
        settings: s,
        stats,
        verify,
        broken,
        cpu,
        per_second,
    })
}
