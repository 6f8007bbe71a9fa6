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
    engine::{CompiledPipeline, InputRecord, Output, Task, snapshot::SnapshotError},
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
    records_in: u64,
    records_out: u64,
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
    pipeline: Arc<CompiledPipeline>,
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
        let pipeline =
            CompiledPipeline::compile(&spec, job.spec.source.format, job.spec.sink.format)
                .map(Arc::new)
                .map_err(|e| RuntimeError::InvalidJob(e.to_string()))?;
        if spec.pipeline.needs_shuffle() {
            tracing::warn!(
                "the pipeline keys records differently from the source partitioning, and the repartition stage is not \
                 implemented yet: windows are computed per source partition, which is right only when each key lives \
                 in one partition (declare it with source.partitionedBy)"
            );
        }
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
            .map(|c| CheckpointStore::open(&c.storage, &job.namespace, &job.name))
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
        let writer = format!("w{}-{:x}", config.ordinal, now_ms());
        let mut worker = Worker {
            config,
            spec,
            pipeline,
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
            let (task, position) = match (from_savepoint, committed) {
                (Some(savepoint), _) => self.task_from_savepoint(savepoint, &topic, partition)?,
                (None, Some((offset, metadata))) => {
                    let task = match &metadata.snapshot {
                        Some(key) if !stateless => {
                            self.task_from_snapshot(key, &topic, partition)?
                        }
                        _ => Task::new(Arc::clone(&self.pipeline)),
                    };
                    committed_snapshots.extend(metadata.snapshot);
                    (task, Some(offset))
                }
                (None, None) => (Task::new(Arc::clone(&self.pipeline)), None),
            };
            let offset = position.map_or(self.starting_offset(), Offset::Offset);
            assignment
                .add_partition_offset(&topic, partition, offset)
                .map_err(kafka("build the assignment"))?;
            self.slots.insert(
                (topic, partition),
                Slot {
                    task,
                    position,
                    committed_snapshots,
                    pending_snapshot: None,
                },
            );
        }
        self.consumer
            .assign(&assignment)
            .map_err(kafka("assign the partitions"))?;
        Ok(())
    }

    fn starting_offset(&self) -> Offset {
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
        if let Some(c) = &control {
            self.publish(c.shared, WorkerState::Running);
            c.shared.ready.store(true, Ordering::Relaxed);
        }
        while !stop.load(Ordering::Relaxed) {
            if idle {
                std::thread::sleep(Duration::from_millis(100));
            } else {
                self.poll_once(Duration::from_millis(100))?;
                if self.last_checkpoint.elapsed() >= interval {
                    self.checkpoint()?;
                }
            }
            let Some(c) = &control else { continue };
            while let Ok(command) = c.commands.try_recv() {
                match command {
                    Command::Savepoint(request) => {
                        let result = self.savepoint(&request.id);
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
                self.publish(c.shared, worker_state(idle));
                published = Instant::now();
            }
        }
        if !idle {
            self.checkpoint()?;
        }
        if let Some(c) = &control {
            self.publish(c.shared, worker_state(idle));
        }
        Ok(())
    }

    /// Consumes and processes at most one record.
    pub fn poll_once(&mut self, timeout: Duration) -> Result<(), RuntimeError> {
        let now = now_ms();
        match self.consumer.poll(timeout) {
            Some(Ok(message)) => {
                let key = (message.topic().to_owned(), message.partition());
                if let Some(slot) = self.slots.get_mut(&key) {
                    let record = InputRecord {
                        key: message.key(),
                        value: message.payload(),
                        timestamp_ms: message.timestamp().to_millis(),
                        partition: message.partition(),
                        offset: message.offset(),
                    };
                    slot.task.process(&record, now, &mut self.output);
                    slot.position = Some(message.offset() + 1);
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {
                for slot in self.slots.values_mut() {
                    slot.task.on_idle(now, &mut self.output);
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error; librdkafka retries"),
        }
        self.send_output()
    }

    fn send_output(&mut self) -> Result<(), RuntimeError> {
        let sink = self.config.job.spec.sink.topic.clone();
        for record in self.output.records.drain(..) {
            let mut r = BaseRecord::<[u8], [u8]>::to(&sink)
                .payload(&record.value)
                .timestamp(record.timestamp_ms);
            if let Some(key) = &record.key {
                r = r.key(key);
            }
            send(&self.producer, r)?;
        }
        let dead_letter = self
            .config
            .job
            .spec
            .dead_letter
            .as_ref()
            .map(|d| d.topic.clone());
        for d in self.output.dead_letters.drain(..) {
            let Some(topic) = &dead_letter else { continue };
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
            send(&self.producer, r)?;
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
            self.recover()?;
            return Err(RuntimeError::Delivery(failed));
        }
        let mut offsets = TopicPartitionList::new();
        let (mut snapshots, mut bytes) = (0, 0u64);
        for ((topic, partition), slot) in &mut self.slots {
            slot.pending_snapshot = None;
            let Some(position) = slot.position else {
                continue;
            };
            let metadata = match (&self.store, slot.task.state().windows.is_empty()) {
                (Some(store), false) => {
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

    /// After a failed transaction: abort it and go back to the last committed checkpoint.
    fn recover(&mut self) -> Result<(), RuntimeError> {
        if self.exactly_once {
            self.producer
                .abort_transaction(self.config.kafka_timeout)
                .map_err(kafka("abort the transaction"))?;
            self.aborts += 1;
            self.restore()?;
            self.producer
                .begin_transaction()
                .map_err(kafka("begin a transaction"))?;
        }
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
