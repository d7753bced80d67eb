//! Classic Parquet checkpoints (PROTOCOL.md "Checkpoints"): reading single and
//! multi-part checkpoints into actions, writing single-file checkpoints and
//! `_last_checkpoint`.

use std::sync::Arc;

use std::collections::HashMap;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, MapArray, RecordBatch, StringArray,
    StructArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType as ArrowType, Field, Fields, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::protocol::{Action, Add, Remove};

/// The columns of a checkpoint Shoal replays.
const ACTION_COLUMNS: &[&str] = &[
    "add",
    "remove",
    "metaData",
    "protocol",
    "txn",
    "domainMetadata",
];

/// `_delta_log/_last_checkpoint`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastCheckpoint {
    pub version: i64,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_in_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_of_add_files: Option<i64>,
}

/// Decodes the actions of one checkpoint part.
pub fn read_checkpoint_actions(data: Bytes, name: &str) -> Result<Vec<Action>> {
    let corrupt = |e: String| Error::corrupt(name, e);
    let builder = ParquetRecordBatchReaderBuilder::try_new(data)
        .map_err(|e| corrupt(format!("unreadable checkpoint: {e}")))?;
    let schema = builder.parquet_schema();
    let arrow_schema = builder.schema().clone();
    let roots: Vec<usize> = arrow_schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| ACTION_COLUMNS.contains(&f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    if arrow_schema.field_with_name("checkpointMetadata").is_ok()
        || arrow_schema.field_with_name("sidecar").is_ok()
    {
        return Err(Error::UnsupportedFeature {
            kind: "reader",
            feature: "v2Checkpoint".into(),
            action: "read",
        });
    }
    // Every leaf of the action columns except the derived `*_parsed` copies.
    let leaves: Vec<usize> = schema
        .columns()
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            let parts = c.path().parts();
            parts
                .first()
                .is_some_and(|root| ACTION_COLUMNS.contains(&root.as_str()))
                && !parts.iter().any(|p| p.ends_with("_parsed"))
        })
        .map(|(i, _)| i)
        .collect();
    if roots.is_empty() || leaves.is_empty() {
        return Err(corrupt("no action columns in the checkpoint".into()));
    }
    let mask = ProjectionMask::leaves(schema, leaves);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| corrupt(e.to_string()))?;
    let mut actions = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(e.to_string()))?;
        batch_to_actions(&batch, &mut actions).map_err(|e| corrupt(e.to_string()))?;
    }
    Ok(actions)
}

/// Decodes one batch of checkpoint rows. `add` and `remove` (nearly every row) are
/// decoded column by column; the few other actions go through their JSON form.
fn batch_to_actions(batch: &RecordBatch, out: &mut Vec<Action>) -> Result<()> {
    let schema = batch.schema();
    for (i, field) in schema.fields().iter().enumerate() {
        let col = batch.column(i);
        if col.null_count() == col.len() {
            continue;
        }
        match field.name().as_str() {
            "add" => decode_adds(col.as_struct(), out)?,
            "remove" => decode_removes(col.as_struct(), out)?,
            name => {
                for row in 0..col.len() {
                    if col.is_null(row) {
                        continue;
                    }
                    let mut line = Map::new();
                    line.insert(name.to_string(), to_json(col.as_ref(), row));
                    let text = Value::Object(line).to_string();
                    if let Some(a) = Action::from_json_line(&text)? {
                        out.push(a);
                    }
                }
            }
        }
    }
    Ok(())
}

/// A child column of a struct as strings (any string encoding).
fn child_strings(s: &StructArray, name: &str) -> Result<Option<StringArray>> {
    match s.column_by_name(name) {
        None => Ok(None),
        Some(c) => Ok(Some(cast(c, &ArrowType::Utf8)?.as_string::<i32>().clone())),
    }
}

fn child_i64(s: &StructArray, name: &str) -> Result<Option<Int64Array>> {
    match s.column_by_name(name) {
        None => Ok(None),
        Some(c) => Ok(Some(
            cast(c, &ArrowType::Int64)?
                .as_primitive::<arrow::datatypes::Int64Type>()
                .clone(),
        )),
    }
}

fn child_bool(s: &StructArray, name: &str) -> Option<BooleanArray> {
    s.column_by_name(name)
        .and_then(|c| c.as_boolean_opt().cloned())
}

fn opt_str(a: &Option<StringArray>, row: usize) -> Option<String> {
    a.as_ref()
        .filter(|a| a.is_valid(row))
        .map(|a| a.value(row).to_string())
}

fn opt_i64(a: &Option<Int64Array>, row: usize) -> Option<i64> {
    a.as_ref().filter(|a| a.is_valid(row)).map(|a| a.value(row))
}

fn opt_bool(a: &Option<BooleanArray>, row: usize) -> Option<bool> {
    a.as_ref().filter(|a| a.is_valid(row)).map(|a| a.value(row))
}

/// A `map<string,string>` column, decoded row by row.
struct StringMapColumn {
    map: MapArray,
    keys: StringArray,
    values: StringArray,
}

impl StringMapColumn {
    fn new(s: &StructArray, name: &str) -> Result<Option<Self>> {
        let Some(c) = s.column_by_name(name) else {
            return Ok(None);
        };
        let Some(map) = c.as_map_opt() else {
            return Ok(None);
        };
        let keys = cast(map.keys(), &ArrowType::Utf8)?
            .as_string::<i32>()
            .clone();
        let values = cast(map.values(), &ArrowType::Utf8)?
            .as_string::<i32>()
            .clone();
        Ok(Some(StringMapColumn {
            map: map.clone(),
            keys,
            values,
        }))
    }

    fn get(&self, row: usize) -> Option<HashMap<String, Option<String>>> {
        if self.map.is_null(row) {
            return None;
        }
        let offsets = self.map.value_offsets();
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        let mut m = HashMap::with_capacity(end - start);
        for i in start..end {
            let v = self
                .values
                .is_valid(i)
                .then(|| self.values.value(i).to_string());
            m.insert(self.keys.value(i).to_string(), v);
        }
        Some(m)
    }
}

fn deletion_vectors(s: &StructArray) -> Option<&ArrayRef> {
    s.column_by_name("deletionVector")
        .filter(|c| c.null_count() < c.len())
}

fn missing(action: &str, field: &str) -> Error {
    Error::InvalidArgument(format!("checkpoint `{action}` has no `{field}` column"))
}

fn decode_adds(s: &StructArray, out: &mut Vec<Action>) -> Result<()> {
    let path = child_strings(s, "path")?.ok_or_else(|| missing("add", "path"))?;
    let size = child_i64(s, "size")?;
    let mtime = child_i64(s, "modificationTime")?;
    let data_change = child_bool(s, "dataChange");
    let stats = child_strings(s, "stats")?;
    let parts = StringMapColumn::new(s, "partitionValues")?;
    let tags = StringMapColumn::new(s, "tags")?;
    let dvs = deletion_vectors(s);
    let base_row_id = child_i64(s, "baseRowId")?;
    let default_rcv = child_i64(s, "defaultRowCommitVersion")?;
    let clustering = child_strings(s, "clusteringProvider")?;
    out.reserve(s.len() - s.null_count());
    for row in 0..s.len() {
        if s.is_null(row) || path.is_null(row) {
            continue;
        }
        out.push(Action::Add(Add {
            path: path.value(row).to_string(),
            partition_values: parts.as_ref().and_then(|p| p.get(row)).unwrap_or_default(),
            size: opt_i64(&size, row).unwrap_or(0),
            modification_time: opt_i64(&mtime, row).unwrap_or(0),
            data_change: opt_bool(&data_change, row).unwrap_or(false),
            stats: opt_str(&stats, row),
            tags: tags.as_ref().and_then(|t| t.get(row)),
            deletion_vector: dvs
                .filter(|d| d.is_valid(row))
                .map(|d| to_json(d.as_ref(), row)),
            base_row_id: opt_i64(&base_row_id, row),
            default_row_commit_version: opt_i64(&default_rcv, row),
            clustering_provider: opt_str(&clustering, row),
        }));
    }
    Ok(())
}

fn decode_removes(s: &StructArray, out: &mut Vec<Action>) -> Result<()> {
    let path = child_strings(s, "path")?.ok_or_else(|| missing("remove", "path"))?;
    let deletion_ts = child_i64(s, "deletionTimestamp")?;
    let data_change = child_bool(s, "dataChange");
    let extended = child_bool(s, "extendedFileMetadata");
    let parts = StringMapColumn::new(s, "partitionValues")?;
    let size = child_i64(s, "size")?;
    let tags = StringMapColumn::new(s, "tags")?;
    let dvs = deletion_vectors(s);
    for row in 0..s.len() {
        if s.is_null(row) || path.is_null(row) {
            continue;
        }
        out.push(Action::Remove(Remove {
            path: path.value(row).to_string(),
            deletion_timestamp: opt_i64(&deletion_ts, row),
            data_change: opt_bool(&data_change, row).unwrap_or(false),
            extended_file_metadata: opt_bool(&extended, row),
            partition_values: parts.as_ref().and_then(|p| p.get(row)),
            size: opt_i64(&size, row),
            tags: tags.as_ref().and_then(|t| t.get(row)),
            deletion_vector: dvs
                .filter(|d| d.is_valid(row))
                .map(|d| to_json(d.as_ref(), row)),
        }));
    }
    Ok(())
}

/// One Arrow value as JSON (structs as objects, maps as objects, lists as arrays).
fn to_json(array: &dyn Array, row: usize) -> Value {
    use arrow::datatypes::{Int32Type, Int64Type};
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        ArrowType::Utf8 => Value::from(array.as_string::<i32>().value(row)),
        ArrowType::LargeUtf8 => Value::from(array.as_string::<i64>().value(row)),
        ArrowType::Utf8View => Value::from(array.as_string_view().value(row)),
        ArrowType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(row)),
        ArrowType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(row)),
        ArrowType::Boolean => Value::from(array.as_boolean().value(row)),
        ArrowType::Struct(fields) => {
            let s = array.as_struct();
            let mut m = Map::new();
            for (i, f) in fields.iter().enumerate() {
                // Parsed copies of stats and partition values are derived data.
                if f.name().ends_with("_parsed") {
                    continue;
                }
                m.insert(f.name().clone(), to_json(s.column(i).as_ref(), row));
            }
            Value::Object(m)
        }
        ArrowType::Map(_, _) => {
            let map = array.as_map();
            let entries = map.value(row);
            let keys = entries.column(0);
            let values = entries.column(1);
            let mut m = Map::new();
            for i in 0..entries.len() {
                if let Value::String(k) = to_json(keys.as_ref(), i) {
                    m.insert(k, to_json(values.as_ref(), i));
                }
            }
            Value::Object(m)
        }
        ArrowType::List(_) => {
            let list = array.as_list::<i32>();
            let items = list.value(row);
            Value::Array(
                (0..items.len())
                    .map(|i| to_json(items.as_ref(), i))
                    .collect(),
            )
        }
        _ => {
            let formatted =
                arrow::util::display::array_value_to_string(array, row).unwrap_or_default();
            Value::from(formatted)
        }
    }
}

fn string_map() -> ArrowType {
    ArrowType::Map(
        Arc::new(Field::new(
            "key_value",
            ArrowType::Struct(Fields::from(vec![
                Field::new("key", ArrowType::Utf8, false),
                Field::new("value", ArrowType::Utf8, true),
            ])),
            false,
        )),
        false,
    )
}

fn string_list() -> ArrowType {
    ArrowType::List(Arc::new(Field::new("element", ArrowType::Utf8, true)))
}

fn deletion_vector() -> ArrowType {
    ArrowType::Struct(Fields::from(vec![
        Field::new("storageType", ArrowType::Utf8, true),
        Field::new("pathOrInlineDv", ArrowType::Utf8, true),
        Field::new("offset", ArrowType::Int32, true),
        Field::new("sizeInBytes", ArrowType::Int32, true),
        Field::new("cardinality", ArrowType::Int64, true),
    ]))
}

fn s(name: &str, t: ArrowType) -> Field {
    Field::new(name, t, true)
}

/// The checkpoint schema Shoal writes (the protocol's, as Spark and delta-rs write it).
pub fn checkpoint_schema() -> SchemaRef {
    use ArrowType::{Boolean, Int32, Int64, Utf8};
    Arc::new(Schema::new(vec![
        s(
            "txn",
            ArrowType::Struct(Fields::from(vec![
                s("appId", Utf8),
                s("version", Int64),
                s("lastUpdated", Int64),
            ])),
        ),
        s(
            "add",
            ArrowType::Struct(Fields::from(vec![
                s("path", Utf8),
                s("partitionValues", string_map()),
                s("size", Int64),
                s("modificationTime", Int64),
                s("dataChange", Boolean),
                s("stats", Utf8),
                s("tags", string_map()),
                s("deletionVector", deletion_vector()),
                s("baseRowId", Int64),
                s("defaultRowCommitVersion", Int64),
                s("clusteringProvider", Utf8),
            ])),
        ),
        s(
            "remove",
            ArrowType::Struct(Fields::from(vec![
                s("path", Utf8),
                s("deletionTimestamp", Int64),
                s("dataChange", Boolean),
                s("extendedFileMetadata", Boolean),
                s("partitionValues", string_map()),
                s("size", Int64),
                s("tags", string_map()),
                s("deletionVector", deletion_vector()),
            ])),
        ),
        s(
            "metaData",
            ArrowType::Struct(Fields::from(vec![
                s("id", Utf8),
                s("name", Utf8),
                s("description", Utf8),
                s(
                    "format",
                    ArrowType::Struct(Fields::from(vec![
                        s("provider", Utf8),
                        s("options", string_map()),
                    ])),
                ),
                s("schemaString", Utf8),
                s("partitionColumns", string_list()),
                s("configuration", string_map()),
                s("createdTime", Int64),
            ])),
        ),
        s(
            "protocol",
            ArrowType::Struct(Fields::from(vec![
                s("minReaderVersion", Int32),
                s("minWriterVersion", Int32),
                s("readerFeatures", string_list()),
                s("writerFeatures", string_list()),
            ])),
        ),
        s(
            "domainMetadata",
            ArrowType::Struct(Fields::from(vec![
                s("domain", Utf8),
                s("configuration", Utf8),
                s("removed", Boolean),
            ])),
        ),
    ]))
}

/// Encodes actions as one checkpoint Parquet file.
pub fn write_checkpoint(actions: &[Action]) -> Result<Bytes> {
    let schema = checkpoint_schema();
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(16 * 1024)
        .build_decoder()?;
    let props = WriterProperties::builder()
        // Snappy, as Spark and delta-rs write checkpoints: cheap to open on every load.
        .set_compression(Compression::SNAPPY)
        .build();
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, schema, Some(props))?;
    let mut pending = 0usize;
    for action in actions {
        if matches!(action, Action::CommitInfo(_) | Action::Other(..)) {
            continue;
        }
        let mut line = action.to_json_line()?;
        line.push('\n');
        decoder.decode(line.as_bytes())?;
        pending += 1;
        if pending >= 16 * 1024 {
            if let Some(batch) = decoder.flush()? {
                writer.write(&batch)?;
            }
            pending = 0;
        }
    }
    if let Some(batch) = decoder.flush()? {
        writer.write(&batch)?;
    }
    writer.close()?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Add, Metadata, Protocol, Remove, Txn};
    use std::collections::HashMap;

    #[test]
    fn checkpoint_round_trips() {
        let add = Add {
            path: "a=1/f.parquet".into(),
            partition_values: HashMap::from([("a".into(), Some("1".into())), ("b".into(), None)]),
            size: 10,
            modification_time: 5,
            data_change: true,
            stats: Some("{\"numRecords\":1}".into()),
            tags: None,
            deletion_vector: None,
            base_row_id: None,
            default_row_commit_version: None,
            clustering_provider: None,
        };
        let actions = vec![
            Action::Protocol(Protocol::default()),
            Action::Metadata(Metadata {
                id: "id".into(),
                name: None,
                description: None,
                format: Default::default(),
                schema_string: "{\"type\":\"struct\",\"fields\":[]}".into(),
                partition_columns: vec!["a".into()],
                configuration: HashMap::from([("k".into(), Some("v".into()))]),
                created_time: Some(1),
            }),
            Action::Add(add.clone()),
            Action::Remove(Remove::for_add(&add, 9, true)),
            Action::Txn(Txn {
                app_id: "app".into(),
                version: 3,
                last_updated: None,
            }),
        ];
        let bytes = write_checkpoint(&actions).unwrap();
        let back = read_checkpoint_actions(bytes, "cp").unwrap();
        // A checkpoint is a set of actions: compare them regardless of order.
        let kind = |a: &Action| match a {
            Action::Protocol(_) => 0,
            Action::Metadata(_) => 1,
            Action::Add(_) => 2,
            Action::Remove(_) => 3,
            _ => 4,
        };
        let mut back = back;
        back.sort_by_key(kind);
        assert_eq!(back, actions);
    }
}
