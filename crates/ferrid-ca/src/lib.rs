//! Ferrid's certificate authority for one trust domain.
//!
//! - [`KeyStore`]: where CA and JWT private keys live ([`MemoryKeyStore`], [`DiskKeyStore`]).
//! - [`Authority`]: a self-signed root (or an intermediate under an [`UpstreamCa`]),
//!   X.509-SVIDs minted from CSRs, JWT-SVIDs, the [`TrustBundle`], and rotation driven
//!   by [`Authority::tick`] on an injected [`ferrid_types::Clock`].
//!
//! Rotation: the next CA certificate and JWT key are prepared at 1/2 of the active one's
//! life and published in the bundle at once; they start signing at 5/6. An authority
//! leaves the bundle only once it has expired, and every credential is capped at its
//! signer's expiry, so a credential is always verifiable with any bundle published
//! after it was signed — and with the bundle published before, since the signer was
//! published a third of a CA life before it signed anything.
#![forbid(unsafe_code)]

mod authority;
mod bundle;
mod jwt;
mod keys;
mod wit;
mod x509;

use std::time::Duration;

pub use authority::{Authority, CaState};
pub use bundle::{JwtAuthority, TrustBundle};
pub use ferrid_types::KeyAlgorithm;
use ferrid_types::{SpiffeId, TrustDomain};
pub use keys::{DiskKeyStore, KeyStore, MemoryKeyStore, write_atomic};
pub use wit::{MAX_PUBLIC_JWK_BYTES, WitKeyPair, generate_wit_key, validate_public_jwk};
pub use x509::generate_key_and_csr;

/// The key ID under which a JWT authority signs WIT-SVIDs and is published for them
/// (`use: wit-svid`): SPIFFE WIT-SVID §6.1 wants WIT key IDs distinct from JWT-SVID key
/// IDs, so a JWT-SVID verifier never accepts a WIT and the other way round.
pub fn wit_key_id(jwt_key_id: &str) -> String {
    format!("{jwt_key_id}.wit")
}

/// Largest CSR accepted, in bytes.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// CA errors. [`CaError::is_client_error`] tells the caller's fault from the server's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The CSR cannot be parsed or is too large.
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),
    /// The CSR's self-signature does not verify: no proof of possession.
    #[error("CSR signature does not verify (no proof of possession of the key)")]
    CsrSignature,
    /// The key type or size is not accepted.
    #[error("unsupported key: {0} (accepted: EC P-256, EC P-384, RSA 2048 to 4096 bits)")]
    UnsupportedKey(String),
    /// The SPIFFE ID is outside the CA's trust domain.
    #[error("SPIFFE ID {id} is not in trust domain {trust_domain}")]
    ForeignSpiffeId {
        /// The requested ID.
        id: String,
        /// The CA's trust domain.
        trust_domain: String,
    },
    /// A workload's public JWK (for a WIT-SVID's `cnf.jwk`) is unusable.
    #[error("invalid workload public key: {0}")]
    InvalidJwk(String),
    /// The JWT audience is missing or invalid.
    #[error("invalid audience: {0}")]
    InvalidAudience(String),
    /// The requested lifetime is not acceptable.
    #[error("invalid TTL: {0}")]
    InvalidTtl(String),
    /// A delegation token's subject is empty, too long or has control characters.
    #[error("invalid subject: {0}")]
    InvalidSubject(String),
    /// A DNS name is not a valid host name.
    #[error("invalid DNS name {0:?}")]
    InvalidDnsName(String),
    /// The upstream CA's certificate or key is unusable.
    #[error("upstream CA: {0}")]
    UpstreamCa(String),
    /// The key store failed or lacks a key.
    #[error("key store: {0}")]
    KeyStore(String),
    /// Persisted state is inconsistent.
    #[error("CA state: {0}")]
    State(String),
    /// A crypto or encoding failure.
    #[error("internal CA error: {0}")]
    Internal(String),
}

impl CaError {
    /// Whether the request caused the error (bad CSR, key, JWK, ID, audience, TTL, name).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::InvalidCsr(_)
                | Self::CsrSignature
                | Self::UnsupportedKey(_)
                | Self::ForeignSpiffeId { .. }
                | Self::InvalidAudience(_)
                | Self::InvalidJwk(_)
                | Self::InvalidTtl(_)
                | Self::InvalidSubject(_)
                | Self::InvalidDnsName(_)
        )
    }
}

fn internal(e: impl std::fmt::Display) -> CaError {
    CaError::Internal(e.to_string())
}

/// An operator-supplied CA that signs Ferrid's intermediate.
#[derive(Clone)]
pub struct UpstreamCa {
    /// The upstream CA certificate first, then its issuers, the root last (DER).
    pub cert_chain_der: Vec<Vec<u8>>,
    /// The upstream CA certificate's private key, PKCS#8 DER.
    pub key_pkcs8_der: Vec<u8>,
}

impl std::fmt::Debug for UpstreamCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamCa")
            .field("certificates", &self.cert_chain_der.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl UpstreamCa {
    /// Parses a PEM certificate chain (CA first, root last) and a PEM PKCS#8 key.
    pub fn from_pem(cert_chain_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let certs: Vec<Vec<u8>> = pem::parse_many(cert_chain_pem)
            .map_err(|e| CaError::UpstreamCa(format!("certificate file: {e}")))?
            .into_iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .map(pem::Pem::into_contents)
            .collect();
        if certs.is_empty() {
            return Err(CaError::UpstreamCa("the certificate file holds no CERTIFICATE block".into()));
        }
        let key = pem::parse(key_pem).map_err(|e| CaError::UpstreamCa(format!("key file: {e}")))?;
        if key.tag() != "PRIVATE KEY" {
            return Err(CaError::UpstreamCa(format!(
                "the key file holds a {:?} block; a PKCS#8 \"PRIVATE KEY\" is required \
                 (convert with `openssl pkcs8 -topk8 -nocrypt`)",
                key.tag()
            )));
        }
        Ok(Self { cert_chain_der: certs, key_pkcs8_der: key.into_contents() })
    }
}

/// How the CA behaves.
#[derive(Clone, Debug)]
pub struct CaConfig {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Algorithm of CA and JWT signing keys.
    pub key_algorithm: KeyAlgorithm,
    /// Life of each CA certificate and JWT key.
    pub ca_ttl: Duration,
    /// Default X.509-SVID life.
    pub x509_svid_ttl: Duration,
    /// Default JWT-SVID life.
    pub jwt_svid_ttl: Duration,
    /// Upper bound for any requested life.
    pub max_svid_ttl: Duration,
    /// `iss` claim of JWT-SVIDs, when set.
    pub jwt_issuer: Option<String>,
    /// How far NotBefore is backdated, for clock skew.
    pub backdate: Duration,
    /// `spiffe_refresh_hint` of the bundle.
    pub refresh_hint: Duration,
    /// An upstream CA signing Ferrid's intermediate, if any.
    pub upstream: Option<UpstreamCa>,
}

impl CaConfig {
    /// Defaults: P-256, CA 24 h, X.509-SVID 10 min, JWT-SVID 5 min, max 24 h, backdate
    /// 10 s, refresh hint 5 min, self-signed root.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            key_algorithm: KeyAlgorithm::EcP256,
            ca_ttl: Duration::from_secs(24 * 3600),
            x509_svid_ttl: Duration::from_secs(600),
            jwt_svid_ttl: Duration::from_secs(300),
            max_svid_ttl: Duration::from_secs(24 * 3600),
            jwt_issuer: None,
            backdate: Duration::from_secs(10),
            refresh_hint: Duration::from_secs(300),
            upstream: None,
        }
    }
}

/// A request for an X.509-SVID.
#[derive(Debug, Clone, Copy)]
pub struct X509SvidRequest<'a> {
    /// PKCS#10 CSR, DER. Only its public key is used; requested names are ignored.
    pub csr_der: &'a [u8],
    /// The identity to certify.
    pub spiffe_id: &'a SpiffeId,
    /// Requested life (`None` or zero: the default; capped at the maximum).
    pub ttl: Option<Duration>,
    /// DNS SANs to include.
    pub dns_names: &'a [String],
}

/// A minted X.509-SVID.
#[derive(Clone, Debug)]
pub struct X509Svid {
    /// The certified identity.
    pub spiffe_id: SpiffeId,
    /// Leaf first, then intermediates; never the root.
    pub cert_chain_der: Vec<Vec<u8>>,
    /// Serial number in [`ferrid_types::Serial`]'s canonical form (lowercase,
    /// even-length hex, as `openssl x509 -serial` prints it).
    pub serial_hex: String,
    /// NotBefore, Unix seconds.
    pub not_before: i64,
    /// NotAfter, Unix seconds.
    pub not_after: i64,
}

/// A request for a JWT-SVID.
#[derive(Debug, Clone, Copy)]
pub struct JwtSvidRequest<'a> {
    /// The subject.
    pub spiffe_id: &'a SpiffeId,
    /// One or more audiences.
    pub audience: &'a [String],
    /// Requested life (`None` or zero: the default; capped at the maximum).
    pub ttl: Option<Duration>,
    /// Extra claims (delegation, task binding …); cannot override registered claims.
    pub extra_claims: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

/// A minted JWT-SVID.
#[derive(Clone, Debug)]
pub struct JwtSvid {
    /// The compact JWS.
    pub token: String,
    /// The subject.
    pub spiffe_id: SpiffeId,
    /// The `jti` claim.
    pub jti: String,
    /// The signing key's ID.
    pub kid: String,
    /// `iat`, Unix seconds.
    pub issued_at: i64,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
}

/// Seconds of a duration, saturating.
fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Effective lifetime of a request: the default when none (or zero) is asked for,
/// never more than the maximum.
fn effective_ttl(requested: Option<Duration>, default: Duration, max: Duration) -> i64 {
    secs(requested.filter(|d| !d.is_zero()).unwrap_or(default).min(max))
}

/// A request for a WIT-SVID.
#[derive(Debug, Clone, Copy)]
pub struct WitSvidRequest<'a> {
    /// The subject.
    pub spiffe_id: &'a SpiffeId,
    /// The workload's public key, a JWK JSON object (see [`validate_public_jwk`]).
    pub public_key_jwk: &'a str,
    /// Requested life (`None` or zero: the JWT-SVID default; capped at the maximum).
    pub ttl: Option<Duration>,
}

/// A minted WIT-SVID.
#[derive(Clone, Debug)]
pub struct WitSvid {
    /// The compact JWS (`typ: wit+jwt`).
    pub token: String,
    /// The subject.
    pub spiffe_id: SpiffeId,
    /// The `jti` claim.
    pub jti: String,
    /// The signing key's ID.
    pub kid: String,
    /// `iat`, Unix seconds.
    pub issued_at: i64,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
}
