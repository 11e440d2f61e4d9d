//! Listing the cluster's keys with the native SCAN op (see docs/protocol.md,
//! "SCAN"): [`Client::scan_keys`] walks the ring's token ranges in order, a
//! page of up to [`PAGE`] keys at a time, each page asked of a node that is up
//! (which serves it at the range's lead replica, forwarding if need be).
//!
//! The ranges are those of the serving ring the manager sends (RING), so a
//! walk needs the manager even for a client bound to one node. While the ring
//! does not change, the walk returns every live key once; if nodes join or
//! leave during it, keys may be missed or repeated. One replica answers each
//! page, so a write it has not received yet is missed. A prefix is filtered
//! here: the whole cluster is still read.

use super::{expect, manager_call, Client, ClientError, Result, Route};
use crate::protocol::op;
use crate::ring::Ring;
use crate::storage::node::scan::{parse_reply, Scan};
use bytes::Bytes;

/// Keys one SCAN page asks for.
pub const PAGE: usize = 1_000;

impl Client {
    /// One native SCAN: the records it answers and whether its range holds more.
    pub fn scan_page(&mut self, scan: &Scan) -> Result<(Vec<(Bytes, Bytes)>, bool)> {
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
        expect(&f, &[op::VALUE])?;
        parse_reply(&f.payload).ok_or_else(|| ClientError::Protocol("malformed SCAN reply".into()))
    }

    /// Calls `found` with every key of the cluster that starts with `prefix`,
    /// range by range (in byte order within a range), reading the ring's
    /// ranges from `manager`.
    pub fn scan_keys(
        &mut self,
        manager: &str,
        timeout: std::time::Duration,
        prefix: &[u8],
        mut found: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let text = manager_call(manager, op::RING, timeout)?;
        let ring = Ring::decode(&text).map_err(ClientError::Server)?.serving();
        let mut bounds: Vec<u64> = ring.points().iter().map(|p| p.0).collect();
        bounds.dedup();
        let ranges = bounds.len().max(1);
        for range in 0..ranges {
            let mut after = Bytes::new();
            loop {
                let scan = Scan::of_range(&bounds, range, after.clone(), PAGE);
                let (records, more) = self.scan_page(&scan)?;
                for (k, _) in &records {
                    if k.starts_with(prefix) {
                        found(k)?;
                    }
                }
                match records.last() {
                    Some((k, _)) if more => after = k.clone(),
                    _ => break,
                }
            }
        }
        Ok(())
    }
}
