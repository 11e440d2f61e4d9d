//! `gtstore`'s flags (clap): the client's commands and connection flags, and the
//! launcher's and servers' subcommands. The binary parses a [`Cli`] and dispatches.
//!
//! The connection flags (`--manager`, `--node`, `--timeout`) belong to the client:
//! they are taken before a client command or after it (the one after wins), and
//! before `cluster`, `manager` or `storage` they are an error, not silently
//! ignored ([`reject_client_flags`]); `cluster` has its own `--timeout`, and
//! `storage` its own `--manager`.

use super::oneshot::{arg_bytes, value_arg, StatusFormat};
use super::serve::{self, ManagerArgs, StorageArgs};
use super::{cluster, CliError, Request, Target};
use clap::{Args, CommandFactory, Parser, Subcommand};
use std::ffi::OsString;
use std::time::Duration;

/// The gtstore client: key-value commands, cluster status, an interactive shell.
///
/// With a COMMAND, runs it once: `get` prints the value's raw bytes, errors print one
/// line on stderr, and the exit status tells what happened. With no COMMAND, opens a
/// shell (commands as below plus help and exit; Ctrl-D leaves), which also reads
/// commands piped on stdin. `gtstore cluster` starts a local cluster to play with;
/// `gtstore manager` and `gtstore storage` run the servers themselves.
#[derive(Parser, Debug)]
#[command(version, after_long_help = super::EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    /// Connection flags given before the command.
    pub conn: Conn,
    /// The command; none opens the shell.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// How the client reaches the cluster: before the command or after it.
#[derive(Args, Debug, Clone, Default)]
pub struct Conn {
    /// The manager's HOST:PORT [default: $GTSTORE_MANAGER, else 127.0.0.1:7000].
    #[arg(long, value_name = "ADDR")]
    pub manager: Option<String>,
    /// Talk to this storage node directly (anonymously), not the one the manager names;
    /// a comma-separated list is tried in order. `status` shows the cluster as it sees it.
    #[arg(long, value_name = "ADDR")]
    pub node: Option<String>,
    /// Seconds to wait for a connection or a reply [default: 10].
    #[arg(long, value_name = "SECS", value_parser = super::parse_timeout)]
    pub timeout: Option<Duration>,
    /// Prove the client password (the nodes' --client-password-file) from the first
    /// line of this file [default: $GTSTORE_PASSWORD; none when neither is set].
    #[arg(long, value_name = "PATH")]
    pub password_file: Option<std::path::PathBuf>,
}

/// A command's KEY.
#[derive(Args, Debug)]
pub struct Key {
    /// The key (its bytes as given).
    key: OsString,
    #[command(flatten)]
    conn: Conn,
}

/// A command's KEY and VALUE.
#[derive(Args, Debug)]
pub struct KeyValue {
    /// The key (its bytes as given).
    key: OsString,
    /// The value; `-` reads it from stdin, byte for byte.
    #[arg(allow_hyphen_values = true)]
    value: OsString,
    #[command(flatten)]
    conn: Conn,
}

/// `gtstore`'s commands.
#[derive(Subcommand, Debug)]
pub enum Command {
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
        #[command(flatten)]
        conn: Conn,
    },
    /// Exit 0 if KEY exists, 1 if not; print nothing.
    Exists(Key),
    /// Show the cluster now: epoch, N/R/W, distinct keys and copies, and each node's
    /// address, state, share and keys (asked of every node, not from heartbeats).
    Status {
        /// Print the JSON the table is made from (see docs/operations.md).
        #[arg(long, conflicts_with = "keys")]
        json: bool,
        /// After the table, list the keys each node holds (asked of each node; the
        /// first 1,000 per node in byte order, with a note when it holds more).
        #[arg(long)]
        keys: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print every key of the cluster that starts with PREFIX, one a line: as it is
    /// when it is printable ASCII not starting with `"`, else quoted with the
    /// shell's escapes (`\n`, `\xHH`, ...). Walks the cluster with the SCAN op, in
    /// pages, in the order of the keys' ring hashes: every key that exists for the
    /// whole walk is listed exactly once, even while nodes join or leave; keys
    /// written or deleted during it may or may not be.
    Scan {
        /// Only keys that start with these bytes [default: every key].
        prefix: Option<OsString>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Read many keys in one request (MGET), a line per key.
    ///
    /// One line per KEY, in order: the key quoted, then its value quoted, `(nil)` if
    /// missing, or `(error) CODE message` if its read failed. Exit 2 if any read
    /// failed, else 1 if any key was missing.
    Mget {
        /// The keys (their bytes as given), at most 10,000.
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<OsString>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Write many pairs in one request (MSET), a line per key.
    ///
    /// Not atomic: each key is its own write. One line per KEY, in order: the key
    /// quoted, then `OK` or `(error) CODE message`. Exit 2 if any write failed, 3 if
    /// every failure was UNKNOWN (a write that may or may not have been applied).
    Mset {
        /// KEY VALUE pairs (their bytes as given; `-` is a value like any other), at
        /// most 10,000.
        #[arg(required = true, value_names = ["KEY", "VALUE"], num_args = 2.., allow_hyphen_values = true)]
        pairs: Vec<OsString>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print the ring (epoch, replication, nodes and tokens) as the manager sends it.
    Ring {
        #[command(flatten)]
        conn: Conn,
    },
    /// Make a node hand its data over and leave the cluster (NODE: id or HOST:PORT).
    /// An admin op: the client proves the admin secret (never sends it) from
    /// --admin-secret-file, else $GTSTORE_ADMIN_SECRET, else $GTSTORE_SECRET, else the
    /// built-in default a manager on loopback with no secret configured accepts.
    Drop {
        /// The node's id or address.
        #[arg(id = "drop_node", value_name = "NODE")]
        node: String,
        /// Read the admin secret from the first line of this file.
        #[arg(long, value_name = "PATH")]
        admin_secret_file: Option<std::path::PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Check the contact node; prints the echoed PAYLOAD.
    Ping {
        /// What to send [default: PONG].
        payload: Option<OsString>,
        #[command(flatten)]
        conn: Conn,
    },
    #[command(about = cluster::ABOUT, long_about = cluster::LONG_ABOUT)]
    /// `gtstore cluster`.
    Cluster(cluster::ClusterConfig),
    #[command(about = serve::MANAGER_ABOUT, long_about = serve::MANAGER_LONG_ABOUT)]
    /// `gtstore manager`.
    Manager(ManagerArgs),
    #[command(about = serve::STORAGE_ABOUT, long_about = serve::STORAGE_LONG_ABOUT)]
    /// `gtstore storage`.
    Storage(StorageArgs),
}

/// The request a client command asks for, and the connection flags given after it.
pub fn request(cmd: Command) -> Result<(Request, StatusFormat, Conn), CliError> {
    let kv = |kv: KeyValue| Ok::<_, CliError>((arg_bytes(&kv.key), value_arg(&kv.value)?, kv.conn));
    let table = StatusFormat::Table;
    Ok(match cmd {
        Command::Put(a) => kv(a).map(|(key, value, c)| (Request::Put { key, value }, table, c))?,
        Command::Create(a) => {
            kv(a).map(|(key, value, c)| (Request::Create { key, value }, table, c))?
        }
        Command::Update(a) => {
            kv(a).map(|(key, value, c)| (Request::Update { key, value }, table, c))?
        }
        Command::Get(k) => (
            Request::Get {
                key: arg_bytes(&k.key),
            },
            table,
            k.conn,
        ),
        Command::Del(k) => (
            Request::Del {
                key: arg_bytes(&k.key),
            },
            table,
            k.conn,
        ),
        Command::Exists(k) => (
            Request::Exists {
                key: arg_bytes(&k.key),
            },
            table,
            k.conn,
        ),
        Command::Incr { key, delta, conn } => {
            let key = arg_bytes(&key);
            (Request::Incr { key, delta }, table, conn)
        }
        Command::Status { json, keys, conn } => {
            let format = match (json, keys) {
                (true, _) => StatusFormat::Json,
                (_, true) => StatusFormat::TableAndKeys,
                _ => table,
            };
            (Request::Status, format, conn)
        }
        Command::Ring { conn } => (Request::Ring, table, conn),
        Command::Mget { keys, conn } => {
            let keys = keys.iter().map(|k| arg_bytes(k)).collect();
            (Request::Mget { keys }, table, conn)
        }
        Command::Mset { pairs, conn } => {
            let words: Vec<Vec<u8>> = pairs.iter().map(|w| arg_bytes(w)).collect();
            let pairs = super::batch::pairs(&words).ok_or_else(|| {
                CliError::Other("mset takes KEY VALUE pairs: an even number of words".into())
            })?;
            (Request::Mset { pairs }, table, conn)
        }
        Command::Scan { prefix, conn } => {
            let prefix = prefix.map(|p| arg_bytes(&p)).unwrap_or_default();
            (Request::Scan { prefix }, table, conn)
        }
        Command::Drop {
            node,
            admin_secret_file,
            conn,
        } => (
            Request::Drop {
                node,
                admin_secret_file,
            },
            table,
            conn,
        ),
        Command::Ping { payload, conn } => {
            let payload = payload.map_or(b"PONG".to_vec(), |p| arg_bytes(&p));
            (Request::Ping { payload }, table, conn)
        }
        Command::Cluster(_) | Command::Manager(_) | Command::Storage(_) => {
            return Err(CliError::Other("not a request".into()))
        }
    })
}

/// Fails (as clap does, exit 2) if a client flag before `cmd` does not apply to it.
pub fn reject_client_flags(conn: &Conn, cmd: &str, timeout_applies: bool) {
    let given = [
        ("--manager", conn.manager.is_some()),
        ("--node", conn.node.is_some()),
        ("--timeout", conn.timeout.is_some() && !timeout_applies),
        ("--password-file", conn.password_file.is_some()),
    ];
    if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
        let msg = format!("{flag} before `{cmd}` is a client flag and does not apply to it");
        Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, msg)
            .exit();
    }
}

/// Where the client goes: the flags, else `$GTSTORE_MANAGER`, else the defaults.
/// An unreadable password file ends the process (exit 2).
pub fn target(conn: Conn) -> Target {
    let password = match crate::client::secret::client_password(conn.password_file.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("gtstore: {e}");
            std::process::exit(super::EXIT_ERROR.into());
        }
    };
    let manager = conn
        .manager
        .or_else(|| std::env::var("GTSTORE_MANAGER").ok());
    Target {
        manager: manager.unwrap_or_else(|| super::DEFAULT_MANAGER.to_string()),
        node: conn.node,
        timeout: conn.timeout.unwrap_or(super::DEFAULT_TIMEOUT),
        password,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_s_flags_are_consistent() {
        // clap checks these only when a command is parsed in a debug build; this
        // checks every subcommand at once (a positional `node` once clashed with
        // `--node` under `drop`).
        Cli::command().debug_assert();
    }
}
