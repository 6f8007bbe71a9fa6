//! The worker runtime: Kafka in, the engine, Kafka out, exactly-once checkpoints.
//!
//! One worker owns the partitions its job file assigns to its ordinal. It consumes them with
//! `assign()`, runs a [`Task`] per partition, and produces results inside a Kafka transaction.
//! Every `checkpoint.interval` it flushes the transaction, writes each task's snapshot to object
//! storage as a new object, sends the input offsets — each with metadata naming its snapshot —
//! to the transaction, and commits. The committed offsets are the single source of truth: on
//! start a worker fences its predecessor (`init_transactions`), reads the committed offsets,
//! loads exactly the snapshots they name, and seeks there.

mod savepoint;
pub mod security;
mod status;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use oxbow_crds::{
    checkpoint::{OffsetMetadata, SnapshotKey},
    jobfile::{JobFile, Restore},
    streamjob::{DeliveryGuarantee, StartingOffsets},
    validation::{self, ValidatedSpec},
};
use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer},
};

use oxbow_crds::admin::{SavepointResult, SavepointState, WorkerState};

use crate::{
    admin::{Command, Shared},
    checkpoint::store::{CheckpointStore, StoreError},
    engine::{
        CompiledPipeline, InputRecord, Output, Task, snapshot::SnapshotError, stages::Stages,
    },
};

/// Why the worker stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The job file's spec is invalid (user error; fix the StreamJob).
    #[error("the job is invalid: {0}")]
    InvalidJob(String),
    /// A Kafka client could not be created or an operation failed.
    #[error("failed to {action}: {source}")]
    Kafka {
        /// What the worker was doing.
        action: &'static str,
        /// Why.
        #[source]
        source: KafkaError,
    },
    /// Checkpoint storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A Kafka credential the spec asks for is not mounted.
    #[error(transparent)]
    Credential(#[from] security::MissingCredential),
    /// A snapshot could not be written or read.
    #[error("failed to {action} for {topic}-{partition}: {source}")]
    Snapshot {
        /// What the worker was doing.
        action: &'static str,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Why.
        #[source]
        source: SnapshotError,
    },
    /// Committed offset metadata that Oxbow did not write.
    #[error("{0}")]
    ForeignMetadata(#[from] oxbow_crds::checkpoint::ForeignMetadata),
    /// A delivery into the open transaction failed; the transaction was aborted.
    #[error("failed to deliver {0} record(s) into the transaction; it was aborted")]
    Delivery(u64),
    /// This worker was fenced by a newer instance with the same transactional id.
    #[error(
        "fenced by a newer worker with the same transactional id; stopping so that only one generation runs"
    )]
    Fenced,
    /// The savepoint to restore from is missing or incomplete.
    #[error("failed to restore from savepoint {path}: {reason}")]
    Savepoint {
        /// Savepoint URL.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl RuntimeError {
    /// Whether retrying may help: Kafka or the store was unreachable or failed a request, as
    /// opposed to a bad job, a fenced worker, foreign data or a fatal producer error.
    pub fn is_transient(&self) -> bool {
        match self {
            RuntimeError::Kafka { source, .. } => match source {
                KafkaError::Transaction(e) => !e.is_fatal(),
                KafkaError::ClientCreation(_) | KafkaError::ClientConfig(..) => false,
                _ => true,
            },
            RuntimeError::Store(e) => e.is_transient(),
            RuntimeError::Delivery(_) => true,
            _ => false,
        }
    }

    /// A static label for metrics: which system failed.
    pub fn system(&self) -> &'static str {
        match self {
            RuntimeError::Kafka { .. } | RuntimeError::Delivery(_) | RuntimeError::Fenced => {
                "kafka"
            }
            RuntimeError::Store(_) | RuntimeError::Snapshot { .. } => "store",
            _ => "job",
        }
    }
}

/// Backoff between attempts to recover from a failed checkpoint.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);

    fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    /// The delay before the next attempt; doubles each time up to [`Backoff::MAX`].
    fn step(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

fn kafka(action: &'static str) -> impl FnOnce(KafkaError) -> RuntimeError {
    move |source| {
        let fenced = matches!(
            source.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        );
        if fenced {
            RuntimeError::Fenced
        } else {
            RuntimeError::Kafka { action, source }
        }
    }
}

/// Counts failed deliveries so that a checkpoint never commits over lost output.
#[derive(Debug, Default)]
pub struct DeliveryTracker {
    failed: AtomicU64,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

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
    /// Next offset to consume; `None` until known.
    position: Option<i64>,
    /// Snapshots named by this partition's committed checkpoints, oldest first.
    committed_snapshots: std::collections::VecDeque<String>,
    /// The snapshot written for the checkpoint in flight.
    pending_snapshot: Option<String>,
    /// Records in and out already exported as metrics.
    exported: (u64, u64),
    /// The newest snapshot of this partition and the task revision it captured.
    last_snapshot: Option<(crate::engine::task::Revision, String)>,
}

/// The admin API's side of a running worker.
#[derive(Debug, Clone, Copy)]
pub struct Control<'a> {
    /// What the API reads.
    pub shared: &'a Shared,
    /// What the API asks.
    pub commands: &'a std::sync::mpsc::Receiver<Command>,
}

/// Totals already exported as metrics.
#[derive(Debug, Default, Clone, Copy)]
struct Exported {
    dead_lettered: [u64; 4],
    commits: u64,
    aborts: u64,
    checkpoint_id: u64,
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
    commits: u64,
    aborts: u64,
    exported: Exported,
    /// The last transient failure, until a checkpoint succeeds again.
    last_error: Option<String>,
    /// The open transaction failed and must be aborted before going on.
    needs_abort: bool,
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Worker {
    /// Connects, fences the predecessor, restores state and assigns the owned partitions.
    pub fn start(config: WorkerConfig) -> Result<Self, RuntimeError> {
        let job = &config.job;
        let spec = validation::validate(&job.spec.clone())
            .map_err(|e| RuntimeError::InvalidJob(e.to_string()))?;
        let stages = Stages::compile(&spec, job.spec.source.format, job.spec.sink.format)
            .map_err(|e| RuntimeError::InvalidJob(e.to_string()))?;
        let shuffle_topic = stages
            .shuffle
            .as_ref()
            .map(|_| oxbow_crds::names::shuffle_topic(&job.namespace, &job.name));
        let exactly_once = job.spec.sink.delivery_guarantee == DeliveryGuarantee::ExactlyOnce;
        let bootstrap = config
            .bootstrap
            .clone()
            .unwrap_or_else(|| job.spec.kafka.bootstrap_servers.clone());
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", &bootstrap);
        if let Some(sec) = &job.spec.kafka.security {
            for (k, v) in security::properties(sec, &security::secret_dir())? {
                base.set(k, v);
            }
        }
        for (k, v) in &job.spec.kafka.properties {
            base.set(k, v);
        }

        let mut producer_config = base.clone();
        if exactly_once {
            producer_config
                .set("transactional.id", job.transactional_id(config.ordinal))
                .set("transaction.timeout.ms", "60000");
        } else {
            producer_config.set("enable.idempotence", "true");
        }
        let producer: ThreadedProducer<DeliveryTracker> = producer_config
            .create_with_context(DeliveryTracker::default())
            .map_err(kafka("create the Kafka producer"))?;
        if exactly_once {
            // Fences any predecessor with this transactional id and aborts its open transaction.
            producer
                .init_transactions(config.kafka_timeout)
                .map_err(kafka("initialize transactions"))?;
        }

        let reset = match job.spec.source.starting_offsets {
            StartingOffsets::Earliest => "earliest",
            StartingOffsets::Latest => "latest",
        };
        let consumer: BaseConsumer = base
            .clone()
            .set("group.id", job.consumer_group())
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", reset)
            .create()
            .map_err(kafka("create the Kafka consumer"))?;

        let store = spec
            .checkpoint
            .as_ref()
            .map(|c| {
                CheckpointStore::open(&c.storage, &job.namespace, &job.name)
                    .map(|store| store.with_timeout(c.timeout))
            })
            .transpose()?;
        let io = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                RuntimeError::Store(StoreError::Open {
                    url: "runtime".into(),
                    source: Box::new(e),
                })
            })?;
        if let Some(store) = &store {
            io.block_on(store.probe())?;
        }
        let writer = format!("w{}-{:x}", config.ordinal, now_ms());
        let mut worker = Worker {
            config,
            spec,
            stages,
            shuffle_topic,
            consumer,
            producer,
            store,
            io,
            slots: BTreeMap::new(),
            output: Output::default(),
            writer,
            checkpoint_id: 0,
            last_checkpoint: Instant::now(),
            exactly_once,
            last_report: None,
            commits: 0,
            aborts: 0,
            exported: Exported::default(),
            last_error: None,
            needs_abort: false,
        };
        worker.restore()?;
        if worker.exactly_once {
            worker
                .producer
                .begin_transaction()
                .map_err(kafka("begin a transaction"))?;
        }
        Ok(worker)
    }

    /// Rebuilds every task from the committed offsets and the snapshots they name, and seeks.
    fn restore(&mut self) -> Result<(), RuntimeError> {
        let owned: Vec<(String, i32)> = self
            .config
            .job
            .assignment
            .worker(self.config.ordinal)
            .map(|w| {
                w.topic_partitions()
                    .map(|tp| (tp.topic, tp.partition))
                    .collect()
            })
            .unwrap_or_default();
        let mut wanted = TopicPartitionList::new();
        for (topic, partition) in &owned {
            wanted.add_partition(topic, *partition);
        }
        let committed = self
            .consumer
            .committed_offsets(wanted, self.config.kafka_timeout)
            .map_err(kafka("read the committed offsets"))?;
        let generation = self.config.job.assignment.generation;
        let stateless = self.config.job.restore == Restore::Stateless;
        let savepoint = match &self.config.job.restore {
            Restore::Savepoint { path } => Some(self.read_savepoint(path)?),
            _ => None,
        };
        let mut assignment = TopicPartitionList::new();
        self.slots.clear();
        for (topic, partition) in owned {
            let committed = match committed
                .find_partition(&topic, partition)
                .map(|e| (e.offset(), e.metadata().to_owned()))
            {
                Some((Offset::Offset(offset), metadata)) => {
                    Some((offset, OffsetMetadata::decode(&metadata)?))
                }
                _ => None,
            };
            // A savepoint restore holds until this generation commits its own progress; after
            // a restart of the same generation the committed offsets are newer than the savepoint.
            let from_savepoint = savepoint.as_ref().filter(|_| {
                committed
                    .as_ref()
                    .is_none_or(|(_, m)| m.generation != generation)
            });
            let mut committed_snapshots = std::collections::VecDeque::new();
            let mut last_snapshot = None;
            let (task, position) = match (from_savepoint, committed) {
                (Some(savepoint), _) => self.task_from_savepoint(savepoint, &topic, partition)?,
                (None, Some((offset, metadata))) => {
                    let task = match &metadata.snapshot {
                        Some(key) if !stateless => {
                            let task = self.task_from_snapshot(key, &topic, partition)?;
                            last_snapshot = Some((task.revision(), key.clone()));
                            task
                        }
                        _ => Task::new(self.pipeline_for(&topic)),
                    };
                    committed_snapshots.extend(metadata.snapshot);
                    (task, Some(offset))
                }
                (None, None) => (Task::new(self.pipeline_for(&topic)), None),
            };
            let offset = position.map_or(self.starting_offset(&topic), Offset::Offset);
            assignment
                .add_partition_offset(&topic, partition, offset)
                .map_err(kafka("build the assignment"))?;
            // Metrics count what this process does, not what the restored state had counted.
            let counters = &task.state().counters;
            let exported = (counters.records_in, counters.records_out);
            self.slots.insert(
                (topic, partition),
                Slot {
                    task,
                    position,
                    committed_snapshots,
                    pending_snapshot: None,
                    exported,
                    last_snapshot,
                },
            );
        }
        self.consumer
            .assign(&assignment)
            .map_err(kafka("assign the partitions"))?;
        Ok(())
    }

    /// The stage that runs on `topic`'s partitions.
    pub(crate) fn pipeline_for(&self, topic: &str) -> Arc<CompiledPipeline> {
        match (&self.stages.shuffle, self.is_shuffle(topic)) {
            (Some(shuffle), true) => Arc::clone(shuffle),
            _ => Arc::clone(&self.stages.source),
        }
    }

    fn is_shuffle(&self, topic: &str) -> bool {
        self.shuffle_topic.as_deref() == Some(topic)
    }

    /// Where a partition without committed offsets starts: the shuffle topic from its
    /// beginning (everything in it is this job's own committed output), source topics per
    /// `startingOffsets`.
    fn starting_offset(&self, topic: &str) -> Offset {
        if self.is_shuffle(topic) {
            return Offset::Beginning;
        }
        match self.config.job.spec.source.starting_offsets {
            StartingOffsets::Earliest => Offset::Beginning,
            StartingOffsets::Latest => Offset::End,
        }
    }

    /// Processes records until `stop` is set, checkpointing every interval; takes a final
    /// checkpoint before returning. With `control`, publishes status and metrics to the admin
    /// API and executes its commands; after a stop-with-savepoint it processes nothing more.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        control: Option<Control<'_>>,
    ) -> Result<(), RuntimeError> {
        let interval = self
            .spec
            .checkpoint
            .as_ref()
            .map_or(Duration::from_secs(10), |c| c.interval);
        let mut idle = false;
        let mut published = Instant::now();
        let mut backoff = Backoff::new();
        // While set: the time of the next attempt to go back to the last checkpoint.
        let mut recovering: Option<Instant> = None;
        if let Some(c) = &control {
            self.publish(c.shared, WorkerState::Running);
            c.shared.ready.store(true, Ordering::Relaxed);
        }
        while !stop.load(Ordering::Relaxed) {
            if idle {
                std::thread::sleep(Duration::from_millis(100));
            } else if let Some(at) = recovering {
                if Instant::now() < at {
                    std::thread::sleep(Duration::from_millis(100));
                } else {
                    match self.recover() {
                        Ok(()) => {
                            tracing::info!("went back to the last checkpoint; processing again");
                            recovering = None;
                        }
                        Err(e) if e.is_transient() => {
                            recovering = Some(self.failed(&e, &mut backoff, control.as_ref()));
                        }
                        Err(e) => return Err(e),
                    }
                }
            } else {
                let step = self.poll_once(Duration::from_millis(100)).and_then(|()| {
                    if self.last_checkpoint.elapsed() >= interval {
                        self.checkpoint().map(Some)
                    } else {
                        Ok(None)
                    }
                });
                match step {
                    Ok(Some(_)) => {
                        if self.last_error.take().is_some() {
                            tracing::info!("checkpoint completed; recovered");
                            backoff = Backoff::new();
                        }
                        if let Some(c) = &control {
                            c.shared.metrics.retrying.set(0);
                        }
                    }
                    Ok(None) => {}
                    Err(e) if e.is_transient() => {
                        recovering = Some(self.failed(&e, &mut backoff, control.as_ref()));
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(c) = &control else { continue };
            while let Ok(command) = c.commands.try_recv() {
                match command {
                    Command::Savepoint(request) => {
                        let result = match (&self.last_error, recovering) {
                            (Some(error), Some(_)) => Err(RuntimeError::Savepoint {
                                path: request.id.clone(),
                                reason: format!(
                                    "the worker is retrying after a failure ({error}); try again once it has recovered"
                                ),
                            }),
                            _ => self.savepoint(&request.id),
                        };
                        if let Err(e) = &result
                            && e.is_transient()
                        {
                            recovering = Some(self.failed(e, &mut backoff, Some(c)));
                        }
                        let stopped = request.stop && result.is_ok();
                        c.shared.set_savepoint(match result {
                            Ok(path) => SavepointResult {
                                id: request.id,
                                state: SavepointState::Completed,
                                path: Some(path),
                                error: None,
                            },
                            Err(e) => SavepointResult {
                                id: request.id,
                                state: SavepointState::Failed,
                                path: None,
                                error: Some(e.to_string()),
                            },
                        });
                        if stopped {
                            idle = true;
                            c.shared.ready.store(false, Ordering::Relaxed);
                            tracing::info!("stopped with a savepoint; idle until replaced");
                        }
                    }
                }
            }
            if published.elapsed() >= Duration::from_millis(500) {
                let state = if self.last_error.is_some() {
                    WorkerState::Retrying
                } else {
                    worker_state(idle)
                };
                self.publish(c.shared, state);
                published = Instant::now();
            }
        }
        // A worker that is recovering has nothing valid to commit: its open transaction is
        // aborted by the successor's fencing, and processing resumes from the last checkpoint.
        if !idle && recovering.is_none() {
            self.checkpoint()?;
        }
        if let Some(c) = &control {
            self.publish(c.shared, worker_state(idle));
        }
        Ok(())
    }

    /// Records a transient failure: logs it, counts it, and schedules the next attempt to go
    /// back to the last checkpoint. Output of the failed transaction is never committed.
    fn failed(
        &mut self,
        error: &RuntimeError,
        backoff: &mut Backoff,
        control: Option<&Control<'_>>,
    ) -> Instant {
        let delay = backoff.step();
        tracing::warn!(
            error = %error,
            system = error.system(),
            retry_in_ms = delay.as_millis() as u64,
            "checkpoint failed; going back to the last completed checkpoint and retrying"
        );
        if let Some(c) = control {
            let m = &c.shared.metrics;
            m.checkpoint_failures
                .get_or_create(&crate::admin::ReasonLabel {
                    reason: error.system(),
                })
                .inc();
            m.retrying.set(1);
        }
        self.last_error = Some(error.to_string());
        self.needs_abort = true;
        Instant::now() + delay
    }

    /// Consumes and processes at most one record.
    pub fn poll_once(&mut self, timeout: Duration) -> Result<(), RuntimeError> {
        let now = now_ms();
        match self.consumer.poll(timeout) {
            Some(Ok(message)) => {
                let key = (message.topic().to_owned(), message.partition());
                if let Some(slot) = self.slots.get_mut(&key) {
                    let timestamp_ms = match &self.shuffle_topic {
                        Some(shuffle) if *shuffle == key.0 => shuffled_event_time(&message),
                        _ => message.timestamp().to_millis(),
                    };
                    let record = InputRecord {
                        key: message.key(),
                        value: message.payload(),
                        timestamp_ms,
                        partition: message.partition(),
                        offset: message.offset(),
                    };
                    slot.task.process(&record, now, &mut self.output);
                    slot.position = Some(message.offset() + 1);
                    let to = destination(&self.config.job, self.shuffle_topic.as_deref(), &key.0);
                    send_output(&self.producer, to, &mut self.output)?;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {
                let topics: Vec<(String, i32)> = self.slots.keys().cloned().collect();
                for key in topics {
                    if let Some(slot) = self.slots.get_mut(&key) {
                        slot.task.on_idle(now, &mut self.output);
                    }
                    let to = destination(&self.config.job, self.shuffle_topic.as_deref(), &key.0);
                    send_output(&self.producer, to, &mut self.output)?;
                }
            }
            // Connection loss is reported once by librdkafka's own log and retried by it.
            Some(Err(
                e @ KafkaError::MessageConsumption(
                    RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
                ),
            )) => tracing::debug!(error = %e, "broker connection lost; librdkafka reconnects"),
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error; librdkafka retries"),
        }
        Ok(())
    }

    /// Takes a checkpoint: flush, snapshot, commit offsets with the output.
    pub fn checkpoint(&mut self) -> Result<CheckpointReport, RuntimeError> {
        let started = Instant::now();
        self.checkpoint_id += 1;
        self.producer
            .flush(self.config.kafka_timeout)
            .map_err(kafka("flush the producer"))?;
        let failed = self.producer.context().failed.swap(0, Ordering::Relaxed);
        if failed > 0 {
            return Err(RuntimeError::Delivery(failed));
        }
        let mut offsets = TopicPartitionList::new();
        let (mut snapshots, mut bytes) = (0, 0u64);
        for ((topic, partition), slot) in &mut self.slots {
            slot.pending_snapshot = None;
            let Some(position) = slot.position else {
                continue;
            };
            let reusable = slot
                .last_snapshot
                .as_ref()
                .filter(|(revision, _)| *revision == slot.task.revision())
                .map(|(_, key)| key.clone());
            let metadata = match &self.store {
                Some(_) if reusable.is_some() => reusable,
                Some(store) if slot.task.needs_snapshot() => {
                    let key = SnapshotKey {
                        topic: topic.clone(),
                        partition: *partition,
                        checkpoint_id: self.checkpoint_id,
                        writer: self.writer.clone(),
                    }
                    .key();
                    let snapshot =
                        slot.task
                            .snapshot()
                            .map_err(|source| RuntimeError::Snapshot {
                                action: "write the snapshot",
                                topic: topic.clone(),
                                partition: *partition,
                                source,
                            })?;
                    bytes += snapshot.len() as u64;
                    snapshots += 1;
                    self.io.block_on(store.put_new(&key, snapshot))?;
                    slot.pending_snapshot = Some(key.clone());
                    slot.last_snapshot = Some((slot.task.revision(), key.clone()));
                    Some(key)
                }
                _ => None,
            };
            let metadata = OffsetMetadata {
                generation: self.config.job.assignment.generation,
                snapshot: metadata,
            };
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(position))
                .map_err(kafka("build the offsets"))?;
            if let Some(mut e) = offsets.find_partition(topic, *partition) {
                e.set_metadata(metadata.encode());
            }
        }
        if self.exactly_once {
            let group = self.consumer.group_metadata().ok_or(RuntimeError::Kafka {
                action: "read the consumer group metadata",
                source: KafkaError::Global(RDKafkaErrorCode::InvalidGroupId),
            })?;
            if offsets.count() > 0 {
                self.producer
                    .send_offsets_to_transaction(&offsets, &group, self.config.kafka_timeout)
                    .map_err(kafka("send the offsets to the transaction"))?;
            }
            self.producer
                .commit_transaction(self.config.kafka_timeout)
                .map_err(kafka("commit the transaction"))?;
            self.producer
                .begin_transaction()
                .map_err(kafka("begin a transaction"))?;
        } else if offsets.count() > 0 {
            self.consumer
                .commit(&offsets, rdkafka::consumer::CommitMode::Sync)
                .map_err(kafka("commit the offsets"))?;
        }
        self.last_checkpoint = Instant::now();
        self.commits += 1;
        self.dispose_old_snapshots();
        let report = CheckpointReport {
            id: self.checkpoint_id,
            snapshots,
            bytes,
            duration: started.elapsed(),
        };
        self.last_report = Some((report.clone(), now_ms()));
        Ok(report)
    }

    /// Once a checkpoint committed, keeps the last `checkpoint.retained` snapshots of each
    /// partition and deletes older ones. The newest is the one the committed offset names, so
    /// it is never deleted; savepoints live elsewhere and are never touched. Failing to delete
    /// only leaves garbage behind.
    fn dispose_old_snapshots(&mut self) {
        let retained = self
            .spec
            .checkpoint
            .as_ref()
            .map_or(1, |c| c.retained.max(1)) as usize;
        let Some(store) = &self.store else { return };
        for slot in self.slots.values_mut() {
            slot.committed_snapshots
                .extend(slot.pending_snapshot.take());
            while slot.committed_snapshots.len() > retained {
                let Some(old) = slot.committed_snapshots.pop_front() else {
                    break;
                };
                if let Err(e) = self.io.block_on(store.delete(&old)) {
                    tracing::warn!(error = %e, "failed to dispose of an old snapshot");
                }
            }
        }
    }

    /// After a failed checkpoint: abort the open transaction and go back to the last committed
    /// checkpoint (state and offsets), so that the records since are processed again. Safe to
    /// call again after it failed part-way.
    fn recover(&mut self) -> Result<(), RuntimeError> {
        if self.exactly_once && self.needs_abort {
            self.producer
                .abort_transaction(self.config.kafka_timeout)
                .map_err(kafka("abort the transaction"))?;
            self.aborts += 1;
            self.needs_abort = false;
        }
        // Drop output produced for the aborted transaction but not yet handed to librdkafka.
        self.output.clear();
        self.restore()?;
        if self.exactly_once {
            self.producer
                .begin_transaction()
                .map_err(kafka("begin a transaction"))?;
        }
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// The tasks' counters, summed.
    pub fn records_in(&self) -> u64 {
        self.slots
            .values()
            .map(|s| s.task.state().counters.records_in)
            .sum()
    }
}

/// Where the output of the tasks of `topic` goes: source-stage results to the shuffle topic
/// when there is one, otherwise to the sink.
fn destination<'a>(job: &'a JobFile, shuffle: Option<&'a str>, topic: &str) -> Destination<'a> {
    let results = match shuffle {
        Some(shuffle) if shuffle != topic => shuffle,
        _ => job.spec.sink.topic.as_str(),
    };
    Destination {
        results,
        shuffle: shuffle.is_some_and(|s| s != topic),
        dead_letters: job.spec.dead_letter.as_ref().map(|d| d.topic.as_str()),
    }
}

/// The header carrying a shuffled record's event time (8 bytes, big-endian epoch ms). The Kafka
/// timestamp would do only until a broker or topic uses `LogAppendTime`.
const EVENT_TIME_HEADER: &str = "oxbow.event-time";

/// The event time the source stage wrote with a shuffled record.
fn shuffled_event_time(message: &rdkafka::message::BorrowedMessage<'_>) -> Option<i64> {
    use rdkafka::message::Headers;
    message
        .headers()?
        .iter()
        .find(|h| h.key == EVENT_TIME_HEADER)
        .and_then(|h| <[u8; 8]>::try_from(h.value?).ok())
        .map(i64::from_be_bytes)
        .or_else(|| message.timestamp().to_millis())
}

/// The topics a task's output goes to.
#[derive(Debug, Clone, Copy)]
struct Destination<'a> {
    results: &'a str,
    /// Results go to the shuffle topic.
    shuffle: bool,
    dead_letters: Option<&'a str>,
}

/// Produces a task's results and dead letters into the open transaction.
fn send_output(
    producer: &ThreadedProducer<DeliveryTracker>,
    to: Destination<'_>,
    output: &mut Output,
) -> Result<(), RuntimeError> {
    for record in output.records.drain(..) {
        let mut r = BaseRecord::<[u8], [u8]>::to(to.results)
            .payload(&record.value)
            .timestamp(record.timestamp_ms);
        if to.shuffle {
            let event_time = record.timestamp_ms.to_be_bytes();
            r = r.headers(OwnedHeaders::new().insert(Header {
                key: EVENT_TIME_HEADER,
                value: Some(&event_time[..]),
            }));
        }
        if let Some(key) = &record.key {
            r = r.key(key);
        }
        send(producer, r)?;
    }
    for d in output.dead_letters.drain(..) {
        let Some(topic) = to.dead_letters else {
            continue;
        };
        let offset = d.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "oxbow.error.reason",
                value: Some(d.reason.as_str()),
            })
            .insert(Header {
                key: "oxbow.error.step",
                value: Some(&*d.step),
            })
            .insert(Header {
                key: "oxbow.error.message",
                value: Some(&d.message),
            })
            .insert(Header {
                key: "oxbow.source.offset",
                value: Some(&offset),
            });
        let mut r = BaseRecord::<[u8], [u8]>::to(topic).headers(headers);
        if let Some(v) = &d.value {
            r = r.payload(v);
        }
        if let Some(k) = &d.key {
            r = r.key(k);
        }
        send(producer, r)?;
    }
    Ok(())
}

fn send(
    producer: &ThreadedProducer<DeliveryTracker>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), RuntimeError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(kafka("produce a record")(e)),
        }
    }
}
