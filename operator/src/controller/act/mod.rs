//! The act stage: carries out the one action the planner chose, in three steps:
//!
//! 1. [`perform`]: the action's API, HTTP and Kafka calls, one function per action, by family:
//!    - [`children`]: applying the children, stopping the workers, deleting pods, keeping the
//!      stable job file;
//!    - [`savepoints`]: savepoint requests and disposal through the workers' admin API;
//!    - [`finalizer`]: adding and removing the final-savepoint finalizer;
//!    - [`kafka`]: fencing the old generation and creating the shuffle topic.
//! 2. [`events::event`]: the Event that reports the action once it succeeded (pure).
//! 3. [`requeue_after`]: when to look at the job again (pure).

mod children;
mod events;
mod finalizer;
mod kafka;
mod savepoints;

use std::time::Duration;

use kube::{
    Resource,
    runtime::{controller::Action as Requeue, events::Event},
};
use oxbow_crds::StreamJob;

use super::{Context, Error};
use crate::plan::{Action, Observed, Plan};

/// How often a settled job is looked at again (lag and worker health change without events).
const RESYNC: Duration = Duration::from_secs(10);

/// Carries out `plan.action`, publishes its Event; returns when to look again.
pub async fn act(
    ctx: &Context,
    job: &StreamJob,
    o: &Observed,
    plan: &Plan,
) -> Result<Requeue, Error> {
    perform(ctx, job, o, &plan.action).await?;
    let first_deploy = o.deployed.is_none();
    if let Some(note) = events::event(&plan.action, first_deploy, o.spec.savepoint.history_limit) {
        publish(ctx, job, note).await;
    }
    Ok(Requeue::requeue(requeue_after(&plan.action)))
}

/// The calls `action` makes.
async fn perform(
    ctx: &Context,
    job: &StreamJob,
    o: &Observed,
    action: &Action,
) -> Result<(), Error> {
    match action {
        Action::CreateOrUpdateChildren { job_file }
        | Action::RollOut { job_file }
        | Action::ScaleToZero { job_file } => children::apply(ctx, job, job_file).await,
        Action::StopWorkers => children::stop_workers(ctx, o).await,
        Action::DeletePods { ordinals } => children::delete_pods(ctx, o, ordinals).await,
        Action::MarkStable { job_file } => children::mark_stable(ctx, o, job_file).await,
        Action::RequestSavepoint { id, ordinals, stop } => {
            savepoints::request(ctx, o, id, ordinals, *stop).await
        }
        Action::DisposeSavepoints {
            savepoints,
            ordinal,
        } => savepoints::dispose(ctx, o, savepoints, *ordinal).await,
        Action::AddFinalizer => finalizer::set(ctx, job, o, true).await,
        Action::RemoveFinalizer { .. } => finalizer::set(ctx, job, o, false).await,
        Action::Fence {
            transactional_ids,
            then,
        } => kafka::fence(ctx, o, transactional_ids, then).await,
        Action::WaitForSavepoint { .. }
        | Action::Block { .. }
        | Action::Fail { .. }
        | Action::ReportInvalid { .. }
        | Action::Wait { .. }
        | Action::Nothing => Ok(()),
    }
}

/// When to look at the job again after `action`: soon while an operation moves, at
/// [`RESYNC`] once settled.
fn requeue_after(action: &Action) -> Duration {
    match action {
        Action::CreateOrUpdateChildren { .. }
        | Action::RollOut { .. }
        | Action::ScaleToZero { .. }
        | Action::StopWorkers
        | Action::DeletePods { .. } => Duration::from_secs(2),
        Action::RequestSavepoint { .. } | Action::DisposeSavepoints { .. } => {
            Duration::from_secs(1)
        }
        Action::Fence { .. } => Duration::from_millis(500),
        Action::AddFinalizer | Action::RemoveFinalizer { .. } => Duration::from_millis(200),
        Action::WaitForSavepoint { requeue_after, .. } | Action::Wait { requeue_after, .. } => {
            *requeue_after
        }
        Action::ReportInvalid { .. } => Duration::from_secs(60),
        Action::MarkStable { .. }
        | Action::Block { .. }
        | Action::Fail { .. }
        | Action::Nothing => RESYNC,
    }
}

/// Publishes `note` on the StreamJob; a failure is logged, never fails the reconcile.
async fn publish(ctx: &Context, job: &StreamJob, note: events::Note) {
    let event = Event {
        type_: note.type_,
        reason: note.reason.into(),
        note: Some(note.message.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &job.object_ref(&())).await {
        tracing::warn!(error = %e, reason = note.reason, "failed to publish an event");
    }
}
