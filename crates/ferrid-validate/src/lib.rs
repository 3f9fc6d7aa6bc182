//! SPIFFE validation for relying services (Ferrid's validator library).
//!
//! - [`x509`]: X.509-SVIDs against a trust domain's X.509 authorities.
//! - [`jwt`]: JWT-SVIDs (and delegation tokens) against its JWT keys.
//! - [`authorize`]: which SPIFFE IDs may proceed.
//! - [`set`] and [`revocation`]: Security Event Tokens of Ferrid's revocation feed and
//!   the set of revocations heard, failing closed when the feed goes quiet.
//! - [`keys`]: JWT bundle keys and the JWS checks shared by every token kind.
//!
//! - [`bundle`]: trust bundles (SPIFFE bundle documents) and where the current one
//!   comes from ([`BundleSource`], [`BundleSet`]).
//! - `tls` (feature `rustls`): rustls client and server verifiers for SPIFFE mutual
//!   TLS, and a swappable SVID resolver.
//! - `layer` (feature `tower`): a tower layer for JWT-SVID bearer tokens.
//! - `feeds` (feature `feeds`): the revocation feeds (gRPC watch, RFC 8936 poll,
//!   RFC 8935 push) and the HTTPS bundle endpoint client.
//! - `workload_api` (feature `workload-api`): trust bundles kept fresh from the SPIFFE
//!   Workload API.
//!
//! Features `rustls`, `tower`, `feeds` and `workload-api` are on by default; with none of them the
//! crate is pure validation with no async runtime.
//!
//! Time is always passed in (Unix seconds, or an injected [`ferrid_types::Clock`]).
//!
//! ```
//! use ferrid_validate::{JwtKeySet, JwtOptions, RevocationSet, validate_jwt_svid};
//! use ferrid_validate::authorize::{self, Authorizer};
//! use ferrid_types::TrustDomain;
//!
//! fn check(token: &str, jwt_bundle: &[u8], revocations: &RevocationSet, now: i64) -> Result<String, String> {
//!     let td = TrustDomain::new("example.org").unwrap();
//!     let keys = JwtKeySet::from_jwks(jwt_bundle).map_err(|e| e.to_string())?;
//!     let svid = validate_jwt_svid(token, &keys, &td, &JwtOptions::new("spiffe://example.org/api"), now)
//!         .map_err(|e| e.to_string())?;
//!     authorize::path_prefix(td, "/web").authorize(&svid.spiffe_id).map_err(|e| e.to_string())?;
//!     revocations.check_jwt(&svid, now).map_err(|e| e.to_string())?; // fails closed when stale
//!     Ok(svid.spiffe_id.to_string())
//! }
//! # let r = RevocationSet::default();
//! # assert!(check("x.y.z", br#"{"keys":[]}"#, &r, 0).is_err());
//! ```
#![forbid(unsafe_code)]

pub mod authorize;
pub mod bundle;
#[cfg(feature = "feeds")]
mod feed_auth;
#[cfg(feature = "feeds")]
pub mod feeds;
pub mod jwt;
pub mod keys;
#[cfg(feature = "tower")]
pub mod layer;
pub mod revocation;
pub mod set;
#[cfg(feature = "rustls")]
pub mod tls;
#[cfg(feature = "workload-api")]
pub mod workload_api;
pub mod x509;

#[cfg(test)]
mod testing;

pub use authorize::{AuthorizeError, Authorizer};
pub use bundle::{BundleError, BundleSet, BundleSource, TrustBundle};
pub use jwt::{JwtOptions, JwtSvidError, VerifiedJwtSvid, validate_jwt_svid};
pub use keys::{Algorithm, JwtKeySet, KeyError, KeyKind};
pub use revocation::{RevocationError, RevocationSet};
pub use set::{Revocation, SetError, SetEvent, VerifiedSet, verify_set};
pub use x509::{SvidUsage, VerifiedX509Svid, X509Bundle, X509Error, validate_x509_svid};
