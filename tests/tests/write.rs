//! Writes: concurrency, idempotency, schema enforcement and bad input.

use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use object_store::memory::InMemory;
use object_store::path::Path;
use shoal_format::write::WriterOptions;
use shoal_format::{Error, SaveMode, Table, TableStore};
use shoal_tests::i64_values;

fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]);
    let names: Vec<String> = ids.clone().map(|i| format!("n{i}")).collect();
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from(ids.collect::<Vec<_>>())),
            Arc::new(StringArray::from(names)),
        ],
    )
    .unwrap()
}

async fn all_ids(t: &Table) -> Vec<i64> {
    let snap = t.snapshot().await.unwrap();
    let batches = t.scan(snap).with_columns(&["id"]).collect().await.unwrap();
    let mut ids = i64_values(&batches, "id");
    ids.sort();
    ids
}

async fn concurrent_appends(t: Table, writers: i64, per_writer: i64) {
    t.write(vec![batch(0..1)]).execute().await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..per_writer {
                let start = 1 + (w * per_writer + k) * 10;
                t.write(vec![batch(start..start + 10)])
                    .execute()
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let snap = t.snapshot().await.unwrap();
    assert_eq!(
        snap.version(),
        writers * per_writer,
        "gapless versions, one per append"
    );
    let ids = all_ids(&t).await;
    let expected: Vec<i64> = (0..1 + writers * per_writer * 10).collect();
    assert_eq!(ids, expected, "every append lands exactly once");
    // Every version file holds exactly one WRITE (none overwritten).
    let history = t.history(None).await.unwrap();
    assert_eq!(history.len() as i64, writers * per_writer + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_local_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::at(dir.path().join("t").to_str().unwrap()).unwrap();
    concurrent_appends(t, 8, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_in_memory() {
    let store = TableStore::new(Arc::new(InMemory::new()), Path::from("t"), "memory://t");
    concurrent_appends(Table::from_store(store), 8, 6).await;
}

#[tokio::test]
async fn idempotent_app_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::at(dir.path().join("t").to_str().unwrap()).unwrap();
    let r = t
        .write(vec![batch(0..5)])
        .with_app_transaction("sink", 1)
        .execute()
        .await
        .unwrap();
    assert!(!r.already_applied);
    let r = t
        .write(vec![batch(0..5)])
        .with_app_transaction("sink", 1)
        .execute()
        .await
        .unwrap();
    assert!(r.already_applied);
    assert_eq!(r.version, 0);
    let r = t
        .write(vec![batch(5..6)])
        .with_app_transaction("sink", 2)
        .execute()
        .await
        .unwrap();
    assert_eq!(r.version, 1);
    assert_eq!(all_ids(&t).await, (0..6).collect::<Vec<_>>());
    assert_eq!(
        t.snapshot().await.unwrap().app_transaction_version("sink"),
        Some(2)
    );
}

#[tokio::test]
async fn rejected_writes_commit_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::at(dir.path().join("t").to_str().unwrap()).unwrap();
    t.write(vec![batch(0..3)]).execute().await.unwrap();
    // Wrong type.
    let bad = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, true)])),
        vec![Arc::new(StringArray::from(vec!["x"]))],
    )
    .unwrap();
    let err = t.write(vec![bad]).execute().await.unwrap_err();
    assert!(
        matches!(&err, Error::SchemaMismatch { column, .. } if column == "id"),
        "{err}"
    );
    // Unknown column without merge.
    let extra = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("amout", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![9])),
            Arc::new(Int64Array::from(vec![1])),
        ],
    )
    .unwrap();
    let err = t.write(vec![extra.clone()]).execute().await.unwrap_err();
    assert!(err.to_string().contains("`amout`"), "{err}");
    // Nulls in a non-nullable column.
    let nulls = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![Some(1), None]))],
    )
    .unwrap();
    let err = t.write(vec![nulls]).execute().await.unwrap_err();
    assert!(
        err.to_string().contains("`id`") && err.to_string().contains("null"),
        "{err}"
    );
    let snap = t.snapshot().await.unwrap();
    assert_eq!(snap.version(), 0, "nothing committed");
    assert_eq!(all_ids(&t).await, vec![0, 1, 2]);
    // With merge the new column is added.
    let r = t
        .write(vec![extra])
        .with_schema_mode(shoal_format::SchemaMode::Merge)
        .execute()
        .await
        .unwrap();
    assert!(r.snapshot.schema().field("amout").unwrap().nullable);
}

#[tokio::test]
async fn overwrite_replaces_and_time_travel_keeps_history() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::at(dir.path().join("t").to_str().unwrap()).unwrap();
    t.write(vec![batch(0..3)]).execute().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let between = chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    t.write(vec![batch(10..12)])
        .with_mode(SaveMode::Overwrite)
        .execute()
        .await
        .unwrap();
    assert_eq!(all_ids(&t).await, vec![10, 11]);
    let v0 = t.snapshot_at(0).await.unwrap();
    assert_eq!(v0.num_files(), 1);
    let at = t.snapshot_at_timestamp(between).await.unwrap();
    assert_eq!(at.version(), 0);
    let err = t.snapshot_at_timestamp(0).await.unwrap_err();
    assert!(matches!(err, Error::TimestampOutOfRange { .. }), "{err}");
    let err = t.snapshot_at(7).await.unwrap_err();
    assert!(matches!(err, Error::VersionNotFound { .. }), "{err}");
}

#[tokio::test]
async fn corrupt_log_missing_file_and_unsupported_protocol_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let t = Table::at(path.to_str().unwrap()).unwrap();
    let r = t.write(vec![batch(0..3)]).execute().await.unwrap();
    // Missing data file.
    let file = r.snapshot.files()[0].path.clone();
    std::fs::remove_file(path.join(&file)).unwrap();
    let snap = t.snapshot().await.unwrap();
    let err = t.scan(snap).collect().await.unwrap_err();
    assert!(matches!(err, Error::MissingDataFile { .. }), "{err}");
    // Truncated commit JSON.
    let log = path.join("_delta_log");
    std::fs::write(
        log.join("00000000000000000001.json"),
        b"{\"add\":{\"path\":",
    )
    .unwrap();
    let err = t.snapshot().await.unwrap_err();
    assert!(matches!(err, Error::CorruptLog { .. }), "{err}");
    assert!(
        err.to_string().contains("00000000000000000001.json"),
        "{err}"
    );
    // Time travel before the damage still works.
    assert_eq!(t.snapshot_at(0).await.unwrap().version(), 0);
    // Unsupported protocol.
    std::fs::write(
        log.join("00000000000000000001.json"),
        br#"{"protocol":{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":["deletionVectors","someFutureFeature"],"writerFeatures":[]}}
"#,
    )
    .unwrap();
    let err = t.snapshot().await.unwrap_err();
    assert!(err.to_string().contains("someFutureFeature"), "{err}");
}

#[tokio::test]
async fn checkpoint_replay_equals_log_replay() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::at(dir.path().join("t").to_str().unwrap()).unwrap();
    for i in 0..13 {
        t.write(vec![batch(i * 10..i * 10 + 10)])
            .with_app_transaction("app", i)
            .execute()
            .await
            .unwrap();
    }
    let snap = t.snapshot().await.unwrap();
    assert_eq!(snap.checkpoint_version(), Some(10));
    // Delete the checkpoint hint and the checkpoint: replay from commits only.
    let log = dir.path().join("t/_delta_log");
    let with_cp: Vec<String> = snap.files().iter().map(|f| f.path.clone()).collect();
    std::fs::remove_file(log.join("_last_checkpoint")).unwrap();
    let t2 = t.snapshot().await.unwrap();
    assert_eq!(
        t2.checkpoint_version(),
        Some(10),
        "found without _last_checkpoint"
    );
    std::fs::remove_file(log.join("00000000000000000010.checkpoint.parquet")).unwrap();
    let plain = t.snapshot().await.unwrap();
    assert_eq!(plain.checkpoint_version(), None);
    let without: Vec<String> = plain.files().iter().map(|f| f.path.clone()).collect();
    assert_eq!(with_cp, without);
    assert_eq!(plain.app_transaction_version("app"), Some(12));
    assert_eq!(snap.app_transaction_version("app"), Some(12));
}

/// A file of many row groups is decoded in parallel chunks and its dictionary-encoded
/// string columns are read as dictionaries and expanded: the scan still returns every
/// row, in file order, with the strings (and nulls) written, whatever the batch size,
/// projection or filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_of_many_row_groups_keep_order_and_strings() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::at(dir.path().to_str().unwrap()).unwrap();
    let n = 40_000i64;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("country", DataType::Utf8, true),
        Field::new("label", DataType::Utf8, true),
    ]));
    let country =
        |i: i64| (i % 11 != 0).then(|| ["NL", "BE", "", "Deutschland", "日本"][(i % 5) as usize]);
    let label = |i: i64| format!("{}-{i}", "x".repeat((i % 40) as usize));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from((0..n).collect::<Vec<_>>())),
            Arc::new(StringArray::from((0..n).map(country).collect::<Vec<_>>())),
            Arc::new(StringArray::from((0..n).map(label).collect::<Vec<_>>())),
        ],
    )
    .unwrap();
    t.write(vec![batch])
        .with_writer_options(WriterOptions {
            row_group_rows: 1_000,
            ..Default::default()
        })
        .execute()
        .await
        .unwrap();
    let snap = t.snapshot().await.unwrap();
    assert_eq!(snap.num_files(), 1, "one file of 40 row groups");
    for batch_size in [333, 1_000, 4_096] {
        let batches = t
            .scan(snap.clone())
            .with_batch_size(batch_size)
            .collect()
            .await
            .unwrap();
        let mut next = 0i64;
        for b in &batches {
            let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let countries = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            let labels = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
            for r in 0..b.num_rows() {
                assert_eq!(ids.value(r), next, "rows in file order");
                let want = country(next);
                assert_eq!(countries.is_valid(r), want.is_some(), "null at id {next}");
                if let Some(want) = want {
                    assert_eq!(countries.value(r), want, "country at id {next}");
                }
                assert_eq!(labels.value(r), label(next), "label at id {next}");
                next += 1;
            }
        }
        assert_eq!(next, n, "every row, batch size {batch_size}");
    }
    // A filter on the dictionary column, another column projected.
    let batches = t
        .scan(snap.clone())
        .with_predicate("country = 'Deutschland'")
        .unwrap()
        .with_columns(&["id"])
        .with_batch_size(777)
        .collect()
        .await
        .unwrap();
    let ids = i64_values(&batches, "id");
    let want: Vec<i64> = (0..n)
        .filter(|&i| country(i) == Some("Deutschland"))
        .collect();
    assert_eq!(ids, want);
    // Only the string column.
    let batches = t
        .scan(snap)
        .with_columns(&["country"])
        .collect()
        .await
        .unwrap();
    let got: Vec<Option<String>> = batches
        .iter()
        .flat_map(|b| {
            let a = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            (0..a.len())
                .map(|r| a.is_valid(r).then(|| a.value(r).to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    let want: Vec<Option<String>> = (0..n).map(|i| country(i).map(str::to_string)).collect();
    assert_eq!(got, want);
}
