//! The act stage: carries out the one action the planner chose.

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Pod, Secret, Service},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{
        controller::Action as Requeue,
        events::{Event, EventType},
    },
};
use oxbow_crds::{
    StreamJob,
    admin::{SAVEPOINTS_PATH, SavepointRequest},
    jobfile::JobFile,
};
use rdkafka::{
    ClientConfig,
    producer::{BaseProducer, Producer},
};

use super::{Context, Error, MANAGER, kube_err, observe};
use crate::{
    children::{self, configmap::job_file_json, names},
    plan::{Action, Observed, Plan},
};

/// How often a settled job is looked at again (lag and worker health change without events).
const RESYNC: Duration = Duration::from_secs(10);

/// Carries out `plan.action`; returns when to look again.
pub async fn act(
    ctx: &Context,
    job: &StreamJob,
    o: &Observed,
    plan: &Plan,
) -> Result<Requeue, Error> {
    let ns = o.namespace.as_str();
    match &plan.action {
        Action::CreateOrUpdateChildren { job_file } | Action::RollOut { job_file } => {
            apply_children(ctx, job, job_file).await?;
            if matches!(plan.action, Action::CreateOrUpdateChildren { .. }) && o.deployed.is_none()
            {
                publish(
                    ctx,
                    job,
                    EventType::Normal,
                    "Deploying",
                    "Created the job's workers",
                )
                .await;
            }
            Ok(Requeue::requeue(Duration::from_secs(2)))
        }
        Action::ScaleToZero { job_file } => {
            apply_children(ctx, job, job_file).await?;
            Ok(Requeue::requeue(Duration::from_secs(2)))
        }
        Action::StopWorkers => {
            let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
            let patch = serde_json::json!({"spec": {"replicas": 0}});
            sets.patch(
                &names::stateful_set(&o.name),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(kube_err("scale the workers to zero"))?;
            Ok(Requeue::requeue(Duration::from_secs(2)))
        }
        Action::DeletePods { ordinals } => {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
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
            Ok(Requeue::requeue(Duration::from_secs(2)))
        }
        Action::MarkStable { job_file } => {
            let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
            let patch = serde_json::json!({"data": {observe::STABLE_JOB_FILE_KEY: job_file_json(job_file)?}});
            maps.patch(
                &names::config_map(&o.name),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(kube_err("record the stable job file"))?;
            publish(
                ctx,
                job,
                EventType::Normal,
                "Running",
                "Every worker restored and is processing",
            )
            .await;
            Ok(Requeue::requeue(RESYNC))
        }
        Action::RequestSavepoint { id, ordinals, stop } => {
            let token = observe::admin_token(&ctx.client, ns, &o.name)
                .await?
                .unwrap_or_default();
            for ordinal in ordinals {
                let Some(base) = worker_base_url(ctx, ns, &o.name, *ordinal).await else {
                    continue;
                };
                let request = SavepointRequest {
                    id: id.clone(),
                    stop: *stop,
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
            Ok(Requeue::requeue(Duration::from_secs(1)))
        }
        Action::DisposeSavepoints {
            savepoints,
            ordinal,
        } => {
            let token = observe::admin_token(&ctx.client, ns, &o.name)
                .await?
                .unwrap_or_default();
            let base = worker_base_url(ctx, ns, &o.name, *ordinal)
                .await
                .ok_or(Error::Dispose {
                    message: format!("worker {ordinal} has no address"),
                })?;
            for sp in savepoints {
                let response = ctx
                    .http
                    .delete(format!("{base}{SAVEPOINTS_PATH}/{}", sp.id))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| Error::Dispose {
                        message: format!("savepoint {} at {}: {e}", sp.id, sp.path),
                    })?;
                tracing::info!(savepoint = %sp.id, path = %sp.path, status = %response.status(), "disposed of a savepoint beyond the history limit");
            }
            let ids: Vec<&str> = savepoints.iter().map(|s| s.id.as_str()).collect();
            publish(
                ctx,
                job,
                EventType::Normal,
                "SavepointsDisposed",
                &format!(
                    "Deleted savepoints {ids:?} from storage (savepoint.historyLimit {})",
                    o.spec.savepoint.history_limit
                ),
            )
            .await;
            Ok(Requeue::requeue(Duration::from_secs(1)))
        }
        Action::AddFinalizer | Action::RemoveFinalizer { .. } => {
            let add = matches!(plan.action, Action::AddFinalizer);
            let mut finalizers = job.finalizers().to_vec();
            finalizers.retain(|f| f != FINALIZER);
            if add {
                finalizers.push(FINALIZER.to_owned());
            }
            let jobs: Api<StreamJob> = Api::namespaced(ctx.client.clone(), ns);
            let patch = serde_json::json!({"metadata": {
                "finalizers": finalizers,
                "resourceVersion": job.resource_version(),
            }});
            jobs.patch(&o.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(kube_err("update the StreamJob's finalizers"))?;
            if let Action::RemoveFinalizer { reason, message } = &plan.action {
                let type_ = match *reason {
                    "FinalSavepointTaken" | "NothingToSave" | "FinalSavepointDisabled" => {
                        EventType::Normal
                    }
                    _ => EventType::Warning,
                };
                publish(ctx, job, type_, reason, message).await;
            }
            Ok(Requeue::requeue(Duration::from_millis(200)))
        }
        Action::WaitForSavepoint { requeue_after, .. } => Ok(Requeue::requeue(*requeue_after)),
        Action::Fence {
            transactional_ids,
            then,
        } => {
            fence(&o.spec, transactional_ids).await?;
            let jobs: Api<StreamJob> = Api::namespaced(ctx.client.clone(), ns);
            let patch = serde_json::json!({"status": {"operation": then}});
            jobs.patch_status(&o.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(kube_err("record the fenced step"))?;
            Ok(Requeue::requeue(Duration::from_millis(500)))
        }
        Action::Block { reason, message } | Action::Fail { reason, message } => {
            publish(ctx, job, EventType::Warning, reason, message).await;
            Ok(Requeue::requeue(RESYNC))
        }
        Action::ReportInvalid { message } => {
            publish(ctx, job, EventType::Warning, "InvalidSpec", message).await;
            Ok(Requeue::requeue(Duration::from_secs(60)))
        }
        Action::Wait { requeue_after, .. } => Ok(Requeue::requeue(*requeue_after)),
        Action::Nothing => Ok(Requeue::requeue(RESYNC)),
    }
}

/// The finalizer that holds a StreamJob's deletion until its final savepoint
/// (`savepoint.onDelete`).
pub const FINALIZER: &str = "oxbow.dev/final-savepoint";

/// `http://<pod IP>:<admin port>` of worker `ordinal`, if its pod has an address.
async fn worker_base_url(ctx: &Context, ns: &str, name: &str, ordinal: u32) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let pod = pods.get(&names::pod(name, ordinal)).await.ok()?;
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone())?;
    Some(format!("http://{ip}:{}", observe::admin_port(&pod)))
}

/// Applies every child server-side under one field manager, the Secret's token kept once
/// generated.
async fn apply_children(ctx: &Context, job: &StreamJob, job_file: &JobFile) -> Result<(), Error> {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let token = match observe::admin_token(&ctx.client, &ns, &name).await? {
        Some(token) => token,
        None => new_token(),
    };
    let children = children::build(job, job_file, &token, &ctx.defaults)?;
    ensure_shuffle_topic(job, job_file).await;
    let params = PatchParams::apply(MANAGER).force();
    let client = ctx.client.clone();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch(
            &names::admin_secret(&name),
            &params,
            &Patch::Apply(&children.admin_secret),
        )
        .await
        .map_err(kube_err("apply the admin Secret"))?;
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .patch(
            &names::config_map(&name),
            &params,
            &Patch::Apply(&children.config_map),
        )
        .await
        .map_err(kube_err("apply the job ConfigMap"))?;
    Api::<Service>::namespaced(client.clone(), &ns)
        .patch(
            &names::service(&name),
            &params,
            &Patch::Apply(&children.service),
        )
        .await
        .map_err(kube_err("apply the Service"))?;
    if ctx.pdb_supported {
        Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
            .patch(
                &names::pod_disruption_budget(&name),
                &params,
                &Patch::Apply(&children.pod_disruption_budget),
            )
            .await
            .map_err(kube_err("apply the PodDisruptionBudget"))?;
    }
    Api::<StatefulSet>::namespaced(client, &ns)
        .patch(
            &names::stateful_set(&name),
            &params,
            &Patch::Apply(&children.stateful_set),
        )
        .await
        .map_err(kube_err("apply the StatefulSet"))?;
    Ok(())
}

/// Creates the job's repartition topic when its pipeline needs one (partitions: the largest
/// source topic's). Failure is logged: the workers report the missing topic.
async fn ensure_shuffle_topic(job: &StreamJob, job_file: &JobFile) {
    let Some((topic, partitions)) = job_file
        .assignment
        .workers
        .iter()
        .flat_map(|w| w.partitions.iter())
        .find(|(t, _)| {
            t.ends_with(".shuffle")
                && **t == oxbow_crds::names::shuffle_topic(&job_file.namespace, &job_file.name)
        })
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
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &job.spec.kafka.bootstrap_servers);
    let Ok(admin) = config.create::<AdminClient<rdkafka::client::DefaultClientContext>>() else {
        return;
    };
    let partitions = i32::try_from(partitions).unwrap_or(1);
    let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(-1));
    match admin.create_topics(&[new], &AdminOptions::new()).await {
        Ok(results) => {
            for r in results {
                if let Err((t, code)) = r
                    && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
                {
                    tracing::warn!(topic = t, error = %code, "failed to create the shuffle topic");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "failed to create the shuffle topic"),
    }
}

/// Fences the previous generation: initializing transactions with each id bumps its epoch and
/// aborts whatever it left open.
async fn fence(spec: &oxbow_crds::StreamJobSpec, ids: &[String]) -> Result<(), Error> {
    let bootstrap = spec.kafka.bootstrap_servers.clone();
    let properties = spec.kafka.properties.clone();
    let ids = ids.to_vec();
    tokio::task::spawn_blocking(move || {
        for id in ids {
            let mut config = ClientConfig::new();
            config
                .set("bootstrap.servers", &bootstrap)
                .set("transactional.id", &id);
            for (k, v) in &properties {
                config.set(k, v);
            }
            let producer: BaseProducer = config.create().map_err(|e| Error::Fence {
                id: id.clone(),
                message: e.to_string(),
            })?;
            producer
                .init_transactions(Duration::from_secs(30))
                .map_err(|e| Error::Fence {
                    id: id.clone(),
                    message: e.to_string(),
                })?;
        }
        Ok(())
    })
    .await
    .map_err(|e| Error::Fence {
        id: "-".into(),
        message: e.to_string(),
    })?
}

fn new_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn publish(ctx: &Context, job: &StreamJob, type_: EventType, reason: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &job.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "failed to publish an event");
    }
}
