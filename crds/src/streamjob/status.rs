//! `StreamJob.status`: what the operator observed, written with one patch per reconcile.
//!
//! Follows the kstatus conventions so that Argo CD and Flux can tell a healthy, progressing and
//! degraded job apart: `observedGeneration` at the top and on every condition, standard
//! `metav1.Condition`s, and a `Ready` condition.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::assignment::Assignment;

/// Observed state of a StreamJob.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StreamJobStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Ready, Progressing, Degraded, CheckpointStale, LagHigh and UpgradeBlocked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Worker pods that exist.
    #[serde(default)]
    pub replicas: i32,

    /// Worker pods restored and processing.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Label selector of the worker pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// Which worker owns which partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<Assignment>,

    /// Checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointStatus>,

    /// Savepoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint: Option<SavepointStatus>,

    /// Consumer lag of the job, computed from Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<LagStatus>,

    /// What the running generation restored its state from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<RestoredFrom>,

    /// The upgrade, rescale or suspend in progress, written before each step is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,

    /// Hash of the last spec that ran healthy; rollbacks return to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stable_spec_hash: Option<String>,

    /// The last error the user should act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorStatus>,
}

/// Lifecycle phase of a StreamJob.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Accepted, nothing created yet.
    Pending,
    /// Workers are being created.
    Deploying,
    /// Every worker is processing.
    Running,
    /// A savepoint is being taken.
    Savepointing,
    /// A restart-required change is being rolled out.
    Upgrading,
    /// The worker count or partition count is changing.
    Rescaling,
    /// Taking a savepoint before scaling to zero.
    Suspending,
    /// Scaled to zero with its state in a savepoint.
    Suspended,
    /// Returning to the last stable spec.
    RollingBack,
    /// Stopped by an error that needs the user.
    Failed,
}

impl Phase {
    /// The phase as written in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Deploying => "Deploying",
            Phase::Running => "Running",
            Phase::Savepointing => "Savepointing",
            Phase::Upgrading => "Upgrading",
            Phase::Rescaling => "Rescaling",
            Phase::Suspending => "Suspending",
            Phase::Suspended => "Suspended",
            Phase::RollingBack => "RollingBack",
            Phase::Failed => "Failed",
        }
    }
}

/// Checkpoint history.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointStatus {
    /// The most recent completed checkpoint (over all workers, the oldest of their latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completed: Option<CheckpointInfo>,
    /// The most recent failed checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<CheckpointFailure>,
}

/// A completed checkpoint.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointInfo {
    /// Checkpoint id, increasing per worker.
    pub id: u64,
    /// When it completed.
    pub completed_at: Time,
    /// How long it took.
    pub duration_ms: u64,
    /// Bytes of state written.
    pub size_bytes: u64,
    /// Object-storage URL of the checkpoint.
    pub path: String,
}

/// A failed checkpoint.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointFailure {
    /// When it failed.
    pub at: Time,
    /// Static reason, for example `StoreUnavailable` or `Timeout`.
    pub reason: String,
    /// What happened.
    pub message: String,
}

/// Savepoint history.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SavepointStatus {
    /// The most recent completed savepoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<SavepointInfo>,
    /// Completed savepoints still in storage, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<SavepointInfo>,
    /// The savepoint being taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<SavepointInProgress>,
    /// The last `savepoint.triggerNonce` acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_trigger_nonce: Option<i64>,
}

/// A completed savepoint.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SavepointInfo {
    /// Savepoint id.
    pub id: String,
    /// Object-storage URL of the savepoint directory.
    pub path: String,
    /// When it completed.
    pub completed_at: Time,
    /// Why it was taken.
    pub trigger: SavepointTrigger,
}

/// A savepoint being taken.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SavepointInProgress {
    /// Savepoint id.
    pub id: String,
    /// When it was requested.
    pub started_at: Time,
    /// Why it is being taken.
    pub trigger: SavepointTrigger,
}

/// Why a savepoint was taken.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SavepointTrigger {
    /// Before an upgrade.
    Upgrade,
    /// Before a rescale.
    Rescale,
    /// Before suspending.
    Suspend,
    /// `savepoint.triggerNonce` changed.
    Manual,
    /// `savepoint.interval` elapsed.
    Periodic,
    /// The StreamJob was deleted.
    Delete,
}

impl SavepointTrigger {
    /// The trigger as written in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            SavepointTrigger::Upgrade => "Upgrade",
            SavepointTrigger::Rescale => "Rescale",
            SavepointTrigger::Suspend => "Suspend",
            SavepointTrigger::Manual => "Manual",
            SavepointTrigger::Periodic => "Periodic",
            SavepointTrigger::Delete => "Delete",
        }
    }
}

/// Consumer lag, from the source high watermarks minus the job group's committed offsets.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LagStatus {
    /// Total records behind.
    pub records: i64,
    /// Largest lag of one partition.
    pub max_partition_records: i64,
    /// Estimated seconds to catch up at the recent consume rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// When it was computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Time>,
    /// The partitions furthest behind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionLag>,
}

/// Lag of one partition.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Records behind.
    pub records: i64,
}

/// What the running generation restored from.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct RestoredFrom {
    /// Object-storage URL of the savepoint or checkpoint.
    pub path: String,
    /// When the restore happened.
    pub at: Time,
}

/// A multi-step operation in progress.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// What kind of operation.
    #[serde(rename = "type")]
    pub type_: OperationType,
    /// The step about to be taken or in progress.
    pub step: OperationStep,
    /// When the operation started.
    pub started_at: Time,
    /// The spec generation being rolled out.
    pub target_generation: i64,
    /// The savepoint the new generation restores from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint_path: Option<String>,
    /// Id of the savepoint requested from the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint_id: Option<String>,
    /// What the change does to the window state: `compatible`, `migratable` (which
    /// aggregations start empty or are dropped) or `incompatible` (why, when
    /// `upgrade.discardIncompatibleState` lets it start empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_change: Option<String>,
}

/// Kind of operation.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationType {
    /// Restart-required spec change.
    Upgrade,
    /// Worker or partition count change.
    Rescale,
    /// Savepoint and scale to zero.
    Suspend,
    /// Restore a suspended job.
    Resume,
    /// Return to the last stable spec.
    Rollback,
}

impl OperationType {
    /// The type as written in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationType::Upgrade => "Upgrade",
            OperationType::Rescale => "Rescale",
            OperationType::Suspend => "Suspend",
            OperationType::Resume => "Resume",
            OperationType::Rollback => "Rollback",
        }
    }
}

/// Step of an operation.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationStep {
    /// Stop-with-savepoint on every worker.
    Savepointing,
    /// Fencing the previous generation's transactional ids.
    Fencing,
    /// Writing the new assignment and restarting the workers.
    RollingOut,
    /// Waiting for every worker to restore and process.
    Verifying,
}

/// An error the user should act on.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct ErrorStatus {
    /// Static reason, for example `InvalidSpec`.
    pub reason: String,
    /// What is wrong and what to do.
    pub message: String,
    /// When it was observed.
    pub at: Time,
}
