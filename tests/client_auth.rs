//! The optional client password with the real binaries: storage nodes started with
//! `--client-password-file` refuse unauthenticated GET and SET on the native port
//! (`ERR AUTH`, PING still answered) and on the RESP port (`-NOAUTH`, as Redis with
//! `requirepass`); the right password works through the library, `AUTH` and
//! `HELLO 2 AUTH`, redis-cli `-a` (when installed) and `gtstore --password-file`;
//! a wrong one is refused. Without a password the rest of the suite runs unchanged.

mod common;

use common::{frame, kv, node_id_of, Cluster, SecretFile, Wire, TIMEOUT};
use gtstore::client::{Client, ClientError};
use gtstore::protocol::ErrorCode;
use std::process::{Command, Output, Stdio};

const GTSTORE: &str = env!("CARGO_BIN_EXE_gtstore");
const PASSWORD: &str = "open-sesame";

/// Two nodes that need `PASSWORD`, each with a RESP port.
fn cluster(pw: &SecretFile) -> Cluster {
    Cluster::start_with(
        2,
        &["--client-password-file", pw.path(), "--resp-port", "0"],
    )
}

/// A RESP command as Redis clients send it.
fn cmd(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    v
}

#[test]
fn the_native_port_serves_only_ping_and_auth_before_the_password() {
    let pw = SecretFile::new("native", PASSWORD);
    let c = cluster(&pw);
    let addr = c.nodes[0].addr.clone();
    let id = node_id_of(&addr);

    let mut w = Wire::connect(&addr);
    w.send(&frame(11, 7, 0, &kv(b"k", b"v")));
    let why = w.expect_err(7, id, "AUTH");
    assert!(why.contains("password"), "{why}");
    w.send(&frame(13, 8, 0, b"k"));
    w.expect_err(8, id, "AUTH");
    w.ping_ok(id);

    // The right password: every op, on keys either node owns.
    let mut good = Client::connect_node(&addr, TIMEOUT).unwrap();
    good.authenticate(PASSWORD).expect("the right password");
    for i in 0..20 {
        let key = format!("key{i}");
        good.put(key.as_bytes(), b"value").unwrap();
        assert_eq!(
            good.get(key.as_bytes()).unwrap().as_deref(),
            Some(&b"value"[..])
        );
    }

    // A wrong password: ERR AUTH, and the connection is closed.
    let mut bad = Client::connect_node(&addr, TIMEOUT).unwrap();
    match bad.authenticate("wrong") {
        Err(ClientError::Server(e)) => assert_eq!(e.code, ErrorCode::Auth, "{e}"),
        other => panic!("a wrong password must get ERR AUTH: {other:?}"),
    }
    assert!(bad.get(b"key1").is_err(), "the connection must be closed");

    // A proof without a challenge (a replay) is refused and closes.
    let mut w = Wire::connect(&addr);
    let replay = format!("client {} {}", "00".repeat(16), "00".repeat(32));
    w.send(&frame(34, 0, 0, replay.as_bytes()));
    w.expect_err(0, id, "AUTH");
    w.expect_eof();
}

#[test]
fn the_resp_port_answers_as_redis_with_requirepass() {
    let pw = SecretFile::new("resp", PASSWORD);
    let c = cluster(&pw);
    let mut w = Wire::connect(&c.nodes[0].resp_addr());
    let noauth = b"-NOAUTH Authentication required.\r\n";
    w.send(&cmd(&["SET", "k", "v"]));
    w.expect(noauth);
    w.send(&cmd(&["GET", "k"]));
    w.expect(noauth);
    w.send(&cmd(&["PING"]));
    w.expect(noauth);
    // Existence and arity are checked first, as Redis does.
    w.send(&cmd(&["NOSUCH"]));
    w.expect(b"-ERR unknown command 'NOSUCH', with args beginning with: \r\n");
    let wrongpass = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    w.send(&cmd(&["AUTH", "wrong"]));
    w.expect(wrongpass);
    w.send(&cmd(&["AUTH", "someone", PASSWORD]));
    w.expect(wrongpass);
    w.send(&cmd(&["HELLO", "2"]));
    let hello_noauth = w.read_n(17);
    assert_eq!(&hello_noauth, b"-NOAUTH HELLO mus");
    let mut rest = Vec::new();
    while !rest.ends_with(b"\r\n") {
        rest.extend(w.read_n(1));
    }
    w.send(&cmd(&["AUTH", PASSWORD]));
    w.expect(b"+OK\r\n");
    w.send(&cmd(&["SET", "k", "v"]));
    w.expect(b"+OK\r\n");
    w.send(&cmd(&["GET", "k"]));
    w.expect(b"$1\r\nv\r\n");

    // HELLO 2 AUTH default PASSWORD authenticates too.
    let mut h = Wire::connect(&c.nodes[1].resp_addr());
    h.send(&cmd(&["HELLO", "2", "AUTH", "default", PASSWORD]));
    h.expect(b"*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n");
    let mut h = Wire::connect(&c.nodes[1].resp_addr());
    h.send(&cmd(&["HELLO", "2", "AUTH", "default", "wrong"]));
    h.expect(wrongpass);
}

/// Runs `tool` with `args`; `None` if it is not installed.
fn run(tool: &str, args: &[&str], env: &[(&str, &str)]) -> Option<Output> {
    let mut command = Command::new(tool);
    command
        .args(args)
        .env_remove("GTSTORE_PASSWORD")
        .env("XDG_CACHE_HOME", "/dev/null")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    match command.output() {
        Ok(o) => Some(o),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("cannot run {tool}: {e}"),
    }
}

#[test]
fn redis_cli_with_a_password() {
    let pw = SecretFile::new("rediscli", PASSWORD);
    let c = cluster(&pw);
    let resp = c.nodes[0].resp_addr();
    let port = resp.rsplit(':').next().unwrap();
    let cli = |args: &[&str]| {
        let mut all = vec!["-h", "127.0.0.1", "-p", port, "--no-auth-warning"];
        all.extend_from_slice(args);
        run("redis-cli", &all, &[])
    };
    let Some(out) = cli(&["-a", PASSWORD, "set", "k", "hello"]) else {
        eprintln!("NOTICE: redis-cli is not installed; skipping (.ci/run installs redis-tools)");
        return;
    };
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\n");
    let out = cli(&["-a", PASSWORD, "get", "k"]).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    let out = cli(&["get", "k"]).unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("NOAUTH"), "{text}");

    // redis-benchmark -a: a few hundred requests, all answered.
    let args = ["-h", "127.0.0.1", "-p", port, "-a", PASSWORD, "-n", "200"];
    let bench = run(
        "redis-benchmark",
        &[&args[..], &["-c", "2", "-t", "set,get", "-q"]].concat(),
        &[],
    );
    if let Some(out) = bench {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(text.matches("requests per second").count(), 2, "{text}");
    }
}

#[test]
fn the_cli_takes_the_password_from_a_file_or_the_environment() {
    let pw = SecretFile::new("cli", PASSWORD);
    let wrong = SecretFile::new("cli-wrong", "not-it");
    let c = cluster(&pw);
    let m = c.manager.addr.as_str();
    let gt = |args: &[&str], env: &[(&str, &str)]| run(GTSTORE, args, env).unwrap();

    let put = gt(
        &[
            "--manager",
            m,
            "--password-file",
            pw.path(),
            "put",
            "k",
            "v1",
        ],
        &[],
    );
    assert_eq!(put.status.code(), Some(0), "{put:?}");
    let get = gt(
        &["get", "k", "--manager", m],
        &[("GTSTORE_PASSWORD", PASSWORD)],
    );
    assert_eq!(get.status.code(), Some(0), "{get:?}");
    assert_eq!(get.stdout, b"v1");

    let anon = gt(&["--manager", m, "get", "k"], &[]);
    assert_eq!(anon.status.code(), Some(2), "{anon:?}");
    let err = String::from_utf8_lossy(&anon.stderr);
    assert!(
        err.contains("AUTH") && err.contains("--password-file"),
        "{err}"
    );

    // STATUS: the manager's, merged with each node's (asked with the password).
    let node = c.nodes[0].addr.as_str();
    for args in [&["--manager", m][..], &["--node", node]] {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--password-file", pw.path(), "status", "--json"]);
        let st = gt(&all, &[]);
        assert_eq!(st.status.code(), Some(0), "{args:?}: {st:?}");
        let text = String::from_utf8_lossy(&st.stdout);
        assert!(
            !text.contains("AUTH"),
            "{args:?}: a node refused STATUS: {text}"
        );
    }
    let st = gt(&["--node", node, "status"], &[]);
    assert_eq!(st.status.code(), Some(2), "{st:?}");

    let bad = gt(
        &["--manager", m, "--password-file", wrong.path(), "get", "k"],
        &[],
    );
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("AUTH"), "{err}");
}

/// Runs gtstore-load with `args` and the password file; returns its exit status
/// and report (JSON) or stderr.
fn load(args: &[&str], password_file: Option<&str>) -> (Option<i32>, serde_json::Value, String) {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--requests", "2000", "--clients", "4", "--pipeline", "4"]);
    all.extend_from_slice(&[
        "--keys",
        "500",
        "--mix",
        "get=50,put=50",
        "--json",
        "--quiet",
    ]);
    if let Some(p) = password_file {
        all.extend_from_slice(&["--password-file", p]);
    }
    let out = run(env!("CARGO_BIN_EXE_gtstore-load"), &all, &[]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), report, err)
}

#[test]
fn gtstore_load_proves_the_password_on_every_connection() {
    let pw = SecretFile::new("load", PASSWORD);
    let wrong = SecretFile::new("load-wrong", "not-it");
    let c = cluster(&pw);
    let resp = c.nodes[0].resp_addr();
    for target in [
        ["--manager", c.manager.addr.as_str()],
        ["--resp", resp.as_str()],
    ] {
        let (code, r, err) = load(&target, Some(pw.path()));
        assert_eq!(code, Some(0), "{target:?}: {err}");
        assert_eq!(r["errors_total"], 0, "{target:?}: {r}");
        let v = &r["verify"];
        assert!(v["checked"].as_u64().unwrap() > 0, "{target:?}: {v}");
        assert_eq!(v["lost"], 0, "{v}");
        assert_eq!(v["errors"], 0, "{v}");

        let (code, _, err) = load(&target, Some(wrong.path()));
        assert_ne!(
            code,
            Some(0),
            "{target:?}: a wrong password must fail the run"
        );
        assert!(err.contains("refused the client password"), "{err}");
    }
}

/// One HTTP request on a new connection (closed after it); the whole reply.
fn http(addr: &str, method: &str, path: &str, auth: Option<&str>, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn the_http_front_needs_the_password_as_a_bearer_token() {
    let pw = SecretFile::new("http", PASSWORD);
    let c = Cluster::start_with(
        1,
        &["--client-password-file", pw.path(), "--http-port", "0"],
    );
    let addr = common::http::http_addr(&c.nodes[0]);
    let set =
        r#"[{"key":{"encoding":"string","data":"k"},"value":{"encoding":"string","data":"v"}}]"#;
    let fetch = r#"[{"encoding":"string","data":"k"}]"#;
    let bearer = format!("Bearer {PASSWORD}");
    for auth in [None, Some("Bearer wrong"), Some("Basic b3Blbi1zZXNhbWU=")] {
        for (method, path, body) in [("PUT", "/set", set), ("GET", "/metrics", "")] {
            let r = http(&addr, method, path, auth, body);
            assert!(
                r.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
                "{auth:?}: {r}"
            );
            assert!(r.contains("WWW-Authenticate: Bearer"), "{r}");
        }
    }
    let r = http(&addr, "PUT", "/set", Some(&bearer), set);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = http(&addr, "POST", "/fetch", Some(&bearer), fetch);
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains(r#""data":"v""#),
        "{r}"
    );
    let r = http(&addr, "GET", "/metrics", Some(&bearer), "");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}
