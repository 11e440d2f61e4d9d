//! Unit tests of N = 1 moves across ring changes: the write fence and the copy
//! of a write to a key's next owner.

use super::super::tests::{sent_on, step, up, with_manager};
use super::*;

/// The client connection of these tests.
const CLIENT: ConnId = ConnId::new(9, 1);

/// Node 1, registered with a ring where it owns everything (token `u64::MAX`),
/// holding `k = v1` for a key `k` whose hash lies in the middle of the ring;
/// returns the node, its manager link and the key's hash.
fn owner_of_everything() -> (StorageNode, ConnId, u64) {
    let (mut n, manager) = with_manager();
    let joined = format!("1\n{}", ring_text(4, &[]));
    let input = Input::Frame {
        conn: manager,
        frame: Frame::new(op::JOINED, 0, 0, joined),
    };
    step(&mut n, 2, input);
    n.end_catch_up();
    let out = client(&mut n, 3, op::PUT, "1 kv1");
    assert_eq!(sent_on(&out, CLIENT)[0].op, op::OK, "{out:?}");
    (n, manager, hash64(b"k"))
}

/// Ring text (N = 1): node 1 up with token `u64::MAX`, then `others` as
/// (id, state, token).
fn ring_text(epoch: u64, others: &[(u32, &str, u64)]) -> String {
    let mut text = format!(
        "epoch {epoch}\nreplicas 1 1 1\nnode 1 127.0.0.1:7001 up {}\n",
        u64::MAX
    );
    for (id, state, token) in others {
        text.push_str(&format!("node {id} 127.0.0.1:700{id} {state} {token}\n"));
    }
    text
}

fn ring_update(n: &mut StorageNode, now: Millis, manager: ConnId, text: String) -> Vec<Output> {
    let frame = Frame::new(op::RING_UPDATE, 0, 0, text);
    step(
        n,
        now,
        Input::Frame {
            conn: manager,
            frame,
        },
    )
}

/// A client request (`payload` as the native protocol has it for `o`).
fn client(n: &mut StorageNode, now: Millis, o: u8, payload: &str) -> Vec<Output> {
    let frame = Frame::new(o, 7, 0, payload.to_string());
    step(
        n,
        now,
        Input::Frame {
            conn: CLIENT,
            frame,
        },
    )
}

/// Peer `conn` answers `to` (a frame the node sent it) with `o`.
fn answer(n: &mut StorageNode, now: Millis, conn: ConnId, to: &Frame, o: u8) -> Vec<Output> {
    let frame = Frame::new(o, to.client_id, 2, Bytes::new());
    step(n, now, Input::Frame { conn, frame })
}

#[test]
fn the_fence_outlives_a_ring_change_that_keeps_the_next_owner() {
    let (mut n, manager, h) = owner_of_everything();
    // Node 2 joins and will own k; node 1 hands it over.
    let out = ring_update(&mut n, 10, manager, ring_text(5, &[(2, "joining", h + 10)]));
    assert!(out.iter().any(|o| matches!(o, Output::Connect { .. })));
    let link2 = ConnId::new(12, 1);
    let out = up(&mut n, 11, link2, mesh::PEER_TAG + 2);
    let chunk = sent_on(&out, link2)
        .into_iter()
        .find(|f| f.op == op::MIGRATE)
        .expect("the handoff's chunk");
    answer(&mut n, 12, link2, &chunk, op::OK);
    // Fenced: node 2 serves k now.
    let out = client(&mut n, 13, op::GET, "k");
    let get = sent_on(&out, link2);
    assert_eq!(get[0].op, op::GET, "{out:?}");
    let out = answer(&mut n, 13, link2, &get[0], op::NOT_FOUND);
    assert_eq!(sent_on(&out, CLIENT)[0].op, op::NOT_FOUND, "{out:?}");
    // Node 3 joins elsewhere: k's next owner is still node 2, and node 1's old
    // copy must not be served while the new handoff runs.
    ring_update(
        &mut n,
        14,
        manager,
        ring_text(6, &[(2, "joining", h + 10), (3, "joining", h / 2)]),
    );
    let out = client(&mut n, 15, op::GET, "k");
    assert!(sent_on(&out, CLIENT).is_empty(), "served here: {out:?}");
    assert_eq!(sent_on(&out, link2)[0].op, op::GET, "{out:?}");
}

#[test]
fn a_copy_taken_after_the_next_owner_changed_goes_to_the_new_one_first() {
    let (mut n, manager, h) = owner_of_everything();
    ring_update(&mut n, 10, manager, ring_text(5, &[(2, "joining", h + 10)]));
    let link2 = ConnId::new(12, 1);
    up(&mut n, 11, link2, mesh::PEER_TAG + 2);
    // A write while the move is pending: copied to node 2 first.
    let out = client(&mut n, 12, op::PUT, "1 kv2");
    let copy = sent_on(&out, link2)
        .into_iter()
        .find(|f| f.op == op::REPLICATE)
        .expect("the copy to the next owner");
    // Node 3 joins between k and node 2's token: k's next owner is node 3.
    let others = [(2, "joining", h + 10), (3, "joining", h + 5)];
    ring_update(&mut n, 13, manager, ring_text(6, &others));
    let link3 = ConnId::new(13, 1);
    up(&mut n, 14, link3, mesh::PEER_TAG + 3);
    // Node 2's acknowledgement comes now: node 3 gets the write before the
    // client hears OK (its handoff chunk may have carried k without it).
    let out = answer(&mut n, 15, link2, &copy, op::OK);
    assert!(sent_on(&out, CLIENT).is_empty(), "answered early: {out:?}");
    let again = sent_on(&out, link3)
        .into_iter()
        .find(|f| f.op == op::REPLICATE)
        .expect("the copy to the new next owner");
    let out = answer(&mut n, 16, link3, &again, op::OK);
    assert_eq!(sent_on(&out, CLIENT)[0].op, op::OK, "{out:?}");
    let entry = n.engine().entry(b"k").expect("applied here");
    assert_eq!(entry.value.as_deref(), Some(&b"v2"[..]));
}
