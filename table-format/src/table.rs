//! [`Table`]: a handle on a table location, the entry point to snapshots and operations.

use arrow::array::RecordBatch;

use crate::error::Result;
use crate::ops::{history::HistoryEntry, CreateTableBuilder, WriteBuilder};
use crate::protocol::StructType;
use crate::scan::ScanBuilder;
use crate::snapshot::Snapshot;
use crate::storage::TableStore;

/// A table at a location. Cheap to clone; holds no state but the location.
#[derive(Debug, Clone)]
pub struct Table {
    store: TableStore,
}

impl Table {
    /// A table at a URI (local path, `file://`, `s3://bucket/prefix` configured from the
    /// `AWS_*` environment, `memory://`). Does not read anything.
    pub fn at(uri: &str) -> Result<Table> {
        Ok(Table {
            store: TableStore::from_uri(uri)?,
        })
    }

    /// A table at a URI with explicit storage options (credentials, endpoint, …; see
    /// [`crate::storage::StorageOptions`]). Does not read anything.
    pub fn at_with_options(uri: &str, options: &crate::storage::StorageOptions) -> Result<Table> {
        Ok(Table {
            store: TableStore::from_uri_with_options(uri, options)?,
        })
    }

    /// Opens an existing table: fails with `TableNotFound` when there is none.
    pub async fn open(uri: &str) -> Result<Table> {
        let t = Table::at(uri)?;
        t.snapshot().await?;
        Ok(t)
    }

    pub fn from_store(store: TableStore) -> Table {
        Table { store }
    }

    pub fn store(&self) -> &TableStore {
        &self.store
    }

    /// The latest snapshot.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        Snapshot::load(&self.store, None).await
    }

    /// The snapshot at a version.
    pub async fn snapshot_at(&self, version: i64) -> Result<Snapshot> {
        Snapshot::load(&self.store, Some(version)).await
    }

    /// The snapshot of the latest commit at or before a timestamp (ms since the epoch).
    pub async fn snapshot_at_timestamp(&self, timestamp_ms: i64) -> Result<Snapshot> {
        Snapshot::load_at_timestamp(&self.store, timestamp_ms).await
    }

    pub fn create(&self, schema: StructType) -> CreateTableBuilder {
        CreateTableBuilder::new(self.store.clone(), schema)
    }

    pub fn write(&self, batches: Vec<RecordBatch>) -> WriteBuilder {
        WriteBuilder::new(self.store.clone(), batches)
    }

    /// DELETE rows (all, or those matching `.with_predicate(...)`).
    pub fn delete(&self) -> crate::ops::DeleteBuilder {
        crate::ops::DeleteBuilder::new(self.store.clone())
    }

    /// UPDATE rows: `.with_assignment("col = expr")`, optionally `.with_predicate(...)`.
    pub fn update(&self) -> crate::ops::UpdateBuilder {
        crate::ops::UpdateBuilder::new(self.store.clone())
    }

    /// MERGE `source` into the table on `on` (e.g. `target.id = source.id`); add
    /// clauses with `.when_matched_update_all(None)`, `.when_not_matched_insert_all(None)`...
    pub fn merge(&self, source: Vec<RecordBatch>, on: &str) -> crate::ops::MergeBuilder {
        crate::ops::MergeBuilder::new(self.store.clone(), source, on)
    }

    /// OPTIMIZE: compact small files, or Z-order with `.with_zorder_by(&[..])`.
    pub fn optimize(&self) -> crate::ops::optimize::OptimizeBuilder {
        crate::ops::optimize::OptimizeBuilder::new(self.store.clone())
    }

    /// VACUUM: delete files no version inside the retention window references.
    pub fn vacuum(&self) -> crate::ops::vacuum::VacuumBuilder {
        crate::ops::vacuum::VacuumBuilder::new(self.store.clone())
    }

    /// RESTORE: a new commit that returns the table to `.with_version(v)` or
    /// `.with_timestamp_ms(t)`.
    pub fn restore(&self) -> crate::ops::restore::RestoreBuilder {
        crate::ops::restore::RestoreBuilder::new(self.store.clone())
    }

    pub fn scan(&self, snapshot: Snapshot) -> ScanBuilder {
        ScanBuilder::new(snapshot)
    }

    pub async fn history(&self, limit: Option<usize>) -> Result<Vec<HistoryEntry>> {
        crate::ops::history::history(&self.store, limit).await
    }

    /// Writes a checkpoint of the latest version.
    pub async fn checkpoint(&self) -> Result<crate::log::LastCheckpoint> {
        let snap = self.snapshot().await?;
        crate::ops::checkpoint::write_checkpoint(&snap).await
    }
}
