//! One test per MUST of the SPIFFE X509-SVID specification, on certificates minted by
//! the CA and parsed back with x509-parser, plus every way a CSR can be bad.
mod common;

use common::*;
use ferrid_ca::{CaError, KeyAlgorithm, X509SvidRequest, generate_key_and_csr};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::*;

fn mint(ca: &ferrid_ca::Authority, csr: &[u8], dns: &[String]) -> Result<ferrid_ca::X509Svid, CaError> {
    ca.mint_x509_svid(&X509SvidRequest { csr_der: csr, spiffe_id: &id("/web"), ttl: None, dns_names: dns })
}

fn leaf_of(svid: &ferrid_ca::X509Svid) -> X509Certificate<'_> {
    cert(&svid.cert_chain_der[0])
}

fn good() -> (ferrid_ca::Authority, ferrid_ca::X509Svid) {
    let (ca, _) = authority();
    let (_, csr) = generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    let svid = mint(&ca, &csr, &["web.example.org".into()]).unwrap();
    (ca, svid)
}

fn uris<'a>(c: &'a X509Certificate<'_>) -> Vec<&'a str> {
    c.subject_alternative_name()
        .unwrap()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|n| if let GeneralName::URI(u) = n { Some(*u) } else { None })
                .collect()
        })
        .unwrap_or_default()
}

fn dns<'a>(c: &'a X509Certificate<'_>) -> Vec<&'a str> {
    c.subject_alternative_name()
        .unwrap()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|n| if let GeneralName::DNSName(u) = n { Some(*u) } else { None })
                .collect()
        })
        .unwrap_or_default()
}

/// X509-SVID §2: an X.509-SVID MUST contain exactly one URI SAN, the SPIFFE ID.
#[test]
fn leaf_must_have_exactly_one_uri_san() {
    let (_, svid) = good();
    assert_eq!(uris(&leaf_of(&svid)), vec!["spiffe://example.org/web"]);
}

/// §4.1: leaf certificates MUST set the cA field of basic constraints to false.
#[test]
fn leaf_basic_constraints_ca_must_be_false() {
    let (_, svid) = good();
    let leaf = leaf_of(&svid);
    let bc = leaf.basic_constraints().unwrap().expect("basicConstraints present");
    assert!(!bc.value.ca);
    assert!(bc.critical);
}

/// §4.3: leaf certificates MUST NOT set keyCertSign or cRLSign; MUST set digitalSignature;
/// key usage MUST be critical.
#[test]
fn leaf_key_usage_must_be_digital_signature_only_and_critical() {
    let (_, svid) = good();
    let leaf = leaf_of(&svid);
    let ku = leaf.key_usage().unwrap().expect("keyUsage present");
    assert!(ku.critical);
    assert!(ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign());
    assert!(!ku.value.crl_sign());
}

/// §4.4: extended key usage — Ferrid sets serverAuth and clientAuth.
#[test]
fn leaf_eku_is_server_and_client_auth() {
    let (_, svid) = good();
    let leaf = leaf_of(&svid);
    let eku = leaf.extended_key_usage().unwrap().expect("EKU present");
    assert!(eku.value.server_auth && eku.value.client_auth);
}

/// §4.1/§4.3: signing certificates MUST set cA true and keyCertSign.
#[test]
fn signing_certificate_must_be_ca_with_key_cert_sign() {
    let (ca, _) = good();
    let bundle = ca.bundle();
    let root = cert(&bundle.x509_authorities[0]);
    assert!(root.basic_constraints().unwrap().unwrap().value.ca);
    let ku = root.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.key_cert_sign());
    // A signing certificate may carry the trust domain's SPIFFE ID.
    assert_eq!(uris(&root), vec!["spiffe://example.org"]);
}

/// §5: the leaf validates against the trust bundle; the spiffe crate accepts the SVID.
#[test]
fn leaf_chains_to_the_bundle_and_parses_with_the_spiffe_crate() {
    let (ca, _) = authority_at(now_unix(), |_| {});
    let (key, csr) = generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    let svid = mint(&ca, &csr, &[]).unwrap();
    assert!(signed_by_any(&svid.cert_chain_der[0], &ca.bundle().x509_authorities));
    let parsed = spiffe::X509Svid::parse_from_der(&svid.cert_chain_der.concat(), &key)
        .expect("spiffe crate accepts it");
    assert_eq!(parsed.spiffe_id().to_string(), "spiffe://example.org/web");
}

#[test]
fn validity_is_backdated_and_capped_at_the_ca() {
    let (ca, _) = authority();
    let (_, csr) = generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    let svid = mint(&ca, &csr, &[]).unwrap();
    let leaf = leaf_of(&svid);
    assert_eq!(leaf.validity().not_before.timestamp(), T0 - 10);
    assert_eq!(leaf.validity().not_after.timestamp(), T0 + 600, "default 10 minutes");
    // A TTL beyond the CA's remaining life is cut at the CA's NotAfter.
    let svid = ca
        .mint_x509_svid(&X509SvidRequest {
            csr_der: &csr,
            spiffe_id: &id("/w"),
            ttl: Some(minutes(48 * 60)),
            dns_names: &[],
        })
        .unwrap();
    let bundle = ca.bundle();
    let root = cert(&bundle.x509_authorities[0]);
    assert!(svid.not_after <= root.validity().not_after.timestamp());
    assert_eq!(leaf_of(&svid).validity().not_after.timestamp(), svid.not_after);
}

#[test]
fn serials_are_random_positive_and_at_least_64_bits() {
    let (ca, _) = authority();
    let (_, csr) = generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    let a = mint(&ca, &csr, &[]).unwrap();
    let b = mint(&ca, &csr, &[]).unwrap();
    assert_ne!(a.serial_hex, b.serial_hex);
    let raw = leaf_of(&a).raw_serial().to_vec();
    assert!(raw.len() * 8 >= 64);
    assert_eq!(raw[0] & 0x80, 0, "positive");
    assert_ne!(
        raw[0], 0,
        "no leading zero byte: serial_hex is already the normalized form revocation matches"
    );
    assert_eq!(hex::encode(&raw), a.serial_hex);
}

#[test]
fn a_serial_with_a_leading_zero_nibble_keeps_it() {
    // One serial in eight starts with a byte below 0x10; 400 mints miss one with
    // probability (7/8)^400, about 1e-23.
    let (ca, _) = authority();
    let (_, csr) = generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    let svid = (0..400)
        .map(|_| mint(&ca, &csr, &[]).unwrap())
        .find(|s| leaf_of(s).raw_serial()[0] < 0x10)
        .expect("a serial with a leading zero nibble");
    let raw = leaf_of(&svid).raw_serial().to_vec();
    assert!(svid.serial_hex.starts_with('0'), "{}", svid.serial_hex);
    assert_eq!(svid.serial_hex.len() % 2, 0, "even length, as openssl prints it");
    assert_eq!(svid.serial_hex, ferrid_types::Serial::from_bytes(&raw).unwrap().as_str());
}

#[test]
fn names_requested_in_the_csr_are_ignored() {
    let (ca, _) = authority();
    let csr = include_bytes!("data/names.csr.der");
    let svid = mint(&ca, csr, &[]).unwrap();
    let leaf = leaf_of(&svid);
    assert_eq!(uris(&leaf), vec!["spiffe://example.org/web"]);
    assert!(dns(&leaf).is_empty());
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca, "CA:TRUE request ignored");
    assert!(!leaf.subject().to_string().contains("evil"));
}

#[test]
fn dns_names_come_only_from_the_entry() {
    let (_, svid) = good();
    assert_eq!(dns(&leaf_of(&svid)), vec!["web.example.org"]);
    let (ca, _) = authority();
    let (_, csr) = generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    assert!(matches!(mint(&ca, &csr, &["bad name!".into()]), Err(CaError::InvalidDnsName(_))));
}

#[test]
fn accepted_key_types() {
    let (ca, _) = authority();
    for alg in [KeyAlgorithm::EcP256, KeyAlgorithm::EcP384, KeyAlgorithm::Rsa2048] {
        let (_, csr) = generate_key_and_csr(alg, None).unwrap();
        let svid = mint(&ca, &csr, &[]).unwrap_or_else(|e| panic!("{alg}: {e}"));
        let leaf = leaf_of(&svid);
        let ku = leaf.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign());
    }
}

#[test]
fn refused_key_types_say_which() {
    let (ca, _) = authority();
    for (name, csr) in [
        ("RSA 1024", &include_bytes!("data/rsa1024.csr.der")[..]),
        ("P-521", &include_bytes!("data/p521.csr.der")[..]),
        ("Ed25519", &include_bytes!("data/ed25519.csr.der")[..]),
    ] {
        match mint(&ca, csr, &[]) {
            Err(e @ CaError::UnsupportedKey(_)) => assert!(e.is_client_error(), "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    let e = mint(&ca, include_bytes!("data/rsa1024.csr.der"), &[]).unwrap_err();
    assert!(e.to_string().contains("1024"), "{e}");
}

#[test]
fn tampered_csr_fails_proof_of_possession() {
    let (ca, _) = authority();
    let (_, mut csr) = generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    let last = csr.len() - 1;
    csr[last] ^= 0x01;
    assert!(matches!(mint(&ca, &csr, &[]), Err(CaError::CsrSignature)));
    // Swap the public key for another one: the signature no longer matches.
    let (_, a) = generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    let (_, b) = generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    let (ka, kb) = (pubkey_range(&a), pubkey_range(&b));
    let mut franken = a.clone();
    franken[ka.clone()].copy_from_slice(&b[kb]);
    assert!(matches!(mint(&ca, &franken, &[]), Err(CaError::CsrSignature)));
}

fn pubkey_range(csr: &[u8]) -> std::ops::Range<usize> {
    let (_, req) = X509CertificationRequest::from_der(csr).unwrap();
    let raw = req.certification_request_info.subject_pki.subject_public_key.data.as_ref();
    let start = raw.as_ptr() as usize - csr.as_ptr() as usize;
    start..start + raw.len()
}

#[test]
fn garbage_empty_truncated_and_oversized_csrs() {
    let (ca, _) = authority();
    let (_, csr) = generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    for (what, input) in [
        ("empty", vec![]),
        ("garbage", b"definitely not DER".to_vec()),
        ("truncated", csr[..csr.len() / 2].to_vec()),
        ("trailing bytes", [csr.clone(), vec![0]].concat()),
        ("oversized", vec![0x30; ferrid_ca::MAX_CSR_BYTES + 1]),
    ] {
        match mint(&ca, &input, &[]) {
            Err(CaError::InvalidCsr(_)) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn foreign_trust_domain_is_refused() {
    let (ca, _) = authority();
    let (_, csr) = generate_key_and_csr(KeyAlgorithm::EcP256, None).unwrap();
    let other = ferrid_types::SpiffeId::new("spiffe://other.org/web").unwrap();
    let e = ca
        .mint_x509_svid(&X509SvidRequest { csr_der: &csr, spiffe_id: &other, ttl: None, dns_names: &[] })
        .unwrap_err();
    assert!(matches!(e, CaError::ForeignSpiffeId { .. }));
    assert!(e.is_client_error());
}
