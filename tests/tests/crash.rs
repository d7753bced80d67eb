//! Crash tests: a CLI writer (`shoal write`) killed with SIGKILL at random points, many
//! times, on local disk and on the S3 gateway. After every kill the table opens, every
//! acknowledged write is present exactly once, an unacknowledged write is either whole
//! or absent, and at the end VACUUM removes the orphaned data files.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::Int64Array;
use shoal_format::Table;
use shoal_tests::{s3_base, s3_uri, workspace_bin, Rng};

const ROWS: i64 = 3;

async fn id_counts(t: &Table) -> BTreeMap<i64, usize> {
    let snap = t.snapshot().await.expect("the table opens after a kill");
    let batches = t.scan(snap).with_columns(&["id"]).collect().await.unwrap();
    let mut counts = BTreeMap::new();
    for b in &batches {
        let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        for id in ids.values() {
            *counts.entry(*id).or_insert(0) += 1;
        }
    }
    counts
}

fn csv(dir: &std::path::Path, write: i64) -> std::path::PathBuf {
    let path = dir.join(format!("w{write}.csv"));
    let mut text = String::from("id,name\n");
    for r in 0..ROWS {
        text.push_str(&format!("{},w{write}\n", write * 100 + r));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `rounds` CLI writes against `uri`, killing each after a random delay of up to
/// about one write's duration. Returns (acknowledged, killed).
async fn kill_writers(uri: &str, rounds: i64, seed: u64) -> (usize, usize) {
    let shoal = workspace_bin("shoal-cli", "shoal");
    let dir = tempfile::tempdir().unwrap();
    let run = |write: i64| {
        Command::new(&shoal)
            .args(["write", uri])
            .arg(csv(dir.path(), write))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shoal")
    };
    // The first write creates the table; it also tells how long a write takes.
    let started = Instant::now();
    let out = run(0).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The first write also creates the table: later ones are faster, so the estimate
    // follows the writes that complete.
    let mut typical = started.elapsed().as_millis().max(5) as u64;
    let t = Table::at(uri).unwrap();
    let mut rng = Rng::new(seed);
    let mut acked = vec![0i64];
    let (mut killed, mut landed_unacked) = (0, 0);
    for write in 1..=rounds {
        let mut child = run(write);
        let spawned = Instant::now();
        // Anywhere from the start to about the end of a typical write.
        let delay = 1 + rng.below(typical);
        let deadline = Instant::now() + Duration::from_millis(delay);
        let mut status = None;
        while Instant::now() < deadline {
            if let Some(s) = child.try_wait().unwrap() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        match status {
            Some(s) => {
                typical = (typical + spawned.elapsed().as_millis().max(5) as u64) / 2;
                let out = child.wait_with_output().unwrap();
                assert!(s.success(), "{}", String::from_utf8_lossy(&out.stderr));
                acked.push(write);
            }
            None => {
                child.kill().unwrap();
                let s = child.wait().unwrap();
                if s.success() {
                    acked.push(write);
                } else {
                    killed += 1;
                }
            }
        }
        let counts = id_counts(&t).await;
        for w in 0..=write {
            let present: Vec<usize> = (0..ROWS)
                .map(|r| counts.get(&(w * 100 + r)).copied().unwrap_or(0))
                .collect();
            if acked.contains(&w) {
                assert_eq!(
                    present,
                    vec![1; ROWS as usize],
                    "{uri}: acknowledged write {w}"
                );
            } else {
                assert!(
                    present == vec![0; ROWS as usize] || present == vec![1; ROWS as usize],
                    "{uri}: killed write {w} is half-visible or doubled: {present:?}"
                );
                if w == write && present[0] == 1 {
                    landed_unacked += 1;
                }
            }
        }
    }
    eprintln!(
        "{uri}: {rounds} writers, {killed} killed ({landed_unacked} of them had committed), {} acknowledged; typical write {typical} ms",
        acked.len() - 1
    );
    // Orphans (data files of killed writers) go with VACUUM at zero retention.
    let result = t
        .vacuum()
        .with_retention_hours(Some(0.0))
        .with_force(true)
        .execute()
        .await
        .unwrap();
    let snap = t.snapshot().await.unwrap();
    let referenced = snap.num_files();
    let data_files = t
        .store()
        .list_all()
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.location.as_ref().ends_with(".parquet"))
        .filter(|m| !m.location.as_ref().contains("_delta_log"))
        .count();
    assert_eq!(
        data_files, referenced,
        "{uri}: after VACUUM only referenced data files remain ({} deleted)",
        result.files_deleted
    );
    eprintln!(
        "{uri}: VACUUM deleted {} orphaned files",
        result.files_deleted
    );
    (acked.len(), killed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_cli_writers_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("t").to_str().unwrap().to_string();
    let (_, killed) = kill_writers(&uri, 40, 11).await;
    assert!(killed > 0, "no writer was killed: the delays are too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_cli_writers_on_s3_lose_and_duplicate_nothing() {
    let Some(base) = s3_base("crash tests on S3") else {
        return;
    };
    let (_, killed) = kill_writers(&s3_uri(&base, "crash"), 15, 12).await;
    assert!(killed > 0, "no writer was killed: the delays are too long");
}
