//! When a stored value counts as an integer, and what an increment says when it
//! cannot be made: one rule for both fronts, since a value written through one is
//! read as a counter through the other.
//!
//! A value is an integer only in canonical decimal form, the form Redis accepts
//! (and the form INCR itself writes): `0`, or an optional `-` followed by a
//! digit 1-9 and more digits, within i64. So `+5`, `007`, `-0`, ` 5`, `5 ` and the
//! empty value are not integers, and `SET k +5` then `INCR k` is refused by the
//! native protocol and the RESP front alike, as Redis refuses it.
//!
//! The native INCR's own DELTA field keeps the wider form the wire contract
//! states (an optional `+` or `-`, then digits; see `kv::split_incr`); the RESP
//! front checks its `INCRBY`/`DECRBY` argument with [`parse_canonical`] before it
//! sends a request, as Redis does.

/// The message of a `NOTINT` error for a stored value that is not an integer.
pub const NOT_AN_INTEGER: &str = "value is not an integer";
/// The message of a `NOTINT` error for an increment whose result would leave the
/// i64 range; the RESP front recognises it by this text.
pub const OVERFLOW: &str = "increment or decrement would overflow";

/// `s` as an i64 if it is in canonical decimal form, else `None`.
pub fn parse_canonical(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s {
        [b'0'] => return Some(0),
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    // No leading zero (and so no "-0"), no sign other than a leading '-'.
    if !matches!(digits.first(), Some(b'1'..=b'9')) || digits.len() > 19 {
        return None;
    }
    let mut mag: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        mag = mag.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    if neg {
        // -(2^63) is the one magnitude that only fits negated.
        0i64.checked_sub_unsigned(mag)
    } else {
        i64::try_from(mag).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_decimals_are_integers() {
        for (text, want) in [
            ("0", Some(0)),
            ("5", Some(5)),
            ("-5", Some(-5)),
            ("10", Some(10)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("99999999999999999999", None),
            ("+5", None),
            ("007", None),
            ("00", None),
            ("-0", None),
            ("-", None),
            ("", None),
            ("00000000000000000001", None),
            (" 5", None),
            ("5 ", None),
            ("5\n", None),
            ("1.5", None),
            ("0x10", None),
            ("1e3", None),
        ] {
            assert_eq!(parse_canonical(text.as_bytes()), want, "{text:?}");
        }
    }

    #[test]
    fn every_i64_round_trips_through_its_text() {
        for n in [
            i64::MIN,
            i64::MIN + 1,
            -100,
            -1,
            0,
            1,
            42,
            i64::MAX - 1,
            i64::MAX,
        ] {
            assert_eq!(parse_canonical(n.to_string().as_bytes()), Some(n));
        }
    }
}
