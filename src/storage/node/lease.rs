//! The lease this node serves data under (see the manager's `lease.rs`).
//!
//! The manager answers each `HEARTBEAT` (and the `NODE_JOIN` that registers the
//! node) with `LEASE SENT LEASE_MS`, `SENT` echoing this node's clock when it
//! sent the message; the lease then runs until this node's clock reads `SENT +
//! LEASE_MS` (the latest of all granted). Measured from the send, it ends no
//! later than the manager's `last_seen + lease_ms`, so when the manager takes
//! the lease for over (and drops the node, or flips the move that drops it),
//! this node has stopped serving.
//!
//! With no lease running (it ran out: the manager is down, paused, or cut off
//! from this node; or none came yet), the node serves no data: every key-value
//! request and SCAN, on every front, is answered `ERR UNAVAILABLE` saying why
//! (forwards included: the check is one comparison against the turn's clock),
//! and as a replica it answers a lead's `REPLICATE`, `REPL_READ`, `REPL_READS`,
//! `PREPARE` and `ACCEPT` with `ERR UNAVAILABLE`, which the lead counts as a
//! failed replica. Storing a copy decides nothing, so the record of a refused
//! `REPLICATE` from a lead's round (no base: the lead stored it first, so the
//! write is never reported as applied nowhere) is still stored, as a move's
//! copy is, if the lead's fence admits it (see `check_fenced_replica_of`): a node paused past its lease keeps the commits that waited for
//! it; it just does not count toward the lead's quorum. A move's copy with a
//! base (N = 1) is refused whole, since the old owner applies the write only
//! if the next owner took it. Moves, hints, resync, anti-entropy and
//! tombstone collection go on as ever. The node says once when its lease
//! ran out and once when it has one again.

use super::*;

impl StorageNode {
    /// The manager's `LEASE` for the message this node sent at `sent`: the
    /// lease runs until `sent + lease_ms` if that is later than it did.
    pub(super) fn leased(&mut self, now: Millis, sent: u64, lease_ms: u64) {
        if sent > now {
            log::warn!("ignoring a LEASE for a message sent at {sent}, after now ({now})");
            return;
        }
        let m = &mut self.membership;
        let until = sent.saturating_add(lease_ms);
        if until > m.lease_until {
            m.lease_until = until;
            m.lease_from = sent;
        }
        if m.lease_lapsed && now < m.lease_until {
            m.lease_lapsed = false;
            log::info!("the manager renewed this node's lease: serving data again");
        }
    }

    /// Why this node serves no data now, if it does not: no lease runs.
    #[inline]
    pub(super) fn no_lease(&self, now: Millis) -> Option<Error> {
        if now < self.membership.lease_until || !self.cfg.lease_fence {
            return None;
        }
        Some(self.lease_error(now))
    }

    /// The refusal of a data request with no lease running.
    #[cold]
    fn lease_error(&self, now: Millis) -> Error {
        let m = &self.membership;
        let why = match m.lease_until {
            0 => "no lease from the manager yet".to_string(),
            _ => format!(
                "not in touch with the manager for {} ms: lease expired",
                now - m.lease_from
            ),
        };
        Error::new(ErrorCode::Unavailable, why)
    }

    /// At each tick: says once that the lease ran out.
    pub(super) fn lease_tick(&mut self, now: Millis) {
        let m = &mut self.membership;
        if m.lease_lapsed || m.lease_until == 0 || now < m.lease_until || !self.cfg.lease_fence {
            return;
        }
        m.lease_lapsed = true;
        log::warn!(
            "lease from the manager expired (no answer to a heartbeat for {} ms): \
             serving no data until it answers",
            now - m.lease_from
        );
    }

    /// The refusal of `message`, a lead's round message, when no lease runs
    /// (`None`: served as usual). A lead's write or commit, which the lead
    /// stored first (its outcome is never "applied nowhere"), is kept all the
    /// same if its fence admits it, as a move's copy would be, so a node
    /// paused past its lease keeps the copies that waited for it; it is just
    /// not counted. A move's copy with a base (N = 1) is refused whole: the
    /// old owner applies the write only if it was taken.
    pub(super) fn round_without_lease(&mut self, now: Millis, message: &Message) -> Option<Error> {
        if !Self::serves_a_round(message) {
            return None;
        }
        let e = self.no_lease(now)?;
        if let Message::Replicate {
            base: None,
            fence,
            record,
        } = message
        {
            self.replicate(None, *fence, record);
        }
        Some(e)
    }

    /// Whether `message`, from a lead, serves one of its rounds (answered `ERR
    /// UNAVAILABLE` with no lease running). A move's copy of an accepted
    /// proposal (an `ACCEPT` with no view) does not.
    pub(super) fn serves_a_round(message: &Message) -> bool {
        matches!(
            message,
            Message::Replicate { .. }
                | Message::ReplRead { .. }
                | Message::ReplReads { .. }
                | Message::Prepare { .. }
                | Message::Accept { view: Some(_), .. }
        )
    }
}
