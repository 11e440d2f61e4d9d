//! `status`: the cluster as it is now, from the manager's membership and every
//! node's own figures.
//!
//! The manager knows the membership (ids, addresses, states, tokens, N/R/W) but
//! learns key counts from heartbeats, so its figures lag by up to a heartbeat
//! period, and a node that just restarted shows `0` keys until its first one. So
//! the client asks the manager for STATUS and, at the same time, asks every node
//! it lists for the node's own STATUS (docs/protocol.md), and merges them
//! ([`merge`]): each node's `keys`, `primary_keys` and `catching_up` are the node's
//! answer of a moment ago. A node that does not answer keeps the manager's figure
//! and is marked `"current": false`.
//!
//! The cluster's figures: `copies` (also `total_keys`) is the sum of the nodes'
//! live keys, every replica counted; `distinct_keys` is the sum of the keys each
//! node is the first replica of, which counts each key once when every node
//! answered from the same ring epoch and none is catching up or moving keys.
//! Otherwise `distinct_keys_estimate` is true and the table shows `~`.
//!
//! Without the manager (it cannot be reached, or it is recovering its membership
//! and lists no node yet), or when `--node` names nodes, the view comes from a
//! storage node instead: the first of the given (else remembered, see
//! [`super::cache`]) nodes that answers gives the ring as it sees it
//! ([`from_node_view`]), and every member of that ring is asked for its figures
//! as above. The JSON then says `"source": "node"` and names that node.

use super::cache;
use super::session::{CliError, Target};
use crate::client::{manager_call, node_status_as, ClientError};
use crate::protocol::{op, ErrorCode};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Longest wait for one node's STATUS (capped by `--timeout`): nodes are asked
/// at once, so this bounds the whole survey when a node is stuck.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// Each node's own STATUS (or why it gave none), by address.
pub type Replies = HashMap<String, Result<Value, String>>;

/// The nodes `--node` names (a comma-separated list).
pub fn given_nodes(target: &Target) -> Vec<String> {
    target
        .node
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_object(payload: &[u8], what: &str) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err(format!("{what} STATUS is not a JSON object")),
    }
}

fn ask_node(addr: &str, timeout: Duration, password: Option<&str>) -> Result<Value, String> {
    let payload =
        node_status_as(addr, timeout.min(NODE_TIMEOUT), password).map_err(|e| match e {
            ClientError::Io(e) => super::describe_io(&e),
            other => other.to_string(),
        })?;
    parse_object(&payload, "the node's")
}

/// Asks every address at once for its STATUS.
pub fn ask_nodes(addrs: &[String], timeout: Duration, password: Option<&str>) -> Replies {
    std::thread::scope(|s| {
        let asks: Vec<_> = addrs
            .iter()
            .map(|a| (a.clone(), s.spawn(move || ask_node(a, timeout, password))))
            .collect();
        asks.into_iter()
            .map(|(a, h)| {
                let r = h.join().unwrap_or_else(|_| Err("asking failed".into()));
                (a, r)
            })
            .collect()
    })
}

fn addrs_of(status: &Value) -> Vec<String> {
    status["nodes"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|n| n["addr"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The nodes' addresses, those `up` first (the order to try them in).
fn up_first(status: &Value) -> Vec<String> {
    let mut nodes: Vec<&Value> = status["nodes"].as_array().into_iter().flatten().collect();
    nodes.sort_by_key(|n| n["state"] != "up");
    nodes
        .iter()
        .filter_map(|n| n["addr"].as_str().map(str::to_string))
        .collect()
}

/// The manager's `recovering_ms_left` (0 when absent).
pub fn recovering_ms(status: &Value) -> u64 {
    status["recovering_ms_left"].as_u64().unwrap_or(0)
}

/// Runs `status`: see the module docs.
pub fn survey(target: &Target) -> Result<Value, CliError> {
    let given = given_nodes(target);
    if !given.is_empty() {
        return node_survey(&given, target, Map::new());
    }
    let manager = &target.manager;
    let err = match manager_call(manager, op::STATUS, target.timeout) {
        Ok(payload) => {
            let status = parse_object(&payload, "the manager's").map_err(CliError::Protocol)?;
            let addrs = addrs_of(&status);
            if !addrs.is_empty() {
                cache::remember(manager, &up_first(&status));
                let replies = ask_nodes(&addrs, target.timeout, target.password.as_deref());
                return Ok(merge(status, &replies));
            }
            let recovering = recovering_ms(&status);
            if recovering == 0 {
                return Ok(merge(status, &Replies::new()));
            }
            // Recovering, no member known yet: the nodes still know the ring.
            let mut note = Map::new();
            note.insert("recovering_ms_left".into(), recovering.into());
            return node_survey(&cache::recall(manager), target, note)
                .or_else(|_| Ok(merge(status, &Replies::new())));
        }
        Err(ClientError::Io(err)) => CliError::Unreachable {
            what: "manager".into(),
            addr: manager.clone(),
            err,
        },
        Err(ClientError::Server(e)) if e.code == ErrorCode::Unavailable => CliError::Server(e),
        Err(other) => return Err(CliError::Protocol(other.to_string())),
    };
    let remembered = cache::recall(manager);
    if remembered.is_empty() {
        return Err(err);
    }
    let mut note = Map::new();
    note.insert("manager".into(), manager.clone().into());
    note.insert("manager_error".into(), err.to_string().into());
    node_survey(&remembered, target, note).map_err(|e| CliError::Other(format!("{err}; {e}")))
}

/// The view of the first of `candidates` that answers, with every member's
/// figures; `note` is added to the top level.
fn node_survey(
    candidates: &[String],
    target: &Target,
    note: Map<String, Value>,
) -> Result<Value, CliError> {
    let (timeout, password) = (target.timeout, target.password.as_deref());
    let mut tried = Vec::new();
    for addr in candidates {
        match ask_node(addr, timeout, password) {
            Ok(view) => {
                let mut base = from_node_view(&view);
                for (k, v) in note {
                    base[k] = v;
                }
                let own = view["addr"].as_str().unwrap_or(addr).to_string();
                let others: Vec<String> =
                    addrs_of(&base).into_iter().filter(|a| *a != own).collect();
                let mut replies = ask_nodes(&others, timeout, password);
                replies.insert(own, Ok(view));
                return Ok(merge(base, &replies));
            }
            Err(e) => tried.push(format!("{addr}: {e}")),
        }
    }
    Err(CliError::Other(if tried.is_empty() {
        "no storage node is known to ask (give one with --node)".into()
    } else {
        format!("no storage node answered ({})", tried.join(", "))
    }))
}

/// A manager-shaped STATUS object from a node's own STATUS: its ring's members,
/// states, tokens and shares, and N/R/W.
pub fn from_node_view(view: &Value) -> Value {
    let mut nodes: Vec<Value> = view["nodes"].as_array().cloned().unwrap_or_default();
    if nodes.is_empty() {
        // A node with no ring yet: it is the only one it knows.
        nodes.push(json!({"id": view["node_id"], "addr": view["addr"], "state": "no ring"}));
    }
    let live = nodes.iter().filter(|n| n["state"] == "up").count();
    let replicas = view["replicas"].as_u64().unwrap_or(0);
    json!({
        "source": "node",
        "view_of": {"id": view["node_id"], "addr": view["addr"]},
        "epoch": view["epoch"],
        "replicas": view["replicas"],
        "effective_replicas": replicas.min(live as u64),
        "read_quorum": view["read_quorum"],
        "write_quorum": view["write_quorum"],
        "live_nodes": live,
        "nodes": nodes,
    })
}

/// Whether a node's answer says its figures may be off for the cluster's count.
fn unsettled(reply: &Value, epoch: &Value) -> bool {
    &reply["epoch"] != epoch
        || reply["ring_received"] == false
        || reply["catching_up"] == true
        || reply["moving"] == true
        || reply["leaving"] == true
        || !reply["primary_keys"].is_u64()
}

/// Puts each node's own figures (`replies`, by address) into a manager-shaped
/// STATUS object and adds the cluster's `copies`, `distinct_keys` and
/// `distinct_keys_estimate` (see the module docs).
pub fn merge(mut status: Value, replies: &Replies) -> Value {
    let epoch = status["epoch"].clone();
    let (mut copies, mut distinct, mut exact) = (0u64, 0u64, true);
    let mut up_keys = Vec::new();
    if let Some(nodes) = status["nodes"].as_array_mut() {
        for n in nodes.iter_mut() {
            let addr = n["addr"].as_str().unwrap_or("").to_string();
            let down = n["state"] == "down";
            match replies.get(&addr) {
                Some(Ok(r)) => {
                    let fields = [
                        "keys",
                        "primary_keys",
                        "catching_up",
                        "ring_received",
                        "moving",
                        "leaving",
                        "anti_entropy",
                    ];
                    for field in fields {
                        if let Some(v) = r.get(field) {
                            n[field] = v.clone();
                        }
                    }
                    n["node_epoch"] = r["epoch"].clone();
                    n["current"] = true.into();
                    exact &= !unsettled(r, &epoch);
                    distinct += r["primary_keys"].as_u64().unwrap_or(0);
                }
                Some(Err(e)) => {
                    n["current"] = false.into();
                    n["error"] = e.clone().into();
                    exact = false;
                }
                None => {
                    n["current"] = false.into();
                    exact &= down && n["share"].as_f64().unwrap_or(0.0) == 0.0;
                }
            }
            let keys = n["keys"].as_u64().unwrap_or(0);
            copies += keys;
            if n["state"] == "up" {
                up_keys.push(keys);
            }
        }
    }
    let mean = up_keys.iter().sum::<u64>() as f64 / up_keys.len().max(1) as f64;
    let max = up_keys.iter().copied().max().unwrap_or(0) as f64;
    status["max_over_mean_keys"] = (if mean > 0.0 { max / mean } else { 0.0 }).into();
    status["total_keys"] = copies.into();
    status["copies"] = copies.into();
    status["distinct_keys"] = distinct.into();
    status["distinct_keys_estimate"] = (!exact).into();
    if status.get("source").is_none() {
        status["source"] = "manager".into();
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager_status() -> Value {
        json!({"epoch": 5, "replicas": 2, "read_quorum": 1, "write_quorum": 2,
            "live_nodes": 2, "total_keys": 4, "nodes": [
            {"id": 1, "addr": "a:1", "state": "up", "share": 0.5, "keys": 4,
             "catching_up": false},
            {"id": 2, "addr": "a:2", "state": "up", "share": 0.5, "keys": 0,
             "catching_up": false}]})
    }

    fn node(epoch: u64, keys: u64, primary: u64, catching_up: bool) -> Result<Value, String> {
        Ok(
            json!({"epoch": epoch, "keys": keys, "primary_keys": primary,
            "catching_up": catching_up, "moving": false, "leaving": false}),
        )
    }

    #[test]
    fn node_figures_replace_heartbeat_figures() {
        let replies: Replies = [
            ("a:1".to_string(), node(5, 6, 2, false)),
            ("a:2".to_string(), node(5, 6, 4, false)),
        ]
        .into();
        let v = merge(manager_status(), &replies);
        assert_eq!(v["copies"], 12);
        assert_eq!(v["total_keys"], 12);
        assert_eq!(v["distinct_keys"], 6);
        assert_eq!(v["distinct_keys_estimate"], false);
        assert_eq!(v["source"], "manager");
        assert_eq!(v["nodes"][1]["keys"], 6);
        assert_eq!(v["nodes"][1]["current"], true);
        assert_eq!(v["max_over_mean_keys"], 1.0);
    }

    #[test]
    fn anything_unsettled_makes_distinct_an_estimate() {
        let cases: [Replies; 4] = [
            [
                ("a:1".to_string(), node(5, 6, 2, false)),
                ("a:2".to_string(), node(5, 0, 0, true)),
            ]
            .into(),
            [
                ("a:1".to_string(), node(5, 6, 2, false)),
                ("a:2".to_string(), node(4, 6, 4, false)),
            ]
            .into(),
            [
                ("a:1".to_string(), node(5, 6, 2, false)),
                ("a:2".to_string(), Err("connection refused".into())),
            ]
            .into(),
            [("a:1".to_string(), node(5, 6, 2, false))].into(),
        ];
        for replies in cases {
            let v = merge(manager_status(), &replies);
            assert_eq!(v["distinct_keys_estimate"], true, "{replies:?}");
        }
        let replies: Replies = [
            ("a:1".to_string(), node(5, 6, 2, false)),
            ("a:2".to_string(), Err("connection refused".into())),
        ]
        .into();
        let v = merge(manager_status(), &replies);
        // The silent node keeps the manager's figure, marked as not current.
        assert_eq!(v["nodes"][1]["current"], false);
        assert_eq!(v["nodes"][1]["error"], "connection refused");
        assert_eq!(v["copies"], 6);
    }

    #[test]
    fn a_node_view_becomes_a_status() {
        let view = json!({"node_id": 2, "addr": "a:2", "epoch": 9, "replicas": 3,
            "read_quorum": 2, "write_quorum": 2, "keys": 3, "primary_keys": 1,
            "catching_up": false, "moving": false, "leaving": false,
            "nodes": [{"id": 1, "addr": "a:1", "state": "down", "token_count": 4,
                       "share": 0.5},
                      {"id": 2, "addr": "a:2", "state": "up", "token_count": 4,
                       "share": 0.5}]});
        let base = from_node_view(&view);
        assert_eq!(base["source"], "node");
        assert_eq!(base["view_of"]["id"], 2);
        assert_eq!(base["live_nodes"], 1);
        assert_eq!(base["effective_replicas"], 1);
        let replies: Replies = [("a:2".to_string(), Ok(view))].into();
        let v = merge(base, &replies);
        assert_eq!(v["source"], "node");
        assert_eq!(v["copies"], 3);
        assert_eq!(v["distinct_keys_estimate"], true, "node 1 is down");
        let lonely = from_node_view(&json!({"node_id": 0, "addr": "a:9", "nodes": []}));
        assert_eq!(lonely["nodes"][0]["addr"], "a:9");
    }

    #[test]
    fn up_nodes_are_remembered_first() {
        let v = json!({"nodes": [{"addr": "a:1", "state": "down"},
            {"addr": "a:2", "state": "up"}, {"addr": "a:3", "state": "joining"},
            {"addr": "a:4", "state": "up"}]});
        assert_eq!(up_first(&v), ["a:2", "a:4", "a:1", "a:3"]);
    }

    #[test]
    fn node_lists_split_on_commas() {
        let t = |node: Option<&str>| Target {
            manager: "m:1".into(),
            node: node.map(str::to_string),
            timeout: Duration::from_secs(1),
            password: None,
        };
        assert!(given_nodes(&t(None)).is_empty());
        assert_eq!(given_nodes(&t(Some("a:1"))), ["a:1"]);
        assert_eq!(given_nodes(&t(Some(" a:1, b:2,,"))), ["a:1", "b:2"]);
    }
}
