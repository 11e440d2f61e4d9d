//! Serving from this node's own data: client ops on keys it serves alone (N = 1),
//! the cluster messages peers send it (`REPLICATE`, `REPL_READ`, `REPL_READS`, `PREPARE`,
//! `ACCEPT`, `SYNC_REQ`, `SYNC_DONE`, `PURGE`, `MIGRATE`, `NODE_JOIN`; decoded
//! by [`crate::protocol::cluster`], refusals typed as [`Refusal`]; anti-entropy's
//! `AE_DIGEST` and `AE_KEYS` are answered in `repair/anti_entropy.rs`), and the
//! only ways its data changes: [`StorageNode::store`] (and
//! [`StorageNode::store_next`], a lead replica's write that picks its version
//! in the same look-up of the key) and [`StorageNode::purge`], each logged
//! when the node has a data directory.

use super::*;
use crate::protocol::cluster::{lists_mark, CopiesWriter, Fence, View};
use crate::storage::engine::EntryRef;

impl StorageNode {
    /// Applies a write to the engine and, if it was stored, logs it. With
    /// [`StorageNode::store_next`] and [`StorageNode::purge`], the only ways the node's
    /// data changes (besides dropping keys a ring change moved away, which a
    /// snapshot follows): each logs what it changed (see [`crate::storage::durable`]).
    /// `hash` is the key's ring hash.
    pub(super) fn store(
        &mut self,
        (key, hash): (&[u8], u64),
        version: u64,
        value: Option<&[u8]>,
        base: Option<u64>,
    ) -> Applied {
        let slot = self.ae_slot(hash);
        let change = self.engine.apply_hashed(hash, key, version, value, base);
        self.stored((key, hash, slot), version, value, change.replaced);
        change.applied
    }

    /// A lead replica's unconditional write of `value` to `key` (ring hash
    /// `hash`): stores it at a version from this node's clock above the one
    /// held, deciding and storing in one look-up of the key (as [`store`]
    /// does otherwise). Returns the version.
    ///
    /// [`store`]: StorageNode::store
    pub(super) fn store_next(
        &mut self,
        now: Millis,
        (key, hash): (&[u8], u64),
        value: Option<&[u8]>,
    ) -> u64 {
        let wall = self.cfg.clock_base_ms + now;
        let slot = self.ae_slot(hash);
        let hlc = &mut self.hlc;
        let next = |held| hlc.next(wall, held);
        let (version, change) = self.engine.apply_next_hashed(hash, key, value, next);
        self.stored((key, hash, slot), version, value, change.replaced);
        version
    }

    /// The bookkeeping of a write the engine took (`replaced`: see
    /// [`crate::storage::engine::Change::replaced`]): the anti-entropy digests
    /// (the key's leaf found by [`StorageNode::ae_slot`]) and the journal.
    fn stored(
        &mut self,
        (key, hash, slot): (&[u8], u64, Option<usize>),
        version: u64,
        value: Option<&[u8]>,
        replaced: Option<Option<(u64, bool)>>,
    ) {
        let Some(old) = replaced else { return };
        self.ae_changed_at(slot, hash, old, Some((version, value.is_some())));
        if let Some(d) = self.journal.as_mut() {
            d.log(key, version, value);
        }
    }

    /// Forgets `key` if its entry is still the tombstone at `version` (tombstone
    /// collection), and logs that it did; counts it for the sweep's log line.
    pub(super) fn purge(&mut self, key: &[u8], version: u64) {
        if self.engine.remove_tombstone(key, version) {
            let hash = hash64(key);
            self.ae_changed(hash, Some((version, false)), None);
            self.anti_entropy.floors.collected(hash, version);
            self.tombstones.collected += 1;
            if let Some(d) = self.journal.as_mut() {
                d.log_purge(key, version);
            }
        }
    }

    /// Serves a key-value request on this node's own data (a key it serves
    /// alone): decides it against the stored value and applies its write.
    pub(super) fn execute_kv(
        &mut self,
        now: Millis,
        (key, hash): (&[u8], u64),
        f: &Frame,
    ) -> Result<(u8, Bytes), Error> {
        let (reply, payload, write) = self.decide_kv(now, (key, hash), f)?;
        if let Some(w) = write {
            self.store((key, hash), w.version, w.value.as_deref(), None);
        }
        Ok((reply, payload))
    }

    /// Decides a key-value request against this node's own data without
    /// applying it: the reply, and the write it makes (a new version), if any.
    pub(super) fn decide_kv(
        &mut self,
        now: Millis,
        (key, hash): (&[u8], u64),
        f: &Frame,
    ) -> Result<(u8, Bytes, Option<Entry>), Error> {
        let entry = self.engine.entry_ref_hashed(hash, key);
        let held = entry.map_or(0, |e| e.version);
        let current = entry.and_then(|e| e.value).map(Bytes::copy_from_slice);
        let d = decide(f, current.as_ref())?;
        let write = d.write.map(|value| {
            let wall = self.cfg.clock_base_ms + now;
            let version = self.hlc.next(wall, held);
            Entry { version, value }
        });
        Ok((d.reply, d.payload, write))
    }

    /// Serves a request that is not a key-value one: `PING`, the member handshake
    /// (`MEMBER_HELLO`, `NODE_JOIN`, see `handshake`), and
    /// from a proven member the cluster messages (see [`StorageNode::serve_peer`]).
    pub(super) fn execute(
        &mut self,
        now: Millis,
        conn: ConnId,
        member: bool,
        f: &Frame,
    ) -> Result<(u8, Bytes), Error> {
        if member {
            if let Some(answer) = self.serve_peer(now, conn, f) {
                return answer;
            }
        }
        Ok(match f.op {
            op::PING => (op::PONG, f.payload.clone()),
            op::STATUS => {
                let facts = super::super::status::Facts {
                    node_id: self.node_id,
                    addr: &self.cfg.advertise,
                    ring: &self.ring,
                    serving: &self.serving_pref,
                    engine: &self.engine,
                    catching_up: self.repair.catch_up.is_some(),
                    ring_received: self.repair.seen_ring,
                    moving: self.handoff.is_some(),
                    leaving: self.membership.leaving,
                    manager_link: self.membership.manager.conn().is_some(),
                    lease_ms: self.membership.lease_until.saturating_sub(now),
                    awaiting_peers: self.awaiting_peers(),
                    anti_entropy: self.ae_status(now),
                };
                if &f.payload[..] == b"keys" {
                    (
                        op::STATUS_REPLY,
                        super::super::status::reply_with_keys(&facts),
                    )
                } else {
                    (op::STATUS_REPLY, super::super::status::reply(&facts))
                }
            }
            op::HELLO | op::RING => {
                return Err(Error::new(
                    ErrorCode::BadOp,
                    format!(
                        "{} is a manager request; the manager is at {}",
                        op::name(f.op),
                        self.cfg.manager
                    ),
                ))
            }
            op::MEMBER_HELLO => return self.on_member_hello(conn, f),
            op::NODE_JOIN => return self.on_node_join(conn, f),
            o => return Err(Error::bad_op(o, member, "a storage node")),
        })
    }

    /// Serves a cluster message from a member; `None` if `f` is not one this
    /// node serves. A malformed message is an error (`BADOP`, `BADKEY`).
    /// A record whose version is too far ahead of this node's clock refuses the
    /// whole message (see [`StorageNode::version_ahead`]).
    fn serve_peer(
        &mut self,
        now: Millis,
        conn: ConnId,
        f: &Frame,
    ) -> Option<Result<(u8, Bytes), Error>> {
        let ok = (op::OK, Bytes::new());
        let message = match Message::decode(f) {
            Ok(m) => m,
            Err(e) if Message::is_message_op(f.op) => return Some(Err(e)),
            Err(_) => return None,
        };
        let versions: &[Record] = match &message {
            Message::Replicate { record, .. } => std::slice::from_ref(record),
            Message::Migrate { records } => records,
            _ => &[],
        };
        let ballot = match &message {
            Message::Prepare { ballot, .. } => *ballot,
            _ => 0,
        };
        if let Some(v) = versions.iter().map(|r| r.version).chain([ballot]).max() {
            if let Some(e) = self.version_ahead(now, conn, v) {
                return Some(Err(e));
            }
        }
        if let Some(e) = self.round_without_lease(now, &message) {
            return Some(Err(e));
        }
        Some(Ok(match message {
            Message::Replicate {
                base,
                fence,
                record,
            } => self.replicate(base, fence, &record),
            Message::ReplRead { fence, key } => self.replica_read(fence, &key),
            Message::ReplReads { epoch, keys } => {
                let mut copies = CopiesWriter::new(keys.len());
                for (mark, key) in &keys {
                    match self.replica_copy(key, Fence { epoch, mark: *mark }) {
                        Ok(Some(e)) => copies.found(key, e.version, e.value),
                        Ok(None) => copies.answer(op::NOT_FOUND, &[]),
                        Err(why) => copies.answer(op::REFUSED, &refused(why).1),
                    }
                }
                let frame = copies.finish();
                (frame.op, frame.payload)
            }
            Message::Prepare { ballot, view, key } => self.paxos_prepare(now, ballot, &view, &key),
            Message::Accept { record, view } => self.paxos_accept(now, &record, view.as_ref()),
            Message::SyncReq {
                node_id: peer,
                round,
                epoch,
            } => {
                if self.ring.node(peer).is_some() && peer != self.node_id {
                    log::info!("node {peer} is catching up and asks for its keys (round {round})");
                    self.repair.resync.asked(peer, round, epoch);
                }
                ok
            }
            Message::SyncDone {
                node_id: peer,
                round,
            } => {
                self.unheard_done(peer, round);
                self.catch_up_progress(now, Some((peer, round)));
                ok
            }
            Message::Purge { version, key } => {
                self.purge(&key, version);
                ok
            }
            Message::AeDigest { end, epoch, root } => self.ae_serve_digest(end, epoch, root),
            Message::AeKeys { end, leaves, stubs } => self.ae_serve_keys(end, &leaves, &stubs),
            Message::Migrate { records } => {
                let offlist = records
                    .iter()
                    .map(|r| self.check_replica_of(hash64(&r.key)));
                if let Some(Err(refusal)) = offlist.into_iter().find(Result::is_err) {
                    return Some(Ok(refused(refusal)));
                }
                for r in records {
                    self.hlc.observe(r.version);
                    let hash = hash64(&r.key);
                    self.store((&r.key, hash), r.version, r.value.as_deref(), None);
                }
                ok
            }
            _ => return None,
        }))
    }

    /// The refusal of a peer's version too far ahead of this node's clock (see
    /// [`Hlc::admits`]), if it is: `ERR BADOP`, and the key keeps its value.
    /// Logged at most once per [`AHEAD_LOG_MS`] per peer connection.
    fn version_ahead(&mut self, now: Millis, conn: ConnId, version: u64) -> Option<Error> {
        let wall = self.cfg.clock_base_ms + now;
        let ahead = self.hlc.admits(wall, version).err()?;
        let logged = &mut self.conns.ahead_logged;
        if logged.get(&conn).is_none_or(|&t| now >= t + AHEAD_LOG_MS) {
            logged.insert(conn, now);
            log::warn!(
                "refused a version {ahead} ms ahead of this node's clock from peer connection \
                 {conn} (at most {} ms; more from it are not logged for a minute)",
                super::super::hlc::MAX_AHEAD_MS
            );
        }
        Some(Error::new(
            ErrorCode::BadOp,
            format!(
                "version {version} is {ahead} ms ahead of this node's clock (at most {} ms)",
                super::super::hlc::MAX_AHEAD_MS
            ),
        ))
    }

    /// `REPLICATE`: a lead replica's write of one record, conditional on the
    /// version it was decided against (`base`), from a lead whose `fence` is
    /// not stale (a move's copy has none).
    pub(super) fn replicate(
        &mut self,
        base: Option<u64>,
        fence: Option<Fence>,
        r: &Record,
    ) -> (u8, Bytes) {
        let hash = hash64(&r.key);
        if let Err(refusal) = self.check_fenced_replica_of(hash, fence) {
            return refused(refusal);
        }
        self.hlc.observe(r.version);
        let value = r.value.as_deref();
        let applied = self.store((&r.key, hash), r.version, value, base);
        // A commit of a conditional op's proposal (or anything newer) ends
        // the key's Paxos slot.
        let held = match applied {
            Applied::Stored => r.version,
            Applied::Newer(version) => version,
        };
        self.rounds.acceptor.committed(&r.key, held);
        match applied {
            Applied::Stored => (op::OK, Bytes::new()),
            Applied::Newer(version) => reply(Reply::Conflict { version }),
        }
    }

    /// `PREPARE`: a proposer's ballot for `key` (see `replication::paxos`):
    /// this replica's promise with its committed entry and any accepted
    /// proposal, or `CONFLICT` with a higher ballot or version.
    fn paxos_prepare(&mut self, now: Millis, ballot: u64, view: &View, key: &Bytes) -> (u8, Bytes) {
        let hash = hash64(key);
        if let Err(refusal) = self.paxos_refusal(hash, Some(view)) {
            return refused(refusal);
        }
        self.hlc.observe(ballot);
        let wall = self.cfg.clock_base_ms + now;
        let entry = self.engine.entry_ref_hashed(hash, key);
        let stored = entry.map_or(0, |e| e.version);
        let committed = entry.map(|e| Record {
            key: key.clone(),
            version: e.version,
            value: e.value.map(Bytes::copy_from_slice),
        });
        match self.rounds.acceptor.prepare(key, ballot, stored, wall) {
            Ok(accepted) => reply(Reply::Promise {
                committed,
                accepted,
            }),
            Err(version) => reply(Reply::Conflict { version }),
        }
    }

    /// `ACCEPT`: a proposer's proposal (its version is the ballot), held apart
    /// from the data until its commit, or `CONFLICT` with a higher ballot or
    /// version. A move's copy of an accepted proposal comes with no view.
    fn paxos_accept(&mut self, now: Millis, r: &Record, view: Option<&View>) -> (u8, Bytes) {
        let hash = hash64(&r.key);
        if let Err(refusal) = self.paxos_refusal(hash, view) {
            return refused(refusal);
        }
        self.hlc.observe(r.version);
        let wall = self.cfg.clock_base_ms + now;
        let stored = self.engine.version_hashed(hash, &r.key);
        let proposal = Record {
            key: Bytes::copy_from_slice(&r.key),
            version: r.version,
            value: r.value.as_deref().map(Bytes::copy_from_slice),
        };
        let me = self.node_id;
        let newcomer = !self.serving_pref.get(hash).contains(&me);
        let accepted = if newcomer {
            (self.rounds.acceptor).accept_as_newcomer(&proposal, stored, wall)
        } else {
            self.rounds.acceptor.accept(&proposal, stored, wall)
        };
        match accepted {
            Ok(()) => (op::OK, Bytes::new()),
            Err(version) => reply(Reply::Conflict { version }),
        }
    }

    /// Why this node takes no part in a key's Paxos rounds, if it does not: it
    /// is off the key's lists, catching up (its copy may lack writes), or its
    /// ring is newer than the proposer's `view` and lists the key otherwise
    /// (see [`StorageNode::fence`]). A move's copy of an accepted proposal
    /// (no view) is taken while catching up: it is no copy of the data.
    fn paxos_refusal(&self, hash: u64, view: Option<&View>) -> Result<(), Refusal> {
        self.check_replica_of(hash)?;
        let Some(view) = view else {
            return Ok(());
        };
        if self.behind(hash) {
            return Err(Refusal::CatchingUp);
        }
        self.fence(hash, view)
    }

    /// `REPL_READ`: this replica's copy of `key`, for a lead's quorum read (a
    /// `Reply::Found` record, written straight from the engine's entry).
    fn replica_read(&mut self, fence: Fence, key: &[u8]) -> (u8, Bytes) {
        match self.replica_copy(key, fence) {
            Err(refusal) => refused(refusal),
            Ok(Some(e)) => {
                let mut record = BytesMut::new();
                put_record(&mut record, key, e.version, e.value);
                (op::VALUE, record.freeze())
            }
            Ok(None) => reply(Reply::NotFound),
        }
    }

    /// This node's entry of `key` for a lead's read (`None`: it has none), or
    /// why its copy must not count (it is off the key's lists, catching up,
    /// or the lead's `fence` is stale).
    fn replica_copy(&self, key: &[u8], fence: Fence) -> Result<Option<EntryRef<'_>>, Refusal> {
        let hash = hash64(key);
        self.check_fenced_replica_of(hash, Some(fence))?;
        if self.behind(hash) {
            return Err(Refusal::CatchingUp);
        }
        Ok(self.engine.entry_ref_hashed(hash, key))
    }

    /// Refuses a replica request (`REPL_READ`, `REPLICATE`) for a key (by its
    /// ring hash) this node is not a replica of by its own ring: on neither the
    /// key's serving nor its settled preference list. Such a node (one that left
    /// the ring and is in its exit grace, or one a ring change took off the key's
    /// list) stopped getting the key's writes, or dropped the key, so its copy
    /// must not count toward a quorum: a lead still routing by an older ring
    /// (paused through the change, say) would take it for a current copy and
    /// decide against it, and acknowledged writes would be lost.
    ///
    /// The same check guards the data a move brings (`MIGRATE`, and with N = 1
    /// a write copied to a moving key's next owner): a node that takes a key
    /// its ring does not give it (a peer's newer ring reached it first) drops
    /// it when it installs the next ring, perhaps an intermediate one that
    /// still does not give it the key, while the sender counts it delivered.
    /// Refused, the sender tries again. Before this node has a ring, nothing
    /// is refused.
    pub(super) fn check_replica_of(&self, hash: u64) -> Result<(), Refusal> {
        self.check_fenced_replica_of(hash, None)
    }

    /// [`StorageNode::check_replica_of`], and the plain requests' fence: a
    /// lead's `REPLICATE` or read whose [`Fence`] is of an older ring than
    /// this node's, which lists the key otherwise, is refused
    /// (`REFUSED stale-ring EPOCH`). A quorum of the lead's lists need not
    /// meet a quorum of the current ones (seed 3000144: a GET through a node
    /// paused through a move read a quorum of the old list and missed a write
    /// acknowledged by the new one). A lead whose ring is newer, or lists the
    /// key alike, is served.
    pub(super) fn check_fenced_replica_of(
        &self,
        hash: u64,
        fence: Option<Fence>,
    ) -> Result<(), Refusal> {
        let me = self.node_id;
        if me == 0 || self.ring.is_empty() {
            return Ok(());
        }
        let (serving, settled) = (self.serving_pref.get(hash), self.settled_pref.get(hash));
        let epoch = self.ring.epoch;
        if !serving.contains(&me) && !settled.contains(&me) {
            return Err(Refusal::OffList { epoch });
        }
        match fence {
            Some(f) if !f.admits(epoch, || lists_mark(serving, settled)) => {
                Err(Refusal::StaleRing { epoch })
            }
            _ => Ok(()),
        }
    }
}

/// A reply's op and payload.
fn reply(r: Reply) -> (u8, Bytes) {
    let f = r.encode();
    (f.op, f.payload)
}

/// A refusal's op and payload.
fn refused(why: Refusal) -> (u8, Bytes) {
    reply(Reply::Refused(why))
}
