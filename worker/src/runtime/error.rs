//! Why the worker stops or retries: one error type, with whose fault it is and whether a retry
//! can help.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::security;
use crate::{checkpoint::store::StoreError, engine::snapshot::SnapshotError};

/// Why the worker stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The job file's spec is invalid (user error; fix the StreamJob).
    #[error("the job is invalid: {0}")]
    InvalidJob(String),
    /// A Kafka client could not be created or an operation failed.
    #[error("failed to {action}: {source}")]
    Kafka {
        /// What the worker was doing.
        action: &'static str,
        /// Why.
        #[source]
        source: KafkaError,
    },
    /// Checkpoint storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A Kafka credential the spec asks for is not mounted.
    #[error(transparent)]
    Credential(#[from] security::MissingCredential),
    /// A snapshot could not be written or read.
    #[error("failed to {action} for {topic}-{partition}: {source}")]
    Snapshot {
        /// What the worker was doing.
        action: &'static str,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Why.
        #[source]
        source: SnapshotError,
    },
    /// Committed offset metadata that Oxbow did not write.
    #[error("{0}")]
    ForeignMetadata(#[from] oxbow_crds::checkpoint::ForeignMetadata),
    /// A delivery into the open transaction failed; the transaction was aborted.
    #[error("failed to deliver {0} record(s) into the transaction; it was aborted")]
    Delivery(u64),
    /// This worker was fenced by a newer instance with the same transactional id.
    #[error(
        "fenced by a newer worker with the same transactional id; stopping so that only one generation runs"
    )]
    Fenced,
    /// The savepoint to restore from is missing or incomplete.
    #[error("failed to restore from savepoint {path}: {reason}")]
    Savepoint {
        /// Savepoint URL.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl RuntimeError {
    /// Whether retrying may help: Kafka or the store was unreachable or failed a request, as
    /// opposed to a bad job, a fenced worker, foreign data or a fatal producer error.
    pub fn is_transient(&self) -> bool {
        match self {
            RuntimeError::Kafka { source, .. } => match source {
                KafkaError::Transaction(e) => !e.is_fatal(),
                KafkaError::ClientCreation(_) | KafkaError::ClientConfig(..) => false,
                _ => true,
            },
            RuntimeError::Store(e) => e.is_transient(),
            RuntimeError::Delivery(_) => true,
            _ => false,
        }
    }

    /// A static label for metrics: which system failed.
    pub fn system(&self) -> &'static str {
        match self {
            RuntimeError::Kafka { .. } | RuntimeError::Delivery(_) | RuntimeError::Fenced => {
                "kafka"
            }
            RuntimeError::Store(_) | RuntimeError::Snapshot { .. } => "store",
            _ => "job",
        }
    }
}

pub(super) fn kafka(action: &'static str) -> impl FnOnce(KafkaError) -> RuntimeError {
    move |source| {
        let fenced = matches!(
            source.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        );
        if fenced {
            RuntimeError::Fenced
        } else {
            RuntimeError::Kafka { action, source }
        }
    }
}
