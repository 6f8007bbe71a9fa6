//! `oxbow-operator run` processes for tests and benchmarks, against the test control plane:
//! run as a test's replica or as the Helm chart's Deployment would run it, with their metrics
//! and health endpoints, their log, and the leader Lease.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use serde_json::Value;

use crate::{
    Component, Wait, component,
    worker::{free_port, signal},
};

/// The operator binary built next to the running test (`cargo test --workspace` builds it).
pub fn binary() -> PathBuf {
    crate::worker::binary().with_file_name("oxbow-operator")
}

/// The operator binary of cargo profile directory `profile` (`release`, `debug`) in the
/// target directory the running test or benchmark was built in.
pub fn binary_of_profile(profile: &str) -> PathBuf {
    let profile_dir = crate::worker::binary()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    profile_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join(profile)
        .join("oxbow-operator")
}

/// Variables the operator reads, removed from the environment a test passes on so that only
/// what the test sets applies.
const OPERATOR_VARS: &[&str] = &[
    "WATCH_NAMESPACE",
    "OXBOW_WORKER_IMAGE",
    "OXBOW_METRICS_ADDR",
    "OXBOW_LEADER_ELECTION",
    "OXBOW_LEASE_NAME",
    "OXBOW_LEASE_NAMESPACE",
    "POD_NAMESPACE",
    "POD_NAME",
    "OXBOW_LOG",
    "OXBOW_LOG_FORMAT",
    // In a pod, the in-cluster configuration must not win over the test kubeconfig.
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
];

/// Who one operator replica is.
#[derive(Clone, Debug)]
pub struct Replica {
    /// The namespace it watches, which also holds its Lease.
    pub namespace: String,
    /// `POD_NAME`: its identity in the Lease.
    pub pod_name: String,
    /// `OXBOW_LEASE_NAME`.
    pub lease_name: String,
}

/// `oxbow-operator run` for `replica` against the test control plane, with
/// `OXBOW_METRICS_ADDR=metrics_addr`; the caller adds or overrides variables.
pub fn command(binary: &Path, replica: &Replica, metrics_addr: &str) -> anyhow::Result<Command> {
    let kubeconfig = component(Component::Kubernetes).get("OXBOW_TEST_KUBECONFIG")?;
    let mut command = Command::new(binary);
    command.arg("run");
    for var in OPERATOR_VARS {
        command.env_remove(var);
    }
    command
        .env("KUBECONFIG", kubeconfig)
        .env("WATCH_NAMESPACE", &replica.namespace)
        .env("POD_NAMESPACE", &replica.namespace)
        .env("POD_NAME", &replica.pod_name)
        .env("OXBOW_LEASE_NAME", &replica.lease_name)
        .env("OXBOW_METRICS_ADDR", metrics_addr)
        .env("OXBOW_WORKER_IMAGE", "oxbow-worker:test")
        // OXBOW_TEST_OPERATOR_LOG=info shows what the operators do.
        .env(
            "OXBOW_LOG",
            std::env::var("OXBOW_TEST_OPERATOR_LOG").unwrap_or_else(|_| "warn".to_owned()),
        );
    Ok(command)
}

/// `oxbow-operator run` as the chart's Deployment `deployment` runs it in pod `pod_name` of
/// `namespace`: the container's arguments and environment (the downward API resolved), and
/// nothing else of this process's environment but `PATH`, `HOME` and `TMPDIR`; authenticated
/// by `kubeconfig`, and serving its endpoints on `metrics_addr` rather than the chart's port.
pub fn deployment_command(
    binary: &Path,
    deployment: &Value,
    namespace: &str,
    pod_name: &str,
    kubeconfig: &Path,
    metrics_addr: &str,
) -> anyhow::Result<Command> {
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut command = Command::new(binary);
    command.env_clear();
    for (k, v) in std::env::vars() {
        if k == "PATH" || k == "HOME" || k == "TMPDIR" {
            command.env(k, v);
        }
    }
    for arg in container["args"].as_array().into_iter().flatten() {
        command.arg(arg.as_str().context("an argument that is not a string")?);
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().context("a variable without a name")?;
        let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.namespace") => namespace,
            Some("metadata.name") => pod_name,
            Some(other) => bail!("{name}: no value for fieldRef {other}"),
            None => var["value"]
                .as_str()
                .with_context(|| format!("{name} has no value"))?,
        };
        command.env(name, value);
    }
    command
        .env("OXBOW_METRICS_ADDR", metrics_addr)
        .env("KUBECONFIG", kubeconfig);
    Ok(command)
}

/// A running operator process; killed (SIGKILL) when dropped, so a failing test leaves none
/// behind.
#[derive(Debug)]
pub struct OperatorProcess {
    child: Option<Child>,
    /// Its `POD_NAME`.
    pub name: String,
    /// The port of `/metrics`, `/healthz` and `/readyz`.
    pub port: u16,
    /// Where its output goes, when not to the test's.
    log: Option<PathBuf>,
    http: reqwest::Client,
}

impl OperatorProcess {
    /// Starts `binary` as `replica`, serving its endpoints on a free loopback port; its output
    /// is the test's.
    pub fn start(binary: &Path, replica: &Replica) -> anyhow::Result<Self> {
        let port = free_port();
        let command = command(binary, replica, &format!("127.0.0.1:{port}"))?;
        Self::spawn(command, &replica.pod_name, port, None)
    }

    /// Starts the operator binary as the chart's Deployment runs it (see
    /// [`deployment_command`]), serving its endpoints on a free loopback port, with its output
    /// in `log`.
    pub fn start_as_deployed(
        deployment: &Value,
        namespace: &str,
        pod_name: &str,
        kubeconfig: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let port = free_port();
        let command = deployment_command(
            &binary(),
            deployment,
            namespace,
            pod_name,
            kubeconfig,
            &format!("127.0.0.1:{port}"),
        )?;
        Self::spawn(command, pod_name, port, Some(log))
    }

    fn spawn(
        mut command: Command,
        name: &str,
        port: u16,
        log: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let binary = PathBuf::from(command.get_program());
        if !binary.exists() {
            bail!(
                "{} is missing: build it with `cargo build -p oxbow-operator`",
                binary.display()
            );
        }
        if let Some(log) = log {
            let file = std::fs::File::create(log)
                .with_context(|| format!("failed to create {}", log.display()))?;
            command.stdout(file.try_clone()?).stderr(Stdio::from(file));
        }
        let child = command
            .spawn()
            .with_context(|| format!("failed to start {}", binary.display()))?;
        Ok(OperatorProcess {
            child: Some(child),
            name: name.to_owned(),
            port,
            log: log.map(Path::to_path_buf),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        })
    }

    /// Its log so far, with JSON and Debug escaping of quotes removed; empty when its output
    /// is the test's.
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
            .replace('\\', "")
    }

    /// The status code of `GET path`, or `None` while nothing answers.
    pub async fn get(&self, path: &str) -> Option<u16> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let response = self.http.get(url).send().await.ok()?;
        Some(response.status().as_u16())
    }

    /// `GET /metrics`, or `None` while it does not answer.
    pub async fn metrics(&self) -> Option<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        let response = self.http.get(url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    }

    /// What `oxbow_operator_leader` says, or `None` while `/metrics` does not answer.
    pub async fn is_leader(&self) -> Option<bool> {
        let text = self.metrics().await?;
        sample(&text, "oxbow_operator_leader").map(|v| v == 1.0)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and wait for the process to go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then the exit status once it exits within `timeout` (SIGKILL after that).
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let pid = self.pid().context("the operator already stopped")?;
        signal(pid, "TERM")?;
        let exited = Wait::new("the operator to exit on SIGTERM", timeout)
            .every(Duration::from_millis(50))
            .until(async || self.child.as_mut()?.try_wait().ok().flatten())
            .await;
        match exited {
            Ok(status) => {
                self.child = None;
                Ok(status)
            }
            Err(e) => {
                self.kill();
                Err(e)
            }
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of the sample `series` (a metric name with its labels exactly as the text
/// exposition writes them, such as `oxbow_operator_reconciles_total{result="ok"}`).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter_map(|line| line.strip_prefix(series))
        .find_map(|rest| rest.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

/// The holder of Lease `namespace/name`, `None` when it has none or does not exist.
pub async fn lease_holder(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let lease = leases
        .get_opt(name)
        .await
        .with_context(|| format!("failed to read Lease {namespace}/{name}"))?;
    Ok(lease.and_then(|l| l.spec).and_then(|s| s.holder_identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_sample_by_its_exact_series() {
        let text = "# TYPE oxbow_operator_leader gauge\noxbow_operator_leader 1\n\
                    oxbow_operator_reconciles_total{result=\"ok\"} 12\n\
                    oxbow_operator_reconciles_total{result=\"error\"} 3\n\
                    oxbow_operator_leader_other 7\n# EOF\n";
        assert_eq!(sample(text, "oxbow_operator_leader"), Some(1.0));
        assert_eq!(
            sample(text, "oxbow_operator_reconciles_total{result=\"error\"}"),
            Some(3.0)
        );
        assert_eq!(sample(text, "oxbow_operator_reconciles_total"), None);
        assert_eq!(sample(text, "oxbow_operator_jobs{phase=\"Running\"}"), None);
    }
}
