//! The `gtstore` client against real processes: how the shell shows values, what a
//! piped shell returns, the one-letter CRUD commands, the fall-back to storage nodes
//! when the manager is down, and `status` figures that are current. Every process
//! is killed on drop (tests/common), even when a test fails.

mod common;

use common::Cluster;
use std::path::PathBuf;
use std::process::Output;

/// A fresh directory for the client's node cache, removed on drop, so that tests
/// never read or write the user's own cache.
struct CacheDir(PathBuf);

impl CacheDir {
    fn new(name: &str) -> CacheDir {
        let dir =
            std::env::temp_dir().join(format!("gtstore-cli-client-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        CacheDir(dir)
    }
}

impl Drop for CacheDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `gtstore --manager M ARGS` with `input` on stdin and `cache` as its
/// `XDG_CACHE_HOME`.
fn run(manager: &str, cache: &CacheDir, args: &[&str], input: &[u8]) -> Output {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    common::run_gtstore(manager, &cache.0, &args, input)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The escaped form the shell must print, spelled out here independently of the
/// client's code.
fn escaped(value: &[u8]) -> Vec<u8> {
    let mut out = vec![b'"'];
    for &b in value {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
    out.push(b'"');
    out
}

#[test]
fn the_shell_shows_values_quoted_and_escaped() {
    let c = Cluster::start(1);
    let cache = CacheDir::new("show");
    let m = &c.manager.addr;
    // 10,000,000 bytes of every byte value, terminal escapes included.
    let big: Vec<u8> = (0..10_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let out = run(m, &cache, &["put", "blob", "-"], &big);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(m, &cache, &["put", "empty", ""], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(m, &cache, &["put", "quotes", "\"\""], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(m, &cache, &["put", "nil", "(nil)"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let out = run(m, &cache, &[], b"get blob\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut want = escaped(&big);
    want.push(b'\n');
    assert_eq!(out.stdout.len(), want.len());
    assert!(out.stdout == want, "the shell printed other bytes");
    assert!(out.stdout[..out.stdout.len() - 1]
        .iter()
        .all(|b| (0x20..=0x7e).contains(b)));

    let out = run(
        m,
        &cache,
        &[],
        b"get empty\nget quotes\nget nil\nget missing\n",
    );
    assert_eq!(text(&out.stdout), "\"\"\n\"\\\"\\\"\"\n\"(nil)\"\n(nil)\n");
    // A miss is an answer, not a failure.
    assert_eq!(out.status.code(), Some(0));

    // The one-shot `get` stays byte-exact.
    let out = run(m, &cache, &["get", "blob"], b"");
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == big, "one-shot get changed the bytes");
}

#[test]
fn a_piped_shell_exits_2_after_a_failed_command() {
    let c = Cluster::start(1);
    let cache = CacheDir::new("exit");
    let m = &c.manager.addr;
    let out = run(m, &cache, &[], b"bogus\n");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stdout),
        "error: unknown command 'bogus' (try help)\n"
    );
    let out = run(m, &cache, &[], b"get\n");
    assert_eq!(out.status.code(), Some(2));
    // Misses and conflicts are answers; an error anywhere fails the run.
    let out = run(m, &cache, &[], b"put a 1\ncreate a 2\nget zz\ndel zz\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let out = run(m, &cache, &[], b"put a 1\nincr a x\nget a\n");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
}

#[test]
fn the_shell_takes_one_letter_crud() {
    let c = Cluster::start(1);
    let cache = CacheDir::new("crud");
    let script = b"C k v1\nC k v2\nR k\nU k \"v 3\"\nR k\nU nope x\nD k\nR k\nD k\nhelp\n";
    let out = run(&c.manager.addr, &cache, &[], script);
    let out_text = text(&out.stdout);
    let lines: Vec<&str> = out_text.lines().collect();
    assert_eq!(
        lines[..9],
        [
            "OK",
            "(conflict)",
            "\"v1\"",
            "OK",
            "\"v 3\"",
            "(not found)",
            "OK",
            "(nil)",
            "(not found)"
        ],
        "{out_text}"
    );
    for line in ["C KEY VALUE", "R KEY", "U KEY VALUE", "D KEY"] {
        assert!(out_text.contains(line), "help lists {line}: {out_text}");
    }
    assert_eq!(out.status.code(), Some(0));
}

/// `gtstore status --json` through `cache`, parsed.
fn status_json(manager: &str, cache: &CacheDir, extra: &[&str]) -> serde_json::Value {
    let mut args = extra.to_vec();
    args.extend_from_slice(&["status", "--json"]);
    let out = run(manager, cache, &args, b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
}

/// Polls `status` until every node answered from one settled ring (cluster
/// formation; the figures themselves are never waited for).
fn wait_settled(manager: &str, cache: &CacheDir, nodes: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v = status_json(manager, cache, &[]);
        let all_current = v["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == nodes && n.iter().all(|n| n["current"] == true));
        if all_current && v["live_nodes"] == nodes && v["distinct_keys_estimate"] == false {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster never settled: {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn status_shows_current_distinct_keys_and_copies() {
    // N = W = 2: each acknowledged put has both its copies stored.
    let manager_args = [
        "--replicas",
        "2",
        "--write-quorum",
        "2",
        "--read-quorum",
        "1",
    ];
    let c = Cluster::start_full(3, &manager_args, &[]);
    let cache = CacheDir::new("figures");
    let m = &c.manager.addr;
    wait_settled(m, &cache, 3);
    let script: String = (0..6).map(|i| format!("put key{i} value{i}\n")).collect();
    let out = run(m, &cache, &[], script.as_bytes());
    assert_eq!(text(&out.stdout), "OK\n".repeat(6));
    // At once: no heartbeat has to come first.
    let v = status_json(m, &cache, &[]);
    assert_eq!(v["distinct_keys"], 6, "{v}");
    assert_eq!(v["copies"], 12, "{v}");
    assert_eq!(v["distinct_keys_estimate"], false, "{v}");
    let keys: u64 = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["keys"].as_u64().unwrap())
        .sum();
    assert_eq!(keys, 12, "{v}");
    let out = run(m, &cache, &["status"], b"");
    let table = text(&out.stdout);
    assert!(table.contains("keys 6 distinct, 12 copies"), "{table}");
    assert!(table.contains("PRIMARY"), "{table}");
}

#[test]
fn with_the_manager_down_commands_use_the_nodes() {
    // W = N = 3: every node holds every acknowledged key.
    let c = Cluster::start_full(3, &["--write-quorum", "3", "--read-quorum", "1"], &[]);
    let mut c = c;
    let cache = CacheDir::new("fallback");
    let empty = CacheDir::new("fallback-empty");
    let m = c.manager.addr.clone();
    let node = c.nodes[1].addr.clone();
    // A first command through the manager: the client remembers the nodes.
    let out = run(&m, &cache, &["put", "k", "v"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let _ = c.manager.child.kill();
    let _ = c.manager.child.wait();

    let out = run(&m, &cache, &["get", "k"], b"");
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "v".into())
    );
    let out = run(&m, &cache, &["put", "k2", "v2"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let both = format!("127.0.0.1:1,{node}");
    let out = run(&m, &empty, &["--node", &both, "get", "k2"], b"");
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "v2".into())
    );
    // Nothing remembered, no --node: the manager's error.
    let out = run(&m, &empty, &["get", "k"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with(&format!("gtstore: cannot reach manager {m}")),
        "{}",
        text(&out.stderr)
    );

    // `--node X status`: the cluster as node X sees it, figures from every node.
    let v = status_json(&m, &empty, &["--node", &node]);
    assert_eq!(v["source"], "node", "{v}");
    assert_eq!(v["view_of"]["addr"], node.as_str(), "{v}");
    assert_eq!(v["live_nodes"], 3, "{v}");
    assert_eq!(
        (v["distinct_keys"].clone(), v["copies"].clone()),
        (2.into(), 6.into()),
        "{v}"
    );
    // Plain `status` falls back to the remembered nodes and says why.
    let out = run(&m, &cache, &["status"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.starts_with("manager unavailable: cannot reach manager"),
        "{table}"
    );
    assert!(table.contains("keys 2 distinct, 6 copies"), "{table}");
}

#[test]
fn a_restarted_node_shows_as_starting_or_catching_up_never_empty_and_up() {
    // W = N = 3: every node holds every acknowledged key.
    let mut c = Cluster::start_full(3, &["--write-quorum", "3", "--read-quorum", "1"], &[]);
    let cache = CacheDir::new("restart");
    let m = c.manager.addr.clone();
    wait_settled(&m, &cache, 3);
    let script: String = (0..6).map(|i| format!("put key{i} value{i}\n")).collect();
    let out = run(&m, &cache, &[], script.as_bytes());
    assert_eq!(text(&out.stdout), "OK\n".repeat(6));
    // A fresh process on node 1's address: it has no data until it catches up.
    c.restart_node(1, &[]);
    let addr = c.nodes[1].addr.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v = status_json(&m, &cache, &[]);
        let nodes = v["nodes"].as_array().unwrap();
        let n = nodes.iter().find(|n| n["addr"] == addr.as_str()).unwrap();
        assert_eq!(n["current"], true, "{n}");
        let unsettled = n["ring_received"] == false
            || n["catching_up"] == true
            || n["node_epoch"] != v["epoch"];
        if n["state"] == "up" && !unsettled {
            // Up and settled: its figures are its share, never an empty `up`.
            assert_eq!(n["keys"], 6, "{v}");
            break;
        }
        // Until then the count is labelled an estimate.
        assert_eq!(v["distinct_keys_estimate"], true, "{v}");
        assert!(std::time::Instant::now() < deadline, "never caught up: {v}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = run(&m, &cache, &["status"], b"");
    let table = text(&out.stdout);
    assert!(table.contains("keys 6 distinct, 18 copies"), "{table}");
}
