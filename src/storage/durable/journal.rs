//! What a node asks of its data directory during a step: the changes to log,
//! a snapshot, its identity to save. The node only records the requests here;
//! [`super::DurableNode`] performs them after the step, outside the state
//! machine, and holds the outputs that depend on them until their commit.

use super::super::engine::Entry;
use super::super::wal::{Change, Record};
use crate::ring::Ring;
use bytes::Bytes;

/// The durability requests of a node with a data directory, in the order the
/// node made them.
#[derive(Debug, Default)]
pub struct Journal {
    /// Changes to append to the log, in the order the engine applied them.
    changes: Vec<Change>,
    /// A snapshot is wanted at the turn end (keys were dropped).
    snapshot: bool,
    /// The identity to save at the turn end (the last ring installed).
    identity: Option<(u32, Ring)>,
    /// The identity the previous run saved, until the node installs it.
    restored: Option<(u32, Ring)>,
}

/// What a step asked for, taken out of the [`Journal`].
#[derive(Debug, Default)]
pub struct Requests {
    /// Changes to log, in order.
    pub changes: Vec<Change>,
    /// Whether a snapshot is wanted.
    pub snapshot: bool,
    /// The identity to save, if the node installed a ring.
    pub identity: Option<(u32, Ring)>,
}

impl Journal {
    /// A journal for a node whose previous run saved `restored`.
    pub fn new(restored: Option<(u32, Ring)>) -> Journal {
        Journal {
            restored,
            ..Journal::default()
        }
    }

    /// Asks to log a write the engine just stored.
    pub fn log(&mut self, key: &[u8], version: u64, value: Option<&[u8]>) {
        self.changes.push(Change::Put(Record {
            key: Bytes::copy_from_slice(key),
            value: value.map(Bytes::copy_from_slice),
            version,
        }));
    }

    /// Asks to log that the engine forgot `key`, the tombstone at `version`.
    pub fn log_purge(&mut self, key: &[u8], version: u64) {
        self.changes.push(Change::Purge {
            key: Bytes::copy_from_slice(key),
            version,
        });
    }

    /// Asks to log that the engine undid the write of `key` at `version`,
    /// putting `prev` back (`None`: no entry).
    pub fn log_restore(&mut self, key: &[u8], version: u64, prev: Option<&Entry>) {
        self.changes.push(Change::Restore {
            key: Bytes::copy_from_slice(key),
            version,
            prev: prev.map(|e| (e.version, e.value.clone())),
        });
    }

    /// Asks to log `key`'s Paxos acceptor state: the ballot it promised and
    /// the proposal it accepted, if any (its ballot and value).
    pub fn log_ballot(
        &mut self,
        key: &Bytes,
        promised: u64,
        accepted: Option<(u64, Option<Bytes>)>,
    ) {
        self.changes.push(Change::Ballot {
            key: key.clone(),
            promised,
            accepted,
        });
    }

    /// Asks for a snapshot at the turn end (the node dropped keys).
    pub fn want_snapshot(&mut self) {
        self.snapshot = true;
    }

    /// Asks to save the node's id and ring at the turn end.
    pub fn save_identity(&mut self, node_id: u32, ring: &Ring) {
        self.identity = Some((node_id, ring.clone()));
    }

    /// The node id and ring the previous run saved, once (the node installs
    /// them on its first step).
    pub fn take_identity(&mut self) -> Option<(u32, Ring)> {
        self.restored.take()
    }

    /// Takes what was asked since the last call.
    pub fn take(&mut self) -> Requests {
        Requests {
            changes: std::mem::take(&mut self.changes),
            snapshot: std::mem::take(&mut self.snapshot),
            identity: self.identity.take(),
        }
    }
}
