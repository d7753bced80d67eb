//! Partition values: the protocol's string encoding (PROTOCOL.md "Partition Value
//! Serialization"), Hive-style directory names and the URI encoding of `add.path`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, StringArray, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{
    DataType as ArrowType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type,
    Int32Type, Int64Type, Int8Type, TimeUnit, TimestampMicrosecondType,
};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use crate::error::{Error, Result};
use crate::protocol::schema::DataType;

/// The directory name Hive (and Delta) use for a null partition value.
pub const NULL_PARTITION_DIR: &str = "__HIVE_DEFAULT_PARTITION__";

/// Characters Hive escapes in a partition directory name (as `%XX`).
fn hive_needs_escape(c: char) -> bool {
    (c as u32) < 0x20
        || matches!(
            c,
            '"' | '#'
                | '%'
                | '\''
                | '*'
                | '/'
                | ':'
                | '='
                | '?'
                | '\\'
                | '\u{7f}'
                | '{'
                | '['
                | ']'
                | '^'
        )
}

/// Escapes one partition value for a directory name.
pub fn escape_path_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if hive_needs_escape(c) {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The relative directory of a partition, `a=1/b=x`, from ordered (column, value) pairs.
pub fn partition_dir(values: &[(String, Option<String>)]) -> String {
    values
        .iter()
        .map(|(col, v)| {
            let v = match v {
                None => NULL_PARTITION_DIR.to_string(),
                Some(v) => escape_path_segment(v),
            };
            format!("{}={}", escape_path_segment(col), v)
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Characters encoded when a file location becomes the URI in `add.path`.
const URI_PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b'#')
    .add(b'?');

/// Encodes a store-relative location as the URI written in `add.path`.
pub fn encode_add_path(location: &str) -> String {
    utf8_percent_encode(location, URI_PATH).to_string()
}

/// Decodes `add.path` (a relative URI) to the store-relative location.
pub fn decode_add_path(path: &str) -> String {
    percent_decode_str(path).decode_utf8_lossy().into_owned()
}

/// Serializes one value of a partition column per the protocol; `None` is null.
pub fn serialize_value(array: &dyn Array, row: usize, dt: &DataType) -> Result<Option<String>> {
    if array.is_null(row) {
        return Ok(None);
    }
    let s = match array.data_type() {
        ArrowType::Int8 => array.as_primitive::<Int8Type>().value(row).to_string(),
        ArrowType::Int16 => array.as_primitive::<Int16Type>().value(row).to_string(),
        ArrowType::Int32 => array.as_primitive::<Int32Type>().value(row).to_string(),
        ArrowType::Int64 => array.as_primitive::<Int64Type>().value(row).to_string(),
        ArrowType::Float32 => array.as_primitive::<Float32Type>().value(row).to_string(),
        ArrowType::Float64 => array.as_primitive::<Float64Type>().value(row).to_string(),
        ArrowType::Boolean => array.as_boolean().value(row).to_string(),
        ArrowType::Utf8 => array.as_string::<i32>().value(row).to_string(),
        ArrowType::Binary => {
            let bytes = array.as_binary::<i32>().value(row);
            String::from_utf8(bytes.to_vec()).map_err(|_| {
                Error::InvalidArgument(
                    "binary partition values must be valid UTF-8 to be stored in the log".into(),
                )
            })?
        }
        ArrowType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            format_date(days)
        }
        ArrowType::Timestamp(TimeUnit::Microsecond, _) => {
            let us = array.as_primitive::<TimestampMicrosecondType>().value(row);
            format_timestamp_partition(us)
        }
        ArrowType::Decimal128(_, scale) => {
            let v = array.as_primitive::<Decimal128Type>().value(row);
            format_decimal(v, *scale)
        }
        other => {
            return Err(Error::InvalidArgument(format!(
                "cannot partition by a column of type {other} (Delta type {dt:?})"
            )))
        }
    };
    // The protocol treats an empty string partition value as null.
    Ok(if s.is_empty() { None } else { Some(s) })
}

pub(crate) fn format_date(days: i32) -> String {
    chrono::DateTime::from_timestamp(i64::from(days) * 86_400, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| days.to_string())
}

fn format_timestamp_partition(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
        .unwrap_or_else(|| us.to_string())
}

pub(crate) fn format_decimal(v: i128, scale: i8) -> String {
    if scale <= 0 {
        return v.to_string();
    }
    let neg = v < 0;
    let digits = v.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = if digits.len() <= scale {
        format!("{}{}", "0".repeat(scale + 1 - digits.len()), digits)
    } else {
        digits
    };
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{}{int}.{frac}", if neg { "-" } else { "" })
}

/// A constant column of `num_rows` copies of a serialized partition value.
pub fn partition_array(
    column: &str,
    value: Option<&str>,
    dt: &DataType,
    num_rows: usize,
) -> Result<ArrayRef> {
    let target = dt.to_arrow(column)?;
    let one = parse_value(column, value, dt, &target)?;
    let indices = UInt32Array::from(vec![0u32; num_rows]);
    Ok(take(one.as_ref(), &indices, None)?)
}

/// Parses a serialized partition value into a one-element array of the column's type.
pub fn parse_value(
    column: &str,
    value: Option<&str>,
    dt: &DataType,
    target: &ArrowType,
) -> Result<ArrayRef> {
    let bad = |reason: String| Error::InvalidPartitionValue {
        column: column.to_string(),
        reason,
    };
    let value = value.filter(|v| !v.is_empty());
    let Some(v) = value else {
        return Ok(arrow::array::new_null_array(target, 1));
    };
    if matches!(dt, DataType::Binary) {
        // Writers store the bytes as a (UTF-8) string; `\u0001\u0002` style escapes are
        // the same bytes.
        return Ok(Arc::new(BinaryArray::from_vec(vec![v.as_bytes()])));
    }
    let strings: ArrayRef = Arc::new(StringArray::from(vec![v]));
    let opts = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    let parsed = if matches!(dt, DataType::Timestamp | DataType::TimestampNtz) {
        // Spark writes `2021-01-01 00:00:00[.ffffff]`, others ISO 8601 with `Z`.
        let normalized = v.trim_end_matches('Z').replacen('T', " ", 1);
        let strings: ArrayRef = Arc::new(StringArray::from(vec![normalized.as_str()]));
        arrow::compute::cast_with_options(
            &strings,
            &ArrowType::Timestamp(TimeUnit::Microsecond, None),
            &opts,
        )
        .map(|a| crate::protocol::schema::retag_timestamp(a, target))
    } else {
        arrow::compute::cast_with_options(&strings, target, &opts)
    };
    parsed.map_err(|e| bad(format!("`{v}` is not a valid {dt:?}: {e}")))
}

/// Parses the partition values of a file into one-element arrays, keyed by column.
pub fn parse_values(
    values: &HashMap<String, Option<String>>,
    columns: &[(String, DataType)],
) -> Result<Vec<ArrayRef>> {
    columns
        .iter()
        .map(|(col, dt)| {
            let v = values.get(col).and_then(|v| v.as_deref());
            parse_value(col, v, dt, &dt.to_arrow(col)?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_hive() {
        assert_eq!(escape_path_segment("A/A"), "A%2FA");
        assert_eq!(escape_path_segment("a:b=c%"), "a%3Ab%3Dc%25");
        assert_eq!(escape_path_segment("ünï cödé"), "ünï cödé");
        let dir = partition_dir(&[("x".into(), Some("A/A".into())), ("y".into(), None)]);
        assert_eq!(dir, "x=A%2FA/y=__HIVE_DEFAULT_PARTITION__");
        assert_eq!(
            encode_add_path(&dir),
            "x=A%252FA/y=__HIVE_DEFAULT_PARTITION__"
        );
        assert_eq!(decode_add_path("x=B%2520B/f"), "x=B%20B/f");
    }

    #[test]
    fn decimal_formatting() {
        assert_eq!(format_decimal(12345, 2), "123.45");
        assert_eq!(format_decimal(-5, 3), "-0.005");
        assert_eq!(format_decimal(7, 0), "7");
    }

    #[test]
    fn parses_every_primitive() {
        let cases = [
            (DataType::Byte, "-3"),
            (DataType::Short, "300"),
            (DataType::Integer, "70000"),
            (DataType::Long, "9000000000"),
            (DataType::Float, "1.5"),
            (DataType::Double, "2.25"),
            (DataType::Decimal(5, 2), "123.45"),
            (DataType::String, "hello"),
            (DataType::Boolean, "true"),
            (DataType::Date, "2021-02-03"),
            (DataType::Timestamp, "2021-02-03 04:05:06.123456"),
            (DataType::Timestamp, "2021-02-03T04:05:06.000001Z"),
            (DataType::TimestampNtz, "2021-02-03 04:05:06"),
            (DataType::Binary, "\u{1}\u{2}"),
        ];
        for (dt, v) in cases {
            let target = dt.to_arrow("c").unwrap();
            let arr = parse_value("c", Some(v), &dt, &target).unwrap();
            assert_eq!(arr.len(), 1);
            assert!(arr.is_valid(0), "{dt:?} {v}");
            let back = serialize_value(arr.as_ref(), 0, &dt).unwrap().unwrap();
            let again = parse_value("c", Some(&back), &dt, &target).unwrap();
            assert_eq!(arr.as_ref(), again.as_ref(), "{dt:?} {v} -> {back}");
        }
        let arr = parse_value("c", None, &DataType::Long, &ArrowType::Int64).unwrap();
        assert!(arr.is_null(0));
        assert!(parse_value("c", Some("x"), &DataType::Long, &ArrowType::Int64).is_err());
    }
}
