//! Tests of the front: keep-alive, pipelining, order, refusals, and that no
//! byte stream in any split panics it.

use super::*;
use crate::reactor::{ConnId, Output};
use bytes::BytesMut;
use proptest::prelude::*;

fn limits() -> Limits {
    Limits {
        max_head: 512,
        max_body: 64,
        max_pipeline: 4,
    }
}

fn conn() -> ConnId {
    ConnId::new(1, 1)
}

/// Feeds `pieces` to a fresh front, answering every request at once with its
/// method, path and body; returns every output.
fn run(pieces: &[&[u8]], eof: bool) -> Vec<Output> {
    let mut front = Front::new(limits());
    let mut out = Vec::new();
    front.accepted(conn(), &mut out);
    let serve = |front: &mut Front, out: &mut Vec<Output>| {
        while let Some((id, req)) = front.next(conn(), out) {
            let body = format!(
                "{} {} {}",
                req.method,
                req.path,
                String::from_utf8_lossy(&req.body)
            );
            front.respond(id, &Response::new(200, "text/plain", body), out);
        }
    };
    for p in pieces {
        front.data(conn(), BytesMut::from(*p));
        serve(&mut front, &mut out);
    }
    if eof {
        front.eof(conn(), &mut out);
        serve(&mut front, &mut out);
    }
    out
}

/// Everything sent, concatenated, and whether a close followed it.
fn sent(out: &[Output]) -> (String, bool) {
    let mut s = Vec::new();
    let mut closed = false;
    for o in out {
        match o {
            Output::SendBytes { bytes, .. } => {
                assert!(!closed, "bytes after the close");
                s.extend_from_slice(bytes);
            }
            Output::Close { .. } => {
                assert!(!closed, "closed twice");
                closed = true;
            }
            _ => {}
        }
    }
    (String::from_utf8_lossy(&s).into_owned(), closed)
}

#[test]
fn two_pipelined_requests_get_two_replies_in_order() {
    let (s, closed) = sent(&run(
        &[b"GET /a HTTP/1.1\r\n\r\nPUT /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"],
        false,
    ));
    let a = s.find("GET /a ").expect("first reply");
    let b = s.find("PUT /b hi").expect("second reply");
    assert!(a < b);
    assert_eq!(s.matches("HTTP/1.1 200 OK").count(), 2);
    assert!(!closed, "keep-alive");
}

#[test]
fn connection_close_is_honoured_and_later_requests_ignored() {
    let (s, closed) = sent(&run(
        &[b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n"],
        false,
    ));
    assert!(s.contains("Connection: close\r\n"));
    assert!(!s.contains("/b"));
    assert!(closed);
}

#[test]
fn a_bad_request_gets_400_and_a_close_after_earlier_replies() {
    let (s, closed) = sent(&run(&[b"GET /a HTTP/1.1\r\n\r\nNOT HTTP\r\n\r\n"], false));
    assert!(s.starts_with("HTTP/1.1 200 OK"), "{s}");
    assert!(s.contains("HTTP/1.1 400 Bad Request"), "{s}");
    assert!(closed);
}

#[test]
fn a_body_over_the_limit_gets_413() {
    let (s, closed) = sent(&run(
        &[b"PUT /x HTTP/1.1\r\nContent-Length: 65\r\n\r\n"],
        false,
    ));
    assert!(s.starts_with("HTTP/1.1 413 "), "{s}");
    assert!(closed);
}

#[test]
fn eof_answers_whole_requests_then_closes() {
    let (s, closed) = sent(&run(&[b"GET /a HTTP/1.1\r\n\r\nGET /b HT"], true));
    assert!(s.contains("GET /a"));
    assert!(!s.contains("/b"));
    assert!(closed);
}

#[test]
fn expect_continue_gets_100_before_the_body() {
    let (s, _) = sent(&run(
        &[
            b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            b"ok",
        ],
        false,
    ));
    assert!(
        s.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"),
        "{s}"
    );
}

#[test]
fn head_gets_no_body() {
    let (s, _) = sent(&run(&[b"HEAD /a HTTP/1.1\r\n\r\n"], false));
    assert!(s.ends_with("Content-Length: 8\r\n\r\n"), "{s:?}");
}

#[test]
fn late_replies_leave_in_request_order_and_the_pipeline_is_bounded() {
    let mut front = Front::new(limits());
    let mut out = Vec::new();
    front.accepted(conn(), &mut out);
    front.data(
        conn(),
        BytesMut::from(&b"GET /0 HTTP/1.1\r\n\r\n".repeat(6)[..]),
    );
    let mut ids = Vec::new();
    while let Some((id, _)) = front.next(conn(), &mut out) {
        ids.push(id);
    }
    assert_eq!(ids.len(), 4, "max_pipeline");
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Hold { hold: true, .. })));
    out.clear();
    // Answer the second first: nothing leaves until the first is answered.
    front.respond(ids[1], &Response::new(200, "text/plain", "one"), &mut out);
    assert!(sent(&out).0.is_empty());
    // A streamed first reply: its pieces leave at once, then the second.
    front.stream_start(ids[0], 200, &[], &mut out);
    front.stream_chunk(ids[0], b"zero", &mut out);
    assert!(sent(&out).0.ends_with("4\r\nzero\r\n"));
    front.stream_end(ids[0], &mut out);
    let (s, _) = sent(&out);
    let zero_end = s.find("0\r\n\r\n").unwrap();
    assert!(zero_end < s.find("one").unwrap(), "{s}");
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Hold { hold: false, .. })));
    // The parked requests come out now.
    assert!(front.next(conn(), &mut out).is_some());
}

#[test]
fn routes_answer_404_and_405_with_allow() {
    let req = |m: &str, p: &str| Request {
        method: m.into(),
        path: p.into(),
        query: None,
        minor_version: 1,
        headers: vec![],
        body: Default::default(),
        keep_alive: true,
    };
    let eps: &[(&str, &[&str])] = &[("/metrics", &["GET"]), ("/set", &["PUT"])];
    assert_eq!(route(&req("GET", "/metrics"), eps), Ok(0));
    assert_eq!(route(&req("HEAD", "/metrics"), eps), Ok(0));
    assert_eq!(route(&req("PUT", "/set"), eps), Ok(1));
    assert_eq!(route(&req("GET", "/nope"), eps).unwrap_err().status, 404);
    let r = route(&req("POST", "/metrics"), eps).unwrap_err();
    assert_eq!(r.status, 405);
    assert!(r.headers.contains(&("Allow", "GET, HEAD".to_string())));
}

/// Splits `bytes` at the given cut points (taken modulo its length).
fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut at = 0;
    for c in cuts.into_iter().chain([bytes.len()]) {
        pieces.push(bytes[at..c].to_vec());
        at = c;
    }
    pieces
}

/// One well-formed request, and the reply body the test service gives it.
fn a_request() -> impl Strategy<Value = (Vec<u8>, String)> {
    ("[a-z]{1,8}", proptest::option::of("[a-z0-9]{0,20}")).prop_map(|(path, body)| match body {
        None => (
            format!("GET /{path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes(),
            format!("GET /{path} "),
        ),
        Some(b) => (
            format!(
                "PUT /{path} HTTP/1.1\r\ncontent-length: {}\r\n\r\n{b}",
                b.len()
            )
            .into_bytes(),
            format!("PUT /{path} {b}"),
        ),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_in_any_split_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..1500),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        prefix in proptest::option::of(Just(b"GET / HTTP/1.1\r\nContent-Length: 3\r\n".to_vec())),
        eof in any::<bool>(),
    ) {
        let mut all = prefix.unwrap_or_default();
        all.extend_from_slice(&bytes);
        let pieces = split(&all, &cuts);
        let refs: Vec<&[u8]> = pieces.iter().map(|p| &p[..]).collect();
        let out = run(&refs, eof);
        let (s, _) = sent(&out);
        // Every reply is a whole status line; never more replies than requests could fit.
        prop_assert!(s.is_empty() || s.starts_with("HTTP/1.1 "));
        prop_assert!(s.matches("HTTP/1.1 ").count() <= all.len() / 14 + 2);
    }

    #[test]
    fn pipelined_requests_in_any_split_are_answered_in_order(
        reqs in proptest::collection::vec(a_request(), 1..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let all: Vec<u8> = reqs.iter().flat_map(|(b, _)| b.clone()).collect();
        let pieces = split(&all, &cuts);
        let refs: Vec<&[u8]> = pieces.iter().map(|p| &p[..]).collect();
        let (s, closed) = sent(&run(&refs, false));
        prop_assert!(!closed);
        let mut at = 0;
        for (_, want) in &reqs {
            let found = s[at..].find(&format!("\r\n\r\n{want}"));
            prop_assert!(found.is_some(), "{:?} not after {} in {:?}", want, at, s);
            at += found.unwrap() + 4 + want.len();
        }
        prop_assert_eq!(s.matches("HTTP/1.1 200 OK").count(), reqs.len());
    }
}
