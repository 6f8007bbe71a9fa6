//! The Oxbow worker: runs a StreamJob's pipeline over the Kafka partitions it owns.
//!
//! - [`engine`]: the pipeline over records, pure — tasks, windows, aggregations, snapshots;
//! - [`runtime`]: Kafka in, the engine, Kafka out, exactly-once checkpoints and restores;
//! - [`checkpoint`]: the object store that snapshots and savepoints live in;
//! - [`admin`]: the HTTP API (routes only); [`metrics`]: what it exports;
//!   [`events`]: each event's log line and counter in one place;
//! - [`commands`]: the binary's commands; [`bench`]: the benchmarks.

pub mod admin;
pub mod bench;
pub mod checkpoint;
pub mod commands;
pub mod engine;
pub mod events;
pub mod metrics;
pub mod runtime;
