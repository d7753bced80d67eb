//! Helpers shared by Shoal's integration tests and the `workloads` benchmark.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// `../shared` beside the checkout, when present.
pub fn shared_dir() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    p.is_dir().then(|| p.canonicalize().unwrap_or(p))
}

/// The shared data, or `None` with a notice; panics in CI, where it must exist.
pub fn require_shared(what: &str) -> Option<PathBuf> {
    match shared_dir() {
        Some(p) => Some(p),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("../shared is missing but CI=true: {what} must run in CI")
        }
        None => {
            eprintln!(
                "NOTICE: skipping {what}: ../shared (conformance data) is not beside this checkout"
            );
            None
        }
    }
}

fn normalize(array: &ArrayRef) -> ArrayRef {
    match array.data_type() {
        DataType::Timestamp(_, _) => cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None))
            .unwrap_or_else(|_| array.clone()),
        DataType::Utf8View | DataType::LargeUtf8 => {
            cast(array, &DataType::Utf8).unwrap_or_else(|_| array.clone())
        }
        DataType::BinaryView | DataType::LargeBinary => {
            cast(array, &DataType::Binary).unwrap_or_else(|_| array.clone())
        }
        DataType::Dictionary(_, v) => cast(array, v).unwrap_or_else(|_| array.clone()),
        DataType::LargeList(f) => cast(
            array,
            &DataType::List(Arc::new(Field::new("element", f.data_type().clone(), true))),
        )
        .unwrap_or_else(|_| array.clone()),
        _ => array.clone(),
    }
}

/// Rows as sorted canonical strings over the given columns (by name), for multiset
/// comparison.
pub fn canonical_rows(batches: &[RecordBatch], columns: &[String]) -> Vec<String> {
    let opts = FormatOptions::default().with_null("∅");
    let mut rows = Vec::new();
    for b in batches {
        let arrays: Vec<ArrayRef> = columns
            .iter()
            .map(|c| {
                b.column_by_name(c)
                    .map(normalize)
                    .unwrap_or_else(|| panic!("column `{c}` missing from batch"))
            })
            .collect();
        let fmts: Vec<ArrayFormatter> = arrays
            .iter()
            .map(|a| ArrayFormatter::try_new(a.as_ref(), &opts).expect("formatter"))
            .collect();
        for r in 0..b.num_rows() {
            let row: Vec<String> = fmts.iter().map(|f| f.value(r).to_string()).collect();
            rows.push(row.join(" | "));
        }
    }
    rows.sort();
    rows
}

/// Reads a Parquet file fully.
pub fn read_parquet(path: &std::path::Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .expect("parquet")
        .build()
        .expect("reader")
        .collect::<Result<Vec<_>, _>>()
        .expect("batches")
}

/// Column names of a batch list (first batch), or of a schema.
pub fn column_names(batches: &[RecordBatch]) -> Vec<String> {
    batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Total rows.
pub fn num_rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}
