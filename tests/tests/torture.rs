//! Multi-process concurrency torture on S3: two appenders, a DML writer (DELETE, UPDATE,
//! MERGE), a VACUUM loop with a short forced retention (separate `torture` worker
//! processes, `tests/src/bin/torture.rs`) and the real `shoal-compactor` daemon work on
//! one table for `SHOAL_TORTURE_SECS` seconds (default 20; CI runs 150). Meanwhile the
//! latest version is read every 2 s, by our reader and by delta-rs. Then the journals of
//! acknowledged commits are replayed onto a model, which the table must equal: at the
//! end, at the versions read during the run, and at sampled versions read afterwards
//! (those a vacuum cutoff reached must fail for a missing file, all others must read
//! right, with delta-rs too); and commit by commit, every commit in the log must be a
//! journaled operation, a compaction or a vacuum.
//!
//! The model follows the isolation Shoal commits with (Delta's WriteSerializable): a
//! blind append that commits while a DELETE/UPDATE/MERGE is in flight does not conflict
//! with it and is ordered after it, so the row change applies to the rows that existed
//! at its `readVersion`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use shoal_format::log::{commit_name, parse_commit};
use shoal_format::protocol::Action;
use shoal_format::{Error, Table};
use shoal_tests::keyed::{append, rows_of, Model, Row};
use shoal_tests::{
    deltalake_s3_options, python, read_parquet, run_python, s3_base, s3_uri, workspace_bin,
};

// ---------------------------------------------------------------------------------
// The journal and the model

/// A DML predicate as the worker journals it.
#[derive(Debug, Clone)]
enum Pred {
    Mod {
        m: i64,
        k: i64,
        part: Option<String>,
    },
    Range {
        lo: i64,
        hi: i64,
    },
}

impl Pred {
    fn parse(v: &Value) -> Pred {
        if let Some(m) = v["mod"].as_i64() {
            Pred::Mod {
                m,
                k: v["eq"].as_i64().expect("pred.eq"),
                part: v["part"].as_str().map(str::to_string),
            }
        } else {
            Pred::Range {
                lo: v["lo"].as_i64().expect("pred.lo"),
                hi: v["hi"].as_i64().expect("pred.hi"),
            }
        }
    }

    fn matches(&self, id: i64, p: &str) -> bool {
        match self {
            Pred::Mod { m, k, part } => id % m == *k && part.as_deref().is_none_or(|x| x == p),
            Pred::Range { lo, hi } => *lo <= id && id < *hi,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        app: String,
        txn: i64,
        rows: Vec<Row>,
    },
    Delete {
        pred: Pred,
        sql: String,
        matched: u64,
    },
    Update {
        pred: Pred,
        sql: String,
        matched: u64,
    },
    Merge {
        app: String,
        txn: i64,
        rows: Vec<Row>,
        inserted: u64,
        updated: u64,
    },
}

impl Op {
    /// The `commitInfo.operation` the op commits with.
    fn operation(&self) -> &'static str {
        match self {
            Op::Append { .. } => "WRITE",
            Op::Delete { .. } => "DELETE",
            Op::Update { .. } => "UPDATE",
            Op::Merge { .. } => "MERGE",
        }
    }

    /// The application transaction the commit must carry.
    fn app_txn(&self) -> Option<(&str, i64)> {
        match self {
            Op::Append { app, txn, .. } | Op::Merge { app, txn, .. } => Some((app, *txn)),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Op::Append { app, txn, rows } => format!(
                "append {app}#{txn}: {} rows, ids {}..={}",
                rows.len(),
                rows.first().map_or(0, |r| r.0),
                rows.last().map_or(0, |r| r.0)
            ),
            Op::Delete { sql, matched, .. } => format!("DELETE WHERE {sql} ({matched} rows)"),
            Op::Update { sql, matched, .. } => {
                format!("UPDATE SET v = v + 1 WHERE {sql} ({matched} rows)")
            }
            Op::Merge {
                app,
                txn,
                rows,
                inserted,
                updated,
            } => format!(
                "MERGE {app}#{txn}: {} source rows ({inserted} inserted, {updated} updated)",
                rows.len()
            ),
        }
    }
}

#[derive(Debug, Clone)]
struct Journaled {
    version: i64,
    worker: String,
    op: Op,
}

#[derive(Debug, Clone)]
struct VacuumRun {
    cutoff_ms: i64,
    start_version: Option<i64>,
    end_version: Option<i64>,
    files_deleted: u64,
}

fn parse_rows(v: &Value) -> Vec<Row> {
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r[0].as_i64().expect("row id"),
                r[1].as_str().expect("row p").to_string(),
                r[2].as_i64().expect("row v"),
            )
        })
        .collect()
}

fn read_journal(path: &Path, worker: &str) -> (Vec<Journaled>, Vec<VacuumRun>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut ops, mut vacuums) = (Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{worker}: bad journal line {line:?}: {e}"));
        let u = |k: &str| {
            v[k].as_u64()
                .unwrap_or_else(|| panic!("{worker}: {k} in {line}"))
        };
        let op = match v["op"].as_str() {
            Some("vacuum") => {
                vacuums.push(VacuumRun {
                    cutoff_ms: v["now_ms"].as_i64().expect("now_ms")
                        - v["retention_ms"].as_i64().expect("retention_ms"),
                    start_version: v["start_version"].as_i64(),
                    end_version: v["end_version"].as_i64(),
                    files_deleted: u("files_deleted"),
                });
                continue;
            }
            Some("append") => Op::Append {
                app: v["app"].as_str().expect("app").to_string(),
                txn: v["txn"].as_i64().expect("txn"),
                rows: parse_rows(&v["rows"]),
            },
            Some("merge") => Op::Merge {
                app: v["app"].as_str().expect("app").to_string(),
                txn: v["txn"].as_i64().expect("txn"),
                rows: parse_rows(&v["rows"]),
                inserted: u("inserted"),
                updated: u("updated"),
            },
            Some("delete") => Op::Delete {
                pred: Pred::parse(&v["pred"]),
                sql: v["sql"].as_str().unwrap_or_default().to_string(),
                matched: u("rows_matched"),
            },
            Some("update") => Op::Update {
                pred: Pred::parse(&v["pred"]),
                sql: v["sql"].as_str().unwrap_or_default().to_string(),
                matched: u("rows_matched"),
            },
            other => panic!("{worker}: unknown op {other:?} in {line}"),
        };
        ops.push(Journaled {
            version: v["version"]
                .as_i64()
                .unwrap_or_else(|| panic!("{worker}: no version in {line}")),
            worker: worker.to_string(),
            op,
        });
    }
    (ops, vacuums)
}

/// One model row: `p`, `v`, the version that inserted the id, and whether that was a
/// blind append.
#[derive(Debug, Clone)]
struct Entry {
    p: String,
    v: i64,
    born: i64,
    blind: bool,
}

/// Whether two model rows hold the same values (or are both absent).
fn same(a: Option<&Entry>, b: Option<&Entry>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.p == b.p && a.v == b.v,
        (None, None) => true,
        _ => false,
    }
}

type State = BTreeMap<i64, Entry>;

fn state_rows(s: &State) -> Vec<Row> {
    s.iter().map(|(id, e)| (*id, e.p.clone(), e.v)).collect()
}

/// Applies one journaled op committed at `version` with `read_version`, `then` being
/// the model at the read version; returns an error when the counts the worker was told
/// differ from the model's, or when a row the op touched changed between its read and
/// its commit (a conflict the library should have raised).
///
/// WriteSerializable: rows that blind appends added after the read are serialized after
/// the op (it neither sees nor touches them). Every other change committed in between
/// must leave the op's rows alone, so that applying the op in version order gives the
/// result it computed from what it read.
fn apply(
    state: &mut State,
    then: &State,
    op: &Op,
    version: i64,
    read_version: i64,
) -> Result<(), String> {
    let visible = |e: &Entry| !(e.blind && e.born > read_version);
    let check = |state: &State, id: i64| -> Result<(), String> {
        let now = state.get(&id).filter(|e| visible(e));
        let was = then.get(&id);
        if same(now, was) {
            return Ok(());
        }
        Err(format!(
            "row {id} changed between the read (version {read_version}: {was:?}) and the \
             commit (version {version}: {now:?}) and the op touches it: a missed conflict"
        ))
    };
    match op {
        Op::Delete { pred, .. } | Op::Update { pred, .. } => {
            let touched: BTreeSet<i64> = state
                .iter()
                .filter(|(id, e)| visible(e) && pred.matches(**id, &e.p))
                .map(|(id, _)| *id)
                .chain(
                    then.iter()
                        .filter(|(id, e)| pred.matches(**id, &e.p))
                        .map(|(id, _)| *id),
                )
                .collect();
            for id in touched {
                check(state, id)?;
            }
        }
        Op::Merge { rows, .. } => {
            for (id, _, _) in rows {
                check(state, *id)?;
            }
        }
        Op::Append { .. } => {}
    }
    match op {
        Op::Append { rows, .. } => {
            for (id, p, v) in rows {
                if state.contains_key(id) {
                    return Err(format!("append of an id the model has: {id}"));
                }
                state.insert(
                    *id,
                    Entry {
                        p: p.clone(),
                        v: *v,
                        born: version,
                        blind: true,
                    },
                );
            }
        }
        Op::Delete { pred, matched, .. } => {
            let before = state.len();
            state.retain(|id, e| !(visible(e) && pred.matches(*id, &e.p)));
            let n = (before - state.len()) as u64;
            if n != *matched {
                return Err(format!(
                    "DELETE reported {matched} rows matched, the model {n}"
                ));
            }
        }
        Op::Update { pred, matched, .. } => {
            let mut n = 0;
            for (id, e) in state.iter_mut() {
                if visible(e) && pred.matches(*id, &e.p) {
                    e.v += 1;
                    n += 1;
                }
            }
            if n != *matched {
                return Err(format!(
                    "UPDATE reported {matched} rows matched, the model {n}"
                ));
            }
        }
        Op::Merge {
            rows,
            inserted,
            updated,
            ..
        } => {
            let (mut ins, mut upd) = (0, 0);
            for (id, p, v) in rows {
                match state.get_mut(id) {
                    Some(e) if visible(e) => {
                        e.p = p.clone();
                        e.v = *v;
                        upd += 1;
                    }
                    Some(_) => {
                        return Err(format!(
                            "MERGE source id {id} blindly appended after its read"
                        ))
                    }
                    None => {
                        state.insert(
                            *id,
                            Entry {
                                p: p.clone(),
                                v: *v,
                                born: version,
                                blind: false,
                            },
                        );
                        ins += 1;
                    }
                }
            }
            if (ins, upd) != (*inserted, *updated) {
                return Err(format!(
                    "MERGE reported {inserted} inserted / {updated} updated, the model {ins} / {upd}"
                ));
            }
        }
    }
    Ok(())
}

/// Why two row sets differ: counts and the first few ids of each kind of difference;
/// `None` when equal.
fn diff(expected: &[Row], got: &[Row]) -> Option<String> {
    if expected == got {
        return None;
    }
    let mut seen: BTreeMap<i64, Vec<&Row>> = BTreeMap::new();
    for r in got {
        seen.entry(r.0).or_default().push(r);
    }
    let want: BTreeMap<i64, &Row> = expected.iter().map(|r| (r.0, r)).collect();
    let duplicated: Vec<i64> = seen
        .iter()
        .filter(|(_, rs)| rs.len() > 1)
        .map(|(id, _)| *id)
        .collect();
    let lost: Vec<&Row> = want
        .iter()
        .filter(|(id, _)| !seen.contains_key(id))
        .map(|(_, r)| *r)
        .collect();
    let extra: Vec<&Row> = seen
        .iter()
        .filter(|(id, _)| !want.contains_key(id))
        .flat_map(|(_, rs)| rs.iter().copied())
        .collect();
    let changed: Vec<String> = seen
        .iter()
        .filter_map(|(id, rs)| {
            let w = want.get(id)?;
            (rs.len() == 1 && rs[0] != *w).then(|| format!("{w:?} read as {:?}", rs[0]))
        })
        .collect();
    let first = |v: &[String]| v.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
    Some(format!(
        "model {} rows, table {} rows; {} lost [{}]; {} unexpected [{}]; {} duplicated ids [{}]; {} changed [{}]",
        expected.len(),
        got.len(),
        lost.len(),
        first(&lost.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>()),
        extra.len(),
        first(&extra.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>()),
        duplicated.len(),
        first(&duplicated.iter().map(|i| i.to_string()).collect::<Vec<_>>()),
        changed.len(),
        first(&changed),
    ))
}

// ---------------------------------------------------------------------------------
// The log

/// What one commit says about itself.
#[derive(Debug, Clone)]
struct Commit {
    operation: String,
    read_version: Option<i64>,
    blind_append: bool,
    txns: Vec<(String, i64)>,
    /// `(path, dataChange)`.
    adds: Vec<(String, bool)>,
    /// `(path, dataChange, deletionTimestamp)`.
    removes: Vec<(String, bool, Option<i64>)>,
    metadata_or_protocol: bool,
}

impl Commit {
    fn of(actions: Vec<Action>) -> Commit {
        let mut c = Commit {
            operation: String::new(),
            read_version: None,
            blind_append: false,
            txns: Vec::new(),
            adds: Vec::new(),
            removes: Vec::new(),
            metadata_or_protocol: false,
        };
        for a in actions {
            match a {
                Action::CommitInfo(ci) => {
                    c.operation =
                        ci.0.get("operation")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string();
                    c.read_version = ci.0.get("readVersion").and_then(Value::as_i64);
                    c.blind_append = ci.0.get("isBlindAppend") == Some(&Value::Bool(true));
                }
                Action::Txn(t) => c.txns.push((t.app_id, t.version)),
                Action::Add(a) => c.adds.push((a.path, a.data_change)),
                Action::Remove(r) => c
                    .removes
                    .push((r.path, r.data_change, r.deletion_timestamp)),
                Action::Protocol(_) | Action::Metadata(_) => c.metadata_or_protocol = true,
                _ => {}
            }
        }
        c
    }

    /// Only rearranges data: OPTIMIZE with every add and remove `dataChange: false`.
    fn is_compaction(&self) -> bool {
        self.operation == "OPTIMIZE"
            && !self.metadata_or_protocol
            && !self.removes.is_empty()
            && self.adds.iter().all(|a| !a.1)
            && self.removes.iter().all(|r| !r.1)
            && self.txns.is_empty()
    }

    /// Changes no data: a compaction or a vacuum marker.
    fn changes_no_data(&self) -> bool {
        self.is_compaction()
            || (self.operation.starts_with("VACUUM")
                && self.adds.is_empty()
                && self.removes.is_empty()
                && !self.metadata_or_protocol)
    }
}

/// Every commit from 0 to `last`, in order.
async fn read_log(t: &Table, last: i64) -> Vec<Commit> {
    let store = t.store().clone();
    futures::stream::iter(0..=last)
        .map(|v| {
            let store = store.clone();
            async move {
                let name = commit_name(v);
                let data = store
                    .get_opt(&store.log_path(&name))
                    .await
                    .unwrap_or_else(|e| panic!("read commit {v}: {e}"))
                    .unwrap_or_else(|| panic!("commit {v} is missing from the log"));
                Commit::of(parse_commit(&data, &name).expect("parse commit"))
            }
        })
        .buffered(16)
        .collect()
        .await
}

// ---------------------------------------------------------------------------------
// Processes

/// Children killed when the test ends early, so no worker outlives a failed test.
struct Procs(Vec<(String, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Some(s) = child.try_wait().expect("wait for a child") {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {}", child.id());
}

/// Reads `versions` with delta-rs into `<out>/v<N>.parquet` (a few at a time); prints
/// the latest version delta-rs sees.
const READ_VERSIONS: &str = r#"
import sys, os, json
from concurrent.futures import ThreadPoolExecutor
from deltalake import DeltaTable
import pyarrow.parquet as pq
uri, out, opts, versions = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
def read(v):
    t = DeltaTable(uri, version=v, storage_options=opts).to_pyarrow_table()
    pq.write_table(t, os.path.join(out, f"v{v}.parquet"))
    return v
with ThreadPoolExecutor(3) as pool:
    list(pool.map(read, versions))
print(DeltaTable(uri, storage_options=opts).version())
"#;

/// Reads the versions named on its standard input, one a line, with delta-rs into
/// `<out>/live-v<N>.parquet`, answering `ok N` or `error N ...` per line.
const READ_LIVE: &str = r#"
import sys, os, json
from deltalake import DeltaTable
import pyarrow.parquet as pq
uri, out, opts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
for line in sys.stdin:
    v = int(line)
    try:
        t = DeltaTable(uri, version=v, storage_options=opts).to_pyarrow_table()
        pq.write_table(t, os.path.join(out, f"live-v{v}.parquet"))
        print(f"ok {v}", flush=True)
    except Exception as e:
        print(f"error {v} {type(e).__name__}: {e}".replace("\n", " "), flush=True)
sys.stdout.flush()
os._exit(0)
"#;

/// One version read while the workers ran: our rows, and whether delta-rs read it too
/// (its rows are in `live-v<N>.parquet`).
struct LiveSample {
    version: i64,
    rows: Vec<Row>,
    delta_rs: bool,
}

/// Reads the latest version every `every` until `stop`, with our reader and (given a
/// Python) with delta-rs right after: versions this fresh are inside the vacuum
/// retention, so every read must succeed.
fn sample_live(
    uri: String,
    py: Option<String>,
    out: PathBuf,
    every: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<LiveSample> {
    use std::io::{BufRead, Write};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("sampler runtime");
    let t = Table::at(&uri).expect("table location");
    let mut oracle = py.map(|py| {
        let mut child = Command::new(py)
            .arg("-c")
            .arg(READ_LIVE)
            .args([
                &uri,
                out.to_str().expect("utf-8 path"),
                &deltalake_s3_options(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the delta-rs reader");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        (child, stdin, stdout.lines())
    });
    let mut samples = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let (version, rows) = rt.block_on(async {
            let snap = t.snapshot().await.expect("load the latest version");
            let v = snap.version();
            let b = t
                .scan(snap)
                .collect()
                .await
                .unwrap_or_else(|e| panic!("live read of version {v}: {e}"));
            (v, rows_of(&b))
        });
        let mut delta_rs = false;
        if let Some((_, stdin, lines)) = &mut oracle {
            writeln!(stdin, "{version}").expect("ask delta-rs");
            stdin.flush().expect("ask delta-rs");
            let answer = lines
                .next()
                .expect("delta-rs answers")
                .expect("delta-rs answer");
            assert_eq!(
                answer,
                format!("ok {version}"),
                "delta-rs reading live version {version}"
            );
            delta_rs = true;
        }
        samples.push(LiveSample {
            version,
            rows,
            delta_rs,
        });
        std::thread::sleep(every);
    }
    if let Some((mut child, stdin, _)) = oracle {
        drop(stdin);
        let _ = child.wait();
    }
    samples
}

enum Read {
    Rows(Vec<Row>),
    /// A data file is gone (vacuumed).
    Missing(String),
}

async fn read_version(t: &Table, v: i64) -> Read {
    let snap = t
        .snapshot_at(v)
        .await
        .unwrap_or_else(|e| panic!("load version {v}: {e}"));
    match t.scan(snap).collect().await {
        Ok(b) => Read::Rows(rows_of(&b)),
        Err(e @ Error::MissingDataFile { .. }) => Read::Missing(e.to_string()),
        Err(e @ Error::Storage(object_store::Error::NotFound { .. })) => {
            Read::Missing(e.to_string())
        }
        Err(e) => panic!("read version {v}: {e}"),
    }
}

// ---------------------------------------------------------------------------------
// The run

/// The workers: (name, role, seed, id base, pause ms).
/// Two DML writers, so row changes race each other (and conflict) too.
const WORKERS: [(&str, &str, u64, i64, u64); 5] = [
    ("append-1", "append", 1, 1_000_000, 250),
    ("append-2", "append", 2, 2_000_000, 250),
    ("dml", "dml", 3, 3_000_000, 200),
    ("dml-2", "dml", 5, 4_000_000, 200),
    ("vacuum", "vacuum", 4, 0, 3000),
];

/// What the processes left behind.
struct Run {
    /// Each worker's summary line, by name.
    summaries: BTreeMap<String, Value>,
    ops: Vec<Journaled>,
    vacuums: Vec<VacuumRun>,
    live: Vec<LiveSample>,
    compactor: CompactorFigures,
    ran_for: Duration,
}

/// Runs the compactor daemon and the workers on `uri` for `secs`, sampling live
/// versions meanwhile; stops the compactor with SIGTERM once the workers are done.
fn run_processes(uri: &str, dir: &Path, secs: u64, retention_secs: u64, py: Option<String>) -> Run {
    let compactor_bin = workspace_bin("shoal-compactor", "shoal-compactor");
    let worker_bin = PathBuf::from(env!("CARGO_BIN_EXE_torture"));
    let began = Instant::now();
    let mut procs = Procs(Vec::new());
    let compactor_log = dir.join("compactor.log");
    let compactor = Command::new(&compactor_bin)
        .args(["--table", uri, "--interval", "2s", "--jitter", "1s"])
        .args(["--min-small-files", "3", "--lease-ttl", "1m"])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&compactor_log).expect("compactor log"))
        .spawn()
        .expect("spawn the compactor");
    procs.0.push(("compactor".into(), compactor));
    for (name, role, seed, id_base, pause) in WORKERS {
        let out = |ext: &str| dir.join(format!("{name}.{ext}"));
        let child = Command::new(&worker_bin)
            .args(["--table", uri, "--role", role])
            .args(["--seed", &seed.to_string(), "--seconds", &secs.to_string()])
            .arg("--journal")
            .arg(out("jsonl"))
            .args(["--id-base", &id_base.to_string()])
            .args(["--pause-ms", &pause.to_string()])
            .args(["--retention-secs", &retention_secs.to_string()])
            .stdout(std::fs::File::create(out("out")).expect("stdout file"))
            .stderr(std::fs::File::create(out("err")).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn worker {name}: {e}"));
        procs.0.push((name.to_string(), child));
    }
    let stop_sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (uri, out, stop) = (uri.to_string(), dir.join("delta-rs"), stop_sampling.clone());
        std::fs::create_dir_all(&out).expect("oracle dir");
        std::thread::spawn(move || sample_live(uri, py, out, Duration::from_secs(2), stop))
    };

    // The workers stop starting operations after `secs`; the last one may run on a bit.
    let grace = 45;
    let deadline = Instant::now() + Duration::from_secs(secs + grace);
    let mut summaries = BTreeMap::new();
    for (name, child) in procs.0.iter_mut().skip(1) {
        let status = wait_until(child, deadline)
            .unwrap_or_else(|| panic!("worker {name} still running {grace}s after its end"));
        let err = dir.join(format!("{name}.err"));
        assert!(
            status.success(),
            "worker {name} failed ({status}):\n{}",
            tail(&err, 40)
        );
        let out = std::fs::read_to_string(dir.join(format!("{name}.out"))).unwrap_or_default();
        let summary: Value = out
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("worker {name} printed no summary: {out:?}"));
        summaries.insert(name.clone(), summary);
    }
    stop_sampling.store(true, std::sync::atomic::Ordering::SeqCst);
    let live = sampler.join().expect("the live sampler");
    let (_, compactor) = &mut procs.0[0];
    sigterm(compactor);
    let status = wait_until(compactor, Instant::now() + Duration::from_secs(30))
        .expect("the compactor exits within 30 s of SIGTERM");
    assert!(
        status.success(),
        "the compactor exits 0 on SIGTERM ({status}):\n{}",
        tail(&compactor_log, 40)
    );
    let ran_for = began.elapsed();

    let mut ops = Vec::new();
    let mut vacuums = Vec::new();
    for (name, ..) in WORKERS {
        let (o, v) = read_journal(&dir.join(format!("{name}.jsonl")), name);
        ops.extend(o);
        vacuums.extend(v);
    }
    Run {
        summaries,
        ops,
        vacuums,
        live,
        compactor: compactor_figures(&compactor_log),
        ran_for,
    }
}

struct CompactorFigures {
    passes: usize,
    files_compacted: u64,
    /// Bins abandoned because a writer removed one of their inputs meanwhile.
    conflicts: u64,
}

/// The compactor's finished runs from its JSON log; fails on any failed run.
fn compactor_figures(log: &Path) -> CompactorFigures {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"] == "run failed")
        .collect();
    assert!(
        failed.is_empty(),
        "{} compactor run(s) failed, the first: {}",
        failed.len(),
        failed[0]
    );
    let finished: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"] == "run finished")
        .collect();
    assert!(
        !finished.is_empty(),
        "the compactor ran:\n{}",
        tail(log, 20)
    );
    let sum = |k: &str| finished.iter().map(|e| e[k].as_u64().unwrap_or(0)).sum();
    CompactorFigures {
        passes: finished.len(),
        files_compacted: sum("files_compacted"),
        conflicts: sum("conflicts"),
    }
}

// ---------------------------------------------------------------------------------
// The checks

/// Checks that every commit is a journaled op (with the operation and application
/// transaction it was acknowledged with), a vacuum of the vacuum worker or a
/// compaction; returns the number of compactions.
fn check_writers(
    commits: &[Commit],
    by_version: &HashMap<i64, &Journaled>,
    vacuum_versions: &BTreeSet<i64>,
) -> usize {
    let mut optimize_commits = 0;
    for (v, c) in commits.iter().enumerate() {
        let v = v as i64;
        if let Some(j) = by_version.get(&v) {
            if v == 0 {
                assert!(
                    ["WRITE", "CREATE TABLE"].contains(&c.operation.as_str()),
                    "version 0 is the setup write, not {c:?}"
                );
                continue;
            }
            assert_eq!(
                c.operation,
                j.op.operation(),
                "version {v} was acknowledged to {} as {}, the log says {c:?}",
                j.worker,
                j.op.describe()
            );
            if let Some((app, txn)) = j.op.app_txn() {
                assert_eq!(
                    c.txns,
                    vec![(app.to_string(), txn)],
                    "version {v}: the application transaction of {}",
                    j.op.describe()
                );
            }
            assert!(!c.metadata_or_protocol, "version {v} changed metadata");
        } else if vacuum_versions.contains(&v) {
            assert!(
                c.operation == "VACUUM START" || c.operation == "VACUUM END",
                "version {v} was acknowledged to the vacuum worker, the log says {c:?}"
            );
            assert!(c.changes_no_data(), "version {v}: {c:?}");
        } else {
            assert!(
                c.is_compaction(),
                "version {v} is no acknowledged commit of a worker and no compaction: {c:?}"
            );
            optimize_commits += 1;
        }
    }
    optimize_commits
}

/// Replays the journaled ops in version order; returns the model's rows at each of
/// `sampled` and at the end.
fn replay(
    commits: &[Commit],
    by_version: &HashMap<i64, &Journaled>,
    sampled: &BTreeSet<i64>,
) -> (BTreeMap<i64, Vec<Row>>, Vec<Row>) {
    let mut state = State::new();
    let empty = State::new();
    // The model at each recent version: what an op read.
    let mut recent: std::collections::VecDeque<(i64, State)> = Default::default();
    let mut expected = BTreeMap::new();
    for (v, c) in commits.iter().enumerate() {
        let v = v as i64;
        if let Some(j) = by_version.get(&v) {
            let read_version = if v == 0 {
                -1
            } else {
                c.read_version
                    .unwrap_or_else(|| panic!("version {v} has no readVersion: {c:?}"))
            };
            let then = recent
                .iter()
                .find(|(w, _)| *w == read_version)
                .map(|(_, st)| st)
                .unwrap_or_else(|| {
                    assert!(
                        read_version < 0,
                        "version {v} read version {read_version}, too far back for the model"
                    );
                    &empty
                });
            if let Err(e) = apply(&mut state, then, &j.op, v, read_version) {
                panic!(
                    "version {v} by {} ({}, read version {read_version}): {e}",
                    j.worker,
                    j.op.describe()
                );
            }
        }
        if sampled.contains(&v) {
            expected.insert(v, state_rows(&state));
        }
        if recent.len() == 512 {
            recent.pop_front();
        }
        recent.push_back((v, state.clone()));
    }
    (expected, state_rows(&state))
}

/// A data file's life in the log.
struct FileLife {
    added: i64,
    /// The version and `deletionTimestamp` of its removal.
    removed: Option<(i64, i64)>,
}

/// Which versions a vacuum may have broken: those with a live file that a later commit
/// removed before the latest vacuum cutoff.
struct Vacuumable {
    files: Vec<FileLife>,
    cutoff_ms: Option<i64>,
}

impl Vacuumable {
    fn new(commits: &[Commit], vacuums: &[VacuumRun]) -> Self {
        let mut files: HashMap<&str, FileLife> = HashMap::new();
        for (v, c) in commits.iter().enumerate() {
            let v = v as i64;
            for (path, _) in &c.adds {
                files.insert(
                    path,
                    FileLife {
                        added: v,
                        removed: None,
                    },
                );
            }
            for (path, _, ts) in &c.removes {
                if let Some(f) = files.get_mut(path.as_str()) {
                    f.removed = Some((v, ts.unwrap_or(0)));
                }
            }
        }
        Vacuumable {
            files: files.into_values().collect(),
            cutoff_ms: vacuums.iter().map(|r| r.cutoff_ms).max(),
        }
    }

    fn at_risk(&self, v: i64) -> bool {
        self.cutoff_ms.is_some_and(|cutoff| {
            self.files
                .iter()
                .any(|f| f.added <= v && f.removed.is_some_and(|(rv, ts)| rv > v && ts < cutoff))
        })
    }
}

fn check_rows(what: &str, v: i64, expected: &[Row], got: &[Row], ops: &[Journaled]) {
    if let Some(d) = diff(expected, got) {
        let around: Vec<String> = ops
            .iter()
            .filter(|o| o.version <= v && o.version + 8 > v)
            .map(|o| format!("  v{} {}: {}", o.version, o.worker, o.op.describe()))
            .collect();
        panic!(
            "version {v}: {what} disagrees with the model: {d}\nthe last ops:\n{}",
            around.join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_appending_merging_deleting_compacting_and_vacuuming_agree_with_a_model() {
    let Some(base) = s3_base("the multi-process S3 torture run") else {
        return;
    };
    let secs: u64 = std::env::var("SHOAL_TORTURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let retention_secs = (secs / 5).clamp(10, 30);
    let py = python("delta-rs reading the torture table");
    let dir = tempfile::tempdir().expect("tempdir");
    let oracle_dir = dir.path().join("delta-rs");
    let uri = s3_uri(&base, "torture-mp");
    let t = Table::at(&uri).expect("table location");
    let mut initial = Model::new();
    let v0 = append(&t, &mut initial, &mut 0, 60).await;
    assert_eq!(v0, 0, "a fresh table");

    let run = {
        let (uri, dir, py) = (uri.clone(), dir.path().to_path_buf(), py.clone());
        tokio::task::spawn_blocking(move || run_processes(&uri, &dir, secs, retention_secs, py))
            .await
            .expect("the run")
    };
    let checks_began = Instant::now();

    // The journals: versions acknowledged once each.
    let mut ops = run.ops.clone();
    ops.push(Journaled {
        version: 0,
        worker: "setup".into(),
        op: Op::Append {
            app: String::new(),
            txn: 0,
            rows: initial
                .iter()
                .map(|(id, (p, v))| (*id, p.clone(), *v))
                .collect(),
        },
    });
    ops.sort_by_key(|o| o.version);
    for w in ops.windows(2) {
        assert!(
            w[0].version != w[1].version,
            "version {} acknowledged twice: to {} ({}) and to {} ({})",
            w[0].version,
            w[0].worker,
            w[0].op.describe(),
            w[1].worker,
            w[1].op.describe()
        );
    }
    let by_version: HashMap<i64, &Journaled> = ops.iter().map(|o| (o.version, o)).collect();
    let vacuum_versions: BTreeSet<i64> = run
        .vacuums
        .iter()
        .flat_map(|r| [r.start_version, r.end_version])
        .flatten()
        .collect();

    let last = t.snapshot().await.expect("latest snapshot").version();
    let last_journaled = ops.last().map_or(0, |o| o.version);
    assert!(
        last_journaled <= last,
        "journaled version {last_journaled} is past the log's end {last}"
    );
    let commits = read_log(&t, last).await;
    let optimize_commits = check_writers(&commits, &by_version, &vacuum_versions);
    let vacuumable = Vacuumable::new(&commits, &run.vacuums);

    // Sampled: every ~10th journaled version (at most ~60), the last journaled one, the
    // latest, and those read while the workers ran.
    let step = (ops.len() / 60).max(10);
    let mut sampled: BTreeSet<i64> = ops.iter().step_by(step).map(|o| o.version).collect();
    sampled.insert(last_journaled);
    sampled.insert(last);
    let live: BTreeSet<i64> = run.live.iter().map(|l| l.version).collect();
    sampled.extend(&live);
    let (expected, final_rows) = replay(&commits, &by_version, &sampled);

    // What was read during the run.
    let mut live_oracle = 0;
    for l in &run.live {
        check_rows(
            "our reader, during the run,",
            l.version,
            &expected[&l.version],
            &l.rows,
            &ops,
        );
        if l.delta_rs {
            let path = oracle_dir.join(format!("live-v{}.parquet", l.version));
            let rows = rows_of(&read_parquet(&path));
            check_rows(
                "delta-rs, during the run,",
                l.version,
                &expected[&l.version],
                &rows,
                &ops,
            );
            live_oracle += 1;
        }
    }

    // After the run: delta-rs reads the versions no vacuum can have touched, while we
    // read them all; the vacuumed ones must fail for a missing file.
    let after: Vec<i64> = sampled.difference(&live).copied().collect();
    let safe: Vec<i64> = after
        .iter()
        .copied()
        .filter(|v| !vacuumable.at_risk(*v))
        .collect();
    let oracle = py.map(|py| {
        let (uri, out) = (uri.clone(), oracle_dir.clone());
        let versions = serde_json::to_string(&safe).expect("versions json");
        std::thread::spawn(move || {
            let out = out.to_str().expect("utf-8 path").to_string();
            run_python(
                &py,
                READ_VERSIONS,
                &[&uri, &out, &deltalake_s3_options(), &versions],
            )
        })
    });
    let reads: Vec<(i64, Read)> = futures::stream::iter(after.iter().copied())
        .map(|v| {
            let t = t.clone();
            async move { (v, read_version(&t, v).await) }
        })
        .buffered(4)
        .collect()
        .await;
    let (mut equal, mut vacuumed, mut risky_intact) = (0, 0, 0);
    for (v, read) in reads {
        match read {
            Read::Rows(rows) => {
                check_rows("our reader", v, &expected[&v], &rows, &ops);
                equal += 1;
                if vacuumable.at_risk(v) {
                    risky_intact += 1;
                }
            }
            Read::Missing(e) => {
                assert!(
                    vacuumable.at_risk(v),
                    "version {v} lost a data file although no vacuum cutoff reached the \
                     files removed after it: {e}"
                );
                vacuumed += 1;
            }
        }
    }
    let Read::Rows(latest) = read_version(&t, last).await else {
        panic!("the latest version {last} is unreadable");
    };
    check_rows("the table at its end", last, &final_rows, &latest, &ops);
    let mut oracle_read = 0;
    if let Some(handle) = oracle {
        let out = handle.join().expect("the delta-rs thread");
        let seen: i64 = out.trim().parse().expect("delta-rs latest version");
        assert_eq!(seen, last, "delta-rs sees the latest version");
        for v in &safe {
            let rows = rows_of(&read_parquet(&oracle_dir.join(format!("v{v}.parquet"))));
            check_rows("delta-rs", *v, &expected[v], &rows, &ops);
            oracle_read += 1;
        }
    }

    // The figures.
    let s = |name: &str, key: &str| run.summaries[name][key].as_u64().unwrap_or(0);
    let by_op = |op: &str| {
        ["dml", "dml-2"]
            .iter()
            .map(|w| run.summaries[*w]["by_op"][op].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let kinds = |name: &str| run.summaries[name]["conflict_kinds"].to_string();
    let vacuum_files: u64 = run.vacuums.iter().map(|r| r.files_deleted).sum();
    let c = &run.compactor;
    println!(
        "torture (processes) on S3: {secs}s of work, {:.0}s with start and stop, 6 processes \
         (2 appenders, 2 DML, vacuum, compactor daemon), versions 0..={last}; commits: append \
         {} + {}, delete {}, update {}, merge {} (DML no-ops {}); conflicts: appenders {} {} + \
         {} {}, DML {} {} + {} {}, vacuum {}; compactor: {} passes, {optimize_commits} OPTIMIZE \
         commits, {} files compacted, {} bins abandoned to writers; vacuum (retention \
         {retention_secs}s, forced): {} runs, {vacuum_files} files deleted, {} commits; \
         versions checked: {} read live during the run (delta-rs too: {live_oracle}), {} after \
         it ({equal} equal to the model, {risky_intact} of them past a vacuum cutoff but \
         intact, {vacuumed} vacuumed away as expected), delta-rs read {oracle_read} of them and \
         the latest identically; {} rows at the end, 0 lost, 0 duplicated; checks took {:.0}s",
        run.ran_for.as_secs_f64(),
        s("append-1", "commits"),
        s("append-2", "commits"),
        by_op("delete"),
        by_op("update"),
        by_op("merge"),
        s("dml", "noops") + s("dml-2", "noops"),
        s("append-1", "conflicts"),
        kinds("append-1"),
        s("append-2", "conflicts"),
        kinds("append-2"),
        s("dml", "conflicts"),
        kinds("dml"),
        s("dml-2", "conflicts"),
        kinds("dml-2"),
        s("vacuum", "conflicts"),
        c.passes,
        c.files_compacted,
        c.conflicts,
        run.vacuums.len(),
        vacuum_versions.len(),
        run.live.len(),
        after.len(),
        final_rows.len(),
        checks_began.elapsed().as_secs_f64(),
    );
    assert!(s("append-1", "commits") > 0 && s("append-2", "commits") > 0);
    assert!(
        s("dml", "commits") > 0 && s("dml-2", "commits") > 0,
        "a DML worker committed nothing"
    );
    assert!(!run.vacuums.is_empty(), "the vacuum worker ran");
    assert!(!run.live.is_empty(), "versions were read during the run");
    if secs >= 40 {
        assert!(vacuum_files > 0, "vacuum deleted nothing in {secs}s");
        assert!(optimize_commits > 0, "the compactor compacted nothing");
    }
}
