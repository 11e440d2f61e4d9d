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
//! forwards), a Redis Cluster (each client holds one connection per master and
//! sends each request to its key's slot's master, following `MOVED` and `ASK`;
//! see [`cluster`]), a RESP server (Redis) or memcached. With a client password
//! (`--password-file`, gtstore and RESP targets), every connection proves it
//! before its first request: the native AUTH exchange, or RESP `AUTH`.
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
//! - Redis Cluster clients send to masters only (no reads from replicas) and
//!   learn the slot map once, at the start; after that only from `MOVED`.
//! - CPU time comes from `/proc/self/stat`, in 1/100 s ticks.

pub mod cluster;
pub mod driver;
pub mod keys;
mod report;
pub mod rng;
mod run;
pub mod spec;
pub mod stats;
pub mod wire;

pub use report::Report;
pub use run::run;

use driver::ThreadResult;
use spec::{KeyDist, Mix, Op, ValueSize};
use stats::Tick;
use std::net::{SocketAddr, ToSocketAddrs};
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
    /// A Redis Cluster, through a seed node's `HOST:PORT`.
    RedisCluster(String),
    /// A RESP server.
    Resp(String),
    /// A memcached server.
    Memcached(String),
}

impl Target {
    /// The target the flags name: `--manager` and/or `--nodes`, or
    /// `--redis-cluster`, or `--resp`, or `--memcached`.
    pub fn from_flags(
        manager: Option<String>,
        nodes: Option<String>,
        redis_cluster: Option<String>,
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
        match (gtstore, redis_cluster, resp, memcached) {
            (true, None, None, None) => Ok(Target::Gtstore { manager, contacts }),
            (false, Some(c), None, None) => Ok(Target::RedisCluster(c)),
            (false, None, Some(r), None) => Ok(Target::Resp(r)),
            (false, None, None, Some(m)) => Ok(Target::Memcached(m)),
            (false, None, None, None) => Err(
                "no target: give --manager, --nodes, --redis-cluster, --resp or --memcached".into(),
            ),
            _ => Err(
                "give one target: --manager/--nodes, --redis-cluster, --resp or --memcached".into(),
            ),
        }
    }

    /// The protocol it speaks.
    pub fn proto(&self) -> Proto {
        match self {
            Target::Gtstore { .. } => Proto::Gtstore,
            Target::RedisCluster(_) | Target::Resp(_) => Proto::Resp,
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
            Target::RedisCluster(a) => format!("redis cluster via seed {a}"),
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
    /// Client connections (partition-aware and Redis Cluster clients hold one
    /// per node).
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
    /// The client password each connection proves first (gtstore and `--resp`).
    pub password: Option<String>,
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
            password: None,
        }
    }

    /// Checks the combination; fills in a 10 s duration when neither requests nor
    /// duration is given.
    pub fn check(&mut self) -> Result<(), String> {
        if self.password.is_some()
            && matches!(self.target, Target::Memcached(_) | Target::RedisCluster(_))
        {
            return Err("a password is for gtstore and --resp targets only".into());
        }
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
