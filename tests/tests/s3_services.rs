//! The services on the S3 gateway: shoal-server over an `s3://` warehouse (create,
//! append, scan, list), the compactor binary on S3 tables configured only through
//! `--storage-option` flags, `[service.storage_options]` or a `[[table]]` entry's own
//! `storage_options` (no `AWS_*` environment),
//! two compactors racing on one S3 table, and a short torture run (writers, DELETE,
//! MERGE and compactor passes at once) checked against a model at sampled versions.

use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use shoal_format::error::ConflictKind;
use shoal_format::{Error, Table, TableStore};
use shoal_server::config::{Overrides, ServerConfig};
use shoal_server::{serve, AppState};
use shoal_tests::keyed::{
    append, batch, file_count, model_rows, part, rows_at, small_files_table, Model,
};
use shoal_tests::{s3_base, s3_uri, workspace_bin, Rng};

const NDJSON: &str = "application/x-ndjson";
const ARROW: &str = "application/vnd.apache.arrow.stream";

/// The gateway's settings as explicit storage options (what the `AWS_*` environment
/// says, under object_store's keys).
fn s3_options() -> Vec<(String, String)> {
    [
        ("aws_endpoint_url", "AWS_ENDPOINT_URL"),
        ("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
        ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
        ("aws_region", "AWS_REGION"),
    ]
    .iter()
    .filter_map(|(key, var)| Some((key.to_string(), std::env::var(var).ok()?)))
    .chain([("aws_allow_http".to_string(), "true".to_string())])
    .collect()
}

fn secret() -> String {
    std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default()
}

/// A compactor command with no `AWS_*` variable in its environment: everything it
/// knows about the store comes from its flags or config file.
fn compactor_without_aws_env() -> Command {
    let mut cmd = Command::new(workspace_bin("shoal-compactor", "shoal-compactor"));
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info,shoal_compactor=debug,shoal_format=debug");
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

fn storage_flags(cmd: &mut Command) {
    for (k, v) in s3_options() {
        cmd.arg("--storage-option").arg(format!("{k}={v}"));
    }
}

fn assert_no_secret(log: &str) {
    let s = secret();
    assert!(
        s.is_empty() || !log.contains(&s),
        "the secret key appears in the log"
    );
}

// ---------------------------------------------------------------------------------
// The server over an s3:// warehouse

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_serves_an_s3_warehouse() {
    let Some(base) = s3_base("the server on S3") else {
        return;
    };
    let warehouse = s3_uri(&base, "server-wh");
    // The config file path: warehouse and [storage_options] in TOML.
    let mut text = format!("warehouse = {}\n[storage_options]\n", json!(warehouse));
    for (k, v) in s3_options() {
        text.push_str(&format!("{k} = {}\n", json!(v)));
    }
    let config = ServerConfig::from_toml(&text, "s3.toml", &Overrides::default()).unwrap();
    assert!(!format!("{config:?}").contains(&secret()) || secret().is_empty());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, AppState::new(config), async move {
        let _ = stopped.await;
    }));
    let client = Client::new();
    let u = |p: &str| format!("{url}{p}");

    let (st, v) = get_json(&client, &u("/v1/tables")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["tables"], json!([]));
    let r = client.get(u("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the S3 warehouse is reachable");

    for name in ["events", "ns.clicks"] {
        let r = client
            .put(u(&format!("/v1/tables/{name}")))
            .json(&json!({ "schema": "id long not null, name string" }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
    }
    // An object outside any table is no table.
    let stray = TableStore::from_uri(&format!("{warehouse}/junk")).unwrap();
    stray
        .put(&stray.data_path("x.txt").unwrap(), "x".into())
        .await
        .unwrap();

    let mut expected = Vec::new();
    for round in 0..3i64 {
        let ids = round * 100..round * 100 + 50;
        let body: String = ids
            .clone()
            .map(|i| format!("{{\"id\":{i},\"name\":\"n{i}\"}}\n"))
            .collect();
        let (st, v) = post(&client, &u("/v1/tables/events/append"), NDJSON, body.into()).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["rows"], 50);
        expected.extend(ids);
    }
    let ids: Vec<i64> = (1000..1100).collect();
    let (st, v) = post(
        &client,
        &u("/v1/tables/events/append"),
        ARROW,
        arrow_body(&ids),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    expected.extend(ids);
    let version = v["version"].as_i64().unwrap();
    assert_eq!(version, 4, "create + 4 appends");

    let r = client
        .get(u("/v1/tables/events/scan"))
        .header("accept", NDJSON)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut got: Vec<i64> = r
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    let r = client
        .get(u("/v1/tables/events/scan?version=1&limit=10"))
        .header("accept", NDJSON)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap().lines().count(), 10, "time travel");

    let (st, v) = get_json(&client, &u("/v1/tables")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["tables"], json!(["events", "ns.clicks"]));
    let (_, v) = get_json(&client, &u("/v1/tables?namespace=ns")).await;
    assert_eq!(v["tables"], json!(["ns.clicks"]));
    let (st, v) = get_json(&client, &u("/v1/tables/events/files")).await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // The data is on S3, where a plain library handle reads it too.
    let t = Table::at(&format!("{warehouse}/events")).unwrap();
    assert_eq!(t.snapshot().await.unwrap().version(), version);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

async fn get_json(client: &Client, url: &str) -> (StatusCode, Value) {
    let r = client.get(url).send().await.unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn post(client: &Client, url: &str, ct: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let r = client
        .post(url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

fn arrow_body(ids: &[i64]) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let b = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(
                ids.iter().map(|i| format!("n{i}")).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema).unwrap();
    w.write(&b).unwrap();
    w.finish().unwrap();
    w.into_inner().unwrap()
}

// ---------------------------------------------------------------------------------
// The compactor on S3

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `files_compacted` of every finished run in a JSON log.
fn compacted_counts(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "run finished")
        .map(|v| v["files_compacted"].as_u64().unwrap_or(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compactor_once_compacts_an_s3_table_from_flags_alone() {
    let Some(base) = s3_base("the compactor on S3") else {
        return;
    };
    let uri = s3_uri(&base, "compact-once");
    let model = small_files_table(&uri, 24, 40).await;
    let t = Table::at(&uri).unwrap();
    let before = file_count(&t).await;
    assert_eq!(before, 48, "24 appends into 2 partitions");

    let mut cmd = compactor_without_aws_env();
    cmd.args(["--once", "--table", &uri, "--min-small-files", "2"]);
    cmd.args(["--log-format", "json"]);
    storage_flags(&mut cmd);
    let out = cmd.output().unwrap();
    let log = stderr_of(&out);
    assert!(out.status.success(), "compactor failed:\n{log}");
    assert_no_secret(&log);
    assert_eq!(compacted_counts(&log), vec![48], "{log}");

    let after = file_count(&t).await;
    assert!(after <= 2, "{before} files became {after}");
    assert_eq!(rows_at(&t, None).await, model_rows(&model));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compactor_once_opens_a_table_with_its_own_storage_options() {
    let Some(base) = s3_base("per-table storage options on S3") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let uri = s3_uri(&base, "compact-table-options");
    let model = small_files_table(&uri, 12, 30).await;
    let t = Table::at(&uri).unwrap();
    assert_eq!(file_count(&t).await, 24, "12 appends into 2 partitions");

    // The service's options point at nothing (and fail fast); the table's entry carries
    // the gateway's endpoint and keys.
    let wrong_secret = "wrong-service-secret";
    let config = |table_options: bool| {
        let mut text =
            String::from("[service]\nlog_format = \"json\"\n[service.storage_options]\n");
        text.push_str("aws_endpoint_url = \"http://127.0.0.1:9\"\naws_allow_http = true\n");
        text.push_str(&format!(
            "aws_access_key_id = \"wrong\"\naws_secret_access_key = \"{wrong_secret}\"\n"
        ));
        text.push_str("shoal_max_retries = 0\nshoal_retry_timeout = \"1s\"\n");
        text.push_str(&format!(
            "[[table]]\nuri = {}\nmin_small_files = 2\n",
            json!(uri)
        ));
        if table_options {
            text.push_str("[table.storage_options]\n");
            for (k, v) in s3_options() {
                text.push_str(&format!("{k} = {}\n", json!(v)));
            }
        }
        let path = dir.path().join(format!("compactor-{table_options}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let run = |config: &std::path::Path| {
        let mut cmd = compactor_without_aws_env();
        cmd.args(["--once", "--config"]).arg(config);
        let out = cmd.output().unwrap();
        let log = stderr_of(&out);
        assert_no_secret(&log);
        assert!(
            !log.contains(wrong_secret),
            "the service's secret appears in the log"
        );
        (out.status.success(), log)
    };

    // Without the entry's options the run fails on the service's: they are wrong indeed.
    let (ok, log) = run(&config(false));
    assert!(
        !ok,
        "the service's options must not reach the gateway:\n{log}"
    );
    assert!(log.contains("run failed"), "{log}");
    assert_eq!(file_count(&t).await, 24);

    let (ok, log) = run(&config(true));
    assert!(ok, "compactor failed:\n{log}");
    assert_eq!(compacted_counts(&log), vec![24], "{log}");
    assert!(file_count(&t).await <= 2);
    assert_eq!(rows_at(&t, None).await, model_rows(&model));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_compactors_racing_on_one_s3_table_compact_it_once() {
    let Some(base) = s3_base("two compactors on S3") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let uri = s3_uri(&base, "compact-race");
    let model = small_files_table(&uri, 20, 30).await;
    let t = Table::at(&uri).unwrap();
    let version_before = t.snapshot().await.unwrap().version();

    // One compactor configured by flags, the other by a config file.
    let config = dir.path().join("compactor.toml");
    let mut text = String::from("[service]\nlog_format = \"json\"\n[service.storage_options]\n");
    for (k, v) in s3_options() {
        text.push_str(&format!("{k} = {}\n", json!(v)));
    }
    text.push_str(&format!(
        "[defaults]\nmin_small_files = 2\n[[table]]\nuri = {}\n",
        json!(uri)
    ));
    std::fs::write(&config, text).unwrap();
    let mut a = compactor_without_aws_env();
    a.args(["--once", "--table", &uri, "--min-small-files", "2"]);
    a.args(["--log-format", "json", "--owner", "compactor-a"]);
    storage_flags(&mut a);
    let mut b = compactor_without_aws_env();
    b.args(["--once", "--owner", "compactor-b", "--config"]);
    b.arg(&config);
    let (a, b) = (a.spawn().unwrap(), b.spawn().unwrap());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (log_a, log_b) = (stderr_of(&a), stderr_of(&b));
    assert!(a.status.success(), "compactor-a failed:\n{log_a}");
    assert!(b.status.success(), "compactor-b failed:\n{log_b}");
    assert_no_secret(&log_a);
    assert_no_secret(&log_b);

    // Exactly one rewrote the 40 files; the other was turned away by the lease or,
    // coming second, found nothing left to do.
    let mut counts: Vec<u64> = compacted_counts(&log_a);
    counts.extend(compacted_counts(&log_b));
    counts.retain(|c| *c > 0);
    assert_eq!(counts, vec![40], "a:\n{log_a}\nb:\n{log_b}");
    let busy = [&log_a, &log_b]
        .iter()
        .filter(|l| l.contains("another compactor holds the lease"))
        .count();
    eprintln!("race: {busy} compactor(s) turned away by the lease");
    let history = t.history(None).await.unwrap();
    let optimizes = history
        .iter()
        .filter(|h| {
            h.version > version_before
                && h.commit_info.0.get("operation").and_then(Value::as_str) == Some("OPTIMIZE")
        })
        .count();
    assert_eq!(optimizes, 1, "one compaction commit");
    assert!(file_count(&t).await <= 2);
    assert_eq!(rows_at(&t, None).await, model_rows(&model));
}

// ---------------------------------------------------------------------------------
// Torture: writers, DELETE, MERGE and compactor passes at once on one S3 table

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn torture_writers_and_compactor_on_s3_agree_with_a_model() {
    let Some(base) = s3_base("the S3 torture run") else {
        return;
    };
    let seconds: u64 = std::env::var("SHOAL_S3_TORTURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    // Built before the clock starts, so compactor passes overlap the writers at once.
    workspace_bin("shoal-compactor", "shoal-compactor");
    let uri = s3_uri(&base, "torture");
    let t = Table::at(&uri).unwrap();
    let mut model = Model::new();
    let mut next_id = 0;
    let v0 = append(&t, &mut model, &mut next_id, 50).await;
    let mut history: Vec<(i64, Model)> = vec![(v0, model.clone())];

    // Compactor passes in a loop, each a separate process, until the writers stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let compactions = {
        let (uri, stop) = (uri.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut passes = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let mut cmd = compactor_without_aws_env();
                cmd.args(["--once", "--table", &uri, "--min-small-files", "3"]);
                storage_flags(&mut cmd);
                let out = cmd.output().unwrap();
                assert!(out.status.success(), "{}", stderr_of(&out));
                assert_no_secret(&stderr_of(&out));
                passes += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            passes
        })
    };

    // Independent appenders on their own handles, id ranges apart: their rows go
    // straight into the model once acknowledged.
    let appenders: Vec<_> = (0..3)
        .map(|w| {
            let uri = uri.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let t = Table::at(&uri).unwrap();
                let mut acked = Model::new();
                let mut next = 1_000_000 * (w + 1);
                let (mut commits, mut starved) = (0, 0);
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let rows: Vec<_> = (next..next + 15)
                        .map(|id| (id, part(id), id * 10))
                        .collect();
                    next += 15;
                    match t
                        .write(vec![batch(&rows)])
                        .with_partition_by(&["p"])
                        .execute()
                        .await
                    {
                        Ok(_) => {
                            acked.extend(rows.into_iter().map(|(id, p, v)| (id, (p, v))));
                            commits += 1;
                        }
                        // Lost every commit race it ran: nothing of it committed, so
                        // its rows are not acknowledged (and must not show up).
                        Err(Error::Conflict(ConflictKind::RetriesExhausted { .. })) => starved += 1,
                        Err(e) => panic!("append on S3: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (acked, commits, starved)
            })
        })
        .collect();

    // The main writer: appends, DELETE and MERGE on its own id range (ids below one
    // million), tracking the model version by version.
    let mut rng = Rng::new(42);
    let started = Instant::now();
    let mut ops = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        ops += 1;
        let version = if ops % 5 == 0 {
            let k = rng.below(7) as i64;
            let r = t
                .delete()
                .with_predicate(format!("id < 1000000 AND id % 7 = {k}"))
                .execute()
                .await
                .expect("DELETE on S3 under concurrent writers and compactions");
            model.retain(|id, _| id % 7 != k);
            r.version
        } else if ops % 7 == 0 && !model.is_empty() {
            let existing: Vec<i64> = model.keys().copied().collect();
            let mut src = Model::new();
            for _ in 0..8 {
                let id = existing[rng.below(existing.len() as u64) as usize];
                src.insert(id, (part(id), model[&id].1 + 1));
            }
            for id in next_id..next_id + 8 {
                src.insert(id, (part(id), id * 10));
            }
            next_id += 8;
            let rows: Vec<_> = src
                .iter()
                .map(|(id, (p, v))| (*id, p.clone(), *v))
                .collect();
            let r = t
                .merge(vec![batch(&rows)], "target.id = source.id")
                .when_matched_update_all(None)
                .when_not_matched_insert_all(None)
                .execute()
                .await
                .expect("MERGE on S3 under concurrent writers and compactions");
            model.extend(src);
            r.version
        } else {
            append(&t, &mut model, &mut next_id, 10 + rng.below(20) as i64).await
        };
        history.push((version, model.clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut others = Model::new();
    let (mut other_commits, mut starved) = (0, 0);
    for a in appenders {
        let (acked, commits, lost_races) = a.await.unwrap();
        others.extend(acked);
        other_commits += commits;
        starved += lost_races;
    }
    let passes = compactions.join().unwrap();

    // The end: every acknowledged row exactly once, the main writer's rows as modelled.
    let mut expected = model.clone();
    expected.extend(others);
    let final_rows = rows_at(&t, None).await;
    assert_eq!(
        final_rows.len(),
        expected.len(),
        "no row lost or duplicated"
    );
    assert_eq!(final_rows, model_rows(&expected));

    // Sampled versions: the main writer's rows at each of its versions are its model
    // then (other writers' rows have ids of a million and up).
    let mut sampled = 0;
    for (i, (version, m)) in history.iter().enumerate() {
        if i % 7 != 0 && i + 1 != history.len() {
            continue;
        }
        let mine: Vec<_> = rows_at(&t, Some(*version))
            .await
            .into_iter()
            .filter(|r| r.0 < 1_000_000)
            .collect();
        assert_eq!(mine, model_rows(m), "version {version}");
        sampled += 1;
    }
    let snap = t.snapshot().await.unwrap();
    let ops_total = history.len() + other_commits;
    eprintln!(
        "torture on S3: {seconds}s, {ops_total} writer commits ({other_commits} by 3 appenders), \
         {starved} appends refused after exhausting commit retries, {passes} compactor passes, \
         final version {}, {} files, {sampled} versions sampled, 0 lost, 0 duplicated",
        snap.version(),
        snap.files().len()
    );
    assert!(passes >= 1);
}
