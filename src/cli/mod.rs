//! The `gtstore` command-line client: one-shot commands, an interactive shell and a
//! local cluster launcher, and the two servers as subcommands. `src/bin/gtstore.rs`
//! only defines the client's flags (clap) and calls into this module.
//!
//! The pieces:
//!
//! - [`args`]: `gtstore`'s flags and subcommands (clap), for `src/bin/gtstore.rs`.
//! - [`session`]: a [`Request`] (one of the commands every front end understands) is
//!   run by a [`Session`], which connects lazily (HELLO to the manager, or straight
//!   to a node given with `--node`, or to a remembered node when the manager is
//!   away), reconnects after a lost connection and turns the client library's
//!   errors into a [`CliError`] that says what could not be reached.
//! - [`survey`]: `status` asks the manager and every node at once and merges their
//!   answers into current figures (distinct keys and copies); without the manager,
//!   the cluster as a node sees it.
//! - [`cache`]: the storage nodes last seen, remembered per manager in a small file
//!   under the user's cache directory, for working while the manager is down.
//! - [`oneshot`]: `gtstore put k v` and friends. Raw bytes on stdout, one line on
//!   stderr for errors, and the exit status a script can test: [`EXIT_OK`],
//!   [`EXIT_MISSING`] (not found, or a CREATE conflict), [`EXIT_ERROR`],
//!   [`EXIT_UNKNOWN`] (a write whose outcome is unknown: `ERR UNKNOWN`).
//! - [`shell`]: the interactive shell (rustyline, history in `~/.gtstore_history`).
//!   It also reads commands piped on stdin, so scripts and tests can drive it.
//! - [`cluster`]: `gtstore cluster` starts a manager and N storage nodes as child
//!   processes of its own executable, waits until they are all up, then opens the
//!   shell with extra commands (`add`, `drop ID`, `kill ID`, `restart ID`) and stops
//!   every child when it leaves or gets a signal.
//! - [`serve`]: the manager's and the storage node's flags and mains, shared by
//!   `gtstore manager` / `gtstore storage` and the `gtstore-manager` /
//!   `gtstore-storage` binaries.
//! - [`held`]: `status --keys`, what each node holds.
//! - [`batch`]: `mget` and `mset`, many keys in one request, a line per key.
//! - [`words`], [`display`] and [`status`]: pure helpers (splitting a shell line
//!   with quotes, showing a value quoted and escaped, the STATUS table),
//!   unit-tested.
//!
//! Caveats: the launcher is Unix-only (process groups, signals, and on Linux a
//! parent-death signal for its children); keys given on
//! the command line are taken as their raw OS bytes, which is also a Unix notion.

pub mod args;
pub mod batch;
pub mod cache;
pub mod cluster;
pub mod display;
pub mod held;
pub mod oneshot;
pub mod serve;
pub mod session;
pub mod shell;
pub mod status;
pub mod survey;
pub mod words;

pub use session::{exit_code, CliError, Reply, Request, Session, Target};

/// Exit status: the command did what was asked.
pub const EXIT_OK: u8 = 0;
/// Exit status: the key was not found (get, del, update, exists), or it already
/// existed (create).
pub const EXIT_MISSING: u8 = 1;
/// Exit status: any error (unreachable, server error, bad input).
pub const EXIT_ERROR: u8 = 2;
/// Exit status: a write's outcome is unknown: the server answered `ERR
/// UNKNOWN` (it failed after it may have been applied), or the connection
/// broke or timed out after it was sent. It may or may not have taken effect
/// (read the key to see).
pub const EXIT_UNKNOWN: u8 = 3;

/// How long the client waits for a connection or a reply, unless `--timeout` says.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Default manager address, unless `--manager` or `GTSTORE_MANAGER` says otherwise.
pub const DEFAULT_MANAGER: &str = "127.0.0.1:7000";

/// The examples at the end of `gtstore --help`.
pub const EXAMPLES: &str = "\
Examples:
  gtstore cluster --nodes 3 --base-port 0   start a local cluster, open a shell on it
  gtstore storage --port 7004               one more storage node (flags: storage --help)
  gtstore put greeting hello                store a value
  gtstore get greeting                      print it (raw bytes)
  gtstore put blob - < photo.jpg            store stdin, byte for byte
  gtstore incr visits -5                    add -5 to a counter, print the new count
  gtstore --node 127.0.0.1:7001 ping        check one storage node
  gtstore --node 127.0.0.1:7001,127.0.0.1:7002 get k
                                            no manager needed: the first node that answers
  gtstore status                            nodes, shares, distinct keys and copies, now
  gtstore scan user:                        every key that starts with user:, one a line
  gtstore mset a 1 b 2                      many writes in one request, a line per key
  gtstore mget a b c                        many reads in one request, a line per key
  gtstore --node 127.0.0.1:7001 status      the cluster as that node sees it
  gtstore                                   the interactive shell
  printf 'put a 1\\nget a\\n' | gtstore      the shell, fed from a pipe

Exit status: 0 done, 1 not found (or create on an existing key), 2 error,
3 outcome unknown (the write may or may not have been applied: read the key).
A shell fed from a pipe exits 2 if any command failed, else 0 (a miss is an answer).
With the manager down, commands use --node, else the nodes remembered from the last
ring this client read (in $XDG_CACHE_HOME/gtstore/nodes or ~/.cache/gtstore/nodes).
A key that starts with '-' goes after `--`: gtstore get -- -k";

/// Parses `--timeout`: a positive number of seconds.
pub fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() && x < 1e9 => Ok(std::time::Duration::from_secs_f64(x)),
        _ => Err("expected a positive number of seconds".into()),
    }
}

/// Describes an I/O error the way a person wants to read it in one line:
/// `connection refused`, `timed out`, or the message the library gave.
pub fn describe_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) {
        return "timed out".to_string();
    }
    let text = e.to_string();
    let text = match (e.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(i)) => &text[..i],
        _ => text.as_str(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("{:?}", e.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn io_errors_read_well() {
        let refused = io::Error::from_raw_os_error(111);
        assert_eq!(describe_io(&refused), "connection refused");
        let timeout = io::Error::from(io::ErrorKind::WouldBlock);
        assert_eq!(describe_io(&timeout), "timed out");
        let custom = io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection");
        assert_eq!(describe_io(&custom), "server closed the connection");
    }
}
