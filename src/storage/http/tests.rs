//! The HTTP front alone: requests in, native requests and replies out.

use super::*;

const CONN: ConnId = ConnId::new(7, 1);

fn front() -> (HttpFront, Vec<Output>) {
    let mut f = HttpFront::new(2, 1 << 20);
    let mut out = Vec::new();
    f.accept(CONN, &mut out);
    assert!(matches!(out[..], [Output::Raw { conn: CONN }]));
    out.clear();
    (f, out)
}

fn req(method: &str, path: &str, body: &str) -> BytesMut {
    BytesMut::from(
        format!(
            "{method} {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

/// The frames of `Item::Request`s.
fn frames(items: Vec<Item>) -> Vec<Frame> {
    (items.into_iter())
        .map(|i| match i {
            Item::Request(f) => f,
            i => panic!("not a request: {i:?}"),
        })
        .collect()
}

/// The bytes sent to `CONN`, as text.
fn sent(out: &[Output]) -> String {
    let mut s = String::new();
    for o in out {
        if let Output::SendBytes { conn: CONN, bytes } = o {
            s.push_str(std::str::from_utf8(bytes).unwrap());
        }
    }
    s
}

fn holds(out: &[Output]) -> Vec<bool> {
    (out.iter())
        .filter_map(|o| match o {
            Output::Hold { conn: CONN, hold } => Some(*hold),
            _ => None,
        })
        .collect()
}

/// The node's reply to the front's request `tag`, delivered at time `now`.
fn reply(
    f: &mut HttpFront,
    now: Millis,
    (tag, op, payload): (u64, u8, &'static [u8]),
    out: &mut Vec<Output>,
) {
    let frame = Frame::new(op, tag, 1, payload);
    f.deliver(now, CONN, Event::Reply(frame), out);
}

/// The connections to serve again, from [`HttpFront::take_work`].
fn resume(f: &mut HttpFront) -> Vec<ConnId> {
    f.take_work().1
}

#[test]
fn a_set_becomes_one_put_per_pair_and_its_reply_counts_them() {
    let (mut f, mut out) = front();
    let body = r#"[{"key":{"encoding":"string","data":"a"},"value":{"encoding":"string","data":"1"}},
                   {"key":{"encoding":"binary","data":"/w=="},"value":{"encoding":"string","data":"22"}}]"#;
    f.data(CONN, req("PUT", "/set", body));
    let fs = frames(f.serve(0, CONN, &mut out));
    assert_eq!(fs.len(), 2);
    assert_eq!((fs[0].op, fs[0].client_id), (op::PUT, 1));
    assert_eq!(&fs[0].payload[..], b"1 a1");
    assert_eq!((fs[1].op, fs[1].client_id), (op::PUT, 2));
    assert_eq!(&fs[1].payload[..], b"1 \xff22");
    // The first reply alone answers nothing.
    reply(&mut f, 0, (1, op::OK, b""), &mut out);
    assert!(resume(&mut f).is_empty());
    assert_eq!(sent(&out), "");
    reply(&mut f, 3, (2, op::ERR, b"UNAVAILABLE no quorum"), &mut out);
    let text = sent(&out);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.ends_with(r#"[{"keys_added":1,"keys_failed":[{"encoding":"binary","data":"/w=="}]}]"#),
        "{text}"
    );
    let m = metrics::exposition(&f.stats, &Default::default(), 2);
    assert!(m.contains("op=\"PUT\",result=\"UNAVAILABLE\"} 1\n"), "{m}");
    assert!(m.contains("duration_seconds_count{op=\"PUT\"} 1\n"), "{m}");
}

#[test]
fn a_reply_out_of_order_is_a_500_and_a_close() {
    let (mut f, mut out) = front();
    f.data(
        CONN,
        req("POST", "/fetch", r#"[{"encoding":"string","data":"k"}]"#),
    );
    assert_eq!(frames(f.serve(0, CONN, &mut out)).len(), 1);
    reply(&mut f, 0, (9, op::VALUE, b"v"), &mut out);
    assert!(sent(&out).starts_with("HTTP/1.1 500 "), "{}", sent(&out));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Close { conn: CONN })));
}

#[test]
fn empty_and_bad_keys_are_answered_without_the_node() {
    let (mut f, mut out) = front();
    f.data(CONN, req("POST", "/query", "[]"));
    f.data(
        CONN,
        req("POST", "/fetch", r#"[{"encoding":"string","data":""}]"#),
    );
    assert!(f.serve(0, CONN, &mut out).is_empty());
    let text = sent(&out);
    assert!(text.contains("\r\n\r\n[]HTTP/1.1 400 "), "{text}");
    assert!(text.contains(r#""kind":"bad_key""#), "{text}");
}

#[test]
fn a_connection_is_read_again_only_once_the_node_and_the_front_release_it() {
    let (mut f, mut out) = front();
    let one = req("POST", "/query", r#"[{"encoding":"string","data":"k"}]"#);
    for _ in 0..Limits::default().max_pipeline + 1 {
        f.data(CONN, one.clone());
    }
    let n = frames(f.serve(0, CONN, &mut out)).len();
    assert_eq!(n, Limits::default().max_pipeline, "one request waits");
    assert_eq!(holds(&out), vec![true], "the front holds");
    out.clear();
    // The node also holds the connection (its reply backlog).
    f.deliver(0, CONN, Event::Hold(true), &mut out);
    assert!(resume(&mut f).is_empty());
    assert_eq!(holds(&out), Vec::<bool>::new(), "one hold for both reasons");
    // Every reply is in: the front has room, but the node still holds.
    for tag in 1..=n as u64 {
        reply(&mut f, 0, (tag, op::NOT_FOUND, b""), &mut out);
    }
    assert_eq!(
        resume(&mut f),
        vec![CONN],
        "served again: a request waits in the buffer"
    );
    assert_eq!(holds(&out), Vec::<bool>::new());
    assert_eq!(frames(f.serve(0, CONN, &mut out)).len(), 1);
    out.clear();
    f.deliver(0, CONN, Event::Hold(false), &mut out);
    assert_eq!(holds(&out), vec![false]);
}
