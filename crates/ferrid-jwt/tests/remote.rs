//! OIDC discovery and the refreshed JWKS cache, against a local issuer.
//!
//! No public issuer is reachable from a test machine: a loopback server serves the
//! documents as OIDC Discovery 1.0 and RFC 7517 describe them (`/.well-known/
//! openid-configuration` with `issuer` and `jwks_uri`; a JWKS), over plain HTTP or over
//! TLS with a throwaway CA.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use ferrid_jwt::remote::{KeySource, RemoteKeys, RemoteKeysConfig};
use ferrid_jwt::{Expectations, JwtError};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const NOW: i64 = 1_800_000_000;

struct Signer {
    kid: String,
    enc: EncodingKey,
    jwk: Value,
}

fn signer(kid: &str) -> Signer {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let enc = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
    // The public point, uncompressed: 0x04 || x || y.
    let raw = kp.public_key_raw();
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                     "x": b64(&raw[1..33]), "y": b64(&raw[33..65])});
    Signer { kid: kid.into(), enc, jwk }
}

impl Signer {
    fn token(&self, issuer: &str) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        let claims = json!({"iss": issuer, "aud": "ferrid", "sub": "job", "exp": NOW + 600, "iat": NOW});
        jsonwebtoken::encode(&h, &claims, &self.enc).unwrap()
    }
}

#[derive(Default)]
struct Issuer {
    /// The issuer the discovery document claims (empty: the server's own URL).
    claimed_issuer: Mutex<String>,
    /// `jwks_uri` override (empty: the server's own `/jwks`).
    jwks_uri: Mutex<String>,
    keys: Mutex<Vec<Value>>,
    /// Extra bytes of padding in the JWKS, to test the size limit.
    padding: Mutex<usize>,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
    base: Mutex<String>,
}

async fn discovery(State(s): State<Arc<Issuer>>) -> axum::Json<Value> {
    s.discovery_hits.fetch_add(1, Ordering::SeqCst);
    let base = s.base.lock().unwrap().clone();
    let claimed = s.claimed_issuer.lock().unwrap().clone();
    let jwks = s.jwks_uri.lock().unwrap().clone();
    axum::Json(json!({
        "issuer": if claimed.is_empty() { base.clone() } else { claimed },
        "jwks_uri": if jwks.is_empty() { format!("{base}/jwks") } else { jwks },
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
}

async fn jwks(State(s): State<Arc<Issuer>>) -> axum::Json<Value> {
    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let pad = "x".repeat(*s.padding.lock().unwrap());
    axum::Json(json!({"keys": *s.keys.lock().unwrap(), "padding": pad}))
}

async fn start(tls: Option<&ferrid_test_util::TestTls>) -> (Arc<Issuer>, String) {
    let state = Arc::new(Issuer::default());
    let router = axum::Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .with_state(state.clone());
    let addr = ferrid_test_util::serve(router, tls.map(|t| t.server_config.clone())).await;
    let base = match tls {
        Some(_) => format!("https://localhost:{}", addr.port()),
        None => format!("http://127.0.0.1:{}", addr.port()),
    };
    *state.base.lock().unwrap() = base.clone();
    (state, base)
}

fn keys_for(issuer: &str) -> RemoteKeys {
    RemoteKeys::new(RemoteKeysConfig::new(KeySource::Discovery { issuer: issuer.into() })).unwrap()
}

fn want(issuer: &str) -> Expectations {
    Expectations::new(Some(issuer.into()), Some("ferrid".into()))
}

#[tokio::test]
async fn discovery_fetches_once_then_serves_from_the_cache() {
    let (iss, base) = start(None).await;
    let a = signer("a");
    iss.keys.lock().unwrap().push(a.jwk.clone());
    let keys = keys_for(&base);
    for _ in 0..5 {
        let v = keys.verify(&a.token(&base), &want(&base), NOW).await.unwrap();
        assert_eq!(v.str("sub"), Some("job"));
    }
    assert_eq!(iss.discovery_hits.load(Ordering::SeqCst), 1);
    assert_eq!(iss.jwks_hits.load(Ordering::SeqCst), 1);
    assert_eq!(keys.fetches(), 1);
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_on_its_first_token_and_made_up_kids_are_rate_limited() {
    let (iss, base) = start(None).await;
    let a = signer("a");
    iss.keys.lock().unwrap().push(a.jwk.clone());
    let keys = keys_for(&base);
    keys.verify(&a.token(&base), &want(&base), NOW).await.unwrap();

    // The issuer rotates to key b. The first b token, 31 s later, triggers a refresh.
    let b = signer("b");
    iss.keys.lock().unwrap().push(b.jwk.clone());
    keys.verify(&b.token(&base), &want(&base), NOW + 31).await.unwrap();
    assert_eq!(iss.jwks_hits.load(Ordering::SeqCst), 2);

    // Within 30 s of that refresh, an unknown kid causes no fetch; after it, a flood of
    // tokens with an unknown kid costs one fetch per interval.
    keys.verify(&signer("c").token(&base), &want(&base), NOW + 45).await.unwrap_err();
    assert_eq!(iss.jwks_hits.load(Ordering::SeqCst), 2);
    let forged = signer("made-up");
    for i in 0..50 {
        let e = keys.verify(&forged.token(&base), &want(&base), NOW + 70 + i % 5).await.unwrap_err();
        assert_eq!(e, JwtError::UnknownKey(Some("made-up".into())));
    }
    assert_eq!(iss.jwks_hits.load(Ordering::SeqCst), 3, "one refresh for the whole flood");
    // After the interval, one more.
    keys.verify(&forged.token(&base), &want(&base), NOW + 120).await.unwrap_err();
    assert_eq!(iss.jwks_hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn stale_keys_are_refetched_and_kept_when_the_issuer_is_down() {
    let (iss, base) = start(None).await;
    let a = signer("a");
    iss.keys.lock().unwrap().push(a.jwk.clone());
    let mut cfg = RemoteKeysConfig::new(KeySource::Discovery { issuer: base.clone() });
    cfg.max_age = Duration::from_secs(60);
    let keys = RemoteKeys::new(cfg).unwrap();
    keys.verify(&a.token(&base), &want(&base), NOW).await.unwrap();
    keys.verify(&a.token(&base), &want(&base), NOW + 59).await.unwrap();
    assert_eq!(iss.jwks_hits.load(Ordering::SeqCst), 1);
    keys.verify(&a.token(&base), &want(&base), NOW + 61).await.unwrap();
    assert_eq!(iss.jwks_hits.load(Ordering::SeqCst), 2, "refetched when older than max_age");

    // The issuer now serves a broken document: the cached keys keep working.
    *iss.jwks_uri.lock().unwrap() = "https://nowhere.invalid/jwks".into();
    keys.verify(&a.token(&base), &want(&base), NOW + 200).await.unwrap();
    assert_eq!(keys.fetches(), 2);
}

#[tokio::test]
async fn discovery_must_name_the_configured_issuer() {
    let (iss, base) = start(None).await;
    let a = signer("a");
    iss.keys.lock().unwrap().push(a.jwk.clone());
    *iss.claimed_issuer.lock().unwrap() = "https://evil.example".into();
    let e = keys_for(&base).verify(&a.token(&base), &want(&base), NOW).await.unwrap_err();
    let JwtError::KeysUnavailable(msg) = e else { panic!("{e:?}") };
    assert!(msg.contains("https://evil.example") && msg.contains("§4.3"), "{msg}");
    assert_eq!(iss.jwks_hits.load(Ordering::SeqCst), 0, "no keys fetched from an impostor");
}

#[tokio::test]
async fn a_jwks_uri_over_plain_http_to_another_host_is_refused() {
    let (iss, base) = start(None).await;
    let a = signer("a");
    iss.keys.lock().unwrap().push(a.jwk.clone());
    *iss.jwks_uri.lock().unwrap() = "http://keys.example.com/jwks".into();
    let e = keys_for(&base).verify(&a.token(&base), &want(&base), NOW).await.unwrap_err();
    assert!(matches!(&e, JwtError::KeysUnavailable(m) if m.contains("scheme http is not allowed")), "{e:?}");
}

#[test]
fn an_issuer_over_plain_http_is_refused_at_configuration() {
    for bad in ["http://issuer.example.com", "ftp://127.0.0.1/x", "not a url"] {
        let e =
            RemoteKeys::new(RemoteKeysConfig::new(KeySource::Discovery { issuer: bad.into() })).unwrap_err();
        assert!(matches!(e, JwtError::KeysUnavailable(_)), "{bad}: {e:?}");
    }
}

#[tokio::test]
async fn an_oversized_jwks_is_refused() {
    let (iss, base) = start(None).await;
    let a = signer("a");
    iss.keys.lock().unwrap().push(a.jwk.clone());
    *iss.padding.lock().unwrap() = ferrid_jwt::remote::MAX_DOCUMENT_BYTES + 1;
    let e = keys_for(&base).verify(&a.token(&base), &want(&base), NOW).await.unwrap_err();
    assert!(matches!(&e, JwtError::KeysUnavailable(m) if m.contains("over")), "{e:?}");
}

#[tokio::test]
async fn a_jwks_of_only_unusable_keys_is_an_error_and_usable_ones_are_picked_out() {
    let (iss, base) = start(None).await;
    let a = signer("a");
    iss.keys.lock().unwrap().extend([
        json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}),
        json!({"kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB"}),
        json!({"kty": "weird", "kid": "w"}),
    ]);
    let keys = keys_for(&base);
    let e = keys.verify(&a.token(&base), &want(&base), NOW).await.unwrap_err();
    assert!(matches!(&e, JwtError::KeysUnavailable(m) if m.contains("no usable signing keys")), "{e:?}");
    iss.keys.lock().unwrap().push(a.jwk.clone());
    keys.verify(&a.token(&base), &want(&base), NOW + 31).await.unwrap();
}

#[tokio::test]
async fn https_with_a_configured_ca_works_and_an_unknown_ca_fails() {
    let tls = ferrid_test_util::TestTls::new(&["localhost"]);
    let (iss, base) = start(Some(&tls)).await;
    let a = signer("a");
    iss.keys.lock().unwrap().push(a.jwk.clone());
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    let mut cfg = RemoteKeysConfig::new(KeySource::Discovery { issuer: base.clone() });
    cfg.ca_file = Some(ca);
    RemoteKeys::new(cfg).unwrap().verify(&a.token(&base), &want(&base), NOW).await.unwrap();

    // The same server, trusted through another CA: the TLS handshake fails.
    let other = ferrid_test_util::TestTls::new(&["localhost"]);
    let ca2 = dir.path().join("other.pem");
    std::fs::write(&ca2, &other.ca_pem).unwrap();
    let mut cfg = RemoteKeysConfig::new(KeySource::Discovery { issuer: base.clone() });
    cfg.ca_file = Some(ca2);
    let e = RemoteKeys::new(cfg).unwrap().verify(&a.token(&base), &want(&base), NOW).await.unwrap_err();
    assert!(matches!(e, JwtError::KeysUnavailable(_)), "{e:?}");
    assert_eq!(iss.discovery_hits.load(Ordering::SeqCst), 1, "the untrusted client never got a document");
}

#[tokio::test]
async fn a_jwks_url_source_skips_discovery() {
    let (iss, base) = start(None).await;
    let a = signer("a");
    iss.keys.lock().unwrap().push(a.jwk.clone());
    let keys =
        RemoteKeys::new(RemoteKeysConfig::new(KeySource::Jwks { url: format!("{base}/jwks") })).unwrap();
    keys.verify(&a.token(&base), &want(&base), NOW).await.unwrap();
    assert_eq!(iss.discovery_hits.load(Ordering::SeqCst), 0);
    assert_eq!(iss.jwks_hits.load(Ordering::SeqCst), 1);
}
