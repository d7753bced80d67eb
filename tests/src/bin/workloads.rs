//! Benchmark workloads (see `/work/shared/bench/WORKLOADS.md`): the Shoal side of the
//! side-by-side comparison with delta-rs (`delta_rs_bench.py`, `compare.py`).
//!
//! ```text
//! workloads --root /tmp/shoal-bench --scale 0.1 --only W1,W2,W3 [--clean] [--out FILE]
//! ```
//!
//! Prints one JSON object per measurement (one line each) on stdout, with the same
//! `workload` / `name` values and fields as the delta-rs script. Like the script, the
//! driver runs every step in its own child process (`--step W1`, internal) so that each
//! step's `peak_rss_mb` (VmHWM) is its own, and steps share tables and a small
//! `state.json` through `--root`.
//!
//! Implemented: W1 (`bulk_append`), W2 (`stream_append`), W3 (open latest / time travel
//! without and with a checkpoint, `create_checkpoint`), W5's lookups before z-ordering
//! (`point_lookup_before_zorder`), W6setup (`bulk_append_copy_of_w1`) and W7
//! (`delete_country_xx`). The other steps of the document print `{"workload": ..,
//! "name": "_skipped", "skipped": true}` (no `seconds`, so `compare.py` ignores the line
//! and lists the step as "not measured on Shoal yet"); so do W5's `zorder` and
//! `point_lookup_after_zorder`, with `"skipped_name"` saying which.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use clap::Parser;
use futures::TryStreamExt;
use serde_json::{json, Map, Value};
use shoal_format::scan::ScanMetrics;
use shoal_format::{SaveMode, Snapshot, StructType, Table};

// ------------------------------------------------------------------------------------
// Deterministic event data: a port of `events_for_ids` in delta_rs_bench.py
// ------------------------------------------------------------------------------------

const SEED: u64 = 42;
/// 2024-01-01T00:00:00Z, microseconds since the epoch.
const T0_US: i64 = 1_704_067_200_000_000;
const TS_STEP_US: i64 = 1_000;
const TS_JITTER_US: u64 = 2_000;
const MAX_USER_ID: u64 = 1_000_000;
const EVENTS: [&str; 8] = [
    "view",
    "click",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "checkout",
    "purchase",
    "refund",
];
const COUNTRIES: [&str; 20] = [
    "US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "PL", "BR", "MX", "AR", "CA", "JP", "KR", "CN",
    "IN", "AU", "ZA", "XX",
];

/// splitmix64 finaliser (wrapping arithmetic).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `splitmix64(seed * 256 + column)`: the per-column key of `column_hash`.
fn column_key(seed: u64, column: u64) -> u64 {
    splitmix64(seed.wrapping_mul(256).wrapping_add(column))
}

/// `column_hash(id, seed, c) = splitmix64(id XOR splitmix64(seed * 256 + c))`.
fn column_hash(id: i64, key: u64) -> u64 {
    splitmix64((id as u64) ^ key)
}

/// Uniform hash onto `[0, n)`, `n < 2^32`: `((h >> 32) * n) >> 32`.
fn bounded(h: u64, n: u64) -> u64 {
    ((h >> 32) * n) >> 32
}

/// The Arrow schema of the script's table (pyarrow fields are nullable).
fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("user_id", DataType::Int64, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("event", DataType::Utf8, true),
        Field::new("country", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
    ]))
}

/// Event rows for the given ids; every non-id column is a pure function of (seed, id).
fn events_for_ids(ids: &[i64], seed: u64) -> RecordBatch {
    let keys: [u64; 6] = std::array::from_fn(|c| column_key(seed, c as u64));
    let n = ids.len();
    let mut user_id = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut event = Vec::with_capacity(n);
    let mut country = Vec::with_capacity(n);
    let mut amount = Vec::with_capacity(n);
    for &id in ids {
        user_id.push(bounded(column_hash(id, keys[1]), MAX_USER_ID + 1) as i64);
        ts.push(
            T0_US
                .wrapping_add(id.wrapping_mul(TS_STEP_US))
                .wrapping_add(bounded(column_hash(id, keys[2]), TS_JITTER_US) as i64),
        );
        event.push(EVENTS[bounded(column_hash(id, keys[3]), EVENTS.len() as u64) as usize]);
        country.push(COUNTRIES[bounded(column_hash(id, keys[4]), COUNTRIES.len() as u64) as usize]);
        amount.push(bounded(column_hash(id, keys[5]), 1_000_000) as f64 / 100.0);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.to_vec())),
        Arc::new(Int64Array::from(user_id)),
        Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        Arc::new(StringArray::from_iter_values(event)),
        Arc::new(StringArray::from_iter_values(country)),
        Arc::new(Float64Array::from(amount)),
    ];
    RecordBatch::try_new(events_schema(), columns).expect("events batch matches its schema")
}

fn make_events(start_id: i64, n: usize, seed: u64) -> RecordBatch {
    let ids: Vec<i64> = (start_id..start_id + n as i64).collect();
    events_for_ids(&ids, seed)
}

/// The user_id values used for point lookups (W5).
fn lookup_user_ids(n: usize) -> Vec<i64> {
    let key = column_key(SEED, 6);
    (0..n as i64)
        .map(|i| bounded(column_hash(i, key), MAX_USER_ID + 1) as i64)
        .collect()
}

/// Bytes of the batch's buffers, like pyarrow's `Table.nbytes` (buffer lengths, not
/// capacities).
fn arrow_nbytes(batch: &RecordBatch) -> usize {
    fn data_bytes(d: &arrow::array::ArrayData) -> usize {
        d.buffers().iter().map(|b| b.len()).sum::<usize>()
            + d.nulls().map(|n| n.buffer().len()).unwrap_or(0)
            + d.child_data().iter().map(data_bytes).sum::<usize>()
    }
    batch
        .columns()
        .iter()
        .map(|c| data_bytes(&c.to_data()))
        .sum()
}

// ------------------------------------------------------------------------------------
// Configuration, state, output
// ------------------------------------------------------------------------------------

#[derive(Parser, Debug)]
#[command(about = "Shoal side of the lakehouse workload benchmark (W1..W9)")]
struct Args {
    /// Directory for the tables.
    #[arg(long, default_value = "/tmp/shoal-bench")]
    root: PathBuf,
    /// Multiplies row/commit counts.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Comma-separated steps to run (default: all, in order).
    #[arg(long)]
    only: Option<String>,
    /// Also append the JSON lines to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Delete this benchmark's tables under --root first.
    #[arg(long)]
    clean: bool,
    /// Where the tables live, when not under --root: a table location URI such as
    /// `s3://bucket/bench` (S3 settings from the AWS_* environment). W1, W2 and W3 only.
    #[arg(long)]
    tables: Option<String>,
    /// Run one step in this process (internal; used by the driver).
    #[arg(long, hide = true)]
    step: Option<String>,
}

/// Every step of WORKLOADS.md, in order.
const STEPS: [&str; 13] = [
    "W1", "W2", "W3", "W4", "W5", "W5b", "W6setup", "W6a", "W6b", "W6c", "W7", "W8", "W9",
];
/// Shoal's own steps, run only when named in `--only`: C1 is the compactor's seed
/// scenario (issue 6).
const EXTRA_STEPS: [&str; 1] = ["C1"];
const IMPLEMENTED: [&str; 13] = [
    "W1", "W2", "W3", "W4", "W5", "W5b", "W6setup", "W6a", "W6b", "W6c", "W7", "W8", "C1",
];
const TABLES: [&str; 5] = ["w1", "w2", "w6", "w9", "c1"];

/// The table a step creates (and so must not find already there).
fn created_table(step: &str) -> Option<&'static str> {
    match step {
        "W1" => Some("w1"),
        "W2" => Some("w2"),
        "W6setup" => Some("w6"),
        "W9" => Some("w9"),
        "C1" => Some("c1"),
        _ => None,
    }
}

#[derive(Debug, Clone)]
struct Config {
    root: PathBuf,
    scale: f64,
    /// Table location root when the tables are not under `root` (e.g. on S3).
    tables: Option<String>,
}

/// The steps that run with the tables on a remote store (`--tables`).
const REMOTE_STEPS: [&str; 3] = ["W1", "W2", "W3"];

impl Config {
    /// `max(minimum, round(base * scale))`, with Python's round-half-to-even.
    fn n(&self, base: usize, minimum: usize) -> usize {
        minimum.max((base as f64 * self.scale).round_ties_even() as usize)
    }
    fn w1_commits(&self) -> usize {
        10
    }
    fn w1_rows_per_commit(&self) -> usize {
        self.n(1_000_000, 1_000)
    }
    fn w2_commits(&self) -> usize {
        self.n(2_000, 10)
    }
    fn w2_rows_per_commit(&self) -> usize {
        1_000
    }
    /// W5: the skip fraction over this many lookup values ...
    fn lookups(&self) -> usize {
        100
    }
    /// ... and timed reads of the first this many.
    fn timed_lookups(&self) -> usize {
        20
    }
    fn table_path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
    fn table_uri(&self, name: &str) -> Result<String> {
        if let Some(root) = &self.tables {
            return Ok(format!("{}/{name}", root.trim_end_matches('/')));
        }
        let p = self.table_path(name);
        p.to_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("table path {} is not UTF-8", p.display()))
    }
    fn table(&self, name: &str) -> Result<Table> {
        Ok(Table::at(&self.table_uri(name)?)?)
    }
    /// Whether anything is stored at the table's location.
    async fn table_exists(&self, name: &str) -> Result<bool> {
        if self.tables.is_none() {
            return Ok(self.table_path(name).exists());
        }
        let store = shoal_format::TableStore::from_uri(&self.table_uri(name)?)?;
        Ok(!store.list_all().await?.is_empty())
    }
    /// Deletes everything stored at the table's location.
    async fn remove_table(&self, name: &str) -> Result<()> {
        if self.tables.is_none() {
            let p = self.table_path(name);
            if p.exists() {
                std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            }
            return Ok(());
        }
        let store = shoal_format::TableStore::from_uri(&self.table_uri(name)?)?;
        for meta in store.list_all().await? {
            store.delete(&meta.location).await?;
        }
        Ok(())
    }
    fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    fn load_state(&self) -> Result<Map<String, Value>> {
        let f = self.state_file();
        if !f.exists() {
            return Ok(Map::new());
        }
        let text = std::fs::read_to_string(&f)?;
        match serde_json::from_str(&text)? {
            Value::Object(m) => Ok(m),
            _ => bail!("{} is not a JSON object", f.display()),
        }
    }
    fn save_state(&self, updates: Value) -> Result<()> {
        let mut state = self.load_state()?;
        if let Value::Object(u) = updates {
            state.extend(u);
        }
        std::fs::write(
            self.state_file(),
            serde_json::to_string_pretty(&Value::Object(state))?,
        )?;
        Ok(())
    }
}

/// Peak resident set size of this process (VmHWM), MiB, one decimal.
fn peak_rss_mb() -> f64 {
    let kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    round_to(kib / 1024.0, 1)
}

fn round_to(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn r6(x: f64) -> f64 {
    round_to(x, 6)
}

/// numpy.percentile with linear interpolation, rounded to 6 digits like the script.
fn pct(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let pos = q / 100.0 * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let x = v[lo] + (v[hi] - v[lo]) * (pos - lo as f64);
    r6(x)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One JSON line: workload, name, seconds, the fields, peak_rss_mb.
fn emit(workload: &str, name: &str, seconds: f64, fields: Value) {
    let mut rec = Map::new();
    rec.insert("workload".into(), json!(workload));
    rec.insert("name".into(), json!(name));
    rec.insert("seconds".into(), json!(r6(seconds)));
    if let Value::Object(f) = fields {
        rec.extend(f);
    }
    rec.insert("peak_rss_mb".into(), json!(peak_rss_mb()));
    print_line(&Value::Object(rec).to_string());
}

fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, false))
        .unwrap_or_else(|| ms.to_string())
}

/// Times `f` `repeats` times; returns (median seconds, rounded runs, last result).
async fn median_time<T, F, Fut>(repeats: usize, mut f: F) -> Result<(f64, Vec<f64>, T)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut runs = Vec::with_capacity(repeats);
    let mut last = None;
    for _ in 0..repeats {
        let t = Instant::now();
        let r = f().await?;
        runs.push(t.elapsed().as_secs_f64());
        last = Some(r);
    }
    let m = median(&runs);
    Ok((
        m,
        runs.into_iter().map(r6).collect(),
        last.expect("repeats > 0"),
    ))
}

/// Rows of a snapshot from its add-action stats (no scan).
/// Reads every row of `snap` (all columns, 64 Ki-row batches); returns the count.
async fn full_scan_rows(table: &Table, snap: Snapshot) -> Result<usize> {
    let mut stream = table.scan(snap).with_batch_size(64 * 1024).execute()?;
    let mut rows = 0usize;
    while let Some(b) = stream.try_next().await? {
        rows += b.num_rows();
    }
    Ok(rows)
}

fn snapshot_rows(snap: &Snapshot) -> Option<i64> {
    snap.totals().1
}

/// Scans the whole snapshot and checks that it holds exactly ids `0..n`, each row equal
/// to the generated one. Returns (ok, rows seen, first problem).
async fn verify_contents(
    table: &Table,
    snap: Snapshot,
    n: i64,
) -> Result<(bool, i64, Option<String>)> {
    let mut stream = table.scan(snap).with_batch_size(64 * 1024).execute()?;
    let mut seen = vec![false; n.max(0) as usize];
    let mut rows = 0i64;
    let mut problem: Option<String> = None;
    let schema = events_schema();
    while let Some(batch) = stream.try_next().await? {
        rows += batch.num_rows() as i64;
        if problem.is_some() {
            continue;
        }
        if batch.schema().fields() != schema.fields() {
            problem = Some(format!(
                "scan schema {:?} differs from the written one",
                batch.schema()
            ));
            continue;
        }
        let ids = batch.column(0).as_primitive::<Int64Type>();
        if ids.null_count() > 0 {
            problem = Some("null id".into());
            continue;
        }
        for &id in ids.values().iter() {
            if id < 0 || id >= n {
                problem = Some(format!("unexpected id {id}"));
                break;
            }
            let s = &mut seen[id as usize];
            if *s {
                problem = Some(format!("duplicate id {id}"));
                break;
            }
            *s = true;
        }
        if problem.is_some() {
            continue;
        }
        let expected = events_for_ids(ids.values(), SEED);
        for (c, field) in schema.fields().iter().enumerate() {
            if batch.column(c).to_data() != expected.column(c).to_data() {
                problem = Some(format!(
                    "column `{}` differs from the generated rows",
                    field.name()
                ));
                break;
            }
        }
    }
    if problem.is_none() && rows != n {
        problem = Some(format!("{rows} rows, expected {n}"));
    }
    Ok((problem.is_none(), rows, problem))
}

// ------------------------------------------------------------------------------------
// Workloads
// ------------------------------------------------------------------------------------

async fn fail_if_exists(cfg: &Config, table: &str) -> Result<()> {
    if cfg.table_exists(table).await? {
        bail!(
            "{} already exists; pass --clean to replace this benchmark's tables",
            cfg.table_uri(table)?
        );
    }
    Ok(())
}

/// W1: 10 appends of 1M rows (× scale) into a new table `w1`; generation untimed.
async fn w1_bulk_append(cfg: &Config) -> Result<()> {
    bulk_append(cfg, "w1", "W1", "bulk_append").await
}

/// W6setup: a fresh copy of W1's data (same rows, same 10 commits) in `w6`, for the
/// merge and delete steps; timed like W1.
async fn w6_setup(cfg: &Config) -> Result<()> {
    bulk_append(cfg, "w6", "W6setup", "bulk_append_copy_of_w1").await
}

/// 10 appends of 1M rows (× scale) into a new table; generation untimed. Emits the
/// script's W1 fields (a superset of its W6setup fields) and verifies every row.
async fn bulk_append(cfg: &Config, table_name: &str, workload: &str, name: &str) -> Result<()> {
    fail_if_exists(cfg, table_name).await?;
    let table = cfg.table(table_name)?;
    let (commits, rows_per_commit) = (cfg.w1_commits(), cfg.w1_rows_per_commit());
    let mut per_commit = Vec::with_capacity(commits);
    let mut arrow_bytes = 0usize;
    let mut problems: Vec<String> = Vec::new();
    for i in 0..commits {
        let batch = make_events((i * rows_per_commit) as i64, rows_per_commit, SEED);
        arrow_bytes += arrow_nbytes(&batch);
        let t = Instant::now();
        let r = table
            .write(vec![batch])
            .with_mode(SaveMode::Append)
            .with_auto_checkpoint(false)
            .execute()
            .await?;
        per_commit.push(t.elapsed().as_secs_f64());
        if r.version != i as i64 || r.rows != rows_per_commit {
            problems.push(format!(
                "append {i}: version {} rows {} (expected version {i}, {rows_per_commit} rows)",
                r.version, r.rows
            ));
        }
    }
    let seconds: f64 = per_commit.iter().sum();
    let snap = table.snapshot().await?;
    let (bytes, rows) = snap.totals();
    let rows = rows.unwrap_or(-1);
    let expected_rows = (commits * rows_per_commit) as i64;
    if rows != expected_rows {
        problems.push(format!("stats say {rows} rows, expected {expected_rows}"));
    }
    if snap.version() != commits as i64 - 1 {
        problems.push(format!(
            "version {}, expected {}",
            snap.version(),
            commits - 1
        ));
    }
    let files = snap.num_files();
    let version = snap.version();
    let (ok, _, problem) = verify_contents(&table, snap, expected_rows).await?;
    if !ok {
        problems.push(format!("contents: {}", problem.unwrap_or_default()));
    }
    for p in &problems {
        eprintln!("{workload} verification: {p}");
    }
    let mb = |b: f64| b / 1e6;
    emit(
        workload,
        name,
        seconds,
        json!({
            "rows": rows,
            "files": files,
            "commits": commits,
            "version": version,
            "parquet_mb": round_to(mb(bytes as f64), 2),
            "arrow_mb": round_to(mb(arrow_bytes as f64), 2),
            "rows_per_s": (rows as f64 / seconds).round() as i64,
            "parquet_mb_per_s": round_to(mb(bytes as f64) / seconds, 2),
            "arrow_mb_per_s": round_to(mb(arrow_bytes as f64) / seconds, 2),
            "commit_p50_s": pct(&per_commit, 50.0),
            "commit_max_s": pct(&per_commit, 100.0),
            "verified": problems.is_empty(),
        }),
    );
    Ok(())
}

/// W2: create `w2`, then 2,000 (× scale) appends of 1,000 rows through one chain of
/// snapshots (no log re-read per commit), auto-checkpoints off; per-commit latency.
async fn w2_stream_append(cfg: &Config) -> Result<()> {
    fail_if_exists(cfg, "w2").await?;
    let table = cfg.table("w2")?;
    let (commits, rows) = (cfg.w2_commits(), cfg.w2_rows_per_commit());
    let data = make_events(0, commits * rows, SEED);
    let schema = StructType::from_arrow(&events_schema())?;
    let mut snap = table.create(schema).execute().await?; // version 0: no data
    let mid_version = (commits / 2) as i64;
    let mut latencies = Vec::with_capacity(commits);
    // Commit timestamps of versions 0..=commits, as the writer's snapshots report them.
    let mut commit_ts = vec![snap.timestamp()];
    let mut mid_ts: Option<i64> = None;
    let mut problems: Vec<String> = Vec::new();
    for i in 0..commits {
        let batch = data.slice(i * rows, rows);
        let t = Instant::now();
        let r = table
            .write(vec![batch])
            .with_snapshot(snap)
            .with_mode(SaveMode::Append)
            .with_auto_checkpoint(false)
            .execute()
            .await?;
        latencies.push(t.elapsed().as_secs_f64());
        if r.version != i as i64 + 1 || r.rows != rows {
            problems.push(format!(
                "append {i}: version {} rows {} (expected version {}, {rows} rows)",
                r.version,
                r.rows,
                i + 1
            ));
        }
        commit_ts.push(r.snapshot.timestamp());
        snap = r.snapshot;
        if snap.version() == mid_version {
            // Remember a wall-clock instant between two commits.
            tokio::time::sleep(Duration::from_millis(20)).await;
            mid_ts = Some(now_ms());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(data);
    let total: f64 = latencies.iter().sum();
    let mid_ts = mid_ts.ok_or_else(|| anyhow!("never reached the middle version {mid_version}"))?;

    let latest = table.snapshot().await?;
    let st_rows = snapshot_rows(&latest).unwrap_or(-1);
    let expected_rows = (commits * rows) as i64;
    if st_rows != expected_rows {
        problems.push(format!(
            "stats say {st_rows} rows, expected {expected_rows}"
        ));
    }
    if latest.version() != commits as i64 {
        problems.push(format!("version {}, expected {commits}", latest.version()));
    }
    if latest.version() != snap.version() || latest.num_files() != snap.num_files() {
        problems.push(format!(
            "the writer's snapshot (v{}, {} files) differs from a fresh load (v{}, {} files)",
            snap.version(),
            snap.num_files(),
            latest.version(),
            latest.num_files()
        ));
    }
    let (mid_lo, mid_hi) = (
        commit_ts[mid_version as usize],
        commit_ts[mid_version as usize + 1],
    );
    if !(mid_lo <= mid_ts && mid_ts < mid_hi) {
        problems.push(format!(
            "middle timestamp {mid_ts} is not between commit {mid_version} ({mid_lo}) and the next ({mid_hi})"
        ));
    }
    let files = latest.num_files();
    let version = latest.version();
    let (ok, _, problem) = verify_contents(&table, latest, expected_rows).await?;
    if !ok {
        problems.push(format!("contents: {}", problem.unwrap_or_default()));
    }
    for p in &problems {
        eprintln!("W2 verification: {p}");
    }
    cfg.save_state(json!({
        "w2_mid_version": mid_version,
        "w2_mid_ts": format_ms(mid_ts),
        "w2_mid_ts_ms": mid_ts,
        "w2_rows": st_rows,
        "w2_rows_per_commit": rows,
        "w2_version": version,
        "w2_commit_ts_ms": commit_ts,
    }))?;
    let tenth = (commits / 10).max(1);
    emit(
        "W2",
        "stream_append",
        total,
        json!({
            "rows": st_rows,
            "files": files,
            "commits": commits,
            "version": version,
            "commits_per_s": round_to(commits as f64 / total, 2),
            "commit_p50_s": pct(&latencies, 50.0),
            "commit_p99_s": pct(&latencies, 99.0),
            "commit_max_s": pct(&latencies, 100.0),
            "first10pct_p50_s": pct(&latencies[..tenth], 50.0),
            "last10pct_p50_s": pct(&latencies[commits - tenth..], 50.0),
            "verified": problems.is_empty(),
        }),
    );
    Ok(())
}

/// W3 on `w2`: open latest, time travel by version and by timestamp (median of 5),
/// without then with a checkpoint (written, timed, in between).
async fn w3_open_latest(cfg: &Config) -> Result<()> {
    let state = cfg.load_state()?;
    let get = |k: &str| {
        state
            .get(k)
            .and_then(Value::as_i64)
            .ok_or_else(|| anyhow!("{} has no `{k}`: run W2 first", cfg.state_file().display()))
    };
    let mid_version = get("w2_mid_version")?;
    let mid_ts = get("w2_mid_ts_ms")?;
    let latest_version = get("w2_version")?;
    let rows_per_commit = get("w2_rows_per_commit")?;
    let table = cfg.table("w2")?;
    let mut all_ok = true;

    async fn measure(
        table: &Table,
        suffix: &str,
        has_checkpoint: bool,
        latest_version: i64,
        mid_version: i64,
        mid_ts: i64,
        rows_per_commit: i64,
    ) -> Result<bool> {
        let (seconds, runs, snap) =
            median_time(5, || async { Ok(table.snapshot().await?) }).await?;
        let ok_latest = snap.version() == latest_version
            && snap.checkpoint_version() == has_checkpoint.then_some(latest_version);
        emit(
            "W3",
            &format!("open_latest_{suffix}"),
            seconds,
            json!({
                "runs_s": runs,
                "version": snap.version(),
                "files": snap.num_files(),
                "has_checkpoint": has_checkpoint,
                "loaded_from_checkpoint": snap.checkpoint_version(),
                "verified": ok_latest,
            }),
        );
        drop(snap);

        let (seconds, runs, snap) =
            median_time(5, || async { Ok(table.snapshot_at(mid_version).await?) }).await?;
        let rows = snapshot_rows(&snap);
        let ok_version =
            snap.version() == mid_version && rows == Some(mid_version * rows_per_commit);
        emit(
            "W3",
            &format!("time_travel_version_{suffix}"),
            seconds,
            json!({
                "runs_s": runs,
                "version": snap.version(),
                "rows": rows,
                "expected_rows": mid_version * rows_per_commit,
                "has_checkpoint": has_checkpoint,
                "verified": ok_version,
            }),
        );
        drop(snap);

        let (seconds, runs, snap) = median_time(5, || async {
            Ok(table.snapshot_at_timestamp(mid_ts).await?)
        })
        .await?;
        let rows = snapshot_rows(&snap);
        let ok_ts = snap.version() == mid_version && rows == Some(mid_version * rows_per_commit);
        emit(
            "W3",
            &format!("time_travel_timestamp_{suffix}"),
            seconds,
            json!({
                "runs_s": runs,
                "timestamp": format_ms(mid_ts),
                "resolved_version": snap.version(),
                "expected_version": mid_version,
                "rows": rows,
                "has_checkpoint": has_checkpoint,
                "verified": ok_ts,
                "note": "Table::snapshot_at_timestamp(ms)",
            }),
        );
        Ok(ok_latest && ok_version && ok_ts)
    }

    all_ok &= measure(
        &table,
        "no_checkpoint",
        false,
        latest_version,
        mid_version,
        mid_ts,
        rows_per_commit,
    )
    .await?;

    let snap = table.snapshot().await?;
    let t = Instant::now();
    let last = snap.write_checkpoint().await?;
    let seconds = t.elapsed().as_secs_f64();
    let ok_cp = last.version == snap.version()
        && snap.version() == latest_version
        && last.num_of_add_files == Some(snap.num_files() as i64);
    emit(
        "W3",
        "create_checkpoint",
        seconds,
        json!({
            "version": snap.version(),
            "files": snap.num_files(),
            "checkpoint_bytes": last.size_in_bytes,
            "checkpoint_actions": last.size,
            "verified": ok_cp,
        }),
    );
    drop(snap);
    all_ok &= ok_cp;

    all_ok &= measure(
        &table,
        "checkpoint",
        true,
        latest_version,
        mid_version,
        mid_ts,
        rows_per_commit,
    )
    .await?;
    if !all_ok {
        eprintln!("W3: some measurements failed verification (see `verified`)");
    }
    Ok(())
}

/// W5 on `w1`: point lookups before z-ordering. Z-ordering and the lookups after it are
/// not implemented in Shoal yet: each prints a `_skipped` notice line instead (no
/// `seconds`, so `compare.py` lists it as "not measured on Shoal yet").
async fn w5_zorder(cfg: &Config) -> Result<()> {
    point_lookups(cfg, "W5", "before_zorder").await?;
    zorder(cfg, "W5", "zorder", None).await?;
    point_lookups(cfg, "W5", "after_zorder").await
}

/// W4 on `w2`: full scans before and after compacting its 2,000 small files.
async fn w4_optimize_compact(cfg: &Config) -> Result<()> {
    let table = cfg.table("w2")?;
    async fn measure(table: &Table, when: &str) -> Result<()> {
        let snap = table.snapshot().await?;
        let files = snap.num_files();
        let expected = snapshot_rows(&snap).unwrap_or(-1);
        let (seconds, runs, rows) = median_time(3, || {
            let snap = snap.clone();
            async move { full_scan_rows(table, snap).await }
        })
        .await?;
        emit(
            "W4",
            &format!("scan_{when}"),
            seconds,
            json!({"runs_s": runs, "rows": rows, "files": files,
                   "verified": rows as i64 == expected, "peak_rss_mb": peak_rss_mb()}),
        );
        Ok(())
    }
    measure(&table, "before_compact").await?;
    let before = table.snapshot().await?;
    let files_before = before.num_files();
    let rows_before = snapshot_rows(&before);
    let t = Instant::now();
    let r = table.optimize().with_snapshot(before).execute().await?;
    let seconds = t.elapsed().as_secs_f64();
    let after = table.snapshot().await?;
    let (bytes, rows) = after.totals();
    emit(
        "W4",
        "optimize_compact",
        seconds,
        json!({"rows": rows, "files_before": files_before, "files_after": after.num_files(),
               "parquet_mb_after": (bytes as f64 / 1e6 * 100.0).round() / 100.0,
               "verified": rows == rows_before && !r.unchanged,
               "metrics": {"numFilesAdded": r.files_added, "numFilesRemoved": r.files_removed,
                           "partitionsOptimized": r.partitions_optimized},
               "peak_rss_mb": peak_rss_mb()}),
    );
    measure(&table, "after_compact").await
}

/// W8 on `w2` after W4: VACUUM with zero retention.
async fn w8_vacuum(cfg: &Config) -> Result<()> {
    let table = cfg.table("w2")?;
    let rows_expected = snapshot_rows(&table.snapshot().await?).unwrap_or(-1);
    let t = Instant::now();
    let r = table
        .vacuum()
        .with_retention_hours(Some(0.0))
        .with_force(true)
        .execute()
        .await?;
    let seconds = t.elapsed().as_secs_f64();
    let snap = table.snapshot().await?;
    let files = snap.num_files();
    let mut stream = table.scan(snap).with_columns(&["id"]).execute()?;
    let mut rows = 0i64;
    while let Some(b) = stream.try_next().await? {
        rows += b.num_rows() as i64;
    }
    emit(
        "W8",
        "vacuum",
        seconds,
        json!({"files_deleted": r.files_deleted, "rows": rows, "files": files,
               "verified": rows == rows_expected, "peak_rss_mb": peak_rss_mb()}),
    );
    Ok(())
}

/// W5b: z-order W1's table again into ~8 MiB files; lookups.
async fn w5b_zorder_small_files(cfg: &Config) -> Result<()> {
    zorder(cfg, "W5b", "zorder_8mib_files", Some(8 * 1024 * 1024)).await?;
    point_lookups(cfg, "W5b", "after_zorder_8mib").await
}

/// Z-orders `w1` by (user_id, ts), rewriting every file (`--full`, as delta-rs does).
async fn zorder(cfg: &Config, step: &str, name: &str, target_size: Option<u64>) -> Result<()> {
    let table = cfg.table("w1")?;
    let before = table.snapshot().await?;
    let (_, rows_before) = before.totals();
    let files_before = before.num_files();
    let mut o = table
        .optimize()
        .with_snapshot(before)
        .with_zorder_by(&["user_id", "ts"])
        .with_full(true);
    if let Some(size) = target_size {
        o = o.with_target_size(size);
    }
    let t = Instant::now();
    let r = o.execute().await?;
    let seconds = t.elapsed().as_secs_f64();
    let after = table.snapshot().await?;
    let (bytes, rows) = after.totals();
    let verified = rows == rows_before && !r.unchanged;
    emit(
        step,
        name,
        seconds,
        json!({
            "rows": rows, "files_before": files_before, "files_after": after.num_files(),
            "parquet_mb_after": (bytes as f64 / 1e6 * 100.0).round() / 100.0,
            "target_size": target_size, "verified": verified,
            "metrics": {"numFilesAdded": r.files_added, "numFilesRemoved": r.files_removed,
                        "partitionsOptimized": r.partitions_optimized},
            "peak_rss_mb": peak_rss_mb(),
        }),
    );
    Ok(())
}

/// W6a: 500k updates spread uniformly over the id range + 500k new ids.
async fn w6a_merge_upsert(cfg: &Config) -> Result<()> {
    let n_rows = (cfg.w1_commits() * cfg.w1_rows_per_commit()) as i64;
    let n_upd = cfg.n(500_000, 100) as i64;
    let stride = n_rows / n_upd;
    let update_ids: Vec<i64> = (0..n_upd).map(|i| i * stride + stride / 2).collect();
    let insert_ids: Vec<i64> = (n_rows..n_rows + n_upd).collect();
    run_merge(cfg, "merge_upsert", &update_ids, &insert_ids).await
}

/// W6b/W6c: every other id of the newest 1% of ids is updated, plus as many new ids.
async fn w6b_merge_cdc(cfg: &Config, name: &str) -> Result<()> {
    let table = cfg.table("w6")?;
    let n_rows = snapshot_rows(&table.snapshot().await?).unwrap_or(0);
    let window = n_rows / 100;
    let update_ids: Vec<i64> = (n_rows - window..n_rows).step_by(2).collect();
    let insert_ids: Vec<i64> = (n_rows..n_rows + update_ids.len() as i64).collect();
    run_merge(cfg, name, &update_ids, &insert_ids).await
}

/// MERGE (update all when matched, insert all when not) of source rows made with the
/// MERGE seed, on `id`.
async fn run_merge(cfg: &Config, name: &str, update_ids: &[i64], insert_ids: &[i64]) -> Result<()> {
    let table = cfg.table("w6")?;
    let ids: Vec<i64> = update_ids.iter().chain(insert_ids).copied().collect();
    let source = events_for_ids(&ids, SEED + 1);
    let before = table.snapshot().await?;
    let rows_before = snapshot_rows(&before).unwrap_or(-1);
    let files_before = before.num_files();
    let rss_before = peak_rss_mb();
    let t = Instant::now();
    let r = table
        .merge(vec![source], "target.id = source.id")
        .with_snapshot(before)
        .when_matched_update_all(None)
        .when_not_matched_insert_all(None)
        .execute()
        .await?;
    let seconds = t.elapsed().as_secs_f64();
    let after = table.snapshot().await?;
    let rows = snapshot_rows(&after).unwrap_or(-1);
    let verified = rows == rows_before + insert_ids.len() as i64
        && r.rows_updated == update_ids.len() as u64
        && r.rows_inserted == insert_ids.len() as u64;
    emit(
        "W6",
        name,
        seconds,
        json!({
            "rows": rows, "source_rows": ids.len(), "updates": update_ids.len(),
            "inserts": insert_ids.len(), "files_before": files_before,
            "files_after": after.num_files(), "files_added": r.files_added,
            "files_removed": r.files_removed, "rss_before_mb": rss_before, "verified": verified,
            "metrics": {"num_source_rows": r.source_rows, "num_target_rows_inserted": r.rows_inserted,
                        "num_target_rows_updated": r.rows_updated, "num_target_rows_deleted": r.rows_deleted,
                        "num_target_rows_copied": r.rows_copied, "num_target_files_added": r.files_added,
                        "num_target_files_removed": r.files_removed,
                        "num_target_files_skipped": r.files_skipped,
                        "num_target_files_scanned": r.files_scanned,
                        "scan_time_ms": r.scan_ms, "rewrite_time_ms": r.rewrite_ms},
            "peak_rss_mb": peak_rss_mb(),
        }),
    );
    Ok(())
}

/// Point lookups `user_id = X` on `w1` (a port of the script's `point_lookups`): the
/// skip fraction over all lookup values from the scan planner (files skipped / files
/// considered, summed over the lookups), and timed full reads of the matching rows
/// (every column) for the first few values. Verified against a brute-force count over
/// the `user_id` column, made after the timed reads. `files_read`, `row_groups_total`,
/// `row_groups_skipped` and `rows_read` (rows decoded) are the scans' `ScanMetrics`
/// summed over the timed lookups. The script emits one line per engine
/// (`point_lookup_{pyarrow,datafusion}_{when}`); this one is `point_lookup_{when}`.
async fn point_lookups(cfg: &Config, step: &str, when: &str) -> Result<()> {
    let table = cfg.table("w1")?;
    let snap = table.snapshot().await?;
    let files = snap.num_files();
    let xs = lookup_user_ids(cfg.lookups());
    let mut problems: Vec<String> = Vec::new();

    let (mut considered, mut skipped) = (0usize, 0usize);
    let mut stats_used = true;
    for &x in &xs {
        let plan = table
            .scan(snap.clone())
            .with_predicate(&format!("user_id = {x}"))?
            .plan();
        considered += plan.files_total;
        skipped += plan.files_skipped;
        stats_used &= plan.stats_used;
        if plan.files_total != files || plan.files.len() + plan.files_skipped != files {
            problems.push(format!(
                "plan for user_id = {x}: {} files read + {} skipped of {} (table: {files})",
                plan.files.len(),
                plan.files_skipped,
                plan.files_total
            ));
        }
    }
    let frac = if considered > 0 {
        skipped as f64 / considered as f64
    } else {
        0.0
    };

    let timed_xs = &xs[..cfg.timed_lookups().min(xs.len())];
    let mut runs = Vec::with_capacity(timed_xs.len());
    let mut found: Vec<u64> = Vec::with_capacity(timed_xs.len());
    let (mut rg_total, mut rg_skipped, mut rows_read, mut files_read) = (0u64, 0u64, 0u64, 0u64);
    for &x in timed_xs {
        let t = Instant::now();
        let (stream, metrics) = table
            .scan(snap.clone())
            .with_predicate(&format!("user_id = {x}"))?
            .execute_with_metrics()?;
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        runs.push(t.elapsed().as_secs_f64());
        rg_total += ScanMetrics::get(&metrics.row_groups_total);
        rg_skipped += ScanMetrics::get(&metrics.row_groups_skipped);
        rows_read += ScanMetrics::get(&metrics.rows_read);
        files_read +=
            ScanMetrics::get(&metrics.files_total) - ScanMetrics::get(&metrics.files_skipped);
        let mut n = 0u64;
        for b in &batches {
            n += b.num_rows() as u64;
            if b.schema().fields() != events_schema().fields() {
                problems.push(format!("lookup {x}: schema {:?}", b.schema()));
            }
            let users = b.column(1).as_primitive::<Int64Type>();
            if users.null_count() > 0 || users.values().iter().any(|&u| u != x) {
                problems.push(format!("lookup {x} returned rows with another user_id"));
            }
        }
        found.push(n);
    }
    let rows_found: u64 = found.iter().sum();

    // Brute force: count each timed value over the user_id column alone.
    let mut counts: HashMap<i64, u64> = timed_xs.iter().map(|&x| (x, 0)).collect();
    let mut stream = table
        .scan(snap.clone())
        .with_columns(&["user_id"])
        .with_batch_size(64 * 1024)
        .execute()?;
    while let Some(b) = stream.try_next().await? {
        for u in b.column(0).as_primitive::<Int64Type>().iter().flatten() {
            if let Some(c) = counts.get_mut(&u) {
                *c += 1;
            }
        }
    }
    let expected: u64 = timed_xs.iter().map(|x| counts[x]).sum();
    for (&x, &n) in timed_xs.iter().zip(&found) {
        if n != counts[&x] {
            problems.push(format!(
                "user_id = {x}: the lookup found {n} rows, brute force {}",
                counts[&x]
            ));
        }
    }
    for p in &problems {
        eprintln!("{step} verification: {p}");
    }
    emit(
        step,
        &format!("point_lookup_{when}"),
        median(&runs),
        json!({
            "files": files,
            "skip_fraction": round_to(frac, 4),
            "lookups_for_skip": xs.len(),
            "timed_lookups": timed_xs.len(),
            "rows_found": rows_found,
            "expected_rows": expected,
            "total_s": round_to(runs.iter().sum(), 4),
            "p_max_s": pct(&runs, 100.0),
            "stats_used": stats_used,
            "files_read": files_read,
            "row_groups_total": rg_total,
            "row_groups_skipped": rg_skipped,
            "rows_read": rows_read,
            "verified": problems.is_empty(),
        }),
    );
    Ok(())
}

/// Counts the rows of a full scan of `country` and those equal to 'XX', by brute force
/// (no predicate): (rows, 'XX' rows).
async fn count_country_xx(table: &Table, snap: Snapshot) -> Result<(u64, u64)> {
    let mut stream = table
        .scan(snap)
        .with_columns(&["country"])
        .with_batch_size(64 * 1024)
        .execute()?;
    let (mut rows, mut xx) = (0u64, 0u64);
    while let Some(b) = stream.try_next().await? {
        rows += b.num_rows() as u64;
        xx += b
            .column(0)
            .as_string::<i32>()
            .iter()
            .filter(|c| *c == Some("XX"))
            .count() as u64;
    }
    Ok((rows, xx))
}

/// W7 on `w6`: `DELETE WHERE country = 'XX'` ('XX' is one of the 20 countries, about 5%
/// of the rows). The snapshot is loaded before the timed region, like the script's
/// `DeltaTable`. Verified: the rows deleted equal a brute-force count of 'XX' rows made
/// before; afterwards no 'XX' row remains (filtered and brute-force scans) and the
/// table holds the others.
async fn w7_delete(cfg: &Config) -> Result<()> {
    let table = cfg.table("w6")?;
    let before = table.snapshot().await?;
    let files_before = before.num_files();
    let rows_before = snapshot_rows(&before).unwrap_or(-1);
    let (scanned_before, xx_before) = count_country_xx(&table, before.clone()).await?;
    let mut problems: Vec<String> = Vec::new();
    if scanned_before as i64 != rows_before {
        problems.push(format!(
            "before: the scan saw {scanned_before} rows, the stats say {rows_before}"
        ));
    }

    let t = Instant::now();
    let r = table
        .delete()
        .with_snapshot(before)
        .with_predicate("country = 'XX'")
        .execute()
        .await?;
    let seconds = t.elapsed().as_secs_f64();

    let after = table.snapshot().await?;
    let rows_after = snapshot_rows(&after).unwrap_or(-1);
    let files_after = after.num_files();
    let remaining: usize = table
        .scan(after.clone())
        .with_columns(&["id"])
        .with_predicate("country = 'XX'")?
        .collect()
        .await?
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    let (scanned_after, xx_after) = count_country_xx(&table, after.clone()).await?;
    if r.rows_matched != xx_before {
        problems.push(format!(
            "deleted {} rows, {xx_before} had country 'XX'",
            r.rows_matched
        ));
    }
    if rows_after != rows_before - r.rows_matched as i64 {
        problems.push(format!(
            "{rows_after} rows after, expected {rows_before} - {}",
            r.rows_matched
        ));
    }
    if scanned_after as i64 != rows_after {
        problems.push(format!(
            "after: the scan saw {scanned_after} rows, the stats say {rows_after}"
        ));
    }
    if remaining != 0 || xx_after != 0 {
        problems.push(format!(
            "'XX' rows remain: {remaining} by a filtered scan, {xx_after} by brute force"
        ));
    }
    if r.version != after.version() || files_after + r.files_removed != files_before + r.files_added
    {
        problems.push(format!(
            "delete committed v{} ({} files added, {} removed); latest v{} has {files_after} files, {files_before} before",
            r.version,
            r.files_added,
            r.files_removed,
            after.version()
        ));
    }
    // The commit's operationMetrics (scan and rewrite times), when it is the latest.
    let operation_metrics = table
        .history(Some(1))
        .await?
        .into_iter()
        .find(|h| h.version == r.version && !r.unchanged)
        .and_then(|h| h.commit_info.0.get("operationMetrics").cloned());
    for p in &problems {
        eprintln!("W7 verification: {p}");
    }
    emit(
        "W7",
        "delete_country_xx",
        seconds,
        json!({
            "rows": rows_after,
            "rows_before": rows_before,
            "rows_deleted": r.rows_matched,
            "expected_deleted": xx_before,
            "files_before": files_before,
            "files_after": files_after,
            "files_added": r.files_added,
            "files_removed": r.files_removed,
            "version": r.version,
            "remaining_xx": remaining,
            "verified": problems.is_empty(),
            "metrics": {
                "num_deleted_rows": r.rows_matched,
                "num_copied_rows": r.rows_copied,
                "num_added_files": r.files_added,
                "num_removed_files": r.files_removed,
                "files_removed_unread": r.files_removed_unread,
                "files_skipped": r.files_skipped,
                "files_scanned": r.files_scanned,
                "unchanged": r.unchanged,
                "operation_metrics": operation_metrics,
            },
        }),
    );
    Ok(())
}

/// C1 (Shoal's own, not in WORKLOADS.md): the compactor's seed scenario. 10,000
/// micro-batch commits of 1,000 rows each (× scale), then one `shoal-compactor --once`
/// pass (the binary next to this one, default policy); snapshot open and full scan
/// timed before and after.
async fn c1_compactor_seed(cfg: &Config) -> Result<()> {
    fail_if_exists(cfg, "c1").await?;
    let compactor = std::env::current_exe()?
        .parent()
        .ok_or_else(|| anyhow!("no directory for this executable"))?
        .join("shoal-compactor");
    if !compactor.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p shoal-compactor`",
            compactor.display()
        );
    }
    let table = cfg.table("c1")?;
    let commits = cfg.n(10_000, 10);
    let rows = 1_000;
    let schema = StructType::from_arrow(&events_schema())?;
    table.create(schema).execute().await?;
    let started = Instant::now();
    for i in 0..commits {
        let batch = make_events((i * rows) as i64, rows, SEED);
        table.write(vec![batch]).execute().await?;
    }
    let write_s = started.elapsed().as_secs_f64();
    let expected = (commits * rows) as i64;
    let uri = cfg.table_path("c1").to_string_lossy().to_string();
    async fn measure(uri: &str, when: &str, expected: i64) -> Result<Value> {
        let (open_s, open_runs, snap) = median_time(3, || async {
            Ok(Table::open(uri).await?.snapshot().await?)
        })
        .await?;
        let table = Table::open(uri).await?;
        let (scan_s, scan_runs, rows) = median_time(3, || {
            let snap = snap.clone();
            let table = &table;
            async move { full_scan_rows(table, snap).await }
        })
        .await?;
        emit(
            "C1",
            &format!("open_{when}"),
            open_s,
            json!({"runs_s": open_runs, "files": snap.num_files(), "version": snap.version()}),
        );
        emit(
            "C1",
            &format!("scan_{when}"),
            scan_s,
            json!({"runs_s": scan_runs, "rows": rows, "files": snap.num_files(),
                    "verified": rows as i64 == expected}),
        );
        Ok(json!({"open_s": open_s, "scan_s": scan_s, "files": snap.num_files()}))
    }
    let before = measure(&uri, "before_compact", expected).await?;
    let t = Instant::now();
    let out = std::process::Command::new(&compactor)
        .args(["--once", "--table", &uri])
        .output()?;
    let pass_s = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "compactor pass failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let after = measure(&uri, "after_compact", expected).await?;
    let ratio = |k: &str| {
        let b = before[k].as_f64().unwrap_or(0.0);
        let a = after[k].as_f64().unwrap_or(0.0);
        if a > 0.0 {
            (b / a * 100.0).round() / 100.0
        } else {
            0.0
        }
    };
    emit(
        "C1",
        "compactor_pass",
        pass_s,
        json!({"commits": commits, "rows": expected, "write_s": r6(write_s),
               "files_before": before["files"], "files_after": after["files"],
               "scan_speedup": ratio("scan_s"), "open_speedup": ratio("open_s"),
               "verified": after["files"].as_u64().unwrap_or(u64::MAX) <= 60}),
    );
    Ok(())
}

async fn run_step(cfg: &Config, step: &str) -> Result<()> {
    match step {
        "W1" => w1_bulk_append(cfg).await,
        "W2" => w2_stream_append(cfg).await,
        "W3" => w3_open_latest(cfg).await,
        "W4" => w4_optimize_compact(cfg).await,
        "W5" => w5_zorder(cfg).await,
        "W5b" => w5b_zorder_small_files(cfg).await,
        "W6setup" => w6_setup(cfg).await,
        "W6a" => w6a_merge_upsert(cfg).await,
        "W6b" => w6b_merge_cdc(cfg, "merge_cdc_recent_1pct").await,
        "W6c" => w6b_merge_cdc(cfg, "merge_cdc_recent_1pct_not_streamed").await,
        "W7" => w7_delete(cfg).await,
        "W8" => w8_vacuum(cfg).await,
        "C1" => c1_compactor_seed(cfg).await,
        other => bail!("step {other} is not implemented"),
    }
}

// ------------------------------------------------------------------------------------
// Driver: each step in its own process, like the script
// ------------------------------------------------------------------------------------

/// USER_HZ: the unit of /proc/stat and /proc/<pid>/stat times (100 on Linux).
const USER_HZ: f64 = 100.0;

/// Host-wide (busy, steal) CPU seconds so far, from /proc/stat.
fn host_cpu_s() -> (f64, f64) {
    let line = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = line
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    if v.len() < 8 {
        return (0.0, 0.0);
    }
    let busy = v[0] + v[1] + v[2] + v[5] + v[6];
    (busy / USER_HZ, v[7] / USER_HZ)
}

/// CPU seconds of this process's waited-for children (cutime + cstime).
fn children_cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command name start at field 3 (state); cutime is 16, cstime 17.
    let get = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (get(13) + get(14)) / USER_HZ
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0)
}

fn meta_record(cfg: &Config) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kib| round_to(kib / (1024.0 * 1024.0), 1));
    json!({
        "workload": "meta",
        "name": "shoal",
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        "scale": cfg.scale,
        "seed": SEED,
        "shoal_format": env!("CARGO_PKG_VERSION"),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": cpu,
        "mem_gib": mem_gib,
        "compression": "zstd(1)",
        "tables": cfg.tables.clone().unwrap_or_else(|| "local disk".into()),
    })
}

fn run_all(cfg: &Config, steps: &[String], out: Option<&Path>, clean: bool) -> Result<u8> {
    std::fs::create_dir_all(&cfg.root)
        .with_context(|| format!("creating {}", cfg.root.display()))?;
    if cfg.tables.is_some() {
        if let Some(s) = steps.iter().find(|s| !REMOTE_STEPS.contains(&s.as_str())) {
            bail!(
                "step {s} runs on local tables only; with --tables: {}",
                REMOTE_STEPS.join(", ")
            );
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if clean {
        for t in TABLES {
            rt.block_on(cfg.remove_table(t))?;
        }
        let _ = std::fs::remove_file(cfg.state_file());
    } else {
        for s in steps {
            if let Some(t) = created_table(s).filter(|_| IMPLEMENTED.contains(&s.as_str())) {
                if rt.block_on(cfg.table_exists(t))? {
                    bail!(
                        "{} already holds table {t} (step {s} creates it); pass --clean to replace this benchmark's tables",
                        cfg.table_uri(t)?
                    );
                }
            }
        }
    }
    let mut sink = match out {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?,
        ),
        None => None,
    };
    let mut write = |line: &str| {
        print_line(line);
        if let Some(f) = sink.as_mut() {
            let _ = writeln!(f, "{line}");
            let _ = f.flush();
        }
    };
    write(&meta_record(cfg).to_string());
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut failures = 0;
    for step in steps {
        if !STEPS.contains(&step.as_str()) && !EXTRA_STEPS.contains(&step.as_str()) {
            eprintln!(
                "# unknown step {step} (known: {}, {})",
                STEPS.join(", "),
                EXTRA_STEPS.join(", ")
            );
            write(&json!({"workload": step, "name": "error", "error": "unknown step"}).to_string());
            failures += 1;
            continue;
        }
        if !IMPLEMENTED.contains(&step.as_str()) {
            write(
                &json!({"workload": step, "name": "_skipped", "skipped": true,
                        "reason": "not implemented in Shoal's workloads binary yet"})
                .to_string(),
            );
            continue;
        }
        let start = Instant::now();
        let (busy0, steal0) = host_cpu_s();
        let own0 = children_cpu_s();
        let load_before = loadavg();
        let mut child = Command::new(&exe)
            .arg("--root")
            .arg(&cfg.root)
            .arg("--scale")
            .arg(cfg.scale.to_string())
            .args(cfg.tables.iter().flat_map(|t| ["--tables", t]))
            .arg("--step")
            .arg(step)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting step {step}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if line.starts_with('{') {
                write(&line);
            } else {
                eprintln!("{line}");
            }
        }
        let status = child.wait()?;
        let wall = start.elapsed().as_secs_f64();
        let (busy1, steal1) = host_cpu_s();
        let own1 = children_cpu_s();
        // CPU used on this host by anything other than this step's process tree.
        let foreign = ((busy1 - busy0) - (own1 - own0)).max(0.0);
        write(
            &json!({
                "workload": step, "name": "_host", "seconds": round_to(wall, 3),
                "step_cpu_s": round_to(own1 - own0, 2), "foreign_cpu_s": round_to(foreign, 2),
                "foreign_cores": round_to(foreign / wall, 2), "steal_s": round_to(steal1 - steal0, 2),
                "loadavg_before": load_before,
            })
            .to_string(),
        );
        eprintln!(
            "# {step} done in {wall:.1}s (rc={}, foreign CPU {:.2} cores)",
            status.code().unwrap_or(-1),
            foreign / wall
        );
        if !status.success() {
            failures += 1;
            write(
                &json!({"workload": step, "name": "error", "returncode": status.code()})
                    .to_string(),
            );
        }
    }
    Ok(if failures > 0 { 1 } else { 0 })
}

fn main() -> std::process::ExitCode {
    shoal_format::tune_allocator();
    match real_main() {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<u8> {
    let args = Args::parse();
    if !(args.scale > 0.0 && args.scale.is_finite()) {
        bail!("--scale must be a positive number");
    }
    let cfg = Config {
        root: args.root.clone(),
        scale: args.scale,
        tables: args.tables.clone(),
    };
    if let Some(step) = &args.step {
        std::fs::create_dir_all(&cfg.root)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        rt.block_on(run_step(&cfg, step))?;
        return Ok(0);
    }
    let steps: Vec<String> = match &args.only {
        Some(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        None => STEPS.iter().map(|s| s.to_string()).collect(),
    };
    run_all(&cfg, &steps, args.out.as_deref(), args.clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference rows computed with the script's formulas (pure-Python integers).
    #[test]
    fn rows_match_the_python_reference() {
        let expect: [(u64, i64, i64, i64, &str, &str, f64); 10] = [
            (42, 0, 136505, 1704067200001049, "view", "IT", 5023.01),
            (
                42,
                1,
                206100,
                1704067200001633,
                "add_to_cart",
                "PL",
                9544.98,
            ),
            (42, 2, 272372, 1704067200003156, "refund", "BR", 9051.98),
            (
                42,
                12345,
                480507,
                1704067212345661,
                "checkout",
                "NL",
                129.52,
            ),
            (42, 9999999, 886897, 1704077200000962, "view", "CN", 8408.13),
            (43, 0, 304076, 1704067200000445, "purchase", "CN", 9180.97),
            (
                43,
                1,
                184110,
                1704067200002574,
                "remove_from_cart",
                "NL",
                2996.33,
            ),
            (43, 2, 741630, 1704067200003477, "purchase", "XX", 9694.56),
            (
                43,
                12345,
                727547,
                1704067212345273,
                "checkout",
                "IT",
                2921.36,
            ),
            (
                43,
                9999999,
                507097,
                1704077200000787,
                "purchase",
                "BR",
                8093.37,
            ),
        ];
        for (seed, id, user, ts, ev, co, amount) in expect {
            let b = events_for_ids(&[id], seed);
            assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), id);
            assert_eq!(b.column(1).as_primitive::<Int64Type>().value(0), user);
            assert_eq!(
                b.column(2)
                    .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                    .value(0),
                ts
            );
            assert_eq!(b.column(3).as_string::<i32>().value(0), ev);
            assert_eq!(b.column(4).as_string::<i32>().value(0), co);
            assert_eq!(
                b.column(5)
                    .as_primitive::<arrow::datatypes::Float64Type>()
                    .value(0),
                amount
            );
        }
        assert_eq!(
            lookup_user_ids(5),
            vec![112766, 165232, 533380, 579439, 736864]
        );
    }

    #[test]
    fn percentiles_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(pct(&v, 50.0), 2.5);
        assert_eq!(pct(&v, 100.0), 4.0);
        assert_eq!(pct(&v, 99.0), 3.97);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn scale_rounds_half_to_even() {
        let cfg = Config {
            root: PathBuf::new(),
            scale: 0.00125,
            tables: None,
        };
        assert_eq!(cfg.w2_commits(), 10); // max(10, round(2.5) = 2)
        let cfg = Config {
            root: PathBuf::new(),
            scale: 0.01,
            tables: None,
        };
        assert_eq!(cfg.w1_rows_per_commit(), 10_000);
        assert_eq!(cfg.w2_commits(), 20);
    }
}
