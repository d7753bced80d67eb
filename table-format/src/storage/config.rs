//! Building stores from a URI and storage options: which schemes this build supports,
//! how S3, Google Cloud Storage and Azure are configured (environment, then explicit
//! options), Shoal's own options, and builder errors that never quote a credential.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Once};
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

use crate::error::{Error, Result};

/// Storage options: `key=value` pairs, as given on the command line
/// (`--storage-option`), in a server or compactor config, or by library callers.
///
/// Keys are object_store's for the URI's store (S3: `aws_access_key_id`, `aws_endpoint_url`,
/// `aws_region`, `aws_conditional_put`, …; GCS: `google_service_account_key`,
/// `google_application_credentials`, `google_base_url`, …; Azure: `azure_storage_account_name`,
/// `azure_storage_account_key`, `azure_storage_sas_token`, `azure_client_secret`, …; and the
/// HTTP client's `allow_http`, `timeout`, …; case-insensitive) plus Shoal's own keys below.
/// Values are never printed: errors name the key only.
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
/// Most retries of one store request on transient errors (5xx, throttling, timeouts).
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
pub(crate) const SUPPORTED: &str = "local paths, file://, s3:// (and s3a://), gs://, \
     az:// (and azure://, abfs://, abfss://, adl://) and memory://";

/// The object stores a URI scheme names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cloud {
    S3,
    Gcs,
    Azure,
}

impl Cloud {
    /// The store a (lower-case) scheme names, if it is a cloud one this build supports.
    pub(crate) fn from_scheme(scheme: &str) -> Option<Cloud> {
        match scheme {
            "s3" | "s3a" => Some(Cloud::S3),
            "gs" => Some(Cloud::Gcs),
            "az" | "azure" | "abfs" | "abfss" | "adl" => Some(Cloud::Azure),
            _ => None,
        }
    }
}

/// Refuses, by name, a scheme this build has no store for.
pub(crate) fn unsupported_scheme(uri: &str, scheme: &str) -> Error {
    let hint = match scheme {
        "gcs" => " (Google Cloud Storage is `gs://bucket/prefix`)",
        "wasb" | "wasbs" => " (Azure Blob Storage is `az://container/prefix` or `abfss://`)",
        _ => "",
    };
    bad(
        uri,
        format!("the `{scheme}` scheme is not supported{hint}; table URIs may be {SUPPORTED}"),
    )
}

/// A store for a cloud URI, configured from the standard environment variables first and
/// the explicit options over them.
pub(crate) fn cloud(uri: &str, cloud: Cloud, options: &StorageOptions) -> Result<Built> {
    let url = url::Url::parse(uri).map_err(|e| bad(uri, e.to_string()))?;
    let root = root_of(uri, &url)?;
    let (shoal, rest) = split_options(uri, options)?;
    install_tls_provider();
    let (store, atomic_create): (Arc<dyn ObjectStore>, bool) = match cloud {
        Cloud::S3 => s3(uri, &url, &shoal, &rest)?,
        Cloud::Gcs => (Arc::new(gcs(uri, &url, &shoal, &rest)?), true),
        Cloud::Azure => (Arc::new(azure(uri, &url, &shoal, &rest)?), true),
    };
    Ok(Built {
        store,
        root,
        options: shoal,
        atomic_create,
    })
}

/// The table's prefix inside the bucket or container: the URI's path, percent-decoded.
fn root_of(uri: &str, url: &url::Url) -> Result<Path> {
    let prefix = percent_encoding::percent_decode_str(url.path())
        .decode_utf8()
        .map_err(|e| bad(uri, e.to_string()))?;
    Path::parse(prefix.trim_matches('/')).map_err(|e| bad(uri, e.to_string()))
}

/// The URI's host: the bucket (S3, GCS) or container (Azure), or the Azure account host
/// for `abfss://container@account.dfs.core.windows.net/…`.
fn host_of<'a>(uri: &str, url: &'a url::Url, expected: &str) -> Result<&'a str> {
    url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| {
        bad(
            uri,
            format!("no bucket or container name (expected {expected})"),
        )
    })
}

/// The store's options parsed into object_store's config keys; an unknown key is an
/// error naming the key (never the value).
fn config_keys<K: FromStr>(
    uri: &str,
    store: &str,
    options: &[(String, String)],
) -> Result<Vec<(K, String)>> {
    options
        .iter()
        .map(|(key, value)| {
            let parsed = K::from_str(key)
                .map_err(|_| bad(uri, format!("unknown {store} storage option `{key}`")))?;
            Ok((parsed, value.clone()))
        })
        .collect()
}

/// Request retries, the same for every cloud store: exponential backoff from 100 ms up to
/// 5 s between attempts, at most [`OPT_MAX_RETRIES`] retries within [`OPT_RETRY_TIMEOUT`].
fn retry_config(shoal: &ShoalOptions) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: shoal.max_retries,
        retry_timeout: shoal.retry_timeout,
    }
}

/// An S3 (or S3-compatible) store for `s3://bucket/prefix`: the standard `AWS_*`
/// environment variables first, then the explicit options over them. Path-style
/// requests unless `aws_virtual_hosted_style_request=true`. Atomic create unless
/// `aws_conditional_put=disabled`.
fn s3(
    uri: &str,
    url: &url::Url,
    shoal: &ShoalOptions,
    rest: &[(String, String)],
) -> Result<(Arc<dyn ObjectStore>, bool)> {
    let bucket = host_of(uri, url, "s3://bucket/prefix")?;
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    for (key, value) in config_keys::<AmazonS3ConfigKey>(uri, "S3", rest)? {
        builder = builder.with_config(key, value);
    }
    builder = builder.with_retry(retry_config(shoal));
    let conditional = builder
        .get_config_value(&AmazonS3ConfigKey::ConditionalPut)
        .unwrap_or_default();
    let atomic_create = !conditional.eq_ignore_ascii_case("disabled");
    let store = builder
        .build()
        .map_err(|e| builder_error(uri, "S3", &e, rest))?;
    Ok((Arc::new(store), atomic_create))
}

/// A Google Cloud Storage store for `gs://bucket/prefix`: the standard `GOOGLE_*`
/// environment variables (and application default credentials) first, then the explicit
/// options over them. Service-account keys are RS256-signed with `ring`; the key is parsed
/// here, so a malformed one fails at open time. Creates use `x-goog-if-generation-match: 0`.
fn gcs(
    uri: &str,
    url: &url::Url,
    shoal: &ShoalOptions,
    rest: &[(String, String)],
) -> Result<object_store::gcp::GoogleCloudStorage> {
    let bucket = host_of(uri, url, "gs://bucket/prefix")?;
    let mut builder = GoogleCloudStorageBuilder::from_env();
    for (key, value) in config_keys::<GoogleConfigKey>(uri, "GCS", rest)? {
        builder = builder.with_config(key, value);
    }
    builder
        .with_bucket_name(bucket)
        .with_retry(retry_config(shoal))
        .build()
        .map_err(|e| builder_error(uri, "GCS", &e, rest))
}

/// An Azure Blob Storage (or ADLS Gen2) store for `az://container/prefix`,
/// `azure://container/prefix`, `adl://container/prefix`, `abfs[s]://container/prefix` or
/// `abfs[s]://container@account.dfs.core.windows.net/prefix`: the standard `AZURE_*`
/// environment variables first, then the explicit options over them, then the container
/// (and account) from the URI. Creates use `If-None-Match: *`.
fn azure(
    uri: &str,
    url: &url::Url,
    shoal: &ShoalOptions,
    rest: &[(String, String)],
) -> Result<object_store::azure::MicrosoftAzure> {
    host_of(uri, url, "az://container/prefix")?;
    let mut builder = MicrosoftAzureBuilder::from_env();
    for (key, value) in config_keys::<AzureConfigKey>(uri, "Azure", rest)? {
        builder = builder.with_config(key, value);
    }
    builder
        .with_url(uri)
        .with_retry(retry_config(shoal))
        .build()
        .map_err(|e| builder_error(uri, "Azure", &e, rest))
}

/// Builder errors may quote what they failed to parse: a service-account JSON error
/// quotes the offending string, an access-key error one base64 symbol, a config error
/// the value. The reason given back therefore has every option value (and every value
/// of the environment variables the builders read) cut out, JSON errors reduced to their
/// line and column, and the detail after these credential parsers' messages withheld.
fn builder_error(
    uri: &str,
    store: &str,
    e: &object_store::Error,
    options: &[(String, String)],
) -> Error {
    const CREDENTIAL_PARSERS: &[&str] = &[
        "Unable to decode service account file",
        "Invalid Access Key",
        "Failed parsing an SAS key",
        "Invalid RSA key",
        "Error reading pem file",
        "Invalid encryption key",
        "Invalid encryption header values",
    ];
    let mut chain: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(link) = chain {
        if let Some(json) = link.downcast_ref::<serde_json::Error>() {
            return bad(
                uri,
                format!(
                    "the {store} credentials are not valid JSON ({:?} error at line {}, \
                     column {})",
                    json.classify(),
                    json.line(),
                    json.column()
                ),
            );
        }
        chain = link.source();
    }
    let mut message = e.to_string();
    for marker in CREDENTIAL_PARSERS {
        if let Some(at) = message.find(marker) {
            message.truncate(at + marker.len());
            message.push_str(" (details withheld: they could quote a credential)");
            break;
        }
    }
    // The URI is shown anyway: only the text around it is scrubbed.
    let reason = message
        .split(uri)
        .map(|part| scrub(part.to_string(), options))
        .collect::<Vec<_>>()
        .join(uri);
    bad(uri, reason)
}

/// `message` with every option value, and every value of the environment variables
/// object_store's builders read, replaced by `<redacted>` (values shorter than six
/// characters are left: no credential is that short, and `true`, `false` or `30s` are not
/// secrets whose removal would only garble the message).
fn scrub(mut message: String, options: &[(String, String)]) -> String {
    const ENV_PREFIXES: &[&str] = &["AWS_", "GOOGLE_", "AZURE_", "AZURITE_"];
    const ENV_NAMES: &[&str] = &["SERVICE_ACCOUNT", "IDENTITY_ENDPOINT", "MSI_ENDPOINT"];
    let mut values: Vec<String> = options.iter().map(|(_, v)| v.clone()).collect();
    // `vars_os`: `vars` panics on a variable that is not UTF-8.
    values.extend(std::env::vars_os().filter_map(|(k, v)| {
        let k = k.to_str()?;
        let ours = ENV_PREFIXES.iter().any(|p| k.starts_with(p)) || ENV_NAMES.contains(&k);
        ours.then(|| v.to_string_lossy().into_owned())
    }));
    // Longest first, so a value containing another is cut whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for value in values {
        let value = value.trim();
        if value.len() >= 6 && message.contains(value) {
            message = message.replace(value, "<redacted>");
        }
    }
    message
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
        let e = cloud("s3://bucket/p", Cloud::S3, &o)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no_such_key"), "{e}");
        assert!(!e.contains("SUPERSECRET"), "{e}");
    }

    #[test]
    fn schemes_and_scrubbing() {
        assert_eq!(Cloud::from_scheme("abfss"), Some(Cloud::Azure));
        assert_eq!(Cloud::from_scheme("gs"), Some(Cloud::Gcs));
        assert_eq!(Cloud::from_scheme("s3a"), Some(Cloud::S3));
        assert_eq!(Cloud::from_scheme("hdfs"), None);
        let options = vec![
            (
                "azure_storage_account_name".to_string(),
                "shoalacct".to_string(),
            ),
            (
                "azure_storage_account_key".to_string(),
                "SECRETKEY".to_string(),
            ),
            ("allow_http".to_string(), "true".to_string()),
        ];
        let uri = "abfss://c@shoalacct.example.com/t";
        let shown = scrub(format!("bad key SECRETKEY for {uri}"), &options);
        assert_eq!(
            shown,
            format!("bad key <redacted> for abfss://c@<redacted>.example.com/t")
        );
        let e = object_store::Error::Generic {
            store: "test",
            source: format!("{uri}: key SECRETKEY, flag true").into(),
        };
        let shown = builder_error(uri, "Azure", &e, &options).to_string();
        assert!(
            shown.contains(&format!("{uri}: key <redacted>, flag true")),
            "{shown}"
        );
        let e = object_store::Error::Generic {
            store: "test",
            source: "Invalid Access Key: Invalid symbol 45, offset 3.".into(),
        };
        let shown = builder_error(uri, "Azure", &e, &options).to_string();
        assert!(!shown.contains("symbol"), "{shown}");
    }

    #[test]
    fn s3_uri_parts() {
        let mut o = StorageOptions::new();
        o.insert("aws_endpoint_url".into(), "http://127.0.0.1:1".into());
        o.insert("aws_allow_http".into(), "true".into());
        o.insert("aws_access_key_id".into(), "k".into());
        o.insert("aws_secret_access_key".into(), "s".into());
        o.insert("aws_region".into(), "us-east-1".into());
        let b = cloud("s3://bucket/a/b%20c/", Cloud::S3, &o).unwrap();
        assert_eq!(b.root.as_ref(), "a/b c");
        assert!(b.atomic_create);
        o.insert("aws_conditional_put".into(), "disabled".into());
        assert!(!cloud("s3://bucket/a", Cloud::S3, &o).unwrap().atomic_create);
        assert!(cloud("s3:///nobucket", Cloud::S3, &o).is_err());
    }
}
