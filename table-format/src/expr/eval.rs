//! Evaluation of a [`BoundExpr`] on an Arrow [`RecordBatch`] with Arrow's compute
//! kernels, column at a time.
//!
//! Semantics follow SQL (and Spark's non-ANSI mode where SQL leaves a choice):
//! - three-valued logic: `AND`/`OR` are Kleene, comparisons with `NULL` are `NULL`, and a
//!   filter keeps only rows where the predicate is `TRUE`;
//! - division or modulo by zero gives `NULL` (also for floating point), never an error;
//! - integer and decimal overflow in arithmetic is an error (Arrow's checked kernels);
//! - a user `CAST` that cannot convert a value gives `NULL`; the strict casts of UPDATE
//!   assignments fail instead;
//! - floating point comparisons use IEEE 754 total order (Arrow's): `NaN` equals `NaN`
//!   and is greater than every other value;
//! - a field of a null struct is null.
//!
//! The batch is expected in the table's logical Arrow schema ([`StructType::to_arrow`]);
//! columns are found by exact name first, then case-insensitively, and arrays of a
//! different but castable type (e.g. a time zone spelled `+00:00`) are converted.
//!
//! [`StructType::to_arrow`]: crate::protocol::StructType::to_arrow

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Datum, Float64Array, Int8Array, RecordBatch,
    StringArray, UInt32Array,
};
use arrow::buffer::{Buffer, NullBuffer};
use arrow::compute::kernels::{cmp, numeric};
use arrow::compute::{
    and_kleene, cast, cast_with_options, filter_record_batch, is_not_null, is_null, not, or_kleene,
    take, CastOptions,
};
use arrow::datatypes::{DataType as ArrowType, Schema};

use super::ast::{BinaryOp, Function};
use super::bind::{BoundExpr, BoundKind};
use crate::error::{Error, Result};
use crate::protocol::schema::retag_timestamp;

/// Evaluates `expr` on every row of `batch`; the result has `batch.num_rows()` values.
pub fn evaluate(expr: &BoundExpr, batch: &RecordBatch) -> Result<ArrayRef> {
    eval(expr, batch)?.into_array(batch.num_rows())
}

/// Evaluates a boolean expression; null means "unknown" (SQL three-valued logic).
pub fn evaluate_predicate(expr: &BoundExpr, batch: &RecordBatch) -> Result<BooleanArray> {
    let result = evaluate(expr, batch)?;
    result.as_boolean_opt().cloned().ok_or_else(|| {
        Error::ExpressionType(format!(
            "a predicate must be a boolean expression, but `{expr}` is {}",
            result.data_type()
        ))
    })
}

/// The rows of `batch` for which `predicate` is `TRUE` (not `FALSE`, not `NULL`).
pub fn filter_batch(predicate: &BoundExpr, batch: &RecordBatch) -> Result<RecordBatch> {
    let mask = evaluate_predicate(predicate, batch)?;
    Ok(filter_record_batch(batch, &mask)?)
}

/// The rows where the predicate is TRUE, as a mask without nulls (FALSE and NULL both
/// give false).
pub fn matching_rows(predicate: &BoundExpr, batch: &RecordBatch) -> Result<BooleanArray> {
    let mask = evaluate_predicate(predicate, batch)?;
    Ok(if mask.null_count() == 0 {
        mask
    } else {
        arrow::compute::prep_null_mask_filter(&mask)
    })
}

/// An intermediate result: a full column, or one value standing for every row.
enum Value {
    Array(ArrayRef),
    Scalar(ArrayRef),
}

impl Datum for Value {
    fn get(&self) -> (&dyn Array, bool) {
        match self {
            Value::Array(a) => (a.as_ref(), false),
            Value::Scalar(a) => (a.as_ref(), true),
        }
    }
}

impl Value {
    fn array(&self) -> &ArrayRef {
        match self {
            Value::Array(a) | Value::Scalar(a) => a,
        }
    }

    fn is_scalar(&self) -> bool {
        matches!(self, Value::Scalar(_))
    }

    fn into_array(self, len: usize) -> Result<ArrayRef> {
        match self {
            Value::Array(a) => Ok(a),
            Value::Scalar(a) if len == 1 => Ok(a),
            Value::Scalar(a) => Ok(take(a.as_ref(), &UInt32Array::from(vec![0u32; len]), None)?),
        }
    }

    /// Applies a unary kernel, keeping scalar-ness.
    fn map(self, f: impl FnOnce(&ArrayRef) -> Result<ArrayRef>) -> Result<Value> {
        Ok(match self {
            Value::Array(a) => Value::Array(f(&a)?),
            Value::Scalar(a) => Value::Scalar(f(&a)?),
        })
    }

    /// Wraps a kernel result computed from operands whose scalar-ness was `scalar`.
    fn from_result(array: ArrayRef, scalar: bool) -> Value {
        if scalar {
            Value::Scalar(array)
        } else {
            Value::Array(array)
        }
    }
}

fn eval(expr: &BoundExpr, batch: &RecordBatch) -> Result<Value> {
    let n = batch.num_rows();
    let expected = || expr.data_type.to_arrow("expression");
    Ok(match &expr.kind {
        BoundKind::Column(path) => Value::Array(column(batch, path, &expected()?)?),
        BoundKind::Literal(v) => Value::Scalar(v.to_array(&expr.data_type)?),
        BoundKind::Binary { op, left, right } => {
            let (l, r) = (eval(left, batch)?, eval(right, batch)?);
            let scalar = l.is_scalar() && r.is_scalar();
            if op.is_logical() {
                kleene(*op, l, r, n)?
            } else if op.is_comparison() {
                let out = compare(*op, &l, &r)?;
                Value::from_result(Arc::new(out), scalar)
            } else {
                let out = arithmetic(*op, l, r)?;
                let target = expected()?;
                let out = if out.data_type() == &target {
                    out
                } else {
                    cast(&out, &target)?
                };
                Value::from_result(out, scalar)
            }
        }
        BoundKind::Not(e) => eval(e, batch)?.map(|a| Ok(Arc::new(not(boolean(a)?)?)))?,
        BoundKind::Negative(e) => eval(e, batch)?.map(|a| Ok(numeric::neg(a)?))?,
        BoundKind::IsNull(e) => eval(e, batch)?.map(|a| Ok(Arc::new(is_null(a)?)))?,
        BoundKind::IsNotNull(e) => eval(e, batch)?.map(|a| Ok(Arc::new(is_not_null(a)?)))?,
        BoundKind::InList {
            expr: e,
            list,
            negated,
        } => {
            let v = eval(e, batch)?;
            let mut acc: Option<Value> = None;
            for item in list {
                let item = eval(item, batch)?;
                let scalar = v.is_scalar() && item.is_scalar();
                let eq = Value::from_result(Arc::new(cmp::eq(&v, &item)?), scalar);
                acc = Some(match acc {
                    None => eq,
                    Some(prev) => kleene(BinaryOp::Or, prev, eq, n)?,
                });
            }
            // `x IN ()` is false for every row.
            let found = match acc {
                Some(a) => a,
                None => Value::Scalar(Arc::new(BooleanArray::from(vec![false]))),
            };
            if *negated {
                found.map(|a| Ok(Arc::new(not(boolean(a)?)?)))?
            } else {
                found
            }
        }
        BoundKind::Like {
            expr: e,
            pattern,
            negated,
        } => {
            let v = eval(e, batch)?;
            let scalar = v.is_scalar();
            let pattern = arrow::array::Scalar::new(StringArray::from(vec![pattern.as_str()]));
            let out = if *negated {
                arrow::compute::kernels::comparison::nlike(&v, &pattern)?
            } else {
                arrow::compute::kernels::comparison::like(&v, &pattern)?
            };
            Value::from_result(Arc::new(out), scalar)
        }
        BoundKind::Cast { expr: e, strict } => {
            let target = expected()?;
            let options = CastOptions {
                safe: !strict,
                ..Default::default()
            };
            eval(e, batch)?.map(|a| cast_value(a, &target, &options))?
        }
        BoundKind::Function { func, args } => function(*func, args, batch)?,
    })
}

/// Arrow's cast, with time zones handled here: the stored values are UTC instants, and
/// Arrow cannot resolve the zone name "UTC" without the chrono-tz feature.
fn cast_value(a: &ArrayRef, target: &ArrowType, options: &CastOptions) -> Result<ArrayRef> {
    let naive = |t: &ArrowType| match t {
        ArrowType::Timestamp(unit, Some(_)) => Some(ArrowType::Timestamp(*unit, None)),
        _ => None,
    };
    let source = match naive(a.data_type()) {
        Some(t) => retag_timestamp(a.clone(), &t),
        None => a.clone(),
    };
    let out = match naive(target) {
        Some(t) => retag_timestamp(cast_with_options(&source, &t, options)?, target),
        None => cast_with_options(&source, target, options)?,
    };
    Ok(out)
}

fn boolean(a: &ArrayRef) -> Result<&BooleanArray> {
    a.as_boolean_opt().ok_or_else(|| {
        Error::ExpressionType(format!("expected a boolean value, got {}", a.data_type()))
    })
}

fn kleene(op: BinaryOp, l: Value, r: Value, n: usize) -> Result<Value> {
    let scalar = l.is_scalar() && r.is_scalar();
    let len = if scalar { 1 } else { n };
    let (l, r) = (l.into_array(len)?, r.into_array(len)?);
    let (l, r) = (boolean(&l)?, boolean(&r)?);
    let out = match op {
        BinaryOp::And => and_kleene(l, r)?,
        _ => or_kleene(l, r)?,
    };
    Ok(Value::from_result(Arc::new(out), scalar))
}

fn compare(op: BinaryOp, l: &Value, r: &Value) -> Result<BooleanArray> {
    Ok(match op {
        BinaryOp::Eq => cmp::eq(l, r)?,
        BinaryOp::NotEq => cmp::neq(l, r)?,
        BinaryOp::Lt => cmp::lt(l, r)?,
        BinaryOp::LtEq => cmp::lt_eq(l, r)?,
        BinaryOp::Gt => cmp::gt(l, r)?,
        _ => cmp::gt_eq(l, r)?,
    })
}

fn arithmetic(op: BinaryOp, l: Value, r: Value) -> Result<ArrayRef> {
    Ok(match op {
        BinaryOp::Plus => numeric::add(&l, &r)?,
        BinaryOp::Minus => numeric::sub(&l, &r)?,
        BinaryOp::Multiply => numeric::mul(&l, &r)?,
        BinaryOp::Divide => numeric::div(&l, &null_zeros(r)?)?,
        _ => numeric::rem(&l, &null_zeros(r)?)?,
    })
}

/// Makes zero divisors null, so that `x / 0` is null rather than an error (or ±inf).
fn null_zeros(divisor: Value) -> Result<Value> {
    let a = divisor.array();
    let zero = |v: f64| -> Result<arrow::array::Scalar<ArrayRef>> {
        let one: ArrayRef = if v == 0.0 && v.is_sign_negative() {
            Arc::new(Float64Array::from(vec![v]))
        } else {
            Arc::new(Int8Array::from(vec![0]))
        };
        Ok(arrow::array::Scalar::new(cast(&one, a.data_type())?))
    };
    let mut is_zero = cmp::eq(a, &zero(0.0)?)?;
    if matches!(a.data_type(), ArrowType::Float32 | ArrowType::Float64) {
        // Total order tells -0.0 from 0.0; both are zero divisors.
        is_zero = or_kleene(&is_zero, &cmp::eq(a, &zero(-0.0)?)?)?;
    }
    if is_zero.true_count() == 0 {
        return Ok(divisor);
    }
    divisor.map(|a| Ok(arrow::compute::nullif(a, &is_zero)?))
}

fn function(func: Function, args: &[BoundExpr], batch: &RecordBatch) -> Result<Value> {
    let mut values = args.iter().map(|a| eval(a, batch));
    let Some(first) = values.next().transpose()? else {
        return Err(Error::InvalidExpression(format!(
            "`{}` needs an argument",
            func.name()
        )));
    };
    match func {
        Function::Lower => first.map(|a| change_case(a, false)),
        Function::Upper => first.map(|a| change_case(a, true)),
        Function::Coalesce => {
            let mut acc = first;
            for next in values {
                let next = next?;
                let scalar = acc.is_scalar() && next.is_scalar();
                let len = if scalar { 1 } else { batch.num_rows() };
                let current = acc.into_array(len)?;
                let keep = is_not_null(&current)?;
                let out = arrow::compute::kernels::zip::zip(&keep, &current, &next)?;
                acc = Value::from_result(out, scalar);
            }
            Ok(acc)
        }
    }
}

/// `lower` / `upper`. ASCII data is converted in one pass over the value buffer (the
/// offsets stay valid); other text goes value by value, since Unicode case mapping can
/// change byte lengths and Arrow has no kernel for it.
fn change_case(a: &ArrayRef, upper: bool) -> Result<ArrayRef> {
    let s = a.as_string_opt::<i32>().ok_or_else(|| {
        Error::ExpressionType(format!("expected a string value, got {}", a.data_type()))
    })?;
    if s.value_data().is_ascii() {
        let mut bytes = s.value_data().to_vec();
        if upper {
            bytes.make_ascii_uppercase();
        } else {
            bytes.make_ascii_lowercase();
        }
        let out = StringArray::try_new(
            s.offsets().clone(),
            Buffer::from_vec(bytes),
            s.nulls().cloned(),
        )?;
        return Ok(Arc::new(out));
    }
    let out: StringArray = s
        .iter()
        .map(|v| {
            v.map(|v| {
                if upper {
                    v.to_uppercase()
                } else {
                    v.to_lowercase()
                }
            })
        })
        .collect();
    Ok(Arc::new(out))
}

/// The array at `path`, with the nulls of every struct above it, in type `expected`.
fn column(batch: &RecordBatch, path: &[String], expected: &ArrowType) -> Result<ArrayRef> {
    let missing = || Error::mismatch(path.join("."), "the batch has no such column");
    let first = path.first().ok_or_else(missing)?;
    let schema: &Schema = batch.schema_ref();
    let index = schema
        .index_of(first)
        .ok()
        .or_else(|| {
            schema
                .fields()
                .iter()
                .position(|f| f.name().eq_ignore_ascii_case(first))
        })
        .ok_or_else(missing)?;
    let mut array = batch.column(index).clone();
    let mut parent_nulls: Option<NullBuffer> = None;
    for name in &path[1..] {
        let s = array.as_struct_opt().ok_or_else(missing)?;
        parent_nulls = NullBuffer::union(parent_nulls.as_ref(), s.nulls());
        let child = s
            .column_by_name(name)
            .or_else(|| {
                s.fields()
                    .iter()
                    .position(|f| f.name().eq_ignore_ascii_case(name))
                    .map(|i| s.column(i))
            })
            .ok_or_else(missing)?;
        array = child.clone();
    }
    if let Some(parents) = parent_nulls.filter(|n| n.null_count() > 0) {
        let data = array.to_data();
        let nulls = NullBuffer::union(data.nulls(), Some(&parents));
        array = arrow::array::make_array(data.into_builder().nulls(nulls).build()?);
    }
    if array.data_type() == expected {
        return Ok(array);
    }
    match (array.data_type(), expected) {
        (ArrowType::Timestamp(u1, _), ArrowType::Timestamp(u2, _)) if u1 == u2 => {
            Ok(retag_timestamp(array, expected))
        }
        _ => cast_value(&array, expected, &CastOptions::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::bind::{bind, bind_assignment, bind_predicate};
    use crate::expr::parse::{parse_assignment, parse_expression, parse_predicate};
    use crate::protocol::{DataType, StructField, StructType};
    use arrow::array::{
        Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array, StructArray,
        TimestampMicrosecondArray,
    };

    fn schema() -> StructType {
        StructType::new(vec![
            StructField::new("id", DataType::Long, true),
            StructField::new("n", DataType::Integer, true),
            StructField::new("x", DataType::Double, true),
            StructField::new("amount", DataType::Decimal(10, 2), true),
            StructField::new("name", DataType::String, true),
            StructField::new("day", DataType::Date, true),
            StructField::new("ts", DataType::Timestamp, true),
            StructField::new("flag", DataType::Boolean, true),
            StructField::new(
                "s",
                DataType::Struct(Box::new(StructType::new(vec![StructField::new(
                    "inner",
                    DataType::Integer,
                    true,
                )]))),
                true,
            ),
        ])
    }

    fn batch() -> RecordBatch {
        let arrow_schema = Arc::new(schema().to_arrow().unwrap());
        let inner: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), Some(2), None, Some(4)]));
        let s = StructArray::new(
            match arrow_schema.field(8).data_type() {
                ArrowType::Struct(f) => f.clone(),
                _ => unreachable!(),
            },
            vec![inner],
            Some(NullBuffer::from(vec![true, false, true, true])),
        );
        RecordBatch::try_new(
            arrow_schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), Some(2), None, Some(4)])),
                Arc::new(Int32Array::from(vec![Some(10), Some(0), Some(-3), None])),
                Arc::new(Float64Array::from(vec![
                    Some(1.5),
                    Some(f64::NAN),
                    None,
                    Some(-0.0),
                ])),
                Arc::new(
                    Decimal128Array::from(vec![Some(1050), Some(-1), None, Some(0)])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
                Arc::new(StringArray::from(vec![
                    Some("Apple"),
                    Some("banana"),
                    None,
                    Some("Ärger"),
                ])),
                Arc::new(Date32Array::from(vec![
                    Some(19723),
                    Some(19724),
                    None,
                    Some(0),
                ])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        Some(1_704_103_200_000_000),
                        None,
                        Some(0),
                        Some(1),
                    ])
                    .with_timezone("UTC"),
                ),
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    Some(false),
                    None,
                    None,
                ])),
                Arc::new(s),
            ],
        )
        .unwrap()
    }

    /// The predicate's value per row: Some(true/false) or None for NULL.
    fn pred(text: &str) -> Vec<Option<bool>> {
        let b = bind_predicate(&parse_predicate(text).unwrap(), &schema())
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        evaluate_predicate(&b, &batch())
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .iter()
            .collect()
    }

    fn value(text: &str) -> ArrayRef {
        let b = bind(&parse_expression(text).unwrap(), &schema()).unwrap();
        evaluate(&b, &batch()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    const T: Option<bool> = Some(true);
    const F: Option<bool> = Some(false);
    const N: Option<bool> = None;

    #[test]
    fn comparisons_with_nulls() {
        assert_eq!(pred("id = 2"), [F, T, N, F]);
        assert_eq!(pred("id <> 2"), [T, F, N, T]);
        assert_eq!(pred("n >= 0"), [T, T, F, N]);
        assert_eq!(pred("n < 10000000000"), [T, T, T, N]);
        assert_eq!(pred("id = NULL"), [N, N, N, N]);
        assert_eq!(pred("amount > 1.5"), [T, F, N, F]);
        assert_eq!(pred("amount = 10.5"), [T, F, N, F]);
        assert_eq!(pred("day = '2024-01-01'"), [T, F, N, F]);
        assert_eq!(pred("day < TIMESTAMP '2024-01-01 00:00:01'"), [T, F, N, T]);
        assert_eq!(pred("ts >= '2024-01-01 10:00:00'"), [T, N, F, F]);
        assert_eq!(pred("ts > TIMESTAMP '1970-01-01 00:00:00Z'"), [T, N, F, T]);
        assert_eq!(pred("name = 'Apple'"), [T, F, N, F]);
        assert_eq!(pred("x > 1"), [T, T, N, F], "NaN is greater than all");
        assert_eq!(pred("x = CAST('NaN' AS DOUBLE)"), [F, T, N, F]);
        assert_eq!(
            pred("s.inner = 2"),
            [F, N, N, F],
            "field of a null struct is null"
        );
        assert_eq!(pred("s.inner IS NULL"), [F, T, T, F]);
        assert_eq!(pred("s IS NULL"), [F, T, F, F]);
    }

    #[test]
    fn three_valued_logic() {
        // flag: T, F, N, N; id = 2: F, T, N, F
        assert_eq!(pred("flag AND id = 2"), [F, F, N, F]);
        assert_eq!(pred("flag OR id = 2"), [T, T, N, N]);
        assert_eq!(pred("NOT flag"), [F, T, N, N]);
        assert_eq!(pred("flag OR TRUE"), [T, T, T, T]);
        assert_eq!(pred("flag AND FALSE"), [F, F, F, F]);
        assert_eq!(pred("NULL AND FALSE"), [F, F, F, F]);
        assert_eq!(pred("NULL OR FALSE"), [N, N, N, N]);
        assert_eq!(pred("flag IS NULL"), [F, F, T, T]);
        assert_eq!(pred("flag IS NOT NULL"), [T, T, F, F]);
        assert_eq!(pred("flag IS TRUE"), [T, F, F, F]);
        assert_eq!(pred("flag IS NOT FALSE"), [T, F, T, T]);
        assert_eq!(pred("1 = 1"), [T, T, T, T]);
    }

    #[test]
    fn in_between_like() {
        assert_eq!(pred("id IN (1, 4)"), [T, F, N, T]);
        assert_eq!(pred("id IN (1, NULL)"), [T, N, N, N]);
        assert_eq!(pred("id NOT IN (1, 4)"), [F, T, N, F]);
        assert_eq!(pred("id NOT IN (1, NULL)"), [F, N, N, N]);
        assert_eq!(pred("n BETWEEN 0 AND 10"), [T, T, F, N]);
        assert_eq!(pred("n NOT BETWEEN 0 AND 5"), [T, F, T, N]);
        assert_eq!(pred("name LIKE 'A%'"), [T, F, N, F]);
        assert_eq!(pred("name LIKE '_anana'"), [F, T, N, F]);
        assert_eq!(pred("name NOT LIKE '%a%'"), [T, F, N, T]);
        assert_eq!(pred("lower(name) LIKE 'a%'"), [T, F, N, F]);
        assert_eq!(pred("upper(name) = 'ÄRGER'"), [F, F, N, T]);
    }

    #[test]
    fn arithmetic_and_division_by_zero() {
        let v = value("id + n");
        let v = v.as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(
            v.iter().collect::<Vec<_>>(),
            [Some(11), Some(2), None, None]
        );
        let v = value("id / n");
        let v = v.as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(v.iter().collect::<Vec<_>>(), [Some(0.1), None, None, None]);
        let v = value("x / 0");
        assert_eq!(v.null_count(), 4, "float division by zero is null too");
        let v = value("x / x");
        assert!(v.is_null(3), "-0.0 divisor");
        let v = value("n % 3");
        let v = v.as_primitive::<arrow::datatypes::Int32Type>();
        assert_eq!(
            v.iter().collect::<Vec<_>>(),
            [Some(1), Some(0), Some(0), None]
        );
        let v = value("amount * 2");
        assert_eq!(v.data_type(), &ArrowType::Decimal128(21, 2));
        let v = value("amount / 4");
        assert_eq!(v.data_type(), &ArrowType::Decimal128(14, 6));
        let v = v.as_primitive::<arrow::datatypes::Decimal128Type>();
        assert_eq!(v.value(0), 2_625_000);
        let v = value("-n");
        let v = v.as_primitive::<arrow::datatypes::Int32Type>();
        assert_eq!(v.value(0), -10);
        let b = bind(&parse_expression("n * 2147483647").unwrap(), &schema()).unwrap();
        assert!(evaluate(&b, &batch()).is_err(), "overflow is an error");
        assert_eq!(pred("amount * 2 = 21"), [T, F, N, F]);
        assert_eq!(pred("n + 0.5 > 1"), [T, F, F, N]);
    }

    #[test]
    fn casts_functions_and_literals() {
        let v = value("CAST(n AS STRING)");
        assert_eq!(v.as_string::<i32>().value(0), "10");
        let v = value("CAST(name AS INT)");
        assert_eq!(v.null_count(), 4, "unparsable is null");
        let v = value("CAST(day AS TIMESTAMP)");
        assert_eq!(
            v.as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .value(0),
            19723 * 86_400_000_000
        );
        let v = value("coalesce(n, id, 99)");
        let v = v.as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(
            v.iter().collect::<Vec<_>>(),
            [Some(10), Some(0), Some(-3), Some(4)]
        );
        let v = value("coalesce(NULL, 7)");
        assert_eq!(v.len(), 4);
        let v = value("upper(name)");
        let v = v.as_string::<i32>();
        assert_eq!(
            v.iter().collect::<Vec<_>>(),
            [Some("APPLE"), Some("BANANA"), None, Some("ÄRGER")]
        );
        let v = value("'x'");
        assert_eq!(v.len(), 4);
    }

    #[test]
    fn strict_assignment_casts_fail_on_overflow() {
        let a =
            bind_assignment(&parse_assignment("n = id * 3000000000").unwrap(), &schema()).unwrap();
        assert!(evaluate(&a.value, &batch()).is_err());
        let a =
            bind_assignment(&parse_assignment("id = amount * 1.1").unwrap(), &schema()).unwrap();
        let v = evaluate(&a.value, &batch()).unwrap();
        let v = v.as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(
            v.iter().collect::<Vec<_>>(),
            [Some(11), Some(0), None, Some(0)]
        );
    }

    #[test]
    fn filter_keeps_only_true_rows() {
        let b = bind_predicate(&parse_predicate("flag OR id = 4").unwrap(), &schema()).unwrap();
        let out = filter_batch(&b, &batch()).unwrap();
        assert_eq!(out.num_rows(), 2);
        let empty = batch().slice(0, 0);
        assert_eq!(filter_batch(&b, &empty).unwrap().num_rows(), 0);
    }

    #[test]
    fn columns_are_found_case_insensitively_and_retagged() {
        let b = bind_predicate(&parse_predicate("ts > '1970-01-01'").unwrap(), &schema()).unwrap();
        let mut fields: Vec<arrow::datatypes::FieldRef> = batch().schema().fields().to_vec();
        fields[6] = Arc::new(arrow::datatypes::Field::new(
            "TS",
            ArrowType::Timestamp(
                arrow::datatypes::TimeUnit::Microsecond,
                Some("+00:00".into()),
            ),
            true,
        ));
        let mut columns = batch().columns().to_vec();
        columns[6] = Arc::new(
            columns[6]
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .clone()
                .with_timezone("+00:00"),
        );
        let other = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let out: Vec<_> = evaluate_predicate(&b, &other).unwrap().iter().collect();
        assert_eq!(out, [T, N, F, T]);
    }
}
