//! [`DurableNode`]: a storage node with its data directory, the wrapper that
//! turns the node's durability requests into I/O and holds the outputs that
//! depend on them until their commit.
//!
//! The node ([`StorageNode`]) never touches a file: during a step it records
//! what must reach the disk in its [`Journal`] (changes to log, a snapshot, its
//! identity). After each step this wrapper takes those requests, appends the
//! changes to the log (with `--fsync always` writing and syncing them there and
//! then), and applies the hold rule ([`Durable::after_step`]); at the end of
//! the loop turn it commits and releases what it held ([`Durable::turn_end`]).
//! The real process and the simulator both run nodes through it, so the
//! simulator checks the same rule the binary follows.

use super::journal::Journal;
use super::{Durable, Recovered};
use crate::reactor::{Input, Millis, Output, Service};
use crate::storage::disk::{Disk, RealDisk};
use crate::storage::wal::Fsync;
use crate::storage::StorageNode;
use std::io;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;

/// Bytes of replies held for a turn's commit above which the connection whose
/// input produced them yields for the rest of the turn (its replies are out of
/// the reactor's sight, so its output limits cannot stop it).
pub const HELD_YIELD_BYTES: usize = 4 << 20;

/// A storage node and, when it has one, its data directory.
pub struct DurableNode {
    node: StorageNode,
    durable: Option<Durable>,
}

impl DurableNode {
    /// A node that keeps its data in memory until a data directory is opened.
    pub fn new(node: StorageNode) -> DurableNode {
        DurableNode {
            node,
            durable: None,
        }
    }

    /// Opens the data directory `dir` (before the node runs) and replays it into
    /// the node's engine; from then on every change is logged there before
    /// anything that depends on it leaves the process.
    pub fn open_data_dir(&mut self, dir: &Path, fsync: Fsync) -> io::Result<Recovered> {
        self.open_data_dir_on(Arc::new(RealDisk), dir, fsync)
    }

    /// [`DurableNode::open_data_dir`] on any [`Disk`] (the simulator's keeps it
    /// in memory).
    pub fn open_data_dir_on(
        &mut self,
        disk: Arc<dyn Disk>,
        dir: &Path,
        fsync: Fsync,
    ) -> io::Result<Recovered> {
        let (mut d, rec) = Durable::open_on(disk, dir, fsync)?;
        let (found, newest) = d.replay(rec, self.node.engine_mut());
        self.node.observe_version(newest);
        self.node.restore_ballots(d.take_ballots());
        self.node.set_journal(Journal::new(d.take_identity()));
        self.durable = Some(d);
        Ok(found)
    }

    /// Why the node stopped on its own, if it did: its own reason (a refused
    /// cluster secret), or a failed data directory.
    pub fn failure(&self) -> Option<String> {
        let disk = self.durability_failed();
        (self.node.failure())
            .or_else(|| disk.map(|why| format!("the data directory failed: {why}")))
    }

    /// Why the data directory stopped working, if it did (the node then stops).
    pub fn durability_failed(&self) -> Option<&str> {
        self.durable.as_ref().and_then(Durable::failed)
    }

    /// The data directory, if the node has one (inspection, tests).
    pub fn durable_mut(&mut self) -> Option<&mut Durable> {
        self.durable.as_mut()
    }
}

impl Deref for DurableNode {
    type Target = StorageNode;

    fn deref(&self) -> &StorageNode {
        &self.node
    }
}

impl DerefMut for DurableNode {
    fn deref_mut(&mut self) -> &mut StorageNode {
        &mut self.node
    }
}

impl Service for DurableNode {
    fn step(&mut self, now: Millis, input: Input, out: &mut Vec<Output>) {
        let mark = out.len();
        let from = match &input {
            Input::Frame { conn, .. } | Input::Data { conn, .. } => Some(*conn),
            _ => None,
        };
        self.node.step(now, input, out);
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        if let Some(journal) = self.node.journal_mut() {
            d.perform(journal.take());
        }
        let node = &self.node;
        d.after_step(now, mark, out, |c| node.is_outbound_link(c));
        if let Some(conn) = from.filter(|_| d.held_bytes() > HELD_YIELD_BYTES) {
            out.push(Output::Yield { conn });
        }
    }

    fn turn_end(&mut self, now: Millis, out: &mut Vec<Output>) {
        self.node.turn_end(now, out);
        if let Some(d) = self.durable.as_mut() {
            // What the node's turn end asked for (a request it restarted may
            // have promised a ballot) is committed with the rest.
            if let Some(journal) = self.node.journal_mut() {
                d.perform(journal.take());
            }
            let node = &self.node;
            d.turn_end_with(node.engine(), || node.ballot_states(), out);
        }
    }
}
