//! One StreamJob under the operator, end to end: a test namespace with the operator running
//! in-process, the stand-in kubelet running its worker pods as real `oxbow-worker` processes,
//! input and output topics on the real broker, and a job `sums` counting and summing per key
//! in 1 s windows with checkpoints in a local directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::PathBuf,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use oxbow_crds::{
    StreamJob, StreamJobStatus,
    streamjob::{ConditionType, Phase, find_condition},
};
use oxbow_operator::{children::WorkerDefaults, controller};
use rdkafka::producer::FutureProducer;

use crate::{
    Wait, kafka, kube_env,
    kubelet::Kubelet,
    now_ms, scratch_dir,
    windows::{self, Event, Window},
};

/// A namespace with the operator, the stand-in kubelet, the topics and a job `sums` counting
/// and summing per key in 1 s windows.
#[allow(missing_debug_implementations)]
pub struct Setup {
    /// The namespace's StreamJobs.
    pub jobs: Api<StreamJob>,
    /// The client.
    pub client: Client,
    /// The namespace.
    pub namespace: String,
    /// The broker.
    pub bootstrap: String,
    /// The source topic (2 partitions).
    pub input: String,
    /// The sink topic.
    pub output: String,
    /// Where checkpoints and savepoints go (`file://` storage).
    pub storage: PathBuf,
    producer: FutureProducer,
    base: i64,
    events: Mutex<Vec<Event>>,
    operator: Option<tokio::task::JoinHandle<()>>,
    /// The stand-in kubelet.
    pub kubelet: Kubelet,
}

impl Setup {
    /// The job with `replicas` workers.
    pub async fn start(prefix: &str, replicas: i32) -> Setup {
        Setup::start_with(prefix, replicas, &[]).await
    }

    /// The job with `replicas` workers and `extra` fields in its spec (YAML flow-map entries,
    /// such as `upgrade: {savepointTimeout: 10s}`).
    pub async fn start_with(prefix: &str, replicas: i32, extra: &[&str]) -> Setup {
        let (client, ns) = kube_env::with_crd(prefix).await.unwrap();
        let bootstrap = kafka::bootstrap();
        let (input, output) = kafka::source_and_sink(&bootstrap, "lc", 2).await.unwrap();
        let storage = scratch_dir("oxbow-lifecycle");
        let operator = Some(start_operator(&client, &ns));
        let kubelet = Kubelet::start(client.clone(), &ns, Vec::new());
        let storage_url = format!("file://{}", storage.display());
        let mut manifest = windows::job(
            "sums",
            &bootstrap,
            &input,
            &output,
            &storage_url,
            &Window::default(),
        )
        .replicas(replicas)
        .checkpoint("interval: 500ms");
        for entry in extra {
            manifest = manifest.spec(entry);
        }
        let jobs: Api<StreamJob> = Api::namespaced(client.clone(), &ns);
        jobs.create(&PostParams::default(), &manifest.stream_job().unwrap())
            .await
            .unwrap();
        let now = now_ms();
        Setup {
            jobs,
            client,
            namespace: ns,
            storage,
            producer: kafka::producer(&bootstrap).unwrap(),
            bootstrap,
            input,
            output,
            base: now - now % 1000,
            events: Mutex::default(),
            operator,
            kubelet,
        }
    }
    /// Kills the operator (aborts its task: no cleanup, like SIGKILL of its process).
    pub fn kill_operator(&mut self) {
        if let Some(op) = self.operator.take() {
            op.abort();
        }
    }

    /// Starts a fresh operator (after [`Setup::kill_operator`]).
    pub fn restart_operator(&mut self) {
        self.kill_operator();
        self.operator = Some(start_operator(&self.client, &self.namespace));
    }

    /// The status now.
    pub async fn status(&self) -> StreamJobStatus {
        self.jobs
            .get("sums")
            .await
            .unwrap()
            .status
            .unwrap_or_default()
    }

    /// Waits until the status satisfies `done`, and returns it; on timeout, fails showing the
    /// status.
    pub async fn status_when(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&StreamJobStatus) -> bool,
    ) -> StreamJobStatus {
        self.wait(what, timeout)
            .until(async || self.jobs.get("sums").await.ok()?.status.filter(&done))
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// A wait that shows the job's status if it times out.
    pub fn wait(&self, what: &str, timeout: Duration) -> Wait<impl AsyncFnMut() -> String + '_> {
        Wait::new(what, timeout).diagnose(async || {
            let status = self.jobs.get("sums").await.map(|j| j.status);
            format!("the job's status: {status:#?}")
        })
    }

    /// Waits until condition `type_` is True; the status and the condition.
    pub async fn condition_true(
        &self,
        type_: ConditionType,
        timeout: Duration,
    ) -> (StreamJobStatus, Condition) {
        let status = self
            .status_when(&format!("{} to be True", type_.as_str()), timeout, |s| {
                is_true(s, type_)
            })
            .await;
        let condition = find_condition(&status.conditions, type_)
            .cloned()
            .unwrap_or_else(|| panic!("no {} in {status:#?}", type_.as_str()));
        (status, condition)
    }

    /// Running with `replicas` ready workers and no operation under way.
    pub async fn running(&self, replicas: i32) -> StreamJobStatus {
        self.status_when("the job to be Running", Duration::from_secs(120), |s| {
            s.phase == Some(Phase::Running) && s.ready_replicas == replicas && s.operation.is_none()
        })
        .await
    }

    /// JSON merge patch of the StreamJob.
    pub async fn patch(&self, patch: serde_json::Value) {
        self.jobs
            .patch("sums", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Stops every worker with a savepoint (`spec.state: suspended`) and waits until none
    /// runs.
    pub async fn suspend(&self) -> StreamJobStatus {
        self.patch(serde_json::json!({"spec": {"state": "suspended"}}))
            .await;
        self.status_when("the job to be Suspended", Duration::from_secs(90), |s| {
            s.phase == Some(Phase::Suspended) && s.replicas == 0
        })
        .await
    }

    /// Events `from..to`: key i % 6 on partition key % 2, value i % 7, time base + 25 i.
    pub async fn send(&self, from: i64, to: i64) {
        let events: Vec<Event> = (from..to)
            .map(|i| (i % 6, i % 7, self.base + 25 * i))
            .collect();
        self.send_events(events).await;
    }

    async fn send_events(&self, events: Vec<Event>) {
        let keyed = events.iter().map(|e| ((e.0 % 2) as i32, *e));
        kafka::produce(&self.producer, &self.input, keyed)
            .await
            .unwrap();
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(events);
    }

    /// Closes every window after event `last` and checks the sink holds every window exactly
    /// once.
    pub async fn assert_exactly_once(&self, last: i64) {
        let closing = self.base + 25 * last + 5_000;
        self.send_events((0..6).map(|k| (k, 0, closing)).collect())
            .await;
        let events = self
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let want = windows::expected(&events, closing);
        let (bootstrap, output) = (&self.bootstrap, &self.output);
        let got = self
            .wait("every window in the sink", Duration::from_secs(60))
            .until(async || {
                let got = windows::results(bootstrap, output, Duration::from_millis(500)).ok()?;
                (got.len() >= want.len()).then_some(got)
            })
            .await
            .unwrap();
        windows::assert_exactly(&got, &want);
    }

    /// [`Setup::assert_exactly_once`], then deletes the job and tears down.
    pub async fn finish(mut self, last: i64) {
        self.assert_exactly_once(last).await;
        self.jobs
            .delete("sums", &DeleteParams::foreground())
            .await
            .unwrap();
        self.kill_operator();
        self.kubelet.shutdown().await;
    }

    /// The job's storage root on disk (`<storage>/<namespace>/sums`).
    pub fn job_root(&self) -> PathBuf {
        self.storage.join(&self.namespace).join("sums")
    }
}

/// The operator's controller run in this process for namespace `ns`, as a task; aborting the
/// task kills it.
pub fn start_operator(client: &Client, ns: &str) -> tokio::task::JoinHandle<()> {
    let (client, ns) = (client.clone(), ns.to_owned());
    tokio::spawn(async move {
        let defaults = WorkerDefaults {
            image: "oxbow-worker:test".into(),
        };
        controller::run(client, &[ns], defaults, Default::default()).await;
    })
}

/// Whether condition `type_` is True.
pub fn is_true(status: &StreamJobStatus, type_: ConditionType) -> bool {
    find_condition(&status.conditions, type_).is_some_and(|c| c.status == "True")
}
