//! One request served over a key's replicas: the bookkeeping of a quorum read,
//! write or conditional op, with no I/O. The node (see its `replication`
//! module) sends the asks, turns each replica's reply into an [`Answer`], and
//! acts on the [`Progress`] that [`Pending::on_answer`] returns.
//!
//! The lead replica of a key (the first node of its preference list that is
//! reachable) serves every request for it:
//! - GET and EXISTS: a read round, its own copy plus `REPL_READ` to the other
//!   live replicas, until `R` copies are in. The newest copy by version is the
//!   current value. Replicas that disagree get the newest copy written back
//!   (read repair) before the answer, once `W` replicas hold it, so no later
//!   read can return anything older;
//! - PUT: a write round, a new version from the lead's clock, applied locally
//!   and sent as `REPLICATE` to every other live replica (and to the nodes a
//!   pending move adds to the key's preference list), until `W` replicas (the
//!   lead included) and every such newcomer have acknowledged it;
//! - CREATE, UPDATE, INCR, DELETE (their outcome depends on the current value):
//!   single-decree Paxos over the key's replicas (acceptors: see
//!   [`super::paxos`]). A prepare round (`PREPARE` with a ballot from the
//!   lead's clock) until a majority of the list (and at least `R`) promised,
//!   each with its committed copy and any accepted proposal; if an accepted
//!   proposal is newer than every committed copy it is finished first (accepted
//!   and committed under this ballot) and the op starts again; otherwise the op
//!   is decided against the newest committed copy. An accept round (`ACCEPT`)
//!   until a majority (and at least `W`) accepted; then a commit round
//!   (`REPLICATE`, version = ballot) until `W` replicas and every newcomer
//!   hold it. Nothing is applied to the data before the commit, so no read
//!   sees a value that may yet lose. While a move is pending, "a majority"
//!   is a majority of the key's serving list *and* of its settled list
//!   (joint majorities, see [`super::joint`]), and every prepare and accept
//!   carries the lead's view of the key, which acceptors on a newer ring
//!   that lists the key otherwise refuse. Two leads of one key cannot both
//!   decide: their ballots are ordered and the majorities they count meet in
//!   a node that promised the higher one.
//!
//! A [`Pending`]'s fields are visible to the replication module only (its
//! transitions live there and here); the rest of the node sees requests through
//! `Rounds`.
//!
//! Round tags: every ask carries its request's attempt and phase (see
//! [`Pending::round_tag`]); answers to an earlier round change nothing here,
//! and the node hints a replica whose write never arrived (see
//! [`Answer::holds_write`]).

use super::joint::{verdict, verdict_of, Verdict};
use crate::protocol::cluster::{Fence, View};
use crate::protocol::{op, ErrorCode, Frame};
use crate::reactor::ConnId;
use crate::storage::engine::Entry;
use bytes::Bytes;

/// How many times a request's rounds start over: a prepare or
/// accept refused by a higher ballot, another proposal finished first.
pub const MAX_ATTEMPTS: u32 = 4;

/// Where the answer goes.
#[derive(Debug, Clone, Copy)]
pub struct Requester {
    /// The client connection.
    pub conn: ConnId,
    /// Its reply slot.
    pub seq: u64,
    /// The client's id.
    pub client_id: u64,
}

/// What a replica said to one ask of a round, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Its copy of the key (`None`: it holds no entry), to a read.
    Copy(Option<Entry>),
    /// Its promise, to a prepare: its committed copy and the proposal it
    /// accepted and has not seen committed.
    Promise {
        /// Its copy of the key.
        copy: Option<Entry>,
        /// Its accepted proposal (version: the ballot).
        accepted: Option<Entry>,
    },
    /// It stored the write.
    Stored,
    /// It refused the write, the prepare or the accept: it holds (or promised)
    /// this version or ballot, at least as high.
    Newer(u64),
    /// It refused the read: it is catching up and may lack writes.
    CatchingUp,
    /// It refused: by its ring it is not on the key's lists.
    OffList,
    /// No usable answer (an error, a timeout, a lost link), for this reason.
    Failed(ErrorCode),
}

impl Answer {
    /// Whether the replica holds the write it was sent. Any other answer leaves
    /// it possibly without it, to be hinted: a refusal (`Newer`) too, since the
    /// version it holds is newer than the write's base, not than the write.
    pub fn holds_write(&self) -> bool {
        matches!(self, Answer::Stored)
    }
}

/// One request being served over replicas.
#[derive(Debug)]
pub struct Pending {
    /// Who asked.
    pub(super) requester: Requester,
    /// The request as the client sent it. Its payload is owned (not a slice of
    /// a read buffer) except a PUT's until its first write round is sent; from
    /// then on the PUT's value is `value`.
    pub(super) request: Frame,
    /// A PUT's value once its first write round is sent: a slice of that round's
    /// `REPLICATE` payload, which owns it.
    pub(super) value: Option<Bytes>,
    /// Its key.
    pub(super) key: Bytes,
    /// The key's ring hash.
    pub(super) hash: u64,
    /// Copies a read round needs (the lead's own included).
    pub(super) read_need: usize,
    /// Acknowledgements a write round needs (the lead's own included).
    pub(super) write_need: usize,
    /// Rounds started so far.
    pub(super) attempts: u32,
    /// The round in progress.
    pub(super) round: Round,
    /// The worst failure seen, for the error if the request fails.
    pub(super) failure: ErrorCode,
    /// This request holds its key at the lead: later requests for the key
    /// wait until it finishes.
    pub(super) holds_key: bool,
    /// A conditional op's Paxos state (see [`Proposer`]).
    paxos: Proposer,
    /// Replicas that refused a read of this request because they are catching
    /// up: a read that finds a copy sends it to them too.
    pub(super) lagging: Vec<u32>,
    /// A replica refused a read because its ring has it off the key's lists.
    pub(super) off_list: bool,
    /// This node's ring epoch and the mark of the key's lists by it when the
    /// round started: every replica request of the round carries it.
    pub(super) fence: Fence,
    /// A plain read of a key a pending move changes: the copies it needs of
    /// the key's serving list and of its settled list (see
    /// [`Pending::set_joint_read`]). `None`: `read_need` copies of any.
    joint_read: Option<Box<(View, [usize; 2])>>,
    /// A write of this request was stored here (and so may have been sent
    /// on, read by another lead, or kept): if the request fails now, its
    /// outcome is unknown (`ERR UNKNOWN`), never `UNAVAILABLE`. Never cleared:
    /// once stored, the write may have been read by another lead and built
    /// upon.
    pub(super) maybe_applied: bool,
    /// The entry of the write round in progress (a plain write, a read's
    /// repair or a commit), to send again, at the same version, if replicas
    /// whose rings are newer refused it (see `StorageNode::resend`).
    pub(super) resend: Option<Entry>,
}

/// A conditional op's state as a Paxos proposer, owned by its [`Pending`]
/// and changed only through its methods.
#[derive(Debug, Default)]
struct Proposer {
    /// Acceptances an accept round needs (a majority of the key's list, and at
    /// least W).
    accept_need: usize,
    /// The ballot of the attempt in progress (0: none yet).
    ballot: u64,
    /// The newest accepted proposal the prepare round's promises reported.
    accepted: Option<Entry>,
    /// The highest ballot or version that refused this attempt's prepare or
    /// accept (0: none): the next ballot goes past it.
    nacked: u64,
    /// The proposal of the accept round in progress (version: the ballot).
    proposal: Option<Entry>,
    /// Replicas the accept round in progress sent `ACCEPT` to, and how many of
    /// them refused it outright: the others may hold the proposal.
    asked: (usize, usize),
    /// The accept and commit rounds in progress finish another proposer's
    /// accepted proposal: once committed, this op starts again.
    completing: bool,
    /// The lead's view of the key when this attempt's prepare started: the
    /// lists whose majorities its prepare and accept rounds count, sent with
    /// each ask.
    view: View,
    /// The nodes that accepted the accept round in progress.
    accepted_by: Vec<u32>,
}

/// A round of a request served over replicas.
#[derive(Debug)]
pub enum Round {
    /// Collecting copies.
    Reading {
        /// (node, its copy) for every answer so far.
        copies: Vec<(u32, Option<Entry>)>,
        /// Nodes asked that have not answered.
        waiting: Vec<u32>,
        /// Replicas not asked yet: a plain read asks only as many as it needs,
        /// and these when one of those fails it or is slow to answer.
        spare: Vec<u32>,
    },
    /// Collecting acknowledgements of a write (or acceptances of a proposal).
    Writing {
        /// Which kind of write.
        phase: Phase,
        /// The reply to send once the write is acknowledged.
        result: Frame,
        /// Replicas that stored it (the lead included).
        acks: usize,
        /// Replicas asked that have not answered.
        waiting: Vec<u32>,
        /// Nodes a pending move adds to the key: each must store it.
        newcomers: Vec<u32>,
        /// The highest version a refusal named.
        newest_refusal: u64,
    },
}

/// The kind of a write round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A conditional op's accept round: a refusal counts against it.
    Accept,
    /// A conditional op's commit round: a replica holding a newer version
    /// counts as holding it (the commit is ordered before that version).
    Commit,
    /// A PUT or a read repair: a replica holding a newer version refused it.
    Write,
}

/// Takes `node` off a round's waiting list; false if it was not on it (an
/// answer to an earlier round, or one already counted).
fn answered(waiting: &mut Vec<u32>, node: u32) -> bool {
    match waiting.iter().position(|&n| n == node) {
        Some(i) => {
            waiting.swap_remove(i);
            true
        }
        None => false,
    }
}

/// What a reply did to a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Still waiting.
    Waiting,
    /// The read round has enough copies.
    ReadDone,
    /// The write round is acknowledged: send the result.
    WriteDone,
    /// The round can no longer succeed.
    Failed,
    /// The read round can succeed only with its spare replicas: ask them.
    AskSpares,
}

impl Pending {
    /// A request for `key` (ring hash `hash`) that needs `read_need` copies to
    /// read and `write_need` acknowledgements to write; no round started yet.
    pub fn new(
        requester: Requester,
        request: Frame,
        (key, hash): (Bytes, u64),
        read_need: usize,
        write_need: usize,
    ) -> Pending {
        Pending {
            requester,
            request,
            value: None,
            key,
            hash,
            read_need,
            write_need,
            attempts: 0,
            round: Round::Reading {
                copies: Vec::new(),
                waiting: Vec::new(),
                spare: Vec::new(),
            },
            failure: ErrorCode::Unavailable,
            holds_key: false,
            paxos: Proposer {
                accept_need: write_need,
                ..Proposer::default()
            },
            lagging: Vec::new(),
            off_list: false,
            fence: Fence::default(),
            joint_read: None,
            maybe_applied: false,
            resend: None,
        }
    }

    /// The phase of the write round in progress (`None`: a read or prepare).
    pub fn phase(&self) -> Option<Phase> {
        match &self.round {
            Round::Writing { phase, .. } => Some(*phase),
            Round::Reading { .. } => None,
        }
    }

    /// Whether the round in progress stores data on replicas (a commit or a
    /// plain write): a replica that may lack it is hinted.
    pub fn storing(&self) -> bool {
        matches!(self.phase(), Some(Phase::Commit | Phase::Write))
    }

    /// Whether the request is a conditional op (served by Paxos).
    pub fn conditional(&self) -> bool {
        !matches!(self.request.op, op::GET | op::EXISTS | op::PUT)
    }

    /// Whether some replica may hold the proposal of the accept round in
    /// progress: it accepted, or it was sent the proposal and did not refuse
    /// it outright (it may have accepted and its answer been lost).
    pub fn maybe_accepted(&self) -> bool {
        let acks = match &self.round {
            Round::Writing {
                phase: Phase::Accept,
                acks,
                ..
            } => *acks,
            _ => return false,
        };
        let (asked, refused) = self.paxos.asked;
        acks > 0 || asked > refused
    }

    /// Sets what a conditional op needs: `promises` for its prepare round and
    /// `acceptances` for its accept round.
    pub fn set_paxos_needs(&mut self, promises: usize, acceptances: usize) {
        self.read_need = promises;
        self.paxos.accept_need = acceptances;
    }

    /// Acceptances an accept round needs.
    pub fn accept_need(&self) -> usize {
        self.paxos.accept_need
    }

    /// The floor of this op's next ballot: above its last one and above
    /// whatever refused it.
    pub fn ballot_floor(&self) -> u64 {
        self.paxos.ballot.max(self.paxos.nacked)
    }

    /// A new attempt's prepare round under `ballot`: whatever the last attempt
    /// was doing (finishing another proposal included) is over.
    pub fn begin_prepare(&mut self, ballot: u64, view: View) {
        self.paxos.view = view;
        self.paxos.ballot = ballot;
        self.paxos.accepted = None;
        self.paxos.nacked = 0;
        self.paxos.completing = false;
    }

    /// The ballot of the attempt in progress.
    pub fn ballot(&self) -> u64 {
        self.paxos.ballot
    }

    /// The lead's view of the key for the attempt in progress.
    pub fn view(&self) -> &View {
        &self.paxos.view
    }

    /// Counts `node` (this lead) as having accepted the accept round's proposal.
    pub fn accepted_here(&mut self, node: u32) {
        self.paxos.accepted_by.push(node);
    }

    /// Where a conditional op's prepare or accept round stands by joint
    /// majorities (`None` for any other round): done, still waiting, or
    /// failed (see [`super::joint::verdict`]).
    pub fn paxos_progress(&self) -> Option<Progress> {
        if !self.conditional() {
            return None;
        }
        let view = &self.paxos.view;
        let (v, done) = match &self.round {
            Round::Reading {
                copies, waiting, ..
            } => {
                let voters: Vec<u32> = copies.iter().map(|&(n, _)| n).collect();
                (
                    verdict(view, self.read_need, &voters, waiting),
                    Progress::ReadDone,
                )
            }
            Round::Writing {
                phase: Phase::Accept,
                waiting,
                ..
            } => (
                verdict(
                    view,
                    self.paxos.accept_need,
                    &self.paxos.accepted_by,
                    waiting,
                ),
                Progress::WriteDone,
            ),
            Round::Writing { .. } => return None,
        };
        Some(match v {
            Verdict::Done => done,
            Verdict::Waiting => Progress::Waiting,
            Verdict::Failed => Progress::Failed,
        })
    }

    /// Notes that `higher` (a ballot or a version) refused this attempt.
    pub fn refused_by(&mut self, higher: u64) {
        self.paxos.nacked = self.paxos.nacked.max(higher);
    }

    /// Whether something refused this attempt's prepare or accept.
    pub fn refused(&self) -> bool {
        self.paxos.nacked > 0
    }

    /// Starts an accept round (`round`, an [`Phase::Accept`] write) of
    /// `proposal` (its version is the ballot), about to ask `asked` replicas.
    pub fn begin_accept(&mut self, proposal: Entry, round: Round, asked: usize) {
        self.paxos.proposal = Some(proposal);
        self.paxos.accepted_by.clear();
        self.paxos.asked = (asked, 0);
        self.round = round;
    }

    /// How many replicas the accept round's `ACCEPT` actually reached the
    /// links of (the others were unreachable: they cannot hold it).
    pub fn begin_accept_sent(&mut self, sent: usize) {
        self.paxos.asked.0 = sent;
    }

    /// Takes the proposal of a finished accept round, to commit it.
    pub fn take_proposal(&mut self) -> Option<Entry> {
        self.paxos.proposal.take()
    }

    /// Marks the accept and commit rounds about to start as finishing another
    /// proposer's proposal (`true`), or this op's own (`false`).
    pub fn set_completing(&mut self, completing: bool) {
        self.paxos.completing = completing;
    }

    /// Whether the rounds in progress finish another proposer's proposal.
    pub fn completing(&self) -> bool {
        self.paxos.completing
    }

    /// Records `peer`'s answer to the round in progress.
    pub fn on_answer(&mut self, peer: u32, answer: Answer) -> Progress {
        let accepted = self.phase() == Some(Phase::Accept)
            && answer == Answer::Stored
            && matches!(&self.round, Round::Writing { waiting, .. } if waiting.contains(&peer));
        if accepted {
            self.paxos.accepted_by.push(peer);
        }
        if answer == Answer::OffList {
            // Its ring says this lead's is stale (or its own is): retried at
            // the next tick if nothing of the write may have been applied,
            // or a write round sent again (see `StorageNode::resend`).
            self.off_list = true;
        }
        let progress = self.counted(peer, answer);
        self.paxos_progress().unwrap_or(progress)
    }

    /// Records `peer`'s answer by the counts of R and W (a conditional op's
    /// rounds are then judged by [`Pending::paxos_progress`]).
    fn counted(&mut self, peer: u32, answer: Answer) -> Progress {
        if answer == Answer::Failed(ErrorCode::Timeout) {
            self.failure = ErrorCode::Timeout;
        }
        let outright = matches!(
            answer,
            Answer::Newer(_) | Answer::CatchingUp | Answer::OffList
        );
        if self.phase() == Some(Phase::Accept) && outright {
            self.paxos.asked.1 += 1;
        }
        if let (None | Some(Phase::Accept), Answer::Newer(v)) = (self.phase(), &answer) {
            self.refused_by(*v);
        }
        if let Some(phase) = self.phase() {
            return self.ack_from(
                peer,
                match answer {
                    Answer::Stored => Ok(()),
                    Answer::Newer(_) if phase == Phase::Commit => Ok(()),
                    Answer::Newer(v) => Err(Some(v)),
                    _ => Err(None),
                },
            );
        }
        match &answer {
            Answer::CatchingUp => self.lagging.push(peer),
            Answer::Promise {
                accepted: Some(a), ..
            } => self.note_accepted(Some(a.clone())),
            _ => {}
        }
        let copy = match answer {
            Answer::Copy(c) | Answer::Promise { copy: c, .. } => Some(c),
            _ => None,
        };
        self.copy_from(peer, copy)
    }

    /// Keeps `accepted` if it is the newest accepted proposal seen.
    pub fn note_accepted(&mut self, accepted: Option<Entry>) {
        if let Some(a) = accepted {
            if (self.paxos.accepted.as_ref()).is_none_or(|b| a.version > b.version) {
                self.paxos.accepted = Some(a);
            }
        }
    }

    /// The accepted proposal a finished prepare round must finish first: the
    /// newest one, if it is newer than every committed copy.
    pub fn unfinished(&self) -> Option<Entry> {
        let committed = self.highest();
        self.paxos
            .accepted
            .clone()
            .filter(|a| a.version > committed)
    }

    /// The highest version a refusal of the write round named (0: none).
    #[cfg(test)]
    pub fn newest_refusal(&self) -> u64 {
        match &self.round {
            Round::Writing { newest_refusal, .. } => *newest_refusal,
            Round::Reading { .. } => 0,
        }
    }

    /// Takes the reply a finished write round sends.
    pub fn take_result(&mut self) -> Option<Frame> {
        match &mut self.round {
            Round::Writing { result, .. } => {
                Some(std::mem::replace(result, Frame::new(0, 0, 0, Bytes::new())))
            }
            Round::Reading { .. } => None,
        }
    }

    /// The tag that requests of the round in progress carry (as
    /// `ReplyTo::Replica`'s round) and answers must match: the attempt and the
    /// phase. Both phases of one attempt go to the same replicas, so a read
    /// answer that arrives after its round moved on to writing must not count
    /// as that replica's answer to the write (it would be taken for a refusal
    /// and the replica's real acknowledgement ignored).
    pub fn round_tag(&self) -> u32 {
        let phase = match self.phase() {
            None => 0,
            Some(Phase::Accept) => 1,
            Some(Phase::Commit | Phase::Write) => 2,
        };
        self.attempts.wrapping_mul(4).wrapping_add(phase)
    }

    /// Whether a round tag (see [`Pending::round_tag`]) is that of a round
    /// that stores data (a commit or a plain write).
    pub fn is_write_tag(tag: u32) -> bool {
        tag % 4 == 2
    }

    /// Records a read-round answer from `node` (`None`: no answer, e.g. a timeout;
    /// `Some(None)`: the node has no copy).
    pub fn copy_from(&mut self, node: u32, copy: Option<Option<Entry>>) -> Progress {
        let Round::Reading {
            copies,
            waiting,
            spare,
        } = &mut self.round
        else {
            return Progress::Waiting;
        };
        if !answered(waiting, node) {
            return Progress::Waiting;
        }
        if let Some(c) = copy {
            copies.push((node, c));
        }
        if let Some(joint) = &self.joint_read {
            let voters: Vec<u32> = copies.iter().map(|&(n, _)| n).collect();
            return match verdict_of(&joint.0, joint.1, &voters, waiting) {
                Verdict::Done => Progress::ReadDone,
                Verdict::Waiting => Progress::Waiting,
                Verdict::Failed if spare.is_empty() => Progress::Failed,
                Verdict::Failed => Progress::AskSpares,
            };
        }
        if copies.len() >= self.read_need {
            Progress::ReadDone
        } else if copies.len() + waiting.len() < self.read_need {
            if spare.is_empty() {
                Progress::Failed
            } else {
                Progress::AskSpares
            }
        } else {
            Progress::Waiting
        }
    }

    /// Makes this plain read a joint one: while a pending move changes the
    /// key's lists, it needs `needs[0]` copies of `view`'s serving list and
    /// `needs[1]` of its settled list. A lead on the ring after the move's
    /// flip writes to W of the settled list alone, and one still on the
    /// pending ring (the flip reaches nodes at different times) must meet
    /// every such quorum.
    pub fn set_joint_read(&mut self, joint: Option<(View, [usize; 2])>) {
        self.joint_read = joint.map(Box::new);
    }

    /// A joint read's lists (see [`Pending::set_joint_read`]).
    pub fn joint_lists(&self) -> Option<&View> {
        self.joint_read.as_ref().map(|j| &j.0)
    }

    /// Whether the copies in already make a joint read's quorums (`None`:
    /// not a joint read).
    pub fn joint_read_done(&self) -> Option<bool> {
        let joint = self.joint_read.as_ref()?;
        let Round::Reading { copies, .. } = &self.round else {
            return Some(false);
        };
        let voters: Vec<u32> = copies.iter().map(|&(n, _)| n).collect();
        Some(verdict_of(&joint.0, joint.1, &voters, &[]) == Verdict::Done)
    }

    /// Moves a read round's spare replicas to its waiting list and returns
    /// them, to be asked now (none for a write round).
    pub fn take_spares(&mut self) -> Vec<u32> {
        match &mut self.round {
            Round::Reading { waiting, spare, .. } => {
                waiting.extend_from_slice(spare);
                std::mem::take(spare)
            }
            Round::Writing { .. } => Vec::new(),
        }
    }

    /// Records a write-round answer from `node`: `Ok(())` stored, `Err(Some(v))`
    /// refused because it holds version `v`, `Err(None)` no answer.
    pub fn ack_from(&mut self, node: u32, answer: Result<(), Option<u64>>) -> Progress {
        let need = self.write_need;
        let Round::Writing {
            acks,
            waiting,
            newcomers,
            newest_refusal,
            ..
        } = &mut self.round
        else {
            return Progress::Waiting;
        };
        if !answered(waiting, node) {
            return Progress::Waiting;
        }
        let newcomer = newcomers.iter().position(|&n| n == node);
        match answer {
            Ok(()) => match newcomer {
                Some(j) => {
                    newcomers.swap_remove(j);
                }
                None => *acks += 1,
            },
            Err(refused) => {
                if let Some(v) = refused {
                    *newest_refusal = (*newest_refusal).max(v);
                }
                if newcomer.is_some() {
                    return Progress::Failed;
                }
            }
        }
        let replicas_waiting = waiting.iter().filter(|n| !newcomers.contains(n)).count();
        if *acks >= need && newcomers.is_empty() {
            Progress::WriteDone
        } else if *acks + replicas_waiting < need {
            Progress::Failed
        } else {
            Progress::Waiting
        }
    }

    /// Copies the values of a read round's copies out of the frames they
    /// arrived in (see `answer_of`), so a round that keeps waiting does not pin
    /// its answers' read buffers.
    pub fn own_values(&mut self) {
        if let Round::Reading { copies, .. } = &mut self.round {
            for e in copies.iter_mut().filter_map(|(_, c)| c.as_mut()) {
                e.value = e.value.as_ref().map(|v| Bytes::copy_from_slice(v));
            }
        }
    }

    /// The newest copy of a finished read round: `(version, value)`, version 0
    /// and no value when no replica has the key.
    pub fn newest(&self) -> (u64, Option<Bytes>) {
        let Round::Reading { copies, .. } = &self.round else {
            return (0, None);
        };
        copies
            .iter()
            .filter_map(|(_, c)| c.as_ref())
            .max_by_key(|e| e.version)
            .map_or((0, None), |e| (e.version, e.value.clone()))
    }

    /// The highest version any copy of a finished read round has.
    pub fn highest(&self) -> u64 {
        let Round::Reading { copies, .. } = &self.round else {
            return 0;
        };
        let versions = copies.iter().filter_map(|(_, c)| c.as_ref());
        versions.map(|e| e.version).max().unwrap_or(0)
    }

    /// Nodes of a finished read round whose copy is older than `version`.
    pub fn stale(&self, version: u64) -> Vec<u32> {
        let Round::Reading { copies, .. } = &self.round else {
            return Vec::new();
        };
        copies
            .iter()
            .filter(|(_, c)| c.as_ref().map_or(0, |e| e.version) < version)
            .map(|&(n, _)| n)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(read_need: usize, write_need: usize, round: Round) -> Pending {
        let requester = Requester {
            conn: ConnId::new(1, 1),
            seq: 0,
            client_id: 7,
        };
        let request = Frame::new(op::GET, 7, 0, &b"k"[..]);
        let key = (Bytes::from_static(b"k"), 0);
        let mut p = Pending::new(requester, request, key, read_need, write_need);
        p.attempts = 1;
        p.round = round;
        p
    }

    fn entry(version: u64, value: &'static [u8]) -> Option<Entry> {
        Some(Entry {
            version,
            value: Some(Bytes::from_static(value)),
        })
    }

    #[test]
    fn a_read_round_needs_r_copies_and_finds_the_newest() {
        let round = Round::Reading {
            copies: vec![(1, entry(5, b"old"))],
            waiting: vec![2, 3],
            spare: Vec::new(),
        };
        let mut p = pending(2, 2, round);
        assert_eq!(p.copy_from(9, Some(None)), Progress::Waiting, "not asked");
        assert_eq!(
            p.copy_from(2, None),
            Progress::Waiting,
            "3 may still answer"
        );
        assert_eq!(p.copy_from(3, Some(entry(8, b"new"))), Progress::ReadDone);
        assert_eq!(p.newest(), (8, Some(Bytes::from_static(b"new"))));
        assert_eq!(p.stale(8), vec![1]);

        let round = Round::Reading {
            copies: vec![(1, None)],
            waiting: vec![2, 3],
            spare: Vec::new(),
        };
        let mut p = pending(3, 2, round);
        assert_eq!(p.copy_from(2, Some(None)), Progress::Waiting);
        assert_eq!(p.copy_from(3, None), Progress::Failed);
        assert_eq!(p.newest(), (0, None));
    }

    #[test]
    fn a_read_round_asks_its_spares_when_the_asked_replica_fails_it() {
        let round = Round::Reading {
            copies: vec![(1, entry(5, b"v"))],
            waiting: vec![2],
            spare: vec![3],
        };
        let mut p = pending(2, 2, round);
        assert_eq!(p.copy_from(2, None), Progress::AskSpares);
        assert_eq!(p.take_spares(), vec![3]);
        assert!(p.take_spares().is_empty(), "asked once");
        assert_eq!(p.copy_from(3, Some(entry(5, b"v"))), Progress::ReadDone);
    }

    #[test]
    fn the_read_and_write_phases_of_an_attempt_have_different_tags() {
        let mut p = pending(
            2,
            2,
            Round::Reading {
                copies: vec![],
                waiting: vec![2],
                spare: Vec::new(),
            },
        );
        p.attempts = 1;
        let read = p.round_tag();
        p.round = writing(vec![2], vec![]);
        let write = p.round_tag();
        p.attempts = 2;
        p.round = Round::Reading {
            copies: vec![],
            waiting: vec![2],
            spare: Vec::new(),
        };
        let next = p.round_tag();
        assert!(read != write && write != next && read != next);
    }

    fn writing(waiting: Vec<u32>, newcomers: Vec<u32>) -> Round {
        Round::Writing {
            phase: Phase::Write,
            result: Frame::new(op::OK, 7, 1, Bytes::new()),
            acks: 1,
            waiting,
            newcomers,
            newest_refusal: 0,
        }
    }

    #[test]
    fn a_write_round_needs_w_acks_and_every_newcomer() {
        let mut p = pending(2, 2, writing(vec![2, 3], vec![]));
        assert_eq!(p.ack_from(2, Err(Some(40))), Progress::Waiting);
        assert_eq!(p.ack_from(3, Ok(())), Progress::WriteDone);

        let mut p = pending(2, 2, writing(vec![2, 3], vec![]));
        assert_eq!(p.ack_from(2, Err(Some(40))), Progress::Waiting);
        assert_eq!(p.ack_from(3, Err(None)), Progress::Failed);
        let Round::Writing { newest_refusal, .. } = p.round else {
            unreachable!()
        };
        assert_eq!(newest_refusal, 40);

        // Node 4 joins the key's list: the write waits for it too.
        let mut p = pending(2, 2, writing(vec![2, 4], vec![4]));
        assert_eq!(p.ack_from(2, Ok(())), Progress::Waiting);
        assert_eq!(p.ack_from(4, Ok(())), Progress::WriteDone);
        let mut p = pending(2, 2, writing(vec![2, 4], vec![4]));
        assert_eq!(p.ack_from(4, Err(None)), Progress::Failed);
    }

    #[test]
    fn answers_mark_lagging_and_off_list_replicas_and_timeouts() {
        let reading = Round::Reading {
            copies: vec![(1, None)],
            waiting: vec![2, 3, 4],
            spare: Vec::new(),
        };
        let mut p = pending(3, 2, reading);
        assert_eq!(p.on_answer(2, Answer::CatchingUp), Progress::Waiting);
        assert_eq!(p.lagging, vec![2]);
        assert_eq!(p.on_answer(3, Answer::OffList), Progress::Failed);
        assert!(p.off_list);
        assert_eq!(p.failure, ErrorCode::Unavailable);
        assert_eq!(
            p.on_answer(4, Answer::Failed(ErrorCode::Timeout)),
            Progress::Failed
        );
        assert_eq!(p.failure, ErrorCode::Timeout, "the worst failure is kept");

        // In a write round only a store counts; a copy or a refusal is no ack.
        let mut p = pending(2, 2, writing(vec![2, 3], vec![]));
        assert!(p.storing() && Pending::is_write_tag(p.round_tag()));
        assert_eq!(p.on_answer(2, Answer::Copy(None)), Progress::Waiting);
        assert_eq!(p.on_answer(3, Answer::Newer(77)), Progress::Failed);
        assert_eq!(p.newest_refusal(), 77);
        assert!(p.take_result().is_some_and(|f| f.op == op::OK));
    }
}
