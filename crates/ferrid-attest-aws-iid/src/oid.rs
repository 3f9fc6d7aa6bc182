//! Object identifiers used by the PKCS#7 proofs.

use der::asn1::ObjectIdentifier as Oid;

/// `id-signedData` (RFC 5652).
pub(crate) const SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
/// `id-data` (RFC 5652).
pub(crate) const DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
/// `id-contentType` signed attribute.
pub(crate) const CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
/// `id-messageDigest` signed attribute.
pub(crate) const MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
/// SHA-1 (RFC 3279).
pub(crate) const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
/// SHA-256 (RFC 5754).
pub(crate) const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
/// `rsaEncryption` (RFC 8017).
pub(crate) const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
/// `sha1WithRSAEncryption`.
pub(crate) const SHA1_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.5");
/// `sha256WithRSAEncryption`.
pub(crate) const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
/// `id-dsa` (RFC 3279).
pub(crate) const DSA: Oid = Oid::new_unwrap("1.2.840.10040.4.1");
/// `id-dsa-with-sha1` (RFC 3279).
pub(crate) const DSA_WITH_SHA1: Oid = Oid::new_unwrap("1.2.840.10040.4.3");
/// `id-dsa-with-sha256` (RFC 5758).
pub(crate) const DSA_WITH_SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.3.2");
