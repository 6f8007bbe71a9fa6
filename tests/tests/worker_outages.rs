//! A worker process rides out what goes wrong around it, losing and duplicating nothing: its
//! object store going away and coming back (a private moto paused with SIGSTOP, so that requests
//! hang as they do when a store is unreachable), and a storm of malformed records. Status and
//! metrics tell the story while it happens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use oxbow_crds::admin::WorkerState;
use oxbow_tests::{
    eventually, kafka, now_ms,
    s3::PrivateS3,
    scratch_dir, unique_name,
    windows::{self, Event, Window},
    worker::{self, WorkerProcess},
};
use rdkafka::{
    Message,
    consumer::{BaseConsumer, Consumer},
    message::Headers,
};

struct Job {
    file: std::path::PathBuf,
    input: String,
    output: String,
    dead_letter: String,
    group: String,
}

async fn job(bootstrap: &str, storage: &str) -> Job {
    let (input, output) = kafka::source_and_sink(bootstrap, "outage", 1)
        .await
        .unwrap();
    let dead_letter = kafka::new_topic(bootstrap, "outage-dlq", 1).await.unwrap();
    let spec = windows::job(
        "outage",
        bootstrap,
        &input,
        &output,
        storage,
        &Window::default(),
    )
    .spec(&format!("deadLetter: {{topic: {dead_letter}}}"))
    .checkpoint("interval: 300ms")
    .checkpoint("timeout: 2s")
    .job_spec()
    .unwrap();
    let job = worker::job_file(&unique_name("outage"), spec, &[(&input, 1)], 1);
    let group = job.consumer_group();
    let file = std::env::temp_dir().join(unique_name("outage-job"));
    worker::write_job_file(&job, &file).unwrap();
    Job {
        file,
        input,
        output,
        dead_letter,
        group,
    }
}

/// Sends events until stopped: event i has key i % 4, value i % 13, time base + 20 i.
fn spawn_input(bootstrap: &str, topic: &str, base: i64) -> kafka::Flow {
    kafka::Flow::start(bootstrap, topic, 10, move |i| {
        (0, (i % 4, i % 13, base + 20 * i))
    })
}

/// Closes every window with one far-ahead event per key, waits for the worker to commit
/// everything, stops it with SIGTERM, and checks the sink holds every window exactly once.
async fn finish(
    bootstrap: &str,
    job: &Job,
    worker: &mut WorkerProcess,
    mut events: Vec<Event>,
    base: i64,
) {
    let closing = base + 20 * events.len() as i64 + 10_000;
    let closers: Vec<Event> = (0..4).map(|k| (k, 0, closing)).collect();
    let producer = kafka::producer(bootstrap).unwrap();
    kafka::produce(&producer, &job.input, closers.iter().map(|&e| (0, e)))
        .await
        .unwrap();
    events.extend(closers);
    let total = events.len() as i64;
    eventually(
        "the worker to catch up",
        Duration::from_secs(90),
        async || {
            assert!(worker.is_running(), "the worker exited");
            let committed = kafka::committed_total(bootstrap, &job.group, &job.input, 1).unwrap();
            (committed >= total).then_some(())
        },
    )
    .await
    .unwrap();
    assert!(worker.terminate().unwrap().success());
    let got = windows::results(bootstrap, &job.output, Duration::from_secs(3)).unwrap();
    let want = windows::expected(&events, closing);
    assert!(want.len() > 20, "too little data to mean anything");
    windows::assert_exactly(&got, &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_object_store_going_away_and_back_loses_and_duplicates_nothing() {
    let bootstrap = kafka::bootstrap();
    let store = PrivateS3::start("outage").await.unwrap();
    let job = job(&bootstrap, &format!("s3://outage/{}", unique_name("job"))).await;
    let mut worker = WorkerProcess::start(&job.file, 0, &store.worker_env()).unwrap();
    let base = now_ms() - now_ms() % 1000;
    let input = spawn_input(&bootstrap, &job.input, base);
    let timeout = Duration::from_secs(60);

    eventually("a checkpoint", timeout, async || {
        worker.status().await?.last_checkpoint.map(|_| ())
    })
    .await
    .unwrap();
    store.pause().unwrap();
    // The status says what is wrong, and the metrics count it.
    let status = eventually("the worker to report Retrying", timeout, async || {
        worker
            .status()
            .await
            .filter(|s| s.state == WorkerState::Retrying)
    })
    .await
    .unwrap();
    let error = status.error.unwrap_or_default();
    assert!(error.contains("checkpoint storage"), "{error}");
    let metrics = worker.metrics().await.unwrap();
    assert!(
        metrics.contains("oxbow_worker_checkpoint_failures_total{reason=\"store\"}")
            && metrics.contains("oxbow_worker_retrying 1"),
        "{metrics}"
    );
    // The store stays away a while: the outage the worker must ride out.
    tokio::time::sleep(Duration::from_secs(2)).await;
    store.resume().unwrap();

    eventually("the worker to recover", timeout, async || {
        worker
            .status()
            .await
            .filter(|s| s.state == WorkerState::Running && s.error.is_none())
    })
    .await
    .unwrap();
    let events = input.stop().await.unwrap();
    let metrics = worker.metrics().await.unwrap();
    assert!(metrics.contains("oxbow_worker_retrying 0"), "{metrics}");
    finish(&bootstrap, &job, &mut worker, events, base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_record_storm_goes_to_the_dead_letter_topic_and_the_job_goes_on() {
    let bootstrap = kafka::bootstrap();
    let dir = scratch_dir("oxbow-storm");
    let job = job(&bootstrap, &format!("file://{}", dir.display())).await;
    let mut worker = WorkerProcess::start(&job.file, 0, &[]).unwrap();
    let base = now_ms() - now_ms() % 1000;

    // Good events with three kinds of bad record between them.
    let producer = kafka::producer(&bootstrap).unwrap();
    let mut events = Vec::new();
    let bad = |i: i64| -> [(&str, String); 3] {
        [
            ("decode", "{\"k\": 1, \"v\": ".to_owned()),
            ("event-time", "{\"k\": 1, \"v\": 2}".to_owned()),
            (
                "eval",
                format!("{{\"k\": 1, \"v\": \"two\", \"ts\": {}}}", base + 20 * i),
            ),
        ]
    };
    let mut sent_bad = [0u64; 3];
    for i in 0..1500_i64 {
        let e = (i % 4, i % 13, base + 20 * i);
        kafka::produce(&producer, &job.input, [(0, e)])
            .await
            .unwrap();
        events.push(e);
        let which = (i % 3) as usize;
        kafka::send(&producer, &job.input, 0, &bad(i)[which].1)
            .await
            .unwrap();
        sent_bad[which] += 1;
    }
    // Status and metrics count them by reason.
    let total_bad: u64 = sent_bad.iter().sum();
    eventually(
        "the status to count the dead letters",
        Duration::from_secs(60),
        async || {
            worker
                .status()
                .await
                .filter(|s| s.dead_lettered == total_bad)
        },
    )
    .await
    .unwrap();
    let metrics = worker.metrics().await.unwrap();
    for ((reason, _), n) in bad(0).iter().zip(sent_bad) {
        let line = format!("oxbow_worker_dead_lettered_total{{reason=\"{reason}\"}} {n}");
        assert!(metrics.contains(&line), "no {line:?} in {metrics}");
    }
    finish(&bootstrap, &job, &mut worker, events, base).await;

    // Every bad record is in the dead-letter topic once, with its reason.
    let consumer: BaseConsumer = kafka::config(&bootstrap)
        .set("group.id", unique_name("dlq-reader"))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&job.dead_letter]).unwrap();
    let mut by_reason = std::collections::BTreeMap::<String, u64>::new();
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(3) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let reason = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "oxbow.error.reason"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            *by_reason.entry(reason).or_default() += 1;
            last = Instant::now();
        }
    }
    let want: std::collections::BTreeMap<String, u64> = bad(0)
        .iter()
        .zip(sent_bad)
        .map(|((reason, _), n)| ((*reason).to_owned(), n))
        .collect();
    assert_eq!(by_reason, want);
}

/// The broker process stopped and started again while the worker runs. The input pauses around
/// the restart: noida-db keeps committed data across a restart but loses the records of a
/// transaction that was open when it stopped, while still accepting that transaction's commit
/// afterwards (Apache Kafka keeps both in its logs), so a restart in mid-transaction would test
/// the broker rather than the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_process_stopped_and_restarted_loses_and_duplicates_nothing() {
    let mut broker = kafka::PrivateBroker::start().await.unwrap();
    let bootstrap = broker.bootstrap();
    let dir = scratch_dir("oxbow-restart");
    let job = job(&bootstrap, &format!("file://{}", dir.display())).await;
    let mut worker = WorkerProcess::start(&job.file, 0, &[]).unwrap();
    let base = now_ms() - now_ms() % 1000;
    let timeout = Duration::from_secs(60);

    // A first batch, committed.
    let input = spawn_input(&bootstrap, &job.input, base);
    // Two seconds of input.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut events = input.stop().await.unwrap();
    let first = events.len() as i64;
    eventually("the first batch to be committed", timeout, async || {
        (kafka::committed_total(&bootstrap, &job.group, &job.input, 1).ok()? == first).then_some(())
    })
    .await
    .unwrap();

    // The broker goes away; the worker keeps running and says so.
    broker.stop().unwrap();
    // The broker stays down a while: the outage the worker must ride out.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(worker.is_running(), "the worker rides out the outage");
    broker.restart().await.unwrap();

    // A second batch after the restart is processed.
    let input = spawn_input(&bootstrap, &job.input, base + 20 * first);
    // Two seconds of input.
    tokio::time::sleep(Duration::from_secs(2)).await;
    events.extend(input.stop().await.unwrap());
    finish(&bootstrap, &job, &mut worker, events, base).await;
}
