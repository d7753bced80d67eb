//! Expressions: predicates and value expressions over the rows of a table.
//!
//! This module owns the path from text to answers:
//! - [`parse_predicate`] / [`parse_expression`] / [`parse_assignment`] turn SQL-like text
//!   into an [`Expr`] (through `sqlparser`);
//! - [`bind`] / [`bind_predicate`] / [`bind_assignment`] resolve columns against a table
//!   schema, check types and make coercions explicit ([`BoundExpr`]);
//! - [`evaluate`] / [`evaluate_predicate`] / [`filter_batch`] run a bound expression on an
//!   Arrow batch with Arrow's kernels (SQL three-valued logic);
//! - [`may_match`] / [`may_match_file`] decide from partition values and file statistics
//!   that a file holds no matching row, erring towards keeping it.
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Int64Array, RecordBatch};
//! use shoal_format::expr::{bind_predicate, evaluate_predicate, parse_predicate};
//! use shoal_format::{DataType, StructField, StructType};
//!
//! let schema = StructType::new(vec![StructField::new("amount", DataType::Long, true)]);
//! let predicate = bind_predicate(&parse_predicate("amount > 10")?, &schema)?;
//! let batch = RecordBatch::try_new(
//!     Arc::new(schema.to_arrow()?),
//!     vec![Arc::new(Int64Array::from(vec![Some(5), Some(20), None]))],
//! )?;
//! let mask = evaluate_predicate(&predicate, &batch)?;
//! assert_eq!(mask.iter().collect::<Vec<_>>(), [Some(false), Some(true), None]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod ast;
pub mod bind;
pub mod eval;
pub mod parse;
pub mod skipping;
pub(crate) mod types;

pub use ast::{BinaryOp, Expr, Function, Scalar};
pub use bind::{bind, bind_assignment, bind_predicate, BoundAssignment, BoundExpr, BoundKind};
pub use eval::{evaluate, evaluate_predicate, filter_batch, matching_rows};
pub use parse::{parse_assignment, parse_expression, parse_predicate, Assignment};
pub use skipping::{may_match, may_match_file, must_match, FileStats};
