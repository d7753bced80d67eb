//! Scans: a snapshot, a projection and a row limit → a stream of Arrow batches.
//! Files are read one after another (the next one's footer is prefetched), so memory
//! stays bounded by a few row groups.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef, TimeUnit};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use tracing::debug;

use crate::error::{Error, Result};
use crate::protocol::conform::{conform_array, rename_array};
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
    limit: Option<usize>,
    batch_size: usize,
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
            limit: None,
            batch_size: 8192,
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
        let columns = Arc::new(self.out_columns()?);
        let schema = output_schema(&columns);
        let files = self.snapshot.files();
        if let Some(f) = files.iter().find(|f| f.deletion_vector.is_some()) {
            debug!(file = %f.path, "file has a deletion vector");
            return Err(Error::UnsupportedFeature {
                kind: "reader",
                feature: "deletionVectors".into(),
                action: "read (a data file carries a deletion vector in)",
            });
        }
        debug!(
            files = files.len(),
            version = self.snapshot.version(),
            "scan"
        );
        let store = self.snapshot.store().clone();
        let batch_size = self.batch_size;
        let stream = futures::stream::iter(files)
            .map(move |add| {
                let store = store.clone();
                let columns = columns.clone();
                let schema = schema.clone();
                async move { open_file(store, add, columns, schema, batch_size).await }
            })
            .buffered(2)
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
        Ok(stream)
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

async fn open_file(
    store: TableStore,
    add: Arc<Add>,
    columns: Arc<Vec<OutColumn>>,
    schema: SchemaRef,
    batch_size: usize,
) -> Result<BatchStream> {
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
        let reader = StoreFileReader::new(&store, &location, add.size);
        let mut builder = match ParquetRecordBatchStreamBuilder::new(reader).await {
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
        // INT96 and nanosecond timestamps overflow for far dates: ask the reader for
        // microseconds directly.
        let file_schema = builder.schema().clone();
        if file_schema.fields().iter().any(
            |f| matches!(f.data_type(), ArrowType::Timestamp(u, _) if *u != TimeUnit::Microsecond),
        ) {
            let hinted = Schema::new(
                file_schema
                    .fields()
                    .iter()
                    .map(|f| match f.data_type() {
                        ArrowType::Timestamp(_, tz) => Arc::new(f.as_ref().clone().with_data_type(
                            ArrowType::Timestamp(TimeUnit::Microsecond, tz.clone()),
                        )),
                        _ => f.clone(),
                    })
                    .collect::<Vec<_>>(),
            );
            let options = ArrowReaderOptions::new().with_schema(Arc::new(hinted));
            let reader = StoreFileReader::new(&store, &location, add.size);
            builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, options).await?;
        }
        let file_schema = builder.schema().clone();
        let roots: Vec<usize> = data_columns
            .iter()
            .filter_map(|c| file_schema.index_of(c.field.physical_name()).ok())
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let stream = builder
            .with_projection(mask)
            .with_batch_size(batch_size)
            .build()?;
        file_stream = Some(stream.map_err(Error::from).boxed());
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

/// Parquet's async reader over the table's object store: ranged GETs for the footer
/// and the column chunks a scan needs.
pub(crate) struct StoreFileReader {
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    location: object_store::path::Path,
    size: u64,
}

impl StoreFileReader {
    pub(crate) fn new(store: &TableStore, location: &object_store::path::Path, size: i64) -> Self {
        StoreFileReader {
            store: store.object_store(),
            location: location.clone(),
            size: size.max(0) as u64,
        }
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
