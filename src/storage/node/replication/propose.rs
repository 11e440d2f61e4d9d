//! A conditional op's Paxos rounds at its lead (the proposer): the prepare
//! round, the accept round and the commit (see [`super::round`] for the
//! bookkeeping, [`super::paxos`] for the acceptor's side).

use super::*;

impl StorageNode {
    /// Whether this node's own acceptor takes part in the Paxos rounds of the
    /// key with ring hash `hash`: it is on the key's lists and not catching up.
    pub(super) fn accepts_for(&self, hash: u64) -> bool {
        self.check_replica_of(hash).is_ok() && !self.behind(hash)
    }

    /// A conditional op's prepare round: a new ballot, this node's own promise
    /// and `PREPARE` to the other live replicas (`others`).
    pub(super) fn start_prepare(
        &mut self,
        now: Millis,
        id: u64,
        mut p: Pending,
        others: Vec<u32>,
        out: &mut Vec<Output>,
    ) {
        let wall = self.cfg.clock_base_ms + now;
        let entry = (self.engine.entry_ref_hashed(p.hash, &p.key)).map(|e| e.to_entry());
        let stored = entry.as_ref().map_or(0, |e| e.version);
        let ballot = self.hlc.next(wall, stored.max(p.ballot_floor()));
        p.begin_prepare(ballot);
        let mut copies = Vec::new();
        if self.accepts_for(p.hash) {
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
        let enough = copies.len() >= p.read_need;
        p.round = Round::Reading {
            copies,
            waiting: others.clone(),
            spare: Vec::new(),
        };
        let ask = Message::Prepare {
            ballot,
            key: p.key.clone(),
        }
        .encode();
        let failed = self.ask_replicas(now, (id, p.round_tag(), &p.key), &others, ask, out);
        if enough {
            return self.finish_read(now, id, p, out);
        }
        if others.is_empty() {
            return self.round_failed(now, id, p, out);
        }
        self.unreachable_replicas(now, id, p, failed, out);
    }

    /// A conditional op's accept round: `value` under the prepared ballot,
    /// accepted here (if this node is an acceptor) and sent as `ACCEPT` to the
    /// other live replicas and the nodes a pending move adds; `result` is the
    /// reply once committed.
    pub(super) fn accept_round(
        &mut self,
        now: Millis,
        id: u64,
        mut p: Pending,
        value: Option<Bytes>,
        result: Frame,
        out: &mut Vec<Output>,
    ) {
        let (_, mut targets, newcomers) = self.replica_targets(p.hash);
        let mine = self.accepts_for(p.hash);
        if usize::from(mine) + targets.len() < p.accept_need() {
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
        targets.extend(newcomers.iter().copied());
        let done = acks >= p.accept_need() && newcomers.is_empty();
        let alone = targets.is_empty();
        let proposal = entry_of(record.clone());
        let ask = Message::Accept { record }.encode();
        let round = Round::Writing {
            phase: Phase::Accept,
            result,
            acks,
            waiting: targets.clone(),
            newcomers,
            newest_refusal: 0,
        };
        // The tag is the accept round's: set the round before sending.
        p.begin_accept(proposal, round, targets.len());
        let failed = self.ask_replicas(now, (id, p.round_tag(), &p.key), &targets, ask, out);
        p.begin_accept_sent(targets.len() - failed.len());
        if done {
            return self.commit(now, id, p, out);
        }
        if alone {
            return self.round_failed(now, id, p, out);
        }
        self.unreachable_replicas(now, id, p, failed, out);
    }

    /// A conditional op's proposal is accepted by enough replicas (it is
    /// chosen): apply it here and send it as `REPLICATE` to the others.
    pub(super) fn commit(&mut self, now: Millis, id: u64, mut p: Pending, out: &mut Vec<Output>) {
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
        let (_, mut targets, newcomers) = self.replica_targets(p.hash);
        targets.extend(newcomers.iter().copied());
        let write = WriteRound {
            phase: Phase::Commit,
            entry,
            base: None,
            result,
            targets,
            newcomers,
            acks: 1,
        };
        self.write_round(now, id, p, write, out);
    }
}
