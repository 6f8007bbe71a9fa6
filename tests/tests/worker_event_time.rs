//! Event time across downtime, against the real broker and real `oxbow-worker run` processes.
//!
//! - A worker that was down — stopped with SIGTERM, or killed — must not let its downtime move
//!   event time: after the restart its open windows wait for the backlog, and nothing that
//!   arrived meanwhile is late. (A restored task used to count the whole downtime as
//!   idleness on its first empty poll.)
//! - A shuffle stage whose upstream worker is down, or starts late after a rescale, waits for
//!   it: its stream time is the minimum of its upstream source partitions' progress, so their
//!   backlog is not dead-lettered as late although the other worker ran ahead.
//!
//! Input is live (event time is the clock); the grace period is zero. Every test compares the
//! committed results with an independent model of the window job
//! ([`windows::expected_windows`]) and requires the dead-letter topic to be empty. To construct
//! a slow first fetch after a restart, as from a remote or loaded broker, the jobs ask
//! librdkafka for fetches that wait up to 2 s for 100 MB.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, time::Duration};

use oxbow_crds::{
    assignment::assign,
    jobfile::{JobFile, Restore},
};
use oxbow_tests::{
    kafka, now_ms, scratch_dir, unique_name,
    windows::{self, Event, Window},
    worker::{self, WorkerProcess},
};

const KEYS: i64 = 6;

/// The job a test runs.
struct Case {
    /// Partitions of the input topic.
    partitions: i32,
    /// Partitions of the shuffle topic; without one the input is partitioned by key.
    shuffle_partitions: Option<i32>,
    workers: u32,
    /// The tumbling window, in ms (`1m` or `1s`).
    window_ms: i64,
}

struct Job {
    case: Case,
    file: std::path::PathBuf,
    dir: std::path::PathBuf,
    job: JobFile,
    input: String,
    output: String,
    dead_letter: String,
    topics: BTreeMap<String, i32>,
}

impl Job {
    async fn create(case: Case) -> Job {
        let bootstrap = kafka::bootstrap();
        let (input, output) = kafka::source_and_sink(&bootstrap, "event-time", case.partitions)
            .await
            .unwrap();
        let dead_letter = kafka::new_topic(&bootstrap, "event-time-dlq", 1)
            .await
            .unwrap();
        let dir = scratch_dir("oxbow-event-time");
        let storage = format!("file://{}", dir.join("checkpoints").display());
        std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
        let window = Window {
            size: if case.window_ms == 60_000 { "1m" } else { "1s" },
            grace_seconds: Some(0),
            partitioned: case.shuffle_partitions.is_none(),
            idle_timeout: Some("10s"),
            ..Window::default()
        };
        let name = unique_name("event-time");
        let spec = windows::job(&name, &bootstrap, &input, &output, &storage, &window)
            .kafka("properties: {fetch.wait.max.ms: \"2000\", fetch.min.bytes: \"100000000\"}")
            .checkpoint("interval: 1s")
            .spec(&format!("deadLetter: {{topic: {dead_letter}}}"))
            .job_spec()
            .unwrap();
        let mut topics = BTreeMap::from([(input.clone(), case.partitions)]);
        if let Some(partitions) = case.shuffle_partitions {
            let shuffle = oxbow_crds::names::shuffle_topic("test", &name);
            kafka::create_topic(&bootstrap, &shuffle, partitions)
                .await
                .unwrap();
            topics.insert(shuffle, partitions);
        }
        let job = JobFile::new(
            "test",
            &name,
            1,
            spec,
            assign(&topics, case.workers, None),
            Restore::LatestCheckpoint,
        );
        let file = dir.join("job.json");
        worker::write_job_file(&job, &file).unwrap();
        Job {
            case,
            file,
            dir,
            job,
            input,
            output,
            dead_letter,
            topics,
        }
    }

    fn start(&self, ordinal: u32) -> WorkerProcess {
        WorkerProcess::start(&self.file, ordinal, &[]).unwrap()
    }

    /// The input partition of event `i` with `key`: the key's own partition, or every
    /// partition in turn when the pipeline repartitions.
    fn partition_of(&self, i: i64, key: i64) -> i32 {
        let spread = if self.case.shuffle_partitions.is_some() {
            i
        } else {
            key
        };
        (spread % i64::from(self.case.partitions)) as i32
    }

    /// Live input, committed every 500 ms by a transactional producer: event `i` has key
    /// `i % KEYS` and the clock's time.
    fn flow(&self) -> kafka::Flow {
        let (partitions, spread) = (
            i64::from(self.case.partitions),
            self.case.shuffle_partitions.is_some(),
        );
        kafka::Flow::transactional(&kafka::bootstrap(), &self.input, 10, move |i| {
            let key = i % KEYS;
            let spread = if spread { i } else { key };
            ((spread % partitions) as i32, (key, i % 97, now_ms()))
        })
    }

    /// Whether worker `ordinal` reads a partition of the input topic (and so feeds the
    /// shuffle stage of the others).
    fn reads_input(&self, ordinal: u32) -> bool {
        self.job
            .assignment
            .worker(ordinal)
            .is_some_and(|w| w.partitions.contains_key(&self.input))
    }

    /// The same job rescaled to `workers`, restoring from the latest checkpoints.
    fn rescale(&mut self, workers: u32) {
        let assignment = assign(&self.topics, workers, Some(&self.job.assignment));
        assert!(assignment.generation > self.job.assignment.generation);
        self.job.assignment = assignment;
        self.case.workers = workers;
        worker::write_job_file(&self.job, &self.file).unwrap();
    }

    /// Closes every window with records far ahead on every input partition, waits for the
    /// results, stops the workers with SIGTERM, and checks the results against the model and
    /// that nothing was dead-lettered.
    async fn finish(&self, mut events: Vec<Event>, workers: Vec<WorkerProcess>) {
        let bootstrap = kafka::bootstrap();
        let last = events.iter().map(|e| e.2).max().unwrap();
        let closing = last + 3 * self.case.window_ms;
        let closing_events: Vec<(i32, Event)> = (0..KEYS)
            .flat_map(|k| (0..self.case.partitions).map(move |p| (p, k)))
            .map(|(p, k)| (self.partition_of(i64::from(p), k), (k, 0, closing)))
            .collect();
        let producer = kafka::producer(&bootstrap).unwrap();
        kafka::produce(&producer, &self.input, closing_events.iter().copied())
            .await
            .unwrap();
        events.extend(closing_events.into_iter().map(|(_, e)| e));
        let want = windows::expected_windows(&events, closing, self.case.window_ms);
        let results = || {
            kafka::read_all(
                &bootstrap,
                &self.output,
                1,
                "read_committed",
                Duration::from_millis(500),
            )
            .map_or(0, |v| v.len())
        };
        worker::catch_up(
            &workers,
            async || results() >= want.len(),
            async || format!("{} of {} results", results(), want.len()),
        )
        .await;
        worker::terminate_all(workers);
        let dead = kafka::read_all(
            &bootstrap,
            &self.dead_letter,
            1,
            "read_committed",
            Duration::from_secs(2),
        )
        .unwrap();
        let got = windows::results(&bootstrap, &self.output, Duration::from_secs(3)).unwrap();
        assert!(
            dead.is_empty(),
            "{} record(s) dead-lettered (late), first: {:?}; {} of {} windows right",
            dead.len(),
            dead.first(),
            got.iter().filter(|g| want.contains(g)).count(),
            want.len()
        );
        windows::assert_exactly(&got, &want);
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// Waits until the job has committed progress on every input partition.
async fn committed_everywhere(job: &Job) {
    let bootstrap = kafka::bootstrap();
    let group = job.job.consumer_group();
    oxbow_tests::eventually(
        "a checkpoint on every input partition",
        Duration::from_secs(60),
        async || {
            let positions =
                kafka::committed(&bootstrap, &group, &job.input, job.case.partitions).ok()?;
            positions.iter().all(|p| *p > 0).then_some(())
        },
    )
    .await
    .unwrap();
}

/// One worker, 1-minute windows, idle after 10 s: the worker stopped by `signal` while input
/// keeps coming for `downtime`, then restarted. The input's producer holds the backlog in its
/// open transaction until 3 s after the restart: the restarted worker's first polls find
/// nothing although a backlog is there (as after a slow first fetch), and must not take the
/// downtime for idleness.
async fn a_downtime_moves_no_event_time(signal: &str, downtime: Duration) {
    let job = Job::create(Case {
        partitions: 2,
        shuffle_partitions: None,
        workers: 1,
        window_ms: 60_000,
    })
    .await;
    let input = job.flow();
    let mut worker = job.start(0);
    committed_everywhere(&job).await;
    input.hold(true);
    if signal == "KILL" {
        worker.kill();
    } else {
        assert!(worker.terminate().unwrap().success());
    }
    // The downtime is the point: input keeps arriving while no worker runs.
    tokio::time::sleep(downtime).await;
    let worker = job.start(0);
    worker.ready().await.unwrap();
    // Three seconds of empty polls after the restart (under the 10 s idleTimeout): the point.
    tokio::time::sleep(Duration::from_secs(3)).await;
    input.hold(false);
    // The backlog is read after the restart, with live input on top of it.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let events = input.stop().await.unwrap();
    job.finish(events, vec![worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_for_45_s_restarts_with_every_window_complete() {
    a_downtime_moves_no_event_time("TERM", Duration::from_secs(45)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_and_down_for_3_minutes_restarts_with_every_window_complete() {
    a_downtime_moves_no_event_time("KILL", Duration::from_secs(180)).await;
}

/// Two workers and a shuffle stage: worker 1 stopped by `signal` for 40 s while worker 0 runs
/// ahead, then restarted.
async fn an_upstream_worker_down_for_40_s_loses_nothing_to_lateness(signal: &str) {
    let job = Job::create(Case {
        partitions: 2,
        shuffle_partitions: Some(2),
        workers: 2,
        window_ms: 1000,
    })
    .await;
    assert!(
        job.reads_input(0) && job.reads_input(1),
        "{:?}",
        job.job.assignment
    );
    let input = job.flow();
    let mut workers = vec![job.start(0), job.start(1)];
    committed_everywhere(&job).await;
    if signal == "KILL" {
        workers[1].kill();
    } else {
        assert!(workers[1].terminate().unwrap().success());
    }
    // Worker 0 goes on alone for 40 s: that is the point.
    tokio::time::sleep(Duration::from_secs(40)).await;
    workers[1] = job.start(1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let events = input.stop().await.unwrap();
    job.finish(events, workers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shuffle_stage_waits_for_an_upstream_worker_stopped_for_40_s() {
    an_upstream_worker_down_for_40_s_loses_nothing_to_lateness("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a broker whose read_committed fetch resumes after an aborted transaction (Apache Kafka); noida-db stalls at the killed worker's aborted shuffle output"]
async fn a_shuffle_stage_waits_for_an_upstream_worker_killed_for_40_s() {
    an_upstream_worker_down_for_40_s_loses_nothing_to_lateness("KILL").await;
}

/// A rescale from 2 to 3 workers under input, the new worker started 20 s after the others:
/// the shuffle stage on the first two waits for the partition that moved to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescale_whose_new_worker_starts_20_s_late_loses_nothing_to_lateness() {
    let mut job = Job::create(Case {
        partitions: 6,
        shuffle_partitions: Some(3),
        workers: 2,
        window_ms: 1000,
    })
    .await;
    let input = job.flow();
    let workers = vec![job.start(0), job.start(1)];
    committed_everywhere(&job).await;
    for mut w in workers {
        assert!(w.terminate().unwrap().success());
    }
    job.rescale(3);
    assert!(job.reads_input(2), "{:?}", job.job.assignment);
    let mut workers = vec![job.start(0), job.start(1)];
    // The new worker's pod starts late: that is the point.
    tokio::time::sleep(Duration::from_secs(20)).await;
    workers.push(job.start(2));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let events = input.stop().await.unwrap();
    job.finish(events, workers).await;
}
