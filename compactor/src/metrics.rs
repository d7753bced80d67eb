//! Counters for `/metrics`, rendered as Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::run::{Outcome, RunReport};

#[derive(Debug, Default, Clone)]
struct TableMetrics {
    runs_success: u64,
    runs_failure: u64,
    runs_skipped: u64,
    files_compacted: u64,
    files_written: u64,
    bytes_rewritten: u64,
    conflicts: u64,
    checkpoints: u64,
    vacuum_files_deleted: u64,
    log_files_deleted: u64,
    duration_sum: f64,
    duration_count: u64,
    last_success_s: Option<f64>,
    files: Option<u64>,
    bytes: Option<u64>,
}

/// All the service's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    tables: Mutex<BTreeMap<String, TableMetrics>>,
    watched: Mutex<usize>,
    loops: Mutex<u64>,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one run's report.
    pub fn record(&self, report: &RunReport) {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let m = tables.entry(report.table.clone()).or_default();
        match &report.outcome {
            Outcome::Failed(_) => m.runs_failure += 1,
            Outcome::Busy { .. } | Outcome::Disabled => m.runs_skipped += 1,
            Outcome::Done => {
                m.runs_success += 1;
                m.last_success_s = Some(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
            }
        }
        m.files_compacted += report.files_compacted as u64;
        m.files_written += report.files_written as u64;
        m.bytes_rewritten += report.bytes_rewritten;
        m.conflicts += report.conflicts as u64;
        m.checkpoints += u64::from(report.checkpoint_version.is_some());
        m.vacuum_files_deleted += report.vacuum_files_deleted as u64;
        m.log_files_deleted += report.log_files_deleted as u64;
        m.duration_sum += report.duration.as_secs_f64();
        m.duration_count += 1;
        if report.files_after.is_some() {
            m.files = report.files_after.map(|f| f as u64);
            m.bytes = report.bytes_after;
        }
    }

    pub fn set_watched(&self, n: usize) {
        *self.watched.lock().unwrap_or_else(|e| e.into_inner()) = n;
    }

    pub fn tick(&self) {
        *self.loops.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let tables = self
            .tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let watched = *self.watched.lock().unwrap_or_else(|e| e.into_inner());
        let loops = *self.loops.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let label = |t: &str| format!("{{table=\"{}\"}}", escape(t));
        family(
            "shoal_compactor_tables_watched",
            "gauge",
            "Tables the compactor watches.",
            vec![(String::new(), watched as f64)],
        );
        family(
            "shoal_compactor_scheduler_loops_total",
            "counter",
            "Scheduler iterations.",
            vec![(String::new(), loops as f64)],
        );
        let mut runs = Vec::new();
        for (t, m) in &tables {
            for (outcome, n) in [
                ("success", m.runs_success),
                ("failure", m.runs_failure),
                ("skipped", m.runs_skipped),
            ] {
                runs.push((
                    format!("{{table=\"{}\",outcome=\"{outcome}\"}}", escape(t)),
                    n as f64,
                ));
            }
        }
        family(
            "shoal_compactor_runs_total",
            "counter",
            "Compaction runs by outcome.",
            runs,
        );
        let per_table = |f: &Getter| -> Vec<(String, f64)> {
            tables
                .iter()
                .filter_map(|(t, m)| f(m).map(|v| (label(t), v)))
                .collect()
        };
        let counters: [(&str, &str, &Getter); 9] = [
            (
                "shoal_compactor_files_compacted_total",
                "Small files rewritten into larger ones.",
                &|m| Some(m.files_compacted as f64),
            ),
            (
                "shoal_compactor_files_written_total",
                "Files written by compaction.",
                &|m| Some(m.files_written as f64),
            ),
            (
                "shoal_compactor_bytes_rewritten_total",
                "Input bytes rewritten by compaction.",
                &|m| Some(m.bytes_rewritten as f64),
            ),
            (
                "shoal_compactor_conflicts_total",
                "Bins abandoned because a concurrent commit removed their input files.",
                &|m| Some(m.conflicts as f64),
            ),
            (
                "shoal_compactor_checkpoints_total",
                "Checkpoints written.",
                &|m| Some(m.checkpoints as f64),
            ),
            (
                "shoal_compactor_vacuum_files_deleted_total",
                "Data files deleted by VACUUM.",
                &|m| Some(m.vacuum_files_deleted as f64),
            ),
            (
                "shoal_compactor_log_files_deleted_total",
                "Expired log files deleted.",
                &|m| Some(m.log_files_deleted as f64),
            ),
            (
                "shoal_compactor_run_duration_seconds_sum",
                "Total time spent in runs.",
                &|m| Some(m.duration_sum),
            ),
            (
                "shoal_compactor_run_duration_seconds_count",
                "Number of timed runs.",
                &|m| Some(m.duration_count as f64),
            ),
        ];
        for (name, help, f) in counters {
            family(name, "counter", help, per_table(f));
        }
        family(
            "shoal_compactor_last_success_timestamp_seconds",
            "gauge",
            "When the last successful run ended (seconds since the epoch).",
            per_table(&|m| m.last_success_s),
        );
        family(
            "shoal_compactor_table_files",
            "gauge",
            "Active files after the last run.",
            per_table(&|m| m.files.map(|f| f as f64)),
        );
        family(
            "shoal_compactor_table_bytes",
            "gauge",
            "Active bytes after the last run.",
            per_table(&|m| m.bytes.map(|b| b as f64)),
        );
        out
    }
}

/// Reads one value of a table's metrics.
type Getter = dyn Fn(&TableMetrics) -> Option<f64>;

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
