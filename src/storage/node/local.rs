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
    pub(super) fn store(
        &mut self,
        key: &[u8],
        version: u64,
        value: Option<&[u8]>,
        base: Option<u64>,
    ) -> Applied {
        let held = self.engine.version(key);
        let applied = self.engine.apply(key, version, value, base);
        if let (Some(d), Applied::Stored, true) = (self.durable.as_mut(), applied, held != version)
        {
            d.log(key, version, value);
        }
        applied
    }

    /// Forgets `key` if its entry is still the tombstone at `version` (tombstone
    /// collection), and logs that it did; counts it for the sweep's log line.
    pub(super) fn purge(&mut self, key: &[u8], version: u64) {
        if self.engine.remove_tombstone(key, version) {
            self.collected += 1;
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

    pub(super) fn execute(
        &mut self,
        now: Millis,
        conn: ConnId,
        key: Option<&Bytes>,
        f: &Frame,
    ) -> Result<(u8, Bytes), Error> {
        if let Some(key) = key {
            let d = decide(f, self.engine.get(key).as_ref())?;
            if let Some(write) = d.write {
                let wall = self.cfg.clock_base_ms + now;
                let version = self.hlc.next(wall, self.engine.version(key));
                self.store(key, version, write.as_deref(), None);
            }
            return Ok((d.reply, d.payload));
        }
        if self.members.contains(&conn) {
            self.check_replica_of(f)?;
        }
        Ok(match f.op {
            op::PING => (op::PONG, f.payload.clone()),
            op::HELLO | op::RING | op::STATUS => {
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
                self.members.insert(conn);
                self.trusted.push(conn);
                (op::OK, Bytes::new())
            }
            op::REPLICATE if self.members.contains(&conn) => {
                let bad = || Error::new(ErrorCode::BadOp, "malformed REPLICATE");
                let base = f.payload.get(..8).ok_or_else(bad)?;
                let base = u64::from_be_bytes(base.try_into().map_err(|_| bad())?);
                let entries = parse_chunk(&f.payload[8..]).ok_or_else(bad)?;
                let [(k, version, value)] = entries[..] else {
                    return Err(bad());
                };
                self.hlc.observe(version);
                let base = (base != u64::MAX).then_some(base);
                match self.store(k, version, value, base) {
                    Applied::Stored => (op::OK, Bytes::new()),
                    Applied::Newer(v) => (op::CONFLICT, Bytes::from(v.to_string())),
                }
            }
            op::REPL_READ if self.members.contains(&conn) && self.behind(hash64(&f.payload)) => {
                let why = format!("{CATCHING_UP}: this copy may lack writes");
                return Err(Error::new(ErrorCode::Unavailable, why));
            }
            op::REPL_READ if self.members.contains(&conn) => match self.engine.entry(&f.payload) {
                Some(e) => {
                    let mut chunk = BytesMut::new();
                    put_entry(&mut chunk, &f.payload, &e);
                    (op::VALUE, chunk.freeze())
                }
                None => (op::NOT_FOUND, Bytes::new()),
            },
            op::SYNC_REQ if self.members.contains(&conn) => {
                let bad = || Error::new(ErrorCode::BadOp, "SYNC_REQ needs NODEID [ROUND EPOCH]");
                let [peer, round, epoch] = decimals(&f.payload).ok_or_else(bad)?;
                let peer = u32::try_from(peer).map_err(|_| bad())?;
                if self.ring.node(peer).is_some() && peer != self.node_id {
                    log::info!("node {peer} is catching up and asks for its keys (round {round})");
                    self.resync.asked(peer, round, epoch);
                }
                (op::OK, Bytes::new())
            }
            op::SYNC_DONE if self.members.contains(&conn) => {
                let bad = || Error::new(ErrorCode::BadOp, "SYNC_DONE needs NODEID ROUND");
                let [peer, round, _] = decimals(&f.payload).ok_or_else(bad)?;
                let peer = u32::try_from(peer).map_err(|_| bad())?;
                self.catch_up_progress(now, Some((peer, round)));
                (op::OK, Bytes::new())
            }
            op::PURGE if self.members.contains(&conn) && f.payload.len() >= 8 => {
                let version = u64::from_be_bytes(f.payload[..8].try_into().expect("8 bytes"));
                let key = &f.payload[8..];
                self.purge(key, version);
                (op::OK, Bytes::new())
            }
            op::MIGRATE if self.members.contains(&conn) => {
                let entries = parse_chunk(&f.payload)
                    .ok_or_else(|| Error::new(ErrorCode::BadOp, "malformed MIGRATE chunk"))?;
                for (k, version, value) in entries {
                    self.hlc.observe(version);
                    self.store(k, version, value, None);
                }
                (op::OK, Bytes::new())
            }
            o => {
                let member = self.members.contains(&conn);
                return Err(Error::bad_op(o, member, "a storage node"));
            }
        })
    }

    /// Refuses a replica request (`REPL_READ`, `REPLICATE`) for a key this node
    /// is not a replica of by its own ring: on neither the key's serving nor its
    /// settled preference list. Such a node (one that left the ring and is in its
    /// exit grace, or one a ring change took off the key's list) stopped getting
    /// the key's writes, or dropped the key, so its copy must not count toward a
    /// quorum: a coordinator still routing by an older ring (paused through the
    /// change, say) would take it for a current copy and decide against it.
    /// Seed 3000044 of the simulator's crash runs lost five acknowledged writes
    /// that way. With N = 1, or before this node has a ring, nothing is refused.
    pub(super) fn check_replica_of(&self, f: &Frame) -> Result<(), Error> {
        let me = self.node_id;
        if me == 0 || self.ring.replicas < 2 || self.ring.is_empty() {
            return Ok(());
        }
        let key = match f.op {
            op::REPL_READ => &f.payload[..],
            op::REPLICATE => match f.payload.get(8..).and_then(parse_chunk) {
                Some(entries) if entries.len() == 1 => entries[0].0,
                _ => return Ok(()),
            },
            _ => return Ok(()),
        };
        let h = hash64(key);
        if self.serving_pref.get(h).contains(&me) || self.settled_pref.get(h).contains(&me) {
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
