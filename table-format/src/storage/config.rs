//! Building stores from a URI and storage options: which schemes this build supports,
//! how S3 is configured (environment, then explicit options), and Shoal's own options.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Once};
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

use crate::error::{Error, Result};

/// Storage options: `key=value` pairs, as given on the command line
/// (`--storage-option`), in a server or compactor config, or by library callers.
///
/// Keys are object_store's (`aws_access_key_id`, `aws_endpoint_url`, `aws_allow_http`,
/// `aws_region`, `aws_conditional_put`, `timeout`, …; case-insensitive) plus Shoal's own
/// keys below. Values are never printed: errors name the key only.
pub type StorageOptions = HashMap<String, String>;

/// Storage options as services hold them in their configuration: deserialized from a
/// table of `key = value` (strings, booleans or numbers, as TOML writes them), and
/// printed with `{:?}` as keys only, so a logged config never shows a credential.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedactedOptions(pub StorageOptions);

impl RedactedOptions {
    /// The options themselves, to open stores with.
    pub fn options(&self) -> &StorageOptions {
        &self.0
    }

    /// Adds `key=value` pairs over the present ones (command-line flags over a file).
    pub fn extend(&mut self, pairs: impl IntoIterator<Item = (String, String)>) {
        self.0.extend(pairs);
    }
}

impl std::fmt::Debug for RedactedOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&str> = self.0.keys().map(String::as_str).collect();
        keys.sort_unstable();
        f.debug_map()
            .entries(keys.into_iter().map(|k| (k, "<redacted>")))
            .finish()
    }
}

impl<'de> serde::Deserialize<'de> for RedactedOptions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            Text(String),
            Flag(bool),
            Int(i64),
            Float(f64),
        }
        let raw = HashMap::<String, Scalar>::deserialize(d)?;
        Ok(RedactedOptions(
            raw.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Scalar::Text(s) => s,
                        Scalar::Flag(b) => b.to_string(),
                        Scalar::Int(i) => i.to_string(),
                        Scalar::Float(x) => x.to_string(),
                    };
                    (k, v)
                })
                .collect(),
        ))
    }
}

/// Parses one `--storage-option KEY=VALUE` flag (for binaries' argument parsers).
pub fn parse_storage_option(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err("expected KEY=VALUE".to_string()),
    }
}

/// Opt into a store that cannot create a file only if it is absent: commits then
/// check-then-write, which is only safe with a single writer.
pub const OPT_UNSAFE_SINGLE_WRITER: &str = "shoal_unsafe_single_writer";
/// Most retries of one store request on transient errors (S3: 5xx, throttling, timeouts).
pub const OPT_MAX_RETRIES: &str = "shoal_max_retries";
/// Bound on the total time one store request spends retrying, e.g. `30s`, `2m`, `500ms`.
pub const OPT_RETRY_TIMEOUT: &str = "shoal_retry_timeout";
/// Objects at least this large go up as multipart uploads (bytes; S3 parts are at least 5 MiB).
pub const OPT_MULTIPART_THRESHOLD: &str = "shoal_multipart_threshold";

/// Shoal's store-independent settings, read from the options.
#[derive(Debug, Clone)]
pub(crate) struct ShoalOptions {
    pub unsafe_single_writer: bool,
    /// Whether the store creates objects only if absent atomically. When not (an
    /// explicit unsafe single-writer opt-in), put-if-absent checks, then writes.
    pub atomic_create: bool,
    pub max_retries: usize,
    pub retry_timeout: Duration,
    pub multipart_threshold: usize,
}

impl Default for ShoalOptions {
    fn default() -> Self {
        ShoalOptions {
            unsafe_single_writer: false,
            atomic_create: true,
            max_retries: 10,
            retry_timeout: Duration::from_secs(60),
            multipart_threshold: 16 * 1024 * 1024,
        }
    }
}

/// A store built from a URI.
pub(crate) struct Built {
    pub store: Arc<dyn ObjectStore>,
    pub root: Path,
    pub options: ShoalOptions,
    /// Whether the store itself creates objects only if absent.
    pub atomic_create: bool,
}

fn bad(uri: &str, reason: impl Into<String>) -> Error {
    Error::InvalidUri {
        uri: uri.to_string(),
        reason: reason.into(),
    }
}

/// Splits Shoal's own options from the store's and parses them.
pub(crate) fn split_options(
    uri: &str,
    options: &StorageOptions,
) -> Result<(ShoalOptions, Vec<(String, String)>)> {
    let mut shoal = ShoalOptions::default();
    let mut rest = Vec::new();
    for (key, value) in options {
        let k = key.trim().to_ascii_lowercase();
        match k.as_str() {
            OPT_UNSAFE_SINGLE_WRITER => shoal.unsafe_single_writer = parse_bool(uri, &k, value)?,
            OPT_MAX_RETRIES => {
                shoal.max_retries = value
                    .trim()
                    .parse()
                    .map_err(|_| bad(uri, format!("storage option `{k}` must be a number")))?
            }
            OPT_RETRY_TIMEOUT => shoal.retry_timeout = parse_duration(uri, &k, value)?,
            OPT_MULTIPART_THRESHOLD => {
                shoal.multipart_threshold = value
                    .trim()
                    .parse()
                    .map_err(|_| bad(uri, format!("storage option `{k}` must be a number")))?
            }
            _ => rest.push((k, value.clone())),
        }
    }
    Ok((shoal, rest))
}

fn parse_bool(uri: &str, key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(bad(
            uri,
            format!("storage option `{key}` must be true or false"),
        )),
    }
}

/// `500ms`, `30s`, `2m`, or a plain number of seconds.
fn parse_duration(uri: &str, key: &str, value: &str) -> Result<Duration> {
    let v = value.trim();
    let err = || {
        bad(
            uri,
            format!("storage option `{key}` must be a duration like `30s`"),
        )
    };
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = num.parse().map_err(|_| err())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(err()),
    }
}

/// The schemes a table URI may use in this build, for error messages.
pub(crate) const SUPPORTED: &str = "local paths, file://, s3:// (and s3a://) and memory://";

/// Refuses, by name, object stores this build does not include.
pub(crate) fn unsupported_scheme(uri: &str, scheme: &str) -> Error {
    let what = match scheme {
        "gs" | "gcs" => "Google Cloud Storage",
        "az" | "azure" | "abfs" | "abfss" | "adl" => "Azure Blob Storage",
        _ => "this scheme",
    };
    bad(
        uri,
        format!(
            "the `{scheme}` scheme ({what}) is not supported by this build; it supports {SUPPORTED}"
        ),
    )
}

/// An S3 (or S3-compatible) store for `s3://bucket/prefix`: the standard `AWS_*`
/// environment variables first, then the explicit options over them. Path-style
/// requests unless `aws_virtual_hosted_style_request=true`.
pub(crate) fn s3(uri: &str, options: &StorageOptions) -> Result<Built> {
    let url = url::Url::parse(uri).map_err(|e| bad(uri, e.to_string()))?;
    let bucket = url
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| bad(uri, "no bucket name (expected s3://bucket/prefix)"))?
        .to_string();
    let prefix = percent_encoding::percent_decode_str(url.path())
        .decode_utf8()
        .map_err(|e| bad(uri, e.to_string()))?;
    let root = Path::parse(prefix.trim_matches('/')).map_err(|e| bad(uri, e.to_string()))?;
    let (shoal, rest) = split_options(uri, options)?;
    install_tls_provider();
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    for (key, value) in rest {
        let parsed = AmazonS3ConfigKey::from_str(&key)
            .map_err(|_| bad(uri, format!("unknown S3 storage option `{key}`")))?;
        builder = builder.with_config(parsed, value);
    }
    builder = builder.with_retry(RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: shoal.max_retries,
        retry_timeout: shoal.retry_timeout,
    });
    let conditional = builder
        .get_config_value(&AmazonS3ConfigKey::ConditionalPut)
        .unwrap_or_default();
    let atomic_create = !conditional.eq_ignore_ascii_case("disabled");
    // Errors from the builder name the missing or invalid setting, never its value.
    let store = builder.build().map_err(|e| bad(uri, e.to_string()))?;
    Ok(Built {
        store: Arc::new(store),
        root,
        options: shoal,
        atomic_create,
    })
}

/// TLS for object stores is rustls on `ring` (see the root `Cargo.toml`); reqwest is
/// built without a default crypto provider, so the process needs one before the first
/// client is built. Installing fails only when the process already chose one: fine.
fn install_tls_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_flags() {
        assert_eq!(
            parse_duration("u", "k", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration("u", "k", "2m").unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(
            parse_duration("u", "k", "7").unwrap(),
            Duration::from_secs(7)
        );
        assert!(parse_duration("u", "k", "soon").is_err());
        assert!(parse_bool("u", "k", "TRUE").unwrap());
        assert!(parse_bool("u", "k", "maybe").is_err());
    }

    #[test]
    fn redacted_options_hide_values() {
        let mut o = RedactedOptions::default();
        o.extend([(
            "aws_secret_access_key".to_string(),
            "SUPERSECRET".to_string(),
        )]);
        let shown = format!("{o:?}");
        assert!(shown.contains("aws_secret_access_key"), "{shown}");
        assert!(!shown.contains("SUPERSECRET"), "{shown}");
        assert_eq!(
            parse_storage_option("a=b=c").unwrap(),
            ("a".into(), "b=c".into())
        );
        assert!(parse_storage_option("=x").is_err());
        assert!(parse_storage_option("novalue").is_err());
    }

    #[test]
    fn secrets_never_in_errors() {
        let mut o = StorageOptions::new();
        o.insert("aws_secret_access_key".into(), "SUPERSECRET".into());
        o.insert("no_such_key".into(), "SUPERSECRET2".into());
        let e = s3("s3://bucket/p", &o).err().unwrap().to_string();
        assert!(e.contains("no_such_key"), "{e}");
        assert!(!e.contains("SUPERSECRET"), "{e}");
    }

    #[test]
    fn s3_uri_parts() {
        let mut o = StorageOptions::new();
        o.insert("aws_endpoint_url".into(), "http://127.0.0.1:1".into());
        o.insert("aws_allow_http".into(), "true".into());
        o.insert("aws_access_key_id".into(), "k".into());
        o.insert("aws_secret_access_key".into(), "s".into());
        o.insert("aws_region".into(), "us-east-1".into());
        let b = s3("s3://bucket/a/b%20c/", &o).unwrap();
        assert_eq!(b.root.as_ref(), "a/b c");
        assert!(b.atomic_create);
        o.insert("aws_conditional_put".into(), "disabled".into());
        assert!(!s3("s3://bucket/a", &o).unwrap().atomic_create);
        assert!(s3("s3:///nobucket", &o).is_err());
    }
}
