//! The hold rule, the fsync modes, identity and lock, and a node that
//! acknowledges after its commit and recovers after a restart.

use super::*;
use crate::protocol::Frame;
use std::fs;
use std::path::PathBuf;

fn none(_: ConnId) -> bool {
    false
}

/// A fresh directory under the system temp dir, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("gtstore-durable-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn reply(n: u32) -> Output {
    Output::Send {
        conn: ConnId::new(n, 1),
        frame: Frame::new(21, 0, 0, Bytes::new()),
    }
}

fn is_reply(o: &Output, n: u32) -> bool {
    matches!(o, Output::Send { conn, .. } if *conn == ConnId::new(n, 1))
}

#[test]
fn batch_holds_outputs_until_the_turn_commits() {
    let dir = TempDir::new("batch");
    let (mut d, rec) = Durable::open(&dir.0, Fsync::Batch).unwrap();
    assert!(rec.records.is_empty());
    let mut out = Vec::new();
    // A step with no record passes its outputs through.
    out.push(reply(1));
    d.after_step(0, 0, &mut out, none);
    assert_eq!(out.len(), 1);
    // A step that logged: its outputs are held, a wake-up timer is asked for.
    out.clear();
    d.log(b"k", 5, Some(b"v"));
    out.push(reply(2));
    d.after_step(0, 0, &mut out, none);
    assert!(matches!(
        out[..],
        [Output::Timer {
            id: TIMER_COMMIT,
            ..
        }]
    ));
    // A later step of the same turn queues behind, even without a record.
    out.clear();
    out.push(reply(3));
    d.after_step(0, 0, &mut out, none);
    assert!(out.is_empty());
    assert_eq!(d.stats().fsyncs, 0);
    // The turn end commits with one fsync, then releases in order.
    let engine = Engine::default();
    d.turn_end(&engine, &mut out);
    assert_eq!(d.stats().fsyncs, 1);
    assert_eq!(out.len(), 2);
    assert!(is_reply(&out[0], 2) && is_reply(&out[1], 3));
    // The next turn starts clear.
    out.clear();
    out.push(reply(4));
    d.after_step(1, 0, &mut out, none);
    assert_eq!(out.len(), 1);
    drop(d);
    let (_, rec) = Durable::open(&dir.0, Fsync::Batch).unwrap();
    assert_eq!(rec.records.len(), 1);
    assert_eq!(&rec.records[0].key()[..], b"k");
}

#[test]
fn outbound_links_pass_and_held_outputs_keep_their_order() {
    let dir = TempDir::new("pass");
    let (mut d, _) = Durable::open(&dir.0, Fsync::Batch).unwrap();
    let link = |c: ConnId| c == ConnId::new(9, 1);
    d.log(b"k", 1, Some(b"v"));
    let mut out = vec![reply(1), reply(2), reply(9), reply(3)];
    d.after_step(0, 0, &mut out, link);
    // The copy to a peer leaves now; the replies wait, in order.
    assert!(is_reply(&out[0], 9));
    assert!(matches!(out[1], Output::Timer { .. }));
    assert_eq!(out.len(), 2);
    out.clear();
    d.turn_end(&Engine::default(), &mut out);
    let order: Vec<bool> = [1, 2, 3]
        .iter()
        .zip(&out)
        .map(|(&n, o)| is_reply(o, n))
        .collect();
    assert_eq!(order, [true, true, true], "{out:?}");
}

#[test]
fn always_syncs_each_record_and_holds_nothing() {
    let dir = TempDir::new("always");
    let (mut d, _) = Durable::open(&dir.0, Fsync::Always).unwrap();
    let mut out = vec![reply(1)];
    d.log(b"a", 1, Some(b"1"));
    d.log(b"b", 2, None);
    d.after_step(0, 0, &mut out, none);
    assert_eq!(out.len(), 1, "nothing held");
    assert_eq!(d.stats().fsyncs, 2, "one fsync per record");
}

#[test]
fn never_holds_until_written_but_does_not_sync() {
    let dir = TempDir::new("never");
    let (mut d, _) = Durable::open(&dir.0, Fsync::Never).unwrap();
    let mut out = Vec::new();
    d.log(b"a", 1, Some(b"1"));
    out.push(reply(1));
    d.after_step(0, 0, &mut out, none);
    assert!(!out.iter().any(|o| is_reply(o, 1)));
    d.turn_end(&Engine::default(), &mut out);
    assert!(out.iter().any(|o| is_reply(o, 1)));
    assert_eq!((d.stats().commits, d.stats().fsyncs), (1, 0));
}

#[test]
fn identity_round_trips_and_a_live_lock_is_refused() {
    let dir = TempDir::new("identity");
    let ring = Ring::decode(b"epoch 4\nreplicas 3 2 2\nnode 2 127.0.0.1:7002 up 5,9\n").unwrap();
    {
        let (mut d, _) = Durable::open(&dir.0, Fsync::Batch).unwrap();
        assert!(d.take_identity().is_none());
        d.save_identity(2, &ring);
        assert_eq!(d.identity(), (0, 0), "saved at the turn end");
        d.turn_end(&Engine::default(), &mut Vec::new());
        assert_eq!(d.identity(), (2, 4));
    }
    // A LOCK naming a live process other than us (our parent) is refused.
    let parent = std::os::unix::process::parent_id();
    fs::write(dir.0.join(LOCK_FILE), format!("{parent}\n")).unwrap();
    let e = Durable::open(&dir.0, Fsync::Batch).unwrap_err();
    assert!(e.to_string().contains("in use by process"), "{e}");
    // One naming a dead process is taken over.
    fs::write(dir.0.join(LOCK_FILE), format!("{}\n", u32::MAX - 7)).unwrap();
    let (mut d, _) = Durable::open(&dir.0, Fsync::Batch).unwrap();
    let (id, got) = d.take_identity().expect("saved identity");
    assert_eq!((id, got.encode()), (2, ring.encode()));
    drop(d);
    // A damaged identity file is an error, not a silent fresh start.
    fs::write(dir.0.join(IDENTITY_FILE), "gtstore-identity 1\nx\n").unwrap();
    let e = Durable::open(&dir.0, Fsync::Batch).unwrap_err();
    assert!(e.to_string().contains("bad node id"), "{e}");
}

#[test]
fn a_node_acknowledges_after_the_commit_and_recovers_after_a_restart() {
    use crate::protocol::op;
    use crate::reactor::{Input, Service};
    use crate::storage::{NodeConfig, StorageNode};
    let dir = TempDir::new("node");
    let cfg = NodeConfig::new("127.0.0.1:7001".into(), "127.0.0.1:7000".parse().unwrap());
    let client = ConnId::new(5, 1);
    let link = ConnId::new(1, 1);
    let ring = "3\nepoch 2\nreplicas 1 1 1\nnode 3 127.0.0.1:7001 up 10,20\n";
    {
        let mut n = DurableNode::new(StorageNode::new(cfg.clone()));
        n.open_data_dir(&dir.0, Fsync::Batch).unwrap();
        let mut out = Vec::new();
        n.step(0, Input::Timer { id: 0 }, &mut out);
        n.test_link_up(1, link, 1, &mut out);
        let joined = Frame::new(op::JOINED, 0, 0, ring);
        n.step(
            2,
            Input::Frame {
                conn: link,
                frame: joined,
            },
            &mut out,
        );
        // The manager's lease after JOINED, one that outlasts the test.
        let lease = crate::protocol::Message::Lease {
            sent: 2,
            lease_ms: 1 << 40,
        };
        let frame = lease.encode();
        n.step(2, Input::Frame { conn: link, frame }, &mut out);
        out.clear();
        let put = Frame::new(op::PUT, 9, 0, &b"1 kv"[..]);
        n.step(
            3,
            Input::Frame {
                conn: client,
                frame: put,
            },
            &mut out,
        );
        let acked = |out: &[Output]| {
            out.iter().any(|o| {
                matches!(o, Output::Send { conn, frame }
                if *conn == client && frame.op == op::OK)
            })
        };
        assert!(!acked(&out), "no ack before the commit: {out:?}");
        assert_eq!(n.durable_mut().unwrap().stats().fsyncs, 0);
        n.turn_end(3, &mut out);
        assert!(acked(&out), "the ack follows the commit: {out:?}");
        assert_eq!(n.durable_mut().unwrap().stats().fsyncs, 1);
        // A GET logs nothing and is answered at once.
        out.clear();
        let get = Frame::new(op::GET, 9, 0, &b"k"[..]);
        n.step(
            4,
            Input::Frame {
                conn: client,
                frame: get,
            },
            &mut out,
        );
        assert!(matches!(&out[..], [Output::Send { frame, .. }] if frame.op == op::VALUE));
    }
    // Restarted: the key is back, and so are the id and the ring, before the
    // manager answers.
    let mut n = DurableNode::new(StorageNode::new(cfg));
    let found = n.open_data_dir(&dir.0, Fsync::Batch).unwrap();
    assert_eq!(
        (found.records, found.keys, found.node_id, found.epoch),
        (1, 1, 3, 2)
    );
    assert_eq!(n.engine().get(b"k").as_deref(), Some(&b"v"[..]));
    let mut out = Vec::new();
    n.step(0, Input::Timer { id: 0 }, &mut out);
    assert_eq!((n.node_id(), n.ring().epoch), (3, 2));
    // Its registration offers that ring to the manager.
    out.clear();
    n.test_link_up(1, link, 1, &mut out);
    let offered = out.iter().find_map(|o| match o {
        Output::Send { frame, .. } if frame.op == op::NODE_JOIN => Some(frame.payload.clone()),
        _ => None,
    });
    let offered = offered.expect("a NODE_JOIN");
    let (proof, rest) = offered.split_at(64);
    assert!(crate::protocol::auth::from_hex::<32>(proof).is_some());
    assert_eq!(
        rest,
        &b" 127.0.0.1:7001 64 1\nepoch 2\nreplicas 1 1 1\nnode 3 127.0.0.1:7001 up 10,20\n"[..]
    );
}

#[test]
fn turn_end_snapshots_when_asked_and_recovery_sees_it() {
    let dir = TempDir::new("snap");
    let mut engine = Engine::default();
    {
        let (mut d, _) = Durable::open(&dir.0, Fsync::Batch).unwrap();
        for i in 0..10u64 {
            let k = format!("k{i}");
            engine.apply(k.as_bytes(), i + 1, Some(b"v"), None);
            d.log(k.as_bytes(), i + 1, Some(b"v"));
        }
        let mut out = Vec::new();
        d.turn_end(&engine, &mut out);
        // Drop half the keys (as a ring change would), then snapshot.
        engine.remove_where(|h| h % 2 == 0);
        d.want_snapshot();
        d.turn_end(&engine, &mut out);
        assert_eq!(d.stats().snapshots, 1);
    }
    let (_, rec) = Durable::open(&dir.0, Fsync::Batch).unwrap();
    assert_eq!(rec.records.len(), engine.len());
    assert_eq!(rec.from_snapshot, engine.len());
    for r in &rec.records {
        assert_eq!(engine.version(r.key()), r.newest_version());
    }
}
