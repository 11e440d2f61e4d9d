//! Security with the real binaries: the admin credential DROP needs (anonymous and
//! wrong proofs refused, nothing changes; the right one works, from the library and
//! from `gtstore drop`), protected mode (no secret, no non-loopback `--host`, on
//! every entry point), secrets from a file, and a launcher whose children carry the
//! cluster secret in their environment, not in their argv.

mod common;

use common::{children_of, Cluster, TIMEOUT};
use gtstore::client::{drop_node, ClientError, Connection};
use gtstore::protocol::auth::{self, AuthRequest, ROLE_ADMIN};
use gtstore::protocol::{op, ErrorCode};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GTSTORE: &str = env!("CARGO_BIN_EXE_gtstore");
const MANAGER: &str = env!("CARGO_BIN_EXE_gtstore-manager");
const STORAGE: &str = env!("CARGO_BIN_EXE_gtstore-storage");
/// The built-in secret of a cluster on loopback with none configured.
const DEFAULT: &[u8] = gtstore::DEFAULT_SECRET.as_bytes();

/// A directory of this test's own, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("gtstore-sec-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `secret` and a newline to a 0600 file; returns its path.
    fn secret_file(&self, name: &str, secret: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, format!("{secret}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The manager's ring epoch and whether it lists node `addr`.
fn ring_has(c: &Cluster, addr: &str) -> (u64, bool) {
    let s = c.status();
    let listed = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["addr"] == addr);
    (s["epoch"].as_u64().expect("epoch in STATUS"), listed)
}

/// Whether the server closed `conn` (the next read sees the end of the stream).
fn closed(conn: &mut Connection) -> bool {
    matches!(conn.recv(), Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof)
}

#[track_caller]
fn assert_auth_refused<T: std::fmt::Debug>(r: Result<T, ClientError>) {
    match r {
        Err(ClientError::Server(e)) if e.code == ErrorCode::Auth => {}
        other => panic!("expected ERR AUTH, got {other:?}"),
    }
}

/// Waits until the manager no longer lists `addr`.
fn wait_gone(c: &Cluster, addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while ring_has(c, addr).1 {
        assert!(Instant::now() < deadline, "{addr} still in the ring");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn anonymous_and_wrong_drops_are_refused_and_change_nothing() {
    let c = Cluster::start(2);
    let victim = c.nodes[1].addr.clone();
    let before = ring_has(&c, &victim);
    assert!(before.1);

    // Anonymous: ERR AUTH, then the manager closes the connection.
    let mut m = Connection::connect(&c.manager.addr, TIMEOUT).unwrap();
    assert_auth_refused(m.call(op::DROP, 0, &[victim.as_bytes()]));
    assert!(closed(&mut m), "the connection stays open");

    // A wrong secret: ERR AUTH and a close.
    let mut m = Connection::connect(&c.manager.addr, TIMEOUT).unwrap();
    assert_auth_refused(m.auth_admin(b"not-the-secret"));
    assert!(closed(&mut m));

    // A proof that was good on one connection, replayed on another: refused.
    let mut a = Connection::connect(&c.manager.addr, TIMEOUT).unwrap();
    let nonce = a.call(op::AUTH, 0, &[]).unwrap();
    let nonce = auth::from_hex(&nonce.payload).unwrap();
    let proof = AuthRequest::prove(DEFAULT, &nonce, ROLE_ADMIN)
        .unwrap()
        .encode();
    assert_eq!(a.call(op::AUTH, 0, &[&proof]).unwrap().op, op::OK);
    let mut b = Connection::connect(&c.manager.addr, TIMEOUT).unwrap();
    assert_eq!(b.call(op::AUTH, 0, &[]).unwrap().op, op::CHALLENGE);
    assert_auth_refused(b.call(op::AUTH, 0, &[&proof]));
    assert!(closed(&mut b));
    // ... and replayed on its own connection, where its nonce is spent.
    assert_auth_refused(a.call(op::AUTH, 0, &[&proof]));
    assert!(closed(&mut a));

    assert_eq!(ring_has(&c, &victim), before, "nothing changed");
    assert!(c.nodes[1].log().iter().all(|l| !l.contains("leav")));
}

#[test]
fn drop_with_the_admin_credential_works_from_the_library_and_the_cli() {
    let dir = TempDir::new("drop");
    let secret = "s3cret-for-the-cluster";
    let admin = "an0ther-for-the-admin";
    let cluster_file = dir.secret_file("cluster", secret);
    let admin_file = dir.secret_file("admin", admin);
    let c = Cluster::start_full(
        3,
        &[
            "--secret-file",
            &cluster_file,
            "--admin-secret-file",
            &admin_file,
        ],
        &["--secret-file", &cluster_file],
    );
    let (n2, n3) = (c.nodes[1].addr.clone(), c.nodes[2].addr.clone());

    // The cluster secret is not the admin secret here, nor is the default.
    for wrong in [secret.as_bytes(), DEFAULT] {
        assert_auth_refused(drop_node(&c.manager.addr, &n2, wrong, TIMEOUT));
    }
    assert!(drop_node(&c.manager.addr, &n2, admin.as_bytes(), TIMEOUT).unwrap());
    wait_gone(&c, &n2);

    // `gtstore drop` with no credential: exit 2, ERR AUTH; with the file: done.
    let cli = |extra: &[&str]| {
        Command::new(GTSTORE)
            .args(["drop", &n3, "--manager", &c.manager.addr])
            .args(extra)
            .env_remove("GTSTORE_SECRET")
            .env_remove("GTSTORE_ADMIN_SECRET")
            .env("XDG_CACHE_HOME", "/dev/null")
            .output()
            .unwrap()
    };
    let anon = cli(&[]);
    assert_eq!(anon.status.code(), Some(2));
    let err = String::from_utf8_lossy(&anon.stderr);
    assert!(err.contains("AUTH"), "{err}");
    assert!(ring_has(&c, &n3).1);
    let ok = cli(&["--admin-secret-file", &admin_file]);
    let err = String::from_utf8_lossy(&ok.stderr);
    assert_eq!(ok.status.code(), Some(0), "{err}");
    wait_gone(&c, &n3);
}

#[test]
fn a_node_without_the_cluster_secret_cannot_join() {
    let dir = TempDir::new("join");
    let file = dir.secret_file("cluster", "only-members-know");
    let mut c = Cluster::start_full(1, &["--secret-file", &file], &["--secret-file", &file]);
    // No secret at all (the built-in default on loopback), and a wrong one.
    let wrong = dir.secret_file("wrong", "a-guess");
    c.add_node(&[]);
    c.add_node(&["--secret-file", &wrong]);
    for i in [1, 2] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.nodes[i].log().iter().any(|l| l.contains("AUTH")) {
            assert!(Instant::now() < deadline, "{:?}", c.nodes[i].log());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!ring_has(&c, &c.nodes[i].addr).1);
        // Nothing will change the manager's mind: the node stops, status 2.
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = c.nodes[i].child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "node {i} still runs");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(2));
    }
    assert_eq!(c.status()["live_nodes"], 1);
}

/// Runs `bin ARGS` with `env` (and no secret inherited); returns its exit code and
/// stderr, or kills it and returns `None` if it started listening.
fn start_or_refuse(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Option<(i32, String)> {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_remove("GTSTORE_SECRET")
        .env_remove("GTSTORE_ADMIN_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut err = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("listening on") {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        err.push_str(&line);
        err.push('\n');
    }
    Some((child.wait().unwrap().code().unwrap_or(-1), err))
}

#[test]
fn with_no_secret_every_entry_point_refuses_a_non_loopback_host() {
    let entry_points: [(&str, &[&str]); 4] = [
        (MANAGER, &[]),
        (GTSTORE, &["manager"]),
        (STORAGE, &["--manager", "127.0.0.1:1"]),
        (GTSTORE, &["storage", "--manager", "127.0.0.1:1"]),
    ];
    for (bin, pre) in entry_points {
        for host in ["0.0.0.0", "::"] {
            let args: Vec<&str> = pre
                .iter()
                .copied()
                .chain(["--host", host, "--port", "0"])
                .collect();
            let what = format!("{bin} {args:?}");
            let (code, err) =
                start_or_refuse(bin, &args, &[]).unwrap_or_else(|| panic!("{what} started"));
            assert_eq!(code, 2, "{what}: {err}");
            assert!(
                err.contains("protected mode") && err.contains("--secret-file"),
                "{what}: {err}"
            );
            // The documented default string is no secret off loopback either.
            let env = [("GTSTORE_SECRET", gtstore::DEFAULT_SECRET)];
            let (code, err) =
                start_or_refuse(bin, &args, &env).unwrap_or_else(|| panic!("{what} started"));
            assert_eq!(code, 2, "{what} with the default: {err}");
        }
        // On loopback with nothing configured it starts.
        let args: Vec<&str> = pre
            .iter()
            .copied()
            .chain(["--host", "127.0.0.1", "--port", "0"])
            .collect();
        assert_eq!(start_or_refuse(bin, &args, &[]), None, "{bin} {args:?}");
    }
}

#[test]
fn with_a_secret_a_non_loopback_host_is_allowed() {
    // Listening only (port 0, killed at once): nothing is sent anywhere.
    let env = [("GTSTORE_SECRET", "a-real-secret")];
    let args = ["--host", "0.0.0.0", "--port", "0"];
    assert_eq!(start_or_refuse(MANAGER, &args, &env), None);
    let dir = TempDir::new("host");
    let empty = dir.0.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let empty = empty.display().to_string();
    let (code, err) =
        start_or_refuse(MANAGER, &["--port", "0", "--secret-file", &empty], &[]).expect("refused");
    assert_eq!(code, 2);
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn a_secret_file_others_can_read_is_used_with_a_warning() {
    let dir = TempDir::new("mode");
    let path = dir.secret_file("shared", "readable-by-all");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = Cluster::start_full(1, &["--secret-file", &path], &["--secret-file", &path]);
    for log in [c.manager.log(), c.nodes[0].log()] {
        assert!(log.iter().any(|l| l.contains("chmod 600")), "{log:?}");
    }
}

/// A launcher killed (with its children, by their parent-death signal) on drop.
struct Launcher(std::process::Child);

impl Drop for Launcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_launchers_children_get_a_random_secret_in_their_environment_not_argv() {
    let child = Command::new(GTSTORE)
        .args(["cluster", "--nodes", "2", "--base-port", "0"])
        .env_remove("GTSTORE_SECRET")
        .env("GTSTORE_ADMIN_SECRET", "the-launcher-must-not-pass-this-on")
        .env("XDG_CACHE_HOME", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut launcher = Launcher(child);
    let mut stdin = launcher.0.stdin.take().unwrap();
    let mut stdout = BufReader::new(launcher.0.stdout.take().unwrap()).lines();
    // The shell is open once the launcher printed where everything is.
    let mut seen = Vec::new();
    let mut secret_file = None;
    loop {
        let line = stdout.next().expect("launcher output").unwrap();
        if let Some(rest) = line.strip_prefix("admin secret in ") {
            secret_file = rest.split_whitespace().next().map(PathBuf::from);
        }
        let done = line.starts_with("manager at ");
        seen.push(line);
        if done {
            break;
        }
    }
    let secret_file = secret_file.unwrap_or_else(|| panic!("no secret file line: {seen:?}"));
    let kids = children_of(launcher.0.id());
    assert_eq!(kids.len(), 3, "{kids:?}; {seen:?}");
    let mut secrets = Vec::new();
    for pid in kids {
        let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        let secret = vars
            .iter()
            .find_map(|v| v.strip_prefix(b"GTSTORE_SECRET="))
            .expect("GTSTORE_SECRET in the child's environment")
            .to_vec();
        assert!(secret.len() >= 32 && secret != DEFAULT, "{secret:?}");
        let shown = String::from_utf8_lossy(&argv).replace('\0', " ");
        assert!(!shown.contains("secret"), "argv: {shown}");
        assert!(
            argv.windows(secret.len()).all(|w| w != &secret[..]),
            "argv: {shown}"
        );
        assert!(!vars.iter().any(|v| v.starts_with(b"GTSTORE_ADMIN_SECRET=")));
        secrets.push(secret);
    }
    secrets.dedup();
    assert_eq!(secrets.len(), 1, "one secret per cluster");
    // The same secret, for `gtstore drop --admin-secret-file`, readable by its owner only.
    let meta = std::fs::metadata(&secret_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let mut kept = std::fs::read(&secret_file).unwrap();
    assert_eq!(kept.pop(), Some(b'\n'));
    assert_eq!(kept, secrets[0]);
    // The launcher proves it as the admin secret: drop works.
    stdin.write_all(b"drop 2\n").unwrap();
    let answer = stdout.next().expect("drop's answer").unwrap();
    assert!(answer.contains("handing its data over"), "{answer}");
}
