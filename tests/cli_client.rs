//! The `gtstore` client against real processes: how the shell shows values, what a
//! piped shell returns, the one-letter CRUD commands, the fall-back to storage nodes
//! when the manager is down, and `status` figures that are current. Every process
//! is killed on drop (tests/common), even when a test fails.

mod common;

use common::Cluster;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const GTSTORE: &str = env!("CARGO_BIN_EXE_gtstore");

/// A fresh directory for the client's node cache, removed on drop, so that tests
/// never read or write the user's own cache.
struct CacheDir(PathBuf);

impl CacheDir {
    fn new(name: &str) -> CacheDir {
        let dir =
            std::env::temp_dir().join(format!("gtstore-cli-client-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        CacheDir(dir)
    }
}

impl Drop for CacheDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `gtstore --manager M ARGS` with `input` on stdin and `cache` as its
/// `XDG_CACHE_HOME`.
fn run(manager: &str, cache: &CacheDir, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(GTSTORE)
        .args(["--manager", manager, "--timeout", "5"])
        .args(args)
        .env("XDG_CACHE_HOME", &cache.0)
        .env_remove("GTSTORE_MANAGER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gtstore");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("gtstore output");
    writer.join().unwrap();
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The escaped form the shell must print, spelled out here independently of the
/// client's code.
fn escaped(value: &[u8]) -> Vec<u8> {
    let mut out = vec![b'"'];
    for &b in value {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
    out.push(b'"');
    out
}

#[test]
fn the_shell_shows_values_quoted_and_escaped() {
    let c = Cluster::start(1);
    let cache = CacheDir::new("show");
    let m = &c.manager.addr;
    // 10,000,000 bytes of every byte value, terminal escapes included.
    let big: Vec<u8> = (0..10_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let out = run(m, &cache, &["put", "blob", "-"], &big);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(m, &cache, &["put", "empty", ""], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(m, &cache, &["put", "quotes", "\"\""], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(m, &cache, &["put", "nil", "(nil)"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let out = run(m, &cache, &[], b"get blob\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut want = escaped(&big);
    want.push(b'\n');
    assert_eq!(out.stdout.len(), want.len());
    assert!(out.stdout == want, "the shell printed other bytes");
    assert!(out.stdout[..out.stdout.len() - 1]
        .iter()
        .all(|b| (0x20..=0x7e).contains(b)));

    let out = run(
        m,
        &cache,
        &[],
        b"get empty\nget quotes\nget nil\nget missing\n",
    );
    assert_eq!(text(&out.stdout), "\"\"\n\"\\\"\\\"\"\n\"(nil)\"\n(nil)\n");
    // A miss is an answer, not a failure.
    assert_eq!(out.status.code(), Some(0));

    // The one-shot `get` stays byte-exact.
    let out = run(m, &cache, &["get", "blob"], b"");
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == big, "one-shot get changed the bytes");
}

#[test]
fn a_piped_shell_exits_2_after_a_failed_command() {
    let c = Cluster::start(1);
    let cache = CacheDir::new("exit");
    let m = &c.manager.addr;
    let out = run(m, &cache, &[], b"bogus\n");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stdout),
        "error: unknown command 'bogus' (try help)\n"
    );
    let out = run(m, &cache, &[], b"get\n");
    assert_eq!(out.status.code(), Some(2));
    // Misses and conflicts are answers; an error anywhere fails the run.
    let out = run(m, &cache, &[], b"put a 1\ncreate a 2\nget zz\ndel zz\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let out = run(m, &cache, &[], b"put a 1\nincr a x\nget a\n");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
}

#[test]
fn the_shell_takes_one_letter_crud() {
    let c = Cluster::start(1);
    let cache = CacheDir::new("crud");
    let script = b"C k v1\nC k v2\nR k\nU k \"v 3\"\nR k\nU nope x\nD k\nR k\nD k\nhelp\n";
    let out = run(&c.manager.addr, &cache, &[], script);
    let out_text = text(&out.stdout);
    let lines: Vec<&str> = out_text.lines().collect();
    assert_eq!(
        lines[..9],
        [
            "OK",
            "(conflict)",
            "\"v1\"",
            "OK",
            "\"v 3\"",
            "(not found)",
            "OK",
            "(nil)",
            "(not found)"
        ],
        "{out_text}"
    );
    for line in ["C KEY VALUE", "R KEY", "U KEY VALUE", "D KEY"] {
        assert!(out_text.contains(line), "help lists {line}: {out_text}");
    }
    assert_eq!(out.status.code(), Some(0));
}
