//! `shoal-server`: the HTTP API over a warehouse of Shoal tables.
//!
//! This first version serves health and read-only table listing/description; the full
//! API (writes, scans, group commit, auth) is specified in its own issue.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
#[command(name = "shoal-server", version, about = "HTTP API for Shoal tables")]
struct Args {
    /// Warehouse root directory holding tables by name.
    #[arg(long, default_value = "./warehouse")]
    warehouse: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

#[derive(Clone)]
struct AppState {
    warehouse: PathBuf,
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/tables", get(list_tables))
        .route("/v1/tables/{name}", get(describe_table))
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn list_tables(State(state): State<AppState>) -> Response {
    let mut names = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&state.warehouse) {
        for e in entries.flatten() {
            if e.path().join("_delta_log").is_dir() {
                names.push(e.file_name().to_string_lossy().to_string());
            }
        }
    }
    names.sort();
    Json(json!({ "tables": names })).into_response()
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !name.contains("..")
}

async fn describe_table(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    if !valid_name(&name) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            format!("invalid table name `{name}`"),
        );
    }
    let path = state.warehouse.join(&name);
    let table = match shoal_format::Table::at(&path.to_string_lossy()) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_location", e.to_string()),
    };
    match table.snapshot().await {
        Ok(snap) => {
            let (bytes, rows) = snap.totals();
            Json(json!({
                "name": name,
                "version": snap.version(),
                "schema": serde_json::from_str::<serde_json::Value>(&snap.metadata().schema_string).unwrap_or_default(),
                "partition_columns": snap.partition_columns(),
                "num_files": snap.num_files(),
                "size_bytes": bytes,
                "num_rows": rows,
            }))
            .into_response()
        }
        Err(shoal_format::Error::TableNotFound(_)) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no table `{name}`"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    std::fs::create_dir_all(&args.warehouse)
        .with_context(|| format!("cannot create warehouse `{}`", args.warehouse.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, warehouse = %args.warehouse.display(), "shoal-server ready");
    axum::serve(
        listener,
        router(AppState {
            warehouse: args.warehouse,
        }),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
