//! The client library: blocking, one request at a time or pipelined by hand.
//!
//! [`Connection`] is a framed TCP connection (it reuses the protocol module's
//! parser and encoder). [`Client`] adds the manager handshake (`HELLO` gives a
//! client id and a contact node) and one method per key-value op, with the
//! protocol's replies mapped to Rust values: NOT_FOUND and CONFLICT are ordinary
//! results, `ERR` is a [`ClientError::Server`].
//!
//! Caveats: the client sends every request to its contact node, which forwards as
//! needed; it does not route by the ring itself yet.

use crate::protocol::{self, kv, op, Error, Frame, Parse};
use bytes::{Bytes, BytesMut};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

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
        protocol::encode_parts(&mut self.wbuf, op, client_id, 0, parts);
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

/// Asks the manager at `manager` for its STATUS JSON.
pub fn manager_call(manager: &str, request: u8, timeout: Duration) -> Result<Bytes> {
    let mut c = Connection::connect(manager, timeout)?;
    let f = c.call(request, 0, &[])?;
    Ok(f.payload)
}

/// A key-value client bound to one storage node.
pub struct Client {
    client_id: u64,
    node: Connection,
    node_addr: String,
}

impl Client {
    /// Says HELLO to the manager and connects to the contact node it names.
    pub fn connect(manager: &str, timeout: Duration) -> Result<Client> {
        let mut m = Connection::connect(manager, timeout)?;
        let f = m.call(op::HELLO, 0, &[b"gtstore-client"])?;
        expect(&f, &[op::WELCOME])?;
        let w = parse_welcome(&f.payload)?;
        let node = Connection::connect(&w.addr, timeout)?;
        Ok(Client {
            client_id: w.client_id,
            node,
            node_addr: w.addr,
        })
    }

    /// Connects straight to a storage node, anonymously (client id 0).
    pub fn connect_node(addr: &str, timeout: Duration) -> Result<Client> {
        Ok(Client {
            client_id: 0,
            node: Connection::connect(addr, timeout)?,
            node_addr: addr.to_string(),
        })
    }

    /// The id the manager gave (0 when anonymous).
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The contact node's address.
    pub fn node_addr(&self) -> &str {
        &self.node_addr
    }

    fn kv_call(&mut self, op: u8, key: &[u8], value: &[u8]) -> Result<Frame> {
        kv::check_key(key).map_err(ClientError::Server)?;
        let mut tmp = [0u8; 20];
        let klen = protocol::frame::fmt_u64(key.len() as u64, &mut tmp);
        self.node
            .call(op, self.client_id, &[klen, b" ", key, value])
    }

    fn key_call(&mut self, op: u8, key: &[u8]) -> Result<Frame> {
        kv::check_key(key).map_err(ClientError::Server)?;
        self.node.call(op, self.client_id, &[key])
    }

    /// PING with a payload; returns the echo.
    pub fn ping(&mut self, payload: &[u8]) -> Result<Bytes> {
        let f = self.node.call(op::PING, self.client_id, &[payload])?;
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

    /// The underlying connection, for pipelining by hand.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.node
    }
}
