//! The agent side: talk to the Instance Metadata Service (IMDS).
//!
//! As Microsoft documents IMDS: every request carries `Metadata: true` (IMDS refuses
//! requests without it, and requests with `X-Forwarded-For`); proxies are bypassed and
//! redirects are not followed.
//!
//! - [`initial_payload`]: `{}`, or with a `resource`, `{"token": "<access token>"}` from
//!   `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=<resource>`.
//! - [`respond`]: for the server's `{"nonce": "<n>"}`, IMDS's answer to
//!   `GET /metadata/attested/document?api-version=2020-09-01&nonce=<n>`, verbatim.
use std::time::Duration;

use serde::Deserialize;

use crate::{Challenge, InitialPayload};

/// IMDS's address.
pub const DEFAULT_IMDS_URL: &str = "http://169.254.169.254";
/// The attested-document API version requested (the first with `subscriptionId`
/// and `licenseType` that is still documented).
pub const ATTESTED_API_VERSION: &str = "2020-09-01";
/// The managed-identity token API version requested.
pub const IDENTITY_API_VERSION: &str = "2018-02-01";
const MAX_RESPONSE_BYTES: usize = 60 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

/// `[azure]` in the agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// IMDS's base URL (default `http://169.254.169.254`).
    #[serde(default = "default_imds_url")]
    pub imds_url: String,
    /// Send a managed-identity token for this resource (the server's
    /// `[azure.identity] resource`). Default: unset, no token.
    #[serde(default)]
    pub resource: Option<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self { imds_url: default_imds_url(), resource: None }
    }
}

fn default_imds_url() -> String {
    DEFAULT_IMDS_URL.to_owned()
}

fn url(cfg: &AgentConfig, path: &[&str], query: &[(&str, &str)]) -> Result<url::Url, String> {
    let mut u = url::Url::parse(&cfg.imds_url)
        .map_err(|e| format!("imds_url {:?} is not a URL: {e}", cfg.imds_url))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!("imds_url {:?}: scheme must be http or https", cfg.imds_url));
    }
    u.path_segments_mut()
        .map_err(|_| format!("imds_url {:?} cannot be a base URL", cfg.imds_url))?
        .pop_if_empty()
        .extend(path);
    {
        let mut q = u.query_pairs_mut();
        q.clear();
        for (k, v) in query {
            q.append_pair(k, v);
        }
    }
    Ok(u)
}

async fn get(u: url::Url) -> Result<Vec<u8>, String> {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let shown = format!("{}{}", u.origin().ascii_serialization(), u.path());
    let mut resp =
        client.get(u).header("Metadata", "true").send().await.map_err(|e| format!("GET {shown}: {e}"))?;
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {shown}: {e}"))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(format!("GET {shown}: answer over {MAX_RESPONSE_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let text: String = text.chars().take(200).filter(|c| !c.is_control()).collect();
        return Err(format!("GET {shown}: HTTP {status}: {text}"));
    }
    Ok(body)
}

/// The attestation payload: `{}`, or `{"token": ...}` with the managed identity's
/// access token for `resource`.
pub async fn initial_payload(cfg: &AgentConfig) -> Result<Vec<u8>, String> {
    let token = match &cfg.resource {
        None => None,
        Some(resource) => {
            let u = url(
                cfg,
                &["metadata", "identity", "oauth2", "token"],
                &[("api-version", IDENTITY_API_VERSION), ("resource", resource)],
            )?;
            #[derive(Deserialize)]
            struct Token {
                access_token: String,
            }
            let body = get(u).await?;
            let t: Token = serde_json::from_slice(&body)
                .map_err(|e| format!("IMDS token answer has no access_token: {e}"))?;
            Some(t.access_token)
        }
    };
    serde_json::to_vec(&InitialPayload { token }).map_err(|e| e.to_string())
}

/// Answers the server's challenge with an attested document for its nonce.
pub async fn respond(cfg: &AgentConfig, challenge: &[u8]) -> Result<Vec<u8>, String> {
    let c: Challenge = serde_json::from_slice(challenge)
        .map_err(|e| format!("unexpected challenge from the server: {e}"))?;
    if c.nonce.is_empty()
        || c.nonce.len() > 64
        || !c.nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err("the server's nonce is not 1-64 letters, digits or '-'".into());
    }
    let u = url(
        cfg,
        &["metadata", "attested", "document"],
        &[("api-version", ATTESTED_API_VERSION), ("nonce", &c.nonce)],
    )?;
    let body = get(u).await?;
    crate::parse_response(&body).map_err(|e| format!("IMDS answer: {e}"))?;
    Ok(body)
}
