//! Membership: the link to the manager (connect with backoff, register with the
//! member handshake and `NODE_JOIN` (see `handshake`), heartbeats and the
//! leases that answer them (see `lease.rs`)), installing each ring the manager
//! sends, and leaving the ring on SIGTERM.

use super::*;

/// The manager link and this node's place in the membership: registration,
/// leaving, and why it stopped for good if it did.
pub(super) struct Membership {
    pub(super) manager: Link,
    /// This node asked to leave (SIGTERM).
    pub(super) leaving: bool,
    /// A `LEAVE` went to the manager on this link and is not answered yet.
    pub(super) awaiting_left: bool,
    /// Leaving, and the manager link has been down since then: exit at
    /// [`LEAVE_ORPHAN_MS`] after it unless the link comes back.
    pub(super) orphaned_at: Option<Millis>,
    /// Out of the ring and about to exit: never register with the manager again.
    pub(super) exiting: bool,
    /// `NODE_JOIN` went to the manager on this link and is not answered yet.
    pub(super) awaiting_joined: bool,
    /// The manager proved the cluster secret on this link (`MEMBER_CHALLENGE`):
    /// until then, nothing it sends but that and `ERR` is believed.
    pub(super) manager_proven: bool,
    /// Why the node stopped for good, when something it cannot fix stopped it
    /// (the manager refused its cluster secret).
    pub(super) fatal: Option<String>,
    /// Registrations the manager turned away in a row (`ERR UNAVAILABLE` while it
    /// recovers the membership): the next attempt waits longer each time.
    pub(super) join_refusals: u32,
    /// This node serves data until its clock reads this (see `lease.rs`); 0:
    /// it never had a lease.
    pub(super) lease_until: Millis,
    /// When the message that won the current lease was sent.
    pub(super) lease_from: Millis,
    /// The lease ran out and the log said so.
    pub(super) lease_lapsed: bool,
}

impl Membership {
    /// Nothing in progress yet.
    pub(super) fn new(cfg: &NodeConfig) -> Membership {
        Membership {
            manager: Link::new(cfg.retry_base_ms, cfg.retry_cap_ms),
            leaving: Default::default(),
            awaiting_left: Default::default(),
            orphaned_at: Default::default(),
            exiting: Default::default(),
            awaiting_joined: Default::default(),
            manager_proven: Default::default(),
            fatal: Default::default(),
            join_refusals: Default::default(),
            lease_until: Default::default(),
            lease_from: Default::default(),
            lease_lapsed: Default::default(),
        }
    }
}

impl StorageNode {
    pub(super) fn connect_manager(&mut self, out: &mut Vec<Output>) {
        self.membership.manager.connecting();
        out.push(Output::Connect {
            addr: self.cfg.manager,
            tag: TAG_MANAGER,
        });
    }

    /// A connect to the manager failed: try again after the link's backoff.
    pub(super) fn manager_unreachable(&mut self, now: Millis, out: &mut Vec<Output>) {
        log::debug!("manager {} unreachable; retrying", self.cfg.manager);
        self.manager_down(now, out);
    }

    /// The manager link closed. Closed before the manager answered the
    /// registration, it counts as a refusal (the next attempt waits longer);
    /// losing a registered link is said once, retries are not.
    pub(super) fn manager_closed(&mut self, now: Millis, out: &mut Vec<Output>) {
        if self.membership.exiting {
            return;
        }
        if std::mem::take(&mut self.membership.awaiting_joined) {
            self.membership.manager.state = LinkState::Idle;
            let why = "the manager closed the link before registering us";
            return self.retry_registration(now, why, out);
        }
        log::warn!("lost the manager link; reconnecting");
        self.manager_down(now, out);
    }

    fn manager_down(&mut self, now: Millis, out: &mut Vec<Output>) {
        if self.membership.exiting {
            return;
        }
        self.manager_lost(now, out);
        let at = self.membership.manager.failed(now);
        out.push(Output::Timer {
            at,
            id: TIMER_MANAGER,
        });
    }

    /// Registration failed for a reason that may pass (`why`): drop the link
    /// and register again later, each attempt waiting twice as long as the last,
    /// up to [`NodeConfig::retry_cap_ms`]. The first failure in a row is logged,
    /// the retries only at debug level.
    fn retry_registration(&mut self, now: Millis, why: &str, out: &mut Vec<Output>) {
        self.membership.join_refusals += 1;
        let delay = (self.cfg.retry_base_ms << self.membership.join_refusals.min(16))
            .min(self.cfg.retry_cap_ms);
        if self.membership.join_refusals == 1 {
            log::warn!(
                "{why}; retrying, at most every {} ms",
                self.cfg.retry_cap_ms
            );
        } else {
            log::debug!("{why}; retry in {delay} ms");
        }
        if let Some(conn) = self.membership.manager.conn() {
            out.push(Output::Close { conn });
        }
        self.manager_lost(now, out);
        self.membership.manager.state = LinkState::Backoff(now + delay);
        out.push(Output::Timer {
            at: now + delay,
            id: TIMER_MANAGER,
        });
    }

    /// The manager refused this node's cluster secret (or could not prove it
    /// itself): nothing will change
    /// that, so the node stops, and says why (see [`StorageNode::failure`]).
    fn refused_for_good(&mut self, e: &Error, out: &mut Vec<Output>) {
        let why = format!(
            "the manager refused this node's cluster secret ({e}): start it with the \
             manager's secret (--secret-file, GTSTORE_SECRET or --secret)"
        );
        log::error!("{why}; exiting");
        self.membership.fatal = Some(why);
        self.membership.exiting = true;
        if let Some(conn) = self.membership.manager.conn() {
            out.push(Output::Close { conn });
        }
        self.membership.manager.state = LinkState::Idle;
        out.push(Output::Stop);
    }

    /// The manager link is gone: a `LEAVE` on it will not be answered, and a
    /// leaving node starts counting towards [`LEAVE_ORPHAN_MS`].
    pub(super) fn manager_lost(&mut self, now: Millis, out: &mut Vec<Output>) {
        self.membership.awaiting_left = false;
        if self.membership.leaving
            && !self.membership.exiting
            && self.membership.orphaned_at.is_none()
        {
            log::warn!(
                "lost the manager while leaving; exiting in {LEAVE_ORPHAN_MS} ms \
                 unless it comes back"
            );
            self.membership.orphaned_at = Some(now);
            out.push(Output::Timer {
                at: now + LEAVE_ORPHAN_MS,
                id: TIMER_ORPHAN,
            });
        }
    }

    pub(super) fn on_manager_frame(&mut self, now: Millis, frame: Frame, out: &mut Vec<Output>) {
        match frame.op {
            op::MEMBER_CHALLENGE if !self.membership.manager_proven => {
                if let Some(conn) = self.membership.manager.conn() {
                    self.manager_challenge(now, conn, &frame, out);
                }
            }
            o if o != op::ERR && !self.membership.manager_proven => {
                log::warn!(
                    "ignoring {} from a manager that has not proven the secret",
                    op::name(o)
                );
            }
            op::RING_UPDATE | op::JOINED => match Message::decode(&frame) {
                Ok(Message::RingUpdate { ring }) => self.install_ring(ring, now, out),
                Ok(Message::Joined {
                    node_id,
                    catch_up,
                    ring,
                }) => self.registered(now, (node_id, catch_up), ring, out),
                Ok(_) => {}
                Err(e) => log::warn!("bad message from the manager: {e}"),
            },
            op::LEASE => match Message::decode(&frame) {
                Ok(Message::Lease { sent, lease_ms }) => self.leased(now, sent, lease_ms),
                Ok(_) => {}
                Err(e) => log::warn!("bad message from the manager: {e}"),
            },
            op::ERR if self.membership.awaiting_joined => {
                self.membership.awaiting_joined = false;
                let e = Error::from_payload(&frame.payload);
                match e.code {
                    ErrorCode::Auth => self.refused_for_good(&e, out),
                    // Not now (a restarted manager recovering the membership),
                    // or a refusal a restart of the manager may lift.
                    ErrorCode::Unavailable => {
                        let why = format!("the manager cannot register us yet ({e})");
                        self.retry_registration(now, &why, out);
                    }
                    _ => {
                        let why = format!("the manager refused to register us ({e})");
                        self.retry_registration(now, &why, out);
                    }
                }
            }
            op::ERR if self.membership.awaiting_left => {
                self.membership.awaiting_left = false;
                log::warn!(
                    "the manager refused our leave ({}); exiting without handing the \
                     data over: {}",
                    Error::from_payload(&frame.payload),
                    self.data_left_behind()
                );
                out.push(Output::Stop);
            }
            op::OK if self.membership.awaiting_left => self.membership.awaiting_left = false,
            op::ERR => log::error!(
                "the manager refused us: {}",
                Error::from_payload(&frame.payload)
            ),
            other => log::debug!("ignoring op {other} from the manager"),
        }
    }

    /// The manager registered this node as `id` (`catch_up`: it had the node
    /// down meanwhile, so the node may have missed writes) and sent the ring.
    fn registered(
        &mut self,
        now: Millis,
        (id, catch_up): (u32, bool),
        ring: Ring,
        out: &mut Vec<Output>,
    ) {
        self.membership.awaiting_joined = false;
        self.membership.join_refusals = 0;
        if self.node_id != id {
            log::info!("registered with the manager as node {id}");
        }
        self.node_id = id;
        self.repair.was_down |= catch_up;
        self.hlc.set_writer(id);
        self.install_ring(ring, now, out);
        let m = &self.membership;
        if m.leaving && !m.exiting && !m.awaiting_left {
            // Registered again while leaving (the manager link broke): ask
            // again, the LEAVE may have been lost.
            self.send_leave(out);
        }
    }

    /// `message` as this node sends it to the manager (its id in the header).
    pub(super) fn to_manager(&self, message: &Message) -> Frame {
        let mut frame = message.encode();
        frame.node_id = self.node_id;
        frame
    }

    /// Asks the manager to start this node's departure (its answer: `OK`, or an
    /// `ERR`, for the only node in the ring, that makes the node exit without a
    /// handoff).
    pub(super) fn send_leave(&mut self, out: &mut Vec<Output>) {
        if let Some(conn) = self.membership.manager.conn() {
            self.membership.awaiting_left = true;
            out.push(Output::Send {
                conn,
                frame: self.to_manager(&Message::Leave),
            });
        }
    }

    /// Where this node's data stays when it exits without a handoff (for the log).
    pub(super) fn data_left_behind(&self) -> &'static str {
        match (self.journal.is_some(), self.ring.replicas > 1) {
            (true, true) => "its keys stay on disk and on the other replicas",
            (true, false) => "its keys stay on disk until it is started again",
            (false, true) => "the other replicas still hold its keys",
            (false, false) => "its keys are lost (no replicas, no --data-dir)",
        }
    }

    pub(super) fn install_ring(&mut self, ring: Ring, now: Millis, out: &mut Vec<Output>) {
        let me = self.node_id;
        let was_leaving = self
            .ring
            .node(me)
            .is_some_and(|n| n.state == NodeState::Leaving);
        let serving = ring.serving();
        let settled = ring.settled();
        log::debug!("ring epoch {} installed", ring.epoch);
        if me != 0 && ring.node(me).is_none() && (was_leaving || self.membership.leaving) {
            // Other nodes may still route by the previous ring for a moment: keep
            // forwarding to the new owners for a grace period, then exit.
            log::info!("handed everything over and left the ring; exiting soon");
            self.membership.exiting = true;
            out.push(Output::Timer {
                at: now + EXIT_GRACE_MS,
                id: TIMER_LEAVE,
            });
        }
        // Sectors: the tokens this node serves now and the ones it will serve.
        let mut tokens: Vec<u64> = [&serving, &settled]
            .iter()
            .filter_map(|r| r.node(me))
            .flat_map(|n| n.tokens.iter().copied())
            .collect();
        tokens.sort_unstable();
        tokens.dedup();
        if !tokens.is_empty() && !self.engine.tokens().eq(tokens.iter().copied()) {
            self.engine.set_tokens(tokens);
        }
        let n = ring.replicas.max(1) as usize;
        let (serving_pref, settled_pref) = (serving.pref_table(n), settled.pref_table(n));
        let catch_up = self.needs_catch_up(&ring, &serving, &serving_pref);
        let mut dropped = 0;
        if me != 0 && ring.node(me).is_some() {
            let held = |h| serving_pref.get(h).contains(&me) || settled_pref.get(h).contains(&me);
            dropped = self.engine.remove_where(|h| !held(h));
            if dropped > 0 {
                log::info!("dropped {dropped} keys now held by other nodes");
                if let Some(d) = self.journal.as_mut() {
                    d.want_snapshot();
                }
            }
            self.owe_newcomers(&ring, &serving, &serving_pref);
        }
        let failed = self.mesh.set_members(me, &ring, out);
        let gone: Vec<u32> = self
            .ring
            .nodes()
            .iter()
            .map(|n| n.id)
            .filter(|&id| ring.node(id).is_none())
            .collect();
        if let Some(d) = self.journal.as_mut() {
            d.save_identity(me, &ring);
        }
        self.ring = ring;
        self.serving = serving;
        self.settled = settled;
        self.serving_pref = serving_pref;
        self.settled_pref = settled_pref;
        self.ae_ring_installed(dropped > 0);
        self.fail_forwards(now, failed, ErrorCode::Unavailable, out);
        for id in gone {
            self.repair.resync.forget(id);
        }
        self.start_handoff(now, out);
        match catch_up {
            Some(known) => self.start_catch_up(now, known, out),
            None => self.catch_up_progress(now, None),
        }
        self.ask_unheard(now, out);
        self.pump_resync(now, out);
        self.ask_to_leave_again(out);
    }

    /// A node that wants to leave, whose `LEAVE` the manager took, but whose
    /// ring lists it `up` again (marked down meanwhile and back, or its leave
    /// called off as nobody was left to take its data): it asks again.
    fn ask_to_leave_again(&mut self, out: &mut Vec<Output>) {
        let m = &self.membership;
        let up = (self.ring.node(self.node_id)).is_some_and(|n| n.state == NodeState::Up);
        if m.leaving && !m.exiting && !m.awaiting_left && up {
            log::info!("the ring lists this node up again while it leaves; asking again");
            self.send_leave(out);
        }
    }

    /// What `NODE_JOIN` to the manager offers: the ring this node knows, if it
    /// lists the node, so a restarted manager can recover (`LF` and the RING text
    /// after the usual payload).
    fn manager_offer(&self) -> Option<Ring> {
        let listed = self.node_id != 0 && self.ring.node(self.node_id).is_some();
        listed.then(|| self.ring.clone())
    }

    /// The manager's `MEMBER_CHALLENGE`: register with `NODE_JOIN` (sent at
    /// `now`, for the lease that follows `JOINED`) if its proof is right; a
    /// manager that cannot prove the cluster secret stops the node.
    fn manager_challenge(
        &mut self,
        now: Millis,
        conn: ConnId,
        frame: &Frame,
        out: &mut Vec<Output>,
    ) {
        let offer = self.manager_offer();
        match self.answer_challenge(conn, frame, offer, Some(now)) {
            Ok(join) => {
                self.membership.manager_proven = true;
                out.push(Output::Send { conn, frame: join });
            }
            Err(why) => {
                let e = Error::new(ErrorCode::Auth, format!("the manager sent {why}"));
                self.refused_for_good(&e, out);
            }
        }
    }

    /// The manager link is up: register (or register again).
    pub(super) fn manager_up(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        self.membership.manager.up(conn);
        self.membership.orphaned_at = None;
        self.membership.awaiting_joined = true;
        self.membership.manager_proven = false;
        let frame = self.member_hello(conn);
        out.push(Output::Send { conn, frame });
    }

    /// Tells the manager this node is alive, with its key count (and whether
    /// it is catching up), every [`NodeConfig::heartbeat_ms`]; the manager's
    /// `LEASE` answer echoes `now` (see `lease.rs`).
    pub(super) fn heartbeat(&mut self, now: Millis, out: &mut Vec<Output>) {
        if let Some(conn) = self.membership.manager.conn() {
            let beat = Message::Heartbeat {
                keys: self.engine.len() as u64,
                sent: now,
                catching_up: self.repair.catch_up.is_some(),
            };
            out.push(Output::Send {
                conn,
                frame: self.to_manager(&beat),
            });
        }
        out.push(Output::Timer {
            at: now + self.cfg.heartbeat_ms,
            id: TIMER_HEARTBEAT,
        });
    }

    /// SIGTERM starts a departure with a handoff when the manager can run one;
    /// a second SIGTERM, or SIGINT, stops the node at once.
    pub(super) fn on_signal(&mut self, now: Millis, sig: Signal, out: &mut Vec<Output>) {
        if sig != Signal::Terminate || self.membership.leaving {
            log::info!("{sig:?}: shutting down");
            return out.push(Output::Stop);
        }
        match self.membership.manager.conn() {
            Some(_) if self.ring.node(self.node_id).is_some() => {
                log::info!("SIGTERM: handing data over before leaving");
                self.membership.leaving = true;
                self.send_leave(out);
                out.push(Output::Timer {
                    at: now + LEAVE_DEADLINE_MS,
                    id: TIMER_LEAVE,
                });
            }
            _ => {
                log::warn!(
                    "SIGTERM without a manager: exiting without a handoff; {}",
                    self.data_left_behind()
                );
                out.push(Output::Stop);
            }
        }
    }

    /// The handoff of a departure took longer than [`LEAVE_DEADLINE_MS`], or the
    /// exit grace after leaving the ring is over.
    pub(super) fn leave_deadline(&mut self, out: &mut Vec<Output>) {
        if self.ring.node(self.node_id).is_some() {
            log::warn!("the handoff did not finish in time; exiting anyway");
        }
        out.push(Output::Stop);
    }

    /// A leaving node whose manager link stayed down for [`LEAVE_ORPHAN_MS`]
    /// exits without a handoff.
    pub(super) fn orphan_deadline(&mut self, now: Millis, out: &mut Vec<Output>) {
        let since = self.membership.orphaned_at;
        let gone = since.is_some_and(|t| now >= t + LEAVE_ORPHAN_MS);
        if gone && !self.membership.exiting {
            log::warn!(
                "the manager has been unreachable for {LEAVE_ORPHAN_MS} ms; \
                 exiting without handing the data over: {}",
                self.data_left_behind()
            );
            out.push(Output::Stop);
        }
    }
}
