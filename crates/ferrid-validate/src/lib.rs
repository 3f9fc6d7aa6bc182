//! SPIFFE validation for relying services (Ferrid's validator library).
//!
//! - [`x509`]: X.509-SVIDs against a trust domain's X.509 authorities.
//! - [`jwt`]: JWT-SVIDs (and delegation tokens) against its JWT keys.
//! - [`authorize`]: which SPIFFE IDs may proceed.
//! - [`set`] and [`revocation`]: Security Event Tokens of Ferrid's revocation feed and
//!   the set of revocations heard, failing closed when the feed goes quiet.
//! - [`keys`]: JWT bundle keys and the JWS checks shared by every token kind.
//!
//! Time is always passed in (Unix seconds, or an injected [`ferrid_types::Clock`]).
#![forbid(unsafe_code)]

pub mod authorize;
pub mod bundle;
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
