//! Scenario scripts: a small text language that drives a simulated cluster and
//! states what must hold, in the spirit of toydb's test scripts.
//!
//! One command per line; `#` starts a comment. Node numbers name storage nodes
//! (node `i` listens on `127.0.0.1:(7000 + i)`); `m` names the manager.
//!
//! | command | what it does |
//! |---|---|
//! | `seed S` | use seed `S` (before the first node; default 1) |
//! | `replicas N R W` | the manager's replication (before the first node; default 1 1 1) |
//! | `node 1..5` / `node 6` | start nodes (a range starts them 300 ms apart) |
//! | `run MS` | advance virtual time (background load keeps running) |
//! | `settle [MS]` | run until no join or leave is pending and every node has the manager's ring (default limit 60 s); fails if it does not happen |
//! | `put K V @N [-> OUT]` | PUT from a client of node N; expects `OUT` (default `OK`) |
//! | `get K @N [-> OUT]` | GET; `OUT` is the value, `NOT_FOUND`, `ERR`, ... (unchecked if absent) |
//! | `delete K @N [-> OUT]` | DELETE; default `OK` |
//! | `fill P COUNT @N` | PUT `P0..P{COUNT-1}`, each expecting `OK` |
//! | `load start CLIENTS KEYS` / `load stop` | random background requests from CLIENTS clients over KEYS keys |
//! | `check` | stop the load, then: every key written by `put`/`fill` reads back with its last acknowledged value from every serving node; every load key is read from every serving node; the whole history is linearizable |
//! | `drop N` | DROP node N through the manager, expecting `OK` |
//! | `term N` | SIGTERM to node N (graceful leave) |
//! | `crash N`, `restart N`, `pause N`, `resume N` | process faults |
//! | `partition 1,2 \| 3,m` / `heal` | network cuts |
//! | `reset A B` | reset every connection between two processes (`m` = manager) |
//! | `expect ring epoch E: n1=up ...` | the manager's ring, exactly |
//! | `expect exited N` | node N's process has exited |
//! | `expect keys N COUNT` | node N's engine holds COUNT keys |
//! | `expect owners` | every key written by `put`/`fill` is held by its owner in the manager's ring and by no other node (N = 1) |
//! | `expect copies [MS]` | within MS of virtual time (default 30 s), every key written by `put`/`fill` or used by the load has the newest entry on all N nodes of its preference list (see `chaos::check_copies`) |
//!
//! A failed expectation panics with the script name, line, command and what was
//! seen instead, plus the tail of the trace.

use super::chaos::{check_copies, check_history, read_everywhere, Load};
use super::client::{Outcome, Request};
use super::cluster::{manager_addr, node_addr, Cluster, ClusterConfig};
use super::world::{ProcId, ProcState};
use crate::protocol::op;
use crate::reactor::Signal;
use crate::ring::hash64;
use bytes::Bytes;
use std::collections::BTreeMap;

/// How long a scripted request may take, in virtual ms.
const CALL_LIMIT: u64 = 30_000;

/// A script being run.
pub struct Runner {
    /// The cluster.
    pub cluster: Cluster,
    /// Last acknowledged value of every key written by `put`/`fill` (None: deleted).
    model: BTreeMap<Bytes, Option<Bytes>>,
    load: Option<Load>,
    /// Keys the load has used (read back by `check`).
    load_keys: Vec<Bytes>,
    name: String,
    line: usize,
    text: String,
}

impl Runner {
    /// A runner for the script called `name`, with seed `seed` and the
    /// manager's defaults.
    pub fn new(name: &str, seed: u64) -> Runner {
        Runner::with_config(name, ClusterConfig::new(seed))
    }

    /// A runner for the script called `name` on a cluster built from `cfg`.
    pub fn with_config(name: &str, cfg: ClusterConfig) -> Runner {
        let mut cluster = Cluster::new(cfg);
        cluster.world.enable_trace();
        Runner {
            cluster,
            model: BTreeMap::new(),
            load: None,
            load_keys: Vec::new(),
            name: name.to_string(),
            line: 0,
            text: String::new(),
        }
    }

    fn fail(&self, why: String) -> ! {
        let trace = self.cluster.world.trace();
        let tail = &trace[trace.len().saturating_sub(40)..];
        panic!(
            "{}:{}: `{}`: {why}\nring: {}\nlast inputs:\n{}",
            self.name,
            self.line,
            self.text,
            self.cluster.ring_line(),
            tail.join("\n")
        );
    }

    fn node(&self, word: &str) -> usize {
        let w = word.trim_start_matches('@').trim_start_matches('n');
        match w.parse() {
            Ok(n) => n,
            Err(_) => self.fail(format!("bad node {word:?}")),
        }
    }

    fn proc(&self, word: &str) -> ProcId {
        if word == "m" {
            return self.cluster.manager;
        }
        let n = self.node(word);
        match self.cluster.nodes.get(&n) {
            Some(&p) => p,
            None => self.fail(format!("no node {n}")),
        }
    }

    /// Advances time, keeping the load (if any) busy.
    fn run(&mut self, ms: u64) {
        match self.load.as_mut() {
            Some(l) => l.run(&mut self.cluster, ms),
            None => self.cluster.world.run_for(ms),
        }
    }

    /// A request from a client of `target`; checks `expect` if given.
    fn call(&mut self, target: &str, req: Request, key: &str, expect: Option<&str>) -> Outcome {
        let addr = if target == "@m" {
            manager_addr()
        } else {
            node_addr(self.node(target))
        };
        let got = self
            .cluster
            .call(addr, req.clone(), key.as_bytes(), CALL_LIMIT);
        if let Some(want) = expect {
            let seen = got.to_string();
            if seen != want {
                self.fail(format!("expected {want}, got {seen} ({got:?})"));
            }
        }
        if req.is_write() && matches!(got, Outcome::Ok) {
            let k = Bytes::copy_from_slice(key.as_bytes());
            match req {
                Request::Put(v) => {
                    self.model.insert(k, Some(v));
                }
                Request::Delete => {
                    self.model.insert(k, None);
                }
                _ => {}
            }
        }
        got
    }

    /// Runs one line.
    pub fn exec(&mut self, line: &str) {
        let (cmd, expect) = match line.split_once("->") {
            Some((c, e)) => (c.trim(), Some(e.trim())),
            None => (line.trim(), None),
        };
        let words: Vec<&str> = cmd.split_whitespace().collect();
        match words.as_slice() {
            ["node", spec] => {
                let (a, b) = match spec.split_once("..") {
                    Some((a, b)) => (self.node(a), self.node(b)),
                    None => (self.node(spec), self.node(spec)),
                };
                for i in a..=b {
                    self.cluster.start_node(i);
                    if a != b {
                        self.run(300);
                    }
                }
            }
            ["run", ms] => self.run(ms.parse().unwrap_or_else(|_| self.fail("bad ms".into()))),
            ["settle", rest @ ..] => {
                let limit = rest.first().and_then(|m| m.parse().ok()).unwrap_or(60_000);
                let ok = match self.load.take() {
                    Some(mut l) => {
                        let end = self.cluster.world.now() + limit;
                        let mut ok = self.cluster.settled();
                        while !ok && self.cluster.world.now() < end {
                            l.run(&mut self.cluster, 100);
                            ok = self.cluster.settled();
                        }
                        self.load = Some(l);
                        ok
                    }
                    None => self.cluster.settle(limit),
                };
                if !ok {
                    self.fail(format!("not settled after {limit} ms"));
                }
            }
            ["put", k, v, at] => {
                let req = Request::Put(Bytes::copy_from_slice(v.as_bytes()));
                self.call(at, req, k, Some(expect.unwrap_or("OK")));
            }
            ["get", k, at] => {
                self.call(at, Request::Get, k, expect);
            }
            ["delete", k, at] => {
                self.call(at, Request::Delete, k, Some(expect.unwrap_or("OK")));
            }
            ["fill", prefix, count, at] => {
                let n: usize = count.parse().unwrap_or(0);
                for i in 0..n {
                    let key = format!("{prefix}{i}");
                    let val = format!("{key}@{}", self.cluster.world.now());
                    let req = Request::Put(Bytes::from(val));
                    self.call(at, req, &key, Some("OK"));
                }
            }
            ["load", "start", clients, keys] => {
                let (c, k) = (clients.parse().unwrap_or(3), keys.parse().unwrap_or(8));
                let seed = self.cluster.world.seed();
                let load = Load::new(&mut self.cluster, c, k, seed);
                self.load_keys.extend(load.keys());
                self.load = Some(load);
            }
            ["load", "stop"] => self.stop_load(),
            ["check"] => self.check(),
            ["drop", n] => {
                let addr = node_addr(self.node(n)).to_string();
                self.call(
                    "@m",
                    Request::Other(op::DROP),
                    &addr,
                    Some(expect.unwrap_or("OK")),
                );
            }
            ["term" | "crash" | "restart" | "pause" | "resume" | "partition" | "heal" | "reset", ..] => {
                self.exec_fault(cmd, &words)
            }
            ["expect", ..] => self.exec_expect(cmd, &words),
            _ => self.fail("unknown command".into()),
        }
    }

    /// A fault: `term`, `crash`, `restart`, `pause`, `resume`, `partition`,
    /// `heal` or `reset`.
    fn exec_fault(&mut self, cmd: &str, words: &[&str]) {
        match words {
            ["term", n] => {
                let p = self.proc(n);
                self.cluster.world.signal(p, Signal::Terminate);
            }
            ["crash", n] => {
                let p = self.proc(n);
                self.cluster.world.crash(p);
            }
            ["restart", n] => {
                let p = self.proc(n);
                self.cluster.world.restart(p);
            }
            ["pause", n] => {
                let p = self.proc(n);
                self.cluster.world.pause(p);
            }
            ["resume", n] => {
                let p = self.proc(n);
                self.cluster.world.resume(p);
            }
            ["partition", ..] => {
                let groups: Vec<Vec<ProcId>> = cmd["partition".len()..]
                    .split('|')
                    .map(|g| g.split(',').map(|w| self.proc(w.trim())).collect())
                    .collect();
                self.cluster.world.partition(&groups, None);
            }
            ["heal"] => self.cluster.world.heal(),
            ["reset", a, b] => {
                let (a, b) = (self.proc(a), self.proc(b));
                self.cluster.world.reset_between(a, b);
            }
            _ => self.fail("unknown command".into()),
        }
    }

    /// A check of the cluster's state: `expect ring|exited|keys|owners|copies`.
    fn exec_expect(&mut self, cmd: &str, words: &[&str]) {
        match words {
            ["expect", "ring", ..] => {
                let want = cmd["expect ring".len()..].trim();
                let seen = self.cluster.ring_line();
                if seen != want {
                    self.fail(format!("ring is `{seen}`"));
                }
            }
            ["expect", "exited", n] => {
                let p = self.proc(n);
                let st = self.cluster.world.proc(p).state;
                if st != ProcState::Exited {
                    self.fail(format!("node is {st:?}"));
                }
            }
            ["expect", "keys", n, count] => {
                let p = self.proc(n);
                let seen = self.cluster.world.node(p).map_or(0, |x| x.engine().len());
                if seen.to_string() != *count {
                    self.fail(format!("node holds {seen} keys"));
                }
            }
            ["expect", "owners"] => self.check_owners(),
            ["expect", "copies", rest @ ..] => {
                let limit = rest.first().and_then(|m| m.parse().ok()).unwrap_or(30_000);
                self.expect_copies(limit);
            }
            _ => self.fail("unknown command".into()),
        }
    }

    fn stop_load(&mut self) {
        if let Some(l) = self.load.take() {
            if !l.drain(&mut self.cluster, CALL_LIMIT) {
                self.fail("load requests still in flight".into());
            }
        }
    }

    fn check(&mut self) {
        self.stop_load();
        let keys: Vec<Bytes> = self.model.keys().cloned().collect();
        let reads = read_everywhere(&mut self.cluster, &keys);
        for (node, key, got) in &reads {
            let want = match &self.model[key] {
                Some(v) => Outcome::Value(v.clone()),
                None => Outcome::NotFound,
            };
            if *got != want {
                self.fail(format!(
                    "node {node} answers {got} for {}, expected {want}",
                    String::from_utf8_lossy(key)
                ));
            }
        }
        let load_keys = self.load_keys.clone();
        read_everywhere(&mut self.cluster, &load_keys);
        if let Err(e) = check_history(&self.cluster.history()) {
            self.fail(e);
        }
    }

    /// Runs until every written or loaded key has N up-to-date copies, or fails
    /// after `limit` ms.
    fn expect_copies(&mut self, limit: u64) {
        let mut keys: Vec<Bytes> = self.model.keys().cloned().collect();
        keys.extend(self.load_keys.iter().cloned());
        let n = self.cluster.ring().replicas.max(1) as usize;
        let end = self.cluster.world.now() + limit;
        loop {
            match check_copies(&self.cluster, &keys, n) {
                Ok(()) => return,
                Err(e) if self.cluster.world.now() >= end => self.fail(e),
                Err(_) => self.run(100),
            }
        }
    }

    fn check_owners(&self) {
        let ring = self.cluster.ring();
        for (key, v) in &self.model {
            let owner = ring.owner_of_hash(hash64(key));
            for (&i, &p) in &self.cluster.nodes {
                let Some(node) = self.cluster.world.node(p) else {
                    continue;
                };
                let id = ring
                    .nodes()
                    .iter()
                    .find(|n| n.addr == node_addr(i).to_string())
                    .map(|n| n.id);
                let has = node.engine().get(key);
                let should = v.is_some() && id.is_some() && id == owner;
                if has.is_some() != should {
                    self.fail(format!(
                        "node {i} {} {}",
                        if should { "lacks" } else { "still holds" },
                        String::from_utf8_lossy(key)
                    ));
                }
            }
        }
    }

    /// Runs a whole script.
    pub fn run_script(name: &str, text: &str) -> Runner {
        let seed = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("seed "))
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1);
        let mut cfg = ClusterConfig::new(seed);
        let replicas = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("replicas "))
            .map(|s| s.split_whitespace().filter_map(|w| w.parse().ok()))
            .map(|ws| ws.collect::<Vec<u32>>());
        if let Some([n, r, w]) = replicas.as_deref() {
            cfg.manager.replicas = *n;
            cfg.manager.read_quorum = *r;
            cfg.manager.write_quorum = *w;
        }
        let mut r = Runner::with_config(name, cfg);
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() || line.starts_with("seed ") || line.starts_with("replicas ") {
                continue;
            }
            r.line = i + 1;
            r.text = line.to_string();
            r.exec(line);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(name: &str) {
        let path = format!("{}/src/sim/testscripts/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Runner::run_script(name, &text);
    }

    #[test]
    fn join() {
        script("join.txt");
    }

    #[test]
    fn leave_by_drop() {
        script("leave_drop.txt");
    }

    #[test]
    fn leave_by_sigterm() {
        script("leave_term.txt");
    }

    #[test]
    fn a_leave_with_the_peers_down_waits_for_them() {
        script("leave_peers_down.txt");
    }

    #[test]
    fn join_overlapping_a_leave() {
        script("join_during_leave.txt");
    }

    #[test]
    fn a_node_that_left_does_not_register_again() {
        script("left_node_stays_out.txt");
    }

    #[test]
    fn a_crashed_replica_comes_back_empty_and_catches_up() {
        script("replica_crash_restart.txt");
    }

    #[test]
    #[should_panic(expected = "expected NOT_FOUND, got v1")]
    fn a_wrong_expectation_fails() {
        Runner::run_script(
            "inline",
            "node 1\nsettle\nput a v1 @1\nget a @1 -> NOT_FOUND\n",
        );
    }
}
