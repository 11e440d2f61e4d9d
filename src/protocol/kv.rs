//! Key-value payloads.
//!
//! `KV` is `KLEN SP KEY VALUE`: the key's length in ASCII decimal, one space, the
//! key's bytes, then the value to the end of the payload. Ops that take only a key
//! carry the key as the whole payload. INCR takes `KLEN SP KEY [DELTA]`, where
//! DELTA is an optional signed decimal i64 (one space before it is allowed).
//! Slicing a `Bytes` is zero-copy: keys and values stay views of the frame.

use super::error::{Error, ErrorCode};
use super::frame::parse_decimal;
use bytes::{BufMut, Bytes, BytesMut};

/// Longest key in bytes.
pub const MAX_KEY: usize = 65_535;

/// Checks a key's length.
pub fn check_key(key: &[u8]) -> Result<(), Error> {
    if key.is_empty() {
        Err(Error::new(ErrorCode::BadKey, "empty key"))
    } else if key.len() > MAX_KEY {
        Err(Error::new(
            ErrorCode::BadKey,
            format!("key of {} bytes exceeds 65535", key.len()),
        ))
    } else {
        Ok(())
    }
}

/// A `KV` payload: `KLEN SP KEY VALUE`.
pub fn encode(key: &[u8], value: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(key.len() + value.len() + 6);
    b.put_slice(key.len().to_string().as_bytes());
    b.put_u8(b' ');
    b.put_slice(key);
    b.put_slice(value);
    b.freeze()
}

/// A key-only payload: the whole payload is the key.
pub fn key(payload: &Bytes) -> Result<Bytes, Error> {
    check_key(payload)?;
    Ok(payload.clone())
}

/// Splits a `KLEN SP KEY REST` payload into key and rest.
pub fn split_kv(payload: &Bytes) -> Result<(Bytes, Bytes), Error> {
    let sp = memchr::memchr(b' ', &payload[..payload.len().min(6)])
        .ok_or_else(|| Error::new(ErrorCode::BadKey, "payload must start with KLEN SP"))?;
    let klen = parse_decimal(&payload[..sp], MAX_KEY as u64)
        .ok_or_else(|| Error::new(ErrorCode::BadKey, "KLEN must be a decimal 1..=65535"))?
        as usize;
    if klen == 0 {
        return Err(Error::new(ErrorCode::BadKey, "empty key"));
    }
    let start = sp + 1;
    if payload.len() < start + klen {
        return Err(Error::new(
            ErrorCode::BadKey,
            "payload shorter than KLEN says",
        ));
    }
    Ok((
        payload.slice(start..start + klen),
        payload.slice(start + klen..),
    ))
}

/// Parses an INCR payload into key and delta (default 1).
pub fn split_incr(payload: &Bytes) -> Result<(Bytes, i64), Error> {
    let (key, rest) = split_kv(payload)?;
    let rest = rest.strip_prefix(b" ").unwrap_or(&rest);
    if rest.is_empty() {
        return Ok((key, 1));
    }
    let delta = parse_i64(rest)
        .ok_or_else(|| Error::new(ErrorCode::NotInt, "DELTA must be a signed decimal i64"))?;
    Ok((key, delta))
}

/// Strict signed decimal: optional `-` or `+`, then 1 to 19 digits, in i64 range.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let mag = parse_decimal(digits, i64::MAX as u64 + 1)?;
    if neg {
        Some((mag as i128).wrapping_neg() as i64)
    } else {
        i64::try_from(mag).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    #[test]
    fn kv_split() {
        let (k, v) = split_kv(&b(b"5 hellothere")).unwrap();
        assert_eq!((&k[..], &v[..]), (&b"hello"[..], &b"there"[..]));
        let (k, v) = split_kv(&b(b"3 a b")).unwrap();
        assert_eq!((&k[..], &v[..]), (&b"a b"[..], &b""[..]));
        for bad in [
            &b""[..],
            b"5",
            b"0 x",
            b"x hello",
            b"9 short",
            b"65536 x",
            b" 1 x",
        ] {
            assert_eq!(split_kv(&b(bad)).unwrap_err().code, ErrorCode::BadKey);
        }
    }

    #[test]
    fn incr_payloads() {
        assert_eq!(split_incr(&b(b"1 c")).unwrap().1, 1);
        assert_eq!(split_incr(&b(b"1 c-5")).unwrap().1, -5);
        assert_eq!(split_incr(&b(b"1 c 42")).unwrap().1, 42);
        assert_eq!(
            split_incr(&b(b"1 c-9223372036854775808")).unwrap().1,
            i64::MIN
        );
        for bad in [
            &b"1 cx"[..],
            b"1 c 9223372036854775808",
            b"1 c--1",
            b"1 c -",
        ] {
            assert_eq!(split_incr(&b(bad)).unwrap_err().code, ErrorCode::NotInt);
        }
    }

    #[test]
    fn keys() {
        assert!(key(&b(b"")).is_err());
        assert!(key(&Bytes::from(vec![1u8; MAX_KEY])).is_ok());
        assert!(key(&Bytes::from(vec![1u8; MAX_KEY + 1])).is_err());
    }
}
