//! Serving from this node's own data: client ops on keys it serves alone (N = 1),
//! the cluster messages peers send it (`REPLICATE`, `REPL_READ`, `SYNC_REQ`,
//! `SYNC_DONE`, `PURGE`, `MIGRATE`, `NODE_JOIN`; decoded by
//! [`crate::protocol::cluster`], refusals typed as [`Refusal`]; anti-entropy's
//! `AE_DIGEST` and `AE_KEYS` are answered in `repair/anti_entropy.rs`), and the only three ways its data
//! changes: [`StorageNode::store`], [`StorageNode::purge`] and
//! [`StorageNode::undo`], each logged when the node has a data directory.

use super::*;

impl StorageNode {
    /// Applies a write to the engine and, if it was stored, logs it. With
    /// [`StorageNode::purge`] and [`StorageNode::undo`], the only ways the node's
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
        let old = (self.engine.entry_ref_hashed(hash, key)).map(|e| (e.version, e.value.is_some()));
        let (applied, changed) = self.engine.apply_hashed(hash, key, version, value, base);
        if changed {
            self.ae_changed(hash, old, Some((version, value.is_some())));
        }
        if let (Some(d), true) = (self.durable.as_mut(), changed) {
            d.log(key, version, value);
        }
        applied
    }

    /// Forgets `key` if its entry is still the tombstone at `version` (tombstone
    /// collection), and logs that it did; counts it for the sweep's log line.
    pub(super) fn purge(&mut self, key: &[u8], version: u64) {
        if self.engine.remove_tombstone(key, version) {
            let hash = hash64(key);
            self.ae_changed(hash, Some((version, false)), None);
            self.anti_entropy.floors.collected(hash, version);
            self.tombstones.collected += 1;
            if let Some(d) = self.durable.as_mut() {
                d.log_purge(key, version);
            }
        }
    }

    /// Undoes this node's own write of `key` at `version`, which its replicas
    /// refused: the entry goes back to `prev` (`None`: no entry) if it is still
    /// that write, and that is logged, so a restart does not bring the write back.
    pub(super) fn undo(&mut self, key: &[u8], version: u64, prev: Option<Entry>) {
        let logged = prev.clone();
        let live = self.engine.entry_ref(key).map(|e| e.value.is_some());
        let back = prev.as_ref().map(|p| (p.version, p.value.is_some()));
        if self.engine.restore(key, version, prev) {
            let old = live.map(|live| (version, live));
            self.ae_changed(hash64(key), old, back);
            if let Some(d) = self.durable.as_mut() {
                d.log_restore(key, version, logged.as_ref());
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
        let entry = self.engine.entry_ref_hashed(hash, key);
        let held = entry.map_or(0, |e| e.version);
        let current = entry.and_then(|e| e.value).map(Bytes::copy_from_slice);
        let d = decide(f, current.as_ref())?;
        if let Some(write) = d.write {
            let wall = self.cfg.clock_base_ms + now;
            let version = self.hlc.next(wall, held);
            self.store((key, hash), version, write.as_deref(), None);
        }
        Ok((d.reply, d.payload))
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
        if let Some(v) = versions.iter().map(|r| r.version).max() {
            if let Some(e) = self.version_ahead(now, conn, v) {
                return Some(Err(e));
            }
        }
        Some(Ok(match message {
            Message::Replicate { base, record } => self.replicate(base, &record),
            Message::ReplRead { key } => self.replica_read(&key),
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
    /// version it was decided against (`base`).
    fn replicate(&mut self, base: Option<u64>, r: &Record) -> (u8, Bytes) {
        let hash = hash64(&r.key);
        if let Err(refusal) = self.check_replica_of(hash) {
            return refused(refusal);
        }
        self.hlc.observe(r.version);
        let value = r.value.as_deref();
        match self.store((&r.key, hash), r.version, value, base) {
            Applied::Stored => (op::OK, Bytes::new()),
            Applied::Newer(version) => reply(Reply::Conflict { version }),
        }
    }

    /// `REPL_READ`: this replica's copy of `key`, for a lead's quorum read (a
    /// `Reply::Found` record, written straight from the engine's entry).
    fn replica_read(&mut self, key: &[u8]) -> (u8, Bytes) {
        let hash = hash64(key);
        if let Err(refusal) = self.check_replica_of(hash) {
            return refused(refusal);
        }
        if self.behind(hash) {
            return refused(Refusal::CatchingUp);
        }
        match self.engine.entry_ref_hashed(hash, key) {
            Some(e) => {
                let mut record = BytesMut::new();
                put_record(&mut record, key, e.version, e.value);
                (op::VALUE, record.freeze())
            }
            None => reply(Reply::NotFound),
        }
    }

    /// Refuses a replica request (`REPL_READ`, `REPLICATE`) for a key (by its
    /// ring hash) this node is not a replica of by its own ring: on neither the
    /// key's serving nor its settled preference list. Such a node (one that left
    /// the ring and is in its exit grace, or one a ring change took off the key's
    /// list) stopped getting the key's writes, or dropped the key, so its copy
    /// must not count toward a quorum: a lead still routing by an older ring
    /// (paused through the change, say) would take it for a current copy and
    /// decide against it, and acknowledged writes would be lost. With N = 1, or
    /// before this node has a ring, nothing is refused.
    pub(super) fn check_replica_of(&self, hash: u64) -> Result<(), Refusal> {
        let me = self.node_id;
        if me == 0 || self.ring.replicas < 2 || self.ring.is_empty() {
            return Ok(());
        }
        if self.serving_pref.get(hash).contains(&me) || self.settled_pref.get(hash).contains(&me) {
            return Ok(());
        }
        Err(Refusal::OffList {
            epoch: self.ring.epoch,
        })
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
