//! Table operations, each a builder over a snapshot that ends in `.execute()`.

pub mod checkpoint;
pub mod create;
pub mod delete;
pub mod history;
pub mod merge;
pub mod optimize;
pub mod progress;
pub mod restore;
pub(crate) mod rewrite;
pub mod vacuum;
pub mod write;

pub use create::CreateTableBuilder;

/// How many times DELETE, UPDATE and MERGE run in all when they keep losing races to
/// concurrent compactions.
const COMPACTION_RETRIES: usize = 5;

/// Runs an operation; when it loses the commit race to a concurrent compaction (which
/// rewrote files the operation rewrites, without changing rows), runs it again on the
/// latest snapshot (`unpin` drops the builder's pinned one), a few times at most. Any
/// other outcome is returned as is.
pub(crate) async fn rerun_after_compaction<B, T, Fut>(
    mut builder: B,
    unpin: impl Fn(&mut B),
    run: impl Fn(B) -> Fut,
) -> crate::Result<T>
where
    B: Clone,
    Fut: std::future::Future<Output = crate::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match run(builder.clone()).await {
            Err(crate::Error::Conflict(crate::ConflictKind::ConcurrentCompaction { path }))
                if attempt < COMPACTION_RETRIES =>
            {
                tracing::info!(%path, attempt, "lost a race to a compaction; running again on the latest snapshot");
                attempt += 1;
                unpin(&mut builder);
            }
            other => return other,
        }
    }
}
pub use delete::{DeleteBuilder, RowChangeResult, UpdateBuilder};
pub use merge::{MergeBuilder, MergeResult};
pub use write::{SaveMode, WriteBuilder, WriteResult};
