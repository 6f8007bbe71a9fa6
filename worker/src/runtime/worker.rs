//! The worker's life: start (connect, fence the predecessor, restore), the processing loop
//! (poll, process, checkpoint every interval, execute the admin API's commands, publish
//! status), and a final checkpoint on stop.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use oxbow_crds::{
    admin::{SavepointResult, SavepointState, WorkerState},
    streamjob::{DeliveryGuarantee, StartingOffsets},
    validation,
};
use rdkafka::{
    ClientConfig, Message,
    consumer::BaseConsumer,
    error::{KafkaError, RDKafkaErrorCode},
    producer::{Producer, ThreadedProducer},
};

use super::{
    Control, Exported, RuntimeError, Worker, WorkerConfig,
    control::Command,
    error::kafka,
    now_ms,
    output::{DeliveryTracker, destination, send_output, shuffle_headers},
    recovery::Backoff,
    security, worker_state,
};
use crate::{
    checkpoint::store::{CheckpointStore, StoreError},
    engine::{InputRecord, Output, Upstream, stages::Stages},
    events::{
        BrokerConnectionLost, ConsumerError, Emit, Recovered, StoppedWithSavepoint, WentBack,
    },
    metrics::Metrics,
};

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
        let mut base = ClientConfig::new();
        let properties = security::client_properties(
            &job.spec.kafka,
            config.bootstrap.as_deref(),
            &security::secret_dir(),
        )?;
        for (k, v) in properties {
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
            StartingOffsets::Latest | StartingOffsets::Timestamp => "latest",
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
        let (mut shuffle_partitions, mut upstreams) = (Vec::new(), Vec::new());
        for tp in job.assignment.owners().into_keys() {
            if shuffle_topic.as_ref() == Some(&tp.topic) {
                shuffle_partitions.push(tp.partition);
            } else {
                upstreams.push(format!("{}/{}", tp.topic, tp.partition));
            }
        }
        let upstreams = upstreams.into();
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
            exported: Exported::default(),
            metrics: Arc::new(Metrics::default()),
            shuffle_partitions,
            upstreams,
            last_progress: Instant::now(),
            last_error: None,
            transaction_open: false,
        };
        worker.restore()?;
        if worker.exactly_once {
            worker
                .producer
                .begin_transaction()
                .map_err(kafka("begin a transaction"))?;
            worker.transaction_open = true;
        }
        Ok(worker)
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
        let mut loop_state = LoopState {
            idle: false,
            backoff: Backoff::new(),
            recovering: None,
        };
        let mut published = Instant::now();
        if let Some(c) = &control {
            self.metrics = Arc::clone(&c.shared.metrics);
            self.publish(c.shared, WorkerState::Running);
            c.shared.ready.store(true, Ordering::Relaxed);
        }
        while !stop.load(Ordering::Relaxed) {
            self.step(interval, &mut loop_state)?;
            let Some(c) = &control else { continue };
            while let Ok(command) = c.commands.try_recv() {
                self.execute(command, c, &mut loop_state);
            }
            if published.elapsed() >= Duration::from_millis(500) {
                let state = if self.last_error.is_some() {
                    WorkerState::Retrying
                } else {
                    worker_state(loop_state.idle)
                };
                self.publish(c.shared, state);
                published = Instant::now();
            }
        }
        // A worker that is recovering has nothing valid to commit: its open transaction is
        // aborted by the successor's fencing, and processing resumes from the last checkpoint.
        if !loop_state.idle && loop_state.recovering.is_none() {
            self.checkpoint()?;
        }
        if let Some(c) = &control {
            self.publish(c.shared, worker_state(loop_state.idle));
        }
        Ok(())
    }

    /// One turn of the loop: wait while idle or backing off, go back to the last checkpoint
    /// when a retry is due, or process a record and checkpoint when the interval has passed.
    /// Transient failures schedule a retry; others stop the worker.
    fn step(&mut self, interval: Duration, s: &mut LoopState) -> Result<(), RuntimeError> {
        if s.idle {
            std::thread::sleep(Duration::from_millis(100));
            return Ok(());
        }
        if let Some(at) = s.recovering {
            if Instant::now() < at {
                std::thread::sleep(Duration::from_millis(100));
                return Ok(());
            }
            return match self.recover() {
                Ok(()) => {
                    WentBack.emit(&self.metrics);
                    s.recovering = None;
                    Ok(())
                }
                Err(e) if e.is_transient() => {
                    s.recovering = Some(self.failed(&e, &mut s.backoff));
                    Ok(())
                }
                Err(e) => Err(e),
            };
        }
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
                    Recovered.emit(&self.metrics);
                    s.backoff = Backoff::new();
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) if e.is_transient() => {
                s.recovering = Some(self.failed(&e, &mut s.backoff));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Executes a command of the admin API. A savepoint is refused while the worker retries;
    /// one that fails transiently sends the worker back to its last checkpoint.
    fn execute(&mut self, command: Command, c: &Control<'_>, s: &mut LoopState) {
        match command {
            Command::Savepoint(request) => {
                let result = match (&self.last_error, s.recovering) {
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
                    s.recovering = Some(self.failed(e, &mut s.backoff));
                }
                let stopped = request.stop && result.is_ok();
                c.shared.set_savepoint(match result {
                    Ok(path) => SavepointResult {
                        id: request.id.clone(),
                        state: SavepointState::Completed,
                        path: Some(path),
                        error: None,
                    },
                    Err(e) => SavepointResult {
                        id: request.id.clone(),
                        state: SavepointState::Failed,
                        path: None,
                        error: Some(e.to_string()),
                    },
                });
                if stopped {
                    s.idle = true;
                    c.shared.ready.store(false, Ordering::Relaxed);
                    StoppedWithSavepoint { id: &request.id }.emit(&self.metrics);
                }
            }
        }
    }

    /// Consumes and processes at most one record.
    pub fn poll_once(&mut self, timeout: Duration) -> Result<(), RuntimeError> {
        let now = now_ms();
        match self.consumer.poll(timeout) {
            // One consumed record (or, on the shuffle topic, an upstream's progress report),
            // its output produced into the open transaction.
            Some(Ok(message)) => {
                let topic = message.topic();
                let Some(slot) = self.slots.get_mut(&(topic.to_owned(), message.partition()))
                else {
                    return self.look_after_progress(now);
                };
                slot.position = Some(message.offset() + 1);
                slot.last_record = Instant::now();
                let mut to = destination(&self.config.job, self.shuffle_topic.as_deref(), topic);
                let (timestamp_ms, upstream) = if self.shuffle_topic.as_deref() == Some(topic) {
                    let headers = shuffle_headers(&message);
                    if headers.progress_only {
                        if let Some(upstream) = &headers.upstream {
                            slot.task.observe(upstream, &mut self.output);
                        }
                        send_output(&self.producer, to, &mut self.output)?;
                        return self.look_after_progress(now);
                    }
                    (headers.event_time, headers.upstream)
                } else {
                    (message.timestamp().to_millis(), None)
                };
                let record = InputRecord {
                    key: message.key(),
                    value: message.payload(),
                    timestamp_ms,
                    partition: message.partition(),
                    offset: message.offset(),
                    upstream,
                };
                slot.task.process(&record, &mut self.output);
                if to.shuffle {
                    to.upstream = Some(Upstream {
                        id: &slot.upstream_id,
                        stream_time: slot.task.state().stream_time,
                        idle: false,
                    });
                }
                send_output(&self.producer, to, &mut self.output)?;
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => self.advance_idle(now)?,
            Some(Err(
                error @ KafkaError::MessageConsumption(
                    RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
                ),
            )) => BrokerConnectionLost { error: &error }.emit(&self.metrics),
            Some(Err(error)) => ConsumerError { error: &error }.emit(&self.metrics),
        }
        self.look_after_progress(now)
    }

    /// The tasks' counters, summed.
    pub fn records_in(&self) -> u64 {
        self.slots
            .values()
            .map(|s| s.task.state().counters.records_in)
            .sum()
    }
}

/// What the processing loop carries from one turn to the next.
#[derive(Debug)]
struct LoopState {
    /// Stopped with a savepoint: process nothing more.
    idle: bool,
    backoff: Backoff,
    /// While set: the time of the next attempt to go back to the last checkpoint.
    recovering: Option<Instant>,
}
