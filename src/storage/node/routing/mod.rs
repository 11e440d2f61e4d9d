//! Routing: where a request is served. A key-value request is served here, on
//! this node's own data, when this node is the key's owner (N = 1) or its lead
//! replica (N > 1, see [`super::replication`]); otherwise it is forwarded over
//! the mesh to the node that is, or answered `STALE` when a partition-aware
//! client routed it by an older ring. Replies to each client connection leave in
//! request order, and connections with too many replies held back stop being
//! read (holds).

pub(super) mod order;

use super::*;

/// The connections this node serves: which are proven members, each client's
/// reply order, and which are held (not read) for their reply backlog.
pub(super) struct Connections {
    pub(super) members: HashSet<ConnId>,
    pub(super) order: ReplyOrder,
    /// Client connections not being read because of their reply backlog.
    pub(super) held: HashSet<ConnId>,
    /// Connections that just proved membership (drained into `Output::Trust`).
    pub(super) trusted: Vec<ConnId>,
    /// When a refusal of a version too far ahead was last logged, per peer
    /// connection (see `StorageNode::version_ahead`).
    pub(super) ahead_logged: HashMap<ConnId, Millis>,
}

impl Connections {
    /// Nothing in progress yet.
    pub(super) fn new() -> Connections {
        Connections {
            members: Default::default(),
            order: Default::default(),
            held: Default::default(),
            trusted: Default::default(),
            ahead_logged: Default::default(),
        }
    }
}

impl StorageNode {
    /// Answers forwards that will get no reply from their peer.
    pub(super) fn fail_forwards(
        &mut self,
        now: Millis,
        fwds: Vec<Forward<Waiter>>,
        code: ErrorCode,
        out: &mut Vec<Output>,
    ) {
        for f in fwds {
            let sent = f.sent();
            let err = Error::new(
                code,
                match code {
                    ErrorCode::Timeout => format!("node {} did not answer in time", f.peer),
                    _ => format!("node {} is unreachable", f.peer),
                },
            );
            match f.token {
                token @ (Waiter::Replica { .. } | Waiter::Replicas { .. }) => {
                    self.reads_failed(now, f.peer, token, code, out);
                }
                Waiter::Client {
                    conn,
                    seq,
                    client_id,
                    write,
                } => {
                    // A write that reached the peer may have been applied there.
                    let err = if write && sent {
                        outcome_unknown(&err)
                    } else {
                        err
                    };
                    let frame = Frame::error(client_id, self.node_id, &err);
                    self.conns.order.fill(conn, seq, frame, out);
                }
                Waiter::Mirror {
                    conn, seq, result, ..
                } => {
                    // The next owner may have taken the write: its fate is unknown.
                    let frame =
                        Frame::error(result.client_id, self.node_id, &outcome_unknown(&err));
                    self.conns.order.fill(conn, seq, frame, out);
                }
                Waiter::Migrate { epoch } | Waiter::HandedProposal { epoch } => {
                    if let Some(h) = self.handoff.as_mut().filter(|h| h.epoch == epoch) {
                        h.failed = true;
                    }
                }
                Waiter::Resync { keys } => self.repair.resync.failed(f.peer, keys),
                Waiter::Purge { id } => {
                    self.tombstones.purges.remove(&id);
                }
                Waiter::Ignore => {}
                Waiter::AntiEntropy { id } => self.ae_failed(id),
            }
        }
    }

    /// The key of a key-value request, or `None` for other ops.
    pub(super) fn request_key(f: &Frame) -> Result<Option<Bytes>, Error> {
        Ok(Some(match f.op {
            op::PUT | op::CREATE | op::UPDATE | op::INCR => kv::split_kv(&f.payload)?.0,
            op::GET | op::DELETE | op::EXISTS => kv::key(&f.payload)?,
            _ => return Ok(None),
        }))
    }

    /// Serves one request from a client or a peer.
    pub(super) fn on_request(
        &mut self,
        now: Millis,
        conn: ConnId,
        f: Frame,
        out: &mut Vec<Output>,
    ) {
        let me = self.node_id;
        let member = self.conns.members.contains(&conn);
        let key = match Self::request_key(&f) {
            Ok(Some(k)) => Some(k),
            Ok(None) if f.op == op::SCAN => None,
            Ok(None) => return self.serve_other(now, conn, member, f, out),
            Err(e) => {
                let frame = Frame::error(f.client_id, me, &e);
                self.conns.order.ready(conn, frame, out);
                return;
            }
        };
        let refusal = if me == 0 || self.ring.is_empty() {
            // Not a member of a cluster yet (no id or no ring: the manager is
            // down or has not answered): no key op and no SCAN is served.
            // Serving alone would acknowledge writes the cluster cannot place
            // with its N and W, and a peer routing a key here by a ring that
            // lists this node would find a second lead.
            Some(self.not_a_member())
        } else {
            // No lease from the manager running: it may have dropped this
            // node, and others may serve its keys by a newer ring.
            self.no_lease(now)
        };
        if let Some(e) = refusal {
            let frame = Frame::error(f.client_id, me, &e);
            if member {
                return out.push(Output::Send { conn, frame });
            }
            return self.conns.order.ready(conn, frame, out);
        }
        let Some(key) = key else {
            return self.on_scan(now, conn, member, f, out);
        };
        let hash = hash64(&key);
        let owners = self.owners(hash);
        if !member && me != 0 && f.node_id == me && owners.serving.is_some_and(|o| o != me) {
            // A partition-aware client routed this here by an older ring.
            let epoch = self.ring.epoch.to_string();
            let frame = Frame::new(op::STALE, f.client_id, me, epoch);
            self.conns.order.ready(conn, frame, out);
            return;
        }
        // The write fence of a move (N = 1): once this node's handoff for the
        // epoch is acknowledged, the next owner holds everything, so the keys
        // moving away are served there (it takes forwarded requests before the
        // flip), never again here, nor after a ring change that keeps the
        // key's next owner (see `moves/handoff.rs`). Two nodes never both
        // accept writes to a key.
        let replicated = self.ring.replicas > 1;
        let fenced = !replicated
            && owners.serving == Some(me)
            && owners.settled.is_some_and(|n| {
                let handed = |h: &Handoff| h.epoch == self.ring.epoch && h.fenced(hash, n);
                n != me && self.handoff.as_ref().is_some_and(handed)
            });
        if fenced {
            let next = owners.settled.expect("fenced means a next owner");
            return self.forward_request(now, conn, member, f, next, out);
        }
        match owners.serving {
            Some(o) if o != me && !(member && owners.settled == Some(me)) => {
                self.forward_request(now, conn, member, f, o, out)
            }
            Some(_) if replicated => self.serve_replicated(now, conn, f, (key, hash), out),
            _ => self.serve_alone(now, (conn, member), f, (key, hash), owners, out),
        }
    }

    /// The refusal of a key-value request before this node is a member (it
    /// has no id or no ring yet).
    pub(super) fn not_a_member(&self) -> Error {
        Error::new(
            ErrorCode::Unavailable,
            format!(
                "not yet a member of a cluster: waiting for the manager at {}",
                self.cfg.manager
            ),
        )
    }

    /// Who serves the key with ring hash `hash` now (`serving`: with N > 1 its
    /// lead replica, or when every replica is down the first of them, for which
    /// forwarding answers UNAVAILABLE) and once pending moves settle (`settled`).
    /// Neither before this node has an id.
    fn owners(&self, hash: u64) -> Owners {
        if self.node_id == 0 {
            return Owners::default();
        }
        if self.ring.replicas > 1 {
            let first = || self.serving.owner_of_hash(hash);
            return Owners {
                serving: self.live_lead(hash).or_else(first),
                settled: self.settled_lead(hash),
            };
        }
        Owners {
            serving: self.serving.owner_of_hash(hash),
            settled: self.settled.owner_of_hash(hash),
        }
    }

    /// Forwards a key-value request to `owner`, which serves its key, unless
    /// `owner` is down or the request has been forwarded too often already.
    pub(super) fn forward_request(
        &mut self,
        now: Millis,
        conn: ConnId,
        member: bool,
        f: Frame,
        owner: u32,
        out: &mut Vec<Output>,
    ) {
        let hops = if member { f.node_id } else { 0 };
        let down = (self.ring.node(owner)).is_some_and(|n| n.state == NodeState::Down);
        if down || hops >= MAX_HOPS {
            let e = Error::new(
                ErrorCode::Unavailable,
                if down {
                    format!("node {owner}, the key's owner, is down")
                } else {
                    "the ring is changing; retry".to_string()
                },
            );
            let frame = Frame::error(f.client_id, self.node_id, &e);
            self.conns.order.ready(conn, frame, out);
            return;
        }
        let seq = self.conns.order.reserve(conn);
        let token = Waiter::Client {
            conn,
            seq,
            client_id: f.client_id,
            write: !matches!(f.op, op::GET | op::EXISTS | op::SCAN),
        };
        let deadline = now + self.cfg.request_timeout_ms;
        if let Err(fwd) = self.mesh.forward(owner, f, token, hops + 1, deadline, out) {
            self.fail_forwards(now, vec![*fwd], ErrorCode::Unavailable, out);
        }
    }

    /// Serves a key-value request for a key this node serves alone (N = 1);
    /// with a move pending, the next owner gets a copy of the write before the
    /// client gets its answer.
    fn serve_alone(
        &mut self,
        now: Millis,
        (conn, member): (ConnId, bool),
        f: Frame,
        (key, hash): (Bytes, u64),
        owners: Owners,
        out: &mut Vec<Output>,
    ) {
        let me = self.node_id;
        // With a move pending, a write goes to the next owner first and is
        // applied here only once it took it (see `mirror_write`), so no read
        // here sees a write the next owner may yet refuse.
        let next = owners
            .settled
            .filter(|&n| n != me && owners.serving == Some(me));
        let decided = match next {
            Some(_) => self.decide_kv(now, (&key, hash), &f),
            None => self
                .execute_kv(now, (&key, hash), &f)
                .map(|(o, p)| (o, p, None)),
        };
        let (reply, write) = match decided {
            Ok((op, payload, write)) => (Frame::new(op, f.client_id, me, payload), write),
            Err(e) if e.code.closes_connection() => {
                let frame = Frame::error(f.client_id, me, &e);
                return self.conns.order.last(conn, frame, out);
            }
            Err(e) => (Frame::error(f.client_id, me, &e), None),
        };
        match (next, write) {
            (Some(next), Some(write)) => {
                let before = self.engine.version_hashed(hash, &key);
                self.mirror_write(now, (conn, next), (&key, before), write, reply, out)
            }
            // Peers match replies by tag, not by order: answering a member at once
            // keeps a replica's answer from waiting behind requests this node is
            // still serving for that member (which may wait on the answer).
            _ if member => out.push(Output::Send { conn, frame: reply }),
            _ => self.conns.order.ready(conn, reply, out),
        }
    }

    /// Serves a request that is not a key-value one (see [`StorageNode::execute`]).
    fn serve_other(
        &mut self,
        now: Millis,
        conn: ConnId,
        member: bool,
        f: Frame,
        out: &mut Vec<Output>,
    ) {
        let me = self.node_id;
        let reply = match self.execute(now, conn, member, &f) {
            Ok((op, payload)) => Frame::new(op, f.client_id, me, payload),
            Err(e) if e.code.closes_connection() => {
                let frame = Frame::error(f.client_id, me, &e);
                return self.conns.order.last(conn, frame, out);
            }
            Err(e) => Frame::error(f.client_id, me, &e),
        };
        if member {
            out.push(Output::Send { conn, frame: reply });
        } else {
            self.conns.order.ready(conn, reply, out);
        }
    }

    /// A reply from a peer to one of our forwards.
    pub(super) fn on_peer_reply(&mut self, now: Millis, frame: Frame, out: &mut Vec<Output>) {
        let Some(fwd) = self.mesh.reply(&frame) else {
            return;
        };
        match fwd.token {
            Waiter::Replica { id, round, key } => {
                let answer = answer_of(&frame);
                self.replica_answer(now, (id, round, key), fwd.peer, answer, out);
            }
            Waiter::Replicas { asks } => self.reads_answered(now, fwd.peer, asks, &frame, out),
            Waiter::Client {
                conn,
                seq,
                client_id,
                ..
            } => {
                let reply = Frame::new(frame.op, client_id, self.node_id, frame.payload);
                self.conns.order.fill(conn, seq, reply, out);
            }
            Waiter::Mirror {
                conn,
                seq,
                result,
                again,
                ..
            } if frame.op != op::OK => {
                // Refused by the next owner (it holds a newer write, or its
                // ring does not give it the key yet) and never applied here:
                // applied nowhere, unless a first copy went to the key's
                // earlier next owner (`again`).
                let why = match frame.op {
                    op::REFUSED => "the key is moving and its new owner is not ready for it; retry",
                    _ => "the key is moving and its new owner holds a newer write; retry",
                };
                let e = Error::new(ErrorCode::Unavailable, why);
                let e = if again { outcome_unknown(&e) } else { e };
                let reply = Frame::error(result.client_id, self.node_id, &e);
                self.conns.order.fill(conn, seq, reply, out);
            }
            mirror @ Waiter::Mirror { .. } => self.mirror_taken(now, fwd.peer, mirror, out),
            Waiter::HandedProposal { epoch } => {
                if let Some(h) = self.handoff.as_mut().filter(|h| h.epoch == epoch) {
                    // Taken, or refused by a higher promise or a newer version
                    // (which a later prepare finds instead): delivered. A
                    // newcomer that refused it for its ring (not yet the one
                    // that adds it) must get it again, or a majority of the
                    // new list could miss a proposal the old list chose.
                    if frame.op == op::REFUSED {
                        h.failed = true;
                    } else {
                        h.acked(fwd.peer);
                    }
                }
                self.pump_handoff(now, out);
            }
            Waiter::Migrate { epoch } => {
                if let Some(h) = self.handoff.as_mut().filter(|h| h.epoch == epoch) {
                    if frame.op == op::OK {
                        h.acked(fwd.peer);
                    } else {
                        h.failed = true;
                    }
                }
                self.pump_handoff(now, out);
            }
            Waiter::Purge { id } => self.purge_answer(now, id, fwd.peer, &frame, out),
            Waiter::Ignore => {}
            Waiter::AntiEntropy { id } => self.ae_answer(now, id, &frame, out),
            Waiter::Resync { keys } => {
                if frame.op == op::OK {
                    self.repair.resync.acked(fwd.peer);
                } else {
                    self.repair.resync.failed(fwd.peer, keys);
                }
                self.pump_resync(now, out);
            }
        }
    }

    /// Stops reading connections whose held-back replies grew too large, and
    /// resumes the ones that drained. A client that pipelines without reading
    /// thus costs bounded memory even when its replies wait for other nodes.
    pub(super) fn apply_holds(&mut self, client: Option<ConnId>, out: &mut Vec<Output>) {
        if let Some(c) = client {
            let order = &self.conns.order;
            let over = order.outstanding(c) > HOLD_SLOTS || order.queued_bytes(c) > HOLD_BYTES;
            if over && self.conns.held.insert(c) {
                self.conns.order.hold(c, true, out);
            }
        }
        if self.conns.held.is_empty() {
            return;
        }
        let order = &self.conns.order;
        let drained: Vec<ConnId> = self
            .conns
            .held
            .iter()
            .copied()
            .filter(|&c| {
                order.outstanding(c) <= HOLD_SLOTS / 2 && order.queued_bytes(c) <= HOLD_BYTES / 2
            })
            .collect();
        for conn in drained {
            self.conns.held.remove(&conn);
            self.conns.order.hold(conn, false, out);
        }
    }

    /// The key's lead replica as this node sees it: the first node of its
    /// preference list that is reachable. A crashed lead is skipped as soon as
    /// its link breaks, before the manager marks it down.
    pub(super) fn live_lead(&self, hash: u64) -> Option<u32> {
        let pref = self.serving_pref.get(hash);
        pref.iter().copied().find(|&id| self.reachable(id))
    }

    /// The key's lead replica once pending moves settle: the first node of its
    /// settled preference list that is not down.
    pub(super) fn settled_lead(&self, hash: u64) -> Option<u32> {
        let up = |id: u32| (self.settled.node(id)).is_some_and(|n| n.state != NodeState::Down);
        self.settled_pref
            .get(hash)
            .iter()
            .copied()
            .find(|&id| up(id))
    }
}

/// Who serves a key now and once pending moves settle (see
/// [`StorageNode::owners`]).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Owners {
    serving: Option<u32>,
    settled: Option<u32>,
}
