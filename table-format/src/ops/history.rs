//! The commit history: `commitInfo` of the newest commits.

use crate::error::Result;
use crate::log::{LogFileKind, LogFileName};
use crate::protocol::{Action, CommitInfo};
use crate::snapshot::{
    commit_file_times, commit_info_timestamp, format_ms, list_log, read_commits, whole_second_times,
};
use crate::storage::TableStore;

/// One entry of the history.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub version: i64,
    /// The commit timestamp: the in-commit timestamp, else the commit file's
    /// modification time made strictly increasing (what timestamp time travel uses).
    pub timestamp: i64,
    pub commit_info: CommitInfo,
}

impl HistoryEntry {
    /// The entry as the HTTP API and `shoal history --json` show it.
    pub fn to_json(&self) -> serde_json::Value {
        let ci = &self.commit_info.0;
        serde_json::json!({
            "version": self.version,
            "timestamp": format_ms(self.timestamp),
            "timestamp_ms": self.timestamp,
            "operation": self.commit_info.operation(),
            "operation_parameters": ci.get("operationParameters"),
            "operation_metrics": ci.get("operationMetrics"),
            "commit_info": serde_json::Value::Object(ci.clone()),
        })
    }
}

/// The newest `limit` commits (all when `None`), newest first.
pub async fn history(store: &TableStore, limit: Option<usize>) -> Result<Vec<HistoryEntry>> {
    let listed = list_log(store, None).await?;
    let mut commits: Vec<_> = listed
        .into_iter()
        .filter_map(|f| {
            let p = LogFileName::parse(&f.name)?;
            (p.kind == LogFileKind::Commit).then_some((p.version, f))
        })
        .collect();
    if commits.is_empty() {
        return Err(crate::Error::TableNotFound(store.uri().to_string()));
    }
    // Without in-commit timestamps a commit's time is its file's modification time,
    // made strictly increasing (as Delta defines it and as timestamp time travel reads
    // it): a timestamp shown here then travels back to exactly its version.
    let all = commits.clone();
    commits.reverse();
    if let Some(l) = limit {
        commits.truncate(l);
    }
    let read = read_commits(store, &commits).await?;
    let written: std::collections::HashMap<i64, i64> = if whole_second_times(&all) {
        read.iter()
            .filter_map(|(v, _, actions)| Some((*v, commit_info_timestamp(actions)?)))
            .collect()
    } else {
        Default::default()
    };
    let file_times: std::collections::HashMap<i64, i64> =
        commit_file_times(&all, &written).into_iter().collect();
    Ok(read
        .into_iter()
        .map(|(version, file, actions)| {
            let commit_info = actions
                .into_iter()
                .find_map(|a| match a {
                    Action::CommitInfo(c) => Some(c),
                    _ => None,
                })
                .unwrap_or_default();
            let timestamp = commit_info
                .in_commit_timestamp()
                .or_else(|| file_times.get(&version).copied())
                .unwrap_or(file.modified_ms);
            HistoryEntry {
                version,
                timestamp,
                commit_info,
            }
        })
        .collect())
}
