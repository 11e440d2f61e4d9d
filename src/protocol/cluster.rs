//! Typed messages between gtstore processes: the manager's traffic with the
//! storage nodes, the nodes' traffic with each other, and the operator's DROP.
//!
//! Every op of 50-99 (and DROP, 33) has one variant of [`Message`]; a replica's
//! answers to the coordinator's requests are a [`Reply`], and a replica that will
//! not let its copy count says why with a [`Refusal`]. Each type has
//! `encode(&self) -> Frame` and `decode(&Frame) -> Result<_, Error>`: the one place
//! where these payloads are written and read. Decoding is strict (a missing,
//! extra or malformed field is an [`Error`] with a wire code, `BADOP` for a
//! malformed message and `BADKEY` for a bad key) and never panics, whatever the
//! bytes; keys and values stay views of the frame's payload (no copy).
//! `encode` leaves the header's `CLIENTID` and `NODEID` at 0: the sender fills
//! them in (the mesh's tag, the sender's id).
//!
//! The payloads, written out in docs/protocol.md:
//! - text where a person may read them in a log or type them into netcat: the
//!   manager's messages (`MEMBER_HELLO`, `MEMBER_CHALLENGE`, `NODE_JOIN`, `JOINED`, `HEARTBEAT`, `LEASE`, `HANDOFF_DONE`,
//!   `RING_UPDATE`, `DROP`) and the catch-up rounds (`SYNC_REQ`, `SYNC_DONE`);
//! - binary where they carry data: [`Record`]s (`MIGRATE`, `REPLICATE`, a
//!   `REPL_READ` hit, `ACCEPT`, `PROMISE`), and the versions of `REPLICATE`,
//!   `PURGE` and `PREPARE`.
//!
//! A record (`KLEN(u32 BE) KEY VERSION(u64 BE) FLAG(u8) [VLEN(u32 BE) VALUE]`,
//! FLAG 1 with a value, 0 for a tombstone) is written by [`put_record`] and read by
//! [`parse_records`]; a handoff chunk is a run of them.
//!
//! This module sits above [`crate::ring`] (its messages carry rings); the rest of
//! `protocol` does not depend on the ring.
//!
//! Caveats: `encode` trusts its values: an address with a space or a line
//! feed, or a key or value over 4 GiB, does not survive the trip. The node's flags
//! and the engine rule them out.

use super::auth::{self, Nonce, PROOF_LEN};
use super::error::{Error, ErrorCode};
use super::frame::{parse_decimal, Frame};
use super::kv::check_key;
use super::op;
use crate::ring::Ring;
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

/// A node named by the operator: its id, or its `HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeRef {
    /// A node id.
    Id(u32),
    /// An advertised address.
    Addr(String),
}

/// A message between cluster members (and the operator's DROP), by op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// 63, node -> manager and node -> node, the first frame on a link: the
    /// connecting side's nonce for the member handshake. `NONCE` (hex).
    MemberHello {
        /// The connecting side's nonce.
        nonce: Nonce,
    },
    /// 64, the accepting side's answer to `MEMBER_HELLO`: its nonce and its proof
    /// of the cluster secret ([`auth::ROLE_ACCEPT`]). `NONCE SP PROOF` (hex).
    MemberChallenge {
        /// The accepting side's nonce.
        nonce: Nonce,
        /// Its proof over both nonces.
        proof: [u8; PROOF_LEN],
    },
    /// 50, node -> manager and node -> node, after `MEMBER_CHALLENGE`: the
    /// membership proof. `PROOF SP HOST:PORT SP TOKENS [SP SENT] [LF RING]`,
    /// `PROOF` in hex ([`auth::member_role`] of `HOST:PORT`).
    NodeJoin {
        /// HMAC of the cluster secret over both nonces and the address.
        proof: [u8; PROOF_LEN],
        /// Where the node is reached.
        addr: String,
        /// How many tokens it asks for.
        tokens: u32,
        /// To the manager: the node's clock when it sent this (ms), echoed in
        /// the `LEASE` that follows `JOINED`. Peers ignore it.
        sent: Option<u64>,
        /// To the manager: the last ring the node installed, if it lists the node
        /// (a restarted manager recovers the membership from these).
        offer: Option<Ring>,
    },
    /// 60, manager -> node: registered. `NODEID [SP catch-up] LF RING`.
    Joined {
        /// The node's id.
        node_id: u32,
        /// The manager had marked it down since it last registered: it may have
        /// missed writes and must catch up.
        catch_up: bool,
        /// The current ring.
        ring: Ring,
    },
    /// 51, node -> manager, periodic: `KEYS SP SENT [SP catching-up]`.
    Heartbeat {
        /// Keys the node holds.
        keys: u64,
        /// The node's clock when it sent this (ms), echoed in the `LEASE`
        /// the manager answers with.
        sent: u64,
        /// The node is catching up on writes it may have missed.
        catching_up: bool,
    },
    /// 74, manager -> node, the answer to each `HEARTBEAT` (and to
    /// `NODE_JOIN`, after `JOINED`) of a member on its current link: `SENT SP
    /// LEASE_MS`. The node may serve data until its clock reads `SENT +
    /// LEASE_MS` (see the storage node's membership).
    Lease {
        /// The `SENT` of the message answered, the node's own clock.
        sent: u64,
        /// The lease's length from `sent`, in ms.
        lease_ms: u64,
    },
    /// 53, node -> manager: `EPOCH`; everything the node had to hand over for that
    /// epoch is acknowledged.
    HandoffDone {
        /// The ring epoch the handoff served.
        epoch: u64,
    },
    /// 54, node -> manager, empty: the node wants to leave.
    Leave,
    /// 61, manager -> node: the RING text, on every epoch change.
    RingUpdate {
        /// The new ring.
        ring: Ring,
    },
    /// 33, operator -> manager: `NODEID` or `HOST:PORT`; that node leaves.
    Drop {
        /// The node to drop.
        node: NodeRef,
    },
    /// 52, node -> node: a run of records to apply by version.
    Migrate {
        /// The records, in the order sent.
        records: Vec<Record>,
    },
    /// 55, coordinator -> replica: store one record, conditionally.
    /// `FLAGS(u8) [BASE(u64 BE)] [FENCE] RECORD`: FLAGS bit 0 says a BASE
    /// follows, bit 1 a [`Fence`] (a lead's round; a move's copy has none).
    Replicate {
        /// The version the write was decided against: the replica refuses it
        /// (`CONFLICT`) if it holds anything newer. `None`: unconditional.
        base: Option<u64>,
        /// The lead's fence (`REFUSED stale-ring` if it is stale).
        fence: Option<Fence>,
        /// The entry to store.
        record: Record,
    },
    /// 65, proposer -> replica, the first phase of a conditional op:
    /// `BALLOT(u64 BE) VIEW KEY` (see [`View`]). The replica promises to take
    /// no ballot at or below this one for the key and answers
    /// [`Reply::Promise`], or refuses with [`Reply::Conflict`] naming a ballot
    /// or version at least as high, or with [`Refusal::StaleRing`].
    Prepare {
        /// The ballot (a version from the proposer's clock).
        ballot: u64,
        /// The proposer's ring epoch and the key's lists by it.
        view: View,
        /// The key.
        key: Bytes,
    },
    /// 66, proposer -> replica, the second phase: `HAS_VIEW(u8) [VIEW]
    /// RECORD`, whose version is the ballot. The replica holds it apart from
    /// its data (no read sees it) unless it promised a higher ballot or holds
    /// a version at least as high (`CONFLICT`), or the view is stale
    /// ([`Refusal::StaleRing`]). Its commit is a `REPLICATE` of the same
    /// record. A move's copy of an accepted proposal carries no view.
    Accept {
        /// The proposal: the key, the ballot as its version, the value.
        record: Record,
        /// The proposer's view (`None`: a move's copy, not a round).
        view: Option<View>,
    },
    /// 56, coordinator -> replica: the key's entry. `FENCE KEY`.
    ReplRead {
        /// The lead's fence (`REFUSED stale-ring` if it is stale).
        fence: Fence,
        /// The key.
        key: Bytes,
    },
    /// 72, coordinator -> replica: several `REPL_READ`s in one message (the
    /// reads a lead asks this replica for in one loop turn). `EPOCH(u64 BE)
    /// COUNT(u32 BE)` then `MARK(u64 BE) KLEN(u32 BE) KEY` each: the fence of
    /// each key is the epoch (the oldest of the asks') and its mark. Answered
    /// by one [`Reply::Copies`].
    ReplReads {
        /// The epoch of the oldest ring the asks were made by.
        epoch: u64,
        /// The keys' marks and the keys, in the order their answers come back.
        keys: Vec<(u64, Bytes)>,
    },
    /// 58, coordinator -> replica: `VERSION(u64 BE) KEY`; forget the key if its
    /// entry is still the tombstone at that version.
    Purge {
        /// The tombstone's version.
        version: u64,
        /// The key.
        key: Bytes,
    },
    /// 59, node -> node: `NODEID SP ROUND SP EPOCH`; the sender is catching up and
    /// asks for every key the two share as of ring `EPOCH`.
    SyncReq {
        /// The asking node.
        node_id: u32,
        /// Its catch-up round, echoed in `SYNC_DONE`.
        round: u64,
        /// The ring epoch the keys are chosen by.
        epoch: u64,
    },
    /// 57, node -> node: `NODEID SP ROUND`; the sender pushed every key that
    /// round asked for.
    SyncDone {
        /// The node that pushed.
        node_id: u32,
        /// The round answered.
        round: u64,
    },
    /// 65, node -> node (anti-entropy): the sender's digest root of a token
    /// range. `END(u64 BE) EPOCH(u64 BE) ROOT(u64 BE)`.
    AeDigest {
        /// The range's last token.
        end: u64,
        /// The epoch of the sender's ring (the receiver's must cut the same range).
        epoch: u64,
        /// The XOR of the sender's leaves of the range.
        root: u64,
    },
    /// 66, node -> node (anti-entropy): the sender's entries under some leaves of
    /// a range. `END(u64 BE) COUNT(u16 BE) LEAF(u16 BE)*` then [`Stub`]s.
    AeKeys {
        /// The range's last token.
        end: u64,
        /// The leaves listed.
        leaves: Vec<u16>,
        /// Every entry the sender holds under them.
        stubs: Vec<Stub>,
    },
}

/// An entry named by its key and version, without its value: what anti-entropy
/// lists. `KLEN(u32 BE) KEY VERSION(u64 BE) LIVE(u8: 0 or 1)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stub {
    /// The key.
    pub key: Bytes,
    /// Its version.
    pub version: u64,
    /// Whether it has a value (false: a tombstone).
    pub live: bool,
}

impl Message {
    /// The op this message travels as.
    pub fn op(&self) -> u8 {
        match self {
            Message::NodeJoin { .. } => op::NODE_JOIN,
            Message::MemberHello { .. } => op::MEMBER_HELLO,
            Message::MemberChallenge { .. } => op::MEMBER_CHALLENGE,
            Message::Joined { .. } => op::JOINED,
            Message::Heartbeat { .. } => op::HEARTBEAT,
            Message::Lease { .. } => op::LEASE,
            Message::HandoffDone { .. } => op::HANDOFF_DONE,
            Message::Leave => op::LEAVE,
            Message::RingUpdate { .. } => op::RING_UPDATE,
            Message::Drop { .. } => op::DROP,
            Message::Migrate { .. } => op::MIGRATE,
            Message::Replicate { .. } => op::REPLICATE,
            Message::ReplRead { .. } => op::REPL_READ,
            Message::ReplReads { .. } => op::REPL_READS,
            Message::Prepare { .. } => op::PREPARE,
            Message::Accept { .. } => op::ACCEPT,
            Message::Purge { .. } => op::PURGE,
            Message::SyncReq { .. } => op::SYNC_REQ,
            Message::SyncDone { .. } => op::SYNC_DONE,
            Message::AeDigest { .. } => op::AE_DIGEST,
            Message::AeKeys { .. } => op::AE_KEYS,
        }
    }

    /// Whether `op` is one of this enum's ops.
    pub fn is_message_op(op: u8) -> bool {
        matches!(
            op,
            op::NODE_JOIN
                | op::MEMBER_HELLO
                | op::MEMBER_CHALLENGE
                | op::JOINED
                | op::HEARTBEAT
                | op::LEASE
                | op::HANDOFF_DONE
                | op::LEAVE
                | op::RING_UPDATE
                | op::DROP
                | op::MIGRATE
                | op::REPLICATE
                | op::REPL_READ
                | op::REPL_READS
                | op::PREPARE
                | op::ACCEPT
                | op::PURGE
                | op::SYNC_REQ
                | op::SYNC_DONE
                | op::AE_DIGEST
                | op::AE_KEYS
        )
    }

    /// The frame, with `CLIENTID` and `NODEID` 0.
    pub fn encode(&self) -> Frame {
        Frame::new(self.op(), 0, 0, self.payload())
    }

    fn payload(&self) -> Bytes {
        match self {
            Message::MemberHello { nonce } => Bytes::from(auth::to_hex(nonce)),
            Message::MemberChallenge { nonce, proof } => {
                Bytes::from(format!("{} {}", auth::to_hex(nonce), auth::to_hex(proof)))
            }
            Message::NodeJoin {
                proof,
                addr,
                tokens,
                sent,
                offer,
            } => {
                let mut text = format!("{} {addr} {tokens}", auth::to_hex(proof));
                if let Some(sent) = sent {
                    text.push_str(&format!(" {sent}"));
                }
                if let Some(ring) = offer {
                    text.push('\n');
                    text.push_str(&ring.encode());
                }
                Bytes::from(text)
            }
            Message::Joined {
                node_id,
                catch_up,
                ring,
            } => {
                let flag = if *catch_up { " catch-up" } else { "" };
                Bytes::from(format!("{node_id}{flag}\n{}", ring.encode()))
            }
            Message::Heartbeat {
                keys,
                sent,
                catching_up,
            } => {
                let flag = if *catching_up { " catching-up" } else { "" };
                Bytes::from(format!("{keys} {sent}{flag}"))
            }
            Message::Lease { sent, lease_ms } => Bytes::from(format!("{sent} {lease_ms}")),
            Message::HandoffDone { epoch } => Bytes::from(epoch.to_string()),
            Message::Leave => Bytes::new(),
            Message::RingUpdate { ring } => Bytes::from(ring.encode()),
            Message::Drop { node } => match node {
                NodeRef::Id(id) => Bytes::from(id.to_string()),
                NodeRef::Addr(addr) => Bytes::from(addr.clone()),
            },
            Message::Migrate { records } => {
                let mut buf = BytesMut::new();
                for r in records {
                    put_record(&mut buf, &r.key, r.version, r.value.as_deref());
                }
                buf.freeze()
            }
            Message::Replicate {
                base,
                fence,
                record,
            } => fence::replicate_payload(*base, *fence, record),
            Message::ReplRead { fence, key } => reads::read_payload(*fence, key),
            Message::ReplReads { epoch, keys } => {
                reads::keys_payload(*epoch, keys.iter().map(|(m, k)| (*m, &k[..])))
            }
            Message::Accept { record, view } => paxos::accept_payload(record, view.as_ref()),
            Message::Prepare { ballot, view, key } => paxos::prepare_payload(*ballot, view, key),
            Message::Purge { version, key } => {
                let mut buf = BytesMut::with_capacity(8 + key.len());
                buf.put_u64(*version);
                buf.put_slice(key);
                buf.freeze()
            }
            Message::SyncReq {
                node_id,
                round,
                epoch,
            } => Bytes::from(format!("{node_id} {round} {epoch}")),
            Message::SyncDone { node_id, round } => Bytes::from(format!("{node_id} {round}")),
            Message::AeDigest { end, epoch, root } => ae::digest_payload(*end, *epoch, *root),
            Message::AeKeys { end, leaves, stubs } => ae::keys_payload(*end, leaves, stubs),
        }
    }

    /// Reads a message from `frame`; an op outside this enum or a malformed
    /// payload is an error.
    pub fn decode(frame: &Frame) -> Result<Message, Error> {
        let p = &frame.payload;
        Ok(match frame.op {
            op::NODE_JOIN => decode_join(p)?,
            op::MEMBER_HELLO => Message::MemberHello {
                nonce: auth::from_hex(p).ok_or_else(|| malformed("MEMBER_HELLO (NONCE)", ""))?,
            },
            op::MEMBER_CHALLENGE => {
                let what = "MEMBER_CHALLENGE (NONCE PROOF)";
                let [nonce, proof] = words::<2>(p).ok_or_else(|| malformed(what, ""))?;
                Message::MemberChallenge {
                    nonce: auth::from_hex(nonce).ok_or_else(|| malformed(what, "bad NONCE"))?,
                    proof: auth::from_hex(proof).ok_or_else(|| malformed(what, "bad PROOF"))?,
                }
            }
            op::JOINED => decode_joined(p)?,
            op::HEARTBEAT => {
                let what = "HEARTBEAT (KEYS SENT [catching-up])";
                let ([keys, sent], catching_up) = match words::<3>(p) {
                    Some([keys, sent, b"catching-up"]) => ([keys, sent], true),
                    _ => (words::<2>(p).ok_or_else(|| malformed(what, ""))?, false),
                };
                Message::Heartbeat {
                    keys: decimal(keys, u64::MAX, what)?,
                    sent: decimal(sent, u64::MAX, what)?,
                    catching_up,
                }
            }
            op::LEASE => {
                let what = "LEASE (SENT LEASE_MS)";
                let [sent, lease_ms] = words::<2>(p).ok_or_else(|| malformed(what, ""))?;
                Message::Lease {
                    sent: decimal(sent, u64::MAX, what)?,
                    lease_ms: decimal(lease_ms, u64::MAX, what)?,
                }
            }
            op::HANDOFF_DONE => Message::HandoffDone {
                epoch: decimal(p, u64::MAX, "HANDOFF_DONE (EPOCH)")?,
            },
            op::LEAVE if p.is_empty() => Message::Leave,
            op::LEAVE => return Err(malformed("LEAVE", "its payload must be empty")),
            op::RING_UPDATE => Message::RingUpdate {
                ring: Ring::decode(p).map_err(|e| bad_ring("RING_UPDATE", e))?,
            },
            op::DROP => decode_drop(p)?,
            op::MIGRATE => Message::Migrate {
                records: parse_records(p)?,
            },
            op::REPLICATE => fence::decode_replicate(p)?,
            op::REPL_READ => fence::decode_repl_read(p)?,
            op::REPL_READS => reads::decode_keys(p)?,
            op::PURGE => {
                if p.len() < 8 {
                    return Err(malformed("PURGE", "shorter than its version"));
                }
                let key = p.slice(8..);
                check_key(&key)?;
                let version = be_u64(&p[..8]);
                Message::Purge { version, key }
            }
            op::PREPARE => {
                let (ballot, view, key) = paxos::decode_prepare(p)?;
                Message::Prepare { ballot, view, key }
            }
            op::ACCEPT => {
                let (record, view) = paxos::decode_accept(p)?;
                Message::Accept { record, view }
            }
            op::SYNC_REQ => {
                let what = "SYNC_REQ (NODEID ROUND EPOCH)";
                let [node_id, round, epoch] = words::<3>(p).ok_or_else(|| malformed(what, ""))?;
                Message::SyncReq {
                    node_id: decimal(node_id, u32::MAX as u64, what)? as u32,
                    round: decimal(round, u64::MAX, what)?,
                    epoch: decimal(epoch, u64::MAX, what)?,
                }
            }
            op::SYNC_DONE => {
                let what = "SYNC_DONE (NODEID ROUND)";
                let [node_id, round] = words::<2>(p).ok_or_else(|| malformed(what, ""))?;
                Message::SyncDone {
                    node_id: decimal(node_id, u32::MAX as u64, what)? as u32,
                    round: decimal(round, u64::MAX, what)?,
                }
            }
            op::AE_DIGEST => ae::decode_digest(p)?,
            op::AE_KEYS => ae::decode_keys(p)?,
            other => {
                return Err(Error::new(
                    ErrorCode::BadOp,
                    format!("op {other} is not a cluster message"),
                ))
            }
        })
    }
}

/// A replica's answer to `REPLICATE`, `REPL_READ`, `MIGRATE`, `PURGE`,
/// `SYNC_REQ`, `SYNC_DONE`, `AE_DIGEST` and `AE_KEYS` (and the manager's to `LEAVE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// 21 OK, empty: done.
    Ok,
    /// 22 VALUE, one record: the replica's entry for a `REPL_READ`.
    Found(Record),
    /// 23 NOT_FOUND, empty: the replica has no entry for the key.
    NotFound,
    /// 24 CONFLICT, `VERSION` in decimal: a `REPLICATE` refused because the
    /// replica holds this newer version.
    Conflict {
        /// The newer version held.
        version: u64,
    },
    /// 67 PROMISE, the answer to `PREPARE`: `HAS(u8) [RECORD] HAS(u8)
    /// [RECORD]`, the replica's committed entry of the key (if it has one) and
    /// the proposal it accepted for the key and has not seen committed (if any).
    Promise {
        /// The replica's entry of the key.
        committed: Option<Record>,
        /// The accepted proposal (its version is its ballot).
        accepted: Option<Record>,
    },
    /// 62 REFUSED: the replica will not let its copy count (see [`Refusal`]).
    Refused(Refusal),
    /// 29 ERR: anything else that went wrong.
    Failed(Error),
    /// 67 AE_LEAVES: the replica's leaves of the range an `AE_DIGEST` named
    /// (`u64 BE` each; at most [`ae::MAX_LEAVES`]).
    Leaves(Vec<u64>),
    /// 73 COPIES, the answer to `REPL_READS`: one `REPL_READ` answer
    /// (`VALUE`, `NOT_FOUND`, `REFUSED` or `ERR`, with `CLIENTID` and `NODEID`
    /// 0) per key asked, in order, or an empty `REPL_READ`: the value did not
    /// fit in [`COPIES_BUDGET`], ask for it alone. `COUNT(u32 BE)` then `OP(u8) LEN(u32 BE)
    /// PAYLOAD` each.
    Copies(Vec<Frame>),
    /// 68 AE_DIFF, the answer to `AE_KEYS`: `COUNT(u32 BE)` records the replica
    /// holds newer than the sender (or the sender lacks), then the keys whose
    /// entries it wants from the sender (`KLEN(u32 BE) KEY` each).
    Diff {
        /// The replica's newer entries.
        records: Vec<Record>,
        /// The keys it wants.
        wants: Vec<Bytes>,
    },
}

impl Reply {
    /// The frame, with `CLIENTID` and `NODEID` 0.
    pub fn encode(&self) -> Frame {
        match self {
            Reply::Ok => Frame::new(op::OK, 0, 0, Bytes::new()),
            Reply::Found(r) => {
                let mut buf = BytesMut::new();
                put_record(&mut buf, &r.key, r.version, r.value.as_deref());
                Frame::new(op::VALUE, 0, 0, buf.freeze())
            }
            Reply::NotFound => Frame::new(op::NOT_FOUND, 0, 0, Bytes::new()),
            Reply::Conflict { version } => {
                Frame::new(op::CONFLICT, 0, 0, Bytes::from(version.to_string()))
            }
            Reply::Promise {
                committed,
                accepted,
            } => Frame::new(
                op::PROMISE,
                0,
                0,
                paxos::promise_payload(committed, accepted),
            ),
            Reply::Refused(r) => r.encode(),
            Reply::Failed(e) => Frame::error(0, 0, e),
            Reply::Leaves(leaves) => Frame::new(op::AE_LEAVES, 0, 0, ae::leaves_payload(leaves)),
            Reply::Copies(answers) => Frame::new(op::COPIES, 0, 0, reads::copies_payload(answers)),
            Reply::Diff { records, wants } => {
                Frame::new(op::AE_DIFF, 0, 0, ae::diff_payload(records, wants))
            }
        }
    }

    /// Reads a replica's reply; a reply op it does not expect, or a malformed
    /// payload, is an error.
    pub fn decode(frame: &Frame) -> Result<Reply, Error> {
        let p = &frame.payload;
        Ok(match frame.op {
            op::OK if p.is_empty() => Reply::Ok,
            op::VALUE => Reply::Found(parse_one_record(p, 0, "VALUE")?),
            op::NOT_FOUND if p.is_empty() => Reply::NotFound,
            op::CONFLICT => Reply::Conflict {
                version: decimal(p, u64::MAX, "CONFLICT (VERSION)")?,
            },
            op::PROMISE => paxos::decode_promise(p)?,
            op::REFUSED => Reply::Refused(Refusal::decode(frame)?),
            op::ERR => Reply::Failed(Error::from_payload(p)),
            op::AE_LEAVES => Reply::Leaves(ae::decode_leaves(p)?),
            op::COPIES => reads::decode_copies(p)?,
            op::AE_DIFF => ae::decode_diff(p)?,
            op::OK | op::NOT_FOUND => {
                return Err(malformed(op::name(frame.op), "its payload must be empty"))
            }
            other => {
                return Err(Error::new(
                    ErrorCode::BadOp,
                    format!("op {other} is not a replica's reply"),
                ))
            }
        })
    }
}

/// Why a replica will not let its copy count toward a quorum. Sent as op 62
/// REFUSED, payload `REASON [SP EPOCH]`; the coordinator retries or asks others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `catching-up`: the replica is catching up on the key and its copy may
    /// lack writes.
    CatchingUp,
    /// `off-list EPOCH`: by its ring of that epoch the replica is on neither the
    /// serving nor the settled preference list of the key.
    OffList {
        /// The epoch of the replica's ring.
        epoch: u64,
    },
    /// `stale-ring EPOCH`: to a Paxos `PREPARE` or `ACCEPT` whose [`View`] is
    /// of an older ring than the replica's, which gives the key other lists.
    StaleRing {
        /// The epoch of the replica's ring.
        epoch: u64,
    },
}

impl Refusal {
    /// The frame, with `CLIENTID` and `NODEID` 0.
    pub fn encode(&self) -> Frame {
        let payload = match self {
            Refusal::CatchingUp => "catching-up".to_string(),
            Refusal::OffList { epoch } => format!("off-list {epoch}"),
            Refusal::StaleRing { epoch } => format!("stale-ring {epoch}"),
        };
        Frame::new(op::REFUSED, 0, 0, payload)
    }

    /// Reads a `REFUSED` frame.
    pub fn decode(frame: &Frame) -> Result<Refusal, Error> {
        let what = "REFUSED (catching-up, off-list EPOCH or stale-ring EPOCH)";
        if frame.op != op::REFUSED {
            return Err(Error::new(
                ErrorCode::BadOp,
                format!("op {} is not REFUSED", frame.op),
            ));
        }
        let p = &frame.payload[..];
        match words::<2>(p) {
            _ if p == b"catching-up" => Ok(Refusal::CatchingUp),
            Some([b"off-list", epoch]) => Ok(Refusal::OffList {
                epoch: decimal(epoch, u64::MAX, what)?,
            }),
            Some([b"stale-ring", epoch]) => Ok(Refusal::StaleRing {
                epoch: decimal(epoch, u64::MAX, what)?,
            }),
            _ => Err(malformed(what, "unknown reason")),
        }
    }

    /// The error a coordinator reports when it gives up because of this refusal.
    pub fn to_error(self) -> Error {
        Error::new(ErrorCode::Unavailable, self.to_string())
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::CatchingUp => {
                f.write_str("the replica is catching up: its copy may lack writes")
            }
            Refusal::OffList { epoch } => write!(
                f,
                "the replica is not on the key's preference lists (its ring epoch {epoch})"
            ),
            Refusal::StaleRing { epoch } => write!(
                f,
                "the replica's ring (epoch {epoch}) gives the key other lists than the proposer's"
            ),
        }
    }
}

fn malformed(what: &str, why: &str) -> Error {
    let message = if why.is_empty() {
        format!("malformed {what}")
    } else {
        format!("malformed {what}: {why}")
    };
    Error::new(ErrorCode::BadOp, message)
}

fn bad_ring(what: &str, e: Error) -> Error {
    Error::new(
        ErrorCode::BadOp,
        format!("malformed ring in {what}: {}", e.message),
    )
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Exactly `N` words separated by single spaces.
fn words<const N: usize>(p: &[u8]) -> Option<[&[u8]; N]> {
    let mut out: [&[u8]; N] = [&[]; N];
    let mut it = p.split(|&b| b == b' ');
    for slot in out.iter_mut() {
        *slot = it.next()?;
    }
    it.next().is_none().then_some(out)
}

fn decimal(word: &[u8], max: u64, what: &str) -> Result<u64, Error> {
    parse_decimal(word, max).ok_or_else(|| malformed(what, "expected a decimal number"))
}

/// A non-empty UTF-8 word.
fn text(word: &[u8], what: &str) -> Result<String, Error> {
    std::str::from_utf8(word)
        .ok()
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or_else(|| malformed(what, "expected a non-empty UTF-8 word"))
}

pub mod ae;
mod reads;
pub use reads::{repl_reads, CopiesWriter, COPIES_BUDGET, REPL_READS_BUDGET};
mod membership;
use membership::{decode_drop, decode_join, decode_joined};
mod paxos;
pub use paxos::View;
mod fence;
pub use fence::{lists_mark, Fence, FENCE_LEN};
mod record;
use record::{parse_one_record, parse_record};
pub use record::{parse_records, put_record, record_len, Record};
#[cfg(test)]
mod tests;
