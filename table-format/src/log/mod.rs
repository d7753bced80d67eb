//! The Delta log: file naming, segment selection, reading commits and checkpoints.

pub mod checkpoint;
pub mod path;
pub mod segment;

pub use checkpoint::LastCheckpoint;
pub use path::{checkpoint_name, commit_name, LogFileKind, LogFileName};
pub use segment::{select_segment, ListedFile, LogSegment};

use crate::error::{Error, Result};
use crate::protocol::Action;

/// Parses a commit file (newline-delimited JSON actions).
pub fn parse_commit(data: &[u8], name: &str) -> Result<Vec<Action>> {
    let text = std::str::from_utf8(data)
        .map_err(|_| Error::corrupt(name, "commit file is not valid UTF-8"))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match Action::from_json_line(line) {
            Ok(Some(a)) => out.push(a),
            Ok(None) => {}
            Err(e) => {
                return Err(Error::corrupt(
                    name,
                    format!("line {}: invalid action JSON: {e}", i + 1),
                ))
            }
        }
    }
    Ok(out)
}

/// Serializes actions as a commit file.
pub fn serialize_commit(actions: &[Action]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(actions.len() * 256);
    for a in actions {
        out.extend_from_slice(a.to_json_line()?.as_bytes());
        out.push(b'\n');
    }
    Ok(out)
}
