//! The warehouse: table names, their locations under the root URI, listing and dropping.
//! Every path the server touches is built here from a validated name, so nothing a
//! client sends can address a location outside the warehouse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use shoal_format::{StorageOptions, Table, TableStore};

use crate::error::{ApiError, ApiResult};

/// Longest table name accepted.
pub const MAX_NAME_LEN: usize = 200;

/// Checks a table name: `[A-Za-z0-9_][A-Za-z0-9_.-]*`, optionally `namespace.table`,
/// with no `..`, no trailing dot, at most [`MAX_NAME_LEN`] characters.
pub fn validate_name(name: &str) -> ApiResult<()> {
    let mut chars = name.chars();
    let first_ok = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok
        || !rest_ok
        || name.len() > MAX_NAME_LEN
        || name.contains("..")
        || name.ends_with('.')
        || name == "_delta_log"
    {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!(
                "invalid table name `{}`: use [A-Za-z0-9_][A-Za-z0-9_.-]* (optionally `namespace.table`), at most {MAX_NAME_LEN} characters, no `..`",
                name.escape_debug()
            ),
        ));
    }
    Ok(())
}

/// The namespace of a name: the part before the first dot, if any.
pub fn namespace(name: &str) -> Option<&str> {
    name.split_once('.').map(|(ns, _)| ns)
}

/// Tables under one root URI, opened with the warehouse's storage options (S3
/// credentials, endpoint, …; the `AWS_*` environment applies under them).
#[derive(Clone)]
pub struct Warehouse {
    root: String,
    options: Arc<StorageOptions>,
    /// Handles on opened tables: one object-store client (and its connection pool) per
    /// table instead of one per request. Holds locations only, never table state.
    handles: Arc<Mutex<HashMap<String, Table>>>,
}

impl std::fmt::Debug for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the options: they may hold credentials.
        f.debug_struct("Warehouse")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Most table handles kept; past it the cache starts over (handles are cheap to make).
const MAX_HANDLES: usize = 4096;

/// Tables probed at once when listing the warehouse.
const LIST_CONCURRENCY: usize = 16;

impl Warehouse {
    /// A warehouse on the `AWS_*` environment alone (or local disk).
    pub fn new(root: impl Into<String>) -> Self {
        Self::with_options(root, StorageOptions::new())
    }

    /// A warehouse whose stores are opened with explicit storage options.
    pub fn with_options(root: impl Into<String>, options: StorageOptions) -> Self {
        let root: String = root.into();
        let trimmed = root.trim_end_matches('/');
        Warehouse {
            root: if trimmed.is_empty() {
                root
            } else {
                trimmed.to_string()
            },
            options: Arc::new(options),
            handles: Arc::default(),
        }
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// The URI of a table (the name must be validated).
    pub fn table_uri(&self, name: &str) -> String {
        format!("{}/{}", self.root, name)
    }

    /// A handle on a table by a validated name.
    pub fn table(&self, name: &str) -> ApiResult<Table> {
        validate_name(name)?;
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = handles.get(name) {
            return Ok(t.clone());
        }
        let table = Table::at_with_options(&self.table_uri(name), &self.options)?;
        if handles.len() >= MAX_HANDLES {
            handles.clear();
        }
        handles.insert(name.to_string(), table.clone());
        Ok(table)
    }

    fn root_store(&self) -> ApiResult<TableStore> {
        Ok(TableStore::from_uri_with_options(
            &self.root,
            &self.options,
        )?)
    }

    /// Makes sure the warehouse root exists (local disk) and can be listed.
    pub async fn check(&self) -> ApiResult<()> {
        let store = self.root_store()?;
        if store.is_local() {
            let path = self
                .root
                .strip_prefix("file://")
                .unwrap_or(&self.root)
                .to_string();
            tokio::fs::create_dir_all(&path)
                .await
                .map_err(|e| ApiError::unavailable(format!("warehouse `{path}`: {e}")))?;
        }
        store.list_dir(store.root()).await?;
        Ok(())
    }

    /// The names of the tables in the warehouse (directories holding `_delta_log/`),
    /// sorted: one delimited listing of the root, then per directory the first page of
    /// its `_delta_log/` listing (on S3 one request each, however long the log).
    pub async fn list(&self) -> ApiResult<Vec<String>> {
        let store = self.root_store()?;
        let (_, dirs) = store.list_dir(store.root()).await?;
        let candidates: Vec<_> = dirs
            .into_iter()
            .filter_map(|dir| {
                let name = dir.filename()?.to_string();
                validate_name(&name).ok()?;
                Some((name, dir))
            })
            .collect();
        let probes = futures::stream::iter(candidates.into_iter().map(|(name, dir)| {
            let store = store.clone();
            async move {
                let table = store.holds_table(&dir).await?;
                Ok::<_, shoal_format::Error>(table.then_some(name))
            }
        }))
        .buffer_unordered(LIST_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
        let mut names: Vec<String> = probes.into_iter().flatten().collect();
        names.sort();
        Ok(names)
    }

    /// Deletes every object of a table, the log first (so the table stops existing
    /// before its data goes). Returns the number of objects deleted.
    pub async fn drop_table(&self, name: &str) -> ApiResult<usize> {
        let table = self.table(name)?;
        let store = table.store();
        let mut objects = store.list_all().await?;
        // Log files first, newest first, so readers never see a log with holes at the end.
        objects.sort_by_key(|o| {
            let p = o.location.as_ref();
            (
                !p.contains("/_delta_log/"),
                std::cmp::Reverse(p.to_string()),
            )
        });
        for o in &objects {
            store.delete(&o.location).await?;
        }
        if store.is_local() {
            let path = self.table_uri(name);
            let path = path.strip_prefix("file://").unwrap_or(&path).to_string();
            let _ = tokio::fs::remove_dir_all(&path).await;
        }
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        Ok(objects.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["events", "sales.orders", "a-b_c.d-e", "_x", "T1"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            "a\\b",
            ".hidden",
            "a..b",
            "-x",
            "a.",
            "a b",
            "é",
            "_delta_log",
            "a%2fb",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_name(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
        assert_eq!(namespace("sales.orders"), Some("sales"));
        assert_eq!(namespace("orders"), None);
    }
}
