//! Request bodies: reading them within limits and decoding rows (Arrow IPC, NDJSON,
//! JSON arrays) into Arrow batches typed by the table's schema.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde_json::Value;
use shoal_format::{DataType, StructField, StructType};

use crate::error::{ApiError, ApiResult};

/// How rows arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowFormat {
    /// `application/vnd.apache.arrow.stream`
    ArrowStream,
    /// `application/vnd.apache.arrow.file`
    ArrowFile,
    /// `application/x-ndjson`: one JSON object per line.
    NdJson,
    /// `application/json`: an array of objects (or objects one after another).
    Json,
}

pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
pub const NDJSON: &str = "application/x-ndjson";

fn essence(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// The row format of a request by its `Content-Type` (415 when unknown or missing).
pub fn row_format(headers: &HeaderMap) -> ApiResult<RowFormat> {
    match essence(headers).as_deref() {
        Some(ARROW_STREAM) => Ok(RowFormat::ArrowStream),
        Some("application/vnd.apache.arrow.file") => Ok(RowFormat::ArrowFile),
        Some(NDJSON | "application/ndjson" | "application/jsonl" | "application/x-jsonlines" | "application/jsonlines") => {
            Ok(RowFormat::NdJson)
        }
        Some("application/json") => Ok(RowFormat::Json),
        Some(other) => Err(ApiError::unsupported_media(format!(
            "content type `{other}` is not accepted here; send {ARROW_STREAM}, {NDJSON} or application/json"
        ))),
        None => Err(ApiError::unsupported_media(format!(
            "missing Content-Type; send {ARROW_STREAM}, {NDJSON} or application/json"
        ))),
    }
}

/// JSON routes accept `application/json` or no content type.
pub fn require_json(headers: &HeaderMap) -> ApiResult<()> {
    match essence(headers).as_deref() {
        None | Some("application/json") => Ok(()),
        Some(other) => Err(ApiError::unsupported_media(format!(
            "content type `{other}` is not accepted here; send application/json"
        ))),
    }
}

/// Reads a whole body, failing with 413 past `limit` bytes. An oversized body is
/// drained (up to a bound, discarding it) so the client reads the 413 rather than a
/// reset connection.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Bytes> {
    let too_large = || ApiError::too_large(format!("the request body exceeds {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > limit as u64) {
        drain(&mut stream, limit).await;
        return Err(too_large());
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(limit as u64) as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("body_read", format!("reading the request body: {e}"))
        })?;
        if buf.len() + chunk.len() > limit {
            drain(&mut stream, limit).await;
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

async fn drain(stream: &mut axum::body::BodyDataStream, limit: usize) {
    let bound = limit.saturating_mul(4).max(16 << 20);
    let mut seen = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len();
        if seen > bound {
            break;
        }
    }
}

/// What the rows are decoded against.
#[derive(Debug, Clone)]
pub enum Target<'a> {
    /// Exactly the table's columns (unknown columns are a schema mismatch).
    Table(&'a StructType),
    /// The table's columns with their types, plus any other columns with inferred
    /// types (schema evolution, MERGE sources).
    TablePlus(&'a StructType),
}

fn too_many(max_rows: usize) -> ApiError {
    ApiError::too_large(format!("the request has more than {max_rows} rows"))
}

/// Decodes a body into batches.
pub fn decode(
    format: RowFormat,
    body: &Bytes,
    target: Target<'_>,
    max_rows: usize,
) -> ApiResult<Vec<RecordBatch>> {
    match format {
        RowFormat::ArrowStream | RowFormat::ArrowFile => decode_arrow(format, body, max_rows),
        RowFormat::NdJson => decode_ndjson(body, target, max_rows),
        RowFormat::Json => {
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            match first {
                Some(b'[') => {
                    let values: Vec<Value> = serde_json::from_slice(body).map_err(|e| {
                        ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}"))
                    })?;
                    decode_values(&values, target, max_rows)
                }
                // Objects one after another: the same as NDJSON.
                Some(b'{') => decode_ndjson(body, target, max_rows),
                _ => Err(ApiError::bad_request(
                    "invalid_json",
                    "a JSON body must be an array of objects",
                )),
            }
        }
    }
}

fn decode_arrow(format: RowFormat, body: &Bytes, max_rows: usize) -> ApiResult<Vec<RecordBatch>> {
    let bad = |e: ArrowError| {
        ApiError::bad_request("invalid_arrow", format!("invalid Arrow IPC body: {e}"))
    };
    let reader: Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>>> = match format {
        RowFormat::ArrowFile => Box::new(
            arrow::ipc::reader::FileReader::try_new(Cursor::new(body.clone()), None)
                .map_err(bad)?,
        ),
        _ => Box::new(
            arrow::ipc::reader::StreamReader::try_new(Cursor::new(body.clone()), None)
                .map_err(bad)?,
        ),
    };
    let mut out = Vec::new();
    let mut rows = 0usize;
    for b in reader {
        let b = b.map_err(bad)?;
        rows += b.num_rows();
        if rows > max_rows {
            return Err(too_many(max_rows));
        }
        if b.num_rows() > 0 {
            out.push(b);
        }
    }
    Ok(out)
}

/// The Arrow schema JSON rows are decoded with: table columns nullable (the table's
/// NOT NULL rules are checked later, naming the column), plus inferred extra columns.
fn decode_schema(table: &StructType, extra: Option<&Schema>) -> ApiResult<SchemaRef> {
    let mut fields: Vec<Field> = table
        .to_arrow()?
        .fields()
        .iter()
        .map(|f| {
            let t = utc_offsets(f.data_type());
            f.as_ref().clone().with_data_type(t).with_nullable(true)
        })
        .collect();
    if let Some(extra) = extra {
        for f in extra.fields() {
            if table.field(f.name()).is_none() {
                fields.push(f.as_ref().clone().with_nullable(true));
            }
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The same type with every time zone written as an offset (`UTC` → `+00:00`): Arrow's
/// JSON reader and writer understand offsets only (the stored instants are the same).
pub fn utc_offsets(t: &ArrowType) -> ArrowType {
    match t {
        ArrowType::Timestamp(u, Some(_)) => ArrowType::Timestamp(*u, Some("+00:00".into())),
        ArrowType::Struct(fields) => ArrowType::Struct(
            fields
                .iter()
                .map(|f| {
                    f.as_ref()
                        .clone()
                        .with_data_type(utc_offsets(f.data_type()))
                })
                .collect(),
        ),
        ArrowType::List(f) => ArrowType::List(Arc::new(
            f.as_ref()
                .clone()
                .with_data_type(utc_offsets(f.data_type())),
        )),
        ArrowType::LargeList(f) => ArrowType::LargeList(Arc::new(
            f.as_ref()
                .clone()
                .with_data_type(utc_offsets(f.data_type())),
        )),
        ArrowType::Map(f, sorted) => ArrowType::Map(
            Arc::new(
                f.as_ref()
                    .clone()
                    .with_data_type(utc_offsets(f.data_type())),
            ),
            *sorted,
        ),
        other => other.clone(),
    }
}

fn json_error(e: ArrowError) -> ApiError {
    let text = e.to_string();
    // Strict decoding names the first field the table does not have.
    if let Some(rest) = text.split("column '").nth(1) {
        if let Some((column, tail)) = rest.split_once('\'') {
            if tail.starts_with(" missing from schema") {
                return ApiError::schema_mismatch(format!(
                    "schema mismatch on column `{column}`: the table has no such column (use schema_mode=merge to add it)"
                ));
            }
        }
    }
    ApiError::bad_request("invalid_json", format!("invalid JSON rows: {text}"))
}

fn decode_ndjson(body: &Bytes, target: Target<'_>, max_rows: usize) -> ApiResult<Vec<RecordBatch>> {
    // Arrow's tape decoder forgives some malformed JSON (`{"a": 1,,}`); a strict syntax
    // pass first (no allocation per value) keeps bad input from being half-understood.
    for (i, v) in serde_json::Deserializer::from_slice(body)
        .into_iter::<serde::de::IgnoredAny>()
        .enumerate()
    {
        if let Err(e) = v {
            return Err(ApiError::bad_request(
                "invalid_json",
                format!("invalid JSON in value {}: {e}", i + 1),
            ));
        }
    }
    let schema = match target {
        Target::Table(t) => decode_schema(t, None)?,
        Target::TablePlus(t) => {
            let (inferred, _) =
                arrow::json::reader::infer_json_schema(Cursor::new(body.as_ref()), None)
                    .map_err(json_error)?;
            decode_schema(t, Some(&inferred))?
        }
    };
    let mut decoder = arrow::json::ReaderBuilder::new(schema)
        .with_strict_mode(true)
        .with_batch_size(8192)
        .build_decoder()
        .map_err(json_error)?;
    let mut out = Vec::new();
    let mut rows = 0usize;
    let mut buf: &[u8] = body.as_ref();
    loop {
        let used = decoder.decode(buf).map_err(json_error)?;
        buf = &buf[used..];
        if let Some(b) = decoder.flush().map_err(json_error)? {
            rows += b.num_rows();
            if rows > max_rows {
                return Err(too_many(max_rows));
            }
            out.push(b);
        }
        if buf.is_empty() {
            if let Some(b) = decoder.flush().map_err(json_error)? {
                rows += b.num_rows();
                if rows > max_rows {
                    return Err(too_many(max_rows));
                }
                out.push(b);
            }
            break;
        }
    }
    Ok(out)
}

/// Decodes parsed JSON objects (JSON arrays, MERGE sources).
pub fn decode_values(
    values: &[Value],
    target: Target<'_>,
    max_rows: usize,
) -> ApiResult<Vec<RecordBatch>> {
    if values.len() > max_rows {
        return Err(too_many(max_rows));
    }
    if let Some(i) = values.iter().position(|v| !v.is_object()) {
        return Err(ApiError::bad_request(
            "invalid_json",
            format!("row {i} is not a JSON object"),
        ));
    }
    let schema = match target {
        Target::Table(t) => decode_schema(t, None)?,
        Target::TablePlus(t) => {
            let inferred =
                arrow::json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))
                    .map_err(json_error)?;
            decode_schema(t, Some(&inferred))?
        }
    };
    let mut decoder = arrow::json::ReaderBuilder::new(schema)
        .with_strict_mode(true)
        .with_batch_size(values.len().max(1))
        .build_decoder()
        .map_err(json_error)?;
    let mut out = Vec::new();
    for chunk in values.chunks(8192) {
        decoder.serialize(chunk).map_err(json_error)?;
        if let Some(b) = decoder.flush().map_err(json_error)? {
            out.push(b);
        }
    }
    Ok(out)
}

/// Parses a table schema given as Delta schema JSON (an object) or as DDL text:
/// `id long not null, name string, amount decimal(10,2)`.
pub fn parse_schema(value: &Value) -> ApiResult<StructType> {
    let bad = |m: String| ApiError::bad_request("invalid_schema", m);
    let schema = match value {
        Value::Object(_) => serde_json::from_value::<StructType>(value.clone())
            .map_err(|e| bad(format!("invalid Delta schema JSON: {e}")))?,
        Value::String(ddl) => parse_ddl(ddl)?,
        _ => {
            return Err(bad(
                "`schema` must be a Delta schema JSON object or a DDL string".into(),
            ))
        }
    };
    if schema.fields.is_empty() {
        return Err(bad("the schema has no columns".into()));
    }
    let mut types = Vec::new();
    schema.walk_types(&mut types);
    if let Some((col, t)) = types
        .iter()
        .find(|(_, t)| matches!(t, DataType::Unsupported(_)))
    {
        return Err(bad(format!(
            "column `{col}`: unknown type `{}`",
            t.primitive_name().unwrap_or_default()
        )));
    }
    for (i, f) in schema.fields.iter().enumerate() {
        if schema.fields[..i].iter().any(|g| g.name == f.name) {
            return Err(bad(format!("column `{}` appears twice", f.name)));
        }
    }
    Ok(schema)
}

fn parse_ddl(ddl: &str) -> ApiResult<StructType> {
    let bad = |m: String| ApiError::bad_request("invalid_schema", m);
    // Split on commas outside parentheses (decimal(10,2)).
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in ddl.char_indices() {
        match c {
            '(' | '<' => depth += 1,
            ')' | '>' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&ddl[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&ddl[start..]);
    let mut fields = Vec::new();
    for part in parts {
        let part = part.trim();
        if part.is_empty() {
            return Err(bad(format!("empty column definition in `{ddl}`")));
        }
        let (name, rest) = if let Some(quoted) = part.strip_prefix('`') {
            let (n, r) = quoted
                .split_once('`')
                .ok_or_else(|| bad(format!("unclosed backquote in `{part}`")))?;
            (n.to_string(), r.trim())
        } else {
            let (n, r) = part
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad(format!("`{part}`: expected `name type [not null]`")))?;
            (n.to_string(), r.trim())
        };
        let lower = rest.to_ascii_lowercase();
        let (type_text, nullable) = match lower.strip_suffix("not null") {
            Some(t) => (t.trim().to_string(), false),
            None => (lower.trim().to_string(), true),
        };
        let type_text: String = type_text.chars().filter(|c| !c.is_whitespace()).collect();
        let canonical = match type_text.as_str() {
            "int" => "integer",
            "bigint" => "long",
            "smallint" => "short",
            "tinyint" => "byte",
            "bool" => "boolean",
            "text" | "varchar" => "string",
            "real" => "float",
            other => other,
        };
        if canonical.contains('<') {
            return Err(bad(format!(
                "column `{name}`: nested types are not supported in DDL; send a Delta schema JSON object"
            )));
        }
        let data_type: DataType = serde_json::from_value(Value::String(canonical.to_string()))
            .map_err(|e| bad(format!("column `{name}`: {e}")))?;
        fields.push(StructField::new(name, data_type, nullable));
    }
    Ok(StructType::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl() {
        let s = parse_schema(&Value::String(
            "id long not null, name string, amount decimal(10, 2), `odd name` int".into(),
        ))
        .unwrap();
        assert_eq!(s.fields.len(), 4);
        assert!(!s.fields[0].nullable);
        assert_eq!(s.fields[2].data_type, DataType::Decimal(10, 2));
        assert_eq!(s.fields[3].name, "odd name");
        assert_eq!(s.fields[3].data_type, DataType::Integer);
        for bad in ["", "id", "id frob", "id long, id long", "a array<int>"] {
            assert!(parse_schema(&Value::String(bad.into())).is_err(), "{bad}");
        }
    }

    #[test]
    fn ndjson_unknown_column_is_a_schema_mismatch() {
        let t = parse_schema(&Value::String("id long".into())).unwrap();
        let body = Bytes::from_static(b"{\"id\": 1}\n{\"id\": 2, \"extra\": 3}\n");
        let e = decode(RowFormat::NdJson, &body, Target::Table(&t), 10).unwrap_err();
        assert_eq!(e.code, "schema_mismatch");
        assert!(e.message.contains("`extra`"), "{}", e.message);
        let ok = decode(RowFormat::NdJson, &body, Target::TablePlus(&t), 10).unwrap();
        assert_eq!(ok.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        assert_eq!(ok[0].num_columns(), 2);
        let e = decode(RowFormat::NdJson, &body, Target::TablePlus(&t), 1).unwrap_err();
        assert_eq!(e.code, "too_large");
    }

    #[test]
    fn json_arrays() {
        let t = parse_schema(&Value::String("id long, s string".into())).unwrap();
        let body = Bytes::from_static(b"[{\"id\": 1, \"s\": \"a\"}, {\"id\": 2}]");
        let b = decode(RowFormat::Json, &body, Target::Table(&t), 10).unwrap();
        assert_eq!(b[0].num_rows(), 2);
        let bad = Bytes::from_static(b"[{\"id\": 1}, 3]");
        assert!(decode(RowFormat::Json, &bad, Target::Table(&t), 10).is_err());
        let bad = Bytes::from_static(b"[{\"id\": 1");
        assert_eq!(
            decode(RowFormat::Json, &bad, Target::Table(&t), 10)
                .unwrap_err()
                .code,
            "invalid_json"
        );
    }
}
