//! The `gtstore` command-line client against real processes: one-shot commands
//! (stdout, stderr, exit status), binary values through stdin and the shell fed
//! through stdin (the `gtstore cluster` launcher is in tests/launcher.rs). Every
//! process a test starts is killed on drop, even if the test panics.
//!
//! The one-shot tests use a single storage node, so that every HELLO names the same
//! contact node whatever the state of request forwarding between nodes.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const GTSTORE: &str = env!("CARGO_BIN_EXE_gtstore");
const MANAGER: &str = env!("CARGO_BIN_EXE_gtstore-manager");
const STORAGE: &str = env!("CARGO_BIN_EXE_gtstore-storage");
const WAIT: Duration = Duration::from_secs(15);

/// A child process killed and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server with `--port 0` and returns it with the address its log says
/// it listens on. A thread keeps draining its stderr so it never blocks on logging.
fn start_server(bin: &str, args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start server");
    let stderr = child.stderr.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(i) = line.find("listening on ") {
                let addr = line[i + 13..].split_whitespace().next().unwrap_or("");
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let addr = rx.recv_timeout(WAIT).expect("server logs `listening on`");
    (proc, addr)
}

/// A manager and storage nodes, all stopped on drop.
struct TestCluster {
    manager: String,
    node_addrs: Vec<String>,
    _procs: Vec<Proc>,
}

fn start_cluster(nodes: usize) -> TestCluster {
    // A new cluster: no recovery window, the nodes register at once.
    let (m, manager) = start_server(MANAGER, &["--recovery-ms", "0"]);
    let mut procs = vec![m];
    let mut node_addrs = Vec::new();
    for _ in 0..nodes {
        let (p, addr) = start_server(STORAGE, &["--manager", &manager]);
        procs.push(p);
        node_addrs.push(addr);
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let live = gtstore::client::manager_call(
            &manager,
            gtstore::protocol::op::STATUS,
            Duration::from_secs(2),
        )
        .ok()
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
        .and_then(|v| v["live_nodes"].as_u64());
        if live == Some(nodes as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "nodes not live: {live:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    TestCluster {
        manager,
        node_addrs,
        _procs: procs,
    }
}

/// Runs `gtstore --manager M ARGS` with `input` on stdin.
fn run_cli(manager: &str, args: &[&[u8]], input: &[u8]) -> Output {
    use std::os::unix::ffi::OsStrExt;
    let args: Vec<&std::ffi::OsStr> = args
        .iter()
        .map(|a| std::ffi::OsStr::from_bytes(a))
        .collect();
    // No node cache (it cannot be created under /dev/null): these tests see
    // what the manager says, never nodes remembered from another test.
    common::run_gtstore(manager, std::path::Path::new("/dev/null"), &args, input)
}

/// Asserts exit status, stdout and stderr of one command.
#[track_caller]
fn check(c: &TestCluster, args: &[&str], code: i32, stdout: &str, stderr: &str) {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let out = run_cli(&c.manager, &args, b"");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert_eq!(
        (out.status.code(), text(&out.stdout), text(&out.stderr)),
        (Some(code), stdout.to_string(), stderr.to_string()),
        "gtstore {args:?}"
    );
}

#[test]
fn one_shot_commands_and_exit_codes() {
    let c = start_cluster(1);
    check(&c, &["put", "k", "hello"], 0, "", "");
    check(&c, &["get", "k"], 0, "hello", "");
    check(&c, &["get", "missing"], 1, "", "gtstore: not found\n");
    check(&c, &["exists", "k"], 0, "", "");
    check(&c, &["exists", "missing"], 1, "", "");
    check(
        &c,
        &["create", "k", "x"],
        1,
        "",
        "gtstore: conflict: key exists\n",
    );
    check(&c, &["create", "new", "x"], 0, "", "");
    check(&c, &["update", "new", "y"], 0, "", "");
    check(&c, &["get", "new"], 0, "y", "");
    check(
        &c,
        &["update", "missing", "y"],
        1,
        "",
        "gtstore: not found\n",
    );
    check(&c, &["del", "new"], 0, "", "");
    check(&c, &["del", "new"], 1, "", "gtstore: not found\n");
    check(&c, &["get", "new"], 1, "", "gtstore: not found\n");
    check(&c, &["incr", "n"], 0, "1\n", "");
    check(&c, &["incr", "n", "-5"], 0, "-4\n", "");
    check(&c, &["incr", "n", "10"], 0, "6\n", "");
    check(&c, &["get", "n"], 0, "6", "");
    check(&c, &["put", "dash", "-x"], 0, "", "");
    check(&c, &["get", "dash"], 0, "-x", "");
    check(&c, &["ping"], 0, "PONG\n", "");
    check(&c, &["ping", "hi there"], 0, "hi there\n", "");
    let notint = "gtstore: server error: NOTINT ";
    let out = run_cli(&c.manager, &[b"incr", b"k"], b"");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(notint) && err.ends_with('\n'), "{err}");
    assert_eq!(err.lines().count(), 1);
    // Straight to the node, anonymously.
    let node = &c.node_addrs[0];
    let out = Command::new(GTSTORE)
        .args(["--node", node, "get", "k"])
        .output()
        .unwrap();
    assert_eq!(
        (out.status.code(), &out.stdout[..]),
        (Some(0), &b"hello"[..])
    );
}

#[test]
fn errors_exit_with_two() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let manager = format!("127.0.0.1:{port}");
    for args in [
        &[&b"get"[..], b"k"][..],
        &[b"status"],
        &[b"put", b"k", b"v"],
    ] {
        let out = run_cli(&manager, args, b"");
        assert_eq!(out.status.code(), Some(2));
        assert!(out.stdout.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("gtstore: cannot reach manager {manager}: connection refused\n")
        );
    }
    // Usage errors are clap's: exit status 2 as well.
    let out = run_cli(&manager, &[b"incr", b"k", b"notanumber"], b"");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn binary_values_and_keys_through_stdin() {
    let c = start_cluster(1);
    let value: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let out = run_cli(&c.manager, &[b"put", b"bin", b"-"], &value);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = run_cli(&c.manager, &[b"get", b"bin"], b"");
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == value, "binary value changed on the way");
    // An empty value from stdin, and a key that is not UTF-8.
    let key: &[u8] = b"k\xff\xfe\x00";
    let out = run_cli(&c.manager, &[b"put", &key[..3], b"-"], b"");
    assert_eq!(out.status.code(), Some(0));
    let out = run_cli(&c.manager, &[b"get", &key[..3]], b"");
    assert_eq!((out.status.code(), out.stdout.len()), (Some(0), 0));
    let out = run_cli(&c.manager, &[b"create", &key[..3], b"-"], b"again");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn status_as_json_and_table() {
    let c = start_cluster(1);
    let out = run_cli(&c.manager, &[b"status", b"--json"], b"");
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["live_nodes"], 1);
    assert_eq!(v["nodes"][0]["addr"], c.node_addrs[0].as_str());
    let out = run_cli(&c.manager, &[b"status"], b"");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("epoch "), "{text}");
    assert!(text.contains("ID  ADDRESS"), "{text}");
    assert!(text.contains(&c.node_addrs[0]), "{text}");
    let out = run_cli(&c.manager, &[b"ring"], b"");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("epoch "), "{text}");
    assert!(text.contains(&c.node_addrs[0]), "{text}");
}

#[test]
fn shell_reads_commands_from_stdin() {
    let c = start_cluster(1);
    let script =
        b"put a 1\nget a\n# a comment\n\nget nope\nincr a 2\nbogus\nput \"my key\" \"a b\"\n\
        get \"my key\"\ncreate a 9\nexists a\ndel a\nexists a\nget\nput \"open\nexit\nget a\n";
    let out = run_cli(&c.manager, &[], script);
    // Some commands failed: a piped shell says so in its exit status.
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stdout).unwrap();
    let want = "OK\n\"1\"\n(nil)\n3\nerror: unknown command 'bogus' (try help)\nOK\n\"a b\"\n\
        (conflict)\nyes\nOK\nno\nerror: usage: get KEY\nerror: unterminated double quote\n";
    assert_eq!(text, want);
}
