//! A conditional op's Paxos rounds at its lead (the proposer): the prepare
//! round, the accept round and the commit (see [`super::round`] for the
//! bookkeeping, [`super::paxos`] for the acceptor's side, [`super::joint`]
//! for the majorities counted while the key's lists change).
//!
//! Each attempt takes the lead's view of the key (its ring's epoch, the key's
//! serving and settled lists) when its prepare starts; the prepare and accept
//! rounds ask every reachable node of both lists, carry the view, and count
//! a majority of each list. The commit is a write like a PUT's, by the ring
//! the lead has then.

use super::joint::{self, members_but, Verdict};
use super::*;

impl StorageNode {
    /// Whether this node's own acceptor takes part in the Paxos rounds of the
    /// key with ring hash `hash` under `view`: it is on the key's lists, not
    /// catching up, and its ring has not changed the key's lists since the
    /// attempt took `view`.
    pub(super) fn accepts_for(&self, hash: u64, view: &View) -> bool {
        self.check_replica_of(hash).is_ok() && !self.behind(hash) && self.fence(hash, view).is_ok()
    }

    /// The reachable nodes of `view`'s lists other than this one.
    fn reachable_members(&self, view: &View) -> Vec<u32> {
        let mut all = members_but(view, self.node_id);
        all.retain(|&n| self.reachable(n));
        all
    }

    /// A conditional op's prepare round: a new ballot and view, this node's
    /// own promise and `PREPARE` to the other reachable nodes of the key's
    /// serving and settled lists.
    pub(super) fn start_prepare(
        &mut self,
        now: Millis,
        id: u64,
        mut p: Box<Pending>,
        out: &mut Vec<Output>,
    ) {
        let wall = self.cfg.clock_base_ms + now;
        let entry = (self.engine.entry_ref_hashed(p.hash, &p.key)).map(|e| e.to_entry());
        let stored = entry.as_ref().map_or(0, |e| e.version);
        let ballot = self.hlc.next(wall, stored.max(p.ballot_floor()));
        let view = self.view_of(p.hash);
        let others = self.reachable_members(&view);
        p.begin_prepare(ballot, view);
        let mut copies = Vec::new();
        if self.accepts_for(p.hash, p.view()) {
            match (self.rounds.acceptor).prepare(&p.key, ballot, stored, wall) {
                Ok(accepted) => {
                    copies.push((self.node_id, entry));
                    p.note_accepted(accepted.map(entry_of));
                }
                Err(higher) => {
                    self.hlc.observe(higher);
                    p.refused_by(higher);
                }
            }
        }
        p.round = Round::Reading {
            copies,
            waiting: others.clone(),
            spare: Vec::new(),
        };
        let ask = Message::Prepare {
            ballot,
            view: p.view().clone(),
            key: p.key.clone(),
        }
        .encode();
        let failed = self.ask_replicas(now, (id, p.round_tag(), &p.key), &others, ask, out);
        match p.paxos_progress() {
            Some(Progress::ReadDone) => self.finish_read(now, id, p, out),
            Some(Progress::Failed) => self.round_failed(now, id, p, out),
            _ => self.unreachable_replicas(now, id, p, failed, out),
        }
    }

    /// A conditional op's accept round: `value` under the prepared ballot,
    /// accepted here (if this node is an acceptor) and sent as `ACCEPT`, with
    /// the attempt's view, to the other reachable nodes of the view's lists;
    /// `result` is the reply once committed.
    pub(super) fn accept_round(
        &mut self,
        now: Millis,
        id: u64,
        mut p: Box<Pending>,
        value: Option<Bytes>,
        result: Frame,
        out: &mut Vec<Output>,
    ) {
        if self.fence(p.hash, p.view()).is_err() && p.attempts < MAX_ATTEMPTS {
            // This node's ring changed the key's lists since the prepare, and
            // nothing of this attempt is accepted yet: start again by the new
            // ring (its replicas would refuse this view).
            return self.start_round(now, id, p, out);
        }
        let targets = self.reachable_members(p.view());
        let mine = self.accepts_for(p.hash, p.view());
        let me = [self.node_id];
        let voters = if mine { &me[..] } else { &[] };
        if joint::verdict(p.view(), p.accept_need(), voters, &targets) == Verdict::Failed {
            // Refused before anything of it is accepted: applied nowhere.
            return self.refuse_write(p, out);
        }
        let record = Record {
            key: p.key.clone(),
            version: p.ballot(),
            value,
        };
        let mut acks = 0;
        if mine {
            let wall = self.cfg.clock_base_ms + now;
            let stored = self.engine.version_hashed(p.hash, &p.key);
            match self.rounds.acceptor.accept(&record, stored, wall) {
                Ok(()) => acks = 1,
                Err(higher) => {
                    self.hlc.observe(higher);
                    p.refused_by(higher);
                }
            }
        }
        let proposal = entry_of(record.clone());
        let ask = Message::Accept {
            record,
            view: Some(p.view().clone()),
        }
        .encode();
        // The nodes a move adds count toward the settled list's majority
        // (joint majorities), not each on its own.
        let round = Round::Writing {
            phase: Phase::Accept,
            result,
            acks,
            waiting: targets.clone(),
            newcomers: Vec::new(),
            newest_refusal: 0,
        };
        // The tag is the accept round's: set the round before sending.
        p.begin_accept(proposal, round, targets.len());
        if acks == 1 {
            p.accepted_here(self.node_id);
        }
        let failed = self.ask_replicas(now, (id, p.round_tag(), &p.key), &targets, ask, out);
        p.begin_accept_sent(targets.len() - failed.len());
        match p.paxos_progress() {
            Some(Progress::WriteDone) => self.commit(now, id, p, out),
            Some(Progress::Failed) => self.round_failed(now, id, p, out),
            _ => self.unreachable_replicas(now, id, p, failed, out),
        }
    }

    /// A conditional op's proposal is accepted by enough replicas (it is
    /// chosen): apply it here and send it as `REPLICATE` to the others.
    pub(super) fn commit(
        &mut self,
        now: Millis,
        id: u64,
        mut p: Box<Pending>,
        out: &mut Vec<Output>,
    ) {
        let Some(entry) = p.take_proposal() else {
            return self.finish(p, Err(Self::no_result()), out);
        };
        let Some(result) = p.take_result() else {
            return self.finish(p, Err(Self::no_result()), out);
        };
        // Stored, or ordered before a newer version here: committed either way.
        self.store(
            (&p.key, p.hash),
            entry.version,
            entry.value.as_deref(),
            None,
        );
        self.rounds.acceptor.committed(&p.key, entry.version);
        if !p.completing() {
            p.maybe_applied = true;
        }
        self.write_to_replicas(now, id, p, (Phase::Commit, entry, result), out);
    }
}
