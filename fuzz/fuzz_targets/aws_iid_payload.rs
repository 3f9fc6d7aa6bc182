//! The aws_iid attestor (ferrid-attest-aws-iid): arbitrary payloads, arbitrary bytes
//! as the PKCS#7 of a real document (rsa2048 and the legacy DSA pkcs7), and real AWS
//! PKCS#7s with fuzzed bytes overwritten never panic; whatever verifies is the real
//! instance, never another.
#![no_main]
use std::sync::OnceLock;

use base64::Engine;
use ferrid_attest_aws_iid::{AwsIidAttestor, AwsIidConfig, Proof, payload};
use libfuzzer_sys::fuzz_target;

const RSA_DOC: &str = include_str!(
    "../../crates/ferrid-attest-aws-iid/tests/data/rsa2048-teleport/instance1-us-west-2.document.json"
);
const RSA_P7: &str = include_str!(
    "../../crates/ferrid-attest-aws-iid/tests/data/rsa2048-teleport/instance1-us-west-2.rsa2048.b64"
);
const DSA_DOC: &str =
    include_str!("../../crates/ferrid-attest-aws-iid/tests/data/pkcs7-dsa-vault/document.json");
const DSA_P7: &str = include_str!("../../crates/ferrid-attest-aws-iid/tests/data/pkcs7-dsa-vault/pkcs7.b64");

fn attestor() -> &'static AwsIidAttestor {
    static A: OnceLock<AwsIidAttestor> = OnceLock::new();
    A.get_or_init(|| {
        AwsIidAttestor::from_config(&AwsIidConfig {
            accounts: vec!["278576220453".into(), "241656615859".into(), "123456789012".into()],
            ..AwsIidConfig::default()
        })
        .expect("fixed configuration")
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn der(text: &str) -> Vec<u8> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(clean).expect("fixture is base64")
}

/// Overwrites bytes of `base` at positions taken from `edits` (3 bytes each: position,
/// value).
fn mutate(base: &[u8], edits: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    for e in edits.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % out.len();
        out[at] = e[2];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let now = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("fixed time");
    let a = attestor();
    let (doc, proof, bytes, instance) = match mode % 5 {
        0 => {
            let _ = a.verify(rest, now);
            return;
        }
        1 => (RSA_DOC, Proof::Rsa2048, rest.to_vec(), "i-078517ca8a70a1dde"),
        2 => (DSA_DOC, Proof::Pkcs7, rest.to_vec(), "i-de0f1344"),
        3 => (RSA_DOC, Proof::Rsa2048, mutate(&der(RSA_P7), rest), "i-078517ca8a70a1dde"),
        _ => (DSA_DOC, Proof::Pkcs7, mutate(&der(DSA_P7), rest), "i-de0f1344"),
    };
    if let Ok(id) = a.verify(&payload(doc, proof, &b64(&bytes)), now) {
        assert_eq!(id.instance_id, instance);
        assert_eq!(id.proof, proof);
    }
});
