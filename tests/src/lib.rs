//! Helpers shared by Shoal's integration tests and the `workloads` benchmark.

pub mod keyed;

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch};
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

/// The values of the 64-bit integer column `column` of every batch, in order (nulls
/// read as their slot's value). Panics when a batch lacks it or it is not `Int64`.
pub fn i64_values(batches: &[RecordBatch], column: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(column)
                .unwrap_or_else(|| panic!("no column `{column}`"))
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// Total rows.
pub fn num_rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// The Python with `deltalake` installed (the delta-rs oracle), from `SHOAL_PYTHON`
/// (set by `.ci/run`). Required when `CI=true`; elsewhere its absence skips the check
/// with a notice naming `what`.
pub fn python(what: &str) -> Option<String> {
    match std::env::var("SHOAL_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("SHOAL_PYTHON is not set but CI=true: {what} must run in CI")
        }
        _ => {
            eprintln!("NOTICE: skipping {what}: set SHOAL_PYTHON to a python with deltalake==1.6.6 (bash .ci/run does)");
            None
        }
    }
}

/// Ends a script once its work is done: the interpreter's own teardown sometimes aborts
/// inside delta-rs's native runtime ("terminate called without an active exception").
const PYTHON_EXIT: &str =
    "\nimport os as _os, sys as _sys\n_sys.stdout.flush()\n_sys.stderr.flush()\n_os._exit(0)\n";

/// Runs a Python script with arguments; panics with its output when it fails.
/// Returns its standard output.
pub fn run_python(py: &str, script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(py)
        .arg("-c")
        .arg(format!("{script}{PYTHON_EXIT}"))
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Python script dumping every version of a table, as delta-rs reads it, to
/// `<out>/v<N>.parquet`; prints the latest version. Arguments: table path or URI, out
/// dir, and optionally delta-rs `storage_options` as JSON (see [`deltalake_s3_options`]).
pub const DUMP_ALL_VERSIONS: &str = r#"
import sys, os, json
from deltalake import DeltaTable
import pyarrow.parquet as pq
path, out = sys.argv[1], sys.argv[2]
opts = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
latest = DeltaTable(path, storage_options=opts).version()
for v in range(latest + 1):
    t = DeltaTable(path, version=v, storage_options=opts).to_pyarrow_table()
    pq.write_table(t, os.path.join(out, f"v{v}.parquet"))
print(latest)
"#;

/// A small deterministic PRNG (splitmix64) for randomized tests: no crate, same
/// sequence everywhere.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The path of a workspace binary, never stale. `cargo test --workspace` (the README's
/// command) builds it fresh (its package has an integration test), so when it is newer
/// than every source file of the workspace it is used as is; otherwise (`cargo test -p
/// shoal-tests` after an edit) it is built first.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile directory")
        .to_path_buf();
    let release = profile_dir.file_name().and_then(|n| n.to_str()) == Some("release");
    let path = profile_dir.join(bin);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.iter().any(|b| b == bin) {
        return path;
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let bin_time = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let fresh = bin_time.is_some_and(|t| {
        ["table-format", "compactor", "cli", "server"]
            .iter()
            .all(|d| newest_mtime(&workspace.join(d).join("src")).is_none_or(|s| s <= t))
            && newest_mtime(&workspace.join("Cargo.lock")).is_none_or(|s| s <= t)
    });
    if !fresh {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-q", "-p", package, "--bin", bin]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p {package} --bin {bin} failed"
        );
    }
    built.push(bin.to_string());
    path
}

/// The newest modification time of a file or of any file under a directory.
fn newest_mtime(path: &std::path::Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}

/// The S3 gateway the tests run against (`tests/scripts/s3-gateway.sh`, started by
/// `.ci/run`): a base URI (`SHOAL_S3_URI`, e.g. `s3://test/run-…`) under which each test
/// makes its own prefix. Credentials, endpoint and region come from the standard `AWS_*`
/// variables. Required when `CI=true`; elsewhere its absence skips with a notice.
pub fn s3_base(what: &str) -> Option<String> {
    let vars = ["SHOAL_S3_URI", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"];
    let missing: Vec<&str> = vars
        .iter()
        .copied()
        .filter(|v| std::env::var(v).map_or(true, |s| s.is_empty()))
        .collect();
    if missing.is_empty() {
        return std::env::var("SHOAL_S3_URI")
            .ok()
            .map(|u| u.trim_end_matches('/').to_string());
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{} not set but CI=true: {what} must run against the S3 gateway",
            missing.join(", ")
        );
    }
    eprintln!(
        "NOTICE: skipping {what}: no S3 gateway ({} not set; `eval \"$(tests/scripts/s3-gateway.sh start && tests/scripts/s3-gateway.sh env)\"`)",
        missing.join(", ")
    );
    None
}

/// A fresh, unique location under the S3 base for one test.
pub fn s3_uri(base: &str, name: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{base}/{name}-{}-{n}", std::process::id())
}

/// The delta-rs `storage_options` for the S3 gateway, as a JSON object (for the Python
/// oracle): endpoint, keys, region, plain HTTP.
pub fn deltalake_s3_options() -> String {
    let get = |k: &str| std::env::var(k).unwrap_or_default();
    serde_json::json!({
        "AWS_ENDPOINT_URL": get("AWS_ENDPOINT_URL"),
        "AWS_ACCESS_KEY_ID": get("AWS_ACCESS_KEY_ID"),
        "AWS_SECRET_ACCESS_KEY": get("AWS_SECRET_ACCESS_KEY"),
        "AWS_REGION": std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
        "AWS_ALLOW_HTTP": "true",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    })
    .to_string()
}

/// Copies every file under a local directory to a table location (any URI Shoal opens),
/// keeping relative paths: a local table becomes the same table on S3.
pub async fn upload_dir(local: &std::path::Path, uri: &str) {
    let store = shoal_format::TableStore::from_uri(uri).expect("table location");
    let mut stack = vec![local.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path.strip_prefix(local).expect("under the root");
            let relative: Vec<String> = relative
                .iter()
                .map(|p| p.to_string_lossy().to_string())
                .collect();
            let target = store
                .data_path(&relative.join("/"))
                .expect("a valid object path");
            let data = std::fs::read(&path).expect("read file");
            store
                .put(&target, bytes::Bytes::from(data))
                .await
                .expect("upload");
        }
    }
}

/// A free loopback port (bound then released: a tiny race, fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("its address")
        .port()
}

/// Kills a child process when dropped (also when a test panics), so no server or
/// compactor outlives its test.
pub struct Reaper(pub Option<std::process::Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
