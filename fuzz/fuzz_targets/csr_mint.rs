//! CSR handling: arbitrary bytes given as a CSR never panic the CA, and anything it
//! accepts yields a certificate naming exactly the requested SPIFFE ID.
#![no_main]
use std::sync::{Arc, OnceLock};

use ferrid_ca::{Authority, CaConfig, MemoryKeyStore, X509SvidRequest};
use ferrid_types::{ManualClock, SpiffeId, TrustDomain};
use libfuzzer_sys::fuzz_target;

fn ca() -> &'static Authority {
    static CA: OnceLock<Authority> = OnceLock::new();
    CA.get_or_init(|| {
        let td = TrustDomain::new("fuzz.example").unwrap();
        Authority::open(CaConfig::new(td), Arc::new(MemoryKeyStore::new()), None, Arc::new(ManualClock::at_unix(1_800_000_000)))
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let id = SpiffeId::new("spiffe://fuzz.example/w").unwrap();
    if let Ok(svid) = ca().mint_x509_svid(&X509SvidRequest { csr_der: data, spiffe_id: &id, ttl: None, dns_names: &[] }) {
        assert!(!svid.cert_chain_der.is_empty());
        assert_eq!(svid.spiffe_id, id);
    }
});
