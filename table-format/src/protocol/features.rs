//! Table features (PROTOCOL.md "Table Features"): which ones a table needs, and whether
//! Shoal can read or write it. Unsupported features are refused by name.

use crate::error::{Error, Result};
use crate::protocol::actions::{Metadata, Protocol};
use crate::protocol::schema::{DataType, StructType};

/// Reader features Shoal reads correctly.
pub const SUPPORTED_READER_FEATURES: &[&str] = &[
    "timestampNtz",
    "columnMapping",
    "vacuumProtocolCheck",
    // Files carrying a deletion vector are refused at scan time; tables that merely
    // enable the feature read correctly.
    "deletionVectors",
];

/// Writer features Shoal honours when writing.
pub const SUPPORTED_WRITER_FEATURES: &[&str] = &[
    "appendOnly",
    "invariants",
    "checkConstraints",
    "changeDataFeed",
    "generatedColumns",
    "timestampNtz",
    "domainMetadata",
    "inCommitTimestamp",
    "vacuumProtocolCheck",
];

/// The column mapping mode of a table (`delta.columnMapping.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnMapping {
    None,
    Name,
    Id,
}

pub fn column_mapping(metadata: &Metadata) -> ColumnMapping {
    match metadata.property("delta.columnMapping.mode") {
        Some("name") => ColumnMapping::Name,
        Some("id") => ColumnMapping::Id,
        _ => ColumnMapping::None,
    }
}

/// True when the protocol lists `feature` as a writer feature (or implies it by version).
pub fn has_writer_feature(protocol: &Protocol, feature: &str) -> bool {
    writer_features(protocol).iter().any(|f| f == feature)
}

fn writer_features(p: &Protocol) -> Vec<String> {
    if p.min_writer_version >= 7 {
        return p.writer_features.clone().unwrap_or_default();
    }
    let legacy: &[(i32, &str)] = &[
        (2, "appendOnly"),
        (2, "invariants"),
        (3, "checkConstraints"),
        (4, "changeDataFeed"),
        (4, "generatedColumns"),
        (5, "columnMapping"),
        (6, "identityColumns"),
    ];
    legacy
        .iter()
        .filter(|(v, _)| p.min_writer_version >= *v)
        .map(|(_, f)| f.to_string())
        .collect()
}

/// Checks that Shoal can read a table with this protocol.
pub fn check_read(protocol: &Protocol, metadata: &Metadata) -> Result<()> {
    match protocol.min_reader_version {
        1 => {}
        2 => {
            // Reader version 2 means column mapping.
            check_column_mapping_schema(metadata)?;
        }
        3 => {
            for f in protocol.reader_features.iter().flatten() {
                if !SUPPORTED_READER_FEATURES.contains(&f.as_str()) {
                    return Err(Error::UnsupportedFeature {
                        kind: "reader",
                        feature: f.clone(),
                        action: "read",
                    });
                }
            }
            check_column_mapping_schema(metadata)?;
        }
        v => {
            return Err(Error::UnsupportedProtocol(format!(
                "minReaderVersion {v} is beyond the reader versions Shoal supports (1 to 3)"
            )))
        }
    }
    if protocol.min_reader_version < 3 && protocol.reader_features.is_some() {
        return Err(Error::UnsupportedProtocol(format!(
            "readerFeatures are set but minReaderVersion is {}",
            protocol.min_reader_version
        )));
    }
    Ok(())
}

fn check_column_mapping_schema(metadata: &Metadata) -> Result<()> {
    if column_mapping(metadata) == ColumnMapping::None {
        return Ok(());
    }
    // Every field must carry its physical name; without one we would guess.
    let schema = StructType::from_json(&metadata.schema_string)?;
    let mut missing = None;
    visit_fields(&schema, &mut |name, meta| {
        if !meta.contains_key("delta.columnMapping.physicalName") && missing.is_none() {
            missing = Some(name.to_string());
        }
    });
    match missing {
        Some(col) => Err(Error::InvalidSchema(format!(
            "column mapping is enabled but column `{col}` has no physical name"
        ))),
        None => Ok(()),
    }
}

fn visit_fields(
    s: &StructType,
    f: &mut dyn FnMut(&str, &serde_json::Map<String, serde_json::Value>),
) {
    for field in &s.fields {
        f(&field.name, &field.metadata);
        visit_type(&field.data_type, f);
    }
}

fn visit_type(t: &DataType, f: &mut dyn FnMut(&str, &serde_json::Map<String, serde_json::Value>)) {
    match t {
        DataType::Struct(s) => visit_fields(s, f),
        DataType::Array(a) => visit_type(&a.element_type, f),
        DataType::Map(m) => {
            visit_type(&m.key_type, f);
            visit_type(&m.value_type, f);
        }
        _ => {}
    }
}

/// Checks that Shoal can write to a table with this protocol and metadata.
pub fn check_write(protocol: &Protocol, metadata: &Metadata) -> Result<()> {
    if protocol.min_writer_version > 7 {
        return Err(Error::UnsupportedProtocol(format!(
            "minWriterVersion {} is beyond the writer versions Shoal supports (1 to 7)",
            protocol.min_writer_version
        )));
    }
    check_read(protocol, metadata)?;
    let refuse = |feature: &str| Error::UnsupportedFeature {
        kind: "writer",
        feature: feature.to_string(),
        action: "write to",
    };
    let schema = StructType::from_json(&metadata.schema_string)?;
    for f in writer_features(protocol) {
        let supported = SUPPORTED_WRITER_FEATURES.contains(&f.as_str());
        if !supported {
            return Err(refuse(&f));
        }
        let in_use = match f.as_str() {
            "invariants" => schema_has_meta(&schema, "delta.invariants"),
            "generatedColumns" => schema_has_meta(&schema, "delta.generationExpression"),
            "checkConstraints" => metadata
                .configuration
                .keys()
                .any(|k| k.starts_with("delta.constraints.")),
            _ => false,
        };
        if in_use {
            // The feature is active and Shoal does not evaluate its expressions yet.
            return Err(refuse(&f));
        }
    }
    if column_mapping(metadata) != ColumnMapping::None {
        return Err(refuse("columnMapping"));
    }
    if schema_has_meta(&schema, "delta.identity.start") {
        return Err(refuse("identityColumns"));
    }
    Ok(())
}

fn schema_has_meta(schema: &StructType, key: &str) -> bool {
    let mut found = false;
    visit_fields(schema, &mut |_, meta| found |= meta.contains_key(key));
    found
}

/// The protocol a new table with this schema needs.
pub fn protocol_for_new_table(schema: &StructType, metadata: &Metadata) -> Protocol {
    let mut types = Vec::new();
    schema.walk_types(&mut types);
    let ntz = types
        .iter()
        .any(|(_, t)| matches!(t, DataType::TimestampNtz));
    let ict = metadata.property("delta.enableInCommitTimestamps") == Some("true");
    if !ntz && !ict {
        return Protocol::default();
    }
    let mut reader = Vec::new();
    let mut writer = vec!["appendOnly".to_string(), "invariants".to_string()];
    if ntz {
        reader.push("timestampNtz".to_string());
        writer.push("timestampNtz".to_string());
    }
    if ict {
        writer.push("inCommitTimestamp".to_string());
    }
    Protocol {
        min_reader_version: if reader.is_empty() { 1 } else { 3 },
        min_writer_version: 7,
        reader_features: (!reader.is_empty()).then_some(reader),
        writer_features: Some(writer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(config: &[(&str, &str)]) -> Metadata {
        Metadata {
            id: "x".into(),
            name: None,
            description: None,
            format: Default::default(),
            schema_string: r#"{"type":"struct","fields":[]}"#.into(),
            partition_columns: vec![],
            configuration: config
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.to_string())))
                .collect(),
            created_time: None,
        }
    }

    #[test]
    fn refuses_unknown_reader_feature_by_name() {
        let p = Protocol {
            min_reader_version: 3,
            min_writer_version: 7,
            reader_features: Some(vec!["v2Checkpoint".into()]),
            writer_features: Some(vec![]),
        };
        let err = check_read(&p, &meta(&[])).unwrap_err().to_string();
        assert!(err.contains("v2Checkpoint"), "{err}");
    }

    #[test]
    fn refuses_write_with_constraints() {
        let p = Protocol {
            min_reader_version: 1,
            min_writer_version: 3,
            reader_features: None,
            writer_features: None,
        };
        assert!(check_write(&p, &meta(&[])).is_ok());
        let err = check_write(&p, &meta(&[("delta.constraints.x", "a > 0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("checkConstraints"), "{err}");
    }
}
