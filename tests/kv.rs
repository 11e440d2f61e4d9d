//! Every key-value and manager request of the wire contract (docs/protocol.md),
//! driven against the real binaries with exact bytes on a raw TCP socket.

mod common;

use common::{frame, kv, show, Cluster, Wire};
use std::time::{Duration, Instant};

// Ops and replies, spelled out here as the contract numbers them.
const PING: u8 = 10;
const PUT: u8 = 11;
const DELETE: u8 = 12;
const GET: u8 = 13;
const EXISTS: u8 = 14;
const CREATE: u8 = 15;
const UPDATE: u8 = 16;
const INCR: u8 = 17;
const PONG: u8 = 20;
const OK: u8 = 21;
const VALUE: u8 = 22;
const NOT_FOUND: u8 = 23;
const CONFLICT: u8 = 24;
const HELLO: u8 = 30;
const RING: u8 = 31;
const STATUS: u8 = 32;
const WELCOME: u8 = 40;
const RING_REPLY: u8 = 41;
const STATUS_REPLY: u8 = 42;

/// A one-node cluster, a raw connection to the node and the node's id.
fn setup() -> (Cluster, Wire, u32) {
    let c = Cluster::start(1);
    let id = common::node_id_of(&c.nodes[0].addr);
    let w = Wire::connect(&c.nodes[0].addr);
    (c, w, id)
}

/// Sends one request and expects exactly one reply, byte for byte.
fn exchange(w: &mut Wire, request: &[u8], reply: &[u8]) {
    w.send(request);
    w.expect(reply);
}

#[test]
fn ping_echoes_payload_client_id_and_reports_own_node_id() {
    let (_c, mut w, n) = setup();
    exchange(
        &mut w,
        b"10 0 0 5\nhello",
        format!("20 0 {n} 5\nhello").as_bytes(),
    );
    exchange(&mut w, b"10 0 0 0\n", format!("20 0 {n} 0\n").as_bytes());
    // The client id is echoed; the request's NODEID is advisory, the reply carries
    // the sender's own id.
    exchange(
        &mut w,
        b"10 42 99 3\nabc",
        format!("20 42 {n} 3\nabc").as_bytes(),
    );
    exchange(
        &mut w,
        b"10 18446744073709551615 4294967295 1\nz",
        format!("20 18446744073709551615 {n} 1\nz").as_bytes(),
    );
    // Binary payload, including LF and what looks like a header.
    let all: Vec<u8> = (0..=255u8).chain(*b"\n13 0 0 5\n").collect();
    exchange(&mut w, &frame(PING, 7, 0, &all), &frame(PONG, 7, n, &all));
}

#[test]
fn put_then_get_as_in_the_contract_example() {
    let (c, mut w, n) = setup();
    exchange(
        &mut w,
        b"11 0 0 12\n5 hellothere",
        format!("21 0 {n} 0\n").as_bytes(),
    );
    exchange(
        &mut w,
        b"13 0 0 5\nhello",
        format!("22 0 {n} 5\nthere").as_bytes(),
    );
    // Overwrite, with a client id that must be echoed.
    exchange(
        &mut w,
        b"11 9 0 12\n5 helloworld",
        format!("21 9 {n} 0\n").as_bytes(),
    );
    exchange(
        &mut w,
        b"13 9 0 5\nhello",
        format!("22 9 {n} 5\nworld").as_bytes(),
    );
    // Missing key.
    exchange(
        &mut w,
        b"13 0 0 4\nnope",
        format!("23 0 {n} 0\n").as_bytes(),
    );
    // A second connection sees the same data.
    common::assert_serves(&c.nodes[0].addr, n, b"hello", b"world");
}

#[test]
fn empty_value_is_a_value() {
    let (_c, mut w, n) = setup();
    exchange(&mut w, b"11 0 0 3\n1 k", format!("21 0 {n} 0\n").as_bytes());
    exchange(&mut w, b"13 0 0 1\nk", format!("22 0 {n} 0\n").as_bytes());
    exchange(&mut w, b"14 0 0 1\nk", format!("21 0 {n} 0\n").as_bytes());
}

#[test]
fn binary_keys_and_values_with_every_byte() {
    let (_c, mut w, n) = setup();
    let key: Vec<u8> = (0..=255u8).collect();
    let value: Vec<u8> = (0..=255u8).rev().collect();
    exchange(
        &mut w,
        &frame(PUT, 0, 0, &kv(&key, &value)),
        &frame(OK, 0, n, b""),
    );
    exchange(&mut w, &frame(GET, 0, 0, &key), &frame(VALUE, 0, n, &value));

    // LF and spaces inside keys, and keys that differ only by them.
    let keys: [&[u8]; 6] = [b"a b", b"a\nb", b"a  b", b" ", b"\n", b"11 0 0 3\n1 x"];
    for (i, k) in keys.iter().enumerate() {
        let v = format!("value {i}\n\r\0");
        exchange(
            &mut w,
            &frame(PUT, 0, 0, &kv(k, v.as_bytes())),
            &frame(OK, 0, n, b""),
        );
    }
    for (i, k) in keys.iter().enumerate() {
        let v = format!("value {i}\n\r\0");
        exchange(
            &mut w,
            &frame(GET, 0, 0, k),
            &frame(VALUE, 0, n, v.as_bytes()),
        );
    }
    // A value that is a whole frame is still just bytes.
    let v = frame(PUT, 0, 0, &kv(b"x", b"y"));
    exchange(
        &mut w,
        &frame(PUT, 0, 0, &kv(b"nested", &v)),
        &frame(OK, 0, n, b""),
    );
    exchange(
        &mut w,
        &frame(GET, 0, 0, b"nested"),
        &frame(VALUE, 0, n, &v),
    );
    exchange(
        &mut w,
        &frame(EXISTS, 0, 0, b"x"),
        &frame(NOT_FOUND, 0, n, b""),
    );
}

#[test]
fn delete_then_not_found() {
    let (_c, mut w, n) = setup();
    exchange(
        &mut w,
        b"11 0 0 4\n1 kv",
        format!("21 0 {n} 0\n").as_bytes(),
    );
    exchange(&mut w, b"12 0 0 1\nk", format!("21 0 {n} 0\n").as_bytes());
    exchange(&mut w, b"12 0 0 1\nk", format!("23 0 {n} 0\n").as_bytes());
    exchange(&mut w, b"13 0 0 1\nk", format!("23 0 {n} 0\n").as_bytes());
    exchange(
        &mut w,
        b"12 0 0 5\nnever",
        format!("23 0 {n} 0\n").as_bytes(),
    );
    // The key can come back after a delete.
    exchange(
        &mut w,
        b"11 0 0 4\n1 k2",
        format!("21 0 {n} 0\n").as_bytes(),
    );
    exchange(&mut w, b"13 0 0 1\nk", format!("22 0 {n} 1\n2").as_bytes());
}

#[test]
fn exists_ok_or_not_found() {
    let (_c, mut w, n) = setup();
    exchange(&mut w, b"14 0 0 1\ne", format!("23 0 {n} 0\n").as_bytes());
    exchange(
        &mut w,
        b"11 0 0 4\n1 ex",
        format!("21 0 {n} 0\n").as_bytes(),
    );
    exchange(&mut w, b"14 0 0 1\ne", format!("21 0 {n} 0\n").as_bytes());
    exchange(&mut w, b"12 0 0 1\ne", format!("21 0 {n} 0\n").as_bytes());
    exchange(&mut w, b"14 0 0 1\ne", format!("23 0 {n} 0\n").as_bytes());
}

#[test]
fn create_ok_then_conflict_and_value_kept() {
    let (_c, mut w, n) = setup();
    exchange(
        &mut w,
        b"15 0 0 7\n3 keyv1",
        format!("21 0 {n} 0\n").as_bytes(),
    );
    exchange(
        &mut w,
        b"15 0 0 7\n3 keyv2",
        format!("24 0 {n} 0\n").as_bytes(),
    );
    exchange(
        &mut w,
        b"13 0 0 3\nkey",
        format!("22 0 {n} 2\nv1").as_bytes(),
    );
    // CREATE with an empty value, then conflict on it too.
    exchange(&mut w, b"15 0 0 3\n1 e", format!("21 0 {n} 0\n").as_bytes());
    exchange(
        &mut w,
        b"15 0 0 4\n1 ex",
        format!("24 0 {n} 0\n").as_bytes(),
    );
    exchange(&mut w, b"13 0 0 1\ne", format!("22 0 {n} 0\n").as_bytes());
}

#[test]
fn update_not_found_then_ok() {
    let (_c, mut w, n) = setup();
    exchange(
        &mut w,
        b"16 0 0 4\n1 uv",
        format!("23 0 {n} 0\n").as_bytes(),
    );
    // A failed UPDATE does not create the key.
    exchange(&mut w, b"14 0 0 1\nu", format!("23 0 {n} 0\n").as_bytes());
    exchange(
        &mut w,
        b"11 0 0 5\n1 uv1",
        format!("21 0 {n} 0\n").as_bytes(),
    );
    exchange(
        &mut w,
        b"16 0 0 5\n1 uv2",
        format!("21 0 {n} 0\n").as_bytes(),
    );
    exchange(&mut w, b"13 0 0 1\nu", format!("22 0 {n} 2\nv2").as_bytes());
    exchange(&mut w, b"16 0 0 3\n1 u", format!("21 0 {n} 0\n").as_bytes());
    exchange(&mut w, b"13 0 0 1\nu", format!("22 0 {n} 0\n").as_bytes());
}

#[test]
fn incr_counts_and_refuses_non_numbers() {
    let (_c, mut w, n) = setup();
    let value = |s: &str| frame(VALUE, 0, n, s.as_bytes());
    // A missing key counts as 0; the default delta is 1.
    exchange(&mut w, b"17 0 0 3\n1 c", &value("1"));
    exchange(&mut w, b"17 0 0 3\n1 c", &value("2"));
    // Delta without a space, negative.
    exchange(&mut w, b"17 0 0 5\n1 c-5", &value("-3"));
    // Delta with a space before it.
    exchange(&mut w, b"17 0 0 6\n1 c 10", &value("7"));
    exchange(&mut w, b"17 0 0 6\n1 c -9", &value("-2"));
    // Stored as decimal text, readable by GET.
    exchange(&mut w, b"13 0 0 1\nc", &value("-2"));
    // A multi-byte key and a big delta.
    exchange(
        &mut w,
        b"17 0 0 29\n7 counter 9223372036854775806",
        &value("9223372036854775806"),
    );
    exchange(
        &mut w,
        b"17 0 0 9\n7 counter",
        &value("9223372036854775807"),
    );
    // Overflow at i64::MAX: NOTINT, value unchanged.
    w.send(b"17 0 0 9\n7 counter");
    w.expect_err(0, n, "NOTINT");
    exchange(&mut w, b"13 0 0 7\ncounter", &value("9223372036854775807"));
    // Overflow at i64::MIN.
    exchange(
        &mut w,
        b"11 0 0 23\n1 m-9223372036854775808",
        &frame(OK, 0, n, b""),
    );
    w.send(b"17 0 0 5\n1 m-1");
    w.expect_err(0, n, "NOTINT");
    exchange(&mut w, b"13 0 0 1\nm", &value("-9223372036854775808"));
    exchange(&mut w, b"17 0 0 4\n1 m1", &value("-9223372036854775807"));
    // A non-number value: NOTINT, value unchanged; the connection stays usable.
    for bad in [&b"abc"[..], b"12abc", b"", b"1.5", b" 1", b"1 "] {
        exchange(
            &mut w,
            &frame(PUT, 0, 0, &kv(b"s", bad)),
            &frame(OK, 0, n, b""),
        );
        w.send(&frame(INCR, 0, 0, b"1 s"));
        w.expect_err(0, n, "NOTINT");
        exchange(&mut w, &frame(GET, 0, 0, b"s"), &frame(VALUE, 0, n, bad));
    }
    // Binary key.
    exchange(
        &mut w,
        &frame(INCR, 0, 0, &kv(b"\n \x00", b" 5")),
        &value("5"),
    );
    exchange(&mut w, &frame(GET, 0, 0, b"\n \x00"), &value("5"));
    w.ping_ok(n);
}

#[test]
fn key_length_limits_and_empty_keys() {
    let (_c, mut w, n) = setup();
    let max = vec![b'k'; 65_535];
    let over = vec![b'k'; 65_536];
    exchange(
        &mut w,
        &frame(PUT, 0, 0, &kv(&max, b"big key")),
        &frame(OK, 0, n, b""),
    );
    exchange(
        &mut w,
        &frame(GET, 0, 0, &max),
        &frame(VALUE, 0, n, b"big key"),
    );
    exchange(&mut w, &frame(EXISTS, 0, 0, &max), &frame(OK, 0, n, b""));
    exchange(
        &mut w,
        &frame(INCR, 0, 0, &kv(&max[1..], b"")),
        &frame(VALUE, 0, n, b"1"),
    );
    // One byte more: BADKEY for every op, and the connection stays open.
    for op in [GET, DELETE, EXISTS] {
        w.send(&frame(op, 0, 0, &over));
        w.expect_err(0, n, "BADKEY");
    }
    for op in [PUT, CREATE, UPDATE, INCR] {
        w.send(&frame(op, 0, 0, &kv(&over, b"v")));
        w.expect_err(0, n, "BADKEY");
    }
    // Empty keys.
    for op in [GET, DELETE, EXISTS] {
        w.send(&frame(op, 0, 0, b""));
        w.expect_err(0, n, "BADKEY");
    }
    for op in [PUT, CREATE, UPDATE, INCR] {
        w.send(&frame(op, 0, 0, b"0 value"));
        w.expect_err(0, n, "BADKEY");
    }
    // The long key is still there, nothing else was stored.
    exchange(
        &mut w,
        &frame(GET, 0, 0, &max),
        &frame(VALUE, 0, n, b"big key"),
    );
    exchange(
        &mut w,
        &frame(GET, 0, 0, &over[..65_534]),
        &frame(VALUE, 0, n, b"1"),
    );
    exchange(
        &mut w,
        &frame(GET, 0, 0, b"0"),
        &frame(NOT_FOUND, 0, n, b""),
    );
    w.ping_ok(n);
}

#[test]
fn malformed_kv_payloads_get_badkey_and_the_connection_stays_open() {
    let (c, mut w, n) = setup();
    exchange(
        &mut w,
        &frame(PUT, 0, 0, &kv(b"keep", b"me")),
        &frame(OK, 0, n, b""),
    );
    let bad: [&[u8]; 7] = [
        b"5hello",       // no space
        b"9 short",      // KLEN larger than the payload
        b"6 hello",      // one byte short
        b"x hello",      // KLEN not a number
        b" 1 x",         // empty KLEN
        b"-1 x",         // signed KLEN
        b"99999999 abc", // KLEN out of range
    ];
    for op in [PUT, CREATE, UPDATE, INCR] {
        for p in bad {
            w.send(&frame(op, 3, 0, p));
            let f = w.frame();
            assert_eq!(
                (f.op, f.code().as_str(), f.client_id),
                (29, "BADKEY", 3),
                "op {op} payload {}: got {} {}",
                show(p),
                show(&f.header),
                show(&f.payload)
            );
        }
    }
    // Nothing was stored by any of them.
    for k in [&b"hello"[..], b"short", b"hell", b"x"] {
        exchange(
            &mut w,
            &frame(EXISTS, 0, 0, k),
            &frame(NOT_FOUND, 0, n, b""),
        );
    }
    w.ping_ok(n);
    common::assert_serves(&c.nodes[0].addr, n, b"keep", b"me");
}

#[test]
fn pipelined_requests_in_one_write_are_answered_in_order() {
    let (_c, mut w, n) = setup();
    let mut req = Vec::new();
    let mut want = Vec::new();
    let mut count = 0;
    for i in 0..300u32 {
        let key = format!("key-{i}");
        let value = format!("value-{i}-{}", "x".repeat((i % 17) as usize));
        req.extend(frame(GET, i as u64, 0, key.as_bytes()));
        want.extend(frame(NOT_FOUND, i as u64, n, b""));
        req.extend(frame(
            PUT,
            i as u64,
            0,
            &kv(key.as_bytes(), value.as_bytes()),
        ));
        want.extend(frame(OK, i as u64, n, b""));
        req.extend(frame(GET, i as u64, 0, key.as_bytes()));
        want.extend(frame(VALUE, i as u64, n, value.as_bytes()));
        req.extend(frame(INCR, i as u64, 0, b"3 ctr"));
        want.extend(frame(VALUE, i as u64, n, (i + 1).to_string().as_bytes()));
        req.extend(frame(CREATE, i as u64, 0, &kv(key.as_bytes(), b"again")));
        want.extend(frame(CONFLICT, i as u64, n, b""));
        req.extend(frame(PING, i as u64, 0, &i.to_be_bytes()));
        want.extend(frame(PONG, i as u64, n, &i.to_be_bytes()));
        count += 6;
    }
    for i in (0..300u32).step_by(2) {
        req.extend(frame(DELETE, 0, 0, format!("key-{i}").as_bytes()));
        want.extend(frame(OK, 0, n, b""));
        req.extend(frame(EXISTS, 0, 0, format!("key-{i}").as_bytes()));
        want.extend(frame(NOT_FOUND, 0, n, b""));
        count += 2;
    }
    eprintln!(
        "{count} pipelined requests, {} bytes in one write",
        req.len()
    );
    w.send(&req);
    w.expect(&want);
    // Nothing more than the replies: the next reply is the PING's.
    w.ping_ok(n);
}

#[test]
fn cr_before_lf_is_accepted() {
    let (_c, mut w, n) = setup();
    exchange(
        &mut w,
        b"11 0 0 12\r\n5 hellothere",
        format!("21 0 {n} 0\n").as_bytes(),
    );
    exchange(
        &mut w,
        b"13 0 0 5\r\nhello",
        format!("22 0 {n} 5\nthere").as_bytes(),
    );
    exchange(&mut w, b"10 0 0 0\r\n", format!("20 0 {n} 0\n").as_bytes());
    // Mixed line endings in one pipelined write.
    exchange(
        &mut w,
        b"10 1 0 1\r\na10 2 0 1\nb10 3 0 1\r\nc",
        format!("20 1 {n} 1\na20 2 {n} 1\nb20 3 {n} 1\nc").as_bytes(),
    );
}

/// HELLO on a fresh manager connection; returns (client id, node id, address).
fn hello(manager: &str) -> (u64, u32, String) {
    let mut m = Wire::connect(manager);
    m.send(b"30 0 0 6\ntester");
    let f = m.frame();
    assert_eq!(
        (f.op, f.client_id, f.node_id),
        (WELCOME, 0, 0),
        "WELCOME header: {}",
        show(&f.header)
    );
    let text = String::from_utf8(f.payload).expect("WELCOME is text");
    let parts: Vec<&str> = text.split(' ').collect();
    assert_eq!(parts.len(), 3, "CLIENTID SP NODEID SP HOST:PORT: {text:?}");
    (
        parts[0].parse().expect("CLIENTID"),
        parts[1].parse().expect("NODEID"),
        parts[2].to_string(),
    )
}

#[test]
fn manager_hello_gives_fresh_ids_and_round_robin_live_contacts() {
    let c = Cluster::start(2);
    let addrs: Vec<String> = c.nodes.iter().map(|p| p.addr.clone()).collect();
    let ids: Vec<u32> = addrs.iter().map(|a| common::node_id_of(a)).collect();
    assert_ne!(ids[0], ids[1]);

    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(hello(&c.manager.addr));
    }
    for pair in seen.windows(2) {
        assert!(pair[1].0 > pair[0].0, "client ids increase: {seen:?}");
        assert_ne!(pair[1].2, pair[0].2, "round-robin over two nodes: {seen:?}");
    }
    assert_eq!(seen[0].2, seen[2].2, "round-robin: {seen:?}");
    for (_, node_id, addr) in &seen {
        let i = addrs
            .iter()
            .position(|a| a == addr)
            .unwrap_or_else(|| panic!("{addr} is not one of the nodes {addrs:?}"));
        assert_eq!(
            *node_id, ids[i],
            "WELCOME names the node at {addr} by its id"
        );
        // The contact is live: it answers, with that id.
        let mut w = Wire::connect(addr);
        w.ping_ok(*node_id);
    }
    // Several HELLOs pipelined on one connection: each a fresh id, in order.
    let mut m = Wire::connect(&c.manager.addr);
    m.send(b"30 5 0 0\n30 6 0 0\n30 7 0 0\n");
    let mut last = seen.last().unwrap().0;
    for cid in 5..=7u64 {
        let f = m.frame();
        assert_eq!((f.op, f.client_id, f.node_id), (WELCOME, cid, 0));
        let id: u64 = String::from_utf8(f.payload)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(id > last);
        last = id;
    }
}

#[test]
fn manager_ring_and_status() {
    let (c, mut w, n) = setup();
    let mut m = Wire::connect(&c.manager.addr);
    m.send(&frame(RING, 0, 0, b""));
    let f = m.frame();
    assert_eq!(
        (f.op, f.client_id, f.node_id),
        (RING_REPLY, 0, 0),
        "{}",
        show(&f.header)
    );
    assert!(
        f.payload.starts_with(b"epoch "),
        "RING: {}",
        show(&f.payload)
    );
    let ring = String::from_utf8_lossy(&f.payload).into_owned();
    assert!(
        ring.contains(&c.nodes[0].addr),
        "RING names the node: {ring}"
    );

    for i in 0..25u32 {
        exchange(
            &mut w,
            &frame(PUT, 0, 0, &kv(format!("s{i}").as_bytes(), b"v")),
            &frame(OK, 0, n, b""),
        );
    }
    // Key counts arrive with heartbeats (every 500 ms): poll for a few seconds.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        m.send(&frame(STATUS, 11, 0, b""));
        let f = m.frame();
        assert_eq!((f.op, f.client_id, f.node_id), (STATUS_REPLY, 11, 0));
        let json: serde_json::Value = serde_json::from_slice(&f.payload)
            .unwrap_or_else(|e| panic!("STATUS is not JSON ({e}): {}", show(&f.payload)));
        let nodes = json["nodes"].as_array().expect("STATUS lists nodes");
        let me = nodes
            .iter()
            .find(|x| x["addr"] == c.nodes[0].addr.as_str())
            .unwrap_or_else(|| panic!("STATUS lists our node: {json}"));
        assert_eq!(me["id"], n, "{json}");
        if me["keys"] == 25 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "key count never reached 25: {json}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The same manager connection still serves other requests after all this.
    m.send(&frame(HELLO, 0, 0, b""));
    assert_eq!(m.frame().op, WELCOME);
}

#[test]
fn netcat_style_request_then_half_close_gets_the_reply_then_eof() {
    // printf '11 0 0 12\n5 hellothere' | nc -N 127.0.0.1 PORT
    let (c, _w, n) = setup();
    let mut w = Wire::connect(&c.nodes[0].addr);
    w.send(b"11 0 0 12\n5 hellothere");
    w.stream.shutdown(std::net::Shutdown::Write).unwrap();
    w.expect(format!("21 0 {n} 0\n").as_bytes());
    w.expect_eof();
    let mut w = Wire::connect(&c.nodes[0].addr);
    w.send(b"13 0 0 5\nhello13 0 0 5\nhello");
    w.stream.shutdown(std::net::Shutdown::Write).unwrap();
    w.expect(format!("22 0 {n} 5\nthere22 0 {n} 5\nthere").as_bytes());
    w.expect_eof();
}

#[test]
fn any_node_answers_for_every_key_in_request_order() {
    let c = Cluster::start(2);
    let addrs: Vec<String> = c.nodes.iter().map(|p| p.addr.clone()).collect();
    let ids: Vec<u32> = addrs.iter().map(|a| common::node_id_of(a)).collect();
    let (a, b) = (ids[0], ids[1]);
    // Enough keys that both nodes own some: written through node A, pipelined.
    let keys: Vec<String> = (0..200).map(|i| format!("spread-{i}")).collect();
    let mut wa = Wire::connect(&addrs[0]);
    let mut req = Vec::new();
    let mut want = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        req.extend(frame(PUT, i as u64, 0, &kv(k.as_bytes(), k.as_bytes())));
        want.extend(frame(OK, i as u64, a, b""));
        req.extend(frame(
            INCR,
            i as u64,
            0,
            &kv(format!("n-{k}").as_bytes(), b""),
        ));
        want.extend(frame(VALUE, i as u64, a, b"1"));
    }
    wa.send(&req);
    wa.expect(&want);
    // Read back through node B, pipelined too: every reply from B, in order.
    let mut wb = Wire::connect(&addrs[1]);
    let mut req = Vec::new();
    let mut want = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        req.extend(frame(GET, i as u64, 0, k.as_bytes()));
        want.extend(frame(VALUE, i as u64, b, k.as_bytes()));
        req.extend(frame(CREATE, 0, 0, &kv(k.as_bytes(), b"x")));
        want.extend(frame(CONFLICT, 0, b, b""));
        req.extend(frame(INCR, 0, 0, &kv(format!("n-{k}").as_bytes(), b"-3")));
        want.extend(frame(VALUE, 0, b, b"-2"));
        req.extend(frame(PING, 0, 0, k.as_bytes()));
        want.extend(frame(PONG, 0, b, k.as_bytes()));
    }
    wb.send(&req);
    wb.expect(&want);
    // Deletes through B are seen through A.
    for k in keys.iter().take(40) {
        exchange(
            &mut wb,
            &frame(DELETE, 0, 0, k.as_bytes()),
            &frame(OK, 0, b, b""),
        );
        exchange(
            &mut wa,
            &frame(EXISTS, 0, 0, k.as_bytes()),
            &frame(NOT_FOUND, 0, a, b""),
        );
    }
    // Errors from the key's owner come back with the client's id, from the contact.
    for i in 0..20u64 {
        let k = format!("text-{i}");
        exchange(
            &mut wa,
            &frame(PUT, 0, 0, &kv(k.as_bytes(), b"abc")),
            &frame(OK, 0, a, b""),
        );
    }
    for i in 0..20u64 {
        let k = format!("text-{i}");
        wb.send(&frame(INCR, 1000 + i, 0, &kv(k.as_bytes(), b"")));
        wb.expect_err(1000 + i, b, "NOTINT");
        exchange(
            &mut wb,
            &frame(GET, 0, 0, k.as_bytes()),
            &frame(VALUE, 0, b, b"abc"),
        );
    }
    // A netcat user on either node gets a reply for any key before the close.
    for (i, k) in keys.iter().enumerate().skip(40).take(10) {
        let (addr, id) = (&addrs[i % 2], ids[i % 2]);
        let mut w = Wire::connect(addr);
        w.send(&frame(GET, 0, 0, k.as_bytes()));
        w.stream.shutdown(std::net::Shutdown::Write).unwrap();
        w.expect(&frame(VALUE, 0, id, k.as_bytes()));
        w.expect_eof();
    }
    // Both nodes hold keys (the contact forwarded, it did not keep everything).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = c.status();
        let counts: Vec<u64> = s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["keys"].as_u64().unwrap_or(0))
            .collect();
        if counts.iter().all(|&k| k > 0) && counts.iter().sum::<u64>() >= 380 {
            break;
        }
        assert!(Instant::now() < deadline, "key counts per node: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
