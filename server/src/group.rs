//! Group commit: concurrent appends to one table share commits.
//!
//! Each table has a queue. A request is validated alone first (its rows conformed to
//! the table schema, its application transaction checked), then joins the queue. When
//! no commit is in flight, the request that found the queue idle starts a leader task;
//! the leader takes everything queued (up to a row bound), writes it as one WRITE
//! commit (one file per partition up to the target file size, one `txn` action per
//! application id) and answers each request with the shared version, then takes what
//! queued meanwhile, until the queue is empty. The leader is a task of its own, so a
//! client that goes away never cancels a commit others wait on.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use shoal_format::write::conform_batch;
use shoal_format::{ConflictKind, Error as FormatError, SaveMode, Snapshot, Table};
use tokio::sync::oneshot;

use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;

/// What an append request gets back.
#[derive(Debug, Clone)]
pub struct AppendOutcome {
    pub version: i64,
    pub rows: usize,
    /// The application transaction was committed before: nothing was written.
    pub already_applied: bool,
    /// Requests that shared the commit.
    pub group_requests: usize,
    /// Rows in the commit.
    pub group_rows: usize,
    pub files_added: usize,
}

struct Pending {
    batches: Vec<RecordBatch>,
    /// The `schemaString` the batches were conformed to.
    schema: Arc<str>,
    rows: usize,
    app: Option<(String, i64)>,
    reply: oneshot::Sender<ApiResult<AppendOutcome>>,
}

#[derive(Default)]
struct QueueState {
    pending: VecDeque<Pending>,
    running: bool,
}

/// One table's queue and its latest known snapshot.
pub struct TableQueue {
    table: Table,
    state: Mutex<QueueState>,
    latest: Mutex<Option<Snapshot>>,
    max_group_rows: usize,
    metrics: Arc<Metrics>,
}

/// How often a group is rebuilt on a fresh snapshot after a lost race that touched it
/// (schema change, concurrent application transaction).
const GROUP_RETRIES: usize = 4;

impl TableQueue {
    /// The latest snapshot this server knows (loaded when unknown). It may be behind
    /// other writers; commits rebase onto theirs.
    pub async fn snapshot(&self) -> Result<Snapshot, FormatError> {
        if let Some(s) = self.latest.lock().ok().and_then(|g| g.clone()) {
            return Ok(s);
        }
        let s = self.table.snapshot().await?;
        self.remember(&s);
        Ok(s)
    }

    fn remember(&self, s: &Snapshot) {
        if let Ok(mut g) = self.latest.lock() {
            if g.as_ref().is_none_or(|old| old.version() < s.version()) {
                *g = Some(s.clone());
            }
        }
    }

    /// Forgets the snapshot (after a commit that did not go through the queue).
    pub fn invalidate(&self) {
        if let Ok(mut g) = self.latest.lock() {
            *g = None;
        }
    }

    /// Appends rows through the group commit. The rows are validated here, alone.
    pub async fn append(
        self: &Arc<Self>,
        batches: Vec<RecordBatch>,
        app: Option<(String, i64)>,
    ) -> ApiResult<AppendOutcome> {
        let snap = self.snapshot().await?;
        if let Some((id, v)) = &app {
            if snap
                .app_transaction_version(id)
                .is_some_and(|last| last >= *v)
            {
                Metrics::add(&self.metrics.replays, 1);
                return Ok(replay(snap.version()));
            }
        }
        let (batches, rows) = conform(&snap, &batches)?;
        let schema: Arc<str> = Arc::from(snap.metadata().schema_string.as_str());
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut st = self
                .state
                .lock()
                .map_err(|_| ApiError::internal("group commit queue poisoned"))?;
            st.pending.push_back(Pending {
                batches,
                schema,
                rows,
                app,
                reply: tx,
            });
            !std::mem::replace(&mut st.running, true)
        };
        if start {
            let me = self.clone();
            tokio::spawn(async move { me.lead().await });
        }
        rx.await
            .map_err(|_| ApiError::internal("the group commit ended without an answer"))?
    }

    /// Takes the next group: queued requests up to the row bound, at most one per
    /// application id (later ones wait for the next commit).
    fn next_group(&self) -> Vec<Pending> {
        let Ok(mut st) = self.state.lock() else {
            return Vec::new();
        };
        let mut group: Vec<Pending> = Vec::new();
        let mut rest = VecDeque::new();
        let mut rows = 0usize;
        while let Some(p) = st.pending.pop_front() {
            let dup = p.app.as_ref().is_some_and(|(id, _)| {
                group
                    .iter()
                    .any(|g| g.app.as_ref().is_some_and(|(g, _)| g == id))
            });
            if dup || (!group.is_empty() && rows + p.rows > self.max_group_rows) {
                rest.push_back(p);
                continue;
            }
            rows += p.rows;
            group.push(p);
        }
        st.pending = rest;
        if group.is_empty() {
            st.running = false;
        }
        group
    }

    async fn lead(self: Arc<Self>) {
        loop {
            let group = self.next_group();
            if group.is_empty() {
                return;
            }
            self.commit_group(group).await;
        }
    }

    async fn commit_group(&self, mut group: Vec<Pending>) {
        let mut fresh = false;
        for attempt in 1..=GROUP_RETRIES {
            let snap = if fresh {
                self.invalidate();
                self.snapshot().await
            } else {
                self.snapshot().await
            };
            let snap = match snap {
                Ok(s) => s,
                Err(e) => return fail_all(group, e.into()),
            };
            // Replays and schema changes, decided per request on this snapshot.
            let schema_now = snap.metadata().schema_string.as_str();
            let mut members = Vec::with_capacity(group.len());
            for mut p in group {
                if let Some((id, v)) = &p.app {
                    if snap
                        .app_transaction_version(id)
                        .is_some_and(|last| last >= *v)
                    {
                        Metrics::add(&self.metrics.replays, 1);
                        let _ = p.reply.send(Ok(replay(snap.version())));
                        continue;
                    }
                }
                if &*p.schema != schema_now {
                    match conform(&snap, &p.batches) {
                        Ok((b, _)) => {
                            p.batches = b;
                            p.schema = Arc::from(schema_now);
                        }
                        Err(e) => {
                            let _ = p.reply.send(Err(e));
                            continue;
                        }
                    }
                }
                members.push(p);
            }
            if members.is_empty() {
                return;
            }
            let batches: Vec<RecordBatch> = members
                .iter()
                .flat_map(|p| p.batches.iter().cloned())
                .collect();
            let apps: Vec<(String, i64)> = members.iter().filter_map(|p| p.app.clone()).collect();
            let rows: usize = members.iter().map(|p| p.rows).sum();
            let result = self
                .table
                .write(batches)
                .with_snapshot(snap)
                .with_mode(SaveMode::Append)
                .with_app_transactions(&apps)
                .execute()
                .await;
            match result {
                Ok(r) if !r.already_applied => {
                    self.remember(&r.snapshot);
                    self.metrics.group_commit(members.len(), rows);
                    tracing::debug!(
                        version = r.version,
                        requests = members.len(),
                        rows,
                        "group commit"
                    );
                    let n = members.len();
                    for p in members {
                        let _ = p.reply.send(Ok(AppendOutcome {
                            version: r.version,
                            rows: p.rows,
                            already_applied: false,
                            group_requests: n,
                            group_rows: rows,
                            files_added: r.files_added,
                        }));
                    }
                    return;
                }
                // Another writer committed some of these application transactions, or
                // changed the schema: rebuild the group on the latest snapshot.
                Ok(_)
                | Err(FormatError::Conflict(
                    ConflictKind::ConcurrentTransaction { .. }
                    | ConflictKind::MetadataChanged
                    | ConflictKind::ProtocolChanged,
                )) if attempt < GROUP_RETRIES => {
                    fresh = true;
                    group = members;
                }
                Ok(_) => {
                    return fail_all(
                        members,
                        ApiError::new(
                            axum::http::StatusCode::CONFLICT,
                            "conflict",
                            "concurrent writers kept committing these application transactions",
                        ),
                    )
                }
                Err(e) => {
                    self.invalidate();
                    return fail_all(members, e.into());
                }
            }
        }
    }
}

fn replay(version: i64) -> AppendOutcome {
    AppendOutcome {
        version,
        rows: 0,
        already_applied: true,
        group_requests: 0,
        group_rows: 0,
        files_added: 0,
    }
}

fn fail_all(group: Vec<Pending>, e: ApiError) {
    for p in group {
        let _ = p.reply.send(Err(e.clone()));
    }
}

/// Conforms batches to the snapshot's schema; the error names the column.
fn conform(snap: &Snapshot, batches: &[RecordBatch]) -> ApiResult<(Vec<RecordBatch>, usize)> {
    let schema = snap.schema();
    let target = Arc::new(schema.to_arrow()?);
    let mut rows = 0;
    let out = batches
        .iter()
        .map(|b| {
            rows += b.num_rows();
            conform_batch(b, schema, &target)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((out, rows))
}

/// The queues of every table written through this server.
#[derive(Default)]
pub struct Groups {
    tables: Mutex<HashMap<String, Arc<TableQueue>>>,
}

impl Groups {
    /// The queue of a table (by its validated name).
    pub fn queue(
        &self,
        name: &str,
        table: &Table,
        max_group_rows: usize,
        metrics: &Arc<Metrics>,
    ) -> Arc<TableQueue> {
        let mut m = match self.tables.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(TableQueue {
                    table: table.clone(),
                    state: Mutex::new(QueueState::default()),
                    latest: Mutex::new(None),
                    max_group_rows,
                    metrics: metrics.clone(),
                })
            })
            .clone()
    }

    /// Forgets a table's snapshot (after writes that bypass the queue, or a drop).
    pub fn invalidate(&self, name: &str) {
        let q = match self.tables.lock() {
            Ok(m) => m.get(name).cloned(),
            Err(_) => None,
        };
        if let Some(q) = q {
            q.invalidate();
        }
    }

    /// Forgets a table altogether (dropped).
    pub fn remove(&self, name: &str) {
        if let Ok(mut m) = self.tables.lock() {
            m.remove(name);
        }
    }
}
