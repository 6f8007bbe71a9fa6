//! End to end: the checkpoint store fails under a running job. The job's checkpoint directory
//! becomes a file, so every checkpoint write fails; the status says CheckpointStale with the
//! checkpoint's age and the last failure. Once the directory is back, checkpoints complete
//! again and every window result reaches the sink exactly once. (The worker used to stay
//! Retrying after the store returned: a failed restore after the abort had it abort again, in
//! librdkafka's state Ready, forever.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::PathBuf, time::Duration};

use oxbow_crds::streamjob::{ConditionType, Phase};
use oxbow_tests::lifecycle::{Setup, is_true};

/// A running job with a 2 s checkpoint timeout (stale after interval + timeout = 2.5 s), input
/// sent, and its checkpoint directory replaced by a file; returns once CheckpointStale is True,
/// with the directory's two paths (where it was, where it went).
async fn checkpoints_failing(setup: &Setup) -> (PathBuf, PathBuf) {
    setup.running(1).await;
    setup
        .patch(serde_json::json!({"spec": {"checkpoint": {"timeout": "2s"}}}))
        .await;
    setup
        .status_when("the new timeout in effect", Duration::from_secs(120), |s| {
            s.observed_generation == Some(2)
                && s.phase == Some(Phase::Running)
                && s.operation.is_none()
                && s.ready_replicas == 1
        })
        .await;
    setup.send(0, 200).await;

    let state = setup.job_root().join("state");
    let away = setup.job_root().join("state-away");
    std::fs::rename(&state, &away).unwrap();
    std::fs::write(&state, b"in the way").unwrap();
    let (status, stale) = setup
        .condition_true(ConditionType::CheckpointStale, Duration::from_secs(90))
        .await;
    assert_eq!(stale.reason, "NoRecentCheckpoint", "{status:#?}");
    assert!(stale.message.contains("ago"), "{stale:?}");
    assert_eq!(status.phase, Some(Phase::Running), "{status:#?}");
    (state, away)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_checkpoint_store_shows_as_checkpoint_stale() {
    let setup = Setup::start("ckpt-outage", 1).await;
    checkpoints_failing(&setup).await;
    // Records keep arriving and nothing commits: after a minute LagHigh says so too.
    let (status, lag) = setup
        .condition_true(ConditionType::LagHigh, Duration::from_secs(120))
        .await;
    assert_eq!(lag.reason, "NotConsuming", "{status:#?}");
    assert!(
        is_true(&status, ConditionType::CheckpointStale),
        "{status:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_checkpoint_store_outage_the_job_recovers_exactly_once() {
    let setup = Setup::start("ckpt-recover", 1).await;
    let (state, away) = checkpoints_failing(&setup).await;
    std::fs::remove_file(&state).unwrap();
    std::fs::rename(&away, &state).unwrap();
    setup
        .status_when("checkpoints fresh again", Duration::from_secs(90), |s| {
            !is_true(s, ConditionType::CheckpointStale)
                && is_true(s, ConditionType::Ready)
                && s.phase == Some(Phase::Running)
        })
        .await;
    setup.send(200, 300).await;
    setup.finish(300).await;
}
