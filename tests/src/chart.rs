//! The Helm chart (`charts/oxbow`) and what its tests apply: rendering with values, server-side
//! dry runs and applies, the operator's own worker StatefulSet to hold the chart against, a
//! ServiceAccount's token as a kubeconfig, and the StreamJobs an installed operator must
//! reconcile.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::Context;
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Secret, Service, ServiceAccount},
    events::v1::Event,
};
use kube::{Api, Client, ResourceExt, api::ListParams};
use oxbow_crds::StreamJob;
use serde_json::{Value, json};

use crate::{
    eventually,
    manifest::filter_job,
    repo_root,
    tools::{helm, kubectl, run},
    yaml::kind_of,
};

/// `helm template <release> charts/oxbow -n <namespace>` with `--set` values.
pub fn render(release: &str, namespace: &str, sets: &[&str]) -> anyhow::Result<String> {
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
    run(&mut command, None)
}

/// `--set watchNamespaces={a,b}`.
pub fn watch(namespaces: &[&str]) -> String {
    format!("watchNamespaces={{{}}}", namespaces.join(","))
}

/// `kubectl apply --dry-run=server` of `docs`; what kubectl printed per object.
///
/// CRDs are sent without kubectl's client-side schema check: the 1.20 server's OpenAPI does
/// not know `x-kubernetes-validations` (Kubernetes 1.23), which the server itself accepts and
/// drops. Everything else is checked on both sides.
pub fn apply_dry_run(docs: &[Value]) -> anyhow::Result<Vec<String>> {
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
pub fn apply(docs: &[&Value]) -> anyhow::Result<()> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    run(
        kubectl().args(["apply", "-f", "-"]),
        Some(&list.to_string()),
    )
    .map(|_| ())
}

/// Fails unless kubectl printed one `(server dry run)` line per object of `docs`.
pub fn assert_every_object_accepted(docs: &[Value], lines: &[String], what: &str) {
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

/// The StatefulSet the operator builds for the shipped fraud-detector example.
pub fn worker_stateful_set() -> anyhow::Result<StatefulSet> {
    let path = repo_root().join("manifests/examples/fraud-detector.yaml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let mut job = oxbow_crds::parse_manifest(&text)?;
    job.metadata.namespace = Some("prod".into());
    job.metadata.uid = Some("0b0e5c1a-0000-4000-8000-000000000001".into());
    let workers = u32::try_from(job.spec.replicas)?;
    let mut job_file = crate::worker::job_file(
        &job.name_any(),
        job.spec.clone(),
        &[("payments", 4)],
        workers,
    );
    job_file.namespace = "prod".into();
    oxbow_operator::children::statefulset::stateful_set(
        &job,
        &job_file,
        &oxbow_operator::children::WorkerDefaults {
            image: "oxbow-worker:test".into(),
        },
    )
    .context("failed to build the worker StatefulSet")
}

/// Writes to `path` a kubeconfig for the test control plane that authenticates with `token`.
pub fn kubeconfig_with_token(token: &str, path: &Path) -> anyhow::Result<()> {
    let admin = std::fs::read_to_string(crate::tools::admin_kubeconfig())
        .context("failed to read the admin kubeconfig")?;
    let mut config: Value = serde_norway::from_str(&admin)?;
    let users = config["users"]
        .as_array_mut()
        .context("the kubeconfig has no users")?;
    anyhow::ensure!(users.len() == 1, "one user expected: {users:?}");
    users[0]["user"] = json!({"token": token});
    std::fs::write(path, serde_json::to_string(&config)?)
        .with_context(|| format!("failed to write {}", path.display()))
}

/// The token the controller manager's token controller minted for a ServiceAccount
/// (Kubernetes 1.20 keeps it in a Secret the account names).
pub async fn service_account_token(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<String> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    eventually(
        "the ServiceAccount's token Secret",
        Duration::from_secs(30),
        async || -> anyhow::Result<Option<String>> {
            let account = accounts.get(name).await?;
            let Some(secret) = account.secrets.unwrap_or_default().into_iter().next() else {
                return Ok(None);
            };
            let Some(name) = secret.name else {
                return Ok(None);
            };
            let secret = secrets.get(&name).await?;
            let token = secret.data.and_then(|d| d.get("token").cloned());
            Ok(token.map(|t| String::from_utf8_lossy(&t.0).into_owned()))
        },
    )
    .await
}

/// A StreamJob that deploys (its topic exists) and takes a final savepoint on deletion
/// (so the operator adds its finalizer), and one the operator must report as invalid
/// (repeatedly, so that its Event is patched as well as created).
pub fn jobs_for(bootstrap: &str, topic: &str) -> anyhow::Result<[StreamJob; 2]> {
    let job = |name: &str, filter: &str| {
        filter_job(name, bootstrap, topic, filter)
            .replicas(1)
            .spec("savepoint: {onDelete: true}")
            .spec("template: {serviceAccountName: oxbow-worker}")
            .stream_job()
    };
    Ok([job("clicks", "amount > 0")?, job("broken", "amount >")?])
}

/// How many objects of kind `K` in `ns` the StreamJob `uid` owns, with an owner reference
/// that blocks its deletion until they are gone (the garbage collector's foreground mode).
pub async fn owned_children<K>(client: &Client, ns: &str, uid: &str) -> anyhow::Result<usize>
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

/// What a user checks after applying [`jobs_for`]: the valid job has its children, its
/// finalizer, a phase and a Deploying event; the invalid one says so in its status and in an
/// event that was repeated (patched); `holder` holds the operator's Lease `lease`.
pub async fn reconciled(
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
    let held = crate::operator::lease_holder(client, ns, lease)
        .await?
        .is_some_and(|h| h == holder);
    Ok((reported && event("clicks", "Deploying").is_some() && repeated && held).then_some(()))
}

/// The environment variables of the chart Deployment's operator container, by name.
pub fn container_env(deployment: &Value) -> BTreeMap<&str, &Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["name"].as_str()?, e)))
        .collect()
}
