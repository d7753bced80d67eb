//! The route handlers: free async functions over [`AppState`].

use std::collections::HashMap;

use arrow::array::RecordBatch;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use shoal_format::{SaveMode, SchemaMode, Snapshot, Table};

use crate::auth::Level;
use crate::error::{ApiError, ApiResult};
use crate::ingest::{self, Target};
use crate::metrics::Metrics;
use crate::scan::OutFormat;
use crate::AppState;

/// The table name from the path, validated.
pub struct TableName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for TableName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_name", e.body_text()))?;
        crate::warehouse::validate_name(&name)?;
        Ok(TableName(name))
    }
}

/// Query parameters, with typed accessors that answer 400 on bad values.
pub struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(m) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
        Ok(Params(m))
    }
}

impl Params {
    fn str(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    fn parse<T: std::str::FromStr>(&self, key: &str) -> ApiResult<Option<T>> {
        match self.str(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request("invalid_query", format!("invalid value `{v}` for `{key}`"))
            }),
        }
    }

    fn app(&self) -> ApiResult<Option<(String, i64)>> {
        app_transaction(
            self.str("app_id"),
            self.parse::<i64>("app_version")?,
            "invalid_query",
        )
    }

    fn schema_mode(&self) -> ApiResult<SchemaMode> {
        match self.str("schema_mode") {
            None | Some("enforce") => Ok(SchemaMode::Enforce),
            Some("merge") => Ok(SchemaMode::Merge),
            Some("overwrite") => Ok(SchemaMode::Overwrite),
            Some(v) => Err(ApiError::bad_request(
                "invalid_query",
                format!("invalid schema_mode `{v}` (merge or overwrite)"),
            )),
        }
    }
}

/// An application transaction (Delta `txn`): both its id and version, or neither.
fn app_transaction(
    id: Option<&str>,
    version: Option<i64>,
    code: &'static str,
) -> ApiResult<Option<(String, i64)>> {
    match (id, version) {
        (Some(id), Some(v)) => Ok(Some((id.to_string(), v))),
        (None, None) => Ok(None),
        _ => Err(ApiError::bad_request(
            code,
            "app_id and app_version go together",
        )),
    }
}

fn parse_timestamp(text: &str) -> ApiResult<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_timestamp",
                format!("`{text}` is not an RFC 3339 timestamp (e.g. 2024-01-01T00:00:00Z) or epoch milliseconds"),
            )
        })
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The snapshot at `?version=` or `?timestamp=`, else the latest.
async fn snapshot_of(table: &Table, p: &Params) -> ApiResult<Snapshot> {
    let version = p.parse::<i64>("version")?;
    Ok(match (version, p.str("timestamp")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give version or timestamp, not both",
            ))
        }
        (Some(v), None) => table.snapshot_at(v).await?,
        (None, Some(t)) => table.snapshot_at_timestamp(parse_timestamp(t)?).await?,
        (None, None) => table.snapshot().await?,
    })
}

async fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    empty_ok: bool,
) -> ApiResult<T> {
    ingest::require_json(headers)?;
    let bytes = ingest::read_body(headers, body, state.config().limits.max_body_bytes).await?;
    let bytes: &[u8] = if empty_ok && bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}")))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    if state
        .0
        .shutting_down
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        return ApiError::unavailable("shutting down").into_response();
    }
    match state.warehouse().check().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => ApiError::unavailable(e.message).into_response(),
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics().render(),
    )
        .into_response()
}

pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../spec/openapi.json"),
    )
        .into_response()
}

pub async fn list_tables(
    State(state): State<AppState>,
    headers: HeaderMap,
    p: Params,
) -> ApiResult<Json<Value>> {
    let principal = state.0.auth.authenticate(&headers)?;
    let ns = p.str("namespace");
    let names: Vec<String> = state
        .warehouse()
        .list()
        .await?
        .into_iter()
        .filter(|n| principal.level(n).is_some())
        .filter(|n| ns.is_none() || crate::warehouse::namespace(n) == ns)
        .collect();
    Ok(Json(json!({ "tables": names })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    schema: Value,
    #[serde(default)]
    partition_columns: Vec<String>,
    #[serde(default)]
    properties: HashMap<String, String>,
    #[serde(default)]
    description: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    TableName(name): TableName,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    state.authorize(&headers, &name, Level::Write)?;
    let req: CreateRequest = json_body(&state, &headers, body, false).await?;
    let schema = ingest::parse_schema(&req.schema)?;
    let table = state.warehouse().table(&name)?;
    let mut b = table
        .create(schema)
        .with_partition_columns(&req.partition_columns)
        .with_properties(req.properties)
        .with_name(&name);
    if let Some(d) = &req.description {
        b = b.with_description(d);
    }
    let snap = b.execute().await?;
    state.0.groups.invalidate(&name);
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": name, "version": snap.version()})),
    )
        .into_response())
}

pub async fn describe(
    State(state): State<AppState>,
    TableName(name): TableName,
    headers: HeaderMap,
    p: Params,
) -> ApiResult<Json<Value>> {
    state.authorize(&headers, &name, Level::Read)?;
    let table = state.warehouse().table(&name)?;
    let snap = snapshot_of(&table, &p).await?;
    let (bytes, rows) = snap.totals();
    let props: serde_json::Map<String, Value> = snap
        .metadata()
        .configuration
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    Ok(Json(json!({
        "name": name,
        "version": snap.version(),
        "timestamp": rfc3339(snap.timestamp()),
        "id": snap.metadata().id,
        "description": snap.metadata().description,
        "schema": serde_json::from_str::<Value>(&snap.metadata().schema_string).unwrap_or(Value::Null),
        "partition_columns": snap.partition_columns(),
        "protocol": snap.protocol(),
        "properties": props,
        "num_files": snap.num_files(),
        "size_bytes": bytes,
        "num_rows": rows,
        "checkpoint_version": snap.checkpoint_version(),
    })))
}

pub async fn drop_table(
    State(state): State<AppState>,
    TableName(name): TableName,
    headers: HeaderMap,
    p: Params,
) -> ApiResult<Json<Value>> {
    state.authorize(&headers, &name, Level::Admin)?;
    if p.str("confirm") != Some(name.as_str()) {
        return Err(ApiError::bad_request(
            "confirmation_required",
            format!(
                "dropping deletes every file of the table: repeat its name as `?confirm={name}`"
            ),
        ));
    }
    let table = state.warehouse().table(&name)?;
    let snap = table.snapshot().await?;
    let deleted = state.warehouse().drop_table(&name).await?;
    state.0.groups.remove(&name);
    tracing::info!(table = %name, version = snap.version(), objects = deleted, "table dropped");
    Ok(Json(
        json!({"name": name, "dropped": true, "last_version": snap.version(), "objects_deleted": deleted}),
    ))
}

/// Reads and decodes the rows of a write request.
async fn read_rows(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    target: Target<'_>,
) -> ApiResult<Vec<RecordBatch>> {
    let format = ingest::row_format(headers)?;
    let limits = &state.config().limits;
    let bytes: Bytes = ingest::read_body(headers, body, limits.max_body_bytes).await?;
    let max_rows = limits.max_rows_per_request;
    let batches = if bytes.len() > (1 << 20) {
        // Large bodies decode off the async workers.
        let owned = match target {
            Target::Table(t) => (t.clone(), false),
            Target::TablePlus(t) => (t.clone(), true),
        };
        tokio::task::spawn_blocking(move || {
            let target = if owned.1 {
                Target::TablePlus(&owned.0)
            } else {
                Target::Table(&owned.0)
            };
            ingest::decode(format, &bytes, target, max_rows)
        })
        .await
        .map_err(|e| ApiError::internal(format!("decoding failed: {e}")))??
    } else {
        ingest::decode(format, &bytes, target, max_rows)?
    };
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    Metrics::add(&state.metrics().rows_in, rows as u64);
    Ok(batches)
}

fn write_answer(version: i64, rows: usize, already_applied: bool, extra: Value) -> Json<Value> {
    let mut v = json!({"version": version, "rows": rows, "already_applied": already_applied});
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    Json(v)
}

pub async fn append(
    State(state): State<AppState>,
    TableName(name): TableName,
    headers: HeaderMap,
    p: Params,
    body: Body,
) -> ApiResult<Json<Value>> {
    state.authorize(&headers, &name, Level::Write)?;
    let app = p.app()?;
    let mode = p.schema_mode()?;
    if mode == SchemaMode::Overwrite {
        return Err(ApiError::bad_request(
            "invalid_query",
            "schema_mode=overwrite needs /overwrite",
        ));
    }
    let queue = state.queue(&name)?;
    let snap = queue.snapshot().await?;
    if mode == SchemaMode::Merge {
        let batches = read_rows(&state, &headers, body, Target::TablePlus(snap.schema())).await?;
        return direct_write(&state, &name, batches, SaveMode::Append, mode, app, &p).await;
    }
    let batches = read_rows(&state, &headers, body, Target::Table(snap.schema())).await?;
    if batches.is_empty() && app.is_none() {
        return Ok(write_answer(
            snap.version(),
            0,
            false,
            json!({"committed": false}),
        ));
    }
    let out = queue.append(batches, app).await?;
    Ok(write_answer(
        out.version,
        out.rows,
        out.already_applied,
        json!({
            "committed": !out.already_applied,
            "group_requests": out.group_requests,
            "group_rows": out.group_rows,
            "files_added": out.files_added,
        }),
    ))
}

pub async fn overwrite(
    State(state): State<AppState>,
    TableName(name): TableName,
    headers: HeaderMap,
    p: Params,
    body: Body,
) -> ApiResult<Json<Value>> {
    state.authorize(&headers, &name, Level::Write)?;
    let app = p.app()?;
    let mode = p.schema_mode()?;
    let table = state.warehouse().table(&name)?;
    let snap = table.snapshot().await?;
    let target = match mode {
        SchemaMode::Enforce => Target::Table(snap.schema()),
        _ => Target::TablePlus(snap.schema()),
    };
    let batches = read_rows(&state, &headers, body, target).await?;
    direct_write(&state, &name, batches, SaveMode::Overwrite, mode, app, &p).await
}

/// A write outside the group commit (overwrite, schema evolution).
async fn direct_write(
    state: &AppState,
    name: &str,
    batches: Vec<RecordBatch>,
    save: SaveMode,
    mode: SchemaMode,
    app: Option<(String, i64)>,
    p: &Params,
) -> ApiResult<Json<Value>> {
    let table = state.warehouse().table(name)?;
    let mut w = table.write(batches).with_mode(save).with_schema_mode(mode);
    if let Some((id, v)) = &app {
        w = w.with_app_transaction(id, *v);
    }
    if let Some(pred) = p.str("replace_where") {
        w = w.with_replace_where(pred);
    }
    let r = w.execute().await;
    state.0.groups.invalidate(name);
    let r = r?;
    if r.already_applied {
        Metrics::add(&state.metrics().replays, 1);
    }
    Ok(write_answer(
        r.version,
        r.rows,
        r.already_applied,
        json!({
            "committed": !r.already_applied,
            "files_added": r.files_added,
            "files_removed": r.files_removed,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    source: Vec<Value>,
    on: OnClause,
    #[serde(default)]
    when_matched: Option<String>,
    #[serde(default)]
    when_matched_condition: Option<String>,
    #[serde(default)]
    when_not_matched: Option<String>,
    #[serde(default)]
    when_not_matched_condition: Option<String>,
    #[serde(default)]
    delete_when: Option<String>,
    #[serde(default)]
    dedupe_by: Option<String>,
    #[serde(default)]
    schema_mode: Option<String>,
    #[serde(default)]
    app_id: Option<String>,
    #[serde(default)]
    app_version: Option<i64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OnClause {
    Keys(Vec<String>),
    Condition(String),
}

pub async fn merge(
    State(state): State<AppState>,
    TableName(name): TableName,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    state.authorize(&headers, &name, Level::Write)?;
    let req: MergeRequest = json_body(&state, &headers, body, false).await?;
    let table = state.warehouse().table(&name)?;
    let snap = table.snapshot().await?;
    let source = ingest::decode_values(
        &req.source,
        Target::TablePlus(snap.schema()),
        state.config().limits.max_rows_per_request,
    )?;
    Metrics::add(&state.metrics().rows_in, req.source.len() as u64);
    let condition = match &req.on {
        OnClause::Condition(c) => c.clone(),
        OnClause::Keys(keys) if !keys.is_empty() => keys
            .iter()
            .map(|k| format!("target.`{k}` = source.`{k}`"))
            .collect::<Vec<_>>()
            .join(" AND "),
        OnClause::Keys(_) => {
            return Err(ApiError::bad_request(
                "invalid_argument",
                "`on` names no key column",
            ))
        }
    };
    let mut m = table.merge(source, &condition).with_snapshot(snap);
    if let Some(d) = &req.delete_when {
        m = m.when_matched_delete(Some(d));
    }
    let cond = req.when_matched_condition.as_deref();
    m = match req.when_matched.as_deref() {
        None | Some("update") => m.when_matched_update_all(cond),
        Some("delete") => m.when_matched_delete(cond),
        Some("ignore") => m,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_argument",
                format!("when_matched `{other}`: use update, delete or ignore"),
            ))
        }
    };
    match req.when_not_matched.as_deref() {
        None | Some("insert") => {
            let not_deleted = req.delete_when.as_ref().map(|d| format!("NOT ({d})"));
            let cond = match (&req.when_not_matched_condition, not_deleted) {
                (Some(a), Some(b)) => Some(format!("({a}) AND {b}")),
                (a, b) => a.clone().or(b),
            };
            m = m.when_not_matched_insert_all(cond.as_deref());
        }
        Some("ignore") => {}
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_argument",
                format!("when_not_matched `{other}`: use insert or ignore"),
            ))
        }
    }
    if let Some(col) = &req.dedupe_by {
        m = m.with_dedupe_by(col.clone());
    }
    match req.schema_mode.as_deref() {
        None | Some("enforce") => {}
        Some("merge") => m = m.with_schema_mode(SchemaMode::Merge),
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_argument",
                format!("schema_mode `{other}`: merge supports `merge` only"),
            ))
        }
    }
    if let Some((id, v)) =
        app_transaction(req.app_id.as_deref(), req.app_version, "invalid_argument")?
    {
        m = m.with_app_transaction(&id, v);
    }
    let r = m.execute().await;
    state.0.groups.invalidate(&name);
    let r = r?;
    Ok(Json(json!({
        "version": r.version,
        "committed": !r.unchanged && !r.already_applied,
        "already_applied": r.already_applied,
        "rows_inserted": r.rows_inserted,
        "rows_updated": r.rows_updated,
        "rows_deleted": r.rows_deleted,
        "rows_copied": r.rows_copied,
        "files_added": r.files_added,
        "files_removed": r.files_removed,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    predicate: String,
}

fn row_change_answer(r: &shoal_format::ops::RowChangeResult) -> Json<Value> {
    Json(json!({
        "version": r.version,
        "committed": !r.unchanged,
        "rows_matched": r.rows_matched,
        "rows_copied": r.rows_copied,
        "files_added": r.files_added,
        "files_removed": r.files_removed,
        "files_skipped": r.files_skipped,
    }))
}

pub async fn delete_rows(
    State(state): State<AppState>,
    TableName(name): TableName,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    state.authorize(&headers, &name, Level::Write)?;
    let req: DeleteRequest = json_body(&state, &headers, body, false).await?;
    let table = state.warehouse().table(&name)?;
    let r = table.delete().with_predicate(req.predicate).execute().await;
    state.0.groups.invalidate(&name);
    Ok(row_change_answer(&r?))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Assignments {
    List(Vec<String>),
    Map(serde_json::Map<String, Value>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    set: Assignments,
    #[serde(default)]
    predicate: Option<String>,
}

pub async fn update_rows(
    State(state): State<AppState>,
    TableName(name): TableName,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    state.authorize(&headers, &name, Level::Write)?;
    let req: UpdateRequest = json_body(&state, &headers, body, false).await?;
    let assignments: Vec<String> = match req.set {
        Assignments::List(l) => l,
        Assignments::Map(m) => m
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok(format!("`{k}` = {s}")),
                other => Err(ApiError::bad_request(
                    "invalid_argument",
                    format!("`set.{k}` must be an expression string, not {other}"),
                )),
            })
            .collect::<ApiResult<_>>()?,
    };
    if assignments.is_empty() {
        return Err(ApiError::bad_request("invalid_argument", "`set` is empty"));
    }
    let table = state.warehouse().table(&name)?;
    let mut u = table.update();
    for a in assignments {
        u = u.with_assignment(a);
    }
    if let Some(p) = req.predicate {
        u = u.with_predicate(p);
    }
    let r = u.execute().await;
    state.0.groups.invalidate(&name);
    Ok(row_change_answer(&r?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    #[serde(default)]
    version: Option<i64>,
    #[serde(default)]
    timestamp: Option<String>,
}

pub async fn restore(
    State(state): State<AppState>,
    TableName(name): TableName,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    state.authorize(&headers, &name, Level::Admin)?;
    let req: RestoreRequest = json_body(&state, &headers, body, false).await?;
    let table = state.warehouse().table(&name)?;
    let mut b = table.restore();
    match (req.version, &req.timestamp) {
        (Some(v), None) => b = b.with_version(v),
        (None, Some(t)) => b = b.with_timestamp_ms(parse_timestamp(t)?),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_argument",
                "give `version` or `timestamp`",
            ))
        }
    }
    let r = b.execute().await;
    state.0.groups.invalidate(&name);
    let r = r?;
    Ok(Json(json!({
        "version": r.version,
        "committed": !r.unchanged,
        "restored_version": r.restored_version,
        "files_added": r.files_added,
        "files_removed": r.files_removed,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VacuumRequest {
    #[serde(default)]
    retention_hours: Option<f64>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    force: bool,
}

pub async fn vacuum(
    State(state): State<AppState>,
    TableName(name): TableName,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    state.authorize(&headers, &name, Level::Admin)?;
    let req: VacuumRequest = json_body(&state, &headers, body, true).await?;
    let table = state.warehouse().table(&name)?;
    table.snapshot().await?;
    let r = table
        .vacuum()
        .with_retention_hours(req.retention_hours)
        .with_dry_run(req.dry_run)
        .with_force(req.force)
        .execute()
        .await;
    state.0.groups.invalidate(&name);
    let r = r?;
    Ok(Json(json!({
        "version": r.end_version.unwrap_or(r.version),
        "dry_run": r.dry_run,
        "files_deleted": r.files_deleted,
        "bytes_deleted": r.bytes_deleted,
        "files_kept": r.files_kept,
        "paths": r.paths,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizeRequest {
    #[serde(default)]
    target_size: Option<u64>,
    #[serde(default)]
    zorder_by: Option<Vec<String>>,
    #[serde(default, rename = "where")]
    partition_filter: Option<String>,
}

pub async fn optimize(
    State(state): State<AppState>,
    TableName(name): TableName,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    state.authorize(&headers, &name, Level::Write)?;
    let req: OptimizeRequest = json_body(&state, &headers, body, true).await?;
    let table = state.warehouse().table(&name)?;
    let mut o = table.optimize();
    if let Some(cols) = &req.zorder_by {
        o = o.with_zorder_by(cols);
    }
    if let Some(size) = req.target_size {
        o = o.with_target_size(size);
    }
    if let Some(f) = req.partition_filter {
        o = o.with_partition_filter(f);
    }
    let r = o.execute().await;
    state.0.groups.invalidate(&name);
    let r = r?;
    Ok(Json(json!({
        "version": r.version,
        "committed": !r.unchanged,
        "files_added": r.files_added,
        "files_removed": r.files_removed,
        "bytes_before": r.bytes_before,
        "bytes_after": r.bytes_after,
        "partitions_optimized": r.partitions_optimized,
    })))
}

fn out_format(headers: &HeaderMap) -> ApiResult<OutFormat> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*")
        .to_ascii_lowercase();
    for part in accept.split(',') {
        let essence = part.split(';').next().unwrap_or("").trim();
        match essence {
            ingest::ARROW_STREAM | "*/*" | "application/*" | "" => {
                return Ok(OutFormat::ArrowStream)
            }
            ingest::NDJSON | "application/ndjson" | "application/jsonl" | "application/json" => {
                return Ok(OutFormat::NdJson)
            }
            _ => {}
        }
    }
    Err(ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "not_acceptable",
        format!(
            "cannot answer `{accept}`; accept {} or {}",
            ingest::ARROW_STREAM,
            ingest::NDJSON
        ),
    ))
}

pub async fn scan(
    State(state): State<AppState>,
    TableName(name): TableName,
    headers: HeaderMap,
    p: Params,
) -> ApiResult<Response> {
    state.authorize(&headers, &name, Level::Read)?;
    let format = out_format(&headers)?;
    let table = state.warehouse().table(&name)?;
    let snap = snapshot_of(&table, &p).await?;
    let version = snap.version();
    let mut scan = table.scan(snap).with_limit(p.parse::<usize>("limit")?);
    if let Some(cols) = p.str("columns") {
        let cols: Vec<&str> = cols.split(',').map(str::trim).collect();
        scan = scan.with_columns(&cols);
    }
    if let Some(f) = p.str("filter") {
        scan = scan.with_predicate(f)?;
    }
    let schema = scan.schema()?;
    let stream = scan.execute()?;
    let body = crate::scan::body(stream, schema, format, state.metrics().clone())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let content_type = match format {
        OutFormat::ArrowStream => ingest::ARROW_STREAM,
        OutFormat::NdJson => ingest::NDJSON,
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::HeaderName::from_static("shoal-table-version"),
                version.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

pub async fn history(
    State(state): State<AppState>,
    TableName(name): TableName,
    headers: HeaderMap,
    p: Params,
) -> ApiResult<Json<Value>> {
    state.authorize(&headers, &name, Level::Read)?;
    let table = state.warehouse().table(&name)?;
    let entries = table.history(p.parse::<usize>("limit")?).await?;
    let out: Vec<Value> = entries.iter().map(|e| e.to_json()).collect();
    Ok(Json(json!({"history": out})))
}

pub async fn schema(
    State(state): State<AppState>,
    TableName(name): TableName,
    headers: HeaderMap,
    p: Params,
) -> ApiResult<Json<Value>> {
    state.authorize(&headers, &name, Level::Read)?;
    let table = state.warehouse().table(&name)?;
    let snap = snapshot_of(&table, &p).await?;
    Ok(Json(json!({
        "version": snap.version(),
        "schema": serde_json::from_str::<Value>(&snap.metadata().schema_string).unwrap_or(Value::Null),
        "partition_columns": snap.partition_columns(),
    })))
}

pub async fn files(
    State(state): State<AppState>,
    TableName(name): TableName,
    headers: HeaderMap,
    p: Params,
) -> ApiResult<Json<Value>> {
    state.authorize(&headers, &name, Level::Read)?;
    let table = state.warehouse().table(&name)?;
    let snap = snapshot_of(&table, &p).await?;
    let limit = p.parse::<usize>("limit")?.unwrap_or(usize::MAX);
    let mut files = snap.files();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let total = files.len();
    let out: Vec<Value> = files
        .iter()
        .take(limit)
        .map(|f| {
            json!({
                "path": f.path,
                "size": f.size,
                "modification_time": f.modification_time,
                "partition_values": f.partition_values,
                "stats": f.stats.as_deref().and_then(|s| serde_json::from_str::<Value>(s).ok()),
                "tags": f.tags,
            })
        })
        .collect();
    Ok(Json(
        json!({"version": snap.version(), "num_files": total, "files": out}),
    ))
}
