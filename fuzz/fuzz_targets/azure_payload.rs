//! The azure attestor's first message (ferrid-attest-azure): arbitrary bytes as the
//! agent's payload — `{}` or `{"token": <managed-identity JWT>}` — never panic and never
//! attest: the agent refuses every challenge, and no token verifies under a key nobody
//! here holds the private half of.
#![no_main]
use std::future::Future;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use ferrid_attest::{NoChallenges, NodeAttestor};
use ferrid_attest_azure::{AzureAttestor, AzureConfig, IdentityConfig};
use libfuzzer_sys::fuzz_target;

const JWKS: &[u8] = include_bytes!(
    "../../crates/ferrid-attest-gcp-iit/tests/data/agentcommunication/google-oauth2-v3-certs-jwks.json"
);

fn attestor() -> &'static AzureAttestor {
    static A: OnceLock<AzureAttestor> = OnceLock::new();
    A.get_or_init(|| {
        let cfg = AzureConfig {
            allowed_subscriptions: vec!["5f130ffc-0a3e-4795-b691-4f56a12a5547".into()],
            identity: Some(IdentityConfig::new("api://ferrid", &["72f988bf-86f1-41af-91ab-2d7cd011db47"])),
            ..AzureConfig::default()
        };
        let keys = ferrid_jwt::KeySet::from_jwks(JWKS).expect("fixed JWKS");
        AzureAttestor::with_identity_keys(&cfg, keys).expect("fixed config")
    })
}

/// Polls a future that never waits on I/O (keys given, no challenge answered).
fn run<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let now = time::OffsetDateTime::from_unix_timestamp(1_739_324_791).expect("fixed time");
    let r = run(attestor().attest(data, &mut NoChallenges, now));
    assert!(r.is_err(), "attested without a document: {r:?}");
});
