//! PKCS#7 (CMS) SignedData as EC2 serves it, and its verification.
//!
//! AWS encodes the `pkcs7` and `rsa2048` proofs in BER: indefinite lengths, and the
//! document in a constructed OCTET STRING. The `cms` crate decodes BER, but its
//! `EncapsulatedContentInfo` holds the content as `ANY`, and an `ANY` loses the
//! "constructed" bit of a BER string (its bytes would then still carry the inner
//! segment headers). So the SignedData is decoded here with the same layout as
//! `cms::signed_data::SignedData`, except that the content is typed OCTET STRING, which
//! `der` reassembles from its segments. Everything else (signer infos, signer
//! identifiers, attributes) is the `cms` crate's.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self as rsa, UnparsedPublicKey, VerificationAlgorithm};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::revocation::RevocationInfoChoices;
use cms::signed_data::{
    CertificateSet, DigestAlgorithmIdentifiers, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Any, Decode, Encode, EncodingRules, Sequence};
use dsa::signature::hazmat::PrehashVerifier;
use ferrid_attest::AttestError;

use crate::oid;
use crate::trust::{Key, TrustedCert};

/// `EncapsulatedContentInfo` with the content typed as OCTET STRING.
#[derive(Sequence)]
struct EncapsulatedContent {
    econtent_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    econtent: Option<OctetString>,
}

/// `SignedData` (RFC 5652 §5.1). Embedded certificates and CRLs are decoded but never
/// used: a signer is only ever looked up among the configured certificates.
#[derive(Sequence)]
struct SignedData {
    version: CmsVersion,
    digest_algorithms: DigestAlgorithmIdentifiers,
    encap_content_info: EncapsulatedContent,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    certificates: Option<CertificateSet>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    crls: Option<RevocationInfoChoices>,
    signer_infos: SignerInfos,
}

/// A parsed, not yet verified, SignedData with one signer.
pub(crate) struct Signed {
    /// The encapsulated content (the instance identity document).
    pub(crate) content: Vec<u8>,
    signer: SignerInfo,
}

fn malformed(what: &str, e: impl std::fmt::Display) -> AttestError {
    AttestError::Malformed(format!("PKCS#7: {what}: {e}"))
}

/// Decodes a BER or DER `ContentInfo` holding a `SignedData` with one signer and its
/// content.
pub(crate) fn parse(ber: &[u8]) -> Result<Signed, AttestError> {
    let ci = ContentInfo::from_ber(ber).map_err(|e| malformed("not a ContentInfo", e))?;
    if ci.content_type != oid::SIGNED_DATA {
        return Err(AttestError::Malformed(format!(
            "PKCS#7: content type is {}, not signedData",
            ci.content_type
        )));
    }
    let sd: SignedData =
        ci.content.decode_as_encoding(EncodingRules::Ber).map_err(|e| malformed("not a SignedData", e))?;
    let _ = (sd.version, sd.digest_algorithms, sd.certificates, sd.crls);
    if sd.encap_content_info.econtent_type != oid::DATA {
        return Err(AttestError::Malformed(format!(
            "PKCS#7: encapsulated content type is {}, not data",
            sd.encap_content_info.econtent_type
        )));
    }
    let content = sd
        .encap_content_info
        .econtent
        .ok_or_else(|| AttestError::Malformed("PKCS#7: detached signature, no document inside".into()))?
        .into_bytes()
        .into_vec();
    let mut signers = sd.signer_infos.0.into_vec();
    if signers.len() != 1 {
        return Err(AttestError::Malformed(format!(
            "PKCS#7: {} signers; an instance identity document has exactly one",
            signers.len()
        )));
    }
    let signer = signers.remove(0);
    Ok(Signed { content, signer })
}

/// What a proof accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// SHA-1 digests (the legacy `pkcs7` proof).
    pub(crate) sha1: bool,
    /// The smallest RSA key.
    pub(crate) min_rsa_bits: usize,
    /// DSA signers.
    pub(crate) dsa: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Digest {
    Sha1,
    Sha256,
}

impl Digest {
    fn of(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            Self::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &digest::SHA256,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }

    fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA-1",
            Self::Sha256 => "SHA-256",
        }
    }
}

fn signer_matches(sid: &SignerIdentifier, cert: &TrustedCert) -> bool {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(isn) => {
            isn.issuer == cert.issuer && isn.serial_number == cert.serial
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => cert.ski.as_deref() == Some(ski.0.as_bytes()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn describe_sid(sid: &SignerIdentifier) -> String {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(isn) => {
            let serial = isn.serial_number.as_bytes();
            let start = serial.iter().position(|b| *b != 0).unwrap_or(serial.len().saturating_sub(1));
            format!("issuer \"{}\", serial {}", isn.issuer, hex(&serial[start..]))
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            format!("subject key identifier {}", hex(ski.0.as_bytes()))
        }
    }
}

/// The single value of the signed attribute `oid`, if present exactly once.
fn attribute<'a>(signer: &'a SignerInfo, id: ObjectIdentifier, name: &str) -> Result<&'a Any, AttestError> {
    let attrs = signer.signed_attrs.as_ref().map(|a| a.as_slice()).unwrap_or_default();
    let mut found = attrs.iter().filter(|a| a.oid == id);
    match (found.next(), found.next()) {
        (Some(a), None) if a.values.len() == 1 => Ok(&a.values.as_slice()[0]),
        (Some(_), None) => Err(AttestError::Rejected(format!(
            "PKCS#7: the {name} signed attribute must have exactly one value"
        ))),
        (None, _) => Err(AttestError::Rejected(format!("PKCS#7: no {name} signed attribute"))),
        (Some(_), Some(_)) => {
            Err(AttestError::Rejected(format!("PKCS#7: the {name} signed attribute appears twice")))
        }
    }
}

/// The bytes the signer signed: the DER SET of signed attributes when there are any
/// (after checking that they describe this content), else the content itself.
fn signed_message(signer: &SignerInfo, content: &[u8], digest: Digest) -> Result<Vec<u8>, AttestError> {
    let Some(attrs) = &signer.signed_attrs else {
        return Ok(content.to_vec());
    };
    let content_type: ObjectIdentifier = attribute(signer, oid::CONTENT_TYPE, "content-type")?
        .decode_as()
        .map_err(|e| AttestError::Rejected(format!("PKCS#7: content-type attribute: {e}")))?;
    if content_type != oid::DATA {
        return Err(AttestError::Rejected(format!(
            "PKCS#7: the content-type attribute says {content_type}, not data"
        )));
    }
    let claimed: OctetString = attribute(signer, oid::MESSAGE_DIGEST, "message-digest")?
        .decode_as()
        .map_err(|e| AttestError::Rejected(format!("PKCS#7: message-digest attribute: {e}")))?;
    if claimed.as_bytes() != digest.of(content).as_slice() {
        return Err(AttestError::Rejected(format!(
            "PKCS#7: the message-digest attribute does not match the {} of the document",
            digest.name()
        )));
    }
    attrs.to_der().map_err(|e| AttestError::Malformed(format!("PKCS#7: re-encoding signed attributes: {e}")))
}

/// Verifies that one of `certs` signed `signed`, under `rules`; returns that
/// certificate. Embedded certificates are never consulted.
pub(crate) fn verify<'c>(
    signed: &Signed,
    certs: &[&'c TrustedCert],
    rules: Rules,
) -> Result<&'c TrustedCert, AttestError> {
    let signer = &signed.signer;
    let digest = match signer.digest_alg.oid {
        oid::SHA256 => Digest::Sha256,
        oid::SHA1 if rules.sha1 => Digest::Sha1,
        oid::SHA1 => {
            return Err(AttestError::Rejected("PKCS#7: SHA-1 digest; this proof requires SHA-256".into()));
        }
        other => {
            return Err(AttestError::Rejected(format!("PKCS#7: unsupported digest algorithm {other}")));
        }
    };
    let cert = certs.iter().copied().find(|c| signer_matches(&signer.sid, c)).ok_or_else(|| {
        AttestError::Rejected(format!(
            "PKCS#7: signed by {}, which is not a trusted AWS certificate for this region and proof",
            describe_sid(&signer.sid)
        ))
    })?;
    let message = signed_message(signer, &signed.content, digest)?;
    let signature = signer.signature.as_bytes();
    let alg = signer.signature_algorithm.oid;
    let bad =
        || AttestError::Rejected(format!("PKCS#7: the signature does not verify under {}", cert.source));
    match &cert.key {
        Key::Rsa { der, bits } => {
            if *bits < rules.min_rsa_bits {
                return Err(AttestError::Rejected(format!(
                    "PKCS#7: {} has an RSA-{bits} key; this proof requires at least {}",
                    cert.source, rules.min_rsa_bits
                )));
            }
            let consistent = alg == oid::RSA_ENCRYPTION
                || (alg == oid::SHA256_WITH_RSA && digest == Digest::Sha256)
                || (alg == oid::SHA1_WITH_RSA && digest == Digest::Sha1);
            if !consistent {
                return Err(AttestError::Rejected(format!(
                    "PKCS#7: signature algorithm {alg} does not fit an RSA key with {}",
                    digest.name()
                )));
            }
            let v: &'static dyn VerificationAlgorithm = match digest {
                Digest::Sha256 if *bits >= 2048 => &rsa::RSA_PKCS1_2048_8192_SHA256,
                Digest::Sha256 => &rsa::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
                Digest::Sha1 => &rsa::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
            };
            UnparsedPublicKey::new(v, der).verify(&message, signature).map_err(|_| bad())?;
        }
        Key::Dsa(key) => {
            if !rules.dsa {
                return Err(AttestError::Rejected(format!(
                    "PKCS#7: {} has a DSA key; this proof requires RSA",
                    cert.source
                )));
            }
            let consistent = alg == oid::DSA
                || (alg == oid::DSA_WITH_SHA1 && digest == Digest::Sha1)
                || (alg == oid::DSA_WITH_SHA256 && digest == Digest::Sha256);
            if !consistent {
                return Err(AttestError::Rejected(format!(
                    "PKCS#7: signature algorithm {alg} does not fit a DSA key with {}",
                    digest.name()
                )));
            }
            let sig = dsa::Signature::from_der(signature).map_err(|_| bad())?;
            key.verify_prehash(&digest.of(&message), &sig).map_err(|_| bad())?;
        }
    }
    Ok(cert)
}

/// Verifies the `signature` proof: RSA PKCS#1 v1.5 with SHA-256 over the document,
/// under any of `certs`.
pub(crate) fn verify_rsa_signature<'c>(
    document: &[u8],
    signature: &[u8],
    certs: &[&'c TrustedCert],
) -> Result<&'c TrustedCert, AttestError> {
    for cert in certs {
        if let Key::Rsa { der, .. } = &cert.key
            && UnparsedPublicKey::new(&rsa::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY, der)
                .verify(document, signature)
                .is_ok()
        {
            return Ok(cert);
        }
    }
    let names: Vec<&str> = certs.iter().map(|c| c.source.as_str()).collect();
    Err(AttestError::Rejected(format!(
        "the signature does not verify under the region's certificates ({})",
        names.join(", ")
    )))
}
