//! The worker runtime against a real broker (noida-db) and real checkpoint storage: a worker
//! that dies with an open transaction is fenced by its successor, which restores the
//! checkpointed windows and finishes the job; a `read_committed` reader of the sink sees every
//! window result exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{cell::Cell, path::PathBuf, time::Duration};

use oxbow_crds::{
    assignment::assign,
    jobfile::{JobFile, Restore},
    streamjob::DeliveryGuarantee,
};
use oxbow_tests::{
    Wait, kafka, now_ms, scratch_dir, unique_name,
    wait::block_on,
    windows::{self, Event, Row, Window},
    worker,
};
use oxbow_worker::runtime::{Worker, WorkerConfig};
use rdkafka::producer::FutureProducer;

/// A test's broker, topics and checkpoint directory, and the window job on them for one
/// worker, checkpointing only when told.
struct Fixture {
    bootstrap: String,
    input: String,
    output: String,
    dir: PathBuf,
    job: JobFile,
    producer: FutureProducer,
}

impl Fixture {
    /// Topics `<prefix>-in` (2 partitions) and `<prefix>-out`, checkpoints in a scratch
    /// directory `<dir_prefix>-*`.
    async fn new(prefix: &str, dir_prefix: &str) -> Fixture {
        let bootstrap = kafka::bootstrap();
        let (input, output) = kafka::source_and_sink(&bootstrap, prefix, 2).await.unwrap();
        let dir = scratch_dir(dir_prefix);
        let storage = format!("file://{}", dir.display());
        let window = Window::default();
        let spec = windows::job("eos", "unused:9092", &input, &output, &storage, &window)
            .checkpoint("interval: 1h")
            .job_spec()
            .unwrap();
        let job = worker::job_file(&unique_name("eos"), spec, &[(&input, 2)], 1);
        let producer = kafka::producer(&bootstrap).unwrap();
        Fixture {
            bootstrap,
            input,
            output,
            dir,
            job,
            producer,
        }
    }

    /// Produces `events` at [`base`], each key on its own partition.
    async fn send(&self, events: &[Event]) {
        let placed = events
            .iter()
            .map(|&(k, v, ts)| ((k % 2) as i32, (k, v, base() + ts)));
        kafka::produce(&self.producer, &self.input, placed)
            .await
            .unwrap();
    }
}

/// Worker `ordinal` of `job` on `bootstrap`.
fn config(job: &JobFile, ordinal: u32, bootstrap: &str) -> WorkerConfig {
    WorkerConfig {
        job: job.clone(),
        ordinal,
        bootstrap: Some(bootstrap.to_owned()),
        kafka_timeout: Duration::from_secs(30),
    }
}

/// Event times in the test are offsets from a recent whole second: results carry their window's
/// end as Kafka timestamp, and a broker deletes records older than its retention (1970 is).
fn base() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| now_ms() - now_ms() % 1000)
}

/// Polls `workers` until together they have consumed `records_in` records.
fn poll_until(workers: &mut [&mut Worker], records_in: u64) {
    let consumed = Cell::new(0);
    block_on(
        Wait::new(
            format!("the workers to consume {records_in} records"),
            Duration::from_secs(60),
        )
        .every(Duration::ZERO)
        .diagnose(async || format!("they consumed {}", consumed.get()))
        .until(async || {
            consumed.set(workers.iter().map(|w| w.records_in()).sum());
            if consumed.get() >= records_in {
                return Some(());
            }
            for w in workers.iter_mut() {
                w.poll_once(Duration::from_millis(50)).unwrap();
            }
            None
        }),
    )
    .unwrap();
}

/// Window rows `(k, window_start - base, n, total)` a `read_committed` reader finds in `topic`.
fn committed_rows(bootstrap: &str, topic: &str) -> Vec<Row> {
    windows::results(bootstrap, topic, Duration::from_secs(3))
        .unwrap()
        .into_iter()
        .map(|(k, start, n, total)| (k, start - base(), n, total))
        .collect()
}

/// A worker checkpoints after batch A, consumes batch B (firing windows into its open
/// transaction), and dies without a goodbye; a successor finishes with batch C. Returns what a
/// `read_committed` reader finds, and what an uninterrupted run produces.
async fn kill_and_resume(guarantee: DeliveryGuarantee) -> (Vec<Row>, Vec<Row>) {
    let mut fixture = Fixture::new("eos", "oxbow-checkpoints").await;
    fixture.job.spec.sink.delivery_guarantee = guarantee;
    let config = config(&fixture.job, 0, &fixture.bootstrap);

    // Windows [0, 1000) and [1000, 2000) for keys 0..4, then records at 2000+ that fire them.
    let [a, b, c] = batches();
    fixture.send(&a).await;
    let first = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let mut worker = Worker::start(config).unwrap();
            poll_until(&mut [&mut worker], 40);
            let report = worker.checkpoint().unwrap();
            assert!(report.snapshots >= 1, "{report:?}");
            worker
        })
        .await
        .unwrap()
    };
    fixture.send(&b).await;
    let first = tokio::task::spawn_blocking(move || {
        let mut worker = first;
        poll_until(&mut [&mut worker], 40 + 8);
        worker
    })
    .await
    .unwrap();
    std::mem::forget(first); // a SIGKILL: no flush, no abort, no goodbye

    fixture.send(&c).await;
    tokio::task::spawn_blocking(move || {
        let mut second = Worker::start(config).unwrap();
        // Restored from the checkpoint after A (its counters too): it reads B again, then C.
        poll_until(&mut [&mut second], 40 + 8 + 4);
        second.checkpoint().unwrap();
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(&fixture.dir).ok();
    // The last window of each key ([9000, 10000)) is still open: no record closed it.
    let want = windows::expected(&batches().concat(), 9000);
    (committed_rows(&fixture.bootstrap, &fixture.output), want)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_resumed_from_its_checkpoint_exactly_once() {
    let (got, want) = kill_and_resume(DeliveryGuarantee::ExactlyOnce).await;
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_loses_nothing_across_a_kill() {
    let (got, want) = kill_and_resume(DeliveryGuarantee::AtLeastOnce).await;
    // Every result arrives, possibly more than once; no wrong result.
    let got: std::collections::BTreeSet<_> = got.into_iter().collect();
    assert_eq!(got, want.into_iter().collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_savepoint_restores_into_two_workers_and_survives_their_restart() {
    let fixture = Fixture::new("sp", "oxbow-savepoints").await;
    let one = fixture.job.clone();
    let config = |job: &JobFile, ordinal| config(job, ordinal, &fixture.bootstrap);

    let a: Vec<Event> = (0..40).map(|i| (i % 4, i, (i * 50) % 2000)).collect();
    let b: Vec<Event> = (0..16).map(|i| (i % 4, 200 + i, 2000 + i * 60)).collect();
    let c: Vec<Event> = (0..4).map(|k| (k, 1000, 9000)).collect();
    fixture.send(&a).await;

    // Generation 1: one worker; stop it with a savepoint.
    let path = {
        let config = config(&one, 0);
        tokio::task::spawn_blocking(move || {
            let mut worker = Worker::start(config).unwrap();
            poll_until(&mut [&mut worker], 40);
            worker.savepoint("sp-1").unwrap()
        })
        .await
        .unwrap()
    };
    assert!(path.ends_with("/savepoints/sp-1"), "{path}");
    fixture.send(&b).await;

    // Generation 2: two workers, one partition each, restored from the savepoint.
    let mut two = one.clone();
    let topics = [(fixture.input.clone(), 2)].into();
    two.assignment = assign(&topics, 2, Some(&one.assignment));
    assert_eq!(two.assignment.generation, 2);
    two.restore = Restore::Savepoint { path };
    let (c0, c1) = (config(&two, 0), config(&two, 1));
    let c1_again = c1.clone();
    let restarted_records = tokio::task::spawn_blocking(move || {
        let (mut w0, mut w1) = (Worker::start(c0).unwrap(), Worker::start(c1).unwrap());
        poll_until(&mut [&mut w0, &mut w1], 40 + 16);
        w0.checkpoint().unwrap();
        w1.checkpoint().unwrap();
        drop(w1);
        // A restarted generation-2 worker continues from its own committed offsets, not from
        // the savepoint: nothing is consumed or produced twice.
        let w1 = Worker::start(c1_again).unwrap();
        let restarted = w1.records_in();
        drop((w0, w1));
        restarted
    })
    .await
    .unwrap();
    assert!(
        restarted_records > 0,
        "the restarted worker restored its windows and counters"
    );

    fixture.send(&c).await;
    let (c0, c1) = (config(&two, 0), config(&two, 1));
    tokio::task::spawn_blocking(move || {
        let (mut w0, mut w1) = (Worker::start(c0).unwrap(), Worker::start(c1).unwrap());
        poll_until(&mut [&mut w0, &mut w1], 40 + 16 + 4);
        w0.checkpoint().unwrap();
        w1.checkpoint().unwrap();
    })
    .await
    .unwrap();

    let rows = committed_rows(&fixture.bootstrap, &fixture.output);
    let all: Vec<Event> = [a, b, c].concat();
    let want = windows::expected(&all, 9000);
    assert_eq!(
        rows, want,
        "the same results as one uninterrupted run, each once"
    );
    std::fs::remove_dir_all(&fixture.dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_snapshots_are_disposed_of_beyond_retained() {
    let mut fixture = Fixture::new("gc", "oxbow-retention").await;
    let job = &mut fixture.job;
    job.spec.checkpoint.as_mut().unwrap().retained = 2;
    let state_dir = fixture.dir.join(format!(
        "{}/{}/state/{}",
        job.namespace, job.name, fixture.input
    ));
    let config = config(&fixture.job, 0, &fixture.bootstrap);

    // Four checkpoints, each with open windows on both partitions (nothing fires: all in [0, 1000)).
    let mut worker = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Worker::start(config).unwrap())
            .await
            .unwrap()
    };
    for round in 0..4i64 {
        let events: Vec<Event> = (0..8).map(|i| (i % 4, i, round * 100 + i)).collect();
        fixture.send(&events).await;
        worker = tokio::task::spawn_blocking(move || {
            poll_until(&mut [&mut worker], (8 * (round + 1)) as u64);
            worker.checkpoint().unwrap();
            worker
        })
        .await
        .unwrap();
    }
    let snapshots = |partition: i32| -> usize {
        std::fs::read_dir(state_dir.join(partition.to_string()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(
        (snapshots(0), snapshots(1)),
        (2, 2),
        "retained: 2 keeps two snapshots per partition"
    );

    // The newest one is what the committed offsets name: a new worker restores from it.
    tokio::task::spawn_blocking(move || {
        drop(worker);
        let restored = Worker::start(config).unwrap();
        assert_eq!(
            restored.records_in(),
            32,
            "restored every window and counter"
        );
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(&fixture.dir).ok();
}

fn batches() -> [Vec<Event>; 3] {
    let a: Vec<Event> = (0..40).map(|i| (i % 4, i, (i * 50) % 2000)).collect();
    let b: Vec<Event> = (0..8).map(|i| (i % 4, 100 + i, 2000 + i)).collect();
    let c: Vec<Event> = (0..4).map(|k| (k, 1000, 9000)).collect();
    [a, b, c]
}
