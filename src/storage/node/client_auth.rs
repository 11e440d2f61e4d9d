//! The client password on the native port: with one set, a client connection may
//! only `PING` and `AUTH` until it proves the password.
//!
//! The exchange is the manager's admin `AUTH` (see [`crate::protocol::auth`]) with
//! role [`ROLE_CLIENT`]: an empty `AUTH` gets a fresh nonce (`CHALLENGE`) kept for
//! that connection; `AUTH client CLIENT_NONCE PROOF` consumes it and, when the proof
//! is HMAC-SHA256 under the password, lets the connection run every client op until
//! it closes. The password never crosses the wire. A malformed or wrong proof, a
//! proof with no outstanding nonce (a replay) or another role gets `ERR AUTH` and
//! the connection closes; any other client op before the proof gets `ERR AUTH` and
//! the connection stays open.
//!
//! The RESP and HTTP fronts check the password themselves: RESP as Redis's
//! `requirepass` does (see [`super::super::resp`]), HTTP with `Authorization:
//! Bearer` (see [`super::super::http`]).
//!
//! Connections that proved cluster membership (a peer's `NODE_JOIN`) and the
//! cluster ops 50-99 are not gated here: membership has its own proof.

use super::*;
use crate::protocol::auth::{self, AuthRequest, NonceSource, ROLE_CLIENT};
use std::collections::{HashMap, HashSet};

/// The password, the nonces handed out for it, and who proved it.
pub(super) struct ClientAuth {
    password: String,
    nonces: NonceSource,
    challenges: HashMap<ConnId, auth::Nonce>,
    authed: HashSet<ConnId>,
}

impl StorageNode {
    /// Client connections must prove `password` before any op but PING and AUTH;
    /// `nonce_key` keys the nonces (random in a process, fixed in tests).
    pub fn require_client_password(&mut self, password: String, nonce_key: [u8; 32]) {
        if let Some(r) = self.resp.as_mut() {
            r.require_password(Bytes::from(password.clone()));
        }
        if let Some(h) = self.http.as_mut() {
            h.require_password(Bytes::from(password.clone()));
        }
        self.client_auth = Some(Box::new(ClientAuth {
            password,
            nonces: NonceSource::new(nonce_key),
            challenges: HashMap::new(),
            authed: HashSet::new(),
        }));
    }

    /// Whether `f` from client connection `conn` may be served; when not, its
    /// answer (and a close, for a failed proof) is pushed.
    pub(super) fn client_gate(&mut self, conn: ConnId, f: &Frame, out: &mut Vec<Output>) -> bool {
        let Some(a) = self.client_auth.as_mut() else {
            return true;
        };
        if op::is_internal(f.op) || self.conns.members.contains(&conn) {
            return true;
        }
        if f.op == op::AUTH {
            let reply = match a.answer(conn, &f.payload) {
                Ok(frame) => frame,
                Err(e) => {
                    let frame = Frame::error(f.client_id, self.node_id, &e);
                    self.conns.order.ready(conn, frame, out);
                    out.push(Output::Close { conn });
                    return false;
                }
            };
            let reply = Frame::new(reply.op, f.client_id, self.node_id, reply.payload);
            self.conns.order.ready(conn, reply, out);
            return false;
        }
        if f.op == op::PING || a.authed.contains(&conn) {
            return true;
        }
        let e = Error::new(
            ErrorCode::Auth,
            format!(
                "{} needs the client password: AUTH first (docs/protocol.md)",
                op::name(f.op)
            ),
        );
        let frame = Frame::error(f.client_id, self.node_id, &e);
        self.conns.order.ready(conn, frame, out);
        false
    }

    /// Forgets what `conn` proved or was challenged with.
    pub(super) fn forget_client_auth(&mut self, conn: ConnId) {
        if let Some(a) = self.client_auth.as_mut() {
            a.challenges.remove(&conn);
            a.authed.remove(&conn);
        }
    }
}

impl ClientAuth {
    /// The password connections must prove.
    pub(super) fn password(&self) -> &str {
        &self.password
    }

    /// The reply to an `AUTH` payload from `conn` (client id and node id unset).
    fn answer(&mut self, conn: ConnId, payload: &[u8]) -> Result<Frame, Error> {
        let refuse = |why: &'static str| {
            log::warn!("client AUTH refused: {why}");
            Err(Error::new(ErrorCode::Auth, why))
        };
        match AuthRequest::parse(payload) {
            None => refuse("malformed AUTH (docs/protocol.md)"),
            Some(AuthRequest::Challenge) => {
                let nonce = self.nonces.next_nonce();
                self.challenges.insert(conn, nonce);
                let hex = auth::to_hex(&nonce);
                Ok(Frame::new(op::CHALLENGE, 0, 0, Bytes::from(hex)))
            }
            Some(AuthRequest::Prove {
                role,
                client,
                proof,
            }) => {
                let Some(server) = self.challenges.remove(&conn) else {
                    return refuse("no challenge outstanding: send an empty AUTH first");
                };
                if role != ROLE_CLIENT {
                    return refuse("unknown role: a storage node knows only `client`");
                }
                let secret = self.password.as_bytes();
                if !auth::verify(secret, &server, &client, &role, &proof) {
                    return refuse("wrong client password");
                }
                self.authed.insert(conn);
                Ok(Frame::new(op::OK, 0, 0, Bytes::new()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `frame` from `conn`; the frames sent back, and whether `conn` was closed.
    fn send(n: &mut StorageNode, conn: ConnId, frame: Frame) -> (Vec<Frame>, bool) {
        let mut out = Vec::new();
        n.step(0, Input::Frame { conn, frame }, &mut out);
        let frames = out.iter().filter_map(|o| match o {
            Output::Send { frame, .. } => Some(frame.clone()),
            _ => None,
        });
        let closed = out.iter().any(|o| matches!(o, Output::Close { .. }));
        (frames.collect(), closed)
    }

    fn node() -> StorageNode {
        let cfg = NodeConfig::new("127.0.0.1:7001".into(), "127.0.0.1:7000".parse().unwrap());
        let mut n = StorageNode::new(cfg);
        n.require_client_password("pw".into(), [9; 32]);
        n
    }

    /// The AUTH exchange on `conn` with `password`; the last reply and the close.
    fn prove(n: &mut StorageNode, conn: ConnId, password: &str) -> (Frame, bool) {
        let (r, _) = send(n, conn, Frame::new(op::AUTH, 1, 0, Bytes::new()));
        assert_eq!(r[0].op, op::CHALLENGE);
        let server = auth::from_hex(&r[0].payload).unwrap();
        let req = AuthRequest::prove(password.as_bytes(), &server, ROLE_CLIENT).unwrap();
        let (mut r, closed) = send(n, conn, Frame::new(op::AUTH, 2, 0, req.encode()));
        (r.remove(0), closed)
    }

    #[test]
    fn only_ping_and_auth_until_the_password_is_proven() {
        let mut n = node();
        let c = ConnId::new(5, 1);
        let put = || Frame::new(op::PUT, 3, 0, &b"1 kv"[..]);
        let (r, closed) = send(&mut n, c, put());
        assert_eq!((r[0].op, r[0].client_id, closed), (op::ERR, 3, false));
        assert!(r[0].payload.starts_with(b"AUTH "));
        let (r, _) = send(&mut n, c, Frame::new(op::PING, 4, 0, &b"x"[..]));
        assert_eq!(r[0].op, op::PONG);
        let (ok, closed) = prove(&mut n, c, "pw");
        assert_eq!((ok.op, ok.client_id, closed), (op::OK, 2, false));
        let (r, _) = send(&mut n, c, put());
        assert_eq!(r[0].op, op::OK);
        // Closed and reused: anonymous again.
        n.step(0, Input::Closed { conn: c }, &mut Vec::new());
        assert_eq!(send(&mut n, c, put()).0[0].op, op::ERR);
    }

    #[test]
    fn a_wrong_replayed_or_foreign_proof_is_refused_and_closes() {
        let mut n = node();
        let (r, closed) = prove(&mut n, ConnId::new(5, 1), "nope");
        assert_eq!((r.op, closed), (op::ERR, true));
        // A proof with no challenge outstanding (a replay).
        let c = ConnId::new(6, 1);
        let req = AuthRequest::prove(b"pw", &[0; auth::NONCE_LEN], ROLE_CLIENT).unwrap();
        let (r, closed) = send(&mut n, c, Frame::new(op::AUTH, 0, 0, req.encode()));
        assert_eq!((r[0].op, closed), (op::ERR, true));
        // The admin role is not taken.
        let c = ConnId::new(7, 1);
        let (r, _) = send(&mut n, c, Frame::new(op::AUTH, 1, 0, Bytes::new()));
        let server = auth::from_hex(&r[0].payload).unwrap();
        let req = AuthRequest::prove(b"pw", &server, auth::ROLE_ADMIN).unwrap();
        let (r, closed) = send(&mut n, c, Frame::new(op::AUTH, 0, 0, req.encode()));
        assert_eq!((r[0].op, closed), (op::ERR, true));
    }
}
