//! X.509 building blocks: key generation, CSR checks, CA and leaf certificates.
use ::time::OffsetDateTime;
use ferrid_types::{KeyAlgorithm, SpiffeId, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber, SignatureAlgorithm,
};
use rustls_pki_types::PrivatePkcs8KeyDer;
use x509_parser::prelude::*;
use x509_parser::public_key::PublicKey;
use zeroize::Zeroizing;

use crate::{CaError, MAX_CSR_BYTES, internal};

/// The rcgen signature algorithm for a key algorithm.
pub(crate) fn sig_alg(alg: KeyAlgorithm) -> &'static SignatureAlgorithm {
    match alg {
        KeyAlgorithm::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyAlgorithm::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
    }
}

/// Generates a key pair in memory.
pub(crate) fn generate_key(alg: KeyAlgorithm) -> Result<KeyPair, CaError> {
    let r = match alg {
        KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => KeyPair::generate_for(sig_alg(alg)),
        KeyAlgorithm::Rsa2048 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048),
        KeyAlgorithm::Rsa4096 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096),
    };
    r.map_err(internal)
}

/// Loads a PKCS#8 key for `alg`.
pub(crate) fn load_key(alg: KeyAlgorithm, pkcs8: &[u8]) -> Result<KeyPair, CaError> {
    KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(pkcs8), sig_alg(alg))
        .map_err(|e| CaError::KeyStore(format!("stored key does not load as {alg}: {e}")))
}

/// Generates a key in memory and a CSR for it, for agents and the operator mint path.
/// The CSR names `spiffe_id` as its URI SAN (conventional; Ferrid's CA ignores it).
pub fn generate_key_and_csr(
    alg: KeyAlgorithm,
    spiffe_id: Option<&SpiffeId>,
) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), CaError> {
    let key = generate_key(alg)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(id) = spiffe_id {
        params.subject_alt_names.push(SanType::URI(id.to_string().try_into().map_err(internal)?));
    }
    let csr = params.serialize_request(&key).map_err(internal)?;
    Ok((Zeroizing::new(key.serialize_der()), csr.der().to_vec()))
}

/// A random positive serial of 128 bits.
pub(crate) fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f;
    b[0] |= 0x01;
    SerialNumber::from_slice(&b)
}

pub(crate) fn to_time(unix: i64) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(internal)
}

/// The public key of a verified CSR.
pub(crate) struct CsrKey {
    pub(crate) spki: rcgen::SubjectPublicKeyInfo,
    pub(crate) is_rsa: bool,
}

/// Parses a CSR, verifies its self-signature (proof of possession) and checks its key
/// type. Everything else in the CSR — subject, requested extensions — is ignored.
pub(crate) fn check_csr(der: &[u8]) -> Result<CsrKey, CaError> {
    if der.len() > MAX_CSR_BYTES {
        return Err(CaError::InvalidCsr(format!("{} bytes; the limit is {MAX_CSR_BYTES}", der.len())));
    }
    if der.is_empty() {
        return Err(CaError::InvalidCsr("empty".into()));
    }
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| CaError::InvalidCsr(format!("not a PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(CaError::InvalidCsr(format!("{} trailing bytes after the request", rest.len())));
    }
    let spki = &csr.certification_request_info.subject_pki;
    let is_rsa = match spki.parsed() {
        Ok(PublicKey::EC(point)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or_else(|| CaError::UnsupportedKey("EC key without a named curve".into()))?;
            let ok = (curve == x509_parser::oid_registry::OID_EC_P256 && point.key_size() == 256)
                || (curve == x509_parser::oid_registry::OID_NIST_EC_P384 && point.key_size() == 384);
            if !ok {
                return Err(CaError::UnsupportedKey(format!("EC key on curve {curve}")));
            }
            false
        }
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            if !(2048..=4096).contains(&bits) {
                return Err(CaError::UnsupportedKey(format!("RSA {bits}-bit key")));
            }
            true
        }
        Ok(other) => {
            let name = match other {
                PublicKey::DSA(_) => "DSA".to_owned(),
                PublicKey::GostR3410(_) | PublicKey::GostR3410_2012(_) => "GOST".to_owned(),
                PublicKey::Unknown(_) => format!("algorithm {}", spki.algorithm.algorithm),
                _ => format!("algorithm {}", spki.algorithm.algorithm),
            };
            return Err(CaError::UnsupportedKey(name));
        }
        Err(e) => return Err(CaError::InvalidCsr(format!("unparsable public key: {e}"))),
    };
    csr.verify_signature().map_err(|_| CaError::CsrSignature)?;
    let spki = rcgen::SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|e| CaError::UnsupportedKey(e.to_string()))?;
    Ok(CsrKey { spki, is_rsa })
}

fn ca_params(
    td: &TrustDomain,
    cn: &str,
    nb: i64,
    na: i64,
    path_len: Option<u8>,
) -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Ferrid");
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.serial_number = Some(random_serial());
    p.not_before = to_time(nb)?;
    p.not_after = to_time(na)?;
    p.is_ca = IsCa::Ca(path_len.map_or(BasicConstraints::Unconstrained, BasicConstraints::Constrained));
    p.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.subject_alt_names = vec![SanType::URI(td.id_string().try_into().map_err(internal)?)];
    p.use_authority_key_identifier_extension = path_len.is_some();
    Ok(p)
}

/// A self-signed root CA certificate for `td`.
pub(crate) fn self_signed_root(
    td: &TrustDomain,
    key: &KeyPair,
    nb: i64,
    na: i64,
) -> Result<Vec<u8>, CaError> {
    let p = ca_params(td, &format!("Ferrid root CA {td}"), nb, na, None)?;
    Ok(p.self_signed(key).map_err(internal)?.der().to_vec())
}

/// An intermediate CA certificate for `td`, signed by `upstream`.
pub(crate) fn intermediate(
    td: &TrustDomain,
    key: &KeyPair,
    upstream: &Issuer<'_, KeyPair>,
    nb: i64,
    na: i64,
) -> Result<Vec<u8>, CaError> {
    let p = ca_params(td, &format!("Ferrid intermediate CA {td}"), nb, na, Some(0))?;
    Ok(p.signed_by(key, upstream).map_err(internal)?.der().to_vec())
}

/// An X.509-SVID leaf.
pub(crate) fn leaf(
    id: &SpiffeId,
    dns_names: &[String],
    key: &CsrKey,
    issuer: &Issuer<'_, KeyPair>,
    nb: i64,
    na: i64,
) -> Result<(Vec<u8>, String), CaError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Ferrid");
    if let Some(first) = dns_names.first() {
        dn.push(DnType::CommonName, first.as_str());
    }
    p.distinguished_name = dn;
    let serial = random_serial();
    // The revocation feed's form: even-length lowercase hex, as openssl prints it.
    let serial_hex = ferrid_types::Serial::from_bytes(&serial.to_bytes()).map_err(internal)?.to_string();
    p.serial_number = Some(serial);
    p.not_before = to_time(nb)?;
    p.not_after = to_time(na)?;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = if key.is_rsa {
        vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment]
    } else {
        vec![KeyUsagePurpose::DigitalSignature]
    };
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    let mut sans = vec![SanType::URI(id.to_string().try_into().map_err(internal)?)];
    for d in dns_names {
        if !valid_dns_name(d) {
            return Err(CaError::InvalidDnsName(d.clone()));
        }
        sans.push(SanType::DnsName(d.clone().try_into().map_err(|_| CaError::InvalidDnsName(d.clone()))?));
    }
    p.subject_alt_names = sans;
    let cert = p.signed_by(&key.spki, issuer).map_err(internal)?;
    Ok((cert.der().to_vec(), serial_hex))
}

/// RFC 1123 host name, optionally with one leading `*.` label.
fn valid_dns_name(name: &str) -> bool {
    let n = name.strip_prefix("*.").unwrap_or(name);
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// NotBefore and NotAfter of a certificate, Unix seconds.
pub(crate) fn validity(der: &[u8]) -> Result<(i64, i64), CaError> {
    let (_, c) = X509Certificate::from_der(der)
        .map_err(|e| CaError::UpstreamCa(format!("unparsable certificate: {e}")))?;
    Ok((c.validity().not_before.timestamp(), c.validity().not_after.timestamp()))
}
