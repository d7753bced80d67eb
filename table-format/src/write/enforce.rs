//! Schema enforcement and evolution for writes. Pure.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType as ArrowType, Schema, SchemaRef};

use crate::error::{Error, Result};
use crate::protocol::conform::conform_array;
use crate::protocol::{DataType, StructField, StructType};

/// How a write treats a schema that differs from the table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaMode {
    /// The data must fit the table schema.
    #[default]
    Enforce,
    /// New columns (top level or nested struct fields) are added as nullable.
    Merge,
    /// Overwrite only: the data's schema replaces the table's.
    Overwrite,
}

/// Merges `incoming` into `table`: new fields are appended as nullable; types must agree.
pub fn merge_schemas(table: &StructType, incoming: &StructType) -> Result<StructType> {
    let mut fields = table.fields.clone();
    for f in &incoming.fields {
        match fields.iter_mut().find(|t| t.name == f.name) {
            Some(existing) => {
                existing.data_type = merge_types(&existing.data_type, &f.data_type, &f.name)?;
            }
            None => {
                let mut added = f.clone();
                added.nullable = true;
                fields.push(added);
            }
        }
    }
    Ok(StructType::new(fields))
}

fn merge_types(table: &DataType, incoming: &DataType, column: &str) -> Result<DataType> {
    match (table, incoming) {
        (DataType::Struct(a), DataType::Struct(b)) => {
            let mut merged = merge_schemas(a, b).map_err(|e| prefix(e, column))?;
            // Nested additions are nullable too.
            for f in &mut merged.fields {
                if a.field(&f.name).is_none() {
                    f.nullable = true;
                }
            }
            Ok(DataType::Struct(Box::new(merged)))
        }
        (DataType::Array(a), DataType::Array(b)) => Ok(DataType::array(
            merge_types(&a.element_type, &b.element_type, column)?,
            a.contains_null,
        )),
        (DataType::Map(a), DataType::Map(b)) => Ok(DataType::map(
            merge_types(&a.key_type, &b.key_type, column)?,
            merge_types(&a.value_type, &b.value_type, column)?,
            a.value_contains_null,
        )),
        (a, b) if a == b || widens_to(b, a) => Ok(a.clone()),
        (a, b) => Err(Error::mismatch(
            column,
            format!(
                "the table has type {} but the data has {}",
                type_name(a),
                type_name(b)
            ),
        )),
    }
}

fn prefix(e: Error, column: &str) -> Error {
    match e {
        Error::SchemaMismatch { column: c, reason } => Error::SchemaMismatch {
            column: format!("{column}.{c}"),
            reason,
        },
        other => other,
    }
}

/// Lossless widenings accepted on write (the data's type `from` into column type `to`).
fn widens_to(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    matches!(
        (from, to),
        (Byte, Short | Integer | Long)
            | (Short, Integer | Long)
            | (Integer, Long)
            | (Float, Double)
    ) || matches!((from, to), (Decimal(p1, s1), Decimal(p2, s2)) if s2 >= s1 && (*p2 as i16 - *s2 as i16) >= (*p1 as i16 - *s1 as i16))
}

fn type_name(t: &DataType) -> String {
    match t {
        DataType::Struct(_) => "struct".into(),
        DataType::Array(a) => format!("array<{}>", type_name(&a.element_type)),
        DataType::Map(m) => format!(
            "map<{},{}>",
            type_name(&m.key_type),
            type_name(&m.value_type)
        ),
        p => p.primitive_name().unwrap_or_default(),
    }
}

/// Checks that data of Delta type `data` may be written into a column of type `table`.
fn check_type(data: &DataType, table: &DataType, column: &str, mode: SchemaMode) -> Result<()> {
    match (data, table) {
        (DataType::Struct(d), DataType::Struct(t)) => check_fields(d, t, column, mode),
        (DataType::Array(d), DataType::Array(t)) => {
            check_type(&d.element_type, &t.element_type, column, mode)
        }
        (DataType::Map(d), DataType::Map(t)) => {
            check_type(&d.key_type, &t.key_type, column, mode)?;
            check_type(&d.value_type, &t.value_type, column, mode)
        }
        (d, t) if d == t || widens_to(d, t) => Ok(()),
        (d, t) => Err(Error::mismatch(
            column,
            format!(
                "cannot write {} data into a column of type {}",
                type_name(d),
                type_name(t)
            ),
        )),
    }
}

fn check_fields(data: &StructType, table: &StructType, path: &str, mode: SchemaMode) -> Result<()> {
    let join = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    for f in &data.fields {
        match table.field(&f.name) {
            Some(t) => check_type(&f.data_type, &t.data_type, &join(&f.name), mode)?,
            None => {
                let hint = table
                    .fields
                    .iter()
                    .find(|t| t.name.eq_ignore_ascii_case(&f.name))
                    .map(|t| format!(" (did you mean `{}`?)", t.name))
                    .unwrap_or_default();
                return Err(Error::mismatch(
                    join(&f.name),
                    format!(
                        "the column is not in the table schema{hint}; write with schema mode `merge` to add it"
                    ),
                ));
            }
        }
    }
    for t in &table.fields {
        if !t.nullable && data.field(&t.name).is_none() {
            return Err(Error::mismatch(
                join(&t.name),
                "the column is non-nullable but missing from the data",
            ));
        }
    }
    Ok(())
}

/// Validates `batch` against the table schema and converts it to the table's Arrow
/// schema (column order, types, missing nullable columns as nulls).
pub fn conform_batch(
    batch: &RecordBatch,
    table: &StructType,
    target: &SchemaRef,
) -> Result<RecordBatch> {
    let data_schema = StructType::from_arrow(batch.schema().as_ref())?;
    check_fields(&data_schema, table, "", SchemaMode::Enforce)?;
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(table.fields.len());
    for (field, target_field) in table.fields.iter().zip(target.fields()) {
        let array = match batch.column_by_name(&field.name) {
            Some(a) => conform_array(a, target_field.data_type(), &field.name)?,
            None => arrow::array::new_null_array(target_field.data_type(), batch.num_rows()),
        };
        check_nulls(&array, field, &field.name)?;
        columns.push(array);
    }
    Ok(RecordBatch::try_new_with_options(
        relaxed(target, &columns),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// The target schema, with fields that hold only parent-masked nulls kept as declared.
fn relaxed(target: &SchemaRef, _columns: &[ArrayRef]) -> SchemaRef {
    // Top-level fields are written as nullable in Parquet either way; the table schema
    // (not the file) carries nullability, so relax to avoid spurious Arrow errors on
    // nested non-nullable children.
    Arc::new(Schema::new(
        target
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

fn check_nulls(array: &ArrayRef, field: &StructField, path: &str) -> Result<()> {
    if !field.nullable && array.null_count() > 0 {
        return Err(Error::mismatch(
            path,
            format!(
                "the column is non-nullable but the data has {} null value(s)",
                array.null_count()
            ),
        ));
    }
    if let (DataType::Struct(s), ArrowType::Struct(_)) = (&field.data_type, array.data_type()) {
        let sa = array.as_struct();
        for (i, child) in s.fields.iter().enumerate() {
            let c = sa.column(i);
            // Only nulls where the parent is valid violate a non-nullable child.
            let violating = match (c.nulls(), sa.nulls()) {
                (Some(cn), Some(pn)) => cn
                    .iter()
                    .zip(pn.iter())
                    .filter(|(cv, pv)| !cv && *pv)
                    .count(),
                (Some(cn), None) => cn.null_count(),
                _ => 0,
            };
            if !child.nullable && violating > 0 {
                return Err(Error::mismatch(
                    format!("{path}.{}", child.name),
                    format!("the field is non-nullable but the data has {violating} null value(s)"),
                ));
            }
            if child.nullable || violating == 0 {
                if let DataType::Struct(_) = child.data_type {
                    check_nulls(
                        c,
                        &StructField {
                            nullable: true,
                            ..child.clone()
                        },
                        &format!("{path}.{}", child.name),
                    )?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};
    use arrow::datatypes::Field;

    fn table() -> StructType {
        StructType::new(vec![
            StructField::new("id", DataType::Long, false),
            StructField::new("name", DataType::String, true),
        ])
    }

    fn batch(fields: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let schema = Schema::new(
            fields
                .iter()
                .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        RecordBatch::try_new(
            Arc::new(schema),
            fields.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap()
    }

    #[test]
    fn widens_and_fills_missing_nullable() {
        let t = table();
        let target = Arc::new(t.to_arrow().unwrap());
        let b = batch(vec![("id", Arc::new(Int32Array::from(vec![1, 2])))]);
        let out = conform_batch(&b, &t, &target).unwrap();
        assert_eq!(out.column(0).data_type(), &ArrowType::Int64);
        assert_eq!(out.column(1).null_count(), 2);
    }

    #[test]
    fn rejects_with_column_names() {
        let t = table();
        let target = Arc::new(t.to_arrow().unwrap());
        let b = batch(vec![
            ("id", Arc::new(Int64Array::from(vec![1]))),
            ("extra", Arc::new(StringArray::from(vec!["x"]))),
        ]);
        let err = conform_batch(&b, &t, &target).unwrap_err().to_string();
        assert!(err.contains("`extra`") && err.contains("merge"), "{err}");
        let b = batch(vec![("id", Arc::new(StringArray::from(vec!["x"])))]);
        let err = conform_batch(&b, &t, &target).unwrap_err().to_string();
        assert!(err.contains("`id`") && err.contains("string"), "{err}");
        let b = batch(vec![(
            "id",
            Arc::new(Int64Array::from(vec![Some(1), None])),
        )]);
        let err = conform_batch(&b, &t, &target).unwrap_err().to_string();
        assert!(err.contains("`id`") && err.contains("null"), "{err}");
        let b = batch(vec![("name", Arc::new(StringArray::from(vec!["x"])))]);
        let err = conform_batch(&b, &t, &target).unwrap_err().to_string();
        assert!(err.contains("`id`") && err.contains("missing"), "{err}");
    }

    #[test]
    fn merge_adds_nullable_columns_and_nested_fields() {
        let t = StructType::new(vec![StructField::new(
            "s",
            DataType::Struct(Box::new(StructType::new(vec![StructField::new(
                "a",
                DataType::Long,
                false,
            )]))),
            true,
        )]);
        let incoming = StructType::new(vec![
            StructField::new(
                "s",
                DataType::Struct(Box::new(StructType::new(vec![
                    StructField::new("a", DataType::Long, false),
                    StructField::new("b", DataType::String, false),
                ]))),
                true,
            ),
            StructField::new("c", DataType::Date, false),
        ]);
        let merged = merge_schemas(&t, &incoming).unwrap();
        assert_eq!(merged.fields.len(), 2);
        assert!(merged.field("c").unwrap().nullable);
        let DataType::Struct(s) = &merged.field("s").unwrap().data_type else {
            panic!()
        };
        assert!(s.field("b").unwrap().nullable);
        assert!(!s.field("a").unwrap().nullable);
        let bad = StructType::new(vec![StructField::new("s", DataType::Long, true)]);
        assert!(merge_schemas(&t, &bad)
            .unwrap_err()
            .to_string()
            .contains("`s`"));
    }
}
