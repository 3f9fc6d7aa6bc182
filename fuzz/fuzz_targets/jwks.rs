//! JWKS parsing (ferrid-jwt): third-party key documents, as fetched by OIDC discovery,
//! never panic; the strict parser accepts nothing the lenient one would reject, and the
//! lenient one accounts for every entry it skips.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let strict = ferrid_jwt::KeySet::from_jwks(data);
    let lenient = ferrid_jwt::KeySet::from_jwks_lenient(data);
    if let Ok(keys) = &strict {
        let (l, skipped) = lenient.as_ref().expect("a JWKS the strict parser accepts parses leniently");
        assert!(l.len() + skipped >= keys.len());
    }
    if let Ok((keys, skipped)) = lenient {
        let entries = serde_json::from_slice::<serde_json::Value>(data)
            .ok()
            .and_then(|v| v.get("keys").and_then(|k| k.as_array()).map(Vec::len))
            .unwrap_or(0);
        assert_eq!(keys.len() + skipped, entries);
    }
});
