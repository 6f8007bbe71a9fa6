//! `oxbow-worker bench recovery --bootstrap HOST:PORT`: how long a worker process takes to
//! process again after SIGKILL, and how much memory it holds idle and under load.
//!
//! Runs the reference job exactly-once (1 s checkpoints, local-file storage) as real
//! `oxbow-worker run` processes (this binary) while a producer feeds 2000 events/s. Each round
//! kills the worker, starts its successor at once, and times the successor's restore (`/readyz`
//! answering 200) and its first processed record (`records_in` in `/metrics` moving). Resident
//! memory is read from `/proc/<pid>/status` under load and after a few idle seconds.

use std::{
    process::{Child, Command},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    BenchError,
    kafka::{create_topics, producer, send},
    reference::{Generator, encode_event, reference_job_file},
};

const ROUNDS: usize = 5;
const TOKEN: &str = "bench";

/// A worker's admin API on loopback.
struct Admin {
    client: reqwest::Client,
    io: tokio::runtime::Runtime,
}

impl Admin {
    fn new() -> Result<Self, BenchError> {
        let io = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BenchError::io("start an I/O runtime"))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| BenchError::Io {
                action: "create an HTTP client",
                source: std::io::Error::other(e),
            })?;
        Ok(Admin { client, io })
    }

    /// `GET path` on the worker at `port`: (status, body), or `None` while it does not answer.
    fn get(&self, port: u16, path: &str) -> Option<(u16, String)> {
        self.io.block_on(async {
            let response = self
                .client
                .get(format!("http://127.0.0.1:{port}{path}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .ok()?;
            let status = response.status().as_u16();
            Some((status, response.text().await.ok()?))
        })
    }

    /// Records this process consumed, from its metrics.
    fn records_in(&self, port: u16) -> Option<u64> {
        let (_, body) = self.get(port, "/metrics")?;
        Some(
            body.lines()
                .filter(|l| l.starts_with("oxbow_worker_records_in_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum(),
        )
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn free_port() -> Result<u16, BenchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(BenchError::io("find a free port"))
}

struct Process {
    child: Child,
    port: u16,
}

fn spawn(job: &std::path::Path) -> Result<Process, BenchError> {
    let port = free_port()?;
    let exe = std::env::current_exe().map_err(BenchError::io("find this executable"))?;
    let child = Command::new(exe)
        .args(["run", "--job"])
        .arg(job)
        .args([
            "--ordinal",
            "0",
            "--admin-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("OXBOW_ADMIN_TOKEN", TOKEN)
        .env("OXBOW_LOG", "error")
        .spawn()
        .map_err(BenchError::io("start a worker"))?;
    Ok(Process { child, port })
}

/// Polls `check` every 5 ms (the resolution of the measurement) for up to a minute.
fn wait_until(what: &'static str, mut check: impl FnMut() -> bool) -> Result<Duration, BenchError> {
    let started = Instant::now();
    while !check() {
        if started.elapsed() > Duration::from_secs(60) {
            return Err(BenchError::Timeout(what));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(started.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Runs the measurement against `bootstrap`.
pub fn run(bootstrap: &str) -> Result<String, BenchError> {
    let id = format!(
        "{}-{:x}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let (input, output) = (format!("bench-rec-in-{id}"), format!("bench-rec-out-{id}"));
    create_topics(bootstrap, &[&input, &output])?;
    let dir = std::env::temp_dir().join(format!("oxbow-bench-recovery-{id}"));
    std::fs::create_dir_all(&dir).map_err(BenchError::io("create the checkpoint directory"))?;
    let job = reference_job_file(
        &format!("recovery-{id}"),
        bootstrap,
        &input,
        &output,
        &dir,
        "1s",
    )?;
    let job_path = dir.join("job.json");
    let json = serde_json::to_string(&job).map_err(|e| BenchError::ReferenceJob(e.to_string()))?;
    std::fs::write(&job_path, json).map_err(BenchError::io("write the job file"))?;

    // 2000 events/s with event times following the clock.
    let stop = Arc::new(AtomicBool::new(false));
    let feeding = Arc::new(AtomicBool::new(true));
    let feeder = {
        let (bootstrap, input, stop, feeding) = (
            bootstrap.to_owned(),
            input.clone(),
            Arc::clone(&stop),
            Arc::clone(&feeding),
        );
        std::thread::spawn(move || -> Result<(), BenchError> {
            let p = producer(&bootstrap)?;
            let mut generator = Generator::new();
            let mut buf = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if feeding.load(Ordering::Relaxed) {
                    for _ in 0..20 {
                        let mut e = generator.next_event();
                        e.ts = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                            .unwrap_or_default();
                        buf.clear();
                        encode_event(&mut buf, &e);
                        send(&p, &input, &buf)?;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })
    };

    let result = (|| -> Result<String, BenchError> {
        let admin = Admin::new()?;
        let mut worker = spawn(&job_path)?;
        wait_until("the first worker to process", || {
            admin.records_in(worker.port).is_some_and(|n| n > 0)
        })?;
        std::thread::sleep(Duration::from_secs(3));
        let rss_load = rss_kib(worker.child.id()).unwrap_or_default();
        let (mut to_ready, mut to_processing) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            std::thread::sleep(Duration::from_millis(1500));
            worker
                .child
                .kill()
                .map_err(BenchError::io("kill the worker"))?;
            let killed = Instant::now();
            worker
                .child
                .wait()
                .map_err(BenchError::io("wait for the killed worker"))?;
            worker = spawn(&job_path)?;
            let port = worker.port;
            wait_until("/readyz", || {
                admin.get(port, "/readyz").is_some_and(|(s, _)| s == 200)
            })?;
            to_ready.push(killed.elapsed());
            wait_until("the first record", || {
                admin.records_in(port).is_some_and(|n| n > 0)
            })?;
            to_processing.push(killed.elapsed());
        }
        feeding.store(false, Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(5));
        let rss_idle = rss_kib(worker.child.id()).unwrap_or_default();
        worker.child.kill().ok();
        worker.child.wait().ok();
        let (ready, processing) = (median(to_ready), median(to_processing));
        Ok(format!(
            "rounds={ROUNDS}\n\
             kill_to_ready_ms_median={}\n\
             kill_to_processing_ms_median={}\n\
             rss_idle_kib={rss_idle}\n\
             rss_load_kib={rss_load}\n\
             (reference job exactly-once, 1 s checkpoints, 2000 events/s; target: processing again under 2 s, idle memory under 64 MB)",
            ready.as_millis(),
            processing.as_millis(),
        ))
    })();
    stop.store(true, Ordering::Relaxed);
    let fed = feeder.join().map_err(|_| BenchError::Panicked("feeder"))?;
    std::fs::remove_dir_all(&dir).ok();
    fed?;
    result
}
