//! A deterministic simulator for the manager and storage-node state machines.
//!
//! The manager ([`crate::coordinator::Manager`]) and the storage node
//! ([`crate::storage::StorageNode`]) never touch a socket or a clock: they are
//! [`crate::reactor::Service`]s that take one input and push outputs. This module
//! runs many of them in one thread, in virtual time, over a seeded model of TCP
//! ([`world`]): delays, reordering across connections, split reads, resets,
//! partitions, pauses, crashes and restarts. Simulated [`client`]s send native
//! requests and record histories that [`linearizability`] checks. A run is a pure
//! function of its seed, so a failing seed replays exactly.
//!
//! - [`rng`]: the seeded generator and the hash that derives every delay.
//! - [`world`]: processes, the event queue, the TCP model and the faults.
//! - [`client`]: sequential clients and their operation records.
//! - [`disk`]: a disk in memory that loses unsynced writes on a crash (or tears
//!   them) and can fail fsync; nodes with a data directory keep it there.
//! - [`cluster`]: a manager, numbered nodes and clients, and settle/ring helpers.
//! - [`linearizability`]: a per-key register checker (Wing & Gong search with
//!   Lowe's memoization, bounded).
//! - [`script`]: the small script language of the scenario tests.
//! - [`invariants`]: what a cluster must keep (copies, no hangs, linearizable
//!   histories with no acknowledged write lost).
//! - [`chaos`]: randomized load and faults over many seeds.
//!
//! Nothing here does I/O or reads a clock; it builds in normal builds so that
//! integration tests and tools can use it.
//!
//! Caveats: the world does not model output buffers (so no high-water
//! backpressure) and keeps bytes already sent by a crashed process; see
//! [`world`] for the details of the TCP model.

pub mod chaos;
pub mod client;
pub mod cluster;
pub mod disk;
pub mod invariants;
#[cfg(test)]
mod lease_tests;
pub mod linearizability;
pub mod rng;
pub mod script;
pub mod world;

pub use client::{Client, Outcome, Record, Request};
pub use cluster::{Cluster, ClusterConfig};
pub use world::{Actor, NetConfig, ProcId, ProcState, World};
