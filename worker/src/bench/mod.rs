//! `oxbow-worker bench …`: the benchmark binaries' measurements, each against a baseline
//! measured in the same run (DESIGN.md §7).
//!
//! - [`pipeline`]: the reference job in process, for side-by-side comparison with Flink.
//! - [`kafka`]: Kafka to Kafka, a bare consume-and-produce loop against the exactly-once worker.
//! - [`recovery`]: SIGKILL to processing again, and resident memory idle and under load.

pub mod kafka;
pub mod pipeline;
pub mod recovery;
pub mod reference;

pub use reference::{Generator, encode_event};

use crate::runtime::RuntimeError;

/// Why a benchmark could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A Kafka client or operation failed.
    #[error("failed to {action}: {source}")]
    Kafka {
        /// What the benchmark was doing.
        action: &'static str,
        /// Why.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A file, process or socket operation failed.
    #[error("failed to {action}: {source}")]
    Io {
        /// What the benchmark was doing.
        action: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The worker under measurement failed.
    #[error("the worker failed: {0}")]
    Worker(#[from] RuntimeError),
    /// The reference job does not parse or compile (a bug in this binary).
    #[error("the reference job is invalid: {0}")]
    ReferenceJob(String),
    /// A result of the reference job is not what it must be.
    #[error("wrong result: {0}")]
    Result(String),
    /// Something the benchmark waits for did not happen within a minute.
    #[error("timed out after 60 s waiting for {0}")]
    Timeout(&'static str),
    /// A helper thread panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

impl BenchError {
    /// Wraps a Kafka error with what was being done.
    pub(crate) fn kafka(action: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        move |source| BenchError::Kafka { action, source }
    }

    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| BenchError::Io { action, source }
    }
}
