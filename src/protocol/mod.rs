//! The wire protocol: frames, ops, payloads and error codes. No I/O lives here.
//!
//! Every message between any two gtstore processes (and from netcat users) is one
//! frame: an ASCII header `OP CLIENTID NODEID LEN\n` followed by `LEN` payload bytes.
//! The contract is `docs/protocol.md`: every op and payload, node-to-node traffic
//! included. [`int`] is the one rule for when a stored value is an integer.
//!
//! Parsing is two-phase, in the style of mini-redis: [`frame::parse`] first checks that
//! a whole frame is buffered (returning [`frame::Parse::Incomplete`] otherwise, which is
//! a normal result, not an error), then cuts it out of the read buffer with
//! `split_to(..).freeze()`, so the payload is never copied on the way in. Encoding
//! writes the header and payload straight into an output buffer.
//!
//! [`resp`] is the other protocol a storage node can speak: RESP2, for Redis
//! clients, parsed in the same two phases (see `storage::resp` for its front).
//! [`auth`] proves a secret by HMAC challenge-response (the admin credential).
//!
//! Caveats: a parsed payload is a view into the read chunk it arrived in; anything
//! kept for long (the store's keys and values) must be copied once so that a small
//! value does not pin a large read buffer.

pub mod auth;
pub mod batch;
pub mod cluster;
pub mod error;
pub mod frame;
pub mod int;
pub mod kv;
pub mod op;
pub mod resp;

pub use cluster::{Message, Record, Refusal, Reply};
pub use error::{Error, ErrorCode};
pub use frame::{encode, encode_parts, parse, Frame, Parse, DEFAULT_MAX_PAYLOAD, MAX_HEADER};
