//! Unit tests of plain reads over replicas: a GET asks only the replicas its
//! read quorum needs; the others are spares, asked when an asked one fails the
//! round or after [`SPECULATIVE_READ_MS`](super::replication::SPECULATIVE_READ_MS)
//! (one timer at a time serves every read waiting for that delay).

use super::replication::{SPECULATIVE_READ_MS, TIMER_SPARES};
use super::tests::{frame_in, lead_of_three, sent_on, step};
use super::*;
use crate::protocol::cluster::Reply;

/// Sends a client's GET of `key` to the lead; returns the step's outputs and
/// which of `links` it asked.
fn get(
    n: &mut StorageNode,
    now: Millis,
    key: &str,
    links: [ConnId; 2],
) -> (Vec<Output>, Vec<usize>) {
    let frame = Frame::new(op::GET, 9, 0, key.to_string());
    let out = step(
        n,
        now,
        Input::Frame {
            conn: ConnId::new(30, 1),
            frame,
        },
    );
    let asked = (0..2)
        .filter(|&i| !sent_on(&out, links[i]).is_empty())
        .collect();
    (out, asked)
}

/// A replica's "no copy" answer to the one ask `out` sent on `link`.
fn not_found(out: &[Output], link: ConnId) -> Input {
    let ask = &sent_on(out, link)[0];
    let mut frame = Reply::NotFound.encode();
    frame.client_id = ask.client_id;
    Input::Frame { conn: link, frame }
}

fn asks_on(out: &[Output], link: ConnId) -> usize {
    let sent = sent_on(out, link);
    assert!(sent.iter().all(|f| f.op == op::REPL_READ), "{sent:?}");
    sent.len()
}

#[test]
fn a_get_asks_one_replica_for_r_two_and_the_spare_when_that_link_breaks() {
    let (mut n, links, key) = lead_of_three();
    let client = ConnId::new(30, 1);
    let (_, asked) = get(&mut n, 10, &key, links);
    assert_eq!(asked.len(), 1, "R = 2: one other copy is enough");
    let (first, spare) = (links[asked[0]], links[1 - asked[0]]);
    let out = step(&mut n, 11, Input::Closed { conn: first });
    assert_eq!(
        asks_on(&out, spare),
        1,
        "the spare is asked at once: {out:?}"
    );
    assert!(sent_on(&out, client).is_empty());
    // The spare's answer completes the read.
    let answer = not_found(&out, spare);
    let out = step(&mut n, 12, answer);
    let replies = sent_on(&out, client);
    assert_eq!(replies.len(), 1, "{out:?}");
    assert_eq!(replies[0].op, op::NOT_FOUND);
}

#[test]
fn a_get_whose_replica_is_slow_asks_the_spare_after_the_speculative_delay() {
    let (mut n, links, key) = lead_of_three();
    let (out, asked) = get(&mut n, 10, &key, links);
    let spare = links[1 - asked[0]];
    let timer = out
        .iter()
        .find_map(|o| match o {
            Output::Timer { at, id } if *id == TIMER_SPARES => Some((*at, *id)),
            _ => None,
        })
        .expect("a speculative-read timer");
    assert_eq!(timer.0, 10 + SPECULATIVE_READ_MS);
    let out = step(&mut n, timer.0, Input::Timer { id: timer.1 });
    assert_eq!(asks_on(&out, spare), 1, "{out:?}");
}

#[test]
fn the_speculative_timer_of_an_answered_get_does_nothing() {
    let (mut n, links, key) = lead_of_three();
    let (out, asked) = get(&mut n, 100, &key, links);
    let first = links[asked[0]];
    let id = out
        .iter()
        .find_map(|o| match o {
            Output::Timer { id, .. } if *id == TIMER_SPARES => Some(*id),
            _ => None,
        })
        .expect("a timer");
    let answer = not_found(&out, first);
    let replies = step(&mut n, 101, answer);
    assert_eq!(
        sent_on(&replies, ConnId::new(30, 1)).len(),
        1,
        "{replies:?}"
    );
    let out = step(&mut n, 150, Input::Timer { id });
    assert!(
        links.iter().all(|&l| sent_on(&out, l).is_empty()),
        "{out:?}"
    );
}

#[test]
fn a_conditional_op_prepares_at_every_replica() {
    let (mut n, links, key) = lead_of_three();
    let incr = Frame::new(op::INCR, 9, 0, format!("{} {key} 1", key.len()));
    let out = step(
        &mut n,
        10,
        Input::Frame {
            conn: ConnId::new(30, 1),
            frame: incr,
        },
    );
    for l in links {
        let sent = sent_on(&out, l);
        assert_eq!(sent.len(), 1, "{out:?}");
        assert_eq!(sent[0].op, op::PREPARE, "{out:?}");
    }
}

#[test]
fn one_speculative_timer_at_a_time_serves_every_read_in_turn() {
    let (mut n, links, key) = lead_of_three();
    let timers = |out: &[Output]| -> Vec<Millis> {
        out.iter()
            .filter_map(|o| match o {
                Output::Timer { at, id } if *id == TIMER_SPARES => Some(*at),
                _ => None,
            })
            .collect()
    };
    let (out, asked) = get(&mut n, 10, &key, links);
    assert_eq!(timers(&out), vec![10 + SPECULATIVE_READ_MS]);
    let (out, asked2) = get(&mut n, 20, &key, links);
    assert!(timers(&out).is_empty(), "one timer is set: {out:?}");
    assert_eq!(asked, asked2, "both reads ask the same replica first");
    let spare = links[1 - asked[0]];
    // The first read's spare is due; the second's is not yet: the timer is
    // set again for it.
    let out = step(
        &mut n,
        10 + SPECULATIVE_READ_MS,
        Input::Timer { id: TIMER_SPARES },
    );
    assert_eq!(asks_on(&out, spare), 1, "{out:?}");
    assert_eq!(timers(&out), vec![20 + SPECULATIVE_READ_MS], "{out:?}");
    let out = step(
        &mut n,
        20 + SPECULATIVE_READ_MS,
        Input::Timer { id: TIMER_SPARES },
    );
    assert_eq!(asks_on(&out, spare), 1, "{out:?}");
    assert!(timers(&out).is_empty(), "none left: {out:?}");
}

/// Two keys node 1 leads whose first other replica is the same node; the
/// index in `links` of that replica's link.
fn two_keys_asking_one_replica(n: &StorageNode) -> ([String; 2], usize) {
    let pref = |k: &String| n.serving_pref.get(hash64(k.as_bytes())).to_vec();
    let led: Vec<String> = (0..1000)
        .map(|i| format!("k{i}"))
        .filter(|k| pref(k)[0] == 1)
        .collect();
    let first = led[0].clone();
    let second = (led[1..].iter())
        .find(|k| pref(k)[1] == pref(&first)[1])
        .expect("a second key")
        .clone();
    let link = (pref(&first)[1] - 2) as usize;
    ([first, second], link)
}

/// Two clients' GETs of `keys` in one loop turn: the turn's outputs.
fn two_gets_in_one_turn(n: &mut StorageNode, keys: &[String; 2]) -> Vec<Output> {
    let mut out = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let frame = Frame::new(op::GET, 9, 0, key.clone());
        let conn = ConnId::new(30 + i as u32, 1);
        n.step(10, Input::Frame { conn, frame }, &mut out);
    }
    assert!(
        links_of(&out).is_empty(),
        "nothing is asked before the turn ends: {out:?}"
    );
    n.turn_end(10, &mut out);
    out
}

fn links_of(out: &[Output]) -> Vec<Frame> {
    [ConnId::new(12, 1), ConnId::new(13, 1)]
        .iter()
        .flat_map(|&l| sent_on(out, l))
        .collect()
}

#[test]
fn the_reads_of_one_turn_to_one_replica_leave_as_one_message() {
    let (mut n, links, _) = lead_of_three();
    let (keys, link) = two_keys_asking_one_replica(&n);
    let out = two_gets_in_one_turn(&mut n, &keys);
    let asks = sent_on(&out, links[link]);
    assert_eq!(asks.len(), 1, "{out:?}");
    let Ok(Message::ReplReads { keys: asked, .. }) = Message::decode(&asks[0]) else {
        panic!("not a REPL_READS: {:?}", asks[0]);
    };
    let asked: Vec<Bytes> = asked.into_iter().map(|(_, k)| k).collect();
    assert_eq!(asked, keys.map(Bytes::from).to_vec());
    // One COPIES answers both, in order.
    let found = Reply::Found(Record {
        key: asked[1].clone(),
        version: 7,
        value: Some(Bytes::from_static(b"v")),
    });
    let mut copies = Reply::Copies(vec![Reply::NotFound.encode(), found.encode()]).encode();
    copies.client_id = asks[0].client_id;
    let out = frame_in(&mut n, 11, links[link], copies);
    let replies = [30, 31].map(|c| sent_on(&out, ConnId::new(c, 1)));
    assert_eq!(replies[0][0].op, op::NOT_FOUND, "{out:?}");
    assert_eq!(replies[1][0].op, op::VALUE, "{out:?}");
    assert_eq!(&replies[1][0].payload[..], b"v");
}

#[test]
fn a_batch_of_reads_the_replica_refuses_asks_each_read_s_spare() {
    let (mut n, links, _) = lead_of_three();
    let (keys, link) = two_keys_asking_one_replica(&n);
    let out = two_gets_in_one_turn(&mut n, &keys);
    let ask = &sent_on(&out, links[link])[0];
    // A replica that does not know REPL_READS answers ERR BADOP.
    let e = Error::new(ErrorCode::BadOp, "unknown op");
    let mut refusal = Reply::Failed(e).encode();
    refusal.client_id = ask.client_id;
    let out = frame_in(&mut n, 11, links[link], refusal);
    assert_eq!(asks_on(&out, links[1 - link]), 2, "{out:?}");
}

#[test]
fn a_replica_answers_a_batch_of_reads_key_by_key() {
    let (mut r, _, _) = lead_of_three();
    let peer = super::tests::member(&mut r, 40);
    let (keys, _) = two_keys_asking_one_replica(&r);
    r.store(
        (keys[1].as_bytes(), hash64(keys[1].as_bytes())),
        5,
        Some(b"x"),
        None,
    );
    let marked = keys
        .clone()
        .map(|k| (r.fence_of(hash64(k.as_bytes())).mark, Bytes::from(k)));
    let epoch = r.ring.epoch;
    let mut ask = Message::ReplReads {
        epoch,
        keys: marked.to_vec(),
    }
    .encode();
    ask.client_id = 77;
    let out = frame_in(&mut r, 12, peer, ask);
    let reply = sent_on(&out, peer);
    assert_eq!(reply.len(), 1, "{out:?}");
    assert_eq!(reply[0].client_id, 77);
    let Ok(Reply::Copies(answers)) = Reply::decode(&reply[0]) else {
        panic!("not a COPIES: {:?}", reply[0]);
    };
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0].op, op::NOT_FOUND);
    let Ok(Reply::Found(rec)) = Reply::decode(&answers[1]) else {
        panic!("{answers:?}");
    };
    assert_eq!((rec.version, rec.value.as_deref()), (5, Some(&b"x"[..])));
}

#[test]
fn a_value_too_large_for_a_batch_is_asked_for_alone() {
    let (mut n, links, _) = lead_of_three();
    let (keys, link) = two_keys_asking_one_replica(&n);
    let out = two_gets_in_one_turn(&mut n, &keys);
    let ask = &sent_on(&out, links[link])[0];
    // The second key's value did not fit: an empty REPL_READ in its place.
    let alone = Frame::new(op::REPL_READ, 0, 0, Bytes::new());
    let mut copies = Reply::Copies(vec![Reply::NotFound.encode(), alone]).encode();
    copies.client_id = ask.client_id;
    let out = frame_in(&mut n, 11, links[link], copies);
    assert_eq!(sent_on(&out, ConnId::new(30, 1))[0].op, op::NOT_FOUND);
    let again = sent_on(&out, links[link]);
    assert_eq!(again.len(), 1, "{out:?}");
    assert_eq!(again[0].op, op::REPL_READ);
    let Ok(Message::ReplRead { key, .. }) = Message::decode(&again[0]) else {
        panic!("not a REPL_READ: {:?}", again[0]);
    };
    assert_eq!(&key[..], keys[1].as_bytes());
    assert!(
        sent_on(&out, links[1 - link]).is_empty(),
        "no spare: {out:?}"
    );
    // Its answer completes the second read.
    let mut found = Reply::NotFound.encode();
    found.client_id = again[0].client_id;
    let out = frame_in(&mut n, 12, links[link], found);
    assert_eq!(sent_on(&out, ConnId::new(31, 1))[0].op, op::NOT_FOUND);
}

#[test]
fn a_read_queued_for_the_turn_end_leaves_before_a_later_write_of_its_key() {
    let (mut n, links, key) = lead_of_three();
    let mut out = Vec::new();
    let get = Frame::new(op::GET, 9, 0, key.clone());
    let put = Frame::new(op::PUT, 10, 0, format!("{} {key}v", key.len()));
    for frame in [get, put] {
        let conn = ConnId::new(30, 1);
        n.step(10, Input::Frame { conn, frame }, &mut out);
    }
    n.turn_end(10, &mut out);
    // On the link the read was asked on, its ask comes first.
    let asked = links
        .iter()
        .map(|&l| sent_on(&out, l))
        .find(|sent| sent.iter().any(|f| f.op == op::REPL_READ));
    let ops: Vec<u8> = asked.expect("a read ask").iter().map(|f| f.op).collect();
    assert_eq!(ops, vec![op::REPL_READ, op::REPLICATE], "{out:?}");
}

/// The speculative-read timer's (at, id) in `out`.
fn spare_timer(out: &[Output]) -> (Millis, u64) {
    out.iter()
        .find_map(|o| match o {
            Output::Timer { at, id } if *id == TIMER_SPARES => Some((*at, *id)),
            _ => None,
        })
        .expect("a speculative-read timer")
}

/// A client's PUT of `key` to the lead (on the GET's connection), at `now`.
fn put(n: &mut StorageNode, now: Millis, key: &str) -> Vec<Output> {
    let frame = Frame::new(op::PUT, 10, 0, format!("{} {key}v2", key.len()));
    step(
        n,
        now,
        Input::Frame {
            conn: ConnId::new(30, 1),
            frame,
        },
    )
}

#[test]
fn a_get_overtaken_by_a_put_of_its_key_does_not_ask_its_spare_on_the_timer() {
    let (mut n, links, key) = lead_of_three();
    let (out, asked) = get(&mut n, 10, &key, links);
    let (first, spare) = (links[asked[0]], links[1 - asked[0]]);
    let timer = spare_timer(&out);
    // The client pipelined a PUT of the key after its GET: its REPLICATE may
    // reach the spare before any ask would.
    let out = put(&mut n, 11, &key);
    assert!(!sent_on(&out, spare).is_empty(), "{out:?}");
    let out = step(&mut n, timer.0, Input::Timer { id: timer.1 });
    assert!(
        sent_on(&out, spare).iter().all(|f| f.op != op::REPL_READ),
        "the spare could answer with the PUT: {out:?}"
    );
    // The asked replica fails the read: only now is the spare asked.
    let out = step(&mut n, timer.0 + 1, Input::Closed { conn: first });
    assert_eq!(asks_on_reads(&out, spare), 1, "{out:?}");
}

#[test]
fn a_put_of_another_key_leaves_a_slow_gets_speculation_alone() {
    let (mut n, links, key) = lead_of_three();
    let (out, asked) = get(&mut n, 10, &key, links);
    let spare = links[1 - asked[0]];
    let timer = spare_timer(&out);
    let other = (0..1000)
        .map(|i| format!("o{i}"))
        .find(|k| {
            let h = hash64(k.as_bytes());
            n.serving_pref.get(h).first() == Some(&1) && (h ^ hash64(key.as_bytes())) & 4095 != 0
        })
        .expect("another key node 1 leads, in another slot");
    put(&mut n, 11, &other);
    let out = step(&mut n, timer.0, Input::Timer { id: timer.1 });
    assert_eq!(asks_on_reads(&out, spare), 1, "{out:?}");
}

/// The REPL_READs `out` sends on `link` (other frames, such as a write's
/// REPLICATE, may go there too).
fn asks_on_reads(out: &[Output], link: ConnId) -> usize {
    (sent_on(out, link).iter())
        .filter(|f| f.op == op::REPL_READ)
        .count()
}

/// The plain-read asks `out` sends on `link` (moves send data too).
fn reads_on(out: &[Output], link: ConnId) -> Vec<Frame> {
    let reads = sent_on(out, link).into_iter();
    reads.filter(|f| f.op == op::REPL_READ).collect()
}

#[test]
fn a_get_during_a_move_needs_r_copies_of_both_lists() {
    // The key's serving list is [1, 2, 3]; node 4's join makes its settled
    // list [1, 4, 2].
    let (mut n, links, key) = super::replication::tests::lead_while_4_joins(&[2, 3, 4]);
    let [two, three, four] = [links[0], links[1], links[2]];
    let client = ConnId::new(30, 1);
    let frame = Frame::new(op::GET, 9, 0, key.clone());
    let out = step(
        &mut n,
        10,
        Input::Frame {
            conn: client,
            frame,
        },
    );
    // Every node of both lists is asked: no spares.
    for link in [two, three, four] {
        assert_eq!(reads_on(&out, link).len(), 1, "{link:?}: {out:?}");
    }
    // Node 3's answer makes R of the serving list with this node's copy, but
    // only one copy of the settled list [1, 4, 2]: no answer yet.
    let answer = |out: &[Output], link, reply: Reply| {
        let mut frame = reply.encode();
        frame.client_id = reads_on(out, link)[0].client_id;
        Input::Frame { conn: link, frame }
    };
    let after = step(&mut n, 11, answer(&out, three, Reply::NotFound));
    assert!(sent_on(&after, client).is_empty(), "{after:?}");
    // Node 4 (the newcomer) holds a write the old list lacks: a lead on the
    // ring after the flip acknowledged it with W of the settled list.
    let found = Reply::Found(Record {
        key: Bytes::from(key.clone()),
        version: 7 << 16,
        value: Some(Bytes::from_static(b"new")),
    });
    let after = step(&mut n, 12, answer(&out, four, found));
    // It is the answer, once W of the serving list hold it: here and node 3.
    let repair = sent_on(&after, three);
    assert_eq!(repair.len(), 1, "{after:?}");
    assert_eq!(repair[0].op, op::REPLICATE);
    assert!(sent_on(&after, client).is_empty(), "{after:?}");
    let mut ok = Reply::Ok.encode();
    ok.client_id = repair[0].client_id;
    let done = step(
        &mut n,
        13,
        Input::Frame {
            conn: three,
            frame: ok,
        },
    );
    let replies = sent_on(&done, client);
    assert_eq!(replies.len(), 1, "{done:?}");
    assert_eq!(
        (replies[0].op, &replies[0].payload[..]),
        (op::VALUE, &b"new"[..])
    );
}

#[test]
fn a_read_retried_in_the_turn_its_old_spare_timer_fires_still_asks() {
    let (mut n, links, key) = lead_of_three();
    let (out, asked) = get(&mut n, 10, &key, links);
    let (first, spare) = (links[asked[0]], links[1 - asked[0]]);
    let refuse = |out: &[Output], link| {
        let mut frame = Refusal::StaleRing { epoch: 9 }.encode();
        frame.client_id = sent_on(out, link)[0].client_id;
        Input::Frame { conn: link, frame }
    };
    // Both replicas' rings are newer: the spare is asked at once, and its
    // refusal fails the round, to be tried again at the next tick.
    let out = step(&mut n, 11, refuse(&out, first));
    let out = step(&mut n, 12, refuse(&out, spare));
    assert!(sent_on(&out, ConnId::new(30, 1)).is_empty(), "{out:?}");
    // The tick and the first attempt's speculative timer in one turn.
    let mut out = Vec::new();
    n.step(
        10 + SPECULATIVE_READ_MS,
        Input::Timer { id: TIMER_TICK },
        &mut out,
    );
    let spares = Input::Timer { id: TIMER_SPARES };
    n.step(10 + SPECULATIVE_READ_MS, spares, &mut out);
    n.turn_end(10 + SPECULATIVE_READ_MS, &mut out);
    // The retried read asks its first replica again; its spare waits for
    // the new attempt's own delay (the old timer must not ask it, sending
    // the turn's queue while the read is out of the pending map and losing
    // the new ask).
    let reads = |l| {
        (sent_on(&out, l).iter())
            .filter(|f| f.op == op::REPL_READ)
            .count()
    };
    assert_eq!((reads(first), reads(spare)), (1, 0), "{out:?}");
}

#[test]
fn a_put_refused_by_replicas_on_a_newer_ring_is_sent_again_at_its_version() {
    let (mut n, links, key) = lead_of_three();
    let client = ConnId::new(30, 1);
    let out = put(&mut n, 10, &key);
    let first: Vec<Frame> = links.iter().map(|&l| sent_on(&out, l)[0].clone()).collect();
    // Both replicas' rings are newer and list the key otherwise.
    for (i, &link) in links.iter().enumerate() {
        let mut frame = Refusal::StaleRing { epoch: 9 }.encode();
        frame.client_id = first[i].client_id;
        let out = step(&mut n, 11, Input::Frame { conn: link, frame });
        assert!(sent_on(&out, client).is_empty(), "no answer yet: {out:?}");
    }
    // At the next tick the same record goes out again (here the ring has
    // not changed, so to the same replicas), and their OKs answer the PUT.
    let out = step(&mut n, 100, Input::Timer { id: TIMER_TICK });
    let again = sent_on(&out, links[0]);
    let again: Vec<&Frame> = again.iter().filter(|f| f.op == op::REPLICATE).collect();
    assert_eq!(again.len(), 1, "{out:?}");
    let record = |f: &Frame| match Message::decode(f) {
        Ok(Message::Replicate { record, .. }) => (record.version, record.value),
        other => panic!("not a REPLICATE: {other:?}"),
    };
    assert_eq!(record(again[0]), record(&first[0]), "the same version");
    let mut ok = Reply::Ok.encode();
    ok.client_id = again[0].client_id;
    let done = step(
        &mut n,
        101,
        Input::Frame {
            conn: links[0],
            frame: ok,
        },
    );
    let replies = sent_on(&done, client);
    assert_eq!(replies.len(), 1, "{done:?}");
    assert_eq!(replies[0].op, op::OK);
}

#[test]
fn a_refused_put_is_not_sent_again_once_the_lead_s_lease_ran_out() {
    let (mut n, links, key) = lead_of_three();
    let client = ConnId::new(30, 1);
    let out = put(&mut n, 10, &key);
    for &link in &links {
        let mut frame = Refusal::StaleRing { epoch: 9 }.encode();
        frame.client_id = sent_on(&out, link)[0].client_id;
        step(&mut n, 11, Input::Frame { conn: link, frame });
    }
    // The manager has not been heard from: the lease ends before the tick.
    n.membership.lease_until = 50;
    let out = step(&mut n, 100, Input::Timer { id: TIMER_TICK });
    let replicates = |l| {
        (sent_on(&out, l).iter())
            .filter(|f| f.op == op::REPLICATE)
            .count()
    };
    assert_eq!(replicates(links[0]) + replicates(links[1]), 0, "{out:?}");
    let replies = sent_on(&out, client);
    assert_eq!(replies.len(), 1, "{out:?}");
    let text = String::from_utf8_lossy(&replies[0].payload).into_owned();
    assert!(text.starts_with("UNKNOWN"), "stored here already: {text}");
}
