//! Scans: a snapshot, a projection and a row limit → a stream of Arrow batches.
//! Files are read one after another (the next one's footer is prefetched), so memory
//! stays bounded by a few row groups.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef, TimeUnit};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::basic::Encoding;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::schema::types::SchemaDescriptor;
use serde_json::{Map, Value};
use tracing::{debug, info};

use crate::error::{Error, Result};
use crate::expr::{bind_predicate, filter_batch, may_match, parse_predicate, BoundExpr, FileStats};
use crate::protocol::conform::{conform_array, rename_array};
use crate::protocol::dictionary;
use crate::protocol::features::ColumnMapping;
use crate::protocol::partition::{decode_add_path, partition_array};
use crate::protocol::{Add, DataType, StructField};
use crate::snapshot::Snapshot;
use crate::storage::TableStore;

/// A stream of record batches.
pub type BatchStream = BoxStream<'static, Result<RecordBatch>>;

/// Builds a scan of one snapshot.
#[derive(Debug, Clone)]
pub struct ScanBuilder {
    snapshot: Snapshot,
    columns: Option<Vec<String>>,
    filter: Option<BoundExpr>,
    files: Option<Vec<Arc<Add>>>,
    limit: Option<usize>,
    batch_size: usize,
    light_read_ahead: bool,
}

/// Counters of one scan, filled while it runs (`shoal scan --explain`).
#[derive(Debug, Default)]
pub struct ScanMetrics {
    pub files_total: AtomicU64,
    /// Files skipped by partition values and file statistics.
    pub files_skipped: AtomicU64,
    pub row_groups_total: AtomicU64,
    /// Row groups skipped by their Parquet statistics.
    pub row_groups_skipped: AtomicU64,
    /// Rows decoded from the files read.
    pub rows_read: AtomicU64,
    /// Rows returned after the filter (before the limit).
    pub rows_matched: AtomicU64,
}

impl ScanMetrics {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The files a scan reads, after data skipping.
#[derive(Debug, Clone)]
pub struct ScanPlan {
    pub files: Vec<Arc<Add>>,
    pub files_total: usize,
    pub files_skipped: usize,
    /// Whether file statistics could be used (not with column mapping).
    pub stats_used: bool,
}

/// What the scan of one column needs.
#[derive(Debug, Clone)]
struct OutColumn {
    field: StructField,
    /// Logical Arrow type (the output).
    logical: ArrowType,
    /// Arrow type with physical names (as in the files).
    physical: ArrowType,
    partition: bool,
}

impl ScanBuilder {
    pub fn new(snapshot: Snapshot) -> Self {
        ScanBuilder {
            snapshot,
            columns: None,
            filter: None,
            files: None,
            limit: None,
            batch_size: 8192,
            light_read_ahead: false,
        }
    }

    /// Decodes just ahead of the consumer rather than on every core: for operations
    /// whose own work on each batch (matching, encoding a rewrite) keeps the cores
    /// busy, where batches decoded further ahead only wait in memory. MERGE's peak
    /// on W6: 26 MB less, no slower.
    pub fn with_light_read_ahead(mut self) -> Self {
        self.light_read_ahead = true;
        self
    }

    /// Only rows for which `predicate` (bound to this snapshot's schema) is TRUE.
    pub fn with_filter(mut self, predicate: BoundExpr) -> Self {
        self.filter = Some(predicate);
        self
    }

    /// Parses and binds a predicate like `amount > 10 AND country = 'NL'`.
    pub fn with_predicate(self, text: &str) -> Result<Self> {
        let bound = bind_predicate(&parse_predicate(text)?, self.snapshot.schema())?;
        Ok(self.with_filter(bound))
    }

    /// Reads exactly these files of the snapshot (no pruning): row-level operations
    /// read the files they chose.
    pub fn with_files(mut self, files: Vec<Arc<Add>>) -> Self {
        self.files = Some(files);
        self
    }

    /// The files the scan reads: partition values and file statistics prune first.
    pub fn plan(&self) -> ScanPlan {
        match &self.files {
            Some(files) => ScanPlan {
                files: files.clone(),
                files_total: files.len(),
                files_skipped: 0,
                stats_used: self.snapshot.column_mapping() == ColumnMapping::None,
            },
            None => plan_files(&self.snapshot, self.filter.as_ref()),
        }
    }

    /// Only these columns, in this order.
    pub fn with_columns<S: AsRef<str>>(mut self, columns: &[S]) -> Self {
        self.columns = Some(columns.iter().map(|c| c.as_ref().to_string()).collect());
        self
    }

    pub fn with_limit(mut self, limit: Option<usize>) -> Self {
        self.limit = limit;
        self
    }

    pub fn with_batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    fn out_columns(&self) -> Result<Vec<OutColumn>> {
        let schema = self.snapshot.schema();
        let names: Vec<String> = match &self.columns {
            Some(c) => c.clone(),
            None => schema.fields.iter().map(|f| f.name.clone()).collect(),
        };
        self.columns_named(&names)
    }

    fn columns_named(&self, names: &[String]) -> Result<Vec<OutColumn>> {
        let schema = self.snapshot.schema();
        let mapping = self.snapshot.column_mapping() != ColumnMapping::None;
        names
            .iter()
            .map(|n| {
                let field = schema.field(n).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "unknown column `{n}`; the table has: {}",
                        schema
                            .fields
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                let logical = field.data_type.to_arrow(&field.name)?;
                let physical = if mapping {
                    crate::protocol::StructType::new(vec![field.clone()])
                        .to_physical()
                        .fields[0]
                        .data_type
                        .to_arrow(&field.name)?
                } else {
                    logical.clone()
                };
                Ok(OutColumn {
                    partition: self.snapshot.partition_columns().contains(&field.name),
                    field: field.clone(),
                    logical,
                    physical,
                })
            })
            .collect()
    }

    /// The schema of the batches this scan returns.
    pub fn schema(&self) -> Result<SchemaRef> {
        Ok(output_schema(&self.out_columns()?))
    }

    /// Starts the scan.
    pub fn execute(self) -> Result<BatchStream> {
        Ok(self.execute_with_metrics()?.0)
    }

    /// Starts the scan and returns counters that fill as it runs.
    pub fn execute_with_metrics(self) -> Result<(BatchStream, Arc<ScanMetrics>)> {
        let out = self.out_columns()?;
        let out_schema = output_schema(&out);
        // The filter may read columns the projection leaves out: read them too and
        // drop them after filtering.
        let mut read = out.clone();
        if let Some(f) = &self.filter {
            let extra: Vec<String> = f
                .columns()
                .iter()
                .map(|p| p[0].clone())
                .filter(|n| !read.iter().any(|c| &c.field.name == n))
                .fold(Vec::new(), |mut acc, n| {
                    if !acc.contains(&n) {
                        acc.push(n);
                    }
                    acc
                });
            read.extend(self.columns_named(&extra)?);
        }
        let projection = (read.len() != out.len()).then(|| (0..out.len()).collect::<Vec<_>>());
        let read_schema = output_schema(&read);
        let plan = self.plan();
        if let Some(f) = plan.files.iter().find(|f| f.deletion_vector.is_some()) {
            debug!(file = %f.path, "file has a deletion vector");
            return Err(Error::UnsupportedFeature {
                kind: "reader",
                feature: "deletionVectors".into(),
                action: "read (a data file carries a deletion vector in)",
            });
        }
        let metrics = Arc::new(ScanMetrics::default());
        ScanMetrics::add(&metrics.files_total, plan.files_total);
        ScanMetrics::add(&metrics.files_skipped, plan.files_skipped);
        if self.filter.is_some() {
            info!(
                version = self.snapshot.version(),
                files = plan.files_total,
                skipped = plan.files_skipped,
                "scan with filter"
            );
        } else {
            debug!(
                files = plan.files_total,
                version = self.snapshot.version(),
                "scan"
            );
        }
        let ctx = Arc::new(FileScan {
            store: self.snapshot.store().clone(),
            columns: read,
            schema: read_schema,
            out_schema,
            projection,
            filter: self.filter.clone(),
            row_group_pruning: plan.stats_used,
            partition_columns: self.snapshot.partition_columns().to_vec(),
            batch_size: self.batch_size,
            metrics: metrics.clone(),
            light_read_ahead: self.light_read_ahead,
        });
        // Small files cost more in opening than decoding: keep more of them in flight.
        let avg = plan.files.iter().map(|f| f.size.max(0) as u64).sum::<u64>()
            / plan.files.len().max(1) as u64;
        let in_flight = if avg < 4 * 1024 * 1024 { 8 } else { 2 };
        let stream = futures::stream::iter(plan.files)
            .map(move |add| {
                let ctx = ctx.clone();
                // Each file opens (reads and parses its footer) in a task of its own,
                // so that the files in flight open on every core.
                async move {
                    tokio::spawn(ctx.open_ahead(add))
                        .await
                        .map_err(|e| Error::Task(e.to_string()))?
                }
            })
            .buffered(in_flight)
            .try_flatten();
        let stream: BatchStream = match self.limit {
            None => stream.boxed(),
            Some(limit) => {
                let mut remaining = limit;
                stream
                    .try_filter_map(move |b: RecordBatch| {
                        let out = if remaining == 0 {
                            None
                        } else if b.num_rows() <= remaining {
                            remaining -= b.num_rows();
                            Some(b)
                        } else {
                            let s = b.slice(0, remaining);
                            remaining = 0;
                            Some(s)
                        };
                        futures::future::ready(Ok(out))
                    })
                    .boxed()
            }
        };
        Ok((stream, metrics))
    }

    /// Reads the whole scan into memory.
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        self.execute()?.try_collect().await
    }
}

fn output_schema(columns: &[OutColumn]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| {
                Field::new(&c.field.name, c.logical.clone(), true).with_metadata(
                    c.field
                        .to_arrow()
                        .map(|f| f.metadata().clone())
                        .unwrap_or_default(),
                )
            })
            .collect::<Vec<_>>(),
    ))
}

/// Prunes a snapshot's files by a filter: partition values, then file statistics.
pub fn plan_files(snapshot: &Snapshot, filter: Option<&BoundExpr>) -> ScanPlan {
    let files = snapshot.files();
    let total = files.len();
    // Column mapping keys stats and partition values by physical names; the filter
    // speaks logical names. Without a translation, read everything.
    let stats_used = snapshot.column_mapping() == ColumnMapping::None;
    let files: Vec<Arc<Add>> = match filter {
        Some(f) if stats_used => {
            let partition_columns = snapshot.partition_columns();
            files
                .into_iter()
                .filter(|add| crate::expr::may_match_file(f, add, partition_columns))
                .collect()
        }
        _ => files,
    };
    ScanPlan {
        files_skipped: total - files.len(),
        files_total: total,
        files,
        stats_used,
    }
}

/// What every file of one scan shares.
struct FileScan {
    store: TableStore,
    /// Columns read: the output columns, then those only the filter needs.
    columns: Vec<OutColumn>,
    schema: SchemaRef,
    out_schema: SchemaRef,
    /// Output columns among `columns`, when the filter reads more.
    projection: Option<Vec<usize>>,
    filter: Option<BoundExpr>,
    row_group_pruning: bool,
    partition_columns: Vec<String>,
    batch_size: usize,
    metrics: Arc<ScanMetrics>,
    /// One chunk of a file's row groups decoded ahead, a few batches deep, instead of
    /// one per core (see `ScanBuilder::with_light_read_ahead`).
    light_read_ahead: bool,
}

impl FileScan {
    async fn open(self: Arc<Self>, add: Arc<Add>) -> Result<BatchStream> {
        let stream = open_file(self.store.clone(), add.clone(), &self).await?;
        let ctx = self.clone();
        Ok(stream
            .and_then(move |batch| {
                futures::future::ready((|| {
                    ScanMetrics::add(&ctx.metrics.rows_read, batch.num_rows());
                    let batch = match &ctx.filter {
                        Some(f) => filter_batch(f, &batch)?,
                        None => batch,
                    };
                    ScanMetrics::add(&ctx.metrics.rows_matched, batch.num_rows());
                    match &ctx.projection {
                        Some(p) => Ok(RecordBatch::try_new_with_options(
                            ctx.out_schema.clone(),
                            p.iter().map(|i| batch.column(*i).clone()).collect(),
                            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
                        )?),
                        None => Ok(batch),
                    }
                })())
            })
            .try_filter(|b| futures::future::ready(b.num_rows() > 0))
            .boxed())
    }

    /// Like [`FileScan::open`], but the file is decoded by a task of its own a couple
    /// of batches ahead, so that the files the scan has open decode on different cores.
    async fn open_ahead(self: Arc<Self>, add: Arc<Add>) -> Result<BatchStream> {
        let stream = self.open(add).await?;
        Ok(spawn_ahead(stream, 1))
    }
}

/// Drives `stream` in a task of its own, up to `capacity` batches ahead of the reader.
pub(crate) fn spawn_ahead(mut stream: BatchStream, capacity: usize) -> BatchStream {
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<RecordBatch>>(capacity);
    tokio::spawn(async move {
        use futures::SinkExt;
        while let Some(item) = stream.next().await {
            let failed = item.is_err();
            // The consumer went away (a limit, an error): stop decoding.
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    rx.boxed()
}

async fn open_file(store: TableStore, add: Arc<Add>, ctx: &FileScan) -> Result<BatchStream> {
    let columns = Arc::new(ctx.columns.clone());
    let schema = ctx.schema.clone();
    let batch_size = ctx.batch_size;
    let relative = decode_add_path(&add.path);
    let location = store.data_path(&relative)?;
    let data_columns: Vec<&OutColumn> = columns.iter().filter(|c| !c.partition).collect();
    let partition_values: Vec<(usize, Option<String>, DataType)> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.partition)
        .map(|(i, c)| {
            let key = c.field.physical_name().to_string();
            let v = add
                .partition_values
                .get(&key)
                .or_else(|| add.partition_values.get(&c.field.name))
                .cloned()
                .flatten();
            (i, v, c.field.data_type.clone())
        })
        .collect();

    let num_rows_hint = crate::protocol::stats::num_records(add.stats.as_deref());
    let mut file_stream: Option<BoxStream<'static, Result<RecordBatch>>> = None;
    if !data_columns.is_empty() || num_rows_hint.is_none() {
        let file = StoreFileReader::new(&store, &location, add.size);
        let file = match file.preload_if_small().await {
            Ok(f) => f,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::MissingDataFile { path: relative })
            }
            Err(e) => return Err(e.into()),
        };
        let builder = match ParquetRecordBatchStreamBuilder::new(file.share()).await {
            Ok(b) => b,
            Err(e) => {
                if store.head(&location).await?.is_none() {
                    return Err(Error::MissingDataFile { path: relative });
                }
                return Err(Error::corrupt(
                    relative,
                    format!("unreadable data file: {e}"),
                ));
            }
        };
        // INT96 and nanosecond timestamps overflow for far dates: they are read as
        // microseconds directly (the reader is given this schema below).
        let file_schema = Arc::new(retyped(builder.schema(), |_, f| match f.data_type() {
            ArrowType::Timestamp(u, tz) if *u != TimeUnit::Microsecond => {
                Some(ArrowType::Timestamp(TimeUnit::Microsecond, tz.clone()))
            }
            _ => None,
        }));
        let mut row_groups: Vec<usize> = (0..builder.metadata().num_row_groups()).collect();
        if let (Some(filter), true) = (&ctx.filter, ctx.row_group_pruning) {
            let total = builder.metadata().num_row_groups();
            let keep = row_groups_to_read(
                builder.metadata(),
                &file_schema,
                builder.parquet_schema(),
                filter,
                &data_columns,
                &add.partition_values,
                &ctx.partition_columns,
            );
            ScanMetrics::add(&ctx.metrics.row_groups_total, total);
            ScanMetrics::add(&ctx.metrics.row_groups_skipped, total - keep.len());
            row_groups = keep;
        }
        let roots: Vec<usize> = data_columns
            .iter()
            .filter_map(|c| file_schema.index_of(c.field.physical_name()).ok())
            .collect();
        let dictionary_roots = dictionary_columns(
            builder.metadata(),
            &file_schema,
            &roots,
            &row_groups,
            ctx.filter.as_ref(),
        );
        // The schema the reader decodes to: the file's, timestamps in microseconds,
        // dictionary-encoded strings as dictionaries.
        let reader_schema = retyped(&file_schema, |i, f| {
            dictionary_roots.contains(&i).then(|| {
                ArrowType::Dictionary(Box::new(ArrowType::Int32), Box::new(f.data_type().clone()))
            })
        });
        let options = if reader_schema.fields() == builder.schema().fields() {
            ArrowReaderOptions::new()
        } else {
            ArrowReaderOptions::new().with_schema(Arc::new(reader_schema))
        };
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let metadata = parquet::arrow::arrow_reader::ArrowReaderMetadata::try_new(
            builder.metadata().clone(),
            options,
        )?;
        let file_share = file.share();
        let filter = ctx.filter.clone();
        let read_columns = columns.clone();
        let build = move |row_groups: Vec<usize>| -> Result<BatchStream> {
            let mut b = ParquetRecordBatchStreamBuilder::new_with_metadata(
                file_share.share(),
                metadata.clone(),
            )
            .with_row_groups(row_groups)
            .with_projection(mask.clone())
            .with_batch_size(batch_size);
            if let Some(filter) = &filter {
                if let Some(row_filter) =
                    pushdown_filter(filter, &read_columns, &file_schema, b.parquet_schema())
                {
                    b = b.with_row_filter(row_filter);
                }
            }
            let stream = b.build()?.map_err(Error::from);
            Ok(if dictionary_roots.is_empty() {
                stream.boxed()
            } else {
                stream
                    .map(|batch| batch.and_then(|b| expand_dictionaries(&b)))
                    .boxed()
            })
        };
        let chunks = row_group_chunks(builder.metadata(), &row_groups, batch_size);
        file_stream = Some(if chunks.len() <= 1 {
            build(chunks.into_iter().flatten().collect())?
        } else {
            // Several chunks of row groups: each decodes in a task of its own, the next
            // ones while this one is read, so that a large file keeps every core busy
            // however fast it is consumed. At most one chunk per core runs ahead, each
            // at most a chunk's worth of batches (bounded memory).
            let largest = chunks
                .iter()
                .map(|c| chunk_rows(builder.metadata(), c))
                .max()
                .unwrap_or(0);
            let (ahead, deepest) = if ctx.light_read_ahead {
                (1, 4)
            } else {
                (crate::write::writer::cores() + 1, 16)
            };
            let capacity = largest.div_ceil(batch_size.max(1)).clamp(2, deepest);
            futures::stream::iter(chunks)
                .map(move |chunk| {
                    futures::future::ready(build(chunk).map(|s| spawn_ahead(s, capacity)))
                })
                .buffered(ahead)
                .try_flatten()
                .boxed()
        });
    }

    let path = relative.clone();
    let make = move |file_batch: Option<RecordBatch>, rows: usize| -> Result<RecordBatch> {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
        for (i, c) in columns.iter().enumerate() {
            if c.partition {
                let (_, v, dt) = partition_values
                    .iter()
                    .find(|(j, _, _)| *j == i)
                    .ok_or_else(|| Error::InvalidArgument(format!("no partition column {i}")))?;
                arrays.push(partition_array(&c.field.name, v.as_deref(), dt, rows)?);
                continue;
            }
            let physical_name = c.field.physical_name();
            let array = match file_batch
                .as_ref()
                .and_then(|b| b.column_by_name(physical_name))
            {
                Some(a) => {
                    let conformed = conform_array(a, &c.physical, &c.field.name)
                        .map_err(|e| Error::corrupt(&path, e.to_string()))?;
                    rename_array(&conformed, &c.logical)?
                }
                // Columns added after this file was written read as nulls.
                None => arrow::array::new_null_array(&c.logical, rows),
            };
            arrays.push(array);
        }
        Ok(RecordBatch::try_new_with_options(
            schema.clone(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    };
    Ok(match file_stream {
        Some(s) => s
            .and_then(move |b| {
                let rows = b.num_rows();
                futures::future::ready(make(Some(b), rows))
            })
            .boxed(),
        None => {
            // Only partition columns: the row count comes from the stats.
            let rows = num_rows_hint.unwrap_or(0).max(0) as usize;
            futures::stream::once(futures::future::ready(make(None, rows))).boxed()
        }
    })
}

/// `schema` with the types `retype` gives (by field index) in place of its top-level
/// fields' types.
fn retyped(schema: &Schema, retype: impl Fn(usize, &Field) -> Option<ArrowType>) -> Schema {
    Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| match retype(i, f) {
                Some(t) => Arc::new(f.as_ref().clone().with_data_type(t)),
                None => f.clone(),
            })
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    )
}

/// Rows in the row groups `chunk` of a file.
fn chunk_rows(metadata: &ParquetMetaData, chunk: &[usize]) -> usize {
    chunk
        .iter()
        .map(|&rg| metadata.row_group(rg).num_rows().max(0) as usize)
        .sum()
}

/// `row_groups` in order, cut into chunks of at least four batches of rows each (small
/// row groups together), the units a scan decodes in parallel.
fn row_group_chunks(
    metadata: &ParquetMetaData,
    row_groups: &[usize],
    batch_size: usize,
) -> Vec<Vec<usize>> {
    let least = batch_size.max(1).saturating_mul(4);
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut rows = 0usize;
    for &rg in row_groups {
        current.push(rg);
        rows += metadata.row_group(rg).num_rows().max(0) as usize;
        if rows >= least {
            chunks.push(std::mem::take(&mut current));
            rows = 0;
        }
    }
    if !current.is_empty() {
        // A short tail joins the chunk before it.
        match chunks.last_mut() {
            Some(last) => last.extend(current),
            None => chunks.push(current),
        }
    }
    chunks
}

/// The projected top-level string and binary columns (indices into `file_schema`)
/// whose every page in the row groups read is dictionary-encoded: they are read as
/// Arrow dictionaries and expanded by [`dictionary::expand`], which copies short values
/// much faster than the Parquet reader's per-value copy. Columns the filter reads are
/// left alone (the row filter evaluates them as read). A chunk without page encoding
/// statistics, or with a page that fell back to plain, is read the usual way: a
/// dictionary read of it would build a dictionary by hashing.
fn dictionary_columns(
    metadata: &ParquetMetaData,
    file_schema: &Schema,
    roots: &[usize],
    row_groups: &[usize],
    filter: Option<&BoundExpr>,
) -> Vec<usize> {
    if row_groups.is_empty() {
        return Vec::new();
    }
    let filtered: Vec<String> = filter
        .map(|f| f.columns().iter().map(|p| p[0].clone()).collect())
        .unwrap_or_default();
    let descr = metadata.file_metadata().schema_descr();
    roots
        .iter()
        .copied()
        .filter(|&root| {
            let field = file_schema.field(root);
            if !dictionary::expandable(field.data_type()) || filtered.contains(field.name()) {
                return false;
            }
            let Some(leaf) = (0..descr.num_columns()).find(|&l| {
                descr.get_column_root_idx(l) == root && descr.column(l).path().parts().len() == 1
            }) else {
                return false;
            };
            row_groups.iter().all(|&rg| {
                let chunk = metadata.row_group(rg).column(leaf);
                chunk.dictionary_page_offset().is_some()
                    && chunk.page_encoding_stats_mask().is_some_and(|m| {
                        m.is_only(Encoding::RLE_DICTIONARY) || m.is_only(Encoding::PLAIN_DICTIONARY)
                    })
            })
        })
        .collect()
}

/// `batch` with its dictionary columns expanded to their value type.
fn expand_dictionaries(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = retyped(&batch.schema(), |_, f| match f.data_type() {
        ArrowType::Dictionary(_, value) => Some(value.as_ref().clone()),
        _ => None,
    });
    let columns = batch
        .columns()
        .iter()
        .map(dictionary::expand)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new_with_options(
        Arc::new(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// A Parquet row filter evaluating `filter` on its own columns first: the other
/// columns are decoded only for the rows that pass (what makes point lookups cheap).
/// `None` when the filter reads partition columns or columns missing from the file.
fn pushdown_filter(
    filter: &BoundExpr,
    columns: &[OutColumn],
    file_schema: &Schema,
    parquet_schema: &SchemaDescriptor,
) -> Option<parquet::arrow::arrow_reader::RowFilter> {
    let mut used: Vec<OutColumn> = Vec::new();
    for path in filter.columns() {
        let c = columns.iter().find(|c| c.field.name == path[0])?;
        if c.partition {
            return None;
        }
        if !used.iter().any(|u| u.field.name == c.field.name) {
            used.push(c.clone());
        }
    }
    if used.is_empty() {
        return None;
    }
    let mut roots = Vec::with_capacity(used.len());
    for c in &used {
        roots.push(file_schema.index_of(c.field.physical_name()).ok()?);
    }
    let mask = ProjectionMask::roots(parquet_schema, roots);
    let schema = output_schema(&used);
    let filter = filter.clone();
    let predicate =
        parquet::arrow::arrow_reader::ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
            let to_arrow = |e: Error| arrow::error::ArrowError::ExternalError(Box::new(e));
            let mut arrays = Vec::with_capacity(used.len());
            for c in &used {
                let a = batch
                    .column_by_name(c.field.physical_name())
                    .ok_or_else(|| {
                        arrow::error::ArrowError::SchemaError(format!(
                            "row filter: no column `{}`",
                            c.field.name
                        ))
                    })?;
                let a = conform_array(a, &c.physical, &c.field.name).map_err(to_arrow)?;
                arrays.push(rename_array(&a, &c.logical).map_err(to_arrow)?);
            }
            let logical = RecordBatch::try_new_with_options(
                schema.clone(),
                arrays,
                &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
            )?;
            crate::expr::matching_rows(&filter, &logical).map_err(to_arrow)
        });
    Some(parquet::arrow::arrow_reader::RowFilter::new(vec![
        Box::new(predicate),
    ]))
}

/// The row groups of a file that may hold a row matching `filter`, by their Parquet
/// statistics (converted to the shape of Delta file statistics).
fn row_groups_to_read(
    metadata: &ParquetMetaData,
    file_schema: &Schema,
    parquet_schema: &SchemaDescriptor,
    filter: &BoundExpr,
    data_columns: &[&OutColumn],
    partition_values: &HashMap<String, Option<String>>,
    partition_columns: &[String],
) -> Vec<usize> {
    let groups = metadata.row_groups();
    let all: Vec<usize> = (0..groups.len()).collect();
    if groups.len() <= 1 && groups.first().is_none_or(|g| g.num_rows() > 0) {
        // One row group: the file's own statistics already decided.
        return all;
    }
    let referenced: Vec<&OutColumn> = data_columns
        .iter()
        .copied()
        .filter(|c| {
            filter
                .columns()
                .iter()
                .any(|p| p.len() == 1 && p[0] == c.field.name)
        })
        .collect();
    let mut mins: Vec<Map<String, Value>> = vec![Map::new(); groups.len()];
    let mut maxes: Vec<Map<String, Value>> = vec![Map::new(); groups.len()];
    let mut nulls: Vec<Map<String, Value>> = vec![Map::new(); groups.len()];
    for c in referenced {
        let Ok(conv) =
            StatisticsConverter::try_new(c.field.physical_name(), file_schema, parquet_schema)
        else {
            continue;
        };
        let (Ok(lo), Ok(hi), Ok(nc)) = (
            conv.row_group_mins(groups.iter()),
            conv.row_group_maxes(groups.iter()),
            conv.row_group_null_counts(groups.iter()),
        ) else {
            continue;
        };
        for g in 0..groups.len() {
            if let Some(v) = stat_value(&lo, g) {
                mins[g].insert(c.field.name.clone(), v);
            }
            // (Float maxima are never trusted by the pruner: NaN sorts above them.)
            if let Some(v) = stat_value(&hi, g) {
                maxes[g].insert(c.field.name.clone(), v);
            }
            if nc.is_valid(g) {
                nulls[g].insert(c.field.name.clone(), Value::from(nc.value(g)));
            }
        }
    }
    all.into_iter()
        .filter(|&g| {
            let stats = FileStats::new(
                groups[g].num_rows(),
                std::mem::take(&mut mins[g]),
                std::mem::take(&mut maxes[g]),
                std::mem::take(&mut nulls[g]),
            );
            may_match(filter, Some(&stats), partition_values, partition_columns)
        })
        .collect()
}

/// One row group statistic as Delta writes it in `add.stats` (`None`: unusable).
fn stat_value(array: &ArrayRef, i: usize) -> Option<Value> {
    use arrow::datatypes::{Float32Type, Float64Type, Int64Type};
    if array.is_null(i) {
        return None;
    }
    match array.data_type() {
        ArrowType::Int8
        | ArrowType::Int16
        | ArrowType::Int32
        | ArrowType::Int64
        | ArrowType::UInt8
        | ArrowType::UInt16
        | ArrowType::UInt32 => {
            let a = arrow::compute::cast(&array.slice(i, 1), &ArrowType::Int64).ok()?;
            Some(Value::from(a.as_primitive::<Int64Type>().value(0)))
        }
        ArrowType::Float32 => {
            let v = array.as_primitive::<Float32Type>().value(i);
            v.is_finite().then(|| Value::from(v as f64))
        }
        ArrowType::Float64 => {
            let v = array.as_primitive::<Float64Type>().value(i);
            v.is_finite().then(|| Value::from(v))
        }
        ArrowType::Date32 => {
            let days = array
                .as_primitive::<arrow::datatypes::Date32Type>()
                .value(i);
            Some(Value::from(crate::protocol::partition::format_date(days)))
        }
        ArrowType::Timestamp(unit, _) => {
            let a = arrow::compute::cast(&array.slice(i, 1), &ArrowType::Timestamp(*unit, None))
                .ok()?;
            let raw = a
                .as_primitive_opt::<arrow::datatypes::TimestampMicrosecondType>()
                .map(|p| p.value(0))
                .or_else(|| {
                    a.as_primitive_opt::<arrow::datatypes::TimestampMillisecondType>()
                        .map(|p| p.value(0).saturating_mul(1000))
                })
                .or_else(|| {
                    a.as_primitive_opt::<arrow::datatypes::TimestampNanosecondType>()
                        .map(|p| p.value(0).div_euclid(1000))
                })
                .or_else(|| {
                    a.as_primitive_opt::<arrow::datatypes::TimestampSecondType>()
                        .map(|p| p.value(0).saturating_mul(1_000_000))
                })?;
            let t = chrono::DateTime::from_timestamp_micros(raw)?;
            Some(Value::from(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()))
        }
        ArrowType::Utf8 => Some(Value::from(array.as_string::<i32>().value(i))),
        ArrowType::LargeUtf8 => Some(Value::from(array.as_string::<i64>().value(i))),
        ArrowType::Utf8View => Some(Value::from(array.as_string_view().value(i))),
        _ => None,
    }
}

/// Parquet's async reader over the table's object store: ranged GETs for the footer
/// and the column chunks a scan needs.
pub(crate) struct StoreFileReader {
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    location: object_store::path::Path,
    size: u64,
    /// The whole file, read up front (small files): ranges are served from memory.
    whole: Option<bytes::Bytes>,
}

/// Files up to this size are read with one GET instead of a footer read plus column
/// chunk reads: for the small files streaming writers leave, opening costs more than
/// decoding, and one request (one open on local disk) beats three.
const WHOLE_FILE_READ: u64 = 2 * 1024 * 1024;

impl StoreFileReader {
    pub(crate) fn new(store: &TableStore, location: &object_store::path::Path, size: i64) -> Self {
        StoreFileReader {
            store: store.object_store(),
            location: location.clone(),
            size: size.max(0) as u64,
            whole: None,
        }
    }

    /// Reads the whole file now when it is small (see [`WHOLE_FILE_READ`]).
    pub(crate) async fn preload_if_small(mut self) -> object_store::Result<Self> {
        if self.size > 0 && self.size <= WHOLE_FILE_READ {
            let bytes = self.store.get(&self.location).await?.bytes().await?;
            self.size = bytes.len() as u64;
            self.whole = Some(bytes);
        }
        Ok(self)
    }

    /// Another reader of the same file, sharing the preloaded bytes.
    pub(crate) fn share(&self) -> Self {
        StoreFileReader {
            store: self.store.clone(),
            location: self.location.clone(),
            size: self.size,
            whole: self.whole.clone(),
        }
    }

    fn slice(
        whole: &bytes::Bytes,
        range: std::ops::Range<u64>,
    ) -> parquet::errors::Result<bytes::Bytes> {
        if range.start > range.end || range.end > whole.len() as u64 {
            return Err(parquet::errors::ParquetError::EOF(format!(
                "range {range:?} is outside the file ({} bytes)",
                whole.len()
            )));
        }
        Ok(whole.slice(range.start as usize..range.end as usize))
    }
}

fn external(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for StoreFileReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        Box::pin(async move {
            if let Some(whole) = &self.whole {
                return Self::slice(whole, range);
            }
            self.store
                .get_range(&self.location, range)
                .await
                .map_err(external)
        })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        Box::pin(async move {
            if let Some(whole) = &self.whole {
                return ranges.into_iter().map(|r| Self::slice(whole, r)).collect();
            }
            self.store
                .get_ranges(&self.location, &ranges)
                .await
                .map_err(external)
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use bytes::Bytes;
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::ParquetMetaDataReader;
    use parquet::file::properties::WriterProperties;

    /// The footer of `batch` written as one Parquet file with `props`.
    fn footer(
        batch: &RecordBatch,
        props: parquet::file::properties::WriterPropertiesBuilder,
    ) -> ParquetMetaData {
        let mut bytes = Vec::new();
        let mut w = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props.build())).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
        ParquetMetaDataReader::new()
            .parse_and_finish(&Bytes::from(bytes))
            .unwrap()
    }

    /// A column whose dictionary overflowed into plain pages is not read as a
    /// dictionary (that read would hash every value into a new one); one that stayed
    /// dictionary-encoded is, and one the filter reads is not.
    #[test]
    fn dictionary_reads_only_for_chunks_entirely_dictionary_encoded() {
        let n = 20_000;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", ArrowType::Int64, false),
            Field::new("small", ArrowType::Utf8, false),
            Field::new("overflowing", ArrowType::Utf8, false),
            Field::new("other", ArrowType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from((0..n).collect::<Vec<i64>>())),
                Arc::new(StringArray::from(
                    (0..n)
                        .map(|i| ["a", "b", "c"][(i % 3) as usize])
                        .collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    (0..n).map(|i| format!("value-{i}")).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    (0..n)
                        .map(|i| ["x", "y"][(i % 2) as usize])
                        .collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap();
        let metadata = footer(
            &batch,
            WriterProperties::builder()
                .set_dictionary_page_size_limit(1024)
                .set_data_page_row_count_limit(1_000)
                .set_max_row_group_row_count(Some(10_000)),
        );
        assert_eq!(metadata.num_row_groups(), 2);
        let filter = bind_predicate(
            &parse_predicate("other = 'x'").unwrap(),
            &crate::protocol::StructType::from_arrow(&schema).unwrap(),
        )
        .unwrap();
        let all = [0, 1, 2, 3];
        assert_eq!(
            dictionary_columns(&metadata, &schema, &all, &[0, 1], None),
            vec![1, 3]
        );
        assert_eq!(
            dictionary_columns(&metadata, &schema, &all, &[0, 1], Some(&filter)),
            vec![1]
        );
        assert_eq!(
            dictionary_columns(&metadata, &schema, &[0, 2], &[1], None),
            Vec::<usize>::new()
        );
        assert!(dictionary_columns(&metadata, &schema, &all, &[], None).is_empty());
    }

    #[test]
    fn row_group_chunks_hold_four_batches_and_keep_order() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", ArrowType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(
                (0..10_500).collect::<Vec<i64>>(),
            ))],
        )
        .unwrap();
        let metadata = footer(
            &batch,
            WriterProperties::builder().set_max_row_group_row_count(Some(1_000)),
        );
        let all: Vec<usize> = (0..metadata.num_row_groups()).collect();
        assert_eq!(all.len(), 11);
        // 4 × 500 rows: two row groups a chunk; the short tail joins the last one.
        assert_eq!(
            row_group_chunks(&metadata, &all, 500),
            vec![
                vec![0, 1],
                vec![2, 3],
                vec![4, 5],
                vec![6, 7],
                vec![8, 9, 10]
            ]
        );
        assert_eq!(
            row_group_chunks(&metadata, &[3, 7], 10_000),
            vec![vec![3, 7]]
        );
        assert_eq!(chunk_rows(&metadata, &[9, 10]), 1_500);
    }
}
