//! RESP `SCAN` and `KEYS` against the real binaries: a SCAN walk through a
//! small cluster returns every key once (no ring change during it), MATCH
//! filters, KEYS answers what Redis would and refuses past its bound; then
//! `redis-cli --scan` when it is installed. And MSET saying how many of its
//! writes failed.

mod common;

use common::{Cluster, Wire};
use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A command as Redis clients send it: an array of bulk strings.
fn cmd(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    v
}

/// One RESP2 reply.
#[derive(Debug, PartialEq)]
enum Val {
    /// `+`, `-` or `:` with its line.
    Line(String),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Val>),
}

fn line(w: &mut Wire) -> String {
    let mut v = Vec::new();
    loop {
        let b = w.read_n(1)[0];
        if b == b'\r' {
            w.read_n(1);
            return String::from_utf8(v).unwrap();
        }
        v.push(b);
    }
}

fn read(w: &mut Wire) -> Val {
    let kind = w.read_n(1)[0];
    let l = line(w);
    match kind {
        b'$' if l == "-1" => Val::Bulk(None),
        b'$' => {
            let v = w.read_n(l.parse::<usize>().unwrap() + 2);
            Val::Bulk(Some(v[..v.len() - 2].to_vec()))
        }
        b'*' => Val::Array((0..l.parse::<usize>().unwrap()).map(|_| read(w)).collect()),
        _ => Val::Line(format!("{}{l}", kind as char)),
    }
}

fn call(w: &mut Wire, args: &[&str]) -> Val {
    w.send(&cmd(args));
    read(w)
}

fn strings(v: &[Val]) -> Vec<String> {
    v.iter()
        .map(|k| match k {
            Val::Bulk(Some(b)) => String::from_utf8(b.clone()).unwrap(),
            other => panic!("not a key: {other:?}"),
        })
        .collect()
}

/// A full SCAN walk with `opts` after the cursor: every key returned, in order.
fn walk(w: &mut Wire, opts: &[&str]) -> Vec<String> {
    let mut cursor = "0".to_string();
    let mut all = Vec::new();
    let mut calls = 0;
    loop {
        let mut args = vec!["SCAN", cursor.as_str()];
        args.extend_from_slice(opts);
        let Val::Array(reply) = call(w, &args) else {
            panic!("SCAN did not answer an array")
        };
        let [Val::Bulk(Some(next)), Val::Array(keys)] = &reply[..] else {
            panic!("SCAN answered {reply:?}")
        };
        all.extend(strings(keys));
        cursor = String::from_utf8(next.clone()).unwrap();
        calls += 1;
        assert!(calls < 10_000, "the walk does not end");
        if cursor == "0" {
            return all;
        }
    }
}

/// Waits until the nodes' DBSIZEs add up to `total`.
fn wait_dbsize(resp: &[String], total: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sum: i64 = resp
            .iter()
            .map(|a| match call(&mut Wire::connect(a), &["DBSIZE"]) {
                Val::Line(l) => l[1..].parse::<i64>().unwrap(),
                v => panic!("DBSIZE answered {v:?}"),
            })
            .sum();
        if sum == total {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "DBSIZE never added up to {total}: {sum}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cluster(n: usize, extra: &[&str]) -> (Cluster, Vec<String>) {
    let mut args = vec!["--resp-port", "0"];
    args.extend_from_slice(extra);
    let c = Cluster::start_with(n, &args);
    let resp = c.nodes.iter().map(|p| p.resp_addr()).collect();
    (c, resp)
}

/// The keys the test writes: `user:0`..`user:199`, `other:0`..`other:49`, and
/// two with glob characters in them.
fn keys() -> Vec<String> {
    let mut k: Vec<String> = (0..200).map(|i| format!("user:{i}")).collect();
    k.extend((0..50).map(|i| format!("other:{i}")));
    k.push("star*key".into());
    k.push("q?mark".into());
    k
}

fn sorted(v: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = v.into_iter().collect();
    v.sort();
    v
}

#[test]
fn scan_walks_every_key_once_and_keys_answers_like_redis() {
    let (c, resp) = cluster(3, &[]);
    let all = keys();
    let mut mset = vec!["MSET"];
    for k in &all {
        mset.push(k);
        mset.push("v");
    }
    let mut w = Wire::connect(&resp[0]);
    assert_eq!(call(&mut w, &mset), Val::Line("+OK".into()));
    let replicas = c.status()["effective_replicas"].as_i64().unwrap_or(1);
    wait_dbsize(&resp, all.len() as i64 * replicas);

    for (i, count) in [(1, "7"), (2, "1000")] {
        let mut w = Wire::connect(&resp[i]);
        let got = walk(&mut w, &["COUNT", count]);
        let distinct: BTreeSet<&String> = got.iter().collect();
        assert_eq!(distinct.len(), got.len(), "a key came back twice");
        assert_eq!(sorted(got), sorted(all.clone()));
    }

    let mut w = Wire::connect(&resp[1]);
    let got = walk(&mut w, &["MATCH", "user:1?", "COUNT", "5"]);
    let want = (10..20).map(|i| format!("user:{i}"));
    assert_eq!(sorted(got), sorted(want));

    let cases: &[(&str, Vec<String>)] = &[
        ("*", all.clone()),
        ("user:1?", (10..20).map(|i| format!("user:{i}")).collect()),
        ("other:[1-2]", vec!["other:1".into(), "other:2".into()]),
        ("other:[^0-8]", vec!["other:9".into()]),
        ("*\\**", vec!["star*key".into()]),
        ("q\\?mark", vec!["q?mark".into()]),
        ("USER:*", vec![]),
        ("nothing", vec![]),
    ];
    for (pattern, want) in cases {
        let Val::Array(got) = call(&mut w, &["KEYS", pattern]) else {
            panic!("KEYS {pattern} did not answer an array")
        };
        assert_eq!(
            sorted(strings(&got)),
            sorted(want.clone()),
            "KEYS {pattern}"
        );
    }
    assert_eq!(
        call(&mut w, &["SCAN", "abc"]),
        Val::Line("-ERR invalid cursor".into())
    );
    assert_eq!(
        call(&mut w, &["SCAN", "0", "COUNT", "0"]),
        Val::Line("-ERR syntax error".into())
    );
}

#[test]
fn keys_refuses_past_its_bound_and_scan_still_walks() {
    let (_c, resp) = cluster(1, &[]);
    let mut w = Wire::connect(&resp[0]);
    let names: Vec<String> = (0..10_001).map(|i| format!("k{i}")).collect();
    for chunk in names.chunks(1000) {
        let mut mset = vec!["MSET"];
        for k in chunk {
            mset.push(k);
            mset.push("");
        }
        assert_eq!(call(&mut w, &mset), Val::Line("+OK".into()));
    }
    match call(&mut w, &["KEYS", "k1"]) {
        Val::Line(l) => assert!(l.starts_with("-ERR KEYS") && l.contains("10000"), "{l}"),
        v => panic!("KEYS past the bound answered {v:?}"),
    }
    let got = walk(&mut w, &["COUNT", "3000"]);
    assert_eq!(got.len(), names.len());
    assert_eq!(sorted(got), sorted(names.clone()));
    // One key fewer: KEYS answers.
    assert_eq!(call(&mut w, &["DEL", "k0"]), Val::Line(":1".into()));
    let Val::Array(got) = call(&mut w, &["KEYS", "k999?"]) else {
        panic!("KEYS below the bound did not answer an array")
    };
    assert_eq!(
        sorted(strings(&got)),
        sorted((9990..10_000).map(|i| format!("k{i}")))
    );
}

/// Runs redis-cli with a deadline; `None` when it is not installed.
fn redis_cli(args: &[&str]) -> Option<String> {
    let mut child = match Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run redis-cli: {e}"),
    };
    let mut stdout = child.stdout.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-cli {args:?} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(out.join().unwrap())
}

#[test]
fn redis_cli_scan_lists_every_key() {
    let (c, resp) = cluster(2, &[]);
    let mut w = Wire::connect(&resp[0]);
    let all = keys();
    let mut mset = vec!["MSET"];
    for k in &all {
        mset.push(k);
        mset.push("v");
    }
    assert_eq!(call(&mut w, &mset), Val::Line("+OK".into()));
    let replicas = c.status()["effective_replicas"].as_i64().unwrap_or(1);
    wait_dbsize(&resp, all.len() as i64 * replicas);
    let port = resp[1].rsplit(':').next().unwrap();
    let base = ["-h", "127.0.0.1", "-p", port, "--scan"];
    let Some(out) = redis_cli(&base) else {
        eprintln!("NOTICE: redis-cli is not installed; skipping");
        return;
    };
    assert_eq!(sorted(out.lines().map(String::from)), sorted(all));
    let mut with_pattern = base.to_vec();
    with_pattern.extend_from_slice(&["--pattern", "other:4*"]);
    let out = redis_cli(&with_pattern).unwrap();
    let want = std::iter::once("other:4".to_string()).chain((40..50).map(|i| format!("other:{i}")));
    assert_eq!(sorted(out.lines().map(String::from)), sorted(want));
}

#[test]
fn mset_says_how_many_keys_failed() {
    // N = 3, W = 2: with two of the three nodes gone no write can succeed.
    let manager = [
        "--replicas",
        "3",
        "--write-quorum",
        "2",
        "--read-quorum",
        "2",
    ];
    let c = Cluster::start_full(3, &manager, &["--resp-port", "0"]);
    let resp = c.nodes[0].resp_addr();
    let mut w = Wire::connect(&resp);
    let pairs = ["MSET", "a", "1", "b", "2", "c", "3", "d", "4", "e", "5"];
    assert_eq!(call(&mut w, &pairs), Val::Line("+OK".into()));
    common::kill(c.nodes[1].pid(), "KILL");
    common::kill(c.nodes[2].pid(), "KILL");
    match call(&mut w, &pairs) {
        Val::Line(l) => assert!(
            l.starts_with("-ERR ") && l.contains(" 5 of 5 keys failed; the first: "),
            "{l}"
        ),
        v => panic!("MSET answered {v:?}"),
    }
}
