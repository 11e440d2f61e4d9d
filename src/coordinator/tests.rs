use super::*;
use crate::protocol::{op, Frame, Message};
use crate::reactor::{ConnId, Input, Millis, Output, Service};
use crate::ring::NodeState;

mod lease;

/// When the lease of a node last heard from at 0 is over, under the default
/// `lease_ms`, by the manager's clock.
const LEASE_OVER: Millis = 10_000 + LEASE_MARGIN_MS + 1;

/// A heartbeat from each of `conns` at `now`, then the tick.
fn beats_then_tick(m: &mut Manager, now: Millis, conns: &[ConnId]) {
    for &conn in conns {
        let frame = Frame::new(op::HEARTBEAT, 0, 0, "0 0");
        step(m, now, Input::Frame { conn, frame });
    }
    step(m, now, Input::Timer { id: TIMER_TICK });
}

fn step(m: &mut Manager, now: Millis, input: Input) -> Vec<Output> {
    let mut out = Vec::new();
    m.step(now, input, &mut out);
    out
}

fn reply(out: &[Output]) -> (u8, String) {
    match &out[0] {
        Output::Send { frame, .. } => (frame.op, String::from_utf8_lossy(&frame.payload).into()),
        o => panic!("expected a reply, got {o:?}"),
    }
}

/// Runs the member handshake for `addr` on `conn` under `secret` and returns its
/// `NODE_JOIN` (`rest` follows the address: ` TOKENS [LF RING]`), not yet sent.
fn join_with(
    m: &mut Manager,
    now: Millis,
    (conn, addr, rest): (ConnId, &str, &str),
    secret: &str,
) -> Frame {
    use crate::protocol::auth;
    let client = [3u8; auth::NONCE_LEN];
    let hello = Message::MemberHello { nonce: client }.encode();
    let out = step(m, now, Input::Frame { conn, frame: hello });
    let Output::Send { frame, .. } = &out[0] else {
        panic!("no challenge: {out:?}")
    };
    let Ok(Message::MemberChallenge { nonce, proof }) = Message::decode(frame) else {
        panic!("not a challenge: {frame:?}")
    };
    let secret = secret.as_bytes();
    assert!(
        auth::verify(secret, &nonce, &client, auth::ROLE_ACCEPT, &proof) || secret != b"gtstore"
    );
    let mine = auth::proof(secret, &nonce, &client, &auth::member_role(addr));
    let text = format!("{} {addr}{rest}", auth::to_hex(&mine));
    Frame::new(op::NODE_JOIN, 0, 0, text)
}

/// [`join_with`] under the default secret.
fn join_frame(m: &mut Manager, now: Millis, conn: ConnId, addr: &str, rest: &str) -> Frame {
    join_with(m, now, (conn, addr, rest), crate::DEFAULT_SECRET)
}

fn join(m: &mut Manager, now: Millis, conn: ConnId, addr: &str) -> (u8, String) {
    let f = join_frame(m, now, conn, addr, " 8");
    reply(&step(m, now, Input::Frame { conn, frame: f }))
}

#[test]
fn ids_round_robin_and_failure_detection() {
    let mut m = Manager::new(ManagerConfig::default());
    let client = ConnId::new(9, 1);
    let hello = || Input::Frame {
        conn: client,
        frame: Frame::new(op::HELLO, 0, 0, ""),
    };
    assert!(reply(&step(&mut m, 0, hello()))
        .1
        .starts_with("UNAVAILABLE"));

    let (a, b) = (ConnId::new(1, 1), ConnId::new(2, 1));
    let (op_a, text_a) = join(&mut m, 0, a, "127.0.0.1:7001");
    assert_eq!(op_a, op::JOINED);
    assert!(text_a.starts_with("1\nepoch 1\n"));
    let (_, text_b) = join(&mut m, 0, b, "127.0.0.1:7002");
    assert!(text_b.starts_with("2\nepoch 2\n"));
    assert!(text_b.contains("node 2 127.0.0.1:7002 joining"), "{text_b}");
    // Node 2 serves once node 1 has handed its share over.
    assert_eq!(reply(&step(&mut m, 0, hello())).1, "1 1 127.0.0.1:7001");
    let done = Input::Frame {
        conn: a,
        frame: Frame::new(op::HANDOFF_DONE, 0, 1, "2"),
    };
    step(&mut m, 0, done);
    assert_eq!(m.ring().epoch, 3);
    assert_eq!(m.ring().node(2).unwrap().state, NodeState::Up);

    let w: Vec<String> = (0..4).map(|_| reply(&step(&mut m, 1, hello())).1).collect();
    assert_eq!(
        w,
        [
            "2 2 127.0.0.1:7002",
            "3 1 127.0.0.1:7001",
            "4 2 127.0.0.1:7002",
            "5 1 127.0.0.1:7001"
        ]
    );

    // Node 2 falls silent: after down_after it is down and skipped.
    let hb = Input::Frame {
        conn: a,
        frame: Frame::new(op::HEARTBEAT, 0, 1, "42 0"),
    };
    // Each heartbeat is answered with a lease, echoing its SENT.
    assert_eq!(
        reply(&step(&mut m, 1_500, hb)),
        (op::LEASE, "0 10000".to_string())
    );
    step(&mut m, 2_100, Input::Timer { id: TIMER_TICK });
    let s = m.status_json();
    assert_eq!(s["live_nodes"], 1);
    assert_eq!(s["nodes"][0]["keys"], 42);
    assert_eq!(s["nodes"][1]["state"], "down");
    assert!(reply(&step(&mut m, 2_101, hello()))
        .1
        .ends_with("127.0.0.1:7001"));

    // It comes back on the same address, on a new link: same id, same tokens,
    // and it is told it was down (it may have missed writes).
    let tokens_before = m.ring().node(2).unwrap().tokens.clone();
    let b2 = ConnId::new(2, 2);
    assert!(join(&mut m, 3_000, b2, "127.0.0.1:7002")
        .1
        .starts_with("2 catch-up\n"));
    assert_eq!(m.ring().node(2).unwrap().tokens, tokens_before);
    // The old link closing late does not mark it down again.
    step(&mut m, 3_001, Input::Closed { conn: b });
    assert_eq!(m.status_json()["live_nodes"], 2);
}

/// NODE_JOIN offering `ring` from `addr`.
fn join_offering(m: &mut Manager, conn: ConnId, addr: &str, ring: &str) -> (u8, String) {
    let f = join_frame(m, 0, conn, addr, &format!(" 8\n{ring}"));
    reply(&step(m, 0, Input::Frame { conn, frame: f }))
}

const OLD: &str = "epoch 5\nreplicas 3 2 2\n\
    node 1 127.0.0.1:7001 up 10,40\n\
    node 2 127.0.0.1:7002 up 20,50\n";
const NEW: &str = "epoch 7\nreplicas 3 2 2\n\
    node 1 127.0.0.1:7001 up 10,40\n\
    node 2 127.0.0.1:7002 down 20,50\n\
    node 4 127.0.0.1:7004 up 30,60\n";

fn tokens(m: &Manager, id: u32) -> Vec<u64> {
    m.ring()
        .node(id)
        .map(|n| n.tokens.clone())
        .unwrap_or_default()
}

#[test]
fn a_restarted_manager_adopts_the_newest_offered_ring() {
    let mut m = Manager::new(ManagerConfig::default());
    // The first node back knows an older ring: adopted, the others down.
    let (op_a, text) = join_offering(&mut m, ConnId::new(1, 1), "127.0.0.1:7002", OLD);
    assert_eq!(op_a, op::JOINED);
    assert!(text.starts_with("2\n"), "{text}");
    assert_eq!(tokens(&m, 2), vec![20, 50]);
    assert_eq!(m.ring().node(1).unwrap().state, NodeState::Down);
    assert_eq!(m.ring().node(2).unwrap().state, NodeState::Up);
    assert!(m.ring().epoch > 5);
    // The second knows a newer one: it wins, node 2 keeps its link and id.
    let (_, text) = join_offering(&mut m, ConnId::new(2, 1), "127.0.0.1:7004", NEW);
    assert!(text.starts_with("4\n"), "{text}");
    let r = m.ring();
    assert!(r.epoch > 7, "epoch {} must pass every offered one", r.epoch);
    assert_eq!(r.nodes().len(), 3);
    assert_eq!(tokens(&m, 4), vec![30, 60]);
    assert_eq!(r.node(2).unwrap().state, NodeState::Up, "still linked");
    assert_eq!(r.node(1).unwrap().state, NodeState::Down);
    // Node 2's heartbeats still count for node 2.
    let hb = Frame::new(op::HEARTBEAT, 0, 2, "77 0");
    step(
        &mut m,
        1,
        Input::Frame {
            conn: ConnId::new(1, 1),
            frame: hb,
        },
    );
    assert_eq!(m.status_json()["nodes"][1]["keys"], 77);
    // An older offer later changes nothing; node 1 gets its id back.
    let (_, text) = join_offering(&mut m, ConnId::new(3, 1), "127.0.0.1:7001", OLD);
    assert!(text.starts_with("1\n"), "{text}");
    assert_eq!(tokens(&m, 4), vec![30, 60]);
    assert_eq!(m.status_json()["live_nodes"], 3);
    // A new node gets an id above every offered one: no reuse.
    let (_, text) = join(&mut m, 0, ConnId::new(4, 1), "127.0.0.1:7009");
    assert!(text.starts_with("5\n"), "{text}");
    // That was a change of our own: offers are ignored from now on.
    let epoch = m.ring().epoch;
    let newer = NEW.replace("epoch 7", &format!("epoch {}", epoch + 10));
    let newer = newer.replace("30,60", "31,61");
    join_offering(&mut m, ConnId::new(2, 2), "127.0.0.1:7004", &newer);
    assert_eq!(tokens(&m, 4), vec![30, 60]);
}

#[test]
fn a_manager_that_formed_the_cluster_ignores_offers() {
    let mut m = Manager::new(ManagerConfig::default());
    join(&mut m, 0, ConnId::new(1, 1), "127.0.0.1:7001");
    let before = m.ring().encode();
    join_offering(&mut m, ConnId::new(1, 2), "127.0.0.1:7001", NEW);
    assert_eq!(m.ring().node(1).unwrap().tokens.len(), 8);
    assert!(m.ring().node(4).is_none());
    assert_eq!(m.ring().encode(), before, "no change at all");
}

#[test]
fn an_adopted_ring_drops_links_it_does_not_know() {
    let mut m = Manager::new(ManagerConfig::default());
    let five =
        "epoch 5\nreplicas 1 1 1\nnode 1 127.0.0.1:7001 up 20\nnode 3 127.0.0.1:7003 up 10\n";
    join_offering(&mut m, ConnId::new(1, 1), "127.0.0.1:7003", five);
    // Node 3 left by epoch 7 (the newer ring has no node 3).
    let out = {
        let rest = format!(" 8\n{NEW}");
        let f = join_frame(&mut m, 0, ConnId::new(2, 1), "127.0.0.1:7001", &rest);
        step(
            &mut m,
            0,
            Input::Frame {
                conn: ConnId::new(2, 1),
                frame: f,
            },
        )
    };
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Close { conn } if *conn == ConnId::new(1, 1))),
        "{out:?} {}",
        m.ring().encode()
    );
    assert!(m.ring().node(3).is_none());
    assert_eq!(m.ring().node(1).unwrap().state, NodeState::Up);
}

/// A manager with `cfg` and three serving nodes on links 1, 2 and 3 (each
/// join settled by the earlier nodes' handoffs).
fn three_serving(cfg: ManagerConfig) -> (Manager, (ConnId, ConnId, ConnId)) {
    let mut m = Manager::new(cfg);
    let (a, b, c) = (ConnId::new(1, 1), ConnId::new(2, 1), ConnId::new(3, 1));
    join(&mut m, 0, a, "127.0.0.1:7001");
    for (conn, addr) in [(b, "127.0.0.1:7002"), (c, "127.0.0.1:7003")] {
        join(&mut m, 0, conn, addr);
        handoffs_done(&mut m, 0, &[a, b]);
    }
    assert_eq!(m.status_json()["live_nodes"], 3);
    (m, (a, b, c))
}

#[test]
fn dead_after_drops_a_down_node_and_gives_its_tokens_away() {
    let (mut m, (a, b, c)) = three_serving(ManagerConfig {
        replicas: 2,
        dead_after_ms: Some(5_000),
        ..ManagerConfig::default()
    });
    let tokens_of_3 = m.ring().node(3).unwrap().tokens.len();
    step(&mut m, 1_000, Input::Closed { conn: c });
    assert_eq!(m.ring().node(3).unwrap().state, NodeState::Down);
    // Down, but not for long enough.
    step(&mut m, 5_900, Input::Timer { id: TIMER_TICK });
    assert!(m.ring().node(3).is_some());
    let hb = |conn| Input::Frame {
        conn,
        frame: Frame::new(op::HEARTBEAT, 0, 0, "0 0"),
    };
    step(&mut m, 6_100, hb(a));
    step(&mut m, 6_100, hb(b));
    step(&mut m, 6_100, Input::Timer { id: TIMER_TICK });
    assert_eq!(state(&m, 3), Some(NodeState::Leaving), "node 3 is dropped");
    assert!(m.ring().settled().node(3).is_none());
    // Nodes 1 and 2 hand its ranges to each other; the move settles once
    // node 3's lease is over (it was last heard from at 0).
    handoffs_done(&mut m, 6_200, &[a, b]);
    beats_then_tick(&mut m, LEASE_OVER - 1, &[a, b]);
    assert_eq!(state(&m, 3), Some(NodeState::Leaving), "its lease may run");
    beats_then_tick(&mut m, LEASE_OVER, &[a, b]);
    let ring = m.ring();
    assert!(ring.node(3).is_none(), "node 3 is out of the ring");
    let kept: usize = [1, 2]
        .iter()
        .map(|&id| ring.node(id).unwrap().tokens.len())
        .sum();
    assert_eq!(kept, 2 * 8 + tokens_of_3, "its tokens went to the others");
    assert_eq!(m.status_json()["live_nodes"], 2);
}

/// `HANDOFF_DONE` for the manager's current epoch from each of `conns`.
fn handoffs_done(m: &mut Manager, now: Millis, conns: &[ConnId]) {
    for &conn in conns {
        let frame = Frame::new(op::HANDOFF_DONE, 0, 1, m.ring().epoch.to_string());
        step(m, now, Input::Frame { conn, frame });
    }
}

/// A manager with N = 3 and read and write quorums `r` and `w`, and the
/// first `serving` of links 1 to 4 (returned) joined one by one, each join
/// flipped by the others' handoffs: no move pending.
fn settled(serving: usize, r: u32, w: u32) -> (Manager, Vec<ConnId>) {
    let mut m = Manager::new(ManagerConfig {
        replicas: 3,
        read_quorum: r,
        write_quorum: w,
        ..ManagerConfig::default()
    });
    let conns: Vec<ConnId> = (1..=4).map(|i| ConnId::new(i, 1)).collect();
    for (i, &conn) in conns[..serving].iter().enumerate() {
        join(&mut m, 0, conn, &format!("127.0.0.1:700{}", i + 1));
        handoffs_done(&mut m, 0, &conns[..i]);
    }
    assert!(!m.ring().has_moves());
    (m, conns)
}

/// N = 3, W = 2 on three nodes, `down` of them then cut off; node 4 joins and
/// the others report their handoff: whether the join flipped (node 4 serves).
fn join_with_holders_down(down: usize) -> bool {
    join_with_holders_down_at(down, 2)
}

/// [`join_with_holders_down`] with write quorum `w`.
fn join_with_holders_down_at(down: usize, w: u32) -> bool {
    join_with_quorums_and_holders_down(down, 2, w)
}

/// [`join_with_holders_down`] with read quorum `r` and write quorum `w`.
fn join_with_quorums_and_holders_down(down: usize, r: u32, w: u32) -> bool {
    let (mut m, conns) = settled(3, r, w);
    for &conn in &conns[3 - down..3] {
        step(&mut m, 10, Input::Closed { conn });
    }
    join(&mut m, 20, conns[3], "127.0.0.1:7004");
    handoffs_done(&mut m, 30, &conns[..3 - down]);
    m.ring().node(4).unwrap().state == NodeState::Up
}

#[test]
fn a_move_flips_only_while_enough_holders_of_each_range_are_up() {
    // Every range's list is nodes 1, 2, 3, and the join adds node 4 to some.
    // With one holder down, the two others (N - W + 1) hand every write over.
    assert!(join_with_holders_down(0));
    assert!(join_with_holders_down(1));
    // With two down, node 1 alone may lack an acknowledged write: no flip.
    assert!(!join_with_holders_down(2));
    // With W = 3 one holder has every write, but a majority of each list
    // must run the ring that started the move (conditional ops' fence).
    assert!(join_with_holders_down_at(1, 3));
    assert!(!join_with_holders_down_at(2, 3));
    // With R = 1 every holder must run it: a plain read of a lead on the old
    // ring asks one holder, which must refuse it (the replicas' fence).
    assert!(join_with_quorums_and_holders_down(0, 1, 3));
    assert!(!join_with_quorums_and_holders_down(1, 1, 3));
}

#[test]
fn with_one_copy_a_move_waits_for_a_down_node_to_hand_over() {
    let mut m = Manager::new(ManagerConfig::default());
    let (a, b, c) = (ConnId::new(1, 1), ConnId::new(2, 1), ConnId::new(3, 1));
    let done = |m: &mut Manager, now, conn| {
        let frame = Frame::new(op::HANDOFF_DONE, 0, 1, m.ring().epoch.to_string());
        step(m, now, Input::Frame { conn, frame });
    };
    let hb = |m: &mut Manager, now, conn| {
        let frame = Frame::new(op::HEARTBEAT, 0, 0, "0 0");
        step(m, now, Input::Frame { conn, frame });
    };
    join(&mut m, 0, a, "127.0.0.1:7001");
    join(&mut m, 0, b, "127.0.0.1:7002");
    done(&mut m, 0, a);
    assert_eq!(m.ring().node(2).unwrap().state, NodeState::Up);
    // Node 2 falls silent and is marked down; node 3 joins.
    hb(&mut m, 2_500, a);
    step(&mut m, 2_500, Input::Timer { id: TIMER_TICK });
    assert_eq!(m.ring().node(2).unwrap().state, NodeState::Down);
    join(&mut m, 2_500, c, "127.0.0.1:7003");
    done(&mut m, 2_500, a);
    assert_eq!(
        m.ring().node(3).unwrap().state,
        NodeState::Joining,
        "node 2 alone holds its keys: the move waits for it"
    );
    // Node 2 is back and hands over: the move settles.
    hb(&mut m, 2_600, b);
    assert_eq!(m.ring().node(2).unwrap().state, NodeState::Up);
    done(&mut m, 2_600, a);
    assert_eq!(m.ring().node(3).unwrap().state, NodeState::Joining);
    done(&mut m, 2_600, b);
    assert_eq!(m.ring().node(3).unwrap().state, NodeState::Up);
}

/// A down node whose process is still linked (paused, or cut off without a
/// reset) and is dropped: its link closes, so the process registers again as
/// a new node instead of running on outside the ring, unseen (simulator seeds
/// 1007306, 3009852, 5002262 and eight more did not settle).
#[test]
fn a_dropped_node_still_linked_is_cut_off_and_joins_again_as_a_new_node() {
    let (mut m, (a, b, c)) = three_serving(ManagerConfig {
        replicas: 2,
        ..ManagerConfig::default()
    });
    let hb = |conn| Input::Frame {
        conn,
        frame: Frame::new(op::HEARTBEAT, 0, 0, "0 0"),
    };
    // Node 3 falls silent (paused) with its link open: down, then dropped.
    step(&mut m, 1_500, hb(a));
    step(&mut m, 1_500, hb(b));
    step(&mut m, 2_100, Input::Timer { id: TIMER_TICK });
    assert_eq!(m.ring().node(3).unwrap().state, NodeState::Down);
    let admin = ConnId::new(9, 1);
    make_admin(&mut m, admin);
    let frame = Frame::new(op::DROP, 0, 0, "3");
    let out = step(&mut m, 2_200, Input::Frame { conn: admin, frame });
    assert_eq!(reply(&out), (op::OK, String::new()));
    assert_eq!(state(&m, 3), Some(NodeState::Leaving), "dropped, moving");
    let closes = |c| (out.iter()).any(|o| matches!(o, Output::Close { conn } if *conn == c));
    assert!(closes(c), "the dropped node's link closes: {out:?}");
    let ring_to_c = out.iter().position(
        |o| matches!(o, Output::Send { conn, frame } if *conn == c && frame.op == op::RING_UPDATE),
    );
    let close_of_c = out
        .iter()
        .position(|o| matches!(o, Output::Close { conn } if *conn == c));
    assert!(
        ring_to_c < close_of_c && ring_to_c.is_some(),
        "the ring goes out first"
    );
    assert!(!closes(a) && !closes(b));
    // Its heartbeats, had they come before the close, no longer count: it is
    // not a member link any more.
    let got = step(&mut m, 2_300, hb(c));
    assert_eq!(reply(&got).0, op::ERR, "{got:?}");
    assert_eq!(state(&m, 3), Some(NodeState::Leaving));
    // Its registration waits for the move to settle.
    let (code, _) = join(&mut m, 2_350, ConnId::new(3, 2), "127.0.0.1:7003");
    assert_eq!(code, op::ERR);
    handoffs_done(&mut m, 2_360, &[a, b]);
    // The flip waits for its lease (it was last heard from at 0).
    assert_eq!(state(&m, 3), Some(NodeState::Leaving));
    beats_then_tick(&mut m, LEASE_OVER, &[a, b]);
    assert!(m.ring().node(3).is_none());
    // It registers again on a new link: a new node, joining.
    let at = LEASE_OVER + 1;
    let (code, text) = join(&mut m, at, ConnId::new(3, 2), "127.0.0.1:7003");
    assert_eq!(code, op::JOINED);
    assert!(text.starts_with("4\n"), "{text}");
    assert_eq!(m.ring().node(4).unwrap().state, NodeState::Joining);
}

#[test]
fn a_new_node_waits_until_the_recovery_window_is_over() {
    let mut m = Manager::new(ManagerConfig {
        recovery_ms: 3_000,
        ..ManagerConfig::default()
    });
    step(&mut m, 1_000, Input::Timer { id: TIMER_INIT });
    // A brand-new node is first (the old members are still backing off): it
    // is told to retry, and nothing changes.
    let newcomer = |m: &mut Manager, now: Millis, conn| {
        let f = join_frame(m, now, conn, "127.0.0.1:7009", " 8");
        reply(&step(m, now, Input::Frame { conn, frame: f }))
    };
    let (code, text) = newcomer(&mut m, 1_100, ConnId::new(9, 1));
    assert_eq!(code, op::ERR);
    assert!(text.starts_with("UNAVAILABLE "), "{text}");
    assert!(m.ring().nodes().is_empty());
    // The old members come back and offer their rings: ids and tokens kept.
    let (_, text) = join_offering(&mut m, ConnId::new(2, 1), "127.0.0.1:7002", OLD);
    assert!(text.starts_with("2\n"), "{text}");
    let (code, _) = newcomer(&mut m, 2_000, ConnId::new(9, 2));
    assert_eq!(code, op::ERR, "still inside the window");
    let (_, text) = join_offering(&mut m, ConnId::new(4, 1), "127.0.0.1:7004", NEW);
    assert!(text.starts_with("4\n"), "the newer ring wins: {text}");
    // A member of the adopted ring needs no offer to be let in.
    let plain = join_frame(&mut m, 2_500, ConnId::new(1, 1), "127.0.0.1:7001", " 8");
    let (code, text) = reply(&step(
        &mut m,
        2_500,
        Input::Frame {
            conn: ConnId::new(1, 1),
            frame: plain,
        },
    ));
    assert_eq!((code, &text[..2]), (op::JOINED, "1\n"));
    assert_eq!(m.status_json()["live_nodes"], 3);
    // After the window the new node registers, with a fresh id, joining the
    // recovered membership.
    let (code, text) = newcomer(&mut m, 4_000, ConnId::new(9, 3));
    assert_eq!(code, op::JOINED);
    assert!(text.starts_with("5\n"), "{text}");
    assert_eq!(m.ring().node(5).unwrap().state, NodeState::Joining);
    assert_eq!((tokens(&m, 1), tokens(&m, 4)), (vec![10, 40], vec![30, 60]));
}

#[test]
fn without_a_recovery_window_a_new_node_registers_at_once() {
    let mut m = Manager::new(ManagerConfig::default());
    step(&mut m, 1_000, Input::Timer { id: TIMER_INIT });
    let (code, text) = join(&mut m, 1_001, ConnId::new(1, 1), "127.0.0.1:7001");
    assert_eq!(code, op::JOINED);
    assert!(text.starts_with("1\n"), "{text}");
}

#[test]
fn member_ops_need_a_join() {
    let mut m = Manager::new(ManagerConfig::default());
    let c = ConnId::new(3, 1);
    let hb = Input::Frame {
        conn: c,
        frame: Frame::new(op::HEARTBEAT, 0, 0, "1 0"),
    };
    assert!(reply(&step(&mut m, 0, hb)).1.starts_with("BADOP"));
    let bad = Input::Frame {
        conn: c,
        frame: Frame::new(op::NODE_JOIN, 0, 0, "wrong 1:1 8"),
    };
    let out = step(&mut m, 0, bad);
    assert!(reply(&out).1.starts_with("AUTH"));
    assert!(matches!(out[1], Output::Close { .. }));
}

#[test]
fn a_join_needs_a_fresh_right_proof() {
    let mut m = Manager::new(ManagerConfig::default());
    step(&mut m, 0, Input::Timer { id: TIMER_INIT });
    let refused = |m: &mut Manager, conn, frame| {
        let out = step(m, 1, Input::Frame { conn, frame });
        assert!(reply(&out).1.starts_with("AUTH"), "{out:?}");
        assert!(matches!(out[1], Output::Close { .. }));
        assert!(m.ring().nodes().is_empty(), "nothing changes");
    };
    let addr = "127.0.0.1:7001";
    // The old plaintext format, even with the right secret.
    let a = ConnId::new(1, 1);
    join_frame(&mut m, 1, a, addr, " 8");
    let plain = Frame::new(op::NODE_JOIN, 0, 0, format!("gtstore {addr} 8"));
    refused(&mut m, a, plain);
    // A proof under another secret.
    let b = ConnId::new(2, 1);
    let wrong = join_with(&mut m, 1, (b, addr, " 8"), "not-the-secret");
    refused(&mut m, b, wrong);
    // A proof made for another address.
    let c = ConnId::new(3, 1);
    let mut other = join_frame(&mut m, 1, c, "127.0.0.1:7002", " 8");
    other.payload = String::from_utf8_lossy(&other.payload)
        .replace("7002", "7001")
        .into();
    refused(&mut m, c, other);
    // A right proof works once; replayed on the same link or another, it is refused.
    let d = ConnId::new(4, 1);
    let right = join_frame(&mut m, 1, d, addr, " 8");
    let out = step(
        &mut m,
        1,
        Input::Frame {
            conn: d,
            frame: right.clone(),
        },
    );
    assert_eq!(reply(&out).0, op::JOINED);
    let out = step(
        &mut m,
        1,
        Input::Frame {
            conn: d,
            frame: right.clone(),
        },
    );
    assert!(reply(&out).1.starts_with("AUTH"), "replayed on its link");
    let e = ConnId::new(5, 1);
    join_frame(&mut m, 1, e, addr, " 8");
    let out = step(
        &mut m,
        1,
        Input::Frame {
            conn: e,
            frame: right,
        },
    );
    assert!(
        reply(&out).1.starts_with("AUTH"),
        "replayed after a new hello"
    );
}

/// `conn` asks for a nonce; returns it.
fn challenge(m: &mut Manager, conn: ConnId) -> crate::protocol::auth::Nonce {
    let frame = Frame::new(op::AUTH, 0, 0, "");
    let now = m.now;
    let (code, hex) = reply(&step(m, now, Input::Frame { conn, frame }));
    assert_eq!(code, op::CHALLENGE, "{hex}");
    crate::protocol::auth::from_hex(hex.as_bytes()).expect("a hex nonce")
}

/// `conn` sends `AUTH` with `payload`; returns the reply and whether it closes.
fn prove(m: &mut Manager, conn: ConnId, payload: Vec<u8>) -> (u8, String, bool) {
    let frame = Frame::new(op::AUTH, 0, 0, payload);
    let now = m.now;
    let out = step(m, now, Input::Frame { conn, frame });
    let closes = out.iter().any(|o| matches!(o, Output::Close { .. }));
    let (code, text) = reply(&out);
    (code, text, closes)
}

/// Makes `conn` an admin with the default admin secret.
fn make_admin(m: &mut Manager, conn: ConnId) {
    use crate::protocol::auth::{AuthRequest, ROLE_ADMIN};
    let nonce = challenge(m, conn);
    let req = AuthRequest::prove(crate::DEFAULT_SECRET.as_bytes(), &nonce, ROLE_ADMIN).unwrap();
    assert_eq!(prove(m, conn, req.encode()).0, op::OK);
}

fn ask(m: &mut Manager, now: Millis, op: u8, payload: &str) -> (u8, String) {
    let frame = Frame::new(op, 7, 0, payload.to_string());
    let out = step(
        m,
        now,
        Input::Frame {
            conn: ConnId::new(8, 1),
            frame,
        },
    );
    match &out[0] {
        Output::Send { frame, .. } => assert_eq!(frame.client_id, 7, "the request's id"),
        o => panic!("expected a reply, got {o:?}"),
    }
    reply(&out)
}

#[test]
fn while_recovering_clients_are_told_what_is_happening() {
    let mut m = Manager::new(ManagerConfig {
        recovery_ms: 3_000,
        ..ManagerConfig::default()
    });
    step(&mut m, 1_000, Input::Timer { id: TIMER_INIT });
    make_admin(&mut m, ConnId::new(8, 1));
    assert_eq!(m.status_json()["recovering_ms_left"], 3_000);
    let (code, text) = ask(&mut m, 1_400, op::HELLO, "");
    assert_eq!(code, op::ERR);
    assert_eq!(
        text,
        "UNAVAILABLE manager is recovering its membership (2600 ms left)"
    );
    assert_eq!(m.status_json()["recovering_ms_left"], 2_600, "counts down");
    let (code, text) = ask(&mut m, 1_500, op::RING, "");
    assert_eq!(code, op::ERR);
    assert!(text.ends_with("(2500 ms left)"), "{text}");
    let (code, text) = ask(&mut m, 1_500, op::DROP, "3");
    assert_eq!(code, op::ERR, "node 3 may still be learned back: {text}");
    // STATUS is served, and a node the recovered ring lists gets in.
    assert_eq!(ask(&mut m, 1_600, op::STATUS, "").0, op::STATUS_REPLY);
    join_offering(&mut m, ConnId::new(2, 1), "127.0.0.1:7002", OLD);
    let (code, text) = ask(&mut m, 1_700, op::HELLO, "");
    assert_eq!((code, &text[..]), (op::WELCOME, "1 2 127.0.0.1:7002"));
    assert_eq!(ask(&mut m, 1_700, op::DROP, "9").0, op::ERR);
    // After the window: 0 left, and plain answers.
    step(&mut m, 4_100, Input::Timer { id: TIMER_TICK });
    assert_eq!(m.status_json()["recovering_ms_left"], 0);
    assert_eq!(ask(&mut m, 4_100, op::DROP, "9").0, op::NOT_FOUND);
}

#[test]
fn a_turned_away_node_is_logged_once() {
    let mut m = Manager::new(ManagerConfig {
        recovery_ms: 3_000,
        ..ManagerConfig::default()
    });
    step(&mut m, 0, Input::Timer { id: TIMER_INIT });
    for (i, now) in [100, 300, 700, 1_500].into_iter().enumerate() {
        let (code, text) = join(&mut m, now, ConnId::new(9, i as u32), "127.0.0.1:7009");
        assert_eq!(code, op::ERR);
        assert!(
            text.starts_with("UNAVAILABLE manager is recovering"),
            "{text}"
        );
    }
    assert_eq!(m.turned_away.len(), 1);
    step(&mut m, 2_900, Input::Timer { id: TIMER_TICK });
    assert_eq!(m.turned_away.len(), 1, "still inside the window");
    // The window's end clears the list.
    assert_eq!(
        join(&mut m, 3_100, ConnId::new(9, 9), "127.0.0.1:7009").0,
        op::JOINED
    );
    assert!(m.turned_away.is_empty());
}

#[test]
fn malformed_messages_get_badop() {
    let mut m = Manager::new(ManagerConfig::default());
    let a = ConnId::new(1, 1);
    join(&mut m, 0, a, "127.0.0.1:7001");
    make_admin(&mut m, a);
    for (o, payload) in [
        (op::NODE_JOIN, "gtstore 127.0.0.1:7002"),
        (
            op::NODE_JOIN,
            &format!("{} 127.0.0.1:7002 8\nepoch x\n", "00".repeat(32)),
        ),
        (op::HEARTBEAT, "lots"),
        (op::HANDOFF_DONE, ""),
        (op::LEAVE, "now"),
        (op::DROP, ""),
        (op::MIGRATE, ""),
        (op::REFUSED, "catching-up"),
    ] {
        let frame = Frame::new(o, 0, 1, payload.to_string());
        let out = step(&mut m, 1, Input::Frame { conn: a, frame });
        let (code, text) = reply(&out);
        assert_eq!(code, op::ERR, "{o} {payload:?}");
        assert!(text.starts_with("BADOP"), "{o} {payload:?}: {text}");
    }
    assert_eq!(m.status_json()["live_nodes"], 1, "nothing changed");
}

#[test]
fn drop_needs_the_admin_credential() {
    use crate::protocol::auth::{proof, to_hex, AuthRequest, NONCE_LEN, ROLE_ADMIN};
    let mut m = Manager::new(ManagerConfig {
        admin_secret: "root".into(),
        ..ManagerConfig::default()
    });
    join(&mut m, 0, ConnId::new(1, 1), "127.0.0.1:7001");
    join(&mut m, 0, ConnId::new(2, 1), "127.0.0.1:7002");
    let epoch = m.ring().epoch;
    let drop = |m: &mut Manager, conn| {
        let frame = Frame::new(op::DROP, 0, 0, "2");
        step(m, 0, Input::Frame { conn, frame })
    };
    // Anonymous: ERR AUTH, a close, nothing changes.
    let anon = ConnId::new(5, 1);
    let out = drop(&mut m, anon);
    assert!(
        reply(&out).1.starts_with("AUTH DROP needs the admin"),
        "{out:?}"
    );
    assert!(matches!(out[1], Output::Close { .. }));
    assert_eq!(
        (m.ring().epoch, m.status_json()["live_nodes"].as_u64()),
        (epoch, Some(1))
    );

    // A wrong secret, a proof with no challenge, a replay, another role, garbage.
    let c = ConnId::new(6, 1);
    let nonce = challenge(&mut m, c);
    let wrong = AuthRequest::prove(b"gtstore", &nonce, ROLE_ADMIN).unwrap();
    let (code, text, closes) = prove(&mut m, c, wrong.encode());
    assert_eq!((code, closes), (op::ERR, true), "{text}");
    assert_eq!(text, "AUTH wrong admin proof");
    let nonce = challenge(&mut m, c);
    let good = AuthRequest::prove(b"root", &nonce, ROLE_ADMIN).unwrap();
    assert_eq!(prove(&mut m, c, good.encode()).0, op::OK);
    let (_, text, closes) = prove(&mut m, c, good.encode());
    assert!(
        closes && text.starts_with("AUTH no challenge"),
        "replay: {text}"
    );
    let d = ConnId::new(7, 1);
    challenge(&mut m, d);
    let (_, text, closes) = prove(&mut m, d, good.encode());
    assert!(
        closes && text == "AUTH wrong admin proof",
        "other link: {text}"
    );
    let nonce = challenge(&mut m, d);
    let client = [9; NONCE_LEN];
    let member = format!(
        "member {} {}",
        to_hex(&client),
        to_hex(&proof(b"root", &nonce, &client, "member"))
    );
    let (_, text, closes) = prove(&mut m, d, member.into_bytes());
    assert!(closes && text == "AUTH unknown role", "{text}");
    let (_, text, closes) = prove(&mut m, d, b"admin zz".to_vec());
    assert!(closes && text.starts_with("AUTH malformed"), "{text}");
    assert!(!m.is_admin(d));
    assert_eq!(m.ring().epoch, epoch, "nothing changed");

    // The admin connection drops the node; once closed, it is anonymous again.
    assert_eq!(reply(&drop(&mut m, c)), (op::OK, String::new()));
    assert!(m.ring().epoch > epoch);
    step(&mut m, 0, Input::Closed { conn: c });
    assert!(!m.is_admin(c) && m.auth.challenges.is_empty());
}

/// Every byte the outputs send on `conn`, as text.
fn http_sent(out: &[Output], conn: ConnId) -> String {
    let mut s = String::new();
    for o in out {
        if let Output::SendBytes { conn: c, bytes } = o {
            if *c == conn {
                s.push_str(&String::from_utf8_lossy(bytes));
            }
        }
    }
    s
}

#[test]
fn http_serves_metrics_and_status_with_moves() {
    let mut m = Manager::new(ManagerConfig::default());
    let (a, b) = (ConnId::new(1, 1), ConnId::new(2, 1));
    step(
        &mut m,
        0,
        Input::Accepted {
            conn: a,
            listener: 0,
        },
    );
    join(&mut m, 0, a, "127.0.0.1:7001");
    join(&mut m, 0, b, "127.0.0.1:7002");
    // Node 2 joins: node 1 has moves to make until it reports its handoff.
    let moves = &m.status_json()["moves"];
    assert_eq!(moves["pending"], true);
    assert_eq!(moves["waiting_for"], serde_json::json!([1]));
    let hb = Frame::new(op::HEARTBEAT, 0, 1, "42 0");
    step(&mut m, 400, Input::Frame { conn: a, frame: hb });

    let web = ConnId::new(3, 1);
    let out = step(
        &mut m,
        500,
        Input::Accepted {
            conn: web,
            listener: HTTP_LISTENER,
        },
    );
    assert!(matches!(out[..], [Output::Raw { conn }] if conn == web));
    let two = b"GET /metrics HTTP/1.1\r\n\r\nGET /status.json HTTP/1.1\r\n\r\n";
    let out = step(
        &mut m,
        500,
        Input::Data {
            conn: web,
            data: two[..].into(),
        },
    );
    let text = http_sent(&out, web);
    let (metrics, status) = text.split_at(
        text.find("HTTP/1.1 200 OK\r\nContent-Type: application/json")
            .unwrap(),
    );
    for want in [
        "gtstore_manager_nodes{state=\"joining\"} 1\n",
        "gtstore_manager_moves_pending 1\n",
        "gtstore_manager_node_keys{node=\"1\",addr=\"127.0.0.1:7001\"} 42\n",
        "gtstore_manager_requests_total{op=\"HEARTBEAT\",result=\"ok\"} 1\n",
        "gtstore_manager_heartbeat_gap_seconds_bucket{le=\"0.5\"} 1\n",
        "gtstore_manager_connections{listener=\"native\"} 1\n",
        "gtstore_manager_connections{listener=\"http\"} 1\n",
    ] {
        assert!(metrics.contains(want), "no {want:?} in {metrics}");
    }
    assert!(status.contains("\"waiting_for\":[1]"), "{status}");
    // The HTTP connection closing is not a member link closing.
    step(&mut m, 600, Input::Closed { conn: web });
    assert_eq!(m.status_json()["live_nodes"], 1);
}

/// `LEAVE` from the node on link `conn`: the manager's reply op.
fn ask_to_leave(m: &mut Manager, now: Millis, conn: ConnId) -> u8 {
    let frame = Frame::new(op::LEAVE, 0, 0, "");
    reply(&step(m, now, Input::Frame { conn, frame })).0
}

fn state(m: &Manager, id: u32) -> Option<NodeState> {
    m.ring().node(id).map(|n| n.state)
}

/// Simulator seed 3001798: the one node still up was told to leave while
/// its peers were down; the manager refused it as "the last serving node",
/// it exited without a handoff and stayed `down` in the ring for good. Now
/// the leave is taken, the node stays `leaving`, and the move waits for the
/// peers its keys go to; only a node alone in the ring is refused.
#[test]
fn a_node_leaves_while_its_peers_are_down_and_moves_once_they_are_back() {
    let (mut m, (a, b, c)) = three_serving(ManagerConfig::default());
    let hb = |m: &mut Manager, now, conn| {
        let frame = Frame::new(op::HEARTBEAT, 0, 0, "0 0");
        step(m, now, Input::Frame { conn, frame });
    };
    // Nodes 2 and 3 fall silent and are marked down.
    hb(&mut m, 2_500, a);
    step(&mut m, 2_500, Input::Timer { id: TIMER_TICK });
    assert_eq!(state(&m, 2), Some(NodeState::Down));
    assert_eq!(state(&m, 3), Some(NodeState::Down));
    assert_eq!(ask_to_leave(&mut m, 2_600, a), op::OK);
    assert_eq!(state(&m, 1), Some(NodeState::Leaving));
    handoffs_done(&mut m, 2_600, &[a]);
    assert_eq!(
        state(&m, 1),
        Some(NodeState::Leaving),
        "its keys go to nodes 2 and 3 (N = 1): the move waits for them"
    );
    // They are back and everyone hands over: node 1 is out of the ring.
    hb(&mut m, 2_700, b);
    hb(&mut m, 2_700, c);
    handoffs_done(&mut m, 2_700, &[a, b]);
    assert_eq!(state(&m, 1), Some(NodeState::Leaving));
    handoffs_done(&mut m, 2_700, &[c]);
    assert_eq!(state(&m, 1), None, "handed over and left");
    let ring = m.ring();
    assert!(!ring.has_moves());
    assert_eq!(ring.node(2).unwrap().state, NodeState::Up);
    assert_eq!(ring.node(3).unwrap().state, NodeState::Up);
}

#[test]
fn only_a_node_alone_in_the_ring_is_refused_a_leave() {
    let mut m = Manager::new(ManagerConfig::default());
    let (a, b) = (ConnId::new(1, 1), ConnId::new(2, 1));
    join(&mut m, 0, a, "127.0.0.1:7001");
    assert_eq!(ask_to_leave(&mut m, 10, a), op::ERR);
    assert_eq!(state(&m, 1), Some(NodeState::Up));
    // With a peer, even one down, it leaves.
    join(&mut m, 20, b, "127.0.0.1:7002");
    handoffs_done(&mut m, 20, &[a]);
    assert_eq!(state(&m, 2), Some(NodeState::Up));
    step(&mut m, 30, Input::Closed { conn: b });
    assert_eq!(state(&m, 2), Some(NodeState::Down));
    assert_eq!(ask_to_leave(&mut m, 40, a), op::OK);
    assert_eq!(state(&m, 1), Some(NodeState::Leaving));
    // The operator drops node 2 (once its lease is over): nobody is left to
    // take node 1's keys, so its leave is called off, and asked again it is
    // refused.
    let admin = ConnId::new(9, 1);
    make_admin(&mut m, admin);
    let frame = Frame::new(op::DROP, 0, 0, "2");
    let at = LEASE_OVER + 20;
    let out = step(&mut m, at, Input::Frame { conn: admin, frame });
    assert_eq!(reply(&out).0, op::OK);
    assert_eq!(state(&m, 2), None);
    assert_eq!(state(&m, 1), Some(NodeState::Up), "its leave is called off");
    assert_eq!(ask_to_leave(&mut m, at + 10, a), op::ERR);
}

/// A node marked down (its heartbeats late) whose own `LEAVE` arrives: it is
/// alive, so it is back and leaves with a handoff, instead of being dropped
/// as a down node is (which, with N = 1, loses its keys).
#[test]
fn a_leave_from_a_node_marked_down_is_a_leave_with_a_handoff() {
    let (mut m, (a, b, _c)) = three_serving(ManagerConfig::default());
    let hb = |m: &mut Manager, now, conn| {
        let frame = Frame::new(op::HEARTBEAT, 0, 0, "0 0");
        step(m, now, Input::Frame { conn, frame });
    };
    hb(&mut m, 2_500, a);
    hb(&mut m, 2_500, b);
    step(&mut m, 2_500, Input::Timer { id: TIMER_TICK });
    assert_eq!(state(&m, 3), Some(NodeState::Down));
    let c = ConnId::new(3, 1);
    assert_eq!(ask_to_leave(&mut m, 2_600, c), op::OK);
    assert_eq!(state(&m, 3), Some(NodeState::Leaving));
    // A tick right after does not mark it down again: the LEAVE was news.
    step(&mut m, 2_700, Input::Timer { id: TIMER_TICK });
    assert_eq!(state(&m, 3), Some(NodeState::Leaving));
}

/// N = 3, W = 2 on four serving nodes (links 1 to 4), then `down` of them
/// (the last ones) cut off and dropped by the operator.
fn four_with_drops(down: &[u32]) -> (Manager, Vec<ConnId>) {
    let (mut m, conns) = settled(4, 2, 2);
    let admin = ConnId::new(9, 1);
    make_admin(&mut m, admin);
    for &id in down {
        step(
            &mut m,
            10,
            Input::Closed {
                conn: conns[id as usize - 1],
            },
        );
        assert_eq!(state(&m, id), Some(NodeState::Down));
    }
    for &id in down {
        let frame = Frame::new(op::DROP, 0, 0, id.to_string());
        let out = step(&mut m, 20, Input::Frame { conn: admin, frame });
        assert_eq!(reply(&out), (op::OK, String::new()));
    }
    (m, conns)
}

/// A dropped down node's ranges move as a leave's do: it stays `leaving` in
/// the ring (conditional ops count the old and new lists while the move is
/// pending), and the ring flips once the other holders have handed its
/// ranges over, without waiting for the dropped node. Its address cannot
/// register meanwhile (peers reach nodes by address).
#[test]
fn a_dropped_down_node_leaves_by_a_move_the_others_hand_over() {
    let (mut m, conns) = four_with_drops(&[4]);
    let ring = m.ring();
    assert_eq!(state(&m, 4), Some(NodeState::Leaving), "a pending move");
    assert!(ring.settled().node(4).is_none());
    assert_eq!(m.status_json()["live_nodes"], 3);
    let (code, text) = join(&mut m, 30, ConnId::new(4, 2), "127.0.0.1:7004");
    assert_eq!(code, op::ERR, "{text}");
    assert!(text.starts_with("UNAVAILABLE"), "{text}");
    handoffs_done(&mut m, 40, &conns[..2]);
    assert_eq!(state(&m, 4), Some(NodeState::Leaving), "node 3 has not");
    handoffs_done(&mut m, 40, &conns[2..3]);
    assert_eq!(state(&m, 4), Some(NodeState::Leaving), "its lease may run");
    beats_then_tick(&mut m, LEASE_OVER, &conns[..3]);
    assert_eq!(state(&m, 4), None, "settled without the dropped node");
    assert_eq!(m.ring().points().len(), ring.points().len());
    assert!(!m.ring().has_moves());
    // Its address registers again, as a new node.
    let at = LEASE_OVER + 1;
    let (code, text) = join(&mut m, at, ConnId::new(4, 3), "127.0.0.1:7004");
    assert_eq!(code, op::JOINED);
    assert!(text.starts_with("5\n"), "{text}");
}

/// The flip waits for a majority of each moving range's holders, a dropped
/// one never counting: with a second holder down it waits; once that one is
/// dropped too, each range is counted without both and the move settles.
#[test]
fn a_drop_waits_for_live_holders_but_never_for_dropped_ones() {
    let (mut m, conns) = four_with_drops(&[4]);
    step(&mut m, 30, Input::Closed { conn: conns[2] });
    assert_eq!(state(&m, 3), Some(NodeState::Down));
    handoffs_done(&mut m, 40, &conns[..2]);
    assert_eq!(state(&m, 4), Some(NodeState::Leaving), "node 3 is down");
    let admin = ConnId::new(9, 1);
    let frame = Frame::new(op::DROP, 0, 0, "3");
    assert_eq!(
        reply(&step(&mut m, 50, Input::Frame { conn: admin, frame })).0,
        op::OK
    );
    assert_eq!(state(&m, 3), Some(NodeState::Leaving));
    handoffs_done(&mut m, 60, &conns[..2]);
    beats_then_tick(&mut m, LEASE_OVER, &conns[..2]);
    assert_eq!((state(&m, 3), state(&m, 4)), (None, None));
    assert!(!m.ring().has_moves());
    assert_eq!(m.ring().nodes().len(), 2);
}

/// With one copy a dropped down node's keys are gone with it: it is removed
/// in one step, as is one nobody is left to take over from.
#[test]
fn with_one_copy_or_no_heir_a_drop_is_one_step() {
    let (mut m, conns) = three_serving(ManagerConfig::default());
    step(&mut m, 10, Input::Closed { conn: conns.2 });
    let admin = ConnId::new(9, 1);
    make_admin(&mut m, admin);
    let frame = Frame::new(op::DROP, 0, 0, "3");
    assert_eq!(
        reply(&step(
            &mut m,
            LEASE_OVER,
            Input::Frame { conn: admin, frame }
        ))
        .0,
        op::OK
    );
    assert_eq!(state(&m, 3), None);
    assert!(!m.ring().has_moves());
    // N = 2 with every node down. The first drop is a move that waits for
    // the other holders of node 1's ranges; the second leaves ranges no live
    // node can hand over, and no holder to wait for: it settles. The last
    // drop has no heir and is one step.
    let (mut m, (a, b, c)) = three_serving(ManagerConfig {
        replicas: 2,
        ..ManagerConfig::default()
    });
    for conn in [a, b, c] {
        step(&mut m, 10, Input::Closed { conn });
    }
    make_admin(&mut m, admin);
    let drop = |m: &mut Manager, id: &'static str| {
        let frame = Frame::new(op::DROP, 0, 0, id);
        assert_eq!(
            reply(&step(m, LEASE_OVER, Input::Frame { conn: admin, frame })).0,
            op::OK
        );
    };
    drop(&mut m, "1");
    assert_eq!(state(&m, 1), Some(NodeState::Leaving), "2 and 3 take over");
    drop(&mut m, "2");
    assert_eq!((state(&m, 1), state(&m, 2)), (None, None));
    assert_eq!(state(&m, 3), Some(NodeState::Down));
    drop(&mut m, "3");
    assert!(m.ring().nodes().is_empty(), "{:?}", m.ring());
}
