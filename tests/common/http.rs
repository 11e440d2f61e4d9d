//! HTTP for the tests: where a process serves it (its log line), and one
//! reply (`Content-Length` or chunked) read off a keep-alive connection.

use super::{Proc, TIMEOUT};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The `HOST:PORT` of a process's HTTP listener, from its `http listening on` line.
pub fn http_addr(p: &Proc) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = p.log().iter().find_map(|l| {
            let at = l.find("http listening on ")?;
            l[at + 18..].split_whitespace().next().map(str::to_string)
        });
        if let Some(addr) = found {
            return addr;
        }
        assert!(Instant::now() < deadline, "no http line: {:?}", p.log());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One reply: status, headers (lower-case names) and body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        (self.headers.iter())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics, showing it, if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Reads one reply, its body sized by `Content-Length` or chunked.
pub fn read_reply(r: &mut BufReader<TcpStream>) -> Reply {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = (line.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').expect("name: value");
        headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut reply = Reply {
        status,
        headers,
        body: String::new(),
    };
    let body = if reply.header("transfer-encoding") == Some("chunked") {
        read_chunks(r).concat()
    } else {
        let len: usize = reply.header("content-length").unwrap().parse().unwrap();
        let mut body = vec![0; len];
        r.read_exact(&mut body).expect("body");
        body
    };
    reply.body = String::from_utf8(body).unwrap();
    reply
}

/// Reads a chunked body up to its last chunk, checking the framing exactly
/// (`HEXLEN CRLF DATA CRLF` per chunk, `0 CRLF CRLF` at the end, no trailers);
/// returns the chunks' data, one element per chunk.
pub fn read_chunks(r: &mut BufReader<TcpStream>) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("chunk size line");
        let size = line
            .strip_suffix("\r\n")
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .unwrap_or_else(|| panic!("bad chunk size line {line:?}"));
        let len = usize::from_str_radix(size, 16).unwrap();
        let mut data = vec![0; len + 2];
        r.read_exact(&mut data).expect("chunk data");
        assert_eq!(&data[len..], b"\r\n", "a chunk ends with CRLF");
        if len == 0 {
            return chunks;
        }
        data.truncate(len);
        chunks.push(data);
    }
}

/// A connection with the tests' read timeout.
pub fn connect(addr: &str) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    BufReader::new(s)
}

/// Checks `text` with promtool when it is installed.
pub fn promtool_accepts(text: &str) {
    let Ok(mut promtool) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!(
            "notice: promtool not installed; the metrics were checked by our own assertions only"
        );
        return;
    };
    let mut stdin = promtool.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    drop(stdin);
    let done = promtool.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "promtool refuses the metrics: {}{}\n{text}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
}
