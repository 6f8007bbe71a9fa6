//! Names derived from a job, agreed between operator and worker.

/// Prefix of every name Oxbow derives.
const PREFIX: &str = "oxbow";

/// Label keys on every object the operator creates for a job.
pub mod labels {
    /// `app.kubernetes.io/name`, always [`WORKER_NAME`].
    pub const NAME: &str = "app.kubernetes.io/name";
    /// `app.kubernetes.io/instance`, the StreamJob's name.
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// `app.kubernetes.io/managed-by`, always [`MANAGER`].
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// Value of [`NAME`] on worker objects.
    pub const WORKER_NAME: &str = "oxbow-worker";
    /// Value of [`MANAGED_BY`].
    pub const MANAGER: &str = "oxbow-operator";
}

// Names join namespace and job with '.': a namespace is a DNS label and has no '.', so two
// jobs never share a name (with '-', `a`/`b-c` and `a-b`/`c` would).

/// The job's Kafka consumer group: its committed offsets are the job's progress.
pub fn consumer_group(namespace: &str, job: &str) -> String {
    format!("{PREFIX}.{namespace}.{job}")
}

/// The stable transactional id of worker slot `ordinal`.
pub fn transactional_id(namespace: &str, job: &str, ordinal: u32) -> String {
    format!("{PREFIX}.{namespace}.{job}.{ordinal}")
}

/// The internal repartition topic of a job whose key differs from the source partitioning.
pub fn shuffle_topic(namespace: &str, job: &str) -> String {
    format!("{namespace}.{job}.shuffle")
}

/// The StatefulSet ordinal from a pod name such as `fraud-detector-2`.
pub fn ordinal_from_pod_name(pod_name: &str) -> Option<u32> {
    let (_, ordinal) = pod_name.rsplit_once('-')?;
    if ordinal.is_empty() || (ordinal.len() > 1 && ordinal.starts_with('0')) {
        return None;
    }
    ordinal.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_distinct_per_job() {
        assert_eq!(consumer_group("prod", "fraud"), "oxbow.prod.fraud");
        assert_eq!(transactional_id("prod", "fraud", 2), "oxbow.prod.fraud.2");
        assert_eq!(shuffle_topic("prod", "fraud"), "prod.fraud.shuffle");
        assert_ne!(consumer_group("a", "b-c"), consumer_group("a-b", "c-x"));
    }

    #[test]
    fn ordinals_come_from_the_pod_name() {
        assert_eq!(ordinal_from_pod_name("fraud-detector-0"), Some(0));
        assert_eq!(ordinal_from_pod_name("fraud-detector-12"), Some(12));
        assert_eq!(ordinal_from_pod_name("fraud-detector-01"), None);
        assert_eq!(ordinal_from_pod_name("fraud-detector-x"), None);
        assert_eq!(ordinal_from_pod_name("fraud"), None);
        assert_eq!(ordinal_from_pod_name("fraud-"), None);
    }
}
