//! Verification of WIT-SVIDs and WPTs (see the crate documentation for the rules).
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferrid_types::{SpiffeId, TrustDomain};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind, jwk::Jwk};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::replay::ReplayCache;
use crate::{TokenKind, WimseError};

/// Algorithms a WIT-SVID may be signed with (SPIFFE WIT-SVID §2.3, less ES512, which
/// the `jsonwebtoken` backend does not implement).
const WIT_ALGS: [&str; 8] = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"];

/// Algorithms a workload key (`cnf.jwk.alg`, hence the WPT) may use: the WIT-SVID list
/// and EdDSA, which WIMSE WITs allow (draft-ietf-wimse-workload-creds-02).
const CNF_ALGS: [&str; 9] = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

/// JWK members that carry private or symmetric key material.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Longest `jti` accepted, in bytes.
const MAX_JTI_BYTES: usize = 1024;

/// The base64url (unpadded) SHA-256 of a token's ASCII value: what `wth`, `ath` and
/// `tth` carry.
pub fn token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

fn malformed(kind: TokenKind, reason: impl Into<String>) -> WimseError {
    WimseError::Malformed { kind, reason: reason.into() }
}

/// Size, shape (three base64url parts) and the JSON header.
fn parse_header(token: &str, kind: TokenKind) -> Result<Map<String, Value>, WimseError> {
    if token.len() > crate::MAX_TOKEN_BYTES {
        return Err(WimseError::TooLarge(kind));
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(malformed(kind, format!("a compact JWS has 3 parts, this has {}", parts.len())));
    }
    let raw = URL_SAFE_NO_PAD.decode(parts[0]).map_err(|_| malformed(kind, "header is not base64url"))?;
    match serde_json::from_slice(&raw) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(malformed(kind, "header is not a JSON object")),
    }
}

/// `typ` must be the media type `expected`, with or without `application/`, any case
/// (RFC 7515 §4.1.9).
fn check_typ(h: &Map<String, Value>, kind: TokenKind, expected: &'static str) -> Result<(), WimseError> {
    let found = h.get("typ").and_then(Value::as_str);
    let ok = found.is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t == expected || t.strip_prefix("application/") == Some(expected)
    });
    if ok {
        Ok(())
    } else {
        Err(WimseError::WrongType {
            kind,
            expected,
            found: h.get("typ").map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)),
        })
    }
}

fn check_crit(h: &Map<String, Value>, kind: TokenKind) -> Result<(), WimseError> {
    if h.contains_key("crit") { Err(WimseError::CriticalHeader(kind)) } else { Ok(()) }
}

/// The header's `alg`, if it is on `allowed`.
fn check_alg(alg: Option<&Value>, kind: TokenKind, allowed: &[&str]) -> Result<Algorithm, WimseError> {
    let refuse = |alg: String, reason| Err(WimseError::AlgorithmNotAllowed { kind, alg, reason });
    let Some(alg) = alg.and_then(Value::as_str) else {
        return refuse(alg.map(ToString::to_string).unwrap_or_default(), "alg is missing or not a string");
    };
    if alg.eq_ignore_ascii_case("none") {
        return refuse(alg.into(), "unsigned tokens are never accepted");
    }
    if alg.starts_with("HS") {
        return refuse(alg.into(), "symmetric (HMAC) algorithms are never accepted");
    }
    if !allowed.contains(&alg) {
        return refuse(
            alg.into(),
            match kind {
                TokenKind::Wit => "not in the WIT-SVID allow list (RS*, PS*, ES256, ES384)",
                TokenKind::Wpt => "not an allowed asymmetric signature algorithm",
            },
        );
    }
    alg.parse::<Algorithm>().or_else(|_| refuse(alg.into(), "not supported by this verifier"))
}

/// Verifies the signature with `key` and returns the claims; checks no claim itself.
fn verify_signature(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    kind: TokenKind,
) -> Result<Map<String, Value>, WimseError> {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    match jsonwebtoken::decode::<Map<String, Value>>(token, key, &v) {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(match e.kind() {
            ErrorKind::InvalidSignature => WimseError::BadSignature { kind, detail: String::new() },
            ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
                malformed(kind, format!("claims or signature do not decode: {e}"))
            }
            _ => WimseError::BadSignature { kind, detail: format!(": {e}") },
        }),
    }
}

/// A NumericDate claim, if present.
fn time_claim(
    c: &Map<String, Value>,
    kind: TokenKind,
    claim: &'static str,
) -> Result<Option<i64>, WimseError> {
    match c.get(claim) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f.floor() as i64))
            .map(Some)
            .ok_or_else(|| WimseError::InvalidClaim {
                kind,
                claim,
                reason: format!("{n} is not a usable NumericDate"),
            }),
        Some(other) => {
            Err(WimseError::InvalidClaim { kind, claim, reason: format!("{other} is not a number") })
        }
    }
}

fn string_claim<'c>(
    c: &'c Map<String, Value>,
    kind: TokenKind,
    claim: &'static str,
) -> Result<Option<&'c str>, WimseError> {
    match c.get(claim) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => {
            Err(WimseError::InvalidClaim { kind, claim, reason: format!("{other} is not a string") })
        }
    }
}

/// `exp` (required, not passed) and `nbf` (optional, not in the future).
fn check_times(c: &Map<String, Value>, kind: TokenKind, now: i64, leeway: i64) -> Result<i64, WimseError> {
    let exp = time_claim(c, kind, "exp")?.ok_or(WimseError::MissingClaim { kind, claim: "exp" })?;
    if exp.saturating_add(leeway) <= now {
        return Err(WimseError::Expired { kind, exp, now });
    }
    if let Some(nbf) = time_claim(c, kind, "nbf")?
        && nbf > now.saturating_add(leeway)
    {
        return Err(WimseError::NotYetValid { kind, nbf, now });
    }
    Ok(exp)
}

/// The signing key named `kid` in a WIT bundle (JWKS).
fn bundle_key(jwks_json: &str, kid: &str) -> Result<DecodingKey, WimseError> {
    let jwks: Value =
        serde_json::from_str(jwks_json).map_err(|e| WimseError::InvalidBundle(e.to_string()))?;
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| WimseError::InvalidBundle("no keys array".into()))?;
    let found: Vec<&Value> =
        keys.iter().filter(|k| k.get("kid").and_then(Value::as_str) == Some(kid)).collect();
    let key = match found.as_slice() {
        [] => return Err(WimseError::UnknownKey { kid: kid.into() }),
        [one] => *one,
        many => return Err(WimseError::InvalidBundle(format!("kid {kid:?} names {} keys", many.len()))),
    };
    if let Some(u) = key.get("use")
        && u.as_str() != Some("wit-svid")
    {
        return Err(WimseError::KeyUse {
            kid: kid.into(),
            key_use: u.as_str().map_or_else(|| u.to_string(), str::to_owned),
        });
    }
    if let Some(p) = PRIVATE_MEMBERS.iter().find(|p| key.get(**p).is_some()) {
        return Err(WimseError::InvalidBundle(format!(
            "key {kid:?} has the private or symmetric member {p:?}"
        )));
    }
    let mut key = key.clone();
    if let Some(m) = key.as_object_mut() {
        m.remove("use");
    }
    let jwk: Jwk =
        serde_json::from_value(key).map_err(|e| WimseError::InvalidBundle(format!("key {kid:?}: {e}")))?;
    DecodingKey::from_jwk(&jwk).map_err(|e| WimseError::InvalidBundle(format!("key {kid:?}: {e}")))
}

/// `cnf.jwk`: an asymmetric public key whose `alg` fits its type.
fn confirmation_key(c: &Map<String, Value>) -> Result<(String, Algorithm, DecodingKey), WimseError> {
    let bad = |m: String| WimseError::InvalidConfirmationKey(m);
    let cnf = c.get("cnf").ok_or(WimseError::MissingClaim { kind: TokenKind::Wit, claim: "cnf" })?;
    let jwk = cnf.get("jwk").and_then(Value::as_object).ok_or_else(|| bad("cnf has no jwk object".into()))?;
    if let Some(p) = PRIVATE_MEMBERS.iter().find(|p| jwk.contains_key(**p)) {
        return Err(bad(format!("it has the private or symmetric member {p:?}")));
    }
    let alg = jwk.get("alg").and_then(Value::as_str).ok_or_else(|| bad("it has no alg".into()))?;
    let algorithm = check_alg(jwk.get("alg"), TokenKind::Wpt, &CNF_ALGS).map_err(|e| bad(e.to_string()))?;
    let s = |k: &str| jwk.get(k).and_then(Value::as_str);
    let fits = match alg {
        "ES256" => s("kty") == Some("EC") && s("crv") == Some("P-256"),
        "ES384" => s("kty") == Some("EC") && s("crv") == Some("P-384"),
        "EdDSA" => s("kty") == Some("OKP") && s("crv") == Some("Ed25519"),
        _ => s("kty") == Some("RSA"),
    };
    if !fits {
        return Err(bad(format!("alg {alg} does not fit kty {:?} crv {:?}", s("kty"), s("crv"))));
    }
    let mut m = jwk.clone();
    m.remove("use");
    let parsed: Jwk = serde_json::from_value(Value::Object(m)).map_err(|e| bad(e.to_string()))?;
    let key = DecodingKey::from_jwk(&parsed).map_err(|e| bad(e.to_string()))?;
    Ok((alg.to_owned(), algorithm, key))
}

/// A WIT-SVID whose signature, type, lifetime, subject and confirmation key checked out.
#[derive(Clone)]
pub struct VerifiedWit {
    /// The token as presented (what a WPT's `wth` hashes).
    pub token: String,
    /// The workload's identity (`sub`).
    pub spiffe_id: SpiffeId,
    /// The issuer key's `kid`.
    pub kid: String,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
    /// `iat`, when present.
    pub issued_at: Option<i64>,
    /// `jti`, when present (for audit; never for replay protection, WIT-SVID §3.3).
    pub jti: Option<String>,
    /// All claims.
    pub claims: Map<String, Value>,
    cnf_alg: String,
    cnf_algorithm: Algorithm,
    cnf_key: DecodingKey,
}

impl VerifiedWit {
    /// `cnf.jwk.alg`: the algorithm every proof must use.
    pub fn cnf_alg(&self) -> &str {
        &self.cnf_alg
    }
}

impl std::fmt::Debug for VerifiedWit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedWit")
            .field("spiffe_id", &self.spiffe_id.to_string())
            .field("kid", &self.kid)
            .field("expires_at", &self.expires_at)
            .field("cnf_alg", &self.cnf_alg)
            .finish_non_exhaustive()
    }
}

/// Verifies a WIT-SVID against the trust domain's WIT bundle (a JWKS, as the Workload
/// API's `FetchWITBundles` returns for `spiffe://<trust_domain>`) at `now` (Unix
/// seconds), allowing [`crate::DEFAULT_LEEWAY_SECS`] of clock skew.
///
/// This alone does not authenticate anyone: a WIT must come with a proof of
/// possession ([`WptVerifier::verify_request`] requires both).
pub fn verify_wit(
    token: &str,
    jwks_json: &str,
    trust_domain: &TrustDomain,
    now: i64,
) -> Result<VerifiedWit, WimseError> {
    let kind = TokenKind::Wit;
    let h = parse_header(token, kind)?;
    check_typ(&h, kind, "wit+jwt")?;
    check_crit(&h, kind)?;
    let alg = check_alg(h.get("alg"), kind, &WIT_ALGS)?;
    let kid = h.get("kid").and_then(Value::as_str).filter(|k| !k.is_empty()).ok_or(WimseError::MissingKid)?;
    let key = bundle_key(jwks_json, kid)?;
    let claims = verify_signature(token, &key, alg, kind)?;
    let expires_at = check_times(&claims, kind, now, crate::DEFAULT_LEEWAY_SECS)?;
    if claims.contains_key("aud") {
        return Err(WimseError::InvalidClaim {
            kind,
            claim: "aud",
            reason: "a WIT-SVID must not have an audience (SPIFFE WIT-SVID §3.8)".into(),
        });
    }
    let sub = string_claim(&claims, kind, "sub")?.ok_or(WimseError::MissingClaim { kind, claim: "sub" })?;
    let spiffe_id = SpiffeId::new(sub)
        .map_err(|e| WimseError::InvalidSubject { sub: sub.into(), reason: e.to_string() })?;
    if !spiffe_id.is_member_of(trust_domain) {
        return Err(WimseError::ForeignTrustDomain {
            sub: sub.into(),
            trust_domain: trust_domain.to_string(),
        });
    }
    string_claim(&claims, kind, "iss")?;
    let issued_at = time_claim(&claims, kind, "iat")?;
    let jti = string_claim(&claims, kind, "jti")?.map(str::to_owned);
    let (cnf_alg, cnf_algorithm, cnf_key) = confirmation_key(&claims)?;
    Ok(VerifiedWit {
        token: token.to_owned(),
        spiffe_id,
        kid: kid.to_owned(),
        expires_at,
        issued_at,
        jti,
        claims,
        cnf_alg,
        cnf_algorithm,
        cnf_key,
    })
}

/// What the request a WPT came with carries, for the WPT's bindings.
#[derive(Debug, Clone, Default)]
pub struct RequestContext<'a> {
    audience: &'a str,
    access_token: Option<&'a str>,
    txn_token: Option<&'a str>,
    other_tokens: Vec<(String, &'a str)>,
}

impl<'a> RequestContext<'a> {
    /// A request to `audience`: the target URI the service is configured to be (never
    /// taken from the request's `Host` or `X-Forwarded-Host`, draft-ietf-wimse-wpt-02
    /// §"Security Considerations"). Query and fragment are ignored.
    pub fn new(audience: &'a str) -> Self {
        Self { audience, ..Self::default() }
    }

    /// The request also carries this OAuth access token: the WPT must bind it (`ath`).
    pub fn with_access_token(mut self, token: &'a str) -> Self {
        self.access_token = Some(token);
        self
    }

    /// The request also carries this Txn-Token: the WPT must bind it (`tth`).
    pub fn with_txn_token(mut self, token: &'a str) -> Self {
        self.txn_token = Some(token);
        self
    }

    /// The request also carries this header with a token conveying user identity or
    /// authorization context: the WPT must bind it in `oth`.
    pub fn with_other_token(mut self, header: &str, value: &'a str) -> Self {
        self.other_tokens.push((header.to_ascii_lowercase(), value));
        self
    }
}

/// A WPT that checked out against its WIT and the request.
#[derive(Debug, Clone)]
pub struct VerifiedWpt {
    /// `jti`.
    pub jti: String,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
    /// All claims.
    pub claims: Map<String, Value>,
}

/// Verifies WPTs; holds the replay cache, so keep one per service (it is `Sync`).
#[derive(Debug)]
pub struct WptVerifier {
    max_lifetime: i64,
    leeway: i64,
    replay: Mutex<ReplayCache>,
}

impl Default for WptVerifier {
    fn default() -> Self {
        Self::new()
    }
}

fn without_query(uri: &str) -> &str {
    uri.split(['?', '#']).next().unwrap_or(uri)
}

fn check_binding(c: &Map<String, Value>, claim: &'static str, token: Option<&str>) -> Result<(), WimseError> {
    let err = |reason: &str| WimseError::TokenBinding { claim: claim.into(), reason: reason.into() };
    let got = string_claim(c, TokenKind::Wpt, claim)?;
    match (token, got) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(err("the request carries the token but the WPT does not bind it")),
        (None, Some(_)) => Err(err("the WPT binds a token the request does not carry")),
        (Some(t), Some(h)) if token_hash(t) == h => Ok(()),
        (Some(_), Some(_)) => Err(err("hash does not match the token in the request")),
    }
}

fn check_oth(c: &Map<String, Value>, others: &[(String, &str)]) -> Result<(), WimseError> {
    let err = |claim: String, reason: &str| WimseError::TokenBinding { claim, reason: reason.into() };
    let oth = match c.get("oth") {
        None => &Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(err("oth".into(), "is not a JSON object")),
    };
    for (name, hash) in oth {
        let Some((_, value)) = others.iter().find(|(n, _)| n == name) else {
            return Err(err(format!("oth.{name}"), "names a token this service does not understand"));
        };
        if hash.as_str() != Some(token_hash(value.trim()).as_str()) {
            return Err(err(format!("oth.{name}"), "hash does not match the header in the request"));
        }
    }
    if let Some((name, _)) = others.iter().find(|(n, _)| !oth.contains_key(n)) {
        return Err(err(format!("oth.{name}"), "the request carries the token but the WPT does not bind it"));
    }
    Ok(())
}

impl WptVerifier {
    /// Defaults: WPTs may live at most [`crate::DEFAULT_MAX_WPT_LIFETIME_SECS`], clock
    /// skew [`crate::DEFAULT_LEEWAY_SECS`], replay cache of
    /// [`crate::DEFAULT_REPLAY_CAPACITY`] proofs.
    pub fn new() -> Self {
        Self {
            max_lifetime: crate::DEFAULT_MAX_WPT_LIFETIME_SECS,
            leeway: crate::DEFAULT_LEEWAY_SECS,
            replay: Mutex::new(ReplayCache::new(crate::DEFAULT_REPLAY_CAPACITY)),
        }
    }

    /// The longest remaining life accepted for a WPT, in seconds.
    pub fn max_lifetime(&self) -> i64 {
        self.max_lifetime
    }

    /// Sets the longest remaining life accepted for a WPT, in seconds.
    pub fn with_max_lifetime(mut self, secs: i64) -> Self {
        self.max_lifetime = secs.max(1);
        self
    }

    /// Sets the clock-skew allowance, in seconds.
    pub fn with_leeway(mut self, secs: i64) -> Self {
        self.leeway = secs.max(0);
        self
    }

    /// Sets how many unexpired proofs the replay cache holds; when full, new proofs are
    /// refused ([`WimseError::ReplayCacheFull`]) rather than old ones forgotten.
    pub fn with_replay_capacity(mut self, capacity: usize) -> Self {
        self.replay = Mutex::new(ReplayCache::new(capacity));
        self
    }

    /// Verifies a WPT for `wit` and a request to `expected_audience` carrying no other
    /// tokens. See [`Self::verify_with`].
    pub fn verify(
        &self,
        wpt: &str,
        wit: &VerifiedWit,
        expected_audience: &str,
        now: i64,
    ) -> Result<VerifiedWpt, WimseError> {
        self.verify_with(wpt, wit, &RequestContext::new(expected_audience), now)
    }

    /// Verifies a WPT against its verified WIT and the request, then records its `jti`:
    /// the same proof from the same workload is refused until it expires.
    pub fn verify_with(
        &self,
        wpt: &str,
        wit: &VerifiedWit,
        ctx: &RequestContext<'_>,
        now: i64,
    ) -> Result<VerifiedWpt, WimseError> {
        let kind = TokenKind::Wpt;
        if wit.expires_at.saturating_add(self.leeway) <= now {
            return Err(WimseError::WitExpired { exp: wit.expires_at, now });
        }
        let h = parse_header(wpt, kind)?;
        check_typ(&h, kind, "wpt+jwt")?;
        check_crit(&h, kind)?;
        check_alg(h.get("alg"), kind, &CNF_ALGS)?;
        let alg = h.get("alg").and_then(Value::as_str).unwrap_or_default();
        if alg != wit.cnf_alg {
            return Err(WimseError::AlgorithmMismatch { wpt_alg: alg.into(), cnf_alg: wit.cnf_alg.clone() });
        }
        let claims = verify_signature(wpt, &wit.cnf_key, wit.cnf_algorithm, kind)?;
        let exp = check_times(&claims, kind, now, self.leeway)?;
        if exp > now.saturating_add(self.max_lifetime).saturating_add(self.leeway) {
            return Err(WimseError::LifetimeTooLong { exp, now, max_secs: self.max_lifetime });
        }
        if let Some(iat) = time_claim(&claims, kind, "iat")?
            && iat > now.saturating_add(self.leeway)
        {
            return Err(WimseError::InvalidClaim {
                kind,
                claim: "iat",
                reason: format!("{iat} is in the future (now {now})"),
            });
        }
        let auds: Vec<String> = match claims.get("aud") {
            None => return Err(WimseError::MissingClaim { kind, claim: "aud" }),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) if a.iter().all(Value::is_string) && !a.is_empty() => {
                a.iter().filter_map(Value::as_str).map(str::to_owned).collect()
            }
            Some(other) => {
                return Err(WimseError::InvalidClaim {
                    kind,
                    claim: "aud",
                    reason: format!("{other} is not a string or list of strings"),
                });
            }
        };
        let expected = without_query(ctx.audience);
        if expected.is_empty() || !auds.iter().any(|a| without_query(a) == expected) {
            return Err(WimseError::AudienceMismatch { expected: ctx.audience.into(), found: auds });
        }
        let jti =
            string_claim(&claims, kind, "jti")?.ok_or(WimseError::MissingClaim { kind, claim: "jti" })?;
        if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
            return Err(WimseError::InvalidClaim {
                kind,
                claim: "jti",
                reason: format!("must be 1 to {MAX_JTI_BYTES} bytes"),
            });
        }
        let wth =
            string_claim(&claims, kind, "wth")?.ok_or(WimseError::MissingClaim { kind, claim: "wth" })?;
        if wth != token_hash(&wit.token) {
            return Err(WimseError::WitHashMismatch);
        }
        check_binding(&claims, "ath", ctx.access_token)?;
        check_binding(&claims, "tth", ctx.txn_token)?;
        check_oth(&claims, &ctx.other_tokens)?;
        let jti = jti.to_owned();
        self.replay.lock().unwrap_or_else(std::sync::PoisonError::into_inner).check_and_insert(
            &wit.spiffe_id.to_string(),
            &jti,
            exp.saturating_add(self.leeway),
            now,
        )?;
        Ok(VerifiedWpt { jti, expires_at: exp, claims })
    }

    /// Authenticates a request: its WIT (the `Workload-Identity-Token` header) against
    /// the WIT bundle, then its WPT (the `Workload-Proof-Token` header) against that WIT.
    /// Both are required; pass `None` for a header the request lacks. The caller must
    /// refuse requests that repeat either header.
    #[allow(clippy::too_many_arguments)]
    pub fn verify_request(
        &self,
        wit: Option<&str>,
        wpt: Option<&str>,
        jwks_json: &str,
        trust_domain: &TrustDomain,
        ctx: &RequestContext<'_>,
        now: i64,
    ) -> Result<(VerifiedWit, VerifiedWpt), WimseError> {
        let wit = wit.filter(|w| !w.trim().is_empty()).ok_or(WimseError::MissingWit)?;
        let wpt = wpt.filter(|w| !w.trim().is_empty()).ok_or(WimseError::MissingProof)?;
        let wit = verify_wit(wit.trim(), jwks_json, trust_domain, now)?;
        let proof = self.verify_with(wpt.trim(), &wit, ctx, now)?;
        Ok((wit, proof))
    }
}
