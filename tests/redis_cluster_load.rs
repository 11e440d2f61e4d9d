//! `gtstore-load --redis-cluster` against a real Redis Cluster of three masters
//! (no replicas) that each test starts on free 127.0.0.1 ports, in its own
//! temporary directory, and kills on drop: `redis-server --cluster-enabled yes`
//! three times, `redis-cli --cluster create`, then a wait for `cluster_state:ok`
//! on every node. Without `redis-server` and `redis-cli` these tests print a
//! notice and pass.
//!
//! 1. A plain run with a verify: no errors, nothing lost, every master served a
//!    share, and the shares add up.
//! 2. A stale slot map: the seed is a fake node that answers `CLUSTER SLOTS`
//!    with every slot on the first master, so two thirds of the keys draw
//!    `-MOVED`; the run must follow them (counted in `redirects.moved`), end
//!    with every master serving a share and lose nothing.
//! 3. A slot left half migrated (`CLUSTER SETSLOT .. MIGRATING` on its master,
//!    `IMPORTING` on another): the source answers `-ASK` for keys it does not
//!    hold, the run must send `ASKING` and the request to the target, and the
//!    verify reads them back the same way.
//!
//! Two tests need no Redis: a fake seed whose `CLUSTER SLOTS` reply is an error
//! or unusable must end the run with exit status 2 and a message; a fake node
//! that answers every command `-MOVED` to itself must make each request fail
//! with `MOVED` after the allowed hops, not bounce forever.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LOAD: &str = env!("CARGO_BIN_EXE_gtstore-load");

/// Masters in the test cluster.
const MASTERS: usize = 3;

fn installed(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// `redis-cli -p port args...`'s stdout.
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Three cluster-enabled redis-servers, killed (and their directory removed) on drop.
struct RedisCluster {
    children: Vec<Child>,
    ports: Vec<u16>,
    dir: PathBuf,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisCluster {
    /// Starts one, or None (with a notice) when Redis is not installed.
    fn start(test: &str) -> Option<RedisCluster> {
        if !installed("redis-server") || !installed("redis-cli") {
            eprintln!("NOTICE: redis-server or redis-cli not installed; {test} skipped");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("gtstore-rc-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut rc = RedisCluster {
            children: Vec::new(),
            ports: Vec::new(),
            dir,
        };
        for i in 0..MASTERS {
            let port = free_port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{i}.conf")])
                .args(["--save", "", "--appendonly", "no"])
                .current_dir(&rc.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            rc.children.push(child);
            rc.ports.push(port);
        }
        rc.wait_until("every node answers PING", |rc| {
            rc.ports.iter().all(|&p| cli(p, &["ping"]).contains("PONG"))
        });
        let addrs: Vec<String> = rc.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        rc.wait_until("cluster_state:ok on every node", |rc| {
            rc.ports
                .iter()
                .all(|&p| cli(p, &["cluster", "info"]).contains("cluster_state:ok"))
        });
        Some(rc)
    }

    fn wait_until(&mut self, what: &str, ok: impl Fn(&RedisCluster) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ok(self) {
                return;
            }
            for c in &mut self.children {
                assert!(
                    matches!(c.try_wait(), Ok(None)),
                    "a redis-server exited before {what} (port taken?)"
                );
            }
            assert!(Instant::now() < deadline, "no {what} within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    fn id(&self, i: usize) -> String {
        cli(self.ports[i], &["cluster", "myid"]).trim().to_string()
    }

    /// Which master serves `slot`.
    fn owner(&self, slot: u16) -> usize {
        let port =
            slot_owner(&cli(self.ports[0], &["cluster", "nodes"]), slot).expect("slot owner");
        self.ports
            .iter()
            .position(|&p| p == port)
            .expect("a master")
    }
}

/// The port of the master serving `slot` in a `CLUSTER NODES` listing.
fn slot_owner(nodes: &str, slot: u16) -> Option<u16> {
    for line in nodes.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 9 || !f[2].contains("master") {
            continue;
        }
        let port: u16 = f[1].split(['@', ':']).nth(1)?.parse().ok()?;
        for range in &f[8..] {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            if let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>()) {
                if (lo..=hi).contains(&slot) {
                    return Some(port);
                }
            }
        }
    }
    None
}

/// Runs gtstore-load with `args` (killed past 60 s); returns its exit code and
/// its JSON report.
fn run_load(args: &[&str]) -> (i32, serde_json::Value, String) {
    let child = Command::new(LOAD)
        .args(args)
        .args(["--json", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gtstore-load");
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            if !PathBuf::from(format!("/proc/{pid}")).exists() {
                return;
            }
        }
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let out = child.wait_with_output().expect("gtstore-load output");
    let _ = watchdog.join();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let r = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout:?}; stderr {stderr}"));
    (out.status.code().unwrap_or(-1), r, stderr)
}

/// A workload that touches every op the cluster supports, with a verify.
const WORKLOAD: [&str; 14] = [
    "--duration",
    "2",
    "--clients",
    "6",
    "--threads",
    "2",
    "--pipeline",
    "8",
    "--keys",
    "3000",
    "--mix",
    "get=50,put=25,del=5,incr=10,create=5,update=5",
    "--value-size",
    "10-200",
];

/// What a healthy run against the three masters shows.
fn assert_healthy(code: i32, r: &serde_json::Value, stderr: &str) {
    assert_eq!(code, 0, "exit status; report {r}; stderr {stderr}");
    assert_eq!(r["errors_total"], 0, "errors: {}", r["errors"]);
    assert_eq!(r["connections_broken"], 0);
    let requests = r["requests"].as_u64().unwrap();
    assert!(requests > 0, "{r}");
    let shares = r["nodes"].as_array().unwrap();
    assert_eq!(shares.len(), MASTERS, "a share per master: {}", r["nodes"]);
    let sum: u64 = shares.iter().map(|n| n["requests"].as_u64().unwrap()).sum();
    assert_eq!(sum, requests, "shares add up");
    for n in shares {
        assert!(
            n["requests"].as_u64().unwrap() > 0,
            "every master served: {n}"
        );
    }
    let v = &r["verify"];
    assert!(v["checked"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
}

#[test]
fn load_spreads_over_three_masters_and_loses_nothing() {
    let Some(rc) = RedisCluster::start("plain") else {
        return;
    };
    let seed = rc.addr(1);
    let mut args = vec!["--redis-cluster", seed.as_str()];
    args.extend(WORKLOAD);
    let (code, r, err) = run_load(&args);
    assert_healthy(code, &r, &err);
    assert_eq!(r["protocol"], "resp");
    assert_eq!(r["redirects"]["moved"], 0, "a fresh map needs no MOVED");
}

/// A fake seed: answers one `CLUSTER SLOTS` with `reply` (waits at most 30 s
/// for the connection).
fn fake_seed(reply: String) -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("no connection to the fake seed: {e}"),
            }
        };
        s.set_nonblocking(false).expect("blocking");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 256];
        let mut got = Vec::new();
        while !got.ends_with(b"SLOTS\r\n") {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "closed before CLUSTER SLOTS");
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(reply.as_bytes()).expect("write");
    });
    (addr, h)
}

/// A `CLUSTER SLOTS` reply with every slot on 127.0.0.1:`port`.
fn all_slots_on(port: u16) -> String {
    format!("*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:{port}\r\n$4\r\nfake\r\n")
}

#[test]
fn a_seed_without_a_usable_slot_map_is_refused() {
    // No Redis needed: the seed is fake.
    let replies = [
        "-ERR This instance has cluster support disabled\r\n".to_string(),
        "*0\r\n".to_string(),
        "*1\r\n*3\r\n:9\r\n:3\r\n*2\r\n$9\r\n127.0.0.1\r\n:1\r\n".to_string(),
        "%1\r\n".to_string(),
    ];
    for reply in replies {
        let (seed, h) = fake_seed(reply.clone());
        let out = Command::new(LOAD)
            .args(["--redis-cluster", &seed, "--duration", "1", "--quiet"])
            .stdin(Stdio::null())
            .output()
            .expect("run gtstore-load");
        h.join().expect("fake seed");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{reply:?}: {err}");
        assert!(err.contains("CLUSTER SLOTS from"), "{reply:?}: {err}");
        assert!(!err.contains("panicked"), "{reply:?}: {err}");
    }
}

#[test]
fn a_stale_slot_map_is_corrected_by_moved() {
    let Some(rc) = RedisCluster::start("moved") else {
        return;
    };
    let (seed, h) = fake_seed(all_slots_on(rc.ports[0]));
    let mut args = vec!["--redis-cluster", seed.as_str()];
    args.extend(WORKLOAD);
    let (code, r, err) = run_load(&args);
    h.join().expect("fake seed");
    assert_healthy(code, &r, &err);
    assert!(
        r["redirects"]["moved"].as_u64().unwrap() > 0,
        "MOVED followed: {}",
        r["redirects"]
    );
}

/// gtstore-load's key number `n` (`key:` and nine digits).
fn key_name(n: u32) -> String {
    format!("key:{n:09}")
}

#[test]
fn a_migrating_slot_is_reached_through_ask() {
    let Some(rc) = RedisCluster::start("ask") else {
        return;
    };
    // Key 0's slot migrates from its master to the next one, and stays half way.
    let slot: u16 = cli(rc.ports[0], &["cluster", "keyslot", &key_name(0)])
        .trim()
        .parse()
        .expect("a slot number");
    let src = rc.owner(slot);
    let dst = (src + 1) % MASTERS;
    let s = slot.to_string();
    let importing = cli(
        rc.ports[dst],
        &["cluster", "setslot", &s, "importing", &rc.id(src)],
    );
    assert!(importing.contains("OK"), "IMPORTING: {importing}");
    let migrating = cli(
        rc.ports[src],
        &["cluster", "setslot", &s, "migrating", &rc.id(dst)],
    );
    assert!(migrating.contains("OK"), "MIGRATING: {migrating}");
    // Key 0 only, written and read, so every request draws ASK.
    let seed = rc.addr(0);
    let (code, r, err) = run_load(&[
        "--redis-cluster",
        &seed,
        "--duration",
        "1",
        "--clients",
        "1",
        "--pipeline",
        "4",
        "--keys",
        "1",
        "--mix",
        "get=50,put=50",
    ]);
    assert_eq!(code, 0, "report {r}; stderr {err}");
    assert_eq!(r["errors_total"], 0, "errors: {}", r["errors"]);
    assert!(
        r["redirects"]["ask"].as_u64().unwrap() > 0,
        "ASK followed: {}",
        r["redirects"]
    );
    assert_eq!(r["redirects"]["moved"], 0, "ASK leaves the map alone");
    assert_eq!(r["verify"]["checked"], 1, "{}", r["verify"]);
    assert_eq!(r["verify"]["lost"], 0, "{}", r["verify"]);
    // The writes landed on the importing node, not the source.
    let raw_src = cli(rc.ports[src], &["cluster", "countkeysinslot", &s]);
    assert_eq!(raw_src.trim(), "0", "the source holds none of the slot");
    let raw_dst = cli(rc.ports[dst], &["cluster", "countkeysinslot", &s]);
    assert_eq!(raw_dst.trim(), "1", "the target holds the key");
}

/// A fake cluster node on 127.0.0.1: its first connection gets a `CLUSTER SLOTS`
/// reply with every slot on itself; every command on later connections is
/// answered `-MOVED 0` to itself. Serves until `stop` is set or 30 s pass.
fn moved_to_itself(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (String, std::thread::JoinHandle<()>) {
    use std::sync::atomic::Ordering;
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut first = true;
        let mut conns = Vec::new();
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            if let Ok((s, _)) = l.accept() {
                let seed = std::mem::take(&mut first);
                let stop = stop.clone();
                conns.push(std::thread::spawn(move || {
                    let mut s = s;
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(100)))
                        .unwrap();
                    let moved = format!("-MOVED 0 127.0.0.1:{port}\r\n");
                    let mut buf = [0u8; 4096];
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let n = match s.read(&mut buf) {
                            Ok(0) => return,
                            Ok(n) => n,
                            Err(_) => continue,
                        };
                        // Every command starts with `*`, which no key or value holds.
                        let commands = buf[..n].iter().filter(|&&b| b == b'*').count();
                        let reply = if seed {
                            all_slots_on(port)
                        } else {
                            moved.repeat(commands)
                        };
                        if s.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                }));
            } else {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        for c in conns {
            let _ = c.join();
        }
    });
    (format!("127.0.0.1:{port}"), h)
}

#[test]
fn a_redirect_loop_fails_its_requests_with_moved() {
    // No Redis needed: the node is fake.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (seed, h) = moved_to_itself(stop.clone());
    let (code, r, err) = run_load(&[
        "--redis-cluster",
        &seed,
        "--duration",
        "1",
        "--clients",
        "2",
        "--pipeline",
        "4",
        "--no-verify",
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    h.join().expect("fake node");
    assert_eq!(code, 2, "report {r}; stderr {err}");
    let errors = r["errors"].as_object().unwrap();
    assert_eq!(errors.keys().collect::<Vec<_>>(), ["MOVED"], "{errors:?}");
    assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
    // Each request followed the redirect the allowed number of times, then failed.
    let moved = r["redirects"]["moved"].as_u64().unwrap();
    assert!(moved >= 5 * errors["MOVED"].as_u64().unwrap(), "{r}");
}
