//! `gtstore-storage`: a storage node.

use clap::Parser;
use gtstore::protocol::resp::Limits;
use gtstore::reactor::{Config, Reactor};
use gtstore::storage::wal::{Fsync, MAX_BODY};
use gtstore::storage::{NodeConfig, StorageNode};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

/// A gtstore storage node: holds sectors of key-value data and serves any key-value
/// request of the wire protocol (docs/protocol.md).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Port to listen on (0 picks a free one; the log line says which).
    #[arg(long, default_value_t = 7001)]
    port: u16,
    /// Address to listen on and advertise to clients and peers.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The manager's HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:7000")]
    manager: String,
    /// Tokens (virtual nodes) to ask for: more tokens, a bigger share of the keys.
    #[arg(long, default_value_t = gtstore::DEFAULT_TOKENS, value_parser = clap::value_parser!(u32).range(1..=4096))]
    tokens: u32,
    /// Cluster secret that proves membership to the manager and peers (no spaces).
    #[arg(long, default_value = gtstore::DEFAULT_SECRET)]
    secret: String,
    /// Largest request payload accepted, in bytes.
    #[arg(long, default_value_t = gtstore::protocol::DEFAULT_MAX_PAYLOAD)]
    max_frame: u32,
    /// Also serve RESP2 (the Redis protocol: redis-cli, redis-benchmark) on this
    /// port of --host (0 picks a free one; the log line says which).
    #[arg(long)]
    resp_port: Option<u16>,
    /// A delete's tombstone is collected once it is this old (ms) and every
    /// replica of its key holds it; it must outlast any delay of an older copy
    /// of the key still in flight.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    tombstone_grace: u64,
    /// Keep the data on disk in DIR (created if missing): an append-only log of
    /// every write plus snapshots, replayed on start, and the node's id and last
    /// ring. One node per directory. Without it the node keeps data in memory only.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// With --data-dir, when writes reach the disk: `batch` fsyncs once per event
    /// loop turn before the replies it covers (survives power loss); `always`
    /// fsyncs every write on its own (same guarantee, slower); `never` writes
    /// before replying but leaves flushing to the OS (survives a process crash,
    /// not a power loss).
    #[arg(long, default_value = "batch", value_name = "always|batch|never")]
    fsync: Fsync,
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to nothing"))
}

fn run(args: Args) -> Result<(), String> {
    if args.secret.is_empty() || args.secret.contains(char::is_whitespace) {
        return Err("--secret must be non-empty and without spaces".into());
    }
    let manager = resolve(&args.manager)?;
    if args.data_dir.is_some() && u64::from(args.max_frame) + 65_536 > u64::from(MAX_BODY) {
        return Err(format!(
            "--max-frame above {} bytes cannot be logged",
            MAX_BODY - 65_536
        ));
    }
    let mut reactor = Reactor::new(Config {
        max_payload: args.max_frame,
        ..Config::default()
    })
    .map_err(|e| e.to_string())?;
    let bind = resolve(&format!("{}:{}", args.host, args.port))?;
    let (_, local) = reactor
        .bind(bind)
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    let advertise = format!("{}:{}", args.host, local.port());
    let mut cfg = NodeConfig::new(advertise.clone(), manager);
    cfg.secret = args.secret;
    cfg.tokens = args.tokens;
    cfg.tombstone_grace_ms = args.tombstone_grace;
    // Versions follow the wall clock; the reactor's clock starts about now.
    cfg.clock_base_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    reactor.handle_signals().map_err(|e| e.to_string())?;
    let mut node = StorageNode::new(cfg);
    if let Some(dir) = &args.data_dir {
        let started = std::time::Instant::now();
        let found = node
            .open_data_dir(dir, args.fsync)
            .map_err(|e| e.to_string())?;
        if let Some(why) = &found.cut_reason {
            log::warn!("cut {} bytes of damaged log tail: {why}", found.cut);
        }
        log::info!(
            "recovered {} entries ({} from the snapshot, {} live keys; node {}, ring epoch {}) \
             from {} in {} ms; fsync {}",
            found.records,
            found.from_snapshot,
            found.keys,
            found.node_id,
            found.epoch,
            dir.display(),
            started.elapsed().as_millis(),
            args.fsync
        );
    }
    // Announced once the data is back: the line means "ready".
    log::info!("gtstore-storage listening on {advertise} (manager {manager})");
    if let Some(port) = args.resp_port {
        let bind = resolve(&format!("{}:{port}", args.host))?;
        let (index, local) = reactor
            .bind(bind)
            .map_err(|e| format!("cannot listen on {}:{port}: {e}", args.host))?;
        assert_eq!(
            index,
            gtstore::storage::resp::LISTENER,
            "RESP is listener 1"
        );
        node.enable_resp(Limits::new(args.max_frame as usize));
        log::info!(
            "gtstore-storage RESP listening on {}:{}",
            args.host,
            local.port()
        );
    }
    reactor.run(&mut node).map_err(|e| e.to_string())?;
    match node.failure() {
        Some(why) => Err(format!("stopped: {why}")),
        None => Ok(()),
    }
}

fn main() -> ExitCode {
    gtstore::init_logging();
    gtstore::exit_status("gtstore-storage", run(Args::parse()))
}
