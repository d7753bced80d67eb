//! `--json` output: one JSON object per command on stdout, on one line, and nothing
//! else on stdout (progress and logs go to stderr). Keys are snake_case and name the
//! result's fields; every command that commits reports `version` (the committed one,
//! or the current one when nothing was committed) and `unchanged`.

use serde_json::{json, Value};
use shoal_format::ops::history::HistoryEntry;
use shoal_format::ops::optimize::OptimizeResult;
use shoal_format::ops::restore::RestoreResult;
use shoal_format::ops::vacuum::{LogCleanupResult, VacuumResult};
use shoal_format::ops::{MergeResult, RowChangeResult, WriteResult};

/// Prints `value` as the command's one line of output.
pub fn print(value: &Value) {
    println!("{value}");
}

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

pub fn write(r: &WriteResult) -> Value {
    json!({
        "version": r.version,
        "unchanged": r.already_applied,
        "already_applied": r.already_applied,
        "rows": r.rows,
        "files_added": r.files_added,
        "files_removed": r.files_removed,
        "bytes_added": r.bytes_added,
    })
}

/// DELETE (`rows_deleted`) or UPDATE (`rows_updated`).
pub fn row_change(r: &RowChangeResult, rows_key: &str) -> Value {
    let mut v = json!({
        "version": r.version,
        "unchanged": r.unchanged,
        "rows_copied": r.rows_copied,
        "files_added": r.files_added,
        "files_removed": r.files_removed,
        "files_removed_unread": r.files_removed_unread,
        "files_skipped": r.files_skipped,
        "files_scanned": r.files_scanned,
    });
    v[rows_key] = json!(r.rows_matched);
    v
}

pub fn merge(r: &MergeResult) -> Value {
    json!({
        "version": r.version,
        "unchanged": r.unchanged,
        "already_applied": r.already_applied,
        "source_rows": r.source_rows,
        "rows_inserted": r.rows_inserted,
        "rows_updated": r.rows_updated,
        "rows_deleted": r.rows_deleted,
        "rows_copied": r.rows_copied,
        "files_added": r.files_added,
        "files_removed": r.files_removed,
        "files_skipped": r.files_skipped,
        "files_scanned": r.files_scanned,
        "scan_ms": r.scan_ms,
        "rewrite_ms": r.rewrite_ms,
    })
}

pub fn optimize(r: &OptimizeResult) -> Value {
    json!({
        "version": r.version,
        "unchanged": r.unchanged,
        "files_removed": r.files_removed,
        "files_added": r.files_added,
        "bytes_before": r.bytes_before,
        "bytes_after": r.bytes_after,
        "partitions_optimized": r.partitions_optimized,
        "bins": r.bins,
        "files_considered": r.files_considered,
        "files_skipped": r.files_skipped,
        "bins_abandoned": r.bins_abandoned,
    })
}

pub fn vacuum(r: &VacuumResult, logs: Option<&LogCleanupResult>) -> Value {
    json!({
        "version": r.version,
        "unchanged": r.files_deleted == 0 || r.dry_run,
        "dry_run": r.dry_run,
        "retention_ms": r.retention_ms,
        "files_deleted": r.files_deleted,
        "bytes_deleted": r.bytes_deleted,
        "files_kept": r.files_kept,
        "directories": r.directories,
        "start_version": r.start_version,
        "end_version": r.end_version,
        "paths": r.paths,
        "log_files_deleted": logs.map(|c| c.files_deleted),
        "log_bytes_deleted": logs.map(|c| c.bytes_deleted),
        "log_checkpoint_version": logs.and_then(|c| c.checkpoint_version),
    })
}

pub fn restore(r: &RestoreResult) -> Value {
    json!({
        "version": r.version,
        "unchanged": r.unchanged,
        "restored_version": r.restored_version,
        "files_added": r.files_added,
        "files_removed": r.files_removed,
        "bytes_added": r.bytes_added,
        "bytes_removed": r.bytes_removed,
        "num_files_after": r.num_files_after,
        "table_size_after": r.table_size_after,
        "num_rows_after": r.num_rows_after,
        "metadata_restored": r.metadata_restored,
    })
}

pub fn checkpoint(cp: &shoal_format::log::LastCheckpoint) -> Value {
    json!({
        "version": cp.version,
        "actions": cp.size,
        "parts": cp.parts,
        "size_bytes": cp.size_in_bytes,
        "num_add_files": cp.num_of_add_files,
    })
}

/// The same entries as the HTTP API's history.
pub fn history(entries: &[HistoryEntry]) -> Value {
    json!({ "history": entries.iter().map(HistoryEntry::to_json).collect::<Vec<_>>() })
}
