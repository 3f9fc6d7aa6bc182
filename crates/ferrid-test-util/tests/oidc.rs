//! The loopback OIDC issuer, as a relying party sees it: `ferrid-jwt` discovers its
//! keys, verifies its tokens and follows a key rotation.
use ferrid_jwt::Expectations;
use ferrid_jwt::remote::{KeySource, RemoteKeys, RemoteKeysConfig};
use ferrid_test_util::jwt::Signer;
use ferrid_test_util::oidc::Issuer;
use serde_json::{Value, json};

const NOW: i64 = 1_800_000_000;

fn claims(issuer: &Issuer) -> Value {
    json!({"iss": issuer.url(), "aud": "ferrid", "sub": "alice", "iat": NOW, "exp": NOW + 300})
}

#[tokio::test]
async fn discovery_finds_the_keys_that_verify_its_tokens_and_rotation_is_followed() {
    let issuer = Issuer::start(Signer::es256("k1")).await;
    assert!(issuer.url().starts_with("http://127.0.0.1:"), "{}", issuer.url());
    assert_eq!(issuer.jwks_url(), format!("{}/jwks", issuer.url()));
    assert_eq!(issuer.signer().kid, "k1");
    let remote =
        RemoteKeys::new(RemoteKeysConfig::new(KeySource::Discovery { issuer: issuer.url().into() })).unwrap();
    let want = Expectations::new(Some(issuer.url().into()), Some("ferrid".into()));
    let v = remote.verify(&issuer.sign(&claims(&issuer)), &want, NOW).await.unwrap();
    assert_eq!(v.str("sub"), Some("alice"));
    assert_eq!(issuer.jwks_fetches(), 1);

    // Rotation: only the new key is published; its first token makes the relying party
    // refetch, and the old key's tokens no longer verify once that happened.
    let next = Signer::es256("k2");
    issuer.publish(&[&next]);
    remote.verify(&next.sign(&claims(&issuer)), &want, NOW + 31).await.unwrap();
    assert_eq!(issuer.jwks_fetches(), 2);
    remote.verify(&issuer.sign(&claims(&issuer)), &want, NOW + 62).await.unwrap_err();
}

#[tokio::test]
async fn the_discovery_document_names_the_issuer_and_its_algorithm() {
    let issuer = Issuer::start(Signer::rs256("r1")).await;
    let addr = issuer.url().trim_start_matches("http://").to_owned();
    let body = http_get(&addr, "/.well-known/openid-configuration").await;
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["issuer"], issuer.url());
    assert_eq!(doc["jwks_uri"], issuer.jwks_url());
    assert_eq!(doc["id_token_signing_alg_values_supported"], json!(["RS256"]));
    let jwks: Value = serde_json::from_str(&http_get(&addr, "/jwks").await).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], "r1");
    assert_eq!(issuer.jwks_fetches(), 1);
}

/// The body of `GET path` over HTTP/1.1 (no client library needed for two requests).
async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}
