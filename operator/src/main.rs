//! The Oxbow operator binary.
//!
//! `oxbow-operator run` reconciles StreamJobs with the cluster credentials of its environment
//! (in-cluster service account, or `KUBECONFIG`). `oxbow-operator crd` prints the CRD it serves.
//!
//! Environment of `run`:
//! - `WATCH_NAMESPACE`: a comma-separated list of namespaces to watch; empty or unset: all.
//! - `OXBOW_WORKER_IMAGE`: the worker image for jobs that do not name one.
//! - `OXBOW_METRICS_ADDR` (default `0.0.0.0:8080`): `/metrics`, `/healthz`, `/readyz`.
//! - `OXBOW_LEADER_ELECTION` (default `true`): only the holder of the Lease
//!   `OXBOW_LEASE_NAME` (default `oxbow-operator`) in `OXBOW_LEASE_NAMESPACE` (default
//!   `POD_NAMESPACE`, else the client's namespace) acts; `POD_NAME` is its identity.
//! - `OXBOW_LOG` (a tracing filter, default `info`), `OXBOW_LOG_FORMAT` (`json` or text).

use std::process::ExitCode;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use oxbow_operator::{children::WorkerDefaults, controller, metrics};

const USAGE: &str = "usage:
  oxbow-operator run    reconcile StreamJobs (WATCH_NAMESPACE=a,b to limit to namespaces)
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
    runtime.block_on(serve())
}

/// What `run` reads from its environment.
struct Settings {
    namespaces: Vec<String>,
    defaults: WorkerDefaults,
    metrics_addr: String,
    leader_election: bool,
    lease_name: String,
    lease_namespace: Option<String>,
    identity: String,
}

impl Settings {
    fn from_env() -> Result<Self, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let leader_election = match var("OXBOW_LEADER_ELECTION").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(format!(
                    "OXBOW_LEADER_ELECTION must be true or false, not {other:?}"
                ));
            }
        };
        let identity = var("POD_NAME").unwrap_or_else(|| {
            let host = var("HOSTNAME").unwrap_or_else(|| "oxbow-operator".into());
            format!("{host}-{}", std::process::id())
        });
        Ok(Settings {
            namespaces: var("WATCH_NAMESPACE")
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            defaults: WorkerDefaults {
                image: var("OXBOW_WORKER_IMAGE").unwrap_or_else(|| DEFAULT_WORKER_IMAGE.to_owned()),
            },
            metrics_addr: var("OXBOW_METRICS_ADDR").unwrap_or_else(|| "0.0.0.0:8080".into()),
            leader_election,
            lease_name: var("OXBOW_LEASE_NAME").unwrap_or_else(|| "oxbow-operator".into()),
            lease_namespace: var("OXBOW_LEASE_NAMESPACE").or_else(|| var("POD_NAMESPACE")),
            identity,
        })
    }
}

async fn serve() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("failed to connect to Kubernetes (in-cluster or KUBECONFIG): {e}");
            return ExitCode::FAILURE;
        }
    };
    let shared = metrics::Shared {
        metrics: Arc::default(),
        stores: Arc::default(),
        ready: Arc::new(AtomicBool::new(false)),
    };
    let listener = match tokio::net::TcpListener::bind(&settings.metrics_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "failed to serve metrics and health on {} (OXBOW_METRICS_ADDR): {e}",
                settings.metrics_addr
            );
            return ExitCode::FAILURE;
        }
    };
    let router = metrics::router(shared.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the metrics and health endpoints stopped");
        }
    });
    let scope = if settings.namespaces.is_empty() {
        "*".to_owned()
    } else {
        settings.namespaces.join(",")
    };

    if !settings.leader_election {
        tracing::info!(namespaces = %scope, "reconciling StreamJobs (leader election off)");
        shared.metrics.set_leader(true);
        controller::run(client, &settings.namespaces, settings.defaults, shared).await;
        return ExitCode::SUCCESS;
    }

    let lease_namespace = settings
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let manager =
        match kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &settings.lease_name)
            .with_namespace(&lease_namespace)
            .with_identity(&settings.identity)
            .with_duration(LEASE_SECONDS)
            .with_grace(LEASE_GRACE_SECONDS)
            .with_field_manager(controller::MANAGER)
            .build()
            .await
        {
            Ok(m) => m,
            Err(e) => {
                eprintln!(
                    "failed to set up leader election on Lease {lease_namespace}/{}: {e}",
                    settings.lease_name
                );
                return ExitCode::FAILURE;
            }
        };
    // A standby replica is healthy and ready: it serves, it only does not act.
    shared.ready.store(true, Ordering::Release);
    let (mut leader, lease_task) = manager.watch().await;
    tracing::info!(
        identity = %settings.identity,
        lease = %format!("{lease_namespace}/{}", settings.lease_name),
        "waiting to become the leader"
    );
    let became_leader = async {
        while !*leader.borrow_and_update() {
            if leader.changed().await.is_err() {
                return false;
            }
        }
        true
    };
    let became_leader = tokio::select! {
        l = became_leader => l,
        () = shutdown_signal() => false,
    };
    if !became_leader {
        drop(leader);
        let _ = lease_task.await;
        return ExitCode::SUCCESS;
    }
    tracing::info!(identity = %settings.identity, namespaces = %scope, "became the leader; reconciling StreamJobs");
    shared.metrics.set_leader(true);
    shared.ready.store(false, Ordering::Release);
    let lost = async {
        while *leader.borrow_and_update() {
            if leader.changed().await.is_err() {
                break;
            }
        }
    };
    let code = tokio::select! {
        () = controller::run(client, &settings.namespaces, settings.defaults, shared.clone()) => ExitCode::SUCCESS,
        () = lost => {
            // Another replica may act now: stop at once rather than race it.
            tracing::error!("lost the leader lease; exiting so that only one replica acts");
            ExitCode::FAILURE
        }
    };
    shared.metrics.set_leader(false);
    drop(leader);
    // Releases the lease, so that a standby takes over without waiting for it to expire.
    let _ = lease_task.await;
    code
}

/// Seconds a leader's lease lasts without renewal.
const LEASE_SECONDS: u64 = 15;
/// Seconds before expiry at which the leader renews.
const LEASE_GRACE_SECONDS: u64 = 5;

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
