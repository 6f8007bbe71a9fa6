//! The status a plan leads to: phase and conditions, computed from the observation and the
//! plan, written with one patch before the plan's action is taken.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use oxbow_crds::{
    StreamJobStatus,
    admin::WorkerState,
    streamjob::{
        ConditionType, DesiredCondition, JobState, OperationType, Phase, find_condition,
        set_condition,
    },
};

use super::{Action, Observed, Plan, planner::reasons};

/// The whole status after `plan`: its [`super::Record`], `observedGeneration`, phase, replica
/// counts, assignment, and the conditions Ready, Progressing, Degraded and UpgradeBlocked
/// (CheckpointStale and LagHigh, and `lag`, `checkpoint` and `selector`, are kept as they are
/// for the stages that compute them).
pub fn compute(o: &Observed, plan: &Plan) -> StreamJobStatus {
    let mut s = o.status.clone();
    plan.record.apply_to(&mut s);
    let generation = Some(o.generation);
    s.observed_generation = generation;
    let phase = phase(o, plan);
    s.phase = Some(phase);
    s.replicas =
        i32::try_from(o.pods.iter().filter(|p| !p.terminating).count()).unwrap_or(i32::MAX);
    let deployed = o.deployed.as_ref();
    s.ready_replicas = deployed.map_or(0, |d| {
        let ready = d
            .assignment
            .workers
            .iter()
            .filter(|w| o.worker_healthy(w.ordinal, d))
            .count();
        i32::try_from(ready).unwrap_or(i32::MAX)
    });
    if let Some(d) = deployed {
        s.assignment = Some(d.assignment.clone());
    }
    let now = Time(o.now);
    let healthy = deployed.is_some_and(|d| o.all_healthy(d));
    // What the running generation restored from, once every worker of it has.
    if let Some(d) = deployed
        && healthy
        && let oxbow_crds::jobfile::Restore::Savepoint { path } = &d.restore
        && s.restored_from.as_ref().is_none_or(|r| r.path != *path)
    {
        s.restored_from = Some(oxbow_crds::streamjob::RestoredFrom {
            path: path.clone(),
            at: now.clone(),
        });
    }

    let ready = match phase {
        Phase::Running if healthy => cond(
            ConditionType::Ready,
            true,
            "AllWorkersReady",
            "every worker is restored and processing".into(),
        ),
        Phase::Suspended => cond(
            ConditionType::Ready,
            false,
            "Suspended",
            "the job is suspended".into(),
        ),
        Phase::Running => cond(
            ConditionType::Ready,
            false,
            "WorkersNotReady",
            "not every worker is restored and processing".into(),
        ),
        other => cond(
            ConditionType::Ready,
            false,
            other.as_str(),
            format!("the job is {}", other.as_str()),
        ),
    };
    set_condition(&mut s.conditions, ready, generation, &now);

    let progressing = match phase {
        Phase::Deploying
        | Phase::Savepointing
        | Phase::Upgrading
        | Phase::Rescaling
        | Phase::Suspending
        | Phase::RollingBack => {
            let step = plan
                .record
                .operation
                .as_ref()
                .map(|op| format!(" (step {:?})", op.step))
                .unwrap_or_default();
            cond(
                ConditionType::Progressing,
                true,
                phase.as_str(),
                format!("{}{step}", phase.as_str()),
            )
        }
        _ => cond(
            ConditionType::Progressing,
            false,
            "NoOperation",
            "no operation is under way".into(),
        ),
    };
    set_condition(&mut s.conditions, progressing, generation, &now);

    let failed_workers: Vec<u32> = o
        .workers
        .values()
        .filter(|w| w.state == WorkerState::Failed)
        .map(|w| w.ordinal)
        .collect();
    let degraded = if let Some(e) = &plan.record.error {
        cond(
            ConditionType::Degraded,
            true,
            reasons::to_static(&e.reason, "Error"),
            e.message.clone(),
        )
    } else if !failed_workers.is_empty() {
        cond(
            ConditionType::Degraded,
            true,
            "WorkerFailed",
            format!("workers {failed_workers:?} failed"),
        )
    } else {
        cond(
            ConditionType::Degraded,
            false,
            "AsExpected",
            "nothing is failing".into(),
        )
    };
    set_condition(&mut s.conditions, degraded, generation, &now);

    let previously_blocked = find_condition(&o.status.conditions, ConditionType::UpgradeBlocked)
        .filter(|c| c.status == "True" && c.observed_generation == generation)
        .map(|c| {
            (
                reasons::to_static(&c.reason, reasons::SAVEPOINT_FAILED),
                c.message.clone(),
            )
        });
    let blocked = match (&plan.action, previously_blocked) {
        (Action::Block { reason, message }, _) => {
            cond(ConditionType::UpgradeBlocked, true, reason, message.clone())
        }
        (_, Some((reason, message))) if plan.record.operation.is_none() => {
            cond(ConditionType::UpgradeBlocked, true, reason, message)
        }
        _ => cond(
            ConditionType::UpgradeBlocked,
            false,
            "NotBlocked",
            "no upgrade is blocked".into(),
        ),
    };
    set_condition(&mut s.conditions, blocked, generation, &now);
    s
}

/// The lifecycle phase after `plan`.
pub fn phase(o: &Observed, plan: &Plan) -> Phase {
    if let Some(op) = &plan.record.operation {
        return match op.type_ {
            OperationType::Upgrade => Phase::Upgrading,
            OperationType::Rescale => Phase::Rescaling,
            OperationType::Suspend => Phase::Suspending,
            OperationType::Resume => Phase::Deploying,
            OperationType::Rollback => Phase::RollingBack,
        };
    }
    let failed = plan.record.error.as_ref().is_some_and(|e| {
        e.reason == reasons::ROLLBACK_FAILED
            || e.reason == reasons::VERIFY_TIMED_OUT
            || e.reason == reasons::STABLE_SPEC_MISSING
    });
    match (&plan.action, o.deployed.as_ref()) {
        (Action::Fail { .. }, _) => Phase::Failed,
        (Action::ReportInvalid { .. }, None) => Phase::Failed,
        (Action::CreateOrUpdateChildren { .. }, None) => Phase::Deploying,
        (_, None) => Phase::Pending,
        (_, Some(d)) if d.spec.state == JobState::Suspended => Phase::Suspended,
        _ if failed => Phase::Failed,
        _ if plan
            .record
            .savepoint
            .as_ref()
            .is_some_and(|s| s.in_progress.is_some()) =>
        {
            Phase::Savepointing
        }
        (_, Some(d)) if !o.all_healthy(d) && plan.record.last_stable_spec_hash.is_none() => {
            Phase::Deploying
        }
        _ => Phase::Running,
    }
}

fn cond(
    type_: ConditionType,
    status: bool,
    reason: &'static str,
    message: String,
) -> DesiredCondition {
    DesiredCondition {
        type_,
        status,
        reason,
        message,
    }
}
