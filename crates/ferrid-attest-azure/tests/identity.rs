//! Managed-identity tokens (`[azure.identity]`), signed here with throwaway RSA keys in
//! the shape Entra ID issues them to a VM's managed identity, together with a document
//! of tests/data/generated. Entra ID is not reachable from a test machine: the
//! discovery test serves `<authority>/<tenant>/v2.0/.well-known/openid-configuration`
//! and its `jwks_uri` from loopback, as OIDC Discovery 1.0 describes them.
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::routing::get;
use common::*;
use ferrid_attest::{AttestError, Attested, NoChallenges, NodeAttestor};
use ferrid_attest_azure::{AzureAttestor, AzureConfig, IdentityConfig};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const RESOURCE: &str = "api://ferrid-server";
const NOW: i64 = GENERATED.created + 10;

struct Signer {
    enc: EncodingKey,
    public_pem: String,
    jwk: Value,
}

fn signer(kid: &str) -> Signer {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let enc = EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap();
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&enc, Algorithm::RS256).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    Signer { enc, public_pem: kp.public_key_pem(), jwk }
}

impl Signer {
    fn sign(&self, c: &Value) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = self.jwk["kid"].as_str().map(str::to_owned);
        jsonwebtoken::encode(&h, c, &self.enc).unwrap()
    }
    fn keys(&self) -> ferrid_jwt::KeySet {
        ferrid_jwt::KeySet::from_jwks(json!({"keys": [self.jwk]}).to_string().as_bytes()).unwrap()
    }
}

/// A v1 access token of the VM's system-assigned identity.
fn claims() -> Value {
    json!({
        "aud": RESOURCE, "iss": format!("https://sts.windows.net/{TENANT}/"), "iat": NOW - 60, "nbf": NOW - 60,
        "exp": NOW + 3600, "aio": "x", "appid": "0d2b3a6c-5e4f-4a1b-9c8d-7e6f5a4b3c2d", "appidacr": "2",
        "idp": format!("https://sts.windows.net/{TENANT}/"), "oid": "a1b2c3d4-e5f6-4789-8abc-def012345678",
        "rh": "x", "sub": "a1b2c3d4-e5f6-4789-8abc-def012345678", "tid": TENANT, "uti": "x", "ver": "1.0",
        "xms_mirid": format!("/subscriptions/{}/resourcegroups/ferrid-agents/providers/Microsoft.Compute/virtualMachines/worker-1", GENERATED.subscription),
    })
}

fn identity_config() -> AzureConfig {
    let mut c = generated_config(&[GENERATED.subscription]);
    c.identity = Some(IdentityConfig::new(RESOURCE, &[TENANT]));
    c
}

fn attestor_with(s: &Signer) -> AzureAttestor {
    AzureAttestor::with_identity_keys(&identity_config(), s.keys())
        .unwrap()
        .with_nonce_source(Arc::new(|| GENERATED.nonce.to_owned()))
}

async fn with_token(a: &AzureAttestor, token: &str) -> Result<Attested, AttestError> {
    let payload = json!({"token": token}).to_string().into_bytes();
    attest_with(a, &payload, GENERATED.nonce, answer(&der(GENERATED.file)), NOW).await
}

#[tokio::test]
async fn a_managed_identity_token_adds_tenant_resource_group_and_identity() {
    let s = signer("k1");
    let a = attestor_with(&s);
    let got = with_token(&a, &s.sign(&claims())).await.unwrap();
    assert_eq!(got.agent_path, [GENERATED.subscription, GENERATED.vm_id]);
    assert_eq!(
        got.selectors,
        [
            format!("subscription:{}", GENERATED.subscription),
            format!("vm_id:{}", GENERATED.vm_id),
            format!("tenant:{TENANT}"),
            "resource_group:ferrid-agents".into(),
            "identity:a1b2c3d4-e5f6-4789-8abc-def012345678".into(),
        ]
    );
    // A v2 token, and a user-assigned identity (its own resource group, any subscription).
    let mut c = claims();
    c["iss"] = json!(format!("https://login.microsoftonline.com/{TENANT}/v2.0"));
    c["xms_mirid"] = json!(
        "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/identities/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ferrid-agent"
    );
    let got = with_token(&a, &s.sign(&c)).await.unwrap();
    assert!(got.selectors.contains(&"resource_group:identities".to_owned()), "{:?}", got.selectors);
    // The token is required once [azure.identity] is configured.
    rejected_with(
        attest_with(&a, b"{}", GENERATED.nonce, answer(&der(GENERATED.file)), NOW).await,
        "requires a managed identity token",
    );
}

#[tokio::test]
async fn every_bad_token_gets_a_precise_refusal() {
    let s = signer("k1");
    let a = attestor_with(&s);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        s.sign(&c)
    };
    let other_tenant = "0f0e0d0c-0b0a-4909-8807-060504030201";
    rejected_with(with_token(&a, &with(&|c| c["tid"] = json!(other_tenant))).await, "not in allowed_tenants");
    rejected_with(
        with_token(
            &a,
            &with(&|c| {
                c.as_object_mut().unwrap().remove("tid");
            }),
        )
        .await,
        "no tenant",
    );
    rejected_with(
        with_token(&a, &with(&|c| c["aud"] = json!("https://management.azure.com/"))).await,
        "audience",
    );
    rejected_with(
        with_token(&a, &with(&|c| c["iss"] = json!(format!("https://sts.windows.net/{other_tenant}/"))))
            .await,
        "issuer",
    );
    assert!(matches!(
        with_token(&a, &with(&|c| c["exp"] = json!(NOW - 3600))).await,
        Err(AttestError::Expired(_))
    ));
    rejected_with(
        with_token(
            &a,
            &with(&|c| {
                c.as_object_mut().unwrap().remove("xms_mirid");
            }),
        )
        .await,
        "xms_mirid",
    );
    rejected_with(
        with_token(&a, &with(&|c| c["xms_mirid"] = json!("/subscriptions/99999999-2222-3333-4444-555555555555/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm"))).await,
        "belongs to a VM in subscription 99999999",
    );
    // Signed by another key with the same kid; an unknown kid.
    rejected_with(with_token(&a, &signer("k1").sign(&claims())).await, "signature does not verify");
    rejected_with(with_token(&a, &signer("k2").sign(&claims())).await, "no trusted key");
    // alg: none.
    let body = s.sign(&claims()).split('.').nth(1).unwrap().to_owned();
    rejected_with(
        with_token(&a, &format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{body}.")).await,
        "algorithm none",
    );
    // HS256 keyed with the public key (key confusion).
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let hs = jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(s.public_pem.as_bytes())).unwrap();
    rejected_with(with_token(&a, &hs).await, "algorithm HS256");
    // Oversized and malformed.
    assert!(matches!(
        with_token(&a, &"a".repeat(ferrid_jwt::MAX_TOKEN_BYTES + 1)).await,
        Err(AttestError::TooLarge { .. })
    ));
    assert!(matches!(with_token(&a, "a.b").await, Err(AttestError::Malformed(_))));
    // None of these reached the challenge: a bad token costs no IMDS round trip.
    let mut ch = ferrid_attest::testkit::ScriptedChallenger::new(|_: &[u8]| panic!("challenged"));
    assert!(a.attest(json!({"token": hs}).to_string().as_bytes(), &mut ch, at(NOW)).await.is_err());
    assert!(a.attest(b"{}", &mut NoChallenges, at(NOW)).await.is_err());
}

#[derive(Default)]
struct Entra {
    jwks: std::sync::Mutex<Value>,
    base: std::sync::Mutex<String>,
    hits: AtomicUsize,
}

async fn discovery(State(e): State<Arc<Entra>>) -> axum::Json<Value> {
    e.hits.fetch_add(1, Ordering::SeqCst);
    let base = e.base.lock().unwrap().clone();
    axum::Json(json!({
        "issuer": format!("{base}/{TENANT}/v2.0"),
        "jwks_uri": format!("{base}/{TENANT}/discovery/v2.0/keys"),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn keys(State(e): State<Arc<Entra>>) -> axum::Json<Value> {
    axum::Json(e.jwks.lock().unwrap().clone())
}

#[tokio::test]
async fn keys_come_from_oidc_discovery_of_allowed_tenants_only() {
    let s = signer("entra-1");
    let state = Arc::new(Entra::default());
    *state.jwks.lock().unwrap() = json!({"keys": [s.jwk]});
    let router = axum::Router::new()
        .route(&format!("/{TENANT}/v2.0/.well-known/openid-configuration"), get(discovery))
        .route(&format!("/{TENANT}/discovery/v2.0/keys"), get(keys))
        .with_state(state.clone());
    let addr = ferrid_test_util::serve(router, None).await;
    let base = format!("http://127.0.0.1:{}", addr.port());
    *state.base.lock().unwrap() = base.clone();
    let mut cfg = identity_config();
    cfg.identity.as_mut().unwrap().authority = base;
    let a =
        AzureAttestor::from_config(&cfg).unwrap().with_nonce_source(Arc::new(|| GENERATED.nonce.to_owned()));
    // A token of another tenant fetches nothing.
    let mut c = claims();
    c["tid"] = json!("0f0e0d0c-0b0a-4909-8807-060504030201");
    rejected_with(with_token(&a, &s.sign(&c)).await, "not in allowed_tenants");
    assert_eq!(state.hits.load(Ordering::SeqCst), 0);
    with_token(&a, &s.sign(&claims())).await.unwrap();
    with_token(&a, &s.sign(&claims())).await.unwrap();
    assert_eq!(state.hits.load(Ordering::SeqCst), 1, "discovered once, then cached");
}
