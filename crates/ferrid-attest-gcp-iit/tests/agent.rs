//! The agent side against a local stand-in for the Compute Engine metadata server.
//!
//! There is no metadata server off Compute Engine. The stand-in answers as Google
//! documents it ("About VM metadata", "Verify the identity of a VM"):
//! `GET /computeMetadata/v1/instance/service-accounts/<sa>/identity?audience=<aud>&format=full`
//! returns the signed token as text with `Metadata-Flavor: Google`; a request without
//! the `Metadata-Flavor: Google` header, or with an `X-Forwarded-For` header, is refused
//! with 403; an unknown service account is 404; a missing `audience` is 400. The token
//! it returns is signed here and then verified by the real server side.
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::{NOW, Signer, claims, signer};
use ferrid_attest::{NoChallenges, NodeAttestor};
use ferrid_attest_gcp_iit::agent::{AgentConfig, collect};
use ferrid_attest_gcp_iit::{GcpIitAttestor, GcpIitConfig};

struct Metadata {
    google: Signer,
    /// Every query string received.
    seen: Mutex<Vec<HashMap<String, String>>>,
    /// Answer without the Metadata-Flavor header (an impostor).
    impostor: Mutex<bool>,
}

async fn identity(
    State(m): State<Arc<Metadata>>,
    Path(sa): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    if h.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google")
        || h.contains_key("x-forwarded-for")
    {
        return (StatusCode::FORBIDDEN, "Missing Metadata-Flavor:Google header.").into_response();
    }
    if sa != "default" && sa != "agent@ferrid-prod.iam.gserviceaccount.com" {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    m.seen.lock().unwrap().push(q.clone());
    let Some(aud) = q.get("audience") else {
        return (StatusCode::BAD_REQUEST, "non-empty audience parameter required").into_response();
    };
    let mut c = claims(aud);
    if q.get("format").map(String::as_str) != Some("full") {
        c.as_object_mut().unwrap().remove("google");
    }
    let token = m.google.sign(&c);
    if *m.impostor.lock().unwrap() {
        return token.into_response();
    }
    ([("metadata-flavor", "Google"), ("content-type", "application/text")], token).into_response()
}

async fn metadata_server() -> (Arc<Metadata>, String) {
    let m = Arc::new(Metadata {
        google: signer("google-1"),
        seen: Mutex::default(),
        impostor: Mutex::new(false),
    });
    let router = axum::Router::new()
        .route("/computeMetadata/v1/instance/service-accounts/{sa}/identity", get(identity))
        .with_state(m.clone());
    let addr = ferrid_test_util::serve(router, None).await;
    (m, format!("http://127.0.0.1:{}", addr.port()))
}

fn agent(url: &str) -> AgentConfig {
    AgentConfig {
        metadata_url: url.into(),
        audience: "https://ferrid.example/gcp".into(),
        ..AgentConfig::default()
    }
}

#[tokio::test]
async fn the_stand_in_refuses_requests_without_the_metadata_flavor_header() {
    let (_m, url) = metadata_server().await;
    let plain = reqwest::get(format!(
        "{url}/computeMetadata/v1/instance/service-accounts/default/identity?audience=x&format=full"
    ))
    .await
    .unwrap();
    assert_eq!(plain.status(), 403);
}

#[tokio::test]
async fn collect_fetches_a_full_token_that_the_server_accepts() {
    let (m, url) = metadata_server().await;
    let payload = collect(&agent(&url)).await.unwrap();
    let seen = m.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["audience"], "https://ferrid.example/gcp");
    assert_eq!(seen[0]["format"], "full");

    let cfg = GcpIitConfig {
        allowed_projects: vec!["ferrid-prod".into()],
        audience: "https://ferrid.example/gcp".into(),
        ..GcpIitConfig::default()
    };
    let server = GcpIitAttestor::with_keys(&cfg, m.google.keys()).unwrap();
    let t = time::OffsetDateTime::from_unix_timestamp(NOW + 1).unwrap();
    let got = server.attest(&payload, &mut NoChallenges, t).await.unwrap();
    assert_eq!(got.agent_path, ["ferrid-prod", "europe-west4-b", "4417181624101893537"]);

    // A named service account works too.
    let mut c = agent(&url);
    c.service_account = "agent@ferrid-prod.iam.gserviceaccount.com".into();
    assert!(collect(&c).await.is_ok());
}

#[tokio::test]
async fn collect_reports_what_went_wrong() {
    let (m, url) = metadata_server().await;
    let mut c = agent(&url);
    c.service_account = "nobody@elsewhere.iam.gserviceaccount.com".into();
    let e = collect(&c).await.unwrap_err();
    assert!(e.contains("404"), "{e}");

    *m.impostor.lock().unwrap() = true;
    let e = collect(&agent(&url)).await.unwrap_err();
    assert!(e.contains("Metadata-Flavor"), "{e}");

    let e = collect(&agent("http://127.0.0.1:9")).await.unwrap_err();
    assert!(e.contains("GET http://127.0.0.1:9/computeMetadata"), "{e}");
    let e = collect(&agent("not a url")).await.unwrap_err();
    assert!(e.contains("metadata_url"), "{e}");
}

#[test]
fn agent_configuration_defaults() {
    let c: AgentConfig = toml::from_str("").unwrap();
    assert_eq!(c, AgentConfig::default());
    assert_eq!(c.metadata_url, "http://metadata.google.internal");
    assert_eq!(c.audience, "ferrid-server");
    assert_eq!(c.service_account, "default");
    assert!(toml::from_str::<AgentConfig>("audiences = \"x\"").is_err());
}
