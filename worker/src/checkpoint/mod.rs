//! Checkpoint storage: where task snapshots and savepoint manifests live.

pub mod store;
