//! # shoal-format
//!
//! A transactional table format on object storage, on-disk compatible with the Delta
//! Lake protocol: Parquet data files plus a JSON commit log in `_delta_log/`.
//!
//! ```no_run
//! # async fn demo() -> shoal_format::Result<()> {
//! use shoal_format::Table;
//! let table = Table::open("./warehouse/events").await?;
//! let snapshot = table.snapshot().await?;
//! println!("version {} has {} files", snapshot.version(), snapshot.num_files());
//! let batches = table.scan(snapshot).with_columns(&["id"]).collect().await?;
//! # Ok(()) }
//! ```
//!
//! Modules, lowest first (each imports only from those above it):
//! `protocol` → `storage` → `log` → `snapshot` → `expr` → `scan` / `write` → `transaction` →
//! `ops` → `table`.

pub mod error;
pub mod expr;
pub mod log;
pub mod ops;
pub mod protocol;
pub mod scan;
pub mod snapshot;
pub mod storage;
pub mod table;
pub mod transaction;
pub mod write;

pub use error::{ConflictKind, Error, Result};
pub use ops::{SaveMode, WriteResult};
pub use protocol::{DataType, StructField, StructType};
pub use snapshot::Snapshot;
pub use storage::{StorageOptions, TableStore};
pub use table::Table;
pub use write::SchemaMode;
