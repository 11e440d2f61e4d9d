//! Replication: with N > 1, a key's lead replica (the first reachable node of
//! its preference list) serves every request for the key in quorum rounds over
//! the other replicas (the bookkeeping is [`super::super::quorum`]): reads
//! collect R copies, writes W acknowledgements; read repair writes the newest
//! copy back to stale replicas; conditional ops are decided against the newest
//! copy and refused by a replica holding anything newer.

use super::*;

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

    /// Starts coordinating a key-value request this node is the coordinator of.
    pub(super) fn coordinate(
        &mut self,
        now: Millis,
        conn: ConnId,
        request: Frame,
        key: Bytes,
        out: &mut Vec<Output>,
    ) {
        let (listed, _, _) = self.replica_targets(hash64(&key));
        let listed = listed.max(1);
        // A node catching up keeps its own copy in the round but does not count
        // it: it needs R copies from the others.
        let behind = self.behind(hash64(&key)) as usize;
        // Kept until the replicas answer: copied, so it does not pin the read
        // buffer it arrived in (a client that never reads would pin many).
        let mut request = request;
        request.payload = Bytes::copy_from_slice(&request.payload);
        let key = Bytes::copy_from_slice(&key);
        let seq = self.order.reserve(conn);
        let id = self.next_pending;
        self.next_pending += 1;
        let pending = Pending {
            requester: Requester {
                conn,
                seq,
                client_id: request.client_id,
            },
            request,
            key,
            read_need: (self.ring.read_quorum as usize).clamp(1, listed) + behind,
            write_need: (self.ring.write_quorum as usize).clamp(1, listed),
            attempts: 0,
            round: Round::Reading {
                copies: Vec::new(),
                waiting: Vec::new(),
            },
            failure: ErrorCode::Unavailable,
            holds_key: false,
            refused: Vec::new(),
            undo: None,
            lagging: Vec::new(),
            off_list: false,
        };
        // Requests for one key run in arrival order: a write holds the key until
        // it is answered, and whatever arrives meanwhile waits its turn. Reads that
        // find the key free run at once (they see every write applied here).
        let writes = !matches!(pending.request.op, op::GET | op::EXISTS);
        let key = pending.key.clone();
        let mut pending = pending;
        if let Some(queue) = self.busy.get_mut(&key) {
            pending.holds_key = true;
            self.pending.insert(id, pending);
            return queue.push_back(id);
        }
        if writes {
            pending.holds_key = true;
            self.busy.insert(key, Default::default());
        }
        self.pending.insert(id, pending);
        self.start_round(now, id, out);
    }

    /// Starts (or restarts) a request: a write round for PUT, a read round for
    /// everything else.
    pub(super) fn start_round(&mut self, now: Millis, id: u64, out: &mut Vec<Output>) {
        let Some(key) = self.pending.get(&id).map(|p| p.key.clone()) else {
            return;
        };
        let (_, others, newcomers) = self.replica_targets(hash64(&key));
        let p = self.pending.get_mut(&id).expect("checked above");
        p.attempts += 1;
        if p.request.op == op::PUT {
            let value = match kv::split_kv(&p.request.payload) {
                Ok((_, v)) => v,
                Err(e) => return self.finish(id, Err(e), out),
            };
            let result = Frame::new(op::OK, 0, 0, Bytes::new());
            let wall = self.cfg.clock_base_ms + now;
            let version = self.hlc.next(wall, self.engine.version(&key));
            self.store(&key, version, Some(&value), None);
            let entry = Entry {
                version,
                value: Some(value),
            };
            let mut targets = others;
            targets.extend(newcomers.iter().copied());
            return self.write_round(now, id, entry, None, result, targets, newcomers, 1, out);
        }
        let local = self.engine.entry(&key);
        p.round = Round::Reading {
            copies: vec![(self.node_id, local)],
            waiting: others.clone(),
        };
        let round = p.round_tag();
        let done = p.read_need <= 1;
        let alone = others.is_empty();
        let failed = self.ask_replicas(now, id, round, others, op::REPL_READ, key, out);
        if done {
            return self.finish_read(now, id, out);
        }
        if alone {
            // Nobody to wait for: no answer would ever end the round.
            return self.too_few_reachable(id, out);
        }
        self.unreachable_replicas(now, id, round, failed, out);
    }

    /// Sends `op` with `payload` to each of `peers` for round `round` of request
    /// `id`; returns the peers it could not be sent to.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ask_replicas(
        &mut self,
        now: Millis,
        id: u64,
        round: u32,
        peers: Vec<u32>,
        op: u8,
        payload: Bytes,
        out: &mut Vec<Output>,
    ) -> Vec<u32> {
        let deadline = now + self.cfg.request_timeout_ms;
        peers
            .into_iter()
            .filter(|&peer| {
                let frame = Frame::new(op, 0, 0, payload.clone());
                let reply_to = ReplyTo::Replica { id, round };
                let sent = self.mesh.forward(peer, frame, reply_to, 1, deadline, out);
                sent.is_err()
            })
            .collect()
    }

    /// Counts `peers` as answering nothing in round `round` of request `id`.
    pub(super) fn unreachable_replicas(
        &mut self,
        now: Millis,
        id: u64,
        round: u32,
        peers: Vec<u32>,
        out: &mut Vec<Output>,
    ) {
        for peer in peers {
            let code = ErrorCode::Unavailable;
            self.replica_answer(now, id, round, peer, None, code, out);
        }
    }

    /// Sends `entry` to `targets` and waits for the acknowledgements.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write_round(
        &mut self,
        now: Millis,
        id: u64,
        entry: Entry,
        base: Option<u64>,
        result: Frame,
        targets: Vec<u32>,
        newcomers: Vec<u32>,
        acks: usize,
        out: &mut Vec<Output>,
    ) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        let mut payload = BytesMut::new();
        payload.extend_from_slice(&base.unwrap_or(u64::MAX).to_be_bytes());
        put_entry(&mut payload, &p.key, &entry);
        let payload = payload.freeze();
        p.round = Round::Writing {
            result,
            acks,
            waiting: targets.clone(),
            newcomers,
            newest_refusal: 0,
        };
        let round = p.round_tag();
        let done = acks >= p.write_need
            && matches!(&p.round, Round::Writing { newcomers, .. } if newcomers.is_empty());
        let alone = targets.is_empty();
        let failed = self.ask_replicas(now, id, round, targets, op::REPLICATE, payload, out);
        // Replicas this write cannot reach now get it later (hinted handoff),
        // and so do the nodes a pending move adds to the key's list: they count
        // as holding it once the ring flips.
        let key = p_key(&self.pending, id);
        let h = hash64(&key);
        let (serving, settled) = (self.serving_pref.get(h), self.settled_pref.get(h));
        let mut listed = serving.to_vec();
        listed.extend(settled.iter().filter(|id| !serving.contains(id)));
        for peer in listed {
            if peer != self.node_id && (!self.reachable(peer) || failed.contains(&peer)) {
                self.resync.hint(peer, &key);
            }
        }
        if done {
            return self.write_done(id, out);
        }
        if alone {
            return self.too_few_reachable(id, out);
        }
        self.unreachable_replicas(now, id, round, failed, out);
    }

    /// Fails request `id` at once: too few of its replicas are reachable for a
    /// quorum, and none was asked, so no answer would end the round.
    pub(super) fn too_few_reachable(&mut self, id: u64, out: &mut Vec<Output>) {
        let e = Error::new(
            ErrorCode::Unavailable,
            "too few of the key's replicas are reachable",
        );
        self.finish(id, Err(e), out);
    }

    /// A replica answered (`frame`) or will not (`None`, for the reason `code`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn replica_answer(
        &mut self,
        now: Millis,
        id: u64,
        round: u32,
        peer: u32,
        frame: Option<Frame>,
        code: ErrorCode,
        out: &mut Vec<Output>,
    ) {
        let Some(p) = self.pending.get_mut(&id).filter(|p| p.round_tag() == round) else {
            return;
        };
        if frame.is_none() && code == ErrorCode::Timeout {
            p.failure = ErrorCode::Timeout;
        }
        let progress = match &p.round {
            Round::Reading { .. } => {
                if frame.as_ref().is_some_and(|f| refused_for(f, CATCHING_UP)) {
                    p.lagging.push(peer);
                }
                if frame.as_ref().is_some_and(|f| refused_for(f, OFF_LIST)) {
                    p.off_list = true;
                }
                let copy = frame.and_then(|f| match f.op {
                    op::NOT_FOUND => Some(None),
                    op::VALUE => parse_chunk(&f.payload).and_then(|e| match e[..] {
                        [(_, version, value)] => Some(Some(Entry {
                            version,
                            value: value.map(Bytes::copy_from_slice),
                        })),
                        _ => None,
                    }),
                    _ => None,
                });
                if let Some(Some(e)) = &copy {
                    self.hlc.observe(e.version);
                }
                p.copy_from(peer, copy)
            }
            Round::Writing { .. } => {
                let answer = match frame {
                    Some(f) if f.op == op::OK => Ok(()),
                    Some(f) if f.op == op::CONFLICT => Err(std::str::from_utf8(&f.payload)
                        .ok()
                        .and_then(|t| t.parse::<u64>().ok())),
                    _ => Err(None),
                };
                match answer {
                    Err(Some(v)) => self.hlc.observe(v),
                    // No answer (its link broke, it timed out): it may lack the
                    // write, and the round no longer waits for it.
                    Err(None) => self.resync.hint(peer, &p.key),
                    Ok(()) => {}
                }
                p.ack_from(peer, answer)
            }
        };
        match progress {
            Progress::Waiting => {}
            Progress::ReadDone => self.finish_read(now, id, out),
            Progress::WriteDone => self.write_done(id, out),
            Progress::Failed => {
                let refused = matches!(
                    &p.round,
                    Round::Writing { newest_refusal, .. } if *newest_refusal > 0
                );
                if refused {
                    // A replica holds something newer than this write's base: the
                    // write lost. Its copies (here and on replicas that took it)
                    // must not count as the newest when the key is decided again.
                    // Its own copy goes back to what it was.
                    if let Some((version, prev)) = p.undo.take() {
                        p.refused.push(version);
                        let key = p.key.clone();
                        self.undo(&key, version, prev);
                    }
                }
                let Some(p) = self.pending.get(&id) else {
                    return;
                };
                if refused && p.attempts < MAX_ATTEMPTS {
                    self.start_round(now, id, out);
                } else if p.off_list && p.attempts < MAX_ATTEMPTS {
                    // A replica's ring no longer has it on the key's list: this
                    // node's ring is about to change too (a leave or drop just
                    // flipped). Try again at the next tick, with that ring.
                    if let Some(p) = self.pending.get_mut(&id) {
                        p.off_list = false;
                    }
                    self.retry_soon.push(id);
                } else {
                    let e = Error::new(
                        p.failure,
                        format!(
                            "too few of the key's replicas answered (round {})",
                            p.attempts
                        ),
                    );
                    self.finish(id, Err(e), out);
                }
            }
        }
    }

    /// A read round has its copies: answer, repair, or decide and write.
    pub(super) fn finish_read(&mut self, now: Millis, id: u64, out: &mut Vec<Output>) {
        let Some(p) = self.pending.get(&id) else {
            return;
        };
        let (version, value) = p.newest();
        if p.refused.iter().max().is_some_and(|&mine| version > mine) {
            // This request's write was refused, and a copy newer than that write
            // exists: another coordinator wrote the key since, maybe deciding
            // on this very write (read from a replica that took it). Deciding
            // again could apply it twice (seed 2000300), so the outcome stays
            // unknown to the client.
            let e = Error::new(
                ErrorCode::Unavailable,
                "the key changed elsewhere while this write was refused; it may have been applied",
            );
            return self.finish(id, Err(e), out);
        }
        let base = p.highest();
        let decision = match decide(&p.request, value.as_ref()) {
            Ok(d) => d,
            Err(e) => return self.finish(id, Err(e), out),
        };
        let key = p.key.clone();
        let result = Frame::new(decision.reply, 0, 0, decision.payload);
        match decision.write {
            None => {
                // Nothing to change, but copies older than the newest are brought up
                // to date before the answer, so no later read can see them.
                let stale = if version > 0 {
                    p.stale(version)
                } else {
                    vec![]
                };
                if stale.is_empty() && (version == 0 || p.lagging.is_empty()) {
                    return self.finish(id, Ok(result), out);
                }
                let lagging = p.lagging.clone();
                let holders = match &p.round {
                    Round::Reading { copies, .. } => copies.len() - stale.len(),
                    Round::Writing { .. } => 0,
                };
                let entry = Entry { version, value };
                let mut acks = holders;
                let me = self.node_id;
                if stale.contains(&me) {
                    self.store(&key, version, entry.value.as_deref(), None);
                    acks += 1;
                }
                let mut targets: Vec<u32> = stale.into_iter().filter(|&n| n != me).collect();
                // Replicas that are catching up get the newest copy too.
                targets.extend(lagging);
                self.write_round(now, id, entry, None, result, targets, vec![], acks, out);
            }
            Some(write) => {
                let wall = self.cfg.clock_base_ms + now;
                let next = self.hlc.next(wall, base);
                let prev = self.engine.entry(&key);
                match self.store(&key, next, write.as_deref(), Some(base)) {
                    Applied::Stored => {
                        if let Some(p) = self.pending.get_mut(&id) {
                            p.undo = Some((next, prev));
                        }
                    }
                    Applied::Newer(v) => {
                        // Something newer reached this node meanwhile: decide again.
                        self.hlc.observe(v);
                        let attempts = self.pending.get(&id).map_or(0, |p| p.attempts);
                        if attempts < MAX_ATTEMPTS {
                            return self.start_round(now, id, out);
                        }
                        let e = Error::new(ErrorCode::Unavailable, "the key kept changing");
                        return self.finish(id, Err(e), out);
                    }
                }
                let (_, others, newcomers) = self.replica_targets(hash64(&key));
                let entry = Entry {
                    version: next,
                    value: write,
                };
                let mut targets = others;
                targets.extend(newcomers.iter().copied());
                self.write_round(
                    now,
                    id,
                    entry,
                    Some(base),
                    result,
                    targets,
                    newcomers,
                    1,
                    out,
                );
            }
        }
    }

    pub(super) fn write_done(&mut self, id: u64, out: &mut Vec<Output>) {
        let result = match self.pending.get_mut(&id).map(|p| &mut p.round) {
            Some(Round::Writing { result, .. }) => {
                std::mem::replace(result, Frame::new(0, 0, 0, Bytes::new()))
            }
            _ => return,
        };
        self.finish(id, Ok(result), out);
    }

    /// Answers a coordinated request and forgets it.
    pub(super) fn finish(&mut self, id: u64, result: Result<Frame, Error>, out: &mut Vec<Output>) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        if let Round::Writing { waiting, .. } = &p.round {
            // Replicas that had not acknowledged when the round ended.
            for &peer in waiting {
                self.resync.hint(peer, &p.key);
            }
        }
        if p.holds_key {
            // The key's next request may start.
            if let Some(queue) = self.busy.get_mut(&p.key) {
                match queue.pop_front() {
                    Some(next) => self.ready_turns.push(next),
                    None => {
                        self.busy.remove(&p.key);
                    }
                }
            }
        }
        let r = p.requester;
        let frame = match result {
            Ok(f) => Frame::new(f.op, r.client_id, self.node_id, f.payload),
            Err(e) => Frame::error(r.client_id, self.node_id, &e),
        };
        self.order.fill(r.conn, r.seq, frame, out);
    }
}

/// Whether `f` is a replica's `ERR UNAVAILABLE` refusal whose text says `why`:
/// [`CATCHING_UP`] (it may lack the key's writes) or [`OFF_LIST`] (by its ring
/// it is not on the key's lists; see `check_replica_of`).
pub(super) fn refused_for(f: &Frame, why: &str) -> bool {
    f.op == op::ERR && {
        let e = Error::from_payload(&f.payload);
        e.code == ErrorCode::Unavailable && e.message.contains(why)
    }
}

/// The key of pending request `id` (empty if it is gone).
fn p_key(pending: &HashMap<u64, Pending>, id: u64) -> Bytes {
    pending.get(&id).map(|p| p.key.clone()).unwrap_or_default()
}
