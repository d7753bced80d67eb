//! `shoal-compactor`: the daemon (`--config FILE`) and the cron-friendly `--once`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use shoal_compactor::config::{merge_options, Config, LogFormat, TableEntry};
use shoal_compactor::daemon::{run_daemon, run_once, tables_to_watch};
use shoal_compactor::metrics::Metrics;
use shoal_compactor::{default_owner, Runner};
use shoal_format::storage::parse_storage_option;
use tokio::sync::watch;
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "shoal-compactor",
    version,
    about = "Keeps Shoal tables healthy: compacts small files, Z-orders, checkpoints, vacuums"
)]
struct Args {
    /// TOML config file (see spec/COMPACTOR.md).
    #[arg(long)]
    config: Option<String>,
    /// One pass over the tables, then exit (status 1 if any run failed).
    #[arg(long)]
    once: bool,
    /// A table to maintain (repeatable); adds to the config's tables.
    #[arg(long = "table", value_name = "URI")]
    tables: Vec<String>,
    /// Watch every table under this root (default when nothing else is given: ./warehouse).
    #[arg(long)]
    warehouse: Option<String>,
    /// An option for the object store of the warehouse and every table, `key=value`
    /// (repeatable), e.g. `aws_endpoint_url=http://127.0.0.1:8333`; over
    /// `[service.storage_options]` and the `AWS_*` environment, under a `[[table]]`
    /// entry's own `storage_options`.
    #[arg(long = "storage-option", value_name = "KEY=VALUE", value_parser = parse_storage_option)]
    storage_options: Vec<(String, String)>,
    /// Serve /metrics and /healthz here.
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Time between runs on a table, e.g. 30s, 5m.
    #[arg(long)]
    interval: Option<String>,
    /// Largest random delay added to every interval.
    #[arg(long)]
    jitter: Option<String>,
    /// Tables compacted at once.
    #[arg(long)]
    max_concurrent: Option<usize>,
    /// How long a table lease lasts without renewal, e.g. 10m.
    #[arg(long)]
    lease_ttl: Option<String>,
    /// Name in leases (default: host-pid-random).
    #[arg(long)]
    owner: Option<String>,
    /// Policy default: compact a partition from this many small files.
    #[arg(long)]
    min_small_files: Option<usize>,
    /// Policy default: size of the files written, e.g. 128MiB.
    #[arg(long)]
    target_size: Option<String>,
    /// Policy default: Z-order by these columns (comma-separated).
    #[arg(long, value_delimiter = ',')]
    zorder_by: Option<Vec<String>>,
    /// Policy default: input bytes one run may rewrite, e.g. 10GiB.
    #[arg(long)]
    max_bytes_per_run: Option<String>,
}

fn load_config(args: &Args) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let s = &mut config.service;
    if let Some(w) = &args.warehouse {
        s.warehouse = Some(w.clone());
    }
    if let Some(l) = args.listen {
        s.listen = Some(l.to_string());
    }
    if let Some(f) = args.log_format {
        s.log_format = f;
    }
    if let Some(i) = &args.interval {
        s.interval = i.clone();
    }
    if let Some(j) = &args.jitter {
        s.jitter = j.clone();
    }
    if let Some(k) = args.max_concurrent {
        s.max_concurrent_tables = k;
    }
    if let Some(t) = &args.lease_ttl {
        s.lease_ttl = t.clone();
    }
    if let Some(o) = &args.owner {
        s.owner = Some(o.clone());
    }
    merge_options(
        &mut s.storage_options,
        &args.storage_options.iter().cloned().collect(),
    );
    let d = &mut config.defaults;
    if let Some(n) = args.min_small_files {
        d.min_small_files = Some(n);
    }
    if let Some(t) = &args.target_size {
        d.target_file_size = Some(t.clone());
    }
    if let Some(z) = &args.zorder_by {
        d.zorder_by = Some(z.clone());
    }
    if let Some(b) = &args.max_bytes_per_run {
        d.max_bytes_per_run = Some(b.clone());
    }
    for t in &args.tables {
        if !config.tables.iter().any(|e| &e.uri == t) {
            config.tables.push(TableEntry::new(t));
        }
    }
    if config.service.warehouse.is_none() && config.tables.is_empty() {
        config.service.warehouse = Some("./warehouse".into());
    }
    config.validate()?;
    Ok(config)
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Turns SIGTERM / Ctrl-C into a shutdown request; a second one exits at once.
fn watch_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            #[cfg(unix)]
            {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
            count += 1;
            if count > 1 {
                error!("second signal: exiting now; unfinished runs leave only unreferenced files");
                std::process::exit(130);
            }
            info!("shutdown requested: finishing the runs in flight (signal again to exit now)");
            let _ = tx.send(true);
        }
    });
    rx
}

#[tokio::main]
async fn main() -> Result<()> {
    shoal_format::tune_allocator();
    let args = Args::parse();
    let config = load_config(&args)?;
    init_logs(config.service.log_format);
    let owner = config.service.owner.clone().unwrap_or_else(default_owner);
    let listen = config.service.listen.clone();
    let runner = Runner {
        config: Arc::new(config),
        owner,
    };
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = listen {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        info!(%addr, "serving /metrics and /healthz");
        let app = shoal_compactor::http::app(metrics.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                error!(error = %e, "metrics server stopped");
            }
        });
    }
    if args.once {
        let tables = tables_to_watch(&runner).await;
        if tables.is_empty() {
            bail!("no tables to maintain");
        }
        let reports = run_once(&runner, &tables, &metrics).await;
        let failed = reports.iter().filter(|r| r.failed()).count();
        if failed > 0 {
            bail!("{failed} of {} table run(s) failed", reports.len());
        }
        return Ok(());
    }
    let shutdown = watch_signals();
    run_daemon(runner, metrics, shutdown).await;
    Ok(())
}
