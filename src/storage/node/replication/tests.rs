//! Unit tests of conditional ops by Paxos, at the lead (the proposer) and at a
//! replica (an acceptor), driven frame by frame.

use super::super::tests::{frame_in, lead_of_three, member, sent_on};
use super::*;
use crate::protocol::cluster::Record;

/// The one frame `out` sends on `conn`, checked to be an `op`.
fn one(out: &[Output], conn: ConnId, op: u8) -> Frame {
    let sent = sent_on(out, conn);
    assert_eq!(sent.len(), 1, "{out:?}");
    assert_eq!(sent[0].op, op, "{sent:?}");
    sent[0].clone()
}

/// `reply` as an answer to `ask` from node `from`.
fn answer(ask: &Frame, from: u32, reply: Reply) -> Frame {
    let mut f = reply.encode();
    f.client_id = ask.client_id;
    f.node_id = from;
    f
}

fn promise(committed: Option<Record>, accepted: Option<Record>) -> Reply {
    Reply::Promise {
        committed,
        accepted,
    }
}

fn record(key: &str, version: u64, value: &'static [u8]) -> Record {
    Record {
        key: Bytes::copy_from_slice(key.as_bytes()),
        version,
        value: Some(Bytes::from_static(value)),
    }
}

#[test]
fn an_incr_is_prepared_accepted_and_stored_only_at_its_commit() {
    let (mut n, links, key) = lead_of_three();
    let client = ConnId::new(30, 1);
    let incr = Frame::new(op::INCR, 9, 0, format!("{} {key} 5", key.len()));
    let out = frame_in(&mut n, 10, client, incr);
    let prepares: Vec<Frame> = links.iter().map(|&l| one(&out, l, op::PREPARE)).collect();
    let Ok(Message::Prepare { ballot, .. }) = Message::decode(&prepares[0]) else {
        panic!("{:?}", prepares[0]);
    };
    // Node 2 holds 10 (committed): with this node's own promise, a majority.
    let held = record(&key, 7 << 16, b"10");
    let out = frame_in(
        &mut n,
        11,
        links[0],
        answer(&prepares[0], 2, promise(Some(held), None)),
    );
    let accept = one(&out, links[0], op::ACCEPT);
    let Ok(Message::Accept { record: proposal }) = Message::decode(&accept) else {
        panic!("{accept:?}");
    };
    assert_eq!(
        (proposal.version, proposal.value.as_deref()),
        (ballot, Some(&b"15"[..]))
    );
    assert!(
        n.engine().get(key.as_bytes()).is_none(),
        "a proposal is not data"
    );
    // A late promise from node 3 changes nothing.
    let late = answer(&prepares[1], 3, promise(None, None));
    assert!(sent_on(&frame_in(&mut n, 12, links[1], late), client).is_empty());
    let out = frame_in(&mut n, 13, links[0], answer(&accept, 2, Reply::Ok));
    let commit = one(&out, links[0], op::REPLICATE);
    assert_eq!(n.engine().get(key.as_bytes()).as_deref(), Some(&b"15"[..]));
    assert!(sent_on(&out, client).is_empty(), "W = 2 commits first");
    let out = frame_in(&mut n, 14, links[0], answer(&commit, 2, Reply::Ok));
    let reply = one(&out, client, op::VALUE);
    assert_eq!(&reply.payload[..], b"15");
}

#[test]
fn an_accepted_proposal_newer_than_every_copy_is_finished_first() {
    let (mut n, links, key) = lead_of_three();
    let client = ConnId::new(30, 1);
    let incr = Frame::new(op::INCR, 9, 0, format!("{} {key} 1", key.len()));
    let out = frame_in(&mut n, 10, client, incr);
    let prepare = one(&out, links[0], op::PREPARE);
    // Node 2 accepted another lead's 7 over a committed 6: 7 may be chosen.
    let reply = promise(
        Some(record(&key, 5 << 16, b"6")),
        Some(record(&key, 6 << 16, b"7")),
    );
    let out = frame_in(&mut n, 11, links[0], answer(&prepare, 2, reply));
    let accept = one(&out, links[0], op::ACCEPT);
    assert!(accept.payload.ends_with(b"7"), "{accept:?}");
    let out = frame_in(&mut n, 12, links[0], answer(&accept, 2, Reply::Ok));
    let commit = one(&out, links[0], op::REPLICATE);
    let out = frame_in(&mut n, 13, links[0], answer(&commit, 2, Reply::Ok));
    assert!(
        sent_on(&out, client).is_empty(),
        "the INCR itself is not done"
    );
    assert_eq!(n.engine().get(key.as_bytes()).as_deref(), Some(&b"7"[..]));
    // Then the INCR, decided on 7.
    let prepare = one(&out, links[0], op::PREPARE);
    let out = frame_in(
        &mut n,
        14,
        links[0],
        answer(&prepare, 2, promise(None, None)),
    );
    let accept = one(&out, links[0], op::ACCEPT);
    assert!(accept.payload.ends_with(b"8"), "{accept:?}");
}

#[test]
fn an_accept_refused_after_this_node_accepted_is_unknown_and_never_stored() {
    let (mut n, links, key) = lead_of_three();
    let client = ConnId::new(30, 1);
    let create = Frame::new(op::CREATE, 9, 0, format!("{} {key}v", key.len()));
    let out = frame_in(&mut n, 10, client, create);
    let prepare = one(&out, links[0], op::PREPARE);
    let out = frame_in(
        &mut n,
        11,
        links[0],
        answer(&prepare, 2, promise(None, None)),
    );
    let accepts: Vec<Frame> = links.iter().map(|&l| one(&out, l, op::ACCEPT)).collect();
    // Another lead's higher ballot reached both replicas first.
    let higher = Reply::Conflict { version: 1 << 40 };
    frame_in(&mut n, 12, links[0], answer(&accepts[0], 2, higher.clone()));
    let out = frame_in(&mut n, 13, links[1], answer(&accepts[1], 3, higher));
    let e = Error::from_payload(&one(&out, client, op::ERR).payload);
    assert_eq!(e.code, ErrorCode::Unknown, "{e}");
    assert!(n.engine().entry(key.as_bytes()).is_none());
}

#[test]
fn a_prepare_refused_by_a_higher_ballot_starts_again_above_it() {
    let (mut n, links, key) = lead_of_three();
    let client = ConnId::new(30, 1);
    let delete = Frame::new(op::DELETE, 9, 0, key.clone());
    let out = frame_in(&mut n, 10, client, delete);
    let prepares: Vec<Frame> = links.iter().map(|&l| one(&out, l, op::PREPARE)).collect();
    let higher = 1u64 << 40;
    frame_in(
        &mut n,
        11,
        links[0],
        answer(&prepares[0], 2, Reply::Conflict { version: higher }),
    );
    let out = frame_in(
        &mut n,
        12,
        links[1],
        answer(&prepares[1], 3, Reply::Conflict { version: higher }),
    );
    let again = one(&out, links[0], op::PREPARE);
    let Ok(Message::Prepare { ballot, .. }) = Message::decode(&again) else {
        panic!("{again:?}");
    };
    assert!(ballot > higher);
    assert!(sent_on(&out, client).is_empty());
}

#[test]
fn a_replica_promises_accepts_apart_from_its_data_and_refuses_lower_ballots() {
    let (mut n, _links, key) = lead_of_three();
    let peer = member(&mut n, 40);
    let ask = |n: &mut StorageNode, now: Millis, m: Message| {
        let mut f = m.encode();
        f.client_id = 77;
        let out = frame_in(n, now, peer, f);
        Reply::decode(&one_reply(&out, peer)).unwrap()
    };
    let k = Bytes::copy_from_slice(key.as_bytes());
    let b1 = 20 << 16;
    let prepare = |ballot| Message::Prepare {
        ballot,
        key: k.clone(),
    };
    assert_eq!(ask(&mut n, 20, prepare(b1)), promise(None, None));
    let proposal = record(&key, b1, b"x");
    let accept = Message::Accept {
        record: proposal.clone(),
    };
    assert_eq!(ask(&mut n, 21, accept), Reply::Ok);
    assert!(n.engine().entry(key.as_bytes()).is_none(), "held apart");
    // A higher ballot learns of the proposal; a lower one is refused.
    let b2 = b1 + 0x100;
    assert_eq!(
        ask(&mut n, 22, prepare(b2)),
        promise(None, Some(proposal.clone()))
    );
    assert_eq!(
        ask(&mut n, 23, prepare(b1 + 1)),
        Reply::Conflict { version: b2 }
    );
    // The commit is a REPLICATE; the proposal is then data, and reported no more.
    let commit = Message::Replicate {
        base: None,
        record: record(&key, b2, b"x"),
    };
    assert_eq!(ask(&mut n, 24, commit), Reply::Ok);
    assert_eq!(n.engine().get(key.as_bytes()).as_deref(), Some(&b"x"[..]));
    let b3 = b2 + 0x100;
    let committed = Some(record(&key, b2, b"x"));
    assert_eq!(ask(&mut n, 25, prepare(b3)), promise(committed, None));
}

/// The one reply `out` sends on `conn`.
fn one_reply(out: &[Output], conn: ConnId) -> Frame {
    let sent = sent_on(out, conn);
    assert_eq!(sent.len(), 1, "{out:?}");
    sent[0].clone()
}

#[test]
fn an_op_whose_finishing_of_another_proposal_was_refused_is_applied_once() {
    let (mut n, links, key) = lead_of_three();
    let client = ConnId::new(30, 1);
    let incr = Frame::new(op::INCR, 9, 0, format!("{} {key} 1", key.len()));
    let out = frame_in(&mut n, 10, client, incr);
    let prepare = one(&out, links[0], op::PREPARE);
    let reply = promise(
        Some(record(&key, 5 << 16, b"6")),
        Some(record(&key, 6 << 16, b"7")),
    );
    let out = frame_in(&mut n, 11, links[0], answer(&prepare, 2, reply));
    // Finishing the other lead's 7 is refused by both replicas: start again.
    let accepts: Vec<Frame> = links.iter().map(|&l| one(&out, l, op::ACCEPT)).collect();
    let higher = Reply::Conflict { version: 1 << 40 };
    frame_in(&mut n, 12, links[0], answer(&accepts[0], 2, higher.clone()));
    let out = frame_in(&mut n, 13, links[1], answer(&accepts[1], 3, higher));
    let prepare = one(&out, links[0], op::PREPARE);
    // The other lead committed 7 meanwhile; the INCR decides 8 and is answered
    // once committed, not decided again.
    let reply = promise(Some(record(&key, 1 << 40, b"7")), None);
    let out = frame_in(&mut n, 14, links[0], answer(&prepare, 2, reply));
    let accept = one(&out, links[0], op::ACCEPT);
    assert!(accept.payload.ends_with(b"8"), "{accept:?}");
    let out = frame_in(&mut n, 15, links[0], answer(&accept, 2, Reply::Ok));
    let commit = one(&out, links[0], op::REPLICATE);
    let out = frame_in(&mut n, 16, links[0], answer(&commit, 2, Reply::Ok));
    let reply = one(&out, client, op::VALUE);
    assert_eq!(&reply.payload[..], b"8");
}

#[test]
fn a_put_refused_by_a_newer_version_is_unknown_and_not_written_again() {
    let (mut n, links, key) = lead_of_three();
    let client = ConnId::new(30, 1);
    let put = Frame::new(op::PUT, 9, 0, format!("{} {key}v", key.len()));
    let out = frame_in(&mut n, 10, client, put);
    let writes: Vec<Frame> = links.iter().map(|&l| one(&out, l, op::REPLICATE)).collect();
    // Both replicas hold a newer version (another lead's DELETE, say, that
    // may have read this PUT's value here): writing the PUT again above it
    // would apply it twice.
    let newer = Reply::Conflict { version: 1 << 40 };
    let out = frame_in(&mut n, 11, links[0], answer(&writes[0], 2, newer.clone()));
    assert!(sent_on(&out, links[0]).is_empty());
    let out = frame_in(&mut n, 12, links[1], answer(&writes[1], 3, newer));
    for &l in &links {
        assert!(sent_on(&out, l).is_empty(), "written again: {out:?}");
    }
    let e = Error::from_payload(&one(&out, client, op::ERR).payload);
    assert_eq!(e.code, ErrorCode::Unknown, "{e}");
}
