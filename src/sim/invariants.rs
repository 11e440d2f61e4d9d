//! The invariants a simulated cluster must keep, checked after load and faults
//! (see [`super::chaos`]) and by the scenario scripts:
//!
//! - [`check_copies`] (the repair invariant): every key any node holds has the
//!   newest entry on each of the N nodes of its preference list. Checked on the
//!   engines before any read, so read repair cannot mask a replica left behind;
//! - [`check_no_hangs`]: no request went unanswered past the client's timeout:
//!   each got a reply or failed when its own connection broke;
//! - [`check_history`] (no acknowledged write lost, linearizability): every
//!   key's history of reads and writes is linearizable. It includes a final
//!   read of every key from every node ([`read_everywhere`]), so an
//!   acknowledged write that was lost shows up as a stale read.
//!
//! [`caught_up`] is an oracle (it reads every engine) that tells when a
//! restarted node holds everything it should again; the nodes cannot know it.

use super::client::{Outcome, Record, Request};
use super::cluster::{node_addr, Cluster};
use super::linearizability::{self, Limits, Verdict};
use super::world::{ProcId, ProcState};
use crate::ring::{hash64, NodeState};
use crate::storage::engine::Entry;
use crate::storage::StorageNode;
use bytes::Bytes;

/// Reads every key in `keys` from every node that serves, recording the reads in
/// the history (one fresh client per node). Returns the outcomes, by node.
pub fn read_everywhere(c: &mut Cluster, keys: &[Bytes]) -> Vec<(usize, Bytes, Outcome)> {
    let ring = c.ring();
    let mut got = Vec::new();
    for i in c.live_nodes() {
        let serves = ring
            .nodes()
            .iter()
            .any(|n| n.addr == node_addr(i).to_string() && n.state == NodeState::Up);
        if !serves {
            continue;
        }
        for k in keys {
            let o = c.call(node_addr(i), Request::Get, k, 20_000);
            got.push((i, k.clone(), o));
        }
    }
    got
}

/// Checks that the history is linearizable; `Err` explains why not.
pub fn check_history(history: &[Record]) -> Result<(), String> {
    match linearizability::check(history, Limits::default()) {
        Verdict::Linearizable => Ok(()),
        Verdict::Violation { key, history } => Err(format!(
            "key {} is not linearizable:\n{history}",
            String::from_utf8_lossy(&key)
        )),
        Verdict::TooLong { key, ops } => Err(format!(
            "key {} ({ops} ops) is too long to check",
            String::from_utf8_lossy(&key)
        )),
    }
}

/// Checks the repair invariant: every key that any live node holds has, on each
/// node of its preference list (`copies` nodes of the manager's ring), the
/// newest entry any node holds (same version, same value; a node with no entry
/// at all counts when the newest entry is a tombstone). Run it after the faults
/// healed and before anything reads, so that read repair cannot mask a replica
/// that resync left behind.
pub fn check_copies(c: &Cluster, keys: &[Bytes], copies: usize) -> Result<(), String> {
    let ring = c.ring().settled();
    let live: Vec<(usize, &StorageNode)> = c
        .nodes
        .iter()
        .filter_map(|(&i, &p)| c.world.node(p).map(|n| (i, n)))
        .collect();
    for key in keys {
        let newest = live
            .iter()
            .filter_map(|(_, n)| n.engine().entry(key))
            .max_by_key(|e| e.version);
        let Some(newest) = newest else {
            continue;
        };
        let mut lacking = Vec::new();
        for id in ring.preference_list(hash64(key), copies) {
            let number = ring.node(id).and_then(|n| c.number_at(&n.addr));
            let node = number.and_then(|i| live.iter().find(|(j, _)| *j == i));
            let entry = node.and_then(|(_, n)| n.engine().entry(key));
            let fresh = match &entry {
                Some(e) => *e == newest,
                None => node.is_some() && newest.value.is_none(),
            };
            if !fresh {
                let seen = entry.as_ref().map_or("nothing".to_string(), describe);
                lacking.push(format!("n{} holds {seen}", number.unwrap_or(0)));
            }
        }
        if !lacking.is_empty() {
            return Err(format!(
                "key {} is not on its {copies} replicas: the newest is {}, but {}",
                String::from_utf8_lossy(key),
                describe(&newest),
                lacking.join(", ")
            ));
        }
    }
    Ok(())
}

/// `v7 "c1-3"` or `v9 deleted`.
fn describe(e: &Entry) -> String {
    match &e.value {
        Some(v) => format!("v{} {:?}", e.version, String::from_utf8_lossy(v)),
        None => format!("v{} deleted", e.version),
    }
}

/// Whether storage process `p` holds its share of the data again after a
/// restart: it is up in the manager's ring, runs on the manager's epoch, and for
/// every key of `keys` whose preference list (of `copies`) names it, it holds an
/// entry at least as new as every other live replica's. This is the simulator's
/// view (it reads every engine), used only to pace crashes; the nodes
/// themselves cannot know it.
pub fn caught_up(c: &Cluster, p: ProcId, keys: &[Bytes], copies: usize) -> bool {
    match c.world.proc(p).state {
        ProcState::Exited => return true,
        ProcState::Crashed => return false,
        ProcState::Up | ProcState::Paused => {}
    }
    let Some(node) = c.world.node(p) else {
        return false;
    };
    let ring = c.ring();
    let id = node.node_id();
    let up = ring.node(id).is_some_and(|e| e.state == NodeState::Up);
    if id == 0 || !up || node.ring().epoch != ring.epoch {
        return false;
    }
    let serving = ring.serving();
    let version_at = |q: u32| {
        let n = ring.node(q).and_then(|e| c.number_at(&e.addr))?;
        c.world.node(c.nodes[&n])
    };
    keys.iter().all(|key| {
        let prefs = serving.preference_list(hash64(key), copies);
        if !prefs.contains(&id) {
            return true;
        }
        let mine = node.engine().version(key);
        prefs
            .iter()
            .filter(|&&q| q != id)
            .filter_map(|&q| version_at(q))
            .all(|other| other.engine().version(key) <= mine)
    })
}

/// Checks that no request waited out the client's whole timeout: each one was
/// answered, or failed when its connection broke.
pub fn check_no_hangs(history: &[Record]) -> Result<(), String> {
    let timeout = super::cluster::CLIENT_TIMEOUT_MS;
    for r in history {
        if let (Outcome::NoReply, Some(done)) = (&r.outcome, r.completed) {
            if done.0 >= r.invoked.0 + timeout {
                return Err(format!("a request hung for {timeout} ms: {r:?}"));
            }
        }
    }
    Ok(())
}
