//! shoal-server over real HTTP: every route, every error path (each a clear 4xx that
//! changes no table), group commit under 32 concurrent clients, auth, limits, and a
//! server-written table read by delta-rs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use shoal_server::auth::{hash_token, Level, TokenEntry};
use shoal_server::config::ServerConfig;
use shoal_server::{serve, AppState};
use shoal_tests::{python, run_python};

const ARROW: &str = "application/vnd.apache.arrow.stream";
const NDJSON: &str = "application/x-ndjson";

struct Server {
    url: String,
    client: Client,
    dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig {
        warehouse: dir.path().join("wh").to_str().unwrap().to_string(),
        ..Default::default()
    };
    configure(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, AppState::new(config), async move {
        let _ = rx.await;
    }));
    Server {
        url,
        client: Client::new(),
        dir,
        _stop: tx,
    }
}

async fn start() -> Server {
    start_with(|_| {}).await
}

impl Server {
    fn u(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    async fn create(&self, name: &str, schema: Value) -> reqwest::Response {
        self.client
            .put(self.u(&format!("/v1/tables/{name}")))
            .json(&json!({ "schema": schema }))
            .send()
            .await
            .unwrap()
    }

    async fn post_rows(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let r = self
            .client
            .post(self.u(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .client
            .post(self.u(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let r = self.client.get(self.u(path)).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn version(&self, name: &str) -> i64 {
        let (s, v) = self.get_json(&format!("/v1/tables/{name}")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["version"].as_i64().unwrap()
    }

    /// Every row as NDJSON objects.
    async fn scan_ndjson(&self, name: &str, query: &str) -> Vec<Value> {
        let r = self
            .client
            .get(self.u(&format!("/v1/tables/{name}/scan{query}")))
            .header("accept", NDJSON)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let text = r.text().await.unwrap();
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    async fn scan_arrow(&self, name: &str, query: &str) -> Vec<RecordBatch> {
        let r = self
            .client
            .get(self.u(&format!("/v1/tables/{name}/scan{query}")))
            .header("accept", ARROW)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], ARROW);
        let bytes = r.bytes().await.unwrap();
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }
}

fn ids_batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let names: StringArray = ids.clone().map(|i| Some(format!("n{i}"))).collect();
    RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from_iter_values(ids)), Arc::new(names)],
    )
    .unwrap()
}

fn ipc(batches: &[RecordBatch]) -> Vec<u8> {
    let mut w =
        arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &batches[0].schema()).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    w.into_inner().unwrap()
}

fn ndjson(ids: std::ops::Range<i64>) -> Vec<u8> {
    ids.map(|i| format!("{{\"id\":{i},\"name\":\"n{i}\"}}\n"))
        .collect::<String>()
        .into_bytes()
}

fn ids_of(batches: &[RecordBatch]) -> Vec<i64> {
    let mut out: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    out.sort();
    out
}

const PEOPLE: &str = "id long not null, name string";

async fn people(s: &Server, name: &str) {
    let r = s.create(name, json!(PEOPLE)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_describe_list_drop() {
    let s = start().await;
    people(&s, "people").await;
    // A Delta schema JSON object, partitioned, in a namespace.
    let schema = json!({"type": "struct", "fields": [
        {"name": "id", "type": "long", "nullable": false, "metadata": {}},
        {"name": "country", "type": "string", "nullable": true, "metadata": {}}]});
    let r = s
        .client
        .put(s.u("/v1/tables/sales.orders"))
        .json(&json!({"schema": schema, "partition_columns": ["country"], "properties": {"delta.appendOnly": "false"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.create("people", json!(PEOPLE)).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "already_exists");

    let (st, v) = s.get_json("/v1/tables").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["tables"], json!(["people", "sales.orders"]));
    let (_, v) = s.get_json("/v1/tables?namespace=sales").await;
    assert_eq!(v["tables"], json!(["sales.orders"]));

    let (st, v) = s.get_json("/v1/tables/sales.orders").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["version"], 0);
    assert_eq!(v["partition_columns"], json!(["country"]));
    assert_eq!(v["schema"]["fields"][0]["name"], "id");
    let (st, v) = s.get_json("/v1/tables/people/schema").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["schema"]["fields"][1]["type"], "string");

    // Drop: admin (open server), and only with the name repeated.
    let r = s
        .client
        .delete(s.u("/v1/tables/people"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(s.version("people").await, 0);
    let r = s
        .client
        .delete(s.u("/v1/tables/people?confirm=people"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (st, v) = s.get_json("/v1/tables/people").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found");
    let (_, v) = s.get_json("/v1/tables").await;
    assert_eq!(v["tables"], json!(["sales.orders"]));
    // The name is free again.
    people(&s, "people").await;
    assert_eq!(s.version("people").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_in_every_format_and_scans_with_time_travel() {
    let s = start().await;
    people(&s, "p").await;
    let (st, v) = s
        .post_rows(
            "/v1/tables/p/append",
            ARROW,
            ipc(&[ids_batch(0..100), ids_batch(100..150)]),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 1);
    assert_eq!(v["rows"], 150);
    let (st, v) = s
        .post_rows("/v1/tables/p/append", NDJSON, ndjson(150..200))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 2);
    let rows: Vec<Value> = (200..210)
        .map(|i| json!({"id": i, "name": format!("n{i}")}))
        .collect();
    let (st, v) = s
        .post_rows(
            "/v1/tables/p/append",
            "application/json",
            serde_json::to_vec(&rows).unwrap(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 3);

    let all = s.scan_arrow("p", "").await;
    assert_eq!(ids_of(&all), (0..210).collect::<Vec<_>>());
    let v1 = s.scan_arrow("p", "?version=1").await;
    assert_eq!(ids_of(&v1), (0..150).collect::<Vec<_>>());
    let filtered = s
        .scan_ndjson("p", "?filter=id%20%3E%3D%20205&columns=id")
        .await;
    let mut ids: Vec<i64> = filtered.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, (205..210).collect::<Vec<_>>());
    assert!(filtered.iter().all(|r| r.get("name").is_none()));
    let limited = s.scan_arrow("p", "?limit=7").await;
    assert_eq!(limited.iter().map(|b| b.num_rows()).sum::<usize>(), 7);
    // Timestamp time travel: before the first append there were no rows.
    let (_, h) = s.get_json("/v1/tables/p/history").await;
    let h = h["history"].as_array().unwrap().clone();
    assert_eq!(h.len(), 4);
    assert_eq!(h[0]["version"], 3);
    assert_eq!(h[3]["operation"], "CREATE TABLE");
    let t0 = h[3]["timestamp"].as_str().unwrap();
    let at0 = s
        .scan_ndjson("p", &format!("?timestamp={}", t0.replace('+', "%2B")))
        .await;
    assert!(at0.is_empty());
    let (_, h1) = s.get_json("/v1/tables/p/history?limit=1").await;
    assert_eq!(h1["history"].as_array().unwrap().len(), 1);
    let (st, f) = s.get_json("/v1/tables/p/files").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(f["num_files"], 3);
    assert!(f["files"][0]["size"].as_i64().unwrap() > 0);
    assert!(f["files"][0]["stats"]["numRecords"].as_i64().unwrap() > 0);
    let (_, d) = s.get_json("/v1/tables/p?version=2").await;
    assert_eq!(d["version"], 2);
    assert_eq!(d["num_rows"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_scan_writes_dates_and_rfc3339_timestamps() {
    let s = start().await;
    let r = s
        .create("e", json!("id long, d date, ts timestamp, n timestamp_ntz"))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body = b"{\"id\":1,\"d\":\"2024-02-29\",\"ts\":\"2024-03-01T12:30:00.5Z\",\"n\":\"2024-03-01T12:30:00\"}\n".to_vec();
    let (st, v) = s.post_rows("/v1/tables/e/append", NDJSON, body).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let rows = s.scan_ndjson("e", "").await;
    assert_eq!(rows[0]["d"], "2024-02-29");
    let ts = rows[0]["ts"].as_str().unwrap();
    let parsed = chrono::DateTime::parse_from_rfc3339(ts).unwrap();
    assert_eq!(parsed.timestamp_millis(), 1709296200500);
    assert!(rows[0]["n"]
        .as_str()
        .unwrap()
        .starts_with("2024-03-01T12:30:00"));
}

/// Each bad request: a 4xx with a JSON error, and no table changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_fail_clearly_and_change_nothing() {
    let s = start_with(|c| {
        c.limits.max_body_bytes = 64 * 1024;
        c.limits.max_rows_per_request = 500;
    })
    .await;
    people(&s, "p").await;
    let (st, _) = s
        .post_rows("/v1/tables/p/append", NDJSON, ndjson(0..10))
        .await;
    assert_eq!(st, StatusCode::OK);
    let before = s.version("p").await;
    let other = ipc(&[ids_batch(0..10)]);
    let mut truncated = other.clone();
    truncated.truncate(other.len() / 2);
    let wrong_type = {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
        let b = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["x"]))]).unwrap();
        ipc(&[b])
    };
    let big: Vec<u8> = ndjson(0..5000);
    assert!(big.len() > 64 * 1024);
    let cases: Vec<(&str, &str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "/v1/tables/p/append",
            ARROW,
            b"not arrow at all".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_arrow",
        ),
        (
            "/v1/tables/p/append",
            ARROW,
            truncated,
            StatusCode::BAD_REQUEST,
            "invalid_arrow",
        ),
        (
            "/v1/tables/p/append",
            ARROW,
            wrong_type,
            StatusCode::UNPROCESSABLE_ENTITY,
            "schema_mismatch",
        ),
        (
            "/v1/tables/p/append",
            NDJSON,
            b"{\"id\": 1,,}\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "/v1/tables/p/append",
            NDJSON,
            b"{\"id\": \"abc\"}\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "/v1/tables/p/append",
            "application/json",
            b"[{\"id\": 1}, 7]".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "/v1/tables/p/append",
            "application/json",
            b"{\"id\": 1".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "/v1/tables/p/append",
            NDJSON,
            b"{\"id\": 1, \"color\": \"red\"}\n".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "schema_mismatch",
        ),
        (
            "/v1/tables/p/append",
            NDJSON,
            b"{\"name\": \"no id\"}\n".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "schema_mismatch",
        ),
        (
            "/v1/tables/p/append",
            "text/csv",
            b"id\n1\n".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "/v1/tables/p/append",
            NDJSON,
            big.clone(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            "/v1/tables/p/append",
            NDJSON,
            ndjson(0..600),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            "/v1/tables/p/append?app_id=x",
            NDJSON,
            ndjson(0..1),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/tables/p/append?app_id=x&app_version=abc",
            NDJSON,
            ndjson(0..1),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/tables/p/append?schema_mode=bogus",
            NDJSON,
            ndjson(0..1),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/tables/p/overwrite",
            NDJSON,
            b"{\"id\": 1, \"color\": \"red\"}\n".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "schema_mismatch",
        ),
        (
            "/v1/tables/p/overwrite",
            NDJSON,
            big,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            "/v1/tables/p/delete",
            "application/json",
            b"{\"predicate\": \"nope ===\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_expression",
        ),
        (
            "/v1/tables/p/delete",
            "application/json",
            b"{\"predicate\": \"missing = 1\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "unknown_column",
        ),
        (
            "/v1/tables/p/delete",
            "text/plain",
            b"{\"predicate\": \"id = 1\"}".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "/v1/tables/p/delete",
            "application/json",
            b"{\"where\": \"id = 1\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "/v1/tables/p/update",
            "application/json",
            b"{\"set\": {\"nope\": \"1\"}}".to_vec(),
            StatusCode::BAD_REQUEST,
            "unknown_column",
        ),
        (
            "/v1/tables/p/merge",
            "application/json",
            b"{\"source\": [{\"id\": \"abc\"}], \"on\": [\"id\"]}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "/v1/tables/p/merge",
            "application/json",
            b"{\"source\": 5, \"on\": [\"id\"]}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "/v1/tables/p/restore",
            "application/json",
            b"{\"version\": 99}".to_vec(),
            StatusCode::NOT_FOUND,
            "version_not_found",
        ),
        (
            "/v1/tables/p/restore",
            "application/json",
            b"{}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            "/v1/tables/p/optimize",
            "application/json",
            b"{\"zorder_by\": [\"nope\"]}".to_vec(),
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            "/v1/tables/nope/append",
            NDJSON,
            ndjson(0..1),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/tables/..%2F..%2Fetc/append",
            NDJSON,
            ndjson(0..1),
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            "/v1/tables/.hidden/append",
            NDJSON,
            ndjson(0..1),
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            "/v1/tables/a..b/append",
            NDJSON,
            ndjson(0..1),
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            "/v1/tables/%2Ftmp%2Fx/append",
            NDJSON,
            ndjson(0..1),
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
    ];
    for (path, ct, body, status, code) in cases {
        let (st, v) = s.post_rows(path, ct, body).await;
        assert_eq!(st, status, "{path} ({ct}): {v}");
        assert!(v["error"]["message"].is_string(), "{path}: {v}");
        if !code.is_empty() {
            assert_eq!(v["error"]["code"], code, "{path} ({ct}): {v}");
        }
        assert_eq!(s.version("p").await, before, "{path} changed the table");
    }
    // 422s name the column.
    let (_, v) = s
        .post_rows(
            "/v1/tables/p/append",
            NDJSON,
            b"{\"id\": 1, \"color\": \"red\"}\n".to_vec(),
        )
        .await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`color`"),
        "{v}"
    );
    let (_, v) = s
        .post_rows(
            "/v1/tables/p/append",
            NDJSON,
            b"{\"name\": \"x\"}\n".to_vec(),
        )
        .await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`id`"),
        "{v}"
    );

    // Bad reads: 4xx too.
    for (path, status) in [
        ("/v1/tables/p/scan?version=42", StatusCode::NOT_FOUND),
        ("/v1/tables/p/scan?version=x", StatusCode::BAD_REQUEST),
        (
            "/v1/tables/p/scan?timestamp=yesterday",
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/tables/p/scan?columns=nope", StatusCode::BAD_REQUEST),
        (
            "/v1/tables/p/scan?filter=id%20%3D%3D%3D",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/tables/p/scan?version=1&timestamp=0",
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/tables/p/nope", StatusCode::NOT_FOUND),
        ("/v1/tables/..", StatusCode::NOT_FOUND),
        ("/v1/tables/a..b", StatusCode::BAD_REQUEST),
    ] {
        let (st, v) = s.get_json(path).await;
        assert_eq!(st, status, "{path}: {v}");
        assert!(v["error"]["code"].is_string(), "{path}: {v}");
    }
    let r = s
        .client
        .get(s.u("/v1/tables/p/scan"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
    let r = s.client.patch(s.u("/v1/tables/p")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(s.version("p").await, before);
    // Nothing was written outside the warehouse.
    assert!(!s.dir.path().join("etc").exists());
    let (_, v) = s.get_json("/v1/tables").await;
    assert_eq!(v["tables"], json!(["p"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_appends_replay_without_committing() {
    let s = start().await;
    people(&s, "p").await;
    let path = "/v1/tables/p/append?app_id=sink&app_version=5";
    let (st, v) = s.post_rows(path, NDJSON, ndjson(0..10)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["already_applied"], false);
    assert_eq!(v["version"], 1);
    for p in [path, "/v1/tables/p/append?app_id=sink&app_version=4"] {
        let (st, v) = s.post_rows(p, NDJSON, ndjson(0..10)).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["already_applied"], true, "{v}");
        assert_eq!(v["committed"], false);
        assert_eq!(v["version"], 1);
    }
    let (_, v) = s
        .post_rows(
            "/v1/tables/p/append?app_id=sink&app_version=6",
            NDJSON,
            ndjson(10..20),
        )
        .await;
    assert_eq!(v["version"], 2);
    assert_eq!(
        ids_of(&s.scan_arrow("p", "").await),
        (0..20).collect::<Vec<_>>()
    );

    // Many clients sending the same application version at once: one commit.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let c = s.client.clone();
        let u = s.u("/v1/tables/p/append?app_id=sink&app_version=7");
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(u)
                .header("content-type", NDJSON)
                .body(ndjson(20..30))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }));
    }
    let mut committed = 0;
    for t in tasks {
        if t.await.unwrap()["already_applied"] == false {
            committed += 1;
        }
    }
    assert_eq!(committed, 1);
    assert_eq!(
        ids_of(&s.scan_arrow("p", "").await),
        (0..30).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_evolution_overwrite_and_row_operations() {
    let s = start().await;
    people(&s, "p").await;
    s.post_rows("/v1/tables/p/append", NDJSON, ndjson(0..10))
        .await;
    // A new column needs schema_mode=merge.
    let row = b"{\"id\": 100, \"name\": \"x\", \"score\": 1.5}\n".to_vec();
    let (st, _) = s
        .post_rows("/v1/tables/p/append", NDJSON, row.clone())
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, v) = s
        .post_rows("/v1/tables/p/append?schema_mode=merge", NDJSON, row)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, sc) = s.get_json("/v1/tables/p/schema").await;
    assert_eq!(sc["schema"]["fields"][2]["name"], "score");
    // Later appends through the group commit see the new schema.
    let (st, v) = s
        .post_rows(
            "/v1/tables/p/append",
            NDJSON,
            b"{\"id\": 101, \"score\": 2.5}\n".to_vec(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");

    let (st, v) = s
        .post_json("/v1/tables/p/delete", json!({"predicate": "id < 5"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["rows_matched"], 5);
    let (st, v) = s
        .post_json(
            "/v1/tables/p/update",
            json!({"set": {"name": "'upd'"}, "predicate": "id = 7"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["rows_matched"], 1);
    let (st, v) = s
        .post_json(
            "/v1/tables/p/merge",
            json!({"source": [{"id": 7, "name": "merged", "op": "U"}, {"id": 8, "op": "D"}, {"id": 500, "name": "new", "op": "I"}],
                   "on": ["id"], "delete_when": "source.op = 'D'"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["rows_inserted"], 1);
    assert_eq!(v["rows_updated"], 1);
    assert_eq!(v["rows_deleted"], 1);
    let rows = s.scan_ndjson("p", "?filter=id%20%3D%207").await;
    assert_eq!(rows[0]["name"], "merged");
    assert_eq!(
        ids_of(&s.scan_arrow("p", "").await),
        vec![5, 6, 7, 9, 100, 101, 500]
    );
    let before_optimize = s.version("p").await;
    let (st, v) = s.post_json("/v1/tables/p/optimize", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["version"], before_optimize + 1);
    assert_eq!(
        ids_of(&s.scan_arrow("p", "").await),
        vec![5, 6, 7, 9, 100, 101, 500]
    );
    let (st, v) = s
        .post_json("/v1/tables/p/restore", json!({"version": 1}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        ids_of(&s.scan_arrow("p", "").await),
        (0..10).collect::<Vec<_>>()
    );
    let (st, v) = s
        .post_json(
            "/v1/tables/p/vacuum",
            json!({"retention_hours": 0, "dry_run": true, "force": true}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["files_deleted"].as_u64().unwrap() > 0);

    // Overwrite, whole and by predicate.
    let (st, v) = s
        .post_rows("/v1/tables/p/overwrite", NDJSON, ndjson(1000..1010))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        ids_of(&s.scan_arrow("p", "").await),
        (1000..1010).collect::<Vec<_>>()
    );
    let (st, v) = s
        .post_rows(
            "/v1/tables/p/overwrite?replace_where=id%20%3E%3D%201005",
            NDJSON,
            ndjson(0..2),
        )
        .await;
    assert_eq!(
        st,
        StatusCode::UNPROCESSABLE_ENTITY,
        "rows outside the predicate: {v}"
    );
    let (st, v) = s
        .post_rows(
            "/v1/tables/p/overwrite?replace_where=id%20%3E%3D%201005",
            NDJSON,
            ndjson(1005..1007),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        ids_of(&s.scan_arrow("p", "").await),
        (1000..1007).collect::<Vec<_>>()
    );
}

fn token(name: &str, secret: &str, grants: &[(&str, Level)]) -> TokenEntry {
    TokenEntry {
        name: name.into(),
        hash: hash_token(secret),
        grants: grants.iter().map(|(g, l)| (g.to_string(), *l)).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_grants() {
    let owned = start_with(|c| {
        c.tokens = vec![
            token("admin", "adm1n", &[("*", Level::Admin)]),
            token(
                "writer",
                "wr1te",
                &[("sales.*", Level::Write), ("*", Level::Read)],
            ),
            token("reader", "re4d", &[("sales.*", Level::Read)]),
        ]
    })
    .await;
    let s = &owned;
    let with = |rb: reqwest::RequestBuilder, t: &str| rb.bearer_auth(t);
    let create = |t: &'static str, name: &'static str| {
        with(s.client.put(s.u(&format!("/v1/tables/{name}"))), t)
            .json(&json!({"schema": PEOPLE}))
            .send()
    };
    assert_eq!(
        create("adm1n", "sales.orders").await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        create("adm1n", "hr.people").await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        create("wr1te", "hr.other").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        create("re4d", "sales.x").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );

    let append = |t: Option<&'static str>, name: &'static str| {
        let mut rb = s
            .client
            .post(s.u(&format!("/v1/tables/{name}/append")))
            .header("content-type", NDJSON)
            .body(ndjson(0..3));
        if let Some(t) = t {
            rb = rb.bearer_auth(t);
        }
        rb.send()
    };
    let version = |name: &'static str| async move {
        let r = s
            .client
            .get(s.u(&format!("/v1/tables/{name}")))
            .bearer_auth("adm1n")
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()["version"]
            .as_i64()
            .unwrap()
    };
    // Missing, malformed, unknown token: 401 and nothing written.
    for t in [None, Some("nope")] {
        let r = append(t, "sales.orders").await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unauthorized");
    }
    let r = s
        .client
        .get(s.u("/v1/tables/sales.orders"))
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Insufficient grants: 403 and nothing written.
    let r = append(Some("re4d"), "sales.orders").await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = append(Some("wr1te"), "hr.people").await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(version("sales.orders").await, 0);
    assert_eq!(version("hr.people").await, 0);
    // Granted.
    assert_eq!(
        append(Some("wr1te"), "sales.orders")
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(version("sales.orders").await, 1);
    let r = with(s.client.get(s.u("/v1/tables/sales.orders/scan")), "re4d")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = with(s.client.get(s.u("/v1/tables/hr.people/scan")), "re4d")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Listing shows what the token may read.
    let r = with(s.client.get(s.u("/v1/tables")), "re4d")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["tables"],
        json!(["sales.orders"])
    );
    // Admin-only operations.
    for t in ["wr1te", "re4d"] {
        let r = with(
            s.client
                .delete(s.u("/v1/tables/sales.orders?confirm=sales.orders")),
            t,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = with(s.client.post(s.u("/v1/tables/sales.orders/restore")), t)
            .json(&json!({"version": 0}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = with(s.client.post(s.u("/v1/tables/sales.orders/vacuum")), t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(version("sales.orders").await, 1);
    let r = with(
        s.client
            .delete(s.u("/v1/tables/sales.orders?confirm=sales.orders")),
        "adm1n",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Health and metrics stay open.
    assert_eq!(
        s.client.get(s.u("/healthz")).send().await.unwrap().status(),
        StatusCode::OK
    );
}

/// 32 clients appending at once: every acknowledged row is in the table exactly once,
/// versions are gapless, and commits are far fewer than requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_under_32_concurrent_clients() {
    let s = start().await;
    people(&s, "g").await;
    let clients = 32;
    let per_client = 25;
    let rows_per_request = 200;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = s.client.clone();
        let url = s.u("/v1/tables/g/append");
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for r in 0..per_client {
                let start = ((c * per_client + r) * rows_per_request) as i64;
                let ids = start..start + rows_per_request as i64;
                // Alternate formats; every fifth request is bad and must fail alone.
                let (ct, body) = if r % 5 == 4 {
                    (NDJSON, b"{\"id\": 1, \"bogus\": true}\n".to_vec())
                } else if r % 2 == 0 {
                    (ARROW, ipc(&[ids_batch(ids.clone())]))
                } else {
                    (NDJSON, ndjson(ids.clone()))
                };
                let resp = client
                    .post(&url)
                    .header("content-type", ct)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                let v: Value = resp.json().await.unwrap();
                if r % 5 == 4 {
                    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
                } else {
                    assert_eq!(status, StatusCode::OK, "{v}");
                    acked.push((ids, v["version"].as_i64().unwrap()));
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let requests = acked.len();
    let mut expected: Vec<i64> = acked.iter().flat_map(|(ids, _)| ids.clone()).collect();
    expected.sort();
    let got = ids_of(&s.scan_arrow("g", "").await);
    assert_eq!(
        got.len(),
        expected.len(),
        "every acknowledged row exactly once"
    );
    assert_eq!(got, expected);
    let unique: HashSet<i64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len());
    // Each acknowledged version holds that request's rows.
    let (_, h) = s.get_json("/v1/tables/g/history").await;
    let mut versions: Vec<i64> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_i64().unwrap())
        .collect();
    versions.sort();
    let latest = *versions.last().unwrap();
    assert_eq!(
        versions,
        (0..=latest).collect::<Vec<_>>(),
        "gapless versions"
    );
    let commits = latest as usize; // version 0 is CREATE TABLE
    assert!(
        commits * 4 <= requests,
        "{commits} commits for {requests} requests: group commit should coalesce"
    );
    for (ids, v) in acked.iter().take(20) {
        let at = ids_of(&s.scan_arrow("g", &format!("?version={v}")).await);
        assert!(at.binary_search(&ids.start).is_ok());
        let before = ids_of(&s.scan_arrow("g", &format!("?version={}", v - 1)).await);
        assert!(before.binary_search(&ids.start).is_err());
    }
    let (_, m) = (
        (),
        s.client
            .get(s.u("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert!(m.contains(&format!("shoal_commits_total {commits}")), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_openapi() {
    let s = start().await;
    assert_eq!(
        s.client.get(s.u("/healthz")).send().await.unwrap().status(),
        StatusCode::OK
    );
    let (st, v) = s.get_json("/readyz").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = s.get_json("/openapi.json").await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        v["paths"]["/v1/tables/{name}/append"]["post"].is_object(),
        "{v}"
    );
    people(&s, "p").await;
    s.post_rows("/v1/tables/p/append", NDJSON, ndjson(0..10))
        .await;
    s.post_rows("/v1/tables/p/append", "text/csv", b"x".to_vec())
        .await;
    let text = s
        .client
        .get(s.u("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "shoal_http_requests_total{route=\"/v1/tables/{name}/append\",method=\"POST\",status=\"200\"} 1",
        "shoal_http_requests_total{route=\"/v1/tables/{name}/append\",method=\"POST\",status=\"415\"} 1",
        "shoal_http_request_duration_seconds_bucket{route=\"/v1/tables/{name}/append\",le=\"+Inf\"} 2",
        "shoal_commits_total 1",
        "shoal_group_commit_requests_count 1",
        "shoal_rows_in_total 10",
        "shoal_bytes_in_total",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let (st, v) = s.get_json("/nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_time_out() {
    let s = start_with(|c| c.limits.request_timeout = Duration::from_millis(300)).await;
    people(&s, "p").await;
    // A body that never finishes: the server answers 503 instead of waiting forever.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        b"POST /v1/tables/p/append HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-ndjson\r\ncontent-length: 1000\r\n\r\n{\"id\": 1}\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert_eq!(s.version("p").await, 0);
}

#[test]
fn delta_rs_reads_a_server_written_table() {
    let Some(py) = python("delta-rs reads a server-written table") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (dir, _s, expected) = rt.block_on(async {
        let s = start().await;
        let r = s
            .client
            .put(s.u("/v1/tables/t"))
            .json(&json!({"schema": "id long not null, name string, country string", "partition_columns": ["country"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let mut tasks = Vec::new();
        for c in 0..8i64 {
            let client = s.client.clone();
            let url = s.u(&format!("/v1/tables/t/append?app_id=w{c}&app_version=1"));
            tasks.push(tokio::spawn(async move {
                let body: String = (c * 100..c * 100 + 100)
                    .map(|i| format!("{{\"id\":{i},\"name\":\"n{i}\",\"country\":\"{}\"}}\n", ["NL", "US"][(i % 2) as usize]))
                    .collect();
                let r = client.post(url).header("content-type", NDJSON).body(body).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (st, _) = s.post_json("/v1/tables/t/delete", json!({"predicate": "id % 10 = 0"})).await;
        assert_eq!(st, StatusCode::OK);
        let expected: i64 = (0..800).filter(|i| i % 10 != 0).sum();
        let dir = s.dir.path().join("wh").join("t");
        (dir, s, expected)
    });
    let out = run_python(
        &py,
        "import sys, deltalake\ndt = deltalake.DeltaTable(sys.argv[1])\nt = dt.to_pyarrow_table()\nids = t.column('id').to_pylist()\nprint(t.num_rows, sum(ids), len(set(ids)), sorted(dt.metadata().partition_columns))\ntx = dt.transaction_versions() if hasattr(dt, 'transaction_versions') else {}\nprint(len(tx))\n",
        &[dir.to_str().unwrap()],
    );
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("720 {expected} 720 ['country']"),
        "delta-rs sees what the server wrote"
    );
    let txns = lines.next().unwrap();
    assert!(txns == "8" || txns == "0", "app transactions: {txns}");
}
