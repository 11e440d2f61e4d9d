//! `gtstore-manager`: the coordinator.

use clap::Parser;
use gtstore::coordinator::{Manager, ManagerConfig, HTTP_LISTENER};
use gtstore::reactor::{Config, Reactor};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

/// The gtstore manager: owns membership and the consistent-hashing ring, gives ids
/// to clients and nodes, recommends contact nodes and detects failures. It is not
/// on the data path.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Port to listen on (0 picks a free one; the log line says which).
    #[arg(long, default_value_t = gtstore::DEFAULT_MANAGER_PORT)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Cluster secret storage nodes must present (no spaces).
    #[arg(long, default_value = gtstore::DEFAULT_SECRET)]
    secret: String,
    /// A node silent this long (ms) is marked down.
    #[arg(long, default_value_t = 2000)]
    down_after: u64,
    /// A node down this long (ms) is dropped from the ring and its ranges are
    /// copied again from the other replicas until every key has N copies. Off by
    /// default: then only `gtstore drop` does that.
    #[arg(long, value_name = "MS")]
    dead_after: Option<u64>,
    /// N: how many nodes hold each key (capped by the nodes in the ring).
    #[arg(long, default_value_t = 3)]
    replicas: u32,
    /// R: copies a read waits for (1..=N); R + W > N makes reads see every
    /// acknowledged write.
    #[arg(long, default_value_t = 2)]
    read_quorum: u32,
    /// W: acknowledgements a write waits for (1..=N); an acknowledged write
    /// survives the crash of any W-1 of its replicas.
    #[arg(long, default_value_t = 2)]
    write_quorum: u32,
    /// For this long after the start (ms), a node that is not a member of the
    /// membership being recovered from the nodes is told to retry, so the old
    /// members re-register first after a manager restart. 0 turns it off (a
    /// brand-new cluster then forms at once).
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    recovery_ms: u64,
    /// Serve HTTP on this port (on --host): the status page at /, the STATUS
    /// JSON at /status.json, Prometheus metrics at /metrics. 0 picks a free
    /// port (the `http listening on` log line says which). Off by default.
    #[arg(long, value_name = "PORT")]
    http_port: Option<u16>,
}

fn run(args: Args) -> Result<(), String> {
    if args.secret.is_empty() || args.secret.contains(char::is_whitespace) {
        return Err("--secret must be non-empty and without spaces".into());
    }
    let n = args.replicas;
    if n == 0 || !(1..=n).contains(&args.read_quorum) || !(1..=n).contains(&args.write_quorum) {
        return Err(format!(
            "need --replicas >= 1 and both quorums in 1..=replicas (got N={n} R={} W={})",
            args.read_quorum, args.write_quorum
        ));
    }
    let mut reactor = Reactor::new(Config::default()).map_err(|e| e.to_string())?;
    let bind: SocketAddr = (args.host.as_str(), args.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve --host {}", args.host))?;
    let (_, local) = reactor
        .bind(bind)
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    reactor.handle_signals().map_err(|e| e.to_string())?;
    log::info!(
        "gtstore-manager listening on {}:{}",
        args.host,
        local.port()
    );
    if let Some(port) = args.http_port {
        let (index, http) = reactor
            .bind(SocketAddr::new(bind.ip(), port))
            .map_err(|e| format!("cannot listen on {}:{port}: {e}", args.host))?;
        debug_assert_eq!(index, HTTP_LISTENER);
        log::info!(
            "gtstore-manager http listening on {}:{}",
            args.host,
            http.port()
        );
    }
    let mut manager = Manager::new(ManagerConfig {
        secret: args.secret,
        down_after_ms: args.down_after,
        dead_after_ms: args.dead_after,
        replicas: args.replicas,
        read_quorum: args.read_quorum,
        write_quorum: args.write_quorum,
        recovery_ms: args.recovery_ms,
        ..ManagerConfig::default()
    });
    reactor.run(&mut manager).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    gtstore::init_logging();
    gtstore::exit_status("gtstore-manager", run(Args::parse()))
}
