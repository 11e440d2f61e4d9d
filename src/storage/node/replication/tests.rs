//! Unit tests of conditional ops by Paxos, at the lead (the proposer) and at a
//! replica (an acceptor), driven frame by frame.

use super::super::tests::{frame_in, lead_of_three, member, sent_on, step, up, with_manager};
use super::*;
use crate::protocol::cluster::Record;
use crate::protocol::cluster::View;

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
    let Ok(Message::Accept {
        record: proposal, ..
    }) = Message::decode(&accept)
    else {
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
    let view = n.view_of(hash64(key.as_bytes()));
    let prepare = |ballot| Message::Prepare {
        ballot,
        view: view.clone(),
        key: k.clone(),
    };
    assert_eq!(ask(&mut n, 20, prepare(b1)), promise(None, None));
    let proposal = record(&key, b1, b"x");
    let accept = Message::Accept {
        record: proposal.clone(),
        view: Some(view.clone()),
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
        fence: None,
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

/// The ring of nodes 1-3 (epoch 4), or with node 4 joining (epoch 5): it
/// takes node 3's place on some keys' lists.
fn ring_of(epoch: u64) -> String {
    let mut ring = format!(
        "epoch {epoch}\nreplicas 3 2 2\n\
        node 1 127.0.0.1:7001 up 1152921504606846976\n\
        node 2 127.0.0.1:7002 up 2305843009213693952\n\
        node 3 127.0.0.1:7003 up 3458764513820540928\n"
    );
    if epoch >= 5 {
        ring.push_str("node 4 127.0.0.1:7004 joining 1729382256910270464\n");
    }
    ring
}

#[test]
fn a_handed_over_proposal_refused_for_the_newcomers_ring_is_sent_again() {
    let (mut n, manager) = with_manager();
    let joined = Frame::new(op::JOINED, 0, 0, format!("1\n{}", ring_of(4)));
    let input = Input::Frame {
        conn: manager,
        frame: joined,
    };
    step(&mut n, 2, input);
    n.end_catch_up();
    // Node 1 accepted a proposal for a key node 4's join adds it to.
    let key = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| {
            n.serving_pref.get(hash64(k.as_bytes())) == [1, 2, 3] && {
                let h = hash64(k.as_bytes());
                (1..=(1u64 << 60)).contains(&h) || h > 3u64 << 60
            }
        })
        .expect("a key of node 1's first range");
    let peer = member(&mut n, 40);
    let view = n.view_of(hash64(key.as_bytes()));
    let mut accept = Message::Accept {
        record: record(&key, 10 << 16, b"x"),
        view: Some(view),
    }
    .encode();
    accept.client_id = 77;
    assert_eq!(
        one_reply(&frame_in(&mut n, 10, peer, accept), peer).op,
        op::OK
    );
    // The join: node 1 hands the proposal to node 4, which refuses it (its
    // ring does not list it for the key yet).
    let update = Frame::new(op::RING_UPDATE, 0, 0, ring_of(5));
    frame_in(&mut n, 11, manager, update);
    let link = ConnId::new(24, 1);
    let out = up(&mut n, 12, link, mesh::PEER_TAG + 4);
    let handed = sent_on(&out, link)
        .into_iter()
        .find(|f| f.op == op::ACCEPT)
        .expect("the proposal handed over");
    assert!(matches!(
        Message::decode(&handed),
        Ok(Message::Accept { view: None, .. })
    ));
    let refusal = Reply::Refused(Refusal::OffList { epoch: 4 });
    frame_in(&mut n, 13, link, answer(&handed, 4, refusal));
    // Sent again at the next tick.
    let out = step(&mut n, 14, Input::Timer { id: TIMER_TICK });
    let again: Vec<Frame> = (sent_on(&out, link).into_iter())
        .filter(|f| f.op == op::ACCEPT)
        .collect();
    assert_eq!(again.len(), 1, "{out:?}");
}

/// Node 1 of a ring (epoch 5) where node 4 joins: it takes node 3's place on
/// the returned key's list (serving 1 2 3, settled 1 4 2), which node 1
/// leads. Node 1 has links to the nodes in `linked` (on the returned conns);
/// the others failed to connect.
pub(in crate::storage::node) fn lead_while_4_joins(
    linked: &[u32],
) -> (StorageNode, Vec<ConnId>, String) {
    let (mut n, manager) = with_manager();
    let ring = "epoch 5\nreplicas 3 2 2\n\
        node 1 127.0.0.1:7001 up 1152921504606846976\n\
        node 2 127.0.0.1:7002 up 2305843009213693952\n\
        node 3 127.0.0.1:7003 up 3458764513820540928\n\
        node 4 127.0.0.1:7004 joining 1729382256910270464\n";
    let joined = Frame::new(op::JOINED, 0, 0, format!("1\n{ring}"));
    let input = Input::Frame {
        conn: manager,
        frame: joined,
    };
    step(&mut n, 2, input);
    n.end_catch_up();
    let links: Vec<ConnId> = (linked.iter())
        .map(|&id| {
            let conn = ConnId::new(20 + id, 1);
            up(&mut n, 3, conn, mesh::PEER_TAG + id as u64);
            conn
        })
        .collect();
    for id in [2, 3, 4].into_iter().filter(|id| !linked.contains(id)) {
        let tag = mesh::PEER_TAG + id as u64;
        step(&mut n, 3, Input::ConnectFailed { tag });
    }
    let key = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| {
            let h = hash64(k.as_bytes());
            n.serving_pref.get(h) == [1, 2, 3] && n.settled_pref.get(h) == [1, 4, 2]
        })
        .expect("a key node 4 takes from node 3");
    (n, links, key)
}

#[test]
fn while_a_move_is_pending_paxos_needs_a_majority_of_both_lists() {
    let (mut n, links, key) = lead_while_4_joins(&[2, 3, 4]);
    let client = ConnId::new(30, 1);
    let incr = Frame::new(op::INCR, 9, 0, format!("{} {key} 5", key.len()));
    let out = frame_in(&mut n, 10, client, incr);
    // Every node of both lists is asked, with the lead's view.
    let prepares: Vec<Frame> = links.iter().map(|&l| one(&out, l, op::PREPARE)).collect();
    let Ok(Message::Prepare { view, .. }) = Message::decode(&prepares[0]) else {
        panic!("{:?}", prepares[0]);
    };
    let expected = View {
        epoch: 5,
        serving: vec![1, 2, 3],
        settled: vec![1, 4, 2],
    };
    assert_eq!(view, expected);
    // Node 3 (leaving the key's list) promises: a majority of the serving
    // list with node 1, but only one node of the settled list.
    let out = frame_in(
        &mut n,
        11,
        links[1],
        answer(&prepares[1], 3, promise(None, None)),
    );
    assert!(sent(&out).is_empty(), "no accept yet: {out:?}");
    // Node 4 (the newcomer) promises: both majorities.
    let out = frame_in(
        &mut n,
        12,
        links[2],
        answer(&prepares[2], 4, promise(None, None)),
    );
    let accepts: Vec<Frame> = links.iter().map(|&l| one(&out, l, op::ACCEPT)).collect();
    let Ok(Message::Accept { view, .. }) = Message::decode(&accepts[0]) else {
        panic!("{:?}", accepts[0]);
    };
    assert_eq!(view, Some(expected));
    // Accepted by node 3: again only the serving list's majority.
    let out = frame_in(&mut n, 13, links[1], answer(&accepts[1], 3, Reply::Ok));
    assert!(sent(&out).is_empty(), "not chosen yet: {out:?}");
    let out = frame_in(&mut n, 14, links[2], answer(&accepts[2], 4, Reply::Ok));
    one(&out, links[2], op::REPLICATE);
    assert_eq!(n.engine().get(key.as_bytes()).as_deref(), Some(&b"5"[..]));
}

#[test]
fn an_unreachable_newcomer_counts_as_missing_not_skipped() {
    let (mut n, links, key) = lead_while_4_joins(&[2, 3]);
    let client = ConnId::new(30, 1);
    let create = Frame::new(op::CREATE, 9, 0, format!("{} {key}v", key.len()));
    let out = frame_in(&mut n, 10, client, create);
    let prepares: Vec<Frame> = links.iter().map(|&l| one(&out, l, op::PREPARE)).collect();
    let out = frame_in(
        &mut n,
        11,
        links[1],
        answer(&prepares[1], 3, promise(None, None)),
    );
    assert!(sent(&out).is_empty(), "no accept: {out:?}");
    // Node 2 refuses: of the settled list (1 4 2) only node 1 promised.
    let refusal = Reply::Refused(Refusal::CatchingUp);
    let out = frame_in(&mut n, 12, links[0], answer(&prepares[0], 2, refusal));
    let e = Error::from_payload(&one(&out, client, op::ERR).payload);
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
    assert!(n.engine().entry(key.as_bytes()).is_none());
}

#[test]
fn a_replica_refuses_paxos_from_a_ring_that_lists_the_key_otherwise() {
    let (mut n, _links, key) = lead_while_4_joins(&[]);
    let peer = member(&mut n, 40);
    let k = Bytes::copy_from_slice(key.as_bytes());
    let mut ask = |now: Millis, m: Message| {
        let mut f = m.encode();
        f.client_id = 77;
        let out = frame_in(&mut n, now, peer, f);
        Reply::decode(&one_reply(&out, peer)).unwrap()
    };
    let view = |epoch, settled: &[u32]| View {
        epoch,
        serving: vec![1, 2, 3],
        settled: settled.to_vec(),
    };
    let prepare = |ballot: u64, view: View| Message::Prepare {
        ballot,
        view,
        key: k.clone(),
    };
    // A lead still on epoch 4, before node 4's join: refused.
    let stale = Reply::Refused(Refusal::StaleRing { epoch: 5 });
    assert_eq!(ask(20, prepare(20 << 16, view(4, &[1, 2, 3]))), stale);
    let accept = Message::Accept {
        record: record(&key, 20 << 16, b"x"),
        view: Some(view(4, &[1, 2, 3])),
    };
    assert_eq!(ask(21, accept), stale);
    // An older ring that lists the key alike, or a newer one: served.
    let same = prepare(22 << 16, view(4, &[1, 4, 2]));
    assert_eq!(ask(22, same), promise(None, None));
    let newer = prepare(23 << 16, view(6, &[1, 4, 2]));
    assert_eq!(ask(23, newer), promise(None, None));
    // A move's copy of an accepted proposal carries no view: taken.
    let copy = Message::Accept {
        record: record(&key, 24 << 16, b"y"),
        view: None,
    };
    assert_eq!(ask(24, copy), Reply::Ok);
}

/// The frames `out` sends anywhere.
fn sent(out: &[Output]) -> Vec<&Frame> {
    (out.iter())
        .filter_map(|o| match o {
            Output::Send { frame, .. } => Some(frame),
            _ => None,
        })
        .collect()
}

#[test]
fn a_lead_whose_ring_flips_between_prepare_and_accept_starts_again() {
    let (mut n, links, key) = lead_while_4_joins(&[2, 3, 4]);
    let client = ConnId::new(30, 1);
    let incr = Frame::new(op::INCR, 9, 0, format!("{} {key} 5", key.len()));
    let out = frame_in(&mut n, 10, client, incr);
    let prepares: Vec<Frame> = links.iter().map(|&l| one(&out, l, op::PREPARE)).collect();
    // The join flips (epoch 6): the key's lists are 1 4 2 now.
    let flipped = ring_of(5)
        .replace("epoch 5", "epoch 6")
        .replace("joining", "up");
    let update = Frame::new(op::RING_UPDATE, 0, 0, flipped);
    frame_in(&mut n, 11, ConnId::new(1, 1), update);
    // Promises under the old view make both its majorities...
    frame_in(
        &mut n,
        12,
        links[1],
        answer(&prepares[1], 3, promise(None, None)),
    );
    let out = frame_in(
        &mut n,
        13,
        links[2],
        answer(&prepares[2], 4, promise(None, None)),
    );
    // ...but no accept goes out under it: a new prepare, by the new ring.
    let asked: Vec<Frame> = sent(&out).into_iter().cloned().collect();
    assert!(asked.iter().all(|f| f.op != op::ACCEPT), "{asked:?}");
    let again = one(&out, links[2], op::PREPARE);
    let Ok(Message::Prepare { view, .. }) = Message::decode(&again) else {
        panic!("{again:?}");
    };
    let expected = View {
        epoch: 6,
        serving: vec![1, 4, 2],
        settled: vec![1, 4, 2],
    };
    assert_eq!(view, expected);
}
