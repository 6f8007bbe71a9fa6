//! Recording StreamJob objects as the real operator left them, for the GitOps health fixtures
//! (`manifests/argocd/oxbow.dev/StreamJob/testdata/`).
//!
//! Nothing happens unless `OXBOW_RECORD_STATUSES=<dir>` is set. Then [`current`] writes one
//! whole StreamJob, as the API server returns it, to `<dir>/<label>.yaml`, and [`namespace`]
//! follows the jobs of a test's namespace and writes every distinct health state each passes
//! through (phase, operation step, condition statuses and reasons, generation observed or not,
//! deletion), so that short-lived states such as Savepointing are caught too. Server-assigned
//! fields that only vary between runs (uid, resourceVersion, creationTimestamp, managedFields)
//! are left out.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use futures_util::StreamExt;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, ListParams, WatchEvent, WatchParams},
};
use oxbow_crds::StreamJob;
use serde_json::Value;

/// The variable naming the directory recordings go to.
pub const ENV: &str = "OXBOW_RECORD_STATUSES";

fn dir() -> Option<PathBuf> {
    std::env::var_os(ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// The StreamJobs of `jobs`' namespace as the API server returns them, every field kept.
fn raw(jobs: &Api<StreamJob>) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<StreamJob>(&());
    let client = jobs.clone().into_client();
    match jobs.namespace() {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    }
}

/// Reads job `name` and writes it to `<dir>/<label>.yaml` when recording; panics if it
/// cannot, since a recording was asked for.
pub async fn current(jobs: &Api<StreamJob>, name: &str, label: &str) {
    let Some(dir) = dir() else { return };
    match raw(jobs).get(name).await {
        Ok(job) => write(&dir, &to_json(&job), label),
        Err(e) => panic!("failed to read StreamJob {name} to record it: {e}"),
    }
}

/// Records every distinct health state of each StreamJob in namespace `ns` as
/// `<prefix>-<job>-<nn>-<phase>[-<operation>-<step>].yaml`, for as long as the test's runtime
/// runs. Watching has begun when this returns, so a job created afterwards is recorded from
/// its first state, before it has a status. [`crate::kube_env::test_namespace`] calls it, so
/// every test in a namespace of its own is recorded.
pub async fn namespace(client: &Client, ns: &str, prefix: &str) {
    let Some(dir) = dir() else { return };
    let resource = ApiResource::erase::<StreamJob>(&());
    let mut follower = Follower {
        jobs: Api::namespaced_with(client.clone(), ns, &resource),
        prefix: prefix.to_owned(),
        dir,
        seen: BTreeSet::new(),
        count: BTreeMap::new(),
    };
    let version = follower.list().await;
    tokio::spawn(async move { follower.follow(version).await });
}

struct Follower {
    jobs: Api<DynamicObject>,
    prefix: String,
    dir: PathBuf,
    /// (job, state) pairs written.
    seen: BTreeSet<(String, String)>,
    /// States written per job.
    count: BTreeMap<String, usize>,
}

impl Follower {
    /// Records what a list shows and returns the list's version to watch from.
    async fn list(&mut self) -> Option<String> {
        let list = self.jobs.list(&ListParams::default()).await.ok()?;
        for job in &list.items {
            self.note(&to_json(job));
        }
        list.metadata.resource_version
    }

    /// Watches from `version`; a watch that ends (the server's timeout, an error) starts
    /// again from a fresh list.
    async fn follow(&mut self, mut version: Option<String>) {
        loop {
            let Some(from) = version.take() else {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                version = self.list().await;
                continue;
            };
            let params = WatchParams::default().timeout(60);
            if let Ok(stream) = self.jobs.watch(&params, &from).await {
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(WatchEvent::Added(job) | WatchEvent::Modified(job)) => {
                            self.note(&to_json(&job));
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }
            version = self.list().await;
        }
    }

    /// Records `job` if its health state is new for it.
    fn note(&mut self, job: &Value) {
        let name = job["metadata"]["name"]
            .as_str()
            .unwrap_or("unnamed")
            .to_owned();
        if !self.seen.insert((name.clone(), signature(job))) {
            return;
        }
        let n = self.count.entry(name.clone()).or_default();
        *n += 1;
        let status = &job["status"];
        let phase = status["phase"].as_str().unwrap_or("NoStatus");
        let operation = &status["operation"];
        let step = match (operation["type"].as_str(), operation["step"].as_str()) {
            (Some(t), Some(s)) => format!("-{t}-{s}"),
            _ => String::new(),
        };
        let label = format!("{}-{name}-{n:02}-{phase}{step}", self.prefix);
        write(&self.dir, job, &label);
    }
}

/// What a health check can tell apart: deletion, whether the generation is observed, phase,
/// operation, savepoint in progress, and each condition's status and reason (messages carry
/// changing numbers, so they are left out).
fn signature(job: &Value) -> String {
    let status = &job["status"];
    if status.is_null() {
        return "no status".into();
    }
    let deleting = job["metadata"]["deletionTimestamp"].is_string();
    let unobserved = status["observedGeneration"] != job["metadata"]["generation"];
    let mut conditions: Vec<String> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{}={}/{}", c["type"], c["status"], c["reason"]))
        .collect();
    conditions.sort();
    format!(
        "{deleting} {unobserved} {} {} {} {} {conditions:?}",
        status["phase"],
        status["operation"]["type"],
        status["operation"]["step"],
        status["savepoint"]["inProgress"].is_object(),
    )
}

fn to_json(job: &DynamicObject) -> Value {
    match serde_json::to_value(job) {
        Ok(v) => v,
        Err(e) => panic!("failed to serialise StreamJob to record it: {e}"),
    }
}

/// Writes `job` without the fields the server assigns differently on every run.
fn write(dir: &Path, job: &Value, label: &str) {
    let mut job = job.clone();
    if let Some(meta) = job.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in [
            "managedFields",
            "uid",
            "resourceVersion",
            "creationTimestamp",
        ] {
            meta.remove(field);
        }
    }
    let yaml = match serde_norway::to_string(&job) {
        Ok(y) => y,
        Err(e) => panic!("failed to write StreamJob as YAML: {e}"),
    };
    let path = dir.join(format!("{label}.yaml"));
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, yaml)) {
        panic!("failed to write {}: {e}", path.display());
    }
}
