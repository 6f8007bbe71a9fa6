//! The worker runtime against a real broker (noida-db) and real checkpoint storage: a worker
//! that dies with an open transaction is fenced by its successor, which restores the
//! checkpointed windows and finishes the job; a `read_committed` reader of the sink sees every
//! window result exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use oxbow_crds::{
    assignment::assign,
    jobfile::{JobFile, Restore},
    streamjob::DeliveryGuarantee,
};
use oxbow_tests::{kafka, unique_name};
use oxbow_worker::runtime::{Worker, WorkerConfig};
use rdkafka::producer::FutureProducer;

/// (key, value, event time)
type Event = (i64, i64, i64);

fn job(input: &str, output: &str, storage: &str) -> JobFile {
    let yaml = format!(
        r#"
apiVersion: oxbow.dev/v1alpha1
kind: StreamJob
metadata: {{name: eos}}
spec:
  kafka: {{bootstrapServers: "unused:9092"}}
  source:
    topics: [{input}]
    eventTime: {{field: ts, grace: 0s}}
    partitionedBy: "k"
  pipeline:
    - keyBy: "k"
    - window: {{tumbling: 1s}}
      aggregate: {{n: "count()", total: "sum(v)"}}
  sink: {{topic: {output}}}
  checkpoint: {{storage: "{storage}", interval: 1h}}
"#
    );
    let spec = oxbow_crds::parse_manifest(&yaml).unwrap().spec;
    let topics = BTreeMap::from([(input.to_owned(), 2)]);
    JobFile::new(
        "test",
        unique_name("eos"),
        1,
        spec,
        assign(&topics, 1, None),
        Restore::LatestCheckpoint,
    )
}

/// Event times in the test are offsets from a recent whole second: results carry their window's
/// end as Kafka timestamp, and a broker deletes records older than its retention (1970 is).
fn base() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        now - now % 1000
    })
}

async fn produce(bootstrap: &str, topic: &str, events: &[Event]) {
    let producer: FutureProducer = kafka::config(bootstrap).create().unwrap();
    for (k, v, ts) in events {
        kafka::send_event(&producer, topic, (*k % 2) as i32, (*k, *v, base() + ts))
            .await
            .unwrap();
    }
}

fn consume(worker: &mut Worker, until_records_in: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while worker.records_in() < until_records_in {
        assert!(
            Instant::now() < deadline,
            "the worker consumed {} of {until_records_in} records",
            worker.records_in()
        );
        worker.poll_once(Duration::from_millis(100)).unwrap();
    }
}

/// Window rows `(k, window_start, n, total)` recomputed from the events. Each key lives on one
/// partition, so its windows are computed by one task.
fn expected(events: &[Event]) -> Vec<(i64, i64, i64, i64)> {
    let mut windows: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for (k, v, ts) in events {
        let w = windows.entry((*k, ts - ts % 1000)).or_default();
        w.0 += 1;
        w.1 += v;
    }
    windows
        .into_iter()
        .map(|((k, s), (n, t))| (k, s, n, t))
        .collect()
}

/// Window rows `(k, window_start - base, n, total)` a `read_committed` reader finds in `topic`.
fn committed_rows(bootstrap: &str, topic: &str) -> Vec<(i64, i64, i64, i64)> {
    let values = kafka::read_all(
        bootstrap,
        topic,
        1,
        "read_committed",
        Duration::from_secs(3),
    )
    .unwrap();
    let mut rows: Vec<(i64, i64, i64, i64)> = values
        .iter()
        .map(|v| {
            let row: serde_json::Value = serde_json::from_str(v).unwrap();
            let int = |f: &str| row[f].as_i64().unwrap_or_else(|| panic!("{f} in {v}"));
            (
                int("k"),
                int("window_start") - base(),
                int("n"),
                int("total"),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// A worker checkpoints after batch A, consumes batch B (firing windows into its open
/// transaction), and dies without a goodbye; a successor finishes with batch C. Returns what a
/// `read_committed` reader finds, and what an uninterrupted run produces.
async fn kill_and_resume(
    guarantee: DeliveryGuarantee,
) -> (Vec<(i64, i64, i64, i64)>, Vec<(i64, i64, i64, i64)>) {
    let bootstrap = kafka::bootstrap();
    let (input, output) = (unique_name("eos-in"), unique_name("eos-out"));
    kafka::create_topic(&bootstrap, &input, 2).await.unwrap();
    kafka::create_topic(&bootstrap, &output, 1).await.unwrap();
    let dir = std::env::temp_dir().join(unique_name("oxbow-checkpoints"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut job = job(&input, &output, &format!("file://{}", dir.display()));
    job.spec.sink.delivery_guarantee = guarantee;
    let config = WorkerConfig {
        job,
        ordinal: 0,
        bootstrap: Some(bootstrap.clone()),
        kafka_timeout: Duration::from_secs(30),
    };

    // Windows [0, 1000) and [1000, 2000) for keys 0..4, then records at 2000+ that fire them.
    let [a, b, c] = batches();
    produce(&bootstrap, &input, &a).await;
    let first = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let mut worker = Worker::start(config).unwrap();
            consume(&mut worker, 40);
            let report = worker.checkpoint().unwrap();
            assert!(report.snapshots >= 1, "{report:?}");
            worker
        })
        .await
        .unwrap()
    };
    produce(&bootstrap, &input, &b).await;
    let first = tokio::task::spawn_blocking(move || {
        let mut worker = first;
        consume(&mut worker, 40 + 8);
        worker
    })
    .await
    .unwrap();
    std::mem::forget(first); // a SIGKILL: no flush, no abort, no goodbye

    produce(&bootstrap, &input, &c).await;
    tokio::task::spawn_blocking(move || {
        let mut second = Worker::start(config).unwrap();
        // Restored from the checkpoint after A (its counters too): it reads B again, then C.
        consume(&mut second, 40 + 8 + 4);
        second.checkpoint().unwrap();
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    // The last window of each key ([9000, 10000)) is still open: no record closed it.
    let want = expected(&batches().concat())
        .into_iter()
        .filter(|r| r.1 < 9000)
        .collect();
    (committed_rows(&bootstrap, &output), want)
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

fn poll_until(workers: &mut [&mut Worker], records_in: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let total: u64 = workers.iter().map(|w| w.records_in()).sum();
        if total >= records_in {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the workers consumed {total} of {records_in} records"
        );
        for w in workers.iter_mut() {
            w.poll_once(Duration::from_millis(50)).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_savepoint_restores_into_two_workers_and_survives_their_restart() {
    let bootstrap = kafka::bootstrap();
    let (input, output) = (unique_name("sp-in"), unique_name("sp-out"));
    kafka::create_topic(&bootstrap, &input, 2).await.unwrap();
    kafka::create_topic(&bootstrap, &output, 1).await.unwrap();
    let dir = std::env::temp_dir().join(unique_name("oxbow-savepoints"));
    std::fs::create_dir_all(&dir).unwrap();
    let one = job(&input, &output, &format!("file://{}", dir.display()));
    let config = |job: &JobFile, ordinal| WorkerConfig {
        job: job.clone(),
        ordinal,
        bootstrap: Some(bootstrap.clone()),
        kafka_timeout: Duration::from_secs(30),
    };

    let a: Vec<Event> = (0..40).map(|i| (i % 4, i, (i * 50) % 2000)).collect();
    let b: Vec<Event> = (0..16).map(|i| (i % 4, 200 + i, 2000 + i * 60)).collect();
    let c: Vec<Event> = (0..4).map(|k| (k, 1000, 9000)).collect();
    produce(&bootstrap, &input, &a).await;

    // Generation 1: one worker; stop it with a savepoint.
    let path = {
        let config = config(&one, 0);
        tokio::task::spawn_blocking(move || {
            let mut worker = Worker::start(config).unwrap();
            consume(&mut worker, 40);
            worker.savepoint("sp-1").unwrap()
        })
        .await
        .unwrap()
    };
    assert!(path.ends_with("/savepoints/sp-1"), "{path}");
    produce(&bootstrap, &input, &b).await;

    // Generation 2: two workers, one partition each, restored from the savepoint.
    let mut two = one.clone();
    let topics = BTreeMap::from([(input.clone(), 2)]);
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

    produce(&bootstrap, &input, &c).await;
    let (c0, c1) = (config(&two, 0), config(&two, 1));
    tokio::task::spawn_blocking(move || {
        let (mut w0, mut w1) = (Worker::start(c0).unwrap(), Worker::start(c1).unwrap());
        poll_until(&mut [&mut w0, &mut w1], 40 + 16 + 4);
        w0.checkpoint().unwrap();
        w1.checkpoint().unwrap();
    })
    .await
    .unwrap();

    let rows = committed_rows(&bootstrap, &output);
    let all: Vec<Event> = [a, b, c].concat();
    let want: Vec<_> = expected(&all).into_iter().filter(|r| r.1 < 9000).collect();
    assert_eq!(
        rows, want,
        "the same results as one uninterrupted run, each once"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_snapshots_are_disposed_of_beyond_retained() {
    let bootstrap = kafka::bootstrap();
    let (input, output) = (unique_name("gc-in"), unique_name("gc-out"));
    kafka::create_topic(&bootstrap, &input, 2).await.unwrap();
    kafka::create_topic(&bootstrap, &output, 1).await.unwrap();
    let dir = std::env::temp_dir().join(unique_name("oxbow-retention"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut job = job(&input, &output, &format!("file://{}", dir.display()));
    job.spec.checkpoint.as_mut().unwrap().retained = 2;
    let state_dir = dir.join(format!("{}/{}/state/{input}", job.namespace, job.name));
    let config = WorkerConfig {
        job,
        ordinal: 0,
        bootstrap: Some(bootstrap.clone()),
        kafka_timeout: Duration::from_secs(30),
    };

    // Four checkpoints, each with open windows on both partitions (nothing fires: all in [0, 1000)).
    let mut worker = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Worker::start(config).unwrap())
            .await
            .unwrap()
    };
    for round in 0..4i64 {
        let events: Vec<Event> = (0..8).map(|i| (i % 4, i, round * 100 + i)).collect();
        produce(&bootstrap, &input, &events).await;
        worker = tokio::task::spawn_blocking(move || {
            consume(&mut worker, (8 * (round + 1)) as u64);
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
    std::fs::remove_dir_all(&dir).ok();
}

fn batches() -> [Vec<Event>; 3] {
    let a: Vec<Event> = (0..40).map(|i| (i % 4, i, (i * 50) % 2000)).collect();
    let b: Vec<Event> = (0..8).map(|i| (i % 4, 100 + i, 2000 + i)).collect();
    let c: Vec<Event> = (0..4).map(|k| (k, 1000, 9000)).collect();
    [a, b, c]
}
