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

/// The whole status after `plan` was acted on: its [`super::Record`], `observedGeneration`,
/// phase, replica counts, selector, assignment, checkpoint, lag, and every condition.
pub fn compute(o: &Observed, plan: &Plan) -> StreamJobStatus {
    let mut s = o.status.clone();
    plan.record.apply_to(&mut s);
    if let Action::DisposeSavepoints { savepoints, .. } = &plan.action
        && let Some(sp) = s.savepoint.as_mut()
    {
        sp.history
            .retain(|h| savepoints.iter().all(|d| d.id != h.id));
    }
    s.selector = Some(crate::children::meta::selector_string(&o.name));
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
    // What the running generation restored from, once every worker of it reports that it has
    // (a worker honours its job file's restore request once, then continues from its commits).
    if let Some(d) = deployed
        && healthy
        && let oxbow_crds::jobfile::Restore::Savepoint { path } = &d.restore
        && !o.workers.is_empty()
        && o.workers
            .values()
            .all(|w| w.restored_from.as_deref() == Some(path.as_str()))
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
    set_condition(&mut s.conditions, progressing.clone(), generation, &now);

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
    let stalled = match (&blocked, phase) {
        (b, _) if b.status => cond(ConditionType::Stalled, true, b.reason, b.message.clone()),
        (_, Phase::Failed) => {
            let (reason, message) = plan.record.error.as_ref().map_or_else(
                || ("Failed", "the job failed".to_owned()),
                |e| (reasons::to_static(&e.reason, "Failed"), e.message.clone()),
            );
            cond(ConditionType::Stalled, true, reason, message)
        }
        _ => cond(
            ConditionType::Stalled,
            false,
            "NotStalled",
            "nothing waits for the user".into(),
        ),
    };
    set_condition(&mut s.conditions, blocked, generation, &now);
    set_condition(&mut s.conditions, stalled, generation, &now);
    let reconciling = DesiredCondition {
        type_: ConditionType::Reconciling,
        ..progressing
    };
    set_condition(&mut s.conditions, reconciling, generation, &now);

    if let Some(d) = deployed {
        checkpoint(o, d, &mut s);
    }
    let stale = checkpoint_stale(o, phase, &s);
    set_condition(&mut s.conditions, stale, generation, &now);
    if let Some(progress) = &o.progress {
        s.lag = Some(lag(o, progress, &now));
    }
    let lag_high = lag_high(o, phase, s.lag.as_ref());
    set_condition(&mut s.conditions, lag_high, generation, &now);
    s
}

/// How far behind the job may fall, in seconds at its recent rate, before LagHigh.
pub const LAG_HIGH_SECONDS: f64 = 300.0;
/// How long committed offsets may stand still with records waiting before LagHigh.
pub const LAG_STALLED: std::time::Duration = std::time::Duration::from_secs(60);
/// How many partitions `status.lag.partitions` lists.
pub const LAG_TOP_PARTITIONS: usize = 10;

/// `status.checkpoint`: the oldest of the workers' latest checkpoints (the point every
/// worker has passed), once every worker of the running generation reports one; the last
/// failure from a worker that is retrying.
fn checkpoint(o: &Observed, deployed: &oxbow_crds::jobfile::JobFile, s: &mut StreamJobStatus) {
    let latest: Option<Vec<&oxbow_crds::admin::CheckpointSummary>> = deployed
        .assignment
        .workers
        .iter()
        .map(|w| {
            o.workers
                .get(&w.ordinal)
                .filter(|st| st.assignment_generation == deployed.assignment.generation)
                .and_then(|st| st.last_checkpoint.as_ref())
        })
        .collect();
    let oldest = latest.and_then(|l| l.into_iter().min_by_key(|c| c.completed_at_ms));
    let status = s.checkpoint.get_or_insert_with(Default::default);
    if let Some(c) = oldest
        && let Ok(at) = k8s_openapi::jiff::Timestamp::from_millisecond(c.completed_at_ms)
    {
        status.last_completed = Some(oxbow_crds::streamjob::CheckpointInfo {
            id: c.id,
            completed_at: Time(at),
            duration_ms: c.duration_ms,
            size_bytes: c.size_bytes,
            path: c.path.clone(),
        });
    }
    let failing = o
        .workers
        .values()
        .find(|w| w.state == WorkerState::Retrying)
        .map(|w| {
            let why = w.error.as_deref().unwrap_or("no reason given");
            format!("worker {}: {why}", w.ordinal)
        });
    if let Some(message) = failing
        && status
            .last_failure
            .as_ref()
            .is_none_or(|f| f.message != message)
    {
        status.last_failure = Some(oxbow_crds::streamjob::CheckpointFailure {
            at: Time(o.now),
            reason: "Retrying".into(),
            message,
        });
    }
    if status.last_completed.is_none() && status.last_failure.is_none() {
        s.checkpoint = None;
    }
}

/// CheckpointStale: the job runs but its last completed checkpoint is older than three
/// intervals (at least the interval plus the checkpoint timeout). Output is committed only
/// with checkpoints, so a stale checkpoint means nothing new reaches the sink.
fn checkpoint_stale(o: &Observed, phase: Phase, s: &StreamJobStatus) -> DesiredCondition {
    let fresh = |message: String| cond(ConditionType::CheckpointStale, false, "Fresh", message);
    let Some(c) = o
        .validation
        .as_ref()
        .ok()
        .and_then(|v| v.checkpoint.as_ref())
    else {
        return fresh(
            "checkpoints are judged once the spec is valid and checkpoints are configured".into(),
        );
    };
    let allowed = (c.interval * 3).max(c.interval + c.timeout);
    let last = s
        .checkpoint
        .as_ref()
        .and_then(|c| c.last_completed.as_ref());
    match (phase, last) {
        (Phase::Running, Some(last)) => {
            let ms = o.now.as_millisecond() - last.completed_at.0.as_millisecond();
            let age = std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
            if age > allowed {
                let why = s
                    .checkpoint
                    .as_ref()
                    .and_then(|c| c.last_failure.as_ref())
                    .map(|f| format!("; last failure: {}", f.message))
                    .unwrap_or_default();
                cond(
                    ConditionType::CheckpointStale,
                    true,
                    "NoRecentCheckpoint",
                    format!(
                        "the last checkpoint completed {}s ago (allowed {}s){why}",
                        age.as_secs(),
                        allowed.as_secs()
                    ),
                )
            } else {
                fresh(format!(
                    "the last checkpoint completed {}s ago",
                    age.as_secs()
                ))
            }
        }
        (Phase::Running, None) => fresh("no checkpoint completed yet".into()),
        _ => fresh(format!(
            "checkpoints are not judged while {}",
            phase.as_str()
        )),
    }
}

/// `status.lag` from Kafka's offsets: total, the largest partition, the partitions furthest
/// behind, and seconds to catch up at the recent commit rate.
fn lag(
    o: &Observed,
    progress: &super::KafkaProgress,
    now: &Time,
) -> oxbow_crds::streamjob::LagStatus {
    let earliest =
        o.spec.source.starting_offsets == oxbow_crds::streamjob::StartingOffsets::Earliest;
    let mut partitions: Vec<oxbow_crds::streamjob::PartitionLag> = progress
        .partitions
        .iter()
        .map(|p| oxbow_crds::streamjob::PartitionLag {
            topic: p.topic.clone(),
            partition: p.partition,
            records: p.lag(earliest),
        })
        .collect();
    partitions.sort_by(|a, b| {
        b.records
            .cmp(&a.records)
            .then_with(|| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)))
    });
    let records: i64 = partitions.iter().map(|p| p.records).sum();
    let max_partition_records = partitions.first().map_or(0, |p| p.records);
    partitions.retain(|p| p.records > 0);
    partitions.truncate(LAG_TOP_PARTITIONS);
    #[allow(clippy::cast_precision_loss)]
    let seconds = match progress.commit_rate {
        _ if records == 0 => Some(0.0),
        Some(rate) if rate > 0.0 => Some(((records as f64 / rate) * 10.0).round() / 10.0),
        _ => None,
    };
    oxbow_crds::streamjob::LagStatus {
        records,
        max_partition_records,
        seconds,
        updated_at: Some(now.clone()),
        partitions,
    }
}

/// LagHigh: catching up would take longer than [`LAG_HIGH_SECONDS`] at the recent rate, or
/// records have waited [`LAG_STALLED`] with the committed offsets standing still.
fn lag_high(
    o: &Observed,
    phase: Phase,
    lag: Option<&oxbow_crds::streamjob::LagStatus>,
) -> DesiredCondition {
    let Some(lag) = lag else {
        return cond(
            ConditionType::LagHigh,
            false,
            "LagUnknown",
            "Kafka did not answer; lag is unknown".into(),
        );
    };
    let stalled = o
        .progress
        .as_ref()
        .and_then(|p| p.stalled_for)
        .filter(|d| *d >= LAG_STALLED && lag.records > 0);
    if let Some(d) = stalled {
        let why = if phase == Phase::Suspended {
            " (the job is suspended)"
        } else {
            ""
        };
        return cond(
            ConditionType::LagHigh,
            true,
            "NotConsuming",
            format!(
                "{} records wait and nothing was committed for {}s{why}",
                lag.records,
                d.as_secs()
            ),
        );
    }
    match lag.seconds {
        Some(secs) if secs > LAG_HIGH_SECONDS => cond(
            ConditionType::LagHigh,
            true,
            "FallingBehind",
            format!(
                "{} records behind, about {secs:.0}s at the recent rate (threshold {LAG_HIGH_SECONDS:.0}s)",
                lag.records
            ),
        ),
        _ => cond(
            ConditionType::LagHigh,
            false,
            "LagNormal",
            format!("{} records behind", lag.records),
        ),
    }
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
