//! The manager with the real binaries: what it says while it recovers its
//! membership after a start.

mod common;

use common::{Proc, TIMEOUT};
use gtstore::client::{manager_call, ClientError};
use gtstore::protocol::{op, ErrorCode};
use std::time::{Duration, Instant};

/// The manager's STATUS JSON.
fn status(manager: &str) -> serde_json::Value {
    let bytes = manager_call(manager, op::STATUS, TIMEOUT).expect("STATUS");
    serde_json::from_slice(&bytes).expect("STATUS is JSON")
}

fn ms_left(manager: &str) -> u64 {
    let s = status(manager);
    s["recovering_ms_left"]
        .as_u64()
        .unwrap_or_else(|| panic!("no recovering_ms_left in {s}"))
}

/// Polls `what` until it holds, for at most 20 s.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the `gtstore` CLI against `manager`, with no node cache (it cannot be
/// created under /dev/null), so only the manager's answers count.
fn cli(manager: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gtstore"))
        .args(["--manager", manager, "--timeout", "2"])
        .args(args)
        .env("XDG_CACHE_HOME", "/dev/null")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run gtstore")
}

#[test]
fn a_recovering_manager_says_so_and_for_how_long() {
    let manager = Proc::start(
        env!("CARGO_BIN_EXE_gtstore-manager"),
        &["--port", "0", "--recovery-ms", "4000"],
    );
    let m = manager.addr.clone();

    // STATUS carries the time left, and it counts down.
    let first = ms_left(&m);
    assert!(first > 0 && first <= 4000, "{first}");
    wait_for("recovering_ms_left to count down", || {
        let now = ms_left(&m);
        now > 0 && now < first
    });

    // HELLO cannot be served yet, and says why.
    match manager_call(&m, op::HELLO, TIMEOUT) {
        Err(ClientError::Server(e)) => {
            assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
            assert!(
                e.message
                    .starts_with("manager is recovering its membership (")
                    && e.message.ends_with(" ms left)"),
                "{e}"
            );
        }
        other => panic!("HELLO while recovering: {other:?}"),
    }

    // The CLI says the same: `status` shows the window, and a request that
    // needs a node passes the manager's reason on.
    let status_out = cli(&m, &["status"]);
    let shown = String::from_utf8_lossy(&status_out.stdout);
    assert!(
        shown.contains("manager recovering membership") && shown.contains(" s left"),
        "status while recovering: {shown}"
    );
    let put = cli(&m, &["put", "k", "v"]);
    assert_eq!(put.status.code(), Some(2), "put while recovering: {put:?}");
    let why = String::from_utf8_lossy(&put.stderr);
    assert!(
        why.contains("recovering its membership"),
        "put's error: {why}"
    );

    // A brand-new node is refused until the window ends (it retries with its
    // backoff), and the manager says so once, not at every retry.
    let node = Proc::start(
        env!("CARGO_BIN_EXE_gtstore-storage"),
        &["--port", "0", "--manager", m.as_str()],
    );
    wait_for("the node to register", || {
        status(&m)["live_nodes"].as_u64() == Some(1)
    });
    assert_eq!(ms_left(&m), 0, "the window is over");
    let refusals = |p: &Proc, what: &str| p.log().iter().filter(|l| l.contains(what)).count();
    let told = refusals(&manager, "registers once the membership is recovered");
    assert_eq!(told, 1, "manager log: {:#?}", manager.log());
    assert!(
        refusals(&node, "manager is recovering its membership") >= 1,
        "node log: {:#?}",
        node.log()
    );

    // Now HELLO names the node.
    let welcome = manager_call(&m, op::HELLO, TIMEOUT).expect("HELLO");
    let text = String::from_utf8_lossy(&welcome);
    assert!(text.ends_with(&node.addr), "{text}");
}
