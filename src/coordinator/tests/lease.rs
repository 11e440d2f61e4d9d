//! Leases (`lease.rs`): every heartbeat and registration is answered with
//! one; a dropped node's flip, a one-step drop and a restarted manager wait
//! for a node's lease to be over.

use super::*;

/// The frames sent on `conn` in `out`, as (op, payload text), in order.
fn sent_on(out: &[Output], conn: ConnId) -> Vec<(u8, String)> {
    (out.iter())
        .filter_map(|o| match o {
            Output::Send { conn: c, frame } if *c == conn => {
                Some((frame.op, String::from_utf8_lossy(&frame.payload).into()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn heartbeats_and_registrations_are_answered_with_leases() {
    let mut m = Manager::new(ManagerConfig {
        lease_ms: 4_000,
        ..ManagerConfig::default()
    });
    let a = ConnId::new(1, 1);
    // NODE_JOIN with SENT 5: JOINED, then the lease echoing it, last (after
    // the ring pushed to every node).
    let join = join_frame(&mut m, 10, a, "127.0.0.1:7001", " 8 5");
    let out = sent_on(
        &step(
            &mut m,
            10,
            Input::Frame {
                conn: a,
                frame: join,
            },
        ),
        a,
    );
    assert_eq!(out[0].0, op::JOINED);
    assert_eq!(out.last(), Some(&(op::LEASE, "5 4000".into())), "{out:?}");
    // Each heartbeat gets one, after the ring it brings (back up).
    let hb = |sent: &str| Input::Frame {
        conn: a,
        frame: Frame::new(op::HEARTBEAT, 0, 1, format!("3 {sent}")),
    };
    assert_eq!(
        sent_on(&step(&mut m, 500, hb("490")), a),
        [(op::LEASE, "490 4000".into())]
    );
    step(&mut m, 3_000, Input::Timer { id: TIMER_TICK });
    assert_eq!(state(&m, 1), Some(NodeState::Down));
    let out = sent_on(&step(&mut m, 3_100, hb("3090")), a);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        (out[0].0, out[1].clone()),
        (op::RING_UPDATE, (op::LEASE, "3090 4000".into()))
    );
    // A NODE_JOIN without SENT gets no lease; nor does a heartbeat on a link
    // that is not a member's.
    let b = ConnId::new(2, 1);
    let join = join_frame(&mut m, 3_200, b, "127.0.0.1:7002", " 8");
    let out = sent_on(
        &step(
            &mut m,
            3_200,
            Input::Frame {
                conn: b,
                frame: join,
            },
        ),
        b,
    );
    assert!(out.iter().all(|o| o.0 != op::LEASE), "{out:?}");
    let stranger = ConnId::new(3, 1);
    let frame = Frame::new(op::HEARTBEAT, 0, 0, "0 0");
    let out = sent_on(
        &step(
            &mut m,
            3_300,
            Input::Frame {
                conn: stranger,
                frame,
            },
        ),
        stranger,
    );
    assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), [op::ERR]);
}

/// A dropped node's move flips only once its lease is over, counted from
/// when the manager last heard from it; no heartbeat of it renews it then.
#[test]
fn a_dropped_nodes_move_flips_once_its_lease_is_over() {
    let (mut m, conns) = settled(4, 2, 2);
    // Node 4 last heard from at 1 000; its link then breaks.
    beats_then_tick(&mut m, 1_000, &conns);
    step(&mut m, 1_100, Input::Closed { conn: conns[3] });
    let admin = ConnId::new(9, 1);
    make_admin(&mut m, admin);
    let frame = Frame::new(op::DROP, 0, 0, "4");
    let out = step(&mut m, 1_200, Input::Frame { conn: admin, frame });
    assert_eq!(
        reply(&out),
        (op::OK, String::new()),
        "a move starts at once"
    );
    handoffs_done(&mut m, 1_300, &conns[..3]);
    let over = 1_000 + 10_000 + LEASE_MARGIN_MS;
    for now in [5_000, 9_000, over] {
        beats_then_tick(&mut m, now, &conns[..3]);
        assert_eq!(state(&m, 4), Some(NodeState::Leaving), "at {now}");
    }
    beats_then_tick(&mut m, over + 1, &conns[..3]);
    assert_eq!(state(&m, 4), None, "flipped");
}

/// A drop that changes the lists at once (N = 1 here) waits for the lease:
/// the operator's DROP is refused until then, and `dead_after_ms` drops the
/// node only then.
#[test]
fn a_one_step_drop_waits_for_the_lease() {
    let (mut m, (a, b, c)) = three_serving(ManagerConfig {
        dead_after_ms: Some(1_000),
        ..ManagerConfig::default()
    });
    step(&mut m, 10, Input::Closed { conn: c });
    let admin = ConnId::new(9, 1);
    make_admin(&mut m, admin);
    let drop = |m: &mut Manager, now| {
        let frame = Frame::new(op::DROP, 0, 0, "3");
        reply(&step(m, now, Input::Frame { conn: admin, frame }))
    };
    let (code, text) = drop(&mut m, 5_000);
    assert_eq!(code, op::ERR);
    assert!(
        text.starts_with("UNAVAILABLE node 3 may still be serving") && text.contains("5201 ms"),
        "{text}"
    );
    // Down well past dead_after, but its lease may still run.
    beats_then_tick(&mut m, LEASE_OVER - 1, &[a, b]);
    assert_eq!(state(&m, 3), Some(NodeState::Down));
    beats_then_tick(&mut m, LEASE_OVER, &[a, b]);
    assert_eq!(state(&m, 3), None, "dropped by dead_after");
    // The operator's DROP once the lease is over.
    let (mut m, (_, _, c)) = three_serving(ManagerConfig::default());
    step(&mut m, 10, Input::Closed { conn: c });
    make_admin(&mut m, admin);
    assert_eq!(drop(&mut m, LEASE_OVER), (op::OK, String::new()));
    assert_eq!(state(&m, 3), None);
}

/// A restarted manager takes a node it has not heard from as seen when it
/// learned of it: a lease granted just before the restart may still run.
#[test]
fn a_restarted_manager_waits_a_lease_for_nodes_it_has_not_heard_from() {
    const RING: &str = "epoch 5\nreplicas 3 2 2\n\
        node 1 127.0.0.1:7001 up 10,40\n\
        node 2 127.0.0.1:7002 up 20,50\n\
        node 3 127.0.0.1:7003 up 30,60\n\
        node 4 127.0.0.1:7004 up 35,70\n";
    let mut m = Manager::new(ManagerConfig {
        replicas: 3,
        read_quorum: 2,
        write_quorum: 2,
        ..ManagerConfig::default()
    });
    let start: Millis = 50_000;
    let conns: Vec<ConnId> = (1..=3).map(|i| ConnId::new(i, 1)).collect();
    for (i, &conn) in conns.iter().enumerate() {
        let addr = format!("127.0.0.1:700{}", i + 1);
        let f = join_frame(&mut m, start, conn, &addr, &format!(" 8\n{RING}"));
        assert_eq!(
            reply(&step(&mut m, start, Input::Frame { conn, frame: f })).0,
            op::JOINED
        );
    }
    assert_eq!(state(&m, 4), Some(NodeState::Down), "not heard from");
    let admin = ConnId::new(9, 1);
    make_admin(&mut m, admin);
    let frame = Frame::new(op::DROP, 0, 0, "4");
    let out = step(&mut m, start + 10, Input::Frame { conn: admin, frame });
    assert_eq!(reply(&out), (op::OK, String::new()));
    handoffs_done(&mut m, start + 20, &conns);
    beats_then_tick(&mut m, start + LEASE_OVER - 1, &conns);
    assert_eq!(state(&m, 4), Some(NodeState::Leaving), "its lease may run");
    beats_then_tick(&mut m, start + LEASE_OVER, &conns);
    assert_eq!(state(&m, 4), None);
}

/// Every node left is leaving, one of them dropped: the leave is called off
/// and the dropped node removed, which changes the lists at once, so only
/// once the dropped node's lease is over.
#[test]
fn a_stranded_leave_is_called_off_once_the_dropped_nodes_lease_is_over() {
    let (mut m, (a, _, c)) = three_serving(ManagerConfig {
        replicas: 3,
        read_quorum: 2,
        write_quorum: 2,
        ..ManagerConfig::default()
    });
    let admin = ConnId::new(9, 1);
    make_admin(&mut m, admin);
    let drop = |m: &mut Manager, now, id: &str| {
        let frame = Frame::new(op::DROP, 0, 0, id.to_string());
        reply(&step(m, now, Input::Frame { conn: admin, frame })).0
    };
    // Node 2 falls silent after 0; node 3, last heard from at 5 000, is
    // dropped: a move (nodes 1 and 2 take over).
    beats_then_tick(&mut m, 5_000, &[a, c]);
    assert_eq!(state(&m, 2), Some(NodeState::Down));
    step(&mut m, 5_100, Input::Closed { conn: c });
    assert_eq!(drop(&mut m, 5_200, "3"), op::OK);
    // Node 1 leaves; node 2, once its lease is over, is dropped in one step
    // (nobody is left to take its tokens).
    assert_eq!(ask_to_leave(&mut m, 5_300, a), op::OK);
    beats_then_tick(&mut m, LEASE_OVER, &[a]);
    assert_eq!(drop(&mut m, LEASE_OVER, "2"), op::OK);
    assert_eq!(state(&m, 2), None);
    // Every node left is leaving, and node 3's lease may still run: nothing
    // changes until it is over.
    let over_3 = 5_000 + LEASE_OVER;
    beats_then_tick(&mut m, over_3 - 1, &[a]);
    let states = (state(&m, 1), state(&m, 3));
    assert_eq!(states, (Some(NodeState::Leaving), Some(NodeState::Leaving)));
    beats_then_tick(&mut m, over_3, &[a]);
    assert_eq!((state(&m, 1), state(&m, 3)), (Some(NodeState::Up), None));
}
