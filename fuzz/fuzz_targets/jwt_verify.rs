//! JWT verification (ferrid-jwt): arbitrary text as a token never panics and never
//! verifies under a key nobody holds a private half of in this target.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn keys() -> &'static ferrid_jwt::KeySet {
    static K: OnceLock<ferrid_jwt::KeySet> = OnceLock::new();
    K.get_or_init(|| {
        ferrid_jwt::KeySet::from_jwks(br#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#)
            .expect("fixed JWKS")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let want = ferrid_jwt::Expectations::new(None, Some("ferrid".into()));
        assert!(ferrid_jwt::verify(token, keys(), &want, 1_700_000_000).is_err());
    }
});
