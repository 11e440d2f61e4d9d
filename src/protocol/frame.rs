//! Frame parsing and encoding.
//!
//! `OP SP CLIENTID SP NODEID SP LEN LF` then `LEN` payload bytes. A CR right before
//! the LF is accepted. The header, LF included, is at most [`MAX_HEADER`] bytes.

use super::error::{Error, ErrorCode};
use bytes::{BufMut, Bytes, BytesMut};

/// Longest header accepted, counting the terminating LF (and CR, if any).
pub const MAX_HEADER: usize = 64;

/// Default largest payload a server accepts (16 MiB), settable by flag.
pub const DEFAULT_MAX_PAYLOAD: u32 = 16 << 20;

/// One message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The op number (see [`super::op`]).
    pub op: u8,
    /// In a request, the id the manager gave the client (0 = anonymous); in a reply,
    /// the request's client id.
    pub client_id: u64,
    /// In a reply, the sender's node id (manager = 0); in a request, advisory.
    pub node_id: u32,
    /// The payload, a view into the buffer it was read into.
    pub payload: Bytes,
}

impl Frame {
    /// Builds a frame.
    pub fn new(op: u8, client_id: u64, node_id: u32, payload: impl Into<Bytes>) -> Frame {
        Frame {
            op,
            client_id,
            node_id,
            payload: payload.into(),
        }
    }

    /// An `ERR` reply carrying `err`.
    pub fn error(client_id: u64, node_id: u32, err: &Error) -> Frame {
        Frame::new(super::op::ERR, client_id, node_id, err.to_payload())
    }

    /// Bytes this frame takes on the wire.
    pub fn wire_len(&self) -> usize {
        header_len(self.op, self.client_id, self.node_id, self.payload.len()) + self.payload.len()
    }
}

/// The outcome of looking at a read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// A whole frame was cut from the front of the buffer.
    Frame(Frame),
    /// Not a whole frame yet; `need` is how many bytes the buffer must hold before the
    /// next attempt can succeed (a hint for reserving space).
    Incomplete {
        /// Total buffered bytes needed for the frame at the front.
        need: usize,
    },
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Op number.
    pub op: u8,
    /// Client id.
    pub client_id: u64,
    /// Node id.
    pub node_id: u32,
    /// Payload length.
    pub len: u32,
}

/// Cuts the next frame off the front of `buf`.
///
/// `Ok(Parse::Incomplete)` leaves `buf` untouched. An error means the stream cannot
/// be trusted any more (`BADFRAME`), or that the payload is above `max_payload`
/// (`TOOLARGE`, reported as soon as the header is complete, before any payload byte
/// is needed).
pub fn parse(buf: &mut BytesMut, max_payload: u32) -> Result<Parse, Error> {
    let window = &buf[..buf.len().min(MAX_HEADER)];
    let lf = match memchr::memchr(b'\n', window) {
        Some(i) => i,
        None if buf.len() >= MAX_HEADER => {
            return Err(Error::new(
                ErrorCode::BadFrame,
                "header longer than 64 bytes",
            ))
        }
        None => {
            return Ok(Parse::Incomplete {
                need: buf.len() + 1,
            })
        }
    };
    let header = parse_header(&buf[..lf])?;
    if header.len > max_payload {
        return Err(Error::new(
            ErrorCode::TooLarge,
            format!(
                "payload of {} bytes exceeds the maximum of {}",
                header.len, max_payload
            ),
        ));
    }
    let total = lf + 1 + header.len as usize;
    if buf.len() < total {
        return Ok(Parse::Incomplete { need: total });
    }
    let _ = buf.split_to(lf + 1);
    let payload = buf.split_to(header.len as usize).freeze();
    Ok(Parse::Frame(Frame {
        op: header.op,
        client_id: header.client_id,
        node_id: header.node_id,
        payload,
    }))
}

/// Parses a header line without its LF (a trailing CR is allowed).
pub fn parse_header(line: &[u8]) -> Result<Header, Error> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut fields = line.split(|&b| b == b' ');
    let mut next = |name: &'static str, max: u64| -> Result<u64, Error> {
        let field = fields
            .next()
            .ok_or_else(|| Error::new(ErrorCode::BadFrame, format!("header is missing {name}")))?;
        parse_decimal(field, max)
            .ok_or_else(|| Error::new(ErrorCode::BadFrame, format!("bad {name} in header")))
    };
    let op = next("OP", u8::MAX as u64)? as u8;
    let client_id = next("CLIENTID", u64::MAX)?;
    let node_id = next("NODEID", u32::MAX as u64)? as u32;
    let len = next("LEN", u32::MAX as u64)? as u32;
    if fields.next().is_some() {
        return Err(Error::new(ErrorCode::BadFrame, "extra field in header"));
    }
    Ok(Header {
        op,
        client_id,
        node_id,
        len,
    })
}

/// Unsigned ASCII decimal, 1 to 20 digits, at most `max`.
pub fn parse_decimal(field: &[u8], max: u64) -> Option<u64> {
    if field.is_empty() || field.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    (n <= max).then_some(n)
}

/// Writes `n` in decimal into `tmp` and returns the digits.
pub fn fmt_u64(n: u64, tmp: &mut [u8; 20]) -> &[u8] {
    let mut i = tmp.len();
    let mut n = n;
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &tmp[i..]
}

fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

fn header_len(op: u8, client_id: u64, node_id: u32, len: usize) -> usize {
    digits(op as u64) + digits(client_id) + digits(node_id as u64) + digits(len as u64) + 4
}

/// The longest header: four numbers of at most 3, 20, 10 and 20 digits, three
/// spaces and the newline.
const HEADER_MAX: usize = 3 + 20 + 10 + 20 + 4;

/// Writes the header into a buffer on the stack, from its end (a number's
/// digits come out last first), and appends it in one copy: a frame is
/// encoded per request and per replica message, and four numbers appended
/// one by one cost seven small copies.
fn put_header(out: &mut BytesMut, op: u8, client_id: u64, node_id: u32, len: usize) {
    let mut buf = [0u8; HEADER_MAX];
    let mut i = buf.len();
    // Writes `after`, then before it the digits of `n`.
    let mut put = |n: u64, after: u8| {
        i -= 1;
        buf[i] = after;
        let mut tmp = [0u8; 20];
        let digits = fmt_u64(n, &mut tmp);
        i -= digits.len();
        buf[i..i + digits.len()].copy_from_slice(digits);
    };
    put(len as u64, b'\n');
    put(node_id as u64, b' ');
    put(client_id, b' ');
    put(op as u64, b' ');
    out.put_slice(&buf[i..buf.len()]);
}

/// Appends one frame to `out`.
pub fn encode(out: &mut BytesMut, op: u8, client_id: u64, node_id: u32, payload: &[u8]) {
    out.reserve(HEADER_MAX + payload.len());
    put_header(out, op, client_id, node_id, payload.len());
    out.put_slice(payload);
}

/// Appends one frame whose payload is the concatenation of `parts`, without first
/// building the payload elsewhere.
pub fn encode_parts(out: &mut BytesMut, op: u8, client_id: u64, node_id: u32, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(HEADER_MAX + len);
    put_header(out, op, client_id, node_id, len);
    for p in parts {
        out.put_slice(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(buf: &mut BytesMut, max: u32) -> Result<Vec<Frame>, Error> {
        let mut out = Vec::new();
        loop {
            match parse(buf, max)? {
                Parse::Frame(f) => out.push(f),
                Parse::Incomplete { need } => {
                    assert!(need > buf.len());
                    return Ok(out);
                }
            }
        }
    }

    #[test]
    fn headers_are_the_four_numbers_in_decimal_at_every_width() {
        for (op, client, node, payload) in [
            (0u8, 0u64, 0u32, &b""[..]),
            (255, u64::MAX, u32::MAX, &b"xyz"[..]),
            (7, 10, 99, &b"0123456789"[..]),
        ] {
            let mut out = BytesMut::new();
            encode(&mut out, op, client, node, payload);
            let header = format!("{op} {client} {node} {}\n", payload.len());
            assert_eq!(&out[..], [header.as_bytes(), payload].concat());
            let f = Frame::new(op, client, node, Bytes::copy_from_slice(payload));
            assert_eq!(f.wire_len(), out.len());
        }
    }

    #[test]
    fn parses_the_protocol_example() {
        let mut buf = BytesMut::from(&b"11 0 0 12\n5 hellothere13 0 0 5\r\nhello"[..]);
        let frames = parse_all(&mut buf, DEFAULT_MAX_PAYLOAD).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], Frame::new(11, 0, 0, &b"5 hellothere"[..]));
        assert_eq!(frames[1], Frame::new(13, 0, 0, &b"hello"[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn incomplete_is_not_an_error() {
        let mut buf = BytesMut::from(&b"13 0 0 5\nhel"[..]);
        assert_eq!(
            parse(&mut buf, 100).unwrap(),
            Parse::Incomplete { need: 14 }
        );
        assert_eq!(buf.len(), 12, "an incomplete parse leaves the buffer alone");
        let mut buf = BytesMut::from(&b"13 0"[..]);
        assert!(matches!(parse(&mut buf, 100), Ok(Parse::Incomplete { .. })));
    }

    #[test]
    fn bad_headers() {
        for h in [
            &b"x 0 0 0\n"[..],
            b"1 0 0\n",
            b"1 0 0 0 0\n",
            b"1  0 0 0\n",
            b"256 0 0 0\n",
            b"1 0 4294967296 0\n",
            b"1 18446744073709551616 0 0\n",
            b"1 0 0 -1\n",
            b"1 0 0 +1\n",
            b"\n",
            b" 1 0 0 0\n",
            b"1 0 0 0 \n",
            b"1 0 0 0\r\r\n",
        ] {
            let mut buf = BytesMut::from(h);
            let e = parse(&mut buf, 100).unwrap_err();
            assert_eq!(
                e.code,
                ErrorCode::BadFrame,
                "{:?}",
                String::from_utf8_lossy(h)
            );
        }
        let mut long = BytesMut::from(&[b'1'; 64][..]);
        assert_eq!(parse(&mut long, 100).unwrap_err().code, ErrorCode::BadFrame);
    }

    #[test]
    fn limits() {
        let mut buf = BytesMut::from(&b"255 18446744073709551615 4294967295 3\nabc"[..]);
        let f = parse_all(&mut buf, 100).unwrap();
        assert_eq!(f[0].op, 255);
        assert_eq!(f[0].client_id, u64::MAX);
        assert_eq!(f[0].node_id, u32::MAX);
        let mut buf = BytesMut::from(&b"13 0 0 101\n"[..]);
        assert_eq!(parse(&mut buf, 100).unwrap_err().code, ErrorCode::TooLarge);
    }

    #[test]
    fn encode_matches_wire_len() {
        let f = Frame::new(22, 12345, 7, &b"value"[..]);
        let mut out = BytesMut::new();
        encode(&mut out, f.op, f.client_id, f.node_id, &f.payload);
        assert_eq!(&out[..], b"22 12345 7 5\nvalue");
        assert_eq!(out.len(), f.wire_len());
        let mut out2 = BytesMut::new();
        encode_parts(&mut out2, 22, 12345, 7, &[b"va", b"", b"lue"]);
        assert_eq!(out, out2);
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        (
            any::<u8>(),
            any::<u64>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(op, c, n, p)| Frame::new(op, c, n, p))
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_in_arbitrary_splits_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..400),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut buf = BytesMut::new();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (data.len() + 1)).collect();
            cuts.push(data.len());
            cuts.sort_unstable();
            let mut at = 0;
            'outer: for c in cuts {
                buf.extend_from_slice(&data[at..c]);
                at = c;
                loop {
                    match parse(&mut buf, 200) {
                        Ok(Parse::Frame(f)) => prop_assert!(f.payload.len() <= 200),
                        Ok(Parse::Incomplete { .. }) => break,
                        Err(_) => break 'outer,
                    }
                }
            }
        }

        #[test]
        fn encode_then_parse_is_identity(
            frames in proptest::collection::vec(arb_frame(), 1..20),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
        ) {
            let mut wire = BytesMut::new();
            for f in &frames {
                encode(&mut wire, f.op, f.client_id, f.node_id, &f.payload);
            }
            let wire = wire.freeze();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
            cuts.push(wire.len());
            cuts.sort_unstable();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut at = 0;
            for c in cuts {
                buf.extend_from_slice(&wire[at..c]);
                at = c;
                got.extend(parse_all(&mut buf, 1000).unwrap());
            }
            prop_assert_eq!(got, frames);
            prop_assert!(buf.is_empty());
        }
    }
}
