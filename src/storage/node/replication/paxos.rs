//! The replica's side of a conditional op (CREATE, UPDATE, INCR, DELETE): a
//! single-decree Paxos acceptor per key, with no I/O. The proposer's side is a
//! request's rounds (see [`super::round`]).
//!
//! A proposer's ballot is a version from its hybrid logical clock, so ballots
//! and stored versions are one order. For each key an [`Acceptor`] keeps the
//! highest ballot it promised and the proposal it accepted, apart from the
//! data: no read sees a proposal until it is committed (a `REPLICATE` of the
//! same record, applied like any write).
//!
//! - `PREPARE b`: refused (with the higher number) if `b` is at or below the
//!   key's promise or its stored version; otherwise the key is promised `b` and
//!   the answer carries the stored entry and any accepted proposal newer than it.
//! - `ACCEPT b`: refused if `b` is below the promise or at or below the stored
//!   version; otherwise kept as the accepted proposal.
//!
//! Bounded state: a key's slot goes when a version at least as high as
//! everything in it is committed, and any slot is dropped once its highest
//! ballot is [`BALLOT_TTL_MS`] old by this node's clock. Dropping is safe
//! because ballots that old are refused outright, and so is everything below
//! them. At most [`MAX_SLOTS`] keys hold a slot; past that, new prepares are
//! refused until slots expire.
//!
//! With a data directory every slot change is logged (see the node's
//! `ballots`): [`Acceptor::take_changed`] gives the node the slots a step
//! changed, [`Acceptor::states`] all of them for a snapshot, and
//! [`Acceptor::restore`] puts back what the log kept, so a restarted node
//! keeps its promises and accepted proposals. Every restarted process also
//! refuses every ballot made before it started (by the ballot's clock part).
//! Without a data directory that is the only guard of its forgotten promises
//! (a promise it made before the restart was for such a ballot), and it
//! assumes the nodes' clocks differ by less than a restart takes; with one, it
//! still covers what `--fsync never` loses in a power cut. The exception is a
//! key whose lists a pending move adds this node to: it held no promise for
//! it, and the move hands it the proposals the key's holders accepted
//! (`ACCEPT` of the same ballot: one ballot has one value), so that a
//! proposal chosen by a majority of the old list and not yet committed is
//! found by a majority of the new one. Those are taken whatever their age
//! below [`BALLOT_TTL_MS`], and slots expire by age only.

use crate::protocol::cluster::Record;
use bytes::Bytes;
use std::collections::HashMap;

/// How old a ballot may be, by the clock part of the version, before
/// replicas refuse it and forget its promise or proposal, in ms. Well above a
/// conditional op's three rounds of at most a request timeout each.
pub const BALLOT_TTL_MS: u64 = 30_000;

/// At most this many keys hold a promise or proposal on one replica.
pub const MAX_SLOTS: usize = 100_000;

/// Bits of a version below its milliseconds (as in [`crate::storage::hlc`]).
const MS_SHIFT: u32 = 16;

/// The lowest ballot not yet [`BALLOT_TTL_MS`] old at wall clock `wall_ms`.
fn ttl_floor(wall_ms: u64) -> u64 {
    wall_ms
        .saturating_sub(BALLOT_TTL_MS)
        .saturating_mul(1 << MS_SHIFT)
}

/// One key's promise and accepted proposal.
#[derive(Debug, Default)]
struct Slot {
    /// The highest ballot promised.
    promised: u64,
    /// The accepted proposal (its version is its ballot).
    accepted: Option<Record>,
}

impl Slot {
    fn highest(&self) -> u64 {
        self.promised
            .max(self.accepted.as_ref().map_or(0, |r| r.version))
    }
}

/// A refusal: a ballot or version at least as high as the one refused, which
/// the proposer's clock moves past before it tries again.
pub type Higher = u64;

/// A key's acceptor state as the log keeps it: the key, the ballot promised,
/// and the accepted proposal (or `None`).
pub type SlotState = (Bytes, u64, Option<Record>);

/// The acceptor state of every key this node replicates.
#[derive(Debug, Default)]
pub struct Acceptor {
    slots: HashMap<Bytes, Slot>,
    /// This process's wall clock (ms) when it started: earlier ballots are refused.
    started_ms: Option<u64>,
    /// With a data directory: the keys whose slot changed since the node last
    /// logged them (see [`Acceptor::take_changed`]).
    changed: Option<Vec<Bytes>>,
}

impl Acceptor {
    /// Notes the process's start (the first call wins), and drops slots
    /// restored from the log that are too old by then.
    pub fn begin(&mut self, wall_ms: u64) {
        if self.started_ms.is_none() {
            self.started_ms = Some(wall_ms);
            self.sweep(wall_ms);
        }
    }

    /// From now on, note every slot that changes, for the node to log.
    pub fn log_changes(&mut self) {
        self.changed.get_or_insert_with(Vec::new);
    }

    /// The state of every slot that changed since the last call (a slot gone
    /// since, committed in the same step, is left out: the commit covers it).
    pub fn take_changed(&mut self) -> Vec<SlotState> {
        let Some(changed) = self.changed.as_mut().filter(|c| !c.is_empty()) else {
            return Vec::new();
        };
        let mut keys = std::mem::take(changed);
        keys.sort_unstable();
        keys.dedup();
        (keys.into_iter())
            .filter_map(|k| {
                let s = self.slots.get(&k)?;
                Some((k, s.promised, s.accepted.clone()))
            })
            .collect()
    }

    /// Every slot's state (a snapshot of the log keeps them).
    pub fn states(&self) -> Vec<SlotState> {
        (self.slots.iter())
            .map(|(k, s)| (k.clone(), s.promised, s.accepted.clone()))
            .collect()
    }

    /// Puts back a slot the log kept (a later one of the same key replaces
    /// it), unless `stored`, the key's committed version, covers it.
    pub fn restore(&mut self, (key, promised, accepted): SlotState, stored: u64) {
        let slot = Slot { promised, accepted };
        if slot.highest() > stored {
            self.slots.insert(key, slot);
        } else {
            self.slots.remove(&key);
        }
    }

    fn note_changed(&mut self, key: &Bytes) {
        if let Some(c) = self.changed.as_mut() {
            c.push(key.clone());
        }
    }

    /// Keys holding a promise or a proposal.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no key holds a promise or a proposal.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The lowest ballot this node takes at wall clock `wall_ms`: made after it
    /// started and at most [`BALLOT_TTL_MS`] old.
    fn floor(&self, wall_ms: u64) -> u64 {
        let oldest = wall_ms.saturating_sub(BALLOT_TTL_MS);
        let ms = oldest.max(self.started_ms.unwrap_or(0));
        ms.saturating_mul(1 << MS_SHIFT)
    }

    /// `PREPARE ballot` for `key`, whose stored version here is `stored`: the
    /// accepted proposal newer than `stored` (if any) once promised, or the
    /// higher number that refuses it.
    pub fn prepare(
        &mut self,
        key: &Bytes,
        ballot: u64,
        stored: u64,
        wall_ms: u64,
    ) -> Result<Option<Record>, Higher> {
        let floor = self.floor(wall_ms);
        if ballot < floor {
            return Err(floor);
        }
        let slot = self.slots.get(key);
        let held = slot.map_or(0, Slot::highest).max(stored);
        if ballot <= held {
            return Err(held);
        }
        if slot.is_none() && self.slots.len() >= MAX_SLOTS {
            self.sweep(wall_ms);
            if self.slots.len() >= MAX_SLOTS {
                return Err(ballot);
            }
        }
        self.note_changed(key);
        let slot = self.slots.entry(key.clone()).or_default();
        slot.promised = ballot;
        Ok(slot.accepted.clone().filter(|r| r.version > stored))
    }

    /// `ACCEPT` of `proposal` (its version is the ballot), for a key whose
    /// stored version here is `stored`: `Ok` once held.
    pub fn accept(&mut self, proposal: &Record, stored: u64, wall_ms: u64) -> Result<(), Higher> {
        let floor = self.floor(wall_ms);
        self.accept_above(proposal, stored, floor)
    }

    /// [`Acceptor::accept`] for a key whose lists a pending move adds this
    /// node to: ballots from before this process started are taken too (if
    /// not too old). The node was on none of the key's lists, so it cannot
    /// have promised anything for the key that a restart made it forget; and
    /// a move hands it the proposals the old holders accepted, whatever their
    /// age (see the node's `moves`).
    pub fn accept_as_newcomer(
        &mut self,
        proposal: &Record,
        stored: u64,
        wall_ms: u64,
    ) -> Result<(), Higher> {
        self.accept_above(proposal, stored, ttl_floor(wall_ms))
    }

    fn accept_above(&mut self, proposal: &Record, stored: u64, floor: u64) -> Result<(), Higher> {
        let ballot = proposal.version;
        if ballot < floor {
            return Err(floor);
        }
        let slot = self.slots.get(&proposal.key);
        let promised = slot.map_or(0, |s| s.promised);
        if ballot < promised || ballot <= stored {
            return Err(promised.max(stored));
        }
        if slot.is_none() && self.slots.len() >= MAX_SLOTS {
            return Err(ballot);
        }
        self.note_changed(&proposal.key);
        let slot = self.slots.entry(proposal.key.clone()).or_default();
        slot.promised = ballot;
        slot.accepted = Some(proposal.clone());
        Ok(())
    }

    /// The accepted proposals of the keys `keep` picks (a move hands them to
    /// the nodes it adds to their lists, as `ACCEPT`s of the same ballot).
    pub fn accepted(&self, mut keep: impl FnMut(&[u8]) -> bool) -> Vec<Record> {
        (self.slots.iter())
            .filter(|(k, _)| keep(k))
            .filter_map(|(_, s)| s.accepted.clone())
            .collect()
    }

    /// A version of `key` was committed here: the slot goes if that version
    /// covers everything in it.
    pub fn committed(&mut self, key: &[u8], version: u64) {
        if self.slots.get(key).is_some_and(|s| s.highest() <= version) {
            self.slots.remove(key);
        }
    }

    /// Drops the slots whose highest ballot is too old to be taken any more.
    pub fn sweep(&mut self, wall_ms: u64) {
        // By age only: a proposal from before this process started is here
        // because a move handed it over, and must be reported until it expires.
        let floor = ttl_floor(wall_ms);
        self.slots.retain(|_, s| s.highest() >= floor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1 << MS_SHIFT;

    fn key() -> Bytes {
        Bytes::from_static(b"k")
    }

    fn proposal(ballot: u64, value: &'static [u8]) -> Record {
        Record {
            key: key(),
            version: ballot,
            value: Some(Bytes::from_static(value)),
        }
    }

    #[test]
    fn a_promise_refuses_lower_ballots_and_reports_the_accepted_proposal() {
        let mut a = Acceptor::default();
        a.begin(1_000);
        let b1 = 1_000 * MS + 1;
        assert_eq!(a.prepare(&key(), b1, 0, 1_000), Ok(None));
        assert_eq!(a.prepare(&key(), b1, 0, 1_000), Err(b1), "not twice");
        assert_eq!(a.accept(&proposal(b1, b"x"), 0, 1_000), Ok(()));
        let b2 = b1 + 0x100;
        assert_eq!(
            a.prepare(&key(), b2, 0, 1_000),
            Ok(Some(proposal(b1, b"x")))
        );
        // The older proposer's accept now loses.
        assert_eq!(a.accept(&proposal(b1, b"y"), 0, 1_000), Err(b2));
        // A stored version at or above the ballot refuses it too.
        assert_eq!(a.prepare(&key(), b2 + 1, b2 + 5, 1_000), Err(b2 + 5));
        assert_eq!(
            a.accept(&proposal(b2 + 9, b"z"), b2 + 9, 1_000),
            Err(b2 + 9)
        );
        // A commit below the slot's promise keeps it; one covering it drops it.
        a.committed(b"k", b1);
        assert_eq!(a.len(), 1);
        a.committed(b"k", b2);
        assert!(a.is_empty());
        // An accepted proposal at or below the stored version is not reported.
        assert_eq!(a.accept(&proposal(b2 + 0x100, b"w"), 0, 1_000), Ok(()));
        assert_eq!(a.prepare(&key(), b2 + 0x200, b2 + 0x100, 1_000), Ok(None));
    }

    #[test]
    fn old_ballots_and_ballots_from_before_a_restart_are_refused() {
        let mut a = Acceptor::default();
        a.begin(50_000);
        a.begin(99_999);
        let before = 49_999 * MS;
        assert_eq!(a.prepare(&key(), before, 0, 50_000), Err(50_000 * MS));
        assert_eq!(
            a.accept(&proposal(before, b"x"), 0, 50_000),
            Err(50_000 * MS)
        );
        let b = 50_001 * MS;
        assert_eq!(a.prepare(&key(), b, 0, 50_001), Ok(None));
        a.sweep(50_001 + BALLOT_TTL_MS);
        assert_eq!(a.len(), 1, "not old yet");
        a.sweep(50_002 + BALLOT_TTL_MS);
        assert!(a.is_empty(), "expired");
        let late = 50_002 + BALLOT_TTL_MS;
        assert!(a.accept(&proposal(b, b"x"), 0, late).is_err());
    }

    #[test]
    fn a_newcomer_takes_and_keeps_a_handed_over_proposal_from_before_its_start() {
        let mut a = Acceptor::default();
        a.begin(50_000);
        let old = proposal(49_000 * MS + 2, b"3");
        assert!(a.accept(&old, 0, 50_000).is_err(), "a member refuses it");
        assert_eq!(a.accept_as_newcomer(&old, 0, 50_000), Ok(()));
        assert_eq!(a.accepted(|_| true), vec![old.clone()]);
        assert!(a.accepted(|k| k != b"k").is_empty());
        // Kept by the sweep (by age only) and reported to a later prepare.
        a.sweep(50_001);
        let b = 50_001 * MS;
        assert_eq!(a.prepare(&key(), b, 0, 50_001), Ok(Some(old)));
        // Too old is too old, even for a newcomer.
        let stale = proposal(1_000 * MS, b"x");
        assert!(a.accept_as_newcomer(&stale, 0, 50_000).is_err());
    }

    #[test]
    fn slots_are_bounded() {
        let mut a = Acceptor::default();
        a.begin(0);
        for i in 0..MAX_SLOTS {
            let k = Bytes::from(i.to_string());
            assert!(a.prepare(&k, 5, 0, 0).is_ok());
        }
        assert!(a.prepare(&Bytes::from_static(b"new"), 5, 0, 0).is_err());
        assert_eq!(a.len(), MAX_SLOTS);
    }
}
