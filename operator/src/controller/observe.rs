//! The observe stage: reads the children, the worker pods, the workers' admin API and the
//! source topics' partition counts into a [`plan::Observed`]. I/O only; no decisions.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, Pod, Secret},
    },
    jiff::Timestamp,
};
use kube::{Api, ResourceExt, api::ListParams};
use oxbow_crds::{
    StreamJob,
    admin::{ADMIN_PORT, SAVEPOINTS_PATH, STATUS_PATH, SavepointResult, WorkerStatus},
    jobfile::{ADMIN_TOKEN_KEY, JOB_FILE_KEY, JobFile},
    names::ordinal_from_pod_name,
};
use rdkafka::{
    ClientConfig, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};

use super::{Context, Error, kafka, kube_err};
use crate::{
    children::{configmap::job_file_sha256, meta::selector_string, names, statefulset},
    plan::{Observed, PartitionOffsets, StatefulSetState, WorkerPod},
};

/// Reads everything the planner decides from.
pub async fn observe(
    ctx: &Context,
    job: &StreamJob,
    namespace: &str,
    name: &str,
) -> Result<Observed, Error> {
    let client = ctx.client.clone();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let config_map = maps
        .get_opt(&names::config_map(name))
        .await
        .map_err(kube_err("read the job ConfigMap"))?;
    let read = |key: &str| {
        config_map
            .as_ref()
            .and_then(|c| c.data.as_ref())
            .and_then(|d| d.get(key))
            .and_then(|text| JobFile::from_json(text).ok())
    };
    let deployed = read(JOB_FILE_KEY);
    let stable = read(names::STABLE_JOB_FILE_KEY);
    let deployed_hash = deployed.as_ref().and_then(|f| job_file_sha256(f).ok());
    let runs_deployed = |annotations: Option<&BTreeMap<String, String>>| {
        deployed_hash.is_some()
            && annotations
                .and_then(|a| a.get(statefulset::JOB_FILE_HASH_ANNOTATION))
                .is_some_and(|h| Some(h) == deployed_hash.as_ref())
    };

    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let stateful_set = sets
        .get_opt(&names::stateful_set(name))
        .await
        .map_err(kube_err("read the StatefulSet"))?
        .map(|s| StatefulSetState {
            replicas: s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
            ready_replicas: s
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
            runs_deployed: runs_deployed(
                s.spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.annotations.as_ref()),
            ),
        });

    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = pods
        .list(&ListParams::default().labels(&selector_string(name)))
        .await
        .map_err(kube_err("list the worker pods"))?;
    let token = admin_token(&client, namespace, name).await?;
    let mut worker_pods = Vec::new();
    let mut workers = BTreeMap::new();
    let mut savepoints = BTreeMap::new();
    let in_progress = job
        .status
        .as_ref()
        .and_then(|s| s.savepoint.as_ref())
        .and_then(|s| s.in_progress.as_ref())
        .map(|p| p.id.clone());
    for pod in &pods.items {
        let Some(ordinal) = ordinal_from_pod_name(&pod.name_any()) else {
            continue;
        };
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        worker_pods.push(WorkerPod {
            ordinal,
            ready,
            terminating: pod.metadata.deletion_timestamp.is_some(),
            runs_deployed: runs_deployed(pod.metadata.annotations.as_ref()),
        });
        let (Some(ip), Some(token)) = (
            pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
            token.as_deref(),
        ) else {
            continue;
        };
        let base = format!("http://{ip}:{}", admin_port(pod));
        if let Some(status) =
            get_json::<WorkerStatus>(ctx, &format!("{base}{STATUS_PATH}"), token).await
        {
            workers.insert(ordinal, status);
        }
        if let Some(id) = &in_progress
            && let Some(result) =
                get_json::<SavepointResult>(ctx, &format!("{base}{SAVEPOINTS_PATH}/{id}"), token)
                    .await
        {
            savepoints.insert(ordinal, result);
        }
    }

    let spec = job.spec.clone();
    let mut inputs = spec.source.topics.clone();
    let shuffle = oxbow_crds::names::shuffle_topic(namespace, name);
    if deployed.as_ref().is_some_and(|d| {
        d.assignment
            .workers
            .iter()
            .any(|w| w.partitions.contains_key(&shuffle))
    }) {
        inputs.push(shuffle);
    }
    let group = oxbow_crds::names::consumer_group(namespace, name);
    let (partitions, offsets) = match kafka::client_config(&client, namespace, &spec.kafka).await {
        Ok(config) => read_kafka(config, &spec.source.topics, &group, inputs).await,
        Err(e) => {
            tracing::warn!(error = %e, "failed to read partitions and offsets from Kafka");
            Default::default()
        }
    };
    let progress = offsets.map(|partitions| ctx.progress(namespace, name, partitions));
    Ok(Observed {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        generation: job.metadata.generation.unwrap_or(0),
        validation: oxbow_crds::validation::validate(&spec),
        spec,
        status: job.status.clone().unwrap_or_default(),
        deployed,
        stable,
        stateful_set,
        pods: worker_pods,
        workers,
        savepoints,
        partitions,
        progress,
        deleting: job.metadata.deletion_timestamp.is_some(),
        has_finalizer: job.finalizers().iter().any(|f| f == names::FINALIZER),
        now: Timestamp::now(),
    })
}

/// The admin port of a worker pod: [`names::ADMIN_PORT_ANNOTATION`] when set (the tests' harness
/// runs workers on other ports), else [`ADMIN_PORT`].
pub fn admin_port(pod: &Pod) -> u16 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(names::ADMIN_PORT_ANNOTATION))
        .and_then(|p| p.parse().ok())
        .unwrap_or(ADMIN_PORT)
}

/// The job's admin token, if its Secret exists.
pub async fn admin_token(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets
        .get_opt(&names::admin_secret(name))
        .await
        .map_err(kube_err("read the admin Secret"))?;
    Ok(secret
        .and_then(|s| s.data)
        .and_then(|d| d.get(ADMIN_TOKEN_KEY).cloned())
        .and_then(|b| String::from_utf8(b.0).ok()))
}

async fn get_json<T: serde::de::DeserializeOwned>(
    ctx: &Context,
    url: &str,
    token: &str,
) -> Option<T> {
    let response = ctx.http.get(url).bearer_auth(token).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// Partition counts of the source topics that exist, and every input partition's offsets
/// (watermarks and the job group's committed offset), read with the job's client settings
/// `config`. Counts are empty and offsets `None` when the broker does not answer (as when the
/// Kafka Secret cannot be read): the planner waits rather than guessing.
async fn read_kafka(
    mut config: ClientConfig,
    sources: &[String],
    group: &str,
    inputs: Vec<String>,
) -> (BTreeMap<String, i32>, Option<Vec<PartitionOffsets>>) {
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    let sources = sources.to_vec();
    let read = tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(5);
        let consumer: BaseConsumer = config.create().ok()?;
        let mut counts = BTreeMap::new();
        let mut list = TopicPartitionList::new();
        for topic in &inputs {
            let metadata = consumer.fetch_metadata(Some(topic), timeout).ok()?;
            let n = metadata
                .topics()
                .first()
                .map_or(0, |t| t.partitions().len());
            let n = i32::try_from(n).unwrap_or(i32::MAX);
            if n > 0 && sources.contains(topic) {
                counts.insert(topic.clone(), n);
            }
            for partition in 0..n {
                list.add_partition(topic, partition);
            }
        }
        let offsets = (|| {
            let committed = consumer.committed_offsets(list.clone(), timeout).ok()?;
            let mut offsets = Vec::new();
            for e in list.elements() {
                let (low, high) = consumer
                    .fetch_watermarks(e.topic(), e.partition(), timeout)
                    .ok()?;
                let committed = committed
                    .find_partition(e.topic(), e.partition())
                    .and_then(|c| c.offset().to_raw())
                    .filter(|o| *o >= 0);
                offsets.push(PartitionOffsets {
                    topic: e.topic().to_owned(),
                    partition: e.partition(),
                    low_watermark: low,
                    high_watermark: high,
                    committed,
                });
            }
            Some(offsets)
        })();
        Some((counts, offsets))
    })
    .await;
    read.ok().flatten().unwrap_or_default()
}
