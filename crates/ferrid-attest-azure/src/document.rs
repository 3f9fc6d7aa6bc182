//! The IMDS attested document: a PKCS#7 (CMS) SignedData, DER, whose content is a JSON
//! document about the VM, signed with the key of the IMDS TLS certificate
//! (`metadata.azure.com`; `metadata.azure.us` and others in sovereign clouds).
//!
//! Verification, in order:
//!
//! 1. DER `ContentInfo` → `SignedData` with `data` content and exactly one signer, whose
//!    certificate is in the SignedData (IMDS embeds the leaf only).
//! 2. The signature: RSA PKCS#1 v1.5 with SHA-256. The digest algorithm may be named
//!    `sha256` or, as IMDS does, `sha256WithRSAEncryption`. Without signed attributes
//!    the signature covers the content; with them, the `message-digest` attribute must
//!    be SHA-256 of the content, `content-type` must be `data`, and the signature covers
//!    the DER `SET OF` the attributes.
//! 3. The content's `timeStamp.createdOn` (`MM/DD/YY hh:mm:ss -0000`, UTC).
//! 4. The signer's chain to a trusted root through the known intermediates, by
//!    rustls-webpki, **at `createdOn`** (the caller also requires `createdOn` to be
//!    recent), for TLS server authentication. When the issuer is unknown and the caller
//!    gives an [`crate::aia::Fetcher`] ([`verify_document_with_aia`]), the intermediates
//!    named by the leaf's Authority Information Access URIs are fetched and the chain
//!    verified again with them.
//! 5. The leaf's DNS names (subjectAltName) against the allowed names.
//!
//! Why rustls-webpki: it is the path builder rustls trusts for every TLS connection of
//! this project, with name and basic constraints, key usage, validity at an injected
//! time and signature-algorithm checks done once and fuzzed upstream; rebuilding those
//! with x509-parser and aws-lc-rs would be a second, untested implementation.
use aws_lc_rs::digest;
use der::asn1::OctetString;
use der::oid::ObjectIdentifier;
use der::{Decode, Encode};
use ferrid_attest::AttestError;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::Deserialize;

const SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const CONTENT_TYPE_ATTR: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const MESSAGE_DIGEST_ATTR: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");

/// The largest DER document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 32 * 1024;

/// The IMDS leaf names accepted by default: the public cloud, Azure Government and
/// Azure operated by 21Vianet (China), bare and with a region label.
pub const DEFAULT_ALLOWED_NAMES: [&str; 6] = [
    "metadata.azure.com",
    "*.metadata.azure.com",
    "metadata.azure.us",
    "*.metadata.azure.us",
    "metadata.azure.cn",
    "*.metadata.azure.cn",
];

/// Trusted roots, known intermediates and the accepted leaf names.
#[derive(Debug, Clone)]
pub struct Trust {
    anchors: Vec<TrustAnchor<'static>>,
    intermediates: Vec<CertificateDer<'static>>,
    names: Vec<String>,
}

fn certs_from_pem(what: &str, pem_text: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let blocks = pem::parse_many(pem_text).map_err(|e| format!("{what}: {e}"))?;
    let certs: Vec<_> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(format!("{what}: no CERTIFICATE blocks"));
    }
    Ok(certs)
}

impl Trust {
    /// From PEM texts of the roots and the intermediates, and the leaf-name patterns
    /// (`name` or `*.suffix`: exactly one label before `suffix`).
    pub fn from_pem(roots: &[u8], intermediates: &[u8], names: &[String]) -> Result<Self, String> {
        let mut anchors = Vec::new();
        for c in certs_from_pem("roots", roots)? {
            let a = webpki::anchor_from_trusted_cert(&c).map_err(|e| format!("roots: a certificate: {e}"))?;
            anchors.push(a.to_owned());
        }
        let intermediates = if intermediates.iter().all(u8::is_ascii_whitespace) {
            Vec::new()
        } else {
            certs_from_pem("intermediates", intermediates)?
        };
        for c in &intermediates {
            webpki::EndEntityCert::try_from(c).map_err(|e| format!("intermediates: a certificate: {e}"))?;
        }
        if names.is_empty() {
            return Err("allowed_names: empty; no document could be accepted".into());
        }
        for n in names {
            let bare = n.strip_prefix("*.").unwrap_or(n);
            if bare.is_empty() || bare.contains('*') || !bare.contains('.') {
                return Err(format!("allowed_names: {n:?} must be a DNS name or *.<DNS name>"));
            }
        }
        Ok(Self { anchors, intermediates, names: names.iter().map(|n| n.to_ascii_lowercase()).collect() })
    }

    /// The built-in certificates (`certs/` of this crate: Baltimore CyberTrust Root and
    /// DigiCert Global Root G2; Microsoft RSA TLS CA 01 and Microsoft Azure TLS Issuing
    /// CA 05) and [`DEFAULT_ALLOWED_NAMES`].
    pub fn builtin() -> Self {
        let names: Vec<String> = DEFAULT_ALLOWED_NAMES.iter().map(|s| (*s).to_owned()).collect();
        Self::from_pem(BUILTIN_ROOTS.as_bytes(), BUILTIN_INTERMEDIATES.as_bytes(), &names)
            .expect("the built-in certificates parse")
    }

    fn name_allowed(&self, dns: &str) -> bool {
        let dns = dns.to_ascii_lowercase();
        self.names.iter().any(|p| match p.strip_prefix("*.") {
            Some(suffix) => dns
                .strip_suffix(suffix)
                .and_then(|l| l.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
            None => *p == dns,
        })
    }
}

/// The built-in roots (PEM).
pub const BUILTIN_ROOTS: &str =
    concat!(include_str!("../certs/baltimore_root.pem"), include_str!("../certs/digicert_g2_root.pem"));
/// The built-in intermediates (PEM).
pub const BUILTIN_INTERMEDIATES: &str = concat!(
    include_str!("../certs/ms_rsa_tls_ca_01.pem"),
    include_str!("../certs/ms_azure_tls_issuing_ca_05.pem")
);

/// `timeStamp` of the document.
#[derive(Debug, Clone, Deserialize)]
struct TimeStamp {
    #[serde(rename = "createdOn")]
    created_on: String,
    #[serde(rename = "expiresOn")]
    expires_on: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Content {
    #[serde(default)]
    nonce: Option<String>,
    #[serde(rename = "vmId")]
    vm_id: String,
    #[serde(rename = "subscriptionId", default)]
    subscription_id: Option<String>,
    #[serde(rename = "timeStamp")]
    time_stamp: TimeStamp,
}

/// A verified attested document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The nonce the document was requested with.
    pub nonce: Option<String>,
    /// The VM's unique ID.
    pub vm_id: String,
    /// The VM's subscription (api-version 2019-04-30 and later).
    pub subscription_id: Option<String>,
    /// `timeStamp.createdOn`, Unix seconds.
    pub created_on: i64,
    /// `timeStamp.expiresOn`, Unix seconds.
    pub expires_on: i64,
    /// The signer's DNS names.
    pub signer_names: Vec<String>,
    /// The signed content, verbatim.
    pub content: Vec<u8>,
}

fn malformed(what: &str, e: impl std::fmt::Display) -> AttestError {
    AttestError::Malformed(format!("attested document: {what}: {e}"))
}

fn rejected(what: impl std::fmt::Display) -> AttestError {
    AttestError::Rejected(format!("attested document: {what}"))
}

/// Parses IMDS's `MM/DD/YY hh:mm:ss -0000` (always UTC) into Unix seconds.
pub fn parse_imds_time(s: &str) -> Option<i64> {
    let (date, rest) = s.trim().split_once(' ')?;
    let (clock, zone) = rest.split_once(' ').unwrap_or((rest, "-0000"));
    if zone != "-0000" && zone != "+0000" && zone != "Z" {
        return None;
    }
    fn num(p: &str) -> Option<u8> {
        (p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit())).then(|| p.parse().ok())?
    }
    let d: Vec<&str> = date.split('/').collect();
    let c: Vec<&str> = clock.split(':').collect();
    if d.len() != 3 || c.len() != 3 {
        return None;
    }
    let (month, day, year) = (num(d[0])?, num(d[1])?, i32::from(num(d[2])?));
    let (h, m, sec) = (num(c[0])?, num(c[1])?, num(c[2])?);
    let date = time::Date::from_calendar_date(2000 + year, time::Month::try_from(month).ok()?, day).ok()?;
    let t = time::Time::from_hms(h, m, sec).ok()?;
    Some(time::PrimitiveDateTime::new(date, t).assume_utc().unix_timestamp())
}

/// The signer certificate, verbatim DER, and its parse.
fn signer_certificate(
    sd: &cms::signed_data::SignedData,
    sid: &cms::signed_data::SignerIdentifier,
) -> Result<Vec<u8>, AttestError> {
    use cms::cert::CertificateChoices;
    use cms::signed_data::SignerIdentifier;
    let certs =
        sd.certificates.as_ref().ok_or_else(|| rejected("no certificates (the signer's is required)"))?;
    for choice in certs.0.iter() {
        let CertificateChoices::Certificate(cert) = choice else { continue };
        let tbs = cert.tbs_certificate();
        let matches = match sid {
            SignerIdentifier::IssuerAndSerialNumber(isn) => {
                tbs.issuer() == &isn.issuer && tbs.serial_number() == &isn.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => tbs.extensions().is_some_and(|exts| {
                exts.iter().any(|e| {
                    e.extn_id == SUBJECT_KEY_ID
                        && OctetString::from_der(e.extn_value.as_bytes()).is_ok_and(|v| v == ski.0)
                })
            }),
        };
        if matches {
            return cert.to_der().map_err(|e| malformed("re-encoding the signer certificate", e));
        }
    }
    Err(rejected("the signer's certificate is not in the document"))
}

/// A document whose structure and signature verify; its chain and names not checked yet.
struct Signed {
    leaf: CertificateDer<'static>,
    content: Content,
    raw: Vec<u8>,
    created_on: i64,
    expires_on: i64,
}

/// Steps 1-3: structure, signature, time stamps.
fn verify_signed(der: &[u8]) -> Result<Signed, AttestError> {
    if der.len() > MAX_DOCUMENT_BYTES {
        return Err(AttestError::TooLarge { limit: MAX_DOCUMENT_BYTES, got: der.len() });
    }
    let ci =
        cms::content_info::ContentInfo::from_der(der).map_err(|e| malformed("not a DER ContentInfo", e))?;
    if ci.content_type != SIGNED_DATA {
        return Err(malformed("content type", format!("{} is not signedData", ci.content_type)));
    }
    let sd: cms::signed_data::SignedData =
        ci.content.decode_as().map_err(|e| malformed("not a SignedData", e))?;
    if sd.encap_content_info.econtent_type != DATA {
        return Err(malformed(
            "encapsulated content type",
            format!("{} is not data", sd.encap_content_info.econtent_type),
        ));
    }
    let content = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| malformed("content", "absent (detached signatures are not accepted)"))?;
    let content: OctetString = content.decode_as().map_err(|e| malformed("content", e))?;
    let content = content.as_bytes();
    let signers: Vec<_> = sd.signer_infos.0.iter().collect();
    let [signer] = signers.as_slice() else {
        return Err(rejected(format!("{} signers; exactly one is accepted", signers.len())));
    };
    if signer.digest_alg.oid != SHA256 && signer.digest_alg.oid != SHA256_WITH_RSA {
        return Err(rejected(format!("digest algorithm {} is not SHA-256", signer.digest_alg.oid)));
    }
    if signer.signature_algorithm.oid != RSA_ENCRYPTION && signer.signature_algorithm.oid != SHA256_WITH_RSA {
        return Err(rejected(format!("signature algorithm {} is not RSA", signer.signature_algorithm.oid)));
    }
    let leaf_der = signer_certificate(&sd, &signer.sid)?;
    let leaf_der = CertificateDer::from(leaf_der);
    let leaf = webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| malformed("signer certificate", e))?;

    // What the signature covers.
    let signed: Vec<u8> = match &signer.signed_attrs {
        None => content.to_vec(),
        Some(attrs) => {
            let one = |oid: ObjectIdentifier, name: &str| -> Result<&der::Any, AttestError> {
                let found: Vec<_> = attrs.iter().filter(|a| a.oid == oid).collect();
                match found.as_slice() {
                    [a] if a.values.len() == 1 => Ok(a.values.iter().next().expect("one value")),
                    _ => Err(rejected(format!("signed attributes must hold exactly one {name}"))),
                }
            };
            let ct: ObjectIdentifier = one(CONTENT_TYPE_ATTR, "content-type")?
                .decode_as()
                .map_err(|e| malformed("content-type", e))?;
            if ct != DATA {
                return Err(rejected(format!("content-type attribute {ct} is not data")));
            }
            let md: OctetString = one(MESSAGE_DIGEST_ATTR, "message-digest")?
                .decode_as()
                .map_err(|e| malformed("message-digest", e))?;
            if md.as_bytes() != digest::digest(&digest::SHA256, content).as_ref() {
                return Err(rejected("the message-digest attribute does not match the content"));
            }
            attrs.to_der().map_err(|e| malformed("re-encoding signed attributes", e))?
        }
    };
    leaf.verify_signature(
        webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
        &signed,
        signer.signature.as_bytes(),
    )
    .map_err(|e| rejected(format!("signature does not verify ({e})")))?;

    // The content.
    let c: Content =
        serde_json::from_slice(content).map_err(|e| malformed("content is not the expected JSON", e))?;
    let created_on = parse_imds_time(&c.time_stamp.created_on).ok_or_else(|| {
        malformed(
            "timeStamp.createdOn",
            format!("{:?} is not MM/DD/YY hh:mm:ss -0000", c.time_stamp.created_on),
        )
    })?;
    let expires_on = parse_imds_time(&c.time_stamp.expires_on).ok_or_else(|| {
        malformed(
            "timeStamp.expiresOn",
            format!("{:?} is not MM/DD/YY hh:mm:ss -0000", c.time_stamp.expires_on),
        )
    })?;

    Ok(Signed { leaf: leaf_der, content: c, raw: content.to_vec(), created_on, expires_on })
}

impl Signed {
    /// `chain_time`, or the document's `createdOn`.
    fn chain_time(&self, chain_time: Option<i64>) -> UnixTime {
        let at = chain_time.unwrap_or(self.created_on);
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(u64::try_from(at).unwrap_or(0)))
    }

    /// Step 4: the chain through the known intermediates and `extra` to a root, at `at`.
    /// Returns the DER of the intermediates on the path.
    fn chain(
        &self,
        trust: &Trust,
        extra: &[CertificateDer<'static>],
        at: UnixTime,
    ) -> Result<Vec<Vec<u8>>, webpki::Error> {
        let leaf = webpki::EndEntityCert::try_from(&self.leaf)?;
        let intermediates: std::borrow::Cow<'_, [CertificateDer<'static>]> = if extra.is_empty() {
            std::borrow::Cow::Borrowed(&trust.intermediates)
        } else {
            trust.intermediates.iter().chain(extra).cloned().collect::<Vec<_>>().into()
        };
        let path = leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &trust.anchors,
            &intermediates,
            at,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )?;
        Ok(path.intermediate_certificates().map(|c| c.der().to_vec()).collect())
    }

    /// Step 5: the leaf's DNS names, one of which must be allowed.
    fn names(&self, trust: &Trust) -> Result<Vec<String>, AttestError> {
        let leaf =
            webpki::EndEntityCert::try_from(&self.leaf).map_err(|e| malformed("signer certificate", e))?;
        let signer_names: Vec<String> = leaf.valid_dns_names().map(str::to_owned).collect();
        if !signer_names.iter().any(|n| trust.name_allowed(n)) {
            return Err(rejected(format!(
                "signer certificate names {signer_names:?} match none of allowed_names {:?}",
                trust.names
            )));
        }
        Ok(signer_names)
    }

    fn into_document(self, signer_names: Vec<String>) -> Document {
        Document {
            nonce: self.content.nonce,
            vm_id: self.content.vm_id,
            subscription_id: self.content.subscription_id,
            created_on: self.created_on,
            expires_on: self.expires_on,
            signer_names,
            content: self.raw,
        }
    }
}

/// A chain error as the attestation error; `context` follows the error (e.g. which
/// fetched intermediates were tried).
fn chain_error(e: webpki::Error, context: &str) -> AttestError {
    let msg = format!("attested document: signer certificate chain: {e}{context}");
    match e {
        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
            AttestError::Expired(msg)
        }
        _ => AttestError::Rejected(msg),
    }
}

/// Verifies a DER attested document against `trust`, validating the chain at
/// `chain_time` (Unix seconds) or, when `None`, at the document's own `createdOn`.
/// Policy (nonce, freshness, subscription) is the caller's. Fetches nothing: an issuer
/// missing from `trust` is `UnknownIssuer` (see [`verify_document_with_aia`]).
pub fn verify_document(der: &[u8], trust: &Trust, chain_time: Option<i64>) -> Result<Document, AttestError> {
    let s = verify_signed(der)?;
    s.chain(trust, &[], s.chain_time(chain_time)).map_err(|e| chain_error(e, ""))?;
    let names = s.names(trust)?;
    Ok(s.into_document(names))
}

/// Like [`verify_document`], but when the chain does not build because the signer's
/// issuer is unknown (`UnknownIssuer`), the intermediates named by the signer
/// certificate's caIssuers URIs are fetched (or taken from `fetcher`'s cache, see
/// [`crate::aia`]) and the chain is verified again with them as candidate
/// intermediates. The leaf's names are checked before anything is fetched. `now` (Unix
/// seconds) drives the cache and the rate limits.
///
/// Errors: `Unavailable` when a fetch failed for network reasons and nothing was
/// fetched; `Rejected` when the certificate names no allowed caIssuers URI, a response
/// is not a certificate, or the chain still does not verify.
pub async fn verify_document_with_aia(
    der: &[u8],
    trust: &Trust,
    chain_time: Option<i64>,
    fetcher: &crate::aia::Fetcher,
    now: i64,
) -> Result<Document, AttestError> {
    let s = verify_signed(der)?;
    let at = s.chain_time(chain_time);
    match s.chain(trust, &[], at) {
        Ok(_) => {}
        Err(webpki::Error::UnknownIssuer) => {
            // No request on behalf of a certificate that would be refused anyway.
            s.names(trust)?;
            let fetched = fetcher
                .issuers_of(s.leaf.as_ref(), now)
                .await
                .map_err(|e| rejected(format!("signer certificate chain: UnknownIssuer; {e}")))?;
            if fetched.certs.is_empty() {
                return Err(crate::aia::nothing_fetched(&fetched));
            }
            match s.chain(trust, &fetched.all(), at) {
                Ok(path) => fetcher.confirm(&fetched.sources_of(&path)),
                Err(e) => {
                    let urls: Vec<&str> = fetched.certs.iter().map(|(u, _)| u.as_str()).collect();
                    let mut context = format!(", also with the certificate fetched from {}", urls.join(", "));
                    if !fetched.failures.is_empty() {
                        context = format!("{context} ({})", fetched.describe_failures());
                    }
                    return Err(chain_error(e, &context));
                }
            }
        }
        Err(e) => return Err(chain_error(e, "")),
    }
    let names = s.names(trust)?;
    Ok(s.into_document(names))
}

/// IMDS's answer to `/metadata/attested/document`: `{"encoding": "pkcs7", "signature":
/// "<base64 DER>"}`. Returns the DER.
pub fn parse_response(bytes: &[u8]) -> Result<Vec<u8>, AttestError> {
    #[derive(Deserialize)]
    struct Response {
        encoding: String,
        signature: String,
    }
    use base64::Engine;
    let r: Response = serde_json::from_slice(bytes)
        .map_err(|e| malformed("expected {\"encoding\": \"pkcs7\", \"signature\": ...}", e))?;
    if r.encoding != "pkcs7" {
        return Err(malformed("encoding", format!("{:?} is not pkcs7", r.encoding)));
    }
    let b64: String = r.signature.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| malformed("signature is not base64", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imds_times_parse() {
        assert_eq!(parse_imds_time("04/19/22 01:27:21 -0000"), Some(1_650_331_641));
        assert_eq!(parse_imds_time("01/04/21 13:55:34 -0000"), Some(1_609_768_534));
        for bad in [
            "",
            "04/19/22",
            "13/01/22 00:00:00 -0000",
            "4/19/22 01:27:21 -0000",
            "04/19/22 01:27:21 +0100",
            "02/30/22 00:00:00 -0000",
            "04/19/22 24:00:00 -0000",
            "+4/19/22 01:27:21 -0000",
        ] {
            assert_eq!(parse_imds_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn name_patterns_match_one_label() {
        let t = Trust::builtin();
        for ok in
            ["metadata.azure.com", "eastus.metadata.azure.com", "METADATA.AZURE.US", "x.metadata.azure.cn"]
        {
            assert!(t.name_allowed(ok), "{ok}");
        }
        for bad in [
            "a.b.metadata.azure.com",
            ".metadata.azure.com",
            "metadata.azure.com.evil",
            "evilmetadata.azure.com",
            "azure.com",
        ] {
            assert!(!t.name_allowed(bad), "{bad}");
        }
        assert!(Trust::from_pem(BUILTIN_ROOTS.as_bytes(), b"", &["*".into()]).is_err());
        assert!(Trust::from_pem(BUILTIN_ROOTS.as_bytes(), b"", &[]).is_err());
        assert!(Trust::from_pem(b"", b"", &["metadata.azure.com".into()]).is_err());
    }
}
