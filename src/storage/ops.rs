//! What each key-value op means: [`decide`] takes a request and the key's current
//! value and returns the reply and the write to make, if any. It is pure, so the
//! node can decide against its own copy (a key it serves alone) or against the
//! newest copy a quorum read found (see [`super::quorum`]); the caller gives the
//! write a version (see [`super::hlc`]) and applies it.

use crate::protocol::{int, kv, op, Error, ErrorCode, Frame};
use bytes::Bytes;

/// What a key-value request does, decided against the key's current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The reply op (`OK`, `VALUE`, `NOT_FOUND`, `CONFLICT`, `PONG`).
    pub reply: u8,
    /// The reply payload.
    pub payload: Bytes,
    /// The write to make, if any: `Some(None)` deletes.
    pub write: Option<Option<Bytes>>,
}

/// Decides a key-value request (`PUT`, `GET`, `DELETE`, `EXISTS`, `CREATE`,
/// `UPDATE`, `INCR`) against `current`, the newest live value of its key. Pure: the
/// caller applies the write with a new version. Errors are the protocol's (`BADKEY`,
/// `NOTINT`); an op that is not a key-value request is `BADOP`. INCR counts only a
/// value in canonical decimal form (see [`int`]), and an overflow is `NOTINT` with
/// the message [`int::OVERFLOW`].
pub fn decide(f: &Frame, current: Option<&Bytes>) -> Result<Decision, Error> {
    let done = |reply: u8, payload: Bytes, write: Option<Option<Bytes>>| {
        Ok(Decision {
            reply,
            payload,
            write,
        })
    };
    let found = |yes: bool| if yes { op::OK } else { op::NOT_FOUND };
    match f.op {
        op::GET => match current {
            Some(v) => done(op::VALUE, v.clone(), None),
            None => done(op::NOT_FOUND, Bytes::new(), None),
        },
        op::EXISTS => done(found(current.is_some()), Bytes::new(), None),
        op::PUT => {
            let (_, v) = kv::split_kv(&f.payload)?;
            done(op::OK, Bytes::new(), Some(Some(v)))
        }
        op::DELETE => match current {
            Some(_) => done(op::OK, Bytes::new(), Some(None)),
            None => done(op::NOT_FOUND, Bytes::new(), None),
        },
        op::CREATE => {
            let (_, v) = kv::split_kv(&f.payload)?;
            match current {
                Some(_) => done(op::CONFLICT, Bytes::new(), None),
                None => done(op::OK, Bytes::new(), Some(Some(v))),
            }
        }
        op::UPDATE => {
            let (_, v) = kv::split_kv(&f.payload)?;
            match current {
                Some(_) => done(op::OK, Bytes::new(), Some(Some(v))),
                None => done(op::NOT_FOUND, Bytes::new(), None),
            }
        }
        op::INCR => {
            let (_, delta) = kv::split_incr(&f.payload)?;
            let count = match current {
                None => 0,
                Some(v) => int::parse_canonical(v)
                    .ok_or_else(|| Error::new(ErrorCode::NotInt, int::NOT_AN_INTEGER))?,
            };
            let next = count
                .checked_add(delta)
                .ok_or_else(|| Error::new(ErrorCode::NotInt, int::OVERFLOW))?;
            let text = Bytes::from(next.to_string());
            done(op::VALUE, text.clone(), Some(Some(text)))
        }
        other => Err(Error::bad_op(other, false, "a storage node")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(op: u8, payload: &[u8]) -> Frame {
        Frame::new(op, 1, 0, Bytes::copy_from_slice(payload))
    }

    #[test]
    fn decisions() {
        let v = Bytes::from_static(b"v");
        let d = |o, p: &[u8], cur: Option<&Bytes>| decide(&frame(o, p), cur).unwrap();
        assert_eq!(d(op::GET, b"k", Some(&v)).payload, v);
        assert_eq!(d(op::GET, b"k", None).reply, op::NOT_FOUND);
        assert_eq!(d(op::EXISTS, b"k", Some(&v)).reply, op::OK);
        let put = d(op::PUT, b"1 kx", None);
        assert_eq!(
            (put.reply, put.write),
            (op::OK, Some(Some(Bytes::from("x"))))
        );
        assert_eq!(d(op::DELETE, b"k", Some(&v)).write, Some(None));
        assert_eq!(d(op::DELETE, b"k", None).reply, op::NOT_FOUND);
        assert_eq!(d(op::CREATE, b"1 kx", Some(&v)).reply, op::CONFLICT);
        assert_eq!(d(op::CREATE, b"1 kx", Some(&v)).write, None);
        assert_eq!(d(op::UPDATE, b"1 kx", None).reply, op::NOT_FOUND);
        assert_eq!(
            d(op::UPDATE, b"1 k", Some(&v)).write,
            Some(Some(Bytes::new()))
        );
        let n = Bytes::from_static(b"-4");
        let inc = d(op::INCR, b"1 k 5", Some(&n));
        assert_eq!((inc.reply, &inc.payload[..]), (op::VALUE, &b"1"[..]));
        assert_eq!(d(op::INCR, b"1 k", None).payload, Bytes::from("1"));
        let err = |p: &[u8], cur: &[u8]| {
            let e = decide(&frame(op::INCR, p), Some(&Bytes::copy_from_slice(cur))).unwrap_err();
            (e.code, e.message.into_owned())
        };
        for bad in [
            &b"abc"[..],
            b" 1",
            b"1 ",
            b"+5",
            b"007",
            b"-0",
            b"",
            b"00000000000000000001",
        ] {
            assert_eq!(
                err(b"1 k", bad),
                (ErrorCode::NotInt, int::NOT_AN_INTEGER.into())
            );
        }
        let overflow = (ErrorCode::NotInt, int::OVERFLOW.to_string());
        assert_eq!(err(b"1 k 1", i64::MAX.to_string().as_bytes()), overflow);
        assert_eq!(err(b"1 k -1", i64::MIN.to_string().as_bytes()), overflow);
        assert_eq!(err(b"1 k 9223372036854775807", b"1"), overflow);
        // The delta keeps the wire contract's form; the stored value is canonical.
        assert_eq!(d(op::INCR, b"1 k +5", Some(&n)).payload, Bytes::from("1"));
        assert_eq!(
            d(op::INCR, b"1 k -1", Some(&Bytes::from("0"))).payload,
            Bytes::from("-1")
        );
        assert_eq!(
            decide(&frame(op::PUT, b"9 k"), None).unwrap_err().code,
            ErrorCode::BadKey
        );
    }
}
