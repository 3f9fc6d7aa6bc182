//! Throwaway signing keys for JWT tests: tokens signed here stand in for an issuer's
//! (GitHub's, GitLab's, Google's) in negative and end-to-end tests.
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A signing key with its `kid`, its public JWK and its public key PEM.
pub struct Signer {
    /// The `kid` put in headers and in the JWK.
    pub kid: String,
    /// The signing algorithm.
    pub alg: Algorithm,
    /// The private key.
    pub enc: EncodingKey,
    /// The public key, PEM (SPKI).
    pub public_pem: String,
    /// The public JWK (with `kid`, `alg` and `use`).
    pub jwk: Value,
}

impl Signer {
    /// A fresh RSA-2048 key for RS256.
    pub fn rs256(kid: &str) -> Self {
        Self::generate(kid, &rcgen::PKCS_RSA_SHA256, Algorithm::RS256)
    }

    /// A fresh P-256 key for ES256.
    pub fn es256(kid: &str) -> Self {
        Self::generate(kid, &rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256)
    }

    fn generate(kid: &str, rc: &'static rcgen::SignatureAlgorithm, alg: Algorithm) -> Self {
        let kp = rcgen::KeyPair::generate_for(rc).expect("key generation");
        let pem = kp.serialize_pem();
        let enc = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
        }
        .expect("own key parses");
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&enc, alg).expect("JWK")).expect("JSON");
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        Self { kid: kid.into(), alg, enc, public_pem: kp.public_key_pem(), jwk }
    }

    /// A JWKS document holding this key only.
    pub fn jwks(&self) -> Vec<u8> {
        json!({ "keys": [self.jwk] }).to_string().into_bytes()
    }

    /// Signs `claims` with this key, `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.enc).expect("signing")
    }

    /// A compact token with `header` and `claims` as given and `signature` (base64url)
    /// appended unchanged: for `alg: none` and other hand-made forgeries.
    pub fn forge(header: &Value, claims: &Value, signature: &str) -> String {
        let b64 = |v: &Value| b64url(v.to_string().as_bytes());
        format!("{}.{}.{signature}", b64(header), b64(claims))
    }
}

/// Unpadded base64url.
pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
