//! Interop with delta-rs (the `deltalake` Python package), both ways: every version of a
//! table Shoal writes reads identically in delta-rs, and every version of a table
//! delta-rs writes reads identically in Shoal.

use std::path::Path;

use std::sync::Arc;

use arrow::array::{
    Date32Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use shoal_format::{SaveMode, SchemaMode, Table};
use shoal_tests::{
    canonical_rows, column_names, deltalake_s3_options, python, read_parquet, run_python, s3_base,
    s3_uri, DUMP_ALL_VERSIONS,
};

/// Writes a table with delta-rs: partitioned appends, an overwrite, schema evolution.
const WRITE: &str = r#"
import sys, json
import pyarrow as pa
from deltalake import write_deltalake as _write
path = sys.argv[1]
opts = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
def write_deltalake(*a, **k):
    _write(*a, storage_options=opts, **k)
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

fn compare_versions(table: &str, dumps: &Path, latest: i64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Table::at(table).unwrap();
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
    rows_batch(i, 50, with_note)
}

/// `rows` rows with ids from `i * 100` up. From about a thousand rows on, the writer
/// stores `id` and `ts` DELTA_BINARY_PACKED.
fn rows_batch(i: i64, rows: i64, with_note: bool) -> RecordBatch {
    let ids: Vec<i64> = (0..rows).map(|j| i * 100 + j).collect();
    let countries: Vec<Option<&str>> = (0..rows)
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

/// The footers of the data files under `dir` (partition directories included).
fn parquet_footers(dir: &Path) -> Vec<parquet::file::metadata::ParquetMetaData> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(parquet_footers(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
            out.push(reader.metadata().clone());
        }
    }
    out
}

/// Data files under `dir` with a DELTA_BINARY_PACKED column.
fn delta_packed_files(dir: &Path) -> usize {
    parquet_footers(dir)
        .iter()
        .filter(|m| {
            m.row_groups().iter().any(|rg| {
                rg.columns().iter().any(|c| {
                    c.encodings()
                        .any(|e| e == parquet::basic::Encoding::DELTA_BINARY_PACKED)
                })
            })
        })
        .count()
}

/// Where a test's table lives and how delta-rs reaches it: a local directory, or a
/// prefix on the S3 gateway with delta-rs `storage_options`.
struct Place {
    _dir: tempfile::TempDir,
    table: String,
    dumps: std::path::PathBuf,
    options: Option<String>,
}

impl Place {
    fn new(s3: Option<&str>) -> Place {
        let dir = tempfile::tempdir().unwrap();
        let dumps = dir.path().join("dumps");
        std::fs::create_dir_all(&dumps).unwrap();
        let (table, options) = match s3 {
            Some(base) => (s3_uri(base, "interop"), Some(deltalake_s3_options())),
            None => (dir.path().join("t").to_str().unwrap().to_string(), None),
        };
        Place {
            _dir: dir,
            table,
            dumps,
            options,
        }
    }

    /// Arguments for a script taking the table, then maybe other arguments, then the
    /// storage options last.
    fn args<'a>(&'a self, middle: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![self.table.as_str()];
        args.extend_from_slice(middle);
        if let Some(o) = &self.options {
            args.push(o);
        }
        args
    }

    /// Writes `batch` as the table's first version.
    fn write_one(&self, batch: RecordBatch) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let t = Table::at(&self.table).unwrap();
            t.write(vec![batch]).execute().await.unwrap();
        });
    }

    /// Asserts that delta-rs reads every version up to `latest` as Shoal does.
    fn assert_delta_rs_reads_the_same(&self, py: &str, latest: i64) {
        let dumps = self.dumps.to_str().unwrap();
        run_python(py, DUMP_ALL_VERSIONS, &self.args(&[dumps]));
        compare_versions(&self.table, &self.dumps, latest);
    }
}

#[test]
fn delta_rs_reads_every_version_shoal_writes() {
    let Some(py) = python("delta-rs interop") else {
        return;
    };
    shoal_writes_delta_rs_reads(&py, &Place::new(None));
}

#[test]
fn delta_rs_reads_every_version_shoal_writes_on_s3() {
    let Some(py) = python("delta-rs interop on S3") else {
        return;
    };
    let Some(base) = s3_base("delta-rs interop on S3") else {
        return;
    };
    shoal_writes_delta_rs_reads(&py, &Place::new(Some(&base)));
}

fn shoal_writes_delta_rs_reads(py: &str, place: &Place) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = Table::at(&place.table).unwrap();
        t.write(vec![batch(0, false)])
            .with_partition_by(&["country"])
            .execute()
            .await
            .unwrap();
        for i in 1..15 {
            // One large batch: its partition files hold 3,000 rows each.
            let rows = if i == 7 { 12_000 } else { 50 };
            t.write(vec![rows_batch(i * 1000, rows, false)])
                .execute()
                .await
                .unwrap();
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
        if place.options.is_none() {
            assert!(
                delta_packed_files(std::path::Path::new(&place.table)) > 0,
                "the large batch should be written DELTA_BINARY_PACKED, for delta-rs to read"
            );
        }
        assert_eq!(snap.version(), 27);
        assert_eq!(
            snap.checkpoint_version(),
            Some(20),
            "automatic checkpoints every 10 commits"
        );
    });
    place.assert_delta_rs_reads_the_same(py, 27);
}

/// Column chunks written uncompressed (columns zstd does not shrink: random bounded
/// ids once delta-packed, random dictionary indices) next to compressed ones read the
/// same in delta-rs.
#[test]
fn delta_rs_reads_uncompressed_columns_shoal_writes() {
    let Some(py) = python("delta-rs interop, uncompressed columns") else {
        return;
    };
    let place = Place::new(None);
    let n = 100_000usize;
    let mut rng = shoal_tests::Rng::new(7);
    let users: Vec<i64> = (0..n)
        .map(|_| (rng.next_u64() % 2_000_000) as i64)
        .collect();
    let categories: Vec<String> = (0..n)
        .map(|_| format!("category-{}", rng.next_u64() % 50))
        .collect();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("user", DataType::Int64, true),
            Field::new("category", DataType::Utf8, true),
            Field::new("note", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(users)),
            Arc::new(StringArray::from(categories)),
            Arc::new(StringArray::from(
                (0..n)
                    .map(|i| format!("the same words again {}", i % 7))
                    .collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    place.write_one(batch);
    let (uncompressed, compressed) = chunk_codecs(Path::new(&place.table));
    assert!(
        uncompressed > 0 && compressed > 0,
        "expected both uncompressed ({uncompressed}) and compressed ({compressed}) column chunks"
    );
    place.assert_delta_rs_reads_the_same(&py, 0);
}

/// Checks, with pyarrow, the string and 64-bit integer column chunks of every data
/// file under a directory: their footer statistics (min, max, null count) against the
/// values pyarrow reads from the row group, and their encodings (dictionary for
/// strings, DELTA_BINARY_PACKED for integers). Prints the chunks of each kind checked.
const CHECK_CHUNKS: &str = r#"
import sys, glob, os
import pyarrow.parquet as pq, pyarrow.compute as pc
strings = integers = 0
for f in glob.glob(os.path.join(sys.argv[1], "**", "*.parquet"), recursive=True):
    pf = pq.ParquetFile(f)
    for rg in range(pf.metadata.num_row_groups):
        table = pf.read_row_group(rg)
        for c in range(pf.metadata.num_columns):
            meta = pf.metadata.row_group(rg).column(c)
            name = meta.path_in_schema
            col = table.column(name)
            kind = str(col.type)
            if kind == "string":
                strings += 1
                assert "RLE_DICTIONARY" in meta.encodings, (f, name, meta.encodings)
            elif kind in ("int64", "timestamp[us, tz=UTC]", "int32", "date32[day]"):
                integers += 1
                assert "DELTA_BINARY_PACKED" in meta.encodings, (f, name, meta.encodings)
            else:
                continue
            st = meta.statistics
            assert st.null_count == col.null_count, (f, name)
            mm = pc.min_max(col)
            assert st.min == mm["min"].as_py(), (f, name, st.min, mm)
            assert st.max == mm["max"].as_py(), (f, name, st.max, mm)
print(strings, integers)
"#;

/// String columns (short values, values past 16 bytes, multi-byte UTF-8, empty
/// strings, nulls, long runs, an all-null stretch) and delta-packed integer columns
/// (ids, jittered times with nulls, 32-bit values with nulls, dates) in files of
/// several row groups: Shoal builds these chunks itself; pyarrow finds each chunk's
/// statistics exact and delta-rs reads the table identically.
#[test]
fn delta_rs_and_pyarrow_read_the_chunks_shoal_builds() {
    let Some(py) = python("delta-rs interop, Shoal's own column chunks") else {
        return;
    };
    let place = Place::new(None);
    let n = 600_000usize;
    let mut rng = shoal_tests::Rng::new(11);
    let short = ["", "US", "FR/x y", "DÉ", "é", "a", "a\0", "zz", "XX"];
    let long: Vec<String> = (0..30)
        .map(|i| format!("a value longer than sixteen bytes, number {i}"))
        .collect();
    let mut shorts = Vec::with_capacity(n);
    let mut longs = Vec::with_capacity(n);
    let mut runs = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let mut ints = Vec::with_capacity(n);
    let mut days = Vec::with_capacity(n);
    for i in 0..n {
        let r = rng.next_u64();
        shorts.push((i % 5 != 2).then(|| short[(r % 9) as usize].to_string()));
        longs
            .push((!(300_000..310_000).contains(&i)).then(|| long[(r >> 8) as usize % 30].clone()));
        runs.push(Some(format!("run {:04}", i / 7_000)));
        times.push(
            (i % 13 != 5)
                .then(|| 1_700_000_000_000_000 + i as i64 * 1_000 + (r >> 40) as i64 % 5_000),
        );
        ints.push((i % 17 != 3).then(|| (i as i32).wrapping_mul(7) - (r >> 50) as i32));
        days.push(Some(10_000 + i as i32));
    }
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("short", DataType::Utf8, true),
            Field::new("long", DataType::Utf8, true),
            Field::new("runs", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("n32", DataType::Int32, true),
            Field::new("day", DataType::Date32, true),
        ])),
        vec![
            Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>())),
            Arc::new(StringArray::from(shorts)),
            Arc::new(StringArray::from(longs)),
            Arc::new(StringArray::from(runs)),
            Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
            Arc::new(Int32Array::from(ints)),
            Arc::new(Date32Array::from(days)),
        ],
    )
    .unwrap();
    place.write_one(batch);
    let row_groups: usize = parquet_footers(Path::new(&place.table))
        .iter()
        .map(|f| f.num_row_groups())
        .sum();
    assert!(
        row_groups >= 3,
        "expected several row groups, got {row_groups}"
    );
    let checked = run_python(&py, CHECK_CHUNKS, &[place.table.as_str()]);
    assert_eq!(
        checked.trim(),
        format!("{} {}", 3 * row_groups, 4 * row_groups),
        "string and integer chunks checked"
    );
    place.assert_delta_rs_reads_the_same(&py, 0);
}

/// (uncompressed, compressed) column chunks of the data files under `dir`.
fn chunk_codecs(dir: &Path) -> (usize, usize) {
    let (mut plain, mut packed) = (0, 0);
    for footer in parquet_footers(dir) {
        for c in footer.row_groups().iter().flat_map(|rg| rg.columns()) {
            if c.compression() == parquet::basic::Compression::UNCOMPRESSED {
                plain += 1;
            } else {
                packed += 1;
            }
        }
    }
    (plain, packed)
}

#[test]
fn shoal_reads_every_version_delta_rs_writes() {
    let Some(py) = python("delta-rs interop") else {
        return;
    };
    delta_rs_writes_shoal_reads(&py, &Place::new(None));
}

#[test]
fn shoal_reads_every_version_delta_rs_writes_on_s3() {
    let Some(py) = python("delta-rs interop on S3") else {
        return;
    };
    let Some(base) = s3_base("delta-rs interop on S3") else {
        return;
    };
    delta_rs_writes_shoal_reads(&py, &Place::new(Some(&base)));
}

fn delta_rs_writes_shoal_reads(py: &str, place: &Place) {
    run_python(py, WRITE, &place.args(&[]));
    place.assert_delta_rs_reads_the_same(py, 15);
    // And Shoal can keep writing to it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = Table::at(&place.table).unwrap();
        let snap = t.snapshot().await.unwrap();
        t.checkpoint().await.unwrap();
        let again = t.snapshot().await.unwrap();
        assert_eq!(again.checkpoint_version(), Some(snap.version()));
        assert_eq!(again.num_files(), snap.num_files());
    });
    let dumps = place.dumps.to_str().unwrap();
    run_python(py, DUMP_ALL_VERSIONS, &place.args(&[dumps]));
}
