//! Replication with the real binaries (N=3 R=2 W=2, the defaults): crashes
//! during a write load lose no acknowledged write, and nothing hangs.

mod common;

use common::{kill, Cluster, TIMEOUT};
use gtstore::client::Connection;
use gtstore::protocol::op;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn key(t: usize, i: usize) -> Vec<u8> {
    format!("w{t}:{i:07}").into_bytes()
}

fn value(t: usize, i: usize) -> Vec<u8> {
    format!("value-{t}-{i}").into_bytes()
}

/// What a writer saw.
#[derive(Default)]
struct Tally {
    /// Indexes whose PUT was acknowledged.
    acked: Vec<usize>,
    /// (time since start, error text) of every failed PUT.
    failed: Vec<(Duration, String)>,
}

/// Writes fresh keys through `addr` in pipelined batches of 16 until `stop`.
/// Every request gets an answer (OK or ERR) within the client timeout, or the
/// writer panics: a hang fails the test.
fn writer(addr: String, t: usize, stop: Arc<AtomicBool>, start: Instant) -> Tally {
    let mut conn = Connection::connect(&addr, TIMEOUT).unwrap();
    let mut tally = Tally::default();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let batch: Vec<usize> = (i..i + 16).collect();
        i += 16;
        for &n in &batch {
            let k = key(t, n);
            let klen = k.len().to_string();
            conn.queue(op::PUT, 0, &[klen.as_bytes(), b" ", &k, &value(t, n)]);
        }
        conn.flush().unwrap();
        for &n in &batch {
            let f = conn.recv().expect("every request is answered in time");
            match f.op {
                op::OK => tally.acked.push(n),
                op::ERR => tally.failed.push((
                    start.elapsed(),
                    String::from_utf8_lossy(&f.payload).into_owned(),
                )),
                other => panic!("PUT answered with op {other}"),
            }
        }
    }
    tally
}

/// Reads back every acknowledged key of writer `t` through `addr`.
fn lost(addr: &str, t: usize, acked: &[usize]) -> Vec<usize> {
    let bad = common::read_back(addr, acked, |n| key(t, n), |n| value(t, n));
    if let Some((n, got)) = bad.first() {
        eprintln!("writer {t}: {} acknowledged writes read back wrong via {addr}; the first, n = {n}: {got:?}", bad.len());
    }
    bad.into_iter().map(|(n, _)| n).collect()
}

/// Runs two writers (through nodes 0 and 1) for `before`, calls `fault`, runs
/// them for `after` more, and returns their tallies and when the fault happened.
fn load_around(
    c: &mut Cluster,
    before: Duration,
    after: Duration,
    fault: impl FnOnce(&mut Cluster),
) -> (Vec<Tally>, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tallies = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..2)
        .map(|t| {
            let (addr, stop, tallies) = (c.nodes[t].addr.clone(), stop.clone(), tallies.clone());
            std::thread::spawn(move || {
                let tally = writer(addr, t, stop, start);
                tallies.lock().unwrap().push((t, tally));
            })
        })
        .collect();
    std::thread::sleep(before);
    let at = start.elapsed();
    fault(c);
    std::thread::sleep(after);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("a writer failed");
    }
    let mut v = std::mem::take(&mut *tallies.lock().unwrap());
    v.sort_by_key(|(t, _)| *t);
    (v.into_iter().map(|(_, tally)| tally).collect(), at)
}

#[test]
fn kill_nine_of_a_replica_during_writes_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3);
    let (tallies, killed_at) = load_around(
        &mut c,
        Duration::from_millis(1500),
        Duration::from_millis(3500),
        |c| kill(c.nodes[2].pid(), "KILL"),
    );
    let mut failures = 0;
    let mut last_failure = None;
    for (t, tally) in tallies.iter().enumerate() {
        assert!(tally.acked.len() > 100, "writer {t} made no progress");
        for (when, why) in &tally.failed {
            assert!(
                why.starts_with("UNAVAILABLE")
                    || why.starts_with("TIMEOUT")
                    || why.starts_with("UNKNOWN"),
                "unexpected error {why}"
            );
            assert!(*when >= killed_at, "a write failed before the crash: {why}");
            last_failure = last_failure.max(Some(*when));
        }
        failures += tally.failed.len();
        for addr in [&c.nodes[0].addr, &c.nodes[1].addr] {
            assert_eq!(
                lost(addr, t, &tally.acked),
                Vec::<usize>::new(),
                "via {addr}"
            );
        }
    }
    let acked: usize = tallies.iter().map(|t| t.acked.len()).sum();
    println!(
        "{acked} writes acknowledged, {failures} failed; last failure {:?} after the kill",
        last_failure.map(|l| l - killed_at)
    );
}

#[test]
fn kill_nine_of_the_manager_does_not_touch_the_data_path() {
    let mut c = Cluster::start(3);
    let (tallies, _) = load_around(
        &mut c,
        Duration::from_millis(700),
        Duration::from_millis(2000),
        |c| kill(c.manager.pid(), "KILL"),
    );
    for (t, tally) in tallies.iter().enumerate() {
        assert_eq!(tally.failed, vec![], "writer {t}");
        assert!(tally.acked.len() > 100, "writer {t} made no progress");
        assert_eq!(lost(&c.nodes[2].addr, t, &tally.acked), Vec::<usize>::new());
    }
}

#[test]
fn a_paused_replica_is_routed_around_and_reads_repair_stale_copies() {
    // Three nodes, three copies. Pause one (SIGSTOP) until the manager marks it
    // down, overwrite every key, resume it (it still holds the old values), then
    // pause another: R=2 now reads one new and one old copy, must answer the
    // newer, and repairs the old one first.
    let c = Cluster::start(3);
    let mut conn = c.raw(0);
    let put = |conn: &mut Connection, k: &str, v: &str| {
        let klen = k.len().to_string();
        let f = conn.call(
            op::PUT,
            0,
            &[klen.as_bytes(), b" ", k.as_bytes(), v.as_bytes()],
        );
        f.map(|f| f.op).unwrap()
    };
    for i in 0..50 {
        assert_eq!(put(&mut conn, &format!("k{i}"), "one"), op::OK);
    }
    kill(c.nodes[2].pid(), "STOP");
    c.wait_state(2, "down");
    for i in 0..50 {
        // W=2 of the two running nodes.
        assert_eq!(put(&mut conn, &format!("k{i}"), "two"), op::OK);
    }
    kill(c.nodes[2].pid(), "CONT");
    c.wait_state(2, "up");
    kill(c.nodes[1].pid(), "STOP");
    c.wait_state(1, "down");
    for i in 0..50 {
        let f = conn
            .call(op::GET, 0, &[format!("k{i}").as_bytes()])
            .unwrap();
        assert_eq!((f.op, &f.payload[..]), (op::VALUE, &b"two"[..]), "k{i}");
    }
    kill(c.nodes[1].pid(), "CONT");
    c.wait_state(1, "up");
    // And through node 2, with node 0 paused in turn.
    kill(c.nodes[0].pid(), "STOP");
    c.wait_state(0, "down");
    let mut via2 = c.raw(2);
    for i in 0..50 {
        let f = via2
            .call(op::GET, 0, &[format!("k{i}").as_bytes()])
            .unwrap();
        assert_eq!((f.op, &f.payload[..]), (op::VALUE, &b"two"[..]), "k{i}");
    }
    kill(c.nodes[0].pid(), "CONT");
}

#[test]
fn a_replica_paused_during_writes_loses_nothing_and_catches_up() {
    // Node 2 is stopped for 3 s (past the 2 s --down-after) while two writers
    // run, then continued: no acknowledged write is lost, every request is
    // answered (OK, or an ERR saying unavailable or timed out), and node 2 ends
    // with every key the others hold, after catching up.
    let mut c = Cluster::start(3);
    let (tallies, _) = load_around(
        &mut c,
        Duration::from_millis(700),
        Duration::from_millis(2000),
        |c| {
            kill(c.nodes[2].pid(), "STOP");
            std::thread::sleep(Duration::from_secs(3));
            kill(c.nodes[2].pid(), "CONT");
        },
    );
    for (t, tally) in tallies.iter().enumerate() {
        assert!(tally.acked.len() > 100, "writer {t} made no progress");
        for (_, why) in &tally.failed {
            assert!(
                why.starts_with("UNAVAILABLE")
                    || why.starts_with("TIMEOUT")
                    || why.starts_with("UNKNOWN"),
                "unexpected error {why}"
            );
        }
    }
    // Every key is on all three nodes once node 2 has caught up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = c.status();
        let nodes = s["nodes"].as_array().unwrap();
        let keys: Vec<u64> = nodes.iter().map(|n| n["keys"].as_u64().unwrap()).collect();
        let behind = nodes.iter().any(|n| n["catching_up"] == true);
        if !behind && keys.iter().all(|&k| k == keys[0] && k > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "never caught up: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for (t, tally) in tallies.iter().enumerate() {
        for node in &c.nodes {
            assert_eq!(lost(&node.addr, t, &tally.acked), Vec::<usize>::new());
        }
    }
    let failed: usize = tallies.iter().map(|t| t.failed.len()).sum();
    let acked: usize = tallies.iter().map(|t| t.acked.len()).sum();
    println!("{acked} writes acknowledged, {failed} failed while node 2 was paused");
}
