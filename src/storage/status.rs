//! A storage node's answer to `STATUS` (op 32): its own view of the cluster, as of
//! the moment it is asked.
//!
//! The manager's STATUS is built from heartbeats, so its key counts lag by up to a
//! heartbeat period, and it says nothing while the manager is down. A node's STATUS
//! is the node's state right now: its id, the ring epoch it routes by, the ring's
//! members and states as it sees them, how many live keys it holds (`keys`: every
//! copy it keeps), how many of those it is the first replica of by the serving
//! ring (`primary_keys`: summed over the nodes of a ring they all agree on, each key
//! counts once), and whether it has received a ring yet (a restarted node that
//! has not may lack writes), is catching up, moving keys or leaving. The client
//! (`gtstore status`) asks every node for this and merges the answers with the
//! manager's membership; the JSON is described in docs/protocol.md.
//!
//! The node builds it from [`Facts`], borrowed from its state by a few lines in
//! `node.rs`, so this file is the only place that knows the reply's shape.
//!
//! Caveat: `primary_keys` hashes every key the node holds, so a STATUS costs time
//! in proportion to the node's keys (a memory access and a hash each: of the order
//! of 0.1 s per million keys), paid by the node's one thread. STATUS is for people
//! and tools, not for the data path.

use super::engine::Engine;
use crate::ring::{hash64, PrefTable, Ring};
use bytes::Bytes;
use serde_json::json;

/// What a node's STATUS reply is built from, borrowed from the node.
pub struct Facts<'a> {
    /// The node's id (0 before it registered).
    pub node_id: u32,
    /// The address it advertises.
    pub addr: &'a str,
    /// The last ring it installed.
    pub ring: &'a Ring,
    /// Preference lists of the ring as requests are routed now.
    pub serving: &'a PrefTable,
    /// Its data.
    pub engine: &'a Engine,
    /// It may lack writes and is asking its peers for them.
    pub catching_up: bool,
    /// This process has installed a ring from the manager. Until then a
    /// restarted node cannot know what it missed (it catches up once it has one).
    pub ring_received: bool,
    /// It is handing keys over to other nodes.
    pub moving: bool,
    /// It got SIGTERM and is leaving the ring.
    pub leaving: bool,
    /// Its link to the manager is up.
    pub manager_link: bool,
    /// How long its lease from the manager runs on (0: it has none, so it
    /// serves no data).
    pub lease_ms: u64,
    /// Peers whose push it still waits for: it restarted without its data
    /// and its catch-up went without them, so it is behind on the keys it
    /// shares with them.
    pub awaiting_peers: Vec<u32>,
    /// Anti-entropy's figures (built by the node: rate, counters, per range).
    pub anti_entropy: serde_json::Value,
}

/// Live keys this node is the first replica of by `serving` (every live key when
/// the node has no id or no ring yet: it then serves every key itself).
pub fn primary_keys(node_id: u32, serving: &PrefTable, engine: &Engine) -> usize {
    if node_id == 0 || serving.bounds().is_empty() {
        return engine.len();
    }
    let mut count = 0;
    for token in engine.tokens() {
        let Some(sector) = engine.sector_of_token(token) else {
            continue;
        };
        count += sector
            .iter()
            .filter(|e| e.value.is_some())
            .filter(|e| serving.get(hash64(e.key)).first() == Some(&node_id))
            .count();
    }
    count
}

/// The STATUS reply's JSON.
pub fn status_json(f: &Facts<'_>) -> serde_json::Value {
    let shares = f.ring.ownership();
    let share = |id: u32| {
        shares
            .iter()
            .find(|(n, _)| *n == id)
            .map_or(0.0, |(_, s)| *s)
    };
    let nodes: Vec<serde_json::Value> = f
        .ring
        .nodes()
        .iter()
        .map(|n| {
            json!({
                "id": n.id,
                "addr": n.addr,
                "state": n.state.as_str(),
                "token_count": n.tokens.len(),
                "share": share(n.id),
            })
        })
        .collect();
    json!({
        "node_id": f.node_id,
        "addr": f.addr,
        "epoch": f.ring.epoch,
        "replicas": f.ring.replicas,
        "read_quorum": f.ring.read_quorum,
        "write_quorum": f.ring.write_quorum,
        "keys": f.engine.len(),
        "primary_keys": primary_keys(f.node_id, f.serving, f.engine),
        "catching_up": f.catching_up,
        "ring_received": f.ring_received,
        "moving": f.moving || f.ring.has_moves(),
        "leaving": f.leaving,
        "manager_link": f.manager_link,
        "lease_ms": f.lease_ms,
        "awaiting_peers": f.awaiting_peers,
        "anti_entropy": f.anti_entropy,
        "nodes": nodes,
    })
}

/// The STATUS reply's payload.
pub fn reply(f: &Facts<'_>) -> Bytes {
    Bytes::from(status_json(f).to_string())
}

/// Most keys a STATUS with the payload `keys` lists (`gtstore status --keys`).
pub const HELD_KEYS_MAX: usize = 1_000;

/// The STATUS reply's payload when asked for `keys`: the JSON of [`reply`]
/// with `held_keys`, the node's first [`HELD_KEYS_MAX`] live keys in byte
/// order (each byte as the character of that code point, so every key is a
/// JSON string and its bytes come back exactly), and `held_keys_capped`,
/// whether it holds more.
pub fn reply_with_keys(f: &Facts<'_>) -> Bytes {
    let mut keys: Vec<&[u8]> = (f.engine.tokens())
        .filter_map(|t| f.engine.sector_of_token(t))
        .flat_map(|s| s.iter())
        .filter(|e| e.value.is_some())
        .map(|e| e.key)
        .collect();
    let capped = keys.len() > HELD_KEYS_MAX;
    if capped {
        keys.select_nth_unstable(HELD_KEYS_MAX);
        keys.truncate(HELD_KEYS_MAX);
    }
    keys.sort_unstable();
    let held: Vec<String> = (keys.iter())
        .map(|k| k.iter().map(|&b| char::from(b)).collect())
        .collect();
    let mut v = status_json(f);
    v["held_keys"] = json!(held);
    v["held_keys_capped"] = json!(capped);
    Bytes::from(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{NodeEntry, NodeState};

    fn ring() -> Ring {
        let node = |id: u32, tokens: Vec<u64>| NodeEntry {
            id,
            addr: format!("127.0.0.1:700{id}"),
            state: NodeState::Up,
            tokens,
        };
        let third = u64::MAX / 3;
        Ring::new(
            4,
            2,
            1,
            2,
            vec![
                node(1, vec![third]),
                node(2, vec![2 * third]),
                node(3, vec![u64::MAX]),
            ],
        )
    }

    /// An engine holding `keys` live keys and one tombstone.
    fn engine(keys: usize) -> Engine {
        let mut e = Engine::default();
        for i in 0..keys {
            e.apply(format!("k{i}").as_bytes(), i as u64 + 1, Some(b"v"), None);
        }
        e.apply(b"gone", 1, None, None);
        e
    }

    #[test]
    fn every_key_counts_once_across_the_nodes() {
        let ring = ring();
        let pref = ring.pref_table(2);
        let e = engine(300);
        assert_eq!(e.len(), 300);
        // The same keys on every node: each is primary on exactly one of them.
        let total: usize = [1, 2, 3]
            .iter()
            .map(|&id| primary_keys(id, &pref, &e))
            .sum();
        assert_eq!(total, 300);
        assert!((1..=3).all(|id| primary_keys(id, &pref, &e) < 300));
        // Without an id or a ring a node counts every live key.
        assert_eq!(primary_keys(0, &pref, &e), 300);
        assert_eq!(primary_keys(2, &PrefTable::default(), &e), 300);
    }

    #[test]
    fn the_reply_describes_the_node_and_its_ring() {
        let ring = ring();
        let pref = ring.pref_table(2);
        let e = engine(10);
        let facts = Facts {
            node_id: 2,
            addr: "127.0.0.1:7002",
            ring: &ring,
            serving: &pref,
            engine: &e,
            catching_up: true,
            ring_received: true,
            moving: false,
            leaving: false,
            manager_link: false,
            lease_ms: 1_500,
            awaiting_peers: vec![3],
            anti_entropy: json!({"rate": 10}),
        };
        let v: serde_json::Value = serde_json::from_slice(&reply(&facts)).unwrap();
        assert_eq!(v["node_id"], 2);
        assert_eq!(v["addr"], "127.0.0.1:7002");
        assert_eq!(v["epoch"], 4);
        assert_eq!(v["replicas"], 2);
        assert_eq!(v["keys"], 10);
        assert_eq!(v["primary_keys"], primary_keys(2, &pref, &e));
        assert_eq!(v["catching_up"], true);
        assert_eq!(v["ring_received"], true);
        assert_eq!(v["moving"], false);
        assert_eq!(v["manager_link"], false);
        assert_eq!(v["lease_ms"], 1_500);
        assert_eq!(v["awaiting_peers"], json!([3]));
        assert_eq!(v["anti_entropy"]["rate"], 10);
        let nodes = v["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[2]["addr"], "127.0.0.1:7003");
        assert_eq!(nodes[2]["state"], "up");
        assert_eq!(nodes[2]["token_count"], 1);
        let share: f64 = nodes.iter().map(|n| n["share"].as_f64().unwrap()).sum();
        assert!((share - 1.0).abs() < 1e-9);
    }
}
