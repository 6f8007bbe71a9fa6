//! The controller: a kube-runtime `Controller` over StreamJobs that runs, per reconcile,
//! observe (I/O only) -> plan (pure, [`crate::plan`]) -> record the operation -> act (one step)
//! -> status (one patch).
//!
//! What runs today: deploying a job (every child applied server-side under one field manager,
//! with owner references), repairing children, suspending (scale to zero), reporting an invalid
//! spec without touching the running job, savepoint requests to the workers' admin API, fencing,
//! and the status the planner computes. Lag, leader election and savepoint disposal are not
//! wired yet.

mod act;
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
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// A child could not be built from the spec.
    #[error(transparent)]
    Build(#[from] crate::children::BuildError),
    /// The StreamJob lacks a namespace or a name.
    #[error("the StreamJob has no {0}")]
    Metadata(&'static str),
    /// Fencing a transactional id failed.
    #[error("failed to fence transactional id {id}: {message}")]
    Fence {
        /// The id.
        id: String,
        /// Why.
        message: String,
    },
}

impl Error {
    /// A static label for metrics and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "KubernetesApiFailed",
            Error::Build(_) => "BuildFailed",
            Error::Metadata(_) => "MissingMetadata",
            Error::Fence { .. } => "FenceFailed",
        }
    }
}

pub(crate) fn kube_err(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { action, source }
}

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Defaults for workers.
    pub defaults: WorkerDefaults,
    /// For the workers' admin API.
    pub http: reqwest::Client,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// The cluster serves `policy/v1` PodDisruptionBudgets (Kubernetes 1.21 and later).
    pub pdb_supported: bool,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context for `client`.
    pub fn new(client: Client, defaults: WorkerDefaults, pdb_supported: bool) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            pdb_supported,
            client,
            defaults,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }
    }
}

/// One reconcile of one StreamJob.
#[tracing::instrument(skip_all, fields(job = %job.name_any(), namespace = job.namespace().unwrap_or_default()))]
pub async fn reconcile(job: Arc<StreamJob>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let namespace = job.namespace().ok_or(Error::Metadata("namespace"))?;
    let name = job.name_any();
    let observed = observe::observe(&ctx, &job, &namespace, &name).await?;
    let plan = plan::plan(&observed);
    tracing::debug!(action = plan.action.as_str(), "planned");
    let jobs: Api<StreamJob> = Api::namespaced(ctx.client.clone(), &namespace);
    // Record the operation before acting on it, so that a restarted operator resumes it.
    if plan.needs_record(&observed.status) {
        let mut recorded = observed.status.clone();
        plan.record.apply_to(&mut recorded);
        patch_status(&jobs, &name, &observed.status, &recorded).await?;
    }
    let requeue = act::act(&ctx, &job, &observed, &plan).await?;
    // Fencing records its next step itself; the status follows on the next reconcile.
    if matches!(plan.action, plan::Action::Fence { .. }) {
        return Ok(requeue);
    }
    let status = plan::status::compute(&observed, &plan);
    if status != observed.status {
        patch_status(&jobs, &name, &observed.status, &status).await?;
    }
    Ok(requeue)
}

async fn patch_status(
    jobs: &Api<StreamJob>,
    name: &str,
    old: &oxbow_crds::StreamJobStatus,
    status: &oxbow_crds::StreamJobStatus,
) -> Result<(), Error> {
    let mut new = serde_json::to_value(status).unwrap_or_default();
    let old = serde_json::to_value(old).unwrap_or_default();
    null_removed(&old, &mut new);
    let patch = serde_json::json!({ "status": new });
    tracing::debug!(%patch, "patching the status");
    jobs.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_err("patch the StreamJob status"))?;
    Ok(())
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
    tracing::warn!(error = %error, reason = error.reason(), "reconcile failed; retrying");
    Requeue::requeue(Duration::from_secs(5))
}

/// Runs the controller over StreamJobs in `namespace` (or all namespaces) until the process
/// stops.
pub async fn run(client: Client, namespace: Option<&str>, defaults: WorkerDefaults) {
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
    let jobs: Api<StreamJob> = api(&client, namespace);
    let sets: Api<StatefulSet> = api(&client, namespace);
    let maps: Api<ConfigMap> = api(&client, namespace);
    let services: Api<Service> = api(&client, namespace);
    let secrets: Api<Secret> = api(&client, namespace);
    let pdbs: Api<PodDisruptionBudget> = api(&client, namespace);
    let pdb_supported = client
        .list_api_group_resources("policy/v1")
        .await
        .is_ok_and(|r| r.resources.iter().any(|r| r.name == "poddisruptionbudgets"));
    if !pdb_supported {
        tracing::warn!(
            "the cluster does not serve policy/v1 PodDisruptionBudgets (Kubernetes before 1.21): workers run without one"
        );
    }
    let ctx = Arc::new(Context::new(client, defaults, pdb_supported));
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        oxbow_crds::names::labels::MANAGED_BY,
        oxbow_crds::names::labels::MANAGER
    ));
    let mut controller = Controller::new(jobs, watcher::Config::default())
        .owns(sets, owned.clone())
        .owns(maps, owned.clone())
        .owns(services, owned.clone())
        .owns(secrets, owned.clone());
    if pdb_supported {
        controller = controller.owns(pdbs, owned);
    }
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
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
