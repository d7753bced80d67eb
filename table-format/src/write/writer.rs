//! Writing data files: partition splitting, Parquet encoding (zstd), statistics,
//! target file sizes. Encoding runs on the blocking pool; uploads are async.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{WriterProperties, WriterVersion};

use crate::error::{Error, Result};
use crate::protocol::partition::{encode_add_path, partition_dir, serialize_value};
use crate::protocol::stats::{StatsCollector, DEFAULT_NUM_INDEXED_COLS};
use crate::protocol::{Add, DataType, StructType};
use crate::storage::TableStore;

/// Default target size of a data file (128 MiB).
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 128 * 1024 * 1024;

/// Knobs of the data file writer.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub target_file_size: u64,
    pub num_indexed_cols: i64,
    pub zstd_level: i32,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            target_file_size: DEFAULT_TARGET_FILE_SIZE,
            num_indexed_cols: DEFAULT_NUM_INDEXED_COLS,
            zstd_level: 1,
            row_group_rows: 1024 * 1024,
        }
    }
}

/// Ordered (column, serialized value) pairs of one partition.
type PartitionValues = Vec<(String, Option<String>)>;

struct OpenFile {
    writer: ArrowWriter<Vec<u8>>,
    stats: StatsCollector,
    values: Vec<(String, Option<String>)>,
    dir: String,
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

    /// Writes one batch (full table schema, already conformed).
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        for (values, part) in self.split(batch)? {
            let dir = partition_dir(&values);
            let file = match self.open.remove(&dir) {
                Some(f) => f,
                None => self.new_file(values, dir.clone())?,
            };
            let file = tokio::task::spawn_blocking(move || -> Result<OpenFile> {
                let mut file = file;
                file.writer.write(&part)?;
                file.stats.update(&part);
                Ok(file)
            })
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
            let size = file.writer.bytes_written() + file.writer.in_progress_size();
            if size as u64 >= self.options.target_file_size {
                self.close(file).await?;
            } else {
                self.open.insert(dir, file);
            }
        }
        Ok(())
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

    fn new_file(&mut self, values: Vec<(String, Option<String>)>, dir: String) -> Result<OpenFile> {
        let writer = ArrowWriter::try_new(
            Vec::new(),
            self.data_schema.clone(),
            Some(self.props.clone()),
        )?;
        Ok(OpenFile {
            writer,
            stats: StatsCollector::new(&self.data_schema, self.options.num_indexed_cols),
            values,
            dir,
        })
    }

    async fn close(&mut self, file: OpenFile) -> Result<()> {
        let OpenFile {
            writer,
            stats,
            values,
            dir,
        } = file;
        let buf = tokio::task::spawn_blocking(move || writer.into_inner())
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
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
        let size = buf.len() as i64;
        let location = self.store.data_path(&relative)?;
        self.store.put(&location, Bytes::from(buf)).await?;
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
