//! One run over one table: take the lease, compact (bin-pack or Z-order) within the
//! byte budget, checkpoint when due, VACUUM and clean the log on their own schedules,
//! release the lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_format::ops::optimize::OptimizeBuilder;
use shoal_format::ops::vacuum::{LogCleanupBuilder, VacuumBuilder};
use shoal_format::{Snapshot, TableStore};
use tokio::sync::{watch, Mutex};
use tracing::{info, warn};

use crate::config::{Config, Policy};
use crate::lease::{Acquire, Lease};
use crate::CompactorError;

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The run finished (whether or not there was anything to do).
    Done,
    /// Another compactor holds the table's lease.
    Busy { owner: String },
    /// `shoal.compaction.enabled = false`.
    Disabled,
    /// The run failed; the table is untouched by the failed step.
    Failed(String),
}

/// What one run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub table: String,
    pub outcome: Outcome,
    pub version_before: Option<i64>,
    pub version_after: Option<i64>,
    pub files_before: Option<usize>,
    pub files_after: Option<usize>,
    pub bytes_before: Option<u64>,
    pub bytes_after: Option<u64>,
    /// Files removed by compaction, and the files written in their place.
    pub files_compacted: usize,
    pub files_written: usize,
    pub bytes_rewritten: u64,
    /// Bins abandoned because a concurrent commit removed one of their inputs.
    pub conflicts: usize,
    pub checkpoint_version: Option<i64>,
    pub vacuum_files_deleted: usize,
    pub log_files_deleted: usize,
    pub duration: Duration,
}

impl RunReport {
    fn new(table: &str) -> Self {
        RunReport {
            table: table.to_string(),
            outcome: Outcome::Done,
            version_before: None,
            version_after: None,
            files_before: None,
            files_after: None,
            bytes_before: None,
            bytes_after: None,
            files_compacted: 0,
            files_written: 0,
            bytes_rewritten: 0,
            conflicts: 0,
            checkpoint_version: None,
            vacuum_files_deleted: 0,
            log_files_deleted: 0,
            duration: Duration::ZERO,
        }
    }

    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_))
    }
}

/// Runs maintenance on tables; shared by the daemon and `--once`.
#[derive(Clone)]
pub struct Runner {
    pub config: Arc<Config>,
    pub owner: String,
}

fn totals(s: &Snapshot) -> (usize, u64) {
    let files = s.files();
    let bytes = files.iter().map(|f| f.size.max(0) as u64).sum();
    (files.len(), bytes)
}

impl Runner {
    /// One run over `uri`. Never panics; failures come back in the report. A set
    /// `cancel` stops the run between steps (a started compaction commits or fails
    /// first); the lease is always released.
    pub async fn run(&self, uri: &str, cancel: watch::Receiver<bool>) -> RunReport {
        let started = Instant::now();
        let mut report = RunReport::new(uri);
        info!(table = uri, owner = %self.owner, "run started");
        if let Err(e) = self.run_steps(uri, &cancel, &mut report).await {
            report.outcome = Outcome::Failed(e.to_string());
        }
        report.duration = started.elapsed();
        log_report(&report);
        report
    }

    async fn run_steps(
        &self,
        uri: &str,
        cancel: &watch::Receiver<bool>,
        report: &mut RunReport,
    ) -> Result<(), CompactorError> {
        let options = self.config.storage_options_for(uri);
        let store = TableStore::from_uri_with_options(uri, options.options())?;
        let snapshot = Snapshot::load(&store, None).await?;
        let properties = snapshot
            .metadata()
            .configuration
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect();
        let policy = self.config.policy_for(uri, &properties)?;
        if !policy.enabled {
            report.outcome = Outcome::Disabled;
            return Ok(());
        }
        let lease = match Lease::acquire(&store, &self.owner, self.config.lease_ttl()).await? {
            Acquire::Acquired(l) => l,
            Acquire::Busy { owner, .. } => {
                report.outcome = Outcome::Busy { owner };
                return Ok(());
            }
        };
        info!(table = uri, owner = %self.owner, "lease acquired");
        // The previous holder may have committed since the snapshot was read.
        let snapshot = match snapshot.update().await {
            Ok(s) => s,
            Err(e) => {
                let _ = lease.release().await;
                return Err(e.into());
            }
        };
        let lease = Arc::new(Mutex::new(lease));
        // Renew the lease while the run goes on; a lost lease stops the run at the next
        // step boundary (the commit protocol keeps a step in flight safe regardless).
        let (lost_tx, lost_rx) = watch::channel(false);
        let renewer = {
            let lease = lease.clone();
            let period = (self.config.lease_ttl() / 3).max(Duration::from_millis(100));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(period).await;
                    if let Err(e) = lease.lock().await.renew().await {
                        warn!(error = %e, "lease renewal failed; stopping after this step");
                        let _ = lost_tx.send(true);
                        return;
                    }
                }
            })
        };
        let result = self
            .maintain(&store, snapshot, &policy, cancel, &lost_rx, &lease, report)
            .await;
        renewer.abort();
        let _ = renewer.await;
        if !*lost_rx.borrow() {
            let lease = Arc::try_unwrap(lease).map(Mutex::into_inner).map_err(|_| {
                CompactorError::LeaseLost {
                    table: uri.to_string(),
                }
            });
            match lease {
                Ok(mut lease) => {
                    if result.is_ok() {
                        lease.state.last_success_ms = Some(chrono::Utc::now().timestamp_millis());
                    }
                    info!(table = uri, owner = %self.owner, "releasing lease");
                    if let Err(e) = lease.release().await {
                        warn!(table = uri, error = %e, "could not release the lease; it will expire");
                    }
                }
                Err(e) => warn!(table = uri, error = %e, "lease still shared; it will expire"),
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn maintain(
        &self,
        store: &TableStore,
        snapshot: Snapshot,
        policy: &Policy,
        cancel: &watch::Receiver<bool>,
        lost: &watch::Receiver<bool>,
        lease: &Arc<Mutex<Lease>>,
        report: &mut RunReport,
    ) -> Result<(), CompactorError> {
        let stop = || *cancel.borrow() || *lost.borrow();
        let (files, bytes) = totals(&snapshot);
        report.version_before = Some(snapshot.version());
        report.files_before = Some(files);
        report.bytes_before = Some(bytes);

        // 1. Compaction (bin-packing, or Z-order when configured).
        let mut optimize = OptimizeBuilder::new(store.clone())
            .with_snapshot(snapshot.clone())
            .with_trigger(policy.trigger)
            .with_max_input_bytes(policy.max_bytes_per_run);
        if let Some(t) = policy.target_file_size {
            optimize = optimize.with_target_size(t);
        }
        if !policy.zorder_by.is_empty() {
            optimize = optimize.with_zorder_by(&policy.zorder_by);
        }
        let optimized = optimize.execute().await?;
        report.files_compacted = optimized.files_removed;
        report.files_written = optimized.files_added;
        report.bytes_rewritten = optimized.bytes_before.max(0) as u64;
        report.conflicts = optimized.bins_abandoned;
        let mut snapshot = optimized.snapshot;
        if stop() {
            return self.finish(snapshot, report);
        }

        // 2. A checkpoint when the log has grown past the interval without one.
        let interval = policy
            .checkpoint_interval
            .unwrap_or_else(|| snapshot.checkpoint_interval());
        let since = snapshot.version() - snapshot.checkpoint_version().unwrap_or(-1);
        // Also right after a compaction: its checkpoint is small (few files are left)
        // and spares every reader the replay of the commit that removed many.
        let compacted = report.files_compacted > 0 && since > 0;
        if snapshot.version() > 0 && (since >= interval || compacted) {
            let cp = snapshot.write_checkpoint().await?;
            report.checkpoint_version = Some(cp.version);
        }
        if stop() {
            return self.finish(snapshot, report);
        }

        let now = chrono::Utc::now().timestamp_millis();
        let due = |last: Option<i64>, every: Option<Duration>| match (last, every) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(last), Some(every)) => now - last >= every.as_millis() as i64,
        };
        // 3. VACUUM on its own, slower schedule.
        let state = lease.lock().await.state.clone();
        if due(state.last_vacuum_ms, policy.vacuum_interval) {
            let vacuum = VacuumBuilder::new(store.clone())
                .with_snapshot(snapshot.clone())
                .with_retention_hours(policy.vacuum_retention.map(|d| d.as_secs_f64() / 3600.0))
                .execute()
                .await?;
            report.vacuum_files_deleted = vacuum.files_deleted;
            lease.lock().await.state.last_vacuum_ms = Some(now);
            snapshot = snapshot.update().await?;
        }
        if stop() {
            return self.finish(snapshot, report);
        }

        // 4. Expired log entries, also on their own schedule.
        if due(state.last_log_cleanup_ms, policy.log_cleanup_interval) {
            let cleaned = LogCleanupBuilder::new(store.clone()).execute().await?;
            report.log_files_deleted = cleaned.files_deleted;
            lease.lock().await.state.last_log_cleanup_ms = Some(now);
        }
        self.finish(snapshot, report)
    }

    fn finish(&self, snapshot: Snapshot, report: &mut RunReport) -> Result<(), CompactorError> {
        let (files, bytes) = totals(&snapshot);
        report.version_after = Some(snapshot.version());
        report.files_after = Some(files);
        report.bytes_after = Some(bytes);
        Ok(())
    }
}

fn log_report(r: &RunReport) {
    let duration_ms = r.duration.as_millis() as u64;
    match &r.outcome {
        Outcome::Done => info!(
            table = %r.table,
            version_before = r.version_before,
            version_after = r.version_after,
            files_before = r.files_before,
            files_after = r.files_after,
            bytes_before = r.bytes_before,
            bytes_after = r.bytes_after,
            files_compacted = r.files_compacted,
            files_written = r.files_written,
            bytes_rewritten = r.bytes_rewritten,
            conflicts = r.conflicts,
            checkpoint = r.checkpoint_version,
            vacuum_files_deleted = r.vacuum_files_deleted,
            log_files_deleted = r.log_files_deleted,
            duration_ms,
            "run finished"
        ),
        Outcome::Busy { owner } => info!(
            table = %r.table,
            holder = %owner,
            duration_ms,
            "run skipped: another compactor holds the lease"
        ),
        Outcome::Disabled => {
            info!(table = %r.table, "run skipped: compaction disabled by table property")
        }
        Outcome::Failed(e) => warn!(table = %r.table, error = %e, duration_ms, "run failed"),
    }
}
