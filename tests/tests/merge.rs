//! MERGE, checked against an in-memory model and against delta-rs:
//! - random targets (partitioned or not, several files), random sources (overlapping,
//!   new, null and duplicate keys) and random clause shapes leave the table and the
//!   row counters exactly as the model says;
//! - delta-rs reads every version of a multi-merge table as Shoal and the model do;
//! - duplicate matches, dedupe, null keys, schema evolution, file pruning, empty
//!   sources, exactly-once application transactions and bad input.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use shoal_format::ops::MergeBuilder;
use shoal_format::write::WriterOptions;
use shoal_format::{Error, SchemaMode, Snapshot, Table};
use shoal_tests::{
    canonical_rows, column_names, python, read_parquet, run_python, Rng, DUMP_ALL_VERSIONS,
};

// ---------------------------------------------------------------------------------------
// Deterministic randomness
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// Rows and batches
// ---------------------------------------------------------------------------------------

const PARTS: [&str; 3] = ["a", "b", "c"];
const NAMES: [&str; 5] = ["alpha", "beta", "gamma", "omega", "émile"];
const COLS: [&str; 4] = ["id", "p", "v", "s"];

/// A row of the target table `(id long, p string, v long, s string)`, all nullable.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: Option<i64>,
    p: Option<String>,
    v: Option<i64>,
    s: Option<String>,
}

fn row(id: Option<i64>, p: Option<&str>, v: Option<i64>, s: Option<&str>) -> Row {
    Row {
        id,
        p: p.map(str::to_string),
        v,
        s: s.map(str::to_string),
    }
}

/// A source row: a target-shaped row plus an ordering column for dedupe.
#[derive(Debug, Clone)]
struct Src {
    row: Row,
    seq: i64,
}

fn cols() -> Vec<String> {
    COLS.iter().map(|c| c.to_string()).collect()
}

/// Rows in the form of `canonical_rows` over `id, p, v, s`, sorted.
fn canon(rows: &[Row]) -> Vec<String> {
    fn o<T: ToString>(x: &Option<T>) -> String {
        x.as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "∅".into())
    }
    let mut out: Vec<String> = rows
        .iter()
        .map(|r| format!("{} | {} | {} | {}", o(&r.id), o(&r.p), o(&r.v), o(&r.s)))
        .collect();
    out.sort();
    out
}

fn target_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("p", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
    ]))
}

fn target_batch(rows: &[Row]) -> RecordBatch {
    RecordBatch::try_new(
        target_schema(),
        vec![
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.p.clone()).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.v).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.s.clone()).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

/// How a source batch is laid out: key type, column order, the ordering column.
#[derive(Debug, Clone, Copy, Default)]
struct Layout {
    id_int32: bool,
    reorder: bool,
    with_seq: bool,
}

fn source_batch(rows: &[Src], layout: Layout) -> RecordBatch {
    let id: (Field, ArrayRef) = if layout.id_int32 {
        (
            Field::new("id", DataType::Int32, true),
            Arc::new(Int32Array::from(
                rows.iter()
                    .map(|r| r.row.id.map(|x| x as i32))
                    .collect::<Vec<_>>(),
            )),
        )
    } else {
        (
            Field::new("id", DataType::Int64, true),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.row.id).collect::<Vec<_>>(),
            )),
        )
    };
    let p: (Field, ArrayRef) = (
        Field::new("p", DataType::Utf8, true),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.row.p.clone()).collect::<Vec<_>>(),
        )),
    );
    let v: (Field, ArrayRef) = (
        Field::new("v", DataType::Int64, true),
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.row.v).collect::<Vec<_>>(),
        )),
    );
    let s: (Field, ArrayRef) = (
        Field::new("s", DataType::Utf8, true),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.row.s.clone()).collect::<Vec<_>>(),
        )),
    );
    let seq: (Field, ArrayRef) = (
        Field::new("seq", DataType::Int64, false),
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        )),
    );
    let mut parts = if layout.reorder {
        vec![s, v, id, p]
    } else {
        vec![id, p, v, s]
    };
    if layout.with_seq {
        parts.insert(1, seq);
    }
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = parts.into_iter().unzip();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
}

/// A batch from named nullable long/string columns (`Some(ints)` or strings).
fn batch_of(columns: &[(&str, Col)]) -> RecordBatch {
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = columns
        .iter()
        .map(|(name, c)| match c {
            Col::Long(v, nullable) => (
                Field::new(*name, DataType::Int64, *nullable),
                Arc::new(Int64Array::from(v.clone())) as ArrayRef,
            ),
            Col::Str(v, nullable) => (
                Field::new(*name, DataType::Utf8, *nullable),
                Arc::new(StringArray::from(v.clone())) as ArrayRef,
            ),
        })
        .unzip();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
}

enum Col {
    Long(Vec<Option<i64>>, bool),
    Str(Vec<Option<&'static str>>, bool),
}

fn longs(v: &[Option<i64>]) -> Col {
    Col::Long(v.to_vec(), true)
}

fn strs(v: &[Option<&'static str>]) -> Col {
    Col::Str(v.to_vec(), true)
}

/// Every row of the latest version, canonical over `columns`.
async fn rows_of(table: &Table, columns: &[String]) -> Vec<String> {
    let snap = table.snapshot().await.unwrap();
    let batches = table.scan(snap).collect().await.unwrap();
    canonical_rows(&batches, columns)
}

async fn version(table: &Table) -> i64 {
    table.snapshot().await.unwrap().version()
}

fn paths(snap: &Snapshot) -> HashSet<String> {
    snap.files().iter().map(|a| a.path.clone()).collect()
}

fn small_files() -> WriterOptions {
    WriterOptions {
        target_file_size: 1,
        ..WriterOptions::default()
    }
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

/// SQL three-valued logic.
fn or3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

fn cmp<T, R>(a: Option<T>, b: Option<T>, f: impl Fn(T, T) -> R) -> Option<R> {
    Some(f(a?, b?))
}

/// Clause conditions: their text and their meaning over (target, source), either side
/// absent (all null) outside a match.
#[derive(Debug, Clone, Copy)]
enum Cond {
    Always,
    SrcVGt10,
    TgtVLtSrcV,
    SrcSIsNull,
    TgtPaOrSrcV3,
    SrcSNotNull,
    SrcVEven,
    TgtVGt10,
    TgtPb,
    TgtVIsNull,
    TgtSBetaOrVLt5,
}

const MATCHED_CONDS: [Cond; 5] = [
    Cond::Always,
    Cond::SrcVGt10,
    Cond::TgtVLtSrcV,
    Cond::SrcSIsNull,
    Cond::TgtPaOrSrcV3,
];
const NOT_MATCHED_CONDS: [Cond; 4] = [
    Cond::Always,
    Cond::SrcVGt10,
    Cond::SrcSNotNull,
    Cond::SrcVEven,
];
const BY_SOURCE_CONDS: [Cond; 5] = [
    Cond::Always,
    Cond::TgtVGt10,
    Cond::TgtPb,
    Cond::TgtVIsNull,
    Cond::TgtSBetaOrVLt5,
];

impl Cond {
    fn text(self) -> Option<&'static str> {
        Some(match self {
            Cond::Always => return None,
            Cond::SrcVGt10 => "source.v > 10",
            Cond::TgtVLtSrcV => "target.v < source.v",
            Cond::SrcSIsNull => "source.s IS NULL",
            Cond::TgtPaOrSrcV3 => "target.p = 'a' OR source.v % 3 = 0",
            Cond::SrcSNotNull => "source.s IS NOT NULL",
            Cond::SrcVEven => "source.v % 2 = 0",
            Cond::TgtVGt10 => "target.v > 10",
            Cond::TgtPb => "target.p = 'b'",
            Cond::TgtVIsNull => "target.v IS NULL",
            Cond::TgtSBetaOrVLt5 => "target.s = 'beta' OR target.v < 5",
        })
    }

    /// Whether the condition is TRUE (null and false both fail).
    fn holds(self, t: Option<&Row>, s: Option<&Row>) -> bool {
        let tv = t.and_then(|r| r.v);
        let sv = s.and_then(|r| r.v);
        let tp = t.and_then(|r| r.p.as_deref());
        let ts = t.and_then(|r| r.s.as_deref());
        let ss = s.and_then(|r| r.s.as_deref());
        let r = match self {
            Cond::Always => Some(true),
            Cond::SrcVGt10 => cmp(sv, Some(10), |a, b| a > b),
            Cond::TgtVLtSrcV => cmp(tv, sv, |a, b| a < b),
            Cond::SrcSIsNull => Some(ss.is_none()),
            Cond::TgtPaOrSrcV3 => or3(tp.map(|p| p == "a"), sv.map(|v| v % 3 == 0)),
            Cond::SrcSNotNull => Some(ss.is_some()),
            Cond::SrcVEven => sv.map(|v| v % 2 == 0),
            Cond::TgtVGt10 => cmp(tv, Some(10), |a, b| a > b),
            Cond::TgtPb => tp.map(|p| p == "b"),
            Cond::TgtVIsNull => Some(tv.is_none()),
            Cond::TgtSBetaOrVLt5 => or3(ts.map(|s| s == "beta"), tv.map(|v| v < 5)),
        };
        r == Some(true)
    }
}

#[derive(Debug, Clone, Copy)]
enum MAct {
    UpdateAll,
    /// `v = target.v + source.v, s = coalesce(source.s, target.s)`.
    UpdateExpr,
    Delete,
}

#[derive(Debug, Clone, Copy)]
enum NAct {
    All,
    /// `id, p, v * 2, 'new'`.
    Values,
    /// `id, v` only: `p` and `s` null.
    Partial,
}

#[derive(Debug, Clone, Copy)]
enum BAct {
    /// `v = target.v - 1`.
    Update,
    /// `target.s = 'orphan', v = 0`.
    UpdatePrefixed,
    Delete,
}

/// Extra conjuncts of ON beyond the key equality.
#[derive(Debug, Clone, Copy, PartialEq)]
enum OnExtra {
    None,
    SrcVGt3,
    TgtVNotNull,
    Mixed,
}

#[derive(Debug, Clone)]
struct Spec {
    /// ON also requires `target.p = source.p`.
    composite: bool,
    key_source_first: bool,
    on_extra: OnExtra,
    matched: Vec<(Cond, MAct)>,
    not_matched: Vec<(Cond, NAct)>,
    by_source: Vec<(Cond, BAct)>,
    dedupe: bool,
    small_files: bool,
}

impl Spec {
    fn on(&self) -> String {
        let mut on = if self.key_source_first {
            "source.id = target.id".to_string()
        } else {
            "target.id = source.id".to_string()
        };
        if self.composite {
            on.push_str(" AND target.p = source.p");
        }
        on.push_str(match self.on_extra {
            OnExtra::None => "",
            OnExtra::SrcVGt3 => " AND source.v > 3",
            OnExtra::TgtVNotNull => " AND target.v IS NOT NULL",
            OnExtra::Mixed => " AND target.v <= source.v + 5",
        });
        on
    }

    fn key_eq(&self, t: &Row, s: &Row) -> bool {
        t.id.is_some() && t.id == s.id && (!self.composite || (t.p.is_some() && t.p == s.p))
    }

    /// ON, as SQL: keys equal (non-null) and the extra conjuncts TRUE.
    fn joins(&self, t: &Row, s: &Row) -> bool {
        self.key_eq(t, s)
            && match self.on_extra {
                OnExtra::None => true,
                OnExtra::SrcVGt3 => s.v.is_some_and(|v| v > 3),
                OnExtra::TgtVNotNull => t.v.is_some(),
                OnExtra::Mixed => cmp(t.v, s.v, |a, b| a <= b + 5) == Some(true),
            }
    }

    fn builder(&self, table: &Table, source: Vec<RecordBatch>) -> MergeBuilder {
        let mut b = table.merge(source, &self.on());
        for (c, a) in &self.matched {
            b = match a {
                MAct::UpdateAll => b.when_matched_update_all(c.text()),
                MAct::UpdateExpr => b.when_matched_update(
                    c.text(),
                    &[
                        "v = target.v + source.v",
                        "s = coalesce(source.s, target.s)",
                    ],
                ),
                MAct::Delete => b.when_matched_delete(c.text()),
            };
        }
        for (c, a) in &self.not_matched {
            b = match a {
                NAct::All => b.when_not_matched_insert_all(c.text()),
                NAct::Values => b.when_not_matched_insert(
                    c.text(),
                    &[
                        ("id", "source.id"),
                        ("p", "source.p"),
                        ("v", "source.v * 2"),
                        ("s", "'new'"),
                    ],
                ),
                NAct::Partial => {
                    b.when_not_matched_insert(c.text(), &[("id", "source.id"), ("v", "source.v")])
                }
            };
        }
        for (c, a) in &self.by_source {
            b = match a {
                BAct::Update => {
                    b.when_not_matched_by_source_update(c.text(), &["v = target.v - 1"])
                }
                BAct::UpdatePrefixed => {
                    b.when_not_matched_by_source_update(c.text(), &["target.s = 'orphan'", "v = 0"])
                }
                BAct::Delete => b.when_not_matched_by_source_delete(c.text()),
            };
        }
        if self.dedupe {
            b = b.with_dedupe_by("seq");
        }
        if self.small_files {
            b = b.with_writer_options(small_files());
        }
        b
    }
}

#[derive(Debug, Default, PartialEq)]
struct Counts {
    inserted: u64,
    updated: u64,
    deleted: u64,
}

/// The last row per key by `seq` (later rows win ties); rows with a null key stay.
fn model_dedupe(spec: &Spec, source: &[Src]) -> Vec<Src> {
    let mut keep = vec![true; source.len()];
    for i in 0..source.len() {
        let r = &source[i].row;
        if r.id.is_none() || (spec.composite && r.p.is_none()) {
            continue;
        }
        for j in 0..source.len() {
            if i == j {
                continue;
            }
            let o = &source[j].row;
            let same = o.id == r.id && (!spec.composite || o.p == r.p);
            // Row i loses to a row with a larger seq, or an equal seq that comes later.
            if same && (source[j].seq > source[i].seq || (source[j].seq == source[i].seq && j > i))
            {
                keep[i] = false;
            }
        }
    }
    source
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(s, _)| s.clone())
        .collect()
}

/// MERGE in memory: the new rows and counters, or an error when several source rows
/// match one target row.
fn model_merge(target: &[Row], source: &[Src], spec: &Spec) -> Result<(Vec<Row>, Counts), String> {
    let source: Vec<Src> = if spec.dedupe {
        model_dedupe(spec, source)
    } else {
        source.to_vec()
    };
    let mut source_matched = vec![false; source.len()];
    let mut out = Vec::new();
    let mut c = Counts::default();
    for t in target {
        let hits: Vec<usize> = (0..source.len())
            .filter(|i| spec.joins(t, &source[*i].row))
            .collect();
        if hits.len() > 1 {
            return Err(format!("several source rows match target {t:?}"));
        }
        if let Some(&i) = hits.first() {
            source_matched[i] = true;
            let s = &source[i].row;
            match spec
                .matched
                .iter()
                .find(|(cond, _)| cond.holds(Some(t), Some(s)))
            {
                None => out.push(t.clone()),
                Some((_, MAct::UpdateAll)) => {
                    c.updated += 1;
                    out.push(s.clone());
                }
                Some((_, MAct::UpdateExpr)) => {
                    c.updated += 1;
                    out.push(Row {
                        v: cmp(t.v, s.v, |a, b| a + b),
                        s: s.s.clone().or(t.s.clone()),
                        ..t.clone()
                    });
                }
                Some((_, MAct::Delete)) => c.deleted += 1,
            }
        } else {
            match spec
                .by_source
                .iter()
                .find(|(cond, _)| cond.holds(Some(t), None))
            {
                None => out.push(t.clone()),
                Some((_, BAct::Update)) => {
                    c.updated += 1;
                    out.push(Row {
                        v: t.v.map(|v| v - 1),
                        ..t.clone()
                    });
                }
                Some((_, BAct::UpdatePrefixed)) => {
                    c.updated += 1;
                    out.push(Row {
                        v: Some(0),
                        s: Some("orphan".into()),
                        ..t.clone()
                    });
                }
                Some((_, BAct::Delete)) => c.deleted += 1,
            }
        }
    }
    for (i, s) in source.iter().enumerate() {
        if source_matched[i] {
            continue;
        }
        let s = &s.row;
        match spec
            .not_matched
            .iter()
            .find(|(cond, _)| cond.holds(None, Some(s)))
        {
            None => {}
            Some((_, NAct::All)) => out.push(s.clone()),
            Some((_, NAct::Values)) => out.push(Row {
                id: s.id,
                p: s.p.clone(),
                v: s.v.map(|v| v * 2),
                s: Some("new".into()),
            }),
            Some((_, NAct::Partial)) => out.push(Row {
                id: s.id,
                p: None,
                v: s.v,
                s: None,
            }),
        }
        if spec
            .not_matched
            .iter()
            .any(|(cond, _)| cond.holds(None, Some(s)))
        {
            c.inserted += 1;
        }
    }
    Ok((out, c))
}

// ---------------------------------------------------------------------------------------
// Random targets, sources and clauses
// ---------------------------------------------------------------------------------------

fn random_row(rng: &mut Rng, id: Option<i64>, p: Option<String>) -> Row {
    Row {
        id,
        p,
        v: (!rng.chance(15)).then(|| rng.between(0, 25)),
        s: (!rng.chance(20)).then(|| rng.pick(&NAMES).to_string()),
    }
}

fn random_part(rng: &mut Rng) -> Option<String> {
    (!rng.chance(10)).then(|| rng.pick(&PARTS).to_string())
}

/// Appends `n` random rows (ids from `next_id` on, a few null or repeated) as two
/// batches, so each append makes several files.
async fn random_append(
    table: &Table,
    model: &mut Vec<Row>,
    rng: &mut Rng,
    next_id: &mut i64,
    partitioned: bool,
    first: bool,
) {
    let n = rng.between(4, 15);
    let mut rows = Vec::new();
    for _ in 0..n {
        let id = if rng.chance(5) {
            None
        } else if rng.chance(5) && !model.is_empty() {
            rng.pick(model).id
        } else {
            *next_id += rng.between(1, 3);
            Some(*next_id)
        };
        let p = random_part(rng);
        rows.push(random_row(rng, id, p));
    }
    let cut = rng.between(1, n - 1) as usize;
    let batches = vec![target_batch(&rows[..cut]), target_batch(&rows[cut..])];
    let mut w = table.write(batches).with_target_file_size(1);
    if first && partitioned {
        w = w.with_partition_by(&["p"]);
    }
    w.execute().await.unwrap();
    model.extend(rows);
}

fn random_source(rng: &mut Rng, model: &[Row], spec: &Spec, max_id: i64) -> Vec<Src> {
    let n = if rng.chance(5) { 0 } else { rng.between(1, 12) };
    let existing: Vec<&Row> = model.iter().filter(|r| r.id.is_some()).collect();
    let mut used: HashSet<(Option<i64>, Option<String>)> = HashSet::new();
    let mut out = Vec::new();
    for _ in 0..n {
        let mut r = None;
        for _attempt in 0..10 {
            let (id, p) = if rng.chance(10) {
                (None, random_part(rng))
            } else if !existing.is_empty() && rng.chance(55) {
                let t = rng.pick(&existing);
                // Mostly the target row's partition, so composite keys match too.
                let p = if rng.chance(75) {
                    t.p.clone()
                } else {
                    random_part(rng)
                };
                (t.id, p)
            } else {
                (Some(rng.between(0, max_id + 15)), random_part(rng))
            };
            let key = (id, if spec.composite { p.clone() } else { None });
            if id.is_none() || used.insert(key) {
                r = Some(random_row(rng, id, p));
                break;
            }
        }
        if let Some(r) = r {
            out.push(Src {
                row: r,
                seq: rng.between(0, 4),
            });
        }
    }
    // Duplicate keys: several changes of one key with dedupe; otherwise, rarely, a
    // duplicate that must make the merge fail when it matches a target row.
    let dups = if spec.dedupe {
        rng.between(1, 4)
    } else if rng.chance(10) {
        1
    } else {
        0
    };
    for _ in 0..dups {
        if out.is_empty() {
            break;
        }
        let o = rng.pick(&out);
        let r = random_row(rng, o.row.id, o.row.p.clone());
        out.push(Src {
            row: r,
            seq: rng.between(0, 4),
        });
    }
    out
}

fn random_spec(rng: &mut Rng, partitioned: bool) -> Spec {
    let mut spec = Spec {
        composite: partitioned && rng.chance(30),
        key_source_first: rng.chance(30),
        on_extra: match rng.below(8) {
            0 => OnExtra::SrcVGt3,
            1 => OnExtra::TgtVNotNull,
            2 => OnExtra::Mixed,
            _ => OnExtra::None,
        },
        matched: Vec::new(),
        not_matched: Vec::new(),
        by_source: Vec::new(),
        dedupe: rng.chance(25),
        small_files: rng.chance(40),
    };
    for _ in 0..rng.between(0, 3) {
        let a = rng.pick(&[MAct::UpdateAll, MAct::UpdateExpr, MAct::Delete]);
        spec.matched.push((*rng.pick(&MATCHED_CONDS), *a));
    }
    for _ in 0..rng.between(0, 2) {
        let a = rng.pick(&[NAct::All, NAct::Values, NAct::Partial]);
        spec.not_matched.push((*rng.pick(&NOT_MATCHED_CONDS), *a));
    }
    if rng.chance(35) {
        for _ in 0..rng.between(1, 2) {
            let a = rng.pick(&[BAct::Update, BAct::UpdatePrefixed, BAct::Delete]);
            spec.by_source.push((*rng.pick(&BY_SOURCE_CONDS), *a));
        }
    }
    if spec.matched.is_empty() && spec.not_matched.is_empty() && spec.by_source.is_empty() {
        spec.matched.push((Cond::Always, MAct::UpdateAll));
    }
    spec
}

/// The (id, p) of every row of every file of a snapshot, by path.
async fn file_keys(
    table: &Table,
    snap: &Snapshot,
) -> Vec<(String, Vec<(Option<i64>, Option<String>)>)> {
    let mut out = Vec::new();
    for add in snap.files() {
        let batches = table
            .scan(snap.clone())
            .with_files(vec![add.clone()])
            .with_columns(&["id", "p"])
            .collect()
            .await
            .unwrap();
        let mut keys = Vec::new();
        for b in &batches {
            let ids = arrow::compute::cast(b.column(0), &DataType::Int64).unwrap();
            let ids = ids.as_any().downcast_ref::<Int64Array>().unwrap();
            let ps = arrow::compute::cast(b.column(1), &DataType::Utf8).unwrap();
            let ps = ps.as_any().downcast_ref::<StringArray>().unwrap();
            for i in 0..b.num_rows() {
                keys.push((
                    (!ids.is_null(i)).then(|| ids.value(i)),
                    (!ps.is_null(i)).then(|| ps.value(i).to_string()),
                ));
            }
        }
        out.push((add.path.clone(), keys));
    }
    out
}

/// What a random merge did.
enum Merged {
    Committed(i64),
    Unchanged,
    /// Refused (duplicate match), as the model expected.
    Rejected,
}

/// One random merge on the engine and on the model; checks contents, counters and that
/// files without a matching key are left alone. Returns the committed version, if any.
async fn random_merge(
    table: &Table,
    model: &mut Vec<Row>,
    rng: &mut Rng,
    partitioned: bool,
    max_id: i64,
    label: &str,
) -> Merged {
    let spec = random_spec(rng, partitioned);
    let source = random_source(rng, model, &spec, max_id);
    let layout = Layout {
        id_int32: rng.chance(20),
        reorder: rng.chance(30),
        with_seq: spec.dedupe || rng.chance(20),
    };
    let batches: Vec<RecordBatch> = if source.len() > 3 && rng.chance(50) {
        let cut = rng.between(1, source.len() as i64 - 1) as usize;
        vec![
            source_batch(&source[..cut], layout),
            source_batch(&source[cut..], layout),
        ]
    } else {
        vec![source_batch(&source, layout)]
    };
    let ctx = format!("{label}: spec {spec:?}\nsource {source:?}\nlayout {layout:?}");
    let before = table.snapshot().await.unwrap();
    let keys_before = file_keys(table, &before).await;
    let expected = model_merge(model, &source, &spec);
    let got = spec.builder(table, batches).execute().await;
    match (expected, got) {
        (Err(why), Ok(r)) => panic!("{ctx}\nexpected a duplicate-match error ({why}), got {r:?}"),
        (Err(_), Err(e)) => {
            assert!(
                matches!(&e, Error::InvalidArgument(m) if m.contains("several source rows")),
                "{ctx}\nwrong error: {e}"
            );
            assert_eq!(version(table).await, before.version(), "{ctx}\ncommitted");
            assert_eq!(rows_of(table, &cols()).await, canon(model), "{ctx}");
            Merged::Rejected
        }
        (Ok(_), Err(e)) => panic!("{ctx}\nmerge failed: {e}"),
        (Ok((rows, counts)), Ok(r)) => {
            assert_eq!(
                rows_of(table, &cols()).await,
                canon(&rows),
                "{ctx}\ntable differs from the model"
            );
            assert_eq!(
                Counts {
                    inserted: r.rows_inserted,
                    updated: r.rows_updated,
                    deleted: r.rows_deleted,
                },
                counts,
                "{ctx}\ncounters differ from the model"
            );
            assert_eq!(r.snapshot.version(), r.version, "{ctx}");
            if r.unchanged {
                assert_eq!(r.version, before.version(), "{ctx}");
                assert_eq!(
                    canon(&rows),
                    canon(model),
                    "{ctx}\nunchanged but the model changed"
                );
            } else {
                assert_eq!(r.version, before.version() + 1, "{ctx}");
            }
            // Files without a key the source has are neither rewritten nor removed
            // (unless NOT MATCHED BY SOURCE clauses apply to every target row).
            if spec.by_source.is_empty() {
                let after = paths(&r.snapshot);
                let src_keys: Vec<&Row> = source.iter().map(|s| &s.row).collect();
                for (path, keys) in &keys_before {
                    let hit = keys.iter().any(|(id, p)| {
                        let t = row(*id, p.as_deref(), None, None);
                        src_keys.iter().any(|s| spec.key_eq(&t, s))
                    });
                    if !hit {
                        assert!(
                            after.contains(path),
                            "{ctx}\nfile {path} has no matching key but was removed"
                        );
                    }
                }
                assert!(
                    r.files_skipped + r.files_scanned <= keys_before.len(),
                    "{ctx}\n{r:?}"
                );
            }
            *model = rows;
            if r.unchanged {
                Merged::Unchanged
            } else {
                Merged::Committed(r.version)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. The model test
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_merges_match_the_model() {
    let (mut merges, mut unchanged, mut rejected) = (0, 0, 0);
    // More cases for a local soak: SHOAL_MERGE_CASES=800 (about 40 s).
    let cases: u64 = std::env::var("SHOAL_MERGE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    for case in 0..cases {
        let mut rng = Rng::new(0x3E26E_u64.wrapping_mul(case + 1));
        let partitioned = rng.chance(60);
        let table = Table::at(&format!("memory://merge-model-{case}")).unwrap();
        let mut model = Vec::new();
        let mut next_id = 0;
        for a in 0..rng.between(2, 4) {
            random_append(
                &table,
                &mut model,
                &mut rng,
                &mut next_id,
                partitioned,
                a == 0,
            )
            .await;
        }
        for m in 0..rng.between(1, 3) {
            let label = format!("case {case} merge {m} (partitioned {partitioned})");
            match random_merge(&table, &mut model, &mut rng, partitioned, next_id, &label).await {
                Merged::Committed(_) => merges += 1,
                Merged::Unchanged => unchanged += 1,
                Merged::Rejected => rejected += 1,
            }
        }
    }
    eprintln!("{merges} merges committed, {unchanged} unchanged, {rejected} rejected");
    assert!(merges >= 40, "too few merges committed: {merges}");
    assert!(
        unchanged > 0 && rejected > 0,
        "{unchanged} unchanged, {rejected} rejected"
    );
}

// ---------------------------------------------------------------------------------------
// 2. delta-rs reads every version identically
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_rs_reads_every_merged_version() {
    let Some(py) = python("the delta-rs checks of MERGE") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let table = Table::at(path.to_str().unwrap()).unwrap();
    let mut rng = Rng::new(0xDE17A);
    let mut model = Vec::new();
    let mut next_id = 0;
    // The model's rows (over id, p, v, s) at each version.
    let mut expected: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for a in 0..3 {
        random_append(&table, &mut model, &mut rng, &mut next_id, true, a == 0).await;
        expected.insert(version(&table).await, canon(&model));
    }
    let mut merges = 0;
    while merges < 9 {
        let label = format!("oracle merge {merges}");
        if let Merged::Committed(v) =
            random_merge(&table, &mut model, &mut rng, true, next_id, &label).await
        {
            expected.insert(v, canon(&model));
            merges += 1;
        }
    }
    // A merge that evolves the schema, and one that deletes by source.
    let ids: Vec<Option<i64>> = model
        .iter()
        .filter_map(|r| r.id)
        .take(2)
        .map(Some)
        .collect();
    let src = batch_of(&[
        ("id", longs(&[ids[0], ids[1], Some(10_000)])),
        ("p", strs(&[Some("a"), Some("b"), Some("c")])),
        ("v", longs(&[Some(1), Some(2), Some(3)])),
        ("s", strs(&[None, Some("x"), Some("y")])),
        ("extra", strs(&[Some("e1"), Some("e2"), Some("e3")])),
    ]);
    let r = table
        .merge(vec![src], "target.id = source.id")
        .when_matched_update_all(None)
        .when_not_matched_insert_all(None)
        .with_schema_mode(SchemaMode::Merge)
        .execute()
        .await
        .unwrap();
    assert!(!r.unchanged);
    let r = table
        .merge(
            vec![batch_of(&[("id", longs(&[Some(10_000)]))])],
            "target.id = source.id",
        )
        .when_not_matched_by_source_delete(Some("target.v > 12"))
        .execute()
        .await
        .unwrap();
    assert!(!r.unchanged);
    let latest = r.version;

    let dumps = tempfile::tempdir().unwrap();
    let printed: i64 = run_python(
        &py,
        DUMP_ALL_VERSIONS,
        &[path.to_str().unwrap(), dumps.path().to_str().unwrap()],
    )
    .trim()
    .parse()
    .unwrap();
    assert_eq!(printed, latest);
    for v in 0..=latest {
        let theirs = read_parquet(&dumps.path().join(format!("v{v}.parquet")));
        let snap = table.snapshot_at(v).await.unwrap();
        let ours = table.scan(snap).collect().await.unwrap();
        let n_theirs: usize = theirs.iter().map(|b| b.num_rows()).sum();
        let n_ours: usize = ours.iter().map(|b| b.num_rows()).sum();
        assert_eq!(n_ours, n_theirs, "version {v}: row count");
        if let Some(model_rows) = expected.get(&v) {
            assert_eq!(
                canonical_rows(&theirs, &cols()),
                *model_rows,
                "version {v}: delta-rs differs from the model"
            );
        }
        if n_theirs == 0 {
            continue;
        }
        let mut names = column_names(&theirs);
        names.sort();
        assert_eq!(
            canonical_rows(&ours, &names),
            canonical_rows(&theirs, &names),
            "version {v}: Shoal and delta-rs differ"
        );
    }
    let last = read_parquet(&dumps.path().join(format!("v{latest}.parquet")));
    assert!(column_names(&last).contains(&"extra".to_string()));
}

// ---------------------------------------------------------------------------------------
// 3. Duplicate matches and dedupe
// ---------------------------------------------------------------------------------------

/// A table of ids 1..=n (v = id, s = "t<id>") in files of 4 rows.
async fn simple_table(uri: &str, n: i64) -> Table {
    let table = Table::at(uri).unwrap();
    let rows: Vec<Row> = (1..=n)
        .map(|i| Row {
            id: Some(i),
            p: Some(PARTS[(i % 3) as usize].into()),
            v: Some(i),
            s: Some(format!("t{i}")),
        })
        .collect();
    let batches: Vec<RecordBatch> = rows.chunks(4).map(target_batch).collect();
    table
        .write(batches)
        .with_target_file_size(1)
        .execute()
        .await
        .unwrap();
    table
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_matches_fail_unless_deduped() {
    let table = simple_table("memory://dups", 12).await;
    let before_rows = rows_of(&table, &cols()).await;
    let before = table.snapshot().await.unwrap();
    let src = || {
        batch_of(&[
            ("id", longs(&[Some(5), Some(9), Some(5), Some(100)])),
            ("seq", longs(&[Some(2), Some(1), Some(7), Some(1)])),
            ("v", longs(&[Some(50), Some(90), Some(51), Some(1000)])),
        ])
    };
    for shape in 0..3 {
        let b = table.merge(vec![src()], "target.id = source.id");
        let b = match shape {
            0 => b.when_matched_update(None, &["v = source.v"]),
            1 => b.when_matched_delete(None),
            _ => b.when_not_matched_insert_all(None),
        };
        let err = b.execute().await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("several source rows") && m.contains("id = 5")),
            "shape {shape}: {err}"
        );
        assert_eq!(version(&table).await, before.version());
        assert_eq!(rows_of(&table, &cols()).await, before_rows);
    }
    // Duplicates that match no target row are inserted, both of them.
    let dup_new = batch_of(&[
        ("id", longs(&[Some(200), Some(200)])),
        ("v", longs(&[Some(1), Some(2)])),
    ]);
    let r = table
        .merge(vec![dup_new], "target.id = source.id")
        .when_matched_update_all(None)
        .when_not_matched_insert_all(None)
        .execute()
        .await
        .unwrap();
    assert_eq!(r.rows_inserted, 2);

    // Dedupe: the largest seq per key wins; later rows win ties; null keys stay.
    let src = batch_of(&[
        (
            "id",
            longs(&[Some(5), Some(9), Some(5), Some(9), None, Some(5), None]),
        ),
        (
            "seq",
            longs(&[
                Some(2),
                Some(1),
                Some(7),
                Some(1),
                Some(0),
                Some(3),
                Some(0),
            ]),
        ),
        (
            "v",
            longs(&[
                Some(50),
                Some(90),
                Some(57),
                Some(91),
                Some(-1),
                Some(53),
                Some(-2),
            ]),
        ),
    ]);
    let r = table
        .merge(vec![src], "target.id = source.id")
        .when_matched_update(None, &["v = source.v"])
        .when_not_matched_insert_all(None)
        .with_dedupe_by("seq")
        .execute()
        .await
        .unwrap();
    assert_eq!((r.rows_updated, r.rows_inserted), (2, 2), "{r:?}");
    let rows = rows_of(&table, &["id".to_string(), "v".to_string()]).await;
    assert!(rows.contains(&"5 | 57".to_string()), "{rows:?}");
    assert!(rows.contains(&"9 | 91".to_string()), "{rows:?}");
    assert!(rows.contains(&"∅ | -1".to_string()), "{rows:?}");
    assert!(rows.contains(&"∅ | -2".to_string()), "{rows:?}");
    assert_eq!(rows.len(), 12 + 2 + 2);
    // The ordering column is not a target column: ignored by INSERT * / UPDATE SET *.
    let snap = table.snapshot().await.unwrap();
    assert!(snap.schema().field("seq").is_none());
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// 4. Null keys
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_keys_never_match() {
    let table = Table::at("memory://nulls").unwrap();
    table
        .write(vec![target_batch(&[
            row(None, Some("a"), Some(1), Some("t-null")),
            row(Some(1), Some("a"), Some(10), Some("t1")),
        ])])
        .execute()
        .await
        .unwrap();
    let src = target_batch(&[
        row(None, Some("a"), Some(2), Some("s-null")),
        row(Some(1), Some("a"), Some(11), Some("s1")),
    ]);
    let r = table
        .merge(vec![src], "target.id = source.id")
        .when_matched_update_all(None)
        .when_not_matched_insert_all(None)
        .execute()
        .await
        .unwrap();
    assert_eq!((r.rows_updated, r.rows_inserted, r.rows_deleted), (1, 1, 0));
    assert_eq!(
        rows_of(&table, &cols()).await,
        canon(&[
            row(None, Some("a"), Some(1), Some("t-null")),
            row(None, Some("a"), Some(2), Some("s-null")),
            row(Some(1), Some("a"), Some(11), Some("s1")),
        ])
    );
    // Null = null is not a match in either direction, even with only null keys in
    // the source; the target null rows are "not matched by source".
    let src = target_batch(&[row(None, None, Some(3), None)]);
    let r = table
        .merge(vec![src], "target.id = source.id")
        .when_matched_delete(None)
        .when_not_matched_by_source_update(Some("target.id IS NULL"), &["v = target.v + 100"])
        .execute()
        .await
        .unwrap();
    assert_eq!((r.rows_updated, r.rows_deleted, r.rows_inserted), (2, 0, 0));
    assert_eq!(
        rows_of(&table, &cols()).await,
        canon(&[
            row(None, Some("a"), Some(101), Some("t-null")),
            row(None, Some("a"), Some(102), Some("s-null")),
            row(Some(1), Some("a"), Some(11), Some("s1")),
        ])
    );
    // Composite keys: one null component is enough not to match.
    let src = target_batch(&[row(Some(1), None, Some(0), None)]);
    let r = table
        .merge(vec![src], "target.id = source.id AND target.p = source.p")
        .when_matched_delete(None)
        .when_not_matched_insert(None, &[("id", "source.id"), ("s", "'composite'")])
        .execute()
        .await
        .unwrap();
    assert_eq!((r.rows_deleted, r.rows_inserted), (0, 1));
}

// ---------------------------------------------------------------------------------------
// 5. Schema evolution
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_evolution_in_merge() {
    // Partitioned, so the evolved files mix partition and new columns.
    let table = Table::at("memory://evolve").unwrap();
    table
        .write(vec![target_batch(&[
            row(Some(1), Some("a"), Some(1), Some("one")),
            row(Some(2), Some("b"), Some(2), Some("two")),
            row(Some(3), Some("a"), Some(3), Some("three")),
        ])])
        .with_partition_by(&["p"])
        .execute()
        .await
        .unwrap();
    let src = || {
        batch_of(&[
            ("id", longs(&[Some(2), Some(4)])),
            ("extra", strs(&[Some("x2"), Some("x4")])),
            ("p", strs(&[Some("b"), Some("c")])),
            ("v", longs(&[Some(20), Some(40)])),
            ("s", strs(&[Some("TWO"), None])),
        ])
    };

    // Without schema mode merge: the extra column is ignored by UPDATE SET * and
    // INSERT * (Delta's behaviour); the schema stays.
    let r = table
        .merge(vec![src()], "target.id = source.id")
        .when_matched_update_all(None)
        .when_not_matched_insert_all(None)
        .execute()
        .await
        .unwrap();
    assert_eq!((r.rows_updated, r.rows_inserted), (1, 1));
    let snap = table.snapshot().await.unwrap();
    assert!(snap.schema().field("extra").is_none());
    assert_eq!(
        rows_of(&table, &cols()).await,
        canon(&[
            row(Some(1), Some("a"), Some(1), Some("one")),
            row(Some(2), Some("b"), Some(20), Some("TWO")),
            row(Some(3), Some("a"), Some(3), Some("three")),
            row(Some(4), Some("c"), Some(40), None),
        ])
    );
    // ... and naming it explicitly is an error.
    let err = table
        .merge(vec![src()], "target.id = source.id")
        .when_matched_update(None, &["extra = source.extra"])
        .execute()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownColumn { column, .. } if column == "extra"),
        "{err}"
    );

    // With schema mode merge the column is added: old rows null, matched and inserted
    // rows carry the source value.
    let v = version(&table).await;
    let src2 = batch_of(&[
        ("id", longs(&[Some(3), Some(5)])),
        ("extra", strs(&[Some("x3"), Some("x5")])),
        ("p", strs(&[Some("a"), Some("c")])),
        ("v", longs(&[Some(30), Some(50)])),
        ("s", strs(&[Some("THREE"), Some("five")])),
    ]);
    let r = table
        .merge(vec![src2], "target.id = source.id")
        .when_matched_update_all(None)
        .when_not_matched_insert_all(None)
        .with_schema_mode(SchemaMode::Merge)
        .execute()
        .await
        .unwrap();
    assert_eq!((r.rows_updated, r.rows_inserted, r.version), (1, 1, v + 1));
    let snap = table.snapshot().await.unwrap();
    let names: Vec<&str> = snap
        .schema()
        .fields
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, ["id", "p", "v", "s", "extra"]);
    let all: Vec<String> = ["id", "p", "v", "s", "extra"]
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        rows_of(&table, &all).await,
        vec![
            "1 | a | 1 | one | ∅",
            "2 | b | 20 | TWO | ∅",
            "3 | a | 30 | THREE | x3",
            "4 | c | 40 | ∅ | ∅",
            "5 | c | 50 | five | x5",
        ]
    );
    // An evolution that only inserts (no file rewritten) still changes the schema,
    // and an UPDATE SET * from a source lacking columns keeps the target's values.
    let src3 = batch_of(&[
        ("id", longs(&[Some(1), Some(6)])),
        ("more", longs(&[Some(-1), Some(-6)])),
    ]);
    let r = table
        .merge(vec![src3], "target.id = source.id")
        .when_matched_update_all(None)
        .when_not_matched_insert_all(None)
        .with_schema_mode(SchemaMode::Merge)
        .execute()
        .await
        .unwrap();
    assert_eq!((r.rows_updated, r.rows_inserted), (1, 1));
    let mut all = all;
    all.push("more".into());
    assert_eq!(
        rows_of(&table, &all).await,
        vec![
            "1 | a | 1 | one | ∅ | -1",
            "2 | b | 20 | TWO | ∅ | ∅",
            "3 | a | 30 | THREE | x3 | ∅",
            "4 | c | 40 | ∅ | ∅ | ∅",
            "5 | c | 50 | five | x5 | ∅",
            "6 | ∅ | ∅ | ∅ | ∅ | -6",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_nullable_target_columns_are_enforced() {
    let table = Table::at("memory://required").unwrap();
    let t = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
            Field::new("req", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(Int64Array::from(vec![Some(1), Some(2)])),
            Arc::new(StringArray::from(vec!["r1", "r2"])),
        ],
    )
    .unwrap();
    table.write(vec![t]).execute().await.unwrap();
    let v = version(&table).await;
    let before = rows_of(&table, &["id".into(), "v".into(), "req".into()]).await;
    let src = || {
        batch_of(&[
            ("id", longs(&[Some(2), Some(3)])),
            ("v", longs(&[Some(20), Some(30)])),
        ])
    };
    // INSERT * from a source lacking a non-nullable column.
    let err = table
        .merge(vec![src()], "target.id = source.id")
        .when_not_matched_insert_all(None)
        .execute()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::SchemaMismatch { column, .. } if column == "req"),
        "{err}"
    );
    // INSERT (cols) leaving it out would write NULL into it (the error type is checked
    // by `conditional_insert_into_a_table_with_a_required_column`).
    let err = table
        .merge(vec![src()], "target.id = source.id")
        .when_not_matched_insert(None, &[("id", "source.id"), ("v", "source.v")])
        .execute()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("req"), "{err}");
    // UPDATE SET req = NULL (the column it names is checked by
    // `update_to_null_names_the_right_column`).
    let err = table
        .merge(vec![src()], "target.id = source.id")
        .when_matched_update(None, &["req = NULL"])
        .execute()
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::SchemaMismatch { .. }), "{err}");
    assert_eq!(version(&table).await, v);
    assert_eq!(
        rows_of(&table, &["id".into(), "v".into(), "req".into()]).await,
        before
    );
    // UPDATE SET * keeps the column the source lacks; an explicit INSERT fills it.
    let r = table
        .merge(vec![src()], "target.id = source.id")
        .when_matched_update_all(None)
        .when_not_matched_insert(
            None,
            &[("id", "source.id"), ("v", "source.v"), ("req", "'new'")],
        )
        .execute()
        .await
        .unwrap();
    assert_eq!((r.rows_updated, r.rows_inserted), (1, 1));
    assert_eq!(
        rows_of(&table, &["id".into(), "v".into(), "req".into()]).await,
        vec!["1 | 1 | r1", "2 | 20 | r2", "3 | 30 | new"]
    );
}

// ---------------------------------------------------------------------------------------
// 6. Partitioned targets: only the files that must change are read and rewritten
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_touches_only_the_files_it_must() {
    // Partitions a, b, c with ids 0..90, 100..190, 200..290, three files each of 30
    // consecutive ids.
    let table = Table::at("memory://prune").unwrap();
    let mut model = Vec::new();
    for (pi, p) in PARTS.iter().enumerate() {
        for chunk in 0..3i64 {
            let lo = pi as i64 * 100 + chunk * 30;
            let rows: Vec<Row> = (lo..lo + 30)
                .map(|i| row(Some(i), Some(p), Some(i % 7), Some("t")))
                .collect();
            let mut w = table.write(vec![target_batch(&rows)]);
            if model.is_empty() {
                w = w.with_partition_by(&["p"]);
            }
            w.execute().await.unwrap();
            model.extend(rows);
        }
    }
    let files_of = |snap: &Snapshot, p: &str| -> HashSet<String> {
        snap.files()
            .iter()
            .filter(|a| a.partition_values.get("p").cloned().flatten().as_deref() == Some(p))
            .map(|a| a.path.clone())
            .collect()
    };
    let before = table.snapshot().await.unwrap();
    assert_eq!(before.num_files(), 9);

    // CDC: updates of a few recent ids of partition b.
    let src = target_batch(
        &(130..135)
            .map(|i| row(Some(i), Some("b"), Some(1000), Some("u")))
            .collect::<Vec<_>>(),
    );
    let r = table
        .merge(vec![src], "target.id = source.id")
        .when_matched_update_all(None)
        .when_not_matched_insert_all(None)
        .execute()
        .await
        .unwrap();
    assert_eq!(
        (r.rows_updated, r.rows_inserted, r.rows_copied),
        (5, 0, 25),
        "{r:?}"
    );
    assert_eq!(r.files_skipped, 8, "{r:?}");
    assert_eq!(r.files_scanned, 1, "{r:?}");
    assert_eq!((r.files_removed, r.files_added), (1, 1), "{r:?}");
    let after = r.snapshot.clone();
    assert_eq!(files_of(&after, "a"), files_of(&before, "a"));
    assert_eq!(files_of(&after, "c"), files_of(&before, "c"));
    let b_kept: HashSet<String> = files_of(&before, "b")
        .intersection(&files_of(&after, "b"))
        .cloned()
        .collect();
    assert_eq!(b_kept.len(), 2, "the two b files without matches stay");
    for m in model.iter_mut() {
        if (130..135).contains(&m.id.unwrap()) {
            m.v = Some(1000);
            m.s = Some("u".into());
        }
    }
    assert_eq!(rows_of(&table, &cols()).await, canon(&model));

    // A target-only ON condition prunes by partition value, even when the source
    // keys span every partition.
    let before = table.snapshot().await.unwrap();
    let src = target_batch(&[
        row(Some(5), Some("c"), Some(-5), None),
        row(Some(105), Some("c"), Some(-105), None),
        row(Some(205), Some("c"), Some(-205), None),
    ]);
    let r = table
        .merge(vec![src], "target.id = source.id AND target.p = 'c'")
        .when_matched_update(None, &["v = source.v"])
        .execute()
        .await
        .unwrap();
    assert_eq!(r.rows_updated, 1, "{r:?}");
    assert!(r.files_skipped >= 8, "{r:?}");
    assert_eq!(r.files_removed, 1, "{r:?}");
    let after = r.snapshot.clone();
    assert_eq!(files_of(&after, "a"), files_of(&before, "a"));
    assert_eq!(files_of(&after, "b"), files_of(&before, "b"));
    for m in model.iter_mut() {
        if m.id == Some(205) {
            m.v = Some(-205);
        }
    }
    assert_eq!(rows_of(&table, &cols()).await, canon(&model));

    // Keys inside a file's range that the file does not hold: the file's keys are
    // read, and it is not rewritten.
    let r = table
        .merge(
            vec![target_batch(&[row(Some(150), Some("b"), Some(0), None)])],
            "target.id = source.id",
        )
        .when_matched_delete(None)
        .execute()
        .await
        .unwrap();
    assert_eq!(r.rows_deleted, 1);
    assert_eq!((r.files_removed, r.files_scanned), (1, 1), "{r:?}");
    model.retain(|m| m.id != Some(150));
    assert_eq!(rows_of(&table, &cols()).await, canon(&model));
    // Interleaved files (even ids, odd ids) in one partition: stats cannot tell them
    // apart, the key read can.
    let table = Table::at("memory://interleaved").unwrap();
    let even: Vec<Row> = (0..=40)
        .step_by(2)
        .map(|i| row(Some(i), Some("a"), Some(i), None))
        .collect();
    let odd: Vec<Row> = (1..=41)
        .step_by(2)
        .map(|i| row(Some(i), Some("a"), Some(i), None))
        .collect();
    table
        .write(vec![target_batch(&even)])
        .execute()
        .await
        .unwrap();
    table
        .write(vec![target_batch(&odd)])
        .execute()
        .await
        .unwrap();
    let before = table.snapshot().await.unwrap();
    let even_paths = paths(&table.snapshot_at(0).await.unwrap());
    let odd_path = before
        .files()
        .iter()
        .map(|a| a.path.clone())
        .find(|p| !even_paths.contains(p))
        .unwrap();
    let src = target_batch(&[
        row(Some(10), Some("a"), Some(-10), None),
        row(Some(1000), Some("a"), Some(-1000), None),
    ]);
    let r = table
        .merge(vec![src], "target.id = source.id")
        .when_matched_update_all(None)
        .when_not_matched_insert_all(None)
        .execute()
        .await
        .unwrap();
    assert_eq!((r.rows_updated, r.rows_inserted), (1, 1), "{r:?}");
    assert_eq!(r.files_scanned, 2, "{r:?}");
    assert_eq!(r.files_skipped, 0, "{r:?}");
    assert_eq!(r.files_removed, 1, "{r:?}");
    assert_eq!(r.rows_copied, even.len() as u64 - 1, "{r:?}");
    assert!(paths(&r.snapshot).contains(&odd_path));
    // Source keys that match nothing, with only MATCHED clauses: nothing to commit.
    let r = table
        .merge(
            vec![target_batch(&[row(Some(11_111), None, None, None)])],
            "target.id = source.id",
        )
        .when_matched_update_all(None)
        .execute()
        .await
        .unwrap();
    assert!(r.unchanged, "{r:?}");
    assert_eq!(r.files_removed, 0);
    assert_eq!(r.version, before.version() + 1);
}

// ---------------------------------------------------------------------------------------
// 7. Empty sources
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_source() {
    let table = simple_table("memory://empty", 10).await;
    let v = version(&table).await;
    let before = rows_of(&table, &cols()).await;
    let empty = || target_batch(&[]);
    let r = table
        .merge(vec![empty()], "target.id = source.id")
        .when_matched_update_all(None)
        .when_matched_delete(None)
        .when_not_matched_insert_all(None)
        .execute()
        .await
        .unwrap();
    assert!(r.unchanged && !r.already_applied, "{r:?}");
    assert_eq!(r.version, v);
    assert_eq!((r.rows_inserted, r.rows_updated, r.rows_deleted), (0, 0, 0));
    assert_eq!(r.files_removed + r.files_added, 0);
    assert_eq!(version(&table).await, v);
    assert_eq!(rows_of(&table, &cols()).await, before);

    // No batch at all (no schema): refused.
    let err = table
        .merge(vec![], "target.id = source.id")
        .when_matched_update_all(None)
        .execute()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert_eq!(version(&table).await, v);

    // NOT MATCHED BY SOURCE applies to every target row.
    let r = table
        .merge(vec![empty()], "target.id = source.id")
        .when_not_matched_by_source_update(Some("target.v > 8"), &["s = 'late'"])
        .execute()
        .await
        .unwrap();
    assert_eq!(r.rows_updated, 2);
    let r = table
        .merge(vec![empty()], "target.id = source.id")
        .when_matched_delete(None)
        .when_not_matched_by_source_delete(None)
        .execute()
        .await
        .unwrap();
    assert_eq!(r.rows_deleted, 10, "{r:?}");
    assert_eq!(r.version, v + 2);
    assert_eq!(r.snapshot.num_files(), 0);
    assert!(rows_of(&table, &cols()).await.is_empty());
}

// ---------------------------------------------------------------------------------------
// 8. Exactly-once
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_transactions_apply_exactly_once() {
    let table = simple_table("memory://exactly-once", 6).await;
    let batch = |v: i64| {
        batch_of(&[
            ("id", longs(&[Some(2), Some(50)])),
            ("v", longs(&[Some(v), Some(v)])),
        ])
    };
    // `v = target.v + source.v`: applying twice would show.
    let merge = |v: i64, app: &'static str, app_version: i64| {
        table
            .merge(vec![batch(v)], "target.id = source.id")
            .when_matched_update(None, &["v = target.v + source.v"])
            .when_not_matched_insert_all(None)
            .with_app_transaction(app, app_version)
    };
    let r = merge(100, "stream", 3).execute().await.unwrap();
    assert!(!r.unchanged && !r.already_applied, "{r:?}");
    let applied = r.version;
    assert_eq!(r.snapshot.app_transaction_version("stream"), Some(3));
    let after_first = rows_of(&table, &cols()).await;
    let id_v = rows_of(&table, &["id".into(), "v".into()]).await;
    assert!(id_v.contains(&"2 | 102".to_string()), "{id_v:?}");
    assert!(id_v.contains(&"50 | 100".to_string()), "{id_v:?}");

    for (app_version, what) in [(3, "the same version"), (2, "an older version")] {
        let r = merge(100, "stream", app_version).execute().await.unwrap();
        assert!(r.already_applied && r.unchanged, "{what}: {r:?}");
        assert_eq!(r.version, applied, "{what}");
        assert_eq!(version(&table).await, applied, "{what}");
        assert_eq!(rows_of(&table, &cols()).await, after_first, "{what}");
    }
    // A newer version applies, and so does another application.
    let r = merge(1, "stream", 4).execute().await.unwrap();
    assert!(!r.already_applied && !r.unchanged);
    assert_eq!(r.version, applied + 1);
    assert_eq!(r.snapshot.app_transaction_version("stream"), Some(4));
    let r = merge(1, "other", 1).execute().await.unwrap();
    assert!(!r.already_applied);
    assert_eq!(r.snapshot.app_transaction_version("other"), Some(1));
    assert_eq!(r.snapshot.app_transaction_version("stream"), Some(4));
    let rows = rows_of(&table, &["id".into(), "v".into()]).await;
    assert!(rows.contains(&"2 | 104".to_string()), "{rows:?}");
    assert_eq!(
        rows.iter().filter(|r| r.starts_with("50 |")).count(),
        1,
        "{rows:?}"
    );
    // 50 was inserted by version 3 (v = 100), then updated by 4 and by `other` 1.
    assert!(rows.contains(&"50 | 102".to_string()), "{rows:?}");
}

// ---------------------------------------------------------------------------------------
// 9. Bad input
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_commits_nothing() {
    let table = simple_table("memory://bad", 6).await;
    let v = version(&table).await;
    let before = rows_of(&table, &cols()).await;
    let src = || target_batch(&[row(Some(2), Some("a"), Some(20), None)]);
    let m = |on: &str| table.merge(vec![src()], on);
    let on = "target.id = source.id";
    type Check = fn(&Error) -> bool;
    fn case(what: &str, b: MergeBuilder, ok: Check) -> (&str, MergeBuilder, Check) {
        (what, b, ok)
    }
    let cases = vec![
        case(
            "unknown qualified column in a condition",
            m(on).when_matched_update_all(Some("source.nope > 1")),
            |e| matches!(e, Error::UnknownColumn { column, .. } if column.contains("nope")),
        ),
        case(
            "unknown unqualified column in a condition",
            m(on).when_matched_delete(Some("nope > 1")),
            |e| matches!(e, Error::UnknownColumn { column, .. } if column.contains("nope")),
        ),
        case(
            "unknown column in a value",
            m(on).when_matched_update(None, &["v = source.nope"]),
            |e| matches!(e, Error::UnknownColumn { column, .. } if column.contains("nope")),
        ),
        case(
            "unknown assigned column",
            m(on).when_matched_update(None, &["nope = source.v"]),
            |e| matches!(e, Error::UnknownColumn { column, .. } if column.contains("nope")),
        ),
        case(
            "ambiguous unqualified column",
            m(on).when_matched_update(Some("v > 1"), &["v = source.v"]),
            |e| matches!(e, Error::InvalidExpression(m) if m.contains("ambiguous")),
        ),
        case(
            "ambiguous column in ON",
            m("id = id").when_matched_update_all(None),
            |e| matches!(e, Error::InvalidExpression(m) if m.contains("ambiguous")),
        ),
        case(
            "ON without an equality",
            m("target.id > source.id").when_matched_update_all(None),
            |e| matches!(e, Error::InvalidArgument(m) if m.contains("equality")),
        ),
        case(
            "ON equality between two target columns",
            m("target.id = target.v").when_matched_update_all(None),
            |e| matches!(e, Error::InvalidArgument(m) if m.contains("equality")),
        ),
        case(
            "ON key that is not a target column",
            m("target.nope = source.id").when_matched_update_all(None),
            |e| matches!(e, Error::InvalidArgument(m) | Error::UnknownColumn { column: m, .. } if m.contains("nope")),
        ),
        case(
            "no clause",
            m(on),
            |e| matches!(e, Error::InvalidArgument(m) if m.contains("WHEN")),
        ),
        case(
            "assignment without `=`",
            m(on).when_matched_update(None, &["v"]),
            |e| matches!(e, Error::InvalidExpression(_)),
        ),
        case(
            "a column assigned twice",
            m(on).when_matched_update(None, &["v = 1", "target.v = 2"]),
            |e| matches!(e, Error::InvalidArgument(m) if m.contains("more than once")),
        ),
        case(
            "a syntax error",
            m(on).when_matched_delete(Some("source.v >")),
            |e| matches!(e, Error::InvalidExpression(_)),
        ),
        case(
            "unknown dedupe column",
            m(on).when_matched_update_all(None).with_dedupe_by("nope"),
            |e| matches!(e, Error::UnknownColumn { column, .. } if column == "nope"),
        ),
        case(
            "schema mode overwrite",
            m(on)
                .when_matched_update_all(None)
                .with_schema_mode(SchemaMode::Overwrite),
            |e| matches!(e, Error::InvalidArgument(_)),
        ),
        case(
            "a condition that is not boolean",
            m(on).when_matched_delete(Some("source.v + 1")),
            |e| !matches!(e, Error::Storage(_)),
        ),
    ];
    for (what, builder, ok) in cases {
        match builder.execute().await {
            Ok(r) => panic!("{what}: accepted: {r:?}"),
            Err(e) => assert!(ok(&e), "{what}: unexpected error: {e:?}"),
        }
        assert_eq!(version(&table).await, v, "{what}: committed");
        assert_eq!(rows_of(&table, &cols()).await, before, "{what}");
    }
}

// ---------------------------------------------------------------------------------------
// 10. Concurrent merges: conflicts as for DELETE/UPDATE, by read files and predicate
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_merges_conflict_only_when_they_overlap() {
    // ids 1..=12 in files of four.
    let table = simple_table("memory://concurrent", 12).await;
    let s0 = table.snapshot().await.unwrap();
    let upsert = |snap: &Snapshot, id: i64| {
        table
            .merge(
                vec![batch_of(&[
                    ("id", longs(&[Some(id)])),
                    ("v", longs(&[Some(-id)])),
                ])],
                "target.id = source.id",
            )
            .when_matched_update(None, &["v = source.v"])
            .when_not_matched_insert_all(None)
            .with_snapshot(snap.clone())
    };
    // Two merges of different files from the same snapshot both commit.
    let a = upsert(&s0, 1).execute().await.unwrap();
    let b = upsert(&s0, 10).execute().await.unwrap();
    assert_eq!((a.version, b.version), (s0.version() + 1, s0.version() + 2));
    // A third one rewriting the file the first rewrote conflicts.
    let err = upsert(&s0, 2).execute().await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");

    // A concurrent (non-blind) insert of a key the merge looks for conflicts; one of
    // a key outside the merge's key range does not.
    let s1 = table.snapshot().await.unwrap();
    upsert(&s1, 50).execute().await.unwrap();
    let err = upsert(&s1, 50).execute().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict(shoal_format::ConflictKind::ConcurrentAppend { .. })
        ),
        "{err}"
    );
    let r = upsert(&s1, 70).execute().await.unwrap();
    assert_eq!(r.version, s1.version() + 2);
    let rows = rows_of(&table, &["id".into(), "v".into()]).await;
    assert_eq!(rows.iter().filter(|r| r.starts_with("50 |")).count(), 1);
    for want in ["1 | -1", "10 | -10", "2 | 2", "50 | -50", "70 | -70"] {
        assert!(rows.contains(&want.to_string()), "{want} in {rows:?}");
    }
    let history = table.history(Some(1)).await.unwrap();
    let info = &history[0].commit_info;
    assert_eq!(info.operation(), Some("MERGE"));
    let metrics = info.0.get("operationMetrics").expect("operationMetrics");
    // Delta writes operation metrics as strings.
    assert_eq!(metrics["numTargetRowsInserted"], "1", "{metrics}");
    assert_eq!(metrics["numTargetRowsUpdated"], "0", "{metrics}");
    assert_eq!(metrics["numSourceRows"], "1", "{metrics}");
}

// ---------------------------------------------------------------------------------------
// Regression tests for bugs found while writing these tests
// ---------------------------------------------------------------------------------------

/// A table `(id long NOT NULL, v long)` with ids 1, 2.
async fn required_id_table(uri: &str) -> Table {
    let table = Table::at(uri).unwrap();
    let t = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(Int64Array::from(vec![Some(1), Some(2)])),
        ],
    )
    .unwrap();
    table.write(vec![t]).execute().await.unwrap();
    table
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_insert_into_a_table_with_a_required_column() {
    let table = required_id_table("memory://conditional-insert").await;
    // The CDC shape: insert new keys unless the change is a delete.
    let src = batch_of(&[
        ("id", longs(&[Some(3), Some(4)])),
        ("v", longs(&[Some(30), Some(1)])),
    ]);
    let r = table
        .merge(vec![src], "target.id = source.id")
        .when_not_matched_insert_all(Some("source.v > 10"))
        .execute()
        .await
        .unwrap();
    assert_eq!(r.rows_inserted, 1);
    assert_eq!(
        rows_of(&table, &["id".into(), "v".into()]).await,
        vec!["1 | 1", "2 | 2", "3 | 30"]
    );
    // And a NULL really written into a NOT NULL column is a SchemaMismatch naming it
    // (check_not_null), not an Arrow error.
    let src = batch_of(&[("v", longs(&[Some(5)])), ("id", longs(&[Some(9)]))]);
    let err = table
        .merge(vec![src], "target.id = source.id")
        .when_not_matched_insert(None, &[("v", "source.v")])
        .execute()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::SchemaMismatch { column, .. } if column == "id"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_merge_leaves_no_data_files() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("t");
    let table = simple_table(uri.to_str().unwrap(), 12).await;
    let data_files = || {
        walk(&uri)
            .into_iter()
            .filter(|p| p.ends_with(".parquet"))
            .count()
    };
    let before = data_files();
    // id 1 (first file) is rewritten and its file closed before the duplicate 9 is met.
    let src = batch_of(&[
        ("id", longs(&[Some(1), Some(9), Some(9)])),
        ("v", longs(&[Some(10), Some(90), Some(91)])),
    ]);
    let err = table
        .merge(vec![src], "target.id = source.id")
        .when_matched_update(None, &["v = source.v"])
        .with_writer_options(small_files())
        .execute()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("several source rows"), "{err}");
    assert_eq!(data_files(), before, "orphaned data files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_to_null_names_the_right_column() {
    let table = Table::at("memory://null-update").unwrap();
    let t = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("req", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(StringArray::from(vec!["r1", "r2"])),
        ],
    )
    .unwrap();
    table.write(vec![t]).execute().await.unwrap();
    let err = table
        .merge(
            vec![batch_of(&[("id", longs(&[Some(2)]))])],
            "target.id = source.id",
        )
        .when_matched_update(None, &["req = NULL"])
        .execute()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::SchemaMismatch { column, .. } if column == "req"),
        "{err}"
    );
}
