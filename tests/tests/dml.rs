//! Data skipping and row-level operations, checked against models:
//! - a pruned scan returns exactly the rows of a full scan filtered in memory, on random
//!   tables and random predicates;
//! - random DELETEs and UPDATEs leave the table equal to an in-memory model, and delta-rs
//!   reads every version identically;
//! - only the files that must change are read or rewritten;
//! - replaceWhere, bad input and concurrent transactions commit nothing they should not.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::TryStreamExt;
use shoal_format::expr::{bind_predicate, evaluate_predicate, parse_predicate, BoundExpr};
use shoal_format::protocol::Action;
use shoal_format::scan::{ScanBuilder, ScanMetrics};
use shoal_format::transaction::conflict::check;
use shoal_format::transaction::{ReadPredicate, ReadSet};
use shoal_format::write::WriterOptions;
use shoal_format::{ConflictKind, Error, SaveMode, Snapshot, StructField, StructType, Table};
use shoal_tests::{canonical_rows, python, read_parquet, run_python, Rng, DUMP_ALL_VERSIONS};

// ---------------------------------------------------------------------------------------
// Deterministic randomness and rows
// ---------------------------------------------------------------------------------------

const PARTS: [&str; 4] = ["a", "b", "c", "d"];
const NAMES: [&str; 6] = ["alpha", "beta", "gamma", "delta", "omega", "émile"];
/// 2024-01-01 in days since the epoch.
const DAY0: i32 = 19_723;
/// 2024-01-01T00:00:00Z in microseconds.
const TS0: i64 = 1_704_067_200_000_000;
const DAY_US: i64 = 86_400_000_000;
const COLUMNS: [&str; 9] = [
    "id", "p", "k", "amount", "score", "name", "day", "ts", "flag",
];

/// One row of every test table (`id` is the only non-nullable column).
#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: i64,
    p: Option<String>,
    k: Option<i32>,
    amount: Option<i64>,
    score: Option<f64>,
    name: Option<String>,
    day: Option<i32>,
    ts: Option<i64>,
    flag: Option<bool>,
}

/// A row with every column set, derived from `id`.
fn row(id: i64, p: &str, amount: Option<i64>) -> Row {
    Row {
        id,
        p: Some(p.to_string()),
        k: Some((id % 4) as i32),
        amount,
        score: Some(id as f64 / 2.0),
        name: Some(format!("n-{id}")),
        day: Some(DAY0 + (id % 30) as i32),
        ts: Some(TS0 + id * 1_000_000),
        flag: Some(id % 2 == 0),
    }
}

fn arrow_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("p", DataType::Utf8, true),
        Field::new("k", DataType::Int32, true),
        Field::new("amount", DataType::Int64, true),
        Field::new("score", DataType::Float64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("day", DataType::Date32, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("flag", DataType::Boolean, true),
    ]))
}

fn to_batch(rows: &[Row]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.p.as_deref()))),
        Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.k))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.amount))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.score))),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.name.as_deref()),
        )),
        Arc::new(Date32Array::from_iter(rows.iter().map(|r| r.day))),
        Arc::new(
            TimestampMicrosecondArray::from_iter(rows.iter().map(|r| r.ts)).with_timezone("UTC"),
        ),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|r| r.flag))),
    ];
    RecordBatch::try_new(arrow_schema(), columns).expect("test batch")
}

/// Random rows; `cluster` shifts the ranges of amount, score, day and ts so that files
/// written from different clusters have mostly disjoint statistics.
fn gen_rows(rng: &mut Rng, next_id: &mut i64, n: usize, cluster: i64) -> Vec<Row> {
    (0..n)
        .map(|_| {
            let id = *next_id;
            *next_id += 1;
            Row {
                id,
                p: (!rng.chance(4)).then(|| rng.pick(&PARTS).to_string()),
                k: (!rng.chance(4)).then(|| rng.below(4) as i32),
                amount: (!rng.chance(8)).then(|| cluster * 1000 + rng.between(-150, 999)),
                score: (!rng.chance(6)).then(|| match rng.below(25) {
                    0 => 0.0,
                    1 => -0.0,
                    _ => (cluster * 10) as f64 + rng.between(-5000, 5000) as f64 / 100.0,
                }),
                name: (!rng.chance(8)).then(|| {
                    if rng.chance(5) {
                        // Longer than the 32 characters string statistics keep.
                        format!("zeta-{}-{}", "long".repeat(9), rng.below(100))
                    } else {
                        format!("{}-{}", rng.pick(&NAMES), rng.below(60))
                    }
                }),
                day: (!rng.chance(8)).then(|| DAY0 + cluster as i32 * 7 + rng.below(10) as i32),
                ts: (!rng.chance(8))
                    .then(|| TS0 + cluster * DAY_US + rng.below(DAY_US as u64) as i64),
                flag: (!rng.chance(10)).then(|| rng.chance(50)),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Random predicates
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Col {
    Id,
    P,
    K,
    Amount,
    Score,
    Name,
    Day,
    Ts,
    Flag,
}

const ALL_COLS: [Col; 9] = [
    Col::Id,
    Col::P,
    Col::K,
    Col::Amount,
    Col::Score,
    Col::Name,
    Col::Day,
    Col::Ts,
    Col::Flag,
];

impl Col {
    fn name(self) -> &'static str {
        match self {
            Col::Id => "id",
            Col::P => "p",
            Col::K => "k",
            Col::Amount => "amount",
            Col::Score => "score",
            Col::Name => "name",
            Col::Day => "day",
            Col::Ts => "ts",
            Col::Flag => "flag",
        }
    }

    fn is_string(self) -> bool {
        matches!(self, Col::P | Col::Name)
    }
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn date_text(days: i32) -> String {
    (chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(days as i64))
        .format("%Y-%m-%d")
        .to_string()
}

fn date_lit(rng: &mut Rng, days: i32) -> String {
    if rng.chance(50) {
        format!("DATE '{}'", date_text(days))
    } else {
        // A string compared with a date column is read as a date.
        sql_str(&date_text(days))
    }
}

fn ts_lit(micros: i64) -> String {
    let t = chrono::DateTime::from_timestamp_micros(micros).unwrap();
    format!("TIMESTAMP '{}'", t.format("%Y-%m-%d %H:%M:%S%.6f"))
}

/// A literal for `col`: often a value of an existing row (to hit equalities), else a
/// random value around the data's range.
fn lit(rng: &mut Rng, col: Col, rows: &[Row]) -> String {
    if !rows.is_empty() && rng.chance(60) {
        let r = &rows[rng.below(rows.len() as u64) as usize];
        let from_row = match col {
            Col::Id => Some(r.id.to_string()),
            Col::P => r.p.as_deref().map(sql_str),
            Col::K => r.k.map(|v| v.to_string()),
            Col::Amount => r.amount.map(|v| v.to_string()),
            Col::Score => r.score.map(|v| v.to_string()),
            Col::Name => r.name.as_deref().map(sql_str),
            Col::Day => r.day.map(|d| date_lit(rng, d)),
            Col::Ts => r.ts.map(ts_lit),
            Col::Flag => r.flag.map(|v| v.to_string()),
        };
        if let Some(s) = from_row {
            return s;
        }
    }
    if matches!(col, Col::K | Col::Amount | Col::Score) && rng.chance(15) {
        // Literals of another numeric type: decimals, doubles, longs.
        return match rng.below(3) {
            0 => format!("{}.5", rng.between(-2, 5000)),
            1 => format!("{}e2", rng.between(-5, 50)),
            _ => rng.pick(&["3000000000", "-3000000000"]).to_string(),
        };
    }
    match col {
        Col::Id => rng.between(-5, 20_000).to_string(),
        Col::P => {
            let value: &&str = rng.pick(&["a", "b", "c", "d", "z", ""]);
            sql_str(value)
        }
        Col::K => rng.between(-1, 5).to_string(),
        Col::Amount => rng.between(-500, 6000).to_string(),
        Col::Score => {
            if rng.chance(30) {
                rng.between(-60, 100).to_string()
            } else {
                (rng.between(-6000, 10_000) as f64 / 100.0).to_string()
            }
        }
        Col::Name => sql_str(&format!("{}-{}", rng.pick(&NAMES), rng.below(70))),
        Col::Day => {
            let d = DAY0 - 3 + rng.below(45) as i32;
            date_lit(rng, d)
        }
        Col::Ts => ts_lit(TS0 - DAY_US + rng.below(8 * DAY_US as u64) as i64),
        Col::Flag => rng.pick(&["true", "false"]).to_string(),
    }
}

fn like_pattern(rng: &mut Rng, col: Col, rows: &[Row]) -> String {
    let source = rows
        .get(rng.below(rows.len() as u64) as usize)
        .and_then(|r| match col {
            Col::P => r.p.clone(),
            _ => r.name.clone(),
        })
        .unwrap_or_else(|| rng.pick(&NAMES).to_string());
    let n = rng.between(0, 4) as usize;
    let prefix: String = source.chars().take(n).collect();
    match rng.below(6) {
        0 => sql_str(&format!("{prefix}_%")),
        1 => sql_str(&source),
        _ => sql_str(&format!("{prefix}%")),
    }
}

const OPS: [&str; 7] = ["=", "!=", "<>", "<", "<=", ">", ">="];

/// One comparison-like predicate on one column.
fn leaf(rng: &mut Rng, rows: &[Row], cols: &[Col]) -> String {
    let col = *rng.pick(cols);
    let c = col.name();
    match rng.below(12) {
        0..=3 => {
            let op = rng.pick(&OPS);
            format!("{c} {op} {}", lit(rng, col, rows))
        }
        4 => {
            let op = rng.pick(&OPS);
            format!("{} {op} {c}", lit(rng, col, rows))
        }
        5 => {
            let mut items: Vec<String> = (0..rng.between(1, 4))
                .map(|_| lit(rng, col, rows))
                .collect();
            if rng.chance(10) {
                items.push("NULL".into());
            }
            let not = if rng.chance(25) { "NOT " } else { "" };
            format!("{c} {not}IN ({})", items.join(", "))
        }
        6 => {
            let not = if rng.chance(25) { "NOT " } else { "" };
            format!(
                "{c} {not}BETWEEN {} AND {}",
                lit(rng, col, rows),
                lit(rng, col, rows)
            )
        }
        7 => {
            let not = if rng.chance(50) { "NOT " } else { "" };
            format!("{c} IS {not}NULL")
        }
        8 | 9 if col.is_string() => {
            let not = if rng.chance(25) { "NOT " } else { "" };
            format!("{c} {not}LIKE {}", like_pattern(rng, col, rows))
        }
        10 => derived(rng, col, rows),
        11 if rng.chance(20) => {
            // Column against column: statistics cannot decide it.
            let other = rng.pick(&[
                "amount > id",
                "score < amount",
                "k = amount % 4",
                "p = name",
            ]);
            other.to_string()
        }
        11 if rng.chance(5) => format!("{c} = NULL"),
        _ => {
            let op = rng.pick(&OPS);
            format!("{c} {op} {}", lit(rng, col, rows))
        }
    }
}

/// Predicates over expressions of a column: casts, arithmetic, functions.
fn derived(rng: &mut Rng, col: Col, rows: &[Row]) -> String {
    let op = *rng.pick(&OPS);
    match col {
        Col::Id => format!("id % 3 = {}", rng.below(3)),
        Col::K => match rng.below(2) {
            0 => format!("CAST(k AS BIGINT) {op} {}", lit(rng, col, rows)),
            _ => format!("k % 2 = {}", rng.below(2)),
        },
        Col::Amount => match rng.below(4) {
            0 => format!("amount + 1 {op} {}", lit(rng, col, rows)),
            1 => format!("coalesce(amount, 0) {op} {}", lit(rng, col, rows)),
            2 => format!("CAST(amount AS DOUBLE) {op} {}", lit(rng, Col::Score, rows)),
            _ => format!("amount * 2 {op} {}", lit(rng, col, rows)),
        },
        Col::Score => match rng.below(2) {
            0 => format!("score * 2 {op} {}", lit(rng, col, rows)),
            _ => format!("-score {op} {}", lit(rng, col, rows)),
        },
        Col::P | Col::Name => {
            let c = col.name();
            match rng.below(2) {
                0 => format!("lower({c}) LIKE {}", like_pattern(rng, col, rows)),
                _ => format!("upper({c}) = upper({})", lit(rng, col, rows)),
            }
        }
        Col::Day => {
            let ts = ts_lit(TS0 + rng.below(40 * DAY_US as u64) as i64);
            match rng.below(2) {
                0 => format!("CAST(day AS TIMESTAMP) {op} {ts}"),
                // The date column widens to a timestamp implicitly.
                _ => format!("day {op} {ts}"),
            }
        }
        Col::Ts => {
            let d = date_text(DAY0 - 1 + rng.below(8) as i32);
            match rng.below(2) {
                0 => format!("CAST(ts AS DATE) {op} DATE '{d}'"),
                _ => format!("ts {op} DATE '{d}'"),
            }
        }
        Col::Flag => rng
            .pick(&["flag", "NOT flag", "flag IS NOT TRUE", "flag IS FALSE"])
            .to_string(),
    }
}

fn predicate(rng: &mut Rng, rows: &[Row], cols: &[Col], depth: u32) -> String {
    if depth == 0 || rng.chance(40) {
        return leaf(rng, rows, cols);
    }
    match rng.below(10) {
        0..=3 => format!(
            "({}) AND ({})",
            predicate(rng, rows, cols, depth - 1),
            predicate(rng, rows, cols, depth - 1)
        ),
        4..=7 => format!(
            "({}) OR ({})",
            predicate(rng, rows, cols, depth - 1),
            predicate(rng, rows, cols, depth - 1)
        ),
        _ => format!("NOT ({})", predicate(rng, rows, cols, depth - 1)),
    }
}

// ---------------------------------------------------------------------------------------
// Table helpers
// ---------------------------------------------------------------------------------------

fn columns() -> Vec<String> {
    COLUMNS.iter().map(|c| c.to_string()).collect()
}

fn canon(batches: &[RecordBatch]) -> Vec<String> {
    canonical_rows(batches, &columns())
}

fn canon_rows(rows: &[Row]) -> Vec<String> {
    canon(&[to_batch(rows)])
}

async fn scan_all(t: &Table, snap: &Snapshot) -> Vec<RecordBatch> {
    t.scan(snap.clone()).collect().await.expect("full scan")
}

async fn table_rows(t: &Table) -> Vec<String> {
    let snap = t.snapshot().await.expect("snapshot");
    canon(&scan_all(t, &snap).await)
}

fn bind(text: &str, snap: &Snapshot) -> BoundExpr {
    bind_predicate(
        &parse_predicate(text).unwrap_or_else(|e| panic!("parse `{text}`: {e}")),
        snap.schema(),
    )
    .unwrap_or_else(|e| panic!("bind `{text}`: {e}"))
}

/// The rows of `rows` where `predicate` is TRUE, as a mask without nulls.
fn model_hits(predicate: &BoundExpr, rows: &[Row]) -> Vec<bool> {
    let mask = evaluate_predicate(predicate, &to_batch(rows)).expect("evaluate on model");
    (0..rows.len())
        .map(|i| mask.is_valid(i) && mask.value(i))
        .collect()
}

fn small_files(row_group_rows: usize) -> WriterOptions {
    WriterOptions {
        row_group_rows,
        target_file_size: 1,
        ..Default::default()
    }
}

/// Writes `rows` (one file per partition and batch) and returns the version.
async fn append(t: &Table, batches: Vec<Vec<Row>>, partition_by: Option<&[&str]>) -> i64 {
    let mut w = t
        .write(batches.iter().map(|b| to_batch(b)).collect())
        .with_writer_options(small_files(512));
    if let Some(p) = partition_by {
        w = w.with_partition_by(p);
    }
    w.execute().await.expect("append").version
}

fn file_paths(snap: &Snapshot) -> HashSet<String> {
    snap.files().iter().map(|f| f.path.clone()).collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn collect_parquet(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "_delta_log") {
                collect_parquet(root, &path, out);
            }
        } else if path.extension().is_some_and(|e| e == "parquet") {
            let rel = path.strip_prefix(root).expect("relative");
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// Data files on disk that no commit of the log ever added: what a failed operation
/// left behind.
fn stray_files(dir: &Path) -> Vec<String> {
    let mut referenced = HashSet::new();
    for entry in std::fs::read_dir(dir.join("_delta_log")).expect("log dir") {
        let path = entry.expect("log entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            for line in std::fs::read_to_string(&path).expect("commit").lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("commit line");
                if let Some(p) = v["add"]["path"].as_str() {
                    referenced.insert(percent_decode(p));
                }
            }
        }
    }
    let mut on_disk = Vec::new();
    collect_parquet(dir, dir, &mut on_disk);
    on_disk.retain(|p| !referenced.contains(p));
    on_disk.sort();
    on_disk
}

// ---------------------------------------------------------------------------------------
// delta-rs oracle
// ---------------------------------------------------------------------------------------

/// Checks that delta-rs reads each listed version as `expected` and that Shoal reads
/// every version as delta-rs does (skipped, with a notice, without the oracle).
async fn check_with_delta_rs(table: &Path, expected: &BTreeMap<i64, Vec<String>>) {
    let Some(py) = python("the delta-rs checks of DML") else {
        return;
    };
    let dumps = tempfile::tempdir().expect("tempdir");
    let latest: i64 = run_python(
        &py,
        DUMP_ALL_VERSIONS,
        &[table.to_str().unwrap(), dumps.path().to_str().unwrap()],
    )
    .trim()
    .parse()
    .expect("latest version");
    let t = Table::at(table.to_str().unwrap()).unwrap();
    assert_eq!(Some(&latest), expected.keys().last(), "latest version");
    for v in 0..=latest {
        let theirs = canon(&read_parquet(&dumps.path().join(format!("v{v}.parquet"))));
        let snap = t.snapshot_at(v).await.expect("snapshot at version");
        let ours = canon(&scan_all(&t, &snap).await);
        assert_eq!(
            ours, theirs,
            "version {v}: Shoal and delta-rs read different rows"
        );
        if let Some(model) = expected.get(&v) {
            assert_eq!(
                &theirs, model,
                "version {v}: delta-rs differs from the model"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. Pruning never drops a matching row
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct PruneTotals {
    predicates: u64,
    with_rows: u64,
    files_total: u64,
    files_skipped: u64,
    row_groups_total: u64,
    row_groups_skipped: u64,
}

/// Scans `t` with `text` and compares with the full scan filtered in memory.
async fn check_pruned_scan(
    t: &Table,
    snap: &Snapshot,
    full: &[RecordBatch],
    text: &str,
    project_id: bool,
    totals: &mut PruneTotals,
) {
    let bound = bind(text, snap);
    let expected: Vec<RecordBatch> = full
        .iter()
        .map(|b| {
            let mask = evaluate_predicate(&bound, b).expect("evaluate");
            filter_record_batch(b, &mask).expect("filter")
        })
        .collect();
    let mut scan = t
        .scan(snap.clone())
        .with_predicate(text)
        .unwrap_or_else(|e| panic!("scan predicate `{text}`: {e}"));
    let cols = if project_id {
        scan = scan.with_columns(&["id"]);
        vec!["id".to_string()]
    } else {
        columns()
    };
    let (stream, metrics) = scan.execute_with_metrics().expect("scan");
    let got: Vec<RecordBatch> = stream
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("scan `{text}`: {e}"));
    let expected = canonical_rows(&expected, &cols);
    let got = canonical_rows(&got, &cols);
    assert_eq!(
        got.len(),
        expected.len(),
        "pruned scan of `{text}` returned {} rows, the filtered full scan {}",
        got.len(),
        expected.len()
    );
    assert_eq!(got, expected, "pruned scan of `{text}` differs");
    totals.predicates += 1;
    totals.with_rows += u64::from(!expected.is_empty());
    totals.files_total += ScanMetrics::get(&metrics.files_total);
    totals.files_skipped += ScanMetrics::get(&metrics.files_skipped);
    totals.row_groups_total += ScanMetrics::get(&metrics.row_groups_total);
    totals.row_groups_skipped += ScanMetrics::get(&metrics.row_groups_skipped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_never_drops_a_matching_row() {
    let mut totals = PruneTotals::default();
    for case in 0..30u64 {
        let mut rng = Rng::new(0x5EED_0000 + case);
        let partition_by: &[&str] = match case % 4 {
            0 => &[],
            1 => &["p"],
            2 => &["k"],
            _ => &["p", "k"],
        };
        let t = Table::at(&format!("memory://prune-{case}")).unwrap();
        let options = WriterOptions {
            row_group_rows: *rng.pick(&[100, 200, 400]),
            target_file_size: *rng.pick(&[1, 48 * 1024]),
            ..Default::default()
        };
        let mut next_id = 0;
        let mut rows: Vec<Row> = Vec::new();
        for cluster in 0..rng.between(3, 5) {
            let mut batches = Vec::new();
            for _ in 0..rng.between(1, 3) {
                let n = rng.between(100, 600) as usize;
                let mut part = gen_rows(&mut rng, &mut next_id, n, cluster);
                if case % 2 == 1 {
                    // Sorted batches give row groups disjoint amount ranges.
                    part.sort_by_key(|r| r.amount);
                }
                batches.push(to_batch(&part));
                rows.extend(part);
            }
            let mut w = t.write(batches).with_writer_options(options.clone());
            if cluster == 0 {
                w = w.with_partition_by(partition_by);
            }
            w.execute().await.expect("write");
        }
        if case % 3 == 2 {
            // Rewritten files carry statistics written by DELETE/UPDATE.
            t.update()
                .with_assignment("score = score + 1")
                .with_predicate("k = 1 AND amount < 1500")
                .with_writer_options(options.clone())
                .execute()
                .await
                .expect("update");
            t.delete()
                .with_predicate("name LIKE 'beta%' AND amount > 2000")
                .with_writer_options(options.clone())
                .execute()
                .await
                .expect("delete");
        }
        let snap = t.snapshot().await.unwrap();
        let full = scan_all(&t, &snap).await;
        for i in 0..20 {
            let text = predicate(&mut rng, &rows, &ALL_COLS, 3);
            check_pruned_scan(&t, &snap, &full, &text, i % 3 == 0, &mut totals).await;
        }
    }
    eprintln!("pruning: {totals:?}");
    assert_eq!(totals.predicates, 600);
    assert!(
        totals.with_rows > 150,
        "too few predicates select rows: {totals:?}"
    );
    assert!(totals.files_skipped > 0, "no file was skipped: {totals:?}");
    assert!(
        totals.row_groups_skipped > 0,
        "no row group was skipped: {totals:?}"
    );
}

/// Point lookups on a clustered key read only the file that can hold the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_lookup_reads_only_the_file_holding_the_key() {
    let t = Table::at("memory://point").unwrap();
    let batches: Vec<Vec<Row>> = (0..8)
        .map(|f| {
            (f * 100..f * 100 + 100)
                .map(|id| row(id, "a", Some(id)))
                .collect()
        })
        .collect();
    append(&t, batches, None).await;
    let snap = t.snapshot().await.unwrap();
    assert_eq!(snap.num_files(), 8);
    for (text, rows) in [("id = 345", 1), ("id = 10000", 0), ("id IN (5, 705)", 2)] {
        let (stream, m) = t
            .scan(snap.clone())
            .with_predicate(text)
            .unwrap()
            .execute_with_metrics()
            .unwrap();
        let got: Vec<RecordBatch> = stream.try_collect().await.unwrap();
        assert_eq!(canon(&got).len(), rows, "{text}");
        let read = ScanMetrics::get(&m.files_total) - ScanMetrics::get(&m.files_skipped);
        assert_eq!(read as usize, rows, "{text}: files read");
    }
}

/// NaN is the largest double under the total order evaluation uses, so `score > x`
/// is TRUE for NaN rows. Parquet writers leave NaN out of row-group min/max, so those
/// statistics must not prune such a row group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_rows_survive_row_group_pruning() {
    let t = Table::at("memory://nan").unwrap();
    let rows: Vec<Row> = (0..400)
        .map(|id| {
            let mut r = row(id, "a", Some(id));
            r.score = Some(if id == 150 {
                f64::NAN
            } else {
                (id % 100) as f64
            });
            r
        })
        .collect();
    // One file of four row groups; only the second holds a NaN.
    t.write(vec![to_batch(&rows)])
        .with_writer_options(WriterOptions {
            row_group_rows: 100,
            ..Default::default()
        })
        .execute()
        .await
        .unwrap();
    let snap = t.snapshot().await.unwrap();
    let full = scan_all(&t, &snap).await;
    let mut totals = PruneTotals::default();
    for text in [
        "score > 1000",
        "NOT (score <= 1000)",
        "score >= 99.5",
        "score IN (1, 2) OR score > 500",
    ] {
        check_pruned_scan(&t, &snap, &full, text, false, &mut totals).await;
    }
}

/// The same NaN rows through the file statistics path: one row group per file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_rows_survive_file_pruning() {
    let t = Table::at("memory://nan-files").unwrap();
    let batches: Vec<Vec<Row>> = (0..4)
        .map(|f| {
            (f * 100..f * 100 + 100)
                .map(|id| {
                    let mut r = row(id, "a", Some(id));
                    r.score = Some(if id == 150 {
                        f64::NAN
                    } else {
                        (id % 100) as f64
                    });
                    r
                })
                .collect()
        })
        .collect();
    append(&t, batches, None).await;
    let snap = t.snapshot().await.unwrap();
    let full = scan_all(&t, &snap).await;
    let mut totals = PruneTotals::default();
    for text in [
        "score > 1000",
        "NOT (score <= 1000)",
        "score >= 99.5",
        "score < 0",
        // Float maxima are never trusted (NaN sorts above them); minima still prune.
        "score < -1",
    ] {
        check_pruned_scan(&t, &snap, &full, text, false, &mut totals).await;
    }
    assert!(totals.files_skipped > 0, "{totals:?}");
    // And DELETE agrees: the NaN row is deleted, nothing else.
    let r = t
        .delete()
        .with_predicate("score > 1000")
        .execute()
        .await
        .unwrap();
    assert_eq!(r.rows_matched, 1);
    assert_eq!(r.files_removed, 1);
}

/// A table delta-rs writes with a NaN among the doubles: delta-rs takes its file
/// statistics from Parquet, which leaves NaN out of min/max (here max = 5.0).
const WRITE_NAN: &str = r#"
import sys
import pyarrow as pa
from deltalake import write_deltalake
write_deltalake(sys.argv[1], pa.table({
    "id": pa.array(list(range(6)), pa.int64()),
    "x": pa.array([1.0, float("nan"), 2.0, 3.0, 4.0, 5.0], pa.float64()),
}))
"#;

async fn delta_rs_nan_table() -> Option<(tempfile::TempDir, Table)> {
    let py = python("the delta-rs checks of DML")?;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    run_python(&py, WRITE_NAN, &[path.to_str().unwrap()]);
    let t = Table::at(path.to_str().unwrap()).unwrap();
    Some((dir, t))
}

/// Scans of NaN rows in a file whose statistics come from delta-rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_rows_in_delta_rs_files_survive_pruning() {
    let Some((_dir, t)) = delta_rs_nan_table().await else {
        return;
    };
    let cols = vec!["id".to_string(), "x".to_string()];
    let snap = t.snapshot().await.unwrap();
    let full = scan_all(&t, &snap).await;
    for text in ["x > 1000", "x >= 5.5", "NOT (x <= 5)"] {
        let bound = bind(text, &snap);
        let expected: Vec<RecordBatch> = full
            .iter()
            .map(|b| filter_record_batch(b, &evaluate_predicate(&bound, b).unwrap()).unwrap())
            .collect();
        assert_eq!(
            canonical_rows(&expected, &cols),
            vec!["1 | NaN".to_string()],
            "{text}: NaN is the largest double"
        );
        let got = t
            .scan(snap.clone())
            .with_predicate(text)
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(
            canonical_rows(&got, &cols),
            canonical_rows(&expected, &cols),
            "{text}"
        );
    }
}

/// `x < 1000` is FALSE for NaN: DELETE must keep the NaN row of a delta-rs file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_keeps_nan_rows_of_delta_rs_files() {
    let Some((_dir, t)) = delta_rs_nan_table().await else {
        return;
    };
    let cols = vec!["id".to_string(), "x".to_string()];
    let r = t
        .delete()
        .with_predicate("x < 1000")
        .execute()
        .await
        .unwrap();
    let left = scan_all(&t, &t.snapshot().await.unwrap()).await;
    assert_eq!(
        canonical_rows(&left, &cols),
        vec!["1 | NaN".to_string()],
        "{r:?}"
    );
    assert_eq!(r.rows_matched, 5, "{r:?}");
    assert_eq!(r.files_removed_unread, 0, "{r:?}");
}

// ---------------------------------------------------------------------------------------
// 2. DELETE / UPDATE against an in-memory model, and delta-rs at every version
// ---------------------------------------------------------------------------------------

/// UPDATE assignments with their meaning on a model row.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Assign {
    AmountPlusOne,
    NameX,
    FlagNot,
    ScoreTimesTwo,
    AmountNull,
    TsConst,
    AmountCoalesce,
    KPlusOne,
}

const ASSIGNS: [Assign; 8] = [
    Assign::AmountPlusOne,
    Assign::NameX,
    Assign::FlagNot,
    Assign::ScoreTimesTwo,
    Assign::AmountNull,
    Assign::TsConst,
    Assign::AmountCoalesce,
    Assign::KPlusOne,
];

/// 2030-01-01T00:00:00Z.
const TS_2030: i64 = 1_893_456_000_000_000;

impl Assign {
    fn text(self) -> &'static str {
        match self {
            Assign::AmountPlusOne => "amount = amount + 1",
            Assign::NameX => "name = 'x'",
            Assign::FlagNot => "flag = NOT flag",
            Assign::ScoreTimesTwo => "score = score * 2",
            Assign::AmountNull => "amount = NULL",
            Assign::TsConst => "ts = TIMESTAMP '2030-01-01 00:00:00'",
            Assign::AmountCoalesce => "amount = coalesce(amount, 0) * 2",
            Assign::KPlusOne => "k = k + 1",
        }
    }

    fn column(self) -> &'static str {
        self.text().split(' ').next().unwrap()
    }

    fn apply(self, r: &mut Row) {
        match self {
            Assign::AmountPlusOne => r.amount = r.amount.map(|a| a + 1),
            Assign::NameX => r.name = Some("x".into()),
            Assign::FlagNot => r.flag = r.flag.map(|f| !f),
            Assign::ScoreTimesTwo => r.score = r.score.map(|s| s * 2.0),
            Assign::AmountNull => r.amount = None,
            Assign::TsConst => r.ts = Some(TS_2030),
            Assign::AmountCoalesce => r.amount = Some(r.amount.unwrap_or(0) * 2),
            Assign::KPlusOne => r.k = r.k.map(|k| k + 1),
        }
    }
}

/// Random DELETEs, UPDATEs and appends on one table, each checked against the model;
/// returns the model's rows at every version.
async fn dml_against_model(
    seed: u64,
    partition_by: &[&str],
    dir: &Path,
) -> BTreeMap<i64, Vec<String>> {
    let mut rng = Rng::new(seed);
    let t = Table::at(dir.to_str().unwrap()).unwrap();
    let options = small_files(150);
    let mut next_id = 0;
    let mut model: Vec<Row> = Vec::new();
    let mut versions = BTreeMap::new();
    for cluster in 0..3 {
        let mut batches = Vec::new();
        for _ in 0..2 {
            let rows = gen_rows(&mut rng, &mut next_id, 250, cluster);
            batches.push(to_batch(&rows));
            model.extend(rows);
        }
        let mut w = t.write(batches).with_writer_options(options.clone());
        if cluster == 0 {
            w = w.with_partition_by(partition_by);
        }
        let v = w.execute().await.expect("write").version;
        versions.insert(v, canon_rows(&model));
    }
    let mut cluster = 3;
    let (mut deletes, mut updates, mut noops) = (0, 0, 0);
    for step in 0..14 {
        let snap = t.snapshot().await.unwrap();
        let before = snap.version();
        let roll = rng.below(100);
        if model.len() < 400 || roll < 10 {
            let rows = gen_rows(&mut rng, &mut next_id, 300, cluster);
            cluster += 1;
            model.extend(rows.clone());
            let v = t
                .write(vec![to_batch(&rows)])
                .with_writer_options(options.clone())
                .execute()
                .await
                .expect("append")
                .version;
            versions.insert(v, canon_rows(&model));
            continue;
        }
        let text = predicate(&mut rng, &model, &ALL_COLS, 2);
        let hits = model_hits(&bind(&text, &snap), &model);
        let matched = hits.iter().filter(|h| **h).count();
        let (what, result) = if roll < 50 {
            deletes += 1;
            let r = t
                .delete()
                .with_predicate(&text)
                .with_writer_options(options.clone())
                .execute()
                .await
                .unwrap_or_else(|e| panic!("step {step}: DELETE WHERE {text}: {e}"));
            let mut keep = hits.iter().map(|h| !h);
            model.retain(|_| keep.next().unwrap());
            (format!("DELETE WHERE {text}"), r)
        } else {
            updates += 1;
            let mut assigns: Vec<Assign> = Vec::new();
            for _ in 0..rng.between(1, 2) {
                let a = *rng.pick(&ASSIGNS);
                let partition_target = partition_by.contains(&a.column());
                if !partition_target && !assigns.iter().any(|b| b.column() == a.column()) {
                    assigns.push(a);
                }
            }
            if assigns.is_empty() {
                assigns.push(Assign::NameX);
            }
            let mut u = t
                .update()
                .with_predicate(&text)
                .with_writer_options(options.clone());
            for a in &assigns {
                u = u.with_assignment(a.text());
            }
            let sets: Vec<&str> = assigns.iter().map(|a| a.text()).collect();
            let what = format!("UPDATE SET {} WHERE {text}", sets.join(", "));
            let r = u
                .execute()
                .await
                .unwrap_or_else(|e| panic!("step {step}: {what}: {e}"));
            for (row, hit) in model.iter_mut().zip(&hits) {
                if *hit {
                    for a in &assigns {
                        a.apply(row);
                    }
                }
            }
            (what, r)
        };
        assert_eq!(
            result.rows_matched as usize, matched,
            "{what}: rows matched"
        );
        assert_eq!(result.unchanged, matched == 0, "{what}: unchanged");
        if matched == 0 {
            noops += 1;
            assert_eq!(result.version, before, "{what}: nothing to commit");
        } else {
            assert_eq!(result.version, before + 1, "{what}: one commit");
            assert!(
                result.files_removed_unread <= result.files_removed,
                "{what}"
            );
            versions.insert(result.version, canon_rows(&model));
        }
        assert_eq!(result.snapshot.version(), result.version, "{what}");
        assert_eq!(
            table_rows(&t).await,
            canon_rows(&model),
            "step {step}: {what}: table differs from the model"
        );
    }
    eprintln!(
        "dml seed {seed:#x}: {deletes} deletes, {updates} updates, {noops} matched nothing, {} versions",
        versions.len()
    );
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_update_match_an_in_memory_model_and_delta_rs() {
    let parts: [&[&str]; 4] = [&[], &["p"], &["k"], &["p", "k"]];
    let cases: Vec<(u64, &[&str])> = (0..4u64)
        .map(|i| (0xD3_1E7E + i, parts[i as usize % 4]))
        .collect();
    for (seed, partition_by) in cases {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("t");
        let versions = dml_against_model(seed, partition_by, &table).await;
        // Shoal reads every older version as the model had it.
        let t = Table::at(table.to_str().unwrap()).unwrap();
        for (v, rows) in &versions {
            let snap = t.snapshot_at(*v).await.unwrap();
            assert_eq!(&canon(&scan_all(&t, &snap).await), rows, "version {v}");
        }
        assert!(stray_files(&table).is_empty());
        check_with_delta_rs(&table, &versions).await;
    }
}

// ---------------------------------------------------------------------------------------
// 3. Files touched
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_of_whole_partitions_reads_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::at(dir.path().to_str().unwrap()).unwrap();
    for i in 0..4 {
        let rows: Vec<Row> = PARTS[..3]
            .iter()
            .enumerate()
            .flat_map(|(pi, p)| {
                (0..50).map(move |j| row(i * 1000 + pi as i64 * 100 + j, p, Some(j)))
            })
            .collect();
        let partition_by: &[&str] = &["p"];
        append(&t, vec![rows], (i == 0).then_some(partition_by)).await;
    }
    let snap = t.snapshot().await.unwrap();
    assert_eq!(snap.num_files(), 12);
    let r = t
        .delete()
        .with_predicate("p = 'b'")
        .execute()
        .await
        .unwrap();
    assert!(!r.unchanged);
    assert_eq!(r.version, snap.version() + 1);
    assert_eq!(r.files_removed_unread, 4, "{r:?}");
    assert_eq!(r.files_removed, 4);
    assert_eq!(r.files_scanned, 0, "whole partitions are removed unread");
    assert_eq!(r.files_added, 0);
    assert_eq!(r.files_skipped, 8);
    assert_eq!(r.rows_matched, 200);
    assert_eq!(r.rows_copied, 0);
    let left = t.snapshot().await.unwrap();
    assert_eq!(left.num_files(), 8);
    let rows = table_rows(&t).await;
    assert_eq!(rows.len(), 400);
    assert!(rows.iter().all(|r| !r.contains(" | b | ")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_reads_and_rewrites_only_the_files_it_must() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::at(dir.path().to_str().unwrap()).unwrap();
    // Five files: ids i*100..i*100+99, amount = 2 * id (even, never null).
    let batches: Vec<Vec<Row>> = (0..5)
        .map(|i| {
            (i * 100..i * 100 + 100)
                .map(|id| row(id, "a", Some(2 * id)))
                .collect()
        })
        .collect();
    let v0 = append(&t, batches, None).await;
    assert_eq!(t.snapshot().await.unwrap().num_files(), 5);

    // Statistics prove that every row of two files matches: removed unread.
    let r = t
        .delete()
        .with_predicate("id < 200")
        .execute()
        .await
        .unwrap();
    assert_eq!(
        (
            r.files_removed_unread,
            r.files_removed,
            r.files_scanned,
            r.files_skipped
        ),
        (2, 2, 0, 3),
        "{r:?}"
    );
    assert_eq!((r.rows_matched, r.files_added), (200, 0));
    let v1 = r.version;
    assert_eq!(v1, v0 + 1);

    // In a file's range but absent: the file is read, nothing is committed.
    let r = t
        .delete()
        .with_predicate("amount = 601")
        .execute()
        .await
        .unwrap();
    assert!(r.unchanged, "{r:?}");
    assert_eq!((r.version, r.files_scanned, r.files_removed), (v1, 1, 0));
    assert_eq!(t.snapshot().await.unwrap().version(), v1);

    // Outside every file's range: nothing read, nothing committed.
    let r = t
        .delete()
        .with_predicate("id = -1")
        .execute()
        .await
        .unwrap();
    assert!(r.unchanged);
    assert_eq!((r.version, r.files_scanned, r.files_skipped), (v1, 0, 3));

    // A few rows of one file: only that file is read and rewritten.
    let before = file_paths(&t.snapshot().await.unwrap());
    let r = t
        .delete()
        .with_predicate("id >= 250 AND id < 260")
        .execute()
        .await
        .unwrap();
    assert_eq!(
        (
            r.files_scanned,
            r.files_removed,
            r.files_added,
            r.files_removed_unread,
            r.files_skipped
        ),
        (1, 1, 1, 0, 2),
        "{r:?}"
    );
    assert_eq!((r.rows_matched, r.rows_copied), (10, 90));
    let after = file_paths(&r.snapshot);
    assert_eq!(before.intersection(&after).count(), 2);

    // A compound predicate that every row of a file satisfies, by statistics.
    let r = t
        .delete()
        .with_predicate("id >= 300 AND id <= 399 AND amount > 0")
        .execute()
        .await
        .unwrap();
    assert_eq!(
        (r.files_removed_unread, r.files_scanned, r.rows_matched),
        (1, 0, 100),
        "{r:?}"
    );
    let ids: Vec<String> = table_rows(&t).await;
    assert_eq!(ids.len(), 190);
    assert!(stray_files(dir.path()).is_empty());
}

/// Files that the predicate's statistics admit but that hold no matching row are read
/// and left alone; exactly the files with a match are rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_without_a_matching_row_are_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::at(dir.path().to_str().unwrap()).unwrap();
    let amounts: [Vec<Option<i64>>; 6] = [
        (0..10).map(Some).collect(),                // holds 7
        (5..15).map(Some).collect(),                // holds 7 and 14
        vec![Some(0), Some(20), Some(0), Some(20)], // range holds 7, no row does
        (10..20).map(Some).collect(),               // holds 14
        (100..110).map(Some).collect(),             // outside
        vec![None, Some(7), None, Some(3)],         // holds 7 and nulls
    ];
    let mut id = 0;
    let batches: Vec<Vec<Row>> = amounts
        .iter()
        .map(|file| {
            file.iter()
                .map(|a| {
                    id += 1;
                    row(id, "a", *a)
                })
                .collect()
        })
        .collect();
    append(&t, batches, None).await;

    for (op, text, files) in [("delete", "amount = 7", 3), ("update", "amount = 14", 2)] {
        let snap = t.snapshot().await.unwrap();
        let bound = bind(text, &snap);
        let mut with_match = HashSet::new();
        for add in snap.files() {
            let batches = ScanBuilder::new(snap.clone())
                .with_files(vec![add.clone()])
                .collect()
                .await
                .unwrap();
            if batches
                .iter()
                .any(|b| evaluate_predicate(&bound, b).unwrap().true_count() > 0)
            {
                with_match.insert(add.path.clone());
            }
        }
        assert_eq!(with_match.len(), files, "{text}");
        let r = if op == "delete" {
            t.delete().with_predicate(text).execute().await.unwrap()
        } else {
            t.update()
                .with_assignment("name = 'updated'")
                .with_predicate(text)
                .execute()
                .await
                .unwrap()
        };
        assert_eq!(r.files_removed, with_match.len(), "{op} {text}: {r:?}");
        assert_eq!(r.files_removed_unread, 0);
        assert_eq!(
            r.files_scanned + r.files_skipped,
            snap.num_files(),
            "{op} {text}: every file is either skipped or read"
        );
        assert!(r.files_skipped >= 1, "{op} {text}: {r:?}");
        let before = file_paths(&snap);
        let after = file_paths(&r.snapshot);
        let kept: HashSet<String> = before.difference(&with_match).cloned().collect();
        assert_eq!(
            before.intersection(&after).cloned().collect::<HashSet<_>>(),
            kept,
            "{op} {text}: exactly the files with a match are replaced"
        );
    }
    let rows = table_rows(&t).await;
    assert_eq!(rows.len(), 48 - 3);
    assert_eq!(rows.iter().filter(|r| r.contains("updated")).count(), 2);
}

/// The metrics an operation returns are the ones its `commitInfo` records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operation_metrics_are_recorded_in_commit_info() {
    let t = Table::at("memory://metrics").unwrap();
    let partition_by: &[&str] = &["p"];
    append(&t, vec![base_rows()], Some(partition_by)).await;
    let metric = |ci: &shoal_format::protocol::CommitInfo, key: &str| -> u64 {
        ci.0["operationMetrics"][key]
            .as_str()
            .unwrap_or_else(|| panic!("metric {key} in {ci:?}"))
            .parse()
            .unwrap()
    };
    let d = t
        .delete()
        .with_predicate("p = 'a' OR amount = 5")
        .execute()
        .await
        .unwrap();
    let u = t
        .update()
        .with_assignment("name = 'u'")
        .with_predicate("amount < 3")
        .execute()
        .await
        .unwrap();
    let w = t
        .write(vec![to_batch(&[row(9_000, "b", Some(99))])])
        .with_mode(SaveMode::Overwrite)
        .with_replace_where("amount > 95")
        .execute()
        .await
        .unwrap();
    let history = t.history(Some(3)).await.unwrap();
    let by_version = |v: i64| &history.iter().find(|h| h.version == v).unwrap().commit_info;

    let ci = by_version(d.version);
    assert_eq!(ci.operation(), Some("DELETE"));
    assert_eq!(metric(ci, "numDeletedRows"), d.rows_matched);
    assert_eq!(d.rows_matched, 100 + 2);
    assert_eq!(metric(ci, "numCopiedRows"), d.rows_copied);
    assert_eq!(metric(ci, "numRemovedFiles"), d.files_removed as u64);
    assert_eq!(metric(ci, "numAddedFiles"), d.files_added as u64);

    let ci = by_version(u.version);
    assert_eq!(ci.operation(), Some("UPDATE"));
    assert_eq!(metric(ci, "numUpdatedRows"), u.rows_matched);
    assert_eq!(u.rows_matched, 2 * 2);
    assert_eq!(metric(ci, "numCopiedRows"), u.rows_copied);
    assert_eq!(metric(ci, "numRemovedFiles"), u.files_removed as u64);
    assert_eq!(metric(ci, "numAddedFiles"), u.files_added as u64);

    let ci = by_version(w.version);
    assert_eq!(metric(ci, "numDeletedRows"), 2 * 4);
    assert_eq!(metric(ci, "numRemovedFiles"), w.files_removed as u64);
    assert!(ci.0["operationParameters"]["predicate"]
        .as_str()
        .is_some_and(|p| p.contains("amount")));
}

// ---------------------------------------------------------------------------------------
// 4. replaceWhere
// ---------------------------------------------------------------------------------------

fn base_rows() -> Vec<Row> {
    PARTS[..3]
        .iter()
        .enumerate()
        .flat_map(|(pi, p)| {
            (0..100).map(move |j| {
                let id = pi as i64 * 1000 + j;
                row(id, p, (j % 10 != 0).then_some(j))
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_where_replaces_exactly_the_matching_rows() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::at(dir.path().to_str().unwrap()).unwrap();
    let mut model = base_rows();
    let (first, second) = model.split_at(150);
    let partition_by: &[&str] = &["p"];
    append(&t, vec![first.to_vec()], Some(partition_by)).await;
    let v = append(&t, vec![second.to_vec()], None).await;
    let mut versions = BTreeMap::new();
    versions.insert(v, canon_rows(&model));

    // Whole partition: the other partitions' files stay as they are.
    let snap = t.snapshot().await.unwrap();
    let others: HashSet<String> = snap
        .files()
        .iter()
        .filter(|f| f.partition_values.get("p") != Some(&Some("a".into())))
        .map(|f| f.path.clone())
        .collect();
    let new_a: Vec<Row> = (0..40).map(|j| row(10_000 + j, "a", Some(500))).collect();
    let r = t
        .write(vec![to_batch(&new_a)])
        .with_mode(SaveMode::Overwrite)
        .with_replace_where("p = 'a'")
        .execute()
        .await
        .unwrap();
    model.retain(|r| r.p.as_deref() != Some("a"));
    model.extend(new_a);
    versions.insert(r.version, canon_rows(&model));
    assert_eq!(r.version, snap.version() + 1);
    assert_eq!(table_rows(&t).await, canon_rows(&model));
    assert!(file_paths(&r.snapshot).is_superset(&others));

    // On a data column: rows with amount >= 90 go (files partly matching are rewritten),
    // rows with a NULL amount stay.
    let new_rows: Vec<Row> = (0..6)
        .map(|j| row(20_000 + j, PARTS[j as usize % 3], Some(90 + j)))
        .collect();
    let r = t
        .write(vec![to_batch(&new_rows)])
        .with_mode(SaveMode::Overwrite)
        .with_replace_where("amount >= 90")
        .execute()
        .await
        .unwrap();
    model.retain(|r| r.amount.is_none_or(|a| a < 90));
    model.extend(new_rows);
    versions.insert(r.version, canon_rows(&model));
    assert_eq!(table_rows(&t).await, canon_rows(&model));
    let v_ok = r.version;

    // Rows that do not satisfy the predicate: rejected, nothing committed.
    let bad = [
        (
            "p = 'a'",
            vec![row(30_000, "a", Some(1)), row(30_001, "b", Some(1))],
        ),
        (
            "amount >= 90",
            vec![row(30_002, "a", Some(95)), row(30_003, "a", None)],
        ),
        ("amount >= 90", vec![row(30_004, "c", Some(89))]),
    ];
    for (pred, rows) in bad {
        let e = t
            .write(vec![to_batch(&rows)])
            .with_mode(SaveMode::Overwrite)
            .with_replace_where(pred)
            .execute()
            .await
            .expect_err("rows outside the predicate");
        assert!(matches!(e, Error::NotAllowed(_)), "{pred}: {e}");
        assert_eq!(t.snapshot().await.unwrap().version(), v_ok);
        assert_eq!(table_rows(&t).await, canon_rows(&model));
    }
    let e = t
        .write(vec![to_batch(&[row(30_005, "a", Some(1))])])
        .with_replace_where("p = 'a'")
        .execute()
        .await
        .expect_err("replaceWhere needs overwrite");
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert_eq!(t.snapshot().await.unwrap().version(), v_ok);
    assert!(
        stray_files(dir.path()).is_empty(),
        "{:?}",
        stray_files(dir.path())
    );
    check_with_delta_rs(dir.path(), &versions).await;
}

// ---------------------------------------------------------------------------------------
// 5. Bad input: a clear error, nothing committed
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_error_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::at(dir.path().to_str().unwrap()).unwrap();
    let rows = base_rows();
    let partition_by: &[&str] = &["p"];
    let version = append(&t, vec![rows.clone()], Some(partition_by)).await;
    let expected = canon_rows(&rows);

    type Check = fn(&Error) -> bool;
    let deletes: [(&str, Check); 8] = [
        ("amount >", |e| matches!(e, Error::InvalidExpression(_))),
        ("amount > 5 AND", |e| {
            matches!(e, Error::InvalidExpression(_))
        }),
        ("", |e| matches!(e, Error::InvalidExpression(_))),
        ("amount > 5 ORDER BY id", |e| {
            matches!(e, Error::InvalidExpression(_))
        }),
        ("amout > 5", |e| {
            matches!(e, Error::UnknownColumn { column, .. } if column == "amout")
                && e.to_string().contains("did you mean `amount`")
        }),
        ("name = DATE '2024-01-01'", |e| {
            matches!(e, Error::ExpressionType(_))
                && e.to_string().contains("cannot compare string with date")
        }),
        ("day = 'not a date'", |e| {
            matches!(e, Error::ExpressionType(_))
        }),
        ("amount + 1", |e| matches!(e, Error::ExpressionType(_))),
    ];
    for (text, ok) in deletes {
        let e = t
            .delete()
            .with_predicate(text)
            .execute()
            .await
            .expect_err(text);
        assert!(ok(&e), "DELETE WHERE `{text}`: unexpected error {e:?}");
        let e = t
            .scan(t.snapshot().await.unwrap())
            .with_predicate(text)
            .expect_err(text);
        assert!(ok(&e), "scan `{text}`: unexpected error {e:?}");
    }

    let updates: [(&[&str], Option<&str>, Check); 8] = [
        (
            &["id = NULL"],
            None,
            |e| matches!(e, Error::SchemaMismatch { column, .. } if column == "id"),
        ),
        // Matched rows with a NULL amount would put NULL into `id`.
        (
            &["id = amount"],
            Some("amount IS NULL OR amount > 50"),
            |e| matches!(e, Error::SchemaMismatch { column, .. } if column == "id"),
        ),
        (&["amout = 1"], None, |e| {
            matches!(e, Error::UnknownColumn { column, .. } if column == "amout")
                && e.to_string().contains("did you mean `amount`")
        }),
        (
            &["nope = 1"],
            Some("amount > 1"),
            |e| matches!(e, Error::UnknownColumn { column, .. } if column == "nope"),
        ),
        (&["name = DATE '2024-01-01'"], None, |e| {
            matches!(e, Error::ExpressionType(_))
        }),
        (&["amount = 1"], Some("amout > 1"), |e| {
            matches!(e, Error::UnknownColumn { .. })
        }),
        (&["p = 'z'"], None, |e| {
            matches!(e, Error::InvalidArgument(_))
        }),
        (&[], None, |e| matches!(e, Error::InvalidArgument(_))),
    ];
    for (assignments, pred, ok) in updates {
        let mut u = t.update();
        for a in assignments {
            u = u.with_assignment(*a);
        }
        if let Some(p) = pred {
            u = u.with_predicate(p);
        }
        let e = u.execute().await.expect_err("bad update");
        assert!(
            ok(&e),
            "UPDATE SET {assignments:?} WHERE {pred:?}: unexpected error {e:?}"
        );
        assert_eq!(t.snapshot().await.unwrap().version(), version);
    }

    let e = t
        .write(vec![to_batch(&rows[..1])])
        .with_mode(SaveMode::Overwrite)
        .with_replace_where("amout > 1")
        .execute()
        .await
        .expect_err("unknown column in replaceWhere");
    assert!(matches!(e, Error::UnknownColumn { .. }), "{e}");

    // Nothing was committed, nothing was left behind, the table reads as before.
    assert_eq!(t.snapshot().await.unwrap().version(), version);
    assert_eq!(table_rows(&t).await, expected);
    assert_eq!(stray_files(dir.path()), Vec::<String>::new());
}

/// An UPDATE that fails on its second rewritten file must not leave the first one's
/// new data file behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_update_leaves_no_data_files_behind() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::at(dir.path().to_str().unwrap()).unwrap();
    // Two files; only the second has a row whose amount is NULL.
    let first: Vec<Row> = (0..50).map(|id| row(id, "a", Some(id))).collect();
    let second: Vec<Row> = (50..100)
        .map(|id| row(id, "a", (id != 75).then_some(id)))
        .collect();
    let v = append(&t, vec![first, second], None).await;
    let e = t
        .update()
        .with_assignment("id = amount")
        .with_writer_options(WriterOptions {
            target_file_size: 1,
            ..Default::default()
        })
        .execute()
        .await
        .expect_err("NULL into id");
    assert!(matches!(e, Error::SchemaMismatch { .. }), "{e}");
    assert_eq!(t.snapshot().await.unwrap().version(), v);
    assert_eq!(stray_files(dir.path()), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------
// 6. Conflicts between two interleaved transactions
// ---------------------------------------------------------------------------------------

/// Partition a: ids 0..99 (amount id % 50) and 3000..3099 (amount 500..599);
/// b: 100..199 (amount id % 50, holds 7) and 1000..1099 (even amounts 0..198, no 7);
/// c: 200..299 (amount id % 50) and 2000..2099 (amount 1000..1099).
/// One file per partition and write.
async fn conflict_table(dir: &Path) -> (Table, Vec<Row>) {
    let t = Table::at(dir.to_str().unwrap()).unwrap();
    let first: Vec<Row> = (0..300)
        .map(|id| row(id, PARTS[(id / 100) as usize], Some(id % 50)))
        .collect();
    let second: Vec<Row> = (0..100)
        .map(|j| row(3000 + j, "a", Some(500 + j)))
        .chain((0..100).map(|j| row(1000 + j, "b", Some(2 * j))))
        .chain((0..100).map(|j| row(2000 + j, "c", Some(1000 + j))))
        .collect();
    let partition_by: &[&str] = &["p"];
    append(&t, vec![first.clone()], Some(partition_by)).await;
    append(&t, vec![second.clone()], None).await;
    assert_eq!(t.snapshot().await.unwrap().num_files(), 6);
    (t, [first, second].concat())
}

fn is_conflict(e: &Error, want: fn(&ConflictKind) -> bool) -> bool {
    matches!(e, Error::Conflict(k) if want(k))
}

/// B failed: the table is A's commit, readable, with no file of B left behind.
async fn assert_only_a_committed(t: &Table, dir: &Path, a_version: i64, model: &[Row]) {
    assert_eq!(t.snapshot().await.unwrap().version(), a_version);
    assert_eq!(table_rows(t).await, canon_rows(model));
    assert_eq!(stray_files(dir), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deletes_of_the_same_file_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (t, mut model) = conflict_table(dir.path()).await;
    let s = t.snapshot().await.unwrap();
    let a = t
        .delete()
        .with_predicate("p = 'a' AND amount = 7")
        .with_snapshot(s.clone())
        .execute()
        .await
        .unwrap();
    assert_eq!(a.version, s.version() + 1);
    model.retain(|r| !(r.p.as_deref() == Some("a") && r.amount == Some(7)));
    let e = t
        .delete()
        .with_predicate("p = 'a' AND amount = 8")
        .with_snapshot(s.clone())
        .execute()
        .await
        .expect_err("B removes the file A removed");
    assert!(
        is_conflict(&e, |k| matches!(
            k,
            ConflictKind::ConcurrentDeleteDelete { .. } | ConflictKind::ConcurrentDeleteRead { .. }
        )),
        "{e:?}"
    );
    assert_only_a_committed(&t, dir.path(), a.version, &model).await;

    // Whole-partition deletes remove files unread; they conflict all the same.
    let s = t.snapshot().await.unwrap();
    let a = t
        .delete()
        .with_predicate("p = 'c'")
        .with_snapshot(s.clone())
        .execute()
        .await
        .unwrap();
    model.retain(|r| r.p.as_deref() != Some("c"));
    let e = t
        .delete()
        .with_predicate("p = 'c' OR p = 'z'")
        .with_snapshot(s)
        .execute()
        .await
        .expect_err("both remove partition c");
    assert!(
        is_conflict(&e, |k| matches!(
            k,
            ConflictKind::ConcurrentDeleteDelete { .. }
        )),
        "{e:?}"
    );
    assert_only_a_committed(&t, dir.path(), a.version, &model).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_the_same_file_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (t, mut model) = conflict_table(dir.path()).await;
    let s = t.snapshot().await.unwrap();
    let a = t
        .update()
        .with_assignment("name = 'A'")
        .with_predicate("p = 'c' AND amount = 3")
        .with_snapshot(s.clone())
        .execute()
        .await
        .unwrap();
    for r in model.iter_mut() {
        if r.p.as_deref() == Some("c") && r.amount == Some(3) {
            r.name = Some("A".into());
        }
    }
    let e = t
        .update()
        .with_assignment("name = 'B'")
        .with_predicate("p = 'c' AND amount = 4")
        .with_snapshot(s)
        .execute()
        .await
        .expect_err("both rewrite the same file");
    assert!(
        is_conflict(&e, |k| matches!(
            k,
            ConflictKind::ConcurrentDeleteDelete { .. }
        )),
        "{e:?}"
    );
    assert_only_a_committed(&t, dir.path(), a.version, &model).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_conflicts_when_a_file_it_read_was_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let (t, mut model) = conflict_table(dir.path()).await;
    let s = t.snapshot().await.unwrap();
    // A rewrites b's second file (ids 1000..); statistics keep it off b's first file.
    let a = t
        .update()
        .with_assignment("amount = amount + 2")
        .with_predicate("p = 'b' AND id >= 1000")
        .with_snapshot(s.clone())
        .execute()
        .await
        .unwrap();
    assert_eq!((a.files_removed, a.files_skipped), (1, 5), "{a:?}");
    for r in model.iter_mut() {
        if r.p.as_deref() == Some("b") && r.id >= 1000 {
            r.amount = r.amount.map(|x| x + 2);
        }
    }
    // B removes b's first file (it holds amount 7) and reads b's second one (its range
    // 0..198 admits 7): A removed a file B's outcome depends on.
    let e = t
        .delete()
        .with_predicate("p = 'b' AND amount = 7")
        .with_snapshot(s)
        .execute()
        .await
        .expect_err("B read a file A rewrote");
    assert!(
        is_conflict(&e, |k| matches!(
            k,
            ConflictKind::ConcurrentDeleteRead { .. }
        )),
        "{e:?}"
    );
    assert_only_a_committed(&t, dir.path(), a.version, &model).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_append_does_not_conflict_with_a_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (t, mut model) = conflict_table(dir.path()).await;
    let s = t.snapshot().await.unwrap();
    let appended: Vec<Row> = (0..10).map(|j| row(5000 + j, "a", Some(7))).collect();
    let a = t
        .write(vec![to_batch(&appended)])
        .with_snapshot(s.clone())
        .execute()
        .await
        .unwrap();
    let b = t
        .delete()
        .with_predicate("amount = 7")
        .with_snapshot(s.clone())
        .execute()
        .await
        .expect("a blind append never conflicts (WriteSerializable)");
    assert_eq!(a.version, s.version() + 1);
    assert_eq!(b.version, a.version + 1, "B rebased onto A");
    // B is ordered before A: A's rows survive although they match B's predicate.
    model.retain(|r| r.amount != Some(7));
    model.extend(appended);
    assert_eq!(table_rows(&t).await, canon_rows(&model));
    let snap = t.snapshot().await.unwrap();
    let sevens = t
        .scan(snap)
        .with_predicate("amount = 7")
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(canon(&sevens).len(), 10);
    assert_eq!(stray_files(dir.path()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_making_rows_match_conflicts_with_a_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (t, mut model) = conflict_table(dir.path()).await;
    let s = t.snapshot().await.unwrap();
    // A rewrites c's second file (amounts 1000..), which B's statistics skip, and
    // gives its rows the amount B deletes.
    let a = t
        .update()
        .with_assignment("amount = 7")
        .with_predicate("p = 'c' AND amount >= 1000")
        .with_snapshot(s.clone())
        .execute()
        .await
        .unwrap();
    for r in model.iter_mut() {
        if r.p.as_deref() == Some("c") && r.amount.is_some_and(|a| a >= 1000) {
            r.amount = Some(7);
        }
    }
    let e = t
        .delete()
        .with_predicate("p = 'c' AND amount = 7")
        .with_snapshot(s)
        .execute()
        .await
        .expect_err("A added rows B's predicate selects");
    assert!(
        is_conflict(&e, |k| matches!(k, ConflictKind::ConcurrentAppend { .. })),
        "{e:?}"
    );
    assert_only_a_committed(&t, dir.path(), a.version, &model).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_where_adding_matching_rows_conflicts_with_a_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (t, mut model) = conflict_table(dir.path()).await;

    // A's rows can match B's predicate: B must not commit.
    let s = t.snapshot().await.unwrap();
    let rows_d: Vec<Row> = (0..5).map(|j| row(6000 + j, "d", Some(7))).collect();
    let a = t
        .write(vec![to_batch(&rows_d)])
        .with_mode(SaveMode::Overwrite)
        .with_replace_where("p = 'd'")
        .with_snapshot(s.clone())
        .execute()
        .await
        .unwrap();
    model.extend(rows_d);
    let e = t
        .delete()
        .with_predicate("amount = 7")
        .with_snapshot(s)
        .execute()
        .await
        .expect_err("A added rows with amount 7");
    assert!(
        is_conflict(&e, |k| matches!(k, ConflictKind::ConcurrentAppend { .. })),
        "{e:?}"
    );
    assert_only_a_committed(&t, dir.path(), a.version, &model).await;

    // A's rows cannot match (by their statistics): B rebases and commits.
    let s = t.snapshot().await.unwrap();
    let rows_e: Vec<Row> = (0..5).map(|j| row(7000 + j, "e", Some(500))).collect();
    let a = t
        .write(vec![to_batch(&rows_e)])
        .with_mode(SaveMode::Overwrite)
        .with_replace_where("p = 'e'")
        .with_snapshot(s.clone())
        .execute()
        .await
        .unwrap();
    let b = t
        .delete()
        .with_predicate("amount = 7")
        .with_snapshot(s)
        .execute()
        .await
        .expect("A's rows cannot match B's predicate");
    assert_eq!(b.version, a.version + 1);
    model.retain(|r| r.amount != Some(7));
    model.extend(rows_e);
    assert_eq!(table_rows(&t).await, canon_rows(&model));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_in_disjoint_partitions_both_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (t, mut model) = conflict_table(dir.path()).await;
    let s = t.snapshot().await.unwrap();
    let a = t
        .delete()
        .with_predicate("p = 'a' AND amount = 7")
        .with_snapshot(s.clone())
        .execute()
        .await
        .unwrap();
    let b = t
        .delete()
        .with_predicate("p = 'b' AND amount = 7")
        .with_snapshot(s.clone())
        .execute()
        .await
        .expect("disjoint partitions do not conflict");
    assert_eq!((a.version, b.version), (s.version() + 1, s.version() + 2));
    assert_eq!((a.rows_matched, b.rows_matched), (2, 2));
    model.retain(|r| !(matches!(r.p.as_deref(), Some("a" | "b")) && r.amount == Some(7)));
    assert_eq!(table_rows(&t).await, canon_rows(&model));
    // B's snapshot includes A's commit.
    assert_eq!(canon(&scan_all(&t, &b.snapshot).await), canon_rows(&model));
    assert_eq!(stray_files(dir.path()), Vec::<String>::new());
}

/// The checker itself: rows added concurrently conflict only when they may match the
/// read predicate, and never when they come from a blind append.
#[test]
fn read_predicate_decides_concurrent_appends() {
    let schema = StructType::new(vec![
        StructField::new("p", shoal_format::DataType::String, true),
        StructField::new("amount", shoal_format::DataType::Long, true),
    ]);
    let read = |text: &str| ReadSet {
        predicate: Some(ReadPredicate {
            expr: bind_predicate(&parse_predicate(text).unwrap(), &schema).unwrap(),
            partition_columns: vec!["p".into()],
        }),
        ..Default::default()
    };
    let add = |p: &str, lo: i64, hi: i64, data_change: bool| {
        let stats = format!(
            r#"{{"numRecords":3,"minValues":{{"amount":{lo}}},"maxValues":{{"amount":{hi}}},"nullCount":{{"amount":0}}}}"#
        );
        let line = serde_json::json!({"add": {
            "path": format!("p={p}/f-{lo}.parquet"),
            "partitionValues": {"p": p},
            "size": 1, "modificationTime": 1, "dataChange": data_change,
            "stats": stats,
        }});
        Action::from_json_line(&line.to_string()).unwrap().unwrap()
    };
    let info = |blind: bool| {
        Action::from_json_line(&format!(
            r#"{{"commitInfo":{{"operation":"WRITE","isBlindAppend":{blind}}}}}"#
        ))
        .unwrap()
        .unwrap()
    };
    let b = read("p = 'c' AND amount = 7");
    let appended =
        |r: &Result<(), ConflictKind>| matches!(r, Err(ConflictKind::ConcurrentAppend { .. }));
    assert!(appended(&check(&b, &[info(false), add("c", 0, 10, true)])));
    assert!(
        check(&b, &[info(false), add("d", 0, 10, true)]).is_ok(),
        "other partition"
    );
    assert!(
        check(&b, &[info(false), add("c", 100, 200, true)]).is_ok(),
        "stats exclude"
    );
    assert!(
        check(&b, &[info(true), add("c", 0, 10, true)]).is_ok(),
        "blind append"
    );
    assert!(
        check(&b, &[info(false), add("c", 0, 10, false)]).is_ok(),
        "no data change"
    );
    let wide = read("amount > 5 OR p = 'x'");
    assert!(appended(&check(
        &wide,
        &[info(false), add("x", 0, 1, true)]
    )));
    assert!(check(&wide, &[info(false), add("y", 0, 1, true)]).is_ok());
}
