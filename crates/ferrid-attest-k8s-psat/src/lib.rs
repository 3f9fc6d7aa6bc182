//! The `k8s_psat` node attestor: a node agent running in Kubernetes proves which node it
//! is with its projected service-account token (PSAT), bound to an audience that names
//! this server.
//!
//! The agent sends `{"cluster": "<name>", "token": "<jwt>"}`. For the named cluster
//! the server checks:
//!
//! - the signature, against that cluster's service-account issuer keys (a JWKS file,
//!   as served at `/openid/v1/jwks`, and/or PEM public keys). Asymmetric algorithms
//!   only (see `ferrid-jwt`);
//! - the issuer (when configured), the audience (default `ferrid-server`), and the
//!   expiry, on the server's clock;
//! - that the token names a service account on the cluster's allow list
//!   (`namespace:name`);
//! - that it carries the node claims Kubernetes 1.30+ adds
//!   (`kubernetes.io.node.{name,uid}`).
//!
//! Legacy secret-based tokens have no audience and no expiry, and are refused.
//!
//! Agent ID: `spiffe://<td>/ferrid/agent/k8s_psat/<cluster>/<node-uid>`. A node keeps
//! its ID across re-attestation: tokens rotate, so re-attestation is allowed and no
//! token is single-use.
//!
//! Selectors (`k8s_psat:<value>`): `cluster:<name>`, `agent_ns:<ns>`,
//! `agent_sa:<name>`, `agent_pod_name:<name>`, `agent_pod_uid:<uid>`,
//! `agent_node_name:<name>`, `agent_node_uid:<uid>`.
//!
//! Not yet here (tracked in issue 4): TokenReview through the API server, OIDC
//! discovery with a refreshed key cache, and node lookup from the pod for clusters older
//! than 1.30.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferrid_attest::{AttestError, Attested, Challenger, NodeAttestor};
use ferrid_jwt::{Expectations, JwtError, KeySet};
use serde::Deserialize;
use serde_json::Value;

/// The default audience agents request their token for.
pub const DEFAULT_AUDIENCE: &str = "ferrid-server";

/// One cluster, as written in the server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The audience the agents' projected tokens must carry.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// The cluster's service-account issuer (`--service-account-issuer`); checked when set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The issuer's JWKS (`kubectl get --raw /openid/v1/jwks`).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// PEM public keys or certificates of the issuer (`--service-account-key-file`).
    #[serde(default)]
    pub public_key_files: Vec<PathBuf>,
    /// Service accounts agents may run as, `namespace:name`.
    pub allowed_service_accounts: Vec<String>,
}

fn default_audience() -> String {
    DEFAULT_AUDIENCE.to_owned()
}

/// `[k8s_psat]` in the server configuration: clusters by name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsatConfig {
    /// Clusters by name (the name is part of agent IDs).
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterConfig>,
}

#[derive(Debug)]
struct Cluster {
    keys: KeySet,
    want: Expectations,
    allowed: Vec<String>,
}

/// The attestor.
#[derive(Debug)]
pub struct K8sPsatAttestor {
    clusters: BTreeMap<String, Cluster>,
}

/// What the agent sends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    cluster: String,
    token: String,
}

/// Builds the agent's payload for `cluster` from its token.
pub fn payload(cluster: &str, token: &str) -> Vec<u8> {
    serde_json::json!({ "cluster": cluster, "token": token.trim() }).to_string().into_bytes()
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

impl K8sPsatAttestor {
    /// Loads every cluster's keys. Errors name the cluster and what is wrong.
    pub fn from_config(cfg: &PsatConfig) -> Result<Self, String> {
        let mut keys = BTreeMap::new();
        for (name, c) in &cfg.clusters {
            let mut set = KeySet::default();
            if let Some(f) = &c.jwks_file {
                let text =
                    std::fs::read(f).map_err(|e| format!("cluster {name}: reading {}: {e}", f.display()))?;
                set.extend(
                    KeySet::from_jwks(&text).map_err(|e| format!("cluster {name}: {}: {e}", f.display()))?,
                );
            }
            for f in &c.public_key_files {
                let text =
                    std::fs::read(f).map_err(|e| format!("cluster {name}: reading {}: {e}", f.display()))?;
                set.extend(
                    KeySet::from_pem(&text).map_err(|e| format!("cluster {name}: {}: {e}", f.display()))?,
                );
            }
            keys.insert(name.clone(), set);
        }
        Self::with_keys(cfg, keys)
    }

    /// Like [`Self::from_config`], with the key sets given (the key files are ignored).
    pub fn with_keys(cfg: &PsatConfig, mut keys: BTreeMap<String, KeySet>) -> Result<Self, String> {
        let mut clusters = BTreeMap::new();
        for (name, c) in &cfg.clusters {
            if !valid_segment(name) {
                return Err(format!("cluster name {name:?} must be letters, digits, '-', '_' or '.'"));
            }
            let keys = keys.remove(name).unwrap_or_default();
            if keys.is_empty() {
                return Err(format!("cluster {name}: no issuer keys (set jwks_file or public_key_files)"));
            }
            if c.allowed_service_accounts.is_empty() {
                return Err(format!(
                    "cluster {name}: allowed_service_accounts is empty; no agent could attest"
                ));
            }
            if let Some(bad) = c.allowed_service_accounts.iter().find(|s| s.split(':').count() != 2) {
                return Err(format!(
                    "cluster {name}: allowed service account {bad:?} must be namespace:name"
                ));
            }
            if c.audience.is_empty() {
                return Err(format!("cluster {name}: audience must not be empty"));
            }
            clusters.insert(
                name.clone(),
                Cluster {
                    keys,
                    want: Expectations::new(c.issuer.clone(), Some(c.audience.clone())),
                    allowed: c.allowed_service_accounts.clone(),
                },
            );
        }
        Ok(Self { clusters })
    }
}

fn claim<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn jwt_error(e: JwtError) -> AttestError {
    match e {
        JwtError::Expired { .. } => AttestError::Expired(format!("service-account token: {e}")),
        JwtError::Malformed(_) | JwtError::TooLarge(_) => {
            AttestError::Malformed(format!("service-account token: {e}"))
        }
        JwtError::MissingClaim("aud" | "exp") => AttestError::Rejected(format!(
            "service-account token: {e} (legacy secret-based tokens are not accepted; mount a projected token with this server's audience)"
        )),
        other => AttestError::Rejected(format!("service-account token: {other}")),
    }
}

#[async_trait::async_trait]
impl NodeAttestor for K8sPsatAttestor {
    fn name(&self) -> &'static str {
        "k8s_psat"
    }

    async fn attest(
        &self,
        payload: &[u8],
        _challenger: &mut dyn Challenger,
        now: time::OffsetDateTime,
    ) -> Result<Attested, AttestError> {
        if payload.len() > ferrid_attest::MAX_PAYLOAD {
            return Err(AttestError::TooLarge { limit: ferrid_attest::MAX_PAYLOAD, got: payload.len() });
        }
        let p: Payload = serde_json::from_slice(payload)
            .map_err(|e| AttestError::Malformed(format!("expected {{\"cluster\", \"token\"}}: {e}")))?;
        let cluster = self.clusters.get(&p.cluster).ok_or_else(|| {
            AttestError::Rejected(format!("cluster {:?} is not configured on this server", p.cluster))
        })?;
        let v = ferrid_jwt::verify(&p.token, &cluster.keys, &cluster.want, now.unix_timestamp())
            .map_err(jwt_error)?;
        let c = &v.claims;
        let ns = claim(c, &["kubernetes.io", "namespace"]).ok_or(AttestError::Rejected(
            "service-account token has no kubernetes.io.namespace claim (not a projected token?)".into(),
        ))?;
        let sa = claim(c, &["kubernetes.io", "serviceaccount", "name"])
            .ok_or(AttestError::Rejected("service-account token has no service account name".into()))?;
        let account = format!("{ns}:{sa}");
        if !cluster.allowed.contains(&account) {
            return Err(AttestError::Rejected(format!(
                "service account {account} is not allowed to attest agents in cluster {}",
                p.cluster
            )));
        }
        let node_uid = claim(c, &["kubernetes.io", "node", "uid"]).ok_or(AttestError::Rejected(
            "service-account token has no node claim (needs Kubernetes 1.30+ with ServiceAccountTokenPodNodeInfo)"
                .into(),
        ))?;
        if !valid_segment(node_uid) {
            return Err(AttestError::Rejected(format!("node uid {node_uid:?} is not a valid ID segment")));
        }
        let mut selectors =
            vec![format!("cluster:{}", p.cluster), format!("agent_ns:{ns}"), format!("agent_sa:{sa}")];
        for (key, path) in [
            ("agent_pod_name", ["kubernetes.io", "pod", "name"]),
            ("agent_pod_uid", ["kubernetes.io", "pod", "uid"]),
            ("agent_node_name", ["kubernetes.io", "node", "name"]),
            ("agent_node_uid", ["kubernetes.io", "node", "uid"]),
        ] {
            if let Some(value) = claim(c, &path) {
                selectors.push(format!("{key}:{value}"));
            }
        }
        Ok(Attested {
            agent_path: vec![p.cluster.clone(), node_uid.to_owned()],
            selectors,
            can_reattest: true,
            replay_key: None,
            replay_expires_at: 0,
        })
    }
}
