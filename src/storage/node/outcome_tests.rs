//! Unit tests of honest outcomes: a write that failed after it may have been
//! applied is answered `ERR UNKNOWN`; one applied nowhere, `ERR UNAVAILABLE` (or
//! `TIMEOUT`).

use super::tests::{lead_of_three, sent_on, step, three, up, with_manager};
use super::*;

fn request(n: &mut StorageNode, now: Millis, client: ConnId, frame: Frame) -> Vec<Output> {
    step(
        n,
        now,
        Input::Frame {
            conn: client,
            frame,
        },
    )
}

/// The error code and message of the one reply `out` sends to `client`.
fn error_to(out: &[Output], client: ConnId) -> Error {
    let replies = sent_on(out, client);
    assert_eq!(replies.len(), 1, "{out:?}");
    assert_eq!(replies[0].op, op::ERR, "{replies:?}");
    Error::from_payload(&replies[0].payload)
}

/// Ticks `n` from `from` in steps of 100 ms until `client` gets a reply.
fn tick_until_reply(n: &mut StorageNode, from: Millis, client: ConnId) -> Vec<Output> {
    for now in (from..from + 20_000).step_by(100) {
        let out = step(n, now, Input::Timer { id: TIMER_TICK });
        if !sent_on(&out, client).is_empty() {
            return out;
        }
    }
    panic!("no reply to the client in 20 s");
}

#[test]
fn a_write_stored_by_the_lead_whose_replicas_time_out_is_unknown() {
    let (mut n, links, key) = lead_of_three();
    let client = ConnId::new(30, 1);
    let put = Frame::new(op::PUT, 9, 0, format!("{} {key}v", key.len()));
    let out = request(&mut n, 10, client, put);
    // The lead stored it and sent it to both replicas; neither answers.
    assert_eq!(links.iter().flat_map(|&l| sent_on(&out, l)).count(), 2);
    assert!(sent_on(&out, client).is_empty());
    assert!(
        n.engine().get(key.as_bytes()).is_some(),
        "stored at the lead"
    );
    let out = tick_until_reply(&mut n, 100, client);
    let e = error_to(&out, client);
    assert_eq!(e.code, ErrorCode::Unknown, "{e}");
    assert!(
        e.message.contains("may or may not have been applied"),
        "{e}"
    );
}

#[test]
fn a_read_round_that_times_out_applied_nothing() {
    let (mut n, links, key) = lead_of_three();
    let client = ConnId::new(30, 1);
    let incr = Frame::new(op::INCR, 9, 0, format!("{} {key} 1", key.len()));
    let out = request(&mut n, 10, client, incr);
    let asks: Vec<Frame> = links.iter().flat_map(|&l| sent_on(&out, l)).collect();
    assert_eq!(asks.len(), 2, "{out:?}");
    assert!(asks.iter().all(|f| f.op == op::PREPARE), "{asks:?}");
    let out = tick_until_reply(&mut n, 100, client);
    let e = error_to(&out, client);
    assert_eq!(e.code, ErrorCode::Timeout, "{e}");
    assert!(n.engine().get(key.as_bytes()).is_none(), "nothing stored");
}

#[test]
fn a_write_with_no_replica_reachable_is_refused_before_it_is_stored() {
    let (mut n, links, key) = lead_of_three();
    for conn in links {
        step(&mut n, 5, Input::Closed { conn });
    }
    let client = ConnId::new(30, 1);
    for (i, frame) in [
        Frame::new(op::PUT, 9, 0, format!("{} {key}v", key.len())),
        Frame::new(op::INCR, 9, 0, format!("{} {key} 1", key.len())),
    ]
    .into_iter()
    .enumerate()
    {
        let out = request(&mut n, 10 + i as Millis, client, frame);
        let e = error_to(&out, client);
        assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
        assert!(links.iter().all(|&l| sent_on(&out, l).is_empty()));
    }
    assert!(n.engine().get(key.as_bytes()).is_none(), "nothing stored");
}

#[test]
fn a_forwarded_write_whose_link_breaks_after_sending_is_unknown() {
    let (mut n, links, key) = lead_of_three();
    // A key node 2 leads: node 1 forwards a client's write to it.
    let theirs = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| n.serving_pref.get(hash64(k.as_bytes())).first() == Some(&2))
        .expect("a key node 2 leads");
    assert_ne!(theirs, key);
    let client = ConnId::new(30, 1);
    let put = Frame::new(op::PUT, 9, 0, format!("{} {theirs}v", theirs.len()));
    let out = request(&mut n, 10, client, put);
    assert_eq!(sent_on(&out, links[0]).len(), 1, "forwarded: {out:?}");
    let out = step(&mut n, 11, Input::Closed { conn: links[0] });
    assert_eq!(error_to(&out, client).code, ErrorCode::Unknown);
}

#[test]
fn a_write_one_replica_acknowledged_and_the_rest_timed_out_is_unknown() {
    // N = 3 with W = 3: the lead and node 2 store the write, node 3 is silent.
    let (mut n, manager) = with_manager();
    let ring = three(3, ["up", "up", "up"]).replace("replicas 3 2 2", "replicas 3 2 3");
    let joined = Frame::new(op::JOINED, 0, 0, format!("1\n{ring}"));
    step(
        &mut n,
        2,
        Input::Frame {
            conn: manager,
            frame: joined,
        },
    );
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
    let client = ConnId::new(30, 1);
    let put = Frame::new(op::PUT, 9, 0, format!("{} {key}v", key.len()));
    let out = request(&mut n, 10, client, put);
    let to_two = sent_on(&out, links[0]);
    assert_eq!(to_two.len(), 1, "{out:?}");
    let ack = Frame::new(op::OK, to_two[0].client_id, 2, Bytes::new());
    let out = step(
        &mut n,
        11,
        Input::Frame {
            conn: links[0],
            frame: ack,
        },
    );
    assert!(sent_on(&out, client).is_empty(), "W = 3 is not met yet");
    let out = tick_until_reply(&mut n, 100, client);
    assert_eq!(error_to(&out, client).code, ErrorCode::Unknown);
}
