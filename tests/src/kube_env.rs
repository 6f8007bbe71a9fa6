//! The real Kubernetes control plane: a client, and the StreamJob CRD installed.

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
};
use oxbow_crds::StreamJob;
use tokio::sync::OnceCell;

use crate::{Component, component, eventually, unique_name};

/// A client for the test control plane, from its kubeconfig.
pub async fn client() -> anyhow::Result<Client> {
    let vars = component(Component::Kubernetes);
    let path = vars.get("OXBOW_TEST_KUBECONFIG")?;
    let kubeconfig =
        Kubeconfig::read_from(path).with_context(|| format!("failed to read kubeconfig {path}"))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("failed to load the kubeconfig")?;
    Client::try_from(config).context("failed to build a Kubernetes client")
}

/// Installs the generated StreamJob CRD (the committed YAML) once per process and waits until
/// the API server serves it.
pub async fn install_crd(client: &Client) -> anyhow::Result<()> {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_try_init(|| async {
            let path = crate::repo_root().join("crds").join(oxbow_crds::CRD_FILE);
            let yaml = std::fs::read_to_string(&path)
                .with_context(|| format!("failed to read {}", path.display()))?;
            let crd: CustomResourceDefinition =
                serde_norway::from_str(&yaml).context("failed to parse the CRD")?;
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            let name = crd.metadata.name.clone().context("the CRD has no name")?;
            // Create or replace rather than server-side apply: a 1.20 API server cannot build a
            // typed patch for a schema with `x-kubernetes-validations` (added in 1.23), while a
            // create or update drops the field it does not know, as `kubectl apply` does.
            match crds
                .get_opt(&name)
                .await
                .context("failed to read the StreamJob CRD")?
            {
                None => {
                    crds.create(&PostParams::default(), &crd)
                        .await
                        .context("failed to create the StreamJob CRD")?;
                }
                Some(existing) => {
                    let mut crd = crd;
                    crd.metadata.resource_version = existing.metadata.resource_version;
                    crds.replace(&name, &PostParams::default(), &crd)
                        .await
                        .context("failed to replace the StreamJob CRD")?;
                }
            }
            eventually(
                "the StreamJob CRD to be established",
                Duration::from_secs(30),
                async || -> anyhow::Result<Option<()>> {
                    let crd = crds.get(&name).await?;
                    let established = crd
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    Ok(established.then_some(()))
                },
            )
            .await?;
            // The CRD is established before the discovery cache and REST handler are ready.
            let jobs: Api<StreamJob> = Api::namespaced(client.clone(), "default");
            eventually(
                "StreamJobs to be served",
                Duration::from_secs(30),
                async || jobs.list(&Default::default()).await.ok().map(drop),
            )
            .await
        })
        .await
        .map(|_| ())
}

/// Creates a namespace unique to the test (and records its StreamJobs when asked, see
/// [`crate::record`]).
pub async fn test_namespace(client: &Client, prefix: &str) -> anyhow::Result<String> {
    let name = unique_name(prefix);
    ensure_namespace(client, &name).await?;
    // Every StreamJob state in it, when OXBOW_RECORD_STATUSES asks for recordings.
    crate::record::namespace(client, &name, prefix).await;
    Ok(name)
}

/// A client, the CRD installed, and a namespace unique to the test: what a test of
/// StreamJobs starts from.
pub async fn with_crd(prefix: &str) -> anyhow::Result<(Client, String)> {
    let client = client().await?;
    install_crd(&client).await?;
    let namespace = test_namespace(&client, prefix).await?;
    Ok((client, namespace))
}

/// Creates namespace `name` unless it exists.
pub async fn ensure_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("failed to create namespace {name}")),
    }
}
