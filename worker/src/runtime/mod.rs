//! The worker runtime: Kafka in, the engine, Kafka out, exactly-once checkpoints.
//!
//! One worker owns the partitions its job file assigns to its ordinal. It consumes them with
//! `assign()`, runs a [`Task`] per partition, and produces results inside a Kafka transaction.
//! Every `checkpoint.interval` it flushes the transaction, writes each task's snapshot to object
//! storage as a new object, sends the input offsets — each with metadata naming its snapshot —
//! to the transaction, and commits. The committed offsets are the single source of truth: on
//! start a worker fences its predecessor (`init_transactions`), reads the committed offsets,
//! loads exactly the snapshots they name, and seeks there.
//!
//! The runtime's rooms:
//! - [`worker`](self::worker): start, the processing loop, the final checkpoint;
//! - [`restore`](self::restore): tasks rebuilt from committed offsets, snapshots or a savepoint;
//! - [`checkpoint`](self::checkpoint): snapshots written and offsets committed with the output;
//! - [`output`](self::output): results and dead letters produced into the transaction;
//! - [`progress`](self::progress): event time across partitions — caught-up partitions, idle
//!   ones, and the source stage's progress reports to the shuffle stage;
//! - [`recovery`](self::recovery): the error policy after a failed checkpoint;
//! - [`savepoint`](self::savepoint): savepoints written and read;
//! - [`status`](self::status): what the worker publishes for the admin API;
//! - [`control`]: the state and commands shared with the admin API (which lives outside the
//!   runtime, in `crate::admin`);
//! - [`error`](self::error): why the worker stops or retries.

mod checkpoint;
pub mod control;
mod error;
mod output;
mod progress;
mod recovery;
mod restore;
mod savepoint;
pub mod security;
mod status;
mod worker;

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use oxbow_crds::{admin::WorkerState, jobfile::JobFile, validation::ValidatedSpec};
use rdkafka::{consumer::BaseConsumer, producer::ThreadedProducer};

pub use self::{
    control::{Command, Control, Shared},
    error::RuntimeError,
    output::DeliveryTracker,
};
use crate::{
    checkpoint::store::CheckpointStore,
    engine::{Output, Task, stages::Stages},
    metrics::Metrics,
};

/// What a worker needs to start.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The job file.
    pub job: JobFile,
    /// This worker's StatefulSet ordinal.
    pub ordinal: u32,
    /// Overrides `spec.kafka.bootstrapServers` (local mode, tests).
    pub bootstrap: Option<String>,
    /// How long Kafka operations (init, commit, flush) may take.
    pub kafka_timeout: Duration,
}

struct Slot {
    task: Task,
    /// `<topic>/<partition>`: how the shuffle stage names this partition when it is a source.
    upstream_id: String,
    /// Next offset to consume; `None` until known.
    position: Option<i64>,
    /// When this process last took a record from the partition.
    last_record: Instant,
    /// Snapshots named by this partition's committed checkpoints, oldest first.
    committed_snapshots: VecDeque<String>,
    /// The snapshot written for the checkpoint in flight.
    pending_snapshot: Option<String>,
    /// Records in and out already exported as metrics.
    exported: (u64, u64),
    /// The newest snapshot of this partition and the task revision it captured.
    last_snapshot: Option<(crate::engine::task::Revision, String)>,
}

/// Dead letters by reason already exported as metrics (the tasks count them; the processing
/// loop publishes the difference).
#[derive(Debug, Default, Clone, Copy)]
struct Exported {
    dead_lettered: [u64; 4],
}

/// A completed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointReport {
    /// Checkpoint id (per worker process).
    pub id: u64,
    /// Snapshots written.
    pub snapshots: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Time taken.
    pub duration: Duration,
}

/// A running worker.
pub struct Worker {
    config: WorkerConfig,
    spec: ValidatedSpec,
    stages: Stages,
    /// The job's repartition topic, when the pipeline has a shuffle stage.
    shuffle_topic: Option<String>,
    consumer: BaseConsumer,
    producer: ThreadedProducer<DeliveryTracker>,
    store: Option<CheckpointStore>,
    io: tokio::runtime::Runtime,
    slots: BTreeMap<(String, i32), Slot>,
    output: Output,
    writer: String,
    checkpoint_id: u64,
    last_checkpoint: Instant,
    exactly_once: bool,
    last_report: Option<(CheckpointReport, i64)>,
    exported: Exported,
    /// Where events are counted: the admin API's metrics once [`Worker::run`] has control.
    metrics: Arc<Metrics>,
    /// The shuffle topic's partitions, to each of which source tasks report their progress.
    shuffle_partitions: Vec<i32>,
    /// Every source partition of the job, `<topic>/<partition>`: the shuffle stage's upstreams.
    upstreams: Arc<[String]>,
    /// When event-time progress was last looked after ([`progress`](self::progress)).
    last_progress: Instant,
    /// The last transient failure, until a checkpoint succeeds again.
    last_error: Option<String>,
    /// A Kafka transaction is open: begun and neither committed nor aborted. After a failure
    /// only an open transaction is aborted (librdkafka refuses to abort in state Ready).
    transaction_open: bool,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("ordinal", &self.config.ordinal)
            .field("partitions", &self.slots.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn worker_state(idle: bool) -> WorkerState {
    if idle {
        WorkerState::Idle
    } else {
        WorkerState::Running
    }
}

/// Wall-clock time, epoch milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
