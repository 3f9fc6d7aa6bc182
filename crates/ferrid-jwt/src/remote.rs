//! Keys fetched from an issuer: OIDC discovery (`<issuer>/.well-known/openid-configuration`
//! → `jwks_uri`) or a JWKS URL, cached, and refreshed
//!
//! - when the cache is older than [`RemoteKeysConfig::max_age`], and
//! - when a token names a `kid` the cache does not hold (the issuer rotated its keys),
//!   at most once per [`RemoteKeysConfig::min_refresh_interval`], so a flood of tokens
//!   with made-up `kid`s costs the issuer one request per interval, not one per token.
//!
//! A failed refresh keeps the previous keys (logged by the caller through the error it
//! gets only when no keys are held at all). Documents are fetched over HTTPS; plain HTTP
//! is accepted only for loopback hosts (tests, a local issuer). Responses over
//! [`MAX_DOCUMENT_BYTES`] are refused.
//!
//! Rate limiting and cache age use the same `now` the caller passes for token checks,
//! so tests drive them with an injected clock.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::{Expectations, JwtError, KeySet, Verified, verify};

/// The largest discovery document or JWKS accepted.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Where the keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// OIDC discovery from the issuer URL: the document's `issuer` must equal it exactly.
    Discovery {
        /// The issuer (`iss`), e.g. `https://token.actions.githubusercontent.com`.
        issuer: String,
    },
    /// A JWKS URL, fetched directly.
    Jwks {
        /// The URL of the JWKS document.
        url: String,
    },
}

/// How to fetch and cache remote keys.
#[derive(Debug, Clone)]
pub struct RemoteKeysConfig {
    /// Where the keys come from.
    pub source: KeySource,
    /// PEM file of CA certificates to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Shortest time between two refreshes caused by unknown `kid`s (default 30 s).
    pub min_refresh_interval: Duration,
    /// Age after which the keys are refetched before use (default 1 h).
    pub max_age: Duration,
    /// Timeout of each HTTP request (default 10 s).
    pub timeout: Duration,
}

impl RemoteKeysConfig {
    /// Defaults for `source`: trust the system roots, refresh on unknown `kid` at most
    /// every 30 s, refetch hourly, 10 s timeouts.
    pub fn new(source: KeySource) -> Self {
        Self {
            source,
            ca_file: None,
            min_refresh_interval: Duration::from_secs(30),
            max_age: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Default)]
struct Cache {
    keys: Option<Arc<KeySet>>,
    /// `now` of the last successful fetch.
    fetched_at: i64,
    /// `now` of the last fetch attempt, successful or not.
    attempted_at: Option<i64>,
    /// Bumped by every successful fetch.
    generation: u64,
    /// Successful fetches of the JWKS so far.
    fetches: u64,
    /// Bumped by every fetch attempt, successful or not.
    attempts: u64,
    /// Why the last attempt failed, if it did.
    last_error: Option<JwtError>,
}

/// A cached, refreshed key set from an issuer. Cheap to share behind an `Arc`.
pub struct RemoteKeys {
    cfg: RemoteKeysConfig,
    client: reqwest::Client,
    cache: Mutex<Cache>,
    /// Serialises fetches: concurrent callers wait for one fetch instead of each making one.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys").field("source", &self.cfg.source).finish_non_exhaustive()
    }
}

fn unavailable(what: impl std::fmt::Display) -> JwtError {
    JwtError::KeysUnavailable(what.to_string())
}

/// Whether `url` may be fetched: HTTPS anywhere, HTTP only on loopback.
fn check_url(url: &str) -> Result<reqwest::Url, JwtError> {
    let u = reqwest::Url::parse(url).map_err(|e| unavailable(format!("{url:?} is not a URL: {e}")))?;
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    match u.scheme() {
        "https" => Ok(u),
        "http" if loopback => Ok(u),
        s => Err(unavailable(format!("{url}: scheme {s} is not allowed (use https; http only on loopback)"))),
    }
}

impl RemoteKeys {
    /// Checks the configuration (URL schemes, the CA file) and builds the HTTP client.
    /// Nothing is fetched until the first verification (or [`RemoteKeys::refresh`]).
    pub fn new(cfg: RemoteKeysConfig) -> Result<Self, JwtError> {
        match &cfg.source {
            KeySource::Discovery { issuer } => check_url(issuer)?,
            KeySource::Jwks { url } => check_url(url)?,
        };
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ferrid/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cfg.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| JwtError::BadKey(format!("{}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| JwtError::BadKey(format!("{}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(JwtError::BadKey(format!("{}: no certificates", path.display())));
            }
            builder = builder.tls_certs_only(certs);
        }
        let client = builder.build().map_err(|e| unavailable(format!("HTTP client: {e}")))?;
        Ok(Self { cfg, client, cache: Mutex::default(), fetching: tokio::sync::Mutex::new(()) })
    }

    /// Where the keys come from.
    pub fn source(&self) -> &KeySource {
        &self.cfg.source
    }

    /// How many times keys were fetched successfully (for tests and metrics).
    pub fn fetches(&self) -> u64 {
        self.cache.lock().unwrap().fetches
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, JwtError> {
        let u = check_url(url)?;
        let mut resp = self.client.get(u).send().await.map_err(|e| unavailable(format!("GET {url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("GET {url}: HTTP {}", resp.status())));
        }
        if resp.content_length().is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64) {
            return Err(unavailable(format!("GET {url}: response over {MAX_DOCUMENT_BYTES} bytes")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| unavailable(format!("GET {url}: {e}")))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(unavailable(format!("GET {url}: response over {MAX_DOCUMENT_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn jwks_url(&self) -> Result<String, JwtError> {
        match &self.cfg.source {
            KeySource::Jwks { url } => Ok(url.clone()),
            KeySource::Discovery { issuer } => {
                let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
                let doc: Value = serde_json::from_slice(&self.get(&url).await?)
                    .map_err(|e| unavailable(format!("{url}: not JSON: {e}")))?;
                let got = doc.get("issuer").and_then(Value::as_str).unwrap_or_default();
                if got != issuer {
                    return Err(unavailable(format!(
                        "{url}: the document's issuer {got:?} is not {issuer:?} (OIDC Discovery 1.0 §4.3)"
                    )));
                }
                let jwks = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| unavailable(format!("{url}: no jwks_uri")))?;
                check_url(jwks)?;
                Ok(jwks.to_owned())
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, JwtError> {
        let url = self.jwks_url().await?;
        let body = self.get(&url).await?;
        let (keys, _skipped) =
            KeySet::from_jwks_lenient(&body).map_err(|e| unavailable(format!("{url}: {e}")))?;
        if keys.is_empty() {
            return Err(unavailable(format!("{url}: no usable signing keys")));
        }
        Ok(keys)
    }

    /// Fetches the keys now, unless another caller did so while this one waited.
    /// Returns the keys held afterwards; an error only when the fetch failed.
    ///
    /// Callers that queue behind a fetch in progress take its outcome, success or
    /// failure, instead of fetching again: a failing issuer costs one request per
    /// refresh, however many tokens arrive meanwhile.
    pub async fn refresh(&self, now: i64) -> Result<Arc<KeySet>, JwtError> {
        let seen = self.cache.lock().unwrap().attempts;
        let _one = self.fetching.lock().await;
        {
            let mut c = self.cache.lock().unwrap();
            if c.attempts != seen {
                return match (&c.last_error, &c.keys) {
                    (None, Some(k)) => Ok(k.clone()),
                    (Some(e), _) => Err(e.clone()),
                    (None, None) => Err(unavailable("the issuer's keys could not be fetched")),
                };
            }
            // Count the attempt before it is made, so concurrent callers checking
            // the rate limit see it at once.
            c.attempted_at = Some(now);
        }
        let result = self.fetch().await;
        let mut c = self.cache.lock().unwrap();
        c.attempts += 1;
        c.last_error = result.as_ref().err().cloned();
        let keys = Arc::new(result?);
        c.keys = Some(keys.clone());
        c.fetched_at = now;
        c.generation += 1;
        c.fetches += 1;
        Ok(keys)
    }

    /// Verifies `token` like [`crate::verify`], with the issuer's current keys:
    /// fetched on first use, refetched when older than `max_age`, and refetched (rate
    /// limited) when the token's `kid` is unknown.
    pub async fn verify(&self, token: &str, want: &Expectations, now: i64) -> Result<Verified, JwtError> {
        let (keys, stale, may_refresh) = {
            let c = self.cache.lock().unwrap();
            let interval = self.cfg.min_refresh_interval.as_secs() as i64;
            let may_refresh = c.attempted_at.is_none_or(|t| now - t >= interval || now < t);
            let stale = now - c.fetched_at >= self.cfg.max_age.as_secs() as i64;
            (c.keys.clone(), stale, may_refresh)
        };
        let keys = match keys {
            None if may_refresh => self.refresh(now).await?,
            None => return Err(unavailable("the issuer's keys have not been fetched yet (retry later)")),
            // A failed background refresh keeps the old keys: better than refusing every token.
            Some(k) if stale && may_refresh => self.refresh(now).await.unwrap_or(k),
            Some(k) => k,
        };
        match verify(token, &keys, want, now) {
            Err(JwtError::UnknownKey(kid)) => {
                let may_refresh = {
                    let c = self.cache.lock().unwrap();
                    let interval = self.cfg.min_refresh_interval.as_secs() as i64;
                    c.attempted_at.is_none_or(|t| now - t >= interval || now < t)
                };
                if !may_refresh {
                    return Err(JwtError::UnknownKey(kid));
                }
                let keys = self.refresh(now).await?;
                verify(token, &keys, want, now)
            }
            other => other,
        }
    }
}
