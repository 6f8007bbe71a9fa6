#![allow(clippy::unwrap_used, clippy::expect_used)]

use oxbow_crds::{
    duration::DurationString,
    jobfile::Restore,
    streamjob::{
        ConditionType, JobState, Phase, SavepointFailurePolicy, SavepointTrigger, UpgradeMode,
        find_condition,
    },
};
use proptest::prelude::*;

use super::{
    Action, plan,
    sim::{Crash, World, base_spec},
    spec_hash,
};

fn never() -> impl Iterator<Item = Crash> {
    std::iter::repeat(Crash::None)
}

fn deployed_world() -> World {
    let mut w = World::new(base_spec());
    w.settle(&mut never(), 50);
    w
}

fn condition(w: &World, type_: ConditionType) -> (String, String) {
    let c = find_condition(&w.o.status.conditions, type_).unwrap();
    (c.status.clone(), c.reason.clone())
}

/// The actions taken, without the waits and repeats between them.
fn steps(w: &World) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = vec![];
    for a in &w.log {
        if !matches!(*a, "Wait" | "WaitForSavepoint" | "Nothing") && out.last() != Some(a) {
            out.push(a);
        }
    }
    out
}

#[test]
fn first_deploy_creates_the_children_and_marks_the_spec_stable() {
    let w = deployed_world();
    assert_eq!(steps(&w), ["CreateOrUpdateChildren", "MarkStable"]);
    let d = w.deployed();
    assert_eq!(d.restore, Restore::LatestCheckpoint);
    assert_eq!(d.assignment.workers.len(), 3);
    // The pipeline shuffles: the repartition topic is assigned with the source's count.
    assert_eq!(d.assignment.partitions, 12);
    assert_eq!(w.o.status.phase, Some(Phase::Running));
    assert_eq!(condition(&w, ConditionType::Ready).0, "True");
    assert_eq!(w.o.status.last_stable_spec_hash, Some(spec_hash(&d.spec)));
    assert_eq!(w.o.stable.as_ref(), Some(d));
}

#[test]
fn an_upgrade_stops_with_a_savepoint_fences_rolls_out_and_verifies() {
    let mut w = deployed_world();
    let first = w.deployed().restore_request.clone();
    assert_eq!(
        first.len(),
        16,
        "the first deployment requests a restore: {first:?}"
    );
    w.log.clear();
    w.edit(|s| s.image = Some("worker:2".into()));
    w.settle(&mut never(), 80);
    assert_eq!(
        steps(&w),
        [
            "RequestSavepoint",
            "StopWorkers",
            "Fence",
            "RollOut",
            "MarkStable"
        ]
    );
    let d = w.deployed();
    assert_eq!(d.spec.image.as_deref(), Some("worker:2"));
    assert_eq!(d.spec_generation, 2);
    let last = w.o.status.savepoint.as_ref().unwrap().last.clone().unwrap();
    assert_eq!(last.trigger, SavepointTrigger::Upgrade);
    assert_eq!(d.restore, Restore::Savepoint { path: last.path });
    assert_ne!(
        d.restore_request, first,
        "the upgrade is a new restore request"
    );
    assert_eq!(w.o.status.operation, None);
    assert_eq!(w.o.status.phase, Some(Phase::Running));
    assert_eq!(w.o.stable.as_ref(), Some(d));
}

#[test]
fn a_rescale_reassigns_over_the_new_worker_count() {
    let mut w = deployed_world();
    let before = w.deployed().assignment.clone();
    w.edit(|s| s.replicas = 4);
    w.settle(&mut never(), 80);
    let d = w.deployed();
    assert_eq!(d.assignment.workers.len(), 4);
    assert_eq!(d.assignment.generation, before.generation + 1);
    let last = w.o.status.savepoint.as_ref().unwrap().last.clone().unwrap();
    assert_eq!(last.trigger, SavepointTrigger::Rescale);
    assert_eq!(w.o.pods.len(), 4);
}

#[test]
fn more_source_partitions_are_a_rescale() {
    let mut w = deployed_world();
    w.log.clear();
    w.o.partitions.insert("payments".into(), 8);
    w.settle(&mut never(), 80);
    assert!(steps(&w).contains(&"RollOut"));
    assert_eq!(w.deployed().assignment.partitions, 16);
    assert_eq!(w.deployed().spec_generation, 1, "the spec did not change");
}

#[test]
fn last_state_and_stateless_modes_skip_the_savepoint() {
    for (mode, restore) in [
        (UpgradeMode::LastState, Restore::LatestCheckpoint),
        (UpgradeMode::Stateless, Restore::Stateless),
    ] {
        let mut w = deployed_world();
        w.log.clear();
        w.edit(|s| {
            s.upgrade.mode = mode;
            s.image = Some("worker:2".into());
        });
        w.settle(&mut never(), 80);
        assert_eq!(
            steps(&w),
            ["StopWorkers", "Fence", "RollOut", "MarkStable"],
            "{mode:?}"
        );
        assert_eq!(w.deployed().restore, restore, "{mode:?}");
    }
}

#[test]
fn a_failed_savepoint_blocks_and_the_old_generation_keeps_running() {
    let mut w = deployed_world();
    let old = w.deployed().clone();
    w.fail_savepoints = true;
    w.edit(|s| s.image = Some("worker:2".into()));
    w.settle(&mut never(), 80);
    assert_eq!(w.deployed(), &old);
    assert_eq!(
        condition(&w, ConditionType::UpgradeBlocked),
        ("True".into(), "SavepointFailed".into())
    );
    assert_eq!(w.o.status.operation, None);
    // Not retried for the same generation.
    let requests = w.log.iter().filter(|a| **a == "RequestSavepoint").count();
    w.settle(&mut never(), 20);
    assert_eq!(
        w.log.iter().filter(|a| **a == "RequestSavepoint").count(),
        requests
    );
    assert!(w.o.all_healthy(&old), "every old worker processes again");
    // A new edit retries, and succeeds once the store is back.
    w.fail_savepoints = false;
    w.edit(|s| s.image = Some("worker:3".into()));
    w.settle(&mut never(), 80);
    assert_eq!(w.deployed().spec.image.as_deref(), Some("worker:3"));
    assert_eq!(condition(&w, ConditionType::UpgradeBlocked).0, "False");
}

#[test]
fn last_state_fallback_needs_a_fresh_checkpoint() {
    for (age, upgraded) in [(5, true), (600, false)] {
        let mut w = deployed_world();
        w.fail_savepoints = true;
        w.checkpoint_age = age;
        w.edit(|s| {
            s.upgrade.on_savepoint_failure = SavepointFailurePolicy::LastState;
            s.image = Some("worker:2".into());
        });
        w.settle(&mut never(), 80);
        let image = w.deployed().spec.image.clone();
        assert_eq!(image.as_deref() == Some("worker:2"), upgraded, "age {age}");
        if upgraded {
            assert_eq!(w.deployed().restore, Restore::LatestCheckpoint);
        } else {
            assert_eq!(condition(&w, ConditionType::UpgradeBlocked).0, "True");
        }
    }
}

#[test]
fn an_unhealthy_generation_is_rolled_back_from_the_same_savepoint_and_not_retried() {
    let mut w = deployed_world();
    let stable = w.deployed().clone();
    w.bad_image = Some("worker:bad".into());
    w.edit(|s| s.image = Some("worker:bad".into()));
    let mut failed = None;
    for _ in 0..200 {
        w.settle(&mut never(), 1);
        if w.deployed().spec.image.as_deref() == Some("worker:bad") {
            failed = Some(w.deployed().restore_request.clone());
            break;
        }
    }
    let failed = failed.expect("the failed generation was rolled out");
    assert_ne!(
        failed, stable.restore_request,
        "the upgrade is a new request"
    );
    w.settle(&mut never(), 200);
    let d = w.deployed().clone();
    assert_eq!(d.spec, stable.spec, "back on the stable spec");
    assert_eq!(
        d.restore_request, failed,
        "the rollback keeps the failed generation's request: what it committed stays"
    );
    assert_eq!(d.spec_generation, 2, "written for the failed generation");
    let upgrade_savepoint = w.o.status.savepoint.as_ref().unwrap().last.clone().unwrap();
    assert_eq!(
        d.restore,
        Restore::Savepoint {
            path: upgrade_savepoint.path
        }
    );
    assert_eq!(w.o.status.error.as_ref().unwrap().reason, "RolledBack");
    assert_eq!(condition(&w, ConditionType::Degraded).0, "True");
    assert_eq!(w.o.status.phase, Some(Phase::Running));
    let rollouts = w.log.iter().filter(|a| **a == "RollOut").count();
    w.settle(&mut never(), 50);
    assert_eq!(
        w.log.iter().filter(|a| **a == "RollOut").count(),
        rollouts,
        "not retried"
    );
}

#[test]
fn suspend_takes_a_savepoint_and_resume_restores_from_it() {
    let mut w = deployed_world();
    w.edit(|s| s.state = JobState::Suspended);
    w.settle(&mut never(), 80);
    assert_eq!(w.o.status.phase, Some(Phase::Suspended));
    assert!(w.o.pods.is_empty());
    let last = w.o.status.savepoint.as_ref().unwrap().last.clone().unwrap();
    assert_eq!(last.trigger, SavepointTrigger::Suspend);
    let path = last.path;
    assert_eq!(
        w.deployed().restore,
        Restore::Savepoint { path: path.clone() }
    );
    let suspended = w.deployed().restore_request.clone();
    w.edit(|s| s.state = JobState::Running);
    w.settle(&mut never(), 80);
    assert_eq!(w.o.status.phase, Some(Phase::Running));
    assert_eq!(w.deployed().restore, Restore::Savepoint { path });
    assert_ne!(
        w.deployed().restore_request,
        suspended,
        "a resume is a new request"
    );
    assert_eq!(w.o.pods.len(), 3);
}

#[test]
fn an_invalid_spec_is_reported_and_the_running_job_left_alone() {
    let mut w = deployed_world();
    let old = w.deployed().clone();
    w.edit(|s| {
        s.image = Some("worker:2".into());
        s.upgrade.savepoint_timeout = DurationString::from("soon");
    });
    let p = plan(&w.o);
    assert!(
        matches!(p.action, Action::ReportInvalid { .. }),
        "{:?}",
        p.action
    );
    w.settle(&mut never(), 30);
    assert_eq!(w.deployed(), &old);
    assert_eq!(
        condition(&w, ConditionType::Degraded),
        ("True".into(), "InvalidSpec".into())
    );
    assert_eq!(condition(&w, ConditionType::Ready).0, "True");
    w.edit(|s| s.upgrade.savepoint_timeout = DurationString::from("20s"));
    w.settle(&mut never(), 80);
    assert_eq!(w.deployed().spec.image.as_deref(), Some("worker:2"));
    assert_eq!(condition(&w, ConditionType::Degraded).0, "False");
}

#[test]
fn a_new_trigger_nonce_takes_a_savepoint_without_stopping() {
    let mut w = deployed_world();
    w.log.clear();
    w.edit(|s| s.savepoint.trigger_nonce = 7);
    w.settle(&mut never(), 30);
    assert_eq!(steps(&w), ["RequestSavepoint"]);
    let sp = w.o.status.savepoint.clone().unwrap();
    assert_eq!(sp.observed_trigger_nonce, Some(7));
    assert_eq!(sp.last.unwrap().trigger, SavepointTrigger::Manual);
    assert!(w.o.all_healthy(w.deployed()));
}

#[test]
fn savepoints_beyond_the_history_limit_are_disposed_but_not_the_upgrade_one() {
    let mut w = deployed_world();
    w.edit(|s| s.savepoint.history_limit = 2);
    w.edit(|s| s.image = Some("worker:2".into()));
    w.settle(&mut never(), 80);
    for nonce in 1..=4 {
        w.edit(|s| s.savepoint.trigger_nonce = nonce);
        w.settle(&mut never(), 30);
    }
    let history = w.o.status.savepoint.clone().unwrap().history;
    let triggers: Vec<SavepointTrigger> = history.iter().map(|h| h.trigger).collect();
    // The two newest manual ones, and the upgrade savepoint the job restored from.
    assert_eq!(
        triggers,
        [
            SavepointTrigger::Manual,
            SavepointTrigger::Manual,
            SavepointTrigger::Upgrade
        ]
    );
    assert!(w.log.contains(&"DisposeSavepoints"));
    let Restore::Savepoint { path } = &w.deployed().restore else {
        panic!("the upgrade restored from a savepoint");
    };
    assert_eq!(&history[2].path, path);
}

#[test]
fn deleting_a_job_takes_a_final_savepoint_then_releases_the_finalizer() {
    let mut w = deployed_world();
    w.edit(|s| s.savepoint.on_delete = true);
    w.settle(&mut never(), 20);
    assert!(w.o.has_finalizer, "savepoint.onDelete adds the finalizer");
    w.log.clear();
    w.o.deleting = true;
    w.settle(&mut never(), 30);
    assert_eq!(steps(&w), ["RequestSavepoint", "RemoveFinalizer"]);
    assert!(!w.o.has_finalizer);
    let last = w.o.status.savepoint.clone().unwrap().last.unwrap();
    assert_eq!(last.trigger, SavepointTrigger::Delete);
}

#[test]
fn a_final_savepoint_planned_again_from_a_stale_status_is_the_same_savepoint() {
    let mut w = deployed_world();
    w.edit(|s| s.savepoint.on_delete = true);
    w.settle(&mut never(), 20);
    w.o.deleting = true;
    let first = plan(&w.o);
    // The status that recorded the first request is not seen yet; a moment later, the same
    // reconcile is planned again.
    w.o.now += std::time::Duration::from_millis(432);
    let again = plan(&w.o);
    let id = |p: &super::Plan| match &p.action {
        Action::RequestSavepoint { id, .. } => id.clone(),
        other => panic!("not a savepoint request: {other:?}"),
    };
    assert_eq!(id(&first), id(&again), "one final savepoint, not two");
}

#[test]
fn a_failed_final_savepoint_does_not_block_the_deletion() {
    let mut w = deployed_world();
    w.edit(|s| s.savepoint.on_delete = true);
    w.settle(&mut never(), 20);
    w.fail_savepoints = true;
    w.o.deleting = true;
    let mut released = None;
    for _ in 0..30 {
        let plan = w.reconcile(Crash::None);
        if let Action::RemoveFinalizer { reason, .. } = plan.action {
            released = Some(reason);
            break;
        }
    }
    assert_eq!(released, Some("FinalSavepointFailed"));
}

#[test]
fn a_suspended_job_is_deleted_without_a_final_savepoint() {
    let mut w = deployed_world();
    w.edit(|s| s.savepoint.on_delete = true);
    w.edit(|s| s.state = JobState::Suspended);
    w.settle(&mut never(), 60);
    w.log.clear();
    w.o.deleting = true;
    w.settle(&mut never(), 10);
    assert_eq!(steps(&w), ["RemoveFinalizer"]);
}

/// The end state of a scenario, without what depends on the clock.
fn outcome(
    w: &World,
) -> (
    oxbow_crds::StreamJobSpec,
    i64,
    &'static str,
    Option<Phase>,
    usize,
) {
    let d = w.deployed();
    let restore = match d.restore {
        Restore::LatestCheckpoint => "checkpoint",
        Restore::Savepoint { .. } => "savepoint",
        Restore::Stateless => "stateless",
    };
    (
        d.spec.clone(),
        d.spec_generation,
        restore,
        w.o.status.phase,
        w.o.pods.len(),
    )
}

type Edit = fn(&mut World);

fn scenarios() -> Vec<(&'static str, Edit)> {
    vec![
        ("upgrade", |w| w.edit(|s| s.image = Some("worker:2".into()))),
        ("rescale", |w| w.edit(|s| s.replicas = 5)),
        ("partitions", |w| {
            w.o.partitions.insert("payments".into(), 9);
        }),
        ("suspend", |w| w.edit(|s| s.state = JobState::Suspended)),
        ("last-state", |w| {
            w.edit(|s| {
                s.upgrade.mode = UpgradeMode::LastState;
                s.replicas = 2;
            })
        }),
        ("blocked", |w| {
            w.fail_savepoints = true;
            w.edit(|s| s.image = Some("worker:2".into()));
        }),
        ("rollback", |w| {
            w.bad_image = Some("worker:bad".into());
            w.edit(|s| s.image = Some("worker:bad".into()));
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Crashing the operator before recording, after recording but before acting, or after
    /// acting but before recording what follows, at any reconcile, ends where a run without
    /// crashes ends; the world checks the safety properties at every action on the way.
    #[test]
    fn crashes_at_any_point_converge_to_the_same_outcome(
        scenario in 0..7usize,
        crashes in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let (name, edit) = scenarios()[scenario];
        let run = |crashes: &mut dyn Iterator<Item = Crash>| {
            let mut w = World::new(base_spec());
            w.settle(crashes, 60);
            edit(&mut w);
            w.settle(crashes, 300);
            w.settle(&mut never(), 300);
            w
        };
        let clean = run(&mut never());
        let crashed = run(&mut crashes.iter().map(|b| Crash::from_byte(*b)));
        prop_assert_eq!(outcome(&crashed), outcome(&clean), "{}", name);
        prop_assert_eq!(crashed.o.status.operation.clone(), None);
    }

    /// Replaying a plan on the status it recorded (the operator died after the write, before
    /// acting) plans the same action and records nothing new.
    #[test]
    fn replaying_a_plan_on_its_own_record_is_a_fixed_point(
        scenario in 0..7usize,
        steps in 0..60usize,
    ) {
        let (_, edit) = scenarios()[scenario];
        let mut w = World::new(base_spec());
        w.settle(&mut never(), 60);
        edit(&mut w);
        for _ in 0..steps {
            w.reconcile(Crash::None);
        }
        let first = plan(&w.o);
        let mut replay = w.o.clone();
        replay.status = super::status::compute(&w.o, &first);
        let second = plan(&replay);
        prop_assert_eq!(&second.action, &first.action);
        prop_assert_eq!(&second.record, &first.record);
        prop_assert!(!second.needs_record(&replay.status));
    }
}

/// The pipeline steps of `MANIFEST` with `steps` (YAML list items) in place of its own.
fn pipeline(steps: &str) -> Vec<oxbow_crds::streamjob::PipelineStep> {
    let manifest = super::sim::MANIFEST.replace("    - keyBy: \"account\"\n", steps);
    oxbow_crds::parse_manifest(&manifest).unwrap().spec.pipeline
}

fn windowed(size: &str, aggregate: &str) -> Vec<oxbow_crds::streamjob::PipelineStep> {
    pipeline(&format!(
        "    - keyBy: \"account\"\n    - window: {{tumbling: {size}}}\n      aggregate: {aggregate}\n"
    ))
}

#[test]
fn an_upgrade_classifies_its_state_change_before_it_stops_anything() {
    let mut w = deployed_world();
    w.edit(|s| s.pipeline = windowed("1m", r#"{n: "count()"}"#));
    w.settle(&mut never(), 80);
    w.log.clear();
    w.edit(|s| s.pipeline = windowed("1m", r#"{n: "count()", top: "max(amount)"}"#));
    let mut seen = None;
    for _ in 0..80 {
        w.settle(&mut never(), 1);
        if let Some(op) = &w.o.status.operation {
            seen = op.state_change.clone();
            break;
        }
    }
    assert_eq!(
        seen.as_deref(),
        Some("migratable: top start(s) empty at the upgrade"),
        "shown in status.operation from the operation's start"
    );
    w.settle(&mut never(), 80);
    assert_eq!(
        w.deployed().spec.pipeline,
        windowed("1m", r#"{n: "count()", top: "max(amount)"}"#)
    );
}

#[test]
fn an_upgrade_that_changes_the_window_is_refused_unless_its_state_may_start_empty() {
    let mut w = deployed_world();
    w.edit(|s| s.pipeline = windowed("1m", r#"{n: "count()"}"#));
    w.settle(&mut never(), 80);
    let running = w.deployed().clone();
    w.log.clear();
    w.edit(|s| s.pipeline = windowed("5m", r#"{n: "count()"}"#));
    w.settle(&mut never(), 80);
    assert_eq!(w.deployed(), &running, "the job keeps running as it was");
    assert!(!w.log.contains(&"StopWorkers"), "{:?}", w.log);
    let blocked = find_condition(&w.o.status.conditions, ConditionType::UpgradeBlocked).unwrap();
    let message = &blocked.message;
    assert_eq!(blocked.status, "True");
    assert_eq!(blocked.reason, "IncompatibleState");
    assert!(
        message.contains(
            "spec.pipeline[1]: the window changed from tumbling 60000ms to tumbling 300000ms"
        ),
        "{message}"
    );
    assert!(
        message.contains("spec.upgrade.discardIncompatibleState"),
        "{message}"
    );
    assert_eq!(
        w.o.status.error.as_ref().unwrap().reason,
        "IncompatibleState"
    );

    // Opting in lets the upgrade go on; the workers start that state empty.
    w.edit(|s| s.upgrade.discard_incompatible_state = true);
    w.settle(&mut never(), 120);
    assert_eq!(
        w.deployed().spec.pipeline,
        windowed("5m", r#"{n: "count()"}"#)
    );
    assert_eq!(condition(&w, ConditionType::UpgradeBlocked).0, "False");
}

#[test]
fn a_rollback_whose_failed_state_the_stable_pipeline_cannot_take_restores_the_savepoint() {
    let mut w = deployed_world();
    w.edit(|s| s.pipeline = windowed("1m", r#"{n: "count()"}"#));
    w.settle(&mut never(), 80);
    // An upgrade to 5-minute windows, state started empty by choice, on an image that fails.
    w.bad_image = Some("worker:bad".into());
    w.edit(|s| {
        s.pipeline = windowed("5m", r#"{n: "count()"}"#);
        s.upgrade.discard_incompatible_state = true;
        s.image = Some("worker:bad".into());
    });
    let mut failed = None;
    let mut rollback_change = None;
    for _ in 0..300 {
        w.settle(&mut never(), 1);
        if w.deployed().spec.image.as_deref() == Some("worker:bad") {
            failed = Some(w.deployed().restore_request.clone());
        }
        if let Some(op) =
            w.o.status
                .operation
                .as_ref()
                .filter(|op| op.type_ == oxbow_crds::streamjob::OperationType::Rollback)
        {
            rollback_change = op.state_change.clone();
        }
        if w.o
            .status
            .error
            .as_ref()
            .is_some_and(|e| e.reason == "RolledBack")
            && w.o.status.operation.is_none()
        {
            break;
        }
    }
    let failed = failed.expect("the failed generation was rolled out");
    let change = rollback_change.expect("the rollback said what happens to the state");
    assert!(
        change.starts_with("incompatible: spec.pipeline[1]: the window changed")
            && change.contains("produced again"),
        "{change}"
    );
    let d = w.deployed();
    assert_eq!(d.spec.pipeline, windowed("1m", r#"{n: "count()"}"#));
    assert_ne!(
        d.restore_request, failed,
        "a new request: every partition restores from the savepoint"
    );
    assert!(
        matches!(d.restore, Restore::Savepoint { .. }),
        "{:?}",
        d.restore
    );
}
