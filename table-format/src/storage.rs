//! The one storage seam: table locations over `object_store`, put-if-absent as a
//! first-class call, and listing of the log.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};

/// Where a table lives: a store and the table's root prefix inside it.
#[derive(Clone)]
pub struct TableStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    uri: String,
    /// The table directory when the store is the local file system: log listings
    /// then read the directory and stat only the entries they return.
    local_root: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for TableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableStore")
            .field("uri", &self.uri)
            .finish()
    }
}

/// The outcome of a put-if-absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum PutOutcome {
    Created,
    AlreadyExists,
}

impl TableStore {
    /// A table at a URI: a local path, `file://...` or `memory://...` (a fresh store).
    pub fn from_uri(uri: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidUri {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = uri.strip_prefix("memory://") {
            let root = Path::parse(rest.trim_matches('/')).map_err(|e| bad(&e.to_string()))?;
            return Ok(Self::new(Arc::new(InMemory::new()), root, uri));
        }
        let local = if let Some(rest) = uri.strip_prefix("file://") {
            let url =
                url::Url::parse(&format!("file://{rest}")).map_err(|e| bad(&e.to_string()))?;
            url.to_file_path()
                .map_err(|_| bad("not a local file URL"))?
        } else if uri.contains("://") {
            let scheme = uri.split("://").next().unwrap_or_default();
            return Err(bad(&format!(
                "the `{scheme}` scheme is not supported by this build (local paths, file:// and memory:// are)"
            )));
        } else {
            std::path::PathBuf::from(uri)
        };
        let abs = if local.is_absolute() {
            local
        } else {
            std::env::current_dir()?.join(local)
        };
        let abs = normalize(&abs);
        let root = Path::from_absolute_path(&abs).map_err(|e| bad(&e.to_string()))?;
        let mut store = Self::new(Arc::new(LocalFileSystem::new()), root, uri);
        store.local_root = Some(abs);
        Ok(store)
    }

    /// A table under `root` in an existing store.
    pub fn new(store: Arc<dyn ObjectStore>, root: Path, uri: &str) -> Self {
        TableStore {
            store,
            root,
            uri: uri.to_string(),
            local_root: None,
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The location of a file in `_delta_log/`.
    pub fn log_path(&self, name: &str) -> Path {
        self.root.clone().join("_delta_log").join(name)
    }

    fn log_dir(&self) -> Path {
        self.root.clone().join("_delta_log")
    }

    /// The location of a file given its store-relative location (decoded `add.path`).
    /// Absolute URIs in `add.path` are refused: Shoal reads tables in one location only.
    pub fn data_path(&self, relative: &str) -> Result<Path> {
        if relative.contains("://") || relative.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "absolute file paths in the log are not supported: `{relative}`"
            )));
        }
        let mut p = self.root.clone();
        for part in relative.split('/').filter(|s| !s.is_empty()) {
            let part = object_store::path::PathPart::parse(part).map_err(|e| {
                Error::InvalidArgument(format!("invalid file path `{relative}`: {e}"))
            })?;
            p = p.join(part);
        }
        Ok(p)
    }

    /// Creates `path` only if nothing is there: the commit primitive.
    pub async fn put_if_absent(&self, path: &Path, data: Bytes) -> Result<PutOutcome> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(path, PutPayload::from_bytes(data), opts)
            .await
        {
            Ok(_) => Ok(PutOutcome::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes (or replaces) an object.
    pub async fn put(&self, path: &Path, data: Bytes) -> Result<()> {
        self.store.put(path, PutPayload::from_bytes(data)).await?;
        Ok(())
    }

    /// Reads a whole object; `Ok(None)` when it does not exist.
    pub async fn get_opt(&self, path: &Path) -> Result<Option<Bytes>> {
        match self.store.get(path).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn head(&self, path: &Path) -> Result<Option<ObjectMeta>> {
        match self.store.head(path).await {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Lists `_delta_log/` entries whose names sort after `after` (a file name), sorted.
    /// Returns (file name, meta) pairs; names only, no subdirectories.
    pub async fn list_log(&self, after: Option<&str>) -> Result<Vec<(String, ObjectMeta)>> {
        if let Some(root) = &self.local_root {
            let dir = root.join("_delta_log");
            let log_dir = self.log_dir();
            let after = after.map(str::to_string);
            return tokio::task::spawn_blocking(move || {
                list_local_dir(&dir, &log_dir, after.as_deref())
            })
            .await
            .map_err(|e| Error::Task(e.to_string()))?;
        }
        let dir = self.log_dir();
        let stream = match after {
            Some(name) => self
                .store
                .list_with_offset(Some(&dir), &self.log_path(name)),
            None => self.store.list(Some(&dir)),
        };
        let metas: Vec<ObjectMeta> = match stream.try_collect().await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let prefix_len = dir.parts().count();
        let mut out: Vec<(String, ObjectMeta)> = metas
            .into_iter()
            .filter(|m| m.location.parts().count() == prefix_len + 1)
            .filter_map(|m| {
                let name = m.location.filename()?.to_string();
                Some((name, m))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Whether the table lives on the local file system.
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    /// Lists every object under the table root (for vacuum-like tools and tests).
    pub async fn list_all(&self) -> Result<Vec<ObjectMeta>> {
        Ok(self.store.list(Some(&self.root)).try_collect().await?)
    }

    /// The table's root prefix inside the store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// One level of the directory `prefix`: its objects and its subdirectories (as
    /// prefixes). For walks that prune whole directories, as VACUUM prunes `_delta_log/`.
    pub async fn list_dir(&self, prefix: &Path) -> Result<(Vec<ObjectMeta>, Vec<Path>)> {
        match self.store.list_with_delimiter(Some(prefix)).await {
            Ok(r) => Ok((r.objects, r.common_prefixes)),
            Err(object_store::Error::NotFound { .. }) => Ok((Vec::new(), Vec::new())),
            Err(e) => Err(e.into()),
        }
    }

    /// Streams every object under `prefix`, recursively, in no particular order, without
    /// collecting the listing.
    pub fn list_stream(
        &self,
        prefix: &Path,
    ) -> futures::stream::BoxStream<'static, Result<ObjectMeta>> {
        futures::StreamExt::boxed(self.store.list(Some(prefix)).map_err(Error::from))
    }

    /// The path of `location` relative to the table root.
    pub fn relative(&self, location: &Path) -> Option<String> {
        let parts: Vec<_> = location.prefix_match(&self.root)?.collect();
        Some(
            parts
                .iter()
                .map(|p| p.as_ref())
                .collect::<Vec<_>>()
                .join("/"),
        )
    }
}

/// Removes `.` and `..` components without touching the filesystem.
fn normalize(p: &std::path::Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Lists the files of a local directory whose names sort after `after`, stat'ing only
/// those. Staging files of in-flight writes (`name#n`) and hidden files are skipped.
fn list_local_dir(
    dir: &std::path::Path,
    location: &Path,
    after: Option<&str>,
) -> Result<Vec<(String, ObjectMeta)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') || name.contains('#') || after.is_some_and(|a| name.as_str() <= a)
        {
            continue;
        }
        names.push(name);
    }
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let meta = match std::fs::metadata(dir.join(&name)) {
            Ok(m) => m,
            // Removed since the directory was read (log cleanup): not listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        if !meta.is_file() {
            continue;
        }
        let modified: chrono::DateTime<chrono::Utc> = meta.modified()?.into();
        let Ok(part) = object_store::path::PathPart::parse(&name) else {
            continue;
        };
        out.push((
            name.clone(),
            ObjectMeta {
                location: location.clone().join(part),
                last_modified: modified,
                size: meta.len(),
                e_tag: None,
                version: None,
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_if_absent_has_one_winner() {
        let store = TableStore::new(Arc::new(InMemory::new()), Path::from("t"), "memory://t");
        let p = store.log_path("00000000000000000000.json");
        assert_eq!(
            store.put_if_absent(&p, Bytes::from("a")).await.unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            store.put_if_absent(&p, Bytes::from("b")).await.unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(store.get_opt(&p).await.unwrap().unwrap(), Bytes::from("a"));
        let listed = store.list_log(None).await.unwrap();
        assert_eq!(listed.len(), 1);
    }

    #[tokio::test]
    async fn local_paths_keep_escaped_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = TableStore::from_uri(dir.path().to_str().unwrap()).unwrap();
        let p = store.data_path("x=A%2FA/f.parquet").unwrap();
        store.put(&p, Bytes::from("z")).await.unwrap();
        assert!(dir.path().join("x=A%2FA").join("f.parquet").exists());
        assert_eq!(store.relative(&p).unwrap(), "x=A%2FA/f.parquet");
    }
}
