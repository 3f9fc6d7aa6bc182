//! The agent side: fetch this VM's instance identity token from the metadata server.
//!
//! `GET <metadata_url>/computeMetadata/v1/instance/service-accounts/<sa>/identity?audience=<aud>&format=full`
//! with `Metadata-Flavor: Google`, as Compute Engine documents it ("Verifying the
//! identity of instances"). The response body is the token; the metadata server marks
//! its answers with `Metadata-Flavor: Google`, and an answer without it is refused (it
//! did not come from the metadata server). Redirects are not followed.
use std::time::Duration;

use serde::Deserialize;

/// The metadata server, as Compute Engine VMs resolve it.
pub const DEFAULT_METADATA_URL: &str = "http://metadata.google.internal";
/// The largest answer accepted from the metadata server.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Timeout of the request.
const TIMEOUT: Duration = Duration::from_secs(10);

/// `[gcp_iit]` in the agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The metadata server's base URL (default `http://metadata.google.internal`).
    #[serde(default = "default_metadata_url")]
    pub metadata_url: String,
    /// The audience to request the token for: the server's `[gcp_iit] audience`
    /// (default `ferrid-server`).
    #[serde(default = "default_audience")]
    pub audience: String,
    /// The service account whose token to request (default `default`, the VM's
    /// attached service account; or its email).
    #[serde(default = "default_service_account")]
    pub service_account: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            metadata_url: default_metadata_url(),
            audience: default_audience(),
            service_account: default_service_account(),
        }
    }
}

fn default_metadata_url() -> String {
    DEFAULT_METADATA_URL.to_owned()
}

fn default_audience() -> String {
    crate::DEFAULT_AUDIENCE.to_owned()
}

fn default_service_account() -> String {
    "default".to_owned()
}

/// The identity-token URL for `cfg`.
pub fn identity_url(cfg: &AgentConfig) -> Result<url::Url, String> {
    let mut u = url::Url::parse(&cfg.metadata_url)
        .map_err(|e| format!("metadata_url {:?} is not a URL: {e}", cfg.metadata_url))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!("metadata_url {:?}: scheme must be http or https", cfg.metadata_url));
    }
    if cfg.service_account.is_empty() || cfg.audience.is_empty() {
        return Err("service_account and audience must not be empty".into());
    }
    u.path_segments_mut()
        .map_err(|_| format!("metadata_url {:?} cannot be a base URL", cfg.metadata_url))?
        .pop_if_empty()
        .extend(["computeMetadata", "v1", "instance", "service-accounts", &cfg.service_account, "identity"]);
    u.query_pairs_mut().clear().append_pair("audience", &cfg.audience).append_pair("format", "full");
    Ok(u)
}

/// Fetches the `format=full` identity token: the attestation payload.
pub async fn collect(cfg: &AgentConfig) -> Result<Vec<u8>, String> {
    let url = identity_url(cfg)?;
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let shown = format!("{}{}", url.origin().ascii_serialization(), url.path());
    let mut resp = client
        .get(url)
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .map_err(|e| format!("GET {shown}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {shown}: HTTP {}", resp.status()));
    }
    if resp.headers().get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return Err(format!(
            "GET {shown}: the answer has no Metadata-Flavor: Google header (not the metadata server?)"
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {shown}: {e}"))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(format!("GET {shown}: answer over {MAX_RESPONSE_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let token =
        std::str::from_utf8(&body).map_err(|_| format!("GET {shown}: the token is not UTF-8"))?.trim();
    if token.split('.').count() != 3 {
        return Err(format!("GET {shown}: the answer is not a JWT"));
    }
    Ok(token.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_escapes_the_service_account_and_the_audience() {
        let cfg = AgentConfig {
            metadata_url: "http://127.0.0.1:1/".into(),
            audience: "https://ferrid.example/x?y=1&z".into(),
            service_account: "a/b@p.iam.gserviceaccount.com".into(),
        };
        let u = identity_url(&cfg).unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:1/computeMetadata/v1/instance/service-accounts/a%2Fb@p.iam.gserviceaccount.com/identity?audience=https%3A%2F%2Fferrid.example%2Fx%3Fy%3D1%26z&format=full"
        );
        let d = identity_url(&AgentConfig::default()).unwrap();
        assert_eq!(
            d.as_str(),
            "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/identity?audience=ferrid-server&format=full"
        );
        assert!(
            identity_url(&AgentConfig { metadata_url: "file:///x".into(), ..AgentConfig::default() })
                .is_err()
        );
    }
}
