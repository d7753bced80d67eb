//! Writing data files: partition splitting, Parquet encoding (zstd), statistics,
//! target file sizes. Encoding runs on the blocking pool; uploads are async.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tracing::warn;

use arrow::array::{ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use bytes::Bytes;
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::properties::{WriterProperties, WriterPropertiesPtr, WriterVersion};
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::types::{ColumnDescPtr, ColumnPath};

use super::chunk::{EncodedChunk, Outcome};
use super::{delta_chunk, dictionary_chunk};

use crate::error::{Error, Result};
use crate::protocol::partition::{encode_add_path, partition_dir, serialize_value};
use crate::protocol::stats::{StatsCollector, DEFAULT_NUM_INDEXED_COLS};
use crate::protocol::{Add, DataType, Metadata, StructType};
use crate::snapshot::Snapshot;
use crate::storage::{TableStore, MULTIPART_PART_SIZE};

/// Default target size of a data file (128 MiB).
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 128 * 1024 * 1024;

/// Table property that turns DELTA_BINARY_PACKED integer columns off (`false`).
pub const DELTA_ENCODING_PROPERTY: &str = "shoal.parquet.deltaEncoding";

/// Knobs of the data file writer.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub target_file_size: u64,
    pub num_indexed_cols: i64,
    pub zstd_level: i32,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// A row group is also cut when this many bytes of Arrow data are pending.
    pub row_group_max_arrow_bytes: usize,
    /// Threads encoding the columns of one row group (0: one per core).
    pub encode_threads: usize,
    /// Integer columns whose values are near their neighbours (ids, times, bounded
    /// values) are written DELTA_BINARY_PACKED instead of plain. Off with the table
    /// property `shoal.parquet.deltaEncoding=false`, for readers that predate the
    /// encoding (Spark before 3.3 in its vectorized reader).
    pub delta_encoding: bool,
}

impl WriterOptions {
    /// These options with the table's own settings applied:
    /// `delta.dataSkippingNumIndexedCols`, `shoal.parquet.deltaEncoding`.
    pub fn for_table(mut self, metadata: &Metadata) -> Self {
        if let Some(n) = metadata
            .property("delta.dataSkippingNumIndexedCols")
            .and_then(|v| v.trim().parse::<i64>().ok())
        {
            self.num_indexed_cols = n;
        }
        if metadata
            .property(DELTA_ENCODING_PROPERTY)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
        {
            self.delta_encoding = false;
        }
        self
    }
}

/// Best-effort removal of data files (`add.path` form) that no commit references: the
/// output of an operation that failed before committing.
pub async fn delete_unreferenced(store: &TableStore, paths: &[String]) {
    for p in paths {
        let rel = crate::protocol::partition::decode_add_path(p);
        if let Ok(loc) = store.data_path(&rel) {
            let _ = store.delete(&loc).await;
        }
    }
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            target_file_size: DEFAULT_TARGET_FILE_SIZE,
            num_indexed_cols: DEFAULT_NUM_INDEXED_COLS,
            zstd_level: 1,
            row_group_rows: 256 * 1024,
            row_group_max_arrow_bytes: 256 * 1024 * 1024,
            encode_threads: 0,
            delta_encoding: true,
        }
    }
}

/// Ordered (column, serialized value) pairs of one partition.
type PartitionValues = Vec<(String, Option<String>)>;

/// A row group being encoded on the blocking pool: its column chunks, its statistics
/// and its row count.
type Encoding = tokio::task::JoinHandle<Result<(Vec<Chunk>, StatsCollector, usize)>>;

/// An encoded column chunk: by parquet-rs's Arrow writer, or, for the columns they
/// cover, by Shoal's own encoders ([`own_chunk`]).
enum Chunk {
    Arrow(ArrowColumnChunk),
    Own(EncodedChunk),
}

impl Chunk {
    fn close(&self) -> &ColumnCloseResult {
        match self {
            Chunk::Arrow(c) => c.close(),
            Chunk::Own(c) => &c.close,
        }
    }

    fn append_to(self, rg: &mut SerializedRowGroupWriter<'_, Vec<u8>>) -> Result<()> {
        match self {
            Chunk::Arrow(c) => c.append_to_row_group(rg)?,
            Chunk::Own(c) => rg.append_column(&c.data, c.close)?,
        }
        Ok(())
    }
}

/// A data file being written: row groups appended to `writer`, row groups being
/// encoded (each on a thread of its own, while the caller goes on producing rows), and
/// the batches of the row group being filled (Arrow data is reference counted: queuing
/// a batch copies nothing).
struct OpenFile {
    writer: SerializedFileWriter<Vec<u8>>,
    factory: ArrowRowGroupWriterFactory,
    /// Leaves Shoal's own encoders ([`own_chunk`]) gave up on for the file in an
    /// earlier row group ([`Outcome::NotThisColumn`]): the Arrow writer takes them
    /// from then on (a dictionary that overflowed once is not built again to be
    /// thrown away).
    declined: Arc<[AtomicBool]>,
    schema: SchemaRef,
    /// The writer's properties before the per-column choices made on the first row
    /// group (see [`OpenFile::seal`]).
    base_props: WriterProperties,
    delta_encoding: bool,
    /// Row groups being encoded, in file order.
    encoding: std::collections::VecDeque<Encoding>,
    encoding_rows: usize,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    pending_bytes: usize,
    rows_written: usize,
    /// Row groups started (encoding or appended): the next one's index.
    row_groups: usize,
    stats: StatsCollector,
    values: Vec<(String, Option<String>)>,
    /// The file's path relative to the table root.
    relative: String,
    /// The multipart upload the encoded bytes stream into once the file outgrows the
    /// store's multipart threshold: memory stays bounded by a few parts however large
    /// the file grows. (In a mutex only to keep the writer `Sync`: it is reached
    /// through `&mut`, never locked.)
    upload: Option<std::sync::Mutex<object_store::WriteMultipart>>,
    /// Bytes already handed to `upload`.
    uploaded: usize,
}

/// Aborts a streamed upload, if any (best effort: S3 lifecycle rules clean up the
/// parts of uploads that could not be aborted).
async fn abort(upload: Option<std::sync::Mutex<object_store::WriteMultipart>>) {
    if let Some(Ok(upload)) = upload.map(std::sync::Mutex::into_inner) {
        if let Err(e) = upload.abort().await {
            warn!(error = %e, "could not abort a multipart upload");
        }
    }
}

/// Parts in flight per streamed upload before the writer waits.
const UPLOAD_CONCURRENCY: usize = 2;

impl OpenFile {
    /// Encoded bytes held in memory, not yet uploaded.
    fn buffered(&self) -> usize {
        self.writer.inner().len()
    }

    /// Takes the encoded bytes held in memory. The writer keeps its own count of
    /// bytes written (the file offsets in the footer), so draining its buffer is safe.
    fn drain(&mut self) -> Result<Bytes> {
        self.writer.flush()?;
        let bytes = std::mem::take(self.writer.inner_mut());
        self.uploaded += bytes.len();
        Ok(Bytes::from(bytes))
    }

    /// Encoded bytes so far plus an estimate for the rows not yet encoded.
    fn estimated_size(&self) -> u64 {
        let written = self.writer.bytes_written() as u64;
        let waiting = (self.pending_rows + self.encoding_rows) as u64;
        let pending = if self.rows_written > 0 {
            written * waiting / self.rows_written as u64
        } else {
            // Before the first row group: assume a 4:1 compression of the Arrow data.
            let per_row = self.pending_bytes as u64 / self.pending_rows.max(1) as u64;
            per_row * waiting / 4
        };
        written + pending
    }

    /// Closes the row group being filled and starts encoding it on the blocking pool,
    /// its columns on `threads` threads.
    fn seal(&mut self, threads: usize) -> Result<()> {
        if self.pending_rows == 0 {
            return Ok(());
        }
        if self.row_groups == 0 {
            // Column encodings are chosen on the first row group's rows rather than on
            // the first batch alone, which may be a handful of rows (compaction of
            // micro-batch files): the file's writer is set up again (it holds only the
            // magic bytes yet).
            let sample = leading_rows(&self.schema, &self.pending, COLUMN_SAMPLE_ROWS)?;
            // A compression trial costs a small share of the row group only when it
            // holds several samples' worth of rows.
            let trial = self.pending_rows >= 4 * COLUMN_SAMPLE_ROWS;
            let props = column_choices(&self.base_props, self.delta_encoding, trial, &sample);
            (self.writer, self.factory) = file_writer(&self.schema, props)?;
        }
        let group = std::mem::take(&mut self.pending);
        let rows = self.pending_rows;
        self.pending_rows = 0;
        self.pending_bytes = 0;
        let writers = self.factory.create_column_writers(self.row_groups)?;
        self.row_groups += 1;
        let file = FileLayout {
            schema: self.schema.clone(),
            props: self.writer.properties().clone(),
            leaves: self.writer.schema_descr().columns().to_vec(),
            declined: self.declined.clone(),
        };
        let mut stats = self.stats.empty_like();
        self.encoding
            .push_back(tokio::task::spawn_blocking(move || {
                let chunks = encode_row_group(&file, writers, &group, &mut stats, threads)?;
                Ok((chunks, stats, rows))
            }));
        self.encoding_rows += rows;
        Ok(())
    }

    /// Appends encoded row groups, oldest first, until at most `in_flight` are still
    /// being encoded.
    async fn settle(&mut self, in_flight: usize) -> Result<()> {
        while self.encoding.len() > in_flight {
            let Some(next) = self.encoding.pop_front() else {
                break;
            };
            let (chunks, stats, rows) = next.await.map_err(|e| Error::Task(e.to_string()))??;
            let mut rg = self.writer.next_row_group()?;
            for chunk in chunks {
                chunk.append_to(&mut rg)?;
            }
            rg.close()?;
            self.stats.merge(stats);
            self.encoding_rows -= rows;
            self.rows_written += rows;
        }
        Ok(())
    }

    /// Queues a batch; every row group it fills starts encoding at once, one thread
    /// per row group (the rows of the next one keep coming meanwhile).
    fn push(&mut self, batch: RecordBatch, options: &WriterOptions) -> Result<()> {
        let mut batch = batch;
        loop {
            let room = options
                .row_group_rows
                .saturating_sub(self.pending_rows)
                .max(1);
            let take = room.min(batch.num_rows());
            let head = batch.slice(0, take);
            self.pending_bytes += head.get_array_memory_size();
            self.pending_rows += take;
            self.pending.push(head);
            if self.pending_rows >= options.row_group_rows
                || self.pending_bytes >= options.row_group_max_arrow_bytes
            {
                self.seal(1)?;
            }
            if take == batch.num_rows() {
                return Ok(());
            }
            batch = batch.slice(take, batch.num_rows() - take);
        }
    }
}

/// The cores this process may use. Asked once: `available_parallelism` reads the
/// cgroup files on every call, which showed up when a writer takes many small batches.
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// One unit of encoding work: a top-level column with its leaf writers, or the
/// statistics.
enum Task {
    Column {
        index: usize,
        writers: Vec<ArrowColumnWriter>,
    },
    Stats,
}

/// What encoding a row group needs to know of its file: the Arrow schema, the
/// writer's properties and the Parquet leaf columns.
struct FileLayout {
    schema: SchemaRef,
    props: WriterPropertiesPtr,
    leaves: Vec<ColumnDescPtr>,
    /// [`OpenFile::declined`].
    declined: Arc<[AtomicBool]>,
}

/// Encodes one row group on up to `threads` threads (the calling thread included)
/// and returns its column chunks in schema order. Statistics are collected alongside.
fn encode_row_group(
    file: &FileLayout,
    writers: Vec<ArrowColumnWriter>,
    group: &[RecordBatch],
    stats: &mut StatsCollector,
    threads: usize,
) -> Result<Vec<Chunk>> {
    let schema = &file.schema;
    let mut writers = writers.into_iter();
    let mut tasks = Vec::new();
    for (index, field) in schema.fields().iter().enumerate() {
        let cost: usize = group
            .iter()
            .map(|b| b.column(index).get_array_memory_size())
            .sum();
        tasks.push((
            cost,
            Task::Column {
                index,
                writers: writers
                    .by_ref()
                    .take(count_leaves(field.data_type()))
                    .collect(),
            },
        ));
    }
    // Statistics the column writers keep anyway are taken from their chunks: the
    // statistics task only goes over the other leaves. (leaf, chunk) pairs.
    let mut first_chunk = Vec::with_capacity(schema.fields().len());
    let mut chunk = 0;
    for f in schema.fields() {
        first_chunk.push(chunk);
        chunk += count_leaves(f.data_type());
    }
    let from_chunks: Vec<(usize, usize)> = stats
        .parquet_leaves()
        .into_iter()
        .filter_map(|(leaf, name)| {
            let i = schema.index_of(name).ok()?;
            (count_leaves(schema.field(i).data_type()) == 1).then(|| (leaf, first_chunk[i]))
        })
        .collect();
    let mut skip: Vec<usize> = from_chunks.iter().map(|(leaf, _)| *leaf).collect();
    skip.sort_unstable();
    // Largest columns first: the last task to finish is then a small one.
    tasks.sort_by_key(|(cost, _)| std::cmp::Reverse(*cost));
    let mut tasks: Vec<Task> = tasks.into_iter().map(|(_, t)| t).collect();
    tasks.push(Task::Stats);
    let n_tasks = tasks.len();
    let queue = std::sync::Mutex::new(tasks.into_iter());
    let stats_slot = std::sync::Mutex::new(stats);
    let results: std::sync::Mutex<Vec<(usize, Vec<Chunk>)>> =
        std::sync::Mutex::new(Vec::with_capacity(n_tasks));
    let work = || -> Result<()> {
        loop {
            let next = queue.lock().map_err(poisoned)?.next();
            let Some(task) = next else { return Ok(()) };
            match task {
                Task::Stats => {
                    let mut stats = stats_slot.lock().map_err(poisoned)?;
                    for b in group {
                        stats.update_skipping(b, &skip);
                    }
                }
                Task::Column { index, mut writers } => {
                    let field = schema.field(index);
                    if let Some(chunk) = own_chunk(file, first_chunk[index], index, group)? {
                        results
                            .lock()
                            .map_err(poisoned)?
                            .push((index, vec![Chunk::Own(chunk)]));
                        continue;
                    }
                    for b in group {
                        let leaves = compute_leaves(field, b.column(index))?;
                        for (w, leaf) in writers.iter_mut().zip(&leaves) {
                            w.write(leaf)?;
                        }
                    }
                    let chunks = writers
                        .into_iter()
                        .map(|w| w.close().map(Chunk::Arrow))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    results.lock().map_err(poisoned)?.push((index, chunks));
                }
            }
        }
    };
    let threads = threads.clamp(1, n_tasks);
    std::thread::scope(|scope| -> Result<()> {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let mut outcome = work();
        for h in helpers {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(Error::Task("a Parquet encoder thread panicked".into())));
            if outcome.is_ok() {
                outcome = r;
            }
        }
        outcome
    })?;
    let mut results = results.into_inner().map_err(poisoned)?;
    results.sort_by_key(|(i, _)| *i);
    let chunks: Vec<Chunk> = results.into_iter().flat_map(|(_, c)| c).collect();
    let stats = stats_slot.into_inner().map_err(poisoned)?;
    for (leaf, chunk) in from_chunks {
        let absorbed = chunks
            .get(chunk)
            .and_then(|c| c.close().metadata.statistics())
            .is_some_and(|s| stats.absorb_parquet(leaf, s));
        if !absorbed {
            for b in group {
                stats.update_leaf(leaf, b);
            }
        }
    }
    Ok(chunks)
}

/// The column `index` of `group` (leaf `leaf` of the file) as a chunk built by
/// Shoal (dictionary-encoded strings, delta-packed integers), when one of its
/// encoders covers the column and its values.
fn own_chunk(
    file: &FileLayout,
    leaf: usize,
    index: usize,
    group: &[RecordBatch],
) -> Result<Option<EncodedChunk>> {
    let data_type = file.schema.field(index).data_type();
    let dictionary = dictionary_chunk::handles(data_type);
    if !dictionary && !delta_chunk::handles(data_type) {
        return Ok(None);
    }
    let (Some(descr), Some(declined)) = (file.leaves.get(leaf), file.declined.get(leaf)) else {
        return Ok(None);
    };
    if declined.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let arrays: Vec<ArrayRef> = group.iter().map(|b| b.column(index).clone()).collect();
    let outcome = if dictionary {
        dictionary_chunk::encode(descr, &file.props, &arrays)?
    } else {
        delta_chunk::encode(descr, &file.props, &arrays)?
    };
    Ok(match outcome {
        Outcome::Built(chunk) => Some(*chunk),
        Outcome::NotTheseValues => None,
        Outcome::NotThisColumn => {
            declined.store(true, Ordering::Relaxed);
            None
        }
    })
}

/// Rows the per-column encoding choices look at.
const COLUMN_SAMPLE_ROWS: usize = 16 * 1024;

/// The first `n` rows of `batches` (fewer when they hold fewer) as one batch.
fn leading_rows(schema: &SchemaRef, batches: &[RecordBatch], n: usize) -> Result<RecordBatch> {
    let mut parts = Vec::new();
    let mut rows = 0;
    for b in batches {
        if rows >= n {
            break;
        }
        let take = b.num_rows().min(n - rows);
        parts.push(b.slice(0, take));
        rows += take;
    }
    Ok(arrow::compute::concat_batches(schema, &parts)?)
}

/// `base` with per-column choices made on the `sample` rows: no dictionary for mostly
/// distinct columns, DELTA_BINARY_PACKED for integers near their neighbours (when
/// `delta_encoding`), and with a compression `trial`, no compression where it does
/// not pay.
fn column_choices(
    base: &WriterProperties,
    delta_encoding: bool,
    trial: bool,
    sample: &RecordBatch,
) -> WriterProperties {
    let mut props = base.clone().into_builder();
    for name in high_cardinality_columns(sample) {
        if delta_encoding && delta_packs_well(sample, &name) {
            props = props.set_column_encoding(
                ColumnPath::from(name.clone()),
                parquet::basic::Encoding::DELTA_BINARY_PACKED,
            );
        }
        props = props.set_column_dictionary_enabled(ColumnPath::from(name), false);
    }
    let props = props.build();
    if trial {
        uncompressed_where_it_does_not_pay(props, sample)
    } else {
        props
    }
}

/// `props` with compression turned off for the columns it does not shrink by a tenth
/// on `sample` (encoded with `props`): random values already bit-packed to their range
/// (delta-packed bounded ids, jittered times), high-entropy strings. Writing them costs
/// zstd as much work as a compressible column and gains nothing; readers then skip
/// decompressing them. Any failure of the trial leaves `props` as they are.
fn uncompressed_where_it_does_not_pay(
    props: WriterProperties,
    sample: &RecordBatch,
) -> WriterProperties {
    let trial = || -> parquet::errors::Result<Vec<ColumnPath>> {
        let mut w = ArrowWriter::try_new(Vec::new(), sample.schema(), Some(props.clone()))?;
        w.write(sample)?;
        let metadata = w.close()?;
        let mut out = Vec::new();
        for rg in metadata.row_groups() {
            for c in rg.columns() {
                if c.compression() != parquet::basic::Compression::UNCOMPRESSED
                    && c.compressed_size() * 10 > c.uncompressed_size() * 9
                {
                    out.push(c.column_path().clone());
                }
            }
        }
        Ok(out)
    };
    let paths = match trial() {
        Ok(p) if !p.is_empty() => p,
        _ => return props,
    };
    let mut builder = props.into_builder();
    for path in paths {
        builder = builder.set_column_compression(path, parquet::basic::Compression::UNCOMPRESSED);
    }
    builder.build()
}

/// A Parquet file writer: ArrowWriter sets up the file (schema, Arrow schema
/// metadata); the row groups are then encoded through the lower-level column writers
/// of the factory.
fn file_writer(
    schema: &SchemaRef,
    props: WriterProperties,
) -> Result<(SerializedFileWriter<Vec<u8>>, ArrowRowGroupWriterFactory)> {
    Ok(ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))?.into_serialized_writer()?)
}

/// Top-level primitive columns whose first values are mostly distinct: dictionary
/// encoding would only fill a dictionary to throw it away, so it is turned off.
fn high_cardinality_columns(batch: &RecordBatch) -> Vec<String> {
    let n = batch.num_rows().min(COLUMN_SAMPLE_ROWS);
    if n < 1024 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if count_leaves(field.data_type()) != 1 || field.data_type().is_nested() {
            continue;
        }
        let sample = column.slice(0, n);
        let Ok(converter) = RowConverter::new(vec![SortField::new(field.data_type().clone())])
        else {
            continue;
        };
        let Ok(rows) = converter.convert_columns(&[sample]) else {
            continue;
        };
        let distinct: std::collections::HashSet<&[u8]> =
            (0..rows.num_rows()).map(|i| rows.row(i).data()).collect();
        if distinct.len() * 2 > n {
            out.push(field.name().clone());
        }
    }
    out
}

/// Whether an integer column (dates and timestamps included) of the batch stores
/// smaller as DELTA_BINARY_PACKED than as plain values: over a sample, the bits its
/// miniblocks of 32 differences need, on average, are at most three quarters of the
/// type's width. Ids, sequence numbers, event times and bounded values all qualify and
/// then cost zstd a fraction of the bytes, to compress and to decompress; random 64-bit
/// values (hashes) do not.
fn delta_packs_well(batch: &RecordBatch, name: &str) -> bool {
    use arrow::datatypes::{DataType as A, Int64Type};
    let Some(column) = batch.column_by_name(name) else {
        return false;
    };
    let width: u64 = match column.data_type() {
        A::Int32 | A::Date32 => 32,
        A::Int64 | A::Timestamp(_, _) => 64,
        _ => return false,
    };
    let sample = column.slice(0, column.len().min(COLUMN_SAMPLE_ROWS));
    let Ok(values) = arrow::compute::cast(&sample, &A::Int64) else {
        return false;
    };
    let values: Vec<i64> = values
        .as_primitive::<Int64Type>()
        .iter()
        .flatten()
        .collect();
    let deltas: Vec<i64> = values.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    if deltas.len() < 32 {
        return false;
    }
    let (mut bits, mut blocks) = (0u64, 0u64);
    for block in deltas.chunks_exact(32) {
        let lo = block.iter().copied().min().unwrap_or(0);
        let hi = block.iter().copied().max().unwrap_or(0);
        bits += 64 - u64::from((hi.wrapping_sub(lo) as u64).leading_zeros());
        blocks += 1;
    }
    bits * 4 <= width * 3 * blocks
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> Error {
    Error::Task("a Parquet encoder thread panicked".into())
}

/// Number of Parquet leaf columns an Arrow type maps to.
fn count_leaves(dt: &arrow::datatypes::DataType) -> usize {
    use arrow::datatypes::DataType as A;
    match dt {
        A::Struct(fields) => fields.iter().map(|f| count_leaves(f.data_type())).sum(),
        A::List(f) | A::LargeList(f) | A::FixedSizeList(f, _) | A::ListView(f) => {
            count_leaves(f.data_type())
        }
        A::Map(f, _) => count_leaves(f.data_type()),
        A::Dictionary(_, v) => count_leaves(v),
        _ => 1,
    }
}

/// Writes batches (in the table's full Arrow schema) into data files.
pub struct DataWriter {
    store: TableStore,
    /// (name, type, index in the full schema) of each partition column.
    partitions: Vec<(String, DataType, usize)>,
    data_indices: Vec<usize>,
    data_schema: SchemaRef,
    props: WriterProperties,
    options: WriterOptions,
    open: HashMap<String, OpenFile>,
    done: Vec<Add>,
    counter: usize,
    now_ms: i64,
}

impl DataWriter {
    pub fn new(
        store: TableStore,
        schema: &StructType,
        full_schema: &SchemaRef,
        partition_columns: &[String],
        options: WriterOptions,
    ) -> Result<Self> {
        let mut partitions = Vec::new();
        for p in partition_columns {
            let idx = schema.index_of(p).ok_or_else(|| {
                Error::InvalidSchema(format!("partition column `{p}` is not in the schema"))
            })?;
            let dt = schema.fields[idx].data_type.clone();
            if !dt.is_primitive() {
                return Err(Error::InvalidSchema(format!(
                    "partition column `{p}` must have a primitive type"
                )));
            }
            partitions.push((p.clone(), dt, idx));
        }
        let data_indices: Vec<usize> = (0..full_schema.fields().len())
            .filter(|i| !partitions.iter().any(|(_, _, p)| p == i))
            .collect();
        let data_schema = Arc::new(Schema::new(
            data_indices
                .iter()
                .map(|i| full_schema.field(*i).clone())
                .collect::<Vec<_>>(),
        ));
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(options.zstd_level)?))
            .set_writer_version(WriterVersion::PARQUET_1_0)
            .set_max_row_group_row_count(Some(options.row_group_rows))
            .build();
        Ok(DataWriter {
            store,
            partitions,
            data_indices,
            data_schema,
            props,
            options,
            open: HashMap::new(),
            done: Vec::new(),
            counter: 0,
            now_ms: chrono::Utc::now().timestamp_millis(),
        })
    }

    /// Writes one batch: the table's columns in order, already conformed (the field
    /// flags and metadata of `batch` do not matter; NULLs in non-nullable columns fail).
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        for (values, part) in self.split(batch)? {
            let dir = partition_dir(&values);
            let file = match self.open.remove(&dir) {
                Some(f) => f,
                None => self.new_file(values, &dir)?,
            };
            let mut file = file;
            let threads = self.threads();
            let progressed = async {
                file.push(part, &self.options)?;
                // One row group encoding per core; the next waits for the oldest.
                file.settle(threads).await?;
                self.stream(&mut file).await
            }
            .await;
            if let Err(e) = progressed {
                abort(file.upload.take()).await;
                return Err(e);
            }
            if file.estimated_size() >= self.options.target_file_size {
                self.close(file).await?;
            } else {
                self.open.insert(dir, file);
            }
        }
        Ok(())
    }

    /// A writer for the table of `snapshot`, in its schema and with its settings.
    pub fn for_snapshot(snapshot: &Snapshot, options: WriterOptions) -> Result<Self> {
        DataWriter::new(
            snapshot.store().clone(),
            snapshot.schema(),
            &snapshot.arrow_schema(),
            snapshot.partition_columns(),
            options.for_table(snapshot.metadata()),
        )
    }

    /// Gives up: deletes the files completed so far (the operation failed before
    /// committing; uploads of files still open are aborted).
    pub async fn abandon(mut self) {
        for (_, mut file) in self.open.drain() {
            abort(file.upload.take()).await;
        }
        let paths: Vec<String> = self.done.iter().map(|a| a.path.clone()).collect();
        delete_unreferenced(&self.store, &paths).await;
    }

    /// Closes every open file and returns the `add` actions of all files written.
    pub async fn finish(mut self) -> Result<Vec<Add>> {
        let mut open: Vec<(String, OpenFile)> = self.open.drain().collect();
        open.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, f) in open {
            self.close(f).await?;
        }
        Ok(self.done)
    }

    fn threads(&self) -> usize {
        if self.options.encode_threads > 0 {
            self.options.encode_threads
        } else {
            cores()
        }
    }

    fn new_file(&mut self, values: Vec<(String, Option<String>)>, dir: &str) -> Result<OpenFile> {
        let name = format!(
            "part-{:05}-{}-c000.zstd.parquet",
            self.counter,
            uuid::Uuid::new_v4()
        );
        self.counter += 1;
        let relative = if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        };
        // Column choices are made when the first row group is sealed.
        let (writer, factory) = file_writer(&self.data_schema, self.props.clone())?;
        let leaves = writer.schema_descr().num_columns();
        Ok(OpenFile {
            declined: (0..leaves).map(|_| AtomicBool::new(false)).collect(),
            writer,
            factory,
            schema: self.data_schema.clone(),
            base_props: self.props.clone(),
            delta_encoding: self.options.delta_encoding,
            encoding: std::collections::VecDeque::new(),
            encoding_rows: 0,
            pending: Vec::new(),
            pending_rows: 0,
            pending_bytes: 0,
            rows_written: 0,
            row_groups: 0,
            stats: StatsCollector::new(&self.data_schema, self.options.num_indexed_cols),
            values,
            relative,
            upload: None,
            uploaded: 0,
        })
    }

    /// Streams the bytes encoded so far into the file's multipart upload once they
    /// pass the store's multipart threshold (on local disk the upload is a staging
    /// file renamed into place on `finish`).
    async fn stream(&self, file: &mut OpenFile) -> Result<()> {
        // Files below the threshold go up whole in one request; once a file's upload
        // has started, its bytes leave a part at a time.
        let limit = match file.upload {
            Some(_) => MULTIPART_PART_SIZE.min(self.store.multipart_threshold()),
            None => self.store.multipart_threshold(),
        };
        if file.buffered() < limit {
            return Ok(());
        }
        let bytes = file.drain()?;
        if file.upload.is_none() {
            let location = self.store.data_path(&file.relative)?;
            let upload = self.store.start_upload(&location).await?;
            file.upload = Some(std::sync::Mutex::new(upload));
        }
        if let Some(upload) = file.upload.as_mut() {
            let upload = upload.get_mut().map_err(poisoned)?;
            upload.put(bytes);
            upload.wait_for_capacity(UPLOAD_CONCURRENCY).await?;
        }
        Ok(())
    }

    async fn close(&mut self, mut file: OpenFile) -> Result<()> {
        // The last row group encodes on every core: nothing else is left to do.
        let finished = async {
            file.seal(self.threads())?;
            file.settle(0).await?;
            self.stream(&mut file).await
        }
        .await;
        if let Err(e) = finished {
            abort(file.upload.take()).await;
            return Err(e);
        }
        let upload = file.upload.take();
        let uploaded = file.uploaded;
        let OpenFile {
            writer,
            stats,
            values,
            relative,
            ..
        } = file;
        let buf = tokio::task::spawn_blocking(move || writer.into_inner())
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        let size = (uploaded + buf.len()) as i64;
        match upload {
            Some(upload) => {
                let mut upload = upload.into_inner().map_err(poisoned)?;
                upload.put(Bytes::from(buf));
                upload.finish().await?;
            }
            None => {
                let location = self.store.data_path(&relative)?;
                self.store.put(&location, Bytes::from(buf)).await?;
            }
        }
        self.done.push(Add {
            path: encode_add_path(&relative),
            partition_values: values.into_iter().collect(),
            size,
            modification_time: self.now_ms,
            data_change: true,
            stats: Some(stats.to_json()),
            tags: None,
            deletion_vector: None,
            base_row_id: None,
            default_row_commit_version: None,
            clustering_provider: None,
        });
        Ok(())
    }

    /// Splits a batch by partition values; returns (values, data-only batch) pairs.
    fn split(&self, batch: &RecordBatch) -> Result<Vec<(PartitionValues, RecordBatch)>> {
        let data = batch.project(&self.data_indices)?;
        let data = RecordBatch::try_new(self.data_schema.clone(), data.columns().to_vec())?;
        if self.partitions.is_empty() {
            return Ok(vec![(vec![], data)]);
        }
        let part_arrays: Vec<ArrayRef> = self
            .partitions
            .iter()
            .map(|(_, _, i)| batch.column(*i).clone())
            .collect();
        let converter = RowConverter::new(
            part_arrays
                .iter()
                .map(|a| SortField::new(a.data_type().clone()))
                .collect(),
        )?;
        let rows = converter.convert_columns(&part_arrays)?;
        let mut groups: HashMap<&[u8], Vec<u32>> = HashMap::new();
        let mut order: Vec<&[u8]> = Vec::new();
        for i in 0..rows.num_rows() {
            let key = rows.row(i).data();
            groups
                .entry(key)
                .or_insert_with(|| {
                    order.push(key);
                    Vec::new()
                })
                .push(i as u32);
        }
        let mut out = Vec::with_capacity(order.len());
        for key in order {
            let idx = &groups[key];
            let first = idx[0] as usize;
            let values = self
                .partitions
                .iter()
                .zip(&part_arrays)
                .map(|((name, dt, _), a)| {
                    Ok((name.clone(), serialize_value(a.as_ref(), first, dt)?))
                })
                .collect::<Result<Vec<_>>>()?;
            let part = if idx.len() == data.num_rows() {
                data.clone()
            } else {
                take_record_batch(&data, &UInt32Array::from(idx.clone()))?
            };
            out.push((values, part));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Date32Array, Float32Array, Float64Array, Int16Array, Int64Array, Int8Array, StringArray,
        TimestampMicrosecondArray,
    };
    use arrow::datatypes::{DataType as ArrowType, Field, TimeUnit};
    use object_store::memory::InMemory;
    use object_store::path::Path;

    /// The writer takes integer, date, timestamp and string statistics from Parquet's
    /// column chunks: they must be what the collector computes from the values
    /// (nulls, all-null columns, long and multi-byte strings, several row groups).
    #[tokio::test]
    async fn statistics_from_parquet_chunks_equal_the_collectors() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("i8", ArrowType::Int8, true),
            Field::new("i16", ArrowType::Int16, true),
            Field::new("i64", ArrowType::Int64, true),
            Field::new("d", ArrowType::Date32, true),
            Field::new(
                "ts",
                ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("s", ArrowType::Utf8, true),
            Field::new("empty", ArrowType::Utf8, true),
            Field::new("f", ArrowType::Float64, true),
            Field::new("g", ArrowType::Float64, true),
            Field::new("h", ArrowType::Float32, true),
        ]));
        let n = 3000usize;
        let long = "ü".repeat(40);
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int8Array::from_iter(
                    (0..n).map(|i| (i % 7 != 0).then_some(((i % 200) as i16 - 100) as i8)),
                )),
                Arc::new(Int16Array::from_iter((0..n).map(|i| Some(-(i as i16))))),
                Arc::new(Int64Array::from_iter(
                    (0..n).map(|i| (i % 5 != 0).then_some(i as i64 * 1_000_003 - 7)),
                )),
                Arc::new(Date32Array::from_iter(
                    (0..n).map(|i| Some(i as i32 - 1500)),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from_iter((0..n).map(|i| Some(i as i64 * 17)))
                        .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from_iter((0..n).map(|i| match i % 4 {
                    0 => None,
                    1 => Some(format!("k{i:05}")),
                    2 => Some(long.clone()),
                    _ => Some("ä€𝄞".to_string()),
                }))),
                Arc::new(StringArray::from(vec![None::<&str>; n])),
                Arc::new(Float64Array::from_iter(
                    (0..n).map(|i| Some(i as f64 / 3.0)),
                )),
                // A NaN in the second row group, a negative zero in the third.
                Arc::new(Float64Array::from_iter((0..n).map(|i| match i {
                    1500 => Some(f64::NAN),
                    2500 => Some(-0.0),
                    _ if i % 9 == 0 => None,
                    _ => Some(1.0 + i as f64 * 0.5),
                }))),
                Arc::new(Float32Array::from_iter(
                    (0..n).map(|i| Some(i as f32 * 0.25 - 100.0)),
                )),
            ],
        )
        .unwrap();
        let mut expected = StatsCollector::new(&schema, DEFAULT_NUM_INDEXED_COLS);
        expected.update(&batch);
        let store = TableStore::new(Arc::new(InMemory::new()), Path::from("t"), "memory://t");
        let delta: StructType = StructType::from_arrow(&schema).unwrap();
        let options = WriterOptions {
            row_group_rows: 1000,
            ..WriterOptions::default()
        };
        let mut w = DataWriter::new(store, &delta, &schema, &[], options).unwrap();
        w.write(&batch.slice(0, 1700)).await.unwrap();
        w.write(&batch.slice(1700, n - 1700)).await.unwrap();
        let adds = w.finish().await.unwrap();
        assert_eq!(adds.len(), 1);
        let got: serde_json::Value =
            serde_json::from_str(adds[0].stats.as_deref().unwrap()).unwrap();
        let want: serde_json::Value = serde_json::from_str(&expected.to_json()).unwrap();
        assert_eq!(got, want);
        // The long string poisons the string maximum; the all-null column has none.
        assert!(got["maxValues"].get("s").is_none());
        assert!(got["minValues"].get("empty").is_none());
        assert_eq!(got["nullCount"]["empty"], 3000);
        // The NaN poisons the maximum of `g`; its minimum is the negative zero.
        assert!(got["maxValues"].get("g").is_none());
        assert_eq!(got["minValues"]["g"].as_f64(), Some(-0.0));
        assert_eq!(got["minValues"]["h"], -100.0);
    }

    #[test]
    fn delta_encoding_is_chosen_for_integers_near_their_neighbours() {
        let n = 5000i64;
        let mut seed = 3u64;
        let mut rand = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed
        };
        let batch = RecordBatch::try_from_iter(vec![
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
            ),
            (
                "bounded",
                Arc::new(Int64Array::from_iter_values(
                    (0..n).map(|_| (rand() >> 44) as i64),
                )),
            ),
            (
                "hash",
                Arc::new(Int64Array::from_iter_values((0..n).map(|_| rand() as i64))),
            ),
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from_iter_values((0..n).map(
                    |i| 1_700_000_000_000_000 + i * 1000 + (rand() >> 53) as i64,
                ))),
            ),
            (
                "s",
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("{i}")),
                )),
            ),
        ])
        .unwrap();
        assert!(delta_packs_well(&batch, "id"));
        assert!(
            delta_packs_well(&batch, "bounded"),
            "20-bit values in 64-bit slots"
        );
        assert!(delta_packs_well(&batch, "ts"));
        assert!(!delta_packs_well(&batch, "hash"));
        assert!(!delta_packs_well(&batch, "s"));
    }

    /// Files carry DELTA_BINARY_PACKED integer columns (read back intact), also when
    /// written in small batches; the table property turns it off.
    #[tokio::test]
    async fn delta_encoded_files_read_back_and_the_property_turns_it_off() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let schema = Arc::new(Schema::new(vec![Field::new("id", ArrowType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..20_000))],
        )
        .unwrap();
        let delta: StructType = StructType::from_arrow(&schema).unwrap();
        for enabled in [true, false] {
            let inner = Arc::new(InMemory::new());
            let store = TableStore::new(inner.clone(), Path::from("t"), "memory://t");
            let options = WriterOptions {
                delta_encoding: enabled,
                ..WriterOptions::default()
            };
            let mut w = DataWriter::new(store, &delta, &schema, &[], options).unwrap();
            // Small batches, as from compacting micro-batch files: the choice is made
            // on the row group, not on the first batch.
            for start in (0..20_000).step_by(1000) {
                w.write(&batch.slice(start, 1000)).await.unwrap();
            }
            let adds = w.finish().await.unwrap();
            let path = Path::from(format!("t/{}", adds[0].path));
            let bytes = object_store::ObjectStoreExt::get(inner.as_ref(), &path)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let reader = SerializedFileReader::new(bytes.clone()).unwrap();
            let encodings: Vec<parquet::basic::Encoding> = reader
                .metadata()
                .row_group(0)
                .column(0)
                .encodings()
                .collect();
            assert_eq!(
                encodings.contains(&parquet::basic::Encoding::DELTA_BINARY_PACKED),
                enabled,
                "{encodings:?}"
            );
            let read: Vec<RecordBatch> =
                parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(bytes, 8192)
                    .unwrap()
                    .collect::<std::result::Result<_, _>>()
                    .unwrap();
            let read = arrow::compute::concat_batches(&read[0].schema(), &read).unwrap();
            assert_eq!(read.column(0).as_ref(), batch.column(0).as_ref());
        }
        let metadata: Metadata = serde_json::from_value(serde_json::json!({
            "id": "t",
            "configuration": { DELTA_ENCODING_PROPERTY: "false" },
        }))
        .unwrap();
        assert!(!WriterOptions::default().for_table(&metadata).delta_encoding);
    }
}
