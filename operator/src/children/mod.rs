//! The desired children of a StreamJob, built as plain Kubernetes objects.
//!
//! Pure functions: no client, no clock, no randomness. The controller applies what they return
//! with server-side apply under its field manager. One file per child:
//!
//! - [`statefulset`]: the workers (`<job>`), pod management Parallel, update strategy OnDelete.
//! - [`service`]: the headless Service (`<job>`) that gives every worker a DNS name.
//! - [`configmap`]: the job file (`<job>-job`, key `job.json`) the workers read at start.
//! - [`secret`]: the admin token (`<job>-admin`, key `token`).
//! - [`pdb`]: the PodDisruptionBudget (`<job>`).
//!
//! [`names`] holds every child's name; [`meta`] the labels and owner reference they share.
//!
//! The StreamJob gives the children their identity (name, namespace, uid for the owner
//! reference); the [`JobFile`] gives the spec the workers run. The two differ on purpose while
//! an upgrade or a rollback is under way: the StatefulSet describes the generation being rolled
//! out (the job file's spec), not whatever the user last wrote.

pub mod configmap;
pub mod meta;
pub mod names;
pub mod pdb;
pub mod secret;
pub mod service;
pub mod statefulset;

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Secret, Service},
    policy::v1::PodDisruptionBudget,
};
use oxbow_crds::{StreamJob, duration::DurationError, jobfile::JobFile};

/// Operator-wide settings the builders need, passed explicitly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerDefaults {
    /// Worker image for jobs that do not set `spec.image`.
    pub image: String,
}

/// Every child of one StreamJob.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    /// The workers.
    pub stateful_set: StatefulSet,
    /// The headless Service.
    pub service: Service,
    /// The job file.
    pub config_map: ConfigMap,
    /// The admin token.
    pub admin_secret: Secret,
    /// The disruption budget.
    pub pod_disruption_budget: PodDisruptionBudget,
}

/// Builds every child of `job`, running `job_file`, with the admin token `admin_token`.
///
/// The controller usually applies them at different moments (the ConfigMap and StatefulSet only
/// when a generation rolls out); the per-child functions are there for that.
pub fn build(
    job: &StreamJob,
    job_file: &JobFile,
    admin_token: &str,
    defaults: &WorkerDefaults,
) -> Result<Children, BuildError> {
    Ok(Children {
        stateful_set: statefulset::stateful_set(job, job_file, defaults)?,
        service: service::service(job)?,
        config_map: configmap::config_map(job, job_file)?,
        admin_secret: secret::admin_secret(job, admin_token)?,
        pod_disruption_budget: pdb::pod_disruption_budget(job)?,
    })
}

/// Why a child could not be built. Each is a bug in the caller or a StreamJob the API server
/// should not have admitted; none is fixed by retrying.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The StreamJob lacks metadata every stored object has.
    #[error("failed to identify the StreamJob: metadata.{0} is not set")]
    MissingMetadata(&'static str),
    /// The StreamJob's name cannot name its children.
    #[error("failed to name the children of StreamJob {name:?}: {reason}")]
    InvalidName {
        /// The StreamJob's name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The job file belongs to another StreamJob.
    #[error(
        "failed to build the children of StreamJob {namespace}/{name}: the job file is for {file_namespace}/{file_name}"
    )]
    JobFileMismatch {
        /// Namespace of the StreamJob.
        namespace: String,
        /// Name of the StreamJob.
        name: String,
        /// Namespace in the job file.
        file_namespace: String,
        /// Name in the job file.
        file_name: String,
    },
    /// The job file could not be serialized.
    #[error("failed to serialize the job file: {0}")]
    SerializeJobFile(#[source] serde_json::Error),
    /// `spec.checkpoint.timeout` does not parse (validation should have caught it).
    #[error("failed to read spec.checkpoint.timeout: {0}")]
    CheckpointTimeout(#[source] DurationError),
}

impl BuildError {
    /// A static reason for Events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            BuildError::MissingMetadata(_) => "MissingMetadata",
            BuildError::InvalidName { .. } => "InvalidName",
            BuildError::JobFileMismatch { .. } => "JobFileMismatch",
            BuildError::SerializeJobFile(_) => "SerializeJobFile",
            BuildError::CheckpointTimeout(_) => "InvalidCheckpointTimeout",
        }
    }
}

#[cfg(test)]
pub(crate) mod fixtures;

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use fixtures::{defaults, job_file, stream_job};

    fn all_metadata(children: &Children) -> Vec<(&'static str, &ObjectMeta)> {
        vec![
            ("StatefulSet", &children.stateful_set.metadata),
            ("Service", &children.service.metadata),
            ("ConfigMap", &children.config_map.metadata),
            ("Secret", &children.admin_secret.metadata),
            (
                "PodDisruptionBudget",
                &children.pod_disruption_budget.metadata,
            ),
        ]
    }

    #[test]
    fn every_child_is_owned_by_the_streamjob_and_labelled() {
        let children = build(&stream_job(), &job_file(), "token", &defaults()).unwrap();
        for (kind, meta) in all_metadata(&children) {
            assert_eq!(meta.namespace.as_deref(), Some("payments"), "{kind}");
            let owners = meta.owner_references.clone().unwrap_or_default();
            assert_eq!(owners.len(), 1, "{kind}");
            let owner = &owners[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
                ("StreamJob", "fraud", "9f1c0a52-1b7e-4f0e-a9a3-6a3d2c1e0b77"),
                "{kind}"
            );
            assert_eq!(owner.controller, Some(true), "{kind}");
            assert_eq!(owner.block_owner_deletion, Some(true), "{kind}");
            let labels = meta.labels.clone().unwrap_or_default();
            assert_eq!(
                labels["app.kubernetes.io/managed-by"], "oxbow-operator",
                "{kind}"
            );
            assert_eq!(labels["app.kubernetes.io/instance"], "fraud", "{kind}");
            assert_eq!(labels["app.kubernetes.io/name"], "oxbow-worker", "{kind}");
        }
    }

    #[test]
    fn children_of_one_kind_have_distinct_names_derived_from_the_job() {
        let children = build(&stream_job(), &job_file(), "token", &defaults()).unwrap();
        let names: Vec<_> = all_metadata(&children)
            .into_iter()
            .map(|(kind, m)| (kind, m.name.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            names,
            [
                ("StatefulSet", "fraud".to_owned()),
                ("Service", "fraud".to_owned()),
                ("ConfigMap", "fraud-job".to_owned()),
                ("Secret", "fraud-admin".to_owned()),
                ("PodDisruptionBudget", "fraud".to_owned()),
            ]
        );
    }

    #[test]
    fn building_is_deterministic() {
        let a = build(&stream_job(), &job_file(), "token", &defaults()).unwrap();
        let b = build(&stream_job(), &job_file(), "token", &defaults()).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            serde_json::to_string(&a.stateful_set).unwrap(),
            serde_json::to_string(&b.stateful_set).unwrap()
        );
    }
}
