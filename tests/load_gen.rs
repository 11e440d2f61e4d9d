//! `gtstore-load` end to end: the built binary against a real manager and two
//! storage nodes (partition-aware and through contact nodes), against a fake
//! memcached that acknowledges writes it then forgets (the verify phase must
//! notice), and with bad flags.

mod common;

use common::Cluster;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LOAD: &str = env!("CARGO_BIN_EXE_gtstore-load");

/// Runs gtstore-load with `args`, killing it if it runs past `limit`; returns
/// the exit code, stdout and stderr.
fn run_load(args: &[&str], limit: Duration) -> (i32, String, String) {
    let mut child = Command::new(LOAD)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gtstore-load");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "gtstore-load ran past {limit:?}; stderr: {}",
                t_err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        t_out.join().unwrap(),
        t_err.join().unwrap(),
    )
}

fn json(stdout: &str, stderr: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("stdout is not one JSON object ({e}): {stdout:?}; stderr {stderr}")
    })
}

/// Checks what every run against a healthy gtstore must show.
fn assert_healthy(r: &serde_json::Value, nodes: usize) {
    let requests = r["requests"].as_u64().unwrap();
    assert!(requests > 0, "{r}");
    assert!(r["throughput"].as_f64().unwrap() > 0.0);
    assert_eq!(r["errors_total"], 0, "errors: {}", r["errors"]);
    let shares = r["nodes"].as_array().unwrap();
    assert_eq!(shares.len(), nodes, "a share per node: {}", r["nodes"]);
    let sum: u64 = shares.iter().map(|n| n["requests"].as_u64().unwrap()).sum();
    assert_eq!(sum, requests, "shares add up to the total");
    for n in shares {
        assert!(
            n["requests"].as_u64().unwrap() > 0,
            "every node got some: {n}"
        );
    }
    let ops_sum: u64 = r["ops"]
        .as_object()
        .unwrap()
        .values()
        .map(|o| o["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(ops_sum, requests);
    let lat = &r["latency_us"];
    let p50 = lat["p50"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= lat["p99"].as_f64().unwrap());
    assert!(lat["p99"].as_f64().unwrap() <= lat["max"].as_f64().unwrap());
    let v = &r["verify"];
    assert!(
        v["checked"].as_u64().unwrap() > 0,
        "verify read keys back: {v}"
    );
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(r["cpu"]["percent_of_one_core"].as_f64().is_some());
}

#[test]
fn partition_aware_run_against_two_nodes_loses_nothing() {
    let c = Cluster::start(2);
    let (code, out, err) = run_load(
        &[
            "--manager",
            &c.manager.addr,
            "--duration",
            "2",
            "--clients",
            "8",
            "--threads",
            "2",
            "--pipeline",
            "4",
            "--keys",
            "2000",
            "--mix",
            "get=60,put=20,del=5,incr=5,create=5,update=5",
            "--value-size",
            "10-300",
            "--json",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "stderr: {err}");
    let r = json(&out, &err);
    assert_healthy(&r, 2);
    assert_eq!(r["protocol"], "gtstore");
    // One progress line per second went to stderr.
    assert!(err.contains("req/s"), "progress lines: {err}");
    let secs = r["per_second"].as_array().unwrap();
    assert!(!secs.is_empty() && secs.len() <= 4, "{}", r["per_second"]);
}

#[test]
fn contact_node_run_counts_shares_by_contact() {
    let c = Cluster::start(2);
    let nodes = format!("{},{}", c.nodes[0].addr, c.nodes[1].addr);
    let (code, out, err) = run_load(
        &[
            "--nodes",
            &nodes,
            "--requests",
            "3000",
            "--clients",
            "4",
            "--pipeline",
            "8",
            "--keys",
            "500",
            "--key-dist",
            "zipf:0.9",
            "--json",
            "--quiet",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "stderr: {err}");
    let r = json(&out, &err);
    assert_eq!(r["requests"], 3000);
    assert_healthy(&r, 2);
    // Shares are counted per contact node (addresses, no ring).
    let names: Vec<&str> = r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert!(names.contains(&c.nodes[0].addr.as_str()), "{names:?}");
}

/// A memcached look-alike (set and get only) that acknowledges every write but
/// forgets one in `forget_every`.
fn fake_memcached(forget_every: u64) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let store: Arc<Mutex<std::collections::HashMap<Vec<u8>, Vec<u8>>>> = Arc::default();
    let sets = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let (store, sets) = (store.clone(), sets.clone());
            std::thread::spawn(move || serve_fake(conn, &store, &sets, forget_every));
        }
    });
    addr
}

type Store = Mutex<std::collections::HashMap<Vec<u8>, Vec<u8>>>;

fn serve_fake(conn: TcpStream, store: &Store, sets: &AtomicU64, forget_every: u64) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["set", key, _, _, n] => {
                let mut data = vec![0u8; n.parse::<usize>().unwrap() + 2];
                if r.read_exact(&mut data).is_err() {
                    return;
                }
                data.truncate(data.len() - 2);
                if !(sets.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(forget_every) {
                    store.lock().unwrap().insert(key.as_bytes().to_vec(), data);
                }
                b"STORED\r\n".to_vec()
            }
            ["get", key] => match store.lock().unwrap().get(key.as_bytes()) {
                Some(v) => {
                    let mut out = format!("VALUE {key} 0 {}\r\n", v.len()).into_bytes();
                    out.extend_from_slice(v);
                    out.extend_from_slice(b"\r\nEND\r\n");
                    out
                }
                None => b"END\r\n".to_vec(),
            },
            _ => b"ERROR\r\n".to_vec(),
        };
        if w.write_all(&reply).is_err() {
            return;
        }
    }
}

#[test]
fn verify_counts_writes_the_server_forgot() {
    let addr = fake_memcached(10);
    let (code, out, err) = run_load(
        &[
            "--memcached",
            &addr,
            "--requests",
            "2000",
            "--clients",
            "4",
            "--keys",
            "100000",
            "--mix",
            "put=1",
            "--json",
            "--quiet",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 1, "lost data means exit status 1; stderr: {err}");
    let r = json(&out, &err);
    let v = &r["verify"];
    // About one write in ten was forgotten. Keys rarely repeat among 100,000: a
    // forgotten first write is a missing key, a forgotten later one a wrong value.
    let lost = v["lost"].as_u64().unwrap();
    assert!((100..=300).contains(&lost), "{v}");
    assert_eq!(
        lost,
        v["missing"].as_u64().unwrap() + v["wrong"].as_u64().unwrap()
    );
    assert!(v["missing"].as_u64().unwrap() > 50, "{v}");
    assert!(v["checked"].as_u64().unwrap() > 1900, "{v}");
    // The same run against a faithful server loses nothing.
    let good = fake_memcached(u64::MAX);
    let (code, out, err) = run_load(
        &[
            "--memcached",
            &good,
            "--requests",
            "2000",
            "--clients",
            "4",
            "--mix",
            "put=1,get=1",
            "--json",
            "--quiet",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(json(&out, &err)["verify"]["lost"], 0);
}

#[test]
fn seq_writes_every_key_exactly_once() {
    // 1,000 keys over 7 clients (not a multiple): request i writes key i.
    let addr = fake_memcached(u64::MAX);
    let (code, out, err) = run_load(
        &[
            "--memcached",
            &addr,
            "--requests",
            "1000",
            "--keys",
            "1000",
            "--key-dist",
            "seq",
            "--clients",
            "7",
            "--threads",
            "2",
            "--pipeline",
            "3",
            "--mix",
            "put=1",
            "--json",
            "--quiet",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "stderr: {err}");
    let r = json(&out, &err);
    assert_eq!(r["requests"], 1000);
    // Every key was written, so every key is read back, and only once.
    assert_eq!(r["verify"]["checked"], 1000, "{}", r["verify"]);
    assert_eq!(r["verify"]["lost"], 0);
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    for (args, says) in [
        (vec!["--duration", "1"], "no target"),
        (
            vec!["--resp", "127.0.0.1:1", "--memcached", "127.0.0.1:2"],
            "one target",
        ),
        (
            vec!["--redis-cluster", "127.0.0.1:1", "--manager", "127.0.0.1:2"],
            "one target",
        ),
        (vec!["--redis-cluster", "127.0.0.1:1"], "CLUSTER SLOTS from"),
        (
            vec!["--resp", "127.0.0.1:1", "--mix", "get=x"],
            "not an integer",
        ),
        (
            vec!["--resp", "127.0.0.1:1", "--mix", "fetch=1"],
            "unknown op",
        ),
        (
            vec!["--resp", "127.0.0.1:1", "--key-dist", "zipf:2"],
            "between 0 and 1",
        ),
        (
            vec!["--resp", "127.0.0.1:1", "--value-size", "9-3"],
            "above",
        ),
        (
            vec!["--resp", "127.0.0.1:1", "--threads", "4", "--clients", "2"],
            "--threads",
        ),
        (
            vec!["--resp", "127.0.0.1:1", "--keys", "5", "--clients", "10"],
            "--no-verify",
        ),
        (
            vec!["--resp", "127.0.0.1:1", "--pipeline", "0"],
            "--pipeline",
        ),
        (vec!["--resp", "127.0.0.1:1", "--duration=-1"], "--duration"),
    ] {
        let (code, out, err) = run_load(&args, Duration::from_secs(10));
        assert_eq!(code, 2, "{args:?}: stdout {out} stderr {err}");
        assert!(err.contains(says), "{args:?}: expected `{says}` in {err}");
    }
}

#[test]
fn an_unreachable_target_fails_cleanly() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let (code, _, err) = run_load(
        &["--resp", &addr, "--duration", "1", "--quiet"],
        Duration::from_secs(20),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn a_run_whose_connections_break_fails_with_status_2() {
    // The wrong protocol: RESP requests to a native storage port are answered
    // with a frame error and the connection is closed.
    let c = Cluster::start(1);
    let (code, out, err) = run_load(
        &[
            "--resp",
            &c.nodes[0].addr,
            "--requests",
            "200",
            "--clients",
            "2",
            "--quiet",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 2, "stdout: {out}; stderr: {err}");
    assert!(err.contains("the run failed"), "stderr: {err}");
    assert!(err.contains("connections broke"), "stderr: {err}");
    assert!(out.contains("result    FAILED"), "stdout: {out}");
    let (code, out, err) = run_load(
        &[
            "--resp",
            &c.nodes[0].addr,
            "--requests",
            "200",
            "--clients",
            "2",
            "--json",
            "--quiet",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 2, "stderr: {err}");
    let r = json(&out, &err);
    assert!(r["connections_broken"].as_u64().unwrap() >= 2, "{r}");
    assert!(
        r["failure"].as_str().unwrap().contains("requests failed"),
        "{r}"
    );
}

#[test]
fn help_names_every_key_distribution() {
    let (code, out, _) = run_load(&["--help"], Duration::from_secs(10));
    assert_eq!(code, 0);
    for dist in ["uniform", "seq", "zipf:THETA"] {
        assert!(out.contains(dist), "--help lacks {dist}: {out}");
    }
}
