//! JWT verification keys: the JWT half of a SPIFFE trust bundle, and the JWS signature
//! check shared by JWT-SVIDs and Security Event Tokens.
//!
//! Rules (SPIFFE JWT-SVID §3 and trust bundle §4.2.2; RFC 8725 §3.1–3.2):
//! - every key has a `kid`, and a token names the key it was signed with in its `kid`
//!   header: there is no "try every key";
//! - only asymmetric algorithms (never `none`, never HMAC), from the caller's allow list;
//! - the algorithm must fit the key's type and curve (an ES256 token is never checked
//!   against an RSA key, nor an RS256 token against an EC key), and the JWK's own
//!   `alg` when it pins one;
//! - a `crit` header is refused (nothing here understands extensions);
//! - tokens are size-bounded before anything is decoded.
use std::collections::BTreeMap;

use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;

pub use jsonwebtoken::Algorithm;

/// The largest JWKS document accepted (1 MiB).
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// The asymmetric algorithms the SPIFFE JWT-SVID specification allows (§3): RS256–512,
/// PS256–512, ES256, ES384 (EdDSA is not in the SPIFFE list).
pub const SPIFFE_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// The type of a verification key, which decides the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyKind {
    /// EC P-256: ES256 only.
    EcP256,
    /// EC P-384: ES384 only.
    EcP384,
    /// RSA: RS256–512 and PS256–512.
    Rsa,
    /// Ed25519: EdDSA only.
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind may verify a signature made with `alg`.
    pub fn allows(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Self::EcP256 => alg == ES256,
            Self::EcP384 => alg == ES384,
            Self::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::Ed25519 => alg == EdDSA,
        }
    }
}

/// Why a key set could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The document is larger than [`MAX_JWKS_BYTES`].
    #[error("JWKS document too large: {0} bytes")]
    TooLarge(usize),
    /// Not JSON, or no `keys` array.
    #[error("malformed JWKS document: {0}")]
    Malformed(String),
    /// A JWT key without `kid` (SPIFFE trust bundle §4.2.2 requires one).
    #[error("a JWT key has no kid")]
    MissingKid,
    /// Two keys share a `kid`.
    #[error("duplicate kid {0:?}")]
    DuplicateKid(String),
    /// A symmetric (`oct`) key: a verifier of tokens has no business holding secrets.
    #[error("symmetric (oct) key {0:?} refused")]
    Symmetric(String),
    /// The key does not parse.
    #[error("key {kid:?} is invalid: {reason}")]
    Invalid {
        /// The key's ID.
        kid: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Clone)]
struct JwtKey {
    kind: KeyKind,
    /// The JWK's own `alg`, when it pins one.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// The JWT authorities of one trust domain, by `kid`.
#[derive(Clone, Default)]
pub struct JwtKeySet {
    keys: BTreeMap<String, JwtKey>,
}

impl std::fmt::Debug for JwtKeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|(kid, k)| (kid, k.kind))).finish()
    }
}

impl JwtKeySet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The JWT keys of a JWKS or SPIFFE bundle document (`{"keys": [...]}`): keys with
    /// `use: "jwt-svid"` or without `use`. Keys with another `use` (`x509-svid`,
    /// `wit-svid`) are skipped, as are key types this verifier cannot use (P-521,
    /// X25519); a symmetric key, a JWT key without `kid` or a duplicate `kid` fails the
    /// whole document.
    pub fn from_jwks(json: &[u8]) -> Result<Self, KeyError> {
        if json.len() > MAX_JWKS_BYTES {
            return Err(KeyError::TooLarge(json.len()));
        }
        let doc: Value = serde_json::from_slice(json).map_err(|e| KeyError::Malformed(e.to_string()))?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| KeyError::Malformed("no \"keys\" array".into()))?;
        let mut set = Self::new();
        for raw in list {
            match raw.get("use") {
                None => {}
                Some(Value::String(u)) if u == "jwt-svid" => {}
                Some(_) => continue,
            }
            set.insert_jwk(raw)?;
        }
        Ok(set)
    }

    /// Adds one JWK (a JSON object). Unusable key types are skipped (`Ok(false)`).
    pub fn insert_jwk(&mut self, raw: &Value) -> Result<bool, KeyError> {
        let kid =
            raw.get("kid").and_then(Value::as_str).filter(|k| !k.is_empty()).ok_or(KeyError::MissingKid)?;
        if raw.get("kty").and_then(Value::as_str) == Some("oct") {
            return Err(KeyError::Symmetric(kid.to_owned()));
        }
        if self.keys.contains_key(kid) {
            return Err(KeyError::DuplicateKid(kid.to_owned()));
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            return Ok(false);
        };
        let kind = match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => KeyKind::EcP256,
                EllipticCurve::P384 => KeyKind::EcP384,
                _ => return Ok(false),
            },
            AlgorithmParameters::RSA(_) => KeyKind::Rsa,
            AlgorithmParameters::OctetKeyPair(p) => match p.curve {
                EllipticCurve::Ed25519 => KeyKind::Ed25519,
                _ => return Ok(false),
            },
            AlgorithmParameters::OctetKey(_) => return Err(KeyError::Symmetric(kid.to_owned())),
        };
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| KeyError::Invalid { kid: kid.to_owned(), reason: e.to_string() })?;
        let alg = match raw.get("alg").and_then(Value::as_str) {
            None => None,
            Some(a) => Some(a.parse::<Algorithm>().ok().filter(|a| kind.allows(*a)).ok_or_else(|| {
                KeyError::Invalid { kid: kid.to_owned(), reason: format!("alg {a} does not fit the key") }
            })?),
        };
        self.keys.insert(kid.to_owned(), JwtKey { kind, alg, key });
        Ok(true)
    }

    /// Adds a public key in SubjectPublicKeyInfo DER form under `kid` (EC P-256/P-384,
    /// RSA or Ed25519).
    pub fn insert_spki_der(&mut self, kid: &str, spki_der: &[u8]) -> Result<(), KeyError> {
        if kid.is_empty() {
            return Err(KeyError::MissingKid);
        }
        if self.keys.contains_key(kid) {
            return Err(KeyError::DuplicateKid(kid.to_owned()));
        }
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(spki_der)
        );
        let invalid = |reason: String| KeyError::Invalid { kid: kid.to_owned(), reason };
        let (kind, key) = if let Ok(k) = DecodingKey::from_ec_pem(pem.as_bytes()) {
            // P-256 SPKI is 91 bytes, P-384 120.
            let kind = if spki_der.len() > 100 { KeyKind::EcP384 } else { KeyKind::EcP256 };
            (kind, k)
        } else if let Ok(k) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
            (KeyKind::Rsa, k)
        } else if let Ok(k) = DecodingKey::from_ed_pem(pem.as_bytes()) {
            (KeyKind::Ed25519, k)
        } else {
            return Err(invalid("not an EC, RSA or Ed25519 public key".into()));
        };
        self.keys.insert(kid.to_owned(), JwtKey { kind, alg: None, key });
        Ok(())
    }

    /// Adds every key of `other` whose `kid` is not already here.
    pub fn extend(&mut self, other: &JwtKeySet) {
        for (kid, k) in &other.keys {
            self.keys.entry(kid.clone()).or_insert_with(|| k.clone());
        }
    }

    /// The key IDs, sorted.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Whether a key has this `kid`.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// The kind of the key with this `kid`.
    pub fn kind(&self, kid: &str) -> Option<KeyKind> {
        self.keys.get(kid).map(|k| k.kind)
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

/// Why a JWS failed the checks common to every token kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JwsError {
    TooLarge(usize),
    Malformed(String),
    AlgorithmNotAllowed(String),
    Critical,
    MissingKid,
    UnknownKey(String),
    AlgorithmKeyMismatch { alg: String, kid: String },
    BadSignature,
}

/// A token whose signature verified.
#[derive(Debug, Clone)]
pub(crate) struct Jws {
    pub(crate) alg: Algorithm,
    pub(crate) kid: String,
    /// The claims (a JSON object).
    pub(crate) claims: Value,
}

pub(crate) fn b64_json(part: &str) -> Result<Value, JwsError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwsError::Malformed("not base64url".into()))?;
    serde_json::from_slice(&bytes).map_err(|_| JwsError::Malformed("not JSON".into()))
}

/// The header of a compact JWS, read without trusting anything.
pub(crate) fn raw_header(token: &str, max_len: usize) -> Result<Value, JwsError> {
    if token.len() > max_len {
        return Err(JwsError::TooLarge(token.len()));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwsError::Malformed("a compact JWS has three parts".into()));
    };
    let header = b64_json(h)?;
    if !header.is_object() {
        return Err(JwsError::Malformed("header is not a JSON object".into()));
    }
    Ok(header)
}

/// Checks a compact JWS: size, algorithm (allow list, asymmetric, fits the key), `kid`,
/// no `crit`, signature. Claims are returned unchecked.
pub(crate) fn verify_jws(
    token: &str,
    keys: &JwtKeySet,
    allowed: &[Algorithm],
    max_len: usize,
) -> Result<Jws, JwsError> {
    let header = raw_header(token, max_len)?;
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| JwsError::Malformed("header has no alg".into()))?;
    let alg: Algorithm = alg_name.parse().map_err(|_| JwsError::AlgorithmNotAllowed(alg_name.to_owned()))?;
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) || !allowed.contains(&alg) {
        return Err(JwsError::AlgorithmNotAllowed(alg_name.to_owned()));
    }
    if header.get("crit").is_some() {
        return Err(JwsError::Critical);
    }
    let kid = match header.get("kid") {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        _ => return Err(JwsError::MissingKid),
    };
    let key = keys.keys.get(&kid).ok_or_else(|| JwsError::UnknownKey(kid.clone()))?;
    if !key.kind.allows(alg) || key.alg.is_some_and(|a| a != alg) {
        return Err(JwsError::AlgorithmKeyMismatch { alg: alg_name.to_owned(), kid });
    }
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
        Ok(data) => data.claims,
        Err(e) => {
            return Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => JwsError::BadSignature,
                jsonwebtoken::errors::ErrorKind::Json(_) | jsonwebtoken::errors::ErrorKind::Base64(_) => {
                    JwsError::Malformed(e.to_string())
                }
                _ => JwsError::BadSignature,
            });
        }
    };
    if !claims.is_object() {
        return Err(JwsError::Malformed("claims are not a JSON object".into()));
    }
    Ok(Jws { alg, kid, claims })
}

#[cfg(test)]
pub(crate) mod test_keys {
    //! Signing keys for tests.
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    /// A P-256 key with its `kid`.
    pub(crate) struct TestKey {
        pub(crate) kid: String,
        pub(crate) enc: EncodingKey,
        pub(crate) public_pem: String,
        pub(crate) spki: Vec<u8>,
        pub(crate) alg: Algorithm,
    }

    impl TestKey {
        pub(crate) fn es256(kid: &str) -> Self {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            Self {
                kid: kid.into(),
                enc: EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
                public_pem: kp.public_key_pem(),
                spki: rcgen::PublicKeyData::subject_public_key_info(&kp),
                alg: Algorithm::ES256,
            }
        }

        pub(crate) fn rsa(kid: &str) -> Self {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
            Self {
                kid: kid.into(),
                enc: EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap(),
                public_pem: kp.public_key_pem(),
                spki: rcgen::PublicKeyData::subject_public_key_info(&kp),
                alg: Algorithm::RS256,
            }
        }

        pub(crate) fn sign(&self, typ: Option<&str>, claims: &Value) -> String {
            let mut h = Header::new(self.alg);
            h.kid = Some(self.kid.clone());
            h.typ = typ.map(str::to_owned);
            jsonwebtoken::encode(&h, claims, &self.enc).unwrap()
        }
    }

    pub(crate) fn set_of(keys: &[&TestKey]) -> JwtKeySet {
        let mut s = JwtKeySet::new();
        for k in keys {
            s.insert_spki_der(&k.kid, &k.spki).unwrap();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::test_keys::*;
    use super::*;

    #[test]
    fn jwks_keeps_jwt_keys_only_and_refuses_secrets() {
        let doc = br#"{"keys":[
            {"kty":"EC","crv":"P-256","kid":"k1","use":"jwt-svid","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"},
            {"kty":"EC","crv":"P-256","use":"x509-svid","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"},
            {"kty":"EC","crv":"P-256","kid":"w1","use":"wit-svid","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}
        ]}"#;
        let s = JwtKeySet::from_jwks(doc).unwrap();
        assert_eq!(s.kids().collect::<Vec<_>>(), vec!["k1"]);
        assert_eq!(s.kind("k1"), Some(KeyKind::EcP256));
        assert_eq!(
            JwtKeySet::from_jwks(br#"{"keys":[{"kty":"oct","kid":"s","k":"c2VjcmV0"}]}"#).unwrap_err(),
            KeyError::Symmetric("s".into())
        );
        assert_eq!(
            JwtKeySet::from_jwks(br#"{"keys":[{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#).unwrap_err(),
            KeyError::MissingKid
        );
        assert!(matches!(JwtKeySet::from_jwks(b"[]"), Err(KeyError::Malformed(_))));
        let rsa = TestKey::rsa("r");
        let s = set_of(&[&rsa, &TestKey::es256("e")]);
        assert_eq!(s.kind("r"), Some(KeyKind::Rsa));
        assert_eq!(s.kind("e"), Some(KeyKind::EcP256));
    }
}
