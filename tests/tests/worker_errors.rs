//! Bad configuration of `oxbow-worker run`: each gets a clear error naming what is wrong and a
//! non-zero exit, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use oxbow_crds::{
    assignment::assign,
    jobfile::{JobFile, Restore},
};
use oxbow_tests::{kafka, unique_name, worker};

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

fn run(dir: &Path, job: &Path, env: &[(&str, &str)]) -> Outcome {
    let output = Command::new(worker::binary())
        .args(["run", "--job"])
        .arg(job)
        .args(["--ordinal", "0", "--admin-addr", "127.0.0.1:0"])
        .args(["--kafka-timeout", "3s"])
        .env("OXBOW_ADMIN_TOKEN", worker::TOKEN)
        .env("OXBOW_KAFKA_SECRET_DIR", dir.join("no-secret"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !stderr.contains("panicked"),
        "the worker panicked instead of reporting: {stderr}"
    );
    Outcome {
        code: output.status.code(),
        stderr,
    }
}

fn assert_fails(outcome: &Outcome, says: &[&str]) {
    assert!(
        outcome.code.is_some_and(|c| c != 0),
        "exit {:?}; stderr: {}",
        outcome.code,
        outcome.stderr
    );
    for s in says {
        assert!(
            outcome.stderr.contains(s),
            "stderr does not say {s:?}: {}",
            outcome.stderr
        );
    }
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("oxbow-errors"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A valid job file for `bootstrap` and `storage`, with `extra_kafka` added to `spec.kafka`.
fn job_file(dir: &Path, bootstrap: &str, storage: &str, extra_kafka: &str) -> PathBuf {
    let yaml = format!(
        r#"
apiVersion: oxbow.dev/v1alpha1
kind: StreamJob
metadata: {{name: errors}}
spec:
  kafka: {{bootstrapServers: "{bootstrap}"{extra_kafka}}}
  source: {{topics: [in], eventTime: {{field: ts}}, partitionedBy: "k"}}
  pipeline:
    - keyBy: "k"
    - window: {{tumbling: 1s}}
      aggregate: {{n: "count()"}}
  sink: {{topic: out}}
  checkpoint: {{storage: "{storage}", interval: 1s, timeout: 3s}}
"#
    );
    let spec = oxbow_crds::parse_manifest(&yaml).unwrap().spec;
    let job = JobFile::new(
        "test",
        unique_name("errors"),
        1,
        spec,
        assign(
            &std::collections::BTreeMap::from([("in".to_owned(), 1)]),
            1,
            None,
        ),
        Restore::LatestCheckpoint,
    );
    let path = dir.join(unique_name("job"));
    std::fs::write(&path, serde_json::to_string(&job).unwrap()).unwrap();
    path
}

#[test]
fn a_missing_job_file_is_named() {
    let dir = scratch();
    let missing = dir.join("nope.json");
    let out = run(&dir, &missing, &[]);
    assert_fails(&out, &["nope.json"]);
}

#[test]
fn a_job_file_that_is_not_json_is_refused() {
    let dir = scratch();
    let path = dir.join("job.json");
    std::fs::write(&path, "apiVersion: [").unwrap();
    assert_fails(&run(&dir, &path, &[]), &["failed to load the job file"]);
}

#[test]
fn a_job_file_from_another_format_version_is_refused() {
    let dir = scratch();
    let path = dir.join("job.json");
    std::fs::write(&path, r#"{"apiVersion": "oxbow.dev/job/v9"}"#).unwrap();
    assert_fails(
        &run(&dir, &path, &[]),
        &["oxbow.dev/job/v9", "not supported"],
    );
}

#[test]
fn an_invalid_spec_is_refused_with_its_path() {
    let dir = scratch();
    let good = job_file(&dir, "127.0.0.1:9", "file:///tmp", "");
    let mut job: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&good).unwrap()).unwrap();
    job["spec"]["pipeline"] = serde_json::json!([{"filter": "amount >"}]);
    std::fs::write(&good, job.to_string()).unwrap();
    assert_fails(
        &run(&dir, &good, &[]),
        &["the job is invalid", "spec.pipeline[0].filter"],
    );
}

#[test]
fn a_missing_kafka_credential_is_named() {
    let dir = scratch();
    let job = job_file(
        &dir,
        "127.0.0.1:9",
        "file:///tmp",
        ", security: {protocol: SASL_PLAINTEXT, mechanism: PLAIN, secretRef: {name: kafka-creds}}",
    );
    assert_fails(&run(&dir, &job, &[]), &["username"]);
}

#[test]
fn an_unreachable_broker_fails_the_start_with_the_reason() {
    let dir = scratch();
    let port = worker::free_port();
    let job = job_file(&dir, &format!("127.0.0.1:{port}"), "file:///tmp", "");
    assert_fails(
        &run(&dir, &job, &[]),
        &["failed to initialize transactions"],
    );
}

#[test]
fn an_unreachable_store_fails_the_start_with_the_reason() {
    let dir = scratch();
    let port = worker::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let job = job_file(&dir, &kafka::bootstrap(), "s3://nowhere/prefix", "");
    let out = run(
        &dir,
        &job,
        &[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    assert_fails(&out, &["s3://nowhere/prefix"]);
}
