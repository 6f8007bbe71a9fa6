//! [`plan`]: the state machine itself. See the module docs of [`super`] for the table.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use oxbow_crds::{
    StreamJobSpec,
    admin::WorkerState,
    assignment::{Assignment, assign},
    jobfile::{JobFile, Restore},
    names,
    state_shape::{ShapeChange, classify_pipelines},
    streamjob::{
        ConditionType, ErrorStatus, JobState, Operation, OperationStep, OperationType,
        SavepointFailurePolicy, SavepointInProgress, SavepointInfo, SavepointStatus,
        SavepointTrigger, UpgradeMode, find_condition,
    },
    validation::validate,
};
use sha2::{Digest, Sha256};

use super::{
    Action, Observed, Plan, Record,
    savepoint::{Gathered, gather},
};
use crate::{
    children::statefulset::worker_replicas,
    diff::{Change, ChangeKind, classify},
};

/// How often to look again while waiting on workers.
const POLL: Duration = Duration::from_secs(2);
/// Defaults when a duration in the spec does not parse (validation reports it).
const DEFAULT_SAVEPOINT_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(300);

/// Error reasons the planner records in `status.error`.
pub(crate) mod reasons {
    /// The spec failed validation.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A savepoint failed on a worker.
    pub const SAVEPOINT_FAILED: &str = "SavepointFailed";
    /// A savepoint did not complete within `savepointTimeout`.
    pub const SAVEPOINT_TIMED_OUT: &str = "SavepointTimedOut";
    /// A worker resumed processing after its stop-with-savepoint.
    pub const SAVEPOINT_STALE: &str = "SavepointStale";
    /// The new generation did not become ready; the job returned to the last stable spec.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// The rollback did not become ready either.
    pub const ROLLBACK_FAILED: &str = "RollbackFailed";
    /// The new generation did not become ready and there is no stable spec to return to.
    pub const VERIFY_TIMED_OUT: &str = "VerifyTimedOut";
    /// The stable job file disappeared during a rollback.
    pub const STABLE_SPEC_MISSING: &str = "StableSpecMissing";
    /// An upgrade would change the window state in a way it cannot be restored.
    pub const INCOMPATIBLE_STATE: &str = "IncompatibleState";

    /// Every reason above, to map a stored reason back to a static one.
    pub const ALL: [&str; 9] = [
        INVALID_SPEC,
        SAVEPOINT_FAILED,
        SAVEPOINT_TIMED_OUT,
        SAVEPOINT_STALE,
        ROLLED_BACK,
        ROLLBACK_FAILED,
        VERIFY_TIMED_OUT,
        STABLE_SPEC_MISSING,
        INCOMPATIBLE_STATE,
    ];

    /// The static reason equal to `reason`, or `fallback`.
    pub fn to_static(reason: &str, fallback: &'static str) -> &'static str {
        ALL.into_iter().find(|r| *r == reason).unwrap_or(fallback)
    }
}

/// Decides the next step. Pure: the same observation always gives the same plan.
pub fn plan(observed: &Observed) -> Plan {
    let mut planner = Planner {
        o: observed,
        record: Record::of(&observed.status),
    };
    let action = planner.decide();
    Plan {
        record: planner.record,
        action,
    }
}

/// Lowercase hex SHA-256 of the spec's JSON: what `status.lastStableSpecHash` holds.
pub fn spec_hash(spec: &StreamJobSpec) -> String {
    let json = serde_json::to_vec(spec).unwrap_or_default();
    let mut hex = String::with_capacity(64);
    for byte in Sha256::digest(&json).iter() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

struct Planner<'a> {
    o: &'a Observed,
    record: Record,
}

impl<'a> Planner<'a> {
    fn decide(&mut self) -> Action {
        let o = self.o;
        match &o.validation {
            Err(e) => self.set_error(reasons::INVALID_SPEC, e.to_string()),
            Ok(_) => self.clear_error_if(|r| r == reasons::INVALID_SPEC),
        }
        if o.deleting {
            return self.deleting();
        }
        if o.spec.savepoint.on_delete != o.has_finalizer {
            return if o.spec.savepoint.on_delete {
                Action::AddFinalizer
            } else {
                Action::RemoveFinalizer {
                    reason: "FinalSavepointDisabled",
                    message: "savepoint.onDelete is off: no final savepoint on deletion".into(),
                }
            };
        }
        let Some(deployed) = &o.deployed else {
            return self.first_deploy();
        };
        if let Some(op) = self.record.operation.clone() {
            return self.step(deployed, op);
        }
        if let Some(sp) = self.in_progress().cloned() {
            return self.savepoint_without_stop(deployed, sp);
        }
        self.idle(deployed)
    }

    // --- deletion -----------------------------------------------------------------------

    /// The StreamJob is being deleted: take the final savepoint (stop-with-savepoint) when
    /// the finalizer asks for one and the job runs, then let go of the finalizer so that
    /// garbage collection removes the children. A final savepoint that cannot be taken never
    /// blocks the deletion: the finalizer goes with a Warning event, and the latest savepoint
    /// and checkpoints stay in storage.
    fn deleting(&mut self) -> Action {
        let o = self.o;
        if !o.has_finalizer {
            return Action::Nothing;
        }
        let Some(deployed) = &o.deployed else {
            return Action::RemoveFinalizer {
                reason: "NothingToSave",
                message: "the job never ran: no final savepoint".into(),
            };
        };
        let final_savepoint = self
            .in_progress()
            .filter(|s| s.trigger == SavepointTrigger::Delete)
            .cloned();
        let Some(sp) = final_savepoint else {
            let running = deployed.spec.state == JobState::Running
                && self.record.operation.is_none()
                && o.all_healthy(deployed);
            if !running {
                return Action::RemoveFinalizer {
                    reason: "FinalSavepointSkipped",
                    message: "no final savepoint: the job is not running (suspended, failed or mid-operation); its latest savepoint and checkpoints stay in storage".into(),
                };
            }
            let id = self.begin_savepoint(SavepointTrigger::Delete, o.generation);
            return Action::RequestSavepoint {
                id,
                ordinals: ordinals(deployed),
                stop: true,
            };
        };
        let timeout = parse_or(&o.spec.upgrade.savepoint_timeout, DEFAULT_SAVEPOINT_TIMEOUT);
        let failure = match gather(&o.savepoints, &sp.id, &ordinals(deployed)) {
            Gathered::Completed(path) => {
                self.savepoint_completed(&sp.id, &path, SavepointTrigger::Delete);
                return Action::RemoveFinalizer {
                    reason: "FinalSavepointTaken",
                    message: format!("final savepoint {} taken at {path}", sp.id),
                };
            }
            Gathered::Failed(message) => message,
            Gathered::Pending(_) if elapsed(o.now, sp.started_at.0) > timeout => {
                format!("savepoint {} did not complete within {timeout:?}", sp.id)
            }
            Gathered::Pending(missing) if !missing.is_empty() => {
                return Action::RequestSavepoint {
                    id: sp.id,
                    ordinals: missing,
                    stop: true,
                };
            }
            Gathered::Pending(_) => {
                return Action::WaitForSavepoint {
                    id: sp.id,
                    requeue_after: POLL,
                };
            }
        };
        self.savepoint_status().in_progress = None;
        Action::RemoveFinalizer {
            reason: "FinalSavepointFailed",
            message: format!(
                "the final savepoint failed ({failure}); the latest savepoint and checkpoints stay in storage"
            ),
        }
    }

    // --- no operation -------------------------------------------------------------------

    fn first_deploy(&mut self) -> Action {
        let o = self.o;
        if let Err(e) = &o.validation {
            return Action::ReportInvalid {
                message: e.to_string(),
            };
        }
        let assignment = match self.assignment(&o.spec, None) {
            Ok(a) => a,
            Err(wait) => return wait,
        };
        let restore = match &o.spec.restore_from {
            Some(r) => Restore::Savepoint {
                path: r.savepoint_path.clone(),
            },
            None => fallback_restore(&o.spec),
        };
        self.savepoint_status().observed_trigger_nonce = Some(o.spec.savepoint.trigger_nonce);
        Action::CreateOrUpdateChildren {
            job_file: Box::new(
                self.job_file(o.generation, &o.spec, assignment, restore)
                    .with_restore_request(restore_request("create", o.generation, &[])),
            ),
        }
    }

    fn idle(&mut self, deployed: &'a JobFile) -> Action {
        let o = self.o;
        // Repair drift first: it only re-applies what already runs.
        let replicas = worker_replicas(&deployed.spec);
        let drifted = o
            .stateful_set
            .as_ref()
            .is_none_or(|s| s.replicas != replicas || !s.runs_deployed);
        if drifted {
            return Action::CreateOrUpdateChildren {
                job_file: Box::new(deployed.clone()),
            };
        }
        let idle: Vec<u32> = o
            .pods
            .iter()
            .filter(|p| !p.terminating)
            .filter(|p| {
                o.workers
                    .get(&p.ordinal)
                    .is_some_and(|w| w.state == WorkerState::Idle)
            })
            .map(|p| p.ordinal)
            .collect();
        if !idle.is_empty() {
            // Left stopped by an aborted operation: restart them from their last checkpoint.
            return Action::DeletePods { ordinals: idle };
        }
        if let Err(e) = &o.validation {
            return Action::ReportInvalid {
                message: e.to_string(),
            };
        }

        let (target, target_generation) = self.target(deployed);
        let change = if target_generation > deployed.spec_generation {
            classify(&deployed.spec, target)
        } else {
            Change::default()
        };
        let mut operation = match change.kind() {
            ChangeKind::Suspend => Some(OperationType::Suspend),
            ChangeKind::Resume => Some(OperationType::Resume),
            ChangeKind::RestartRequired => Some(OperationType::Upgrade),
            ChangeKind::Rescale => Some(OperationType::Rescale),
            _ => None,
        };
        if operation.is_none()
            && deployed.spec.state == JobState::Running
            && target.state == JobState::Running
            && self
                .assignment(target, Some(&deployed.assignment))
                .is_ok_and(|a| a.workers != deployed.assignment.workers)
        {
            operation = Some(OperationType::Rescale);
        }
        if let Some(type_) = operation {
            if let Some(blocked) = self.blocked() {
                return blocked;
            }
            return self.start(deployed, type_, &change);
        }

        let nonce = o.spec.savepoint.trigger_nonce;
        if deployed.spec.state == JobState::Suspended {
            // Nothing runs to take a savepoint of.
            self.savepoint_status().observed_trigger_nonce = Some(nonce);
            return Action::Nothing;
        }
        match self
            .record
            .savepoint
            .as_ref()
            .and_then(|s| s.observed_trigger_nonce)
        {
            None => self.savepoint_status().observed_trigger_nonce = Some(nonce),
            Some(seen) if seen != nonce => {
                return self.start_savepoint(deployed, SavepointTrigger::Manual);
            }
            Some(_) => {}
        }

        if o.all_healthy(deployed) {
            let hash = spec_hash(&deployed.spec);
            if self.record.last_stable_spec_hash.as_deref() != Some(hash.as_str())
                || o.stable.as_ref() != Some(deployed)
            {
                self.record.last_stable_spec_hash = Some(hash);
                return Action::MarkStable {
                    job_file: Box::new(deployed.clone()),
                };
            }
            if let Some(dispose) = self.disposable(deployed) {
                return dispose;
            }
            let interval = o
                .validation
                .as_ref()
                .ok()
                .and_then(|v| v.savepoint_interval);
            if let Some(interval) = interval {
                let last = self
                    .record
                    .savepoint
                    .as_ref()
                    .and_then(|s| s.last.as_ref())
                    .map(|l| l.completed_at.0);
                if last.is_none_or(|at| elapsed(o.now, at) >= interval) {
                    return self.start_savepoint(deployed, SavepointTrigger::Periodic);
                }
            }
        }
        Action::Nothing
    }

    /// Savepoints beyond `savepoint.historyLimit`, oldest first, to delete from storage
    /// through a running worker (which holds the storage credentials). Never the savepoint
    /// the running generation restored from, nor the latest upgrade or rescale savepoint.
    fn disposable(&self, deployed: &JobFile) -> Option<Action> {
        let o = self.o;
        let history = &self.record.savepoint.as_ref()?.history;
        let limit = usize::try_from(o.spec.savepoint.history_limit.max(1)).unwrap_or(1);
        if history.len() <= limit {
            return None;
        }
        let restored = match &deployed.restore {
            Restore::Savepoint { path } => Some(path.as_str()),
            _ => None,
        };
        let latest_upgrade = history
            .iter()
            .find(|h| {
                matches!(
                    h.trigger,
                    SavepointTrigger::Upgrade | SavepointTrigger::Rescale
                )
            })
            .map(|h| h.id.as_str());
        let savepoints: Vec<SavepointInfo> = history[limit..]
            .iter()
            .filter(|h| Some(h.path.as_str()) != restored && Some(h.id.as_str()) != latest_upgrade)
            .cloned()
            .collect();
        let ordinal = deployed
            .assignment
            .workers
            .iter()
            .map(|w| w.ordinal)
            .find(|ord| o.worker_healthy(*ord, deployed))?;
        (!savepoints.is_empty()).then_some(Action::DisposeSavepoints {
            savepoints,
            ordinal,
        })
    }

    /// Records the first step of a new operation and takes it.
    fn start(&mut self, deployed: &'a JobFile, type_: OperationType, change: &Change) -> Action {
        let o = self.o;
        let (target, target_generation) = self.target(deployed);
        self.record.error = None;
        let requested = target
            .restore_from
            .as_ref()
            .filter(|_| change.restore_requested())
            .map(|r| r.savepoint_path.clone());
        let mode = target.upgrade.mode;
        // What the change does to the window state, decided before anything is stopped. A
        // stateless upgrade keeps no state, and a requested savepoint's shape is the workers'
        // to check.
        let state_change = match (&o.validation, validate(&deployed.spec)) {
            (Ok(new), Ok(old)) if mode != UpgradeMode::Stateless && requested.is_none() => {
                classify_pipelines(&old.pipeline, &new.pipeline)
            }
            _ => None,
        };
        if let Some(ShapeChange::Incompatible { reason }) = &state_change
            && !target.upgrade.discard_incompatible_state
        {
            let message = format!(
                "the upgrade is refused: {reason}; the previous generation keeps running. Set spec.upgrade.discardIncompatibleState: true to start that state empty"
            );
            self.set_error(reasons::INCOMPATIBLE_STATE, message.clone());
            return Action::Block {
                reason: reasons::INCOMPATIBLE_STATE,
                message,
            };
        }
        let mut op = Operation {
            type_,
            step: OperationStep::Fencing,
            started_at: Time(o.now),
            target_generation,
            savepoint_path: None,
            savepoint_id: None,
            state_change: state_change.map(|c| c.to_string()),
        };
        match type_ {
            OperationType::Resume => {
                op.savepoint_path = requested.or_else(|| match &deployed.restore {
                    Restore::Savepoint { path } => Some(path.clone()),
                    _ => None,
                });
            }
            OperationType::Suspend if mode == UpgradeMode::Stateless => {
                op.step = OperationStep::RollingOut;
            }
            OperationType::Suspend => op.step = OperationStep::Savepointing,
            _ if requested.is_some() => op.savepoint_path = requested,
            _ if mode == UpgradeMode::Savepoint => op.step = OperationStep::Savepointing,
            _ => {}
        }
        if op.step == OperationStep::Savepointing {
            op.savepoint_id = Some(self.begin_savepoint(trigger_of(type_), target_generation));
        }
        self.record.operation = Some(op.clone());
        self.step(deployed, op)
    }

    // --- savepoints outside operations ----------------------------------------------------

    fn start_savepoint(&mut self, deployed: &'a JobFile, trigger: SavepointTrigger) -> Action {
        let id = self.begin_savepoint(trigger, self.o.generation);
        let in_progress = SavepointInProgress {
            id,
            started_at: Time(self.o.now),
            trigger,
        };
        self.savepoint_without_stop(deployed, in_progress)
    }

    fn savepoint_without_stop(&mut self, deployed: &'a JobFile, sp: SavepointInProgress) -> Action {
        let o = self.o;
        let manual = sp.trigger == SavepointTrigger::Manual;
        let finish = |p: &mut Self| {
            if manual {
                p.savepoint_status().observed_trigger_nonce = Some(o.spec.savepoint.trigger_nonce);
            }
        };
        let timeout = parse_or(&o.spec.upgrade.savepoint_timeout, DEFAULT_SAVEPOINT_TIMEOUT);
        let failure = match gather(&o.savepoints, &sp.id, &ordinals(deployed)) {
            Gathered::Completed(path) => {
                self.savepoint_completed(&sp.id, &path, sp.trigger);
                finish(self);
                self.clear_error_if(|r| {
                    r == reasons::SAVEPOINT_FAILED || r == reasons::SAVEPOINT_TIMED_OUT
                });
                return Action::Nothing;
            }
            Gathered::Failed(message) => (reasons::SAVEPOINT_FAILED, message),
            Gathered::Pending(_) if elapsed(o.now, sp.started_at.0) > timeout => (
                reasons::SAVEPOINT_TIMED_OUT,
                format!("savepoint {} did not complete within {timeout:?}", sp.id),
            ),
            Gathered::Pending(missing) if !missing.is_empty() => {
                return Action::RequestSavepoint {
                    id: sp.id,
                    ordinals: missing,
                    stop: false,
                };
            }
            Gathered::Pending(_) => {
                return Action::WaitForSavepoint {
                    id: sp.id,
                    requeue_after: POLL,
                };
            }
        };
        self.savepoint_status().in_progress = None;
        finish(self);
        self.set_error(failure.0, failure.1);
        Action::Nothing
    }

    // --- operation steps ----------------------------------------------------------------

    fn step(&mut self, deployed: &'a JobFile, op: Operation) -> Action {
        match op.step {
            OperationStep::Savepointing => self.savepointing(deployed, op),
            OperationStep::Fencing => self.fencing(deployed, op),
            OperationStep::RollingOut => self.rolling_out(deployed, op),
            OperationStep::Verifying => self.verifying(deployed, op),
        }
    }

    fn savepointing(&mut self, deployed: &'a JobFile, mut op: Operation) -> Action {
        let o = self.o;
        let Some(id) = op.savepoint_id.clone() else {
            // Recorded without an id (by an older operator): ask again under a fresh one.
            let (_, generation) = self.target(deployed);
            op.savepoint_id = Some(self.begin_savepoint(trigger_of(op.type_), generation));
            self.record.operation = Some(op.clone());
            return self.savepointing(deployed, op);
        };
        let started = self
            .in_progress()
            .filter(|s| s.id == id)
            .map_or(op.started_at.0, |s| s.started_at.0);
        let (target, _) = self.target(deployed);
        let timeout = parse_or(&target.upgrade.savepoint_timeout, DEFAULT_SAVEPOINT_TIMEOUT);
        let timed_out = elapsed(o.now, started) > timeout;
        let old = ordinals(deployed);
        match gather(&o.savepoints, &id, &old) {
            Gathered::Completed(path) => {
                let busy: Vec<u32> = old
                    .iter()
                    .copied()
                    .filter(|ord| o.pod(*ord).is_some())
                    .filter(|ord| o.workers.get(ord).map(|w| w.state) != Some(WorkerState::Idle))
                    .collect();
                if !busy.is_empty() {
                    if timed_out {
                        let message = format!(
                            "workers {busy:?} did not stop after savepoint {id} within {timeout:?}"
                        );
                        return self.savepoint_failed(
                            deployed,
                            op,
                            reasons::SAVEPOINT_TIMED_OUT,
                            message,
                        );
                    }
                    return Action::Wait {
                        reason: "WorkersStopping",
                        requeue_after: POLL,
                    };
                }
                self.savepoint_completed(&id, &path, trigger_of(op.type_));
                op.step = after_savepoint(op.type_);
                op.savepoint_path = Some(path);
                self.record.operation = Some(op.clone());
                self.step(deployed, op)
            }
            Gathered::Failed(message) => {
                self.savepoint_failed(deployed, op, reasons::SAVEPOINT_FAILED, message)
            }
            Gathered::Pending(_) if timed_out => {
                let message = format!("savepoint {id} did not complete within {timeout:?}");
                self.savepoint_failed(deployed, op, reasons::SAVEPOINT_TIMED_OUT, message)
            }
            Gathered::Pending(missing) if !missing.is_empty() => Action::RequestSavepoint {
                id,
                ordinals: missing,
                stop: true,
            },
            Gathered::Pending(_) => Action::WaitForSavepoint {
                id,
                requeue_after: POLL,
            },
        }
    }

    /// `onSavepointFailure`: continue from a fresh enough checkpoint, or block.
    fn savepoint_failed(
        &mut self,
        deployed: &'a JobFile,
        mut op: Operation,
        reason: &'static str,
        message: String,
    ) -> Action {
        if let Some(sp) = self.record.savepoint.as_mut() {
            sp.in_progress = None;
        }
        let (target, _) = self.target(deployed);
        if target.upgrade.on_savepoint_failure == SavepointFailurePolicy::LastState
            && self.checkpoint_fresh(target)
        {
            op.step = after_savepoint(op.type_);
            op.savepoint_path = None;
            op.savepoint_id = None;
            self.record.operation = Some(op.clone());
            return self.step(deployed, op);
        }
        self.record.operation = None;
        let message = format!(
            "{message}; the previous generation keeps running (upgrade.onSavepointFailure: {})",
            match target.upgrade.on_savepoint_failure {
                SavepointFailurePolicy::Block => "block",
                SavepointFailurePolicy::LastState =>
                    "last-state, but no checkpoint is younger than upgrade.maxCheckpointAge",
            }
        );
        self.set_error(reason, message.clone());
        Action::Block { reason, message }
    }

    fn fencing(&mut self, deployed: &'a JobFile, mut op: Operation) -> Action {
        let o = self.o;
        if op.savepoint_id.is_some() && op.savepoint_path.is_some() {
            let busy: Vec<u32> = o
                .processing_workers()
                .into_iter()
                .filter(|ord| o.pod(*ord).is_some())
                .collect();
            if !busy.is_empty() {
                let message = format!(
                    "workers {busy:?} resumed processing after the savepoint, which is therefore behind their committed progress"
                );
                return self.savepoint_failed(deployed, op, reasons::SAVEPOINT_STALE, message);
            }
        }
        if !o.pods.is_empty() {
            if o.stateful_set.as_ref().is_some_and(|s| s.replicas != 0) {
                return Action::StopWorkers;
            }
            return Action::Wait {
                reason: "WorkersStopping",
                requeue_after: POLL,
            };
        }
        op.step = OperationStep::RollingOut;
        Action::Fence {
            transactional_ids: ordinals(deployed)
                .into_iter()
                .map(|ord| deployed.transactional_id(ord))
                .collect(),
            then: Box::new(op),
        }
    }

    fn rolling_out(&mut self, deployed: &'a JobFile, mut op: Operation) -> Action {
        let o = self.o;
        let (target, _) = self.target(deployed);
        // The user changed the run state while the workers were stopped.
        let wants_suspend = target.state == JobState::Suspended;
        if op.type_ != OperationType::Rollback
            && wants_suspend != (op.type_ == OperationType::Suspend)
        {
            if wants_suspend {
                op.type_ = OperationType::Suspend;
            } else {
                op.type_ = OperationType::Upgrade;
                op.step = OperationStep::Fencing;
            }
            self.record.operation = Some(op.clone());
            return self.step(deployed, op);
        }
        let expected = match self.expected_job_file(deployed, &op) {
            Ok(j) => j,
            Err(action) => return action,
        };
        if op.type_ != OperationType::Rollback && op.target_generation != expected.spec_generation {
            op.target_generation = expected.spec_generation;
            self.record.operation = Some(op.clone());
        }
        let sts = o.stateful_set.as_ref();
        if op.type_ == OperationType::Suspend {
            if deployed != &expected || sts.is_some_and(|s| s.replicas != 0) {
                return Action::ScaleToZero {
                    job_file: Box::new(expected),
                };
            }
            if !o.pods.is_empty() {
                return Action::Wait {
                    reason: "WorkersStopping",
                    requeue_after: POLL,
                };
            }
            self.record.operation = None;
            return Action::Nothing;
        }
        if deployed != &expected {
            if !o.pods.is_empty() {
                // Old-generation pods are back: stop and fence them again first.
                op.step = OperationStep::Fencing;
                self.record.operation = Some(op.clone());
                return self.fencing(deployed, op);
            }
            return Action::RollOut {
                job_file: Box::new(expected),
            };
        }
        let rolled =
            sts.is_some_and(|s| s.runs_deployed && s.replicas == worker_replicas(&expected.spec));
        if !rolled {
            return Action::RollOut {
                job_file: Box::new(expected),
            };
        }
        op.step = OperationStep::Verifying;
        self.record.operation = Some(op.clone());
        self.verifying(deployed, op)
    }

    fn verifying(&mut self, deployed: &'a JobFile, op: Operation) -> Action {
        let o = self.o;
        // A newer spec that needs a restart supersedes the unverified generation.
        if o.validation.is_ok()
            && o.generation > deployed.spec_generation
            && classify(&deployed.spec, &o.spec).kind() >= ChangeKind::Rescale
        {
            self.record.operation = None;
            return self.idle(deployed);
        }
        let stale: Vec<u32> = o
            .pods
            .iter()
            .filter(|p| !p.runs_deployed && !p.terminating)
            .map(|p| p.ordinal)
            .collect();
        if !stale.is_empty() {
            return Action::DeletePods { ordinals: stale };
        }
        if o.all_healthy(deployed) {
            self.record.operation = None;
            self.record.last_stable_spec_hash = Some(spec_hash(&deployed.spec));
            if op.type_ == OperationType::Rollback {
                self.set_error(
                    reasons::ROLLED_BACK,
                    format!(
                        "generation {} did not become ready within upgrade.verifyTimeout; the job runs the last stable spec again. Change the spec to try again",
                        op.target_generation
                    ),
                );
            }
            return Action::MarkStable {
                job_file: Box::new(deployed.clone()),
            };
        }
        let (target, _) = self.target(deployed);
        let timeout = parse_or(&target.upgrade.verify_timeout, DEFAULT_VERIFY_TIMEOUT);
        let since = self.verify_start(&op);
        if elapsed(o.now, since) <= timeout {
            return Action::Wait {
                reason: "WorkersRestoring",
                requeue_after: POLL,
            };
        }
        if op.type_ == OperationType::Rollback {
            self.record.operation = None;
            let message = format!(
                "the rollback of generation {} to the last stable spec did not become ready within {timeout:?}",
                op.target_generation
            );
            self.set_error(reasons::ROLLBACK_FAILED, message.clone());
            return Action::Fail {
                reason: reasons::ROLLBACK_FAILED,
                message,
            };
        }
        let hash = self.record.last_stable_spec_hash.clone();
        let stable = o.stable.as_ref().filter(|s| {
            hash.as_deref() == Some(spec_hash(&s.spec).as_str())
                && s.spec != deployed.spec
                && s.spec.state == JobState::Running
        });
        if stable.is_none() {
            self.record.operation = None;
            let message = format!(
                "generation {} did not become ready within {timeout:?} and there is no other stable spec to return to",
                op.target_generation
            );
            self.set_error(reasons::VERIFY_TIMED_OUT, message.clone());
            return Action::Fail {
                reason: reasons::VERIFY_TIMED_OUT,
                message,
            };
        }
        // What the failed generation's state means to the stable pipeline: when it cannot be
        // restored, every partition goes back to the upgrade's savepoint, and what the failed
        // generation committed after it is produced again — said here, before anything stops.
        let state_change = match (validate(&deployed.spec), stable.map(|s| validate(&s.spec))) {
            (Ok(failed), Some(Ok(stable))) => {
                classify_pipelines(&failed.pipeline, &stable.pipeline).map(|c| match c {
                    ShapeChange::Incompatible { reason } => format!(
                        "incompatible: {reason}; every partition restores from the upgrade's savepoint, and the results generation {} committed after it are produced again",
                        op.target_generation
                    ),
                    other => other.to_string(),
                })
            }
            _ => None,
        };
        let rollback = Operation {
            type_: OperationType::Rollback,
            step: OperationStep::Fencing,
            started_at: Time(o.now),
            target_generation: op.target_generation,
            savepoint_path: op.savepoint_path.clone(),
            savepoint_id: None,
            state_change,
        };
        self.record.operation = Some(rollback.clone());
        self.fencing(deployed, rollback)
    }

    // --- helpers --------------------------------------------------------------------------

    /// The spec to converge to and the generation it answers: the user's, unless it is invalid
    /// or the deployed job file already answers its generation (as after a rollback).
    fn target(&self, deployed: &'a JobFile) -> (&'a StreamJobSpec, i64) {
        let o = self.o;
        if o.validation.is_ok() && o.generation > deployed.spec_generation {
            (&o.spec, o.generation)
        } else {
            (&deployed.spec, deployed.spec_generation)
        }
    }

    fn expected_job_file(
        &mut self,
        deployed: &'a JobFile,
        op: &Operation,
    ) -> Result<JobFile, Action> {
        let restore = |spec: &StreamJobSpec| match &op.savepoint_path {
            Some(path) => Restore::Savepoint { path: path.clone() },
            None => fallback_restore(spec),
        };
        match op.type_ {
            OperationType::Rollback => {
                let Some(stable) = &self.o.stable else {
                    self.record.operation = None;
                    let message =
                        "the last stable job file is gone; the rollback cannot continue".to_owned();
                    self.set_error(reasons::STABLE_SPEC_MISSING, message.clone());
                    return Err(Action::Fail {
                        reason: reasons::STABLE_SPEC_MISSING,
                        message,
                    });
                };
                let assignment = self.assignment(&stable.spec, Some(&deployed.assignment))?;
                let restore = restore(&stable.spec);
                // Without a new request, each partition the failed generation committed goes on
                // from its commits (nothing produced again, nothing lost) and the others restore
                // as the stable spec says. State the stable pipeline cannot take needs a new
                // request: every partition restores from the savepoint.
                let incompatible = op
                    .state_change
                    .as_deref()
                    .is_some_and(|c| c.starts_with(ShapeChange::INCOMPATIBLE));
                let request = if incompatible {
                    operation_restore_request(op)
                } else {
                    deployed.restore_request.clone()
                };
                Ok(self
                    .job_file(op.target_generation, &stable.spec, assignment, restore)
                    .with_restore_request(request))
            }
            OperationType::Suspend => {
                let (spec, generation) = self.target(deployed);
                let restore = restore(spec);
                Ok(self
                    .job_file(generation, spec, deployed.assignment.clone(), restore)
                    .with_restore_request(operation_restore_request(op)))
            }
            _ => {
                let (spec, generation) = self.target(deployed);
                let assignment = self.assignment(spec, Some(&deployed.assignment))?;
                let restore = restore(spec);
                Ok(self
                    .job_file(generation, spec, assignment, restore)
                    .with_restore_request(operation_restore_request(op)))
            }
        }
    }

    fn job_file(
        &self,
        generation: i64,
        spec: &StreamJobSpec,
        assignment: Assignment,
        restore: Restore,
    ) -> JobFile {
        JobFile::new(
            self.o.namespace.clone(),
            self.o.name.clone(),
            generation,
            spec.clone(),
            assignment,
            restore,
        )
    }

    /// The assignment of `spec`'s partitions (and its shuffle topic's) over its workers.
    fn assignment(
        &self,
        spec: &StreamJobSpec,
        previous: Option<&Assignment>,
    ) -> Result<Assignment, Action> {
        let o = self.o;
        let mut topics = BTreeMap::new();
        for topic in &spec.source.topics {
            match o.partitions.get(topic) {
                Some(n) if *n > 0 => {
                    topics.insert(topic.clone(), *n);
                }
                _ => {
                    return Err(Action::Wait {
                        reason: "SourceTopicMissing",
                        requeue_after: Duration::from_secs(30),
                    });
                }
            }
        }
        if validate(spec).is_ok_and(|v| v.pipeline.needs_shuffle()) {
            let max = topics.values().copied().max().unwrap_or(1);
            topics.insert(names::shuffle_topic(&o.namespace, &o.name), max);
        }
        let workers = u32::try_from(worker_replicas(spec)).unwrap_or(0);
        Ok(assign(&topics, workers, previous))
    }

    /// When the Verifying step began, as near as the status tells: the operation's start, or
    /// the completion of its savepoint.
    fn verify_start(&self, op: &Operation) -> Timestamp {
        let savepoint_done = self
            .record
            .savepoint
            .as_ref()
            .and_then(|s| s.last.as_ref())
            .filter(|l| op.savepoint_id.as_deref() == Some(l.id.as_str()))
            .map(|l| l.completed_at.0);
        savepoint_done.map_or(op.started_at.0, |t| t.max(op.started_at.0))
    }

    fn checkpoint_fresh(&self, spec: &StreamJobSpec) -> bool {
        let Ok(max_age) = spec.upgrade.max_checkpoint_age.parse() else {
            return false;
        };
        self.o
            .status
            .checkpoint
            .as_ref()
            .and_then(|c| c.last_completed.as_ref())
            .is_some_and(|c| elapsed(self.o.now, c.completed_at.0) <= max_age)
    }

    /// `Block` again if UpgradeBlocked is true for this very generation.
    fn blocked(&self) -> Option<Action> {
        let c = find_condition(&self.o.status.conditions, ConditionType::UpgradeBlocked)?;
        (c.status == "True" && c.observed_generation == Some(self.o.generation)).then(|| {
            Action::Block {
                reason: reasons::to_static(&c.reason, reasons::SAVEPOINT_FAILED),
                message: c.message.clone(),
            }
        })
    }

    fn in_progress(&self) -> Option<&SavepointInProgress> {
        self.record.savepoint.as_ref()?.in_progress.as_ref()
    }

    fn savepoint_status(&mut self) -> &mut SavepointStatus {
        self.record
            .savepoint
            .get_or_insert_with(SavepointStatus::default)
    }

    /// Records a new savepoint as in progress and returns its id. A deletion's final
    /// savepoint is named after the generation alone: a reconcile on a cache that has not yet
    /// seen the first request asks the workers again for the same savepoint (which they answer
    /// from what they did) instead of taking a second one.
    fn begin_savepoint(&mut self, trigger: SavepointTrigger, generation: i64) -> String {
        let now = self.o.now;
        let id = match trigger {
            SavepointTrigger::Delete => format!("{}-{generation}", trigger_name(trigger)),
            _ => format!(
                "{}-{generation}-{}",
                trigger_name(trigger),
                now.as_millisecond()
            ),
        };
        self.savepoint_status().in_progress = Some(SavepointInProgress {
            id: id.clone(),
            started_at: Time(now),
            trigger,
        });
        id
    }

    fn savepoint_completed(&mut self, id: &str, path: &str, trigger: SavepointTrigger) {
        let info = SavepointInfo {
            id: id.to_owned(),
            path: path.to_owned(),
            completed_at: Time(self.o.now),
            trigger,
        };
        let sp = self.savepoint_status();
        sp.in_progress = None;
        sp.history.retain(|h| h.id != id);
        sp.history.insert(0, info.clone());
        sp.last = Some(info);
    }

    /// Sets `status.error`, keeping its time when reason and message are unchanged.
    fn set_error(&mut self, reason: &str, message: String) {
        let same = self
            .record
            .error
            .as_ref()
            .is_some_and(|e| e.reason == reason && e.message == message);
        if !same {
            self.record.error = Some(ErrorStatus {
                reason: reason.to_owned(),
                message,
                at: Time(self.o.now),
            });
        }
    }

    fn clear_error_if(&mut self, pred: impl Fn(&str) -> bool) {
        if self.record.error.as_ref().is_some_and(|e| pred(&e.reason)) {
            self.record.error = None;
        }
    }
}

/// Where a generation restores from when no savepoint is at hand: the latest checkpoint, or
/// nothing only when the user chose `upgrade.mode: stateless`.
/// The id of a requested restore: the same at every reconcile of one operation (or of the job's
/// first deployment), different for the next. Workers record it with their checkpoints, so
/// that a restarted worker continues from its own commits while a new request restores.
fn restore_request(what: &str, generation: i64, started_at: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(what.as_bytes());
    hash.update(generation.to_be_bytes());
    hash.update(started_at);
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The restore request of an operation, from its type, target generation and start.
fn operation_restore_request(op: &Operation) -> String {
    let started_at = serde_json::to_vec(&op.started_at).unwrap_or_default();
    restore_request(op.type_.as_str(), op.target_generation, &started_at)
}

fn fallback_restore(spec: &StreamJobSpec) -> Restore {
    match spec.upgrade.mode {
        UpgradeMode::Stateless => Restore::Stateless,
        UpgradeMode::Savepoint | UpgradeMode::LastState => Restore::LatestCheckpoint,
    }
}

/// The step after the savepoint: a suspend has nothing to fence before it scales to zero.
fn after_savepoint(type_: OperationType) -> OperationStep {
    match type_ {
        OperationType::Suspend => OperationStep::RollingOut,
        _ => OperationStep::Fencing,
    }
}

fn trigger_of(type_: OperationType) -> SavepointTrigger {
    match type_ {
        OperationType::Suspend => SavepointTrigger::Suspend,
        OperationType::Rescale => SavepointTrigger::Rescale,
        _ => SavepointTrigger::Upgrade,
    }
}

fn trigger_name(trigger: SavepointTrigger) -> &'static str {
    match trigger {
        SavepointTrigger::Upgrade => "upgrade",
        SavepointTrigger::Rescale => "rescale",
        SavepointTrigger::Suspend => "suspend",
        SavepointTrigger::Manual => "manual",
        SavepointTrigger::Periodic => "periodic",
        SavepointTrigger::Delete => "delete",
    }
}

fn ordinals(job_file: &JobFile) -> Vec<u32> {
    job_file
        .assignment
        .workers
        .iter()
        .map(|w| w.ordinal)
        .collect()
}

fn parse_or(d: &oxbow_crds::duration::DurationString, default: Duration) -> Duration {
    d.parse().unwrap_or(default)
}

fn elapsed(now: Timestamp, since: Timestamp) -> Duration {
    let ms = now.as_millisecond().saturating_sub(since.as_millisecond());
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
