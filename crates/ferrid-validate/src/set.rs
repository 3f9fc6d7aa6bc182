//! Security Event Tokens (RFC 8417) as Ferrid's revocation feed carries them
//! (docs/revocation.md): the event model, the claims builder the server signs, and the
//! verifier every receiver runs.
//!
//! A SET is a JWT with header `typ: secevent+jwt`, signed with the trust domain's JWT
//! key (the one in the JWT bundle), with `iss` the server's SPIFFE ID, `aud` the trust
//! domain's SPIFFE ID, `iat`, `jti`, `txn`, a top-level `sub_id` (RFC 9493 subject
//! identifier) and exactly one event in `events`:
//!
//! | revocation | event | `sub_id` |
//! |---|---|---|
//! | one X.509-SVID | [`CREDENTIAL_CHANGE`] (`credential_type: x509`, `change_type: revoke`, `x509_serial`, `x509_issuer`) | `uri` (the holder) or `opaque` (the serial) |
//! | one JWT | [`SESSION_REVOKED`] | `jwt_id` (`iss`, `jti`) |
//! | a whole SPIFFE ID | [`SESSION_REVOKED`], `event_timestamp` = the cut-off | `uri` |
//! | heartbeat | [`SSF_VERIFICATION`] (`state`) | `opaque`, `ferrid-feed` |
//!
//! [`verify_set`] refuses a JWT-SVID presented as a SET (wrong `typ`), `none` and HMAC,
//! unknown `kid`s, algorithm/key confusion, the wrong `iss` or `aud`, zero or several
//! events, unknown event types and malformed subjects, and anything over
//! [`MAX_SET_BYTES`].
pub use ferrid_revocation::Revocation;
use ferrid_types::{Serial, SpiffeId};
use serde_json::{Map, Value, json};

use crate::keys::{Algorithm, JwsError, JwtKeySet, SPIFFE_ALGORITHMS, verify_jws};

/// CAEP credential change: one X.509-SVID revoked.
pub const CREDENTIAL_CHANGE: &str = "https://schemas.openid.net/secevent/caep/event-type/credential-change";
/// CAEP session revoked: one JWT (`sub_id` format `jwt_id`) or a whole SPIFFE ID
/// (`sub_id` format `uri`).
pub const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// SSF verification: the feed's heartbeat; revokes nothing.
pub const SSF_VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
/// The JOSE header `typ` of every SET (RFC 8417 §2.3).
pub const SET_TYP: &str = "secevent+jwt";
/// The media type of a pushed SET (RFC 8935 §2).
pub const SET_CONTENT_TYPE: &str = "application/secevent+jwt";
/// The opaque subject of heartbeats.
pub const FEED_SUBJECT: &str = "ferrid-feed";
/// The largest SET accepted, in bytes (16 KiB); larger ones are refused unparsed.
pub const MAX_SET_BYTES: usize = 16 * 1024;
/// Seconds of clock skew tolerated on a SET's `iat`.
pub const IAT_LEEWAY: i64 = 60;
/// The longest string field accepted (IDs, issuers, states, reasons).
const MAX_FIELD: usize = 2048;

/// One event: a [`Revocation`] with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetEvent {
    /// What is revoked.
    pub revocation: Revocation,
    /// `reason_admin.en`, when a reason was given.
    pub reason: Option<String>,
    /// The `txn` claim: the ID of the `ferrid revoke` operation (shared by a cascade).
    pub txn: Option<String>,
    /// The event's `event_timestamp` (Unix seconds); for [`Revocation::SpiffeId`] it is
    /// the cut-off. Heartbeats have none.
    pub event_timestamp: Option<i64>,
}

impl SetEvent {
    /// An event without reason or `txn`. The `event_timestamp` of a SPIFFE-ID
    /// revocation is its cut-off.
    pub fn new(revocation: Revocation, event_timestamp: Option<i64>) -> Self {
        let event_timestamp = match &revocation {
            Revocation::SpiffeId { cutoff, .. } => Some(*cutoff),
            _ => event_timestamp,
        };
        Self { revocation, reason: None, txn: None, event_timestamp }
    }

    /// A heartbeat carrying the feed's sequence.
    pub fn heartbeat(state: impl Into<String>) -> Self {
        Self::new(Revocation::Heartbeat { state: state.into() }, None)
    }

    /// The JOSE header `typ` a SET must carry: `secevent+jwt`.
    pub fn header_typ() -> &'static str {
        SET_TYP
    }

    /// The JOSE header of a SET signed with `alg` under `kid`.
    pub fn header(alg: Algorithm, kid: &str) -> Value {
        json!({ "alg": alg, "kid": kid, "typ": SET_TYP })
    }

    /// The event type URI.
    pub fn event_type(&self) -> &'static str {
        match self.revocation {
            Revocation::X509 { .. } => CREDENTIAL_CHANGE,
            Revocation::Jwt { .. } | Revocation::SpiffeId { .. } => SESSION_REVOKED,
            Revocation::Heartbeat { .. } => SSF_VERIFICATION,
        }
    }

    /// The SET claims for this event: `iss` (the server's SPIFFE ID), `aud` (the trust
    /// domain's SPIFFE ID), `jti` (the SET's own ID), `iat` (Unix seconds), `txn`,
    /// `sub_id` and `events`, as docs/revocation.md lays them out.
    pub fn claims(&self, iss: &str, aud: &str, jti: &str, iat: i64) -> Value {
        let mut event = Map::new();
        let sub_id = match &self.revocation {
            Revocation::X509 { serial, issuer, spiffe_id } => {
                event.insert("credential_type".into(), "x509".into());
                event.insert("change_type".into(), "revoke".into());
                event.insert("x509_serial".into(), serial.as_str().into());
                if let Some(i) = issuer {
                    event.insert("x509_issuer".into(), i.clone().into());
                }
                match spiffe_id {
                    Some(id) => json!({ "format": "uri", "uri": id }),
                    None => json!({ "format": "opaque", "id": serial.as_str() }),
                }
            }
            Revocation::Jwt { jti, iss } => json!({ "format": "jwt_id", "iss": iss, "jti": jti }),
            Revocation::SpiffeId { id, .. } => json!({ "format": "uri", "uri": id }),
            Revocation::Heartbeat { state } => {
                event.insert("state".into(), state.clone().into());
                json!({ "format": "opaque", "id": FEED_SUBJECT })
            }
        };
        let timestamp = match &self.revocation {
            Revocation::SpiffeId { cutoff, .. } => Some(*cutoff),
            _ => self.event_timestamp,
        };
        if let Some(t) = timestamp {
            event.insert("event_timestamp".into(), t.into());
        }
        if let Some(r) = &self.reason {
            event.insert("reason_admin".into(), json!({ "en": r }));
        }
        let mut claims = json!({
            "iss": iss,
            "aud": aud,
            "iat": iat,
            "jti": jti,
            "sub_id": sub_id,
            "events": { self.event_type(): Value::Object(event) },
        });
        if let Some(t) = &self.txn {
            claims["txn"] = t.clone().into();
        }
        claims
    }

    /// Reads the event of a SET's claims (already authenticated by the caller: the
    /// trusted-channel case). Checks `events` has exactly one known event and that the
    /// subject is well formed; does not check `iss`, `aud`, `iat` or `jti`.
    pub fn from_claims(claims: &Value) -> Result<Self, SetError> {
        let events =
            claims.get("events").and_then(Value::as_object).ok_or(SetError::MissingClaim("events"))?;
        if events.len() != 1 {
            return Err(SetError::EventCount(events.len()));
        }
        let (kind, body) = events.iter().next().ok_or(SetError::EventCount(0))?;
        let body = body.as_object().ok_or_else(|| SetError::BadEvent("the event is not an object".into()))?;
        let sub = claims.get("sub_id").and_then(Value::as_object).ok_or(SetError::MissingClaim("sub_id"))?;
        let format = field(sub, "format").ok_or_else(|| SetError::BadSubject("no format".into()))?;
        let event_timestamp = match body.get("event_timestamp") {
            None => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| SetError::BadEvent("event_timestamp".into()))?),
        };
        let reason = match body.get("reason_admin") {
            None => None,
            Some(r) => Some(
                r.get("en")
                    .and_then(Value::as_str)
                    .filter(|s| s.len() <= MAX_FIELD)
                    .ok_or_else(|| SetError::BadEvent("reason_admin".into()))?
                    .to_owned(),
            ),
        };
        let txn = match claims.get("txn") {
            None => None,
            Some(Value::String(t)) if t.len() <= MAX_FIELD => Some(t.clone()),
            Some(_) => return Err(SetError::MissingClaim("txn")),
        };
        let revocation = match kind.as_str() {
            CREDENTIAL_CHANGE => {
                if field(body, "credential_type") != Some("x509") {
                    return Err(SetError::BadEvent("credential_type must be x509".into()));
                }
                if field(body, "change_type") != Some("revoke") {
                    return Err(SetError::BadEvent("change_type must be revoke".into()));
                }
                let serial = field(body, "x509_serial")
                    .ok_or_else(|| SetError::BadEvent("x509_serial is missing".into()))
                    .and_then(|s| {
                        Serial::parse(s).map_err(|e| SetError::BadEvent(format!("x509_serial: {e}")))
                    })?;
                let issuer = match body.get("x509_issuer") {
                    None => None,
                    Some(Value::String(i)) if i.len() <= MAX_FIELD => Some(i.clone()),
                    Some(_) => return Err(SetError::BadEvent("x509_issuer".into())),
                };
                let spiffe_id = match format {
                    "uri" => Some(spiffe_uri(sub)?),
                    "opaque" => {
                        field(sub, "id").ok_or_else(|| SetError::BadSubject("opaque without id".into()))?;
                        None
                    }
                    other => {
                        return Err(SetError::BadSubject(format!("format {other} for a credential change")));
                    }
                };
                Revocation::X509 { serial, issuer, spiffe_id }
            }
            SESSION_REVOKED => match format {
                "jwt_id" => {
                    let jti =
                        field(sub, "jti").ok_or_else(|| SetError::BadSubject("jwt_id without jti".into()))?;
                    let iss =
                        field(sub, "iss").ok_or_else(|| SetError::BadSubject("jwt_id without iss".into()))?;
                    Revocation::Jwt { jti: jti.to_owned(), iss: iss.to_owned() }
                }
                "uri" => {
                    let id = spiffe_uri(sub)?;
                    let cutoff = event_timestamp.ok_or(SetError::MissingClaim("event_timestamp"))?;
                    Revocation::SpiffeId { id, cutoff }
                }
                other => {
                    return Err(SetError::BadSubject(format!("format {other} for a session revocation")));
                }
            },
            SSF_VERIFICATION => {
                let state = match body.get("state") {
                    Some(Value::String(s)) if s.len() <= MAX_FIELD => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => return Err(SetError::BadEvent("verification without state".into())),
                };
                if format != "opaque" || field(sub, "id").is_none() {
                    return Err(SetError::BadSubject("a heartbeat's subject is opaque".into()));
                }
                Revocation::Heartbeat { state }
            }
            other => return Err(SetError::UnknownEvent(other.chars().take(200).collect())),
        };
        Ok(Self { revocation, reason, txn, event_timestamp })
    }
}

fn field<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    m.get(name).and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= MAX_FIELD)
}

fn spiffe_uri(sub: &Map<String, Value>) -> Result<String, SetError> {
    let uri = field(sub, "uri").ok_or_else(|| SetError::BadSubject("uri without uri".into()))?;
    SpiffeId::new(uri).map_err(|e| SetError::BadSubject(format!("uri is not a SPIFFE ID: {e}")))?;
    Ok(uri.to_owned())
}

/// A SET that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSet {
    /// The SET's own `jti` (what a poll receiver acknowledges).
    pub jti: String,
    /// The SET's `iss`.
    pub iss: String,
    /// The SET's `iat` (Unix seconds).
    pub iat: i64,
    /// The `kid` it was signed under.
    pub kid: String,
    /// The algorithm it was signed with.
    pub alg: Algorithm,
    /// The event.
    pub event: SetEvent,
}

/// Why a SET was refused: one variant per rule. Messages never include the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetError {
    /// Over [`MAX_SET_BYTES`].
    #[error("SET too large: {0} bytes, the limit is {MAX_SET_BYTES}")]
    TooLarge(usize),
    /// Not a compact JWS, or header or claims do not parse.
    #[error("malformed SET: {0}")]
    Malformed(String),
    /// The header `typ` is not `secevent+jwt` (e.g. a JWT-SVID presented as a SET).
    #[error("header typ {0:?} is not secevent+jwt")]
    WrongType(Option<String>),
    /// `none`, HMAC, or an algorithm not on the allow list.
    #[error("algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    /// A `crit` header parameter.
    #[error("critical header parameters are not supported")]
    CriticalHeader,
    /// The header has no `kid`.
    #[error("header has no kid")]
    MissingKid,
    /// No key of the JWT bundle has this `kid`.
    #[error("no JWT bundle key has kid {0:?}")]
    UnknownKey(String),
    /// The algorithm does not fit the key's type.
    #[error("algorithm {alg} does not fit key {kid:?}")]
    AlgorithmKeyMismatch {
        /// The header's algorithm.
        alg: String,
        /// The key.
        kid: String,
    },
    /// The signature does not verify.
    #[error("SET signature does not verify")]
    BadSignature,
    /// A required claim (`iss`, `aud`, `iat`, `jti`, `events`, `sub_id`, …) is missing or
    /// has the wrong type.
    #[error("claim {0} is missing or malformed")]
    MissingClaim(&'static str),
    /// `iss` is not the expected issuer.
    #[error("issuer {got:?} is not {want:?}")]
    WrongIssuer {
        /// The SET's issuer.
        got: String,
        /// The expected one.
        want: String,
    },
    /// `aud` does not contain the expected audience.
    #[error("audience {got:?} does not include {want:?}")]
    WrongAudience {
        /// The SET's audiences.
        got: Vec<String>,
        /// The expected one.
        want: String,
    },
    /// `iat` is in the future beyond [`IAT_LEEWAY`].
    #[error("issued in the future: iat {iat}, now {now}")]
    IssuedInFuture {
        /// The SET's `iat`.
        iat: i64,
        /// The receiver's time.
        now: i64,
    },
    /// `events` does not hold exactly one event.
    #[error("a SET carries exactly one event, this one {0}")]
    EventCount(usize),
    /// The event type is not one Ferrid's feed sends.
    #[error("unknown event type {0}")]
    UnknownEvent(String),
    /// The event's fields are malformed.
    #[error("malformed event: {0}")]
    BadEvent(String),
    /// `sub_id` is malformed or the wrong format for the event.
    #[error("malformed subject: {0}")]
    BadSubject(String),
}

impl From<JwsError> for SetError {
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

/// Verifies a SET: size, `typ` = `secevent+jwt`, algorithm (SPIFFE list: RS/PS 256–512,
/// ES256/384 and fitting the key), `kid` in `jwt_keys` (the trust domain's JWT bundle),
/// signature, `iss` = `expected_iss`, `aud` contains `expected_aud`, `iat` present and
/// not in the future (beyond [`IAT_LEEWAY`]), `jti` present, then the event
/// ([`SetEvent::from_claims`]). SETs have no `exp`: an old SET is still a valid
/// statement that something was revoked.
pub fn verify_set(
    token: &str,
    jwt_keys: &JwtKeySet,
    expected_iss: &str,
    expected_aud: &str,
    now: i64,
) -> Result<VerifiedSet, SetError> {
    let token = token.trim();
    let header = crate::keys::raw_header(token, MAX_SET_BYTES)?;
    match header.get("typ").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case(SET_TYP) || t.eq_ignore_ascii_case("application/secevent+jwt") => {}
        other => return Err(SetError::WrongType(other.map(str::to_owned))),
    }
    let jws = verify_jws(token, jwt_keys, SPIFFE_ALGORITHMS, MAX_SET_BYTES)?;
    let c = &jws.claims;
    let iss = c.get("iss").and_then(Value::as_str).ok_or(SetError::MissingClaim("iss"))?;
    if iss != expected_iss {
        return Err(SetError::WrongIssuer { got: iss.to_owned(), want: expected_iss.to_owned() });
    }
    let aud: Vec<String> = match c.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => return Err(SetError::MissingClaim("aud")),
    };
    if !aud.iter().any(|a| a == expected_aud) {
        return Err(SetError::WrongAudience { got: aud, want: expected_aud.to_owned() });
    }
    let iat = c.get("iat").and_then(Value::as_i64).ok_or(SetError::MissingClaim("iat"))?;
    if iat > now.saturating_add(IAT_LEEWAY) {
        return Err(SetError::IssuedInFuture { iat, now });
    }
    let jti = c
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= MAX_FIELD)
        .ok_or(SetError::MissingClaim("jti"))?;
    let event = SetEvent::from_claims(c)?;
    Ok(VerifiedSet { jti: jti.to_owned(), iss: iss.to_owned(), iat, kid: jws.kid, alg: jws.alg, event })
}

/// The `jti` of a SET, read **without verifying anything** (for a poll receiver that
/// must report a SET it could not verify in `setErrs`).
pub fn unverified_jti(token: &str) -> Option<String> {
    if token.len() > MAX_SET_BYTES {
        return None;
    }
    let body = token.split('.').nth(1)?;
    let claims = crate::keys::b64_json(body).ok()?;
    claims.get("jti").and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::test_keys::*;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};

    const ISS: &str = "spiffe://example.org/ferrid/server";
    const AUD: &str = "spiffe://example.org";
    const NOW: i64 = 1_760_000_000;

    fn x509() -> SetEvent {
        let mut e = SetEvent::new(
            Revocation::X509 {
                serial: Serial::parse("5AB").unwrap(),
                issuer: Some("O=Ferrid,CN=Ferrid CA".into()),
                spiffe_id: Some("spiffe://example.org/web".into()),
            },
            Some(NOW - 5),
        );
        e.reason = Some("key leaked".into());
        e.txn = Some("op-1".into());
        e
    }

    fn events() -> Vec<SetEvent> {
        vec![
            x509(),
            SetEvent::new(
                Revocation::X509 { serial: Serial::parse("7f01").unwrap(), issuer: None, spiffe_id: None },
                Some(NOW),
            ),
            SetEvent::new(Revocation::Jwt { jti: "j-1".into(), iss: ISS.into() }, Some(NOW)),
            SetEvent::new(
                Revocation::SpiffeId { id: "spiffe://example.org/web".into(), cutoff: NOW - 1 },
                None,
            ),
            SetEvent::heartbeat("42"),
        ]
    }

    fn sign_set(k: &TestKey, claims: &Value) -> String {
        k.sign(Some(SET_TYP), claims)
    }

    #[test]
    fn every_event_round_trips_through_claims_sign_and_verify() {
        let k = TestKey::es256("k1");
        let keys = set_of(&[&k]);
        for (i, e) in events().into_iter().enumerate() {
            let jti = format!("set-{i}");
            let claims = e.claims(ISS, AUD, &jti, NOW);
            let v = verify_set(&sign_set(&k, &claims), &keys, ISS, AUD, NOW).unwrap();
            assert_eq!(v.jti, jti);
            assert_eq!(v.iat, NOW);
            assert_eq!(v.kid, "k1");
            assert_eq!(v.event, e, "event {i}");
        }
        assert_eq!(SetEvent::header_typ(), "secevent+jwt");
        assert_eq!(SetEvent::header(Algorithm::ES256, "k1")["typ"], "secevent+jwt");
    }

    #[test]
    fn claims_follow_the_documented_layout() {
        let c = x509().claims(ISS, AUD, "s1", NOW);
        let ev = &c["events"][CREDENTIAL_CHANGE];
        assert_eq!(ev["credential_type"], "x509");
        assert_eq!(ev["change_type"], "revoke");
        assert_eq!(ev["x509_serial"], "05ab", "even-length lowercase hex, as openssl prints it");
        assert_eq!(ev["reason_admin"]["en"], "key leaked");
        assert_eq!(ev["event_timestamp"], NOW - 5);
        assert_eq!(c["sub_id"], json!({"format": "uri", "uri": "spiffe://example.org/web"}));
        assert_eq!(c["txn"], "op-1");
        let c = SetEvent::new(Revocation::Jwt { jti: "j".into(), iss: ISS.into() }, Some(NOW))
            .claims(ISS, AUD, "s", NOW);
        assert_eq!(c["sub_id"], json!({"format": "jwt_id", "iss": ISS, "jti": "j"}));
        assert!(c["events"][SESSION_REVOKED].is_object());
        let c = SetEvent::heartbeat("7").claims(ISS, AUD, "s", NOW);
        assert_eq!(c["events"][SSF_VERIFICATION], json!({"state": "7"}));
        assert_eq!(c["sub_id"], json!({"format": "opaque", "id": "ferrid-feed"}));
    }

    fn good_claims() -> Value {
        x509().claims(ISS, AUD, "s1", NOW)
    }

    #[test]
    fn negative_matrix() {
        let k = TestKey::es256("k1");
        let keys = set_of(&[&k]);
        let check = |t: &str| verify_set(t, &keys, ISS, AUD, NOW);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let good = sign_set(&k, &good_claims());
        assert!(check(&good).is_ok());
        let parts: Vec<&str> = good.split('.').collect();

        // alg none.
        let none =
            format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"secevent+jwt","kid":"k1"}"#), parts[1]);
        assert_eq!(check(&none).unwrap_err(), SetError::AlgorithmNotAllowed("none".into()));
        // HS256 keyed with the public key (algorithm confusion).
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some(SET_TYP.into());
        h.kid = Some("k1".into());
        let hs = jsonwebtoken::encode(&h, &good_claims(), &EncodingKey::from_secret(k.public_pem.as_bytes()))
            .unwrap();
        assert_eq!(check(&hs).unwrap_err(), SetError::AlgorithmNotAllowed("HS256".into()));
        // A JWT-SVID (typ JWT, or none) is not a SET.
        assert_eq!(
            check(&k.sign(Some("JWT"), &good_claims())).unwrap_err(),
            SetError::WrongType(Some("JWT".into()))
        );
        assert_eq!(check(&k.sign(None, &good_claims())).unwrap_err(), SetError::WrongType(None));
        // Wrong iss / aud.
        assert!(matches!(
            verify_set(&good, &keys, "spiffe://example.org/other", AUD, NOW),
            Err(SetError::WrongIssuer { .. })
        ));
        assert!(matches!(
            verify_set(&good, &keys, ISS, "spiffe://other.org", NOW),
            Err(SetError::WrongAudience { .. })
        ));
        // Two events, none, unknown event.
        let mut c = good_claims();
        c["events"][SESSION_REVOKED] = json!({"event_timestamp": NOW});
        assert_eq!(check(&sign_set(&k, &c)).unwrap_err(), SetError::EventCount(2));
        let mut c = good_claims();
        c["events"] = json!({});
        assert_eq!(check(&sign_set(&k, &c)).unwrap_err(), SetError::EventCount(0));
        let mut c = good_claims();
        c["events"] = json!({"https://example.com/evil": {}});
        assert!(matches!(check(&sign_set(&k, &c)), Err(SetError::UnknownEvent(_))));
        // Missing or malformed sub_id.
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove("sub_id");
        assert_eq!(check(&sign_set(&k, &c)).unwrap_err(), SetError::MissingClaim("sub_id"));
        let mut c = good_claims();
        c["sub_id"] = json!({"format": "uri", "uri": "https://not-spiffe"});
        assert!(matches!(check(&sign_set(&k, &c)), Err(SetError::BadSubject(_))));
        let mut c = SetEvent::new(Revocation::Jwt { jti: "j".into(), iss: ISS.into() }, None)
            .claims(ISS, AUD, "s", NOW);
        c["sub_id"] = json!({"format": "jwt_id", "iss": ISS});
        assert!(matches!(check(&sign_set(&k, &c)), Err(SetError::BadSubject(_))));
        // A SPIFFE-ID revocation needs its cut-off.
        let mut c =
            SetEvent::new(Revocation::SpiffeId { id: "spiffe://example.org/a".into(), cutoff: 1 }, None)
                .claims(ISS, AUD, "s", NOW);
        c["events"][SESSION_REVOKED].as_object_mut().unwrap().remove("event_timestamp");
        assert_eq!(check(&sign_set(&k, &c)).unwrap_err(), SetError::MissingClaim("event_timestamp"));
        // Bad serial, wrong change type.
        let mut c = good_claims();
        c["events"][CREDENTIAL_CHANGE]["x509_serial"] = json!("xyz");
        assert!(matches!(check(&sign_set(&k, &c)), Err(SetError::BadEvent(_))));
        let mut c = good_claims();
        c["events"][CREDENTIAL_CHANGE]["x509_serial"] = json!("ab".repeat(21));
        assert!(
            matches!(check(&sign_set(&k, &c)), Err(SetError::BadEvent(m)) if m.contains("at most 20 octets"))
        );
        // A receiver reads any spelling of a serial as the one serial.
        let mut c = good_claims();
        c["events"][CREDENTIAL_CHANGE]["x509_serial"] = json!("00:05:AB");
        let v = check(&sign_set(&k, &c)).unwrap();
        assert_eq!(v.event.revocation, x509().revocation);
        let mut c = good_claims();
        c["events"][CREDENTIAL_CHANGE]["change_type"] = json!("create");
        assert!(matches!(check(&sign_set(&k, &c)), Err(SetError::BadEvent(_))));
        // Missing jti / iat, iat in the future.
        for claim in ["jti", "iat", "iss", "aud"] {
            let mut c = good_claims();
            c.as_object_mut().unwrap().remove(claim);
            assert!(matches!(check(&sign_set(&k, &c)), Err(SetError::MissingClaim(_))), "{claim}");
        }
        let mut c = good_claims();
        c["iat"] = json!(NOW + 3600);
        assert!(matches!(check(&sign_set(&k, &c)), Err(SetError::IssuedInFuture { .. })));
        // Tampered payload.
        let mut c = good_claims();
        c["events"][CREDENTIAL_CHANGE]["x509_serial"] = json!("1234");
        let tampered = format!("{}.{}.{}", parts[0], b64.encode(c.to_string()), parts[2]);
        assert_eq!(check(&tampered).unwrap_err(), SetError::BadSignature);
        // Signed by a stranger under a known kid; unknown kid; no kid.
        let stranger = TestKey::es256("k1");
        assert_eq!(check(&sign_set(&stranger, &good_claims())).unwrap_err(), SetError::BadSignature);
        let other = TestKey::es256("k2");
        assert_eq!(check(&sign_set(&other, &good_claims())).unwrap_err(), SetError::UnknownKey("k2".into()));
        let mut h = Header::new(Algorithm::ES256);
        h.typ = Some(SET_TYP.into());
        let nokid = jsonwebtoken::encode(&h, &good_claims(), &k.enc).unwrap();
        assert_eq!(check(&nokid).unwrap_err(), SetError::MissingKid);
        // RS256 under an EC kid.
        let rsa = TestKey { kid: "k1".into(), ..TestKey::rsa("x") };
        assert!(matches!(check(&sign_set(&rsa, &good_claims())), Err(SetError::AlgorithmKeyMismatch { .. })));
        // crit.
        let crit = format!(
            "{}.{}.{}",
            b64.encode(r#"{"alg":"ES256","typ":"secevent+jwt","kid":"k1","crit":["x"]}"#),
            parts[1],
            parts[2]
        );
        assert_eq!(check(&crit).unwrap_err(), SetError::CriticalHeader);
        // Oversized and garbage.
        let mut c = good_claims();
        c["pad"] = json!("x".repeat(MAX_SET_BYTES));
        assert!(matches!(check(&sign_set(&k, &c)), Err(SetError::TooLarge(_))));
        assert!(matches!(check("a.b"), Err(SetError::Malformed(_))));
        assert!(matches!(check("!!.??.##"), Err(SetError::Malformed(_))));
        assert_eq!(unverified_jti(&good).as_deref(), Some("s1"));
    }
}
