//! What clients ask the manager: HELLO's client id and contact node, and the
//! STATUS JSON (documented in docs/protocol.md).
//!
//! HELLO hands out a fresh client id and a live contact node, round-robin over
//! the nodes that are `up`. STATUS reports the ring's settings, each node's
//! state, tokens, share of the hash space and last heartbeat figures,
//! `recovering_ms_left` (see [`super::recovery`]) and the moves in progress.

use super::{Manager, NodeRecord};
use crate::protocol::{Error, ErrorCode};
use crate::ring::NodeState;
use serde_json::json;
use std::collections::HashMap;

impl Manager {
    /// STATUS as JSON.
    pub fn status_json(&self) -> serde_json::Value {
        let ring = self.ring();
        let share: HashMap<u32, f64> = ring.ownership().into_iter().collect();
        let up: Vec<&NodeRecord> = (self.nodes.values())
            .filter(|n| n.entry.state == NodeState::Up)
            .collect();
        let total: u64 = self.nodes.values().map(|n| n.keys).sum();
        let max = up.iter().map(|n| n.keys).max().unwrap_or(0);
        let mean = if up.is_empty() {
            0.0
        } else {
            up.iter().map(|n| n.keys).sum::<u64>() as f64 / up.len() as f64
        };
        let nodes: Vec<serde_json::Value> = (self.nodes.values())
            .map(|n| {
                json!({
                    "id": n.entry.id,
                    "addr": n.entry.addr,
                    "state": n.entry.state.as_str(),
                    "token_count": n.entry.tokens.len(),
                    "tokens": n.entry.tokens,
                    "share": share.get(&n.entry.id).copied().unwrap_or(0.0),
                    "keys": n.keys,
                    "catching_up": n.catching_up,
                })
            })
            .collect();
        json!({
            "epoch": self.epoch,
            "replicas": self.cfg.replicas,
            "effective_replicas": (self.cfg.replicas as usize).min(up.len()),
            "read_quorum": self.cfg.read_quorum,
            "write_quorum": self.cfg.write_quorum,
            "live_nodes": up.len(),
            "total_keys": total,
            "max_over_mean_keys": if mean > 0.0 { max as f64 / mean } else { 0.0 },
            "recovering_ms_left": self.recovering_ms_left(),
            "moves": self.moves_json(&ring),
            "nodes": nodes,
        })
    }

    /// The moves in progress: whether the ring has any, and the serving nodes
    /// whose handoff for this epoch is not done yet.
    fn moves_json(&self, ring: &crate::ring::Ring) -> serde_json::Value {
        let pending = ring.has_moves();
        let waiting: Vec<u32> = (self.nodes.values())
            .filter(|_| pending)
            .filter(|n| matches!(n.entry.state, NodeState::Up | NodeState::Leaving))
            .filter(|n| !n.dropped)
            .filter(|n| self.handoff_done.get(&n.entry.id) != Some(&self.epoch))
            .map(|n| n.entry.id)
            .collect();
        json!({ "pending": pending, "waiting_for": waiting })
    }

    /// HELLO's answer: `CLIENTID SP NODEID SP HOST:PORT`, a fresh client id and
    /// the next live contact node.
    pub(super) fn hello(&mut self) -> Result<String, Error> {
        let Some((id, addr)) = self.next_contact() else {
            return Err(self
                .recovering_error()
                .unwrap_or_else(|| Error::new(ErrorCode::Unavailable, "no storage node is up")));
        };
        let client = self.next_client_id;
        self.next_client_id += 1;
        Ok(format!("{client} {id} {addr}"))
    }

    /// The next `up` node, round-robin.
    fn next_contact(&mut self) -> Option<(u32, String)> {
        let up: Vec<&NodeRecord> = (self.nodes.values())
            .filter(|n| n.entry.state == NodeState::Up)
            .collect();
        if up.is_empty() {
            return None;
        }
        let n = up[self.rr % up.len()];
        self.rr = self.rr.wrapping_add(1);
        Some((n.entry.id, n.entry.addr.clone()))
    }
}
