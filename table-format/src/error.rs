//! The library's error type: one enum, variants grouped by meaning.

use std::fmt;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of conflict made a commit give up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConflictKind {
    /// A concurrent commit changed the protocol.
    ProtocolChanged,
    /// A concurrent commit changed the table metadata (schema, properties, partitioning).
    MetadataChanged,
    /// A concurrent commit used the same application transaction id.
    ConcurrentTransaction { app_id: String },
    /// A concurrent commit added data this transaction read.
    ConcurrentAppend { path: String },
    /// A concurrent commit removed a file this transaction read.
    ConcurrentDeleteRead { path: String },
    /// A concurrent commit removed a file this transaction removes too.
    ConcurrentDeleteDelete { path: String },
    /// A concurrent compaction (a commit that changed no data: OPTIMIZE, Z-order)
    /// rewrote file `path` that this transaction removes. The rows are the same, so the
    /// operation can be run again on the new files.
    ConcurrentCompaction { path: String },
    /// The table was created concurrently.
    TableCreatedConcurrently,
    /// Every retry lost the race.
    RetriesExhausted { attempts: usize },
}

impl fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ProtocolChanged => write!(f, "the protocol was changed by a concurrent commit"),
            Self::MetadataChanged => write!(f, "the metadata was changed by a concurrent commit"),
            Self::ConcurrentTransaction { app_id } => {
                write!(
                    f,
                    "a concurrent commit wrote application transaction `{app_id}`"
                )
            }
            Self::ConcurrentAppend { path } => {
                write!(
                    f,
                    "a concurrent commit added file `{path}` that this transaction would have read"
                )
            }
            Self::ConcurrentDeleteRead { path } => {
                write!(
                    f,
                    "a concurrent commit removed file `{path}` that this transaction read"
                )
            }
            Self::ConcurrentDeleteDelete { path } => {
                write!(
                    f,
                    "a concurrent commit removed file `{path}` that this transaction removes too"
                )
            }
            Self::ConcurrentCompaction { path } => {
                write!(
                    f,
                    "a concurrent compaction rewrote file `{path}` that this transaction removes"
                )
            }
            Self::TableCreatedConcurrently => write!(f, "the table was created concurrently"),
            Self::RetriesExhausted { attempts } => {
                write!(f, "lost the commit race {attempts} times in a row")
            }
        }
    }
}

/// Errors of the Shoal table format.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no Delta table at `{0}` (no `_delta_log` commits found)")]
    TableNotFound(String),
    #[error("a table already exists at `{0}`")]
    TableAlreadyExists(String),
    #[error("version {version} does not exist: {reason}")]
    VersionNotFound { version: i64, reason: String },
    #[error("timestamp {timestamp} is {reason}")]
    TimestampOutOfRange { timestamp: String, reason: String },
    #[error("unsupported {kind} feature `{feature}`: Shoal cannot {action} this table safely")]
    UnsupportedFeature {
        kind: &'static str,
        feature: String,
        action: &'static str,
    },
    #[error("unsupported protocol: {0}")]
    UnsupportedProtocol(String),
    #[error("corrupt Delta log at `{path}`: {reason}")]
    CorruptLog { path: String, reason: String },
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    #[error("schema mismatch on column `{column}`: {reason}")]
    SchemaMismatch { column: String, reason: String },
    #[error("invalid partition value for column `{column}`: {reason}")]
    InvalidPartitionValue { column: String, reason: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("data file `{path}` referenced by the log is missing")]
    MissingDataFile { path: String },
    #[error("commit conflict: {0}")]
    Conflict(ConflictKind),
    #[error("operation not allowed: {0}")]
    NotAllowed(String),
    #[error("invalid table location `{uri}`: {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("storage error: {0}")]
    Storage(#[from] object_store::Error),
    /// The store kept failing while the log file of `version` was written, and reading
    /// it back could not tell whether the write landed. Look for `commitInfo.txnId`
    /// in that version before retrying the operation.
    #[error("commit outcome unknown at version {version} (txnId {txn_id}): {reason}")]
    CommitOutcomeUnknown {
        version: i64,
        txn_id: String,
        reason: String,
    },
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("background task failed: {0}")]
    Task(String),
    /// Expression text that cannot be parsed or uses unsupported syntax.
    #[error("invalid expression: {0}")]
    InvalidExpression(String),
    /// An expression names a column the schema does not have.
    #[error("unknown column `{column}`{}", did_you_mean(.suggestion.as_deref()))]
    UnknownColumn {
        column: String,
        suggestion: Option<String>,
    },
    /// An expression is well-formed but its types do not fit together.
    #[error("type error: {0}")]
    ExpressionType(String),
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

impl Error {
    pub(crate) fn corrupt(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::CorruptLog {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn mismatch(column: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::SchemaMismatch {
            column: column.into(),
            reason: reason.into(),
        }
    }

    /// True for store errors that may go away on retry (5xx, throttling, timeouts,
    /// broken connections); see [`crate::storage::is_transient`].
    pub fn is_transient_storage(&self) -> bool {
        match self {
            Error::Storage(e) => crate::storage::is_transient(e),
            Error::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }

    /// True when retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Conflict(ConflictKind::RetriesExhausted { .. })
                | Error::Storage(_)
                | Error::Io(_)
        )
    }
}
