//! Reading input files (Parquet, CSV, NDJSON, Arrow IPC) into Arrow batches.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Reads a whole file; the format comes from the extension.
pub fn read_file(path: &Path) -> Result<Vec<RecordBatch>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let open = || File::open(path).with_context(|| format!("cannot open `{}`", path.display()));
    let batches = match ext.as_str() {
        "parquet" | "pq" => {
            let reader = ParquetRecordBatchReaderBuilder::try_new(open()?)?.build()?;
            reader.collect::<Result<Vec<_>, _>>()?
        }
        "csv" => {
            let mut f = open()?;
            let (schema, _) = arrow::csv::reader::Format::default()
                .with_header(true)
                .infer_schema(&mut f, Some(10_000))?;
            f.seek(SeekFrom::Start(0))?;
            let reader = arrow::csv::ReaderBuilder::new(Arc::new(schema))
                .with_header(true)
                .build(f)?;
            reader.collect::<Result<Vec<_>, _>>()?
        }
        "json" | "ndjson" | "jsonl" => {
            let mut f = BufReader::new(open()?);
            let (schema, _) = arrow::json::reader::infer_json_schema(&mut f, Some(10_000))?;
            let f = BufReader::new(open()?);
            let reader = arrow::json::ReaderBuilder::new(Arc::new(schema)).build(f)?;
            reader.collect::<Result<Vec<_>, _>>()?
        }
        "arrow" | "arrows" | "ipc" | "feather" => {
            let mut f = open()?;
            let mut magic = [0u8; 6];
            let n = f.read(&mut magic)?;
            f.seek(SeekFrom::Start(0))?;
            if n == 6 && &magic == b"ARROW1" {
                let reader = arrow::ipc::reader::FileReader::try_new(f, None)?;
                reader.collect::<Result<Vec<_>, _>>()?
            } else {
                let reader = arrow::ipc::reader::StreamReader::try_new(BufReader::new(f), None)?;
                reader.collect::<Result<Vec<_>, _>>()?
            }
        }
        other => bail!(
            "cannot tell the format of `{}` from its extension `{other}` (use .parquet, .csv, .json/.ndjson or .arrow)",
            path.display()
        ),
    };
    Ok(batches)
}
