//! Adding and removing the final-savepoint finalizer.

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use oxbow_crds::StreamJob;

use crate::{
    children::names::FINALIZER,
    controller::{Context, Error, kube_err},
    plan::Observed,
};

/// Adds [`FINALIZER`] to the StreamJob (`present`) or removes it, other finalizers kept. The
/// patch carries the version read, so a finalizer list changed meanwhile is not overwritten.
pub(super) async fn set(
    ctx: &Context,
    job: &StreamJob,
    o: &Observed,
    present: bool,
) -> Result<(), Error> {
    let mut finalizers = job.finalizers().to_vec();
    finalizers.retain(|f| f != FINALIZER);
    if present {
        finalizers.push(FINALIZER.to_owned());
    }
    let jobs: Api<StreamJob> = Api::namespaced(ctx.client.clone(), &o.namespace);
    let patch = serde_json::json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": job.resource_version(),
    }});
    jobs.patch(&o.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_err("update the StreamJob's finalizers"))?;
    Ok(())
}
