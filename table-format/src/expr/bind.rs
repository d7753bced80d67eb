//! Binding: resolve an [`Expr`]'s columns against a table schema, check its types and
//! make every coercion explicit, giving a [`BoundExpr`] that evaluation and data
//! skipping can trust.
//!
//! Coercion follows Spark where it is sensible: a literal compared with a column takes
//! the column's type when it converts exactly (`int_col = 5`, `date_col = '2024-01-01'`,
//! `dec_col > 1.5`); otherwise both sides widen to a common type (integers < decimal <
//! float < double; `date` < `timestamp`). A string column is never silently compared
//! with a date or a number: that is a type error.

use std::fmt;

use super::ast::{BinaryOp, Expr, Function, Scalar};
use super::parse::Assignment;
use super::types::{arithmetic_types, common_type, is_datetime, is_numeric, type_name};
use crate::error::{Error, Result};
use crate::protocol::{DataType, StructField, StructType};

/// An expression whose columns are resolved and whose every node has a type.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundExpr {
    pub kind: BoundKind,
    /// The type of the node's result.
    pub data_type: DataType,
}

/// The node kinds of a [`BoundExpr`]. Operands of comparisons, arithmetic, `IN` and
/// `coalesce` already have the type the operation works in.
#[derive(Debug, Clone, PartialEq)]
pub enum BoundKind {
    /// A column by its exact (schema-spelled) path.
    Column(Vec<String>),
    /// A literal, already converted to the node's type (`Scalar::Null` is a typed null).
    Literal(Scalar),
    Binary {
        op: BinaryOp,
        left: Box<BoundExpr>,
        right: Box<BoundExpr>,
    },
    Not(Box<BoundExpr>),
    Negative(Box<BoundExpr>),
    IsNull(Box<BoundExpr>),
    IsNotNull(Box<BoundExpr>),
    InList {
        expr: Box<BoundExpr>,
        list: Vec<BoundExpr>,
        negated: bool,
    },
    Like {
        expr: Box<BoundExpr>,
        pattern: String,
        negated: bool,
    },
    /// A conversion to the node's type. `strict` casts fail on values that do not fit
    /// (used for UPDATE assignments); the others give null, like Spark's non-ANSI CAST.
    Cast {
        expr: Box<BoundExpr>,
        strict: bool,
    },
    Function {
        func: Function,
        args: Vec<BoundExpr>,
    },
}

/// A type-checked `column = value` whose value has the column's type.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundAssignment {
    /// The exact path of the target column.
    pub column: Vec<String>,
    pub value: BoundExpr,
}

/// Binds any expression (a value or a predicate).
pub fn bind(expr: &Expr, schema: &StructType) -> Result<BoundExpr> {
    Binder { schema }.bind(expr)
}

/// Binds a predicate: like [`bind`], and the result must be boolean.
pub fn bind_predicate(expr: &Expr, schema: &StructType) -> Result<BoundExpr> {
    let bound = bind(expr, schema)?;
    if bound.data_type != DataType::Boolean {
        return Err(Error::ExpressionType(format!(
            "a predicate must be a boolean expression, but `{expr}` is {}",
            type_name(&bound.data_type)
        )));
    }
    Ok(bound)
}

/// Binds an UPDATE assignment: the value is checked against and cast to the column type.
pub fn bind_assignment(assignment: &Assignment, schema: &StructType) -> Result<BoundAssignment> {
    let binder = Binder { schema };
    let (column, target) = binder.resolve(&assignment.column)?;
    let value = binder.bind(&assignment.value)?;
    let shown = assignment.column.join(".");
    let mismatch = |vt: &DataType| {
        Error::ExpressionType(format!(
            "cannot assign {} to column `{shown}` of type {}",
            type_name(vt),
            type_name(&target)
        ))
    };
    let value = if value.data_type == target || is_null_literal(&value) {
        retype_null(value, &target)
    } else if let BoundKind::Literal(v) = &value.kind {
        match v.coerce_exact(&target) {
            Some(exact) => literal(exact, target.clone()),
            None if is_numeric(&value.data_type) && is_numeric(&target) => {
                cast(value, &target, true)
            }
            None => {
                return Err(Error::ExpressionType(format!(
                    "cannot assign {v} to column `{shown}` of type {}",
                    type_name(&target)
                )))
            }
        }
    } else if (is_numeric(&value.data_type) && is_numeric(&target))
        || (is_datetime(&value.data_type) && is_datetime(&target))
    {
        cast(value, &target, true)
    } else {
        return Err(mismatch(&value.data_type));
    };
    Ok(BoundAssignment { column, value })
}

struct Binder<'a> {
    schema: &'a StructType,
}

impl Binder<'_> {
    fn bind(&self, e: &Expr) -> Result<BoundExpr> {
        Ok(match e {
            Expr::Column(path) => {
                let (path, data_type) = self.resolve(path)?;
                BoundExpr {
                    kind: BoundKind::Column(path),
                    data_type,
                }
            }
            Expr::Literal(v) => {
                let data_type = v.data_type().unwrap_or(DataType::Boolean);
                literal(v.clone(), data_type)
            }
            Expr::Binary { op, left, right } => {
                let (l, r) = (self.bind(left)?, self.bind(right)?);
                self.binary(*op, l, r, e)?
            }
            Expr::Not(inner) => {
                let b = self.boolean(inner, "NOT")?;
                node(BoundKind::Not(Box::new(b)), DataType::Boolean)
            }
            Expr::Negative(inner) => {
                let b = self.bind(inner)?;
                let b = retype_null(b, &DataType::Integer);
                if !is_numeric(&b.data_type) {
                    return Err(Error::ExpressionType(format!(
                        "cannot negate `{inner}` of type {}",
                        type_name(&b.data_type)
                    )));
                }
                let t = b.data_type.clone();
                node(BoundKind::Negative(Box::new(b)), t)
            }
            Expr::IsNull(inner) => node(
                BoundKind::IsNull(Box::new(self.bind(inner)?)),
                DataType::Boolean,
            ),
            Expr::IsNotNull(inner) => node(
                BoundKind::IsNotNull(Box::new(self.bind(inner)?)),
                DataType::Boolean,
            ),
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                let b = self.bind(expr)?;
                let items = list
                    .iter()
                    .map(|i| self.bind(i))
                    .collect::<Result<Vec<_>>>()?;
                let mut t = b.clone();
                for item in &items {
                    let common = comparison_type(&t, item, e)?;
                    t = retype_null(t, &common);
                    if t.data_type != common {
                        t = cast(t, &common, false);
                    }
                }
                let common = t.data_type;
                node(
                    BoundKind::InList {
                        expr: Box::new(convert(b, &common)),
                        list: items.into_iter().map(|i| convert(i, &common)).collect(),
                        negated: *negated,
                    },
                    DataType::Boolean,
                )
            }
            Expr::Like {
                expr,
                pattern,
                negated,
            } => {
                let b = self.string(expr, "LIKE")?;
                node(
                    BoundKind::Like {
                        expr: Box::new(b),
                        pattern: pattern.clone(),
                        negated: *negated,
                    },
                    DataType::Boolean,
                )
            }
            Expr::Cast { expr, data_type } => {
                let b = self.bind(expr)?;
                explicit_cast(b, data_type, expr)?
            }
            Expr::Function { func, args } => self.function(*func, args, e)?,
        })
    }

    fn boolean(&self, e: &Expr, what: &str) -> Result<BoundExpr> {
        let b = retype_null(self.bind(e)?, &DataType::Boolean);
        if b.data_type != DataType::Boolean {
            return Err(Error::ExpressionType(format!(
                "{what} expects a boolean, but `{e}` is {}",
                type_name(&b.data_type)
            )));
        }
        Ok(b)
    }

    fn string(&self, e: &Expr, what: &str) -> Result<BoundExpr> {
        let b = retype_null(self.bind(e)?, &DataType::String);
        if b.data_type != DataType::String {
            return Err(Error::ExpressionType(format!(
                "{what} expects a string, but `{e}` is {}",
                type_name(&b.data_type)
            )));
        }
        Ok(b)
    }

    fn binary(&self, op: BinaryOp, l: BoundExpr, r: BoundExpr, whole: &Expr) -> Result<BoundExpr> {
        if op.is_logical() {
            let (l, r) = (
                retype_null(l, &DataType::Boolean),
                retype_null(r, &DataType::Boolean),
            );
            for side in [&l, &r] {
                if side.data_type != DataType::Boolean {
                    return Err(Error::ExpressionType(format!(
                        "`{op}` expects boolean operands, but `{}` is {}",
                        side,
                        type_name(&side.data_type)
                    )));
                }
            }
            return Ok(binary_node(op, l, r, DataType::Boolean));
        }
        if op.is_comparison() {
            let t = comparison_type(&l, &r, whole)?;
            return Ok(binary_node(
                op,
                convert(l, &t),
                convert(r, &t),
                DataType::Boolean,
            ));
        }
        // Arithmetic: a NULL operand takes the other side's type.
        let (l, r) = match (is_null_literal(&l), is_null_literal(&r)) {
            (true, true) => (
                retype_null(l, &DataType::Integer),
                retype_null(r, &DataType::Integer),
            ),
            (true, false) => (retype_null(l, &r.data_type), r),
            (false, true) => {
                let t = l.data_type.clone();
                (l, retype_null(r, &t))
            }
            (false, false) => (l, r),
        };
        let (lt, rt, result) =
            arithmetic_types(op, &l.data_type, &r.data_type).ok_or_else(|| {
                Error::ExpressionType(format!(
                    "cannot apply `{op}` to {} and {} in `{whole}`",
                    type_name(&l.data_type),
                    type_name(&r.data_type)
                ))
            })??;
        Ok(binary_node(op, convert(l, &lt), convert(r, &rt), result))
    }

    fn function(&self, func: Function, args: &[Expr], whole: &Expr) -> Result<BoundExpr> {
        match func {
            Function::Lower | Function::Upper => {
                let [arg] = args else {
                    return Err(Error::InvalidExpression(format!(
                        "`{}` takes one argument",
                        func.name()
                    )));
                };
                let b = self.string(arg, func.name())?;
                Ok(node(
                    BoundKind::Function {
                        func,
                        args: vec![b],
                    },
                    DataType::String,
                ))
            }
            Function::Coalesce => {
                let bound = args
                    .iter()
                    .map(|a| self.bind(a))
                    .collect::<Result<Vec<_>>>()?;
                let mut acc: Option<BoundExpr> = None;
                for b in &bound {
                    acc = Some(match acc {
                        None => b.clone(),
                        Some(t) => {
                            let common = comparison_type(&t, b, whole)?;
                            cast(retype_null(t, &common), &common, false)
                        }
                    });
                }
                let t = acc.map(|a| a.data_type).unwrap_or(DataType::Boolean);
                Ok(node(
                    BoundKind::Function {
                        func,
                        args: bound.into_iter().map(|b| convert(b, &t)).collect(),
                    },
                    t,
                ))
            }
        }
    }

    /// Resolves a column path: exact names first, then a unique case-insensitive match.
    fn resolve(&self, path: &[String]) -> Result<(Vec<String>, DataType)> {
        match resolve_in(&self.schema.fields, path, &mut vec![]) {
            Ok(found) => Ok(found),
            // `a.b` written unquoted may name a top-level column called "a.b".
            Err(e) if path.len() > 1 => {
                resolve_in(&self.schema.fields, &[path.join(".")], &mut vec![]).map_err(|_| e)
            }
            Err(e) => Err(e),
        }
        .and_then(|(p, t)| match t {
            DataType::Unsupported(name) => Err(Error::ExpressionType(format!(
                "column `{}` has type `{name}`, which expressions do not support",
                p.join(".")
            ))),
            t => Ok((p, t)),
        })
        .map_err(|e| match e {
            Error::UnknownColumn { .. } => {
                let user = path.join(".");
                let suggestion = suggest(&user, self.schema);
                Error::UnknownColumn {
                    column: user,
                    suggestion,
                }
            }
            other => other,
        })
    }
}

fn resolve_in(
    fields: &[StructField],
    path: &[String],
    prefix: &mut Vec<String>,
) -> Result<(Vec<String>, DataType)> {
    let Some(name) = path.first() else {
        return Err(Error::InvalidExpression("empty column name".into()));
    };
    let field = match fields.iter().find(|f| &f.name == name) {
        Some(f) => f,
        None => {
            let matches: Vec<&StructField> = fields
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case(name))
                .collect();
            match matches.as_slice() {
                [one] => *one,
                [] => {
                    return Err(Error::UnknownColumn {
                        column: name.clone(),
                        suggestion: None,
                    })
                }
                many => {
                    return Err(Error::InvalidExpression(format!(
                        "ambiguous column `{name}`: it matches {}",
                        many.iter()
                            .map(|f| format!("`{}`", f.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        }
    };
    prefix.push(field.name.clone());
    if path.len() == 1 {
        return Ok((prefix.clone(), field.data_type.clone()));
    }
    match &field.data_type {
        DataType::Struct(s) => resolve_in(&s.fields, &path[1..], prefix),
        other => Err(Error::ExpressionType(format!(
            "column `{}` is {}, not a struct: it has no field `{}`",
            prefix.join("."),
            type_name(other),
            path[1]
        ))),
    }
}

/// The schema path closest to `user` by edit distance, if close enough to be a typo.
fn suggest(user: &str, schema: &StructType) -> Option<String> {
    fn paths(fields: &[StructField], prefix: &str, out: &mut Vec<String>) {
        for f in fields {
            let p = if prefix.is_empty() {
                f.name.clone()
            } else {
                format!("{prefix}.{}", f.name)
            };
            if let DataType::Struct(s) = &f.data_type {
                paths(&s.fields, &p, out);
            }
            out.push(p);
        }
    }
    let mut all = vec![];
    paths(&schema.fields, "", &mut all);
    let user_lower = user.to_lowercase();
    let limit = match user.chars().count() {
        0..=2 => 0,
        3..=5 => 1,
        6..=8 => 2,
        _ => 3,
    };
    all.into_iter()
        .map(|p| (levenshtein(&user_lower, &p.to_lowercase()), p))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, p)| p)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn node(kind: BoundKind, data_type: DataType) -> BoundExpr {
    BoundExpr { kind, data_type }
}

fn literal(v: Scalar, data_type: DataType) -> BoundExpr {
    node(BoundKind::Literal(v), data_type)
}

fn binary_node(op: BinaryOp, l: BoundExpr, r: BoundExpr, t: DataType) -> BoundExpr {
    node(
        BoundKind::Binary {
            op,
            left: Box::new(l),
            right: Box::new(r),
        },
        t,
    )
}

fn cast(b: BoundExpr, target: &DataType, strict: bool) -> BoundExpr {
    node(
        BoundKind::Cast {
            expr: Box::new(b),
            strict,
        },
        target.clone(),
    )
}

pub(crate) fn is_null_literal(b: &BoundExpr) -> bool {
    matches!(b.kind, BoundKind::Literal(Scalar::Null))
}

/// A `NULL` literal takes any type it is asked to; other nodes are unchanged.
fn retype_null(mut b: BoundExpr, t: &DataType) -> BoundExpr {
    if is_null_literal(&b) {
        b.data_type = t.clone();
    }
    b
}

/// Converts `b` to `t` (known to be a valid implicit conversion): literals are folded,
/// other nodes wrapped in a cast.
fn convert(b: BoundExpr, t: &DataType) -> BoundExpr {
    if &b.data_type == t || is_null_literal(&b) {
        return retype_null(b, t);
    }
    if let BoundKind::Literal(v) = &b.kind {
        if let Some(folded) = v.cast_widening(t) {
            return literal(folded, t.clone());
        }
    }
    cast(b, t, false)
}

fn explicit_cast(b: BoundExpr, target: &DataType, inner: &Expr) -> Result<BoundExpr> {
    if is_null_literal(&b) || &b.data_type == target {
        return Ok(retype_null(b, target));
    }
    let castable = match (b.data_type.to_arrow("cast"), target.to_arrow("cast")) {
        (Ok(from), Ok(to)) => {
            b.data_type.is_primitive() && arrow::compute::can_cast_types(&from, &to)
        }
        _ => false,
    };
    if !castable {
        return Err(Error::ExpressionType(format!(
            "cannot cast `{inner}` of type {} to {}",
            type_name(&b.data_type),
            type_name(target)
        )));
    }
    if let BoundKind::Literal(v) = &b.kind {
        if let Some(folded) = v.coerce_exact(target) {
            return Ok(literal(folded, target.clone()));
        }
    }
    Ok(cast(b, target, false))
}

/// The type both sides of a comparison (or the items of IN / coalesce) convert to.
fn comparison_type(l: &BoundExpr, r: &BoundExpr, whole: &Expr) -> Result<DataType> {
    let cannot = |a: &DataType, b: &DataType| {
        Error::ExpressionType(format!(
            "cannot compare {} with {} in `{whole}`",
            type_name(a),
            type_name(b)
        ))
    };
    let comparable = |t: &DataType| t.is_primitive();
    let (lt, rt) = (&l.data_type, &r.data_type);
    let t = match (is_null_literal(l), is_null_literal(r)) {
        (true, true) => return Ok(DataType::Boolean),
        (true, false) => rt.clone(),
        (false, true) => lt.clone(),
        (false, false) => {
            if lt == rt {
                lt.clone()
            } else if let Some(t) = literal_fits(r, lt).or_else(|| literal_fits(l, rt)) {
                t?
            } else {
                common_type(lt, rt).ok_or_else(|| cannot(lt, rt))?
            }
        }
    };
    if !comparable(&t) {
        return Err(cannot(lt, rt));
    }
    Ok(t)
}

/// `Some(Ok(t))` when literal `lit` converts exactly to the other side's type `t`;
/// `Some(Err)` when it is a string that cannot be read as that type; `None` otherwise.
fn literal_fits(lit: &BoundExpr, t: &DataType) -> Option<Result<DataType>> {
    let BoundKind::Literal(v) = &lit.kind else {
        return None;
    };
    if !t.is_primitive() {
        return None;
    }
    match v.coerce_exact(t) {
        Some(_) => Some(Ok(t.clone())),
        None => match v {
            Scalar::String(s) if *t != DataType::String => Some(Err(Error::ExpressionType(
                format!("cannot read '{s}' as a {} value", type_name(t)),
            ))),
            _ => None,
        },
    }
}

impl BoundExpr {
    /// The unbound form (implicit casts become explicit `CAST`s).
    pub fn to_expr(&self) -> Expr {
        let b = |e: &BoundExpr| Box::new(e.to_expr());
        match &self.kind {
            BoundKind::Column(p) => Expr::Column(p.clone()),
            BoundKind::Literal(v) => match (v, &self.data_type) {
                (Scalar::Null, DataType::Boolean) => Expr::Literal(Scalar::Null),
                (Scalar::Null, t) => Expr::Cast {
                    expr: Box::new(Expr::Literal(Scalar::Null)),
                    data_type: t.clone(),
                },
                (v, _) => Expr::Literal(v.clone()),
            },
            BoundKind::Binary { op, left, right } => Expr::Binary {
                op: *op,
                left: b(left),
                right: b(right),
            },
            BoundKind::Not(e) => Expr::Not(b(e)),
            BoundKind::Negative(e) => Expr::Negative(b(e)),
            BoundKind::IsNull(e) => Expr::IsNull(b(e)),
            BoundKind::IsNotNull(e) => Expr::IsNotNull(b(e)),
            BoundKind::InList {
                expr,
                list,
                negated,
            } => Expr::InList {
                expr: b(expr),
                list: list.iter().map(BoundExpr::to_expr).collect(),
                negated: *negated,
            },
            BoundKind::Like {
                expr,
                pattern,
                negated,
            } => Expr::Like {
                expr: b(expr),
                pattern: pattern.clone(),
                negated: *negated,
            },
            BoundKind::Cast { expr, .. } => Expr::Cast {
                expr: b(expr),
                data_type: self.data_type.clone(),
            },
            BoundKind::Function { func, args } => Expr::Function {
                func: *func,
                args: args.iter().map(BoundExpr::to_expr).collect(),
            },
        }
    }

    /// Every column path the expression reads, each once, in first-use order.
    pub fn columns(&self) -> Vec<&[String]> {
        let mut out: Vec<&[String]> = vec![];
        self.visit(&mut |e| {
            if let BoundKind::Column(p) = &e.kind {
                if !out.contains(&p.as_slice()) {
                    out.push(p);
                }
            }
        });
        out
    }

    /// Calls `f` on this node and every node below it, parents first.
    pub fn visit<'a>(&'a self, f: &mut impl FnMut(&'a BoundExpr)) {
        f(self);
        match &self.kind {
            BoundKind::Column(_) | BoundKind::Literal(_) => {}
            BoundKind::Binary { left, right, .. } => {
                left.visit(f);
                right.visit(f);
            }
            BoundKind::Not(e)
            | BoundKind::Negative(e)
            | BoundKind::IsNull(e)
            | BoundKind::IsNotNull(e)
            | BoundKind::Like { expr: e, .. }
            | BoundKind::Cast { expr: e, .. } => e.visit(f),
            BoundKind::InList { expr, list, .. } => {
                expr.visit(f);
                list.iter().for_each(|i| i.visit(f));
            }
            BoundKind::Function { args, .. } => args.iter().for_each(|a| a.visit(f)),
        }
    }
}

impl fmt::Display for BoundExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_expr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::parse::{parse_assignment, parse_expression, parse_predicate};

    fn schema() -> StructType {
        StructType::from_json(
            r#"{"type":"struct","fields":[
            {"name":"id","type":"long","nullable":false,"metadata":{}},
            {"name":"n","type":"integer","nullable":true,"metadata":{}},
            {"name":"amount","type":"decimal(10,2)","nullable":true,"metadata":{}},
            {"name":"x","type":"double","nullable":true,"metadata":{}},
            {"name":"f","type":"float","nullable":true,"metadata":{}},
            {"name":"name","type":"string","nullable":true,"metadata":{}},
            {"name":"day","type":"date","nullable":true,"metadata":{}},
            {"name":"ts","type":"timestamp","nullable":true,"metadata":{}},
            {"name":"ntz","type":"timestamp_ntz","nullable":true,"metadata":{}},
            {"name":"flag","type":"boolean","nullable":true,"metadata":{}},
            {"name":"Mixed","type":"integer","nullable":true,"metadata":{}},
            {"name":"my col","type":"integer","nullable":true,"metadata":{}},
            {"name":"s","type":{"type":"struct","fields":[
                {"name":"inner","type":"string","nullable":true,"metadata":{}}]},
             "nullable":true,"metadata":{}},
            {"name":"tags","type":{"type":"array","elementType":"string","containsNull":true},
             "nullable":true,"metadata":{}},
            {"name":"v","type":"variant","nullable":true,"metadata":{}}
        ]}"#,
        )
        .unwrap()
    }

    fn bp(text: &str) -> Result<BoundExpr> {
        bind_predicate(&parse_predicate(text)?, &schema())
    }

    fn err(text: &str) -> String {
        match bp(text) {
            Ok(b) => panic!("{text} bound to {b}"),
            Err(e) => e.to_string(),
        }
    }

    fn operands(b: &BoundExpr) -> (&BoundExpr, &BoundExpr) {
        match &b.kind {
            BoundKind::Binary { left, right, .. } => (left, right),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn literals_take_the_column_type() {
        let b = bp("n = 5").unwrap();
        let (l, r) = operands(&b);
        assert_eq!(l.kind, BoundKind::Column(vec!["n".into()]));
        assert_eq!(r.kind, BoundKind::Literal(Scalar::Integer(5)));
        let b = bp("day >= '2024-01-01'").unwrap();
        assert_eq!(operands(&b).1.kind, BoundKind::Literal(Scalar::Date(19723)));
        let b = bp("amount > 1.5").unwrap();
        assert_eq!(
            operands(&b).1.kind,
            BoundKind::Literal(Scalar::Decimal(150, 10, 2))
        );
        let b = bp("x < 1").unwrap();
        assert_eq!(operands(&b).1.kind, BoundKind::Literal(Scalar::Double(1.0)));
        let b = bp("ts < '2024-01-01 10:00:00'").unwrap();
        assert_eq!(
            operands(&b).1.kind,
            BoundKind::Literal(Scalar::Timestamp(1_704_103_200_000_000))
        );
        let b = bp("ntz = TIMESTAMP '2024-01-01 10:00:00'").unwrap();
        assert_eq!(
            operands(&b).1.kind,
            BoundKind::Literal(Scalar::TimestampNtz(1_704_103_200_000_000))
        );
    }

    #[test]
    fn columns_widen_when_the_literal_does_not_fit() {
        let b = bp("n = 10000000000").unwrap();
        let (l, r) = operands(&b);
        assert_eq!(l.data_type, DataType::Long);
        assert!(matches!(l.kind, BoundKind::Cast { strict: false, .. }));
        assert_eq!(r.kind, BoundKind::Literal(Scalar::Long(10_000_000_000)));
        let b = bp("amount = 1.125").unwrap();
        assert_eq!(operands(&b).0.data_type, DataType::Decimal(11, 3));
        let b = bp("day < TIMESTAMP '2024-01-01 10:00:00'").unwrap();
        assert_eq!(operands(&b).0.data_type, DataType::Timestamp);
        let b = bp("n < id").unwrap();
        assert_eq!(operands(&b).0.data_type, DataType::Long);
        let b = bp("f < x").unwrap();
        assert_eq!(operands(&b).0.data_type, DataType::Double);
        let b = bp("n IN (1, 10000000000, NULL)").unwrap();
        let BoundKind::InList { expr, list, .. } = &b.kind else {
            panic!()
        };
        assert_eq!(expr.data_type, DataType::Long);
        assert!(list.iter().all(|i| i.data_type == DataType::Long));
    }

    #[test]
    fn columns_resolve_case_insensitively_and_nested() {
        let b = bp("ID = 1 AND mixed = 2 AND S.INNER = 'a' AND `my col` = 3").unwrap();
        let cols: Vec<String> = b.columns().iter().map(|p| p.join(".")).collect();
        assert_eq!(cols, ["id", "Mixed", "s.inner", "my col"]);
        assert!(bp("tags IS NULL AND s IS NOT NULL").is_ok());
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            err("amout > 1"),
            "unknown column `amout`; did you mean `amount`?"
        );
        assert_eq!(err("zzz > 1"), "unknown column `zzz`");
        assert_eq!(
            err("s.iner = 'a'"),
            "unknown column `s.iner`; did you mean `s.inner`?"
        );
        let e = err("name = DATE '2024-01-01'");
        assert!(e.contains("cannot compare string with date"), "{e}");
        let e = err("day = 'soon'");
        assert!(e.contains("cannot read 'soon' as a date value"), "{e}");
        let e = err("name = 5");
        assert!(e.contains("cannot compare string with integer"), "{e}");
        let e = err("ts = ntz");
        assert!(
            e.contains("cannot compare timestamp with timestamp_ntz"),
            "{e}"
        );
        let e = err("amount + 1");
        assert!(
            e.contains("predicate must be a boolean expression, but `amount + 1` is decimal(13,2)"),
            "{e}"
        );
        let e = err("name + 1 > 2");
        assert!(e.contains("cannot apply `+` to string and integer"), "{e}");
        let e = err("n AND flag");
        assert!(e.contains("`AND` expects boolean operands"), "{e}");
        let e = err("n LIKE 'a%'");
        assert!(e.contains("LIKE expects a string"), "{e}");
        let e = err("s = 'a'");
        assert!(e.contains("cannot compare struct with string"), "{e}");
        let e = err("n.x = 1");
        assert!(e.contains("column `n` is integer, not a struct"), "{e}");
        let e = err("v IS NULL");
        assert!(e.contains("type `variant`"), "{e}");
        let e = err("CAST(s AS INT) = 1");
        assert!(
            e.contains("cannot cast `s` of type struct to integer"),
            "{e}"
        );
    }

    #[test]
    fn result_types() {
        let s = schema();
        let t = |text: &str| {
            bind(&parse_expression(text).unwrap(), &s)
                .unwrap()
                .data_type
        };
        assert_eq!(t("n + 1"), DataType::Integer);
        assert_eq!(t("n + id"), DataType::Long);
        assert_eq!(t("n / 2"), DataType::Double);
        assert_eq!(t("amount * 2"), DataType::Decimal(21, 2));
        assert_eq!(t("amount + 1.5"), DataType::Decimal(11, 2));
        assert_eq!(t("amount / 2"), DataType::Decimal(14, 6));
        assert_eq!(t("x * amount"), DataType::Double);
        assert_eq!(t("-f"), DataType::Float);
        assert_eq!(t("lower(name)"), DataType::String);
        assert_eq!(t("coalesce(n, id, 0)"), DataType::Long);
        assert_eq!(t("coalesce(NULL, day)"), DataType::Date);
        assert_eq!(t("NULL + 1"), DataType::Integer);
        assert_eq!(t("CAST(name AS DATE)"), DataType::Date);
        assert_eq!(t("NULL"), DataType::Boolean);
        assert_eq!(t("s.inner"), DataType::String);
    }

    #[test]
    fn assignments_cast_to_the_column_type() {
        let s = schema();
        let a = |text: &str| bind_assignment(&parse_assignment(text).unwrap(), &s);
        let b = a("id = id * 1.1").unwrap();
        assert_eq!(b.column, vec!["id".to_string()]);
        assert_eq!(b.value.data_type, DataType::Long);
        assert!(matches!(b.value.kind, BoundKind::Cast { strict: true, .. }));
        let b = a("day = '2024-02-01'").unwrap();
        assert_eq!(b.value.kind, BoundKind::Literal(Scalar::Date(19754)));
        let b = a("NAME = NULL").unwrap();
        assert_eq!(b.column, vec!["name".to_string()]);
        assert_eq!(b.value.data_type, DataType::String);
        let e = a("id = 'abc'").unwrap_err().to_string();
        assert!(
            e.contains("cannot assign 'abc' to column `id` of type long"),
            "{e}"
        );
        let e = a("day = n").unwrap_err().to_string();
        assert!(
            e.contains("cannot assign integer to column `day` of type date"),
            "{e}"
        );
        let e = a("nope = 1").unwrap_err().to_string();
        assert!(e.contains("unknown column `nope`"), "{e}");
    }

    #[test]
    fn bound_display_shows_coercions() {
        let b = bp("n = 10000000000 AND day = '2024-01-01'").unwrap();
        assert_eq!(
            b.to_string(),
            "CAST(n AS BIGINT) = 10000000000 AND day = DATE '2024-01-01'"
        );
    }
}
