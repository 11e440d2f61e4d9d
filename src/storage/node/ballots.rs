//! The Paxos acceptor's state on disk, for a node with a data directory.
//!
//! Every promise and accepted proposal of the acceptor
//! ([`super::replication::paxos`]) is logged, at the end of the step that made
//! it, as one [`Change::Ballot`] record holding the key's whole slot (its
//! promise and accepted proposal): the durable layer's hold rule then keeps
//! the step's `PROMISE` or `OK` reply back until that record is committed, so
//! no proposer counts on a promise or an acceptance a crash could take back. A
//! snapshot carries the slots alive at that moment, since it replaces the log
//! that held them. On start the node puts back each key's last slot, except
//! those a committed version covers (the commit ended them) and those older
//! than the ballot lifetime (dropped at its first step).
//!
//! Bounded as the acceptor is: at most `MAX_SLOTS` slots, each at most
//! `BALLOT_TTL_MS` old, so a snapshot's ballots are bounded too; the log holds
//! one record per promise and per acceptance until the next snapshot.

use super::StorageNode;
use crate::protocol::cluster::Record;
use crate::storage::wal::Change;

/// A slot's accepted proposal as the log keeps it: its ballot and value.
fn entry(r: Option<Record>) -> Option<(u64, Option<bytes::Bytes>)> {
    r.map(|r| (r.version, r.value))
}

impl StorageNode {
    /// Records in the journal every acceptor slot this step changed.
    pub(super) fn log_ballots(&mut self) {
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        for (key, promised, accepted) in self.rounds.acceptor.take_changed() {
            journal.log_ballot(&key, promised, entry(accepted));
        }
    }

    /// Puts back the acceptor state a data directory's log kept (in log
    /// order), after the engine was replayed; from then on every change to it
    /// is logged.
    pub fn restore_ballots(&mut self, ballots: Vec<Change>) {
        for c in ballots {
            let Change::Ballot {
                key,
                promised,
                accepted,
            } = c
            else {
                continue;
            };
            let accepted = accepted.map(|(version, value)| Record {
                key: key.clone(),
                version,
                value,
            });
            let stored = self.engine.version_hashed(crate::ring::hash64(&key), &key);
            (self.rounds.acceptor).restore((key, promised, accepted), stored);
        }
        self.rounds.acceptor.log_changes();
    }

    /// The acceptor's slots, for a snapshot of the log.
    pub fn ballot_states(&self) -> Vec<Change> {
        (self.rounds.acceptor.states().into_iter())
            .map(|(key, promised, accepted)| Change::Ballot {
                key,
                promised,
                accepted: entry(accepted),
            })
            .collect()
    }
}
