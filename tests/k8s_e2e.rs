//! Kubernetes end to end, without a cluster: the real `ferrid` server verifies the agent's
//! token with TokenReview, looks up the agent's pod and node, and publishes its trust
//! bundle to a ConfigMap; the real agent boots from that published bundle (as it does
//! in a DaemonSet, where the kubelet mounts the ConfigMap) and serves a workload.
//!
//! There is no Kubernetes API server on this machine. The test serves, over HTTPS on
//! loopback, the parts of the Kubernetes API the server uses, as the API documents
//! them: `POST /apis/authentication.k8s.io/v1/tokenreviews`,
//! `GET /api/v1/namespaces/{ns}/pods/{name}`, `GET /api/v1/nodes/{name}` and server-side
//! apply (`PATCH … application/apply-patch+yaml`) of
//! `/api/v1/namespaces/{ns}/configmaps/{name}`; the server reaches it through a real
//! kubeconfig file with a CA and a bearer token.
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use common::*;
use serde_json::{Value, json};
use spiffe::WorkloadApiClient;

const API_TOKEN: &str = "server-sa-token";
const AGENT_TOKEN: &str = "agent-projected-token";
const NODE_UID: &str = "9e8d7c6b-5a49-4837-a261-5f4e3d2c1b0a";
const POD_UID: &str = "1a2b3c4d-5e6f-4a8b-9c0d-e1f2a3b4c5d6";

#[derive(Default)]
struct Kube {
    config_maps: Mutex<HashMap<String, Value>>,
    reviews: Mutex<Vec<Value>>,
}

fn unauthorized(h: &HeaderMap) -> Option<Response> {
    let ok = h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {API_TOKEN}"));
    (!ok).then(|| {
        let st = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 401, "reason": "Unauthorized", "message": "Unauthorized"});
        (StatusCode::UNAUTHORIZED, axum::Json(st)).into_response()
    })
}

async fn token_review(
    State(k): State<Arc<Kube>>,
    h: HeaderMap,
    axum::Json(mut body): axum::Json<Value>,
) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    k.reviews.lock().unwrap().push(body.clone());
    let ok =
        body["spec"]["token"] == json!(AGENT_TOKEN) && body["spec"]["audiences"] == json!(["ferrid-server"]);
    body["status"] = if ok {
        json!({"authenticated": true, "audiences": ["ferrid-server"],
               "user": {"username": "system:serviceaccount:ferrid:ferrid-agent",
                        "groups": ["system:serviceaccounts", "system:authenticated"],
                        "extra": {"authentication.kubernetes.io/pod-name": ["ferrid-agent-q9x8w"],
                                  "authentication.kubernetes.io/pod-uid": [POD_UID]}}})
    } else {
        json!({"authenticated": false, "error": "invalid bearer token"})
    };
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

async fn pod(h: HeaderMap, UrlPath((ns, name)): UrlPath<(String, String)>) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    if (ns.as_str(), name.as_str()) != ("ferrid", "ferrid-agent-q9x8w") {
        let st = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "not found"});
        return (StatusCode::NOT_FOUND, axum::Json(st)).into_response();
    }
    axum::Json(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": POD_UID, "labels": {"app.kubernetes.io/name": "ferrid-agent"}},
        "spec": {"nodeName": "kind-worker", "containers": []}}))
    .into_response()
}

async fn node(h: HeaderMap, UrlPath(name): UrlPath<String>) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    axum::Json(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": NODE_UID}}))
        .into_response()
}

async fn apply_config_map(
    State(k): State<Arc<Kube>>,
    h: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    body: String,
) -> Response {
    if let Some(r) = unauthorized(&h) {
        return r;
    }
    let obj: Value = serde_json::from_str(&body).unwrap();
    k.config_maps.lock().unwrap().insert(format!("{ns}/{name}"), obj.clone());
    axum::Json(obj).into_response()
}

#[tokio::test(flavor = "multi_thread")]
async fn in_cluster_flow_with_token_review_and_a_published_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let kube = Arc::new(Kube::default());
    let router = axum::Router::new()
        .route("/apis/authentication.k8s.io/v1/tokenreviews", post(token_review))
        .route("/api/v1/namespaces/{ns}/pods/{name}", get(pod))
        .route("/api/v1/nodes/{name}", get(node))
        .route("/api/v1/namespaces/{ns}/configmaps/{name}", patch(apply_config_map))
        .with_state(kube.clone());
    let tls = ferrid_test_util::TestTls::new(&["localhost"]);
    let addr = ferrid_test_util::serve(router, Some(tls.server_config.clone())).await;
    let kubeconfig = tmp.path().join("kubeconfig");
    {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(&tls.ca_pem);
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: kind\n  cluster:\n    server: https://localhost:{}\n    certificate-authority-data: {ca}\nusers:\n- name: ferrid\n  user:\n    token: {API_TOKEN}\ncontexts:\n- name: kind\n  context:\n    cluster: kind\n    user: ferrid\ncurrent-context: kind\n",
                addr.port()
            ),
        )
        .unwrap();
    }
    let extra = format!(
        "[k8s_psat.clusters.kind]\nverify = \"token_review\"\nkubeconfig = \"{k}\"\n\
         allowed_service_accounts = [\"ferrid:ferrid-agent\"]\n\
         [k8s_bundle]\nnamespace = \"ferrid\"\nconfig_map = \"ferrid-bundle\"\nkubeconfig = \"{k}\"\n",
        k = kubeconfig.display()
    );
    let server = Server::start_with(&tmp.path().join("server"), format!("127.0.0.1:{}", free_port()), &extra);

    // The server publishes its bundle; the "kubelet" mounts it as a file.
    let deadline = Instant::now() + Duration::from_secs(30);
    let published = loop {
        if let Some(cm) = kube.config_maps.lock().unwrap().get("ferrid/ferrid-bundle") {
            break cm["data"]["bundle.pem"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "bundle never published: {:?}", server.log.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(published, server.ok(&["bundle", "show", "--format", "pem"]));
    let bundle_file = tmp.path().join("bundle.pem");
    std::fs::write(&bundle_file, &published).unwrap();

    let agent_id = format!("spiffe://{TD}/ferrid/agent/k8s_psat/kind/{NODE_UID}");
    let uid = nix::unistd::getuid().as_raw();
    server.ok(&[
        "entry",
        "create",
        "--spiffe-id",
        &format!("spiffe://{TD}/k8s/payments"),
        "--parent-id",
        &agent_id,
        "--selector",
        &format!("unix:uid:{uid}"),
    ]);
    let dir = tmp.path().join("agent");
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, AGENT_TOKEN).unwrap();
    let socket = dir.join("api.sock");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "trust_domain = \"{TD}\"\nserver_address = \"{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\n\
             trust_bundle_file = \"{}\"\nmax_backoff = \"1s\"\n[k8s_psat]\ncluster = \"kind\"\ntoken_path = \"{}\"\n",
            server.node,
            dir.join("data").display(),
            socket.display(),
            bundle_file.display(),
            token.display()
        ),
    )
    .unwrap();
    let agent = Agent::start(&config, &socket);
    let client = eventually(30, "connect", || WorkloadApiClient::connect_to(agent.endpoint())).await;
    let svid = eventually(30, "SVID through a TokenReview-attested agent", || client.fetch_x509_svid()).await;
    assert_eq!(svid.spiffe_id().to_string(), format!("spiffe://{TD}/k8s/payments"));

    // The agent's identity came from the review and the lookups.
    let agents = server.json(&["agent", "list"]).to_string();
    for want in [
        agent_id.as_str(),
        "k8s_psat:agent_node_name:kind-worker",
        "k8s_psat:agent_pod_label:app.kubernetes.io/name:ferrid-agent",
    ] {
        assert!(agents.contains(want), "missing {want}: {agents}");
    }
    let reviews = kube.reviews.lock().unwrap().clone();
    assert_eq!(reviews.len(), 1, "one TokenReview for one attestation");
    assert_eq!(reviews[0]["spec"]["audiences"], json!(["ferrid-server"]));
}
