//! One test per MUST of the SPIFFE JWT-SVID specification, verified independently with
//! the `jsonwebtoken` crate and the `spiffe` crate against the published bundle.
mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use ferrid_ca::{CaError, JwtSvidRequest};
use serde_json::Value;

fn mint(ca: &ferrid_ca::Authority, aud: &[&str]) -> Result<ferrid_ca::JwtSvid, CaError> {
    let aud: Vec<String> = aud.iter().map(|s| (*s).to_owned()).collect();
    ca.mint_jwt_svid(&JwtSvidRequest {
        spiffe_id: &id("/web"),
        audience: &aud,
        ttl: None,
        extra_claims: None,
    })
}

fn part(token: &str, i: usize) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(i).unwrap()).unwrap()).unwrap()
}

/// JWT-SVID §2: the header's `alg` MUST be one of the registered asymmetric algorithms
/// (never `none`); `typ`, when present, MUST be `JWT` or `JOSE`; `kid` names the key.
#[test]
fn header_alg_typ_kid() {
    let (ca, _) = authority();
    let t = mint(&ca, &["db"]).unwrap();
    let h = part(&t.token, 0);
    assert_eq!(h["alg"], "ES256");
    assert_eq!(h["typ"], "JWT");
    assert_eq!(h["kid"], t.kid.as_str());
    assert!(ca.bundle().jwt_authorities.iter().any(|a| a.key_id == t.kid));
}

/// §3: `sub` MUST be the SPIFFE ID; `aud` MUST be present with one or more values;
/// `exp` MUST be present. Ferrid always adds `iat` and `jti`.
#[test]
fn registered_claims() {
    let (ca, _) = authority();
    let t = mint(&ca, &["db"]).unwrap();
    let c = part(&t.token, 1);
    assert_eq!(c["sub"], "spiffe://example.org/web");
    assert_eq!(c["aud"], "db");
    assert_eq!(c["exp"], T0 + 300, "default 5 minutes");
    assert_eq!(c["iat"], T0);
    assert_eq!(c["jti"], t.jti.as_str());
    assert!(c.get("iss").is_none(), "no iss unless configured");
    let multi = part(&mint(&ca, &["a", "b"]).unwrap().token, 1);
    assert_eq!(multi["aud"], serde_json::json!(["a", "b"]));
    assert_ne!(mint(&ca, &["db"]).unwrap().jti, t.jti, "jti is unique");
}

#[test]
fn iss_when_configured() {
    let (ca, _) = authority_at(T0, |c| c.jwt_issuer = Some("https://issuer.example".into()));
    assert_eq!(part(&mint(&ca, &["db"]).unwrap().token, 1)["iss"], "https://issuer.example");
}

#[test]
fn audience_is_required_and_checked() {
    let (ca, _) = authority();
    assert!(matches!(mint(&ca, &[]), Err(CaError::InvalidAudience(_))));
    assert!(matches!(mint(&ca, &[""]), Err(CaError::InvalidAudience(_))));
    assert!(matches!(mint(&ca, &["a\nb"]), Err(CaError::InvalidAudience(_))));
}

#[test]
fn extra_claims_cannot_override_registered_ones() {
    let (ca, _) = authority();
    let extra: serde_json::Map<String, Value> =
        serde_json::from_str(r#"{"sub":"spiffe://example.org/admin","exp":99999999999,"task":"t-1"}"#)
            .unwrap();
    let aud = vec!["db".to_owned()];
    let t = ca
        .mint_jwt_svid(&JwtSvidRequest {
            spiffe_id: &id("/web"),
            audience: &aud,
            ttl: None,
            extra_claims: Some(&extra),
        })
        .unwrap();
    let c = part(&t.token, 1);
    assert_eq!(c["sub"], "spiffe://example.org/web");
    assert_eq!(c["exp"], T0 + 300);
    assert_eq!(c["task"], "t-1");
}

#[test]
fn verifies_with_jsonwebtoken_against_the_bundle_jwk() {
    let (ca, _) = authority_at(now_unix(), |_| {});
    let t = mint(&ca, &["db"]).unwrap();
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&ca.bundle().jwt_jwks_json()).unwrap();
    let jwk = jwks.find(&t.kid).expect("kid in bundle");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["db"]);
    let data = jsonwebtoken::decode::<Value>(&t.token, &key, &v).expect("valid signature");
    assert_eq!(data.claims["sub"], "spiffe://example.org/web");
    // A tampered payload fails.
    let mut parts: Vec<String> = t.token.split('.').map(str::to_owned).collect();
    parts[1] =
        URL_SAFE_NO_PAD.encode(br#"{"sub":"spiffe://example.org/admin","aud":"db","exp":99999999999}"#);
    assert!(jsonwebtoken::decode::<Value>(&parts.join("."), &key, &v).is_err());
}

#[test]
fn validates_with_the_spiffe_crate() {
    let (ca, _) = authority_at(now_unix(), |_| {});
    let t = mint(&ca, &["db"]).unwrap();
    let bundle =
        spiffe::JwtBundle::from_jwt_authorities(td(), ca.bundle().jwt_jwks_json().as_bytes()).unwrap();
    let mut set = spiffe::JwtBundleSet::new();
    set.add_bundle(bundle);
    let svid =
        spiffe::JwtSvid::parse_and_validate(&t.token, &set, &["db"]).expect("spiffe crate validates it");
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/web");
    assert!(spiffe::JwtSvid::parse_and_validate(&t.token, &set, &["other"]).is_err(), "wrong audience");
}

#[test]
fn p384_and_rsa_keys_sign_es384_and_rs256() {
    for (alg, name) in
        [(ferrid_ca::KeyAlgorithm::EcP384, "ES384"), (ferrid_ca::KeyAlgorithm::Rsa2048, "RS256")]
    {
        let (ca, _) = authority_at(now_unix(), |c| c.key_algorithm = alg);
        let t = mint(&ca, &["db"]).unwrap();
        assert_eq!(part(&t.token, 0)["alg"], name);
        let bundle =
            spiffe::JwtBundle::from_jwt_authorities(td(), ca.bundle().jwt_jwks_json().as_bytes()).unwrap();
        let mut set = spiffe::JwtBundleSet::new();
        set.add_bundle(bundle);
        spiffe::JwtSvid::parse_and_validate(&t.token, &set, &["db"])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Delegation tokens: `sub` is the principal acted for, the actor rides in the caller's
/// `act` claim, the reserved claims cannot be overridden, and a bad subject is refused.
#[test]
fn delegation_tokens_name_the_principal_in_sub() {
    let (ca, _) = authority();
    let mut extra = serde_json::Map::new();
    extra.insert("act".into(), serde_json::json!({"sub": "spiffe://example.org/planner"}));
    extra.insert("sub".into(), "spiffe://example.org/forged".into());
    let aud = vec!["search".to_owned()];
    let req =
        JwtSvidRequest { spiffe_id: &id("/planner"), audience: &aud, ttl: None, extra_claims: Some(&extra) };
    let t = ca.mint_delegation_token(&req, "alice@example.com").unwrap();
    let c = part(&t.token, 1);
    assert_eq!(c["sub"], "alice@example.com");
    assert_eq!(c["act"]["sub"], "spiffe://example.org/planner");
    assert_eq!(c["aud"], "search");
    for bad in ["", "a\nb"] {
        assert!(matches!(ca.mint_delegation_token(&req, bad), Err(CaError::InvalidSubject(_))), "{bad:?}");
    }
    let foreign = ferrid_types::SpiffeId::new("spiffe://other.org/planner").unwrap();
    let req = JwtSvidRequest { spiffe_id: &foreign, audience: &aud, ttl: None, extra_claims: None };
    assert!(matches!(ca.mint_delegation_token(&req, "alice"), Err(CaError::ForeignSpiffeId { .. })));
}
