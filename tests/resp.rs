//! The RESP front (`gtstore-storage --resp-port`): raw RESP2 bytes in, exact reply
//! bytes out, against the real binaries; then redis-cli and redis-benchmark,
//! unchanged, when they are installed (`.ci/run` installs redis-tools).

mod common;

use common::{frame, kv, show, Cluster, Wire};
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

/// A cluster of `n` nodes, each also serving RESP; returns the RESP addresses too.
fn cluster(n: usize, extra: &[&str]) -> (Cluster, Vec<String>) {
    let mut args = vec!["--resp-port", "0"];
    args.extend_from_slice(extra);
    let c = Cluster::start_with(n, &args);
    let resp = c.nodes.iter().map(|p| p.resp_addr()).collect();
    for p in &c.nodes {
        common::node_id_of(&p.addr);
    }
    (c, resp)
}

/// Sends `request`, expects exactly `reply`.
fn exchange(w: &mut Wire, request: &[u8], reply: &[u8]) {
    w.send(request);
    w.expect(reply);
}

#[test]
fn every_command_answers_with_the_exact_bytes() {
    let (c, resp) = cluster(1, &[]);
    let mut w = Wire::connect(&resp[0]);
    let cases: &[(&[&str], &str)] = &[
        (&["PING"], "+PONG\r\n"),
        (&["ping", "hello there"], "$11\r\nhello there\r\n"),
        (&["ECHO", "a\r\nb"], "$4\r\na\r\nb\r\n"),
        (&["GET", "k"], "$-1\r\n"),
        (&["SET", "k", "v1"], "+OK\r\n"),
        (&["GET", "k"], "$2\r\nv1\r\n"),
        (&["SET", "k", "v2", "NX"], "$-1\r\n"),
        (&["SET", "new", "n", "nx"], "+OK\r\n"),
        (&["SET", "k", "v3", "XX"], "+OK\r\n"),
        (&["SET", "absent", "x", "XX"], "$-1\r\n"),
        (&["GET", "k"], "$2\r\nv3\r\n"),
        (&["SET", "e", ""], "+OK\r\n"),
        (&["GET", "e"], "$0\r\n\r\n"),
        (&["EXISTS", "k", "absent", "k", "new"], ":3\r\n"),
        (&["DEL", "new", "absent", "e"], ":2\r\n"),
        (&["EXISTS", "new"], ":0\r\n"),
        (&["INCR", "n"], ":1\r\n"),
        (&["INCRBY", "n", "41"], ":42\r\n"),
        (&["DECR", "n"], ":41\r\n"),
        (&["DECRBY", "n", "50"], ":-9\r\n"),
        (&["GET", "n"], "$2\r\n-9\r\n"),
        (
            &["INCR", "k"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            &["INCRBY", "n", "1.5"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (&["MSET", "a", "1", "b", "2", "c", "3"], "+OK\r\n"),
        (
            &["MGET", "a", "nope", "c", "b"],
            "*4\r\n$1\r\n1\r\n$-1\r\n$1\r\n3\r\n$1\r\n2\r\n",
        ),
        // k, n, a, b, c.
        (&["DBSIZE"], ":5\r\n"),
        (&["COMMAND", "DOCS"], "*0\r\n"),
        (&["CONFIG", "GET", "save"], "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
        (
            &["CONFIG", "GET", "appendonly"],
            "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
        ),
        (&["CLIENT", "SETNAME", "me"], "+OK\r\n"),
        (&["CLIENT", "GETNAME"], "$2\r\nme\r\n"),
        (&["SELECT", "0"], "+OK\r\n"),
        (
            &["GET"],
            "-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (
            &["SET", "k", "v", "EX", "5"],
            "-ERR SET option 'EX' is not supported by gtstore\r\n",
        ),
        (
            &["LPUSH", "l", "x"],
            "-ERR unknown command 'LPUSH', with args beginning with: 'l' 'x' \r\n",
        ),
        (&["GET", ""], "-ERR BADKEY empty key\r\n"),
    ];
    for (args, reply) in cases {
        let req = cmd(args);
        w.send(&req);
        let got = w.read_n(reply.len());
        assert_eq!(show(&got), show(reply.as_bytes()), "{args:?}");
    }
    // INFO carries this node's id and key count.
    w.send(&cmd(&["INFO"]));
    let head = w.read_n(1);
    assert_eq!(head, b"$");
    let mut len = Vec::new();
    loop {
        let b = w.read_n(1)[0];
        if b == b'\r' {
            break;
        }
        len.push(b);
    }
    let len: usize = String::from_utf8(len).unwrap().parse().unwrap();
    w.expect(b"\n");
    let text = String::from_utf8(w.read_n(len)).unwrap();
    w.expect(b"\r\n");
    let id = common::node_id_of(&c.nodes[0].addr);
    assert!(
        text.contains(&format!("gtstore_node_id:{id}\r\n")),
        "{text}"
    );
    assert!(text.contains("db0:keys=5,"), "{text}");
    // Inline commands, as typed into netcat.
    exchange(&mut w, b"GET a\r\nPING\n", b"$1\r\n1\r\n+PONG\r\n");
    // What RESP wrote, the native protocol reads.
    let mut native = Wire::connect(&c.nodes[0].addr);
    native.send(&frame(13, 0, 0, b"n"));
    assert_eq!(native.frame().payload, b"-9");
    native.send(&frame(11, 0, 0, &kv(b"from-native", b"hi")));
    native.frame();
    exchange(&mut w, &cmd(&["GET", "from-native"]), b"$2\r\nhi\r\n");
}

#[test]
fn both_fronts_count_only_canonical_integers_and_say_overflow() {
    let (c, resp) = cluster(1, &[]);
    let mut w = Wire::connect(&resp[0]);
    let mut native = Wire::connect(&c.nodes[0].addr);
    let n = common::node_id_of(&c.nodes[0].addr);
    let not_int = b"-ERR value is not an integer or out of range\r\n";
    // Written through RESP, refused by the native INCR, and the reverse.
    exchange(&mut w, &cmd(&["SET", "iv", "+5"]), b"+OK\r\n");
    native.send(&frame(17, 0, 0, b"2 iv"));
    let msg = native.expect_err(0, n, "NOTINT");
    assert_eq!(msg, "value is not an integer");
    native.send(&frame(11, 0, 0, &kv(b"z", b"007")));
    native.frame();
    exchange(&mut w, &cmd(&["INCR", "z"]), not_int);
    exchange(&mut w, &cmd(&["INCRBY", "c", "-0"]), not_int);
    // Overflow: the native message says so, and RESP reads it as Redis does.
    exchange(
        &mut w,
        &cmd(&["SET", "max", "9223372036854775807"]),
        b"+OK\r\n",
    );
    native.send(&frame(17, 0, 0, b"3 max"));
    let msg = native.expect_err(0, n, "NOTINT");
    assert_eq!(msg, "increment or decrement would overflow");
    exchange(
        &mut w,
        &cmd(&["INCR", "max"]),
        b"-ERR increment or decrement would overflow\r\n",
    );
    exchange(
        &mut w,
        &cmd(&["GET", "max"]),
        b"$19\r\n9223372036854775807\r\n",
    );
}

/// 500 pipelined commands of every kind over 37 keys named `PREFIX:N` and a
/// counter, and the exact replies, for a node that already holds `base` keys
/// (`None`: a node of a bigger cluster, whose DBSIZE is not known; PING instead).
fn mixed_pipeline(prefix: &str, base: Option<usize>) -> (Vec<u8>, Vec<u8>) {
    let bulk = |s: String| format!("${}\r\n{s}\r\n", s.len()).into_bytes();
    let counter = format!("{prefix}:counter");
    let mut req = Vec::new();
    let mut want = Vec::new();
    for i in 0..500 {
        let k = format!("{prefix}:{}", i % 37);
        match i % 5 {
            0 => {
                req.extend(cmd(&["SET", &k, &format!("v{i}")]));
                want.extend_from_slice(b"+OK\r\n");
            }
            1 => {
                req.extend(cmd(&["ECHO", &format!("e{i}")]));
                want.extend(bulk(format!("e{i}")));
            }
            2 => {
                req.extend(cmd(&["INCR", &counter]));
                want.extend(format!(":{}\r\n", i / 5 + 1).bytes());
            }
            3 => match base {
                Some(base) => {
                    req.extend(cmd(&["DBSIZE"]));
                    let keys = base + (i / 5 + 1).min(37) + 1;
                    want.extend(format!(":{keys}\r\n").bytes());
                }
                None => {
                    req.extend(cmd(&["PING", &format!("p{i}")]));
                    want.extend(bulk(format!("p{i}")));
                }
            },
            _ => {
                req.extend(cmd(&["GET", &k]));
                match (0..=i).rev().find(|j| j % 5 == 0 && j % 37 == i % 37) {
                    Some(j) => want.extend(bulk(format!("v{j}"))),
                    None => want.extend_from_slice(b"$-1\r\n"),
                }
            }
        }
    }
    (req, want)
}

#[test]
fn pipelined_commands_come_back_in_order() {
    let (_c, resp) = cluster(1, &[]);
    let mut w = Wire::connect(&resp[0]);
    // All in one write.
    let (req, want) = mixed_pipeline("one", Some(0));
    w.send(&req);
    w.expect(&want);
    // In dribbles of 7 bytes, so commands and bulk strings arrive split.
    let (req, want) = mixed_pipeline("two", Some(38));
    for chunk in req.chunks(7) {
        w.send(chunk);
    }
    w.expect(&want);
}

#[test]
fn pipelined_commands_keep_their_order_through_forwarding() {
    // Most keys live on another node: their replies come late, local answers
    // (ECHO) and keys this node holds must wait behind them.
    let (_c, resp) = cluster(3, &[]);
    for (i, addr) in resp.iter().enumerate() {
        let mut w = Wire::connect(addr);
        let (req, want) = mixed_pipeline(&format!("n{i}"), None);
        w.send(&req);
        w.expect(&want);
        let (req, want) = mixed_pipeline(&format!("m{i}"), None);
        for chunk in req.chunks(7) {
            w.send(chunk);
        }
        w.expect(&want);
    }
}

#[test]
fn multi_key_commands_span_the_nodes_of_a_cluster() {
    let (c, resp) = cluster(3, &[]);
    let keys: Vec<String> = (0..60).map(|i| format!("user:{i}")).collect();
    let mut mset: Vec<&str> = vec!["MSET"];
    let values: Vec<String> = (0..60).map(|i| format!("value-{i}")).collect();
    for (k, v) in keys.iter().zip(&values) {
        mset.push(k);
        mset.push(v);
    }
    let mut w0 = Wire::connect(&resp[0]);
    exchange(&mut w0, &cmd(&mset), b"+OK\r\n");

    // Read back through another node, with a key that does not exist in the middle.
    let mut mget: Vec<&str> = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    mget.insert(31, "missing");
    let mut want = b"*61\r\n".to_vec();
    for (i, v) in values.iter().enumerate() {
        if i == 30 {
            want.extend_from_slice(b"$-1\r\n");
        }
        want.extend(format!("${}\r\n{v}\r\n", v.len()).bytes());
    }
    let mut w1 = Wire::connect(&resp[1]);
    exchange(&mut w1, &cmd(&mget), &want);

    // The keys really live on several nodes: DBSIZE is per node.
    let replicas = c.status()["effective_replicas"].as_u64().unwrap_or(1);
    let deadline = Instant::now() + Duration::from_secs(20);
    let counts = loop {
        let counts: Vec<u64> = resp
            .iter()
            .map(|a| {
                let mut w = Wire::connect(a);
                w.send(&cmd(&["DBSIZE"]));
                let line = String::from_utf8(w.read_n(1)).unwrap();
                assert_eq!(line, ":");
                let mut n = Vec::new();
                loop {
                    let b = w.read_n(1)[0];
                    if b == b'\r' {
                        w.read_n(1);
                        break;
                    }
                    n.push(b);
                }
                String::from_utf8(n).unwrap().parse().unwrap()
            })
            .collect();
        if counts.iter().sum::<u64>() == 60 * replicas {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "DBSIZE never added up: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    if replicas < 3 {
        assert!(counts.iter().all(|&n| n < 60), "{counts:?}");
    }

    // DEL and EXISTS count across nodes, through the third node.
    let mut w2 = Wire::connect(&resp[2]);
    let mut del: Vec<&str> = vec!["DEL", "missing"];
    del.extend(keys[..40].iter().map(String::as_str));
    exchange(&mut w2, &cmd(&del), b":40\r\n");
    let mut exists: Vec<&str> = vec!["EXISTS"];
    exists.extend(keys.iter().map(String::as_str));
    exchange(&mut w2, &cmd(&exists), b":20\r\n");
    // A forwarded INCR keeps its place among local answers.
    let mut req = cmd(&["ECHO", "1"]);
    for k in &keys[50..55] {
        req.extend(cmd(&["INCRBY", k, "5"]));
        req.extend(cmd(&["ECHO", k]));
    }
    let mut want = b"$1\r\n1\r\n".to_vec();
    for k in &keys[50..55] {
        want.extend_from_slice(b"-ERR value is not an integer or out of range\r\n");
        want.extend(format!("${}\r\n{k}\r\n", k.len()).bytes());
    }
    exchange(&mut w2, &req, &want);
}

#[test]
fn a_protocol_error_is_answered_after_earlier_replies_then_the_connection_closes() {
    let (_c, resp) = cluster(1, &[]);
    let mut w = Wire::connect(&resp[0]);
    let mut req = cmd(&["SET", "k", "v"]);
    req.extend(cmd(&["GET", "k"]));
    req.extend_from_slice(b"*2\r\n$3\r\nGET\r\n#1\r\nk\r\n");
    req.extend(cmd(&["PING"]));
    w.send(&req);
    w.expect(b"+OK\r\n$1\r\nv\r\n-ERR Protocol error: expected '$', got '#'\r\n");
    w.expect_closed_within(Duration::from_secs(5));

    // Bad framing in an array length, and an unterminated bulk string.
    for (bad, why) in [
        (&b"*x\r\n"[..], "invalid multibulk length"),
        (b"*1\r\n$1\r\nab\r\n", "bulk string not followed by CRLF"),
        (b"*1\r\n$1\n", "bulk length line must end with CRLF"),
    ] {
        let mut w = Wire::connect(&resp[0]);
        w.send(bad);
        w.expect(format!("-ERR Protocol error: {why}\r\n").as_bytes());
        w.expect_closed_within(Duration::from_secs(5));
    }
    // QUIT: +OK, then the server closes.
    let mut w = Wire::connect(&resp[0]);
    exchange(&mut w, &cmd(&["QUIT"]), b"+OK\r\n");
    w.expect_eof();
}

#[test]
fn a_huge_bulk_length_is_refused_without_allocating_it() {
    let (c, resp) = cluster(1, &["--max-frame", "1000"]);
    let before = c.nodes[0].rss_kib();
    for _ in 0..20 {
        let mut w = Wire::connect(&resp[0]);
        w.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4000000000\r\nabc");
        w.expect(b"-ERR Protocol error: bulk length 4000000000 exceeds the maximum of 1000\r\n");
        w.expect_closed_within(Duration::from_secs(5));
    }
    let after = c.nodes[0].rss_kib();
    assert!(
        after < before + 20_000,
        "RSS grew from {before} to {after} KiB"
    );
    // The bound is the node's --max-frame: 1000 bytes pass, 1001 do not.
    let mut w = Wire::connect(&resp[0]);
    let big = "x".repeat(1000);
    exchange(&mut w, &cmd(&["SET", "big", &big]), b"+OK\r\n");
    exchange(
        &mut w,
        &cmd(&["STRLEN?", "x"]),
        b"-ERR unknown command 'STRLEN?', with args beginning with: 'x' \r\n",
    );
    w.send(&cmd(&["SET", "big", &format!("{big}y")]));
    w.expect(b"-ERR Protocol error: bulk length 1001 exceeds the maximum of 1000\r\n");
    w.expect_closed_within(Duration::from_secs(5));
    // So does an inline line longer than 64 KiB, and too many arguments.
    let mut w = Wire::connect(&resp[0]);
    w.send(&vec![b'a'; 70 << 10]);
    w.expect(b"-ERR Protocol error: inline command line longer than 65536 bytes\r\n");
    w.expect_closed_within(Duration::from_secs(5));
    let mut w = Wire::connect(&resp[0]);
    w.send(b"*1000000\r\n");
    w.expect(b"-ERR Protocol error: multibulk length 1000000 exceeds the maximum of 65536\r\n");
    w.expect_closed_within(Duration::from_secs(5));
}

#[test]
fn half_closed_clients_get_every_reply_before_the_close() {
    let (_c, resp) = cluster(1, &[]);
    let mut w = Wire::connect(&resp[0]);
    let mut req = Vec::new();
    let mut want = Vec::new();
    for i in 0..200 {
        req.extend(cmd(&["SET", &format!("k{i}"), "v"]));
        want.extend_from_slice(b"+OK\r\n");
    }
    req.extend(cmd(&["DBSIZE"]));
    want.extend_from_slice(b":200\r\n");
    w.send(&req);
    w.stream.shutdown(std::net::Shutdown::Write).unwrap();
    w.expect(&want);
    w.expect_eof();
}

/// Runs a tool with a deadline; `None` when it is not installed.
fn run_tool(tool: &str, args: &[&str], within: Duration) -> Option<(bool, String, String)> {
    let mut child = match Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run {tool}: {e}"),
    };
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{tool} {args:?} did not finish within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Some((status.success(), out.join().unwrap(), err.join().unwrap()))
}

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

#[test]
fn redis_cli_works_unchanged() {
    let (_c, resp) = cluster(1, &[]);
    let port = port_of(&resp[0]);
    let cli = |args: &[&str]| -> Option<String> {
        let mut all = vec!["-h", "127.0.0.1", "-p", port];
        all.extend_from_slice(args);
        let (ok, out, err) = run_tool("redis-cli", &all, Duration::from_secs(20))?;
        assert!(ok, "redis-cli {args:?} failed: {err}");
        Some(out)
    };
    let Some(out) = cli(&["set", "k", "hello world"]) else {
        eprintln!("NOTICE: redis-cli is not installed; skipping (.ci/run installs redis-tools)");
        return;
    };
    assert_eq!(out, "OK\n");
    assert_eq!(cli(&["get", "k"]).unwrap(), "hello world\n");
    assert_eq!(cli(&["incr", "n"]).unwrap(), "1\n");
    assert_eq!(cli(&["incrby", "n", "9"]).unwrap(), "10\n");
    assert_eq!(cli(&["mset", "a", "1", "b", "2"]).unwrap(), "OK\n");
    assert_eq!(cli(&["mget", "a", "x", "b"]).unwrap(), "1\n\n2\n");
    assert_eq!(cli(&["dbsize"]).unwrap(), "4\n");
    assert_eq!(cli(&["del", "a", "b", "x"]).unwrap(), "2\n");
    assert_eq!(cli(&["ping"]).unwrap(), "PONG\n");
    let err = cli(&["hset", "h", "f", "v"]).unwrap();
    assert!(err.starts_with("ERR unknown command 'hset'"), "{err}");
    assert!(cli(&["info"]).unwrap().contains("db0:keys=2,"));
}

#[test]
fn redis_benchmark_works_unchanged() {
    let (_c, resp) = cluster(1, &[]);
    let port = port_of(&resp[0]);
    for pipeline in ["1", "16"] {
        let args = [
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-t",
            "set,get",
            "-n",
            "20000",
            "-c",
            "20",
            "-q",
            "-P",
            pipeline,
        ];
        let Some((ok, out, err)) = run_tool("redis-benchmark", &args, Duration::from_secs(120))
        else {
            eprintln!(
                "NOTICE: redis-benchmark is not installed; skipping (.ci/run installs redis-tools)"
            );
            return;
        };
        assert!(ok, "redis-benchmark -P {pipeline} failed: {out} {err}");
        for test in ["SET", "GET"] {
            let rps = out
                .split(['\r', '\n'])
                .filter_map(|l| l.trim().strip_prefix(&format!("{test}: ")))
                .filter(|l| l.contains(" requests per second"))
                .filter_map(|l| l.split(' ').next()?.parse::<f64>().ok())
                .next_back();
            assert!(
                rps.is_some_and(|r| r > 0.0),
                "no {test} result with -P {pipeline}: {out:?} {err:?}"
            );
        }
        let text = format!("{out}{err}").to_ascii_lowercase();
        assert!(
            !text.contains("error") && !text.contains("warning"),
            "{out} {err}"
        );
    }
}
