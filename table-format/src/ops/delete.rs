//! DELETE and UPDATE: copy-on-write row changes committed with a read predicate, so
//! that concurrent writers that touch the same rows conflict (see `rewrite`).

use serde_json::Value;
use tracing::info;

use crate::error::{Error, Result};
use crate::expr::{
    bind_assignment, bind_predicate, parse_assignment, parse_predicate, BoundAssignment, BoundExpr,
};
use crate::ops::rewrite::{check_assignments, rewrite, RowChange};
use crate::protocol::features::check_write;
use crate::protocol::Action;
use crate::snapshot::Snapshot;
use crate::storage::TableStore;
use crate::transaction::Transaction;
use crate::write::WriterOptions;

/// What a DELETE or UPDATE did.
#[derive(Debug, Clone)]
pub struct RowChangeResult {
    /// The committed version (the current one when nothing matched).
    pub version: i64,
    /// Rows deleted (DELETE) or updated (UPDATE).
    pub rows_matched: u64,
    /// Unchanged rows copied into rewritten files.
    pub rows_copied: u64,
    pub files_added: usize,
    pub files_removed: usize,
    /// Files removed without being read (every row matched, proven by statistics).
    pub files_removed_unread: usize,
    /// Files skipped by partition values and statistics.
    pub files_skipped: usize,
    /// Files whose predicate columns were read.
    pub files_scanned: usize,
    /// Nothing matched: nothing was committed.
    pub unchanged: bool,
    pub snapshot: Snapshot,
}

/// `DELETE FROM table [WHERE predicate]`.
#[derive(Debug, Clone)]
pub struct DeleteBuilder {
    store: TableStore,
    snapshot: Option<Snapshot>,
    predicate: Option<String>,
    options: WriterOptions,
}

impl DeleteBuilder {
    pub fn new(store: TableStore) -> Self {
        DeleteBuilder {
            store,
            snapshot: None,
            predicate: None,
            options: WriterOptions::default(),
        }
    }

    pub fn with_snapshot(mut self, snapshot: Snapshot) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    /// Only rows where the predicate is TRUE are deleted; without one, every row.
    pub fn with_predicate(mut self, predicate: impl Into<String>) -> Self {
        self.predicate = Some(predicate.into());
        self
    }

    pub fn with_writer_options(mut self, options: WriterOptions) -> Self {
        self.options = options;
        self
    }

    /// Runs the operation. A lost race against a concurrent compaction (which rewrote
    /// files this operation rewrites, without changing rows) runs it again on the
    /// latest snapshot, a few times at most; any other conflict is returned.
    pub async fn execute(self) -> Result<RowChangeResult> {
        crate::ops::rerun_after_compaction(self, |b| b.snapshot = None, Self::execute_once).await
    }

    async fn execute_once(self) -> Result<RowChangeResult> {
        let (snapshot, predicate) = prepare(
            &self.store,
            self.snapshot,
            self.predicate.as_deref(),
            "DELETE",
        )
        .await?;
        execute_change(
            snapshot,
            predicate,
            RowChange::Delete,
            self.options,
            "DELETE",
        )
        .await
    }
}

/// `UPDATE table SET col = expr, ... [WHERE predicate]`.
#[derive(Debug, Clone)]
pub struct UpdateBuilder {
    store: TableStore,
    snapshot: Option<Snapshot>,
    predicate: Option<String>,
    assignments: Vec<String>,
    options: WriterOptions,
}

impl UpdateBuilder {
    pub fn new(store: TableStore) -> Self {
        UpdateBuilder {
            store,
            snapshot: None,
            predicate: None,
            assignments: Vec::new(),
            options: WriterOptions::default(),
        }
    }

    pub fn with_snapshot(mut self, snapshot: Snapshot) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    pub fn with_predicate(mut self, predicate: impl Into<String>) -> Self {
        self.predicate = Some(predicate.into());
        self
    }

    /// One `column = expression` assignment, e.g. `amount = amount * 1.1`.
    pub fn with_assignment(mut self, assignment: impl Into<String>) -> Self {
        self.assignments.push(assignment.into());
        self
    }

    pub fn with_writer_options(mut self, options: WriterOptions) -> Self {
        self.options = options;
        self
    }

    /// Runs the operation. A lost race against a concurrent compaction (which rewrote
    /// files this operation rewrites, without changing rows) runs it again on the
    /// latest snapshot, a few times at most; any other conflict is returned.
    pub async fn execute(self) -> Result<RowChangeResult> {
        crate::ops::rerun_after_compaction(self, |b| b.snapshot = None, Self::execute_once).await
    }

    async fn execute_once(self) -> Result<RowChangeResult> {
        if self.assignments.is_empty() {
            return Err(Error::InvalidArgument(
                "UPDATE needs at least one `column = expression` assignment".into(),
            ));
        }
        let (snapshot, predicate) = prepare(
            &self.store,
            self.snapshot,
            self.predicate.as_deref(),
            "UPDATE",
        )
        .await?;
        let assignments: Vec<BoundAssignment> = self
            .assignments
            .iter()
            .map(|a| bind_assignment(&parse_assignment(a)?, snapshot.schema()))
            .collect::<Result<_>>()?;
        check_assignments(&assignments)?;
        if let Some(a) = assignments
            .iter()
            .find(|a| snapshot.partition_columns().contains(&a.column[0]))
        {
            return Err(Error::InvalidArgument(format!(
                "UPDATE of partition column `{}` is not supported; rewrite the rows with DELETE and a write",
                a.column[0]
            )));
        }
        execute_change(
            snapshot,
            predicate,
            RowChange::Update(&assignments),
            self.options,
            "UPDATE",
        )
        .await
    }
}

/// The snapshot a row change starts from (checked: writable, not append-only) and its
/// bound predicate.
async fn prepare(
    store: &TableStore,
    snapshot: Option<Snapshot>,
    predicate: Option<&str>,
    operation: &str,
) -> Result<(Snapshot, Option<BoundExpr>)> {
    let snapshot = match snapshot {
        Some(s) => s,
        None => Snapshot::load(store, None).await?,
    };
    check_write(snapshot.protocol(), snapshot.metadata())?;
    if snapshot.metadata().property("delta.appendOnly") == Some("true") {
        return Err(Error::NotAllowed(format!(
            "the table is append-only (delta.appendOnly=true); {operation} would change existing rows"
        )));
    }
    let predicate = match predicate {
        Some(text) => Some(bind_predicate(&parse_predicate(text)?, snapshot.schema())?),
        None => None,
    };
    Ok((snapshot, predicate))
}

async fn execute_change(
    snapshot: Snapshot,
    predicate: Option<BoundExpr>,
    change: RowChange<'_>,
    options: WriterOptions,
    operation: &str,
) -> Result<RowChangeResult> {
    let started = std::time::Instant::now();
    let outcome = rewrite(&snapshot, predicate.as_ref(), change, options).await?;
    let base = |snapshot: Snapshot, version: i64, unchanged: bool| RowChangeResult {
        version,
        rows_matched: outcome.rows_matched,
        rows_copied: outcome.rows_copied,
        files_added: outcome.adds.len(),
        files_removed: outcome.removes.len(),
        files_removed_unread: outcome.files_removed_unread,
        files_skipped: outcome.files_skipped,
        files_scanned: outcome.files_scanned,
        unchanged,
        snapshot,
    };
    if outcome.removes.is_empty() && outcome.adds.is_empty() {
        info!(operation, "no row matched; nothing committed");
        let v = snapshot.version();
        return Ok(base(snapshot, v, true));
    }
    let read = outcome.read_set(&snapshot, predicate.as_ref());
    let (rows_key, predicate_text) = match change {
        RowChange::Delete => ("numDeletedRows", predicate.as_ref().map(|p| p.to_string())),
        RowChange::Update(_) => ("numUpdatedRows", predicate.as_ref().map(|p| p.to_string())),
    };
    let mut txn = Transaction::new(&snapshot, operation)
        .with_read_set(read)
        .with_metric("numRemovedFiles", outcome.removes.len())
        .with_metric("numAddedFiles", outcome.adds.len())
        .with_metric(rows_key, outcome.rows_matched)
        .with_metric("numCopiedRows", outcome.rows_copied)
        .with_metric("numRemovedFilesUnread", outcome.files_removed_unread)
        .with_metric("numFilesSkipped", outcome.files_skipped)
        .with_metric("numFilesScanned", outcome.files_scanned)
        .with_metric("scanTimeMs", outcome.scan_ms)
        .with_metric("rewriteTimeMs", outcome.rewrite_ms)
        .with_metric("executionTimeMs", started.elapsed().as_millis() as u64);
    let predicate_json = serde_json::to_string(&predicate_text.into_iter().collect::<Vec<_>>())?;
    txn = match change {
        RowChange::Delete => txn.with_parameter("predicate", predicate_json),
        RowChange::Update(a) => txn
            .with_parameter("predicate", predicate_json)
            .with_parameter(
                "assignments",
                Value::from(
                    a.iter()
                        .map(|a| format!("{} = {}", a.column.join("."), a.value))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            ),
    };
    let written: Vec<String> = outcome.adds.iter().map(|a| a.path.clone()).collect();
    let actions = outcome
        .removes
        .iter()
        .cloned()
        .map(Action::Remove)
        .chain(outcome.adds.iter().cloned().map(Action::Add));
    match txn.with_actions(actions).commit().await {
        Ok(c) => {
            info!(
                operation,
                version = c.version,
                rows = outcome.rows_matched,
                files_removed = outcome.removes.len(),
                files_added = outcome.adds.len(),
                "committed"
            );
            Ok(base(c.snapshot, c.version, false))
        }
        Err(e) => {
            // Nothing references the new files: remove them rather than leave them
            // to vacuum.
            crate::write::delete_unreferenced(snapshot.store(), &written).await;
            Err(e)
        }
    }
}
