//! Security Event Tokens (ferrid-validate): arbitrary text as a SET never panics and
//! never verifies under a key nobody holds the private half of in this target; arbitrary
//! JSON as SET claims never panics, and what parses round-trips through the builder.
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
        let r = ferrid_validate::verify_set(
            token,
            keys(),
            "spiffe://example.org/ferrid/server",
            "spiffe://example.org",
            1_760_000_000,
        );
        assert!(r.is_err());
        let _ = ferrid_validate::set::unverified_jti(token);
    }
    if let Ok(claims) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(event) = ferrid_validate::SetEvent::from_claims(&claims)
    {
        let rebuilt = event.claims("iss", "aud", "jti", 0);
        assert_eq!(ferrid_validate::SetEvent::from_claims(&rebuilt).as_ref(), Ok(&event));
    }
});
