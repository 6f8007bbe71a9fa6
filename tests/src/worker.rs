//! `oxbow-worker run` processes for tests, with their admin API.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{Mutex, PoisonError},
};

use anyhow::{Context, bail};
use oxbow_crds::{
    StreamJobSpec,
    admin::{SAVEPOINTS_PATH, SavepointResult, SavepointState, WorkerStatus},
    assignment::assign,
    jobfile::{JobFile, Restore},
};

/// The admin token test workers use.
pub const TOKEN: &str = "test-token";

/// The worker binary built next to the running test (`cargo test --workspace` builds it).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    dir.join("oxbow-worker")
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A running worker process; killed (SIGKILL) when dropped, so a failing test leaves none
/// behind.
#[derive(Debug)]
pub struct WorkerProcess {
    child: Mutex<Option<Child>>,
    /// Its admin API port.
    pub port: u16,
    token: String,
    http: reqwest::Client,
}

impl WorkerProcess {
    /// Starts `oxbow-worker run --job <file> --ordinal <ordinal>` with `env`.
    pub fn start(job_file: &Path, ordinal: u32, env: &[(String, String)]) -> anyhow::Result<Self> {
        Self::start_with_token(job_file, ordinal, env, TOKEN)
    }

    /// The same with the admin token `token`.
    pub fn start_with_token(
        job_file: &Path,
        ordinal: u32,
        env: &[(String, String)],
        token: &str,
    ) -> anyhow::Result<Self> {
        let binary = binary();
        if !binary.exists() {
            bail!(
                "{} is missing: build it with `cargo build -p oxbow-worker`",
                binary.display()
            );
        }
        let port = free_port();
        let child = Command::new(&binary)
            .args(["run", "--job"])
            .arg(job_file)
            .args(["--ordinal", &ordinal.to_string()])
            .args(["--admin-addr", &format!("127.0.0.1:{port}")])
            .env("OXBOW_ADMIN_TOKEN", token)
            // OXBOW_TEST_WORKER_LOG=debug shows what the workers do.
            .env(
                "OXBOW_LOG",
                std::env::var("OXBOW_TEST_WORKER_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .envs(env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .with_context(|| format!("failed to start {}", binary.display()))?;
        Ok(WorkerProcess {
            child: Mutex::new(Some(child)),
            port,
            token: token.to_owned(),
            http: reqwest::Client::new(),
        })
    }

    /// The admin API URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `GET path` of the `/v1` API as JSON, or `None` while it does not answer.
    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Option<T> {
        self.http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// `GET /v1/status`, or `None` while the API does not answer.
    pub async fn status(&self) -> Option<WorkerStatus> {
        self.get("/v1/status").await
    }

    /// `POST /v1/savepoints` for the savepoint `id` (with `stop`, the worker processes nothing
    /// more); the answer's HTTP status.
    pub async fn request_savepoint(&self, id: &str, stop: bool) -> anyhow::Result<u16> {
        let answer = self
            .http
            .post(self.url(SAVEPOINTS_PATH))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"id": id, "stop": stop}))
            .send()
            .await
            .context("failed to request a savepoint")?;
        Ok(answer.status().as_u16())
    }

    /// Waits up to a minute for the savepoint `id` to complete or fail.
    pub async fn savepoint_result(&self, id: &str) -> anyhow::Result<SavepointResult> {
        let path = format!("{SAVEPOINTS_PATH}/{id}");
        let minute = std::time::Duration::from_secs(60);
        crate::eventually("the savepoint", minute, async || {
            let result: SavepointResult = self.get(&path).await?;
            (result.state != SavepointState::InProgress).then_some(result)
        })
        .await
    }

    /// Takes the savepoint `id` and waits for its result.
    pub async fn savepoint(&self, id: &str, stop: bool) -> anyhow::Result<SavepointResult> {
        let status = self.request_savepoint(id, stop).await?;
        anyhow::ensure!(status == 202, "the savepoint request was refused: {status}");
        self.savepoint_result(id).await
    }

    /// Waits up to a minute for `/readyz` to answer 200: restored and processing.
    pub async fn ready(&self) -> anyhow::Result<()> {
        crate::eventually(
            "the worker to be ready",
            std::time::Duration::from_secs(60),
            async || {
                let response = self.http.get(self.url("/readyz")).send().await.ok()?;
                response.status().is_success().then_some(())
            },
        )
        .await
    }

    /// `GET /metrics`, or `None` while the API does not answer.
    pub async fn metrics(&self) -> Option<String> {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    /// The process, while it has not been stopped.
    fn child(&mut self) -> &mut Option<Child> {
        self.child.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        let child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        child.as_ref().map(Child::id)
    }

    /// Whether the process still runs.
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, and wait for the process to go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child().take().context("the worker already stopped")?;
        signal(child.id(), "TERM")?;
        Ok(child.wait()?)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `kill -<name>` to a process.
pub fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()?;
    if !status.success() {
        bail!("kill -{name} {pid} failed: {status}");
    }
    Ok(())
}

/// The job file of job `test/<name>`, generation 1, with `spec`, `topics` (name and partition
/// count) assigned to `workers`, restoring from the latest checkpoint.
pub fn job_file(name: &str, spec: StreamJobSpec, topics: &[(&str, i32)], workers: u32) -> JobFile {
    let topics: BTreeMap<String, i32> = topics
        .iter()
        .map(|(topic, partitions)| ((*topic).to_owned(), *partitions))
        .collect();
    JobFile::new(
        "test",
        name,
        1,
        spec,
        assign(&topics, workers, None),
        Restore::LatestCheckpoint,
    )
}

/// Waits up to two minutes until `done` says the workers have caught up, failing at once if one
/// exited. On timeout it only reports — what `diagnose` says and every worker's status and
/// metrics — and returns, so that the caller's comparison shows what is missing.
pub async fn catch_up(
    workers: &[WorkerProcess],
    mut done: impl AsyncFnMut() -> bool,
    mut diagnose: impl AsyncFnMut() -> String,
) {
    let caught_up = crate::Wait::new(
        "the workers to catch up",
        std::time::Duration::from_secs(120),
    )
    .diagnose(async || {
        let mut report = diagnose().await;
        for w in workers {
            report += &format!("\nworker status: {:?}", w.status().await);
            report += &format!(
                "\nworker metrics: {}",
                w.metrics().await.unwrap_or_default()
            );
        }
        report
    })
    .until(async || {
        for (ordinal, w) in workers.iter().enumerate() {
            assert!(w.is_running(), "worker {ordinal} exited early");
        }
        done().await.then_some(())
    })
    .await;
    if let Err(e) = caught_up {
        eprintln!("{e:#}");
    }
}

/// Stops every worker with SIGTERM and checks that each ended cleanly.
pub fn terminate_all(workers: Vec<WorkerProcess>) {
    for mut w in workers {
        let status = w.terminate().unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            status.success(),
            "SIGTERM ends the worker cleanly: {status}"
        );
    }
}

/// Writes `job` as `oxbow-worker run --job` reads it, to `path`.
pub fn write_job_file(job: &JobFile, path: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_string(job).context("failed to serialise the job file")?;
    std::fs::write(path, json).with_context(|| format!("failed to write {}", path.display()))
}
