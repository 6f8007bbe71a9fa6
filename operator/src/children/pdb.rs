//! The PodDisruptionBudget `<job>`: how many workers a drain may take at once.

use k8s_openapi::{
    api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};
use oxbow_crds::StreamJob;

use super::{BuildError, meta, meta::Owner, names};

/// Workers a voluntary disruption (node drain, cluster upgrade, autoscaler) may evict at once.
///
/// One, not zero. An evicted worker's partitions pause until the StatefulSet recreates it and it
/// restores from the last checkpoint; exactly-once holds across it (its open transaction is
/// aborted and replayed), so a disruption costs latency, never correctness. `maxUnavailable: 0`
/// would block every node drain and cluster upgrade indefinitely, which cluster operators rightly
/// treat as a misconfiguration; one at a time bounds the pause to one worker's partitions.
pub const MAX_UNAVAILABLE: i32 = 1;

/// The PodDisruptionBudget of `job`'s workers.
///
/// `unhealthyPodEvictionPolicy: AlwaysAllow`: a worker that is not ready (restoring, idle after
/// a savepoint, crash-looping) processes nothing, so evicting it costs nothing, and counting it
/// against the budget would let one broken pod block a drain.
pub fn pod_disruption_budget(job: &StreamJob) -> Result<PodDisruptionBudget, BuildError> {
    let owner = Owner::of(job)?;
    Ok(PodDisruptionBudget {
        metadata: owner.object_meta(names::pod_disruption_budget(&owner.name)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(MAX_UNAVAILABLE)),
            min_available: None,
            selector: Some(meta::label_selector(&owner.name)),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
        }),
        ..PodDisruptionBudget::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::{
        fixtures::{defaults, job_file, stream_job},
        statefulset::stateful_set,
    };

    #[test]
    fn a_drain_evicts_one_worker_at_a_time() {
        let pdb = pod_disruption_budget(&stream_job()).unwrap();
        assert_eq!(pdb.metadata.name.as_deref(), Some("fraud"));
        let spec = pdb.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        assert_eq!(
            spec.unhealthy_pod_eviction_policy.as_deref(),
            Some("AlwaysAllow")
        );
        let sts = stateful_set(&stream_job(), &job_file(), &defaults()).unwrap();
        assert_eq!(spec.selector, Some(sts.spec.unwrap().selector));
    }
}
