//! One-shot commands: `gtstore get KEY` and friends.
//!
//! Output is made for scripts: `get` writes the value's raw bytes (plus a newline
//! only when stdout is a terminal), `incr` the new count, `ping` the echo, `status`
//! a table (or, with `--json`, the JSON the table is made from: see
//! [`super::survey`]), `ring` the ring text as received;
//! `put`, `create`, `update`, `del` and `exists` print nothing; `mget` and
//! `mset` a line per key (see [`super::batch`]). A not-found key or a
//! CREATE conflict exits with status 1 (with a line on stderr, except for `exists`,
//! whose "no" is an ordinary answer); a write whose outcome is unknown (`ERR
//! UNKNOWN`, or a connection that broke or timed out after the write was sent:
//! it may or may not have been applied) exits with 3, any other error with 2,
//! each with one line on stderr, `gtstore: ...`.

use super::status::{format_status, parse_status};
use super::{exit_code, CliError, Reply, Request, Session, Target, EXIT_ERROR, EXIT_UNKNOWN};
use std::ffi::{OsStr, OsString};
use std::io::{self, IsTerminal, Read, Write};

/// How `status` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFormat {
    /// A summary line and a table.
    Table,
    /// The status JSON: the manager's, with every node's own figures merged in.
    Json,
    /// The table, then the keys each node holds (bounded per node: see
    /// [`super::held`]).
    TableAndKeys,
}

/// The raw bytes of a command-line argument (Unix: any bytes, not only UTF-8).
pub fn arg_bytes(arg: &OsStr) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    arg.as_bytes().to_vec()
}

/// A VALUE argument: `-` means all of stdin, byte for byte.
pub fn value_arg(arg: &OsString) -> Result<Vec<u8>, CliError> {
    if arg != "-" {
        return Ok(arg_bytes(arg));
    }
    let mut value = Vec::new();
    io::stdin()
        .lock()
        .read_to_end(&mut value)
        .map_err(|e| CliError::Other(format!("cannot read the value from stdin: {e}")))?;
    Ok(value)
}

/// Runs one request against `target`, prints its outcome and returns the exit
/// status.
pub fn run(target: Target, request: Request, format: StatusFormat) -> u8 {
    let mut session = Session::new(target);
    let result = session.execute(&request);
    let code = exit_code(&result);
    let status = match &result {
        Ok(Reply::Text(t)) if format == StatusFormat::TableAndKeys => Some(t.clone()),
        _ => None,
    };
    let (timeout, password) = (session.target().timeout, session.target().password.clone());
    let printed = match result {
        Ok(reply) => print_reply(&request, reply, format),
        Err(e @ CliError::Lost { .. }) if request.is_write() => {
            // The write left; the node may have applied it before the
            // connection broke or the reply was late.
            eprintln!("gtstore: {e}; outcome unknown: the write may or may not have been applied");
            return EXIT_UNKNOWN;
        }
        Err(e) => {
            eprintln!("gtstore: {e}");
            return code;
        }
    };
    let printed = printed.and_then(|()| match status {
        Some(s) => {
            let text = super::held::held_keys(&s, timeout, password.as_deref());
            let mut out = io::stdout().lock();
            (out.write_all(text.as_bytes()).and_then(|_| out.flush()))
                .map_err(|e| CliError::Other(format!("cannot write to stdout: {e}")))
        }
        None => Ok(()),
    });
    match printed {
        Ok(()) => code,
        Err(e) => {
            eprintln!("gtstore: {e}");
            EXIT_ERROR
        }
    }
}

fn print_reply(request: &Request, reply: Reply, format: StatusFormat) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    let tty = out.is_terminal();
    let written = match reply {
        Reply::Done => Ok(()),
        Reply::NotFound => {
            if !matches!(request, Request::Exists { .. }) {
                eprintln!("gtstore: not found");
            }
            Ok(())
        }
        Reply::Conflict => {
            eprintln!("gtstore: conflict: key exists");
            Ok(())
        }
        Reply::Value(v) => {
            out.write_all(&v)
                .and_then(|_| if tty { out.write_all(b"\n") } else { Ok(()) })
        }
        Reply::Count(n) => writeln!(out, "{n}"),
        Reply::Keys(keys) => keys
            .iter()
            .try_for_each(|k| writeln!(out, "{}", super::display::key_line(k))),
        Reply::Pong(p) => out.write_all(&p).and_then(|_| out.write_all(b"\n")),
        Reply::Batch(keys, outcomes) => {
            out.write_all(super::batch::render(&keys, &outcomes).as_bytes())
        }
        Reply::Text(t) => {
            let text = if matches!(request, Request::Status) && format != StatusFormat::Json {
                let status = parse_status(&t).map_err(CliError::Protocol)?;
                format_status(&status).into_bytes()
            } else {
                t.to_vec()
            };
            out.write_all(&text).and_then(|_| {
                if text.ends_with(b"\n") || text.is_empty() {
                    Ok(())
                } else {
                    out.write_all(b"\n")
                }
            })
        }
    };
    written
        .and_then(|_| out.flush())
        .map_err(|e| CliError::Other(format!("cannot write to stdout: {e}")))
}
