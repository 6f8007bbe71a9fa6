//! Restores that do what the job file asks, against the real broker and real `oxbow-worker run`
//! processes. Each job file names a restore request; the workers record the request they ran
//! under with their checkpoints:
//!
//! - a new request to restore from a savepoint is honoured on a job of unchanged shape (it
//!   used to be ignored because the assignment had not changed), and a restart under the same
//!   request continues from its own commits rather than restoring again;
//! - a stateless request starts empty once; a restart under it restores its own checkpoints
//!   (it used to start empty at every restart, losing its open windows);
//! - `startingOffsets: latest` is resolved once and committed with the first checkpoint, so a
//!   restart reads what arrived while the worker was down (it used to resolve `latest` again
//!   and skip it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::PathBuf, time::Duration};

use oxbow_crds::{
    admin::{SavepointState, WorkerStatus},
    jobfile::{JobFile, Restore},
};
use oxbow_tests::{
    eventually, kafka,
    manifest::Manifest,
    now_ms, scratch_dir, unique_name,
    windows::{self, Event, Window},
    worker::{self, WorkerProcess},
};

struct Job {
    job: JobFile,
    file: PathBuf,
    dir: PathBuf,
    input: String,
    output: String,
}

impl Job {
    /// The window job on a one-partition input, one worker, under the request `first`.
    async fn create() -> Job {
        Self::create_with(|m| m).await
    }

    /// [`Job::create`] with the manifest changed by `change`.
    async fn create_with(change: impl FnOnce(Manifest) -> Manifest) -> Job {
        let bootstrap = kafka::bootstrap();
        let (input, output) = kafka::source_and_sink(&bootstrap, "restore", 1)
            .await
            .unwrap();
        let dir = scratch_dir("oxbow-restore");
        let storage = format!("file://{}", dir.join("checkpoints").display());
        std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
        let name = unique_name("restore");
        let manifest = windows::job(
            &name,
            &bootstrap,
            &input,
            &output,
            &storage,
            &Window::default(),
        )
        .checkpoint("interval: 500ms");
        let spec = change(manifest).job_spec().unwrap();
        let job = worker::job_file(&name, spec, &[(&input, 1)], 1).with_restore_request("first");
        let file = dir.join("job.json");
        worker::write_job_file(&job, &file).unwrap();
        Job {
            job,
            file,
            dir,
            input,
            output,
        }
    }

    /// Writes the job file requesting `restore` as the new request `request`.
    fn request(&mut self, restore: Restore, request: &str) {
        self.job.restore = restore;
        self.job.restore_request = request.to_owned();
        worker::write_job_file(&self.job, &self.file).unwrap();
    }

    fn start(&self) -> WorkerProcess {
        WorkerProcess::start(&self.file, 0, &[]).unwrap()
    }

    async fn produce(&self, events: &[Event]) {
        let producer = kafka::producer(&kafka::bootstrap()).unwrap();
        kafka::produce(&producer, &self.input, events.iter().map(|e| (0, *e)))
            .await
            .unwrap();
    }

    /// The committed position of the job's input partition.
    fn committed(&self) -> i64 {
        kafka::committed_total(
            &kafka::bootstrap(),
            &self.job.consumer_group(),
            &self.input,
            1,
        )
        .unwrap()
    }
}

/// Waits until `worker` has committed the input up to `position` and reports a checkpoint;
/// returns its status then.
async fn committed(job: &Job, worker: &WorkerProcess, position: i64) -> WorkerStatus {
    eventually(
        &format!("a checkpoint at offset {position}"),
        Duration::from_secs(60),
        async || {
            let status = worker.status().await?;
            (job.committed() == position && status.last_checkpoint.is_some()).then_some(status)
        },
    )
    .await
    .unwrap()
}

/// Records this worker process has read (its metrics; a restored task's counts not included).
async fn read_by_this_process(job: &Job, worker: &WorkerProcess) -> Option<u64> {
    let metrics = worker.metrics().await?;
    let series = format!(
        "oxbow_worker_records_in_total{{topic=\"{}\",partition=\"0\"}} ",
        job.input
    );
    Some(
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |n| n.trim().parse().unwrap_or(0)),
    )
}

/// Starts the job's worker, waits until it has committed the input up to `position` and its
/// metrics count at least `at_least` records read; returns what they count, and stops it.
async fn run_until(job: &Job, position: i64, at_least: u64) -> u64 {
    let mut worker = job.start();
    worker.ready().await.unwrap();
    committed(job, &worker, position).await;
    let read = eventually(
        "the worker's metrics to count the records it read",
        Duration::from_secs(30),
        async || {
            read_by_this_process(job, &worker)
                .await
                .filter(|n| *n >= at_least)
        },
    )
    .await
    .unwrap();
    assert!(worker.terminate().unwrap().success());
    read
}

/// Events of key 1 at `from + 10 i` ms, `n` of them.
fn events(from: i64, n: i64) -> Vec<Event> {
    (0..n).map(|i| (1, i, from + 10 * i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_restore_request_restores_its_savepoint_and_a_restart_does_not() {
    let mut job = Job::create().await;
    let base = now_ms() - now_ms() % 1000;
    job.produce(&events(base, 20)).await;
    let worker = job.start();
    committed(&job, &worker, 20).await;
    let savepoint = worker.savepoint("sp-1", false).await.unwrap();
    assert_eq!(savepoint.state, SavepointState::Completed, "{savepoint:?}");
    job.produce(&events(base + 200, 30)).await;
    committed(&job, &worker, 50).await;
    let mut worker = worker;
    assert!(worker.terminate().unwrap().success());

    // Same job, same assignment: a new request to restore from the savepoint.
    job.request(
        Restore::Savepoint {
            path: savepoint.path.unwrap(),
        },
        "second",
    );
    let read = run_until(&job, 50, 30).await;
    assert_eq!(read, 30, "read again from the savepoint's offset 20");

    // A restart under the same request continues from its own commits: nothing is read again.
    let mut worker = job.start();
    worker.ready().await.unwrap();
    let at = committed(&job, &worker, 50)
        .await
        .last_checkpoint
        .unwrap()
        .id;
    // Metrics published with a later checkpoint count everything read before it.
    eventually("a later checkpoint", Duration::from_secs(30), async || {
        let status = worker.status().await?;
        status.last_checkpoint.filter(|c| c.id > at)
    })
    .await
    .unwrap();
    let read = read_by_this_process(&job, &worker).await.unwrap();
    assert_eq!(read, 0, "a restart read records again");
    assert!(worker.terminate().unwrap().success());
    std::fs::remove_dir_all(&job.dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_request_starts_empty_once_and_its_restarts_keep_their_windows() {
    let mut job = Job::create().await;
    let base = now_ms() - now_ms() % 1000;
    // Under the first request, 5 records open the window [base, base + 1 s).
    let before = events(base, 5);
    job.produce(&before).await;
    let mut worker = job.start();
    committed(&job, &worker, 5).await;
    assert!(worker.terminate().unwrap().success());

    // A stateless upgrade: that open window is dropped, once.
    job.request(Restore::Stateless, "stateless-upgrade");
    let first_half = events(base + 1000, 10);
    job.produce(&first_half).await;
    let mut worker = job.start();
    committed(&job, &worker, 15).await;
    // Killed with the window [base + 1 s, base + 2 s) half full; the restart must keep it.
    worker.kill();
    let worker = job.start();
    let second_half = events(base + 1100, 10);
    let closing = (1, 0, base + 10_000);
    job.produce(&second_half).await;
    job.produce(&[closing]).await;
    let mut after: Vec<Event> = first_half.clone();
    after.extend(&second_half);
    let want = windows::expected(&after, closing.2);
    eventually("the window's result", Duration::from_secs(60), async || {
        let got =
            windows::results(&kafka::bootstrap(), &job.output, Duration::from_millis(500)).ok()?;
        (!got.is_empty()).then_some(())
    })
    .await
    .unwrap();
    let mut worker = worker;
    assert!(worker.terminate().unwrap().success());
    let got = windows::results(&kafka::bootstrap(), &job.output, Duration::from_secs(2)).unwrap();
    windows::assert_exactly(&got, &want);
    std::fs::remove_dir_all(&job.dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_is_resolved_once_so_a_restart_reads_what_arrived_meanwhile() {
    let job = Job::create_with(|m| m.source("startingOffsets: latest")).await;
    let base = now_ms() - now_ms() % 1000;
    // Before the job's first start: `latest` skips these.
    job.produce(&events(base, 5)).await;
    let mut worker = job.start();
    worker.ready().await.unwrap();
    // No record since the start, yet the resolved position is committed.
    let status = committed(&job, &worker, 5).await;
    assert_eq!(status.records_in, 0);
    assert!(worker.terminate().unwrap().success());

    // Ten records arrive while no worker runs; the restart reads them.
    job.produce(&events(base + 100, 10)).await;
    let read = run_until(&job, 15, 10).await;
    assert_eq!(read, 10);
    std::fs::remove_dir_all(&job.dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_from_a_timestamp_reads_from_the_first_record_at_or_after_it() {
    let base = now_ms() - now_ms() % 1000;
    let bootstrap = kafka::bootstrap();
    // Records produced before and after the starting time (Kafka timestamps are the clock's).
    let (input, _) = kafka::source_and_sink(&bootstrap, "from-time", 1)
        .await
        .unwrap();
    let producer = kafka::producer(&bootstrap).unwrap();
    kafka::produce(
        &producer,
        &input,
        events(base, 5).into_iter().map(|e| (0, e)),
    )
    .await
    .unwrap();
    // The starting time lies between the two batches: the gap is the point.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let from =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_millis(500);
    kafka::produce(
        &producer,
        &input,
        events(base + 100, 7).into_iter().map(|e| (0, e)),
    )
    .await
    .unwrap();
    let mut job = Job::create_with(|m| {
        m.source("startingOffsets: timestamp")
            .source(&format!("startingTimestamp: \"{from}\""))
    })
    .await;
    // Read the topic with the records in place of the job's own empty source.
    job.input = input;
    job.job.spec.source.topics = vec![job.input.clone()];
    job.job.assignment = oxbow_crds::assignment::assign(
        &std::collections::BTreeMap::from([(job.input.clone(), 1)]),
        1,
        None,
    );
    worker::write_job_file(&job.job, &job.file).unwrap();
    let read = run_until(&job, 12, 7).await;
    assert_eq!(read, 7, "the 5 records before {from} are skipped");
    std::fs::remove_dir_all(&job.dir).ok();
}
