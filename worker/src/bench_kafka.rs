//! `oxbow-worker bench kafka --bootstrap HOST:PORT`: Kafka to Kafka on one broker, in one run.
//!
//! Measures, over the same input topic: a bare librdkafka consume-and-produce loop (the
//! baseline), the worker running the reference job exactly-once with 1 s checkpoints, and the
//! same with no checkpoint until the end. Prints the throughputs, `ratio_vs_bare=` and
//! `checkpoint_overhead=`.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use oxbow_crds::{
    assignment::assign,
    jobfile::{JobFile, Restore},
};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
};

use crate::{
    bench::{Generator, encode_event, reference_job_yaml},
    runtime::{Worker, WorkerConfig},
};

pub(crate) fn err(action: &str) -> impl FnOnce(rdkafka::error::KafkaError) -> String + '_ {
    move |e| format!("failed to {action}: {e}")
}

pub(crate) fn create_topics(bootstrap: &str, topics: &[&str]) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(err("create an admin client"))?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(admin.create_topics(
        &new,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))
    .map_err(err("create the benchmark topics"))?;
    Ok(())
}

pub(crate) fn producer(
    bootstrap: &str,
) -> Result<ThreadedProducer<DefaultProducerContext>, String> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .map_err(err("create a producer"))
}

pub(crate) fn send(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    value: &[u8],
) -> Result<(), String> {
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
            Err((e, _)) => return Err(format!("failed to produce: {e}")),
        }
    }
}

/// The bare loop: consume every input record and produce it unchanged, then flush.
fn bare_loop(bootstrap: &str, input: &str, output: &str, events: u64) -> Result<Duration, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{input}-bare"))
        .set("enable.auto.commit", "false")
        .set("receive.message.max.bytes", "1000000000")
        .create()
        .map_err(err("create a consumer"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(input, 0, Offset::Beginning)
        .map_err(err("assign"))?;
    consumer.assign(&tpl).map_err(err("assign"))?;
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
    p.flush(Duration::from_secs(60)).map_err(err("flush"))?;
    Ok(started.elapsed())
}

fn worker_run(
    bootstrap: &str,
    input: &str,
    output: &str,
    events: u64,
    interval: &str,
    name: &str,
) -> Result<Duration, String> {
    let dir = std::env::temp_dir().join(format!("oxbow-bench-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let yaml = reference_job_yaml(bootstrap, input, output, &dir, interval);
    let spec = oxbow_crds::parse_manifest(&yaml)
        .map_err(|e| e.to_string())?
        .spec;
    let job = JobFile::new(
        "bench",
        name,
        1,
        spec,
        assign(&BTreeMap::from([(input.to_owned(), 1)]), 1, None),
        Restore::LatestCheckpoint,
    );
    let config = WorkerConfig {
        job,
        ordinal: 0,
        bootstrap: Some(bootstrap.to_owned()),
        kafka_timeout: Duration::from_secs(60),
    };
    let mut worker = Worker::start(config).map_err(|e| e.to_string())?;
    let interval = oxbow_crds::duration::parse_duration(interval).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut last = Instant::now();
    while worker.records_in() < events {
        worker
            .poll_once(Duration::from_millis(100))
            .map_err(|e| e.to_string())?;
        if last.elapsed() >= interval {
            worker.checkpoint().map_err(|e| e.to_string())?;
            last = Instant::now();
        }
    }
    worker.checkpoint().map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    std::fs::remove_dir_all(&dir).ok();
    Ok(elapsed)
}

/// Runs the three measurements on `bootstrap` with `events` input records.
pub fn run(bootstrap: &str, events: u64) -> Result<String, String> {
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
        .map_err(err("flush the input"))?;

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
