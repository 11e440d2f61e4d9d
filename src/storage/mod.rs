//! A storage node's logic: the engine (sectors) and the node state machine that
//! serves requests, keeps its manager link and (later) its mesh.

pub mod disk;
pub mod durable;
pub mod engine;
pub mod gateway;
pub mod hlc;
pub mod http;
pub mod node;
pub mod ops;
pub mod resp;
pub mod status;
pub mod wal;

pub use engine::Engine;
pub use node::{NodeConfig, StorageNode, HEARTBEAT_MS};
