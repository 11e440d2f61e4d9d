//! The two servers' flags and mains, shared by their entry points: `gtstore-manager`
//! and `gtstore manager` run [`run_manager`] with [`ManagerArgs`]; `gtstore-storage`
//! and `gtstore storage` run [`run_storage`] with [`StorageArgs`]. Both entry points
//! therefore take exactly the same flags, and `gtstore` alone is enough to run a whole
//! cluster (the launcher, [`super::cluster`], starts its children from its own
//! executable).
//!
//! Protected mode, as Redis has it: a process with no cluster secret configured
//! (no `--secret-file`, `--secret` or `$GTSTORE_SECRET`) listens on loopback only and
//! refuses any other `--host`, exit 2, saying how to set a secret
//! ([`SecretArgs::resolve`]). On loopback it uses a built-in default, so a cluster
//! started by hand on one machine works with no set-up; that default is refused off
//! loopback. The manager's admin secret (what `gtstore drop` proves) comes from
//! `--admin-secret-file` or `$GTSTORE_ADMIN_SECRET`, else it is the cluster secret.
//!
//! Each server says where it listens in one log line, `NAME listening on HOST:PORT`
//! (a storage node adds ` (manager ADDR)`; its RESP port gets `NAME RESP listening on
//! HOST:PORT`, its HTTP port `NAME http listening on HOST:PORT`). Scripts, the tests and the launcher read the port from that line when
//! it was picked by the OS (`--port 0`), so it is logged under the target
//! [`LISTENING_TARGET`], which [`crate::init_logging`] keeps at `info` whatever
//! `RUST_LOG` says.

use crate::client::secret;
use crate::coordinator::{Manager, ManagerConfig, HTTP_LISTENER};
use crate::protocol::resp::Limits;
use crate::reactor::{Config, Reactor};
use crate::storage::durable::DurableNode;
use crate::storage::wal::{Fsync, MAX_BODY};
use crate::storage::{NodeConfig, StorageNode};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// The log target of the `listening on` lines, always logged at `info`.
pub const LISTENING_TARGET: &str = "gtstore::listening";

/// One-line description of the manager (`--help`).
pub const MANAGER_ABOUT: &str = "The gtstore manager: membership, the ring, failure detection";
/// What `--help` says about the manager.
pub const MANAGER_LONG_ABOUT: &str = "\
The gtstore manager: owns membership and the consistent-hashing ring, gives ids \
to clients and nodes, recommends contact nodes and detects failures. It is not \
on the data path.

With no cluster secret configured (--secret-file, $GTSTORE_SECRET, --secret) it \
listens on loopback only (protected mode) and refuses any other --host. DROP needs \
the admin credential (see `gtstore drop --help`).";
/// One-line description of a storage node (`--help`).
pub const STORAGE_ABOUT: &str = "A gtstore storage node: holds and serves key-value data";
/// What `--help` says about a storage node.
pub const STORAGE_LONG_ABOUT: &str = "\
A gtstore storage node: holds sectors of key-value data and serves any key-value \
request of the wire protocol (docs/protocol.md).

With no cluster secret configured (--secret-file, $GTSTORE_SECRET, --secret) it \
listens on loopback only (protected mode) and refuses any other --host. The \
manager and every node need the same secret.";

/// The manager's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ManagerArgs {
    /// Port to listen on (0 picks a free one; the log line says which).
    #[arg(long, default_value_t = crate::DEFAULT_MANAGER_PORT)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[command(flatten)]
    pub secret: SecretArgs,
    /// The admin secret `gtstore drop` proves, from the first line of this file
    /// [default: $GTSTORE_ADMIN_SECRET, else the cluster secret].
    #[arg(long, value_name = "PATH")]
    pub admin_secret_file: Option<PathBuf>,
    /// A node silent this long (ms) is marked down.
    #[arg(long, default_value_t = 2000)]
    pub down_after: u64,
    /// A node down this long (ms) is dropped from the ring and its ranges are
    /// copied again from the other replicas until every key has N copies. Off by
    /// default: then only `gtstore drop` does that. Dropping waits for the
    /// node's lease (--lease-ms) either way.
    #[arg(long, value_name = "MS")]
    pub dead_after: Option<u64>,
    /// A node serves data only this long (ms) after it sent the heartbeat the
    /// manager last answered: a node cut off from the manager (or with the
    /// manager down) stops serving then. A dropped node's move flips, or its
    /// one-step drop happens, only once its lease is over by the manager's clock
    /// (this, plus a small margin, after its last heartbeat). Must be above the
    /// nodes' heartbeat period (500 ms); with --down-after D and --dead-after X,
    /// a dead-after drop waits for nothing more when D + X exceeds it.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub lease_ms: u64,
    /// N: how many nodes hold each key (capped by the nodes in the ring).
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// R: copies a read waits for (1..=N); R + W > N makes reads see every
    /// acknowledged write.
    #[arg(long, default_value_t = 2)]
    pub read_quorum: u32,
    /// W: acknowledgements a write waits for (1..=N); an acknowledged write
    /// survives the crash of any W-1 of its replicas.
    #[arg(long, default_value_t = 2)]
    pub write_quorum: u32,
    /// For this long after the start (ms), a node that is not a member of the
    /// membership being recovered from the nodes is told to retry, so the old
    /// members re-register first after a manager restart. 0 turns it off (a
    /// brand-new cluster then forms at once).
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    pub recovery_ms: u64,
    /// Serve HTTP on this port (on --host): the status page at /, the STATUS
    /// JSON at /status.json, Prometheus metrics at /metrics. 0 picks a free
    /// port (the `http listening on` log line says which). Off by default.
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,
}

/// A storage node's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct StorageArgs {
    /// Port to listen on (0 picks a free one; the log line says which).
    #[arg(long, default_value_t = 7001)]
    pub port: u16,
    /// Address to listen on and advertise to clients and peers.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The manager's HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub manager: String,
    /// Tokens (virtual nodes) to ask for: more tokens, a bigger share of the keys.
    #[arg(long, default_value_t = crate::DEFAULT_TOKENS, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub tokens: u32,
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Require clients to prove this password, from the first line of this file
    /// [default: $GTSTORE_CLIENT_PASSWORD]: until they do, native connections may
    /// only PING and AUTH, RESP ones only AUTH, HELLO and QUIT (`-NOAUTH`), and HTTP
    /// requests need `Authorization: Bearer PASSWORD` (401). Off by default: every
    /// client is served.
    #[arg(long, value_name = "PATH", conflicts_with = "client_password")]
    pub client_password_file: Option<PathBuf>,
    /// The client password itself. Every user of the machine sees it in `ps`:
    /// prefer --client-password-file or $GTSTORE_CLIENT_PASSWORD.
    #[arg(long, value_name = "PASSWORD")]
    pub client_password: Option<String>,
    /// Largest request payload accepted, in bytes.
    #[arg(long, default_value_t = crate::protocol::DEFAULT_MAX_PAYLOAD)]
    pub max_frame: u32,
    /// Replies queued and unread on one client connection (either port) above
    /// which it is dropped, in MiB: a client that sends requests and does not
    /// read their replies. Never below twice --max-frame plus 4 MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub client_output_limit: u64,
    /// Also serve RESP2 (the Redis protocol: redis-cli, redis-benchmark) on this
    /// port of --host (0 picks a free one; the log line says which).
    #[arg(long)]
    pub resp_port: Option<u16>,
    /// Also serve HTTP on this port of --host (0 picks a free one; the `http
    /// listening on` log line says which): seed 002's JSON endpoints `PUT /set`,
    /// `POST /fetch` and `POST /query` for any key of the cluster, `GET /fetch`
    /// (every pair of the cluster, paged with `?limit=N&cursor=C`), and
    /// Prometheus metrics at `GET /metrics`. Off by default.
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,
    /// A delete's tombstone is collected once it is this old (ms) and every
    /// replica of its key holds it; it must outlast any delay of an older copy
    /// of the key still in flight.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    pub tombstone_grace: u64,
    /// Anti-entropy: how many background comparisons (one token range with one
    /// other replica: digests, then the keys under differing leaves) this node
    /// starts per second at most, as the lead replica of its ranges; 0 turns
    /// them off (replicas then converge only by hints, catch-up and read repair).
    #[arg(long, value_name = "N", default_value_t = crate::storage::node::DEFAULT_ANTI_ENTROPY_RATE)]
    pub anti_entropy_rate: u32,
    /// Keep the data on disk in DIR (created if missing): an append-only log of
    /// every write plus snapshots, replayed on start, and the node's id and last
    /// ring. One node per directory. Without it the node keeps data in memory only.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// With --data-dir, when writes reach the disk: `batch` fsyncs once per event
    /// loop turn before the replies it covers (survives power loss); `always`
    /// fsyncs every write on its own (same guarantee, slower); `never` writes
    /// before replying but leaves flushing to the OS (survives a process crash,
    /// not a power loss).
    #[arg(long, default_value = "batch", value_name = "always|batch|never")]
    pub fsync: Fsync,
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to nothing"))
}

/// Where the cluster secret comes from: the manager's and the nodes' flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SecretArgs {
    /// The cluster secret (no spaces), from the first line of this file
    /// [default: $GTSTORE_SECRET]. Without one the process listens on loopback only.
    #[arg(long, value_name = "PATH", conflicts_with = "secret")]
    pub secret_file: Option<PathBuf>,
    /// The cluster secret itself. Every user of the machine sees it in `ps`:
    /// prefer --secret-file or $GTSTORE_SECRET.
    #[arg(long, value_name = "SECRET")]
    pub secret: Option<String>,
}

impl SecretArgs {
    /// The configured secret: the file, the flag or `$GTSTORE_SECRET`; `None` if
    /// there is none.
    fn configured(&self) -> Result<Option<String>, String> {
        if let Some(path) = &self.secret_file {
            return secret::read_file(path).map(Some);
        }
        Ok(self
            .secret
            .clone()
            .or_else(|| secret::from_env(secret::SECRET_ENV)))
    }

    /// The secret to run with, listening on `bind`: protected mode, like Redis's.
    /// With no secret configured the process may only listen on loopback, and uses
    /// the built-in default there (so a local cluster started by hand works); the
    /// built-in default is refused off loopback even when given explicitly.
    pub fn resolve(&self, bind: SocketAddr) -> Result<String, String> {
        let configured = self.configured()?;
        let loopback = bind.ip().is_loopback();
        let secret = match configured {
            Some(s) if s != crate::DEFAULT_SECRET || loopback => s,
            Some(_) => {
                return Err(format!(
                    "refusing to listen on {} with the built-in default secret: {PROTECTED_HOW}",
                    bind.ip()
                ))
            }
            None if loopback => crate::DEFAULT_SECRET.to_string(),
            None => {
                return Err(format!(
                    "protected mode: no secret configured, so only a loopback --host \
                     (127.0.0.1) is allowed, not {}; {PROTECTED_HOW}",
                    bind.ip()
                ))
            }
        };
        if secret.is_empty() || secret.contains(char::is_whitespace) {
            return Err("the cluster secret must be non-empty and without spaces".into());
        }
        Ok(secret)
    }
}

/// How to leave protected mode, for its error messages.
const PROTECTED_HOW: &str = "set a cluster secret with --secret-file PATH (first line) or the \
GTSTORE_SECRET environment variable (or --secret, which `ps` shows), the same on the \
manager and every node";

/// Runs a manager until SIGINT or SIGTERM.
pub fn run_manager(args: ManagerArgs) -> Result<(), String> {
    let n = args.replicas;
    if n == 0 || !(1..=n).contains(&args.read_quorum) || !(1..=n).contains(&args.write_quorum) {
        return Err(format!(
            "need --replicas >= 1 and both quorums in 1..=replicas (got N={n} R={} W={})",
            args.read_quorum, args.write_quorum
        ));
    }
    let heartbeat = crate::storage::HEARTBEAT_MS;
    if args.lease_ms <= heartbeat {
        return Err(format!(
            "--lease-ms must be above the nodes' heartbeat period ({heartbeat} ms): each \
             heartbeat renews a node's lease (0 is not allowed: nodes would never serve)"
        ));
    }
    let mut reactor = Reactor::new(Config::default()).map_err(|e| e.to_string())?;
    let bind = resolve(&format!("{}:{}", args.host, args.port))
        .map_err(|_| format!("cannot resolve --host {}", args.host))?;
    let cluster_secret = args.secret.resolve(bind)?;
    let admin_secret = match &args.admin_secret_file {
        Some(path) => secret::read_file(path)?,
        None => {
            secret::from_env(secret::ADMIN_SECRET_ENV).unwrap_or_else(|| cluster_secret.clone())
        }
    };
    if admin_secret == crate::DEFAULT_SECRET && !bind.ip().is_loopback() {
        return Err(format!(
            "refusing the built-in default as the admin secret on {}",
            bind.ip()
        ));
    }
    let (_, local) = reactor
        .bind(bind)
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    reactor.handle_signals().map_err(|e| e.to_string())?;
    log::info!(
        target: LISTENING_TARGET,
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
            target: LISTENING_TARGET,
            "gtstore-manager http listening on {}:{}",
            args.host,
            http.port()
        );
    }
    let mut manager = Manager::new(ManagerConfig {
        secret: cluster_secret,
        admin_secret,
        nonce_key: crate::protocol::auth::os_random()?,
        down_after_ms: args.down_after,
        dead_after_ms: args.dead_after,
        replicas: args.replicas,
        read_quorum: args.read_quorum,
        write_quorum: args.write_quorum,
        recovery_ms: args.recovery_ms,
        lease_ms: args.lease_ms,
        ..ManagerConfig::default()
    });
    reactor.run(&mut manager).map_err(|e| e.to_string())
}

/// Runs a storage node until SIGINT (stop) or SIGTERM (hand the data over and leave).
pub fn run_storage(args: StorageArgs) -> Result<(), String> {
    let manager = resolve(&args.manager)?;
    if args.data_dir.is_some() && u64::from(args.max_frame) + 65_536 > u64::from(MAX_BODY) {
        return Err(format!(
            "--max-frame above {} bytes cannot be logged",
            MAX_BODY - 65_536
        ));
    }
    let mut reactor = Reactor::new(Config {
        max_payload: args.max_frame,
        output_limit: (args.client_output_limit as usize) << 20,
        ..Config::default()
    })
    .map_err(|e| e.to_string())?;
    let bind = resolve(&format!("{}:{}", args.host, args.port))?;
    let cluster_secret = args.secret.resolve(bind)?;
    let client_password = match &args.client_password_file {
        Some(path) => Some(secret::read_file(path)?),
        None => {
            (args.client_password.clone()).or_else(|| secret::from_env(secret::CLIENT_PASSWORD_ENV))
        }
    };
    let (_, local) = reactor
        .bind(bind)
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    let advertise = format!("{}:{}", args.host, local.port());
    let mut cfg = NodeConfig::new(advertise.clone(), manager);
    cfg.secret = cluster_secret;
    cfg.tokens = args.tokens;
    cfg.tombstone_grace_ms = args.tombstone_grace;
    cfg.anti_entropy_rate = args.anti_entropy_rate;
    cfg.nonce_key = crate::protocol::auth::os_random()?;
    // Versions follow the wall clock; the reactor's clock starts about now.
    cfg.clock_base_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    reactor.handle_signals().map_err(|e| e.to_string())?;
    let mut node = DurableNode::new(StorageNode::new(cfg));
    if let Some(password) = client_password {
        if password.is_empty() {
            return Err("the client password must not be empty".into());
        }
        node.require_client_password(password, crate::protocol::auth::os_random()?);
        log::info!("clients must prove the client password (AUTH)");
    }
    if let Some(dir) = &args.data_dir {
        recover(&mut node, dir, args.fsync)?;
    }
    // Announced once the data is back: the line means "ready".
    log::info!(
        target: LISTENING_TARGET,
        "gtstore-storage listening on {advertise} (manager {manager})"
    );
    if let Some(port) = args.resp_port {
        let bind = resolve(&format!("{}:{port}", args.host))?;
        let (index, local) = reactor
            .bind(bind)
            .map_err(|e| format!("cannot listen on {}:{port}: {e}", args.host))?;
        assert_eq!(index, crate::storage::resp::LISTENER, "RESP is listener 1");
        node.enable_resp(Limits::new(args.max_frame as usize));
        log::info!(
            target: LISTENING_TARGET,
            "gtstore-storage RESP listening on {}:{}",
            args.host,
            local.port()
        );
    }
    if let Some(port) = args.http_port {
        let bind = resolve(&format!("{}:{port}", args.host))?;
        let (index, local) = reactor
            .bind(bind)
            .map_err(|e| format!("cannot listen on {}:{port}: {e}", args.host))?;
        node.enable_http(index, args.max_frame as usize);
        log::info!(
            target: LISTENING_TARGET,
            "gtstore-storage http listening on {}:{}",
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

/// Opens `dir` for `node` and replays what it holds.
fn recover(node: &mut DurableNode, dir: &Path, fsync: Fsync) -> Result<(), String> {
    let started = std::time::Instant::now();
    let found = node.open_data_dir(dir, fsync).map_err(|e| e.to_string())?;
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
        fsync
    );
    Ok(())
}
