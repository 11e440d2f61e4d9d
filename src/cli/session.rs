//! Requests, replies and the connection a command runs on.
//!
//! A [`Session`] holds at most one [`Client`]. It connects on the first key-value
//! request, keeps the connection for the next ones, and forgets it when it fails, so
//! the next request connects again (the contact node may have died; the manager
//! then names another). A read-only request (GET, EXISTS, PING) that fails on a
//! connection that was already open is retried once on a fresh one: the old one
//! was most likely closed while idle. Writes are never retried, since the first try
//! may have been applied.
//!
//! Manager requests (RING, DROP) use a short-lived connection each time; STATUS asks
//! the manager and every node (see [`super::survey`]).
//!
//! Reaching the data without the manager: `--node` names one node or a
//! comma-separated list (the first that accepts a connection is used, as an
//! anonymous contact node that forwards each request to the key's coordinator).
//! Without `--node`, the client says HELLO to the manager and routes by the ring it
//! reads, remembering the ring's nodes (see [`super::cache`]); when the manager
//! cannot be reached, is recovering its membership, or names a node that cannot be
//! reached, the client tries the nodes it remembers for that manager, and only if
//! none accepts does it report the manager's error (with what it tried).

use super::{cache, describe_io, survey, EXIT_ERROR, EXIT_MISSING, EXIT_OK, EXIT_UNKNOWN};
use crate::client::{parse_welcome, Client, ClientError, Connection};
use crate::protocol::{self, op, ErrorCode};
use crate::ring::NodeState;
use bytes::Bytes;
use std::fmt;
use std::io;
use std::path::Path;
use std::time::Duration;

/// Where a session's requests go.
#[derive(Clone, Debug)]
pub struct Target {
    /// The manager's `HOST:PORT` (STATUS, RING, and HELLO unless `node` is set).
    pub manager: String,
    /// Talk to this storage node directly, anonymously, instead of asking the
    /// manager for a contact node: an address, or a comma-separated list of them
    /// tried in order. `status` then shows the cluster as the first that answers
    /// sees it.
    pub node: Option<String>,
    /// Time allowed for connecting and for each reply.
    pub timeout: Duration,
    /// The client password to prove to every storage node, when they need one.
    pub password: Option<String>,
}

/// One command, as every front end (one-shot, shell) understands it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Store a value.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// Read a value.
    Get { key: Vec<u8> },
    /// Remove a key.
    Del { key: Vec<u8> },
    /// Store only if absent.
    Create { key: Vec<u8>, value: Vec<u8> },
    /// Store only if present.
    Update { key: Vec<u8>, value: Vec<u8> },
    /// Add a signed delta to a counter.
    Incr { key: Vec<u8>, delta: i64 },
    /// Whether a key exists.
    Exists { key: Vec<u8> },
    /// The cluster's status as JSON: the manager's, with every node's own
    /// figures merged in (see [`super::survey`]).
    Status,
    /// The manager's ring text.
    Ring,
    /// Ask the manager to have a node hand its data over and leave, proving the
    /// admin secret (from this file, else the environment: see
    /// [`crate::client::secret::admin_secret`]).
    Drop {
        /// The node's id or `HOST:PORT`.
        node: String,
        /// `--admin-secret-file`.
        admin_secret_file: Option<std::path::PathBuf>,
    },
    /// Liveness check of the contact node, echoing `payload`.
    Ping { payload: Vec<u8> },
    /// Every key of the cluster that starts with `prefix` (the native SCAN op,
    /// range by range; the ranges from the manager's ring).
    Scan { prefix: Vec<u8> },
    /// Read many keys in one MGET.
    Mget { keys: Vec<Vec<u8>> },
    /// Write many pairs in one MSET.
    Mset { pairs: Vec<(Vec<u8>, Vec<u8>)> },
}

impl Request {
    /// Whether the request may change a key (its outcome can be unknown).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Put { .. }
                | Request::Del { .. }
                | Request::Create { .. }
                | Request::Update { .. }
                | Request::Incr { .. }
                | Request::Mset { .. }
        )
    }

    /// Whether sending the request twice is harmless.
    fn is_read_only(&self) -> bool {
        matches!(
            self,
            Request::Get { .. }
                | Request::Exists { .. }
                | Request::Ping { .. }
                | Request::Scan { .. }
                | Request::Mget { .. }
        )
    }
}

/// What a request produced. Not-found and conflict are answers, not errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Success with nothing to show (put, del, create, update, exists).
    Done,
    /// The key does not exist.
    NotFound,
    /// CREATE found the key already there.
    Conflict,
    /// A stored value (get).
    Value(Bytes),
    /// The new count (incr).
    Count(i64),
    /// The echoed payload (ping).
    Pong(Bytes),
    /// Keys, in the order a scan found them.
    Keys(Vec<Bytes>),
    /// The keys of an mget or mset, each with its outcome.
    Batch(Vec<Bytes>, Vec<super::batch::Outcome>),
    /// Text to show: the status JSON (merged, see [`super::survey`]), or the ring
    /// text as the manager sent it.
    Text(Bytes),
}

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// Could not connect to a process.
    Unreachable {
        /// What it is: `manager`, `node`.
        what: String,
        /// Its address.
        addr: String,
        /// Why.
        err: io::Error,
    },
    /// An open connection failed (closed, reset, timed out).
    Lost {
        /// The peer's address.
        addr: String,
        /// Why.
        err: io::Error,
    },
    /// The server answered `ERR`.
    Server(protocol::Error),
    /// The server answered something unexpected.
    Protocol(String),
    /// Anything else: bad input, unreadable stdin, unusable reply.
    Other(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Unreachable { what, addr, err } => {
                write!(f, "cannot reach {what} {addr}: {}", describe_io(err))
            }
            CliError::Lost { addr, err } => {
                write!(f, "connection to {addr} failed: {}", describe_io(err))
            }
            CliError::Server(e) if e.code == ErrorCode::Unknown => write!(
                f,
                "outcome unknown (UNKNOWN): {}; read the key to see whether it took effect",
                e.message
            ),
            CliError::Server(e) if e.code == ErrorCode::Auth => write!(
                f,
                "server error: {e} (the nodes need the client password: give it with \
                 --password-file PATH or $GTSTORE_PASSWORD)"
            ),
            CliError::Server(e) => write!(f, "server error: {e}"),
            CliError::Protocol(m) => write!(f, "protocol error: {m}"),
            CliError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CliError {}

impl CliError {
    /// Maps a client-library error on an open connection to `addr`.
    fn from_client(e: ClientError, addr: &str) -> CliError {
        match e {
            ClientError::Io(err) => CliError::Lost {
                addr: addr.to_string(),
                err,
            },
            ClientError::Server(e) => CliError::Server(e),
            ClientError::Protocol(m) => CliError::Protocol(m),
        }
    }

    /// Maps a client-library error met while connecting to `what` at `addr`.
    fn connecting(e: ClientError, what: &str, addr: &str) -> CliError {
        match e {
            ClientError::Io(err) => CliError::Unreachable {
                what: what.to_string(),
                addr: addr.to_string(),
                err,
            },
            other => CliError::from_client(other, addr),
        }
    }
}

/// The exit status for a command's outcome: 0 done, 1 not found or conflict,
/// 3 a write whose outcome is unknown (`ERR UNKNOWN`), 2 any other error.
pub fn exit_code(result: &Result<Reply, CliError>) -> u8 {
    match result {
        Ok(Reply::NotFound | Reply::Conflict) => EXIT_MISSING,
        Ok(Reply::Batch(_, outcomes)) => super::batch::exit_code(outcomes),
        Ok(_) => EXIT_OK,
        Err(CliError::Server(e)) if e.code == ErrorCode::Unknown => EXIT_UNKNOWN,
        Err(_) => EXIT_ERROR,
    }
}

/// A lazily connected, self-healing connection to the cluster.
pub struct Session {
    target: Target,
    client: Option<Client>,
}

impl Session {
    /// A session that connects on its first key-value request.
    pub fn new(target: Target) -> Session {
        Session {
            target,
            client: None,
        }
    }

    /// Where requests go.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Forgets the current connection; the next request connects again.
    pub fn disconnect(&mut self) {
        self.client = None;
    }

    /// Runs one request.
    pub fn execute(&mut self, req: &Request) -> Result<Reply, CliError> {
        let (op, want, payload) = match req {
            Request::Status => {
                let status = survey::survey(&self.target)?;
                return Ok(Reply::Text(Bytes::from(status.to_string())));
            }
            Request::Ring => (op::RING, op::RING_REPLY, &[][..]),
            Request::Drop {
                node,
                admin_secret_file,
            } => return self.drop_node(node, admin_secret_file.as_deref()),
            _ => return self.execute_kv(req),
        };
        let manager = &self.target.manager;
        let mut conn = Connection::connect(manager, self.target.timeout)
            .map_err(|e| CliError::connecting(e, "manager", manager))?;
        let f = conn
            .call(op, 0, &[payload])
            .map_err(|e| CliError::from_client(e, manager))?;
        if f.op != want {
            return Err(CliError::Protocol(format!(
                "unexpected reply {} to {}",
                op::name(f.op),
                op::name(op)
            )));
        }
        Ok(Reply::Text(f.payload))
    }

    /// DROP at the manager, as admin.
    fn drop_node(&mut self, node: &str, secret_file: Option<&Path>) -> Result<Reply, CliError> {
        let secret = crate::client::secret::admin_secret(secret_file).map_err(CliError::Other)?;
        let manager = &self.target.manager;
        let mut conn = Connection::connect(manager, self.target.timeout)
            .map_err(|e| CliError::connecting(e, "manager", manager))?;
        let dropped = conn
            .auth_admin(secret.as_bytes())
            .and_then(|()| conn.call(op::DROP, 0, &[node.as_bytes()]))
            .map_err(|e| CliError::from_client(e, manager))?;
        Ok(if dropped.op == op::NOT_FOUND {
            Reply::NotFound
        } else {
            Reply::Done
        })
    }

    fn execute_kv(&mut self, req: &Request) -> Result<Reply, CliError> {
        let reused = self.client.is_some();
        match self.try_kv(req) {
            Err(CliError::Lost { .. }) if reused && req.is_read_only() => {
                log::debug!("connection lost while idle; retrying on a fresh one");
                self.try_kv(req)
            }
            other => other,
        }
    }

    fn try_kv(&mut self, req: &Request) -> Result<Reply, CliError> {
        if self.client.is_none() {
            self.client = Some(connect(&self.target)?);
        }
        let client = self.client.as_mut().expect("connected just above");
        let result = match req {
            Request::Scan { prefix } => {
                let mut keys = Vec::new();
                client
                    .scan_keys(prefix, |k| {
                        keys.push(Bytes::copy_from_slice(k));
                        Ok(())
                    })
                    .map(|()| Reply::Keys(keys))
            }
            _ => run_kv(client, req),
        };
        match result {
            Ok(reply) => Ok(reply),
            Err(e) => {
                let err = CliError::from_client(e, client.node_addr());
                let keep = matches!(&err, CliError::Server(e) if !e.code.closes_connection());
                if !keep {
                    // The stream may be closed or out of step: start afresh next time.
                    self.client = None;
                }
                Err(err)
            }
        }
    }
}

/// Connects as the target says: straight to a node, or through the manager as a
/// partition-aware client (HELLO, then RING; requests go to each key's node).
/// When the manager route fails, the nodes remembered for it are tried (see the
/// module docs).
pub fn connect(target: &Target) -> Result<Client, CliError> {
    let mut c = connect_anonymous(target)?;
    if let Some(p) = &target.password {
        c.authenticate(p)
            .map_err(|e| CliError::from_client(e, c.node_addr()))?;
    }
    Ok(c)
}

/// [`connect`] before the client password is proved.
fn connect_anonymous(target: &Target) -> Result<Client, CliError> {
    let timeout = target.timeout;
    let given = survey::given_nodes(target);
    if !given.is_empty() {
        return first_node(&given, timeout);
    }
    let manager = &target.manager;
    let err = match Client::connect_aware(manager, timeout) {
        Ok(c) => {
            if let Some(ring) = c.ring() {
                // Up nodes first: they are the ones to try when the manager is away.
                let mut nodes: Vec<_> = ring.nodes().iter().collect();
                nodes.sort_by_key(|n| n.state != NodeState::Up);
                let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
                cache::remember(manager, &addrs);
            }
            return Ok(c);
        }
        Err(ClientError::Io(err)) => diagnose(manager, timeout, err),
        Err(other) => CliError::from_client(other, manager),
    };
    let fall_back = match &err {
        CliError::Unreachable { .. } | CliError::Lost { .. } => true,
        CliError::Server(e) => e.code == ErrorCode::Unavailable,
        _ => false,
    };
    let remembered = cache::recall(manager);
    if !fall_back || remembered.is_empty() {
        return Err(err);
    }
    match first_node(&remembered, timeout) {
        Ok(c) => {
            log::info!("{err}; using the remembered node {}", c.node_addr());
            Ok(c)
        }
        Err(_) => Err(CliError::Other(format!(
            "{err} (and no remembered node accepted a connection: {})",
            remembered.join(", ")
        ))),
    }
}

/// A contact-node client on the first of `addrs` that accepts a connection.
fn first_node(addrs: &[String], timeout: Duration) -> Result<Client, CliError> {
    let mut last = None;
    for addr in addrs {
        match Client::connect_node(addr, timeout) {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(CliError::connecting(e, "node", addr)),
        }
    }
    Err(last.unwrap_or_else(|| CliError::Other("no storage node given".into())))
}

/// `Client::connect_aware` failed with an I/O error: find out whether the manager or the
/// contact node it named could not be reached. Runs only on the failure path.
fn diagnose(manager: &str, timeout: Duration, err: io::Error) -> CliError {
    let mut conn = match Connection::connect(manager, timeout) {
        Ok(c) => c,
        Err(_) => {
            return CliError::Unreachable {
                what: "manager".into(),
                addr: manager.to_string(),
                err,
            }
        }
    };
    match conn.call(op::HELLO, 0, &[b"gtstore-client"]) {
        Ok(f) if f.op == op::WELCOME => match parse_welcome(&f.payload) {
            Ok(w) => CliError::Unreachable {
                what: format!("node {} (named by the manager)", w.node_id),
                addr: w.addr,
                err,
            },
            Err(e) => CliError::from_client(e, manager),
        },
        Ok(f) => CliError::Protocol(format!("unexpected reply {} to HELLO", op::name(f.op))),
        Err(e) => CliError::from_client(e, manager),
    }
}

fn run_kv(c: &mut Client, req: &Request) -> Result<Reply, ClientError> {
    let found = |yes: bool| if yes { Reply::Done } else { Reply::NotFound };
    Ok(match req {
        Request::Put { key, value } => {
            c.put(key, value)?;
            Reply::Done
        }
        Request::Get { key } => match c.get(key)? {
            Some(v) => Reply::Value(v),
            None => Reply::NotFound,
        },
        Request::Del { key } => found(c.delete(key)?),
        Request::Create { key, value } => {
            if c.create(key, value)? {
                Reply::Done
            } else {
                Reply::Conflict
            }
        }
        Request::Update { key, value } => found(c.update(key, value)?),
        Request::Incr { key, delta } => Reply::Count(c.incr(key, *delta)?),
        Request::Exists { key } => found(c.exists(key)?),
        Request::Ping { payload } => Reply::Pong(c.ping(payload)?),
        Request::Mget { keys } => {
            let outcomes = super::batch::mget(c, keys)?;
            Reply::Batch(
                keys.iter().map(|k| Bytes::from(k.clone())).collect(),
                outcomes,
            )
        }
        Request::Mset { pairs } => {
            let outcomes = super::batch::mset(c, pairs)?;
            let keys = pairs.iter().map(|(k, _)| Bytes::from(k.clone()));
            Reply::Batch(keys.collect(), outcomes)
        }
        Request::Status | Request::Ring | Request::Drop { .. } | Request::Scan { .. } => {
            return Err(ClientError::Protocol("not a key-value request".into()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&Ok(Reply::Done)), 0);
        assert_eq!(exit_code(&Ok(Reply::Value(Bytes::from_static(b"v")))), 0);
        assert_eq!(exit_code(&Ok(Reply::Count(-3))), 0);
        assert_eq!(exit_code(&Ok(Reply::NotFound)), 1);
        assert_eq!(exit_code(&Ok(Reply::Conflict)), 1);
        let server = CliError::Server(protocol::Error::new(ErrorCode::NotInt, "nope"));
        assert_eq!(exit_code(&Err(server)), 2);
        assert_eq!(exit_code(&Err(CliError::Other("x".into()))), 2);
        let unknown =
            CliError::Server(protocol::Error::new(ErrorCode::Unknown, "node 2 timed out"));
        assert!(unknown
            .to_string()
            .starts_with("outcome unknown (UNKNOWN): node 2"));
        assert_eq!(exit_code(&Err(unknown)), 3);
    }

    #[test]
    fn error_messages() {
        let e = CliError::Server(protocol::Error::new(
            ErrorCode::NotInt,
            "value is not a decimal integer",
        ));
        assert_eq!(
            e.to_string(),
            "server error: NOTINT value is not a decimal integer"
        );
        let e = CliError::Unreachable {
            what: "manager".into(),
            addr: "127.0.0.1:7000".into(),
            err: io::Error::from_raw_os_error(111),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach manager 127.0.0.1:7000: connection refused"
        );
    }

    /// A fake manager that answers every request on every connection with the
    /// frame `reply(op)` gives; returns its address.
    fn fake_manager(reply: fn(u8) -> (u8, Vec<u8>)) -> String {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(8) {
                let Ok(stream) = stream else { return };
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut w = stream;
                let mut header = String::new();
                while r.read_line(&mut header).is_ok_and(|n| n > 0) {
                    let f: Vec<usize> = header
                        .split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect();
                    let mut payload = vec![0; f[3]];
                    r.read_exact(&mut payload).unwrap();
                    let (op, body) = reply(f[0] as u8);
                    let mut out = bytes::BytesMut::new();
                    protocol::frame::encode(&mut out, op, 0, 0, &body);
                    w.write_all(&out).unwrap();
                    header.clear();
                }
            }
        });
        addr
    }

    #[test]
    fn a_recovering_manager_says_so_through_the_client() {
        let manager = fake_manager(|request| match request {
            op::STATUS => (
                op::STATUS_REPLY,
                br#"{"epoch":0,"live_nodes":0,"nodes":[],"recovering_ms_left":2500}"#.to_vec(),
            ),
            _ => (
                op::ERR,
                b"UNAVAILABLE manager is recovering its membership (2500 ms left)".to_vec(),
            ),
        });
        let mut s = Session::new(Target {
            manager,
            node: None,
            timeout: Duration::from_secs(5),
            password: None,
        });
        let put = Request::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        };
        let e = s.execute(&put).unwrap_err();
        assert!(
            e.to_string()
                .contains("manager is recovering its membership (2500 ms left)"),
            "{e}"
        );
        let Ok(Reply::Text(t)) = s.execute(&Request::Status) else {
            panic!("status failed")
        };
        let v = super::super::status::parse_status(&t).unwrap();
        let table = super::super::status::format_status(&v);
        assert!(
            table.starts_with("manager recovering membership, 3 s left\n"),
            "{table}"
        );
    }

    #[test]
    fn unreachable_manager() {
        // Bind and drop a listener to find a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let target = Target {
            manager: format!("127.0.0.1:{port}"),
            node: None,
            timeout: Duration::from_secs(2),
            password: None,
        };
        let mut s = Session::new(target.clone());
        let e = s.execute(&Request::Get { key: b"k".to_vec() }).unwrap_err();
        assert!(
            e.to_string().starts_with("cannot reach manager 127.0.0.1:"),
            "{e}"
        );
        let e = s.execute(&Request::Status).unwrap_err();
        assert!(
            e.to_string().starts_with("cannot reach manager 127.0.0.1:"),
            "{e}"
        );
    }
}
