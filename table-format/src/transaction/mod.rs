//! Transactions: gather actions and what was read, commit with put-if-absent on the
//! next version file, and on a lost race check the winners for logical conflicts,
//! rebase and retry. The only code that writes commits into `_delta_log/`.

pub mod conflict;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Map, Value};
use tracing::{debug, warn};

use crate::error::{ConflictKind, Error, Result};
use crate::log::path::listing_offset;
use crate::log::{commit_name, parse_commit, serialize_commit, LogFileKind, LogFileName};
use crate::protocol::{Action, CommitInfo};
use crate::snapshot::Snapshot;
use crate::storage::{PutOutcome, TableStore};

pub use conflict::{ReadPredicate, ReadSet};

/// Default bound on commit attempts.
pub const DEFAULT_MAX_ATTEMPTS: usize = 100;

/// The engine name written in `commitInfo.engineInfo`.
pub fn engine_info() -> String {
    format!("shoal/{}", env!("CARGO_PKG_VERSION"))
}

/// A set of actions to commit atomically.
#[derive(Debug)]
#[must_use = "a transaction does nothing until committed"]
pub struct Transaction {
    store: TableStore,
    base: Option<Snapshot>,
    operation: String,
    parameters: Map<String, Value>,
    metrics: Map<String, Value>,
    actions: Vec<Action>,
    read: ReadSet,
    max_attempts: usize,
    auto_checkpoint: bool,
    blind_append: bool,
    store_retry_timeout: Option<Duration>,
}

/// Who wrote the log file this transaction tried to create.
enum Landed {
    /// This transaction (perhaps by a try whose answer was lost).
    Mine,
    /// Another writer: its commit's bytes.
    Other(Bytes),
}

/// The `commitInfo.txnId` of a commit, if it has one.
fn txn_id_of(actions: &[Action]) -> Option<&str> {
    actions.iter().find_map(|a| match a {
        Action::CommitInfo(ci) => ci.0.get("txnId").and_then(Value::as_str),
        _ => None,
    })
}

/// The outcome of a successful commit.
#[derive(Debug, Clone)]
pub struct CommitResult {
    pub version: i64,
    /// The table right after this commit (including rebased-over winners).
    pub snapshot: Snapshot,
    pub attempts: usize,
}

impl Transaction {
    /// A transaction on an existing table, reading at `base`.
    pub fn new(base: &Snapshot, operation: &str) -> Self {
        Transaction {
            store: base.store().clone(),
            base: Some(base.clone()),
            operation: operation.to_string(),
            parameters: Map::new(),
            metrics: Map::new(),
            actions: Vec::new(),
            read: ReadSet::default(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            auto_checkpoint: true,
            blind_append: false,
            store_retry_timeout: None,
        }
    }

    /// A transaction creating the table (version 0).
    pub fn create(store: &TableStore, operation: &str) -> Self {
        Transaction {
            store: store.clone(),
            base: None,
            operation: operation.to_string(),
            parameters: Map::new(),
            metrics: Map::new(),
            actions: Vec::new(),
            read: ReadSet::default(),
            max_attempts: 1,
            auto_checkpoint: true,
            blind_append: false,
            store_retry_timeout: None,
        }
    }

    pub fn with_actions(mut self, actions: impl IntoIterator<Item = Action>) -> Self {
        for a in actions {
            if matches!(a, Action::Protocol(_) | Action::Metadata(_)) {
                self.read.changes_metadata = true;
            }
            if let Action::Txn(t) = &a {
                if !self.read.app_ids.contains(&t.app_id) {
                    self.read.app_ids.push(t.app_id.clone());
                }
            }
            if let Action::Remove(r) = &a {
                self.read.files_removed.insert(crate::snapshot::file_key(
                    &r.path,
                    r.deletion_vector.as_ref(),
                ));
            }
            self.actions.push(a);
        }
        self
    }

    pub fn with_read_set(mut self, read: ReadSet) -> Self {
        let removed = std::mem::take(&mut self.read.files_removed);
        let apps = std::mem::take(&mut self.read.app_ids);
        let changes = self.read.changes_metadata;
        self.read = read;
        self.read.files_removed.extend(removed);
        for app in apps {
            if !self.read.app_ids.contains(&app) {
                self.read.app_ids.push(app);
            }
        }
        self.read.changes_metadata |= changes;
        self
    }

    pub fn with_parameter(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.parameters.insert(key.to_string(), value.into());
        self
    }

    pub fn with_metric(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.metrics.insert(key.to_string(), value.into());
        self
    }

    pub fn with_max_attempts(mut self, attempts: usize) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Write a checkpoint when the new version is a multiple of the interval (default on).
    pub fn with_auto_checkpoint(mut self, on: bool) -> Self {
        self.auto_checkpoint = on;
        self
    }

    /// Bounds the time spent retrying the log write after transient store errors
    /// (default: the store's retry timeout).
    pub fn with_store_retry_timeout(mut self, timeout: Duration) -> Self {
        self.store_retry_timeout = Some(timeout);
        self
    }

    /// Marks the transaction as reading nothing and only adding files.
    pub fn blind_append(mut self) -> Self {
        self.blind_append = true;
        self
    }

    fn commit_info(
        &self,
        timestamp: i64,
        ict: Option<i64>,
        read_version: Option<i64>,
        txn_id: &str,
    ) -> Action {
        let mut m = Map::new();
        if let Some(ict) = ict {
            m.insert("inCommitTimestamp".into(), Value::from(ict));
        }
        m.insert("timestamp".into(), Value::from(timestamp));
        m.insert("operation".into(), Value::from(self.operation.clone()));
        m.insert(
            "operationParameters".into(),
            Value::Object(self.parameters.clone()),
        );
        if let Some(v) = read_version {
            m.insert("readVersion".into(), Value::from(v));
        }
        m.insert("isolationLevel".into(), Value::from("Serializable"));
        m.insert("isBlindAppend".into(), Value::from(self.blind_append));
        // Delta writes metrics as strings.
        let metrics: Map<String, Value> = self
            .metrics
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), Value::from(s))
            })
            .collect();
        m.insert("operationMetrics".into(), Value::Object(metrics));
        m.insert("engineInfo".into(), Value::from(engine_info()));
        m.insert("txnId".into(), Value::from(txn_id));
        Action::CommitInfo(CommitInfo(m))
    }

    fn ict_enabled(&self) -> bool {
        let from_actions = self.actions.iter().rev().find_map(|a| match a {
            Action::Metadata(m) => {
                Some(m.property("delta.enableInCommitTimestamps") == Some("true"))
            }
            _ => None,
        });
        from_actions.unwrap_or_else(|| self.base.as_ref().is_some_and(|b| b.in_commit_timestamps()))
    }

    /// Commits, retrying on lost races that do not conflict logically.
    pub async fn commit(self) -> Result<CommitResult> {
        let read_version = self.base.as_ref().map(|b| b.version());
        let mut version = read_version.map(|v| v + 1).unwrap_or(0);
        let ict_enabled = self.ict_enabled();
        let mut last_ts = self
            .base
            .as_ref()
            .map(|b| b.timestamp())
            .unwrap_or(i64::MIN);
        let mut winners: Vec<(i64, Vec<Action>, i64)> = Vec::new();
        // One id for every try: the log file of any version is written by at most one
        // of them, and reading it back tells whether a try whose answer was lost landed.
        let txn_id = uuid::Uuid::new_v4().to_string();
        for attempt in 1..=self.max_attempts {
            let now = chrono::Utc::now().timestamp_millis();
            let ict = ict_enabled.then(|| now.max(last_ts.saturating_add(1)));
            let mut actions = Vec::with_capacity(self.actions.len() + 1);
            actions.push(self.commit_info(now, ict, read_version, &txn_id));
            actions.extend(self.actions.iter().cloned());
            let bytes = Bytes::from(serialize_commit(&actions)?);
            let path = self.store.log_path(&commit_name(version));
            match self.put_commit(version, &path, bytes, &txn_id).await? {
                Landed::Mine => {
                    debug!(version, attempt, operation = %self.operation, "committed");
                    let timestamp = ict.unwrap_or(now);
                    let snapshot = self
                        .post_commit_snapshot(&winners, version, &actions, timestamp)
                        .await?;
                    if self.auto_checkpoint
                        && version > 0
                        && version % snapshot.checkpoint_interval() == 0
                    {
                        if let Err(e) = snapshot.write_checkpoint().await {
                            warn!(version, error = %e, "automatic checkpoint failed; the commit stands");
                        }
                    }
                    return Ok(CommitResult {
                        version,
                        snapshot,
                        attempts: attempt,
                    });
                }
                Landed::Other(data) => {
                    if self.base.is_none() {
                        return Err(Error::TableAlreadyExists(self.store.uri().to_string()));
                    }
                    debug!(version, attempt, "lost the commit race; rebasing");
                    let mut behind = vec![(version, data)];
                    // Lost twice or more: writers are committing faster than one version
                    // per try, so trying the next version each time would never catch up
                    // (one writer lost a hundred races in a row that way against three
                    // tight-loop writers on S3). Read every commit already beyond it.
                    if attempt > 1 {
                        behind.extend(self.commits_from(version + 1).await?);
                    }
                    for (v, data) in behind {
                        let winner = parse_commit(&data, &commit_name(v))?;
                        conflict::check(&self.read, &winner).map_err(Error::Conflict)?;
                        let winner_ts = winner
                            .iter()
                            .find_map(|a| match a {
                                Action::CommitInfo(ci) => {
                                    ci.in_commit_timestamp().or(ci.timestamp())
                                }
                                _ => None,
                            })
                            .unwrap_or(now);
                        last_ts = last_ts.max(winner_ts);
                        winners.push((v, winner, winner_ts));
                        version = v + 1;
                    }
                }
            }
        }
        Err(Error::Conflict(ConflictKind::RetriesExhausted {
            attempts: self.max_attempts,
        }))
    }

    /// The commits at `from` and after, in order, up to the first gap: listed from the
    /// log, then read a few at a time.
    async fn commits_from(&self, from: i64) -> Result<Vec<(i64, Bytes)>> {
        let listed = self.store.list_log(Some(&listing_offset(from))).await?;
        let mut versions = Vec::new();
        // Sorted by name: a version's checkpoint comes before its commit file.
        for (name, _) in listed {
            let Some(file) = LogFileName::parse(&name) else {
                continue;
            };
            let next = from + versions.len() as i64;
            if file.kind == LogFileKind::Commit && file.version == next {
                versions.push(file.version);
            } else if file.version > next {
                break;
            }
        }
        let store = &self.store;
        let fetched: Vec<(i64, Option<Bytes>)> = futures::stream::iter(versions)
            .map(|v| async move {
                let data = store.get_opt(&store.log_path(&commit_name(v))).await?;
                Ok::<_, Error>((v, data))
            })
            .buffered(8)
            .try_collect()
            .await?;
        Ok(fetched
            .into_iter()
            .map_while(|(v, data)| data.map(|d| (v, d)))
            .collect())
    }

    /// Writes the log file of `version` if absent and says who wrote it. A transient
    /// store error leaves the outcome unknown (the write may have happened and its
    /// answer been lost), so the file is read back: this transaction's id there means
    /// it landed, another id means another writer won, no file means it did not land
    /// and the same bytes are written again, with backoff, for a bounded time. A
    /// put-if-absent never lands twice, so this never duplicates a commit.
    async fn put_commit(
        &self,
        version: i64,
        path: &object_store::path::Path,
        bytes: Bytes,
        txn_id: &str,
    ) -> Result<Landed> {
        let started = Instant::now();
        let bound = self
            .store_retry_timeout
            .unwrap_or_else(|| self.store.retry_timeout());
        let mut delay = Duration::from_millis(50);
        let name = commit_name(version);
        loop {
            let unknown = match self.store.put_if_absent(path, bytes.clone()).await {
                Ok(PutOutcome::Created) => return Ok(Landed::Mine),
                Ok(PutOutcome::AlreadyExists) => None,
                Err(e) if e.is_transient_storage() => Some(e),
                Err(e) => return Err(e),
            };
            let read_back = match self.store.get_opt(path).await {
                Ok(found) => found,
                Err(e) if e.is_transient_storage() => None,
                Err(e) => return Err(e),
            };
            match read_back {
                Some(data) => {
                    let actions = parse_commit(&data, &name)?;
                    if txn_id_of(&actions) == Some(txn_id) {
                        if unknown.is_some() {
                            debug!(version, "the log write's answer was lost, but it landed");
                        }
                        return Ok(Landed::Mine);
                    }
                    return Ok(Landed::Other(data));
                }
                None if unknown.is_none() => {
                    return Err(Error::corrupt(name, "commit vanished after a lost race"));
                }
                None => {}
            }
            let error = unknown.map(|e| e.to_string()).unwrap_or_default();
            if started.elapsed() + delay > bound {
                return Err(Error::CommitOutcomeUnknown {
                    version,
                    txn_id: txn_id.to_string(),
                    reason: error,
                });
            }
            warn!(version, error = %error, "transient store error writing the log; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn post_commit_snapshot(
        &self,
        winners: &[(i64, Vec<Action>, i64)],
        version: i64,
        actions: &[Action],
        timestamp: i64,
    ) -> Result<Snapshot> {
        match &self.base {
            Some(base) => {
                let mut snap = base.clone();
                for (v, acts, ts) in winners {
                    snap = snap.apply_commit(*v, acts, *ts)?;
                }
                snap.apply_commit(version, actions, timestamp)
            }
            None => Snapshot::from_actions(&self.store, version, actions, timestamp),
        }
    }
}
