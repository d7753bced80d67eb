//! The compactor as operators run it: a separate `shoal-compactor` process next to a
//! streaming writer, killed with SIGKILL mid-run, and doubled up on one warehouse.
//! Every check compares table contents with an in-memory model of what the writer did.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_format::Table;
use shoal_tests::keyed::{
    append, batch, file_count, model_rows, part, rows_at, rows_of, small_files_table, Model,
};
use shoal_tests::{
    free_port, python, read_parquet, run_python, workspace_bin, Reaper, Rng, DUMP_ALL_VERSIONS,
};

fn compactor() -> PathBuf {
    workspace_bin("shoal-compactor", "shoal-compactor")
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > within {
            let _ = child.kill();
            panic!("the compactor did not exit within {within:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compactor_keeps_a_streaming_table_small_and_correct() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events");
    let uri = path.to_str().unwrap().to_string();
    let t = Table::at(&uri).unwrap();
    let mut model = Model::new();
    let mut next_id = 0;
    let mut history: Vec<(i64, Model)> = Vec::new();
    let v = append(&t, &mut model, &mut next_id, 40).await;
    history.push((v, model.clone()));

    let port = free_port();
    let log = std::fs::File::create(dir.path().join("compactor.log")).unwrap();
    let mut reaper = Reaper(Some(
        Command::new(compactor())
            .args(["--table", &uri])
            .args(["--interval", "300ms", "--jitter", "100ms"])
            .args(["--min-small-files", "4", "--lease-ttl", "5s"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    ));

    // The writer: appends, with a DELETE every 8th and a MERGE every 12th micro-batch.
    let mut rng = Rng::new(7);
    let started = Instant::now();
    let mut ops = 0;
    while started.elapsed() < Duration::from_secs(8) || ops < 60 {
        ops += 1;
        let version = if ops % 8 == 0 {
            let k = rng.below(11) as i64;
            let r = t
                .delete()
                .with_predicate(format!("id % 11 = {k}"))
                .execute()
                .await
                .expect("DELETE must survive concurrent compactions");
            model.retain(|id, _| id % 11 != k);
            r.version
        } else if ops % 12 == 0 {
            let existing: Vec<i64> = model.keys().copied().collect();
            let mut src: BTreeMap<i64, (String, i64)> = BTreeMap::new();
            for _ in 0..10 {
                let id = existing[rng.below(existing.len() as u64) as usize];
                src.insert(id, (part(id), model[&id].1 + 1));
            }
            for id in next_id..next_id + 10 {
                src.insert(id, (part(id), id * 10));
            }
            next_id += 10;
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
                .expect("MERGE must survive concurrent compactions");
            model.extend(src);
            r.version
        } else {
            append(&t, &mut model, &mut next_id, 20 + rng.below(30) as i64).await
        };
        history.push((version, model.clone()));
        tokio::time::sleep(Duration::from_millis(40)).await;
    }

    // Quiet now: the compactor's next passes leave every partition below the trigger
    // (4 small files): at most 3 files in each of the 2 partitions.
    let deadline = Instant::now() + Duration::from_secs(60);
    while file_count(&t).await > 6 {
        assert!(
            Instant::now() < deadline,
            "the compactor did not catch up: {} files",
            file_count(&t).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = http_get(port, "/metrics").expect("/metrics answers");
    let health = http_get(port, "/healthz").expect("/healthz answers");
    assert!(health.contains("200 OK"), "{health}");
    let mut child = reaper.0.take().unwrap();
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    let logs = std::fs::read_to_string(dir.path().join("compactor.log")).unwrap();
    assert!(!logs.contains("run failed"), "{logs}");

    // Content equals the model, now and at every version in between.
    assert_eq!(rows_at(&t, None).await, model_rows(&model));
    let latest = t.snapshot().await.unwrap().version();
    let model_at = |v: i64| {
        history
            .iter()
            .rev()
            .find(|(hv, _)| *hv <= v)
            .map(|(_, m)| m.clone())
            .unwrap()
    };
    for v in history[0].0..=latest {
        assert_eq!(
            rows_at(&t, Some(v)).await,
            model_rows(&model_at(v)),
            "version {v}"
        );
    }
    let history_entries = t.history(None).await.unwrap();
    let optimizes = history_entries
        .iter()
        .filter(|h| h.commit_info.operation() == Some("OPTIMIZE"))
        .count();
    assert!(optimizes >= 3, "the compactor ran repeatedly: {optimizes}");
    let compacted: f64 = metrics
        .lines()
        .find(|l| l.starts_with("shoal_compactor_files_compacted_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("files_compacted in /metrics:\n{metrics}"));
    assert!(compacted > 10.0, "{metrics}");
    assert!(metrics.contains("shoal_compactor_last_success_timestamp_seconds{"));

    // delta-rs reads every version the same.
    let Some(py) = python("compactor interop") else {
        return;
    };
    let dumps = dir.path().join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    run_python(&py, DUMP_ALL_VERSIONS, &[&uri, dumps.to_str().unwrap()]);
    for v in history[0].0..=latest {
        let theirs = rows_of(&read_parquet(&dumps.join(format!("v{v}.parquet"))));
        assert_eq!(theirs, model_rows(&model_at(v)), "delta-rs at version {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_compactor_mid_run_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let uri = path.to_str().unwrap().to_string();
    let t = Table::at(&uri).unwrap();
    let mut model = Model::new();
    let mut next_id = 0;
    let mut rng = Rng::new(11);
    let mut killed_mid_run = 0;
    // Kills land a random time after the run took its lease, inside a window that
    // shrinks whenever a run finished before its kill: on a fast machine a whole run
    // takes a few tens of milliseconds, on a slow one several hundred.
    let mut window_ms = 150;
    let mut round = 0;
    while killed_mid_run < 4 || round < 6 {
        assert!(round < 30, "only {killed_mid_run} kills landed mid-run");
        // Fresh small files every round, so every run has work to be killed in.
        for _ in 0..30 {
            append(&t, &mut model, &mut next_id, 300).await;
        }
        let mut child = Command::new(compactor())
            .args(["--once", "--table", &uri])
            // Small target files: many bins, a long enough run to be killed inside.
            .args(["--min-small-files", "2", "--target-size", "24KiB"])
            .args(["--owner", "killed-compactor", "--lease-ttl", "30s"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let leased = on_lease_acquired(&mut child);
        let _ = leased.recv_timeout(Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(rng.below(window_ms)));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        } else {
            window_ms = (window_ms / 2).max(2);
        }
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        assert_eq!(
            rows_at(&t, None).await,
            model_rows(&model),
            "after kill {round}"
        );
        round += 1;
    }
    eprintln!("{killed_mid_run} of {round} kills landed mid-run (window {window_ms} ms)");
    // Once more, killed right after it took the lease: its lease outlives it, so
    // another compactor keeps off...
    for _ in 0..30 {
        append(&t, &mut model, &mut next_id, 300).await;
    }
    let expected = model_rows(&model);
    let files_before = file_count(&t).await;
    let mut child = Command::new(compactor())
        .args(["--once", "--table", &uri])
        .args(["--min-small-files", "2", "--target-size", "24KiB"])
        .args(["--owner", "killed-compactor", "--lease-ttl", "30s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0 {
        if line.contains("lease acquired") {
            break;
        }
        line.clear();
    }
    assert!(line.contains("lease acquired"), "the run took the lease");
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(rows_at(&t, None).await, expected);
    let out = Command::new(compactor())
        .args(["--once", "--table", &uri, "--owner", "other"])
        .args(["--min-small-files", "2", "--target-size", "24KiB"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another compactor holds the lease"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...while the owner itself, restarted, takes its lease back and finishes.
    let out = Command::new(compactor())
        .args(["--once", "--table", &uri, "--owner", "killed-compactor"])
        .args(["--min-small-files", "2", "--target-size", "24KiB"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files_after = file_count(&t).await;
    assert!(
        files_after * 3 < files_before,
        "{files_before} -> {files_after} files"
    );
    assert_eq!(rows_at(&t, None).await, expected);
    // Killed runs leave only unreferenced files, which VACUUM removes.
    t.vacuum()
        .with_retention_hours(Some(0.0))
        .with_force(true)
        .execute()
        .await
        .unwrap();
    let on_disk = walk_parquet(&path);
    assert_eq!(on_disk, file_count(&t).await);
    assert_eq!(rows_at(&t, None).await, expected);
}

/// Drains the child's stderr on a thread (a full pipe would stall it) and signals
/// once the run logs that it took the table's lease.
fn on_lease_acquired(child: &mut Child) -> std::sync::mpsc::Receiver<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { break };
            if !sent && line.contains("lease acquired") {
                let _ = tx.send(());
                sent = true;
            }
        }
    });
    rx
}

fn walk_parquet(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if p.is_dir() && !name.starts_with('_') {
            n += walk_parquet(&p);
        } else if name.ends_with(".parquet") {
            n += 1;
        }
    }
    n
}

/// (table, start, end) lease intervals of one compactor, from its JSON logs.
fn lease_intervals(log: &str) -> Vec<(String, String, String)> {
    let mut open: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let msg = v["message"].as_str().unwrap_or_default();
        let table = v["table"].as_str().unwrap_or_default().to_string();
        let ts = v["timestamp"].as_str().unwrap_or_default().to_string();
        match msg {
            "lease acquired" => {
                open.insert(table, ts);
            }
            "releasing lease" => {
                if let Some(start) = open.remove(&table) {
                    out.push((table, start, ts));
                }
            }
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_compactors_on_one_warehouse_never_work_on_one_table_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let mut models = Vec::new();
    for name in ["t1", "t2", "ns/t3"] {
        let path = warehouse.join(name);
        models.push((
            path.clone(),
            small_files_table(path.to_str().unwrap(), 30, 50).await,
        ));
    }
    let spawn = |name: &str| {
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
        Reaper(Some(
            Command::new(compactor())
                .args(["--warehouse", warehouse.to_str().unwrap()])
                .args(["--interval", "200ms", "--jitter", "100ms"])
                .args(["--min-small-files", "2", "--max-concurrent", "2"])
                .args(["--log-format", "json", "--owner", name])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        ))
    };
    let mut a = spawn("compactor-a");
    let mut b = spawn("compactor-b");
    // Keep the tables busy while both run.
    let mut next_ids: Vec<i64> = models
        .iter()
        .map(|(_, m)| 1_000_000 + m.len() as i64)
        .collect();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        for (i, (path, model)) in models.iter_mut().enumerate() {
            let t = Table::at(path.to_str().unwrap()).unwrap();
            append(&t, model, &mut next_ids[i], 25).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for r in [&mut a, &mut b] {
        let mut child = r.0.take().unwrap();
        sigterm(&child);
        assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    }
    let log_a = std::fs::read_to_string(dir.path().join("compactor-a.log")).unwrap();
    let log_b = std::fs::read_to_string(dir.path().join("compactor-b.log")).unwrap();
    for log in [&log_a, &log_b] {
        for line in log.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            let level = v["level"].as_str().unwrap_or_default();
            assert!(level == "INFO" || level == "DEBUG", "{line}");
        }
    }
    let ia = lease_intervals(&log_a);
    let ib = lease_intervals(&log_b);
    assert!(
        !ia.is_empty() && !ib.is_empty(),
        "both compactors worked: {} and {} runs",
        ia.len(),
        ib.len()
    );
    // RFC 3339 timestamps with the same offset compare as strings.
    for (ta, sa, ea) in &ia {
        for (tb, sb, eb) in &ib {
            if ta == tb {
                assert!(
                    ea < sb || eb < sa,
                    "{ta}: compactor-a held [{sa}, {ea}] while compactor-b held [{sb}, {eb}]"
                );
            }
        }
    }
    for (path, model) in &models {
        let t = Table::at(path.to_str().unwrap()).unwrap();
        assert_eq!(rows_at(&t, None).await, model_rows(model), "{path:?}");
        assert!(file_count(&t).await < 30, "{path:?} was compacted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_properties_steer_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let uri = path.to_str().unwrap().to_string();
    let t = Table::at(&uri).unwrap();
    let mut model = Model::new();
    let rows: Vec<_> = (0..50).map(|id| (id, part(id), id * 10)).collect();
    let props = [
        ("shoal.compaction.zorderBy", "v"),
        ("shoal.compaction.minSmallFiles", "3"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    t.write(vec![batch(&rows)])
        .with_properties(props)
        .execute()
        .await
        .unwrap();
    for (id, p, v) in rows {
        model.insert(id, (p, v));
    }
    let mut next_id = 50;
    append_unpartitioned(&t, &mut model, &mut next_id, 50).await;
    let once = |args: &[&str]| {
        let out = Command::new(compactor())
            .args(["--once", "--table", &uri])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    once(&[]);
    assert_eq!(
        file_count(&t).await,
        2,
        "two files are below minSmallFiles = 3"
    );
    append_unpartitioned(&t, &mut model, &mut next_id, 50).await;
    once(&[]);
    let s = t.snapshot().await.unwrap();
    assert_eq!(s.num_files(), 1);
    let tag = s.files()[0]
        .tags
        .as_ref()
        .and_then(|t| t.get("shoal.zOrderBy").cloned().flatten());
    assert_eq!(
        tag.as_deref(),
        Some("v"),
        "Z-ordered by the property's columns"
    );
    assert_eq!(rows_at(&t, None).await, model_rows(&model));
    // A config [[table]] entry beats the property; `enabled = false` leaves it alone.
    for _ in 0..3 {
        append_unpartitioned(&t, &mut model, &mut next_id, 50).await;
    }
    let config = dir.path().join("compactor.toml");
    std::fs::write(
        &config,
        format!("[[table]]\nuri = \"{uri}\"\nenabled = false\n"),
    )
    .unwrap();
    once(&["--config", config.to_str().unwrap()]);
    assert_eq!(file_count(&t).await, 4);
    // A bad config fails at start-up, naming the key.
    std::fs::write(&config, "[service]\ninterval = \"often\"\n").unwrap();
    let out = Command::new(compactor())
        .args(["--once", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("service.interval"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn append_unpartitioned(t: &Table, model: &mut Model, next_id: &mut i64, n: i64) {
    let rows: Vec<_> = (*next_id..*next_id + n)
        .map(|id| (id, part(id), id * 10))
        .collect();
    *next_id += n;
    t.write(vec![batch(&rows)]).execute().await.unwrap();
    for (id, p, v) in rows {
        model.insert(id, (p, v));
    }
}
