//! The agent side against a local stand-in for IMDS.
//!
//! There is no IMDS off Azure. The stand-in answers as Microsoft documents the Instance
//! Metadata Service: requests without `Metadata: true`, or with `X-Forwarded-For`, get
//! 400 `{"error": "Bad request. Required metadata header not specified"}`;
//! `GET /metadata/attested/document?api-version=…&nonce=…` returns
//! `{"encoding": "pkcs7", "signature": "<base64>"}` (here a recorded document, chosen by
//! its nonce); `GET /metadata/identity/oauth2/token?api-version=…&resource=…` returns
//! `{"access_token": …, "expires_in": …, "resource": …, "token_type": "Bearer", …}`; a
//! missing `api-version` is 400. The full exchange then runs against the real server
//! side, the agent's `respond` answering the server's challenge.
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::*;
use ferrid_attest::{AttestError, Challenger, NodeAttestor};
use ferrid_attest_azure::agent::{AgentConfig, initial_payload, respond};
use serde_json::json;

/// The agent's half of the attestation stream.
struct AgentSide {
    cfg: AgentConfig,
    asked: usize,
}

#[async_trait::async_trait]
impl Challenger for AgentSide {
    async fn challenge(&mut self, challenge: Vec<u8>) -> Result<Vec<u8>, AttestError> {
        self.asked += 1;
        respond(&self.cfg, &challenge).await.map_err(AttestError::Rejected)
    }
}

#[derive(Default)]
struct Imds {
    seen: Mutex<Vec<HashMap<String, String>>>,
}

fn bad_request(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": msg}))).into_response()
}

fn checked(h: &HeaderMap, q: &HashMap<String, String>) -> Option<Response> {
    if h.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") || h.contains_key("x-forwarded-for") {
        return Some(bad_request("Bad request. Required metadata header not specified"));
    }
    if !q.contains_key("api-version") {
        return Some(bad_request("Bad request. api-version was not specified in the request"));
    }
    None
}

async fn attested(
    State(s): State<Arc<Imds>>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = checked(&h, &q) {
        return r;
    }
    s.seen.lock().unwrap().push(q.clone());
    let file = match q.get("nonce").map(String::as_str) {
        Some(n) if n == GENERATED.nonce => GENERATED.file,
        Some(n) if n == REGULAR.nonce => REGULAR.file,
        _ => return bad_request("this stand-in only has recorded documents"),
    };
    let body = answer(&der(file));
    ([("content-type", "application/json; charset=utf-8")], body).into_response()
}

async fn token(
    State(s): State<Arc<Imds>>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = checked(&h, &q) {
        return r;
    }
    s.seen.lock().unwrap().push(q.clone());
    let Some(resource) = q.get("resource") else {
        return bad_request("Required audience parameter not specified");
    };
    axum::Json(json!({
        "access_token": "eyJ0eXAiOiJKV1QifQ.e30.c2ln", "client_id": "0d2b3a6c-5e4f-4a1b-9c8d-7e6f5a4b3c2d",
        "expires_in": "86399", "expires_on": "1795523169", "ext_expires_in": "86399", "not_before": "1795436469",
        "resource": resource, "token_type": "Bearer"
    }))
    .into_response()
}

async fn imds() -> (Arc<Imds>, String) {
    let s = Arc::new(Imds::default());
    let router = axum::Router::new()
        .route("/metadata/attested/document", get(attested))
        .route("/metadata/identity/oauth2/token", get(token))
        .with_state(s.clone());
    let addr = ferrid_test_util::serve(router, None).await;
    (s, format!("http://127.0.0.1:{}", addr.port()))
}

#[tokio::test]
async fn the_stand_in_refuses_requests_without_the_metadata_header() {
    let (_s, url) = imds().await;
    let r = reqwest::get(format!("{url}/metadata/attested/document?api-version=2020-09-01&nonce=1"))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn the_agent_answers_the_servers_challenge_with_an_imds_document() {
    let (s, url) = imds().await;
    let cfg = AgentConfig { imds_url: url, resource: None };
    let payload = initial_payload(&cfg).await.unwrap();
    assert_eq!(payload, b"{}");

    let server = attestor(&generated_config(&[GENERATED.subscription]), GENERATED.nonce);
    // The agent's `respond` answers the challenge, as the node agent does for a
    // challenge from the attestation stream.
    let mut ch = AgentSide { cfg: cfg.clone(), asked: 0 };
    let got = server.attest(&payload, &mut ch, at(GENERATED.created + 5)).await.unwrap();
    assert_eq!(got.agent_path, [GENERATED.subscription, GENERATED.vm_id]);
    assert_eq!(ch.asked, 1);
    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["api-version"], "2020-09-01");
    assert_eq!(seen[0]["nonce"], GENERATED.nonce);
}

#[tokio::test]
async fn the_agent_sends_the_managed_identity_token_when_it_has_a_resource() {
    let (s, url) = imds().await;
    let cfg = AgentConfig { imds_url: url, resource: Some("api://ferrid-server".into()) };
    let payload = initial_payload(&cfg).await.unwrap();
    assert_eq!(payload, br#"{"token":"eyJ0eXAiOiJKV1QifQ.e30.c2ln"}"#);
    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(seen[0]["resource"], "api://ferrid-server");
    assert_eq!(seen[0]["api-version"], "2018-02-01");
}

#[tokio::test]
async fn the_agent_reports_what_went_wrong() {
    let (_s, url) = imds().await;
    let cfg = AgentConfig { imds_url: url.clone(), resource: None };
    let e = respond(&cfg, br#"{"nonce":"0000000000"}"#).await.unwrap_err();
    assert!(e.contains("HTTP 400") && e.contains("recorded documents"), "{e}");
    for bad in [&b"{}"[..], br#"{"nonce":"a&b=c"}"#, br#"{"nonce":""}"#, b"junk"] {
        assert!(respond(&cfg, bad).await.is_err());
    }
    let e =
        respond(&AgentConfig { imds_url: "http://127.0.0.1:9".into(), resource: None }, br#"{"nonce":"1"}"#)
            .await
            .unwrap_err();
    assert!(e.contains("GET http://127.0.0.1:9/metadata/attested/document"), "{e}");
    assert!(
        initial_payload(&AgentConfig { imds_url: "nope".into(), resource: Some("x".into()) }).await.is_err()
    );
}

#[test]
fn agent_configuration_defaults() {
    let c: AgentConfig = toml::from_str("").unwrap();
    assert_eq!(c, AgentConfig::default());
    assert_eq!(c.imds_url, "http://169.254.169.254");
    assert_eq!(c.resource, None);
    assert!(toml::from_str::<AgentConfig>("resources = \"x\"").is_err());
}
