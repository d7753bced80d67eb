//! MERGE: upserts and CDC apply (Delta / SQL `MERGE INTO target USING source ON ...`).
//!
//! Execution, built for the streaming-upsert shape (a small source, a large target):
//! 1. The source is built once: its join keys are encoded with arrow-row and hashed.
//! 2. Target files are pruned by partition values and file statistics against the
//!    source keys' range and any target-only conditions of `ON`.
//! 3. Candidate files are read key columns only; files where no row finds a source
//!    key are neither read in full nor rewritten.
//! 4. Files with matches are streamed batch by batch: each target batch is joined with
//!    the source (a null source row where unmatched), the clauses are evaluated in
//!    order with Arrow kernels, and the surviving rows are written, in their order.
//! 5. Source rows that matched nothing go through the NOT MATCHED clauses into new
//!    files of their own (so recent inserts stay together for the next CDC batch).
//!
//! Expressions name columns `target.col` and `source.col`; an unqualified name is
//! resolved to the side that has it (an error when both do).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, RecordBatch, StructArray,
    UInt32Array,
};
use arrow::compute::kernels::zip::zip;
use arrow::compute::{and, cast, concat_batches, filter_record_batch, not, or, take};
use arrow::datatypes::{DataType as ArrowType, Field, Fields, Int64Type, Schema, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use futures::TryStreamExt;
use serde_json::Value;
use tracing::{debug, info};

use crate::error::{Error, Result};
use crate::expr::{
    bind, bind_predicate, evaluate, matching_rows, may_match_file, parse_expression,
    parse_predicate, BinaryOp, BoundExpr, BoundKind, Expr, Scalar,
};
use crate::ops::create::new_table_actions;
use crate::ops::rewrite::files_with_match;
use crate::protocol::features::{check_write, ColumnMapping};
use crate::protocol::{Action, Add, DataType, Metadata, Remove, StructField, StructType, Txn};
use crate::scan::ScanBuilder;
use crate::snapshot::{file_key, Snapshot};
use crate::storage::TableStore;
use crate::transaction::{ReadPredicate, ReadSet, Transaction};
use crate::write::{conform_batch, merge_schemas, DataWriter, SchemaMode, WriterOptions};

/// What to do with a target row that a source row matches.
#[derive(Debug, Clone)]
pub enum MatchedAction {
    /// `UPDATE SET col = expr, ...`; `None`: `UPDATE SET *` (every source column).
    Update(Option<Vec<String>>),
    Delete,
}

/// What to do with a target row that no source row matches.
#[derive(Debug, Clone)]
pub enum BySourceAction {
    /// `UPDATE SET col = expr, ...` (expressions over the target row).
    Update(Vec<String>),
    Delete,
}

/// One `WHEN ...` clause: an optional extra condition and its action.
#[derive(Debug, Clone)]
struct Clause<A> {
    condition: Option<String>,
    action: A,
}

/// The source rows that match no target row are inserted: `INSERT *` (`None`) or
/// `INSERT (cols) VALUES (exprs)` as (column, expression) pairs.
type InsertValues = Option<Vec<(String, String)>>;

/// What a MERGE did.
#[derive(Debug, Clone)]
pub struct MergeResult {
    /// The committed version (the current one when nothing changed).
    pub version: i64,
    pub rows_inserted: u64,
    pub rows_updated: u64,
    pub rows_deleted: u64,
    /// Unchanged target rows copied into rewritten files.
    pub rows_copied: u64,
    pub source_rows: u64,
    pub files_added: usize,
    pub files_removed: usize,
    /// Target files skipped by partition values and statistics.
    pub files_skipped: usize,
    /// Target files whose key columns were read.
    pub files_scanned: usize,
    pub scan_ms: u64,
    pub rewrite_ms: u64,
    /// Nothing changed (or the application transaction was already applied).
    pub unchanged: bool,
    pub already_applied: bool,
    pub snapshot: Snapshot,
}

/// `MERGE INTO table USING source ON condition WHEN ...`.
#[derive(Debug, Clone)]
pub struct MergeBuilder {
    store: TableStore,
    snapshot: Option<Snapshot>,
    source: Vec<RecordBatch>,
    on: String,
    matched: Vec<Clause<MatchedAction>>,
    not_matched: Vec<Clause<InsertValues>>,
    by_source: Vec<Clause<BySourceAction>>,
    dedupe_by: Option<String>,
    schema_mode: SchemaMode,
    app: Option<(String, i64)>,
    options: WriterOptions,
}

impl MergeBuilder {
    /// `on` is the join condition, e.g. `target.id = source.id`.
    pub fn new(store: TableStore, source: Vec<RecordBatch>, on: impl Into<String>) -> Self {
        MergeBuilder {
            store,
            snapshot: None,
            source,
            on: on.into(),
            matched: Vec::new(),
            not_matched: Vec::new(),
            by_source: Vec::new(),
            dedupe_by: None,
            schema_mode: SchemaMode::Enforce,
            app: None,
            options: WriterOptions::default(),
        }
    }

    pub fn with_snapshot(mut self, snapshot: Snapshot) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    /// `WHEN MATCHED [AND condition] THEN UPDATE SET col = expr, ...`.
    pub fn when_matched_update<S: AsRef<str>>(
        mut self,
        condition: Option<&str>,
        assignments: &[S],
    ) -> Self {
        self.matched.push(Clause {
            condition: condition.map(str::to_string),
            action: MatchedAction::Update(Some(
                assignments.iter().map(|a| a.as_ref().to_string()).collect(),
            )),
        });
        self
    }

    /// `WHEN MATCHED [AND condition] THEN UPDATE SET *`.
    pub fn when_matched_update_all(mut self, condition: Option<&str>) -> Self {
        self.matched.push(Clause {
            condition: condition.map(str::to_string),
            action: MatchedAction::Update(None),
        });
        self
    }

    /// `WHEN MATCHED [AND condition] THEN DELETE`.
    pub fn when_matched_delete(mut self, condition: Option<&str>) -> Self {
        self.matched.push(Clause {
            condition: condition.map(str::to_string),
            action: MatchedAction::Delete,
        });
        self
    }

    /// `WHEN NOT MATCHED [AND condition] THEN INSERT (cols) VALUES (exprs)`.
    pub fn when_not_matched_insert<S: AsRef<str>>(
        mut self,
        condition: Option<&str>,
        values: &[(S, S)],
    ) -> Self {
        self.not_matched.push(Clause {
            condition: condition.map(str::to_string),
            action: Some(
                values
                    .iter()
                    .map(|(c, v)| (c.as_ref().to_string(), v.as_ref().to_string()))
                    .collect(),
            ),
        });
        self
    }

    /// `WHEN NOT MATCHED [AND condition] THEN INSERT *`.
    pub fn when_not_matched_insert_all(mut self, condition: Option<&str>) -> Self {
        self.not_matched.push(Clause {
            condition: condition.map(str::to_string),
            action: None,
        });
        self
    }

    /// `WHEN NOT MATCHED BY SOURCE [AND condition] THEN UPDATE SET ...`.
    pub fn when_not_matched_by_source_update<S: AsRef<str>>(
        mut self,
        condition: Option<&str>,
        assignments: &[S],
    ) -> Self {
        self.by_source.push(Clause {
            condition: condition.map(str::to_string),
            action: BySourceAction::Update(
                assignments.iter().map(|a| a.as_ref().to_string()).collect(),
            ),
        });
        self
    }

    /// `WHEN NOT MATCHED BY SOURCE [AND condition] THEN DELETE`.
    pub fn when_not_matched_by_source_delete(mut self, condition: Option<&str>) -> Self {
        self.by_source.push(Clause {
            condition: condition.map(str::to_string),
            action: BySourceAction::Delete,
        });
        self
    }

    /// Keep only the last source row per key, by this ordering column (CDC batches
    /// that carry several changes of one key).
    pub fn with_dedupe_by(mut self, column: impl Into<String>) -> Self {
        self.dedupe_by = Some(column.into());
        self
    }

    /// `SchemaMode::Merge`: source columns missing from the target are added.
    pub fn with_schema_mode(mut self, mode: SchemaMode) -> Self {
        self.schema_mode = mode;
        self
    }

    /// Exactly-once: commit only if `version` is above the last one of `app_id`.
    pub fn with_app_transaction(mut self, app_id: &str, version: i64) -> Self {
        self.app = Some((app_id.to_string(), version));
        self
    }

    pub fn with_writer_options(mut self, options: WriterOptions) -> Self {
        self.options = options;
        self
    }

    /// Runs the operation. A lost race against a concurrent compaction (which rewrote
    /// files this operation rewrites, without changing rows) runs it again on the
    /// latest snapshot, a few times at most; any other conflict is returned.
    pub async fn execute(self) -> Result<MergeResult> {
        crate::ops::rerun_after_compaction(self, |b| b.snapshot = None, Self::execute_once).await
    }

    async fn execute_once(self) -> Result<MergeResult> {
        let started = Instant::now();
        if self.matched.is_empty() && self.not_matched.is_empty() && self.by_source.is_empty() {
            return Err(Error::InvalidArgument(
                "MERGE needs at least one WHEN clause".into(),
            ));
        }
        let snapshot = match &self.snapshot {
            Some(s) => s.clone(),
            None => Snapshot::load(&self.store, None).await?,
        };
        check_write(snapshot.protocol(), snapshot.metadata())?;
        if snapshot.column_mapping() != ColumnMapping::None {
            return Err(Error::UnsupportedFeature {
                kind: "writer",
                feature: "columnMapping".into(),
                action: "MERGE into",
            });
        }
        if let Some((app, v)) = &self.app {
            if snapshot
                .app_transaction_version(app)
                .is_some_and(|last| last >= *v)
            {
                return Ok(MergeResult::nothing(snapshot, true));
            }
        }
        let plan = Plan::new(&self, &snapshot)?;
        let mut stats = MergeResult::nothing(snapshot.clone(), false);
        stats.source_rows = plan.source.num_rows() as u64;
        let outcome = plan.run(&snapshot, &self.options, &mut stats).await?;
        // With an application transaction, even a merge that changes nothing commits
        // (its `txn` alone), so that a replay of the batch is recognised.
        if outcome.removes.is_empty()
            && outcome.adds.is_empty()
            && plan.metadata.is_none()
            && self.app.is_none()
        {
            info!("MERGE changed nothing; nothing committed");
            return Ok(stats);
        }
        let mut actions: Vec<Action> = Vec::new();
        if let Some(m) = &plan.metadata {
            actions.push(Action::Metadata(m.clone()));
        }
        actions.extend(outcome.removes.iter().cloned().map(Action::Remove));
        actions.extend(outcome.adds.iter().cloned().map(Action::Add));
        if let Some((app, v)) = &self.app {
            actions.push(Action::Txn(Txn {
                app_id: app.clone(),
                version: *v,
                last_updated: Some(chrono::Utc::now().timestamp_millis()),
            }));
        }
        let read = ReadSet {
            whole_table: !plan.prunable(),
            files_read: outcome.files_read.clone(),
            files_removed: outcome
                .removes
                .iter()
                .map(|r| file_key(&r.path, r.deletion_vector.as_ref()))
                .collect(),
            app_ids: self.app.iter().map(|(a, _)| a.clone()).collect(),
            changes_metadata: plan.metadata.is_some(),
            predicate: plan.read_predicate.clone().map(|expr| ReadPredicate {
                expr,
                partition_columns: snapshot.partition_columns().to_vec(),
            }),
        };
        let written: Vec<String> = outcome.adds.iter().map(|a| a.path.clone()).collect();
        let txn = Transaction::new(&snapshot, "MERGE")
            .with_read_set(read)
            .with_parameter("predicate", Value::from(self.on.clone()))
            .with_parameter(
                "matchedPredicates",
                serde_json::to_string(&clause_names(&self.matched, |a| match a {
                    MatchedAction::Update(_) => "update",
                    MatchedAction::Delete => "delete",
                }))?,
            )
            .with_parameter(
                "notMatchedPredicates",
                serde_json::to_string(&clause_names(&self.not_matched, |_| "insert"))?,
            )
            .with_parameter(
                "notMatchedBySourcePredicates",
                serde_json::to_string(&clause_names(&self.by_source, |a| match a {
                    BySourceAction::Update(_) => "update",
                    BySourceAction::Delete => "delete",
                }))?,
            )
            .with_metric("numSourceRows", stats.source_rows)
            .with_metric("numTargetRowsInserted", stats.rows_inserted)
            .with_metric("numTargetRowsUpdated", stats.rows_updated)
            .with_metric("numTargetRowsDeleted", stats.rows_deleted)
            .with_metric("numTargetRowsCopied", stats.rows_copied)
            .with_metric("numTargetFilesAdded", outcome.adds.len())
            .with_metric("numTargetFilesRemoved", outcome.removes.len())
            .with_metric("numTargetFilesSkipped", stats.files_skipped)
            .with_metric("numTargetFilesScanned", stats.files_scanned)
            .with_metric("scanTimeMs", stats.scan_ms)
            .with_metric("rewriteTimeMs", stats.rewrite_ms)
            .with_metric("executionTimeMs", started.elapsed().as_millis() as u64)
            .with_actions(actions);
        match txn.commit().await {
            Ok(c) => {
                info!(
                    version = c.version,
                    inserted = stats.rows_inserted,
                    updated = stats.rows_updated,
                    deleted = stats.rows_deleted,
                    files_removed = outcome.removes.len(),
                    files_added = outcome.adds.len(),
                    "MERGE committed"
                );
                stats.version = c.version;
                stats.files_added = outcome.adds.len();
                stats.files_removed = outcome.removes.len();
                stats.unchanged = false;
                stats.snapshot = c.snapshot;
                Ok(stats)
            }
            Err(e) => {
                crate::write::delete_unreferenced(&self.store, &written).await;
                match crate::ops::write::applied_concurrently(&self.store, &e, self.app.as_slice())
                    .await?
                {
                    Some(latest) => Ok(MergeResult::nothing(latest, true)),
                    None => Err(e),
                }
            }
        }
    }
}

fn clause_names<A>(clauses: &[Clause<A>], name: impl Fn(&A) -> &'static str) -> Vec<Value> {
    clauses
        .iter()
        .map(|c| {
            let mut m = serde_json::Map::new();
            m.insert("actionType".into(), Value::from(name(&c.action)));
            if let Some(cond) = &c.condition {
                m.insert("predicate".into(), Value::from(cond.clone()));
            }
            Value::Object(m)
        })
        .collect()
}

impl MergeResult {
    fn nothing(snapshot: Snapshot, already_applied: bool) -> Self {
        MergeResult {
            version: snapshot.version(),
            rows_inserted: 0,
            rows_updated: 0,
            rows_deleted: 0,
            rows_copied: 0,
            source_rows: 0,
            files_added: 0,
            files_removed: 0,
            files_skipped: 0,
            files_scanned: 0,
            scan_ms: 0,
            rewrite_ms: 0,
            unchanged: true,
            already_applied,
            snapshot,
        }
    }
}

// ------------------------------------------------------------------------------------
// Planning: schemas, clause binding, the source hash table
// ------------------------------------------------------------------------------------

/// A bound clause: condition and per-column new values (target column index → value).
struct BoundClause {
    condition: Option<BoundExpr>,
    /// `None`: delete.
    assignments: Option<Vec<(usize, BoundExpr)>>,
}

struct Plan {
    /// The target schema after the merge (evolved in schema mode merge).
    target: StructType,
    target_arrow: SchemaRef,
    /// The target schema with every column nullable: how target rows are read and
    /// joined (rows not yet checked against NOT NULL).
    read_schema: SchemaRef,
    /// Columns of the table before the merge (files are read with these).
    old_columns: usize,
    /// The evolved metadata, when the schema changes.
    metadata: Option<Metadata>,
    /// The binding schema: `target` and `source` structs.
    joined_arrow: SchemaRef,
    source: RecordBatch,
    /// Key columns: (target column index, source key array cast to the target type).
    key_columns: Vec<usize>,
    converter: RowConverter,
    /// Source rows by key: the first row, chained to the next by `next`.
    index: KeyIndex,
    next: Vec<u32>,
    /// Target-only conjuncts of ON (over the joined schema).
    target_filter: Option<BoundExpr>,
    /// Conjuncts of ON that read both sides.
    residual: Option<BoundExpr>,
    /// Over the target table schema: what the target side of the merge reads.
    read_predicate: Option<BoundExpr>,
    matched: Vec<BoundClause>,
    not_matched: Vec<BoundClause>,
    by_source: Vec<BoundClause>,
}

const NO_NEXT: u32 = u32::MAX;

/// Per target row, the first matching source row; then every further (target row,
/// source row) pair.
type Matches = (Vec<Option<u32>>, Vec<(u32, u32)>);

/// The source rows by key.
enum KeyIndex {
    /// One integer key column whose values are dense enough for a bitmap: most target
    /// rows are turned away by one bit test, the others find their row by rank.
    Dense(KeyBitmap),
    /// One integer key column: rows by value.
    Int(HashMap<i64, u32, ahash::RandomState>),
    /// Any other keys: rows by the hash of their row encoding.
    Rows {
        hasher: ahash::RandomState,
        heads: HashMap<u64, u32, ahash::RandomState>,
        /// The source rows' keys, row-encoded.
        keys: Rows,
    },
}

/// The set of integer keys in `min ..= min + len - 1`, one bit each, and the first
/// source row of each key by its rank among the keys.
struct KeyBitmap {
    min: i64,
    len: u64,
    bits: Vec<u64>,
    /// Keys below each word of `bits`.
    ranks: Vec<u32>,
    heads: Vec<u32>,
}

impl KeyBitmap {
    /// The rank of `v` among the keys, when it is one.
    fn rank(&self, v: i64) -> Option<usize> {
        // Below `min` wraps around to a large offset: out of range too.
        let off = (v as u64).wrapping_sub(self.min as u64);
        if off >= self.len {
            return None;
        }
        let (word, bit) = ((off / 64) as usize, off % 64);
        let w = self.bits[word];
        if w >> bit & 1 == 0 {
            return None;
        }
        Some(self.ranks[word] as usize + (w & ((1u64 << bit) - 1)).count_ones() as usize)
    }
}

impl KeyIndex {
    /// The first source row of an integer key (`None` for row-encoded keys).
    fn first_row(&self, v: i64) -> Option<u32> {
        match self {
            KeyIndex::Dense(map) => map.rank(v).map(|r| map.heads[r]),
            KeyIndex::Int(heads) => heads.get(&v).copied(),
            KeyIndex::Rows { .. } => None,
        }
    }

    /// Indexes the `eligible` source rows; returns the index and the chains (`next`
    /// of each row: the following eligible row with an equal key, in source order).
    fn build(
        keys: &[ArrayRef],
        converter: &RowConverter,
        eligible: &[bool],
    ) -> Result<(KeyIndex, Vec<u32>)> {
        let n = eligible.len();
        let mut next = vec![NO_NEXT; n];
        let integer = keys.len() == 1
            && matches!(
                keys[0].data_type(),
                ArrowType::Int8 | ArrowType::Int16 | ArrowType::Int32 | ArrowType::Int64
            );
        if integer {
            let k = cast(&keys[0], &ArrowType::Int64)?;
            let k = k.as_primitive::<Int64Type>();
            let eligible_values = || (0..n).filter(|i| eligible[*i]).map(|i| k.value(i));
            let (lo, hi) = eligible_values()
                .fold(None, |acc: Option<(i64, i64)>, v| match acc {
                    None => Some((v, v)),
                    Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
                })
                .unwrap_or((0, -1));
            // Dense keys (a bitmap of at most 64 bits per source row, and 8 Mi bits
            // allowed whatever the source): the key's rank among the bits set is where
            // its first row is kept; a few MB where a hash map takes tens.
            let span = (hi as i128) - (lo as i128) + 1;
            if span > 0 && span <= (64 * n as i128).max(1 << 23) {
                let len = span as u64;
                let mut bits = vec![0u64; len.div_ceil(64) as usize];
                for v in eligible_values() {
                    let off = (v as u64).wrapping_sub(lo as u64);
                    bits[(off / 64) as usize] |= 1 << (off % 64);
                }
                let mut ranks = Vec::with_capacity(bits.len());
                let mut total = 0u32;
                for w in &bits {
                    ranks.push(total);
                    total += w.count_ones();
                }
                let mut map = KeyBitmap {
                    min: lo,
                    len,
                    bits,
                    ranks,
                    heads: vec![NO_NEXT; total as usize],
                };
                // In reverse, so chains run in source order.
                for i in (0..n).rev() {
                    if !eligible[i] {
                        continue;
                    }
                    if let Some(r) = map.rank(k.value(i)) {
                        let head = &mut map.heads[r];
                        if *head != NO_NEXT {
                            next[i] = *head;
                        }
                        *head = i as u32;
                    }
                }
                return Ok((KeyIndex::Dense(map), next));
            }
            let mut heads: HashMap<i64, u32, ahash::RandomState> =
                HashMap::with_capacity_and_hasher(n, ahash::RandomState::new());
            for i in (0..n).rev() {
                if !eligible[i] {
                    continue;
                }
                if let Some(prev) = heads.insert(k.value(i), i as u32) {
                    next[i] = prev;
                }
            }
            return Ok((KeyIndex::Int(heads), next));
        }
        let rows = converter.convert_columns(keys)?;
        let hasher = ahash::RandomState::new();
        let mut heads: HashMap<u64, u32, ahash::RandomState> =
            HashMap::with_capacity_and_hasher(n, ahash::RandomState::new());
        for i in (0..n).rev() {
            if !eligible[i] {
                continue;
            }
            let h = hasher.hash_one(rows.row(i).data());
            if let Some(prev) = heads.insert(h, i as u32) {
                next[i] = prev;
            }
        }
        Ok((
            KeyIndex::Rows {
                hasher,
                heads,
                keys: rows,
            },
            next,
        ))
    }
}

impl Plan {
    fn new(b: &MergeBuilder, snapshot: &Snapshot) -> Result<Plan> {
        // The source, conformed to its own Delta schema.
        let source = if b.source.is_empty() {
            return Err(Error::InvalidArgument(
                "MERGE needs a source (an empty batch gives its schema)".into(),
            ));
        } else if b.source.len() == 1 {
            b.source[0].clone()
        } else {
            let schema = b.source[0].schema();
            concat_batches(&schema, &b.source)?
        };
        let source_struct = StructType::from_arrow(&source.schema())?;
        let source_arrow = Arc::new(source_struct.to_arrow()?);
        let mut source = conform_batch(&source, &source_struct, &source_arrow)?;

        // The target schema, evolved when asked.
        let old = snapshot.schema().clone();
        let (target, metadata) = match b.schema_mode {
            SchemaMode::Merge => {
                let merged = merge_schemas(&old, &source_struct)?;
                if merged != old {
                    let (_, fresh) = new_table_actions(
                        &merged,
                        snapshot.partition_columns(),
                        &HashMap::new(),
                        None,
                        None,
                    )?;
                    let m = Metadata {
                        schema_string: fresh.schema_string,
                        ..snapshot.metadata().clone()
                    };
                    (merged, Some(m))
                } else {
                    (old.clone(), None)
                }
            }
            SchemaMode::Enforce => (old.clone(), None),
            SchemaMode::Overwrite => {
                return Err(Error::InvalidArgument(
                    "MERGE supports schema modes enforce and merge".into(),
                ))
            }
        };
        let target_arrow = Arc::new(target.to_arrow()?);
        let joined = joined_schema(&target, &source_struct);
        let joined_arrow = Arc::new(joined.to_arrow()?);
        let target_names: Vec<&str> = target.fields.iter().map(|f| f.name.as_str()).collect();
        let source_names: Vec<&str> = source_struct
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        let qualify = |e: &Expr| qualify(e, &target_names, &source_names);

        // ON: key equalities, target-only and source-only filters, the rest.
        let on = qualify(&parse_predicate(&b.on)?)?;
        let mut keys: Vec<(String, String)> = Vec::new();
        let mut target_only: Vec<Expr> = Vec::new();
        let mut source_only: Vec<Expr> = Vec::new();
        let mut mixed: Vec<Expr> = Vec::new();
        for c in conjuncts(on) {
            match key_pair(&c) {
                Some(pair) => keys.push(pair),
                None => match sides(&c) {
                    (true, false) => target_only.push(c),
                    (false, true) => source_only.push(c),
                    _ => mixed.push(c),
                },
            }
        }
        if keys.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "MERGE needs at least one `target.col = source.col` equality in ON (got `{}`)",
                b.on
            )));
        }
        let bind_joined = |exprs: Vec<Expr>| -> Result<Option<BoundExpr>> {
            if exprs.is_empty() {
                return Ok(None);
            }
            Ok(Some(bind_predicate(&Expr::and_all(exprs), &joined)?))
        };
        let read_predicate_target = target_only.clone();
        let target_filter = bind_joined(target_only)?;
        let source_filter = bind_joined(source_only)?;
        let residual = bind_joined(mixed)?;

        // Optional dedupe of the source: the last row per key by the ordering column.
        let key_columns: Vec<usize> = keys
            .iter()
            .map(|(t, _)| {
                target.index_of(t).ok_or_else(|| {
                    Error::InvalidArgument(format!("MERGE key `{t}` is not a target column"))
                })
            })
            .collect::<Result<_>>()?;
        let source_key_arrays = |batch: &RecordBatch| -> Result<Vec<ArrayRef>> {
            keys.iter()
                .zip(&key_columns)
                .map(|((_, s), ti)| {
                    let a = batch.column_by_name(s).ok_or_else(|| {
                        Error::InvalidArgument(format!("MERGE key `{s}` is not a source column"))
                    })?;
                    Ok(cast(a, target_arrow.field(*ti).data_type())?)
                })
                .collect()
        };
        let converter = RowConverter::new(
            key_columns
                .iter()
                .map(|i| SortField::new(target_arrow.field(*i).data_type().clone()))
                .collect(),
        )?;
        if let Some(order) = &b.dedupe_by {
            source = dedupe_last(&source, &converter, &source_key_arrays(&source)?, order)?;
        }
        let key_arrays = source_key_arrays(&source)?;

        // Rows that can match: non-null keys passing the source-only filter.
        let mut eligible = vec![true; source.num_rows()];
        for a in &key_arrays {
            if let Some(n) = a.logical_nulls() {
                for (i, e) in eligible.iter_mut().enumerate() {
                    *e &= n.is_valid(i);
                }
            }
        }
        if let Some(f) = &source_filter {
            let only_source = half_joined(&joined_arrow, &source, false)?;
            let m = matching_rows(f, &only_source)?;
            for (i, e) in eligible.iter_mut().enumerate() {
                *e &= m.value(i);
            }
        }
        let (index, next) = KeyIndex::build(&key_arrays, &converter, &eligible)?;

        // The target-side read predicate: key ranges plus target-only conditions.
        let mut read_exprs: Vec<Expr> = Vec::new();
        for ((t, _), arr) in keys.iter().zip(&key_arrays) {
            let dt = &target.fields[target.index_of(t).unwrap_or(0)].data_type;
            if let Some((lo, hi)) = key_range(arr, &eligible, dt) {
                let col = Expr::Column(vec![t.clone()]);
                read_exprs.push(col.clone().binary(BinaryOp::GtEq, Expr::lit(lo)));
                read_exprs.push(col.binary(BinaryOp::LtEq, Expr::lit(hi)));
            }
        }
        for e in read_predicate_target {
            read_exprs.push(unqualify(&e));
        }
        let read_predicate = if read_exprs.is_empty() {
            None
        } else {
            Some(bind_predicate(&Expr::and_all(read_exprs), &old)?)
        };

        // Clauses.
        let bind_cond = |c: &Option<String>| -> Result<Option<BoundExpr>> {
            match c {
                None => Ok(None),
                Some(text) => Ok(Some(bind_predicate(
                    &qualify(&parse_predicate(text)?)?,
                    &joined,
                )?)),
            }
        };
        let bind_assignments = |list: &[(String, String)]| -> Result<Vec<(usize, BoundExpr)>> {
            let mut out = Vec::new();
            for (col, text) in list {
                let idx = target.index_of(col).ok_or_else(|| Error::UnknownColumn {
                    column: col.clone(),
                    suggestion: None,
                })?;
                if out.iter().any(|(i, _)| *i == idx) {
                    return Err(Error::InvalidArgument(format!(
                        "column `{col}` is assigned more than once"
                    )));
                }
                let value = bind(&qualify(&parse_expression(text)?)?, &joined)?;
                out.push((idx, cast_to(value, &target.fields[idx].data_type)));
            }
            Ok(out)
        };
        let star = |insert: bool| -> Result<Vec<(String, String)>> {
            let mut out = Vec::new();
            for f in &target.fields {
                if let Some(s) = source_struct.fields.iter().find(|s| s.name == f.name) {
                    out.push((f.name.clone(), format!("source.`{}`", s.name)));
                } else if insert {
                    if !f.nullable {
                        return Err(Error::SchemaMismatch {
                            column: f.name.clone(),
                            reason:
                                "INSERT * needs a source column for this non-nullable target column"
                                    .into(),
                        });
                    }
                    out.push((f.name.clone(), "NULL".into()));
                }
            }
            Ok(out)
        };
        let parse_set = |list: &[String]| -> Result<Vec<(String, String)>> {
            list.iter()
                .map(|a| {
                    let (c, v) = a.split_once('=').ok_or_else(|| {
                        Error::InvalidExpression(format!(
                            "expected `column = expression`, got `{a}`"
                        ))
                    })?;
                    let c = c.trim().trim_matches('`').trim_matches('"');
                    let c = c
                        .strip_prefix("target.")
                        .unwrap_or(c)
                        .trim_matches('`')
                        .to_string();
                    Ok((c, v.trim().to_string()))
                })
                .collect()
        };
        let matched = b
            .matched
            .iter()
            .map(|c| {
                Ok(BoundClause {
                    condition: bind_cond(&c.condition)?,
                    assignments: match &c.action {
                        MatchedAction::Delete => None,
                        MatchedAction::Update(None) => Some(bind_assignments(&star(false)?)?),
                        MatchedAction::Update(Some(list)) => {
                            Some(bind_assignments(&parse_set(list)?)?)
                        }
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let not_matched = b
            .not_matched
            .iter()
            .map(|c| {
                let values = match &c.action {
                    None => star(true)?,
                    Some(v) => {
                        let mut all = v.clone();
                        for f in &target.fields {
                            if !all.iter().any(|(c, _)| c == &f.name) {
                                all.push((f.name.clone(), "NULL".into()));
                            }
                        }
                        all
                    }
                };
                Ok(BoundClause {
                    condition: bind_cond(&c.condition)?,
                    assignments: Some(bind_assignments(&values)?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let by_source = b
            .by_source
            .iter()
            .map(|c| {
                Ok(BoundClause {
                    condition: bind_cond(&c.condition)?,
                    assignments: match &c.action {
                        BySourceAction::Delete => None,
                        BySourceAction::Update(list) => Some(bind_assignments(&parse_set(list)?)?),
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let read_schema = Arc::new(Schema::new(
            target_arrow
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<Field>>(),
        ));
        Ok(Plan {
            read_schema,
            old_columns: old.fields.len(),
            target,
            target_arrow,
            metadata,
            joined_arrow,
            source,
            key_columns,
            converter,
            index,
            next,
            target_filter,
            residual,
            read_predicate,
            matched,
            not_matched,
            by_source,
        })
    }

    /// The source rows whose key equals each row's of `keys` (the target's key
    /// columns), skipping rows with a NULL key or where `filter` is not TRUE: the first
    /// match of every row, and the further (target row, source row) pairs in source
    /// order.
    fn match_rows(&self, keys: &[ArrayRef], filter: Option<&BooleanArray>) -> Result<Matches> {
        let n = keys.first().map(|k| k.len()).unwrap_or(0);
        let mut first: Vec<Option<u32>> = vec![None; n];
        let mut multi: Vec<(u32, u32)> = Vec::new();
        let skip = |i: usize| filter.is_some_and(|f| !f.is_valid(i) || !f.value(i));
        match &self.index {
            KeyIndex::Dense(_) | KeyIndex::Int(_) => {
                let k = cast(&keys[0], &ArrowType::Int64)?;
                let k = k.as_primitive::<Int64Type>();
                let nulls = k.nulls();
                for ((i, slot), &v) in first.iter_mut().enumerate().zip(k.values().iter()) {
                    // Most rows stop here: test the key first.
                    let Some(h) = self.index.first_row(v) else {
                        continue;
                    };
                    if nulls.is_some_and(|n| n.is_null(i)) || skip(i) {
                        continue;
                    }
                    *slot = Some(h);
                    let mut at = self.next[h as usize];
                    while at != NO_NEXT {
                        multi.push((i as u32, at));
                        at = self.next[at as usize];
                    }
                }
            }
            KeyIndex::Rows {
                hasher,
                heads,
                keys: source_keys,
            } => {
                let rows = self.converter.convert_columns(keys)?;
                for (i, slot) in first.iter_mut().enumerate() {
                    if keys.iter().any(|k| k.is_null(i)) || skip(i) {
                        continue;
                    }
                    let key = rows.row(i).data();
                    let mut at = heads.get(&hasher.hash_one(key)).copied().unwrap_or(NO_NEXT);
                    // Rows with the same hash: equal keys, or a collision told apart by
                    // the key bytes.
                    while at != NO_NEXT {
                        if source_keys.row(at as usize).data() == key {
                            match slot {
                                None => *slot = Some(at),
                                Some(_) => multi.push((i as u32, at)),
                            }
                        }
                        at = self.next[at as usize];
                    }
                }
            }
        }
        Ok((first, multi))
    }

    /// Can files be skipped at all? Not when NOT MATCHED BY SOURCE clauses apply to
    /// every target row.
    fn prunable(&self) -> bool {
        self.by_source.is_empty()
    }
}

/// `target` and `source` as nullable struct columns of one schema.
fn joined_schema(target: &StructType, source: &StructType) -> StructType {
    let nullable = |s: &StructType| {
        StructType::new(
            s.fields
                .iter()
                .map(|f| StructField {
                    nullable: true,
                    ..f.clone()
                })
                .collect(),
        )
    };
    StructType::new(vec![
        StructField::new("target", DataType::Struct(Box::new(nullable(target))), true),
        StructField::new("source", DataType::Struct(Box::new(nullable(source))), true),
    ])
}

/// A value converted (strictly) to a column's type.
fn cast_to(value: BoundExpr, data_type: &DataType) -> BoundExpr {
    if &value.data_type == data_type {
        return value;
    }
    BoundExpr {
        kind: BoundKind::Cast {
            expr: Box::new(value),
            strict: true,
        },
        data_type: data_type.clone(),
    }
}

/// Prefixes unqualified column names with the side that has them.
fn qualify(e: &Expr, target: &[&str], source: &[&str]) -> Result<Expr> {
    e.try_map_columns(&mut |path: &[String]| {
        let first = path[0].to_ascii_lowercase();
        if (first == "target" || first == "source") && path.len() > 1 {
            let mut p = path.to_vec();
            p[0] = first;
            return Ok(p);
        }
        let in_t = target.iter().any(|c| c.eq_ignore_ascii_case(&path[0]));
        let in_s = source.iter().any(|c| c.eq_ignore_ascii_case(&path[0]));
        let side = match (in_t, in_s) {
            (true, true) => {
                return Err(Error::InvalidExpression(format!(
                    "column `{}` is ambiguous: both target and source have it; write target.{0} or source.{0}",
                    path.join(".")
                )))
            }
            (true, false) => "target",
            (false, true) => "source",
            (false, false) => {
                return Err(Error::UnknownColumn {
                    column: path.join("."),
                    suggestion: None,
                })
            }
        };
        let mut p = vec![side.to_string()];
        p.extend(path.iter().cloned());
        Ok(p)
    })
}

/// Strips the `target.` prefix of a target-only expression.
fn unqualify(e: &Expr) -> Expr {
    e.try_map_columns(&mut |p: &[String]| Ok::<_, std::convert::Infallible>(p[1..].to_vec()))
        .unwrap_or_else(|never| match never {})
}

fn conjuncts(e: Expr) -> Vec<Expr> {
    match e {
        Expr::Binary {
            op: BinaryOp::And,
            left,
            right,
        } => {
            let mut v = conjuncts(*left);
            v.extend(conjuncts(*right));
            v
        }
        other => vec![other],
    }
}

/// `target.a = source.b` (either order) as (a, b).
fn key_pair(e: &Expr) -> Option<(String, String)> {
    let Expr::Binary {
        op: BinaryOp::Eq,
        left,
        right,
    } = e
    else {
        return None;
    };
    match (left.as_ref(), right.as_ref()) {
        (Expr::Column(l), Expr::Column(r)) if l.len() == 2 && r.len() == 2 => {
            match (l[0].as_str(), r[0].as_str()) {
                ("target", "source") => Some((l[1].clone(), r[1].clone())),
                ("source", "target") => Some((r[1].clone(), l[1].clone())),
                _ => None,
            }
        }
        _ => None,
    }
}

/// (reads target, reads source).
fn sides(e: &Expr) -> (bool, bool) {
    let columns = e.columns();
    (
        columns.iter().any(|p| p[0] == "target"),
        columns.iter().any(|p| p[0] != "target"),
    )
}

/// The smallest and largest eligible key values, as literals of the column type.
fn key_range(array: &ArrayRef, eligible: &[bool], dt: &DataType) -> Option<(Scalar, Scalar)> {
    use arrow::datatypes::{Date32Type, Int16Type, Int32Type, Int64Type, Int8Type};
    let mask = BooleanArray::from(eligible.to_vec());
    let values = arrow::compute::filter(array, &mask).ok()?;
    if values.len() == values.null_count() {
        return None;
    }
    macro_rules! int_range {
        ($t:ty, $variant:ident) => {{
            let a = values.as_primitive::<$t>();
            let lo = arrow::compute::min(a)?;
            let hi = arrow::compute::max(a)?;
            Some((Scalar::$variant(lo), Scalar::$variant(hi)))
        }};
    }
    match dt {
        DataType::Byte => int_range!(Int8Type, Byte),
        DataType::Short => int_range!(Int16Type, Short),
        DataType::Integer => int_range!(Int32Type, Integer),
        DataType::Long => int_range!(Int64Type, Long),
        DataType::Date => int_range!(Date32Type, Date),
        DataType::String => {
            let a = values.as_string_opt::<i32>()?;
            let lo = arrow::compute::min_string(a)?;
            let hi = arrow::compute::max_string(a)?;
            Some((
                Scalar::String(lo.to_string()),
                Scalar::String(hi.to_string()),
            ))
        }
        DataType::Timestamp | DataType::TimestampNtz => {
            let a = cast(&values, &arrow::datatypes::DataType::Int64).ok()?;
            let a = a.as_primitive::<Int64Type>();
            let lo = arrow::compute::min(a)?;
            let hi = arrow::compute::max(a)?;
            Some(if *dt == DataType::Timestamp {
                (Scalar::Timestamp(lo), Scalar::Timestamp(hi))
            } else {
                (Scalar::TimestampNtz(lo), Scalar::TimestampNtz(hi))
            })
        }
        _ => None,
    }
}

/// Keeps, per key, the source row with the largest `order` value (the last change).
fn dedupe_last(
    source: &RecordBatch,
    converter: &RowConverter,
    keys: &[ArrayRef],
    order: &str,
) -> Result<RecordBatch> {
    let order_col = source
        .column_by_name(order)
        .ok_or_else(|| Error::UnknownColumn {
            column: order.to_string(),
            suggestion: None,
        })?;
    let order_conv = RowConverter::new(vec![SortField::new(order_col.data_type().clone())])?;
    let order_rows = order_conv.convert_columns(std::slice::from_ref(order_col))?;
    let key_rows = converter.convert_columns(keys)?;
    let mut best: HashMap<&[u8], usize, ahash::RandomState> =
        HashMap::with_capacity_and_hasher(source.num_rows(), ahash::RandomState::new());
    let mut keep_null_keys = Vec::new();
    for i in 0..source.num_rows() {
        if keys.iter().any(|k| k.is_null(i)) {
            keep_null_keys.push(i);
            continue;
        }
        let k = key_rows.row(i);
        match best.get_mut(k.data()) {
            Some(b) => {
                // Later rows win ties: "the last" change.
                if order_rows.row(i) >= order_rows.row(*b) {
                    *b = i;
                }
            }
            None => {
                best.insert(k.data(), i);
            }
        }
    }
    let mut indices: Vec<u32> = best
        .values()
        .map(|i| *i as u32)
        .chain(keep_null_keys.into_iter().map(|i| i as u32))
        .collect();
    indices.sort_unstable();
    Ok(arrow::compute::take_record_batch(
        source,
        &UInt32Array::from(indices),
    )?)
}

/// A joined batch: the target rows and, per row, the source row at `source_rows`
/// (a null source where the index is null).
fn join_batches(
    joined: &SchemaRef,
    target: &RecordBatch,
    source: &RecordBatch,
    source_rows: &UInt32Array,
) -> Result<RecordBatch> {
    let (tf, sf) = struct_fields(joined)?;
    let t = StructArray::try_new(tf, target.columns().to_vec(), None)?;
    let s_cols: Vec<ArrayRef> = source
        .columns()
        .iter()
        .map(|c| take(c, source_rows, None))
        .collect::<std::result::Result<_, _>>()?;
    let s = StructArray::try_new(sf, s_cols, source_rows.nulls().cloned())?;
    Ok(RecordBatch::try_new_with_options(
        joined.clone(),
        vec![Arc::new(t), Arc::new(s)],
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(target.num_rows())),
    )?)
}

/// A joined batch with one side only (`target_side`: the rows are target rows); the
/// other side is a null struct.
fn half_joined(joined: &SchemaRef, rows: &RecordBatch, target_side: bool) -> Result<RecordBatch> {
    let (tf, sf) = struct_fields(joined)?;
    let n = rows.num_rows();
    let (present, absent) = if target_side { (tf, sf) } else { (sf, tf) };
    let present: ArrayRef = Arc::new(StructArray::try_new(
        present,
        rows.columns().to_vec(),
        None,
    )?);
    let absent: ArrayRef = Arc::new(StructArray::new_null(absent, n));
    let columns = if target_side {
        vec![present, absent]
    } else {
        vec![absent, present]
    };
    Ok(RecordBatch::try_new_with_options(
        joined.clone(),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
    )?)
}

fn struct_fields(joined: &SchemaRef) -> Result<(Fields, Fields)> {
    let get = |i: usize| match joined.field(i).data_type() {
        arrow::datatypes::DataType::Struct(f) => Ok(f.clone()),
        _ => Err(Error::InvalidArgument("internal: joined schema".into())),
    };
    Ok((get(0)?, get(1)?))
}

// ------------------------------------------------------------------------------------
// Execution
// ------------------------------------------------------------------------------------

/// What merging one target batch gives.
#[derive(Default)]
struct MergedBatch {
    /// The rows to write.
    batches: Vec<RecordBatch>,
    /// Source rows that matched a row of the batch.
    source_rows: Vec<u32>,
    rows_updated: u64,
    rows_deleted: u64,
    rows_copied: u64,
}

#[derive(Default)]
struct Outcome {
    adds: Vec<Add>,
    removes: Vec<Remove>,
    files_read: std::collections::HashSet<String>,
}

impl Plan {
    async fn run(
        &self,
        snapshot: &Snapshot,
        options: &WriterOptions,
        stats: &mut MergeResult,
    ) -> Result<Outcome> {
        let scan_started = Instant::now();
        let mut out = Outcome::default();
        let partition_columns = snapshot.partition_columns().to_vec();

        // 1. Prune target files by partition values and statistics.
        let mut candidates: Vec<Arc<Add>> = Vec::new();
        for add in snapshot.files() {
            let keep = !self.prunable()
                || self
                    .read_predicate
                    .as_ref()
                    .is_none_or(|p| may_match_file(p, &add, &partition_columns));
            if keep {
                candidates.push(add);
            } else {
                stats.files_skipped += 1;
            }
        }
        if self.source.num_rows() == 0 && self.prunable() {
            candidates.clear();
        }

        // 2. Key columns first: which candidates have a matching row?
        let to_rewrite: Vec<Arc<Add>> = if !self.prunable() {
            candidates
        } else {
            let key_names: Vec<String> = self
                .key_columns
                .iter()
                .map(|i| self.target.fields[*i].name.clone())
                .chain(
                    self.target_filter
                        .iter()
                        .flat_map(|f| f.columns())
                        .map(|p| p[1].clone()),
                )
                .fold(Vec::new(), |mut acc, n| {
                    if !acc.contains(&n) {
                        acc.push(n);
                    }
                    acc
                });
            stats.files_scanned = candidates.len();
            for add in &candidates {
                out.files_read
                    .insert(file_key(&add.path, add.deletion_vector.as_ref()));
            }
            files_with_match(snapshot, candidates, &key_names, |batch| {
                self.batch_has_match(batch)
            })
            .await?
        };
        stats.scan_ms = scan_started.elapsed().as_millis() as u64;

        // 3. Rewrite the files with matches; collect which source rows matched.
        let rewrite_started = Instant::now();
        let mut source_matched = BooleanBufferBuilder::new(self.source.num_rows());
        source_matched.append_n(self.source.num_rows(), false);
        if !to_rewrite.is_empty() {
            let mut writer = self.writer(snapshot, options)?;
            let now = chrono::Utc::now().timestamp_millis();
            // One scan over every file to rewrite: files decode two at a time.
            let rewritten = async {
                let mut stream = ScanBuilder::new(snapshot.clone())
                    .with_files(to_rewrite.clone())
                    .with_batch_size(64 * 1024)
                    .with_light_read_ahead()
                    .execute()?;
                while let Some(batch) = stream.try_next().await? {
                    let batch = self.evolve(&batch)?;
                    let merged = self.merge_batch(&batch)?;
                    for s in &merged.source_rows {
                        source_matched.set_bit(*s as usize, true);
                    }
                    stats.rows_updated += merged.rows_updated;
                    stats.rows_deleted += merged.rows_deleted;
                    stats.rows_copied += merged.rows_copied;
                    for b in &merged.batches {
                        if b.num_rows() > 0 {
                            writer.write(b).await?;
                        }
                    }
                }
                Ok::<_, Error>(())
            }
            .await;
            if let Err(e) = rewritten {
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

        // 4. Inserts from the source rows nothing matched, in files of their own,
        // a slice of the source at a time.
        if !self.not_matched.is_empty() && self.source.num_rows() > 0 {
            let matched = BooleanArray::new(source_matched.finish(), None);
            let mut writer: Option<DataWriter> = None;
            let inserted = async {
                let mut at = 0;
                while at < self.source.num_rows() {
                    let len = (self.source.num_rows() - at).min(64 * 1024);
                    let unmatched = not(&matched.slice(at, len))?;
                    at += len;
                    let rows = filter_record_batch(&self.source.slice(at - len, len), &unmatched)?;
                    if rows.num_rows() == 0 {
                        continue;
                    }
                    let joined = half_joined(&self.joined_arrow, &rows, false)?;
                    let nulls: Vec<ArrayRef> = self
                        .target_arrow
                        .fields()
                        .iter()
                        .map(|f| arrow::array::new_null_array(f.data_type(), rows.num_rows()))
                        .collect();
                    let everyone = BooleanArray::from(vec![true; rows.num_rows()]);
                    let (columns, chosen, _) =
                        apply_clauses(&self.not_matched, &joined, &everyone, nulls)?;
                    let batch = self.target_batch(columns, &chosen)?;
                    stats.rows_inserted += batch.num_rows() as u64;
                    if batch.num_rows() > 0 {
                        let w = match &mut writer {
                            Some(w) => w,
                            None => writer.insert(self.writer(snapshot, options)?),
                        };
                        w.write(&batch).await?;
                    }
                }
                Ok::<_, Error>(())
            }
            .await;
            let finished = match (inserted, writer) {
                (Ok(()), Some(w)) => w.finish().await.map(|adds| out.adds.extend(adds)),
                (Ok(()), None) => Ok(()),
                (Err(e), w) => {
                    if let Some(w) = w {
                        w.abandon().await;
                    }
                    Err(e)
                }
            };
            if let Err(e) = finished {
                let paths: Vec<String> = out.adds.iter().map(|a| a.path.clone()).collect();
                crate::write::delete_unreferenced(snapshot.store(), &paths).await;
                return Err(e);
            }
        }
        stats.rewrite_ms = rewrite_started.elapsed().as_millis() as u64;
        debug!(
            rewritten = out.removes.len(),
            added = out.adds.len(),
            "MERGE files"
        );
        Ok(out)
    }

    /// A writer of the (possibly evolved) target schema with the table's settings.
    fn writer(&self, snapshot: &Snapshot, options: &WriterOptions) -> Result<DataWriter> {
        DataWriter::new(
            snapshot.store().clone(),
            &self.target,
            &self.target_arrow,
            snapshot.partition_columns(),
            options.clone().for_table(snapshot.metadata()),
        )
    }

    /// Whether some row of a key-columns batch finds a source key (and passes the
    /// target-only ON conditions).
    fn batch_has_match(&self, batch: &RecordBatch) -> Result<bool> {
        let keys: Vec<ArrayRef> = self
            .key_columns
            .iter()
            .map(|i| {
                batch
                    .column_by_name(&self.target.fields[*i].name)
                    .cloned()
                    .ok_or_else(|| Error::InvalidArgument("internal: key column".into()))
            })
            .collect::<Result<_>>()?;
        let filter = match &self.target_filter {
            Some(f) => Some(matching_rows(f, &self.partial_target_batch(batch)?)?),
            None => None,
        };
        let (first, multi) = self.match_rows(&keys, filter.as_ref())?;
        // Without a residual condition, a second source row for a key is a duplicate
        // match: refuse before anything is written.
        if self.residual.is_none() {
            if let Some((t, _)) = multi.first() {
                return Err(duplicate_match(
                    batch,
                    &key_positions(self, batch),
                    *t as usize,
                ));
            }
        }
        Ok(first.iter().any(Option::is_some))
    }

    /// A joined batch from some target columns (others null, source null).
    fn partial_target_batch(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let full: Vec<ArrayRef> = self
            .read_schema
            .fields()
            .iter()
            .map(|f| {
                batch
                    .column_by_name(f.name())
                    .cloned()
                    .unwrap_or_else(|| arrow::array::new_null_array(f.data_type(), n))
            })
            .collect();
        half_joined(&self.joined_arrow, &self.target_rows(full, n)?, true)
    }

    /// A target batch read with the old schema, extended with null columns the merge
    /// added.
    fn evolve(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let mut cols = batch.columns().to_vec();
        for f in self.read_schema.fields().iter().skip(self.old_columns) {
            cols.push(arrow::array::new_null_array(f.data_type(), n));
        }
        self.target_rows(cols, n)
    }

    /// Target columns as a batch of the (nullable) read schema.
    fn target_rows(&self, columns: Vec<ArrayRef>, n: usize) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new_with_options(
            self.read_schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
        )?)
    }

    /// Merges one target batch: the rows to write, the source rows that matched and
    /// the row counts.
    fn merge_batch(&self, batch: &RecordBatch) -> Result<MergedBatch> {
        let mut merged = MergedBatch::default();
        let n = batch.num_rows();
        let keys: Vec<ArrayRef> = self
            .key_columns
            .iter()
            .map(|i| batch.column(*i).clone())
            .collect();
        let filter = match &self.target_filter {
            Some(f) => {
                let j = half_joined(&self.joined_arrow, batch, true)?;
                Some(matching_rows(f, &j)?)
            }
            None => None,
        };
        // Candidate pairs: the first source row of the key, and the rest.
        let (first, multi) = self.match_rows(&keys, filter.as_ref())?;
        let mut source_idx = UInt32Array::from(first);
        // With the residual condition, a pair only matches when it holds.
        if let Some(res) = &self.residual {
            let j = join_batches(&self.joined_arrow, batch, &self.source, &source_idx)?;
            let ok = matching_rows(res, &j)?;
            let mut v: Vec<Option<u32>> = source_idx.iter().collect();
            // Rows whose first candidate fails may still match a later one.
            let mut extra: Vec<(u32, u32)> = Vec::new();
            for (i, slot) in v.iter_mut().enumerate() {
                if slot.is_some() && !ok.value(i) {
                    *slot = None;
                }
            }
            if !multi.is_empty() {
                let t_idx = UInt32Array::from(multi.iter().map(|p| p.0).collect::<Vec<_>>());
                let s_idx = UInt32Array::from(multi.iter().map(|p| p.1).collect::<Vec<_>>());
                let t = arrow::compute::take_record_batch(batch, &t_idx)?;
                let jm = join_batches(&self.joined_arrow, &t, &self.source, &s_idx)?;
                let okm = matching_rows(res, &jm)?;
                for (k, p) in multi.iter().enumerate() {
                    if okm.value(k) {
                        extra.push(*p);
                    }
                }
            }
            for (t, s) in extra {
                match v[t as usize] {
                    None => v[t as usize] = Some(s),
                    Some(_) => {
                        return Err(duplicate_match(
                            batch,
                            &key_positions(self, batch),
                            t as usize,
                        ))
                    }
                }
            }
            source_idx = UInt32Array::from(v);
        } else if let Some((t, _)) = multi.first() {
            return Err(duplicate_match(
                batch,
                &key_positions(self, batch),
                *t as usize,
            ));
        }
        let matched = arrow::compute::is_not_null(&source_idx)?;
        let n_matched = matched.true_count();
        merged.source_rows = source_idx.iter().flatten().collect();
        let unmatched = not(&matched)?;
        if n_matched == 0 && self.by_source.is_empty() {
            merged.rows_copied += n as u64;
            merged.batches.push(RecordBatch::try_new(
                self.target_arrow.clone(),
                batch.columns().to_vec(),
            )?);
            return Ok(merged);
        }
        if self.by_source.is_empty() && n_matched * 2 < n {
            self.merge_matched_rows(batch, &source_idx, &unmatched, n_matched, &mut merged)?;
            return Ok(merged);
        }
        let joined = join_batches(&self.joined_arrow, batch, &self.source, &source_idx)?;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let mut keep = BooleanArray::from(vec![true; n]);
        let mut changed = BooleanArray::from(vec![false; n]);
        for (clauses, rows_mask) in [(&self.matched, &matched), (&self.by_source, &unmatched)] {
            if clauses.is_empty() {
                continue;
            }
            let (new_cols, chosen, deleted) = apply_clauses(clauses, &joined, rows_mask, columns)?;
            columns = new_cols;
            let upd = and(&chosen, &not(&deleted)?)?;
            let n_upd = upd.true_count() as u64;
            let n_del = deleted.true_count() as u64;
            merged.rows_updated += n_upd;
            merged.rows_deleted += n_del;
            keep = and(&keep, &not(&deleted)?)?;
            changed = or(&changed, &chosen)?;
        }
        merged.rows_copied += (n - changed.true_count()) as u64;
        let rows = self.target_batch(columns, &keep)?;
        merged.batches.push(rows);
        Ok(merged)
    }

    /// [`Plan::merge_batch`] for a batch where few rows matched and no NOT MATCHED
    /// BY SOURCE clause applies: the clauses run on the matched rows alone (no source
    /// columns taken for the others). The unmatched rows are written as they are (a
    /// filter: runs of rows copied whole), then the matched ones with their new values,
    /// deleted rows left out. Rows stay in the file their batch goes to; a table has no
    /// row order within a file to keep.
    fn merge_matched_rows(
        &self,
        batch: &RecordBatch,
        source_idx: &UInt32Array,
        unmatched: &BooleanArray,
        n_matched: usize,
        merged: &mut MergedBatch,
    ) -> Result<()> {
        let n = batch.num_rows();
        let mut target_rows = Vec::with_capacity(n_matched);
        let mut source_rows = Vec::with_capacity(n_matched);
        for (i, s) in source_idx.iter().enumerate() {
            if let Some(s) = s {
                target_rows.push(i as u32);
                source_rows.push(s);
            }
        }
        let targets = arrow::compute::take_record_batch(batch, &UInt32Array::from(target_rows))?;
        let joined = join_batches(
            &self.joined_arrow,
            &targets,
            &self.source,
            &UInt32Array::from(source_rows),
        )?;
        let everyone = BooleanArray::from(vec![true; n_matched]);
        let (new_columns, chosen, deleted) = apply_clauses(
            &self.matched,
            &joined,
            &everyone,
            targets.columns().to_vec(),
        )?;
        let n_deleted = deleted.true_count();
        merged.rows_updated += and(&chosen, &not(&deleted)?)?.true_count() as u64;
        merged.rows_deleted += n_deleted as u64;
        merged.rows_copied += (n - chosen.true_count()) as u64;
        merged
            .batches
            .push(self.target_batch(batch.columns().to_vec(), unmatched)?);
        merged
            .batches
            .push(self.target_batch(new_columns, &not(&deleted)?)?);
        Ok(())
    }

    /// The rows of `keep` as a batch of the target schema; a NULL bound for a
    /// non-nullable column is an error naming it.
    fn target_batch(&self, columns: Vec<ArrayRef>, keep: &BooleanArray) -> Result<RecordBatch> {
        let rows = keep.true_count();
        // One predicate for every column (its runs of kept rows found once).
        let predicate = (rows < keep.len()).then(|| {
            let mut builder = arrow::compute::FilterBuilder::new(keep);
            if columns.len() > 1 {
                builder = builder.optimize();
            }
            builder.build()
        });
        let mut out = Vec::with_capacity(columns.len());
        for (f, c) in self.target.fields.iter().zip(columns) {
            let c = match &predicate {
                None => c,
                Some(p) => p.filter(&c)?,
            };
            if !f.nullable && c.null_count() > 0 {
                return Err(Error::SchemaMismatch {
                    column: f.name.clone(),
                    reason: "MERGE would write NULL into this non-nullable column".into(),
                });
            }
            out.push(c);
        }
        Ok(RecordBatch::try_new_with_options(
            self.target_arrow.clone(),
            out,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

/// Applies clauses in order to the rows of `rows_mask`: the first clause whose
/// condition holds takes a row. Returns the new columns (assignments zipped in), the
/// rows some clause took, and the rows a DELETE clause took.
fn apply_clauses(
    clauses: &[BoundClause],
    joined: &RecordBatch,
    rows_mask: &BooleanArray,
    mut columns: Vec<ArrayRef>,
) -> Result<(Vec<ArrayRef>, BooleanArray, BooleanArray)> {
    let n = joined.num_rows();
    let mut remaining = rows_mask.clone();
    let mut chosen_all = BooleanArray::from(vec![false; n]);
    let mut deleted = BooleanArray::from(vec![false; n]);
    for c in clauses {
        if remaining.true_count() == 0 {
            break;
        }
        let chosen = match &c.condition {
            Some(cond) => and(&remaining, &matching_rows(cond, joined)?)?,
            None => remaining.clone(),
        };
        if chosen.true_count() == 0 {
            continue;
        }
        remaining = and(&remaining, &not(&chosen)?)?;
        chosen_all = or(&chosen_all, &chosen)?;
        match &c.assignments {
            None => deleted = or(&deleted, &chosen)?,
            Some(assignments) => {
                for (idx, value) in assignments {
                    let v = evaluate(value, joined)?;
                    let v = if v.data_type() != columns[*idx].data_type() {
                        cast(&v, columns[*idx].data_type())?
                    } else {
                        v
                    };
                    columns[*idx] = zip(&chosen, &v, &columns[*idx])?;
                }
            }
        }
    }
    Ok((columns, chosen_all, deleted))
}

/// The key columns of `batch` as (position, name).
fn key_positions(plan: &Plan, batch: &RecordBatch) -> Vec<(usize, String)> {
    plan.key_columns
        .iter()
        .filter_map(|i| {
            let name = &plan.target.fields[*i].name;
            batch
                .schema()
                .index_of(name)
                .ok()
                .map(|p| (p, name.clone()))
        })
        .collect()
}

/// The error for a target row matched by several source rows; `keys` are the key
/// columns as (position in `batch`, name).
fn duplicate_match(batch: &RecordBatch, keys: &[(usize, String)], row: usize) -> Error {
    let key_text: Vec<String> = keys
        .iter()
        .map(|(i, name)| {
            let v = arrow::util::display::array_value_to_string(batch.column(*i), row)
                .unwrap_or_default();
            format!("{name} = {v}")
        })
        .collect();
    Error::InvalidArgument(format!(
        "MERGE: several source rows match the same target row ({}); deduplicate the source (e.g. --dedupe-by an ordering column)",
        key_text.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    /// The first source row of `v` and the rest of its chain, as the index finds them.
    fn rows_of(index: &KeyIndex, next: &[u32], v: i64) -> Vec<u32> {
        assert!(!matches!(index, KeyIndex::Rows { .. }), "integer keys");
        let mut out = Vec::new();
        let mut at = index.first_row(v).unwrap_or(NO_NEXT);
        while at != NO_NEXT {
            out.push(at);
            at = next[at as usize];
        }
        out
    }

    /// Dense keys (bitmap and ranks) and sparse ones (hash map) find the same rows:
    /// duplicates chained in source order, ineligible rows left out, keys outside the
    /// range (below the minimum too) and between keys found nowhere.
    #[test]
    fn integer_key_indexes_find_every_row_of_a_key() {
        for (scale, dense) in [(1i64, true), (1_000_000_000_000, false)] {
            let values = [5, 9, 5, -7, 64, 5, 9, 130];
            let keys: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(
                values.iter().map(|v| v * scale).collect::<Vec<_>>(),
            ))];
            let eligible = vec![true, true, true, true, true, false, true, true];
            let converter = RowConverter::new(vec![SortField::new(ArrowType::Int64)]).unwrap();
            let (index, next) = KeyIndex::build(&keys, &converter, &eligible).unwrap();
            assert_eq!(matches!(index, KeyIndex::Dense(_)), dense);
            assert_eq!(
                rows_of(&index, &next, 5 * scale),
                vec![0, 2],
                "row 5 is not eligible"
            );
            assert_eq!(rows_of(&index, &next, 9 * scale), vec![1, 6]);
            assert_eq!(rows_of(&index, &next, -7 * scale), vec![3]);
            assert_eq!(rows_of(&index, &next, 64 * scale), vec![4]);
            assert_eq!(rows_of(&index, &next, 130 * scale), vec![7]);
            for missing in [6, -8, 131, 63, 65] {
                assert!(
                    rows_of(&index, &next, missing * scale).is_empty(),
                    "{missing}"
                );
            }
            for extreme in [i64::MIN, i64::MAX] {
                assert!(rows_of(&index, &next, extreme).is_empty(), "{extreme}");
            }
        }
    }
}
