//! Which Event reports an action once it succeeded: a pure function of the action.

use kube::runtime::events::EventType;

use crate::plan::Action;

/// An Event to publish on the StreamJob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Note {
    pub type_: EventType,
    /// Static, so that Event reasons stay a bounded set.
    pub reason: &'static str,
    pub message: String,
}

/// The Event reporting `action`, if any. `first_deploy`: no job file was deployed before it;
/// `history_limit`: `spec.savepoint.historyLimit`, quoted when savepoints are disposed of.
pub(super) fn event(action: &Action, first_deploy: bool, history_limit: i32) -> Option<Note> {
    let note = |type_, reason, message: &str| {
        Some(Note {
            type_,
            reason,
            message: message.to_owned(),
        })
    };
    match action {
        Action::CreateOrUpdateChildren { .. } if first_deploy => {
            note(EventType::Normal, "Deploying", "Created the job's workers")
        }
        Action::MarkStable { .. } => note(
            EventType::Normal,
            "Running",
            "Every worker restored and is processing",
        ),
        Action::DisposeSavepoints { savepoints, .. } => {
            let ids: Vec<&str> = savepoints.iter().map(|s| s.id.as_str()).collect();
            note(
                EventType::Normal,
                "SavepointsDisposed",
                &format!(
                    "Deleted savepoints {ids:?} from storage (savepoint.historyLimit {history_limit})"
                ),
            )
        }
        Action::RemoveFinalizer { reason, message } => {
            let type_ = match *reason {
                "FinalSavepointTaken" | "NothingToSave" | "FinalSavepointDisabled" => {
                    EventType::Normal
                }
                _ => EventType::Warning,
            };
            note(type_, reason, message)
        }
        Action::Block { reason, message } | Action::Fail { reason, message } => {
            note(EventType::Warning, reason, message)
        }
        Action::ReportInvalid { message } => note(EventType::Warning, "InvalidSpec", message),
        Action::CreateOrUpdateChildren { .. }
        | Action::RequestSavepoint { .. }
        | Action::WaitForSavepoint { .. }
        | Action::StopWorkers
        | Action::Fence { .. }
        | Action::RollOut { .. }
        | Action::DeletePods { .. }
        | Action::ScaleToZero { .. }
        | Action::Wait { .. }
        | Action::AddFinalizer
        | Action::Nothing => None,
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn reason_and_type(action: &Action, first_deploy: bool) -> Option<(&'static str, EventType)> {
        event(action, first_deploy, 5).map(|n| (n.reason, n.type_))
    }

    #[test]
    fn only_the_first_deploy_is_announced() {
        let job_file = Box::new(crate::children::fixtures::job_file());
        let create = Action::CreateOrUpdateChildren {
            job_file: job_file.clone(),
        };
        assert_eq!(
            reason_and_type(&create, true),
            Some(("Deploying", EventType::Normal))
        );
        assert_eq!(reason_and_type(&create, false), None, "a repair is silent");
        assert_eq!(reason_and_type(&Action::RollOut { job_file }, true), None);
    }

    #[test]
    fn a_final_savepoint_that_was_not_taken_is_a_warning() {
        let remove = |reason| Action::RemoveFinalizer {
            reason,
            message: "m".into(),
        };
        for reason in [
            "FinalSavepointTaken",
            "NothingToSave",
            "FinalSavepointDisabled",
        ] {
            assert_eq!(
                reason_and_type(&remove(reason), false),
                Some((reason, EventType::Normal))
            );
        }
        assert_eq!(
            reason_and_type(&remove("FinalSavepointFailed"), false),
            Some(("FinalSavepointFailed", EventType::Warning))
        );
    }

    #[test]
    fn failures_a_user_should_see_are_warnings() {
        let block = Action::Block {
            reason: "SavepointFailed",
            message: "m".into(),
        };
        let invalid = Action::ReportInvalid {
            message: "spec.replicas: must be positive".into(),
        };
        assert_eq!(
            reason_and_type(&block, false),
            Some(("SavepointFailed", EventType::Warning))
        );
        let note = event(&invalid, false, 5).unwrap();
        assert_eq!(
            (note.reason, note.type_, note.message.as_str()),
            (
                "InvalidSpec",
                EventType::Warning,
                "spec.replicas: must be positive"
            )
        );
    }

    #[test]
    fn disposed_savepoints_are_named_with_the_limit() {
        let savepoint = |id: &str| {
            serde_json::from_value::<oxbow_crds::streamjob::SavepointInfo>(serde_json::json!({
                "id": id, "path": format!("s3://b/{id}"),
                "completedAt": "2024-01-01T00:00:00Z", "trigger": "Periodic"
            }))
            .unwrap()
        };
        let dispose = Action::DisposeSavepoints {
            savepoints: vec![savepoint("a"), savepoint("b")],
            ordinal: 0,
        };
        let note = event(&dispose, false, 3).unwrap();
        assert_eq!(note.reason, "SavepointsDisposed");
        assert_eq!(
            note.message,
            r#"Deleted savepoints ["a", "b"] from storage (savepoint.historyLimit 3)"#
        );
    }
}
