//! Test fixtures: rcgen-made CAs and SVIDs.
#![allow(unreachable_pub)]

use ferrid_types::{Serial, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

use crate::x509::X509Bundle;

/// The tests' "now".
pub const NOW: i64 = 1_760_000_000;

fn time(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

/// A CA for one trust domain.
pub struct TestCa {
    pub td: String,
    pub key: KeyPair,
    pub params: CertificateParams,
    pub cert_der: Vec<u8>,
}

/// Knobs for a leaf.
#[derive(Default, Clone)]
pub struct LeafOpts {
    pub ca: bool,
    pub key_cert_sign: bool,
    pub crl_sign: bool,
    pub no_key_usage: bool,
    pub no_digital_signature: bool,
    /// Overrides the validity window (not_before, not_after).
    pub window: Option<(i64, i64)>,
}

/// A leaf and its key.
pub struct Leaf {
    /// Leaf only; callers append intermediates.
    pub chain: Vec<Vec<u8>>,
    pub key_der: Vec<u8>,
    pub serial: Serial,
}

fn ca_params(td: &str, cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.subject_alt_names = vec![SanType::URI(format!("spiffe://{td}").try_into().unwrap())];
    p.not_before = time(NOW - 86_400);
    p.not_after = time(NOW + 86_400);
    p
}

impl TestCa {
    /// A self-signed root for `td`.
    pub fn new(td: &str) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params(td, &format!("root {td}"));
        let cert_der = params.self_signed(&key).unwrap().der().to_vec();
        Self { td: td.into(), key, params, cert_der }
    }

    /// An intermediate signed by this CA.
    pub fn intermediate(&self) -> TestCa {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params(&self.td, &format!("intermediate {}", self.td));
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert_der = params.signed_by(&key, &issuer).unwrap().der().to_vec();
        TestCa { td: self.td.clone(), key, params, cert_der }
    }

    /// The bundle holding this CA.
    pub fn bundle(&self) -> X509Bundle {
        X509Bundle::new(TrustDomain::new(&self.td).unwrap(), vec![self.cert_der.clone()]).unwrap()
    }

    /// A leaf for `id`.
    pub fn leaf(&self, id: &str, o: LeafOpts) -> Leaf {
        self.leaf_with(&[id], o)
    }

    /// A leaf's chain with these URI SANs.
    pub fn leaf_uris(&self, uris: &[&str], o: LeafOpts) -> Vec<Vec<u8>> {
        self.leaf_with(uris, o).chain
    }

    fn leaf_with(&self, uris: &[&str], o: LeafOpts) -> Leaf {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "test");
        p.distinguished_name = dn;
        // A serial with a leading zero nibble, as Ferrid's CA writes one time in eight.
        let mut serial: [u8; 16] = rand_bytes();
        serial[0] = 0x05;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        let (nb, na) = o.window.unwrap_or((NOW - 60, NOW + 600));
        p.not_before = time(nb);
        p.not_after = time(na);
        p.is_ca = if o.ca { IsCa::Ca(BasicConstraints::Unconstrained) } else { IsCa::ExplicitNoCa };
        let mut ku = Vec::new();
        if !o.no_digital_signature {
            ku.push(KeyUsagePurpose::DigitalSignature);
        }
        if o.key_cert_sign {
            ku.push(KeyUsagePurpose::KeyCertSign);
        }
        if o.crl_sign {
            ku.push(KeyUsagePurpose::CrlSign);
        }
        if o.no_digital_signature {
            ku.push(KeyUsagePurpose::KeyEncipherment);
        }
        p.key_usages = if o.no_key_usage { vec![] } else { ku };
        p.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.subject_alt_names = uris.iter().map(|u| SanType::URI((*u).try_into().unwrap())).collect();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let der = p.signed_by(&key, &issuer).unwrap().der().to_vec();
        Leaf { chain: vec![der], key_der: key.serialize_der(), serial: Serial::from_bytes(&serial).unwrap() }
    }
}

fn rand_bytes() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; 16];
    for chunk in out.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(1);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}
