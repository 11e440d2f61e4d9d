//! Leases with the real binaries: nodes that lose the manager (SIGSTOP) for
//! longer than `--lease-ms` stop serving data on every front (native, RESP,
//! HTTP), and serve again once it is back.

mod common;

use common::http::{connect, http_addr, read_reply};
use common::{kill, Cluster, TIMEOUT};
use gtstore::client::{ClientError, Connection};
use gtstore::protocol::op;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The answer to `o` with `payload` on `conn`: (op, payload text; for an
/// `ERR`, `CODE message`).
fn ask(conn: &mut Connection, o: u8, payload: &str) -> (u8, String) {
    match conn.call(o, 1, &[payload.as_bytes()]) {
        Ok(f) => (f.op, String::from_utf8_lossy(&f.payload).into_owned()),
        Err(ClientError::Server(e)) => (op::ERR, e.to_string()),
        Err(e) => panic!("no answer: {e}"),
    }
}

/// Node `addr`'s answer to GET `key`.
fn get(addr: &str, key: &str) -> (u8, String) {
    let mut conn = Connection::connect(addr, TIMEOUT).expect("connect");
    ask(&mut conn, op::GET, key)
}

/// Waits (at most 20 s) until every node of `c` answers GET `key` as `want`
/// says; returns the last answers.
fn wait_all(c: &Cluster, key: &str, want: impl Fn(&(u8, String)) -> bool) -> Vec<(u8, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got: Vec<_> = c.nodes.iter().map(|n| get(&n.addr, key)).collect();
        if got.iter().all(&want) {
            return got;
        }
        assert!(Instant::now() < deadline, "still {got:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first line of node `resp`'s answer to RESP `GET key`.
fn resp_get(resp: &str, key: &str) -> String {
    let mut s = TcpStream::connect(resp).expect("connect to RESP");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let cmd = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
    s.write_all(cmd.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .expect("a RESP reply");
    line.trim_end().to_string()
}

/// Node `http`'s answer to `POST /fetch` of `key`: (status, body).
fn http_fetch(http: &str, key: &str) -> (u16, String) {
    let body = format!(r#"[{{"encoding":"string","data":"{key}"}}]"#);
    let mut c = connect(http);
    let req = format!(
        "POST /fetch HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.get_mut().write_all(req.as_bytes()).unwrap();
    let r = read_reply(&mut c);
    (r.status, r.body)
}

#[test]
fn nodes_without_the_manager_for_the_lease_stop_serving_until_it_is_back() {
    let fronts = ["--resp-port", "0", "--http-port", "0"];
    let c = Cluster::start_full(3, &["--lease-ms", "1500"], &fronts);
    let mut conn = Connection::connect(&c.nodes[0].addr, TIMEOUT).unwrap();
    assert_eq!(ask(&mut conn, op::PUT, "1 kv"), (op::OK, String::new()));
    let value = |a: &(u8, String)| *a == (op::VALUE, "v".to_string());
    wait_all(&c, "k", value);
    // The manager stops answering heartbeats: after the lease, no node serves.
    let stopped = Instant::now();
    kill(c.manager.pid(), "STOP");
    let refused = |a: &(u8, String)| {
        a.0 == op::ERR && a.1.starts_with("UNAVAILABLE") && a.1.contains("lease expired")
    };
    let got = wait_all(&c, "k", refused);
    assert!(stopped.elapsed() >= Duration::from_millis(1_000), "{got:?}");
    let put = ask(&mut conn, op::PUT, "1 kw");
    assert!(refused(&put), "{put:?}");
    // The other fronts refuse too.
    let resp = resp_get(&c.nodes[1].resp_addr(), "k");
    assert!(
        resp.starts_with("-ERR UNAVAILABLE") && resp.contains("lease expired"),
        "{resp}"
    );
    let (status, body) = http_fetch(&http_addr(&c.nodes[2]), "k");
    assert!(
        status == 503 && body.contains("lease expired"),
        "{status} {body}"
    );
    // The manager is back: each node's next heartbeat renews its lease.
    kill(c.manager.pid(), "CONT");
    wait_all(&c, "k", value);
    assert_eq!(resp_get(&c.nodes[1].resp_addr(), "k"), "$1");
    assert_eq!(http_fetch(&http_addr(&c.nodes[2]), "k").0, 200);
    assert_eq!(ask(&mut conn, op::PUT, "1 kw"), (op::OK, String::new()));
}

#[test]
fn the_manager_refuses_a_lease_no_heartbeat_can_renew() {
    for lease in ["0", "500"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gtstore-manager"))
            .args(["--port", "0", "--lease-ms", lease])
            .env_remove("GTSTORE_SECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the manager started with --lease-ms {lease}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(2), "{err}");
        assert!(err.contains("--lease-ms must be above"), "{err}");
    }
}
