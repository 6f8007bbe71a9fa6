//! A stand-in kubelet for one fake node: the test control plane has no kubelet, so this plays
//! its part for the worker pods of one namespace. It runs each pod as a real `oxbow-worker run`
//! process with the pod's job file and admin token materialised from the ConfigMap and Secret
//! the operator wrote, reports the pod Running with IP 127.0.0.1 and its admin port (the
//! `oxbow.dev/admin-port` annotation, since every worker shares the loopback address), marks it
//! Ready when the worker's `/readyz` answers, and stops the process (SIGTERM) when the pod is
//! deleted, then removes the pod as a kubelet would. A worker process that exits is restarted
//! in place, as `restartPolicy: Always` has a kubelet restart a container, with the pod marked
//! not ready meanwhile; [`Kubelet::kill`] SIGKILLs a pod's worker, for crash tests.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use oxbow_crds::{
    jobfile::{ADMIN_TOKEN_KEY, JOB_FILE_KEY},
    names::ordinal_from_pod_name,
};

use crate::worker::WorkerProcess;

/// The running stand-in; stops its processes when dropped.
#[derive(Debug)]
pub struct Kubelet {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
    pids: Pids,
}

/// Worker process ids by pod name, as the loop last saw them.
type Pids = Arc<std::sync::Mutex<BTreeMap<String, u32>>>;

impl Kubelet {
    /// Starts playing kubelet for the pods of `namespace` with `labels`; workers get `env`.
    pub fn start(client: Client, namespace: &str, env: Vec<(String, String)>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let pids = Pids::default();
        let task = tokio::spawn(run(
            client,
            namespace.to_owned(),
            env,
            Arc::clone(&stop),
            Arc::clone(&pids),
        ));
        Kubelet {
            stop,
            task: Some(task),
            pids,
        }
    }

    /// SIGKILLs the worker of pod `name` (the kubelet then restarts it); false if it runs none.
    pub fn kill(&self, name: &str) -> bool {
        let pid = self.pids.lock().ok().and_then(|p| p.get(name).copied());
        pid.is_some_and(|pid| crate::worker::signal(pid, "KILL").is_ok())
    }

    /// Stops every worker and the loop.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Running {
    uid: String,
    worker: WorkerProcess,
    ready: bool,
}

async fn run(
    client: Client,
    namespace: String,
    env: Vec<(String, String)>,
    stop: Arc<AtomicBool>,
    pids: Pids,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let dir = std::env::temp_dir().join(crate::unique_name("oxbow-kubelet"));
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(list) = pods
            .list(&ListParams::default().labels("app.kubernetes.io/name=oxbow-worker"))
            .await
        else {
            continue;
        };
        // Pods that went away or are being deleted: stop their process, then remove the pod.
        let live: BTreeMap<String, &Pod> = list.items.iter().map(|p| (p.name_any(), p)).collect();
        let names: Vec<String> = running.keys().cloned().collect();
        for name in names {
            let gone = match live.get(&name) {
                None => true,
                Some(p) => {
                    p.metadata.deletion_timestamp.is_some()
                        || p.uid().as_deref() != running.get(&name).map(|r| r.uid.as_str())
                }
            };
            if gone && let Some(mut r) = running.remove(&name) {
                let _ = r.worker.terminate();
            }
        }
        for pod in &list.items {
            let name = pod.name_any();
            if pod.metadata.deletion_timestamp.is_some() {
                if !running.contains_key(&name) {
                    let _ = pods
                        .delete(&name, &DeleteParams::default().grace_period(0))
                        .await;
                }
                continue;
            }
            if let Some(r) = running.get_mut(&name)
                && !r.worker.is_running()
            {
                // The container exited: restart it, not ready until it answers again.
                let _ = set_status(&pods, &name, r.worker.port, false).await;
                running.remove(&name);
            }
            if let Some(r) = running.get_mut(&name) {
                if !r.ready && r.worker.is_running() && ready(&r.worker).await {
                    r.ready = true;
                    let _ = set_status(&pods, &name, r.worker.port, true).await;
                }
                continue;
            }
            // A new pod: materialise its files and start its worker.
            let Some(ordinal) = ordinal_from_pod_name(&name) else {
                continue;
            };
            let Some(job) = pod.labels().get("app.kubernetes.io/instance").cloned() else {
                continue;
            };
            let (Ok(map), Ok(secret)) = (
                maps.get(&format!("{job}-job")).await,
                secrets.get(&format!("{job}-admin")).await,
            ) else {
                continue;
            };
            let Some(job_json) = map.data.as_ref().and_then(|d| d.get(JOB_FILE_KEY)) else {
                continue;
            };
            let token = secret
                .data
                .as_ref()
                .and_then(|d| d.get(ADMIN_TOKEN_KEY))
                .map(|t| String::from_utf8_lossy(&t.0).into_owned())
                .unwrap_or_default();
            let pod_dir: PathBuf = dir.join(&name).join(pod.uid().unwrap_or_default());
            if std::fs::create_dir_all(&pod_dir).is_err() {
                continue;
            }
            let file = pod_dir.join("job.json");
            if std::fs::write(&file, job_json).is_err() {
                continue;
            }
            let mut worker_env = env.clone();
            worker_env.push(("POD_NAME".into(), name.clone()));
            let Ok(worker) = WorkerProcess::start_with_token(&file, ordinal, &worker_env, &token)
            else {
                continue;
            };
            let _ = set_status(&pods, &name, worker.port, false).await;
            if let (Ok(mut p), Some(pid)) = (pids.lock(), worker.pid()) {
                p.insert(name.clone(), pid);
            }
            running.insert(
                name,
                Running {
                    uid: pod.uid().unwrap_or_default(),
                    worker,
                    ready: false,
                },
            );
        }
    }
    for (_, mut r) in running {
        let _ = r.worker.terminate();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

async fn ready(worker: &WorkerProcess) -> bool {
    reqwest::get(worker.url("/readyz"))
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn set_status(
    pods: &Api<Pod>,
    name: &str,
    port: u16,
    ready: bool,
) -> Result<(), kube::Error> {
    let meta = serde_json::json!({"metadata": {"annotations": {"oxbow.dev/admin-port": port.to_string()}}});
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&meta))
        .await?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = serde_json::json!({"status": {
        "phase": "Running",
        "podIP": "127.0.0.1",
        "hostIP": "127.0.0.1",
        "startTime": now,
        "conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": if ready { "True" } else { "False" }, "lastTransitionTime": now},
        ],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}
