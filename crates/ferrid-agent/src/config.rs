//! The agent's TOML configuration (unknown keys rejected; errors name the key).
//!
//! ```toml
//! trust_domain = "example.org"
//! server_address = "ferrid-server:8081"
//! trust_bundle_file = "/etc/ferrid/bundle.pem"
//! join_token = "…"          # first start only
//! ```
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrid_types::TrustDomain;
use serde::Deserialize;

/// Default Workload API socket (what `SPIFFE_ENDPOINT_SOCKET` points at).
pub const DEFAULT_SOCKET: &str = "/tmp/ferrid/agent/public/api.sock";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/ferrid/agent";

pub use ferrid_types::config::{ConfigError, LogConfig};

/// The agent configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The trust domain of the server.
    pub trust_domain: String,
    /// The server's node API, host:port.
    pub server_address: String,
    /// Agent state: its own SVID and key (mode 0600), the last bundle. Workload keys
    /// are never written anywhere.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The Workload API socket.
    #[serde(default = "default_socket")]
    pub socket_path: PathBuf,
    /// A one-time join token for the first attestation.
    #[serde(default)]
    pub join_token: Option<String>,
    /// A file holding the join token (takes precedence over `join_token`).
    #[serde(default)]
    pub join_token_file: Option<PathBuf>,
    /// PEM bundle that authenticates the server on first contact.
    #[serde(default)]
    pub trust_bundle_file: Option<PathBuf>,
    /// Trust the server blindly on first contact (labs only; logs a warning).
    #[serde(default)]
    pub insecure_bootstrap: bool,
    /// Longest wait between reconnection attempts.
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The unix workload attestor.
    #[serde(default)]
    pub unix: UnixSection,
    /// Attest the node with its Kubernetes projected service-account token instead of
    /// a join token.
    #[serde(default)]
    pub k8s_psat: Option<K8sPsatSection>,
}

/// `[k8s_psat]`: node attestation with a projected service-account token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sPsatSection {
    /// The cluster's name, as configured on the server.
    pub cluster: String,
    /// The projected token (audience `ferrid-server` by default), re-read at every attestation.
    #[serde(default = "default_psat_token_path")]
    pub token_path: PathBuf,
}

fn default_psat_token_path() -> PathBuf {
    PathBuf::from("/var/run/secrets/tokens/ferrid-agent")
}

/// `[unix]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixSection {
    /// Hash callers' binaries for `unix:sha256:` selectors.
    #[serde(default = "yes")]
    pub binary_digest: bool,
}

impl Default for UnixSection {
    fn default() -> Self {
        Self { binary_digest: true }
    }
}

fn yes() -> bool {
    true
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}
fn default_backoff() -> Duration {
    Duration::from_secs(30)
}

impl AgentConfig {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<(Self, TrustDomain), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<(Self, TrustDomain), ConfigError> {
        let c: Self = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let td = TrustDomain::new(&c.trust_domain).map_err(|e| ConfigError::Invalid {
            key: "trust_domain",
            reason: format!("{:?} is not a valid trust domain: {e}", c.trust_domain),
        })?;
        if c.server_address.is_empty() || !c.server_address.contains(':') {
            return Err(ConfigError::Invalid { key: "server_address", reason: "must be host:port".into() });
        }
        if c.trust_bundle_file.is_none() && !c.insecure_bootstrap {
            return Err(ConfigError::Invalid {
                key: "trust_bundle_file",
                reason: "required to authenticate the server (or set insecure_bootstrap = true in a lab)"
                    .into(),
            });
        }
        c.log.validate()?;
        Ok((c, td))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_example_parses() {
        let (c, _) = AgentConfig::parse(include_str!("../../../examples/agent.toml")).unwrap();
        assert_eq!(c.socket_path, PathBuf::from("/run/ferrid/agent/public/api.sock"));
    }

    #[test]
    fn minimal_and_bad_configs() {
        let (c, td) = AgentConfig::parse(
            "trust_domain = \"example.org\"\nserver_address = \"127.0.0.1:8081\"\ntrust_bundle_file = \"/b.pem\"\n",
        )
        .unwrap();
        assert_eq!(td.as_str(), "example.org");
        assert_eq!(c.socket_path, PathBuf::from(DEFAULT_SOCKET));
        for (text, key) in [
            ("trust_domain = \"example.org\"\nserver_address = \"x:1\"\n", "trust_bundle_file"),
            (
                "trust_domain = \"ex ample\"\nserver_address = \"x:1\"\ninsecure_bootstrap = true\n",
                "trust_domain",
            ),
            (
                "trust_domain = \"example.org\"\nserver_address = \"nope\"\ninsecure_bootstrap = true\n",
                "server_address",
            ),
            (
                "trust_domain = \"example.org\"\nserver_address = \"x:1\"\ninsecure_bootstrap = true\nsocket = \"/x\"\n",
                "socket",
            ),
        ] {
            let e = AgentConfig::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }
}
