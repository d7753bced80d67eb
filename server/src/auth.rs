//! Bearer tokens with per-table grants. Tokens are kept as SHA-256 hashes; a request's
//! token is hashed and looked up, so the clear text never stays in memory.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};

/// What a grant allows, each level including the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Scans, describe, history, schema, files.
    Read,
    /// Append, overwrite, merge, delete, update, optimize, create.
    Write,
    /// Drop, restore, vacuum.
    Admin,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Write => "write",
            Level::Admin => "admin",
        }
    }
}

/// One configured token: its hash and its grants, `(table glob, level)`.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub name: String,
    pub hash: [u8; 32],
    pub grants: Vec<(String, Level)>,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No tokens are configured: everything is allowed (the server binds loopback only,
    /// unless started with `--insecure`).
    Open,
    Token(Arc<TokenEntry>),
}

impl Principal {
    /// The highest level granted on `table`, if any.
    pub fn level(&self, table: &str) -> Option<Level> {
        match self {
            Principal::Open => Some(Level::Admin),
            Principal::Token(t) => t
                .grants
                .iter()
                .filter(|(glob, _)| glob_match(glob, table))
                .map(|(_, l)| *l)
                .max(),
        }
    }

    /// Fails with 403 unless the principal holds `level` on `table`.
    pub fn require(&self, table: &str, level: Level) -> ApiResult<()> {
        match self.level(table) {
            Some(l) if l >= level => Ok(()),
            _ => {
                let who = match self {
                    Principal::Open => "anonymous",
                    Principal::Token(t) => t.name.as_str(),
                };
                Err(ApiError::forbidden(format!(
                    "token `{who}` has no `{}` grant on table `{table}`",
                    level.name()
                )))
            }
        }
    }
}

/// The configured tokens, by hash.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: HashMap<[u8; 32], Arc<TokenEntry>>,
}

impl Auth {
    pub fn new(tokens: Vec<TokenEntry>) -> Self {
        Auth {
            tokens: tokens.into_iter().map(|t| (t.hash, Arc::new(t))).collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The principal of a request: 401 when tokens are configured and the request has
    /// none or an unknown one.
    pub fn authenticate(&self, headers: &HeaderMap) -> ApiResult<Principal> {
        if !self.enabled() {
            return Ok(Principal::Open);
        }
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>`"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header is not `Bearer <token>`")
            })?;
        self.tokens
            .get(&hash_token(token))
            .map(|t| Principal::Token(t.clone()))
            .ok_or_else(|| ApiError::unauthorized("unknown token"))
    }
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A token as configured: `sha256:<64 hex digits>`, or the token itself (hashed here).
pub fn parse_token_hash(configured: &str) -> Result<[u8; 32], String> {
    match configured.strip_prefix("sha256:") {
        Some(hex_digits) => {
            let bytes = hex::decode(hex_digits.trim())
                .map_err(|e| format!("`sha256:` must be followed by 64 hex digits: {e}"))?;
            bytes
                .try_into()
                .map_err(|_| "`sha256:` must be followed by 64 hex digits".to_string())
        }
        None if configured.is_empty() => Err("empty token".into()),
        None => Ok(hash_token(configured)),
    }
}

/// Glob match over table names: `*` any run of characters, `?` one character.
pub fn glob_match(glob: &str, name: &str) -> bool {
    let g: Vec<char> = glob.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut gi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if gi < g.len() && (g[gi] == '?' || g[gi] == n[ni]) {
            gi += 1;
            ni += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some((gi, ni));
            gi += 1;
        } else if let Some((sg, sn)) = star {
            gi = sg + 1;
            ni = sn + 1;
            star = Some((sg, sn + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("sales.*", "sales.orders"));
        assert!(!glob_match("sales.*", "salesx"));
        assert!(glob_match("ev?nts", "events"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("orders", "orders"));
        assert!(!glob_match("orders", "orders2"));
    }

    #[test]
    fn token_hashes() {
        let h = hash_token("s3cret");
        let hex_form = format!("sha256:{}", hex::encode(h));
        assert_eq!(parse_token_hash(&hex_form).unwrap(), h);
        assert_eq!(parse_token_hash("s3cret").unwrap(), h);
        assert!(parse_token_hash("sha256:abcd").is_err());
        assert!(parse_token_hash("").is_err());
    }

    #[test]
    fn levels() {
        let t = Principal::Token(Arc::new(TokenEntry {
            name: "t".into(),
            hash: [0; 32],
            grants: vec![("*".into(), Level::Read), ("sales.*".into(), Level::Write)],
        }));
        assert!(t.require("x", Level::Read).is_ok());
        assert!(t.require("x", Level::Write).is_err());
        assert!(t.require("sales.o", Level::Write).is_ok());
        assert!(t.require("sales.o", Level::Admin).is_err());
    }
}
