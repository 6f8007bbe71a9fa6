//! The test control plane is a real Kubernetes API server with its real controllers: the
//! StreamJob CRD is served with its schema, defaults, and subresources, and the StatefulSet
//! controller and garbage collector act.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::{StatefulSet, StatefulSetSpec},
    core::v1::{Container, Pod, PodSpec, PodTemplateSpec},
};
use kube::{
    Api,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
        PostParams,
    },
};
use oxbow_crds::{StreamJob, streamjob::Phase};
use oxbow_tests::{eventually, kube_env};
use serde_json::json;

fn streamjob_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("oxbow.dev", "v1alpha1", "StreamJob"),
        "streamjobs",
    )
}

fn raw_job(name: &str, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "oxbow.dev/v1alpha1",
        "kind": "StreamJob",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// Sets the value at a JSON pointer whose parent exists.
fn set(target: &mut serde_json::Value, pointer: &str, value: serde_json::Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    target.pointer_mut(parent).unwrap()[key] = value;
}

fn minimal_spec() -> serde_json::Value {
    json!({
        "kafka": {"bootstrapServers": "kafka:9092"},
        "source": {"topics": ["payments"]},
        "sink": {"topic": "alerts"},
        "checkpoint": {"storage": "s3://bucket/oxbow"},
    })
}

#[tokio::test]
async fn streamjobs_are_served_with_schema_defaults_and_subresources() {
    let (client, ns) = kube_env::with_crd("crd").await.unwrap();

    // A minimal job comes back with the schema's defaults filled in by the API server.
    let raw: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &streamjob_resource());
    raw.create(&PostParams::default(), &raw_job("minimal", minimal_spec()))
        .await
        .unwrap();
    let stored = raw.get("minimal").await.unwrap();
    assert_eq!(stored.data["spec"]["replicas"], 1);
    assert_eq!(stored.data["spec"]["state"], "running");
    assert_eq!(
        stored.data["spec"]["sink"]["deliveryGuarantee"],
        "exactly-once"
    );
    assert_eq!(stored.data["spec"]["upgrade"]["mode"], "savepoint");
    assert_eq!(stored.data["spec"]["checkpoint"]["interval"], "10s");

    // The shipped example reads back as the same typed spec.
    let text = std::fs::read_to_string(
        oxbow_tests::repo_root().join("manifests/examples/fraud-detector.yaml"),
    )
    .unwrap();
    let example = oxbow_crds::parse_manifest(&text).unwrap();
    let jobs: Api<StreamJob> = Api::namespaced(client.clone(), &ns);
    jobs.create(&PostParams::default(), &example).await.unwrap();
    let read = jobs.get("fraud-detector").await.unwrap();
    assert_eq!(read.spec, example.spec);

    // The status subresource takes status writes.
    let status = json!({"status": {"phase": "Running", "observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
                                   "selector": "app.kubernetes.io/instance=fraud-detector"}});
    jobs.patch_status(
        "fraud-detector",
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await
    .unwrap();
    let read = jobs.get("fraud-detector").await.unwrap();
    assert_eq!(
        read.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Running)
    );

    // The scale subresource drives spec.replicas, as `kubectl scale sj/fraud-detector --replicas=5` does.
    let scale = jobs.get_scale("fraud-detector").await.unwrap();
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert_eq!(
        scale
            .status
            .as_ref()
            .and_then(|s| s.selector.clone())
            .as_deref(),
        Some("app.kubernetes.io/instance=fraud-detector")
    );
    jobs.patch_scale(
        "fraud-detector",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 5}})),
    )
    .await
    .unwrap();
    assert_eq!(jobs.get("fraud-detector").await.unwrap().spec.replicas, 5);
}

#[tokio::test]
async fn schema_invalid_streamjobs_are_rejected_with_the_api_servers_reason() {
    let (client, ns) = kube_env::with_crd("invalid").await.unwrap();
    let raw: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &streamjob_resource());

    let cases = [
        (
            "replicas-as-text",
            "/replicas",
            json!("three"),
            "spec.replicas",
        ),
        ("unknown-state", "/state", json!("paused"), "spec.state"),
        (
            "bad-duration",
            "/checkpoint/interval",
            json!("ten seconds"),
            "spec.checkpoint.interval",
        ),
        (
            "bad-topic",
            "/sink/topic",
            json!("alerts topic"),
            "spec.sink.topic",
        ),
        (
            "bad-storage",
            "/checkpoint/storage",
            json!("bucket/oxbow"),
            "spec.checkpoint.storage",
        ),
        ("negative-replicas", "/replicas", json!(-1), "spec.replicas"),
    ];
    for (name, pointer, value, field) in cases {
        let mut spec = minimal_spec();
        set(&mut spec, pointer, value);
        let err = raw
            .create(&PostParams::default(), &raw_job(name, spec))
            .await
            .unwrap_err();
        let kube::Error::Api(status) = &err else {
            panic!("{name}: unexpected error {err}")
        };
        assert_eq!(status.code, 422, "{name}: {status:?}");
        assert!(
            status.message.contains(field),
            "{name}: {:?} does not name {field}",
            status.message
        );
    }

    let mut missing_sink = minimal_spec();
    missing_sink.as_object_mut().unwrap().remove("sink");
    let err = raw
        .create(&PostParams::default(), &raw_job("no-sink", missing_sink))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("spec.sink: Required value"),
        "{err}"
    );
    assert!(
        raw.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing invalid was stored"
    );
}

#[tokio::test]
async fn the_statefulset_controller_creates_pods_and_the_garbage_collector_removes_them() {
    let client = kube_env::client().await.unwrap();
    let ns = kube_env::test_namespace(&client, "sts").await.unwrap();
    let labels = std::collections::BTreeMap::from([("app".to_owned(), "smoke".to_owned())]);
    let sts = StatefulSet {
        metadata: kube::api::ObjectMeta {
            name: Some("smoke".into()),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(2),
            pod_management_policy: Some("Parallel".into()),
            service_name: Some("smoke".into()),
            selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(kube::api::ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "worker".into(),
                        image: Some("oxbow-worker:test".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    statefulsets
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let names = eventually(
        "the StatefulSet controller to create 2 pods",
        Duration::from_secs(60),
        async || -> anyhow::Result<Option<Vec<String>>> {
            let mut names: Vec<String> = pods
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect();
            names.sort();
            Ok((names.len() == 2).then_some(names))
        },
    )
    .await
    .unwrap();
    assert_eq!(names, ["smoke-0", "smoke-1"]);
    let pod = pods.get("smoke-0").await.unwrap();
    let owner = &pod.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("StatefulSet", "smoke")
    );

    statefulsets
        .delete("smoke", &DeleteParams::background())
        .await
        .unwrap();
    eventually(
        "the garbage collector to delete the pods",
        Duration::from_secs(60),
        async || -> anyhow::Result<Option<()>> {
            Ok(pods
                .list(&ListParams::default())
                .await?
                .items
                .is_empty()
                .then_some(()))
        },
    )
    .await
    .unwrap();
}
