//! `oxbow-worker local <streamjob.yaml>`: a StreamJob on a laptop, with no cluster.
//!
//! Without `--bootstrap` it starts an embedded Kafka-protocol broker (librdkafka's mock
//! cluster), creates the job's topics, and — for the shipped examples — feeds the source topic
//! with generated events. It runs one worker over every partition, prints each committed result
//! on stdout and a progress line on stderr, and stops cleanly on Ctrl-C (or after
//! `--duration`).

use std::{
    collections::BTreeMap,
    io::Write,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use oxbow_crds::{
    admin::WorkerStatus,
    assignment::assign,
    jobfile::{JobFile, Restore},
    streamjob::{CheckpointSpec, DeliveryGuarantee},
};
use rdkafka::{
    ClientConfig, Message,
    consumer::{BaseConsumer, Consumer},
    mocking::MockCluster,
    producer::{BaseProducer, BaseRecord, Producer},
};

use super::LocalArgs;
use crate::runtime::{Control, RuntimeError, Shared, Worker, WorkerConfig};

pub mod examples;

/// Why local mode could not run.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The manifest is unreadable or invalid.
    #[error("{0}")]
    Manifest(String),
    /// The embedded broker or a Kafka client failed.
    #[error("failed to {0}: {1}")]
    Kafka(&'static str, rdkafka::error::KafkaError),
    /// The worker failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// The namespace local jobs are named in (their consumer group, transactional and shuffle topic
/// names).
const LOCAL_NAMESPACE: &str = "local";

/// Creates the job's shuffle topic on a real broker, as the operator does in a cluster.
fn create_topic_if_missing(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> Result<(), LocalError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| LocalError::Kafka("connect to the broker", e))?;
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LocalError::Manifest(format!("failed to start a runtime: {e}")))?;
    let results = io
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .map_err(|e| LocalError::Kafka("create the shuffle topic", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(LocalError::Kafka(
                    "create the shuffle topic",
                    rdkafka::error::KafkaError::AdminOp(code),
                ));
            }
        }
    }
    Ok(())
}

/// Partitions of each source topic on the embedded broker.
const LOCAL_PARTITIONS: i32 = 2;

/// `oxbow-worker local`: exit code 1 with the reason on stderr when the job cannot run.
pub fn main(args: &LocalArgs) -> ExitCode {
    super::init_logging("warn");
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxbow-worker local: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a StreamJob locally until Ctrl-C or `--duration`.
pub fn run(options: &LocalArgs) -> Result<(), LocalError> {
    let text = std::fs::read_to_string(&options.manifest).map_err(|e| {
        LocalError::Manifest(format!(
            "failed to read {}: {e}",
            options.manifest.display()
        ))
    })?;
    let manifest = oxbow_crds::parse_manifest(&text).map_err(|e| {
        LocalError::Manifest(format!(
            "{} is not a StreamJob manifest: {e}",
            options.manifest.display()
        ))
    })?;
    let name = manifest
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "local".to_owned());
    let mut spec = manifest.spec;
    let valid = oxbow_crds::validation::validate(&spec).map_err(|e| {
        LocalError::Manifest(format!("{} is invalid: {e}", options.manifest.display()))
    })?;
    let shuffle = valid
        .pipeline
        .needs_shuffle()
        .then(|| oxbow_crds::names::shuffle_topic(LOCAL_NAMESPACE, &name));

    // The broker: embedded unless --bootstrap.
    let (mock, bootstrap) = match &options.bootstrap {
        Some(b) => (None, b.clone()),
        None => {
            let m = MockCluster::new(1)
                .map_err(|e| LocalError::Kafka("start the embedded broker", e))?;
            let b = m.bootstrap_servers();
            (Some(m), b)
        }
    };
    let mut topics = BTreeMap::new();
    if let Some(m) = &mock {
        for topic in &spec.source.topics {
            m.create_topic(topic, LOCAL_PARTITIONS, 1)
                .map_err(|e| LocalError::Kafka("create a source topic", e))?;
            topics.insert(topic.clone(), LOCAL_PARTITIONS);
        }
        m.create_topic(&spec.sink.topic, 1, 1)
            .map_err(|e| LocalError::Kafka("create the sink topic", e))?;
        if let Some(d) = &spec.dead_letter {
            m.create_topic(&d.topic, 1, 1)
                .map_err(|e| LocalError::Kafka("create the dead-letter topic", e))?;
        }
        if let Some(topic) = &shuffle {
            m.create_topic(topic, LOCAL_PARTITIONS, 1)
                .map_err(|e| LocalError::Kafka("create the shuffle topic", e))?;
            topics.insert(topic.clone(), LOCAL_PARTITIONS);
        }
        // The embedded broker keeps no transaction state: results are delivered at least once.
        spec.sink.delivery_guarantee = DeliveryGuarantee::AtLeastOnce;
    } else {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .map_err(|e| LocalError::Kafka("connect to the broker", e))?;
        for topic in &spec.source.topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .map_err(|e| LocalError::Kafka("read the source topic's partitions", e))?;
            let partitions = metadata
                .topics()
                .first()
                .map_or(0, |t| t.partitions().len());
            if partitions == 0 {
                return Err(LocalError::Manifest(format!(
                    "source topic {topic:?} does not exist on {bootstrap}"
                )));
            }
            topics.insert(topic.clone(), i32::try_from(partitions).unwrap_or(i32::MAX));
        }
        if let Some(topic) = &shuffle {
            let partitions = topics.values().copied().max().unwrap_or(1);
            create_topic_if_missing(&bootstrap, topic, partitions)?;
            topics.insert(topic.clone(), partitions);
        }
    }

    let storage = options.storage.clone().unwrap_or_else(|| {
        let dir = std::env::current_dir()
            .unwrap_or_default()
            .join(".oxbow")
            .join(&name);
        format!("file://{}", dir.display())
    });
    if let Some(path) = storage.strip_prefix("file://") {
        std::fs::create_dir_all(path)
            .map_err(|e| LocalError::Manifest(format!("failed to create {path}: {e}")))?;
    }
    let checkpoint = spec.checkpoint.take();
    spec.checkpoint = Some(CheckpointSpec {
        storage: storage.clone(),
        ..checkpoint.unwrap_or(CheckpointSpec {
            storage: String::new(),
            interval: "2s".into(),
            retained: 3,
            timeout: "60s".into(),
        })
    });

    eprintln!(
        "oxbow local: job {name}, broker {bootstrap}{}, checkpoints {storage}",
        if mock.is_some() { " (embedded)" } else { "" }
    );
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }

    let generator = match (&mock, examples::generator_for(&spec.source.topics)) {
        (Some(_), Some(generator)) => {
            eprintln!("oxbow local: generating {} events", generator.describe());
            Some(spawn_generator(
                &bootstrap,
                &spec.source.topics[0],
                generator,
                Arc::clone(&stop),
            )?)
        }
        (Some(_), None) => {
            eprintln!(
                "oxbow local: no generator for {:?}; produce records to {bootstrap}",
                spec.source.topics
            );
            None
        }
        (None, _) => None,
    };
    let printer = spawn_printer(&bootstrap, &spec.sink.topic, Arc::clone(&stop))?;

    let job = JobFile::new(
        LOCAL_NAMESPACE,
        &name,
        1,
        spec,
        assign(&topics, 1, None),
        Restore::LatestCheckpoint,
    );
    let config = WorkerConfig {
        job,
        ordinal: 0,
        bootstrap: Some(bootstrap),
        kafka_timeout: Duration::from_secs(30),
    };
    let (shared, commands) = Shared::new(0);
    let progress = spawn_progress(Arc::clone(&shared), Arc::clone(&stop));
    if let Some(d) = options.duration {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            std::thread::sleep(d);
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut worker = Worker::start(config)?;
    let result = worker.run(
        &stop,
        Some(Control {
            shared: &shared,
            commands: &commands,
        }),
    );
    stop.store(true, Ordering::Relaxed);
    for handle in [generator, Some(printer), Some(progress)]
        .into_iter()
        .flatten()
    {
        let _ = handle.join();
    }
    print_progress(&shared, true);
    result.map_err(LocalError::from)
}

fn spawn_generator(
    bootstrap: &str,
    topic: &str,
    mut generator: examples::Generator,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, LocalError> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| LocalError::Kafka("create the generator's producer", e))?;
    let topic = topic.to_owned();
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..generator.per_tick() {
                let (key, value) = generator.next_event();
                let record = BaseRecord::to(&topic).key(&key).payload(&value);
                if let Err((e, _)) = producer.send(record) {
                    tracing::warn!(error = %e, "generator could not produce");
                }
            }
            producer.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = producer.flush(Duration::from_secs(5));
    }))
}

fn spawn_printer(
    bootstrap: &str,
    topic: &str,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, LocalError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "oxbow-local-printer")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| LocalError::Kafka("create the result reader", e))?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| LocalError::Kafka("read the sink topic", e))?;
    Ok(std::thread::spawn(move || {
        let mut out = std::io::stdout().lock();
        while !stop.load(Ordering::Relaxed) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let value = m.payload().map(String::from_utf8_lossy).unwrap_or_default();
                let _ = writeln!(out, "{value}");
            }
        }
    }))
}

fn spawn_progress(shared: Arc<Shared>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            if started.elapsed() >= Duration::from_secs(1) {
                print_progress(&shared, false);
            }
        }
    })
}

fn print_progress(shared: &Shared, last: bool) {
    let Ok(s) = shared.status.lock().map(|s| s.clone()) else {
        return;
    };
    let line = progress_line(&s);
    if last {
        eprintln!("\r{line}");
    } else {
        eprint!("\r{line}");
    }
}

/// The progress line.
pub fn progress_line(s: &WorkerStatus) -> String {
    let checkpoint = s
        .last_checkpoint
        .as_ref()
        .map_or("none".to_owned(), |c| format!("#{}", c.id));
    format!(
        "in {} | out {} | dead-lettered {} | checkpoint {} | state {} B   ",
        s.records_in, s.records_out, s.dead_lettered, checkpoint, s.state_bytes
    )
}
