//! `shoal-server`: the HTTP API over a warehouse of Shoal tables.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use shoal_format::storage::parse_storage_option;
use shoal_server::config::{Overrides, ServerConfig};
use shoal_server::{serve, AppState};

#[derive(Parser)]
#[command(name = "shoal-server", version, about = "HTTP API for Shoal tables")]
struct Args {
    /// TOML config file (tokens, grants, limits).
    #[arg(long, env = "SHOAL_CONFIG")]
    config: Option<PathBuf>,
    /// Warehouse root holding tables by name [default: ./warehouse].
    #[arg(long, env = "SHOAL_WAREHOUSE")]
    warehouse: Option<String>,
    /// An option for the warehouse's object store, `key=value` (repeatable), e.g.
    /// `aws_endpoint_url=http://127.0.0.1:8333`; over the config's `[storage_options]`
    /// and the `AWS_*` environment.
    #[arg(long = "storage-option", value_name = "KEY=VALUE", value_parser = parse_storage_option)]
    storage_options: Vec<(String, String)>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "SHOAL_LISTEN")]
    listen: Option<String>,
    /// Allow a non-loopback address without tokens.
    #[arg(long, env = "SHOAL_INSECURE")]
    insecure: bool,
    /// Largest request body in bytes.
    #[arg(long, env = "SHOAL_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Most rows per write request.
    #[arg(long, env = "SHOAL_MAX_ROWS_PER_REQUEST")]
    max_rows_per_request: Option<usize>,
    /// Request timeout in seconds.
    #[arg(long, env = "SHOAL_REQUEST_TIMEOUT_SECS")]
    request_timeout_secs: Option<f64>,
    /// Requests handled at once.
    #[arg(long, env = "SHOAL_MAX_CONCURRENT_REQUESTS")]
    max_concurrent_requests: Option<usize>,
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    shoal_format::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let overrides = Overrides {
        warehouse: args.warehouse,
        storage_options: args.storage_options,
        listen: args.listen,
        insecure: args.insecure.then_some(true),
        max_body_bytes: args.max_body_bytes,
        max_rows_per_request: args.max_rows_per_request,
        request_timeout_secs: args.request_timeout_secs,
        max_concurrent_requests: args.max_concurrent_requests,
    };
    let config = ServerConfig::load(args.config.as_deref(), &overrides)?;
    let listen = config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(
        listen = %listen,
        warehouse = %config.warehouse,
        storage_options = ?config.storage_options,
        auth = !config.tokens.is_empty(),
        "shoal-server ready"
    );
    serve(listener, AppState::new(config), shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
