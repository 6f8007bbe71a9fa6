//! Actions on the children: applying them, stopping the workers, deleting worker pods and
//! keeping the stable job file.

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Pod},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use oxbow_crds::{StreamJob, jobfile::JobFile};

use super::{super::observe, kafka::ensure_shuffle_topic};
use crate::{
    children::{self, configmap::job_file_json, names},
    controller::{Context, Error, MANAGER, kube_err},
    plan::Observed,
};

/// Applies every child for `job_file` server-side under one field manager, the admin token
/// kept once generated, after creating the shuffle topic the job file assigns.
pub(super) async fn apply(ctx: &Context, job: &StreamJob, job_file: &JobFile) -> Result<(), Error> {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let token = match observe::admin_token(&ctx.client, &ns, &name).await? {
        Some(token) => token,
        None => new_token()?,
    };
    let children = children::build(job, job_file, &token, &ctx.defaults)?;
    ensure_shuffle_topic(ctx, job, job_file).await;
    let c = &children;
    apply_child(ctx, &ns, &c.admin_secret, "apply the admin Secret").await?;
    apply_child(ctx, &ns, &c.config_map, "apply the job ConfigMap").await?;
    apply_child(ctx, &ns, &c.service, "apply the Service").await?;
    if ctx.pdb_supported {
        let pdb = &c.pod_disruption_budget;
        apply_child(ctx, &ns, pdb, "apply the PodDisruptionBudget").await?;
    }
    apply_child(ctx, &ns, &c.stateful_set, "apply the StatefulSet").await
}

/// Applies `child` (named as the builders in [`children`] name it) server-side under
/// [`MANAGER`], taking over fields others set.
async fn apply_child<K>(
    ctx: &Context,
    ns: &str,
    child: &K,
    action: &'static str,
) -> Result<(), Error>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(ctx.client.clone(), ns)
        .patch(
            &child.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(child),
        )
        .await
        .map_err(kube_err(action))?;
    Ok(())
}

/// Scales the StatefulSet to zero, template unchanged.
pub(super) async fn stop_workers(ctx: &Context, o: &Observed) -> Result<(), Error> {
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &o.namespace);
    let patch = serde_json::json!({"spec": {"replicas": 0}});
    sets.patch(
        &names::stateful_set(&o.name),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(kube_err("scale the workers to zero"))?;
    Ok(())
}

/// Deletes the pods of `ordinals`; one already gone is fine.
pub(super) async fn delete_pods(
    ctx: &Context,
    o: &Observed,
    ordinals: &[u32],
) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &o.namespace);
    for ordinal in ordinals {
        match pods
            .delete(&names::pod(&o.name, *ordinal), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(kube_err("delete a worker pod")(e)),
        }
    }
    Ok(())
}

/// Writes `job_file` under [`names::STABLE_JOB_FILE_KEY`] in the job ConfigMap.
pub(super) async fn mark_stable(
    ctx: &Context,
    o: &Observed,
    job_file: &JobFile,
) -> Result<(), Error> {
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &o.namespace);
    let patch = serde_json::json!({"data": {names::STABLE_JOB_FILE_KEY: job_file_json(job_file)?}});
    maps.patch(
        &names::config_map(&o.name),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(kube_err("record the stable job file"))?;
    Ok(())
}

/// A new admin token: 24 bytes from the operating system's secure random source, in hex.
fn new_token() -> Result<String, Error> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(Error::AdminToken)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (super::new_token().unwrap(), super::new_token().unwrap());
        assert_eq!(a.len(), 48);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
        assert_ne!(a, "0".repeat(48));
    }
}
