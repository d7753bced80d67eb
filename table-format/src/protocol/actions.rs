//! The Delta log actions (PROTOCOL.md "Actions") as serde types.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `protocol`: the reader and writer versions and features a table requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Protocol {
    pub min_reader_version: i32,
    pub min_writer_version: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_features: Option<Vec<String>>,
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol {
            min_reader_version: 1,
            min_writer_version: 2,
            reader_features: None,
            writer_features: None,
        }
    }
}

/// `metaData.format`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Format {
    pub provider: String,
    #[serde(default)]
    pub options: HashMap<String, String>,
}

impl Default for Format {
    fn default() -> Self {
        Format {
            provider: "parquet".into(),
            options: HashMap::new(),
        }
    }
}

/// `metaData`: schema, partitioning and table properties.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub format: Format,
    /// Empty when a writer omitted it (seen in the wild); such a table is unreadable
    /// until a later `metaData` sets a schema.
    #[serde(default)]
    pub schema_string: String,
    #[serde(default)]
    pub partition_columns: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub configuration: HashMap<String, Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<i64>,
}

impl Metadata {
    /// A table property, if set to a non-null value.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.configuration.get(key).and_then(|v| v.as_deref())
    }
}

/// `add`: a data file that is part of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Add {
    pub path: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub partition_values: HashMap<String, Option<String>>,
    pub size: i64,
    pub modification_time: i64,
    pub data_change: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<HashMap<String, Option<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_vector: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_row_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_row_commit_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clustering_provider: Option<String>,
}

/// `remove`: a logical file deletion (a tombstone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Remove {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<i64>,
    pub data_change: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_file_metadata: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_values: Option<HashMap<String, Option<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<HashMap<String, Option<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_vector: Option<Value>,
}

impl Remove {
    /// The tombstone for an active file, as removed at `timestamp` (ms).
    pub fn for_add(add: &Add, timestamp: i64, data_change: bool) -> Remove {
        Remove {
            path: add.path.clone(),
            deletion_timestamp: Some(timestamp),
            data_change,
            extended_file_metadata: Some(true),
            partition_values: Some(add.partition_values.clone()),
            size: Some(add.size),
            tags: add.tags.clone(),
            deletion_vector: add.deletion_vector.clone(),
        }
    }
}

/// `txn`: the last version an application committed (idempotent writes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Txn {
    pub app_id: String,
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<i64>,
}

/// `domainMetadata`: configuration of a named metadata domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainMetadata {
    pub domain: String,
    pub configuration: String,
    pub removed: bool,
}

/// `commitInfo`: free-form provenance; the fields Shoal reads are typed accessors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommitInfo(pub Map<String, Value>);

impl CommitInfo {
    pub fn timestamp(&self) -> Option<i64> {
        self.0.get("timestamp").and_then(Value::as_i64)
    }
    pub fn in_commit_timestamp(&self) -> Option<i64> {
        self.0.get("inCommitTimestamp").and_then(Value::as_i64)
    }
    pub fn operation(&self) -> Option<&str> {
        self.0.get("operation").and_then(Value::as_str)
    }
}

/// One action of a commit.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Protocol(Protocol),
    Metadata(Metadata),
    Add(Add),
    Remove(Remove),
    Txn(Txn),
    DomainMetadata(DomainMetadata),
    CommitInfo(CommitInfo),
    /// `cdc` and any action type Shoal does not interpret, kept verbatim.
    Other(String, Value),
}

/// The wire shape of one log line: exactly one of these keys is set.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ActionLine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    protocol: Option<Protocol>,
    #[serde(rename = "metaData", default, skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    add: Option<Add>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remove: Option<Remove>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    txn: Option<Txn>,
    #[serde(
        rename = "domainMetadata",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    domain_metadata: Option<DomainMetadata>,
    #[serde(
        rename = "commitInfo",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    commit_info: Option<CommitInfo>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

impl Action {
    /// Parses one line of a commit file.
    pub fn from_json_line(line: &str) -> Result<Option<Action>, serde_json::Error> {
        let parsed: ActionLine = serde_json::from_str(line)?;
        Ok(if let Some(a) = parsed.add {
            Some(Action::Add(a))
        } else if let Some(r) = parsed.remove {
            Some(Action::Remove(r))
        } else if let Some(m) = parsed.metadata {
            Some(Action::Metadata(m))
        } else if let Some(p) = parsed.protocol {
            Some(Action::Protocol(p))
        } else if let Some(t) = parsed.txn {
            Some(Action::Txn(t))
        } else if let Some(d) = parsed.domain_metadata {
            Some(Action::DomainMetadata(d))
        } else if let Some(c) = parsed.commit_info {
            Some(Action::CommitInfo(c))
        } else {
            parsed
                .other
                .into_iter()
                .next()
                .map(|(k, v)| Action::Other(k, v))
        })
    }

    /// Serializes the action as one log line (no trailing newline).
    pub fn to_json_line(&self) -> Result<String, serde_json::Error> {
        let mut line = ActionLine::default();
        match self {
            Action::Protocol(p) => line.protocol = Some(p.clone()),
            Action::Metadata(m) => line.metadata = Some(m.clone()),
            Action::Add(a) => return serde_json::to_string(&AddLine { add: a }),
            Action::Remove(r) => return serde_json::to_string(&RemoveLine { remove: r }),
            Action::Txn(t) => line.txn = Some(t.clone()),
            Action::DomainMetadata(d) => line.domain_metadata = Some(d.clone()),
            Action::CommitInfo(c) => line.commit_info = Some(c.clone()),
            Action::Other(k, v) => {
                line.other.insert(k.clone(), v.clone());
            }
        }
        serde_json::to_string(&line)
    }
}

#[derive(Serialize)]
struct AddLine<'a> {
    add: &'a Add,
}

#[derive(Serialize)]
struct RemoveLine<'a> {
    remove: &'a Remove,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips_actions() {
        let line = r#"{"add":{"path":"a=1/f.parquet","partitionValues":{"a":"1","b":null},"size":10,"modificationTime":5,"dataChange":true,"stats":"{\"numRecords\":3}"}}"#;
        let action = Action::from_json_line(line).unwrap().unwrap();
        let Action::Add(add) = &action else {
            panic!("not an add")
        };
        assert_eq!(add.partition_values.get("b"), Some(&None));
        let again = Action::from_json_line(&action.to_json_line().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(action, again);
    }

    #[test]
    fn keeps_unknown_actions() {
        let action = Action::from_json_line(r#"{"cdc":{"path":"x"}}"#)
            .unwrap()
            .unwrap();
        assert!(matches!(action, Action::Other(ref k, _) if k == "cdc"));
    }

    #[test]
    fn null_configuration_is_empty() {
        let line = r#"{"metaData":{"id":"x","format":{"provider":"parquet"},"schemaString":"{}","partitionColumns":[],"configuration":null}}"#;
        let Some(Action::Metadata(m)) = Action::from_json_line(line).unwrap() else {
            panic!()
        };
        assert!(m.configuration.is_empty());
    }
}
