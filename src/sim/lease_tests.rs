//! The lease in the simulator: two of a key's three replicas, cut off from the
//! manager and the rest together with a client's lead, are dropped; the move
//! flips once their leases are over, and a client on the other side writes the
//! key. The cut-off side must not acknowledge writes of its own after that:
//! its lead would count a majority of the old list (the two cut-off nodes)
//! that the new list never meets, two decisions of one key.

use super::client::{Outcome, Request};
use super::cluster::{manager_addr, node_addr, Cluster, ClusterConfig, SIM_LEASE_MS};
use super::world::{ProcId, World};
use crate::protocol::op;
use crate::reactor::Millis;
use crate::ring::{hash64, NodeState};
use bytes::Bytes;

/// What the cut-off lead answered after the flip: a PUT and an UPDATE (a
/// conditional write, a Paxos round), and when the flip came after the cut.
struct Cut {
    put: Outcome,
    update: Outcome,
    flip_after: Millis,
}

/// Runs the scenario with nodes whose lease fence is `fence`.
fn cut_off_majority(fence: bool) -> Cut {
    let mut cfg = ClusterConfig::new(77);
    (
        cfg.manager.replicas,
        cfg.manager.read_quorum,
        cfg.manager.write_quorum,
    ) = (3, 2, 2);
    cfg.lease_fence = fence;
    let mut c = Cluster::new(cfg);
    for i in 1..=5 {
        c.start_node(i);
    }
    assert!(c.settle(30_000), "{:?}", c.unsettled());
    // A key and its list by node number: its lead `a`, then `b` and `k3`.
    let ring = c.ring();
    let prefs = ring.serving().pref_table(3);
    let number = |id: u32| {
        c.number_at(&ring.node(id).expect("listed").addr)
            .expect("a node")
    };
    let key = Bytes::from_static(b"fenced");
    let list: Vec<usize> = prefs
        .get(hash64(&key))
        .iter()
        .map(|&id| number(id))
        .collect();
    let (a, b, third) = (list[0], list[1], list[2]);
    let x = c.add_client(node_addr(a));
    let y = c.add_client(node_addr(third));
    let m = c.manager_client();
    let ask = |c: &mut Cluster, client, request| {
        c.world.client_start(client, request, key.clone());
        let done = |w: &World| w.client(client).is_some_and(|cl| !cl.busy());
        assert!(c.world.run_while(20_000, done), "no answer");
        let cl = c.world.client(client).expect("clients never crash");
        cl.last().expect("just asked").outcome.clone()
    };
    let put = |v: &str| Request::Put(Bytes::from(v.to_string()));
    assert_eq!(ask(&mut c, x, put("v0")), Outcome::Ok);
    // Cut a, b and client x off from the manager and the rest (links stay
    // open: no reset); the manager marks a and b down, and the operator
    // drops both.
    let cut_at = c.world.now();
    let (pa, pb) = (c.nodes[&a], c.nodes[&b]);
    let rest: Vec<_> = (c.nodes.iter())
        .filter(|(&i, _)| i != a && i != b)
        .map(|(_, &p)| p)
        .chain([c.manager, y, m])
        .collect();
    c.world.partition(&[vec![pa, pb, x], rest], None);
    let manager = c.manager;
    let both = |state: Option<NodeState>| {
        move |w: &World| [a, b].iter().all(|&i| state_of(w, manager, i) == state)
    };
    assert!(c.world.run_while(10_000, both(Some(NodeState::Down))));
    for i in [a, b] {
        let addr = node_addr(i).to_string();
        let got = c.call(
            manager_addr(),
            Request::Other(op::DROP),
            addr.as_bytes(),
            5_000,
        );
        assert_eq!(got, Outcome::Ok, "DROP of node {i}");
    }
    // The move flips once their leases are over: a and b leave the ring.
    assert!(c.world.run_while(30_000, both(None)), "no flip");
    let flip_after = c.world.now() - cut_at;
    // The other side writes the key: its new list has neither a nor b.
    assert_eq!(ask(&mut c, y, put("new")), Outcome::Ok);
    // The cut-off lead, by its old ring, with b: a majority of the old list.
    let put = ask(&mut c, x, put("old"));
    let update = ask(&mut c, x, Request::Update(Bytes::from_static(b"old2")));
    Cut {
        put,
        update,
        flip_after,
    }
}

/// Node `i`'s state in the manager's ring (`None`: not in it).
fn state_of(w: &World, manager: ProcId, i: usize) -> Option<NodeState> {
    let addr = node_addr(i).to_string();
    let ring = w.manager(manager)?.ring();
    let n = ring.nodes().iter().find(|n| n.addr == addr)?;
    Some(n.state)
}

/// Whether `o` is the refusal of a node whose lease ran out.
fn lease_refusal(o: &Outcome) -> bool {
    matches!(o, Outcome::Err(e) if e.starts_with("UNAVAILABLE") && e.contains("lease"))
}

#[test]
fn a_cut_off_majority_of_a_key_stops_deciding_it_once_its_lease_is_over() {
    let cut = cut_off_majority(true);
    // The last lease was granted at most one heartbeat before the cut.
    let earliest = SIM_LEASE_MS - crate::storage::HEARTBEAT_MS;
    assert!(
        cut.flip_after > earliest,
        "flipped {} ms after",
        cut.flip_after
    );
    assert!(lease_refusal(&cut.put), "{}", cut.put);
    assert!(lease_refusal(&cut.update), "{}", cut.update);
}

/// The same run without the fence: the cut-off side acknowledges writes the
/// other side never sees (what the test above would see if the fence broke).
#[test]
fn without_the_fence_the_cut_off_majority_decides_the_key_too() {
    let cut = cut_off_majority(false);
    assert_eq!((cut.put, cut.update), (Outcome::Ok, Outcome::Ok));
}
