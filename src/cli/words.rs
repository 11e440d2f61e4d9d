//! Splitting a shell line into words, on bytes (keys and values need not be UTF-8).
//!
//! The rules, a small subset of a POSIX shell's:
//!
//! - Spaces and tabs separate words.
//! - `"..."` groups bytes, spaces included. Inside, `\"` and `\\` stand for `"` and
//!   `\`, `\n`, `\t`, `\r` and `\0` for those control bytes and `\xHH` for any byte;
//!   any other backslash is kept as it is.
//! - `'...'` groups bytes literally, with no escapes at all.
//! - Outside quotes, a backslash makes the next byte ordinary (`\ ` is a space
//!   inside a word).
//! - Quoted and unquoted parts next to each other make one word (`a"b c"` is
//!   `ab c`), and `""` is an empty word (an empty value).

/// Splits `line` into words; an unterminated quote or a bad `\x` escape is an error.
pub fn split_words(line: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut words = Vec::new();
    let mut word: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        i += 1;
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            b'\\' => {
                let w = word.get_or_insert_with(Vec::new);
                match line.get(i) {
                    Some(&next) => {
                        w.push(next);
                        i += 1;
                    }
                    None => w.push(b'\\'),
                }
            }
            b'\'' => {
                let w = word.get_or_insert_with(Vec::new);
                let end = line[i..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .ok_or_else(|| "unterminated single quote".to_string())?;
                w.extend_from_slice(&line[i..i + end]);
                i += end + 1;
            }
            b'"' => {
                let w = word.get_or_insert_with(Vec::new);
                i = double_quoted(line, i, w)?;
            }
            _ => word.get_or_insert_with(Vec::new).push(b),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    Ok(words)
}

/// Reads a double-quoted part starting right after the opening quote at `line[i-1]`
/// into `w`; returns the index just past the closing quote.
fn double_quoted(line: &[u8], mut i: usize, w: &mut Vec<u8>) -> Result<usize, String> {
    loop {
        let Some(&b) = line.get(i) else {
            return Err("unterminated double quote".into());
        };
        i += 1;
        match b {
            b'"' => return Ok(i),
            b'\\' => {
                let Some(&e) = line.get(i) else {
                    return Err("unterminated double quote".into());
                };
                i += 1;
                match e {
                    b'"' | b'\\' => w.push(e),
                    b'n' => w.push(b'\n'),
                    b't' => w.push(b'\t'),
                    b'r' => w.push(b'\r'),
                    b'0' => w.push(0),
                    b'x' => {
                        let hex = line
                            .get(i..i + 2)
                            .and_then(|h| std::str::from_utf8(h).ok())
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                            .ok_or_else(|| "\\x needs two hex digits".to_string())?;
                        w.push(hex);
                        i += 2;
                    }
                    other => w.extend_from_slice(&[b'\\', other]),
                }
            }
            other => w.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<String> {
        split_words(s.as_bytes())
            .unwrap()
            .into_iter()
            .map(|w| String::from_utf8(w).unwrap())
            .collect()
    }

    #[test]
    fn plain_words() {
        assert_eq!(split("put  a\t1 "), ["put", "a", "1"]);
        assert!(split("   ").is_empty());
        assert!(split("").is_empty());
    }

    #[test]
    fn double_quotes() {
        assert_eq!(
            split(r#"put "my key" "a value""#),
            ["put", "my key", "a value"]
        );
        assert_eq!(split(r#"put k """#), ["put", "k", ""]);
        assert_eq!(split(r#"a"b c"d"#), ["ab cd"]);
        assert_eq!(split(r#""say \"hi\" \\ now""#), [r#"say "hi" \ now"#]);
        assert_eq!(split(r#""a\nb\tc""#), ["a\nb\tc"]);
        assert_eq!(split(r#""\q""#), [r"\q"]);
    }

    #[test]
    fn hex_escapes_give_any_byte() {
        let w = split_words(br#"put "\x00\xff\x41""#).unwrap();
        assert_eq!(w[1], [0x00, 0xff, 0x41]);
        assert!(split_words(br#""\xZZ""#).is_err());
        assert!(split_words(br#""\x4""#).is_err());
    }

    #[test]
    fn single_quotes_and_backslashes() {
        assert_eq!(split(r#"'a "b" \n'"#), [r#"a "b" \n"#]);
        assert_eq!(split(r"a\ b c"), ["a b", "c"]);
        assert_eq!(split(r"end\"), [r"end\"]);
        assert_eq!(split(r#"\"quoted\""#), [r#""quoted""#]);
    }

    #[test]
    fn unterminated_quotes() {
        assert!(split_words(br#"put "open"#).is_err());
        assert!(split_words(br#"put "open\"#).is_err());
        assert!(split_words(b"put 'open").is_err());
    }

    #[test]
    fn non_utf8_passes_through() {
        let w = split_words(b"get \xfe\xff").unwrap();
        assert_eq!(w, [b"get".to_vec(), vec![0xfe, 0xff]]);
    }
}
