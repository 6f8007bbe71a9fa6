//! Recording StreamJob objects as the real operator left them, for the GitOps health fixtures
//! (`manifests/argocd/oxbow.dev/StreamJob/testdata/`).
//!
//! Nothing happens unless `OXBOW_RECORD_STATUSES=<dir>` is set. Then [`object`] writes one
//! whole StreamJob to `<dir>/<label>.yaml`, and [`watch`] follows a job for a whole test and
//! writes every distinct health state it passes through (phase, operation step, condition
//! statuses and reasons, generation observed or not), so that short-lived states such as
//! Savepointing are caught too. Server-assigned fields that only vary between runs (uid,
//! resourceVersion, creationTimestamp, managedFields) are left out.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use futures_util::StreamExt;
use kube::{
    Api,
    api::{ListParams, WatchEvent, WatchParams},
};
use oxbow_crds::StreamJob;

/// The variable naming the directory recordings go to.
pub const ENV: &str = "OXBOW_RECORD_STATUSES";

fn dir() -> Option<PathBuf> {
    std::env::var_os(ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// Writes `job` to `<dir>/<label>.yaml` when recording; panics if it cannot, since a
/// recording was asked for.
pub fn object(job: &StreamJob, label: &str) {
    if let Some(dir) = dir() {
        write(&dir, job, label);
    }
}

/// Reads job `name` and records it as `label`.
pub async fn current(jobs: &Api<StreamJob>, name: &str, label: &str) {
    if dir().is_none() {
        return;
    }
    match jobs.get(name).await {
        Ok(job) => object(&job, label),
        Err(e) => panic!("failed to read StreamJob {name} to record it: {e}"),
    }
}

/// Records every distinct health state of job `name` as `<prefix>-<nn>-<phase>[-<step>].yaml`
/// until the returned guard is dropped.
pub fn watch(jobs: &Api<StreamJob>, name: &str, prefix: &str) -> Recording {
    let task = dir().map(|dir| {
        let (jobs, name, prefix) = (jobs.clone(), name.to_owned(), prefix.to_owned());
        tokio::spawn(async move { follow(jobs, name, prefix, dir).await })
    });
    Recording { task }
}

/// Stops the recording when dropped.
#[derive(Debug)]
pub struct Recording {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn follow(jobs: Api<StreamJob>, name: String, prefix: String, dir: PathBuf) {
    let mut seen = BTreeSet::new();
    let selector = format!("metadata.name={name}");
    loop {
        // List, then watch from the list's version; a watch that ends (server timeout) is
        // started again the same way.
        let Ok(list) = jobs.list(&ListParams::default().fields(&selector)).await else {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        };
        for job in &list.items {
            note(&dir, &prefix, &mut seen, job);
        }
        let version = list.metadata.resource_version.unwrap_or_default();
        let params = WatchParams::default().fields(&selector).timeout(60);
        let Ok(stream) = jobs.watch(&params, &version).await else {
            continue;
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Added(job) | WatchEvent::Modified(job)) => {
                    note(&dir, &prefix, &mut seen, &job);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
}

/// Records `job` if its health state is new.
fn note(dir: &Path, prefix: &str, seen: &mut BTreeSet<String>, job: &StreamJob) {
    let state = signature(job);
    if seen.insert(state) {
        let status = job.status.as_ref();
        let phase = status
            .and_then(|s| s.phase)
            .map_or("NoStatus", |p| p.as_str());
        let step = status
            .and_then(|s| s.operation.as_ref())
            .map(|op| format!("-{:?}-{:?}", op.type_, op.step))
            .unwrap_or_default();
        let label = format!("{prefix}-{:02}-{phase}{step}", seen.len());
        write(dir, job, &label);
    }
}

/// What a health check can tell apart: generations, phase, operation, savepoint in progress,
/// and each condition's status and reason (messages carry changing numbers, so they are left
/// out).
fn signature(job: &StreamJob) -> String {
    let Some(s) = &job.status else {
        return "no status".into();
    };
    let unobserved = s.observed_generation != job.metadata.generation;
    let operation = s
        .operation
        .as_ref()
        .map(|op| format!("{:?}/{:?}", op.type_, op.step));
    let savepointing = s
        .savepoint
        .as_ref()
        .is_some_and(|sp| sp.in_progress.is_some());
    let mut conditions: Vec<String> = s
        .conditions
        .iter()
        .map(|c| format!("{}={}/{}", c.type_, c.status, c.reason))
        .collect();
    conditions.sort();
    format!(
        "{unobserved} {:?} {operation:?} {savepointing} {conditions:?}",
        s.phase
    )
}

fn write(dir: &Path, job: &StreamJob, label: &str) {
    let mut value = match serde_json::to_value(job) {
        Ok(v) => v,
        Err(e) => panic!("failed to serialise StreamJob to record it: {e}"),
    };
    if let Some(meta) = value
        .get_mut("metadata")
        .and_then(serde_json::Value::as_object_mut)
    {
        for field in [
            "managedFields",
            "uid",
            "resourceVersion",
            "creationTimestamp",
        ] {
            meta.remove(field);
        }
    }
    let yaml = match serde_norway::to_string(&value) {
        Ok(y) => y,
        Err(e) => panic!("failed to write StreamJob as YAML: {e}"),
    };
    let path = dir.join(format!("{label}.yaml"));
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, yaml)) {
        panic!("failed to write {}: {e}", path.display());
    }
}
