//! A RESP connection's own state, as `HELLO`, `AUTH` and `CLIENT` read and set it,
//! and its `CLIENT LIST` line.
//!
//! The line has Redis 7.2's fields in Redis's order, so tools that split it on
//! spaces and `=` find what they look for. What the front knows is real: `id`,
//! `name`, `age` and `idle` (seconds since the connection was accepted and since it
//! last sent bytes), `qbuf` (bytes received and not yet a whole command), `cmd`
//! (the last command, `client|list` for a subcommand, `NULL` after an unknown one),
//! `lib-name` and `lib-ver`. The rest is what a plain RESP2 connection of one
//! database shows (`flags=N db=0 sub=0 ... user=default redir=-1 resp=2`), except
//! what the node cannot see: the reactor does not tell a service its peers'
//! addresses or sockets, so `addr` and `laddr` are `?:0` and `fd` is `-1` (Redis's
//! own marks for "unknown"), and the per-connection memory fields are 0.

use super::commands::wrong_arity;
use super::session::{err_reply, RespSession};
use super::REDIS_VERSION;
use crate::protocol::{int, resp};
use crate::reactor::Millis;
use bytes::{Bytes, BytesMut};
use std::io::Write;

/// The error Redis gives for a client name with a byte outside `!`..=`~`.
const BAD_NAME: &str = "ERR Client names cannot contain spaces, newlines or special characters.";
/// The error Redis gives for credentials it does not accept.
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// What `CLIENT` and `HELLO` report about a connection.
#[derive(Debug, Default)]
pub(crate) struct ClientState {
    /// The id `CLIENT ID` reports.
    pub(super) id: u64,
    /// Set by `CLIENT SETNAME` or `HELLO ... SETNAME`.
    name: Option<Bytes>,
    /// Set by `CLIENT SETINFO LIB-NAME`.
    lib_name: Option<Bytes>,
    /// Set by `CLIENT SETINFO LIB-VER`.
    lib_ver: Option<Bytes>,
    /// When the connection was accepted.
    pub(super) created: Millis,
    /// When it last sent bytes.
    pub(super) last: Millis,
    /// The full name of its last command; `None` after an unknown one.
    pub(super) last_cmd: Option<&'static str>,
    /// The password the `default` user needs (the node's client password), if any.
    password: Option<Bytes>,
    /// Whether the connection may run commands: no password is required, or AUTH
    /// (or HELLO ... AUTH) gave it.
    pub(super) authed: bool,
}

/// What Redis answers a command other than AUTH, HELLO and QUIT before the
/// connection has authenticated.
pub(super) const NOAUTH: &str = "NOAUTH Authentication required.";
/// What Redis answers HELLO without AUTH before the connection has authenticated.
const HELLO_NOAUTH: &str = "NOAUTH HELLO must be called with the client already authenticated, \
     otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the \
     client and select the RESP protocol version at the same time";

/// Whether Redis would show `v` in a CLIENT LIST line: printable ASCII, no space.
fn printable(v: &[u8]) -> bool {
    v.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// An empty value unsets.
fn non_empty(v: &Bytes) -> Option<Bytes> {
    (!v.is_empty()).then(|| v.clone())
}

impl ClientState {
    pub(super) fn new(id: u64) -> ClientState {
        ClientState {
            id,
            authed: true,
            ..ClientState::default()
        }
    }

    /// The `default` user needs `password`: the connection must AUTH first.
    pub(super) fn require(&mut self, password: Bytes) {
        self.password = Some(password);
        self.authed = false;
    }

    /// Checks the `default` user's password (any password when none is required).
    fn check(&mut self, user: &[u8], given: &[u8]) -> Result<(), Bytes> {
        check_user(user)?;
        match &self.password {
            Some(p) if !constant_time_eq(p, given) => Err(err_reply(WRONGPASS)),
            _ => {
                self.authed = true;
                Ok(())
            }
        }
    }

    /// AUTH [user] password, as Redis answers it: with no password set the
    /// `default` user takes any password (and a bare password is an error), with
    /// `requirepass` set the password must match; no other user exists.
    pub(super) fn auth(&mut self, args: &[Bytes]) -> Result<Bytes, Bytes> {
        let ok = || Bytes::from_static(b"+OK\r\n");
        match args.len() {
            2 if self.password.is_none() => Err(err_reply(
                "ERR AUTH <password> called without any password configured for the default \
                 user. Are you sure your configuration is correct?",
            )),
            2 => self.check(b"default", &args[1]).map(|()| ok()),
            3 => self.check(&args[1], &args[2]).map(|()| ok()),
            _ => Err(err_reply("ERR syntax error")),
        }
    }

    /// Appends the connection's CLIENT LIST line (LF-terminated) as of `now`;
    /// `qbuf` is the bytes received and not yet parsed.
    pub(super) fn info_line(&self, now: Millis, qbuf: usize, out: &mut Vec<u8>) {
        let secs = |since: Millis| now.saturating_sub(since) / 1000;
        let text = |v: &Option<Bytes>| v.clone().unwrap_or_default();
        let _ = write!(out, "id={} addr=?:0 laddr=?:0 fd=-1 name=", self.id);
        out.extend_from_slice(&text(&self.name));
        let _ = write!(
            out,
            " age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf={qbuf} \
             qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 \
             events=r cmd={} user=default redir=-1 resp=2 lib-name=",
            secs(self.created),
            secs(self.last),
            self.last_cmd.unwrap_or("NULL"),
        );
        out.extend_from_slice(&text(&self.lib_name));
        out.extend_from_slice(b" lib-ver=");
        out.extend_from_slice(&text(&self.lib_ver));
        out.push(b'\n');
    }
}

/// Which connections CLIENT LIST shows.
#[derive(Debug)]
pub(crate) enum ListFilter {
    /// All of them (no filter, or `TYPE normal`).
    All,
    /// None (`TYPE` master, replica or pubsub: a RESP connection here is none).
    None,
    /// Those whose id is listed (`ID id...`).
    Ids(Vec<u64>),
}

impl ListFilter {
    pub(super) fn keeps(&self, id: u64) -> bool {
        match self {
            ListFilter::All => true,
            ListFilter::None => false,
            ListFilter::Ids(ids) => ids.contains(&id),
        }
    }
}

/// CLIENT LIST [TYPE type | ID id...]'s filter, or Redis's error for bad options.
pub(super) fn list_filter(args: &[Bytes]) -> Result<ListFilter, Bytes> {
    let opt = |w: &[u8]| args.get(2).is_some_and(|a| a.eq_ignore_ascii_case(w));
    if args.len() == 4 && opt(b"TYPE") {
        let t = args[3].to_ascii_lowercase();
        match &t[..] {
            b"normal" => Ok(ListFilter::All),
            b"master" | b"replica" | b"slave" | b"pubsub" => Ok(ListFilter::None),
            _ => Err(err_reply(&format!(
                "ERR Unknown client type '{}'",
                String::from_utf8_lossy(&args[3])
            ))),
        }
    } else if args.len() > 3 && opt(b"ID") {
        let ids = args[3..]
            .iter()
            .map(|a| int::parse_canonical(a).map(|n| n as u64))
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| err_reply("ERR Invalid client ID"))?;
        Ok(ListFilter::Ids(ids))
    } else if args.len() == 2 {
        Ok(ListFilter::All)
    } else {
        Err(err_reply("ERR syntax error"))
    }
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_user(user: &[u8]) -> Result<(), Bytes> {
    if user == b"default" {
        Ok(())
    } else {
        Err(err_reply(WRONGPASS))
    }
}

impl RespSession {
    /// HELLO [protover [AUTH user pass] [SETNAME name]], as Redis answers it,
    /// for a server that speaks RESP2 only: version 2 (or none) gets the server's
    /// facts as a flat array of pairs, any other version `-NOPROTO`.
    pub(super) fn hello(&mut self, args: &[Bytes]) -> Result<Bytes, Bytes> {
        let mut next = 1;
        if let Some(v) = args.get(1) {
            let version = int::parse_canonical(v).ok_or_else(|| {
                err_reply("ERR Protocol version is not an integer or out of range")
            })?;
            if version != 2 {
                return Err(err_reply("NOPROTO unsupported protocol version"));
            }
            next = 2;
        }
        let (mut name, mut auth) = (None, None);
        while next < args.len() {
            let more = args.len() - 1 - next;
            let opt = &args[next];
            if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
                auth = Some((&args[next + 1], &args[next + 2]));
                next += 3;
            } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
                let n = &args[next + 1];
                if !printable(n) {
                    return Err(err_reply(BAD_NAME));
                }
                name = Some(non_empty(n));
                next += 2;
            } else {
                let mut t = b"ERR Syntax error in HELLO option '".to_vec();
                t.extend_from_slice(opt);
                t.push(b'\'');
                let mut out = BytesMut::new();
                resp::error(&mut out, &t);
                return Err(out.freeze());
            }
        }
        if let Some((user, password)) = auth {
            self.client.check(user, password)?;
        }
        if !self.client.authed {
            return Err(err_reply(HELLO_NOAUTH));
        }
        if let Some(name) = name {
            self.client.name = name;
        }
        let mut out = BytesMut::new();
        resp::array(&mut out, 14);
        for (k, v) in [
            ("server", "redis"),
            ("version", REDIS_VERSION),
            ("proto", ""),
            ("id", ""),
            ("mode", "standalone"),
            ("role", "master"),
            ("modules", ""),
        ] {
            resp::bulk(&mut out, k.as_bytes());
            match k {
                "proto" => resp::integer(&mut out, 2),
                "id" => resp::integer(&mut out, self.client.id as i64),
                "modules" => resp::array(&mut out, 0),
                _ => resp::bulk(&mut out, v.as_bytes()),
            }
        }
        Ok(out.freeze())
    }

    /// The CLIENT subcommands answered by the session (`name` is the full name,
    /// its arity already checked); CLIENT LIST goes through the front.
    pub(super) fn client_command(&mut self, name: &str, args: &[Bytes]) -> Result<Bytes, Bytes> {
        let mut out = BytesMut::new();
        match name {
            "client|setname" => {
                if !printable(&args[2]) {
                    return Err(err_reply(BAD_NAME));
                }
                self.client.name = non_empty(&args[2]);
                resp::simple(&mut out, b"OK");
            }
            "client|getname" => match &self.client.name {
                Some(n) => resp::bulk(&mut out, n),
                None => resp::nil(&mut out),
            },
            "client|id" => resp::integer(&mut out, self.client.id as i64),
            "client|info" => {
                let mut line = Vec::new();
                self.info_line(self.client.last, &mut line);
                resp::bulk(&mut out, &line);
            }
            "client|setinfo" => {
                let attr = &args[2];
                let slot = if attr.eq_ignore_ascii_case(b"lib-name") {
                    &mut self.client.lib_name
                } else if attr.eq_ignore_ascii_case(b"lib-ver") {
                    &mut self.client.lib_ver
                } else {
                    return Err(err_reply(&format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(attr)
                    )));
                };
                if !printable(&args[3]) {
                    return Err(err_reply(&format!(
                        "ERR {} cannot contain spaces, newlines or special characters.",
                        String::from_utf8_lossy(attr)
                    )));
                }
                *slot = non_empty(&args[3]);
                resp::simple(&mut out, b"OK");
            }
            "client|no-evict" | "client|no-touch" => {
                let on_off = &args[2];
                if !(on_off.eq_ignore_ascii_case(b"on") || on_off.eq_ignore_ascii_case(b"off")) {
                    return Err(err_reply("ERR syntax error"));
                }
                resp::simple(&mut out, b"OK");
            }
            _ => return Err(wrong_arity(name)),
        }
        Ok(out.freeze())
    }
}
