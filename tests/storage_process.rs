//! How a storage node process ends when it cannot join: a manager that refuses
//! its cluster secret stops it for good (exit 2, saying why, in a handful of
//! log lines); a manager that is not registering nodes yet is retried quietly
//! until it does. Time bounds are generous behavioural limits, not speed
//! measurements.

mod common;

use common::{Cluster, Proc};
use std::time::{Duration, Instant};

/// Generous bound for an exit that should take well under a second.
const EXIT_BOUND: Duration = Duration::from_secs(10);

/// Waits up to `within` for `p` to exit; returns its exit code.
fn exit_code_within(p: &mut Proc, within: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = p.child.try_wait().expect("wait") {
            return status.code();
        }
        assert!(
            start.elapsed() < within,
            "still running after {within:?}; log: {:?}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `p`'s log once its stderr has been read to the end (the reader thread may
/// lag the exit a little).
fn final_log(p: &Proc, last: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !p.log().iter().any(|l| l.contains(last)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    p.log()
}

#[test]
fn a_node_with_a_wrong_secret_exits_2_and_says_why() {
    let mut c = Cluster::start(0);
    let started = Instant::now();
    let i = c.add_node(&["--secret", "not-the-clusters"]);
    let node = &mut c.nodes[i];
    assert_eq!(
        exit_code_within(node, EXIT_BOUND),
        Some(2),
        "{:?}",
        node.log()
    );
    let log = final_log(node, "gtstore-storage: stopped");
    let last = log.last().cloned().unwrap_or_default();
    assert!(
        last.contains("gtstore-storage: stopped") && last.contains("--secret"),
        "the last line says why: {log:?}"
    );
    let refusals = log.iter().filter(|l| l.contains("secret")).count();
    assert!(
        refusals <= 3,
        "the refusal is said once or twice, not per try: {log:?}"
    );
    assert!(log.len() < 10, "a handful of lines: {log:?}");
    assert!(started.elapsed() < EXIT_BOUND);
}

#[test]
fn a_node_the_manager_is_not_registering_yet_retries_quietly_until_it_is() {
    // A manager recovering its membership for 2 s turns a new node away.
    let mut c = Cluster::start_full(0, &["--recovery-ms", "2000"], &[]);
    c.add_node(&[]);
    c.wait_live(1);
    let log = c.nodes[0].log();
    let said = log.iter().filter(|l| l.contains("cannot register")).count();
    assert_eq!(
        said, 1,
        "one line for the refusals, not one per try: {log:?}"
    );
    assert!(c.nodes[0].alive());
}
