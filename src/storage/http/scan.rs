//! `GET /fetch`: every key-value pair of the cluster, streamed or a page at a
//! time, through the native SCAN (see `storage::node::scan`): pairs come in
//! the order of (ring hash, key) and a cursor is a point of the hash space, so
//! a walk neither skips nor repeats a key that exists for all of it while nodes
//! join and leave (keys written or deleted during it may or may not appear).
//!
//! Without `limit`: the whole cluster (from `cursor` if given) as one JSON
//! array sent with `Transfer-Encoding: chunked`, one chunk per native SCAN page
//! of [`STREAM_PAGE`] keys. The next page is asked only once the connection's
//! output has drained below the reactor's low-water mark (the front asks the
//! reactor with `Output::WhenDrained`), so a slow reader holds at most about
//! one page, never the store. The status line goes out with the first page:
//! a failure before it is a `503`; a failure after it closes the connection
//! without the last chunk, so the client sees a cut body, never a short one
//! that looks whole.
//!
//! With `limit=N` (1 to 10,000): one page of at most `N` pairs (fewer when
//! their values reach the front's reply bound), asked with as many native
//! SCANs as it takes; the reply says where to resume in `X-Next-Cursor` (a
//! decimal `u64`) unless the walk is over.
//!
//! A native SCAN answered `STALE` (the nodes disagree on the ring for a moment)
//! is asked again, at most [`STALE_RETRIES`] times in a row while streaming;
//! a page ends early instead, with the same cursor to resume at.

use super::{error_reply, read_failed, HttpFront, Response};
use crate::http::json;
use crate::protocol::{op, Frame};
use crate::reactor::{ConnId, Millis, Output};
use crate::storage::node::scan::{parse_reply, Scan, MAX_SCAN_COUNT};
use bytes::Bytes;

/// Keys one native SCAN of a streamed `GET /fetch` asks for.
pub const STREAM_PAGE: usize = 1_000;
/// Native SCANs of a stream answered `STALE` in a row before it gives up.
pub const STALE_RETRIES: u32 = 1_000;

/// A `GET /fetch` in progress.
pub(super) struct ScanJob {
    /// Where the walk goes on.
    cursor: u64,
    /// `Some`: a page of at most this many pairs; `None`: a stream.
    limit: Option<usize>,
    /// A page's pairs so far.
    pairs: Vec<(Bytes, Bytes)>,
    bytes: usize,
    max_bytes: usize,
    /// A stream's status line and first item went out.
    started: bool,
    /// `STALE` answers in a row.
    stale: u32,
    /// A stream waits for its connection to drain before asking on.
    pub(super) draining: bool,
}

/// What a `GET /fetch` does after a native reply.
pub(super) enum Next {
    /// Send this SCAN.
    Ask(Scan),
    /// Answer this (the whole reply).
    Done(Response),
    /// Send this piece of the stream; `last`: and end it.
    Chunk { data: Vec<u8>, last: bool },
    /// The stream failed after its status line: cut the connection.
    Cut,
}

fn bad_query(message: &str) -> Response {
    error_reply(400, "bad_query", message, None)
}

impl ScanJob {
    /// A `GET /fetch` for the query string `query`, pages bounded by
    /// `max_bytes` of pairs.
    pub(super) fn start(query: Option<&str>, max_bytes: usize) -> Result<ScanJob, Response> {
        let mut job = ScanJob {
            cursor: 0,
            limit: None,
            pairs: Vec::new(),
            bytes: 0,
            max_bytes,
            started: false,
            stale: 0,
            draining: false,
        };
        for param in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            match name {
                "limit" => {
                    let n = (value.parse().ok())
                        .filter(|n| (1..=MAX_SCAN_COUNT as usize).contains(n))
                        .ok_or_else(|| bad_query(&format!("limit must be 1..={MAX_SCAN_COUNT}")))?;
                    job.limit = Some(n);
                }
                "cursor" => {
                    job.cursor = value.parse().map_err(|_| {
                        bad_query("cursor must be a decimal number from X-Next-Cursor")
                    })?;
                }
                _ => return Err(bad_query(&format!("unknown parameter {name:?}"))),
            }
        }
        Ok(job)
    }

    /// The SCAN for the cursor.
    pub(super) fn ask(&self) -> Scan {
        match self.limit {
            Some(limit) => Scan::walk(self.cursor, limit - self.pairs.len()),
            None => Scan::walk(self.cursor, STREAM_PAGE),
        }
    }

    /// Takes a native SCAN reply.
    pub(super) fn reply(&mut self, frame: &Frame) -> Next {
        if frame.op == op::STALE {
            self.stale += 1;
            return match self.limit {
                Some(_) => Next::Done(self.page()),
                None if self.stale <= STALE_RETRIES => Next::Ask(self.ask()),
                None => self.fail(read_failed(frame)),
            };
        }
        let parsed = (frame.op == op::VALUE)
            .then(|| parse_reply(&frame.payload))
            .flatten();
        let Some((records, next)) = parsed else {
            let r = match frame.op {
                op::VALUE => {
                    error_reply(502, "bad_reply", "a node sent a malformed SCAN reply", None)
                }
                _ => read_failed(frame),
            };
            return self.fail(r);
        };
        self.stale = 0;
        self.cursor = next;
        if self.limit.is_none() {
            return self.chunk(&records, next == 0);
        }
        for (k, v) in records {
            self.bytes += k.len() + v.len();
            self.pairs.push((k, v));
        }
        let full = self.limit.is_some_and(|l| self.pairs.len() >= l);
        if full || next == 0 || self.bytes >= self.max_bytes {
            return Next::Done(self.page());
        }
        Next::Ask(self.ask())
    }

    /// A failure: the error reply, or a cut once the stream has started.
    fn fail(&self, reply: Response) -> Next {
        if self.started {
            Next::Cut
        } else {
            Next::Done(reply)
        }
    }

    /// The next piece of a stream: the records as JSON array items.
    fn chunk(&mut self, records: &[(Bytes, Bytes)], last: bool) -> Next {
        let items = json::fetch_reply(records.iter().map(|(k, v)| (&k[..], &v[..])));
        // `[a,b]` without its brackets.
        let inner = &items.as_bytes()[1..items.len() - 1];
        let mut data = Vec::with_capacity(inner.len() + 2);
        if !self.started {
            data.push(b'[');
        } else if !inner.is_empty() {
            data.push(b',');
        }
        data.extend_from_slice(inner);
        if !self.started && inner.is_empty() && !last {
            // Keep the comma rule simple: the stream starts with its first item.
            return Next::Ask(self.ask());
        }
        self.started = true;
        if last {
            data.push(b']');
        }
        Next::Chunk { data, last }
    }

    /// A page's reply, with the cursor to resume at unless the walk is over.
    fn page(&self) -> Response {
        let pairs = self.pairs.iter().map(|(k, v)| (&k[..], &v[..]));
        let r = Response::new(200, "application/json", json::fetch_reply(pairs));
        if self.cursor == 0 && self.stale == 0 {
            return r;
        }
        r.with_header("X-Next-Cursor", self.cursor.to_string())
    }
}

impl HttpFront {
    /// A native SCAN reply for the `GET /fetch` at the head of `conn`'s jobs.
    pub(super) fn scan_reply(
        &mut self,
        now: Millis,
        conn: ConnId,
        frame: Frame,
        out: &mut Vec<Output>,
    ) {
        self.stats.key_result(op::SCAN, &frame);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(job) = c.jobs.front_mut() else {
            return;
        };
        let (id, since) = (job.id, job.started);
        let Some(page) = job.scan.as_mut() else {
            return;
        };
        let streamed = page.started;
        let next = page.reply(&frame);
        match next {
            Next::Ask(s) => {
                let frame = Frame::new(op::SCAN, c.next_tag, 0, s.payload());
                c.next_tag += 1;
                self.requests.push((conn, frame));
            }
            Next::Chunk { data, last } => {
                let mut fo = Vec::new();
                if !streamed {
                    let head = [("Content-Type", "application/json".to_string())];
                    self.front.stream_start(id, 200, &head, &mut fo);
                }
                self.front.stream_chunk(id, &data, &mut fo);
                if last {
                    self.front.stream_end(id, &mut fo);
                    c.jobs.pop_front();
                    self.resume.push(conn);
                    self.stats.http("/fetch", 200);
                    self.stats.latency(op::SCAN, now.saturating_sub(since));
                } else {
                    page.draining = true;
                    fo.push(Output::WhenDrained { conn });
                }
                self.absorb_front(fo, out);
            }
            Next::Done(reply) => {
                c.jobs.pop_front();
                self.resume.push(conn);
                self.stats.latency(op::SCAN, now.saturating_sub(since));
                self.reply(id, "/fetch", &reply, out);
            }
            Next::Cut => {
                log::warn!("GET /fetch on {conn:?}: a SCAN failed mid-stream; cutting it");
                c.broken = true;
                c.jobs.clear();
                self.stats.http("/fetch", 503);
                out.push(Output::Close { conn });
            }
        }
    }

    /// `conn`'s output drained: a stream waiting for it asks for its next page.
    pub fn drained(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(page) = c.jobs.front_mut().and_then(|j| j.scan.as_mut()) else {
            return;
        };
        if std::mem::take(&mut page.draining) {
            let frame = Frame::new(op::SCAN, c.next_tag, 0, page.ask().payload());
            c.next_tag += 1;
            self.requests.push((conn, frame));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::node::scan::put_record;

    fn value(next: u64, keys: &[&str]) -> Frame {
        let mut p = format!("{next} ").into_bytes();
        for k in keys {
            put_record(&mut p, k.as_bytes(), b"v");
        }
        Frame::new(op::VALUE, 1, 0, p)
    }

    fn stale() -> Frame {
        Frame::new(op::STALE, 1, 0, Bytes::from_static(b"7"))
    }

    fn ask(n: Next) -> Scan {
        match n {
            Next::Ask(s) => s,
            _ => panic!("not an ask"),
        }
    }

    fn done(n: Next) -> Response {
        match n {
            Next::Done(r) => r,
            _ => panic!("not done"),
        }
    }

    fn chunk(n: Next) -> (String, bool) {
        match n {
            Next::Chunk { data, last } => (String::from_utf8(data).unwrap(), last),
            _ => panic!("not a chunk"),
        }
    }

    fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
        (r.headers.iter())
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn queries_are_checked() {
        let j = ScanJob::start(Some("limit=5&cursor=99"), 1 << 20).unwrap();
        assert_eq!(j.ask(), Scan::walk(99, 5));
        let j = ScanJob::start(None, 1 << 20).unwrap();
        assert_eq!(j.ask(), Scan::walk(0, STREAM_PAGE));
        for bad in [
            "limit=0",
            "limit=10001",
            "limit=x",
            "cursor=-1",
            "cursor=1.ab",
            "x=1",
        ] {
            let r = ScanJob::start(Some(bad), 1 << 20).err().expect(bad);
            assert_eq!(r.status, 400, "{bad}");
        }
    }

    #[test]
    fn a_page_asks_until_full_and_names_the_next_cursor() {
        let mut j = ScanJob::start(Some("limit=3"), 1 << 20).unwrap();
        assert_eq!(ask(j.reply(&value(50, &["a"]))), Scan::walk(50, 2));
        let r = done(j.reply(&value(60, &["b", "c"])));
        assert_eq!(header(&r, "X-Next-Cursor"), Some("60"));
        assert_eq!(r.body.iter().filter(|&&b| b == b'{').count(), 3 * 3);
        // The end of the walk: no cursor.
        let mut j = ScanJob::start(Some("limit=3&cursor=60"), 1 << 20).unwrap();
        let r = done(j.reply(&value(0, &["d"])));
        assert_eq!(header(&r, "X-Next-Cursor"), None);
        // STALE: the page so far, to resume at the same cursor.
        let mut j = ScanJob::start(Some("limit=3&cursor=60"), 1 << 20).unwrap();
        let r = done(j.reply(&stale()));
        assert_eq!((r.status, header(&r, "X-Next-Cursor")), (200, Some("60")));
        // A failed read: 503.
        let mut j = ScanJob::start(Some("limit=3"), 1 << 20).unwrap();
        let e = Frame::new(op::ERR, 1, 0, Bytes::from_static(b"UNAVAILABLE down"));
        assert_eq!(done(j.reply(&e)).status, 503);
    }

    #[test]
    fn a_stream_is_one_json_array_in_pieces_and_is_cut_after_it_started() {
        let mut j = ScanJob::start(None, 1 << 20).unwrap();
        // An empty first page sends nothing: the array opens with an item.
        assert_eq!(ask(j.reply(&value(10, &[]))), Scan::walk(10, STREAM_PAGE));
        assert_eq!(ask(j.reply(&stale())), Scan::walk(10, STREAM_PAGE));
        let (first, last) = chunk(j.reply(&value(20, &["a", "b"])));
        assert!(first.starts_with("[{") && first.ends_with('}') && !last);
        assert_eq!(chunk(j.reply(&value(30, &[]))), (String::new(), false));
        let (second, _) = chunk(j.reply(&value(40, &["c"])));
        assert!(second.starts_with(",{"));
        let (end, last) = chunk(j.reply(&value(0, &[])));
        assert_eq!((end.as_str(), last), ("]", true));
        let whole: serde_json::Value = serde_json::from_str(&(first + &second + &end)).unwrap();
        assert_eq!(whole.as_array().unwrap().len(), 3);
        // An empty store is one chunk, `[]`.
        let mut j = ScanJob::start(None, 1 << 20).unwrap();
        assert_eq!(chunk(j.reply(&value(0, &[]))), ("[]".to_string(), true));
        // Failures: a 503 before the status line, a cut after it.
        let mut j = ScanJob::start(None, 1 << 20).unwrap();
        assert_eq!(done(j.reply(&Frame::new(op::VALUE, 1, 0, "x"))).status, 502);
        let mut j = ScanJob::start(None, 1 << 20).unwrap();
        chunk(j.reply(&value(5, &["a"])));
        assert!(matches!(
            j.reply(&Frame::new(op::VALUE, 1, 0, "x")),
            Next::Cut
        ));
        let mut j = ScanJob::start(None, 1 << 20).unwrap();
        for _ in 0..STALE_RETRIES {
            ask(j.reply(&stale()));
        }
        assert_eq!(done(j.reply(&stale())).status, 503);
    }
}
