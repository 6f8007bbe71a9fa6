//! The operator with 100 StreamJobs: reconcile latency, resident memory and CPU.
//!
//! Starts the real `oxbow-operator run` binary (the release build when one exists, else the
//! debug build; the output says which) against the test control plane and broker, creates
//! 100 StreamJobs of two replicas in one namespace, each reading its own 4-partition topic,
//! and reports: the time from each create to the job's `status.phase` being set; the
//! operator's resident memory (`VmRSS`) idle, once all jobs are reconciled, and after a minute
//! of steady state, in which the operator resyncs every job and reads its Kafka offsets; and
//! the CPU time it used over that minute.
//!
//! ```sh
//! cargo build --release -p oxbow-operator
//! eval "$(bash tests/env/up.sh k8s kafka)"
//! cargo bench -p oxbow-tests --bench operator_scale
//! ```
//!
//! `OXBOW_BENCH_JOBS` (default 100) and `OXBOW_BENCH_STEADY_SECS` (default 60) change the
//! scale; `OXBOW_BENCH_KAFKA_PROPERTIES=name=value,...` adds librdkafka properties to every
//! job's `spec.kafka.properties`, which the operator's Kafka reads use too.
//!
//! No kubelet runs, so the worker pods stay Pending and every job stays Deploying: this
//! measures the operator's own cost per job, not the workers'. Latencies depend on what else
//! the machine runs (the table ends with its load average); CPU time and memory much less.
//! The namespace, jobs and topics are left to the environment's teardown.

#![allow(clippy::print_stdout, missing_docs)]

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt};
use kube::{
    Api,
    api::{ListParams, PostParams, WatchEvent, WatchParams},
};
use oxbow_crds::StreamJob;
use oxbow_tests::{
    eventually, kafka, kube_env, manifest,
    operator::{self, OperatorProcess, Replica, sample},
    unique_name,
};

/// The README's target for the operator's resident memory with 100 jobs.
const RSS_TARGET_MB: f64 = 50.0;
const PARTITIONS: i32 = 4;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("operator_scale failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn setting(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name} must be a whole number, not {v:?}")),
        Err(_) => Ok(default),
    }
}

/// `OXBOW_BENCH_KAFKA_PROPERTIES`: `name=value` pairs separated by commas.
fn kafka_properties() -> anyhow::Result<BTreeMap<String, String>> {
    let Ok(text) = std::env::var("OXBOW_BENCH_KAFKA_PROPERTIES") else {
        return Ok(BTreeMap::new());
    };
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .with_context(|| format!("OXBOW_BENCH_KAFKA_PROPERTIES: {p:?} is not name=value"))
        })
        .collect()
}

async fn run() -> anyhow::Result<()> {
    let jobs_n = usize::try_from(setting("OXBOW_BENCH_JOBS", 100)?)?;
    let steady = Duration::from_secs(setting("OXBOW_BENCH_STEADY_SECS", 60)?);
    let properties = kafka_properties()?;
    let (binary, build) = match operator::binary_of_profile("release") {
        release if release.exists() => (release, "release"),
        _ => (operator::binary_of_profile("debug"), "debug"),
    };
    println!(
        "operator_scale: {jobs_n} StreamJobs x 2 replicas, {PARTITIONS} source partitions each; operator binary: {build} build"
    );
    if !properties.is_empty() {
        println!("  every job's spec.kafka.properties: {properties:?}");
    }
    if build == "debug" {
        println!(
            "  (no release build found: `cargo build --release -p oxbow-operator` for numbers that mean something)"
        );
    }

    let client = kube_env::client().await?;
    kube_env::install_crd(&client).await?;
    let namespace = kube_env::test_namespace(&client, "op-scale").await?;
    let bootstrap = kafka::bootstrap();
    let prefix = unique_name("scale");
    let load_before = load_average();
    let started = Instant::now();
    for i in 0..jobs_n {
        kafka::create_topic(&bootstrap, &format!("{prefix}-{i}"), PARTITIONS).await?;
    }
    println!(
        "  created {jobs_n} topics in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let replica = Replica {
        namespace: namespace.clone(),
        pod_name: "op-bench".into(),
        lease_name: unique_name("oxbow-operator"),
    };
    let process = OperatorProcess::start(&binary, &replica)?;
    let pid = process.pid().context("the operator is not running")?;
    eventually(
        "the operator to lead",
        Duration::from_secs(30),
        async || (process.is_leader().await? && process.get("/readyz").await? == 200).then_some(()),
    )
    .await?;
    // A few seconds of leading with no job: the idle footprint being measured.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = Proc::read(pid)?;

    // Watch for phases before creating, so that no status is missed.
    let api: Api<StreamJob> = Api::namespaced(client.clone(), &namespace);
    let version = api
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .context("the list has no resourceVersion")?;
    let phased: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch = tokio::spawn({
        let (api, phased) = (api.clone(), Arc::clone(&phased));
        async move { watch_phases(api, version, jobs_n, phased).await }
    });

    let mut created = HashMap::new();
    let first_create = Instant::now();
    for i in 0..jobs_n {
        let name = format!("job-{i:03}");
        let topic = format!("{prefix}-{i}");
        let mut job = manifest::filter_job(&name, &bootstrap, &topic, "amount > 0").stream_job()?;
        job.spec.kafka.properties.extend(properties.clone());
        created.insert(name, Instant::now());
        api.create(&PostParams::default(), &job).await?;
    }
    let creates_took = first_create.elapsed();
    match tokio::time::timeout(Duration::from_secs(300), watch).await {
        Ok(joined) => joined.context("the watch task failed")??,
        Err(_) => bail!(
            "only {} of {jobs_n} jobs had a phase after 300 s",
            phased.lock().map(|p| p.len()).unwrap_or(0)
        ),
    }
    let phased = phased.lock().map(|p| p.clone()).unwrap_or_default();
    let all_reconciled = phased
        .values()
        .max()
        .map(|t| t.duration_since(first_create));
    let mut latencies: Vec<Duration> = created
        .iter()
        .filter_map(|(name, at)| phased.get(name).map(|p| p.duration_since(*at)))
        .collect();
    latencies.sort();
    let reconciled = Proc::read(pid)?;

    // Steady state: every job resyncs on its own timer.
    let before = process.metrics().await.unwrap_or_default();
    let steady_from = Instant::now();
    let mut peak = reconciled;
    while steady_from.elapsed() < steady {
        // Sampling the steady state over time is what is measured.
        tokio::time::sleep(Duration::from_secs(5)).await;
        peak = peak.max_with(&Proc::read(pid)?);
    }
    let after_steady = Proc::read(pid)?;
    let steady_took = steady_from.elapsed();
    let after = process.metrics().await.unwrap_or_default();
    let delta = |series: &str| {
        sample(&after, series).unwrap_or(0.0) - sample(&before, series).unwrap_or(0.0)
    };
    let reconciles_ok = delta("oxbow_operator_reconciles_total{result=\"ok\"}");
    let reconciles_error = delta("oxbow_operator_reconciles_total{result=\"error\"}");
    let duration_sum = delta("oxbow_operator_reconcile_duration_seconds_sum");
    let duration_count = delta("oxbow_operator_reconcile_duration_seconds_count");
    let cpu = after_steady.cpu_seconds - reconciled.cpu_seconds;

    let pct = |q: f64| percentile(&latencies, q);
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let rows: Vec<(String, String)> = vec![
        (
            "reconcile latency, create -> status.phase: median / p90 / max".into(),
            format!(
                "{} / {} / {}",
                secs(pct(0.5)),
                secs(pct(0.9)),
                secs(latencies.last().copied())
            ),
        ),
        (
            format!("{jobs_n} creates sent / all {jobs_n} phased, from the first create"),
            format!("{} / {}", secs(Some(creates_took)), secs(all_reconciled)),
        ),
        ("RSS idle (leader, no jobs)".into(), idle.rss()),
        (
            format!("RSS once all {jobs_n} reconciled"),
            reconciled.rss(),
        ),
        (
            format!("RSS after {} s steady state", steady_took.as_secs()),
            after_steady.rss(),
        ),
        ("RSS highest sample (every 5 s) / VmHWM".into(), {
            format!("{} / {:.1} MB", peak.rss(), after_steady.hwm_mb)
        }),
        (
            "threads idle / all reconciled / highest sample".into(),
            format!(
                "{} / {} / {}",
                idle.threads, reconciled.threads, peak.threads
            ),
        ),
        (
            format!(
                "CPU (utime+stime) over {} s steady state",
                steady_took.as_secs()
            ),
            format!(
                "{cpu:.2} s ({:.1} % of one core)",
                100.0 * cpu / steady_took.as_secs_f64()
            ),
        ),
        (
            "reconciles in steady state: ok / error, mean duration".into(),
            format!(
                "{reconciles_ok:.0} / {reconciles_error:.0} ({:.1}/s), {:.1} ms",
                (reconciles_ok + reconciles_error) / steady_took.as_secs_f64(),
                1000.0 * duration_sum / duration_count.max(1.0)
            ),
        ),
        (
            format!("RSS after steady state / {RSS_TARGET_MB} MB target"),
            format!("{:.2}", after_steady.rss_mb / RSS_TARGET_MB),
        ),
        (
            format!("machine load average (1 min) at start / end, on {cores} cores"),
            format!("{load_before} / {}", load_average()),
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!("\n| {:width$} | value |", "measure");
    println!("|{}|-------|", "-".repeat(width + 2));
    for (k, v) in &rows {
        println!("| {k:width$} | {v} |");
    }
    if after_steady.rss_mb > RSS_TARGET_MB {
        println!(
            "\nresident memory is above the {RSS_TARGET_MB} MB target ({:.1} MB)",
            after_steady.rss_mb
        );
    }
    if latencies.len() < jobs_n {
        bail!("{} of {jobs_n} jobs had a phase", latencies.len());
    }
    Ok(())
}

/// Records when each job is first seen with a phase, until `n` have one.
async fn watch_phases(
    api: Api<StreamJob>,
    mut version: String,
    n: usize,
    phased: Arc<Mutex<HashMap<String, Instant>>>,
) -> anyhow::Result<()> {
    loop {
        let mut events = api
            .watch(&WatchParams::default().timeout(290), &version)
            .await
            .context("failed to watch the StreamJobs")?
            .boxed();
        while let Some(event) = events.try_next().await? {
            let job = match event {
                WatchEvent::Added(job) | WatchEvent::Modified(job) => job,
                WatchEvent::Bookmark(b) => {
                    version = b.metadata.resource_version;
                    continue;
                }
                WatchEvent::Deleted(_) => continue,
                WatchEvent::Error(e) => bail!("the watch failed: {e}"),
            };
            if let Some(v) = &job.metadata.resource_version {
                version.clone_from(v);
            }
            let has_phase = job.status.as_ref().is_some_and(|s| s.phase.is_some());
            let Some(name) = job.metadata.name.filter(|_| has_phase) else {
                continue;
            };
            let mut phased = phased
                .lock()
                .map_err(|_| anyhow::anyhow!("the phase map is poisoned"))?;
            phased.entry(name).or_insert_with(Instant::now);
            if phased.len() >= n {
                return Ok(());
            }
        }
    }
}

/// What `/proc/<pid>` says about the operator at one time.
#[derive(Clone, Copy, Debug)]
struct Proc {
    rss_mb: f64,
    hwm_mb: f64,
    threads: u64,
    cpu_seconds: f64,
}

impl Proc {
    fn read(pid: u32) -> anyhow::Result<Proc> {
        let dir = Path::new("/proc").join(pid.to_string());
        let status = std::fs::read_to_string(dir.join("status"))
            .context("failed to read the operator's /proc status (has it exited?)")?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .with_context(|| format!("no {name} in /proc/{pid}/status"))
        };
        let kb_to_mb = |kb: u64| kb as f64 / 1024.0;
        let stat = std::fs::read_to_string(dir.join("stat"))
            .context("failed to read the operator's /proc stat")?;
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let after_name = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
        let (Some(utime), Some(stime)) = (ticks(14), ticks(15)) else {
            bail!("failed to parse /proc/{pid}/stat");
        };
        Ok(Proc {
            rss_mb: kb_to_mb(field("VmRSS:")?),
            hwm_mb: kb_to_mb(field("VmHWM:")?),
            threads: field("Threads:")?,
            cpu_seconds: (utime + stime) as f64 / clock_ticks_per_second(),
        })
    }

    fn rss(&self) -> String {
        format!("{:.1} MB", self.rss_mb)
    }

    fn max_with(self, other: &Proc) -> Proc {
        Proc {
            rss_mb: self.rss_mb.max(other.rss_mb),
            hwm_mb: self.hwm_mb.max(other.hwm_mb),
            threads: self.threads.max(other.threads),
            cpu_seconds: self.cpu_seconds.max(other.cpu_seconds),
        }
    }
}

/// `getconf CLK_TCK`: the unit of utime and stime (100 on Linux unless configured otherwise).
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The 1-minute load average: other work on the machine skews latencies (not CPU time).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "-".into())
}

fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}
