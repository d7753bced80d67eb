//! Copy-on-write row changes shared by DELETE, UPDATE and overwrite with
//! `replaceWhere`: choose the files a predicate touches, read only those, and rewrite
//! only the ones where some row matches.
//!
//! File selection, per active file:
//! - statistics and partition values prove no row matches → untouched, not read;
//! - (DELETE only) they prove every row matches → removed without being read;
//! - otherwise the predicate columns are read first; a file with no matching row is
//!   left alone, a file with some is rewritten (all columns, streamed batch by batch).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::kernels::zip::zip;
use arrow::compute::{filter_record_batch, not};
use futures::{StreamExt, TryStreamExt};
use tracing::debug;

use crate::error::{Error, Result};
use crate::expr::{
    evaluate, evaluate_predicate, matching_rows, may_match, must_match, BoundAssignment, BoundExpr,
    FileStats,
};
use crate::protocol::features::ColumnMapping;
use crate::protocol::{Add, Remove};
use crate::scan::ScanBuilder;
use crate::snapshot::{file_key, Snapshot};
use crate::transaction::{ReadPredicate, ReadSet};
use crate::write::{DataWriter, WriterOptions};

/// What happens to the rows that match.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RowChange<'a> {
    Delete,
    Update(&'a [BoundAssignment]),
}

/// The outcome of a rewrite, before it is committed.
#[derive(Debug, Default)]
pub(crate) struct Rewrite {
    pub adds: Vec<Add>,
    pub removes: Vec<Remove>,
    /// Rows deleted or updated.
    pub rows_matched: u64,
    /// Unmatched rows copied into the rewritten files.
    pub rows_copied: u64,
    /// Files removed whole without being read.
    pub files_removed_unread: usize,
    /// Files whose predicate columns were read.
    pub files_scanned: usize,
    pub files_skipped: usize,
    pub scan_ms: u64,
    pub rewrite_ms: u64,
    /// Keys of every file the outcome depends on.
    pub files_read: HashSet<String>,
}

impl Rewrite {
    /// The read set for the commit: files read, files removed, the predicate.
    pub fn read_set(&self, snapshot: &Snapshot, predicate: Option<&BoundExpr>) -> ReadSet {
        ReadSet {
            whole_table: predicate.is_none(),
            files_read: self.files_read.clone(),
            files_removed: self
                .removes
                .iter()
                .map(|r| file_key(&r.path, r.deletion_vector.as_ref()))
                .collect(),
            predicate: predicate.map(|p| ReadPredicate {
                expr: p.clone(),
                partition_columns: snapshot.partition_columns().to_vec(),
            }),
            ..Default::default()
        }
    }
}

/// Applies `change` to the rows of `snapshot` where `predicate` is TRUE (every row when
/// `None`). Writes the new files; commits nothing.
pub(crate) async fn rewrite(
    snapshot: &Snapshot,
    predicate: Option<&BoundExpr>,
    change: RowChange<'_>,
    options: WriterOptions,
) -> Result<Rewrite> {
    let started = Instant::now();
    let mut out = Rewrite::default();
    let partition_columns = snapshot.partition_columns().to_vec();
    let use_stats = snapshot.column_mapping() == ColumnMapping::None;
    let now = chrono::Utc::now().timestamp_millis();

    let mut candidates: Vec<Arc<Add>> = Vec::new();
    for add in snapshot.files() {
        let Some(pred) = predicate else {
            // No predicate: every row matches.
            match change {
                RowChange::Delete => remove_unread(&mut out, &add, now),
                RowChange::Update(_) => candidates.push(add),
            }
            continue;
        };
        if !use_stats {
            candidates.push(add);
            continue;
        }
        let stats = FileStats::of_add(&add);
        if !may_match(
            pred,
            stats.as_ref(),
            &add.partition_values,
            &partition_columns,
        ) {
            out.files_skipped += 1;
            continue;
        }
        if matches!(change, RowChange::Delete) {
            let known_rows = stats.as_ref().and_then(FileStats::num_records).is_some();
            if known_rows
                && must_match(
                    pred,
                    stats.as_ref(),
                    &add.partition_values,
                    &partition_columns,
                )
            {
                remove_unread(&mut out, &add, now);
                continue;
            }
        }
        candidates.push(add);
    }

    // Pass 1: which candidates hold a matching row? Only the predicate's columns.
    let to_rewrite: Vec<Arc<Add>> = match predicate {
        None => candidates,
        Some(pred) => {
            let mut columns: Vec<String> = Vec::new();
            for p in pred.columns() {
                if !columns.contains(&p[0]) {
                    columns.push(p[0].clone());
                }
            }
            out.files_scanned = candidates.len();
            for add in &candidates {
                out.files_read
                    .insert(file_key(&add.path, add.deletion_vector.as_ref()));
            }
            files_with_match(snapshot, candidates, &columns, |batch| {
                Ok(evaluate_predicate(pred, batch)?.true_count() > 0)
            })
            .await?
        }
    };
    out.scan_ms = started.elapsed().as_millis() as u64;

    // Pass 2: rewrite the files with matches, streaming.
    let rewrite_started = Instant::now();
    if !to_rewrite.is_empty() {
        let mut writer = DataWriter::for_snapshot(snapshot, options)?;
        // One scan over every file to rewrite: files decode two at a time.
        let written = async {
            let mut stream = ScanBuilder::new(snapshot.clone())
                .with_files(to_rewrite.clone())
                .with_batch_size(64 * 1024)
                .with_light_read_ahead()
                .execute()?;
            while let Some(batch) = stream.try_next().await? {
                let matched = match predicate {
                    Some(p) => matching_rows(p, &batch)?,
                    None => BooleanArray::from(vec![true; batch.num_rows()]),
                };
                let n_matched = matched.true_count();
                out.rows_matched += n_matched as u64;
                out.rows_copied += (batch.num_rows() - n_matched) as u64;
                let new_batch = match change {
                    RowChange::Delete => filter_record_batch(&batch, &not(&matched)?)?,
                    RowChange::Update(assignments) => {
                        apply_assignments(&batch, &matched, assignments, snapshot)?
                    }
                };
                if new_batch.num_rows() > 0 {
                    writer.write(&new_batch).await?;
                }
            }
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = written {
            // Nothing references what was written: remove it rather than leave it to vacuum.
            writer.abandon().await;
            return Err(e);
        }
        for add in &to_rewrite {
            out.files_read
                .insert(file_key(&add.path, add.deletion_vector.as_ref()));
            out.removes.push(Remove::for_add(add, now, true));
        }
        out.adds = writer.finish().await?;
    }
    out.rewrite_ms = rewrite_started.elapsed().as_millis() as u64;
    debug!(
        removed_unread = out.files_removed_unread,
        scanned = out.files_scanned,
        rewritten = to_rewrite.len(),
        skipped = out.files_skipped,
        "rewrite planned and written"
    );
    Ok(out)
}

/// The files among `files` where `has_match` holds for some batch, reading only
/// `columns` (all when empty), two files at a time (each decodes on its own core);
/// in path order.
pub(crate) async fn files_with_match(
    snapshot: &Snapshot,
    files: Vec<Arc<Add>>,
    columns: &[String],
    has_match: impl Fn(&RecordBatch) -> Result<bool>,
) -> Result<Vec<Arc<Add>>> {
    let has_match = &has_match;
    let mut hits: Vec<(Arc<Add>, bool)> = futures::stream::iter(files)
        .map(|add| async move {
            let mut scan = ScanBuilder::new(snapshot.clone()).with_files(vec![add.clone()]);
            if !columns.is_empty() {
                scan = scan.with_columns(columns);
            }
            let mut stream = scan.with_batch_size(64 * 1024).execute()?;
            while let Some(batch) = stream.try_next().await? {
                if has_match(&batch)? {
                    return Ok::<_, Error>((add, true));
                }
            }
            Ok((add, false))
        })
        .buffer_unordered(2)
        .try_collect()
        .await?;
    hits.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    Ok(hits.into_iter().filter(|h| h.1).map(|h| h.0).collect())
}

fn remove_unread(out: &mut Rewrite, add: &Add, now: i64) {
    out.files_removed_unread += 1;
    out.rows_matched += crate::protocol::stats::num_records(add.stats.as_deref())
        .unwrap_or(0)
        .max(0) as u64;
    out.files_read
        .insert(file_key(&add.path, add.deletion_vector.as_ref()));
    out.removes.push(Remove::for_add(add, now, true));
}

/// The batch with each assigned column replaced by its new value where `matched`.
fn apply_assignments(
    batch: &RecordBatch,
    matched: &BooleanArray,
    assignments: &[BoundAssignment],
    snapshot: &Snapshot,
) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for a in assignments {
        let name = &a.column[0];
        let idx = batch
            .schema()
            .index_of(name)
            .map_err(|_| Error::InvalidArgument(format!("UPDATE: unknown column `{name}`")))?;
        let value = evaluate(&a.value, batch)?;
        let value = if value.data_type() != columns[idx].data_type() {
            arrow::compute::cast(&value, columns[idx].data_type())?
        } else {
            value
        };
        let updated = zip(matched, &value, &columns[idx])?;
        let nullable = snapshot
            .schema()
            .field(name)
            .map(|f| f.nullable)
            .unwrap_or(true);
        if !nullable && updated.null_count() > 0 {
            return Err(Error::SchemaMismatch {
                column: name.clone(),
                reason: format!(
                    "UPDATE would write NULL into the non-nullable column (`{name} = {}`)",
                    a.value
                ),
            });
        }
        columns[idx] = updated;
    }
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// Rejects nested assignment targets: only top-level columns can be set for now.
pub(crate) fn check_assignments(assignments: &[BoundAssignment]) -> Result<()> {
    let mut seen = HashSet::new();
    for a in assignments {
        if a.column.len() != 1 {
            return Err(Error::InvalidArgument(format!(
                "UPDATE of a nested field (`{}`) is not supported; set the whole struct column",
                a.column.join(".")
            )));
        }
        if !seen.insert(a.column[0].clone()) {
            return Err(Error::InvalidArgument(format!(
                "column `{}` is assigned more than once",
                a.column[0]
            )));
        }
    }
    Ok(())
}
