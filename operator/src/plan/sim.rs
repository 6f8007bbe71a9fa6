//! A toy world for the planner's tests: the StatefulSet, pods, workers and savepoints react to
//! actions the way the real ones do, with crashes of the operator injected between recording a
//! step and acting on it, and safety properties checked at every action.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use oxbow_crds::{
    StreamJobSpec, StreamJobStatus,
    admin::{SavepointResult, SavepointState, WorkerState, WorkerStatus},
    jobfile::{JobFile, Restore},
    streamjob::{CheckpointInfo, CheckpointStatus, OperationStep, UpgradeMode},
    validation::validate,
};

use super::{Action, Observed, Plan, StatefulSetState, WorkerPod, plan, status};
use crate::children::statefulset::worker_replicas;

pub(super) const MANIFEST: &str = r#"
apiVersion: oxbow.dev/v1alpha1
kind: StreamJob
metadata: {name: fraud, namespace: payments, generation: 1}
spec:
  image: worker:1
  replicas: 3
  kafka: {bootstrapServers: "kafka:9092"}
  source: {topics: [payments]}
  pipeline:
    - keyBy: "account"
  sink: {topic: alerts}
  checkpoint: {storage: "s3://bucket/oxbow"}
  upgrade: {savepointTimeout: 20s, verifyTimeout: 30s, maxCheckpointAge: 1m}
"#;

/// The spec of [`MANIFEST`].
pub(super) fn base_spec() -> StreamJobSpec {
    oxbow_crds::parse_manifest(MANIFEST).unwrap().spec
}

/// Where the operator could die around one reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Crash {
    None,
    /// Before the status write: nothing happens.
    BeforeRecord,
    /// After the status write, before the action.
    AfterRecord,
    /// After the action, before any status write that follows it (`Fence::then`).
    AfterAct,
}

impl Crash {
    pub(super) fn from_byte(b: u8) -> Self {
        match b % 8 {
            0 => Crash::BeforeRecord,
            1 => Crash::AfterRecord,
            2 => Crash::AfterAct,
            _ => Crash::None,
        }
    }
}

pub(super) struct World {
    pub o: Observed,
    /// Every savepoint fails.
    pub fail_savepoints: bool,
    /// Workers of this image fail.
    pub bad_image: Option<String>,
    /// Age of the last completed checkpoint, in seconds.
    pub checkpoint_age: i64,
    /// Action names taken, in order.
    pub log: Vec<&'static str>,
    sts_file: Option<JobFile>,
    pod_files: BTreeMap<u32, JobFile>,
    stopped: BTreeSet<u32>,
    stop_requests: BTreeSet<(u32, String)>,
    fenced: bool,
}

impl World {
    pub(super) fn new(spec: StreamJobSpec) -> Self {
        let validation = validate(&spec);
        World {
            o: Observed {
                namespace: "payments".into(),
                name: "fraud".into(),
                generation: 1,
                spec,
                validation,
                status: StreamJobStatus::default(),
                deployed: None,
                stable: None,
                stateful_set: None,
                pods: vec![],
                workers: BTreeMap::new(),
                savepoints: BTreeMap::new(),
                partitions: BTreeMap::from([("payments".to_owned(), 6)]),
                progress: None,
                deleting: false,
                has_finalizer: false,
                now: Timestamp::from_second(1_700_000_000).unwrap(),
            },
            fail_savepoints: false,
            bad_image: None,
            checkpoint_age: 5,
            log: vec![],
            sts_file: None,
            pod_files: BTreeMap::new(),
            stopped: BTreeSet::new(),
            stop_requests: BTreeSet::new(),
            fenced: false,
        }
    }

    /// The user edits the spec.
    pub(super) fn edit(&mut self, f: impl FnOnce(&mut StreamJobSpec)) {
        f(&mut self.o.spec);
        self.o.generation += 1;
        self.o.validation = validate(&self.o.spec);
    }

    /// One reconcile, then one second of the world.
    pub(super) fn reconcile(&mut self, crash: Crash) -> Plan {
        let plan = plan(&self.o);
        self.check(&plan);
        if crash != Crash::BeforeRecord {
            self.o.status = status::compute(&self.o, &plan);
            if crash != Crash::AfterRecord {
                self.act(&plan.action, crash == Crash::AfterAct);
            }
        }
        self.tick();
        plan
    }

    /// Reconciles until the plan is stable (no action, no status change) or `max` runs.
    pub(super) fn settle(&mut self, crashes: &mut dyn Iterator<Item = Crash>, max: usize) {
        let mut quiet = 0;
        for _ in 0..max {
            let before = self.o.status.clone();
            let plan = self.reconcile(crashes.next().unwrap_or(Crash::None));
            let still = matches!(
                plan.action,
                Action::Nothing | Action::Block { .. } | Action::Fail { .. }
            ) && strip_time(&before) == strip_time(&self.o.status);
            quiet = if still { quiet + 1 } else { 0 };
            if quiet >= 3 {
                return;
            }
        }
    }

    pub(super) fn deployed(&self) -> &JobFile {
        self.o.deployed.as_ref().unwrap()
    }

    /// The safety properties, checked on every plan before it is carried out.
    fn check(&self, plan: &Plan) {
        let o = &self.o;
        for file in job_files(&plan.action) {
            if file.restore == Restore::Stateless {
                assert_eq!(
                    file.spec.upgrade.mode,
                    UpgradeMode::Stateless,
                    "stateless without being asked: {plan:?}"
                );
            }
        }
        match &plan.action {
            Action::RollOut { job_file } => {
                let op = plan
                    .record
                    .operation
                    .as_ref()
                    .expect("a rollout is part of an operation");
                assert_eq!(
                    op.step,
                    OperationStep::RollingOut,
                    "rollout not recorded first"
                );
                assert!(
                    self.fenced || o.deployed.as_ref() == Some(job_file),
                    "rollout before fencing"
                );
                for (ord, file) in &self.pod_files {
                    assert!(
                        file == &**job_file,
                        "worker {ord} of an older generation still runs at rollout"
                    );
                }
            }
            Action::Fence { .. } => {
                assert!(self.pod_files.is_empty(), "fencing while old workers run");
            }
            Action::CreateOrUpdateChildren { job_file } => {
                if let Some(d) = &o.deployed {
                    assert_eq!(d, &**job_file, "children repaired with another job file");
                }
            }
            Action::RequestSavepoint { stop: true, id, .. }
            | Action::WaitForSavepoint { id, .. } => {
                let op = plan.record.operation.as_ref();
                let in_progress = plan
                    .record
                    .savepoint
                    .as_ref()
                    .and_then(|s| s.in_progress.as_ref());
                assert!(
                    op.is_none_or(|op| op.step == OperationStep::Savepointing
                        && op.savepoint_id.as_ref() == Some(id)),
                    "savepoint not recorded first"
                );
                assert_eq!(
                    in_progress.map(|s| &s.id),
                    Some(id),
                    "savepoint not recorded first"
                );
            }
            _ => {}
        }
        if o.validation.is_err() && o.status.operation.is_none() {
            assert!(
                plan.record.operation.is_none(),
                "an invalid spec started an operation"
            );
            assert!(
                !matches!(
                    plan.action,
                    Action::RollOut { .. }
                        | Action::RequestSavepoint { stop: true, .. }
                        | Action::StopWorkers
                        | Action::ScaleToZero { .. }
                ),
                "an invalid spec changed the running job: {:?}",
                plan.action
            );
        }
    }

    fn act(&mut self, action: &Action, crash_after: bool) {
        self.log.push(action.as_str());
        match action {
            Action::CreateOrUpdateChildren { job_file } | Action::RollOut { job_file } => {
                self.o.deployed = Some((**job_file).clone());
                self.sts_file = Some((**job_file).clone());
                let replicas = worker_replicas(&job_file.spec);
                self.o.stateful_set = Some(StatefulSetState {
                    replicas,
                    ready_replicas: 0,
                    runs_deployed: true,
                });
                self.o
                    .pods
                    .retain(|p| i64::from(p.ordinal) < i64::from(replicas));
                self.pod_files
                    .retain(|ord, _| i64::from(*ord) < i64::from(replicas));
                for ord in 0..u32::try_from(replicas).unwrap() {
                    if self.o.pod(ord).is_none() {
                        self.spawn(ord);
                    }
                }
            }
            Action::RequestSavepoint { id, ordinals, stop } => {
                for ord in ordinals {
                    if self
                        .o
                        .workers
                        .get(ord)
                        .is_some_and(|w| w.state == WorkerState::Running)
                    {
                        self.o.savepoints.insert(
                            *ord,
                            SavepointResult {
                                id: id.clone(),
                                state: SavepointState::InProgress,
                                path: None,
                                error: None,
                            },
                        );
                        if *stop {
                            self.stop_requests.insert((*ord, id.clone()));
                        }
                    }
                }
            }
            Action::StopWorkers => {
                if let Some(s) = &mut self.o.stateful_set {
                    s.replicas = 0;
                }
                self.o.pods.clear();
                self.o.workers.clear();
                self.pod_files.clear();
                self.stopped.clear();
            }
            Action::Fence { then, .. } => {
                self.fenced = true;
                if !crash_after {
                    self.o.status.operation = Some((**then).clone());
                }
            }
            Action::DeletePods { ordinals } => {
                for ord in ordinals {
                    self.o.pods.retain(|p| p.ordinal != *ord);
                    self.o.workers.remove(ord);
                    self.pod_files.remove(ord);
                    self.stopped.remove(ord);
                    let replicas = self.o.stateful_set.as_ref().map_or(0, |s| s.replicas);
                    if i64::from(*ord) < i64::from(replicas) {
                        self.spawn(*ord);
                    }
                }
            }
            Action::MarkStable { job_file } => self.o.stable = Some((**job_file).clone()),
            Action::ScaleToZero { job_file } => {
                self.o.deployed = Some((**job_file).clone());
                self.sts_file = Some((**job_file).clone());
                self.o.stateful_set = Some(StatefulSetState {
                    replicas: 0,
                    ready_replicas: 0,
                    runs_deployed: true,
                });
                self.o.pods.clear();
                self.o.workers.clear();
                self.pod_files.clear();
                self.stopped.clear();
            }
            Action::AddFinalizer => self.o.has_finalizer = true,
            Action::RemoveFinalizer { .. } => self.o.has_finalizer = false,
            Action::DisposeSavepoints { savepoints, .. } => {
                if !crash_after && let Some(sp) = self.o.status.savepoint.as_mut() {
                    sp.history
                        .retain(|h| savepoints.iter().all(|d| d.id != h.id));
                }
            }
            Action::WaitForSavepoint { .. }
            | Action::Block { .. }
            | Action::Fail { .. }
            | Action::Wait { .. }
            | Action::ReportInvalid { .. }
            | Action::Nothing => {}
        }
    }

    fn spawn(&mut self, ordinal: u32) {
        let file = self.sts_file.clone().unwrap();
        self.fenced = false;
        self.o.pods.push(WorkerPod {
            ordinal,
            ready: false,
            terminating: false,
            runs_deployed: true,
        });
        self.pod_files.insert(ordinal, file);
        self.stopped.remove(&ordinal);
    }

    fn tick(&mut self) {
        self.o.now = Timestamp::from_second(self.o.now.as_second() + 1).unwrap();
        let deployed = self.o.deployed.clone();
        let sts_file = self.sts_file.clone();
        if let Some(s) = &mut self.o.stateful_set {
            s.runs_deployed = sts_file.is_some() && sts_file == deployed;
        }
        // Savepoints complete (or fail) one second after they were asked for.
        for (ord, r) in self.o.savepoints.iter_mut() {
            if r.state == SavepointState::InProgress {
                if self.fail_savepoints {
                    r.state = SavepointState::Failed;
                    r.error = Some("store unavailable".into());
                } else {
                    r.state = SavepointState::Completed;
                    r.path = Some(format!("s3://bucket/oxbow/savepoints/{}", r.id));
                    if self.stop_requests.contains(&(*ord, r.id.clone())) {
                        self.stopped.insert(*ord);
                    }
                }
            }
        }
        let pods = self.o.pods.clone();
        for pod in &mut self.o.pods {
            pod.runs_deployed = deployed.as_ref() == self.pod_files.get(&pod.ordinal);
        }
        for pod in pods {
            let file = &self.pod_files[&pod.ordinal];
            let state = if self.bad_image.is_some() && file.spec.image == self.bad_image {
                WorkerState::Failed
            } else if self.stopped.contains(&pod.ordinal) {
                WorkerState::Idle
            } else {
                WorkerState::Running
            };
            self.o
                .workers
                .insert(pod.ordinal, worker(pod.ordinal, file, state));
        }
        for pod in &mut self.o.pods {
            pod.ready = self
                .o
                .workers
                .get(&pod.ordinal)
                .is_some_and(|w| w.state == WorkerState::Running);
        }
        let at = Timestamp::from_second(self.o.now.as_second() - self.checkpoint_age).unwrap();
        self.o.status.checkpoint = Some(CheckpointStatus {
            last_completed: Some(CheckpointInfo {
                id: 1,
                completed_at: Time(at),
                duration_ms: 1,
                size_bytes: 1,
                path: "s3://bucket/oxbow/cp/1".into(),
            }),
            last_failure: None,
        });
    }
}

fn worker(ordinal: u32, file: &JobFile, state: WorkerState) -> WorkerStatus {
    WorkerStatus {
        assignment_generation: file.assignment.generation,
        spec_generation: file.spec_generation,
        // As a worker reports it: the savepoint its job file's restore request names.
        restored_from: match &file.restore {
            Restore::Savepoint { path } => Some(path.clone()),
            _ => None,
        },
        ..WorkerStatus::new(ordinal, state)
    }
}

/// Every job file an action writes.
pub(super) fn job_files(action: &Action) -> Vec<&JobFile> {
    match action {
        Action::CreateOrUpdateChildren { job_file }
        | Action::RollOut { job_file }
        | Action::MarkStable { job_file }
        | Action::ScaleToZero { job_file } => vec![job_file],
        _ => vec![],
    }
}

/// The status without the fields that follow the clock.
fn strip_time(s: &StreamJobStatus) -> StreamJobStatus {
    let mut s = s.clone();
    s.checkpoint = None;
    s
}
