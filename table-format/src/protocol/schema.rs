//! The Delta schema (PROTOCOL.md "Schema Serialization Format") and its Arrow mapping.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{
    DataType as ArrowType, Field as ArrowField, Fields, Schema as ArrowSchema, TimeUnit,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// Arrow field metadata key for the Delta field metadata of non-string values.
const JSON_META_PREFIX: &str = "delta.json:";

/// Primitive and nested Delta types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataType {
    Byte,
    Short,
    Integer,
    Long,
    Float,
    Double,
    Decimal(u8, i8),
    String,
    Binary,
    Boolean,
    Date,
    Timestamp,
    TimestampNtz,
    /// A type Shoal does not understand (e.g. `variant`), kept by name.
    Unsupported(String),
    Struct(Box<StructType>),
    Array(Box<ArrayType>),
    Map(Box<MapType>),
}

/// A struct type: the table schema itself is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StructType {
    #[serde(rename = "type")]
    type_name: StructTag,
    pub fields: Vec<StructField>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum StructTag {
    #[serde(rename = "struct")]
    Struct,
}

/// One named field of a struct.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StructField {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: DataType,
    pub nullable: bool,
    #[serde(default)]
    pub metadata: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArrayType {
    #[serde(rename = "type")]
    type_name: String,
    pub element_type: DataType,
    pub contains_null: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MapType {
    #[serde(rename = "type")]
    type_name: String,
    pub key_type: DataType,
    pub value_type: DataType,
    pub value_contains_null: bool,
}

impl StructType {
    pub fn new(fields: Vec<StructField>) -> Self {
        StructType {
            type_name: StructTag::Struct,
            fields,
        }
    }

    pub fn field(&self, name: &str) -> Option<&StructField> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// Parses `metaData.schemaString`.
    pub fn from_json(s: &str) -> Result<Self> {
        serde_json::from_str(s).map_err(|e| Error::InvalidSchema(format!("{e}")))
    }

    pub fn to_json(&self) -> String {
        // Serializing our own types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The Arrow schema of this Delta schema.
    pub fn to_arrow(&self) -> Result<ArrowSchema> {
        let fields = self
            .fields
            .iter()
            .map(StructField::to_arrow)
            .collect::<Result<Vec<_>>>()?;
        Ok(ArrowSchema::new(fields))
    }

    /// The Delta schema of an Arrow schema (for creating tables from data).
    pub fn from_arrow(schema: &ArrowSchema) -> Result<Self> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| StructField::from_arrow(f))
            .collect::<Result<Vec<_>>>()?;
        Ok(StructType::new(fields))
    }

    /// The same schema with every field renamed to its column-mapping physical name.
    pub fn to_physical(&self) -> StructType {
        StructType::new(
            self.fields
                .iter()
                .map(|f| StructField {
                    name: f.physical_name().to_string(),
                    data_type: f.data_type.to_physical(),
                    nullable: f.nullable,
                    metadata: Default::default(),
                })
                .collect(),
        )
    }

    /// Every type used anywhere in the schema, depth first.
    pub fn walk_types<'a>(&'a self, out: &mut Vec<(&'a str, &'a DataType)>) {
        for f in &self.fields {
            walk_type(&f.name, &f.data_type, out);
        }
    }
}

fn walk_type<'a>(name: &'a str, t: &'a DataType, out: &mut Vec<(&'a str, &'a DataType)>) {
    out.push((name, t));
    match t {
        DataType::Struct(s) => s.walk_types(out),
        DataType::Array(a) => walk_type(name, &a.element_type, out),
        DataType::Map(m) => {
            walk_type(name, &m.key_type, out);
            walk_type(name, &m.value_type, out);
        }
        _ => {}
    }
}

impl StructField {
    pub fn new(name: impl Into<String>, data_type: DataType, nullable: bool) -> Self {
        StructField {
            name: name.into(),
            data_type,
            nullable,
            metadata: Default::default(),
        }
    }

    /// The column-mapping physical name, if the field has one.
    pub fn physical_name(&self) -> &str {
        self.metadata
            .get("delta.columnMapping.physicalName")
            .and_then(Value::as_str)
            .unwrap_or(&self.name)
    }

    pub fn to_arrow(&self) -> Result<ArrowField> {
        let metadata: HashMap<String, String> = self
            .metadata
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k.clone(), s.clone()),
                other => (format!("{JSON_META_PREFIX}{k}"), other.to_string()),
            })
            .collect();
        Ok(ArrowField::new(
            &self.name,
            self.data_type.to_arrow(&self.name)?,
            self.nullable,
        )
        .with_metadata(metadata))
    }

    pub fn from_arrow(field: &ArrowField) -> Result<Self> {
        let mut metadata = serde_json::Map::new();
        for (k, v) in field.metadata() {
            match k.strip_prefix(JSON_META_PREFIX) {
                Some(key) => {
                    let value = serde_json::from_str(v).unwrap_or(Value::String(v.clone()));
                    metadata.insert(key.to_string(), value);
                }
                None => {
                    metadata.insert(k.clone(), Value::String(v.clone()));
                }
            }
        }
        Ok(StructField {
            name: field.name().clone(),
            data_type: DataType::from_arrow(field.name(), field.data_type())?,
            nullable: field.is_nullable(),
            metadata,
        })
    }
}

impl DataType {
    pub fn array(element_type: DataType, contains_null: bool) -> Self {
        DataType::Array(Box::new(ArrayType {
            type_name: "array".into(),
            element_type,
            contains_null,
        }))
    }

    pub fn map(key_type: DataType, value_type: DataType, value_contains_null: bool) -> Self {
        DataType::Map(Box::new(MapType {
            type_name: "map".into(),
            key_type,
            value_type,
            value_contains_null,
        }))
    }

    fn to_physical(&self) -> DataType {
        match self {
            DataType::Struct(s) => DataType::Struct(Box::new(s.to_physical())),
            DataType::Array(a) => DataType::array(a.element_type.to_physical(), a.contains_null),
            DataType::Map(m) => DataType::map(
                m.key_type.to_physical(),
                m.value_type.to_physical(),
                m.value_contains_null,
            ),
            other => other.clone(),
        }
    }

    pub fn is_primitive(&self) -> bool {
        !matches!(
            self,
            DataType::Struct(_) | DataType::Array(_) | DataType::Map(_) | DataType::Unsupported(_)
        )
    }

    /// The Delta name of a primitive type.
    pub fn primitive_name(&self) -> Option<String> {
        Some(match self {
            DataType::Byte => "byte".into(),
            DataType::Short => "short".into(),
            DataType::Integer => "integer".into(),
            DataType::Long => "long".into(),
            DataType::Float => "float".into(),
            DataType::Double => "double".into(),
            DataType::Decimal(p, s) => format!("decimal({p},{s})"),
            DataType::String => "string".into(),
            DataType::Binary => "binary".into(),
            DataType::Boolean => "boolean".into(),
            DataType::Date => "date".into(),
            DataType::Timestamp => "timestamp".into(),
            DataType::TimestampNtz => "timestamp_ntz".into(),
            DataType::Unsupported(n) => n.clone(),
            _ => return None,
        })
    }

    fn parse_primitive(s: &str) -> Result<DataType> {
        Ok(match s {
            "byte" => DataType::Byte,
            "short" => DataType::Short,
            "integer" => DataType::Integer,
            "long" => DataType::Long,
            "float" => DataType::Float,
            "double" => DataType::Double,
            "string" => DataType::String,
            "binary" => DataType::Binary,
            "boolean" => DataType::Boolean,
            "date" => DataType::Date,
            "timestamp" => DataType::Timestamp,
            "timestamp_ntz" => DataType::TimestampNtz,
            other => {
                if let Some(inner) = other
                    .strip_prefix("decimal(")
                    .and_then(|r| r.strip_suffix(')'))
                {
                    let (p, s) = inner.split_once(',').ok_or_else(|| {
                        Error::InvalidSchema(format!("bad decimal type `{other}`"))
                    })?;
                    let p: u8 = p.trim().parse().map_err(|_| {
                        Error::InvalidSchema(format!("bad decimal precision in `{other}`"))
                    })?;
                    let s: i8 = s.trim().parse().map_err(|_| {
                        Error::InvalidSchema(format!("bad decimal scale in `{other}`"))
                    })?;
                    if p == 0 || p > 38 || s < 0 || s as u8 > p {
                        return Err(Error::InvalidSchema(format!(
                            "decimal precision/scale out of range in `{other}`"
                        )));
                    }
                    DataType::Decimal(p, s)
                } else {
                    DataType::Unsupported(other.to_string())
                }
            }
        })
    }

    /// The Arrow type Shoal reads and writes for this Delta type.
    pub fn to_arrow(&self, column: &str) -> Result<ArrowType> {
        Ok(match self {
            DataType::Byte => ArrowType::Int8,
            DataType::Short => ArrowType::Int16,
            DataType::Integer => ArrowType::Int32,
            DataType::Long => ArrowType::Int64,
            DataType::Float => ArrowType::Float32,
            DataType::Double => ArrowType::Float64,
            DataType::Decimal(p, s) => ArrowType::Decimal128(*p, *s),
            DataType::String => ArrowType::Utf8,
            DataType::Binary => ArrowType::Binary,
            DataType::Boolean => ArrowType::Boolean,
            DataType::Date => ArrowType::Date32,
            DataType::Timestamp => ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::TimestampNtz => ArrowType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Unsupported(name) => {
                return Err(Error::InvalidSchema(format!(
                    "column `{column}` has type `{name}`, which Shoal does not support"
                )))
            }
            DataType::Struct(s) => ArrowType::Struct(Fields::from(
                s.fields
                    .iter()
                    .map(StructField::to_arrow)
                    .collect::<Result<Vec<_>>>()?,
            )),
            DataType::Array(a) => ArrowType::List(Arc::new(ArrowField::new(
                "element",
                a.element_type.to_arrow(column)?,
                a.contains_null,
            ))),
            DataType::Map(m) => ArrowType::Map(
                Arc::new(ArrowField::new(
                    "key_value",
                    ArrowType::Struct(Fields::from(vec![
                        ArrowField::new("key", m.key_type.to_arrow(column)?, false),
                        ArrowField::new(
                            "value",
                            m.value_type.to_arrow(column)?,
                            m.value_contains_null,
                        ),
                    ])),
                    false,
                )),
                false,
            ),
        })
    }

    /// The Delta type for an Arrow type; only lossless mappings are accepted.
    pub fn from_arrow(column: &str, t: &ArrowType) -> Result<DataType> {
        let unsupported = || {
            Err(Error::mismatch(
                column,
                format!("Arrow type {t} has no Delta equivalent"),
            ))
        };
        Ok(match t {
            ArrowType::Int8 => DataType::Byte,
            ArrowType::Int16 | ArrowType::UInt8 => DataType::Short,
            ArrowType::Int32 | ArrowType::UInt16 => DataType::Integer,
            ArrowType::Int64 | ArrowType::UInt32 => DataType::Long,
            ArrowType::Float32 => DataType::Float,
            ArrowType::Float64 => DataType::Double,
            ArrowType::Decimal128(p, s) if *s >= 0 => DataType::Decimal(*p, *s),
            ArrowType::Utf8 | ArrowType::LargeUtf8 | ArrowType::Utf8View => DataType::String,
            ArrowType::Binary
            | ArrowType::LargeBinary
            | ArrowType::BinaryView
            | ArrowType::FixedSizeBinary(_) => DataType::Binary,
            ArrowType::Boolean => DataType::Boolean,
            ArrowType::Date32 | ArrowType::Date64 => DataType::Date,
            ArrowType::Timestamp(_, Some(_)) => DataType::Timestamp,
            ArrowType::Timestamp(_, None) => DataType::TimestampNtz,
            ArrowType::Dictionary(_, v) => DataType::from_arrow(column, v)?,
            ArrowType::Struct(fields) => DataType::Struct(Box::new(StructType::new(
                fields
                    .iter()
                    .map(|f| StructField::from_arrow(f))
                    .collect::<Result<Vec<_>>>()?,
            ))),
            ArrowType::List(f) | ArrowType::LargeList(f) | ArrowType::FixedSizeList(f, _) => {
                DataType::array(
                    DataType::from_arrow(column, f.data_type())?,
                    f.is_nullable(),
                )
            }
            ArrowType::Map(entries, _) => match entries.data_type() {
                ArrowType::Struct(kv) if kv.len() == 2 => DataType::map(
                    DataType::from_arrow(column, kv[0].data_type())?,
                    DataType::from_arrow(column, kv[1].data_type())?,
                    kv[1].is_nullable(),
                ),
                _ => return unsupported(),
            },
            _ => return unsupported(),
        })
    }
}

/// Relabels a microsecond timestamp array with the time zone of `target` (the stored
/// values are UTC instants either way, so no arithmetic is needed).
pub fn retag_timestamp(
    array: arrow::array::ArrayRef,
    target: &ArrowType,
) -> arrow::array::ArrayRef {
    use arrow::array::AsArray;
    match (array.data_type(), target) {
        (
            ArrowType::Timestamp(TimeUnit::Microsecond, _),
            ArrowType::Timestamp(TimeUnit::Microsecond, tz),
        ) => {
            let a = array
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .clone()
                .with_timezone_opt(tz.clone());
            Arc::new(a)
        }
        _ => array,
    }
}

impl Serialize for DataType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DataType::Struct(st) => st.serialize(s),
            DataType::Array(a) => a.serialize(s),
            DataType::Map(m) => m.serialize(s),
            prim => s.serialize_str(&prim.primitive_name().unwrap_or_default()),
        }
    }
}

impl<'de> Deserialize<'de> for DataType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let v = Value::deserialize(d)?;
        match &v {
            Value::String(s) => DataType::parse_primitive(s).map_err(D::Error::custom),
            Value::Object(o) => match o.get("type").and_then(Value::as_str) {
                Some("struct") => Ok(DataType::Struct(Box::new(
                    serde_json::from_value(v).map_err(D::Error::custom)?,
                ))),
                Some("array") => Ok(DataType::Array(Box::new(
                    serde_json::from_value(v).map_err(D::Error::custom)?,
                ))),
                Some("map") => Ok(DataType::Map(Box::new(
                    serde_json::from_value(v).map_err(D::Error::custom)?,
                ))),
                other => Err(D::Error::custom(format!("unknown nested type {other:?}"))),
            },
            _ => Err(D::Error::custom(format!("invalid type {v}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_through_json_and_arrow() {
        let json = r#"{"type":"struct","fields":[
            {"name":"a","type":"byte","nullable":true,"metadata":{}},
            {"name":"b","type":"short","nullable":true,"metadata":{}},
            {"name":"c","type":"integer","nullable":false,"metadata":{"comment":"x","n":1}},
            {"name":"d","type":"long","nullable":true,"metadata":{}},
            {"name":"e","type":"float","nullable":true,"metadata":{}},
            {"name":"f","type":"double","nullable":true,"metadata":{}},
            {"name":"g","type":"decimal(10,2)","nullable":true,"metadata":{}},
            {"name":"h","type":"string","nullable":true,"metadata":{}},
            {"name":"i","type":"binary","nullable":true,"metadata":{}},
            {"name":"j","type":"boolean","nullable":true,"metadata":{}},
            {"name":"k","type":"date","nullable":true,"metadata":{}},
            {"name":"l","type":"timestamp","nullable":true,"metadata":{}},
            {"name":"m","type":"timestamp_ntz","nullable":true,"metadata":{}},
            {"name":"n","type":{"type":"struct","fields":[{"name":"x","type":"long","nullable":true,"metadata":{}}]},"nullable":true,"metadata":{}},
            {"name":"o","type":{"type":"array","elementType":"string","containsNull":true},"nullable":true,"metadata":{}},
            {"name":"p","type":{"type":"map","keyType":"string","valueType":"long","valueContainsNull":false},"nullable":true,"metadata":{}}
        ]}"#;
        let schema = StructType::from_json(json).unwrap();
        assert_eq!(schema.fields.len(), 16);
        let again = StructType::from_json(&schema.to_json()).unwrap();
        assert_eq!(schema, again);
        let arrow = schema.to_arrow().unwrap();
        let back = StructType::from_arrow(&arrow).unwrap();
        assert_eq!(schema, back);
    }

    #[test]
    fn unsupported_types_are_named() {
        let json = r#"{"type":"struct","fields":[{"name":"v","type":"variant","nullable":true,"metadata":{}}]}"#;
        let schema = StructType::from_json(json).unwrap();
        let err = schema.to_arrow().unwrap_err().to_string();
        assert!(err.contains("variant") && err.contains('v'), "{err}");
    }
}
