//! Cluster-wide SCAN through ring changes, with the real binaries: three
//! walkers (RESP `SCAN ... COUNT`, paged `GET /fetch?limit=`, and the client
//! library's native SCAN) go through a few thousand keys a small page at a
//! time, one page each in turn; between pages a node joins, and later one is
//! dropped (it hands its data over and leaves) and one leaves on SIGTERM.
//! Every key must come back exactly once from each walker, with N = 1 (where
//! each key lives on one node, so a range that moves is felt at once) and
//! with N = 3. Then `GET /fetch` without `limit`: the whole store as one
//! chunked body, framing checked byte by byte, every key once; and a client
//! that stops reading a stream stops the node fetching pages for it.

mod common;

use common::http::{connect, http_addr, read_chunks, read_reply};
use common::{Cluster, Wire, TIMEOUT};
use gtstore::client::{Client, Connection};
use gtstore::protocol::op;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

/// Keys the tests write.
const KEYS: usize = 3_000;
/// Keys a page asks for.
const PAGE: usize = 20;

fn key(i: usize) -> String {
    format!("key:{i:05}")
}

/// Writes every key through `addr`, pipelined, with the value `v`.
fn load(addr: &str) {
    load_values(addr, b"v");
}

/// Writes every key through `addr`, pipelined, each with `value`.
fn load_values(addr: &str, value: &[u8]) {
    let mut conn = Connection::connect(addr, TIMEOUT).unwrap();
    for batch in (0..KEYS).collect::<Vec<_>>().chunks(500) {
        for &i in batch {
            let k = key(i);
            let klen = k.len().to_string();
            conn.queue(op::PUT, 0, &[klen.as_bytes(), b" ", k.as_bytes(), value]);
        }
        conn.flush().unwrap();
        for &i in batch {
            assert_eq!(conn.recv().unwrap().op, op::OK, "PUT {i}");
        }
    }
}

/// A RESP command as clients send it.
fn resp_cmd(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    v
}

fn resp_line(w: &mut Wire) -> String {
    let mut v = Vec::new();
    loop {
        match w.read_n(1)[0] {
            b'\r' => {
                w.read_n(1);
                return String::from_utf8(v).unwrap();
            }
            b => v.push(b),
        }
    }
}

fn resp_bulk(w: &mut Wire) -> String {
    let head = resp_line(w);
    let len: usize = head
        .strip_prefix('$')
        .expect("a bulk string")
        .parse()
        .unwrap();
    let v = w.read_n(len + 2);
    String::from_utf8(v[..len].to_vec()).unwrap()
}

/// One walker, a page at a time.
enum Walker {
    Resp(Wire),
    Http(String),
    Native(Client),
}

impl Walker {
    /// The page at `cursor`: its keys and the next cursor (`"0"`: done).
    fn page(&mut self, cursor: &str) -> (Vec<String>, String) {
        match self {
            Walker::Resp(w) => {
                w.send(&resp_cmd(&["SCAN", cursor, "COUNT", &PAGE.to_string()]));
                let head = resp_line(w);
                assert_eq!(head, "*2", "SCAN answered {head}");
                let next = resp_bulk(w);
                let n: usize = resp_line(w)[1..].parse().unwrap();
                ((0..n).map(|_| resp_bulk(w)).collect(), next)
            }
            Walker::Http(addr) => {
                let mut c = connect(addr);
                let path = format!("/fetch?limit={PAGE}&cursor={cursor}");
                let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
                c.get_mut().write_all(req.as_bytes()).unwrap();
                let r = read_reply(&mut c);
                assert_eq!(r.status, 200, "{}", r.body);
                let keys = (r.json().as_array().unwrap().iter())
                    .map(|i| i["key"]["data"].as_str().unwrap().to_string())
                    .collect();
                let next = r.header("x-next-cursor").unwrap_or("0").to_string();
                (keys, next)
            }
            Walker::Native(c) => {
                let (records, next) = c.scan_at(cursor.parse().unwrap(), PAGE).unwrap();
                let keys = (records.iter())
                    .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
                    .collect();
                (keys, next.to_string())
            }
        }
    }
}

/// A walk in progress: where it is and how often it saw each key.
struct Walk {
    walker: Walker,
    cursor: String,
    seen: BTreeMap<String, usize>,
    pages: usize,
    done: bool,
}

impl Walk {
    fn new(walker: Walker) -> Walk {
        Walk {
            walker,
            cursor: "0".into(),
            seen: BTreeMap::new(),
            pages: 0,
            done: false,
        }
    }

    /// One more page, unless the walk is over.
    fn step(&mut self) {
        if self.done {
            return;
        }
        let (keys, next) = self.walker.page(&self.cursor);
        for k in keys {
            *self.seen.entry(k).or_default() += 1;
        }
        self.pages += 1;
        assert!(self.pages < 10 * KEYS, "the walk does not end");
        self.done = next == "0";
        self.cursor = next;
    }

    /// Every key exactly once.
    fn check(&self, name: &str) {
        let twice: Vec<&String> = (self.seen.iter())
            .filter(|(_, &n)| n > 1)
            .map(|(k, _)| k)
            .collect();
        let missing: Vec<String> = (0..KEYS)
            .map(key)
            .filter(|k| !self.seen.contains_key(k))
            .collect();
        assert!(
            twice.is_empty() && missing.is_empty() && self.seen.len() == KEYS,
            "{name}: {} keys seen more than once (first {:?}), {} missing (first {:?})",
            twice.len(),
            twice.first(),
            missing.len(),
            missing.first()
        );
        println!("{name}: every key once in {} pages", self.pages);
    }
}

/// Waits until `done` holds, for up to a minute.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill_term(pid: u32) {
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Walks with the three walkers through a join, a drop and a leave.
fn walk_through_ring_changes(manager_args: &[&str]) {
    let node_args = ["--resp-port", "0", "--http-port", "0"];
    let mut c = Cluster::start_full(3, manager_args, &node_args);
    load(&c.nodes[0].addr);
    // The walkers talk to node 0, which stays; the others come and go.
    let mut walks = [
        Walk::new(Walker::Resp(Wire::connect(&c.nodes[0].resp_addr()))),
        Walk::new(Walker::Http(http_addr(&c.nodes[0]))),
        Walk::new(Walker::Native(c.node_client(0))),
    ];
    let pages = KEYS / PAGE;
    let mut step = 0;
    while walks.iter().any(|w| !w.done) {
        for w in walks.iter_mut() {
            w.step();
        }
        step += 1;
        if step == pages / 4 {
            let joined = c.add_node(&node_args);
            c.wait_live(4);
            wait_for("the join settling", || {
                c.node_status(joined)["state"] == "up"
            });
        }
        if step == pages / 2 {
            let secret = gtstore::DEFAULT_SECRET.as_bytes();
            let what = c.nodes[1].addr.clone();
            assert!(gtstore::client::drop_node(&c.manager.addr, &what, secret, TIMEOUT).unwrap());
            wait_for("the dropped node leaving", || !c.nodes[1].alive());
        }
        if step == 3 * pages / 4 {
            kill_term(c.nodes[2].pid());
            wait_for("the SIGTERMed node leaving", || !c.nodes[2].alive());
        }
    }
    assert!(
        step > 3 * pages / 4,
        "the walks ended before the ring changes"
    );
    for (w, name) in walks
        .iter()
        .zip(["RESP SCAN", "GET /fetch?limit", "client scan"])
    {
        w.check(name);
    }
}

#[test]
fn walks_list_every_key_once_through_joins_and_leaves_with_one_copy() {
    walk_through_ring_changes(common::SINGLE_COPY);
}

#[test]
fn walks_list_every_key_once_through_joins_and_leaves_with_three_copies() {
    walk_through_ring_changes(&[]);
}

#[test]
fn get_fetch_streams_the_whole_store_in_exact_chunks() {
    let c = Cluster::start_full(3, &[], &["--http-port", "0"]);
    load(&c.nodes[1].addr);
    let mut conn = connect(&http_addr(&c.nodes[2]));
    conn.get_mut()
        .write_all(b"GET /fetch HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_ascii_lowercase());
    }
    assert_eq!(head[0], "http/1.1 200 ok");
    assert!(
        head.contains(&"transfer-encoding: chunked".to_string()),
        "{head:?}"
    );
    assert!(
        !head.iter().any(|h| h.starts_with("content-length")),
        "{head:?}"
    );
    let chunks = read_chunks(&mut conn);
    // One chunk per native page of 1,000 keys (fewer when a page is empty).
    assert!(chunks.len() >= 2, "{} chunks", chunks.len());
    let body: Vec<u8> = chunks.concat();
    let items: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut keys: Vec<&str> = (items.as_array().unwrap().iter())
        .map(|i| i["key"]["data"].as_str().unwrap())
        .collect();
    keys.sort_unstable();
    let want: Vec<String> = (0..KEYS).map(key).collect();
    assert_eq!(keys, want, "every key once");
    // The connection stays usable: a paged request after the stream.
    conn.get_mut()
        .write_all(b"GET /fetch?limit=5 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = read_reply(&mut conn);
    assert_eq!(r.json().as_array().unwrap().len(), 5);
    let next: u64 = r.header("x-next-cursor").unwrap().parse().unwrap();
    assert!(next > 0);
}

/// The native SCANs node `http` sent for its HTTP front (answered `ok`).
fn scans_sent(http: &str) -> u64 {
    let mut c = connect(http);
    (c.get_mut())
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = read_reply(&mut c);
    let line = "gtstore_node_http_key_requests_total{op=\"SCAN\",result=\"ok\"} ";
    (r.body.lines())
        .find_map(|l| l.strip_prefix(line))
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn a_stream_the_client_does_not_read_stops_fetching_pages() {
    // One node, one copy: a page is one of its 64 ranges (about 750 KB here),
    // and the store (48 MB) is far larger than what the kernel's socket
    // buffers and the reactor's low-water mark (1 MB) can hold together.
    let single = common::SINGLE_COPY;
    let c = Cluster::start_full(1, single, &["--http-port", "0"]);
    let value = vec![b'x'; 16 << 10];
    load_values(&c.nodes[0].addr, &value);
    let http = http_addr(&c.nodes[0]);
    let before = scans_sent(&http);
    let mut conn = connect(&http);
    (conn.get_mut())
        .write_all(b"GET /fetch HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut status = String::new();
    conn.read_line(&mut status).unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK\r\n");
    // Not reading: the node must settle at a few pages, not walk the store.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut still) = (u64::MAX, 0);
    while still < 10 {
        let n = scans_sent(&http) - before;
        (last, still) = if n == last { (n, still + 1) } else { (n, 0) };
        assert!(
            Instant::now() < deadline,
            "the node never stopped: {n} SCANs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut head = String::new();
    while head != "\r\n" {
        head.clear();
        conn.read_line(&mut head).unwrap();
    }
    let body = read_chunks(&mut conn).concat();
    let total = scans_sent(&http) - before;
    println!("SCANs while the client did not read: {last} of {total}");
    assert!(last * 2 < total, "{last} of {total} pages fetched unread");
    let items: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut keys: Vec<&str> = (items.as_array().unwrap().iter())
        .map(|i| i["key"]["data"].as_str().unwrap())
        .collect();
    keys.sort_unstable();
    let want: Vec<String> = (0..KEYS).map(key).collect();
    assert_eq!(keys, want, "every key once");
}
