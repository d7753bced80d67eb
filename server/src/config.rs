//! Server configuration: a TOML file, then environment variables and flags (the binary
//! merges those, flags winning), resolved into a [`ServerConfig`].
//!
//! ```toml
//! warehouse = "s3://bucket/warehouse"   # or a local path
//! listen = "0.0.0.0:8080"
//!
//! # Options for the warehouse's object store (over the AWS_* environment); values are
//! # never logged. See spec/PROTOCOL.md §8 for the keys.
//! [storage_options]
//! aws_endpoint_url = "http://127.0.0.1:8333"
//! aws_region = "us-east-1"
//!
//! [limits]
//! max_body_bytes = 67108864
//! max_rows_per_request = 1000000
//! request_timeout_secs = 60
//! max_concurrent_requests = 512
//!
//! [[tokens]]
//! name = "ingest"
//! token = "sha256:<64 hex digits of SHA-256(token)>"
//! grants = { "events*" = "write", "*" = "read" }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use shoal_format::storage::RedactedOptions;

use crate::auth::{parse_token_hash, Level, TokenEntry};

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Most rows one append/overwrite/merge request may carry (413 above).
    pub max_rows_per_request: usize,
    /// Longest time to produce a response head (reading the body included); 503 after.
    pub request_timeout: Duration,
    /// Requests handled at once; more wait for a slot up to the request timeout.
    pub max_concurrent_requests: usize,
    /// Rows one group commit gathers at most; later requests wait for the next commit.
    pub max_group_rows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024 * 1024,
            max_rows_per_request: 1_000_000,
            request_timeout: Duration::from_secs(60),
            max_concurrent_requests: 512,
            max_group_rows: 2_000_000,
        }
    }
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Root URI holding tables by name: a local path, `file://…` or `s3://bucket/prefix`.
    pub warehouse: String,
    /// Options for the warehouse's store (`[storage_options]`, then `--storage-option`
    /// flags over them); shown by `{:?}` as keys only.
    pub storage_options: RedactedOptions,
    pub listen: SocketAddr,
    /// Allow a non-loopback listen address without tokens.
    pub insecure: bool,
    pub limits: Limits,
    pub tokens: Vec<TokenEntry>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            warehouse: "./warehouse".into(),
            storage_options: RedactedOptions::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            insecure: false,
            limits: Limits::default(),
            tokens: Vec::new(),
        }
    }
}

/// Configuration errors, reported before the server starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file `{path}`: {message}")]
    Parse { path: String, message: String },
    #[error("invalid listen address `{0}`")]
    Listen(String),
    #[error("token `{name}`: {message}")]
    Token { name: String, message: String },
    #[error("refusing to listen on public address {0} without tokens; configure [[tokens]] or pass --insecure")]
    PublicWithoutAuth(SocketAddr),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    warehouse: Option<String>,
    listen: Option<String>,
    insecure: Option<bool>,
    #[serde(default)]
    storage_options: RedactedOptions,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    tokens: Vec<FileToken>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_body_bytes: Option<usize>,
    max_rows_per_request: Option<usize>,
    request_timeout_secs: Option<f64>,
    max_concurrent_requests: Option<usize>,
    max_group_rows: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToken {
    name: String,
    token: String,
    #[serde(default)]
    grants: BTreeMap<String, Level>,
}

/// Values from the environment or flags that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub warehouse: Option<String>,
    /// `--storage-option key=value` pairs, over the file's `[storage_options]`.
    pub storage_options: Vec<(String, String)>,
    pub listen: Option<String>,
    pub insecure: Option<bool>,
    pub max_body_bytes: Option<usize>,
    pub max_rows_per_request: Option<usize>,
    pub request_timeout_secs: Option<f64>,
    pub max_concurrent_requests: Option<usize>,
}

impl ServerConfig {
    /// Parses a TOML config text (`path` names it in errors), then applies overrides.
    pub fn from_toml(text: &str, path: &str, o: &Overrides) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        Self::resolve(file, o)
    }

    /// Reads the config file (when given) and applies overrides.
    pub fn load(path: Option<&Path>, o: &Overrides) -> Result<Self, ConfigError> {
        match path {
            None => Self::resolve(FileConfig::default(), o),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Self::from_toml(&text, &p.display().to_string(), o)
            }
        }
    }

    fn resolve(file: FileConfig, o: &Overrides) -> Result<Self, ConfigError> {
        let d = ServerConfig::default();
        let listen_text = o.listen.clone().or(file.listen);
        let listen = match listen_text {
            None => d.listen,
            Some(t) => t.parse().map_err(|_| ConfigError::Listen(t.clone()))?,
        };
        let fl = file.limits;
        let dl = Limits::default();
        let timeout = o
            .request_timeout_secs
            .or(fl.request_timeout_secs)
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(dl.request_timeout);
        let limits = Limits {
            max_body_bytes: o
                .max_body_bytes
                .or(fl.max_body_bytes)
                .unwrap_or(dl.max_body_bytes),
            max_rows_per_request: o
                .max_rows_per_request
                .or(fl.max_rows_per_request)
                .unwrap_or(dl.max_rows_per_request),
            request_timeout: timeout,
            max_concurrent_requests: o
                .max_concurrent_requests
                .or(fl.max_concurrent_requests)
                .unwrap_or(dl.max_concurrent_requests)
                .max(1),
            max_group_rows: fl.max_group_rows.unwrap_or(dl.max_group_rows).max(1),
        };
        let tokens = file
            .tokens
            .into_iter()
            .map(|t| {
                let hash = parse_token_hash(&t.token).map_err(|message| ConfigError::Token {
                    name: t.name.clone(),
                    message,
                })?;
                Ok(TokenEntry {
                    name: t.name,
                    hash,
                    grants: t.grants.into_iter().collect(),
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let mut storage_options = file.storage_options;
        storage_options.extend(o.storage_options.iter().cloned());
        let cfg = ServerConfig {
            storage_options,
            warehouse: o
                .warehouse
                .clone()
                .or(file.warehouse)
                .unwrap_or(d.warehouse),
            listen,
            insecure: o.insecure.or(file.insecure).unwrap_or(false),
            limits,
            tokens,
        };
        cfg.check_bind()?;
        Ok(cfg)
    }

    /// Without tokens, only a loopback address may be bound (unless `insecure`).
    pub fn check_bind(&self) -> Result<(), ConfigError> {
        if self.tokens.is_empty() && !self.listen.ip().is_loopback() && !self.insecure {
            return Err(ConfigError::PublicWithoutAuth(self.listen));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_overrides() {
        let text = r#"
            warehouse = "/data/wh"
            listen = "127.0.0.1:9000"
            [limits]
            max_body_bytes = 1000
            [[tokens]]
            name = "a"
            token = "secret"
            grants = { "*" = "read", "sales.*" = "admin" }
        "#;
        let o = Overrides {
            listen: Some("0.0.0.0:9001".into()),
            ..Default::default()
        };
        let c = ServerConfig::from_toml(text, "x.toml", &o).unwrap();
        assert_eq!(c.warehouse, "/data/wh");
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.limits.max_body_bytes, 1000);
        assert_eq!(c.tokens.len(), 1);
        assert_eq!(c.tokens[0].grants.len(), 2);
    }

    #[test]
    fn storage_options_from_file_then_flags_never_shown() {
        let text = r#"
            warehouse = "s3://bucket/wh"
            [storage_options]
            aws_endpoint_url = "http://127.0.0.1:8333"
            aws_allow_http = true
            aws_secret_access_key = "FILESECRET"
        "#;
        let o = Overrides {
            storage_options: vec![("aws_secret_access_key".into(), "FLAGSECRET".into())],
            ..Default::default()
        };
        let c = ServerConfig::from_toml(text, "x.toml", &o).unwrap();
        let opts = c.storage_options.options();
        assert_eq!(opts["aws_allow_http"], "true");
        assert_eq!(opts["aws_secret_access_key"], "FLAGSECRET", "flags win");
        let shown = format!("{c:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("aws_secret_access_key"), "{shown}");
    }

    #[test]
    fn public_bind_needs_tokens_or_insecure() {
        let o = Overrides {
            listen: Some("0.0.0.0:9001".into()),
            ..Default::default()
        };
        assert!(matches!(
            ServerConfig::load(None, &o),
            Err(ConfigError::PublicWithoutAuth(_))
        ));
        let o = Overrides {
            insecure: Some(true),
            ..o
        };
        assert!(ServerConfig::load(None, &o).is_ok());
    }

    #[test]
    fn unknown_keys_and_bad_grants_are_errors() {
        let o = Overrides::default();
        assert!(ServerConfig::from_toml("wharehouse = 1", "x", &o).is_err());
        let bad = "[[tokens]]\nname='a'\ntoken='t'\ngrants={ '*' = 'root' }";
        assert!(ServerConfig::from_toml(bad, "x", &o).is_err());
    }
}
