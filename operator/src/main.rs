//! The Oxbow operator binary.
//!
//! `oxbow-operator run` reconciles StreamJobs with the cluster credentials of its environment
//! (in-cluster service account, or `KUBECONFIG`); `WATCH_NAMESPACE` limits it to one namespace;
//! `OXBOW_WORKER_IMAGE` names the worker image for jobs that do not. `oxbow-operator crd` prints
//! the CRD it serves.

use std::process::ExitCode;

use oxbow_operator::{children::WorkerDefaults, controller};

const USAGE: &str = "usage:
  oxbow-operator run    reconcile StreamJobs (WATCH_NAMESPACE to limit to one namespace)
  oxbow-operator crd    print the StreamJob CRD";

/// The worker image when neither the StreamJob nor `OXBOW_WORKER_IMAGE` names one.
const DEFAULT_WORKER_IMAGE: &str =
    concat!("ghcr.io/oxbow-dev/oxbow-worker:", env!("CARGO_PKG_VERSION"));

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("crd") => match oxbow_crds::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("failed to serialize the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Some("run") => run(),
        _ => {
            eprintln!("oxbow-operator {}\n{USAGE}", env!("CARGO_PKG_VERSION"));
            ExitCode::from(2)
        }
    }
}

fn run() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OXBOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let installed = if std::env::var("OXBOW_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = installed {
        eprintln!("failed to install logging: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let client = match kube::Client::try_default().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("failed to connect to Kubernetes (in-cluster or KUBECONFIG): {e}");
                return ExitCode::FAILURE;
            }
        };
        let namespace = std::env::var("WATCH_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty());
        let defaults = WorkerDefaults {
            image: std::env::var("OXBOW_WORKER_IMAGE")
                .unwrap_or_else(|_| DEFAULT_WORKER_IMAGE.to_owned()),
        };
        tracing::info!(
            namespace = namespace.as_deref().unwrap_or("*"),
            "reconciling StreamJobs"
        );
        controller::run(client, namespace.as_deref(), defaults).await;
        ExitCode::SUCCESS
    })
}
