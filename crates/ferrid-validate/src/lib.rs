//! SPIFFE validation for relying services (Ferrid's validator library).
//!
//! - [`set`]: Security Event Tokens of Ferrid's revocation feed (docs/revocation.md).
//! - [`keys`]: JWT bundle keys and the JWS checks shared by every token kind.
#![forbid(unsafe_code)]

pub mod keys;
pub mod set;

pub use keys::{Algorithm, JwtKeySet, KeyError, KeyKind};
pub use set::{Revocation, SetError, SetEvent, VerifiedSet, verify_set};
