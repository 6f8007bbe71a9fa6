//! The worker's admin API on a real `oxbow-worker run` process: probes, metrics, the bearer
//! token, status, and a stop-with-savepoint after which the worker processes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use oxbow_crds::admin::{SavepointState, WorkerStatus};
use oxbow_tests::{
    eventually, kafka, now_ms, scratch_dir, unique_name,
    windows::{self, Event, Window},
    worker::{self, WorkerProcess},
};

/// Events `from..from + n` for partition 0: key i % 3, value i, time now + i.
fn events(from: i64, n: i64) -> impl Iterator<Item = (i32, Event)> {
    let base = now_ms();
    (from..from + n).map(move |i| (0, (i % 3, i, base + i)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_reports_and_stops_the_worker_with_a_savepoint() {
    let bootstrap = kafka::bootstrap();
    let (input, output) = kafka::source_and_sink(&bootstrap, "admin", 1)
        .await
        .unwrap();
    let dir = scratch_dir("oxbow-admin");
    let hourly = Window {
        size: "1h",
        grace_seconds: None,
        total: false,
        ..Window::default()
    };
    let storage = format!("file://{}", dir.display());
    let spec = windows::job("admin", &bootstrap, &input, &output, &storage, &hourly)
        .checkpoint("interval: 1s")
        .job_spec()
        .unwrap();
    let name = unique_name("admin");
    let job = worker::job_file(&name, spec, &[(&input, 1)], 1);
    let file = dir.join("job.json");
    worker::write_job_file(&job, &file).unwrap();
    let mut child = WorkerProcess::start(&file, 0, &[]).unwrap();
    let port = child.port;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let http = reqwest::Client::new();
    let producer = kafka::producer(&bootstrap).unwrap();
    kafka::produce(&producer, &input, events(0, 10))
        .await
        .unwrap();

    let minute = Duration::from_secs(60);
    eventually("/readyz to answer 200", minute, async || {
        let r = http.get(url("/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        http.get(url("/healthz")).send().await.unwrap().status(),
        200
    );

    // The API wants the token.
    assert_eq!(
        http.get(url("/v1/status")).send().await.unwrap().status(),
        401
    );
    assert_eq!(
        http.get(url("/v1/status"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let status: WorkerStatus = eventually("the status to count 10 records", minute, async || {
        child.status().await.filter(|s| s.records_in == 10)
    })
    .await
    .unwrap();
    assert_eq!(status.partitions.len(), 1);
    assert_eq!(status.partitions[0].position, 10);
    eventually(
        "metrics to count the records and a checkpoint",
        minute,
        async || {
            let text = child.metrics().await?;
            let counted =
                format!("oxbow_worker_records_in_total{{topic=\"{input}\",partition=\"0\"}} 10");
            (text.contains(&counted) && text.contains("oxbow_worker_checkpoints_total"))
                .then_some(())
        },
    )
    .await
    .unwrap();

    // Stop with a savepoint.
    assert_eq!(
        child.request_savepoint("sp-admin", true).await.unwrap(),
        202
    );
    let done = child.savepoint_result("sp-admin").await.unwrap();
    assert_eq!(done.state, SavepointState::Completed, "{done:?}");
    let manifest = dir.join(format!("test/{name}/savepoints/sp-admin/worker-0.json"));
    assert!(manifest.exists(), "{} is missing", manifest.display());
    assert!(done.path.unwrap().ends_with("/savepoints/sp-admin"));

    // Idle: not ready, and nothing more is processed.
    eventually("/readyz to answer 503", minute, async || {
        let r = http.get(url("/readyz")).send().await.ok()?;
        (r.status() == 503).then_some(())
    })
    .await
    .unwrap();
    kafka::produce(&producer, &input, events(10, 5))
        .await
        .unwrap();
    // The point is that nothing happens: time in which a consuming worker would read them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status: WorkerStatus = child.status().await.unwrap();
    assert_eq!(status.records_in, 10, "an idle worker consumes nothing");
    assert_eq!(
        http.get(url("/v1/savepoints/nope"))
            .bearer_auth(worker::TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    assert!(child.terminate().unwrap().success());
    std::fs::remove_dir_all(&dir).ok();
}
