//! WIT-SVID minting checked against the SPIFFE WIT-SVID profile (header and claims),
//! verified independently with the `jsonwebtoken` crate against the published WIT JWKS.
mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use ferrid_ca::{CaError, WitSvidRequest, generate_wit_key};
use serde_json::Value;

fn part(token: &str, i: usize) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(i).unwrap()).unwrap()).unwrap()
}

/// §2: `alg`, `kid` and `typ: wit+jwt` are set; §3: `sub`, `exp`, `cnf.jwk` with `alg`
/// are set, `aud` is not; the signature verifies with the WIT bundle's key.
#[test]
fn header_claims_and_signature() {
    let (ca, _) = authority();
    let key = generate_wit_key().unwrap();
    let w = ca
        .mint_wit_svid(&WitSvidRequest { spiffe_id: &id("/web"), public_key_jwk: &key.public_jwk, ttl: None })
        .unwrap();
    let h = part(&w.token, 0);
    assert_eq!(h["typ"], "wit+jwt");
    assert_eq!(h["alg"], "ES256");
    assert_eq!(h["kid"], w.kid.as_str());
    let c = part(&w.token, 1);
    assert_eq!(c["sub"], "spiffe://example.org/web");
    assert_eq!(c["iat"], T0);
    assert_eq!(c["exp"], T0 + 300, "the JWT-SVID default TTL");
    assert_eq!(c["jti"], w.jti.as_str());
    assert!(c.get("aud").is_none(), "WIT-SVID §3.8: no aud");
    let public: Value = serde_json::from_str(&key.public_jwk).unwrap();
    assert_eq!(c["cnf"]["jwk"], public);
    assert_eq!(c["cnf"]["jwk"]["alg"], "ES256");

    let jwks: Value = serde_json::from_str(&ca.bundle().wit_jwks_json()).unwrap();
    assert!(jwks["keys"].as_array().unwrap().iter().all(|k| k["use"] == "wit-svid"));
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    let dk = jsonwebtoken::DecodingKey::from_jwk(set.find(&w.kid).unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(&w.token, &dk, &v).unwrap();

    // WIT-SVID §6.1: WIT key IDs are distinct from JWT-SVID key IDs, and the SPIFFE
    // bundle publishes both, each with its use.
    let bundle = ca.bundle();
    let jwt_kids: Vec<&str> = bundle.jwt_authorities.iter().map(|a| a.key_id.as_str()).collect();
    assert!(!jwt_kids.contains(&w.kid.as_str()), "{} is also a JWT-SVID kid", w.kid);
    assert!(!bundle.jwt_jwks_json().contains(&w.kid), "the JWT-SVID bundle must not verify WITs");
    let doc: Value = serde_json::from_str(&bundle.to_spiffe_json()).unwrap();
    let uses: Vec<(String, String)> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] != "x509-svid")
        .map(|k| (k["use"].as_str().unwrap().to_owned(), k["kid"].as_str().unwrap().to_owned()))
        .collect();
    assert!(uses.contains(&("wit-svid".to_owned(), w.kid.clone())), "{uses:?}");
    assert!(uses.contains(&("jwt-svid".to_owned(), jwt_kids[0].to_owned())), "{uses:?}");
}

#[test]
fn ttl_is_capped_and_foreign_ids_and_bad_keys_are_refused() {
    let (ca, _) = authority();
    let key = generate_wit_key().unwrap();
    let w = ca
        .mint_wit_svid(&WitSvidRequest {
            spiffe_id: &id("/web"),
            public_key_jwk: &key.public_jwk,
            ttl: Some(Duration::from_secs(60)),
        })
        .unwrap();
    assert_eq!(w.expires_at - w.issued_at, 60);
    let foreign = ferrid_types::SpiffeId::new("spiffe://other.org/web").unwrap();
    let e = ca
        .mint_wit_svid(&WitSvidRequest { spiffe_id: &foreign, public_key_jwk: &key.public_jwk, ttl: None })
        .unwrap_err();
    assert!(matches!(e, CaError::ForeignSpiffeId { .. }), "{e}");
    let e = ca
        .mint_wit_svid(&WitSvidRequest {
            spiffe_id: &id("/web"),
            public_key_jwk: &key.private_jwk,
            ttl: None,
        })
        .unwrap_err();
    assert!(matches!(e, CaError::InvalidJwk(_)) && e.is_client_error(), "{e}");
}
