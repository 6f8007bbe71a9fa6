//! The worker's admin API on a real `oxbow-worker run` process: probes, metrics, the bearer
//! token, status, and a stop-with-savepoint after which the worker processes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, time::Duration};

use oxbow_crds::{
    admin::{SavepointResult, SavepointState, WorkerStatus},
    assignment::assign,
    jobfile::{JobFile, Restore},
};
use oxbow_tests::{
    kafka, unique_name,
    worker::{self, WorkerProcess},
};
use rdkafka::producer::FutureProducer;

async fn produce(bootstrap: &str, topic: &str, from: i64, n: i64) {
    let producer: FutureProducer = kafka::config(bootstrap).create().unwrap();
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for i in from..from + n {
        kafka::send_event(&producer, topic, 0, (i % 3, i, base + i))
            .await
            .unwrap();
    }
}

async fn eventually<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    worker::eventually(what, Duration::from_secs(60), check)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_reports_and_stops_the_worker_with_a_savepoint() {
    let bootstrap = kafka::bootstrap();
    let (input, output) = (unique_name("admin-in"), unique_name("admin-out"));
    kafka::create_topic(&bootstrap, &input, 1).await.unwrap();
    kafka::create_topic(&bootstrap, &output, 1).await.unwrap();
    let dir = std::env::temp_dir().join(unique_name("oxbow-admin"));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = format!(
        r#"
apiVersion: oxbow.dev/v1alpha1
kind: StreamJob
metadata: {{name: admin}}
spec:
  kafka: {{bootstrapServers: "{bootstrap}"}}
  source: {{topics: [{input}], eventTime: {{field: ts}}, partitionedBy: "k"}}
  pipeline:
    - keyBy: "k"
    - window: {{tumbling: 1h}}
      aggregate: {{n: "count()"}}
  sink: {{topic: {output}}}
  checkpoint: {{storage: "file://{}", interval: 1s}}
"#,
        dir.display()
    );
    let spec = oxbow_crds::parse_manifest(&yaml).unwrap().spec;
    let name = unique_name("admin");
    let job = JobFile::new(
        "test",
        &name,
        1,
        spec,
        assign(&BTreeMap::from([(input.clone(), 1)]), 1, None),
        Restore::LatestCheckpoint,
    );
    let file = dir.join("job.json");
    std::fs::write(&file, serde_json::to_string(&job).unwrap()).unwrap();
    let mut child = WorkerProcess::start(&file, 0, &[]).unwrap();
    let port = child.port;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let http = reqwest::Client::new();
    produce(&bootstrap, &input, 0, 10).await;

    eventually("/readyz to answer 200", async || {
        let r = http.get(url("/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
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
    let status: WorkerStatus = eventually("the status to count 10 records", async || {
        child.status().await.filter(|s| s.records_in == 10)
    })
    .await;
    assert_eq!(status.partitions.len(), 1);
    assert_eq!(status.partitions[0].position, 10);
    eventually(
        "metrics to count the records and a checkpoint",
        async || {
            let text = child.metrics().await?;
            let counted =
                format!("oxbow_worker_records_in_total{{topic=\"{input}\",partition=\"0\"}} 10");
            (text.contains(&counted) && text.contains("oxbow_worker_checkpoints_total"))
                .then_some(())
        },
    )
    .await;

    // Stop with a savepoint.
    let accepted = http
        .post(url("/v1/savepoints"))
        .bearer_auth(worker::TOKEN)
        .json(&serde_json::json!({"id": "sp-admin", "stop": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let done: SavepointResult = eventually("the savepoint to complete", async || {
        let r: SavepointResult = http
            .get(url("/v1/savepoints/sp-admin"))
            .bearer_auth(worker::TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (r.state != SavepointState::InProgress).then_some(r)
    })
    .await;
    assert_eq!(done.state, SavepointState::Completed, "{done:?}");
    let manifest = dir.join(format!("test/{name}/savepoints/sp-admin/worker-0.json"));
    assert!(manifest.exists(), "{} is missing", manifest.display());
    assert!(done.path.unwrap().ends_with("/savepoints/sp-admin"));

    // Idle: not ready, and nothing more is processed.
    eventually("/readyz to answer 503", async || {
        let r = http.get(url("/readyz")).send().await.ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    produce(&bootstrap, &input, 10, 5).await;
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
