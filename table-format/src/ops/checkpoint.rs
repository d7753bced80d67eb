//! CHECKPOINT: write a checkpoint of a snapshot (see [`Snapshot::write_checkpoint`]).

use crate::error::Result;
use crate::log::checkpoint::LastCheckpoint;
use crate::snapshot::Snapshot;

/// Writes `<version>.checkpoint.parquet` for the snapshot and points `_last_checkpoint`
/// at it.
pub async fn write_checkpoint(snapshot: &Snapshot) -> Result<LastCheckpoint> {
    snapshot.write_checkpoint().await
}
