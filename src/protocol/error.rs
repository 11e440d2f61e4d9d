//! The one error type of gtstore. Each error knows its wire code and whether the
//! connection it happened on can still be trusted.

use bytes::Bytes;
use std::borrow::Cow;
use std::fmt;

/// The machine-readable code sent as the first word of an `ERR` payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The header was malformed: the stream is out of sync, the connection closes.
    BadFrame,
    /// `LEN` exceeds the maximum frame size: the connection closes unread.
    TooLarge,
    /// Unknown op, or one not allowed on this connection.
    BadOp,
    /// A key that is empty, longer than 65,535 bytes, or a malformed `KV` payload.
    BadKey,
    /// INCR on a value that is not a decimal i64, a bad delta, or an overflow.
    NotInt,
    /// The request could not be served (too few replicas reachable, a node
    /// not yet a member of a cluster, ...). A write answered this was applied
    /// nowhere.
    Unavailable,
    /// The request could not be served within the request timeout. A write
    /// answered this was applied nowhere.
    Timeout,
    /// A write failed after it may have been applied (a replica may have stored
    /// it, fewer than W acknowledged it, or the round timed out after sending):
    /// its outcome is unknown, and a later read may find it or not.
    Unknown,
    /// A batch (MGET, MSET) over its bounds: too many keys, or a reply too
    /// large. Nothing of it was applied.
    Limit,
    /// A proof of a secret failed (membership or admin), or an admin op came from
    /// a connection that has not proven the admin credential.
    Auth,
    /// A broken invariant inside the server.
    Internal,
}

impl ErrorCode {
    /// All codes, for parsing and tests.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::BadFrame,
        ErrorCode::TooLarge,
        ErrorCode::BadOp,
        ErrorCode::BadKey,
        ErrorCode::NotInt,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::Unknown,
        ErrorCode::Limit,
        ErrorCode::Auth,
        ErrorCode::Internal,
    ];

    /// The upper-case word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "BADFRAME",
            ErrorCode::TooLarge => "TOOLARGE",
            ErrorCode::BadOp => "BADOP",
            ErrorCode::BadKey => "BADKEY",
            ErrorCode::NotInt => "NOTINT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Unknown => "UNKNOWN",
            ErrorCode::Limit => "LIMIT",
            ErrorCode::Auth => "AUTH",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// Parses a wire code; unknown words give `None`.
    pub fn from_word(word: &[u8]) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str().as_bytes() == word)
    }

    /// Whether the stream can no longer be trusted after this error, so the server
    /// replies once and then closes the connection.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorCode::BadFrame | ErrorCode::TooLarge | ErrorCode::Auth
        )
    }
}

/// An error with its code and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What a program matches on.
    pub code: ErrorCode,
    /// What a person reads.
    pub message: Cow<'static, str>,
}

impl Error {
    /// Builds an error from a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }

    /// `BADOP` for an op this process does not serve: `server` names the process
    /// ("the manager", "a storage node"); an op of 50-99 from a connection that
    /// has not proven membership says so instead.
    pub fn bad_op(op: u8, member: bool, server: &str) -> Error {
        let message = if super::op::is_internal(op) && !member {
            format!("op {op} is reserved for cluster members")
        } else if super::op::is_internal(op) {
            format!("op {op} is not served by {server}")
        } else {
            format!("unknown or reply op {op}")
        };
        Error::new(ErrorCode::BadOp, message)
    }

    /// The `ERR` payload: `CODE SP message`.
    pub fn to_payload(&self) -> Bytes {
        let mut v = Vec::with_capacity(self.code.as_str().len() + 1 + self.message.len());
        v.extend_from_slice(self.code.as_str().as_bytes());
        v.push(b' ');
        v.extend_from_slice(self.message.as_bytes());
        Bytes::from(v)
    }

    /// Reads an `ERR` payload back. An unknown code becomes `Internal` with the whole
    /// payload as its message, so nothing the server said is dropped.
    pub fn from_payload(payload: &[u8]) -> Error {
        let (word, rest) = match memchr::memchr(b' ', payload) {
            Some(i) => (&payload[..i], &payload[i + 1..]),
            None => (payload, &[][..]),
        };
        match ErrorCode::from_word(word) {
            Some(code) => Error::new(code, String::from_utf8_lossy(rest).into_owned()),
            None => Error::new(
                ErrorCode::Internal,
                String::from_utf8_lossy(payload).into_owned(),
            ),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip() {
        for code in ErrorCode::ALL {
            let e = Error::new(code, "some words here");
            assert_eq!(Error::from_payload(&e.to_payload()), e);
        }
    }

    #[test]
    fn only_a_broken_stream_closes_the_connection() {
        assert!(!ErrorCode::Unknown.closes_connection());
        assert_eq!(ErrorCode::from_word(b"UNKNOWN"), Some(ErrorCode::Unknown));
    }

    #[test]
    fn unknown_code_keeps_text() {
        let e = Error::from_payload(b"WEIRD thing");
        assert_eq!(e.code, ErrorCode::Internal);
        assert_eq!(e.message, "WEIRD thing");
    }
}
