//! [`Verifier`]: one issuer's keys (a local JWKS file, fetched keys, or both) and the
//! checks its tokens must pass, built from the key settings every JWT-based attestor's
//! configuration shares ([`IssuerKeys`]).

use std::path::PathBuf;

use crate::remote::{KeySource, RemoteKeys, RemoteKeysConfig};
use crate::{Expectations, JwtError, KeySet, Verified, verify};

/// Where an issuer's verification keys come from, as an attestor's configuration
/// states them. Errors from [`Verifier::new`] name these keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssuerKeys {
    /// A JWKS file (`jwks_file`), checked before any fetched keys.
    pub jwks_file: Option<PathBuf>,
    /// Fetching: a JWKS URL (`jwks_url`), OIDC discovery from an issuer URL, or nothing.
    pub fetch: Option<KeySource>,
    /// CA certificates (PEM) for HTTPS fetches (`ca_file`); the system roots when unset.
    pub ca_file: Option<PathBuf>,
}

impl IssuerKeys {
    /// The usual rule of the attestors' `jwks_url` key: unset means OIDC discovery from
    /// `issuer`, `""` means no fetching (only `jwks_file`), anything else is the JWKS URL.
    pub fn from_settings(
        issuer: &str,
        jwks_url: Option<&str>,
        jwks_file: Option<PathBuf>,
        ca_file: Option<PathBuf>,
    ) -> Self {
        let fetch = match jwks_url {
            None => Some(KeySource::Discovery { issuer: issuer.to_owned() }),
            Some("") => None,
            Some(url) => Some(KeySource::Jwks { url: url.to_owned() }),
        };
        Self { jwks_file, fetch, ca_file }
    }
}

/// Verifies one issuer's tokens: against the local keys first, then (on an unknown
/// `kid` or a signature that fails under the local keys) against the fetched keys.
#[derive(Debug)]
pub struct Verifier {
    keys: KeySet,
    remote: Option<RemoteKeys>,
    want: Expectations,
}

impl Verifier {
    /// Reads `jwks_file` and prepares fetching (nothing is fetched until the first
    /// token). Errors name the configuration key at fault.
    pub fn new(src: &IssuerKeys, want: Expectations) -> Result<Self, String> {
        let mut keys = KeySet::default();
        if let Some(f) = &src.jwks_file {
            let text = std::fs::read(f).map_err(|e| format!("jwks_file: reading {}: {e}", f.display()))?;
            keys =
                KeySet::from_jwks_lenient(&text).map_err(|e| format!("jwks_file: {}: {e}", f.display()))?.0;
            if keys.is_empty() {
                return Err(format!("jwks_file: {}: no usable signing keys", f.display()));
            }
        }
        let remote = match &src.fetch {
            None => {
                if src.ca_file.is_some() {
                    return Err(
                        "ca_file: only used to fetch keys, and fetching is off (jwks_url = \"\")".into()
                    );
                }
                None
            }
            Some(source) => {
                let what = match source {
                    KeySource::Discovery { .. } => "issuer (OIDC discovery)",
                    KeySource::Jwks { .. } => "jwks_url",
                };
                let mut rc = RemoteKeysConfig::new(source.clone());
                rc.ca_file = src.ca_file.clone();
                Some(RemoteKeys::new(rc).map_err(|e| match e {
                    JwtError::BadKey(_) => format!("ca_file: {e}"),
                    _ => format!("{what}: {e}"),
                })?)
            }
        };
        if keys.is_empty() && remote.is_none() {
            return Err(
                "jwks_url: no keys to verify tokens with (set jwks_file, or let keys be fetched)".into()
            );
        }
        Ok(Self { keys, remote, want })
    }

    /// A verifier with fixed keys that never fetches (tests, air-gapped servers).
    pub fn with_keys(keys: KeySet, want: Expectations) -> Result<Self, String> {
        if keys.is_empty() {
            return Err("no keys to verify tokens with".into());
        }
        Ok(Self { keys, remote: None, want })
    }

    /// What tokens must satisfy.
    pub fn expectations(&self) -> &Expectations {
        &self.want
    }

    /// The fetched-keys cache, when fetching is on.
    pub fn remote(&self) -> Option<&RemoteKeys> {
        self.remote.as_ref()
    }

    /// Verifies `token` at `now` (Unix seconds).
    pub async fn verify(&self, token: &str, now: i64) -> Result<Verified, JwtError> {
        let local = if self.keys.is_empty() {
            Err(JwtError::UnknownKey(None))
        } else {
            verify(token, &self.keys, &self.want, now)
        };
        match (local, &self.remote) {
            (Err(JwtError::UnknownKey(_) | JwtError::BadSignature), Some(r)) => {
                r.verify(token, &self.want, now).await
            }
            (r, _) => r,
        }
    }
}
