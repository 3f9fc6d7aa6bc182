//! Shared test helpers for the CA's integration tests.
#![allow(dead_code, missing_docs, unreachable_pub)]
use std::sync::Arc;
use std::time::Duration;

use ferrid_ca::{Authority, CaConfig, MemoryKeyStore};
use ferrid_types::{ManualClock, SpiffeId, TrustDomain};
use x509_parser::prelude::*;

pub const TD: &str = "example.org";
/// A fixed instant for deterministic tests (2026-01-15).
pub const T0: i64 = 1_768_435_200;

pub fn td() -> TrustDomain {
    TrustDomain::new(TD).unwrap()
}

pub fn id(path: &str) -> SpiffeId {
    SpiffeId::new(format!("spiffe://{TD}{path}")).unwrap()
}

pub fn authority_at(t: i64, tweak: impl FnOnce(&mut CaConfig)) -> (Authority, ManualClock) {
    let clock = ManualClock::at_unix(t);
    let mut cfg = CaConfig::new(td());
    tweak(&mut cfg);
    let ca = Authority::open(cfg, Arc::new(MemoryKeyStore::new()), None, Arc::new(clock.clone())).unwrap();
    (ca, clock)
}

pub fn authority() -> (Authority, ManualClock) {
    authority_at(T0, |_| {})
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn cert(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

/// Whether `leaf` is signed by one of `roots`.
pub fn signed_by_any(leaf: &[u8], roots: &[Vec<u8>]) -> bool {
    let l = cert(leaf);
    roots.iter().any(|r| l.verify_signature(Some(cert(r).public_key())).is_ok())
}

pub fn minutes(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}
