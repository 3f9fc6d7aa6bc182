//! The cluster's API, through the `kube` crate: TokenReview, and reading the agent's
//! pod and node.

use std::path::Path;

use ferrid_attest::AttestError;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::PostParams;

use crate::Identity;

const EXTRA: &str = "authentication.kubernetes.io/";

/// A client for a cluster's API: from `kubeconfig` when given, else from the in-cluster
/// service account (`KUBERNETES_SERVICE_HOST` and
/// `/var/run/secrets/kubernetes.io/serviceaccount`).
pub async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::incluster().map_err(|e| {
            format!("no kubeconfig set and no in-cluster credentials (is the server running in a pod?): {e}")
        })?,
    };
    kube::Client::try_from(config).map_err(|e| format!("Kubernetes API client: {e}"))
}

pub(crate) struct Api {
    client: kube::Client,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

/// Maps an API error: 404 is the caller's to interpret; authorization failures and
/// transport errors mean the server cannot decide (`Unavailable`), with what to fix.
fn api_error(what: &str, e: kube::Error) -> AttestError {
    match &e {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => AttestError::Unavailable(format!(
            "{what}: the Kubernetes API refused the server's credentials (HTTP {}: {}); check the server's RBAC",
            s.code, s.message
        )),
        kube::Error::Api(s) => {
            AttestError::Unavailable(format!("{what}: Kubernetes API error HTTP {}: {}", s.code, s.message))
        }
        _ => AttestError::Unavailable(format!("{what}: Kubernetes API unreachable: {e}")),
    }
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl Api {
    pub(crate) fn new(client: kube::Client) -> Self {
        Self { client }
    }

    /// Asks the API server whether `token` is valid for `audience`.
    pub(crate) async fn token_review(&self, token: &str, audience: &str) -> Result<Identity, AttestError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![audience.to_owned()]),
            },
            ..Default::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let got =
            api.create(&PostParams::default(), &review).await.map_err(|e| api_error("TokenReview", e))?;
        let status = got.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.filter(|e| !e.is_empty()).unwrap_or_else(|| "no reason given".into());
            return Err(AttestError::Rejected(format!("TokenReview: token not authenticated: {why}")));
        }
        // A TokenReview server that ignores spec.audiences would accept a token minted
        // for another audience: require it to confirm ours.
        if !status.audiences.unwrap_or_default().iter().any(|a| a == audience) {
            return Err(AttestError::Rejected(format!(
                "TokenReview: the API server did not confirm audience {audience:?} for this token"
            )));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let Some((ns, sa)) = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'))
        else {
            return Err(AttestError::Rejected(format!("TokenReview: {username:?} is not a service account")));
        };
        let extra = user.extra.unwrap_or_default();
        let one = |key: &str| {
            extra.get(&format!("{EXTRA}{key}")).and_then(|v| v.first()).filter(|s| !s.is_empty()).cloned()
        };
        Ok(Identity {
            ns: ns.to_owned(),
            sa: sa.to_owned(),
            pod_name: one("pod-name"),
            pod_uid: one("pod-uid"),
            node_name: one("node-name"),
            node_uid: one("node-uid"),
        })
    }

    /// Reads the agent's pod and its node: the pod must still exist with the token's
    /// UID and run on the token's node (when the token names one). Fills in the node
    /// name and UID, and returns the label selectors.
    pub(crate) async fn lookup(&self, id: &mut Identity) -> Result<Vec<String>, AttestError> {
        let Some(pod_name) = id.pod_name.clone() else {
            return Err(AttestError::Rejected(
                "service-account token is not bound to a pod (mount a projected token in the agent pod)"
                    .into(),
            ));
        };
        let pods: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), &id.ns);
        let pod = match pods.get(&pod_name).await {
            Ok(p) => p,
            Err(e) if not_found(&e) => {
                return Err(AttestError::Rejected(format!(
                    "the agent's pod {}/{pod_name} no longer exists",
                    id.ns
                )));
            }
            Err(e) => return Err(api_error(&format!("reading pod {}/{pod_name}", id.ns), e)),
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Some(want) = &id.pod_uid
            && *want != uid
        {
            return Err(AttestError::Rejected(format!(
                "the token was issued to pod UID {want}, but {}/{pod_name} is now {uid:?} (pod replaced)",
                id.ns
            )));
        }
        id.pod_uid = Some(uid);
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        if node_name.is_empty() {
            return Err(AttestError::Rejected(format!(
                "pod {}/{pod_name} is not scheduled on a node",
                id.ns
            )));
        }
        if let Some(want) = &id.node_name
            && *want != node_name
        {
            return Err(AttestError::Rejected(format!(
                "the token names node {want}, but pod {}/{pod_name} runs on {node_name}",
                id.ns
            )));
        }
        let nodes: kube::Api<Node> = kube::Api::all(self.client.clone());
        let node = match nodes.get(&node_name).await {
            Ok(n) => n,
            Err(e) if not_found(&e) => {
                return Err(AttestError::Rejected(format!("the agent's node {node_name} no longer exists")));
            }
            Err(e) => return Err(api_error(&format!("reading node {node_name}"), e)),
        };
        let node_uid = node.metadata.uid.clone().unwrap_or_default();
        if let Some(want) = &id.node_uid
            && *want != node_uid
        {
            return Err(AttestError::Rejected(format!(
                "the token names node UID {want}, but node {node_name} is now {node_uid:?} (node replaced)"
            )));
        }
        id.node_name = Some(node_name);
        id.node_uid = Some(node_uid).filter(|u| !u.is_empty());
        let mut selectors = Vec::new();
        for (key, value) in pod.metadata.labels.iter().flatten() {
            selectors.push(format!("agent_pod_label:{key}:{value}"));
        }
        for (key, value) in node.metadata.labels.iter().flatten() {
            selectors.push(format!("agent_node_label:{key}:{value}"));
        }
        Ok(selectors)
    }
}
