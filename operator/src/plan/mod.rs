//! The upgrade, rescale and suspend state machine, as a pure function.
//!
//! [`plan`] takes everything the controller observed ([`Observed`]) and names exactly one next
//! [`Action`], together with the durable status fields to write *before* taking it
//! ([`Record`]): every step of a multi-step operation is in `status.operation` before the
//! action that needs it, so an operator killed at any point resumes where it stopped, and
//! every action is idempotent, so one taken twice does no harm. [`status::compute`] derives
//! the phase and conditions from the same inputs.
//!
//! | recorded operation / observation | action |
//! | --- | --- |
//! | no job file deployed, spec valid | [`Action::CreateOrUpdateChildren`] |
//! | spec invalid, no operation | [`Action::ReportInvalid`] (the running job is left alone) |
//! | no operation, children drifted (StatefulSet missing or resized, an idle worker left over) | re-apply the deployed job file / restart idle workers |
//! | no operation, restart-required change / rescale / partition count change / suspend / resume | record the operation's first step, then its action |
//! | same, but `UpgradeBlocked` at this generation | [`Action::Block`] (retried on the next spec change) |
//! | `Savepointing` | [`Action::RequestSavepoint`] (stop) to workers without a result, else [`Action::WaitForSavepoint`] |
//! | `Savepointing`, completed on every worker and every worker idle | record `Fencing` with the path |
//! | `Savepointing`, failed or past `savepointTimeout` | `last-state` with a checkpoint younger than `maxCheckpointAge`: `Fencing` without a savepoint; otherwise [`Action::Block`] |
//! | `Fencing`, old pods exist | [`Action::StopWorkers`] (scale to zero), then wait for them to go |
//! | `Fencing`, no pods | [`Action::Fence`] the old transactional ids, then record `RollingOut` |
//! | `RollingOut` | [`Action::RollOut`] until ConfigMap and StatefulSet carry the new job file, then `Verifying` |
//! | `RollingOut` of a suspend | [`Action::ScaleToZero`] until no pod is left, then done |
//! | `Verifying`, every worker restored and running | [`Action::MarkStable`], operation cleared |
//! | `Verifying`, past `verifyTimeout` | record a `Rollback` operation at `Fencing` (from the same savepoint); a failed rollback fails the job |
//! | no operation, `triggerNonce` changed or `savepoint.interval` elapsed | [`Action::RequestSavepoint`] (no stop) |
//! | no operation, more savepoints than `historyLimit` | [`Action::DisposeSavepoints`] (never the one restored from, nor the latest upgrade or rescale savepoint) |
//! | `savepoint.onDelete` differs from the finalizer | [`Action::AddFinalizer`] / [`Action::RemoveFinalizer`] |
//! | being deleted, with the finalizer | stop-with-savepoint (trigger `Delete`) when the job runs, then [`Action::RemoveFinalizer`]; a failed or impossible final savepoint removes it too, with a Warning |
//!
//! A rolled-back generation is not retried: the rollback's job file is written for the failed
//! generation (its `specGeneration`), so the planner sees that generation as answered until the
//! user changes the spec again.

mod observed;
mod planner;
mod savepoint;
pub mod status;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::time::Duration;

use oxbow_crds::{
    StreamJobStatus,
    jobfile::JobFile,
    streamjob::{ErrorStatus, Operation, SavepointStatus},
};

pub use observed::{KafkaProgress, Observed, PartitionOffsets, StatefulSetState, WorkerPod};
pub use planner::{plan, spec_hash};

/// The next step: what to record, then what to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Durable status fields, to be written before [`Plan::action`] is taken.
    pub record: Record,
    /// The one action to take.
    pub action: Action,
}

impl Plan {
    /// Whether [`Plan::record`] differs from what `status` holds, i.e. a status write must
    /// precede the action.
    pub fn needs_record(&self, status: &StreamJobStatus) -> bool {
        Record::of(status) != self.record
    }
}

/// The status fields that carry the state machine across reconciles and operator restarts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    /// `status.operation`.
    pub operation: Option<Operation>,
    /// `status.savepoint` (in progress, last, history, observed trigger nonce).
    pub savepoint: Option<SavepointStatus>,
    /// `status.lastStableSpecHash`.
    pub last_stable_spec_hash: Option<String>,
    /// `status.error`.
    pub error: Option<ErrorStatus>,
}

impl Record {
    /// The fields as `status` holds them.
    pub fn of(status: &StreamJobStatus) -> Self {
        Self {
            operation: status.operation.clone(),
            savepoint: status.savepoint.clone(),
            last_stable_spec_hash: status.last_stable_spec_hash.clone(),
            error: status.error.clone(),
        }
    }

    /// Writes the fields into `status`.
    pub fn apply_to(&self, status: &mut StreamJobStatus) {
        status.operation = self.operation.clone();
        status.savepoint = self.savepoint.clone();
        status.last_stable_spec_hash = self.last_stable_spec_hash.clone();
        status.error = self.error.clone();
    }
}

/// The one thing the controller does next. Every action is idempotent.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Apply every child for `job_file` (first deploy, or repair of drifted children):
    /// ConfigMap, StatefulSet, Service, Secret, PodDisruptionBudget.
    CreateOrUpdateChildren {
        /// The job file to run.
        job_file: Box<JobFile>,
    },
    /// `POST /v1/savepoints` with `id` to each of `ordinals`.
    RequestSavepoint {
        /// Savepoint id, the same on every worker.
        id: String,
        /// Workers that have not answered for `id` yet.
        ordinals: Vec<u32>,
        /// Stop processing after the savepoint.
        stop: bool,
    },
    /// Every worker has the request; poll again later.
    WaitForSavepoint {
        id: String,
        /// When to look again.
        requeue_after: Duration,
    },
    /// Scale the StatefulSet to zero replicas, template unchanged: the old generation stops.
    StopWorkers,
    /// Fence `transactional_ids` (initialize a producer on each, aborting any open
    /// transaction), then write `then` as `status.operation`.
    Fence {
        /// Transactional ids of every old-generation worker.
        transactional_ids: Vec<String>,
        /// The operation to record once fencing succeeded.
        then: Box<Operation>,
    },
    /// Write `job_file` into the ConfigMap, then apply the StatefulSet built from it
    /// (template and `children::statefulset::worker_replicas`).
    RollOut {
        /// The new generation's job file.
        job_file: Box<JobFile>,
    },
    /// Delete these worker pods so they restart from the current template.
    DeletePods { ordinals: Vec<u32> },
    /// Keep `job_file` as the last stable one (the controller stores it next to the deployed
    /// job file); its spec hash is already in the record.
    MarkStable {
        /// The job file that ran healthy.
        job_file: Box<JobFile>,
    },
    /// Write `job_file` (suspended, with the restore the resume uses) into the ConfigMap and
    /// scale the StatefulSet to zero.
    ScaleToZero {
        /// The suspended job file.
        job_file: Box<JobFile>,
    },
    /// An operation cannot proceed; the old generation keeps running. Sets UpgradeBlocked.
    Block {
        /// Static reason.
        reason: &'static str,
        /// What happened and what to do.
        message: String,
    },
    /// An operation failed with nothing left to try (a rollback that did not become healthy,
    /// or no stable spec to return to). Warning event; the job is Failed.
    Fail {
        /// Static reason.
        reason: &'static str,
        /// What happened.
        message: String,
    },
    /// Nothing to do until something changes or `requeue_after` passes.
    Wait {
        /// Static reason.
        reason: &'static str,
        /// When to look again.
        requeue_after: Duration,
    },
    /// The spec is invalid: report it (condition and Warning event) and leave the running job
    /// alone.
    ReportInvalid {
        /// Every problem found.
        message: String,
    },
    /// Add the final-savepoint finalizer (`savepoint.onDelete`).
    AddFinalizer,
    /// Remove the final-savepoint finalizer (the final savepoint was taken, failed or is not
    /// wanted), with an event saying which.
    RemoveFinalizer {
        /// Static reason.
        reason: &'static str,
        /// What happened.
        message: String,
    },
    /// Delete these savepoints from storage through worker `ordinal`'s admin API; once done
    /// they leave `status.savepoint.history`.
    DisposeSavepoints {
        /// Savepoints to delete.
        savepoints: Vec<oxbow_crds::streamjob::SavepointInfo>,
        /// The worker that deletes them.
        ordinal: u32,
    },
    /// Nothing to do.
    Nothing,
}

impl Action {
    /// A static name for events, logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::CreateOrUpdateChildren { .. } => "CreateOrUpdateChildren",
            Action::RequestSavepoint { .. } => "RequestSavepoint",
            Action::WaitForSavepoint { .. } => "WaitForSavepoint",
            Action::StopWorkers => "StopWorkers",
            Action::Fence { .. } => "Fence",
            Action::RollOut { .. } => "RollOut",
            Action::DeletePods { .. } => "DeletePods",
            Action::MarkStable { .. } => "MarkStable",
            Action::ScaleToZero { .. } => "ScaleToZero",
            Action::Block { .. } => "Block",
            Action::Fail { .. } => "Fail",
            Action::Wait { .. } => "Wait",
            Action::ReportInvalid { .. } => "ReportInvalid",
            Action::AddFinalizer => "AddFinalizer",
            Action::RemoveFinalizer { .. } => "RemoveFinalizer",
            Action::DisposeSavepoints { .. } => "DisposeSavepoints",
            Action::Nothing => "Nothing",
        }
    }
}
