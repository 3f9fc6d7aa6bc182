//! JWT-SVID validation (ferrid-validate): arbitrary text as a token never panics and
//! never validates under a key nobody holds the private half of in this target.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn keys() -> &'static ferrid_validate::JwtKeySet {
    static K: OnceLock<ferrid_validate::JwtKeySet> = OnceLock::new();
    K.get_or_init(|| {
        ferrid_validate::JwtKeySet::from_jwks(br#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","use":"jwt-svid","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#)
            .expect("fixed JWKS")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let td = ferrid_types::TrustDomain::new("example.org").unwrap();
        let opts = ferrid_validate::JwtOptions::new("spiffe://example.org/api");
        assert!(ferrid_validate::validate_jwt_svid(token, keys(), &td, &opts, 1_760_000_000).is_err());
    }
    let _ = ferrid_validate::JwtKeySet::from_jwks(data);
});
