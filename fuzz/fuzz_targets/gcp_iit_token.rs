//! The gcp_iit attestor (ferrid-attest-gcp-iit): arbitrary bytes as the agent's payload
//! never panic and never attest (Google's real keys, a clock at which every real token
//! has expired, nothing fetched).
#![no_main]
use std::future::Future;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use ferrid_attest::{NoChallenges, NodeAttestor};
use ferrid_attest_gcp_iit::{GcpIitAttestor, GcpIitConfig};
use libfuzzer_sys::fuzz_target;

const GOOGLE_JWKS: &[u8] = include_bytes!(
    "../../crates/ferrid-attest-gcp-iit/tests/data/agentcommunication/google-oauth2-v3-certs-jwks.json"
);

fn attestor() -> &'static GcpIitAttestor {
    static A: OnceLock<GcpIitAttestor> = OnceLock::new();
    A.get_or_init(|| {
        let cfg = GcpIitConfig {
            allowed_projects: vec!["weipengpanda-project".into()],
            audience: "agentcommunication.googleapis.com".into(),
            ..GcpIitConfig::default()
        };
        let keys = ferrid_jwt::KeySet::from_jwks(GOOGLE_JWKS).expect("fixed JWKS");
        GcpIitAttestor::with_keys(&cfg, keys).expect("fixed config")
    })
}

/// Polls a future that never waits on I/O (no remote keys) to completion.
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
    let now = time::OffsetDateTime::from_unix_timestamp(1_795_392_000).expect("fixed time");
    let r = run(attestor().attest(data, &mut NoChallenges, now));
    assert!(r.is_err(), "garbage attested: {r:?}");
});
