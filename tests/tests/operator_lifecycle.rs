//! End to end: the operator against the real control plane, with the stand-in kubelet running
//! each worker pod as a real `oxbow-worker` process against a real broker. A StreamJob deploys,
//! its two workers restore and process, every window result reaches the sink exactly once, and
//! the status says Running and Ready. Then `kubectl scale --replicas=3` (the scale subresource)
//! rescales it through a stop-with-savepoint: three workers restore the savepoint and go on, and
//! the sink still holds every result exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use oxbow_crds::{StreamJob, streamjob::Phase};
use oxbow_operator::{children::WorkerDefaults, controller};
use oxbow_tests::{kafka, kube_env, kubelet::Kubelet, unique_name, windows, worker::eventually};
use rdkafka::producer::FutureProducer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_job_runs_its_workers_and_delivers_every_result_once() {
    let client = kube_env::client().await.unwrap();
    kube_env::install_crd(&client).await.unwrap();
    let ns = kube_env::test_namespace(&client, "lifecycle")
        .await
        .unwrap();
    let bootstrap = kafka::bootstrap();
    let (input, output) = (unique_name("lc-in"), unique_name("lc-out"));
    kafka::create_topic(&bootstrap, &input, 2).await.unwrap();
    kafka::create_topic(&bootstrap, &output, 1).await.unwrap();
    let storage = std::env::temp_dir().join(unique_name("oxbow-lifecycle"));
    std::fs::create_dir_all(&storage).unwrap();

    let operator = tokio::spawn({
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            let defaults = WorkerDefaults {
                image: "oxbow-worker:test".into(),
            };
            controller::run(client, Some(&ns), defaults).await;
        }
    });
    let kubelet = Kubelet::start(client.clone(), &ns, Vec::new());

    let job = oxbow_crds::parse_manifest(&format!(
        r#"
apiVersion: oxbow.dev/v1alpha1
kind: StreamJob
metadata: {{name: sums}}
spec:
  replicas: 2
  kafka: {{bootstrapServers: "{bootstrap}"}}
  source: {{topics: [{input}], eventTime: {{field: ts, grace: 0s}}, partitionedBy: "k"}}
  pipeline:
    - keyBy: "k"
    - window: {{tumbling: 1s}}
      aggregate: {{n: "count()", total: "sum(v)"}}
  sink: {{topic: {output}}}
  checkpoint: {{storage: "file://{}", interval: 500ms}}
"#,
        storage.display()
    ))
    .unwrap();
    let jobs: Api<StreamJob> = Api::namespaced(client.clone(), &ns);
    let deployed_at = Instant::now();
    jobs.create(&PostParams::default(), &job).await.unwrap();

    // Both workers restore and process: the job is Running and Ready.
    let status = eventually(
        "the job to be Running",
        Duration::from_secs(90),
        async || {
            jobs.get("sums")
                .await
                .ok()?
                .status
                .filter(|s| s.phase == Some(Phase::Running) && s.ready_replicas == 2)
        },
    )
    .await
    .unwrap();
    let ready_after = deployed_at.elapsed();
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{status:?}"
    );
    assert!(status.last_stable_spec_hash.is_some(), "{status:?}");

    // Input on both partitions; every window exactly once in the sink.
    let base = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        now - now % 1000
    };
    let producer: FutureProducer = kafka::config(&bootstrap).create().unwrap();
    let mut events = Vec::new();
    for i in 0..400_i64 {
        let e = (i % 6, i % 7, base + 25 * i);
        kafka::send_event(&producer, &input, (e.0 % 2) as i32, e)
            .await
            .unwrap();
        events.push(e);
    }
    // Rescale to three workers through the scale subresource, as `kubectl scale` does.
    let scale = serde_json::json!({"spec": {"replicas": 3}});
    let rescale_at = Instant::now();
    jobs.patch_scale("sums", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();
    let status = eventually(
        "the rescale to finish",
        Duration::from_secs(120),
        async || {
            jobs.get("sums").await.ok()?.status.filter(|s| {
                s.phase == Some(Phase::Running)
                    && s.ready_replicas == 3
                    && s.operation.is_none()
                    && s.assignment.as_ref().is_some_and(|a| a.workers.len() == 3)
            })
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:#?}", status_now(&jobs)));
    let rescale_took = rescale_at.elapsed();
    let savepoint = status.savepoint.and_then(|s| s.last).expect("a savepoint");
    assert!(savepoint.path.contains("/savepoints/"), "{savepoint:?}");
    assert_eq!(
        status.restored_from.map(|r| r.path),
        Some(savepoint.path.clone()),
        "the new generation restored from the rescale's savepoint"
    );

    // More input after the rescale; every window of both phases exactly once.
    for i in 400..800_i64 {
        let e = (i % 6, i % 7, base + 25 * i);
        kafka::send_event(&producer, &input, (e.0 % 2) as i32, e)
            .await
            .unwrap();
        events.push(e);
    }
    let closing = base + 25 * 800 + 5_000;
    for k in 0..6 {
        kafka::send_event(&producer, &input, (k % 2) as i32, (k, 0, closing))
            .await
            .unwrap();
        events.push((k, 0, closing));
    }
    let want = windows::expected(&events, closing);
    let got = eventually(
        "every window in the sink",
        Duration::from_secs(60),
        async || {
            let got = windows::results(&bootstrap, &output, Duration::from_millis(500)).ok()?;
            (got.len() >= want.len()).then_some(got)
        },
    )
    .await
    .unwrap();
    windows::assert_exactly(&got, &want);
    eprintln!(
        "deploy to Running and Ready: {} ms; rescale 2 -> 3 to Running and Ready: {} ms",
        ready_after.as_millis(),
        rescale_took.as_millis()
    );

    jobs.delete("sums", &DeleteParams::foreground())
        .await
        .unwrap();
    kubelet.shutdown().await;
    operator.abort();
}

/// A savepoint nonce takes a savepoint while the job keeps running; suspending stops every worker
/// with a savepoint and scales to zero; resuming restores from it; nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_savepoint_nonce_then_suspend_and_resume_keep_every_result_exactly_once() {
    let client = kube_env::client().await.unwrap();
    kube_env::install_crd(&client).await.unwrap();
    let ns = kube_env::test_namespace(&client, "suspend").await.unwrap();
    let bootstrap = kafka::bootstrap();
    let (input, output) = (unique_name("sr-in"), unique_name("sr-out"));
    kafka::create_topic(&bootstrap, &input, 2).await.unwrap();
    kafka::create_topic(&bootstrap, &output, 1).await.unwrap();
    let storage = std::env::temp_dir().join(unique_name("oxbow-suspend"));
    std::fs::create_dir_all(&storage).unwrap();
    let operator = tokio::spawn({
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            let defaults = WorkerDefaults {
                image: "oxbow-worker:test".into(),
            };
            controller::run(client, Some(&ns), defaults).await;
        }
    });
    let kubelet = Kubelet::start(client.clone(), &ns, Vec::new());
    let job = oxbow_crds::parse_manifest(&format!(
        r#"
apiVersion: oxbow.dev/v1alpha1
kind: StreamJob
metadata: {{name: sums}}
spec:
  replicas: 1
  kafka: {{bootstrapServers: "{bootstrap}"}}
  source: {{topics: [{input}], eventTime: {{field: ts, grace: 0s}}, partitionedBy: "k"}}
  pipeline:
    - keyBy: "k"
    - window: {{tumbling: 1s}}
      aggregate: {{n: "count()", total: "sum(v)"}}
  sink: {{topic: {output}}}
  checkpoint: {{storage: "file://{}", interval: 500ms}}
"#,
        storage.display()
    ))
    .unwrap();
    let jobs: Api<StreamJob> = Api::namespaced(client.clone(), &ns);
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let timeout = Duration::from_secs(90);
    let running = async |replicas: i32| {
        eventually("the job to be Running", timeout, async || {
            jobs.get("sums").await.ok()?.status.filter(|s| {
                s.phase == Some(Phase::Running)
                    && s.ready_replicas == replicas
                    && s.operation.is_none()
            })
        })
        .await
        .unwrap_or_else(|e| panic!("{e}: {:#?}", status_now(&jobs)))
    };
    running(1).await;

    let base = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        now - now % 1000
    };
    let producer: FutureProducer = kafka::config(&bootstrap).create().unwrap();
    let mut events = Vec::new();
    let send = async |from: i64, to: i64, events: &mut Vec<(i64, i64, i64)>| {
        for i in from..to {
            let e = (i % 6, i % 7, base + 25 * i);
            kafka::send_event(&producer, &input, (e.0 % 2) as i32, e)
                .await
                .unwrap();
            events.push(e);
        }
    };
    send(0, 200, &mut events).await;

    // A manual savepoint: the job keeps running.
    let nonce = serde_json::json!({"spec": {"savepoint": {"triggerNonce": 1}}});
    jobs.patch("sums", &PatchParams::default(), &Patch::Merge(&nonce))
        .await
        .unwrap();
    let manual = eventually("the manual savepoint", timeout, async || {
        jobs.get("sums")
            .await
            .ok()?
            .status?
            .savepoint?
            .last
            .filter(|l| l.trigger == oxbow_crds::streamjob::SavepointTrigger::Manual)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:#?}", status_now(&jobs)));
    assert!(manual.path.contains("/savepoints/"), "{manual:?}");
    running(1).await;

    // Suspend: a savepoint, then no worker runs.
    send(200, 300, &mut events).await;
    let suspend = serde_json::json!({"spec": {"state": "suspended"}});
    jobs.patch("sums", &PatchParams::default(), &Patch::Merge(&suspend))
        .await
        .unwrap();
    eventually("the job to be Suspended", timeout, async || {
        jobs.get("sums")
            .await
            .ok()?
            .status
            .filter(|s| s.phase == Some(Phase::Suspended) && s.replicas == 0)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:#?}", status_now(&jobs)));
    // Input while suspended waits in Kafka.
    send(300, 400, &mut events).await;

    // Resume: the workers restore from the suspend savepoint and catch up.
    let resume = serde_json::json!({"spec": {"state": "running"}});
    jobs.patch("sums", &PatchParams::default(), &Patch::Merge(&resume))
        .await
        .unwrap();
    let status = running(1).await;
    let last = status.savepoint.and_then(|s| s.last).expect("a savepoint");
    assert_eq!(
        last.trigger,
        oxbow_crds::streamjob::SavepointTrigger::Suspend
    );
    assert_eq!(status.restored_from.map(|r| r.path), Some(last.path));

    let closing = base + 25 * 400 + 5_000;
    for k in 0..6 {
        kafka::send_event(&producer, &input, (k % 2) as i32, (k, 0, closing))
            .await
            .unwrap();
        events.push((k, 0, closing));
    }
    let want = windows::expected(&events, closing);
    let got = eventually(
        "every window in the sink",
        Duration::from_secs(60),
        async || {
            let got = windows::results(&bootstrap, &output, Duration::from_millis(500)).ok()?;
            (got.len() >= want.len()).then_some(got)
        },
    )
    .await
    .unwrap();
    windows::assert_exactly(&got, &want);
    jobs.delete("sums", &DeleteParams::foreground())
        .await
        .unwrap();
    kubelet.shutdown().await;
    operator.abort();
}

fn status_now(jobs: &Api<StreamJob>) -> Option<oxbow_crds::StreamJobStatus> {
    let jobs = jobs.clone();
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .ok()?
            .block_on(jobs.get("sums"))
            .ok()?
            .status
    })
    .join()
    .ok()
    .flatten()
}
