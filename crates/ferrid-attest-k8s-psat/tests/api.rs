//! The k8s_psat attestor with API access: TokenReview, and the pod and node lookups.
//!
//! There is no Kubernetes API server on this machine. These tests run the real `kube`
//! client, configured from a real kubeconfig file, against a local HTTPS server that
//! answers as the Kubernetes API documents it:
//! `POST /apis/authentication.k8s.io/v1/tokenreviews` (TokenReview with `spec.token` and
//! `spec.audiences`; `status.authenticated`, `status.user.username`,
//! `status.user.extra["authentication.kubernetes.io/…"]`, `status.audiences`),
//! `GET /api/v1/namespaces/{ns}/pods/{name}` and `GET /api/v1/nodes/{name}`, with
//! `Status` objects for errors, and bearer-token authentication of the caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferrid_attest::{AttestError, Attested, NoChallenges, NodeAttestor};
use ferrid_attest_k8s_psat::{ClusterConfig, K8sPsatAttestor, PsatConfig, VerifyMode, payload};
use serde_json::{Value, json};

const SERVER_TOKEN: &str = "ferrid-server-sa-token";
const NODE_UID: &str = "6a2f6e0e-8d4e-4c5b-9f0a-1b2c3d4e5f60";
const POD_UID: &str = "0f1e2d3c-4b5a-4968-8776-655443322110";

#[derive(Default)]
struct Cluster {
    /// token → TokenReview status
    reviews: Mutex<HashMap<String, Value>>,
    pods: Mutex<HashMap<(String, String), Value>>,
    nodes: Mutex<HashMap<String, Value>>,
    /// Every TokenReview request body received.
    received: Mutex<Vec<Value>>,
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {SERVER_TOKEN}"))
}

async fn token_review(State(c): State<Arc<Cluster>>, h: HeaderMap, body: axum::Json<Value>) -> Response {
    if !authorized(&h) {
        return status(401, "Unauthorized", "Unauthorized");
    }
    let body = body.0;
    c.received.lock().unwrap().push(body.clone());
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    let st = c
        .reviews
        .lock()
        .unwrap()
        .get(token)
        .cloned()
        .unwrap_or_else(|| json!({"authenticated": false, "error": "invalid bearer token"}));
    let mut out = body.clone();
    out["status"] = st;
    (StatusCode::CREATED, axum::Json(out)).into_response()
}

async fn pod(
    State(c): State<Arc<Cluster>>,
    h: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    if !authorized(&h) {
        return status(401, "Unauthorized", "Unauthorized");
    }
    match c.pods.lock().unwrap().get(&(ns.clone(), name.clone())) {
        Some(p) => axum::Json(p.clone()).into_response(),
        None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
    }
}

async fn node(State(c): State<Arc<Cluster>>, h: HeaderMap, UrlPath(name): UrlPath<String>) -> Response {
    if !authorized(&h) {
        return status(401, "Unauthorized", "Unauthorized");
    }
    match c.nodes.lock().unwrap().get(&name) {
        Some(n) => axum::Json(n.clone()).into_response(),
        None => status(404, "NotFound", &format!("nodes \"{name}\" not found")),
    }
}

struct Fixture {
    cluster: Arc<Cluster>,
    kubeconfig: std::path::PathBuf,
    ca_pem: String,
    port: u16,
    _dir: tempfile::TempDir,
}

fn kubeconfig_text(port: u16, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://localhost:{port}\n    certificate-authority-data: {ca}\nusers:\n- name: ferrid\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: ferrid\ncurrent-context: test\n"
    )
}

async fn fixture() -> Fixture {
    let cluster = Arc::new(Cluster::default());
    let router = axum::Router::new()
        .route("/apis/authentication.k8s.io/v1/tokenreviews", post(token_review))
        .route("/api/v1/namespaces/{ns}/pods/{name}", get(pod))
        .route("/api/v1/nodes/{name}", get(node))
        .with_state(cluster.clone());
    let tls = ferrid_test_util::TestTls::new(&["localhost"]);
    let addr = ferrid_test_util::serve(router, Some(tls.server_config.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_text(addr.port(), &tls.ca_pem, SERVER_TOKEN)).unwrap();
    // A cluster with the agent's pod and node.
    cluster.pods.lock().unwrap().insert(
        ("ferrid".into(), "ferrid-agent-x7k2p".into()),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "ferrid-agent-x7k2p", "namespace": "ferrid", "uid": POD_UID,
                            "labels": {"app.kubernetes.io/name": "ferrid-agent"}},
               "spec": {"nodeName": "worker-1", "serviceAccountName": "ferrid-agent", "containers": []}}),
    );
    cluster.nodes.lock().unwrap().insert(
        "worker-1".into(),
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": "worker-1", "uid": NODE_UID,
                            "labels": {"topology.kubernetes.io/zone": "eu-west-1a"}}}),
    );
    Fixture { cluster, kubeconfig, ca_pem: tls.ca_pem, port: addr.port(), _dir: dir }
}

/// A TokenReview status for the agent's service account, with the 1.30+ node extras
/// when `with_node` is set.
fn reviewed(with_node: bool) -> Value {
    let mut extra = json!({
        "authentication.kubernetes.io/credential-id": ["JTI=8c3ee0e2-2f1a-4c8f-9e55-2c4b0d1e9a77"],
        "authentication.kubernetes.io/pod-name": ["ferrid-agent-x7k2p"],
        "authentication.kubernetes.io/pod-uid": [POD_UID],
    });
    if with_node {
        extra["authentication.kubernetes.io/node-name"] = json!(["worker-1"]);
        extra["authentication.kubernetes.io/node-uid"] = json!([NODE_UID]);
    }
    json!({
        "authenticated": true,
        "user": {"username": "system:serviceaccount:ferrid:ferrid-agent",
                 "uid": "5d1c0a7e-2b3f-4e8d-a6c9-0e1f2a3b4c5d",
                 "groups": ["system:serviceaccounts", "system:serviceaccounts:ferrid", "system:authenticated"],
                 "extra": extra},
        "audiences": ["ferrid-server"],
    })
}

fn review_config(f: &Fixture) -> PsatConfig {
    let mut cfg = PsatConfig::default();
    cfg.clusters.insert(
        "prod".into(),
        ClusterConfig {
            verify: VerifyMode::TokenReview,
            kubeconfig: Some(f.kubeconfig.clone()),
            allowed_service_accounts: vec!["ferrid:ferrid-agent".into()],
            ..ClusterConfig::default()
        },
    );
    cfg
}

async fn attest(a: &K8sPsatAttestor, token: &str) -> Result<Attested, AttestError> {
    a.attest(&payload("prod", token), &mut NoChallenges, time::OffsetDateTime::now_utc()).await
}

fn err_contains(r: Result<Attested, AttestError>, kind: fn(&AttestError) -> bool, needle: &str) {
    match r {
        Err(e) if kind(&e) && e.to_string().contains(needle) => {}
        other => panic!("expected an error mentioning {needle:?}, got {other:?}"),
    }
}

fn rejected(e: &AttestError) -> bool {
    matches!(e, AttestError::Rejected(_))
}

fn unavailable(e: &AttestError) -> bool {
    matches!(e, AttestError::Unavailable(_))
}

#[tokio::test]
async fn token_review_attests_with_the_pod_and_node_looked_up() {
    let f = fixture().await;
    f.cluster.reviews.lock().unwrap().insert("agent-token".into(), reviewed(true));
    let a = K8sPsatAttestor::from_config(&review_config(&f)).await.unwrap();
    let got = attest(&a, "agent-token").await.unwrap();
    assert_eq!(got.agent_path, ["prod", NODE_UID]);
    assert!(got.can_reattest && got.replay_key.is_none());
    for want in [
        "cluster:prod".to_owned(),
        "agent_ns:ferrid".into(),
        "agent_sa:ferrid-agent".into(),
        "agent_pod_name:ferrid-agent-x7k2p".into(),
        format!("agent_pod_uid:{POD_UID}"),
        "agent_node_name:worker-1".into(),
        format!("agent_node_uid:{NODE_UID}"),
        "agent_pod_label:app.kubernetes.io/name:ferrid-agent".into(),
        "agent_node_label:topology.kubernetes.io/zone:eu-west-1a".into(),
    ] {
        assert!(got.selectors.contains(&want), "missing {want} in {:?}", got.selectors);
    }
    // The review asked for this server's audience.
    let sent = f.cluster.received.lock().unwrap()[0].clone();
    assert_eq!(sent["spec"]["audiences"], json!(["ferrid-server"]));
    assert_eq!(sent["spec"]["token"], json!("agent-token"));
    assert_eq!(sent["kind"], json!("TokenReview"));
}

#[tokio::test]
async fn clusters_before_1_30_get_the_node_uid_from_the_pod() {
    let f = fixture().await;
    f.cluster.reviews.lock().unwrap().insert("old-token".into(), reviewed(false));
    let a = K8sPsatAttestor::from_config(&review_config(&f)).await.unwrap();
    let got = attest(&a, "old-token").await.unwrap();
    assert_eq!(got.agent_path, ["prod", NODE_UID]);
    assert!(got.selectors.contains(&"agent_node_name:worker-1".to_owned()));
}

#[tokio::test]
async fn every_api_refusal_is_precise() {
    let f = fixture().await;
    let a = K8sPsatAttestor::from_config(&review_config(&f)).await.unwrap();
    let set = |token: &str, st: Value| {
        f.cluster.reviews.lock().unwrap().insert(token.into(), st);
    };

    // Not authenticated (unknown, expired or deleted-pod tokens alike).
    err_contains(attest(&a, "unknown").await, rejected, "invalid bearer token");
    set("revoked", json!({"authenticated": false, "error": "pod \"x\" not found"}));
    err_contains(attest(&a, "revoked").await, rejected, "pod \"x\" not found");

    // The API server does not confirm our audience.
    let mut st = reviewed(true);
    st["audiences"] = json!(["vault"]);
    set("other-aud", st);
    err_contains(attest(&a, "other-aud").await, rejected, "did not confirm audience");
    let mut st = reviewed(true);
    st.as_object_mut().unwrap().remove("audiences");
    set("no-aud", st);
    err_contains(attest(&a, "no-aud").await, rejected, "did not confirm audience");

    // A user, not a service account; a service account not on the allow list.
    let mut st = reviewed(true);
    st["user"]["username"] = json!("kubernetes-admin");
    set("user", st);
    err_contains(attest(&a, "user").await, rejected, "not a service account");
    let mut st = reviewed(true);
    st["user"]["username"] = json!("system:serviceaccount:default:default");
    set("default-sa", st);
    err_contains(attest(&a, "default-sa").await, rejected, "default:default is not allowed");

    // The pod is gone, or was replaced by one with the same name.
    let mut st = reviewed(true);
    st["user"]["extra"]["authentication.kubernetes.io/pod-name"] = json!(["ferrid-agent-gone"]);
    set("gone", st);
    err_contains(attest(&a, "gone").await, rejected, "no longer exists");
    let mut st = reviewed(true);
    st["user"]["extra"]["authentication.kubernetes.io/pod-uid"] =
        json!(["11111111-0000-0000-0000-000000000000"]);
    set("replaced", st);
    err_contains(attest(&a, "replaced").await, rejected, "pod replaced");

    // The token claims another node than the pod runs on.
    let mut st = reviewed(true);
    st["user"]["extra"]["authentication.kubernetes.io/node-name"] = json!(["worker-9"]);
    set("wrong-node", st);
    err_contains(attest(&a, "wrong-node").await, rejected, "runs on worker-1");

    // Other clusters are not configured; oversized tokens never reach the API.
    err_contains(
        a.attest(&payload("staging", "agent-token"), &mut NoChallenges, time::OffsetDateTime::now_utc())
            .await,
        rejected,
        "not configured",
    );
    let before = f.cluster.received.lock().unwrap().len();
    let huge = "a".repeat(ferrid_jwt::MAX_TOKEN_BYTES + 1);
    assert!(matches!(attest(&a, &huge).await, Err(AttestError::Malformed(_))));
    assert_eq!(f.cluster.received.lock().unwrap().len(), before);
}

#[tokio::test]
async fn an_api_that_refuses_or_cannot_be_reached_is_unavailable_not_a_rejection() {
    let f = fixture().await;
    f.cluster.reviews.lock().unwrap().insert("agent-token".into(), reviewed(true));

    // The server's own credentials are refused (e.g. missing RBAC).
    let bad = f._dir.path().join("bad-kubeconfig");
    std::fs::write(&bad, kubeconfig_text(f.port, &f.ca_pem, "wrong")).unwrap();
    let mut cfg = review_config(&f);
    cfg.clusters.get_mut("prod").unwrap().kubeconfig = Some(bad);
    let a = K8sPsatAttestor::from_config(&cfg).await.unwrap();
    err_contains(attest(&a, "agent-token").await, unavailable, "RBAC");

    // The API server's certificate is not from the kubeconfig's CA.
    let other = ferrid_test_util::TestTls::new(&["localhost"]);
    let untrusted = f._dir.path().join("untrusted-kubeconfig");
    std::fs::write(&untrusted, kubeconfig_text(f.port, &other.ca_pem, SERVER_TOKEN)).unwrap();
    cfg.clusters.get_mut("prod").unwrap().kubeconfig = Some(untrusted);
    let a = K8sPsatAttestor::from_config(&cfg).await.unwrap();
    err_contains(attest(&a, "agent-token").await, unavailable, "unreachable");

    // Nothing listens.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = f._dir.path().join("down-kubeconfig");
    std::fs::write(&down, kubeconfig_text(closed, &f.ca_pem, SERVER_TOKEN)).unwrap();
    cfg.clusters.get_mut("prod").unwrap().kubeconfig = Some(down);
    let a = K8sPsatAttestor::from_config(&cfg).await.unwrap();
    err_contains(attest(&a, "agent-token").await, unavailable, "unreachable");
}

/// Offline verification of a real minikube token (tests/data/bound-token-with-node, at
/// its own time), with the pod looked up through the API: the pod and node the local API
/// server serves carry the token's names and UIDs.
#[tokio::test]
async fn offline_verification_with_pod_lookup_uses_the_real_token() {
    let f = fixture().await;
    f.cluster.pods.lock().unwrap().insert(
        ("default".into(), "myapp-deployment-6445ccd844-7vs45".into()),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "myapp-deployment-6445ccd844-7vs45", "namespace": "default",
                            "uid": "35275f74-fa58-4396-8d15-8e224dfdf2ea", "labels": {"app": "myapp"}},
               "spec": {"nodeName": "minikube", "containers": []}}),
    );
    f.cluster.nodes.lock().unwrap().insert(
        "minikube".into(),
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": "minikube", "uid": "2d0b5885-ed45-4ab3-b45b-dd7820b7e974"}}),
    );
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bound-token-with-node");
    let mut cfg = PsatConfig::default();
    cfg.clusters.insert(
        "minikube".into(),
        ClusterConfig {
            audience: "gcp-sts-audience".into(),
            issuer: Some("https://some-address".into()),
            jwks_file: Some(data.join("jwks.json")),
            kubeconfig: Some(f.kubeconfig.clone()),
            allowed_service_accounts: vec!["default:svc1-sa".into()],
            ..ClusterConfig::default()
        },
    );
    let a = K8sPsatAttestor::from_config(&cfg).await.unwrap();
    let token = std::fs::read_to_string(data.join("token.jwt")).unwrap();
    let at = time::OffsetDateTime::from_unix_timestamp(1_730_720_800).unwrap();
    let got = a.attest(&payload("minikube", &token), &mut NoChallenges, at).await.unwrap();
    assert_eq!(got.agent_path, ["minikube", "2d0b5885-ed45-4ab3-b45b-dd7820b7e974"]);
    assert!(got.selectors.contains(&"agent_pod_label:app:myapp".to_owned()), "{:?}", got.selectors);
    assert!(f.cluster.received.lock().unwrap().is_empty(), "offline mode sends no TokenReview");

    // The pod was deleted since: the still-valid token is refused.
    f.cluster.pods.lock().unwrap().clear();
    let e = a.attest(&payload("minikube", &token), &mut NoChallenges, at).await.unwrap_err();
    assert!(matches!(&e, AttestError::Rejected(m) if m.contains("no longer exists")), "{e:?}");
}

#[tokio::test]
async fn configuration_errors_for_api_modes_are_precise() {
    let f = fixture().await;
    let one = |c: ClusterConfig| {
        let mut cfg = PsatConfig::default();
        cfg.clusters.insert("c".into(), c);
        cfg
    };
    let base = ClusterConfig { allowed_service_accounts: vec!["a:b".into()], ..ClusterConfig::default() };

    let e = K8sPsatAttestor::from_config(&one(ClusterConfig {
        verify: VerifyMode::TokenReview,
        kubeconfig: Some(f.kubeconfig.clone()),
        jwks_file: Some("/x".into()),
        ..base.clone()
    }))
    .await
    .unwrap_err();
    assert!(e.contains("cluster c") && e.contains("reading /x"), "{e}");
    let e = K8sPsatAttestor::from_config(&one(ClusterConfig {
        verify: VerifyMode::TokenReview,
        kubeconfig: Some(f.kubeconfig.clone()),
        issuer: Some("https://x".into()),
        ..base.clone()
    }))
    .await
    .unwrap_err();
    assert!(e.contains("with token_review the API server checks the token"), "{e}");
    let e = K8sPsatAttestor::from_config(&one(ClusterConfig {
        verify: VerifyMode::TokenReview,
        kubeconfig: Some("/nonexistent/kubeconfig".into()),
        ..base.clone()
    }))
    .await
    .unwrap_err();
    assert!(e.contains("/nonexistent/kubeconfig"), "{e}");
    // No kubeconfig and not in a pod.
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        let e = K8sPsatAttestor::from_config(&one(ClusterConfig {
            verify: VerifyMode::TokenReview,
            ..base.clone()
        }))
        .await
        .unwrap_err();
        assert!(e.contains("in-cluster"), "{e}");
    }
    let e = K8sPsatAttestor::from_config(&one(ClusterConfig { oidc_discovery: true, ..base.clone() }))
        .await
        .unwrap_err();
    assert!(e.contains("oidc_discovery needs issuer"), "{e}");
    let e = K8sPsatAttestor::from_config(&one(ClusterConfig {
        oidc_discovery: true,
        issuer: Some("http://issuer.example.com".into()),
        ..base.clone()
    }))
    .await
    .unwrap_err();
    assert!(e.contains("scheme http is not allowed"), "{e}");
}

/// Offline verification with the keys fetched from the issuer (a local server serving
/// the real minikube JWKS by OIDC discovery, as the API server does at
/// `/.well-known/openid-configuration` and `/openid/v1/jwks`).
#[tokio::test]
async fn offline_verification_with_oidc_discovery() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bound-token-with-node");
    let jwks: Value = serde_json::from_slice(&std::fs::read(data.join("jwks.json")).unwrap()).unwrap();
    let issuer = Arc::new(Mutex::new(String::new()));
    let (i2, j2) = (issuer.clone(), jwks.clone());
    let router =
        axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let base = i2.lock().unwrap().clone();
                    async move {
                        axum::Json(json!({"issuer": base, "jwks_uri": format!("{base}/openid/v1/jwks")}))
                    }
                }),
            )
            .route("/openid/v1/jwks", get(move || async move { axum::Json(j2) }));
    let addr = ferrid_test_util::serve(router, None).await;
    let base = format!("http://127.0.0.1:{}", addr.port());
    *issuer.lock().unwrap() = base.clone();

    // The real token names https://some-address as its issuer; a discovery document must
    // name the configured issuer, so the test serves it under the local URL and checks
    // that the token's own issuer is then refused, and accepted with the check relaxed
    // to the keys alone (jwks_url, no issuer).
    let mut cfg = PsatConfig::default();
    cfg.clusters.insert(
        "minikube".into(),
        ClusterConfig {
            audience: "gcp-sts-audience".into(),
            issuer: Some(base.clone()),
            oidc_discovery: true,
            allowed_service_accounts: vec!["default:svc1-sa".into()],
            ..ClusterConfig::default()
        },
    );
    let a = K8sPsatAttestor::from_config(&cfg).await.unwrap();
    let token = std::fs::read_to_string(data.join("token.jwt")).unwrap();
    let at = time::OffsetDateTime::from_unix_timestamp(1_730_720_800).unwrap();
    let e = a.attest(&payload("minikube", &token), &mut NoChallenges, at).await.unwrap_err();
    assert!(matches!(&e, AttestError::Rejected(m) if m.contains("issuer")), "{e:?}");

    let mut cfg = PsatConfig::default();
    cfg.clusters.insert(
        "minikube".into(),
        ClusterConfig {
            audience: "gcp-sts-audience".into(),
            jwks_url: Some(format!("{base}/openid/v1/jwks")),
            allowed_service_accounts: vec!["default:svc1-sa".into()],
            ..ClusterConfig::default()
        },
    );
    let a = K8sPsatAttestor::from_config(&cfg).await.unwrap();
    let got = a.attest(&payload("minikube", &token), &mut NoChallenges, at).await.unwrap();
    assert_eq!(got.agent_path, ["minikube", "2d0b5885-ed45-4ab3-b45b-dd7820b7e974"]);
    // Signature checks still bite with fetched keys: one flipped signature byte.
    let mut forged: Vec<char> = token.trim().chars().collect();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let e = a.attest(&payload("minikube", &forged), &mut NoChallenges, at).await.unwrap_err();
    assert!(matches!(&e, AttestError::Rejected(m) if m.contains("signature")), "{e:?}");
}
