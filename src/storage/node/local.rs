//! Serving from this node's own data: client ops on keys it serves alone (N = 1),
//! the cluster messages peers send it (`REPLICATE`, `REPL_READ`, `SYNC_REQ`,
//! `SYNC_DONE`, `PURGE`, `MIGRATE`, `NODE_JOIN`), and the only three ways its data
//! changes: [`StorageNode::store`], [`StorageNode::purge`] and
//! [`StorageNode::undo`], each logged when the node has a data directory.

use super::*;

impl StorageNode {
    /// Applies a write to the engine and, if it was stored, logs it. With
    /// [`StorageNode::purge`] and [`StorageNode::undo`], the only ways the node's
    /// data changes (besides dropping keys a ring change moved away, which a
    /// snapshot follows): each logs what it changed (see [`super::durable`]).
    /// `hash` is the key's ring hash.
    pub(super) fn store(
        &mut self,
        (key, hash): (&[u8], u64),
        version: u64,
        value: Option<&[u8]>,
        base: Option<u64>,
    ) -> Applied {
        let (applied, changed) = self.engine.apply_hashed(hash, key, version, value, base);
        if let (Some(d), true) = (self.durable.as_mut(), changed) {
            d.log(key, version, value);
        }
        applied
    }

    /// Forgets `key` if its entry is still the tombstone at `version` (tombstone
    /// collection), and logs that it did; counts it for the sweep's log line.
    pub(super) fn purge(&mut self, key: &[u8], version: u64) {
        if self.engine.remove_tombstone(key, version) {
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
        if self.engine.restore(key, version, prev) {
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

    /// Serves a request that is not a key-value one: `PING`, `NODE_JOIN`, and
    /// from a proven member the cluster messages (see [`StorageNode::serve_peer`]).
    pub(super) fn execute(
        &mut self,
        now: Millis,
        conn: ConnId,
        member: bool,
        f: &Frame,
    ) -> Result<(u8, Bytes), Error> {
        if member {
            if let Some(answer) = self.serve_peer(now, f) {
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
                };
                (op::STATUS_REPLY, super::super::status::reply(&facts))
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
            op::NODE_JOIN => {
                let secret = f.payload.split(|&b| b == b' ').next().unwrap_or(b"");
                if secret != self.cfg.secret.as_bytes() {
                    return Err(Error::new(ErrorCode::Auth, "wrong cluster secret"));
                }
                self.conns.members.insert(conn);
                self.conns.trusted.push(conn);
                (op::OK, Bytes::new())
            }
            o => return Err(Error::bad_op(o, member, "a storage node")),
        })
    }

    /// Serves a cluster message from a member; `None` if `f` is not one.
    fn serve_peer(&mut self, now: Millis, f: &Frame) -> Option<Result<(u8, Bytes), Error>> {
        let ok = || Ok((op::OK, Bytes::new()));
        Some(match f.op {
            op::REPLICATE => self.replicate(f),
            op::REPL_READ => self.replica_read(&f.payload),
            op::SYNC_REQ => {
                let bad = || Error::new(ErrorCode::BadOp, "SYNC_REQ needs NODEID [ROUND EPOCH]");
                let Some([peer, round, epoch]) = decimals(&f.payload) else {
                    return Some(Err(bad()));
                };
                let Ok(peer) = u32::try_from(peer) else {
                    return Some(Err(bad()));
                };
                if self.ring.node(peer).is_some() && peer != self.node_id {
                    log::info!("node {peer} is catching up and asks for its keys (round {round})");
                    self.repair.resync.asked(peer, round, epoch);
                }
                ok()
            }
            op::SYNC_DONE => {
                let bad = || Error::new(ErrorCode::BadOp, "SYNC_DONE needs NODEID ROUND");
                let Some([peer, round, _]) = decimals(&f.payload) else {
                    return Some(Err(bad()));
                };
                let Ok(peer) = u32::try_from(peer) else {
                    return Some(Err(bad()));
                };
                self.catch_up_progress(now, Some((peer, round)));
                ok()
            }
            op::PURGE if f.payload.len() >= 8 => {
                let version = u64::from_be_bytes(f.payload[..8].try_into().expect("8 bytes"));
                self.purge(&f.payload[8..], version);
                ok()
            }
            op::MIGRATE => {
                let Some(entries) = parse_chunk(&f.payload) else {
                    return Some(Err(Error::new(ErrorCode::BadOp, "malformed MIGRATE chunk")));
                };
                for (k, version, value) in entries {
                    self.hlc.observe(version);
                    self.store((k, hash64(k)), version, value, None);
                }
                ok()
            }
            _ => return None,
        })
    }

    /// `REPLICATE`: a lead replica's write of one entry, conditional on a base
    /// version (`u64::MAX`: none).
    fn replicate(&mut self, f: &Frame) -> Result<(u8, Bytes), Error> {
        let bad = || Error::new(ErrorCode::BadOp, "malformed REPLICATE");
        let base = f.payload.get(..8).ok_or_else(bad)?;
        let base = u64::from_be_bytes(base.try_into().map_err(|_| bad())?);
        let entries = parse_chunk(&f.payload[8..]).ok_or_else(bad)?;
        let [(k, version, value)] = entries[..] else {
            return Err(bad());
        };
        let hash = hash64(k);
        self.check_replica_of(hash)?;
        self.hlc.observe(version);
        let base = (base != u64::MAX).then_some(base);
        Ok(match self.store((k, hash), version, value, base) {
            Applied::Stored => (op::OK, Bytes::new()),
            Applied::Newer(v) => (op::CONFLICT, Bytes::from(v.to_string())),
        })
    }

    /// `REPL_READ`: this replica's copy of `key`, for a lead's quorum read.
    fn replica_read(&mut self, key: &[u8]) -> Result<(u8, Bytes), Error> {
        let hash = hash64(key);
        self.check_replica_of(hash)?;
        if self.behind(hash) {
            let why = format!("{CATCHING_UP}: this copy may lack writes");
            return Err(Error::new(ErrorCode::Unavailable, why));
        }
        Ok(match self.engine.entry_ref_hashed(hash, key) {
            Some(e) => {
                let mut chunk = BytesMut::new();
                put_entry_parts(&mut chunk, key, e.version, e.value);
                (op::VALUE, chunk.freeze())
            }
            None => (op::NOT_FOUND, Bytes::new()),
        })
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
    pub(super) fn check_replica_of(&self, hash: u64) -> Result<(), Error> {
        let me = self.node_id;
        if me == 0 || self.ring.replicas < 2 || self.ring.is_empty() {
            return Ok(());
        }
        if self.serving_pref.get(hash).contains(&me) || self.settled_pref.get(hash).contains(&me) {
            return Ok(());
        }
        Err(Error::new(
            ErrorCode::Unavailable,
            format!("node {me} {OFF_LIST} (ring epoch {})", self.ring.epoch),
        ))
    }
}

/// Up to three decimal numbers separated by single spaces (at least one);
/// missing ones are 0.
fn decimals(payload: &[u8]) -> Option<[u64; 3]> {
    let mut out = [0; 3];
    let text = std::str::from_utf8(payload).ok()?;
    let mut words = text.split(' ');
    for slot in out.iter_mut() {
        match words.next() {
            Some(w) => *slot = w.parse().ok()?,
            None => break,
        }
    }
    words.next().is_none().then_some(out)
}
