//! WIT and WPT verification: WITs minted by a real `ferrid-ca` authority (and, for
//! malformed headers, by a stand-in issuer key), WPTs made with `create_wpt`.
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferrid_ca::{Authority, CaConfig, MemoryKeyStore, WitSvidRequest, generate_wit_key};
use ferrid_types::{ManualClock, SpiffeId, TrustDomain};
use ferrid_wimse::{
    RequestContext, TokenKind, WimseError, WptVerifier, create_wpt, sign_es256, token_hash, verify_wit,
};
use serde_json::{Value, json};

const T0: i64 = 1_768_435_200;
const AUD: &str = "https://orders.example.org/v1/orders";

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

struct Fixture {
    ca: Authority,
    key: ferrid_ca::WitKeyPair,
    wit: String,
    jwks: String,
}

fn fixture() -> Fixture {
    let clock = ManualClock::at_unix(T0);
    let ca =
        Authority::open(CaConfig::new(td()), Arc::new(MemoryKeyStore::new()), None, Arc::new(clock)).unwrap();
    let key = generate_wit_key().unwrap();
    let id = SpiffeId::new("spiffe://example.org/web").unwrap();
    let wit = ca
        .mint_wit_svid(&WitSvidRequest { spiffe_id: &id, public_key_jwk: &key.public_jwk, ttl: None })
        .unwrap()
        .token;
    let jwks = ca.bundle().wit_jwks_json();
    Fixture { ca, key, wit, jwks }
}

/// A stand-in issuer: a P-256 key published in a WIT bundle under `kid`.
struct Issuer {
    key: ferrid_ca::WitKeyPair,
    jwks: String,
}

fn issuer(key_use: &str) -> Issuer {
    let key = generate_wit_key().unwrap();
    let mut jwk: Value = serde_json::from_str(&key.public_jwk).unwrap();
    jwk["kid"] = "k1".into();
    jwk["use"] = key_use.into();
    Issuer { jwks: json!({ "keys": [jwk] }).to_string(), key }
}

fn wit_claims(workload: &ferrid_ca::WitKeyPair) -> Value {
    let cnf: Value = serde_json::from_str(&workload.public_jwk).unwrap();
    json!({ "sub": "spiffe://example.org/web", "exp": T0 + 300, "iat": T0, "jti": "w1", "cnf": { "jwk": cnf } })
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn a_wit_with_its_proof_authenticates_the_workload_once() {
    let f = fixture();
    let v = WptVerifier::new();
    let wpt = create_wpt(&f.wit, &f.key.private_jwk, AUD, 60, T0).unwrap();
    let ctx = RequestContext::new(AUD);
    let (wit, proof) = v.verify_request(Some(&f.wit), Some(&wpt), &f.jwks, &td(), &ctx, T0 + 1).unwrap();
    assert_eq!(wit.spiffe_id.to_string(), "spiffe://example.org/web");
    assert_eq!(wit.cnf_alg(), "ES256");
    assert_eq!(proof.expires_at, T0 + 60);
    // The same proof again is a replay.
    let e = v.verify_request(Some(&f.wit), Some(&wpt), &f.jwks, &td(), &ctx, T0 + 2).unwrap_err();
    assert!(matches!(e, WimseError::Replayed { .. }), "{e}");
    // A fresh proof is fine; query and fragment of the audience are ignored.
    let wpt = create_wpt(&f.wit, &f.key.private_jwk, &format!("{AUD}?page=2"), 60, T0).unwrap();
    v.verify(&wpt, &wit, &format!("{AUD}#x"), T0 + 3).unwrap();
}

#[test]
fn a_wit_without_proof_or_a_proof_without_wit_is_refused() {
    let f = fixture();
    let v = WptVerifier::new();
    let ctx = RequestContext::new(AUD);
    let e = v.verify_request(Some(&f.wit), None, &f.jwks, &td(), &ctx, T0).unwrap_err();
    assert_eq!(e, WimseError::MissingProof);
    let e = v.verify_request(Some(&f.wit), Some("  "), &f.jwks, &td(), &ctx, T0).unwrap_err();
    assert_eq!(e, WimseError::MissingProof);
    let wpt = create_wpt(&f.wit, &f.key.private_jwk, AUD, 60, T0).unwrap();
    let e = v.verify_request(None, Some(&wpt), &f.jwks, &td(), &ctx, T0).unwrap_err();
    assert_eq!(e, WimseError::MissingWit);
}

#[test]
fn wit_with_alg_none_is_refused() {
    let f = fixture();
    let kid = f.ca.bundle().jwt_authorities[0].key_id.clone();
    let claims = wit_claims(&f.key);
    for alg in ["none", "None"] {
        let token =
            format!("{}.{}.", b64(&json!({ "alg": alg, "typ": "wit+jwt", "kid": kid })), b64(&claims));
        let e = verify_wit(&token, &f.jwks, &td(), T0).unwrap_err();
        assert!(matches!(&e, WimseError::AlgorithmNotAllowed { kind: TokenKind::Wit, .. }), "{e}");
        assert!(e.to_string().contains("unsigned"), "{e}");
    }
}

#[test]
fn wit_signed_with_hmac_over_the_public_key_is_refused() {
    let f = fixture();
    let kid = f.ca.bundle().jwt_authorities[0].key_id.clone();
    // The classic confusion attack: the issuer's public key used as an HMAC secret.
    let secret = f.jwks.as_bytes();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("wit+jwt".into());
    header.kid = Some(kid);
    let token =
        jsonwebtoken::encode(&header, &wit_claims(&f.key), &jsonwebtoken::EncodingKey::from_secret(secret))
            .unwrap();
    let e = verify_wit(&token, &f.jwks, &td(), T0).unwrap_err();
    assert!(matches!(&e, WimseError::AlgorithmNotAllowed { alg, .. } if alg == "HS256"), "{e}");
    assert!(e.to_string().contains("HMAC"), "{e}");
}

#[test]
fn wit_with_wrong_or_missing_typ_is_refused() {
    let i = issuer("wit-svid");
    let workload = generate_wit_key().unwrap();
    for typ in ["JWT", "wpt+jwt", ""] {
        let token = sign_es256(&i.key.private_jwk, typ, Some("k1"), &wit_claims(&workload)).unwrap();
        let e = verify_wit(&token, &i.jwks, &td(), T0).unwrap_err();
        assert!(matches!(e, WimseError::WrongType { kind: TokenKind::Wit, expected: "wit+jwt", .. }), "{e}");
    }
    // The media type may carry its application/ prefix, in any case.
    let token =
        sign_es256(&i.key.private_jwk, "Application/WIT+JWT", Some("k1"), &wit_claims(&workload)).unwrap();
    verify_wit(&token, &i.jwks, &td(), T0).unwrap();
}

#[test]
fn expired_wit_is_refused() {
    let f = fixture();
    let e = verify_wit(&f.wit, &f.jwks, &td(), T0 + 300 + 31).unwrap_err();
    assert!(matches!(e, WimseError::Expired { kind: TokenKind::Wit, exp, .. } if exp == T0 + 300), "{e}");
    // And a verified WIT cannot carry proofs after it expires.
    let wit = verify_wit(&f.wit, &f.jwks, &td(), T0).unwrap();
    let wpt = create_wpt(&f.wit, &f.key.private_jwk, AUD, 60, T0 + 320).unwrap();
    let e = WptVerifier::new().verify(&wpt, &wit, AUD, T0 + 340).unwrap_err();
    assert!(matches!(e, WimseError::WitExpired { .. }), "{e}");
}

#[test]
fn foreign_trust_domain_is_refused() {
    let f = fixture();
    let other = TrustDomain::new("other.org").unwrap();
    let e = verify_wit(&f.wit, &f.jwks, &other, T0).unwrap_err();
    assert!(
        matches!(&e, WimseError::ForeignTrustDomain { trust_domain, .. } if trust_domain == "other.org"),
        "{e}"
    );
    // A bundle key of ours signing a sub in another trust domain is refused too.
    let i = issuer("wit-svid");
    let mut c = wit_claims(&i.key);
    c["sub"] = "spiffe://evil.org/web".into();
    let token = sign_es256(&i.key.private_jwk, "wit+jwt", Some("k1"), &c).unwrap();
    let e = verify_wit(&token, &i.jwks, &td(), T0).unwrap_err();
    assert!(matches!(e, WimseError::ForeignTrustDomain { .. }), "{e}");
    c["sub"] = "https://example.org/web".into();
    let token = sign_es256(&i.key.private_jwk, "wit+jwt", Some("k1"), &c).unwrap();
    assert!(matches!(verify_wit(&token, &i.jwks, &td(), T0), Err(WimseError::InvalidSubject { .. })));
}

#[test]
fn tampered_wit_is_refused() {
    let f = fixture();
    let parts: Vec<&str> = f.wit.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = "spiffe://example.org/admin".into();
    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    let e = verify_wit(&forged, &f.jwks, &td(), T0).unwrap_err();
    assert!(matches!(e, WimseError::BadSignature { kind: TokenKind::Wit, .. }), "{e}");
    // Swapping in an attacker's cnf key fails the same way.
    claims["cnf"]["jwk"] = serde_json::from_str(&generate_wit_key().unwrap().public_jwk).unwrap();
    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert!(matches!(verify_wit(&forged, &f.jwks, &td(), T0), Err(WimseError::BadSignature { .. })));
    assert!(matches!(verify_wit("a.b", &f.jwks, &td(), T0), Err(WimseError::Malformed { .. })));
    assert!(matches!(
        verify_wit(&"a".repeat(ferrid_wimse::MAX_TOKEN_BYTES + 1), &f.jwks, &td(), T0),
        Err(WimseError::TooLarge(TokenKind::Wit))
    ));
}

#[test]
fn wit_key_lookup_and_claims_are_strict() {
    let workload = generate_wit_key().unwrap();
    let sign =
        |i: &Issuer, kid: Option<&str>, c: &Value| sign_es256(&i.key.private_jwk, "wit+jwt", kid, c).unwrap();
    let i = issuer("wit-svid");
    let c = wit_claims(&workload);
    assert!(matches!(verify_wit(&sign(&i, None, &c), &i.jwks, &td(), T0), Err(WimseError::MissingKid)));
    let e = verify_wit(&sign(&i, Some("k2"), &c), &i.jwks, &td(), T0).unwrap_err();
    assert!(matches!(&e, WimseError::UnknownKey { kid } if kid == "k2"), "{e}");
    // A JWT-SVID key is not a WIT key (SPIFFE WIT-SVID §6.2).
    let j = issuer("jwt-svid");
    let e = verify_wit(&sign(&j, Some("k1"), &c), &j.jwks, &td(), T0).unwrap_err();
    assert!(matches!(&e, WimseError::KeyUse { key_use, .. } if key_use == "jwt-svid"), "{e}");
    let with = |k: &str, v: Value| {
        let mut c = c.clone();
        c[k] = v;
        c
    };
    let refused = |c: &Value| verify_wit(&sign(&i, Some("k1"), c), &i.jwks, &td(), T0).unwrap_err();
    assert!(matches!(refused(&with("aud", "x".into())), WimseError::InvalidClaim { claim: "aud", .. }));
    assert!(matches!(refused(&with("nbf", (T0 + 100).into())), WimseError::NotYetValid { .. }));
    assert!(matches!(refused(&with("exp", "soon".into())), WimseError::InvalidClaim { claim: "exp", .. }));
    let mut no_exp = c.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert!(matches!(refused(&no_exp), WimseError::MissingClaim { claim: "exp", .. }));
    let mut no_cnf = c.clone();
    no_cnf.as_object_mut().unwrap().remove("cnf");
    assert!(matches!(refused(&no_cnf), WimseError::MissingClaim { claim: "cnf", .. }));
    let mut cnf: Value = serde_json::from_str(&workload.private_jwk).unwrap();
    let e = refused(&with("cnf", json!({ "jwk": cnf.clone() })));
    assert!(matches!(&e, WimseError::InvalidConfirmationKey(m) if m.contains("\"d\"")), "{e}");
    cnf.as_object_mut().unwrap().remove("d");
    cnf.as_object_mut().unwrap().remove("alg");
    let e = refused(&with("cnf", json!({ "jwk": cnf.clone() })));
    assert!(matches!(&e, WimseError::InvalidConfirmationKey(m) if m.contains("no alg")), "{e}");
    cnf["alg"] = "HS256".into();
    assert!(matches!(
        refused(&with("cnf", json!({ "jwk": cnf.clone() }))),
        WimseError::InvalidConfirmationKey(_)
    ));
    cnf["alg"] = "RS256".into();
    let e = refused(&with("cnf", json!({ "jwk": cnf })));
    assert!(matches!(&e, WimseError::InvalidConfirmationKey(m) if m.contains("does not fit")), "{e}");
}

#[test]
fn wpt_signed_by_another_key_is_refused() {
    let f = fixture();
    let wit = verify_wit(&f.wit, &f.jwks, &td(), T0).unwrap();
    let thief = generate_wit_key().unwrap();
    let wpt = create_wpt(&f.wit, &thief.private_jwk, AUD, 60, T0).unwrap();
    let e = WptVerifier::new().verify(&wpt, &wit, AUD, T0).unwrap_err();
    assert!(matches!(e, WimseError::BadSignature { kind: TokenKind::Wpt, .. }), "{e}");
}

#[test]
fn wpt_bound_to_another_wit_is_refused() {
    let f = fixture();
    let wit = verify_wit(&f.wit, &f.jwks, &td(), T0).unwrap();
    let wpt = create_wpt("some.other.wit", &f.key.private_jwk, AUD, 60, T0).unwrap();
    let e = WptVerifier::new().verify(&wpt, &wit, AUD, T0).unwrap_err();
    assert_eq!(e, WimseError::WitHashMismatch);
}

#[test]
fn wpt_for_another_audience_is_refused() {
    let f = fixture();
    let wit = verify_wit(&f.wit, &f.jwks, &td(), T0).unwrap();
    let wpt = create_wpt(&f.wit, &f.key.private_jwk, "https://payments.example.org/v1", 60, T0).unwrap();
    let e = WptVerifier::new().verify(&wpt, &wit, AUD, T0).unwrap_err();
    assert!(matches!(&e, WimseError::AudienceMismatch { found, .. } if found[0].contains("payments")), "{e}");
}

#[test]
fn expired_or_long_lived_wpt_is_refused() {
    let f = fixture();
    let wit = verify_wit(&f.wit, &f.jwks, &td(), T0).unwrap();
    let v = WptVerifier::new();
    let wpt = create_wpt(&f.wit, &f.key.private_jwk, AUD, 10, T0).unwrap();
    let e = v.verify(&wpt, &wit, AUD, T0 + 10 + 31).unwrap_err();
    assert!(matches!(e, WimseError::Expired { kind: TokenKind::Wpt, .. }), "{e}");
    let wpt = create_wpt(&f.wit, &f.key.private_jwk, AUD, 3600, T0).unwrap();
    let e = v.verify(&wpt, &wit, AUD, T0).unwrap_err();
    assert!(matches!(e, WimseError::LifetimeTooLong { max_secs: 300, .. }), "{e}");
    let v = WptVerifier::new().with_max_lifetime(30).with_leeway(0);
    let wpt = create_wpt(&f.wit, &f.key.private_jwk, AUD, 31, T0).unwrap();
    assert!(matches!(v.verify(&wpt, &wit, AUD, T0), Err(WimseError::LifetimeTooLong { .. })));
}

#[test]
fn replayed_jti_is_refused_per_sender_until_expiry() {
    let f = fixture();
    let wit = verify_wit(&f.wit, &f.jwks, &td(), T0).unwrap();
    let v = WptVerifier::new().with_leeway(0);
    let claims = json!({ "aud": AUD, "exp": T0 + 60, "jti": "same", "wth": token_hash(&f.wit) });
    let wpt = sign_es256(&f.key.private_jwk, "wpt+jwt", None, &claims).unwrap();
    v.verify(&wpt, &wit, AUD, T0).unwrap();
    let e = v.verify(&wpt, &wit, AUD, T0 + 30).unwrap_err();
    assert!(matches!(&e, WimseError::Replayed { jti, .. } if jti == "same"), "{e}");
    // A different token with the same jti is a replay too.
    let mut c2 = claims.clone();
    c2["exp"] = (T0 + 90).into();
    let wpt2 = sign_es256(&f.key.private_jwk, "wpt+jwt", None, &c2).unwrap();
    assert!(matches!(v.verify(&wpt2, &wit, AUD, T0 + 30), Err(WimseError::Replayed { .. })));
    // Without a jti there is nothing to enforce single use with: refused.
    let mut c3 = claims.clone();
    c3.as_object_mut().unwrap().remove("jti");
    let wpt3 = sign_es256(&f.key.private_jwk, "wpt+jwt", None, &c3).unwrap();
    assert!(matches!(v.verify(&wpt3, &wit, AUD, T0), Err(WimseError::MissingClaim { claim: "jti", .. })));
    // A bounded cache refuses rather than forgets.
    let small = WptVerifier::new().with_replay_capacity(1);
    small.verify(&create_wpt(&f.wit, &f.key.private_jwk, AUD, 60, T0).unwrap(), &wit, AUD, T0).unwrap();
    let e = small
        .verify(&create_wpt(&f.wit, &f.key.private_jwk, AUD, 60, T0).unwrap(), &wit, AUD, T0)
        .unwrap_err();
    assert!(matches!(e, WimseError::ReplayCacheFull { capacity: 1 }), "{e}");
}

#[test]
fn wpt_header_and_bindings_are_checked() {
    let f = fixture();
    let wit = verify_wit(&f.wit, &f.jwks, &td(), T0).unwrap();
    let v = WptVerifier::new();
    let base = json!({ "aud": AUD, "exp": T0 + 60, "jti": "j", "wth": token_hash(&f.wit) });
    let sign = |typ: &str, c: &Value| sign_es256(&f.key.private_jwk, typ, None, c).unwrap();
    let e = v.verify(&sign("wit+jwt", &base), &wit, AUD, T0).unwrap_err();
    assert!(matches!(e, WimseError::WrongType { kind: TokenKind::Wpt, .. }), "{e}");
    // alg must string-equal cnf.jwk.alg.
    let t = sign("wpt+jwt", &base);
    let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
    parts[0] = b64(&json!({ "alg": "ES384", "typ": "wpt+jwt" }));
    let e = v.verify(&parts.join("."), &wit, AUD, T0).unwrap_err();
    assert!(matches!(&e, WimseError::AlgorithmMismatch { wpt_alg, .. } if wpt_alg == "ES384"), "{e}");
    parts[0] = b64(&json!({ "alg": "none", "typ": "wpt+jwt" }));
    assert!(matches!(v.verify(&parts.join("."), &wit, AUD, T0), Err(WimseError::AlgorithmNotAllowed { .. })));
    // ath: required when the request carries an access token, and must match it.
    let ctx = RequestContext::new(AUD).with_access_token("at-123");
    let e = v.verify_with(&sign("wpt+jwt", &base), &wit, &ctx, T0).unwrap_err();
    assert!(matches!(&e, WimseError::TokenBinding { claim, .. } if claim == "ath"), "{e}");
    let mut c = base.clone();
    c["jti"] = "j2".into();
    c["ath"] = token_hash("at-999").into();
    assert!(matches!(
        v.verify_with(&sign("wpt+jwt", &c), &wit, &ctx, T0),
        Err(WimseError::TokenBinding { .. })
    ));
    c["ath"] = token_hash("at-123").into();
    v.verify_with(&sign("wpt+jwt", &c), &wit, &ctx, T0).unwrap();
    // oth: every entry must be understood and match; every other token must be bound.
    let ctx = RequestContext::new(AUD).with_other_token("X-User-Token", " u1 ");
    let mut c = base.clone();
    c["jti"] = "j3".into();
    c["oth"] = json!({ "x-user-token": token_hash("u1") });
    v.verify_with(&sign("wpt+jwt", &c), &wit, &ctx, T0).unwrap();
    c["jti"] = "j4".into();
    c["oth"] = json!({ "x-user-token": token_hash("u1"), "x-unknown": "abc" });
    let e = v.verify_with(&sign("wpt+jwt", &c), &wit, &ctx, T0).unwrap_err();
    assert!(matches!(&e, WimseError::TokenBinding { claim, .. } if claim == "oth.x-unknown"), "{e}");
}
