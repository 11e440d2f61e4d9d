//! Payloads of the batch ops MGET and MSET (docs/protocol.md, "Batches").
//!
//! Every part is length-prefixed in ASCII decimal, so any bytes may appear in a
//! key, a value or a message:
//!
//! - MGET: keys, each `KLEN SP KEY`, to the end of the payload;
//! - MSET: pairs, each `KLEN SP KEY VLEN SP VALUE`, to the end of the payload;
//! - the reply (op 22 VALUE): one result per key, in request order, each
//!   `OP SP LEN SP PAYLOAD`: the reply the key's own request got (21 OK, 22
//!   VALUE and the value, 23 NOT_FOUND, 29 ERR and `CODE SP message`).
//!
//! A batch holds 1 to [`MAX_KEYS`] keys, each 1 to [`kv::MAX_KEY`] bytes; the
//! reply is at most [`MAX_REPLY`] bytes. Decoding checks the whole payload before
//! anything is taken from it, and never panics on any input (property tests
//! below): a bad payload is `ERR BADKEY`, too many keys `ERR LIMIT`.

use super::error::{Error, ErrorCode};
use super::frame::parse_decimal;
use super::{kv, op};
use bytes::{BufMut, Bytes, BytesMut};

/// Most keys one MGET or MSET may carry.
pub const MAX_KEYS: usize = 10_000;
/// Largest encoded reply of a batch, in bytes: an MGET whose values add up to
/// more is answered `ERR LIMIT` (the default frame limit, so every client with
/// the default `--max-frame` can read any batch reply).
pub const MAX_REPLY: usize = super::DEFAULT_MAX_PAYLOAD as usize;
/// Longest decimal length field (a u32 fits in 10 digits).
const MAX_DIGITS: usize = 10;

/// One key's result in a batch reply: the reply op its own request got and
/// that reply's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyResult {
    /// 21 OK, 22 VALUE, 23 NOT_FOUND or 29 ERR.
    pub op: u8,
    /// The value (VALUE), or `CODE SP message` (ERR); empty otherwise.
    pub payload: Bytes,
}

impl KeyResult {
    /// The value, if the key had one.
    pub fn value(&self) -> Option<&Bytes> {
        (self.op == op::VALUE).then_some(&self.payload)
    }

    /// The error, if the key's request failed.
    pub fn error(&self) -> Option<Error> {
        (self.op == op::ERR).then(|| Error::from_payload(&self.payload))
    }

    /// Bytes this result takes in an encoded reply.
    pub fn encoded_len(&self) -> usize {
        digits(self.op as usize) + 1 + digits(self.payload.len()) + 1 + self.payload.len()
    }
}

/// Digits of `n` in decimal.
fn digits(n: usize) -> usize {
    let mut d = 1;
    let mut n = n / 10;
    while n > 0 {
        d += 1;
        n /= 10;
    }
    d
}

fn put_len(out: &mut BytesMut, n: usize) {
    out.put_slice(n.to_string().as_bytes());
    out.put_u8(b' ');
}

/// An MGET payload for `keys`.
pub fn encode_keys<K: AsRef<[u8]>>(keys: &[K]) -> Bytes {
    let size: usize = keys.iter().map(|k| k.as_ref().len() + 6).sum();
    let mut out = BytesMut::with_capacity(size);
    for k in keys {
        put_len(&mut out, k.as_ref().len());
        out.put_slice(k.as_ref());
    }
    out.freeze()
}

/// An MSET payload for `pairs`.
pub fn encode_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Bytes {
    let size: usize = (pairs.iter())
        .map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 12)
        .sum();
    let mut out = BytesMut::with_capacity(size);
    for (k, v) in pairs {
        put_len(&mut out, k.as_ref().len());
        out.put_slice(k.as_ref());
        put_len(&mut out, v.as_ref().len());
        out.put_slice(v.as_ref());
    }
    out.freeze()
}

/// Appends one result to a reply payload.
pub fn put_result(out: &mut BytesMut, r: &KeyResult) {
    put_len(out, r.op as usize);
    put_len(out, r.payload.len());
    out.put_slice(&r.payload);
}

/// A reply payload for `results`.
pub fn encode_results(results: &[KeyResult]) -> Bytes {
    let mut out = BytesMut::with_capacity(results.iter().map(KeyResult::encoded_len).sum());
    for r in results {
        put_result(&mut out, r);
    }
    out.freeze()
}

/// Reads the parts of a payload, each `LEN SP BYTES`.
struct Parts<'a> {
    payload: &'a Bytes,
    at: usize,
}

impl Parts<'_> {
    fn done(&self) -> bool {
        self.at >= self.payload.len()
    }

    /// A decimal up to `max` and its space.
    fn number(&mut self, what: &str, max: u64) -> Result<u64, Error> {
        let rest = &self.payload[self.at..];
        let window = &rest[..rest.len().min(MAX_DIGITS + 1)];
        let bad = || Error::new(ErrorCode::BadKey, format!("bad {what} at byte {}", self.at));
        let sp = memchr::memchr(b' ', window).ok_or_else(bad)?;
        let n = parse_decimal(&window[..sp], max).ok_or_else(bad)?;
        self.at += sp + 1;
        Ok(n)
    }

    /// `LEN SP BYTES`, the length at most `max`.
    fn part(&mut self, what: &str, max: u64) -> Result<Bytes, Error> {
        let len = self.number(what, max)? as usize;
        let end = self
            .at
            .checked_add(len)
            .filter(|&e| e <= self.payload.len());
        let end = end.ok_or_else(|| {
            Error::new(
                ErrorCode::BadKey,
                format!(
                    "{what} of {len} bytes at byte {} runs past the payload",
                    self.at
                ),
            )
        })?;
        let part = self.payload.slice(self.at..end);
        self.at = end;
        Ok(part)
    }

    fn key(&mut self) -> Result<Bytes, Error> {
        let key = self.part("key length", kv::MAX_KEY as u64)?;
        kv::check_key(&key)?;
        Ok(key)
    }
}

/// The error for a batch of more than [`MAX_KEYS`] keys.
fn too_many() -> Error {
    Error::new(
        ErrorCode::Limit,
        format!("a batch holds at most {MAX_KEYS} keys"),
    )
}

/// The error for a batch of no keys.
fn empty() -> Error {
    Error::new(ErrorCode::BadKey, "a batch needs at least one key")
}

/// The keys of an MGET payload (views of it).
pub fn decode_keys(payload: &Bytes) -> Result<Vec<Bytes>, Error> {
    let mut parts = Parts { payload, at: 0 };
    let mut keys = Vec::new();
    while !parts.done() {
        if keys.len() == MAX_KEYS {
            return Err(too_many());
        }
        keys.push(parts.key()?);
    }
    if keys.is_empty() {
        return Err(empty());
    }
    Ok(keys)
}

/// The pairs of an MSET payload (views of it).
pub fn decode_pairs(payload: &Bytes) -> Result<Vec<(Bytes, Bytes)>, Error> {
    let mut parts = Parts { payload, at: 0 };
    let mut pairs = Vec::new();
    while !parts.done() {
        if pairs.len() == MAX_KEYS {
            return Err(too_many());
        }
        let key = parts.key()?;
        let value = parts.part("value length", u32::MAX as u64)?;
        pairs.push((key, value));
    }
    if pairs.is_empty() {
        return Err(empty());
    }
    Ok(pairs)
}

/// The results of a batch reply (views of it). A result op other than OK,
/// VALUE, NOT_FOUND or ERR is refused (`ERR BADOP`).
pub fn decode_results(payload: &Bytes) -> Result<Vec<KeyResult>, Error> {
    let mut parts = Parts { payload, at: 0 };
    let mut results = Vec::new();
    while !parts.done() {
        if results.len() == MAX_KEYS {
            return Err(too_many());
        }
        let at = parts.at;
        let o = parts.number("result op", u8::MAX as u64)? as u8;
        if !matches!(o, op::OK | op::VALUE | op::NOT_FOUND | op::ERR) {
            let why = format!("result op {o} at byte {at} is not OK, VALUE, NOT_FOUND or ERR");
            return Err(Error::new(ErrorCode::BadOp, why));
        }
        let payload = parts.part("result length", u32::MAX as u64)?;
        results.push(KeyResult { op: o, payload });
    }
    Ok(results)
}

/// The native request each key of a batch becomes, `(op, payload)`: GET with
/// the key for a read (`value` is `None`), PUT with `KLEN SP KEY VALUE` for a
/// write. The HTTP and RESP fronts split their batches with it too.
pub fn key_request(key: &Bytes, value: Option<&[u8]>) -> (u8, Bytes) {
    match value {
        None => (op::GET, key.clone()),
        Some(v) => (op::PUT, kv::encode(key, v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    #[test]
    fn keys_and_pairs_round_trip() {
        let keys = [&b"a"[..], b"with space", b"\x00\xff\n"];
        assert_eq!(&encode_keys(&keys)[..], b"1 a10 with space3 \x00\xff\n");
        let back = decode_keys(&encode_keys(&keys)).unwrap();
        assert_eq!(back, keys.iter().map(|k| b(k)).collect::<Vec<_>>());
        let pairs = [(&b"k"[..], &b""[..]), (b"k2", b"v 2")];
        assert_eq!(&encode_pairs(&pairs)[..], b"1 k0 2 k23 v 2");
        let back = decode_pairs(&encode_pairs(&pairs)).unwrap();
        assert_eq!(back[1], (b(b"k2"), b(b"v 2")));
        assert_eq!(back[0], (b(b"k"), b(b"")));
    }

    #[test]
    fn results_round_trip() {
        let rs = vec![
            KeyResult {
                op: op::VALUE,
                payload: b(b"v 1"),
            },
            KeyResult {
                op: op::NOT_FOUND,
                payload: Bytes::new(),
            },
            KeyResult {
                op: op::OK,
                payload: Bytes::new(),
            },
            KeyResult {
                op: op::ERR,
                payload: b(b"UNAVAILABLE node 2 is down"),
            },
        ];
        let enc = encode_results(&rs);
        assert_eq!(&enc[..27], b"22 3 v 123 0 21 0 29 26 UNA");
        assert_eq!(
            enc.len(),
            rs.iter().map(KeyResult::encoded_len).sum::<usize>()
        );
        assert_eq!(decode_results(&enc).unwrap(), rs);
        assert_eq!(rs[0].value(), Some(&b(b"v 1")));
        assert_eq!(rs[3].error().unwrap().code, ErrorCode::Unavailable);
        assert!(decode_results(&Bytes::new()).unwrap().is_empty());
    }

    #[test]
    fn bad_payloads_are_refused() {
        for bad in [
            &b""[..],
            b"0 ",
            b"1",
            b"1 ",
            b"2 a",
            b"x a",
            b"1 a2",
            b"65536 a",
            b"00000000001 a",
            b"-1 a",
            b"1 a99999999999 ",
        ] {
            let e = decode_keys(&b(bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadKey, "{bad:?}");
        }
        for bad in [&b"1 a"[..], b"1 a1 ", b"1 a2 v", b"1 a 1 v", b"0 1 v"] {
            let e = decode_pairs(&b(bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadKey, "{bad:?}");
        }
        assert_eq!(
            decode_results(&b(b"24 0 ")).unwrap_err().code,
            ErrorCode::BadOp
        );
        assert_eq!(
            decode_results(&b(b"256 0 ")).unwrap_err().code,
            ErrorCode::BadKey
        );
        assert_eq!(
            decode_results(&b(b"22 5 abc")).unwrap_err().code,
            ErrorCode::BadKey
        );
    }

    #[test]
    fn batches_are_bounded() {
        let keys: Vec<&[u8]> = vec![b"k"; MAX_KEYS];
        assert_eq!(decode_keys(&encode_keys(&keys)).unwrap().len(), MAX_KEYS);
        let keys: Vec<&[u8]> = vec![b"k"; MAX_KEYS + 1];
        let e = decode_keys(&encode_keys(&keys)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Limit);
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"k", b"v"); MAX_KEYS + 1];
        let e = decode_pairs(&encode_pairs(&pairs)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Limit);
    }

    #[test]
    fn key_requests_are_the_single_key_ops() {
        assert_eq!(key_request(&b(b"k"), None), (op::GET, b(b"k")));
        assert_eq!(key_request(&b(b"k"), Some(b"v")), (op::PUT, b(b"1 kv")));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let p = Bytes::from(data);
            let _ = decode_keys(&p);
            let _ = decode_pairs(&p);
            let _ = decode_results(&p);
        }

        #[test]
        fn digit_heavy_bytes_decode_without_panic(
            data in proptest::collection::vec(prop_oneof![Just(b' '), b'0'..=b'9', any::<u8>()], 0..48)
        ) {
            let p = Bytes::from(data);
            let _ = decode_keys(&p);
            let _ = decode_pairs(&p);
            let _ = decode_results(&p);
        }

        #[test]
        fn pairs_survive_encode_and_decode(
            pairs in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 1..20), proptest::collection::vec(any::<u8>(), 0..20)),
                1..20,
            )
        ) {
            let back = decode_pairs(&encode_pairs(&pairs)).unwrap();
            prop_assert_eq!(back.len(), pairs.len());
            for ((k, v), (bk, bv)) in pairs.iter().zip(&back) {
                prop_assert_eq!(&k[..], &bk[..]);
                prop_assert_eq!(&v[..], &bv[..]);
            }
        }
    }
}
