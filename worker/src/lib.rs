//! The Oxbow worker: runs a StreamJob's pipeline over the Kafka partitions it owns.

pub mod admin;
pub mod bench;
pub mod bench_kafka;
pub mod bench_recovery;
pub mod checkpoint;
pub mod cli;
pub mod engine;
pub mod examples;
pub mod local;
pub mod runtime;
