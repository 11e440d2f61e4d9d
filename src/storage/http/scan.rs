//! `GET /fetch`: every key-value pair of the cluster, a page at a time.
//!
//! The cursor walks the ring's token ranges in order (range 0 wraps past the
//! top of the hash space; the ranges are those of the ring the node routes by)
//! and, within a range, the keys in byte order: it is `I` or `I.HEXKEY`, "range
//! `I`, after key `HEXKEY`". A page sends one native SCAN at a time (see
//! `storage::node::scan`) for the range at the cursor, asking for what the page
//! still lacks; the node serves it at the range's lead replica. A range is done
//! when a reply says it holds no more; the page is done when it has `limit`
//! pairs, its values add up to the byte bound, or the last range is done. Its
//! reply carries the next cursor in `X-Next-Cursor` unless the scan is over.

use super::{error_reply, Response};
use crate::http::json;
use crate::storage::node::scan::{parse_reply, Scan, MAX_SCAN_COUNT};
use bytes::Bytes;
use std::fmt::Write as _;

/// Pairs a page holds when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 1_000;

/// A page of `GET /fetch` in progress.
pub(super) struct ScanJob {
    /// The ranges' end tokens when the page started.
    bounds: Vec<u64>,
    /// The range at the cursor.
    range: usize,
    /// The last key listed in that range.
    after: Bytes,
    limit: usize,
    pairs: Vec<(Bytes, Bytes)>,
    bytes: usize,
    max_bytes: usize,
}

/// What a page does after a reply.
pub(super) enum Next {
    /// Send this SCAN.
    Ask(Scan),
    /// Answer this.
    Done(Response),
}

/// Decodes a cursor's key.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn bad_query(message: &str) -> Response {
    error_reply(400, "bad_query", message, None)
}

impl ScanJob {
    /// A page for the query string `query` over the ranges ending at `bounds`.
    pub(super) fn start(
        query: Option<&str>,
        bounds: &[u64],
        max_bytes: usize,
    ) -> Result<ScanJob, Response> {
        let mut job = ScanJob {
            bounds: if bounds.is_empty() {
                vec![0]
            } else {
                bounds.to_vec()
            },
            range: 0,
            after: Bytes::new(),
            limit: DEFAULT_LIMIT,
            pairs: Vec::new(),
            bytes: 0,
            max_bytes,
        };
        for param in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            match name {
                "limit" => {
                    job.limit = (value.parse().ok())
                        .filter(|n| (1..=MAX_SCAN_COUNT as usize).contains(n))
                        .ok_or_else(|| bad_query(&format!("limit must be 1..={MAX_SCAN_COUNT}")))?;
                }
                "cursor" => {
                    let (i, key) = value.split_once('.').unwrap_or((value, ""));
                    let i: usize = i.parse().map_err(|_| bad_query("bad cursor"))?;
                    let key = unhex(key).ok_or_else(|| bad_query("bad cursor"))?;
                    if i >= job.bounds.len() {
                        return Err(bad_query(
                            "the cursor is past the ring's ranges (the ring changed?)",
                        ));
                    }
                    (job.range, job.after) = (i, Bytes::from(key));
                }
                _ => return Err(bad_query(&format!("unknown parameter {name:?}"))),
            }
        }
        Ok(job)
    }

    /// The SCAN for the cursor's range.
    pub(super) fn ask(&self) -> Scan {
        let count = self.limit - self.pairs.len();
        Scan::of_range(&self.bounds, self.range, self.after.clone(), count)
    }

    /// Takes a SCAN reply's payload.
    pub(super) fn reply(&mut self, payload: &Bytes) -> Next {
        let Some((records, more)) = parse_reply(payload) else {
            let r = error_reply(502, "bad_reply", "a node sent a malformed SCAN reply", None);
            return Next::Done(r);
        };
        if let Some((k, _)) = records.last() {
            self.after = k.clone();
        }
        for (k, v) in records {
            self.bytes += k.len() + v.len();
            self.pairs.push((k, v));
        }
        if !more {
            self.range += 1;
            self.after = Bytes::new();
        }
        let full = self.pairs.len() >= self.limit || self.bytes >= self.max_bytes;
        if full || self.range == self.bounds.len() {
            return Next::Done(self.finish());
        }
        Next::Ask(self.ask())
    }

    fn finish(&self) -> Response {
        let pairs = self.pairs.iter().map(|(k, v)| (&k[..], &v[..]));
        let r = Response::new(200, "application/json", json::fetch_reply(pairs));
        if self.range == self.bounds.len() {
            return r;
        }
        let mut cursor = self.range.to_string();
        if !self.after.is_empty() {
            cursor.push('.');
            for b in &self.after[..] {
                let _ = write!(cursor, "{b:02x}");
            }
        }
        r.with_header("X-Next-Cursor", cursor)
    }
}
