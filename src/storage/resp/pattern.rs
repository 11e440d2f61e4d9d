//! Redis glob patterns, as `SCAN ... MATCH` and `KEYS` take them: `*` (any
//! run of bytes), `?` (one byte), `[abc]`, `[a-z]`, `[^a]` (a class, `^`
//! negating it; a reversed range such as `[z-a]` counts as `[a-z]`), and `\x`
//! (the byte `x` itself, also inside a class). Matching is byte-wise and case
//! sensitive. A `[` with no closing `]` takes the rest of the pattern as its
//! class, as Redis does.
//!
//! A pattern is compiled once into tokens that each match exactly one byte,
//! except `*`; matching walks the text once, going back only to the last `*`
//! seen, so it takes at most `pattern × text` steps whatever the pattern.

/// One token of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Any run of bytes, maybe empty.
    Star,
    /// Any one byte.
    Any,
    /// This byte.
    Byte(u8),
    /// One byte in (or, negated, not in) one of the inclusive ranges.
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

impl Token {
    fn matches(&self, b: u8) -> bool {
        match self {
            Token::Star | Token::Any => true,
            Token::Byte(c) => *c == b,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= b && b <= hi) != *negated
            }
        }
    }
}

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    /// Compiles `pattern`; every byte string is a pattern.
    pub fn new(pattern: &[u8]) -> Pattern {
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < pattern.len() {
            let t = match pattern[i] {
                b'*' => {
                    if tokens.last() == Some(&Token::Star) {
                        i += 1;
                        continue;
                    }
                    Token::Star
                }
                b'?' => Token::Any,
                b'\\' if i + 1 < pattern.len() => {
                    i += 1;
                    Token::Byte(pattern[i])
                }
                b'[' => {
                    let (t, end) = class(pattern, i + 1);
                    i = end;
                    t
                }
                c => Token::Byte(c),
            };
            tokens.push(t);
            i += 1;
        }
        Pattern { tokens }
    }

    /// Whether the pattern matches all of `text`.
    pub fn matches(&self, text: &[u8]) -> bool {
        let (mut p, mut t) = (0, 0);
        // The token after the last `*` and the text position it was tried at.
        let mut back: Option<(usize, usize)> = None;
        while t < text.len() {
            match self.tokens.get(p) {
                Some(Token::Star) => {
                    back = Some((p + 1, t));
                    p += 1;
                }
                Some(tok) if tok.matches(text[t]) => {
                    p += 1;
                    t += 1;
                }
                _ => match back {
                    Some((bp, bt)) => {
                        back = Some((bp, bt + 1));
                        p = bp;
                        t = bt + 1;
                    }
                    None => return false,
                },
            }
        }
        self.tokens[p..].iter().all(|tok| *tok == Token::Star)
    }
}

/// The class starting after the `[` at `start - 1`: the token and the index
/// of its closing `]` (the pattern's last byte when there is none).
fn class(pattern: &[u8], start: usize) -> (Token, usize) {
    let mut i = start;
    let negated = pattern.get(i) == Some(&b'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    while i < pattern.len() && pattern[i] != b']' {
        let mut c = pattern[i];
        if c == b'\\' && i + 1 < pattern.len() {
            i += 1;
            c = pattern[i];
        } else if pattern.get(i + 1) == Some(&b'-') && i + 2 < pattern.len() {
            let d = pattern[i + 2];
            ranges.push((c.min(d), c.max(d)));
            i += 3;
            continue;
        }
        ranges.push((c, c));
        i += 1;
    }
    (Token::Class { negated, ranges }, i.min(pattern.len() - 1))
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    fn m(p: &str, t: &str) -> bool {
        Pattern::new(p.as_bytes()).matches(t.as_bytes())
    }

    #[test]
    fn stars_and_marks() {
        assert!(m("*", "") && m("*", "abc") && m("**", "x"));
        assert!(m("h?llo", "hello") && !m("h?llo", "hllo"));
        assert!(m("h*llo", "hllo") && m("h*llo", "heeeello"));
        assert!(m("*a*b*", "xxaxxbxx") && !m("*a*b*", "xxbxxaxx"));
        assert!(m("user:*", "user:1") && !m("user:*", "users:1"));
        assert!(!m("abc", "abcd") && !m("abc", "ab") && m("", ""));
        assert!(!m("Abc", "abc"), "case sensitive");
        let long = "a".repeat(200);
        assert!(!m(&"*a".repeat(30), &format!("{long}b")));
    }

    #[test]
    fn classes_and_escapes() {
        assert!(m("h[ae]llo", "hallo") && m("h[ae]llo", "hello"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo") && !m("h[a-b]llo", "hcllo"));
        assert!(m("[z-a]", "m"), "a reversed range");
        assert!(m("a\\*b", "a*b") && !m("a\\*b", "axb"));
        assert!(m("[\\]]", "]") && m("\\[x", "[x"));
        assert!(m("x[ab", "xa") && m("x[ab", "xb") && !m("x[ab", "x"));
        assert!(m("a\\", "a\\"), "a trailing backslash is itself");
        assert!(m("[-a]", "-"));
    }
}
