//! Per-file statistics (PROTOCOL.md "Per-file Statistics"): collected while writing,
//! serialized as the `add.stats` JSON string.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StructArray};
use arrow::buffer::NullBuffer;
use arrow::compute::{max, max_string, min, min_string};
use arrow::datatypes::{
    DataType as ArrowType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    Int8Type, TimeUnit, TimestampMicrosecondType,
};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Default number of leaf columns with statistics (`delta.dataSkippingNumIndexedCols`).
pub const DEFAULT_NUM_INDEXED_COLS: i64 = 32;
/// String statistics are truncated to this many characters.
const STRING_PREFIX_CHARS: usize = 32;

/// The parts of `add.stats` Shoal reads without a predicate.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsSummary {
    pub num_records: Option<i64>,
}

/// Reads `numRecords` from a stats string, if present and valid.
pub fn num_records(stats: Option<&str>) -> Option<i64> {
    stats
        .and_then(|s| serde_json::from_str::<StatsSummary>(s).ok())
        .and_then(|s| s.num_records)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Int,
    Float,
    Date,
    Timestamp,
    TimestampNtz,
    Str,
    /// Decimal128 with this scale.
    Decimal(i8),
    CountOnly,
}

#[derive(Debug, Clone, PartialEq)]
enum Bound {
    Int(i64),
    /// An unscaled decimal value.
    Dec(i128),
    Float(f64),
    Str(String),
}

impl Bound {
    fn less(&self, other: &Bound) -> bool {
        match (self, other) {
            (Bound::Int(a), Bound::Int(b)) => a < b,
            (Bound::Dec(a), Bound::Dec(b)) => a < b,
            (Bound::Float(a), Bound::Float(b)) => a < b,
            (Bound::Str(a), Bound::Str(b)) => a < b,
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
struct Leaf {
    /// Path of field names from the top-level column.
    path: Vec<String>,
    kind: Kind,
    nulls: i64,
    min: Option<Bound>,
    max: Option<Bound>,
    /// A value made min/max unusable (NaN, an over-long string max).
    poisoned_min: bool,
    poisoned_max: bool,
}

/// Accumulates statistics over the batches written to one file.
#[derive(Debug)]
pub struct StatsCollector {
    leaves: Vec<Leaf>,
    num_records: i64,
}

impl StatsCollector {
    /// Collects stats for the first `num_indexed` leaf columns of `schema` (-1: all).
    pub fn new(schema: &arrow::datatypes::Schema, num_indexed: i64) -> Self {
        let mut leaves = Vec::new();
        let limit = if num_indexed < 0 {
            usize::MAX
        } else {
            num_indexed as usize
        };
        for f in schema.fields() {
            collect_leaves(f.name(), f.data_type(), &mut vec![], &mut leaves, limit);
        }
        StatsCollector {
            leaves,
            num_records: 0,
        }
    }

    pub fn update(&mut self, batch: &RecordBatch) {
        self.update_skipping(batch, &[]);
    }

    pub fn num_records(&self) -> i64 {
        self.num_records
    }

    /// Leaves whose statistics the Parquet column writer computes exactly as this
    /// collector would (see [`StatsCollector::absorb_parquet`]): top-level integer,
    /// date, timestamp and string columns. Returns (leaf index, column name).
    pub fn parquet_leaves(&self) -> Vec<(usize, &str)> {
        self.leaves
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                l.path.len() == 1
                    && matches!(
                        l.kind,
                        Kind::Int
                            | Kind::Date
                            | Kind::Timestamp
                            | Kind::TimestampNtz
                            | Kind::Str
                            | Kind::Float
                    )
            })
            .map(|(i, l)| (i, l.path[0].as_str()))
            .collect()
    }

    /// Like [`StatsCollector::update`], leaving out the leaves in `skip` (sorted).
    pub fn update_skipping(&mut self, batch: &RecordBatch, skip: &[usize]) {
        self.num_records += batch.num_rows() as i64;
        for i in 0..self.leaves.len() {
            if skip.binary_search(&i).is_err() {
                self.update_leaf(i, batch);
            }
        }
    }

    /// Updates one leaf from a batch (rows not counted: see `update_skipping`).
    pub fn update_leaf(&mut self, leaf: usize, batch: &RecordBatch) {
        if let Some(l) = self.leaves.get_mut(leaf) {
            if let Some((array, nulls)) = resolve(batch, &l.path) {
                l.update(&array, nulls.as_ref());
            }
        }
    }

    /// Updates one of the [`StatsCollector::parquet_leaves`] from the statistics the
    /// Parquet writer kept for its column chunk, instead of going over the values a
    /// second time. Returns false, changing nothing, when they do not tell exactly
    /// (no null count, a truncated string, an unexpected physical type, floats with
    /// NaNs or a zero bound: see [`float_bounds`]).
    pub fn absorb_parquet(
        &mut self,
        leaf: usize,
        stats: &parquet::file::statistics::Statistics,
    ) -> bool {
        use parquet::file::statistics::Statistics as S;
        let Some(l) = self.leaves.get_mut(leaf) else {
            return false;
        };
        let Some(nulls) = stats.null_count_opt() else {
            return false;
        };
        let mut poisoned_max = false;
        let (lo, hi) = match (l.kind, stats) {
            (Kind::Int | Kind::Date, S::Int32(s)) => (
                s.min_opt().map(|v| Bound::Int(i64::from(*v))),
                s.max_opt().map(|v| Bound::Int(i64::from(*v))),
            ),
            (Kind::Int | Kind::Timestamp | Kind::TimestampNtz, S::Int64(s)) => (
                s.min_opt().map(|v| Bound::Int(*v)),
                s.max_opt().map(|v| Bound::Int(*v)),
            ),
            (Kind::Float, S::Double(s)) => {
                let Some(bounds) = float_bounds(
                    s.nan_count_opt(),
                    s.min_opt().copied(),
                    s.max_opt().copied(),
                ) else {
                    return false;
                };
                bounds
            }
            (Kind::Float, S::Float(s)) => {
                let (lo, hi) = (
                    s.min_opt().map(|v| f64::from(*v)),
                    s.max_opt().map(|v| f64::from(*v)),
                );
                let Some(bounds) = float_bounds(s.nan_count_opt(), lo, hi) else {
                    return false;
                };
                bounds
            }
            (Kind::Str, S::ByteArray(s)) => {
                fn exact(
                    v: Option<&parquet::data_type::ByteArray>,
                    is_exact: bool,
                ) -> Option<Option<&str>> {
                    match v {
                        None => Some(None),
                        Some(b) if is_exact => std::str::from_utf8(b.data()).ok().map(Some),
                        Some(_) => None,
                    }
                }
                let (Some(lo), Some(hi)) = (
                    exact(s.min_opt(), s.min_is_exact()),
                    exact(s.max_opt(), s.max_is_exact()),
                ) else {
                    return false;
                };
                if hi.is_some_and(|v| v.chars().count() > STRING_PREFIX_CHARS) {
                    // A truncated prefix is not an upper bound.
                    poisoned_max = true;
                }
                (
                    lo.map(|v| Bound::Str(v.chars().take(STRING_PREFIX_CHARS).collect())),
                    hi.map(|v| Bound::Str(v.to_string())),
                )
            }
            _ => return false,
        };
        l.nulls += nulls as i64;
        l.poisoned_max |= poisoned_max;
        l.widen(lo, hi);
        true
    }

    /// A collector for the same columns with nothing collected yet (for a part of the
    /// file collected on its own and [`StatsCollector::merge`]d in later).
    pub fn empty_like(&self) -> Self {
        StatsCollector {
            leaves: self
                .leaves
                .iter()
                .map(|l| Leaf {
                    path: l.path.clone(),
                    kind: l.kind,
                    nulls: 0,
                    min: None,
                    max: None,
                    poisoned_min: false,
                    poisoned_max: false,
                })
                .collect(),
            num_records: 0,
        }
    }

    /// Adds what `other` collected (over other rows of the same file) to this one.
    pub fn merge(&mut self, other: StatsCollector) {
        self.num_records += other.num_records;
        for (leaf, o) in self.leaves.iter_mut().zip(other.leaves) {
            leaf.nulls += o.nulls;
            leaf.poisoned_min |= o.poisoned_min;
            leaf.poisoned_max |= o.poisoned_max;
            leaf.widen(o.min, o.max);
        }
    }

    /// The stats JSON string for `add.stats`.
    pub fn to_json(&self) -> String {
        let mut min_values = Map::new();
        let mut max_values = Map::new();
        let mut null_count = Map::new();
        for leaf in &self.leaves {
            insert_path(&mut null_count, &leaf.path, Value::from(leaf.nulls));
            if !leaf.poisoned_min {
                if let Some(v) = leaf.min.as_ref().map(|v| leaf.kind.to_json(v)) {
                    if !v.is_null() {
                        insert_path(&mut min_values, &leaf.path, v);
                    }
                }
            }
            if !leaf.poisoned_max {
                if let Some(v) = leaf.max.as_ref().map(|v| leaf.kind.to_json(v)) {
                    if !v.is_null() {
                        insert_path(&mut max_values, &leaf.path, v);
                    }
                }
            }
        }
        let mut out = Map::new();
        out.insert("numRecords".into(), Value::from(self.num_records));
        out.insert("minValues".into(), Value::Object(min_values));
        out.insert("maxValues".into(), Value::Object(max_values));
        out.insert("nullCount".into(), Value::Object(null_count));
        Value::Object(out).to_string()
    }
}

fn collect_leaves(
    name: &str,
    dt: &ArrowType,
    prefix: &mut Vec<String>,
    out: &mut Vec<Leaf>,
    limit: usize,
) {
    if out.len() >= limit {
        return;
    }
    prefix.push(name.to_string());
    match dt {
        ArrowType::Struct(fields) => {
            for f in fields {
                collect_leaves(f.name(), f.data_type(), prefix, out, limit);
            }
        }
        other => {
            let kind = match other {
                ArrowType::Int8 | ArrowType::Int16 | ArrowType::Int32 | ArrowType::Int64 => {
                    Kind::Int
                }
                ArrowType::Float32 | ArrowType::Float64 => Kind::Float,
                ArrowType::Date32 => Kind::Date,
                ArrowType::Timestamp(TimeUnit::Microsecond, Some(_)) => Kind::Timestamp,
                ArrowType::Timestamp(TimeUnit::Microsecond, None) => Kind::TimestampNtz,
                ArrowType::Utf8 => Kind::Str,
                ArrowType::Decimal128(_, scale) => Kind::Decimal(*scale),
                _ => Kind::CountOnly,
            };
            out.push(Leaf {
                path: prefix.clone(),
                kind,
                nulls: 0,
                min: None,
                max: None,
                poisoned_min: false,
                poisoned_max: false,
            });
        }
    }
    prefix.pop();
}

/// The leaf array at `path` and the nulls of every struct above it.
fn resolve(batch: &RecordBatch, path: &[String]) -> Option<(ArrayRef, Option<NullBuffer>)> {
    let mut array = batch.column_by_name(&path[0])?.clone();
    let mut nulls: Option<NullBuffer> = None;
    for name in &path[1..] {
        let s: &StructArray = array.as_struct_opt()?;
        nulls = NullBuffer::union(nulls.as_ref(), s.nulls());
        array = s.column_by_name(name)?.clone();
    }
    Some((array, nulls))
}

impl Leaf {
    fn update(&mut self, array: &ArrayRef, parent_nulls: Option<&NullBuffer>) {
        let combined = NullBuffer::union(parent_nulls, array.logical_nulls().as_ref());
        self.nulls += combined.as_ref().map(|n| n.null_count()).unwrap_or(0) as i64;
        // Values under a null parent are not part of the data; only use them when
        // the parents have no nulls (the common case).
        if parent_nulls.is_some_and(|n| n.null_count() > 0) {
            self.poisoned_min = true;
            self.poisoned_max = true;
            return;
        }
        let (lo, hi) = match self.kind {
            Kind::Int => match array.data_type() {
                ArrowType::Int8 => int_bounds(
                    min(array.as_primitive::<Int8Type>()),
                    max(array.as_primitive::<Int8Type>()),
                ),
                ArrowType::Int16 => int_bounds(
                    min(array.as_primitive::<Int16Type>()),
                    max(array.as_primitive::<Int16Type>()),
                ),
                ArrowType::Int32 => int_bounds(
                    min(array.as_primitive::<Int32Type>()),
                    max(array.as_primitive::<Int32Type>()),
                ),
                _ => int_bounds(
                    min(array.as_primitive::<Int64Type>()),
                    max(array.as_primitive::<Int64Type>()),
                ),
            },
            Kind::Float => {
                let (lo, hi) = match array.data_type() {
                    ArrowType::Float32 => (
                        min(array.as_primitive::<Float32Type>()).map(f64::from),
                        max(array.as_primitive::<Float32Type>()).map(f64::from),
                    ),
                    _ => (
                        min(array.as_primitive::<Float64Type>()),
                        max(array.as_primitive::<Float64Type>()),
                    ),
                };
                if lo.is_some_and(f64::is_nan) {
                    self.poisoned_min = true;
                }
                if hi.is_some_and(f64::is_nan) {
                    self.poisoned_max = true;
                }
                (
                    lo.filter(|v| !v.is_nan()).map(Bound::Float),
                    hi.filter(|v| !v.is_nan()).map(Bound::Float),
                )
            }
            Kind::Date => int_bounds(
                min(array.as_primitive::<Date32Type>()),
                max(array.as_primitive::<Date32Type>()),
            ),
            Kind::Timestamp | Kind::TimestampNtz => int_bounds(
                min(array.as_primitive::<TimestampMicrosecondType>()),
                max(array.as_primitive::<TimestampMicrosecondType>()),
            ),
            Kind::Str => {
                let s = array.as_string::<i32>();
                let lo = min_string(s).map(|v| v.chars().take(STRING_PREFIX_CHARS).collect());
                let hi = max_string(s).map(|v| {
                    if v.chars().count() > STRING_PREFIX_CHARS {
                        // A truncated prefix is not an upper bound.
                        self.poisoned_max = true;
                    }
                    v.to_string()
                });
                (lo.map(Bound::Str), hi.map(Bound::Str))
            }
            Kind::Decimal(_) => {
                let a = array.as_primitive::<arrow::datatypes::Decimal128Type>();
                (min(a).map(Bound::Dec), max(a).map(Bound::Dec))
            }
            Kind::CountOnly => (None, None),
        };
        self.widen(lo, hi);
    }

    /// Widens the bounds to take in `lo` and `hi`.
    fn widen(&mut self, lo: Option<Bound>, hi: Option<Bound>) {
        if let Some(lo) = lo {
            if self.min.as_ref().is_none_or(|m| lo.less(m)) {
                self.min = Some(lo);
            }
        }
        if let Some(hi) = hi {
            if self.max.as_ref().is_none_or(|m| m.less(&hi)) {
                self.max = Some(hi);
            }
        }
    }
}

fn int_bounds<T: Into<i64>>(lo: Option<T>, hi: Option<T>) -> (Option<Bound>, Option<Bound>) {
    (
        lo.map(|v| Bound::Int(v.into())),
        hi.map(|v| Bound::Int(v.into())),
    )
}

impl Kind {
    fn to_json(self, v: &Bound) -> Value {
        match (self, v) {
            (Kind::Date, Bound::Int(d)) => {
                Value::from(crate::protocol::partition::format_date(*d as i32))
            }
            (Kind::Timestamp, Bound::Int(us)) => Value::from(
                chrono::DateTime::from_timestamp_micros(*us)
                    .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
                    .unwrap_or_default(),
            ),
            (Kind::TimestampNtz, Bound::Int(us)) => Value::from(
                chrono::DateTime::from_timestamp_micros(*us)
                    .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
                    .unwrap_or_default(),
            ),
            (Kind::Decimal(scale), Bound::Dec(v)) => decimal_json(*v, scale),
            (_, Bound::Int(i)) => Value::from(*i),
            (_, Bound::Float(f)) => Value::from(*f),
            (_, Bound::Str(s)) => Value::from(s.clone()),
            (_, Bound::Dec(v)) => Value::from(*v as f64),
        }
    }
}

/// A decimal statistic as a JSON number, as Spark writes them. Values of more than 15
/// significant digits do not survive a double exactly: they give `Null`, and the
/// caller leaves the bound out.
fn decimal_json(unscaled: i128, scale: i8) -> Value {
    let digits = unscaled.unsigned_abs().to_string();
    if digits.trim_start_matches('0').len() > 15 {
        return Value::Null;
    }
    let text = if scale > 0 {
        let s = scale as usize;
        let padded = format!("{:0>width$}", digits, width = s + 1);
        let (int, frac) = padded.split_at(padded.len() - s);
        format!("{}{int}.{frac}", if unscaled < 0 { "-" } else { "" })
    } else {
        format!(
            "{}{digits}{}",
            if unscaled < 0 { "-" } else { "" },
            "0".repeat((-scale) as usize)
        )
    };
    text.parse::<f64>().map(Value::from).unwrap_or(Value::Null)
}

fn insert_path(map: &mut Map<String, Value>, path: &[String], v: Value) {
    if path.len() == 1 {
        map.insert(path[0].clone(), v);
        return;
    }
    let child = map
        .entry(path[0].clone())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(m) = child {
        insert_path(m, &path[1..], v);
    }
}

/// The bounds of a float column chunk from Parquet's statistics, when they are the
/// collector's: Parquet leaves NaNs out of its min and max (the collector's NaN rules
/// poison them instead), and writes a zero minimum as -0.0 and a zero maximum as +0.0
/// whatever the sign of the zeros written (the collector keeps their order: -0.0 below
/// +0.0). So only chunks known to hold no NaN, with no zero bound, are taken.
fn float_bounds(
    nans: Option<u64>,
    lo: Option<f64>,
    hi: Option<f64>,
) -> Option<(Option<Bound>, Option<Bound>)> {
    if nans != Some(0) || lo == Some(0.0) || hi == Some(0.0) {
        return None;
    }
    Some((lo.map(Bound::Float), hi.map(Bound::Float)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_statistics_are_exact_numbers() {
        assert_eq!(decimal_json(12345, 2), Value::from(123.45));
        assert_eq!(decimal_json(-5, 3), Value::from(-0.005));
        assert_eq!(decimal_json(7, -2), Value::from(700.0));
        assert_eq!(decimal_json(1_234_567_890_123_456_789, 2), Value::Null);
    }
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn parquet_chunk_statistics_are_taken_only_when_exact() {
        use parquet::data_type::ByteArray;
        use parquet::file::statistics::Statistics as S;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", ArrowType::Int64, true),
            Field::new("s", ArrowType::Utf8, true),
            Field::new("x", ArrowType::Float64, true),
        ]));
        let mut c = StatsCollector::new(&schema, 32);
        let leaves: Vec<usize> = c.parquet_leaves().iter().map(|(i, _)| *i).collect();
        assert_eq!(leaves, vec![0, 1, 2]);
        // Floats: only without NaNs and zero bounds.
        let double = |lo: f64, hi: f64, nans: Option<u64>| {
            S::Double(
                parquet::file::statistics::ValueStatistics::new(
                    Some(lo),
                    Some(hi),
                    None,
                    Some(0),
                    false,
                )
                .with_nan_count(nans),
            )
        };
        assert!(!c.absorb_parquet(2, &double(1.0, 2.0, None)));
        assert!(!c.absorb_parquet(2, &double(1.0, 2.0, Some(1))));
        assert!(!c.absorb_parquet(2, &double(-0.0, 2.0, Some(0))));
        assert!(!c.absorb_parquet(2, &double(-2.0, 0.0, Some(0))));
        assert!(c.absorb_parquet(2, &double(-2.5, 7.0, Some(0))));
        assert!(c.absorb_parquet(0, &S::int64(Some(-3), Some(8), None, Some(2), false)));
        assert!(c.absorb_parquet(0, &S::int64(Some(1), Some(11), None, Some(1), false)));
        // No null count, or a truncated string: not taken.
        assert!(!c.absorb_parquet(0, &S::int64(Some(-9), Some(9), None, None, false)));
        let truncated = S::ByteArray(
            parquet::file::statistics::ValueStatistics::new(
                Some(ByteArray::from("a")),
                Some(ByteArray::from("b")),
                None,
                Some(0),
                false,
            )
            .with_max_is_exact(false),
        );
        assert!(!c.absorb_parquet(1, &truncated));
        assert!(c.absorb_parquet(
            1,
            &S::byte_array(
                Some(ByteArray::from("apple")),
                Some(ByteArray::from("pear")),
                None,
                Some(4),
                false
            )
        ));
        let v: Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(v["minValues"]["id"], -3);
        assert_eq!(v["maxValues"]["id"], 11);
        assert_eq!(v["nullCount"]["id"], 3);
        assert_eq!(v["minValues"]["s"], "apple");
        assert_eq!(v["maxValues"]["s"], "pear");
        assert_eq!(v["nullCount"]["s"], 4);
        assert_eq!(v["minValues"]["x"], -2.5);
        assert_eq!(v["maxValues"]["x"], 7.0);
    }

    #[test]
    fn collects_min_max_nulls_across_batches() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", ArrowType::Int64, true),
            Field::new("x", ArrowType::Float64, true),
            Field::new("s", ArrowType::Utf8, true),
        ]));
        let b1 = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![Some(5), None])),
                Arc::new(Float64Array::from(vec![1.5, f64::NAN])),
                Arc::new(StringArray::from(vec!["b", "a"])),
            ],
        )
        .unwrap();
        let b2 = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![Some(-1), Some(9)])),
                Arc::new(Float64Array::from(vec![0.5, 2.0])),
                Arc::new(StringArray::from(vec![Some("c"), None])),
            ],
        )
        .unwrap();
        let mut c = StatsCollector::new(&schema, 32);
        c.update(&b1);
        c.update(&b2);
        let v: Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(v["numRecords"], 4);
        assert_eq!(v["minValues"]["id"], -1);
        assert_eq!(v["maxValues"]["id"], 9);
        assert_eq!(v["nullCount"]["id"], 1);
        assert_eq!(v["minValues"]["x"], 0.5);
        assert!(v["maxValues"].get("x").is_none(), "NaN poisons max");
        assert_eq!(v["maxValues"]["s"], "c");
        assert_eq!(v["nullCount"]["s"], 1);
    }
}
