//! The StatefulSet `<job>`: one pod per worker, which the operator restarts itself.
//!
//! Pod management `Parallel` (workers are independent; a rollout starts them all at once) and
//! update strategy `OnDelete`: a new pod template takes effect only when the operator deletes
//! the pods, after the savepoint and fencing steps of an upgrade. Since a pod that dies for any
//! other reason (eviction, node loss) is recreated from the *current* template, the controller
//! should write the StatefulSet of a new generation only when it rolls that generation out.

use std::{collections::BTreeMap, path::Path, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy},
        core::v1::{
            Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
            EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector,
            PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
            SecretVolumeSource, SecurityContext, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use oxbow_crds::{
    StreamJob, StreamJobSpec,
    admin::{ADMIN_PORT, HEALTHZ_PATH, READYZ_PATH},
    jobfile::{ADMIN_TOKEN_KEY, ADMIN_TOKEN_PATH, JOB_FILE_KEY, JOB_FILE_PATH, JobFile},
    kafka,
    streamjob::JobState,
};

use super::{BuildError, WorkerDefaults, configmap, meta, meta::Owner, names};

/// Name of the worker container.
pub const CONTAINER_NAME: &str = "worker";
/// Name of the admin port, on the container and the Service.
pub const ADMIN_PORT_NAME: &str = "admin";
/// Pod-template annotation carrying [`configmap::job_file_sha256`] of the job file the pods
/// are meant to run. A pod whose annotation differs from the current job file's hash started
/// from an older generation.
pub const JOB_FILE_HASH_ANNOTATION: &str = "oxbow.dev/job-file-sha256";
/// Environment variable through which the worker sees [`JOB_FILE_HASH_ANNOTATION`] (downward
/// API), so that it can refuse a mounted job file that is not yet the one its pod was made for.
pub const JOB_FILE_HASH_ENV: &str = "OXBOW_JOB_FILE_SHA256";
/// Environment variable with the pod's name, from which the worker takes its ordinal.
pub const POD_NAME_ENV: &str = "POD_NAME";
/// User and group the worker runs as (the distroless `nonroot` user).
pub const WORKER_UID: i64 = 65532;
/// Time a stopping worker gets beyond `checkpoint.timeout`: on SIGTERM it takes a final
/// checkpoint, then exits.
pub const TERMINATION_GRACE_MARGIN: Duration = Duration::from_secs(30);

const JOB_VOLUME: &str = "job";
const ADMIN_TOKEN_VOLUME: &str = "admin-token";
const KAFKA_VOLUME: &str = "kafka-credentials";
const TMP_VOLUME: &str = "tmp";
/// `r--r--r--`.
const CONFIG_MAP_MODE: i32 = 0o444;
/// `r--r-----`: readable by the worker through `fsGroup`, by nobody else.
const SECRET_MODE: i32 = 0o440;

/// The StatefulSet of `job`'s workers, running the spec in `job_file`.
///
/// Everything about the pods comes from `job_file.spec` (the generation being rolled out);
/// `job` gives only names, namespace and the owner reference.
pub fn stateful_set(
    job: &StreamJob,
    job_file: &JobFile,
    defaults: &WorkerDefaults,
) -> Result<StatefulSet, BuildError> {
    let owner = Owner::of(job)?;
    owner.check_job_file(job_file)?;
    let spec = &job_file.spec;
    let hash = configmap::job_file_sha256(job_file)?;
    let grace = termination_grace_period(spec)?;
    Ok(StatefulSet {
        metadata: owner.object_meta(names::stateful_set(&owner.name)),
        spec: Some(StatefulSetSpec {
            replicas: Some(worker_replicas(spec)),
            selector: meta::label_selector(&owner.name),
            service_name: Some(names::service(&owner.name)),
            pod_management_policy: Some("Parallel".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_owned()),
                rolling_update: None,
            }),
            revision_history_limit: Some(3),
            template: PodTemplateSpec {
                metadata: Some(pod_metadata(&owner.name, spec, &hash)),
                spec: Some(pod_spec(&owner.name, spec, defaults, grace)),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

/// Worker pods a spec asks for: `spec.replicas`, or none while suspended.
pub fn worker_replicas(spec: &StreamJobSpec) -> i32 {
    match spec.state {
        JobState::Running => spec.replicas.max(0),
        JobState::Suspended => 0,
    }
}

/// `terminationGracePeriodSeconds`: `checkpoint.timeout` (the final checkpoint a stopping
/// worker takes) plus [`TERMINATION_GRACE_MARGIN`], rounded up to whole seconds.
pub fn termination_grace_period(spec: &StreamJobSpec) -> Result<i64, BuildError> {
    let checkpoint = match &spec.checkpoint {
        Some(c) => c.timeout.parse().map_err(BuildError::CheckpointTimeout)?,
        None => Duration::ZERO,
    };
    let total = checkpoint.saturating_add(TERMINATION_GRACE_MARGIN);
    let secs = total.as_secs() + u64::from(total.subsec_nanos() > 0);
    Ok(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// User labels and annotations first, then Oxbow's, which win: the selector labels must match
/// the StatefulSet's immutable selector whatever the user writes.
fn pod_metadata(job: &str, spec: &StreamJobSpec, hash: &str) -> ObjectMeta {
    let mut labels = spec.template.labels.clone();
    labels.extend(meta::labels(job));
    let mut annotations = spec.template.annotations.clone();
    annotations.extend([
        (JOB_FILE_HASH_ANNOTATION.to_owned(), hash.to_owned()),
        (
            "kubectl.kubernetes.io/default-container".to_owned(),
            CONTAINER_NAME.to_owned(),
        ),
    ]);
    ObjectMeta {
        labels: Some(labels),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    }
}

fn pod_spec(job: &str, spec: &StreamJobSpec, defaults: &WorkerDefaults, grace: i64) -> PodSpec {
    let template = &spec.template;
    let kafka_secret = spec
        .kafka
        .security
        .as_ref()
        .and_then(|s| s.secret_ref.as_ref())
        .map(|s| s.name.clone());
    let mut volumes = vec![
        Volume {
            name: JOB_VOLUME.to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::config_map(job),
                items: Some(vec![KeyToPath {
                    key: JOB_FILE_KEY.to_owned(),
                    path: file_name(JOB_FILE_PATH).to_owned(),
                    mode: None,
                }]),
                default_mode: Some(CONFIG_MAP_MODE),
                optional: None,
            }),
            ..Volume::default()
        },
        Volume {
            name: ADMIN_TOKEN_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::admin_secret(job)),
                items: Some(vec![KeyToPath {
                    key: ADMIN_TOKEN_KEY.to_owned(),
                    path: file_name(ADMIN_TOKEN_PATH).to_owned(),
                    mode: None,
                }]),
                default_mode: Some(SECRET_MODE),
                optional: None,
            }),
            ..Volume::default()
        },
        Volume {
            name: TMP_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        read_only_mount(JOB_VOLUME, parent_dir(JOB_FILE_PATH)),
        read_only_mount(ADMIN_TOKEN_VOLUME, parent_dir(ADMIN_TOKEN_PATH)),
        VolumeMount {
            name: TMP_VOLUME.to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        },
    ];
    if let Some(secret) = kafka_secret {
        volumes.push(Volume {
            name: KAFKA_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                default_mode: Some(SECRET_MODE),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        // The whole Secret: the worker reads the keys of `oxbow_crds::kafka::secret_keys` there.
        mounts.push(read_only_mount(KAFKA_VOLUME, kafka::SECRET_DIR));
    }

    PodSpec {
        containers: vec![container(spec, defaults, mounts)],
        volumes: Some(volumes),
        service_account_name: template.service_account_name.clone(),
        // Workers need no Kubernetes API access.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        node_selector: non_empty(template.node_selector.clone()),
        tolerations: non_empty_vec(template.tolerations.clone()),
        affinity: template.affinity.clone(),
        termination_grace_period_seconds: Some(grace),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(WORKER_UID),
            run_as_group: Some(WORKER_UID),
            fs_group: Some(WORKER_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    }
}

fn container(
    spec: &StreamJobSpec,
    defaults: &WorkerDefaults,
    mounts: Vec<VolumeMount>,
) -> Container {
    let http_get = |path: &str| HTTPGetAction {
        path: Some(path.to_owned()),
        port: IntOrString::String(ADMIN_PORT_NAME.to_owned()),
        scheme: Some("HTTP".to_owned()),
        ..HTTPGetAction::default()
    };
    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(spec.image.clone().unwrap_or_else(|| defaults.image.clone())),
        args: Some(vec!["run".to_owned()]),
        env: Some(env(spec)),
        ports: Some(vec![ContainerPort {
            name: Some(ADMIN_PORT_NAME.to_owned()),
            container_port: i32::from(ADMIN_PORT),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        resources: spec.template.resources.clone(),
        volume_mounts: Some(mounts),
        // Ready once restored and processing; not ready while restoring or idle after a
        // stop-with-savepoint.
        readiness_probe: Some(Probe {
            http_get: Some(http_get(READYZ_PATH)),
            period_seconds: Some(5),
            timeout_seconds: Some(2),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        // Lenient: a restart costs a restore from the last checkpoint, so only a worker that
        // has stopped answering for a minute is killed.
        liveness_probe: Some(Probe {
            http_get: Some(http_get(HEALTHZ_PATH)),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(6),
            ..Probe::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

/// Oxbow's variables, then the user's. A user variable with the name of one of Oxbow's is
/// dropped: the names key the list under server-side apply, so a duplicate fails the apply.
fn env(spec: &StreamJobSpec) -> Vec<EnvVar> {
    let field = |path: String| EnvVar {
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".to_owned()),
                field_path: path,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let mut env = vec![
        EnvVar {
            name: POD_NAME_ENV.to_owned(),
            ..field("metadata.name".to_owned())
        },
        EnvVar {
            name: JOB_FILE_HASH_ENV.to_owned(),
            ..field(format!(
                "metadata.annotations['{JOB_FILE_HASH_ANNOTATION}']"
            ))
        },
    ];
    let reserved: Vec<String> = env.iter().map(|e| e.name.clone()).collect();
    env.extend(
        spec.template
            .env
            .iter()
            .filter(|e| !reserved.contains(&e.name))
            .cloned(),
    );
    env
}

fn read_only_mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

fn parent_dir(path: &'static str) -> &'static str {
    Path::new(path)
        .parent()
        .and_then(Path::to_str)
        .unwrap_or("/")
}

fn file_name(path: &'static str) -> &'static str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(path)
}

fn non_empty(map: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then_some(map)
}

fn non_empty_vec<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

#[cfg(test)]
mod tests;
