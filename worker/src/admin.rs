//! The worker's admin HTTP API: routes only (paths and messages in [`oxbow_crds::admin`]).
//!
//! `/healthz`, `/readyz` and `/metrics` are open to kubelet probes and Prometheus; `/v1/...`
//! needs `Authorization: Bearer <token>` with the job's admin token. The server runs on its own
//! thread; it reads what the processing loop publishes in [`Shared`] and hands it commands
//! (savepoints).

use std::{net::SocketAddr, sync::Arc, sync::atomic::Ordering};

use axum::{
    Json, Router,
    extract::{Path, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use oxbow_crds::admin::{
    HEALTHZ_PATH, METRICS_PATH, READYZ_PATH, SAVEPOINTS_PATH, STATUS_PATH, SavepointRequest,
    SavepointResult, SavepointState,
};
use prometheus_client::{encoding::text::encode, registry::Registry};

use crate::{
    events::{Emit, SavepointDisposed},
    runtime::control::{Command, Shared},
};

/// The API's state: the loop's shared state, the token and the metrics registry.
#[derive(Debug)]
struct Api {
    shared: Arc<Shared>,
    token: String,
    registry: Registry,
}

impl Api {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some(presented) = value.strip_prefix("Bearer ") else {
            return false;
        };
        constant_time_eq(presented.as_bytes(), self.token.as_bytes())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "missing or wrong bearer token: send the job's admin token as `Authorization: Bearer <token>`\n",
    )
        .into_response()
}

/// Lets a `/v1` request through only with the job's admin token.
async fn require_token(State(s): State<Arc<Api>>, request: Request, next: Next) -> Response {
    if s.authorized(request.headers()) {
        next.run(request).await
    } else {
        unauthorized()
    }
}

/// The API's routes, answering `/v1` requests that carry `token`.
pub fn router(shared: Arc<Shared>, token: String) -> Router {
    let registry = shared.metrics.registry();
    let api = Arc::new(Api {
        shared,
        token,
        registry,
    });
    let v1 = Router::new()
        .route(STATUS_PATH, get(status))
        .route(SAVEPOINTS_PATH, post(trigger_savepoint))
        .route(
            &format!("{SAVEPOINTS_PATH}/{{id}}"),
            get(savepoint).delete(dispose_savepoint),
        )
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&api),
            require_token,
        ));
    Router::new()
        .route(HEALTHZ_PATH, get(|| async { "ok\n" }))
        .route(READYZ_PATH, get(readyz))
        .route(METRICS_PATH, get(metrics))
        .merge(v1)
        .with_state(api)
}

async fn readyz(State(s): State<Arc<Api>>) -> Response {
    if s.shared.ready.load(Ordering::Relaxed) {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: restoring or idle\n",
        )
            .into_response()
    }
}

async fn metrics(State(s): State<Arc<Api>>) -> Response {
    let mut out = String::new();
    match encode(&mut out, &s.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to encode metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn status(State(s): State<Arc<Api>>) -> Response {
    match s.shared.status.lock() {
        Ok(status) => Json(status.clone()).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn trigger_savepoint(
    State(s): State<Arc<Api>>,
    Json(request): Json<SavepointRequest>,
) -> Response {
    if let Some(existing) = s.shared.savepoint(&request.id) {
        return (StatusCode::OK, Json(existing)).into_response();
    }
    let accepted = SavepointResult {
        id: request.id.clone(),
        state: SavepointState::InProgress,
        path: None,
        error: None,
    };
    s.shared.set_savepoint(accepted.clone());
    match s.shared.send(Command::Savepoint(request)) {
        Ok(()) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

async fn savepoint(State(s): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    match s.shared.savepoint(&id) {
        Some(result) => Json(result).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("no savepoint {id:?} on this worker\n"),
        )
            .into_response(),
    }
}

/// `DELETE /v1/savepoints/{id}`: deletes every object of the savepoint from the job's
/// storage (the operator disposes of savepoints beyond `historyLimit` through a worker, which
/// holds the storage credentials). Deleting a savepoint that is gone is not an error.
async fn dispose_savepoint(State(s): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
        return (
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a savepoint id\n"),
        )
            .into_response();
    }
    let Some(store) = s.shared.store() else {
        return (StatusCode::CONFLICT, "this job has no checkpoint storage\n").into_response();
    };
    let dir = format!("{}/", oxbow_crds::checkpoint::savepoint_dir(&id));
    let keys = match store.list(&dir).await {
        Ok(keys) => keys,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("{e}\n")).into_response(),
    };
    for key in &keys {
        if let Err(e) = store.delete(key).await {
            return (StatusCode::BAD_GATEWAY, format!("{e}\n")).into_response();
        }
    }
    SavepointDisposed {
        id: &id,
        objects: keys.len(),
    }
    .emit(&s.shared.metrics);
    Json(serde_json::json!({"id": id, "deletedObjects": keys.len()})).into_response()
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
#[error("failed to start the admin API on {addr}: {source}")]
pub struct ServeError {
    /// Address.
    pub addr: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Serves the API on `addr` from a thread of its own; returns the bound address.
pub fn serve(addr: &str, shared: Arc<Shared>, token: String) -> Result<SocketAddr, ServeError> {
    let err = |source| ServeError {
        addr: addr.to_owned(),
        source,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(err)?;
    std::thread::Builder::new()
        .name("oxbow-admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => {
                        if let Err(e) = axum::serve(listener, router(shared, token)).await {
                            tracing::error!(error = %e, "the admin API stopped");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "the admin API could not start"),
                }
            })
        })
        .map_err(err)?;
    Ok(local)
}
