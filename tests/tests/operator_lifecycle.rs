//! End to end: the operator against the real control plane, with the stand-in kubelet running
//! each worker pod as a real `oxbow-worker` process against a real broker. A StreamJob deploys,
//! its two workers restore and process, every window result reaches the sink exactly once, and
//! the status says Running and Ready. Then `kubectl scale --replicas=3` (the scale subresource)
//! rescales it through a stop-with-savepoint: three workers restore the savepoint and go on, and
//! the sink still holds every result exactly once. A second job takes a savepoint on a nonce,
//! is suspended and resumed, again losing and doubling nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use oxbow_crds::{
    StreamJob, StreamJobStatus,
    streamjob::{Phase, SavepointTrigger},
};
use oxbow_operator::{children::WorkerDefaults, controller};
use oxbow_tests::{
    kafka, kube_env,
    kubelet::Kubelet,
    unique_name,
    windows::{self, Event},
    worker::eventually,
};
use rdkafka::producer::FutureProducer;

/// A namespace with the operator, the stand-in kubelet, the topics and a job `sums` counting
/// and summing per key in 1 s windows.
struct Setup {
    jobs: Api<StreamJob>,
    bootstrap: String,
    input: String,
    output: String,
    producer: FutureProducer,
    base: i64,
    events: Vec<Event>,
    operator: tokio::task::JoinHandle<()>,
    kubelet: Kubelet,
}

impl Setup {
    async fn start(prefix: &str, replicas: i32) -> Setup {
        let client = kube_env::client().await.unwrap();
        kube_env::install_crd(&client).await.unwrap();
        let ns = kube_env::test_namespace(&client, prefix).await.unwrap();
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
                controller::run(client, &[ns], defaults, Default::default()).await;
            }
        });
        let kubelet = Kubelet::start(client.clone(), &ns, Vec::new());
        let job = oxbow_crds::parse_manifest(&format!(
            r#"
apiVersion: oxbow.dev/v1alpha1
kind: StreamJob
metadata: {{name: sums}}
spec:
  replicas: {replicas}
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
        let jobs: Api<StreamJob> = Api::namespaced(client, &ns);
        jobs.create(&PostParams::default(), &job).await.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        Setup {
            jobs,
            producer: kafka::config(&bootstrap).create().unwrap(),
            bootstrap,
            input,
            output,
            base: now - now % 1000,
            events: Vec::new(),
            operator,
            kubelet,
        }
    }

    /// Waits until the status satisfies `done`, and returns it.
    async fn status_when(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&StreamJobStatus) -> bool,
    ) -> StreamJobStatus {
        eventually(what, timeout, async || {
            self.jobs.get("sums").await.ok()?.status.filter(&done)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}: {:#?}", status_now(&self.jobs)))
    }

    /// Running with `replicas` ready workers and no operation under way.
    async fn running(&self, replicas: i32) -> StreamJobStatus {
        self.status_when("the job to be Running", Duration::from_secs(120), |s| {
            s.phase == Some(Phase::Running) && s.ready_replicas == replicas && s.operation.is_none()
        })
        .await
    }

    async fn patch(&self, patch: serde_json::Value) {
        self.jobs
            .patch("sums", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Events `from..to`: key i % 6 on partition key % 2, value i % 7, time base + 25 i.
    async fn send(&mut self, from: i64, to: i64) {
        for i in from..to {
            let e = (i % 6, i % 7, self.base + 25 * i);
            kafka::send_event(&self.producer, &self.input, (e.0 % 2) as i32, e)
                .await
                .unwrap();
            self.events.push(e);
        }
    }

    /// Closes every window after event `last`, checks the sink holds every window exactly
    /// once, and tears down.
    async fn finish(mut self, last: i64) {
        let closing = self.base + 25 * last + 5_000;
        for k in 0..6 {
            let e = (k, 0, closing);
            kafka::send_event(&self.producer, &self.input, (k % 2) as i32, e)
                .await
                .unwrap();
            self.events.push(e);
        }
        let want = windows::expected(&self.events, closing);
        let (bootstrap, output) = (&self.bootstrap, &self.output);
        let got = eventually(
            "every window in the sink",
            Duration::from_secs(60),
            async || {
                let got = windows::results(bootstrap, output, Duration::from_millis(500)).ok()?;
                (got.len() >= want.len()).then_some(got)
            },
        )
        .await
        .unwrap();
        windows::assert_exactly(&got, &want);
        self.jobs
            .delete("sums", &DeleteParams::foreground())
            .await
            .unwrap();
        self.kubelet.shutdown().await;
        self.operator.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_job_runs_its_workers_and_delivers_every_result_once() {
    let deployed_at = Instant::now();
    let mut setup = Setup::start("lifecycle", 2).await;

    // Both workers restore and process: the job is Running and Ready.
    let status = setup.running(2).await;
    let ready_after = deployed_at.elapsed();
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{status:?}"
    );
    assert!(status.last_stable_spec_hash.is_some(), "{status:?}");
    setup.send(0, 400).await;

    // Rescale to three workers through the scale subresource, as `kubectl scale` does.
    let scale = serde_json::json!({"spec": {"replicas": 3}});
    let rescale_at = Instant::now();
    setup
        .jobs
        .patch_scale("sums", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();
    let status = setup
        .status_when("the rescale to finish", Duration::from_secs(120), |s| {
            s.phase == Some(Phase::Running)
                && s.ready_replicas == 3
                && s.operation.is_none()
                && s.assignment.as_ref().is_some_and(|a| a.workers.len() == 3)
        })
        .await;
    let rescale_took = rescale_at.elapsed();
    let savepoint = status.savepoint.and_then(|s| s.last).expect("a savepoint");
    assert!(savepoint.path.contains("/savepoints/"), "{savepoint:?}");
    assert_eq!(
        status.restored_from.map(|r| r.path),
        Some(savepoint.path.clone()),
        "the new generation restored from the rescale's savepoint"
    );

    // More input after the rescale; every window of both phases exactly once.
    setup.send(400, 800).await;
    setup.finish(800).await;
    eprintln!(
        "deploy to Running and Ready: {} ms; rescale 2 -> 3 to Running and Ready: {} ms",
        ready_after.as_millis(),
        rescale_took.as_millis()
    );
}

/// A savepoint nonce takes a savepoint while the job keeps running; suspending stops every worker
/// with a savepoint and scales to zero; resuming restores from it; nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_savepoint_nonce_then_suspend_and_resume_keep_every_result_exactly_once() {
    let mut setup = Setup::start("suspend", 1).await;
    setup.running(1).await;
    setup.send(0, 200).await;

    // A manual savepoint: the job keeps running.
    setup
        .patch(serde_json::json!({"spec": {"savepoint": {"triggerNonce": 1}}}))
        .await;
    let status = setup
        .status_when("the manual savepoint", Duration::from_secs(90), |s| {
            s.savepoint
                .as_ref()
                .and_then(|s| s.last.as_ref())
                .is_some_and(|l| l.trigger == SavepointTrigger::Manual)
        })
        .await;
    let manual = status.savepoint.and_then(|s| s.last).expect("a savepoint");
    assert!(manual.path.contains("/savepoints/"), "{manual:?}");
    setup.running(1).await;

    // Suspend: a savepoint, then no worker runs.
    setup.send(200, 300).await;
    setup
        .patch(serde_json::json!({"spec": {"state": "suspended"}}))
        .await;
    setup
        .status_when("the job to be Suspended", Duration::from_secs(90), |s| {
            s.phase == Some(Phase::Suspended) && s.replicas == 0
        })
        .await;
    // Input while suspended waits in Kafka.
    setup.send(300, 400).await;

    // Resume: the workers restore from the suspend savepoint and catch up.
    setup
        .patch(serde_json::json!({"spec": {"state": "running"}}))
        .await;
    let status = setup.running(1).await;
    let last = status.savepoint.and_then(|s| s.last).expect("a savepoint");
    assert_eq!(last.trigger, SavepointTrigger::Suspend);
    assert_eq!(status.restored_from.map(|r| r.path), Some(last.path));
    setup.finish(400).await;
}

fn status_now(jobs: &Api<StreamJob>) -> Option<StreamJobStatus> {
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
