//! gtstore: a small Dynamo-style distributed key-value store.
pub mod protocol;
