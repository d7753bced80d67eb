//! The conflict checker: decides whether a transaction that lost the commit race may
//! rebase onto the winning commit. Pure.

use std::collections::HashSet;

use crate::error::ConflictKind;
use crate::expr::{may_match_file, BoundExpr};
use crate::protocol::Action;
use crate::snapshot::file_key;

/// What a transaction read and changes, for conflict checks.
#[derive(Debug, Clone, Default)]
pub struct ReadSet {
    /// The transaction's outcome depends on every file of the table (overwrite).
    pub whole_table: bool,
    /// Keys of the files the transaction read.
    pub files_read: HashSet<String>,
    /// Keys of the files the transaction removes.
    pub files_removed: HashSet<String>,
    /// The application ids of the transaction's `txn` actions (several when a group
    /// commit carries the transactions of several producers).
    pub app_ids: Vec<String>,
    /// The transaction changes metadata or protocol itself.
    pub changes_metadata: bool,
    /// The rows the transaction's outcome depends on (DELETE/UPDATE/replaceWhere):
    /// rows added concurrently that may match it are a conflict.
    pub predicate: Option<ReadPredicate>,
}

/// A read predicate with what is needed to test added files against it.
#[derive(Debug, Clone)]
pub struct ReadPredicate {
    pub expr: BoundExpr,
    pub partition_columns: Vec<String>,
}

/// Was the winning commit a blind append (it read nothing)? Delta's WriteSerializable
/// isolation lets those through: they never conflict with reads.
fn is_blind_append(winner: &[Action]) -> bool {
    winner.iter().any(|a| match a {
        Action::CommitInfo(ci) => ci.0.get("isBlindAppend") == Some(&serde_json::Value::Bool(true)),
        _ => false,
    })
}

/// Did the winning commit only rearrange data (OPTIMIZE, Z-order): every add and remove
/// `dataChange: false`, no metadata or protocol change?
fn is_compaction(winner: &[Action]) -> bool {
    winner.iter().all(|a| match a {
        Action::Add(a) => !a.data_change,
        Action::Remove(r) => !r.data_change,
        Action::Protocol(_) | Action::Metadata(_) => false,
        _ => true,
    })
}

/// Checks one winning commit against the transaction.
pub fn check(read: &ReadSet, winner: &[Action]) -> Result<(), ConflictKind> {
    // Under WriteSerializable, rows from blind appends are ordered after this
    // transaction unless it changes the metadata.
    let adds_matter = !is_blind_append(winner) || read.changes_metadata;
    for action in winner {
        match action {
            Action::Protocol(_) => return Err(ConflictKind::ProtocolChanged),
            Action::Metadata(_) => return Err(ConflictKind::MetadataChanged),
            Action::Txn(t) if read.app_ids.contains(&t.app_id) => {
                return Err(ConflictKind::ConcurrentTransaction {
                    app_id: t.app_id.clone(),
                })
            }
            Action::Add(a) if a.data_change && adds_matter => {
                let matches = read.whole_table
                    || read
                        .predicate
                        .as_ref()
                        .is_some_and(|p| may_match_file(&p.expr, a, &p.partition_columns));
                if matches {
                    return Err(ConflictKind::ConcurrentAppend {
                        path: a.path.clone(),
                    });
                }
            }
            Action::Remove(r) => {
                let key = file_key(&r.path, r.deletion_vector.as_ref());
                if read.files_removed.contains(&key) {
                    let path = r.path.clone();
                    return Err(if is_compaction(winner) {
                        ConflictKind::ConcurrentCompaction { path }
                    } else {
                        ConflictKind::ConcurrentDeleteDelete { path }
                    });
                }
                if r.data_change && (read.whole_table || read.files_read.contains(&key)) {
                    return Err(ConflictKind::ConcurrentDeleteRead {
                        path: r.path.clone(),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Action, Txn};

    fn add(path: &str) -> Action {
        Action::from_json_line(&format!(
            r#"{{"add":{{"path":"{path}","partitionValues":{{}},"size":1,"modificationTime":1,"dataChange":true}}}}"#
        ))
        .unwrap()
        .unwrap()
    }

    fn remove(path: &str) -> Action {
        Action::from_json_line(&format!(
            r#"{{"remove":{{"path":"{path}","dataChange":true}}}}"#
        ))
        .unwrap()
        .unwrap()
    }

    #[test]
    fn blind_appends_never_conflict_with_appends() {
        assert!(check(&ReadSet::default(), &[add("a")]).is_ok());
        assert!(check(&ReadSet::default(), &[remove("a")]).is_ok());
    }

    #[test]
    fn overwrite_conflicts_with_concurrent_append() {
        let read = ReadSet {
            whole_table: true,
            ..Default::default()
        };
        assert!(matches!(
            check(&read, &[add("a")]),
            Err(ConflictKind::ConcurrentAppend { .. })
        ));
    }

    #[test]
    fn blind_appends_pass_reads_unless_metadata_changes() {
        let info = Action::from_json_line(r#"{"commitInfo":{"isBlindAppend":true}}"#)
            .unwrap()
            .unwrap();
        let mut read = ReadSet {
            whole_table: true,
            ..Default::default()
        };
        assert!(check(&read, &[info.clone(), add("a")]).is_ok());
        read.changes_metadata = true;
        assert!(check(&read, &[info, add("a")]).is_err());
    }

    #[test]
    fn same_app_id_conflicts() {
        let read = ReadSet {
            app_ids: vec!["other".into(), "app".into()],
            ..Default::default()
        };
        let winner = [Action::Txn(Txn {
            app_id: "app".into(),
            version: 1,
            last_updated: None,
        })];
        assert!(check(&read, &winner).is_err());
    }

    #[test]
    fn removing_a_compacted_file_is_a_compaction_conflict() {
        let mut read = ReadSet::default();
        read.files_read.insert("a.parquet".into());
        read.files_removed.insert("a.parquet".into());
        let Action::Remove(mut r) = remove("a.parquet") else {
            unreachable!()
        };
        r.data_change = false;
        let Action::Add(mut a) = add("b.parquet") else {
            unreachable!()
        };
        a.data_change = false;
        let winner = vec![Action::Remove(r.clone()), Action::Add(a)];
        assert!(matches!(
            check(&read, &winner),
            Err(ConflictKind::ConcurrentCompaction { .. })
        ));
        // A commit that also changed data is a plain delete-delete conflict.
        let winner = vec![Action::Remove(r), add("c.parquet")];
        assert!(matches!(
            check(&read, &winner),
            Err(ConflictKind::ConcurrentDeleteDelete { .. })
        ));
    }

    #[test]
    fn delete_delete_conflicts() {
        let read = ReadSet {
            files_removed: HashSet::from(["x y".to_string()]),
            ..Default::default()
        };
        assert!(matches!(
            check(&read, &[remove("x%20y")]),
            Err(ConflictKind::ConcurrentDeleteDelete { .. })
        ));
    }
}
