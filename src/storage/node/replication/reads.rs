//! Plain reads' asks to other replicas, sent once per loop turn, and their
//! speculative deadlines.
//!
//! A GET or EXISTS this node leads asks R - 1 other replicas for their copy.
//! The asks are not sent at once: they are queued (`Rounds::reads`) and sent
//! at the end of the reactor's loop turn ([`StorageNode::send_reads`], called
//! from the node's `turn_end`), every ask to one replica in one message: a
//! lone ask as `REPL_READ`, several as one `REPL_READS`, answered by one
//! `COPIES` carrying each key's `REPL_READ` answer in order. Under pipelined
//! load a turn serves many clients' reads, so one message and one answer
//! carry what was a message and an answer per read. Each answer in a `COPIES`
//! goes to its round as a lone `REPL_READ`'s would; a batch that fails (its
//! link broke, it timed out, the replica refused the whole message) fails each
//! of its reads, which then ask their spares. The queue is also sent before
//! any other round's ask (a write, a prepare): a replica sees the asks in the
//! order their requests arrived, so a GET never reads a later PUT's value.
//!
//! A read with spare replicas (the key's other replicas, not asked) asks them
//! too after [`SPECULATIVE_READ_MS`]; every read waits the same delay, so the
//! deadlines are queued in order and one timer serves them all. A read that a
//! later write of its key has overtaken here (the write started after the
//! read and may have reached the spares already) does not ask them on that
//! timer: a spare could answer with the later write, and a client that
//! pipelined GET then SET would read its own SET. It asks them only if an
//! asked replica fails the read. Which reads were overtaken is kept in
//! [`WriteMarks`]: a fixed table of slots by key hash, so a write costs one
//! store and a false match (another key in the slot) only skips speculation.

use super::*;
use crate::protocol::cluster::{repl_reads, Fence, REPL_READS_BUDGET};

/// A queued or batched ask of a plain read: (request id, round tag). Its key
/// is its request's (a read's key is needed only to send the ask, and a
/// read that is not answered is not hinted).
pub(in crate::storage::node) type ReadAsk = (u64, u32);

/// Slots of [`WriteMarks`] (a power of two): 32 KiB of marks.
const WRITE_MARK_SLOTS: usize = 4096;

/// The writes this node has started as a lead, for telling whether a read
/// waiting for its speculative delay was overtaken by a write of its key.
pub(in crate::storage::node) struct WriteMarks {
    /// Writes started so far.
    count: u64,
    /// By slot (the key's ring hash modulo the slots), `count` when the
    /// slot's latest write started.
    slots: Box<[u64]>,
}

impl Default for WriteMarks {
    fn default() -> WriteMarks {
        WriteMarks {
            count: 0,
            slots: vec![0; WRITE_MARK_SLOTS].into_boxed_slice(),
        }
    }
}

impl WriteMarks {
    /// A write of the key with ring hash `hash` starts.
    pub(super) fn started(&mut self, hash: u64) {
        self.count += 1;
        self.slots[slot(hash)] = self.count;
    }

    /// Whether a write of a key sharing `hash`'s slot started after the
    /// count was `seen` (a read that began then has been overtaken).
    fn overtaken(&self, hash: u64, seen: u64) -> bool {
        self.slots[slot(hash)] > seen
    }
}

fn slot(hash: u64) -> usize {
    // Low bits: the high ones place the key on the ring, so the keys one
    // node leads share them.
    (hash as usize) & (WRITE_MARK_SLOTS - 1)
}

impl StorageNode {
    /// A plain read's round (GET, EXISTS): this node's own copy and asks to
    /// R - 1 of the key's other live replicas (`others`), queued for the end
    /// of the turn; the rest are spares. While a pending move changes the
    /// key's lists, a joint read: every live node of both lists is asked
    /// (`newcomers` are the settled list's nodes not on the serving one), and
    /// R copies of each list are needed.
    pub(super) fn start_read(
        &mut self,
        now: Millis,
        id: u64,
        mut p: Box<Pending>,
        (others, newcomers, moving): (Vec<u32>, Vec<u32>, bool),
        out: &mut Vec<Output>,
    ) {
        let local = (self.engine.entry_ref_hashed(p.hash, &p.key)).map(|e| e.to_entry());
        let mut asked = others;
        let joint = self.joint_read(&mut p, moving);
        // A plain read asks only the replicas it needs; the rest are spares.
        let spare = match p.request.op {
            _ if joint => {
                asked.extend(newcomers);
                Vec::new()
            }
            op::GET | op::EXISTS if p.read_need <= 1 => {
                asked.clear();
                Vec::new()
            }
            op::GET | op::EXISTS => asked.split_off(asked.len().min(p.read_need - 1)),
            _ => Vec::new(),
        };
        if !spare.is_empty() {
            self.spares_later(now + SPECULATIVE_READ_MS, (id, p.round_tag()), out);
        }
        let nobody = asked.is_empty() && spare.is_empty();
        p.round = Round::Reading {
            copies: vec![(self.node_id, local)],
            waiting: asked,
            spare,
        };
        // A plain read's asks leave at the end of the turn, with the turn's
        // other asks to the same replicas (see the module doc), unless the replica
        // is not in the mesh (the ask fails now).
        let plain = matches!(p.request.op, op::GET | op::EXISTS);
        let tag = p.round_tag();
        let (mut queued, mut direct) = (Vec::new(), Vec::new());
        if let Round::Reading { waiting, .. } = &p.round {
            for &peer in waiting {
                match plain && self.mesh.knows(peer) {
                    true => queued.push(peer),
                    false => direct.push(peer),
                }
            }
        }
        // The direct asks first: sending them sends the turn's queue, and
        // this read's own queued asks would be dropped with the read out of
        // `pending` (an ask of a request that ended is not sent).
        let failed = if direct.is_empty() {
            Vec::new()
        } else {
            let ask = Message::ReplRead {
                fence: p.fence,
                key: p.key.clone(),
            }
            .encode();
            self.ask_replicas(now, (id, tag, &p.key), &direct, ask, out)
        };
        for peer in queued {
            self.queue_read(peer, (id, tag));
        }
        if p.joint_read_done().unwrap_or(p.read_need <= 1) {
            return self.finish_read(now, id, p, out);
        }
        if nobody {
            // Nobody to wait for: no answer would ever end the round.
            return self.too_few_reachable(p, out);
        }
        self.unreachable_replicas(now, id, p, failed, out);
    }

    /// Makes `p`, a plain read, a joint read if a pending move changes its
    /// key's lists (`moving`; see [`Pending::set_joint_read`]); whether it did. This
    /// node's own copy counts toward each list it is on, unless it is
    /// catching up (then each list it is on needs one copy more).
    fn joint_read(&self, p: &mut Pending, moving: bool) -> bool {
        p.set_joint_read(None);
        if !moving || !matches!(p.request.op, op::GET | op::EXISTS) {
            return false;
        }
        let (serving, settled) = (self.serving_pref.get(p.hash), self.settled_pref.get(p.hash));
        let behind = self.behind(p.hash) as usize;
        let r = self.ring.read_quorum.max(1) as usize;
        let own = |list: &[u32]| list.contains(&self.node_id) as usize * behind;
        let needs = [
            r.min(serving.len()) + own(serving),
            r.min(settled.len()) + own(settled),
        ];
        let view = View {
            epoch: self.ring.epoch,
            serving: serving.to_vec(),
            settled: settled.to_vec(),
        };
        p.set_joint_read(Some((view, needs)));
        true
    }

    /// A read round's spare replicas are needed (an asked one failed it) or
    /// due ([`SPECULATIVE_READ_MS`] passed): asks them.
    pub(super) fn ask_spares(
        &mut self,
        now: Millis,
        id: u64,
        mut p: Box<Pending>,
        out: &mut Vec<Output>,
    ) {
        let spares = p.take_spares();
        let ask = Message::ReplRead {
            fence: p.fence,
            key: p.key.clone(),
        }
        .encode();
        let failed = self.ask_replicas(now, (id, p.round_tag(), &p.key), &spares, ask, out);
        self.unreachable_replicas(now, id, p, failed, out);
    }

    /// Queues a plain read's ask (request `id`, round tag `round`) to `peer`,
    /// to go out at the end of the turn with the turn's other asks to it.
    pub(super) fn queue_read(&mut self, peer: u32, ask: ReadAsk) {
        self.rounds.reads.push((peer, ask));
    }

    /// The end of a loop turn: sends the queued reads' asks, one message per
    /// replica.
    pub(in crate::storage::node) fn send_reads(&mut self, now: Millis, out: &mut Vec<Output>) {
        // A failed batch may start rounds again, which queue more asks.
        while !self.rounds.reads.is_empty() {
            let mut reads = std::mem::take(&mut self.rounds.reads);
            self.send_queued(now, &mut reads, out);
            if self.rounds.reads.is_empty() {
                // Keep the queue's room for the next turn.
                self.rounds.reads = reads;
            }
        }
    }

    /// Sends `reads` (left empty), one message per replica.
    fn send_queued(&mut self, now: Millis, reads: &mut Vec<(u32, ReadAsk)>, out: &mut Vec<Output>) {
        // Stable: each replica gets its asks in the order they were made.
        reads.sort_by_key(|&(peer, _)| peer);
        let deadline = now + self.cfg.request_timeout_ms;
        let mut reads = reads.drain(..).peekable();
        let pending = &self.rounds.pending;
        let mut failed = Vec::new();
        let size = |id: &u64| 4 + pending.get(id).map_or(0, |p| p.key.len());
        while let Some((peer, first)) = reads.next() {
            let (mut asks, mut bytes) = (vec![first], size(&first.0));
            while let Some((_, ask)) =
                reads.next_if(|(p, (id, _))| *p == peer && bytes + size(id) <= REPL_READS_BUDGET)
            {
                bytes += size(&ask.0);
                asks.push(ask);
            }
            // A request that ended meanwhile needs no ask.
            asks.retain(|(id, _)| pending.contains_key(id));
            let fence = |id: &u64| pending.get(id).map_or_else(Fence::default, |p| p.fence);
            let key = |id: &u64| pending.get(id).map_or(&[][..], |p| &p.key[..]);
            let (frame, token) = match asks[..] {
                [] => continue,
                [(id, round)] => {
                    let key = pending.get(&id).map_or_else(Bytes::new, |p| p.key.clone());
                    let fence = fence(&id);
                    let frame = Message::ReplRead {
                        fence,
                        key: key.clone(),
                    }
                    .encode();
                    (frame, Waiter::Replica { id, round, key })
                }
                _ => {
                    // The oldest epoch of the asks: each key's mark is of
                    // its own ring, and a replica compares marks whenever its
                    // ring is newer than the epoch.
                    let epoch = (asks.iter().map(|(id, _)| fence(id).epoch)).min();
                    let marked = asks.iter().map(|(id, _)| (fence(id).mark, key(id)));
                    let frame = repl_reads(epoch.unwrap_or(0), marked);
                    (frame, Waiter::Replicas { asks })
                }
            };
            if let Err(fwd) = (self.mesh).forward(peer, frame, token, 1, deadline, out) {
                // The replica left the mesh during the turn.
                failed.push((peer, fwd.token));
            }
        }
        drop(reads);
        for (peer, token) in failed {
            self.reads_failed(now, peer, token, ErrorCode::Unavailable, out);
        }
    }

    /// `peer` answered a batch of asks (`asks`) with `frame`: each ask gets its
    /// answer, or a failure if the frame is no `COPIES` of as many answers.
    pub(in crate::storage::node) fn reads_answered(
        &mut self,
        now: Millis,
        peer: u32,
        asks: Vec<ReadAsk>,
        frame: &Frame,
        out: &mut Vec<Output>,
    ) {
        let answers = match Reply::decode(frame) {
            Ok(Reply::Copies(answers)) if answers.len() == asks.len() => answers,
            _ => {
                let token = Waiter::Replicas { asks };
                return self.reads_failed(now, peer, token, ErrorCode::Unavailable, out);
            }
        };
        let deadline = now + self.cfg.request_timeout_ms;
        for ((id, round), answer) in asks.into_iter().zip(answers) {
            if answer.op == op::REPL_READ && answer.payload.is_empty() {
                // Too large for the batch: asked again, alone.
                let p = self
                    .rounds
                    .pending
                    .get(&id)
                    .map(|p| (p.key.clone(), p.fence));
                if let Some((key, fence)) = p.filter(|_| self.reading(id, round)) {
                    let frame = Message::ReplRead {
                        fence,
                        key: key.clone(),
                    }
                    .encode();
                    let token = Waiter::Replica { id, round, key };
                    if let Err(fwd) = (self.mesh).forward(peer, frame, token, 1, deadline, out) {
                        self.reads_failed(now, peer, fwd.token, ErrorCode::Unavailable, out);
                    }
                    continue;
                }
            }
            let ask = (id, round, Bytes::new());
            self.replica_answer(now, ask, peer, answer_of(&answer), out);
        }
    }

    /// Whether request `id` is still in the round `round` tags.
    fn reading(&self, id: u64, round: u32) -> bool {
        (self.rounds.pending.get(&id)).is_some_and(|p| p.round_tag() == round)
    }

    /// The asks `token` carries (a lone read's or a batch's) will get no
    /// answer from `peer`: each of their rounds counts it as failed (`code`).
    pub(in crate::storage::node) fn reads_failed(
        &mut self,
        now: Millis,
        peer: u32,
        token: Waiter,
        code: ErrorCode,
        out: &mut Vec<Output>,
    ) {
        let asks = match token {
            Waiter::Replica { id, round, key } => vec![(id, round, key)],
            Waiter::Replicas { asks } => asks
                .into_iter()
                .map(|(id, round)| (id, round, Bytes::new()))
                .collect(),
            _ => return,
        };
        for ask in asks {
            self.replica_answer(now, ask, peer, Answer::Failed(code), out);
        }
    }

    /// Queues the spare replicas of request `id`'s round `tag` to be asked at
    /// `at`, setting the [`TIMER_SPARES`] timer if none is set.
    pub(super) fn spares_later(&mut self, at: Millis, (id, tag): ReadAsk, out: &mut Vec<Output>) {
        let seen = self.rounds.writes.count;
        self.rounds.spare_due.push_back((at, id, tag, seen));
        if !self.rounds.spare_timer {
            self.rounds.spare_timer = true;
            out.push(Output::Timer {
                at,
                id: TIMER_SPARES,
            });
        }
    }

    /// The [`TIMER_SPARES`] timer fired: every read whose spares are due, that
    /// still reads and that no later write of its key overtook asks them too;
    /// the timer is set again for the next.
    pub(in crate::storage::node) fn spares_due(&mut self, now: Millis, out: &mut Vec<Output>) {
        self.rounds.spare_timer = false;
        while let Some(&(at, id, tag, seen)) = self.rounds.spare_due.front() {
            if at > now {
                self.rounds.spare_timer = true;
                out.push(Output::Timer {
                    at,
                    id: TIMER_SPARES,
                });
                return;
            }
            self.rounds.spare_due.pop_front();
            // An overtaken read stays as it is: its spares are asked only if
            // an asked replica fails it. A read started again since (a retry)
            // has a newer entry; its asks may still wait in this turn's queue,
            // which asking now would send while the read is out of `pending`.
            let due = (self.rounds.pending.get(&id)).is_some_and(|p| {
                p.round_tag() == tag && !self.rounds.writes.overtaken(p.hash, seen)
            });
            if let Some(p) = due.then(|| self.rounds.pending.remove(&id)).flatten() {
                self.ask_spares(now, id, p, out);
            }
        }
    }
}

/// A replica's reply to a round's ask, decoded. A copy's value is a slice of
/// the reply (see [`Pending::own_values`]: a round that keeps waiting copies
/// it out, so it does not pin the read buffer); a promise's are copied.
pub(in crate::storage::node) fn answer_of(f: &Frame) -> Answer {
    match Reply::decode(f) {
        Ok(Reply::Ok) => Answer::Stored,
        Ok(Reply::NotFound) => Answer::Copy(None),
        Ok(Reply::Found(r)) => Answer::Copy(Some(entry_of(r))),
        Ok(Reply::Conflict { version }) => Answer::Newer(version),
        Ok(Reply::Promise {
            committed,
            accepted,
        }) => Answer::Promise {
            copy: committed.map(|r| entry_of(copy_record(r))),
            accepted: accepted.map(|r| entry_of(copy_record(r))),
        },
        Ok(Reply::Refused(Refusal::CatchingUp)) => Answer::CatchingUp,
        Ok(Reply::Refused(Refusal::OffList { .. } | Refusal::StaleRing { .. })) => Answer::OffList,
        Ok(Reply::Failed(_) | Reply::Leaves(_) | Reply::Diff { .. } | Reply::Copies(_))
        | Err(_) => Answer::Failed(ErrorCode::Unavailable),
    }
}
