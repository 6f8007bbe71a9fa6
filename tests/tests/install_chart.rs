//! Installing Oxbow as a platform team would: the Helm chart (`charts/oxbow`), the plain
//! manifests (`manifests/install.yaml`, its kustomization, the examples) and the images
//! (`Dockerfile`), checked against the real control plane, the operator's own builders and
//! the workspace:
//!
//! - `helm lint --strict`, the values schema refusing a misspelt key by name;
//! - the chart's CRD and `manifests/install.yaml` up to date with their sources;
//! - everything applied with `kubectl apply --dry-run=server`, both RBAC modes;
//! - checkov over the rendered chart, the manifests and the Dockerfile: nothing failed, every
//!   skip with its reason;
//! - the images copy the binaries the workspace builds and run them as the operator's
//!   StatefulSet and the chart's Deployment expect (user, ports, arguments, paths);
//! - `helm install`, then the real `oxbow-operator run` process, authenticated with the
//!   chart's ServiceAccount token and configured with the chart's environment (no kubelet
//!   runs the Deployment here), reconciles StreamJobs; `helm uninstall` removes it all;
//! - with each verb of each RBAC rule removed in turn, the operator names the forbidden call
//!   in its log: every rule is needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    coordination::v1::Lease,
    core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount},
    events::v1::Event,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, PostParams},
};
use oxbow_crds::StreamJob;
use oxbow_tests::{
    Component, component, eventually, kafka, kube_env, repo_root, unique_name, worker,
};
use serde_json::{Value, json};

// ---- tools ----

/// A tool `tests/env/install.sh` caches in its `bin/`.
fn cached_tool(name: &str, component: &str) -> PathBuf {
    let path = oxbow_tests::cache_dir().unwrap().join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `bash tests/env/install.sh {component}`",
        path.display()
    );
    path
}

fn helm() -> Command {
    let path = std::env::var_os("OXBOW_TEST_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| cached_tool("helm", "helm"));
    let mut command = Command::new(path);
    // Helm's own caches and repositories, away from the user's.
    let home = std::env::temp_dir().join(format!("oxbow-helm-{}", std::process::id()));
    command
        .current_dir(repo_root())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    command
}

/// kubectl against the test control plane, as its administrator.
fn kubectl() -> Command {
    let mut command = Command::new(cached_tool("kubectl", "helm"));
    command.current_dir(repo_root()).env(
        "KUBECONFIG",
        component(Component::Kubernetes)
            .get("OXBOW_TEST_KUBECONFIG")
            .unwrap(),
    );
    command
}

/// Runs `command` with `stdin`, returning its standard output, or an error with all it said.
fn run(command: &mut Command, stdin: Option<&str>) -> anyhow::Result<String> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("failed to start {command:?}"))?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .context("no stdin")?
            .write_all(text.as_bytes())
            .context("failed to write stdin")?;
    }
    let output = child.wait_with_output().context("failed to wait")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

// ---- rendered YAML ----

/// The objects of a multi-document YAML stream.
fn documents(yaml: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut flush = |text: &mut String| {
        let doc: Value = serde_norway::from_str(text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
        if !doc.is_null() {
            docs.push(doc);
        }
        text.clear();
    };
    for line in yaml.lines() {
        if line == "---" {
            flush(&mut current);
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&mut current);
    docs
}

fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name_of(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn namespace_of(doc: &Value) -> &str {
    doc["metadata"]["namespace"].as_str().unwrap_or_default()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind_of(d) == kind).collect()
}

fn one_of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "one {kind} expected, found {}", found.len());
    found[0]
}

/// `helm template <release> charts/oxbow -n <namespace>` with `--set` values.
fn render(release: &str, namespace: &str, sets: &[&str]) -> String {
    let mut command = helm();
    command.args([
        "template",
        release,
        "charts/oxbow",
        "--namespace",
        namespace,
    ]);
    for set in sets {
        command.args(["--set", set]);
    }
    run(&mut command, None).unwrap()
}

/// `--set watchNamespaces={a,b}`.
fn watch(namespaces: &[&str]) -> String {
    format!("watchNamespaces={{{}}}", namespaces.join(","))
}

/// `kubectl apply --dry-run=server` of `docs`; returns what kubectl printed per object.
///
/// CRDs are sent without kubectl's client-side schema check: the 1.20 server's OpenAPI does
/// not know `x-kubernetes-validations` (Kubernetes 1.23), which the server itself accepts and
/// drops. Everything else is checked on both sides.
fn apply_dry_run(docs: &[Value]) -> anyhow::Result<Vec<String>> {
    let (crds, rest): (Vec<&Value>, Vec<&Value>) = docs
        .iter()
        .partition(|d| kind_of(d) == "CustomResourceDefinition");
    let mut lines = Vec::new();
    for (batch, validate) in [(crds, "false"), (rest, "strict")] {
        if batch.is_empty() {
            continue;
        }
        let list = json!({"apiVersion": "v1", "kind": "List", "items": batch});
        let out = run(
            kubectl().args([
                "apply",
                "--dry-run=server",
                &format!("--validate={validate}"),
                "-f",
                "-",
            ]),
            Some(&list.to_string()),
        )?;
        lines.extend(out.lines().map(str::to_owned));
    }
    Ok(lines)
}

/// Applies `docs` for real, as the administrator.
fn apply(docs: &[&Value]) -> anyhow::Result<()> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    run(
        kubectl().args(["apply", "-f", "-"]),
        Some(&list.to_string()),
    )
    .map(|_| ())
}

fn assert_every_object_accepted(docs: &[Value], lines: &[String], what: &str) {
    assert_eq!(
        lines.len(),
        docs.len(),
        "{what}: one line per object expected:\n{}",
        lines.join("\n")
    );
    for line in lines {
        assert!(
            line.ends_with("(server dry run)"),
            "{what}: {line}\n{}",
            lines.join("\n")
        );
    }
}

async fn create_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("failed to create namespace {name}: {e}"),
    }
}

// ---- the operator's own view of its workers ----

/// The StatefulSet the operator builds for the shipped fraud-detector example.
fn worker_stateful_set() -> StatefulSet {
    let text = std::fs::read_to_string(repo_root().join("manifests/examples/fraud-detector.yaml"))
        .unwrap();
    let mut job = oxbow_crds::parse_manifest(&text).unwrap();
    job.metadata.namespace = Some("prod".into());
    job.metadata.uid = Some("0b0e5c1a-0000-4000-8000-000000000001".into());
    let topics = BTreeMap::from([("payments".to_owned(), 4)]);
    let workers = u32::try_from(job.spec.replicas).unwrap();
    let job_file = oxbow_crds::jobfile::JobFile::new(
        "prod",
        job.name_any(),
        1,
        job.spec.clone(),
        oxbow_crds::assignment::assign(&topics, workers, None),
        oxbow_crds::jobfile::Restore::LatestCheckpoint,
    );
    oxbow_operator::children::statefulset::stateful_set(
        &job,
        &job_file,
        &oxbow_operator::children::WorkerDefaults {
            image: "oxbow-worker:test".into(),
        },
    )
    .unwrap()
}

fn labels_match(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    selector["matchLabels"]
        .as_object()
        .is_some_and(|m| !m.is_empty())
        && selector["matchLabels"]
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
}

fn value_labels(labels: &Value) -> BTreeMap<String, String> {
    labels
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

// ---- lint, schema, sources ----

#[test]
fn the_chart_lints_strictly_in_both_rbac_modes() {
    for sets in [
        vec![],
        vec![watch(&["team-a", "team-b"])],
        vec![
            "metrics.serviceMonitor.enabled=true".to_owned(),
            "worker.podMonitor.enabled=true".to_owned(),
            "podDisruptionBudget.enabled=true".to_owned(),
        ],
    ] {
        let mut command = helm();
        command.args(["lint", "--strict", "charts/oxbow"]);
        for set in &sets {
            command.args(["--set", set]);
        }
        let out = run(&mut command, None).unwrap();
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{out}"
        );
        assert!(!out.contains("[WARNING]"), "{sets:?}: {out}");
    }
    // The packaged chart carries the CRD and the values schema.
    let dir = std::env::temp_dir().join(unique_name("oxbow-package"));
    run(
        helm()
            .args(["package", "charts/oxbow", "--destination"])
            .arg(&dir),
        None,
    )
    .unwrap();
    let package = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let listing = run(Command::new("tar").arg("-tzf").arg(&package), None).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    for file in [
        "oxbow/crds/streamjobs.oxbow.dev.yaml",
        "oxbow/values.schema.json",
        "oxbow/templates/rbac.yaml",
    ] {
        assert!(
            listing.lines().any(|l| l == file),
            "{file} not in {listing}"
        );
    }
}

#[test]
fn a_misspelt_or_wrong_value_fails_naming_it() {
    for (set, says) in [
        (
            "worker.networkPolicy.enable=false",
            "worker.networkPolicy: Additional property enable is not allowed",
        ),
        ("imagee.tag=1", "Additional property imagee is not allowed"),
        ("log.format=yaml", "log.format must be one of the following"),
        (
            "watchNamespaces={Team_A}",
            "watchNamespaces.0: Does not match pattern",
        ),
    ] {
        let err = run(
            helm().args(["template", "x", "charts/oxbow", "--set", set]),
            None,
        )
        .expect_err(set)
        .to_string();
        assert!(err.contains(says), "--set {set}: {err}");
    }
    let err = run(
        helm().args([
            "template",
            "x",
            "charts/oxbow",
            "--set",
            "leaderElection.enabled=false",
        ]),
        None,
    )
    .expect_err("two replicas without leader election")
    .to_string();
    assert!(
        err.contains("replicaCount above 1 needs leaderElection.enabled"),
        "{err}"
    );
}

#[test]
fn install_files_are_up_to_date_with_their_sources() {
    let root = repo_root();
    let generated = std::fs::read(root.join("crds/streamjobs.oxbow.dev.yaml")).unwrap();
    let chart_copy =
        std::fs::read(root.join("charts/oxbow/crds/streamjobs.oxbow.dev.yaml")).unwrap();
    assert!(
        generated == chart_copy,
        "charts/oxbow/crds/ differs from the generated CRD: run manifests/generate.sh"
    );
    let install = std::fs::read_to_string(root.join("manifests/install.yaml")).unwrap();
    let docs = documents(&install);
    let crd = one_of_kind(&docs, "CustomResourceDefinition");
    let source: Value = serde_norway::from_slice(&generated).unwrap();
    assert_eq!(*crd, source, "install.yaml's CRD is not the generated one");
    // The script CI runs: install.yaml equals the chart rendered with its default values.
    let helm_path = std::env::var_os("OXBOW_TEST_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| cached_tool("helm", "helm"));
    run(
        Command::new("bash")
            .arg(root.join("manifests/generate.sh"))
            .arg("--check")
            .env("HELM", helm_path),
        None,
    )
    .unwrap();
}

// ---- server-side dry runs ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_chart_applies_server_side_in_both_rbac_modes() {
    let client = kube_env::client().await.unwrap();
    let mut namespaces = Vec::new();
    for prefix in ["oxbow-sys", "team-a", "team-b"] {
        namespaces.push(kube_env::test_namespace(&client, prefix).await.unwrap());
    }
    let [release_ns, team_a, team_b] = <[String; 3]>::try_from(namespaces).unwrap();
    let statefulset = worker_stateful_set();
    let worker_pod = statefulset.spec.as_ref().unwrap().template.clone();
    let worker_labels = worker_pod
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let worker_container = &worker_pod.spec.as_ref().unwrap().containers[0];

    // Every namespace: a ClusterRole; a list: a Role in each, none cluster-wide.
    let cluster = documents(&render("oxbow", &release_ns, &[]));
    let listed = documents(&render(
        "oxbow",
        &release_ns,
        &[&watch(&[&team_a, &team_b])],
    ));
    for (docs, mode) in [(&cluster, "cluster-wide"), (&listed, "namespaced")] {
        let lines = apply_dry_run(docs).unwrap();
        assert_every_object_accepted(docs, &lines, mode);
        let roles: BTreeSet<(&str, &str)> = of_kind(docs, "Role")
            .into_iter()
            .map(|r| (namespace_of(r), name_of(r)))
            .collect();
        if mode == "cluster-wide" {
            assert_eq!(of_kind(docs, "ClusterRole").len(), 1);
            assert_eq!(of_kind(docs, "ClusterRoleBinding").len(), 1);
            assert_eq!(
                roles,
                BTreeSet::from([(release_ns.as_str(), "oxbow-operator-leader-election")]),
            );
        } else {
            assert!(of_kind(docs, "ClusterRole").is_empty(), "{mode}");
            assert!(of_kind(docs, "ClusterRoleBinding").is_empty(), "{mode}");
            assert_eq!(
                roles,
                BTreeSet::from([
                    (team_a.as_str(), "oxbow-operator"),
                    (team_b.as_str(), "oxbow-operator"),
                    (release_ns.as_str(), "oxbow-operator-leader-election"),
                ]),
            );
        }

        // The operator Deployment: two replicas with leader election, restricted.
        let deployment = one_of_kind(docs, "Deployment");
        let spec = &deployment["spec"];
        assert_eq!(spec["replicas"], 2);
        let pod = &spec["template"]["spec"];
        let pod_labels = value_labels(&spec["template"]["metadata"]["labels"]);
        assert!(labels_match(&spec["selector"], &pod_labels));
        let container = &pod["containers"][0];
        let env: BTreeMap<&str, &Value> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e))
            .collect();
        assert_eq!(env["OXBOW_LEADER_ELECTION"]["value"], "true");
        assert_eq!(env["OXBOW_LEASE_NAMESPACE"]["value"], release_ns.as_str());
        assert_eq!(
            env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        let watched = if mode == "cluster-wide" {
            String::new()
        } else {
            format!("{team_a},{team_b}")
        };
        assert_eq!(env["WATCH_NAMESPACE"]["value"], watched.as_str());
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], 65532);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
        assert!(container["resources"]["limits"]["memory"].is_string());
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(container["ports"][0]["name"], "metrics");
        let spread = &pod["topologySpreadConstraints"][0];
        assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
        assert!(labels_match(&spread["labelSelector"], &pod_labels));

        // The metrics Service reaches the operator pods' metrics port.
        let service = one_of_kind(docs, "Service");
        assert!(labels_match(
            &json!({"matchLabels": service["spec"]["selector"]}),
            &pod_labels
        ));
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");

        // Each worker namespace: a ServiceAccount without API access, and a NetworkPolicy
        // letting only the operator's pods reach the port the operator names on its workers.
        let worker_namespaces: BTreeSet<&str> = if mode == "cluster-wide" {
            BTreeSet::from([release_ns.as_str()])
        } else {
            BTreeSet::from([team_a.as_str(), team_b.as_str()])
        };
        let worker_sas: Vec<&Value> = of_kind(docs, "ServiceAccount")
            .into_iter()
            .filter(|s| name_of(s) == "oxbow-worker")
            .collect();
        assert_eq!(
            worker_sas
                .iter()
                .map(|s| namespace_of(s))
                .collect::<BTreeSet<_>>(),
            worker_namespaces
        );
        for sa in &worker_sas {
            assert_eq!(sa["automountServiceAccountToken"], false);
        }
        let bound: Vec<&str> = of_kind(docs, "RoleBinding")
            .into_iter()
            .chain(of_kind(docs, "ClusterRoleBinding"))
            .flat_map(|b| b["subjects"].as_array().unwrap())
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert!(!bound.contains(&"oxbow-worker"), "{bound:?}");
        let policies: Vec<&Value> = of_kind(docs, "NetworkPolicy")
            .into_iter()
            .filter(|p| name_of(p) == "oxbow-workers")
            .collect();
        assert_eq!(
            policies
                .iter()
                .map(|p| namespace_of(p))
                .collect::<BTreeSet<_>>(),
            worker_namespaces
        );
        for policy in policies {
            let spec = &policy["spec"];
            assert!(labels_match(&spec["podSelector"], &worker_labels));
            assert_eq!(spec["policyTypes"], json!(["Ingress"]));
            let ingress = spec["ingress"].as_array().unwrap();
            assert_eq!(ingress.len(), 1);
            let port = ingress[0]["ports"][0]["port"].as_str().unwrap();
            let admin = worker_container
                .ports
                .as_ref()
                .unwrap()
                .iter()
                .find(|p| p.name.as_deref() == Some(port))
                .unwrap_or_else(|| panic!("the worker container has no port named {port}"));
            assert_eq!(admin.container_port, 9249);
            let from = ingress[0]["from"].as_array().unwrap();
            assert_eq!(from.len(), 1, "only the operator: {from:?}");
            assert!(labels_match(&from[0]["podSelector"], &pod_labels));
            assert_eq!(
                from[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
                release_ns.as_str()
            );
        }
    }

    // The optional monitors select what they should (their CRDs are not on this server).
    let monitored = documents(&render(
        "oxbow",
        &release_ns,
        &[
            "metrics.serviceMonitor.enabled=true",
            "worker.podMonitor.enabled=true",
            &watch(&[&team_a]),
        ],
    ));
    let service_monitor = one_of_kind(&monitored, "ServiceMonitor");
    assert_eq!(service_monitor["spec"]["endpoints"][0]["port"], "metrics");
    let pod_monitor = one_of_kind(&monitored, "PodMonitor");
    assert!(labels_match(
        &pod_monitor["spec"]["selector"],
        &worker_labels
    ));
    assert_eq!(
        pod_monitor["spec"]["podMetricsEndpoints"][0]["port"],
        "admin"
    );
    assert_eq!(
        pod_monitor["spec"]["namespaceSelector"]["matchNames"],
        json!([team_a])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_manifests_kustomization_and_examples_apply_server_side() {
    let client = kube_env::client().await.unwrap();
    let install =
        documents(&std::fs::read_to_string(repo_root().join("manifests/install.yaml")).unwrap());
    // Its Namespace comes first; a dry run does not create it, so the rest needs it made.
    let namespace = one_of_kind(&install, "Namespace");
    assert_eq!(name_of(&install[0]), name_of(namespace));
    create_namespace(&client, name_of(namespace)).await;
    let lines = apply_dry_run(&install).unwrap();
    assert_every_object_accepted(&install, &lines, "manifests/install.yaml");
    for kind in [
        "CustomResourceDefinition",
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "NetworkPolicy",
    ] {
        assert!(
            !of_kind(&install, kind).is_empty(),
            "install.yaml has no {kind}"
        );
    }

    // What a GitOps tool builds from the kustomization is install.yaml.
    let built = documents(&run(kubectl().args(["kustomize", "manifests"]), None).unwrap());
    let key = |d: &Value| {
        (
            kind_of(d).to_owned(),
            namespace_of(d).to_owned(),
            name_of(d).to_owned(),
        )
    };
    // kustomize writes the CRD's `minimum: 1.0` as `1`: the same number.
    let by_key = |docs: &[Value]| -> BTreeMap<_, Value> {
        docs.iter()
            .map(|d| (key(d), numbers_as_floats(d)))
            .collect()
    };
    let (built, expected) = (by_key(&built), by_key(&install));
    assert_eq!(
        built.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (key, object) in &expected {
        assert!(
            built[key] == *object,
            "kustomize changed {key:?}:\n{}\n---\n{}",
            serde_json::to_string(&built[key]).unwrap(),
            serde_json::to_string(object).unwrap()
        );
    }
    let lines = run(
        kubectl().args([
            "apply",
            "--dry-run=server",
            "--validate=false",
            "-k",
            "manifests",
        ]),
        None,
    )
    .unwrap();
    assert_eq!(
        lines
            .lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count(),
        install.len(),
        "{lines}"
    );

    // The examples, as a user applies them once the CRD is installed.
    kube_env::install_crd(&client).await.unwrap();
    let ns = kube_env::test_namespace(&client, "examples").await.unwrap();
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repo_root().join("manifests/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 2, "{examples:?}");
    for example in &examples {
        let out = run(
            kubectl()
                .args(["apply", "--dry-run=server", "-n", &ns, "-f"])
                .arg(example),
            None,
        )
        .unwrap();
        assert!(
            out.trim().starts_with("streamjob.oxbow.dev/")
                && out.trim().ends_with("(server dry run)"),
            "{}: {out}",
            example.display()
        );
        let job = oxbow_crds::parse_manifest(&std::fs::read_to_string(example).unwrap()).unwrap();
        let storage = &job.spec.checkpoint.as_ref().unwrap().storage;
        assert!(
            !storage.starts_with("file://"),
            "{}: a pod's file:// checkpoints die with the pod: {storage}",
            example.display()
        );
    }
}

fn numbers_as_floats(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_floats).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

// ---- checkov ----

#[test]
fn checkov_passes_the_chart_the_manifests_and_the_dockerfile() {
    let checkov = oxbow_tests::cache_dir()
        .unwrap()
        .join("venv-checkov/bin/checkov");
    assert!(
        checkov.exists(),
        "{} is missing: run `bash tests/env/install.sh checkov`",
        checkov.display()
    );
    let dir = std::env::temp_dir().join(unique_name("oxbow-checkov"));
    std::fs::create_dir_all(&dir).unwrap();
    let everything = [
        "metrics.serviceMonitor.enabled=true",
        "worker.podMonitor.enabled=true",
        "podDisruptionBudget.enabled=true",
    ];
    std::fs::write(
        dir.join("chart-cluster.yaml"),
        render("oxbow", "oxbow-system", &everything),
    )
    .unwrap();
    let mut listed = everything.to_vec();
    let namespaces = watch(&["team-a", "team-b"]);
    listed.push(&namespaces);
    std::fs::write(
        dir.join("chart-namespaced.yaml"),
        render("oxbow", "oxbow-system", &listed),
    )
    .unwrap();
    for file in [
        "manifests/install.yaml",
        "manifests/kustomization.yaml",
        "Dockerfile",
    ] {
        let from = repo_root().join(file);
        std::fs::copy(&from, dir.join(from.file_name().unwrap())).unwrap();
    }
    let out = Command::new(&checkov)
        .current_dir(repo_root())
        .args([
            "--config-file",
            ".checkov.yaml",
            "--output",
            "json",
            "--directory",
        ])
        .arg(&dir)
        .args(["--file", "Dockerfile"])
        // No telemetry, no platform: the machines running this reach no network.
        .env("BC_SKIP_MAPPING", "TRUE")
        .env("CHECKOV_RUN_SCA_PACKAGE_SCAN_V2", "false")
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "checkov printed no JSON report ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let reports = match report {
        Value::Array(reports) => reports,
        one => vec![one],
    };
    let mut frameworks = BTreeSet::new();
    for report in &reports {
        let framework = report["check_type"].as_str().unwrap_or_default().to_owned();
        let summary = &report["summary"];
        assert!(
            summary["passed"].as_u64().unwrap() > 0,
            "{framework}: {summary}"
        );
        let failed: Vec<String> = report["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| format!("{} {} ({})", c["check_id"], c["resource"], c["file_path"]))
            .collect();
        assert!(
            failed.is_empty(),
            "{framework}: failed checks:\n{}",
            failed.join("\n")
        );
        for skipped in report["results"]["skipped_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let reason = skipped["check_result"]["suppress_comment"]
                .as_str()
                .unwrap_or_default();
            assert!(
                reason.split_whitespace().count() >= 5,
                "{framework}: {} on {} is skipped without a reason: {reason:?}",
                skipped["check_id"],
                skipped["resource"]
            );
        }
        frameworks.insert(framework);
    }
    assert_eq!(
        frameworks,
        BTreeSet::from(["dockerfile".to_owned(), "kubernetes".to_owned()]),
        "checkov scanned the wrong things"
    );
    assert!(out.status.success(), "checkov exited {}", out.status);
}

// ---- images ----

/// One stage of the Dockerfile: its name and its instructions (continuations joined).
#[derive(Debug, Default)]
struct Stage {
    name: String,
    from: String,
    instructions: Vec<(String, String)>,
}

impl Stage {
    fn all(&self, keyword: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn last(&self, keyword: &str) -> Option<&str> {
        self.all(keyword).last().copied()
    }
}

fn dockerfile_stages(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical.iter().filter(|l| !l.is_empty()) {
        let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            let name = match parts.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => (*name).to_owned(),
                _ => String::new(),
            };
            stages.push(Stage {
                name,
                from: parts[0].to_owned(),
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push((keyword, rest.trim().to_owned()));
        }
    }
    stages
}

/// An instruction of `stage`, or the one it inherits from the stage it is built `FROM`.
fn inherited<'a>(stages: &'a [Stage], stage: &'a Stage, keyword: &str) -> Option<&'a str> {
    stage.last(keyword).or_else(|| {
        stages
            .iter()
            .find(|s| s.name == stage.from)
            .and_then(|parent| inherited(stages, parent, keyword))
    })
}

/// The image a stage is built on, through the stages it is built `FROM`.
fn base_image<'a>(stages: &'a [Stage], stage: &'a Stage) -> &'a str {
    match stages.iter().find(|s| s.name == stage.from) {
        Some(parent) => base_image(stages, parent),
        None => &stage.from,
    }
}

/// The `[[bin]]` target names of a workspace package, from `cargo metadata`.
fn bin_names(metadata: &Value, package: &str) -> Vec<String> {
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("no package {package} in the workspace"))["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

fn json_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not an exec-form list ({e}): {text}"))
}

/// What one image promises: which binary it runs as which user, on which port, with which
/// default arguments.
#[derive(Debug)]
struct Image {
    entrypoint: String,
    args: Vec<String>,
    user: (i64, i64),
    ports: Vec<i32>,
    copied: Vec<String>,
}

fn image(stages: &[Stage], target: &str) -> Image {
    let stage = stages
        .iter()
        .find(|s| s.name == target)
        .unwrap_or_else(|| panic!("the Dockerfile has no target {target}"));
    let user = inherited(stages, stage, "USER").expect("a USER");
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    let entrypoint = json_list(stage.last("ENTRYPOINT").expect("an exec-form ENTRYPOINT"));
    assert_eq!(entrypoint.len(), 1, "{target}: {entrypoint:?}");
    Image {
        entrypoint: entrypoint[0].clone(),
        args: json_list(stage.last("CMD").expect("a CMD")),
        user: (
            uid.parse().expect("a numeric user"),
            gid.parse().expect("a numeric group"),
        ),
        ports: stage
            .all("EXPOSE")
            .iter()
            .flat_map(|p| p.split_whitespace())
            .map(|p| p.trim_end_matches("/tcp").parse().unwrap())
            .collect(),
        copied: stage
            .all("COPY")
            .iter()
            .map(|c| c.split_whitespace().last().unwrap().to_owned())
            .collect(),
    }
}

fn under(path: &str, dir: &str) -> bool {
    Path::new(path).starts_with(dir)
}

#[test]
fn the_images_run_what_the_workspace_builds_as_the_cluster_expects() {
    let root = repo_root();
    let stages = dockerfile_stages(&std::fs::read_to_string(root.join("Dockerfile")).unwrap());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let metadata: Value = serde_json::from_str(
        &run(
            Command::new(cargo).current_dir(&root).args([
                "metadata",
                "--no-deps",
                "--offline",
                "--format-version",
                "1",
            ]),
            None,
        )
        .unwrap(),
    )
    .unwrap();

    // The build stage builds both packages' binaries, and each image copies its own.
    let build = &stages[0];
    let commands = build.all("RUN").join(" ");
    assert!(
        commands.contains("cargo build --release --locked"),
        "{commands}"
    );
    for (package, target) in [("oxbow-worker", "worker"), ("oxbow-operator", "operator")] {
        let bins = bin_names(&metadata, package);
        assert_eq!(bins.len(), 1, "{package}: {bins:?}");
        let bin = &bins[0];
        assert!(commands.contains(&format!("-p {package}")), "{commands}");
        assert!(
            commands.contains(&format!("target/release/{bin} ")),
            "{commands}"
        );
        let image = image(&stages, target);
        assert_eq!(
            Path::new(&image.entrypoint)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap(),
            bin.as_str()
        );
        assert!(image.copied.contains(&image.entrypoint), "{image:?}");
        let copy = stages
            .iter()
            .find(|s| s.name == target)
            .unwrap()
            .all("COPY")
            .join(" ");
        assert!(copy.contains(&format!("--from={} ", build.name)), "{copy}");
        // The runtime base has no shell: exec form only.
        let base = base_image(&stages, stages.iter().find(|s| s.name == target).unwrap());
        assert!(
            base.contains("distroless") && base.ends_with(":nonroot"),
            "{target}: {base}"
        );
    }

    // The worker image as the operator's StatefulSet runs it.
    let worker_image = image(&stages, "worker");
    let statefulset = worker_stateful_set();
    let pod = statefulset.spec.unwrap().template.spec.unwrap();
    let security = pod.security_context.unwrap();
    assert_eq!(
        (
            security.run_as_user.unwrap(),
            security.run_as_group.unwrap()
        ),
        worker_image.user
    );
    let container = &pod.containers[0];
    assert_eq!(container.args.clone().unwrap(), worker_image.args);
    assert!(container.command.is_none(), "the image's ENTRYPOINT runs");
    let ports: Vec<i32> = container
        .ports
        .clone()
        .unwrap()
        .iter()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, worker_image.ports);
    let mounts = container.volume_mounts.clone().unwrap();
    for path in &worker_image.copied {
        for mount in &mounts {
            assert!(
                !under(path, &mount.mount_path),
                "{path} would be hidden by the {} mount",
                mount.mount_path
            );
        }
    }
    // The files the worker reads by default are where the operator mounts them, read-only.
    for path in [
        oxbow_crds::jobfile::JOB_FILE_PATH,
        oxbow_crds::jobfile::ADMIN_TOKEN_PATH,
    ] {
        assert!(
            mounts
                .iter()
                .any(|m| under(path, &m.mount_path) && m.read_only == Some(true)),
            "{path} is not mounted: {mounts:?}"
        );
    }
    // A read-only root filesystem: the only writable place is the /tmp emptyDir.
    assert_eq!(
        container
            .security_context
            .as_ref()
            .unwrap()
            .read_only_root_filesystem,
        Some(true)
    );
    let writable: Vec<&str> = mounts
        .iter()
        .filter(|m| m.read_only != Some(true))
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(writable, ["/tmp"]);

    // The operator image as the chart's Deployment runs it.
    let operator_image = image(&stages, "operator");
    let docs = documents(&render("oxbow", "oxbow-system", &[]));
    let deployment = one_of_kind(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        (
            pod["securityContext"]["runAsUser"].as_i64().unwrap(),
            pod["securityContext"]["runAsGroup"].as_i64().unwrap()
        ),
        operator_image.user
    );
    let container = &pod["containers"][0];
    assert_eq!(container["args"], json!(operator_image.args));
    assert!(container["command"].is_null());
    assert_eq!(
        vec![container["ports"][0]["containerPort"].as_i64().unwrap()],
        operator_image
            .ports
            .iter()
            .map(|p| i64::from(*p))
            .collect::<Vec<_>>()
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);

    // Both binaries know the command the images give them.
    for (binary, image) in [
        (worker::binary(), &worker_image),
        (operator_binary(), &operator_image),
    ] {
        let out = Command::new(&binary).arg("--help").output().unwrap();
        let usage = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let name = binary.file_name().unwrap().to_str().unwrap();
        assert!(
            usage.contains(&format!("{name} {}", image.args.join(" "))),
            "{name} does not list `{}`:\n{usage}",
            image.args.join(" ")
        );
    }
}

// ---- helm install, the operator with the chart's RBAC ----

/// The operator binary built next to this test (`tests/run.sh` builds the workspace's bins).
fn operator_binary() -> PathBuf {
    let path = worker::binary().with_file_name("oxbow-operator");
    assert!(
        path.exists(),
        "{} is missing: `cargo build -p oxbow-operator`",
        path.display()
    );
    path
}

/// A kubeconfig for the test control plane that authenticates with `token`.
fn kubeconfig_with_token(token: &str, path: &Path) {
    let admin = std::fs::read_to_string(
        component(Component::Kubernetes)
            .get("OXBOW_TEST_KUBECONFIG")
            .unwrap(),
    )
    .unwrap();
    let mut config: Value = serde_norway::from_str(&admin).unwrap();
    let users = config["users"].as_array_mut().unwrap();
    assert_eq!(users.len(), 1);
    users[0]["user"] = json!({"token": token});
    std::fs::write(path, serde_json::to_string(&config).unwrap()).unwrap();
}

/// The token the controller manager's token controller minted for a ServiceAccount
/// (Kubernetes 1.20 keeps it in a Secret the account names).
async fn service_account_token(client: &Client, namespace: &str, name: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    eventually(
        Duration::from_secs(30),
        "the ServiceAccount's token Secret",
        || async {
            let account = accounts.get(name).await?;
            let Some(secret) = account.secrets.unwrap_or_default().into_iter().next() else {
                return Ok(None);
            };
            let Some(name) = secret.name else {
                return Ok(None);
            };
            let secret = secrets.get(&name).await?;
            Ok(secret
                .data
                .and_then(|d| d.get("token").cloned())
                .map(|t| String::from_utf8(t.0).unwrap()))
        },
    )
    .await
    .unwrap()
}

/// The real operator, run as the chart's Deployment would run it: its arguments and
/// environment (downward API resolved for a pod named `pod_name` in `namespace`), with the
/// ServiceAccount token in `kubeconfig`; only the metrics address moves to a free loopback
/// port. Its output goes to `log`; killed when dropped.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn start(
        deployment: &Value,
        namespace: &str,
        pod_name: &str,
        kubeconfig: &Path,
        log: &Path,
    ) -> Self {
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let mut command = Command::new(operator_binary());
        command.env_clear();
        for (k, v) in std::env::vars() {
            if k == "PATH" || k == "HOME" || k == "TMPDIR" {
                command.env(k, v);
            }
        }
        for arg in container["args"].as_array().unwrap() {
            command.arg(arg.as_str().unwrap());
        }
        for var in container["env"].as_array().unwrap() {
            let name = var["name"].as_str().unwrap();
            let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.namespace") => namespace.to_owned(),
                Some("metadata.name") => pod_name.to_owned(),
                Some(other) => panic!("{name}: no value for fieldRef {other}"),
                None => var["value"].as_str().unwrap().to_owned(),
            };
            command.env(name, value);
        }
        command
            .env(
                "OXBOW_METRICS_ADDR",
                format!("127.0.0.1:{}", worker::free_port()),
            )
            .env("KUBECONFIG", kubeconfig);
        let file = std::fs::File::create(log).unwrap();
        let child = command
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Operator {
            child,
            log: log.to_owned(),
        }
    }

    /// Its log lines so far, with JSON and Debug escaping of quotes removed.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .replace('\\', "")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A StreamJob that deploys (its topic exists) and takes a final savepoint on deletion
/// (so the operator adds its finalizer), and one the operator must report as invalid
/// (repeatedly, so that its Event is patched as well as created).
fn jobs_for(bootstrap: &str, topic: &str) -> [StreamJob; 2] {
    let job = |name: &str, filter: &str| {
        oxbow_crds::parse_manifest(&format!(
            r#"
apiVersion: oxbow.dev/v1alpha1
kind: StreamJob
metadata: {{name: {name}}}
spec:
  replicas: 1
  kafka: {{bootstrapServers: "{bootstrap}"}}
  source: {{topics: [{topic}]}}
  pipeline:
    - filter: "{filter}"
  sink: {{topic: {topic}-out}}
  checkpoint: {{storage: "s3://bucket/prefix"}}
  savepoint: {{onDelete: true}}
  template: {{serviceAccountName: oxbow-worker}}
"#
        ))
        .unwrap()
    };
    [job("clicks", "amount > 0"), job("broken", "amount >")]
}

/// How many objects of kind `K` in `ns` the StreamJob `uid` owns, with an owner reference
/// that blocks its deletion until they are gone (the garbage collector's foreground mode).
async fn owned_children<K>(client: &Client, ns: &str, uid: &str) -> anyhow::Result<usize>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned,
    <K as kube::Resource>::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .filter(|o| {
            o.meta().owner_references.iter().flatten().any(|r| {
                r.uid == uid && r.block_owner_deletion == Some(true) && r.controller == Some(true)
            })
        })
        .count())
}

/// What a user checks after applying the two jobs: the valid one has its children, its
/// finalizer, a phase and a Deploying event; the invalid one says so in its status and in an
/// event that was repeated (patched); the operator holds its Lease.
async fn reconciled(
    client: &Client,
    ns: &str,
    lease: &str,
    holder: &str,
) -> anyhow::Result<Option<()>> {
    let jobs: Api<StreamJob> = Api::namespaced(client.clone(), ns);
    let job = jobs.get("clicks").await?;
    let phase = job.status.as_ref().and_then(|s| s.phase);
    if phase.is_none()
        || !job
            .finalizers()
            .iter()
            .any(|f| f == "oxbow.dev/final-savepoint")
    {
        return Ok(None);
    }
    let uid = job.uid().unwrap_or_default();
    let children = [
        owned_children::<StatefulSet>(client, ns, &uid).await?,
        owned_children::<ConfigMap>(client, ns, &uid).await?,
        owned_children::<Secret>(client, ns, &uid).await?,
        owned_children::<Service>(client, ns, &uid).await?,
    ];
    if children != [1, 1, 1, 1] {
        return Ok(None);
    }
    let broken = jobs.get("broken").await?;
    let reported = broken
        .status
        .as_ref()
        .and_then(|s| s.error.as_ref())
        .is_some_and(|e| e.reason == "InvalidSpec");
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let events = events.list(&ListParams::default()).await?.items;
    let event = |job: &str, reason: &str| {
        events.iter().find(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(job)
                && e.reason.as_deref() == Some(reason)
        })
    };
    let repeated = event("broken", "InvalidSpec").is_some_and(|e| e.series.is_some());
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let held = leases
        .get_opt(lease)
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .is_some_and(|h| h == holder);
    Ok((reported && event("clicks", "Deploying").is_some() && repeated && held).then_some(()))
}

/// Where an operator writes its log in a test.
fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{name}.log"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_reconciles_with_the_charts_rbac_and_uninstall_removes_it() {
    let client = kube_env::client().await.unwrap();
    kube_env::install_crd(&client).await.unwrap();
    let bootstrap = kafka::bootstrap();
    let topic = unique_name("clicks");
    kafka::create_topic(&bootstrap, &topic, 2).await.unwrap();
    let ns = kube_env::test_namespace(&client, "oxbow-helm")
        .await
        .unwrap();
    let release = unique_name("rel");
    let kubeconfig = component(Component::Kubernetes)
        .get("OXBOW_TEST_KUBECONFIG")
        .unwrap();

    // The CRD is already there (as after a first install): Helm leaves it alone.
    let out = run(
        helm()
            .args(["install", &release, "charts/oxbow", "--namespace", &ns])
            .env("KUBECONFIG", kubeconfig),
        None,
    )
    .unwrap();
    assert!(out.contains("STATUS: deployed"), "{out}");
    let manifest = run(
        helm()
            .args(["get", "manifest", &release, "--namespace", &ns])
            .env("KUBECONFIG", kubeconfig),
        None,
    )
    .unwrap();
    let docs = documents(&manifest);
    let deployment = one_of_kind(&docs, "Deployment");
    let operator = name_of(deployment).to_owned();
    let cluster_role = name_of(one_of_kind(&docs, "ClusterRole")).to_owned();
    let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap()
        .to_owned();

    // The ClusterRole grants every rule in every namespace.
    let subject = format!("system:serviceaccount:{ns}:{account}");
    for rule in one_of_kind(&docs, "ClusterRole")["rules"]
        .as_array()
        .unwrap()
    {
        let group = rule["apiGroups"][0].as_str().unwrap();
        for resource in rule["resources"].as_array().unwrap() {
            let resource = resource.as_str().unwrap();
            let (resource, sub) = resource
                .split_once('/')
                .map_or((resource, None), |(r, s)| (r, Some(s)));
            let qualified = if group.is_empty() {
                resource.to_owned()
            } else {
                format!("{resource}.{group}")
            };
            for verb in rule["verbs"].as_array().unwrap() {
                let mut command = kubectl();
                command.args([
                    "auth",
                    "can-i",
                    verb.as_str().unwrap(),
                    &qualified,
                    "--all-namespaces",
                    "--as",
                    &subject,
                ]);
                if let Some(sub) = sub {
                    command.args(["--subresource", sub]);
                }
                let answer = run(&mut command, None).unwrap();
                assert_eq!(
                    answer.trim(),
                    "yes",
                    "{verb} {qualified} {sub:?} for {subject}"
                );
            }
        }
    }

    // The installed operator, as its pod would run it — but limited to this test's namespace,
    // since other tests' StreamJobs share this control plane.
    let token = service_account_token(&client, &ns, &account).await;
    let dir = std::env::temp_dir().join(unique_name("oxbow-helm"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("kubeconfig");
    kubeconfig_with_token(&token, &config);
    let mut deployment = deployment.clone();
    for var in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
    {
        if var["name"] == "WATCH_NAMESPACE" {
            assert_eq!(var["value"], "", "cluster-wide by default");
            var["value"] = json!(ns);
        }
    }
    let pod_name = format!("{operator}-7d4b9c-x2x9q");
    let process = Operator::start(
        &deployment,
        &ns,
        &pod_name,
        &config,
        &dir.join("operator.log"),
    );
    let jobs: Api<StreamJob> = Api::namespaced(client.clone(), &ns);
    for job in jobs_for(&bootstrap, &topic) {
        jobs.create(&PostParams::default(), &job).await.unwrap();
    }
    let lease = operator.clone();
    let result = eventually(Duration::from_secs(60), "the StreamJobs reconciled", || {
        reconciled(&client, &ns, &lease, &pod_name)
    })
    .await;
    if let Err(e) = result {
        panic!("{e:#}\noperator log:\n{}", process.log());
    }
    drop(process);

    // An upgrade with a changed value rolls the Deployment's pod template.
    let out = run(
        helm()
            .args([
                "upgrade",
                &release,
                "charts/oxbow",
                "--namespace",
                &ns,
                "--reuse-values",
            ])
            .args(["--set", "log.level=debug"])
            .env("KUBECONFIG", kubeconfig),
        None,
    )
    .unwrap();
    assert!(out.contains("REVISION: 2"), "{out}");
    let env = run(
        kubectl().args([
            "get",
            "deployment",
            &operator,
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"OXBOW_LOG\")].value}",
        ]),
        None,
    )
    .unwrap();
    assert_eq!(env, "debug");

    run(
        helm()
            .args(["uninstall", &release, "--namespace", &ns])
            .env("KUBECONFIG", kubeconfig),
        None,
    )
    .unwrap();
    for (kind, namespace, name) in [
        ("deployment", Some(ns.as_str()), operator.as_str()),
        ("serviceaccount", Some(ns.as_str()), account.as_str()),
        (
            "role",
            Some(ns.as_str()),
            &format!("{operator}-leader-election"),
        ),
        ("clusterrole", None, cluster_role.as_str()),
        ("clusterrolebinding", None, cluster_role.as_str()),
        (
            "networkpolicy",
            Some(ns.as_str()),
            &format!("{release}-oxbow-workers"),
        ),
    ] {
        let mut command = kubectl();
        command.args(["get", kind, name, "--ignore-not-found", "-o", "name"]);
        if let Some(namespace) = namespace {
            command.args(["-n", namespace]);
        }
        eventually(
            Duration::from_secs(30),
            &format!("{kind} {name} to go"),
            || {
                let out = run(&mut command, None);
                async move { Ok(out?.trim().is_empty().then_some(())) }
            },
        )
        .await
        .unwrap();
    }
    // Helm never deletes a CRD (that would delete every StreamJob): it stays.
    let crd = run(
        kubectl().args(["get", "crd", "streamjobs.oxbow.dev", "-o", "name"]),
        None,
    )
    .unwrap();
    assert_eq!(
        crd.trim(),
        "customresourcedefinition.apiextensions.k8s.io/streamjobs.oxbow.dev"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Calls the operator makes that a test without a kubelet cannot provoke: they serve running
/// workers (savepoint requests read a worker pod's address; a roll-out deletes the pods of
/// the previous generation). The operator lifecycle tests exercise them.
const NOT_PROVOKED_HERE: &[(&str, &str)] = &[("pods", "get"), ("pods", "delete")];

/// One run of the operator with the chart's namespaced RBAC, less `removed`.
#[derive(Clone, Debug)]
struct Case {
    /// What the run lacks, or `None` for all the chart grants.
    removed: Option<Removed>,
}

/// One verb of one rule, taken out of a Role.
#[derive(Clone, Debug)]
struct Removed {
    role: String,
    rule: usize,
    group: String,
    resource: String,
    verb: String,
}

impl Removed {
    /// The operator's log level: the chart's default, except where the operator reports the
    /// failure only at debug level (a failed Event publication).
    fn log_level(&self) -> &'static str {
        if self.resource == "events" {
            "info\\,oxbow_operator=debug"
        } else {
            "info"
        }
    }

    /// Whether a line of the operator's log names this forbidden call.
    fn reported_by(&self, line: &str) -> bool {
        let Removed {
            group,
            resource,
            verb,
            ..
        } = self;
        let qualified = if group.is_empty() {
            resource.clone()
        } else {
            format!("{resource}.{group}")
        };
        match (resource.as_str(), verb.as_str()) {
            // The OwnerReferencesPermissionEnforcement admission plugin's words.
            ("streamjobs/finalizers", "update") => line.contains(
                "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on",
            ),
            // A server-side apply that would create the object: the API server refuses it
            // without naming the verb; the operator names the object it applied.
            (_, "create") if line.contains("failed to apply") => {
                line.contains(&format!("{qualified} \"")) && line.contains("is forbidden")
            }
            _ => line.contains(&format!("cannot {verb} resource \"{resource}\"")),
        }
    }
}

async fn run_case(
    case: Case,
    client: Client,
    bootstrap: String,
    topic: String,
) -> Result<(), String> {
    let ns = kube_env::test_namespace(&client, "rbac")
        .await
        .map_err(|e| format!("{e:#}"))?;
    let level = format!(
        "log.level={}",
        case.removed.as_ref().map_or("info", Removed::log_level)
    );
    let mut docs = documents(&render("oxbow", &ns, &[&watch(&[&ns]), &level]));
    if let Some(removed) = &case.removed {
        let doc = docs
            .iter_mut()
            .find(|d| kind_of(d) == "Role" && name_of(d) == removed.role)
            .unwrap();
        let rules = doc["rules"].as_array_mut().unwrap();
        assert_eq!(rules[removed.rule]["resources"], json!([removed.resource]));
        let verbs = rules[removed.rule]["verbs"].as_array_mut().unwrap();
        verbs.retain(|v| v != removed.verb.as_str());
        if verbs.is_empty() {
            rules.remove(removed.rule);
        }
    }
    let rbac: Vec<&Value> = docs
        .iter()
        .filter(|d| ["ServiceAccount", "Role", "RoleBinding"].contains(&kind_of(d)))
        .collect();
    apply(&rbac).map_err(|e| format!("{e:#}"))?;
    let deployment = one_of_kind(&docs, "Deployment");
    let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    let token = service_account_token(&client, &ns, account).await;
    let config = std::env::temp_dir().join(format!("{ns}.kubeconfig"));
    kubeconfig_with_token(&token, &config);
    let jobs: Api<StreamJob> = Api::namespaced(client.clone(), &ns);
    for job in jobs_for(&bootstrap, &topic) {
        jobs.create(&PostParams::default(), &job)
            .await
            .map_err(|e| e.to_string())?;
    }
    let pod_name = format!("{}-5f6d7-abcde", name_of(deployment));
    let lease = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "OXBOW_LEASE_NAME")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = log_path(&ns);
    let operator = Operator::start(deployment, &ns, &pod_name, &config, &log);
    let outcome = match &case.removed {
        None => eventually(
            Duration::from_secs(60),
            "every StreamJob reconciled",
            || reconciled(&client, &ns, &lease, &pod_name),
        )
        .await
        .map_err(|e| format!("with every rule: {e:#}")),
        Some(removed) => eventually(
            Duration::from_secs(45),
            "the log to name the forbidden call",
            || {
                let found = operator.log().lines().any(|l| removed.reported_by(l));
                async move { Ok(found.then_some(())) }
            },
        )
        .await
        .map_err(|e| {
            format!(
                "{} {} removed from Role {}: {e:#}",
                removed.verb, removed.resource, removed.role
            )
        }),
    };
    let result = outcome.map_err(|e| format!("{e}\noperator log:\n{}", operator.log()));
    drop(operator);
    std::fs::remove_file(&config).ok();
    if result.is_ok() {
        std::fs::remove_file(&log).ok();
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_rbac_is_enough_and_every_rule_is_needed() {
    let client = kube_env::client().await.unwrap();
    kube_env::install_crd(&client).await.unwrap();
    let bootstrap = kafka::bootstrap();
    let topic = unique_name("clicks");
    kafka::create_topic(&bootstrap, &topic, 2).await.unwrap();
    // PodDisruptionBudgets are policy/v1 from Kubernetes 1.21; the operator uses none before.
    let pdb_served = client
        .list_api_group_resources("policy/v1")
        .await
        .is_ok_and(|r| r.resources.iter().any(|r| r.name == "poddisruptionbudgets"));

    let docs = documents(&render("oxbow", "rbac", &[&watch(&["rbac"])]));
    let mut cases = vec![Case { removed: None }];
    let mut not_provoked = Vec::new();
    for role in of_kind(&docs, "Role") {
        for (index, rule) in role["rules"].as_array().unwrap().iter().enumerate() {
            let resources = rule["resources"].as_array().unwrap();
            assert_eq!(resources.len(), 1, "one resource per rule: {rule}");
            let resource = resources[0].as_str().unwrap();
            assert_ne!(resource, "*", "no wildcards");
            for verb in rule["verbs"].as_array().unwrap() {
                let verb = verb.as_str().unwrap();
                assert_ne!(verb, "*", "no wildcards");
                if NOT_PROVOKED_HERE.contains(&(resource, verb))
                    || (resource == "poddisruptionbudgets" && !pdb_served)
                {
                    not_provoked.push(format!("{verb} {resource}"));
                    continue;
                }
                cases.push(Case {
                    removed: Some(Removed {
                        role: name_of(role).to_owned(),
                        rule: index,
                        group: rule["apiGroups"][0].as_str().unwrap().to_owned(),
                        resource: resource.to_owned(),
                        verb: verb.to_owned(),
                    }),
                });
            }
        }
    }
    eprintln!(
        "{} RBAC cases; not provoked without a kubelet{}: {}",
        cases.len(),
        if pdb_served { "" } else { " or policy/v1" },
        not_provoked.join(", ")
    );
    let limit = Arc::new(tokio::sync::Semaphore::new(8));
    let runs = cases.into_iter().map(|case| {
        let (client, bootstrap, topic, limit) = (
            client.clone(),
            bootstrap.clone(),
            topic.clone(),
            limit.clone(),
        );
        tokio::spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            run_case(case, client, bootstrap, topic).await
        })
    });
    let failures: Vec<String> = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .filter_map(|r| r.unwrap().err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
