//! What the controller's observe stage hands to the planner: plain data, no client.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use oxbow_crds::{
    StreamJobSpec, StreamJobStatus,
    admin::{SavepointResult, WorkerState, WorkerStatus},
    jobfile::JobFile,
    validation::{ValidatedSpec, ValidationErrors},
};

/// Everything the planner decides from, read in one observe stage.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Namespace of the StreamJob.
    pub namespace: String,
    /// Name of the StreamJob.
    pub name: String,
    /// `metadata.generation` of the StreamJob.
    pub generation: i64,
    /// The spec the user wrote.
    pub spec: StreamJobSpec,
    /// `oxbow_crds::validation::validate(&spec)`.
    pub validation: Result<ValidatedSpec, ValidationErrors>,
    /// The status as last written.
    pub status: StreamJobStatus,
    /// The job file in the ConfigMap: what the workers run (or ran last).
    pub deployed: Option<JobFile>,
    /// The last job file that ran healthy, kept by the controller next to the deployed one
    /// (see [`super::Action::MarkStable`]); rollbacks return to it.
    pub stable: Option<JobFile>,
    /// The StatefulSet, if it exists.
    pub stateful_set: Option<StatefulSetState>,
    /// Worker pods that exist (terminating ones included).
    pub pods: Vec<WorkerPod>,
    /// Admin status of each reachable worker, by ordinal.
    pub workers: BTreeMap<u32, WorkerStatus>,
    /// Result of the savepoint recorded in the status (`status.savepoint.inProgress.id`), by
    /// ordinal, for the workers that answered.
    pub savepoints: BTreeMap<u32, SavepointResult>,
    /// Partition count of each source topic that exists.
    pub partitions: BTreeMap<String, i32>,
    /// Offsets of the job's input partitions, read from Kafka; `None` when the broker did
    /// not answer.
    pub progress: Option<KafkaProgress>,
    /// The StreamJob is being deleted (it has a deletion timestamp).
    pub deleting: bool,
    /// The StreamJob carries the final-savepoint finalizer.
    pub has_finalizer: bool,
    /// The time of this observation.
    pub now: Timestamp,
}

/// The job's progress as Kafka records it: every input partition's watermarks and the job
/// group's committed offset. Right whether or not any worker runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KafkaProgress {
    /// One entry per input partition (source topics, and the shuffle topic when the
    /// pipeline has one).
    pub partitions: Vec<PartitionOffsets>,
    /// Records committed per second over the recent past; `None` until two observations
    /// far enough apart exist.
    pub commit_rate: Option<f64>,
    /// How long the committed offsets have not moved while records were waiting.
    pub stalled_for: Option<std::time::Duration>,
}

/// Offsets of one input partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub topic: String,
    pub partition: i32,
    /// First offset still in the log.
    pub low_watermark: i64,
    /// Offset the next record will get.
    pub high_watermark: i64,
    /// The job group's committed offset, if it committed one.
    pub committed: Option<i64>,
}

impl PartitionOffsets {
    /// Records behind: from the committed offset (or, before the first commit, from where
    /// the job starts reading) to the high watermark.
    pub fn lag(&self, starts_at_earliest: bool) -> i64 {
        let from = match self.committed {
            Some(c) => c.max(self.low_watermark),
            None if starts_at_earliest => self.low_watermark,
            None => self.high_watermark,
        };
        (self.high_watermark - from).max(0)
    }
}

/// The StatefulSet as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatefulSetState {
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.readyReplicas`.
    pub ready_replicas: i32,
    /// Whether its pod template carries the hash of the deployed job file
    /// (`children::statefulset::JOB_FILE_HASH_ANNOTATION`).
    pub runs_deployed: bool,
}

/// One worker pod as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerPod {
    /// StatefulSet ordinal.
    pub ordinal: u32,
    /// The Ready condition is true.
    pub ready: bool,
    /// It has a deletion timestamp.
    pub terminating: bool,
    /// Its job-file hash annotation equals the deployed job file's hash.
    pub runs_deployed: bool,
}

impl Observed {
    /// The pod of `ordinal`, if it exists.
    pub fn pod(&self, ordinal: u32) -> Option<&WorkerPod> {
        self.pods.iter().find(|p| p.ordinal == ordinal)
    }

    /// Whether worker `ordinal` runs `job_file`, restored and processing.
    pub fn worker_healthy(&self, ordinal: u32, job_file: &JobFile) -> bool {
        let pod_ok = self
            .pod(ordinal)
            .is_some_and(|p| p.ready && !p.terminating && p.runs_deployed);
        let worker_ok = self.workers.get(&ordinal).is_some_and(|w| {
            w.state == WorkerState::Running
                && w.spec_generation == job_file.spec_generation
                && w.assignment_generation == job_file.assignment.generation
        });
        pod_ok && worker_ok
    }

    /// Whether every worker of `job_file` is healthy (vacuously true with none).
    pub fn all_healthy(&self, job_file: &JobFile) -> bool {
        job_file
            .assignment
            .workers
            .iter()
            .all(|w| self.worker_healthy(w.ordinal, job_file))
    }

    /// Workers that report a state in which they may consume or commit.
    pub fn processing_workers(&self) -> Vec<u32> {
        self.workers
            .values()
            .filter(|w| {
                matches!(
                    w.state,
                    WorkerState::Starting
                        | WorkerState::Restoring
                        | WorkerState::Running
                        | WorkerState::Retrying
                )
            })
            .map(|w| w.ordinal)
            .collect()
    }
}
