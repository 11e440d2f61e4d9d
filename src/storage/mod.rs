//! A storage node's logic: the engine (sectors) and the node state machine that
//! serves requests, keeps its manager link and (later) its mesh.

pub mod chunk;
pub mod durable;
pub mod engine;
pub mod handoff;
pub mod hlc;
pub mod mesh;
pub mod node;
pub mod ops;
pub mod order;
pub mod quorum;
pub mod resp;
pub mod resync;
pub mod status;
pub mod wal;

pub use engine::Engine;
pub use node::{NodeConfig, StorageNode};
