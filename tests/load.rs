//! Many connections at once against one real storage node: every pipelined reply
//! arrives, in order, with the right bytes; and the memory an idle connection
//! costs is measured and bounded.

mod common;

use common::{frame, kv, Cluster, Wire};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const PING: u8 = 10;
const PUT: u8 = 11;
const GET: u8 = 13;
const PONG: u8 = 20;
const OK: u8 = 21;
const VALUE: u8 = 22;

/// Connections each test wants open at once.
const WANTED: usize = 1000;
/// Client threads driving them.
const THREADS: usize = 4;
/// Requests pipelined per connection: half PUTs, then GETs of the same keys.
const PER_CONN: usize = 20;
/// An RSS bound that per-connection buffers growing without limit would break.
const RSS_BOUND_KIB: u64 = 200 * 1024;

/// The soft limit on open files of this process, from /proc.
fn soft_nofile() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        Some(usize::MAX)
    } else {
        soft.parse().ok()
    }
}

/// How many connections a test may open. Both tests of this file may run at once
/// in this process, so each needs `WANTED` sockets plus some slack. The node is
/// a child process with the same limit, holding one side of each. If the limit is
/// too low, the count is lowered and the test says so.
fn connection_count(test: &str) -> usize {
    let need = 2 * WANTED + 100;
    match soft_nofile() {
        Some(soft) if soft >= need => WANTED,
        Some(soft) => {
            let n = (soft.saturating_sub(100) / 2).clamp(1, WANTED);
            eprintln!(
                "NOTE {test}: RLIMIT_NOFILE soft limit is {soft}, below the {need} this file \
                 needs; running with {n} connections instead of {WANTED} \
                 (raise it with `ulimit -n {need}` to test the full count)"
            );
            n
        }
        None => {
            eprintln!("NOTE {test}: cannot read /proc/self/limits; trying {WANTED} connections");
            WANTED
        }
    }
}

/// Opens `n` connections to `addr`, paced so the node's accept queue never
/// overflows: every `PACE` connects, a probe connection (opened last) is PINGed,
/// and the node answers it only after accepting everything queued before it.
/// Without pacing, a burst of 1,000 connects overflows the node's listen backlog
/// (128) and the kernel's SYN retries add seconds. The last probe also proves
/// all `n` are accepted.
fn open_paced(addr: &str, n: usize, node_id: u32) -> Vec<Wire> {
    const PACE: usize = 25;
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        conns.push(Wire::connect(addr));
        if (i + 1) % PACE == 0 || i + 1 == n {
            Wire::connect(addr).ping_ok(node_id);
        }
    }
    conns
}

/// The key and value request `j` of connection `c` writes.
fn key_value(c: usize, j: usize) -> (Vec<u8>, Vec<u8>) {
    let key = format!("conn{c}/key{j}").into_bytes();
    let mut value = format!("value {c} {j}\n").into_bytes();
    value.extend(std::iter::repeat_n(
        b'a' + (j % 26) as u8,
        (c * 7 + j * 13) % 60,
    ));
    (key, value)
}

#[test]
fn a_thousand_connections_pipelining_get_every_reply_in_order() {
    let conns = connection_count("a_thousand_connections_pipelining");
    let c = Cluster::start(1);
    let addr = c.nodes[0].addr.clone();
    let n = common::node_id_of(&addr);
    let rss_start = c.nodes[0].rss_kib();
    let start = Instant::now();
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let addr = addr.clone();
        let barrier = barrier.clone();
        handles.push(std::thread::spawn(move || {
            let mine: Vec<usize> = (0..conns).filter(|i| i % THREADS == t).collect();
            let mut wires = open_paced(&addr, mine.len(), n);
            // Every connection is open before any request goes out.
            barrier.wait();
            for (w, &ci) in wires.iter_mut().zip(&mine) {
                let mut req = Vec::new();
                for j in 0..PER_CONN / 2 {
                    let (k, v) = key_value(ci, j);
                    req.extend(frame(PUT, ci as u64, 0, &kv(&k, &v)));
                }
                for j in 0..PER_CONN / 2 {
                    req.extend(frame(GET, ci as u64, 0, &key_value(ci, j).0));
                }
                w.send(&req);
            }
            for (w, &ci) in wires.iter_mut().zip(&mine) {
                let mut want = Vec::new();
                for _ in 0..PER_CONN / 2 {
                    want.extend(frame(OK, ci as u64, n, b""));
                }
                for j in 0..PER_CONN / 2 {
                    want.extend(frame(VALUE, ci as u64, n, &key_value(ci, j).1));
                }
                w.expect(&want);
            }
            wires
        }));
    }
    barrier.wait();
    let connected = start.elapsed();
    let mut open = Vec::new();
    for h in handles {
        open.extend(h.join().expect("client thread"));
    }
    let elapsed = start.elapsed();
    let rss_open = c.nodes[0].rss_kib();
    eprintln!(
        "{conns} connections x {PER_CONN} pipelined requests: all connected after {connected:?}, \
         all replies checked after {elapsed:?}; node RSS {rss_start} KiB at start, \
         {rss_open} KiB with {} connections open",
        open.len()
    );
    assert_eq!(open.len(), conns);
    assert!(
        rss_open < RSS_BOUND_KIB,
        "RSS {rss_open} KiB with {conns} connections"
    );

    // Each connection still works, and sees another connection's data.
    for (i, w) in open.iter_mut().enumerate().step_by(97) {
        let other = (i + 1) % conns;
        w.send(&frame(GET, 0, 0, &key_value(other, 3).0));
        w.expect(&frame(VALUE, 0, n, &key_value(other, 3).1));
    }
    drop(open);

    // The node counted every key (reported with heartbeats: poll).
    let keys = (conns * PER_CONN / 2) as u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let total = c.status()["total_keys"].as_u64().unwrap_or(0);
        if total == keys {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "STATUS total_keys {total}, want {keys}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn rss_with_a_thousand_idle_connections_is_bounded() {
    let conns = connection_count("rss_with_a_thousand_idle_connections");
    let c = Cluster::start(1);
    let addr = c.nodes[0].addr.clone();
    let n = common::node_id_of(&addr);
    let baseline = c.nodes[0].rss_kib();

    // Connected, never used.
    let mut idle = open_paced(&addr, conns, n);
    std::thread::sleep(Duration::from_millis(200));
    let rss_idle = c.nodes[0].rss_kib();

    // Each has done one round trip and is idle again.
    let mut all = Vec::new();
    for (i, w) in idle.iter_mut().enumerate() {
        let p = (i as u32).to_be_bytes();
        w.send(&frame(PING, i as u64, 0, &p));
        all.push((i, p));
    }
    for (w, (i, p)) in idle.iter_mut().zip(&all) {
        w.expect(&frame(PONG, *i as u64, n, p));
    }
    std::thread::sleep(Duration::from_millis(200));
    let rss_used = c.nodes[0].rss_kib();

    let per_conn = |rss: u64| (rss.saturating_sub(baseline) as f64) / conns as f64;
    eprintln!(
        "node RSS: {baseline} KiB with no clients; {rss_idle} KiB with {conns} idle connections \
         ({:.1} KiB each); {rss_used} KiB after one PING on each ({:.1} KiB each)",
        per_conn(rss_idle),
        per_conn(rss_used)
    );
    assert!(
        rss_idle < RSS_BOUND_KIB,
        "RSS {rss_idle} KiB, {conns} idle connections"
    );
    assert!(
        rss_used < RSS_BOUND_KIB,
        "RSS {rss_used} KiB, {conns} used connections"
    );

    // The node still serves, and closing them all leaves it healthy.
    drop(idle);
    let mut w = Wire::connect(&addr);
    w.send(&frame(PUT, 0, 0, &kv(b"after", b"all closed")));
    w.expect(&frame(OK, 0, n, b""));
    common::assert_serves(&addr, n, b"after", b"all closed");
}
