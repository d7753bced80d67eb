//! The scheduler: discovers tables, runs each one every interval (plus jitter), at most
//! K at once, never two runs of one table at once, with exponential backoff on failure.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use object_store::path::Path;
use shoal_format::{StorageOptions, TableStore};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::run::{RunReport, Runner};
use crate::CompactorError;

/// The tables under a warehouse root: every folder with a `_delta_log/`, at the top
/// level or one namespace level down (`<root>/<table>` or `<root>/<ns>/<table>`).
/// One delimited listing of the root (and of each non-table folder), and per folder the
/// first page of its `_delta_log/` listing: on S3 one request each, however large the
/// table.
pub async fn discover(
    warehouse: &str,
    options: &StorageOptions,
) -> Result<Vec<String>, CompactorError> {
    let store = TableStore::from_uri_with_options(warehouse, options)?;
    let base = warehouse.trim_end_matches('/');
    let visible = |dir: &Path| {
        dir.filename()
            .filter(|n| !n.starts_with('.') && !n.starts_with('_'))
            .map(str::to_string)
    };
    let (_, top) = store.list_dir(store.root()).await?;
    let top: Vec<(String, Path)> = top
        .into_iter()
        .filter_map(|d| Some((visible(&d)?, d)))
        .collect();
    let probes = join_all(top.iter().map(|(_, d)| store.holds_table(d))).await;
    let mut found = BTreeSet::new();
    let mut namespaces = Vec::new();
    for ((name, dir), probe) in top.into_iter().zip(probes) {
        if probe? {
            found.insert(format!("{base}/{name}"));
        } else {
            namespaces.push((name, dir));
        }
    }
    let listed = join_all(namespaces.iter().map(|(_, d)| store.list_dir(d))).await;
    for ((ns, _), listed) in namespaces.iter().zip(listed) {
        let (_, subdirs) = listed?;
        let children: Vec<(String, Path)> = subdirs
            .into_iter()
            .filter_map(|d| Some((visible(&d)?, d)))
            .collect();
        let probes = join_all(children.iter().map(|(_, d)| store.holds_table(d))).await;
        for ((child, _), probe) in children.iter().zip(probes) {
            if probe? {
                found.insert(format!("{base}/{ns}/{child}"));
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// The tables to watch now: the listed ones plus the discovered ones.
pub async fn tables_to_watch(runner: &Runner) -> Vec<String> {
    let mut tables: BTreeSet<String> = runner
        .config
        .tables
        .iter()
        .map(|t| t.uri.trim_end_matches('/').to_string())
        .collect();
    if let Some(w) = &runner.config.service.warehouse {
        match discover(w, runner.config.service.storage_options.options()).await {
            Ok(found) => tables.extend(found),
            Err(e) => warn!(warehouse = %w, error = %e, "table discovery failed"),
        }
    }
    tables.into_iter().collect()
}

/// A small non-cryptographic random number for jitter (no `rand` dependency).
fn jitter(max: Duration, salt: u64) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    max.mul_f64((x % 1_000_000) as f64 / 1_000_000.0)
}

#[derive(Debug, Default)]
struct TableSchedule {
    next_due: Option<Instant>,
    failures: u32,
    running: bool,
}

/// Runs until `shutdown` turns true, then lets the runs in flight finish.
pub async fn run_daemon(
    runner: Runner,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = runner.config.clone();
    let interval = config.interval();
    let max_jitter = config.jitter();
    let max_backoff = config.max_backoff();
    let permits = Arc::new(Semaphore::new(config.service.max_concurrent_tables));
    let mut schedule: HashMap<String, TableSchedule> = HashMap::new();
    let mut running: JoinSet<(String, RunReport)> = JoinSet::new();
    let mut last_discovery: Option<Instant> = None;
    let mut tables: Vec<String> = Vec::new();
    let tick = (interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    info!(
        interval_ms = interval.as_millis() as u64,
        max_concurrent = config.service.max_concurrent_tables,
        owner = %runner.owner,
        "compactor started"
    );
    loop {
        if *shutdown.borrow() {
            break;
        }
        metrics.tick();
        if last_discovery.is_none_or(|t| t.elapsed() >= interval) {
            tables = tables_to_watch(&runner).await;
            metrics.set_watched(tables.len());
            last_discovery = Some(Instant::now());
        }
        let now = Instant::now();
        for (i, table) in tables.iter().enumerate() {
            let entry = schedule
                .entry(table.clone())
                .or_insert_with(|| TableSchedule {
                    // First runs spread over the jitter window.
                    next_due: Some(now + jitter(max_jitter, i as u64)),
                    ..Default::default()
                });
            if entry.running || entry.next_due.is_some_and(|d| d > now) {
                continue;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            entry.running = true;
            let runner = runner.clone();
            let table = table.clone();
            let cancel = shutdown.clone();
            running.spawn(async move {
                let report = runner.run(&table, cancel).await;
                drop(permit);
                (table, report)
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => {}
            Some(done) = running.join_next() => {
                if let Ok((table, report)) = done {
                    metrics.record(&report);
                    let s = schedule.entry(table.clone()).or_default();
                    s.running = false;
                    let wait = if report.failed() {
                        s.failures += 1;
                        let backoff = interval.saturating_mul(1u32 << s.failures.min(16)).min(max_backoff);
                        warn!(table = %table, failures = s.failures, retry_in_ms = backoff.as_millis() as u64, "backing off");
                        backoff
                    } else {
                        s.failures = 0;
                        interval
                    };
                    s.next_due = Some(Instant::now() + wait + jitter(max_jitter, table.len() as u64));
                }
            }
        }
    }
    info!(
        in_flight = running.len(),
        "shutting down: finishing runs in flight"
    );
    while let Some(done) = running.join_next().await {
        if let Ok((_, report)) = done {
            metrics.record(&report);
        }
    }
    info!("compactor stopped");
}

/// One pass over `tables`, at most K at once; the reports in table order.
pub async fn run_once(runner: &Runner, tables: &[String], metrics: &Metrics) -> Vec<RunReport> {
    let (_tx, cancel) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(runner.config.service.max_concurrent_tables));
    let mut set = JoinSet::new();
    for (i, t) in tables.iter().enumerate() {
        let runner = runner.clone();
        let t = t.clone();
        let permits = permits.clone();
        let cancel = cancel.clone();
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (i, runner.run(&t, cancel).await)
        });
    }
    let mut reports: Vec<(usize, RunReport)> = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            metrics.record(&r.1);
            reports.push(r);
        }
    }
    reports.sort_by_key(|(i, _)| *i);
    reports.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range() {
        for i in 0..100 {
            assert!(jitter(Duration::from_secs(10), i) <= Duration::from_secs(10));
        }
        assert_eq!(jitter(Duration::ZERO, 1), Duration::ZERO);
    }

    #[tokio::test]
    async fn discovers_tables_one_namespace_deep() {
        let dir = tempfile::tempdir().unwrap();
        for t in ["a", "ns/b", "ns/c", "_hidden/d", "empty"] {
            std::fs::create_dir_all(dir.path().join(t)).unwrap();
        }
        for t in ["a", "ns/b", "ns/c", "_hidden/d"] {
            let log = dir.path().join(t).join("_delta_log");
            std::fs::create_dir_all(&log).unwrap();
            std::fs::write(log.join("00000000000000000000.json"), "{}").unwrap();
        }
        let root = dir.path().to_str().unwrap();
        let found = discover(root, &StorageOptions::new()).await.unwrap();
        assert_eq!(
            found,
            vec![
                format!("{root}/a"),
                format!("{root}/ns/b"),
                format!("{root}/ns/c")
            ]
        );
    }
}
