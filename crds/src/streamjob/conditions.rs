//! Condition bookkeeping with the Kubernetes conventions: one condition per type, and a
//! `lastTransitionTime` that moves only when the condition's status changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition types a StreamJob reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// Every worker is restored and processing the current generation.
    Ready,
    /// An operation (deploy, upgrade, rescale, suspend) is under way.
    Progressing,
    /// Something needs attention: a failed operation, an invalid spec, crashing workers.
    Degraded,
    /// No checkpoint completed for several intervals.
    CheckpointStale,
    /// Lag is above its threshold.
    LagHigh,
    /// An upgrade waits because its savepoint failed and the policy is `block`.
    UpgradeBlocked,
    /// kstatus: the operator is working towards the spec (mirrors Progressing).
    Reconciling,
    /// kstatus: the operator cannot make progress without the user (the job Failed, or an
    /// upgrade is blocked).
    Stalled,
}

impl ConditionType {
    /// Every condition type, in the order they are reported.
    pub const ALL: [ConditionType; 8] = [
        ConditionType::Ready,
        ConditionType::Progressing,
        ConditionType::Degraded,
        ConditionType::CheckpointStale,
        ConditionType::LagHigh,
        ConditionType::UpgradeBlocked,
        ConditionType::Reconciling,
        ConditionType::Stalled,
    ];

    /// The type as written in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Progressing => "Progressing",
            ConditionType::Degraded => "Degraded",
            ConditionType::CheckpointStale => "CheckpointStale",
            ConditionType::LagHigh => "LagHigh",
            ConditionType::UpgradeBlocked => "UpgradeBlocked",
            ConditionType::Reconciling => "Reconciling",
            ConditionType::Stalled => "Stalled",
        }
    }
}

/// A condition as the operator decided it, before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    /// Which condition.
    pub type_: ConditionType,
    /// True or false.
    pub status: bool,
    /// CamelCase reason, from a fixed set.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
}

/// Merges `desired` into `conditions` for `generation` at `now`: replaces the condition of the
/// same type, keeping its `lastTransitionTime` when the status did not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    desired: DesiredCondition,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if desired.status { "True" } else { "False" };
    let type_ = desired.type_.as_str();
    let existing = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match existing {
        Some(i) if conditions[i].status == status => conditions[i].last_transition_time.clone(),
        _ => now.clone(),
    };
    let condition = Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: desired.reason.to_owned(),
        message: desired.message,
        observed_generation: generation,
        last_transition_time,
    };
    match existing {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// The condition of `type_`, if present.
pub fn find_condition(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn ready(status: bool, reason: &'static str) -> DesiredCondition {
        DesiredCondition {
            type_: ConditionType::Ready,
            status,
            reason,
            message: format!("{reason} message"),
        }
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            ready(false, "Deploying"),
            Some(1),
            &at(100),
        );
        assert_eq!(conditions[0].last_transition_time, at(100));

        set_condition(
            &mut conditions,
            ready(false, "Restoring"),
            Some(2),
            &at(200),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(
            conditions[0].last_transition_time,
            at(100),
            "same status keeps the time"
        );
        assert_eq!(conditions[0].reason, "Restoring");
        assert_eq!(conditions[0].observed_generation, Some(2));

        set_condition(
            &mut conditions,
            ready(true, "AllWorkersReady"),
            Some(2),
            &at(300),
        );
        assert_eq!(conditions[0].status, "True");
        assert_eq!(conditions[0].last_transition_time, at(300));
    }

    #[test]
    fn conditions_of_different_types_coexist() {
        let mut conditions = Vec::new();
        for (i, type_) in ConditionType::ALL.into_iter().enumerate() {
            let desired = DesiredCondition {
                type_,
                status: false,
                reason: "AsExpected",
                message: String::new(),
            };
            set_condition(&mut conditions, desired, Some(1), &at(i as i64));
        }
        assert_eq!(conditions.len(), ConditionType::ALL.len());
        let blocked = find_condition(&conditions, ConditionType::UpgradeBlocked).unwrap();
        assert_eq!(blocked.last_transition_time, at(5));
    }
}
