//! The log's unit tests: round trips, torn and corrupt tails, snapshots and
//! crashes in their middle, format versions.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "gtstore-wal-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn rec(key: &str, value: Option<&str>, version: u64) -> Record {
    Record {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        version,
    }
}

/// A varied set: tombstones, empty values, empty keys, binary and longer values.
fn sample(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let key = Bytes::from(format!("key-{}", i % 37).into_bytes());
            let value = match i % 5 {
                0 => None,
                1 => Some(Bytes::new()),
                2 => Some(Bytes::from(vec![i as u8; i % 300])),
                3 => Some(Bytes::from((0..=255u8).collect::<Vec<_>>())),
                _ => Some(Bytes::from(format!("value {i}").into_bytes())),
            };
            let key = if i % 11 == 0 { Bytes::new() } else { key };
            Record {
                key,
                value,
                version: (i as u64) << 20 | 7,
            }
        })
        .collect()
}

fn write_all(dir: &Path, fsync: Fsync, recs: &[Record]) -> Wal {
    let (mut wal, rec) = Wal::open(dir, fsync).unwrap();
    assert_eq!(rec.cut, 0);
    for r in recs {
        wal.append(r).unwrap();
    }
    wal.commit().unwrap();
    wal
}

fn reopen(dir: &Path) -> Recovery {
    Wal::open(dir, Fsync::Never).unwrap().1
}

/// Replays changes into the state they describe: the latest write per key, less
/// what purges and restores took back (the engine's rules, on a map).
fn state<C: Clone + Into<Change>>(recs: &[C]) -> BTreeMap<Bytes, Record> {
    let mut m: BTreeMap<Bytes, Record> = BTreeMap::new();
    for c in recs.iter().cloned().map(Into::into) {
        match c {
            Change::Put(r) => {
                m.insert(r.key.clone(), r);
            }
            Change::Purge { key, version } => {
                if m.get(&key)
                    .is_some_and(|r| r.version == version && r.value.is_none())
                {
                    m.remove(&key);
                }
            }
            Change::Restore { key, version, prev } => {
                if m.get(&key).is_some_and(|r| r.version == version) {
                    match prev {
                        None => m.remove(&key),
                        Some((version, value)) => m.insert(
                            key.clone(),
                            Record {
                                key,
                                value,
                                version,
                            },
                        ),
                    };
                }
            }
            // Not data (the node's Paxos acceptor state).
            Change::Ballot { .. } => {}
        }
    }
    m
}

/// Byte offsets in the log where each record starts, and the end.
fn offsets(recs: &[Record]) -> Vec<u64> {
    let mut at = vec![HEADER_LEN];
    let mut buf = Vec::new();
    for r in recs {
        buf.clear();
        encode(r, &mut buf).unwrap();
        at.push(at.last().unwrap() + buf.len() as u64);
    }
    at
}

#[test]
fn fsync_modes_parse_and_print() {
    for m in [Fsync::Always, Fsync::Batch, Fsync::Never] {
        assert_eq!(m.to_string().parse::<Fsync>(), Ok(m));
    }
    assert!("sometimes".parse::<Fsync>().is_err());
    assert!("Always".parse::<Fsync>().is_err());
}

#[test]
fn round_trip_in_every_mode() {
    let recs = sample(500);
    for mode in [Fsync::Always, Fsync::Batch, Fsync::Never] {
        let dir = TempDir::new("roundtrip");
        let wal = write_all(dir.path(), mode, &recs);
        assert_eq!(wal.stats().records, 500);
        drop(wal);
        let got = reopen(dir.path());
        assert_eq!(got.records, recs, "mode {mode}");
        assert_eq!((got.cut, got.cut_reason, got.generation), (0, None, 1));
        assert_eq!(
            fs::metadata(dir.file("log-000001")).unwrap().len(),
            *offsets(&recs).last().unwrap()
        );
    }
}

#[test]
fn fsyncs_follow_the_mode() {
    for (mode, per_commit, per_append) in [
        (Fsync::Always, 0, 1),
        (Fsync::Batch, 1, 0),
        (Fsync::Never, 0, 0),
    ] {
        let dir = TempDir::new("fsyncs");
        let (mut wal, _) = Wal::open(dir.path(), mode).unwrap();
        for turn in 0..3 {
            for i in 0..10 {
                wal.append(&rec(&format!("k{turn}-{i}"), Some("v"), 1))
                    .unwrap();
            }
            wal.commit().unwrap();
            wal.commit().unwrap(); // nothing buffered: no write, no fsync
        }
        let s = wal.stats();
        assert_eq!(s.fsyncs, 3 * per_commit + 30 * per_append, "mode {mode}");
        assert_eq!(s.records, 30);
        let expected_commits = if mode == Fsync::Always { 30 } else { 3 };
        assert_eq!(s.commits, expected_commits, "mode {mode}");
    }
}

#[test]
fn buffered_records_are_not_on_disk_before_commit() {
    let dir = TempDir::new("buffered");
    let (mut wal, _) = Wal::open(dir.path(), Fsync::Batch).unwrap();
    wal.append(&rec("a", Some("1"), 1)).unwrap();
    assert!(reopen(dir.path()).records.is_empty());
    wal.commit().unwrap();
    assert_eq!(reopen(dir.path()).records, vec![rec("a", Some("1"), 1)]);
}

#[test]
fn reopen_appends_after_the_old_tail() {
    let dir = TempDir::new("reopen");
    let recs = sample(40);
    drop(write_all(dir.path(), Fsync::Batch, &recs[..20]));
    drop(write_all(dir.path(), Fsync::Batch, &recs[20..]));
    let got = reopen(dir.path());
    assert_eq!(got.records, recs);
    assert_eq!(got.cut, 0);
}

#[test]
fn torn_last_record_at_every_offset() {
    let recs = sample(6);
    let at = offsets(&recs);
    let (last_start, end) = (at[5], at[6]);
    let source = TempDir::new("torn-src");
    drop(write_all(source.path(), Fsync::Never, &recs));
    let full = fs::read(source.file("log-000001")).unwrap();
    assert_eq!(full.len() as u64, end);
    let extra = rec("after", Some("the cut"), 99);
    for t in last_start..end {
        let dir = TempDir::new("torn");
        fs::write(dir.file("log-000001"), &full[..t as usize]).unwrap();
        let (mut wal, got) = Wal::open(dir.path(), Fsync::Batch).unwrap();
        assert_eq!(got.records, recs[..5], "torn at {t}");
        assert_eq!(got.cut, t - last_start, "torn at {t}");
        assert_eq!(got.cut_reason.is_some(), t > last_start, "torn at {t}");
        assert_eq!(
            fs::metadata(dir.file("log-000001")).unwrap().len(),
            last_start
        );
        wal.append(&extra).unwrap();
        wal.commit().unwrap();
        drop(wal);
        let again = reopen(dir.path());
        let mut want = recs[..5].to_vec();
        want.push(extra.clone());
        assert_eq!(again.records, want, "torn at {t}");
        assert_eq!(again.cut, 0);
    }
}

#[test]
fn a_flipped_byte_cuts_its_record_and_everything_after() {
    let recs = sample(9);
    let at = offsets(&recs);
    let source = TempDir::new("flip-src");
    drop(write_all(source.path(), Fsync::Never, &recs));
    let full = fs::read(source.file("log-000001")).unwrap();
    // Every byte of the middle record, each bit pattern of a flip.
    let (start, end) = (at[4], at[5]);
    for pos in start..end {
        for mask in [0x01u8, 0x80, 0xff] {
            let dir = TempDir::new("flip");
            let mut bad = full.clone();
            bad[pos as usize] ^= mask;
            fs::write(dir.file("log-000001"), &bad).unwrap();
            let got = reopen(dir.path());
            assert_eq!(got.records, recs[..4], "flip {mask:#x} at {pos}");
            assert_eq!(got.cut, full.len() as u64 - start);
            assert!(got.cut_reason.unwrap().contains(&format!("offset {start}")));
            assert_eq!(fs::metadata(dir.file("log-000001")).unwrap().len(), start);
        }
    }
}

#[test]
fn a_bad_log_header_is_an_error_not_a_cut() {
    let dir = TempDir::new("badheader");
    drop(write_all(dir.path(), Fsync::Never, &sample(3)));
    let path = dir.file("log-000001");
    let mut bytes = fs::read(&path).unwrap();
    bytes[9] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let err = Wal::open(dir.path(), Fsync::Never).unwrap_err();
    assert!(err.to_string().contains("bad header"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), bytes, "nothing was cut");
}

#[test]
fn a_huge_length_field_is_cut_without_allocating_it() {
    let dir = TempDir::new("huge");
    let recs = sample(3);
    drop(write_all(dir.path(), Fsync::Never, &recs));
    let path = dir.file("log-000001");
    let good = fs::metadata(&path).unwrap().len();
    for len_field in [MAX_BODY, MAX_BODY + 1, u32::MAX, 0, 16] {
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&len_field.to_le_bytes()).unwrap();
        f.write_all(&[0xAB; 40]).unwrap();
        drop(f);
        let got = reopen(dir.path());
        assert_eq!(got.records, recs, "length {len_field}");
        assert_eq!(got.cut, 44);
        assert_eq!(fs::metadata(&path).unwrap().len(), good);
    }
}

#[test]
fn snapshot_then_appends_then_reopen() {
    let dir = TempDir::new("snapshot");
    let first = sample(300);
    let mut wal = write_all(dir.path(), Fsync::Batch, &first);
    let live = state(&first);
    wal.snapshot(live.values().cloned()).unwrap();
    assert_eq!(wal.stats().generation, 2);
    assert_eq!(wal.stats().log_bytes, 0);
    assert_eq!(dir.names(), ["log-000002", "snap-000002"]);
    // Overwrites, deletes and new keys after the snapshot.
    let later = vec![
        rec("key-1", Some("new"), 1 << 40),
        rec("key-2", None, 1 << 40),
        rec("brand-new", Some(""), 5),
    ];
    for r in &later {
        wal.append(r).unwrap();
    }
    wal.commit().unwrap();
    drop(wal);
    let got = reopen(dir.path());
    assert_eq!(got.generation, 2);
    assert_eq!(got.from_snapshot, live.len());
    let mut all = first.clone();
    all.extend(later.iter().cloned());
    assert_eq!(state(&got.records), state(&all));
    // A second snapshot from the recovered state, then once more.
    let (mut wal, _) = Wal::open(dir.path(), Fsync::Batch).unwrap();
    wal.snapshot(state(&all).into_values()).unwrap();
    drop(wal);
    assert_eq!(dir.names(), ["log-000003", "snap-000003"]);
    let got = reopen(dir.path());
    assert_eq!(got.records.len(), got.from_snapshot);
    assert_eq!(state(&got.records), state(&all));
}

#[test]
fn buffered_records_are_committed_by_a_snapshot() {
    let dir = TempDir::new("snap-pending");
    let (mut wal, _) = Wal::open(dir.path(), Fsync::Never).unwrap();
    let r = rec("k", Some("v"), 1);
    wal.append(&r).unwrap();
    wal.snapshot(std::iter::once(r.clone())).unwrap();
    wal.append(&rec("k", None, 2)).unwrap();
    wal.commit().unwrap();
    drop(wal);
    assert_eq!(reopen(dir.path()).records, vec![r, rec("k", None, 2)]);
}

#[test]
fn snapshot_due_needs_the_floor_and_twice_the_snapshot() {
    let dir = TempDir::new("due");
    let (mut wal, _) = Wal::open(dir.path(), Fsync::Never).unwrap();
    assert!(!wal.snapshot_due());
    wal.set_snapshot_floor(1000);
    let r = rec("key", Some(&"x".repeat(100)), 1); // 128 bytes framed
    for _ in 0..7 {
        wal.append(&r).unwrap();
    }
    assert!(!wal.snapshot_due(), "896 bytes < floor");
    wal.append(&r).unwrap();
    assert!(wal.snapshot_due(), "1024 bytes >= floor, counting buffered");
    // A snapshot of 20 records (2600 bytes): due again only past 5200 bytes.
    wal.snapshot(std::iter::repeat_n(r.clone(), 20)).unwrap();
    let snap = wal.stats().snapshot_bytes;
    assert_eq!(snap, HEADER_LEN + 20 * 128 + FOOTER_LEN);
    assert!(!wal.snapshot_due());
    let mut n = 0;
    while !wal.snapshot_due() {
        wal.append(&r).unwrap();
        n += 1;
    }
    assert_eq!(n, (2 * snap).div_ceil(128));
}

/// Runs one snapshot that "crashes" after `stage`, then checks recovery.
fn crash_during_snapshot(stage: Stage, want_files: &[&str], want_generation: u64) {
    let dir = TempDir::new("crash");
    let recs = sample(120);
    let mut wal = write_all(dir.path(), Fsync::Batch, &recs);
    wal.snapshot(state(&recs).into_values()).unwrap(); // generation 2
    let more = sample(150)[120..].to_vec();
    for r in &more {
        wal.append(r).unwrap();
    }
    wal.commit().unwrap();
    let mut all = recs.clone();
    all.extend(more);
    let want = state(&all);
    wal.snapshot_until(want.values().cloned(), Some(stage))
        .unwrap();
    drop(wal); // the crash
    if stage == Stage::Renamed {
        // As if the crash hit while the new log's temp file was being written.
        fs::write(dir.file("log-000003.tmp"), b"GTST").unwrap();
    }
    assert_eq!(dir.names(), want_files, "on disk after {stage:?}");
    let (mut wal, got) = Wal::open(dir.path(), Fsync::Batch).unwrap();
    assert_eq!(got.generation, want_generation, "{stage:?}");
    assert_eq!(state(&got.records), want, "{stage:?}");
    assert_eq!(got.cut, 0);
    let g = want_generation;
    let (snap, log) = (snap_name(g), log_name(g));
    assert_eq!(dir.names(), [log.as_str(), snap.as_str()], "{stage:?}");
    // Life goes on: append, reopen.
    let last = rec("after-crash", Some("x"), 1 << 50);
    wal.append(&last).unwrap();
    wal.commit().unwrap();
    drop(wal);
    let mut want = want;
    want.insert(last.key.clone(), last);
    assert_eq!(state(&reopen(dir.path()).records), want, "{stage:?}");
}

#[test]
fn crash_after_the_temp_snapshot_keeps_the_old_generation() {
    crash_during_snapshot(
        Stage::TmpWritten,
        &["log-000002", "snap-000002", "snap-000003.tmp"],
        2,
    );
}

#[test]
fn crash_after_the_rename_uses_the_new_snapshot() {
    crash_during_snapshot(
        Stage::Renamed,
        &["log-000002", "log-000003.tmp", "snap-000002", "snap-000003"],
        3,
    );
}

#[test]
fn crash_before_cleanup_uses_the_new_generation() {
    crash_during_snapshot(
        Stage::LogCreated,
        &["log-000002", "log-000003", "snap-000002", "snap-000003"],
        3,
    );
}

#[test]
fn leftover_temp_files_are_removed_and_ignored() {
    let dir = TempDir::new("tmps");
    let recs = sample(10);
    drop(write_all(dir.path(), Fsync::Never, &recs));
    fs::write(dir.file("snap-000002.tmp"), b"half a snapsh").unwrap();
    fs::write(dir.file("log-000002.tmp"), b"GTSTLOG").unwrap();
    fs::write(dir.file("notes.txt"), b"not ours").unwrap();
    let got = reopen(dir.path());
    assert_eq!(got.records, recs);
    assert_eq!(dir.names(), ["log-000001", "notes.txt"]);
}

#[test]
fn a_corrupt_snapshot_is_an_error() {
    let dir = TempDir::new("badsnap");
    let recs = sample(50);
    let mut wal = write_all(dir.path(), Fsync::Never, &recs);
    wal.snapshot(state(&recs).into_values()).unwrap();
    drop(wal);
    let path = dir.file("snap-000002");
    let good = fs::read(&path).unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() - 1].to_vec()),
        (
            "no footer",
            good[..good.len() - FOOTER_LEN as usize].to_vec(),
        ),
        ("trailing bytes", [good.clone(), vec![0]].concat()),
        ("empty", vec![]),
    ];
    for pos in [3, 30, good.len() / 2, good.len() - 3] {
        let mut bad = good.clone();
        bad[pos] ^= 0x10;
        cases.push(("flipped", bad));
    }
    for (what, bytes) in cases {
        fs::write(&path, &bytes).unwrap();
        let err = Wal::open(dir.path(), Fsync::Never).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}");
        assert!(err.to_string().contains("snap-000002"), "{what}: {err}");
        assert_eq!(dir.names(), ["log-000002", "snap-000002"], "{what}");
        assert_eq!(fs::read(&path).unwrap(), bytes, "{what}: untouched");
    }
    fs::write(&path, &good).unwrap();
    assert_eq!(state(&reopen(dir.path()).records), state(&recs));
}

fn purge(key: &str, version: u64) -> Change {
    Change::Purge {
        key: Bytes::copy_from_slice(key.as_bytes()),
        version,
    }
}

fn restore(key: &str, version: u64, prev: Option<(u64, Option<&str>)>) -> Change {
    Change::Restore {
        key: Bytes::copy_from_slice(key.as_bytes()),
        version,
        prev: prev.map(|(v, value)| (v, value.map(|s| Bytes::copy_from_slice(s.as_bytes())))),
    }
}

/// A log of writes, purges and restores of every shape, in the order a node
/// could have made them.
fn history() -> Vec<Change> {
    vec![
        rec("gone", Some("v"), 1).into(),
        rec("gone", None, 2).into(),
        purge("gone", 2), // collected
        rec("kept", None, 3).into(),
        purge("kept", 2), // another tombstone: no effect
        rec("undone", Some("refused"), 5).into(),
        restore("undone", 5, None), // back to no entry
        rec("old", Some("first"), 6).into(),
        rec("old", Some("refused"), 9).into(),
        restore("old", 9, Some((6, Some("first")))), // back to a value
        rec("dead", None, 7).into(),
        rec("dead", Some(""), 10).into(),
        restore("dead", 10, Some((7, None))), // back to a tombstone
        rec("raced", Some("a"), 11).into(),
        restore("raced", 4, None), // not that write: no effect
        rec("", Some("empty key"), 12).into(),
        restore("", 12, Some((8, Some("")))),
    ]
}

#[test]
fn purges_and_restores_round_trip_and_replay_in_order() {
    let changes = history();
    let dir = TempDir::new("changes");
    let (mut wal, _) = Wal::open(dir.path(), Fsync::Batch).unwrap();
    for c in &changes {
        wal.append_change(c).unwrap();
    }
    wal.commit().unwrap();
    assert_eq!(wal.format(), FORMAT_VERSION);
    drop(wal);
    let got = reopen(dir.path());
    assert_eq!(got.records, changes);
    assert_eq!(got.cut, 0);
    let want: Vec<(String, Option<String>, u64)> = vec![
        ("".into(), Some("".into()), 8),
        ("dead".into(), None, 7),
        ("kept".into(), None, 3),
        ("old".into(), Some("first".into()), 6),
        ("raced".into(), Some("a".into()), 11),
    ];
    let have: Vec<(String, Option<String>, u64)> = state(&got.records)
        .into_values()
        .map(|r| {
            let text = |b: &Bytes| String::from_utf8(b.to_vec()).unwrap();
            (text(&r.key), r.value.as_ref().map(text), r.version)
        })
        .collect();
    assert_eq!(have, want);
    // A torn restore at the end is cut like any record.
    let path = dir.file("log-000001");
    let len = fs::metadata(&path).unwrap().len();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 3).unwrap();
    let got = reopen(dir.path());
    assert_eq!(got.records, changes[..changes.len() - 1]);
    assert!(got.cut > 0);
}

#[test]
fn a_snapshot_with_a_purge_or_restore_is_corrupt() {
    let dir = TempDir::new("snapkinds");
    let mut wal = write_all(dir.path(), Fsync::Never, &sample(3));
    wal.snapshot(state(&sample(3)).into_values()).unwrap();
    drop(wal);
    // Rewrite the snapshot by hand with a purge in the middle.
    let path = dir.file("snap-000002");
    let mut bytes = header(SNAP_MAGIC, 2).to_vec();
    encode(&rec("a", None, 1), &mut bytes).unwrap();
    encode_change(&purge("a", 1), &mut bytes).unwrap();
    let count = 2u64.to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&FOOTER_MARK.to_le_bytes());
    h.update(&count);
    bytes.extend_from_slice(&FOOTER_MARK.to_le_bytes());
    bytes.extend_from_slice(&h.finalize().to_le_bytes());
    bytes.extend_from_slice(&count);
    fs::write(&path, &bytes).unwrap();
    let err = Wal::open(dir.path(), Fsync::Never).unwrap_err();
    assert!(
        err.to_string().contains("a purge or restore record"),
        "{err}"
    );
}

/// Rewrites the format version in a file's header (and its checksum).
fn set_format(path: &Path, version: u32) {
    let mut bytes = fs::read(path).unwrap();
    bytes[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&bytes[0..20]);
    bytes[20..24].copy_from_slice(&crc.to_le_bytes());
    fs::write(path, &bytes).unwrap();
}

#[test]
fn version_1_files_are_read_and_unknown_versions_refused() {
    let dir = TempDir::new("v1");
    let recs = sample(20);
    let mut wal = write_all(dir.path(), Fsync::Never, &recs[..10]);
    wal.snapshot(state(&recs[..10]).into_values()).unwrap();
    for r in &recs[10..] {
        wal.append(r).unwrap();
    }
    wal.commit().unwrap();
    drop(wal);
    // What a version-1 build wrote: the same bytes, version 1 in the headers.
    set_format(&dir.file("snap-000002"), 1);
    let (wal, got) = Wal::open(dir.path(), Fsync::Never).unwrap();
    assert_eq!(wal.format(), 1, "the snapshot is version 1");
    assert_eq!(state(&got.records), state(&recs));
    drop(wal);
    set_format(&dir.file("log-000002"), 1);
    let (mut wal, got) = Wal::open(dir.path(), Fsync::Never).unwrap();
    assert_eq!(wal.format(), 1);
    assert_eq!(state(&got.records), state(&recs));
    // A snapshot moves the directory to the current version.
    wal.snapshot(state(&recs).into_values()).unwrap();
    assert_eq!(wal.format(), FORMAT_VERSION);
    drop(wal);
    assert_eq!(
        Wal::open(dir.path(), Fsync::Never).unwrap().0.format(),
        FORMAT_VERSION
    );
    // A version this build does not know is refused, naming both.
    set_format(&dir.file("log-000003"), FORMAT_VERSION + 1);
    let err = Wal::open(dir.path(), Fsync::Never).unwrap_err();
    let named = format!("format version {}", FORMAT_VERSION + 1);
    assert!(err.to_string().contains(&named), "{err}");
    assert!(err.to_string().contains("log-000003"), "{err}");
}

#[test]
fn a_later_generation_without_its_snapshot_is_an_error() {
    let dir = TempDir::new("nosnap");
    let mut wal = write_all(dir.path(), Fsync::Never, &sample(5));
    wal.snapshot(state(&sample(5)).into_values()).unwrap();
    drop(wal);
    fs::remove_file(dir.file("snap-000002")).unwrap();
    let err = Wal::open(dir.path(), Fsync::Never).unwrap_err();
    assert!(err.to_string().contains("no snapshot"), "{err}");
}

#[test]
fn a_failed_snapshot_leaves_the_log_usable_and_backs_off() {
    let dir = TempDir::new("snapfail");
    let (mut wal, _) = Wal::open(dir.path(), Fsync::Batch).unwrap();
    wal.set_snapshot_floor(100);
    let r = rec("k", Some("v"), 1);
    wal.append(&r).unwrap();
    wal.append(&r).unwrap();
    wal.append(&r).unwrap();
    wal.append(&r).unwrap();
    assert!(wal.snapshot_due());
    // A directory where the temp snapshot should go makes writing it fail.
    fs::create_dir(dir.file("snap-000002.tmp")).unwrap();
    assert!(wal.snapshot(std::iter::once(r.clone())).is_err());
    assert_eq!(wal.stats().generation, 1);
    assert!(!wal.snapshot_due(), "backs off after a failure");
    let big = rec("big", Some(&"b".repeat(1 << 20)), 2);
    for _ in 0..SNAPSHOT_RETRY_BYTES >> 20 {
        wal.append(&big).unwrap();
    }
    wal.commit().unwrap();
    assert!(wal.snapshot_due(), "due again once the log grew");
    fs::remove_dir(dir.file("snap-000002.tmp")).unwrap();
    wal.snapshot([r.clone(), big.clone()].into_iter()).unwrap();
    assert!(!wal.snapshot_due());
    wal.append(&rec("k", None, 3)).unwrap();
    wal.commit().unwrap();
    drop(wal);
    assert_eq!(
        reopen(dir.path()).records,
        vec![r.clone(), big, rec("k", None, 3)]
    );
}

#[test]
fn open_creates_a_missing_data_directory() {
    let dir = TempDir::new("mkdir");
    let nested = dir.file("a").join("b");
    let r = rec("k", Some("v"), 1);
    drop(write_all(&nested, Fsync::Batch, std::slice::from_ref(&r)));
    assert_eq!(reopen(&nested).records, vec![r]);
}

#[test]
fn an_oversized_record_is_refused_and_nothing_queued() {
    let mut out = vec![1, 2, 3];
    let big = Record {
        key: Bytes::new(),
        value: Some(Bytes::from(vec![0u8; MAX_BODY as usize])),
        version: 1,
    };
    let err = encode(&big, &mut out).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(out, [1, 2, 3]);
}

#[test]
fn decode_rejects_inconsistent_bodies() {
    let mut buf = Vec::new();
    encode(&rec("ab", Some("xyz"), 9), &mut buf).unwrap();
    let body = &buf[FRAME_LEN as usize..];
    assert_eq!(
        decode_body(body),
        Ok(Change::Put(rec("ab", Some("xyz"), 9)))
    );
    let mut b = body.to_vec();
    b[14] = 7; // kind
    assert!(decode_body(&b).unwrap_err().contains("kind"));
    let mut b = body.to_vec();
    b[14] = KIND_PURGE; // a purge with a value
    assert!(decode_body(&b).unwrap_err().contains("purge"));
    let mut b = body.to_vec();
    b[14] = KIND_RESTORE; // a previous entry of 3 bytes
    assert!(decode_body(&b).unwrap_err().contains("restore"));
    let mut b = body.to_vec();
    b[14] = 0; // a tombstone with a value
    assert!(decode_body(&b).unwrap_err().contains("tombstone"));
    let mut b = body.to_vec();
    b[8] = 200; // key length past the body
    assert!(decode_body(&b).is_err());
    let mut b = body.to_vec();
    b[15] = 2; // value length too short for the body
    assert!(decode_body(&b).is_err());
    assert!(decode_body(&body[..10]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn garbage_after_a_good_log_yields_only_the_good_records(
        garbage in proptest::collection::vec(any::<u8>(), 1..600),
        n in 0usize..20,
    ) {
        let dir = TempDir::new("prop-garbage");
        let recs = sample(n);
        drop(write_all(dir.path(), Fsync::Never, &recs));
        let path = dir.file("log-000001");
        let good = fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&garbage).unwrap();
        drop(f);
        let got = reopen(dir.path());
        prop_assert_eq!(&got.records, &recs);
        prop_assert_eq!(got.cut, garbage.len() as u64);
        prop_assert_eq!(fs::metadata(&path).unwrap().len(), good);
    }

    #[test]
    fn damage_anywhere_in_the_records_yields_a_prefix(
        hits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        n in 1usize..20,
    ) {
        let dir = TempDir::new("prop-damage");
        let recs = sample(n);
        drop(write_all(dir.path(), Fsync::Never, &recs));
        let path = dir.file("log-000001");
        let mut bytes = fs::read(&path).unwrap();
        let body = bytes.len() - HEADER_LEN as usize;
        for (at, b) in &hits {
            bytes[HEADER_LEN as usize + at.index(body)] = *b;
        }
        fs::write(&path, &bytes).unwrap();
        let got = reopen(dir.path());
        prop_assert!(got.records.len() <= recs.len());
        prop_assert_eq!(&got.records[..], &recs[..got.records.len()]);
        let kept = offsets(&recs)[got.records.len()];
        prop_assert_eq!(got.cut, bytes.len() as u64 - kept);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_damaged_or_cut_snapshot_is_refused_never_half_read(
        hits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let dir = TempDir::new("prop-snap");
        let recs = sample(30);
        let mut wal = write_all(dir.path(), Fsync::Never, &recs);
        wal.snapshot(state(&recs).into_values()).unwrap();
        drop(wal);
        let path = dir.file("snap-000002");
        let good = fs::read(&path).unwrap();
        let mut bytes = good.clone();
        for (at, b) in &hits {
            let i = at.index(bytes.len());
            bytes[i] = *b;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        fs::write(&path, &bytes).unwrap();
        match Wal::open(dir.path(), Fsync::Never) {
            Ok((_, got)) => {
                prop_assert_eq!(&bytes, &good, "damage went unnoticed");
                prop_assert_eq!(state(&got.records), state(&recs));
            }
            Err(e) => {
                prop_assert_ne!(&bytes, &good);
                prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            }
        }
    }
}

/// Write throughput per fsync mode. Run in release:
/// `cargo test --release --lib wal::tests::throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn throughput() {
    const RECORDS: usize = 100_000;
    const PER_TURN: usize = 100;
    let value = Bytes::from(vec![b'v'; 100]);
    for mode in [Fsync::Never, Fsync::Batch, Fsync::Always] {
        let dir = TempDir::new("throughput");
        let (mut wal, _) = Wal::open(dir.path(), mode).unwrap();
        let start = std::time::Instant::now();
        for turn in 0..RECORDS / PER_TURN {
            for i in 0..PER_TURN {
                let n = turn * PER_TURN + i;
                wal.append(&Record {
                    key: Bytes::from(format!("key:{n:012}")),
                    value: Some(value.clone()),
                    version: n as u64,
                })
                .unwrap();
            }
            wal.commit().unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        let s = wal.stats();
        println!(
            "fsync={mode:<6} {RECORDS} records of 100-byte values in turns of {PER_TURN}: \
             {secs:.3} s, {:.0} records/s, {:.1} MB/s of log, {} fsyncs",
            RECORDS as f64 / secs,
            s.log_bytes as f64 / secs / 1e6,
            s.fsyncs
        );
    }
}

/// Ballot records (a key's promise and accepted proposal) round-trip through
/// the log and through a snapshot, which keeps them.
#[test]
fn ballots_round_trip_in_the_log_and_in_snapshots() {
    let dir = TempDir::new("ballots");
    let ballots = vec![
        Change::Ballot {
            key: Bytes::from_static(b"a"),
            promised: 7,
            accepted: None,
        },
        Change::Ballot {
            key: Bytes::from_static(b"b"),
            promised: 9,
            accepted: Some((8, Some(Bytes::from_static(b"value")))),
        },
        Change::Ballot {
            key: Bytes::from_static(b"c"),
            promised: 12,
            accepted: Some((12, None)),
        },
    ];
    let (mut wal, _) = Wal::open(&dir.0, Fsync::Batch).unwrap();
    for b in &ballots {
        wal.append_change(b).unwrap();
    }
    wal.commit().unwrap();
    drop(wal);
    let rec = reopen(&dir.0);
    assert_eq!(rec.records, ballots);
    assert_eq!(rec.cut, 0);
    let (mut wal, _) = Wal::open(&dir.0, Fsync::Batch).unwrap();
    let live = vec![Record {
        key: Bytes::from_static(b"k"),
        value: Some(Bytes::from_static(b"v")),
        version: 3,
    }];
    wal.snapshot_with(live.clone().into_iter(), ballots.clone())
        .unwrap();
    drop(wal);
    let rec = reopen(&dir.0);
    let mut want: Vec<Change> = live.into_iter().map(Change::Put).collect();
    want.extend(ballots);
    assert_eq!(rec.records, want);
    assert_eq!(rec.from_snapshot, 4);
}
