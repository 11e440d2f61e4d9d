//! How the shell shows a stored value: quoted, with every byte that is not
//! printable ASCII escaped, the way `redis-cli` shows bulk strings.
//!
//! - The value goes between double quotes; an empty value is `""`.
//! - `"` and `\` become `\"` and `\\`; LF, CR and TAB become `\n`, `\r` and `\t`;
//!   every other byte outside `0x20..=0x7e` (control bytes, DEL, anything with the
//!   high bit set, so UTF-8 text too) becomes `\xHH`, two lowercase hex digits.
//! - A miss is [`NIL`], `(nil)` without quotes, which no quoted value can look like.
//!
//! So the output is plain printable ASCII: no byte of a value reaches the terminal
//! raw (no escape sequence can move the cursor or recolour the screen), the length
//! of what is printed follows from the value alone, and the escapes are the ones the
//! shell reads back in double quotes (see [`super::words`]), so a shown value can be
//! pasted into a command to store it again.

/// What the shell shows for a key that does not exist.
pub const NIL: &str = "(nil)";

/// Appends the escaped form of one byte (without quotes) to `out`.
fn push_escaped(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.push_str("\\\""),
        b'\\' => out.push_str("\\\\"),
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        b'\t' => out.push_str("\\t"),
        0x20..=0x7e => out.push(b as char),
        _ => {
            out.push_str("\\x");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
}

/// How `gtstore scan` prints a key on its line: as it is when every byte is
/// printable ASCII (space included) and it does not start with `"`, else
/// quoted as [`quote`] does. A line that starts with `"` is therefore always
/// the quoted form, and no key can span lines or reach the terminal raw.
pub fn key_line(key: &[u8]) -> String {
    let plain = key.first() != Some(&b'"') && key.iter().all(|b| (0x20..=0x7e).contains(b));
    if plain {
        String::from_utf8_lossy(key).into_owned()
    } else {
        quote(key)
    }
}

/// The number of bytes [`quote`] produces for `value`, quotes included.
pub fn quoted_len(value: &[u8]) -> usize {
    2 + value
        .iter()
        .map(|&b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' => 2,
            0x20..=0x7e => 1,
            _ => 4,
        })
        .sum::<usize>()
}

/// `value` in double quotes with its non-printable bytes escaped.
pub fn quote(value: &[u8]) -> String {
    let mut out = String::with_capacity(quoted_len(value));
    out.push('"');
    for &b in value {
        push_escaped(&mut out, b);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::words::split_words;

    #[test]
    fn printable_ascii_is_kept() {
        assert_eq!(quote(b"hello world"), "\"hello world\"");
        assert_eq!(quote(b"~!@#$%^&*()"), "\"~!@#$%^&*()\"");
    }

    #[test]
    fn empty_and_quote_characters_differ() {
        assert_eq!(quote(b""), "\"\"");
        assert_eq!(quote(b"\"\""), r#""\"\"""#);
        assert_eq!(quote(b"\\"), r#""\\""#);
        assert_ne!(quote(b"(nil)"), NIL);
    }

    #[test]
    fn control_and_high_bytes_are_escaped() {
        assert_eq!(quote(b"a\nb\r\tc"), r#""a\nb\r\tc""#);
        assert_eq!(quote(b"\x1b[2J\x00\x7f"), r#""\x1b[2J\x00\x7f""#);
        assert_eq!(quote("é".as_bytes()), r#""\xc3\xa9""#);
        assert_eq!(quote(&[0xff, 0x80]), r#""\xff\x80""#);
    }

    #[test]
    fn output_is_printable_ascii_of_the_predicted_length() {
        let all: Vec<u8> = (0..=255u8).collect();
        let q = quote(&all);
        assert!(q.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        assert_eq!(q.len(), quoted_len(&all));
        // 10 MB of mixed bytes prints as exactly its escaped form, no more.
        let big: Vec<u8> = (0..10_000_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(quote(&big).len(), quoted_len(&big));
    }

    #[test]
    fn the_shell_reads_a_shown_value_back() {
        let all: Vec<u8> = (0..=255u8).collect();
        let line = [b"put k ".as_slice(), quote(&all).as_bytes()].concat();
        let words = split_words(&line).unwrap();
        assert_eq!(words[2], all);
    }

    #[test]
    fn scan_lines_are_plain_unless_they_must_be_quoted() {
        assert_eq!(key_line(b"user:1 x\\y"), "user:1 x\\y");
        assert_eq!(key_line(b"a\nb"), "\"a\\nb\"");
        assert_eq!(key_line(b"\"q"), "\"\\\"q\"");
        assert_eq!(key_line("é".as_bytes()), "\"\\xc3\\xa9\"");
    }
}
