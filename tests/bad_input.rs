//! Hostile and broken input against the real binaries: malformed headers, frames
//! above the size limit, unknown and reserved ops, wrong secrets, stalled and
//! never-reading clients. After each, the server must still serve other
//! connections and keep the data it acknowledged.

mod common;

use common::{frame, kv, show, Cluster, Proc, Wire};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const PING: u8 = 10;
const PUT: u8 = 11;
const GET: u8 = 13;
const OK: u8 = 21;
const VALUE: u8 = 22;

/// A one-node cluster with one acknowledged key, and the node's id.
fn setup_with(args: &[&str]) -> (Cluster, u32) {
    let c = Cluster::start_with(1, args);
    let n = common::node_id_of(&c.nodes[0].addr);
    let mut w = Wire::connect(&c.nodes[0].addr);
    w.send(&frame(PUT, 0, 0, &kv(b"before", b"acknowledged")));
    w.expect(&frame(OK, 0, n, b""));
    (c, n)
}

/// The node still serves new connections and still holds the key written first.
fn still_serving(c: &Cluster, n: u32) {
    common::assert_serves(&c.nodes[0].addr, n, b"before", b"acknowledged");
}

#[test]
fn malformed_headers_get_one_badframe_then_close() {
    let (c, n) = setup_with(&[]);
    let long_digits = vec![b'1'; 100];
    let exactly_64 = vec![b'1'; 64];
    let mut long_with_lf = b"13 0 0 5".to_vec();
    long_with_lf.extend(std::iter::repeat_n(b' ', 60));
    long_with_lf.extend_from_slice(b"\nhello");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("non-digit op", b"x 0 0 0\n".to_vec()),
        ("non-digit len", b"13 0 0 5a\nhello".to_vec()),
        ("non-digit client id", b"13 c 0 5\nhello".to_vec()),
        ("missing field", b"13 0 5\nhello".to_vec()),
        ("extra field", b"13 0 0 5 5\nhello".to_vec()),
        ("two spaces", b"13  0 0 5\nhello".to_vec()),
        ("leading space", b" 13 0 0 5\nhello".to_vec()),
        ("trailing space", b"13 0 0 5 \nhello".to_vec()),
        ("tab separator", b"13\t0 0 5\nhello".to_vec()),
        ("empty line", b"\n".to_vec()),
        ("op 256", b"256 0 0 0\n".to_vec()),
        ("node id 2^32", b"10 0 4294967296 0\n".to_vec()),
        ("client id 2^64", b"10 18446744073709551616 0 0\n".to_vec()),
        ("len 2^32", b"13 0 0 4294967296\n".to_vec()),
        ("signed len", b"13 0 0 -1\n".to_vec()),
        ("plus sign", b"+10 0 0 0\n".to_vec()),
        ("two CRs", b"10 0 0 0\r\r\n".to_vec()),
        ("CR not before LF", b"10 0\r 0 0\n".to_vec()),
        ("100 bytes, no LF", long_digits),
        ("64 bytes, no LF", exactly_64),
        ("LF after byte 64", long_with_lf),
    ];
    for (what, bytes) in &cases {
        let mut w = Wire::connect(&c.nodes[0].addr);
        w.send(bytes);
        let msg = w.expect_err(0, n, "BADFRAME");
        assert!(!msg.is_empty(), "{what}: BADFRAME carries a message");
        w.expect_eof();
        still_serving(&c, n);
    }
    // Whatever follows the bad header is never parsed: no second reply.
    let mut w = Wire::connect(&c.nodes[0].addr);
    w.send(b"oops\n10 0 0 0\n10 0 0 0\n");
    w.expect_err(0, n, "BADFRAME");
    w.expect_eof();
    still_serving(&c, n);
}

#[test]
fn good_frames_before_a_bad_header_are_answered_and_kept() {
    let (c, n) = setup_with(&[]);
    let mut w = Wire::connect(&c.nodes[0].addr);
    let mut req = frame(PUT, 4, 0, &kv(b"pipelined", b"kept"));
    req.extend(frame(PING, 5, 0, b"p"));
    req.extend_from_slice(b"13 0 zero 5\nhello");
    w.send(&req);
    w.expect(&frame(OK, 4, n, b""));
    w.expect(&frame(20, 5, n, b"p"));
    w.expect_err(0, n, "BADFRAME");
    w.expect_eof();
    common::assert_serves(&c.nodes[0].addr, n, b"pipelined", b"kept");
    still_serving(&c, n);
}

/// A manager and one storage node started with `node_args`, without waiting for
/// the node to register (see `node_with_a_small_max_frame_registers`).
fn start_unregistered(node_args: &[&str]) -> Cluster {
    let args = ["--port", "0", "--recovery-ms", "0"];
    let manager = Proc::start(env!("CARGO_BIN_EXE_gtstore-manager"), &args);
    let mut c = Cluster {
        manager,
        nodes: Vec::new(),
    };
    c.add_node(node_args);
    c
}

/// The node id in a PING reply, after giving the node up to `wait` to register.
fn current_node_id(addr: &str, wait: Duration) -> u32 {
    let deadline = Instant::now() + wait;
    let mut w = Wire::connect(addr);
    loop {
        w.send(&frame(PING, 0, 0, b""));
        let id = w.frame().node_id;
        if id != 0 || Instant::now() > deadline {
            return id;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn len_above_max_frame_gets_toolarge_before_any_payload() {
    // Not Cluster::start_with: with --max-frame 1024 the node cannot register
    // today (server bug, see below), so the test must not depend on that; it
    // reads the node id from the replies instead.
    let c = start_unregistered(&["--max-frame", "1024"]);
    let addr = c.nodes[0].addr.clone();
    let n = current_node_id(&addr, Duration::from_secs(2));
    // Exactly the maximum is fine.
    let mut w = Wire::connect(&addr);
    let value = vec![b'v'; 1024 - 6];
    let p = kv(b"full", &value);
    assert_eq!(p.len(), 1024);
    w.send(&frame(PUT, 0, 0, &p));
    w.expect(&frame(OK, 0, n, b""));
    w.send(&frame(GET, 0, 0, b"full"));
    w.expect(&frame(VALUE, 0, n, &value));
    // One more: the header alone earns TOOLARGE and a close; no payload is sent.
    let mut w = Wire::connect(&addr);
    w.send(b"11 0 0 1025\n");
    w.expect_err(0, n, "TOOLARGE");
    w.expect_eof();
    // The node keeps serving, with the data it acknowledged.
    common::assert_serves(&addr, n, b"full", &value);
    let mut w = Wire::connect(&addr);
    w.send(b"11 0 0 1025\n");
    w.expect_err(0, n, "TOOLARGE");
    w.expect_eof();
    common::assert_serves(&addr, n, b"full", &value);
}

/// `--max-frame` limits what clients may send; it must not stop the node from
/// taking the manager's JOINED reply (about 1.4 KB for one node with 64 tokens,
/// and growing with the cluster).
#[test]
fn node_with_a_small_max_frame_registers() {
    let c = start_unregistered(&["--max-frame", "1024"]);
    let n = current_node_id(&c.nodes[0].addr, Duration::from_secs(5));
    let log = c.nodes[0].log();
    assert_ne!(
        n,
        0,
        "the node never learned its id; {} log lines, the last: {:?}",
        log.len(),
        &log[log.len().saturating_sub(2)..]
    );
    // And it stays up: no flapping, the epoch stands still.
    let first = c.status();
    std::thread::sleep(Duration::from_millis(600));
    let second = c.status();
    assert_eq!(second["live_nodes"], 1, "{second}");
    assert_eq!(
        first["epoch"], second["epoch"],
        "membership flaps: {first} then {second}"
    );
}

#[test]
fn huge_len_on_a_default_node_gets_toolarge_before_any_payload() {
    let (c, n) = setup_with(&[]);
    for header in [
        &b"13 0 0 4000000000\n"[..],
        b"11 0 0 4294967295\n",
        b"10 0 0 16777217\r\n",
    ] {
        let mut w = Wire::connect(&c.nodes[0].addr);
        w.send(header);
        w.expect_err(0, n, "TOOLARGE");
        w.expect_eof();
        still_serving(&c, n);
    }
    // Acknowledged work on the same connection is answered first.
    let mut w = Wire::connect(&c.nodes[0].addr);
    let mut req = frame(PUT, 0, 0, &kv(b"first", b"then too large"));
    req.extend_from_slice(b"11 0 0 4000000000\n");
    w.send(&req);
    w.expect(&frame(OK, 0, n, b""));
    w.expect_err(0, n, "TOOLARGE");
    w.expect_eof();
    common::assert_serves(&c.nodes[0].addr, n, b"first", b"then too large");
}

/// The contract says every reply carries the request's CLIENTID, and a TOOLARGE
/// header is complete and valid, so its client id is known.
#[test]
fn toolarge_reply_carries_the_request_client_id() {
    let (c, n) = setup_with(&[]);
    let mut w = Wire::connect(&c.nodes[0].addr);
    w.send(b"11 77 0 4000000000\n");
    w.expect_err(77, n, "TOOLARGE");
    w.expect_eof();
}

#[test]
fn megabytes_after_a_toolarge_header_are_not_buffered() {
    let (c, n) = setup_with(&[]);
    let before = c.nodes[0].rss_kib();
    const JUNK: usize = 32 << 20;
    let mut w = Wire::connect(&c.nodes[0].addr);
    let mut writer = w.stream.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        // The server may close before taking it all: count what it took.
        let chunk = vec![b'j'; 1 << 20];
        let mut sent = 0;
        if writer.write_all(b"11 0 0 4000000000\n").is_err() {
            return 0;
        }
        while sent < JUNK {
            match writer.write(&chunk) {
                Ok(k) => sent += k,
                Err(_) => break,
            }
        }
        sent
    });
    w.expect_err(0, n, "TOOLARGE");
    w.expect_closed_within(Duration::from_secs(10));
    let sent = t.join().unwrap();
    let after = c.nodes[0].rss_kib();
    eprintln!(
        "TOOLARGE then {} KiB of junk: node RSS {before} KiB -> {after} KiB",
        sent >> 10
    );
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} to {after} KiB after {sent} junk bytes"
    );
    still_serving(&c, n);
}

#[test]
fn unknown_and_reply_ops_get_badop_and_the_connection_stays_open() {
    let (c, n) = setup_with(&[]);
    let mut w = Wire::connect(&c.nodes[0].addr);
    for op in [0u8, 5, 9, 20, 21, 22, 23, 24, 29, 40, 41, 42, 100, 200, 255] {
        w.send(&frame(op, 8, 0, b"1 kv"));
        w.expect_err(8, n, "BADOP");
        w.ping_ok(n);
    }
    // Many in one write: one BADOP each, in order, between good replies.
    let mut req = Vec::new();
    for op in [5u8, 200, 21] {
        req.extend(frame(op, 0, 0, b""));
        req.extend(frame(PING, 0, 0, &[op]));
    }
    w.send(&req);
    for op in [5u8, 200, 21] {
        w.expect_err(0, n, "BADOP");
        w.expect(&frame(20, 0, n, &[op]));
    }
    still_serving(&c, n);
}

#[test]
fn reserved_ops_from_an_unproven_connection_get_badop() {
    let (c, n) = setup_with(&[]);
    let mut w = Wire::connect(&c.nodes[0].addr);
    for op in [51u8, 52, 60, 61, 75, 99] {
        for payload in [&b""[..], b"12", b"gtstore 127.0.0.1:1 4"] {
            w.send(&frame(op, 0, 0, payload));
            w.expect_err(0, n, "BADOP");
        }
        w.ping_ok(n);
    }
    still_serving(&c, n);
}

#[test]
fn node_join_with_a_wrong_secret_gets_auth_then_close() {
    let (c, n) = setup_with(&[]);
    // Plaintext secrets (the old format, even the right one) are refused too.
    for payload in [
        &b"wrong 127.0.0.1:1 4"[..],
        b"",
        b"gtstorex 127.0.0.1:1 4",
        b"gtstore 127.0.0.1:1 4",
    ] {
        let mut w = Wire::connect(&c.nodes[0].addr);
        w.send(&frame(50, 0, 0, payload));
        w.expect_err(0, n, "AUTH");
        w.expect_eof();
        still_serving(&c, n);
    }
    // Still unproven afterwards on a new connection.
    let mut w = Wire::connect(&c.nodes[0].addr);
    w.send(&frame(51, 0, 0, b"1"));
    w.expect_err(0, n, "BADOP");
    // The manager refuses a wrong secret the same way (and registers nothing).
    for payload in [&b"wrong 127.0.0.1:1 4"[..], b"gtstore 127.0.0.1:1 4"] {
        let mut m = Wire::connect(&c.manager.addr);
        m.send(&frame(50, 0, 0, payload));
        m.expect_err(0, 0, "AUTH");
        m.expect_eof();
    }
    assert_eq!(c.status()["nodes"].as_array().unwrap().len(), 1);
    still_serving(&c, n);
}

#[test]
fn a_client_stalled_mid_frame_does_not_hold_up_others() {
    let (c, n) = setup_with(&[]);
    let addr = &c.nodes[0].addr;
    // One stalls inside a payload, one inside a header.
    let mut mid_payload = Wire::connect(addr);
    mid_payload.send(b"11 0 0 12\n5 hel");
    let mut mid_header = Wire::connect(addr);
    mid_header.send(b"13 0");
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..50u32 {
        let mut w = Wire::connect(addr);
        let key = format!("other-{i}");
        w.send(&frame(PUT, 0, 0, &kv(key.as_bytes(), b"v")));
        w.expect(&frame(OK, 0, n, b""));
        w.send(&frame(GET, 0, 0, key.as_bytes()));
        w.expect(&frame(VALUE, 0, n, b"v"));
    }
    // The stalled clients finish later and get their replies.
    mid_payload.send(b"lothere");
    mid_payload.expect(&frame(OK, 0, n, b""));
    mid_header.send(b" 0 5\nhello");
    mid_header.expect(&frame(VALUE, 0, n, b"there"));
    mid_payload.ping_ok(n);
    still_serving(&c, n);
}

#[test]
fn a_pipelining_client_that_never_reads_costs_bounded_memory() {
    let (c, n) = setup_with(&[]);
    let addr = c.nodes[0].addr.clone();
    // Each 12-byte GET asks for a 4 KiB value: without backpressure the server
    // would buffer hundreds of MiB of replies.
    let value: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let mut w = Wire::connect(&addr);
    w.send(&frame(PUT, 0, 0, &kv(b"big", &value)));
    w.expect(&frame(OK, 0, n, b""));
    drop(w);
    let rss_before = c.nodes[0].rss_kib();

    const REQUESTS: usize = 100_000;
    let one = frame(GET, 0, 0, b"big");
    let req: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * REQUESTS)
        .collect();
    let mut stalled = TcpStream::connect(&addr).unwrap();
    let start = Instant::now();
    let off = write_until_stuck(&stalled, &req);
    let whole = off / one.len();
    let partial = off % one.len();
    std::thread::sleep(Duration::from_millis(300));
    let rss_stalled = c.nodes[0].rss_kib();
    eprintln!(
        "never-reading client wrote {whole} whole GETs ({off} bytes, {:?}); \
         node RSS {rss_before} KiB -> {rss_stalled} KiB",
        start.elapsed()
    );
    assert!(
        rss_stalled < rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {rss_stalled} KiB while a client did not read"
    );

    // Meanwhile another client is served normally.
    let t = Instant::now();
    let mut other = Wire::connect(&addr);
    for i in 0..20u32 {
        other.send(&frame(PUT, 0, 0, &kv(format!("o{i}").as_bytes(), b"x")));
        other.expect(&frame(OK, 0, n, b""));
    }
    other.send(&frame(GET, 0, 0, b"big"));
    other.expect(&frame(VALUE, 0, n, &value));
    eprintln!(
        "other client: 21 round trips in {:?} meanwhile",
        t.elapsed()
    );
    still_serving(&c, n);

    // Now the stalled client reads: every reply it asked for, in order.
    stalled.set_nonblocking(false).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stalled
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let want = frame(VALUE, 0, n, &value);
    let mut r = std::io::BufReader::with_capacity(1 << 20, stalled.try_clone().unwrap());
    let mut got = vec![0u8; want.len()];
    let deadline = Instant::now() + Duration::from_secs(40);
    for i in 0..whole {
        r.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("reply {i} of {whole}: {e}"));
        if got != want {
            panic!("reply {i} of {whole} differs: {}", show(&got));
        }
        assert!(
            Instant::now() < deadline,
            "only {i} of {whole} replies in time"
        );
    }
    // The request cut short by the blocked socket: finish it, get its reply too.
    let mut expected_extra = 0;
    if partial > 0 {
        stalled.write_all(&one[partial..]).unwrap();
        expected_extra = 1;
    }
    stalled.write_all(&frame(PING, 0, 0, b"end")).unwrap();
    for _ in 0..expected_extra {
        r.read_exact(&mut got).unwrap();
        assert!(got == want, "the completed request's reply: {}", show(&got));
    }
    let pong = frame(20, 0, n, b"end");
    let mut end = vec![0u8; pong.len()];
    r.read_exact(&mut end).unwrap();
    assert_eq!(show(&end), show(&pong), "nothing extra, nothing missing");
    eprintln!(
        "stalled client then read {} replies; total {:?}; node RSS now {} KiB",
        whole + expected_extra,
        start.elapsed(),
        c.nodes[0].rss_kib()
    );
    still_serving(&c, n);
}

#[test]
fn manager_rejects_bad_frames_and_key_value_ops() {
    let c = Cluster::start(1);
    let n = common::node_id_of(&c.nodes[0].addr);
    for bad in [&b"31 0 0\n"[..], b"x 0 0 0\n", b"31 0 0 0 0\n", &[b'3'; 80]] {
        let mut m = Wire::connect(&c.manager.addr);
        m.send(bad);
        m.expect_err(0, 0, "BADFRAME");
        m.expect_eof();
    }
    let mut m = Wire::connect(&c.manager.addr);
    m.send(b"31 0 0 4000000000\n");
    m.expect_err(0, 0, "TOOLARGE");
    m.expect_eof();
    // Key-value requests belong to storage nodes; the connection stays open.
    let mut m = Wire::connect(&c.manager.addr);
    for op in 11..=17u8 {
        m.send(&frame(op, 3, 0, b"1 kv"));
        m.expect_err(3, 0, "BADOP");
    }
    for op in [5u8, 21, 40, 51, 60, 99, 200] {
        m.send(&frame(op, 0, 0, b""));
        m.expect_err(0, 0, "BADOP");
    }
    m.send(&frame(31, 0, 0, b""));
    let f = m.frame();
    assert_eq!(f.op, 41, "RING after the errors: {}", show(&f.payload));
    // The manager still does its job for others.
    assert_eq!(c.status()["live_nodes"], 1);
    let mut w = Wire::connect(&c.nodes[0].addr);
    w.ping_ok(n);
}

/// Pipelines `one` (a whole request frame) as fast as the socket takes it, never
/// reading, until it blocks for 500 ms, `count` are sent, or 10 s pass. Returns
/// the socket and the bytes written.
fn pipeline_without_reading(addr: &str, one: &[u8], count: usize) -> (TcpStream, Vec<u8>, usize) {
    let req: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * count)
        .collect();
    let s = TcpStream::connect(addr).unwrap();
    let off = write_until_stuck(&s, &req);
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    (s, req, off)
}

/// Sends `sig` (`STOP` or `CONT`) to a process.
fn signal(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid}");
}

/// Like the one-node case, but the keys are spread over two nodes, so the
/// contact forwards about half of the GETs. The other node is paused (SIGSTOP)
/// while the client writes, so no forwarded reply comes back and the contact's
/// output buffer for the client stays empty; then it resumes. The contact must
/// still stop reading the client once a high-water mark of replies is pending.
///
/// Today: the contact reads and dispatches every request (replies queued behind
/// an unanswered forward, and forwards in flight, are invisible to the reactor's
/// backpressure), then buffers every reply once the owner resumes: with 20,000
/// GETs of 16 KiB values its RSS grows by about 300 MiB. Without the pause the
/// same happens on a smaller scale (22-85 MiB in runs of 100,000 GETs).
#[test]
fn a_never_reading_client_of_forwarded_keys_costs_bounded_memory() {
    let c = Cluster::start(2);
    let addrs: Vec<String> = c.nodes.iter().map(|p| p.addr.clone()).collect();
    let a = common::node_id_of(&addrs[0]);
    common::node_id_of(&addrs[1]);
    // 64 keys with 16 KiB values: about half live on each node.
    let value: Vec<u8> = (0..16_384u32).map(|i| (i % 253) as u8).collect();
    let mut w = Wire::connect(&addrs[0]);
    for i in 0..64 {
        w.send(&frame(
            PUT,
            0,
            0,
            &kv(format!("big-{i:02}").as_bytes(), &value),
        ));
        w.expect(&frame(OK, 0, a, b""));
    }
    let rss_before = c.nodes[0].rss_kib();
    // One unit is 64 GETs, one per key.
    let mut one = Vec::new();
    for i in 0..64 {
        one.extend(frame(GET, 0, 0, format!("big-{i:02}").as_bytes()));
    }
    let per = one.len() / 64;
    signal(c.nodes[1].pid(), "STOP");
    let (mut s, req, off) = pipeline_without_reading(&addrs[0], &one, 20_000 / 64);
    signal(c.nodes[1].pid(), "CONT");
    std::thread::sleep(Duration::from_millis(1000));
    let rss_stalled = c.nodes[0].rss_kib();
    eprintln!(
        "never-reading client of 2 nodes wrote {} whole GETs; contact RSS {rss_before} -> \
         {rss_stalled} KiB",
        off / per
    );
    // Another client is served meanwhile.
    let mut other = Wire::connect(&addrs[0]);
    other.send(&frame(GET, 0, 0, b"big-07"));
    other.expect(&frame(VALUE, 0, a, &value));
    assert!(
        rss_stalled < rss_before + 32 * 1024,
        "contact RSS grew from {rss_before} to {rss_stalled} KiB while a client did not read"
    );
    // Every reply, in order, once it reads; then the rest of a cut request.
    let whole = off / per;
    let want = frame(VALUE, 0, a, &value);
    let mut r = std::io::BufReader::with_capacity(1 << 20, s.try_clone().unwrap());
    let mut got = vec![0u8; want.len()];
    let deadline = Instant::now() + Duration::from_secs(40);
    for i in 0..whole {
        r.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("reply {i} of {whole}: {e}"));
        assert!(got == want, "reply {i} of {whole} differs: {}", show(&got));
        assert!(
            Instant::now() < deadline,
            "only {i} of {whole} replies in time"
        );
    }
    if off % per != 0 {
        s.write_all(&req[off..whole * per + per]).unwrap();
        r.read_exact(&mut got).unwrap();
        assert!(got == want, "the completed request's reply: {}", show(&got));
    }
}

/// Writes `req` without reading, non-blocking, until all is written or the socket
/// makes no progress for 500 ms (10 s at most); returns the bytes written.
fn write_until_stuck(s: &TcpStream, req: &[u8]) -> usize {
    s.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let mut last_progress = Instant::now();
    let mut off = 0;
    let mut w = s;
    while off < req.len()
        && last_progress.elapsed() < Duration::from_millis(500)
        && start.elapsed() < Duration::from_secs(10)
    {
        match w.write(&req[off..]) {
            Ok(k) => {
                off += k;
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("pipelining write failed: {e}"),
        }
    }
    off
}
