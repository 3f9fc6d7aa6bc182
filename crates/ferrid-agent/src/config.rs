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
    /// The `k8s` workload attestor (pods, from cgroups and the kubelet); enabled when
    /// the section is present.
    #[serde(default)]
    pub k8s: Option<K8sSection>,
    /// Attest the node with its EC2 instance identity document (`[aws_iid]`).
    #[serde(default)]
    pub aws_iid: Option<ferrid_attest_aws_iid::agent::AgentConfig>,
    /// Attest the node with its GCE instance identity token (`[gcp_iit]`).
    #[serde(default)]
    pub gcp_iit: Option<ferrid_attest_gcp_iit::agent::AgentConfig>,
    /// Attest the node with its Azure IMDS attested document (`[azure]`).
    #[serde(default)]
    pub azure: Option<ferrid_attest_azure::agent::AgentConfig>,
}

/// `[k8s]`: the `k8s` workload attestor. Every key is optional; an empty section
/// enables the attestor with the defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sSection {
    /// The kubelet's host. Default: the value of the environment variable named by
    /// `node_name_env` when set and non-empty, else `127.0.0.1`.
    #[serde(default)]
    pub kubelet_host: Option<String>,
    /// The environment variable holding the node's name (from the downward API's
    /// `spec.nodeName`).
    #[serde(default = "default_node_name_env")]
    pub node_name_env: String,
    /// The kubelet's HTTPS port.
    #[serde(default = "default_kubelet_secure_port")]
    pub kubelet_secure_port: u16,
    /// When set, plain HTTP to this port, without a token, instead of HTTPS.
    #[serde(default)]
    pub kubelet_read_only_port: Option<u16>,
    /// PEM CA certificates that verify the kubelet's serving certificate.
    #[serde(default = "default_kubelet_ca_path")]
    pub kubelet_ca_path: PathBuf,
    /// Do not verify the kubelet's certificate (logs a warning at start).
    #[serde(default)]
    pub skip_kubelet_verification: bool,
    /// The service-account token sent to the kubelet, re-read at every request.
    #[serde(default = "default_k8s_token_path")]
    pub token_path: PathBuf,
    /// Where procfs is mounted (with `hostPID: true` the agent sees the node's pids).
    #[serde(default = "default_proc_root")]
    pub proc_root: PathBuf,
    /// How long a fetched pod list is used.
    #[serde(default = "default_pod_list_cache", with = "humantime_serde")]
    pub pod_list_cache: Duration,
    /// How long to keep looking for a container the kubelet does not list yet.
    #[serde(default = "default_pod_wait", with = "humantime_serde")]
    pub pod_wait: Duration,
}

impl Default for K8sSection {
    fn default() -> Self {
        Self {
            kubelet_host: None,
            node_name_env: default_node_name_env(),
            kubelet_secure_port: default_kubelet_secure_port(),
            kubelet_read_only_port: None,
            kubelet_ca_path: default_kubelet_ca_path(),
            skip_kubelet_verification: false,
            token_path: default_k8s_token_path(),
            proc_root: default_proc_root(),
            pod_list_cache: default_pod_list_cache(),
            pod_wait: default_pod_wait(),
        }
    }
}

/// Longest `k8s.pod_list_cache` and `k8s.pod_wait` accepted.
const MAX_K8S_DURATION: Duration = Duration::from_secs(60);

impl K8sSection {
    /// The kubelet host: `kubelet_host`, else the value of `node_name_env` in the
    /// environment `env` when non-empty, else `127.0.0.1`.
    pub fn resolve_kubelet_host(&self, env: impl Fn(&str) -> Option<String>) -> String {
        if let Some(h) = &self.kubelet_host {
            return h.clone();
        }
        match env(&self.node_name_env) {
            Some(v) if !v.trim().is_empty() => v.trim().to_owned(),
            _ => "127.0.0.1".to_owned(),
        }
    }

    /// The attestor's settings, with the kubelet host resolved from `env`.
    pub fn attestor_config(&self, env: impl Fn(&str) -> Option<String>) -> ferrid_attest_k8s::K8sConfig {
        ferrid_attest_k8s::K8sConfig {
            kubelet_host: self.resolve_kubelet_host(env),
            kubelet_secure_port: self.kubelet_secure_port,
            kubelet_read_only_port: self.kubelet_read_only_port,
            kubelet_ca_path: self.kubelet_ca_path.clone(),
            skip_kubelet_verification: self.skip_kubelet_verification,
            token_path: self.token_path.clone(),
            proc_root: self.proc_root.clone(),
            pod_list_cache: self.pod_list_cache,
            pod_wait: self.pod_wait,
            ..ferrid_attest_k8s::K8sConfig::default()
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        use ferrid_types::config::invalid;
        if self.kubelet_host.as_deref().is_some_and(|h| h.trim().is_empty()) {
            return Err(invalid("k8s.kubelet_host", "must not be empty (leave it out to use node_name_env)"));
        }
        if self.node_name_env.is_empty() {
            return Err(invalid("k8s.node_name_env", "must not be empty"));
        }
        if self.kubelet_secure_port == 0 {
            return Err(invalid("k8s.kubelet_secure_port", "must be a port number, 1-65535"));
        }
        if self.kubelet_read_only_port == Some(0) {
            return Err(invalid("k8s.kubelet_read_only_port", "must be a port number, 1-65535"));
        }
        if self.pod_list_cache > MAX_K8S_DURATION {
            return Err(invalid("k8s.pod_list_cache", "at most 1m (pod changes would be seen that late)"));
        }
        if self.pod_wait > MAX_K8S_DURATION {
            return Err(invalid("k8s.pod_wait", "at most 1m (the caller waits that long)"));
        }
        Ok(())
    }
}

fn default_node_name_env() -> String {
    "FERRID_NODE_NAME".into()
}
fn default_kubelet_secure_port() -> u16 {
    ferrid_attest_k8s::DEFAULT_SECURE_PORT
}
fn default_kubelet_ca_path() -> PathBuf {
    PathBuf::from(ferrid_attest_k8s::DEFAULT_CA_PATH)
}
fn default_k8s_token_path() -> PathBuf {
    PathBuf::from(ferrid_attest_k8s::DEFAULT_TOKEN_PATH)
}
fn default_proc_root() -> PathBuf {
    PathBuf::from("/proc")
}
fn default_pod_list_cache() -> Duration {
    Duration::from_secs(1)
}
fn default_pod_wait() -> Duration {
    Duration::from_secs(5)
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
        use ferrid_types::config::invalid;
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
        if let Some(k8s) = &c.k8s {
            k8s.validate()?;
        }
        let node_attestors: Vec<&str> = [
            ("k8s_psat", c.k8s_psat.is_some()),
            ("aws_iid", c.aws_iid.is_some()),
            ("gcp_iit", c.gcp_iit.is_some()),
            ("azure", c.azure.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        if node_attestors.len() > 1 {
            return Err(invalid(
                "k8s_psat",
                format!("configure one node attestor, not {}", node_attestors.join(" and ")),
            ));
        }
        if let Some(a) = &c.aws_iid {
            a.validate().map_err(|e| invalid("aws_iid", e))?;
        }
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
        assert!(c.k8s.is_none());
        // Its commented-out [k8s] section, switched on, uses only real keys.
        let text = include_str!("../../../examples/agent.toml");
        let (_, k8s) = text.split_once("# [k8s]\n").unwrap();
        let k8s: Vec<&str> = k8s.lines().map(|l| l.strip_prefix("# ").unwrap_or(l)).collect();
        assert!(k8s.len() >= 10, "{k8s:?}");
        let (c, _) = AgentConfig::parse(&format!("{text}\n[k8s]\n{}\n", k8s.join("\n"))).unwrap();
        let k = c.k8s.unwrap();
        assert_eq!((k.kubelet_secure_port, k.pod_wait), (10250, Duration::from_secs(5)));
    }

    const BASE: &str =
        "trust_domain = \"example.org\"\nserver_address = \"x:1\"\ninsecure_bootstrap = true\n";

    #[test]
    fn k8s_section_defaults_and_every_key() {
        let (c, _) = AgentConfig::parse(BASE).unwrap();
        assert!(c.k8s.is_none(), "the k8s attestor is off without the section");
        let (c, _) = AgentConfig::parse(&format!("{BASE}[k8s]\n")).unwrap();
        let k = c.k8s.unwrap();
        assert_eq!(k.kubelet_host, None);
        assert_eq!(k.node_name_env, "FERRID_NODE_NAME");
        assert_eq!(k.kubelet_secure_port, 10250);
        assert_eq!(k.kubelet_read_only_port, None);
        assert_eq!(k.kubelet_ca_path, PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"));
        assert!(!k.skip_kubelet_verification);
        assert_eq!(k.token_path, PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token"));
        assert_eq!(k.proc_root, PathBuf::from("/proc"));
        assert_eq!(k.pod_list_cache, Duration::from_secs(1));
        assert_eq!(k.pod_wait, Duration::from_secs(5));

        let (c, _) = AgentConfig::parse(&format!(
            "{BASE}[k8s]\nkubelet_host = \"node-7\"\nnode_name_env = \"MY_NODE\"\nkubelet_secure_port = 11250\n\
             kubelet_read_only_port = 10255\nkubelet_ca_path = \"/ca.pem\"\nskip_kubelet_verification = true\n\
             token_path = \"/tok\"\nproc_root = \"/host/proc\"\npod_list_cache = \"500ms\"\npod_wait = \"10s\"\n"
        ))
        .unwrap();
        let k = c.k8s.unwrap();
        let a = k.attestor_config(|_| None);
        assert_eq!(a.kubelet_host, "node-7");
        assert_eq!(k.node_name_env, "MY_NODE");
        assert_eq!(a.kubelet_secure_port, 11250);
        assert_eq!(a.kubelet_read_only_port, Some(10255));
        assert_eq!(a.kubelet_ca_path, PathBuf::from("/ca.pem"));
        assert!(a.skip_kubelet_verification);
        assert_eq!(a.token_path, PathBuf::from("/tok"));
        assert_eq!(a.proc_root, PathBuf::from("/host/proc"));
        assert_eq!(a.pod_list_cache, Duration::from_millis(500));
        assert_eq!(a.pod_wait, Duration::from_secs(10));
    }

    #[test]
    fn kubelet_host_comes_from_the_node_name_variable() {
        let k = K8sSection::default();
        let env = |name: &str, value: &'static str| {
            let name = name.to_owned();
            move |n: &str| (n == name).then(|| value.to_owned())
        };
        assert_eq!(k.resolve_kubelet_host(env("FERRID_NODE_NAME", "worker-1")), "worker-1");
        assert_eq!(k.resolve_kubelet_host(env("FERRID_NODE_NAME", "")), "127.0.0.1", "empty is unset");
        assert_eq!(k.resolve_kubelet_host(env("OTHER", "worker-1")), "127.0.0.1");
        let k = K8sSection { node_name_env: "OTHER".into(), ..K8sSection::default() };
        assert_eq!(k.resolve_kubelet_host(env("OTHER", "worker-2")), "worker-2");
        let k = K8sSection { kubelet_host: Some("10.0.0.5".into()), ..K8sSection::default() };
        assert_eq!(k.resolve_kubelet_host(env("FERRID_NODE_NAME", "worker-1")), "10.0.0.5", "explicit wins");
    }

    #[test]
    fn bad_k8s_keys_are_named() {
        for (extra, key) in [
            ("kubelet_hostname = \"x\"\n", "kubelet_hostname"),
            ("kubelet_secure_port = 0\n", "k8s.kubelet_secure_port"),
            ("kubelet_secure_port = 70000\n", "kubelet_secure_port"),
            ("kubelet_read_only_port = 0\n", "k8s.kubelet_read_only_port"),
            ("kubelet_host = \"\"\n", "k8s.kubelet_host"),
            ("node_name_env = \"\"\n", "k8s.node_name_env"),
            ("pod_wait = \"2m\"\n", "k8s.pod_wait"),
            ("pod_list_cache = \"5m\"\n", "k8s.pod_list_cache"),
            ("pod_wait = \"soon\"\n", "pod_wait"),
            ("skip_kubelet_verification = \"yes\"\n", "skip_kubelet_verification"),
        ] {
            let e = AgentConfig::parse(&format!("{BASE}[k8s]\n{extra}")).unwrap_err().to_string();
            assert!(e.contains(key), "{extra:?}: {e}");
        }
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
