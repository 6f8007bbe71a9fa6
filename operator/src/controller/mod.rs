//! The controller: a kube-runtime `Controller` over StreamJobs (and the children they own)
//! that runs, per reconcile:
//!
//! 1. observe (`observe.rs`, I/O only): the children, the worker pods, the workers' admin API
//!    (status and the savepoint in progress) and Kafka (partition counts, offsets);
//! 2. plan ([`crate::plan`], pure): the one next action and the status fields to record first;
//! 3. record: the operation is written into the status before it is acted on, so that a
//!    restarted operator resumes it;
//! 4. act (`act/`): the action's calls, its Event and when to look again;
//! 5. status ([`crate::plan::status`], pure): phase, conditions, lag and savepoints, written in
//!    one patch guarded by the version the plan was made from.
//!
//! [`kafka`] configures every Kafka client the operator creates, with the settings and
//! credentials the workers use. [`run`] starts one controller per watched namespace (or one
//! for all) and marks the operator ready once their caches are synced.

mod act;
pub mod kafka;
mod observe;

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Secret, Service},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action as Requeue,
        events::{Recorder, Reporter},
        watcher,
    },
};
use oxbow_crds::StreamJob;

use crate::{children::WorkerDefaults, plan};

/// The field manager of every write.
pub const MANAGER: &str = "oxbow-operator";

/// Why a reconcile failed (it is retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("failed to {action}: {source}")]
    Kube {
        /// What the operator was doing.
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    /// A child could not be built from the spec.
    #[error(transparent)]
    Build(#[from] crate::children::BuildError),
    /// The StreamJob lacks a namespace or a name.
    #[error("the StreamJob has no {0}")]
    Metadata(&'static str),
    /// The StreamJob changed since it was read; the reconcile runs again on the new version.
    #[error("the StreamJob changed while it was reconciled")]
    Stale,
    /// The worker to dispose of savepoints through has no address.
    #[error("failed to dispose of a savepoint: worker {ordinal} has no address")]
    DisposeNoAddress {
        /// The worker's ordinal.
        ordinal: u32,
    },
    /// A worker could not delete a savepoint beyond the history limit.
    #[error("failed to dispose of savepoint {id} at {path}: {source}")]
    Dispose {
        /// The savepoint's id.
        id: String,
        /// Where it is stored.
        path: String,
        #[source]
        source: reqwest::Error,
    },
    /// A Kafka client could not be configured (the Kafka Secret).
    #[error("failed to configure the Kafka client: {0}")]
    KafkaSettings(#[source] kafka::SettingsError),
    /// Fencing a transactional id failed.
    #[error("failed to fence transactional id {id}: {source}")]
    Fence {
        /// The transactional id.
        id: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The fencing task ended without an answer (it panicked or was cancelled).
    #[error("failed to fence the old transactional ids: {0}")]
    FenceTask(#[source] tokio::task::JoinError),
    /// No secure random source to generate the admin token from.
    #[error("failed to generate the admin token: {0}")]
    AdminToken(#[source] getrandom::Error),
}

impl Error {
    /// A static label for metrics and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "KubernetesApiFailed",
            Error::Build(_) => "BuildFailed",
            Error::Metadata(_) => "MissingMetadata",
            Error::Fence { .. } | Error::FenceTask(_) => "FenceFailed",
            Error::Dispose { .. } | Error::DisposeNoAddress { .. } => "DisposeFailed",
            Error::KafkaSettings(_) => "KafkaSettingsFailed",
            Error::AdminToken(_) => "AdminTokenFailed",
            Error::Stale => "Conflict",
        }
    }
}

pub(crate) fn kube_err(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { action, source }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// What a worker gets when its StreamJob does not say (the image).
    pub defaults: WorkerDefaults,
    /// For the workers' admin API.
    pub http: reqwest::Client,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// The cluster serves `policy/v1` PodDisruptionBudgets (Kubernetes 1.21 and later).
    pub pdb_supported: bool,
    /// Each job's last committed-offset sample, for its commit rate.
    commits: std::sync::Mutex<std::collections::HashMap<(String, String), CommitSample>>,
    /// Shared with the metrics endpoint.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Committed offsets summed over a job's input partitions, at one time.
#[derive(Clone, Copy, Debug)]
struct CommitSample {
    at: std::time::Instant,
    committed: i64,
    /// Since when the committed offsets stand still with records waiting.
    stalled_since: Option<std::time::Instant>,
    /// The rate measured when this sample was taken.
    rate: Option<f64>,
}

/// Samples closer together than this do not give a rate.
const RATE_WINDOW: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The job's progress from `partitions`, with its commit rate over the last
    /// [`RATE_WINDOW`] or more, and how long its offsets have stood still.
    pub(crate) fn progress(
        &self,
        namespace: &str,
        name: &str,
        partitions: Vec<plan::PartitionOffsets>,
    ) -> plan::KafkaProgress {
        let now = std::time::Instant::now();
        let committed: i64 = partitions.iter().filter_map(|p| p.committed).sum();
        let waiting = partitions
            .iter()
            .any(|p| p.committed.is_some_and(|c| c < p.high_watermark));
        let key = (namespace.to_owned(), name.to_owned());
        let Ok(mut samples) = self.commits.lock() else {
            return plan::KafkaProgress {
                partitions,
                ..Default::default()
            };
        };
        let previous = samples.get(&key).copied();
        let (commit_rate, stalled_since) = match previous {
            Some(p) if now.duration_since(p.at) >= RATE_WINDOW => {
                let moved = committed != p.committed;
                #[allow(clippy::cast_precision_loss)]
                let rate = (committed - p.committed).max(0) as f64
                    / now.duration_since(p.at).as_secs_f64();
                let stalled = match (moved, waiting) {
                    (false, true) => Some(p.stalled_since.unwrap_or(p.at)),
                    _ => None,
                };
                samples.insert(
                    key,
                    CommitSample {
                        at: now,
                        committed,
                        stalled_since: stalled,
                        rate: Some(rate),
                    },
                );
                (Some(rate), stalled)
            }
            Some(p) => (p.rate, p.stalled_since),
            None => {
                samples.insert(
                    key,
                    CommitSample {
                        at: now,
                        committed,
                        stalled_since: None,
                        rate: None,
                    },
                );
                (None, None)
            }
        };
        plan::KafkaProgress {
            partitions,
            commit_rate,
            stalled_for: stalled_since.map(|s| now.duration_since(s)),
        }
    }

    /// A context for `client`.
    pub fn new(client: Client, defaults: WorkerDefaults, pdb_supported: bool) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            pdb_supported,
            commits: std::sync::Mutex::default(),
            metrics: Arc::default(),
            client,
            defaults,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }
    }
}

/// One reconcile of one StreamJob, counted and timed.
#[tracing::instrument(skip_all, fields(job = %job.name_any(), namespace = job.namespace().unwrap_or_default()))]
pub async fn reconcile(job: Arc<StreamJob>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_once(job, &ctx).await;
    let m = &ctx.metrics;
    m.reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "ok" } else { "error" };
    m.reconciles
        .get_or_create(&crate::metrics::ResultLabel { result: outcome })
        .inc();
    if let Err(e) = &result {
        m.reconcile_failures
            .get_or_create(&crate::metrics::ReasonLabel { reason: e.reason() })
            .inc();
    }
    result
}

async fn reconcile_once(job: Arc<StreamJob>, ctx: &Context) -> Result<Requeue, Error> {
    let namespace = job.namespace().ok_or(Error::Metadata("namespace"))?;
    let name = job.name_any();
    let observed = observe::observe(ctx, &job, &namespace, &name).await?;
    let plan = plan::plan(&observed);
    tracing::debug!(action = plan.action.as_str(), "planned");
    let jobs: Api<StreamJob> = Api::namespaced(ctx.client.clone(), &namespace);
    // Record the operation before acting on it, so that a restarted operator resumes it.
    let mut version = job.resource_version();
    if plan.needs_record(&observed.status) {
        let mut recorded = observed.status.clone();
        plan.record.apply_to(&mut recorded);
        version = patch_status(&jobs, &name, &observed.status, &recorded, version).await?;
    }
    let requeue = act::act(ctx, &job, &observed, &plan).await?;
    // Fencing records its next step itself, a finalizer change moved the job's version, and a
    // job without its finalizer may be gone: the status follows on the next reconcile.
    if matches!(
        plan.action,
        plan::Action::Fence { .. }
            | plan::Action::AddFinalizer
            | plan::Action::RemoveFinalizer { .. }
    ) {
        return Ok(requeue);
    }
    let status = plan::status::compute(&observed, &plan);
    observe_durations(&ctx.metrics, &observed, &status);
    if status != observed.status {
        patch_status(&jobs, &name, &observed.status, &status, version).await?;
    }
    Ok(requeue)
}

/// Savepoints and operations that ended between `observed.status` and `status`.
fn observe_durations(
    m: &crate::metrics::Metrics,
    observed: &plan::Observed,
    status: &oxbow_crds::StreamJobStatus,
) {
    let seconds = |since: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| {
        #[allow(clippy::cast_precision_loss)]
        let ms = (observed.now.as_millisecond() - since.0.as_millisecond()).max(0) as f64;
        ms / 1000.0
    };
    let old = &observed.status;
    let in_progress = old.savepoint.as_ref().and_then(|s| s.in_progress.as_ref());
    let last = status.savepoint.as_ref().and_then(|s| s.last.as_ref());
    if let (Some(p), Some(l)) = (in_progress, last)
        && p.id == l.id
    {
        m.savepoint_duration
            .get_or_create(&crate::metrics::TriggerLabel {
                trigger: p.trigger.as_str(),
            })
            .observe(seconds(&p.started_at));
    }
    if let Some(op) = &old.operation
        && status.operation.is_none()
    {
        m.operation_duration
            .get_or_create(&crate::metrics::OperationLabel {
                operation: op.type_.as_str(),
            })
            .observe(seconds(&op.started_at));
    }
}

/// Patches the status from `old` to `status`, only if the StreamJob is still at
/// `resource_version` (the version the plan was made from): a plan made from a stale cache must
/// not be recorded, or it would start an operation twice. Returns the new version.
async fn patch_status(
    jobs: &Api<StreamJob>,
    name: &str,
    old: &oxbow_crds::StreamJobStatus,
    status: &oxbow_crds::StreamJobStatus,
    resource_version: Option<String>,
) -> Result<Option<String>, Error> {
    let mut new = serde_json::to_value(status).unwrap_or_default();
    let old = serde_json::to_value(old).unwrap_or_default();
    null_removed(&old, &mut new);
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": resource_version},
        "status": new,
    });
    tracing::debug!(%patch, "patching the status");
    match jobs
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(job) => Ok(job.resource_version()),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Stale),
        Err(e) => Err(kube_err("patch the StreamJob status")(e)),
    }
}

/// A JSON merge patch keeps what it does not mention: fields the new status dropped (an
/// operation that ended, a savepoint no longer in progress) are sent as `null` to remove them.
fn null_removed(old: &serde_json::Value, new: &mut serde_json::Value) {
    if let (Some(old), Some(new)) = (old.as_object(), new.as_object_mut()) {
        for (key, value) in old {
            match new.get_mut(key) {
                None => {
                    new.insert(key.clone(), serde_json::Value::Null);
                }
                Some(next) => null_removed(value, next),
            }
        }
    }
}

fn error_policy(_job: Arc<StreamJob>, error: &Error, _ctx: Arc<Context>) -> Requeue {
    if matches!(error, Error::Stale) {
        tracing::debug!("the StreamJob changed during the reconcile; again on its new version");
        return Requeue::requeue(Duration::from_millis(300));
    }
    tracing::warn!(error = %error, reason = error.reason(), "reconcile failed; retrying");
    Requeue::requeue(Duration::from_secs(5))
}

/// Runs a controller over StreamJobs in each of `namespaces` (all namespaces when empty)
/// until the process is told to stop. Each controller's cache is added to `stores` for the
/// metrics endpoint; `ready` turns true once every cache is synced.
pub async fn run(
    client: Client,
    namespaces: &[String],
    defaults: WorkerDefaults,
    shared: crate::metrics::Shared,
) {
    let pdb_supported = client
        .list_api_group_resources("policy/v1")
        .await
        .is_ok_and(|r| r.resources.iter().any(|r| r.name == "poddisruptionbudgets"));
    if !pdb_supported {
        tracing::warn!(
            "the cluster does not serve policy/v1 PodDisruptionBudgets (Kubernetes before 1.21): workers run without one"
        );
    }
    let mut ctx = Context::new(client.clone(), defaults, pdb_supported);
    ctx.metrics = shared.metrics.clone();
    let ctx = Arc::new(ctx);
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let mut running = Vec::new();
    let mut stores = Vec::new();
    for scope in scopes {
        let controller = controller(&client, scope, pdb_supported);
        stores.push(controller.store());
        running.push(
            controller
                .shutdown_on_signal()
                .run(reconcile, error_policy, ctx.clone())
                .for_each(|result| async move {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "controller event");
                    }
                }),
        );
    }
    if let Ok(mut s) = shared.stores.write() {
        s.clone_from(&stores);
    }
    let ready = shared.ready.clone();
    let synced = async move {
        for store in stores {
            if store.wait_until_ready().await.is_err() {
                return;
            }
        }
        ready.store(true, std::sync::atomic::Ordering::Release);
        tracing::info!("caches synced; reconciling");
    };
    futures_util::future::join(synced, futures_util::future::join_all(running)).await;
}

/// The controller of StreamJobs in `namespace` (all when `None`) and the children they own.
fn controller(
    client: &Client,
    namespace: Option<&str>,
    pdb_supported: bool,
) -> Controller<StreamJob> {
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        oxbow_crds::names::labels::MANAGED_BY,
        oxbow_crds::names::labels::MANAGER
    ));
    let mut controller = Controller::new(
        api::<StreamJob>(client, namespace),
        watcher::Config::default(),
    )
    .owns(api::<StatefulSet>(client, namespace), owned.clone())
    .owns(api::<ConfigMap>(client, namespace), owned.clone())
    .owns(api::<Service>(client, namespace), owned.clone())
    .owns(api::<Secret>(client, namespace), owned.clone());
    if pdb_supported {
        controller = controller.owns(api::<PodDisruptionBudget>(client, namespace), owned);
    }
    controller
}

#[cfg(test)]
mod tests {
    #[test]
    fn dropped_fields_are_sent_as_null() {
        let old = serde_json::json!({"operation": {"step": "Verifying"}, "savepoint": {"last": 1, "inProgress": {"id": "a"}}, "phase": "Running"});
        let mut new = serde_json::json!({"savepoint": {"last": 2}, "phase": "Running"});
        super::null_removed(&old, &mut new);
        assert_eq!(
            new,
            serde_json::json!({"operation": null, "savepoint": {"last": 2, "inProgress": null}, "phase": "Running"})
        );
    }
}
