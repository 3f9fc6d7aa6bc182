//! X.509-SVID validation (SPIFFE X509-SVID specification) against one trust domain's
//! X.509 authorities, at a time the caller passes in.
//!
//! Rules, each its own [`X509Error`] variant:
//! - the chain is non-empty, at most [`MAX_CHAIN_LEN`] certificates and
//!   [`MAX_CHAIN_BYTES`] bytes, every certificate parses;
//! - the leaf has exactly one URI SAN (§2), a SPIFFE ID with a path (a leaf is a
//!   workload, never the trust domain itself), in the bundle's trust domain (§5.2);
//! - the leaf is not a CA: `basicConstraints` `cA` is false (§4.1);
//! - the leaf has the key usage extension with `digitalSignature`, and neither
//!   `keyCertSign` nor `cRLSign` (§4.3);
//! - every signing certificate in the chain is a CA with `keyCertSign` (§4.1, §4.3),
//!   and its SPIFFE ID, when it has one, has no path (§2) and is in the trust domain;
//! - the leaf is inside its validity window at `now`;
//! - the chain builds to one of the bundle's authorities, every signature verifies and
//!   every certificate is valid at `now` (rustls-webpki path building, aws-lc-rs).
use std::time::Duration;

use ferrid_types::{Serial, SpiffeId, TrustDomain};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The longest chain accepted (leaf and intermediates).
pub const MAX_CHAIN_LEN: usize = 8;
/// The most bytes a chain may have.
pub const MAX_CHAIN_BYTES: usize = 64 * 1024;

/// The X.509 authorities of one trust domain: the roots (and any certificates) an
/// X.509-SVID of that trust domain must chain to.
#[derive(Debug, Clone)]
pub struct X509Bundle {
    trust_domain: TrustDomain,
    authorities: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl X509Bundle {
    /// A bundle of `authorities` (DER certificates) for `trust_domain`.
    pub fn new(trust_domain: TrustDomain, authorities: Vec<Vec<u8>>) -> Result<Self, X509Error> {
        let authorities: Vec<CertificateDer<'static>> =
            authorities.into_iter().map(CertificateDer::from).collect();
        let anchors = authorities
            .iter()
            .map(|c| {
                webpki::anchor_from_trusted_cert(c)
                    .map(|a| a.to_owned())
                    .map_err(|e| X509Error::BadAuthority(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { trust_domain, authorities, anchors })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The authorities (DER).
    pub fn authorities(&self) -> &[CertificateDer<'static>] {
        &self.authorities
    }

    /// Whether there are no authorities.
    pub fn is_empty(&self) -> bool {
        self.authorities.is_empty()
    }
}

/// Which extended key usage the leaf must allow when it lists any (SVIDs may list
/// none; Ferrid's carry both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SvidUsage {
    /// A TLS client (or any caller of a service): `clientAuth`.
    #[default]
    ClientAuth,
    /// A TLS server: `serverAuth`.
    ServerAuth,
}

/// A validated X.509-SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedX509Svid {
    /// The leaf's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The leaf's serial.
    pub serial: Serial,
    /// `notBefore` (Unix seconds).
    pub not_before: i64,
    /// `notAfter` (Unix seconds).
    pub not_after: i64,
}

/// Why an X.509-SVID was refused: one variant per rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum X509Error {
    /// No certificates.
    #[error("empty certificate chain")]
    EmptyChain,
    /// More than [`MAX_CHAIN_LEN`] certificates.
    #[error("chain of {0} certificates, the limit is {MAX_CHAIN_LEN}")]
    ChainTooLong(usize),
    /// More than [`MAX_CHAIN_BYTES`] bytes.
    #[error("chain of {0} bytes, the limit is {MAX_CHAIN_BYTES}")]
    ChainTooLarge(usize),
    /// A certificate does not parse.
    #[error("certificate {index} is malformed: {reason}")]
    Malformed {
        /// Position in the chain (0 = leaf).
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A bundle authority is not a usable trust anchor.
    #[error("bundle authority unusable: {0}")]
    BadAuthority(String),
    /// The bundle holds no authorities.
    #[error("the X.509 bundle for {0} is empty")]
    EmptyBundle(String),
    /// The leaf has no URI SAN.
    #[error("leaf has no URI SAN")]
    NoUriSan,
    /// The leaf has several URI SANs.
    #[error("leaf has {0} URI SANs, an X.509-SVID has exactly one")]
    MultipleUriSans(usize),
    /// The leaf's URI SAN is not a SPIFFE ID.
    #[error("leaf URI SAN is not a SPIFFE ID: {0}")]
    NotSpiffeId(String),
    /// The leaf's SPIFFE ID has no path (it names a trust domain, not a workload).
    #[error("leaf SPIFFE ID {0} has no path")]
    LeafIdWithoutPath(String),
    /// The leaf's SPIFFE ID is in another trust domain than the bundle's.
    #[error("SPIFFE ID {id} is not in trust domain {want}")]
    WrongTrustDomain {
        /// The leaf's ID.
        id: String,
        /// The bundle's trust domain.
        want: String,
    },
    /// The leaf is a CA (`basicConstraints` `cA` true).
    #[error("leaf certificate is a CA")]
    LeafIsCa,
    /// The leaf has no key usage extension.
    #[error("leaf has no key usage extension")]
    LeafWithoutKeyUsage,
    /// The leaf lacks `digitalSignature`.
    #[error("leaf key usage lacks digitalSignature")]
    LeafWithoutDigitalSignature,
    /// The leaf has `keyCertSign`.
    #[error("leaf key usage has keyCertSign")]
    LeafKeyCertSign,
    /// The leaf has `cRLSign`.
    #[error("leaf key usage has cRLSign")]
    LeafCrlSign,
    /// A signing certificate is not a CA.
    #[error("signing certificate {0} is not a CA")]
    SigningCertNotCa(usize),
    /// A signing certificate lacks `keyCertSign`.
    #[error("signing certificate {0} lacks keyCertSign")]
    SigningCertWithoutKeyCertSign(usize),
    /// A signing certificate's SPIFFE ID has a path, or is in another trust domain.
    #[error("signing certificate {index} has SPIFFE ID {id}, which is not its trust domain's ID")]
    SigningCertBadId {
        /// Position in the chain.
        index: usize,
        /// Its URI SAN.
        id: String,
    },
    /// The leaf's `notBefore` is after `now`.
    #[error("leaf not valid before {not_before} (now {now})")]
    NotYetValid {
        /// `notBefore`.
        not_before: i64,
        /// The verifier's time.
        now: i64,
    },
    /// The leaf's `notAfter` is before `now`.
    #[error("leaf expired at {not_after} (now {now})")]
    Expired {
        /// `notAfter`.
        not_after: i64,
        /// The verifier's time.
        now: i64,
    },
    /// A signature in the chain does not verify.
    #[error("a signature in the chain does not verify")]
    BadSignature,
    /// The chain leads to none of the bundle's authorities.
    #[error("the chain leads to no authority of the bundle")]
    UnknownIssuer,
    /// Path building failed for another reason (an intermediate outside its validity,
    /// a path length constraint, an unsupported algorithm, a wrong EKU …).
    #[error("path validation failed: {0}")]
    Path(String),
}

fn cert_err(index: usize) -> impl Fn(String) -> X509Error {
    move |reason| X509Error::Malformed { index, reason }
}

/// The SPIFFE ID in the single URI SAN of a certificate, with the count of URI SANs.
fn uri_sans<'a>(cert: &'a X509Certificate<'_>, index: usize) -> Result<Vec<&'a str>, X509Error> {
    let san = cert.subject_alternative_name().map_err(|e| cert_err(index)(e.to_string()))?;
    Ok(san
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|g| if let GeneralName::URI(u) = g { Some(*u) } else { None })
                .collect()
        })
        .unwrap_or_default())
}

/// Validates an X.509-SVID `chain` (leaf first, then intermediates; DER) against
/// `bundle` at `now` (Unix seconds). See the module documentation for the rules.
pub fn validate_x509_svid<C: AsRef<[u8]>>(
    chain: &[C],
    bundle: &X509Bundle,
    now: i64,
    usage: SvidUsage,
) -> Result<VerifiedX509Svid, X509Error> {
    if chain.is_empty() {
        return Err(X509Error::EmptyChain);
    }
    if chain.len() > MAX_CHAIN_LEN {
        return Err(X509Error::ChainTooLong(chain.len()));
    }
    let bytes: usize = chain.iter().map(|c| c.as_ref().len()).sum();
    if bytes > MAX_CHAIN_BYTES {
        return Err(X509Error::ChainTooLarge(bytes));
    }
    if bundle.is_empty() {
        return Err(X509Error::EmptyBundle(bundle.trust_domain.to_string()));
    }
    let td = &bundle.trust_domain;
    let mut parsed = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        let (rest, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| cert_err(i)(e.to_string()))?;
        if !rest.is_empty() {
            return Err(cert_err(i)("trailing bytes".into()));
        }
        parsed.push(cert);
    }
    let leaf = &parsed[0];

    // §2: exactly one URI SAN, a SPIFFE ID with a path, in the trust domain.
    let uris = uri_sans(leaf, 0)?;
    let uri = match uris.as_slice() {
        [] => return Err(X509Error::NoUriSan),
        [one] => *one,
        many => return Err(X509Error::MultipleUriSans(many.len())),
    };
    let id = SpiffeId::new(uri).map_err(|e| X509Error::NotSpiffeId(format!("{uri:?}: {e}")))?;
    if id.path().is_empty() {
        return Err(X509Error::LeafIdWithoutPath(id.to_string()));
    }
    if id.trust_domain() != td {
        return Err(X509Error::WrongTrustDomain { id: id.to_string(), want: td.to_string() });
    }

    // §4.1, §4.3: the leaf is no CA and signs only.
    let bc = leaf.basic_constraints().map_err(|e| cert_err(0)(e.to_string()))?;
    if bc.is_some_and(|b| b.value.ca) {
        return Err(X509Error::LeafIsCa);
    }
    let ku =
        leaf.key_usage().map_err(|e| cert_err(0)(e.to_string()))?.ok_or(X509Error::LeafWithoutKeyUsage)?;
    if ku.value.key_cert_sign() {
        return Err(X509Error::LeafKeyCertSign);
    }
    if ku.value.crl_sign() {
        return Err(X509Error::LeafCrlSign);
    }
    if !ku.value.digital_signature() {
        return Err(X509Error::LeafWithoutDigitalSignature);
    }

    // Signing certificates in the chain.
    for (i, cert) in parsed.iter().enumerate().skip(1) {
        let bc = cert.basic_constraints().map_err(|e| cert_err(i)(e.to_string()))?;
        if !bc.is_some_and(|b| b.value.ca) {
            return Err(X509Error::SigningCertNotCa(i));
        }
        let ku = cert.key_usage().map_err(|e| cert_err(i)(e.to_string()))?;
        if !ku.is_some_and(|k| k.value.key_cert_sign()) {
            return Err(X509Error::SigningCertWithoutKeyCertSign(i));
        }
        for u in uri_sans(cert, i)? {
            let ok = SpiffeId::new(u).is_ok_and(|s| s.path().is_empty() && s.trust_domain() == td);
            if !ok {
                return Err(X509Error::SigningCertBadId { index: i, id: u.to_owned() });
            }
        }
    }

    // Validity of the leaf, with precise errors (webpki checks every certificate).
    let not_before = leaf.validity().not_before.timestamp();
    let not_after = leaf.validity().not_after.timestamp();
    if now < not_before {
        return Err(X509Error::NotYetValid { not_before, now });
    }
    if now > not_after {
        return Err(X509Error::Expired { not_after, now });
    }

    // Path building to the bundle.
    let leaf_der = CertificateDer::from(chain[0].as_ref());
    let ee = webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| cert_err(0)(e.to_string()))?;
    let intermediates: Vec<CertificateDer<'_>> =
        chain[1..].iter().map(|c| CertificateDer::from(c.as_ref())).collect();
    let time = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now).unwrap_or(0)));
    let eku = match usage {
        SvidUsage::ClientAuth => webpki::KeyUsage::client_auth(),
        SvidUsage::ServerAuth => webpki::KeyUsage::server_auth(),
    };
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &bundle.anchors,
        &intermediates,
        time,
        eku,
        None,
        None,
    )
    .map_err(map_webpki)?;

    Ok(VerifiedX509Svid { spiffe_id: id, serial: serial_of(leaf, 0)?, not_before, not_after })
}

/// The serial of a parsed certificate (chain position `index`, for errors).
fn serial_of(cert: &X509Certificate<'_>, index: usize) -> Result<Serial, X509Error> {
    Serial::from_bytes(cert.raw_serial()).map_err(|e| cert_err(index)(format!("serial number: {e}")))
}

/// What a leaf certificate says about itself, read **without validating** it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafFacts {
    /// The SPIFFE ID of its single URI SAN.
    pub spiffe_id: SpiffeId,
    /// Its serial.
    pub serial: Serial,
    /// `notBefore` (Unix seconds).
    pub not_before: i64,
    /// `notAfter` (Unix seconds).
    pub not_after: i64,
}

/// The SPIFFE ID, serial and validity of a leaf certificate, read **without
/// validating** it: for a certificate a TLS verifier (or this process) already
/// validated, and for logs.
pub fn read_leaf(der: &[u8]) -> Result<LeafFacts, X509Error> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| cert_err(0)(e.to_string()))?;
    let uris = uri_sans(&cert, 0)?;
    let [uri] = uris.as_slice() else {
        return Err(if uris.is_empty() {
            X509Error::NoUriSan
        } else {
            X509Error::MultipleUriSans(uris.len())
        });
    };
    let spiffe_id = SpiffeId::new(*uri).map_err(|e| X509Error::NotSpiffeId(format!("{uri:?}: {e}")))?;
    Ok(LeafFacts {
        spiffe_id,
        serial: serial_of(&cert, 0)?,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// The SPIFFE ID and serial of a leaf certificate, read **without validating** it
/// ([`read_leaf`]).
pub fn peek_leaf(der: &[u8]) -> Result<(SpiffeId, Serial), X509Error> {
    read_leaf(der).map(|l| (l.spiffe_id, l.serial))
}

fn map_webpki(e: webpki::Error) -> X509Error {
    use webpki::Error as E;
    match e {
        E::UnknownIssuer => X509Error::UnknownIssuer,
        E::InvalidSignatureForPublicKey | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            X509Error::BadSignature
        }
        other => X509Error::Path(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn check(chain: &[Vec<u8>], b: &X509Bundle, now: i64) -> Result<VerifiedX509Svid, X509Error> {
        validate_x509_svid(chain, b, now, SvidUsage::ClientAuth)
    }

    #[test]
    fn a_good_svid_validates_directly_and_through_an_intermediate() {
        let ca = TestCa::new("example.org");
        let leaf = ca.leaf("spiffe://example.org/web", LeafOpts::default());
        let v = check(&leaf.chain, &ca.bundle(), NOW).unwrap();
        assert_eq!(v.spiffe_id.to_string(), "spiffe://example.org/web");
        assert_eq!(v.serial, leaf.serial);
        // The fixture's serial starts with a zero nibble: kept, as openssl prints it.
        assert!(v.serial.as_str().starts_with("05"), "{}", v.serial);
        assert_eq!((v.not_before, v.not_after), (NOW - 60, NOW + 600));

        let inter = ca.intermediate();
        let leaf = inter.leaf("spiffe://example.org/api", LeafOpts::default());
        let mut chain = leaf.chain.clone();
        chain.push(inter.cert_der.clone());
        assert!(check(&chain, &ca.bundle(), NOW).is_ok());
        // Without the intermediate the path does not build.
        assert_eq!(check(&leaf.chain, &ca.bundle(), NOW).unwrap_err(), X509Error::UnknownIssuer);
    }

    #[test]
    fn negative_matrix() {
        let ca = TestCa::new("example.org");
        let b = ca.bundle();
        let id = "spiffe://example.org/web";
        let with = |o: LeafOpts| ca.leaf(id, o).chain;

        // Forged: same subject, another key.
        let forger = TestCa::new("example.org");
        assert!(matches!(
            check(&forger.leaf(id, LeafOpts::default()).chain, &b, NOW),
            Err(X509Error::UnknownIssuer | X509Error::BadSignature)
        ));
        // Wrong trust domain.
        assert!(matches!(
            check(&ca.leaf("spiffe://other.org/web", LeafOpts::default()).chain, &b, NOW),
            Err(X509Error::WrongTrustDomain { .. })
        ));
        // Expired, not yet valid.
        assert!(matches!(check(&with(LeafOpts::default()), &b, NOW + 601), Err(X509Error::Expired { .. })));
        assert!(matches!(
            check(&with(LeafOpts::default()), &b, NOW - 61),
            Err(X509Error::NotYetValid { .. })
        ));
        // CA leaf; keyCertSign, cRLSign leaves; no key usage; no digitalSignature.
        assert_eq!(
            check(&with(LeafOpts { ca: true, ..Default::default() }), &b, NOW).unwrap_err(),
            X509Error::LeafIsCa
        );
        assert_eq!(
            check(&with(LeafOpts { key_cert_sign: true, ..Default::default() }), &b, NOW).unwrap_err(),
            X509Error::LeafKeyCertSign
        );
        assert_eq!(
            check(&with(LeafOpts { crl_sign: true, ..Default::default() }), &b, NOW).unwrap_err(),
            X509Error::LeafCrlSign
        );
        assert_eq!(
            check(&with(LeafOpts { no_key_usage: true, ..Default::default() }), &b, NOW).unwrap_err(),
            X509Error::LeafWithoutKeyUsage
        );
        assert_eq!(
            check(&with(LeafOpts { no_digital_signature: true, ..Default::default() }), &b, NOW).unwrap_err(),
            X509Error::LeafWithoutDigitalSignature
        );
        // No URI SAN, two URI SANs, a non-SPIFFE URI, the trust domain's own ID.
        assert_eq!(check(&ca.leaf_uris(&[], LeafOpts::default()), &b, NOW).unwrap_err(), X509Error::NoUriSan);
        assert_eq!(
            check(&ca.leaf_uris(&[id, "spiffe://example.org/db"], LeafOpts::default()), &b, NOW).unwrap_err(),
            X509Error::MultipleUriSans(2)
        );
        assert!(matches!(
            check(&ca.leaf_uris(&["https://example.org/web"], LeafOpts::default()), &b, NOW),
            Err(X509Error::NotSpiffeId(_))
        ));
        assert!(matches!(
            check(&ca.leaf_uris(&["spiffe://example.org"], LeafOpts::default()), &b, NOW),
            Err(X509Error::LeafIdWithoutPath(_))
        ));
        // A chain to another root of the same trust domain name.
        let other = TestCa::new("example.org");
        let inter = other.intermediate();
        let mut chain = inter.leaf(id, LeafOpts::default()).chain;
        chain.push(inter.cert_der.clone());
        assert!(matches!(check(&chain, &b, NOW), Err(X509Error::UnknownIssuer | X509Error::BadSignature)));
        // A leaf offered as a signing certificate.
        let mut chain = with(LeafOpts::default());
        chain.push(with(LeafOpts::default())[0].clone());
        assert_eq!(check(&chain, &b, NOW).unwrap_err(), X509Error::SigningCertNotCa(1));
        // Oversized.
        let leaf = with(LeafOpts::default());
        let long: Vec<Vec<u8>> = std::iter::repeat_n(leaf[0].clone(), MAX_CHAIN_LEN + 1).collect();
        assert_eq!(check(&long, &b, NOW).unwrap_err(), X509Error::ChainTooLong(MAX_CHAIN_LEN + 1));
        let big = vec![vec![0u8; MAX_CHAIN_BYTES + 1]];
        assert!(matches!(check(&big, &b, NOW), Err(X509Error::ChainTooLarge(_))));
        assert_eq!(check(&[], &b, NOW).unwrap_err(), X509Error::EmptyChain);
        assert!(matches!(check(&[vec![1, 2, 3]], &b, NOW), Err(X509Error::Malformed { .. })));
        let empty = X509Bundle::new(TrustDomain::new("example.org").unwrap(), vec![]).unwrap();
        assert!(matches!(check(&leaf, &empty, NOW), Err(X509Error::EmptyBundle(_))));
    }

    #[test]
    fn peek_reads_the_serial_without_validating() {
        let ca = TestCa::new("example.org");
        let leaf = ca.leaf("spiffe://example.org/web", LeafOpts::default());
        let (id, serial) = peek_leaf(&leaf.chain[0]).unwrap();
        assert_eq!(id.to_string(), "spiffe://example.org/web");
        assert_eq!(serial, leaf.serial);
        let facts = read_leaf(&leaf.chain[0]).unwrap();
        assert_eq!((facts.not_before, facts.not_after), (NOW - 60, NOW + 600));
        assert!(matches!(read_leaf(&[0x30, 0x03, 1, 2, 3]), Err(X509Error::Malformed { index: 0, .. })));
        let two = ca.leaf_uris(&["spiffe://example.org/a", "spiffe://example.org/b"], LeafOpts::default());
        assert_eq!(read_leaf(&two[0]).unwrap_err(), X509Error::MultipleUriSans(2));
    }
}
