//! OPTIMIZE: bin-packing compaction and Z-order clustering.
//!
//! Both rewrite files with `dataChange: false` (readers of changes skip them) and commit
//! adds and removes in one transaction that conflicts only when a concurrent commit
//! removed an input file; then the bins whose inputs are untouched are committed again
//! and the others abandoned, so rows are never resurrected nor duplicated.
//!
//! Bin-packing streams each bin's files through one writer: memory stays bounded by a
//! few row groups. Z-order maps every chosen column to quantile buckets of its own
//! distribution (so columns of different ranges and skews weigh the same), interleaves
//! the bucket bits into one key, and range-partitions the rows by that key into files
//! of the target size, each sorted by it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::DataType as ArrowType;
use arrow::row::{RowConverter, SortField};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use super::progress::{Phase, Progress, Reporter};
use crate::error::{ConflictKind, Error, Result};
use crate::expr::{bind_predicate, may_match_file, parse_predicate, BoundExpr};
use crate::protocol::features::check_write;
use crate::protocol::{Action, Add, Remove};
use crate::scan::ScanBuilder;
use crate::snapshot::{file_key, Snapshot};
use crate::storage::TableStore;
use crate::transaction::{ReadSet, Transaction};
use crate::write::{DataWriter, WriterOptions, DEFAULT_TARGET_FILE_SIZE};

/// The `tags` key recording the columns a file was Z-ordered by.
pub const ZORDER_TAG: &str = "shoal.zOrderBy";

/// How many times lost races are re-planned before giving up.
const MAX_REPLANS: usize = 5;

/// What OPTIMIZE did.
#[derive(Debug, Clone)]
pub struct OptimizeResult {
    /// The committed version (the current one when there was nothing to do).
    pub version: i64,
    pub files_added: usize,
    pub files_removed: usize,
    pub bytes_before: i64,
    pub bytes_after: i64,
    pub partitions_optimized: usize,
    pub bins: usize,
    /// Files looked at (after the partition filter).
    pub files_considered: usize,
    /// Files left alone (big enough, alone in their partition, or already clustered).
    pub files_skipped: usize,
    /// Bins abandoned because a concurrent commit removed one of their files.
    pub bins_abandoned: usize,
    pub unchanged: bool,
    pub snapshot: Snapshot,
}

/// `OPTIMIZE table [WHERE partition_predicate] [ZORDER BY (cols)]`.
#[derive(Debug, Clone)]
pub struct OptimizeBuilder {
    store: TableStore,
    snapshot: Option<Snapshot>,
    target_size: Option<u64>,
    zorder_by: Vec<String>,
    partition_filter: Option<String>,
    full: bool,
    options: WriterOptions,
    /// Arrow bytes one Z-order pass may hold in memory.
    memory_budget: usize,
    trigger: CompactionTrigger,
    /// Input bytes one call may rewrite (whole bins; at least one bin).
    max_input_bytes: Option<u64>,
    progress: Reporter,
}

/// When a partition is worth rewriting. The default rewrites any partition with two or
/// more small files (or, for Z-order, one or more files not yet clustered).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionTrigger {
    /// Rewrite a partition holding at least this many small (or unclustered) files...
    pub min_small_files: usize,
    /// ...or whose small files hold at least this share (0 to 1) of its bytes, given
    /// at least two of them.
    pub min_small_share: Option<f64>,
}

impl Default for CompactionTrigger {
    fn default() -> Self {
        CompactionTrigger {
            min_small_files: 2,
            min_small_share: None,
        }
    }
}

impl CompactionTrigger {
    /// Whether a partition with `small` small files of `small_bytes` bytes, out of
    /// `total_bytes`, is worth rewriting.
    pub fn fires(&self, small: usize, small_bytes: u64, total_bytes: u64) -> bool {
        if small >= self.min_small_files.max(1) {
            return true;
        }
        match self.min_small_share {
            Some(share) if small >= 2 && total_bytes > 0 => {
                small_bytes as f64 / total_bytes as f64 >= share
            }
            _ => false,
        }
    }
}

/// A size like `134217728`, `128mb`, `1 GiB` or `512k` in bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.trim().parse().ok()?;
    let mult: f64 = match unit.trim().trim_end_matches('b').trim_end_matches('i') {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = n * mult;
    (bytes.is_finite() && bytes >= 1.0).then_some(bytes as u64)
}

/// Sorted (column, value) pairs of one partition.
type PartitionKey = Vec<(String, Option<String>)>;

/// One group of input files rewritten together (a bin, or a Z-order partition).
struct Bin {
    partition: BTreeMap<String, Option<String>>,
    files: Vec<Arc<Add>>,
}

impl OptimizeBuilder {
    pub fn new(store: TableStore) -> Self {
        OptimizeBuilder {
            store,
            snapshot: None,
            target_size: None,
            zorder_by: Vec::new(),
            partition_filter: None,
            full: false,
            options: WriterOptions::default(),
            memory_budget: 2 * 1024 * 1024 * 1024,
            trigger: CompactionTrigger::default(),
            max_input_bytes: None,
            progress: Reporter::default(),
        }
    }

    /// Reports the rewrite (input bytes, per bin written) and the commit to `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = Reporter::new(progress);
        self
    }

    /// Which partitions are rewritten (default: any with two small files).
    pub fn with_trigger(mut self, trigger: CompactionTrigger) -> Self {
        self.trigger = trigger;
        self
    }

    /// Bounds one call: bins are taken, partitions with the most small files first,
    /// until their input bytes reach this budget (the first bin is always taken).
    pub fn with_max_input_bytes(mut self, bytes: u64) -> Self {
        self.max_input_bytes = Some(bytes.max(1));
        self
    }

    pub fn with_snapshot(mut self, snapshot: Snapshot) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    /// Target size of the files written (default: `delta.targetFileSize`, else 128 MiB).
    pub fn with_target_size(mut self, bytes: u64) -> Self {
        self.target_size = Some(bytes.max(1));
        self
    }

    /// Cluster by these columns (Z-order) instead of bin-packing.
    pub fn with_zorder_by<S: AsRef<str>>(mut self, columns: &[S]) -> Self {
        self.zorder_by = columns.iter().map(|c| c.as_ref().to_string()).collect();
        self
    }

    /// Only partitions matching this predicate over partition columns.
    pub fn with_partition_filter(mut self, predicate: impl Into<String>) -> Self {
        self.partition_filter = Some(predicate.into());
        self
    }

    /// Z-order files already clustered by the same columns too.
    pub fn with_full(mut self, full: bool) -> Self {
        self.full = full;
        self
    }

    pub fn with_writer_options(mut self, options: WriterOptions) -> Self {
        self.options = options;
        self
    }

    /// Arrow bytes a Z-order pass may hold (default 2 GiB); larger partitions are read
    /// once per slice of the key range.
    pub fn with_memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes.max(1);
        self
    }

    pub async fn execute(self) -> Result<OptimizeResult> {
        let started = Instant::now();
        let snapshot = match &self.snapshot {
            Some(s) => s.clone(),
            None => Snapshot::load(&self.store, None).await?,
        };
        check_write(snapshot.protocol(), snapshot.metadata())?;
        let target = self
            .target_size
            .or_else(|| {
                snapshot
                    .metadata()
                    .property("delta.targetFileSize")
                    .and_then(parse_size)
            })
            .unwrap_or(DEFAULT_TARGET_FILE_SIZE);
        let filter = self.bind_filter(&snapshot)?;
        for c in &self.zorder_by {
            let f = snapshot
                .schema()
                .field(c)
                .ok_or_else(|| Error::UnknownColumn {
                    column: c.clone(),
                    suggestion: None,
                })?;
            if snapshot.partition_columns().contains(&f.name) {
                return Err(Error::InvalidArgument(format!(
                    "cannot Z-order by partition column `{c}`: it is constant in each file"
                )));
            }
            if !f.data_type.is_primitive() {
                return Err(Error::InvalidArgument(format!(
                    "cannot Z-order by `{c}`: only primitive columns can be clustered"
                )));
            }
        }
        let (bins, considered, skipped) = self.plan(&snapshot, filter.as_ref(), target);
        if bins.is_empty() {
            let mut r = OptimizeResult::nothing(snapshot);
            r.files_considered = considered;
            r.files_skipped = skipped;
            return Ok(r);
        }
        // Write every bin's new files, then commit; on a lost race against a commit
        // that removed input files, commit again without the bins it touched.
        let mut outputs: Vec<(Bin, Vec<Add>)> = Vec::with_capacity(bins.len());
        let mut options = self.options.clone();
        options.target_file_size = target;
        let input_bytes = |bin: &Bin| bin.files.iter().map(|f| f.size.max(0) as u64).sum::<u64>();
        let rewrite = self.progress.phase(
            Phase::Rewrite {
                bins: bins.len(),
                files: bins.iter().map(|b| b.files.len()).sum(),
            },
            Some(bins.iter().map(input_bytes).sum()),
        );
        for bin in bins {
            let adds = if self.zorder_by.is_empty() {
                compact_bin(&snapshot, &bin, &options).await
            } else {
                zorder_bin(
                    &snapshot,
                    &bin,
                    &self.zorder_by,
                    &options,
                    self.memory_budget,
                )
                .await
            };
            match adds {
                Ok(adds) => {
                    rewrite.advance(input_bytes(&bin));
                    outputs.push((bin, adds));
                }
                Err(e) => {
                    // The bins written so far are referenced by nothing: remove them.
                    for (_, adds) in &outputs {
                        let paths: Vec<String> = adds.iter().map(|a| a.path.clone()).collect();
                        crate::write::delete_unreferenced(&self.store, &paths).await;
                    }
                    return Err(e);
                }
            }
        }
        drop(rewrite);
        let _commit = self.progress.phase(Phase::Commit, None);
        let mut base = snapshot.clone();
        let mut abandoned = 0usize;
        for attempt in 0..=MAX_REPLANS {
            if outputs.is_empty() {
                let latest = Snapshot::load(&self.store, None).await?;
                let mut r = OptimizeResult::nothing(latest);
                r.bins_abandoned = abandoned;
                return Ok(r);
            }
            match self
                .commit(&base, &outputs, target, considered, skipped, started)
                .await
            {
                Ok(mut r) => {
                    r.bins_abandoned = abandoned;
                    return Ok(r);
                }
                Err(Error::Conflict(
                    kind @ (ConflictKind::ConcurrentDeleteRead { .. }
                    | ConflictKind::ConcurrentDeleteDelete { .. }
                    | ConflictKind::ConcurrentCompaction { .. }),
                )) if attempt < MAX_REPLANS => {
                    // Keep the bins whose inputs are all still there.
                    let latest = Snapshot::load(&self.store, None).await?;
                    let (keep, drop): (Vec<_>, Vec<_>) =
                        outputs.into_iter().partition(|(bin, _)| {
                            bin.files.iter().all(|f| {
                                latest.contains_file(&file_key(&f.path, f.deletion_vector.as_ref()))
                            })
                        });
                    warn!(
                        conflict = %kind,
                        abandoned = drop.len(),
                        kept = keep.len(),
                        "OPTIMIZE lost a race with a commit that removed input files; re-planning"
                    );
                    for (_, adds) in &drop {
                        let paths: Vec<String> = adds.iter().map(|a| a.path.clone()).collect();
                        crate::write::delete_unreferenced(&self.store, &paths).await;
                    }
                    abandoned += drop.len();
                    outputs = keep;
                    base = latest;
                }
                Err(e) => {
                    for (_, adds) in &outputs {
                        let paths: Vec<String> = adds.iter().map(|a| a.path.clone()).collect();
                        crate::write::delete_unreferenced(&self.store, &paths).await;
                    }
                    return Err(e);
                }
            }
        }
        Err(Error::Conflict(ConflictKind::RetriesExhausted {
            attempts: MAX_REPLANS,
        }))
    }

    fn bind_filter(&self, snapshot: &Snapshot) -> Result<Option<BoundExpr>> {
        let Some(text) = &self.partition_filter else {
            return Ok(None);
        };
        let bound = bind_predicate(&parse_predicate(text)?, snapshot.schema())?;
        let parts = snapshot.partition_columns();
        if let Some(c) = bound
            .columns()
            .iter()
            .find(|p| p.len() != 1 || !parts.contains(&p[0]))
        {
            return Err(Error::InvalidArgument(format!(
                "OPTIMIZE WHERE may only use partition columns ({}); `{}` is not one",
                if parts.is_empty() {
                    "the table has none".to_string()
                } else {
                    parts.join(", ")
                },
                c.join(".")
            )));
        }
        Ok(Some(bound))
    }

    /// Groups the files to rewrite; returns (bins, files considered, files skipped).
    fn plan(
        &self,
        snapshot: &Snapshot,
        filter: Option<&BoundExpr>,
        target: u64,
    ) -> (Vec<Bin>, usize, usize) {
        let parts = snapshot.partition_columns();
        let mut by_partition: BTreeMap<PartitionKey, Vec<Arc<Add>>> = BTreeMap::new();
        let mut considered = 0;
        for f in snapshot.files() {
            if filter.is_some_and(|p| !may_match_file(p, &f, parts)) {
                continue;
            }
            considered += 1;
            let mut key: Vec<(String, Option<String>)> = f
                .partition_values
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            key.sort();
            by_partition.entry(key).or_default().push(f);
        }
        let zorder_tag = self.zorder_by.join(",");
        // Per partition, the files to rewrite, grouped into bins.
        let mut candidates: Vec<(usize, Vec<Bin>)> = Vec::new();
        for (key, mut files) in by_partition {
            let partition: BTreeMap<String, Option<String>> = key.into_iter().collect();
            let total_bytes: u64 = files.iter().map(|f| f.size.max(0) as u64).sum();
            // Oldest first: compaction keeps the insertion order of the data.
            files.sort_by(|a, b| {
                (a.modification_time, &a.path).cmp(&(b.modification_time, &b.path))
            });
            if !self.zorder_by.is_empty() {
                let todo: Vec<Arc<Add>> = files
                    .into_iter()
                    .filter(|f| {
                        self.full
                            || f.tags
                                .as_ref()
                                .and_then(|t| t.get(ZORDER_TAG))
                                .and_then(|v| v.as_deref())
                                != Some(zorder_tag.as_str())
                    })
                    .collect();
                let todo_bytes: u64 = todo.iter().map(|f| f.size.max(0) as u64).sum();
                let fires = !todo.is_empty()
                    && (self.full
                        || self.trigger == CompactionTrigger::default()
                        || self.trigger.fires(todo.len(), todo_bytes, total_bytes));
                if fires {
                    candidates.push((
                        todo.len(),
                        vec![Bin {
                            partition,
                            files: todo,
                        }],
                    ));
                }
                continue;
            }
            let small: Vec<Arc<Add>> = files
                .into_iter()
                .filter(|f| (f.size.max(0) as u64) < target)
                .collect();
            let small_bytes: u64 = small.iter().map(|f| f.size.max(0) as u64).sum();
            if !self.trigger.fires(small.len(), small_bytes, total_bytes) {
                continue;
            }
            let mut bins = Vec::new();
            let mut current: Vec<Arc<Add>> = Vec::new();
            let mut current_size = 0u64;
            let flush = |current: &mut Vec<Arc<Add>>, bins: &mut Vec<Bin>| {
                if current.len() > 1 {
                    bins.push(Bin {
                        partition: partition.clone(),
                        files: std::mem::take(current),
                    });
                } else {
                    current.clear();
                }
            };
            for f in &small {
                let size = f.size.max(0) as u64;
                if !current.is_empty() && current_size + size > target {
                    flush(&mut current, &mut bins);
                    current_size = 0;
                }
                current_size += size;
                current.push(f.clone());
            }
            flush(&mut current, &mut bins);
            if !bins.is_empty() {
                candidates.push((small.len(), bins));
            }
        }
        if self.max_input_bytes.is_some() {
            // Under a budget, the partitions that need it most go first.
            candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        }
        let mut bins = Vec::new();
        let mut planned = 0;
        let mut planned_bytes = 0u64;
        'partitions: for (_, partition_bins) in candidates {
            for bin in partition_bins {
                let bytes: u64 = bin.files.iter().map(|f| f.size.max(0) as u64).sum();
                if let Some(budget) = self.max_input_bytes {
                    if !bins.is_empty() && planned_bytes + bytes > budget {
                        break 'partitions;
                    }
                }
                planned_bytes += bytes;
                planned += bin.files.len();
                bins.push(bin);
            }
        }
        (bins, considered, considered - planned)
    }

    async fn commit(
        &self,
        base: &Snapshot,
        outputs: &[(Bin, Vec<Add>)],
        target: u64,
        considered: usize,
        skipped: usize,
        started: Instant,
    ) -> Result<OptimizeResult> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut actions = Vec::new();
        let mut read = ReadSet::default();
        let mut removed_sizes = Vec::new();
        let mut added_sizes = Vec::new();
        let mut partitions = HashSet::new();
        for (bin, adds) in outputs {
            partitions.insert(format!("{:?}", bin.partition));
            for f in &bin.files {
                let key = file_key(&f.path, f.deletion_vector.as_ref());
                read.files_read.insert(key.clone());
                read.files_removed.insert(key);
                removed_sizes.push(f.size);
                actions.push(Action::Remove(Remove::for_add(f, now, false)));
            }
            for a in adds {
                added_sizes.push(a.size);
                actions.push(Action::Add(a.clone()));
            }
        }
        let summary = |sizes: &[i64]| {
            let total: i64 = sizes.iter().sum();
            json!({
                "min": sizes.iter().min().copied().unwrap_or(0),
                "max": sizes.iter().max().copied().unwrap_or(0),
                "avg": if sizes.is_empty() { 0.0 } else { total as f64 / sizes.len() as f64 },
                "totalFiles": sizes.len(),
                "totalSize": total,
            })
            .to_string()
        };
        let mut txn = Transaction::new(base, "OPTIMIZE")
            .with_read_set(read)
            .with_parameter(
                "predicate",
                serde_json::to_string(&self.partition_filter.iter().collect::<Vec<_>>())?,
            )
            .with_parameter("zOrderBy", serde_json::to_string(&self.zorder_by)?)
            .with_parameter("targetSize", Value::from(target.to_string()))
            .with_metric("numFilesAdded", added_sizes.len())
            .with_metric("numFilesRemoved", removed_sizes.len())
            .with_metric("filesAdded", summary(&added_sizes))
            .with_metric("filesRemoved", summary(&removed_sizes))
            .with_metric("partitionsOptimized", partitions.len())
            .with_metric("numBins", outputs.len())
            .with_metric("totalConsideredFiles", considered)
            .with_metric("totalFilesSkipped", skipped)
            .with_metric("executionTimeMs", started.elapsed().as_millis() as u64)
            .with_actions(actions);
        if !self.zorder_by.is_empty() {
            txn = txn.with_parameter("auto", Value::from(false));
        }
        let c = txn.commit().await?;
        let bytes_before: i64 = removed_sizes.iter().sum();
        let bytes_after: i64 = added_sizes.iter().sum();
        info!(
            version = c.version,
            removed = removed_sizes.len(),
            added = added_sizes.len(),
            bytes_before,
            bytes_after,
            "OPTIMIZE committed"
        );
        Ok(OptimizeResult {
            version: c.version,
            files_added: added_sizes.len(),
            files_removed: removed_sizes.len(),
            bytes_before,
            bytes_after,
            partitions_optimized: partitions.len(),
            bins: outputs.len(),
            files_considered: considered,
            files_skipped: skipped,
            bins_abandoned: 0,
            unchanged: false,
            snapshot: c.snapshot,
        })
    }
}

impl OptimizeResult {
    fn nothing(snapshot: Snapshot) -> Self {
        OptimizeResult {
            version: snapshot.version(),
            files_added: 0,
            files_removed: 0,
            bytes_before: 0,
            bytes_after: 0,
            partitions_optimized: 0,
            bins: 0,
            files_considered: 0,
            files_skipped: 0,
            bins_abandoned: 0,
            unchanged: true,
            snapshot,
        }
    }
}

fn no_data_change(mut adds: Vec<Add>, tag: Option<&str>) -> Vec<Add> {
    for a in &mut adds {
        a.data_change = false;
        if let Some(t) = tag {
            a.tags
                .get_or_insert_with(HashMap::new)
                .insert(ZORDER_TAG.to_string(), Some(t.to_string()));
        }
    }
    adds
}

/// Bin-packing: streams the bin's files, in order, through one writer.
async fn compact_bin(snapshot: &Snapshot, bin: &Bin, options: &WriterOptions) -> Result<Vec<Add>> {
    let mut writer = DataWriter::for_snapshot(snapshot, options.clone())?;
    let copied = async {
        // The scan runs ahead in a task of its own, so that files keep decoding while
        // the writer encodes (bounded: a few batches).
        let mut stream = crate::scan::spawn_ahead(
            ScanBuilder::new(snapshot.clone())
                .with_files(bin.files.clone())
                .with_batch_size(64 * 1024)
                .execute()?,
            64,
        );
        while let Some(batch) = stream.try_next().await? {
            writer.write(&batch).await?;
        }
        Ok::<_, Error>(())
    }
    .await;
    if let Err(e) = copied {
        writer.abandon().await;
        return Err(e);
    }
    let adds = writer.finish().await?;
    debug!(inputs = bin.files.len(), outputs = adds.len(), partition = ?bin.partition, "bin compacted");
    Ok(no_data_change(adds, None))
}

// ------------------------------------------------------------------------------------
// Z-order
// ------------------------------------------------------------------------------------

/// Whether a column's order is captured by a `u64` key (see [`numeric_keys`]).
fn is_numeric(dt: &ArrowType) -> bool {
    matches!(
        dt,
        ArrowType::Int8
            | ArrowType::Int16
            | ArrowType::Int32
            | ArrowType::Int64
            | ArrowType::UInt8
            | ArrowType::UInt16
            | ArrowType::UInt32
            | ArrowType::Date32
            | ArrowType::Date64
            | ArrowType::Timestamp(_, _)
            | ArrowType::Float16
            | ArrowType::Float32
            | ArrowType::Float64
            | ArrowType::Decimal128(_, _)
    )
}

/// Maps a numeric column's values to an order-preserving `u64` (nulls lowest):
/// integers and temporal types by value, floats and decimals by their (total) order as
/// doubles.
fn numeric_keys(array: &ArrayRef) -> Result<Vec<u64>> {
    use arrow::datatypes::{Float64Type, Int64Type};
    let n = array.len();
    let flip = |v: i64| (v as u64) ^ (1u64 << 63);
    let mut out = Vec::with_capacity(n);
    match array.data_type() {
        ArrowType::Float16
        | ArrowType::Float32
        | ArrowType::Float64
        | ArrowType::Decimal128(_, _) => {
            let f = arrow::compute::cast(array, &ArrowType::Float64)?;
            let f = f.as_primitive::<Float64Type>();
            for i in 0..n {
                out.push(if f.is_null(i) {
                    0
                } else {
                    // Total order: negatives reversed below the positives.
                    let bits = f.value(i).to_bits();
                    let k = if bits >> 63 == 1 {
                        !bits
                    } else {
                        bits | (1 << 63)
                    };
                    k.max(1)
                });
            }
        }
        _ => {
            let ints = arrow::compute::cast(array, &ArrowType::Int64)?;
            let ints = ints.as_primitive::<Int64Type>();
            for i in 0..n {
                out.push(if ints.is_null(i) {
                    0
                } else {
                    flip(ints.value(i)).max(1)
                });
            }
        }
    }
    Ok(out)
}

/// One column's sort keys for a batch: `u64`s for numbers, the Arrow row encoding
/// (whole values, nulls first) for strings and everything else.
enum ColumnKeys {
    Numeric(Vec<u64>),
    Bytes(arrow::row::Rows),
}

impl ColumnKeys {
    fn of(array: &ArrayRef) -> Result<ColumnKeys> {
        if is_numeric(array.data_type()) {
            return Ok(ColumnKeys::Numeric(numeric_keys(array)?));
        }
        let conv = RowConverter::new(vec![SortField::new(array.data_type().clone())])?;
        Ok(ColumnKeys::Bytes(
            conv.convert_columns(std::slice::from_ref(array))?,
        ))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        match self {
            ColumnKeys::Numeric(k) => k.len(),
            ColumnKeys::Bytes(r) => r.num_rows(),
        }
    }
}

/// Maps a column's values to quantile buckets of its own distribution, by rank: equal
/// values share the middle bucket of their run, so skewed columns still spread over
/// the whole bucket range.
#[derive(Default)]
struct Bucketizer {
    numeric: Vec<u64>,
    bytes: Vec<Vec<u8>>,
    /// A sample of the keys (sorted into cut points by `finish`).
    sample_numeric: Vec<u64>,
    sample_bytes: Vec<Vec<u8>>,
    /// Where to look for a numeric key among the cut points: the keys are split into
    /// `SLOTS` equal ranges above the lowest cut (`slot_min`, `slot_shift`), and
    /// `slot_starts[s]` is the first cut of slot `s` or above. A lookup then searches
    /// one slot's few cuts instead of all of them.
    slot_min: u64,
    slot_shift: u32,
    slot_starts: Vec<u32>,
}

/// Slots of [`Bucketizer`]'s numeric lookup index.
const SLOTS: usize = 4096;

impl Bucketizer {
    fn observe(&mut self, keys: &ColumnKeys, step: usize) {
        match keys {
            ColumnKeys::Numeric(k) => self.sample_numeric.extend(k.iter().step_by(step)),
            ColumnKeys::Bytes(r) => {
                for i in (0..r.num_rows()).step_by(step) {
                    self.sample_bytes.push(r.row(i).data().to_vec());
                }
            }
        }
    }

    /// Turns the sample into `buckets - 1` cut points (duplicates kept: ranks).
    fn finish(&mut self, buckets: usize) {
        fn cuts<T: Ord + Clone>(mut sample: Vec<T>, buckets: usize) -> Vec<T> {
            sample.sort_unstable();
            if sample.is_empty() {
                return Vec::new();
            }
            (1..buckets)
                .map(|b| sample[(b * sample.len() / buckets).min(sample.len() - 1)].clone())
                .collect()
        }
        self.numeric = cuts(std::mem::take(&mut self.sample_numeric), buckets);
        self.bytes = cuts(std::mem::take(&mut self.sample_bytes), buckets);
        if let (Some(&lo), Some(&hi)) = (self.numeric.first(), self.numeric.last()) {
            let span = hi - lo;
            let mut shift = 0;
            while (span >> shift) >= SLOTS as u64 {
                shift += 1;
            }
            self.slot_min = lo;
            self.slot_shift = shift;
            self.slot_starts = (0..=SLOTS)
                .map(|slot| {
                    self.numeric
                        .partition_point(|c| self.slot(*c) < slot)
                        .try_into()
                        .unwrap_or(u32::MAX)
                })
                .collect();
        }
    }

    /// The lookup slot of a numeric key (monotone in the key).
    fn slot(&self, v: u64) -> usize {
        ((v.saturating_sub(self.slot_min) >> self.slot_shift) as usize).min(SLOTS - 1)
    }

    fn bucket(&self, keys: &ColumnKeys, i: usize) -> u32 {
        let (lo, hi) = match keys {
            ColumnKeys::Numeric(k) => {
                let v = k[i];
                if self.numeric.is_empty() {
                    return 0;
                }
                // Cuts of lower slots are below `v`, of higher slots above it.
                let slot = self.slot(v);
                let from = self.slot_starts[slot] as usize;
                let to = self.slot_starts[slot + 1] as usize;
                let near = &self.numeric[from..to];
                let lo = from + near.partition_point(|c| *c < v);
                let hi = if self.numeric.get(lo) == Some(&v) {
                    lo + self.numeric[lo..].partition_point(|c| *c <= v)
                } else {
                    lo
                };
                (lo, hi)
            }
            ColumnKeys::Bytes(r) => {
                let v = r.row(i).data();
                (
                    self.bytes.partition_point(|c| c.as_slice() < v),
                    self.bytes.partition_point(|c| c.as_slice() <= v),
                )
            }
        };
        ((lo + hi) / 2) as u32
    }
}

/// Interleaves the bits of per-column bucket ids (most significant first): the
/// reference for [`ZCurve`]'s tables.
#[cfg(test)]
fn interleave(buckets: &[u32], bits: u32) -> u64 {
    let mut z = 0u64;
    for b in (0..bits).rev() {
        for v in buckets {
            z = (z << 1) | ((u64::from(*v) >> b) & 1);
        }
    }
    z
}

/// Where to cut Z-sorted rows (Z-values of `bits` bits) into about `files` output
/// files so that every file is one aligned block of the curve: a block holds the rows
/// whose Z-values share a prefix, and its min/max box is a cell of the grid on every
/// column. Splitting the fullest block in two (on the next bit) until there are enough
/// files goes level by level, so the cells stay balanced across the columns (with 100
/// files over two columns: 1/8 of each column's range, or 1/8 by 1/16). Cutting at equal
/// row counts instead leaves files straddling cells, whose stats then span both.
/// Returns the first Z-value of every file but the first (ascending, distinct).
fn aligned_cuts(sorted: &[u64], files: usize, bits: u32) -> Vec<u64> {
    use std::collections::BinaryHeap;
    let mut cuts: Vec<u64> = Vec::new();
    if sorted.is_empty() || files <= 1 {
        return cuts;
    }
    // (rows, start, end, prefix length) of each block still to consider.
    let mut open = BinaryHeap::from([(sorted.len(), 0usize, sorted.len(), 0u32)]);
    let mut done: Vec<(usize, usize)> = Vec::new();
    while open.len() + done.len() < files {
        let Some((_, start, end, level)) = open.pop() else {
            break;
        };
        if level >= bits || sorted[start] == sorted[end - 1] {
            done.push((start, end)); // one value: cannot be split
            continue;
        }
        // The rows share the first `level` bits; split on the next one.
        let bit = 1u64 << (bits - level - 1);
        let mid = start + sorted[start..end].partition_point(|z| z & bit == 0);
        for (a, b) in [(start, mid), (mid, end)] {
            if a < b {
                open.push((b - a, a, b, level + 1));
            }
        }
    }
    let mut starts: Vec<usize> = open
        .into_iter()
        .map(|(_, start, _, _)| start)
        .chain(done.into_iter().map(|(start, _)| start))
        .filter(|s| *s > 0)
        .collect();
    starts.sort_unstable();
    for s in starts {
        let v = sorted[s];
        if cuts.last().is_none_or(|c| *c < v) {
            cuts.push(v);
        }
    }
    cuts
}

/// Z-values: each column's quantile bucket (of `bits` bits), the bits interleaved
/// most significant first, column by column.
struct ZCurve {
    buckets: Vec<Bucketizer>,
    bits: u32,
    /// `spread[c][k][x]`: byte `k` of column `c`'s bucket id holding `x`, moved to
    /// where its bits go in the Z-value (bucket ids have at most 16 bits).
    spread: Vec<[[u64; 256]; 2]>,
}

impl ZCurve {
    fn new(buckets: Vec<Bucketizer>, bits: u32) -> ZCurve {
        let n = buckets.len() as u32;
        let spread = (0..n)
            .map(|c| {
                let mut t = [[0u64; 256]; 2];
                for (k, table) in t.iter_mut().enumerate() {
                    for (x, out) in table.iter_mut().enumerate() {
                        for j in 0..8u32 {
                            let b = 8 * k as u32 + j;
                            if b < bits && (x >> j) & 1 == 1 {
                                *out |= 1u64 << (b * n + (n - 1 - c));
                            }
                        }
                    }
                }
                t
            })
            .collect();
        ZCurve {
            buckets,
            bits,
            spread,
        }
    }

    /// Bits of a Z-value.
    fn width(&self) -> u32 {
        self.bits * self.buckets.len() as u32
    }

    /// The Z-values of a batch's rows; `columns` are the clustering columns' indices.
    fn values(&self, batch: &RecordBatch, columns: &[usize]) -> Result<Vec<u64>> {
        let keys: Vec<ColumnKeys> = columns
            .iter()
            .map(|c| ColumnKeys::of(batch.column(*c)))
            .collect::<Result<_>>()?;
        let mut out = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let mut z = 0u64;
            for (c, k) in keys.iter().enumerate() {
                let id = self.buckets[c].bucket(k, i) as usize;
                let t = &self.spread[c];
                z |= t[0][id & 0xff] | t[1][(id >> 8) & 0xff];
            }
            out.push(z);
        }
        Ok(out)
    }
}

/// The indices of `names` in `batch`'s schema.
fn column_indices(batch: &RecordBatch, names: &[String]) -> Result<Vec<usize>> {
    names
        .iter()
        .map(|c| {
            batch
                .schema()
                .index_of(c)
                .map_err(|_| Error::InvalidArgument(format!("internal: no column `{c}`")))
        })
        .collect()
}

/// The rows of `batches` in Z order, given every row's Z-value (`z`, batch by batch):
/// the sorted Z-values and the rows' positions (`batch << 32 | row`). Equal Z-values
/// keep the rows' order.
fn z_sorted(batches: &[RecordBatch], mut z: Vec<u64>) -> (Vec<u64>, Vec<u64>) {
    let mut positions: Vec<u64> = Vec::with_capacity(z.len());
    for (b, batch) in batches.iter().enumerate() {
        positions.extend((0..batch.num_rows() as u64).map(|r| ((b as u64) << 32) | r));
    }
    radix_sort(&mut z, &mut positions);
    (z, positions)
}

/// Sorts `keys` ascending, moving `values` along; stable (least significant byte
/// first, skipping bytes that are the same in every key).
fn radix_sort(keys: &mut Vec<u64>, values: &mut Vec<u64>) {
    let n = keys.len();
    let mut counts = vec![[0usize; 256]; 8];
    for k in keys.iter() {
        for (d, c) in counts.iter_mut().enumerate() {
            c[((k >> (8 * d)) & 0xff) as usize] += 1;
        }
    }
    let mut keys2 = vec![0u64; n];
    let mut values2 = vec![0u64; n];
    for (d, c) in counts.iter().enumerate() {
        if c.contains(&n) {
            continue;
        }
        let mut at = [0usize; 256];
        let mut sum = 0;
        for (a, n) in at.iter_mut().zip(c) {
            *a = sum;
            sum += n;
        }
        for (k, v) in keys.iter().zip(values.iter()) {
            let b = ((k >> (8 * d)) & 0xff) as usize;
            keys2[at[b]] = *k;
            values2[at[b]] = *v;
            at[b] += 1;
        }
        std::mem::swap(keys, &mut keys2);
        std::mem::swap(values, &mut values2);
    }
}

/// Z-orders one partition's files into files of about the target size: in memory
/// when the partition's rows fit the memory budget (one read of the files), otherwise
/// in passes over the files, a few output files per pass.
async fn zorder_bin(
    snapshot: &Snapshot,
    bin: &Bin,
    columns: &[String],
    options: &WriterOptions,
    memory_budget: usize,
) -> Result<Vec<Add>> {
    let tag = columns.join(",");
    let input_bytes: u64 = bin.files.iter().map(|f| f.size.max(0) as u64).sum();
    let files_out = (input_bytes.div_ceil(options.target_file_size.max(1))).max(1) as usize;
    let bits = (64 / columns.len() as u32).min(16);
    // Decoded Arrow data is about four times the Parquet bytes.
    let arrow_estimate = input_bytes.saturating_mul(4).max(1) as usize;
    let adds = if arrow_estimate <= memory_budget {
        zorder_in_memory(snapshot, bin, columns, options, bits, files_out).await?
    } else {
        zorder_in_passes(
            snapshot,
            bin,
            columns,
            options,
            bits,
            files_out,
            arrow_estimate.div_ceil(memory_budget),
        )
        .await?
    };
    debug!(inputs = bin.files.len(), outputs = adds.len(), partition = ?bin.partition, "partition Z-ordered");
    Ok(no_data_change(adds, Some(&tag)))
}

/// Rows sampled per column for its quantile buckets.
const BUCKET_SAMPLE: usize = 200_000;

/// Buckets of every clustering column from a sample of `batches`' rows (every
/// `step`-th row of each batch).
fn sample_buckets(
    batches: &[RecordBatch],
    columns: &[usize],
    step: usize,
    bits: u32,
) -> Result<Vec<Bucketizer>> {
    let mut buckets: Vec<Bucketizer> = columns.iter().map(|_| Bucketizer::default()).collect();
    for batch in batches {
        let picks = UInt32Array::from_iter_values((0..batch.num_rows() as u32).step_by(step));
        for (b, c) in buckets.iter_mut().zip(columns) {
            let sample = arrow::compute::take(batch.column(*c), &picks, None)?;
            b.observe(&ColumnKeys::of(&sample)?, 1);
        }
    }
    for b in &mut buckets {
        b.finish(1usize << bits);
    }
    Ok(buckets)
}

/// The Z-values of every row of `batches`, computed on every core, in order.
fn all_z_values(curve: &ZCurve, batches: &[RecordBatch], columns: &[usize]) -> Result<Vec<u64>> {
    let threads = crate::write::cores().clamp(1, batches.len().max(1));
    let per = batches.len().div_ceil(threads).max(1);
    let parts: Vec<Result<Vec<u64>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = batches
            .chunks(per)
            .map(|chunk| {
                scope.spawn(move || -> Result<Vec<u64>> {
                    let mut z = Vec::new();
                    for b in chunk {
                        z.extend(curve.values(b, columns)?);
                    }
                    Ok(z)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Task("a Z-order thread panicked".into())))
            })
            .collect()
    });
    let mut z = Vec::new();
    for p in parts {
        z.extend(p?);
    }
    Ok(z)
}

/// Z-order with every row in memory: read the files once, bucket a sample, sort the
/// rows' (Z-value, position) pairs, cut them into aligned blocks of the curve, and
/// write each block as one file, gathered from the decoded batches a chunk at a time
/// (two files at once, so that encoding never waits on one file's tail).
async fn zorder_in_memory(
    snapshot: &Snapshot,
    bin: &Bin,
    columns: &[String],
    options: &WriterOptions,
    bits: u32,
    files_out: usize,
) -> Result<Vec<Add>> {
    let mut stream = ScanBuilder::new(snapshot.clone())
        .with_files(bin.files.clone())
        .with_batch_size(64 * 1024)
        .execute()?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.try_next().await? {
        if batch.num_rows() > 0 {
            batches.push(batch);
        }
    }
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let key_columns = column_indices(first, columns)?;
    let batches = Arc::new(batches);
    let shared = batches.clone();
    // The sort order: positions (batch << 32 | row) by Z-value.
    let (z, positions) = tokio::task::spawn_blocking(move || -> Result<(Vec<u64>, Vec<u64>)> {
        let step = (rows / BUCKET_SAMPLE).max(1);
        let curve = ZCurve::new(sample_buckets(&shared, &key_columns, step, bits)?, bits);
        Ok(z_sorted(
            &shared,
            all_z_values(&curve, &shared, &key_columns)?,
        ))
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))??;
    let width = bits * columns.len() as u32;
    let mut bounds = vec![0usize];
    for cut in aligned_cuts(&z, files_out, width) {
        bounds.push(z.partition_point(|v| *v < cut));
    }
    bounds.push(rows);
    drop(z);
    let positions = Arc::new(positions);
    let blocks: Vec<_> = bounds
        .windows(2)
        .filter(|w| w[0] < w[1])
        .map(|w| {
            write_block(
                snapshot,
                options,
                batches.clone(),
                positions.clone(),
                w[0]..w[1],
            )
        })
        .collect();
    let results: Vec<Result<Vec<Add>>> = futures::stream::iter(blocks).buffered(2).collect().await;
    collect_blocks(snapshot, results).await
}

/// Writes the rows at `positions[range]` (`batch << 32 | row`, in Z order) as one
/// file, gathered a chunk at a time on the blocking pool.
async fn write_block(
    snapshot: &Snapshot,
    options: &WriterOptions,
    batches: Arc<Vec<RecordBatch>>,
    positions: Arc<Vec<u64>>,
    range: std::ops::Range<usize>,
) -> Result<Vec<Add>> {
    // One file per block: a writer of its own, sized to hold it whole.
    let mut one = options.clone();
    one.target_file_size = u64::MAX;
    let mut writer = DataWriter::for_snapshot(snapshot, one)?;
    let written = async {
        let mut at = range.start;
        while at < range.end {
            let end = (at + 64 * 1024).min(range.end);
            let (batches, positions) = (batches.clone(), positions.clone());
            let chunk = tokio::task::spawn_blocking(move || -> Result<RecordBatch> {
                let refs: Vec<&RecordBatch> = batches.iter().collect();
                let picks: Vec<(usize, usize)> = positions[at..end]
                    .iter()
                    .map(|p| ((p >> 32) as usize, (p & 0xffff_ffff) as usize))
                    .collect();
                Ok(arrow::compute::interleave_record_batch(&refs, &picks)?)
            })
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
            writer.write(&chunk).await?;
            at = end;
        }
        Ok::<_, Error>(())
    }
    .await;
    match written {
        Ok(()) => writer.finish().await,
        Err(e) => {
            writer.abandon().await;
            Err(e)
        }
    }
}

/// The adds of every block; when one failed, the files of the others are deleted and
/// its error returned.
async fn collect_blocks(snapshot: &Snapshot, results: Vec<Result<Vec<Add>>>) -> Result<Vec<Add>> {
    let mut adds = Vec::new();
    let mut failure = None;
    for r in results {
        match r {
            Ok(a) => adds.extend(a),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        None => Ok(adds),
        Some(e) => {
            let paths: Vec<String> = adds.iter().map(|a| a.path.clone()).collect();
            crate::write::delete_unreferenced(snapshot.store(), &paths).await;
            Err(e)
        }
    }
}

/// Z-order in passes, for partitions larger than the memory budget: the clustering
/// columns are read twice (a sample for the buckets, then every row's Z-value for the
/// cuts between files), then all columns once per pass, each pass keeping the rows of
/// a few output files, written like the in-memory path's blocks.
async fn zorder_in_passes(
    snapshot: &Snapshot,
    bin: &Bin,
    columns: &[String],
    options: &WriterOptions,
    bits: u32,
    files_out: usize,
    passes: usize,
) -> Result<Vec<Add>> {
    let known_rows: u64 = bin
        .files
        .iter()
        .filter_map(|f| crate::protocol::stats::num_records(f.stats.as_deref()))
        .map(|n| n.max(0) as u64)
        .sum();
    let step = (known_rows as usize / BUCKET_SAMPLE).max(1);
    let key_scan = || {
        ScanBuilder::new(snapshot.clone())
            .with_files(bin.files.clone())
            .with_columns(columns)
            .with_batch_size(64 * 1024)
            .execute()
    };
    // Pass 1: the clustering columns only: a sample of each column's distribution.
    let mut key_batches = Vec::new();
    let mut stream = key_scan()?;
    let mut rows = 0usize;
    while let Some(batch) = stream.try_next().await? {
        rows += batch.num_rows();
        // Keep only the sampled rows.
        let picks = UInt32Array::from_iter_values((0..batch.num_rows() as u32).step_by(step));
        key_batches.push(take_record_batch(&batch, &picks)?);
    }
    if rows == 0 {
        return Ok(Vec::new());
    }
    let key_idx: Vec<usize> = (0..columns.len()).collect();
    let curve = ZCurve::new(sample_buckets(&key_batches, &key_idx, 1, bits)?, bits);
    drop(key_batches);
    // Pass 1b: the Z-value of every row, for the cut points between output files.
    let mut z: Vec<u64> = Vec::with_capacity(rows);
    let mut stream = key_scan()?;
    while let Some(batch) = stream.try_next().await? {
        z.extend(curve.values(&batch, &key_idx)?);
    }
    z.sort_unstable();
    let file_cuts = aligned_cuts(&z, files_out, curve.width());
    drop(z);
    let ranges = file_cuts.len() + 1;
    // Pass 2: all columns, distributed to key ranges; as many ranges per pass as the
    // memory budget holds.
    let per_pass = ranges.div_ceil(passes.clamp(1, ranges));
    let mut results = Vec::new();
    let mut first = 0usize;
    while first < ranges {
        let last = (first + per_pass).min(ranges);
        let mut slots: Vec<Vec<(RecordBatch, Vec<u64>)>> = vec![Vec::new(); last - first];
        let mut stream = ScanBuilder::new(snapshot.clone())
            .with_files(bin.files.clone())
            .with_batch_size(64 * 1024)
            .execute()?;
        let mut data_idx = None;
        while let Some(batch) = stream.try_next().await? {
            let idx = match &data_idx {
                Some(i) => i,
                None => data_idx.insert(column_indices(&batch, columns)?),
            };
            let zs = curve.values(&batch, idx)?;
            let mut rows_of: Vec<Vec<u32>> = vec![Vec::new(); last - first];
            for (i, zv) in zs.iter().enumerate() {
                let r = file_cuts.partition_point(|c| c <= zv);
                if r >= first && r < last {
                    rows_of[r - first].push(i as u32);
                }
            }
            for (b, idx) in rows_of.into_iter().enumerate() {
                if idx.is_empty() {
                    continue;
                }
                let zsel: Vec<u64> = idx.iter().map(|i| zs[*i as usize]).collect();
                let part = take_record_batch(&batch, &UInt32Array::from(idx))?;
                slots[b].push((part, zsel));
            }
        }
        for bucket in slots {
            if bucket.is_empty() {
                continue;
            }
            let (batches, z): (Vec<RecordBatch>, Vec<Vec<u64>>) = bucket.into_iter().unzip();
            let (_, positions) = z_sorted(&batches, z.concat());
            let n = positions.len();
            let r = write_block(
                snapshot,
                options,
                Arc::new(batches),
                Arc::new(positions),
                0..n,
            )
            .await;
            let failed = r.is_err();
            results.push(r);
            if failed {
                return collect_blocks(snapshot, results).await;
            }
        }
        first = last;
    }
    collect_blocks(snapshot, results).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_aligned_blocks_of_the_curve() {
        // Z-values 0..1024 (two 5-bit columns), 10 rows each.
        let sorted: Vec<u64> = (0..1024u64).flat_map(|z| [z; 10]).collect();
        assert_eq!(aligned_cuts(&sorted, 4, 10), vec![256, 512, 768]);
        // Six files: four quadrants, two of them halved; every file a whole block.
        let cuts = aligned_cuts(&sorted, 6, 10);
        assert_eq!(cuts.len(), 5, "{cuts:?}");
        let mut bounds = vec![0];
        bounds.extend(&cuts);
        bounds.push(1024);
        for w in bounds.windows(2) {
            let size = w[1] - w[0];
            assert!(size.is_power_of_two() && w[0] % size == 0, "{cuts:?}");
            assert!((128..=256).contains(&size), "{cuts:?}");
        }
        // Skewed rows: the fullest blocks are split first.
        let skewed: Vec<u64> = (0..1024u64)
            .flat_map(|z| vec![z; if z < 256 { 30 } else { 1 }])
            .collect();
        let cuts = aligned_cuts(&skewed, 8, 10);
        assert!(cuts.iter().filter(|c| **c < 256).count() >= 4, "{cuts:?}");
        assert!(aligned_cuts(&sorted, 1, 10).is_empty());
        assert!(aligned_cuts(&[], 3, 10).is_empty());
        // Few distinct values: as many files as values, no more.
        let dup: Vec<u64> = [7u64; 50].into_iter().chain([9u64; 50]).collect();
        assert_eq!(aligned_cuts(&dup, 5, 10), vec![9]);
    }

    #[test]
    fn interleave_alternates_bits() {
        assert_eq!(interleave(&[0b11, 0b00], 2), 0b1010);
        assert_eq!(interleave(&[0b00, 0b11], 2), 0b0101);
    }

    #[test]
    fn z_curve_tables_match_bit_interleaving() {
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        for n in 1..=6usize {
            let bits = (64 / n as u32).min(16);
            let curve = ZCurve::new((0..n).map(|_| Bucketizer::default()).collect(), bits);
            for _ in 0..200 {
                let ids: Vec<u32> = (0..n)
                    .map(|_| (next() as u32) & ((1 << bits) - 1))
                    .collect();
                let z = ids.iter().enumerate().fold(0u64, |z, (c, id)| {
                    let t = &curve.spread[c];
                    z | t[0][(*id & 0xff) as usize] | t[1][((*id >> 8) & 0xff) as usize]
                });
                assert_eq!(z, interleave(&ids, bits), "{n} columns, ids {ids:?}");
            }
        }
    }

    #[test]
    fn radix_sort_is_a_stable_sort() {
        let mut seed = 11u64;
        let mut keys: Vec<u64> = (0..5000)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                // Few distinct high bytes, many ties.
                (seed >> 60) << 40 | (seed >> 62)
            })
            .collect();
        let mut values: Vec<u64> = (0..keys.len() as u64).collect();
        let mut expected: Vec<(u64, u64)> = keys.iter().copied().zip(values.clone()).collect();
        expected.sort_by_key(|p| p.0);
        radix_sort(&mut keys, &mut values);
        let got: Vec<(u64, u64)> = keys.into_iter().zip(values).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn slot_lookup_agrees_with_a_full_search() {
        // Skewed keys (a long run of one value, a wide tail): the slot index must give
        // the same buckets as searching every cut point.
        let mut v: Vec<i64> = vec![5; 3000];
        v.extend((0..3000).map(|i| i * i * 1000 - 7));
        v.extend([i64::MIN + 1, i64::MAX, -1, 0, 1]);
        let keys =
            ColumnKeys::of(&(Arc::new(arrow::array::Int64Array::from(v)) as ArrayRef)).unwrap();
        let mut b = Bucketizer::default();
        b.observe(&keys, 3);
        b.finish(4096);
        let ColumnKeys::Numeric(k) = &keys else {
            panic!("numeric keys")
        };
        for (i, key) in k.iter().enumerate() {
            let lo = b.numeric.partition_point(|c| c < key);
            let hi = b.numeric.partition_point(|c| c <= key);
            assert_eq!(b.bucket(&keys, i), ((lo + hi) / 2) as u32, "key {key}");
        }
    }

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse_size("134217728"), Some(134_217_728));
        assert_eq!(parse_size("8kb"), Some(8192));
        assert_eq!(parse_size("100 MB"), Some(100 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Some(1024 * 1024 * 1024));
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn numeric_keys_preserve_order() {
        let a: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![
            Some(-5),
            None,
            Some(0),
            Some(7),
        ]));
        let k = numeric_keys(&a).unwrap();
        assert!(k[1] < k[0] && k[0] < k[2] && k[2] < k[3]);
        let f: ArrayRef = Arc::new(arrow::array::Float64Array::from(vec![-2.5, -0.5, 0.0, 3.0]));
        let k = numeric_keys(&f).unwrap();
        assert!(k[0] < k[1] && k[1] < k[2] && k[2] < k[3]);
    }

    fn buckets_of(array: ArrayRef, buckets: usize) -> Vec<u32> {
        let keys = ColumnKeys::of(&array).unwrap();
        let mut b = Bucketizer::default();
        b.observe(&keys, 1);
        b.finish(buckets);
        (0..keys.len()).map(|i| b.bucket(&keys, i)).collect()
    }

    #[test]
    fn skewed_values_still_spread_over_the_buckets() {
        // 90% of the values are 1: they share the middle of their run of ranks, and
        // the rest spread over the upper buckets.
        let mut v: Vec<i64> = vec![1; 900];
        v.extend(2..102);
        let ids = buckets_of(Arc::new(arrow::array::Int64Array::from(v)), 1024);
        assert!(ids[..900].iter().all(|i| *i == ids[0]));
        assert!(ids[0] > 300 && ids[0] < 600, "{}", ids[0]);
        assert!(ids[999] > 1000, "{}", ids[999]);
        assert!(ids.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn strings_with_a_common_prefix_are_told_apart() {
        let v: Vec<String> = (0..1000).map(|i| format!("customer-{i:06}")).collect();
        let ids = buckets_of(Arc::new(arrow::array::StringArray::from(v)), 256);
        assert!(ids.windows(2).all(|w| w[0] <= w[1]));
        assert!(ids[999] - ids[0] > 200);
    }

    #[tokio::test]
    async fn progress_sees_every_input_byte_of_the_bins_then_the_commit() {
        use crate::ops::progress::recording::Recorder;
        let t = crate::table::Table::at("memory://optimize-progress").unwrap();
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("id", ArrowType::Int64, true),
        ]));
        for i in 0..5i64 {
            let ids = arrow::array::Int64Array::from_iter_values(i * 10..i * 10 + 10);
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids)]).unwrap();
            t.write(vec![batch]).execute().await.unwrap();
        }
        let input: u64 = t
            .snapshot()
            .await
            .unwrap()
            .files()
            .iter()
            .map(|f| f.size as u64)
            .sum();
        let recorder = Arc::new(Recorder::default());
        let r = t
            .optimize()
            .with_progress(recorder.clone())
            .execute()
            .await
            .unwrap();
        assert_eq!((r.files_removed, r.files_added, r.bins), (5, 1, 1));
        assert_eq!(
            recorder.phases(),
            vec![
                (
                    Phase::Rewrite { bins: 1, files: 5 },
                    Some(input),
                    input,
                    true
                ),
                (Phase::Commit, None, 0, true),
            ]
        );
        // Nothing left to do: no phase starts.
        let again = Arc::new(Recorder::default());
        let r = t
            .optimize()
            .with_progress(again.clone())
            .execute()
            .await
            .unwrap();
        assert!(r.unchanged);
        assert!(again.events().is_empty());
    }
}
