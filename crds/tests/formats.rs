//! The formats that cross between operator and worker survive a round trip, and refuse what
//! they should.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use oxbow_crds::{
    admin::{SavepointRequest, SavepointResult, SavepointState, WorkerState, WorkerStatus},
    assignment::assign,
    jobfile::{JOB_FILE_API_VERSION, JobFile, JobFileError, Restore},
    parse_manifest,
};
use std::collections::BTreeMap;

fn job_file() -> JobFile {
    let text = std::fs::read_to_string(format!(
        "{}/../manifests/examples/fraud-detector.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let job = parse_manifest(&text).unwrap();
    let topics = BTreeMap::from([("payments".to_owned(), 6)]);
    JobFile::new(
        "prod",
        "fraud-detector",
        3,
        job.spec,
        assign(&topics, 2, None),
        Restore::Savepoint {
            path: "s3://b/prod/fraud-detector/savepoints/sp-1".into(),
        },
    )
}

#[test]
fn the_job_file_round_trips() {
    let file = job_file();
    let json = serde_json::to_string(&file).unwrap();
    assert!(json.contains(&format!("\"apiVersion\":\"{JOB_FILE_API_VERSION}\"")));
    assert!(json.contains("\"from\":\"savepoint\""), "{json}");
    assert_eq!(JobFile::from_json(&json).unwrap(), file);
    assert_eq!(file.consumer_group(), "oxbow.prod.fraud-detector");
    assert_eq!(file.transactional_id(1), "oxbow.prod.fraud-detector.1");
}

#[test]
fn a_job_file_of_another_version_is_refused_with_a_reason() {
    let mut value = serde_json::to_value(job_file()).unwrap();
    value["apiVersion"] = "oxbow.dev/job/v2".into();
    let err = JobFile::from_json(&value.to_string()).unwrap_err();
    assert!(matches!(err, JobFileError::Version(_)));
    assert!(err.to_string().contains("older than the operator"), "{err}");
    assert!(matches!(
        JobFile::from_json("{}"),
        Err(JobFileError::Parse(_))
    ));
}

#[test]
fn admin_messages_round_trip() {
    let status = WorkerStatus {
        ordinal: 1,
        assignment_generation: 4,
        spec_generation: 7,
        state: WorkerState::Running,
        restored_from: Some("s3://b/sp".into()),
        partitions: Vec::new(),
        last_checkpoint: None,
        state_bytes: 10,
        records_in: 20,
        records_out: 5,
        dead_lettered: 1,
        error: None,
    };
    let json = serde_json::to_string(&status).unwrap();
    assert!(json.contains("\"assignmentGeneration\":4"), "{json}");
    assert_eq!(serde_json::from_str::<WorkerStatus>(&json).unwrap(), status);

    let request: SavepointRequest = serde_json::from_str(r#"{"id":"sp-9"}"#).unwrap();
    assert!(!request.stop, "stop defaults to false");
    let result = SavepointResult {
        id: "sp-9".into(),
        state: SavepointState::Completed,
        path: Some("s3://b/sp-9".into()),
        error: None,
    };
    let json = serde_json::to_string(&result).unwrap();
    assert_eq!(
        serde_json::from_str::<SavepointResult>(&json).unwrap(),
        result
    );
}
