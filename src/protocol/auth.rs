//! Proving a secret without sending it: HMAC-SHA256 challenge-response.
//!
//! The side that checks (the manager, for an admin) sends a fresh random nonce; the
//! side that proves answers with its own nonce, the role it claims, and
//! `HMAC-SHA256(secret, server_nonce || client_nonce || role)`. The checker
//! recomputes the code and compares in constant time. The server nonce is used for
//! one proof only, so a recorded proof is worth nothing on another connection or a
//! second time on the same one; the client nonce keeps a dishonest checker from
//! choosing the whole message it gets a code for; the role keeps a proof for one
//! role from passing for another. The secret itself never crosses the wire.
//!
//! On the wire (docs/protocol.md, AUTH) nonces and codes travel as lower-case hex.
//! [`NonceSource`] makes nonces from a random key and a counter, so a state machine
//! that hands them out stays deterministic given its key (the simulator can pass a
//! fixed one); a process seeds it with [`os_random`].
//!
//! Storage nodes take the same exchange with role [`ROLE_CLIENT`] for the optional
//! client password.
//!
//! The member handshake (nodes proving the cluster secret to the manager and to each
//! other, `MEMBER_HELLO`, `MEMBER_CHALLENGE`, `NODE_JOIN`) uses [`proof`] and
//! [`verify`] under the cluster secret: the accepting side proves [`ROLE_ACCEPT`],
//! the connecting side [`member_role`] of the address it registers.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Bytes in a nonce.
pub const NONCE_LEN: usize = 16;
/// Bytes in a proof (an HMAC-SHA256 code).
pub const PROOF_LEN: usize = 32;
/// The role an admin proves (`AUTH admin ...`).
pub const ROLE_ADMIN: &str = "admin";
/// The role a client proves to a storage node with the client password
/// (`AUTH client ...`).
pub const ROLE_CLIENT: &str = "client";

/// The role the accepting side of a member link proves (`MEMBER_CHALLENGE`).
pub const ROLE_ACCEPT: &str = "member-accept";

/// The role the connecting side of a member link proves in `NODE_JOIN`: its
/// address, so a proof cannot register another one.
pub fn member_role(addr: &str) -> String {
    format!("member {addr}")
}

/// A nonce: random bytes used for one proof.
pub type Nonce = [u8; NONCE_LEN];

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    for p in parts {
        m.update(p);
    }
    m
}

/// The proof that the holder of `secret` claims `role` in the exchange of
/// `server` and `client` nonces.
pub fn proof(secret: &[u8], server: &Nonce, client: &Nonce, role: &str) -> [u8; PROOF_LEN] {
    mac(secret, &[server, client, role.as_bytes()])
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `given` is the proof [`proof`] computes, compared in constant time.
pub fn verify(secret: &[u8], server: &Nonce, client: &Nonce, role: &str, given: &[u8]) -> bool {
    mac(secret, &[server, client, role.as_bytes()])
        .verify_slice(given)
        .is_ok()
}

/// `N` random bytes from the operating system.
pub fn os_random<const N: usize>() -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| format!("no random bytes from the OS: {e}"))?;
    Ok(b)
}

/// Unpredictable, never-repeating nonces: `HMAC-SHA256(key, counter)` cut to
/// [`NONCE_LEN`] bytes, a pseudo-random function of a counter under a random key.
#[derive(Clone)]
pub struct NonceSource {
    key: [u8; 32],
    counter: u64,
}

impl NonceSource {
    /// A source keyed with `key` (random in a process; fixed in tests).
    pub fn new(key: [u8; 32]) -> NonceSource {
        NonceSource { key, counter: 0 }
    }

    /// The next nonce.
    pub fn next_nonce(&mut self) -> Nonce {
        self.counter += 1;
        let code = mac(&self.key, &[&self.counter.to_be_bytes()])
            .finalize()
            .into_bytes();
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(&code[..NONCE_LEN]);
        n
    }
}

impl std::fmt::Debug for NonceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        write!(f, "NonceSource {{ counter: {} }}", self.counter)
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Exactly `N` bytes from `2N` hex digits (either case); anything else is `None`.
pub fn from_hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// A client's `AUTH` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthRequest {
    /// Empty payload: send me a nonce (the reply is `CHALLENGE`).
    Challenge,
    /// `ROLE SP CLIENT_NONCE SP PROOF`, nonce and proof in hex.
    Prove {
        /// The role claimed ([`ROLE_ADMIN`]).
        role: String,
        /// The client's nonce.
        client: Nonce,
        /// [`proof`] under the role's secret.
        proof: [u8; PROOF_LEN],
    },
}

impl AuthRequest {
    /// Parses an `AUTH` payload; `None` if it is neither form.
    pub fn parse(payload: &[u8]) -> Option<AuthRequest> {
        if payload.is_empty() {
            return Some(AuthRequest::Challenge);
        }
        let mut words = payload.split(|&b| b == b' ');
        let role = std::str::from_utf8(words.next()?).ok()?;
        if role.is_empty() || role.len() > 32 {
            return None;
        }
        let client = from_hex(words.next()?)?;
        let proof = from_hex(words.next()?)?;
        if words.next().is_some() {
            return None;
        }
        Some(AuthRequest::Prove {
            role: role.to_string(),
            client,
            proof,
        })
    }

    /// The `AUTH` payload.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            AuthRequest::Challenge => Vec::new(),
            AuthRequest::Prove {
                role,
                client,
                proof,
            } => format!("{role} {} {}", to_hex(client), to_hex(proof)).into_bytes(),
        }
    }

    /// The proof of `role` for the `server` nonce, with a fresh client nonce.
    pub fn prove(secret: &[u8], server: &Nonce, role: &str) -> Result<AuthRequest, String> {
        let client = os_random::<NONCE_LEN>()?;
        Ok(AuthRequest::Prove {
            role: role.to_string(),
            client,
            proof: proof(secret, server, &client, role),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231_case_2() {
        let code: [u8; 32] = mac(b"Jefe", &[b"what do ya want ", b"for nothing?"])
            .finalize()
            .into_bytes()
            .into();
        assert_eq!(
            to_hex(&code),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_proof_verifies_only_with_its_secret_nonces_and_role() {
        let (s, c) = ([1u8; NONCE_LEN], [2u8; NONCE_LEN]);
        let p = proof(b"secret", &s, &c, ROLE_ADMIN);
        assert!(verify(b"secret", &s, &c, ROLE_ADMIN, &p));
        assert!(!verify(b"Secret", &s, &c, ROLE_ADMIN, &p));
        assert!(!verify(b"secret", &[3; NONCE_LEN], &c, ROLE_ADMIN, &p));
        assert!(!verify(b"secret", &s, &[3; NONCE_LEN], ROLE_ADMIN, &p));
        assert!(!verify(b"secret", &s, &c, "member", &p));
        assert!(!verify(b"secret", &s, &c, ROLE_ADMIN, &p[..31]));
        let mut flipped = p;
        flipped[0] ^= 1;
        assert!(!verify(b"secret", &s, &c, ROLE_ADMIN, &flipped));
    }

    #[test]
    fn nonces_do_not_repeat_and_depend_on_the_key() {
        let mut a = NonceSource::new([7; 32]);
        let mut b = NonceSource::new([8; 32]);
        let first = a.next_nonce();
        assert_ne!(first, a.next_nonce());
        assert_ne!(first, b.next_nonce());
        assert_eq!(first, NonceSource::new([7; 32]).next_nonce());
        assert!(!format!("{a:?}").contains('7'));
    }

    #[test]
    fn hex_round_trip_and_refusals() {
        let bytes = [0x00, 0x9f, 0xa0, 0xff];
        assert_eq!(to_hex(&bytes), "009fa0ff");
        assert_eq!(from_hex::<4>(b"009FA0ff"), Some(bytes));
        assert_eq!(from_hex::<4>(b"009fa0f"), None);
        assert_eq!(from_hex::<4>(b"009fa0fg"), None);
        assert_eq!(from_hex::<4>(b"+09fa0ff"), None);
    }

    #[test]
    fn auth_payloads_round_trip_and_bad_ones_are_refused() {
        assert_eq!(AuthRequest::parse(b""), Some(AuthRequest::Challenge));
        let r = AuthRequest::prove(b"k", &[5; NONCE_LEN], ROLE_ADMIN).unwrap();
        assert_eq!(AuthRequest::parse(&r.encode()), Some(r.clone()));
        let text = String::from_utf8(r.encode()).unwrap();
        for bad in [
            "admin".to_string(),
            format!("{text} extra"),
            text.replacen(' ', "  ", 1),
            text[..text.len() - 1].to_string(),
            format!(" {text}"),
        ] {
            assert_eq!(AuthRequest::parse(bad.as_bytes()), None, "{bad}");
        }
    }
}
