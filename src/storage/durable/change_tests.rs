//! Purges and undone writes: logged, and replayed in order after a restart.

use super::*;
use crate::protocol::{op, Frame};
use crate::reactor::{Input, Service};
use crate::storage::engine::Entry;
use crate::storage::{NodeConfig, StorageNode};
use std::fs;

use super::tests::TempDir;

fn entry(version: u64, value: Option<&[u8]>) -> Entry {
    Entry {
        version,
        value: value.map(Bytes::copy_from_slice),
    }
}

/// Replays `dir` into a fresh engine, as a restarting node does.
fn recovered(dir: &Path) -> Engine {
    let (mut d, rec) = Durable::open(dir, Fsync::Batch).unwrap();
    let mut engine = Engine::default();
    d.replay(rec, &mut engine);
    engine
}

#[test]
fn replay_applies_purges_and_restores_in_log_order() {
    let dir = TempDir::new("replay");
    let mut engine = Engine::default();
    {
        let (mut d, _) = Durable::open(&dir.0, Fsync::Batch).unwrap();
        // What a node does, change by change, logging as it goes.
        let put = |e: &mut Engine, d: &mut Durable, k: &[u8], v: u64, val: Option<&[u8]>| {
            e.apply(k, v, val, None);
            d.log(k, v, val);
        };
        put(&mut engine, &mut d, b"gone", 1, Some(b"x"));
        put(&mut engine, &mut d, b"gone", 2, None);
        assert!(engine.remove_tombstone(b"gone", 2));
        d.log_purge(b"gone", 2);
        put(&mut engine, &mut d, b"fresh", 3, Some(b"refused"));
        assert!(engine.restore(b"fresh", 3, None));
        d.log_restore(b"fresh", 3, None);
        put(&mut engine, &mut d, b"old", 4, Some(b"first"));
        put(&mut engine, &mut d, b"old", 6, Some(b"refused"));
        let prev = entry(4, Some(b"first"));
        assert!(engine.restore(b"old", 6, Some(prev.clone())));
        d.log_restore(b"old", 6, Some(&prev));
        put(&mut engine, &mut d, b"dead", 5, None);
        put(&mut engine, &mut d, b"dead", 7, Some(b"refused"));
        assert!(engine.restore(b"dead", 7, Some(entry(5, None))));
        d.log_restore(b"dead", 7, Some(&entry(5, None)));
        // A key written again after its restore keeps the later write.
        put(&mut engine, &mut d, b"fresh", 8, Some(b"later"));
        let mut out = Vec::new();
        d.turn_end(&engine, &mut out);
    }
    let got = recovered(&dir.0);
    let want = [
        (&b"gone"[..], None),
        (b"fresh", Some(entry(8, Some(b"later")))),
        (b"old", Some(entry(4, Some(b"first")))),
        (b"dead", Some(entry(5, None))),
    ];
    for (key, e) in &want {
        assert_eq!(&got.entry(key), e, "{}", String::from_utf8_lossy(key));
        assert_eq!(&engine.entry(key), e, "the live engine agrees");
    }
    assert_eq!((got.len(), engine.len()), (2, 2));
    // A snapshot of the recovered state says the same.
    {
        let (mut d, rec) = Durable::open(&dir.0, Fsync::Batch).unwrap();
        let mut e = Engine::default();
        d.replay(rec, &mut e);
        d.want_snapshot();
        d.turn_end(&e, &mut Vec::new());
        assert_eq!(d.stats().snapshots, 1);
    }
    let again = recovered(&dir.0);
    for (key, e) in &want {
        assert_eq!(&again.entry(key), e);
    }
}

#[test]
fn a_version_1_directory_is_rewritten_before_anything_is_logged() {
    let dir = TempDir::new("upgrade");
    {
        let (mut d, _) = Durable::open(&dir.0, Fsync::Batch).unwrap();
        d.log(b"k", 1, Some(b"v"));
        d.turn_end(&Engine::default(), &mut Vec::new());
    }
    // Make it what a version-1 build left: the same log, version 1.
    let log = dir.0.join("log-000001");
    let mut bytes = fs::read(&log).unwrap();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32fast::hash(&bytes[0..20]);
    bytes[20..24].copy_from_slice(&crc.to_le_bytes());
    fs::write(&log, &bytes).unwrap();
    let (mut d, rec) = Durable::open(&dir.0, Fsync::Batch).unwrap();
    let mut engine = Engine::default();
    d.replay(rec, &mut engine);
    assert_eq!(d.stats().snapshots, 1, "rewritten as a snapshot");
    assert!(!log.exists() && dir.0.join("snap-000002").exists());
    d.log_purge(b"k", 1);
    d.turn_end(&engine, &mut Vec::new());
    drop(d);
    assert_eq!(recovered(&dir.0).get(b"k").as_deref(), Some(&b"v"[..]));
}

pub(super) const NODE: &str = "127.0.0.1:7001";

/// A node on `dir` registered with a manager that gave it `ring` (id first).
pub(super) fn node(
    dir: &Path,
    ring: &str,
    cfg: impl FnOnce(&mut NodeConfig),
) -> (DurableNode, Vec<Output>) {
    let mut c = NodeConfig::new(NODE.into(), "127.0.0.1:7000".parse().unwrap());
    cfg(&mut c);
    let mut n = DurableNode::new(StorageNode::new(c));
    n.open_data_dir(dir, Fsync::Batch).unwrap();
    let mut out = Vec::new();
    let link = ConnId::new(1, 1);
    n.step(0, Input::Timer { id: 0 }, &mut out);
    n.test_link_up(1, link, 1, &mut out);
    let joined = Frame::new(op::JOINED, 0, 0, ring.to_string());
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
    (n, out)
}

pub(super) fn frame_in(n: &mut DurableNode, now: Millis, conn: ConnId, f: Frame) -> Vec<Output> {
    let mut out = Vec::new();
    n.step(now, Input::Frame { conn, frame: f }, &mut out);
    n.turn_end(now, &mut out);
    out
}

/// The one frame with op `op` sent on `conn`.
pub(super) fn sent(out: &[Output], conn: ConnId, op: u8) -> Frame {
    let found: Vec<&Frame> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send { conn: c, frame } if *c == conn && frame.op == op => Some(frame),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "one op {op} on {conn:?} in {out:?}");
    found[0].clone()
}

#[test]
fn a_collected_tombstone_stays_collected_after_a_restart() {
    let dir = TempDir::new("purge");
    let ring = format!("1\nepoch 2\nreplicas 1 1 1\nnode 1 {NODE} up 10,20\n");
    let (client, peer) = (ConnId::new(5, 1), ConnId::new(6, 1));
    {
        let (mut n, _) = node(&dir.0, &ring, |_| {});
        frame_in(&mut n, 3, client, Frame::new(op::PUT, 1, 0, &b"1 kv"[..]));
        frame_in(&mut n, 4, client, Frame::new(op::DELETE, 2, 0, &b"k"[..]));
        let version = n.engine().entry(b"k").expect("a tombstone").version;
        // A lead that confirmed it on every replica says PURGE.
        n.test_peer_joins(5, peer, "127.0.0.1:7002", &mut Vec::new());
        let mut payload = version.to_be_bytes().to_vec();
        payload.extend_from_slice(b"k");
        let out = frame_in(&mut n, 6, peer, Frame::new(op::PURGE, 0, 2, payload));
        assert_eq!(sent(&out, peer, op::OK).payload.len(), 0);
        assert_eq!(n.engine().entry(b"k"), None);
    }
    let (n, _) = node(&dir.0, &ring, |_| {});
    assert_eq!(n.engine().entry(b"k"), None, "the tombstone is not back");
}

#[test]
fn a_refused_conditional_write_is_never_stored_nor_back_after_a_restart() {
    let dir = TempDir::new("undo");
    // Node 1 (this one) holds every hash but 0, so it leads "k"; node
    // 2 is its replica.
    let ring = format!(
        "1\nepoch 2\nreplicas 2 2 2\nnode 1 {NODE} up {}\nnode 2 127.0.0.1:7002 up 0\n",
        u64::MAX
    );
    let (client, link) = (ConnId::new(5, 1), ConnId::new(7, 1));
    {
        let (mut n, out) = node(&dir.0, &ring, |_| {});
        let tag = out
            .iter()
            .find_map(|o| match o {
                Output::Connect { tag, .. } if *tag != 1 => Some(*tag),
                _ => None,
            })
            .expect("a connect to node 2");
        let mut out = Vec::new();
        n.test_link_up(3, link, tag, &mut out);
        // It restarted into a ring that lists it serving, so it is catching
        // up and would wait for a copy from node 2 beyond its own.
        n.end_catch_up();
        let out = frame_in(
            &mut n,
            4,
            client,
            Frame::new(op::CREATE, 1, 0, &b"1 kv"[..]),
        );
        let prepare = sent(&out, link, op::PREPARE);
        let mut promise = crate::protocol::cluster::Reply::Promise {
            committed: None,
            accepted: None,
        }
        .encode();
        promise.client_id = prepare.client_id;
        let out = frame_in(&mut n, 5, link, promise);
        let accept = sent(&out, link, op::ACCEPT);
        assert_eq!(n.engine().entry(b"k"), None, "a proposal is not data");
        // Node 2 promised a higher ballot: the CREATE is refused there.
        let newer = (1u64 << 40).to_string();
        let refusal = Frame::new(op::CONFLICT, accept.client_id, 2, newer);
        frame_in(&mut n, 6, link, refusal);
        assert_eq!(n.engine().entry(b"k"), None, "never stored");
    }
    let (n, _) = node(&dir.0, &ring, |_| {});
    assert_eq!(
        n.engine().entry(b"k"),
        None,
        "and not there after a restart"
    );
}

#[test]
fn replies_piling_up_behind_the_commit_yield_the_connection() {
    use crate::protocol::op;
    use crate::reactor::{Input, Service};
    use crate::storage::{NodeConfig, StorageNode};
    let dir = TempDir::new("yield");
    let cfg = NodeConfig::new("127.0.0.1:7001".into(), "127.0.0.1:7000".parse().unwrap());
    let client = ConnId::new(5, 1);
    let mut n = DurableNode::new(StorageNode::new(cfg));
    n.open_data_dir(&dir.0, Fsync::Batch).unwrap();
    // A node serves client requests only as a member.
    n.join_alone();
    let mut out = Vec::new();
    let ask = |n: &mut DurableNode, payload: Vec<u8>, op: u8, out: &mut Vec<Output>| {
        out.clear();
        let frame = Frame::new(op, 1, 0, payload);
        n.step(
            5,
            Input::Frame {
                conn: client,
                frame,
            },
            out,
        );
        out.iter()
            .any(|o| matches!(o, Output::Yield { conn } if *conn == client))
    };
    let mut big = b"1 b".to_vec();
    big.extend(vec![b'v'; 1 << 20]);
    assert!(!ask(&mut n, big, op::PUT, &mut out));
    n.turn_end(5, &mut out);
    // A write in this turn: every later reply waits for its commit.
    assert!(!ask(&mut n, b"1 x1".to_vec(), op::PUT, &mut out));
    let yields: Vec<bool> = (0..6)
        .map(|_| ask(&mut n, b"b".to_vec(), op::GET, &mut out))
        .collect();
    assert_eq!(yields, [false, false, false, false, true, true]);
    n.turn_end(5, &mut out);
    assert!(!ask(&mut n, b"b".to_vec(), op::GET, &mut out), "a new turn");
}
