//! What can be wrong with a WIT or a WPT, precisely.

/// Which token an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// The Workload Identity Token (WIT-SVID).
    Wit,
    /// The Workload Proof Token.
    Wpt,
}

impl std::fmt::Display for TokenKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Wit => "WIT",
            Self::Wpt => "WPT",
        })
    }
}

/// Why a WIT or WPT was refused. Messages name the token, the member and the value at
/// fault; they never contain a token or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WimseError {
    /// The request carries no WIT.
    #[error("the request has no WIT (Workload-Identity-Token)")]
    MissingWit,
    /// The request carries a WIT but no proof of possession.
    #[error("the request has a WIT but no WPT (Workload-Proof-Token): a WIT is not a bearer token")]
    MissingProof,
    /// Larger than [`crate::MAX_TOKEN_BYTES`].
    #[error("{0} is larger than {max} bytes", max = crate::MAX_TOKEN_BYTES)]
    TooLarge(TokenKind),
    /// Not a compact JWS with a JSON header and claims.
    #[error("{kind} is malformed: {reason}")]
    Malformed {
        /// Which token.
        kind: TokenKind,
        /// What is wrong.
        reason: String,
    },
    /// The `typ` header is missing or another media type.
    #[error("{kind} has typ {found:?}, expected {expected:?}")]
    WrongType {
        /// Which token.
        kind: TokenKind,
        /// `wit+jwt` or `wpt+jwt`.
        expected: &'static str,
        /// The header's value, if any.
        found: Option<String>,
    },
    /// The `alg` header is not allowed (`none`, HMAC, or outside the allow list).
    #[error("{kind} algorithm {alg:?} is not allowed: {reason}")]
    AlgorithmNotAllowed {
        /// Which token.
        kind: TokenKind,
        /// The header's `alg`.
        alg: String,
        /// Why.
        reason: &'static str,
    },
    /// The header lists `crit` extensions, none of which this verifier implements.
    #[error("{0} has critical header parameters (crit), which are not supported")]
    CriticalHeader(TokenKind),
    /// The WIT has no `kid` (required by SPIFFE WIT-SVID §2.1).
    #[error("WIT has no kid header")]
    MissingKid,
    /// The bundle is not a usable JWKS.
    #[error("WIT bundle is not a usable JWKS: {0}")]
    InvalidBundle(String),
    /// No WIT key with that `kid` in the bundle.
    #[error("WIT signing key {kid:?} is not in the trust domain's WIT bundle")]
    UnknownKey {
        /// The WIT's `kid`.
        kid: String,
    },
    /// The bundle key with that `kid` is for another use (for instance `jwt-svid`).
    #[error("bundle key {kid:?} has use {key_use:?}, not \"wit-svid\"")]
    KeyUse {
        /// The `kid`.
        kid: String,
        /// Its `use`.
        key_use: String,
    },
    /// The signature does not verify.
    #[error("{kind} signature does not verify{detail}")]
    BadSignature {
        /// Which token.
        kind: TokenKind,
        /// Extra context (empty or starting with ": ").
        detail: String,
    },
    /// `exp` has passed.
    #[error("{kind} expired at {exp} (now {now})")]
    Expired {
        /// Which token.
        kind: TokenKind,
        /// `exp`.
        exp: i64,
        /// The verifier's time.
        now: i64,
    },
    /// `nbf` is in the future.
    #[error("{kind} is not valid before {nbf} (now {now})")]
    NotYetValid {
        /// Which token.
        kind: TokenKind,
        /// `nbf`.
        nbf: i64,
        /// The verifier's time.
        now: i64,
    },
    /// A required claim is absent.
    #[error("{kind} has no {claim:?} claim")]
    MissingClaim {
        /// Which token.
        kind: TokenKind,
        /// The claim.
        claim: &'static str,
    },
    /// A claim has the wrong type or a value that is not allowed.
    #[error("{kind} claim {claim:?} is invalid: {reason}")]
    InvalidClaim {
        /// Which token.
        kind: TokenKind,
        /// The claim.
        claim: &'static str,
        /// Why.
        reason: String,
    },
    /// `sub` is not a SPIFFE ID.
    #[error("WIT sub {sub:?} is not a SPIFFE ID: {reason}")]
    InvalidSubject {
        /// The claim.
        sub: String,
        /// Why.
        reason: String,
    },
    /// `sub` is in another trust domain.
    #[error("WIT sub {sub} is not in trust domain {trust_domain}")]
    ForeignTrustDomain {
        /// The claim.
        sub: String,
        /// The expected trust domain.
        trust_domain: String,
    },
    /// `cnf.jwk` is missing or unusable.
    #[error("WIT confirmation key (cnf.jwk) is unusable: {0}")]
    InvalidConfirmationKey(String),
    /// The WPT's `alg` differs from `cnf.jwk.alg`.
    #[error("WPT alg {wpt_alg:?} does not match the WIT's cnf.jwk.alg {cnf_alg:?}")]
    AlgorithmMismatch {
        /// The WPT's header `alg`.
        wpt_alg: String,
        /// The WIT's `cnf.jwk.alg`.
        cnf_alg: String,
    },
    /// `wth` is not the hash of the WIT presented with it.
    #[error("WPT wth does not match the SHA-256 of the WIT presented with it")]
    WitHashMismatch,
    /// `aud` is not the expected audience.
    #[error("WPT audience {found:?} does not match {expected:?}")]
    AudienceMismatch {
        /// The expected audience.
        expected: String,
        /// The WPT's `aud` values.
        found: Vec<String>,
    },
    /// `exp` is further in the future than allowed.
    #[error("WPT expires at {exp}, more than {max_secs} s after now ({now}): WPTs must be short-lived")]
    LifetimeTooLong {
        /// `exp`.
        exp: i64,
        /// The verifier's time.
        now: i64,
        /// The allowed remaining life.
        max_secs: i64,
    },
    /// The WIT bound by the proof has expired since it was verified.
    #[error("the WIT expired at {exp} (now {now}); its key must not be used after that")]
    WitExpired {
        /// The WIT's `exp`.
        exp: i64,
        /// The verifier's time.
        now: i64,
    },
    /// A token hash claim (`ath`, `tth`, `oth`) is missing, unexpected or wrong.
    #[error("WPT {claim} binding: {reason}")]
    TokenBinding {
        /// `ath`, `tth` or `oth.<header>`.
        claim: String,
        /// What is wrong.
        reason: String,
    },
    /// This `jti` was already accepted from this sender and has not expired.
    #[error("WPT jti {jti:?} from {sub} was already used (replay)")]
    Replayed {
        /// The sender's SPIFFE ID.
        sub: String,
        /// The `jti`.
        jti: String,
    },
    /// The replay cache is full of unexpired entries; refusing is safer than forgetting.
    #[error("WPT replay cache is full ({capacity} unexpired proofs); refusing rather than forgetting one")]
    ReplayCacheFull {
        /// The configured capacity.
        capacity: usize,
    },
    /// Creating a WPT failed (bad private JWK, signing error).
    #[error("cannot create the WPT: {0}")]
    Signing(String),
}
