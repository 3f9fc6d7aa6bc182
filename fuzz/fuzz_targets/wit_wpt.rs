//! WIT and WPT verification (ferrid-wimse): arbitrary text as a WIT never panics and
//! never verifies against a bundle whose private key signs nothing here; arbitrary text
//! as a WPT never panics and never verifies against a real WIT whose workload key signs
//! nothing here. Input: WIT bytes, a 0 byte, WPT bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const NOW: i64 = 1_768_435_200;

struct Fixture {
    jwks: String,
    wit: ferrid_wimse::VerifiedWit,
    td: ferrid_types::TrustDomain,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let issuer = ferrid_ca::generate_wit_key().expect("issuer key");
        let workload = ferrid_ca::generate_wit_key().expect("workload key");
        let mut jwk: serde_json::Value = serde_json::from_str(&issuer.public_jwk).unwrap();
        jwk["kid"] = "k1".into();
        let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
        let cnf: serde_json::Value = serde_json::from_str(&workload.public_jwk).unwrap();
        let claims = serde_json::json!({ "sub": "spiffe://example.org/w", "exp": NOW + 3600, "cnf": { "jwk": cnf } });
        let token = ferrid_wimse::sign_es256(&issuer.private_jwk, "wit+jwt", Some("k1"), &claims).unwrap();
        let td = ferrid_types::TrustDomain::new("example.org").unwrap();
        let wit = ferrid_wimse::verify_wit(&token, &jwks, &td, NOW).expect("fixture WIT verifies");
        Fixture { jwks, wit, td }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut parts = data.splitn(2, |b| *b == 0);
    let (wit, wpt) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if let Ok(wit) = std::str::from_utf8(wit) {
        assert!(ferrid_wimse::verify_wit(wit, &f.jwks, &f.td, NOW).is_err());
    }
    if let Ok(wpt) = std::str::from_utf8(wpt) {
        let v = ferrid_wimse::WptVerifier::new();
        assert!(v.verify(wpt, &f.wit, "https://svc.example.org/", NOW).is_err());
    }
});
