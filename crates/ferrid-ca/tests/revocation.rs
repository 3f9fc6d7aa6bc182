//! What the CA does for revocation: issuance floors after a SPIFFE-ID cut-off, and
//! Security Event Tokens signed with the JWT key.
mod common;

use base64::Engine;
use common::*;
use ferrid_ca::{JwtSvidRequest, KeyAlgorithm, X509SvidRequest, generate_key_and_csr};
use serde_json::{Map, Value, json};

fn x509_nb(ca: &ferrid_ca::Authority, path: &str) -> i64 {
    let (_, csr) = generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    ca.mint_x509_svid(&X509SvidRequest { csr_der: &csr, spiffe_id: &id(path), ttl: None, dns_names: &[] })
        .unwrap()
        .not_before
}

fn jwt_iat(ca: &ferrid_ca::Authority, path: &str) -> i64 {
    let aud = vec!["a".to_owned()];
    let t = ca
        .mint_jwt_svid(&JwtSvidRequest {
            spiffe_id: &id(path),
            audience: &aud,
            ttl: None,
            extra_claims: None,
        })
        .unwrap()
        .token;
    let payload =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t.split('.').nth(1).unwrap()).unwrap();
    serde_json::from_slice::<Value>(&payload).unwrap()["iat"].as_i64().unwrap()
}

#[test]
fn an_issue_floor_keeps_replacements_after_the_cutoff_and_only_for_that_id() {
    let (ca, clock) = authority();
    let backdated = x509_nb(&ca, "/web");
    assert!(backdated < T0, "X.509-SVIDs are backdated for clock skew");
    ca.set_issue_floor(&id("/web"), T0, T0 + 600);
    assert_eq!(x509_nb(&ca, "/web"), T0, "not backdated below the cut-off");
    assert_eq!(x509_nb(&ca, "/api"), backdated, "other IDs are untouched");
    // Minted inside the cut-off's second (the server waits for it, but the CA holds regardless).
    ca.set_issue_floor(&id("/web"), T0 + 1, T0 + 600);
    assert_eq!(jwt_iat(&ca, "/web"), T0 + 1);
    assert_eq!(jwt_iat(&ca, "/api"), T0);
    // Floors only rise, and end at `until`.
    ca.set_issue_floor(&id("/web"), T0 - 100, T0 + 600);
    assert_eq!(x509_nb(&ca, "/web"), T0 + 1);
    clock.advance(time::Duration::seconds(601));
    assert!(x509_nb(&ca, "/web") < T0 + 601, "the floor expired; backdating is back");
}

#[test]
fn security_events_are_signed_by_the_active_jwt_key_with_their_own_type() {
    let (ca, _) = authority();
    let mut claims = Map::new();
    claims.insert("jti".into(), "set-1".into());
    claims.insert("events".into(), json!({"https://example/ev": {}}));
    let (token, kid) = ca.sign_security_event(claims).unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(header["typ"], "secevent+jwt");
    assert_eq!(header["kid"], kid.as_str());
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&ca.bundle().jwt_jwks_json()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    let got = jsonwebtoken::decode::<Value>(&token, &key, &v).unwrap().claims;
    assert_eq!(got["jti"], "set-1");
}
