//! `oxbow-worker run`: the worker process of a StatefulSet pod. Reads the job file the
//! operator mounts, serves the admin API, runs the worker until SIGTERM and takes a final
//! checkpoint.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
};

use oxbow_crds::{
    admin::ADMIN_PORT,
    jobfile::{ADMIN_TOKEN_PATH, JOB_FILE_PATH, JobFile},
    names,
};

use super::RunArgs;
use crate::{
    admin,
    runtime::{Control, RuntimeError, Shared, Worker, WorkerConfig},
};

/// Why `run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The job file is missing or unreadable.
    #[error(
        "failed to read the job file {path}: {source} (the operator mounts it from the job's ConfigMap; pass --job to use another)"
    )]
    ReadJob {
        /// Path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The job file does not parse.
    #[error("failed to load the job file {path}: {source}")]
    ParseJob {
        /// Path.
        path: PathBuf,
        /// Why.
        #[source]
        source: oxbow_crds::jobfile::JobFileError,
    },
    /// No ordinal given and none derivable from the pod name.
    #[error(
        "cannot tell this worker's ordinal: pass --ordinal N or run as a StatefulSet pod (POD_NAME or HOSTNAME ending in -N)"
    )]
    Ordinal,
}

impl RunArgs {
    /// The worker configuration: job file from `--job`, `OXBOW_JOB_FILE` or the mounted
    /// path; ordinal from `--ordinal`, `POD_NAME` or `HOSTNAME`.
    pub fn config(&self) -> Result<WorkerConfig, StartError> {
        let path = self
            .job
            .clone()
            .or_else(|| std::env::var_os("OXBOW_JOB_FILE").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(JOB_FILE_PATH));
        let text = std::fs::read_to_string(&path).map_err(|source| StartError::ReadJob {
            path: path.clone(),
            source,
        })?;
        let job =
            JobFile::from_json(&text).map_err(|source| StartError::ParseJob { path, source })?;
        let ordinal = self
            .ordinal
            .or_else(|| {
                ["POD_NAME", "HOSTNAME"]
                    .iter()
                    .filter_map(|v| std::env::var(v).ok())
                    .find_map(|name| names::ordinal_from_pod_name(&name))
            })
            .ok_or(StartError::Ordinal)?;
        Ok(WorkerConfig {
            job,
            ordinal,
            bootstrap: self.bootstrap.clone(),
            kafka_timeout: self.kafka_timeout,
        })
    }
}

/// The admin token: `OXBOW_ADMIN_TOKEN`, or the file the operator mounts. Without one, the
/// `/v1` endpoints refuse every request.
fn admin_token() -> String {
    std::env::var("OXBOW_ADMIN_TOKEN")
        .ok()
        .or_else(|| std::fs::read_to_string(ADMIN_TOKEN_PATH).ok())
        .map(|t| t.trim().to_owned())
        .unwrap_or_default()
}

/// `oxbow-worker run`: exit code 2 when the worker cannot start (a missing or invalid job
/// file, no ordinal), 1 when it stops with an error.
pub fn main(args: &RunArgs) -> ExitCode {
    super::init_logging("info");
    let config = match args.config() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(config, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the worker, with its admin API, until SIGTERM or SIGINT, then takes a final checkpoint.
pub fn run(config: WorkerConfig, options: &RunArgs) -> Result<(), RunError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            tracing::warn!(error = %e, signal, "cannot handle a termination signal; it will kill the worker without a final checkpoint");
        }
    }
    let (job, ordinal) = (config.job.name.clone(), config.ordinal);
    let token = admin_token();
    if token.is_empty() {
        tracing::warn!(
            "no admin token (OXBOW_ADMIN_TOKEN or {ADMIN_TOKEN_PATH}): the /v1 admin endpoints refuse every request"
        );
    }
    let (shared, commands) = Shared::new(ordinal);
    let addr = options
        .admin_addr
        .clone()
        .unwrap_or_else(|| format!("0.0.0.0:{ADMIN_PORT}"));
    if let Some(c) = config.job.spec.checkpoint.as_ref()
        && let Ok(store) = crate::checkpoint::store::CheckpointStore::open(
            &c.storage,
            &config.job.namespace,
            &config.job.name,
        )
    {
        let timeout = c
            .timeout
            .parse()
            .unwrap_or(std::time::Duration::from_secs(60));
        shared.set_store(store.with_timeout(timeout));
    }
    let bound = admin::serve(&addr, Arc::clone(&shared), token)?;
    tracing::info!(%job, ordinal, generation = config.job.assignment.generation, admin = %bound, "starting");
    let mut worker = Worker::start(config)?;
    tracing::info!(partitions = ?worker, "restored; processing");
    worker.run(
        &stop,
        Some(Control {
            shared: &shared,
            commands: &commands,
        }),
    )?;
    tracing::info!("stopped after a final checkpoint");
    Ok(())
}

/// Why `run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The admin API could not start.
    #[error(transparent)]
    Admin(#[from] admin::ServeError),
    /// The runtime failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}
