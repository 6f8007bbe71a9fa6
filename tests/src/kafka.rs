//! Kafka-protocol brokers: client configuration and small helpers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use rdkafka::{
    ClientConfig, Message,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    error::RDKafkaErrorCode,
    producer::{FutureProducer, FutureRecord, Producer},
};

use crate::{Component, component, windows::Event};

/// Bootstrap address of the full-protocol broker (noida-db, or the user's own Kafka).
pub fn bootstrap() -> String {
    component(Component::Kafka)
        .get("OXBOW_TEST_BOOTSTRAP")
        .map(str::to_owned)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Bootstrap address of the second broker (Tansu), when the environment has one.
pub fn second_bootstrap() -> Option<String> {
    component(Component::Kafka)
        .optional("OXBOW_TEST_BOOTSTRAP_TANSU")
        .map(str::to_owned)
}

/// Client configuration for `bootstrap` with settings every test client needs.
pub fn config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        // noida-db answers a fetch with the whole backlog (see TESTING.md).
        .set("receive.message.max.bytes", "1000000000")
        .set("fetch.max.bytes", "500000000")
        .set("socket.timeout.ms", "10000")
        .set("message.timeout.ms", "30000");
    config
}

/// Creates a topic, tolerating one that exists. A request that times out (a broker still
/// starting, a loaded machine) is retried a few times.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = config(bootstrap)
        .create()
        .context("failed to create an admin client")?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let results = match admin.create_topics([&new], &options).await {
            Err(e) if attempt < 4 => {
                eprintln!("creating topic {topic}: {e}; retrying");
                continue;
            }
            result => result.with_context(|| format!("failed to create topic {topic}"))?,
        };
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((
                    _,
                    RDKafkaErrorCode::RequestTimedOut | RDKafkaErrorCode::OperationTimedOut,
                )) if attempt < 4 => {}
                Err((name, code)) => anyhow::bail!("failed to create topic {name}: {code}"),
            }
        }
        return Ok(());
    }
}

/// A new topic of `partitions` named `<prefix>-<unique>`; its name.
pub async fn new_topic(bootstrap: &str, prefix: &str, partitions: i32) -> anyhow::Result<String> {
    let topic = crate::unique_name(prefix);
    create_topic(bootstrap, &topic, partitions).await?;
    Ok(topic)
}

/// A job's new source topic `<prefix>-in-<unique>` of `partitions` and its sink topic
/// `<prefix>-out-<unique>` of one partition.
pub async fn source_and_sink(
    bootstrap: &str,
    prefix: &str,
    partitions: i32,
) -> anyhow::Result<(String, String)> {
    Ok((
        new_topic(bootstrap, &format!("{prefix}-in"), partitions).await?,
        new_topic(bootstrap, &format!("{prefix}-out"), 1).await?,
    ))
}

/// A producer for `bootstrap`.
pub fn producer(bootstrap: &str) -> anyhow::Result<FutureProducer> {
    config(bootstrap)
        .create()
        .context("failed to create a producer")
}

/// Produces each `(partition, event)` to `topic` as the record `{"k":k,"v":v,"ts":ts}` the
/// window jobs read, one after the other.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    events: impl IntoIterator<Item = (i32, Event)>,
) -> anyhow::Result<()> {
    for (partition, (k, v, ts)) in events {
        send(
            producer,
            topic,
            partition,
            &format!(r#"{{"k":{k},"v":{v},"ts":{ts}}}"#),
        )
        .await?;
    }
    Ok(())
}

/// Produces one record of `payload` to `partition` of `topic`, and waits for its delivery.
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    payload: &str,
) -> anyhow::Result<()> {
    let record = FutureRecord::<(), str>::to(topic)
        .payload(payload)
        .partition(partition);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .with_context(|| format!("failed to produce to {topic}"))?;
    Ok(())
}

/// Input flowing in the background: a batch of events every 50 ms until stopped.
///
/// A transactional flow ([`Flow::transactional`]) commits every 500 ms, as an exactly-once
/// upstream application does, and can hold its open transaction ([`Flow::hold`]): what it
/// produces meanwhile is invisible to `read_committed` consumers until released.
#[derive(Debug)]
pub struct Flow {
    done: Arc<AtomicBool>,
    hold: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<Vec<Event>>>,
}

impl Flow {
    /// Starts producing to `topic` in batches of `batch`: the `i`-th event is `event(i)`, a
    /// partition and an event.
    pub fn start(
        bootstrap: &str,
        topic: &str,
        batch: i64,
        event: impl Fn(i64) -> (i32, Event) + Send + 'static,
    ) -> Flow {
        Self::spawn(bootstrap, topic, batch, event, false)
    }

    /// As [`Flow::start`], with a transactional producer.
    pub fn transactional(
        bootstrap: &str,
        topic: &str,
        batch: i64,
        event: impl Fn(i64) -> (i32, Event) + Send + 'static,
    ) -> Flow {
        Self::spawn(bootstrap, topic, batch, event, true)
    }

    /// While `hold` is set, a transactional flow keeps its transaction open.
    pub fn hold(&self, hold: bool) {
        self.hold.store(hold, Ordering::Relaxed);
    }

    fn spawn(
        bootstrap: &str,
        topic: &str,
        batch: i64,
        event: impl Fn(i64) -> (i32, Event) + Send + 'static,
        transactional: bool,
    ) -> Flow {
        let done = Arc::new(AtomicBool::new(false));
        let hold = Arc::new(AtomicBool::new(false));
        let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
        let (stop, held) = (Arc::clone(&done), Arc::clone(&hold));
        let task = tokio::spawn(async move {
            let producer = if transactional {
                let producer: FutureProducer = config(&bootstrap)
                    .set("transactional.id", crate::unique_name("oxbow-test-flow"))
                    .set("transaction.timeout.ms", "300000")
                    .create()
                    .context("failed to create a transactional producer")?;
                tokio::task::block_in_place(|| {
                    producer.init_transactions(Duration::from_secs(30))?;
                    producer.begin_transaction()
                })
                .context("failed to begin a transaction")?;
                producer
            } else {
                producer(&bootstrap)?
            };
            let mut events = Vec::new();
            let (mut i, mut committed) = (0, std::time::Instant::now());
            loop {
                let stopping = stop.load(Ordering::Relaxed);
                let due = committed.elapsed() >= Duration::from_millis(500);
                if transactional && (stopping || (due && !held.load(Ordering::Relaxed))) {
                    tokio::task::block_in_place(|| {
                        producer.commit_transaction(Duration::from_secs(30))?;
                        producer.begin_transaction()
                    })
                    .context("failed to commit the input's transaction")?;
                    committed = std::time::Instant::now();
                }
                if stopping {
                    break;
                }
                let sent: Vec<(i32, Event)> = (i..i + batch).map(&event).collect();
                produce(&producer, &topic, sent.iter().copied()).await?;
                events.extend(sent.into_iter().map(|(_, e)| e));
                i += batch;
                // Input spread over time, as a live source sends it.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(events)
        });
        Flow { done, hold, task }
    }

    /// Stops after the batch in flight (committing a transactional flow's last transaction);
    /// every event produced, in order.
    pub async fn stop(self) -> anyhow::Result<Vec<Event>> {
        self.done.store(true, Ordering::Relaxed);
        self.task.await.context("the producing task failed")?
    }
}

/// Reads every record visible at `isolation` ("read_committed" or "read_uncommitted") from
/// all `partitions` of `topic`, until `idle` passes with nothing new. Returns the values.
pub fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
    idle: Duration,
) -> anyhow::Result<Vec<String>> {
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", crate::unique_name("oxbow-test-reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation)
        .create()
        .context("failed to create a consumer")?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .context("failed to build the assignment")?;
    }
    consumer
        .assign(&assignment)
        .context("failed to assign partitions")?;
    let mut values = Vec::new();
    let mut last = std::time::Instant::now();
    while last.elapsed() < idle {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let value = message
                    .payload()
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                values.push(value.unwrap_or_default());
                last = std::time::Instant::now();
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) | None => {}
            // Connection hiccups are reported but not fatal: the client reconnects.
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
            ))) => {}
            Some(Err(e)) => return Err(e).context("failed to consume"),
        }
    }
    Ok(values)
}

/// The committed offsets of `group` over `partitions` of `topic`, summed (unset counts as 0).
pub fn committed_total(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<i64> {
    Ok(committed(bootstrap, group, topic, partitions)?.iter().sum())
}

/// The committed offset of `group` on each of `partitions` of `topic` (unset counts as 0).
pub fn committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Vec<i64>> {
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", group)
        .create()
        .context("failed to create a consumer")?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let offsets = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .context("failed to read committed offsets")?;
    Ok(offsets
        .elements()
        .iter()
        .map(|e| e.offset().to_raw().filter(|o| *o >= 0).unwrap_or(0))
        .collect())
}

/// A noida-db broker of one test's own, with its data on disk, so that a test can kill and
/// restart it without disturbing others. Stopped when dropped.
#[derive(Debug)]
pub struct PrivateBroker {
    child: Option<std::process::Child>,
    port: u16,
    data: std::path::PathBuf,
}

impl PrivateBroker {
    /// Starts noida-db from the environment's cache on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let data = std::env::temp_dir().join(crate::unique_name("oxbow-broker"));
        std::fs::create_dir_all(&data)?;
        let mut broker = PrivateBroker {
            child: None,
            port: crate::worker::free_port(),
            data,
        };
        broker.spawn().await?;
        Ok(broker)
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let cache = crate::cache_dir()?;
        let binary = cache.join("bin/noida-db");
        let child = std::process::Command::new(&binary)
            .args(["start", "--only", "kafka", "--host", "127.0.0.1"])
            .args(["--kafka-port", &self.port.to_string()])
            .arg("--data-dir")
            .arg(&self.data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("failed to start {}", binary.display()))?;
        self.child = Some(child);
        let port = self.port;
        crate::Wait::new(
            format!("noida-db to listen on {port}"),
            Duration::from_secs(30),
        )
        .every(Duration::from_millis(100))
        .until(async || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(drop)
        })
        .await
    }

    /// Stops the broker (SIGTERM, so that it saves its data) and waits for it to exit.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            crate::worker::signal(child.id(), "TERM")?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts it again on the same port with the same data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.spawn().await
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
