//! The admin credential: `AUTH` (challenge-response, [`crate::protocol::auth`]) and
//! the gate in front of the ops that change membership or configuration; and the
//! manager's side of the member handshake (`MEMBER_HELLO`, then `NODE_JOIN`'s proof).
//!
//! A connection starts anonymous. An empty `AUTH` gets a fresh nonce (`CHALLENGE`),
//! remembered for that connection only; `AUTH admin CLIENT_NONCE PROOF` then
//! consumes it and, if the proof is HMAC-SHA256 under the admin secret, marks the
//! connection admin until it closes. A malformed or wrong proof, a proof with no
//! outstanding nonce (a replay) or an unknown role gets `ERR AUTH` and the
//! connection closes. [`ADMIN_OPS`] from a connection that is not admin get `ERR
//! AUTH` (and a close) before their payload is read, so they change nothing.
//!
//! A node's link starts with `MEMBER_HELLO` (its nonce); the manager answers with
//! its own nonce and proof (`MEMBER_CHALLENGE`) and remembers both nonces for that
//! connection until its `NODE_JOIN`, whose proof consumes them: a second
//! `NODE_JOIN` on the link, or one with no handshake, gets `ERR AUTH` and a close.

use super::Manager;
use crate::protocol::auth::{self, AuthRequest, Nonce, ROLE_ADMIN};
use crate::protocol::{op, Error, ErrorCode, Frame, Message};
use crate::reactor::ConnId;
use bytes::Bytes;

/// Client ops that change membership or configuration: only for admin connections.
pub(super) const ADMIN_OPS: [u8; 1] = [op::DROP];

impl Manager {
    /// Answers an `AUTH` frame from `conn`.
    pub(super) fn auth(&mut self, conn: ConnId, payload: &[u8]) -> Result<Option<Frame>, Error> {
        let refuse = |why: &'static str| {
            log::warn!("AUTH refused: {why}");
            Err(Error::new(ErrorCode::Auth, why))
        };
        match AuthRequest::parse(payload) {
            None => refuse("malformed AUTH (docs/protocol.md)"),
            Some(AuthRequest::Challenge) => {
                let nonce = self.auth.nonces.next_nonce();
                self.auth.challenges.insert(conn, nonce);
                let hex = auth::to_hex(&nonce);
                Ok(Some(Frame::new(op::CHALLENGE, 0, 0, Bytes::from(hex))))
            }
            Some(AuthRequest::Prove {
                role,
                client,
                proof,
            }) => {
                let Some(server) = self.auth.challenges.remove(&conn) else {
                    return refuse("no challenge outstanding: send an empty AUTH first");
                };
                if role != ROLE_ADMIN {
                    return refuse("unknown role");
                }
                let secret = self.cfg.admin_secret.as_bytes();
                if !auth::verify(secret, &server, &client, &role, &proof) {
                    return refuse("wrong admin proof");
                }
                self.auth.admins.insert(conn);
                Ok(Some(Frame::new(op::OK, 0, 0, Bytes::new())))
            }
        }
    }

    /// Whether `conn` proved the admin credential.
    pub(super) fn is_admin(&self, conn: ConnId) -> bool {
        self.auth.admins.contains(&conn)
    }

    /// The `ERR AUTH` for admin op `o` from a connection that is not admin.
    pub(super) fn not_admin(o: u8) -> Error {
        log::warn!("{} refused: the connection is not admin", op::name(o));
        Error::new(
            ErrorCode::Auth,
            format!(
                "{} needs the admin credential: AUTH first (docs/protocol.md)",
                op::name(o)
            ),
        )
    }

    /// `MEMBER_HELLO` from `conn` with the node's nonce: the manager's nonce and
    /// its own proof of the cluster secret (`MEMBER_CHALLENGE`), so the node
    /// knows it registers with the real manager.
    pub(super) fn member_hello(&mut self, conn: ConnId, client: Nonce) -> Message {
        let server = self.auth.nonces.next_nonce();
        self.auth.members.insert(conn, (server, client));
        let secret = self.cfg.secret.as_bytes();
        Message::MemberChallenge {
            nonce: server,
            proof: auth::proof(secret, &server, &client, auth::ROLE_ACCEPT),
        }
    }

    /// Checks `NODE_JOIN`'s proof from `conn` for `addr`, consuming the nonces
    /// of its handshake: `ERR AUTH` (and a close) if there were none (a replay,
    /// or no `MEMBER_HELLO`) or the proof is wrong.
    pub(super) fn check_member(
        &mut self,
        conn: ConnId,
        addr: &str,
        given: &[u8; auth::PROOF_LEN],
    ) -> Result<(), Error> {
        let Some((server, client)) = self.auth.members.remove(&conn) else {
            log::warn!("NODE_JOIN from {addr} refused: no handshake outstanding");
            return Err(Error::new(
                ErrorCode::Auth,
                "NODE_JOIN needs a fresh MEMBER_HELLO handshake first",
            ));
        };
        let role = auth::member_role(addr);
        let secret = self.cfg.secret.as_bytes();
        if !auth::verify(secret, &server, &client, &role, given) {
            log::warn!("NODE_JOIN from {addr} refused: wrong cluster secret proof");
            return Err(Error::new(ErrorCode::Auth, "wrong cluster secret"));
        }
        Ok(())
    }

    /// Forgets what `conn` proved or was challenged with.
    pub(super) fn forget_auth(&mut self, conn: ConnId) {
        self.auth.members.remove(&conn);
        self.auth.challenges.remove(&conn);
        self.auth.admins.remove(&conn);
    }
}
