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
//! # Ok(()) }
//! ```
//!
//! Modules, lowest first (each imports only from those above it):
//! `protocol` → `storage` → `log` → `snapshot` → `scan` / `write` → `transaction` → `ops`.

pub mod error;
pub mod log;
pub mod protocol;
pub mod snapshot;
pub mod storage;

pub use error::{ConflictKind, Error, Result};
pub use snapshot::Snapshot;
pub use storage::TableStore;
