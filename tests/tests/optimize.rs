//! OPTIMIZE (bin-packing) and Z-order, proven rather than just run:
//! - the content of every version is identical before and after, commits carry
//!   `dataChange: false`, only small files (and only matching partitions) are rewritten;
//! - Z-order gives data skipping on *both* clustering columns, even with very different
//!   ranges and skews, where a plain sort on one column gives none on the other;
//! - Z-order is incremental unless `full`;
//! - a concurrent DELETE never gets undone (no resurrected or duplicated rows), a concurrent
//!   append never gets lost;
//! - delta-rs reads every version identically, and its change feed skips OPTIMIZE;
//! - bad input fails clearly and commits nothing.
//!
//! Tests marked `#[test]` (not `#[tokio::test]`) drive delta-rs through `SHOAL_PYTHON`
//! and skip, with a notice, without it; every table is built from a seeded PRNG, so a
//! failure reproduces exactly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, ListArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use serde_json::Value;
use shoal_format::ops::optimize::{OptimizeResult, ZORDER_TAG};
use shoal_format::protocol::partition::decode_add_path;
use shoal_format::protocol::Add;
use shoal_format::scan::ScanBuilder;
use shoal_format::{Error, Snapshot, Table};
use shoal_tests::{
    canonical_rows, column_names, python, read_parquet, run_python, Rng, DUMP_ALL_VERSIONS,
};

// ---------------------------------------------------------------------------------------
// Deterministic rows and shared checks
// ---------------------------------------------------------------------------------------

/// Partition values: plain ones, one that needs escaping in paths, and null.
const PARTS: [Option<&str>; 4] = [Some("a"), Some("b"), Some("c d/é"), None];

/// One row of the bin-packing and concurrency tables.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: i64,
    p: Option<String>,
    x: Option<i64>,
    s: Option<String>,
    f: Option<f64>,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("p", DataType::Utf8, true),
        Field::new("x", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("f", DataType::Float64, true),
    ]))
}

fn to_batch(rows: &[Row]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.p.as_deref()))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.x))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.s.as_deref()))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.f))),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

/// `n` rows with consecutive ids from `next_id`, `p` drawn from `parts`.
fn gen_rows(rng: &mut Rng, next_id: &mut i64, parts: &[Option<&str>], n: usize) -> Vec<Row> {
    (0..n)
        .map(|_| {
            let id = *next_id;
            *next_id += 1;
            let p = parts[rng.below(parts.len() as u64) as usize].map(str::to_string);
            Row {
                id,
                p,
                x: (!rng.chance(5)).then(|| rng.below(100) as i64),
                s: (!rng.chance(5)).then(|| format!("s{}", rng.below(20))),
                f: (!rng.chance(5)).then(|| rng.below(10_000) as f64 / 4.0),
            }
        })
        .collect()
}

/// Column names of a schema, sorted: the canonical column order of row comparisons.
fn sorted_names(schema: &SchemaRef) -> Vec<String> {
    let mut names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    names.sort();
    names
}

fn model_rows(rows: &[Row]) -> Vec<String> {
    canonical_rows(&[to_batch(rows)], &sorted_names(&schema()))
}

/// The rows of a snapshot, canonical, over every column of its schema.
async fn rows_of(t: &Table, snap: &Snapshot) -> Vec<String> {
    let batches = t.scan(snap.clone()).collect().await.unwrap();
    canonical_rows(&batches, &sorted_names(&snap.arrow_schema()))
}

async fn rows_now(t: &Table) -> Vec<String> {
    let snap = t.snapshot().await.unwrap();
    rows_of(t, &snap).await
}

/// The rows of every version, oldest first.
async fn all_versions(t: &Table) -> Vec<Vec<String>> {
    let latest = t.snapshot().await.unwrap().version();
    let mut out = Vec::new();
    for v in 0..=latest {
        let snap = t.snapshot_at(v).await.unwrap();
        out.push(rows_of(t, &snap).await);
    }
    out
}

/// The (log-encoded) paths of a snapshot's files.
fn paths(snap: &Snapshot) -> BTreeSet<String> {
    snap.files().iter().map(|a| a.path.clone()).collect()
}

fn files_by_path(snap: &Snapshot) -> HashMap<String, Arc<Add>> {
    snap.files()
        .into_iter()
        .map(|a| (a.path.clone(), a))
        .collect()
}

/// The value of the (single) partition column `p`, if any.
fn partition_of(a: &Add) -> Option<String> {
    a.partition_values.get("p").cloned().flatten()
}

/// The columns a file was Z-ordered by.
fn zorder_tag(a: &Add) -> Option<String> {
    a.tags
        .as_ref()
        .and_then(|t| t.get(ZORDER_TAG))
        .cloned()
        .flatten()
}

fn log_dir(root: &Path) -> std::path::PathBuf {
    root.join("_delta_log")
}

/// The actions of one commit file, in order.
fn commit_actions(root: &Path, version: i64) -> Vec<Value> {
    let path = log_dir(root).join(format!("{version:020}.json"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The newest commit file in `_delta_log`.
fn latest_commit_on_disk(root: &Path) -> i64 {
    std::fs::read_dir(log_dir(root))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".json")?;
            (stem.len() == 20).then(|| stem.parse::<i64>().ok())?
        })
        .max()
        .unwrap()
}

/// Every data file under the table directory (outside `_delta_log`), relative,
/// `/`-separated.
fn data_files_on_disk(root: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "_delta_log") {
                    walk(&p, root, out);
                }
            } else if p.extension().is_some_and(|e| e == "parquet") {
                let rel = p.strip_prefix(root).unwrap();
                out.insert(
                    rel.components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/"),
                );
            }
        }
    }
    let mut out = BTreeSet::new();
    if root.is_dir() {
        walk(root, root, &mut out);
    }
    out
}

/// Every data file on disk was added by some commit: nothing written and then dropped.
async fn assert_no_orphans(t: &Table, root: &Path) {
    let latest = t.snapshot().await.unwrap().version();
    let mut referenced = BTreeSet::new();
    for v in 0..=latest {
        for a in commit_actions(root, v) {
            if let Some(p) = a["add"]["path"].as_str() {
                referenced.insert(decode_add_path(p));
            }
        }
    }
    let orphans: Vec<String> = data_files_on_disk(root)
        .into_iter()
        .filter(|p| !referenced.contains(p))
        .collect();
    assert!(orphans.is_empty(), "orphan data files: {orphans:?}");
}

fn metric(info: &Value, key: &str) -> String {
    info["operationMetrics"][key]
        .as_str()
        .unwrap_or_else(|| panic!("metric {key} missing: {info}"))
        .to_string()
}

/// Checks a committed OPTIMIZE against the snapshot it started from: the commit file
/// (adds and removes with `dataChange: false`, `readVersion`, parameters, metrics), the
/// result's counts and bytes, that bin-packing removed only files under the target and
/// Z-order tagged what it wrote, and that the rows are unchanged. Returns the paths
/// removed and added.
async fn check_optimize_commit(
    t: &Table,
    root: &Path,
    before: &Snapshot,
    r: &OptimizeResult,
    zorder: Option<&str>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    assert!(!r.unchanged, "expected a commit: {r:?}");
    assert_eq!(r.version, before.version() + 1, "{r:?}");
    assert_eq!(r.snapshot.version(), r.version);
    let actions = commit_actions(root, r.version);
    let info = &actions[0]["commitInfo"];
    assert_eq!(info["operation"], "OPTIMIZE", "{info}");
    assert_eq!(info["readVersion"], Value::from(before.version()), "{info}");
    let target: u64 = info["operationParameters"]["targetSize"]
        .as_str()
        .expect("targetSize")
        .parse()
        .unwrap();
    let zorder_param: Vec<String> =
        serde_json::from_str(info["operationParameters"]["zOrderBy"].as_str().unwrap()).unwrap();
    assert_eq!(
        zorder_param.join(","),
        zorder.unwrap_or(""),
        "zOrderBy parameter"
    );
    let old = files_by_path(before);
    let mut removed = BTreeSet::new();
    let mut added = BTreeSet::new();
    let mut added_bytes = 0i64;
    for a in &actions[1..] {
        if let Some(rm) = a.get("remove") {
            assert_eq!(rm["dataChange"], Value::Bool(false), "{rm}");
            let p = rm["path"].as_str().unwrap().to_string();
            assert!(old.contains_key(&p), "removed {p} was not active");
            assert!(removed.insert(p), "removed twice");
        } else if let Some(add) = a.get("add") {
            assert_eq!(add["dataChange"], Value::Bool(false), "{add}");
            let p = add["path"].as_str().unwrap().to_string();
            assert!(!old.contains_key(&p), "added {p} was already active");
            added_bytes += add["size"].as_i64().unwrap();
            assert!(added.insert(p), "added twice");
        } else {
            panic!("unexpected action in an OPTIMIZE commit: {a}");
        }
    }
    assert_eq!(r.files_removed, removed.len());
    assert_eq!(r.files_added, added.len());
    assert!(!removed.is_empty() && !added.is_empty());
    let removed_bytes: i64 = removed.iter().map(|p| old[p].size).sum();
    assert_eq!(r.bytes_before, removed_bytes);
    assert_eq!(r.bytes_after, added_bytes);
    let partitions: BTreeSet<Vec<(String, Option<String>)>> = removed
        .iter()
        .map(|p| {
            let mut k: Vec<_> = old[p]
                .partition_values
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            k.sort();
            k
        })
        .collect();
    assert_eq!(r.partitions_optimized, partitions.len());
    assert!(r.bins >= 1 && r.bins <= r.files_removed);
    assert_eq!(r.bins_abandoned, 0);
    assert!(r.files_considered <= before.num_files());
    assert_eq!(r.files_skipped, r.files_considered - r.files_removed);
    for (key, want) in [
        ("numFilesAdded", r.files_added),
        ("numFilesRemoved", r.files_removed),
        ("numBins", r.bins),
        ("partitionsOptimized", r.partitions_optimized),
        ("totalConsideredFiles", r.files_considered),
        ("totalFilesSkipped", r.files_skipped),
    ] {
        assert_eq!(metric(info, key), want.to_string(), "metric {key}");
    }
    let removed_summary: Value = serde_json::from_str(&metric(info, "filesRemoved")).unwrap();
    assert_eq!(removed_summary["totalSize"], Value::from(removed_bytes));
    let added_summary: Value = serde_json::from_str(&metric(info, "filesAdded")).unwrap();
    assert_eq!(added_summary["totalSize"], Value::from(added_bytes));
    // The new snapshot is the old one minus the removed files plus the added ones.
    let after = t.snapshot_at(r.version).await.unwrap();
    let expected: BTreeSet<String> = paths(before)
        .difference(&removed)
        .cloned()
        .chain(added.iter().cloned())
        .collect();
    assert_eq!(paths(&after), expected);
    assert_eq!(paths(&r.snapshot), expected);
    let new = files_by_path(&after);
    for p in &added {
        let a = &new[p];
        assert!(!a.data_change);
        assert!(a.stats.is_some(), "{p}: no statistics");
        assert_eq!(zorder_tag(a).as_deref(), zorder, "{p}: Z-order tag");
    }
    if zorder.is_none() {
        for p in &removed {
            assert!(
                (old[p].size as u64) < target,
                "bin-packing removed {p} of {} B, not under the target {target} B",
                old[p].size
            );
        }
    }
    assert_eq!(after.totals().1, before.totals().1, "row count");
    assert_eq!(
        rows_of(t, &after).await,
        rows_of(t, before).await,
        "OPTIMIZE changed the rows"
    );
    (removed, added)
}

// ---------------------------------------------------------------------------------------
// 1. Bin-packing
// ---------------------------------------------------------------------------------------

/// A table partitioned by `p` over the 4 `PARTS`: 30 small appends, a DELETE and an
/// UPDATE, then one file in `a` whose size is returned as the target (exactly at it) and
/// a bigger one in `b` (above it).
async fn build_small_file_table(t: &Table, rng: &mut Rng) -> u64 {
    let mut next_id = 0;
    for i in 0..30 {
        let n = 5 + rng.below(30) as usize;
        let rows = gen_rows(rng, &mut next_id, &PARTS, n);
        let w = t.write(vec![to_batch(&rows)]);
        let w = if i == 0 {
            w.with_partition_by(&["p"])
        } else {
            w
        };
        w.execute().await.unwrap();
    }
    let d = t.delete().with_predicate("x < 5").execute().await.unwrap();
    assert!(d.rows_matched > 0);
    t.update()
        .with_assignment("s = 'updated'")
        .with_predicate("id % 7 = 0")
        .execute()
        .await
        .unwrap();
    let big = gen_rows(rng, &mut next_id, &[Some("a")], 600);
    let at = t.write(vec![to_batch(&big)]).execute().await.unwrap();
    let bigger = gen_rows(rng, &mut next_id, &[Some("b")], 1200);
    t.write(vec![to_batch(&bigger)]).execute().await.unwrap();
    let at_file = paths(&at.snapshot)
        .difference(&paths(&t.snapshot_at(at.version - 1).await.unwrap()))
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(at_file.len(), 1);
    files_by_path(&at.snapshot)[&at_file[0]].size as u64
}

/// Files of a snapshot in the partition `p` (None: the null partition).
fn in_partition(snap: &Snapshot, p: Option<&str>) -> BTreeSet<String> {
    snap.files()
        .iter()
        .filter(|a| partition_of(a).as_deref() == p)
        .map(|a| a.path.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bin_packing_keeps_every_version_and_rewrites_only_small_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let t = Table::at(root.to_str().unwrap()).unwrap();
    let mut rng = Rng(0x0571_0001);
    let target = build_small_file_table(&t, &mut rng).await;
    let start = t.snapshot().await.unwrap();
    let sizes = files_by_path(&start);
    assert!(sizes.values().any(|a| a.size as u64 == target));
    assert!(sizes.values().any(|a| a.size as u64 > target));
    let big: BTreeSet<String> = sizes
        .values()
        .filter(|a| a.size as u64 >= target)
        .map(|a| a.path.clone())
        .collect();
    assert_eq!(big.len(), 2, "one file at the target, one above");
    let per_part: BTreeSet<Option<String>> =
        start.files().iter().map(|a| partition_of(a)).collect();
    assert_eq!(per_part.len(), 4, "4 partitions");
    let mut expected = all_versions(&t).await;
    let rows = rows_now(&t).await;

    // Partition `b` only.
    let before = t.snapshot().await.unwrap();
    let in_b = in_partition(&before, Some("b"));
    let r = t
        .optimize()
        .with_target_size(target)
        .with_partition_filter("p = 'b'")
        .execute()
        .await
        .unwrap();
    let (removed, _) = check_optimize_commit(&t, &root, &before, &r, None).await;
    assert_eq!(r.files_considered, in_b.len());
    assert!(removed.is_subset(&in_b), "only partition b is rewritten");
    assert_eq!(r.partitions_optimized, 1);
    assert!(removed.is_disjoint(&big));
    let info = &commit_actions(&root, r.version)[0]["commitInfo"];
    assert_eq!(
        info["operationParameters"]["predicate"],
        Value::from("[\"p = 'b'\"]")
    );
    expected.push(expected.last().unwrap().clone());

    // The null partition only.
    let before = t.snapshot().await.unwrap();
    let in_null = in_partition(&before, None);
    let r = t
        .optimize()
        .with_target_size(target)
        .with_partition_filter("p IS NULL")
        .execute()
        .await
        .unwrap();
    let (removed, _) = check_optimize_commit(&t, &root, &before, &r, None).await;
    assert_eq!(r.files_considered, in_null.len());
    assert!(
        removed.is_subset(&in_null),
        "only the null partition is rewritten"
    );
    assert_eq!(r.partitions_optimized, 1);
    expected.push(expected.last().unwrap().clone());

    // The whole table: the other two partitions (b and null may still have leftovers).
    let before = t.snapshot().await.unwrap();
    let r = t
        .optimize()
        .with_target_size(target)
        .execute()
        .await
        .unwrap();
    let (removed, _) = check_optimize_commit(&t, &root, &before, &r, None).await;
    assert_eq!(r.files_considered, before.num_files());
    assert!(
        removed.is_disjoint(&big),
        "files at or above the target stay"
    );
    let touched: BTreeSet<Option<String>> = removed
        .iter()
        .map(|p| partition_of(&files_by_path(&before)[p]))
        .collect();
    assert!(touched.contains(&Some("a".to_string())));
    assert!(touched.contains(&Some("c d/é".to_string())));
    assert!(big.is_subset(&paths(&t.snapshot().await.unwrap())));
    expected.push(expected.last().unwrap().clone());

    // Z-order partition `a`, then the rest: `a`'s clustered files are skipped.
    let before = t.snapshot().await.unwrap();
    let in_a = in_partition(&before, Some("a"));
    let r = t
        .optimize()
        .with_zorder_by(&["x", "f"])
        .with_target_size(target)
        .with_partition_filter("p = 'a'")
        .execute()
        .await
        .unwrap();
    let (removed, added_a) = check_optimize_commit(&t, &root, &before, &r, Some("x,f")).await;
    assert_eq!(removed, in_a, "every file of `a` is clustered");
    assert_eq!((r.files_considered, r.files_skipped), (in_a.len(), 0));
    assert_eq!(r.partitions_optimized, 1);
    expected.push(expected.last().unwrap().clone());

    let before = t.snapshot().await.unwrap();
    let r = t
        .optimize()
        .with_zorder_by(&["x", "f"])
        .with_target_size(target)
        .execute()
        .await
        .unwrap();
    let (removed, _) = check_optimize_commit(&t, &root, &before, &r, Some("x,f")).await;
    assert_eq!(r.files_considered, before.num_files());
    assert_eq!(r.files_skipped, added_a.len());
    assert!(removed.is_disjoint(&added_a));
    assert_eq!(r.partitions_optimized, 3);
    expected.push(expected.last().unwrap().clone());

    // A second Z-order: nothing to do, nothing committed.
    let before = t.snapshot().await.unwrap();
    let r = t
        .optimize()
        .with_zorder_by(&["x", "f"])
        .with_target_size(target)
        .execute()
        .await
        .unwrap();
    assert!(r.unchanged, "{r:?}");
    assert_eq!(r.version, before.version());
    assert_eq!(
        (r.files_considered, r.files_skipped),
        (before.num_files(), before.num_files())
    );
    assert_eq!(latest_commit_on_disk(&root), before.version());

    assert_eq!(rows_now(&t).await, rows);
    let now = all_versions(&t).await;
    assert_eq!(now.len(), expected.len());
    for (v, rows) in expected.iter().enumerate() {
        assert_eq!(&now[v], rows, "version {v} reads differently");
    }
    assert_no_orphans(&t, &root).await;
}

/// A second bin-packing with the same target never increases the file count, and the
/// passes after it reach a run that changes nothing. (Bins are packed by input file
/// size and the rewritten files come out smaller than their inputs, so a second and even
/// a third pass may re-pack earlier outputs: the library does not promise a one-pass
/// fixpoint.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_bin_packing_optimize_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let t = Table::at(root.to_str().unwrap()).unwrap();
    let mut rng = Rng(0x0571_0002);
    let target = build_small_file_table(&t, &mut rng).await;
    let rows = rows_now(&t).await;
    let first = t
        .optimize()
        .with_target_size(target)
        .execute()
        .await
        .unwrap();
    assert!(!first.unchanged);
    let mut pass = 1;
    loop {
        pass += 1;
        let before = t.snapshot().await.unwrap();
        let r = t
            .optimize()
            .with_target_size(target)
            .execute()
            .await
            .unwrap();
        if r.unchanged {
            assert_eq!(r.version, before.version());
            assert_eq!(
                latest_commit_on_disk(&root),
                before.version(),
                "nothing committed"
            );
            assert_eq!(r.files_considered, before.num_files());
            assert_eq!(r.files_skipped, before.num_files());
            break;
        }
        check_optimize_commit(&t, &root, &before, &r, None).await;
        let after = r.snapshot.num_files();
        assert!(
            after <= before.num_files(),
            "pass {pass} increased the file count: {} -> {after}",
            before.num_files()
        );
        eprintln!(
            "pass {pass} (target {target} B) re-packed {} files into {} ({} bins)",
            r.files_removed, r.files_added, r.bins
        );
        assert!(pass <= 5, "bin-packing does not settle");
    }
    assert_eq!(rows_now(&t).await, rows);
    assert_no_orphans(&t, &root).await;
}

/// Repeated bin-packing converges to a fixpoint without changing any version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_bin_packing_converges_and_then_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let t = Table::at(root.to_str().unwrap()).unwrap();
    let mut rng = Rng(0x0571_0002);
    let target = build_small_file_table(&t, &mut rng).await;
    let rows = rows_now(&t).await;
    let mut passes = 0;
    loop {
        let before = t.snapshot().await.unwrap();
        let r = t
            .optimize()
            .with_target_size(target)
            .execute()
            .await
            .unwrap();
        if r.unchanged {
            assert_eq!(r.version, before.version());
            assert_eq!(latest_commit_on_disk(&root), before.version());
            break;
        }
        check_optimize_commit(&t, &root, &before, &r, None).await;
        passes += 1;
        assert!(passes <= 4, "bin-packing does not converge");
    }
    eprintln!("bin-packing reached its fixpoint after {passes} committing pass(es)");
    assert_eq!(rows_now(&t).await, rows);
    // A huge target packs each partition into one file.
    let r = t
        .optimize()
        .with_target_size(1 << 40)
        .execute()
        .await
        .unwrap();
    assert!(!r.unchanged);
    let snap = t.snapshot().await.unwrap();
    let mut per_part: HashMap<Option<String>, usize> = HashMap::new();
    for a in snap.files() {
        *per_part.entry(partition_of(&a)).or_default() += 1;
    }
    assert_eq!(per_part.len(), 4);
    assert!(per_part.values().all(|n| *n == 1), "{per_part:?}");
    assert_eq!(rows_now(&t).await, rows);
}

/// A table of 20 appends with these properties; returns the largest file size.
async fn table_with_properties(t: &Table, props: &[(&str, &str)]) -> (Vec<Row>, i64) {
    let mut rng = Rng(0x0571_000a);
    let mut next_id = 0;
    let mut model = Vec::new();
    for i in 0..20 {
        let rows = gen_rows(&mut rng, &mut next_id, &[Some("a")], 20);
        let w = t.write(vec![to_batch(&rows)]);
        let w = if i == 0 {
            w.with_properties(
                props
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        } else {
            w
        };
        w.execute().await.unwrap();
        model.extend(rows);
    }
    let max = t
        .snapshot()
        .await
        .unwrap()
        .files()
        .iter()
        .map(|a| a.size)
        .max()
        .unwrap();
    (model, max)
}

/// `delta.targetFileSize` sets the default target; `delta.dataSkippingNumIndexedCols` is
/// honoured by the rewritten files; OPTIMIZE is allowed on append-only tables (its
/// removes change no data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_properties_set_the_target_and_the_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let t = Table::at(root.to_str().unwrap()).unwrap();
    // A first pass to learn the file size, then the real table with the property.
    let probe = tempfile::tempdir().unwrap();
    let (_, max) = table_with_properties(
        &Table::at(probe.path().join("p").to_str().unwrap()).unwrap(),
        &[],
    )
    .await;
    let target = (max * 4).to_string();
    let (model, _) = table_with_properties(
        &t,
        &[
            ("delta.appendOnly", "true"),
            ("delta.targetFileSize", target.as_str()),
            ("delta.dataSkippingNumIndexedCols", "2"),
        ],
    )
    .await;
    let before = t.snapshot().await.unwrap();
    let r = t.optimize().execute().await.unwrap();
    check_optimize_commit(&t, &root, &before, &r, None).await;
    assert!(
        r.bins >= 4,
        "delta.targetFileSize={target} makes bins of about 4 files: {r:?}"
    );
    let info = &commit_actions(&root, r.version)[0]["commitInfo"];
    assert_eq!(
        info["operationParameters"]["targetSize"],
        Value::from(target)
    );
    for a in t.snapshot().await.unwrap().files() {
        if a.data_change {
            continue;
        }
        let stats: Value = serde_json::from_str(a.stats.as_deref().unwrap()).unwrap();
        let cols: BTreeSet<&str> = stats["minValues"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert!(
            cols.is_subset(&BTreeSet::from(["id", "p"])),
            "stats beyond the 2 indexed columns: {cols:?}"
        );
    }
    assert_eq!(rows_now(&t).await, model_rows(&model));
}

/// Databricks documents `delta.targetFileSize` as "in bytes or higher units", e.g.
/// `100mb`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_file_size_property_with_units() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let t = Table::at(root.to_str().unwrap()).unwrap();
    let (_, max) = table_with_properties(&t, &[("delta.targetFileSize", "8kb")]).await;
    assert!(max * 2 < 8192, "precondition: small files ({max} B)");
    let r = t.optimize().execute().await.unwrap();
    assert!(
        r.bins >= 2,
        "8kb should make several bins of 20 files of {max} B; got {} bin(s), {} file(s) out",
        r.bins,
        r.files_added
    );
}

/// Files written before and after a column was added are compacted and Z-ordered together
/// (the old rows read the new column as null).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_across_schema_evolution() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let t = Table::at(root.to_str().unwrap()).unwrap();
    let mut rng = Rng(0x0571_000c);
    let mut next_id = 0;
    for i in 0..10 {
        let rows = gen_rows(&mut rng, &mut next_id, &PARTS[..2], 15);
        let mut batch = to_batch(&rows);
        let mut w_mode = false;
        if i >= 5 {
            let mut fields: Vec<Field> = schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.push(Field::new("note", DataType::Utf8, true));
            let mut cols = batch.columns().to_vec();
            cols.push(Arc::new(StringArray::from_iter(
                rows.iter()
                    .map(|r| (r.id % 3 != 0).then(|| format!("note {}", r.id % 97))),
            )));
            batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
            w_mode = true;
        }
        let w = t.write(vec![batch]);
        let w = if i == 0 {
            w.with_partition_by(&["p"])
        } else {
            w
        };
        let w = if w_mode {
            w.with_schema_mode(shoal_format::SchemaMode::Merge)
        } else {
            w
        };
        w.execute().await.unwrap();
    }
    let mut expected = all_versions(&t).await;
    let before = t.snapshot().await.unwrap();
    let r = t
        .optimize()
        .with_target_size(1 << 30)
        .execute()
        .await
        .unwrap();
    check_optimize_commit(&t, &root, &before, &r, None).await;
    assert_eq!(r.files_removed, 20);
    assert_eq!(r.files_added, 2);
    expected.push(expected.last().unwrap().clone());
    let before = t.snapshot().await.unwrap();
    let r = t
        .optimize()
        .with_zorder_by(&["note", "x"])
        .with_target_size(1 << 30)
        .execute()
        .await
        .unwrap();
    check_optimize_commit(&t, &root, &before, &r, Some("note,x")).await;
    expected.push(expected.last().unwrap().clone());
    let now = all_versions(&t).await;
    assert_eq!(now, expected);
}

// ---------------------------------------------------------------------------------------
// 2. Z-order: balanced skipping, incremental, nulls
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct ZRow {
    id: i64,
    a: Option<i64>,
    b: Option<i64>,
    s: Option<String>,
}

fn zschema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
    ]))
}

fn zbatch(rows: &[ZRow]) -> RecordBatch {
    RecordBatch::try_new(
        zschema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.a))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.b))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.s.as_deref()))),
        ],
    )
    .unwrap()
}

fn zmodel(rows: &[ZRow]) -> Vec<String> {
    canonical_rows(&[zbatch(rows)], &sorted_names(&zschema()))
}

/// How `b` is distributed.
#[derive(Clone, Copy)]
enum BShape {
    /// 90% of rows in 0..10, the rest over 0..1e9.
    Skewed,
    /// Uniform over 0..1e12.
    Uniform,
}

/// `a` uniform over 0..1_000_000; `b` per `shape`; 0.5% nulls in each.
fn gen_zrows(rng: &mut Rng, next_id: &mut i64, n: usize, shape: BShape) -> Vec<ZRow> {
    (0..n)
        .map(|_| {
            let id = *next_id;
            *next_id += 1;
            let a = (rng.below(1000) >= 5).then(|| rng.below(1_000_000) as i64);
            let b = (rng.below(1000) >= 5).then(|| match shape {
                BShape::Skewed if rng.chance(90) => rng.below(10) as i64,
                BShape::Skewed => rng.below(1_000_000_000) as i64,
                BShape::Uniform => rng.below(1_000_000_000_000) as i64,
            });
            ZRow {
                id,
                a,
                b,
                s: Some(format!("payload-{}", rng.below(1000))),
            }
        })
        .collect()
}

/// Lookups of a workload: point lookups at the values of random rows, and narrow ranges
/// covering 1% of the rows by rank.
struct Lookups {
    a_points: Vec<String>,
    b_points: Vec<String>,
    a_ranges: Vec<String>,
    b_ranges: Vec<String>,
}

fn lookups(rows: &[ZRow], rng: &mut Rng, n: usize) -> Lookups {
    let mut a: Vec<i64> = rows.iter().filter_map(|r| r.a).collect();
    let mut b: Vec<i64> = rows.iter().filter_map(|r| r.b).collect();
    let points = |vals: &[i64], col: &str, rng: &mut Rng| -> Vec<String> {
        (0..n)
            .map(|_| format!("{col} = {}", vals[rng.below(vals.len() as u64) as usize]))
            .collect()
    };
    let a_points = points(&a, "a", rng);
    let b_points = points(&b, "b", rng);
    a.sort_unstable();
    b.sort_unstable();
    let ranges = |vals: &[i64], col: &str, rng: &mut Rng| -> Vec<String> {
        let width = vals.len() / 100;
        (0..n)
            .map(|_| {
                let lo = rng.below((vals.len() - width) as u64) as usize;
                format!("{col} >= {} AND {col} <= {}", vals[lo], vals[lo + width])
            })
            .collect()
    };
    Lookups {
        a_points,
        a_ranges: ranges(&a, "a", rng),
        b_points,
        b_ranges: ranges(&b, "b", rng),
    }
}

/// Mean fraction of files skipped by statistics over the predicates.
fn skip_fraction(snap: &Snapshot, predicates: &[String]) -> f64 {
    let mut sum = 0.0;
    for p in predicates {
        let plan = ScanBuilder::new(snap.clone())
            .with_predicate(p)
            .unwrap()
            .plan();
        assert!(plan.stats_used);
        sum += plan.files_skipped as f64 / plan.files_total as f64;
    }
    sum / predicates.len() as f64
}

#[derive(Debug, Clone, Copy)]
struct Skips {
    files: usize,
    a_point: f64,
    b_point: f64,
    a_range: f64,
    b_range: f64,
}

fn skips(snap: &Snapshot, l: &Lookups) -> Skips {
    Skips {
        files: snap.num_files(),
        a_point: skip_fraction(snap, &l.a_points),
        b_point: skip_fraction(snap, &l.b_points),
        a_range: skip_fraction(snap, &l.a_ranges),
        b_range: skip_fraction(snap, &l.b_ranges),
    }
}

/// Writes `rows` as `files` appends of consecutive slices.
async fn write_in_files(t: &Table, rows: &[ZRow], files: usize) {
    let per = rows.len().div_ceil(files);
    for chunk in rows.chunks(per) {
        t.write(vec![zbatch(chunk)]).execute().await.unwrap();
    }
}

/// Z-orders a table of `rows` (written in 8 files) into about 32 files; the same rows
/// sorted by `a` only, in as many files, for comparison. Returns (z-order, sort-by-a).
async fn zorder_vs_sort(rows: &[ZRow], l: &Lookups) -> (Skips, Skips) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("z");
    let t = Table::at(root.to_str().unwrap()).unwrap();
    write_in_files(&t, rows, 8).await;
    let before = t.snapshot().await.unwrap();
    let total: i64 = before.files().iter().map(|a| a.size).sum();
    let target = (total / 32) as u64;
    let r = t
        .optimize()
        .with_zorder_by(&["a", "b"])
        .with_target_size(target)
        .execute()
        .await
        .unwrap();
    check_optimize_commit(&t, &root, &before, &r, Some("a,b")).await;
    assert_eq!(r.files_removed, 8);
    assert!(r.files_added >= 20, "at least 20 files: {r:?}");
    let snap = t.snapshot().await.unwrap();
    assert_eq!(rows_of(&t, &snap).await, zmodel(rows));
    // Skipping is sound: a few lookups return exactly the model's rows.
    for p in l.a_points.iter().take(3).chain(l.b_ranges.iter().take(3)) {
        let got = t
            .scan(snap.clone())
            .with_predicate(p)
            .unwrap()
            .collect()
            .await
            .unwrap();
        let expect: Vec<ZRow> = rows
            .iter()
            .filter(|r| matches_simple(r, p))
            .cloned()
            .collect();
        assert_eq!(
            canonical_rows(&got, &sorted_names(&zschema())),
            zmodel(&expect),
            "{p}"
        );
    }
    let z = skips(&snap, l);

    let dir2 = tempfile::tempdir().unwrap();
    let t2 = Table::at(dir2.path().join("s").to_str().unwrap()).unwrap();
    let mut sorted = rows.to_vec();
    sorted.sort_by_key(|r| (r.a, r.id));
    write_in_files(&t2, &sorted, r.files_added).await;
    let naive = skips(&t2.snapshot().await.unwrap(), l);
    (z, naive)
}

/// Evaluates the lookups built by `lookups` on a model row.
fn matches_simple(r: &ZRow, p: &str) -> bool {
    let v = |col: &str| if col == "a" { r.a } else { r.b };
    let parts: Vec<&str> = p.split_whitespace().collect();
    match parts.as_slice() {
        [c, "=", x] => v(c) == Some(x.parse().unwrap()),
        [c, ">=", lo, "AND", _, "<=", hi] => {
            let (lo, hi): (i64, i64) = (lo.parse().unwrap(), hi.parse().unwrap());
            v(c).is_some_and(|x| x >= lo && x <= hi)
        }
        _ => panic!("unexpected lookup {p}"),
    }
}

fn report(label: &str, s: &Skips) {
    eprintln!(
        "{label:<28} files {:>3}  skipped: a= {:>5.1}%  b= {:>5.1}%  a-range {:>5.1}%  b-range {:>5.1}%",
        s.files,
        s.a_point * 100.0,
        s.b_point * 100.0,
        s.a_range * 100.0,
        s.b_range * 100.0
    );
}

/// Columns of very different ranges (uniform): both get skipping, a plain sort by `a`
/// gives none on `b`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zorder_skips_on_both_columns_of_different_ranges() {
    let mut rng = Rng(0x0571_0003);
    let mut next_id = 0;
    let rows = gen_zrows(&mut rng, &mut next_id, 40_000, BShape::Uniform);
    let l = lookups(&rows, &mut rng, 50);
    let (z, naive) = zorder_vs_sort(&rows, &l).await;
    report("uniform b: z-order(a,b)", &z);
    report("uniform b: sorted by a", &naive);
    for (what, v) in [
        ("a point", z.a_point),
        ("b point", z.b_point),
        ("a range", z.a_range),
        ("b range", z.b_range),
    ] {
        assert!(v >= 0.6, "z-order skips only {:.1}% on {what}", v * 100.0);
    }
    assert!(naive.b_point < 0.1 && naive.b_range < 0.1);
    assert!(z.b_point > naive.b_point + 0.5);
}

/// `b` heavily skewed (90% of rows in 0..10, the rest over 0..1e9) next to a uniform `a`
/// over 0..1e6: the issue asks for equal weight through quantile buckets, so `b` must get
/// skipping as good as `a`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zorder_balances_skipping_on_a_skewed_column() {
    let mut rng = Rng(0x0571_0004);
    let mut next_id = 0;
    let rows = gen_zrows(&mut rng, &mut next_id, 40_000, BShape::Skewed);
    let l = lookups(&rows, &mut rng, 50);
    let (z, naive) = zorder_vs_sort(&rows, &l).await;
    report("skewed b: z-order(a,b)", &z);
    report("skewed b: sorted by a", &naive);
    assert!(naive.b_point < 0.1, "a sort by a does not skip on b");
    for (what, v) in [
        ("a point", z.a_point),
        ("b point", z.b_point),
        ("a range", z.a_range),
        ("b range", z.b_range),
    ] {
        assert!(v >= 0.6, "z-order skips only {:.1}% on {what}", v * 100.0);
    }
}

/// String keys that share a long prefix (`customer-00012345`): Z-order by them must still
/// cluster (point lookups skip) and write files of about the target size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zorder_by_strings_with_a_common_prefix() {
    let mut rng = Rng(0x0571_0009);
    let rows: Vec<ZRow> = (0..20_000)
        .map(|id| ZRow {
            id,
            a: Some(rng.below(1_000_000) as i64),
            b: None,
            s: Some(format!("customer-{:08}", rng.below(100_000_000))),
        })
        .collect();
    let keys: Vec<&str> = rows.iter().map(|r| r.s.as_deref().unwrap()).collect();
    let lookups: Vec<String> = (0..50)
        .map(|_| format!("s = '{}'", keys[rng.below(keys.len() as u64) as usize]))
        .collect();
    let mut outcome = Vec::new();
    for columns in [&["s"][..], &["s", "a"][..]] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        let t = Table::at(root.to_str().unwrap()).unwrap();
        write_in_files(&t, &rows, 8).await;
        let before = t.snapshot().await.unwrap();
        let total: i64 = before.files().iter().map(|a| a.size).sum();
        let target = (total / 16) as u64;
        let r = t
            .optimize()
            .with_zorder_by(columns)
            .with_target_size(target)
            .execute()
            .await
            .unwrap();
        check_optimize_commit(&t, &root, &before, &r, Some(&columns.join(","))).await;
        let snap = t.snapshot().await.unwrap();
        let skip = skip_fraction(&snap, &lookups);
        let largest = snap.files().iter().map(|a| a.size).max().unwrap();
        eprintln!(
            "z-order by {columns:?}: {} files (target {target} B, largest {largest} B), \
             s lookups skip {:.1}%",
            r.files_added,
            skip * 100.0
        );
        outcome.push((columns, r.files_added, skip));
    }
    for (columns, files, skip) in outcome {
        assert!(
            files >= 10,
            "z-order by {columns:?}: {files} file(s) for 16 targets"
        );
        assert!(
            skip >= 0.6,
            "z-order by {columns:?}: s lookups skip only {:.1}%",
            skip * 100.0
        );
    }
}

/// Z-order by each primitive type: the content is unchanged, the files carry the tag,
/// and point lookups on the clustering column skip files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zorder_by_every_primitive_type() {
    let failures = zorder_each_type(&["i8", "i16", "i32", "d", "ts", "f32"]).await;
    assert!(
        failures.is_empty(),
        "Z-order clusters poorly (target: about 8 files, >= 50% skipped) by {failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zorder_by_decimal() {
    let failures = zorder_each_type(&["dec"]).await;
    assert!(failures.is_empty(), "{failures:?}");
}

/// Z-orders a 10-type table by each column in turn; returns how the `strict` columns
/// fell short (fewer than 6 files for 8 targets, or too little skipping).
async fn zorder_each_type(strict: &[&str]) -> Vec<String> {
    use arrow::array::{
        BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Int16Array,
        Int32Array, Int8Array, TimestampMicrosecondArray,
    };
    use arrow::datatypes::TimeUnit;
    const TS0: i64 = 1_704_067_200_000_000;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("i8", DataType::Int8, true),
        Field::new("i16", DataType::Int16, true),
        Field::new("i32", DataType::Int32, true),
        Field::new("d", DataType::Date32, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("f32", DataType::Float32, true),
        Field::new("flag", DataType::Boolean, true),
        Field::new("dec", DataType::Decimal128(12, 2), true),
        Field::new("bin", DataType::Binary, true),
    ]));
    let mut rng = Rng(0x0571_000b);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let t = Table::at(root.to_str().unwrap()).unwrap();
    // Per column: the values written, for lookups.
    let mut values: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for f in 0..8i64 {
        let n = 1000usize;
        let mut v = |name: &'static str, range: u64| -> Vec<Option<i64>> {
            let col: Vec<Option<i64>> = (0..n)
                .map(|_| (!rng.chance(2)).then(|| rng.below(range) as i64))
                .collect();
            values
                .entry(name)
                .or_default()
                .extend(col.iter().flatten().copied());
            col
        };
        let i8s = v("i8", 250);
        let i16s = v("i16", 30_000);
        let i32s = v("i32", 2_000_000_000);
        let ds = v("d", 20_000);
        let tss = v("ts", 1_000_000_000_000);
        let f32s = v("f32", 1_000_000);
        let flags = v("flag", 2);
        let decs = v("dec", 100_000_000);
        let bins = v("bin", 1 << 40);
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                (0..n as i64).map(|i| f * 1000 + i),
            )),
            Arc::new(Int8Array::from_iter(
                i8s.iter().map(|x| x.map(|x| (x - 125) as i8)),
            )),
            Arc::new(Int16Array::from_iter(
                i16s.iter().map(|x| x.map(|x| (x - 15_000) as i16)),
            )),
            Arc::new(Int32Array::from_iter(
                i32s.iter().map(|x| x.map(|x| (x - 1_000_000_000) as i32)),
            )),
            Arc::new(Date32Array::from_iter(
                ds.iter().map(|x| x.map(|x| x as i32)),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter(tss.iter().map(|x| x.map(|x| TS0 + x)))
                    .with_timezone("UTC"),
            ),
            Arc::new(Float32Array::from_iter(
                f32s.iter().map(|x| x.map(|x| x as f32 / 4.0 - 1000.0)),
            )),
            Arc::new(BooleanArray::from_iter(
                flags.iter().map(|x| x.map(|x| x == 1)),
            )),
            Arc::new(
                Decimal128Array::from_iter(decs.iter().map(|x| x.map(|x| x as i128 - 50_000_000)))
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
            Arc::new(BinaryArray::from_iter(
                bins.iter()
                    .map(|x| x.map(|x| (x as u64).to_be_bytes().to_vec())),
            )),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        t.write(vec![batch]).execute().await.unwrap();
    }
    let total: i64 = t
        .snapshot()
        .await
        .unwrap()
        .files()
        .iter()
        .map(|a| a.size)
        .sum();
    let target = (total / 8) as u64;
    let rows = rows_now(&t).await;
    let lookup = |col: &str, v: i64| -> String {
        match col {
            "i8" => format!("i8 = {}", v - 125),
            "i16" => format!("i16 = {}", v - 15_000),
            "i32" => format!("i32 = {}", v - 1_000_000_000),
            "d" => format!(
                "d = DATE '{}'",
                chrono::NaiveDate::from_num_days_from_ce_opt(719_163 + v as i32).unwrap()
            ),
            "ts" => format!(
                "ts = TIMESTAMP '{}'",
                chrono::DateTime::from_timestamp_micros(TS0 + v)
                    .unwrap()
                    .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            ),
            "f32" => format!("f32 = {}", v as f32 / 4.0 - 1000.0),
            "flag" => format!("flag = {}", v == 1),
            "dec" => {
                let x = v - 50_000_000;
                format!(
                    "dec = {}{}.{:02}",
                    if x < 0 { "-" } else { "" },
                    x.abs() / 100,
                    x.abs() % 100
                )
            }
            "bin" => format!("bin = X'{:016x}'", v as u64),
            _ => unreachable!(),
        }
    };
    let mut failures = Vec::new();
    for col in ["i8", "i16", "i32", "d", "ts", "f32", "flag", "dec", "bin"] {
        let before = t.snapshot().await.unwrap();
        let r = t
            .optimize()
            .with_zorder_by(&[col])
            .with_full(true)
            .with_target_size(target)
            .execute()
            .await
            .unwrap();
        check_optimize_commit(&t, &root, &before, &r, Some(col)).await;
        assert_eq!(
            rows_now(&t).await,
            rows,
            "z-order by {col} changed the rows"
        );
        let snap = t.snapshot().await.unwrap();
        let vals = &values[col];
        let preds: Vec<String> = (0..20)
            .map(|_| lookup(col, vals[rng.below(vals.len() as u64) as usize]))
            .collect();
        let skip = if col == "bin" {
            // Binary statistics are not written by every engine; only report.
            ScanBuilder::new(snap.clone())
                .with_predicate(&preds[0])
                .map(|s| s.plan().files_skipped as f64 / snap.num_files() as f64)
                .unwrap_or(f64::NAN)
        } else {
            skip_fraction(&snap, &preds)
        };
        eprintln!(
            "z-order by {col:<4}: {:>2} files, point lookups skip {:>5.1}%",
            r.files_added,
            skip * 100.0
        );
        let expect = match col {
            _ if !strict.contains(&col) => None,
            // Float maxima are not trusted for skipping: only the lower bound prunes.
            "f32" => Some(0.3),
            _ => Some(0.5),
        };
        if let Some(min) = expect {
            if r.files_added < 6 || skip < min {
                failures.push(format!(
                    "{col}: {} files, skip {:.1}%",
                    r.files_added,
                    skip * 100.0
                ));
            }
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zorder_is_incremental_unless_full_and_keeps_nulls() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let t = Table::at(root.to_str().unwrap()).unwrap();
    let mut rng = Rng(0x0571_0005);
    let mut next_id = 0;
    let mut model = Vec::new();
    for _ in 0..6 {
        let mut rows = gen_zrows(&mut rng, &mut next_id, 1500, BShape::Skewed);
        // Plenty of nulls, in each clustering column and in both at once.
        for (i, r) in rows.iter_mut().enumerate() {
            match i % 20 {
                0 => r.a = None,
                1 => r.b = None,
                2 => {
                    r.a = None;
                    r.b = None
                }
                _ => {}
            }
        }
        t.write(vec![zbatch(&rows)]).execute().await.unwrap();
        model.extend(rows);
    }
    let total: i64 = t
        .snapshot()
        .await
        .unwrap()
        .files()
        .iter()
        .map(|a| a.size)
        .sum();
    let target = (total / 6) as u64;
    let mut expected = all_versions(&t).await;

    // First Z-order: everything.
    let before = t.snapshot().await.unwrap();
    let r1 = t
        .optimize()
        .with_zorder_by(&["a", "b"])
        .with_target_size(target)
        .execute()
        .await
        .unwrap();
    check_optimize_commit(&t, &root, &before, &r1, Some("a,b")).await;
    assert_eq!(r1.files_removed, 6);
    assert_eq!(rows_now(&t).await, zmodel(&model));
    expected.push(expected.last().unwrap().clone());
    let clustered = paths(&t.snapshot().await.unwrap());

    // Nulls are kept and findable.
    let snap = t.snapshot().await.unwrap();
    for (p, want) in [
        ("a IS NULL", model.iter().filter(|r| r.a.is_none()).count()),
        ("b IS NULL", model.iter().filter(|r| r.b.is_none()).count()),
        (
            "a IS NULL AND b IS NULL",
            model
                .iter()
                .filter(|r| r.a.is_none() && r.b.is_none())
                .count(),
        ),
    ] {
        let got: usize = t
            .scan(snap.clone())
            .with_predicate(p)
            .unwrap()
            .collect()
            .await
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(got, want, "{p}");
    }

    // Again: nothing to do.
    let r2 = t
        .optimize()
        .with_zorder_by(&["a", "b"])
        .with_target_size(target)
        .execute()
        .await
        .unwrap();
    assert!(r2.unchanged, "{r2:?}");
    assert_eq!(r2.files_considered, clustered.len());
    assert_eq!(r2.files_skipped, clustered.len());
    assert_eq!(latest_commit_on_disk(&root), r1.version);

    // New files: only they are Z-ordered; the clustered files keep their paths.
    for _ in 0..3 {
        let rows = gen_zrows(&mut rng, &mut next_id, 300, BShape::Skewed);
        t.write(vec![zbatch(&rows)]).execute().await.unwrap();
        model.extend(rows);
        expected.push(zmodel(&model));
    }
    let before = t.snapshot().await.unwrap();
    let fresh: BTreeSet<String> = paths(&before).difference(&clustered).cloned().collect();
    assert_eq!(fresh.len(), 3);
    let r3 = t
        .optimize()
        .with_zorder_by(&["a", "b"])
        .with_target_size(target)
        .execute()
        .await
        .unwrap();
    let (removed, _) = check_optimize_commit(&t, &root, &before, &r3, Some("a,b")).await;
    assert_eq!(removed, fresh, "only the new files are rewritten");
    assert_eq!(r3.files_skipped, clustered.len());
    let now = paths(&t.snapshot().await.unwrap());
    assert!(
        clustered.is_subset(&now),
        "clustered files keep their paths"
    );
    expected.push(expected.last().unwrap().clone());

    // Full: everything again, in one clustering.
    let before = t.snapshot().await.unwrap();
    let r4 = t
        .optimize()
        .with_zorder_by(&["a", "b"])
        .with_target_size(target)
        .with_full(true)
        .execute()
        .await
        .unwrap();
    check_optimize_commit(&t, &root, &before, &r4, Some("a,b")).await;
    assert_eq!(r4.files_removed, before.num_files());
    expected.push(expected.last().unwrap().clone());
    let full_layout = record_counts(&t.snapshot().await.unwrap());

    // The same full Z-order with a tiny memory budget (one key range per pass) writes
    // the same layout.
    let before = t.snapshot().await.unwrap();
    let r5 = t
        .optimize()
        .with_zorder_by(&["a", "b"])
        .with_target_size(target)
        .with_full(true)
        .with_memory_budget(1)
        .execute()
        .await
        .unwrap();
    check_optimize_commit(&t, &root, &before, &r5, Some("a,b")).await;
    assert_eq!(
        record_counts(&t.snapshot().await.unwrap()),
        full_layout,
        "a smaller memory budget changes the layout"
    );
    expected.push(expected.last().unwrap().clone());

    // Other columns (or order): not the same clustering, everything is rewritten.
    let before = t.snapshot().await.unwrap();
    let r6 = t
        .optimize()
        .with_zorder_by(&["b", "a"])
        .with_target_size(target)
        .execute()
        .await
        .unwrap();
    check_optimize_commit(&t, &root, &before, &r6, Some("b,a")).await;
    assert_eq!(r6.files_removed, before.num_files());
    expected.push(expected.last().unwrap().clone());

    // Bin-packing the clustered files drops the tag: they are no longer clustered.
    let before = t.snapshot().await.unwrap();
    let r7 = t
        .optimize()
        .with_target_size(1 << 40)
        .execute()
        .await
        .unwrap();
    check_optimize_commit(&t, &root, &before, &r7, None).await;
    assert_eq!(t.snapshot().await.unwrap().num_files(), 1);
    expected.push(expected.last().unwrap().clone());

    let now = all_versions(&t).await;
    assert_eq!(now.len(), expected.len());
    for (v, rows) in expected.iter().enumerate() {
        assert_eq!(&now[v], rows, "version {v} reads differently");
    }
    assert_no_orphans(&t, &root).await;
}

/// `numRecords` of every file, sorted: the layout of a snapshot.
fn record_counts(snap: &Snapshot) -> Vec<i64> {
    let mut v: Vec<i64> = snap
        .files()
        .iter()
        .map(|a| {
            let s: Value = serde_json::from_str(a.stats.as_deref().unwrap()).unwrap();
            s["numRecords"].as_i64().unwrap()
        })
        .collect();
    v.sort_unstable();
    v
}

// ---------------------------------------------------------------------------------------
// 3. Concurrency
// ---------------------------------------------------------------------------------------

/// 20 files of 50 rows (file i holds ids 50i..50i+49; `p` is a data column here unless
/// `partitioned`); returns the rows and a target that makes bins of about 5 files.
async fn concurrency_table(t: &Table, partitioned: bool) -> (Vec<Row>, u64) {
    let mut rng = Rng(0x0571_0006);
    let mut model = Vec::new();
    for i in 0..20i64 {
        let mut next_id = i * 50;
        let rows: Vec<Row> = gen_rows(&mut rng, &mut next_id, &[None], 50)
            .into_iter()
            .map(|mut r| {
                r.p = PARTS[(r.id as usize / 50) % 3].map(str::to_string);
                r
            })
            .collect();
        let w = t.write(vec![to_batch(&rows)]);
        let w = if partitioned && i == 0 {
            w.with_partition_by(&["p"])
        } else {
            w
        };
        w.execute().await.unwrap();
        model.extend(rows);
    }
    let sizes: Vec<i64> = t
        .snapshot()
        .await
        .unwrap()
        .files()
        .iter()
        .map(|a| a.size)
        .collect();
    let max = *sizes.iter().max().unwrap() as u64;
    (model, max * 5 + max / 2)
}

async fn assert_content(t: &Table, model: &[Row], what: &str) {
    let got = rows_now(t).await;
    assert_eq!(
        got,
        model_rows(model),
        "{what}: content differs from the model"
    );
    let snap = t.snapshot().await.unwrap();
    let batches = t.scan(snap).collect().await.unwrap();
    let mut ids = shoal_tests::i64_values(&batches, "id");
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "{what}: duplicated rows");
}

/// The OPTIMIZE lost to a DELETE: either it abandoned the conflicting bins or it failed
/// with a conflict. Returns the bins it abandoned (None when it failed).
fn lost_to_delete(r: shoal_format::Result<OptimizeResult>, what: &str) -> Option<OptimizeResult> {
    match r {
        Ok(r) => {
            eprintln!(
                "{what}: optimize committed {} bin(s), abandoned {} (unchanged: {})",
                r.bins, r.bins_abandoned, r.unchanged
            );
            assert!(r.bins_abandoned >= 1, "{what}: nothing abandoned: {r:?}");
            Some(r)
        }
        Err(Error::Conflict(k)) => {
            eprintln!("{what}: optimize failed with a conflict: {k}");
            None
        }
        Err(e) => panic!("{what}: unexpected error {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_after_a_concurrent_delete_never_resurrects_rows() {
    // (a) The DELETE rewrites one file; (b) it drops a whole file unread; (c) it touches
    // every file.
    for (what, predicate, whole_file, every_bin) in [
        ("rewrite", "id >= 105 AND id < 110", false, false),
        ("whole file", "id >= 100 AND id < 150", true, false),
        ("every bin", "id % 50 = 7", false, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        let t = Table::at(root.to_str().unwrap()).unwrap();
        let (mut model, target) = concurrency_table(&t, false).await;
        let s = t.snapshot().await.unwrap();
        let d = t
            .delete()
            .with_snapshot(s.clone())
            .with_predicate(predicate)
            .execute()
            .await
            .unwrap();
        assert!(d.rows_matched > 0);
        if whole_file {
            assert_eq!((d.files_removed, d.files_added), (1, 0), "{what}");
        }
        let pred = bind_model_predicate(predicate);
        model.retain(|r| !pred(r));
        let o = t
            .optimize()
            .with_snapshot(s.clone())
            .with_target_size(target)
            .execute()
            .await;
        if let Some(r) = lost_to_delete(o, what) {
            if every_bin {
                assert!(r.unchanged, "{what}: every bin lost an input: {r:?}");
                assert_eq!(r.bins, 0);
                assert_eq!(latest_commit_on_disk(&root), d.version);
            } else {
                assert!(!r.unchanged, "{what}: untouched bins still commit: {r:?}");
                assert!(r.bins >= 2, "{what}: {r:?}");
                assert_eq!(r.bins_abandoned, 1, "{what}");
                let actions = commit_actions(&root, r.version);
                assert!(actions.iter().all(|a| a
                    .get("add")
                    .or(a.get("remove"))
                    .is_none_or(|x| x["dataChange"] == Value::Bool(false))));
                // The file the DELETE wrote is still there.
                let now = paths(&t.snapshot().await.unwrap());
                for p in paths(&d.snapshot).difference(&paths(&s)) {
                    assert!(now.contains(p), "{what}: the DELETE's file {p} was dropped");
                }
            }
        }
        assert_content(&t, &model, what).await;
        assert_no_orphans(&t, &root).await;
    }
}

/// The predicates the concurrency tests use, on model rows.
fn bind_model_predicate(p: &str) -> Box<dyn Fn(&Row) -> bool> {
    match p {
        "id >= 105 AND id < 110" => Box::new(|r| (105..110).contains(&r.id)),
        "id >= 100 AND id < 150" => Box::new(|r| (100..150).contains(&r.id)),
        "id % 50 = 7" => Box::new(|r| r.id % 50 == 7),
        "id >= 600 AND id < 640" => Box::new(|r| (600..640).contains(&r.id)),
        "p = 'a' AND id < 200" => Box::new(|r| r.p.as_deref() == Some("a") && r.id < 200),
        other => panic!("no model for {other}"),
    }
}

/// A DELETE or UPDATE from a snapshot older than a committed OPTIMIZE must not undo it
/// silently: it conflicts (its input files were removed) or applies correctly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_delete_and_update_after_an_optimize() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let t = Table::at(root.to_str().unwrap()).unwrap();
    let (mut model, target) = concurrency_table(&t, false).await;
    let s = t.snapshot().await.unwrap();
    let o = t
        .optimize()
        .with_snapshot(s.clone())
        .with_target_size(target)
        .execute()
        .await
        .unwrap();
    check_optimize_commit(&t, &root, &s, &o, None).await;
    let d = t
        .delete()
        .with_snapshot(s.clone())
        .with_predicate("id >= 105 AND id < 110")
        .execute()
        .await;
    // The optimize changed no rows: the stale DELETE runs again on the new files.
    let d = d.expect("a DELETE that lost the race to a compaction runs again");
    assert_eq!(d.rows_matched, 5);
    model.retain(|r| !(105..110).contains(&r.id));
    assert_content(&t, &model, "stale delete").await;
    let u = t
        .update()
        .with_snapshot(s.clone())
        .with_assignment("s = 'stale'")
        .with_predicate("id >= 300 AND id < 310")
        .execute()
        .await;
    u.expect("an UPDATE that lost the race to a compaction runs again");
    for r in model.iter_mut().filter(|r| (300..310).contains(&r.id)) {
        r.s = Some("stale".into());
    }
    assert_content(&t, &model, "stale update").await;
    assert_no_orphans(&t, &root).await;
}

/// Two compactors on the same snapshot: the second must not commit the same rows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_optimizes_do_not_duplicate_rows() {
    for zorder in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        let t = Table::at(root.to_str().unwrap()).unwrap();
        let (model, target) = concurrency_table(&t, false).await;
        let s = t.snapshot().await.unwrap();
        let build = || {
            let b = t
                .optimize()
                .with_snapshot(s.clone())
                .with_target_size(target);
            if zorder {
                b.with_zorder_by(&["x", "f"])
            } else {
                b
            }
        };
        let first = build().execute().await.unwrap();
        assert!(!first.unchanged);
        match build().execute().await {
            Ok(r) => {
                assert!(r.unchanged, "second optimize committed again: {r:?}");
                assert_eq!(r.bins_abandoned, first.bins);
            }
            Err(Error::Conflict(_)) => {}
            Err(e) => panic!("{e}"),
        }
        assert_eq!(latest_commit_on_disk(&root), first.version);
        assert_content(&t, &model, "two optimizes").await;
        assert_no_orphans(&t, &root).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_and_zorder_after_a_concurrent_append_both_commit() {
    for zorder in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        let t = Table::at(root.to_str().unwrap()).unwrap();
        let (mut model, target) = concurrency_table(&t, true).await;
        let s = t.snapshot().await.unwrap();
        let mut rng = Rng(7);
        let mut next_id = 10_000;
        let extra = gen_rows(&mut rng, &mut next_id, &PARTS, 20);
        let w = t
            .write(vec![to_batch(&extra)])
            .with_snapshot(s.clone())
            .execute()
            .await
            .unwrap();
        model.extend(extra);
        let b = t
            .optimize()
            .with_snapshot(s.clone())
            .with_target_size(target);
        let b = if zorder { b.with_zorder_by(&["x"]) } else { b };
        let r = b.execute().await.unwrap();
        assert!(!r.unchanged && r.bins_abandoned == 0, "{r:?}");
        assert_eq!(r.version, w.version + 1);
        // The appended files are untouched (the optimize planned on S).
        let now = paths(&t.snapshot().await.unwrap());
        for p in paths(&w.snapshot).difference(&paths(&s)) {
            assert!(now.contains(p), "appended file {p} lost");
        }
        assert_content(&t, &model, "append + optimize").await;
        // And the other way round: optimize first, the stale append after.
        let s2 = t.snapshot().await.unwrap();
        let r2 = t
            .optimize()
            .with_snapshot(s2.clone())
            .with_target_size(1 << 40)
            .execute()
            .await
            .unwrap();
        assert!(!r2.unchanged);
        let extra = gen_rows(&mut rng, &mut next_id, &PARTS, 3);
        t.write(vec![to_batch(&extra)])
            .with_snapshot(s2)
            .execute()
            .await
            .unwrap();
        model.extend(extra);
        assert_content(&t, &model, "optimize + append").await;
        assert_no_orphans(&t, &root).await;
    }
}

/// Z-order of a partitioned table from S after a DELETE in one partition: that partition's
/// bin is abandoned, the others commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zorder_after_a_concurrent_delete_abandons_only_the_touched_partition() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let t = Table::at(root.to_str().unwrap()).unwrap();
    let (mut model, target) = concurrency_table(&t, true).await;
    let s = t.snapshot().await.unwrap();
    let predicate = "p = 'a' AND id < 200";
    let d = t
        .delete()
        .with_snapshot(s.clone())
        .with_predicate(predicate)
        .execute()
        .await
        .unwrap();
    assert!(d.rows_matched > 0);
    let pred = bind_model_predicate(predicate);
    model.retain(|r| !pred(r));
    let o = t
        .optimize()
        .with_snapshot(s.clone())
        .with_zorder_by(&["x", "id"])
        .with_target_size(target)
        .execute()
        .await;
    if let Some(r) = lost_to_delete(o, "z-order") {
        assert_eq!((r.bins, r.bins_abandoned), (2, 1), "{r:?}");
        let snap = t.snapshot().await.unwrap();
        for a in snap.files() {
            let clustered = zorder_tag(&a).is_some();
            assert_eq!(
                clustered,
                partition_of(&a).as_deref() != Some("a"),
                "{}: only partitions b and c are clustered",
                a.path
            );
        }
    }
    assert_content(&t, &model, "z-order after delete").await;
    assert_no_orphans(&t, &root).await;
}

/// Truly concurrent DELETE and OPTIMIZE tasks: whatever wins, the table equals the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_delete_and_optimize_agree_with_the_model() {
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        let t = Table::at(root.to_str().unwrap()).unwrap();
        let (mut model, target) = concurrency_table(&t, round % 2 == 1).await;
        let s = t.snapshot().await.unwrap();
        let predicate = "id >= 600 AND id < 640";
        let del = {
            let t = t.clone();
            let s = s.clone();
            tokio::spawn(async move {
                t.delete()
                    .with_snapshot(s)
                    .with_predicate(predicate)
                    .execute()
                    .await
            })
        };
        let opt = {
            let t = t.clone();
            let s = s.clone();
            tokio::spawn(async move {
                let b = t.optimize().with_snapshot(s).with_target_size(target);
                let b = if round >= 2 {
                    b.with_zorder_by(&["x"])
                } else {
                    b
                };
                b.execute().await
            })
        };
        let (d, o) = (del.await.unwrap(), opt.await.unwrap());
        match &d {
            Ok(_) => {
                let pred = bind_model_predicate(predicate);
                model.retain(|r| !pred(r));
            }
            Err(Error::Conflict(_)) => {}
            Err(e) => panic!("round {round}: delete: {e}"),
        }
        match &o {
            Ok(_) | Err(Error::Conflict(_)) => {}
            Err(e) => panic!("round {round}: optimize: {e}"),
        }
        eprintln!(
            "round {round}: delete {}, optimize {}",
            if d.is_ok() { "ok" } else { "conflict" },
            match &o {
                Ok(r) => format!("ok (bins {}, abandoned {})", r.bins, r.bins_abandoned),
                Err(_) => "conflict".into(),
            }
        );
        assert!(d.is_ok() || o.is_ok(), "round {round}: somebody wins");
        assert_content(&t, &model, &format!("round {round}")).await;
        assert_no_orphans(&t, &root).await;
    }
}

/// A bin that cannot be read (its data file vanished) fails the OPTIMIZE cleanly: nothing
/// committed, and the files already written for the other bins are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_bin_leaves_no_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let t = Table::at(root.to_str().unwrap()).unwrap();
    let (model, target) = concurrency_table(&t, false).await;
    let snap = t.snapshot().await.unwrap();
    // The newest file is in the last bin (bins are packed oldest first).
    let newest = snap
        .files()
        .into_iter()
        .max_by_key(|a| (a.modification_time, a.path.clone()))
        .unwrap();
    let gone = root.join(decode_add_path(&newest.path));
    let bytes = std::fs::read(&gone).unwrap();
    std::fs::remove_file(&gone).unwrap();
    let e = t
        .optimize()
        .with_target_size(target)
        .execute()
        .await
        .expect_err("a missing input fails the OPTIMIZE");
    eprintln!("missing input: {e}");
    assert_eq!(t.snapshot().await.unwrap().version(), snap.version());
    std::fs::write(&gone, bytes).unwrap();
    assert_content(&t, &model, "after a failed OPTIMIZE").await;
    assert_no_orphans(&t, &root).await;
}

// ---------------------------------------------------------------------------------------
// 4. delta-rs reads every version
// ---------------------------------------------------------------------------------------

/// Per version: the number of files delta-rs sees, and the operation in its history.
const DELTA_RS_FILES: &str = r#"
import sys, json
from deltalake import DeltaTable
path = sys.argv[1]
latest = DeltaTable(path).version()
out = {}
for v in range(latest + 1):
    out[v] = len(DeltaTable(path, version=v).file_uris())
ops = {h.get("version"): h.get("operation") for h in DeltaTable(path).history()}
print(json.dumps({"files": out, "ops": ops}))
"#;

#[test]
fn delta_rs_reads_every_version_of_optimized_and_zordered_tables() {
    let Some(py) = python("delta-rs reading OPTIMIZE and Z-order results") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let dumps = dir.path().join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Table::at(root.to_str().unwrap()).unwrap();
    let latest = rt.block_on(async {
        let mut rng = Rng(0x0571_0008);
        let mut next_id = 0;
        for i in 0..12 {
            let rows = gen_rows(&mut rng, &mut next_id, &PARTS, 10);
            let w = t.write(vec![to_batch(&rows)]);
            let w = if i == 0 {
                w.with_partition_by(&["p"])
            } else {
                w
            };
            w.execute().await.unwrap();
        }
        t.delete().with_predicate("x < 50").execute().await.unwrap();
        let max = t
            .snapshot()
            .await
            .unwrap()
            .files()
            .iter()
            .map(|a| a.size)
            .max()
            .unwrap() as u64;
        let r = t
            .optimize()
            .with_target_size(max * 4)
            .with_partition_filter("p = 'a'")
            .execute()
            .await
            .unwrap();
        assert!(!r.unchanged);
        let r = t
            .optimize()
            .with_target_size(max * 4)
            .execute()
            .await
            .unwrap();
        assert!(!r.unchanged);
        let r = t
            .optimize()
            .with_zorder_by(&["x", "s"])
            .with_target_size(max * 2)
            .execute()
            .await
            .unwrap();
        assert!(!r.unchanged);
        let rows = gen_rows(&mut rng, &mut next_id, &PARTS, 10);
        t.write(vec![to_batch(&rows)]).execute().await.unwrap();
        let r = t
            .optimize()
            .with_zorder_by(&["x", "s"])
            .with_target_size(max * 2)
            .execute()
            .await
            .unwrap();
        assert!(!r.unchanged && r.files_removed == 4);
        t.update()
            .with_assignment("f = f + 1")
            .with_predicate("id % 3 = 0")
            .execute()
            .await
            .unwrap();
        let r = t
            .optimize()
            .with_zorder_by(&["f"])
            .with_full(true)
            .with_target_size(max * 3)
            .execute()
            .await
            .unwrap();
        assert!(!r.unchanged);
        t.snapshot().await.unwrap().version()
    });
    let printed = run_python(
        &py,
        DUMP_ALL_VERSIONS,
        &[root.to_str().unwrap(), dumps.to_str().unwrap()],
    );
    assert_eq!(printed.trim(), latest.to_string());
    let seen: Value =
        serde_json::from_str(run_python(&py, DELTA_RS_FILES, &[root.to_str().unwrap()]).trim())
            .unwrap();
    let mut optimizes = 0;
    for v in 0..=latest {
        let expected = read_parquet(&dumps.join(format!("v{v}.parquet")));
        let (ours, files) = rt.block_on(async {
            let snap = t.snapshot_at(v).await.unwrap();
            let n = snap.num_files();
            (rows_of(&t, &snap).await, n)
        });
        let mut cols = column_names(&expected);
        cols.sort();
        assert_eq!(
            canonical_rows(&expected, &cols),
            ours,
            "version {v}: delta-rs reads different rows"
        );
        assert_eq!(
            seen["files"][v.to_string()].as_u64(),
            Some(files as u64),
            "version {v}: file count"
        );
        if seen["ops"][v.to_string()] == "OPTIMIZE" {
            optimizes += 1;
        }
    }
    assert_eq!(
        optimizes, 5,
        "delta-rs's history shows the OPTIMIZE commits"
    );
}

/// Per commit version and change type, the rows delta-rs's change data feed returns.
const DELTA_RS_CDF: &str = r#"
import sys, json, collections
import pyarrow as pa
from deltalake import DeltaTable
t = pa.table(DeltaTable(sys.argv[1]).load_cdf(starting_version=0))
counts = collections.Counter(
    f"{v}:{c}" for v, c in zip(t.column("_commit_version").to_pylist(), t.column("_change_type").to_pylist())
)
print(json.dumps(counts))
"#;

/// Change readers skip OPTIMIZE: delta-rs's change data feed of a table with
/// `delta.enableChangeDataFeed` shows the appends and nothing at the OPTIMIZE versions.
#[test]
fn delta_rs_change_feed_skips_optimize_commits() {
    let Some(py) = python("delta-rs change data feed over OPTIMIZE") else {
        return;
    };
    // delta-rs's change feed fails on partition values that need escaping (it looks
    // for `p=c d%252F…`), so plain values here.
    const CDF_PARTS: [Option<&str>; 3] = [Some("a"), Some("b"), None];
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Table::at(root.to_str().unwrap()).unwrap();
    let (appends, optimizes) = rt.block_on(async {
        let mut rng = Rng(0x0571_000d);
        let mut next_id = 0;
        let mut appends = BTreeMap::new();
        for i in 0..6 {
            let rows = gen_rows(&mut rng, &mut next_id, &CDF_PARTS, 10);
            let w = t.write(vec![to_batch(&rows)]);
            let w = if i == 0 {
                w.with_partition_by(&["p"]).with_properties(HashMap::from([(
                    "delta.enableChangeDataFeed".to_string(),
                    "true".to_string(),
                )]))
            } else {
                w
            };
            appends.insert(w.execute().await.unwrap().version, rows.len());
        }
        let a = t
            .optimize()
            .with_target_size(1 << 30)
            .execute()
            .await
            .unwrap();
        let rows = gen_rows(&mut rng, &mut next_id, &CDF_PARTS, 10);
        appends.insert(
            t.write(vec![to_batch(&rows)])
                .execute()
                .await
                .unwrap()
                .version,
            rows.len(),
        );
        let b = t
            .optimize()
            .with_zorder_by(&["x"])
            .with_full(true)
            .execute()
            .await
            .unwrap();
        (appends, vec![a.version, b.version])
    });
    let out = run_python(&py, DELTA_RS_CDF, &[root.to_str().unwrap()]);
    let counts: BTreeMap<String, usize> = serde_json::from_str(out.trim()).unwrap();
    let expected: BTreeMap<String, usize> = appends
        .iter()
        .map(|(v, n)| (format!("{v}:insert"), *n))
        .collect();
    assert_eq!(
        counts, expected,
        "change feed (OPTIMIZE at versions {optimizes:?} must not appear)"
    );
}

/// delta-rs's own z-order on the same data, read back by Shoal: same rows; skip
/// fractions printed side by side (the benchmark is the real comparison).
#[test]
fn delta_rs_zorder_side_by_side() {
    let Some(py) = python("delta-rs z-order comparison") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rng = Rng(0x0571_0004);
    let mut next_id = 0;
    let rows = gen_zrows(&mut rng, &mut next_id, 40_000, BShape::Skewed);
    let l = lookups(&rows, &mut rng, 50);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("d");
    let t = Table::at(root.to_str().unwrap()).unwrap();
    let target = rt.block_on(async {
        write_in_files(&t, &rows, 8).await;
        let total: i64 = t
            .snapshot()
            .await
            .unwrap()
            .files()
            .iter()
            .map(|a| a.size)
            .sum();
        (total / 32) as u64
    });
    run_python(
        &py,
        r#"
import sys
from deltalake import DeltaTable
DeltaTable(sys.argv[1]).optimize.z_order(["a", "b"], target_size=int(sys.argv[2]))
"#,
        &[root.to_str().unwrap(), &target.to_string()],
    );
    let theirs = rt.block_on(async {
        let snap = t.snapshot().await.unwrap();
        assert_eq!(rows_of(&t, &snap).await, zmodel(&rows));
        skips(&snap, &l)
    });
    let (ours, _) = rt.block_on(zorder_vs_sort(&rows, &l));
    report("skewed b: Shoal z-order", &ours);
    report("skewed b: delta-rs z-order", &theirs);
}

// ---------------------------------------------------------------------------------------
// 5. Bad input
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_clearly_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let t = Table::at(root.to_str().unwrap()).unwrap();
    let list_field = Field::new(
        "tags",
        DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
        true,
    );
    let mut fields: Vec<Field> = schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(list_field);
    let with_list = Arc::new(Schema::new(fields));
    let mut rng = Rng(9);
    let mut next_id = 0;
    for i in 0..4 {
        let rows = gen_rows(&mut rng, &mut next_id, &PARTS, 3);
        let base = to_batch(&rows);
        let mut cols = base.columns().to_vec();
        cols.push(Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
            rows.iter().map(|r| Some(vec![Some(r.id), None])),
        )));
        let b = RecordBatch::try_new(with_list.clone(), cols).unwrap();
        let w = t.write(vec![b]);
        let w = if i == 0 {
            w.with_partition_by(&["p"])
        } else {
            w
        };
        w.execute().await.unwrap();
    }
    let version = t.snapshot().await.unwrap().version();
    let files = data_files_on_disk(&root);
    let rows = rows_now(&t).await;

    let cases: Vec<(&str, shoal_format::ops::optimize::OptimizeBuilder, &str)> = vec![
        (
            "unknown Z-order column",
            t.optimize().with_zorder_by(&["x", "nope"]),
            "`nope`",
        ),
        (
            "Z-order by a partition column",
            t.optimize().with_zorder_by(&["p"]),
            "partition",
        ),
        (
            "Z-order by a list column",
            t.optimize().with_zorder_by(&["tags"]),
            "`tags`",
        ),
        (
            "partition filter on a data column",
            t.optimize().with_partition_filter("x > 3"),
            "`x`",
        ),
        (
            "partition filter mixing partition and data columns",
            t.optimize()
                .with_partition_filter("p = 'a' AND s = 's1'")
                .with_zorder_by(&["x"]),
            "`s`",
        ),
        (
            "partition filter on an unknown column",
            t.optimize().with_partition_filter("q = 'a'"),
            "`q`",
        ),
        (
            "partition filter that does not parse",
            t.optimize().with_partition_filter("p = = 'a'"),
            "",
        ),
    ];
    for (what, builder, mention) in cases {
        let e = builder
            .with_target_size(1 << 30)
            .execute()
            .await
            .expect_err(what);
        let msg = e.to_string();
        eprintln!("{what}: {msg}");
        assert!(
            matches!(
                e,
                Error::InvalidArgument(_)
                    | Error::UnknownColumn { .. }
                    | Error::InvalidExpression(_)
            ),
            "{what}: {e:?}"
        );
        assert!(
            msg.contains(mention),
            "{what}: `{msg}` should mention `{mention}`"
        );
        assert_eq!(t.snapshot().await.unwrap().version(), version, "{what}");
        assert_eq!(data_files_on_disk(&root), files, "{what}: files written");
    }
    // Not a table at all.
    let missing = Table::at(dir.path().join("none").to_str().unwrap()).unwrap();
    assert!(matches!(
        missing.optimize().execute().await,
        Err(Error::TableNotFound(_))
    ));
    // A filter matching no partition: nothing to do.
    let r = t
        .optimize()
        .with_partition_filter("p = 'zzz'")
        .execute()
        .await
        .unwrap();
    assert!(r.unchanged && r.files_considered == 0);
    assert_eq!(rows_now(&t).await, rows);
    // The list column does not stop bin-packing or Z-ordering by other columns.
    let r = t.optimize().with_zorder_by(&["x"]).execute().await.unwrap();
    assert!(!r.unchanged);
    assert_eq!(rows_now(&t).await, rows);
}

/// The compactor's knobs: a partition is rewritten only when its small files reach the
/// trigger, and one call rewrites at most the byte budget (partitions with the most
/// small files first); what is left waits for the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_and_byte_budget_bound_what_one_call_rewrites() {
    use shoal_format::ops::optimize::CompactionTrigger;
    let dir = tempfile::tempdir().unwrap();
    let t = Table::at(dir.path().to_str().unwrap()).unwrap();
    let mut rng = Rng::new(5);
    let mut next_id = 0;
    let mut model = Vec::new();
    // a: 8 small files, b: 5, c: 2.
    for (p, n) in [("a", 8), ("b", 5), ("c", 2)] {
        for _ in 0..n {
            let rows = gen_rows(&mut rng, &mut next_id, &[Some(p)], 20);
            t.write(vec![to_batch(&rows)])
                .with_partition_by(&["p"])
                .execute()
                .await
                .unwrap();
            model.extend(rows);
        }
    }
    let count = |s: &Snapshot, p: &str| in_partition(s, Some(p)).len();
    // Only partitions with at least 4 small files.
    let trigger = CompactionTrigger {
        min_small_files: 4,
        min_small_share: None,
    };
    let s = t.snapshot().await.unwrap();
    let one_file = s.files()[0].size as u64;
    let r = t
        .optimize()
        .with_trigger(trigger)
        // Room for about 9 files: all of a (8), not b as well.
        .with_max_input_bytes(one_file * 9)
        .execute()
        .await
        .unwrap();
    let s = r.snapshot.clone();
    assert_eq!((count(&s, "a"), count(&s, "b"), count(&s, "c")), (1, 5, 2));
    assert_eq!(r.files_removed, 8);
    assert_eq!(rows_now(&t).await, model_rows(&model));
    // The next call takes b; c stays below the trigger.
    let r = t.optimize().with_trigger(trigger).execute().await.unwrap();
    let s = r.snapshot.clone();
    assert_eq!((count(&s, "a"), count(&s, "b"), count(&s, "c")), (1, 1, 2));
    // A share trigger: c's two small files hold all its bytes.
    let r = t
        .optimize()
        .with_trigger(CompactionTrigger {
            min_small_files: 4,
            min_small_share: Some(0.5),
        })
        .execute()
        .await
        .unwrap();
    assert_eq!(count(&r.snapshot, "c"), 1);
    assert_eq!(rows_now(&t).await, model_rows(&model));
}
