//! `gtstore`: the command-line client. Flags and dispatch only; see `gtstore::cli`.

use clap::{Args, Parser, Subcommand};
use gtstore::cli::{self, cluster, oneshot, shell, CliError, Request, Target};
use oneshot::{arg_bytes, value_arg, StatusFormat};
use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

/// The gtstore client: key-value commands, cluster status, an interactive shell.
///
/// With a COMMAND, runs it once: `get` prints the value's raw bytes, errors print one
/// line on stderr, and the exit status tells what happened. With no COMMAND, opens a
/// shell (commands as below plus help and exit; Ctrl-D leaves), which also reads
/// commands piped on stdin. `gtstore cluster` starts a local cluster to play with.
#[derive(Parser, Debug)]
#[command(version, after_long_help = cli::EXAMPLES)]
struct Cli {
    /// The manager's HOST:PORT [default: $GTSTORE_MANAGER, else 127.0.0.1:7000].
    #[arg(long, global = true, value_name = "ADDR")]
    manager: Option<String>,
    /// Talk to this storage node directly (anonymously), not the one the manager names;
    /// a comma-separated list is tried in order. `status` shows the cluster as it sees it.
    #[arg(long, global = true, value_name = "ADDR")]
    node: Option<String>,
    /// Seconds to wait for a connection or a reply.
    #[arg(long, global = true, value_name = "SECS", default_value = "10", value_parser = cli::parse_timeout)]
    timeout: Duration,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Debug)]
struct Key {
    /// The key (its bytes as given).
    key: OsString,
}

#[derive(Args, Debug)]
struct KeyValue {
    /// The key (its bytes as given).
    key: OsString,
    /// The value; `-` reads it from stdin, byte for byte.
    #[arg(allow_hyphen_values = true)]
    value: OsString,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Store VALUE under KEY.
    Put(KeyValue),
    /// Print KEY's value (raw bytes; exit 1 if not found).
    Get(Key),
    /// Delete KEY (exit 1 if not found).
    Del(Key),
    /// Store VALUE only if KEY does not exist (exit 1 on conflict).
    Create(KeyValue),
    /// Store VALUE only if KEY exists (exit 1 if not found).
    Update(KeyValue),
    /// Add DELTA to the counter at KEY (a missing key counts as 0); print the count.
    Incr {
        /// The key (its bytes as given).
        key: OsString,
        /// The amount to add; may be negative.
        #[arg(allow_hyphen_values = true, default_value_t = 1)]
        delta: i64,
    },
    /// Exit 0 if KEY exists, 1 if not; print nothing.
    Exists(Key),
    /// Show the cluster now: epoch, N/R/W, distinct keys and copies, and each node's
    /// address, state, share and keys (asked of every node, not from heartbeats).
    Status {
        /// Print the JSON the table is made from (see docs/operations.md).
        #[arg(long)]
        json: bool,
    },
    /// Print the ring (epoch, replication, nodes and tokens) as the manager sends it.
    Ring,
    /// Make a node hand its data over and leave the cluster (NODE: id or HOST:PORT).
    Drop {
        /// The node's id or address.
        node: String,
    },
    /// Check the contact node; prints the echoed PAYLOAD.
    Ping {
        /// What to send [default: PONG].
        payload: Option<OsString>,
    },
    /// Start a local cluster (a manager and N storage nodes) and open a shell on it.
    ///
    /// Everything runs on 127.0.0.1 as child processes whose logs are shown with a
    /// `[manager]` / `[node ID]` prefix. Once all nodes are up, the launcher prints
    /// where each process listens and opens the shell, with extra commands: `add`
    /// (start one more node), `drop ID` (SIGTERM: graceful leave), `kill ID` (SIGKILL:
    /// crash) and `nodes`. Leaving the shell (exit, Ctrl-D, Ctrl-C, end of stdin)
    /// stops every child: SIGINT (stop now), then SIGKILL after 3 s.
    Cluster(cluster::ClusterConfig),
}

fn request(cmd: Command) -> Result<(Request, StatusFormat), CliError> {
    let kv = |kv: KeyValue| Ok::<_, CliError>((arg_bytes(&kv.key), value_arg(&kv.value)?));
    let req = match cmd {
        Command::Put(a) => kv(a).map(|(key, value)| Request::Put { key, value })?,
        Command::Create(a) => kv(a).map(|(key, value)| Request::Create { key, value })?,
        Command::Update(a) => kv(a).map(|(key, value)| Request::Update { key, value })?,
        Command::Get(Key { key }) => Request::Get {
            key: arg_bytes(&key),
        },
        Command::Del(Key { key }) => Request::Del {
            key: arg_bytes(&key),
        },
        Command::Exists(Key { key }) => Request::Exists {
            key: arg_bytes(&key),
        },
        Command::Incr { key, delta } => Request::Incr {
            key: arg_bytes(&key),
            delta,
        },
        Command::Status { json: true } => return Ok((Request::Status, StatusFormat::Json)),
        Command::Status { json: false } => Request::Status,
        Command::Ring => Request::Ring,
        Command::Drop { node } => Request::Drop { node },
        Command::Ping { payload } => Request::Ping {
            payload: payload.map_or(b"PONG".to_vec(), |p| arg_bytes(&p)),
        },
        Command::Cluster { .. } => return Err(CliError::Other("not a request".into())),
    };
    Ok((req, StatusFormat::Table))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Cli::parse();
    let manager = args
        .manager
        .or_else(|| std::env::var("GTSTORE_MANAGER").ok());
    let target = Target {
        manager: manager.unwrap_or_else(|| cli::DEFAULT_MANAGER.to_string()),
        node: args.node,
        timeout: args.timeout,
    };
    ExitCode::from(match args.command {
        None => shell::interactive(target),
        Some(Command::Cluster(cfg)) => cluster::run(cfg, args.timeout),
        Some(cmd) => match request(cmd) {
            Ok((req, format)) => oneshot::run(target, req, format),
            Err(e) => {
                eprintln!("gtstore: {e}");
                cli::EXIT_ERROR
            }
        },
    })
}
