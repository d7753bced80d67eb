//! RESTORE: roll the table back to an older version as a new commit. The commit
//! re-adds the files of the old version that are gone now and removes the files added
//! since (all with `dataChange: true`), and brings back the old metadata; the history,
//! bad versions included, stays and can still be time-travelled to.
//!
//! ```no_run
//! # async fn demo(store: shoal_format::TableStore) -> shoal_format::Result<()> {
//! use shoal_format::ops::restore::RestoreBuilder;
//! let r = RestoreBuilder::new(store).with_version(3).execute().await?;
//! println!("version {} now equals version {}", r.version, r.restored_version);
//! # Ok(()) }
//! ```

use std::collections::HashSet;

use futures::StreamExt;
use tracing::info;

use crate::error::{Error, Result};
use crate::ops::vacuum::dv_relative_path;
use crate::protocol::features::{check_write, has_writer_feature};
use crate::protocol::partition::decode_add_path;
use crate::protocol::{Action, Add, Metadata, Protocol, Remove};
use crate::snapshot::{file_key, format_ms, version_at_timestamp, Snapshot};
use crate::storage::TableStore;
use crate::transaction::{ReadSet, Transaction};

/// Existence checks in flight at once.
const HEAD_CONCURRENCY: usize = 16;

/// How many missing files an error names.
const MISSING_NAMED: usize = 5;

/// Properties that follow the table forward, never back: in-commit timestamps must stay
/// monotonic across a restore (as Delta does).
const FORWARD_ONLY_PROPERTIES: &[&str] = &[
    "delta.enableInCommitTimestamps",
    "delta.inCommitTimestampEnablementVersion",
    "delta.inCommitTimestampEnablementTimestamp",
];

/// Writer features a legacy writer version implies, to merge with explicit features.
const LEGACY_WRITER_FEATURES: &[&str] = &[
    "appendOnly",
    "invariants",
    "checkConstraints",
    "changeDataFeed",
    "generatedColumns",
    "columnMapping",
    "identityColumns",
];

/// The changes that take a table from one state back to another. Pure.
#[derive(Debug, Clone, PartialEq)]
pub struct RestorePlan {
    /// Files of the old version missing now, re-added with `dataChange: true`.
    pub adds: Vec<Add>,
    /// Files added since, removed with `dataChange: true`.
    pub removes: Vec<Remove>,
    /// The old metadata, when it differs from the current one.
    pub metadata: Option<Metadata>,
    /// A protocol covering both versions, when the current one does not.
    pub protocol: Option<Protocol>,
}

impl RestorePlan {
    pub fn is_empty(&self) -> bool {
        self.adds.is_empty()
            && self.removes.is_empty()
            && self.metadata.is_none()
            && self.protocol.is_none()
    }
}

/// Plans a restore of `current` to the state of `target`, with tombstones stamped at
/// `now_ms`.
pub fn plan_restore(current: &Snapshot, target: &Snapshot, now_ms: i64) -> RestorePlan {
    let old_keys: HashSet<String> = target
        .files()
        .iter()
        .map(|a| file_key(&a.path, a.deletion_vector.as_ref()))
        .collect();
    let adds = target
        .files()
        .into_iter()
        .filter(|a| !current.contains_file(&file_key(&a.path, a.deletion_vector.as_ref())))
        .map(|a| {
            let mut add = (*a).clone();
            add.data_change = true;
            add
        })
        .collect();
    let removes = current
        .files()
        .into_iter()
        .filter(|a| !old_keys.contains(&file_key(&a.path, a.deletion_vector.as_ref())))
        .map(|a| Remove::for_add(&a, now_ms, true))
        .collect();
    let metadata = restored_metadata(current.metadata(), target.metadata());
    let merged = merge_protocols(current.protocol(), target.protocol());
    RestorePlan {
        adds,
        removes,
        metadata: (&metadata != current.metadata()).then_some(metadata),
        protocol: (&merged != current.protocol()).then_some(merged),
    }
}

/// The old metadata, with the properties that only move forward taken from the current.
fn restored_metadata(current: &Metadata, old: &Metadata) -> Metadata {
    let mut restored = old.clone();
    for key in FORWARD_ONLY_PROPERTIES {
        match current.configuration.get(*key) {
            Some(v) => {
                restored.configuration.insert(key.to_string(), v.clone());
            }
            None => {
                restored.configuration.remove(*key);
            }
        }
    }
    restored
}

/// A protocol that satisfies both: RESTORE never downgrades the protocol.
pub fn merge_protocols(current: &Protocol, old: &Protocol) -> Protocol {
    let reader = current.min_reader_version.max(old.min_reader_version);
    let writer = current.min_writer_version.max(old.min_writer_version);
    let union = |lists: [Option<&Vec<String>>; 2], implied: Vec<String>| {
        let mut out: Vec<String> = Vec::new();
        for f in lists.into_iter().flatten().flatten().chain(implied.iter()) {
            if !out.contains(f) {
                out.push(f.clone());
            }
        }
        out
    };
    let implied_writer = |p: &Protocol| -> Vec<String> {
        if p.min_writer_version >= 7 {
            return Vec::new();
        }
        LEGACY_WRITER_FEATURES
            .iter()
            .filter(|f| has_writer_feature(p, f))
            .map(|f| f.to_string())
            .collect()
    };
    let implied_reader = |p: &Protocol| -> Vec<String> {
        if p.min_reader_version == 2 {
            vec!["columnMapping".to_string()]
        } else {
            Vec::new()
        }
    };
    let mut implied_w = implied_writer(current);
    implied_w.extend(implied_writer(old));
    let mut implied_r = implied_reader(current);
    implied_r.extend(implied_reader(old));
    Protocol {
        min_reader_version: reader,
        min_writer_version: writer,
        reader_features: (reader >= 3).then(|| {
            union(
                [
                    current.reader_features.as_ref(),
                    old.reader_features.as_ref(),
                ],
                implied_r,
            )
        }),
        writer_features: (writer >= 7).then(|| {
            union(
                [
                    current.writer_features.as_ref(),
                    old.writer_features.as_ref(),
                ],
                implied_w,
            )
        }),
    }
}

/// What a RESTORE did.
#[derive(Debug, Clone)]
pub struct RestoreResult {
    /// The committed version (the current one when nothing changed).
    pub version: i64,
    /// The version whose state the table has now.
    pub restored_version: i64,
    /// Files re-added (`numRestoredFiles`).
    pub files_added: usize,
    /// Files removed (`numRemovedFiles`).
    pub files_removed: usize,
    pub bytes_added: i64,
    pub bytes_removed: i64,
    pub num_files_after: usize,
    pub table_size_after: i64,
    /// Rows of the restored table, when every file has statistics.
    pub num_rows_after: Option<i64>,
    /// The old metadata (schema, properties, partitioning) was restored too.
    pub metadata_restored: bool,
    /// The table already was in that state: nothing was committed.
    pub unchanged: bool,
    pub snapshot: Snapshot,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Version(i64),
    Timestamp(i64),
}

/// `RESTORE TABLE t TO VERSION AS OF n | TIMESTAMP AS OF ts`.
#[derive(Debug, Clone)]
pub struct RestoreBuilder {
    store: TableStore,
    snapshot: Option<Snapshot>,
    target: Option<Target>,
}

impl RestoreBuilder {
    pub fn new(store: TableStore) -> Self {
        RestoreBuilder {
            store,
            snapshot: None,
            target: None,
        }
    }

    /// Restore on top of a known snapshot instead of the latest.
    pub fn with_snapshot(mut self, snapshot: Snapshot) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    pub fn with_version(mut self, version: i64) -> Self {
        self.target = Some(Target::Version(version));
        self
    }

    /// Restore to the latest version committed at or before `timestamp_ms`.
    pub fn with_timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.target = Some(Target::Timestamp(timestamp_ms));
        self
    }

    pub async fn execute(self) -> Result<RestoreResult> {
        let target = self.target.ok_or_else(|| {
            Error::InvalidArgument("RESTORE needs a version or a timestamp to restore to".into())
        })?;
        let current = match self.snapshot {
            Some(s) => s,
            None => Snapshot::load(&self.store, None).await?,
        };
        let version = match target {
            Target::Version(v) => v,
            Target::Timestamp(t) => version_at_timestamp(&self.store, t).await?,
        };
        if version > current.version() {
            return Err(Error::VersionNotFound {
                version,
                reason: format!(
                    "it is newer than the table (the latest version is {})",
                    current.version()
                ),
            });
        }
        if version == current.version() {
            return Ok(unchanged(current));
        }
        let old = Snapshot::load(&self.store, Some(version)).await?;
        let now = chrono::Utc::now().timestamp_millis();
        let plan = plan_restore(&current, &old, now);
        if plan.is_empty() {
            info!(
                version,
                "the table already is in that state; nothing committed"
            );
            return Ok(unchanged(current));
        }
        // The table after the restore must be one Shoal can write: the merged protocol
        // carries every feature of the current one, so unknown features are refused.
        let protocol = plan.protocol.as_ref().unwrap_or(current.protocol());
        let metadata = plan.metadata.as_ref().unwrap_or(current.metadata());
        check_write(protocol, metadata)?;
        if !plan.removes.is_empty() && metadata.property("delta.appendOnly") == Some("true") {
            return Err(Error::NotAllowed(format!(
                "the table is append-only (delta.appendOnly=true); restoring version {version} \
                 would remove {} files",
                plan.removes.len()
            )));
        }
        check_files_exist(&self.store, version, &plan.adds).await?;

        let bytes_added: i64 = plan.adds.iter().map(|a| a.size).sum();
        let bytes_removed: i64 = plan.removes.iter().map(|r| r.size.unwrap_or(0)).sum();
        let (size_after, rows_after) = old.totals();
        let mut txn = Transaction::new(&current, "RESTORE")
            .with_read_set(ReadSet {
                whole_table: true,
                ..Default::default()
            })
            .with_metric("numRestoredFiles", plan.adds.len())
            .with_metric("numRemovedFiles", plan.removes.len())
            .with_metric("restoredFilesSize", bytes_added)
            .with_metric("removedFilesSize", bytes_removed)
            .with_metric("tableSizeAfterRestore", size_after)
            .with_metric("numOfFilesAfterRestore", old.num_files());
        txn = match target {
            Target::Version(v) => txn.with_parameter("version", v.to_string()),
            Target::Timestamp(t) => txn.with_parameter("timestamp", format_ms(t)),
        };
        let files_added = plan.adds.len();
        let files_removed = plan.removes.len();
        let metadata_restored = plan.metadata.is_some();
        let actions = plan
            .protocol
            .into_iter()
            .map(Action::Protocol)
            .chain(plan.metadata.into_iter().map(Action::Metadata))
            .chain(plan.removes.into_iter().map(Action::Remove))
            .chain(plan.adds.into_iter().map(Action::Add));
        let committed = txn.with_actions(actions).commit().await?;
        info!(
            version = committed.version,
            restored = version,
            files_added,
            files_removed,
            "restored"
        );
        Ok(RestoreResult {
            version: committed.version,
            restored_version: version,
            files_added,
            files_removed,
            bytes_added,
            bytes_removed,
            num_files_after: committed.snapshot.num_files(),
            table_size_after: committed.snapshot.totals().0,
            num_rows_after: rows_after,
            metadata_restored,
            unchanged: false,
            snapshot: committed.snapshot,
        })
    }
}

fn unchanged(current: Snapshot) -> RestoreResult {
    let (size, rows) = current.totals();
    RestoreResult {
        version: current.version(),
        restored_version: current.version(),
        files_added: 0,
        files_removed: 0,
        bytes_added: 0,
        bytes_removed: 0,
        num_files_after: current.num_files(),
        table_size_after: size,
        num_rows_after: rows,
        metadata_restored: false,
        unchanged: true,
        snapshot: current,
    }
}

/// Fails, naming the files, when a file to re-add (or its deletion vector) is gone.
async fn check_files_exist(store: &TableStore, version: i64, adds: &[Add]) -> Result<()> {
    let mut needed: Vec<String> = Vec::with_capacity(adds.len());
    for a in adds {
        needed.push(decode_add_path(&a.path));
        if let Some(dv) = a.deletion_vector.as_ref().and_then(dv_relative_path) {
            needed.push(dv);
        }
    }
    let mut missing: Vec<String> = futures::stream::iter(needed)
        .map(|rel| async move {
            let location = store.data_path(&rel)?;
            Ok::<_, Error>(store.head(&location).await?.is_none().then_some(rel))
        })
        .buffer_unordered(HEAD_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort();
    let total = missing.len();
    let named: Vec<String> = missing
        .iter()
        .take(MISSING_NAMED)
        .map(|p| format!("`{p}`"))
        .collect();
    let more = if total > MISSING_NAMED {
        format!(" and {} more", total - MISSING_NAMED)
    } else {
        String::new()
    };
    Err(Error::NotAllowed(format!(
        "version {version} can no longer be restored: {total} of its data files no longer \
         exist (removed by VACUUM?): {}{more}",
        named.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocol(r: i32, w: i32, rf: Option<&[&str]>, wf: Option<&[&str]>) -> Protocol {
        let list = |l: Option<&[&str]>| l.map(|l| l.iter().map(|s| s.to_string()).collect());
        Protocol {
            min_reader_version: r,
            min_writer_version: w,
            reader_features: list(rf),
            writer_features: list(wf),
        }
    }

    #[test]
    fn protocol_never_downgrades() {
        let high = protocol(
            3,
            7,
            Some(&["timestampNtz"]),
            Some(&["appendOnly", "invariants", "timestampNtz"]),
        );
        let low = Protocol::default();
        assert_eq!(merge_protocols(&high, &low), high);
        assert_eq!(merge_protocols(&low, &low), low);
        // Old version needed more: the union is kept, legacy features made explicit.
        let legacy = protocol(1, 4, None, None);
        let merged = merge_protocols(&legacy, &high);
        assert_eq!(merged.min_writer_version, 7);
        let wf = merged.writer_features.unwrap();
        for f in [
            "timestampNtz",
            "appendOnly",
            "changeDataFeed",
            "generatedColumns",
        ] {
            assert!(wf.contains(&f.to_string()), "{f}: {wf:?}");
        }
        assert_eq!(merged.reader_features.unwrap(), vec!["timestampNtz"]);
    }

    #[test]
    fn forward_only_properties_stay() {
        let mut current = Metadata {
            id: "t".into(),
            name: None,
            description: None,
            format: Default::default(),
            schema_string: "{}".into(),
            partition_columns: vec![],
            configuration: Default::default(),
            created_time: None,
        };
        let mut old = current.clone();
        old.configuration
            .insert("delta.appendOnly".into(), Some("false".into()));
        current
            .configuration
            .insert("delta.enableInCommitTimestamps".into(), Some("true".into()));
        let restored = restored_metadata(&current, &old);
        assert_eq!(
            restored.property("delta.enableInCommitTimestamps"),
            Some("true")
        );
        assert_eq!(restored.property("delta.appendOnly"), Some("false"));
    }
}
