//! The interactive shell.
//!
//! On a terminal it is a rustyline editor (prompt `gtstore> `, history in
//! `~/.gtstore_history`; Ctrl-C or Ctrl-D at the prompt leaves). When stdin is not a
//! terminal it reads one command per line from stdin without a prompt, so a script
//! can pipe commands in; a line starting with `#` is a comment. Lines are split into
//! words by [`super::words::split_words`] (double quotes, `\xHH` escapes).
//!
//! Every answer is one or more lines on stdout: `OK`, `(nil)` for a `get` miss,
//! `(not found)`, `(conflict)`, a value quoted and escaped as `redis-cli` shows it
//! (see [`super::display`]), `error: ...`. Errors go to stdout too, so a piped
//! transcript keeps its order. An error never ends the shell; a lost connection is
//! made again by the next command (see [`Session`]). A shell fed from a pipe exits
//! with [`super::EXIT_ERROR`] if any command failed (an error line was printed);
//! a miss or a conflict is an answer, not a failure, as in `redis-cli`.
//!
//! Besides the long names, the shell takes the one-letter CRUD commands of the
//! earliest gtstore client: `C KEY VALUE` (create), `R KEY` (get), `U KEY VALUE`
//! (update) and `D KEY` (delete).
//!
//! A front end can add commands through [`Extras`]: the cluster launcher adds `add`,
//! `drop ID`, `kill ID`, `restart ID` and `nodes`, and prints its children's logs
//! above the prompt through rustyline's external printer.

use super::display::{key_line, quote, NIL};
use super::status::{format_status, parse_status};
use super::words::split_words;
use super::{CliError, Reply, Request, Session, Target};
use rustyline::error::ReadlineError;
use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// The prompt on a terminal.
pub const PROMPT: &str = "gtstore> ";
/// History file name, under `$HOME`.
pub const HISTORY_FILE: &str = ".gtstore_history";

const HELP: &str = "\
commands:
  put KEY VALUE        store a value
  get KEY              show a value
  del KEY              delete a key
  create KEY VALUE     store only if the key is absent
  update KEY VALUE     store only if the key exists
  incr KEY [DELTA]     add DELTA (default 1, may be negative) to a counter
  exists KEY           whether the key exists
  status [--json]      the cluster's nodes, shares and key counts
  ring                 the ring as the manager sends it
  scan [PREFIX]        every key (that starts with PREFIX), one a line
  mget KEY...          many values in one request, a line per key
  mset KEY VALUE...    many writes in one request, a line per key
  ping [PAYLOAD]       check the contact node
  C KEY VALUE          create (the one-letter CRUD: C, R, U, D)
  R KEY                get
  U KEY VALUE          update
  D KEY                del
  help                 this text
  exit, quit           leave (so do Ctrl-D and Ctrl-C)
quoting: \"a b\" is one word, \"\" an empty one; inside quotes \\\" \\\\ \\n \\t \\xHH
values show quoted, with those escapes; a missing key shows (nil)
";

/// Commands a front end adds to the shell.
pub trait Extras {
    /// Help lines for the extra commands (each ending with a newline).
    fn help(&self) -> &str;
    /// Runs `cmd` with `args` if it is an extra command, writing its answer to `out`;
    /// returns `None` if `cmd` is not one of them.
    fn run(&mut self, cmd: &str, args: &[Vec<u8>], out: &mut dyn Write) -> Option<io::Result<()>>;
    /// Gives the extras a way to print (logs) without garbling the prompt line.
    fn set_printer(&mut self, _printer: Box<dyn rustyline::ExternalPrinter + Send>) {}
}

/// What one line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// Nothing (blank or comment).
    Empty,
    /// Leave the shell.
    Exit,
    /// Show help.
    Help,
    /// A request, and for `status` whether `--json` was given.
    Request(Request, bool),
    /// Not a built-in command: maybe an extra.
    Other(String, Vec<Vec<u8>>),
}

fn usage(text: &str) -> String {
    format!("usage: {text}")
}

/// Parses one line of the shell.
fn parse_line(line: &[u8]) -> Result<Line, String> {
    let trimmed = line.trim_ascii_start();
    if trimmed.is_empty() || trimmed.starts_with(b"#") {
        return Ok(Line::Empty);
    }
    let mut words = split_words(line)?.into_iter();
    let Some(cmd) = words.next() else {
        return Ok(Line::Empty);
    };
    let cmd = String::from_utf8_lossy(&cmd).to_ascii_lowercase();
    let args: Vec<Vec<u8>> = words.collect();
    let key = |text: &str| match args.as_slice() {
        [k] => Ok(k.clone()),
        _ => Err(usage(text)),
    };
    let kv = |text: &str| match args.as_slice() {
        [k, v] => Ok((k.clone(), v.clone())),
        _ => Err(usage(text)),
    };
    let req = match cmd.as_str() {
        "exit" | "quit" => return Ok(Line::Exit),
        "help" | "?" => return Ok(Line::Help),
        "put" => kv("put KEY VALUE").map(|(key, value)| Request::Put { key, value })?,
        "create" | "c" => {
            kv("create KEY VALUE").map(|(key, value)| Request::Create { key, value })?
        }
        "update" | "u" => {
            kv("update KEY VALUE").map(|(key, value)| Request::Update { key, value })?
        }
        "get" | "r" => Request::Get {
            key: key("get KEY")?,
        },
        "del" | "delete" | "d" => Request::Del {
            key: key("del KEY")?,
        },
        "exists" => Request::Exists {
            key: key("exists KEY")?,
        },
        "incr" => match args.as_slice() {
            [k] => Request::Incr {
                key: k.clone(),
                delta: 1,
            },
            [k, d] => Request::Incr {
                key: k.clone(),
                delta: std::str::from_utf8(d)
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .ok_or_else(|| "DELTA must be a whole number (i64)".to_string())?,
            },
            _ => return Err(usage("incr KEY [DELTA]")),
        },
        "status" => match args.as_slice() {
            [] => return Ok(Line::Request(Request::Status, false)),
            [flag] if flag == b"--json" => return Ok(Line::Request(Request::Status, true)),
            _ => return Err(usage("status [--json]")),
        },
        "scan" => match args.as_slice() {
            [] => Request::Scan { prefix: Vec::new() },
            [p] => Request::Scan { prefix: p.clone() },
            _ => return Err(usage("scan [PREFIX]")),
        },
        "mget" if args.is_empty() => return Err(usage("mget KEY [KEY ...]")),
        "mget" => Request::Mget { keys: args },
        "mset" => Request::Mset {
            pairs: super::batch::pairs(&args)
                .ok_or_else(|| usage("mset KEY VALUE [KEY VALUE ...]"))?,
        },
        "ring" if args.is_empty() => Request::Ring,
        "ring" => return Err(usage("ring")),
        "ping" => match args.as_slice() {
            [] => Request::Ping {
                payload: b"PONG".to_vec(),
            },
            [p] => Request::Ping { payload: p.clone() },
            _ => return Err(usage("ping [PAYLOAD]")),
        },
        _ => return Ok(Line::Other(cmd, args)),
    };
    Ok(Line::Request(req, false))
}

/// How the shell shows a reply.
fn render(request: &Request, reply: Reply, json: bool) -> Result<String, CliError> {
    Ok(match reply {
        Reply::Done if matches!(request, Request::Exists { .. }) => "yes\n".into(),
        Reply::Done => "OK\n".into(),
        Reply::NotFound if matches!(request, Request::Exists { .. }) => "no\n".into(),
        Reply::NotFound if matches!(request, Request::Get { .. }) => format!("{NIL}\n"),
        Reply::NotFound => "(not found)\n".into(),
        Reply::Conflict => "(conflict)\n".into(),
        Reply::Value(v) => format!("{}\n", quote(&v)),
        Reply::Pong(p) if &p[..] == b"PONG" => "PONG\n".into(),
        Reply::Pong(p) => format!("{}\n", quote(&p)),
        Reply::Count(n) => format!("{n}\n"),
        Reply::Keys(keys) if keys.is_empty() => "(no keys)\n".into(),
        Reply::Keys(keys) => keys.iter().map(|k| key_line(k) + "\n").collect(),
        Reply::Batch(keys, outcomes) => super::batch::render(&keys, &outcomes),
        Reply::Text(t) if matches!(request, Request::Status) && !json => {
            format_status(&parse_status(&t).map_err(CliError::Protocol)?)
        }
        Reply::Text(t) => {
            let mut s = String::from_utf8_lossy(&t).into_owned();
            if !s.ends_with('\n') {
                s.push('\n');
            }
            s
        }
    })
}

/// Runs the shell on `target` until the user leaves; returns the exit status:
/// [`super::EXIT_ERROR`] when input came from a pipe and a command failed (see the
/// module docs), else [`super::EXIT_OK`].
pub fn interactive(target: Target) -> u8 {
    let mut shell = Shell::new(target, None);
    match shell.run(None) {
        Ok(()) if shell.failed() && !io::stdin().is_terminal() => super::EXIT_ERROR,
        Ok(()) => super::EXIT_OK,
        Err(e) => {
            eprintln!("gtstore: {e}");
            super::EXIT_ERROR
        }
    }
}

/// The shell's state: the session and the optional extra commands.
pub struct Shell<'a> {
    session: Session,
    extras: Option<&'a mut dyn Extras>,
    /// Some command printed an error.
    failed: bool,
}

impl<'a> Shell<'a> {
    /// A shell talking to `target`, with optional extra commands.
    pub fn new(target: Target, extras: Option<&'a mut dyn Extras>) -> Shell<'a> {
        Shell {
            session: Session::new(target),
            extras,
            failed: false,
        }
    }

    /// Whether any command so far failed: a usage error, an unknown command, or a
    /// request that ended in an error (a miss or a conflict is not a failure).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Runs one line, writing the answer to `out`; returns false if the shell should
    /// end.
    pub fn handle(&mut self, line: &[u8], out: &mut dyn Write) -> io::Result<bool> {
        let parsed = match parse_line(line) {
            Ok(p) => p,
            Err(e) => {
                self.failed = true;
                writeln!(out, "error: {e}")?;
                return Ok(true);
            }
        };
        match parsed {
            Line::Empty => {}
            Line::Exit => return Ok(false),
            Line::Help => {
                out.write_all(HELP.as_bytes())?;
                if let Some(x) = &self.extras {
                    out.write_all(x.help().as_bytes())?;
                }
            }
            Line::Request(req, json) => {
                match self
                    .session
                    .execute(&req)
                    .and_then(|reply| render(&req, reply, json))
                {
                    Ok(text) => out.write_all(text.as_bytes())?,
                    Err(e) => {
                        self.failed = true;
                        writeln!(out, "error: {e}")?
                    }
                }
            }
            Line::Other(cmd, args) => {
                let ran = self.extras.as_mut().and_then(|x| x.run(&cmd, &args, out));
                match ran {
                    Some(r) => r?,
                    None => {
                        self.failed = true;
                        writeln!(out, "error: unknown command '{cmd}' (try help)")?
                    }
                }
            }
        }
        out.flush()?;
        Ok(true)
    }

    /// Reads and runs commands until exit, end of input, Ctrl-C at the prompt, or
    /// `stop` becoming true (checked between commands).
    pub fn run(&mut self, stop: Option<&AtomicBool>) -> io::Result<()> {
        let stopped = || stop.is_some_and(|s| s.load(Ordering::SeqCst));
        if io::stdin().is_terminal() {
            self.run_editor(&stopped)
        } else {
            self.run_piped(&stopped)
        }
    }

    fn run_editor(&mut self, stopped: &dyn Fn() -> bool) -> io::Result<()> {
        let mut editor = rustyline::DefaultEditor::new().map_err(io::Error::other)?;
        let history =
            std::env::var_os("HOME").map(|home| std::path::PathBuf::from(home).join(HISTORY_FILE));
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        if let Some(x) = self.extras.as_mut() {
            if let Ok(printer) = editor.create_external_printer() {
                x.set_printer(Box::new(printer));
            }
        }
        let mut out = io::stdout();
        while !stopped() {
            match editor.readline(PROMPT) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    if !self.handle(line.as_bytes(), &mut out)? {
                        break;
                    }
                }
                Err(ReadlineError::Interrupted | ReadlineError::Eof) => break,
                Err(e) => {
                    writeln!(out, "error: reading input: {e}")?;
                    break;
                }
            }
        }
        if let Some(path) = &history {
            let _ = editor.save_history(path);
        }
        Ok(())
    }

    fn run_piped(&mut self, stopped: &dyn Fn() -> bool) -> io::Result<()> {
        // A thread reads stdin so that this loop can notice `stop` while no line
        // comes (a blocked read is restarted after a signal, not interrupted).
        let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>();
        std::thread::spawn(move || {
            let mut input = io::stdin().lock();
            loop {
                let mut line = Vec::new();
                match input.read_until(b'\n', &mut line) {
                    Ok(0) => break,
                    Ok(_) => {
                        if tx.send(Ok(line)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
        });
        let mut out = io::stdout();
        while !stopped() {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(line)) => {
                    if !self.handle(&line, &mut out)? {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    writeln!(out, "error: reading input: {e}")?;
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn req(line: &str) -> Request {
        match parse_line(line.as_bytes()) {
            Ok(Line::Request(r, _)) => r,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn parses_commands() {
        assert_eq!(
            req(r#"put "my key" "two words""#),
            Request::Put {
                key: b"my key".to_vec(),
                value: b"two words".to_vec()
            }
        );
        assert_eq!(
            req("INCR n -5"),
            Request::Incr {
                key: b"n".to_vec(),
                delta: -5
            }
        );
        assert_eq!(
            req("incr n"),
            Request::Incr {
                key: b"n".to_vec(),
                delta: 1
            }
        );
        assert_eq!(
            parse_line(b"status --json"),
            Ok(Line::Request(Request::Status, true))
        );
        assert_eq!(parse_line(b"  # comment"), Ok(Line::Empty));
        assert_eq!(parse_line(b""), Ok(Line::Empty));
        assert_eq!(parse_line(b"quit"), Ok(Line::Exit));
        assert_eq!(
            parse_line(b"drop 3"),
            Ok(Line::Other("drop".into(), vec![b"3".to_vec()]))
        );
    }

    #[test]
    fn one_letter_crud() {
        let (key, value) = (b"k".to_vec(), b"v w".to_vec());
        assert_eq!(
            req(r#"C k "v w""#),
            Request::Create {
                key: key.clone(),
                value: value.clone()
            }
        );
        assert_eq!(req("R k"), Request::Get { key: key.clone() });
        assert_eq!(
            req(r#"U k "v w""#),
            Request::Update {
                key: key.clone(),
                value
            }
        );
        assert_eq!(req("D k"), Request::Del { key });
        assert_eq!(parse_line(b"R"), Err("usage: get KEY".to_string()));
        assert_eq!(
            parse_line(b"C k"),
            Err("usage: create KEY VALUE".to_string())
        );
        for letter in ["C KEY VALUE", "R KEY", "U KEY VALUE", "D KEY"] {
            assert!(HELP.contains(letter), "help lists {letter}");
        }
    }

    #[test]
    fn usage_errors() {
        assert_eq!(parse_line(b"get"), Err("usage: get KEY".to_string()));
        assert_eq!(
            parse_line(b"put k"),
            Err("usage: put KEY VALUE".to_string())
        );
        assert!(parse_line(b"incr k x").is_err());
        assert!(parse_line(b"put \"k v").is_err());
    }

    #[test]
    fn renders_replies() {
        let get = req("get k");
        let exists = req("exists k");
        let r = |q: &Request, reply| render(q, reply, false).unwrap();
        assert_eq!(r(&get, Reply::NotFound), "(nil)\n");
        assert_eq!(r(&req("del k"), Reply::NotFound), "(not found)\n");
        assert_eq!(r(&exists, Reply::NotFound), "no\n");
        assert_eq!(r(&exists, Reply::Done), "yes\n");
        assert_eq!(r(&req("put k v"), Reply::Done), "OK\n");
        assert_eq!(r(&req("create k v"), Reply::Conflict), "(conflict)\n");
        assert_eq!(
            r(&get, Reply::Value(Bytes::from_static(b"a\xffb\x1b[0m"))),
            "\"a\\xffb\\x1b[0m\"\n"
        );
        assert_eq!(r(&get, Reply::Value(Bytes::new())), "\"\"\n");
        assert_eq!(
            r(&get, Reply::Value(Bytes::from_static(b"\"\""))),
            "\"\\\"\\\"\"\n"
        );
        assert_eq!(
            r(&get, Reply::Value(Bytes::from_static(b"(nil)"))),
            "\"(nil)\"\n"
        );
        let ping = req("ping");
        assert_eq!(r(&ping, Reply::Pong(Bytes::from_static(b"PONG"))), "PONG\n");
        assert_eq!(
            r(&ping, Reply::Pong(Bytes::from_static(b"a b"))),
            "\"a b\"\n"
        );
    }

    #[test]
    fn errors_do_not_end_the_shell() {
        let target = Target {
            manager: "127.0.0.1:1".into(),
            node: None,
            timeout: Duration::from_secs(1),
            password: None,
        };
        let mut shell = Shell::new(target, None);
        let mut out = Vec::new();
        assert!(!shell.failed());
        assert!(shell.handle(b"help", &mut out).unwrap());
        assert!(!shell.failed(), "help is not a failure");
        out.clear();
        assert!(shell.handle(b"get k", &mut out).unwrap());
        assert!(shell.failed());
        assert!(shell.handle(b"bogus", &mut out).unwrap());
        assert!(!shell.handle(b"exit", &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("error: cannot reach manager 127.0.0.1:1"));
        assert_eq!(lines[1], "error: unknown command 'bogus' (try help)");
    }
}
