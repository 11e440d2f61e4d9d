//! Op numbers. Requests from clients are 10-19 (key-value) and 30-39 (the
//! manager's, and a storage node's others: STATUS, AUTH, the batches MGET and MSET);
//! replies are 20-29 and 40-49; 50-99 are reserved for traffic inside the cluster.

/// Liveness check; the reply echoes the payload.
pub const PING: u8 = 10;
/// Store a value (`KV` payload).
pub const PUT: u8 = 11;
/// Remove a key.
pub const DELETE: u8 = 12;
/// Read a key.
pub const GET: u8 = 13;
/// Ask whether a key exists.
pub const EXISTS: u8 = 14;
/// Store only if the key is absent.
pub const CREATE: u8 = 15;
/// Store only if the key is present.
pub const UPDATE: u8 = 16;
/// Add a signed delta to a decimal counter.
pub const INCR: u8 = 17;
/// List the live keys and values by (ring hash, key) from a cursor, a page at a
/// time: `CURSOR SP END SP COUNT` (see docs/protocol.md, "SCAN").
pub const SCAN: u8 = 18;

/// Reply to PING.
pub const PONG: u8 = 20;
/// Success with an empty payload.
pub const OK: u8 = 21;
/// Success carrying a value.
pub const VALUE: u8 = 22;
/// The key does not exist.
pub const NOT_FOUND: u8 = 23;
/// CREATE found the key already present.
pub const CONFLICT: u8 = 24;
/// The client's view of the ring is stale: refresh RING and retry (see docs/protocol.md).
pub const STALE: u8 = 25;
/// An error: payload `CODE SP message`.
pub const ERR: u8 = 29;

/// Ask the manager for a client id and a contact node.
pub const HELLO: u8 = 30;
/// Ask the manager for the ring.
pub const RING: u8 = 31;
/// Ask the manager for cluster status as JSON.
pub const STATUS: u8 = 32;
/// Prove a role's secret to the manager (the admin credential DROP needs): an empty
/// payload asks for a nonce (reply `CHALLENGE`); then `ROLE SP CLIENT_NONCE SP
/// PROOF` (hex; see [`super::auth`]) gets `OK`, or `ERR AUTH` and a close.
pub const AUTH: u8 = 34;
/// Read many keys at once: `KLEN SP KEY` per key; reply VALUE with one result
/// per key (see [`super::batch`]).
pub const MGET: u8 = 35;
/// Write many keys at once: `KLEN SP KEY VLEN SP VALUE` per pair; reply VALUE
/// with one result per key (see [`super::batch`]).
pub const MSET: u8 = 36;
/// Reply to HELLO: `CLIENTID SP NODEID SP HOST:PORT`.
pub const WELCOME: u8 = 40;
/// Reply to RING: the ring in the text format of docs/protocol.md.
pub const RING_REPLY: u8 = 41;
/// Reply to STATUS: JSON.
pub const STATUS_REPLY: u8 = 42;
/// Reply to an empty AUTH: the manager's nonce for this connection, in hex.
pub const CHALLENGE: u8 = 43;

/// Node -> manager (and node -> node): `PROOF SP HOST:PORT SP TOKENS [LF RING]`,
/// the third frame of the member handshake (after `MEMBER_HELLO` and
/// `MEMBER_CHALLENGE`): `PROOF` is the HMAC of the cluster secret over both nonces
/// and the address (see [`super::auth`]). With `MEMBER_HELLO`, the only internal
/// ops a connection may send before it has proven membership. The payloads of ops 50-99 are written and read by
/// [`super::cluster`].
pub const NODE_JOIN: u8 = 50;
/// Node -> manager: periodic heartbeat, payload `KEYS SP SENT [SP catching-up]`
/// (`SENT`: the node's clock, echoed in the `LEASE` answer).
pub const HEARTBEAT: u8 = 51;
/// Node -> node: a run of records (a handoff or resync chunk).
pub const MIGRATE: u8 = 52;
/// Node -> manager: `EPOCH`; every key this node must hand over for that epoch has
/// been acknowledged by its new owner.
pub const HANDOFF_DONE: u8 = 53;
/// Node -> manager: this node wants to leave (it got SIGTERM).
pub const LEAVE: u8 = 54;
/// Coordinator -> replica: store one record. Payload `HAS_BASE(u8)`, then
/// `BASE(u64 BE)` if it is 1 (the version the write was decided against), then the
/// record. Reply OK, CONFLICT with the newer version held, in decimal, or REFUSED.
pub const REPLICATE: u8 = 55;
/// Coordinator -> replica: the key's entry. Reply VALUE with one record,
/// NOT_FOUND, or REFUSED.
pub const REPL_READ: u8 = 56;
/// Coordinator -> replica: `VERSION(u64 BE)` then the key: forget the key's
/// tombstone if it is still the one at that version (every replica confirmed it
/// holds it). Reply OK.
pub const PURGE: u8 = 58;
/// Node -> node: `NODEID ROUND EPOCH`, in decimal: the sender may lack writes
/// (it restarted, was down, or was given new ranges) and asks for every key the
/// two share as of ring `EPOCH`; once they are all pushed, the receiver answers
/// with `SYNC_DONE`. Reply OK.
pub const SYNC_REQ: u8 = 59;
/// Node -> node: `NODEID ROUND`, in decimal: the sender has pushed every key the
/// `SYNC_REQ` of that round asked for. Reply OK.
pub const SYNC_DONE: u8 = 57;
/// Client -> manager: `NODEID` or `HOST:PORT`; the node hands its data over and leaves.
/// An admin op: only on a connection that passed `AUTH admin`.
pub const DROP: u8 = 33;
/// Manager -> node: the node's assigned id and the ring: `NODEID [SP catch-up] LF`
/// then the RING text.
pub const JOINED: u8 = 60;

/// Manager -> node: a new ring (RING text), pushed on every epoch change.
pub const RING_UPDATE: u8 = 61;

/// Replica -> coordinator: the replica will not let its copy count, for the
/// reason in the payload (`catching-up`, or `off-list EPOCH`; see
/// [`super::cluster::Refusal`]).
pub const REFUSED: u8 = 62;

/// Node -> manager (and node -> node), the first frame on a link: `NONCE` (hex),
/// the connecting side's nonce for the member handshake.
pub const MEMBER_HELLO: u8 = 63;
/// Manager -> node (and node -> node), the answer to `MEMBER_HELLO`:
/// `NONCE SP PROOF` (hex), the accepting side's nonce and its own proof of the
/// cluster secret over both nonces.
pub const MEMBER_CHALLENGE: u8 = 64;
/// Proposer -> replica, a conditional op's first phase: `BALLOT(u64 BE) KEY`;
/// promise to take no lower ballot for the key (see [`super::cluster::Message::Prepare`]).
pub const PREPARE: u8 = 65;
/// Proposer -> replica, a conditional op's second phase: one record whose
/// version is the ballot; hold it apart from the data until its commit.
pub const ACCEPT: u8 = 66;
/// Replica -> proposer, the answer to `PREPARE`: the replica's committed entry
/// and the proposal it accepted, if any (see [`super::cluster::Reply::Promise`]).
pub const PROMISE: u8 = 67;

/// Node -> node (anti-entropy): `END(u64 BE) EPOCH(u64 BE) ROOT(u64 BE)`: the
/// sender's digest root of the token range ending at `END` by its ring of that
/// epoch. Reply OK (the same root), `AE_LEAVES` (the receiver's leaves), or
/// REFUSED (`off-list`: not a replica of that range, or another ring).
pub const AE_DIGEST: u8 = 68;
/// Node -> node (anti-entropy): `END(u64 BE) COUNT(u16 BE) LEAF(u16 BE)*` then
/// stubs (`KLEN(u32 BE) KEY VERSION(u64 BE) LIVE(u8)`): the sender's entries under
/// those leaves of the range. Reply `AE_DIFF`, or REFUSED.
pub const AE_KEYS: u8 = 69;
/// Reply to `AE_DIGEST`: the receiver's leaves of the range, `u64 BE` each.
pub const AE_LEAVES: u8 = 70;
/// Reply to `AE_KEYS`: `COUNT(u32 BE)` records the receiver holds newer (or the
/// sender lacks), then the keys it wants the sender's entries of
/// (`KLEN(u32 BE) KEY` each).
pub const AE_DIFF: u8 = 71;
/// Coordinator -> replica: several keys' entries, one `REPL_READ` each:
/// `COUNT(u32 BE)` then `KLEN(u32 BE) KEY` per key. Reply `COPIES`.
pub const REPL_READS: u8 = 72;
/// Reply to `REPL_READS`: `COUNT(u32 BE)` then, per key in order, the
/// `REPL_READ` answer as `OP(u8) LEN(u32 BE) PAYLOAD` (an empty `REPL_READ`:
/// the value did not fit, ask for it alone).
pub const COPIES: u8 = 73;

/// Manager -> node, the answer to each `HEARTBEAT` of a member (and to its
/// `NODE_JOIN`, after `JOINED`): `SENT SP LEASE_MS`, the lease the node serves
/// data under (see [`super::cluster::Message::Lease`]).
pub const LEASE: u8 = 74;

/// Whether `op` is in the range reserved for cluster-internal traffic.
pub fn is_internal(op: u8) -> bool {
    (50..=99).contains(&op)
}

/// A short upper-case name for logs and the CLI.
pub fn name(op: u8) -> &'static str {
    match op {
        PING => "PING",
        PUT => "PUT",
        DELETE => "DELETE",
        GET => "GET",
        EXISTS => "EXISTS",
        CREATE => "CREATE",
        UPDATE => "UPDATE",
        INCR => "INCR",
        SCAN => "SCAN",
        PONG => "PONG",
        OK => "OK",
        VALUE => "VALUE",
        NOT_FOUND => "NOT_FOUND",
        CONFLICT => "CONFLICT",
        STALE => "STALE",
        ERR => "ERR",
        HELLO => "HELLO",
        RING => "RING",
        STATUS => "STATUS",
        WELCOME => "WELCOME",
        RING_REPLY => "RING_REPLY",
        STATUS_REPLY => "STATUS_REPLY",
        AUTH => "AUTH",
        MGET => "MGET",
        MSET => "MSET",
        CHALLENGE => "CHALLENGE",
        NODE_JOIN => "NODE_JOIN",
        HEARTBEAT => "HEARTBEAT",
        LEASE => "LEASE",
        JOINED => "JOINED",
        MIGRATE => "MIGRATE",
        HANDOFF_DONE => "HANDOFF_DONE",
        LEAVE => "LEAVE",
        REPLICATE => "REPLICATE",
        REPL_READ => "REPL_READ",
        PURGE => "PURGE",
        SYNC_REQ => "SYNC_REQ",
        SYNC_DONE => "SYNC_DONE",
        DROP => "DROP",
        RING_UPDATE => "RING_UPDATE",
        REFUSED => "REFUSED",
        MEMBER_HELLO => "MEMBER_HELLO",
        AE_DIGEST => "AE_DIGEST",
        AE_KEYS => "AE_KEYS",
        AE_LEAVES => "AE_LEAVES",
        AE_DIFF => "AE_DIFF",
        REPL_READS => "REPL_READS",
        COPIES => "COPIES",
        MEMBER_CHALLENGE => "MEMBER_CHALLENGE",
        PREPARE => "PREPARE",
        ACCEPT => "ACCEPT",
        PROMISE => "PROMISE",
        _ => "UNKNOWN",
    }
}
