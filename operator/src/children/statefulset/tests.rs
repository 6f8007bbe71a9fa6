use k8s_openapi::api::core::v1::{PodSpec, Volume};
use oxbow_crds::streamjob::{JobState, KafkaSecurity};

use super::*;
use crate::children::fixtures::{defaults, job_file, stream_job};

fn build() -> StatefulSet {
    stateful_set(&stream_job(), &job_file(), &defaults()).unwrap()
}

fn build_with(change: impl FnOnce(&mut JobFile)) -> StatefulSet {
    let mut file = job_file();
    change(&mut file);
    stateful_set(&stream_job(), &file, &defaults()).unwrap()
}

fn template_of(sts: &StatefulSet) -> (ObjectMeta, PodSpec) {
    let template = sts.spec.clone().unwrap().template;
    (template.metadata.unwrap(), template.spec.unwrap())
}

fn worker(pod: &PodSpec) -> &Container {
    assert_eq!(pod.containers.len(), 1);
    &pod.containers[0]
}

/// The ConfigMap or Secret, and its key, that the worker container sees at `path`: what the
/// kubelet would put there.
fn resolve(pod: &PodSpec, path: &str) -> Option<(&'static str, String, String)> {
    let mounts = worker(pod).volume_mounts.as_ref()?;
    let mount = mounts
        .iter()
        .find(|m| path.starts_with(&format!("{}/", m.mount_path)))?;
    let relative = &path[mount.mount_path.len() + 1..];
    let volume: &Volume = pod
        .volumes
        .as_ref()?
        .iter()
        .find(|v| v.name == mount.name)?;
    let (kind, name, items) = if let Some(cm) = &volume.config_map {
        ("ConfigMap", cm.name.clone(), cm.items.clone())
    } else if let Some(s) = &volume.secret {
        ("Secret", s.secret_name.clone()?, s.items.clone())
    } else {
        return None;
    };
    let key = match items {
        Some(items) => items.into_iter().find(|i| i.path == relative)?.key,
        None => relative.to_owned(),
    };
    Some((kind, name, key))
}

#[test]
fn the_operator_decides_when_pods_restart() {
    let spec = build().spec.unwrap();
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    let strategy = spec.update_strategy.unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("OnDelete"));
    assert!(strategy.rolling_update.is_none());
    assert_eq!(spec.service_name.as_deref(), Some("fraud"));
    assert_eq!(spec.replicas, Some(3));
    assert!(spec.volume_claim_templates.is_none());
}

#[test]
fn the_selector_matches_the_pods_whatever_labels_the_user_sets() {
    let sts = build();
    let selector = sts.spec.clone().unwrap().selector.match_labels.unwrap();
    let (template, _) = template_of(&sts);
    let labels = template.labels.unwrap();
    assert_eq!(selector["app.kubernetes.io/instance"], "fraud");
    assert_eq!(selector["app.kubernetes.io/name"], "oxbow-worker");
    for (k, v) in &selector {
        assert_eq!(labels.get(k), Some(v), "{k}");
    }
    // The user's own label stays; their attempt at a selector label does not.
    assert_eq!(labels["team"], "risk");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "oxbow-operator");
    assert_eq!(
        meta::selector_string("fraud"),
        "app.kubernetes.io/instance=fraud,app.kubernetes.io/name=oxbow-worker"
    );
}

#[test]
fn the_worker_finds_its_job_file_and_token_where_crds_says() {
    let (_, pod) = template_of(&build());
    assert_eq!(
        resolve(&pod, JOB_FILE_PATH),
        Some(("ConfigMap", "fraud-job".to_owned(), JOB_FILE_KEY.to_owned()))
    );
    assert_eq!(
        resolve(&pod, ADMIN_TOKEN_PATH),
        Some((
            "Secret",
            "fraud-admin".to_owned(),
            ADMIN_TOKEN_KEY.to_owned()
        ))
    );
    // Those are the names and keys the other builders write.
    let cm = crate::children::configmap::config_map(&stream_job(), &job_file()).unwrap();
    assert_eq!(cm.metadata.name.as_deref(), Some("fraud-job"));
    assert!(cm.data.unwrap().contains_key(JOB_FILE_KEY));
    let secret = crate::children::secret::admin_secret(&stream_job(), "t").unwrap();
    assert_eq!(secret.metadata.name.as_deref(), Some("fraud-admin"));
    assert!(secret.data.unwrap().contains_key(ADMIN_TOKEN_KEY));
}

#[test]
fn the_kafka_credentials_are_mounted_only_when_the_spec_names_a_secret() {
    let (_, pod) = template_of(&build());
    for key in [
        kafka::secret_keys::USERNAME,
        kafka::secret_keys::PASSWORD,
        kafka::secret_keys::CA,
    ] {
        assert_eq!(
            resolve(&pod, &format!("{}/{key}", kafka::SECRET_DIR)),
            Some(("Secret", "kafka-creds".to_owned(), key.to_owned()))
        );
    }
    for security in [
        None,
        Some(KafkaSecurity {
            protocol: oxbow_crds::streamjob::SecurityProtocol::Ssl,
            mechanism: None,
            secret_ref: None,
        }),
    ] {
        let (_, pod) = template_of(&build_with(|f| f.spec.kafka.security = security));
        assert_eq!(
            resolve(&pod, &format!("{}/username", kafka::SECRET_DIR)),
            None
        );
        assert_eq!(pod.volumes.unwrap().len(), 3);
    }
}

#[test]
fn secrets_are_readable_by_the_worker_only() {
    let (_, pod) = template_of(&build());
    let secrets: Vec<_> = pod
        .volumes
        .clone()
        .unwrap()
        .into_iter()
        .filter_map(|v| v.secret)
        .collect();
    assert_eq!(secrets.len(), 2);
    for s in secrets {
        assert_eq!(s.default_mode, Some(0o440), "{:?}", s.secret_name);
    }
    let mounts = worker(&pod).volume_mounts.clone().unwrap();
    for m in mounts.iter().filter(|m| m.mount_path != "/tmp") {
        assert_eq!(m.read_only, Some(true), "{}", m.mount_path);
    }
}

#[test]
fn the_pod_meets_the_restricted_pod_security_standard() {
    let (_, pod) = template_of(&build());
    let psc = pod.security_context.clone().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(65532));
    assert_eq!(psc.run_as_group, Some(65532));
    assert_eq!(psc.fs_group, Some(65532));
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let sc = worker(&pod).security_context.clone().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.privileged, None);
    let caps = sc.capabilities.unwrap();
    assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(caps.add, None);
    // Restricted allows only these volume types; none is a hostPath.
    for v in pod.volumes.clone().unwrap() {
        assert!(
            v.config_map.is_some() || v.secret.is_some() || v.empty_dir.is_some(),
            "{}",
            v.name
        );
        assert!(v.host_path.is_none());
    }
    assert_eq!(pod.host_network, None);
    assert_eq!(pod.automount_service_account_token, Some(false));
}

#[test]
fn the_read_only_root_leaves_tmp_writable() {
    let (_, pod) = template_of(&build());
    let tmp = worker(&pod)
        .volume_mounts
        .clone()
        .unwrap()
        .into_iter()
        .find(|m| m.mount_path == "/tmp")
        .unwrap();
    assert_ne!(tmp.read_only, Some(true));
    let volume = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == tmp.name)
        .unwrap();
    assert!(volume.empty_dir.is_some());
}

#[test]
fn probes_ask_the_admin_api_on_the_admin_port() {
    let (_, pod) = template_of(&build());
    let c = worker(&pod);
    let port = c
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .find(|p| p.name.as_deref() == Some("admin"));
    assert_eq!(port.map(|p| p.container_port), Some(i32::from(ADMIN_PORT)));
    for (probe, path) in [
        (c.readiness_probe.clone(), READYZ_PATH),
        (c.liveness_probe.clone(), HEALTHZ_PATH),
    ] {
        let get = probe.unwrap().http_get.unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::String("admin".into()));
    }
}

#[test]
fn the_container_runs_the_worker_with_its_pod_name() {
    let (_, pod) = template_of(&build());
    let c = worker(&pod);
    assert_eq!(c.name, "worker");
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example/oxbow-worker:0.2.0")
    );
    assert_eq!(c.args, Some(vec!["run".to_owned()]));
    let env = c.env.clone().unwrap();
    let pod_name: Vec<_> = env.iter().filter(|e| e.name == "POD_NAME").collect();
    assert_eq!(pod_name.len(), 1, "the user's POD_NAME is dropped");
    let field = pod_name[0].value_from.clone().unwrap().field_ref.unwrap();
    assert_eq!(field.field_path, "metadata.name");
    assert!(
        env.iter()
            .any(|e| e.name == "RUST_BACKTRACE" && e.value.as_deref() == Some("1"))
    );
    let mut names: Vec<_> = env.iter().map(|e| &e.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), env.len(), "env names are unique");

    let (_, pod) = template_of(&build_with(|f| f.spec.image = None));
    assert_eq!(
        worker(&pod).image.as_deref(),
        Some("registry.example/oxbow-worker:0.1.0")
    );
}

#[test]
fn the_pod_template_carries_the_job_file_hash() {
    let (meta, pod) = template_of(&build());
    let annotations = meta.annotations.unwrap();
    let hash = configmap::job_file_sha256(&job_file()).unwrap();
    assert_eq!(annotations[JOB_FILE_HASH_ANNOTATION], hash);
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(
        annotations["kubectl.kubernetes.io/default-container"],
        "worker"
    );
    // The worker sees the same hash through the downward API.
    let env = worker(&pod).env.clone().unwrap();
    let var = env.iter().find(|e| e.name == JOB_FILE_HASH_ENV).unwrap();
    assert_eq!(
        var.value_from
            .clone()
            .unwrap()
            .field_ref
            .unwrap()
            .field_path,
        format!("metadata.annotations['{JOB_FILE_HASH_ANNOTATION}']")
    );

    let (moved, _) = template_of(&build_with(|f| f.assignment.generation += 1));
    assert_ne!(moved.annotations.unwrap()[JOB_FILE_HASH_ANNOTATION], hash);
}

#[test]
fn pod_settings_come_from_the_spec_template() {
    let (_, pod) = template_of(&build());
    let template = job_file().spec.template;
    assert_eq!(pod.node_selector, Some(template.node_selector));
    assert_eq!(pod.tolerations, Some(template.tolerations));
    assert_eq!(pod.affinity, template.affinity);
    assert_eq!(pod.service_account_name.as_deref(), Some("fraud-worker"));
    assert_eq!(worker(&pod).resources, template.resources);

    let (_, bare) = template_of(&build_with(|f| f.spec.template = Default::default()));
    assert_eq!(bare.node_selector, None);
    assert_eq!(bare.tolerations, None);
    assert_eq!(bare.affinity, None);
    assert_eq!(bare.service_account_name, None);
    assert_eq!(worker(&bare).resources, None);
}

#[test]
fn the_pods_come_from_the_job_file_not_the_latest_spec() {
    // During a rollback the StreamJob says one thing and the job file, the generation being
    // rolled out, another: the pods run the job file.
    let mut job = stream_job();
    job.spec.image = Some("registry.example/oxbow-worker:9.9.9".into());
    job.spec.replicas = 7;
    let sts = stateful_set(&job, &job_file(), &defaults()).unwrap();
    assert_eq!(sts.spec.clone().unwrap().replicas, Some(3));
    let (_, pod) = template_of(&sts);
    assert_eq!(
        worker(&pod).image.as_deref(),
        Some("registry.example/oxbow-worker:0.2.0")
    );
}

#[test]
fn a_suspended_job_has_no_workers() {
    let sts = build_with(|f| f.spec.state = JobState::Suspended);
    assert_eq!(sts.spec.unwrap().replicas, Some(0));
}

#[test]
fn a_stopping_worker_has_time_for_its_final_checkpoint() {
    let (_, pod) = template_of(&build());
    assert_eq!(pod.termination_grace_period_seconds, Some(90 + 30));
    let mut spec = job_file().spec;
    spec.checkpoint = None;
    assert_eq!(termination_grace_period(&spec).unwrap(), 30);
    let mut spec = job_file().spec;
    if let Some(c) = spec.checkpoint.as_mut() {
        c.timeout = "1500ms".into();
    }
    assert_eq!(termination_grace_period(&spec).unwrap(), 32);
    if let Some(c) = spec.checkpoint.as_mut() {
        c.timeout = "soon".into();
    }
    assert_eq!(
        termination_grace_period(&spec).unwrap_err().reason(),
        "InvalidCheckpointTimeout"
    );
}

#[test]
fn what_server_side_apply_sends_names_its_kind() {
    let json = serde_json::to_value(build()).unwrap();
    assert_eq!(json["apiVersion"], "apps/v1");
    assert_eq!(json["kind"], "StatefulSet");
    assert_eq!(json["metadata"]["namespace"], "payments");
    assert_eq!(json["spec"]["updateStrategy"]["type"], "OnDelete");
    assert_eq!(
        json["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
}
