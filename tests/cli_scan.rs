//! `gtstore scan [PREFIX]` against real processes: every key of a three-node
//! cluster once, a prefix, keys that must be quoted, and the shell's `scan`;
//! `gtstore status --keys` listing what each node holds, capped per node.

mod common;

use common::Cluster;
use std::process::Output;

/// Runs `gtstore --manager M ARGS` with `input` on stdin; no node cache is
/// read or written (a fresh `XDG_CACHE_HOME`).
fn run(manager: &str, args: &[&str], input: &[u8]) -> Output {
    let cache = std::env::temp_dir().join(format!("gtstore-cli-scan-{}", std::process::id()));
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let out = common::run_gtstore(manager, &cache, &args, input);
    let _ = std::fs::remove_dir_all(&cache);
    out
}

fn lines(out: &Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "gtstore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<String> = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    v.sort();
    v
}

#[test]
fn scan_prints_every_key_once() {
    // One copy per key: the range's lead replica holds every key of its range.
    let single = common::SINGLE_COPY;
    let c = Cluster::start_full(3, single, &[]);
    let mut client = c.node_client(0);
    let mut want: Vec<String> = Vec::new();
    for i in 0..150 {
        let k = format!("user:{i}");
        client.put(k.as_bytes(), b"v").unwrap();
        want.push(k);
    }
    for i in 0..30 {
        let k = format!("other:{i}");
        client.put(k.as_bytes(), b"v").unwrap();
        want.push(k);
    }
    for (k, shown) in [
        (&b"sp ace"[..], "sp ace"),
        (b"line\nbreak", "\"line\\nbreak\""),
        (b"\"quoted", "\"\\\"quoted\""),
    ] {
        client.put(k, b"v").unwrap();
        want.push(shown.to_string());
    }
    want.sort();
    let m = &c.manager.addr;

    let got = lines(&run(m, &["scan"], b""));
    assert_eq!(got, want);

    let got = lines(&run(m, &["scan", "user:1"], b""));
    let mut users: Vec<String> = (0..150)
        .map(|i| format!("user:{i}"))
        .filter(|k| k.starts_with("user:1"))
        .collect();
    users.sort();
    assert_eq!(got, users);

    // status --keys: with one copy per key, the nodes' lists add up to every key once.
    let out = run(m, &["status", "--keys"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut held: Vec<String> = (text.lines())
        .filter_map(|l| l.strip_prefix("  "))
        .map(String::from)
        .collect();
    held.sort();
    assert_eq!(held, want, "{text}");
    let headers = text.lines().filter(|l| l.starts_with("node ")).count();
    assert_eq!(headers, 3, "{text}");
    assert!(!text.contains("shown)"), "{text}");

    let shell = lines(&run(m, &[], b"scan other:2\nscan nothing\n"));
    let mut expect: Vec<String> = vec!["(no keys)".into(), "other:2".into()];
    expect.extend((20..30).map(|i| format!("other:{i}")));
    expect.sort();
    assert_eq!(shell, expect);
}

#[test]
fn status_keys_caps_each_node() {
    let c = Cluster::start(1);
    let mut client = c.node_client(0);
    for i in 0..1_005 {
        client.put(format!("k{i:05}").as_bytes(), b"").unwrap();
    }
    let out = run(&c.manager.addr, &["status", "--keys"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let held: Vec<&str> = (text.lines())
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| !l.starts_with('('))
        .collect();
    let want: Vec<String> = (0..1_000).map(|i| format!("k{i:05}")).collect();
    assert_eq!(held, want);
    assert!(text.contains(": 1005 keys\n"), "{text}");
    assert!(
        text.contains("  (the first 1000 of 1005 shown)\n"),
        "{text}"
    );
}
