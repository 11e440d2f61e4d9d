//! The member handshake on this node's links, both ends of it (docs/protocol.md).
//!
//! On a link this node opens (to the manager, or to a peer) it sends
//! `MEMBER_HELLO` with a fresh nonce; the other side answers `MEMBER_CHALLENGE`
//! with its own nonce and its proof of the cluster secret over both
//! ([`auth::ROLE_ACCEPT`]). This node checks that proof (an impostor cannot make
//! one) and sends `NODE_JOIN` with its own proof over both nonces and its address
//! ([`auth::member_role`]). On a link a peer opens, the roles swap: this node
//! answers the hello, remembers both nonces for that connection, and consumes
//! them with the peer's `NODE_JOIN`: a wrong proof, a second `NODE_JOIN` (a
//! replay) or one with no handshake gets `ERR AUTH` and a close. Only then is the
//! connection a member's. The secret itself is never sent.

use super::*;
use crate::protocol::auth::{self, Nonce, NonceSource};

/// Nonces of the handshakes in progress on this node's connections.
pub(super) struct Handshakes {
    /// Where this node's nonces come from.
    nonces: NonceSource,
    /// Links this node opened: the nonce its `MEMBER_HELLO` sent.
    sent: HashMap<ConnId, Nonce>,
    /// Links a peer opened: (this node's nonce, the peer's), until `NODE_JOIN`.
    answered: HashMap<ConnId, (Nonce, Nonce)>,
}

impl Handshakes {
    /// No handshake in progress; nonces keyed with `key`.
    pub(super) fn new(key: [u8; 32]) -> Handshakes {
        Handshakes {
            nonces: NonceSource::new(key),
            sent: HashMap::new(),
            answered: HashMap::new(),
        }
    }
}

impl StorageNode {
    /// `MEMBER_HELLO` for a link this node just opened on `conn`.
    pub(super) fn member_hello(&mut self, conn: ConnId) -> Frame {
        let nonce = self.handshakes.nonces.next_nonce();
        self.handshakes.sent.insert(conn, nonce);
        self.to_manager(&Message::MemberHello { nonce })
    }

    /// The other side's `MEMBER_CHALLENGE` on a link this node opened: checks its
    /// proof and returns the `NODE_JOIN` to send (offering `offer`, and to the
    /// manager its clock `sent`), or why the other side is not to be trusted.
    pub(super) fn answer_challenge(
        &mut self,
        conn: ConnId,
        frame: &Frame,
        offer: Option<Ring>,
        sent: Option<Millis>,
    ) -> Result<Frame, String> {
        let Some(client) = self.handshakes.sent.remove(&conn) else {
            return Err("a MEMBER_CHALLENGE we did not ask for".into());
        };
        let Ok(Message::MemberChallenge { nonce, proof }) = Message::decode(frame) else {
            return Err("a malformed MEMBER_CHALLENGE".into());
        };
        let secret = self.cfg.secret.as_bytes();
        if !auth::verify(secret, &nonce, &client, auth::ROLE_ACCEPT, &proof) {
            return Err("a wrong proof of the cluster secret (another secret?)".into());
        }
        let role = auth::member_role(&self.cfg.advertise);
        Ok(self.to_manager(&Message::NodeJoin {
            proof: auth::proof(secret, &nonce, &client, &role),
            addr: self.cfg.advertise.clone(),
            tokens: self.cfg.tokens,
            sent,
            offer,
        }))
    }

    /// A peer's `MEMBER_HELLO` on `conn`: this node's nonce and proof.
    pub(super) fn on_member_hello(
        &mut self,
        conn: ConnId,
        f: &Frame,
    ) -> Result<(u8, Bytes), Error> {
        let Ok(Message::MemberHello { nonce: client }) = Message::decode(f) else {
            return Err(Error::new(ErrorCode::Auth, "malformed MEMBER_HELLO"));
        };
        let server = self.handshakes.nonces.next_nonce();
        self.handshakes.answered.insert(conn, (server, client));
        let secret = self.cfg.secret.as_bytes();
        let answer = Message::MemberChallenge {
            nonce: server,
            proof: auth::proof(secret, &server, &client, auth::ROLE_ACCEPT),
        };
        Ok((answer.op(), answer.encode().payload))
    }

    /// A peer's `NODE_JOIN` on `conn`: a member's link if its proof is right
    /// for the nonces of this connection's handshake (consumed), `ERR AUTH` if not.
    pub(super) fn on_node_join(&mut self, conn: ConnId, f: &Frame) -> Result<(u8, Bytes), Error> {
        let refuse = |why: &'static str| {
            log::warn!("NODE_JOIN refused: {why}");
            Err(Error::new(ErrorCode::Auth, why))
        };
        let (proof, addr) = match Message::decode(f) {
            Ok(Message::NodeJoin { proof, addr, .. }) => (proof, addr),
            _ => return refuse("malformed NODE_JOIN, or a plaintext secret"),
        };
        let Some((server, client)) = self.handshakes.answered.remove(&conn) else {
            return refuse("no MEMBER_HELLO handshake outstanding");
        };
        let role = auth::member_role(&addr);
        if !auth::verify(self.cfg.secret.as_bytes(), &server, &client, &role, &proof) {
            return refuse("wrong cluster secret proof");
        }
        self.conns.members.insert(conn);
        self.conns.trusted.push(conn);
        Ok((op::OK, Bytes::new()))
    }

    /// `conn` closed: its handshake, if any, is over.
    pub(super) fn forget_handshake(&mut self, conn: ConnId) {
        self.handshakes.sent.remove(&conn);
        self.handshakes.answered.remove(&conn);
    }
}

#[cfg(test)]
impl StorageNode {
    /// Tests: link `conn` (connect tag `tag`) comes up and the other side
    /// passes the member handshake; both steps' outputs go to `out`.
    pub(crate) fn test_link_up(
        &mut self,
        now: Millis,
        conn: ConnId,
        tag: u64,
        out: &mut Vec<Output>,
    ) {
        let start = out.len();
        self.step(now, Input::Connected { conn, tag }, out);
        let client = out[start..].iter().find_map(|o| match o {
            Output::Send { frame, .. } if frame.op == op::MEMBER_HELLO => {
                match Message::decode(frame) {
                    Ok(Message::MemberHello { nonce }) => Some(nonce),
                    _ => None,
                }
            }
            _ => None,
        });
        let client = client.expect("a MEMBER_HELLO");
        let server = [1u8; auth::NONCE_LEN];
        let proof = auth::proof(
            self.cfg.secret.as_bytes(),
            &server,
            &client,
            auth::ROLE_ACCEPT,
        );
        let frame = Message::MemberChallenge {
            nonce: server,
            proof,
        }
        .encode();
        self.step(now, Input::Frame { conn, frame }, out);
    }

    /// Tests: a peer opening `conn` passes the member handshake as `addr`;
    /// both steps' outputs go to `out`.
    pub(crate) fn test_peer_joins(
        &mut self,
        now: Millis,
        conn: ConnId,
        addr: &str,
        out: &mut Vec<Output>,
    ) {
        let client = [2u8; auth::NONCE_LEN];
        let hello = Message::MemberHello { nonce: client }.encode();
        self.step(now, Input::Frame { conn, frame: hello }, out);
        let (server, _) = self.handshakes.answered[&conn];
        let role = auth::member_role(addr);
        let frame = self.to_manager(&Message::NodeJoin {
            proof: auth::proof(self.cfg.secret.as_bytes(), &server, &client, &role),
            addr: addr.to_string(),
            tokens: 8,
            sent: None,
            offer: None,
        });
        self.step(now, Input::Frame { conn, frame }, out);
    }
}
