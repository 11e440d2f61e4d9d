//! Replication: with N > 1, a key's lead replica (the first reachable node of
//! its preference list) serves every request for the key in quorum rounds over
//! the other replicas (the bookkeeping of one request is a [`Pending`], see
//! [`round`]): reads collect R copies, writes W acknowledgements; a plain read
//! asks only R - 1 other replicas, the rest when one of those fails it or after
//! [`SPECULATIVE_READ_MS`], and its asks leave at the end of the loop turn,
//! one message per replica for the whole turn (see `reads.rs`); read repair
//! writes the newest copy back to stale
//! replicas; conditional ops (CREATE, UPDATE, INCR, DELETE) run single-decree
//! Paxos over the key's replicas (prepare, accept, commit; this node's acceptor
//! state is [`paxos`]).
//!
//! A request is taken out of `pending` while a step works on it and put back if
//! it still waits for answers, so each transition has the request in hand.
//! Requests for one key run one write at a time, in arrival order (`busy`).
//!
//! Honest outcomes: a write is refused before anything of it is stored or
//! accepted when fewer than W (for a conditional op, a majority) of its key's
//! replicas are reachable, with `ERR UNAVAILABLE`: applied nowhere. Once a
//! write of the request is stored here or a proposal of it accepted anywhere
//! (`Pending::maybe_applied`), any failure is answered `ERR UNKNOWN` (see
//! `finish`): the copy, or the proposal another lead may finish, may be read
//! later.

mod joint;
pub(super) mod paxos;
mod propose;
mod reads;
pub(super) mod round;

pub(super) use reads::{answer_of, ReadAsk};

use super::*;
use crate::protocol::cluster::View;

/// How long a plain read (GET, EXISTS) waits for the R - 1 replicas it asked
/// before it asks the key's other replicas too (it asks them at once when an
/// asked one fails). With every replica asked up front, each read cost N - 1
/// remote reads, the slowest of them wasted.
pub const SPECULATIVE_READ_MS: Millis = 50;

/// The timer id of the [`SPECULATIVE_READ_MS`] deadlines: one timer at a time,
/// set for the oldest read still due (see `Rounds::spare_due`).
pub(super) const TIMER_SPARES: u64 = 1 << 48;

/// The requests this node serves over replicas as their keys' lead replica.
pub(super) struct Rounds {
    /// Requests this node serves over replicas, by id. Boxed: a request moves
    /// by value at every step of its round; a box is 8 bytes, a `Pending` 100s.
    pub(super) pending: super::mesh::IdMap<Box<Pending>>,
    /// The id the next request gets.
    pub(super) next_pending: u64,
    /// Keys with a write in progress here, and the requests waiting their turn:
    /// one write at a time per key, in arrival order, so pipelined requests take
    /// effect in order and read-modify-writes do not refuse each other's bases.
    pub(super) busy: HashMap<Bytes, std::collections::VecDeque<u64>>,
    /// Waiting requests whose turn came (started at the end of the step).
    pub(super) ready_turns: Vec<u64>,
    /// Requests to start again at the next tick (a replica's newer ring said
    /// the key moved: this node's ring should catch up first).
    pub(super) retry_soon: Vec<u64>,
    /// This node's promises and accepted proposals, as a replica.
    pub(super) acceptor: paxos::Acceptor,
    /// Plain reads with spare replicas, by the time their spares are due
    /// ([`SPECULATIVE_READ_MS`] after they started), oldest first: every read
    /// gets the same delay, so the queue is in order and one timer (for its
    /// front) serves them all, instead of a timer per read. A read answered
    /// before its time stays queued and is skipped when it comes due, and so
    /// is one started again since (its new round has an entry of its own).
    /// Entries are (due, request id, the round's tag, the write count of
    /// `writes` when the read began).
    pub(super) spare_due: std::collections::VecDeque<(Millis, u64, u32, u64)>,
    /// Writes (PUT, conditional ops) this node has started as a lead: a
    /// counter, and by slot of their keys' ring hashes the count when the
    /// slot's latest write started (see `reads::overtaken`).
    pub(super) writes: reads::WriteMarks,
    /// The [`TIMER_SPARES`] timer is set.
    pub(super) spare_timer: bool,
    /// Plain reads' asks to other replicas, by replica, sent at the end of the
    /// loop turn (see `reads.rs`).
    pub(super) reads: Vec<(u32, reads::ReadAsk)>,
}

impl Rounds {
    /// Nothing in progress yet.
    pub(super) fn new() -> Rounds {
        Rounds {
            pending: Default::default(),
            next_pending: 1,
            busy: Default::default(),
            ready_turns: Default::default(),
            retry_soon: Default::default(),
            acceptor: Default::default(),
            spare_due: Default::default(),
            writes: Default::default(),
            spare_timer: false,
            reads: Vec::new(),
        }
    }
}

/// A write round about to start: what it sends and to whom.
struct WriteRound {
    /// A commit or a plain write.
    phase: Phase,
    /// The entry every target gets.
    entry: Entry,
    /// The version the write was decided against (a conditional write).
    base: Option<u64>,
    /// The reply once the write is acknowledged.
    result: Frame,
    /// Nodes to send it to.
    targets: Vec<u32>,
    /// Those of `targets` a pending move adds to the key's lists.
    newcomers: Vec<u32>,
    /// Acknowledgements already in (this node's own store, copies already current).
    acks: usize,
}

impl StorageNode {
    /// The live replicas of `hash` other than this node, and the live nodes a
    /// pending move adds to its preference list.
    pub(super) fn replica_targets(&self, hash: u64) -> (usize, Vec<u32>, Vec<u32>) {
        self.targets_in(self.serving_pref.get(hash), self.settled_pref.get(hash))
    }

    /// [`StorageNode::replica_targets`] of a key whose serving list is `pref`
    /// and settled list `settled`.
    fn targets_in(&self, pref: &[u32], settled: &[u32]) -> (usize, Vec<u32>, Vec<u32>) {
        let me = self.node_id;
        let live = |id: &u32| *id != me && self.reachable(*id);
        let others: Vec<u32> = pref.iter().copied().filter(live).collect();
        let newcomers: Vec<u32> = (settled.iter().copied())
            .filter(|id| !pref.contains(id) && live(id))
            .collect();
        (pref.len(), others, newcomers)
    }

    /// Starts serving a key-value request this node is the lead replica of.
    pub(super) fn serve_replicated(
        &mut self,
        now: Millis,
        conn: ConnId,
        request: Frame,
        (key, hash): (Bytes, u64),
        out: &mut Vec<Output>,
    ) {
        let listed = self.serving_pref.get(hash).len().max(1);
        // A node catching up keeps its own copy in the round but does not count
        // it: it needs R copies from the others.
        let behind = self.behind(hash) as usize;
        let key = Bytes::copy_from_slice(&key);
        let requester = Requester {
            conn,
            seq: self.conns.order.reserve(conn),
            client_id: request.client_id,
        };
        let id = self.rounds.next_pending;
        self.rounds.next_pending += 1;
        let read_need = (self.ring.read_quorum as usize).clamp(1, listed) + behind;
        let write_need = (self.ring.write_quorum as usize).clamp(1, listed);
        let mut p = Box::new(Pending::new(
            requester,
            request,
            (key, hash),
            read_need,
            write_need,
        ));
        if p.conditional() {
            // Paxos: promises and acceptances from a majority of the list, and
            // at least R and W (this node's own promise counts only if it is
            // not catching up: it then makes none).
            let majority = listed / 2 + 1;
            p.set_paxos_needs(majority.max(read_need - behind), majority.max(write_need));
        }
        // Requests for one key run in arrival order: a write holds the key until
        // it is answered, and whatever arrives meanwhile waits its turn. Reads that
        // find the key free run at once (they see every write applied here).
        let writes = !matches!(p.request.op, op::GET | op::EXISTS);
        // The request is kept until the replicas answer: its payload is copied,
        // so it does not pin the read buffer it arrived in (a client that never
        // reads would pin many). A PUT that starts at once is copied only into
        // its write round's REPLICATE payload.
        // A plain read's payload is its key, kept in `key`: not kept twice.
        let own = |p: &mut Pending| {
            p.request.payload = if matches!(p.request.op, op::GET | op::EXISTS) {
                Bytes::new()
            } else {
                Bytes::copy_from_slice(&p.request.payload)
            }
        };
        if let Some(queue) = self.rounds.busy.get_mut(&p.key) {
            own(&mut p);
            p.holds_key = true;
            self.rounds.pending.insert(id, p);
            return queue.push_back(id);
        }
        if writes {
            p.holds_key = true;
            self.rounds.busy.insert(p.key.clone(), Default::default());
        }
        if p.request.op != op::PUT {
            own(&mut p);
        }
        self.start_round(now, id, p, out);
    }

    /// Starts request `id` again (its key's turn came, or a retry is due),
    /// or sends its write round again (see [`StorageNode::resend`]).
    pub(super) fn restart(&mut self, now: Millis, id: u64, out: &mut Vec<Output>) {
        if let Some(p) = self.rounds.pending.remove(&id) {
            // A node whose lease ran out meanwhile starts no round (`UNKNOWN`
            // if the request may have been applied already).
            if let Some(e) = self.no_lease(now) {
                return self.finish(p, Err(e), out);
            }
            match p.phase() {
                Some(Phase::Write | Phase::Commit) => self.resend(now, id, p, out),
                _ => self.start_round(now, id, p, out),
            }
        }
    }

    /// Sends request `p`'s write round (a plain write, a read's repair or a
    /// commit) again, the same entry at the same version, to the key's
    /// replicas by this node's ring now: replicas whose rings were newer
    /// refused it (`stale-ring`, `off-list`), and by the time this runs (the
    /// next tick) this node has most likely installed that ring. Storing one
    /// version twice is harmless, so unlike a new version (see
    /// `round_failed`) this cannot apply a PUT twice; without it a PUT that
    /// met a ring change in flight answered `UNKNOWN`.
    fn resend(&mut self, now: Millis, id: u64, mut p: Box<Pending>, out: &mut Vec<Output>) {
        let (Some(phase), Some(entry), Some(result)) =
            (p.phase(), p.resend.take(), p.take_result())
        else {
            let e = Error::new(ErrorCode::Internal, "the write round lost its entry");
            return self.finish(p, Err(e), out);
        };
        p.attempts += 1;
        // This node stored the entry before the first round (a newer write
        // may have replaced it since, which is ordered after it).
        self.write_to_replicas(now, id, p, (phase, entry, result), out);
    }

    /// Sends `entry` (stored here already) in a write round of `phase` to
    /// the key's replicas by this node's ring now, answering `result` once
    /// it is acknowledged. This node's copy counts only if that ring (perhaps
    /// newer than the one the request started by: a flip that took it off)
    /// still lists it.
    pub(super) fn write_to_replicas(
        &mut self,
        now: Millis,
        id: u64,
        p: Box<Pending>,
        (phase, entry, result): (Phase, Entry, Frame),
        out: &mut Vec<Output>,
    ) {
        let (_, mut targets, newcomers) = self.replica_targets(p.hash);
        targets.extend(newcomers.iter().copied());
        let listed = self.serving_pref.get(p.hash).contains(&self.node_id);
        let write = WriteRound {
            phase,
            entry,
            base: None,
            result,
            targets,
            newcomers,
            acks: listed as usize,
        };
        self.write_round(now, id, p, write, out);
    }

    /// Starts (or restarts) a request: a write round for PUT, a read round for
    /// everything else.
    fn start_round(&mut self, now: Millis, id: u64, mut p: Box<Pending>, out: &mut Vec<Output>) {
        // One look-up of the key's lists serves the targets, the fence and
        // the joint read's test.
        let (serving, settled) = (self.serving_pref.get(p.hash), self.settled_pref.get(p.hash));
        let (_, others, newcomers) = self.targets_in(serving, settled);
        p.attempts += 1;
        p.fence = self.fence_in(serving, settled);
        let moving = serving != settled;
        if p.request.op == op::PUT || p.conditional() {
            self.rounds.writes.started(p.hash);
        }
        if p.request.op == op::PUT {
            let value = match (&p.value, kv::split_kv(&p.request.payload)) {
                (Some(v), _) => v.clone(),
                (None, Ok((_, v))) => v,
                (None, Err(e)) => return self.finish(p, Err(e), out),
            };
            if 1 + others.len() < p.write_need {
                // Refused before anything is stored: applied nowhere.
                return self.refuse_write(p, out);
            }
            let version = self.store_next(now, (&p.key, p.hash), Some(&value));
            p.maybe_applied = true;
            let mut targets = others;
            targets.extend(newcomers.iter().copied());
            let write = WriteRound {
                phase: Phase::Write,
                entry: Entry {
                    version,
                    value: Some(value),
                },
                base: None,
                result: Frame::new(op::OK, 0, 0, Bytes::new()),
                targets,
                newcomers,
                acks: 1,
            };
            return self.write_round(now, id, p, write, out);
        }
        if p.conditional() {
            return self.start_prepare(now, id, p, out);
        }
        self.start_read(now, id, p, (others, newcomers, moving), out);
    }

    /// Sends `ask` to each of `peers` for a round (request id, round tag) of
    /// a request for `key`; returns the peers it could not be sent to.
    fn ask_replicas(
        &mut self,
        now: Millis,
        (id, round, key): (u64, u32, &Bytes),
        peers: &[u32],
        ask: Frame,
        out: &mut Vec<Output>,
    ) -> Vec<u32> {
        // Reads queued for the turn's end leave first: a replica must see the
        // asks of requests in the order they arrived (a GET's ask after a
        // later PUT's write would read the PUT's value).
        self.send_reads(now, out);
        let deadline = now + self.cfg.request_timeout_ms;
        let mut failed = Vec::new();
        let mut ask = Some(ask);
        for (i, &peer) in peers.iter().enumerate() {
            let token = Waiter::Replica {
                id,
                round,
                key: key.clone(),
            };
            // The last peer takes the frame itself (most rounds ask one).
            let frame = if i + 1 == peers.len() {
                ask.take()
            } else {
                ask.clone()
            };
            let Some(frame) = frame else { break };
            if (self.mesh)
                .forward(peer, frame, token, 1, deadline, out)
                .is_err()
            {
                failed.push(peer);
            }
        }
        failed
    }

    /// Counts `peers` as answering nothing in the round of request `p`.
    fn unreachable_replicas(
        &mut self,
        now: Millis,
        id: u64,
        mut p: Box<Pending>,
        peers: Vec<u32>,
        out: &mut Vec<Output>,
    ) {
        for peer in peers {
            let answer = Answer::Failed(ErrorCode::Unavailable);
            if p.storing() {
                self.repair.resync.hint(peer, &p.key);
            }
            match p.on_answer(peer, answer) {
                Progress::Waiting => {}
                progress => return self.advance(now, id, p, progress, out),
            }
        }
        self.rounds.pending.insert(id, p);
    }

    /// Sends a write round's entry to its targets and waits for the
    /// acknowledgements.
    fn write_round(
        &mut self,
        now: Millis,
        id: u64,
        mut p: Box<Pending>,
        w: WriteRound,
        out: &mut Vec<Output>,
    ) {
        let record = Record {
            key: p.key.clone(),
            version: w.entry.version,
            value: w.entry.value.clone(),
        };
        // The lists this round's targets come from: this node's ring now,
        // which may be newer than the one the request started by (a commit
        // after a flip). Same ring, same fence: no second look-up.
        if p.fence.epoch != self.ring.epoch {
            p.fence = self.fence_of(p.hash);
        }
        let ask = Message::Replicate {
            base: w.base,
            fence: Some(p.fence),
            record,
        }
        .encode();
        let done = w.acks >= p.write_need && w.newcomers.is_empty();
        let alone = w.targets.is_empty();
        p.resend = w.base.is_none().then(|| w.entry.clone());
        p.round = Round::Writing {
            phase: w.phase,
            result: w.result,
            acks: w.acks,
            waiting: w.targets.clone(),
            newcomers: w.newcomers,
            newest_refusal: 0,
        };
        if p.request.op == op::PUT && p.value.is_none() {
            // From now on the PUT's value is the one in this payload (a record
            // ends with its value).
            let len = w.entry.value.as_ref().map_or(0, Bytes::len);
            p.value = Some(ask.payload.slice(ask.payload.len() - len..));
            p.request.payload = Bytes::new();
        }
        let failed = self.ask_replicas(now, (id, p.round_tag(), &p.key), &w.targets, ask, out);
        // Replicas this write cannot reach now get it later (hinted handoff),
        // and so do the nodes a pending move adds to the key's list: they count
        // as holding it once the ring flips.
        self.hint_unreachable(&p.key, p.hash, &failed);
        if done {
            let result = p.take_result();
            return self.finish(p, result.ok_or_else(Self::no_result), out);
        }
        if alone {
            return self.too_few_reachable(p, out);
        }
        self.unreachable_replicas(now, id, p, failed, out);
    }

    /// The error for a write round that ended without its reply (never happens:
    /// a write round always carries one).
    fn no_result() -> Error {
        Error::new(ErrorCode::Internal, "the write round lost its reply")
    }

    /// Hints `key` (ring hash `hash`) to every node on its serving or settled
    /// list that is unreachable now or in `failed`: each gets this node's
    /// current entry of the key once it is back.
    fn hint_unreachable(&mut self, key: &Bytes, hash: u64, failed: &[u32]) {
        let (serving, settled) = (self.serving_pref.get(hash), self.settled_pref.get(hash));
        let mut listed = serving.to_vec();
        listed.extend(settled.iter().filter(|id| !serving.contains(id)));
        for peer in listed {
            if peer != self.node_id && (!self.reachable(peer) || failed.contains(&peer)) {
                self.repair.resync.hint(peer, key);
            }
        }
    }

    /// Refuses a write before anything of it is stored: too few of its key's
    /// replicas are reachable for W. The unreachable ones are still hinted the
    /// key, so they get this node's current entry once they are back.
    fn refuse_write(&mut self, p: Box<Pending>, out: &mut Vec<Output>) {
        self.hint_unreachable(&p.key, p.hash, &[]);
        self.too_few_reachable(p, out);
    }

    /// Fails request `p` at once: too few of its replicas are reachable for a
    /// quorum, and none was asked, so no answer would end the round.
    fn too_few_reachable(&mut self, p: Box<Pending>, out: &mut Vec<Output>) {
        let e = Error::new(
            ErrorCode::Unavailable,
            "too few of the key's replicas are reachable",
        );
        self.finish(p, Err(e), out);
    }

    /// Replica `peer` answered round `round` of request `id` for `key` (or will
    /// not: an [`Answer::Failed`]).
    pub(super) fn replica_answer(
        &mut self,
        now: Millis,
        (id, round, key): (u64, u32, Bytes),
        peer: u32,
        answer: Answer,
        out: &mut Vec<Output>,
    ) {
        let Some(mut p) = self.rounds.pending.remove(&id) else {
            return self.late_answer(round, peer, &key, &answer);
        };
        if p.round_tag() != round {
            self.rounds.pending.insert(id, p);
            return self.late_answer(round, peer, &key, &answer);
        }
        match &answer {
            Answer::Copy(Some(e)) => self.hlc.observe(e.version),
            Answer::Promise { copy, accepted } => {
                let versions = [copy, accepted].map(|e| e.as_ref().map_or(0, |e| e.version));
                self.hlc.observe(versions[0].max(versions[1]));
            }
            Answer::Newer(v) => self.hlc.observe(*v),
            _ => {}
        }
        if p.storing() && !answer.holds_write() {
            // No answer (its link broke, it timed out) or a refusal: it may lack
            // the write, and the round no longer waits for it.
            self.repair.resync.hint(peer, &p.key);
        }
        match p.on_answer(peer, answer) {
            Progress::Waiting => {
                p.own_values();
                self.rounds.pending.insert(id, p);
            }
            Progress::ReadDone => self.finish_read(now, id, p, out),
            progress => {
                p.own_values();
                self.advance(now, id, p, progress, out)
            }
        }
    }

    /// An answer to a round that ended without it (it had its quorum, or it
    /// failed). Only a replica that may lack a write it was sent is hinted: one
    /// that stored it is not.
    fn late_answer(&mut self, round: u32, peer: u32, key: &Bytes, answer: &Answer) {
        if Pending::is_write_tag(round) && !answer.holds_write() {
            self.repair.resync.hint(peer, key);
        }
    }

    /// Acts on what an answer did to request `p`'s round.
    fn advance(
        &mut self,
        now: Millis,
        id: u64,
        mut p: Box<Pending>,
        progress: Progress,
        out: &mut Vec<Output>,
    ) {
        match progress {
            Progress::Waiting => {
                self.rounds.pending.insert(id, p);
            }
            Progress::ReadDone => self.finish_read(now, id, p, out),
            Progress::WriteDone if p.phase() == Some(Phase::Accept) => self.commit(now, id, p, out),
            Progress::WriteDone if p.completing() => {
                // Another proposer's accepted proposal is committed: now this op.
                p.set_completing(false);
                self.start_round(now, id, p, out);
            }
            Progress::WriteDone => {
                let result = p.take_result();
                self.finish(p, result.ok_or_else(Self::no_result), out);
            }
            Progress::Failed => self.round_failed(now, id, p, out),
            Progress::AskSpares => self.ask_spares(now, id, p, out),
        }
    }

    /// A round that can no longer succeed: start again, retry at the next tick,
    /// or answer the error.
    fn round_failed(&mut self, now: Millis, id: u64, mut p: Box<Pending>, out: &mut Vec<Output>) {
        let again = p.attempts < MAX_ATTEMPTS;
        let phase = p.phase();
        if phase == Some(Phase::Accept) && p.maybe_accepted() && !p.completing() {
            // Some replica may hold this op's proposal: a later prepare may
            // find it and finish it, so it must not be decided again.
            p.maybe_applied = true;
        } else if phase == Some(Phase::Accept) || (phase.is_none() && p.conditional()) {
            // A higher ballot or a newer version refused this attempt before
            // anything of this op was accepted: try again above it.
            if p.refused() && again {
                return self.start_round(now, id, p, out);
            }
        }
        // A PUT refused by a replica holding a newer version is not written
        // again above it: its first version is stored here and may have been
        // read, and the newer write may be built on it (a DELETE), so a second
        // version would apply the PUT twice (seeds 3002685, 5001912). It fails
        // with `ERR UNKNOWN` (it is ordered before the newer version, or never
        // seen).
        let writing = matches!(phase, Some(Phase::Write | Phase::Commit));
        if p.off_list && again && writing && p.resend.is_some() {
            // A replica's ring is newer: send the same entry again by it.
            p.off_list = false;
            self.rounds.pending.insert(id, p);
            self.rounds.retry_soon.push(id);
            return;
        }
        if p.off_list && again && !p.maybe_applied && !writing {
            // A replica's ring no longer has it on the key's list: this node's
            // ring is about to change too (a leave or drop just flipped). Try
            // again at the next tick, with that ring.
            p.off_list = false;
            self.rounds.pending.insert(id, p);
            self.rounds.retry_soon.push(id);
            return;
        }
        let e = Error::new(
            p.failure,
            format!(
                "too few of the key's replicas answered (round {})",
                p.attempts
            ),
        );
        self.finish(p, Err(e), out);
    }

    /// A read round has its copies: answer or repair; or a prepare round has
    /// its promises: finish an accepted proposal, or decide the op.
    fn finish_read(&mut self, now: Millis, id: u64, p: Box<Pending>, out: &mut Vec<Output>) {
        let (version, value) = p.newest();
        if p.conditional() {
            if let Some(unfinished) = p.unfinished() {
                let (mut p, result) = (p, Frame::new(op::OK, 0, 0, Bytes::new()));
                p.set_completing(true);
                return self.accept_round(now, id, p, unfinished.value, result, out);
            }
        }
        let decision = match decide(&p.request, value.as_ref()) {
            Ok(d) => d,
            Err(e) => return self.finish(p, Err(e), out),
        };
        let result = Frame::new(decision.reply, 0, 0, decision.payload);
        match decision.write {
            Some(write) if p.conditional() => self.accept_round(now, id, p, write, result, out),
            _ => self.repair(now, id, p, Entry { version, value }, result, out),
        }
    }

    /// A read that changes nothing (read repair): copies older than the newest
    /// (`newest`) are brought up to date before the answer (`result`), so no
    /// later read can see them.
    fn repair(
        &mut self,
        now: Millis,
        id: u64,
        p: Box<Pending>,
        newest: Entry,
        result: Frame,
        out: &mut Vec<Output>,
    ) {
        let version = newest.version;
        let stale = if version > 0 {
            p.stale(version)
        } else {
            vec![]
        };
        if stale.is_empty() && (version == 0 || p.lagging.is_empty()) {
            return self.finish(p, Ok(result), out);
        }
        // The round waits for the repair: what it keeps must not pin the
        // buffers its answers were read into.
        let (mut p, mut result) = (p, result);
        p.own_values();
        result.payload = Bytes::copy_from_slice(&result.payload);
        // A joint read's newest copy goes to W of the serving list and to
        // every live node the move adds, as a PUT's would (see
        // `repair_newcomers`); a plain read's to W of those it read.
        let newcomers = self.repair_newcomers(&p, &stale);
        let holders = match &p.round {
            Round::Reading { copies, .. } => copies
                .iter()
                .filter(|(n, _)| !stale.contains(n))
                .filter(|(n, _)| p.joint_lists().is_none_or(|v| v.serving.contains(n)))
                .count(),
            Round::Writing { .. } => 0,
        };
        let mut acks = holders;
        let me = self.node_id;
        if stale.contains(&me) {
            self.store((&p.key, p.hash), version, newest.value.as_deref(), None);
            acks += 1;
        }
        let mut targets: Vec<u32> = stale.into_iter().filter(|&n| n != me).collect();
        // Replicas that are catching up get the newest copy too.
        targets.extend(p.lagging.iter().copied());
        for &n in &newcomers {
            if !targets.contains(&n) {
                targets.push(n);
            }
        }
        let write = WriteRound {
            phase: Phase::Write,
            entry: newest,
            base: None,
            result,
            targets,
            newcomers,
            acks,
        };
        self.write_round(now, id, p, write, out);
    }

    /// The nodes a joint read's repair must reach besides W of the serving
    /// list: the live nodes the pending move adds to the key that did not
    /// answer with the newest copy (`stale` answered with older ones). With
    /// W of the serving list they make W of the settled one, so the copy the
    /// read returns is found by leads on either ring. None for a read that
    /// is not joint.
    fn repair_newcomers(&self, p: &Pending, stale: &[u32]) -> Vec<u32> {
        let (Some(view), Round::Reading { copies, .. }) = (p.joint_lists(), &p.round) else {
            return Vec::new();
        };
        let holds = |n: &u32| copies.iter().any(|(c, _)| c == n) && !stale.contains(n);
        (view.settled.iter().copied())
            .filter(|n| !view.serving.contains(n) && *n != self.node_id)
            .filter(|n| self.reachable(*n) && !holds(n))
            .collect()
    }

    /// Answers a request served over replicas; it is forgotten. A failure
    /// after a write of the request was stored here is answered `ERR UNKNOWN`
    /// whatever ended it (too few acknowledgements, a timeout, a refusal): the
    /// write may have been applied. Any other error means it was applied
    /// nowhere.
    /// Replicas that have not answered its last round are not hinted here: their
    /// answer, or their failure, still comes (see [`StorageNode::replica_answer`]).
    fn finish(&mut self, p: Box<Pending>, result: Result<Frame, Error>, out: &mut Vec<Output>) {
        if p.holds_key {
            // The key's next request may start.
            if let Some(queue) = self.rounds.busy.get_mut(&p.key) {
                match queue.pop_front() {
                    Some(next) => self.rounds.ready_turns.push(next),
                    None => {
                        self.rounds.busy.remove(&p.key);
                    }
                }
            }
        }
        let r = p.requester;
        let frame = match result {
            Ok(f) => Frame::new(f.op, r.client_id, self.node_id, f.payload),
            Err(e) if p.maybe_applied && e.code != ErrorCode::Unknown => {
                Frame::error(r.client_id, self.node_id, &outcome_unknown(&e))
            }
            Err(e) => Frame::error(r.client_id, self.node_id, &e),
        };
        self.conns.order.fill(r.conn, r.seq, frame, out);
    }
}

/// `ERR UNKNOWN` for a write that failed (`why`) after it may have been
/// applied somewhere.
pub(super) fn outcome_unknown(why: &Error) -> Error {
    Error::new(
        ErrorCode::Unknown,
        format!(
            "the write may or may not have been applied: {}",
            why.message
        ),
    )
}

/// `r` with its value copied out of the frame it was read from.
fn copy_record(r: Record) -> Record {
    Record {
        value: r.value.map(|v| Bytes::copy_from_slice(&v)),
        ..r
    }
}

/// An entry made of a record (its key dropped).
fn entry_of(r: Record) -> Entry {
    Entry {
        version: r.version,
        value: r.value,
    }
}

#[cfg(test)]
pub(super) mod tests;
