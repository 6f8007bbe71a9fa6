//! The operator's Prometheus metrics and its health and metrics endpoints.
//!
//! Labels are bounded: results, reasons, triggers and operation types are static strings;
//! per-job series (`jobs` by phase, `lag_records`) are computed at scrape time from the
//! controller's cache, so a deleted job's series disappear with it.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use kube::{ResourceExt, runtime::reflector::Store};
use oxbow_crds::StreamJob;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// The `result` label of [`Metrics::reconciles`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// The `reason` label of [`Metrics::reconcile_failures`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// [`crate::controller::Error::reason`].
    pub reason: &'static str,
}

/// The `trigger` label of [`Metrics::savepoint_duration`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabel {
    /// `Upgrade`, `Rescale`, `Suspend`, `Manual`, `Periodic` or `Delete`.
    pub trigger: &'static str,
}

/// The `operation` label of [`Metrics::operation_duration`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    /// `Upgrade`, `Rescale`, `Suspend`, `Resume` or `Rollback`.
    pub operation: &'static str,
}

/// The `phase` label of the `jobs` gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// `status.phase`.
    pub phase: &'static str,
}

/// The labels of the `lag_records` gauge, one series per StreamJob.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub namespace: String,
    /// StreamJob name.
    pub job: String,
}

/// Everything the operator counts.
#[derive(Debug)]
pub struct Metrics {
    /// Reconciles, by result.
    pub reconciles: Family<ResultLabel, Counter>,
    /// Reconcile durations, observe to status.
    pub reconcile_duration: Histogram,
    /// Failed reconciles, by static reason.
    pub reconcile_failures: Family<ReasonLabel, Counter>,
    /// Savepoint durations (request to completion on every worker), by trigger.
    pub savepoint_duration: Family<TriggerLabel, Histogram>,
    /// Operation durations (upgrade, rescale, suspend, resume, rollback), start to end.
    pub operation_duration: Family<OperationLabel, Histogram>,
    jobs: Family<PhaseLabel, Gauge>,
    lag: Family<JobLabel, Gauge>,
    leader: Gauge,
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconciles: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            reconcile_failures: Family::default(),
            savepoint_duration: Family::new_with_constructor(seconds_histogram),
            operation_duration: Family::new_with_constructor(seconds_histogram),
            jobs: Family::default(),
            lag: Family::default(),
            leader: Gauge::default(),
        }
    }
}

impl Metrics {
    fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("oxbow_operator");
        r.register(
            "reconciles",
            "StreamJob reconciles, by result",
            self.reconciles.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            self.reconcile_duration.clone(),
        );
        r.register(
            "reconcile_failures",
            "Failed reconciles, by reason",
            self.reconcile_failures.clone(),
        );
        r.register(
            "savepoint_duration_seconds",
            "Savepoints, from request to completion on every worker, by trigger",
            self.savepoint_duration.clone(),
        );
        r.register(
            "operation_duration_seconds",
            "Upgrades, rescales, suspends, resumes and rollbacks, from start to end",
            self.operation_duration.clone(),
        );
        r.register("jobs", "StreamJobs, by phase", self.jobs.clone());
        r.register(
            "lag_records",
            "Records the job's consumer group is behind, from Kafka",
            self.lag.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader lease",
            self.leader.clone(),
        );
        r
    }

    /// Sets the per-job series from `jobs` (the controllers' caches), then encodes
    /// everything.
    pub fn encode(&self, jobs: &[Arc<StreamJob>]) -> Result<String, std::fmt::Error> {
        self.jobs.clear();
        self.lag.clear();
        for job in jobs {
            let status = job.status.as_ref();
            let phase = status
                .and_then(|s| s.phase)
                .map_or("Pending", |p| p.as_str());
            self.jobs.get_or_create(&PhaseLabel { phase }).inc();
            if let Some(lag) = status.and_then(|s| s.lag.as_ref()) {
                let label = JobLabel {
                    namespace: job.namespace().unwrap_or_default(),
                    job: job.name_any(),
                };
                self.lag.get_or_create(&label).set(lag.records);
            }
        }
        let mut text = String::new();
        encode(&mut text, &self.registry())?;
        Ok(text)
    }

    /// Marks this replica as leader (or not).
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
}

/// What the endpoints read.
#[derive(Clone, Debug, Default)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    /// The controllers' caches, once they run (one per watched namespace).
    pub stores: Arc<std::sync::RwLock<Vec<Store<StreamJob>>>>,
    /// Ready: the process is up and either a standby or a leader whose caches are synced.
    pub ready: Arc<AtomicBool>,
}

/// `/metrics`, `/healthz` (the process serves), `/readyz` (standby, or leader with synced
/// caches).
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

async fn readyz(State(s): State<Shared>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        "ok\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "caches are not synced yet\n",
        )
            .into_response()
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    let jobs: Vec<Arc<StreamJob>> = s
        .stores
        .read()
        .map(|stores| stores.iter().flat_map(Store::state).collect())
        .unwrap_or_default();
    match s.metrics.encode(&jobs) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => failed(&e),
    }
}

fn failed(e: &std::fmt::Error) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("failed to encode metrics: {e}\n"),
    )
        .into_response()
}
