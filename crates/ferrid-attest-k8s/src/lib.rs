//! The `k8s` workload attestor: which pod and container a caller runs in, according to
//! the node's kernel and kubelet.
//!
//! 1. `<proc_root>/<pid>/cgroup` gives the caller's container ID (cgroup v1 and v2;
//!    containerd, CRI-O and Docker; systemd and cgroupfs drivers; see [`cgroup`]).
//! 2. The kubelet's `GET /pods` (the pods of this node, a `v1.PodList`) gives the pod
//!    whose `status.containerStatuses`, `initContainerStatuses` or
//!    `ephemeralContainerStatuses` hold that container ID.
//! 3. The pod and container become selector values (written `k8s:<value>` in entries):
//!
//! | value | from |
//! | --- | --- |
//! | `ns:<namespace>` | `metadata.namespace` |
//! | `sa:<name>` | `spec.serviceAccountName` |
//! | `pod-name:<name>` | `metadata.name` |
//! | `pod-uid:<uid>` | `metadata.uid` |
//! | `pod-label:<key>:<value>` | one per entry of `metadata.labels` |
//! | `pod-owner:<Kind>:<name>` | one per `metadata.ownerReferences` entry, e.g. `pod-owner:ReplicaSet:web-7d4b9c8f6d` |
//! | `pod-owner-uid:<Kind>:<uid>` | the same owners by UID |
//! | `container-name:<name>` | the container's name (regular, init or ephemeral) |
//! | `container-image:<image>` | the image as written in the pod spec, and as the runtime reports it in the status (`image` and `imageID`, e.g. `docker.io/library/nginx@sha256:…`), each once |
//! | `node-name:<name>` | `spec.nodeName` |
//!
//! # Processes that are not in a pod
//!
//! A host process, CRI-O's `conmon`, or a container the kubelet does not run (plain
//! Docker, no pod level in its cgroup path) gets [`AttestError::NotApplicable`]: the
//! agent then serves it with the other attestors' selectors (`unix`). Anything else
//! that goes wrong for a pod's container is an error that fails the caller's
//! attestation, so a pod is never served with a partial set of selectors.
//!
//! # Caching and waiting
//!
//! The pod list is cached for `pod_list_cache` (1 s by default), and concurrent
//! lookups share one fetch, so a burst of workloads starting on a node costs one
//! kubelet request. A container whose cgroup path names a pod but which the kubelet
//! does not list yet (the kubelet publishes a container's ID shortly after the runtime
//! starts it) is looked up again with fresh lists, backing off from 100 ms to 1 s, until
//! `pod_wait` (5 s) has passed; then it is refused with a message naming the container,
//! its pod UID and the wait.
//!
//! # The kubelet
//!
//! By default HTTPS on the secure port (10250) with the agent's service-account token as
//! a bearer token (re-read from `token_path` at every request, because the kubelet
//! rotates it), the kubelet's certificate verified against `kubelet_ca_path` unless
//! `skip_kubelet_verification`. With `kubelet_read_only_port`, plain HTTP without a
//! token. Answers above 32 MiB and requests that take more than 10 s are refused. An
//! unreachable or refusing kubelet is [`AttestError::Unavailable`], naming the URL and
//! the cause; the token never appears in a message or a log.
//!
//! # PID reuse
//!
//! As in the `unix` attestor ([`ferrid_attest_unix::ProcessGuard`]): the process's start
//! time is read before the cgroup file and again after the pod is found, and the
//! socket peer's uid must be one of the process's; a caller whose pid was recycled in
//! between is refused rather than described as another process.
#![forbid(unsafe_code)]

pub mod cgroup;
mod kubelet;
pub mod pods;
#[cfg(feature = "testkit")]
pub mod testkit;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ferrid_attest::{AttestError, PeerCredentials, WorkloadAttestor};
use ferrid_attest_unix::ProcessGuard;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::cgroup::ContainerRef;
use crate::kubelet::{Kubelet, PodCache, Transport};
use crate::pods::PodMatch;

pub use crate::pods::PodList;

/// The kubelet's default secure (HTTPS) port.
pub const DEFAULT_SECURE_PORT: u16 = 10250;
/// Where a pod finds its cluster's CA certificate.
pub const DEFAULT_CA_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
/// Where a pod finds its service-account token.
pub const DEFAULT_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Largest pod list accepted from the kubelet (a busy node's is a few MiB).
pub const MAX_POD_LIST_BYTES: usize = 32 * 1024 * 1024;
/// Longest a kubelet request may take, connection to last byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// First wait before looking for a container that is not listed yet.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest wait between two such lookups.
const MAX_RETRY: Duration = Duration::from_secs(1);

/// Settings of the `k8s` attestor (the agent's `[k8s]` section, with the kubelet host
/// already resolved).
#[derive(Debug, Clone)]
pub struct K8sConfig {
    /// The kubelet's host name or IP address.
    pub kubelet_host: String,
    /// The kubelet's HTTPS port.
    pub kubelet_secure_port: u16,
    /// When set, plain HTTP to this port without a token instead of HTTPS.
    pub kubelet_read_only_port: Option<u16>,
    /// PEM certificates that verify the kubelet's serving certificate.
    pub kubelet_ca_path: PathBuf,
    /// Accept any kubelet certificate (the handshake still proves the kubelet holds the
    /// certificate's key, but not who it is).
    pub skip_kubelet_verification: bool,
    /// The agent's service-account token, sent as a bearer token.
    pub token_path: PathBuf,
    /// Where procfs is mounted.
    pub proc_root: PathBuf,
    /// How long a fetched pod list is used.
    pub pod_list_cache: Duration,
    /// How long to keep looking for a container the kubelet does not list yet.
    pub pod_wait: Duration,
    /// Longest a kubelet request may take ([`REQUEST_TIMEOUT`]).
    pub request_timeout: Duration,
    /// Largest pod list accepted ([`MAX_POD_LIST_BYTES`]).
    pub max_pod_list_bytes: usize,
}

impl Default for K8sConfig {
    fn default() -> Self {
        Self {
            kubelet_host: "127.0.0.1".into(),
            kubelet_secure_port: DEFAULT_SECURE_PORT,
            kubelet_read_only_port: None,
            kubelet_ca_path: PathBuf::from(DEFAULT_CA_PATH),
            skip_kubelet_verification: false,
            token_path: PathBuf::from(DEFAULT_TOKEN_PATH),
            proc_root: PathBuf::from("/proc"),
            pod_list_cache: Duration::from_secs(1),
            pod_wait: Duration::from_secs(5),
            request_timeout: REQUEST_TIMEOUT,
            max_pod_list_bytes: MAX_POD_LIST_BYTES,
        }
    }
}

/// Why the attestor could not be set up; names the setting at fault.
#[derive(Debug, thiserror::Error)]
#[error("`k8s.{key}`: {reason}")]
pub struct SetupError {
    /// The setting (`kubelet_ca_path`, `kubelet_host`, …).
    pub key: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn setup_err(key: &'static str, reason: impl Into<String>) -> SetupError {
    SetupError { key, reason: reason.into() }
}

/// The `k8s` workload attestor.
#[derive(Debug)]
pub struct K8sAttestor {
    proc_root: PathBuf,
    pod_wait: Duration,
    cache: PodCache,
}

impl K8sAttestor {
    /// An attestor with `cfg`. Reads the CA file at once (a missing or empty one is an
    /// error); the token is read at each request.
    pub fn new(cfg: K8sConfig) -> Result<Self, SetupError> {
        if cfg.kubelet_host.is_empty() {
            return Err(setup_err("kubelet_host", "is empty"));
        }
        let (port, transport) = match cfg.kubelet_read_only_port {
            Some(0) => return Err(setup_err("kubelet_read_only_port", "port 0 is not a port")),
            Some(port) => {
                tracing::warn!(
                    port,
                    "k8s attestor: using the kubelet's read-only port (plain HTTP, no authentication)"
                );
                (port, Transport::ReadOnly)
            }
            None => {
                let tls = if cfg.skip_kubelet_verification {
                    tracing::warn!(
                        "k8s attestor: skip_kubelet_verification = true, the kubelet's certificate is not verified"
                    );
                    ferrid_tls::insecure_client_config(None)
                        .map_err(|e| setup_err("skip_kubelet_verification", e.to_string()))?
                } else {
                    verifying_config(&cfg.kubelet_ca_path)?
                };
                let server_name = ServerName::try_from(cfg.kubelet_host.clone())
                    .map_err(|e| setup_err("kubelet_host", format!("{:?}: {e}", cfg.kubelet_host)))?;
                let transport = Transport::Secure {
                    tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
                    server_name,
                    token_path: cfg.token_path.clone(),
                };
                (cfg.kubelet_secure_port, transport)
            }
        };
        if port == 0 {
            return Err(setup_err("kubelet_secure_port", "port 0 is not a port"));
        }
        let kubelet =
            Kubelet::new(cfg.kubelet_host, port, transport, cfg.request_timeout, cfg.max_pod_list_bytes);
        tracing::info!(kubelet = %kubelet.url, "k8s workload attestor enabled");
        Ok(Self {
            proc_root: cfg.proc_root,
            pod_wait: cfg.pod_wait,
            cache: PodCache::new(kubelet, cfg.pod_list_cache),
        })
    }

    /// The kubelet URL pod lists are fetched from.
    pub fn kubelet_url(&self) -> &str {
        self.cache.url()
    }

    /// The pod running `c`, waiting up to `pod_wait` for the kubelet to list it.
    async fn find_pod(&self, c: &ContainerRef) -> Result<PodMatch, AttestError> {
        let started = Instant::now();
        let deadline = started + self.pod_wait;
        let mut backoff = FIRST_RETRY;
        let mut newer_than = None;
        let mut lookups = 0u32;
        loop {
            let snap = self.cache.get(newer_than).await;
            lookups += 1;
            let pods = snap.pods?;
            match pods.lookup(&c.container_id).map_err(|e| AttestError::Rejected(e.to_string()))? {
                Some(m) => {
                    if let Some(uid) = &c.pod_uid
                        && *uid != m.pod_uid
                    {
                        return Err(AttestError::Rejected(format!(
                            "container {} is in pod {uid} according to its cgroup, but the kubelet lists it in pod {} ({}/{})",
                            c.container_id, m.pod_uid, m.namespace, m.pod_name
                        )));
                    }
                    return Ok(m);
                }
                None if c.pod_uid.is_none() => {
                    return Err(AttestError::NotApplicable(format!(
                        "container {} has no pod in its cgroup path and is not in the pod list of the kubelet at {}",
                        c.container_id,
                        self.cache.url()
                    )));
                }
                None => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(AttestError::Rejected(format!(
                    "container {} of pod {} is not in the pod list of the kubelet at {} after waiting {:?} ({lookups} lookups)",
                    c.container_id,
                    c.pod_uid.as_deref().unwrap_or_default(),
                    self.cache.url(),
                    self.pod_wait,
                )));
            }
            tracing::debug!(container = %c.container_id, "container not listed by the kubelet yet; retrying");
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(MAX_RETRY);
            newer_than = Some(snap.generation);
        }
    }
}

/// A client configuration that verifies the kubelet against the CA certificates in `path`.
fn verifying_config(path: &std::path::Path) -> Result<rustls::ClientConfig, SetupError> {
    let key = "kubelet_ca_path";
    let text =
        std::fs::read(path).map_err(|e| setup_err(key, format!("cannot read {}: {e}", path.display())))?;
    let certs: Vec<CertificateDer<'static>> = pem::parse_many(&text)
        .map_err(|e| setup_err(key, format!("{}: {e}", path.display())))?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(setup_err(key, format!("{} holds no PEM certificate", path.display())));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| setup_err(key, format!("{}: {e}", path.display())))?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(ferrid_tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| setup_err(key, e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The first line of a cgroup file, shortened, for messages.
fn summary(cgroup: &str) -> String {
    let first = cgroup.lines().find(|l| !l.is_empty()).unwrap_or("(empty)");
    if first.len() > 200 {
        let mut end = 200;
        while !first.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &first[..end])
    } else {
        first.to_owned()
    }
}

#[async_trait]
impl WorkloadAttestor for K8sAttestor {
    fn name(&self) -> &'static str {
        "k8s"
    }

    async fn attest(&self, peer: PeerCredentials) -> Result<Vec<String>, AttestError> {
        // procfs reads are small and served from memory: no blocking thread needed.
        let process = ProcessGuard::open(&self.proc_root, peer)?;
        let text = process.read("cgroup")?;
        let container = cgroup::parse(&text)
            .map_err(|e| AttestError::Malformed(format!("process {}: {e}", peer.pid)))?
            .ok_or_else(|| {
                AttestError::NotApplicable(format!(
                    "process {} is not in a pod's container (cgroup {})",
                    peer.pid,
                    summary(&text)
                ))
            })?;
        let found = self.find_pod(&container).await?;
        process.verify_unchanged()?;
        tracing::debug!(
            pid = peer.pid,
            namespace = %found.namespace,
            pod = %found.pod_name,
            container = %container.container_id,
            "k8s attestation"
        );
        Ok(found.selectors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_short_and_on_a_char_boundary() {
        assert_eq!(summary("0::/\n"), "0::/");
        assert_eq!(summary(""), "(empty)");
        let long = format!("0::/{}", "é".repeat(300));
        let s = summary(&long);
        assert!(s.len() <= 204 && s.ends_with('…'), "{s}");
    }

    #[test]
    fn setup_errors_name_the_key() {
        let e = K8sAttestor::new(K8sConfig {
            kubelet_ca_path: "/nonexistent/ca.crt".into(),
            ..K8sConfig::default()
        })
        .unwrap_err();
        assert_eq!(e.key, "kubelet_ca_path");
        assert!(e.to_string().contains("/nonexistent/ca.crt"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.crt");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = K8sAttestor::new(K8sConfig { kubelet_ca_path: empty, ..K8sConfig::default() }).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let e =
            K8sAttestor::new(K8sConfig { kubelet_host: String::new(), ..K8sConfig::default() }).unwrap_err();
        assert_eq!(e.key, "kubelet_host");
        let e = K8sAttestor::new(K8sConfig { kubelet_read_only_port: Some(0), ..K8sConfig::default() })
            .unwrap_err();
        assert!(e.to_string().contains("port 0"), "{e}");
        // The secure port with verification off needs no CA file.
        let a = K8sAttestor::new(K8sConfig {
            kubelet_host: "::1".into(),
            skip_kubelet_verification: true,
            ..K8sConfig::default()
        })
        .unwrap();
        assert_eq!(a.kubelet_url(), "https://[::1]:10250/pods");
    }
}
