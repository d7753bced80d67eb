//! Data skipping: deciding from a file's partition values and `add.stats` that no row
//! of the file can satisfy a predicate.
//!
//! The question asked of each node is "can some row make this TRUE?" (or FALSE, under a
//! `NOT`), which handles negation without rewriting and keeps SQL's third value honest:
//! a row where the node is NULL makes it neither. Every answer errs towards "yes":
//! - missing or unreadable statistics, unknown expressions, column-to-column
//!   comparisons: keep the file;
//! - timestamp bounds are widened by a millisecond (writers truncate them to
//!   milliseconds); decimal bounds written as JSON floats are widened by their rounding
//!   error; floating-point zero bounds cover both `-0.0` and `0.0`;
//! - a string `minValues` entry is a prefix of the true minimum, so it is still a lower
//!   bound; a `maxValues` string of 32 or more characters may be a truncated prefix, so
//!   it is not used;
//! - a float column containing NaN has its bound removed by the writer (NaN is the
//!   largest value under the total order evaluation uses).
//!
//! Partition columns are not estimated: any sub-predicate that reads only partition
//! columns (or no column) is evaluated exactly on a one-row batch of the file's
//! partition values, where a null partition value is SQL NULL.

use std::cell::OnceCell;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{Field, Schema};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::ast::{parse_date, parse_decimal_text, parse_timestamp, BinaryOp, Function, Scalar};
use super::bind::{BoundExpr, BoundKind};
use super::eval::evaluate_predicate;
use super::types::is_integral;
use crate::error::Result;
use crate::protocol::partition::parse_value;
use crate::protocol::{Add, DataType};

/// Writers truncate timestamp statistics to milliseconds.
const TIMESTAMP_SLACK_MICROS: i64 = 1_000;
/// A string maximum this long may be a truncated prefix rather than an upper bound.
const STRING_TRUNCATION_CHARS: usize = 32;
const MICROS_PER_DAY: i128 = 86_400_000_000;

/// The statistics of one data file, from the `add.stats` JSON string.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileStats {
    #[serde(default)]
    num_records: Option<i64>,
    #[serde(default)]
    min_values: Map<String, Value>,
    #[serde(default)]
    max_values: Map<String, Value>,
    #[serde(default)]
    null_count: Map<String, Value>,
}

impl FileStats {
    /// Parses `add.stats`.
    pub fn from_json(text: &str) -> Result<FileStats> {
        Ok(serde_json::from_str(text)?)
    }

    /// Statistics in `add.stats` form built in memory (e.g. from a Parquet row group).
    pub fn new(
        num_records: i64,
        min_values: Map<String, Value>,
        max_values: Map<String, Value>,
        null_count: Map<String, Value>,
    ) -> FileStats {
        FileStats {
            num_records: Some(num_records),
            min_values,
            max_values,
            null_count,
        }
    }

    /// The statistics of an `add` action; stats that do not parse count as missing.
    pub fn of_add(add: &Add) -> Option<FileStats> {
        let text = add.stats.as_deref()?;
        match FileStats::from_json(text) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(path = %add.path, error = %e, "ignoring unreadable file stats");
                None
            }
        }
    }

    pub fn num_records(&self) -> Option<i64> {
        self.num_records
    }

    /// The null count of the leaf column at `path`.
    pub fn null_count(&self, path: &[String]) -> Option<i64> {
        lookup(&self.null_count, path).and_then(Value::as_i64)
    }

    /// The raw `minValues` entry of the leaf column at `path`.
    pub fn min_value(&self, path: &[String]) -> Option<&Value> {
        lookup(&self.min_values, path).filter(|v| !v.is_object() && !v.is_null())
    }

    /// The raw `maxValues` entry of the leaf column at `path`.
    pub fn max_value(&self, path: &[String]) -> Option<&Value> {
        lookup(&self.max_values, path).filter(|v| !v.is_object() && !v.is_null())
    }

    /// True when every row of the file is null in the column at `path`.
    fn all_null(&self, path: &[String]) -> bool {
        matches!(
            (self.null_count(path), self.num_records),
            (Some(nulls), Some(rows)) if nulls >= rows
        )
    }
}

fn lookup<'a>(map: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let v = map.get(first)?;
    if rest.is_empty() {
        return Some(v);
    }
    match v {
        Value::Object(m) => lookup(m, rest),
        _ => None,
    }
}

/// False only when no row of the file can satisfy `predicate` (a bound boolean
/// expression). `stats` is the parsed `add.stats` (None: unknown); `partition_values`
/// is `add.partitionValues`; `partition_columns` names the table's partition columns.
pub fn may_match(
    predicate: &BoundExpr,
    stats: Option<&FileStats>,
    partition_values: &HashMap<String, Option<String>>,
    partition_columns: &[String],
) -> bool {
    if stats.and_then(FileStats::num_records) == Some(0) {
        return false;
    }
    let pruner = Pruner::new(predicate, stats, partition_values, partition_columns);
    pruner.can_be(predicate, true)
}

/// True only when every row of the file satisfies `predicate` (evaluates to TRUE):
/// DELETE then removes the file without reading it. Decided exactly for predicates
/// over partition columns; from statistics only for plain comparisons of columns
/// with non-null literals whose columns are known to hold no nulls (so that no row
/// can evaluate to NULL).
pub fn must_match(
    predicate: &BoundExpr,
    stats: Option<&FileStats>,
    partition_values: &HashMap<String, Option<String>>,
    partition_columns: &[String],
) -> bool {
    let pruner = Pruner::new(predicate, stats, partition_values, partition_columns);
    if pruner.reads_only_partitions(predicate) {
        return pruner.exact(predicate) == Some(Some(true));
    }
    let Some(stats) = stats else {
        return false;
    };
    if stats.num_records().is_none() || !never_null(predicate) {
        return false;
    }
    // Float statistics may leave NaN out: they never prove that every row matches.
    let mut reads_floats = false;
    predicate.visit(&mut |node| {
        if matches!(node.kind, BoundKind::Column(_))
            && matches!(node.data_type, DataType::Float | DataType::Double)
        {
            reads_floats = true;
        }
    });
    if reads_floats {
        return false;
    }
    let columns_have_nulls = predicate.columns().iter().any(|p| {
        if pruner.is_partition_column(p) {
            !matches!(partition_values.get(&p[0]), Some(Some(_)))
        } else {
            stats.null_count(p) != Some(0)
        }
    });
    !columns_have_nulls && !pruner.can_be(predicate, false)
}

/// Whether `e` is built only from columns, non-null literals, comparisons, AND/OR/NOT,
/// IN, LIKE and IS [NOT] NULL: over non-null columns it then never evaluates to NULL.
fn never_null(e: &BoundExpr) -> bool {
    match &e.kind {
        BoundKind::Column(_) => true,
        BoundKind::Literal(v) => !v.is_null(),
        BoundKind::Binary { op, left, right } => {
            (op.is_comparison() || op.is_logical()) && never_null(left) && never_null(right)
        }
        BoundKind::Not(inner) => never_null(inner),
        BoundKind::IsNull(_) | BoundKind::IsNotNull(_) => true,
        BoundKind::InList { expr, list, .. } => never_null(expr) && list.iter().all(never_null),
        BoundKind::Like { expr, .. } => never_null(expr),
        _ => false,
    }
}

/// [`may_match`] for an `add` action; stats that do not parse count as missing.
pub fn may_match_file(predicate: &BoundExpr, add: &Add, partition_columns: &[String]) -> bool {
    let stats = FileStats::of_add(add);
    let keep = may_match(
        predicate,
        stats.as_ref(),
        &add.partition_values,
        partition_columns,
    );
    if !keep {
        tracing::trace!(path = %add.path, "file skipped by predicate");
    }
    keep
}

struct Pruner<'a> {
    predicate: &'a BoundExpr,
    stats: Option<&'a FileStats>,
    partition_values: &'a HashMap<String, Option<String>>,
    partition_columns: &'a [String],
    partition_batch: OnceCell<Option<RecordBatch>>,
}

/// A data column as the comparison sees it: possibly through a widening cast.
struct ColumnView<'a> {
    path: &'a [String],
    column_type: &'a DataType,
    /// The type the operation works in (the cast's target, or the column type).
    view_type: &'a DataType,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Min,
    Max,
}

/// A statistics bound or literal in a form that orders like the evaluated values.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Int(i128),
    Float(f64),
    Str(String),
    Bool(bool),
}

impl Key {
    fn cmp(&self, other: &Key) -> Option<Ordering> {
        match (self, other) {
            (Key::Int(a), Key::Int(b)) => Some(a.cmp(b)),
            (Key::Float(a), Key::Float(b)) => Some(a.total_cmp(b)),
            (Key::Str(a), Key::Str(b)) => Some(a.cmp(b)),
            (Key::Bool(a), Key::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// Known bounds of a column in one file; `None` is unbounded on that side.
struct Range {
    min: Option<Key>,
    max: Option<Key>,
}

impl Range {
    /// Whether some value `v` in the range can satisfy `v op lit`.
    fn can_hold(&self, op: BinaryOp, lit: &Key) -> bool {
        let min = self.min.as_ref().and_then(|m| m.cmp(lit));
        let max = self.max.as_ref().and_then(|m| m.cmp(lit));
        use Ordering::*;
        match op {
            BinaryOp::Eq => max != Some(Less) && min != Some(Greater),
            BinaryOp::NotEq => !(min == Some(Equal) && max == Some(Equal)),
            BinaryOp::Lt => !matches!(min, Some(Greater | Equal)),
            BinaryOp::LtEq => min != Some(Greater),
            BinaryOp::Gt => !matches!(max, Some(Less | Equal)),
            BinaryOp::GtEq => max != Some(Less),
            _ => true,
        }
    }
}

impl<'a> Pruner<'a> {
    fn new(
        predicate: &'a BoundExpr,
        stats: Option<&'a FileStats>,
        partition_values: &'a HashMap<String, Option<String>>,
        partition_columns: &'a [String],
    ) -> Self {
        Pruner {
            predicate,
            stats,
            partition_values,
            partition_columns,
            partition_batch: OnceCell::new(),
        }
    }

    /// Can some row of the file make `e` evaluate to `want`?
    fn can_be(&self, e: &BoundExpr, want: bool) -> bool {
        if self.reads_only_partitions(e) {
            return match self.exact(e) {
                Some(value) => value == Some(want),
                None => true,
            };
        }
        match &e.kind {
            BoundKind::Not(inner) => self.can_be(inner, !want),
            BoundKind::Binary {
                op: op @ (BinaryOp::And | BinaryOp::Or),
                left,
                right,
            } => {
                // AND is TRUE when both are, FALSE when either is; OR the other way round.
                let both = (*op == BinaryOp::And) == want;
                if both {
                    self.can_be(left, want) && self.can_be(right, want)
                } else {
                    self.can_be(left, want) || self.can_be(right, want)
                }
            }
            BoundKind::Binary { op, left, right } if op.is_comparison() => {
                let op = if want { Some(*op) } else { op.negate() };
                match op {
                    Some(op) => self.compare(op, left, right),
                    None => true,
                }
            }
            BoundKind::IsNull(inner) => self.can_be_null(inner, want),
            BoundKind::IsNotNull(inner) => self.can_be_null(inner, !want),
            BoundKind::InList {
                expr,
                list,
                negated,
            } => self.in_list(expr, list, want != *negated),
            BoundKind::Like {
                expr,
                pattern,
                negated,
            } => self.like(expr, pattern, want != *negated),
            _ => !self.null_everywhere(e),
        }
    }

    fn is_partition_column(&self, path: &[String]) -> bool {
        path.len() == 1
            && self
                .partition_columns
                .iter()
                .any(|p| p.eq_ignore_ascii_case(&path[0]))
    }

    fn reads_only_partitions(&self, e: &BoundExpr) -> bool {
        e.columns().iter().all(|p| self.is_partition_column(p))
    }

    /// The exact value of a partition-only boolean expression for this file.
    fn exact(&self, e: &BoundExpr) -> Option<Option<bool>> {
        let empty;
        let batch = if e.columns().is_empty() {
            empty = one_row_batch(vec![], vec![])?;
            &empty
        } else {
            self.partition_batch
                .get_or_init(|| self.build_partition_batch())
                .as_ref()?
        };
        let result = evaluate_predicate(e, batch).ok()?;
        Some(result.is_valid(0).then(|| result.value(0)))
    }

    /// A one-row batch of every partition column the predicate reads.
    fn build_partition_batch(&self) -> Option<RecordBatch> {
        let mut fields = vec![];
        let mut arrays: Vec<ArrayRef> = vec![];
        let mut seen: Vec<&[String]> = vec![];
        let mut failed = false;
        self.predicate.visit(&mut |node| {
            let BoundKind::Column(path) = &node.kind else {
                return;
            };
            if failed || !self.is_partition_column(path) || seen.contains(&path.as_slice()) {
                return;
            }
            seen.push(path);
            let name = &path[0];
            let value = self.partition_values.get(name).or_else(|| {
                self.partition_values
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            });
            let parsed = value.and_then(|v| {
                let arrow_type = node.data_type.to_arrow(name).ok()?;
                let array = parse_value(name, v.as_deref(), &node.data_type, &arrow_type).ok()?;
                Some((Field::new(name, arrow_type, true), array))
            });
            match parsed {
                Some((field, array)) => {
                    fields.push(field);
                    arrays.push(array);
                }
                None => failed = true,
            }
        });
        if failed {
            return None;
        }
        one_row_batch(fields, arrays)
    }

    fn stats(&self) -> Option<&'a FileStats> {
        self.stats
    }

    /// `e` as a data column, directly or through a cast that keeps the value order.
    fn column_view<'e>(&self, e: &'e BoundExpr) -> Option<ColumnView<'e>> {
        match &e.kind {
            BoundKind::Column(path) if !self.is_partition_column(path) => Some(ColumnView {
                path,
                column_type: &e.data_type,
                view_type: &e.data_type,
            }),
            BoundKind::Cast { expr, .. } => match &expr.kind {
                BoundKind::Column(path)
                    if !self.is_partition_column(path)
                        && is_widening(&expr.data_type, &e.data_type) =>
                {
                    Some(ColumnView {
                        path,
                        column_type: &expr.data_type,
                        view_type: &e.data_type,
                    })
                }
                _ => None,
            },
            _ => None,
        }
    }

    fn all_null(&self, path: &[String]) -> bool {
        self.stats().is_some_and(|s| s.all_null(path))
    }

    /// True when `e` is NULL on every row: it is null whenever one of its columns is,
    /// and one such column is null in every row.
    fn null_everywhere(&self, e: &BoundExpr) -> bool {
        let mut strict = vec![];
        strict_columns(e, &mut strict);
        strict
            .iter()
            .any(|p| !self.is_partition_column(p) && self.all_null(p))
    }

    fn range(&self, view: &ColumnView<'_>) -> Option<Range> {
        let stats = self.stats()?;
        let bound = |raw: Option<&Value>, side| {
            raw.and_then(|v| stat_key(v, view.column_type, side))
                .and_then(|k| widen_key(k, view.column_type, view.view_type, side))
        };
        Some(Range {
            min: bound(stats.min_value(view.path), Side::Min),
            max: bound(stats.max_value(view.path), Side::Max),
        })
    }

    /// Can some row satisfy `left op right` (TRUE, not NULL)?
    fn compare(&self, op: BinaryOp, left: &BoundExpr, right: &BoundExpr) -> bool {
        let (view, lit, op) = match (self.column_view(left), literal(right)) {
            (Some(v), Some(l)) => (v, l, op),
            _ => match (self.column_view(right), literal(left)) {
                (Some(v), Some(l)) => (v, l, op.flip()),
                _ => return !self.null_everywhere(left) && !self.null_everywhere(right),
            },
        };
        if lit.is_null() || self.all_null(view.path) {
            return false;
        }
        match (self.range(&view), scalar_key(lit)) {
            (Some(range), Some(key)) => range.can_hold(op, &key),
            _ => true,
        }
    }

    /// Can `e` be null (`want_null`) or non-null on some row?
    fn can_be_null(&self, e: &BoundExpr, want_null: bool) -> bool {
        let Some(view) = self.column_view(e) else {
            return true;
        };
        let Some(stats) = self.stats() else {
            return true;
        };
        match (stats.null_count(view.path), stats.num_records()) {
            (Some(nulls), _) if want_null => nulls > 0,
            (Some(nulls), Some(rows)) => nulls < rows,
            _ => true,
        }
    }

    /// `matching`: can `expr` equal some item? Otherwise: can `expr` differ from all
    /// items while none is NULL (what makes `IN` FALSE)?
    fn in_list(&self, expr: &BoundExpr, list: &[BoundExpr], matching: bool) -> bool {
        let Some(view) = self.column_view(expr) else {
            return !self.null_everywhere(expr);
        };
        if self.all_null(view.path) {
            return false;
        }
        let Some(items) = list.iter().map(literal).collect::<Option<Vec<_>>>() else {
            return true;
        };
        if !matching && items.iter().any(|i| i.is_null()) {
            return false;
        }
        let Some(range) = self.range(&view) else {
            return true;
        };
        let test = |item: &&Scalar, op| scalar_key(item).is_none_or(|k| range.can_hold(op, &k));
        if matching {
            items
                .iter()
                .filter(|i| !i.is_null())
                .any(|i| test(i, BinaryOp::Eq))
        } else {
            items.iter().all(|i| test(i, BinaryOp::NotEq))
        }
    }

    /// `matching`: can some value match the LIKE pattern? Only a literal prefix of the
    /// pattern is used, as the range `[prefix, successor(prefix))`.
    fn like(&self, expr: &BoundExpr, pattern: &str, matching: bool) -> bool {
        let Some(view) = self.column_view(expr) else {
            return !self.null_everywhere(expr);
        };
        if self.all_null(view.path) {
            return false;
        }
        if !matching {
            return true;
        }
        let prefix = like_prefix(pattern);
        if prefix.is_empty() {
            return true;
        }
        let Some(range) = self.range(&view) else {
            return true;
        };
        let lower = Key::Str(prefix.clone());
        if !range.can_hold(BinaryOp::GtEq, &lower) {
            return false;
        }
        match prefix_successor(&prefix) {
            Some(upper) => range.can_hold(BinaryOp::Lt, &Key::Str(upper)),
            None => true,
        }
    }
}

fn one_row_batch(fields: Vec<Field>, arrays: Vec<ArrayRef>) -> Option<RecordBatch> {
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )
    .ok()
}

fn literal(e: &BoundExpr) -> Option<&Scalar> {
    match &e.kind {
        BoundKind::Literal(v) => Some(v),
        _ => None,
    }
}

/// Columns whose null makes `e` null.
fn strict_columns<'e>(e: &'e BoundExpr, out: &mut Vec<&'e [String]>) {
    match &e.kind {
        BoundKind::Column(p) => out.push(p),
        BoundKind::Binary { op, left, right } if !op.is_logical() => {
            strict_columns(left, out);
            strict_columns(right, out);
        }
        BoundKind::Not(x)
        | BoundKind::Negative(x)
        | BoundKind::Cast { expr: x, .. }
        | BoundKind::Like { expr: x, .. }
        | BoundKind::InList { expr: x, .. } => strict_columns(x, out),
        BoundKind::Function {
            func: Function::Lower | Function::Upper,
            args,
        } => args.iter().for_each(|a| strict_columns(a, out)),
        _ => {}
    }
}

/// Whether casting `from` to `to` keeps every value and the order of values (and so
/// maps bounds to bounds, and nulls to nulls).
fn is_widening(from: &DataType, to: &DataType) -> bool {
    use DataType as T;
    let rank = |t: &DataType| match t {
        T::Byte => 1,
        T::Short => 2,
        T::Integer => 3,
        _ => 4,
    };
    match (from, to) {
        (a, b) if is_integral(a) && is_integral(b) => rank(a) <= rank(b),
        (a, T::Decimal(p, s)) if is_integral(a) => {
            let digits = match a {
                T::Byte => 3,
                T::Short => 5,
                T::Integer => 10,
                _ => 19,
            };
            i16::from(*p) - i16::from(*s) >= digits
        }
        (T::Decimal(p1, s1), T::Decimal(p2, s2)) => {
            s2 >= s1 && i16::from(*p2) - i16::from(*s2) >= i16::from(*p1) - i16::from(*s1)
        }
        (a, T::Float | T::Double) if is_integral(a) || matches!(a, T::Decimal(..)) => true,
        (T::Float, T::Double) => true,
        (T::Date, T::Timestamp | T::TimestampNtz) => true,
        _ => false,
    }
}

/// A statistics value of a column of type `t` as a key, widened to stay a bound.
fn stat_key(v: &Value, t: &DataType, side: Side) -> Option<Key> {
    let widen = |k: i128, by: i128| match side {
        Side::Min => k - by,
        Side::Max => k + by,
    };
    Some(match t {
        t if is_integral(t) => Key::Int(i128::from(v.as_i64()?)),
        DataType::Date => Key::Int(i128::from(parse_date(v.as_str()?)?)),
        DataType::Timestamp | DataType::TimestampNtz => {
            let micros = parse_timestamp(v.as_str()?, true)?;
            Key::Int(widen(
                i128::from(micros),
                i128::from(TIMESTAMP_SLACK_MICROS),
            ))
        }
        DataType::Float | DataType::Double => {
            // NaN sorts above every number, and writers (Parquet, delta-rs) leave NaN out
            // of their maxima: a float maximum is never an upper bound to trust.
            if side == Side::Max {
                return None;
            }
            let f = v.as_f64()?;
            if f.is_nan() {
                return None;
            }
            Key::Float(match (side, f == 0.0) {
                (Side::Min, true) => -0.0,
                (Side::Max, true) => 0.0,
                _ => f,
            })
        }
        DataType::Decimal(_, scale) => Key::Int(decimal_stat(v, *scale, side)?),
        DataType::String => {
            let s = v.as_str()?;
            if side == Side::Max && s.chars().count() >= STRING_TRUNCATION_CHARS {
                return None;
            }
            Key::Str(s.to_string())
        }
        DataType::Boolean => Key::Bool(v.as_bool()?),
        _ => return None,
    })
}

/// A decimal statistic as an unscaled integer at `scale`, rounded outwards.
fn decimal_stat(v: &Value, scale: i8, side: Side) -> Option<i128> {
    let exact_text = match v {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    };
    if let Some(text) = exact_text {
        let (unscaled, _, text_scale) = parse_decimal_text(&text)?;
        return rescale(unscaled, text_scale, scale, side);
    }
    // A JSON float f stands for the written decimal d: both round to f, so they differ
    // by at most one ulp. When that is under half a unit at `scale`, the shortest text
    // of f rounded outwards is a bound of d; otherwise widen by the error.
    let f = v.as_f64()?;
    let units = 10f64.powi(i32::from(scale));
    let error = f.abs() * f64::EPSILON * units;
    if error < 0.5 {
        let text = v.to_string();
        if !text.contains(['e', 'E']) {
            if let Some((unscaled, _, text_scale)) = parse_decimal_text(&text) {
                return rescale(unscaled, text_scale, scale, side);
            }
        }
    }
    let scaled = f * units;
    if !scaled.is_finite() || scaled.abs() > 1e36 {
        return None;
    }
    let slack = error.ceil() + 1.0;
    Some(match side {
        Side::Min => (scaled.floor() - slack) as i128,
        Side::Max => (scaled.ceil() + slack) as i128,
    })
}

/// `unscaled` at `from` scale expressed at `to` scale, rounded outwards on `side`.
fn rescale(unscaled: i128, from: i8, to: i8, side: Side) -> Option<i128> {
    let diff = i32::from(to) - i32::from(from);
    let pow = 10i128.checked_pow(diff.unsigned_abs())?;
    if diff >= 0 {
        return unscaled.checked_mul(pow);
    }
    Some(match side {
        Side::Min => unscaled.div_euclid(pow),
        Side::Max => -((-unscaled).div_euclid(pow)),
    })
}

/// Maps a bound of a column of type `from` through a widening cast to `to`.
fn widen_key(k: Key, from: &DataType, to: &DataType, side: Side) -> Option<Key> {
    use DataType as T;
    if from == to {
        return Some(k);
    }
    // Conversions to floating point may round differently than Arrow's casts by an ulp.
    let float = |f: f64| {
        Key::Float(match side {
            Side::Min => step_f64(step_f64(f, false), false),
            Side::Max => step_f64(step_f64(f, true), true),
        })
    };
    Some(match (k, from, to) {
        (Key::Int(v), a, b) if is_integral(a) && is_integral(b) => Key::Int(v),
        (Key::Int(v), a, T::Decimal(_, s)) if is_integral(a) => {
            Key::Int(v.checked_mul(10i128.checked_pow(u32::try_from(*s).ok()?)?)?)
        }
        (Key::Int(v), T::Decimal(_, s1), T::Decimal(_, s2)) => {
            let diff = u32::try_from(i32::from(*s2) - i32::from(*s1)).ok()?;
            Key::Int(v.checked_mul(10i128.checked_pow(diff)?)?)
        }
        (Key::Int(v), a, T::Float) if is_integral(a) => float(f64::from(v as f32)),
        (Key::Int(v), a, T::Double) if is_integral(a) => float(v as f64),
        (Key::Int(v), T::Decimal(_, s), T::Float | T::Double) => {
            let f = v as f64 / 10f64.powi(i32::from(*s));
            float(if *to == T::Float {
                f64::from(f as f32)
            } else {
                f
            })
        }
        (Key::Float(f), T::Float, T::Double) => Key::Float(f),
        (Key::Int(days), T::Date, T::Timestamp | T::TimestampNtz) => {
            Key::Int(days.checked_mul(MICROS_PER_DAY)?)
        }
        _ => return None,
    })
}

/// The next representable double above (`up`) or below `f`.
fn step_f64(f: f64, up: bool) -> f64 {
    if f.is_nan() || f.is_infinite() {
        return f;
    }
    if f == 0.0 {
        let tiny = f64::from_bits(1);
        return if up { tiny } else { -tiny };
    }
    let bits = f.to_bits();
    let away_from_zero = up == (f > 0.0);
    f64::from_bits(if away_from_zero { bits + 1 } else { bits - 1 })
}

/// A literal as a key, in the type of the operation it takes part in.
fn scalar_key(v: &Scalar) -> Option<Key> {
    Some(match v {
        Scalar::Null | Scalar::Binary(_) => return None,
        Scalar::Boolean(b) => Key::Bool(*b),
        Scalar::Byte(_) | Scalar::Short(_) | Scalar::Integer(_) | Scalar::Long(_) => {
            Key::Int(i128::from(v.as_i64()?))
        }
        Scalar::Float(f) => Key::Float(f64::from(*f)),
        Scalar::Double(f) => Key::Float(*f),
        Scalar::Decimal(u, _, _) => Key::Int(*u),
        Scalar::String(s) => Key::Str(s.clone()),
        Scalar::Date(d) => Key::Int(i128::from(*d)),
        Scalar::Timestamp(us) | Scalar::TimestampNtz(us) => Key::Int(i128::from(*us)),
    })
}

/// The literal text every match of a LIKE pattern starts with.
fn like_prefix(pattern: &str) -> String {
    pattern
        .chars()
        .take_while(|c| !matches!(c, '%' | '_' | '\\'))
        .collect()
}

/// The smallest string greater than every string that starts with `prefix`.
fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 + 1 {
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
#[path = "skipping_tests.rs"]
mod tests;
