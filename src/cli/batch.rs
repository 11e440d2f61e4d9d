//! `mget` and `mset`: many keys in one request (the native MGET and MSET), a
//! result per key.
//!
//! Both print one line per key, in the order given: the key quoted (as the
//! shell shows values, see [`super::display`]), a space, and its result: the
//! value quoted, `(nil)` for a missing key, `OK` for a write, or `(error) CODE
//! message` for a key whose request failed. Every line starts with `"`, so a
//! key or value can never be mistaken for a result. The one-shot exit status is
//! the worst of the keys': 2 if any key failed (3 if every failure was `ERR
//! UNKNOWN`, a write that may have been applied), else 1 if any key was
//! missing, else 0.

use super::display::{quote, NIL};
use super::{EXIT_ERROR, EXIT_MISSING, EXIT_OK, EXIT_UNKNOWN};
use crate::client::{Client, ClientError};
use crate::protocol::{Error, ErrorCode};
use bytes::Bytes;

/// One key's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The key's value (mget).
    Value(Bytes),
    /// The key does not exist (mget).
    Missing,
    /// The write was acknowledged (mset).
    Stored,
    /// The key's request failed.
    Failed(Error),
}

/// Reads `keys` with one MGET.
pub fn mget(c: &mut Client, keys: &[Vec<u8>]) -> Result<Vec<Outcome>, ClientError> {
    let each = |r: Result<Option<Bytes>, Error>| match r {
        Ok(Some(v)) => Outcome::Value(v),
        Ok(None) => Outcome::Missing,
        Err(e) => Outcome::Failed(e),
    };
    Ok(c.mget(keys)?.into_iter().map(each).collect())
}

/// Writes `pairs` with one MSET.
pub fn mset(c: &mut Client, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<Outcome>, ClientError> {
    let each = |r: Result<(), Error>| r.map_or_else(Outcome::Failed, |()| Outcome::Stored);
    Ok(c.mset(pairs)?.into_iter().map(each).collect())
}

/// The lines for `keys` and their outcomes (see the module docs).
pub fn render(keys: &[Bytes], outcomes: &[Outcome]) -> String {
    let mut text = String::new();
    for (k, o) in keys.iter().zip(outcomes) {
        text.push_str(&quote(k));
        text.push(' ');
        match o {
            Outcome::Value(v) => text.push_str(&quote(v)),
            Outcome::Missing => text.push_str(NIL),
            Outcome::Stored => text.push_str("OK"),
            Outcome::Failed(e) => text.push_str(&format!("(error) {e}")),
        }
        text.push('\n');
    }
    text
}

/// The exit status of a batch (see the module docs).
pub fn exit_code(outcomes: &[Outcome]) -> u8 {
    let failed = outcomes.iter().filter_map(|o| match o {
        Outcome::Failed(e) => Some(e.code),
        _ => None,
    });
    let mut worst = EXIT_OK;
    for code in failed {
        if code != ErrorCode::Unknown {
            return EXIT_ERROR;
        }
        worst = EXIT_UNKNOWN;
    }
    if worst == EXIT_OK && outcomes.contains(&Outcome::Missing) {
        return EXIT_MISSING;
    }
    worst
}

/// Pairs from a flat list of words `K V [K V ...]`; `None` if it is empty or
/// odd.
pub fn pairs(words: &[Vec<u8>]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if words.is_empty() || !words.len().is_multiple_of(2) {
        return None;
    }
    Some(
        words
            .chunks(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_every_key_s_result() {
        let keys = [
            Bytes::from_static(b"a"),
            Bytes::from_static(b"b c"),
            Bytes::from_static(b"\n"),
        ];
        let outcomes = [
            Outcome::Value(Bytes::from_static(b"v\xff")),
            Outcome::Missing,
            Outcome::Failed(Error::new(ErrorCode::Unavailable, "node 2 is down")),
        ];
        assert_eq!(
            render(&keys, &outcomes),
            "\"a\" \"v\\xff\"\n\"b c\" (nil)\n\"\\n\" (error) UNAVAILABLE node 2 is down\n"
        );
        assert_eq!(exit_code(&outcomes), EXIT_ERROR);
        assert_eq!(exit_code(&outcomes[..2]), EXIT_MISSING);
        assert_eq!(exit_code(&[Outcome::Stored]), EXIT_OK);
        let unknown = Outcome::Failed(Error::new(ErrorCode::Unknown, "maybe"));
        assert_eq!(
            exit_code(&[Outcome::Stored, unknown, Outcome::Missing]),
            EXIT_UNKNOWN
        );
    }

    #[test]
    fn pairs_need_an_even_number_of_words() {
        let w = |s: &[&str]| s.iter().map(|x| x.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(
            pairs(&w(&["k", "v"])),
            Some(vec![(b"k".to_vec(), b"v".to_vec())])
        );
        assert_eq!(pairs(&w(&["k"])), None);
        assert_eq!(pairs(&w(&[])), None);
    }
}
