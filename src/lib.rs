//! gtstore: a small Dynamo-style distributed key-value store.
//!
//! A tour, from the wire inwards. Every byte between processes is a frame of the
//! [`protocol`] module (`OP CLIENTID NODEID LEN\n` + payload), cut out of read
//! buffers without copying. Each process is one thread running the [`reactor`], a
//! `mio` event loop that owns sockets, buffers, timers and signals and drives a
//! state machine (a [`reactor::Service`]): the manager's logic in [`coordinator`]
//! (membership, ids, tokens, failure detection) or a storage node's in [`storage`]
//! (sectors of key-value data, one per ring token). The [`ring`] module is the
//! consistent-hashing math that manager, nodes and clients share. The [`client`]
//! module is the blocking client library the CLI and the tests use. Binaries in
//! `src/bin/` only parse flags and wire these together.

pub mod alloc;
pub mod cli;
pub mod client;
pub mod coordinator;
pub mod http;
pub mod load;
pub mod protocol;
pub mod reactor;
pub mod ring;
pub mod sim;
pub mod storage;

/// The built-in cluster (and admin) secret of a process with none configured:
/// usable on loopback only (protected mode, see [`cli::serve`]).
pub const DEFAULT_SECRET: &str = "gtstore";
/// Default tokens (virtual nodes) per storage node.
pub const DEFAULT_TOKENS: u32 = 64;
/// Default manager port.
pub const DEFAULT_MANAGER_PORT: u16 = 7000;

/// Sets up logging for a server: `RUST_LOG` if set, else `info`. The line that says
/// where a server listens ([`cli::serve::LISTENING_TARGET`]) is logged whatever
/// `RUST_LOG` says.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .filter_module(cli::serve::LISTENING_TARGET, log::LevelFilter::Info)
        .format_timestamp_millis()
        .init();
}

/// Turns a binary's result into its exit status: 0, or 2 with `name: error` on stderr.
pub fn exit_status(name: &str, result: Result<(), String>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
