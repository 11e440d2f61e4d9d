//! Proving the client password on each new link, before any request: the link is
//! `Authing` until the server accepts it, then it counts as up.
//!
//! RESP (`--resp`): `AUTH password`, answered `+OK`. gtstore (native): an empty
//! `AUTH` gets `CHALLENGE` with the node's nonce, then `AUTH client CLIENT_NONCE
//! PROOF` gets `OK` (docs/protocol.md, "AUTH on a storage node"). Anything else,
//! including `ERR AUTH` or `-WRONGPASS`, fails the run: a wrong password is not
//! load.

use super::{Driver, LinkState};
use crate::load::wire::Proto;
use crate::protocol::auth::{self, AuthRequest, ROLE_CLIENT};
use crate::protocol::frame::{self, Parse};
use crate::protocol::op;
use crate::reactor::{ConnId, Output};
use bytes::{Bytes, BytesMut};

/// The longest reply to an AUTH step the driver reads (a CHALLENGE is 32 bytes).
const MAX_AUTH_REPLY: u32 = 4096;

/// The first bytes to send on a fresh link when a password is set.
pub(super) fn first_message(proto: Proto, password: &str) -> Bytes {
    let mut out = BytesMut::new();
    match proto {
        Proto::Resp => {
            out.extend_from_slice(
                format!("*2\r\n$4\r\nAUTH\r\n${}\r\n", password.len()).as_bytes(),
            );
            out.extend_from_slice(password.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        _ => frame::encode(&mut out, op::AUTH, 0, 0, b""),
    }
    out.freeze()
}

/// What a step of the exchange leads to.
enum Step {
    /// Not a whole reply yet.
    More,
    /// Send this and wait for the next reply.
    Send(Bytes),
    /// Accepted: the link is up.
    Done,
}

impl Driver {
    /// Bytes on link `l` while it proves the password.
    pub(super) fn on_auth_data(
        &mut self,
        l: usize,
        conn: ConnId,
        data: BytesMut,
        out: &mut Vec<Output>,
    ) {
        self.links[l].rbuf.extend_from_slice(&data);
        let password = self.sh.s.password.clone().unwrap_or_default();
        let step = match self.sh.proto {
            Proto::Resp => resp_step(&mut self.links[l].rbuf),
            _ => native_step(&mut self.links[l].rbuf, &password),
        };
        match step {
            Ok(Step::More) => {}
            Ok(Step::Send(bytes)) => out.push(Output::SendBytes { conn, bytes }),
            Ok(Step::Done) if self.links[l].rbuf.is_empty() => self.link_up(l, out),
            Ok(Step::Done) => self.fatal("bytes after the AUTH reply".into(), out),
            Err(why) => {
                let addr = self.nodes[self.links[l].node].addr;
                self.fatal(format!("{addr} refused the client password: {why}"), out);
            }
        }
    }

    /// Link `l` connected: prove the password first when one is set.
    pub(super) fn start_auth(&mut self, l: usize, conn: ConnId, out: &mut Vec<Output>) -> bool {
        let Some(password) = self.sh.s.password.as_deref() else {
            return false;
        };
        let bytes = first_message(self.sh.proto, password);
        self.links[l].state = LinkState::Authing;
        out.push(Output::SendBytes { conn, bytes });
        true
    }
}

/// RESP: `+OK` accepts; an error line refuses.
fn resp_step(buf: &mut BytesMut) -> Result<Step, String> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() > MAX_AUTH_REPLY as usize {
            Err("an endless reply to AUTH".into())
        } else {
            Ok(Step::More)
        };
    };
    let line = buf.split_to(end + 2);
    if &line[..] == b"+OK\r\n" {
        Ok(Step::Done)
    } else {
        Err(String::from_utf8_lossy(&line[..end]).into_owned())
    }
}

/// Native: CHALLENGE gets the proof; OK accepts; anything else refuses.
fn native_step(buf: &mut BytesMut, password: &str) -> Result<Step, String> {
    let f = match frame::parse(buf, MAX_AUTH_REPLY).map_err(|e| e.to_string())? {
        Parse::Incomplete { .. } => return Ok(Step::More),
        Parse::Frame(f) => f,
    };
    match f.op {
        op::CHALLENGE => {
            let server = auth::from_hex(&f.payload).ok_or("a malformed CHALLENGE")?;
            let req = AuthRequest::prove(password.as_bytes(), &server, ROLE_CLIENT)?;
            let mut out = BytesMut::new();
            frame::encode(&mut out, op::AUTH, 0, 0, &req.encode());
            Ok(Step::Send(out.freeze()))
        }
        op::OK => Ok(Step::Done),
        _ => Err(String::from_utf8_lossy(&f.payload).into_owned()),
    }
}
