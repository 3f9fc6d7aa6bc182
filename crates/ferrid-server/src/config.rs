//! The server's TOML configuration. Unknown keys are rejected and every error names the
//! key at fault; everything but the trust domain has a default, so a minimal file is:
//!
//! ```toml
//! trust_domain = "example.org"
//! data_dir = "/var/lib/ferrid/server"
//! bind_address = "0.0.0.0:8081"
//! ```
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrid_types::{KeyAlgorithm, TrustDomain};
use serde::Deserialize;

/// Default node API listener.
pub const DEFAULT_BIND_ADDRESS: &str = "0.0.0.0:8081";
/// Default health and metrics listener.
pub const DEFAULT_HEALTH_ADDRESS: &str = "127.0.0.1:8082";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/ferrid/server";
/// Default admin socket path, found by the CLI without configuration.
pub const DEFAULT_ADMIN_SOCKET: &str = "/tmp/ferrid/server/admin.sock";

use ferrid_types::config::invalid;
pub use ferrid_types::config::{ConfigError, LogConfig};

/// The whole server configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The trust domain this server is the authority for.
    pub trust_domain: String,
    /// Where the datastore, keys and sockets live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The node API listener (TLS).
    #[serde(default = "default_bind")]
    pub bind_address: String,
    /// The admin API's Unix socket; default `/tmp/ferrid/server/admin.sock`.
    #[serde(default)]
    pub admin_socket: Option<PathBuf>,
    /// Extra user IDs, besides the server's own, allowed on the admin socket.
    #[serde(default)]
    pub admin_allowed_uids: Vec<u32>,
    /// Health (`/live`, `/ready`) and Prometheus `/metrics` listener; "" disables it.
    #[serde(default = "default_health")]
    pub health_address: String,
    /// DNS names put in the server's own TLS certificate (besides its SPIFFE ID).
    #[serde(default = "default_server_dns")]
    pub server_dns_names: Vec<String>,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The datastore (`[datastore]`): SQLite under `data_dir` (default) or PostgreSQL.
    #[serde(default)]
    pub datastore: crate::datastore::DatastoreSection,
    /// Certificate authority.
    #[serde(default)]
    pub ca: CaSection,
    /// SVID defaults.
    #[serde(default)]
    pub svid: SvidSection,
    /// Node attestors.
    #[serde(default)]
    pub join_token: JoinTokenSection,
    /// The `k8s_psat` node attestor: Kubernetes clusters whose agents attest with
    /// projected service-account tokens (`[k8s_psat.clusters.<name>]`).
    #[serde(default)]
    pub k8s_psat: ferrid_attest_k8s_psat::PsatConfig,
    /// The `aws_iid` node attestor: EC2 instance identity documents (`[aws_iid]`).
    #[serde(default)]
    pub aws_iid: Option<ferrid_attest_aws_iid::AwsIidConfig>,
    /// The `gcp_iit` node attestor: GCE instance identity tokens (`[gcp_iit]`).
    #[serde(default)]
    pub gcp_iit: Option<ferrid_attest_gcp_iit::GcpIitConfig>,
    /// The `azure` node attestor: IMDS attested documents (`[azure]`).
    #[serde(default)]
    pub azure: Option<ferrid_attest_azure::AzureConfig>,
    /// Direct exchange of GitHub Actions job tokens (`[github_actions]`).
    #[serde(default)]
    pub github_actions: Option<ferrid_attest_oidc::GitHubConfig>,
    /// Direct exchange of GitLab CI job tokens (`[gitlab_ci]`).
    #[serde(default)]
    pub gitlab_ci: Option<ferrid_attest_oidc::GitLabConfig>,
    /// Direct exchange of tokens from other OIDC issuers (`[[oidc]]`, one per provider).
    #[serde(default)]
    pub oidc: Vec<ferrid_attest_oidc::OidcProviderConfig>,
    /// Runtime policy (`[policy]`): Cedar files deciding every issuance and exchange.
    #[serde(default)]
    pub policy: Option<crate::policy::PolicySection>,
    /// Token exchange, delegation chains and task tokens (`[delegation]`).
    #[serde(default)]
    pub delegation: crate::delegation::DelegationSection,
    /// Publish the trust bundle to a Kubernetes ConfigMap (`[k8s_bundle]`).
    #[serde(default)]
    pub k8s_bundle: Option<crate::k8s_bundle::K8sBundleSection>,
    /// Request limits.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Revocation feed listeners and push receivers (`[revocation]`).
    #[serde(default)]
    pub revocation: crate::revocation::RevocationSection,
    /// The tamper-evident audit log (`[audit]`).
    #[serde(default)]
    pub audit: crate::audit::AuditSection,
}

/// Where CA private keys are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyManagerKind {
    /// Files under `<data_dir>/keys`, mode 0600: survive restarts (default).
    #[default]
    Disk,
    /// Process memory only: every restart starts a new CA (the old bundle entries
    /// remain published until they expire, but nothing new is signed by them).
    Memory,
}

/// `[ca]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaSection {
    /// `ec-p256` (default), `ec-p384`, `rsa-2048`, `rsa-4096`.
    #[serde(default)]
    pub key_type: KeyAlgorithm,
    /// Lifetime of each CA certificate and JWT signing key.
    #[serde(default = "default_ca_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Where CA keys are kept.
    #[serde(default)]
    pub key_manager: KeyManagerKind,
    /// PEM certificate chain of an upstream CA that signs Ferrid's intermediate.
    #[serde(default)]
    pub upstream_cert_file: Option<PathBuf>,
    /// PEM PKCS#8 private key of that upstream CA.
    #[serde(default)]
    pub upstream_key_file: Option<PathBuf>,
    /// `iss` claim of JWT-SVIDs; none when unset.
    #[serde(default)]
    pub jwt_issuer: Option<String>,
    /// `spiffe_refresh_hint` published in the bundle.
    #[serde(default = "default_refresh_hint", with = "humantime_serde")]
    pub refresh_hint: Duration,
}

impl Default for CaSection {
    fn default() -> Self {
        Self {
            key_type: KeyAlgorithm::default(),
            ttl: default_ca_ttl(),
            key_manager: KeyManagerKind::default(),
            upstream_cert_file: None,
            upstream_key_file: None,
            jwt_issuer: None,
            refresh_hint: default_refresh_hint(),
        }
    }
}

/// `[svid]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvidSection {
    /// Default X.509-SVID lifetime.
    #[serde(default = "default_x509_ttl", with = "humantime_serde")]
    pub x509_ttl: Duration,
    /// Default JWT-SVID lifetime.
    #[serde(default = "default_jwt_ttl", with = "humantime_serde")]
    pub jwt_ttl: Duration,
    /// Upper bound for any per-entry or requested lifetime.
    #[serde(default = "default_max_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Lifetime of agent SVIDs.
    #[serde(default = "default_agent_ttl", with = "humantime_serde")]
    pub agent_ttl: Duration,
}

impl Default for SvidSection {
    fn default() -> Self {
        Self {
            x509_ttl: default_x509_ttl(),
            jwt_ttl: default_jwt_ttl(),
            max_ttl: default_max_ttl(),
            agent_ttl: default_agent_ttl(),
        }
    }
}

/// `[join_token]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenSection {
    /// Whether the join-token attestor is enabled.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Default lifetime of a generated token.
    #[serde(default = "default_token_ttl", with = "humantime_serde")]
    pub default_ttl: Duration,
}

impl Default for JoinTokenSection {
    fn default() -> Self {
        Self { enabled: true, default_ttl: default_token_ttl() }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest gRPC message accepted, bytes.
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// Most CSRs in one batch.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self { max_message_bytes: default_max_message(), max_batch: default_max_batch() }
    }
}

fn yes() -> bool {
    true
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn default_bind() -> String {
    DEFAULT_BIND_ADDRESS.to_owned()
}
fn default_health() -> String {
    DEFAULT_HEALTH_ADDRESS.to_owned()
}
fn default_server_dns() -> Vec<String> {
    vec!["localhost".to_owned()]
}
fn default_ca_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_refresh_hint() -> Duration {
    Duration::from_secs(300)
}
fn default_x509_ttl() -> Duration {
    Duration::from_secs(600)
}
fn default_jwt_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_max_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_agent_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_token_ttl() -> Duration {
    Duration::from_secs(600)
}
fn default_max_message() -> usize {
    4 * 1024 * 1024
}
fn default_max_batch() -> usize {
    1000
}

/// A configuration that has been parsed and checked.
#[derive(Debug, Clone)]
pub struct ValidatedConfig {
    /// The raw values.
    pub raw: ServerConfig,
    /// The parsed trust domain.
    pub trust_domain: TrustDomain,
    /// The parsed node API address.
    pub bind_address: SocketAddr,
    /// The parsed health address, if enabled.
    pub health_address: Option<SocketAddr>,
    /// The admin socket path.
    pub admin_socket: PathBuf,
}

impl ServerConfig {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<ValidatedConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<ValidatedConfig, ConfigError> {
        let raw: ServerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        raw.validate()
    }

    /// Checks every value and resolves defaults.
    pub fn validate(self) -> Result<ValidatedConfig, ConfigError> {
        let trust_domain = TrustDomain::new(&self.trust_domain).map_err(|e| {
            invalid("trust_domain", format!("{:?} is not a valid trust domain: {e}", self.trust_domain))
        })?;
        if self.trust_domain.starts_with("spiffe://") {
            return Err(invalid("trust_domain", "give the bare name (example.org), not a spiffe:// URI"));
        }
        let bind_address = self
            .bind_address
            .parse()
            .map_err(|e| invalid("bind_address", format!("{:?} is not host:port: {e}", self.bind_address)))?;
        let health_address = if self.health_address.is_empty() {
            None
        } else {
            Some(self.health_address.parse().map_err(|e| {
                invalid("health_address", format!("{:?} is not host:port: {e}", self.health_address))
            })?)
        };
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let min = Duration::from_secs(1);
        if self.svid.x509_ttl < min {
            return Err(invalid("svid.x509_ttl", "must be at least 1s"));
        }
        if self.svid.jwt_ttl < min {
            return Err(invalid("svid.jwt_ttl", "must be at least 1s"));
        }
        if self.svid.max_ttl < self.svid.x509_ttl || self.svid.max_ttl < self.svid.jwt_ttl {
            return Err(invalid("svid.max_ttl", "must be at least svid.x509_ttl and svid.jwt_ttl"));
        }
        if self.ca.ttl < Duration::from_secs(60) {
            return Err(invalid("ca.ttl", "must be at least 1m"));
        }
        // An SVID must fit in the part of a CA's life where that CA is active, or every
        // SVID would be cut short by the CA's NotAfter.
        if self.svid.x509_ttl > self.ca.ttl / 6 {
            return Err(invalid(
                "svid.x509_ttl",
                format!(
                    "{} is longer than a sixth of ca.ttl ({}); SVIDs would be cut short by CA rotation",
                    humantime::format_duration(self.svid.x509_ttl),
                    humantime::format_duration(self.ca.ttl)
                ),
            ));
        }
        if self.svid.agent_ttl < Duration::from_secs(60) {
            return Err(invalid("svid.agent_ttl", "must be at least 1m"));
        }
        match (&self.ca.upstream_cert_file, &self.ca.upstream_key_file) {
            (Some(_), None) => {
                return Err(invalid("ca.upstream_key_file", "required when ca.upstream_cert_file is set"));
            }
            (None, Some(_)) => {
                return Err(invalid("ca.upstream_cert_file", "required when ca.upstream_key_file is set"));
            }
            _ => {}
        }
        self.log.validate()?;
        self.datastore.validate()?;
        self.revocation.validate(&trust_domain)?;
        if self.limits.max_message_bytes < 1024 {
            return Err(invalid("limits.max_message_bytes", "must be at least 1024"));
        }
        if self.limits.max_batch == 0 {
            return Err(invalid("limits.max_batch", "must be at least 1"));
        }
        let admin_socket = self.admin_socket.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_ADMIN_SOCKET));
        Ok(ValidatedConfig { raw: self, trust_domain, bind_address, health_address, admin_socket })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_examples_parse() {
        for text in [
            include_str!("../../../examples/server.toml"),
            include_str!("../../../examples/server-full.toml"),
        ] {
            ServerConfig::parse(text).unwrap();
        }
    }

    #[test]
    fn minimal_config_is_three_lines() {
        let c = ServerConfig::parse(
            "trust_domain = \"example.org\"\ndata_dir = \"/tmp/x\"\nbind_address = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        assert_eq!(c.trust_domain.as_str(), "example.org");
        assert_eq!(c.raw.svid.x509_ttl, Duration::from_secs(600));
        assert_eq!(c.raw.svid.jwt_ttl, Duration::from_secs(300));
        assert_eq!(c.raw.ca.ttl, Duration::from_secs(86400));
        assert_eq!(c.raw.ca.key_type, KeyAlgorithm::EcP256);
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let e = ServerConfig::parse("trust_domain = \"example.org\"\ntrust_domian = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("trust_domian"), "{e}");
        let e =
            ServerConfig::parse("trust_domain = \"example.org\"\n[ca]\nkeytype = \"ec-p256\"\n").unwrap_err();
        assert!(e.to_string().contains("keytype"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("trust_domain = \"Bad Domain!\"", "trust_domain"),
            ("trust_domain = \"example.org\"\nbind_address = \"nope\"", "bind_address"),
            ("trust_domain = \"example.org\"\n[svid]\nx509_ttl = \"0s\"", "svid.x509_ttl"),
            ("trust_domain = \"example.org\"\n[svid]\nx509_ttl = \"10h\"", "svid.x509_ttl"),
            ("trust_domain = \"example.org\"\n[ca]\nupstream_cert_file = \"/x\"", "ca.upstream_key_file"),
            ("trust_domain = \"example.org\"\n[log]\nformat = \"xml\"", "log.format"),
            ("trust_domain = \"example.org\"\n[ca]\nkey_type = \"dsa\"", "key_type"),
            ("trust_domain = \"example.org\"\n[svid]\njwt_ttl = \"five minutes\"", "jwt_ttl"),
        ];
        for (text, key) in cases {
            let e = ServerConfig::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?} → {e}");
        }
    }

    #[test]
    fn poll_receivers_are_checked() {
        let cfg = |receivers: &str| format!("trust_domain = \"example.org\"\n{receivers}");
        let one =
            |name: &str, id: &str| format!("[[revocation.poll]]\nname = \"{name}\"\nspiffe_id = \"{id}\"\n");
        let ok = ServerConfig::parse(&cfg(&format!(
            "{}{}",
            one("payments", "spiffe://example.org/payments"),
            one("audit.rp", "spiffe://example.org/audit")
        )))
        .unwrap();
        assert_eq!(ok.raw.revocation.poll.len(), 2);
        assert_eq!(ok.raw.revocation.poll[0].spiffe_id.to_string(), "spiffe://example.org/payments");
        let cases = [
            (one("Payments", "spiffe://example.org/p"), "revocation.poll.name", "is not 1 to 64"),
            (one("", "spiffe://example.org/p"), "revocation.poll.name", "is not 1 to 64"),
            (
                format!("{}{}", one("p", "spiffe://example.org/a"), one("p", "spiffe://example.org/b")),
                "revocation.poll.name",
                "configured twice",
            ),
            (
                one("p", "spiffe://other.org/p"),
                "revocation.poll.spiffe_id",
                "not in the trust domain example.org",
            ),
            (one("p", "https://example.org/p"), "spiffe_id", "spiffe"),
        ];
        for (text, key, why) in cases {
            let e = ServerConfig::parse(&cfg(&text)).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(why), "{text:?} → {e}");
        }
        let e = ServerConfig::parse(&cfg("[[revocation.poll]]\nname = \"p\"\n")).unwrap_err().to_string();
        assert!(e.contains("spiffe_id"), "{e}");
    }
}
