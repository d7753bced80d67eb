//! The storage seam on every store (local disk, memory, the S3 gateway): put-if-absent
//! races, log listing order and offsets, ranged reads, multipart uploads, deletes and
//! not-found; S3 configuration; and the commit path under injected faults (failed,
//! timed-out and lost-answer log writes, random failures, permanent errors).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use shoal_format::storage::faults::{Fault, Faults, FaultyStore, Op, Trigger};
use shoal_format::storage::{PutOutcome, StorageOptions};
use shoal_format::transaction::Transaction;
use shoal_format::{Error, Table, TableStore};
use shoal_tests::{i64_values, s3_base, s3_uri};

/// The stores under test: (name, a fresh table location in it).
fn stores(test: &str) -> Vec<(&'static str, TableStore, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = vec![
        (
            "local",
            TableStore::from_uri(dir.path().join(test).to_str().unwrap()).unwrap(),
            Some(dir),
        ),
        (
            "memory",
            TableStore::from_uri(&format!("memory://{test}")).unwrap(),
            None,
        ),
    ];
    if let Some(base) = s3_base("the storage conformance suite on S3") {
        out.push((
            "s3",
            TableStore::from_uri(&s3_uri(&base, test)).unwrap(),
            None,
        ));
    }
    out
}

fn commit(v: i64) -> String {
    format!("{v:020}.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_if_absent_races_have_exactly_one_winner() {
    for (name, store, _dir) in stores("races") {
        let (rounds, max_writers) = if name == "s3" { (12, 8) } else { (40, 16) };
        let mut contested = 0;
        for round in 0..rounds {
            let writers = 2 + round % (max_writers - 1);
            let path = store.log_path(&commit(round as i64));
            let mut tasks = Vec::new();
            for w in 0..writers {
                let store = store.clone();
                let path = path.clone();
                tasks.push(tokio::spawn(async move {
                    let body = Bytes::from(format!("round {round} writer {w}"));
                    (w, store.put_if_absent(&path, body).await.unwrap())
                }));
            }
            let mut winners = Vec::new();
            for t in tasks {
                let (w, outcome) = t.await.unwrap();
                if outcome == PutOutcome::Created {
                    winners.push(w);
                }
            }
            assert_eq!(
                winners.len(),
                1,
                "{name}: round {round}: winners {winners:?}"
            );
            let body = store.get_opt(&path).await.unwrap().unwrap();
            assert_eq!(
                body,
                Bytes::from(format!("round {round} writer {}", winners[0])),
                "{name}: the winner's bytes stand"
            );
            contested += 1;
        }
        eprintln!("{name}: {contested} contested put-if-absent rounds, one winner each");
    }
}

/// Writers committing in a tight loop on one table: a writer that lost a race must
/// catch up with every commit already beyond it, or faster writers starve it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tight_loop_writers_are_never_starved() {
    for (name, store, _dir) in stores("tight-loop") {
        Table::from_store(store.clone())
            .write(vec![batch(0..1)])
            .execute()
            .await
            .unwrap();
        let (writers, per) = (4, if name == "s3" { 12 } else { 25 });
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let t = Table::from_store(store.clone());
            tasks.push(tokio::spawn(async move {
                for k in 0..per {
                    let start = 1000 * (w + 1) + k;
                    t.write(vec![batch(start..start + 1)])
                        .execute()
                        .await
                        .unwrap_or_else(|e| panic!("writer {w}, write {k}: {e}"));
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let t = Table::from_store(store.clone());
        assert_eq!(
            ids(&t).await.len(),
            1 + writers as usize * per as usize,
            "{name}"
        );
        // A transaction far behind (read at version 0, the table is now 1 + writers * per
        // versions ahead) catches up on its second lost race, not one version per try.
        let stale = t.snapshot_at(0).await.unwrap();
        let done = Transaction::new(&stale, "TEST")
            .with_max_attempts(3)
            .commit()
            .await
            .unwrap_or_else(|e| panic!("{name}: a stale transaction did not catch up: {e}"));
        assert_eq!(done.version, 1 + writers * per, "{name}");
        assert_eq!(done.attempts, 3, "{name}");
        eprintln!(
            "{name}: {writers} tight-loop writers, {} commits in {:.1?}",
            writers * per,
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn log_listing_is_sorted_and_starts_after_the_offset() {
    for (name, store, _dir) in stores("listing") {
        // Written out of order, with a checkpoint, a sidecar-like subdirectory and data.
        let mut names: Vec<String> = (0..25).rev().map(commit).collect();
        names.push(format!("{:020}.checkpoint.parquet", 10));
        names.push("_last_checkpoint".into());
        for n in &names {
            store
                .put(&store.log_path(n), Bytes::from("x"))
                .await
                .unwrap();
        }
        store
            .put(
                &store.log_path("_sidecars").join("a.parquet"),
                Bytes::from("s"),
            )
            .await
            .unwrap();
        store
            .put(
                &store.data_path("part-0.parquet").unwrap(),
                Bytes::from("d"),
            )
            .await
            .unwrap();
        let mut expected = names.clone();
        expected.sort();
        let all: Vec<String> = store
            .list_log(None)
            .await
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(all, expected, "{name}: full listing");
        let after = commit(10);
        let tail: Vec<String> = store
            .list_log(Some(&after))
            .await
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let want: Vec<String> = expected
            .iter()
            .filter(|n| n.as_str() > after.as_str())
            .cloned()
            .collect();
        assert_eq!(tail, want, "{name}: listing after {after}");
        // A missing log directory lists as empty, not as an error.
        let empty = TableStore::new(
            store.object_store(),
            store.root().clone().join("nothing"),
            "x",
        );
        assert!(empty.list_log(None).await.unwrap().is_empty(), "{name}");
    }
}

#[tokio::test]
async fn ranged_reads_return_exact_slices() {
    for (name, store, _dir) in stores("ranges") {
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 31 % 251) as u8).collect();
        let path = store.data_path("blob.bin").unwrap();
        store.put(&path, Bytes::from(data.clone())).await.unwrap();
        for range in [
            0..1,
            0..8,
            999_995..1_000_003,
            4096..70_000,
            500_000..500_001,
        ] {
            let got = store
                .get_range(&path, range.start as u64..range.end as u64)
                .await
                .unwrap();
            assert_eq!(&got[..], &data[range.clone()], "{name}: range {range:?}");
        }
        assert_eq!(
            store.head(&path).await.unwrap().unwrap().size,
            data.len() as u64
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_go_up_in_parts() {
    for (name, store, _dir) in stores("multipart") {
        // 21 MiB: above the 16 MiB threshold, three parts of 8 MiB (the last shorter).
        let len = 21 * 1024 * 1024 + 7;
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let data = Bytes::from(data);
        let path = store.data_path("big/part-0.parquet").unwrap();
        assert!(data.len() >= store.multipart_threshold());
        store.put(&path, data.clone()).await.unwrap();
        let meta = store.head(&path).await.unwrap().unwrap();
        assert_eq!(meta.size, len as u64, "{name}");
        if name == "s3" {
            // S3 names a multipart object's ETag by its part count.
            let etag = meta.e_tag.clone().unwrap_or_default();
            assert!(
                etag.trim_matches('"').ends_with("-3"),
                "{name}: etag {etag}"
            );
        }
        let got = store.get_opt(&path).await.unwrap().unwrap();
        assert!(
            got == data,
            "{name}: content differs after a multipart upload"
        );
    }
}

#[tokio::test]
async fn deletes_and_not_found() {
    for (name, store, _dir) in stores("notfound") {
        let path = store.data_path("gone.bin").unwrap();
        assert!(store.get_opt(&path).await.unwrap().is_none(), "{name}");
        assert!(store.head(&path).await.unwrap().is_none(), "{name}");
        store.delete(&path).await.unwrap();
        store.put(&path, Bytes::from("here")).await.unwrap();
        assert!(store.head(&path).await.unwrap().is_some(), "{name}");
        store.delete(&path).await.unwrap();
        assert!(store.get_opt(&path).await.unwrap().is_none(), "{name}");
        let err = store.get_range(&path, 0..1).await.unwrap_err();
        assert!(
            matches!(err, Error::Storage(object_store::Error::NotFound { .. })),
            "{name}: {err}"
        );
        // A table that does not exist is named as such.
        let t = Table::from_store(store.clone());
        assert!(
            matches!(t.snapshot().await, Err(Error::TableNotFound(_))),
            "{name}"
        );
    }
}

#[test]
fn uris_and_options() {
    // Schemes no object store serves are refused by name (GCS and Azure: cloud_uris.rs).
    for uri in ["hdfs://b/t", "http://x/t"] {
        let e = TableStore::from_uri(uri).unwrap_err().to_string();
        assert!(e.contains("scheme is not supported"), "{e}");
    }
    let mut o = StorageOptions::new();
    o.insert("aws_endpoint_url".into(), "http://127.0.0.1:9".into());
    o.insert("aws_access_key_id".into(), "AKIDEXAMPLE".into());
    o.insert("aws_secret_access_key".into(), "very-secret-value".into());
    o.insert("aws_region".into(), "us-east-1".into());
    o.insert("aws_allow_http".into(), "true".into());
    let store = TableStore::from_uri_with_options("s3://bucket/wh/t", &o).unwrap();
    assert!(store.atomic_create());
    assert_eq!(store.root().as_ref(), "wh/t");
    let debug = format!("{store:?} {:?}", Table::from_store(store.clone()));
    assert!(!debug.contains("very-secret-value"), "{debug}");
    // A store without conditional put is refused unless the user opts into single-writer.
    o.insert("aws_conditional_put".into(), "disabled".into());
    let e = TableStore::from_uri_with_options("s3://bucket/t", &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("shoal_unsafe_single_writer"), "{e}");
    assert!(!e.contains("very-secret-value"), "{e}");
    o.insert("shoal_unsafe_single_writer".into(), "true".into());
    let store = TableStore::from_uri_with_options("s3://bucket/t", &o).unwrap();
    assert!(!store.atomic_create());
    // Options a local store cannot use are named.
    let e = TableStore::from_uri_with_options("/tmp/x", &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not apply"), "{e}");
    let e = Table::at_with_options(
        "s3://bucket/t",
        &[("bogus".to_string(), "v".to_string())].into(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("bogus"), "{e}");
}

#[tokio::test]
async fn s3_errors_never_show_secrets() {
    let Some(base) = s3_base("S3 error messages") else {
        return;
    };
    let mut o = StorageOptions::new();
    o.insert("aws_secret_access_key".into(), "wrong-secret-value".into());
    let t = Table::at_with_options(&s3_uri(&base, "badkey"), &o).unwrap();
    let e = t.snapshot().await.unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(!text.contains("wrong-secret-value"), "{text}");
    assert!(
        !e.is_transient_storage(),
        "a bad signature is permanent: {e}"
    );
}

// ---------------------------------------------------------------------------------
// Faults

fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let schema = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(Int64Array::from(ids.collect::<Vec<_>>()))],
    )
    .unwrap()
}

async fn ids(t: &Table) -> Vec<i64> {
    let snap = t.snapshot().await.unwrap();
    let batches = t.scan(snap).with_columns(&["id"]).collect().await.unwrap();
    let mut ids = i64_values(&batches, "id");
    ids.sort();
    ids
}

/// The commits' `txnId`s, version by version.
async fn txn_ids(store: &TableStore) -> Vec<String> {
    let mut out = Vec::new();
    for (name, _) in store.list_log(None).await.unwrap() {
        if !name.ends_with(".json") || name.starts_with('_') {
            continue;
        }
        let data = store
            .get_opt(&store.log_path(&name))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8(data.to_vec()).unwrap();
        let id = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v["commitInfo"]["txnId"].as_str().map(str::to_string))
            .unwrap_or_default();
        out.push(id);
    }
    out
}

/// Fault-injecting tables over each store: (name, plain table, faulty table, plan).
fn faulty(
    test: &str,
    options: &StorageOptions,
) -> Vec<(
    &'static str,
    Table,
    Table,
    Faults,
    Option<tempfile::TempDir>,
)> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let mut uris = vec![
        ("local", dir.path().join(test).to_str().unwrap().to_string()),
        ("memory", format!("memory://{test}")),
    ];
    if let Some(base) = s3_base("fault tests on S3") {
        uris.push(("s3", s3_uri(&base, test)));
    }
    let mut dir = Some(dir);
    for (name, uri) in uris {
        let plain = TableStore::from_uri_with_options(&uri, options).unwrap();
        let faults = Faults::new(0x5eed ^ name.len() as u64);
        let f2 = faults.clone();
        let wrapped = plain.map_store(move |s| Arc::new(FaultyStore::new(s, f2)));
        out.push((
            name,
            Table::from_store(plain),
            Table::from_store(wrapped),
            faults,
            if name == "local" { dir.take() } else { None },
        ));
    }
    out
}

fn quick_retries() -> StorageOptions {
    [("shoal_retry_timeout".to_string(), "3s".to_string())].into()
}

#[tokio::test]
async fn a_commit_whose_answer_was_lost_lands_exactly_once() {
    for (name, plain, t, faults, _dir) in faulty("lost-answer", &quick_retries()) {
        t.write(vec![batch(0..3)]).execute().await.unwrap();
        // Every commit's first log write succeeds but reports a failure.
        for k in 1..=5i64 {
            faults.add(Op::Create, Trigger::Nth(1), Fault::FailAfterWrite);
            let r = t
                .write(vec![batch(k * 10..k * 10 + 3)])
                .execute()
                .await
                .unwrap();
            assert_eq!(r.version, k, "{name}: no version skipped or doubled");
            faults.clear();
        }
        let ids_now = ids(&plain).await;
        let mut want: Vec<i64> = (0..3).collect();
        for k in 1..=5i64 {
            want.extend(k * 10..k * 10 + 3);
        }
        assert_eq!(
            ids_now, want,
            "{name}: every acknowledged write exactly once"
        );
        let txns = txn_ids(plain.store()).await;
        assert_eq!(txns.len(), 6, "{name}");
        let mut uniq = txns.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 6, "{name}: one txnId per commit");
        assert!(faults.injected() >= 5);
    }
}

#[tokio::test]
async fn failed_and_timed_out_log_writes_are_retried() {
    for (name, plain, t, faults, _dir) in faulty("timeouts", &quick_retries()) {
        t.write(vec![batch(0..1)]).execute().await.unwrap();
        faults.add(Op::Create, Trigger::Nth(1), Fault::Fail);
        faults.add(
            Op::Create,
            Trigger::Nth(2),
            Fault::Timeout(Duration::from_millis(300)),
        );
        faults.add(Op::Create, Trigger::Nth(3), Fault::FailAfterWrite);
        let r = t.write(vec![batch(1..2)]).execute().await.unwrap();
        assert_eq!(r.version, 1, "{name}");
        faults.clear();
        faults.add(
            Op::Any,
            Trigger::Fraction(1.0),
            Fault::Latency(Duration::from_millis(2)),
        );
        t.write(vec![batch(2..3)]).execute().await.unwrap();
        faults.clear();
        assert_eq!(ids(&plain).await, vec![0, 1, 2], "{name}");
        assert_eq!(txn_ids(plain.store()).await.len(), 3, "{name}");
    }
}

#[tokio::test]
async fn retries_are_bounded_and_permanent_errors_surface_at_once() {
    for (name, plain, t, faults, _dir) in faulty("bounded", &quick_retries()) {
        t.write(vec![batch(0..1)]).execute().await.unwrap();
        // The store never accepts the log write: the commit gives up within the bound.
        faults.add(Op::Create, Trigger::From(1), Fault::Fail);
        let started = Instant::now();
        let e = t.write(vec![batch(1..2)]).execute().await.unwrap_err();
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(8),
            "{name}: gave up after {took:?}"
        );
        assert!(
            matches!(e, Error::CommitOutcomeUnknown { version: 1, .. }),
            "{name}: {e}"
        );
        faults.clear();
        // Permission denied: no retry, the operation named.
        faults.add(Op::Create, Trigger::From(1), Fault::Deny);
        let started = Instant::now();
        let e = t.write(vec![batch(2..3)]).execute().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "{name}");
        assert!(!e.is_transient_storage(), "{name}: {e}");
        assert!(e.to_string().contains("Create"), "{name}: {e}");
        faults.clear();
        // Nothing unacknowledged is visible.
        assert_eq!(ids(&plain).await, vec![0], "{name}");
        assert_eq!(plain.snapshot().await.unwrap().version(), 0, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_with_random_faults_lose_and_duplicate_nothing() {
    for (name, plain, t, faults, _dir) in faulty("random", &quick_retries()) {
        t.write(vec![batch(0..1)]).execute().await.unwrap();
        // Lost answers on a third of the log writes, failures and latency elsewhere.
        faults.add(Op::Create, Trigger::Fraction(0.3), Fault::FailAfterWrite);
        faults.add(Op::Create, Trigger::Fraction(0.1), Fault::Fail);
        faults.add(Op::Any, Trigger::Fraction(0.05), Fault::Fail);
        faults.add(
            Op::Any,
            Trigger::Fraction(0.1),
            Fault::Latency(Duration::from_millis(3)),
        );
        let (writers, per) = if name == "s3" { (3, 4) } else { (4, 8) };
        let mut tasks = Vec::new();
        for w in 0..writers {
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut failed = Vec::new();
                for k in 0..per {
                    let start = 1000 * (w + 1) + 10 * k;
                    match t.write(vec![batch(start..start + 3)]).execute().await {
                        Ok(_) => acked.push(start),
                        Err(e) => failed.push((start, e.to_string())),
                    }
                }
                (acked, failed)
            }));
        }
        let mut acked = Vec::new();
        let mut failed = Vec::new();
        for task in tasks {
            let (a, f) = task.await.unwrap();
            acked.extend(a);
            failed.extend(f);
        }
        faults.clear();
        let got = ids(&plain).await;
        for start in &acked {
            for id in *start..start + 3 {
                assert_eq!(
                    got.iter().filter(|&&x| x == id).count(),
                    1,
                    "{name}: acknowledged id {id} not present exactly once"
                );
            }
        }
        // A failed write is either absent or (outcome unknown) present once, never twice.
        let mut dupes = got.clone();
        dupes.dedup();
        assert_eq!(dupes.len(), got.len(), "{name}: duplicated rows");
        let txns = txn_ids(plain.store()).await;
        let mut uniq = txns.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), txns.len(), "{name}: a txnId committed twice");
        eprintln!(
            "{name}: {} writes acknowledged, {} failed, {} faults injected in {} requests, {} commits",
            acked.len(),
            failed.len(),
            faults.injected(),
            faults.calls(),
            txns.len()
        );
        assert!(
            acked.len() >= (writers * per) as usize / 2,
            "{name}: {failed:?}"
        );
    }
}

/// A large data file streams up while it is being written: parts leave as soon as the
/// encoded bytes pass the threshold, so the writer holds a few parts, not the file.
/// A write that fails mid-upload commits nothing and leaves no object behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_data_files_stream_up_in_parts_while_written() {
    use shoal_format::write::{DataWriter, WriterOptions};
    let options: StorageOptions = [(
        "shoal_multipart_threshold".to_string(),
        (1024 * 1024).to_string(),
    )]
    .into();
    for (name, plain, t, faults, _dir) in faulty("stream-up", &options) {
        if name == "local" {
            continue; // local files are written whole
        }
        t.write(vec![batch(0..1)]).execute().await.unwrap();
        let snap = t.snapshot().await.unwrap();
        let mut writer = DataWriter::for_snapshot(&snap, WriterOptions::default()).unwrap();
        // Incompressible ids: about 8 MB of Parquet per million rows.
        let mut rng = shoal_tests::Rng::new(7);
        let mut expected = Vec::new();
        let calls_before = faults.calls();
        for _ in 0..4 {
            let ids: Vec<i64> = (0..1_000_000).map(|_| rng.next_u64() as i64).collect();
            expected.extend(&ids);
            let b =
                RecordBatch::try_new(snap.arrow_schema(), vec![Arc::new(Int64Array::from(ids))])
                    .unwrap();
            writer.write(&b).await.unwrap();
        }
        assert!(
            faults.calls() > calls_before,
            "{name}: nothing went up before the file was finished"
        );
        let adds = writer.finish().await.unwrap();
        assert_eq!(adds.len(), 1, "{name}: one file");
        let location = plain.store().data_path(&adds[0].path).unwrap();
        let head = plain.store().head(&location).await.unwrap().unwrap();
        assert_eq!(head.size as i64, adds[0].size, "{name}: size in the add");
        assert!(adds[0].size > 24 * 1024 * 1024, "{name}: {}", adds[0].size);
        let committed = shoal_format::transaction::Transaction::new(&snap, "WRITE")
            .with_actions(adds.into_iter().map(shoal_format::protocol::Action::Add))
            .commit()
            .await
            .unwrap();
        assert_eq!(committed.version, 1);
        expected.push(0);
        expected.sort();
        assert_eq!(ids(&plain).await, expected, "{name}: rows read back");

        // A part upload fails for good: the write fails, commits nothing, and the
        // upload is aborted (no object at any new path).
        faults.add(Op::Put, Trigger::From(1), Fault::Fail);
        let files_before = plain.store().list_all().await.unwrap().len();
        let big: Vec<i64> = (0..3_000_000).map(|_| rng.next_u64() as i64).collect();
        let err = t
            .write(vec![RecordBatch::try_new(
                snap.arrow_schema(),
                vec![Arc::new(Int64Array::from(big))],
            )
            .unwrap()])
            .execute()
            .await
            .expect_err("the upload failed");
        faults.clear();
        assert!(!matches!(err, Error::Conflict(_)), "{name}: {err}");
        assert_eq!(plain.snapshot().await.unwrap().version(), 1, "{name}");
        assert_eq!(
            plain.store().list_all().await.unwrap().len(),
            files_before,
            "{name}: a failed upload left an object behind"
        );
    }
}

/// Timestamp time travel to the millisecond on every store, also where the store
/// lists file times in whole seconds (the S3 gateway, like S3): many commits a
/// second stay distinguishable, and each history time travels back to its version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_time_travel_tells_apart_commits_within_a_second() {
    for (name, store, _dir) in stores("time-travel") {
        let t = Table::from_store(store.clone());
        let mut marks = Vec::new(); // (instant between version v and v + 1, v)
        for k in 0..12 {
            let r = t.write(vec![batch(k..k + 1)]).execute().await.unwrap();
            tokio::time::sleep(Duration::from_millis(15)).await;
            marks.push((chrono::Utc::now().timestamp_millis(), r.version));
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        for (ms, v) in &marks {
            let snap = t.snapshot_at_timestamp(*ms).await.unwrap();
            assert_eq!(snap.version(), *v, "{name}: travel to {ms}");
        }
        let history = t.history(None).await.unwrap();
        for h in &history {
            let snap = t.snapshot_at_timestamp(h.timestamp).await.unwrap();
            assert_eq!(
                snap.version(),
                h.version,
                "{name}: history time {}",
                h.timestamp
            );
        }
    }
}
