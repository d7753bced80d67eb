//! One worker process of the multi-process torture test (`tests/tests/torture.rs`):
//! runs one role against a table for a while and journals every acknowledged commit.
//!
//! ```sh
//! torture --table s3://test/t --role append --seed 1 --seconds 60 --journal a.jsonl --id-base 1000000
//! ```
//!
//! Roles:
//! - `append`: batches of new keyed rows `(id, part(id), id * 10)` from `--id-base` up,
//!   partitioned by `p`, each commit tagged with the application transaction
//!   `torture-append-<seed>`;
//! - `dml`: DELETE and `UPDATE v = v + 1` with predicates over every writer's rows
//!   (`id % m = k`, id ranges), and MERGE upserts of existing ids of any writer plus new
//!   ids from `--id-base` up (tagged `torture-merge-<seed>`);
//! - `vacuum`: VACUUM with a short forced retention every `--pause-ms`.
//!
//! After every acknowledged commit it appends one JSON line to the journal with what a
//! model needs to replay it: `{"version": v, "op": "append"|"merge", "rows": [[id, p, v], ..]}`,
//! `{"version": v, "op": "delete"|"update", "pred": {..}, "sql": .., "rows_matched": n}`;
//! the vacuum role journals `{"op": "vacuum", "now_ms", "retention_ms", "start_version",
//! "end_version", "files_deleted"}` per run. Commit conflicts are expected and counted
//! (nothing was committed); any other error ends the process with status 1. At the end
//! it prints one JSON summary line on stdout.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arrow::array::{Array, Int64Array};
use clap::{Parser, ValueEnum};
use serde_json::{json, Value};
use shoal_format::{Error, Table};
use shoal_tests::keyed::{batch, part, Row};
use shoal_tests::Rng;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Role {
    Append,
    Dml,
    Vacuum,
}

#[derive(Parser)]
#[command(
    name = "torture",
    about = "One worker of the multi-process torture test"
)]
struct Args {
    /// Table URI (S3 settings come from the `AWS_*` environment).
    #[arg(long)]
    table: String,
    #[arg(long, value_enum)]
    role: Role,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long to keep starting operations.
    #[arg(long)]
    seconds: f64,
    /// The JSON-lines journal of acknowledged commits.
    #[arg(long)]
    journal: PathBuf,
    /// First id of this worker's new rows.
    #[arg(long, default_value_t = 0)]
    id_base: i64,
    /// Largest random pause between operations (vacuum: the pause), in ms.
    #[arg(long, default_value_t = 300)]
    pause_ms: u64,
    /// vacuum: the retention, in seconds (forced below the table's).
    #[arg(long, default_value_t = 30.0)]
    retention_secs: f64,
}

/// Counts of one worker, printed as its summary.
#[derive(Default)]
struct Counts {
    commits: u64,
    conflicts: u64,
    /// Conflicts by kind (the variant name).
    conflict_kinds: BTreeMap<String, u64>,
    /// Operations that matched nothing, so committed nothing.
    noops: u64,
    by_op: BTreeMap<&'static str, u64>,
    rows_written: u64,
    vacuum_runs: u64,
    files_deleted: u64,
}

impl Counts {
    fn conflict(&mut self, kind: &shoal_format::ConflictKind) {
        self.conflicts += 1;
        let name = format!("{kind:?}");
        let name = name
            .split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or_default()
            .to_string();
        *self.conflict_kinds.entry(name).or_default() += 1;
    }

    fn committed(&mut self, op: &'static str) {
        self.commits += 1;
        *self.by_op.entry(op).or_default() += 1;
    }
}

/// A DML predicate: its SQL text and, journaled, its parameters.
enum Pred {
    /// `id % m = k [AND p = 'part']`.
    Mod {
        m: i64,
        k: i64,
        part: Option<String>,
    },
    /// `id >= lo AND id < hi`.
    Range { lo: i64, hi: i64 },
}

impl Pred {
    fn sql(&self) -> String {
        match self {
            Pred::Mod { m, k, part: None } => format!("id % {m} = {k}"),
            Pred::Mod {
                m,
                k,
                part: Some(p),
            } => format!("id % {m} = {k} AND p = '{p}'"),
            Pred::Range { lo, hi } => format!("id >= {lo} AND id < {hi}"),
        }
    }

    fn json(&self) -> Value {
        match self {
            Pred::Mod { m, k, part } => json!({ "mod": m, "eq": k, "part": part }),
            Pred::Range { lo, hi } => json!({ "lo": lo, "hi": hi }),
        }
    }
}

fn rows_json(rows: &[Row]) -> Value {
    Value::Array(rows.iter().map(|(id, p, v)| json!([id, p, v])).collect())
}

/// A worker: the table, its settings and what it has done so far.
struct Worker {
    t: Table,
    args: Args,
    deadline: Instant,
    rng: Rng,
    journal: std::fs::File,
    counts: Counts,
}

impl Worker {
    fn running(&self) -> bool {
        Instant::now() < self.deadline
    }

    fn journal(&mut self, line: Value) -> Result<()> {
        writeln!(self.journal, "{line}").context("write the journal")?;
        self.journal.flush().context("flush the journal")
    }

    /// The result of an operation: conflicts are counted (`None`: nothing committed);
    /// any other error ends the worker.
    fn outcome<T>(
        &mut self,
        r: shoal_format::Result<T>,
        what: impl Fn() -> String,
    ) -> Result<Option<T>> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(Error::Conflict(kind)) => {
                self.counts.conflict(&kind);
                Ok(None)
            }
            Err(e) => bail!("{}: {e}", what()),
        }
    }

    async fn pause(&mut self) {
        let ms = self.rng.below(self.args.pause_ms.max(1));
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    async fn append(&mut self) -> Result<()> {
        let app = format!("torture-append-{}", self.args.seed);
        let mut next = self.args.id_base;
        let mut txn = 0i64;
        while self.running() {
            let n = self.rng.between(5, 30);
            let rows: Vec<Row> = (next..next + n).map(|id| (id, part(id), id * 10)).collect();
            // Ids are never reused, even after a conflict: rows of a commit that was
            // reported failed but landed would show up as rows the model lacks.
            next += n;
            txn += 1;
            let r = self
                .t
                .write(vec![batch(&rows)])
                .with_partition_by(&["p"])
                .with_app_transaction(&app, txn)
                .execute()
                .await;
            let what = || format!("append {txn} (ids {}..{})", next - n, next);
            if let Some(r) = self.outcome(r, what)? {
                if r.already_applied {
                    bail!(
                        "{}: reported already applied at version {}",
                        what(),
                        r.version
                    );
                }
                self.counts.committed("append");
                self.counts.rows_written += rows.len() as u64;
                self.journal(json!({
                    "version": r.version,
                    "op": "append",
                    "app": app,
                    "txn": txn,
                    "rows": rows_json(&rows),
                }))?;
            }
            self.pause().await;
        }
        Ok(())
    }

    async fn dml(&mut self) -> Result<()> {
        let app = format!("torture-merge-{}", self.args.seed);
        let mut next = self.args.id_base;
        let mut txn = 0i64;
        while self.running() {
            let ids = existing_ids(&self.t).await.context("scan the ids")?;
            match self.rng.below(100) {
                0..30 => self.row_change(RowOp::Delete, &ids).await?,
                30..60 => self.row_change(RowOp::Update, &ids).await?,
                _ => {
                    txn += 1;
                    self.merge(&app, txn, &ids, &mut next).await?
                }
            }
            self.pause().await;
        }
        Ok(())
    }

    /// `DELETE WHERE pred` or `UPDATE SET v = v + 1 WHERE pred`.
    async fn row_change(&mut self, op: RowOp, ids: &[i64]) -> Result<()> {
        let (name, modulus) = match op {
            RowOp::Delete => ("delete", 13),
            RowOp::Update => ("update", 11),
        };
        let pred = random_pred(&mut self.rng, modulus, ids);
        let sql = pred.sql();
        let r = match op {
            RowOp::Delete => self.t.delete().with_predicate(&sql).execute().await,
            RowOp::Update => {
                let update = self.t.update().with_assignment("v = v + 1");
                update.with_predicate(&sql).execute().await
            }
        };
        match self.outcome(r, || format!("{name} WHERE {sql}"))? {
            Some(r) if r.unchanged => self.counts.noops += 1,
            Some(r) => {
                self.counts.committed(name);
                self.journal(json!({
                    "version": r.version,
                    "op": name,
                    "pred": pred.json(),
                    "sql": sql,
                    "rows_matched": r.rows_matched,
                }))?;
            }
            None => {}
        }
        Ok(())
    }

    /// Upserts up to 8 existing ids of any writer (new values) and 1 to 8 new ids.
    async fn merge(&mut self, app: &str, txn: i64, ids: &[i64], next: &mut i64) -> Result<()> {
        let mut source: BTreeMap<i64, i64> = BTreeMap::new();
        for _ in 0..self.rng.between(0, 8) {
            if ids.is_empty() {
                break;
            }
            let id = *self.rng.pick(ids);
            source.insert(id, 5_000_000 + self.rng.below(1000) as i64);
        }
        let fresh = self.rng.between(1, 8);
        source.extend((*next..*next + fresh).map(|id| (id, id * 10)));
        *next += fresh;
        let rows: Vec<Row> = source
            .into_iter()
            .map(|(id, v)| (id, part(id), v))
            .collect();
        let r = self
            .t
            .merge(vec![batch(&rows)], "target.id = source.id")
            .when_matched_update_all(None)
            .when_not_matched_insert_all(None)
            .with_app_transaction(app, txn)
            .execute()
            .await;
        let what = || format!("MERGE {txn} of {} source rows", rows.len());
        let Some(r) = self.outcome(r, what)? else {
            return Ok(());
        };
        if r.already_applied || r.unchanged {
            bail!(
                "{}: {fresh} new ids, yet no change at version {}",
                what(),
                r.version
            );
        }
        self.counts.committed("merge");
        self.counts.rows_written += rows.len() as u64;
        self.journal(json!({
            "version": r.version,
            "op": "merge",
            "app": app,
            "txn": txn,
            "rows": rows_json(&rows),
            "inserted": r.rows_inserted,
            "updated": r.rows_updated,
        }))
    }

    async fn vacuum(&mut self) -> Result<()> {
        let retention_hours = self.args.retention_secs / 3600.0;
        while self.running() {
            tokio::time::sleep(Duration::from_millis(self.args.pause_ms)).await;
            // The clock is passed in, so the journal knows the exact cutoff.
            let now_ms = chrono::Utc::now().timestamp_millis();
            let r = self
                .t
                .vacuum()
                .with_retention_hours(Some(retention_hours))
                .with_force(true)
                .with_now_ms(now_ms)
                .execute()
                .await;
            let Some(r) = self.outcome(r, || "VACUUM".to_string())? else {
                continue;
            };
            self.counts.vacuum_runs += 1;
            self.counts.files_deleted += r.files_deleted as u64;
            for (v, name) in [
                (r.start_version, "vacuum start"),
                (r.end_version, "vacuum end"),
            ] {
                if v.is_some() {
                    self.counts.committed(name);
                }
            }
            self.journal(json!({
                "op": "vacuum",
                "now_ms": now_ms,
                "retention_ms": r.retention_ms,
                "snapshot_version": r.version,
                "start_version": r.start_version,
                "end_version": r.end_version,
                "files_deleted": r.files_deleted,
            }))?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum RowOp {
    Delete,
    Update,
}

/// The ids of the latest snapshot (any writer's), for MERGE upserts and ranges.
async fn existing_ids(t: &Table) -> shoal_format::Result<Vec<i64>> {
    let snap = t.snapshot().await?;
    let batches = t.scan(snap).with_columns(&["id"]).collect().await?;
    let mut ids = Vec::new();
    for b in &batches {
        if let Some(a) = b.column(0).as_any().downcast_ref::<Int64Array>() {
            ids.extend((0..a.len()).map(|i| a.value(i)));
        }
    }
    Ok(ids)
}

fn random_pred(rng: &mut Rng, m: i64, ids: &[i64]) -> Pred {
    if ids.is_empty() || rng.chance(50) {
        let part = rng.chance(30).then(|| part(rng.below(2) as i64));
        Pred::Mod {
            m,
            k: rng.below(m as u64) as i64,
            part,
        }
    } else {
        let lo = *rng.pick(ids);
        Pred::Range {
            lo,
            hi: lo + rng.between(5, 60),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    shoal_format::tune_allocator();
    let args = Args::parse();
    let journal = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.journal)
        .with_context(|| format!("open the journal {}", args.journal.display()))?;
    let started = Instant::now();
    let mut w = Worker {
        t: Table::at(&args.table).context("open the table")?,
        deadline: started + Duration::from_secs_f64(args.seconds),
        rng: Rng::new(args.seed),
        journal,
        counts: Counts::default(),
        args,
    };
    match w.args.role {
        Role::Append => w.append().await?,
        Role::Dml => w.dml().await?,
        Role::Vacuum => w.vacuum().await?,
    }
    let c = &w.counts;
    let summary = json!({
        "role": format!("{:?}", w.args.role).to_lowercase(),
        "seed": w.args.seed,
        "seconds": started.elapsed().as_secs_f64(),
        "commits": c.commits,
        "by_op": c.by_op,
        "conflicts": c.conflicts,
        "conflict_kinds": c.conflict_kinds,
        "noops": c.noops,
        "rows_written": c.rows_written,
        "vacuum_runs": c.vacuum_runs,
        "files_deleted": c.files_deleted,
    });
    println!("{summary}");
    Ok(())
}
