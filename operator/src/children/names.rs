//! Names of a StreamJob's children, and the finalizer, ConfigMap key and pod annotation the
//! controller reads and writes, all in one place.

use oxbow_crds::admin::ADMIN_PORT;

use super::BuildError;

/// Longest StreamJob name whose children can be created.
///
/// The StatefulSet controller labels every pod with `controller-revision-hash:
/// <statefulset>-<10 characters>`, and a label value holds at most 63 characters.
pub const MAX_JOB_NAME_LEN: usize = 52;

/// Checks that `job` can name the children: the Service needs an RFC 1035 label (lowercase
/// letters, digits and '-', starting with a letter), and the StatefulSet at most
/// [`MAX_JOB_NAME_LEN`] characters.
pub fn check_job_name(job: &str) -> Result<(), BuildError> {
    let invalid = |reason| {
        Err(BuildError::InvalidName {
            name: job.to_owned(),
            reason,
        })
    };
    if job.is_empty() {
        return invalid("the name is empty");
    }
    if job.len() > MAX_JOB_NAME_LEN {
        return invalid(
            "a StreamJob name has at most 52 characters, so that its StatefulSet's pods can be labelled",
        );
    }
    if !job
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || !job.starts_with(|c: char| c.is_ascii_lowercase())
        || job.ends_with('-')
    {
        return invalid(
            "a StreamJob name must be lowercase letters, digits and '-', start with a letter and end with a letter or digit, since it names the job's Service",
        );
    }
    Ok(())
}

/// The StatefulSet of the workers.
pub fn stateful_set(job: &str) -> String {
    job.to_owned()
}

/// The headless Service of the workers; also the StatefulSet's `serviceName`.
pub fn service(job: &str) -> String {
    job.to_owned()
}

/// The ConfigMap holding the job file.
pub fn config_map(job: &str) -> String {
    format!("{job}-job")
}

/// The Secret holding the admin token.
pub fn admin_secret(job: &str) -> String {
    format!("{job}-admin")
}

/// The PodDisruptionBudget of the workers.
pub fn pod_disruption_budget(job: &str) -> String {
    job.to_owned()
}

/// The pod of worker `ordinal`.
pub fn pod(job: &str, ordinal: u32) -> String {
    format!("{}-{ordinal}", stateful_set(job))
}

/// Base URL of worker `ordinal`'s admin API, through its stable DNS name under the headless
/// Service (resolvable before the pod is ready, since the Service publishes not-ready
/// addresses).
pub fn worker_admin_url(namespace: &str, job: &str, ordinal: u32) -> String {
    format!(
        "http://{}.{}.{namespace}.svc:{ADMIN_PORT}",
        pod(job, ordinal),
        service(job)
    )
}

/// The finalizer that holds a StreamJob's deletion until its final savepoint
/// (`savepoint.onDelete`).
pub const FINALIZER: &str = "oxbow.dev/final-savepoint";

/// The key, in the job ConfigMap, of the last job file that ran healthy; the deployed one is
/// under [`oxbow_crds::jobfile::JOB_FILE_KEY`].
pub const STABLE_JOB_FILE_KEY: &str = "stable.json";

/// A pod annotation overriding the admin port, for workers that do not listen on
/// [`ADMIN_PORT`] (processes sharing one host in tests).
pub const ADMIN_PORT_ANNOTATION: &str = "oxbow.dev/admin-port";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_named_after_the_job() {
        assert_eq!(stateful_set("fraud"), "fraud");
        assert_eq!(service("fraud"), "fraud");
        assert_eq!(config_map("fraud"), "fraud-job");
        assert_eq!(admin_secret("fraud"), "fraud-admin");
        assert_eq!(pod_disruption_budget("fraud"), "fraud");
        assert_eq!(pod("fraud", 3), "fraud-3");
        assert_eq!(
            oxbow_crds::names::ordinal_from_pod_name(&pod("fraud-detector", 12)),
            Some(12)
        );
        assert_eq!(
            worker_admin_url("prod", "fraud", 2),
            "http://fraud-2.fraud.prod.svc:9249"
        );
    }

    #[test]
    fn names_that_cannot_name_a_service_or_statefulset_are_refused() {
        for good in [
            "fraud",
            "fraud-detector-2",
            "a",
            &"a".repeat(MAX_JOB_NAME_LEN),
        ] {
            assert!(check_job_name(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "fraud.v2",
            "2fast",
            "Fraud",
            "fraud-",
            "-fraud",
            "fraud_detector",
            &"a".repeat(MAX_JOB_NAME_LEN + 1),
        ] {
            assert!(
                matches!(check_job_name(bad), Err(BuildError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }
}
