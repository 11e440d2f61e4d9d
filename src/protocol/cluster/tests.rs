use super::*;
use crate::ring::{NodeEntry, NodeState};
use proptest::prelude::*;

fn ring(epoch: u64) -> Ring {
    Ring::new(
        epoch,
        3,
        2,
        2,
        vec![
            NodeEntry {
                id: 1,
                addr: "127.0.0.1:7001".into(),
                state: NodeState::Up,
                tokens: vec![10, 40],
            },
            NodeEntry {
                id: 2,
                addr: "127.0.0.1:7002".into(),
                state: NodeState::Joining,
                tokens: vec![20],
            },
        ],
    )
}

fn arb_view() -> impl Strategy<Value = View> {
    let list = || prop::collection::vec(any::<u32>(), 0..6);
    (any::<u64>(), list(), list()).prop_map(|(epoch, serving, settled)| View {
        epoch,
        serving,
        settled,
    })
}

fn arb_fence() -> impl Strategy<Value = Fence> {
    (any::<u64>(), any::<u64>()).prop_map(|(epoch, mark)| Fence { epoch, mark })
}

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

fn record(key: &[u8], version: u64, value: Option<&[u8]>) -> Record {
    Record {
        key: b(key),
        version,
        value: value.map(b),
    }
}

fn frame(op: u8, payload: &[u8]) -> Frame {
    Frame::new(op, 0, 0, b(payload))
}

fn decode(op: u8, payload: &[u8]) -> Result<Message, Error> {
    Message::decode(&frame(op, payload))
}

/// Encodes `m`, checks the payload is `wire` and that it decodes back to `m`.
fn check(m: Message, wire: &[u8]) {
    let f = m.encode();
    assert_eq!((f.client_id, f.node_id), (0, 0));
    assert_eq!(&f.payload[..], wire, "{m:?}");
    assert_eq!(Message::decode(&f), Ok(m));
}

fn bad(op: u8, payload: &[u8]) -> ErrorCode {
    match decode(op, payload) {
        Ok(m) => panic!("{payload:?} decoded as {m:?}"),
        Err(e) => e.code,
    }
}

#[test]
fn node_join() {
    let proof = [0xab; 32];
    let hex = "ab".repeat(32);
    let m = |sent, offer| Message::NodeJoin {
        proof,
        addr: "127.0.0.1:7001".into(),
        tokens: 64,
        sent,
        offer,
    };
    check(m(None, None), format!("{hex} 127.0.0.1:7001 64").as_bytes());
    check(
        m(Some(9), None),
        format!("{hex} 127.0.0.1:7001 64 9").as_bytes(),
    );
    let text = ring(5).encode();
    check(
        m(None, Some(ring(5))),
        format!("{hex} 127.0.0.1:7001 64\n{text}").as_bytes(),
    );
    check(
        m(Some(0), Some(ring(5))),
        format!("{hex} 127.0.0.1:7001 64 0\n{text}").as_bytes(),
    );
    for p in [
        String::new(),
        format!("{hex} 127.0.0.1:7001"),
        format!("{hex} 127.0.0.1:7001 x"),
        format!("{hex} 127.0.0.1:7001 64 x"),
        format!("{hex} 127.0.0.1:7001 64 -1"),
        format!("{hex} 127.0.0.1:7001 64 9 9"),
        format!("{hex}  64"),
        format!("{hex} 127.0.0.1:7001 64\nepoch x\n"),
    ] {
        assert_eq!(bad(op::NODE_JOIN, p.as_bytes()), ErrorCode::BadOp, "{p:?}");
    }
    // The old plaintext secret, or a proof that is not 64 hex digits: ERR AUTH.
    for p in [
        &b"gtstore 127.0.0.1:7001 64"[..],
        b"s3cret 127.0.0.1:7001 64\n",
        b"\xff 1:1 64",
    ] {
        assert_eq!(bad(op::NODE_JOIN, p), ErrorCode::Auth, "{p:?}");
    }
}

#[test]
fn member_hello_and_challenge() {
    let nonce = [7u8; 16];
    let n = "07".repeat(16);
    check(Message::MemberHello { nonce }, n.as_bytes());
    let proof = [0xcd; 32];
    let text = format!("{n} {}", "cd".repeat(32));
    check(Message::MemberChallenge { nonce, proof }, text.as_bytes());
    for p in ["", "07", &"07".repeat(17), &format!("{n} ")] {
        assert_eq!(
            bad(op::MEMBER_HELLO, p.as_bytes()),
            ErrorCode::BadOp,
            "{p:?}"
        );
    }
    for p in [
        n.clone(),
        format!("{n} cd"),
        format!("{n} {} x", "cd".repeat(32)),
    ] {
        assert_eq!(
            bad(op::MEMBER_CHALLENGE, p.as_bytes()),
            ErrorCode::BadOp,
            "{p:?}"
        );
    }
}

#[test]
fn joined() {
    let text = ring(9).encode();
    let m = |catch_up| Message::Joined {
        node_id: 3,
        catch_up,
        ring: ring(9),
    };
    check(m(false), format!("3\n{text}").as_bytes());
    check(m(true), format!("3 catch-up\n{text}").as_bytes());
    for p in [
        "3",
        "3 late\nepoch 1\nreplicas 1 1 1\n",
        "x\nepoch 1\n",
        "3\n",
    ] {
        assert_eq!(bad(op::JOINED, p.as_bytes()), ErrorCode::BadOp, "{p:?}");
    }
}

#[test]
fn heartbeat() {
    let m = |keys, sent, catching_up| Message::Heartbeat {
        keys,
        sent,
        catching_up,
    };
    check(m(42, 7, false), b"42 7");
    check(m(0, 0, true), b"0 0 catching-up");
    check(
        m(u64::MAX, u64::MAX, false),
        b"18446744073709551615 18446744073709551615",
    );
    for p in [
        &b""[..],
        b"x",
        b"42",
        b"0 catching-up",
        b"1 2 catching",
        b"1 2 catching-up x",
        b"-1 2",
        b"1 -2",
        b"1 2 ",
        b"1  2",
        b"1 18446744073709551616",
    ] {
        assert_eq!(bad(op::HEARTBEAT, p), ErrorCode::BadOp, "{p:?}");
    }
}

#[test]
fn lease() {
    let m = |sent, lease_ms| Message::Lease { sent, lease_ms };
    check(m(1234, 10_000), b"1234 10000");
    check(m(0, u64::MAX), b"0 18446744073709551615");
    for p in [
        &b""[..],
        b"1",
        b"1 2 3",
        b"x 2",
        b"1 x",
        b"1 -2",
        b" 1 2",
        b"1 2\n",
        b"18446744073709551616 1",
    ] {
        assert_eq!(bad(op::LEASE, p), ErrorCode::BadOp, "{p:?}");
    }
}

#[test]
fn manager_messages() {
    check(Message::HandoffDone { epoch: 7 }, b"7");
    check(Message::Leave, b"");
    check(
        Message::RingUpdate { ring: ring(4) },
        ring(4).encode().as_bytes(),
    );
    for (op, p) in [
        (op::HANDOFF_DONE, &b""[..]),
        (op::HANDOFF_DONE, b"7 8"),
        (op::LEAVE, b"x"),
        (op::RING_UPDATE, b"epoch 1\n"),
    ] {
        assert_eq!(bad(op, p), ErrorCode::BadOp, "{op} {p:?}");
    }
}

#[test]
fn drop_takes_an_id_or_an_address() {
    check(
        Message::Drop {
            node: NodeRef::Id(4),
        },
        b"4",
    );
    check(
        Message::Drop {
            node: NodeRef::Addr("127.0.0.1:7004".into()),
        },
        b"127.0.0.1:7004",
    );
    // What people type: surrounding blanks are ignored.
    assert_eq!(
        decode(op::DROP, b" 4\n"),
        Ok(Message::Drop {
            node: NodeRef::Id(4)
        })
    );
    for p in [&b""[..], b" \n", b"\xff"] {
        assert_eq!(bad(op::DROP, p), ErrorCode::BadOp, "{p:?}");
    }
}

#[test]
fn records_and_migrate() {
    let records = vec![
        record(b"a", 7, Some(b"val")),
        record(b"bb", u64::MAX, None),
        record(b"c", 0, Some(b"")),
    ];
    let f = Message::Migrate {
        records: records.clone(),
    }
    .encode();
    assert_eq!(
        &f.payload[..17],
        &[0, 0, 0, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 7, 1, 0, 0, 0][..]
    );
    assert_eq!(parse_records(&f.payload).unwrap(), records);
    let want: usize = records
        .iter()
        .map(|r| record_len(r.key.len(), r.value.as_ref().map(Bytes::len)))
        .sum();
    assert_eq!(f.payload.len(), want);
    check(Message::Migrate { records: vec![] }, b"");
    // Every strict prefix but those ending between records is malformed.
    let ends = [4 + 1 + 8 + 1 + 4 + 3, 4 + 1 + 8 + 1 + 4 + 3 + 4 + 2 + 8 + 1];
    for cut in 1..f.payload.len() {
        let got = parse_records(&f.payload.slice(..cut));
        assert_eq!(got.is_ok(), ends.contains(&cut), "cut {cut}");
    }
    let mut flag = f.payload.to_vec();
    flag[4 + 1 + 8] = 2;
    assert_eq!(bad(op::MIGRATE, &flag), ErrorCode::BadOp);
    // A record with an empty key is a bad key.
    assert_eq!(
        bad(op::MIGRATE, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
        ErrorCode::BadKey
    );
    // A length near u32::MAX does not overflow or allocate.
    assert_eq!(bad(op::MIGRATE, &[255, 255, 255, 255, 1]), ErrorCode::BadOp);
}

#[test]
fn replicate_has_an_explicit_base_flag() {
    let r = record(b"k", 9, Some(b"v"));
    let mut entry = BytesMut::new();
    put_record(&mut entry, b"k", 9, Some(b"v"));
    let m = |base, fence| Message::Replicate {
        base,
        fence,
        record: r.clone(),
    };
    check(m(None, None), &[&[0u8][..], &entry].concat());
    let base = [&[1u8][..], &5u64.to_be_bytes(), &entry].concat();
    check(m(Some(5), None), &base);
    // u64::MAX is an ordinary base, not "none".
    let max = [&[1u8][..], &u64::MAX.to_be_bytes(), &entry].concat();
    check(m(Some(u64::MAX), None), &max);
    // A fence after the base: epoch, then mark.
    let fence = Fence { epoch: 3, mark: 4 };
    let fenced = [&[2u8][..], &3u64.to_be_bytes(), &4u64.to_be_bytes(), &entry].concat();
    check(m(None, Some(fence)), &fenced);
    let both = [&[3u8][..], &5u64.to_be_bytes(), &fenced[1..]].concat();
    check(m(Some(5), Some(fence)), &both);
    for p in [
        &b""[..],
        &[2u8][..],
        &[4u8][..],
        &[&[4u8][..], &entry].concat()[..],
        &[&[2u8][..], &[0; 15], &entry].concat()[..15],
        &[1u8, 0, 0][..],
        &[0u8][..],
        &[&[0u8][..], &entry, &entry].concat()[..],
        &[&[0u8][..], &entry, b"x"].concat()[..],
    ] {
        assert_eq!(bad(op::REPLICATE, p), ErrorCode::BadOp, "{p:?}");
    }
}

#[test]
fn repl_read_and_purge() {
    let fence = Fence { epoch: 1, mark: 2 };
    let head = [1u64.to_be_bytes(), 2u64.to_be_bytes()].concat();
    let m = Message::ReplRead {
        fence,
        key: b(b"key"),
    };
    check(m, &[&head[..], b"key"].concat());
    assert_eq!(bad(op::REPL_READ, b"key"), ErrorCode::BadOp);
    assert_eq!(bad(op::REPL_READ, &head), ErrorCode::BadKey);
    let long = [&head[..], &[1; 65_536]].concat();
    assert_eq!(bad(op::REPL_READ, &long), ErrorCode::BadKey);
    let m = Message::Purge {
        version: 3,
        key: b(b"k"),
    };
    check(m, &[0, 0, 0, 0, 0, 0, 0, 3, b'k']);
    assert_eq!(bad(op::PURGE, &[0; 7]), ErrorCode::BadOp);
    assert_eq!(bad(op::PURGE, &[0; 8]), ErrorCode::BadKey);
}

#[test]
fn repl_reads_and_copies() {
    let keys = vec![(5, b(b"k1")), (6, b(b"key2"))];
    let epoch = 9u64.to_be_bytes();
    let mark = |m: u64| m.to_be_bytes();
    let wire = [
        &epoch[..],
        &[0, 0, 0, 2],
        &mark(5),
        &[0, 0, 0, 2],
        b"k1",
        &mark(6),
        &[0, 0, 0, 4],
        b"key2",
    ]
    .concat();
    let borrowed = super::repl_reads(9, keys.iter().map(|(m, k)| (*m, &k[..])));
    let m = Message::ReplReads {
        epoch: 9,
        keys: keys.clone(),
    };
    assert_eq!(borrowed, m.encode());
    check(m, &wire);
    let none = Message::ReplReads {
        epoch: 9,
        keys: vec![],
    };
    check(none, &[&epoch[..], &[0, 0, 0, 0]].concat());
    // No epoch, a count larger than the keys that follow, bytes after the
    // last key, a key without its mark.
    let with = |rest: &[u8]| [&epoch[..], rest].concat();
    assert_eq!(bad(op::REPL_READS, &[0, 0, 0, 0]), ErrorCode::BadOp);
    assert_eq!(bad(op::REPL_READS, &with(&[0, 0, 0, 1])), ErrorCode::BadOp);
    assert_eq!(
        bad(op::REPL_READS, &with(&[0, 0, 0, 0, 9])),
        ErrorCode::BadOp
    );
    let unmarked = with(&[0, 0, 0, 1, 0, 0, 0, 1, b'k']);
    assert_eq!(bad(op::REPL_READS, &unmarked), ErrorCode::BadOp);
    let long = with(&[&[0, 0, 0, 1][..], &mark(1), &[0, 0, 0, 9, 1]].concat());
    assert_eq!(bad(op::REPL_READS, &long), ErrorCode::BadOp);
    let empty = with(&[&[0, 0, 0, 1][..], &mark(1), &[0, 0, 0, 0]].concat());
    assert_eq!(bad(op::REPL_READS, &empty), ErrorCode::BadKey);
    assert_eq!(bad(op::REPL_READS, &[255; 4]), ErrorCode::BadOp);

    let answers = vec![
        Reply::NotFound.encode(),
        Reply::Found(record(b"k", 4, Some(b"v"))).encode(),
        Reply::Refused(Refusal::CatchingUp).encode(),
    ];
    let copies = Reply::Copies(answers.clone());
    let f = copies.encode();
    assert_eq!(f.op, op::COPIES);
    assert_eq!(&f.payload[..9], &[0, 0, 0, 3, op::NOT_FOUND, 0, 0, 0, 0]);
    assert_eq!(Reply::decode(&f), Ok(copies));
    // Written answer by answer, the same bytes.
    let mut w = super::CopiesWriter::new(3);
    w.answer(op::NOT_FOUND, b"");
    w.found(b"k", 4, Some(b"v"));
    let refusal = Reply::Refused(Refusal::CatchingUp).encode();
    w.answer(refusal.op, &refusal.payload);
    assert_eq!(w.finish(), f);
    // A value that would take the reply past its budget: "ask for it alone".
    let mut w = super::CopiesWriter::new(2);
    w.found(b"k", 4, Some(b"v"));
    w.found(b"big", 5, Some(&vec![7; super::COPIES_BUDGET][..]));
    let Ok(Reply::Copies(answers)) = Reply::decode(&w.finish()) else {
        panic!("not a COPIES");
    };
    assert_eq!(answers[0].op, op::VALUE);
    assert_eq!(
        (answers[1].op, answers[1].payload.len()),
        (op::REPL_READ, 0)
    );
    for p in [
        &[0, 0, 0, 1][..],
        &[0, 0, 0, 1, op::OK, 0, 0, 0, 1],
        &[0, 0, 0, 0, 1],
        &[0, 0, 0, 1, op::COPIES, 0, 0, 0, 0],
    ] {
        let got = Reply::decode(&frame(op::COPIES, p));
        assert_eq!(got.map_err(|e| e.code), Err(ErrorCode::BadOp), "{p:?}");
    }
}

#[test]
fn paxos_prepare_accept_and_promise() {
    let view = View {
        epoch: 5,
        serving: vec![1, 2],
        settled: vec![258],
    };
    // EPOCH, then each list behind its length.
    let wire_view: &[u8] = &[
        0, 0, 0, 0, 0, 0, 0, 5, 2, 0, 0, 0, 1, 0, 0, 0, 2, 1, 0, 0, 1, 2,
    ];
    let m = Message::Prepare {
        ballot: 3,
        view: view.clone(),
        key: b(b"k"),
    };
    check(
        m,
        &[&[0, 0, 0, 0, 0, 0, 0, 3][..], wire_view, b"k"].concat(),
    );
    assert_eq!(bad(op::PREPARE, &[0; 7]), ErrorCode::BadOp);
    assert_eq!(bad(op::PREPARE, &[0; 8]), ErrorCode::BadOp, "no view");
    assert_eq!(bad(op::PREPARE, &[0; 18]), ErrorCode::BadKey);
    let cut = [&[0u8; 8][..], &wire_view[..wire_view.len() - 1]].concat();
    assert_eq!(bad(op::PREPARE, &cut), ErrorCode::BadOp);
    let r = record(b"k", 9, Some(b"v"));
    let mut entry = BytesMut::new();
    put_record(&mut entry, b"k", 9, Some(b"v"));
    let accept = Message::Accept {
        record: r.clone(),
        view: None,
    };
    check(accept, &[&[0u8][..], &entry].concat());
    let accept = Message::Accept {
        record: r.clone(),
        view: Some(view),
    };
    check(accept, &[&[1u8][..], wire_view, &entry].concat());
    assert_eq!(bad(op::ACCEPT, b""), ErrorCode::BadOp);
    assert_eq!(bad(op::ACCEPT, &entry), ErrorCode::BadOp, "no HAS_VIEW");
    assert_eq!(
        bad(op::ACCEPT, &[&[0u8][..], &entry, b"x"].concat()),
        ErrorCode::BadOp
    );
    assert_eq!(
        bad(op::ACCEPT, &[&[1u8][..], &wire_view[..9]].concat()),
        ErrorCode::BadOp
    );

    let tomb = record(b"k", 4, None);
    for (committed, accepted) in [
        (None, None),
        (Some(r.clone()), None),
        (None, Some(tomb.clone())),
        (Some(tomb.clone()), Some(r.clone())),
    ] {
        let promise = Reply::Promise {
            committed,
            accepted,
        };
        let f = promise.encode();
        assert_eq!(f.op, op::PROMISE);
        assert_eq!(Reply::decode(&f), Ok(promise));
    }
    let f = Reply::Promise {
        committed: Some(r.clone()),
        accepted: None,
    }
    .encode();
    assert_eq!(&f.payload[..], &[&[1u8][..], &entry, &[0u8]].concat()[..]);
    for p in [
        &b""[..],
        &[0u8][..],
        &[2u8, 0][..],
        &[0u8, 0, 0][..],
        &[1u8, 0][..],
    ] {
        let got = Reply::decode(&Frame::new(op::PROMISE, 0, 0, Bytes::copy_from_slice(p)));
        assert_eq!(got.map_err(|e| e.code), Err(ErrorCode::BadOp), "{p:?}");
    }
}

#[test]
fn sync_rounds() {
    let m = Message::SyncReq {
        node_id: 2,
        round: 1_000_123,
        epoch: 9,
    };
    check(m, b"2 1000123 9");
    check(
        Message::SyncDone {
            node_id: 2,
            round: 8,
        },
        b"2 8",
    );
    // Every field is required: a missing one is an error, not a 0.
    for p in [&b"2"[..], b"2 1", b"2 1 9 4", b"4294967296 1 1", b"2  9"] {
        assert_eq!(bad(op::SYNC_REQ, p), ErrorCode::BadOp, "{p:?}");
    }
    for p in [&b"2"[..], b"2 1 9", b"x 1"] {
        assert_eq!(bad(op::SYNC_DONE, p), ErrorCode::BadOp, "{p:?}");
    }
}

#[test]
fn other_ops_are_not_messages() {
    for o in [
        op::PING,
        op::PUT,
        op::HELLO,
        op::OK,
        op::ERR,
        op::REFUSED,
        99,
    ] {
        assert!(!Message::is_message_op(o));
        assert_eq!(bad(o, b""), ErrorCode::BadOp);
    }
}

#[test]
fn replies() {
    let cases = [
        (Reply::Ok, op::OK, b(b"")),
        (Reply::NotFound, op::NOT_FOUND, b(b"")),
        (Reply::Conflict { version: 12 }, op::CONFLICT, b(b"12")),
        (
            Reply::Refused(Refusal::CatchingUp),
            op::REFUSED,
            b(b"catching-up"),
        ),
        (
            Reply::Refused(Refusal::OffList { epoch: 8 }),
            op::REFUSED,
            b(b"off-list 8"),
        ),
        (
            Reply::Refused(Refusal::StaleRing { epoch: 9 }),
            op::REFUSED,
            b(b"stale-ring 9"),
        ),
        (
            Reply::Failed(Error::new(ErrorCode::Timeout, "slow")),
            op::ERR,
            b(b"TIMEOUT slow"),
        ),
    ];
    for (reply, o, payload) in cases {
        let f = reply.encode();
        assert_eq!((f.op, &f.payload), (o, &payload), "{reply:?}");
        assert_eq!(Reply::decode(&f), Ok(reply));
    }
    let found = Reply::Found(record(b"k", 4, None));
    assert_eq!(Reply::decode(&found.encode()), Ok(found));
    for (o, p) in [
        (op::OK, &b"x"[..]),
        (op::NOT_FOUND, b"x"),
        (op::CONFLICT, b""),
        (op::VALUE, b""),
        (op::REFUSED, b"catching up"),
        (op::REFUSED, b"off-list"),
        (op::REFUSED, b"off-list 1 2"),
        (op::REFUSED, b"stale-ring"),
        (op::REFUSED, b"stale-ring x"),
        (op::PONG, b""),
    ] {
        let got = Reply::decode(&frame(o, p));
        assert_eq!(got.map_err(|e| e.code), Err(ErrorCode::BadOp), "{o} {p:?}");
    }
    let e = Refusal::OffList { epoch: 3 }.to_error();
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(e.message.contains("epoch 3"), "{e}");
}

#[test]
fn anti_entropy_messages() {
    let mut wire = Vec::new();
    wire.extend_from_slice(&7u64.to_be_bytes());
    wire.extend_from_slice(&3u64.to_be_bytes());
    wire.extend_from_slice(&0xabu64.to_be_bytes());
    check(
        Message::AeDigest {
            end: 7,
            epoch: 3,
            root: 0xab,
        },
        &wire,
    );
    assert_eq!(bad(op::AE_DIGEST, &wire[..23]), ErrorCode::BadOp);
    let stub = Stub {
        key: b(b"k"),
        version: 9,
        live: true,
    };
    let mut wire = Vec::new();
    wire.extend_from_slice(&7u64.to_be_bytes());
    wire.extend_from_slice(&[0, 2, 0, 1, 0, 255]);
    wire.extend_from_slice(&[0, 0, 0, 1, b'k']);
    wire.extend_from_slice(&9u64.to_be_bytes());
    wire.push(1);
    check(
        Message::AeKeys {
            end: 7,
            leaves: vec![1, 255],
            stubs: vec![stub],
        },
        &wire,
    );
    let mut flag = wire.clone();
    *flag.last_mut().unwrap() = 2;
    assert_eq!(bad(op::AE_KEYS, &flag), ErrorCode::BadOp);
    assert_eq!(bad(op::AE_KEYS, &wire[..wire.len() - 1]), ErrorCode::BadOp);
    // An empty key is a bad key; a leaf count past the payload is cut short.
    let mut empty = wire[..14].to_vec();
    empty.extend_from_slice(&[0, 0, 0, 0]);
    empty.extend_from_slice(&9u64.to_be_bytes());
    empty.push(0);
    assert_eq!(bad(op::AE_KEYS, &empty), ErrorCode::BadKey);
    assert_eq!(
        bad(op::AE_KEYS, &[0, 0, 0, 0, 0, 0, 0, 7, 0x10, 0]),
        ErrorCode::BadOp
    );

    let leaves = Reply::Leaves(vec![1, 2]);
    let f = leaves.encode();
    assert_eq!((f.op, f.payload.len()), (op::AE_LEAVES, 16));
    assert_eq!(Reply::decode(&f), Ok(leaves));
    assert!(Reply::decode(&frame(op::AE_LEAVES, &[0; 9])).is_err());
    assert!(Reply::decode(&frame(op::AE_LEAVES, &vec![0; 8 * 4097])).is_err());
    let diff = Reply::Diff {
        records: vec![record(b"a", 3, None), record(b"b", 4, Some(b"v"))],
        wants: vec![b(b"c")],
    };
    let f = diff.encode();
    assert_eq!(f.op, op::AE_DIFF);
    assert_eq!(&f.payload[..4], &[0, 0, 0, 2]);
    assert_eq!(Reply::decode(&f), Ok(diff));
    // A count larger than the records there is malformed, not a long loop.
    assert!(Reply::decode(&frame(op::AE_DIFF, &[255, 255, 255, 255])).is_err());
    assert!(Reply::decode(&frame(op::AE_DIFF, &[0, 0, 0, 1])).is_err());
}

fn arb_ring() -> impl Strategy<Value = Ring> {
    let state = prop::sample::select(NodeState::ALL.to_vec());
    (
        any::<u64>(),
        (1u32..6).prop_flat_map(|n| (Just(n), 1..=n, 1..=n)),
        prop::collection::vec((any::<u16>(), state), 0..5),
        prop::collection::vec(any::<u64>(), 0..20),
    )
        .prop_map(|(epoch, (n, r, w), nodes, tokens)| {
            let count = nodes.len() as u64;
            let entries = (nodes.into_iter().enumerate())
                .map(|(k, (port, state))| NodeEntry {
                    id: 2 * k as u32 + 1,
                    addr: format!("127.0.0.{k}:{port}"),
                    state,
                    // Each token goes to exactly one node.
                    tokens: tokens
                        .iter()
                        .copied()
                        .filter(|t| t % count == k as u64)
                        .collect(),
                })
                .collect();
            Ring::new(epoch, n, r, w, entries)
        })
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn arb_key() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 1..40).prop_map(Bytes::from)
}

fn arb_record() -> impl Strategy<Value = Record> {
    (arb_key(), any::<u64>(), prop::option::of(arb_bytes(60))).prop_map(|(key, version, value)| {
        Record {
            key,
            version,
            value,
        }
    })
}

fn arb_message() -> impl Strategy<Value = Message> {
    let addr = (any::<[u8; 4]>(), any::<u16>())
        .prop_map(|(ip, p)| format!("{}.{}.{}.{}:{p}", ip[0], ip[1], ip[2], ip[3]));
    prop_oneof![
        (
            any::<[u8; 32]>(),
            addr.clone(),
            any::<u32>(),
            prop::option::of(any::<u64>()),
            prop::option::of(arb_ring())
        )
            .prop_map(|(proof, addr, tokens, sent, offer)| Message::NodeJoin {
                proof,
                addr,
                tokens,
                sent,
                offer
            }),
        any::<[u8; 16]>().prop_map(|nonce| Message::MemberHello { nonce }),
        (any::<[u8; 16]>(), any::<[u8; 32]>())
            .prop_map(|(nonce, proof)| Message::MemberChallenge { nonce, proof }),
        (any::<u32>(), any::<bool>(), arb_ring()).prop_map(|(node_id, catch_up, ring)| {
            Message::Joined {
                node_id,
                catch_up,
                ring,
            }
        }),
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(keys, sent, catching_up)| {
            Message::Heartbeat {
                keys,
                sent,
                catching_up,
            }
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(sent, lease_ms)| Message::Lease { sent, lease_ms }),
        any::<u64>().prop_map(|epoch| Message::HandoffDone { epoch }),
        Just(Message::Leave),
        arb_ring().prop_map(|ring| Message::RingUpdate { ring }),
        any::<u32>().prop_map(|id| Message::Drop {
            node: NodeRef::Id(id)
        }),
        addr.prop_map(|a| Message::Drop {
            node: NodeRef::Addr(a)
        }),
        prop::collection::vec(arb_record(), 0..5).prop_map(|records| Message::Migrate { records }),
        (
            prop::option::of(any::<u64>()),
            prop::option::of(arb_fence()),
            arb_record()
        )
            .prop_map(|(base, fence, record)| Message::Replicate {
                base,
                fence,
                record
            }),
        (arb_fence(), arb_key()).prop_map(|(fence, key)| Message::ReplRead { fence, key }),
        (
            any::<u64>(),
            prop::collection::vec((any::<u64>(), arb_key()), 0..5)
        )
            .prop_map(|(epoch, keys)| Message::ReplReads { epoch, keys }),
        (any::<u64>(), arb_view(), arb_key()).prop_map(|(ballot, view, key)| Message::Prepare {
            ballot,
            view,
            key
        }),
        (arb_record(), prop::option::of(arb_view()))
            .prop_map(|(record, view)| Message::Accept { record, view }),
        (any::<u64>(), arb_key()).prop_map(|(version, key)| Message::Purge { version, key }),
        (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(node_id, round, epoch)| {
            Message::SyncReq {
                node_id,
                round,
                epoch,
            }
        }),
        (any::<u32>(), any::<u64>())
            .prop_map(|(node_id, round)| Message::SyncDone { node_id, round }),
        (any::<u64>(), any::<u64>(), any::<u64>())
            .prop_map(|(end, epoch, root)| Message::AeDigest { end, epoch, root }),
        (
            any::<u64>(),
            prop::collection::vec(any::<u16>(), 0..6),
            prop::collection::vec(arb_stub(), 0..5)
        )
            .prop_map(|(end, leaves, stubs)| Message::AeKeys { end, leaves, stubs }),
    ]
}

fn arb_stub() -> impl Strategy<Value = Stub> {
    (arb_key(), any::<u64>(), any::<bool>()).prop_map(|(key, version, live)| Stub {
        key,
        version,
        live,
    })
}

fn arb_reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        Just(Reply::Ok),
        Just(Reply::NotFound),
        arb_record().prop_map(Reply::Found),
        (
            prop::option::of(arb_record()),
            prop::option::of(arb_record())
        )
            .prop_map(|(committed, accepted)| Reply::Promise {
                committed,
                accepted
            }),
        any::<u64>().prop_map(|version| Reply::Conflict { version }),
        Just(Reply::Refused(Refusal::CatchingUp)),
        any::<u64>().prop_map(|epoch| Reply::Refused(Refusal::OffList { epoch })),
        any::<u64>().prop_map(|epoch| Reply::Refused(Refusal::StaleRing { epoch })),
        (prop::sample::select(ErrorCode::ALL.to_vec()), "[ -~]{0,30}")
            .prop_map(|(code, text)| Reply::Failed(Error::new(code, text))),
        prop::collection::vec(any::<u64>(), 0..300).prop_map(Reply::Leaves),
        (
            prop::collection::vec(arb_record(), 0..4),
            prop::collection::vec(arb_key(), 0..4)
        )
            .prop_map(|(records, wants)| Reply::Diff { records, wants }),
        prop::collection::vec(
            (
                any::<u8>().prop_filter("not COPIES", |&o| o != op::COPIES),
                arb_bytes(20)
            )
                .prop_map(|(o, payload)| Frame::new(o, 0, 0, payload)),
            0..5
        )
        .prop_map(Reply::Copies),
    ]
}

proptest! {
    #[test]
    fn encode_then_decode_is_the_identity(m in arb_message()) {
        let f = m.encode();
        prop_assert_eq!(f.op, m.op());
        prop_assert!(Message::is_message_op(f.op));
        prop_assert_eq!(Message::decode(&f), Ok(m));
    }

    #[test]
    fn replies_round_trip(r in arb_reply()) {
        prop_assert_eq!(Reply::decode(&r.encode()), Ok(r));
    }

    #[test]
    fn any_bytes_never_panic(op in 0u8..=255, payload in arb_bytes(120)) {
        let f = Frame::new(op, 0, 0, payload);
        let _ = Message::decode(&f);
        let _ = Reply::decode(&f);
        let _ = Refusal::decode(&f);
    }

    #[test]
    fn mangled_messages_never_panic(
        m in arb_message(),
        cut in any::<prop::sample::Index>(),
        flip in any::<(prop::sample::Index, u8)>(),
    ) {
        let f = m.encode();
        let len = f.payload.len();
        let short = Frame::new(f.op, 0, 0, f.payload.slice(..cut.index(len + 1)));
        let _ = Message::decode(&short);
        if len > 0 {
            let mut bytes = f.payload.to_vec();
            bytes[flip.0.index(len)] ^= flip.1;
            let _ = Message::decode(&Frame::new(f.op, 0, 0, bytes));
        }
    }
}
