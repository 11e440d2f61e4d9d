//! Listing the cluster's keys with the native SCAN op (see docs/protocol.md,
//! "SCAN", and `storage::node::scan`): [`Client::scan_keys`] walks the whole
//! hash space from cursor 0, a page of up to [`PAGE`] keys at a time, each page
//! asked of a node that is up (which serves it at a replica holding the
//! cursor's range, forwarding if need be), until a page answers cursor 0.
//!
//! The cursor is a point of the hash space, not a range of one ring, so the
//! walk needs no ring and survives nodes joining and leaving between pages:
//! every key that exists for the whole walk is listed exactly once. A page
//! answered `STALE` (the nodes disagree on the ring for a moment) is asked
//! again after `RETRY_PAUSE`, for up to `RETRY_FOR`. Keys written or
//! deleted during the walk may or may not be listed; one replica answers each
//! page, so a write it has not received yet is missed. A prefix is filtered
//! here: the whole cluster is still read.

use super::{expect, Client, ClientError, Result, Route};
use crate::protocol::op;
use crate::storage::node::scan::{parse_reply, Scan};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// Keys one SCAN page asks for.
pub const PAGE: usize = 1_000;
/// Pause before asking again for a page answered `STALE`.
pub const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How long a walk keeps asking for a page answered `STALE`.
pub const RETRY_FOR: Duration = Duration::from_secs(10);

/// One page of a walk: its records and the next cursor (`0`: done).
pub type Page = (Vec<(Bytes, Bytes)>, u64);

impl Client {
    /// One native SCAN: its records and the next cursor, or `None` when it was
    /// answered `STALE` (ask again shortly).
    pub fn scan_page(&mut self, scan: &Scan) -> Result<Option<Page>> {
        let id = self.client_id;
        let payload = scan.payload();
        let f = match &mut self.route {
            Route::Contact(c) => c.call(op::SCAN, id, &[&payload])?,
            Route::Ring(r) => {
                let target = r.any_up(0).ok_or_else(|| {
                    ClientError::Protocol("no node is up in the client's ring".into())
                })?;
                r.conn(target)?.call(op::SCAN, id, &[&payload])?
            }
        };
        if f.op == op::STALE {
            return Ok(None);
        }
        expect(&f, &[op::VALUE])?;
        let page = parse_reply(&f.payload)
            .ok_or_else(|| ClientError::Protocol("malformed SCAN reply".into()))?;
        Ok(Some(page))
    }

    /// The page of up to `count` records at `cursor`, asking again while it is
    /// answered `STALE` (for up to ten seconds).
    pub fn scan_at(&mut self, cursor: u64, count: usize) -> Result<Page> {
        let since = Instant::now();
        loop {
            if let Some(page) = self.scan_page(&Scan::walk(cursor, count))? {
                return Ok(page);
            }
            if since.elapsed() > RETRY_FOR {
                return Err(ClientError::Protocol(
                    "SCAN: the nodes kept disagreeing on the ring".into(),
                ));
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }

    /// Calls `found` with every key of the cluster that starts with `prefix`,
    /// in the order of (ring hash, key).
    pub fn scan_keys(
        &mut self,
        prefix: &[u8],
        mut found: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut cursor = 0;
        loop {
            let (records, next) = self.scan_at(cursor, PAGE)?;
            for (k, _) in &records {
                if k.starts_with(prefix) {
                    found(k)?;
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}
