//! Moves: handing keys over to the nodes a ring change adds to their preference
//! lists (see [`handoff`]), reporting `HANDOFF_DONE`, and with
//! N = 1 copying each write to a moving key's next owner before it is answered.

pub(super) mod handoff;

use super::*;

impl StorageNode {
    /// Lists what this node must hand over for the current ring and starts sending.
    pub(super) fn start_handoff(&mut self, now: Millis, out: &mut Vec<Output>) {
        let me = self.node_id;
        let prior = self.handoff.take();
        if me == 0 || !self.ring.has_moves() || self.serving.node(me).is_none() {
            return;
        }
        let (serving, settled) = (&self.serving_pref, &self.settled_pref);
        // Every node that holds a key now sends it to each node the move adds to
        // the key's preference list (with N = 1: the new owner).
        let keys: Vec<(u32, Bytes)> = self
            .engine
            .keys_where(|h| serving.get(h).contains(&me))
            .into_iter()
            .flat_map(|k| {
                let h = hash64(&k);
                let now = serving.get(h);
                settled
                    .get(h)
                    .iter()
                    .filter(move |t| !now.contains(t))
                    .map(move |&t| (t, k.clone()))
            })
            .collect();
        // Proposals this node accepted for those keys go too, as `ACCEPT`s of
        // the same ballot (one ballot has one value, so any acceptor may take
        // it): a proposal a majority of the old list accepted, chosen but not
        // yet committed, must be found by a majority of the new list, which may
        // lack this node.
        let proposals: Vec<(u32, Record)> = (self.rounds.acceptor)
            .accepted(|k| serving.get(hash64(k)).contains(&me))
            .into_iter()
            .flat_map(|r| {
                let h = hash64(&r.key);
                let now = serving.get(h);
                let adds: Vec<u32> = (settled.get(h).iter().copied())
                    .filter(|t| !now.contains(t))
                    .collect();
                adds.into_iter().map(move |t| (t, r.clone()))
            })
            .collect();
        log::info!(
            "epoch {}: handing {} keys and {} accepted proposals over",
            self.ring.epoch,
            keys.len(),
            proposals.len()
        );
        let epoch = self.ring.epoch;
        let mut handoff = Handoff::new(epoch, keys, self.settled.clone(), prior);
        // Sent before the chunks on the same links; the handoff is done only
        // once each is answered (`CONFLICT` too: the newcomer promised higher
        // or holds a newer version), and a lost one, or one refused because
        // the newcomer's ring does not list it yet, starts it again.
        for (target, record) in proposals {
            let frame = Message::Accept { record, view: None }.encode();
            let deadline = now + self.cfg.request_timeout_ms;
            let token = Waiter::HandedProposal { epoch };
            match self.mesh.forward(target, frame, token, 1, deadline, out) {
                Ok(()) => handoff.sent_other(target),
                Err(_) => handoff.failed = true,
            }
        }
        self.handoff = Some(handoff);
        self.pump_handoff(now, out);
    }

    /// Sends the chunks the window allows; reports to the manager when done.
    pub(super) fn pump_handoff(&mut self, now: Millis, out: &mut Vec<Output>) {
        let Some(h) = self.handoff.as_mut() else {
            return;
        };
        let epoch = h.epoch;
        for (target, payload) in h.next_chunks(&self.engine) {
            let frame = Frame::new(op::MIGRATE, 0, 0, payload);
            let deadline = now + self.cfg.request_timeout_ms;
            let token = Waiter::Migrate { epoch };
            if self
                .mesh
                .forward(target, frame, token, 1, deadline, out)
                .is_err()
            {
                h.failed = true;
            }
        }
        if h.done() && !h.reported {
            if let Some(conn) = self.membership.manager.conn() {
                h.reported = true;
                out.push(Output::Send {
                    conn,
                    frame: self.to_manager(&Message::HandoffDone { epoch }),
                });
            }
        }
    }

    /// With a move pending (N = 1), sends the next owner `next` the write
    /// this node decided for `key` (for the client on `conn`), and
    /// once it is acknowledged applies it here and answers the client
    /// (`reply`). The copy is conditional on what this node holds (`before`):
    /// if the next owner already took a newer write (the flip reached it
    /// first), the copy is refused and the write applied nowhere. Until the
    /// acknowledgement no read here sees the write.
    pub(super) fn mirror_write(
        &mut self,
        now: Millis,
        (conn, next): (ConnId, u32),
        (key, before): (&[u8], u64),
        write: Entry,
        reply: Frame,
        out: &mut Vec<Output>,
    ) {
        let record = Record {
            key: Bytes::copy_from_slice(key),
            version: write.version,
            value: write.value,
        };
        let seq = self.conns.order.reserve(conn);
        let mirror = Waiter::Mirror {
            conn,
            seq,
            result: reply,
            record,
            again: false,
        };
        self.send_mirror(now, next, before, mirror, out);
    }

    /// Sends the write of `mirror` (a [`Waiter::Mirror`]) to `next`,
    /// conditional on `before`.
    fn send_mirror(
        &mut self,
        now: Millis,
        next: u32,
        before: u64,
        mirror: Waiter,
        out: &mut Vec<Output>,
    ) {
        let Waiter::Mirror { record, .. } = &mirror else {
            return;
        };
        let copy = Message::Replicate {
            base: Some(before),
            fence: None,
            record: record.clone(),
        }
        .encode();
        let deadline = now + self.cfg.request_timeout_ms;
        if let Err(fwd) = self.mesh.forward(next, copy, mirror, 1, deadline, out) {
            self.fail_forwards(now, vec![*fwd], ErrorCode::Unavailable, out);
        }
    }

    /// Node `peer` took the copy of a write (`mirror`, a
    /// [`Waiter::Mirror`]). While this node still serves the key, it applies
    /// the write and answers, unless a ring that came meanwhile moves the key
    /// to another node: the write goes there too first (this ring's handoff
    /// may have sent it the key without the write). Once the key is served
    /// elsewhere, the write stands only if `peer` is that node; otherwise it
    /// sits on a node that serves nothing of the key, and the client is told
    /// the outcome is unknown.
    pub(super) fn mirror_taken(
        &mut self,
        now: Millis,
        peer: u32,
        mirror: Waiter,
        out: &mut Vec<Output>,
    ) {
        let Waiter::Mirror {
            conn,
            seq,
            result,
            record,
            ..
        } = mirror
        else {
            return;
        };
        let me = self.node_id;
        let hash = hash64(&record.key);
        let serving = self.serving.owner_of_hash(hash);
        let next = self.settled.owner_of_hash(hash);
        let reply = match next {
            Some(n) if serving == Some(me) && n != me && n != peer => {
                let before = self.engine.version_hashed(hash, &record.key);
                let again = Waiter::Mirror {
                    conn,
                    seq,
                    result,
                    record,
                    again: true,
                };
                return self.send_mirror(now, n, before, again, out);
            }
            _ if serving == Some(me) => {
                let value = record.value.as_deref();
                self.store((&record.key, hash), record.version, value, None);
                result
            }
            _ if serving == Some(peer) => result,
            _ => {
                let e = Error::new(
                    ErrorCode::Unavailable,
                    "the key moved on while its write was copied to its next owner",
                );
                Frame::error(result.client_id, me, &outcome_unknown(&e))
            }
        };
        self.conns.order.fill(conn, seq, reply, out);
    }
}

#[cfg(test)]
mod tests;
