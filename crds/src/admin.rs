//! The worker's admin HTTP API, as the operator calls it. Paths are versioned (`/v1/...`);
//! requests carry `Authorization: Bearer <token>` with the job's admin token.

use serde::{Deserialize, Serialize};

/// Port of the admin API on every worker pod.
pub const ADMIN_PORT: u16 = 9249;
/// Liveness.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Readiness: restored and processing.
pub const READYZ_PATH: &str = "/readyz";
/// Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// `GET` [`WorkerStatus`].
pub const STATUS_PATH: &str = "/v1/status";
/// `POST` a [`SavepointRequest`]; `GET {SAVEPOINTS_PATH}/{id}` a [`SavepointResult`].
pub const SAVEPOINTS_PATH: &str = "/v1/savepoints";

/// What a worker reports about itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// StatefulSet ordinal.
    pub ordinal: u32,
    /// Generation of the assignment it runs.
    pub assignment_generation: i64,
    /// Spec generation of its job file.
    pub spec_generation: i64,
    /// Where it is in its life.
    pub state: WorkerState,
    /// What it restored from, as an object-storage URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
    /// Owned partitions.
    #[serde(default)]
    pub partitions: Vec<PartitionStatus>,
    /// The last checkpoint it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<CheckpointSummary>,
    /// Bytes of state held.
    pub state_bytes: u64,
    /// Records consumed since start.
    pub records_in: u64,
    /// Records produced to the sink since start.
    pub records_out: u64,
    /// Records sent to the dead-letter topic since start.
    pub dead_lettered: u64,
    /// The last error, if the worker is degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl WorkerStatus {
    /// A worker of `ordinal` in `state` that has processed nothing yet.
    pub fn new(ordinal: u32, state: WorkerState) -> Self {
        WorkerStatus {
            ordinal,
            assignment_generation: 0,
            spec_generation: 0,
            state,
            restored_from: None,
            partitions: Vec::new(),
            last_checkpoint: None,
            state_bytes: 0,
            records_in: 0,
            records_out: 0,
            dead_lettered: 0,
            error: None,
        }
    }
}

/// Life cycle of a worker process.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// Connecting and fencing its predecessor.
    Starting,
    /// Loading snapshots.
    Restoring,
    /// Processing records.
    Running,
    /// Kafka or the checkpoint store failed; the worker went back to its last checkpoint and
    /// retries with backoff (see `error`). Nothing past the last checkpoint is committed.
    Retrying,
    /// Stopped after a savepoint; processes nothing until restarted.
    Idle,
    /// Cannot make progress; see `error`.
    Failed,
}

/// One owned partition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    /// Next offset to consume.
    pub position: i64,
    /// Largest event time seen, in epoch milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_time_ms: Option<i64>,
}

/// A completed checkpoint, as a worker reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSummary {
    pub id: u64,
    /// Completion time, epoch milliseconds.
    pub completed_at_ms: i64,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// Bytes written.
    pub size_bytes: u64,
    /// Object-storage URL of the checkpoint's snapshots.
    pub path: String,
}

/// `POST /v1/savepoints`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SavepointRequest {
    /// Savepoint id, chosen by the operator; the same id on every worker.
    pub id: String,
    /// Stop processing after the savepoint (stop-with-savepoint).
    #[serde(default)]
    pub stop: bool,
}

/// State of a savepoint on one worker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SavepointResult {
    pub id: String,
    /// In progress, completed or failed.
    pub state: SavepointState,
    /// Object-storage URL of the savepoint directory, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Progress of a savepoint.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SavepointState {
    /// Being written.
    InProgress,
    /// Durable; its offsets are recorded in its manifest.
    Completed,
    /// Failed; see `error`.
    Failed,
}
