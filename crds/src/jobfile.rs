//! The job file: what the operator writes into the job's ConfigMap and every worker reads at
//! start. It carries the spec, the partition assignment and the restore instruction of one
//! generation, so a worker needs no Kubernetes API access.

use serde::{Deserialize, Serialize};

use crate::{assignment::Assignment, names, streamjob::StreamJobSpec};

/// `apiVersion` of the job file format.
pub const JOB_FILE_API_VERSION: &str = "oxbow.dev/job/v1";
/// Key of the job file in the job's ConfigMap.
pub const JOB_FILE_KEY: &str = "job.json";
/// Where the worker container finds the job file.
pub const JOB_FILE_PATH: &str = "/etc/oxbow/job/job.json";
/// Key of the admin token in the job's Secret.
pub const ADMIN_TOKEN_KEY: &str = "token";
/// Where the worker container finds the admin token.
pub const ADMIN_TOKEN_PATH: &str = "/etc/oxbow/admin/token";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobFile {
    /// Always [`JOB_FILE_API_VERSION`]; a worker refuses any other.
    pub api_version: String,
    /// Namespace of the StreamJob.
    pub namespace: String,
    /// Name of the StreamJob.
    pub name: String,
    /// `metadata.generation` of the spec this file was written from.
    pub spec_generation: i64,
    /// The spec of this generation, which the workers run; while an upgrade or rollback is under
    /// way it differs from the StreamJob's current spec.
    pub spec: StreamJobSpec,
    /// Partition assignment of this generation.
    pub assignment: Assignment,
    /// Where the workers restore state from when they start.
    #[serde(default)]
    pub restore: Restore,
    /// Identifies the restore this file requests; the operator writes a new one for every
    /// requested restore (an upgrade, a rescale, a resume, a changed `restoreFrom`). A worker
    /// whose partition's committed offsets record this request continues from them (it is
    /// restarting); otherwise it restores that partition as [`JobFile::restore`] says, and its
    /// next checkpoint records the request. Empty in files written before requests existed:
    /// then a savepoint restore holds until the assignment generation has committed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub restore_request: String,
}

impl JobFile {
    /// A job file for the current format.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        spec_generation: i64,
        spec: StreamJobSpec,
        assignment: Assignment,
        restore: Restore,
    ) -> Self {
        Self {
            api_version: JOB_FILE_API_VERSION.to_owned(),
            namespace: namespace.into(),
            name: name.into(),
            spec_generation,
            spec,
            assignment,
            restore,
            restore_request: String::new(),
        }
    }

    /// The same file requesting the restore `request`.
    pub fn with_restore_request(mut self, request: impl Into<String>) -> Self {
        self.restore_request = request.into();
        self
    }

    /// Parses a job file, refusing other format versions.
    pub fn from_json(text: &str) -> Result<Self, JobFileError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Version {
            api_version: String,
        }
        let version: Version = serde_json::from_str(text).map_err(JobFileError::Parse)?;
        if version.api_version != JOB_FILE_API_VERSION {
            return Err(JobFileError::Version(version.api_version));
        }
        serde_json::from_str(text).map_err(JobFileError::Parse)
    }

    /// The job's consumer group.
    pub fn consumer_group(&self) -> String {
        names::consumer_group(&self.namespace, &self.name)
    }

    /// Transactional id of worker `ordinal`.
    pub fn transactional_id(&self, ordinal: u32) -> String {
        names::transactional_id(&self.namespace, &self.name, ordinal)
    }
}

/// Where a new generation's workers load state from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "from")]
pub enum Restore {
    /// From the snapshots named by the committed offsets (the latest checkpoint), or
    /// `startingOffsets` for partitions with none.
    #[default]
    LatestCheckpoint,
    /// From a savepoint, using its offsets rather than the committed ones.
    Savepoint {
        /// Object-storage URL of the savepoint directory.
        path: String,
    },
    /// From the committed offsets, with empty state.
    Stateless,
}

/// Why a job file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JobFileError {
    /// Not JSON of the right shape.
    #[error("failed to parse the job file: {0}")]
    Parse(#[source] serde_json::Error),
    /// Written by an incompatible operator.
    #[error(
        "job file apiVersion {0:?} is not supported; this worker reads {JOB_FILE_API_VERSION:?} (is the worker image older than the operator?)"
    )]
    Version(String),
}
