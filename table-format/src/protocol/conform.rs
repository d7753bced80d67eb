//! Conforming Arrow arrays to a table's Arrow types: by-name struct matching, missing
//! fields as nulls, lossless casts, and renames of identical layouts. Pure.

use std::sync::Arc;

use arrow::array::{
    make_array, new_null_array, Array, ArrayData, ArrayRef, AsArray, ListArray, MapArray,
    StructArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType as ArrowType, Field, FieldRef, TimeUnit};

use crate::error::{Error, Result};
use crate::protocol::schema::retag_timestamp;

/// Converts `array` to `target`; `column` names the column in errors.
pub fn conform_array(array: &ArrayRef, target: &ArrowType, column: &str) -> Result<ArrayRef> {
    if array.data_type() == target {
        return Ok(array.clone());
    }
    match (array.data_type(), target) {
        (ArrowType::Struct(_), ArrowType::Struct(target_fields)) => {
            let s = array.as_struct();
            let mut columns = Vec::with_capacity(target_fields.len());
            for f in target_fields {
                let child = match s.column_by_name(f.name()) {
                    Some(c) => conform_array(c, f.data_type(), &format!("{column}.{}", f.name()))?,
                    None => new_null_array(f.data_type(), s.len()),
                };
                columns.push(child);
            }
            let fields =
                relax_nullability(target_fields.iter().cloned().collect(), &columns, s.nulls());
            Ok(Arc::new(StructArray::try_new(
                fields.into(),
                columns,
                s.nulls().cloned(),
            )?))
        }
        (ArrowType::List(_) | ArrowType::LargeList(_), ArrowType::List(target_field)) => {
            let list = match array.data_type() {
                ArrowType::LargeList(_) => cast(
                    array,
                    &ArrowType::List(Arc::new(Field::new(
                        "element",
                        array.as_list::<i64>().value_type(),
                        true,
                    ))),
                )?,
                _ => array.clone(),
            };
            let list = list.as_list::<i32>();
            let values = conform_array(list.values(), target_field.data_type(), column)?;
            Ok(Arc::new(ListArray::try_new(
                target_field.clone(),
                list.offsets().clone(),
                values,
                list.nulls().cloned(),
            )?))
        }
        (ArrowType::Map(_, _), ArrowType::Map(target_entries, sorted)) => {
            let map = array.as_map();
            let entries: ArrayRef = Arc::new(map.entries().clone());
            let entries = conform_array(&entries, target_entries.data_type(), column)?;
            Ok(Arc::new(MapArray::try_new(
                target_entries.clone(),
                map.offsets().clone(),
                entries.as_struct().clone(),
                map.nulls().cloned(),
                *sorted,
            )?))
        }
        (ArrowType::Timestamp(_, _), ArrowType::Timestamp(TimeUnit::Microsecond, _)) => {
            let naive = cast(array, &ArrowType::Timestamp(TimeUnit::Microsecond, None))?;
            Ok(retag_timestamp(naive, target))
        }
        (ArrowType::Dictionary(_, _), _) => {
            let plain = crate::protocol::dictionary::expand(array)?;
            conform_array(&plain, target, column)
        }
        (a, b) if same_layout(a, b) => Ok(make_array(retype(array.to_data(), b)?)),
        _ => cast(array, target).map_err(|e| {
            Error::mismatch(
                column,
                format!("cannot convert {} to {target}: {e}", array.data_type()),
            )
        }),
    }
}

/// Fields as declared, except that a non-nullable child under a nullable parent may
/// hold nulls at positions where the parent is null; Arrow requires it declared nullable
/// only when it actually has nulls outside the parent's.
fn relax_nullability(
    fields: Vec<FieldRef>,
    columns: &[ArrayRef],
    parent_nulls: Option<&arrow::buffer::NullBuffer>,
) -> Vec<FieldRef> {
    fields
        .into_iter()
        .zip(columns)
        .map(|(f, c)| {
            if !f.is_nullable() && c.null_count() > 0 {
                let hidden = match (c.nulls(), parent_nulls) {
                    (Some(cn), Some(pn)) => cn
                        .iter()
                        .zip(pn.iter())
                        .all(|(child_valid, parent_valid)| child_valid || !parent_valid),
                    _ => false,
                };
                if !hidden {
                    return Arc::new(f.as_ref().clone().with_nullable(true));
                }
            }
            f
        })
        .collect()
}

/// Same physical layout, possibly different field names or nullability.
fn same_layout(a: &ArrowType, b: &ArrowType) -> bool {
    match (a, b) {
        (ArrowType::Struct(x), ArrowType::Struct(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|(p, q)| same_layout(p.data_type(), q.data_type()))
        }
        (ArrowType::List(x), ArrowType::List(y)) => same_layout(x.data_type(), y.data_type()),
        (ArrowType::Map(x, _), ArrowType::Map(y, _)) => same_layout(x.data_type(), y.data_type()),
        (x, y) => x == y,
    }
}

/// Rebuilds array data with a same-layout type (renamed fields).
fn retype(data: ArrayData, t: &ArrowType) -> Result<ArrayData> {
    let children: Vec<ArrayData> = match t {
        ArrowType::Struct(fields) => data
            .child_data()
            .iter()
            .zip(fields.iter())
            .map(|(c, f)| retype(c.clone(), f.data_type()))
            .collect::<Result<_>>()?,
        ArrowType::List(f) | ArrowType::Map(f, _) => data
            .child_data()
            .iter()
            .map(|c| retype(c.clone(), f.data_type()))
            .collect::<Result<_>>()?,
        _ => return Ok(data),
    };
    // The layout is unchanged, so validation only re-checks what already held.
    Ok(data
        .into_builder()
        .data_type(t.clone())
        .child_data(children)
        .build()?)
}

/// Renames the fields of a batch-level column to `target` (same layout), e.g. physical
/// column-mapping names to logical names.
pub fn rename_array(array: &ArrayRef, target: &ArrowType) -> Result<ArrayRef> {
    if array.data_type() == target {
        return Ok(array.clone());
    }
    Ok(make_array(retype(array.to_data(), target)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array};
    use arrow::datatypes::Fields;

    #[test]
    fn struct_by_name_with_missing_field_and_widening() {
        let src = StructArray::from(vec![(
            Arc::new(Field::new("b", ArrowType::Int32, true)),
            Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef,
        )]);
        let target = ArrowType::Struct(Fields::from(vec![
            Field::new("a", ArrowType::Utf8, true),
            Field::new("b", ArrowType::Int64, true),
        ]));
        let out = conform_array(&(Arc::new(src) as ArrayRef), &target, "s").unwrap();
        assert_eq!(out.data_type(), &target);
        let s = out.as_struct();
        assert_eq!(s.column(0).null_count(), 2);
        assert_eq!(
            s.column(1).as_primitive::<arrow::datatypes::Int64Type>(),
            &Int64Array::from(vec![1, 2])
        );
    }

    #[test]
    fn list_field_rename() {
        let src: ArrayRef = Arc::new(ListArray::from_iter_primitive::<
            arrow::datatypes::Int32Type,
            _,
            _,
        >(vec![Some(vec![Some(1)]), None]));
        let target = ArrowType::List(Arc::new(Field::new("element", ArrowType::Int32, true)));
        let out = conform_array(&src, &target, "l").unwrap();
        assert_eq!(out.data_type(), &target);
        assert_eq!(out.null_count(), 1);
    }
}
