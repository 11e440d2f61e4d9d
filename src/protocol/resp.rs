//! RESP2, the Redis protocol, as far as a storage node's RESP front needs it:
//! a parser for client commands and encoders for replies. No I/O.
//!
//! A client command is either an array of bulk strings
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what every Redis client library sends) or an
//! inline command, one line of words separated by spaces or tabs (`GET k\r\n`,
//! what a person types into netcat or telnet).
//!
//! Parsing is two-phase, like the native frame parser: [`Parser::parse`] first checks
//! that a whole command is buffered (`Ok(None)`, "incomplete", is a normal result and
//! leaves the buffer alone), then cuts it off the front of the buffer with one
//! `split_to(..).freeze()`; the arguments are slices of that one chunk, never copied.
//! The check is resumable: a [`Parser`] remembers how far into an array command it
//! has checked, so a command arriving in many small reads is scanned once, and a big
//! bulk string is not looked at again until all of it is buffered.
//!
//! Every length is bounded by [`Limits`]: the number of arguments, the length of one
//! bulk string (the node's maximum payload), the length of an inline line and the
//! size of a whole command. Going over a bound is a protocol error (`TOOLARGE`)
//! reported as soon as the offending length is read, before its bytes arrive, so a
//! client announcing a huge bulk string does not make the server allocate it. Bad
//! framing (`BADFRAME`): a missing CRLF, a non-digit length, an array element that
//! is not a bulk string. After either the stream cannot be trusted; the caller
//! replies `-ERR Protocol error: ...` and closes.
//!
//! Caveats: inline commands are split on spaces and tabs only; quotes and escapes,
//! which Redis honours inline, are taken literally. Arrays of length 0 or below and
//! empty inline lines are skipped, as Redis does.

use super::error::{Error, ErrorCode};
use super::frame::parse_decimal;
use bytes::{BufMut, Bytes, BytesMut};

/// Default most arguments in one command (the command name included).
pub const DEFAULT_MAX_ARGS: usize = 1 << 16;
/// Default longest inline command line, CRLF included.
pub const DEFAULT_MAX_INLINE: usize = 64 << 10;
/// Longest length line (`*N` or `$N` with its CRLF) checked before it must end.
const MAX_LENGTH_LINE: usize = 32;

/// Bounds on what one command may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most arguments in one command, its name included.
    pub max_args: usize,
    /// Longest bulk string (one argument).
    pub max_bulk: usize,
    /// Longest inline command line, CRLF included.
    pub max_inline: usize,
    /// Most bytes one array command may take on the wire, framing included.
    pub max_command: usize,
}

impl Limits {
    /// The defaults for a node whose largest payload is `max_bulk` bytes: a whole
    /// command may take four times that (a few large values in one MSET), and at
    /// least 1 MiB.
    pub fn new(max_bulk: usize) -> Limits {
        Limits {
            max_args: DEFAULT_MAX_ARGS,
            max_bulk,
            max_inline: DEFAULT_MAX_INLINE,
            max_command: max_bulk.saturating_mul(4).max(1 << 20),
        }
    }
}

/// A length field (`what`) as a decimal no larger than `max`: `BADFRAME` if it is
/// not a decimal, `TOOLARGE` if it is over the limit (checked before anything of
/// that size is read).
fn bounded_length(text: &[u8], max: usize, what: &str) -> Result<u64, Error> {
    let n = parse_decimal(text, u64::MAX)
        .ok_or_else(|| Error::new(ErrorCode::BadFrame, format!("invalid {what}")))?;
    if n > max as u64 {
        return Err(Error::new(
            ErrorCode::TooLarge,
            format!("{what} {n} exceeds the maximum of {max}"),
        ));
    }
    Ok(n)
}

/// Progress through the array command at the front of the buffer.
#[derive(Debug, Default)]
struct Progress {
    /// Elements the array announced.
    count: usize,
    /// Offset of the first element not yet checked.
    pos: usize,
}

/// Most element spans a parser keeps allocated between commands.
const KEEP_SPANS: usize = 64;

/// A resumable RESP2 command parser. Keep one per connection, and never change the
/// front of the buffer between calls except through [`Parser::parse`].
#[derive(Debug, Default)]
pub struct Parser {
    array: Option<Progress>,
    /// `(start, len)` of every element of the array in progress checked so far;
    /// reused from command to command (up to [`KEEP_SPANS`] kept).
    spans: Vec<(usize, usize)>,
}

/// A line that starts at `from`: `Ok(Some((end, next)))` with `end` the offset of its
/// CR (or LF, when `crlf` is false and the LF stands alone) and `next` just past its
/// LF; `Ok(None)` if the LF is not buffered yet. A line must end within `max` bytes.
fn line(
    buf: &[u8],
    from: usize,
    max: usize,
    crlf: bool,
    what: &'static str,
) -> Result<Option<(usize, usize)>, Error> {
    let window = &buf[from..buf.len().min(from + max)];
    match memchr::memchr(b'\n', window) {
        Some(i) => {
            let lf = from + i;
            if lf > from && buf[lf - 1] == b'\r' {
                Ok(Some((lf - 1, lf + 1)))
            } else if crlf {
                Err(Error::new(
                    ErrorCode::BadFrame,
                    format!("{what} line must end with CRLF"),
                ))
            } else {
                Ok(Some((lf, lf + 1)))
            }
        }
        None if window.len() >= max => Err(Error::new(
            if crlf {
                ErrorCode::BadFrame
            } else {
                ErrorCode::TooLarge
            },
            format!("{what} line longer than {max} bytes"),
        )),
        None => Ok(None),
    }
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Cuts the next command off the front of `buf` and returns its arguments
    /// (never empty: the first is the command name). `Ok(None)`: no whole command
    /// is buffered yet; call again when more bytes have been appended. An error
    /// means the stream cannot be trusted any more.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Vec<Bytes>>, Error> {
        let mut args = Vec::new();
        Ok(self.parse_into(buf, limits, &mut args)?.then_some(args))
    }

    /// [`Parser::parse`] into a vector the caller keeps (cleared first), so a
    /// connection's commands reuse one: `Ok(true)` when `args` holds a command.
    pub fn parse_into(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
        args: &mut Vec<Bytes>,
    ) -> Result<bool, Error> {
        args.clear();
        loop {
            if self.array.is_none() {
                match buf.first() {
                    None => return Ok(false),
                    Some(b'*') => {}
                    Some(_) => match inline(buf, limits, args)? {
                        Inline::Command => return Ok(true),
                        Inline::Empty => continue,
                        Inline::Incomplete => return Ok(false),
                    },
                }
                let Some((end, next)) = line(buf, 0, MAX_LENGTH_LINE, true, "array length")? else {
                    return Ok(false);
                };
                let text = &buf[1..end];
                if text.first() == Some(&b'-') && parse_decimal(&text[1..], u64::MAX).is_some() {
                    // A null or negative array: nothing to do, as in Redis.
                    let _ = buf.split_to(next);
                    continue;
                }
                let count = bounded_length(text, limits.max_args, "multibulk length")?;
                if count == 0 {
                    let _ = buf.split_to(next);
                    continue;
                }
                self.array = Some(Progress {
                    count: count as usize,
                    pos: next,
                });
                self.spans.clear();
            }
            let p = self.array.as_mut().expect("an array in progress");
            let result = match check_elements(p, &mut self.spans, buf, limits) {
                Ok(false) => return Ok(false),
                Ok(true) => {
                    let p = self.array.take().expect("checked above");
                    let chunk = buf.split_to(p.pos).freeze();
                    args.extend(self.spans.iter().map(|&(s, l)| chunk.slice(s..s + l)));
                    Ok(true)
                }
                Err(e) => {
                    self.array = None;
                    Err(e)
                }
            };
            self.spans.clear();
            if self.spans.capacity() > KEEP_SPANS {
                self.spans = Vec::new();
            }
            return result;
        }
    }
}

/// Checks the array's elements from where the last call stopped; true once every
/// element is buffered.
fn check_elements(
    p: &mut Progress,
    spans: &mut Vec<(usize, usize)>,
    buf: &[u8],
    limits: &Limits,
) -> Result<bool, Error> {
    while spans.len() < p.count {
        let at = p.pos;
        match buf.get(at) {
            None => return Ok(false),
            Some(b'$') => {}
            Some(&other) => {
                let got = if other.is_ascii_graphic() {
                    format!("'{}'", other as char)
                } else {
                    format!("byte {other}")
                };
                return Err(Error::new(
                    ErrorCode::BadFrame,
                    format!("expected '$', got {got}"),
                ));
            }
        }
        let Some((end, next)) = line(buf, at, MAX_LENGTH_LINE, true, "bulk length")? else {
            return Ok(false);
        };
        let len = bounded_length(&buf[at + 1..end], limits.max_bulk, "bulk length")? as usize;
        let data_end = next + len + 2;
        if data_end > limits.max_command {
            return Err(Error::new(
                ErrorCode::TooLarge,
                format!(
                    "command longer than the maximum of {} bytes",
                    limits.max_command
                ),
            ));
        }
        if buf.len() < data_end {
            return Ok(false);
        }
        if &buf[next + len..data_end] != b"\r\n" {
            return Err(Error::new(
                ErrorCode::BadFrame,
                "bulk string not followed by CRLF",
            ));
        }
        spans.push((next, len));
        p.pos = data_end;
    }
    Ok(true)
}

enum Inline {
    Command,
    Empty,
    Incomplete,
}

/// An inline command: one line of words, appended to `args` (empty on entry).
fn inline(buf: &mut BytesMut, limits: &Limits, args: &mut Vec<Bytes>) -> Result<Inline, Error> {
    let Some((end, next)) = line(buf, 0, limits.max_inline, false, "inline command")? else {
        return Ok(Inline::Incomplete);
    };
    let chunk = buf.split_to(next).freeze();
    let mut start = None;
    for (i, &b) in chunk[..end].iter().enumerate() {
        let space = b == b' ' || b == b'\t';
        match (start, space) {
            (None, false) => start = Some(i),
            (Some(s), true) => {
                args.push(chunk.slice(s..i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        args.push(chunk.slice(s..end));
    }
    if args.len() > limits.max_args {
        return Err(Error::new(
            ErrorCode::TooLarge,
            format!("more than {} arguments", limits.max_args),
        ));
    }
    Ok(if args.is_empty() {
        Inline::Empty
    } else {
        Inline::Command
    })
}

/// Appends `*N\r\n` followed by each argument as a bulk string: a command as client
/// libraries send it.
pub fn command(out: &mut BytesMut, args: &[&[u8]]) {
    array(out, args.len());
    for a in args {
        bulk(out, a);
    }
}

/// Appends a simple string, `+text\r\n`. CR and LF in `text` become spaces.
pub fn simple(out: &mut BytesMut, text: &[u8]) {
    out.put_u8(b'+');
    put_line(out, text);
}

/// Appends an error, `-text\r\n` (`text` starts with its code, such as `ERR`).
/// CR and LF in `text` become spaces.
pub fn error(out: &mut BytesMut, text: &[u8]) {
    out.put_u8(b'-');
    put_line(out, text);
}

/// Appends an integer, `:N\r\n`.
pub fn integer(out: &mut BytesMut, n: i64) {
    out.put_u8(b':');
    let mut tmp = [0u8; 20];
    if n < 0 {
        out.put_u8(b'-');
    }
    out.put_slice(super::frame::fmt_u64(n.unsigned_abs(), &mut tmp));
    out.put_slice(b"\r\n");
}

/// Appends a bulk string, `$LEN\r\nDATA\r\n`.
pub fn bulk(out: &mut BytesMut, data: &[u8]) {
    let mut tmp = [0u8; 20];
    out.reserve(data.len() + 26);
    out.put_u8(b'$');
    out.put_slice(super::frame::fmt_u64(data.len() as u64, &mut tmp));
    out.put_slice(b"\r\n");
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Appends the null bulk string, `$-1\r\n` (a missing value).
pub fn nil(out: &mut BytesMut) {
    out.put_slice(b"$-1\r\n");
}

/// Appends an array header, `*N\r\n`; the caller appends the `N` elements.
pub fn array(out: &mut BytesMut, n: usize) {
    let mut tmp = [0u8; 20];
    out.put_u8(b'*');
    out.put_slice(super::frame::fmt_u64(n as u64, &mut tmp));
    out.put_slice(b"\r\n");
}

fn put_line(out: &mut BytesMut, text: &[u8]) {
    out.reserve(text.len() + 2);
    for &b in text {
        out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits {
            max_args: 8,
            max_bulk: 100,
            max_inline: 64,
            max_command: 300,
        }
    }

    /// Every command in `buf`, the error that ended the stream if any.
    fn parse_all(
        p: &mut Parser,
        buf: &mut BytesMut,
        l: &Limits,
    ) -> (Vec<Vec<Bytes>>, Option<Error>) {
        let mut out = Vec::new();
        loop {
            match p.parse(buf, l) {
                Ok(Some(args)) => {
                    assert!(!args.is_empty());
                    out.push(args);
                }
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    fn strs(cmds: &[Vec<Bytes>]) -> Vec<Vec<String>> {
        cmds.iter()
            .map(|c| {
                c.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn arrays_and_inline_commands() {
        let mut buf = BytesMut::from(
            &b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nSET  a\tb\r\nPING\n\r\n*0\r\n*-1\r\n*1\r\n$0\r\n\r\n"
                [..],
        );
        let (cmds, err) = parse_all(&mut Parser::new(), &mut buf, &limits());
        assert!(err.is_none());
        assert_eq!(
            strs(&cmds),
            vec![
                vec!["GET", "k"],
                vec!["SET", "a", "b"],
                vec!["PING"],
                vec![""],
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn binary_arguments_survive() {
        let mut buf = BytesMut::new();
        command(&mut buf, &[b"SET", b"k\r\n", b"\0\r\n$1\r\n*"]);
        let (cmds, err) = parse_all(&mut Parser::new(), &mut buf, &limits());
        assert!(err.is_none());
        assert_eq!(&cmds[0][2][..], b"\0\r\n$1\r\n*");
        assert_eq!(&cmds[0][1][..], b"k\r\n");
    }

    #[test]
    fn parse_into_replaces_what_the_vector_held() {
        let mut buf = BytesMut::new();
        command(&mut buf, &[b"GET", b"a"]);
        buf.extend_from_slice(b"PING\r\n");
        command(&mut buf, &[b"SET", b"k"]);
        buf.extend_from_slice(b"*2\r\n$3\r\nGET");
        let (mut p, mut args) = (Parser::new(), vec![Bytes::from("stale")]);
        let mut seen = Vec::new();
        while p.parse_into(&mut buf, &limits(), &mut args).unwrap() {
            seen.push(args.clone());
        }
        assert_eq!(
            strs(&seen),
            vec![vec!["GET", "a"], vec!["PING"], vec!["SET", "k"]]
        );
        assert!(args.is_empty(), "an incomplete command leaves nothing");
        assert_eq!(&buf[..], b"*2\r\n$3\r\nGET");
    }

    #[test]
    fn incomplete_is_not_an_error_and_resumes() {
        let wire = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let mut p = Parser::new();
        let mut buf = BytesMut::new();
        for (i, &b) in wire.iter().enumerate() {
            buf.put_u8(b);
            let got = p.parse(&mut buf, &limits()).unwrap();
            if i + 1 < wire.len() {
                assert!(got.is_none(), "complete after {} bytes", i + 1);
                assert_eq!(buf.len(), i + 1, "an incomplete parse keeps the bytes");
            } else {
                assert_eq!(strs(&[got.unwrap()]), vec![vec!["SET", "k", "hello"]]);
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_framing_is_an_error() {
        for bad in [
            &b"*x\r\n"[..],
            b"*1\n",
            b"*1\r\n:1\r\n",
            b"*1\r\n$x\r\n",
            b"*1\r\n$-1\r\n",
            b"*1\r\n$1\r\nab\r\n",
            b"*1\r\n$1\n",
            b"*12345678901234567890123456789\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            let e = Parser::new().parse(&mut buf, &limits()).unwrap_err();
            assert_eq!(
                e.code,
                ErrorCode::BadFrame,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn bounds_are_errors_before_the_bytes_arrive() {
        // Two 100-byte bulks fit in 300 bytes; the header of a third would pass them.
        let mut three = BytesMut::from(&b"*3\r\n"[..]);
        for _ in 0..3 {
            three.extend_from_slice(b"$100\r\n");
            three.extend_from_slice(&[b'a'; 100]);
            three.extend_from_slice(b"\r\n");
        }
        three.truncate(4 + 2 * 108 + 6);
        for (bad, what) in [
            (&b"*9\r\n"[..], "arguments"),
            (b"*1\r\n$101\r\n", "bulk length"),
            (b"*1\r\n$4294967296000\r\n", "bulk length"),
            (&three[..], "command size"),
            (&[b'x'; 64][..], "inline length"),
        ] {
            let mut buf = BytesMut::from(bad);
            let e = Parser::new().parse(&mut buf, &limits()).unwrap_err();
            assert_eq!(e.code, ErrorCode::TooLarge, "{what}: {e}");
        }
        // An inline line of exactly the bound, CRLF included, is fine; one more is not.
        let mut line = vec![b'a'; 62];
        line.extend_from_slice(b"\r\n");
        let mut buf = BytesMut::from(&line[..]);
        assert_eq!(
            Parser::new().parse(&mut buf, &limits()).unwrap().unwrap()[0].len(),
            62
        );
        line.insert(0, b'a');
        let mut buf = BytesMut::from(&line[..]);
        assert!(Parser::new().parse(&mut buf, &limits()).is_err());
    }

    #[test]
    fn encoders() {
        let mut out = BytesMut::new();
        simple(&mut out, b"OK");
        error(&mut out, b"ERR bad\r\nthing");
        integer(&mut out, -42);
        integer(&mut out, i64::MIN);
        bulk(&mut out, b"hi");
        bulk(&mut out, b"");
        nil(&mut out);
        array(&mut out, 3);
        assert_eq!(
            &out[..],
            &b"+OK\r\n-ERR bad  thing\r\n:-42\r\n:-9223372036854775808\r\n$2\r\nhi\r\n$0\r\n\r\n$-1\r\n*3\r\n"[..]
        );
    }

    fn arb_command() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8)
    }

    fn splits(len: usize, cuts: Vec<usize>) -> Vec<usize> {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (len + 1)).collect();
        cuts.push(len);
        cuts.sort_unstable();
        cuts
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_in_arbitrary_splits_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..400),
            star in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut data = data;
            if star {
                data.insert(0, b'*');
            }
            let l = limits();
            let mut p = Parser::new();
            let mut buf = BytesMut::new();
            let mut at = 0;
            'outer: for c in splits(data.len(), cuts) {
                buf.extend_from_slice(&data[at..c]);
                at = c;
                loop {
                    match p.parse(&mut buf, &l) {
                        Ok(Some(args)) => {
                            prop_assert!(!args.is_empty() && args.len() <= l.max_args);
                            prop_assert!(args.iter().all(|a| a.len() <= l.max_bulk.max(l.max_inline)));
                        }
                        Ok(None) => break,
                        Err(_) => break 'outer,
                    }
                }
                prop_assert!(buf.len() <= data.len());
            }
        }

        #[test]
        fn encode_then_parse_is_identity(
            cmds in proptest::collection::vec(arb_command(), 1..10),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
        ) {
            let mut wire = BytesMut::new();
            for c in &cmds {
                let args: Vec<&[u8]> = c.iter().map(|a| &a[..]).collect();
                command(&mut wire, &args);
            }
            let wire = wire.freeze();
            let l = limits();
            let mut p = Parser::new();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut at = 0;
            for c in splits(wire.len(), cuts) {
                buf.extend_from_slice(&wire[at..c]);
                at = c;
                let (cmds, err) = parse_all(&mut p, &mut buf, &l);
                prop_assert!(err.is_none());
                got.extend(cmds);
            }
            let got: Vec<Vec<Vec<u8>>> = got
                .into_iter()
                .map(|c| c.into_iter().map(|a| a.to_vec()).collect())
                .collect();
            prop_assert_eq!(got, cmds);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn inline_words_round_trip(
            words in proptest::collection::vec("[!-~&&[^*]][!-~]{0,8}", 1..6),
            crlf in any::<bool>(),
        ) {
            let mut line = words.join(" ");
            line.push_str(if crlf { "\r\n" } else { "\n" });
            let mut buf = BytesMut::from(line.as_bytes());
            let args = Parser::new().parse(&mut buf, &limits()).unwrap().unwrap();
            let args: Vec<String> = args.iter().map(|a| String::from_utf8(a.to_vec()).unwrap()).collect();
            prop_assert_eq!(args, words);
        }
    }
}
