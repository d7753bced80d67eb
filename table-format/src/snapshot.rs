//! Log replay into an immutable [`Snapshot`]; time travel by version and timestamp.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use futures::{StreamExt, TryStreamExt};
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::log::{
    self, checkpoint::read_checkpoint_actions, path::listing_offset, LastCheckpoint, ListedFile,
    LogSegment,
};
use crate::protocol::features::{self, ColumnMapping};
use crate::protocol::{Action, Add, DomainMetadata, Metadata, Protocol, Remove, StructType, Txn};
use crate::storage::TableStore;

/// How many log files are fetched at once while loading.
const LOG_READ_CONCURRENCY: usize = 32;

/// The state of a table at one version. Immutable; share it behind `Arc`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    store: TableStore,
    version: i64,
    protocol: Protocol,
    metadata: Metadata,
    schema: StructType,
    arrow_schema: SchemaRef,
    /// Persistent maps (also `txns` and `domains`): a snapshot derived by one commit
    /// shares all but the changed entries with its parent, so commits cost
    /// O(changes), not O(files).
    files: FileMap<Add>,
    tombstones: FileMap<Remove>,
    txns: imbl::HashMap<String, Txn>,
    domains: imbl::HashMap<String, DomainMetadata>,
    /// Commit timestamp of this version (ms since the epoch).
    timestamp: i64,
    /// The checkpoint this snapshot was loaded from, if any.
    checkpoint_version: Option<i64>,
}

/// Files (or tombstones) keyed by [`file_key`].
pub type FileMap<T> = imbl::HashMap<String, Arc<T>>;

/// The result of replaying actions in order. Pure.
#[derive(Debug, Default, Clone)]
pub struct ReplayState {
    pub protocol: Option<Protocol>,
    pub metadata: Option<Metadata>,
    pub files: FileMap<Add>,
    pub tombstones: FileMap<Remove>,
    pub txns: imbl::HashMap<String, Txn>,
    pub domains: imbl::HashMap<String, DomainMetadata>,
}

/// The key a file is tracked by: its decoded path plus its deletion vector id.
pub fn file_key(path: &str, dv: Option<&serde_json::Value>) -> String {
    let mut key = crate::protocol::partition::decode_add_path(path);
    if let Some(dv) = dv {
        let id = format!(
            "{}{}{}",
            dv.get("storageType").and_then(|v| v.as_str()).unwrap_or(""),
            dv.get("pathOrInlineDv")
                .and_then(|v| v.as_str())
                .unwrap_or(""),
            dv.get("offset").map(|v| v.to_string()).unwrap_or_default()
        );
        key.push('#');
        key.push_str(&id);
    }
    key
}

impl ReplayState {
    /// Applies the actions of one commit (or a checkpoint) in log order.
    pub fn apply(&mut self, actions: impl IntoIterator<Item = Action>) {
        for action in actions {
            match action {
                Action::Add(add) => {
                    let key = file_key(&add.path, add.deletion_vector.as_ref());
                    self.tombstones.remove(&key);
                    self.files.insert(key, Arc::new(add));
                }
                Action::Remove(rm) => {
                    let key = file_key(&rm.path, rm.deletion_vector.as_ref());
                    self.files.remove(&key);
                    self.tombstones.insert(key, Arc::new(rm));
                }
                Action::Protocol(p) => self.protocol = Some(p),
                Action::Metadata(m) => self.metadata = Some(m),
                Action::Txn(t) => {
                    self.txns.insert(t.app_id.clone(), t);
                }
                Action::DomainMetadata(d) => {
                    if d.removed {
                        self.domains.remove(&d.domain);
                    } else {
                        self.domains.insert(d.domain.clone(), d);
                    }
                }
                Action::CommitInfo(_) | Action::Other(..) => {}
            }
        }
    }
}

impl Snapshot {
    /// Loads the latest version, or `version` when given.
    pub async fn load(store: &TableStore, version: Option<i64>) -> Result<Snapshot> {
        if let Some(v) = version {
            if v < 0 {
                return Err(Error::VersionNotFound {
                    version: v,
                    reason: "versions start at 0".into(),
                });
            }
        }
        let hint = read_last_checkpoint(store).await;
        let usable_hint = hint.filter(|h| version.is_none_or(|v| h.version <= v));
        let segment = match usable_hint {
            Some(h) => {
                let probed = if store.is_local() {
                    probe_local_log(store, &h, version).await?
                } else {
                    None
                };
                let listed = match probed {
                    Some(files) => files,
                    None => list_log(store, Some(&listing_offset(h.version))).await?,
                };
                match log::select_segment(&listed, version, store.uri()) {
                    Ok(seg) if seg.checkpoint_version.is_some() => seg,
                    // The hint points at a checkpoint that is gone or incomplete.
                    _ => {
                        debug!(
                            hint = h.version,
                            "stale _last_checkpoint; listing the whole log"
                        );
                        let listed = list_log(store, None).await?;
                        log::select_segment(&listed, version, store.uri())?
                    }
                }
            }
            None => {
                let listed = list_log(store, None).await?;
                log::select_segment(&listed, version, store.uri())?
            }
        };
        Self::from_segment(store, &segment).await
    }

    async fn from_segment(store: &TableStore, segment: &LogSegment) -> Result<Snapshot> {
        let mut state = ReplayState::default();
        // Checkpoint parts first, then the commits after them.
        let parts: Vec<Vec<Action>> = futures::stream::iter(segment.checkpoint_files.clone())
            .map(|f: ListedFile| {
                let store = store.clone();
                async move {
                    let path = store.log_path(&f.name);
                    let data = store.get_opt(&path).await?.ok_or_else(|| {
                        Error::corrupt(&f.name, "checkpoint file disappeared while loading")
                    })?;
                    let name = f.name.clone();
                    tokio::task::spawn_blocking(move || read_checkpoint_actions(data, &name))
                        .await
                        .map_err(|e| Error::Task(e.to_string()))?
                }
            })
            .buffered(4)
            .try_collect()
            .await?;
        for actions in parts {
            state.apply(actions);
        }
        let commits = read_commits(store, &segment.commits).await?;
        let mut timestamp = segment
            .checkpoint_files
            .first()
            .map(|f| f.modified_ms)
            .unwrap_or(0);
        for (v, f, actions) in commits {
            let ict = actions.iter().find_map(|a| match a {
                Action::CommitInfo(ci) => ci.in_commit_timestamp(),
                _ => None,
            });
            state.apply(actions);
            timestamp = match (ict, state.metadata.as_ref()) {
                (Some(t), Some(m)) if ict_enabled_at(m, v) => t,
                _ => f.modified_ms,
            };
        }
        Self::from_state(
            store.clone(),
            segment.version,
            state,
            timestamp,
            segment.checkpoint_version,
        )
    }

    fn from_state(
        store: TableStore,
        version: i64,
        state: ReplayState,
        timestamp: i64,
        checkpoint_version: Option<i64>,
    ) -> Result<Snapshot> {
        let protocol = state.protocol.ok_or_else(|| {
            Error::corrupt(
                store.uri(),
                format!("no protocol action at version {version}"),
            )
        })?;
        let metadata = state.metadata.ok_or_else(|| {
            Error::corrupt(
                store.uri(),
                format!("no metaData action at version {version}"),
            )
        })?;
        features::check_read(&protocol, &metadata)?;
        let schema = StructType::from_json(&metadata.schema_string)?;
        let arrow_schema = Arc::new(schema.to_arrow()?);
        Ok(Snapshot {
            store,
            version,
            protocol,
            metadata,
            schema,
            arrow_schema,
            files: state.files,
            tombstones: state.tombstones,
            txns: state.txns,
            domains: state.domains,
            timestamp,
            checkpoint_version,
        })
    }

    /// The snapshot of a table whose whole log is `actions` (a freshly created table).
    pub fn from_actions(
        store: &TableStore,
        version: i64,
        actions: &[Action],
        timestamp: i64,
    ) -> Result<Snapshot> {
        let mut state = ReplayState::default();
        state.apply(actions.iter().cloned());
        Self::from_state(store.clone(), version, state, timestamp, None)
    }

    /// The snapshot after a commit of `actions` at `version` on top of this one.
    /// Used by writers to move forward without re-reading the log.
    pub fn apply_commit(
        &self,
        version: i64,
        actions: &[Action],
        timestamp: i64,
    ) -> Result<Snapshot> {
        let mut state = ReplayState {
            protocol: Some(self.protocol.clone()),
            metadata: Some(self.metadata.clone()),
            files: self.files.clone(),
            tombstones: self.tombstones.clone(),
            txns: self.txns.clone(),
            domains: self.domains.clone(),
        };
        state.apply(actions.iter().cloned());
        let changes_table = actions
            .iter()
            .any(|a| matches!(a, Action::Metadata(_) | Action::Protocol(_)));
        if changes_table {
            return Self::from_state(
                self.store.clone(),
                version,
                state,
                timestamp,
                self.checkpoint_version,
            );
        }
        // Same protocol and metadata: keep the parsed schema.
        Ok(Snapshot {
            store: self.store.clone(),
            version,
            protocol: self.protocol.clone(),
            metadata: self.metadata.clone(),
            schema: self.schema.clone(),
            arrow_schema: self.arrow_schema.clone(),
            files: state.files,
            tombstones: state.tombstones,
            txns: state.txns,
            domains: state.domains,
            timestamp,
            checkpoint_version: self.checkpoint_version,
        })
    }

    /// Catches up with commits made after this snapshot (reads only the new commits).
    pub async fn update(&self) -> Result<Snapshot> {
        let listed = list_log(&self.store, Some(&listing_offset(self.version + 1))).await?;
        let commits: Vec<(i64, ListedFile)> = listed
            .into_iter()
            .filter_map(|f| {
                let p = log::LogFileName::parse(&f.name)?;
                (p.kind == log::LogFileKind::Commit && p.version > self.version)
                    .then_some((p.version, f))
            })
            .collect();
        if commits.is_empty() {
            return Ok(self.clone());
        }
        let mut snap = self.clone();
        for (v, f, actions) in read_commits(&self.store, &commits).await? {
            if v != snap.version + 1 {
                return Err(Error::corrupt(
                    self.store.uri(),
                    format!("commit {} is missing", snap.version + 1),
                ));
            }
            let ts = commit_timestamp(&actions, &snap.metadata, v).unwrap_or(f.modified_ms);
            snap = snap.apply_commit(v, &actions, ts)?;
        }
        Ok(snap)
    }

    /// Loads the latest version committed at or before `timestamp_ms`.
    pub async fn load_at_timestamp(store: &TableStore, timestamp_ms: i64) -> Result<Snapshot> {
        let version = version_at_timestamp(store, timestamp_ms).await?;
        Self::load(store, Some(version)).await
    }

    pub fn store(&self) -> &TableStore {
        &self.store
    }
    pub fn version(&self) -> i64 {
        self.version
    }
    pub fn protocol(&self) -> &Protocol {
        &self.protocol
    }
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    pub fn schema(&self) -> &StructType {
        &self.schema
    }
    pub fn arrow_schema(&self) -> SchemaRef {
        self.arrow_schema.clone()
    }
    pub fn partition_columns(&self) -> &[String] {
        &self.metadata.partition_columns
    }
    /// Commit timestamp of this version, ms since the epoch.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }
    pub fn checkpoint_version(&self) -> Option<i64> {
        self.checkpoint_version
    }
    pub fn column_mapping(&self) -> ColumnMapping {
        features::column_mapping(&self.metadata)
    }

    /// The active data files, ordered by path.
    pub fn files(&self) -> Vec<Arc<Add>> {
        let mut files: Vec<Arc<Add>> = self.files.values().cloned().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    pub fn num_files(&self) -> usize {
        self.files.len()
    }

    /// Is the file (by decoded path and DV) active in this snapshot?
    pub fn contains_file(&self, key: &str) -> bool {
        self.files.contains_key(key)
    }

    pub fn tombstones(&self) -> Vec<Arc<Remove>> {
        self.tombstones.values().cloned().collect()
    }

    /// The last version committed by an application id (Delta `txn`).
    pub fn app_transaction_version(&self, app_id: &str) -> Option<i64> {
        self.txns.get(app_id).map(|t| t.version)
    }

    pub fn app_transactions(&self) -> &imbl::HashMap<String, Txn> {
        &self.txns
    }

    pub fn domain_metadata(&self) -> &imbl::HashMap<String, DomainMetadata> {
        &self.domains
    }

    /// Total bytes and rows (rows when every file has stats) of the active files.
    pub fn totals(&self) -> (i64, Option<i64>) {
        let mut bytes = 0;
        let mut rows = Some(0i64);
        for f in self.files.values() {
            bytes += f.size;
            rows = match (
                rows,
                crate::protocol::stats::num_records(f.stats.as_deref()),
            ) {
                (Some(r), Some(n)) => Some(r + n),
                _ => None,
            };
        }
        (bytes, rows)
    }

    /// The actions a checkpoint of this version holds.
    pub fn checkpoint_actions(&self, now_ms: i64) -> Vec<Action> {
        let retention = self.deleted_file_retention_ms();
        let mut out = Vec::with_capacity(self.files.len() + 4);
        out.push(Action::Protocol(self.protocol.clone()));
        out.push(Action::Metadata(self.metadata.clone()));
        let mut txns: Vec<_> = self.txns.values().cloned().collect();
        txns.sort_by(|a, b| a.app_id.cmp(&b.app_id));
        out.extend(txns.into_iter().map(Action::Txn));
        let mut domains: Vec<_> = self.domains.values().cloned().collect();
        domains.sort_by(|a, b| a.domain.cmp(&b.domain));
        out.extend(domains.into_iter().map(Action::DomainMetadata));
        out.extend(self.files().into_iter().map(|a| Action::Add((*a).clone())));
        let mut tombs: Vec<_> = self
            .tombstones
            .values()
            .filter(|r| r.deletion_timestamp.unwrap_or(0) > now_ms - retention)
            .map(|r| {
                let mut r = (**r).clone();
                r.data_change = false;
                r
            })
            .collect();
        tombs.sort_by(|a, b| a.path.cmp(&b.path));
        out.extend(tombs.into_iter().map(Action::Remove));
        out
    }

    /// Writes `<version>.checkpoint.parquet` for this snapshot and points
    /// `_last_checkpoint` at it. Checkpoints are not commits: rewriting one is harmless.
    pub async fn write_checkpoint(&self) -> Result<LastCheckpoint> {
        let now = chrono::Utc::now().timestamp_millis();
        let actions = self.checkpoint_actions(now);
        let num_actions = actions.len() as i64;
        let num_adds = self.num_files() as i64;
        let data = tokio::task::spawn_blocking(move || log::checkpoint::write_checkpoint(&actions))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        let size = data.len() as i64;
        self.store
            .put(
                &self.store.log_path(&log::checkpoint_name(self.version)),
                data,
            )
            .await?;
        let last = LastCheckpoint {
            version: self.version,
            size: num_actions,
            parts: None,
            size_in_bytes: Some(size),
            num_of_add_files: Some(num_adds),
        };
        self.store
            .put(
                &self.store.log_path("_last_checkpoint"),
                bytes::Bytes::from(serde_json::to_vec(&last)?),
            )
            .await?;
        tracing::info!(
            version = self.version,
            actions = num_actions,
            bytes = size,
            "checkpoint written"
        );
        Ok(last)
    }

    /// `delta.deletedFileRetentionDuration` in ms (default 7 days).
    pub fn deleted_file_retention_ms(&self) -> i64 {
        self.metadata
            .property("delta.deletedFileRetentionDuration")
            .and_then(parse_interval_ms)
            .unwrap_or(7 * 24 * 3600 * 1000)
    }

    /// `delta.checkpointInterval` (default 10).
    pub fn checkpoint_interval(&self) -> i64 {
        self.metadata
            .property("delta.checkpointInterval")
            .and_then(|v| v.trim().parse().ok())
            .filter(|v: &i64| *v > 0)
            .unwrap_or(10)
    }

    /// Whether in-commit timestamps are on for commits after this snapshot.
    pub fn in_commit_timestamps(&self) -> bool {
        self.metadata.property("delta.enableInCommitTimestamps") == Some("true")
    }
}

/// Parses a Delta interval like `interval 7 days` or `168 hours` to milliseconds.
pub fn parse_interval_ms(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_prefix("interval").unwrap_or(&s).trim().to_string();
    let mut it = s.split_whitespace();
    let n: i64 = it.next()?.parse().ok()?;
    let unit = it.next().unwrap_or("ms");
    let ms = match unit.trim_end_matches('s') {
        "millisecond" | "m" => 1,
        "second" => 1000,
        "minute" => 60_000,
        "hour" => 3_600_000,
        "day" => 86_400_000,
        "week" => 7 * 86_400_000,
        _ => return None,
    };
    Some(n * ms)
}

fn ict_enabled_at(metadata: &Metadata, version: i64) -> bool {
    metadata.property("delta.enableInCommitTimestamps") == Some("true")
        && metadata
            .property("delta.inCommitTimestampEnablementVersion")
            .and_then(|v| v.parse::<i64>().ok())
            .is_none_or(|enabled| version >= enabled)
}

fn commit_timestamp(actions: &[Action], metadata: &Metadata, version: i64) -> Option<i64> {
    if !ict_enabled_at(metadata, version) {
        return None;
    }
    actions.iter().find_map(|a| match a {
        Action::CommitInfo(ci) => ci.in_commit_timestamp(),
        _ => None,
    })
}

async fn read_last_checkpoint(store: &TableStore) -> Option<LastCheckpoint> {
    match store.get_opt(&store.log_path("_last_checkpoint")).await {
        Ok(Some(data)) => match serde_json::from_slice::<LastCheckpoint>(&data) {
            Ok(h) => Some(h),
            Err(e) => {
                warn!(error = %e, "ignoring unreadable _last_checkpoint");
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            warn!(error = %e, "ignoring _last_checkpoint that could not be read");
            None
        }
    }
}

/// Lists `_delta_log/` (optionally after a name) as [`ListedFile`]s, sorted by name.
/// How many commits after a checkpoint are found by probing before falling back to
/// a directory listing.
const MAX_PROBES: i64 = 64;

/// On a local store: the checkpoint named by `_last_checkpoint` and the commits after
/// it, found by stat'ing names (versions are contiguous, so the first missing commit
/// ends the log) instead of reading a directory that grows with the log. `None` when
/// a file is missing or too many commits follow: the caller lists instead.
async fn probe_local_log(
    store: &TableStore,
    hint: &LastCheckpoint,
    target: Option<i64>,
) -> Result<Option<Vec<ListedFile>>> {
    let stat = |name: String| async move {
        Ok::<_, Error>(
            store
                .head(&store.log_path(&name))
                .await?
                .map(|m| ListedFile {
                    name,
                    size: m.size,
                    modified_ms: m.last_modified.timestamp_millis(),
                }),
        )
    };
    let parts = hint.parts.unwrap_or(1).max(1);
    let mut out = Vec::new();
    for i in 1..=parts {
        let name = if parts == 1 {
            log::checkpoint_name(hint.version)
        } else {
            format!(
                "{:020}.checkpoint.{:010}.{:010}.parquet",
                hint.version, i, parts
            )
        };
        match stat(name).await? {
            Some(f) => out.push(f),
            None => return Ok(None),
        }
    }
    let mut v = hint.version + 1;
    loop {
        if target.is_some_and(|t| v > t) {
            return Ok(Some(out));
        }
        if v > hint.version + MAX_PROBES {
            return Ok(None);
        }
        match stat(log::commit_name(v)).await? {
            Some(f) => out.push(f),
            None => return Ok(Some(out)),
        }
        v += 1;
    }
}

pub async fn list_log(store: &TableStore, after: Option<&str>) -> Result<Vec<ListedFile>> {
    Ok(store
        .list_log(after)
        .await?
        .into_iter()
        .map(|(name, meta)| ListedFile {
            name,
            size: meta.size,
            modified_ms: meta.last_modified.timestamp_millis(),
        })
        .collect())
}

/// Reads and parses commit files concurrently, returned in order.
pub async fn read_commits(
    store: &TableStore,
    commits: &[(i64, ListedFile)],
) -> Result<Vec<(i64, ListedFile, Vec<Action>)>> {
    futures::stream::iter(commits.to_vec())
        .map(|(v, f): (i64, ListedFile)| {
            let store = store.clone();
            async move {
                let data = store
                    .get_opt(&store.log_path(&f.name))
                    .await?
                    .ok_or_else(|| {
                        Error::corrupt(&f.name, "commit file disappeared while loading")
                    })?;
                let actions = log::parse_commit(&data, &f.name)?;
                Ok::<_, Error>((v, f, actions))
            }
        })
        .buffered(LOG_READ_CONCURRENCY)
        .try_collect()
        .await
}

/// The version whose commit timestamp is the latest at or before `timestamp_ms`.
/// Timestamps come from in-commit timestamps where enabled, else from the commit
/// files' modification times (made strictly increasing, as Delta does).
pub async fn version_at_timestamp(store: &TableStore, timestamp_ms: i64) -> Result<i64> {
    let listed = list_log(store, None).await?;
    let commits: Vec<(i64, ListedFile)> = listed
        .into_iter()
        .filter_map(|f| {
            let p = log::LogFileName::parse(&f.name)?;
            (p.kind == log::LogFileKind::Commit).then_some((p.version, f))
        })
        .collect();
    if commits.is_empty() {
        return Err(Error::TableNotFound(store.uri().to_string()));
    }
    // In-commit timestamps, once enabled, are in every later commit: when the latest
    // commit has none, they are off and file times decide (no snapshot needed).
    let (last_v, last_f) = &commits[commits.len() - 1];
    let last = read_commits(store, &[(*last_v, last_f.clone())]).await?;
    let latest_has_ict = last.iter().any(|(_, _, actions)| {
        actions.iter().any(|a| match a {
            Action::CommitInfo(ci) => ci.in_commit_timestamp().is_some(),
            _ => false,
        })
    });
    let latest = if latest_has_ict {
        Some(Snapshot::load(store, None).await?)
    } else {
        None
    };
    let ict_from = match &latest {
        Some(l) if l.in_commit_timestamps() => Some(
            l.metadata()
                .property("delta.inCommitTimestampEnablementVersion")
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0),
        ),
        _ => None,
    };
    // File-time timestamps for the commits before in-commit timestamps.
    let mut plain: Vec<(i64, ListedFile)> = Vec::with_capacity(commits.len());
    let mut ict_commits = Vec::new();
    for (v, f) in &commits {
        if ict_from.is_some_and(|from| *v >= from) {
            ict_commits.push((*v, f.clone()));
        } else {
            plain.push((*v, f.clone()));
        }
    }
    // On a store with whole-second file times, the commits near the timestamp are
    // read for their `commitInfo.timestamp` (see `commit_file_times`); commits two
    // seconds or more away cannot change the answer.
    let mut written = std::collections::HashMap::new();
    if whole_second_times(&plain) {
        let near: Vec<(i64, ListedFile)> = plain
            .iter()
            .filter(|(_, f)| {
                f.modified_ms > timestamp_ms - 2 * SECOND_MS
                    && f.modified_ms < timestamp_ms + SECOND_MS
            })
            .cloned()
            .collect();
        for (v, _, actions) in read_commits(store, &near).await? {
            if let Some(ts) = commit_info_timestamp(&actions) {
                written.insert(v, ts);
            }
        }
    }
    let times = commit_file_times(&plain, &written);
    // In-commit timestamps are monotonic: binary search, reading log2(n) commits.
    let mut found = times
        .iter()
        .rev()
        .find(|(_, t)| *t <= timestamp_ms)
        .map(|(v, _)| *v);
    if !ict_commits.is_empty() {
        let (mut lo, mut hi) = (0usize, ict_commits.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (v, f) = &ict_commits[mid];
            let actions = read_commits(store, &[(*v, f.clone())]).await?;
            let t = actions
                .first()
                .and_then(|(_, _, a)| {
                    latest
                        .as_ref()
                        .and_then(|l| commit_timestamp(a, l.metadata(), *v))
                })
                .unwrap_or(f.modified_ms);
            if t <= timestamp_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo > 0 {
            found = Some(ict_commits[lo - 1].0);
        }
    }
    match found {
        Some(v) => Ok(v),
        None => {
            let first = times
                .first()
                .map(|(_, t)| *t)
                .unwrap_or(commits[0].1.modified_ms);
            Err(Error::TimestampOutOfRange {
                timestamp: format_ms(timestamp_ms),
                reason: format!(
                    "before the earliest available commit (version {} at {})",
                    commits[0].0,
                    format_ms(first)
                ),
            })
        }
    }
}

const SECOND_MS: i64 = 1000;

/// Whether the store reports commit file times in whole seconds (S3 and most object
/// stores list `LastModified` to the second; local file systems to the millisecond).
pub(crate) fn whole_second_times(commits: &[(i64, ListedFile)]) -> bool {
    !commits.is_empty() && commits.iter().all(|(_, f)| f.modified_ms % SECOND_MS == 0)
}

/// The `commitInfo.timestamp` of a commit's actions.
pub(crate) fn commit_info_timestamp(actions: &[Action]) -> Option<i64> {
    actions.iter().find_map(|a| match a {
        Action::CommitInfo(ci) => ci.timestamp(),
        _ => None,
    })
}

/// The commit times of commits without in-commit timestamps, in version order: the
/// commit file's modification time (Delta's definition), made strictly increasing.
/// Where the store keeps whole seconds, a commit written several times a second
/// would be indistinguishable from its neighbours, so its `commitInfo.timestamp`
/// (`written`), when it lies within a second of the file time, refines the file time
/// to the millisecond. History and timestamp time travel both use this, so a time
/// shown in the history travels back to exactly its version. Callers pass `written`
/// only for stores with whole-second times ([`whole_second_times`]).
pub(crate) fn commit_file_times(
    commits: &[(i64, ListedFile)],
    written: &std::collections::HashMap<i64, i64>,
) -> Vec<(i64, i64)> {
    let mut times = Vec::with_capacity(commits.len());
    let mut prev = i64::MIN;
    for (v, f) in commits {
        let file_ms = f.modified_ms;
        let t = match written.get(v) {
            Some(&w) if (w - file_ms).abs() < SECOND_MS => w,
            _ => file_ms,
        };
        let t = if prev == i64::MIN { t } else { t.max(prev + 1) };
        prev = t;
        times.push((*v, t));
    }
    times
}

pub(crate) fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval_ms("interval 7 days"), Some(7 * 86_400_000));
        assert_eq!(parse_interval_ms("interval 1 hour"), Some(3_600_000));
        assert_eq!(parse_interval_ms("garbage"), None);
    }

    #[test]
    fn replay_add_remove_readd() {
        let add = |p: &str| {
            Action::from_json_line(&format!(
                r#"{{"add":{{"path":"{p}","partitionValues":{{}},"size":1,"modificationTime":1,"dataChange":true}}}}"#
            ))
            .unwrap()
            .unwrap()
        };
        let rm = |p: &str| {
            Action::from_json_line(&format!(
                r#"{{"remove":{{"path":"{p}","dataChange":true}}}}"#
            ))
            .unwrap()
            .unwrap()
        };
        let mut s = ReplayState::default();
        s.apply([add("a"), add("b%20c")]);
        s.apply([rm("b c")]);
        assert_eq!(s.files.len(), 1);
        assert_eq!(s.tombstones.len(), 1);
        s.apply([add("b c")]);
        assert_eq!(s.files.len(), 2);
        assert!(s.tombstones.is_empty());
    }
}
