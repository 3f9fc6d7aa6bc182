//! JWT verification for Ferrid's JWT-based attestors (Kubernetes service-account
//! tokens, GCP instance identity tokens, Azure managed-identity tokens, CI and OIDC
//! tokens) and for delegation's identity providers.
//!
//! - Keys come from a JWKS document or from PEM public keys and certificates
//!   ([`KeySet`]). A token's `kid` selects its key; a token without `kid` is tried
//!   against every key of a matching family.
//! - Only asymmetric algorithms are accepted, from an allow list ([`Expectations`]):
//!   `none` and every HMAC algorithm are refused before any key is touched, so a public
//!   key can never be used as an HMAC secret. The algorithm must also match the key's
//!   family (and the JWK's own `alg` when it names one).
//! - `iss`, `aud`, `exp`, `nbf` and `iat` are checked against a `now` the caller
//!   passes in (an injected clock), with a small leeway.
//! - Tokens over [`MAX_TOKEN_BYTES`] are refused unparsed.
//!
//! - Keys can also be fetched from the issuer by OIDC discovery or a JWKS URL, cached
//!   and refreshed on an unknown `kid` ([`remote::RemoteKeys`]).
//! - [`Verifier`] puts one issuer's keys together (key files, then fetched keys) with
//!   the checks its tokens must pass, from the key settings the attestors' configurations
//!   share ([`IssuerKeys`]).
//!
//! Signatures are verified by `jsonwebtoken` on its aws-lc-rs backend.
#![forbid(unsafe_code)]

pub mod remote;
mod verifier;

pub use verifier::{IssuerKeys, KeySetting, KeySettingError, Verifier};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// The largest token accepted.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a token was refused. Messages say what was wrong, never the token itself.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtError {
    /// Not a JWT, or its header or claims do not parse.
    #[error("malformed JWT: {0}")]
    Malformed(String),
    /// Over [`MAX_TOKEN_BYTES`].
    #[error("JWT too large: {0} bytes, the limit is {MAX_TOKEN_BYTES}")]
    TooLarge(usize),
    /// The algorithm is not on the allow list (always the case for `none` and HMAC).
    #[error("JWT algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    /// No configured key has the token's `kid` (or fits its algorithm).
    #[error("no trusted key for this JWT (kid {0:?})")]
    UnknownKey(Option<String>),
    /// The signature does not verify under any candidate key.
    #[error("JWT signature does not verify")]
    BadSignature,
    /// `iss` differs from the expected issuer.
    #[error("JWT issuer {got:?} is not the expected {want:?}")]
    WrongIssuer {
        /// The token's issuer.
        got: String,
        /// The expected issuer.
        want: String,
    },
    /// The expected audience is not among `aud`.
    #[error("JWT audience {got:?} does not include {want:?}")]
    WrongAudience {
        /// The token's audiences.
        got: Vec<String>,
        /// The expected audience.
        want: String,
    },
    /// `exp` has passed.
    #[error("JWT expired at {exp} (now {now})")]
    Expired {
        /// The token's `exp`.
        exp: i64,
        /// The verifier's time.
        now: i64,
    },
    /// `nbf` (or `iat`) is in the future.
    #[error("JWT not valid before {nbf} (now {now})")]
    NotYetValid {
        /// The token's `nbf` or `iat`.
        nbf: i64,
        /// The verifier's time.
        now: i64,
    },
    /// A claim the caller requires is missing or has the wrong type.
    #[error("JWT claim {0} is missing or malformed")]
    MissingClaim(&'static str),
    /// A key could not be loaded.
    #[error("invalid key: {0}")]
    BadKey(String),
    /// The issuer's keys could not be fetched (discovery or JWKS request failed) and
    /// none are cached.
    #[error("issuer keys unavailable: {0}")]
    KeysUnavailable(String),
}

impl JwtError {
    /// The attestation error for a refused `what` (e.g. "identity token"): expired
    /// tokens are `Expired`, unparsable ones `Malformed`, oversized ones `TooLarge`,
    /// unreachable issuer keys `Unavailable`, everything else `Rejected`. The message
    /// names `what` and the reason.
    pub fn into_attest(self, what: &str) -> ferrid_attest::AttestError {
        use ferrid_attest::AttestError;
        match self {
            Self::Expired { .. } => AttestError::Expired(format!("{what}: {self}")),
            Self::Malformed(_) => AttestError::Malformed(format!("{what}: {self}")),
            Self::TooLarge(n) => AttestError::TooLarge { limit: MAX_TOKEN_BYTES, got: n },
            Self::KeysUnavailable(_) => AttestError::Unavailable(format!("{what}: {self}")),
            other => AttestError::Rejected(format!("{what}: {other}")),
        }
    }
}

/// A node attestor's payload as a token: at most [`MAX_TOKEN_BYTES`], UTF-8, without
/// surrounding whitespace. `what` names the token in errors ("identity token").
pub fn token_payload<'a>(payload: &'a [u8], what: &str) -> Result<&'a str, ferrid_attest::AttestError> {
    use ferrid_attest::AttestError;
    if payload.len() > MAX_TOKEN_BYTES {
        return Err(AttestError::TooLarge { limit: MAX_TOKEN_BYTES, got: payload.len() });
    }
    std::str::from_utf8(payload)
        .map(str::trim)
        .map_err(|_| AttestError::Malformed(format!("the {what} is not UTF-8")))
}

#[derive(Clone)]
struct Key {
    kid: Option<String>,
    /// The JWK's own `alg`, when it pins one.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// Trusted verification keys.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|k| &k.kid)).finish()
    }
}

impl KeySet {
    /// Keys from a JWKS document (`{"keys": [...]}`). Symmetric (`oct`) keys are
    /// refused: a verifier of third-party tokens has no business holding secrets.
    pub fn from_jwks(json: &[u8]) -> Result<Self, JwtError> {
        let set: JwkSet = serde_json::from_slice(json).map_err(|e| JwtError::BadKey(format!("JWKS: {e}")))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                return Err(JwtError::BadKey("symmetric (oct) keys are not accepted".into()));
            }
            let key = DecodingKey::from_jwk(jwk).map_err(|e| JwtError::BadKey(format!("JWK: {e}")))?;
            let alg = jwk.common.key_algorithm.and_then(|a| a.to_string().parse().ok());
            keys.push(Key { kid: jwk.common.key_id.clone(), alg, key });
        }
        Ok(Self { keys })
    }

    /// Keys from a JWKS document served by a third party: keys this verifier cannot
    /// use (symmetric, encryption-only, unknown types) are skipped, not fatal. Returns the
    /// keys and how many were skipped.
    pub fn from_jwks_lenient(json: &[u8]) -> Result<(Self, usize), JwtError> {
        let doc: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| JwtError::BadKey(format!("JWKS: {e}")))?;
        let list = doc
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| JwtError::BadKey("JWKS: no \"keys\" array".into()))?;
        let mut keys = Vec::new();
        let mut skipped = 0;
        for raw in list {
            if raw.get("use").and_then(serde_json::Value::as_str).is_some_and(|u| u != "sig") {
                skipped += 1;
                continue;
            }
            let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(raw.clone()) else {
                skipped += 1;
                continue;
            };
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                skipped += 1;
                continue;
            }
            match DecodingKey::from_jwk(&jwk) {
                Ok(key) => {
                    let alg = jwk.common.key_algorithm.and_then(|a| a.to_string().parse().ok());
                    keys.push(Key { kid: jwk.common.key_id.clone(), alg, key });
                }
                Err(_) => skipped += 1,
            }
        }
        Ok((Self { keys }, skipped))
    }

    /// Keys from PEM: RSA or EC public keys (`PUBLIC KEY`, `RSA PUBLIC KEY`) or
    /// certificates, as many as the text holds. They have no `kid`.
    pub fn from_pem(text: &[u8]) -> Result<Self, JwtError> {
        let blocks = pem::parse_many(text).map_err(|e| JwtError::BadKey(format!("PEM: {e}")))?;
        if blocks.is_empty() {
            return Err(JwtError::BadKey("no PEM blocks".into()));
        }
        let mut keys = Vec::new();
        for b in blocks {
            let one = pem::encode(&b);
            let key = DecodingKey::from_rsa_pem(one.as_bytes())
                .or_else(|_| DecodingKey::from_ec_pem(one.as_bytes()))
                .map_err(|e| JwtError::BadKey(format!("PEM block {}: {e}", b.tag())))?;
            keys.push(Key { kid: None, alg: None, key });
        }
        Ok(Self { keys })
    }

    /// Adds every key of `other`.
    pub fn extend(&mut self, other: KeySet) {
        self.keys.extend(other.keys);
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// What a verified token must satisfy.
#[derive(Debug, Clone)]
pub struct Expectations {
    /// Accepted algorithms; only asymmetric ones count (others are ignored).
    pub algorithms: Vec<Algorithm>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required member of `aud`, when set.
    pub audience: Option<String>,
    /// Whether `exp` must be present.
    pub require_exp: bool,
    /// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: i64,
}

impl Expectations {
    /// RS256/384/512, PS256/384/512, ES256/384 and EdDSA; `exp` required; 30 s leeway.
    pub fn new(issuer: Option<String>, audience: Option<String>) -> Self {
        use Algorithm::*;
        Self {
            algorithms: vec![RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA],
            issuer,
            audience,
            require_exp: true,
            leeway: 30,
        }
    }
}

/// A verified token.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The signing algorithm.
    pub algorithm: Algorithm,
    /// The `kid` of the header, if any.
    pub kid: Option<String>,
    /// Every claim.
    pub claims: Value,
}

impl Verified {
    /// A string claim.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// An integer claim.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.claims.get(name).and_then(Value::as_i64)
    }
}

fn is_asymmetric(a: Algorithm) -> bool {
    !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// The raw `alg` of a token's header, read without trusting anything, so `none` and
/// unknown names are reported as such rather than as parse errors.
fn raw_alg(token: &str) -> Result<String, JwtError> {
    use base64::Engine;
    let head = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed("header is not base64url".into()))?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed("header is not JSON".into()))?;
    v.get("alg")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(JwtError::Malformed("header has no alg".into()))
}

/// The `iss` claim of a token, read **without verifying anything**: only for choosing
/// which issuer's verifier to run (the verifier then checks `iss` again).
pub fn unverified_issuer(token: &str) -> Result<String, JwtError> {
    use base64::Engine;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge(token.len()));
    }
    let mut parts = token.split('.');
    let (Some(_), Some(body), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("a JWS compact token has three parts".into()));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed("claims are not base64url".into()))?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed("claims are not JSON".into()))?;
    v.get("iss").and_then(Value::as_str).map(str::to_owned).ok_or(JwtError::MissingClaim("iss"))
}

/// Verifies `token` under `keys` at `now` (Unix seconds).
pub fn verify(token: &str, keys: &KeySet, want: &Expectations, now: i64) -> Result<Verified, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge(token.len()));
    }
    if token.split('.').count() != 3 {
        return Err(JwtError::Malformed("a JWS compact token has three parts".into()));
    }
    let alg_name = raw_alg(token)?;
    let alg: Algorithm = alg_name.parse().map_err(|_| JwtError::AlgorithmNotAllowed(alg_name.clone()))?;
    if !is_asymmetric(alg) || !want.algorithms.contains(&alg) {
        return Err(JwtError::AlgorithmNotAllowed(alg_name));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
    let candidates: Vec<&Key> = keys
        .keys
        .iter()
        .filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
        .filter(|k| k.alg.is_none_or(|a| a == alg))
        .filter(|k| alg_family(alg) == k.key.family())
        .collect();
    if candidates.is_empty() {
        return Err(JwtError::UnknownKey(header.kid));
    }
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let mut claims = None;
    for k in candidates {
        match jsonwebtoken::decode::<Value>(token, &k.key, &validation) {
            Ok(data) => {
                claims = Some(data.claims);
                break;
            }
            Err(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => continue,
                jsonwebtoken::errors::ErrorKind::Json(_) | jsonwebtoken::errors::ErrorKind::Base64(_) => {
                    return Err(JwtError::Malformed(e.to_string()));
                }
                _ => continue,
            },
        }
    }
    let claims = claims.ok_or(JwtError::BadSignature)?;
    if !claims.is_object() {
        return Err(JwtError::Malformed("claims are not a JSON object".into()));
    }
    let v = Verified { algorithm: alg, kid: header.kid, claims };
    check_claims(&v, want, now)?;
    Ok(v)
}

fn alg_family(a: Algorithm) -> jsonwebtoken::AlgorithmFamily {
    use jsonwebtoken::AlgorithmFamily as F;
    match a {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => F::Hmac,
        Algorithm::ES256 | Algorithm::ES384 => F::Ec,
        Algorithm::EdDSA => F::Ed,
        _ => F::Rsa,
    }
}

fn check_claims(v: &Verified, want: &Expectations, now: i64) -> Result<(), JwtError> {
    if let Some(iss) = &want.issuer {
        let got = v.str("iss").ok_or(JwtError::MissingClaim("iss"))?;
        if got != iss {
            return Err(JwtError::WrongIssuer { got: got.to_owned(), want: iss.clone() });
        }
    }
    if let Some(aud) = &want.audience {
        let got: Vec<String> = match v.claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => return Err(JwtError::MissingClaim("aud")),
        };
        if !got.iter().any(|a| a == aud) {
            return Err(JwtError::WrongAudience { got, want: aud.clone() });
        }
    }
    match (v.claims.get("exp"), v.int("exp")) {
        (Some(_), Some(exp)) if now > exp.saturating_add(want.leeway) => {
            return Err(JwtError::Expired { exp, now });
        }
        (Some(_), Some(_)) => {}
        (Some(_), None) => return Err(JwtError::MissingClaim("exp")),
        (None, _) if want.require_exp => return Err(JwtError::MissingClaim("exp")),
        (None, _) => {}
    }
    for name in ["nbf", "iat"] {
        match (v.claims.get(name), v.int(name)) {
            (Some(_), Some(t)) if t > now.saturating_add(want.leeway) => {
                return Err(JwtError::NotYetValid { nbf: t, now });
            }
            (Some(_), None) => return Err(JwtError::MissingClaim(if name == "nbf" { "nbf" } else { "iat" })),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    fn es256() -> (EncodingKey, KeySet, String) {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let enc = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
        let public = kp.public_key_pem();
        (enc, KeySet::from_pem(public.as_bytes()).unwrap(), public)
    }

    fn sign(enc: &EncodingKey, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, enc).unwrap()
    }

    fn want() -> Expectations {
        Expectations::new(Some("https://issuer".into()), Some("ferrid".into()))
    }

    fn good(now: i64) -> Value {
        json!({"iss": "https://issuer", "aud": ["x", "ferrid"], "exp": now + 600, "iat": now, "nbf": now, "sub": "s"})
    }

    #[test]
    fn a_good_token_verifies_and_every_claim_check_bites() {
        let (enc, keys, _) = es256();
        let now = 1_700_000_000;
        let v = verify(&sign(&enc, &good(now)), &keys, &want(), now).unwrap();
        assert_eq!(v.str("sub"), Some("s"));

        let mut c = good(now);
        c["aud"] = json!("other");
        assert!(matches!(verify(&sign(&enc, &c), &keys, &want(), now), Err(JwtError::WrongAudience { .. })));
        let mut c = good(now);
        c["iss"] = json!("https://evil");
        assert!(matches!(verify(&sign(&enc, &c), &keys, &want(), now), Err(JwtError::WrongIssuer { .. })));
        assert!(matches!(
            verify(&sign(&enc, &good(now)), &keys, &want(), now + 631),
            Err(JwtError::Expired { .. })
        ));
        assert!(verify(&sign(&enc, &good(now)), &keys, &want(), now + 629).is_ok(), "within the leeway");
        assert!(matches!(
            verify(&sign(&enc, &good(now)), &keys, &want(), now - 31),
            Err(JwtError::NotYetValid { .. })
        ));
        let mut c = good(now);
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(verify(&sign(&enc, &c), &keys, &want(), now).unwrap_err(), JwtError::MissingClaim("exp"));
        let mut c = good(now);
        c["exp"] = json!("tomorrow");
        assert_eq!(verify(&sign(&enc, &c), &keys, &want(), now).unwrap_err(), JwtError::MissingClaim("exp"));
    }

    #[test]
    fn forged_and_confused_tokens_are_refused() {
        let (enc, keys, public_pem) = es256();
        let (other, _, _) = es256();
        let now = 1_700_000_000;
        let token = sign(&enc, &good(now));

        // Signed by someone else.
        assert_eq!(
            verify(&sign(&other, &good(now)), &keys, &want(), now).unwrap_err(),
            JwtError::BadSignature
        );
        // Tampered claims.
        let parts: Vec<&str> = token.split('.').collect();
        let mut c = good(now);
        c["sub"] = json!("admin");
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let tampered = format!("{}.{}.{}", parts[0], b64.encode(c.to_string()), parts[2]);
        assert_eq!(verify(&tampered, &keys, &want(), now).unwrap_err(), JwtError::BadSignature);
        // alg: none.
        let none = format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
        assert_eq!(
            verify(&none, &keys, &want(), now).unwrap_err(),
            JwtError::AlgorithmNotAllowed("none".into())
        );
        // HS256 signed with the public key as the secret (algorithm confusion).
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &good(now),
            &EncodingKey::from_secret(public_pem.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            verify(&hs, &keys, &want(), now).unwrap_err(),
            JwtError::AlgorithmNotAllowed("HS256".into())
        );
        // RS256 claimed for an EC key: no key of that family.
        let rs_header = format!("{}.{}.{}", b64.encode(r#"{"alg":"RS256"}"#), parts[1], parts[2]);
        assert!(matches!(verify(&rs_header, &keys, &want(), now), Err(JwtError::UnknownKey(_))));
        // Not on the caller's allow list.
        let mut only_rsa = want();
        only_rsa.algorithms = vec![Algorithm::RS256];
        assert_eq!(
            verify(&token, &keys, &only_rsa, now).unwrap_err(),
            JwtError::AlgorithmNotAllowed("ES256".into())
        );
        // Garbage and oversized input.
        assert!(matches!(verify("a.b", &keys, &want(), now), Err(JwtError::Malformed(_))));
        assert!(matches!(verify("!!.??.##", &keys, &want(), now), Err(JwtError::Malformed(_))));
        assert_eq!(
            verify(&"a".repeat(MAX_TOKEN_BYTES + 1), &keys, &want(), now).unwrap_err(),
            JwtError::TooLarge(MAX_TOKEN_BYTES + 1)
        );
    }

    #[test]
    fn kid_selects_the_key_and_oct_keys_are_refused() {
        let (enc, _, _) = es256();
        let now = 1_700_000_000;
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("unknown".into());
        let t = jsonwebtoken::encode(&h, &good(now), &enc).unwrap();
        let jwks = br#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#;
        let keys = KeySet::from_jwks(jwks).unwrap();
        assert_eq!(
            verify(&t, &keys, &want(), now).unwrap_err(),
            JwtError::UnknownKey(Some("unknown".into()))
        );
        assert!(KeySet::from_jwks(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err());
        assert!(KeySet::from_pem(b"not pem").is_err());
    }
}
