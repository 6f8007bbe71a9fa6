//! What every child shares: labels, the owner reference to the StreamJob, its namespace.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;
use oxbow_crds::{StreamJob, jobfile::JobFile, names::labels};

use super::{BuildError, names};

/// Labels that select a job's worker pods: `app.kubernetes.io/name: oxbow-worker` and
/// `app.kubernetes.io/instance: <job>`. They never change, since a StatefulSet's selector is
/// immutable.
pub fn selector_labels(job: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.to_owned(), labels::WORKER_NAME.to_owned()),
        (labels::INSTANCE.to_owned(), job.to_owned()),
    ])
}

/// Labels of every child and every worker pod: the selector labels and
/// `app.kubernetes.io/managed-by: oxbow-operator`.
pub fn labels(job: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(job);
    labels.insert(labels::MANAGED_BY.to_owned(), labels::MANAGER.to_owned());
    labels
}

/// The label selector of the worker pods.
pub fn label_selector(job: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(job)),
        match_expressions: None,
    }
}

/// The worker pods' selector as a string, for `status.selector` (the scale subresource, HPA,
/// KEDA) and for listing the pods.
pub fn selector_string(job: &str) -> String {
    selector_labels(job)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The identity of a StreamJob, checked once, from which every child takes its metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Owner {
    /// Name of the StreamJob.
    pub name: String,
    /// Namespace of the StreamJob and of every child.
    pub namespace: String,
    /// The controller owner reference every child carries.
    pub reference: OwnerReference,
}

impl Owner {
    /// The identity of `job`: it must have a name that can name its children, a namespace and
    /// a uid (every StreamJob read from the API server has them).
    pub fn of(job: &StreamJob) -> Result<Self, BuildError> {
        let name = job
            .metadata
            .name
            .clone()
            .ok_or(BuildError::MissingMetadata("name"))?;
        names::check_job_name(&name)?;
        let namespace = job
            .metadata
            .namespace
            .clone()
            .ok_or(BuildError::MissingMetadata("namespace"))?;
        let uid = job
            .metadata
            .uid
            .clone()
            .ok_or(BuildError::MissingMetadata("uid"))?;
        // Garbage collection deletes the children with the StreamJob; blockOwnerDeletion makes a
        // foreground deletion of the StreamJob wait for them.
        let reference = OwnerReference {
            api_version: StreamJob::api_version(&()).into_owned(),
            kind: StreamJob::kind(&()).into_owned(),
            name: name.clone(),
            uid,
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        Ok(Self {
            name,
            namespace,
            reference,
        })
    }

    /// Checks that `job_file` is this StreamJob's.
    pub fn check_job_file(&self, job_file: &JobFile) -> Result<(), BuildError> {
        if job_file.name == self.name && job_file.namespace == self.namespace {
            return Ok(());
        }
        Err(BuildError::JobFileMismatch {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            file_namespace: job_file.namespace.clone(),
            file_name: job_file.name.clone(),
        })
    }

    /// Metadata of a child called `name`: namespace, standard labels, owner reference.
    pub fn object_meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels(&self.name)),
            owner_references: Some(vec![self.reference.clone()]),
            ..ObjectMeta::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::fixtures::stream_job;

    #[test]
    fn the_owner_reference_makes_the_streamjob_the_controller() {
        let owner = Owner::of(&stream_job()).unwrap();
        let r = &owner.reference;
        assert_eq!(r.api_version, "oxbow.dev/v1alpha1");
        assert_eq!(r.kind, "StreamJob");
        assert_eq!(r.name, "fraud");
        assert_eq!(r.uid, "9f1c0a52-1b7e-4f0e-a9a3-6a3d2c1e0b77");
        assert_eq!(r.controller, Some(true));
        assert_eq!(r.block_owner_deletion, Some(true));
    }

    #[test]
    fn a_streamjob_without_identity_builds_nothing() {
        for (field, clear) in [
            (
                "name",
                (|j: &mut StreamJob| j.metadata.name = None) as fn(&mut StreamJob),
            ),
            ("namespace", |j| j.metadata.namespace = None),
            ("uid", |j| j.metadata.uid = None),
        ] {
            let mut job = stream_job();
            clear(&mut job);
            match Owner::of(&job) {
                Err(BuildError::MissingMetadata(f)) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let mut job = stream_job();
        job.metadata.name = Some("fraud.v2".into());
        assert_eq!(Owner::of(&job).unwrap_err().reason(), "InvalidName");
    }

    #[test]
    fn the_selector_string_selects_exactly_the_selector_labels() {
        assert_eq!(
            selector_string("fraud"),
            "app.kubernetes.io/instance=fraud,app.kubernetes.io/name=oxbow-worker"
        );
        let managed = labels("fraud");
        assert_eq!(managed["app.kubernetes.io/managed-by"], "oxbow-operator");
        assert!(
            selector_labels("fraud")
                .iter()
                .all(|(k, v)| managed[k] == *v)
        );
    }
}
