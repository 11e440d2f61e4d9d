//! The member handshake with the real binaries (docs/protocol.md): a node proves
//! the cluster secret without sending it, to the manager and to its peers, and
//! checks that they know it too; outsiders (the default string, a wrong secret, the
//! old plaintext `NODE_JOIN`) cannot join, replicate or migrate.

mod common;

use common::{frame, member_join, show, Cluster, Proc, SecretFile, Wire};
use gtstore::protocol::auth;
use gtstore::protocol::op;
use std::net::TcpListener;
use std::time::{Duration, Instant};

const STORAGE: &str = env!("CARGO_BIN_EXE_gtstore-storage");

/// Waits (up to 20 s) for a connection on `listener`.
fn accept(listener: &TcpListener) -> Wire {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return Wire::accepted(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "nobody connected");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Plays the accepting side of the handshake on `w` under `secret`: reads the
/// `MEMBER_HELLO`, answers, and returns (node nonce, our nonce); every byte read
/// is appended to `capture`.
fn answer_hello(w: &mut Wire, secret: &[u8], capture: &mut Vec<u8>) -> (auth::Nonce, auth::Nonce) {
    let hello = w.frame();
    capture.extend_from_slice(&hello.header);
    capture.extend_from_slice(&hello.payload);
    assert_eq!(hello.op, op::MEMBER_HELLO, "{}", show(&hello.payload));
    let client: auth::Nonce = auth::from_hex(&hello.payload).expect("a hex nonce");
    let server = auth::os_random::<{ auth::NONCE_LEN }>().unwrap();
    let proof = auth::proof(secret, &server, &client, auth::ROLE_ACCEPT);
    let text = format!("{} {}", auth::to_hex(&server), auth::to_hex(&proof));
    w.send(&frame(op::MEMBER_CHALLENGE, 0, 0, text.as_bytes()));
    (client, server)
}

/// Reads the node's `NODE_JOIN` and checks its proof for `addr`.
fn expect_join(
    w: &mut Wire,
    secret: &[u8],
    nonces: (auth::Nonce, auth::Nonce),
    addr: &str,
    capture: &mut Vec<u8>,
) {
    let join = w.frame();
    capture.extend_from_slice(&join.header);
    capture.extend_from_slice(&join.payload);
    assert_eq!(join.op, op::NODE_JOIN, "{}", show(&join.payload));
    let proof = &join.payload[..64];
    let proof: [u8; 32] = auth::from_hex(proof).expect("a hex proof");
    let role = auth::member_role(addr);
    assert!(auth::verify(secret, &nonces.1, &nonces.0, &role, &proof));
}

#[test]
fn the_secret_never_leaves_a_node() {
    let secret = "the-members-only-secret-0123456789";
    let file = SecretFile::new("never", secret);
    let manager = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let (m_addr, p_addr) = (manager.local_addr().unwrap(), peer.local_addr().unwrap());
    let node = Proc::start(
        STORAGE,
        &[
            "--port",
            "0",
            "--manager",
            &m_addr.to_string(),
            "--secret-file",
            file.path(),
        ],
    );
    let mut capture = Vec::new();
    // The manager link: hello, our challenge, its proof; then a ring with a peer.
    let mut m = accept(&manager);
    let nonces = answer_hello(&mut m, secret.as_bytes(), &mut capture);
    expect_join(&mut m, secret.as_bytes(), nonces, &node.addr, &mut capture);
    let ring = format!(
        "1\nepoch 1\nreplicas 2 1 1\nnode 1 {} up 10\nnode 2 {p_addr} up 20\n",
        node.addr
    );
    m.send(&frame(op::JOINED, 0, 0, ring.as_bytes()));
    // The mesh link to the (fake) peer: the same handshake.
    let mut p = accept(&peer);
    let nonces = answer_hello(&mut p, secret.as_bytes(), &mut capture);
    expect_join(&mut p, secret.as_bytes(), nonces, &node.addr, &mut capture);
    assert!(capture.len() > 100, "{}", show(&capture));
    for needle in [
        secret.as_bytes().to_vec(),
        auth::to_hex(secret.as_bytes()).into_bytes(),
    ] {
        assert!(
            !capture.windows(needle.len()).any(|w| w == &needle[..]),
            "the secret went out: {}",
            show(&capture)
        );
    }
}

#[test]
fn a_node_does_not_register_with_an_impostor_manager() {
    let file = SecretFile::new("impostor", "the-real-secret");
    let manager = TcpListener::bind("127.0.0.1:0").unwrap();
    let m_addr = manager.local_addr().unwrap().to_string();
    let mut node = Proc::start(
        STORAGE,
        &[
            "--port",
            "0",
            "--manager",
            &m_addr,
            "--secret-file",
            file.path(),
        ],
    );
    let mut m = accept(&manager);
    // The impostor knows only the documented default.
    answer_hello(&mut m, gtstore::DEFAULT_SECRET.as_bytes(), &mut Vec::new());
    m.expect_eof();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the node still runs");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(2), "{:?}", node.log());
}

/// A `MIGRATE` payload of one record `key` = `value` at `version`.
fn migrate(key: &[u8], version: u64, value: &[u8]) -> Vec<u8> {
    let mut p = (key.len() as u32).to_be_bytes().to_vec();
    p.extend_from_slice(key);
    p.extend_from_slice(&version.to_be_bytes());
    p.push(1);
    p.extend_from_slice(&(value.len() as u32).to_be_bytes());
    p.extend_from_slice(value);
    p
}

#[test]
fn outsiders_cannot_join_or_migrate() {
    let secret = "only-members-know-this";
    let file = SecretFile::new("outsiders", secret);
    let c = Cluster::start_full(
        1,
        &["--secret-file", file.path()],
        &["--secret-file", file.path()],
    );
    let node = &c.nodes[0].addr;
    let n = common::node_id_of(node);
    let outsider = "127.0.0.1:1";
    for addr in [node, &c.manager.addr] {
        let id = if addr == node { n } else { 0 };
        // The old plaintext NODE_JOIN, even with the right secret.
        let mut w = Wire::connect(addr);
        w.send(&frame(
            op::NODE_JOIN,
            0,
            0,
            format!("{secret} {outsider} 8").as_bytes(),
        ));
        w.expect_err(0, id, "AUTH");
        w.expect_eof();
        // The handshake with the default string, or a wrong secret.
        for wrong in [gtstore::DEFAULT_SECRET, "a-guess"] {
            let mut w = Wire::connect(addr);
            let reply = member_join(&mut w, outsider, wrong.as_bytes());
            assert_eq!(reply.code(), "AUTH", "{}", show(&reply.payload));
            w.expect_eof();
        }
    }
    // Nothing registered, and an unproven connection cannot migrate.
    assert_eq!(c.status()["nodes"].as_array().unwrap().len(), 1);
    let evil = migrate(b"evil", 1 << 62, b"pwned");
    let mut w = Wire::connect(node);
    w.send(&frame(op::MIGRATE, 0, 0, &evil));
    w.expect_err(0, n, "BADOP");
    // A member that knows the secret can (the check above can fail).
    let mut w = Wire::connect(node);
    let reply = member_join(&mut w, outsider, secret.as_bytes());
    assert_eq!(reply.op, op::OK, "{}", show(&reply.payload));
    w.send(&frame(op::MIGRATE, 0, 0, &migrate(b"member", 7, b"ok")));
    assert_eq!(w.frame().op, op::OK);
}
