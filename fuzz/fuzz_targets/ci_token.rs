//! The CI/OIDC attestors (ferrid-attest-oidc) and the exchange's issuer routing:
//! arbitrary bytes as a job's token never panic and never attest (GitHub's real key, a
//! clock at which every real token has expired, nothing fetched); the unverified `iss`
//! peek never panics; arbitrary `id_template`s and selector mappings are accepted or
//! refused without panicking.
#![no_main]
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use ferrid_attest::{NoChallenges, NodeAttestor};
use ferrid_attest_oidc::{CiAttestor, GitHubConfig, OidcProviderConfig};
use libfuzzer_sys::fuzz_target;

const GITHUB_JWKS: &[u8] =
    include_bytes!("../../crates/ferrid-attest-oidc/tests/data/github-actions-oidc/github-actions-jwks-partial.json");

fn keys() -> ferrid_jwt::KeySet {
    ferrid_jwt::KeySet::from_jwks(GITHUB_JWKS).expect("fixed JWKS")
}

fn github() -> &'static CiAttestor {
    static A: OnceLock<CiAttestor> = OnceLock::new();
    A.get_or_init(|| {
        let cfg = GitHubConfig {
            allowed_owners: vec!["marchenko1985".into()],
            issuer: ferrid_attest_oidc::GITHUB_ISSUER.into(),
            audience: "demo".into(),
            jwks_file: None,
            jwks_url: Some(String::new()),
            ca_file: None,
            leeway: std::time::Duration::from_secs(30),
        };
        CiAttestor::github(&cfg, Some(keys())).expect("fixed config")
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
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => {
            let now = time::OffsetDateTime::from_unix_timestamp(1_795_392_000).expect("fixed time");
            let r = run(github().attest(rest, &mut NoChallenges, now));
            assert!(r.is_err(), "garbage attested: {r:?}");
        }
        1 => {
            let _ = ferrid_jwt::unverified_issuer(&String::from_utf8_lossy(rest));
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            let (template, claim) = text.split_once('\n').unwrap_or((&text, "sub"));
            let cfg = OidcProviderConfig {
                name: "fuzz".into(),
                issuer: "https://issuer.example".into(),
                audience: "ferrid-server".into(),
                selectors: BTreeMap::from([("s".to_owned(), claim.to_owned())]),
                required_claims: BTreeMap::new(),
                allow_any_tenant: true,
                id_template: template.to_owned(),
                algorithms: Vec::new(),
                jwks_file: None,
                jwks_url: Some(String::new()),
                ca_file: None,
                leeway: std::time::Duration::from_secs(30),
            };
            let _ = CiAttestor::oidc(&cfg, Some(keys()));
        }
    }
});
