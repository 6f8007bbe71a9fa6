//! Exactly-once under crashes: `oxbow-worker run` processes are killed with SIGKILL at random
//! moments, twenty times, while input flows; a last worker finishes and stops on SIGTERM; a
//! `read_committed` reader of the sink then finds every window result exactly once and nothing
//! else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use oxbow_crds::{
    assignment::assign,
    jobfile::{JobFile, Restore},
};
use oxbow_tests::{kafka, unique_name};
use rdkafka::{
    TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    producer::FutureProducer,
};

const KEYS: i64 = 6;
const PARTITIONS: i32 = 2;

/// Each key lives in one partition.
fn partition_of(key: i64) -> i32 {
    (key % PARTITIONS as i64) as i32
}

/// The worker binary built next to this test.
fn worker_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let binary = dir.join("oxbow-worker");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p oxbow-worker` (cargo test --workspace does)",
        binary.display()
    );
    binary
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

struct Job {
    file: PathBuf,
    dir: PathBuf,
    input: String,
    output: String,
    group: String,
    env: Vec<(String, String)>,
}

/// Where checkpoints go.
enum Storage {
    /// A local directory.
    File,
    /// The test S3 server, under this prefix of its bucket.
    S3(String),
}

fn write_job(bootstrap: &str, storage: &Storage) -> Job {
    let (input, output) = (unique_name("crash-in"), unique_name("crash-out"));
    let dir = std::env::temp_dir().join(unique_name("oxbow-crash"));
    std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
    let (storage_url, env) = match storage {
        Storage::File => (
            format!("file://{}", dir.join("checkpoints").display()),
            Vec::new(),
        ),
        Storage::S3(prefix) => {
            let vars = oxbow_tests::component(oxbow_tests::Component::S3);
            let bucket = vars.get("OXBOW_TEST_S3_BUCKET").unwrap();
            // object_store reads its S3 settings from the environment, as in a pod.
            let env = vec![
                (
                    "AWS_ENDPOINT_URL".to_owned(),
                    vars.get("OXBOW_TEST_S3_ENDPOINT").unwrap().to_owned(),
                ),
                ("AWS_ALLOW_HTTP".to_owned(), "true".to_owned()),
                (
                    "AWS_ACCESS_KEY_ID".to_owned(),
                    vars.optional("AWS_ACCESS_KEY_ID")
                        .unwrap_or("test")
                        .to_owned(),
                ),
                (
                    "AWS_SECRET_ACCESS_KEY".to_owned(),
                    vars.optional("AWS_SECRET_ACCESS_KEY")
                        .unwrap_or("test")
                        .to_owned(),
                ),
                (
                    "AWS_REGION".to_owned(),
                    vars.optional("AWS_REGION")
                        .unwrap_or("us-east-1")
                        .to_owned(),
                ),
            ];
            (format!("s3://{bucket}/{prefix}"), env)
        }
    };
    let yaml = format!(
        r#"
apiVersion: oxbow.dev/v1alpha1
kind: StreamJob
metadata: {{name: crash}}
spec:
  kafka: {{bootstrapServers: "{bootstrap}"}}
  source:
    topics: [{input}]
    eventTime: {{field: ts, grace: 0s}}
  pipeline:
    - keyBy: "k"
    - window: {{tumbling: 1s}}
      aggregate: {{n: "count()", total: "sum(v)"}}
  sink: {{topic: {output}}}
  checkpoint: {{storage: "{storage_url}", interval: 300ms}}
"#
    );
    let spec = oxbow_crds::parse_manifest(&yaml).unwrap().spec;
    let topics = BTreeMap::from([(input.clone(), PARTITIONS)]);
    let name = unique_name("crash");
    let job = JobFile::new(
        "test",
        &name,
        1,
        spec,
        assign(&topics, 1, None),
        Restore::LatestCheckpoint,
    );
    let group = job.consumer_group();
    let file = dir.join("job.json");
    std::fs::write(&file, serde_json::to_string(&job).unwrap()).unwrap();
    Job {
        file,
        dir,
        input,
        output,
        group,
        env,
    }
}

fn start_worker(job: &Job) -> Child {
    Command::new(worker_binary())
        .args(["run", "--job"])
        .arg(&job.file)
        .args(["--ordinal", "0", "--admin-addr", "127.0.0.1:0"])
        .env("OXBOW_ADMIN_TOKEN", "test-token")
        .env("OXBOW_LOG", "warn")
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        .spawn()
        .unwrap()
}

/// Committed offsets of the job's group, summed over the input partitions.
fn committed(bootstrap: &str, job: &Job) -> i64 {
    let consumer: BaseConsumer = kafka::config(bootstrap)
        .set("group.id", &job.group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(&job.input, p);
    }
    let offsets = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    offsets
        .elements()
        .iter()
        .filter_map(|e| e.offset().to_raw())
        .filter(|o| *o >= 0)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kills_lose_and_duplicate_nothing() {
    kills_lose_and_duplicate_nothing(20, Storage::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_checkpoints_on_s3_eight_kills_lose_and_duplicate_nothing() {
    let prefix = unique_name("crash");
    kills_lose_and_duplicate_nothing(8, Storage::S3(prefix.clone())).await;
    // The snapshots are in the bucket, under the job's root.
    use futures_util::TryStreamExt;
    use object_store::ObjectStore;
    let bucket = oxbow_tests::s3::bucket().unwrap();
    let objects: Vec<_> = bucket
        .list(Some(&object_store::path::Path::from(prefix)))
        .try_collect()
        .await
        .unwrap();
    assert!(
        objects
            .iter()
            .any(|o| o.location.as_ref().contains("/state/")
                && o.location.as_ref().ends_with(".snap")),
        "{objects:?}"
    );
}

async fn kills_lose_and_duplicate_nothing(kills: usize, storage: Storage) {
    let bootstrap = kafka::bootstrap();
    let job = write_job(&bootstrap, &storage);
    kafka::create_topic(&bootstrap, &job.input, PARTITIONS)
        .await
        .unwrap();
    kafka::create_topic(&bootstrap, &job.output, 1)
        .await
        .unwrap();
    let base = now_ms() - now_ms() % 1000;

    // Input flows for the whole test: event i has time base + 25 i, key i % KEYS.
    let done = Arc::new(AtomicBool::new(false));
    let producer_task = {
        let (bootstrap, input, done) = (bootstrap.clone(), job.input.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let producer: FutureProducer = kafka::config(&bootstrap).create().unwrap();
            let mut events = Vec::new();
            let mut i: i64 = 0;
            while !done.load(Ordering::Relaxed) {
                for _ in 0..20 {
                    let event = (i % KEYS, i % 97, base + 25 * i);
                    kafka::send_event(&producer, &input, partition_of(event.0), event)
                        .await
                        .unwrap();
                    events.push(event);
                    i += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            events
        })
    };

    // SIGKILLs at random moments.
    let mut seed: u64 = 0x5EED ^ (now_ms() as u64);
    for _ in 0..kills {
        let mut child = start_worker(&job);
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let life = Duration::from_millis(300 + (seed >> 33) % 1500);
        tokio::time::sleep(life).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let mut events = producer_task.await.unwrap();

    // Close every window of every key with one record per key far ahead, then let a last
    // worker catch up and stop it gracefully.
    let closing = base + 25 * events.len() as i64 + 10_000;
    let producer: FutureProducer = kafka::config(&bootstrap).create().unwrap();
    for k in 0..KEYS {
        kafka::send_event(&producer, &job.input, partition_of(k), (k, 0, closing))
            .await
            .unwrap();
        events.push((k, 0, closing));
    }
    let total = events.len() as i64;
    let mut last = start_worker(&job);
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(&bootstrap, &job) < total {
        assert!(
            Instant::now() < deadline,
            "the last worker did not catch up: {} of {total} committed",
            committed(&bootstrap, &job)
        );
        assert!(
            last.try_wait().unwrap().is_none(),
            "the last worker exited early"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = last.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = last.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM ends the worker cleanly: {status}"
    );

    // Exactly the expected windows, each once.
    let mut want: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for (k, v, ts) in &events {
        if *ts < closing {
            let w = want.entry((*k, ts - ts % 1000)).or_default();
            w.0 += 1;
            w.1 += v;
        }
    }
    let want: Vec<(i64, i64, i64, i64)> = want
        .into_iter()
        .map(|((k, s), (n, t))| (k, s, n, t))
        .collect();
    let values = kafka::read_all(
        &bootstrap,
        &job.output,
        1,
        "read_committed",
        Duration::from_secs(3),
    )
    .unwrap();
    let mut got: Vec<(i64, i64, i64, i64)> = values
        .iter()
        .map(|v| {
            let row: serde_json::Value = serde_json::from_str(v).unwrap();
            let int = |f: &str| row[f].as_i64().unwrap_or_else(|| panic!("{f} in {v}"));
            (int("k"), int("window_start"), int("n"), int("total"))
        })
        .collect();
    got.sort();
    assert!(
        want.len() > 20,
        "the test produced too little to mean anything: {} windows",
        want.len()
    );
    assert_eq!(
        got.len(),
        want.len(),
        "{} results for {} windows",
        got.len(),
        want.len()
    );
    assert_eq!(got, want);
    std::fs::remove_dir_all(&job.dir).ok();
}
