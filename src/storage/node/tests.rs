//! Unit tests of the node state machine, driven step by step.

use super::*;
use crate::protocol::cluster::Fence;

fn cfg() -> NodeConfig {
    NodeConfig::new("127.0.0.1:7001".into(), "127.0.0.1:7000".parse().unwrap())
}

/// Steps `node` with `input`, ends the loop turn (one input per turn) and
/// returns what it asked for. A `JOINED` from the manager is followed by the
/// `LEASE` the manager sends after it, one that outlasts any test (the lease's
/// own tests step with [`step_only`]).
pub(super) fn step(node: &mut StorageNode, now: Millis, input: Input) -> Vec<Output> {
    let joined = match &input {
        Input::Frame { conn, frame } if frame.op == op::JOINED => Some(*conn),
        _ => None,
    };
    let mut out = step_only(node, now, input);
    if let Some(conn) = joined {
        let frame = Message::Lease {
            sent: now,
            lease_ms: 1 << 40,
        }
        .encode();
        out.extend(step_only(node, now, Input::Frame { conn, frame }));
    }
    out
}

/// Steps `node` with `input` alone, ends the loop turn and returns what it
/// asked for.
pub(super) fn step_only(node: &mut StorageNode, now: Millis, input: Input) -> Vec<Output> {
    let mut out = Vec::new();
    node.step(now, input, &mut out);
    node.turn_end(now, &mut out);
    out
}

/// Steps `node` with `frame` arriving on `conn` at `now`.
pub(super) fn frame_in(
    node: &mut StorageNode,
    now: Millis,
    conn: ConnId,
    frame: Frame,
) -> Vec<Output> {
    step(node, now, Input::Frame { conn, frame })
}

/// A started node whose manager link (returned) is up and past the member
/// handshake, not yet registered.
pub(super) fn with_manager() -> (StorageNode, ConnId) {
    let mut n = StorageNode::new(cfg());
    let link = ConnId::new(1, 1);
    step(&mut n, 0, Input::Timer { id: TIMER_INIT });
    up(&mut n, 1, link, TAG_MANAGER);
    (n, link)
}

/// The other side's `MEMBER_CHALLENGE` for the `MEMBER_HELLO` in `out`, proven
/// under `secret`.
fn challenge_for(out: &[Output], secret: &str) -> Frame {
    use crate::protocol::auth;
    let hello = out
        .iter()
        .find_map(|o| match o {
            Output::Send { frame, .. } if frame.op == op::MEMBER_HELLO => Some(frame),
            _ => None,
        })
        .expect("a MEMBER_HELLO");
    let Ok(Message::MemberHello { nonce: client }) = Message::decode(hello) else {
        panic!("malformed hello {hello:?}")
    };
    let server = [9u8; auth::NONCE_LEN];
    let proof = auth::proof(secret.as_bytes(), &server, &client, auth::ROLE_ACCEPT);
    Message::MemberChallenge {
        nonce: server,
        proof,
    }
    .encode()
}

/// Link `conn` (connect tag `tag`) comes up and the other side answers the
/// member handshake; returns what the node sent then (its `NODE_JOIN`, ...).
pub(super) fn up(n: &mut StorageNode, now: Millis, conn: ConnId, tag: u64) -> Vec<Output> {
    let out = step(n, now, Input::Connected { conn, tag });
    let frame = challenge_for(&out, crate::DEFAULT_SECRET);
    step(n, now, Input::Frame { conn, frame })
}

pub(super) fn sent(out: &[Output]) -> Vec<(ConnId, u8, Vec<u8>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { conn, frame } => Some((*conn, frame.op, frame.payload.to_vec())),
            _ => None,
        })
        .collect()
}

#[test]
fn registers_with_backoff_and_serves_no_key_meanwhile() {
    let mut n = StorageNode::new(cfg());
    let out = step(&mut n, 0, Input::Timer { id: TIMER_INIT });
    assert!(matches!(
        out[0],
        Output::Connect {
            tag: TAG_MANAGER,
            ..
        }
    ));
    // The manager is not up: the retry is scheduled with a doubling delay.
    let out = step(&mut n, 5, Input::ConnectFailed { tag: TAG_MANAGER });
    assert!(matches!(
        out[0],
        Output::Timer {
            at: 105,
            id: TIMER_MANAGER
        }
    ));
    let out = step(&mut n, 105, Input::Timer { id: TIMER_MANAGER });
    assert!(matches!(out[0], Output::Connect { .. }));
    let out = step(&mut n, 110, Input::ConnectFailed { tag: TAG_MANAGER });
    assert!(matches!(out[0], Output::Timer { at: 310, .. }));

    // Before the node has an id and a ring, no key is served (a write would be
    // acknowledged outside the ring), but PING is.
    let client = ConnId::new(5, 1);
    let refused =
        "UNAVAILABLE not yet a member of a cluster: waiting for the manager at 127.0.0.1:7000";
    for (i, frame) in [
        Frame::new(op::PUT, 9, 0, &b"1 kv"[..]),
        Frame::new(op::CREATE, 9, 0, &b"1 kv"[..]),
        Frame::new(op::INCR, 9, 0, &b"1 n 1"[..]),
        Frame::new(op::GET, 9, 0, &b"k"[..]),
        Frame::new(op::SCAN, 9, 0, &b"0 0 10 "[..]),
    ]
    .into_iter()
    .enumerate()
    {
        let out = step(
            &mut n,
            120 + i as Millis,
            Input::Frame {
                conn: client,
                frame,
            },
        );
        assert_eq!(
            sent(&out),
            vec![(client, op::ERR, refused.as_bytes().to_vec())]
        );
    }
    let ping = Frame::new(op::PING, 9, 0, &b"hi"[..]);
    let out = step(
        &mut n,
        130,
        Input::Frame {
            conn: client,
            frame: ping,
        },
    );
    assert_eq!(sent(&out), vec![(client, op::PONG, b"hi".to_vec())]);
    assert_eq!(n.engine().len(), 0, "nothing was stored");

    // The manager answers; the node joins and keeps its data under its tokens.
    let link = ConnId::new(1, 2);
    let out = up(&mut n, 310, link, TAG_MANAGER);
    let hello = sent(&out);
    assert_eq!(
        (hello.len(), hello[0].0, hello[0].1),
        (1, link, op::NODE_JOIN)
    );
    let text = String::from_utf8_lossy(&hello[0].2);
    // Its clock at sending (310), for the lease that follows JOINED.
    assert!(text.ends_with(" 127.0.0.1:7001 64 310"), "{text}");
    assert!(!text.contains(crate::DEFAULT_SECRET), "{text}");
    let ring = "3\nepoch 1\nreplicas 1 1 1\nnode 3 127.0.0.1:7001 up 10,20,30\n";
    step(
        &mut n,
        311,
        Input::Frame {
            conn: link,
            frame: Frame::new(op::JOINED, 0, 0, ring),
        },
    );
    assert_eq!(n.node_id(), 3);
    assert_eq!(n.engine().tokens().collect::<Vec<_>>(), vec![10, 20, 30]);
    // A member now: the write is served.
    let put = Frame::new(op::PUT, 9, 0, &b"1 kv"[..]);
    let out = step(
        &mut n,
        312,
        Input::Frame {
            conn: client,
            frame: put,
        },
    );
    assert_eq!(sent(&out), vec![(client, op::OK, vec![])]);
    let out = step(
        &mut n,
        312,
        Input::Frame {
            conn: client,
            frame: Frame::new(op::GET, 9, 0, &b"k"[..]),
        },
    );
    match &out[0] {
        Output::Send { frame, .. } => {
            assert_eq!(
                (frame.op, frame.client_id, frame.node_id),
                (op::VALUE, 9, 3)
            );
            assert_eq!(&frame.payload[..], b"v");
        }
        o => panic!("unexpected {o:?}"),
    }
    // Losing the link schedules a reconnect.
    let out = step(&mut n, 400, Input::Closed { conn: link });
    assert!(matches!(
        out[0],
        Output::Timer {
            at: 500,
            id: TIMER_MANAGER
        }
    ));
}

/// A cluster member's connection to `n`, proven with NODE_JOIN.
pub(super) fn member(n: &mut StorageNode, idx: u32) -> ConnId {
    let c = ConnId::new(idx, 1);
    let join = peer_join(n, c, "127.0.0.1:7009", crate::DEFAULT_SECRET);
    step(
        n,
        0,
        Input::Frame {
            conn: c,
            frame: join,
        },
    );
    c
}

/// Plays a peer opening `conn` to `n` as `addr` under `secret`: its
/// `MEMBER_HELLO` is answered; returns the `NODE_JOIN` (not yet sent). The
/// node's own proof is checked on the way.
fn peer_join(n: &mut StorageNode, conn: ConnId, addr: &str, secret: &str) -> Frame {
    use crate::protocol::auth;
    let client = [5u8; auth::NONCE_LEN];
    let hello = Message::MemberHello { nonce: client }.encode();
    let out = step(n, 0, Input::Frame { conn, frame: hello });
    let s = sent(&out);
    assert_eq!(s[0].1, op::MEMBER_CHALLENGE, "{s:?}");
    let f = Frame::new(s[0].1, 0, 0, s[0].2.clone());
    let Ok(Message::MemberChallenge { nonce, proof }) = Message::decode(&f) else {
        panic!("malformed challenge")
    };
    let theirs = crate::DEFAULT_SECRET.as_bytes();
    assert!(auth::verify(
        theirs,
        &nonce,
        &client,
        auth::ROLE_ACCEPT,
        &proof
    ));
    let role = auth::member_role(addr);
    let mine = auth::proof(secret.as_bytes(), &nonce, &client, &role);
    let text = format!("{} {addr} 8", auth::to_hex(&mine));
    Frame::new(op::NODE_JOIN, 0, 0, text)
}

#[test]
fn a_node_not_yet_registered_does_not_serve_keys_peers_route_to_it() {
    let mut n = StorageNode::new(cfg());
    let peer = member(&mut n, 8);
    let get = Frame::new(op::GET, 5, 1, &b"k"[..]);
    let out = step(
        &mut n,
        1,
        Input::Frame {
            conn: peer,
            frame: get,
        },
    );
    let s = sent(&out);
    assert_eq!((s.len(), s[0].1), (1, op::ERR), "{out:?}");
    assert!(s[0].2.starts_with(b"UNAVAILABLE"), "{s:?}");
    // Nor is a plain client (see registers_with_backoff_...).
    let client = ConnId::new(9, 1);
    let get = Frame::new(op::GET, 5, 0, &b"k"[..]);
    let out = step(
        &mut n,
        2,
        Input::Frame {
            conn: client,
            frame: get,
        },
    );
    let s = sent(&out);
    assert_eq!((s.len(), s[0].1), (1, op::ERR), "{out:?}");
    assert!(s[0].2.starts_with(b"UNAVAILABLE not yet a member"), "{s:?}");
}

/// A lead's `REPL_READ` of `key` with `n`'s own fence (a lead on its ring).
pub(super) fn repl_read(n: &StorageNode, key: &str) -> Bytes {
    let fence = n.fence_of(hash64(key.as_bytes()));
    let key = Bytes::from(key.to_owned());
    Message::ReplRead { fence, key }.encode().payload
}

#[test]
fn replica_requests_for_keys_this_node_does_not_keep_are_refused() {
    let (mut n, link) = with_manager();
    let q = u64::MAX / 4;
    let text = format!(
        "epoch 7\nreplicas 3 2 2\nnode 3 127.0.0.1:7001 up {}\nnode 4 127.0.0.1:7002 up {}\n\
         node 5 127.0.0.1:7003 up {}\nnode 6 127.0.0.1:7004 up {}\n",
        q,
        2 * q,
        3 * q,
        u64::MAX
    );
    let ring = Ring::decode(text.as_bytes()).unwrap();
    let joined = Frame::new(op::JOINED, 0, 0, format!("3\n{text}"));
    step(
        &mut n,
        2,
        Input::Frame {
            conn: link,
            frame: joined,
        },
    );
    // Its first ring lists it serving, so it is catching up; that refusal is
    // not what this test is about.
    n.repair.catch_up = None;
    let lists = |k: &String| ring.preference_list(hash64(k.as_bytes()), 3);
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    let kept = keys.iter().find(|k| lists(k).contains(&3)).unwrap();
    let other = keys.iter().find(|k| !lists(k).contains(&3)).unwrap();
    let peer = member(&mut n, 8);
    let ask = |n: &mut StorageNode, o: u8, payload: Bytes| {
        let f = Frame::new(o, 11, 1, payload);
        let out = step(
            n,
            3,
            Input::Frame {
                conn: peer,
                frame: f,
            },
        );
        sent(&out)
            .into_iter()
            .map(|s| (s.1, s.2))
            .collect::<Vec<_>>()
    };
    let write = |k: &String, fence| {
        let record = Record {
            key: Bytes::from(k.clone()),
            version: 9 << 16,
            value: Some(Bytes::from_static(b"v")),
        };
        let fence = Some(fence);
        let m = Message::Replicate {
            base: None,
            fence,
            record,
        };
        m.encode().payload
    };
    let current = |n: &StorageNode, k: &String| n.fence_of(hash64(k.as_bytes()));
    let payload = write(kept, current(&n, kept));
    assert_eq!(ask(&mut n, op::REPLICATE, payload), vec![(op::OK, vec![])]);
    let payload = repl_read(&n, kept);
    let got = ask(&mut n, op::REPL_READ, payload);
    assert_eq!(got[0].0, op::VALUE, "{got:?}");
    let refused = [
        (op::REPL_READ, repl_read(&n, other)),
        (op::REPLICATE, write(other, current(&n, other))),
    ];
    for (o, payload) in refused {
        let got = ask(&mut n, o, payload);
        assert_eq!(got.len(), 1);
        let refusal = Refusal::decode(&Frame::new(got[0].0, 0, 0, got[0].1.clone()));
        assert_eq!(refusal, Ok(Refusal::OffList { epoch: 7 }), "{got:?}");
    }
    assert_eq!(
        n.engine().entry(other.as_bytes()),
        None,
        "refused, not stored"
    );
    // The fence: a lead on an older ring (epoch 6) that lists the key
    // otherwise is refused, one that lists it alike is served, and so is one
    // whose ring is as new whatever its lists.
    let fence = |epoch, mark| Fence { epoch, mark };
    let alike = current(&n, kept).mark;
    let key = Bytes::from(kept.clone());
    let read = |f| {
        (Message::ReplRead {
            fence: f,
            key: key.clone(),
        })
        .encode()
        .payload
    };
    let stale = [
        (op::REPL_READ, read(fence(6, alike ^ 1))),
        (op::REPLICATE, write(kept, fence(6, alike ^ 1))),
    ];
    for (o, payload) in stale {
        let got = ask(&mut n, o, payload);
        let refusal = Refusal::decode(&Frame::new(got[0].0, 0, 0, got[0].1.clone()));
        assert_eq!(refusal, Ok(Refusal::StaleRing { epoch: 7 }), "{got:?}");
    }
    for f in [fence(6, alike), fence(7, alike ^ 1)] {
        let got = ask(&mut n, op::REPL_READ, read(f));
        assert_eq!(got[0].0, op::VALUE, "{got:?}");
    }
}

#[test]
fn membership_ops_need_a_proof() {
    let mut n = StorageNode::new(cfg());
    let c = ConnId::new(7, 1);
    let out = step(
        &mut n,
        0,
        Input::Frame {
            conn: c,
            frame: Frame::new(op::HEARTBEAT, 0, 0, "1"),
        },
    );
    assert_eq!(out.len(), 1, "BADOP keeps the connection open");
    assert!(sent(&out)[0].2.starts_with(b"BADOP"));
    let out = step(
        &mut n,
        0,
        Input::Frame {
            conn: c,
            frame: Frame::new(op::NODE_JOIN, 0, 0, "nope 1:2 3"),
        },
    );
    assert!(sent(&out)[0].2.starts_with(b"AUTH"));
    assert!(matches!(out[1], Output::Close { conn } if conn == c));
    // The old plaintext format with the right secret, a proof with no handshake,
    // a wrong proof, a replay: ERR AUTH and a close, and the link stays untrusted.
    let refused = |n: &mut StorageNode, conn, frame| {
        let out = step(n, 0, Input::Frame { conn, frame });
        assert!(sent(&out)[0].2.starts_with(b"AUTH"), "{out:?}");
        assert!(matches!(out[1], Output::Close { conn: c } if c == conn));
        assert!(!n.conns.members.contains(&conn));
    };
    let plain = |text: &str| Frame::new(op::NODE_JOIN, 0, 0, text.to_string());
    let d = ConnId::new(8, 1);
    peer_join(&mut n, d, "1:2", crate::DEFAULT_SECRET);
    refused(&mut n, d, plain("gtstore 1:2 3"));
    let e = ConnId::new(9, 1);
    let elsewhere = peer_join(&mut n, d, "1:2", crate::DEFAULT_SECRET);
    refused(&mut n, e, elsewhere);
    let f = ConnId::new(10, 1);
    let wrong = peer_join(&mut n, f, "1:2", "not-the-secret");
    refused(&mut n, f, wrong);
    let g = ConnId::new(11, 1);
    let right = peer_join(&mut n, g, "1:2", crate::DEFAULT_SECRET);
    let out = step(
        &mut n,
        0,
        Input::Frame {
            conn: g,
            frame: right.clone(),
        },
    );
    assert_eq!(sent(&out), vec![(g, op::OK, vec![])]);
    assert!(n.conns.members.contains(&g));
    let h = ConnId::new(12, 1);
    peer_join(&mut n, h, "1:2", crate::DEFAULT_SECRET);
    refused(&mut n, h, right);
}

#[test]
fn a_request_routed_by_an_old_ring_gets_stale() {
    let (mut n, link) = with_manager();
    // Node 3 owns everything up to hash 2^63, node 4 the rest.
    let ring = format!(
        "3\nepoch 7\nreplicas 1 1 1\nnode 3 127.0.0.1:7001 up {}\nnode 4 127.0.0.1:7002 up {}\n",
        1u64 << 63,
        u64::MAX
    );
    step(
        &mut n,
        2,
        Input::Frame {
            conn: link,
            frame: Frame::new(op::JOINED, 0, 0, ring),
        },
    );
    let (mine, theirs) = {
        let mut mine = None;
        let mut theirs = None;
        for i in 0..100u32 {
            let k = format!("k{i}");
            if hash64(k.as_bytes()) <= 1u64 << 63 {
                mine.get_or_insert(k);
            } else {
                theirs.get_or_insert(k);
            }
        }
        (mine.unwrap(), theirs.unwrap())
    };
    let client = ConnId::new(5, 1);
    let ask = |n: &mut StorageNode, key: &str, node_id: u32| {
        let f = Frame::new(op::GET, 9, node_id, key.to_string());
        step(
            n,
            3,
            Input::Frame {
                conn: client,
                frame: f,
            },
        )
    };
    // Routed here for a key node 4 serves: STALE with our epoch.
    assert_eq!(
        sent(&ask(&mut n, &theirs, 3)),
        vec![(client, op::STALE, b"7".to_vec())]
    );
    // Routed here for our own key: served.
    assert_eq!(
        sent(&ask(&mut n, &mine, 3)),
        vec![(client, op::NOT_FOUND, vec![])]
    );
    // Not routed (NODEID 0) or routed elsewhere: forwarded, no STALE.
    for node_id in [0, 4] {
        let out = ask(&mut n, &theirs, node_id);
        assert!(sent(&out).iter().all(|s| s.1 != op::STALE), "{out:?}");
    }
}

/// Ring text for nodes 1-3 (N = 3, R = W = 2) with node `id`'s state set.
pub(super) fn three(epoch: u64, states: [&str; 3]) -> String {
    let mut text = format!("epoch {epoch}\nreplicas 3 2 2\n");
    for (i, state) in states.iter().enumerate() {
        let token = (i as u64 + 1) << 60;
        text.push_str(&format!(
            "node {} 127.0.0.1:700{} {state} {token}\n",
            i + 1,
            i + 1
        ));
    }
    text
}

#[test]
fn a_node_that_may_lack_writes_catches_up_before_it_answers_quorum_reads() {
    let (mut n, manager) = with_manager();
    let peer = ConnId::new(2, 1);
    let frame = |op, text: String| Input::Frame {
        conn: manager,
        frame: Frame::new(op, 0, 0, text),
    };
    // A fresh process whose first ring lists it serving: it may lack anything.
    let joined = format!("1\n{}", three(3, ["up", "up", "up"]));
    step(&mut n, 2, frame(op::JOINED, joined));
    let round = n
        .repair
        .catch_up
        .as_ref()
        .map(|c| c.round)
        .expect("catching up");
    assert_eq!(n.repair.catch_up.as_ref().unwrap().waiting, [2, 3].into());
    // Node 2 proves membership, then asks for a quorum read: refused.
    let hello = peer_join(&mut n, peer, "127.0.0.1:7002", crate::DEFAULT_SECRET);
    let from_peer = |op, payload: Bytes| Input::Frame {
        conn: peer,
        frame: Frame::new(op, 7, 1, payload),
    };
    step(
        &mut n,
        3,
        Input::Frame {
            conn: peer,
            frame: hello,
        },
    );
    let ask = repl_read(&n, "k");
    let read =
        |n: &mut StorageNode, now| sent(&step(n, now, from_peer(op::REPL_READ, ask.clone())));
    let out = read(&mut n, 4);
    assert_eq!(out.len(), 1);
    let refusal = Refusal::decode(&Frame::new(out[0].1, 0, 0, out[0].2.clone()));
    assert_eq!(refusal, Ok(Refusal::CatchingUp), "{out:?}");
    // Its heartbeat says so.
    let beat = sent(&step(
        &mut n,
        500,
        Input::Timer {
            id: TIMER_HEARTBEAT,
        },
    ));
    assert_eq!(
        beat,
        vec![(manager, op::HEARTBEAT, b"0 500 catching-up".to_vec())]
    );
    // A SYNC_DONE of another round counts for nothing; node 2's does.
    step(
        &mut n,
        5,
        from_peer(op::SYNC_DONE, format!("2 {}", round + 1).into()),
    );
    assert_eq!(n.repair.catch_up.as_ref().unwrap().waiting, [2, 3].into());
    step(
        &mut n,
        6,
        from_peer(op::SYNC_DONE, format!("2 {round}").into()),
    );
    assert_eq!(n.repair.catch_up.as_ref().unwrap().waiting, [3].into());
    // Node 3 goes down: nobody is left to wait for. It is asked once back.
    step(
        &mut n,
        7,
        frame(op::RING_UPDATE, three(4, ["up", "up", "down"])),
    );
    assert!(n.repair.catch_up.is_none());
    assert!(n.repair.unheard.contains_key(&3));
    // This process lost what it had acknowledged, and node 3 may hold a
    // write that only it and this node's lost copy had: still behind on the
    // keys it shares with node 3.
    assert_eq!(read(&mut n, 8)[0].1, op::REFUSED);
    step(
        &mut n,
        9,
        frame(op::RING_UPDATE, three(5, ["up", "up", "up"])),
    );
    // Node 3 is back and asked; it is waited for until it has pushed.
    let (_, asked) = n.repair.unheard[&3];
    assert_ne!(asked, 0);
    assert_eq!(read(&mut n, 9)[0].1, op::REFUSED);
    step(
        &mut n,
        9,
        from_peer(op::SYNC_DONE, format!("3 {asked}").into()),
    );
    assert!(n.repair.unheard.is_empty());
    assert_eq!(read(&mut n, 9)[0].1, op::NOT_FOUND);
    assert!(
        n.repair.catch_up.is_none(),
        "a peer coming back is no reason to catch up"
    );
    // A ring marks this node down, then up: it catches up again.
    step(
        &mut n,
        10,
        frame(op::RING_UPDATE, three(6, ["down", "up", "up"])),
    );
    assert!(n.repair.catch_up.is_none(), "it waits until it is back");
    step(
        &mut n,
        11,
        frame(op::RING_UPDATE, three(7, ["up", "up", "up"])),
    );
    assert!(n
        .repair
        .catch_up
        .as_ref()
        .is_some_and(|c| c.known.is_none()));
    assert_eq!(read(&mut n, 12)[0].1, op::REFUSED);
}

#[test]
fn a_node_given_new_ranges_is_behind_on_those_only() {
    let (mut n, manager) = with_manager();
    // Four nodes, N = 2: node 1 holds its own range and node 4's.
    let ring = |epoch, with_3: bool| {
        let mut text = format!("epoch {epoch}\nreplicas 2 1 2\n");
        for id in [1u64, 2, 3, 4].into_iter().filter(|&i| with_3 || i != 3) {
            text.push_str(&format!("node {id} 127.0.0.1:700{id} up {}\n", id << 60));
        }
        text
    };
    let frame = |op, text: String| Input::Frame {
        conn: manager,
        frame: Frame::new(op, 0, 0, text),
    };
    step(
        &mut n,
        2,
        frame(op::JOINED, format!("1\n{}", ring(3, true))),
    );
    // The restart's catch-up is not what this test is about.
    n.repair.catch_up = None;
    // Node 3 is dropped: node 1 is now on node 3's range too (hashes in
    // (2^61, 3 * 2^60]), and behind there only.
    step(&mut n, 3, frame(op::RING_UPDATE, ring(4, false)));
    assert!(n
        .repair
        .catch_up
        .as_ref()
        .is_some_and(|c| c.known.is_some()));
    assert!(n.behind(3 << 60));
    assert!(
        !n.behind(1 << 60),
        "it was a replica of its own range before"
    );
    assert!(!n.behind(4 << 60), "and of node 4's");
}

#[test]
fn a_registration_the_manager_turns_away_is_retried_with_backoff() {
    let mut n = StorageNode::new(cfg());
    step(&mut n, 0, Input::Timer { id: TIMER_INIT });
    let refused = Frame::new(
        op::ERR,
        0,
        0,
        "UNAVAILABLE the manager is recovering the membership; retry",
    );
    let mut at = 0;
    for (i, delay) in [200, 400, 800, 1_600, 2_000, 2_000].into_iter().enumerate() {
        let link = ConnId::new(1, i as u32 + 1);
        let out = up(&mut n, at, link, TAG_MANAGER);
        assert_eq!(sent(&out)[0].1, op::NODE_JOIN);
        let out = step(
            &mut n,
            at + 1,
            Input::Frame {
                conn: link,
                frame: refused.clone(),
            },
        );
        // The link is dropped and a retry is due later each time, never an exit.
        assert!(
            matches!(out[0], Output::Close { conn } if conn == link),
            "{out:?}"
        );
        let retry = at + 1 + delay;
        assert!(
            matches!(out[1], Output::Timer { at, id: TIMER_MANAGER } if at == retry),
            "{out:?}"
        );
        assert!(!out.iter().any(|o| matches!(o, Output::Stop)));
        assert!(step(&mut n, retry - 1, Input::Timer { id: TIMER_MANAGER }).is_empty());
        // The closed link reporting in late changes nothing.
        assert!(step(&mut n, retry - 1, Input::Closed { conn: link }).is_empty());
        let out = step(&mut n, retry, Input::Timer { id: TIMER_MANAGER });
        assert!(
            matches!(
                out[0],
                Output::Connect {
                    tag: TAG_MANAGER,
                    ..
                }
            ),
            "{out:?}"
        );
        at = retry + 1;
    }
    // Once registered, the count starts again.
    let link = ConnId::new(1, 99);
    up(&mut n, at, link, TAG_MANAGER);
    let joined = Frame::new(
        op::JOINED,
        0,
        0,
        "1\nepoch 1\nreplicas 1 1 1\nnode 1 127.0.0.1:7001 up 5\n",
    );
    step(
        &mut n,
        at,
        Input::Frame {
            conn: link,
            frame: joined,
        },
    );
    assert_eq!(n.node_id(), 1);
    assert_eq!(n.membership.join_refusals, 0);
}

#[test]
fn a_leaving_node_asks_again_after_a_reconnect_and_gives_up_on_a_lost_manager() {
    let mut n = StorageNode::new(cfg());
    step(&mut n, 0, Input::Timer { id: TIMER_INIT });
    let ring = "1\nepoch 1\nreplicas 3 2 2\nnode 1 127.0.0.1:7001 up 5\n";
    let register = |n: &mut StorageNode, now: Millis, link: ConnId| {
        up(n, now, link, TAG_MANAGER);
        let joined = Frame::new(op::JOINED, 0, 0, ring);
        step(
            n,
            now,
            Input::Frame {
                conn: link,
                frame: joined,
            },
        )
    };
    let link = ConnId::new(1, 1);
    register(&mut n, 1, link);
    let out = step(&mut n, 10, Input::Signal(Signal::Terminate));
    assert_eq!(sent(&out), vec![(link, op::LEAVE, vec![])]);
    // The link breaks before the answer, and comes back within the grace:
    // the node registers again and asks again; the old timer does nothing.
    step(&mut n, 20, Input::Closed { conn: link });
    let link = ConnId::new(1, 2);
    let out = register(&mut n, 500, link);
    assert!(sent(&out).contains(&(link, op::LEAVE, vec![])), "{out:?}");
    let ok = Frame::new(op::OK, 0, 0, Bytes::new());
    step(
        &mut n,
        501,
        Input::Frame {
            conn: link,
            frame: ok,
        },
    );
    assert!(step(
        &mut n,
        20 + LEAVE_ORPHAN_MS,
        Input::Timer { id: TIMER_ORPHAN }
    )
    .is_empty());
    // Lost again, for good this time: the node exits after the grace.
    let lost = 3 * LEAVE_ORPHAN_MS;
    let out = step(&mut n, lost, Input::Closed { conn: link });
    let at = lost + LEAVE_ORPHAN_MS;
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Timer { at: t, id: TIMER_ORPHAN } if *t == at)));
    assert!(step(&mut n, at - 1, Input::Timer { id: TIMER_ORPHAN }).is_empty());
    let out = step(&mut n, at, Input::Timer { id: TIMER_ORPHAN });
    assert!(matches!(out[..], [Output::Stop]), "{out:?}");
}

/// A leaving node that the ring lists `up` again (marked down and back, or
/// its leave called off as no other node was left) asks again; refused (it is
/// alone in the ring), it stops.
#[test]
fn a_leaving_node_listed_up_again_asks_again() {
    let mut n = StorageNode::new(cfg());
    step(&mut n, 0, Input::Timer { id: TIMER_INIT });
    let link = ConnId::new(1, 1);
    up(&mut n, 1, link, TAG_MANAGER);
    let from_manager = |n: &mut StorageNode, now: Millis, frame: Frame| {
        step(n, now, Input::Frame { conn: link, frame })
    };
    let ring = |epoch: u32, state: &str| {
        let text = format!("epoch {epoch}\nreplicas 1 1 1\nnode 1 127.0.0.1:7001 {state} 5\n");
        Frame::new(op::RING_UPDATE, 0, 0, text)
    };
    let joined = Frame::new(
        op::JOINED,
        0,
        0,
        "1\nepoch 1\nreplicas 1 1 1\nnode 1 127.0.0.1:7001 up 5\n",
    );
    from_manager(&mut n, 1, joined);
    let out = step(&mut n, 10, Input::Signal(Signal::Terminate));
    assert_eq!(sent(&out), vec![(link, op::LEAVE, vec![])]);
    // A ring sent before the LEAVE was taken asks nothing.
    let out = from_manager(&mut n, 11, ring(1, "up"));
    assert!(!sent(&out).iter().any(|s| s.1 == op::LEAVE), "{out:?}");
    from_manager(&mut n, 12, Frame::new(op::OK, 0, 0, Bytes::new()));
    let out = from_manager(&mut n, 13, ring(2, "leaving"));
    assert!(!sent(&out).iter().any(|s| s.1 == op::LEAVE), "{out:?}");
    // Marked down meanwhile, then back: up again, so it asks again.
    let out = from_manager(&mut n, 14, ring(3, "down"));
    assert!(!sent(&out).iter().any(|s| s.1 == op::LEAVE), "{out:?}");
    let out = from_manager(&mut n, 15, ring(4, "up"));
    assert!(sent(&out).contains(&(link, op::LEAVE, vec![])), "{out:?}");
    let refused = Frame::new(op::ERR, 0, 0, "UNAVAILABLE alone");
    let out = from_manager(&mut n, 16, refused);
    assert!(matches!(out[..], [Output::Stop]), "{out:?}");
}

/// Test-only counting of the allocations big enough to hold a value: each is a
/// copy of a value (or of a buffer holding one) made while serving a request.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        /// Allocations of at least this many bytes are counted (0: none).
        static MIN: Cell<usize> = const { Cell::new(0) };
        static BIG: Cell<u64> = const { Cell::new(0) };
    }

    fn note(size: usize) {
        let min = MIN.try_with(Cell::get).unwrap_or(0);
        if min > 0 && size >= min {
            let _ = BIG.try_with(|b| b.set(b.get() + 1));
        }
    }

    struct Counting;

    // SAFETY: every call is passed to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            System.alloc(layout)
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout)
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            System.realloc(ptr, layout, new_size)
        }
    }

    #[global_allocator]
    static ALLOC: Counting = Counting;

    /// Runs `f`, returning what it returned, the allocations of at least `min`
    /// bytes it made and the keys it hashed.
    pub fn count<T>(min: usize, f: impl FnOnce() -> T) -> (T, u64, u64) {
        let hashes = crate::ring::HASHES.with(Cell::get);
        BIG.with(|b| b.set(0));
        MIN.with(|m| m.set(min));
        let r = f();
        MIN.with(|m| m.set(0));
        let hashed = crate::ring::HASHES.with(Cell::get) - hashes;
        (r, BIG.with(Cell::get), hashed)
    }
}

/// Node 1 of a three-node ring (N = 3, R = W = 2), registered, caught up and
/// with its mesh links to nodes 2 and 3 up (returned), and a key it leads.
pub(super) fn lead_of_three() -> (StorageNode, [ConnId; 2], String) {
    let (mut n, manager) = with_manager();
    let joined = format!("1\n{}", three(3, ["up", "up", "up"]));
    let input = Input::Frame {
        conn: manager,
        frame: Frame::new(op::JOINED, 0, 0, joined),
    };
    step(&mut n, 2, input);
    n.end_catch_up();
    let links = [ConnId::new(12, 1), ConnId::new(13, 1)];
    for (i, &conn) in links.iter().enumerate() {
        let tag = mesh::PEER_TAG + 2 + i as u64;
        up(&mut n, 3, conn, tag);
    }
    let key = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| n.serving_pref.get(hash64(k.as_bytes())).first() == Some(&1))
        .expect("a key node 1 leads");
    (n, links, key)
}

/// The frames `out` sends on `conn`, with their tags.
pub(super) fn sent_on(out: &[Output], conn: ConnId) -> Vec<Frame> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { conn: c, frame } if *c == conn => Some(frame.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_replica_that_acknowledges_after_the_quorum_is_not_hinted() {
    let (mut n, links, key) = lead_of_three();
    let client = ConnId::new(30, 1);
    let put = Frame::new(op::PUT, 9, 0, format!("{} {key}v", key.len()));
    let out = step(
        &mut n,
        10,
        Input::Frame {
            conn: client,
            frame: put,
        },
    );
    let asks: Vec<Frame> = links.iter().flat_map(|&l| sent_on(&out, l)).collect();
    assert_eq!(asks.len(), 2, "{out:?}");
    assert!(asks.iter().all(|f| f.op == op::REPLICATE));
    // Node 2 acknowledges: W = 2 is reached and the client is answered.
    let ok = |tag| Frame::new(op::OK, tag, 2, Bytes::new());
    let out = step(
        &mut n,
        11,
        Input::Frame {
            conn: links[0],
            frame: ok(asks[0].client_id),
        },
    );
    assert_eq!(sent_on(&out, client).len(), 1, "{out:?}");
    assert_eq!(sent_on(&out, client)[0].op, op::OK);
    // Node 3's acknowledgement comes later: taken harmlessly, and it is not
    // sent the key again.
    let out = step(
        &mut n,
        12,
        Input::Frame {
            conn: links[1],
            frame: ok(asks[1].client_id),
        },
    );
    assert!(sent(&out).is_empty(), "{out:?}");
    for now in [100, 200, 300] {
        let out = step(&mut n, now, Input::Timer { id: TIMER_TICK });
        assert!(sent_on(&out, links[1]).is_empty(), "pushed again: {out:?}");
    }
}

#[test]
fn a_replica_that_never_acknowledges_is_hinted_once_its_ask_times_out() {
    let (mut n, links, key) = lead_of_three();
    let client = ConnId::new(30, 1);
    let put = Frame::new(op::PUT, 9, 0, format!("{} {key}v", key.len()));
    let out = step(
        &mut n,
        10,
        Input::Frame {
            conn: client,
            frame: put,
        },
    );
    let asks: Vec<Frame> = links.iter().flat_map(|&l| sent_on(&out, l)).collect();
    let ok = Frame::new(op::OK, asks[0].client_id, 2, Bytes::new());
    let out = step(
        &mut n,
        11,
        Input::Frame {
            conn: links[0],
            frame: ok,
        },
    );
    assert_eq!(sent_on(&out, client)[0].op, op::OK, "W = 2 reached");
    // Node 3 never answers: nothing is pushed before its ask times out...
    let out = step(&mut n, 100, Input::Timer { id: TIMER_TICK });
    assert!(sent_on(&out, links[1]).is_empty(), "{out:?}");
    // ...and then the key is pushed to it (a hint).
    let timeout = cfg().request_timeout_ms;
    let out = step(&mut n, 10 + timeout, Input::Timer { id: TIMER_TICK });
    let pushed = sent_on(&out, links[1]);
    assert_eq!(pushed.len(), 1, "{out:?}");
    assert_eq!(pushed[0].op, op::MIGRATE);
    let records = crate::protocol::cluster::parse_records(&pushed[0].payload).unwrap();
    assert_eq!(records[0].key, key.as_bytes());
}

#[test]
fn a_replica_that_refuses_after_the_quorum_is_hinted() {
    let (mut n, links, key) = lead_of_three();
    let client = ConnId::new(30, 1);
    let put = Frame::new(op::PUT, 9, 0, format!("{} {key}v", key.len()));
    let out = step(
        &mut n,
        10,
        Input::Frame {
            conn: client,
            frame: put,
        },
    );
    let asks: Vec<Frame> = links.iter().flat_map(|&l| sent_on(&out, l)).collect();
    let ok = Frame::new(op::OK, asks[0].client_id, 2, Bytes::new());
    step(
        &mut n,
        11,
        Input::Frame {
            conn: links[0],
            frame: ok,
        },
    );
    // Node 3 holds a version newer than the write's base, older than the write.
    let mut refusal = Reply::Conflict { version: 1 }.encode();
    refusal.client_id = asks[1].client_id;
    step(
        &mut n,
        12,
        Input::Frame {
            conn: links[1],
            frame: refusal,
        },
    );
    let out = step(&mut n, 100, Input::Timer { id: TIMER_TICK });
    let pushed = sent_on(&out, links[1]);
    assert_eq!(pushed.len(), 1, "{out:?}");
    assert_eq!(pushed[0].op, op::MIGRATE);
}

/// Keys hashed and values copied per replicated PUT and GET (N = 3, R = W = 2),
/// at the lead replica and at a replica; run with `--nocapture` to see them.
#[test]
fn hot_path_counts() {
    const VALUE: usize = 10_000;
    let (mut n, links, key) = lead_of_three();
    let client = ConnId::new(30, 1);
    let mut payload = format!("{} {key}", key.len()).into_bytes();
    payload.extend(std::iter::repeat_n(b'v', VALUE));
    let put = Frame::new(op::PUT, 9, 0, payload);
    let (out, copies, hashes) = counting::count(VALUE, || {
        step(
            &mut n,
            10,
            Input::Frame {
                conn: client,
                frame: put,
            },
        )
    });
    let asks: Vec<Frame> = links.iter().flat_map(|&l| sent_on(&out, l)).collect();
    let (_, copies2, hashes2) = counting::count(VALUE, || {
        let ok = Frame::new(op::OK, asks[0].client_id, 2, Bytes::new());
        step(
            &mut n,
            11,
            Input::Frame {
                conn: links[0],
                frame: ok,
            },
        )
    });
    let (_, copies3, hashes3) = counting::count(VALUE, || {
        let ok = Frame::new(op::OK, asks[1].client_id, 3, Bytes::new());
        step(
            &mut n,
            12,
            Input::Frame {
                conn: links[1],
                frame: ok,
            },
        )
    });
    // The next ticks: nothing is pushed to the replica that acknowledged late
    // (anti-entropy may start comparing digests: that sends no data).
    let (ticks, copies4, hashes4) = counting::count(VALUE, || {
        (100..=300)
            .step_by(100)
            .flat_map(|now| step(&mut n, now, Input::Timer { id: TIMER_TICK }))
            .collect::<Vec<_>>()
    });
    let pushes = links
        .iter()
        .flat_map(|&l| sent_on(&ticks, l))
        .filter(|f| f.op != op::AE_DIGEST)
        .count();
    eprintln!(
        "PUT at the lead: request {hashes} hashes {copies} copies; first ack {hashes2} / \
         {copies2}; late ack {hashes3} / {copies3}; next 3 ticks {hashes4} / {copies4}, \
         {pushes} pushes"
    );
    assert_eq!((hashes, hashes2, hashes3, pushes), (1, 0, 0, 0));
    assert_eq!(copies, 2, "the stored entry and the REPLICATE payload");
    // A replica's side: the REPLICATE the lead sent, served by another node.
    let (mut r, _, _) = lead_of_three();
    let peer = member(&mut r, 40);
    let repl = asks[0].clone();
    let (_, copies, hashes) = counting::count(VALUE, || {
        step(
            &mut r,
            13,
            Input::Frame {
                conn: peer,
                frame: repl,
            },
        )
    });
    eprintln!("REPLICATE at a replica: {hashes} hashes {copies} copies");
    assert_eq!((hashes, copies), (1, 1), "one hash, the stored copy");
    // GET at the lead.
    let get = Frame::new(op::GET, 10, 0, key.clone());
    let (out, copies, hashes) = counting::count(VALUE, || {
        step(
            &mut n,
            20,
            Input::Frame {
                conn: client,
                frame: get,
            },
        )
    });
    // R = 2: one other replica is asked (the first of the key's list, link 0).
    let asks: Vec<Frame> = links.iter().flat_map(|&l| sent_on(&out, l)).collect();
    assert_eq!(asks.len(), 1, "{out:?}");
    assert_eq!(sent_on(&out, links[0]).len(), 1, "{out:?}");
    let read = asks[0].clone();
    let (reply, copies_r, hashes_r) = counting::count(VALUE, || {
        step(
            &mut r,
            21,
            Input::Frame {
                conn: peer,
                frame: read,
            },
        )
    });
    let reply = sent(&reply);
    let answer = Frame::new(reply[0].1, asks[0].client_id, 2, reply[0].2.clone());
    let (out, copies2, hashes2) = counting::count(VALUE, || {
        step(
            &mut n,
            22,
            Input::Frame {
                conn: links[0],
                frame: answer,
            },
        )
    });
    assert_eq!(sent_on(&out, client)[0].op, op::VALUE, "{out:?}");
    eprintln!(
        "GET at the lead: request {hashes} hashes {copies} copies; answer {hashes2} / {copies2}; \
         REPL_READ at a replica {hashes_r} / {copies_r}"
    );
    assert_eq!((hashes, hashes2, hashes_r, copies_r), (1, 0, 1, 1));
}

#[test]
fn a_refused_secret_stops_the_node_for_good_and_other_refusals_back_off() {
    let (mut n, link) = with_manager();
    let refusal = |text: &str| Input::Frame {
        conn: link,
        frame: Frame::new(op::ERR, 0, 0, text.to_string()),
    };
    // A refusal that may pass (here BADOP) is retried later, like UNAVAILABLE.
    let out = step(&mut n, 2, refusal("BADOP NODE_JOIN needs HOST:PORT"));
    assert!(
        matches!(out[0], Output::Close { conn } if conn == link),
        "{out:?}"
    );
    assert!(
        matches!(
            out[1],
            Output::Timer {
                at: 202,
                id: TIMER_MANAGER
            }
        ),
        "{out:?}"
    );
    assert!(n.failure().is_none());
    // The link closes before the manager answers: that backs off further.
    let link2 = ConnId::new(1, 2);
    step(&mut n, 202, Input::Timer { id: TIMER_MANAGER });
    let up = |conn| Input::Connected {
        conn,
        tag: TAG_MANAGER,
    };
    step(&mut n, 203, up(link2));
    let out = step(&mut n, 204, Input::Closed { conn: link2 });
    assert!(
        matches!(
            out[0],
            Output::Timer {
                at: 604,
                id: TIMER_MANAGER
            }
        ),
        "{out:?}"
    );
    // A wrong secret is final: the node stops and says why.
    let link3 = ConnId::new(1, 3);
    step(&mut n, 604, Input::Timer { id: TIMER_MANAGER });
    step(&mut n, 605, up(link3));
    let wrong = Input::Frame {
        conn: link3,
        frame: Frame::new(op::ERR, 0, 0, "AUTH wrong cluster secret"),
    };
    let out = step(&mut n, 606, wrong);
    assert!(out.iter().any(|o| matches!(o, Output::Stop)), "{out:?}");
    assert!(n.failure().is_some_and(|why| why.contains("--secret")));
    // And never reconnects.
    let out = step(&mut n, 607, Input::Closed { conn: link3 });
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::Timer { .. } | Output::Connect { .. })));
}

#[test]
fn peer_versions_too_far_ahead_are_refused_and_change_nothing() {
    let mut n = StorageNode::new(cfg());
    let peer = member(&mut n, 8);
    // Not what this test is about: a lease that outlasts it.
    n.membership.lease_until = Millis::MAX;
    let now: Millis = 5_000;
    let ask = |n: &mut StorageNode, o: u8, payload: Bytes| {
        let frame = Frame::new(o, 11, 1, payload);
        sent(&step(n, now, Input::Frame { conn: peer, frame }))
    };
    let record = |key: &str, version: u64| Record {
        key: Bytes::from(key.to_string()),
        version,
        value: Some(Bytes::from(format!("v{version}"))),
    };
    let replicate = |r: Record| {
        Message::Replicate {
            base: None,
            fence: None,
            record: r,
        }
        .encode()
        .payload
    };
    let migrate = |records: Vec<Record>| Message::Migrate { records }.encode().payload;
    // In range: an hour ahead of the wall clock (5 s, as clock_base_ms is 0).
    let fine = (now + super::super::hlc::MAX_AHEAD_MS) << 16;
    let got = ask(&mut n, op::REPLICATE, replicate(record("k", fine)));
    assert_eq!(got[0].1, op::OK, "{got:?}");
    for v in [1 << 63, u64::MAX, fine + (1 << 24)] {
        let got = ask(&mut n, op::REPLICATE, replicate(record("k", v)));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].1, op::ERR, "version {v:#x}: {got:?}");
        assert!(
            String::from_utf8_lossy(&got[0].2).contains("ahead"),
            "{got:?}"
        );
        // One bad record refuses the whole chunk: "m" is not stored either.
        let chunk = migrate(vec![record("m", 1 << 16), record("k", v)]);
        let got = ask(&mut n, op::MIGRATE, chunk);
        assert_eq!(got[0].1, op::ERR, "version {v:#x}: {got:?}");
    }
    assert_eq!(n.engine().entry(b"k").map(|e| e.version), Some(fine));
    assert_eq!(n.engine().entry(b"m"), None);
    // Only the admitted version moved the clock: the next write follows it, not
    // a refused one (a node serves client writes only as a member).
    n.join_alone();
    let put = Frame::new(op::PUT, 1, 0, "1 x1");
    step(
        &mut n,
        now,
        Input::Frame {
            conn: ConnId::new(30, 1),
            frame: put,
        },
    );
    let v = n.engine().entry(b"x").map(|e| e.version).unwrap();
    assert!(v > fine && v >> 16 <= (fine >> 16) + 1, "{v:#x}");
}

#[test]
fn a_peer_that_cannot_prove_the_secret_gets_no_join_and_no_forwards() {
    let (mut n, manager) = with_manager();
    let joined = format!("1\n{}", three(3, ["up", "up", "up"]));
    let input = Input::Frame {
        conn: manager,
        frame: Frame::new(op::JOINED, 0, 0, joined),
    };
    step(&mut n, 2, input);
    let conn = ConnId::new(12, 1);
    let out = step(
        &mut n,
        3,
        Input::Connected {
            conn,
            tag: mesh::PEER_TAG + 2,
        },
    );
    let frame = challenge_for(&out, "an-impostor's-guess");
    let out = step(&mut n, 3, Input::Frame { conn, frame });
    assert!(sent(&out).is_empty(), "{out:?}");
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Close { conn: c } if *c == conn)));
}
