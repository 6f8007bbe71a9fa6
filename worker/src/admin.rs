//! The worker's admin HTTP API (paths and messages in [`oxbow_crds::admin`]).
//!
//! `/healthz`, `/readyz` and `/metrics` are open to kubelet probes and Prometheus; `/v1/...`
//! needs `Authorization: Bearer <token>` with the job's admin token. The server runs on its own
//! thread; it reads what the processing loop publishes and hands it commands (savepoints).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use oxbow_crds::admin::{
    HEALTHZ_PATH, METRICS_PATH, READYZ_PATH, SAVEPOINTS_PATH, STATUS_PATH, SavepointRequest,
    SavepointResult, SavepointState, WorkerState, WorkerStatus,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// A command from the API to the processing loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Take a savepoint; with `stop`, process nothing afterwards.
    Savepoint(SavepointRequest),
}

/// Labels of per-reason counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Static reason.
    pub reason: &'static str,
}

/// Labels of transaction counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `commit` or `abort`.
    pub outcome: &'static str,
}

/// Labels of per-partition series (bounded by the job's assignment).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// Input topic.
    pub topic: String,
    /// Input partition.
    pub partition: i32,
}

/// The worker's metrics. Labels are bounded: reasons and outcomes are static strings.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records consumed, per input partition.
    pub records_in: Family<PartitionLabel, Counter>,
    /// Records produced by the tasks of each input partition: to the sink, or to the shuffle
    /// topic for the source stage of a repartitioning pipeline.
    pub records_out: Family<PartitionLabel, Counter>,
    /// Next offset to consume, per input partition.
    pub consumer_position: Family<PartitionLabel, Gauge>,
    /// Checkpoints that failed, by the system that failed.
    pub checkpoint_failures: Family<ReasonLabel, Counter>,
    /// 1 while the worker backs off after a failed checkpoint, waiting for Kafka or the store.
    pub retrying: Gauge,
    /// Records dead-lettered, by reason.
    pub dead_lettered: Family<ReasonLabel, Counter>,
    /// Checkpoints completed.
    pub checkpoints: Counter,
    /// Duration of the last checkpoint, milliseconds.
    pub checkpoint_duration_ms: Gauge,
    /// Bytes written by the last checkpoint.
    pub checkpoint_bytes: Gauge,
    /// Completion time of the last checkpoint, epoch seconds.
    pub last_checkpoint_timestamp_seconds: Gauge,
    /// Kafka transactions, by outcome.
    pub transactions: Family<OutcomeLabel, Counter>,
    /// Bytes of task state held.
    pub state_bytes: Gauge,
}

impl Metrics {
    fn register(self: &Arc<Self>) -> Registry {
        let mut r = Registry::with_prefix("oxbow_worker");
        r.register(
            "records_in",
            "Records consumed, per input partition",
            self.records_in.clone(),
        );
        r.register(
            "records_out",
            "Records produced by each input partition's task (to the sink, or to the shuffle topic from a source stage)",
            self.records_out.clone(),
        );
        r.register(
            "consumer_position",
            "Next offset to consume, per input partition",
            self.consumer_position.clone(),
        );
        r.register(
            "checkpoint_failures",
            "Checkpoints that failed and were retried, by the system that failed",
            self.checkpoint_failures.clone(),
        );
        r.register(
            "retrying",
            "1 while backing off after a failed checkpoint",
            self.retrying.clone(),
        );
        r.register(
            "dead_lettered",
            "Records sent to the dead-letter topic, by reason",
            self.dead_lettered.clone(),
        );
        r.register(
            "checkpoints",
            "Checkpoints completed",
            self.checkpoints.clone(),
        );
        r.register(
            "checkpoint_duration_ms",
            "Duration of the last checkpoint",
            self.checkpoint_duration_ms.clone(),
        );
        r.register(
            "checkpoint_bytes",
            "Snapshot bytes written by the last checkpoint",
            self.checkpoint_bytes.clone(),
        );
        r.register(
            "last_checkpoint_timestamp_seconds",
            "When the last checkpoint completed",
            self.last_checkpoint_timestamp_seconds.clone(),
        );
        r.register(
            "transactions",
            "Kafka transactions by outcome",
            self.transactions.clone(),
        );
        r.register(
            "state_bytes",
            "Bytes of window state held",
            self.state_bytes.clone(),
        );
        r
    }
}

/// What the API and the processing loop share.
#[derive(Debug)]
pub struct Shared {
    token: String,
    /// The loop's latest status.
    pub status: Mutex<WorkerStatus>,
    /// Savepoint results by id.
    pub savepoints: Mutex<BTreeMap<String, SavepointResult>>,
    /// Ready once restored and processing.
    pub ready: AtomicBool,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    registry: Registry,
    commands: Mutex<mpsc::Sender<Command>>,
    /// The job's checkpoint store, for disposing of savepoints.
    store: std::sync::OnceLock<crate::checkpoint::store::CheckpointStore>,
}

impl Shared {
    /// Gives the API the job's checkpoint store (for savepoint disposal).
    pub fn set_store(&self, store: crate::checkpoint::store::CheckpointStore) {
        let _ = self.store.set(store);
    }

    /// State for a worker of `ordinal`; commands arrive on the returned receiver.
    pub fn new(token: String, ordinal: u32) -> (Arc<Self>, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel();
        let metrics = Arc::new(Metrics::default());
        let registry = metrics.register();
        let status = WorkerStatus {
            ordinal,
            assignment_generation: 0,
            spec_generation: 0,
            state: WorkerState::Starting,
            restored_from: None,
            partitions: Vec::new(),
            last_checkpoint: None,
            state_bytes: 0,
            records_in: 0,
            records_out: 0,
            dead_lettered: 0,
            error: None,
        };
        let shared = Shared {
            token,
            status: Mutex::new(status),
            savepoints: Mutex::new(BTreeMap::new()),
            ready: AtomicBool::new(false),
            metrics,
            registry,
            store: std::sync::OnceLock::new(),
            commands: Mutex::new(tx),
        };
        (Arc::new(shared), rx)
    }

    /// Records a savepoint's progress.
    pub fn set_savepoint(&self, result: SavepointResult) {
        if let Ok(mut map) = self.savepoints.lock() {
            map.insert(result.id.clone(), result);
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some(presented) = value.strip_prefix("Bearer ") else {
            return false;
        };
        constant_time_eq(presented.as_bytes(), self.token.as_bytes())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "missing or wrong bearer token: send the job's admin token as `Authorization: Bearer <token>`\n",
    )
        .into_response()
}

/// The API's routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(HEALTHZ_PATH, get(|| async { "ok\n" }))
        .route(READYZ_PATH, get(readyz))
        .route(METRICS_PATH, get(metrics))
        .route(STATUS_PATH, get(status))
        .route(SAVEPOINTS_PATH, post(trigger_savepoint))
        .route(
            &format!("{SAVEPOINTS_PATH}/{{id}}"),
            get(savepoint).delete(dispose_savepoint),
        )
        .with_state(shared)
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: restoring or idle\n",
        )
            .into_response()
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let mut out = String::new();
    match encode(&mut out, &s.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to encode metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn status(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !s.authorized(&headers) {
        return unauthorized();
    }
    match s.status.lock() {
        Ok(status) => Json(status.clone()).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn trigger_savepoint(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(request): Json<SavepointRequest>,
) -> Response {
    if !s.authorized(&headers) {
        return unauthorized();
    }
    if let Some(existing) = s
        .savepoints
        .lock()
        .ok()
        .and_then(|m| m.get(&request.id).cloned())
    {
        return (StatusCode::OK, Json(existing)).into_response();
    }
    let accepted = SavepointResult {
        id: request.id.clone(),
        state: SavepointState::InProgress,
        path: None,
        error: None,
    };
    s.set_savepoint(accepted.clone());
    let sent = s
        .commands
        .lock()
        .map(|tx| tx.send(Command::Savepoint(request)).is_ok())
        .unwrap_or(false);
    if sent {
        (StatusCode::ACCEPTED, Json(accepted)).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the worker is shutting down\n",
        )
            .into_response()
    }
}

async fn savepoint(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !s.authorized(&headers) {
        return unauthorized();
    }
    match s.savepoints.lock().ok().and_then(|m| m.get(&id).cloned()) {
        Some(result) => Json(result).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("no savepoint {id:?} on this worker\n"),
        )
            .into_response(),
    }
}

/// `DELETE /v1/savepoints/{id}`: deletes every object of the savepoint from the job's
/// storage (the operator disposes of savepoints beyond `historyLimit` through a worker, which
/// holds the storage credentials). Deleting a savepoint that is gone is not an error.
async fn dispose_savepoint(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !s.authorized(&headers) {
        return unauthorized();
    }
    if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
        return (
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a savepoint id\n"),
        )
            .into_response();
    }
    let Some(store) = s.store.get() else {
        return (StatusCode::CONFLICT, "this job has no checkpoint storage\n").into_response();
    };
    let dir = format!("{}/", oxbow_crds::checkpoint::savepoint_dir(&id));
    let keys = match store.list(&dir).await {
        Ok(keys) => keys,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("{e}\n")).into_response(),
    };
    for key in &keys {
        if let Err(e) = store.delete(key).await {
            return (StatusCode::BAD_GATEWAY, format!("{e}\n")).into_response();
        }
    }
    tracing::info!(savepoint = %id, objects = keys.len(), "disposed of a savepoint");
    Json(serde_json::json!({"id": id, "deletedObjects": keys.len()})).into_response()
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
#[error("failed to start the admin API on {addr}: {source}")]
pub struct ServeError {
    /// Address.
    pub addr: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Serves the API on `addr` from a thread of its own; returns the bound address.
pub fn serve(addr: &str, shared: Arc<Shared>) -> Result<SocketAddr, ServeError> {
    let err = |source| ServeError {
        addr: addr.to_owned(),
        source,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(err)?;
    std::thread::Builder::new()
        .name("oxbow-admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => {
                        if let Err(e) = axum::serve(listener, router(shared)).await {
                            tracing::error!(error = %e, "the admin API stopped");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "the admin API could not start"),
                }
            })
        })
        .map_err(err)?;
    Ok(local)
}
