//! Safety at the edges, with the real binaries: a node outside the ring serves no
//! key, and a failed write says honestly whether it may have been applied
//! (`ERR UNKNOWN`) or was applied nowhere (`ERR UNAVAILABLE`).

mod common;

use common::{kill, Cluster, Proc, Wire, TIMEOUT};
use gtstore::client::{Client, ClientError};
use gtstore::protocol::ErrorCode;
use std::process::Command;
use std::time::{Duration, Instant};

const GTSTORE: &str = env!("CARGO_BIN_EXE_gtstore");

/// A port on 127.0.0.1 that nothing listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `gtstore --node ADDR ARGS...`: its exit status and stderr.
fn cli(node: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(GTSTORE)
        .args(["--node", node, "--timeout", "20"])
        .args(args)
        .output()
        .expect("run gtstore");
    let code = out.status.code().expect("exited");
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The error a write through `addr` got.
fn put_error(addr: &str, key: &[u8], value: &[u8]) -> gtstore::protocol::Error {
    let mut c = Client::connect_node(addr, TIMEOUT).expect("connect");
    match c.put(key, value) {
        Err(ClientError::Server(e)) => e,
        other => panic!("expected an error from {addr}, got {other:?}"),
    }
}

/// Polls `f` every 50 ms until it returns `Some`, for up to `secs` seconds.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn nodes_started_before_the_manager_refuse_writes_then_serve_with_n_copies() {
    let port = free_port();
    let manager_addr = format!("127.0.0.1:{port}");
    let nodes: Vec<Proc> = (0..3)
        .map(|_| {
            Proc::start(
                env!("CARGO_BIN_EXE_gtstore-storage"),
                &[
                    "--port",
                    "0",
                    "--resp-port",
                    "0",
                    "--manager",
                    &manager_addr,
                ],
            )
        })
        .collect();
    let refusal =
        format!("not yet a member of a cluster: waiting for the manager at {manager_addr}");
    for node in &nodes {
        // Native: PUT, CREATE and INCR are refused, and so is a read.
        let e = put_error(&node.addr, b"early", b"v");
        assert_eq!(
            (e.code, e.message.as_ref()),
            (ErrorCode::Unavailable, refusal.as_str())
        );
        let mut c = Client::connect_node(&node.addr, TIMEOUT).unwrap();
        let e = c.create(b"early", b"v").unwrap_err().to_string();
        assert!(e.contains(&refusal), "{e}");
        let e = c.incr(b"count", 1).unwrap_err().to_string();
        assert!(e.contains(&refusal), "{e}");
        let e = c.get(b"early").unwrap_err().to_string();
        assert!(e.contains(&refusal), "{e}");
        assert_eq!(&c.ping(b"up").unwrap()[..], b"up", "PING is still served");
        // RESP: the same refusal.
        let mut w = Wire::connect(&node.resp_addr());
        w.send(b"*3\r\n$3\r\nSET\r\n$5\r\nearly\r\n$1\r\nv\r\n");
        w.expect(format!("-ERR UNAVAILABLE {refusal}\r\n").as_bytes());
        // The CLI: an error (applied nowhere), exit status 2.
        let (code, err) = cli(&node.addr, &["put", "early", "v"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("not yet a member"), "{err}");
    }

    // The manager comes up: the nodes join and serve, each key on N = 3 nodes.
    let manager = Proc::start(
        env!("CARGO_BIN_EXE_gtstore-manager"),
        &["--port", &port.to_string(), "--recovery-ms", "0"],
    );
    let c = Cluster { manager, nodes };
    c.wait_live(3);
    let mut client = wait_for(20, "a client", || {
        Client::connect_aware(&c.manager.addr, TIMEOUT).ok()
    });
    for i in 0..20 {
        let key = format!("k{i}");
        wait_for(20, "a write to be served", || {
            client.put(key.as_bytes(), b"v").ok()
        });
    }
    for i in 0..3 {
        wait_for(20, "every node to hold every key", || {
            (c.keys_of(i) == 20).then_some(())
        });
    }
    // Each node answers for itself too: its own copy of a key, read with --node.
    for node in &c.nodes {
        let mut n = Client::connect_node(&node.addr, TIMEOUT).unwrap();
        assert_eq!(n.get(b"k7").unwrap().as_deref(), Some(&b"v"[..]));
    }
    assert_eq!(
        client.get(b"early").unwrap(),
        None,
        "no early write survived"
    );
}

#[test]
fn a_write_with_two_of_three_replicas_killed_is_unavailable_and_applied_nowhere() {
    let mut c = Cluster::start(3);
    let survivor = c.nodes[0].addr.clone();
    for i in [1, 2] {
        kill(c.nodes[i].pid(), "KILL");
        let _ = c.nodes[i].child.wait();
    }
    // Once the survivor's links to them have broken, it refuses writes before
    // storing them: too few replicas are reachable for W = 2.
    let e = wait_for(20, "the survivor to refuse", || {
        let e = put_error(&survivor, b"probe", b"p");
        (e.code == ErrorCode::Unavailable).then_some(e)
    });
    assert!(e.message.contains("too few"), "{e}");
    let e = put_error(&survivor, b"x", b"y");
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
    let (code, err) = cli(&survivor, &["put", "x2", "y"]);
    assert_eq!(code, 2, "{err}");
    // The nodes come back: x was applied nowhere, so nobody has it.
    for i in [1, 2] {
        c.restart_node(i, &[]);
    }
    c.wait_live(3);
    let mut client = Client::connect_aware(&c.manager.addr, TIMEOUT).unwrap();
    for key in [&b"x"[..], b"x2"] {
        let got = wait_for(20, "a read", || client.get(key).ok());
        assert_eq!(got, None, "a write answered UNAVAILABLE took effect");
    }
}

#[test]
fn a_write_with_two_of_three_replicas_paused_is_unknown() {
    let c = Cluster::start_full(3, &["--down-after", "60000"], &[]);
    let survivor = c.nodes[0].addr.clone();
    for i in [1, 2] {
        kill(c.nodes[i].pid(), "STOP");
    }
    // The links to the paused nodes stay up: the write is stored by its lead
    // (the survivor) or forwarded to a paused lead, then times out. It may have
    // been applied: UNKNOWN, exit status 3.
    let (code, err) = cli(&survivor, &["put", "x", "y"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("outcome unknown (UNKNOWN)"), "{err}");
    for i in [1, 2] {
        kill(c.nodes[i].pid(), "CONT");
    }
    // Either value is honest now; a read must still be served and give one.
    let mut client = Client::connect_aware(&c.manager.addr, TIMEOUT).unwrap();
    let got = wait_for(20, "a read", || client.get(b"x").ok());
    assert!(matches!(got.as_deref(), None | Some(b"y")), "{got:?}");
}
