//! `shoal-compactor`: the scheduled service that keeps streaming tables healthy —
//! bin-packing or Z-ordering small files, checkpointing, vacuuming and cleaning the log
//! — through the library's maintenance operations.
//!
//! [`config`] resolves each table's policy, [`lease`] keeps two compactors off one
//! table, [`run`] does one table's maintenance, [`daemon`] schedules runs, [`metrics`]
//! and [`http`] expose what happened.

pub mod config;
pub mod daemon;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod run;

pub use config::{Config, ConfigError, Policy};
pub use run::{Outcome, RunReport, Runner};

/// What can go wrong in the compactor.
#[derive(Debug, thiserror::Error)]
pub enum CompactorError {
    #[error(transparent)]
    Table(#[from] shoal_format::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the lease on `{table}` was taken over by another compactor")]
    LeaseLost { table: String },
    #[error("unreadable lease object `{path}`: {reason}")]
    CorruptLease { path: String, reason: String },
}

/// A name for this process in leases: host, pid and a random suffix.
pub fn default_owner() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "host".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}
