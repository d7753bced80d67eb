//! # shoal-server
//!
//! The HTTP API over a warehouse of Shoal tables: create, append (group-committed),
//! overwrite, merge, delete, update, scans streamed as Arrow IPC or NDJSON, time
//! travel, history and maintenance; bearer-token auth with per-table grants, request
//! limits and Prometheus metrics. `spec/HTTP-API.md` documents every route.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use shoal_server::{config::ServerConfig, serve, AppState};
//! let state = AppState::new(ServerConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! serve(listener, state, std::future::pending()).await
//! # }
//! ```

pub mod auth;
pub mod config;
pub mod error;
pub mod group;
pub mod ingest;
pub mod metrics;
mod routes;
mod scan;
pub mod warehouse;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::FutureExt;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::auth::{Auth, Level};
use crate::config::ServerConfig;
use crate::error::{ApiError, ApiResult};
use crate::group::{Groups, TableQueue};
use crate::metrics::Metrics;
use crate::warehouse::Warehouse;

/// Shared server state. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    config: ServerConfig,
    warehouse: Warehouse,
    auth: Auth,
    metrics: Arc<Metrics>,
    groups: Groups,
    slots: Semaphore,
    shutting_down: AtomicBool,
}

impl AppState {
    pub fn new(config: ServerConfig) -> Self {
        AppState(Arc::new(Inner {
            warehouse: Warehouse::with_options(
                config.warehouse.clone(),
                config.storage_options.options().clone(),
            ),
            auth: Auth::new(config.tokens.clone()),
            metrics: Arc::new(Metrics::default()),
            groups: Groups::default(),
            slots: Semaphore::new(config.limits.max_concurrent_requests),
            shutting_down: AtomicBool::new(false),
            config,
        }))
    }

    pub fn config(&self) -> &ServerConfig {
        &self.0.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    fn warehouse(&self) -> &Warehouse {
        &self.0.warehouse
    }

    /// Authenticates the request and checks its grant on `table`.
    fn authorize(&self, headers: &HeaderMap, table: &str, level: Level) -> ApiResult<()> {
        warehouse::validate_name(table)?;
        self.0.auth.authenticate(headers)?.require(table, level)
    }

    fn queue(&self, name: &str) -> ApiResult<Arc<TableQueue>> {
        let table = self.warehouse().table(name)?;
        Ok(self.0.groups.queue(
            name,
            &table,
            self.0.config.limits.max_group_rows,
            &self.0.metrics,
        ))
    }

    /// Marks the server as draining: `/readyz` fails from now on.
    pub fn begin_shutdown(&self) {
        self.0.shutting_down.store(true, Ordering::SeqCst);
    }
}

/// The router: every route of the API, with metrics, limits and panic containment.
pub fn app(state: AppState) -> Router {
    let tables = Router::new()
        .route("/v1/tables", get(routes::list_tables))
        .route(
            "/v1/tables/{name}",
            get(routes::describe)
                .put(routes::create)
                .delete(routes::drop_table),
        )
        .route("/v1/tables/{name}/append", post(routes::append))
        .route("/v1/tables/{name}/overwrite", post(routes::overwrite))
        .route("/v1/tables/{name}/merge", post(routes::merge))
        .route("/v1/tables/{name}/delete", post(routes::delete_rows))
        .route("/v1/tables/{name}/update", post(routes::update_rows))
        .route("/v1/tables/{name}/restore", post(routes::restore))
        .route("/v1/tables/{name}/vacuum", post(routes::vacuum))
        .route("/v1/tables/{name}/optimize", post(routes::optimize))
        .route("/v1/tables/{name}/scan", get(routes::scan))
        .route("/v1/tables/{name}/history", get(routes::history))
        .route("/v1/tables/{name}/schema", get(routes::schema))
        .route("/v1/tables/{name}/files", get(routes::files))
        .layer(middleware::from_fn_with_state(state.clone(), limit));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(routes::openapi))
        .merge(tables)
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Concurrency slots, the request timeout and panic containment for table routes.
async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let timeout = state.0.config.limits.request_timeout;
    let work = async {
        let _slot = state
            .0
            .slots
            .acquire()
            .await
            .map_err(|_| ApiError::unavailable("shutting down"))?;
        std::panic::AssertUnwindSafe(next.run(req))
            .catch_unwind()
            .await
            .map_err(|_| ApiError::internal("the request failed unexpectedly"))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => e.into_response(),
        Err(_) => ApiError::unavailable(format!(
            "the request took longer than {:?}; writes may still commit (use app_id/app_version to retry safely)",
            timeout
        ))
        .into_response(),
    }
}

/// Request metrics and a tracing span per request.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    if let Some(n) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        Metrics::add(&state.0.metrics.bytes_in, n);
    }
    let span = tracing::info_span!("request", %method, uri = %req.uri());
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    if let Some(n) = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        Metrics::add(&state.0.metrics.bytes_out, n);
    }
    let elapsed = started.elapsed();
    state.0.metrics.request(&route, &method, status, elapsed);
    span.in_scope(|| tracing::debug!(status, ms = elapsed.as_millis() as u64, "done"));
    response
}

/// Serves the API on `listener` until `shutdown` completes, then stops accepting,
/// lets in-flight requests (and the commits they wait on) finish, and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Err(e) = state.warehouse().check().await {
        tracing::warn!(error = %e.message, "the warehouse is not reachable yet");
    }
    let s = state.clone();
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            s.begin_shutdown();
            tracing::info!("shutting down: finishing in-flight requests");
        })
        .await
}
