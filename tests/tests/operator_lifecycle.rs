//! End to end: the operator against the real control plane, with the stand-in kubelet running
//! each worker pod as a real `oxbow-worker` process against a real broker. A StreamJob deploys,
//! its two workers restore and process, every window result reaches the sink exactly once, and
//! the status says Running and Ready. Then `kubectl scale --replicas=3` (the scale subresource)
//! rescales it through a stop-with-savepoint: three workers restore the savepoint and go on, and
//! the sink still holds every result exactly once. A second job takes a savepoint on a nonce,
//! is suspended and resumed, again losing and doubling nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use oxbow_crds::streamjob::{ConditionType, Phase, SavepointTrigger};
use oxbow_tests::lifecycle::{Setup, is_true};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_job_runs_its_workers_and_delivers_every_result_once() {
    let deployed_at = Instant::now();
    let setup = Setup::start("lifecycle", 2).await;

    // Both workers restore and process: the job is Running and Ready.
    let status = setup.running(2).await;
    let ready_after = deployed_at.elapsed();
    assert!(is_true(&status, ConditionType::Ready), "{status:?}");
    assert!(status.last_stable_spec_hash.is_some(), "{status:?}");
    setup.send(0, 400).await;

    // Rescale to three workers through the scale subresource, as `kubectl scale` does.
    let scale = serde_json::json!({"spec": {"replicas": 3}});
    let rescale_at = Instant::now();
    setup
        .jobs
        .patch_scale("sums", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();
    let status = setup
        .status_when("the rescale to finish", Duration::from_secs(120), |s| {
            s.phase == Some(Phase::Running)
                && s.ready_replicas == 3
                && s.operation.is_none()
                && s.assignment.as_ref().is_some_and(|a| a.workers.len() == 3)
        })
        .await;
    let rescale_took = rescale_at.elapsed();
    let savepoint = status.savepoint.and_then(|s| s.last).expect("a savepoint");
    assert!(savepoint.path.contains("/savepoints/"), "{savepoint:?}");
    assert_eq!(
        status.restored_from.map(|r| r.path),
        Some(savepoint.path.clone()),
        "the new generation restored from the rescale's savepoint"
    );

    // More input after the rescale; every window of both phases exactly once.
    setup.send(400, 800).await;
    setup.finish(800).await;
    eprintln!(
        "deploy to Running and Ready: {} ms; rescale 2 -> 3 to Running and Ready: {} ms",
        ready_after.as_millis(),
        rescale_took.as_millis()
    );
}

/// A savepoint nonce takes a savepoint while the job keeps running; suspending stops every worker
/// with a savepoint and scales to zero; resuming restores from it; nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_savepoint_nonce_then_suspend_and_resume_keep_every_result_exactly_once() {
    let setup = Setup::start("suspend", 1).await;
    setup.running(1).await;
    setup.send(0, 200).await;

    // A manual savepoint: the job keeps running.
    setup
        .patch(serde_json::json!({"spec": {"savepoint": {"triggerNonce": 1}}}))
        .await;
    let status = setup
        .status_when("the manual savepoint", Duration::from_secs(90), |s| {
            s.savepoint
                .as_ref()
                .and_then(|s| s.last.as_ref())
                .is_some_and(|l| l.trigger == SavepointTrigger::Manual)
        })
        .await;
    let manual = status.savepoint.and_then(|s| s.last).expect("a savepoint");
    assert!(manual.path.contains("/savepoints/"), "{manual:?}");
    setup.running(1).await;

    // Suspend: a savepoint, then no worker runs.
    setup.send(200, 300).await;
    setup.suspend().await;
    // Input while suspended waits in Kafka, for 60 s: longer than the 30 s idleTimeout, which a
    // resumed worker must not take for idleness (event time would jump over the backlog).
    for batch in 0..6 {
        setup.send(300 + 20 * batch, 320 + 20 * batch).await;
        // The suspension's length is the point.
        tokio::time::sleep(Duration::from_secs(10)).await;
    }

    // Resume: the workers restore from the suspend savepoint and catch up.
    setup
        .patch(serde_json::json!({"spec": {"state": "running"}}))
        .await;
    let status = setup.running(1).await;
    let last = status.savepoint.and_then(|s| s.last).expect("a savepoint");
    assert_eq!(last.trigger, SavepointTrigger::Suspend);
    assert_eq!(status.restored_from.map(|r| r.path), Some(last.path));
    setup.finish(420).await;
}
