//! What each command becomes: the command table (names and arities as Redis has
//! them), the errors Redis gives before a command runs (unknown command or
//! subcommand, wrong arity), and the data commands' native requests.

use super::session::{err_reply, Fact, Pending, RespSession, Shape, NOT_AN_INTEGER};
use super::Item;
use crate::protocol::resp;
use crate::protocol::{batch, int, kv, op};
use bytes::{Bytes, BytesMut};
use std::iter::once;

/// A command or subcommand the front knows: its full name as Redis spells it in
/// errors and `CLIENT LIST` (`client|list` for a subcommand), and its arity in
/// Redis's convention (`N`: exactly N arguments, the name included; `-N`: at
/// least N).
#[derive(Debug)]
pub(super) struct Spec {
    pub(super) name: &'static str,
    arity: i32,
}

const fn spec(name: &'static str, arity: i32) -> Spec {
    Spec { name, arity }
}

/// The commands the front knows (`COMMAND COUNT` counts them).
const COMMANDS: &[Spec] = &[
    spec("get", 2),
    spec("set", -3),
    spec("incr", 2),
    spec("decr", 2),
    spec("incrby", 3),
    spec("decrby", 3),
    spec("mget", -2),
    spec("mset", -3),
    spec("scan", -2),
    spec("keys", 2),
    spec("del", -2),
    spec("exists", -2),
    spec("ping", -1),
    spec("echo", 2),
    spec("dbsize", 1),
    spec("info", -1),
    spec("select", 2),
    spec("quit", -1),
    spec("hello", -1),
    spec("auth", -2),
    spec("client", -2),
    spec("config", -2),
    spec("command", -1),
];

/// The subcommands of `client`, `config` and `command`.
const SUBCOMMANDS: &[Spec] = &[
    spec("client|getname", 2),
    spec("client|id", 2),
    spec("client|info", 2),
    spec("client|list", -2),
    spec("client|no-evict", 3),
    spec("client|no-touch", 3),
    spec("client|setinfo", 4),
    spec("client|setname", 3),
    spec("config|get", -3),
    spec("config|set", -4),
    spec("config|resetstat", 2),
    spec("config|rewrite", 2),
    spec("command|count", 2),
    spec("command|docs", -2),
    spec("command|info", -2),
];

/// The configuration parameters `CONFIG GET` reports (what redis-benchmark asks).
const CONFIG: &[(&str, &str)] = &[
    ("save", ""),
    ("appendonly", "no"),
    ("databases", "1"),
    ("maxmemory", "0"),
];

/// `name` (any case) in `table`, whose names are lower case.
/// Compares lengths before bytes and never calls `memcmp` for the (empty)
/// prefix of the top-level table: this runs once per command, and a plain
/// `strip_prefix` per entry cost about a tenth of a SET's CPU at pipeline 16.
fn find<'a>(table: &'a [Spec], name: &[u8], prefix: &str) -> Option<&'a Spec> {
    let len = prefix.len() + name.len();
    table.iter().find(|s| {
        let full = s.name.as_bytes();
        full.len() == len
            && full[prefix.len()..].eq_ignore_ascii_case(name)
            && (prefix.is_empty() || full.starts_with(prefix.as_bytes()))
    })
}

/// What `%s` prints of an argument in Redis: up to its first NUL byte.
fn c_str(arg: &[u8]) -> &[u8] {
    &arg[..memchr::memchr(0, arg).unwrap_or(arg.len())]
}

/// At most `max` bytes of `arg` as `%.*s` prints it.
fn clip(arg: &[u8], max: usize) -> &[u8] {
    let s = c_str(arg);
    &s[..s.len().min(max)]
}

/// An error reply built from raw bytes (CR and LF become spaces, as in Redis).
fn err_bytes(text: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    resp::error(&mut out, text);
    out.freeze()
}

pub(super) fn wrong_arity(name: &str) -> Bytes {
    err_reply(&format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// Redis's reply to a command it does not have: the name, then the arguments
/// quoted, 128 bytes of them at most.
fn unknown_command(args: &[Bytes]) -> Bytes {
    let mut quoted = Vec::new();
    for a in &args[1..] {
        if quoted.len() >= 128 {
            break;
        }
        let room = 128 - quoted.len();
        quoted.push(b'\'');
        quoted.extend_from_slice(clip(a, room));
        quoted.extend_from_slice(b"' ");
    }
    let mut t = b"ERR unknown command '".to_vec();
    t.extend_from_slice(clip(&args[0], 128));
    t.extend_from_slice(b"', with args beginning with: ");
    t.extend_from_slice(&quoted);
    err_bytes(&t)
}

/// Redis's reply to a subcommand its container does not have.
fn unknown_subcommand(args: &[Bytes]) -> Bytes {
    let mut t = b"ERR unknown subcommand '".to_vec();
    t.extend_from_slice(clip(&args[1], 128));
    t.extend_from_slice(b"'. Try ");
    t.extend_from_slice(&c_str(&args[0]).to_ascii_uppercase());
    t.extend_from_slice(b" HELP.");
    err_bytes(&t)
}

fn arity_ok(spec: &Spec, n: usize) -> bool {
    let want = spec.arity.unsigned_abs() as usize;
    if spec.arity > 0 {
        n == want
    } else {
        n >= want
    }
}

/// `*` and `?` globbing, as CONFIG GET patterns use.
pub(super) fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((&c, rest)) => match text.split_first() {
            Some((&t, tail)) if c == b'?' || c.eq_ignore_ascii_case(&t) => glob(rest, tail),
            _ => false,
        },
    }
}

/// The command (or subcommand) `args` names: `Err` with Redis's reply when it is
/// unknown or has the wrong number of arguments. Also records it as the
/// connection's last command (`None`, shown as `NULL`, when unknown), as Redis does
/// before it checks the arity.
fn lookup(args: &[Bytes], last: &mut Option<&'static str>) -> Result<&'static Spec, Bytes> {
    *last = None;
    let top = find(COMMANDS, &args[0], "").ok_or_else(|| unknown_command(args))?;
    let spec = match top.name {
        "client" | "config" | "command" if args.len() >= 2 => {
            let prefix = match top.name {
                "client" => "client|",
                "config" => "config|",
                _ => "command|",
            };
            find(SUBCOMMANDS, &args[1], prefix).ok_or_else(|| unknown_subcommand(args))?
        }
        _ => top,
    };
    *last = Some(spec.name);
    if arity_ok(spec, args.len()) {
        Ok(spec)
    } else {
        Err(wrong_arity(spec.name))
    }
}

impl RespSession {
    /// Serves one command: native requests go to `items`; a local answer waits in
    /// the FIFO behind the commands before it.
    pub(super) fn command(&mut self, args: &[Bytes], items: &mut Vec<Item>) {
        let result = lookup(args, &mut self.client.last_cmd).and_then(|spec| {
            // As Redis: existence and arity first, then authentication.
            if !self.client.authed && !matches!(spec.name, "auth" | "hello" | "quit") {
                return Err(err_reply(super::client::NOAUTH));
            }
            self.dispatch(spec.name, args, items)
        });
        if let Err(reply) = result {
            self.local(reply);
        }
    }

    fn dispatch(
        &mut self,
        name: &'static str,
        args: &[Bytes],
        items: &mut Vec<Item>,
    ) -> Result<(), Bytes> {
        match name {
            "get" => self.native(Shape::Bulk, once((op::GET, args[1].clone())), items),
            "set" => self.set(args, items)?,
            "del" | "exists" => {
                let o = if name == "del" {
                    op::DELETE
                } else {
                    op::EXISTS
                };
                let frames = args[1..].iter().map(|k| (o, k.clone()));
                self.native(Shape::Count, frames, items)
            }
            "incr" | "decr" => {
                let delta = if name == "incr" { 1 } else { -1 };
                self.native(Shape::Int, once(incr(&args[1], delta)), items)
            }
            "incrby" | "decrby" => {
                let by = int::parse_canonical(&args[2]).ok_or_else(|| err_reply(NOT_AN_INTEGER))?;
                let delta = if name == "incrby" {
                    by
                } else {
                    by.checked_neg()
                        .ok_or_else(|| err_reply("ERR decrement would overflow"))?
                };
                self.native(Shape::Int, once(incr(&args[1], delta)), items)
            }
            "mget" => {
                let frames = args[1..].iter().map(|k| batch::key_request(k, None));
                self.native(Shape::Array, frames, items)
            }
            "mset" if args.len().is_multiple_of(2) => return Err(wrong_arity(name)),
            "mset" => {
                let frames = args[1..]
                    .chunks(2)
                    .map(|kv| batch::key_request(&kv[0], Some(&kv[1])));
                self.native(Shape::Writes, frames, items)
            }
            "scan" => {
                let (l, ask) = super::listing::scan(args)?;
                let shape = Shape::List(Box::new(l));
                self.native(shape, once((op::SCAN, ask.payload())), items)
            }
            "keys" => {
                let (l, asks) = super::listing::keys(&args[1], &self.ring);
                let frames = asks.into_iter().map(|a| (op::SCAN, a.payload()));
                self.native(Shape::List(Box::new(l)), frames, items)
            }
            "ping" if args.len() > 2 => return Err(wrong_arity(name)),
            "ping" => {
                let payload = args.get(1).cloned().unwrap_or_default();
                let shape = Shape::Pong {
                    echo: args.len() == 2,
                };
                self.native(shape, once((op::PING, payload)), items)
            }
            "echo" => {
                let mut out = BytesMut::new();
                resp::bulk(&mut out, &args[1]);
                self.local(out.freeze())
            }
            "dbsize" | "info" => {
                let fact = if name == "info" {
                    Fact::Info
                } else {
                    Fact::DbSize
                };
                self.wait_for(fact, items)
            }
            "select" => self.local(select(&args[1])?),
            "quit" => {
                self.push(Pending::new(Shape::Last(Bytes::from_static(b"+OK\r\n")), 0));
                self.stopped = true;
            }
            "hello" => {
                let reply = self.hello(args)?;
                self.local(reply)
            }
            "auth" => {
                let reply = self.client.auth(args)?;
                self.local(reply)
            }
            "client|list" => {
                let filter = super::client::list_filter(args)?;
                self.wait_for(Fact::Clients(filter), items)
            }
            _ if name.starts_with("client|") => {
                let reply = self.client_command(name, args)?;
                self.local(reply)
            }
            _ if name.starts_with("config") => self.local(config(name, args)?),
            _ => self.local(command_command(name, args)),
        }
        Ok(())
    }

    /// A command answered from the node's facts: the node is asked for them.
    fn wait_for(&mut self, fact: Fact, items: &mut Vec<Item>) {
        self.push(Pending::new(Shape::Facts(fact), 0));
        items.push(Item::Facts);
    }

    /// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL], checked as
    /// Redis checks it; then GET and the expiries, which gtstore lacks, are refused.
    fn set(&mut self, args: &[Bytes], items: &mut Vec<Item>) -> Result<(), Bytes> {
        let mut o = op::PUT;
        let mut get = false;
        let mut keepttl = false;
        let mut expire: Option<(&'static str, &Bytes)> = None;
        let mut i = 3;
        while i < args.len() {
            let opt = &args[i];
            let is = |w: &[u8]| opt.eq_ignore_ascii_case(w);
            if is(b"NX") && o != op::UPDATE {
                o = op::CREATE;
            } else if is(b"XX") && o != op::CREATE {
                o = op::UPDATE;
            } else if is(b"GET") {
                get = true;
            } else if is(b"KEEPTTL") && expire.is_none() {
                keepttl = true;
            } else if let Some(kind) = ["EX", "PX", "EXAT", "PXAT"]
                .into_iter()
                .find(|k| is(k.as_bytes()))
                .filter(|k| !keepttl && expire.is_none_or(|(e, _)| e == *k))
                .filter(|_| i + 1 < args.len())
            {
                i += 1;
                expire = Some((kind, &args[i]));
            } else {
                return Err(err_reply("ERR syntax error"));
            }
            i += 1;
        }
        if let Some((kind, value)) = expire {
            let n = int::parse_canonical(value).ok_or_else(|| err_reply(NOT_AN_INTEGER))?;
            let seconds = kind == "EX" || kind == "EXAT";
            let ms = if seconds {
                n.checked_mul(1000)
            } else {
                Some(n)
            };
            // A relative expiry is added to the wall clock, as Redis does, and must
            // not overflow there either.
            let relative = kind == "EX" || kind == "PX";
            let at = ms.and_then(|ms| {
                if relative {
                    ms.checked_add(unix_ms())
                } else {
                    Some(ms)
                }
            });
            if n <= 0 || at.is_none() {
                return Err(err_reply("ERR invalid expire time in 'set' command"));
            }
            return Err(unsupported_set_option(kind));
        }
        if get {
            return Err(unsupported_set_option("GET"));
        }
        // KEEPTTL: there is no TTL to keep, so it is a plain SET.
        self.native(Shape::Ok, once((o, kv::encode(&args[1], &args[2]))), items);
        Ok(())
    }
}

/// Milliseconds since the Unix epoch, by the wall clock.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn unsupported_set_option(kind: &str) -> Bytes {
    err_reply(&format!(
        "ERR SET option '{kind}' is not supported by gtstore"
    ))
}

/// SELECT index: only database 0 exists.
fn select(index: &[u8]) -> Result<Bytes, Bytes> {
    match int::parse_canonical(index) {
        None => Err(err_reply(NOT_AN_INTEGER)),
        Some(0) => Ok(Bytes::from_static(b"+OK\r\n")),
        Some(n) if i32::try_from(n).is_err() => Err(err_reply(
            "ERR value is out of range, value must between -2147483648 and 2147483647",
        )),
        Some(_) => Err(err_reply("ERR DB index is out of range")),
    }
}

/// COMMAND, COMMAND COUNT, DOCS and INFO. The details Redis gives are not kept:
/// clients fall back to their own.
fn command_command(name: &str, args: &[Bytes]) -> Bytes {
    let mut out = BytesMut::new();
    match name {
        "command|count" => resp::integer(&mut out, COMMANDS.len() as i64),
        "command|info" => {
            resp::array(&mut out, args.len() - 2);
            for _ in 2..args.len() {
                resp::nil(&mut out);
            }
        }
        _ => resp::array(&mut out, 0),
    }
    out.freeze()
}

/// CONFIG GET pattern...: the parameters whose names match; the other
/// subcommands are refused.
fn config(name: &str, args: &[Bytes]) -> Result<Bytes, Bytes> {
    if name != "config|get" {
        let sub = String::from_utf8_lossy(clip(&args[1], 32)).to_ascii_uppercase();
        return Err(err_reply(&format!(
            "ERR CONFIG {sub} is not supported by gtstore"
        )));
    }
    let found: Vec<&(&str, &str)> = CONFIG
        .iter()
        .filter(|(k, _)| args[2..].iter().any(|p| glob(p, k.as_bytes())))
        .collect();
    let mut out = BytesMut::new();
    resp::array(&mut out, found.len() * 2);
    for (k, v) in found {
        resp::bulk(&mut out, k.as_bytes());
        resp::bulk(&mut out, v.as_bytes());
    }
    Ok(out.freeze())
}

/// An INCR request: `KLEN SP KEY [SP DELTA]`.
fn incr(key: &[u8], delta: i64) -> (u8, Bytes) {
    let mut p = kv::encode(key, b"").to_vec();
    if delta != 1 {
        p.extend_from_slice(format!(" {delta}").as_bytes());
    }
    (op::INCR, Bytes::from(p))
}
