//! Cutting HTTP/1.1 requests out of a byte buffer.
//!
//! Two phases, as for frames: [`httparse`] reads the head (request line and
//! headers) from the front of the buffer, without copying; a head that is not
//! all there yet is [`Parsed::Incomplete`], a normal result. Then the body: only
//! `Content-Length` bodies are accepted, up to [`Limits::max_body`]; the request
//! is cut out (head and body) once every body byte has arrived.
//!
//! What is refused, and with which status (every refusal closes the connection,
//! since the rest of the stream can no longer be trusted to start at a request):
//!
//! - a head that httparse rejects, a `Content-Length` that is not a number or
//!   appears twice with different values: 400;
//! - a head longer than [`Limits::max_head`] or with more than [`MAX_HEADERS`]
//!   headers: 431;
//! - a `Content-Length` over [`Limits::max_body`]: 413;
//! - a request body in `Transfer-Encoding` (chunked uploads): 501.
//!
//! Caveats: the target's path and query are kept as sent (no percent-decoding);
//! header values that are not UTF-8 are kept only as bytes callers rarely need.

use super::Limits;
use bytes::{Bytes, BytesMut};

/// Most headers one request may carry.
pub const MAX_HEADERS: usize = 64;

/// One request, cut out of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method as sent (`GET`, `PUT`, ...).
    pub method: String,
    /// The target's path (before any `?`).
    pub path: String,
    /// The target's query (after the first `?`), if any.
    pub query: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Headers in arrival order, names lower-cased.
    pub headers: Vec<(String, Bytes)>,
    /// The body (empty without `Content-Length`).
    pub body: Bytes,
    /// Whether the connection stays open after the reply: HTTP/1.1 unless
    /// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
}

impl Request {
    /// The first value of header `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        (self.headers.iter())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    /// The value of query parameter `name` (first one), as sent.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        let q = self.query.as_deref()?;
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }
}

/// A request the parser refuses: the status to answer and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 413, 431 or 501.
    pub status: u16,
    /// What was wrong, for the error body.
    pub message: String,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// What the front of a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request, now removed from the buffer.
    Request(Request),
    /// Not all there yet; `expects_continue` when the head is complete, asked for
    /// `100 Continue`, and the body has not started.
    Incomplete {
        /// The client waits for `100 Continue` before sending the body.
        expects_continue: bool,
    },
}

/// What the head says about the body and the connection.
struct HeadFacts {
    content_length: usize,
    close: bool,
    keep_alive: bool,
    expects_continue: bool,
}

/// Reads the facts the framing depends on from the headers.
fn head_facts(headers: &[httparse::Header<'_>], limits: &Limits) -> Result<HeadFacts, Refusal> {
    let mut facts = HeadFacts {
        content_length: 0,
        close: false,
        keep_alive: false,
        expects_continue: false,
    };
    let mut length: Option<u64> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| Refusal::new(400, "Content-Length is not a number"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Refusal::new(400, "two different Content-Length headers"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Refusal::new(
                501,
                "request bodies in Transfer-Encoding are not supported; send Content-Length",
            ));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                facts.close |= token.eq_ignore_ascii_case(b"close");
                facts.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            facts.expects_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
    let length = length.unwrap_or(0);
    if length > limits.max_body as u64 {
        return Err(Refusal::new(
            413,
            format!(
                "body of {length} bytes is over the limit of {}",
                limits.max_body
            ),
        ));
    }
    facts.content_length = length as usize;
    Ok(facts)
}

/// Cuts the first request out of `buf`, or says it is incomplete or refused.
/// On a refusal the buffer is left as it was (the caller closes the connection).
pub fn parse(buf: &mut BytesMut, limits: &Limits) -> Result<Parsed, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= limits.max_head => n,
        Ok(httparse::Status::Partial) if buf.len() <= limits.max_head => {
            return Ok(Parsed::Incomplete {
                expects_continue: false,
            })
        }
        Ok(_) => {
            return Err(Refusal::new(
                431,
                format!("request head over {} bytes", limits.max_head),
            ))
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::new(
                431,
                format!("more than {MAX_HEADERS} headers"),
            ))
        }
        Err(e) => return Err(Refusal::new(400, format!("malformed request: {e}"))),
    };
    let facts = head_facts(req.headers, limits)?;
    if buf.len() - head_len < facts.content_length {
        return Ok(Parsed::Incomplete {
            expects_continue: facts.expects_continue && buf.len() == head_len,
        });
    }
    // httparse guarantees these after a complete parse.
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default();
    let minor_version = req.version.unwrap_or(1);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let named: Vec<(String, usize, usize)> = (req.headers.iter())
        .map(|h| {
            let start = h.value.as_ptr() as usize - buf.as_ptr() as usize;
            (h.name.to_ascii_lowercase(), start, start + h.value.len())
        })
        .collect();
    let head = buf.split_to(head_len).freeze();
    let body = buf.split_to(facts.content_length).freeze();
    let headers = (named.into_iter())
        .map(|(n, s, e)| (n, head.slice(s..e)))
        .collect();
    let keep_alive = if minor_version == 0 {
        facts.keep_alive && !facts.close
    } else {
        !facts.close
    };
    Ok(Parsed::Request(Request {
        method,
        path,
        query,
        minor_version,
        headers,
        body,
        keep_alive,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_head: 1024,
            max_body: 100,
            max_pipeline: 8,
        }
    }

    fn one(bytes: &[u8]) -> Result<Parsed, Refusal> {
        parse(&mut BytesMut::from(bytes), &limits())
    }

    fn request(p: Result<Parsed, Refusal>) -> Request {
        match p {
            Ok(Parsed::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn a_get_with_query_and_headers() {
        let r = request(one(
            b"GET /fetch?limit=10&cursor=ab HTTP/1.1\r\nHost: x\r\nX-Thing: 1\r\n\r\n",
        ));
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/fetch");
        assert_eq!(r.query_param("limit"), Some("10"));
        assert_eq!(r.query_param("cursor"), Some("ab"));
        assert_eq!(r.query_param("nope"), None);
        assert_eq!(r.header("x-thing"), Some(&b"1"[..]));
        assert!(r.keep_alive);
        assert!(r.body.is_empty());
    }

    #[test]
    fn bodies_wait_for_every_byte_and_leave_the_next_request() {
        let mut buf = BytesMut::from(&b"PUT /set HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"[..]);
        assert_eq!(
            parse(&mut buf, &limits()),
            Ok(Parsed::Incomplete {
                expects_continue: false
            })
        );
        buf.extend_from_slice(b"cdeGET / HTTP/1.1\r\n\r\n");
        let r = request(parse(&mut buf, &limits()));
        assert_eq!(&r.body[..], b"abcde");
        let r = request(parse(&mut buf, &limits()));
        assert_eq!(r.path, "/");
        assert!(buf.is_empty());
    }

    #[test]
    fn connection_header_and_version_decide_keep_alive() {
        let close = request(one(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(!close.keep_alive);
        let old = request(one(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(!old.keep_alive);
        let old_ka = request(one(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(old_ka.keep_alive);
    }

    #[test]
    fn expect_continue_is_reported_before_the_body() {
        let head = b"PUT /set HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(
            one(head),
            Ok(Parsed::Incomplete {
                expects_continue: true
            })
        );
    }

    #[test]
    fn refusals_carry_their_status() {
        let status = |b: &[u8]| one(b).unwrap_err().status;
        assert_eq!(status(b"GARBAGE\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"PUT / HTTP/1.1\r\nContent-Length: 101\r\n\r\n"),
            413
        );
        assert_eq!(
            status(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            501
        );
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(2000));
        assert_eq!(status(long.as_bytes()), 431);
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("h{i}: v\r\n"))
            .collect();
        assert_eq!(
            status(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            431
        );
    }

    #[test]
    fn a_partial_head_is_incomplete() {
        for cut in 0..20 {
            let full = b"GET /metrics HTTP/1.1\r\n\r\n";
            let got = one(&full[..cut.min(full.len() - 1)]);
            assert!(
                matches!(got, Ok(Parsed::Incomplete { .. })),
                "{cut}: {got:?}"
            );
        }
    }
}
