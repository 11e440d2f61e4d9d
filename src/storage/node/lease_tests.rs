//! The self-fence (`lease.rs`): with no lease running a node serves no data,
//! as a lead or as a replica, and serves again once the manager renews it.

use super::tests::{member, sent, step_only, three, with_manager};
use super::*;
use crate::protocol::cluster::View;

/// The manager's `LEASE` for a message sent at `sent`, lasting `lease_ms`.
fn lease(sent: Millis, lease_ms: Millis) -> Frame {
    Message::Lease { sent, lease_ms }.encode()
}

/// The reply to a client's `o` with `payload` at `now`: (op, payload text).
fn ask(n: &mut StorageNode, now: Millis, o: u8, payload: &str) -> (u8, String) {
    let conn = ConnId::new(20, 1);
    let frame = Frame::new(o, 1, 0, payload.to_string());
    let s = sent(&step_only(n, now, Input::Frame { conn, frame }));
    assert_eq!(s.len(), 1, "{s:?}");
    (s[0].1, String::from_utf8_lossy(&s[0].2).into())
}

#[test]
fn a_lead_serves_data_only_while_its_lease_runs() {
    let (mut n, link) = with_manager();
    let ring = "1\nepoch 1\nreplicas 1 1 1\nnode 1 127.0.0.1:7001 up 5\n";
    let joined = Frame::new(op::JOINED, 0, 0, ring);
    step_only(
        &mut n,
        2,
        Input::Frame {
            conn: link,
            frame: joined,
        },
    );
    // Registered, but no lease yet.
    let no_lease = (
        op::ERR,
        "UNAVAILABLE no lease from the manager yet".to_string(),
    );
    assert_eq!(ask(&mut n, 3, op::PUT, "1 kv"), no_lease);
    assert_eq!(ask(&mut n, 3, op::GET, "k"), no_lease);
    assert_eq!(ask(&mut n, 3, op::PING, "hi"), (op::PONG, "hi".into()));
    // The lease for the NODE_JOIN sent at 1: served until 1 + 1000.
    step_only(
        &mut n,
        4,
        Input::Frame {
            conn: link,
            frame: lease(1, 1_000),
        },
    );
    assert_eq!(ask(&mut n, 5, op::PUT, "1 kv"), (op::OK, String::new()));
    assert_eq!(ask(&mut n, 1_000, op::GET, "k"), (op::VALUE, "v".into()));
    // A lease for a message sent after now is not believed.
    step_only(
        &mut n,
        1_000,
        Input::Frame {
            conn: link,
            frame: lease(1_500, 1_000),
        },
    );
    let expired = (
        op::ERR,
        "UNAVAILABLE not in touch with the manager for 1000 ms: lease expired".to_string(),
    );
    assert_eq!(ask(&mut n, 1_001, op::GET, "k"), expired);
    assert_eq!(ask(&mut n, 1_001, op::PUT, "1 kw").0, op::ERR);
    assert_eq!(ask(&mut n, 1_001, op::SCAN, "0 10").0, op::ERR);
    assert_eq!(
        n.engine().get(b"k").as_deref(),
        Some(&b"v"[..]),
        "nothing stored"
    );
    // The next heartbeat carries the node's clock; its lease serves again.
    let out = step_only(
        &mut n,
        1_200,
        Input::Timer {
            id: TIMER_HEARTBEAT,
        },
    );
    let beat = sent(&out);
    assert_eq!((beat[0].1, &beat[0].2[..]), (op::HEARTBEAT, &b"1 1200"[..]));
    step_only(
        &mut n,
        1_201,
        Input::Frame {
            conn: link,
            frame: lease(1_200, 1_000),
        },
    );
    assert_eq!(ask(&mut n, 1_202, op::GET, "k"), (op::VALUE, "v".into()));
    // An older lease does not shorten it.
    step_only(
        &mut n,
        1_203,
        Input::Frame {
            conn: link,
            frame: lease(1, 1_000),
        },
    );
    assert_eq!(ask(&mut n, 2_199, op::GET, "k"), (op::VALUE, "v".into()));
    assert_eq!(ask(&mut n, 2_200, op::GET, "k").0, op::ERR);
}

#[test]
fn a_replica_without_a_lease_refuses_a_leads_rounds_but_takes_moved_data() {
    let (mut n, link) = with_manager();
    let joined = Frame::new(op::JOINED, 0, 0, format!("1\n{}", three(3, ["up"; 3])));
    step_only(
        &mut n,
        2,
        Input::Frame {
            conn: link,
            frame: joined,
        },
    );
    n.end_catch_up();
    step_only(
        &mut n,
        3,
        Input::Frame {
            conn: link,
            frame: lease(2, 1_000),
        },
    );
    let peer = member(&mut n, 8);
    let record = |version: u64| Record {
        key: Bytes::from_static(b"k"),
        version,
        value: Some(Bytes::from_static(b"v")),
    };
    let view = View {
        epoch: 3,
        serving: vec![1, 2, 3],
        settled: vec![1, 2, 3],
    };
    let ask = |n: &mut StorageNode, now: Millis, m: Message| {
        let mut frame = m.encode();
        frame.client_id = 5;
        let s = sent(&step_only(n, now, Input::Frame { conn: peer, frame }));
        assert_eq!(s.len(), 1, "{s:?}");
        (s[0].1, String::from_utf8_lossy(&s[0].2).into_owned())
    };
    let key = Bytes::from_static(b"k");
    // A lead on this node's ring.
    let fence = n.fence_of(hash64(&key));
    let replicate = |v| Message::Replicate {
        base: None,
        fence: Some(fence),
        record: record(v),
    };
    // While the lease runs, a replica as before.
    assert_eq!(ask(&mut n, 10, replicate(1 << 20)).0, op::OK);
    assert_eq!(
        ask(
            &mut n,
            11,
            Message::ReplRead {
                fence,
                key: key.clone()
            }
        )
        .0,
        op::VALUE
    );
    // After it: every message of a lead's round gets ERR UNAVAILABLE.
    let rounds = [
        replicate(2 << 20),
        Message::ReplRead {
            fence,
            key: key.clone(),
        },
        Message::ReplReads {
            epoch: fence.epoch,
            keys: vec![(fence.mark, key.clone())],
        },
        Message::Prepare {
            ballot: 3 << 20,
            view: view.clone(),
            key: key.clone(),
        },
        Message::Accept {
            record: record(3 << 20),
            view: Some(view.clone()),
        },
    ];
    for m in rounds {
        let what = op::name(m.op());
        let (o, text) = ask(&mut n, 1_002, m);
        assert_eq!(o, op::ERR, "{what}");
        assert!(
            text.starts_with("UNAVAILABLE not in touch"),
            "{what}: {text}"
        );
        assert!(text.ends_with("lease expired"), "{what}: {text}");
    }
    // The refused REPLICATE's record is kept all the same (a copy, counted
    // by nobody); nothing else changed.
    assert_eq!(n.engine().version(b"k"), 2 << 20);
    // A move's copy with a base (N = 1) is refused whole: its sender applies
    // the write only if this node took it.
    let copy = Message::Replicate {
        base: Some(2 << 20),
        fence: None,
        record: record(5 << 20),
    };
    assert_eq!(ask(&mut n, 1_002, copy).0, op::ERR);
    assert_eq!(n.engine().version(b"k"), 2 << 20);
    // A move's data is taken still: storing a copy decides nothing.
    let migrate = Message::Migrate {
        records: vec![record(4 << 20)],
    };
    assert_eq!(ask(&mut n, 1_003, migrate).0, op::OK);
    assert_eq!(n.engine().version(b"k"), 4 << 20);
}
