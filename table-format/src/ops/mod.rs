//! Table operations, each a builder over a snapshot that ends in `.execute()`.

pub mod checkpoint;
pub mod create;
pub mod delete;
pub mod history;
pub mod merge;
pub mod optimize;
pub mod restore;
pub(crate) mod rewrite;
pub mod vacuum;
pub mod write;

pub use create::CreateTableBuilder;

/// How many times DELETE, UPDATE and MERGE run again after losing a race to a
/// concurrent compaction before giving up.
pub(crate) const COMPACTION_RETRIES: usize = 5;
pub use delete::{DeleteBuilder, RowChangeResult, UpdateBuilder};
pub use merge::{MergeBuilder, MergeResult};
pub use write::{SaveMode, WriteBuilder, WriteResult};
