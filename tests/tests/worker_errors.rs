//! Bad configuration of `oxbow-worker run`: each gets a clear error naming what is wrong and a
//! non-zero exit, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use oxbow_tests::{
    kafka, scratch_dir, unique_name,
    windows::{self, Window},
    worker,
};

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

/// A valid job file for `bootstrap` and `storage`, with `kafka` entries added to `spec.kafka`.
fn job_file(dir: &Path, bootstrap: &str, storage: &str, kafka: &[&str]) -> PathBuf {
    let window = Window {
        grace_seconds: None,
        total: false,
        ..Window::default()
    };
    let mut manifest = windows::job("errors", bootstrap, "in", "out", storage, &window)
        .checkpoint("interval: 1s")
        .checkpoint("timeout: 3s");
    for entry in kafka {
        manifest = manifest.kafka(entry);
    }
    let job = worker::job_file(
        &unique_name("errors"),
        manifest.job_spec().unwrap(),
        &[("in", 1)],
        1,
    );
    let path = dir.join(unique_name("job"));
    worker::write_job_file(&job, &path).unwrap();
    path
}

/// A job file holding `contents` is refused with `says` in the message.
fn refused(contents: &str, says: &[&str]) {
    let dir = scratch_dir("oxbow-errors");
    let path = dir.join("job.json");
    std::fs::write(&path, contents).unwrap();
    assert_fails(&run(&dir, &path, &[]), says);
}

#[test]
fn a_missing_job_file_is_named() {
    let dir = scratch_dir("oxbow-errors");
    let missing = dir.join("nope.json");
    let out = run(&dir, &missing, &[]);
    assert_fails(&out, &["nope.json"]);
}

#[test]
fn a_job_file_that_is_not_json_is_refused() {
    refused("apiVersion: [", &["failed to load the job file"]);
}

#[test]
fn a_job_file_from_another_format_version_is_refused() {
    refused(
        r#"{"apiVersion": "oxbow.dev/job/v9"}"#,
        &["oxbow.dev/job/v9", "not supported"],
    );
}

#[test]
fn an_invalid_spec_is_refused_with_its_path() {
    let dir = scratch_dir("oxbow-errors");
    let good = job_file(&dir, "127.0.0.1:9", "file:///tmp", &[]);
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
    let dir = scratch_dir("oxbow-errors");
    let job = job_file(
        &dir,
        "127.0.0.1:9",
        "file:///tmp",
        &["security: {protocol: SASL_PLAINTEXT, mechanism: PLAIN, secretRef: {name: kafka-creds}}"],
    );
    assert_fails(&run(&dir, &job, &[]), &["username"]);
}

#[test]
fn an_unreachable_broker_fails_the_start_with_the_reason() {
    let dir = scratch_dir("oxbow-errors");
    let port = worker::free_port();
    let job = job_file(&dir, &format!("127.0.0.1:{port}"), "file:///tmp", &[]);
    assert_fails(
        &run(&dir, &job, &[]),
        &["failed to initialize transactions"],
    );
}

#[test]
fn an_unreachable_store_fails_the_start_with_the_reason() {
    let dir = scratch_dir("oxbow-errors");
    let port = worker::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let job = job_file(&dir, &kafka::bootstrap(), "s3://nowhere/prefix", &[]);
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
