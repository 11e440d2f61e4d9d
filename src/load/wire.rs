//! Requests and replies of the three protocols the generator speaks: gtstore's
//! frames, RESP2 (Redis) and memcached's text protocol.
//!
//! Requests are *templates*: each (op, value length) is encoded once, with the
//! key written as a fixed-width slot (`key:000000123`, nine digits) and the value
//! as a fixed filler with a 16-byte tag at its front. Sending a request copies the
//! template into the connection's output and patches the key digits and the tag
//! in place: no formatting, no allocation per request. The tag is derived from
//! `(seed, key, write counter)` ([`value_tag`]), so the verify phase can rebuild
//! any value it expects from a counter alone.
//!
//! Replies are parsed from the front of a byte buffer by [`parse_reply`], which
//! knows the op it answers (replies come back in request order on every
//! connection) and returns `Ok(None)` until a whole reply is buffered. Every
//! protocol's answer maps to one [`Outcome`]. A reply that cannot be part of a
//! valid stream is an error: the connection can no longer be trusted.
//!
//! Caveats: RESP arrays are skipped as unexpected replies (no op here asks for
//! one); memcached's `incr` does not create a missing counter, so on memcached
//! incr of a fresh key is a miss.

use super::rng::mix64;
use super::spec::Op;
use crate::protocol::{frame, op};
use std::ops::Range;

/// Digits in a key's number: keys are `key:` or `cnt:` plus nine digits.
pub const KEY_DIGITS: usize = 9;
/// Bytes in a key.
pub const KEY_LEN: usize = 4 + KEY_DIGITS;
/// Largest number of keys (nine digits).
pub const MAX_KEYS: u64 = 1_000_000_000;
/// Bytes of a value's tag (fewer when the value is shorter).
pub const TAG_LEN: usize = 16;
/// A reply claiming more than this is taken as a broken stream.
pub const MAX_REPLY: usize = 256 << 20;
/// A status line longer than this is taken as a broken stream.
const MAX_LINE: usize = 64 << 10;

/// Which protocol a target speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// gtstore frames (docs/protocol.md).
    Gtstore,
    /// RESP2, as Redis speaks it.
    Resp,
    /// memcached's text protocol.
    Memcached,
}

impl Proto {
    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Gtstore => "gtstore",
            Proto::Resp => "resp",
            Proto::Memcached => "memcached",
        }
    }
}

/// Which key space a key lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// `key:`: values written by put, create, update; removed by del.
    Data,
    /// `cnt:`: counters, changed only by incr.
    Counter,
}

impl Space {
    fn prefix(self) -> &'static [u8] {
        match self {
            Space::Data => b"key:",
            Space::Counter => b"cnt:",
        }
    }
}

/// The key space an op's key lives in.
pub fn space_of(op: Op) -> Space {
    if op == Op::Incr {
        Space::Counter
    } else {
        Space::Data
    }
}

/// Writes key number `n` into `out` as it appears on the wire.
pub fn key_bytes(space: Space, n: u32, out: &mut [u8; KEY_LEN]) {
    out[..4].copy_from_slice(space.prefix());
    write_digits(&mut out[4..], n);
}

fn write_digits(out: &mut [u8], mut n: u32) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// The tag at the front of the value written to key `key` by its `counter`-th write.
pub fn value_tag(seed: u64, key: u32, counter: u32) -> [u8; TAG_LEN] {
    let h = mix64(seed ^ mix64(((key as u64) << 32) | counter as u64));
    let mut t = [0u8; TAG_LEN];
    for (i, b) in t.iter_mut().enumerate() {
        *b = b"0123456789abcdef"[((h >> (60 - 4 * i)) & 15) as usize];
    }
    t
}

/// Which of `steps` value lengths the `counter`-th write of `key` uses.
pub fn size_index(seed: u64, key: u32, counter: u32, steps: usize) -> usize {
    if steps <= 1 {
        return 0;
    }
    (mix64(seed.rotate_left(17) ^ ((key as u64) << 32) ^ counter as u64) % steps as u64) as usize
}

/// Fills `out` with the filler every value shares (the tag goes over its front).
pub fn filler(out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
}

/// The whole value the `counter`-th write of `key` stored, `len` bytes long.
pub fn expected_value(seed: u64, key: u32, counter: u32, len: usize, out: &mut Vec<u8>) {
    out.clear();
    out.resize(len, 0);
    filler(out);
    let tag = value_tag(seed, key, counter);
    let n = len.min(TAG_LEN);
    out[..n].copy_from_slice(&tag[..n]);
}

/// One request encoded ahead of time, with where to patch it.
#[derive(Clone, Debug)]
pub struct Template {
    /// The request's bytes with key number 0 and an untagged value.
    pub bytes: Vec<u8>,
    /// Offset of the key's nine digits, if the request has a key.
    pub key_at: Option<usize>,
    /// Offset of the value, if it has one.
    pub value_at: Option<usize>,
    /// Length of the value.
    pub value_len: usize,
}

impl Template {
    /// Builds the template for `op` on `proto` with a value of `value_len` bytes
    /// (ignored for ops without a value). `space` overrides the op's key space
    /// (the verify phase reads counters with GET).
    pub fn new(proto: Proto, op: Op, space: Space, value_len: usize) -> Template {
        let mut key = [0u8; KEY_LEN];
        key_bytes(space, 0, &mut key);
        let value_len = if op.has_value() { value_len } else { 0 };
        let mut value = vec![0u8; value_len];
        filler(&mut value);
        // Parts of the request; the key and value parts are found by position.
        let parts = match proto {
            Proto::Gtstore => gtstore_parts(op, key, value),
            Proto::Resp => resp_parts(op, key, value),
            Proto::Memcached => memcached_parts(op, key, value),
        };
        let mut t = Template {
            bytes: Vec::new(),
            key_at: None,
            value_at: None,
            value_len,
        };
        for p in parts {
            match p {
                Part::Fixed(b) => t.bytes.extend_from_slice(&b),
                Part::Key(k) => {
                    t.key_at = Some(t.bytes.len() + 4);
                    t.bytes.extend_from_slice(&k);
                }
                Part::Value(v) => {
                    t.value_at = Some(t.bytes.len());
                    t.bytes.extend_from_slice(&v);
                }
            }
        }
        t
    }

    /// Appends the request for key number `key`, tagged with `tag`, to `out`.
    pub fn emit(&self, out: &mut bytes::BytesMut, key: u32, tag: &[u8; TAG_LEN]) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let req = &mut out[start..];
        if let Some(k) = self.key_at {
            write_digits(&mut req[k..k + KEY_DIGITS], key);
        }
        if let Some(v) = self.value_at {
            let n = self.value_len.min(TAG_LEN);
            req[v..v + n].copy_from_slice(&tag[..n]);
        }
    }
}

/// A gtstore frame for `op`: the header the project's encoder writes, then the
/// payload's parts.
fn gtstore_parts(op: Op, key: [u8; KEY_LEN], value: Vec<u8>) -> Vec<Part> {
    let mut parts: Vec<Part> = Vec::new();
    let code = match op {
        Op::Get => op::GET,
        Op::Put => op::PUT,
        Op::Del => op::DELETE,
        Op::Incr => op::INCR,
        Op::Create => op::CREATE,
        Op::Update => op::UPDATE,
        Op::Ping => op::PING,
    };
    let mut payload: Vec<Part> = Vec::new();
    match op {
        Op::Ping => {}
        Op::Get | Op::Del => payload.push(Part::Key(key)),
        // KLEN SP KEY [VALUE]; INCR without a delta adds one.
        _ => {
            payload.push(Part::Fixed(format!("{KEY_LEN} ").into_bytes()));
            payload.push(Part::Key(key));
            payload.push(Part::Value(value));
        }
    }
    // The project's encoder writes the header; the payload parts follow.
    let flat: Vec<u8> = payload.iter().flat_map(|p| p.bytes().to_vec()).collect();
    let mut whole = bytes::BytesMut::new();
    frame::encode(&mut whole, code, 0, 0, &flat);
    let header_len = whole.len() - flat.len();
    parts.push(Part::Fixed(whole[..header_len].to_vec()));
    parts.extend(payload);
    parts
}

/// A RESP array of bulk strings for `op`.
fn resp_parts(op: Op, key: [u8; KEY_LEN], value: Vec<u8>) -> Vec<Part> {
    let value_len = value.len();
    let mut parts: Vec<Part> = Vec::new();
    let bulk = |s: &[u8]| {
        let mut v = format!("${}\r\n", s.len()).into_bytes();
        v.extend_from_slice(s);
        v.extend_from_slice(b"\r\n");
        v
    };
    let (cmd, extra): (&[u8], &[u8]) = match op {
        Op::Get => (b"GET", b""),
        Op::Put => (b"SET", b""),
        Op::Del => (b"DEL", b""),
        Op::Incr => (b"INCR", b""),
        Op::Create => (b"SET", b"NX"),
        Op::Update => (b"SET", b"XX"),
        Op::Ping => (b"PING", b""),
    };
    let argc = 1
        + usize::from(op != Op::Ping)
        + usize::from(op.has_value())
        + usize::from(!extra.is_empty());
    let mut head = format!("*{argc}\r\n").into_bytes();
    head.extend_from_slice(&bulk(cmd));
    if op == Op::Ping {
        parts.push(Part::Fixed(head));
    } else {
        head.extend_from_slice(format!("${KEY_LEN}\r\n").as_bytes());
        parts.push(Part::Fixed(head));
        parts.push(Part::Key(key));
        parts.push(Part::Fixed(b"\r\n".to_vec()));
        if op.has_value() {
            parts.push(Part::Fixed(format!("${value_len}\r\n").into_bytes()));
            parts.push(Part::Value(value));
            parts.push(Part::Fixed(b"\r\n".to_vec()));
        }
        if !extra.is_empty() {
            parts.push(Part::Fixed(bulk(extra)));
        }
    }
    parts
}

/// A memcached text-protocol command for `op`.
fn memcached_parts(op: Op, key: [u8; KEY_LEN], value: Vec<u8>) -> Vec<Part> {
    let value_len = value.len();
    let mut parts: Vec<Part> = Vec::new();
    let cmd: &[u8] = match op {
        Op::Get => b"get ",
        Op::Put => b"set ",
        Op::Del => b"delete ",
        Op::Incr => b"incr ",
        Op::Create => b"add ",
        Op::Update => b"replace ",
        Op::Ping => b"version\r\n",
    };
    parts.push(Part::Fixed(cmd.to_vec()));
    if op != Op::Ping {
        parts.push(Part::Key(key));
        if op.has_value() {
            parts.push(Part::Fixed(format!(" 0 0 {value_len}\r\n").into_bytes()));
            parts.push(Part::Value(value));
        } else if op == Op::Incr {
            parts.push(Part::Fixed(b" 1".to_vec()));
        }
        parts.push(Part::Fixed(b"\r\n".to_vec()));
    }
    parts
}

enum Part {
    Fixed(Vec<u8>),
    Key([u8; KEY_LEN]),
    Value(Vec<u8>),
}

impl Part {
    fn bytes(&self) -> &[u8] {
        match self {
            Part::Fixed(b) | Part::Value(b) => b,
            Part::Key(k) => k,
        }
    }
}

/// What a reply said, the same for every protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done (stored, deleted, pong).
    Ok,
    /// A value, at this range of the buffer passed to [`parse_reply`].
    Value(Range<usize>),
    /// A counter's new value (incr).
    Counter(i64),
    /// The key was absent (a get miss, a delete or update of a missing key).
    Miss,
    /// A create found the key present.
    Conflict,
    /// The server refused; the code (`UNAVAILABLE`, `ERR`, `SERVER_ERROR`, ...).
    Error(String),
}

/// Parses the reply to `op` at the front of `buf`: `Ok(Some((outcome, bytes
/// used)))`, `Ok(None)` if it is not all there yet, `Err` if the stream is broken.
pub fn parse_reply(proto: Proto, op: Op, buf: &[u8]) -> Result<Option<(Outcome, usize)>, String> {
    match proto {
        Proto::Gtstore => parse_gtstore(op, buf),
        Proto::Resp => parse_resp(op, buf),
        Proto::Memcached => parse_memcached(op, buf),
    }
}

fn parse_gtstore(req: Op, buf: &[u8]) -> Result<Option<(Outcome, usize)>, String> {
    let window = &buf[..buf.len().min(crate::protocol::MAX_HEADER)];
    let Some(lf) = memchr::memchr(b'\n', window) else {
        if buf.len() >= crate::protocol::MAX_HEADER {
            return Err("reply header longer than 64 bytes".into());
        }
        return Ok(None);
    };
    let h = frame::parse_header(&buf[..lf]).map_err(|e| format!("bad reply header: {e}"))?;
    if h.len as usize > MAX_REPLY {
        return Err(format!("reply of {} bytes", h.len));
    }
    let end = lf + 1 + h.len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let payload = lf + 1..end;
    let outcome = match h.op {
        op::OK | op::PONG => Outcome::Ok,
        op::VALUE if req == Op::Incr => match crate::protocol::kv::parse_i64(&buf[payload]) {
            Some(n) => Outcome::Counter(n),
            None => Outcome::Error("UNEXPECTED".into()),
        },
        op::VALUE => Outcome::Value(payload),
        op::NOT_FOUND => Outcome::Miss,
        op::CONFLICT => Outcome::Conflict,
        op::STALE => Outcome::Error("STALE".into()),
        op::ERR => Outcome::Error(first_word(&buf[payload])),
        _ => Outcome::Error("UNEXPECTED".into()),
    };
    Ok(Some((outcome, end)))
}

fn first_word(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == b' ').unwrap_or(b.len());
    let w = &b[..end.min(32)];
    if w.is_empty() {
        "EMPTY".into()
    } else {
        String::from_utf8_lossy(w).into_owned()
    }
}

/// The code of a RESP error line: its first word, or for gtstore's `-ERR CODE
/// message` (docs/protocol.md) the gtstore code after `ERR`.
fn resp_error_code(body: &[u8]) -> String {
    if let Some(rest) = body.strip_prefix(b"ERR ") {
        let word = first_word(rest);
        if crate::protocol::ErrorCode::from_word(word.as_bytes()).is_some() {
            return word;
        }
    }
    first_word(body)
}

/// The line at `from` without its CRLF, and the offset after the CRLF.
fn line(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, String> {
    let rest = &buf[from..];
    match memchr::memchr(b'\n', rest) {
        Some(i) => {
            if i == 0 || rest[i - 1] != b'\r' {
                return Err("reply line does not end with CRLF".into());
            }
            Ok(Some((&rest[..i - 1], from + i + 1)))
        }
        None if rest.len() > MAX_LINE => Err("reply line too long".into()),
        None => Ok(None),
    }
}

fn decimal_i64(b: &[u8]) -> Option<i64> {
    crate::protocol::kv::parse_i64(b)
}

fn parse_resp(req: Op, buf: &[u8]) -> Result<Option<(Outcome, usize)>, String> {
    if buf.is_empty() {
        return Ok(None);
    }
    let Some((l, after)) = line(buf, 0)? else {
        return Ok(None);
    };
    let (kind, body) = (l.first().copied().unwrap_or(0), l.get(1..).unwrap_or(b""));
    let outcome = match kind {
        b'+' => Outcome::Ok,
        b'-' => Outcome::Error(resp_error_code(body)),
        b':' => {
            let n = decimal_i64(body).ok_or("bad RESP integer")?;
            match req {
                Op::Incr => Outcome::Counter(n),
                _ if n > 0 => Outcome::Ok,
                _ => Outcome::Miss,
            }
        }
        b'$' => {
            let n = decimal_i64(body).ok_or("bad RESP bulk length")?;
            if n < 0 {
                if req == Op::Create {
                    Outcome::Conflict
                } else {
                    Outcome::Miss
                }
            } else {
                let n = n as usize;
                if n > MAX_REPLY {
                    return Err(format!("RESP bulk of {n} bytes"));
                }
                let end = after + n + 2;
                if buf.len() < end {
                    return Ok(None);
                }
                if &buf[end - 2..end] != b"\r\n" {
                    return Err("RESP bulk does not end with CRLF".into());
                }
                return Ok(Some((Outcome::Value(after..end - 2), end)));
            }
        }
        b'*' => {
            let Some(end) = skip_resp_array(buf, body, after, 0)? else {
                return Ok(None);
            };
            return Ok(Some((Outcome::Error("UNEXPECTED".into()), end)));
        }
        _ => return Err(format!("bad RESP type byte {kind:#x}")),
    };
    Ok(Some((outcome, after)))
}

/// Skips an array whose header (count `body`) ended at `at`; returns where it ends.
fn skip_resp_array(
    buf: &[u8],
    body: &[u8],
    at: usize,
    depth: u32,
) -> Result<Option<usize>, String> {
    if depth > 8 {
        return Err("RESP arrays nested too deep".into());
    }
    let n = decimal_i64(body).ok_or("bad RESP array length")?;
    let mut pos = at;
    for _ in 0..n.max(0) {
        let Some((l, after)) = line(buf, pos)? else {
            return Ok(None);
        };
        let (kind, body) = (l.first().copied().unwrap_or(0), l.get(1..).unwrap_or(b""));
        pos = match kind {
            b'+' | b'-' | b':' => after,
            b'$' => {
                let n = decimal_i64(body).ok_or("bad RESP bulk length")?;
                if n < 0 {
                    after
                } else if n as usize > MAX_REPLY {
                    return Err("RESP bulk too large".into());
                } else if buf.len() < after + n as usize + 2 {
                    return Ok(None);
                } else {
                    after + n as usize + 2
                }
            }
            b'*' => match skip_resp_array(buf, body, after, depth + 1)? {
                Some(end) => end,
                None => return Ok(None),
            },
            _ => return Err(format!("bad RESP type byte {kind:#x}")),
        };
    }
    Ok(Some(pos))
}

fn parse_memcached(req: Op, buf: &[u8]) -> Result<Option<(Outcome, usize)>, String> {
    let Some((l, after)) = line(buf, 0)? else {
        return Ok(None);
    };
    let word = l.split(|&b| b == b' ').next().unwrap_or(b"");
    let outcome = match word {
        b"STORED" | b"DELETED" | b"VERSION" | b"TOUCHED" => Outcome::Ok,
        b"NOT_STORED" if req == Op::Create => Outcome::Conflict,
        b"NOT_STORED" | b"NOT_FOUND" | b"END" => Outcome::Miss,
        b"EXISTS" => Outcome::Conflict,
        b"ERROR" | b"CLIENT_ERROR" | b"SERVER_ERROR" => {
            Outcome::Error(String::from_utf8_lossy(word).into_owned())
        }
        b"VALUE" => {
            // VALUE KEY FLAGS BYTES [CAS], then the data, CRLF, and END CRLF.
            let n = l
                .split(|&b| b == b' ')
                .nth(3)
                .and_then(|f| frame::parse_decimal(f, MAX_REPLY as u64))
                .ok_or("bad memcached VALUE line")? as usize;
            let data_end = after + n;
            let end = data_end + 2 + 5;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[data_end..end] != b"\r\nEND\r\n" {
                return Err("memcached value not followed by END".into());
            }
            return Ok(Some((Outcome::Value(after..data_end), end)));
        }
        _ => {
            let digits = l.trim_ascii_end();
            match frame::parse_decimal(digits, i64::MAX as u64) {
                Some(n) if req == Op::Incr => Outcome::Counter(n as i64),
                Some(_) => Outcome::Error("UNEXPECTED".into()),
                None => {
                    return Err(format!(
                        "unknown memcached reply `{}`",
                        String::from_utf8_lossy(&l[..l.len().min(40)])
                    ))
                }
            }
        }
    };
    Ok(Some((outcome, after)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{self, Parse};
    use bytes::BytesMut;

    /// Parses `stream` (replies to `ops`, in order) whole, then again fed in two
    /// pieces split at every offset: every split gives the same outcomes.
    fn check_splits(proto: Proto, ops: &[Op], stream: &[u8], want: &[Outcome]) {
        let whole = parse_all(proto, ops, stream, stream.len());
        assert_eq!(whole, want, "whole stream");
        for cut in 0..=stream.len() {
            assert_eq!(parse_all(proto, ops, stream, cut), want, "split at {cut}");
        }
    }

    /// Feeds `stream[..cut]`, parses what it can, then the rest. Value ranges are
    /// returned as the bytes they point at (as `Outcome::Error("V:...")`).
    fn parse_all(proto: Proto, ops: &[Op], stream: &[u8], cut: usize) -> Vec<Outcome> {
        let mut buf: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        let mut i = 0;
        for piece in [&stream[..cut], &stream[cut..]] {
            buf.extend_from_slice(piece);
            while i < ops.len() {
                match parse_reply(proto, ops[i], &buf).unwrap() {
                    None => break,
                    Some((o, used)) => {
                        assert!(used <= buf.len());
                        let o = match o {
                            Outcome::Value(r) => {
                                Outcome::Error(format!("V:{}", String::from_utf8_lossy(&buf[r])))
                            }
                            o => o,
                        };
                        out.push(o);
                        buf.drain(..used);
                        i += 1;
                    }
                }
            }
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        out
    }

    fn v(s: &str) -> Outcome {
        Outcome::Error(format!("V:{s}"))
    }

    #[test]
    fn gtstore_codes_in_resp_errors_are_kept() {
        let code = |line: &[u8]| match parse_resp(Op::Put, line) {
            Ok(Some((Outcome::Error(c), _))) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            code(b"-ERR UNKNOWN the write may have been applied\r\n"),
            "UNKNOWN"
        );
        assert_eq!(code(b"-ERR UNAVAILABLE node 2 is down\r\n"), "UNAVAILABLE");
        assert_eq!(code(b"-ERR syntax error\r\n"), "ERR");
        assert_eq!(code(b"-WRONGTYPE no\r\n"), "WRONGTYPE");
    }

    #[test]
    fn resp_replies_parse_at_every_split() {
        let stream = b"+OK\r\n$5\r\nhel\r\n\r\n$-1\r\n:7\r\n:0\r\n:1\r\n-ERR wrong type\r\n$-1\r\n+OK\r\n*2\r\n$1\r\na\r\n*1\r\n:3\r\n+PONG\r\n$0\r\n\r\n";
        let ops = [
            Op::Put,
            Op::Get,
            Op::Get,
            Op::Incr,
            Op::Del,
            Op::Del,
            Op::Get,
            Op::Create,
            Op::Update,
            Op::Get,
            Op::Ping,
            Op::Get,
        ];
        let want = vec![
            Outcome::Ok,
            v("hel\r\n"),
            Outcome::Miss,
            Outcome::Counter(7),
            Outcome::Miss,
            Outcome::Ok,
            Outcome::Error("ERR".into()),
            Outcome::Conflict,
            Outcome::Ok,
            Outcome::Error("UNEXPECTED".into()),
            Outcome::Ok,
            v(""),
        ];
        check_splits(Proto::Resp, &ops, stream, &want);
    }

    #[test]
    fn memcached_replies_parse_at_every_split() {
        let stream = b"STORED\r\nVALUE key:000000001 0 6\r\nab\r\ncd\r\nEND\r\nEND\r\nNOT_STORED\r\nNOT_STORED\r\n42\r\nNOT_FOUND\r\nDELETED\r\nSERVER_ERROR out of memory\r\nVERSION 1.6.21\r\nVALUE k 5 0 9\r\n\r\nEND\r\n";
        let ops = [
            Op::Put,
            Op::Get,
            Op::Get,
            Op::Create,
            Op::Update,
            Op::Incr,
            Op::Incr,
            Op::Del,
            Op::Put,
            Op::Ping,
            Op::Get,
        ];
        let want = vec![
            Outcome::Ok,
            v("ab\r\ncd"),
            Outcome::Miss,
            Outcome::Conflict,
            Outcome::Miss,
            Outcome::Counter(42),
            Outcome::Miss,
            Outcome::Ok,
            Outcome::Error("SERVER_ERROR".into()),
            Outcome::Ok,
            v(""),
        ];
        check_splits(Proto::Memcached, &ops, stream, &want);
    }

    #[test]
    fn gtstore_replies_parse_at_every_split() {
        let mut s = BytesMut::new();
        protocol::encode(&mut s, op::OK, 0, 1, b"");
        protocol::encode(&mut s, op::VALUE, 0, 2, b"va\nlue");
        protocol::encode(&mut s, op::NOT_FOUND, 0, 1, b"");
        protocol::encode(&mut s, op::VALUE, 0, 1, b"-12");
        protocol::encode(&mut s, op::CONFLICT, 0, 1, b"");
        protocol::encode(&mut s, op::ERR, 0, 1, b"UNAVAILABLE owner is down");
        protocol::encode(&mut s, op::PONG, 0, 1, b"");
        let ops = [
            Op::Put,
            Op::Get,
            Op::Get,
            Op::Incr,
            Op::Create,
            Op::Get,
            Op::Ping,
        ];
        let want = vec![
            Outcome::Ok,
            v("va\nlue"),
            Outcome::Miss,
            Outcome::Counter(-12),
            Outcome::Conflict,
            Outcome::Error("UNAVAILABLE".into()),
            Outcome::Ok,
        ];
        check_splits(Proto::Gtstore, &ops, &s, &want);
    }

    #[test]
    fn broken_streams_are_errors() {
        assert!(parse_reply(Proto::Resp, Op::Get, b"?what\r\n").is_err());
        assert!(parse_reply(Proto::Resp, Op::Get, b"+OK\n").is_err());
        assert!(parse_reply(Proto::Resp, Op::Get, b"$3\r\nabcXY").is_err());
        assert!(parse_reply(Proto::Memcached, Op::Get, b"HELLO there\r\n").is_err());
        assert!(parse_reply(Proto::Memcached, Op::Get, b"VALUE k 0 1\r\nx\r\nEND!\r\n").is_err());
        assert!(parse_reply(Proto::Gtstore, Op::Get, b"22 0 x 1\nv").is_err());
        assert!(parse_reply(Proto::Gtstore, Op::Get, &[b'1'; 64]).is_err());
        assert_eq!(parse_reply(Proto::Gtstore, Op::Get, &[b'1'; 63]), Ok(None));
    }

    #[test]
    fn templates_are_valid_requests_with_patched_keys_and_tags() {
        let tag = value_tag(9, 123, 4);
        let mut key = [0u8; KEY_LEN];
        key_bytes(Space::Data, 123, &mut key);
        assert_eq!(&key, b"key:000000123");
        // gtstore: the frame parses, and its payload is KLEN SP KEY VALUE.
        let mut out = BytesMut::new();
        Template::new(Proto::Gtstore, Op::Put, Space::Data, 20).emit(&mut out, 123, &tag);
        Template::new(Proto::Gtstore, Op::Incr, Space::Counter, 20).emit(&mut out, 5, &tag);
        let Ok(Parse::Frame(f)) = protocol::parse(&mut out, 1 << 20) else {
            panic!("PUT template is not a frame")
        };
        assert_eq!(f.op, op::PUT);
        let mut want = b"13 key:000000123".to_vec();
        let mut value = Vec::new();
        expected_value(9, 123, 4, 20, &mut value);
        assert_eq!(&value[..TAG_LEN], &tag);
        want.extend_from_slice(&value);
        assert_eq!(&f.payload[..], &want[..]);
        let Ok(Parse::Frame(f)) = protocol::parse(&mut out, 1 << 20) else {
            panic!("INCR template is not a frame")
        };
        assert_eq!((f.op, &f.payload[..]), (op::INCR, &b"13 cnt:000000005"[..]));
        // RESP and memcached: exact bytes.
        let mut out = BytesMut::new();
        Template::new(Proto::Resp, Op::Create, Space::Data, 3).emit(&mut out, 7, &tag);
        let t = String::from_utf8_lossy(&tag[..3]).into_owned();
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!("*4\r\n$3\r\nSET\r\n$13\r\nkey:000000007\r\n$3\r\n{t}\r\n$2\r\nNX\r\n")
        );
        let mut out = BytesMut::new();
        Template::new(Proto::Memcached, Op::Update, Space::Data, 3).emit(&mut out, 7, &tag);
        Template::new(Proto::Memcached, Op::Incr, Space::Counter, 3).emit(&mut out, 8, &tag);
        Template::new(Proto::Resp, Op::Get, Space::Counter, 3).emit(&mut out, 9, &tag);
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!(
                "replace key:000000007 0 0 3\r\n{t}\r\nincr cnt:000000008 1\r\n\
                 *2\r\n$3\r\nGET\r\n$13\r\ncnt:000000009\r\n"
            )
        );
    }

    #[test]
    fn tags_and_sizes_depend_on_key_and_counter() {
        assert_ne!(value_tag(1, 5, 1), value_tag(1, 5, 2));
        assert_ne!(value_tag(1, 5, 1), value_tag(1, 6, 1));
        assert_ne!(value_tag(1, 5, 1), value_tag(2, 5, 1));
        let picks: std::collections::HashSet<usize> =
            (0..100).map(|c| size_index(3, 1, c, 8)).collect();
        assert!(picks.len() > 4 && picks.iter().all(|&i| i < 8));
    }
}
