//! The `k8s_psat` node attestor: a node agent running in Kubernetes proves which node it
//! is with its projected service-account token (PSAT), bound to an audience that names
//! this server.
//!
//! The agent sends `{"cluster": "<name>", "token": "<jwt>"}`. For the named cluster
//! the server verifies the token in one of two ways (`verify` in the cluster's config):
//!
//! - `offline` (the default): the signature against the cluster's service-account issuer
//!   keys — a JWKS file (as served at `/openid/v1/jwks`), PEM public keys, and/or keys
//!   fetched by OIDC discovery from the issuer (cached, refreshed on an unknown `kid`,
//!   rate limited; see `ferrid-jwt`). Asymmetric algorithms only. Then the issuer (when
//!   configured), the audience (default `ferrid-server`) and the expiry, on the server's
//!   clock. Legacy secret-based tokens have no audience and no expiry, and are refused.
//! - `token_review`: the cluster's TokenReview API decides, with the audience in
//!   `spec.audiences`. It is authoritative: a token whose pod or service account was
//!   deleted is refused even before it expires.
//!
//! Either way the token must name a service account on the cluster's allow list
//! (`namespace:name`).
//!
//! With API access (`token_review`, or `lookup_pods = true`), the server also reads the
//! agent's pod — it must still exist with the token's pod UID — and its node: this gives
//! the node UID on clusters older than 1.30, whose tokens lack node claims, and the pod
//! and node labels as selectors.
//!
//! Agent ID: `spiffe://<td>/ferrid/agent/k8s_psat/<cluster>/<node-uid>`. A node keeps
//! its ID across re-attestation: tokens rotate, so re-attestation is allowed and no
//! token is single-use.
//!
//! Selectors (`k8s_psat:<value>`): `cluster:<name>`, `agent_ns:<ns>`,
//! `agent_sa:<name>`, `agent_pod_name:<name>`, `agent_pod_uid:<uid>`,
//! `agent_node_name:<name>`, `agent_node_uid:<uid>`, and when the pod was looked up
//! `agent_pod_label:<key>:<value>` and `agent_node_label:<key>:<value>`.
#![forbid(unsafe_code)]

mod api;

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferrid_attest::{AttestError, Attested, Challenger, NodeAttestor};
use ferrid_jwt::remote::KeySource;
use ferrid_jwt::{Expectations, IssuerKeys, JwtError, KeySet, Verifier};
use serde::Deserialize;
use serde_json::Value;

pub use api::kube_client;

/// The default audience agents request their token for.
pub const DEFAULT_AUDIENCE: &str = "ferrid-server";

/// How a cluster's tokens are verified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    /// Against the issuer's keys, on this server.
    #[default]
    Offline,
    /// By the cluster's TokenReview API.
    TokenReview,
}

/// One cluster, as written in the server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// How tokens are verified.
    #[serde(default)]
    pub verify: VerifyMode,
    /// The audience the agents' projected tokens must carry.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// The cluster's service-account issuer (`--service-account-issuer`); checked when set
    /// (offline mode).
    #[serde(default)]
    pub issuer: Option<String>,
    /// The issuer's JWKS (`kubectl get --raw /openid/v1/jwks`) (offline mode).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// PEM public keys or certificates of the issuer (`--service-account-key-file`)
    /// (offline mode).
    #[serde(default)]
    pub public_key_files: Vec<PathBuf>,
    /// Fetch the issuer's keys by OIDC discovery from `issuer` (offline mode).
    #[serde(default)]
    pub oidc_discovery: bool,
    /// Fetch the issuer's keys from this JWKS URL (offline mode).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// CA certificates (PEM) for HTTPS to the issuer; the system roots when unset.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Kubeconfig for the cluster's API (TokenReview, pod and node lookups); the
    /// server's in-cluster service account when unset.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Look up the agent's pod and node through the API. Default: on with
    /// `token_review` or a `kubeconfig`, off otherwise.
    #[serde(default)]
    pub lookup_pods: Option<bool>,
    /// Service accounts agents may run as, `namespace:name`.
    pub allowed_service_accounts: Vec<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            verify: VerifyMode::Offline,
            audience: default_audience(),
            issuer: None,
            jwks_file: None,
            public_key_files: Vec::new(),
            oidc_discovery: false,
            jwks_url: None,
            ca_file: None,
            kubeconfig: None,
            lookup_pods: None,
            allowed_service_accounts: Vec::new(),
        }
    }
}

impl ClusterConfig {
    fn lookup_pods(&self) -> bool {
        self.lookup_pods.unwrap_or(self.verify == VerifyMode::TokenReview || self.kubeconfig.is_some())
    }
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

/// How a configured cluster's tokens are verified.
#[derive(Debug)]
enum Verification {
    /// Here, with the issuer's keys.
    Offline(Box<Verifier>),
    /// By the cluster's TokenReview API.
    TokenReview,
}

#[derive(Debug)]
struct Cluster {
    verification: Verification,
    audience: String,
    api: Option<api::Api>,
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

/// The cluster's key files (`jwks_file`, `public_key_files`), read.
fn read_keys(name: &str, c: &ClusterConfig) -> Result<KeySet, String> {
    let files = IssuerKeys {
        jwks_file: c.jwks_file.clone(),
        public_key_files: c.public_key_files.clone(),
        ..IssuerKeys::default()
    };
    files.read_files().map_err(|e| format!("cluster {name}: {e}"))
}

/// Where the cluster's issuer keys are fetched from (offline mode), if anywhere.
fn fetch_source(name: &str, c: &ClusterConfig) -> Result<Option<KeySource>, String> {
    match (c.oidc_discovery, &c.jwks_url, &c.issuer) {
        (false, None, _) => Ok(None),
        (true, Some(_), _) => Err(format!("cluster {name}: set oidc_discovery or jwks_url, not both")),
        (true, None, None) => {
            Err(format!("cluster {name}: oidc_discovery needs issuer (the --service-account-issuer URL)"))
        }
        (true, None, Some(issuer)) => Ok(Some(KeySource::Discovery { issuer: issuer.clone() })),
        (false, Some(url), _) => Ok(Some(KeySource::Jwks { url: url.clone() })),
    }
}

impl K8sPsatAttestor {
    /// Loads every cluster's keys and connects to the API of clusters that use it.
    /// Nothing is fetched from issuers or API servers yet. Errors name the cluster and
    /// what is wrong.
    pub async fn from_config(cfg: &PsatConfig) -> Result<Self, String> {
        let mut keys = BTreeMap::new();
        let mut apis = BTreeMap::new();
        for (name, c) in &cfg.clusters {
            keys.insert(name.clone(), read_keys(name, c)?);
            if c.verify == VerifyMode::TokenReview || c.lookup_pods() {
                let client =
                    kube_client(c.kubeconfig.as_deref()).await.map_err(|e| format!("cluster {name}: {e}"))?;
                apis.insert(name.clone(), api::Api::new(client));
            }
        }
        Self::build(cfg, keys, apis)
    }

    /// Like [`Self::from_config`] for offline clusters, with the key sets given (the key
    /// files are ignored). Clusters that need API access are refused.
    pub fn with_keys(cfg: &PsatConfig, keys: BTreeMap<String, KeySet>) -> Result<Self, String> {
        Self::build(cfg, keys, BTreeMap::new())
    }

    fn build(
        cfg: &PsatConfig,
        mut keys: BTreeMap<String, KeySet>,
        mut apis: BTreeMap<String, api::Api>,
    ) -> Result<Self, String> {
        let mut clusters = BTreeMap::new();
        for (name, c) in &cfg.clusters {
            if !valid_segment(name) {
                return Err(format!("cluster name {name:?} must be letters, digits, '-', '_' or '.'"));
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
            let keys = keys.remove(name).unwrap_or_default();
            let verification = match c.verify {
                VerifyMode::Offline => {
                    let fetch = fetch_source(name, c)?;
                    if keys.is_empty() && fetch.is_none() {
                        return Err(format!(
                            "cluster {name}: no issuer keys (set jwks_file, public_key_files, oidc_discovery or jwks_url, or verify = \"token_review\")"
                        ));
                    }
                    let want = Expectations::new(c.issuer.clone(), Some(c.audience.clone()));
                    let verifier = Verifier::from_parts(keys, fetch, c.ca_file.clone(), want)
                        .map_err(|e| format!("cluster {name}: {e}"))?;
                    Verification::Offline(Box::new(verifier))
                }
                VerifyMode::TokenReview => {
                    if !keys.is_empty() || c.oidc_discovery || c.jwks_url.is_some() || c.issuer.is_some() {
                        return Err(format!(
                            "cluster {name}: issuer keys and issuer are for verify = \"offline\"; with token_review the API server checks the token"
                        ));
                    }
                    Verification::TokenReview
                }
            };
            let api = apis.remove(name);
            if (c.verify == VerifyMode::TokenReview || c.lookup_pods()) && api.is_none() {
                return Err(format!(
                    "cluster {name}: needs API access (kubeconfig or in-cluster credentials)"
                ));
            }
            clusters.insert(
                name.clone(),
                Cluster {
                    verification,
                    audience: c.audience.clone(),
                    api,
                    allowed: c.allowed_service_accounts.clone(),
                },
            );
        }
        Ok(Self { clusters })
    }
}

/// Who a verified token says the agent is.
#[derive(Debug, Default)]
struct Identity {
    ns: String,
    sa: String,
    pod_name: Option<String>,
    pod_uid: Option<String>,
    node_name: Option<String>,
    node_uid: Option<String>,
}

fn claim<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn jwt_error(e: JwtError) -> AttestError {
    const WHAT: &str = "service-account token";
    match e {
        // Refused before verification; kept a parse error here as before.
        JwtError::TooLarge(_) => AttestError::Malformed(format!("{WHAT}: {e}")),
        JwtError::MissingClaim("aud" | "exp") => AttestError::Rejected(format!(
            "{WHAT}: {e} (legacy secret-based tokens are not accepted; mount a projected token with this server's audience)"
        )),
        other => other.into_attest(WHAT),
    }
}

fn identity_from_claims(c: &Value) -> Result<Identity, AttestError> {
    let ns = claim(c, &["kubernetes.io", "namespace"]).ok_or(AttestError::Rejected(
        "service-account token has no kubernetes.io.namespace claim (not a projected token?)".into(),
    ))?;
    let sa = claim(c, &["kubernetes.io", "serviceaccount", "name"])
        .ok_or(AttestError::Rejected("service-account token has no service account name".into()))?;
    let get = |path: [&str; 3]| claim(c, &path).map(str::to_owned);
    Ok(Identity {
        ns: ns.to_owned(),
        sa: sa.to_owned(),
        pod_name: get(["kubernetes.io", "pod", "name"]),
        pod_uid: get(["kubernetes.io", "pod", "uid"]),
        node_name: get(["kubernetes.io", "node", "name"]),
        node_uid: get(["kubernetes.io", "node", "uid"]),
    })
}

impl Cluster {
    async fn verify(&self, token: &str, now: i64) -> Result<Identity, AttestError> {
        match &self.verification {
            Verification::Offline(verifier) => {
                let v = verifier.verify(token, now).await.map_err(jwt_error)?;
                identity_from_claims(&v.claims)
            }
            Verification::TokenReview => {
                let api = self.api.as_ref().ok_or(AttestError::Internal("no API client".into()))?;
                api.token_review(token, &self.audience).await
            }
        }
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
        if p.token.len() > ferrid_jwt::MAX_TOKEN_BYTES {
            return Err(AttestError::Malformed(format!(
                "service-account token: {}",
                JwtError::TooLarge(p.token.len())
            )));
        }
        let mut id = cluster.verify(&p.token, now.unix_timestamp()).await?;
        let account = format!("{}:{}", id.ns, id.sa);
        if !cluster.allowed.contains(&account) {
            return Err(AttestError::Rejected(format!(
                "service account {account} is not allowed to attest agents in cluster {}",
                p.cluster
            )));
        }
        let mut labels = Vec::new();
        if let Some(api) = &cluster.api {
            labels = api.lookup(&mut id).await?;
        }
        let node_uid = id.node_uid.clone().ok_or_else(|| {
            AttestError::Rejected(
                "service-account token has no node claim (needs Kubernetes 1.30+ with ServiceAccountTokenPodNodeInfo, or lookup_pods = true to read the node from the pod)"
                    .into(),
            )
        })?;
        if !valid_segment(&node_uid) {
            return Err(AttestError::Rejected(format!("node uid {node_uid:?} is not a valid ID segment")));
        }
        let mut selectors = vec![
            format!("cluster:{}", p.cluster),
            format!("agent_ns:{}", id.ns),
            format!("agent_sa:{}", id.sa),
        ];
        for (key, value) in [
            ("agent_pod_name", &id.pod_name),
            ("agent_pod_uid", &id.pod_uid),
            ("agent_node_name", &id.node_name),
            ("agent_node_uid", &id.node_uid),
        ] {
            if let Some(value) = value {
                selectors.push(format!("{key}:{value}"));
            }
        }
        selectors.extend(labels);
        Ok(Attested {
            agent_path: vec![p.cluster.clone(), node_uid],
            selectors,
            can_reattest: true,
            replay_key: None,
            replay_expires_at: 0,
            evidence_expires_at: None,
        })
    }
}
