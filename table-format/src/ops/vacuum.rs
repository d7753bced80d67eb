//! VACUUM: delete data files that no version inside the retention window references,
//! and untracked files (leftovers of failed writes) older than the window. Log cleanup:
//! delete expired `_delta_log/` entries behind a checkpoint so that every retained
//! version stays readable.
//!
//! The planning rules are pure ([`is_hidden`], [`VacuumPlan`], [`plan_log_cleanup`]);
//! [`VacuumBuilder`] and [`LogCleanupBuilder`] do the IO.
//!
//! ```no_run
//! # async fn demo(store: shoal_format::TableStore) -> shoal_format::Result<()> {
//! use shoal_format::ops::vacuum::{cleanup_expired_logs, VacuumBuilder};
//! let dry = VacuumBuilder::new(store.clone()).with_dry_run(true).execute().await?;
//! println!("{} files ({} bytes) would go", dry.files_deleted, dry.bytes_deleted);
//! let cleaned = cleanup_expired_logs(&store, None).await?;
//! println!("{} log files removed", cleaned.files_deleted);
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectMeta;
use serde_json::Value;
use tracing::{info, warn};

use super::progress::{Phase, PhaseGuard, Progress, Reporter};
use crate::error::{Error, Result};
use crate::log::{ListedFile, LogFileKind, LogFileName};
use crate::protocol::features::{self, SUPPORTED_WRITER_FEATURES};
use crate::protocol::partition::decode_add_path;
use crate::protocol::{Metadata, Protocol};
use crate::snapshot::{list_log, parse_interval_ms, Snapshot};
use crate::storage::TableStore;
use crate::transaction::Transaction;

/// Deletes in flight at once, by default.
pub const DEFAULT_DELETE_CONCURRENCY: usize = 8;

/// Directories listed at once while walking the table.
const LIST_CONCURRENCY: usize = 8;

/// `delta.logRetentionDuration` when the table does not set it: 30 days.
pub const DEFAULT_LOG_RETENTION_MS: i64 = 30 * 86_400_000;

/// Writer features that only shape the rows written, never which files exist, so a
/// vacuum that does not understand how to *write* them still cleans up correctly.
const VACUUM_SAFE_WRITER_FEATURES: &[&str] = &[
    "columnMapping",
    "identityColumns",
    // Deletion-vector files are kept through the descriptors of live files.
    "deletionVectors",
];

/// Checks "VACUUM Protocol Check": every reader and writer feature of the table must be
/// understood before files are deleted, since an unknown feature may keep files alive
/// in ways Shoal cannot see.
pub fn check_vacuum_protocol(protocol: &Protocol, metadata: &Metadata) -> Result<()> {
    features::check_read(protocol, metadata)?;
    if protocol.min_writer_version > 7 {
        return Err(Error::UnsupportedProtocol(format!(
            "minWriterVersion {} is beyond the writer versions Shoal supports (1 to 7)",
            protocol.min_writer_version
        )));
    }
    if protocol.min_writer_version == 7 {
        for f in protocol.writer_features.iter().flatten() {
            let known = SUPPORTED_WRITER_FEATURES.contains(&f.as_str())
                || VACUUM_SAFE_WRITER_FEATURES.contains(&f.as_str());
            if !known {
                return Err(Error::UnsupportedFeature {
                    kind: "writer",
                    feature: f.clone(),
                    action: "vacuum",
                });
            }
        }
    }
    Ok(())
}

/// Whether a file or directory name is hidden from VACUUM (Delta's rule): names that
/// start with `.` or `_` belong to other tools (`_spark_metadata`, `.crc` files,
/// `_delta_log`), except Delta's own `_change_data` / `_delta_index` and partition
/// directories of columns whose name starts with `_`.
pub fn is_hidden(name: &str, partition_columns: &[String]) -> bool {
    (name.starts_with('.') || name.starts_with('_'))
        && !name.starts_with("_delta_index")
        && !name.starts_with("_change_data")
        && !partition_columns.iter().any(|c| {
            name.strip_prefix(c.as_str())
                .is_some_and(|r| r.starts_with('='))
        })
}

/// The Z85 alphabet (ZeroMQ RFC 32), used by deletion vector file names.
const Z85: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

fn z85_decode(text: &str) -> Option<Vec<u8>> {
    let chunks = text.as_bytes().chunks_exact(5);
    if !chunks.remainder().is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 5 * 4);
    for chunk in chunks {
        let mut value: u64 = 0;
        for b in chunk {
            let digit = Z85.iter().position(|z| z == b)? as u64;
            value = value * 85 + digit;
        }
        let value = u32::try_from(value).ok()?;
        out.extend_from_slice(&value.to_be_bytes());
    }
    Some(out)
}

/// The table-relative file of a deletion vector stored relative to the table
/// (`storageType: "u"`): `<prefix>/deletion_vector_<uuid>.bin` ("Deletion Vector
/// Descriptor Schema"). `None` for inline or absolute DVs, or a malformed descriptor.
pub fn dv_relative_path(dv: &Value) -> Option<String> {
    if dv.get("storageType")?.as_str()? != "u" {
        return None;
    }
    let encoded = dv.get("pathOrInlineDv")?.as_str()?;
    let split = encoded.len().checked_sub(20)?;
    if !encoded.is_char_boundary(split) {
        return None;
    }
    let (prefix, id) = encoded.split_at(split);
    let raw = z85_decode(id)?;
    let uuid = uuid::Uuid::from_slice(&raw).ok()?;
    let name = format!("deletion_vector_{}.bin", uuid.hyphenated());
    Some(if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    })
}

/// The table-relative file of a deletion vector with an absolute path (`"p"`), when it
/// lies inside the table.
fn dv_absolute_relative(store: &TableStore, dv: &Value) -> Option<String> {
    if dv.get("storageType")?.as_str()? != "p" {
        return None;
    }
    let url = url::Url::parse(dv.get("pathOrInlineDv")?.as_str()?).ok()?;
    let location = Path::from_url_path(url.path()).ok()?;
    store.relative(&location)
}

/// Why VACUUM keeps or deletes a listed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileDecision {
    /// Under a hidden directory or itself hidden: never touched.
    Hidden,
    /// Referenced by the current version or by a tombstone inside the window.
    Referenced,
    /// Unreferenced but modified inside the window (possibly an in-flight write).
    TooRecent,
    /// Unreferenced and older than the window.
    Delete,
}

/// What VACUUM keeps: the pure half of the operation.
#[derive(Debug, Clone)]
pub struct VacuumPlan {
    /// Files modified at or after this instant (ms since the epoch) are kept.
    pub cutoff_ms: i64,
    /// Table-relative (decoded) paths that must stay.
    pub referenced: HashSet<String>,
    pub partition_columns: Vec<String>,
}

impl VacuumPlan {
    /// The plan for `snapshot`: its active files, its tombstones deleted at or after
    /// `cutoff_ms`, and the deletion vector files of both.
    pub fn new(snapshot: &Snapshot, cutoff_ms: i64) -> Self {
        let store = snapshot.store();
        let mut referenced = HashSet::with_capacity(snapshot.num_files());
        let mut keep = |path: &str, dv: Option<&Value>| {
            referenced.insert(decode_add_path(path));
            if let Some(dv) = dv {
                if let Some(p) = dv_relative_path(dv).or_else(|| dv_absolute_relative(store, dv)) {
                    referenced.insert(p);
                }
            }
        };
        for add in snapshot.files() {
            keep(&add.path, add.deletion_vector.as_ref());
        }
        for rm in snapshot.tombstones() {
            // Delta: a tombstone without a deletion timestamp counts as deleted at 0.
            if rm.deletion_timestamp.unwrap_or(0) >= cutoff_ms {
                keep(&rm.path, rm.deletion_vector.as_ref());
            }
        }
        VacuumPlan {
            cutoff_ms,
            referenced,
            partition_columns: snapshot.partition_columns().to_vec(),
        }
    }

    /// Decides one listed file by its table-relative path and modification time.
    pub fn decide(&self, relative: &str, modified_ms: i64) -> FileDecision {
        if relative
            .split('/')
            .any(|part| is_hidden(part, &self.partition_columns))
        {
            FileDecision::Hidden
        } else if self.referenced.contains(relative) {
            FileDecision::Referenced
        } else if modified_ms >= self.cutoff_ms {
            FileDecision::TooRecent
        } else {
            FileDecision::Delete
        }
    }
}

/// What a VACUUM did (or, on a dry run, would do).
#[derive(Debug, Clone)]
pub struct VacuumResult {
    /// The version whose state decided what is referenced.
    pub version: i64,
    pub dry_run: bool,
    /// The retention used, in ms; files unreferenced since before `now - retention` go.
    pub retention_ms: i64,
    /// Files deleted (on a dry run: files that would be deleted).
    pub files_deleted: usize,
    /// Bytes deleted (on a dry run: bytes that would be deleted).
    pub bytes_deleted: u64,
    /// Non-hidden files kept: referenced or modified inside the window.
    pub files_kept: usize,
    /// Directories that held listed files (the table root included).
    pub directories: usize,
    /// Table-relative paths of the files deleted (would be deleted), sorted.
    pub paths: Vec<String>,
    /// The `VACUUM START` and `VACUUM END` commits (none on dry runs or when there
    /// was nothing to delete).
    pub start_version: Option<i64>,
    pub end_version: Option<i64>,
}

/// `VACUUM table [RETAIN n HOURS] [DRY RUN]`.
#[derive(Debug, Clone)]
pub struct VacuumBuilder {
    store: TableStore,
    snapshot: Option<Snapshot>,
    retention_hours: Option<f64>,
    dry_run: bool,
    force: bool,
    now_ms: Option<i64>,
    concurrency: usize,
    progress: Reporter,
}

impl VacuumBuilder {
    pub fn new(store: TableStore) -> Self {
        VacuumBuilder {
            store,
            snapshot: None,
            retention_hours: None,
            dry_run: false,
            force: false,
            now_ms: None,
            concurrency: DEFAULT_DELETE_CONCURRENCY,
            progress: Reporter::default(),
        }
    }

    /// Reports the listing (files seen) and the deletes (files deleted of those to
    /// delete) to `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = Reporter::new(progress);
        self
    }

    /// Vacuum against a known snapshot instead of loading the latest.
    pub fn with_snapshot(mut self, snapshot: Snapshot) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    /// The retention window; `None` uses the table's `delta.deletedFileRetentionDuration`
    /// (default 7 days).
    pub fn with_retention_hours(mut self, hours: Option<f64>) -> Self {
        self.retention_hours = hours;
        self
    }

    /// List what would be deleted without deleting or committing anything.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Allow a retention shorter than the table's: readers of older versions and
    /// writers still in flight may then lose files.
    pub fn with_force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// The current time in ms since the epoch (tests, simulations); default: the clock.
    pub fn with_now_ms(mut self, now_ms: i64) -> Self {
        self.now_ms = Some(now_ms);
        self
    }

    /// How many deletes (and directory listings) are in flight at once.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    pub async fn execute(self) -> Result<VacuumResult> {
        let snapshot = match self.snapshot.clone() {
            Some(s) => s,
            None => Snapshot::load(&self.store, None).await?,
        };
        check_vacuum_protocol(snapshot.protocol(), snapshot.metadata())?;
        let retention_ms = self.retention_ms(&snapshot)?;
        let now = self
            .now_ms
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        let plan = VacuumPlan::new(&snapshot, now.saturating_sub(retention_ms));
        let listing = self.progress.phase(Phase::List, None);
        let walk = walk(&self.store, &plan, self.concurrency, &listing).await?;
        drop(listing);
        // A commit since the plan (RESTORE) may have revived files the plan would drop.
        let latest = snapshot.update().await?;
        let mut candidates = walk.candidates;
        if latest.version() != snapshot.version() {
            let now_live = VacuumPlan::new(&latest, plan.cutoff_ms);
            candidates.retain(|c| !now_live.referenced.contains(&c.relative));
        }
        candidates.sort_by(|a, b| a.relative.cmp(&b.relative));
        let bytes: u64 = candidates.iter().map(|c| c.size).sum();
        let mut result = VacuumResult {
            version: snapshot.version(),
            dry_run: self.dry_run,
            retention_ms,
            files_deleted: candidates.len(),
            bytes_deleted: bytes,
            files_kept: walk.kept,
            directories: walk.directories,
            paths: candidates.iter().map(|c| c.relative.clone()).collect(),
            start_version: None,
            end_version: None,
        };
        if self.dry_run || candidates.is_empty() {
            info!(
                table = self.store.uri(),
                files = result.files_deleted,
                bytes,
                dry_run = self.dry_run,
                "vacuum planned"
            );
            return Ok(result);
        }

        let mut start = Transaction::new(&latest, "VACUUM START")
            .with_parameter("retentionCheckEnabled", (!self.force).to_string())
            .with_parameter(
                "defaultRetentionMillis",
                latest.deleted_file_retention_ms().to_string(),
            )
            .with_metric("numFilesToDelete", candidates.len())
            .with_metric("sizeOfDataToDelete", bytes);
        if self.retention_hours.is_some() {
            start = start.with_parameter("specifiedRetentionMillis", retention_ms.to_string());
        }
        let started = start.commit().await?;
        result.start_version = Some(started.version);

        let deleting = self
            .progress
            .phase(Phase::Delete, Some(candidates.len() as u64));
        let mut deleted = Vec::with_capacity(candidates.len());
        let mut failure = None;
        let mut deletes = futures::stream::iter(candidates)
            .map(|c| {
                let store = self.store.clone();
                async move {
                    if c.staging {
                        store.delete_staging(&c.relative).await.map(|()| c)
                    } else {
                        store.delete(&c.location).await.map(|()| c)
                    }
                }
            })
            .buffer_unordered(self.concurrency);
        while let Some(r) = deletes.next().await {
            match r {
                Ok(c) => {
                    deleting.advance(1);
                    deleted.push(c);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(deletes);
        drop(deleting);
        deleted.sort_by(|a, b| a.relative.cmp(&b.relative));
        result.files_deleted = deleted.len();
        result.bytes_deleted = deleted.iter().map(|c| c.size).sum();
        result.paths = deleted.into_iter().map(|c| c.relative).collect();

        let status = if failure.is_some() {
            "FAILED"
        } else {
            "COMPLETED"
        };
        result.end_version = commit_vacuum_end(
            started.snapshot,
            status,
            result.files_deleted,
            result.directories,
        )
        .await;
        info!(
            table = self.store.uri(),
            files = result.files_deleted,
            bytes = result.bytes_deleted,
            status,
            "vacuum done"
        );
        match failure {
            Some(e) => Err(e),
            None => Ok(result),
        }
    }

    fn retention_ms(&self, snapshot: &Snapshot) -> Result<i64> {
        let table_ms = snapshot.deleted_file_retention_ms();
        let Some(hours) = self.retention_hours else {
            return Ok(table_ms);
        };
        if !hours.is_finite() || hours < 0.0 {
            return Err(Error::InvalidArgument(format!(
                "the VACUUM retention must be a non-negative number of hours, not {hours}"
            )));
        }
        let ms = (hours * 3_600_000.0).round().min(i64::MAX as f64) as i64;
        if ms < table_ms && !self.force {
            let setting = snapshot
                .metadata()
                .property("delta.deletedFileRetentionDuration")
                .map(|v| format!("`{v}`"))
                .unwrap_or_else(|| "not set, so the default `interval 7 days`".into());
            return Err(Error::NotAllowed(format!(
                "a VACUUM retention of {hours} hours is shorter than the table's \
                 delta.deletedFileRetentionDuration ({setting} = {} hours): readers of older \
                 versions and writers still in flight could lose files; force it to proceed \
                 anyway, or lower the table property",
                table_ms as f64 / 3_600_000.0
            )));
        }
        Ok(ms)
    }
}

/// Commits `VACUUM END`; the deletions already happened, so a failure to record them is
/// logged rather than returned. Retries on conflicts with concurrent metadata changes,
/// which cannot matter to a commit without actions.
async fn commit_vacuum_end(
    base: Snapshot,
    status: &str,
    deleted: usize,
    directories: usize,
) -> Option<i64> {
    let mut base = base;
    for _ in 0..3 {
        let txn = Transaction::new(&base, "VACUUM END")
            .with_parameter("status", status)
            .with_metric("numDeletedFiles", deleted)
            .with_metric("numVacuumedDirectories", directories);
        match txn.commit().await {
            Ok(c) => return Some(c.version),
            Err(Error::Conflict(_)) => match base.update().await {
                Ok(b) => base = b,
                Err(e) => {
                    warn!(error = %e, "could not record VACUUM END");
                    return None;
                }
            },
            Err(e) => {
                warn!(error = %e, "could not record VACUUM END");
                return None;
            }
        }
    }
    warn!("could not record VACUUM END: lost to concurrent metadata changes");
    None
}

/// A file VACUUM will delete.
#[derive(Debug, Clone)]
struct Candidate {
    location: Path,
    relative: String,
    size: u64,
    /// A local staging file of a killed write (deleted by name, never listed).
    staging: bool,
}

struct Walk {
    candidates: Vec<Candidate>,
    kept: usize,
    directories: usize,
}

/// Lists the table: the root one level deep, then every non-hidden top-level directory
/// recursively and concurrently, streaming; `_delta_log/` and other hidden directories
/// are never listed. Holds only the candidates, not the listing.
async fn walk(
    store: &TableStore,
    plan: &VacuumPlan,
    concurrency: usize,
    progress: &PhaseGuard<'_>,
) -> Result<Walk> {
    let (root_files, dirs) = store.list_dir(store.root()).await?;
    let dirs: Vec<Path> = dirs
        .into_iter()
        .filter(|d| {
            d.filename()
                .is_some_and(|n| !is_hidden(n, &plan.partition_columns))
        })
        .collect();
    let lister = store.clone();
    let listings = futures::stream::iter(dirs)
        .map(move |d| lister.list_stream(&d))
        .flatten_unordered(concurrency.max(LIST_CONCURRENCY));
    let mut entries = futures::stream::iter(root_files.into_iter().map(Ok))
        .chain(listings)
        .boxed();
    let mut out = Walk {
        candidates: Vec::new(),
        kept: 0,
        directories: 1,
    };
    let mut seen_dirs: HashSet<String> = HashSet::new();
    while let Some(entry) = entries.next().await {
        let meta: ObjectMeta = match entry {
            Ok(m) => m,
            // Deleted between the directory read and the stat.
            Err(Error::Storage(object_store::Error::NotFound { .. })) => continue,
            Err(e) => return Err(e),
        };
        progress.advance(1);
        let Some(relative) = store.relative(&meta.location) else {
            continue;
        };
        let decision = plan.decide(&relative, meta.last_modified.timestamp_millis());
        if decision == FileDecision::Hidden {
            continue;
        }
        if let Some((dir, _)) = relative.rsplit_once('/') {
            if !seen_dirs.contains(dir) {
                seen_dirs.insert(dir.to_string());
            }
        }
        match decision {
            FileDecision::Delete => out.candidates.push(Candidate {
                location: meta.location,
                relative,
                size: meta.size,
                staging: false,
            }),
            _ => out.kept += 1,
        }
    }
    // Local disk: staging files of writes killed midway, which listings skip. Never
    // referenced by the log, so they go once older than the retention window.
    let partition_columns = plan.partition_columns.clone();
    let leftovers = store
        .staging_leftovers(move |dir| !is_hidden(dir, &partition_columns))
        .await?;
    for (relative, size, modified) in leftovers {
        if plan.decide(&relative, modified) == FileDecision::Delete {
            out.candidates.push(Candidate {
                location: Path::from(relative.as_str()),
                relative,
                size,
                staging: true,
            });
        }
    }
    out.directories += seen_dirs.len();
    Ok(out)
}

// ---------------------------------------------------------------------------------
// Log cleanup ("Metadata Cleanup")
// ---------------------------------------------------------------------------------

/// Which log files expire: the pure half of log cleanup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCleanupPlan {
    /// The newest complete checkpoint at or before the newest commit older than the
    /// cutoff: every version from it on stays readable. `None`: nothing can go.
    pub checkpoint_version: Option<i64>,
    /// Files to delete, oldest version first.
    pub delete: Vec<ListedFile>,
}

/// Plans "Metadata Cleanup" over a listing of `_delta_log/`: find the newest commit
/// whose (monotonic) timestamp is at or before `cutoff_ms`, then the newest complete
/// classic checkpoint at or before it, C; delete the versioned files of versions below
/// C that were last modified at or before the cutoff. C, its commit, every later file,
/// `_last_checkpoint` and unversioned files stay.
pub fn plan_log_cleanup(files: &[ListedFile], cutoff_ms: i64) -> LogCleanupPlan {
    let mut commits: BTreeMap<i64, &ListedFile> = BTreeMap::new();
    let mut singles: HashSet<i64> = HashSet::new();
    let mut multis: BTreeMap<(i64, u32), HashSet<u32>> = BTreeMap::new();
    for f in files {
        let Some(p) = LogFileName::parse(&f.name) else {
            continue;
        };
        match p.kind {
            LogFileKind::Commit => {
                commits.insert(p.version, f);
            }
            LogFileKind::SingleCheckpoint => {
                singles.insert(p.version);
            }
            LogFileKind::MultiPartCheckpoint { part, parts } => {
                multis.entry((p.version, parts)).or_default().insert(part);
            }
            _ => {}
        }
    }
    // Commit timestamps made strictly increasing, as time travel sees them.
    let mut prev = i64::MIN;
    let mut cutoff_commit = None;
    for (v, f) in &commits {
        let t = if prev == i64::MIN {
            f.modified_ms
        } else {
            f.modified_ms.max(prev.saturating_add(1))
        };
        prev = t;
        if t <= cutoff_ms {
            cutoff_commit = Some(*v);
        } else {
            break;
        }
    }
    let complete = |v: i64| {
        singles.contains(&v)
            || multis
                .iter()
                .any(|((mv, parts), got)| *mv == v && (1..=*parts).all(|part| got.contains(&part)))
    };
    let checkpoint = cutoff_commit.and_then(|cut| {
        singles
            .iter()
            .copied()
            .chain(multis.keys().map(|(v, _)| *v))
            .filter(|v| *v <= cut && complete(*v))
            .max()
    });
    let Some(c) = checkpoint else {
        return LogCleanupPlan {
            checkpoint_version: None,
            delete: Vec::new(),
        };
    };
    let mut delete: Vec<(i64, ListedFile)> = files
        .iter()
        .filter_map(|f| {
            let p = LogFileName::parse(&f.name)?;
            let last_version = compacted_end(&f.name).unwrap_or(p.version);
            (last_version < c && f.modified_ms <= cutoff_ms).then(|| (p.version, f.clone()))
        })
        .collect();
    delete.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
    LogCleanupPlan {
        checkpoint_version: Some(c),
        delete: delete.into_iter().map(|(_, f)| f).collect(),
    }
}

/// The last version a log compaction file `<a>.<b>.compacted.json` covers.
fn compacted_end(name: &str) -> Option<i64> {
    let rest = name.get(21..)?.strip_suffix(".compacted.json")?;
    (rest.len() == 20 && rest.bytes().all(|b| b.is_ascii_digit()))
        .then(|| rest.parse().ok())
        .flatten()
}

/// What a log cleanup did.
#[derive(Debug, Clone)]
pub struct LogCleanupResult {
    /// The checkpoint the retained log starts at (`None`: nothing could be removed).
    pub checkpoint_version: Option<i64>,
    /// Files deleted from `_delta_log/` (on a dry run: that would be deleted).
    pub files_deleted: usize,
    pub bytes_deleted: u64,
    /// Their names, oldest version first.
    pub files: Vec<String>,
    /// Files last modified before this instant (ms since the epoch) could expire.
    pub cutoff_ms: i64,
    pub dry_run: bool,
    /// The table turns log cleanup off (`delta.enableExpiredLogCleanup=false`).
    pub disabled: bool,
}

/// Deletes expired `_delta_log/` entries: see [`plan_log_cleanup`].
#[derive(Debug, Clone)]
pub struct LogCleanupBuilder {
    store: TableStore,
    retention_ms: Option<i64>,
    now_ms: Option<i64>,
    dry_run: bool,
    concurrency: usize,
}

impl LogCleanupBuilder {
    pub fn new(store: TableStore) -> Self {
        LogCleanupBuilder {
            store,
            retention_ms: None,
            now_ms: None,
            dry_run: false,
            concurrency: DEFAULT_DELETE_CONCURRENCY,
        }
    }

    /// The log retention; `None` uses the table's `delta.logRetentionDuration`
    /// (default 30 days).
    pub fn with_retention_ms(mut self, retention_ms: Option<i64>) -> Self {
        self.retention_ms = retention_ms;
        self
    }

    /// The current time in ms since the epoch; default: the clock.
    pub fn with_now_ms(mut self, now_ms: i64) -> Self {
        self.now_ms = Some(now_ms);
        self
    }

    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    pub async fn execute(self) -> Result<LogCleanupResult> {
        let snapshot = Snapshot::load(&self.store, None).await?;
        check_vacuum_protocol(snapshot.protocol(), snapshot.metadata())?;
        let retention = match self.retention_ms {
            Some(ms) if ms < 0 => {
                return Err(Error::InvalidArgument(format!(
                    "the log retention must not be negative, not {ms} ms"
                )))
            }
            Some(ms) => ms,
            None => log_retention_ms(snapshot.metadata()),
        };
        let now = self
            .now_ms
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        let cutoff_ms = now.saturating_sub(retention);
        let mut result = LogCleanupResult {
            checkpoint_version: None,
            files_deleted: 0,
            bytes_deleted: 0,
            files: Vec::new(),
            cutoff_ms,
            dry_run: self.dry_run,
            disabled: false,
        };
        if snapshot
            .metadata()
            .property("delta.enableExpiredLogCleanup")
            == Some("false")
        {
            result.disabled = true;
            return Ok(result);
        }
        let listed = list_log(&self.store, None).await?;
        let plan = plan_log_cleanup(&listed, cutoff_ms);
        result.checkpoint_version = plan.checkpoint_version;
        if self.dry_run {
            result.files_deleted = plan.delete.len();
            result.bytes_deleted = plan.delete.iter().map(|f| f.size).sum();
            result.files = plan.delete.into_iter().map(|f| f.name).collect();
            return Ok(result);
        }
        // Oldest first, in order: an interrupted cleanup leaves a contiguous log.
        let mut deletes = futures::stream::iter(plan.delete)
            .map(|f| {
                let store = self.store.clone();
                async move { store.delete(&store.log_path(&f.name)).await.map(|()| f) }
            })
            .buffered(self.concurrency);
        while let Some(f) = deletes.try_next().await? {
            result.files_deleted += 1;
            result.bytes_deleted += f.size;
            result.files.push(f.name);
        }
        info!(
            table = self.store.uri(),
            files = result.files_deleted,
            checkpoint = ?result.checkpoint_version,
            "expired log files removed"
        );
        Ok(result)
    }
}

/// `delta.logRetentionDuration` in ms (default 30 days).
pub fn log_retention_ms(metadata: &Metadata) -> i64 {
    metadata
        .property("delta.logRetentionDuration")
        .and_then(parse_interval_ms)
        .unwrap_or(DEFAULT_LOG_RETENTION_MS)
}

/// Deletes the log entries older than `retention_ms` (default: the table's
/// `delta.logRetentionDuration`) behind a checkpoint. Scheduled by the compactor.
pub async fn cleanup_expired_logs(
    store: &TableStore,
    retention_ms: Option<i64>,
) -> Result<LogCleanupResult> {
    LogCleanupBuilder::new(store.clone())
        .with_retention_ms(retention_ms)
        .execute()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hidden_names_follow_delta() {
        let parts = vec!["_p".to_string()];
        for hidden in [
            "_delta_log",
            "_spark_metadata",
            ".hidden",
            "_SUCCESS",
            ".x.crc",
        ] {
            assert!(is_hidden(hidden, &parts), "{hidden}");
        }
        for visible in [
            "part-0.parquet",
            "a=1",
            "_p=3",
            "_change_data",
            "_delta_index",
        ] {
            assert!(!is_hidden(visible, &parts), "{visible}");
        }
        assert!(is_hidden("_pq=3", &parts));
    }

    #[test]
    fn deletion_vector_paths_match_the_protocol_examples() {
        let dv = |p: &str| json!({"storageType": "u", "pathOrInlineDv": p, "offset": 4});
        assert_eq!(
            dv_relative_path(&dv("ab^-aqEH.-t@S}K{vb[*k^")).as_deref(),
            Some("ab/deletion_vector_d2c639aa-8816-431a-aaf6-d3fe2512ff61.bin")
        );
        assert_eq!(
            dv_relative_path(&dv("R7QFX3rGXPFLhHGq&7g<")).as_deref(),
            Some("deletion_vector_a52eda8c-0a57-4636-814b-9c165388f7ca.bin")
        );
        assert_eq!(dv_relative_path(&dv("short")), None);
        let inline = json!({"storageType": "i", "pathOrInlineDv": "wi5b=000010000siXQKl0rr91000f55c8Xg0@@D72lkbi5=-{L"});
        assert_eq!(dv_relative_path(&inline), None);
    }

    #[test]
    fn decisions() {
        let plan = VacuumPlan {
            cutoff_ms: 1000,
            referenced: HashSet::from(["a=1/live.parquet".to_string()]),
            partition_columns: vec!["a".into()],
        };
        assert_eq!(plan.decide("a=1/live.parquet", 0), FileDecision::Referenced);
        assert_eq!(plan.decide("a=1/old.parquet", 999), FileDecision::Delete);
        assert_eq!(
            plan.decide("a=1/new.parquet", 1000),
            FileDecision::TooRecent
        );
        assert_eq!(plan.decide("_delta_log/x.json", 0), FileDecision::Hidden);
        assert_eq!(plan.decide("a=1/_tmp/old.parquet", 0), FileDecision::Hidden);
        assert_eq!(plan.decide("a=1/.old.crc", 0), FileDecision::Hidden);
    }

    fn f(name: &str, modified_ms: i64) -> ListedFile {
        ListedFile {
            name: name.into(),
            size: 10,
            modified_ms,
        }
    }

    fn commit(v: i64, t: i64) -> ListedFile {
        f(&format!("{v:020}.json"), t)
    }

    fn names(plan: &LogCleanupPlan) -> Vec<String> {
        plan.delete.iter().map(|f| f.name.clone()).collect()
    }

    #[test]
    fn log_cleanup_stops_at_the_checkpoint_before_the_cutoff() {
        // Commits 0..=25 at t = 100 * v; checkpoints at 10 and 20.
        let mut files: Vec<ListedFile> = (0..=25).map(|v| commit(v, 100 * v)).collect();
        files.push(f("00000000000000000010.checkpoint.parquet", 1000));
        files.push(f("00000000000000000020.checkpoint.parquet", 2000));
        files.push(f("00000000000000000003.crc", 300));
        files.push(f(
            "00000000000000000002.00000000000000000004.compacted.json",
            400,
        ));
        files.push(f(
            "00000000000000000008.00000000000000000012.compacted.json",
            1200,
        ));
        files.push(f("_last_checkpoint", 0));
        // Cutoff at version 14: the checkpoint at 10 bounds the cleanup.
        let plan = plan_log_cleanup(&files, 1450);
        assert_eq!(plan.checkpoint_version, Some(10));
        let deleted = names(&plan);
        assert_eq!(deleted.len(), 10 + 2, "{deleted:?}");
        assert!(deleted.contains(&"00000000000000000003.crc".to_string()));
        assert!(deleted.iter().all(|n| !n.contains("0008.0000")));
        assert!(!deleted.iter().any(|n| n.starts_with("_last")));
        assert!(!deleted.contains(&"00000000000000000010.json".to_string()));
        // Oldest first.
        assert_eq!(deleted[0], "00000000000000000000.json");
        // Everything expired: the latest checkpoint bounds it.
        let plan = plan_log_cleanup(&files, 1_000_000);
        assert_eq!(plan.checkpoint_version, Some(20));
        assert!(!names(&plan).contains(&"00000000000000000020.json".to_string()));
        // Before the first checkpoint: nothing.
        let plan = plan_log_cleanup(&files, 950);
        assert_eq!(plan.checkpoint_version, None);
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn log_cleanup_needs_complete_checkpoints_and_old_files() {
        let mut files: Vec<ListedFile> = (0..=6).map(|v| commit(v, 10 * v)).collect();
        files.push(f(
            "00000000000000000005.checkpoint.0000000001.0000000002.parquet",
            50,
        ));
        files.push(f("00000000000000000002.checkpoint.parquet", 20));
        let plan = plan_log_cleanup(&files, 1000);
        assert_eq!(plan.checkpoint_version, Some(2), "5 is incomplete");
        assert_eq!(names(&plan).len(), 2);
        // A file below the checkpoint but modified after the cutoff stays.
        files.push(f("00000000000000000001.crc", 5000));
        let plan = plan_log_cleanup(&files, 1000);
        assert_eq!(plan.checkpoint_version, Some(2));
        assert_eq!(
            names(&plan),
            vec![
                "00000000000000000000.json".to_string(),
                "00000000000000000001.json".to_string()
            ]
        );
    }

    #[test]
    fn commit_times_are_monotonic() {
        // Version 1's file is older than version 0's: it is treated as 0's time + 1.
        let mut files = vec![commit(0, 100), commit(1, 50), commit(2, 300)];
        files.push(f("00000000000000000001.checkpoint.parquet", 60));
        let plan = plan_log_cleanup(&files, 100);
        assert_eq!(plan.checkpoint_version, None);
        let plan = plan_log_cleanup(&files, 101);
        assert_eq!(plan.checkpoint_version, Some(1));
    }

    #[test]
    fn compacted_names() {
        assert_eq!(
            compacted_end("00000000000000000002.00000000000000000004.compacted.json"),
            Some(4)
        );
        assert_eq!(compacted_end("00000000000000000002.json"), None);
    }

    #[tokio::test]
    async fn progress_counts_the_files_listed_and_deleted() {
        use crate::ops::progress::recording::Recorder;
        use arrow::array::{Int64Array, RecordBatch};
        use arrow::datatypes::{DataType, Field, Schema};
        let dir = tempfile::tempdir().unwrap();
        let t = crate::table::Table::at(dir.path().to_str().unwrap()).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        for i in 0..4i64 {
            let ids = Int64Array::from_iter_values(i * 10..i * 10 + 10);
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids)]).unwrap();
            t.write(vec![batch]).execute().await.unwrap();
        }
        t.optimize().execute().await.unwrap();
        let later = chrono::Utc::now().timestamp_millis() + 3_600_000;
        let vacuum = || {
            t.vacuum()
                .with_retention_hours(Some(0.0))
                .with_force(true)
                .with_now_ms(later)
        };

        // A dry run lists only.
        let dry = Arc::new(Recorder::default());
        let r = vacuum()
            .with_dry_run(true)
            .with_progress(dry.clone())
            .execute()
            .await
            .unwrap();
        assert_eq!(r.files_deleted, 4);
        assert_eq!(dry.phases(), vec![(Phase::List, None, 5, true)]);

        let rec = Arc::new(Recorder::default());
        let r = vacuum().with_progress(rec.clone()).execute().await.unwrap();
        assert_eq!(r.files_deleted, 4);
        assert_eq!(
            rec.phases(),
            vec![
                (Phase::List, None, 5, true),
                (Phase::Delete, Some(4), 4, true)
            ]
        );
    }
}
