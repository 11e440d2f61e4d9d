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
