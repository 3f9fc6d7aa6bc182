//! WIMSE workload identity for relying services.
//!
//! A workload authenticates a request with two tokens: its **WIT-SVID** (a Workload
//! Identity Token: a JWT with `typ: wit+jwt`, signed by its trust domain, binding the
//! workload's public key in `cnf.jwk`) and a **Workload Proof Token** (WPT, `typ:
//! wpt+jwt`) that the workload signs with the matching private key for this one
//! request. A WIT alone proves nothing: it is not a bearer token.
//!
//! Rules implemented, and from where:
//! - WIT: draft-ietf-wimse-workload-creds-02 §"The Workload Identity Token" as profiled
//!   by SPIFFE `WIT-SVID.md` (incubating): `typ` `wit+jwt`, `alg` from the WIT-SVID list
//!   (RS/PS 256–512, ES256/ES384; never `none` or HMAC), `kid` required and looked up in
//!   the trust domain's WIT bundle (keys with `use: wit-svid`, or no `use`), `exp`
//!   required and in the future, `nbf` not in the future, no `aud`, `sub` a SPIFFE ID
//!   in the expected trust domain, `cnf.jwk` an asymmetric public key with an `alg`.
//! - WPT: draft-ietf-wimse-wpt-02 §"Workload Proof Token": `typ` `wpt+jwt`, `alg`
//!   string-equal to `cnf.jwk.alg`, signed by the WIT's `cnf` key, `aud` the expected
//!   audience (query and fragment ignored), `exp` present, not passed and not far in the
//!   future (at most [`WptVerifier::max_lifetime`], 5 minutes by default), `jti`
//!   required and accepted once per sender ([`WptVerifier`] keeps a bounded replay
//!   cache), `wth` the base64url SHA-256 of the WIT, and `ath`/`tth`/`oth` matching the
//!   access token, Txn-Token and other tokens of the request when there are any.
//!
//! ```no_run
//! # fn f(wit: &str, wpt: &str, jwks: &str) -> Result<(), ferrid_wimse::WimseError> {
//! use ferrid_wimse::{RequestContext, WptVerifier};
//! let td = ferrid_types::TrustDomain::new("example.org").unwrap();
//! let verifier = WptVerifier::new(); // keep one per service: it holds the replay cache
//! let now = 1_768_435_200; // Unix seconds, from your clock
//! let ctx = RequestContext::new("https://orders.example.org/v1/orders");
//! let (wit, _wpt) = verifier.verify_request(Some(wit), Some(wpt), jwks, &td, &ctx, now)?;
//! println!("caller: {}", wit.spiffe_id);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod error;
mod replay;
mod sign;
mod verify;

pub use error::{TokenKind, WimseError};
pub use sign::{create_wpt, sign_es256};
pub use verify::{RequestContext, VerifiedWit, VerifiedWpt, WptVerifier, token_hash, verify_wit};

/// Largest WIT or WPT accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Default upper bound on a WPT's remaining life: 5 minutes.
pub const DEFAULT_MAX_WPT_LIFETIME_SECS: i64 = 300;

/// Default clock-skew allowance, in seconds, for `exp` and `nbf` comparisons.
pub const DEFAULT_LEEWAY_SECS: i64 = 30;

/// Default capacity of the WPT replay cache (distinct unexpired `jti`s).
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;
