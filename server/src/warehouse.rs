//! The warehouse: table names, their locations under the root URI, listing and dropping.
//! Every path the server touches is built here from a validated name, so nothing a
//! client sends can address a location outside the warehouse.

use shoal_format::{Table, TableStore};

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

/// Tables under one root URI.
#[derive(Debug, Clone)]
pub struct Warehouse {
    root: String,
}

impl Warehouse {
    pub fn new(root: impl Into<String>) -> Self {
        let root: String = root.into();
        let trimmed = root.trim_end_matches('/');
        Warehouse {
            root: if trimmed.is_empty() {
                root
            } else {
                trimmed.to_string()
            },
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
        Ok(Table::at(&self.table_uri(name))?)
    }

    /// Makes sure the warehouse root exists (local disk) and can be listed.
    pub async fn check(&self) -> ApiResult<()> {
        let store = TableStore::from_uri(&self.root)?;
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
    /// sorted. The only directory listing of the warehouse.
    pub async fn list(&self) -> ApiResult<Vec<String>> {
        let store = TableStore::from_uri(&self.root)?;
        let (_, dirs) = store.list_dir(store.root()).await?;
        let mut names = Vec::new();
        for dir in dirs {
            let Some(name) = dir.filename().map(str::to_string) else {
                continue;
            };
            if validate_name(&name).is_err() {
                continue;
            }
            let log = dir.clone().join("_delta_log");
            let (objects, _) = store.list_dir(&log).await?;
            if !objects.is_empty() {
                names.push(name);
            }
        }
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
