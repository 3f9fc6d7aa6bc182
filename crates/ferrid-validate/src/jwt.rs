//! JWT-SVID validation (SPIFFE JWT-SVID specification) against one trust domain's JWT
//! bundle, at a time the caller passes in, including Ferrid's delegation tokens
//! (docs/delegation.md).
//!
//! Rules, each its own [`JwtSvidError`] variant:
//! - at most [`JwtOptions::max_bytes`] (16 KiB by default), a compact JWS;
//! - header `typ`, when present, is `JWT` or `JOSE` (a SET or a WIT is not a JWT-SVID);
//! - `alg` on the allow list (SPIFFE's: RS/PS 256–512, ES256, ES384), never `none` or
//!   HMAC, and fitting the key's type: no algorithm confusion;
//! - `kid` required and found in the JWT bundle;
//! - `aud` required and containing the expected audience;
//! - `exp` required and not passed; `nbf` not in the future; `iat` not in the future;
//!   each with [`JwtOptions::leeway`];
//! - `iss`, when the caller expects one, equal to it;
//! - `sub` a SPIFFE ID in the trust domain, **except** for delegation tokens (with an
//!   `act` claim, RFC 8693 §4.1): then `sub` is the principal (a person's subject at
//!   an identity provider, or the first workload's SPIFFE ID), and every actor
//!   (`act.sub`, nested, innermost oldest) must be a SPIFFE ID in the trust domain; at
//!   most [`JwtOptions::max_chain_depth`] actors.
use ferrid_types::{SpiffeId, TrustDomain};
use serde_json::Value;

use crate::keys::{Algorithm, JwsError, JwtKeySet, SPIFFE_ALGORITHMS, verify_jws};

/// The default largest token (16 KiB).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What a JWT-SVID must satisfy besides the fixed rules.
#[derive(Debug, Clone)]
pub struct JwtOptions {
    /// The audience this service expects in `aud`.
    pub audience: String,
    /// Accepted algorithms (HMAC and `none` are refused whatever this says).
    pub algorithms: Vec<Algorithm>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Seconds of clock skew tolerated (default 30).
    pub leeway: i64,
    /// Largest token accepted.
    pub max_bytes: usize,
    /// Whether delegation tokens (with `act`) are accepted (default true).
    pub allow_delegation: bool,
    /// Most actors in a delegation chain (default 8).
    pub max_chain_depth: usize,
}

impl JwtOptions {
    /// Defaults for tokens addressed to `audience`.
    pub fn new(audience: impl Into<String>) -> Self {
        Self {
            audience: audience.into(),
            algorithms: SPIFFE_ALGORITHMS.to_vec(),
            issuer: None,
            leeway: 30,
            max_bytes: DEFAULT_MAX_TOKEN_BYTES,
            allow_delegation: true,
            max_chain_depth: 8,
        }
    }
}

/// A task a token is bound to (`task` claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// `task.id`.
    pub id: String,
    /// `task.purpose`.
    pub purpose: Option<String>,
}

/// A validated JWT-SVID (or delegation or task token).
#[derive(Debug, Clone)]
pub struct VerifiedJwtSvid {
    /// The workload presenting the token: `sub` for a plain JWT-SVID, the newest actor
    /// (outermost `act.sub`) for a delegation token. Authorize this.
    pub spiffe_id: SpiffeId,
    /// `sub`: the token's subject; for a delegation token the principal (a person's
    /// subject or the first workload's SPIFFE ID).
    pub subject: String,
    /// The actors of a delegation token, newest (outermost `act`) first; empty for a
    /// plain JWT-SVID.
    pub actors: Vec<SpiffeId>,
    /// `aud`.
    pub audience: Vec<String>,
    /// `exp` (Unix seconds).
    pub expires_at: i64,
    /// `iat`, when present.
    pub issued_at: Option<i64>,
    /// `jti`, when present.
    pub jti: Option<String>,
    /// `iss`, when present.
    pub issuer: Option<String>,
    /// `task`, when bound to one.
    pub task: Option<Task>,
    /// `scope`, split on spaces.
    pub scope: Vec<String>,
    /// `authority_model` (`delegated`, `bounded`, `autonomous`), when present.
    pub authority_model: Option<String>,
    /// `sub_type` (`human` or `workload`), when present.
    pub subject_type: Option<String>,
    /// The `kid` it was signed under.
    pub kid: String,
    /// Every claim.
    pub claims: Value,
}

impl VerifiedJwtSvid {
    /// Whether this is a delegation token (it has actors).
    pub fn is_delegated(&self) -> bool {
        !self.actors.is_empty()
    }

    /// The principal the chain acts for (`sub`).
    pub fn principal(&self) -> &str {
        &self.subject
    }

    /// Actors, newest first (the presenter first).
    pub fn actors_newest_first(&self) -> &[SpiffeId] {
        &self.actors
    }

    /// Actors, oldest first (the order of the hops).
    pub fn actors_oldest_first(&self) -> impl Iterator<Item = &SpiffeId> {
        self.actors.iter().rev()
    }
}

/// Why a JWT-SVID was refused: one variant per rule. Messages never include the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtSvidError {
    /// Larger than the bound.
    #[error("token too large: {0} bytes")]
    TooLarge(usize),
    /// Not a compact JWS, or header or claims do not parse.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header `typ` is neither `JWT` nor `JOSE`.
    #[error("header typ {0:?} is not a JWT-SVID's")]
    WrongType(String),
    /// `none`, HMAC, or an algorithm not on the allow list.
    #[error("algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    /// A `crit` header parameter.
    #[error("critical header parameters are not supported")]
    CriticalHeader,
    /// No `kid` in the header.
    #[error("header has no kid")]
    MissingKid,
    /// No key of the JWT bundle has this `kid`.
    #[error("no JWT bundle key has kid {0:?}")]
    UnknownKey(String),
    /// The algorithm does not fit the key (algorithm confusion).
    #[error("algorithm {alg} does not fit key {kid:?}")]
    AlgorithmKeyMismatch {
        /// The header's algorithm.
        alg: String,
        /// The key.
        kid: String,
    },
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// No `aud`.
    #[error("no aud claim")]
    MissingAudience,
    /// `aud` lacks the expected audience.
    #[error("audience {got:?} does not include {want:?}")]
    WrongAudience {
        /// The token's audiences.
        got: Vec<String>,
        /// The expected one.
        want: String,
    },
    /// No `exp` (or not an integer).
    #[error("no exp claim")]
    MissingExpiry,
    /// `exp` has passed.
    #[error("expired at {exp} (now {now})")]
    Expired {
        /// `exp`.
        exp: i64,
        /// The verifier's time.
        now: i64,
    },
    /// `nbf` is in the future.
    #[error("not valid before {nbf} (now {now})")]
    NotYetValid {
        /// `nbf`.
        nbf: i64,
        /// The verifier's time.
        now: i64,
    },
    /// `iat` is in the future.
    #[error("issued in the future: iat {iat} (now {now})")]
    IssuedInFuture {
        /// `iat`.
        iat: i64,
        /// The verifier's time.
        now: i64,
    },
    /// A time claim is not an integer.
    #[error("claim {0} is not an integer")]
    BadTimeClaim(&'static str),
    /// `iss` differs from the expected issuer.
    #[error("issuer {got:?} is not {want:?}")]
    WrongIssuer {
        /// The token's issuer (empty when absent).
        got: String,
        /// The expected one.
        want: String,
    },
    /// No `sub`.
    #[error("no sub claim")]
    MissingSubject,
    /// `sub` (of a plain JWT-SVID) is not a SPIFFE ID.
    #[error("sub is not a SPIFFE ID: {0}")]
    SubjectNotSpiffeId(String),
    /// The SPIFFE ID (subject or actor) is in another trust domain.
    #[error("SPIFFE ID {id} is not in trust domain {want}")]
    WrongTrustDomain {
        /// The ID.
        id: String,
        /// The bundle's trust domain.
        want: String,
    },
    /// An `act` entry is malformed or its `sub` is not a SPIFFE ID.
    #[error("malformed actor: {0}")]
    BadActor(String),
    /// More actors than allowed.
    #[error("delegation chain of {0} actors is too deep")]
    ChainTooDeep(usize),
    /// A delegation token where the caller accepts none.
    #[error("delegation tokens are not accepted here")]
    DelegationNotAllowed,
}

impl From<JwsError> for JwtSvidError {
    fn from(e: JwsError) -> Self {
        match e {
            JwsError::TooLarge(n) => Self::TooLarge(n),
            JwsError::Malformed(m) => Self::Malformed(m),
            JwsError::AlgorithmNotAllowed(a) => Self::AlgorithmNotAllowed(a),
            JwsError::Critical => Self::CriticalHeader,
            JwsError::MissingKid => Self::MissingKid,
            JwsError::UnknownKey(k) => Self::UnknownKey(k),
            JwsError::AlgorithmKeyMismatch { alg, kid } => Self::AlgorithmKeyMismatch { alg, kid },
            JwsError::BadSignature => Self::BadSignature,
        }
    }
}

fn time_claim(c: &Value, name: &'static str) -> Result<Option<i64>, JwtSvidError> {
    match c.get(name) {
        None => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or(JwtSvidError::BadTimeClaim(name)),
    }
}

fn in_domain(
    id: &str,
    td: &TrustDomain,
    bad: impl Fn(String) -> JwtSvidError,
) -> Result<SpiffeId, JwtSvidError> {
    let sid = SpiffeId::new(id).map_err(|e| bad(format!("{id:?}: {e}")))?;
    if sid.trust_domain() != td {
        return Err(JwtSvidError::WrongTrustDomain { id: id.to_owned(), want: td.to_string() });
    }
    Ok(sid)
}

/// Validates a JWT-SVID against the JWT bundle `keys` of `trust_domain` at `now` (Unix
/// seconds). See the module documentation for the rules.
pub fn validate_jwt_svid(
    token: &str,
    keys: &JwtKeySet,
    trust_domain: &TrustDomain,
    opts: &JwtOptions,
    now: i64,
) -> Result<VerifiedJwtSvid, JwtSvidError> {
    let token = token.trim();
    let header = crate::keys::raw_header(token, opts.max_bytes)?;
    if let Some(typ) = header.get("typ") {
        let t = typ.as_str().unwrap_or_default();
        if !(t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("JOSE")) {
            return Err(JwtSvidError::WrongType(t.chars().take(64).collect()));
        }
    }
    let jws = verify_jws(token, keys, &opts.algorithms, opts.max_bytes)?;
    let c = jws.claims;

    let audience: Vec<String> = match c.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or(JwtSvidError::MissingAudience)?,
        _ => return Err(JwtSvidError::MissingAudience),
    };
    if !audience.contains(&opts.audience) {
        return Err(JwtSvidError::WrongAudience { got: audience, want: opts.audience.clone() });
    }
    let exp = match c.get("exp") {
        None => return Err(JwtSvidError::MissingExpiry),
        Some(v) => v.as_i64().ok_or(JwtSvidError::MissingExpiry)?,
    };
    if now > exp.saturating_add(opts.leeway) {
        return Err(JwtSvidError::Expired { exp, now });
    }
    if let Some(nbf) = time_claim(&c, "nbf")?
        && nbf > now.saturating_add(opts.leeway)
    {
        return Err(JwtSvidError::NotYetValid { nbf, now });
    }
    let issued_at = time_claim(&c, "iat")?;
    if let Some(iat) = issued_at
        && iat > now.saturating_add(opts.leeway)
    {
        return Err(JwtSvidError::IssuedInFuture { iat, now });
    }
    let issuer = c.get("iss").and_then(Value::as_str).map(str::to_owned);
    if let Some(want) = &opts.issuer
        && issuer.as_deref() != Some(want.as_str())
    {
        return Err(JwtSvidError::WrongIssuer { got: issuer.unwrap_or_default(), want: want.clone() });
    }
    let subject = c
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(JwtSvidError::MissingSubject)?
        .to_owned();

    // The chain: outermost `act` is the newest actor.
    let mut actors = Vec::new();
    let mut cur = c.get("act");
    while let Some(a) = cur {
        if actors.len() >= opts.max_chain_depth {
            let mut n = actors.len();
            let mut more = Some(a);
            while let Some(m) = more {
                n += 1;
                more = m.get("act");
                if n > 1024 {
                    break;
                }
            }
            return Err(JwtSvidError::ChainTooDeep(n));
        }
        let sub = a
            .as_object()
            .and_then(|o| o.get("sub"))
            .and_then(Value::as_str)
            .ok_or_else(|| JwtSvidError::BadActor("act without sub".into()))?;
        actors.push(in_domain(sub, trust_domain, JwtSvidError::BadActor)?);
        cur = a.get("act");
    }
    let spiffe_id = match actors.first() {
        Some(newest) => {
            if !opts.allow_delegation {
                return Err(JwtSvidError::DelegationNotAllowed);
            }
            newest.clone()
        }
        None => in_domain(&subject, trust_domain, JwtSvidError::SubjectNotSpiffeId)?,
    };
    let task = c.get("task").and_then(Value::as_object).and_then(|t| {
        Some(Task {
            id: t.get("id")?.as_str()?.to_owned(),
            purpose: t.get("purpose").and_then(Value::as_str).map(str::to_owned),
        })
    });
    let scope = c
        .get("scope")
        .and_then(Value::as_str)
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let str_claim = |n: &str| c.get(n).and_then(Value::as_str).map(str::to_owned);
    Ok(VerifiedJwtSvid {
        spiffe_id,
        subject,
        actors,
        audience,
        expires_at: exp,
        issued_at,
        jti: str_claim("jti"),
        issuer,
        task,
        scope,
        authority_model: str_claim("authority_model"),
        subject_type: str_claim("sub_type"),
        kid: jws.kid,
        claims: c,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::test_keys::*;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const NOW: i64 = 1_760_000_000;
    const AUD: &str = "spiffe://example.org/api";

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    fn good() -> Value {
        json!({"sub": "spiffe://example.org/web", "aud": [AUD], "exp": NOW + 300, "iat": NOW, "jti": "j1"})
    }

    fn check(t: &str, keys: &JwtKeySet) -> Result<VerifiedJwtSvid, JwtSvidError> {
        validate_jwt_svid(t, keys, &td(), &JwtOptions::new(AUD), NOW)
    }

    #[test]
    fn a_plain_jwt_svid_validates() {
        let k = TestKey::es256("k1");
        let keys = set_of(&[&k]);
        let v = check(&k.sign(Some("JWT"), &good()), &keys).unwrap();
        assert_eq!(v.spiffe_id.to_string(), "spiffe://example.org/web");
        assert!(!v.is_delegated());
        assert_eq!(v.jti.as_deref(), Some("j1"));
        // RSA keys work with RS256 and PS256.
        let r = TestKey::rsa("r1");
        let keys = set_of(&[&r]);
        assert!(check(&r.sign(None, &good()), &keys).is_ok());
    }

    #[test]
    fn a_delegation_chain_is_exposed() {
        let k = TestKey::es256("k1");
        let keys = set_of(&[&k]);
        let c = json!({
            "sub": "alice@example.com", "sub_type": "human", "principal_iss": "https://login.example.com",
            "aud": AUD, "exp": NOW + 300, "iat": NOW, "jti": "d1",
            "act": {"sub": "spiffe://example.org/researcher", "act": {"sub": "spiffe://example.org/planner"}},
            "scope": "mail.read mail.send", "authority_model": "delegated",
            "task": {"id": "t-1", "purpose": "triage"},
        });
        let v = check(&k.sign(Some("JWT"), &c), &keys).unwrap();
        assert!(v.is_delegated());
        assert_eq!(v.principal(), "alice@example.com");
        assert_eq!(v.spiffe_id.to_string(), "spiffe://example.org/researcher");
        let oldest: Vec<String> = v.actors_oldest_first().map(|a| a.to_string()).collect();
        assert_eq!(oldest, ["spiffe://example.org/planner", "spiffe://example.org/researcher"]);
        assert_eq!(v.scope, ["mail.read", "mail.send"]);
        assert_eq!(v.task, Some(Task { id: "t-1".into(), purpose: Some("triage".into()) }));
        assert_eq!(v.authority_model.as_deref(), Some("delegated"));
        assert_eq!(v.subject_type.as_deref(), Some("human"));

        // An actor from another trust domain, a malformed actor, a too deep chain.
        let mut bad = c.clone();
        bad["act"]["act"]["sub"] = json!("spiffe://other.org/planner");
        assert!(matches!(check(&k.sign(None, &bad), &keys), Err(JwtSvidError::WrongTrustDomain { .. })));
        let mut bad = c.clone();
        bad["act"] = json!({"sub": "bob"});
        assert!(matches!(check(&k.sign(None, &bad), &keys), Err(JwtSvidError::BadActor(_))));
        let mut deep = json!({"sub": "spiffe://example.org/a0"});
        for i in 1..10 {
            deep = json!({"sub": format!("spiffe://example.org/a{i}"), "act": deep});
        }
        let mut bad = c.clone();
        bad["act"] = deep;
        assert_eq!(check(&k.sign(None, &bad), &keys).unwrap_err(), JwtSvidError::ChainTooDeep(10));
        let mut no = JwtOptions::new(AUD);
        no.allow_delegation = false;
        assert_eq!(
            validate_jwt_svid(&k.sign(None, &c), &keys, &td(), &no, NOW).unwrap_err(),
            JwtSvidError::DelegationNotAllowed
        );
    }

    #[test]
    fn negative_matrix() {
        let k = TestKey::es256("k1");
        let r = TestKey::rsa("r1");
        let keys = set_of(&[&k, &r]);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token = k.sign(Some("JWT"), &good());
        let parts: Vec<&str> = token.split('.').collect();

        let none = format!("{}.{}.", b64.encode(r#"{"alg":"none","kid":"k1"}"#), parts[1]);
        assert_eq!(check(&none, &keys).unwrap_err(), JwtSvidError::AlgorithmNotAllowed("none".into()));
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let hs =
            jsonwebtoken::encode(&h, &good(), &EncodingKey::from_secret(k.public_pem.as_bytes())).unwrap();
        assert_eq!(check(&hs, &keys).unwrap_err(), JwtSvidError::AlgorithmNotAllowed("HS256".into()));
        // ES256 token naming the RSA kid: algorithm confusion refused before any check.
        let confused = TestKey { kid: "r1".into(), ..TestKey::es256("x") };
        assert!(matches!(
            check(&confused.sign(None, &good()), &keys),
            Err(JwtSvidError::AlgorithmKeyMismatch { .. })
        ));
        assert_eq!(
            check(&TestKey::es256("k9").sign(None, &good()), &keys).unwrap_err(),
            JwtSvidError::UnknownKey("k9".into())
        );
        let mut h = Header::new(Algorithm::ES256);
        h.typ = Some("JWT".into());
        assert_eq!(
            check(&jsonwebtoken::encode(&h, &good(), &k.enc).unwrap(), &keys).unwrap_err(),
            JwtSvidError::MissingKid
        );
        let mut c = good();
        c.as_object_mut().unwrap().remove("aud");
        assert_eq!(check(&k.sign(None, &c), &keys).unwrap_err(), JwtSvidError::MissingAudience);
        let mut c = good();
        c["aud"] = json!("spiffe://example.org/other");
        assert!(matches!(check(&k.sign(None, &c), &keys), Err(JwtSvidError::WrongAudience { .. })));
        let mut c = good();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(check(&k.sign(None, &c), &keys).unwrap_err(), JwtSvidError::MissingExpiry);
        let mut c = good();
        c["exp"] = json!(NOW - 31);
        assert!(matches!(check(&k.sign(None, &c), &keys), Err(JwtSvidError::Expired { .. })));
        let mut c = good();
        c["nbf"] = json!(NOW + 100);
        assert!(matches!(check(&k.sign(None, &c), &keys), Err(JwtSvidError::NotYetValid { .. })));
        let mut c = good();
        c["iat"] = json!(NOW + 100);
        assert!(matches!(check(&k.sign(None, &c), &keys), Err(JwtSvidError::IssuedInFuture { .. })));
        // Tampered.
        let mut c = good();
        c["sub"] = json!("spiffe://example.org/admin");
        let tampered = format!("{}.{}.{}", parts[0], b64.encode(c.to_string()), parts[2]);
        assert_eq!(check(&tampered, &keys).unwrap_err(), JwtSvidError::BadSignature);
        // Wrong trust domain, not a SPIFFE ID, no sub.
        let mut c = good();
        c["sub"] = json!("spiffe://other.org/web");
        assert!(matches!(check(&k.sign(None, &c), &keys), Err(JwtSvidError::WrongTrustDomain { .. })));
        let mut c = good();
        c["sub"] = json!("web");
        assert!(matches!(check(&k.sign(None, &c), &keys), Err(JwtSvidError::SubjectNotSpiffeId(_))));
        let mut c = good();
        c.as_object_mut().unwrap().remove("sub");
        assert_eq!(check(&k.sign(None, &c), &keys).unwrap_err(), JwtSvidError::MissingSubject);
        // A SET is not a JWT-SVID.
        assert!(matches!(
            check(&k.sign(Some("secevent+jwt"), &good()), &keys),
            Err(JwtSvidError::WrongType(_))
        ));
        // Expected issuer.
        let mut o = JwtOptions::new(AUD);
        o.issuer = Some("https://issuer".into());
        assert!(matches!(
            validate_jwt_svid(&token, &keys, &td(), &o, NOW),
            Err(JwtSvidError::WrongIssuer { .. })
        ));
        // Oversized.
        let mut c = good();
        c["pad"] = json!("x".repeat(DEFAULT_MAX_TOKEN_BYTES));
        assert!(matches!(check(&k.sign(None, &c), &keys), Err(JwtSvidError::TooLarge(_))));
    }
}
