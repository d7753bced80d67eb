//! The compactor's configuration: a TOML file, defaults for every knob, the policy
//! resolution rule (built-in defaults < `[defaults]` < table properties < `[[table]]`)
//! and the storage options rule (`AWS_*` environment < `[service.storage_options]` <
//! `--storage-option` flags < the table's `[[table]] storage_options`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use shoal_format::ops::optimize::{parse_size, CompactionTrigger};
use shoal_format::storage::{RedactedOptions, StorageOptions};

/// A configuration error: which key, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid value for `{key}`: {reason}")]
    Value { key: String, reason: String },
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub service: ServiceConfig,
    /// Policy defaults for every table.
    #[serde(default)]
    pub defaults: PolicyConfig,
    /// Tables watched explicitly, each with optional policy overrides and storage options.
    #[serde(default, rename = "table")]
    pub tables: Vec<TableEntry>,
}

/// How the service runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Every folder with a `_delta_log` under this root (two levels deep) is watched,
    /// re-discovered every cycle.
    pub warehouse: Option<String>,
    /// Time between two runs on one table.
    pub interval: String,
    /// Random extra delay, up to this, added to every interval (spreads the load).
    pub jitter: String,
    /// Tables compacted at once.
    pub max_concurrent_tables: usize,
    /// How long a table lease is held without renewal (runs renew it as they go).
    pub lease_ttl: String,
    /// Longest wait after repeated failures.
    pub max_backoff: String,
    /// Address of `/metrics` and `/healthz` (none: not served).
    pub listen: Option<String>,
    /// `text` or `json` logs.
    pub log_format: LogFormat,
    /// Name written into leases (default: host, pid and a random suffix).
    pub owner: Option<String>,
    /// Options for the object store of the warehouse and of every table (S3 endpoint,
    /// credentials, …; over the `AWS_*` environment); a `[[table]]` entry's own
    /// `storage_options` go over these. `{:?}` shows the keys only.
    pub storage_options: RedactedOptions,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            warehouse: None,
            interval: "5m".into(),
            jitter: "30s".into(),
            max_concurrent_tables: 2,
            lease_ttl: "10m".into(),
            max_backoff: "1h".into(),
            listen: None,
            log_format: LogFormat::Text,
            owner: None,
            storage_options: RedactedOptions::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Policy knobs; every one optional so layers can override each other.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `false` leaves the table alone.
    pub enabled: Option<bool>,
    /// Compact a partition once it has this many small files...
    pub min_small_files: Option<usize>,
    /// ...or once small files hold this share (0 to 1) of its bytes.
    pub min_small_share: Option<f64>,
    /// Size of the files written, e.g. `128MiB` (default: `delta.targetFileSize`, else 128 MiB).
    pub target_file_size: Option<String>,
    /// Z-order by these columns instead of plain bin-packing.
    pub zorder_by: Option<Vec<String>>,
    /// Input bytes one run may rewrite, e.g. `10GiB`.
    pub max_bytes_per_run: Option<String>,
    /// Write a checkpoint once this many commits have no checkpoint after them
    /// (default: `delta.checkpointInterval`, else 10).
    pub checkpoint_interval: Option<i64>,
    /// How often VACUUM runs (`off` to never).
    pub vacuum_interval: Option<String>,
    /// VACUUM retention (default: the table's `delta.deletedFileRetentionDuration`).
    pub vacuum_retention: Option<String>,
    /// How often expired log entries are cleaned (`off` to never).
    pub log_cleanup_interval: Option<String>,
}

/// One explicitly listed table: `uri`, any policy key, and `storage_options` for its
/// store (over the service's).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "toml::Table")]
pub struct TableEntry {
    pub uri: String,
    pub policy: PolicyConfig,
    /// `{:?}` shows the keys only.
    pub storage_options: RedactedOptions,
}

impl TableEntry {
    /// An entry with no overrides (a `--table` flag).
    pub fn new(uri: &str) -> Self {
        TableEntry {
            uri: uri.to_string(),
            policy: PolicyConfig::default(),
            storage_options: RedactedOptions::default(),
        }
    }
}

impl TryFrom<toml::Table> for TableEntry {
    type Error = String;

    fn try_from(mut t: toml::Table) -> Result<Self, Self::Error> {
        let uri = match t.remove("uri") {
            Some(toml::Value::String(s)) => s,
            Some(_) => return Err("`uri` of a [[table]] must be a string".into()),
            None => return Err("every [[table]] needs a `uri`".into()),
        };
        let storage_options = match t.remove("storage_options") {
            // The error would quote the value, which may be a credential.
            Some(v) => RedactedOptions::deserialize(v).map_err(|_| {
                format!(
                    "table `{uri}`: `storage_options` must be a table of key = value \
                     (strings, booleans or numbers)"
                )
            })?,
            None => RedactedOptions::default(),
        };
        let policy = PolicyConfig::deserialize(toml::Value::Table(t))
            .map_err(|e| format!("table `{uri}`: {e}"))?;
        Ok(TableEntry {
            uri,
            policy,
            storage_options,
        })
    }
}

impl Config {
    pub fn from_file(path: &str) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_string(),
            source,
        })?;
        Config::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| parse_error(text, &e))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value once, at start-up, so a typo fails loudly then, not at 3 a.m.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.service;
        duration("service.interval", &s.interval)?;
        duration("service.jitter", &s.jitter)?;
        duration("service.lease_ttl", &s.lease_ttl)?;
        duration("service.max_backoff", &s.max_backoff)?;
        if s.max_concurrent_tables == 0 {
            return Err(value_error(
                "service.max_concurrent_tables",
                "must be at least 1",
            ));
        }
        if let Some(l) = &s.listen {
            l.parse::<SocketAddr>()
                .map_err(|e| value_error("service.listen", &e.to_string()))?;
        }
        Policy::default().apply_config("defaults", &self.defaults)?;
        for t in &self.tables {
            Policy::default().apply_config(&format!("table `{}`", t.uri), &t.policy)?;
        }
        Ok(())
    }

    pub fn interval(&self) -> Duration {
        duration("", &self.service.interval).unwrap_or(Duration::from_secs(300))
    }
    pub fn jitter(&self) -> Duration {
        duration("", &self.service.jitter).unwrap_or_default()
    }
    pub fn lease_ttl(&self) -> Duration {
        duration("", &self.service.lease_ttl).unwrap_or(Duration::from_secs(600))
    }
    pub fn max_backoff(&self) -> Duration {
        duration("", &self.service.max_backoff).unwrap_or(Duration::from_secs(3600))
    }

    /// The policy of a table: defaults, then this config's `[defaults]`, then the
    /// table's `shoal.compaction.*` properties, then its `[[table]]` entry.
    pub fn policy_for(
        &self,
        uri: &str,
        properties: &HashMap<String, String>,
    ) -> Result<Policy, ConfigError> {
        let mut p = Policy::default();
        p.apply_config("defaults", &self.defaults)?;
        p.apply_properties(properties)?;
        if let Some(t) = self.entry(uri) {
            p.apply_config(&format!("table `{}`", t.uri), &t.policy)?;
        }
        Ok(p)
    }

    /// The storage options of a table: `[service.storage_options]` (the `--storage-option`
    /// flags over them), then the table's `[[table]] storage_options` over those. Keys
    /// are compared case-insensitively, as the stores read them.
    pub fn storage_options_for(&self, uri: &str) -> RedactedOptions {
        let mut options = self.service.storage_options.clone();
        if let Some(t) = self.entry(uri) {
            merge_options(&mut options, t.storage_options.options());
        }
        options
    }

    /// The `[[table]]` entry of a table, if it is listed.
    fn entry(&self, uri: &str) -> Option<&TableEntry> {
        self.tables.iter().find(|t| same_table(&t.uri, uri))
    }
}

/// Puts `over` over `base`, a key replacing any spelling of it (`AWS_REGION` and
/// `aws_region` are one option to the store, so only one may remain).
pub fn merge_options(base: &mut RedactedOptions, over: &StorageOptions) {
    let mut merged = base.options().clone();
    for (key, value) in over {
        merged.retain(|k, _| !k.trim().eq_ignore_ascii_case(key.trim()));
        merged.insert(key.clone(), value.clone());
    }
    *base = RedactedOptions(merged);
}

/// A TOML error as its message and position, without the excerpt of the file that
/// `toml` shows and without the quoted values serde puts in messages (`invalid type:
/// string "…"`): either may be a credential (say, one put at the wrong level). Keys and
/// field names, quoted with backticks, stay.
fn parse_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let message = redact_quoted(e.message().trim_end());
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before[line_start..].chars().count() + 1;
            ConfigError::Parse(format!("line {line}, column {column}: {message}"))
        }
        None => ConfigError::Parse(message),
    }
}

/// Replaces the contents of every double-quoted string (with `\"` escapes) by `…`.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' {
            continue;
        }
        out.push('…');
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    out.push('"');
                    break;
                }
                _ => {}
            }
        }
    }
    out
}

fn same_table(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

fn value_error(key: &str, reason: &str) -> ConfigError {
    ConfigError::Value {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

/// A duration like `90s`, `5m`, `1h30m`, `7d`, `250ms` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim().to_ascii_lowercase();
    if t.is_empty() {
        return None;
    }
    if let Ok(secs) = t.parse::<f64>() {
        return (secs >= 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0f64;
    let mut rest = t.as_str();
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = rest[num_end..].trim_start();
        let unit_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = rest[unit_end..].trim_start();
        let mult = match unit {
            "ms" => 0.001,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "week" | "weeks" => 7.0 * 86400.0,
            _ => return None,
        };
        total += n * mult;
    }
    Some(Duration::from_secs_f64(total))
}

fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    parse_duration(text).ok_or_else(|| {
        value_error(
            key,
            &format!("`{text}` is not a duration (examples: 30s, 5m, 1h, 7d)"),
        )
    })
}

/// `off`/`never`/`none` disable a schedule.
fn optional_duration(key: &str, text: &str) -> Result<Option<Duration>, ConfigError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "off" | "never" | "none" | "false" => Ok(None),
        _ => duration(key, text).map(Some),
    }
}

fn size(key: &str, text: &str) -> Result<u64, ConfigError> {
    parse_size(text).filter(|s| *s > 0).ok_or_else(|| {
        value_error(
            key,
            &format!("`{text}` is not a size (examples: 128MiB, 1GiB, 512k)"),
        )
    })
}

/// What the compactor does to one table, fully resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub enabled: bool,
    pub trigger: CompactionTrigger,
    /// `None`: the table's `delta.targetFileSize`, else 128 MiB.
    pub target_file_size: Option<u64>,
    pub zorder_by: Vec<String>,
    pub max_bytes_per_run: u64,
    /// `None`: the table's `delta.checkpointInterval`.
    pub checkpoint_interval: Option<i64>,
    pub vacuum_interval: Option<Duration>,
    /// `None`: the table's own retention.
    pub vacuum_retention: Option<Duration>,
    pub log_cleanup_interval: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            enabled: true,
            trigger: CompactionTrigger {
                min_small_files: 10,
                min_small_share: None,
            },
            target_file_size: None,
            zorder_by: Vec::new(),
            max_bytes_per_run: 10 * 1024 * 1024 * 1024,
            checkpoint_interval: None,
            vacuum_interval: Some(Duration::from_secs(24 * 3600)),
            vacuum_retention: None,
            log_cleanup_interval: Some(Duration::from_secs(24 * 3600)),
        }
    }
}

/// The table properties that steer the compactor.
pub const PROPERTY_PREFIX: &str = "shoal.compaction.";

impl Policy {
    fn apply_config(&mut self, scope: &str, c: &PolicyConfig) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{scope}.{k}");
        if let Some(v) = c.enabled {
            self.enabled = v;
        }
        if let Some(v) = c.min_small_files {
            self.trigger.min_small_files = v.max(2);
        }
        if let Some(v) = c.min_small_share {
            if !(0.0..=1.0).contains(&v) {
                return Err(value_error(
                    &key("min_small_share"),
                    "must be between 0 and 1",
                ));
            }
            self.trigger.min_small_share = Some(v);
        }
        if let Some(v) = &c.target_file_size {
            self.target_file_size = Some(size(&key("target_file_size"), v)?);
        }
        if let Some(v) = &c.zorder_by {
            self.zorder_by = v.clone();
        }
        if let Some(v) = &c.max_bytes_per_run {
            self.max_bytes_per_run = size(&key("max_bytes_per_run"), v)?;
        }
        if let Some(v) = c.checkpoint_interval {
            if v < 1 {
                return Err(value_error(
                    &key("checkpoint_interval"),
                    "must be at least 1",
                ));
            }
            self.checkpoint_interval = Some(v);
        }
        if let Some(v) = &c.vacuum_interval {
            self.vacuum_interval = optional_duration(&key("vacuum_interval"), v)?;
        }
        if let Some(v) = &c.vacuum_retention {
            self.vacuum_retention = Some(duration(&key("vacuum_retention"), v)?);
        }
        if let Some(v) = &c.log_cleanup_interval {
            self.log_cleanup_interval = optional_duration(&key("log_cleanup_interval"), v)?;
        }
        Ok(())
    }

    /// `shoal.compaction.enabled`, `.zorderBy`, `.minSmallFiles`, `.minSmallShare`,
    /// `.targetFileSize`, `.maxBytesPerRun`, `.checkpointInterval`, `.vacuumInterval`,
    /// `.vacuumRetention`, `.logCleanupInterval`.
    fn apply_properties(&mut self, props: &HashMap<String, String>) -> Result<(), ConfigError> {
        let get = |k: &str| {
            props
                .get(&format!("{PROPERTY_PREFIX}{k}"))
                .map(|v| v.trim())
        };
        let parse_err = |k: &str, v: &str| {
            value_error(
                &format!("table property {PROPERTY_PREFIX}{k}"),
                &format!("cannot parse `{v}`"),
            )
        };
        let mut c = PolicyConfig::default();
        if let Some(v) = get("enabled") {
            c.enabled = Some(v.parse().map_err(|_| parse_err("enabled", v))?);
        }
        if let Some(v) = get("zorderBy") {
            c.zorder_by = Some(
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
            );
        }
        if let Some(v) = get("minSmallFiles") {
            c.min_small_files = Some(v.parse().map_err(|_| parse_err("minSmallFiles", v))?);
        }
        if let Some(v) = get("minSmallShare") {
            c.min_small_share = Some(v.parse().map_err(|_| parse_err("minSmallShare", v))?);
        }
        if let Some(v) = get("checkpointInterval") {
            c.checkpoint_interval =
                Some(v.parse().map_err(|_| parse_err("checkpointInterval", v))?);
        }
        c.target_file_size = get("targetFileSize").map(str::to_string);
        c.max_bytes_per_run = get("maxBytesPerRun").map(str::to_string);
        c.vacuum_interval = get("vacuumInterval").map(str::to_string);
        c.vacuum_retention = get("vacuumRetention").map(str::to_string);
        c.log_cleanup_interval = get("logCleanupInterval").map(str::to_string);
        self.apply_config("table properties", &c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("5 minutes"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("-1"), None);
    }

    #[test]
    fn layers_override_in_order() {
        let config = Config::parse(
            r#"
            [service]
            interval = "1m"
            [defaults]
            min_small_files = 20
            target_file_size = "64MiB"
            vacuum_interval = "off"
            [[table]]
            uri = "/data/events"
            zorder_by = ["user_id", "ts"]
            max_bytes_per_run = "1GiB"
            "#,
        )
        .unwrap();
        assert_eq!(config.interval(), Duration::from_secs(60));
        let mut props = HashMap::new();
        props.insert(
            "shoal.compaction.minSmallFiles".to_string(),
            "5".to_string(),
        );
        props.insert("shoal.compaction.zorderBy".to_string(), "a".to_string());
        let p = config.policy_for("/data/events/", &props).unwrap();
        assert_eq!(p.trigger.min_small_files, 5, "property beats [defaults]");
        assert_eq!(
            p.zorder_by,
            vec!["user_id", "ts"],
            "[[table]] beats property"
        );
        assert_eq!(p.target_file_size, Some(64 * 1024 * 1024));
        assert_eq!(p.max_bytes_per_run, 1024 * 1024 * 1024);
        assert_eq!(p.vacuum_interval, None);
        let other = config.policy_for("/data/other", &props).unwrap();
        assert_eq!(other.zorder_by, vec!["a"]);
        assert_eq!(other.max_bytes_per_run, Policy::default().max_bytes_per_run);
    }

    #[test]
    fn storage_options_under_service() {
        let config = Config::parse(
            r#"
            [service]
            warehouse = "s3://bucket/wh"
            [service.storage_options]
            aws_endpoint_url = "http://127.0.0.1:8333"
            aws_allow_http = true
            aws_secret_access_key = "SUPERSECRET"
            "#,
        )
        .unwrap();
        let o = config.service.storage_options.options();
        assert_eq!(o["aws_allow_http"], "true");
        assert_eq!(o["aws_endpoint_url"], "http://127.0.0.1:8333");
        assert!(!format!("{config:?}").contains("SUPERSECRET"));
        assert!(Config::parse("[service]\nstorage_option = {}").is_err());
    }

    #[test]
    fn table_storage_options_go_over_the_service_ones_and_stay_hidden() {
        let config = Config::parse(
            r#"
            [service]
            warehouse = "s3://bucket/wh"
            [service.storage_options]
            aws_endpoint_url = "http://127.0.0.1:8333"
            AWS_REGION = "us-east-1"
            aws_secret_access_key = "SERVICESECRET"
            [[table]]
            uri = "s3://other/events"
            min_small_files = 4
            [table.storage_options]
            aws_endpoint_url = "http://10.0.0.7:9000"
            aws_region = "eu-west-1"
            aws_secret_access_key = "TABLESECRET"
            aws_allow_http = true
            [[table]]
            uri = "s3://bucket/wh/clicks"
            storage_options = { aws_access_key_id = "clicks-key" }
            "#,
        )
        .unwrap();
        let events = config.storage_options_for("s3://other/events/");
        let o = events.options();
        assert_eq!(o["aws_endpoint_url"], "http://10.0.0.7:9000", "table wins");
        assert_eq!(o["aws_secret_access_key"], "TABLESECRET");
        assert_eq!(o["aws_allow_http"], "true");
        assert_eq!(o["aws_region"], "eu-west-1");
        assert!(
            !o.contains_key("AWS_REGION"),
            "one spelling of a key: {events:?}"
        );
        assert_eq!(o.len(), 4);
        let p = config.policy_for("s3://other/events", &HashMap::new());
        assert_eq!(
            p.unwrap().trigger.min_small_files,
            4,
            "policy keys still apply"
        );
        // An entry with options of its own for a table of the warehouse.
        let clicks = config.storage_options_for("s3://bucket/wh/clicks");
        assert_eq!(clicks.options()["aws_access_key_id"], "clicks-key");
        assert_eq!(clicks.options()["aws_secret_access_key"], "SERVICESECRET");
        // A discovered table without an entry: the service's options.
        assert_eq!(
            config.storage_options_for("s3://bucket/wh/other"),
            config.service.storage_options
        );
        for shown in [format!("{config:?}"), format!("{events:?}")] {
            assert!(!shown.contains("SECRET"), "{shown}");
            assert!(shown.contains("aws_secret_access_key"), "{shown}");
        }
        // Flags go over the service's options, under the table's.
        let mut service = config.service.storage_options.clone();
        merge_options(
            &mut service,
            &[("aws_region".to_string(), "ap-south-1".to_string())].into(),
        );
        assert_eq!(service.options()["aws_region"], "ap-south-1");
        assert!(!service.options().contains_key("AWS_REGION"));
    }

    #[test]
    fn config_errors_never_quote_a_value() {
        let cases = [
            // A credential put at the wrong level: an unknown key of the entry.
            "[[table]]\nuri = \"t\"\naws_secret_access_key = \"MISPLACED_SECRET\"\n",
            "[[table]]\nuri = \"t\"\nstorage_options = \"aws_secret_access_key=SHAPE_SECRET\"\n",
            "[service]\nstorage_options = \"aws_secret_access_key=SERVICE_SECRET\"\n",
            "[service]\n[service.storage_options]\nkey = [\"ARRAY_SECRET\"]\n",
            "[service]\nstorage_option = { aws_secret_access_key = \"TYPO_SECRET\" }\n",
        ];
        for text in cases {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(!e.contains("SECRET"), "{e}");
            assert!(e.contains("line "), "{e}");
        }
        let e = Config::parse(cases[0]).unwrap_err().to_string();
        assert!(e.contains("aws_secret_access_key"), "names the key: {e}");
        let e = Config::parse(cases[1]).unwrap_err().to_string();
        assert!(e.contains("storage_options"), "{e}");
        assert_eq!(
            redact_quoted(r#"invalid type: string "a\"b", expected `x`"#),
            r#"invalid type: string "…", expected `x`"#
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::parse("[service]\ninterval = \"soon\"").unwrap_err();
        assert!(e.to_string().contains("service.interval"), "{e}");
        let e = Config::parse("[defaults]\nmin_small_share = 3.0").unwrap_err();
        assert!(e.to_string().contains("defaults.min_small_share"), "{e}");
        let e = Config::parse("[defaults]\ntarget_size = \"1GiB\"").unwrap_err();
        assert!(e.to_string().contains("target_size"), "{e}");
        let e = Config::parse("[[table]]\nuri = \"t\"\ntarget_file_size = \"big\"").unwrap_err();
        assert!(e.to_string().contains("target_file_size"), "{e}");
        let mut props = HashMap::new();
        props.insert(
            "shoal.compaction.minSmallFiles".to_string(),
            "many".to_string(),
        );
        let e = Config::default().policy_for("t", &props).unwrap_err();
        assert!(
            e.to_string().contains("shoal.compaction.minSmallFiles"),
            "{e}"
        );
    }
}
