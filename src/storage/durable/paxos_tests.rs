//! The Paxos acceptor's promises and accepted proposals in the data
//! directory: held replies, and a restart (through a snapshot too) that keeps
//! them.

use super::change_tests::{frame_in, node, NODE};
use super::tests::TempDir;
use crate::protocol::cluster::{Message, Record, Reply, View};
use crate::protocol::Frame;
use crate::reactor::{ConnId, Input, Millis, Output, Service};
use crate::storage::durable::DurableNode;
use bytes::Bytes;

/// This node's wall clock at its first life's time 0, in ms.
const BASE: u64 = 1_000_000;

/// A ballot from a clock reading `ms`.
fn ballot(ms: u64) -> u64 {
    ms << 16
}

/// Node 2 of a two-node ring (N = 2: both hold every key) on `peer`.
const PEER: ConnId = ConnId::new(6, 1);

/// Node 1 on `dir`, started at wall clock `base`, with node 2 linked and
/// nothing left to catch up.
fn replica(dir: &std::path::Path, base: u64) -> DurableNode {
    let ring = format!(
        "1\nepoch 2\nreplicas 2 2 2\nnode 1 {NODE} up {}\nnode 2 127.0.0.1:7002 up 0\n",
        u64::MAX
    );
    let (mut n, _) = node(dir, &ring, |c| c.clock_base_ms = base);
    n.test_peer_joins(3, PEER, "127.0.0.1:7002", &mut Vec::new());
    n.end_catch_up();
    n
}

fn key() -> Bytes {
    Bytes::from_static(b"k")
}

/// Node 2's `PREPARE` of the key at `ballot`.
fn prepare(ballot: u64) -> Message {
    Message::Prepare {
        ballot,
        view: view(),
        key: key(),
    }
}

/// The key's lists by the replica's ring (epoch 2, nodes 1 and 2).
fn view() -> View {
    View {
        epoch: 2,
        serving: vec![1, 2],
        settled: vec![1, 2],
    }
}

/// Node 2's `message` (a request with client id 9), and node 1's answer.
fn ask(n: &mut DurableNode, now: Millis, message: Message) -> Reply {
    let mut f = message.encode();
    f.client_id = 9;
    f.node_id = 2;
    let out = frame_in(n, now, PEER, f);
    let answers: Vec<&Frame> = (out.iter())
        .filter_map(|o| match o {
            Output::Send { conn, frame } if *conn == PEER => Some(frame),
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 1, "one answer in {out:?}");
    Reply::decode(answers[0]).unwrap()
}

/// A node with a data directory promises ballot `high` (a proposer whose
/// clock runs 20 s ahead) and accepts a proposal at it; it crashes and
/// restarts a second later (after a snapshot if `snapshot`). A proposer with
/// a right clock then prepares a lower ballot, made after the restart: a
/// node that forgot its promise would take it (its restart rule refuses only
/// ballots from before it started), and could let a second value be chosen.
fn a_restarted_replica_keeps_its_promise(snapshot: bool) {
    let dir = TempDir::new(if snapshot { "paxos-snap" } else { "paxos" });
    let high = ballot(BASE + 20_000);
    let proposal = Record {
        key: key(),
        version: high,
        value: Some(Bytes::from_static(b"x")),
    };
    {
        let mut n = replica(&dir.0, BASE);
        // The promise is held until its record is committed.
        let mut f = prepare(high).encode();
        f.client_id = 8;
        let mut out = Vec::new();
        n.step(
            4,
            Input::Frame {
                conn: PEER,
                frame: f,
            },
            &mut out,
        );
        let replied = |out: &[Output]| {
            (out.iter()).any(|o| matches!(o, Output::Send { conn, .. } if *conn == PEER))
        };
        assert!(!replied(&out), "held: {out:?}");
        n.turn_end(4, &mut out);
        assert!(replied(&out), "released after the commit: {out:?}");
        let accepted = ask(
            &mut n,
            5,
            Message::Accept {
                record: proposal.clone(),
                view: Some(view()),
            },
        );
        assert_eq!(accepted, Reply::Ok);
        assert_eq!(n.engine().entry(b"k"), None, "a proposal is not data");
        if snapshot {
            n.durable_mut().unwrap().want_snapshot();
            n.turn_end(6, &mut Vec::new());
            assert_eq!(n.durable_mut().unwrap().stats().snapshots, 1);
        }
    }
    // Started again a second later.
    let mut n = replica(&dir.0, BASE + 1_000);
    let low = ballot(BASE + 5_000);
    let got = ask(&mut n, 10, prepare(low));
    assert_eq!(got, Reply::Conflict { version: high }, "the promise holds");
    // A higher ballot finds the accepted proposal.
    let higher = ballot(BASE + 25_000);
    let got = ask(&mut n, 11, prepare(higher));
    let want = Reply::Promise {
        committed: None,
        accepted: Some(proposal),
    };
    assert_eq!(got, want);
}

#[test]
fn a_restarted_replica_refuses_a_ballot_below_its_promise_and_reports_its_proposal() {
    a_restarted_replica_keeps_its_promise(false);
}

#[test]
fn promises_and_proposals_survive_a_snapshot() {
    a_restarted_replica_keeps_its_promise(true);
}

/// A committed version covers a slot: it is not put back after a restart,
/// and the log's records of it do not outlive it.
#[test]
fn a_committed_proposal_ends_its_slot_across_a_restart() {
    let dir = TempDir::new("paxos-commit");
    let b = ballot(BASE + 100);
    {
        let mut n = replica(&dir.0, BASE);
        ask(&mut n, 4, prepare(b));
        let record = Record {
            key: key(),
            version: b,
            value: Some(Bytes::from_static(b"x")),
        };
        assert_eq!(
            ask(
                &mut n,
                5,
                Message::Accept {
                    record: record.clone(),
                    view: Some(view()),
                }
            ),
            Reply::Ok
        );
        let commit = Message::Replicate {
            base: None,
            fence: None,
            record,
        };
        assert_eq!(ask(&mut n, 6, commit), Reply::Ok);
    }
    let mut n = replica(&dir.0, BASE + 1_000);
    let next = ballot(BASE + 1_500);
    let got = ask(&mut n, 10, prepare(next));
    let Reply::Promise {
        committed,
        accepted,
    } = got
    else {
        panic!("{got:?}")
    };
    assert_eq!(committed.map(|r| r.version), Some(b));
    assert_eq!(accepted, None, "the commit ended the slot");
}
