//! The certificates that may sign instance identity documents, by proof and region.

use std::collections::BTreeMap;

use der::asn1::UintRef;
use der::{Decode, Encode, Sequence};
use dsa::pkcs8::DecodePublicKey;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;

use crate::Proof;
use crate::builtin;
use crate::oid;

/// The region name that makes a configured certificate apply to every region.
pub(crate) const ANY_REGION: &str = "*";

/// The smallest RSA key any proof accepts (AWS's `signature` certificates are
/// RSA-1024).
const MIN_RSA_BITS: usize = 1024;

/// A signing key from a trusted certificate.
pub(crate) enum Key {
    /// An RSA key: its `RSAPublicKey` DER and modulus size.
    Rsa { der: Vec<u8>, bits: usize },
    /// A DSA key.
    Dsa(Box<dsa::VerifyingKey>),
}

/// One trusted certificate.
pub(crate) struct TrustedCert {
    /// Where it came from, for messages: `built-in rsa2048/us-east-1` or the config key.
    pub(crate) source: String,
    pub(crate) issuer: Name,
    pub(crate) serial: SerialNumber,
    pub(crate) ski: Option<Vec<u8>>,
    pub(crate) key: Key,
}

impl std::fmt::Debug for TrustedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

/// Trusted certificates by proof and region (`*`: every region).
#[derive(Debug, Default)]
pub(crate) struct TrustStore {
    by: BTreeMap<(Proof, String), Vec<TrustedCert>>,
}

#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

fn rsa_bits(key: &[u8]) -> Result<usize, String> {
    let k = RsaPublicKey::from_der(key).map_err(|e| format!("RSA public key: {e}"))?;
    let n = k.modulus.as_bytes();
    let _ = k.public_exponent;
    match n.first() {
        None => Err("RSA public key: empty modulus".into()),
        Some(&top) => Ok((n.len() - 1) * 8 + (8 - top.leading_zeros() as usize)),
    }
}

fn trusted(cert: &Certificate, source: String) -> Result<TrustedCert, String> {
    let tbs = cert.tbs_certificate();
    let spki = tbs.subject_public_key_info();
    let key = if spki.algorithm.oid == oid::RSA_ENCRYPTION {
        let der = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| format!("{source}: RSA public key is not a whole number of bytes"))?
            .to_vec();
        let bits = rsa_bits(&der).map_err(|e| format!("{source}: {e}"))?;
        if bits < MIN_RSA_BITS {
            return Err(format!("{source}: RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"));
        }
        Key::Rsa { der, bits }
    } else if spki.algorithm.oid == oid::DSA {
        let der = spki.to_der().map_err(|e| format!("{source}: {e}"))?;
        let key = dsa::VerifyingKey::from_public_key_der(&der)
            .map_err(|e| format!("{source}: unusable DSA public key: {e}"))?;
        Key::Dsa(Box::new(key))
    } else {
        return Err(format!("{source}: public key algorithm {} is neither RSA nor DSA", spki.algorithm.oid));
    };
    let ski = tbs
        .get_extension::<SubjectKeyIdentifier>()
        .map_err(|e| format!("{source}: subject key identifier: {e}"))?
        .map(|(_, ski)| ski.0.as_bytes().to_vec());
    Ok(TrustedCert { source, issuer: tbs.issuer().clone(), serial: tbs.serial_number().clone(), ski, key })
}

/// Every certificate in `pem_text` (at least one).
pub(crate) fn parse_pem(pem_text: &str, source: &str) -> Result<Vec<TrustedCert>, String> {
    let blocks = pem::parse_many(pem_text).map_err(|e| format!("{source}: {e}"))?;
    let mut out = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        if block.tag() != "CERTIFICATE" {
            return Err(format!("{source}: PEM block {} is {:?}, not CERTIFICATE", i + 1, block.tag()));
        }
        let cert = Certificate::from_der(block.contents())
            .map_err(|e| format!("{source}: certificate {}: {e}", i + 1))?;
        let name = if blocks.len() == 1 { source.to_owned() } else { format!("{source} (#{})", i + 1) };
        out.push(trusted(&cert, name)?);
    }
    if out.is_empty() {
        return Err(format!("{source}: no PEM certificate found"));
    }
    Ok(out)
}

impl TrustStore {
    /// AWS's published certificates (see `certs/README.md`).
    pub(crate) fn builtin() -> Result<Self, String> {
        let mut s = Self::default();
        for (region, pem) in builtin::RSA2048 {
            s.add(Proof::Rsa2048, region, parse_pem(pem, &format!("built-in rsa2048/{region}"))?)?;
        }
        for (region, pem) in builtin::RSA {
            s.add(Proof::Signature, region, parse_pem(pem, &format!("built-in rsa/{region}"))?)?;
        }
        s.add(Proof::Pkcs7, ANY_REGION, parse_pem(builtin::DSA_GLOBAL, "built-in dsa/aws-dsa-global")?)?;
        Ok(s)
    }

    /// Trusts `certs` for `proof` in `region` (or every region for `*`); refuses a
    /// key that cannot verify that proof.
    pub(crate) fn add(&mut self, proof: Proof, region: &str, certs: Vec<TrustedCert>) -> Result<(), String> {
        for c in &certs {
            match (&c.key, proof) {
                (Key::Rsa { bits, .. }, Proof::Rsa2048) if *bits < 2048 => {
                    return Err(format!(
                        "{}: RSA-{bits} key; the rsa2048 proof needs at least 2048 bits",
                        c.source
                    ));
                }
                (Key::Dsa(_), Proof::Rsa2048 | Proof::Signature) => {
                    return Err(format!("{}: DSA key; the {proof} proof is signed with RSA", c.source));
                }
                _ => {}
            }
        }
        self.by.entry((proof, region.to_owned())).or_default().extend(certs);
        Ok(())
    }

    /// The certificates that may sign a `proof` for `region`.
    pub(crate) fn for_region(&self, proof: Proof, region: &str) -> Vec<&TrustedCert> {
        let exact = self.by.get(&(proof, region.to_owned())).into_iter().flatten();
        let any = self.by.get(&(proof, ANY_REGION.to_owned())).into_iter().flatten();
        exact.chain(any).collect()
    }

    /// Whether a certificate for exactly `region` (not `*`) verifies `proof`.
    pub(crate) fn has_region(&self, proof: Proof, region: &str) -> bool {
        self.by.get(&(proof, region.to_owned())).is_some_and(|c| !c.is_empty())
    }

    /// Whether any certificate, for any region, verifies `proof`.
    pub(crate) fn has_any(&self, proof: Proof) -> bool {
        self.by.iter().any(|((p, _), certs)| *p == proof && !certs.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_certificate_loads_under_its_region_and_proof() {
        let s = TrustStore::builtin().unwrap();
        assert_eq!(builtin::RSA2048.len(), 39);
        assert_eq!(builtin::RSA.len(), 39);
        for (region, _) in builtin::RSA2048 {
            let certs = s.for_region(Proof::Rsa2048, region);
            assert_eq!(certs.len(), 1, "{region}");
            assert!(matches!(certs[0].key, Key::Rsa { bits: 2048, .. }), "{region}");
            assert!(s.has_region(Proof::Signature, region), "{region}");
            // The legacy proof: the global DSA certificate, for every region.
            let dsa = s.for_region(Proof::Pkcs7, region);
            assert!(matches!(dsa[..], [TrustedCert { key: Key::Dsa(_), .. }]), "{region}");
            assert!(!s.has_region(Proof::Pkcs7, region));
        }
        assert!(s.for_region(Proof::Rsa2048, "xx-nowhere-1").is_empty());
        assert!(s.for_region(Proof::Signature, "xx-nowhere-1").is_empty());
    }

    #[test]
    fn non_certificates_are_refused() {
        assert!(parse_pem("", "x").unwrap_err().contains("no PEM certificate"));
        let key = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(parse_pem(key, "x").unwrap_err().contains("not CERTIFICATE"));
        let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(parse_pem(junk, "x").unwrap_err().starts_with("x: certificate 1"));
    }
}
