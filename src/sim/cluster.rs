//! A gtstore cluster in a [`World`]: the manager, numbered storage nodes and
//! simulated clients, with the addresses and helpers the script and randomized
//! tests share.
//!
//! Addresses: the manager is `127.0.0.1:7000`, storage node `i` is
//! `127.0.0.1:(7000 + i)`, client `j` is `127.0.0.1:(20000 + j)`. Node numbers are
//! the simulation's names; the manager gives ids in the order nodes register, so
//! the two agree only when nodes start one at a time.
//!
//! Data directories: [`ClusterConfig::data_dirs`] says which nodes keep their
//! data on a [`SimDisk`] of their own (directory [`DATA_DIR`], `--fsync batch`).
//! Every (re)start of such a node first crashes its disk, losing what was not
//! synced, then opens the directory: a restart sees exactly what a power loss
//! would have left.

use super::client::{Client, Outcome, Record, Request};
use super::disk::{DiskFaults, SimDisk, SIM_FSYNC_FAILURE};
use super::rng::hash;
use super::world::{Actor, NetConfig, ProcId, ProcState, World};
use crate::coordinator::{Manager, ManagerConfig};
use crate::reactor::Millis;
use crate::ring::{NodeState, Ring};
use crate::storage::durable::DurableNode;
use crate::storage::wal::Fsync;
use crate::storage::{NodeConfig, StorageNode};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Where a node with a data directory keeps it on its simulated disk.
pub const DATA_DIR: &str = "/data";

/// Which storage nodes keep a data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDirs {
    /// None: every node keeps its data in memory only.
    None,
    /// The odd-numbered nodes (1, 3, 5, ...); the others are memory-only.
    Odd,
    /// Every node.
    All,
}

impl DataDirs {
    /// Whether node `i` keeps a data directory.
    pub fn has(self, i: usize) -> bool {
        match self {
            DataDirs::None => false,
            DataDirs::Odd => i % 2 == 1,
            DataDirs::All => true,
        }
    }
}

/// The manager's address.
pub fn manager_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000))
}

/// Storage node `i`'s address.
pub fn node_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

/// Client `j`'s address (never connected to).
pub fn client_addr(j: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20000 + j as u16))
}

/// How long a simulated client waits for a reply, in ms: above the nodes'
/// forward timeout (5 s) plus the longest random pause (4 s), so a timeout means
/// a real hang.
pub const CLIENT_TIMEOUT_MS: Millis = 12_000;

/// The manager's lease in the simulator, in ms: above the nodes' heartbeat
/// period (500 ms) and the manager's `down_after_ms` (2 s), below the longest
/// pauses (4 s) and partitions, so the fence is exercised.
pub const SIM_LEASE_MS: Millis = 3_000;

/// Settings of a simulated cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Seed of the world.
    pub seed: u64,
    /// Network tunables.
    pub net: NetConfig,
    /// The manager's settings.
    pub manager: ManagerConfig,
    /// Tokens each node asks for.
    pub tokens: u32,
    /// Which nodes keep a data directory on a simulated disk.
    pub data_dirs: DataDirs,
    /// The faults of those disks.
    pub disk_faults: DiskFaults,
    /// Whether nodes serve no data without a lease ([`NodeConfig::lease_fence`]);
    /// off only to show what the fence prevents.
    pub lease_fence: bool,
}

impl ClusterConfig {
    /// Defaults for `seed`, with fewer tokens than a real node (16) to keep ring
    /// work small.
    pub fn new(seed: u64) -> ClusterConfig {
        ClusterConfig {
            seed,
            net: NetConfig::default(),
            manager: ManagerConfig {
                lease_ms: SIM_LEASE_MS,
                ..ManagerConfig::default()
            },
            tokens: 16,
            data_dirs: DataDirs::None,
            disk_faults: DiskFaults::default(),
            lease_fence: true,
        }
    }
}

/// The manager, nodes and clients of one simulation.
pub struct Cluster {
    /// The world they live in.
    pub world: World,
    /// The manager's process.
    pub manager: ProcId,
    /// Storage node number -> process.
    pub nodes: BTreeMap<usize, ProcId>,
    /// Client processes, in creation order.
    pub clients: Vec<ProcId>,
    /// Storage node number -> its disk, for nodes with a data directory.
    pub disks: BTreeMap<usize, SimDisk>,
    tokens: u32,
    seed: u64,
    data_dirs: DataDirs,
    disk_faults: DiskFaults,
    lease_fence: bool,
}

impl Cluster {
    /// A world with a manager and no nodes yet.
    pub fn new(cfg: ClusterConfig) -> Cluster {
        let mut world = World::new(cfg.seed, cfg.net.clone());
        let mcfg = cfg.manager.clone();
        let manager = world.spawn(
            "manager",
            manager_addr(),
            true,
            Box::new(move || Actor::Manager(Manager::new(mcfg.clone()))),
        );
        Cluster {
            world,
            manager,
            nodes: BTreeMap::new(),
            clients: Vec::new(),
            disks: BTreeMap::new(),
            tokens: cfg.tokens,
            seed: cfg.seed,
            data_dirs: cfg.data_dirs,
            disk_faults: cfg.disk_faults,
            lease_fence: cfg.lease_fence,
        }
    }

    /// Starts storage node `i` (fresh, empty); restarts it if it exists and is down.
    pub fn start_node(&mut self, i: usize) -> ProcId {
        if let Some(&p) = self.nodes.get(&i) {
            self.world.restart(p);
            return p;
        }
        let (tokens, lease_fence) = (self.tokens, self.lease_fence);
        let disk = self.data_dirs.has(i).then(|| {
            let d = SimDisk::new(hash(self.seed, &[0xd15c, i as u64]), self.disk_faults);
            self.disks.insert(i, d.clone());
            d
        });
        let p = self.world.spawn(
            &format!("n{i}"),
            node_addr(i),
            true,
            Box::new(move || {
                let mut c = NodeConfig::new(node_addr(i).to_string(), manager_addr());
                c.tokens = tokens;
                c.lease_fence = lease_fence;
                let mut node = DurableNode::new(StorageNode::new(c));
                if let Some(d) = &disk {
                    open_on_disk(&mut node, i, d);
                }
                Actor::Node(Box::new(node))
            }),
        );
        self.nodes.insert(i, p);
        p
    }

    /// A new client talking to `target`.
    pub fn add_client(&mut self, target: SocketAddr) -> ProcId {
        let j = self.clients.len();
        let p = self.world.spawn(
            &format!("c{j}"),
            client_addr(j),
            false,
            Box::new(move || Actor::Client(Client::new(j, target, CLIENT_TIMEOUT_MS))),
        );
        self.clients.push(p);
        p
    }

    /// A client talking to `target`, reusing an idle one.
    pub fn client_for(&mut self, target: SocketAddr) -> ProcId {
        let idle = self.clients.iter().copied().find(|&c| {
            self.world
                .client(c)
                .is_some_and(|cl| cl.target == target && !cl.busy())
        });
        idle.unwrap_or_else(|| self.add_client(target))
    }

    /// An idle client of the manager.
    pub fn manager_client(&mut self) -> ProcId {
        self.client_for(manager_addr())
    }

    /// Sends one request from a client for `target` and runs until its outcome
    /// (or `limit` ms).
    pub fn call(
        &mut self,
        target: SocketAddr,
        request: Request,
        key: &[u8],
        limit: Millis,
    ) -> Outcome {
        let c = self.client_for(target);
        self.world
            .client_start(c, request, Bytes::copy_from_slice(key));
        self.world
            .run_while(limit, |w| w.client(c).is_some_and(|cl| !cl.busy()));
        let cl = self.world.client(c).expect("clients never crash");
        if cl.busy() {
            return Outcome::NoReply;
        }
        cl.last().expect("just started").outcome.clone()
    }

    /// The node number of process `p`, if it is a storage node.
    pub fn number_of(&self, p: ProcId) -> Option<usize> {
        self.nodes.iter().find(|(_, &q)| q == p).map(|(&i, _)| i)
    }

    /// The manager's ring (empty if the manager is down).
    pub fn ring(&self) -> Ring {
        self.world
            .manager(self.manager)
            .map_or_else(Ring::empty, |m| m.ring())
    }

    /// The storage node number listening at `addr` (as the ring names it).
    pub fn number_at(&self, addr: &str) -> Option<usize> {
        let a: SocketAddr = addr.parse().ok()?;
        self.number_of(self.world.by_addr(a)?)
    }

    /// The ring in one line by node number: `epoch E: n1=up n2=leaving ...`.
    pub fn ring_line(&self) -> String {
        let ring = self.ring();
        let mut line = format!("epoch {}:", ring.epoch);
        let mut nodes: Vec<(usize, NodeState)> = ring
            .nodes()
            .iter()
            .map(|n| (self.number_at(&n.addr).unwrap_or(0), n.state))
            .collect();
        nodes.sort_by_key(|n| n.0);
        for (i, s) in nodes {
            line.push_str(&format!(" n{i}={s}"));
        }
        line
    }

    /// Whether the cluster is at rest: no joins or leaves pending at the manager,
    /// every node in its ring alive and on its epoch, every node out of it exited.
    pub fn settled(&self) -> bool {
        ClusterView {
            world: &self.world,
            manager: self.manager,
            nodes: &self.nodes,
        }
        .settled()
    }

    /// Why [`Cluster::settled`] does not hold (the first reason), or `None`.
    pub fn unsettled(&self) -> Option<String> {
        ClusterView {
            world: &self.world,
            manager: self.manager,
            nodes: &self.nodes,
        }
        .unsettled()
    }

    /// Runs until [`Cluster::settled`] holds (or `limit` ms); returns whether it did.
    pub fn settle(&mut self, limit: Millis) -> bool {
        let (manager, nodes) = (self.manager, &self.nodes);
        self.world.run_while(limit, |world| {
            ClusterView {
                world,
                manager,
                nodes,
            }
            .settled()
        })
    }

    /// Every client's history, in client order.
    pub fn history(&self) -> Vec<Record> {
        self.clients
            .iter()
            .filter_map(|&c| self.world.client(c))
            .flat_map(|c| c.history().iter().cloned())
            .collect()
    }

    /// Storage nodes that are running, by number.
    pub fn live_nodes(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|(_, &p)| self.world.node(p).is_some())
            .map(|(&i, _)| i)
            .collect()
    }
}

/// Attempts at opening a node's simulated data directory before the run gives
/// up: each failed one (an fsync the disk failed) is a process that exited and
/// was started again.
const OPEN_ATTEMPTS: usize = 50;

/// Opens node `i`'s data directory on `disk` as a restarted process does: what
/// the last run had not synced is gone first. An open that fails on a failed
/// fsync is retried like a supervisor restarts the process, each time after
/// another crash of the disk.
fn open_on_disk(node: &mut DurableNode, i: usize, disk: &SimDisk) {
    let dir = Path::new(DATA_DIR);
    for _ in 0..OPEN_ATTEMPTS {
        disk.crash();
        match node.open_data_dir_on(Arc::new(disk.clone()), dir, Fsync::Batch) {
            Ok(_) => return,
            Err(e) if e.to_string().contains(SIM_FSYNC_FAILURE) => continue,
            // Recovery refused what a crash left: a bug in the log or the
            // data directory, which the run exists to find.
            Err(e) => panic!("node {i} cannot open its simulated data directory: {e}"),
        }
    }
    panic!("node {i}: {OPEN_ATTEMPTS} opens in a row failed an fsync");
}

/// A borrowed view for checks run inside `World::run_while`.
struct ClusterView<'a> {
    world: &'a World,
    manager: ProcId,
    nodes: &'a BTreeMap<usize, ProcId>,
}

impl ClusterView<'_> {
    fn settled(&self) -> bool {
        self.unsettled().is_none()
    }

    /// Why the cluster is not at rest (the first reason found), or `None` if it is.
    fn unsettled(&self) -> Option<String> {
        let Some(m) = self.world.manager(self.manager) else {
            return Some("the manager is not running".into());
        };
        let ring = m.ring();
        if ring.is_empty() {
            return Some("the manager's ring is empty".into());
        }
        if ring.has_moves() {
            return Some(format!(
                "the manager's ring (epoch {}) has moves",
                ring.epoch
            ));
        }
        self.nodes.iter().find_map(|(&i, &p)| {
            let in_ring = ring
                .nodes()
                .iter()
                .any(|n| n.addr == node_addr(i).to_string());
            let state = self.world.proc(p).state;
            match self.world.node(p) {
                Some(n) if in_ring => (n.ring().epoch != ring.epoch).then(|| {
                    format!(
                        "n{i} ({state:?}, id {}) is on epoch {}, the manager on {}",
                        n.node_id(),
                        n.ring().epoch,
                        ring.epoch
                    )
                }),
                Some(n) => Some(format!(
                    "n{i} ({state:?}, id {}, on epoch {}) runs outside the manager's ring",
                    n.node_id(),
                    n.ring().epoch
                )),
                None if in_ring && state != ProcState::Crashed => {
                    Some(format!("n{i} is in the ring but {state:?}"))
                }
                None => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_nodes_register_serve_and_replay_exactly() {
        let run = |seed| {
            let mut c = Cluster::new(ClusterConfig::new(seed));
            for i in 1..=3 {
                c.start_node(i);
                c.world.run_for(500);
            }
            assert!(c.settle(10_000), "not settled: {}", c.ring_line());
            assert_eq!(c.ring_line(), "epoch 5: n1=up n2=up n3=up");
            for k in 0..20 {
                let key = format!("k{k}");
                let put = Request::Put(Bytes::from(format!("v{k}")));
                let got = c.call(node_addr(1 + k % 3), put, key.as_bytes(), 10_000);
                assert_eq!(got, Outcome::Ok);
            }
            for k in 0..20 {
                for n in 1..=3 {
                    let key = format!("k{k}");
                    let got = c.call(node_addr(n), Request::Get, key.as_bytes(), 10_000);
                    assert_eq!(got, Outcome::Value(Bytes::from(format!("v{k}"))));
                }
            }
            (c.world.fingerprint(), c.world.now())
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5).0, run(6).0);
    }
}
