//! Shared helpers: the recorded documents (tests/data, see its README) and IMDS-style
//! answers built from them.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use ferrid_attest::testkit::ScriptedChallenger;
use ferrid_attest::{AttestError, Attested, NodeAttestor};
use ferrid_attest_azure::{AzureAttestor, AzureConfig};

pub fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(p)
}

pub fn read(p: &str) -> String {
    std::fs::read_to_string(data(p)).unwrap()
}

pub fn der(b64_file: &str) -> Vec<u8> {
    let b64: String = read(b64_file).chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
}

/// IMDS's answer for a DER document.
pub fn answer(der: &[u8]) -> Vec<u8> {
    serde_json::json!({"encoding": "pkcs7", "signature": base64::engine::general_purpose::STANDARD.encode(der)})
        .to_string()
        .into_bytes()
}

pub fn at(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

/// 2026-11-23, the day these tests were written: "today" for the fixtures.
pub const TODAY: i64 = 1_795_392_000;

pub struct Recorded {
    pub file: &'static str,
    pub nonce: &'static str,
    pub created: i64,
    pub subscription: &'static str,
    pub vm_id: &'static str,
}

/// coder/coder's public-cloud document (2022), leaf under Microsoft RSA TLS CA 01.
pub const REGULAR: Recorded = Recorded {
    file: "coder/regular-2022.pkcs7.b64",
    nonce: "20220419-072721",
    created: 1_650_331_641,
    subscription: "5f130ffc-0a3e-4795-b691-4f56a12a5547",
    vm_id: "bd8e7443-24a0-41f3-b949-8baf4fd1c573",
};

/// coder/coder's Azure Government document (2023), leaf `metadata.azure.us` under
/// Microsoft Azure TLS Issuing CA 05.
pub const GOVCLOUD: Recorded = Recorded {
    file: "coder/govcloud-2023.pkcs7.b64",
    nonce: "20230308-230933",
    created: 1_678_295_373,
    subscription: "0afbfffa-5df9-4a3b-987e-fe7577624272",
    vm_id: "990878d4-068a-4ac4-9ee9-1231d2218ef2",
};

/// Generated here (tests/data/generated/make.sh) under a throwaway CA.
pub const GENERATED: Recorded = Recorded {
    file: "generated/noattr.pkcs7.b64",
    nonce: "4815162342",
    created: 1_795_437_155,
    subscription: "8d3f2a51-7c1e-4e0b-9a6f-2b5c0d9e1f37",
    vm_id: "0c7d5b9e-3a41-4f2c-8e6d-91b0a2c4d5e6",
};

pub fn config(subscriptions: &[&str]) -> AzureConfig {
    AzureConfig {
        allowed_subscriptions: subscriptions.iter().map(|s| (*s).to_owned()).collect(),
        ..AzureConfig::default()
    }
}

/// The config trusting the throwaway CA of tests/data/generated.
pub fn generated_config(subscriptions: &[&str]) -> AzureConfig {
    let mut c = config(subscriptions);
    c.roots_file = Some(data("generated/test-root.pem"));
    c.intermediates_file = Some(data("generated/test-intermediate.pem"));
    c
}

/// The attestor with `cfg`, choosing `nonce`.
pub fn attestor(cfg: &AzureConfig, nonce: &'static str) -> AzureAttestor {
    AzureAttestor::from_config(cfg).unwrap().with_nonce_source(Arc::new(move || nonce.to_owned()))
}

/// Attests with `payload`, the agent answering the challenge with `answer` (after
/// checking that the challenge names `nonce`).
pub async fn attest_with(
    a: &AzureAttestor,
    payload: &[u8],
    nonce: &str,
    answer: Vec<u8>,
    now: i64,
) -> Result<Attested, AttestError> {
    let want = format!("{{\"nonce\":\"{nonce}\"}}");
    let mut ch = ScriptedChallenger::new(move |c: &[u8]| {
        assert_eq!(std::str::from_utf8(c).unwrap(), want);
        Ok(answer.clone())
    });
    let r = a.attest(payload, &mut ch, at(now)).await;
    assert!(ch.asked <= 1);
    r
}

pub async fn attest(a: &AzureAttestor, r: &Recorded, doc: &[u8], now: i64) -> Result<Attested, AttestError> {
    attest_with(a, b"{}", r.nonce, answer(doc), now).await
}

pub fn rejected_with(r: Result<Attested, AttestError>, needle: &str) {
    match r {
        Err(AttestError::Rejected(m)) if m.contains(needle) => {}
        other => panic!("expected a rejection mentioning {needle:?}, got {other:?}"),
    }
}
