//! The client library: blocking, one request at a time or pipelined by hand.
//!
//! [`Connection`] is a framed TCP connection (it reuses the protocol module's
//! parser and encoder). [`Client`] adds the manager handshake (`HELLO` gives a
//! client id and a contact node) and one method per key-value op, with the
//! protocol's replies mapped to Rust values: NOT_FOUND and CONFLICT are ordinary
//! results, `ERR` is a [`ClientError::Server`].
//!
//! Two ways to reach the data:
//! - through a contact node ([`Client::connect`], [`Client::connect_node`]): every
//!   request goes to one node, which forwards it to the key's coordinator;
//! - partition-aware ([`Client::connect_aware`]): the client reads the ring from the
//!   manager and sends each request straight to the key's coordinator (the first
//!   node of its preference list that is not down), with that node's id in the
//!   header's `NODEID`. A node that does not serve the key by its own, newer ring
//!   answers `STALE` instead of forwarding; the client then reads the ring again and
//!   re-routes. It also re-routes when a node cannot be reached, and, on its last
//!   attempt or when the manager cannot be reached, lets any live node forward
//!   (`NODEID` 0), so a stale ring costs a hop, never a failure.
//!
//! [`Client::mget`] and [`Client::mset`] send many keys in one request, with a
//! result per key (see `batch.rs`).
//!
//! Caveat: a CREATE, UPDATE or INCR whose connection breaks after it was sent is not
//! retried (it may have been applied); the error goes to the caller.

use crate::protocol::auth::{self, AuthRequest, ROLE_ADMIN, ROLE_CLIENT};
use crate::protocol::{self, kv, op, Error, ErrorCode, Frame, Parse};
use crate::ring::{hash64, NodeState, Ring};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

mod batch;
mod scan;
pub mod secret;

pub use scan::PAGE as SCAN_PAGE;

/// Default time to wait for a reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong for a client.
#[derive(Debug)]
pub enum ClientError {
    /// The connection failed.
    Io(io::Error),
    /// The server answered `ERR`.
    Server(Error),
    /// The server answered something the client did not expect.
    Protocol(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "connection: {e}"),
            ClientError::Server(e) => write!(f, "server error: {e}"),
            ClientError::Protocol(m) => write!(f, "protocol: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> ClientError {
        ClientError::Io(e)
    }
}

/// Result of client calls.
pub type Result<T> = std::result::Result<T, ClientError>;

/// A framed, blocking connection.
pub struct Connection {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl Connection {
    /// Connects to `addr` (`HOST:PORT`), with `timeout` for connecting and each reply.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Connection> {
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))?;
                    return Ok(Connection {
                        stream,
                        rbuf: BytesMut::with_capacity(16 << 10),
                        wbuf: BytesMut::with_capacity(16 << 10),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(ClientError::Io(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"))
        })))
    }

    /// Buffers one request whose payload is the concatenation of `parts`.
    pub fn queue(&mut self, op: u8, client_id: u64, parts: &[&[u8]]) {
        self.queue_to(op, client_id, 0, parts);
    }

    /// Like [`Connection::queue`], with `node_id` in the header: the node the
    /// client routed the request to (a node that does not serve the key answers
    /// `STALE`), or 0.
    pub fn queue_to(&mut self, op: u8, client_id: u64, node_id: u32, parts: &[&[u8]]) {
        protocol::encode_parts(&mut self.wbuf, op, client_id, node_id, parts);
    }

    /// Writes everything buffered.
    pub fn flush(&mut self) -> Result<()> {
        self.stream.write_all(&self.wbuf)?;
        self.wbuf.clear();
        Ok(())
    }

    /// Reads the next frame.
    pub fn recv(&mut self) -> Result<Frame> {
        loop {
            match protocol::parse(&mut self.rbuf, u32::MAX) {
                Ok(Parse::Frame(f)) => return Ok(f),
                Ok(Parse::Incomplete { need }) => {
                    let have = self.rbuf.len();
                    let want = need.saturating_sub(have).max(16 << 10);
                    self.rbuf.resize(have + want, 0);
                    let n = match self.stream.read(&mut self.rbuf[have..]) {
                        Ok(n) => n,
                        Err(e) => {
                            self.rbuf.truncate(have);
                            return Err(e.into());
                        }
                    };
                    self.rbuf.truncate(have + n);
                    if n == 0 {
                        return Err(ClientError::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "server closed the connection",
                        )));
                    }
                }
                Err(e) => return Err(ClientError::Protocol(format!("bad reply: {e}"))),
            }
        }
    }

    /// Sends one request and waits for its reply. An `ERR` reply becomes an error.
    pub fn call(&mut self, op: u8, client_id: u64, parts: &[&[u8]]) -> Result<Frame> {
        self.queue(op, client_id, parts);
        self.flush()?;
        let f = self.recv()?;
        if f.op == op::ERR {
            return Err(ClientError::Server(Error::from_payload(&f.payload)));
        }
        Ok(f)
    }
}

impl Connection {
    /// Proves the admin secret to the manager on this connection (`AUTH`: a nonce
    /// from the manager, then an HMAC proof; the secret is never sent). A wrong
    /// secret gets `ERR AUTH` and the manager closes the connection.
    pub fn auth_admin(&mut self, secret: &[u8]) -> Result<()> {
        self.prove(secret, ROLE_ADMIN)
    }

    /// Proves the client password to a storage node on this connection (the same
    /// exchange as [`Connection::auth_admin`], role `client`). A wrong password gets
    /// `ERR AUTH` and the node closes the connection.
    pub fn auth_client(&mut self, password: &[u8]) -> Result<()> {
        self.prove(password, ROLE_CLIENT)
    }

    /// `AUTH`: a nonce from the server, then the HMAC proof of `role` under `secret`.
    fn prove(&mut self, secret: &[u8], role: &str) -> Result<()> {
        let f = self.call(op::AUTH, 0, &[])?;
        expect(&f, &[op::CHALLENGE])?;
        let server = auth::from_hex(&f.payload)
            .ok_or_else(|| ClientError::Protocol("malformed CHALLENGE".into()))?;
        let req = AuthRequest::prove(secret, &server, role).map_err(ClientError::Protocol)?;
        let f = self.call(op::AUTH, 0, &[&req.encode()])?;
        expect(&f, &[op::OK])
    }
}

/// DROP through the manager with the admin credential: `Ok(true)` once node `node`
/// (an id or `HOST:PORT`) started to leave, `Ok(false)` if the manager has no such
/// node.
pub fn drop_node(
    manager: &str,
    node: &str,
    admin_secret: &[u8],
    timeout: Duration,
) -> Result<bool> {
    let mut m = Connection::connect(manager, timeout)?;
    m.auth_admin(admin_secret)?;
    let f = m.call(op::DROP, 0, &[node.as_bytes()])?;
    expect(&f, &[op::OK, op::NOT_FOUND])?;
    Ok(f.op == op::OK)
}

/// What `HELLO` returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// The client's id.
    pub client_id: u64,
    /// The recommended contact node's id.
    pub node_id: u32,
    /// Its address.
    pub addr: String,
}

/// Parses a `WELCOME` payload.
pub fn parse_welcome(payload: &[u8]) -> Result<Welcome> {
    let bad = || ClientError::Protocol("malformed WELCOME".into());
    let text = std::str::from_utf8(payload).map_err(|_| bad())?;
    let mut w = text.splitn(3, ' ');
    let client_id = w.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let node_id = w.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let addr = w.next().filter(|s| !s.is_empty()).ok_or_else(bad)?;
    Ok(Welcome {
        client_id,
        node_id,
        addr: addr.to_string(),
    })
}

fn expect(f: &Frame, ops: &[u8]) -> Result<()> {
    if ops.contains(&f.op) {
        Ok(())
    } else {
        Err(ClientError::Protocol(format!(
            "unexpected reply op {} ({})",
            f.op,
            op::name(f.op)
        )))
    }
}

/// HELLO to the manager: a client id and a contact node.
fn hello(manager: &str, timeout: Duration) -> Result<Welcome> {
    let mut m = Connection::connect(manager, timeout)?;
    let f = m.call(op::HELLO, 0, &[b"gtstore-client"])?;
    expect(&f, &[op::WELCOME])?;
    parse_welcome(&f.payload)
}

/// Sends a payload-less request to the manager and returns the reply's payload.
pub fn manager_call(manager: &str, request: u8, timeout: Duration) -> Result<Bytes> {
    let mut c = Connection::connect(manager, timeout)?;
    let f = c.call(request, 0, &[])?;
    Ok(f.payload)
}

/// Asks a storage node for its own STATUS (its view of the ring, its key counts;
/// docs/protocol.md) and returns the JSON payload.
pub fn node_status(addr: &str, timeout: Duration) -> Result<Bytes> {
    node_status_as(addr, timeout, None)
}

/// [`node_status`], proving the client password first when one is given.
pub fn node_status_as(addr: &str, timeout: Duration, password: Option<&str>) -> Result<Bytes> {
    node_status_asking(addr, b"", timeout, password)
}

/// Like [`node_status_as`], with a payload: `keys` adds the keys the node
/// holds (bounded; docs/protocol.md).
pub fn node_status_asking(
    addr: &str,
    payload: &[u8],
    timeout: Duration,
    password: Option<&str>,
) -> Result<Bytes> {
    let mut c = Connection::connect(addr, timeout)?;
    if let Some(p) = password {
        c.auth_client(p.as_bytes())?;
    }
    let f = c.call(op::STATUS, 0, &[payload])?;
    expect(&f, &[op::STATUS_REPLY])?;
    Ok(f.payload)
}

/// How a [`Client`] reaches the key's node.
enum Route {
    /// Every request goes to one node, which forwards as needed.
    Contact(Connection),
    /// Each request goes straight to the key's coordinator by the client's ring.
    Ring(Box<RingRoute>),
}

/// The state of a partition-aware client.
struct RingRoute {
    manager: String,
    timeout: Duration,
    /// The ring as requests are routed now (`Ring::serving`).
    ring: Ring,
    conns: HashMap<u32, Connection>,
    stats: RouteStats,
    /// The client password each new node connection proves, if any.
    password: Option<String>,
}

/// Counters of a partition-aware client (for tests and tools).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteStats {
    /// RING fetches after the first.
    pub refreshes: u64,
    /// STALE replies received.
    pub stale: u64,
    /// Requests sent to a contact node for forwarding because the ring named no
    /// reachable coordinator.
    pub fallbacks: u64,
}

/// How many times a request is re-routed (after STALE or a failed connect)
/// before the client gives up.
const MAX_ROUTE_ATTEMPTS: usize = 4;

impl RingRoute {
    fn refresh(&mut self) -> Result<()> {
        let text = manager_call(&self.manager, op::RING, self.timeout)?;
        let ring = Ring::decode(&text).map_err(ClientError::Server)?;
        if ring.epoch != self.ring.epoch {
            // Connections to nodes that left are of no use.
            self.conns.retain(|id, _| ring.node(*id).is_some());
        }
        self.ring = ring.serving();
        self.stats.refreshes += 1;
        Ok(())
    }

    fn conn(&mut self, id: u32) -> Result<&mut Connection> {
        if !self.conns.contains_key(&id) {
            let node = self
                .ring
                .node(id)
                .ok_or_else(|| ClientError::Protocol(format!("node {id} is not in the ring")))?;
            let mut c = Connection::connect(&node.addr, self.timeout)?;
            if let Some(p) = &self.password {
                c.auth_client(p.as_bytes())?;
            }
            self.conns.insert(id, c);
        }
        Ok(self.conns.get_mut(&id).expect("just inserted"))
    }

    /// Any node that is up, for requests the ring cannot place.
    fn any_up(&self, skip: u32) -> Option<u32> {
        self.ring
            .nodes()
            .iter()
            .find(|n| n.state == NodeState::Up && n.id != skip)
            .map(|n| n.id)
    }

    /// Sends a request for `key` to its coordinator, re-routing after STALE or a
    /// node that cannot be reached. A request whose connection broke after it
    /// was sent is retried only if `idempotent`.
    fn call(
        &mut self,
        op: u8,
        client_id: u64,
        key: &[u8],
        parts: &[&[u8]],
        idempotent: bool,
    ) -> Result<Frame> {
        let hash = hash64(key);
        let mut last: Option<ClientError> = None;
        for attempt in 0..MAX_ROUTE_ATTEMPTS {
            if attempt > 0 {
                // The manager may be down: keep routing by the ring we have.
                let _ = self.refresh();
            }
            let (target, advisory) = match self.ring.coordinator(hash) {
                Some(id) if attempt + 1 < MAX_ROUTE_ATTEMPTS => (id, id),
                // Last try, or no coordinator: let any node forward it.
                other => match self.any_up(other.unwrap_or(0)).or(other) {
                    Some(id) => {
                        self.stats.fallbacks += 1;
                        (id, 0)
                    }
                    None => break,
                },
            };
            let conn = match self.conn(target) {
                Ok(c) => c,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            conn.queue_to(op, client_id, advisory, parts);
            let sent = conn.flush();
            let reply = sent.and_then(|()| conn.recv());
            match reply {
                Ok(f) if f.op == op::STALE => {
                    self.stats.stale += 1;
                    last = Some(ClientError::Protocol("the ring kept changing".into()));
                }
                Ok(f) if f.op == op::ERR => {
                    return Err(ClientError::Server(Error::from_payload(&f.payload)))
                }
                Ok(f) => return Ok(f),
                Err(e) => {
                    self.conns.remove(&target);
                    if !idempotent {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            ClientError::Server(Error::new(
                ErrorCode::Unavailable,
                "no storage node is up in the client's ring",
            ))
        }))
    }
}

/// A key-value client: bound to one contact node ([`Client::connect`],
/// [`Client::connect_node`]) or partition-aware ([`Client::connect_aware`]).
pub struct Client {
    client_id: u64,
    route: Route,
    node_addr: String,
}

impl Client {
    /// Says HELLO to the manager and connects to the contact node it names.
    pub fn connect(manager: &str, timeout: Duration) -> Result<Client> {
        let w = hello(manager, timeout)?;
        let node = Connection::connect(&w.addr, timeout)?;
        Ok(Client {
            client_id: w.client_id,
            route: Route::Contact(node),
            node_addr: w.addr,
        })
    }

    /// Says HELLO to the manager, reads the ring, and from then on sends each
    /// request straight to its key's coordinator (see the module docs).
    pub fn connect_aware(manager: &str, timeout: Duration) -> Result<Client> {
        let w = hello(manager, timeout)?;
        let mut route = RingRoute {
            manager: manager.to_string(),
            timeout,
            ring: Ring::empty(),
            conns: HashMap::new(),
            stats: RouteStats::default(),
            password: None,
        };
        route.refresh()?;
        route.stats.refreshes = 0;
        Ok(Client {
            client_id: w.client_id,
            route: Route::Ring(Box::new(route)),
            node_addr: w.addr,
        })
    }

    /// Connects straight to a storage node, anonymously (client id 0).
    pub fn connect_node(addr: &str, timeout: Duration) -> Result<Client> {
        Ok(Client {
            client_id: 0,
            route: Route::Contact(Connection::connect(addr, timeout)?),
            node_addr: addr.to_string(),
        })
    }

    /// Proves the client password to every node this client talks to: the
    /// contact node now, and each node a partition-aware client connects to.
    pub fn authenticate(&mut self, password: &str) -> Result<()> {
        match &mut self.route {
            Route::Contact(c) => c.auth_client(password.as_bytes()),
            Route::Ring(r) => {
                r.password = Some(password.to_string());
                for c in r.conns.values_mut() {
                    c.auth_client(password.as_bytes())?;
                }
                Ok(())
            }
        }
    }

    /// The id the manager gave (0 when anonymous).
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The contact node's address (for a partition-aware client: the one HELLO named).
    pub fn node_addr(&self) -> &str {
        &self.node_addr
    }

    /// Routing counters; `None` for a client bound to one node.
    pub fn route_stats(&self) -> Option<RouteStats> {
        match &self.route {
            Route::Ring(r) => Some(r.stats),
            Route::Contact(_) => None,
        }
    }

    /// The ring a partition-aware client routes by.
    pub fn ring(&self) -> Option<&Ring> {
        match &self.route {
            Route::Ring(r) => Some(&r.ring),
            Route::Contact(_) => None,
        }
    }

    fn request(&mut self, op: u8, key: &[u8], parts: &[&[u8]]) -> Result<Frame> {
        kv::check_key(key).map_err(ClientError::Server)?;
        let id = self.client_id;
        match &mut self.route {
            Route::Contact(c) => c.call(op, id, parts),
            Route::Ring(r) => {
                let idempotent = matches!(op, op::PUT | op::GET | op::DELETE | op::EXISTS);
                r.call(op, id, key, parts, idempotent)
            }
        }
    }

    fn kv_call(&mut self, op: u8, key: &[u8], value: &[u8]) -> Result<Frame> {
        let mut tmp = [0u8; 20];
        let klen = protocol::frame::fmt_u64(key.len() as u64, &mut tmp);
        self.request(op, key, &[klen, b" ", key, value])
    }

    fn key_call(&mut self, op: u8, key: &[u8]) -> Result<Frame> {
        self.request(op, key, &[key])
    }

    /// PING with a payload; returns the echo.
    pub fn ping(&mut self, payload: &[u8]) -> Result<Bytes> {
        let id = self.client_id;
        let f = match &mut self.route {
            Route::Contact(c) => c.call(op::PING, id, &[payload])?,
            Route::Ring(r) => {
                let target = r.any_up(0).ok_or_else(|| {
                    ClientError::Server(Error::new(ErrorCode::Unavailable, "no node is up"))
                })?;
                r.conn(target)?.call(op::PING, id, &[payload])?
            }
        };
        expect(&f, &[op::PONG])?;
        Ok(f.payload)
    }

    /// Stores a value.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let f = self.kv_call(op::PUT, key, value)?;
        expect(&f, &[op::OK])
    }

    /// Reads a value; `None` if absent.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        let f = self.key_call(op::GET, key)?;
        expect(&f, &[op::VALUE, op::NOT_FOUND])?;
        Ok((f.op == op::VALUE).then_some(f.payload))
    }

    /// Deletes; false if the key was absent.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool> {
        let f = self.key_call(op::DELETE, key)?;
        expect(&f, &[op::OK, op::NOT_FOUND])?;
        Ok(f.op == op::OK)
    }

    /// Whether the key exists.
    pub fn exists(&mut self, key: &[u8]) -> Result<bool> {
        let f = self.key_call(op::EXISTS, key)?;
        expect(&f, &[op::OK, op::NOT_FOUND])?;
        Ok(f.op == op::OK)
    }

    /// Stores only if absent; false on conflict.
    pub fn create(&mut self, key: &[u8], value: &[u8]) -> Result<bool> {
        let f = self.kv_call(op::CREATE, key, value)?;
        expect(&f, &[op::OK, op::CONFLICT])?;
        Ok(f.op == op::OK)
    }

    /// Stores only if present; false if absent.
    pub fn update(&mut self, key: &[u8], value: &[u8]) -> Result<bool> {
        let f = self.kv_call(op::UPDATE, key, value)?;
        expect(&f, &[op::OK, op::NOT_FOUND])?;
        Ok(f.op == op::OK)
    }

    /// Adds `delta`; returns the new count.
    pub fn incr(&mut self, key: &[u8], delta: i64) -> Result<i64> {
        let d = delta.to_string();
        let f = self.kv_call(op::INCR, key, d.as_bytes())?;
        expect(&f, &[op::VALUE])?;
        std::str::from_utf8(&f.payload)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ClientError::Protocol("INCR reply is not a number".into()))
    }

    /// The contact node's connection, for pipelining by hand (`None` for a
    /// partition-aware client, which has one per node).
    pub fn connection(&mut self) -> Option<&mut Connection> {
        match &mut self.route {
            Route::Contact(c) => Some(c),
            Route::Ring(_) => None,
        }
    }
}
