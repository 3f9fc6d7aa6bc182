//! The k8s_psat attestor against real service-account tokens (tests/data, see its
//! README) at their own time and at today's, and against tokens signed here for every
//! negative case. There is no Kubernetes API server on this machine, so verification
//! here is the offline mode: the issuer's published keys.
use std::collections::BTreeMap;
use std::path::Path;

use ferrid_attest::testkit;
use ferrid_attest::{AttestError, Attested, NoChallenges, NodeAttestor};
use ferrid_attest_k8s_psat::{ClusterConfig, K8sPsatAttestor, PsatConfig, payload};
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

fn cluster(audience: &str, issuer: Option<&str>, allowed: &[&str]) -> ClusterConfig {
    ClusterConfig {
        audience: audience.into(),
        issuer: issuer.map(Into::into),
        allowed_service_accounts: allowed.iter().map(|s| (*s).to_owned()).collect(),
        ..ClusterConfig::default()
    }
}

async fn attest(a: &K8sPsatAttestor, cluster: &str, token: &str, now: i64) -> Result<Attested, AttestError> {
    a.attest(&payload(cluster, token), &mut NoChallenges, at(now)).await
}

fn rejected_with(r: Result<Attested, AttestError>, needle: &str) {
    match r {
        Err(AttestError::Rejected(m)) if m.contains(needle) => {}
        other => panic!("expected a rejection mentioning {needle:?}, got {other:?}"),
    }
}

// --- Real tokens -------------------------------------------------------------------

/// minikube, Kubernetes 1.30+ bound token with node claims, issuer JWKS from
/// /openid/v1/jwks. Valid 1730720733..1730727933.
async fn minikube(allowed: &[&str], audience: &str, issuer: &str) -> K8sPsatAttestor {
    let mut cfg = PsatConfig::default();
    let mut c = cluster(audience, Some(issuer), allowed);
    c.jwks_file = Some(data("bound-token-with-node/jwks.json"));
    cfg.clusters.insert("minikube".into(), c);
    K8sPsatAttestor::from_config(&cfg).await.unwrap()
}

#[tokio::test]
async fn real_bound_token_with_node_claims_attests_at_its_time() {
    let a = minikube(&["default:svc1-sa"], "gcp-sts-audience", "https://some-address").await;
    let token = read("bound-token-with-node/token.jwt");
    let got = attest(&a, "minikube", &token, 1_730_720_733 + 60).await.unwrap();
    assert_eq!(got.agent_path.len(), 2);
    assert_eq!(got.agent_path[0], "minikube");
    assert!(got.agent_path[1].starts_with("2d0b5885-"), "{:?}", got.agent_path);
    for s in ["cluster:minikube", "agent_ns:default", "agent_sa:svc1-sa", "agent_node_name:minikube"] {
        assert!(got.selectors.contains(&s.to_owned()), "{s} in {:?}", got.selectors);
    }
    assert!(got.selectors.iter().any(|s| s.starts_with("agent_pod_name:myapp-deployment-")));
    assert!(got.selectors.iter().any(|s| s.starts_with("agent_pod_uid:35275f74-")));
    assert!(got.can_reattest && got.replay_key.is_none());
}

#[tokio::test]
async fn real_bound_token_is_refused_today_and_under_the_wrong_policy() {
    let token = read("bound-token-with-node/token.jwt");
    let when = 1_730_720_733 + 60;
    let ok = minikube(&["default:svc1-sa"], "gcp-sts-audience", "https://some-address").await;
    assert!(matches!(attest(&ok, "minikube", &token, TODAY).await, Err(AttestError::Expired(_))));
    rejected_with(
        attest(
            &minikube(&["kube-system:ferrid-agent"], "gcp-sts-audience", "https://some-address").await,
            "minikube",
            &token,
            when,
        )
        .await,
        "not allowed",
    );
    rejected_with(
        attest(
            &minikube(&["default:svc1-sa"], "ferrid-server", "https://some-address").await,
            "minikube",
            &token,
            when,
        )
        .await,
        "audience",
    );
    rejected_with(
        attest(
            &minikube(&["default:svc1-sa"], "gcp-sts-audience", "https://other").await,
            "minikube",
            &token,
            when,
        )
        .await,
        "issuer",
    );
    rejected_with(attest(&ok, "elsewhere", &token, when).await, "not configured");
}

/// HashiCorp's vault-plugin-auth-kubernetes fixtures: an RSA public key for minikube.
async fn vault(allowed: &[&str], key: &str) -> K8sPsatAttestor {
    let mut cfg = PsatConfig::default();
    let mut c = cluster("kubernetes.default.svc", Some("kubernetes/serviceaccount"), allowed);
    c.public_key_files = vec![data(key)];
    cfg.clusters.insert("vault".into(), c);
    K8sPsatAttestor::from_config(&cfg).await.unwrap()
}

#[tokio::test]
async fn real_projected_token_without_node_claims_is_refused_precisely() {
    let a = vault(&["default:default"], "vault-plugin-tokens/testMinikubePubKey.pem").await;
    // Signature, issuer, audience and time all pass; the token predates node claims.
    let token = read("vault-plugin-tokens/jwtProjectedData.jwt");
    rejected_with(attest(&a, "vault", &token, 1_604_082_797 + 10).await, "no node claim");
    rejected_with(attest(&a, "vault", &token, TODAY).await, "no node claim");
    // Its expired sibling.
    let expired = read("vault-plugin-tokens/jwtProjectedDataExpired.jwt");
    assert!(matches!(attest(&a, "vault", &expired, TODAY).await, Err(AttestError::Expired(_))));
    // Under a policy that does not list its account, that is what is said first.
    let strict = vault(&["kube-system:ferrid-agent"], "vault-plugin-tokens/testMinikubePubKey.pem").await;
    rejected_with(
        attest(&strict, "vault", &token, 1_604_082_797 + 10).await,
        "default:default is not allowed",
    );
}

#[tokio::test]
async fn real_legacy_and_forged_tokens_are_refused() {
    let a = vault(&["default:vault-auth"], "vault-plugin-tokens/testRSACert.pem").await;
    // Legacy secret-based token: valid signature under the cluster certificate, but no
    // audience and no expiry.
    rejected_with(attest(&a, "vault", &read("vault-plugin-tokens/jwtData.jwt"), TODAY).await, "legacy");
    // A signature that matches no key.
    rejected_with(
        attest(&a, "vault", &read("vault-plugin-tokens/jwtWithBadSigningKey.jwt"), TODAY).await,
        "signature does not verify",
    );
    // The legacy signature itself is sound: verify it without the PSAT policy.
    let keys = KeySet::from_pem(read("vault-plugin-tokens/testRSACert.pem").as_bytes()).unwrap();
    let mut loose = ferrid_jwt::Expectations::new(None, None);
    loose.require_exp = false;
    let v = ferrid_jwt::verify(&read("vault-plugin-tokens/jwtData.jwt"), &keys, &loose, TODAY).unwrap();
    assert_eq!(v.str("sub"), Some("system:serviceaccount:default:vault-auth"));
    // ES384, with its EC key.
    let ec = KeySet::from_pem(read("vault-plugin-tokens/ecdsaKey.pem").as_bytes()).unwrap();
    let v = ferrid_jwt::verify(&read("vault-plugin-tokens/jwtECDSASigned.jwt"), &ec, &loose, TODAY).unwrap();
    assert_eq!(v.algorithm, Algorithm::ES384);
    assert!(
        ferrid_jwt::verify(&read("vault-plugin-tokens/jwtECDSASigned.jwt"), &keys, &loose, TODAY).is_err()
    );
}

// --- Tokens signed here, one per negative case ---------------------------------------

const NOW: i64 = 1_800_000_000;

struct Signer {
    enc: EncodingKey,
    public_pem: String,
}

fn signer() -> Signer {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    Signer {
        enc: EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        public_pem: kp.public_key_pem(),
    }
}

fn claims() -> Value {
    json!({
        "iss": "https://k8s.test", "aud": ["ferrid-server"], "iat": NOW, "nbf": NOW, "exp": NOW + 3600,
        "sub": "system:serviceaccount:ferrid:agent",
        "kubernetes.io": {
            "namespace": "ferrid",
            "serviceaccount": {"name": "agent", "uid": "sa-uid"},
            "pod": {"name": "ferrid-agent-x7", "uid": "pod-uid"},
            "node": {"name": "worker-1", "uid": "0b5e7a1c-node"}
        }
    })
}

fn sign(s: &Signer, c: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::ES256), c, &s.enc).unwrap()
}

/// Clusters `a` and `b`, each with its own issuer key.
fn two_clusters(a: &Signer, b: &Signer) -> K8sPsatAttestor {
    let mut cfg = PsatConfig::default();
    cfg.clusters.insert("a".into(), cluster("ferrid-server", Some("https://k8s.test"), &["ferrid:agent"]));
    cfg.clusters.insert("b".into(), cluster("ferrid-server", Some("https://k8s.test"), &["ferrid:agent"]));
    let keys: BTreeMap<String, KeySet> = [
        ("a".to_owned(), KeySet::from_pem(a.public_pem.as_bytes()).unwrap()),
        ("b".to_owned(), KeySet::from_pem(b.public_pem.as_bytes()).unwrap()),
    ]
    .into();
    K8sPsatAttestor::with_keys(&cfg, keys).unwrap()
}

#[tokio::test]
async fn every_negative_case_gets_a_precise_refusal() {
    let (sa, sb) = (signer(), signer());
    let att = two_clusters(&sa, &sb);
    let good = sign(&sa, &claims());
    let ok = attest(&att, "a", &good, NOW + 5).await.unwrap();
    assert_eq!(ok.agent_path, ["a", "0b5e7a1c-node"]);

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        sign(&sa, &c)
    };
    rejected_with(
        attest(&att, "a", &with(&|c| c["aud"] = json!(["kubernetes.default.svc"])), NOW).await,
        "audience",
    );
    assert!(matches!(attest(&att, "a", &good, NOW + 3600 + 31).await, Err(AttestError::Expired(_))));
    rejected_with(attest(&att, "a", &good, NOW - 120).await, "not valid before");
    rejected_with(attest(&att, "a", &with(&|c| c["iss"] = json!("https://evil.test")), NOW).await, "issuer");
    rejected_with(
        attest(&att, "a", &with(&|c| c["kubernetes.io"]["serviceaccount"]["name"] = json!("default")), NOW)
            .await,
        "ferrid:default is not allowed",
    );
    rejected_with(
        attest(&att, "a", &with(&|c| c["kubernetes.io"]["node"] = json!(null)), NOW).await,
        "no node claim",
    );
    rejected_with(
        attest(&att, "a", &with(&|c| c["kubernetes.io"]["node"]["uid"] = json!("../x")), NOW).await,
        "not a valid ID segment",
    );
    // Bad signature: cluster a's claims signed by cluster b's key.
    rejected_with(attest(&att, "a", &sign(&sb, &claims()), NOW).await, "signature does not verify");
    // A token for a different cluster: minted by a's issuer, presented as b.
    rejected_with(attest(&att, "b", &good, NOW).await, "signature does not verify");
    // alg: none.
    let body = good.split('.').nth(1).unwrap();
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{body}.");
    rejected_with(attest(&att, "a", &none, NOW).await, "algorithm none is not allowed");
    // HS256 keyed with the cluster's public key (algorithm confusion).
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(sa.public_pem.as_bytes()),
    )
    .unwrap();
    rejected_with(attest(&att, "a", &hs, NOW).await, "algorithm HS256 is not allowed");
    // Oversized and malformed.
    let big = payload("a", &"x".repeat(ferrid_jwt::MAX_TOKEN_BYTES + 10));
    assert!(matches!(att.attest(&big, &mut NoChallenges, at(NOW)).await, Err(AttestError::Malformed(_))));
    assert!(matches!(
        att.attest(br#"{"cluster":"a"}"#, &mut NoChallenges, at(NOW)).await,
        Err(AttestError::Malformed(_))
    ));
    assert!(matches!(
        att.attest(br#"{"cluster":"a","token":"x","extra":1}"#, &mut NoChallenges, at(NOW)).await,
        Err(AttestError::Malformed(_))
    ));
}

#[tokio::test]
async fn passes_the_attestor_contract() {
    let s = signer();
    let att = two_clusters(&s, &signer());
    testkit::assert_name_is_valid(&att);
    testkit::assert_rejects_garbage(&att, at(NOW)).await;
}

#[tokio::test]
async fn configuration_errors_name_the_cluster_and_the_problem() {
    let s = signer();
    let keys = || -> BTreeMap<String, KeySet> {
        [("c".to_owned(), KeySet::from_pem(s.public_pem.as_bytes()).unwrap())].into()
    };
    let one = |c: ClusterConfig, name: &str| {
        let mut cfg = PsatConfig::default();
        cfg.clusters.insert(name.into(), c);
        cfg
    };
    let e = K8sPsatAttestor::with_keys(&one(cluster("ferrid-server", None, &[]), "c"), keys()).unwrap_err();
    assert!(e.contains("cluster c") && e.contains("allowed_service_accounts"), "{e}");
    let e = K8sPsatAttestor::with_keys(&one(cluster("ferrid-server", None, &["nocolon"]), "c"), keys())
        .unwrap_err();
    assert!(e.contains("namespace:name"), "{e}");
    let e = K8sPsatAttestor::with_keys(&one(cluster("ferrid-server", None, &["a:b"]), "c/d"), keys())
        .unwrap_err();
    assert!(e.contains("cluster name"), "{e}");
    let e = K8sPsatAttestor::with_keys(&one(cluster("ferrid-server", None, &["a:b"]), "c"), BTreeMap::new())
        .unwrap_err();
    assert!(e.contains("no issuer keys"), "{e}");
    let mut c = cluster("ferrid-server", None, &["a:b"]);
    c.jwks_file = Some("/nonexistent/jwks.json".into());
    let e = K8sPsatAttestor::from_config(&one(c, "c")).await.unwrap_err();
    assert!(e.contains("/nonexistent/jwks.json"), "{e}");
}
