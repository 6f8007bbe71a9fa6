//! One StreamJob under the operator, end to end: a test namespace with the operator running
//! in-process, the stand-in kubelet running its worker pods as real `oxbow-worker` processes,
//! input and output topics on the real broker, and a job `sums` counting and summing per key
//! in 1 s windows with checkpoints in a local directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::PathBuf, time::Duration};

use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use oxbow_crds::{StreamJob, StreamJobStatus, streamjob::Phase};
use oxbow_operator::{children::WorkerDefaults, controller};
use rdkafka::producer::FutureProducer;

use crate::{
    kafka, kube_env,
    kubelet::Kubelet,
    unique_name,
    windows::{self, Event},
    worker::eventually,
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
    events: Vec<Event>,
    operator: Option<tokio::task::JoinHandle<()>>,
    /// The stand-in kubelet.
    pub kubelet: Kubelet,
}

impl Setup {
    /// The job with `replicas` workers.
    pub async fn start(prefix: &str, replicas: i32) -> Setup {
        Setup::start_with(prefix, replicas, "").await
    }

    /// The job with `replicas` workers and `extra` appended to its spec (YAML lines indented
    /// by two spaces).
    pub async fn start_with(prefix: &str, replicas: i32, extra: &str) -> Setup {
        let client = kube_env::client().await.unwrap();
        kube_env::install_crd(&client).await.unwrap();
        let ns = kube_env::test_namespace(&client, prefix).await.unwrap();
        let bootstrap = kafka::bootstrap();
        let (input, output) = (unique_name("lc-in"), unique_name("lc-out"));
        kafka::create_topic(&bootstrap, &input, 2).await.unwrap();
        kafka::create_topic(&bootstrap, &output, 1).await.unwrap();
        let storage = std::env::temp_dir().join(unique_name("oxbow-lifecycle"));
        std::fs::create_dir_all(&storage).unwrap();
        let operator = Some(start_operator(&client, &ns));
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
{extra}
"#,
            storage.display()
        ))
        .unwrap();
        let jobs: Api<StreamJob> = Api::namespaced(client.clone(), &ns);
        jobs.create(&PostParams::default(), &job).await.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        Setup {
            jobs,
            client,
            namespace: ns,
            storage,
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

    /// Waits until the status satisfies `done`, and returns it.
    pub async fn status_when(
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

    /// Events `from..to`: key i % 6 on partition key % 2, value i % 7, time base + 25 i.
    pub async fn send(&mut self, from: i64, to: i64) {
        for i in from..to {
            let e = (i % 6, i % 7, self.base + 25 * i);
            kafka::send_event(&self.producer, &self.input, (e.0 % 2) as i32, e)
                .await
                .unwrap();
            self.events.push(e);
        }
    }

    /// Closes every window after event `last` and checks the sink holds every window exactly
    /// once.
    pub async fn assert_exactly_once(&mut self, last: i64) {
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

fn start_operator(client: &Client, ns: &str) -> tokio::task::JoinHandle<()> {
    let (client, ns) = (client.clone(), ns.to_owned());
    tokio::spawn(async move {
        let defaults = WorkerDefaults {
            image: "oxbow-worker:test".into(),
        };
        controller::run(client, &[ns], defaults, Default::default()).await;
    })
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
