//! Kafka actions: fencing the old generation and creating the shuffle topic, with clients
//! configured by [`super::super::kafka::client_config`].

use std::time::Duration;

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use oxbow_crds::{StreamJob, jobfile::JobFile, streamjob::Operation};
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    producer::{BaseProducer, Producer},
    types::RDKafkaErrorCode,
};

use super::super::kafka::client_config;
use crate::{
    controller::{Context, Error, kube_err},
    plan::Observed,
};

/// Fences `transactional_ids`, then records `then` as `status.operation`.
pub(super) async fn fence(
    ctx: &Context,
    o: &Observed,
    transactional_ids: &[String],
    then: &Operation,
) -> Result<(), Error> {
    fence_ids(ctx, o, transactional_ids).await?;
    let jobs: Api<StreamJob> = Api::namespaced(ctx.client.clone(), &o.namespace);
    let patch = serde_json::json!({"status": {"operation": then}});
    jobs.patch_status(&o.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube_err("record the fenced step"))?;
    Ok(())
}

/// Fences the previous generation: initializing transactions with each id bumps its epoch and
/// aborts whatever it left open.
async fn fence_ids(ctx: &Context, o: &Observed, ids: &[String]) -> Result<(), Error> {
    let base = client_config(&ctx.client, &o.namespace, &o.spec.kafka)
        .await
        .map_err(Error::KafkaSettings)?;
    let ids = ids.to_vec();
    tokio::task::spawn_blocking(move || {
        for id in ids {
            let fence_err = |source| Error::Fence {
                id: id.clone(),
                source,
            };
            let producer: BaseProducer = base
                .clone()
                .set("transactional.id", &id)
                .create()
                .map_err(fence_err)?;
            producer
                .init_transactions(Duration::from_secs(30))
                .map_err(fence_err)?;
        }
        Ok(())
    })
    .await
    .map_err(Error::FenceTask)?
}

/// Creates the job's repartition topic when its pipeline needs one (partitions: the largest
/// source topic's). Failure is logged: the workers report the missing topic.
pub(super) async fn ensure_shuffle_topic(ctx: &Context, job: &StreamJob, job_file: &JobFile) {
    let shuffle = oxbow_crds::names::shuffle_topic(&job_file.namespace, &job_file.name);
    let Some((topic, partitions)) = job_file
        .assignment
        .workers
        .iter()
        .flat_map(|w| w.partitions.iter())
        .find(|(t, _)| t.ends_with(".shuffle") && **t == shuffle)
        .map(|(t, _)| t.clone())
        .map(|t| {
            let n = job_file
                .assignment
                .workers
                .iter()
                .filter_map(|w| w.partitions.get(&t))
                .map(Vec::len)
                .sum::<usize>();
            (t, n)
        })
    else {
        return;
    };
    let ns = job.namespace().unwrap_or_default();
    let config = match client_config(&ctx.client, &ns, &job.spec.kafka).await {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!(error = %e, "failed to create the shuffle topic");
            return;
        }
    };
    let Ok(admin) = config.create::<AdminClient<DefaultClientContext>>() else {
        return;
    };
    let partitions = i32::try_from(partitions).unwrap_or(1);
    let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(-1));
    match admin.create_topics(&[new], &AdminOptions::new()).await {
        Ok(results) => {
            for r in results {
                if let Err((t, code)) = r
                    && code != RDKafkaErrorCode::TopicAlreadyExists
                {
                    tracing::warn!(topic = t, error = %code, "failed to create the shuffle topic");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "failed to create the shuffle topic"),
    }
}
