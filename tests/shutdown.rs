//! Shutting a storage node down with SIGTERM when no handoff can happen: the
//! manager is gone, or refuses the leave (the node is alone in the ring). The
//! node must exit within a few seconds (not sit out its 120 s handoff deadline)
//! and say in its log that the data was not handed over. And when a handoff can
//! happen later (its peers are down, not gone), it waits for them. The 15 s
//! bounds below are generous behavioural limits, not speed measurements.

mod common;

use common::{kill, read_back, Cluster, Proc, SINGLE_COPY};
use std::time::{Duration, Instant};

/// Generous bound for an exit that should take a few seconds at most.
const EXIT_BOUND: Duration = Duration::from_secs(15);

/// Waits up to `within` for `p` to exit; returns how long it took.
fn exits_within(p: &mut Proc, within: Duration) -> Duration {
    let start = Instant::now();
    while p.alive() {
        assert!(
            start.elapsed() < within,
            "still running after {within:?}; log: {:?}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// Whether some line of `p`'s log contains `text` (the log is read by a thread,
/// so give it a moment after the exit).
fn logged(p: &Proc, text: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if p.log().iter().any(|l| l.contains(text)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_leaving_node_whose_manager_dies_exits_without_waiting_for_a_handoff() {
    let mut c = Cluster::start(2);
    let manager = c.manager.pid();
    // The manager is frozen: the LEAVE is sent but never answered.
    kill(manager, "STOP");
    kill(c.nodes[1].pid(), "TERM");
    std::thread::sleep(Duration::from_millis(500));
    assert!(c.nodes[1].alive(), "leaving: waits for the manager");
    // A second SIGTERM stops a leaving node at once.
    kill(c.nodes[0].pid(), "TERM");
    std::thread::sleep(Duration::from_millis(300));
    kill(c.nodes[0].pid(), "TERM");
    exits_within(&mut c.nodes[0], EXIT_BOUND);
    // The manager dies: the first node gives up the handoff after a few seconds.
    kill(manager, "KILL");
    let took = exits_within(&mut c.nodes[1], EXIT_BOUND);
    println!("exited {took:?} after the manager died");
    assert!(
        logged(&c.nodes[1], "exiting without handing the data over"),
        "{:?}",
        c.nodes[1].log()
    );
    let st = c.nodes[1].child.wait().unwrap();
    assert!(st.success(), "a clean exit: {st:?}");
}

#[test]
fn the_last_node_exits_at_once_when_the_manager_refuses_its_leave() {
    let mut c = Cluster::start(1);
    kill(c.nodes[0].pid(), "TERM");
    exits_within(&mut c.nodes[0], EXIT_BOUND);
    assert!(
        logged(&c.nodes[0], "the manager refused our leave"),
        "{:?}",
        c.nodes[0].log()
    );
    assert!(c.manager.alive());
}

#[test]
fn sigterm_with_the_manager_already_gone_exits_at_once() {
    let mut c = Cluster::start(1);
    kill(c.manager.pid(), "KILL");
    let _ = c.manager.child.wait();
    std::thread::sleep(Duration::from_millis(300));
    kill(c.nodes[0].pid(), "TERM");
    exits_within(&mut c.nodes[0], EXIT_BOUND);
    assert!(
        logged(&c.nodes[0], "SIGTERM without a manager"),
        "{:?}",
        c.nodes[0].log()
    );
}

/// With one copy per key, node 0 is told to leave while nodes 1 and 2 are
/// frozen and marked down: its keys can only go to them. It is not refused:
/// it stays `leaving`, serving, and once they are back it hands every key over
/// and exits.
#[test]
fn a_node_told_to_leave_with_its_peers_down_hands_over_once_they_are_back() {
    let mut manager_args = SINGLE_COPY.to_vec();
    manager_args.extend_from_slice(&["--down-after", "500"]);
    let mut c = Cluster::start_full(3, &manager_args, &[]);
    let key = |n: usize| format!("k{n}").into_bytes();
    let value = |n: usize| format!("v{n}").into_bytes();
    let mut client = c.node_client(0);
    for n in 0..300 {
        client.put(&key(n), &value(n)).unwrap();
    }
    drop(client);
    for i in [1, 2] {
        kill(c.nodes[i].pid(), "STOP");
    }
    c.wait_state(1, "down");
    c.wait_state(2, "down");
    kill(c.nodes[0].pid(), "TERM");
    c.wait_state(0, "leaving");
    // It waits for them rather than exiting (a refused leave exits at once).
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(c.nodes[0].alive(), "{:?}", c.nodes[0].log());
    assert_eq!(c.node_status(0)["state"], "leaving");
    for i in [1, 2] {
        kill(c.nodes[i].pid(), "CONT");
    }
    exits_within(&mut c.nodes[0], Duration::from_secs(30));
    assert!(
        logged(&c.nodes[0], "handed everything over"),
        "{:?}",
        c.nodes[0].log()
    );
    c.wait_live(2);
    let all: Vec<usize> = (0..300).collect();
    assert_eq!(read_back(&c.nodes[1].addr, &all, key, value), vec![]);
}
