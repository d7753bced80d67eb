//! SQL-like text to [`Expr`], through the `sqlparser` crate.
//!
//! The generic dialect is used: identifiers may be quoted with double quotes or
//! backticks, `a.b` names field `b` of struct column `a`, strings use single quotes.
//! Anything outside the supported subset is refused with an "unsupported expression"
//! error naming the construct.

use sqlparser::ast::{
    self as sql, AccessExpr, CastKind, DataType as SqlType, ExactNumberInfo, FunctionArg,
    FunctionArgExpr, FunctionArguments, TimezoneInfo, UnaryOperator, Value,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use super::ast::{
    parse_date, parse_decimal_text, parse_timestamp, BinaryOp, Expr, Function, Scalar,
};
use crate::error::{Error, Result};
use crate::protocol::DataType;

/// `column = expression`, one item of an UPDATE's SET list.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// The target column, as a path of field names.
    pub column: Vec<String>,
    pub value: Expr,
}

/// Parses a predicate, e.g. `amount > 10 AND day = DATE '2024-01-01'`.
///
/// Types are not checked here; [`super::bind_predicate`] checks that the result is
/// boolean.
pub fn parse_predicate(text: &str) -> Result<Expr> {
    parse_expression(text)
}

/// Parses a value expression, e.g. `amount * 1.1` or `lower(name)`.
pub fn parse_expression(text: &str) -> Result<Expr> {
    let mut parser = parser_for(text)?;
    let expr = parser.parse_expr().map_err(|e| syntax(text, e))?;
    expect_end(&parser, text)?;
    convert(expr)
}

/// Parses one assignment of an UPDATE, `col = expr` (the column may be nested or quoted).
pub fn parse_assignment(text: &str) -> Result<Assignment> {
    let mut parser = parser_for(text)?;
    let assignment = parser.parse_assignment().map_err(|e| syntax(text, e))?;
    expect_end(&parser, text)?;
    let column = match assignment.target {
        sql::AssignmentTarget::ColumnName(name) => object_name_path(&name)?,
        sql::AssignmentTarget::Tuple(_) => {
            return Err(unsupported("tuple assignment", &text.to_string()))
        }
    };
    Ok(Assignment {
        column,
        value: convert(assignment.value)?,
    })
}

fn parser_for(text: &str) -> Result<Parser<'static>> {
    if text.trim().is_empty() {
        return Err(Error::InvalidExpression("the expression is empty".into()));
    }
    static DIALECT: GenericDialect = GenericDialect {};
    Parser::new(&DIALECT)
        .try_with_sql(text)
        .map_err(|e| syntax(text, e))
}

fn expect_end(parser: &Parser<'_>, text: &str) -> Result<()> {
    let next = parser.peek_token();
    if next.token == Token::EOF {
        Ok(())
    } else {
        Err(Error::InvalidExpression(format!(
            "cannot parse `{text}`: unexpected `{}` after the end of the expression",
            next.token
        )))
    }
}

fn syntax(text: &str, e: sqlparser::parser::ParserError) -> Error {
    let reason = e.to_string();
    let reason = reason
        .strip_prefix("sql parser error: ")
        .unwrap_or(&reason)
        .to_string();
    Error::InvalidExpression(format!("cannot parse `{text}`: {reason}"))
}

fn unsupported(what: &str, expr: &dyn std::fmt::Display) -> Error {
    Error::InvalidExpression(format!("unsupported expression: {what} in `{expr}`"))
}

fn boxed(e: sql::Expr) -> Result<Box<Expr>> {
    Ok(Box::new(convert(e)?))
}

/// Converts a sqlparser expression into ours.
fn convert(e: sql::Expr) -> Result<Expr> {
    Ok(match e {
        sql::Expr::Identifier(ident) => Expr::Column(vec![ident.value]),
        sql::Expr::CompoundIdentifier(idents) => {
            Expr::Column(idents.into_iter().map(|i| i.value).collect())
        }
        sql::Expr::CompoundFieldAccess { root, access_chain } => {
            let mut path = match convert(*root.clone())? {
                Expr::Column(path) => path,
                _ => return Err(unsupported("field access on a non-column", &root)),
            };
            for access in access_chain {
                match access {
                    AccessExpr::Dot(sql::Expr::Identifier(ident)) => path.push(ident.value),
                    other => return Err(unsupported("subscript", &other)),
                }
            }
            Expr::Column(path)
        }
        sql::Expr::Nested(inner) => convert(*inner)?,
        sql::Expr::Value(v) => Expr::Literal(value(v.value)?),
        sql::Expr::TypedString(t) => {
            let text =
                t.value.value.clone().into_string().ok_or_else(|| {
                    unsupported("a typed literal without a string", &t.value.value)
                })?;
            Expr::Literal(typed_string(&t.data_type, &text)?)
        }
        sql::Expr::IsNull(e) => Expr::IsNull(boxed(*e)?),
        sql::Expr::IsNotNull(e) => Expr::IsNotNull(boxed(*e)?),
        // `x IS TRUE` is never null: coalesce(x, FALSE); the others follow.
        sql::Expr::IsTrue(e) => coalesce(convert(*e)?, false),
        sql::Expr::IsNotTrue(e) => coalesce(convert(*e)?, false).not(),
        sql::Expr::IsFalse(e) => coalesce(convert(*e)?.not(), false),
        sql::Expr::IsNotFalse(e) => coalesce(convert(*e)?, true),
        sql::Expr::InList {
            expr,
            list,
            negated,
        } => Expr::InList {
            expr: boxed(*expr)?,
            list: list.into_iter().map(convert).collect::<Result<_>>()?,
            negated,
        },
        sql::Expr::Between {
            expr,
            negated,
            low,
            high,
        } => {
            let expr = convert(*expr)?;
            let (low, high) = (convert(*low)?, convert(*high)?);
            if negated {
                expr.clone()
                    .binary(BinaryOp::Lt, low)
                    .or(expr.binary(BinaryOp::Gt, high))
            } else {
                expr.clone()
                    .binary(BinaryOp::GtEq, low)
                    .and(expr.binary(BinaryOp::LtEq, high))
            }
        }
        sql::Expr::BinaryOp { left, op, right } => {
            let op = match op {
                sql::BinaryOperator::Eq => BinaryOp::Eq,
                sql::BinaryOperator::NotEq => BinaryOp::NotEq,
                sql::BinaryOperator::Lt => BinaryOp::Lt,
                sql::BinaryOperator::LtEq => BinaryOp::LtEq,
                sql::BinaryOperator::Gt => BinaryOp::Gt,
                sql::BinaryOperator::GtEq => BinaryOp::GtEq,
                sql::BinaryOperator::And => BinaryOp::And,
                sql::BinaryOperator::Or => BinaryOp::Or,
                sql::BinaryOperator::Plus => BinaryOp::Plus,
                sql::BinaryOperator::Minus => BinaryOp::Minus,
                sql::BinaryOperator::Multiply => BinaryOp::Multiply,
                sql::BinaryOperator::Divide => BinaryOp::Divide,
                sql::BinaryOperator::Modulo => BinaryOp::Modulo,
                other => return Err(unsupported(&format!("operator `{other}`"), &other)),
            };
            convert(*left)?.binary(op, convert(*right)?)
        }
        sql::Expr::UnaryOp { op, expr } => match op {
            UnaryOperator::Not | UnaryOperator::BangNot => Expr::Not(boxed(*expr)?),
            UnaryOperator::Plus => convert(*expr)?,
            UnaryOperator::Minus => match *expr {
                // Fold `-5` into the literal so `-2147483648` is still an integer.
                sql::Expr::Value(sql::ValueWithSpan {
                    value: Value::Number(n, _),
                    ..
                }) => Expr::Literal(number(&format!("-{n}"))?),
                other => Expr::Negative(boxed(other)?),
            },
            other => return Err(unsupported(&format!("operator `{other}`"), &other)),
        },
        sql::Expr::Like {
            negated,
            any,
            expr,
            pattern,
            escape_char,
        } => {
            let whole = sql::Expr::Like {
                negated,
                any,
                expr: expr.clone(),
                pattern: pattern.clone(),
                escape_char: escape_char.clone(),
            };
            if any {
                return Err(unsupported("LIKE ANY", &whole));
            }
            if let Some(esc) = escape_char {
                let is_backslash = matches!(&*esc, sql::Expr::Value(v)
                    if v.value.clone().into_string().as_deref() == Some("\\"));
                if !is_backslash {
                    return Err(unsupported("an ESCAPE character other than `\\`", &whole));
                }
            }
            let pattern = match *pattern {
                sql::Expr::Value(v) => v.value.into_string(),
                _ => None,
            }
            .ok_or_else(|| unsupported("a LIKE pattern that is not a string literal", &whole))?;
            Expr::Like {
                expr: boxed(*expr)?,
                pattern,
                negated,
            }
        }
        sql::Expr::Cast {
            kind,
            expr,
            data_type,
            format,
        } => {
            if format.is_some() {
                return Err(unsupported("CAST ... FORMAT", &data_type));
            }
            if !matches!(
                kind,
                CastKind::Cast | CastKind::TryCast | CastKind::SafeCast | CastKind::DoubleColon
            ) {
                return Err(unsupported("this cast syntax", &data_type));
            }
            let data_type = delta_type(&data_type)?;
            let expr = convert(*expr)?;
            // Fold casts of literals that convert exactly, e.g. `CAST(5 AS TINYINT)`.
            match &expr {
                Expr::Literal(v) if !v.is_null() => match v.coerce_exact(&data_type) {
                    Some(folded) => Expr::Literal(folded),
                    None => Expr::Cast {
                        expr: Box::new(expr),
                        data_type,
                    },
                },
                _ => Expr::Cast {
                    expr: Box::new(expr),
                    data_type,
                },
            }
        }
        sql::Expr::Function(f) => function(f)?,
        other => {
            let kind = format!("{other:?}");
            let kind = kind
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or("expression")
                .to_string();
            return Err(unsupported(&kind, &other));
        }
    })
}

fn coalesce(e: Expr, default: bool) -> Expr {
    Expr::Function {
        func: Function::Coalesce,
        args: vec![e, Expr::Literal(Scalar::Boolean(default))],
    }
}

fn function(f: sql::Function) -> Result<Expr> {
    let name = object_name_path(&f.name)?.join(".");
    let func =
        Function::from_name(&name).ok_or_else(|| unsupported(&format!("function `{name}`"), &f))?;
    if f.over.is_some() || f.filter.is_some() || !f.within_group.is_empty() {
        return Err(unsupported("window or aggregate clauses", &f));
    }
    let list = match &f.args {
        FunctionArguments::List(list)
            if list.duplicate_treatment.is_none() && list.clauses.is_empty() =>
        {
            list
        }
        FunctionArguments::None => return Err(unsupported("a function without arguments", &f)),
        _ => return Err(unsupported("these function arguments", &f)),
    };
    let args = list
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => convert(e.clone()),
            other => Err(unsupported("this function argument", other)),
        })
        .collect::<Result<Vec<_>>>()?;
    let arity_ok = match func {
        Function::Lower | Function::Upper => args.len() == 1,
        Function::Coalesce => !args.is_empty(),
    };
    if !arity_ok {
        return Err(Error::InvalidExpression(format!(
            "function `{}` does not take {} argument(s)",
            func.name(),
            args.len()
        )));
    }
    Ok(Expr::Function { func, args })
}

fn object_name_path(name: &sql::ObjectName) -> Result<Vec<String>> {
    name.0
        .iter()
        .map(|part| match part {
            sql::ObjectNamePart::Identifier(i) => Ok(i.value.clone()),
            other => Err(unsupported("this name", other)),
        })
        .collect()
}

fn value(v: Value) -> Result<Scalar> {
    Ok(match v {
        Value::Number(n, _) => number(&n)?,
        Value::Boolean(b) => Scalar::Boolean(b),
        Value::Null => Scalar::Null,
        Value::HexStringLiteral(hex) => Scalar::Binary(parse_hex(&hex)?),
        Value::Placeholder(p) => return Err(unsupported("a placeholder", &p)),
        other => match other.clone().into_string() {
            Some(s) => Scalar::String(s),
            None => return Err(unsupported("this literal", &other)),
        },
    })
}

/// A numeric literal: integers are `integer` when they fit, else `long`, else
/// `decimal(38,0)`; text with a fraction is a decimal (`1.10` is `decimal(3,2)`);
/// text with an exponent is a `double`.
fn number(text: &str) -> Result<Scalar> {
    let bad = || Error::InvalidExpression(format!("invalid number `{text}`"));
    if text.contains(['e', 'E']) {
        return text.parse().map(Scalar::Double).map_err(|_| bad());
    }
    if !text.contains('.') {
        if let Ok(v) = text.parse::<i64>() {
            return Ok(match i32::try_from(v) {
                Ok(i) => Scalar::Integer(i),
                Err(_) => Scalar::Long(v),
            });
        }
    }
    match parse_decimal_text(text) {
        Some((v, p, s)) => Ok(Scalar::Decimal(v, p, s)),
        // Too many digits for a decimal: keep the value as a double, as Spark does.
        None => text.parse().map(Scalar::Double).map_err(|_| bad()),
    }
}

fn parse_hex(hex: &str) -> Result<Vec<u8>> {
    let bad = || Error::InvalidExpression(format!("invalid hex literal X'{hex}'"));
    hex.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => std::str::from_utf8(&[*hi, *lo])
                .ok()
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or_else(bad),
            _ => Err(bad()),
        })
        .collect()
}

fn typed_string(t: &SqlType, text: &str) -> Result<Scalar> {
    let bad = |what: &str| Error::InvalidExpression(format!("invalid {what} literal '{text}'"));
    match t {
        SqlType::Date => parse_date(text)
            .map(Scalar::Date)
            .ok_or_else(|| bad("date")),
        SqlType::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithTimeZone)
        | SqlType::Timestamp(_, TimezoneInfo::Tz) => parse_timestamp(text, true)
            .map(Scalar::Timestamp)
            .ok_or_else(|| bad("timestamp")),
        SqlType::TimestampNtz(_) | SqlType::Timestamp(_, TimezoneInfo::WithoutTimeZone) => {
            parse_timestamp(text, false)
                .map(Scalar::TimestampNtz)
                .ok_or_else(|| bad("timestamp_ntz"))
        }
        other => {
            let dt = delta_type(other)?;
            Scalar::String(text.to_string())
                .coerce_exact(&dt)
                .ok_or_else(|| bad(&dt.primitive_name().unwrap_or_default()))
        }
    }
}

/// The Delta type named in a CAST; accepts SQL names and Delta's own (`long`, `byte`).
fn delta_type(t: &SqlType) -> Result<DataType> {
    let decimal = |info: &ExactNumberInfo| -> Result<DataType> {
        let (p, s) = match info {
            ExactNumberInfo::None => (10, 0),
            ExactNumberInfo::Precision(p) => (*p, 0),
            ExactNumberInfo::PrecisionAndScale(p, s) => (*p, *s),
        };
        match (u8::try_from(p), i8::try_from(s)) {
            (Ok(p), Ok(s)) if (1..=38).contains(&p) && s >= 0 && s as u8 <= p => {
                Ok(DataType::Decimal(p, s))
            }
            _ => Err(Error::InvalidExpression(format!(
                "invalid decimal type decimal({p},{s})"
            ))),
        }
    };
    Ok(match t {
        SqlType::Boolean | SqlType::Bool => DataType::Boolean,
        SqlType::TinyInt(_) | SqlType::Int8(_) => DataType::Byte,
        SqlType::SmallInt(_) | SqlType::Int2(_) | SqlType::Int16 => DataType::Short,
        SqlType::Int(_) | SqlType::Integer(_) | SqlType::Int4(_) | SqlType::Int32 => {
            DataType::Integer
        }
        SqlType::BigInt(_) | SqlType::Int64 => DataType::Long,
        SqlType::Float(ExactNumberInfo::None) | SqlType::Real | SqlType::Float4 => DataType::Float,
        SqlType::Float(_)
        | SqlType::Double(_)
        | SqlType::DoublePrecision
        | SqlType::Float8
        | SqlType::Float64 => DataType::Double,
        SqlType::Decimal(info) | SqlType::Numeric(info) | SqlType::Dec(info) => decimal(info)?,
        SqlType::String(_)
        | SqlType::Text
        | SqlType::Varchar(_)
        | SqlType::Char(_)
        | SqlType::Character(_)
        | SqlType::CharacterVarying(_) => DataType::String,
        SqlType::Binary(_) | SqlType::Varbinary(_) | SqlType::Bytea | SqlType::Blob(_) => {
            DataType::Binary
        }
        SqlType::Date => DataType::Date,
        SqlType::Timestamp(_, TimezoneInfo::WithoutTimeZone) | SqlType::TimestampNtz(_) => {
            DataType::TimestampNtz
        }
        SqlType::Timestamp(_, _) => DataType::Timestamp,
        SqlType::Custom(name, args) if args.is_empty() => {
            let name = object_name_path(name)?.join(".").to_ascii_lowercase();
            match name.as_str() {
                "byte" => DataType::Byte,
                "short" => DataType::Short,
                "long" => DataType::Long,
                "timestamp_ltz" => DataType::Timestamp,
                _ => return Err(unsupported(&format!("type `{name}`"), t)),
            }
        }
        other => return Err(unsupported(&format!("type `{other}`"), other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Expr {
        parse_predicate(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn col(path: &[&str]) -> Expr {
        Expr::Column(path.iter().map(|s| s.to_string()).collect())
    }

    fn int(v: i32) -> Expr {
        Expr::Literal(Scalar::Integer(v))
    }

    #[test]
    fn columns_plain_nested_and_quoted() {
        assert_eq!(p("amount"), col(&["amount"]));
        assert_eq!(p("a.b.c"), col(&["a", "b", "c"]));
        assert_eq!(p("\"my col\""), col(&["my col"]));
        assert_eq!(p("`my col`"), col(&["my col"]));
        assert_eq!(p("`a.b`"), col(&["a.b"]));
        assert_eq!(p("`s`.`x y`"), col(&["s", "x y"]));
    }

    #[test]
    fn comparisons_and_logic() {
        for (text, op) in [
            ("a = 1", BinaryOp::Eq),
            ("a != 1", BinaryOp::NotEq),
            ("a <> 1", BinaryOp::NotEq),
            ("a < 1", BinaryOp::Lt),
            ("a <= 1", BinaryOp::LtEq),
            ("a > 1", BinaryOp::Gt),
            ("a >= 1", BinaryOp::GtEq),
        ] {
            assert_eq!(p(text), col(&["a"]).binary(op, int(1)), "{text}");
        }
        assert_eq!(
            p("a = 1 OR b = 2 AND NOT c"),
            col(&["a"])
                .eq(int(1))
                .or(col(&["b"]).eq(int(2)).and(col(&["c"]).not()))
        );
        assert_eq!(p("(a)"), col(&["a"]));
    }

    #[test]
    fn literals_of_every_type() {
        let lit = |t: &str| match p(t) {
            Expr::Literal(v) => v,
            other => panic!("{t}: {other:?}"),
        };
        assert_eq!(lit("42"), Scalar::Integer(42));
        assert_eq!(lit("-2147483648"), Scalar::Integer(i32::MIN));
        assert_eq!(lit("10000000000"), Scalar::Long(10_000_000_000));
        assert_eq!(lit("1.10"), Scalar::Decimal(110, 3, 2));
        assert_eq!(lit("-0.5"), Scalar::Decimal(-5, 1, 1));
        assert_eq!(lit("1e3"), Scalar::Double(1000.0));
        assert_eq!(lit("1.5E-1"), Scalar::Double(0.15));
        assert_eq!(lit("'it''s'"), Scalar::String("it's".into()));
        assert_eq!(lit("TRUE"), Scalar::Boolean(true));
        assert_eq!(lit("false"), Scalar::Boolean(false));
        assert_eq!(lit("NULL"), Scalar::Null);
        assert_eq!(lit("DATE '2024-01-01'"), Scalar::Date(19723));
        assert_eq!(
            lit("TIMESTAMP '2024-01-01 10:00:00'"),
            Scalar::Timestamp(1_704_103_200_000_000)
        );
        assert_eq!(
            lit("TIMESTAMP '2024-01-01 12:00:00+02:00'"),
            Scalar::Timestamp(1_704_103_200_000_000)
        );
        assert_eq!(
            lit("TIMESTAMP '2024-01-01T10:00:00.000001Z'"),
            Scalar::Timestamp(1_704_103_200_000_001)
        );
        assert_eq!(
            lit("TIMESTAMP_NTZ '2024-01-01 10:00:00'"),
            Scalar::TimestampNtz(1_704_103_200_000_000)
        );
        assert_eq!(lit("X'01ff'"), Scalar::Binary(vec![1, 255]));
        assert_eq!(lit("CAST(5 AS TINYINT)"), Scalar::Byte(5));
        assert_eq!(lit("CAST(5 AS short)"), Scalar::Short(5));
        assert_eq!(lit("CAST(5 AS long)"), Scalar::Long(5));
        assert_eq!(lit("CAST(1.5 AS FLOAT)"), Scalar::Float(1.5));
        assert_eq!(lit("CAST(1.5 AS DOUBLE)"), Scalar::Double(1.5));
        assert_eq!(
            lit("CAST(1.5 AS DECIMAL(10,2))"),
            Scalar::Decimal(150, 10, 2)
        );
        assert!(parse_predicate("DATE '2024-13-01'")
            .unwrap_err()
            .to_string()
            .contains("invalid date literal '2024-13-01'"));
    }

    #[test]
    fn predicates_in_between_like_null() {
        assert_eq!(
            p("a IN (1, 2)"),
            Expr::InList {
                expr: Box::new(col(&["a"])),
                list: vec![int(1), int(2)],
                negated: false
            }
        );
        assert!(matches!(
            p("a NOT IN (1)"),
            Expr::InList { negated: true, .. }
        ));
        assert_eq!(
            p("a BETWEEN 1 AND 5"),
            col(&["a"])
                .binary(BinaryOp::GtEq, int(1))
                .and(col(&["a"]).binary(BinaryOp::LtEq, int(5)))
        );
        assert_eq!(
            p("a NOT BETWEEN 1 AND 5"),
            col(&["a"])
                .binary(BinaryOp::Lt, int(1))
                .or(col(&["a"]).binary(BinaryOp::Gt, int(5)))
        );
        assert_eq!(
            p("name LIKE 'ab%'"),
            Expr::Like {
                expr: Box::new(col(&["name"])),
                pattern: "ab%".into(),
                negated: false
            }
        );
        assert!(matches!(
            p("name NOT LIKE 'a_c'"),
            Expr::Like { negated: true, .. }
        ));
        assert_eq!(p("a IS NULL"), col(&["a"]).is_null());
        assert_eq!(p("a IS NOT NULL"), Expr::IsNotNull(Box::new(col(&["a"]))));
        assert!(matches!(
            p("flag IS TRUE"),
            Expr::Function {
                func: Function::Coalesce,
                ..
            }
        ));
    }

    #[test]
    fn arithmetic_cast_and_functions() {
        assert_eq!(
            p("a + 2 * b"),
            col(&["a"]).binary(
                BinaryOp::Plus,
                int(2).binary(BinaryOp::Multiply, col(&["b"]))
            )
        );
        assert_eq!(p("-a"), Expr::Negative(Box::new(col(&["a"]))));
        assert_eq!(
            p("a / 2 - a % 3"),
            col(&["a"]).binary(BinaryOp::Divide, int(2)).binary(
                BinaryOp::Minus,
                col(&["a"]).binary(BinaryOp::Modulo, int(3))
            )
        );
        assert_eq!(
            p("CAST(a AS DECIMAL(10, 2))"),
            Expr::Cast {
                expr: Box::new(col(&["a"])),
                data_type: DataType::Decimal(10, 2)
            }
        );
        assert_eq!(
            p("CAST(a AS TIMESTAMP_NTZ)"),
            Expr::Cast {
                expr: Box::new(col(&["a"])),
                data_type: DataType::TimestampNtz
            }
        );
        assert_eq!(
            p("LOWER(name)"),
            Expr::Function {
                func: Function::Lower,
                args: vec![col(&["name"])]
            }
        );
        assert_eq!(
            p("coalesce(a, b, 0)"),
            Expr::Function {
                func: Function::Coalesce,
                args: vec![col(&["a"]), col(&["b"]), int(0)]
            }
        );
    }

    #[test]
    fn assignments() {
        let a = parse_assignment("amount = amount * 1.1").unwrap();
        assert_eq!(a.column, vec!["amount".to_string()]);
        assert_eq!(
            a.value,
            col(&["amount"]).binary(BinaryOp::Multiply, Expr::Literal(Scalar::Decimal(11, 2, 1)))
        );
        let a = parse_assignment("`s`.x = 'closed'").unwrap();
        assert_eq!(a.column, vec!["s".to_string(), "x".to_string()]);
        assert!(parse_assignment("a").is_err());
    }

    #[test]
    fn errors_are_clear() {
        let err = |t: &str| parse_predicate(t).unwrap_err().to_string();
        assert!(
            err("a = ").contains("cannot parse `a = `"),
            "{}",
            err("a = ")
        );
        assert!(err("").contains("empty"));
        assert!(
            err("a = 1 b").contains("unexpected `b`"),
            "{}",
            err("a = 1 b")
        );
        let e = err("a IN (SELECT 1)");
        assert!(e.contains("unsupported expression: InSubquery"), "{e}");
        let e = err("sqrt(a) > 1");
        assert!(e.contains("unsupported expression: function `sqrt`"), "{e}");
        let e = err("a ILIKE 'x'");
        assert!(e.contains("unsupported expression"), "{e}");
        let e = err("a || b = 'x'");
        assert!(e.contains("unsupported expression: operator `||`"), "{e}");
        let e = err("lower(a, b) = 'x'");
        assert!(e.contains("does not take 2 argument(s)"), "{e}");
    }

    #[test]
    fn display_reparses_to_the_same_tree() {
        for text in [
            "a = 1 AND (b < 2.5 OR NOT c)",
            "`my col`.x IN (1, 2, NULL)",
            "d >= DATE '2024-01-01' AND t < TIMESTAMP '2024-01-01 10:00:00.5+00:00'",
            "name NOT LIKE 'ab\\%%'",
            "coalesce(lower(s), 'x') = 'y'",
            "CAST(a AS DECIMAL(12,3)) / 2 - -a > 1e10",
            "a - (b - c) = a - b - c",
            "CAST(5 AS TINYINT) = x AND y = CAST(7 AS BIGINT) AND z = X'0A'",
            "t = TIMESTAMP_NTZ '2024-01-01 00:00:00.000001' AND f = CAST(1.5 AS FLOAT)",
            "a IS NOT NULL AND -(a + 1) * 2 > 0",
        ] {
            let e = p(text);
            let again = p(&e.to_string());
            assert_eq!(e, again, "{text} -> {e}");
        }
    }
}
