//! Maintenance and rollback: VACUUM keeps every version inside its window readable and
//! removes what is outside it, log cleanup keeps every version from its checkpoint on,
//! RESTORE round-trips, and delta-rs reads the results.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use shoal_format::ops::restore::RestoreBuilder;
use shoal_format::ops::vacuum::{cleanup_expired_logs, LogCleanupBuilder, VacuumBuilder};
use shoal_format::protocol::partition::decode_add_path;
use shoal_format::{Error, SaveMode, SchemaMode, Table};
use shoal_tests::{canonical_rows, column_names, python, read_parquet, run_python};

const DAY_MS: i64 = 86_400_000;

fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let countries: Vec<Option<&str>> = ids
        .clone()
        .map(|i| match i % 4 {
            0 => Some("US"),
            1 => Some("FR/x y"),
            2 => None,
            _ => Some("DÉ"),
        })
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("country", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(ids.collect::<Vec<_>>())),
            Arc::new(StringArray::from(countries)),
        ],
    )
    .unwrap()
}

fn batch_with_note(ids: std::ops::Range<i64>) -> RecordBatch {
    let base = batch(ids.clone());
    let mut fields: Vec<Field> = base
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("note", DataType::Utf8, true));
    let mut cols = base.columns().to_vec();
    cols.push(Arc::new(StringArray::from(
        ids.map(|i| format!("note {i}")).collect::<Vec<_>>(),
    )));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

/// The rows of a version, canonical, over every column of that version.
async fn rows_at(t: &Table, version: i64) -> shoal_format::Result<Vec<String>> {
    let snap = t.snapshot_at(version).await?;
    let cols: Vec<String> = snap
        .arrow_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let batches = t.scan(snap).collect().await?;
    Ok(canonical_rows(&batches, &cols))
}

async fn rows_now(t: &Table) -> Vec<String> {
    let v = t.snapshot().await.unwrap().version();
    rows_at(t, v).await.unwrap()
}

/// Decoded (on-disk, table-relative) paths of a version's files.
async fn files_at(t: &Table, version: i64) -> BTreeSet<String> {
    t.snapshot_at(version)
        .await
        .unwrap()
        .files()
        .iter()
        .map(|a| decode_add_path(&a.path))
        .collect()
}

/// Every file under the table directory, relative, `/`-separated.
fn files_on_disk(root: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
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
    walk(root, root, &mut out);
    out
}

fn set_mtime(path: &Path, ms_since_epoch: i64) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(ms_since_epoch as u64);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
        .set_modified(t)
        .unwrap();
}

fn put_file(root: &Path, rel: &str, mtime_ms: i64) -> PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b"not referenced by the log").unwrap();
    set_mtime(&p, mtime_ms);
    p
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Deletion timestamps of the tombstones a commit at `version` made.
async fn removal_times(t: &Table, version: i64) -> Vec<i64> {
    let before = files_at(t, version - 1).await;
    let after = files_at(t, version).await;
    let snap = t.snapshot().await.unwrap();
    let removed: BTreeSet<&String> = before.difference(&after).collect();
    let times: Vec<i64> = snap
        .tombstones()
        .iter()
        .filter(|r| removed.contains(&decode_add_path(&r.path)))
        .map(|r| r.deletion_timestamp.unwrap())
        .collect();
    assert_eq!(times.len(), removed.len(), "a tombstone per removed file");
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_keeps_the_window_readable_and_removes_what_is_outside() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let t = Table::at(root.to_str().unwrap()).unwrap();
    t.write(vec![batch(0..20)])
        .with_partition_by(&["country"])
        .execute()
        .await
        .unwrap();
    t.write(vec![batch(20..40)]).execute().await.unwrap();
    t.write(vec![batch(100..120)])
        .with_mode(SaveMode::Overwrite)
        .execute()
        .await
        .unwrap(); // v2 removes every file of v0 and v1
    tokio::time::sleep(Duration::from_millis(60)).await;
    t.delete()
        .with_predicate("id < 105")
        .execute()
        .await
        .unwrap(); // v3
    t.write(vec![batch(200..210)]).execute().await.unwrap(); // v4

    let before: Vec<Vec<String>> = {
        let mut v = Vec::new();
        for version in 0..=4 {
            v.push(rows_at(&t, version).await.unwrap());
        }
        v
    };
    let outside: BTreeSet<String> = files_at(&t, 0)
        .await
        .union(&files_at(&t, 1).await)
        .cloned()
        .collect();
    assert!(
        outside.iter().any(|p| p.contains("FR%2Fx y")),
        "escaped partition directories are exercised: {outside:?}"
    );
    let t2 = removal_times(&t, 2).await.into_iter().max().unwrap();
    let t3 = removal_times(&t, 3).await.into_iter().min().unwrap();
    assert!(t3 > t2 + 2, "v3 removed files after v2: {t2} {t3}");
    // The window starts between v2's and v3's removals: version 2 is the state at the
    // window's start, so versions 2..=4 must stay readable; 0 and 1 may go.
    let cutoff = (t2 + t3) / 2;
    let history_before = t.history(None).await.unwrap().len();

    let r = VacuumBuilder::new(t.store().clone())
        .with_now_ms(cutoff + 7 * DAY_MS)
        .execute()
        .await
        .unwrap();
    assert!(!r.dry_run);
    assert_eq!(r.version, 4);
    assert_eq!(r.retention_ms, 7 * DAY_MS);
    let deleted: BTreeSet<String> = r.paths.iter().cloned().collect();
    assert_eq!(
        deleted, outside,
        "exactly the files only versions 0 and 1 used"
    );
    assert_eq!(r.files_deleted, outside.len());
    assert!(r.bytes_deleted > 0);
    assert!(
        r.directories >= 4,
        "root and partition dirs: {}",
        r.directories
    );
    let on_disk = files_on_disk(&root);
    assert!(on_disk.is_disjoint(&outside));
    for version in 2..=4 {
        assert_eq!(
            rows_at(&t, version).await.unwrap(),
            before[version as usize],
            "version {version} is inside the window"
        );
        for f in files_at(&t, version).await {
            assert!(on_disk.contains(&f), "{f} of version {version} was kept");
        }
    }
    for version in 0..=1 {
        let err = rows_at(&t, version).await.unwrap_err();
        assert!(matches!(err, Error::MissingDataFile { .. }), "{err}");
    }

    // Recorded like Delta: VACUUM START then VACUUM END, each a commitInfo-only commit.
    let history = t.history(None).await.unwrap();
    assert_eq!(history.len(), history_before + 2);
    let end = &history[0].commit_info;
    let start = &history[1].commit_info;
    assert_eq!(start.operation(), Some("VACUUM START"));
    assert_eq!(end.operation(), Some("VACUUM END"));
    assert_eq!(
        start.0["operationMetrics"]["numFilesToDelete"],
        outside.len().to_string()
    );
    assert_eq!(
        end.0["operationMetrics"]["numDeletedFiles"],
        outside.len().to_string()
    );
    assert_eq!(end.0["operationParameters"]["status"], "COMPLETED");
    assert_eq!(
        start.0["operationParameters"]["retentionCheckEnabled"],
        "true"
    );
    let log = root.join("_delta_log");
    for v in [history[0].version, history[1].version] {
        let text = std::fs::read_to_string(log.join(format!("{v:020}.json"))).unwrap();
        assert_eq!(text.lines().count(), 1, "only commitInfo: {text}");
    }
    assert_eq!(rows_now(&t).await, before[4]);

    // Nothing left to delete: no commits.
    let again = VacuumBuilder::new(t.store().clone())
        .with_now_ms(cutoff + 7 * DAY_MS)
        .execute()
        .await
        .unwrap();
    assert_eq!(again.files_deleted, 0);
    assert_eq!(again.start_version, None);
    assert_eq!(t.history(None).await.unwrap().len(), history.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_removes_old_orphans_and_spares_young_hidden_and_log_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let t = Table::at(root.to_str().unwrap()).unwrap();
    t.write(vec![batch(0..10)])
        .with_properties(HashMap::from([(
            "delta.deletedFileRetentionDuration".to_string(),
            "interval 2 days".to_string(),
        )]))
        .execute()
        .await
        .unwrap();
    let now = now_ms();
    let old = now - 10 * DAY_MS;
    let young = now - DAY_MS;
    // Staging files of writes killed midway (`<name>#<n>`, object_store's local
    // store renames them into place) are orphans too, though listings skip them.
    let doomed = [
        "orphan-old.parquet",
        "sub/dir/orphan-old.parquet",
        "_change_data/cdc-old.parquet",
        "part-00000-killed.parquet#3",
        "p=x/part-00001-killed.parquet#12",
    ];
    for p in doomed {
        put_file(&root, p, old);
    }
    let spared = [
        "_spark_metadata/0",
        ".hidden/x.parquet",
        "_hidden.parquet",
        ".part-0.crc",
        "sub/_temporary/x.parquet",
        "_delta_log/zz-not-a-commit.json",
        "_delta_log/00000000000000000000.crc",
        "_delta_log/00000000000000000009.json#4",
        "_hidden/x.parquet#1",
    ];
    for p in spared {
        put_file(&root, p, old);
    }
    put_file(&root, "orphan-young.parquet", young);
    // Log files older than any window are never VACUUM's business.
    set_mtime(&root.join("_delta_log/00000000000000000000.json"), old);
    let data_files = files_at(&t, 0).await;
    for f in &data_files {
        set_mtime(&root.join(f), old);
    }
    let on_disk_before = files_on_disk(&root);
    let versions_before = t.snapshot().await.unwrap().version();

    // A retention shorter than the table's is refused, naming the property and value.
    let err = VacuumBuilder::new(t.store().clone())
        .with_retention_hours(Some(1.0))
        .execute()
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NotAllowed(_)), "{msg}");
    assert!(
        msg.contains("delta.deletedFileRetentionDuration") && msg.contains("interval 2 days"),
        "{msg}"
    );
    assert!(VacuumBuilder::new(t.store().clone())
        .with_retention_hours(Some(-1.0))
        .with_force(true)
        .execute()
        .await
        .is_err());

    // Dry run: lists, deletes nothing, commits nothing.
    let dry = VacuumBuilder::new(t.store().clone())
        .with_dry_run(true)
        .execute()
        .await
        .unwrap();
    assert!(dry.dry_run);
    let mut expected: Vec<String> = doomed.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(dry.paths, expected);
    assert_eq!(dry.files_deleted, 5);
    assert_eq!(dry.bytes_deleted, 5 * 25);
    assert_eq!(dry.files_kept, data_files.len() + 1, "data + young orphan");
    assert_eq!(files_on_disk(&root), on_disk_before);
    assert_eq!(t.snapshot().await.unwrap().version(), versions_before);

    // The real run removes exactly the old orphans.
    let r = VacuumBuilder::new(t.store().clone())
        .execute()
        .await
        .unwrap();
    assert_eq!(r.paths, expected);
    let on_disk = files_on_disk(&root);
    for p in doomed {
        assert!(!on_disk.contains(p), "{p}");
    }
    for p in spared.iter().chain(["orphan-young.parquet"].iter()) {
        assert!(on_disk.contains(*p), "{p} must stay");
    }
    for f in &data_files {
        assert!(on_disk.contains(f), "referenced {f} must stay");
    }
    assert_eq!(rows_now(&t).await, rows_at(&t, 0).await.unwrap());

    // Forced to zero hours: the young orphan goes too, referenced files stay.
    settle().await;
    let r = VacuumBuilder::new(t.store().clone())
        .with_retention_hours(Some(0.0))
        .with_force(true)
        .execute()
        .await
        .unwrap();
    assert_eq!(r.paths, vec!["orphan-young.parquet".to_string()]);
    let start = &t.history(Some(2)).await.unwrap()[1].commit_info;
    assert_eq!(
        start.0["operationParameters"]["retentionCheckEnabled"],
        "false"
    );
    assert_eq!(
        start.0["operationParameters"]["specifiedRetentionMillis"],
        "0"
    );
    let on_disk = files_on_disk(&root);
    for p in spared {
        assert!(on_disk.contains(p), "{p} must stay");
    }
    assert_eq!(rows_now(&t).await, rows_at(&t, 0).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_refuses_tables_with_unknown_writer_features() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    std::fs::create_dir_all(root.join("_delta_log")).unwrap();
    let schema =
        r#"{"type":"struct","fields":[{"name":"id","type":"long","nullable":true,"metadata":{}}]}"#;
    let lines = [
        r#"{"commitInfo":{"operation":"CREATE TABLE"}}"#.to_string(),
        r#"{"protocol":{"minReaderVersion":1,"minWriterVersion":7,"writerFeatures":["rowTracking"]}}"#.to_string(),
        serde_json::json!({"metaData": {"id": "x", "format": {"provider": "parquet", "options": {}},
            "schemaString": schema, "partitionColumns": [], "configuration": {}}})
        .to_string(),
    ];
    std::fs::write(
        root.join("_delta_log/00000000000000000000.json"),
        lines.join("\n"),
    )
    .unwrap();
    let t = Table::at(root.to_str().unwrap()).unwrap();
    let err = VacuumBuilder::new(t.store().clone())
        .execute()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedFeature { .. }) && err.to_string().contains("rowTracking"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_round_trips_and_keeps_history() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::at(dir.path().join("t").to_str().unwrap()).unwrap();
    t.write(vec![batch(0..10)])
        .with_partition_by(&["country"])
        .execute()
        .await
        .unwrap(); // v0
    t.write(vec![batch(10..20)]).execute().await.unwrap(); // v1
    t.write(vec![batch(20..30)]).execute().await.unwrap(); // v2
    tokio::time::sleep(Duration::from_millis(20)).await;
    t.write(vec![batch_with_note(30..40)])
        .with_schema_mode(SchemaMode::Merge)
        .execute()
        .await
        .unwrap(); // v3: a new column
    tokio::time::sleep(Duration::from_millis(20)).await;
    t.delete()
        .with_predicate("id < 15 OR id > 35")
        .execute()
        .await
        .unwrap(); // v4: the bad job
    let before: Vec<Vec<String>> = {
        let mut v = Vec::new();
        for version in 0..=4 {
            v.push(rows_at(&t, version).await.unwrap());
        }
        v
    };

    let r = RestoreBuilder::new(t.store().clone())
        .with_version(1)
        .execute()
        .await
        .unwrap();
    assert_eq!(r.version, 5);
    assert_eq!(r.restored_version, 1);
    assert!(!r.unchanged);
    assert!(r.metadata_restored, "the column added at v3 goes away");
    assert!(r.files_added > 0 && r.files_removed > 0);
    assert_eq!(r.num_files_after, files_at(&t, 1).await.len());
    assert_eq!(r.num_rows_after, Some(20));
    assert_eq!(rows_now(&t).await, before[1]);
    assert_eq!(files_at(&t, 5).await, files_at(&t, 1).await);
    let snap = t.snapshot().await.unwrap();
    assert_eq!(
        snap.arrow_schema()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>(),
        vec!["id", "country"]
    );
    // The bad versions stay in the history and can be time-travelled to.
    for version in 0..=4 {
        assert_eq!(
            rows_at(&t, version).await.unwrap(),
            before[version as usize]
        );
    }
    let history = t.history(None).await.unwrap();
    assert_eq!(history.len(), 6);
    let info = &history[0].commit_info;
    assert_eq!(info.operation(), Some("RESTORE"));
    assert_eq!(info.0["operationParameters"]["version"], "1");
    let metrics = &info.0["operationMetrics"];
    assert_eq!(metrics["numRestoredFiles"], r.files_added.to_string());
    assert_eq!(metrics["numRemovedFiles"], r.files_removed.to_string());
    assert_eq!(
        metrics["numOfFilesAfterRestore"],
        r.num_files_after.to_string()
    );
    for key in [
        "restoredFilesSize",
        "removedFilesSize",
        "tableSizeAfterRestore",
    ] {
        assert!(metrics[key].as_str().is_some(), "{key}: {metrics}");
    }

    // Restoring the current version commits nothing.
    let same = RestoreBuilder::new(t.store().clone())
        .with_version(5)
        .execute()
        .await
        .unwrap();
    assert!(same.unchanged);
    assert_eq!(same.version, 5);
    assert_eq!(t.snapshot().await.unwrap().version(), 5);

    // Forward again, by timestamp: to version 3, with its column.
    let ts3 = t.snapshot_at(3).await.unwrap().timestamp();
    let r = RestoreBuilder::new(t.store().clone())
        .with_timestamp_ms(ts3)
        .execute()
        .await
        .unwrap();
    assert_eq!((r.version, r.restored_version), (6, 3));
    assert!(r.metadata_restored);
    assert_eq!(rows_now(&t).await, before[3]);
    let info = &t.history(Some(1)).await.unwrap()[0].commit_info;
    assert!(info.0["operationParameters"]["timestamp"].is_string());

    // A version that does not exist yet.
    let err = RestoreBuilder::new(t.store().clone())
        .with_version(99)
        .execute()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::VersionNotFound { .. }), "{err}");
    let err = RestoreBuilder::new(t.store().clone())
        .execute()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_after_vacuum_fails_clearly_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::at(dir.path().join("t").to_str().unwrap()).unwrap();
    t.write(vec![batch(0..10)]).execute().await.unwrap();
    t.write(vec![batch(10..20)]).execute().await.unwrap();
    t.write(vec![batch(100..110)])
        .with_mode(SaveMode::Overwrite)
        .execute()
        .await
        .unwrap();
    settle().await;
    let vacuumed = VacuumBuilder::new(t.store().clone())
        .with_retention_hours(Some(0.0))
        .with_force(true)
        .execute()
        .await
        .unwrap();
    assert_eq!(vacuumed.files_deleted, 2);
    let before = t.snapshot().await.unwrap();
    let rows = rows_now(&t).await;

    let err = RestoreBuilder::new(t.store().clone())
        .with_version(1)
        .execute()
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("version 1 can no longer be restored") && msg.contains(".parquet"),
        "{msg}"
    );
    let after = t.snapshot().await.unwrap();
    assert_eq!(after.version(), before.version(), "nothing committed");
    assert_eq!(rows_now(&t).await, rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_cleanup_keeps_every_version_from_its_checkpoint_readable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let log = root.join("_delta_log");
    let t = Table::at(root.to_str().unwrap()).unwrap();
    t.write(vec![batch(0..5)]).execute().await.unwrap();
    // Nothing to clean before the first checkpoint, however old the commits are.
    set_mtime(
        &log.join("00000000000000000000.json"),
        now_ms() - 100 * DAY_MS,
    );
    let r = cleanup_expired_logs(t.store(), None).await.unwrap();
    assert_eq!((r.checkpoint_version, r.files_deleted), (None, 0));

    for i in 1..=25 {
        t.write(vec![batch(i * 10..i * 10 + 5)])
            .execute()
            .await
            .unwrap();
    }
    let snap = t.snapshot().await.unwrap();
    assert_eq!(snap.checkpoint_version(), Some(20));
    // Commits 0..=14 (and the checkpoint at 10) are 40 days old; the rest are new.
    let old = now_ms() - 40 * DAY_MS;
    for v in 0..=14 {
        set_mtime(&log.join(format!("{v:020}.json")), old + v * 1000);
    }
    set_mtime(&log.join(format!("{:020}.checkpoint.parquet", 10)), old);
    let mut before = Vec::new();
    for v in 0..=25 {
        before.push(rows_at(&t, v).await.unwrap());
    }

    let dry = LogCleanupBuilder::new(t.store().clone())
        .with_dry_run(true)
        .execute()
        .await
        .unwrap();
    assert_eq!(dry.checkpoint_version, Some(10));
    assert_eq!(dry.files_deleted, 10);
    assert!(log.join("00000000000000000000.json").exists());

    let r = cleanup_expired_logs(t.store(), None).await.unwrap();
    assert_eq!(r.checkpoint_version, Some(10));
    assert_eq!(
        r.files,
        (0..10).map(|v| format!("{v:020}.json")).collect::<Vec<_>>()
    );
    for v in 10..=25 {
        assert_eq!(rows_at(&t, v).await.unwrap(), before[v as usize], "v{v}");
    }
    let err = rows_at(&t, 9).await.unwrap_err();
    assert!(matches!(err, Error::VersionNotFound { .. }), "{err}");
    // Time travel by timestamp still finds the retained versions.
    let ts12 = t.snapshot_at(12).await.unwrap().timestamp();
    assert_eq!(t.snapshot_at_timestamp(ts12).await.unwrap().version(), 12);
    assert!(t.history(None).await.unwrap().len() == 16);

    // A month later everything before the latest checkpoint has expired.
    let r = LogCleanupBuilder::new(t.store().clone())
        .with_now_ms(now_ms() + 31 * DAY_MS)
        .execute()
        .await
        .unwrap();
    assert_eq!(r.checkpoint_version, Some(20));
    assert!(r.files.contains(&format!("{:020}.checkpoint.parquet", 10)));
    assert!(log.join("_last_checkpoint").exists());
    assert!(log.join(format!("{:020}.checkpoint.parquet", 20)).exists());
    assert!(log.join(format!("{:020}.json", 20)).exists());
    for v in 20..=25 {
        assert_eq!(rows_at(&t, v).await.unwrap(), before[v as usize], "v{v}");
    }
    assert!(rows_at(&t, 19).await.is_err());
    // And the table keeps working.
    t.write(vec![batch(1000..1005)]).execute().await.unwrap();
    assert_eq!(t.snapshot().await.unwrap().version(), 26);

    // Tables can turn cleanup off.
    let off = dir.path().join("off");
    let t2 = Table::at(off.to_str().unwrap()).unwrap();
    t2.write(vec![batch(0..5)])
        .with_properties(HashMap::from([(
            "delta.enableExpiredLogCleanup".to_string(),
            "false".to_string(),
        )]))
        .execute()
        .await
        .unwrap();
    t2.checkpoint().await.unwrap();
    t2.write(vec![batch(5..10)]).execute().await.unwrap();
    t2.checkpoint().await.unwrap();
    let r = LogCleanupBuilder::new(t2.store().clone())
        .with_now_ms(now_ms() + 100 * DAY_MS)
        .execute()
        .await
        .unwrap();
    assert!(r.disabled);
    assert_eq!(r.files_deleted, 0);
}

/// Dumps the given versions as delta-rs reads them, prints the history's operations
/// and what delta-rs's own VACUUM would still delete.
const CHECK: &str = r#"
import sys, os, json
from deltalake import DeltaTable
import pyarrow.parquet as pq
path, out = sys.argv[1], sys.argv[2]
for v in sys.argv[3:]:
    t = DeltaTable(path, version=int(v)).to_pyarrow_table()
    pq.write_table(t, os.path.join(out, f"v{v}.parquet"))
dt = DeltaTable(path)
history = dt.history()
ops = [h["operation"] for h in history]
params = [h.get("operationParameters") for h in history]
would_vacuum = dt.vacuum(retention_hours=0, dry_run=True, enforce_retention_duration=False, full=True)
print(json.dumps({"version": dt.version(), "operations": ops, "parameters": params,
                  "would_vacuum": would_vacuum}))
"#;

#[test]
fn delta_rs_reads_restored_and_vacuumed_tables() {
    let Some(py) = python("the delta-rs checks of maintenance") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let dumps = dir.path().join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let restore_version = rt.block_on(async {
        let t = Table::at(root.to_str().unwrap()).unwrap();
        t.write(vec![batch(0..30)])
            .with_partition_by(&["country"])
            .execute()
            .await
            .unwrap();
        t.write(vec![batch(30..60)]).execute().await.unwrap();
        t.write(vec![batch_with_note(60..90)])
            .with_schema_mode(SchemaMode::Merge)
            .execute()
            .await
            .unwrap();
        t.delete()
            .with_predicate("id % 3 = 0")
            .execute()
            .await
            .unwrap();
        let r = RestoreBuilder::new(t.store().clone())
            .with_version(1)
            .execute()
            .await
            .unwrap();
        t.write(vec![batch(90..100)]).execute().await.unwrap();
        put_file(&root, "leftover.parquet", now_ms() - 30 * DAY_MS);
        settle().await;
        let v = VacuumBuilder::new(t.store().clone())
            .with_retention_hours(Some(0.0))
            .with_force(true)
            .execute()
            .await
            .unwrap();
        assert!(v.paths.contains(&"leftover.parquet".to_string()));
        r.version
    });
    let out = run_python(
        &py,
        CHECK,
        &[
            root.to_str().unwrap(),
            dumps.to_str().unwrap(),
            &restore_version.to_string(),
            &(restore_version + 1).to_string(),
        ],
    );
    let report: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    let ops: Vec<&str> = report["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(
        &ops[..4],
        ["VACUUM END", "VACUUM START", "WRITE", "RESTORE"],
        "{ops:?}"
    );
    // delta-rs lists expired tombstones without looking at storage: every file it
    // would delete must be gone already.
    for p in report["would_vacuum"].as_array().unwrap() {
        let p = p.as_str().unwrap();
        assert!(
            !root.join(p).exists(),
            "delta-rs would still vacuum {p}: {report}"
        );
    }
    let latest = read_parquet(&dumps.join(format!("v{}.parquet", restore_version + 1)));
    let mut cols = column_names(&latest);
    cols.sort();
    assert_eq!(cols, vec!["country".to_string(), "id".to_string()]);
    let t = Table::at(root.to_str().unwrap()).unwrap();
    let ours = rt.block_on(async {
        let snap = t.snapshot_at(restore_version + 1).await.unwrap();
        t.scan(snap).collect().await.unwrap()
    });
    assert_eq!(canonical_rows(&latest, &cols), canonical_rows(&ours, &cols));
    let restored = read_parquet(&dumps.join(format!("v{restore_version}.parquet")));
    let ours = rt.block_on(async {
        let snap = t.snapshot_at(restore_version).await.unwrap();
        t.scan(snap).collect().await.unwrap()
    });
    assert_eq!(
        canonical_rows(&restored, &cols),
        canonical_rows(&ours, &cols)
    );
    assert_eq!(
        canonical_rows(&restored, &cols).len(),
        60,
        "version 1 had 60 rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_and_restore_on_an_object_store() {
    let t = Table::at("memory://warehouse/t").unwrap();
    t.write(vec![batch(0..10)])
        .with_partition_by(&["country"])
        .execute()
        .await
        .unwrap();
    t.write(vec![batch(10..20)])
        .with_mode(SaveMode::Overwrite)
        .execute()
        .await
        .unwrap();
    let first = files_at(&t, 0).await;
    settle().await;
    let r = VacuumBuilder::new(t.store().clone())
        .with_retention_hours(Some(0.0))
        .with_force(true)
        .with_concurrency(2)
        .execute()
        .await
        .unwrap();
    assert_eq!(r.paths.iter().cloned().collect::<BTreeSet<_>>(), first);
    assert_eq!(rows_now(&t).await.len(), 10);
    let listed: Vec<String> = t
        .store()
        .list_all()
        .await
        .unwrap()
        .iter()
        .filter_map(|m| t.store().relative(&m.location))
        .collect();
    assert!(listed.iter().all(|p| !first.contains(p)), "{listed:?}");
    assert!(listed.iter().any(|p| p.starts_with("_delta_log/")));
    let err = RestoreBuilder::new(t.store().clone())
        .with_version(0)
        .execute()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("can no longer be restored"),
        "{err}"
    );
}

/// Waits a few milliseconds, so that a zero-hour VACUUM's cutoff lies strictly after the
/// commits just made (files at the cutoff itself are kept).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}
