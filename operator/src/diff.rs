//! How a spec change takes effect.
//!
//! [`classify`] compares the spec that runs with the spec the user wrote and says, field by
//! field, what each change needs ([`Effect`]); [`Change::kind`] folds that into the one operation
//! the controller starts ([`ChangeKind`]). One edit often changes several things at once (a new
//! image and more replicas, or a suspend with a pipeline change): the controller starts the
//! operation of highest precedence, and that operation rolls out the *whole* new spec, so the
//! lesser changes ride along (an upgrade uses the new replica count; a resume starts the new
//! image). The per-field detail stays available for events and for the few decisions that need
//! it ([`Change::restore_requested`]).
//!
//! | field | effect |
//! | --- | --- |
//! | `image`, `kafka.*`, `source.*`, `pipeline`, `sink.*`, `deadLetter` | restart required |
//! | `checkpoint` (added or removed), `checkpoint.storage`, `.interval`, `.timeout` | restart required |
//! | `template.resources`, `.env`, `.nodeSelector`, `.tolerations`, `.affinity`, `.serviceAccountName` | restart required |
//! | `restoreFrom` set or changed | restart required, restoring from that savepoint |
//! | `replicas` | rescale |
//! | `state` | suspend or resume |
//! | `savepoint.triggerNonce` (any change) | savepoint now |
//! | `checkpoint.retained`, `upgrade.*`, `savepoint.interval`, `.historyLimit`, `.onDelete` | ignorable |
//! | `template.labels`, `template.annotations`, `restoreFrom` removed | ignorable |
//!
//! *Ignorable* means no worker restarts and no savepoint: the setting is the operator's own
//! (upgrade policy, savepoint schedule and history), or the workers pick it up whenever they
//! next start from a new job file (checkpoint retention, pod labels and annotations, which only
//! a pod's creation applies). Restarting every worker to relabel its pod would cost a savepoint
//! and a restore for nothing.
//!
//! Precedence, from [`ChangeKind`]'s order: suspend > resume > restart > rescale > savepoint >
//! ignorable. While a job stays suspended nothing runs, so every change waits for the resume and
//! classifies as ignorable.

use std::collections::BTreeMap;

use oxbow_crds::streamjob::{
    CheckpointSpec, JobState, KafkaSpec, PodTemplateSpec, SavepointSpec, SinkSpec, SourceSpec,
    StreamJobSpec, UpgradeSpec,
};

/// How one changed field takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Effect {
    /// No worker restart and no savepoint.
    Ignorable,
    /// Take a savepoint now.
    SavepointTrigger,
    /// The number of workers changes: savepoint, new assignment, restart.
    Rescale,
    /// Every worker restarts with the new spec, from a savepoint or checkpoint per
    /// `upgrade.mode`.
    RestartRequired,
    /// The job is suspended or resumed.
    RunState,
}

impl Effect {
    /// A static name for events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Ignorable => "Ignorable",
            Effect::SavepointTrigger => "SavepointTrigger",
            Effect::Rescale => "Rescale",
            Effect::RestartRequired => "RestartRequired",
            Effect::RunState => "RunState",
        }
    }
}

/// A change of `spec.state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunStateChange {
    /// `running` -> `suspended`: savepoint, then scale to zero.
    Suspend,
    /// `suspended` -> `running`: restore from the suspend savepoint with the new spec.
    Resume,
}

/// The operation a spec change calls for, in increasing precedence (`Ord`): when several
/// apply, the controller starts the greatest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    /// Nothing changed.
    Unchanged,
    /// Nothing to restart; see [`Effect::Ignorable`].
    Ignorable,
    /// Take a savepoint, keep running.
    SavepointTrigger,
    /// Savepoint, reassign the partitions over the new worker count, restart.
    Rescale,
    /// Savepoint (per `upgrade.mode`), restart every worker with the new spec.
    RestartRequired,
    /// Restore from the suspend savepoint with the new spec.
    Resume,
    /// Savepoint, then scale to zero.
    Suspend,
}

impl ChangeKind {
    /// A static name for events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Unchanged => "Unchanged",
            ChangeKind::Ignorable => "Ignorable",
            ChangeKind::SavepointTrigger => "SavepointTrigger",
            ChangeKind::Rescale => "Rescale",
            ChangeKind::RestartRequired => "RestartRequired",
            ChangeKind::Resume => "Resume",
            ChangeKind::Suspend => "Suspend",
        }
    }
}

/// What changed between two specs, and how each change takes effect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    fields: BTreeMap<&'static str, Effect>,
    run_state: Option<RunStateChange>,
    stays_suspended: bool,
    restore_requested: bool,
}

impl Change {
    /// The operation to start: the change of highest precedence. See the module docs.
    pub fn kind(&self) -> ChangeKind {
        if self.fields.is_empty() {
            return ChangeKind::Unchanged;
        }
        match self.run_state {
            Some(RunStateChange::Suspend) => return ChangeKind::Suspend,
            Some(RunStateChange::Resume) => return ChangeKind::Resume,
            None => {}
        }
        if self.stays_suspended {
            return ChangeKind::Ignorable;
        }
        match self.fields.values().max() {
            Some(Effect::RestartRequired) => ChangeKind::RestartRequired,
            Some(Effect::Rescale) => ChangeKind::Rescale,
            Some(Effect::SavepointTrigger) => ChangeKind::SavepointTrigger,
            Some(Effect::Ignorable) => ChangeKind::Ignorable,
            // `RunState` is always accompanied by `run_state`; `None` means no field changed.
            Some(Effect::RunState) | None => ChangeKind::Unchanged,
        }
    }

    /// Whether the specs are equal.
    pub fn is_unchanged(&self) -> bool {
        self.fields.is_empty()
    }

    /// Whether a field that needs every worker restarted changed.
    pub fn requires_restart(&self) -> bool {
        self.has(Effect::RestartRequired)
    }

    /// Whether `replicas` changed.
    pub fn rescales(&self) -> bool {
        self.has(Effect::Rescale)
    }

    /// Whether `savepoint.triggerNonce` changed.
    pub fn triggers_savepoint(&self) -> bool {
        self.has(Effect::SavepointTrigger)
    }

    /// The change of `spec.state`, if any.
    pub fn run_state(&self) -> Option<RunStateChange> {
        self.run_state
    }

    /// Whether `restoreFrom` was set or points to another savepoint: the next generation
    /// restores from `spec.restoreFrom.savepointPath`, not from a fresh savepoint.
    pub fn restore_requested(&self) -> bool {
        self.restore_requested
    }

    /// Every changed field (as `spec.<path>`) with its effect, in path order.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, Effect)> + '_ {
        self.fields.iter().map(|(path, effect)| (*path, *effect))
    }

    /// The changed fields with `effect`, for messages such as "restart required: spec.image,
    /// spec.pipeline".
    pub fn fields_with(&self, effect: Effect) -> Vec<&'static str> {
        self.fields()
            .filter(|(_, e)| *e == effect)
            .map(|(path, _)| path)
            .collect()
    }

    fn has(&self, effect: Effect) -> bool {
        self.fields.values().any(|e| *e == effect)
    }

    fn field<T: PartialEq + ?Sized>(&mut self, path: &'static str, old: &T, new: &T, e: Effect) {
        if old != new {
            self.fields.insert(path, e);
        }
    }
}

/// Classifies the change from `old` (the spec that runs) to `new` (the spec the user wrote).
///
/// Every struct of the spec is destructured without `..`, so a field added to the spec does not
/// compile until it is classified here (and the table test in `diff/tests.rs` checks the CRD
/// schema for fields this function does not know).
///
/// The trigger nonce is compared between the two specs here; the controller should rather
/// compare `spec.savepoint.triggerNonce` with `status.savepoint.observedTriggerNonce`, which
/// survives operator restarts and records that the savepoint was taken.
pub fn classify(old: &StreamJobSpec, new: &StreamJobSpec) -> Change {
    use Effect::{Ignorable, Rescale, RestartRequired, RunState};

    let mut c = Change::default();
    let StreamJobSpec {
        image,
        replicas,
        state,
        kafka,
        source,
        pipeline,
        sink,
        dead_letter,
        checkpoint,
        upgrade,
        savepoint,
        restore_from,
        template,
    } = new;
    c.field("spec.image", &old.image, image, RestartRequired);
    c.field("spec.replicas", &old.replicas, replicas, Rescale);
    c.field("spec.state", &old.state, state, RunState);
    c.run_state = match (old.state, *state) {
        (JobState::Running, JobState::Suspended) => Some(RunStateChange::Suspend),
        (JobState::Suspended, JobState::Running) => Some(RunStateChange::Resume),
        _ => None,
    };
    c.stays_suspended = old.state == JobState::Suspended && *state == JobState::Suspended;
    kafka_fields(&mut c, &old.kafka, kafka);
    source_fields(&mut c, &old.source, source);
    c.field("spec.pipeline", &old.pipeline, pipeline, RestartRequired);
    sink_fields(&mut c, &old.sink, sink);
    c.field(
        "spec.deadLetter",
        &old.dead_letter,
        dead_letter,
        RestartRequired,
    );
    match (&old.checkpoint, checkpoint) {
        (Some(old), Some(new)) => checkpoint_fields(&mut c, old, new),
        (old, new) => c.field("spec.checkpoint", old, new, RestartRequired),
    }
    upgrade_fields(&mut c, &old.upgrade, upgrade);
    savepoint_fields(&mut c, &old.savepoint, savepoint);
    if old.restore_from != *restore_from {
        if restore_from.is_some() {
            c.restore_requested = true;
            c.fields.insert("spec.restoreFrom", RestartRequired);
        } else {
            // Forgetting where the job once restored from changes nothing that runs.
            c.fields.insert("spec.restoreFrom", Ignorable);
        }
    }
    template_fields(&mut c, &old.template, template);
    c
}

fn kafka_fields(c: &mut Change, old: &KafkaSpec, new: &KafkaSpec) {
    use Effect::RestartRequired;
    let KafkaSpec {
        bootstrap_servers,
        security,
        properties,
    } = new;
    c.field(
        "spec.kafka.bootstrapServers",
        &old.bootstrap_servers,
        bootstrap_servers,
        RestartRequired,
    );
    c.field(
        "spec.kafka.security",
        &old.security,
        security,
        RestartRequired,
    );
    c.field(
        "spec.kafka.properties",
        &old.properties,
        properties,
        RestartRequired,
    );
}

fn source_fields(c: &mut Change, old: &SourceSpec, new: &SourceSpec) {
    use Effect::RestartRequired;
    let SourceSpec {
        topics,
        format,
        starting_offsets,
        starting_timestamp,
        event_time,
        partitioned_by,
    } = new;
    c.field("spec.source.topics", &old.topics, topics, RestartRequired);
    c.field("spec.source.format", &old.format, format, RestartRequired);
    c.field(
        "spec.source.startingOffsets",
        &old.starting_offsets,
        starting_offsets,
        RestartRequired,
    );
    c.field(
        "spec.source.startingTimestamp",
        &old.starting_timestamp,
        starting_timestamp,
        RestartRequired,
    );
    c.field(
        "spec.source.eventTime",
        &old.event_time,
        event_time,
        RestartRequired,
    );
    c.field(
        "spec.source.partitionedBy",
        &old.partitioned_by,
        partitioned_by,
        RestartRequired,
    );
}

fn sink_fields(c: &mut Change, old: &SinkSpec, new: &SinkSpec) {
    use Effect::RestartRequired;
    let SinkSpec {
        topic,
        format,
        key,
        delivery_guarantee,
    } = new;
    c.field("spec.sink.topic", &old.topic, topic, RestartRequired);
    c.field("spec.sink.format", &old.format, format, RestartRequired);
    c.field("spec.sink.key", &old.key, key, RestartRequired);
    c.field(
        "spec.sink.deliveryGuarantee",
        &old.delivery_guarantee,
        delivery_guarantee,
        RestartRequired,
    );
}

fn checkpoint_fields(c: &mut Change, old: &CheckpointSpec, new: &CheckpointSpec) {
    use Effect::{Ignorable, RestartRequired};
    let CheckpointSpec {
        storage,
        interval,
        retained,
        timeout,
    } = new;
    c.field(
        "spec.checkpoint.storage",
        &old.storage,
        storage,
        RestartRequired,
    );
    c.field(
        "spec.checkpoint.interval",
        &old.interval,
        interval,
        RestartRequired,
    );
    // Workers read it when they dispose of old snapshots; the next start picks it up.
    c.field(
        "spec.checkpoint.retained",
        &old.retained,
        retained,
        Ignorable,
    );
    // Workers bound each checkpoint by it, and the pods' termination grace period follows it.
    c.field(
        "spec.checkpoint.timeout",
        &old.timeout,
        timeout,
        RestartRequired,
    );
}

/// The upgrade policy is the operator's: it applies to the next operation.
fn upgrade_fields(c: &mut Change, old: &UpgradeSpec, new: &UpgradeSpec) {
    use Effect::Ignorable;
    let UpgradeSpec {
        mode,
        savepoint_timeout,
        on_savepoint_failure,
        max_checkpoint_age,
        verify_timeout,
        discard_incompatible_state,
    } = new;
    c.field("spec.upgrade.mode", &old.mode, mode, Ignorable);
    c.field(
        "spec.upgrade.savepointTimeout",
        &old.savepoint_timeout,
        savepoint_timeout,
        Ignorable,
    );
    c.field(
        "spec.upgrade.onSavepointFailure",
        &old.on_savepoint_failure,
        on_savepoint_failure,
        Ignorable,
    );
    c.field(
        "spec.upgrade.maxCheckpointAge",
        &old.max_checkpoint_age,
        max_checkpoint_age,
        Ignorable,
    );
    c.field(
        "spec.upgrade.verifyTimeout",
        &old.verify_timeout,
        verify_timeout,
        Ignorable,
    );
    c.field(
        "spec.upgrade.discardIncompatibleState",
        &old.discard_incompatible_state,
        discard_incompatible_state,
        Ignorable,
    );
}

/// Savepoint schedule and history are the operator's; the nonce asks for one now.
fn savepoint_fields(c: &mut Change, old: &SavepointSpec, new: &SavepointSpec) {
    use Effect::{Ignorable, SavepointTrigger};
    let SavepointSpec {
        trigger_nonce,
        interval,
        history_limit,
        on_delete,
    } = new;
    c.field(
        "spec.savepoint.triggerNonce",
        &old.trigger_nonce,
        trigger_nonce,
        SavepointTrigger,
    );
    c.field(
        "spec.savepoint.interval",
        &old.interval,
        interval,
        Ignorable,
    );
    c.field(
        "spec.savepoint.historyLimit",
        &old.history_limit,
        history_limit,
        Ignorable,
    );
    c.field(
        "spec.savepoint.onDelete",
        &old.on_delete,
        on_delete,
        Ignorable,
    );
}

/// What only a new pod can apply restarts the workers, except labels and annotations, which
/// are not worth a savepoint and a restore (see the module docs).
fn template_fields(c: &mut Change, old: &PodTemplateSpec, new: &PodTemplateSpec) {
    use Effect::{Ignorable, RestartRequired};
    let PodTemplateSpec {
        resources,
        env,
        node_selector,
        tolerations,
        affinity,
        service_account_name,
        annotations,
        labels,
    } = new;
    c.field(
        "spec.template.resources",
        &old.resources,
        resources,
        RestartRequired,
    );
    c.field("spec.template.env", &old.env, env, RestartRequired);
    c.field(
        "spec.template.nodeSelector",
        &old.node_selector,
        node_selector,
        RestartRequired,
    );
    c.field(
        "spec.template.tolerations",
        &old.tolerations,
        tolerations,
        RestartRequired,
    );
    c.field(
        "spec.template.affinity",
        &old.affinity,
        affinity,
        RestartRequired,
    );
    c.field(
        "spec.template.serviceAccountName",
        &old.service_account_name,
        service_account_name,
        RestartRequired,
    );
    c.field(
        "spec.template.annotations",
        &old.annotations,
        annotations,
        Ignorable,
    );
    c.field("spec.template.labels", &old.labels, labels, Ignorable);
}

#[cfg(test)]
mod tests;
