//! Interop with delta-rs (the `deltalake` Python package), both ways: every version of a
//! table Shoal writes reads identically in delta-rs, and every version of a table
//! delta-rs writes reads identically in Shoal.

use std::path::Path;

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use shoal_format::{SaveMode, SchemaMode, Table};
use shoal_tests::{
    canonical_rows, column_names, python, read_parquet, run_python, DUMP_ALL_VERSIONS,
};

/// Writes a table with delta-rs: partitioned appends, an overwrite, schema evolution.
const WRITE: &str = r#"
import sys
import pyarrow as pa
from deltalake import write_deltalake
path = sys.argv[1]
def batch(i, extra=False):
    cols = {
        "id": pa.array([i * 10 + j for j in range(10)], pa.int64()),
        "country": pa.array(["US", "FR", None, "DE", "US"] * 2, pa.string()),
        "amount": pa.array([float(j) / 4 for j in range(10)], pa.float64()),
        "ts": pa.array([1_700_000_000_000_000 + j for j in range(10)], pa.timestamp("us", tz="UTC")),
    }
    if extra:
        cols["note"] = pa.array([f"n{j}" for j in range(10)], pa.string())
    return pa.table(cols)
write_deltalake(path, batch(0), partition_by=["country"])
for i in range(1, 12):
    write_deltalake(path, batch(i), mode="append")
write_deltalake(path, batch(100), mode="overwrite")
for i in range(12, 15):
    write_deltalake(path, batch(i, extra=True), mode="append", schema_mode="merge")
"#;

fn compare_versions(table: &Path, dumps: &Path, latest: i64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Table::at(table.to_str().unwrap()).unwrap();
    for v in 0..=latest {
        let expected = read_parquet(&dumps.join(format!("v{v}.parquet")));
        let ours = rt.block_on(async {
            let snap = t.snapshot_at(v).await.unwrap();
            t.scan(snap).collect().await.unwrap()
        });
        let exp_rows: usize = expected.iter().map(|b| b.num_rows()).sum();
        let our_rows: usize = ours.iter().map(|b| b.num_rows()).sum();
        assert_eq!(our_rows, exp_rows, "version {v}: row count");
        if exp_rows == 0 {
            continue;
        }
        let mut cols = column_names(&expected);
        cols.sort();
        assert_eq!(
            canonical_rows(&ours, &cols),
            canonical_rows(&expected, &cols),
            "version {v}: rows differ"
        );
    }
}

fn batch(i: i64, with_note: bool) -> RecordBatch {
    let ids: Vec<i64> = (0..50).map(|j| i * 100 + j).collect();
    let countries: Vec<Option<&str>> = (0..50)
        .map(|j| match j % 4 {
            0 => Some("US"),
            1 => Some("FR/x y"),
            2 => None,
            _ => Some("DÉ"),
        })
        .collect();
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("country", DataType::Utf8, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ];
    let mut cols: Vec<arrow::array::ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(StringArray::from(countries)),
        Arc::new(
            TimestampMicrosecondArray::from(
                ids.iter()
                    .map(|x| 1_700_000_000_000_000 + x)
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
    ];
    if with_note {
        fields.push(Field::new("note", DataType::Utf8, true));
        cols.push(Arc::new(StringArray::from(
            ids.iter().map(|x| format!("note {x}")).collect::<Vec<_>>(),
        )));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

#[test]
fn delta_rs_reads_every_version_shoal_writes() {
    let Some(py) = python("delta-rs interop") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t");
    let dumps = dir.path().join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = Table::at(table.to_str().unwrap()).unwrap();
        t.write(vec![batch(0, false)])
            .with_partition_by(&["country"])
            .execute()
            .await
            .unwrap();
        for i in 1..15 {
            t.write(vec![batch(i, false)]).execute().await.unwrap();
        }
        t.write(vec![batch(50, false)])
            .with_mode(SaveMode::Overwrite)
            .execute()
            .await
            .unwrap();
        for i in 15..27 {
            t.write(vec![batch(i, true)])
                .with_schema_mode(SchemaMode::Merge)
                .execute()
                .await
                .unwrap();
        }
        let snap = t.snapshot().await.unwrap();
        assert_eq!(snap.version(), 27);
        assert_eq!(
            snap.checkpoint_version(),
            Some(20),
            "automatic checkpoints every 10 commits"
        );
    });
    run_python(
        &py,
        DUMP_ALL_VERSIONS,
        &[table.to_str().unwrap(), dumps.to_str().unwrap()],
    );
    compare_versions(&table, &dumps, 27);
}

#[test]
fn shoal_reads_every_version_delta_rs_writes() {
    let Some(py) = python("delta-rs interop") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t");
    let dumps = dir.path().join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    run_python(&py, WRITE, &[table.to_str().unwrap()]);
    run_python(
        &py,
        DUMP_ALL_VERSIONS,
        &[table.to_str().unwrap(), dumps.to_str().unwrap()],
    );
    compare_versions(&table, &dumps, 15);
    // And Shoal can keep writing to it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = Table::at(table.to_str().unwrap()).unwrap();
        let snap = t.snapshot().await.unwrap();
        t.checkpoint().await.unwrap();
        let again = t.snapshot().await.unwrap();
        assert_eq!(again.checkpoint_version(), Some(snap.version()));
        assert_eq!(again.num_files(), snap.num_files());
    });
    run_python(
        &py,
        DUMP_ALL_VERSIONS,
        &[table.to_str().unwrap(), dumps.to_str().unwrap()],
    );
}
