//! End to end, the operations a platform team runs on a StreamJob, each against the real
//! control plane, the real broker and real worker processes (the stand-in kubelet), and each
//! ending with every window result in the sink exactly once:
//!
//! - a rescale 3 -> 1 and a pipeline upgrade while input flows, with the pause of each;
//! - a savepoint that fails: `block` keeps the old generation running with UpgradeBlocked,
//!   `last-state` goes on from the latest checkpoint;
//! - a worker killed, then the operator killed at two steps of an upgrade and started again;
//! - savepoints beyond `historyLimit` disposed of from storage, lag read from Kafka while every
//!   worker is down, and a deletion that takes a final savepoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use kube::api::{DeleteParams, Patch, PatchParams};
use oxbow_crds::{
    StreamJobStatus,
    streamjob::{ConditionType, OperationStep, OperationType, Phase, SavepointTrigger},
};
use oxbow_tests::lifecycle::{Setup, is_true};

/// The job's pipeline with a leading filter that every test event passes: a restart-required
/// change whose results equal the original pipeline's.
fn upgraded_pipeline() -> serde_json::Value {
    serde_json::json!({"spec": {"pipeline": [
        {"filter": "v >= 0"},
        {"keyBy": "k"},
        {"window": {"tumbling": "1s"}, "aggregate": {"n": "count()", "total": "sum(v)"}},
    ]}})
}

/// Running with `replicas` ready workers, no operation under way, and an upgrade's savepoint
/// the last one: an upgrade is done.
fn upgraded(s: &StreamJobStatus, replicas: i32) -> bool {
    s.phase == Some(Phase::Running)
        && s.operation.is_none()
        && s.ready_replicas == replicas
        && s.savepoint
            .as_ref()
            .and_then(|s| s.last.as_ref())
            .is_some_and(|l| l.trigger == SavepointTrigger::Upgrade)
}

/// Sends events in batches of 20 until the status satisfies `done`; returns the status, the
/// time it took and the next event index.
async fn send_until(
    setup: &Setup,
    mut next: i64,
    what: &str,
    done: impl Fn(&StreamJobStatus) -> bool,
) -> (StreamJobStatus, Duration, i64) {
    let started = Instant::now();
    let status = setup
        .wait(what, Duration::from_secs(120))
        .every(Duration::from_millis(100))
        .until(async || {
            setup.send(next, next + 20).await;
            next += 20;
            Some(setup.status().await).filter(&done)
        })
        .await
        .unwrap();
    (status, started.elapsed(), next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescale_three_to_one_and_a_pipeline_upgrade_while_input_flows() {
    let setup = Setup::start("ops-rescale", 3).await;
    setup.running(3).await;
    setup.send(0, 200).await;

    // 3 -> 1 through the scale subresource while events keep arriving.
    let scale = serde_json::json!({"spec": {"replicas": 1}});
    setup
        .jobs
        .patch_scale("sums", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();
    let (status, rescale, next) = send_until(&setup, 200, "the rescale to 1", |s| {
        s.phase == Some(Phase::Running)
            && s.operation.is_none()
            && s.ready_replicas == 1
            && s.assignment.as_ref().is_some_and(|a| a.workers.len() == 1)
    })
    .await;
    let last = status
        .savepoint
        .as_ref()
        .and_then(|s| s.last.clone())
        .unwrap();
    assert_eq!(last.trigger, SavepointTrigger::Rescale);
    assert_eq!(status.restored_from.map(|r| r.path), Some(last.path));
    let one = &status.assignment.unwrap().workers[0];
    assert_eq!(one.partitions.values().map(Vec::len).sum::<usize>(), 2);

    // A pipeline upgrade, again under input.
    setup.patch(upgraded_pipeline()).await;
    let (status, upgrade, next) = send_until(&setup, next, "the upgrade", |s| upgraded(s, 1)).await;
    assert!(is_true(&status, ConditionType::Ready), "{status:#?}");
    assert!(!is_true(&status, ConditionType::Reconciling), "{status:#?}");
    assert_eq!(
        status.selector.as_deref().map(|s| s.contains("sums")),
        Some(true)
    );
    setup.send(next, next + 100).await;
    setup.finish(next + 100).await;
    eprintln!(
        "pause, spec change to every new worker restored and processing (status polled every ~100 ms): rescale 3 -> 1 {} ms, upgrade {} ms",
        rescale.as_millis(),
        upgrade.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_savepoint_blocks_the_upgrade_and_last_state_goes_on_from_a_checkpoint() {
    let setup = Setup::start_with("ops-block", 1, &["upgrade: {savepointTimeout: 10s}"]).await;
    setup.running(1).await;
    setup.send(0, 200).await;
    // Savepoints cannot be written: a file stands where their directory would go.
    std::fs::create_dir_all(setup.job_root()).unwrap();
    std::fs::write(setup.job_root().join("savepoints"), b"in the way").unwrap();

    setup.patch(upgraded_pipeline()).await;
    let (status, blocked) = setup
        .condition_true(ConditionType::UpgradeBlocked, Duration::from_secs(60))
        .await;
    assert_eq!(blocked.reason, "SavepointFailed", "{status:#?}");
    assert!(blocked.message.contains("savepoint"), "{blocked:?}");
    assert!(is_true(&status, ConditionType::Stalled), "{status:#?}");
    // The old generation goes on: it is Running with its worker ready, and it processes.
    let status = setup
        .status_when("the old generation running", Duration::from_secs(30), |s| {
            s.phase == Some(Phase::Running) && s.ready_replicas == 1 && s.operation.is_none()
        })
        .await;
    let old_spec = status.last_stable_spec_hash.clone();
    setup.send(200, 300).await;

    // last-state: the upgrade goes on from the latest checkpoint.
    setup
        .patch(serde_json::json!({"spec": {"upgrade": {
            "onSavepointFailure": "last-state", "maxCheckpointAge": "60s"}}}))
        .await;
    let status = setup
        .status_when(
            "the upgrade from the checkpoint",
            Duration::from_secs(90),
            |s| {
                s.phase == Some(Phase::Running)
                    && s.operation.is_none()
                    && s.ready_replicas == 1
                    && s.last_stable_spec_hash != old_spec
            },
        )
        .await;
    assert!(
        !is_true(&status, ConditionType::UpgradeBlocked),
        "{status:#?}"
    );
    assert!(!is_true(&status, ConditionType::Stalled), "{status:#?}");
    std::fs::remove_file(setup.job_root().join("savepoints")).unwrap();
    setup.send(300, 400).await;
    setup.finish(400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_and_an_operator_killed_mid_upgrade_lose_and_double_nothing() {
    let mut setup = Setup::start("ops-kill", 2).await;
    setup.running(2).await;
    setup.send(0, 200).await;

    // A worker dies; its container restarts and the job is Running and Ready again.
    assert!(setup.kubelet.kill("sums-1"), "worker 1 runs");
    setup
        .status_when("worker 1 not ready", Duration::from_secs(30), |s| {
            s.ready_replicas < 2
        })
        .await;
    setup.running(2).await;
    setup.send(200, 300).await;

    // The operator dies during the upgrade's savepoint, and again once it rolls out.
    setup.patch(upgraded_pipeline()).await;
    let mut killed_at = Vec::new();
    for steps in [
        &[OperationStep::Savepointing][..],
        &[OperationStep::RollingOut, OperationStep::Verifying][..],
    ] {
        let status = setup
            .status_when("the step", Duration::from_secs(60), |s| {
                s.operation
                    .as_ref()
                    .is_some_and(|op| steps.contains(&op.step))
            })
            .await;
        setup.kill_operator();
        killed_at.push(status.operation.unwrap().step);
        // The operator stays down a while, as a crashed pod does before its restart.
        tokio::time::sleep(Duration::from_secs(2)).await;
        setup.restart_operator();
    }
    let status = setup
        .status_when("the upgrade to finish", Duration::from_secs(90), |s| {
            upgraded(s, 2)
        })
        .await;
    let last = status.savepoint.and_then(|s| s.last).unwrap();
    assert_eq!(status.restored_from.map(|r| r.path), Some(last.path));
    eprintln!("operator killed at steps {killed_at:?}");
    setup.send(300, 400).await;
    setup.finish(400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoints_are_disposed_lag_is_read_while_suspended_and_deletion_takes_a_final_savepoint()
{
    let mut setup = Setup::start_with(
        "ops-delete",
        1,
        &["savepoint: {onDelete: true, historyLimit: 2}"],
    )
    .await;
    setup.running(1).await;
    let job = setup.jobs.get("sums").await.unwrap();
    assert!(
        job.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"oxbow.dev/final-savepoint".to_owned()),
        "savepoint.onDelete puts a finalizer on the job"
    );
    setup.send(0, 100).await;

    // Three manual savepoints with historyLimit 2: the oldest leaves the status and storage.
    for nonce in 1..=3 {
        setup
            .patch(serde_json::json!({"spec": {"savepoint": {"triggerNonce": nonce}}}))
            .await;
        setup
            .status_when("the savepoint", Duration::from_secs(60), |s| {
                s.savepoint.as_ref().is_some_and(|s| {
                    s.observed_trigger_nonce == Some(nonce) && s.in_progress.is_none()
                })
            })
            .await;
    }
    let status = setup
        .status_when("two savepoints kept", Duration::from_secs(30), |s| {
            s.savepoint.as_ref().is_some_and(|s| s.history.len() == 2)
        })
        .await;
    let kept: Vec<String> = status
        .savepoint
        .unwrap()
        .history
        .into_iter()
        .map(|h| h.id)
        .collect();
    let savepoints_dir = setup.job_root().join("savepoints");
    // Savepoint directories holding at least one object (a local store leaves empty
    // directories behind when it deletes objects).
    let on_disk = || -> Vec<String> {
        fn holds_files(dir: &std::path::Path) -> bool {
            std::fs::read_dir(dir).is_ok_and(|entries| {
                entries.filter_map(Result::ok).any(|e| {
                    let path = e.path();
                    path.is_file() || holds_files(&path)
                })
            })
        }
        let mut ids: Vec<String> = std::fs::read_dir(&savepoints_dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| holds_files(&e.path()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    };
    let mut want = kept.clone();
    want.sort();
    assert_eq!(
        on_disk(),
        want,
        "storage holds exactly the savepoints the status lists"
    );

    // Suspended, no worker runs; lag still comes from Kafka.
    setup.suspend().await;
    setup.send(100, 150).await;
    let status = setup
        .status_when("the lag of 50 records", Duration::from_secs(30), |s| {
            s.lag.as_ref().is_some_and(|l| l.records == 50)
        })
        .await;
    let lag = status.lag.unwrap();
    assert_eq!(lag.partitions.iter().map(|p| p.records).sum::<i64>(), 50);
    assert!(lag.max_partition_records >= 25, "{lag:?}");

    setup
        .patch(serde_json::json!({"spec": {"state": "running"}}))
        .await;
    setup.running(1).await;
    setup
        .status_when("the lag to drain", Duration::from_secs(30), |s| {
            s.lag.as_ref().is_some_and(|l| l.records == 0)
        })
        .await;
    setup.assert_exactly_once(150).await;

    // Deleting the job takes a final savepoint, then lets it go.
    setup
        .jobs
        .delete("sums", &DeleteParams::default())
        .await
        .unwrap();
    setup
        .wait("the job to be gone", Duration::from_secs(60))
        .until(async || {
            setup
                .jobs
                .get_opt("sums")
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await
        .unwrap();
    let finals: Vec<String> = on_disk()
        .into_iter()
        .filter(|id| id.starts_with("delete-"))
        .collect();
    assert_eq!(
        finals.len(),
        1,
        "one final savepoint in storage: {:?}",
        on_disk()
    );
    let manifests = std::fs::read_dir(savepoints_dir.join(&finals[0]))
        .unwrap()
        .count();
    assert!(
        manifests > 0,
        "the final savepoint holds the worker's manifest"
    );
    setup.kill_operator();
}

/// An upgrade whose worker 1 crash-loops while worker 0 commits: past `verifyTimeout` the
/// operator rolls back, and no result is lost or produced twice. The rollback keeps the failed
/// generation's restore request: the partition worker 0 committed under the new generation
/// goes on from those commits; worker 1's partition, never committed, restores from the
/// upgrade's savepoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_after_one_worker_crash_loops_loses_and_doubles_nothing() {
    let setup = Setup::start_with("ops-rollback", 2, &["upgrade: {verifyTimeout: 15s}"]).await;
    setup.running(2).await;
    setup.send(0, 200).await;
    setup.patch(upgraded_pipeline()).await;
    setup
        .status_when("the rollout", Duration::from_secs(60), |s| {
            s.operation.as_ref().is_some_and(|op| {
                matches!(
                    op.step,
                    OperationStep::RollingOut | OperationStep::Verifying
                )
            })
        })
        .await;
    // The new generation's worker 1 is killed whenever it runs, while input flows.
    let mut next = 200;
    setup
        .wait("the rollback", Duration::from_secs(120))
        .every(Duration::from_millis(200))
        .until(async || {
            setup.kubelet.kill("sums-1");
            setup.send(next, next + 10).await;
            next += 10;
            let status = setup.status().await;
            let rolling_back = status
                .operation
                .as_ref()
                .is_some_and(|op| op.type_ == OperationType::Rollback);
            let rolled_back = status
                .error
                .as_ref()
                .is_some_and(|e| e.reason == "RolledBack");
            (rolling_back || rolled_back).then_some(())
        })
        .await
        .unwrap();
    let status = setup
        .status_when("the rollback to finish", Duration::from_secs(120), |s| {
            s.phase == Some(Phase::Running) && s.operation.is_none() && s.ready_replicas == 2
        })
        .await;
    assert_eq!(status.error.unwrap().reason, "RolledBack");
    setup.send(next, next + 100).await;
    setup.finish(next + 100).await;
}
