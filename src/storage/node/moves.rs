//! Moves: handing keys over to the nodes a ring change adds to their preference
//! lists (see [`super::super::handoff`]), reporting `HANDOFF_DONE`, and with
//! N = 1 copying each write to a moving key's next owner before it is answered.

use super::*;

impl StorageNode {
    /// Lists what this node must hand over for the current ring and starts sending.
    pub(super) fn start_handoff(&mut self, now: Millis, out: &mut Vec<Output>) {
        let me = self.node_id;
        self.handoff = None;
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
        log::info!(
            "epoch {}: handing {} keys over",
            self.ring.epoch,
            keys.len()
        );
        self.handoff = Some(Handoff::new(self.ring.epoch, keys));
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
                    frame: Frame::new(op::HANDOFF_DONE, 0, self.node_id, epoch.to_string()),
                });
            }
        }
    }

    /// With a move pending (N = 1), sends the next owner `next` a copy of the
    /// write this node just applied to `key` (ring hash `hash`), and answers
    /// the client (`reply`) once it is acknowledged. The copy is conditional on
    /// what this node held before the write (`before`): if the next owner already
    /// took a newer write (the flip reached it first), the copy is refused and
    /// the client gets an error, not a lost update.
    pub(super) fn mirror_write(
        &mut self,
        now: Millis,
        conn: ConnId,
        next: u32,
        (key, hash, before): (&[u8], u64, u64),
        reply: Frame,
        out: &mut Vec<Output>,
    ) {
        let mut payload = BytesMut::new();
        payload.extend_from_slice(&before.to_be_bytes());
        if let Some(e) = self.engine.entry_ref_hashed(hash, key) {
            put_entry_parts(&mut payload, key, e.version, e.value);
        }
        let copy = Frame::new(op::REPLICATE, 0, 0, payload.freeze());
        let seq = self.conns.order.reserve(conn);
        let token = Waiter::Mirror {
            conn,
            seq,
            result: reply,
        };
        let deadline = now + self.cfg.request_timeout_ms;
        if let Err(fwd) = self.mesh.forward(next, copy, token, 1, deadline, out) {
            self.fail_forwards(now, vec![*fwd], ErrorCode::Unavailable, out);
        }
    }
}
