//! The text payloads of registration and the operator's DROP: `NODE_JOIN`,
//! `JOINED` and `DROP` (see [`Message`]).

use super::{auth, bad_ring, decimal, malformed, text, words, Message, NodeRef};
use crate::protocol::error::{Error, ErrorCode};
use crate::ring::Ring;
use bytes::Bytes;

pub(super) fn decode_join(p: &Bytes) -> Result<Message, Error> {
    let what = "NODE_JOIN (PROOF HOST:PORT TOKENS [SENT] [LF RING])";
    let (line, offer) = match memchr::memchr(b'\n', p) {
        Some(i) => (&p[..i], Some(&p[i + 1..])),
        None => (&p[..], None),
    };
    let ([proof, addr, tokens], sent) = match words::<4>(line) {
        Some([proof, addr, tokens, sent]) => ([proof, addr, tokens], Some(sent)),
        None => (words::<3>(line).ok_or_else(|| malformed(what, ""))?, None),
    };
    // A plaintext secret (the old format) is not a proof: refused like a wrong one.
    let proof = auth::from_hex(proof).ok_or_else(|| {
        Error::new(
            ErrorCode::Auth,
            "NODE_JOIN carries no proof: members prove the secret with the handshake \
             (docs/protocol.md); plaintext secrets are refused",
        )
    })?;
    let offer = match offer {
        Some(text) => Some(Ring::decode(text).map_err(|e| bad_ring("NODE_JOIN", e))?),
        None => None,
    };
    Ok(Message::NodeJoin {
        proof,
        addr: text(addr, what)?,
        tokens: decimal(tokens, u32::MAX as u64, what)? as u32,
        sent: sent.map(|s| decimal(s, u64::MAX, what)).transpose()?,
        offer,
    })
}

pub(super) fn decode_joined(p: &Bytes) -> Result<Message, Error> {
    let what = "JOINED (NODEID [catch-up] LF RING)";
    let nl = memchr::memchr(b'\n', p).ok_or_else(|| malformed(what, "no ring"))?;
    let (id, catch_up) = match words::<2>(&p[..nl]) {
        Some([id, b"catch-up"]) => (id, true),
        _ => (&p[..nl], false),
    };
    Ok(Message::Joined {
        node_id: decimal(id, u32::MAX as u64, what)? as u32,
        catch_up,
        ring: Ring::decode(&p[nl + 1..]).map_err(|e| bad_ring("JOINED", e))?,
    })
}

pub(super) fn decode_drop(p: &Bytes) -> Result<Message, Error> {
    let text = std::str::from_utf8(p)
        .map(str::trim)
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| malformed("DROP", "it needs NODEID or HOST:PORT"))?;
    let node = match text.parse::<u32>() {
        Ok(id) => NodeRef::Id(id),
        Err(_) => NodeRef::Addr(text.to_string()),
    };
    Ok(Message::Drop { node })
}
