//! The storage nodes the client last saw, remembered per manager, so that one-shot
//! commands still reach the data while the manager is down.
//!
//! Whenever the client learns the cluster's nodes from its manager (a RING fetched
//! to route requests, a STATUS), it writes their addresses to a small text file:
//! `$XDG_CACHE_HOME/gtstore/nodes`, or `$HOME/.cache/gtstore/nodes` when
//! `XDG_CACHE_HOME` is not set (no file when neither is). One line per manager,
//! the most recently used first:
//!
//! ```text
//! # gtstore: storage nodes last seen, per manager (rewritten by the gtstore client)
//! 127.0.0.1:7000 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003
//! ```
//!
//! When the manager cannot be reached (or is still recovering its membership), the
//! client tries the nodes of its manager's line in order.
//!
//! The file is a hint, never trusted: a missing, unreadable or corrupt file, or a
//! line that does not parse, means "no remembered nodes". It is read up to
//! [`MAX_FILE_BYTES`], keeps [`MAX_MANAGERS`] lines of [`MAX_NODES`] addresses, and
//! is replaced atomically (written beside, then renamed), so two clients writing at
//! once leave one whole file. Failures to write are ignored: the cache only helps
//! (pointing `XDG_CACHE_HOME` at a place where no directory can be made, such as
//! `/dev/null`, turns it off).
//!
//! Caveat: nodes are remembered by address only. A different cluster started later
//! behind the same manager address, with its nodes on the remembered addresses,
//! would be used while its manager is down; the manager's own answer always wins.

use std::path::PathBuf;

/// Bytes of the cache file read at most; the rest is ignored.
pub const MAX_FILE_BYTES: u64 = 64 << 10;
/// Managers remembered (the least recently used are forgotten).
pub const MAX_MANAGERS: usize = 16;
/// Node addresses remembered per manager.
pub const MAX_NODES: usize = 64;
/// Longest address kept, in bytes.
const MAX_ADDR: usize = 255;

const HEADER: &str =
    "# gtstore: storage nodes last seen, per manager (rewritten by the gtstore client)";

/// Where the cache lives, from the environment (`None`: no cache).
pub fn path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".cache"),
    };
    Some(base.join("gtstore").join("nodes"))
}

/// Whether `s` looks like an address worth keeping: `HOST:PORT`, printable, no
/// spaces.
fn plausible(s: &str) -> bool {
    s.len() <= MAX_ADDR
        && s.bytes().all(|b| b.is_ascii_graphic())
        && s.rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// Parses the cache text into (manager, nodes) lines; bad lines are skipped.
fn parse(text: &str) -> Vec<(String, Vec<String>)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let mut words = line.split_ascii_whitespace();
            let manager = words.next().filter(|m| plausible(m))?;
            let nodes: Vec<String> = words
                .filter(|a| plausible(a))
                .take(MAX_NODES)
                .map(str::to_string)
                .collect();
            (!nodes.is_empty()).then(|| (manager.to_string(), nodes))
        })
        .take(MAX_MANAGERS)
        .collect()
}

fn render(lines: &[(String, Vec<String>)]) -> String {
    let mut out = format!("{HEADER}\n");
    for (manager, nodes) in lines {
        out.push_str(manager);
        for n in nodes {
            out.push(' ');
            out.push_str(n);
        }
        out.push('\n');
    }
    out
}

/// `text` with `manager`'s line replaced by `nodes`, moved to the front.
fn updated(text: &str, manager: &str, nodes: &[String]) -> String {
    let mut lines = parse(text);
    lines.retain(|(m, _)| m != manager);
    let nodes: Vec<String> = nodes
        .iter()
        .filter(|a| plausible(a))
        .take(MAX_NODES)
        .cloned()
        .collect();
    if plausible(manager) && !nodes.is_empty() {
        lines.insert(0, (manager.to_string(), nodes));
    }
    lines.truncate(MAX_MANAGERS);
    render(&lines)
}

fn read(path: &std::path::Path) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(path) {
        let mut bytes = Vec::new();
        let _ = f.take(MAX_FILE_BYTES).read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

/// The nodes remembered for `manager`, most useful first (empty if none).
pub fn recall(manager: &str) -> Vec<String> {
    let Some(path) = path() else {
        return Vec::new();
    };
    parse(&read(&path))
        .into_iter()
        .find(|(m, _)| m == manager)
        .map(|(_, nodes)| nodes)
        .unwrap_or_default()
}

/// Remembers `nodes` (addresses, the ones to try first first) for `manager`.
pub fn remember(manager: &str, nodes: &[String]) {
    let Some(path) = path() else { return };
    let old = read(&path);
    let new = updated(&old, manager, nodes);
    if new == old {
        return;
    }
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&tmp, new.as_bytes())?;
        std::fs::rename(&tmp, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    };
    if let Err(e) = write() {
        log::debug!("cannot write the node cache {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lines_round_trip_most_recent_first() {
        let text = updated("", "127.0.0.1:7000", &addrs(&["127.0.0.1:7001", "h:7002"]));
        let text = updated(&text, "m:1", &addrs(&["n:2"]));
        assert_eq!(
            parse(&text),
            vec![
                ("m:1".to_string(), addrs(&["n:2"])),
                (
                    "127.0.0.1:7000".to_string(),
                    addrs(&["127.0.0.1:7001", "h:7002"])
                ),
            ]
        );
        // Remembering again moves the line to the front, replacing it.
        let text = updated(&text, "127.0.0.1:7000", &addrs(&["127.0.0.1:7009"]));
        let lines = parse(&text);
        assert_eq!(
            lines[0],
            ("127.0.0.1:7000".into(), addrs(&["127.0.0.1:7009"]))
        );
        assert_eq!(lines.len(), 2);
        assert!(text.starts_with("# gtstore"));
    }

    #[test]
    fn corrupt_text_means_nothing_remembered() {
        assert!(parse("").is_empty());
        assert!(parse("\u{0}\u{1}garbage\n::: x\nnoport\nm:99999 n:1\n").is_empty());
        let lines = parse("m:1 bad n:2 \x1b[0m:3 n:3\nm:1\n");
        assert_eq!(lines, vec![("m:1".to_string(), addrs(&["n:2", "n:3"]))]);
        let huge: String = (0..1000).map(|i| format!("m:{i} n:{i}\n")).collect();
        assert_eq!(parse(&huge).len(), MAX_MANAGERS);
        let many: String = (0..1000).map(|i| format!(" n:{i}")).collect();
        assert_eq!(parse(&format!("m:1{many}"))[0].1.len(), MAX_NODES);
    }

    #[test]
    fn bad_addresses_are_not_written() {
        let text = updated("", "m:1", &addrs(&["a b:1", "ok:2"]));
        assert_eq!(parse(&text), vec![("m:1".to_string(), addrs(&["ok:2"]))]);
        assert_eq!(updated("", "m:1", &addrs(&["bad"])), format!("{HEADER}\n"));
    }
}
