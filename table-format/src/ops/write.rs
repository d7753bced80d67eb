//! WRITE: append and overwrite with schema enforcement/evolution and idempotent
//! application transactions. Creates the table when it does not exist.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use tracing::info;

use crate::error::{ConflictKind, Error, Result};
use crate::expr::{bind_predicate, matching_rows, parse_predicate};
use crate::ops::create::new_table_actions;
use crate::ops::rewrite::{rewrite, Rewrite, RowChange};
use crate::protocol::features::check_write;
use crate::protocol::{Action, Add, Metadata, Remove, StructType, Txn};
use crate::snapshot::Snapshot;
use crate::storage::TableStore;
use crate::transaction::{ReadSet, Transaction};
use crate::write::{
    conform_batch, delete_unreferenced, merge_schemas, DataWriter, SchemaMode, WriterOptions,
};

/// Append adds files; overwrite replaces every file of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveMode {
    #[default]
    Append,
    Overwrite,
}

/// What a write did.
#[derive(Debug, Clone)]
pub struct WriteResult {
    /// The committed version (the current version when the write was already applied).
    pub version: i64,
    pub rows: usize,
    pub files_added: usize,
    pub files_removed: usize,
    pub bytes_added: i64,
    /// The application transaction had already been committed: nothing was written.
    pub already_applied: bool,
    pub snapshot: Snapshot,
}

/// Writes Arrow batches to a table.
#[derive(Debug, Clone)]
pub struct WriteBuilder {
    store: TableStore,
    snapshot: Option<Snapshot>,
    batches: Vec<RecordBatch>,
    mode: SaveMode,
    schema_mode: SchemaMode,
    partition_by: Option<Vec<String>>,
    properties: HashMap<String, String>,
    apps: Vec<(String, i64)>,
    replace_where: Option<String>,
    options: WriterOptions,
    auto_checkpoint: bool,
}

impl WriteBuilder {
    pub fn new(store: TableStore, batches: Vec<RecordBatch>) -> Self {
        WriteBuilder {
            store,
            snapshot: None,
            batches,
            mode: SaveMode::Append,
            schema_mode: SchemaMode::Enforce,
            partition_by: None,
            properties: HashMap::new(),
            apps: Vec::new(),
            replace_where: None,
            options: WriterOptions::default(),
            auto_checkpoint: true,
        }
    }

    /// Start from a known snapshot instead of loading the latest.
    pub fn with_snapshot(mut self, snapshot: Snapshot) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    pub fn with_mode(mut self, mode: SaveMode) -> Self {
        self.mode = mode;
        self
    }

    pub fn with_schema_mode(mut self, mode: SchemaMode) -> Self {
        self.schema_mode = mode;
        self
    }

    /// Partition columns (for a new table, or with schema mode overwrite).
    pub fn with_partition_by<S: AsRef<str>>(mut self, cols: &[S]) -> Self {
        self.partition_by = Some(cols.iter().map(|c| c.as_ref().to_string()).collect());
        self
    }

    /// Table properties for a newly created table.
    pub fn with_properties(mut self, props: HashMap<String, String>) -> Self {
        self.properties.extend(props);
        self
    }

    /// Idempotent write: commit only if `version` is above the last one of `app_id`.
    pub fn with_app_transaction(mut self, app_id: &str, version: i64) -> Self {
        self.apps.retain(|(a, _)| a != app_id);
        self.apps.push((app_id.to_string(), version));
        self
    }

    /// Several application transactions in one commit (a server's group commit of
    /// several producers' writes): one `txn` action each. The write counts as already
    /// applied only when every one of them is; when only some are, it fails with a
    /// [`ConflictKind::ConcurrentTransaction`] conflict naming one, and writes nothing.
    pub fn with_app_transactions<S: AsRef<str>>(mut self, apps: &[(S, i64)]) -> Self {
        for (app, v) in apps {
            self = self.with_app_transaction(app.as_ref(), *v);
        }
        self
    }

    /// Overwrite only the rows matching `predicate` (Delta `replaceWhere`); every row
    /// written must match it too, or the write is rejected.
    pub fn with_replace_where(mut self, predicate: impl Into<String>) -> Self {
        self.replace_where = Some(predicate.into());
        self
    }

    pub fn with_target_file_size(mut self, bytes: u64) -> Self {
        self.options.target_file_size = bytes.max(1);
        self
    }

    pub fn with_writer_options(mut self, options: WriterOptions) -> Self {
        self.options = options;
        self
    }

    pub fn with_auto_checkpoint(mut self, on: bool) -> Self {
        self.auto_checkpoint = on;
        self
    }

    pub async fn execute(mut self) -> Result<WriteResult> {
        let snapshot = match self.snapshot.take() {
            Some(s) => Some(s),
            None => match Snapshot::load(&self.store, None).await {
                Ok(s) => Some(s),
                Err(Error::TableNotFound(_)) => None,
                Err(e) => return Err(e),
            },
        };
        match self.clone().attempt(snapshot).await {
            // Someone created the table between our look and our commit: write into theirs.
            Err(Error::TableAlreadyExists(_)) => {
                let snapshot = Snapshot::load(&self.store, None).await?;
                self.attempt(Some(snapshot)).await
            }
            other => other,
        }
    }

    fn input_schema(&self) -> Result<Option<StructType>> {
        let Some(first) = self.batches.first() else {
            return Ok(None);
        };
        let schema = first.schema();
        for b in &self.batches[1..] {
            if b.schema().fields() != schema.fields() {
                return Err(Error::InvalidArgument(
                    "all batches of one write must have the same schema".into(),
                ));
            }
        }
        Ok(Some(StructType::from_arrow(&schema)?))
    }

    async fn attempt(self, snapshot: Option<Snapshot>) -> Result<WriteResult> {
        let input = self.input_schema()?;
        let mut actions: Vec<Action> = Vec::new();
        let (schema, partition_columns, base) = match &snapshot {
            Some(snap) => {
                check_write(snap.protocol(), snap.metadata())?;
                let applied: Vec<&str> = self
                    .apps
                    .iter()
                    .filter(|(app, v)| {
                        snap.app_transaction_version(app)
                            .is_some_and(|last| last >= *v)
                    })
                    .map(|(app, _)| app.as_str())
                    .collect();
                if !applied.is_empty() && applied.len() == self.apps.len() {
                    return Ok(already_applied(snap.clone()));
                }
                if let Some(app) = applied.first() {
                    return Err(Error::Conflict(ConflictKind::ConcurrentTransaction {
                        app_id: app.to_string(),
                    }));
                }
                if self.mode == SaveMode::Overwrite
                    && snap.metadata().property("delta.appendOnly") == Some("true")
                {
                    return Err(Error::NotAllowed(
                        "the table is append-only (delta.appendOnly=true); overwrite would remove data"
                            .into(),
                    ));
                }
                let table_schema = snap.schema().clone();
                let mut partitions = snap.partition_columns().to_vec();
                let new_schema = match (self.schema_mode, &input) {
                    (SchemaMode::Enforce, _) | (_, None) => table_schema.clone(),
                    (SchemaMode::Merge, Some(input)) => merge_schemas(&table_schema, input)?,
                    (SchemaMode::Overwrite, Some(input)) => {
                        if self.mode != SaveMode::Overwrite {
                            return Err(Error::InvalidArgument(
                                "schema mode `overwrite` needs save mode overwrite".into(),
                            ));
                        }
                        if let Some(p) = &self.partition_by {
                            partitions = p.clone();
                        }
                        input.clone()
                    }
                };
                if let Some(p) = &self.partition_by {
                    if *p != partitions {
                        return Err(Error::InvalidArgument(format!(
                            "the table is partitioned by {:?}, not {:?}; overwrite with schema mode `overwrite` to change it",
                            snap.partition_columns(),
                            p
                        )));
                    }
                }
                if new_schema != table_schema || partitions != snap.partition_columns() {
                    let (_, fresh) =
                        new_table_actions(&new_schema, &partitions, &HashMap::new(), None, None)?;
                    let metadata = Metadata {
                        schema_string: fresh.schema_string,
                        partition_columns: partitions.clone(),
                        ..snap.metadata().clone()
                    };
                    actions.push(Action::Metadata(metadata));
                    let needed = crate::protocol::features::protocol_for_new_table(
                        &new_schema,
                        snap.metadata(),
                    );
                    if needed.min_reader_version > snap.protocol().min_reader_version
                        || needed.min_writer_version > snap.protocol().min_writer_version
                    {
                        actions.push(Action::Protocol(needed));
                    }
                }
                (new_schema, partitions, Some(snap.clone()))
            }
            None => {
                let schema = input.clone().ok_or_else(|| {
                    Error::InvalidArgument("cannot create a table from a write with no data".into())
                })?;
                let partitions = self.partition_by.clone().unwrap_or_default();
                let (protocol, metadata) =
                    new_table_actions(&schema, &partitions, &self.properties, None, None)?;
                actions.push(Action::Protocol(protocol));
                actions.push(Action::Metadata(metadata));
                (schema, partitions, None)
            }
        };

        // Enforce the schema on every batch before any file is written.
        let target = Arc::new(schema.to_arrow()?);
        let conformed: Vec<RecordBatch> = self
            .batches
            .iter()
            .map(|b| conform_batch(b, &schema, &target))
            .collect::<Result<_>>()?;
        let rows: usize = conformed.iter().map(|b| b.num_rows()).sum();

        // replaceWhere: the new rows must satisfy the predicate they replace.
        let replace_where = match &self.replace_where {
            None => None,
            Some(_) if self.mode != SaveMode::Overwrite => {
                return Err(Error::InvalidArgument(
                    "replaceWhere needs save mode overwrite".into(),
                ))
            }
            Some(_) if self.schema_mode == SchemaMode::Overwrite => {
                return Err(Error::InvalidArgument(
                    "replaceWhere cannot be combined with schema mode overwrite".into(),
                ))
            }
            Some(text) => {
                let pred = bind_predicate(&parse_predicate(text)?, &schema)?;
                let mut bad = 0usize;
                for b in &conformed {
                    let m = matching_rows(&pred, b)?;
                    bad += b.num_rows() - m.true_count();
                }
                if bad > 0 {
                    return Err(Error::NotAllowed(format!(
                        "replaceWhere `{pred}`: {bad} of {rows} rows written do not satisfy the predicate; nothing was written"
                    )));
                }
                Some(pred)
            }
        };

        // The table's settings as they will be after this commit.
        let metadata = actions
            .iter()
            .rev()
            .find_map(|a| match a {
                Action::Metadata(m) => Some(m),
                _ => None,
            })
            .or(base.as_ref().map(|s| s.metadata()));
        let options = match metadata {
            Some(m) => self.options.clone().for_table(m),
            None => self.options.clone(),
        };
        let mut writer = DataWriter::new(
            self.store.clone(),
            &schema,
            &target,
            &partition_columns,
            options.clone(),
        )?;
        for b in &conformed {
            writer.write(b).await?;
        }
        drop(conformed);
        let adds: Vec<Add> = writer.finish().await?;
        let bytes_added: i64 = adds.iter().map(|a| a.size).sum();
        let files_added = adds.len();

        let now = chrono::Utc::now().timestamp_millis();
        let mut removed = 0;
        let mut replaced: Option<Rewrite> = None;
        let mut written: Vec<String> = adds.iter().map(|a| a.path.clone()).collect();
        match (self.mode, &base, &replace_where) {
            (SaveMode::Overwrite, Some(snap), Some(pred)) => {
                // Remove the rows the predicate selects; keep the others of their files.
                let outcome =
                    match rewrite(snap, Some(pred), RowChange::Delete, options.clone()).await {
                        Ok(o) => o,
                        Err(e) => {
                            delete_unreferenced(&self.store, &written).await;
                            return Err(e);
                        }
                    };
                removed = outcome.removes.len();
                written.extend(outcome.adds.iter().map(|a| a.path.clone()));
                actions.extend(outcome.removes.iter().cloned().map(Action::Remove));
                actions.extend(outcome.adds.iter().cloned().map(Action::Add));
                replaced = Some(outcome);
            }
            (SaveMode::Overwrite, Some(snap), None) => {
                for f in snap.files() {
                    actions.push(Action::Remove(Remove::for_add(&f, now, true)));
                    removed += 1;
                }
            }
            _ => {}
        }
        actions.extend(adds.into_iter().map(Action::Add));
        for (app, v) in &self.apps {
            actions.push(Action::Txn(Txn {
                app_id: app.clone(),
                version: *v,
                last_updated: Some(now),
            }));
        }

        let mode_name = match self.mode {
            SaveMode::Append => "Append",
            SaveMode::Overwrite => "Overwrite",
        };
        // One commit path for both cases; only the base and the read set differ.
        let txn = match &base {
            Some(snap) => {
                let read = match &replaced {
                    Some(r) => r.read_set(snap, replace_where.as_ref()),
                    None => ReadSet {
                        whole_table: self.mode == SaveMode::Overwrite,
                        ..Default::default()
                    },
                };
                let mut txn = Transaction::new(snap, "WRITE")
                    .with_read_set(read)
                    .with_parameter("mode", mode_name)
                    .with_metric("numRemovedFiles", removed);
                if let (Some(r), Some(p)) = (&replaced, &replace_where) {
                    txn = txn
                        .with_parameter("predicate", serde_json::to_string(&[p.to_string()])?)
                        .with_metric("numDeletedRows", r.rows_matched)
                        .with_metric("numCopiedRows", r.rows_copied);
                }
                let blind = self.mode == SaveMode::Append
                    && actions
                        .iter()
                        .all(|a| matches!(a, Action::Add(_) | Action::Txn(_)));
                if blind {
                    txn.blind_append()
                } else {
                    txn
                }
            }
            None => {
                Transaction::create(&self.store, "WRITE").with_parameter("mode", "ErrorIfExists")
            }
        };
        let result = txn
            .with_auto_checkpoint(self.auto_checkpoint)
            .with_parameter("partitionBy", serde_json::to_string(&partition_columns)?)
            .with_metric("numFiles", files_added)
            .with_metric("numOutputRows", rows)
            .with_metric("numOutputBytes", bytes_added)
            .with_actions(actions)
            .commit()
            .await;
        let committed = match result {
            Ok(c) => c,
            Err(e) => {
                // Nothing references the files we wrote: remove them now rather than
                // leaving them to vacuum.
                delete_unreferenced(&self.store, &written).await;
                if let Some(latest) = applied_concurrently(&self.store, &e, &self.apps).await? {
                    return Ok(already_applied(latest));
                }
                return Err(e);
            }
        };
        info!(
            version = committed.version,
            rows,
            files = files_added,
            mode = mode_name,
            "write committed"
        );
        Ok(WriteResult {
            version: committed.version,
            rows,
            files_added,
            files_removed: removed,
            bytes_added,
            already_applied: false,
            snapshot: committed.snapshot,
        })
    }
}

/// After a commit failed on a conflicting application transaction: the latest
/// snapshot when concurrent writers committed these application versions (or later
/// ones) — the write was applied, by someone else.
pub(crate) async fn applied_concurrently(
    store: &TableStore,
    error: &Error,
    apps: &[(String, i64)],
) -> Result<Option<Snapshot>> {
    if !matches!(
        error,
        Error::Conflict(ConflictKind::ConcurrentTransaction { .. })
    ) || apps.is_empty()
    {
        return Ok(None);
    }
    let latest = Snapshot::load(store, None).await?;
    Ok(apps
        .iter()
        .all(|(app, v)| {
            latest
                .app_transaction_version(app)
                .is_some_and(|last| last >= *v)
        })
        .then_some(latest))
}

fn already_applied(snapshot: Snapshot) -> WriteResult {
    WriteResult {
        version: snapshot.version(),
        rows: 0,
        files_added: 0,
        files_removed: 0,
        bytes_added: 0,
        already_applied: true,
        snapshot,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::table::Table;

    fn batch(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..n))]).unwrap()
    }

    #[tokio::test]
    async fn several_app_transactions_in_one_commit() {
        let t = Table::at("memory://apps").unwrap();
        t.write(vec![batch(1)]).execute().await.unwrap();
        let r = t
            .write(vec![batch(2), batch(3)])
            .with_app_transactions(&[("a", 1), ("b", 7)])
            .execute()
            .await
            .unwrap();
        assert!(!r.already_applied);
        assert_eq!(r.snapshot.app_transaction_version("a"), Some(1));
        assert_eq!(r.snapshot.app_transaction_version("b"), Some(7));

        // Every one applied: a replay that writes nothing.
        let again = t
            .write(vec![batch(2)])
            .with_app_transactions(&[("a", 1), ("b", 6)])
            .execute()
            .await
            .unwrap();
        assert!(again.already_applied);
        assert_eq!(again.version, r.version);

        // Only some applied: refused, nothing written.
        let err = t
            .write(vec![batch(2)])
            .with_app_transactions(&[("a", 1), ("c", 1)])
            .execute()
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            Error::Conflict(ConflictKind::ConcurrentTransaction { ref app_id }) if app_id == "a"
        ));
        assert_eq!(t.snapshot().await.unwrap().version(), r.version);
    }

    #[tokio::test]
    async fn same_app_id_twice_keeps_the_last_version() {
        let t = Table::at("memory://apps2").unwrap();
        let r = t
            .write(vec![batch(1)])
            .with_app_transaction("a", 1)
            .with_app_transaction("a", 2)
            .execute()
            .await
            .unwrap();
        assert_eq!(r.snapshot.app_transaction_version("a"), Some(2));
    }
}
