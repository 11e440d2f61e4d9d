//! `gtstore-load`: the load generator (see `gtstore::load` and docs/operations.md).

use clap::Parser;
use gtstore::load::spec::{KeyDist, Mix, ValueSize};
use gtstore::load::{self, Settings, Target};
use std::process::ExitCode;

/// Drives a gtstore cluster, a Redis Cluster, a RESP server or memcached with a seeded workload,
/// reports throughput, latency percentiles, errors and per-node shares, then reads
/// back what it wrote. Exit status: 0, 1 if verification found lost data, 2 on
/// bad flags or a failed run.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// gtstore manager HOST:PORT: partition-aware (requests go to each key's owner).
    #[arg(long)]
    manager: Option<String>,
    /// gtstore contact nodes HOST:PORT,...: clients spread over them round-robin.
    #[arg(long)]
    nodes: Option<String>,
    /// A Redis Cluster, through any of its nodes HOST:PORT: requests go to each key's
    /// slot's master (CLUSTER SLOTS at the start, then MOVED and ASK are followed).
    #[arg(long)]
    redis_cluster: Option<String>,
    /// A RESP server (Redis) HOST:PORT.
    #[arg(long)]
    resp: Option<String>,
    /// A memcached server HOST:PORT (text protocol).
    #[arg(long)]
    memcached: Option<String>,
    /// Clients (a partition-aware or Redis Cluster client holds one connection per node).
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Requests in flight per client.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Measured requests to send (after the warmup).
    #[arg(long)]
    requests: Option<u64>,
    /// Seconds to measure (default 10 when --requests is not given).
    #[arg(long)]
    duration: Option<f64>,
    /// Ops and weights: get, put, del, incr, create, update, ping.
    #[arg(long, default_value = "get=90,put=10", value_parser = Mix::parse)]
    mix: Mix,
    /// Number of keys (`key:000000000` ...).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Key distribution: uniform, seq (request i uses key i mod --keys) or zipf:THETA (0 < THETA < 1).
    #[arg(long, default_value = "uniform", value_parser = KeyDist::parse)]
    key_dist: KeyDist,
    /// Value size in bytes, or MIN-MAX.
    #[arg(long, default_value = "100", value_parser = ValueSize::parse)]
    value_size: ValueSize,
    /// Seconds of unmeasured load first.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Seed for every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Threads, each an event loop with its share of the clients.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Skip reading back what was written.
    #[arg(long)]
    no_verify: bool,
    /// No progress line each second.
    #[arg(long)]
    quiet: bool,
    /// Prove the client password (storage nodes' --client-password-file; AUTH on
    /// --resp) from the first line of this file on every connection
    /// [default: $GTSTORE_PASSWORD; none when neither is set].
    #[arg(long, value_name = "PATH")]
    password_file: Option<std::path::PathBuf>,
}

fn settings(a: Args) -> Result<Settings, String> {
    let target = Target::from_flags(a.manager, a.nodes, a.redis_cluster, a.resp, a.memcached)?;
    let mut s = Settings::new(target);
    s.clients = a.clients;
    s.pipeline = a.pipeline;
    s.requests = a.requests;
    s.duration_ns = a
        .duration
        .map(|d| load::seconds(d, "--duration"))
        .transpose()?;
    s.warmup_ns = load::seconds(a.warmup, "--warmup")?;
    s.mix = a.mix;
    s.keys = a.keys;
    s.key_dist = a.key_dist;
    s.value_size = a.value_size;
    s.seed = a.seed;
    s.threads = a.threads;
    s.verify = !a.no_verify;
    s.progress = !a.quiet;
    s.password = gtstore::client::secret::client_password(a.password_file.as_deref())?;
    Ok(s)
}

fn main() -> ExitCode {
    gtstore::alloc::configure();
    // Warnings only by default: the report is the output.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_millis()
        .init();
    let args = Args::parse();
    let json = args.json;
    let report = match settings(args).and_then(load::run) {
        Ok(r) => r,
        Err(e) => return gtstore::exit_status("gtstore-load", Err(e)),
    };
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.human());
    }
    if let Some(why) = report.failure() {
        eprintln!("gtstore-load: {why}");
    }
    ExitCode::from(report.exit_status())
}
