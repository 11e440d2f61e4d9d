//! The batch ops MGET and MSET against real processes: a result per key in
//! order, binary keys and values, whole-batch refusals (a bad payload, too many
//! keys) that apply nothing and keep the connection, a key whose only replica is
//! down failing alone while the others succeed, and `gtstore mget` / `mset` on
//! the command line and in the shell.

mod common;

use common::{kill, node_id_of, Cluster, TIMEOUT};
use gtstore::client::manager_call;
use gtstore::protocol::batch::{self, MAX_KEYS};
use gtstore::protocol::{op, Error, ErrorCode};
use gtstore::ring::{hash64, Ring};
use std::process::Output;

/// One copy per key, so a key whose node is down cannot be served at all.
const SINGLE: &[&str] = common::SINGLE_COPY;

/// Runs `gtstore --manager M ARGS` with `input` on stdin and no node cache.
fn run(manager: &str, args: &[&str], input: &[u8]) -> Output {
    let cache = std::env::temp_dir().join(format!("gtstore-batch-{}", std::process::id()));
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let out = common::run_gtstore(manager, &cache, &args, input);
    let _ = std::fs::remove_dir_all(&cache);
    out
}

#[test]
fn a_batch_gets_a_result_per_key_in_order() {
    let c = Cluster::start(1);
    let mut client = c.node_client(0);
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..100)
        .map(|i| (format!("k{i}").into_bytes(), format!("v{i}").into_bytes()))
        .chain([(b"bin \x00\xff\n".to_vec(), b"\x00 v \r\n".to_vec())])
        .collect();
    let done = client.mset(&pairs).unwrap();
    assert_eq!(done.len(), 101);
    assert!(done.iter().all(Result::is_ok), "{done:?}");
    let mut keys: Vec<Vec<u8>> = pairs.iter().map(|(k, _)| k.clone()).collect();
    keys.insert(50, b"missing".to_vec());
    let got = client.mget(&keys).unwrap();
    assert_eq!(got.len(), 102);
    for (k, r) in keys.iter().zip(&got) {
        let want = pairs.iter().find(|(pk, _)| pk == k).map(|(_, v)| &v[..]);
        assert_eq!(r.as_ref().unwrap().as_deref(), want, "{k:?}");
    }
    // Single-key reads see the batch's writes.
    assert_eq!(client.get(b"k7").unwrap().as_deref(), Some(&b"v7"[..]));
}

#[test]
fn the_protocol_page_s_example_bytes() {
    let c = Cluster::start(1);
    let mut w = common::Wire::connect(&c.nodes[0].addr);
    w.send(b"11 0 0 4\n1 a1");
    w.expect(b"21 0 1 0\n");
    // Pipelined: MGET, MSET, then a PING whose reply comes after both.
    w.send(b"35 0 0 6\n1 a1 b36 0 0 11\n1 a1 21 c0 10 9 0 1\nx");
    w.expect(b"22 0 1 11\n22 1 123 0 ");
    w.expect(b"22 0 1 10\n21 0 21 0 ");
    w.expect(b"20 9 1 1\nx");
}

#[test]
fn a_bad_or_oversized_batch_is_refused_whole_and_the_connection_stays() {
    let c = Cluster::start(1);
    let mut conn = c.raw(0);
    let expect_err = |conn: &mut gtstore::client::Connection, o: u8, payload: &[u8]| {
        let e = conn.call(o, 3, &[payload]).unwrap_err();
        match e {
            gtstore::client::ClientError::Server(e) => e,
            other => panic!("{other:?}"),
        }
    };
    // The last pair's key is empty: nothing of the batch is written.
    let e = expect_err(&mut conn, op::MSET, b"1 a1 x0 1 y");
    assert_eq!(e.code, ErrorCode::BadKey, "{e}");
    let e = expect_err(&mut conn, op::MGET, b"");
    assert_eq!(e.code, ErrorCode::BadKey, "{e}");
    let e = expect_err(&mut conn, op::MGET, b"5 ab");
    assert_eq!(e.code, ErrorCode::BadKey, "{e}");
    let many: Vec<(String, &str)> = (0..=MAX_KEYS).map(|i| (format!("m{i}"), "v")).collect();
    let e = expect_err(&mut conn, op::MSET, &batch::encode_pairs(&many));
    assert_eq!(e.code, ErrorCode::Limit, "{e}");
    let pong = conn.call(op::PING, 4, &[b"still here"]).unwrap();
    assert_eq!(&pong.payload[..], b"still here");
    let mut client = c.node_client(0);
    let probe = [b"a".to_vec(), b"m0".to_vec(), b"m10000".to_vec()];
    let got = client.mget(&probe).unwrap();
    assert!(got.iter().all(|r| matches!(r, Ok(None))), "{got:?}");
    // Exactly MAX_KEYS is fine.
    let done = client.mset(&many[..MAX_KEYS]).unwrap();
    assert!(done.iter().all(Result::is_ok));
}

#[test]
fn a_key_whose_replica_is_down_fails_alone() {
    let c = Cluster::start_full(3, SINGLE, &[]);
    let mut client = c.node_client(0);
    let keys: Vec<Vec<u8>> = (0..60).map(|i| format!("p{i}").into_bytes()).collect();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = keys.iter().map(|k| (k.clone(), k.clone())).collect();
    assert!(client.mset(&pairs).unwrap().iter().all(Result::is_ok));
    let text = manager_call(&c.manager.addr, op::RING, TIMEOUT).unwrap();
    let ring = Ring::decode(&text).unwrap();
    let dead = node_id_of(&c.nodes[2].addr);
    let on_dead = |k: &[u8]| ring.owner_of_hash(hash64(k)) == Some(dead);
    assert!(keys.iter().any(|k| on_dead(k)) && !keys.iter().all(|k| on_dead(k)));
    kill(c.nodes[2].pid(), "KILL");
    c.wait_state(2, "down");

    let got = client.mget(&keys).unwrap();
    for (k, r) in keys.iter().zip(&got) {
        match r {
            Err(e) if on_dead(k) => assert_eq!(e.code, ErrorCode::Unavailable, "{e}"),
            Ok(Some(v)) if !on_dead(k) => assert_eq!(v, &k[..]),
            other => panic!("key {k:?} (on the dead node: {}): {other:?}", on_dead(k)),
        }
    }
    let pairs: Vec<(Vec<u8>, &[u8])> = keys.iter().map(|k| (k.clone(), &b"new"[..])).collect();
    let done = client.mset(&pairs).unwrap();
    for (k, r) in keys.iter().zip(&done) {
        let failed = r.as_ref().err().map(|e: &Error| e.code);
        let want = on_dead(k).then_some(ErrorCode::Unavailable);
        assert_eq!(failed, want, "{k:?}");
    }
    let alive: Vec<Vec<u8>> = keys.iter().filter(|k| !on_dead(k)).cloned().collect();
    let got = client.mget(&alive).unwrap();
    assert!(got
        .iter()
        .all(|r| r.as_ref().unwrap().as_deref() == Some(&b"new"[..])));

    // The command line: a line per key, the failed ones saying why, exit 2.
    let dead_key = keys.iter().find(|k| on_dead(k)).unwrap();
    let live_key = &alive[0];
    let (d, l) = (
        String::from_utf8(dead_key.clone()).unwrap(),
        String::from_utf8(live_key.clone()).unwrap(),
    );
    // A key nobody wrote, on a live node (on the dead one it would fail too).
    let nope = (0..)
        .map(|i| format!("nope{i}"))
        .find(|k| !on_dead(k.as_bytes()))
        .unwrap();
    let node = &c.nodes[0].addr;
    let out = run(
        &c.manager.addr,
        &["--node", node, "mget", &l, &d, &nope],
        b"",
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("\"{l}\" \"new\""));
    assert!(
        lines[1].starts_with(&format!("\"{d}\" (error) UNAVAILABLE")),
        "{text}"
    );
    assert_eq!(lines[2], format!("\"{nope}\" (nil)"));
    assert_eq!(out.status.code(), Some(2), "{text}");
    let out = run(&c.manager.addr, &["--node", node, "mset", &l, "cli"], b"");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("\"{l}\" OK\n")
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn the_cli_and_the_shell_speak_mget_and_mset() {
    let c = Cluster::start(1);
    let m = &c.manager.addr;
    let out = run(m, &["mset", "a", "1", "b c", "-"], b"");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "\"a\" OK\n\"b c\" OK\n"
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(m, &["mget", "a", "b c", "zz"], b"");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "\"a\" \"1\"\n\"b c\" \"-\"\n\"zz\" (nil)\n"
    );
    assert_eq!(out.status.code(), Some(1), "a key was missing");
    let out = run(m, &["mset", "odd"], b"");
    assert_eq!(out.status.code(), Some(2));
    let out = run(m, &[], b"mset x \"1 2\" y \"\"\nmget x y w\nmset x\n");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"x\" OK\n\"y\" OK\n\"x\" \"1 2\"\n\"y\" \"\"\n\"w\" (nil)\n"),
        "{text}"
    );
    assert!(
        text.contains("usage: mset KEY VALUE [KEY VALUE ...]"),
        "{text}"
    );
    for cmd in ["mget", "mset"] {
        let out = run(m, &[cmd, "--help"], b"");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("in one request"), "{help}");
    }
}
