//! CREATE TABLE: protocol and metadata at version 0.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::protocol::features::protocol_for_new_table;
use crate::protocol::{Action, Metadata, Protocol, StructType};
use crate::snapshot::Snapshot;
use crate::storage::TableStore;
use crate::transaction::Transaction;

/// Creates an empty table.
#[derive(Debug, Clone)]
pub struct CreateTableBuilder {
    store: TableStore,
    schema: StructType,
    partition_columns: Vec<String>,
    properties: HashMap<String, String>,
    name: Option<String>,
    description: Option<String>,
}

/// Builds the protocol and metadata actions of a new table (validated).
pub(crate) fn new_table_actions(
    schema: &StructType,
    partition_columns: &[String],
    properties: &HashMap<String, String>,
    name: Option<String>,
    description: Option<String>,
) -> Result<(Protocol, Metadata)> {
    if schema.fields.is_empty() {
        return Err(Error::InvalidSchema(
            "a table needs at least one column".into(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for f in &schema.fields {
        if !seen.insert(f.name.to_lowercase()) {
            return Err(Error::InvalidSchema(format!(
                "duplicate column `{}`",
                f.name
            )));
        }
    }
    schema.to_arrow()?;
    for p in partition_columns {
        let f = schema.field(p).ok_or_else(|| {
            Error::InvalidSchema(format!("partition column `{p}` is not in the schema"))
        })?;
        if !f.data_type.is_primitive() {
            return Err(Error::InvalidSchema(format!(
                "partition column `{p}` must have a primitive type"
            )));
        }
    }
    if partition_columns.len() == schema.fields.len() {
        return Err(Error::InvalidSchema(
            "at least one column must not be a partition column".into(),
        ));
    }
    let metadata = Metadata {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        description,
        format: Default::default(),
        schema_string: schema.to_json(),
        partition_columns: partition_columns.to_vec(),
        configuration: properties
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect(),
        created_time: Some(chrono::Utc::now().timestamp_millis()),
    };
    let protocol = protocol_for_new_table(schema, &metadata);
    let mut metadata = metadata;
    if protocol
        .writer_features
        .iter()
        .flatten()
        .any(|f| f == "inCommitTimestamp")
    {
        metadata.configuration.insert(
            "delta.inCommitTimestampEnablementVersion".into(),
            Some("0".into()),
        );
    }
    Ok((protocol, metadata))
}

impl CreateTableBuilder {
    pub fn new(store: TableStore, schema: StructType) -> Self {
        CreateTableBuilder {
            store,
            schema,
            partition_columns: Vec::new(),
            properties: HashMap::new(),
            name: None,
            description: None,
        }
    }

    pub fn with_partition_columns<S: AsRef<str>>(mut self, cols: &[S]) -> Self {
        self.partition_columns = cols.iter().map(|c| c.as_ref().to_string()).collect();
        self
    }

    pub fn with_property(mut self, key: &str, value: &str) -> Self {
        self.properties.insert(key.to_string(), value.to_string());
        self
    }

    pub fn with_properties(mut self, props: HashMap<String, String>) -> Self {
        self.properties.extend(props);
        self
    }

    pub fn with_name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    pub fn with_description(mut self, d: &str) -> Self {
        self.description = Some(d.to_string());
        self
    }

    pub async fn execute(self) -> Result<Snapshot> {
        let (protocol, metadata) = new_table_actions(
            &self.schema,
            &self.partition_columns,
            &self.properties,
            self.name.clone(),
            self.description.clone(),
        )?;
        let partition_by = serde_json::to_string(&self.partition_columns)?;
        let result = Transaction::create(&self.store, "CREATE TABLE")
            .with_parameter("mode", "ErrorIfExists")
            .with_parameter("partitionBy", partition_by)
            .with_actions([Action::Protocol(protocol), Action::Metadata(metadata)])
            .commit()
            .await?;
        Ok(result.snapshot)
    }
}
