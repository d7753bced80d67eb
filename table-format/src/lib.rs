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

/// Process-wide allocator settings for Shoal's binaries, called first thing in
/// `main`. With glibc, every thread that allocates while another holds an arena gets
/// an arena of its own (up to 8 per core), each keeping the memory freed into it, and
/// the threshold above which blocks are mapped (and unmapped when freed) grows with
/// the largest block freed so far, up to 32 MiB: Parquet encoding on short-lived
/// blocking-pool threads then leaves the resident memory of a rewrite well above what
/// is live. Two arenas and a fixed 1 MiB threshold keep it close to the live set at no
/// measurable cost in speed (W6 MERGE: peak 445 -> 355-375 MB; a 256 KiB threshold
/// saves 50 MB more but maps and unmaps every decoded column, 60% slower). Fixing the
/// threshold also fixes the trim threshold at its 128 KiB default: each batch freed
/// at the top of a heap was handed back to the kernel and faulted in again by the
/// next, so it is raised to 32 MiB (a scan of 10M rows: 330k -> 150k page faults,
/// about 7% less CPU, MERGE's peak unchanged; 64 MiB saves a little more CPU but adds
/// 10-20 MB to MERGE's peak). glibc's own environment variables (`MALLOC_ARENA_MAX`,
/// `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`) win over these defaults.
/// Elsewhere this does nothing.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let unset = |name: &str| std::env::var_os(name).is_none();
        // SAFETY: mallopt only changes allocator parameters; they take effect for
        // allocations made afterwards and are safe to set while other threads allocate.
        unsafe {
            if unset("MALLOC_ARENA_MAX") {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
            if unset("MALLOC_MMAP_THRESHOLD_") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
            }
            if unset("MALLOC_TRIM_THRESHOLD_") {
                libc::mallopt(libc::M_TRIM_THRESHOLD, 32 * 1024 * 1024);
            }
        }
    }
}
