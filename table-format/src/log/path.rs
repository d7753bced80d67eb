//! Log file names (PROTOCOL.md "Delta Log Entries", "Checkpoints") parsed into a type.

/// What a file in `_delta_log/` is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogFileKind {
    /// `<v>.json`
    Commit,
    /// `<v>.checkpoint.parquet`
    SingleCheckpoint,
    /// `<v>.checkpoint.<part>.<parts>.parquet`
    MultiPartCheckpoint { part: u32, parts: u32 },
    /// `<v>.checkpoint.<uuid>.{json,parquet}` (v2 checkpoints)
    UuidCheckpoint,
    /// `<v>.crc`, `<a>.<b>.compacted.json` and anything else Shoal ignores.
    Other,
}

/// A parsed log file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFileName {
    pub version: i64,
    pub kind: LogFileKind,
}

/// The commit file name of a version.
pub fn commit_name(version: i64) -> String {
    format!("{version:020}.json")
}

/// The single-file checkpoint name of a version.
pub fn checkpoint_name(version: i64) -> String {
    format!("{version:020}.checkpoint.parquet")
}

/// A name that sorts just before every file of `version`, for listing with an offset.
pub fn listing_offset(version: i64) -> String {
    format!("{:020}", version)
}

impl LogFileName {
    /// Parses a file name; `None` for names that are not versioned log files
    /// (e.g. `_last_checkpoint`, temporary files).
    pub fn parse(name: &str) -> Option<Self> {
        let (digits, rest) = name.split_once('.')?;
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let version: i64 = digits.parse().ok()?;
        let kind = match rest {
            "json" => LogFileKind::Commit,
            "checkpoint.parquet" => LogFileKind::SingleCheckpoint,
            _ => match rest.strip_prefix("checkpoint.") {
                Some(tail) => {
                    let parts: Vec<&str> = tail.split('.').collect();
                    match parts.as_slice() {
                        [p, n, "parquet"]
                            if p.len() == 10
                                && n.len() == 10
                                && p.bytes().chain(n.bytes()).all(|b| b.is_ascii_digit()) =>
                        {
                            LogFileKind::MultiPartCheckpoint {
                                part: p.parse().ok()?,
                                parts: n.parse().ok()?,
                            }
                        }
                        [_, "json" | "parquet"] => LogFileKind::UuidCheckpoint,
                        _ => LogFileKind::Other,
                    }
                }
                None => LogFileKind::Other,
            },
        };
        Some(LogFileName { version, kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!(
            LogFileName::parse("00000000000000000012.json"),
            Some(LogFileName {
                version: 12,
                kind: LogFileKind::Commit
            })
        );
        assert_eq!(
            LogFileName::parse("00000000000000000010.checkpoint.parquet").map(|n| n.kind),
            Some(LogFileKind::SingleCheckpoint)
        );
        assert_eq!(
            LogFileName::parse("00000000000000000010.checkpoint.0000000002.0000000003.parquet")
                .map(|n| n.kind),
            Some(LogFileKind::MultiPartCheckpoint { part: 2, parts: 3 })
        );
        assert_eq!(
            LogFileName::parse(
                "00000000000000000010.checkpoint.80a083e8-7026-4e79-81be-64bd76c43a11.json"
            )
            .map(|n| n.kind),
            Some(LogFileKind::UuidCheckpoint)
        );
        assert_eq!(
            LogFileName::parse("00000000000000000010.crc").map(|n| n.kind),
            Some(LogFileKind::Other)
        );
        assert_eq!(LogFileName::parse("_last_checkpoint"), None);
        assert_eq!(LogFileName::parse(".00000000000000000001.json.tmp"), None);
        assert_eq!(commit_name(7), "00000000000000000007.json");
    }
}
