//! The gcp_iit attestor against real instance identity tokens (tests/data, see its
//! README) at their own time and at today's, and against tokens signed here for every
//! negative case. Google's JWKS endpoint is not reachable from a test machine: the
//! remote-key tests serve a JWKS from loopback, as `GET /oauth2/v3/certs` answers.
mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use common::{AUD, NOW, claims, signer};
use ferrid_attest::testkit;
use ferrid_attest::{AttestError, Attested, NoChallenges, NodeAttestor};
use ferrid_attest_gcp_iit::{GcpIitAttestor, GcpIitConfig, TOFU_EXPIRES_AT};
use ferrid_jwt::KeySet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

fn data(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(p)
}

fn read(p: &str) -> String {
    std::fs::read_to_string(data(p)).unwrap().trim().to_owned()
}

fn at(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

/// 2026-11-23, the day these tests were written: "today" for the fixtures.
const TODAY: i64 = 1_795_392_000;

fn config(audience: &str, projects: &[&str]) -> GcpIitConfig {
    GcpIitConfig {
        audience: audience.into(),
        allowed_projects: projects.iter().map(|s| (*s).to_owned()).collect(),
        ..GcpIitConfig::default()
    }
}

/// Offline: the fixture's JWKS file only.
fn offline(audience: &str, projects: &[&str], jwks: &str) -> GcpIitAttestor {
    let mut c = config(audience, projects);
    c.jwks_file = Some(data(jwks));
    c.jwks_url = String::new();
    GcpIitAttestor::from_config(&c).unwrap()
}

async fn attest(a: &GcpIitAttestor, token: &str, now: i64) -> Result<Attested, AttestError> {
    a.attest(token.as_bytes(), &mut NoChallenges, at(now)).await
}

fn rejected_with(r: Result<Attested, AttestError>, needle: &str) {
    match r {
        Err(AttestError::Rejected(m)) if m.contains(needle) => {}
        other => panic!("expected a rejection mentioning {needle:?}, got {other:?}"),
    }
}

fn has(got: &Attested, selectors: &[&str]) {
    for s in selectors {
        assert!(got.selectors.contains(&(*s).to_owned()), "{s} in {:?}", got.selectors);
    }
}

// --- Real tokens -------------------------------------------------------------------

struct Fixture {
    dir: &'static str,
    jwks: &'static str,
    aud: &'static str,
    project: &'static str,
    iat: i64,
}

const FIXTURES: [Fixture; 3] = [
    Fixture {
        dir: "agentcommunication",
        jwks: "agentcommunication/google-oauth2-v3-certs-jwks.json",
        aud: "agentcommunication.googleapis.com",
        project: "weipengpanda-project",
        iat: 1_739_324_791,
    },
    Fixture {
        dir: "infisical",
        jwks: "infisical/google-jwk-a3b762f8.json",
        aud: "71d1b279-2fe3-4828-85f5-2f4a2fdb02a1",
        project: "infisical-dev",
        iat: 1_715_962_787,
    },
    Fixture {
        dir: "subscription-manager",
        jwks: "subscription-manager/google-jwk-6a8ba565.json",
        aud: "https://subscription.rhsm.redhat.com:443/subscription",
        project: "fair-kingdom-308514",
        iat: 1_616_596_223,
    },
];

#[tokio::test]
async fn real_tokens_attest_at_their_time() {
    for f in &FIXTURES {
        let a = offline(f.aud, &[f.project], f.jwks);
        let token = read(&format!("{}/token.jwt", f.dir));
        let got = attest(&a, &token, f.iat + 60).await.unwrap_or_else(|e| panic!("{}: {e}", f.dir));
        assert_eq!(got.agent_path[0], f.project);
        assert_eq!(got.agent_path.len(), 3);
        assert!(!got.can_reattest);
        assert_eq!(got.replay_key, Some(format!("gcp_iit:{}:{}", f.project, got.agent_path[2])));
        assert_eq!(got.replay_expires_at, TOFU_EXPIRES_AT);
    }
    let a = offline(FIXTURES[0].aud, &[FIXTURES[0].project], FIXTURES[0].jwks);
    let got = attest(&a, &read("agentcommunication/token.jwt"), FIXTURES[0].iat + 60).await.unwrap();
    assert_eq!(got.agent_path, ["weipengpanda-project", "europe-west1-b", "2875949485074006138"]);
    assert_eq!(
        got.selectors,
        [
            "project_id:weipengpanda-project",
            "project_number:326694433618",
            "zone:europe-west1-b",
            "instance_name:wi-test-vm-1",
            "instance_id:2875949485074006138",
            "service_account:326694433618-compute@developer.gserviceaccount.com",
        ]
    );
    let a = offline(FIXTURES[1].aud, &[FIXTURES[1].project], FIXTURES[1].jwks);
    let got = attest(&a, &read("infisical/token.jwt"), FIXTURES[1].iat + 60).await.unwrap();
    assert_eq!(got.agent_path, ["infisical-dev", "us-central1-a", "8418160715288427941"]);
    has(
        &got,
        &["service_account:test-user@infisical-dev.iam.gserviceaccount.com", "instance_name:test-instance"],
    );
    let a = offline(FIXTURES[2].aud, &[FIXTURES[2].project], FIXTURES[2].jwks);
    let got = attest(&a, &read("subscription-manager/token.jwt"), FIXTURES[2].iat + 60).await.unwrap();
    assert_eq!(got.agent_path, ["fair-kingdom-308514", "us-east1-b", "2589221140676718026"]);
    has(&got, &["project_number:161958465613", "instance_name:instance-1"]);
}

#[tokio::test]
async fn real_tokens_are_refused_today_and_under_the_wrong_policy() {
    for f in &FIXTURES {
        let token = read(&format!("{}/token.jwt", f.dir));
        let a = offline(f.aud, &[f.project], f.jwks);
        assert!(matches!(attest(&a, &token, TODAY).await, Err(AttestError::Expired(_))), "{}", f.dir);
        let when = f.iat + 60;
        rejected_with(
            attest(&offline("ferrid-server", &[f.project], f.jwks), &token, when).await,
            "audience",
        );
        rejected_with(
            attest(&offline(f.aud, &["someone-else"], f.jwks), &token, when).await,
            "not in allowed_projects",
        );
    }
    // Another token's Google key: the kid is unknown.
    let token = read("infisical/token.jwt");
    rejected_with(
        attest(&offline(FIXTURES[1].aud, &["infisical-dev"], FIXTURES[0].jwks), &token, FIXTURES[1].iat)
            .await,
        "no trusted key",
    );
    // The agentcommunication instance was 57 days old when its token was minted.
    let f = &FIXTURES[0];
    let mut c = config(f.aud, &[f.project]);
    c.jwks_file = Some(data(f.jwks));
    c.jwks_url = String::new();
    c.max_instance_age = Some(Duration::from_secs(30 * 86400));
    let a = GcpIitAttestor::from_config(&c).unwrap();
    rejected_with(attest(&a, &read("agentcommunication/token.jwt"), f.iat + 60).await, "max_instance_age");
    c.max_instance_age = Some(Duration::from_secs(60 * 86400));
    let a = GcpIitAttestor::from_config(&c).unwrap();
    assert!(attest(&a, &read("agentcommunication/token.jwt"), f.iat + 60).await.is_ok());
}

// --- Tokens signed here, one per negative case ---------------------------------------

fn attestor(keys: KeySet) -> GcpIitAttestor {
    let mut c = config(AUD, &["ferrid-prod", "other-project"]);
    c.max_instance_age = Some(Duration::from_secs(86400));
    GcpIitAttestor::with_keys(&c, keys).unwrap()
}

#[tokio::test]
async fn a_good_token_attests_once() {
    let s = signer("k1");
    let a = attestor(s.keys());
    let token = s.sign(&claims(AUD));
    let first = attest(&a, &token, NOW + 5).await.unwrap();
    assert_eq!(first.agent_path, ["ferrid-prod", "europe-west4-b", "4417181624101893537"]);
    assert_eq!(
        first.selectors,
        [
            "project_id:ferrid-prod",
            "project_number:987654321012",
            "zone:europe-west4-b",
            "instance_name:worker-7",
            "instance_id:4417181624101893537",
            "service_account:agent@ferrid-prod.iam.gserviceaccount.com",
        ]
    );
    // Trust on first use: the same replay key every time, whatever the token, so the
    // host refuses every attestation of this instance after the first.
    let again = attest(&a, &s.sign(&claims(AUD)), NOW + 600).await.unwrap();
    assert_eq!(first.replay_key.as_deref(), Some("gcp_iit:ferrid-prod:4417181624101893537"));
    assert_eq!(again.replay_key, first.replay_key);
    assert_eq!(again.replay_expires_at, TOFU_EXPIRES_AT);
    assert!(!again.can_reattest);
    // With allow_reattestation, no replay key and the agent may come back.
    let mut c = config(AUD, &["ferrid-prod"]);
    c.allow_reattestation = true;
    let re = GcpIitAttestor::with_keys(&c, s.keys()).unwrap();
    let got = attest(&re, &token, NOW + 5).await.unwrap();
    assert!(got.can_reattest && got.replay_key.is_none());
    // Whitespace around the token (a file with a trailing newline) is fine.
    assert!(attest(&a, &format!("{token}\n"), NOW + 5).await.is_ok());
}

#[tokio::test]
async fn every_negative_case_gets_a_precise_refusal() {
    let s = signer("k1");
    let a = attestor(s.keys());
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(AUD);
        f(&mut c);
        s.sign(&c)
    };
    let good = s.sign(&claims(AUD));

    rejected_with(attest(&a, &with(&|c| c["aud"] = json!("https://other.example")), NOW).await, "audience");
    rejected_with(attest(&a, &with(&|c| c["iss"] = json!("https://evil.example")), NOW).await, "issuer");
    rejected_with(
        attest(
            &a,
            &with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
            NOW,
        )
        .await,
        "iss",
    );
    assert!(matches!(attest(&a, &good, NOW + 3600 + 31).await, Err(AttestError::Expired(_))));
    rejected_with(attest(&a, &good, NOW - 120).await, "not valid before");
    rejected_with(
        attest(&a, &with(&|c| c["google"]["compute_engine"]["project_id"] = json!("not-mine")), NOW).await,
        "\"not-mine\" is not in allowed_projects",
    );
    rejected_with(
        attest(
            &a,
            &with(&|c| {
                c["google"]["compute_engine"]["instance_creation_timestamp"] = json!(NOW - 86400 - 10)
            }),
            NOW,
        )
        .await,
        "over max_instance_age",
    );
    rejected_with(
        attest(
            &a,
            &with(&|c| {
                c["google"]["compute_engine"].as_object_mut().unwrap().remove("instance_creation_timestamp");
            }),
            NOW,
        )
        .await,
        "no instance_creation_timestamp",
    );
    // format=standard: no google.compute_engine claims.
    rejected_with(
        attest(
            &a,
            &with(&|c| {
                c.as_object_mut().unwrap().remove("google");
            }),
            NOW,
        )
        .await,
        "format=full",
    );
    rejected_with(
        attest(&a, &with(&|c| c["google"]["compute_engine"]["instance_id"] = json!(null)), NOW).await,
        "instance_id is missing",
    );
    rejected_with(
        attest(&a, &with(&|c| c["google"]["compute_engine"]["zone"] = json!("..")), NOW).await,
        "cannot be part of an agent ID",
    );
    rejected_with(
        attest(&a, &with(&|c| c["google"]["compute_engine"]["project_id"] = json!("google.com:x")), NOW)
            .await,
        "not in allowed_projects",
    );
    rejected_with(
        attest(&a, &with(&|c| c["google"]["compute_engine"]["instance_name"] = json!("a\nb")), NOW).await,
        "control characters",
    );
    // Signed by another key with the same kid.
    let other = signer("k1");
    rejected_with(attest(&a, &other.sign(&claims(AUD)), NOW).await, "signature does not verify");
    // Unknown kid.
    rejected_with(attest(&a, &signer("k2").sign(&claims(AUD)), NOW).await, "no trusted key");
    // alg: none.
    let body = good.split('.').nth(1).unwrap();
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{body}.");
    rejected_with(attest(&a, &none, NOW).await, "algorithm none is not allowed");
    // HS256 keyed with Google's public key (algorithm confusion), as PEM and as the JWKS text.
    for secret in [s.public_pem.as_bytes().to_vec(), s.jwks()] {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let hs = jsonwebtoken::encode(&h, &claims(AUD), &EncodingKey::from_secret(&secret)).unwrap();
        rejected_with(attest(&a, &hs, NOW).await, "algorithm HS256 is not allowed");
    }
    // Another asymmetric algorithm: Google signs instance tokens with RS256 only.
    let mut h = Header::new(Algorithm::RS512);
    h.kid = Some("k1".into());
    let rs512 = jsonwebtoken::encode(&h, &claims(AUD), &s.enc).unwrap();
    rejected_with(attest(&a, &rs512, NOW).await, "algorithm RS512 is not allowed");
    // Oversized, malformed, not UTF-8.
    let big = "x".repeat(ferrid_jwt::MAX_TOKEN_BYTES + 1);
    assert!(matches!(attest(&a, &big, NOW).await, Err(AttestError::TooLarge { .. })));
    let huge = vec![b'a'; ferrid_attest::MAX_PAYLOAD * 2];
    assert!(matches!(
        a.attest(&huge, &mut NoChallenges, at(NOW)).await,
        Err(AttestError::TooLarge { got, .. }) if got == ferrid_attest::MAX_PAYLOAD * 2
    ));
    assert!(matches!(attest(&a, "a.b", NOW).await, Err(AttestError::Malformed(_))));
    assert!(matches!(
        a.attest(b"\xff.\xfe.\xfd", &mut NoChallenges, at(NOW)).await,
        Err(AttestError::Malformed(_))
    ));
}

#[tokio::test]
async fn passes_the_attestor_contract() {
    let a = attestor(signer("k1").keys());
    testkit::assert_name_is_valid(&a);
    testkit::assert_rejects_garbage(&a, at(NOW)).await;
}

// --- Keys from a JWKS URL --------------------------------------------------------------

#[derive(Default)]
struct Certs {
    keys: Mutex<Vec<Value>>,
    hits: AtomicUsize,
}

async fn certs(State(c): State<Arc<Certs>>) -> axum::Json<Value> {
    c.hits.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({ "keys": *c.keys.lock().unwrap() }))
}

async fn google_certs() -> (Arc<Certs>, String) {
    let state = Arc::new(Certs::default());
    let router = axum::Router::new().route("/oauth2/v3/certs", get(certs)).with_state(state.clone());
    let addr = ferrid_test_util::serve(router, None).await;
    (state, format!("http://127.0.0.1:{}/oauth2/v3/certs", addr.port()))
}

#[tokio::test]
async fn keys_are_fetched_cached_and_refreshed_on_an_unknown_kid() {
    let (google, url) = google_certs().await;
    let (k1, k2) = (signer("k1"), signer("k2"));
    google.keys.lock().unwrap().push(k1.jwk.clone());
    let mut c = config(AUD, &["ferrid-prod"]);
    c.jwks_url = url;
    c.allow_reattestation = true;
    let a = GcpIitAttestor::from_config(&c).unwrap();
    assert_eq!(google.hits.load(Ordering::SeqCst), 0, "nothing is fetched before the first token");
    for _ in 0..3 {
        attest(&a, &k1.sign(&claims(AUD)), NOW).await.unwrap();
    }
    assert_eq!(google.hits.load(Ordering::SeqCst), 1);
    // Google rotates: k2 appears; its first token triggers one refresh.
    google.keys.lock().unwrap().push(k2.jwk.clone());
    attest(&a, &k2.sign(&claims(AUD)), NOW + 60).await.unwrap();
    assert_eq!(google.hits.load(Ordering::SeqCst), 2);
    // Made-up kids are rate limited: one more fetch at most per 30 s.
    for i in 0..5 {
        rejected_with(
            attest(&a, &signer(&format!("x{i}")).sign(&claims(AUD)), NOW + 61).await,
            "no trusted key",
        );
    }
    assert_eq!(google.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_jwks_file_is_tried_first_and_an_unreachable_url_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = signer("k1");
    let file = dir.path().join("certs.json");
    std::fs::write(&file, k1.jwks()).unwrap();
    let mut c = config(AUD, &["ferrid-prod"]);
    c.jwks_file = Some(file);
    // Nothing listens on port 9 of loopback.
    c.jwks_url = "http://127.0.0.1:9/oauth2/v3/certs".into();
    let a = GcpIitAttestor::from_config(&c).unwrap();
    attest(&a, &k1.sign(&claims(AUD)), NOW).await.unwrap();
    assert!(matches!(
        attest(&a, &signer("k9").sign(&claims(AUD)), NOW).await,
        Err(AttestError::Unavailable(_))
    ));
}

#[test]
fn configuration_is_strict_and_errors_name_the_key() {
    let cfg: GcpIitConfig = toml::from_str(
        r#"
        allowed_projects = ["ferrid-prod"]
        max_instance_age = "12h"
        "#,
    )
    .unwrap();
    assert_eq!(cfg.audience, "ferrid-server");
    assert_eq!(cfg.jwks_url, "https://www.googleapis.com/oauth2/v3/certs");
    assert_eq!(cfg.max_instance_age, Some(Duration::from_secs(12 * 3600)));
    assert!(!cfg.allow_reattestation);
    assert!(GcpIitAttestor::from_config(&cfg).is_ok());
    let e = toml::from_str::<GcpIitConfig>("allowed_projects = [\"p\"]\nprojects = [\"p\"]").unwrap_err();
    assert!(e.to_string().contains("projects"), "{e}");
    assert!(toml::from_str::<GcpIitConfig>("audience = \"x\"").is_err(), "allowed_projects is required");

    let err = |c: &GcpIitConfig| GcpIitAttestor::from_config(c).unwrap_err();
    let e = err(&config("a", &[]));
    assert!(e.starts_with("allowed_projects"), "{e}");
    let e = err(&config("a", &["a/b"]));
    assert!(e.starts_with("allowed_projects"), "{e}");
    let e = err(&config("", &["p"]));
    assert!(e.starts_with("audience"), "{e}");
    let mut c = config("a", &["p"]);
    c.jwks_url = "http://example.com/certs".into();
    assert!(err(&c).starts_with("jwks_url"), "{}", err(&c));
    c.jwks_url = String::new();
    assert!(err(&c).starts_with("jwks_url"), "{}", err(&c));
    c.jwks_file = Some("/nonexistent/certs.json".into());
    let e = err(&c);
    assert!(e.starts_with("jwks_file") && e.contains("/nonexistent/certs.json"), "{e}");
    let mut c = config("a", &["p"]);
    c.ca_file = Some("/nonexistent/ca.pem".into());
    assert!(err(&c).starts_with("ca_file"), "{}", err(&c));
    let mut c = config("a", &["p"]);
    c.max_instance_age = Some(Duration::ZERO);
    assert!(err(&c).starts_with("max_instance_age"), "{}", err(&c));
}
