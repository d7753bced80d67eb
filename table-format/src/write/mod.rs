//! The write path: schema enforcement and evolution, partition splitting, Parquet
//! encoding with statistics, target file sizes.

mod chunk;
mod delta_chunk;
mod dictionary_chunk;
pub mod enforce;
pub mod writer;

pub use enforce::{conform_batch, merge_schemas, SchemaMode};
pub(crate) use writer::cores;
pub use writer::{delete_unreferenced, DataWriter, WriterOptions, DEFAULT_TARGET_FILE_SIZE};
