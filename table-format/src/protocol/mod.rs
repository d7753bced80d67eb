//! The Delta protocol's data model: actions, schema, partition values, statistics and
//! table features. Pure: no IO.

pub mod actions;
pub mod conform;
pub mod dictionary;
pub mod features;
pub mod partition;
pub mod schema;
pub mod stats;

pub use actions::{
    Action, Add, CommitInfo, DomainMetadata, Format, Metadata, Protocol, Remove, Txn,
};
pub use schema::{DataType, StructField, StructType};
