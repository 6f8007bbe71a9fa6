//! `oxbow-worker bench kafka --bootstrap HOST:PORT`: Kafka to Kafka on one broker, in one run.
//!
//! Measures, over the same input topic: a bare librdkafka consume-and-produce loop (the
//! baseline), the worker running the reference job exactly-once with 1 s checkpoints, and the
//! same with no checkpoint until the end. Prints the throughputs, `ratio_vs_bare=` and
//! `checkpoint_overhead=`.

use std::time::{Duration, Instant};

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
};

use super::{
    BenchError,
    reference::{Generator, encode_event, reference_job_file},
};
use crate::runtime::{Worker, WorkerConfig};

/// Creates single-partition topics for a measurement.
pub(crate) fn create_topics(bootstrap: &str, topics: &[&str]) -> Result<(), BenchError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(BenchError::kafka("create an admin client"))?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BenchError::io("start an I/O runtime"))?;
    rt.block_on(admin.create_topics(
        &new,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))
    .map_err(BenchError::kafka("create the benchmark topics"))?;
    Ok(())
}

/// An idempotent producer that batches for 5 ms.
pub(crate) fn producer(
    bootstrap: &str,
) -> Result<ThreadedProducer<DefaultProducerContext>, BenchError> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .map_err(BenchError::kafka("create a producer"))
}

/// Produces `value` to partition 0 of `topic`, waiting while the local queue is full.
pub(crate) fn send(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    value: &[u8],
) -> Result<(), BenchError> {
    let mut record = BaseRecord::<(), [u8]>::to(topic)
        .payload(value)
        .partition(0);
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(BenchError::kafka("produce")(e)),
        }
    }
}

/// The bare loop: consume every input record and produce it unchanged, then flush.
fn bare_loop(
    bootstrap: &str,
    input: &str,
    output: &str,
    events: u64,
) -> Result<Duration, BenchError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{input}-bare"))
        .set("enable.auto.commit", "false")
        .set("receive.message.max.bytes", "1000000000")
        .create()
        .map_err(BenchError::kafka("create a consumer"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(input, 0, Offset::Beginning)
        .map_err(BenchError::kafka("assign"))?;
    consumer.assign(&tpl).map_err(BenchError::kafka("assign"))?;
    let p = producer(bootstrap)?;
    let started = Instant::now();
    let mut n = 0;
    while n < events {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                send(&p, output, m.payload().unwrap_or_default())?;
                n += 1;
            }
            Some(Err(e)) => tracing::debug!(error = %e, "bare loop"),
            None => {}
        }
    }
    p.flush(Duration::from_secs(60))
        .map_err(BenchError::kafka("flush"))?;
    Ok(started.elapsed())
}

fn worker_run(
    bootstrap: &str,
    input: &str,
    output: &str,
    events: u64,
    interval: &str,
    name: &str,
) -> Result<Duration, BenchError> {
    let dir = std::env::temp_dir().join(format!("oxbow-bench-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(BenchError::io("create the checkpoint directory"))?;
    let job = reference_job_file(name, bootstrap, input, output, &dir, interval)?;
    let config = WorkerConfig {
        job,
        ordinal: 0,
        bootstrap: Some(bootstrap.to_owned()),
        kafka_timeout: Duration::from_secs(60),
    };
    let mut worker = Worker::start(config)?;
    let interval = oxbow_crds::duration::parse_duration(interval)
        .map_err(|e| BenchError::ReferenceJob(e.to_string()))?;
    let started = Instant::now();
    let mut last = Instant::now();
    while worker.records_in() < events {
        worker.poll_once(Duration::from_millis(100))?;
        if last.elapsed() >= interval {
            worker.checkpoint()?;
            last = Instant::now();
        }
    }
    worker.checkpoint()?;
    let elapsed = started.elapsed();
    std::fs::remove_dir_all(&dir).ok();
    Ok(elapsed)
}

/// Runs the three measurements on `bootstrap` with `events` input records.
pub fn run(bootstrap: &str, events: u64) -> Result<String, BenchError> {
    let run = std::process::id();
    let input = format!("oxbow-bench-in-{run}");
    let outs = [
        format!("oxbow-bench-bare-{run}"),
        format!("oxbow-bench-eos-{run}"),
        format!("oxbow-bench-nocp-{run}"),
    ];
    create_topics(bootstrap, &[&input, &outs[0], &outs[1], &outs[2]])?;
    let p = producer(bootstrap)?;
    let mut generator = Generator::new();
    let mut value = Vec::new();
    for _ in 0..events {
        value.clear();
        encode_event(&mut value, &generator.next_event());
        send(&p, &input, &value)?;
    }
    p.flush(Duration::from_secs(120))
        .map_err(BenchError::kafka("flush the input"))?;

    let bare = bare_loop(bootstrap, &input, &outs[0], events)?;
    let eos = worker_run(bootstrap, &input, &outs[1], events, "1s", "eos")?;
    let nocp = worker_run(bootstrap, &input, &outs[2], events, "1h", "nocp")?;
    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    Ok(format!(
        "events={events} bare_events_per_second={:.0} eos_1s_checkpoints_events_per_second={:.0} eos_no_checkpoints_events_per_second={:.0}\nratio_vs_bare={:.2}\ncheckpoint_overhead={:.3}",
        rate(bare),
        rate(eos),
        rate(nocp),
        rate(eos) / rate(bare),
        1.0 - rate(eos) / rate(nocp)
    ))
}
