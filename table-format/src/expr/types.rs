//! The type rules of expressions: which types widen to which, and the result types of
//! arithmetic (Spark's rules, with Arrow's for decimal results).

use super::ast::BinaryOp;
use crate::error::{Error, Result};
use crate::protocol::DataType;

pub(crate) fn is_integral(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Byte | DataType::Short | DataType::Integer | DataType::Long
    )
}

pub(crate) fn is_numeric(t: &DataType) -> bool {
    is_integral(t)
        || matches!(
            t,
            DataType::Float | DataType::Double | DataType::Decimal(..)
        )
}

pub(crate) fn is_datetime(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Date | DataType::Timestamp | DataType::TimestampNtz
    )
}

fn integral_rank(t: &DataType) -> u8 {
    match t {
        DataType::Byte => 1,
        DataType::Short => 2,
        DataType::Integer => 3,
        _ => 4,
    }
}

/// An integral type as the decimal that holds all its values (Spark's rule).
fn as_decimal(t: &DataType) -> Option<(u8, i8)> {
    Some(match t {
        DataType::Byte => (3, 0),
        DataType::Short => (5, 0),
        DataType::Integer => (10, 0),
        DataType::Long => (20, 0),
        DataType::Decimal(p, s) => (*p, *s),
        _ => return None,
    })
}

/// The narrowest type both `a` and `b` widen to, if any.
pub(crate) fn common_type(a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType as T;
    if a == b {
        return Some(a.clone());
    }
    Some(match (a, b) {
        (T::Date, T::Timestamp) | (T::Timestamp, T::Date) => T::Timestamp,
        (T::Date, T::TimestampNtz) | (T::TimestampNtz, T::Date) => T::TimestampNtz,
        _ if !is_numeric(a) || !is_numeric(b) => return None,
        (T::Double, _) | (_, T::Double) => T::Double,
        (T::Float, T::Decimal(..)) | (T::Decimal(..), T::Float) => T::Double,
        (T::Float, _) | (_, T::Float) => T::Float,
        (T::Decimal(..), _) | (_, T::Decimal(..)) => {
            let ((p1, s1), (p2, s2)) = (as_decimal(a)?, as_decimal(b)?);
            let scale = s1.max(s2);
            let range = (p1 as i16 - s1 as i16).max(p2 as i16 - s2 as i16);
            let precision = (range + scale as i16).min(38) as u8;
            T::Decimal(precision, scale.min(precision as i8))
        }
        _ if integral_rank(a) >= integral_rank(b) => a.clone(),
        _ => b.clone(),
    })
}

/// Operand and result types of arithmetic: `(left, right, result)`. Integer division
/// yields a double (as in Spark); decimal results follow Arrow's kernels.
#[allow(clippy::type_complexity)]
pub(crate) fn arithmetic_types(
    op: BinaryOp,
    a: &DataType,
    b: &DataType,
) -> Option<Result<(DataType, DataType, DataType)>> {
    use DataType as T;
    if !is_numeric(a) || !is_numeric(b) {
        return None;
    }
    let common = common_type(a, b)?;
    let floating = matches!(common, T::Float | T::Double);
    if op == BinaryOp::Divide && (floating || is_integral(&common)) {
        return Some(Ok((T::Double, T::Double, T::Double)));
    }
    if !matches!(common, T::Decimal(..)) {
        return Some(Ok((common.clone(), common.clone(), common)));
    }
    let ((p1, s1), (p2, s2)) = (as_decimal(a)?, as_decimal(b)?);
    let (p1, s1, p2, s2) = (p1 as i16, s1 as i16, p2 as i16, s2 as i16);
    let (p, s) = match op {
        BinaryOp::Plus | BinaryOp::Minus => {
            let s = s1.max(s2);
            ((s + (p1 - s1).max(p2 - s2) + 1).min(38), s)
        }
        BinaryOp::Multiply => {
            let s = s1 + s2;
            if s > 38 {
                return Some(Err(Error::ExpressionType(format!(
                    "the product of decimal({p1},{s1}) and decimal({p2},{s2}) needs scale {s}, \
                     more than 38"
                ))));
            }
            ((p1 + p2 + 1).min(38), s)
        }
        BinaryOp::Divide => {
            let s = (s1 + 4).min(38);
            let mul_pow = s - s1 + s2;
            ((mul_pow + p1).clamp(s.max(1), 38), s)
        }
        _ => {
            let s = s1.max(s2);
            ((s + (p1 - s1).min(p2 - s2)).clamp(1, 38), s)
        }
    };
    Some(Ok((
        T::Decimal(p1 as u8, s1 as i8),
        T::Decimal(p2 as u8, s2 as i8),
        T::Decimal(p as u8, s as i8),
    )))
}

/// A type's name in messages: the Delta name (`long`, `decimal(10,2)`, `struct`).
pub(crate) fn type_name(t: &DataType) -> String {
    match t {
        DataType::Struct(_) => "struct".into(),
        DataType::Array(_) => "array".into(),
        DataType::Map(_) => "map".into(),
        other => other.primitive_name().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataType as T;

    #[test]
    fn widening() {
        assert_eq!(common_type(&T::Byte, &T::Long), Some(T::Long));
        assert_eq!(common_type(&T::Integer, &T::Float), Some(T::Float));
        assert_eq!(common_type(&T::Float, &T::Decimal(5, 2)), Some(T::Double));
        assert_eq!(
            common_type(&T::Integer, &T::Decimal(5, 2)),
            Some(T::Decimal(12, 2))
        );
        assert_eq!(
            common_type(&T::Decimal(38, 0), &T::Decimal(10, 5)),
            Some(T::Decimal(38, 5))
        );
        assert_eq!(common_type(&T::Date, &T::Timestamp), Some(T::Timestamp));
        assert_eq!(common_type(&T::String, &T::Date), None);
        assert_eq!(common_type(&T::Timestamp, &T::TimestampNtz), None);
        assert_eq!(common_type(&T::Boolean, &T::Integer), None);
    }

    #[test]
    fn arithmetic_results() {
        let r = |op, a, b| arithmetic_types(op, &a, &b).map(|r| r.map(|t| t.2).ok());
        assert_eq!(r(BinaryOp::Plus, T::Integer, T::Long), Some(Some(T::Long)));
        assert_eq!(
            r(BinaryOp::Divide, T::Integer, T::Long),
            Some(Some(T::Double))
        );
        assert_eq!(
            r(BinaryOp::Multiply, T::Decimal(10, 2), T::Decimal(3, 1)),
            Some(Some(T::Decimal(14, 3)))
        );
        assert_eq!(r(BinaryOp::Plus, T::String, T::Long), None);
        assert_eq!(
            r(BinaryOp::Multiply, T::Decimal(38, 20), T::Decimal(38, 20)),
            Some(None),
            "scale over 38"
        );
    }
}
