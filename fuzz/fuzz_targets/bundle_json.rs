//! SPIFFE bundle documents: parsing never panics; a parsed bundle serializes and parses
//! back to the same authorities.
#![no_main]
use ferrid_ca::TrustBundle;
use ferrid_types::TrustDomain;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let td = TrustDomain::new("fuzz.example").unwrap();
    if let Ok(b) = TrustBundle::from_spiffe_json(td.clone(), data) {
        let again = TrustBundle::from_spiffe_json(td, b.to_spiffe_json().as_bytes()).unwrap();
        assert_eq!(again.x509_authorities, b.x509_authorities);
        assert_eq!(again.jwt_authorities.len(), b.jwt_authorities.len());
        assert_eq!(again.sequence, b.sequence);
    }
});
