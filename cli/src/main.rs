//! `shoal`: the operator's command line for Shoal tables.

mod input;
mod progress;
mod report;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use clap::{Parser, Subcommand, ValueEnum};
use futures::TryStreamExt;
use serde_json::json;
use shoal_format::{SaveMode, SchemaMode, Snapshot, Table};

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "Shoal: Delta-compatible lakehouse tables"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// A storage option for the table's store, `key=value` (repeatable), e.g.
    /// `aws_endpoint_url=http://127.0.0.1:8333`; the `AWS_*` environment applies too.
    #[arg(long = "storage-option", global = true, value_name = "KEY=VALUE", value_parser = parse_storage_option)]
    storage_options: Vec<(String, String)>,
    /// Draw no progress bars (they are drawn on stderr only when it is a terminal,
    /// `TERM` is not `dumb` and `--json` is not given).
    #[arg(long, global = true)]
    no_progress: bool,
}

fn parse_storage_option(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err("expected KEY=VALUE".to_string()),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Append,
    Overwrite,
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemaModeArg {
    Merge,
    Overwrite,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Table,
    Csv,
    Json,
    Parquet,
}

#[derive(Clone, Copy, ValueEnum)]
enum WhenMatchedArg {
    Update,
    Delete,
    Ignore,
}

#[derive(Clone, Copy, ValueEnum)]
enum WhenNotMatchedArg {
    Insert,
    Ignore,
}

#[derive(Subcommand)]
enum Command {
    /// Write files (Parquet, CSV, NDJSON, Arrow IPC) into a table; creates it when missing.
    Write {
        table: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "append")]
        mode: ModeArg,
        #[arg(long, value_enum)]
        schema_mode: Option<SchemaModeArg>,
        /// Partition columns, comma-separated (new tables, or overwrite with schema mode overwrite).
        #[arg(long, value_delimiter = ',')]
        partition_by: Option<Vec<String>>,
        /// Application id for an idempotent write (with --app-version).
        #[arg(long, requires = "app_version")]
        app_id: Option<String>,
        #[arg(long, requires = "app_id")]
        app_version: Option<i64>,
        /// Table properties for a new table, KEY=VALUE.
        #[arg(long = "property", value_parser = parse_kv)]
        properties: Vec<(String, String)>,
        /// Target data file size in bytes.
        #[arg(long)]
        target_file_size: Option<u64>,
        /// With --mode overwrite: replace only the rows matching this predicate.
        #[arg(long)]
        replace_where: Option<String>,
        /// Print one JSON object on stdout (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete the rows matching a predicate (copy-on-write).
    Delete {
        table: String,
        /// Rows to delete, e.g. "country = 'XX' AND ts < TIMESTAMP '2024-01-01 00:00:00'".
        #[arg(long = "where")]
        predicate: String,
        /// Print one JSON object on stdout (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Upsert the rows of a file into a table (MERGE on key columns).
    Merge {
        table: String,
        /// Source rows: Parquet, CSV, NDJSON or Arrow IPC.
        source: PathBuf,
        /// Key columns, comma-separated: target.k = source.k for each.
        #[arg(long, value_delimiter = ',', required = true)]
        on: Vec<String>,
        #[arg(long, value_enum, default_value = "update")]
        when_matched: WhenMatchedArg,
        #[arg(long, value_enum, default_value = "insert")]
        when_not_matched: WhenNotMatchedArg,
        /// Source rows for which this holds delete their match (and are never inserted),
        /// e.g. "source._op = 'D'".
        #[arg(long)]
        delete_when: Option<String>,
        /// Keep only the last source row per key by this ordering column.
        #[arg(long)]
        dedupe_by: Option<String>,
        #[arg(long, value_enum)]
        schema_mode: Option<SchemaModeArg>,
        #[arg(long, requires = "app_version")]
        app_id: Option<String>,
        #[arg(long, requires = "app_id")]
        app_version: Option<i64>,
        /// Print one JSON object on stdout (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Compact small files (bin-packing), or cluster them with --zorder-by.
    Optimize {
        table: String,
        /// Z-order by these columns, comma-separated.
        #[arg(long, value_delimiter = ',')]
        zorder_by: Option<Vec<String>>,
        /// Target file size in bytes (default: delta.targetFileSize, else 128 MiB).
        #[arg(long)]
        target_size: Option<u64>,
        /// Only partitions matching this predicate over partition columns.
        #[arg(long = "where")]
        partition_filter: Option<String>,
        /// Z-order files already clustered by the same columns too.
        #[arg(long)]
        full: bool,
        /// Print one JSON object on stdout (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete data files no version inside the retention window uses (and, with
    /// --logs, expired log files behind a checkpoint).
    Vacuum {
        table: String,
        /// Retention in hours (default: delta.deletedFileRetentionDuration, 7 days).
        #[arg(long)]
        retain: Option<f64>,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Allow a retention shorter than the table's.
        #[arg(long)]
        force: bool,
        /// Also delete expired commits and checkpoints (delta.logRetentionDuration).
        #[arg(long)]
        logs: bool,
        /// Print one JSON object on stdout (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Roll the table back to an older version, as a new commit (history is kept).
    Restore {
        table: String,
        #[arg(
            long,
            conflicts_with = "timestamp",
            required_unless_present = "timestamp"
        )]
        version: Option<i64>,
        /// RFC 3339, e.g. 2024-01-01T00:00:00Z
        #[arg(long)]
        timestamp: Option<String>,
        /// Print one JSON object on stdout (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Update the rows matching a predicate.
    Update {
        table: String,
        /// An assignment `col = expr`; repeat for several columns.
        #[arg(long = "set", required = true)]
        assignments: Vec<String>,
        /// Rows to update (every row when omitted).
        #[arg(long = "where")]
        predicate: Option<String>,
        /// Print one JSON object on stdout (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Read rows of a table, optionally at an older version or timestamp.
    Scan {
        table: String,
        #[arg(long, conflicts_with = "timestamp")]
        version: Option<i64>,
        /// RFC 3339, e.g. 2024-01-01T00:00:00Z
        #[arg(long)]
        timestamp: Option<String>,
        #[arg(long, value_delimiter = ',')]
        columns: Option<Vec<String>>,
        #[arg(long)]
        limit: Option<usize>,
        /// Only rows matching this predicate, e.g. "amount > 100 AND country IN ('NL', 'BE')".
        #[arg(long)]
        filter: Option<String>,
        /// Print the scan plan (files and row groups considered and skipped) to stderr.
        #[arg(long)]
        explain: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: FormatArg,
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// The commit history, newest first.
    History {
        table: String,
        #[arg(long)]
        limit: Option<usize>,
        /// Print one JSON object on stdout (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Schema, partitioning, protocol, properties and size of a version.
    Describe {
        table: String,
        #[arg(long, conflicts_with = "timestamp")]
        version: Option<i64>,
        #[arg(long)]
        timestamp: Option<String>,
        /// Print one JSON object on stdout (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write a checkpoint of the latest version.
    Checkpoint {
        table: String,
        /// Print one JSON object on stdout (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

fn main() -> ExitCode {
    shoal_format::tune_allocator();
    // `shoal scan ... | head`: a closed stdout ends the command quietly, as Unix tools do,
    // instead of a panic report from `println!`.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): not an error.
        Err(e) if format!("{e:#}").contains("Broken pipe") => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_already_applied(app_id: Option<&str>, app_version: Option<i64>, version: i64) {
    println!(
        "already applied: application `{}` version {} was committed before; table is at version {version}",
        app_id.unwrap_or_default(),
        app_version.unwrap_or_default(),
    );
}

/// The outcome of a DELETE or UPDATE, in one line.
fn print_row_change(r: &shoal_format::ops::RowChangeResult, verb: &str) {
    if r.unchanged {
        println!(
            "no row matched; nothing committed (table at version {})",
            r.version
        );
        return;
    }
    let unread = if r.files_removed_unread > 0 {
        format!(" ({} without reading)", r.files_removed_unread)
    } else {
        String::new()
    };
    println!(
        "committed version {}: {} row(s) {verb}; {} file(s) removed{unread}, {} added, {} row(s) copied; {} file(s) skipped by statistics",
        r.version, r.rows_matched, r.files_removed, r.files_added, r.rows_copied, r.files_skipped
    );
}

fn parse_timestamp(s: &str) -> Result<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(s).with_context(|| {
        format!("`{s}` is not an RFC 3339 timestamp (e.g. 2024-01-01T00:00:00Z)")
    })?;
    Ok(t.timestamp_millis())
}

async fn snapshot_of(
    table: &Table,
    version: Option<i64>,
    timestamp: Option<&str>,
) -> Result<Snapshot> {
    Ok(match (version, timestamp) {
        (Some(v), _) => table.snapshot_at(v).await?,
        (None, Some(ts)) => table.snapshot_at_timestamp(parse_timestamp(ts)?).await?,
        (None, None) => table.snapshot().await?,
    })
}

async fn run(cli: Cli) -> Result<()> {
    let options: shoal_format::StorageOptions = cli.storage_options.into_iter().collect();
    let open = |uri: &str| Table::at_with_options(uri, &options);
    let no_progress = cli.no_progress;
    match cli.command {
        Command::Write {
            table,
            files,
            mode,
            schema_mode,
            partition_by,
            app_id,
            app_version,
            properties,
            target_file_size,
            replace_where,
            json,
        } => {
            let mut batches: Vec<RecordBatch> = Vec::new();
            for f in &files {
                batches.extend(input::read_file(f)?);
            }
            if batches.is_empty() {
                bail!("the input files hold no rows");
            }
            let t = open(&table)?;
            let mut w = t
                .write(batches)
                .with_mode(match mode {
                    ModeArg::Append => SaveMode::Append,
                    ModeArg::Overwrite => SaveMode::Overwrite,
                })
                .with_schema_mode(match schema_mode {
                    None => SchemaMode::Enforce,
                    Some(SchemaModeArg::Merge) => SchemaMode::Merge,
                    Some(SchemaModeArg::Overwrite) => SchemaMode::Overwrite,
                })
                .with_properties(properties.into_iter().collect::<HashMap<_, _>>());
            if let Some(p) = &partition_by {
                w = w.with_partition_by(p);
            }
            if let (Some(id), Some(v)) = (&app_id, app_version) {
                w = w.with_app_transaction(id, v);
            }
            if let Some(size) = target_file_size {
                w = w.with_target_file_size(size);
            }
            if let Some(p) = replace_where {
                w = w.with_replace_where(p);
            }
            let r = w.execute().await?;
            if json {
                report::print(&report::write(&r));
            } else if r.already_applied {
                print_already_applied(app_id.as_deref(), app_version, r.version);
            } else {
                println!(
                    "committed version {}: {} rows in {} file(s), {} bytes{}",
                    r.version,
                    r.rows,
                    r.files_added,
                    r.bytes_added,
                    if r.files_removed > 0 {
                        format!(", {} file(s) removed", r.files_removed)
                    } else {
                        String::new()
                    }
                );
            }
        }
        Command::Scan {
            table,
            version,
            timestamp,
            columns,
            limit,
            filter,
            explain,
            format,
            output,
        } => {
            let t = open(&table)?;
            let snap = snapshot_of(&t, version, timestamp.as_deref()).await?;
            let mut scan = t.scan(snap).with_limit(limit);
            if let Some(c) = &columns {
                scan = scan.with_columns(c);
            }
            if let Some(f) = &filter {
                scan = scan.with_predicate(f)?;
            }
            let schema = scan.schema()?;
            let (mut stream, metrics) = scan.execute_with_metrics()?;
            let stream = &mut stream;
            let mut out: Box<dyn Write + Send> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create `{}`", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            match format {
                FormatArg::Table => {
                    let batches: Vec<RecordBatch> = stream.try_collect().await?;
                    let text = arrow::util::pretty::pretty_format_batches(&batches)?;
                    writeln!(out, "{text}")?;
                    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                    eprintln!("{rows} row(s)");
                }
                FormatArg::Csv => {
                    let mut w = arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .build(out);
                    while let Some(b) = stream.try_next().await? {
                        w.write(&b)?;
                    }
                }
                FormatArg::Json => {
                    let mut w = arrow::json::LineDelimitedWriter::new(out);
                    while let Some(b) = stream.try_next().await? {
                        w.write(&b)?;
                    }
                    w.finish()?;
                }
                FormatArg::Parquet => {
                    if output.is_none() {
                        bail!("--format parquet needs --output FILE");
                    }
                    let mut w = parquet::arrow::ArrowWriter::try_new(out, schema, None)?;
                    while let Some(b) = stream.try_next().await? {
                        w.write(&b)?;
                    }
                    w.close()?;
                }
            }
            if explain {
                use shoal_format::scan::ScanMetrics as M;
                eprintln!(
                    "scan plan: filter {}\n  files: {} considered, {} skipped by partition values and statistics, {} read\n  row groups: {} in files read, {} skipped by statistics\n  rows: {} read, {} matched",
                    filter.as_deref().unwrap_or("(none)"),
                    M::get(&metrics.files_total),
                    M::get(&metrics.files_skipped),
                    M::get(&metrics.files_total) - M::get(&metrics.files_skipped),
                    M::get(&metrics.row_groups_total),
                    M::get(&metrics.row_groups_skipped),
                    M::get(&metrics.rows_read),
                    M::get(&metrics.rows_matched),
                );
            }
        }
        Command::Delete {
            table,
            predicate,
            json,
        } => {
            let t = open(&table)?;
            let r = t.delete().with_predicate(predicate).execute().await?;
            if json {
                report::print(&report::row_change(&r, "rows_deleted"));
            } else {
                print_row_change(&r, "deleted");
            }
        }
        Command::Merge {
            table,
            source,
            on,
            when_matched,
            when_not_matched,
            delete_when,
            dedupe_by,
            schema_mode,
            app_id,
            app_version,
            json,
        } => {
            let batches = input::read_file(&source)?;
            let condition = on
                .iter()
                .map(|k| format!("target.`{k}` = source.`{k}`"))
                .collect::<Vec<_>>()
                .join(" AND ");
            let t = open(&table)?;
            let mut m = t.merge(batches, &condition);
            if let Some(d) = &delete_when {
                m = m.when_matched_delete(Some(d));
            }
            m = match when_matched {
                WhenMatchedArg::Update => m.when_matched_update_all(None),
                WhenMatchedArg::Delete => m.when_matched_delete(None),
                WhenMatchedArg::Ignore => m,
            };
            if let WhenNotMatchedArg::Insert = when_not_matched {
                let not_deleted = delete_when.as_ref().map(|d| format!("NOT ({d})"));
                m = m.when_not_matched_insert_all(not_deleted.as_deref());
            }
            if let Some(col) = dedupe_by {
                m = m.with_dedupe_by(col);
            }
            if let Some(SchemaModeArg::Merge) = schema_mode {
                m = m.with_schema_mode(SchemaMode::Merge);
            } else if let Some(SchemaModeArg::Overwrite) = schema_mode {
                bail!("merge supports --schema-mode merge only");
            }
            if let (Some(id), Some(v)) = (&app_id, app_version) {
                m = m.with_app_transaction(id, v);
            }
            let r = m.execute().await?;
            if json {
                report::print(&report::merge(&r));
            } else if r.already_applied {
                print_already_applied(app_id.as_deref(), app_version, r.version);
            } else if r.unchanged {
                println!(
                    "nothing to change; nothing committed (table at version {})",
                    r.version
                );
            } else {
                println!(
                    "committed version {}: {} inserted, {} updated, {} deleted, {} copied; {} file(s) removed, {} added; {} file(s) skipped by statistics, {} scanned",
                    r.version,
                    r.rows_inserted,
                    r.rows_updated,
                    r.rows_deleted,
                    r.rows_copied,
                    r.files_removed,
                    r.files_added,
                    r.files_skipped,
                    r.files_scanned
                );
            }
        }
        Command::Optimize {
            table,
            zorder_by,
            target_size,
            partition_filter,
            full,
            json,
        } => {
            let t = open(&table)?;
            let bars = progress::bars(json, no_progress);
            let mut o = progress::attach(t.optimize().with_full(full), &bars, |o, p| {
                o.with_progress(p)
            });
            if let Some(cols) = &zorder_by {
                o = o.with_zorder_by(cols);
            }
            if let Some(size) = target_size {
                o = o.with_target_size(size);
            }
            if let Some(p) = partition_filter {
                o = o.with_partition_filter(p);
            }
            let r = o.execute().await?;
            drop(bars);
            if json {
                report::print(&report::optimize(&r));
            } else if r.unchanged {
                println!(
                    "nothing to optimize ({} file(s) considered); table at version {}",
                    r.files_considered, r.version
                );
            } else {
                println!(
                    "committed version {}: {} file(s) ({} bytes) rewritten into {} ({} bytes) in {} partition(s); {} file(s) left alone",
                    r.version,
                    r.files_removed,
                    r.bytes_before,
                    r.files_added,
                    r.bytes_after,
                    r.partitions_optimized,
                    r.files_skipped
                );
            }
        }
        Command::Vacuum {
            table,
            retain,
            dry_run,
            force,
            logs,
            json,
        } => {
            let t = open(&table)?;
            let bars = progress::bars(json, no_progress);
            let vacuum = t
                .vacuum()
                .with_retention_hours(retain)
                .with_dry_run(dry_run)
                .with_force(force);
            let r = progress::attach(vacuum, &bars, |v, p| v.with_progress(p))
                .execute()
                .await?;
            drop(bars);
            let cleanup = if logs {
                Some(
                    shoal_format::ops::vacuum::LogCleanupBuilder::new(t.store().clone())
                        .with_dry_run(dry_run)
                        .execute()
                        .await?,
                )
            } else {
                None
            };
            if json {
                report::print(&report::vacuum(&r, cleanup.as_ref()));
            } else {
                let verb = if r.dry_run { "would delete" } else { "deleted" };
                if r.dry_run {
                    for p in &r.paths {
                        println!("{p}");
                    }
                }
                println!(
                    "{verb} {} file(s), {} bytes; {} file(s) kept",
                    r.files_deleted, r.bytes_deleted, r.files_kept
                );
                if let Some(c) = cleanup {
                    println!(
                        "log: {verb} {} expired file(s) before checkpoint {}",
                        c.files_deleted,
                        c.checkpoint_version
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "(none)".into())
                    );
                }
            }
        }
        Command::Restore {
            table,
            version,
            timestamp,
            json,
        } => {
            let t = open(&table)?;
            let mut b = t.restore();
            if let Some(v) = version {
                b = b.with_version(v);
            }
            if let Some(ts) = &timestamp {
                b = b.with_timestamp_ms(parse_timestamp(ts)?);
            }
            let r = b.execute().await?;
            if json {
                report::print(&report::restore(&r));
            } else if r.unchanged {
                println!(
                    "the table already holds the data of the requested version; nothing committed (version {})",
                    r.version
                );
            } else {
                println!(
                    "committed version {}: restored version {} ({} file(s) added back, {} removed)",
                    r.version, r.restored_version, r.files_added, r.files_removed
                );
            }
        }
        Command::Update {
            table,
            assignments,
            predicate,
            json,
        } => {
            let t = open(&table)?;
            let mut u = t.update();
            for a in assignments {
                u = u.with_assignment(a);
            }
            if let Some(p) = predicate {
                u = u.with_predicate(p);
            }
            let r = u.execute().await?;
            if json {
                report::print(&report::row_change(&r, "rows_updated"));
            } else {
                print_row_change(&r, "updated");
            }
        }
        Command::History { table, limit, json } => {
            let t = open(&table)?;
            let entries = t.history(limit).await?;
            if json {
                report::print(&report::history(&entries));
            } else {
                println!(
                    "{:>8}  {:<24}  {:<22}  parameters / metrics",
                    "version", "timestamp", "operation"
                );
                for e in entries {
                    let ts = report::rfc3339(e.timestamp);
                    let params = e
                        .commit_info
                        .0
                        .get("operationParameters")
                        .map(|v| v.to_string())
                        .unwrap_or_default();
                    let metrics = e
                        .commit_info
                        .0
                        .get("operationMetrics")
                        .map(|v| v.to_string())
                        .unwrap_or_default();
                    println!(
                        "{:>8}  {:<24}  {:<22}  {} {}",
                        e.version,
                        ts,
                        e.commit_info.operation().unwrap_or("?"),
                        params,
                        metrics
                    );
                }
            }
        }
        Command::Describe {
            table,
            version,
            timestamp,
            json,
        } => {
            let t = open(&table)?;
            let snap = snapshot_of(&t, version, timestamp.as_deref()).await?;
            let (bytes, rows) = snap.totals();
            let mut props: Vec<(String, String)> = snap
                .metadata()
                .configuration
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
                .collect();
            props.sort();
            let ts = report::rfc3339(snap.timestamp());
            if json {
                let v = json!({
                    "location": table,
                    "version": snap.version(),
                    "timestamp": ts,
                    "id": snap.metadata().id,
                    "name": snap.metadata().name,
                    "schema": serde_json::from_str::<serde_json::Value>(&snap.metadata().schema_string)?,
                    "partition_columns": snap.partition_columns(),
                    "protocol": snap.protocol(),
                    "properties": props.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<String, serde_json::Value>>(),
                    "num_files": snap.num_files(),
                    "size_bytes": bytes,
                    "num_rows": rows,
                    "checkpoint_version": snap.checkpoint_version(),
                });
                report::print(&v);
            } else {
                println!("location:    {table}");
                println!("version:     {} ({ts})", snap.version());
                println!("id:          {}", snap.metadata().id);
                let p = snap.protocol();
                println!(
                    "protocol:    reader {} writer {}{}{}",
                    p.min_reader_version,
                    p.min_writer_version,
                    p.reader_features
                        .as_ref()
                        .map(|f| format!(", reader features {}", f.join(",")))
                        .unwrap_or_default(),
                    p.writer_features
                        .as_ref()
                        .map(|f| format!(", writer features {}", f.join(",")))
                        .unwrap_or_default()
                );
                println!(
                    "partitioned: {}",
                    if snap.partition_columns().is_empty() {
                        "no".to_string()
                    } else {
                        snap.partition_columns().join(", ")
                    }
                );
                println!("files:       {}", snap.num_files());
                println!("size:        {bytes} bytes");
                println!(
                    "rows:        {}",
                    rows.map(|r| r.to_string())
                        .unwrap_or_else(|| "unknown (files without stats)".into())
                );
                println!("schema:");
                for f in &snap.schema().fields {
                    let ty = f
                        .data_type
                        .primitive_name()
                        .unwrap_or_else(|| serde_json::to_string(&f.data_type).unwrap_or_default());
                    println!(
                        "  {:<24} {}{}",
                        f.name,
                        ty,
                        if f.nullable { "" } else { " not null" }
                    );
                }
                if !props.is_empty() {
                    println!("properties:");
                    for (k, v) in props {
                        println!("  {k} = {v}");
                    }
                }
            }
        }
        Command::Checkpoint { table, json } => {
            let t = open(&table)?;
            let cp = t.checkpoint().await?;
            if json {
                report::print(&report::checkpoint(&cp));
                return Ok(());
            }
            println!(
                "checkpoint written at version {} ({} actions, {} bytes)",
                cp.version,
                cp.size,
                cp.size_in_bytes.unwrap_or(0)
            );
        }
    }
    Ok(())
}
