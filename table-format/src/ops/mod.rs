//! Table operations, each a builder over a snapshot that ends in `.execute()`.

pub mod checkpoint;
pub mod create;
pub mod history;
pub mod write;

pub use create::CreateTableBuilder;
pub use write::{SaveMode, WriteBuilder, WriteResult};
