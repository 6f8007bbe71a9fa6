//! Savepoint actions, through the workers' admin API.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use oxbow_crds::{
    admin::{SAVEPOINTS_PATH, SavepointRequest},
    streamjob::SavepointInfo,
};

use super::super::observe;
use crate::{
    children::names,
    controller::{Context, Error},
    plan::Observed,
};

/// `POST`s the savepoint `id` to each of `ordinals`. A worker without an address or that does
/// not answer is skipped: the planner asks again until every worker has a result.
pub(super) async fn request(
    ctx: &Context,
    o: &Observed,
    id: &str,
    ordinals: &[u32],
    stop: bool,
) -> Result<(), Error> {
    let token = admin_token(ctx, o).await?;
    for ordinal in ordinals {
        let Some(base) = worker_base_url(ctx, &o.namespace, &o.name, *ordinal).await else {
            continue;
        };
        let request = SavepointRequest {
            id: id.to_owned(),
            stop,
        };
        let sent = ctx
            .http
            .post(format!("{base}{SAVEPOINTS_PATH}"))
            .bearer_auth(&token)
            .json(&request)
            .send()
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, ordinal, "failed to request a savepoint; retrying");
        }
    }
    Ok(())
}

/// Deletes `savepoints` from storage through worker `ordinal`; every one must succeed.
pub(super) async fn dispose(
    ctx: &Context,
    o: &Observed,
    savepoints: &[SavepointInfo],
    ordinal: u32,
) -> Result<(), Error> {
    let token = admin_token(ctx, o).await?;
    let base = worker_base_url(ctx, &o.namespace, &o.name, ordinal)
        .await
        .ok_or(Error::DisposeNoAddress { ordinal })?;
    for sp in savepoints {
        let response = ctx
            .http
            .delete(format!("{base}{SAVEPOINTS_PATH}/{}", sp.id))
            .bearer_auth(&token)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|source| Error::Dispose {
                id: sp.id.clone(),
                path: sp.path.clone(),
                source,
            })?;
        tracing::info!(savepoint = %sp.id, path = %sp.path, status = %response.status(), "disposed of a savepoint beyond the history limit");
    }
    Ok(())
}

/// The job's admin token; empty while its Secret does not exist (the workers then refuse).
async fn admin_token(ctx: &Context, o: &Observed) -> Result<String, Error> {
    let token = observe::admin_token(&ctx.client, &o.namespace, &o.name).await?;
    Ok(token.unwrap_or_default())
}

/// `http://<pod IP>:<admin port>` of worker `ordinal`, if its pod has an address.
async fn worker_base_url(ctx: &Context, ns: &str, name: &str, ordinal: u32) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let pod = pods.get(&names::pod(name, ordinal)).await.ok()?;
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone())?;
    Some(format!("http://{ip}:{}", observe::admin_port(&pod)))
}
