//! Replication: with N > 1, a key's lead replica (the first reachable node of
//! its preference list) serves every request for the key in quorum rounds over
//! the other replicas (the bookkeeping of one request is a [`Pending`], see
//! [`round`]): reads collect R copies, writes W acknowledgements;
//! read repair writes the newest copy back to stale replicas; conditional ops
//! are decided against the newest copy and refused by a replica holding
//! anything newer.
//!
//! A request is taken out of `pending` while a step works on it and put back if
//! it still waits for answers, so each transition has the request in hand.
//! Requests for one key run one write at a time, in arrival order (`busy`).
//!
//! Honest outcomes: a write is refused before it is stored when fewer than W of
//! its key's replicas (this node included) are reachable, with `ERR
//! UNAVAILABLE`: applied nowhere. Once a write of the request is stored here
//! (`Pending::maybe_applied`), any failure is answered `ERR UNKNOWN` (see
//! `finish`): the copy here, or on a replica that took it, may be read later.

pub(super) mod round;

use super::*;

/// The requests this node serves over replicas as their keys' lead replica.
pub(super) struct Rounds {
    /// Requests this node serves over replicas, by id.
    pub(super) pending: HashMap<u64, Pending>,
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
        }
    }
}

/// A write round about to start: what it sends and to whom.
struct WriteRound {
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
        let me = self.node_id;
        let pref = self.serving_pref.get(hash);
        let live = |id: &u32| *id != me && self.reachable(*id);
        let others: Vec<u32> = pref.iter().copied().filter(live).collect();
        let newcomers: Vec<u32> = (self.settled_pref.get(hash).iter().copied())
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
        let mut p = Pending::new(requester, request, (key, hash), read_need, write_need);
        // Requests for one key run in arrival order: a write holds the key until
        // it is answered, and whatever arrives meanwhile waits its turn. Reads that
        // find the key free run at once (they see every write applied here).
        let writes = !matches!(p.request.op, op::GET | op::EXISTS);
        // The request is kept until the replicas answer: its payload is copied,
        // so it does not pin the read buffer it arrived in (a client that never
        // reads would pin many). A PUT that starts at once is copied only into
        // its write round's REPLICATE payload.
        let own = |p: &mut Pending| p.request.payload = Bytes::copy_from_slice(&p.request.payload);
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

    /// Starts request `id` again (its key's turn came, or a retry is due).
    pub(super) fn restart(&mut self, now: Millis, id: u64, out: &mut Vec<Output>) {
        if let Some(p) = self.rounds.pending.remove(&id) {
            self.start_round(now, id, p, out);
        }
    }

    /// Starts (or restarts) a request: a write round for PUT, a read round for
    /// everything else.
    fn start_round(&mut self, now: Millis, id: u64, mut p: Pending, out: &mut Vec<Output>) {
        let (_, others, newcomers) = self.replica_targets(p.hash);
        p.attempts += 1;
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
            let wall = self.cfg.clock_base_ms + now;
            let version = self
                .hlc
                .next(wall, self.engine.version_hashed(p.hash, &p.key));
            self.store((&p.key, p.hash), version, Some(&value), None);
            p.maybe_applied = true;
            let mut targets = others;
            targets.extend(newcomers.iter().copied());
            let write = WriteRound {
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
        let local = (self.engine.entry_ref_hashed(p.hash, &p.key)).map(|e| e.to_entry());
        p.round = Round::Reading {
            copies: vec![(self.node_id, local)],
            waiting: others.clone(),
        };
        let ask = Message::ReplRead { key: p.key.clone() }.encode();
        let failed = self.ask_replicas(now, (id, p.round_tag(), &p.key), &others, ask, out);
        if p.read_need <= 1 {
            return self.finish_read(now, id, p, out);
        }
        if others.is_empty() {
            // Nobody to wait for: no answer would ever end the round.
            return self.too_few_reachable(p, out);
        }
        self.unreachable_replicas(now, id, p, failed, out);
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
        let deadline = now + self.cfg.request_timeout_ms;
        (peers.iter().copied())
            .filter(|&peer| {
                let token = Waiter::Replica {
                    id,
                    round,
                    key: key.clone(),
                };
                let sent = (self.mesh).forward(peer, ask.clone(), token, 1, deadline, out);
                sent.is_err()
            })
            .collect()
    }

    /// Counts `peers` as answering nothing in the round of request `p`.
    fn unreachable_replicas(
        &mut self,
        now: Millis,
        id: u64,
        mut p: Pending,
        peers: Vec<u32>,
        out: &mut Vec<Output>,
    ) {
        for peer in peers {
            let answer = Answer::Failed(ErrorCode::Unavailable);
            if p.writing() {
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
        mut p: Pending,
        w: WriteRound,
        out: &mut Vec<Output>,
    ) {
        let record = Record {
            key: p.key.clone(),
            version: w.entry.version,
            value: w.entry.value.clone(),
        };
        let ask = Message::Replicate {
            base: w.base,
            record,
        }
        .encode();
        let done = w.acks >= p.write_need && w.newcomers.is_empty();
        let alone = w.targets.is_empty();
        p.round = Round::Writing {
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
    fn refuse_write(&mut self, p: Pending, out: &mut Vec<Output>) {
        self.hint_unreachable(&p.key, p.hash, &[]);
        self.too_few_reachable(p, out);
    }

    /// Fails request `p` at once: too few of its replicas are reachable for a
    /// quorum, and none was asked, so no answer would end the round.
    fn too_few_reachable(&mut self, p: Pending, out: &mut Vec<Output>) {
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
        match (&answer, p.writing()) {
            (Answer::Copy(Some(e)), false) => self.hlc.observe(e.version),
            (Answer::Newer(v), true) => self.hlc.observe(*v),
            // No answer (its link broke, it timed out) or a refusal: it may lack
            // the write, and the round no longer waits for it.
            (Answer::Stored, true) => {}
            (_, true) => self.repair.resync.hint(peer, &p.key),
            (_, false) => {}
        }
        match p.on_answer(peer, answer) {
            Progress::Waiting => {
                self.rounds.pending.insert(id, p);
            }
            progress => self.advance(now, id, p, progress, out),
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
        mut p: Pending,
        progress: Progress,
        out: &mut Vec<Output>,
    ) {
        match progress {
            Progress::Waiting => {
                self.rounds.pending.insert(id, p);
            }
            Progress::ReadDone => self.finish_read(now, id, p, out),
            Progress::WriteDone => {
                let result = p.take_result();
                self.finish(p, result.ok_or_else(Self::no_result), out);
            }
            Progress::Failed => self.round_failed(now, id, p, out),
        }
    }

    /// A round that can no longer succeed: start again, retry at the next tick,
    /// or answer the error.
    fn round_failed(&mut self, now: Millis, id: u64, mut p: Pending, out: &mut Vec<Output>) {
        let refused = p.newest_refusal() > 0;
        if refused {
            // A replica holds something newer than this write's base: the write
            // lost. Its copies (here and on replicas that took it) must not count
            // as the newest when the key is decided again. Its own copy goes back
            // to what it was.
            if let Some((version, prev)) = p.undo.take() {
                p.refused.push(version);
                self.undo(&p.key, version, prev);
            }
        }
        if refused && p.attempts < MAX_ATTEMPTS {
            self.start_round(now, id, p, out);
        } else if p.off_list && p.attempts < MAX_ATTEMPTS {
            // A replica's ring no longer has it on the key's list: this node's
            // ring is about to change too (a leave or drop just flipped). Try
            // again at the next tick, with that ring.
            p.off_list = false;
            self.rounds.pending.insert(id, p);
            self.rounds.retry_soon.push(id);
        } else {
            let e = Error::new(
                p.failure,
                format!(
                    "too few of the key's replicas answered (round {})",
                    p.attempts
                ),
            );
            self.finish(p, Err(e), out);
        }
    }

    /// A read round has its copies: answer, repair, or decide and write.
    fn finish_read(&mut self, now: Millis, id: u64, mut p: Pending, out: &mut Vec<Output>) {
        let (version, value) = p.newest();
        if p.refused.iter().max().is_some_and(|&mine| version > mine) {
            // This request's write was refused, and a copy newer than that write
            // exists: another lead wrote the key since, maybe deciding on this
            // very write (read from a replica that took it). Deciding again could
            // apply it twice, so the outcome stays unknown to the client.
            let e = Error::new(
                ErrorCode::Unknown,
                "the key changed elsewhere while this write was refused; it may have been applied",
            );
            return self.finish(p, Err(e), out);
        }
        let base = p.highest();
        let decision = match decide(&p.request, value.as_ref()) {
            Ok(d) => d,
            Err(e) => return self.finish(p, Err(e), out),
        };
        let result = Frame::new(decision.reply, 0, 0, decision.payload);
        let Some(write) = decision.write else {
            return self.repair(now, id, p, Entry { version, value }, result, out);
        };
        let (_, mut targets, newcomers) = self.replica_targets(p.hash);
        if 1 + targets.len() < p.write_need {
            // Refused before anything is stored: applied nowhere (unless an
            // earlier attempt's write was: see `finish`).
            return self.refuse_write(p, out);
        }
        let wall = self.cfg.clock_base_ms + now;
        let next = self.hlc.next(wall, base);
        let prev = (self.engine.entry_ref_hashed(p.hash, &p.key)).map(|e| e.to_entry());
        match self.store((&p.key, p.hash), next, write.as_deref(), Some(base)) {
            Applied::Stored => {
                p.undo = Some((next, prev));
                p.maybe_applied = true;
            }
            Applied::Newer(v) => {
                // Something newer reached this node meanwhile: decide again.
                self.hlc.observe(v);
                if p.attempts < MAX_ATTEMPTS {
                    return self.start_round(now, id, p, out);
                }
                let e = Error::new(ErrorCode::Unavailable, "the key kept changing");
                return self.finish(p, Err(e), out);
            }
        }
        targets.extend(newcomers.iter().copied());
        let write = WriteRound {
            entry: Entry {
                version: next,
                value: write,
            },
            base: Some(base),
            result,
            targets,
            newcomers,
            acks: 1,
        };
        self.write_round(now, id, p, write, out);
    }

    /// A read that changes nothing (read repair): copies older than the newest
    /// (`newest`) are brought up to date before the answer (`result`), so no
    /// later read can see them.
    fn repair(
        &mut self,
        now: Millis,
        id: u64,
        p: Pending,
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
        let holders = match &p.round {
            Round::Reading { copies, .. } => copies.len() - stale.len(),
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
        let write = WriteRound {
            entry: newest,
            base: None,
            result,
            targets,
            newcomers: vec![],
            acks,
        };
        self.write_round(now, id, p, write, out);
    }

    /// Answers a request served over replicas; it is forgotten. A failure
    /// after a write of the request was stored here is answered `ERR UNKNOWN`
    /// whatever ended it (too few acknowledgements, a timeout, a refusal): the
    /// write may have been applied. Any other error means it was applied
    /// nowhere.
    /// Replicas that have not answered its last round are not hinted here: their
    /// answer, or their failure, still comes (see [`StorageNode::replica_answer`]).
    fn finish(&mut self, p: Pending, result: Result<Frame, Error>, out: &mut Vec<Output>) {
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

/// A replica's reply to a round's ask, decoded. A value is copied out of the
/// reply, so a round waiting for other replicas does not pin the read buffer.
pub(super) fn answer_of(f: &Frame) -> Answer {
    match Reply::decode(f) {
        Ok(Reply::Ok) => Answer::Stored,
        Ok(Reply::NotFound) => Answer::Copy(None),
        Ok(Reply::Found(r)) => Answer::Copy(Some(Entry {
            version: r.version,
            value: r.value.map(|v| Bytes::copy_from_slice(&v)),
        })),
        Ok(Reply::Conflict { version }) => Answer::Newer(version),
        Ok(Reply::Refused(Refusal::CatchingUp)) => Answer::CatchingUp,
        Ok(Reply::Refused(Refusal::OffList { .. })) => Answer::OffList,
        Ok(Reply::Failed(_) | Reply::Leaves(_) | Reply::Diff { .. }) | Err(_) => {
            Answer::Failed(ErrorCode::Unavailable)
        }
    }
}
