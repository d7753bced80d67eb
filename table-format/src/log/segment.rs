//! Log segment selection: which checkpoint and commits make up a version. Pure.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::log::path::{LogFileKind, LogFileName};

/// A file of the log as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    pub name: String,
    pub size: u64,
    /// Last modification, milliseconds since the epoch.
    pub modified_ms: i64,
}

/// The files to replay for one version: a checkpoint (possibly multi-part) and the
/// commits after it, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSegment {
    pub version: i64,
    pub checkpoint_version: Option<i64>,
    pub checkpoint_files: Vec<ListedFile>,
    /// Commits `checkpoint_version+1 ..= version` (or `0 ..= version`), in order.
    pub commits: Vec<(i64, ListedFile)>,
}

/// Chooses the segment for `target` (latest when `None`) from a listing of `_delta_log/`.
/// The listing may start at a checkpoint (listing with an offset); then versions before it
/// are simply absent.
pub fn select_segment(
    files: &[ListedFile],
    target: Option<i64>,
    table: &str,
) -> Result<LogSegment> {
    let mut commits: BTreeMap<i64, &ListedFile> = BTreeMap::new();
    // version -> (single checkpoint, multi-part parts by total)
    let mut singles: BTreeMap<i64, &ListedFile> = BTreeMap::new();
    let mut multis: BTreeMap<(i64, u32), BTreeMap<u32, &ListedFile>> = BTreeMap::new();
    // Bounds of the whole listing, for error messages.
    let (mut first_any, mut last_any) = (None::<i64>, None::<i64>);
    for f in files {
        let Some(parsed) = LogFileName::parse(&f.name) else {
            continue;
        };
        if matches!(
            parsed.kind,
            LogFileKind::Commit
                | LogFileKind::SingleCheckpoint
                | LogFileKind::MultiPartCheckpoint { .. }
        ) {
            first_any = Some(first_any.map_or(parsed.version, |x: i64| x.min(parsed.version)));
            last_any = Some(last_any.map_or(parsed.version, |x: i64| x.max(parsed.version)));
        }
        if target.is_some_and(|t| parsed.version > t) {
            continue;
        }
        match parsed.kind {
            LogFileKind::Commit => {
                commits.insert(parsed.version, f);
            }
            LogFileKind::SingleCheckpoint => {
                singles.insert(parsed.version, f);
            }
            LogFileKind::MultiPartCheckpoint { part, parts } => {
                multis
                    .entry((parsed.version, parts))
                    .or_default()
                    .insert(part, f);
            }
            LogFileKind::UuidCheckpoint | LogFileKind::Other => {}
        }
    }
    // Complete checkpoints: every part of a multi-part set must be present.
    let mut complete: BTreeMap<i64, Vec<ListedFile>> = BTreeMap::new();
    for ((v, parts), got) in &multis {
        if got.len() == *parts as usize && (1..=*parts).all(|p| got.contains_key(&p)) {
            complete.insert(*v, got.values().map(|f| (*f).clone()).collect());
        }
    }
    for (v, f) in &singles {
        complete.insert(*v, vec![(*f).clone()]);
    }
    let latest_commit = commits.keys().next_back().copied();
    let latest_checkpoint = complete.keys().next_back().copied();
    let version = match target {
        Some(t) => t,
        None => match (latest_commit, latest_checkpoint) {
            (None, None) => return Err(Error::TableNotFound(table.to_string())),
            (a, b) => a.unwrap_or(-1).max(b.unwrap_or(-1)),
        },
    };
    let checkpoint_version = latest_checkpoint;
    let start = checkpoint_version.map(|c| c + 1).unwrap_or(0);
    let mut seg_commits = Vec::new();
    let mut expected = start;
    let end = (version + 1).max(start);
    for (v, f) in commits.range(start..end) {
        if *v != expected {
            return Err(Error::corrupt(
                table,
                format!("commit {expected} is missing from the log (found {v} after it)"),
            ));
        }
        seg_commits.push((*v, (*f).clone()));
        expected += 1;
    }
    if expected != version + 1 {
        let Some(latest) = last_any else {
            return Err(Error::TableNotFound(table.to_string()));
        };
        let reason = if version > latest {
            format!("the latest version is {latest}")
        } else if checkpoint_version.is_none() && !commits.contains_key(&0) {
            format!(
                "its log entries were cleaned up and no checkpoint covers it (the earliest version in the log is {})",
                first_any.unwrap_or(0)
            )
        } else {
            format!("commits {expected}..={version} are missing")
        };
        return Err(Error::VersionNotFound { version, reason });
    }
    Ok(LogSegment {
        version,
        checkpoint_version,
        checkpoint_files: checkpoint_version
            .and_then(|c| complete.get(&c).cloned())
            .unwrap_or_default(),
        commits: seg_commits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> ListedFile {
        ListedFile {
            name: name.into(),
            size: 1,
            modified_ms: 0,
        }
    }

    fn names(versions: std::ops::RangeInclusive<i64>) -> Vec<ListedFile> {
        versions.map(|v| f(&format!("{v:020}.json"))).collect()
    }

    #[test]
    fn latest_uses_last_complete_checkpoint() {
        let mut files = names(0..=12);
        files.push(f("00000000000000000010.checkpoint.parquet"));
        files.push(f(
            "00000000000000000012.checkpoint.0000000001.0000000002.parquet",
        ));
        let seg = select_segment(&files, None, "t").unwrap();
        assert_eq!(seg.version, 12);
        assert_eq!(seg.checkpoint_version, Some(10));
        assert_eq!(
            seg.commits.iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![11, 12]
        );
    }

    #[test]
    fn multi_part_checkpoint_complete() {
        let mut files = names(0..=3);
        files.push(f(
            "00000000000000000002.checkpoint.0000000001.0000000002.parquet",
        ));
        files.push(f(
            "00000000000000000002.checkpoint.0000000002.0000000002.parquet",
        ));
        let seg = select_segment(&files, None, "t").unwrap();
        assert_eq!(seg.checkpoint_version, Some(2));
        assert_eq!(seg.checkpoint_files.len(), 2);
    }

    #[test]
    fn time_travel_before_checkpoint_replays_commits() {
        let mut files = names(0..=12);
        files.push(f("00000000000000000010.checkpoint.parquet"));
        let seg = select_segment(&files, Some(5), "t").unwrap();
        assert_eq!(seg.checkpoint_version, None);
        assert_eq!(seg.commits.len(), 6);
    }

    #[test]
    fn cleaned_up_versions_are_clear_errors() {
        let mut files = names(8..=12);
        files.push(f("00000000000000000010.checkpoint.parquet"));
        let err = select_segment(&files, Some(5), "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("version 5") && err.contains("cleaned up"),
            "{err}"
        );
        let err = select_segment(&files, Some(20), "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("latest version is 12"), "{err}");
        assert!(select_segment(&files, Some(10), "t").is_ok());
    }

    #[test]
    fn gaps_are_corruption() {
        let mut files = names(0..=3);
        files.remove(2);
        assert!(select_segment(&files, None, "t").is_err());
    }
}
