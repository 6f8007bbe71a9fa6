//! `oxbow-worker run`: the worker process of a StatefulSet pod.

use std::{
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use oxbow_crds::{
    admin::ADMIN_PORT,
    jobfile::{ADMIN_TOKEN_PATH, JOB_FILE_PATH, JobFile},
    names,
};

use crate::{
    admin::{self, Shared},
    runtime::{Control, RuntimeError, Worker, WorkerConfig},
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
    /// Arguments are wrong.
    #[error("{0}")]
    Usage(String),
}

/// Options of `run`.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Job file path.
    pub job: Option<PathBuf>,
    /// StatefulSet ordinal.
    pub ordinal: Option<u32>,
    /// Bootstrap override.
    pub bootstrap: Option<String>,
    /// Address of the admin API (default `0.0.0.0:9249`).
    pub admin_addr: Option<String>,
    /// How long one Kafka operation (fencing, commit, flush) may take (default 30s).
    pub kafka_timeout: Option<Duration>,
}

impl RunOptions {
    /// Parses `--job PATH --ordinal N --bootstrap HOST:PORT`.
    pub fn parse(args: &[String]) -> Result<Self, StartError> {
        let mut options = RunOptions::default();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| StartError::Usage(format!("{flag} needs a value")))
            };
            match flag.as_str() {
                "--job" => options.job = Some(PathBuf::from(value()?)),
                "--ordinal" => {
                    let v = value()?;
                    options.ordinal = Some(v.parse().map_err(|_| {
                        StartError::Usage(format!("--ordinal takes a number, got {v:?}"))
                    })?);
                }
                "--bootstrap" => options.bootstrap = Some(value()?),
                "--admin-addr" => options.admin_addr = Some(value()?),
                "--kafka-timeout" => {
                    let v = value()?;
                    options.kafka_timeout =
                        Some(oxbow_crds::duration::parse_duration(&v).map_err(|e| {
                            StartError::Usage(format!("--kafka-timeout {v:?}: {e}"))
                        })?);
                }
                other => return Err(StartError::Usage(format!("unknown argument {other:?}"))),
            }
        }
        Ok(options)
    }

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
            kafka_timeout: self.kafka_timeout.unwrap_or(Duration::from_secs(30)),
        })
    }
}

/// Installs the log subscriber: level from `OXBOW_LOG` (or `RUST_LOG`, default `info`), JSON
/// lines when `OXBOW_LOG_FORMAT=json`.
pub fn init_logging() {
    init_logging_default("info");
}

/// [`init_logging`] with another default level.
pub fn init_logging_default(level: &str) {
    let filter = std::env::var("OXBOW_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| level.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if std::env::var("OXBOW_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("oxbow-worker: logging is not available: {e}");
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

/// Runs the worker, with its admin API, until SIGTERM or SIGINT, then takes a final checkpoint.
pub fn run(config: WorkerConfig, options: &RunOptions) -> Result<(), RunError> {
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
    let (shared, commands) = Shared::new(token, ordinal);
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
    let bound = admin::serve(&addr, std::sync::Arc::clone(&shared))?;
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
