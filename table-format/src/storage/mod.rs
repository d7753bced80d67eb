//! The one storage seam: table locations over `object_store` (local disk, S3 and
//! S3-compatible stores, Google Cloud Storage, Azure Blob Storage, memory), put-if-absent
//! as a first-class call, listing of the log, multipart uploads of large objects, and
//! bounded retries of idempotent requests.

mod config;
pub mod faults;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};

use config::ShoalOptions;
pub use config::{
    parse_storage_option, RedactedOptions, StorageOptions, OPT_MAX_RETRIES,
    OPT_MULTIPART_THRESHOLD, OPT_RETRY_TIMEOUT, OPT_UNSAFE_SINGLE_WRITER,
};

/// Where a table lives: a store and the table's root prefix inside it.
#[derive(Clone)]
pub struct TableStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    uri: String,
    /// The table directory when the store is the local file system: log listings
    /// then read the directory and stat only the entries they return.
    local_root: Option<std::path::PathBuf>,
    /// Settings from the storage options (behind an `Arc`: handles stay small).
    options: Arc<ShoalOptions>,
}

impl std::fmt::Debug for TableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the options: they may hold credentials.
        f.debug_struct("TableStore")
            .field("uri", &self.uri)
            .field("atomic_create", &self.options.atomic_create)
            .finish_non_exhaustive()
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
    /// A table at a URI: a local path, `file://...`, `s3://bucket/prefix`,
    /// `gs://bucket/prefix`, `az://container/prefix` (also `azure://`, `adl://`, `abfs://`,
    /// `abfss://container@account.dfs.core.windows.net/prefix`), each configured from its
    /// standard environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`), or `memory://...`
    /// (a fresh store).
    pub fn from_uri(uri: &str) -> Result<Self> {
        Self::from_uri_with_options(uri, &StorageOptions::new())
    }

    /// A table at a URI with explicit storage options (see [`StorageOptions`]); for cloud
    /// stores they override the environment. Refuses a store that cannot create a file
    /// only if it is absent, unless [`OPT_UNSAFE_SINGLE_WRITER`] is set.
    pub fn from_uri_with_options(uri: &str, options: &StorageOptions) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidUri {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        let scheme = uri.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if let Some(cloud) = scheme.as_deref().and_then(config::Cloud::from_scheme) {
            let built = config::cloud(uri, cloud, options)?;
            if !built.atomic_create && !built.options.unsafe_single_writer {
                return Err(bad(&format!(
                    "this store cannot create a file only if it is absent (conditional put is \
                     disabled), so concurrent commits could overwrite each other; set storage \
                     option `{OPT_UNSAFE_SINGLE_WRITER}=true` only if a single process ever writes"
                )));
            }
            let mut store = Self::new(built.store, built.root, uri);
            let mut options = built.options;
            options.atomic_create = built.atomic_create;
            store.options = Arc::new(options);
            return Ok(store);
        }
        // Local and memory stores take Shoal's own options only.
        let (shoal, rest) = config::split_options(uri, options)?;
        if let Some((key, _)) = rest.first() {
            return Err(bad(&format!(
                "storage option `{key}` does not apply to this store"
            )));
        }
        let mut store = Self::local_or_memory(uri, &scheme)?;
        store.options = Arc::new(shoal);
        Ok(store)
    }

    fn local_or_memory(uri: &str, scheme: &Option<String>) -> Result<Self> {
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
        } else if let Some(scheme) = scheme {
            return Err(config::unsupported_scheme(uri, scheme));
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
            options: Arc::new(ShoalOptions::default()),
        }
    }

    /// The same table over a wrapped store (a fault-injecting or recording store in
    /// tests). Local fast paths are turned off so every request goes through `wrap`.
    pub fn map_store(
        &self,
        wrap: impl FnOnce(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore>,
    ) -> Self {
        let mut out = self.clone();
        out.store = wrap(self.store.clone());
        out.local_root = None;
        out
    }

    /// Whether put-if-absent is atomic in the store (false only in the unsafe
    /// single-writer mode).
    pub fn atomic_create(&self) -> bool {
        self.options.atomic_create
    }

    /// Bound on the time one request (or one commit's log write) spends retrying
    /// transient errors ([`OPT_RETRY_TIMEOUT`]).
    pub fn retry_timeout(&self) -> Duration {
        self.options.retry_timeout
    }

    /// Objects at least this large are uploaded in parts.
    pub fn multipart_threshold(&self) -> usize {
        self.options.multipart_threshold
    }

    /// Runs an idempotent request, retrying transient failures with exponential backoff
    /// for at most the configured attempts and time. Permanent errors return at once.
    async fn retrying<T, F, Fut>(&self, mut request: F) -> object_store::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        let started = Instant::now();
        let mut delay = Duration::from_millis(25);
        let mut attempt = 0usize;
        loop {
            attempt += 1;
            match request().await {
                Err(e)
                    if is_transient(&e)
                        && attempt < STORE_ATTEMPTS
                        && started.elapsed() + delay < self.options.retry_timeout =>
                {
                    tracing::debug!(attempt, error = %e, "transient store error; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
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

    /// Creates `path` only if nothing is there: the commit primitive. Not retried
    /// here: after a transient error the write may or may not have happened, and only
    /// the caller knows how to tell (a commit reads its transaction id back).
    pub async fn put_if_absent(&self, path: &Path, data: Bytes) -> Result<PutOutcome> {
        if !self.options.atomic_create {
            // Unsafe single-writer mode: check, then write.
            if self.head(path).await?.is_some() {
                return Ok(PutOutcome::AlreadyExists);
            }
            self.put(path, data).await?;
            return Ok(PutOutcome::Created);
        }
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

    /// Writes (or replaces) an object; objects of at least [`Self::multipart_threshold`]
    /// bytes on a remote store go up as a multipart upload. Retried on transient errors
    /// (writing the same bytes again is harmless).
    pub async fn put(&self, path: &Path, data: Bytes) -> Result<()> {
        if self.local_root.is_none() && data.len() >= self.options.multipart_threshold {
            return self.put_multipart(path, data).await;
        }
        self.retrying(|| self.store.put(path, PutPayload::from_bytes(data.clone())))
            .await?;
        Ok(())
    }

    /// Uploads `data` in parts of at least [`MULTIPART_PART_SIZE`] bytes; the object
    /// appears only when the upload completes, and a failed upload is aborted.
    pub async fn put_multipart(&self, path: &Path, data: Bytes) -> Result<()> {
        let attempt = || async {
            let upload = self.store.put_multipart(path).await?;
            let mut writer =
                object_store::WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART_SIZE);
            writer.put(data.clone());
            match writer.finish().await {
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            }
        };
        self.retrying(attempt).await?;
        Ok(())
    }

    /// Starts a multipart upload that takes bytes as they are produced: each part of
    /// [`MULTIPART_PART_SIZE`] goes up as soon as it is full (requests are retried by the
    /// client). The object appears only on `finish`; `abort` discards the parts.
    pub async fn start_upload(&self, path: &Path) -> Result<object_store::WriteMultipart> {
        let upload = self.retrying(|| self.store.put_multipart(path)).await?;
        Ok(object_store::WriteMultipart::new_with_chunk_size(
            upload,
            MULTIPART_PART_SIZE,
        ))
    }

    /// Reads a whole object; `Ok(None)` when it does not exist.
    pub async fn get_opt(&self, path: &Path) -> Result<Option<Bytes>> {
        let read = || async { self.store.get(path).await?.bytes().await };
        match self.retrying(read).await {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads bytes `range` of an object (a ranged GET on object stores).
    pub async fn get_range(&self, path: &Path, range: std::ops::Range<u64>) -> Result<Bytes> {
        Ok(self
            .retrying(|| self.store.get_range(path, range.clone()))
            .await?)
    }

    pub async fn head(&self, path: &Path) -> Result<Option<ObjectMeta>> {
        match self.retrying(|| self.store.head(path)).await {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete(&self, path: &Path) -> Result<()> {
        match self.retrying(|| self.store.delete(path)).await {
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
        let offset = after.map(|name| self.log_path(name));
        let list = || {
            let stream = match &offset {
                Some(offset) => self.store.list_with_offset(Some(&dir), offset),
                None => self.store.list(Some(&dir)),
            };
            stream.try_collect::<Vec<ObjectMeta>>()
        };
        let metas: Vec<ObjectMeta> = match self.retrying(list).await {
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

    /// On local disk, the staging files that writes killed midway left behind:
    /// object_store's local store writes `<name>#<n>` and then renames it into place, and
    /// listings skip those names, so VACUUM asks for them here. Returns (path relative
    /// to the root, size, modification ms) for directories `descend` accepts (by name).
    /// Empty on other stores (their uploads appear whole or not at all).
    pub async fn staging_leftovers(
        &self,
        descend: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<Vec<(String, u64, i64)>> {
        let Some(root) = self.local_root.clone() else {
            return Ok(Vec::new());
        };
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![(root.clone(), String::new())];
            while let Some((dir, prefix)) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::from(e)),
                };
                for entry in entries.flatten() {
                    let Ok(name) = entry.file_name().into_string() else {
                        continue;
                    };
                    let Ok(kind) = entry.file_type() else {
                        continue;
                    };
                    let relative = format!("{prefix}{name}");
                    if kind.is_dir() {
                        if descend(&name) {
                            stack.push((entry.path(), format!("{relative}/")));
                        }
                        continue;
                    }
                    let staging = name.rsplit_once('#').is_some_and(|(_, n)| {
                        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
                    });
                    if !staging {
                        continue;
                    }
                    let Ok(meta) = entry.metadata() else {
                        continue;
                    };
                    let modified = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_millis() as i64);
                    out.push((relative, meta.len(), modified));
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
    }

    /// Deletes a staging leftover found by [`Self::staging_leftovers`] (gone already
    /// is fine).
    pub async fn delete_staging(&self, relative: &str) -> Result<()> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let path = root.join(relative);
        tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::from(e)),
            _ => Ok(()),
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
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
        match self
            .retrying(|| self.store.list_with_delimiter(Some(prefix)))
            .await
        {
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

    /// Whether the directory `dir` holds a table: anything under its `_delta_log/`.
    /// Reads the first listing page only (one request on S3, however long the log).
    pub async fn holds_table(&self, dir: &Path) -> Result<bool> {
        let log = dir.clone().join("_delta_log");
        let first = futures::StreamExt::next(&mut self.list_stream(&log)).await;
        Ok(first.transpose()?.is_some())
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

/// Most attempts of one idempotent request at this layer (object stores retry each
/// HTTP request themselves too, see [`OPT_MAX_RETRIES`]).
const STORE_ATTEMPTS: usize = 4;

/// Part size of multipart uploads (S3 needs at least 5 MiB but for the last part).
pub const MULTIPART_PART_SIZE: usize = 8 * 1024 * 1024;

/// Whether a store error may go away on retry: server errors, throttling, timeouts and
/// broken connections. Not-found, already-exists, precondition, permission, invalid
/// path and unsupported-operation errors are permanent, and so is an HTTP 4xx
/// answer other than 408 and 429.
pub fn is_transient(e: &object_store::Error) -> bool {
    match e {
        object_store::Error::Generic { source, .. } => {
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
            while let Some(err) = cur {
                if let Some(status) = http_status(&err.to_string()) {
                    return !(400..500).contains(&status) || status == 408 || status == 429;
                }
                cur = err.source();
            }
            true
        }
        object_store::Error::JoinError { .. } => true,
        _ => false,
    }
}

/// The HTTP status in object_store's retry error text ("... status code: 503 ..."),
/// which does not expose its status type publicly.
fn http_status(text: &str) -> Option<u16> {
    let (_, rest) = text.split_once("status code: ")?;
    rest.get(..3)?.parse().ok()
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
