//! The unbound expression tree: what the parser produces and what callers build by hand.
//!
//! Column references are plain name paths here; [`super::bind`] resolves them against a
//! table schema, checks types and inserts the coercions.

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    new_null_array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, Int8Array, StringArray,
    TimestampMicrosecondArray,
};

use crate::error::Result;
use crate::protocol::DataType;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// An expression over the columns of one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A column, as a path of field names: `["a", "b"]` is the field `b` of struct `a`.
    Column(Vec<String>),
    Literal(Scalar),
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Not(Box<Expr>),
    /// Arithmetic negation, `-x`.
    Negative(Box<Expr>),
    IsNull(Box<Expr>),
    IsNotNull(Box<Expr>),
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    /// SQL `LIKE`: `%` matches any run of characters, `_` one character, `\` escapes.
    Like {
        expr: Box<Expr>,
        pattern: String,
        negated: bool,
    },
    Cast {
        expr: Box<Expr>,
        data_type: DataType,
    },
    Function {
        func: Function,
        args: Vec<Expr>,
    },
}

/// Binary operators, comparison, logical and arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
    Plus,
    Minus,
    Multiply,
    Divide,
    Modulo,
}

/// The scalar functions expressions may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    Lower,
    Upper,
    Coalesce,
}

/// A constant of a Delta primitive type.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// The untyped SQL `NULL`; binding gives it the type its context needs.
    Null,
    Boolean(bool),
    Byte(i8),
    Short(i16),
    Integer(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    /// Unscaled value, precision, scale: `Decimal(110, 3, 2)` is `1.10`.
    Decimal(i128, u8, i8),
    String(String),
    Binary(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since the epoch, UTC.
    Timestamp(i64),
    /// Microseconds since 1970-01-01 00:00:00, no time zone.
    TimestampNtz(i64),
}

impl BinaryOp {
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            Self::Eq | Self::NotEq | Self::Lt | Self::LtEq | Self::Gt | Self::GtEq
        )
    }

    pub fn is_logical(self) -> bool {
        matches!(self, Self::And | Self::Or)
    }

    pub fn is_arithmetic(self) -> bool {
        matches!(
            self,
            Self::Plus | Self::Minus | Self::Multiply | Self::Divide | Self::Modulo
        )
    }

    /// The comparison with its operands swapped: `a < b` is `b > a`.
    pub fn flip(self) -> Self {
        match self {
            Self::Lt => Self::Gt,
            Self::LtEq => Self::GtEq,
            Self::Gt => Self::Lt,
            Self::GtEq => Self::LtEq,
            other => other,
        }
    }

    /// The comparison that is true exactly when this one is false (for non-null operands).
    pub fn negate(self) -> Option<Self> {
        Some(match self {
            Self::Eq => Self::NotEq,
            Self::NotEq => Self::Eq,
            Self::Lt => Self::GtEq,
            Self::LtEq => Self::Gt,
            Self::Gt => Self::LtEq,
            Self::GtEq => Self::Lt,
            _ => return None,
        })
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::NotEq => "!=",
            Self::Lt => "<",
            Self::LtEq => "<=",
            Self::Gt => ">",
            Self::GtEq => ">=",
            Self::And => "AND",
            Self::Or => "OR",
            Self::Plus => "+",
            Self::Minus => "-",
            Self::Multiply => "*",
            Self::Divide => "/",
            Self::Modulo => "%",
        }
    }

    fn precedence(self) -> u8 {
        match self {
            Self::Or => 1,
            Self::And => 2,
            Self::Eq | Self::NotEq | Self::Lt | Self::LtEq | Self::Gt | Self::GtEq => 4,
            Self::Plus | Self::Minus => 5,
            Self::Multiply | Self::Divide | Self::Modulo => 6,
        }
    }
}

impl Function {
    pub fn name(self) -> &'static str {
        match self {
            Self::Lower => "lower",
            Self::Upper => "upper",
            Self::Coalesce => "coalesce",
        }
    }

    /// Looks a function up by its (case-insensitive) SQL name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "lower" | "lcase" => Some(Self::Lower),
            "upper" | "ucase" => Some(Self::Upper),
            "coalesce" => Some(Self::Coalesce),
            _ => None,
        }
    }
}

/// Builders for hand-made expressions.
impl Expr {
    /// A column by its dotted path (`"a.b"` is field `b` of struct `a`).
    pub fn column(path: &str) -> Expr {
        Expr::Column(path.split('.').map(str::to_string).collect())
    }

    pub fn lit(value: Scalar) -> Expr {
        Expr::Literal(value)
    }

    pub fn binary(self, op: BinaryOp, right: Expr) -> Expr {
        Expr::Binary {
            op,
            left: Box::new(self),
            right: Box::new(right),
        }
    }

    pub fn and(self, right: Expr) -> Expr {
        self.binary(BinaryOp::And, right)
    }

    pub fn or(self, right: Expr) -> Expr {
        self.binary(BinaryOp::Or, right)
    }

    pub fn eq(self, right: Expr) -> Expr {
        self.binary(BinaryOp::Eq, right)
    }

    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Expr {
        Expr::Not(Box::new(self))
    }

    pub fn is_null(self) -> Expr {
        Expr::IsNull(Box::new(self))
    }

    /// `AND` of all `exprs`; `TRUE` when there are none.
    pub fn and_all(exprs: impl IntoIterator<Item = Expr>) -> Expr {
        exprs
            .into_iter()
            .reduce(Expr::and)
            .unwrap_or(Expr::Literal(Scalar::Boolean(true)))
    }

    /// The expression with every column path replaced by `f(path)`.
    pub fn try_map_columns<E>(
        &self,
        f: &mut impl FnMut(&[String]) -> std::result::Result<Vec<String>, E>,
    ) -> std::result::Result<Expr, E> {
        let mut m = |x: &Expr| x.try_map_columns(f).map(Box::new);
        Ok(match self {
            Expr::Column(path) => Expr::Column(f(path)?),
            Expr::Literal(_) => self.clone(),
            Expr::Binary { op, left, right } => Expr::Binary {
                op: *op,
                left: m(left)?,
                right: m(right)?,
            },
            Expr::Not(x) => Expr::Not(m(x)?),
            Expr::Negative(x) => Expr::Negative(m(x)?),
            Expr::IsNull(x) => Expr::IsNull(m(x)?),
            Expr::IsNotNull(x) => Expr::IsNotNull(m(x)?),
            Expr::InList {
                expr,
                list,
                negated,
            } => Expr::InList {
                expr: m(expr)?,
                list: list
                    .iter()
                    .map(|x| x.try_map_columns(f))
                    .collect::<std::result::Result<_, _>>()?,
                negated: *negated,
            },
            Expr::Like {
                expr,
                pattern,
                negated,
            } => Expr::Like {
                expr: m(expr)?,
                pattern: pattern.clone(),
                negated: *negated,
            },
            Expr::Cast { expr, data_type } => Expr::Cast {
                expr: m(expr)?,
                data_type: data_type.clone(),
            },
            Expr::Function { func, args } => Expr::Function {
                func: *func,
                args: args
                    .iter()
                    .map(|x| x.try_map_columns(f))
                    .collect::<std::result::Result<_, _>>()?,
            },
        })
    }

    /// The column paths the expression reads, in order of appearance.
    pub fn columns(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let _ = self.try_map_columns(&mut |p: &[String]| {
            out.push(p.to_vec());
            Ok::<_, std::convert::Infallible>(p.to_vec())
        });
        out
    }

    fn precedence(&self) -> u8 {
        match self {
            Expr::Binary { op, .. } => op.precedence(),
            Expr::Not(_) => 3,
            Expr::IsNull(_) | Expr::IsNotNull(_) | Expr::InList { .. } | Expr::Like { .. } => 4,
            Expr::Negative(_) => 7,
            _ => 8,
        }
    }
}

impl Scalar {
    /// The Delta type of the value; `None` for the untyped `NULL`.
    pub fn data_type(&self) -> Option<DataType> {
        Some(match self {
            Scalar::Null => return None,
            Scalar::Boolean(_) => DataType::Boolean,
            Scalar::Byte(_) => DataType::Byte,
            Scalar::Short(_) => DataType::Short,
            Scalar::Integer(_) => DataType::Integer,
            Scalar::Long(_) => DataType::Long,
            Scalar::Float(_) => DataType::Float,
            Scalar::Double(_) => DataType::Double,
            Scalar::Decimal(_, p, s) => DataType::Decimal(*p, *s),
            Scalar::String(_) => DataType::String,
            Scalar::Binary(_) => DataType::Binary,
            Scalar::Date(_) => DataType::Date,
            Scalar::Timestamp(_) => DataType::Timestamp,
            Scalar::TimestampNtz(_) => DataType::TimestampNtz,
        })
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Scalar::Null)
    }

    /// A one-element Arrow array holding the value; `data_type` types a `NULL`.
    pub fn to_array(&self, data_type: &DataType) -> Result<ArrayRef> {
        Ok(match self {
            Scalar::Null => new_null_array(&data_type.to_arrow("literal")?, 1),
            Scalar::Boolean(v) => Arc::new(BooleanArray::from(vec![*v])),
            Scalar::Byte(v) => Arc::new(Int8Array::from(vec![*v])),
            Scalar::Short(v) => Arc::new(Int16Array::from(vec![*v])),
            Scalar::Integer(v) => Arc::new(Int32Array::from(vec![*v])),
            Scalar::Long(v) => Arc::new(Int64Array::from(vec![*v])),
            Scalar::Float(v) => Arc::new(Float32Array::from(vec![*v])),
            Scalar::Double(v) => Arc::new(Float64Array::from(vec![*v])),
            Scalar::Decimal(v, p, s) => {
                Arc::new(Decimal128Array::from(vec![*v]).with_precision_and_scale(*p, *s)?)
            }
            Scalar::String(v) => Arc::new(StringArray::from(vec![v.as_str()])),
            Scalar::Binary(v) => Arc::new(BinaryArray::from_vec(vec![v.as_slice()])),
            Scalar::Date(v) => Arc::new(Date32Array::from(vec![*v])),
            Scalar::Timestamp(v) => {
                Arc::new(TimestampMicrosecondArray::from(vec![*v]).with_timezone("UTC"))
            }
            Scalar::TimestampNtz(v) => Arc::new(TimestampMicrosecondArray::from(vec![*v])),
        })
    }

    /// The integral value of an integer scalar.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Scalar::Byte(v) => Some(i64::from(*v)),
            Scalar::Short(v) => Some(i64::from(*v)),
            Scalar::Integer(v) => Some(i64::from(*v)),
            Scalar::Long(v) => Some(*v),
            _ => None,
        }
    }

    /// The value converted to `target` without loss of information, if it can be.
    ///
    /// This is the coercion applied to literals compared with columns: `5` against an
    /// `integer` column, `1.5` against `decimal(10,2)`, `'2024-01-01'` against a `date`.
    pub fn coerce_exact(&self, target: &DataType) -> Option<Scalar> {
        if self.data_type().as_ref() == Some(target) {
            return Some(self.clone());
        }
        match (self, target) {
            (Scalar::Null, _) => Some(Scalar::Null),
            (Scalar::String(s), t) => parse_typed(s, t),
            (Scalar::Timestamp(v), DataType::TimestampNtz) => Some(Scalar::TimestampNtz(*v)),
            (Scalar::TimestampNtz(v), DataType::Timestamp) => Some(Scalar::Timestamp(*v)),
            (Scalar::Date(d), DataType::Timestamp) => {
                Some(Scalar::Timestamp(i64::from(*d) * MICROS_PER_DAY))
            }
            (Scalar::Date(d), DataType::TimestampNtz) => {
                Some(Scalar::TimestampNtz(i64::from(*d) * MICROS_PER_DAY))
            }
            (Scalar::Float(f), DataType::Double) => Some(Scalar::Double(f64::from(*f))),
            (Scalar::Double(f), DataType::Float) => {
                let narrow = *f as f32;
                (f64::from(narrow) == *f || f.is_nan()).then_some(Scalar::Float(narrow))
            }
            (Scalar::Decimal(v, _, s), t) => decimal_to(*v, *s, t, true),
            (v, t) => {
                let i = v.as_i64()?;
                integer_to(i, t)
            }
        }
    }

    /// The value converted to `target` as a widening cast does (integers and decimals to
    /// floating point may round); `None` when no such conversion applies.
    pub fn cast_widening(&self, target: &DataType) -> Option<Scalar> {
        if let Some(exact) = self.coerce_exact(target) {
            return Some(exact);
        }
        match (self, target) {
            (Scalar::Decimal(v, _, s), DataType::Double | DataType::Float) => {
                decimal_to(*v, *s, target, false)
            }
            (v, DataType::Double) => v.as_i64().map(|i| Scalar::Double(i as f64)),
            (v, DataType::Float) => v.as_i64().map(|i| Scalar::Float(i as f32)),
            _ => None,
        }
    }
}

fn integer_to(i: i64, t: &DataType) -> Option<Scalar> {
    Some(match t {
        DataType::Byte => Scalar::Byte(i8::try_from(i).ok()?),
        DataType::Short => Scalar::Short(i16::try_from(i).ok()?),
        DataType::Integer => Scalar::Integer(i32::try_from(i).ok()?),
        DataType::Long => Scalar::Long(i),
        DataType::Decimal(p, s) => {
            let v = i128::from(i).checked_mul(10i128.checked_pow(u32::try_from(*s).ok()?)?)?;
            fits_precision(v, *p).then_some(Scalar::Decimal(v, *p, *s))?
        }
        DataType::Double => {
            let f = i as f64;
            (f as i64 == i && f.abs() < 9.0e15).then_some(Scalar::Double(f))?
        }
        DataType::Float => {
            let f = i as f32;
            (f as i64 == i && f.abs() < 1.6e7).then_some(Scalar::Float(f))?
        }
        _ => return None,
    })
}

fn decimal_to(v: i128, scale: i8, t: &DataType, exact: bool) -> Option<Scalar> {
    let pow = |n: i32| 10i128.checked_pow(u32::try_from(n).ok()?);
    match t {
        DataType::Decimal(p2, s2) => {
            let diff = i32::from(*s2) - i32::from(scale);
            let out = if diff >= 0 {
                v.checked_mul(pow(diff)?)?
            } else {
                let div = pow(-diff)?;
                if v % div != 0 {
                    return None;
                }
                v / div
            };
            fits_precision(out, *p2).then_some(Scalar::Decimal(out, *p2, *s2))
        }
        // Through the text, so the result is the correctly rounded double.
        DataType::Double => Some(Scalar::Double(format_decimal_text(v, scale).parse().ok()?)),
        DataType::Float => {
            let f: f64 = format_decimal_text(v, scale).parse().ok()?;
            let narrow = f as f32;
            (!exact || f64::from(narrow) == f).then_some(Scalar::Float(narrow))
        }
        _ => {
            let div = pow(i32::from(scale))?;
            if v % div != 0 {
                return None;
            }
            integer_to(i64::try_from(v / div).ok()?, t)
        }
    }
}

pub(crate) fn fits_precision(v: i128, precision: u8) -> bool {
    match 10i128.checked_pow(u32::from(precision)) {
        Some(limit) => v.unsigned_abs() < limit.unsigned_abs(),
        None => true,
    }
}

/// Parses a string as a literal of `t` (Spark's implicit cast of string literals).
pub(crate) fn parse_typed(s: &str, t: &DataType) -> Option<Scalar> {
    let s = s.trim();
    Some(match t {
        DataType::String => Scalar::String(s.to_string()),
        DataType::Binary => Scalar::Binary(s.as_bytes().to_vec()),
        DataType::Boolean => match s.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" => Scalar::Boolean(true),
            "false" | "f" | "no" | "n" | "0" => Scalar::Boolean(false),
            _ => return None,
        },
        DataType::Date => Scalar::Date(parse_date(s)?),
        DataType::Timestamp => Scalar::Timestamp(parse_timestamp(s, true)?),
        DataType::TimestampNtz => Scalar::TimestampNtz(parse_timestamp(s, false)?),
        DataType::Float | DataType::Double => {
            let f: f64 = s.parse().ok()?;
            if matches!(t, DataType::Float) {
                Scalar::Float(f as f32)
            } else {
                Scalar::Double(f)
            }
        }
        DataType::Byte | DataType::Short | DataType::Integer | DataType::Long => {
            integer_to(s.parse().ok()?, t)?
        }
        DataType::Decimal(_, _) => {
            let (v, _, scale) = parse_decimal_text(s)?;
            decimal_to(v, scale, t, true)?
        }
        _ => return None,
    })
}

/// `YYYY-MM-DD` (also `YYYY-M-D`, and with a time that is ignored) to days since the
/// epoch.
pub(crate) fn parse_date(s: &str) -> Option<i32> {
    // Like Spark, a time after the date is ignored: '2024-01-01 10:00' is 2024-01-01.
    let s = s.trim();
    let date = s.split([' ', 'T']).next().unwrap_or(s);
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from((d - epoch).num_days()).ok()
}

/// A timestamp in ISO-8601 / SQL form to microseconds. With an offset or `Z` the
/// instant is converted to UTC; without one the wall clock is taken as UTC. A bare date
/// means midnight. `with_zone == false` (timestamp_ntz) rejects offsets.
pub(crate) fn parse_timestamp(s: &str, with_zone: bool) -> Option<i64> {
    let s = s.trim();
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(s) {
        return with_zone.then(|| dt.timestamp_micros());
    }
    let (naive, offset) = split_offset(s);
    if offset.is_some() && !with_zone {
        return None;
    }
    let naive = naive.trim().replacen('T', " ", 1);
    let wall = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(&naive, f).ok())
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(&naive, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })?;
    let micros = wall.and_utc().timestamp_micros();
    Some(micros - offset.unwrap_or(0) * 1_000_000)
}

/// Splits a trailing `Z`, `UTC`, `+hh:mm`, `+hhmm` or `+hh` offset (in seconds) off a
/// timestamp text.
fn split_offset(s: &str) -> (&str, Option<i64>) {
    if let Some(rest) = s.strip_suffix('Z').or_else(|| s.strip_suffix(" UTC")) {
        return (rest, Some(0));
    }
    // The offset sign comes after the time part, so only look past the date.
    let Some(time_start) = s.find([' ', 'T']) else {
        return (s, None);
    };
    let Some(pos) = s[time_start..].rfind(['+', '-']).map(|p| p + time_start) else {
        return (s, None);
    };
    let sign = if s[pos..].starts_with('-') { -1 } else { 1 };
    let digits: String = s[pos + 1..].chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) || digits.len() > 4 {
        return (s, None);
    }
    let (h, m) = match digits.len() {
        1 | 2 => (digits.parse::<i64>().unwrap_or(0), 0),
        _ => {
            let (h, m) = digits.split_at(digits.len() - 2);
            (h.parse().unwrap_or(0), m.parse().unwrap_or(0))
        }
    };
    (&s[..pos], Some(sign * (h * 3600 + m * 60)))
}

/// Parses decimal text like `-12.340` into (unscaled, precision, scale).
pub(crate) fn parse_decimal_text(s: &str) -> Option<(i128, u8, i8)> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let int = int.trim_start_matches('0');
    let scale = i8::try_from(frac.len()).ok()?;
    let precision = u8::try_from((int.len() + frac.len()).max(1)).ok()?;
    if precision > 38 {
        return None;
    }
    let all = format!("{int}{frac}");
    let v: i128 = if all.is_empty() { 0 } else { all.parse().ok()? };
    Some((if neg { -v } else { v }, precision, scale))
}

pub(crate) fn format_decimal_text(v: i128, scale: i8) -> String {
    crate::protocol::partition::format_decimal(v, scale)
}

fn format_timestamp(micros: i64, zone: bool) -> String {
    let Some(dt) = chrono::DateTime::from_timestamp_micros(micros) else {
        return micros.to_string();
    };
    let frac = if micros.rem_euclid(1_000_000) == 0 {
        ""
    } else {
        "%.6f"
    };
    let text = dt.format(&format!("%Y-%m-%d %H:%M:%S{frac}")).to_string();
    if zone {
        format!("{text}Z")
    } else {
        text
    }
}

/// A SQL type name for `CAST(... AS type)` that the parser reads back.
pub(crate) fn sql_type_name(t: &DataType) -> String {
    match t {
        DataType::Byte => "TINYINT".into(),
        DataType::Short => "SMALLINT".into(),
        DataType::Integer => "INT".into(),
        DataType::Long => "BIGINT".into(),
        DataType::Float => "FLOAT".into(),
        DataType::Double => "DOUBLE".into(),
        DataType::Decimal(p, s) => format!("DECIMAL({p},{s})"),
        DataType::String => "STRING".into(),
        DataType::Binary => "BINARY".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Date => "DATE".into(),
        DataType::Timestamp => "TIMESTAMP".into(),
        DataType::TimestampNtz => "TIMESTAMP_NTZ".into(),
        other => other
            .primitive_name()
            .unwrap_or_else(|| format!("{other:?}")),
    }
}

fn is_plain_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(
            s.to_ascii_uppercase().as_str(),
            "AND" | "OR" | "NOT" | "NULL" | "TRUE" | "FALSE" | "IS" | "IN" | "LIKE" | "BETWEEN"
        )
}

/// Writes a column path, quoting parts that are not plain identifiers.
pub(crate) fn write_path(f: &mut fmt::Formatter<'_>, path: &[String]) -> fmt::Result {
    for (i, part) in path.iter().enumerate() {
        if i > 0 {
            f.write_str(".")?;
        }
        if is_plain_identifier(part) {
            f.write_str(part)?;
        } else {
            write!(f, "`{}`", part.replace('`', "``"))?;
        }
    }
    Ok(())
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Null => f.write_str("NULL"),
            Scalar::Boolean(true) => f.write_str("TRUE"),
            Scalar::Boolean(false) => f.write_str("FALSE"),
            Scalar::Byte(v) => write!(f, "CAST({v} AS TINYINT)"),
            Scalar::Short(v) => write!(f, "CAST({v} AS SMALLINT)"),
            Scalar::Integer(v) => write!(f, "{v}"),
            Scalar::Long(v) if i32::try_from(*v).is_ok() => write!(f, "CAST({v} AS BIGINT)"),
            Scalar::Long(v) => write!(f, "{v}"),
            Scalar::Float(v) if v.is_finite() => write!(f, "CAST({v:E} AS FLOAT)"),
            Scalar::Float(v) => write!(f, "CAST('{v}' AS FLOAT)"),
            Scalar::Double(v) if v.is_finite() => write!(f, "{v:E}"),
            Scalar::Double(v) => write!(f, "CAST('{v}' AS DOUBLE)"),
            Scalar::Decimal(v, p, s) => {
                let text = format_decimal_text(*v, *s);
                match parse_decimal_text(&text) {
                    Some((_, p2, s2)) if p2 == *p && s2 == *s => f.write_str(&text),
                    _ => write!(f, "CAST({text} AS DECIMAL({p},{s}))"),
                }
            }
            Scalar::String(s) => f.write_str(&quote(s)),
            Scalar::Binary(b) => {
                f.write_str("X'")?;
                for byte in b {
                    write!(f, "{byte:02X}")?;
                }
                f.write_str("'")
            }
            Scalar::Date(d) => write!(f, "DATE '{}'", crate::protocol::partition::format_date(*d)),
            Scalar::Timestamp(us) => write!(f, "TIMESTAMP '{}'", format_timestamp(*us, true)),
            Scalar::TimestampNtz(us) => {
                write!(f, "TIMESTAMP_NTZ '{}'", format_timestamp(*us, false))
            }
        }
    }
}

impl fmt::Display for BinaryOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A child is parenthesized when it binds less tightly than its parent.
        let child = |f: &mut fmt::Formatter<'_>, e: &Expr, min: u8| {
            if e.precedence() < min {
                write!(f, "({e})")
            } else {
                write!(f, "{e}")
            }
        };
        let p = self.precedence();
        match self {
            Expr::Column(path) => write_path(f, path),
            Expr::Literal(v) => write!(f, "{v}"),
            Expr::Binary { op, left, right } => {
                child(f, left, p)?;
                write!(f, " {op} ")?;
                // Left-associative: an equal-precedence right child needs parentheses.
                child(f, right, p + 1)
            }
            Expr::Not(e) => {
                f.write_str("NOT ")?;
                child(f, e, p)
            }
            Expr::Negative(e) => {
                f.write_str("-")?;
                child(f, e, p + 1)
            }
            Expr::IsNull(e) => {
                child(f, e, p + 1)?;
                f.write_str(" IS NULL")
            }
            Expr::IsNotNull(e) => {
                child(f, e, p + 1)?;
                f.write_str(" IS NOT NULL")
            }
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                child(f, expr, p + 1)?;
                f.write_str(if *negated { " NOT IN (" } else { " IN (" })?;
                for (i, e) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str(")")
            }
            Expr::Like {
                expr,
                pattern,
                negated,
            } => {
                child(f, expr, p + 1)?;
                let not = if *negated { " NOT" } else { "" };
                write!(f, "{not} LIKE {}", quote(pattern))
            }
            Expr::Cast { expr, data_type } => {
                write!(f, "CAST({expr} AS {})", sql_type_name(data_type))
            }
            Expr::Function { func, args } => {
                write!(f, "{}(", func.name())?;
                for (i, e) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str(")")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parenthesizes_by_precedence() {
        let e = Expr::column("a")
            .eq(Expr::lit(Scalar::Integer(1)))
            .or(Expr::column("b").is_null())
            .and(Expr::column("my col").not());
        assert_eq!(e.to_string(), "(a = 1 OR b IS NULL) AND NOT `my col`");
        let arith = Expr::column("x").binary(
            BinaryOp::Minus,
            Expr::column("y").binary(BinaryOp::Minus, Expr::lit(Scalar::Integer(2))),
        );
        assert_eq!(arith.to_string(), "x - (y - 2)");
    }

    #[test]
    fn literals_print_as_sql() {
        let cases = [
            (Scalar::Decimal(110, 3, 2), "1.10"),
            (Scalar::Decimal(5, 10, 2), "CAST(0.05 AS DECIMAL(10,2))"),
            (Scalar::String("it's".into()), "'it''s'"),
            (Scalar::Date(19723), "DATE '2024-01-01'"),
            (
                Scalar::Timestamp(1_704_103_200_000_000),
                "TIMESTAMP '2024-01-01 10:00:00Z'",
            ),
            (
                Scalar::TimestampNtz(1),
                "TIMESTAMP_NTZ '1970-01-01 00:00:00.000001'",
            ),
            (Scalar::Binary(vec![1, 255]), "X'01FF'"),
            (Scalar::Double(1.5), "1.5E0"),
            (Scalar::Long(7), "CAST(7 AS BIGINT)"),
        ];
        for (v, text) in cases {
            assert_eq!(v.to_string(), text);
        }
    }

    #[test]
    fn exact_coercions() {
        assert_eq!(
            Scalar::Long(5).coerce_exact(&DataType::Integer),
            Some(Scalar::Integer(5))
        );
        assert_eq!(Scalar::Long(1 << 40).coerce_exact(&DataType::Integer), None);
        assert_eq!(
            Scalar::Decimal(110, 3, 2).coerce_exact(&DataType::Decimal(10, 3)),
            Some(Scalar::Decimal(1100, 10, 3))
        );
        assert_eq!(
            Scalar::Decimal(115, 3, 2).coerce_exact(&DataType::Decimal(10, 1)),
            None
        );
        assert_eq!(
            Scalar::String("2024-01-01".into()).coerce_exact(&DataType::Date),
            Some(Scalar::Date(19723))
        );
        assert_eq!(
            Scalar::String("2024-01-01 12:00:00+02:00".into()).coerce_exact(&DataType::Timestamp),
            Some(Scalar::Timestamp(1_704_103_200_000_000))
        );
        assert_eq!(
            Scalar::String("2024-01-01T10:00:00.5Z".into()).coerce_exact(&DataType::Timestamp),
            Some(Scalar::Timestamp(1_704_103_200_500_000))
        );
        assert_eq!(
            Scalar::String("2024-01-01 10:00:00+02:00".into())
                .coerce_exact(&DataType::TimestampNtz),
            None
        );
        assert_eq!(
            Scalar::String("2024-13-01".into()).coerce_exact(&DataType::Date),
            None
        );
        assert_eq!(parse_decimal_text("0.05"), Some((5, 2, 2)));
        assert_eq!(parse_decimal_text("-12.340"), Some((-12340, 5, 3)));
    }
}
