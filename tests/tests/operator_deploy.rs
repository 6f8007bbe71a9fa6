//! The operator against the real control plane (API server, StatefulSet controller, garbage
//! collector): a StreamJob becomes its children — StatefulSet, headless Service, job ConfigMap,
//! admin Secret, PodDisruptionBudget — applied server-side with owner references, and the real
//! StatefulSet controller creates its pods; an invalid spec is reported and creates nothing;
//! deleting the job lets the garbage collector remove the children.
//!
//! No kubelet runs here, so the pods stay Pending: this covers deployment, not the worker
//! lifecycle behind it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Pod, Secret, Service},
    events::v1::Event,
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use oxbow_crds::{
    StreamJob, StreamJobStatus,
    jobfile::JobFile,
    streamjob::{ConditionType, Phase, find_condition},
};
use oxbow_tests::{eventually, kafka, kube_env, lifecycle, manifest};

/// A job whose pipeline filters, repartitions by account and sums per minute.
fn manifest(name: &str, bootstrap: &str, topic: &str, filter: &str) -> StreamJob {
    manifest::filter_job(name, bootstrap, topic, filter)
        .source("eventTime: {field: ts}")
        .step("keyBy: \"account\"")
        .step("window: {tumbling: 1m}, aggregate: {total: \"sum(amount)\"}")
        .stream_job()
        .unwrap()
}

/// The status of job `name` once it satisfies `done`.
async fn status_when(
    jobs: &Api<StreamJob>,
    name: &str,
    what: &str,
    done: impl Fn(&StreamJobStatus) -> bool,
) -> StreamJobStatus {
    eventually(what, Duration::from_secs(60), async || {
        jobs.get(name).await.ok()?.status.filter(&done)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamjob_becomes_its_children_and_an_invalid_one_is_reported() {
    let (client, ns) = kube_env::with_crd("operator").await.unwrap();
    let bootstrap = kafka::bootstrap();
    let topic = kafka::new_topic(&bootstrap, "payments", 4).await.unwrap();

    let operator = lifecycle::start_operator(&client, &ns);

    let jobs: Api<StreamJob> = Api::namespaced(client.clone(), &ns);
    let job = jobs
        .create(
            &PostParams::default(),
            &manifest("fraud", &bootstrap, &topic, "amount > 0"),
        )
        .await
        .unwrap();
    let uid = job.uid().unwrap();
    let timeout = Duration::from_secs(60);

    // Every child, owned by the job.
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let set = eventually("the StatefulSet", timeout, async || {
        sets.get_opt("fraud").await.ok().flatten()
    })
    .await
    .unwrap();
    let owned =
        |refs: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            refs.is_some_and(|r| r.iter().any(|o| o.uid == uid && o.controller == Some(true)))
        };
    assert!(owned(set.metadata.owner_references.as_ref()));
    let spec = set.spec.clone().unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(
        spec.update_strategy.and_then(|s| s.type_).as_deref(),
        Some("OnDelete")
    );
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let map = maps.get("fraud-job").await.unwrap();
    assert!(owned(map.metadata.owner_references.as_ref()));
    let job_file = JobFile::from_json(&map.data.unwrap()["job.json"]).unwrap();
    assert_eq!(job_file.assignment.workers.len(), 2);
    let mut assigned: Vec<(String, i32)> = job_file
        .assignment
        .workers
        .iter()
        .flat_map(|w| w.topic_partitions().map(|tp| (tp.topic, tp.partition)))
        .filter(|(t, _)| *t == topic)
        .collect();
    assigned.sort();
    assert_eq!(
        assigned,
        (0..4).map(|p| (topic.clone(), p)).collect::<Vec<_>>(),
        "every source partition is assigned once"
    );
    assert!(
        job_file
            .assignment
            .workers
            .iter()
            .any(|w| w.partitions.contains_key(&format!("{ns}.fraud.shuffle"))),
        "the pipeline repartitions, so the shuffle topic's partitions are assigned too"
    );
    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("fraud-admin")
        .await
        .unwrap();
    assert!(owned(secret.metadata.owner_references.as_ref()));
    assert!(
        secret
            .data
            .unwrap()
            .get("token")
            .is_some_and(|t| t.0.len() >= 32)
    );
    let service = Api::<Service>::namespaced(client.clone(), &ns)
        .get("fraud")
        .await
        .unwrap();
    assert_eq!(
        service.spec.unwrap().cluster_ip.as_deref(),
        Some("None"),
        "headless"
    );
    // The PodDisruptionBudget (policy/v1) needs Kubernetes 1.21; this control plane is 1.20,
    // where the operator skips it and says so.
    if let Ok(Some(pdb)) = Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
        .get_opt("fraud")
        .await
    {
        assert!(owned(pdb.metadata.owner_references.as_ref()));
    }

    // The real StatefulSet controller creates both pods.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    eventually("two worker pods", timeout, async || {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let mut names: Vec<String> = list.items.iter().map(ResourceExt::name_any).collect();
        names.sort();
        (names == ["fraud-0", "fraud-1"]).then_some(())
    })
    .await
    .unwrap();

    // The status says where the job is.
    let status = status_when(&jobs, "fraud", "the status", |s| {
        s.observed_generation == Some(1) && s.assignment.is_some()
    })
    .await;
    assert_eq!(status.phase, Some(Phase::Deploying), "{status:?}");
    assert!(
        find_condition(&status.conditions, ConditionType::Ready)
            .is_some_and(|c| c.status == "False"),
        "{status:?}"
    );

    // An invalid spec creates nothing and says why.
    jobs.create(
        &PostParams::default(),
        &manifest("broken", &bootstrap, &topic, "amount >"),
    )
    .await
    .unwrap();
    let status = status_when(&jobs, "broken", "the invalid job's status", |s| {
        s.phase.is_some()
    })
    .await;
    assert_eq!(status.phase, Some(Phase::Failed), "{status:?}");
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let event = eventually("an InvalidSpec event", timeout, async || {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("InvalidSpec"))
    })
    .await
    .unwrap();
    assert!(
        event
            .note
            .unwrap_or_default()
            .contains("spec.pipeline[0].filter"),
        "the event names the field"
    );
    assert!(sets.get_opt("broken").await.unwrap().is_none());

    // Deleting the job lets the garbage collector remove its children.
    jobs.delete("fraud", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually(
        "the StatefulSet to be collected",
        Duration::from_secs(90),
        async || sets.get_opt("fraud").await.ok()?.is_none().then_some(()),
    )
    .await
    .unwrap();
    operator.abort();
}
