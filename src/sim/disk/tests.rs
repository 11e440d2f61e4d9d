//! The simulated disk's model (what a crash keeps), and the log and the data
//! directory run on it: a crash never takes a committed record, a torn tail is
//! cut, a failed fsync stops the node with nothing acknowledged.

use super::*;
use crate::reactor::{ConnId, Output};
use crate::storage::durable::Durable;
use crate::storage::engine::Engine;
use crate::storage::wal::{Change, Fsync, Record, Wal};
use bytes::Bytes;

fn dir() -> PathBuf {
    PathBuf::from("/data/n1")
}

fn disk(seed: u64, torn: bool) -> SimDisk {
    SimDisk::new(
        seed,
        DiskFaults {
            torn,
            fsync_fails: 0.0,
        },
    )
}

fn rec(i: u64) -> Record {
    Record {
        key: Bytes::from(format!("k{}", i % 7)),
        value: Some(Bytes::from(vec![b'v'; (i % 50) as usize])),
        version: i + 1,
    }
}

#[test]
fn a_crash_keeps_synced_bytes_and_names_only() {
    let d = disk(1, false);
    d.create_dir_all(&dir()).unwrap();
    let a = dir().join("a");
    let mut f = d.create(&a).unwrap();
    f.write_all(b"hello").unwrap();
    f.sync_data().unwrap();
    d.sync_dir(&dir()).unwrap();
    f.write_all(b" world").unwrap();
    d.rename(&a, &dir().join("b")).unwrap();
    assert_eq!(d.list(&dir()).unwrap(), ["b"]);
    d.crash();
    // The rename was never synced: the file is back under its old name, and
    // the unsynced bytes are gone.
    assert_eq!(d.list(&dir()).unwrap(), ["a"]);
    assert_eq!(d.read(&a).unwrap(), b"hello");
    assert_eq!(d.stats().lost_bytes, 6);
    // An unsynced truncation is undone whole.
    let mut f = d.open(&a).unwrap();
    f.set_len(2).unwrap();
    d.crash();
    assert_eq!(d.read(&a).unwrap(), b"hello");
    // A file created and never named durably is gone.
    d.create(&dir().join("c")).unwrap().sync_data().unwrap();
    d.crash();
    assert!(d.open(&dir().join("c")).is_err());
}

#[test]
fn a_torn_crash_keeps_a_prefix_of_the_unsynced_tail() {
    let mut kept = BTreeSet::new();
    for seed in 0..40 {
        let d = disk(seed, true);
        d.create_dir_all(&dir()).unwrap();
        let a = dir().join("a");
        let mut f = d.create(&a).unwrap();
        f.write_all(b"0123").unwrap();
        f.sync_data().unwrap();
        d.sync_dir(&dir()).unwrap();
        f.write_all(b"456789").unwrap();
        d.crash();
        let got = d.read(&a).unwrap();
        assert!(b"0123456789".starts_with(&got) && got.len() >= 4, "{got:?}");
        kept.insert(got.len());
    }
    assert!(kept.len() > 3, "tears fall at many offsets: {kept:?}");
}

#[test]
fn a_failed_sync_leaves_its_bytes_unsynced() {
    let d = disk(1, false);
    d.create_dir_all(&dir()).unwrap();
    let a = dir().join("a");
    let mut f = d.create(&a).unwrap();
    d.sync_dir(&dir()).unwrap();
    f.write_all(b"x").unwrap();
    d.fail_next_sync();
    assert!(f.sync_data().is_err());
    d.crash();
    assert_eq!(d.read(&a).unwrap(), b"");
    assert_eq!(d.stats().failed_syncs, 1);
}

/// The log on the simulated disk, crashed at every point of a run with torn
/// tails: what comes back is always a prefix of what was appended, never
/// shorter than what was committed.
#[test]
fn the_log_recovers_every_committed_record_after_a_torn_crash() {
    let mut cut = 0;
    for seed in 0..60 {
        let d = disk(seed, true);
        let disk: Arc<dyn Disk> = Arc::new(d.clone());
        let (mut wal, _) = Wal::open_on(disk.clone(), &dir(), Fsync::Batch).unwrap();
        let mut appended = Vec::new();
        let mut committed = 0;
        let mut rng = Rng::new(seed);
        let steps = rng.range(1, 40);
        for i in 0..steps {
            wal.append(&rec(i)).unwrap();
            appended.push(rec(i));
            if rng.chance(0.3) {
                wal.commit().unwrap();
                committed = appended.len();
            }
        }
        // A last commit whose write lands and whose fsync fails: its bytes are
        // on the disk, unsynced, when the crash comes.
        if rng.chance(0.7) {
            for i in steps..steps + rng.range(1, 5) {
                wal.append(&rec(i)).unwrap();
                appended.push(rec(i));
            }
            d.fail_next_sync();
            assert!(wal.commit().is_err());
        }
        drop(wal);
        d.crash();
        let (_, recovery) = Wal::open_on(disk, &dir(), Fsync::Batch).unwrap();
        let got = &recovery.records;
        assert!(
            got.len() >= committed,
            "seed {seed}: lost a committed record"
        );
        assert!(got.len() <= appended.len());
        for (g, want) in got.iter().zip(&appended) {
            assert_eq!(g, &Change::Put(want.clone()), "seed {seed}");
        }
        cut += u64::from(recovery.cut > 0);
    }
    assert!(cut > 0, "some crash tore a record and recovery cut it");
}

/// With `--fsync never`, records written at a commit but never synced are lost
/// by a crash of the simulated disk (a power loss): what the mode says.
#[test]
fn never_loses_unsynced_records_to_a_power_loss() {
    let d = disk(3, false);
    let disk: Arc<dyn Disk> = Arc::new(d.clone());
    let (mut wal, _) = Wal::open_on(disk.clone(), &dir(), Fsync::Never).unwrap();
    wal.append(&rec(1)).unwrap();
    wal.commit().unwrap();
    drop(wal);
    d.crash();
    let (_, recovery) = Wal::open_on(disk, &dir(), Fsync::Batch).unwrap();
    assert!(recovery.records.is_empty());
}

/// A failed fsync at the turn's commit: the held acknowledgement is dropped,
/// the node is told to stop, and a restart finds only what was synced before.
#[test]
fn a_failed_commit_drops_the_held_replies_and_stops() {
    let d = disk(4, false);
    let disk: Arc<dyn Disk> = Arc::new(d.clone());
    let client = ConnId::new(5, 1);
    let reply = || Output::Send {
        conn: client,
        frame: crate::protocol::Frame::new(21, 0, 0, Bytes::new()),
    };
    let engine = Engine::default();
    let (mut dd, _) = Durable::open_on(disk.clone(), &dir(), Fsync::Batch).unwrap();
    dd.log(b"a", 1, Some(b"1"));
    let mut out = vec![reply()];
    dd.after_step(0, 0, &mut out, |_| false);
    dd.turn_end(&engine, &mut out);
    assert!(out.iter().any(|o| matches!(o, Output::Send { .. })));
    dd.log(b"b", 2, Some(b"2"));
    let mut out = vec![reply()];
    dd.after_step(1, 0, &mut out, |_| false);
    d.fail_next_sync();
    dd.turn_end(&engine, &mut out);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Send { .. })),
        "no acknowledgement after a failed fsync: {out:?}"
    );
    assert!(out.iter().any(|o| matches!(o, Output::Stop)));
    assert!(dd.failed().is_some_and(|w| w.contains("fsync")));
    drop(dd);
    d.crash();
    let (_, rec) = Durable::open_on(disk, &dir(), Fsync::Batch).unwrap();
    let keys: Vec<&[u8]> = rec.records.iter().map(|c| &c.key()[..]).collect();
    assert_eq!(keys, [&b"a"[..]]);
}

/// The node's own step records what must reach the disk and writes nothing;
/// the wrapper performs it after the step (with `--fsync always`, synced before
/// the step's acknowledgement leaves, so nothing is held).
#[test]
fn a_node_step_only_records_durability_requests() {
    use crate::protocol::{op, Frame};
    use crate::reactor::{Input, Service};
    use crate::storage::durable::DurableNode;
    use crate::storage::{NodeConfig, StorageNode};
    let d = disk(5, false);
    let cfg = NodeConfig::new("127.0.0.1:7001".into(), "127.0.0.1:7000".parse().unwrap());
    let mut n = DurableNode::new(StorageNode::new(cfg));
    n.open_data_dir_on(Arc::new(d.clone()), &dir(), Fsync::Always)
        .unwrap();
    n.join_alone();
    let client = ConnId::new(5, 1);
    let put = |v: &'static [u8]| Input::Frame {
        conn: client,
        frame: Frame::new(op::PUT, 9, 0, v),
    };
    let acked = |out: &[Output]| {
        out.iter().any(
            |o| matches!(o, Output::Send { conn, frame } if *conn == client && frame.op == op::OK),
        )
    };
    let syncs = d.stats().syncs;
    let node: &mut StorageNode = &mut n;
    let mut out = Vec::new();
    node.step(1, put(b"1 kv"), &mut out);
    assert_eq!(d.stats().syncs, syncs, "the node wrote nothing");
    let asked = node.journal_mut().unwrap().take();
    assert_eq!(asked.changes.len(), 1, "it asked for one append");
    // Through the wrapper the append is performed, and synced, before the
    // acknowledgement is handed on.
    out.clear();
    n.step(2, put(b"1 kw"), &mut out);
    assert_eq!(d.stats().syncs, syncs + 1);
    assert!(acked(&out), "{out:?}");
}
