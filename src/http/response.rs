//! Encoding HTTP/1.1 replies: whole responses with `Content-Length`, and
//! streamed ones in chunked transfer coding.
//!
//! A [`Response`] is a status, a few headers and a body; [`Response::encode`]
//! writes it in one buffer and adds `Content-Length` (and `Connection: close`
//! when the connection closes after it). A streamed reply starts with
//! [`chunked_head`], sends each piece through [`chunk`] and ends with
//! [`LAST_CHUNK`]; its length need not be known up front.
//!
//! Error replies are JSON, `{"error": "...", "status": N}`, so a client reads
//! every failure the same way.

use bytes::{BufMut, Bytes, BytesMut};
use std::fmt::Write as _;

/// The zero-length chunk that ends a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers besides `Content-Length` and `Connection`.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Bytes,
}

/// The reason phrase for `status`.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

impl Response {
    /// A reply with `body` of type `content_type`.
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: body.into(),
        }
    }

    /// A JSON reply.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status, "application/json", value.to_string())
    }

    /// An error reply: `{"error": message, "status": status}`.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(
            status,
            &serde_json::json!({ "error": message, "status": status }),
        )
    }

    /// 404 for `path`.
    pub fn not_found(path: &str) -> Response {
        Response::error(404, &format!("no such path: {path}"))
    }

    /// 405 for `method`, with `Allow` listing what `path` takes.
    pub fn method_not_allowed(method: &str, path: &str, allow: &[&str]) -> Response {
        let mut r = Response::error(405, &format!("{path} does not take {method}"));
        r.headers.push(("Allow", allow.join(", ")));
        r
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The reply's bytes: status line, headers, `Content-Length`, then the body
    /// unless `head_only` (an answer to `HEAD`); `Connection: close` if `close`.
    pub fn encode(&self, head_only: bool, close: bool) -> BytesMut {
        let mut out = BytesMut::with_capacity(128 + self.body.len());
        write_head(&mut out, self.status, &self.headers, close);
        let _ = write!(
            Adapter(&mut out),
            "Content-Length: {}\r\n\r\n",
            self.body.len()
        );
        if !head_only {
            out.put_slice(&self.body);
        }
        out
    }
}

/// Lets `write!` append to a `BytesMut`.
struct Adapter<'a>(&'a mut BytesMut);

impl std::fmt::Write for Adapter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

fn write_head(out: &mut BytesMut, status: u16, headers: &[(&'static str, String)], close: bool) {
    let mut w = Adapter(out);
    let _ = write!(w, "HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        let _ = write!(w, "{name}: {value}\r\n");
    }
    if close {
        let _ = write!(w, "Connection: close\r\n");
    }
}

/// The head of a streamed reply: `Transfer-Encoding: chunked`, no length.
pub fn chunked_head(status: u16, headers: &[(&'static str, String)], close: bool) -> BytesMut {
    let mut out = BytesMut::with_capacity(128);
    write_head(&mut out, status, headers, close);
    out.put_slice(b"Transfer-Encoding: chunked\r\n\r\n");
    out
}

/// One chunk of a streamed body. An empty `data` gives no bytes (a zero-length
/// chunk would end the body; that is [`LAST_CHUNK`]).
pub fn chunk(data: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(data.len() + 12);
    if !data.is_empty() {
        let _ = write!(Adapter(&mut out), "{:x}\r\n", data.len());
        out.put_slice(data);
        out.put_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_response() {
        let r = Response::new(200, "text/plain", "hi");
        assert_eq!(
            &r.encode(false, false)[..],
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
        );
        assert_eq!(
            &r.encode(true, true)[..],
            &b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\
               Content-Length: 2\r\n\r\n"[..]
        );
    }

    #[test]
    fn errors_are_json_and_405_says_what_is_allowed() {
        let r = Response::method_not_allowed("POST", "/metrics", &["GET", "HEAD"]);
        assert_eq!(r.status, 405);
        assert!(r.headers.contains(&("Allow", "GET, HEAD".to_string())));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["status"], 405);
        assert!(v["error"].as_str().unwrap().contains("/metrics"));
    }

    #[test]
    fn a_chunked_body() {
        let mut out = chunked_head(200, &[("Content-Type", "text/plain".into())], false);
        out.extend_from_slice(&chunk(b"hello world, this is 26 b!"));
        out.extend_from_slice(&chunk(b""));
        out.extend_from_slice(LAST_CHUNK);
        assert_eq!(
            &out[..],
            &b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
               1a\r\nhello world, this is 26 b!\r\n0\r\n\r\n"[..]
        );
    }
}
