//! The agent side: fetch the instance identity document and one proof from the
//! instance metadata service (IMDS) over IMDSv2, and build the payload the server's
//! attestor verifies.
//!
//! IMDSv2 (AWS, "Use the Instance Metadata Service to access instance metadata"):
//! `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` returns a
//! session token; every `GET` then carries it in `X-aws-ec2-metadata-token` (without
//! it, IMDSv2 answers 401). The document is at
//! `/latest/dynamic/instance-identity/document`, the proofs at `.../rsa2048`,
//! `.../pkcs7` and `.../signature`. IMDSv1 (no token) is not used: instances may
//! forbid it.

use std::time::Duration;

use serde::Deserialize;

use crate::{MAX_DOCUMENT_BYTES, MAX_PROOF_BYTES, Proof};

/// Where IMDS answers on every EC2 instance.
pub const DEFAULT_IMDS_URL: &str = "http://169.254.169.254";

/// Lifetime requested for the IMDSv2 session token, in seconds: the token is used
/// for three requests right away.
pub const TOKEN_TTL_SECONDS: u32 = 60;

/// How long each request to IMDS may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The largest session token accepted (AWS's are about 60 bytes).
const MAX_TOKEN_BYTES: usize = 4096;

/// `[aws_iid]` in the agent configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The metadata service's base URL (default `http://169.254.169.254`).
    #[serde(default = "default_imds_url")]
    pub imds_url: String,
    /// Which proof to send (default `rsa2048`).
    #[serde(default)]
    pub proof: Proof,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self { imds_url: default_imds_url(), proof: Proof::default() }
    }
}

fn default_imds_url() -> String {
    DEFAULT_IMDS_URL.to_owned()
}

impl AgentConfig {
    /// Checks the configuration without contacting IMDS; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.imds_url)
            .map_err(|e| format!("aws_iid.imds_url: {:?} is not a URL: {e}", self.imds_url))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("aws_iid.imds_url: {:?} must be an http:// or https:// URL", self.imds_url));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("aws_iid.imds_url: {:?} must not have a query or fragment", self.imds_url));
        }
        Ok(())
    }
}

/// Reads at most `limit` bytes of a successful response's body.
async fn body(what: &str, mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let status = resp.status();
    if !status.is_success() {
        let hint = match status.as_u16() {
            401 => " (the IMDSv2 session token was refused)",
            403 => {
                " (the instance metadata service is disabled on this instance, or the token request was refused)"
            }
            404 => " (not an EC2 instance, or this proof is not served here)",
            _ => "",
        };
        return Err(format!("IMDS {what}: HTTP {status}{hint}"));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("IMDS {what}: reading the answer: {e}"))? {
        if out.len() + chunk.len() > limit {
            return Err(format!("IMDS {what}: answer longer than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn send_error(what: &str, base: &str, e: reqwest::Error) -> String {
    if e.is_timeout() || e.is_connect() {
        format!(
            "IMDS {what}: no answer from {base}: {e} (is this an EC2 instance? An agent in a container needs the instance's metadata hop limit at 2 or more for IMDSv2)"
        )
    } else {
        format!("IMDS {what}: {e}")
    }
}

/// Fetches the identity document and the configured proof over IMDSv2 and returns
/// the payload for the server ([`crate::payload`]).
pub async fn collect(cfg: &AgentConfig) -> Result<Vec<u8>, String> {
    cfg.validate()?;
    let base = cfg.imds_url.trim_end_matches('/');
    // IMDS is link-local: never through an HTTP proxy from the environment.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| format!("IMDS client: {e}"))?;
    let resp = client
        .put(format!("{base}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS.to_string())
        .send()
        .await
        .map_err(|e| send_error("session token", base, e))?;
    let token = String::from_utf8(body("session token", resp, MAX_TOKEN_BYTES).await?)
        .map_err(|_| "IMDS session token: not UTF-8".to_owned())?;
    let token = token.trim();
    if token.is_empty() {
        return Err("IMDS session token: empty answer".into());
    }
    let get = |path: &str| {
        client
            .get(format!("{base}/latest/dynamic/instance-identity/{path}"))
            .header("X-aws-ec2-metadata-token", token)
            .send()
    };
    let resp = get("document").await.map_err(|e| send_error("identity document", base, e))?;
    let document = String::from_utf8(body("identity document", resp, MAX_DOCUMENT_BYTES).await?)
        .map_err(|_| "IMDS identity document: not UTF-8".to_owned())?;
    let what = format!("{} proof", cfg.proof);
    let resp = get(cfg.proof.as_str()).await.map_err(|e| send_error(&what, base, e))?;
    let proof = String::from_utf8(body(&what, resp, MAX_PROOF_BYTES).await?)
        .map_err(|_| format!("IMDS {what}: not UTF-8"))?;
    Ok(crate::payload(&document, cfg.proof, &proof))
}
