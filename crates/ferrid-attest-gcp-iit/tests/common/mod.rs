//! Tokens signed here with throwaway RSA keys, shaped like Compute Engine's
//! `format=full` instance identity tokens.
#![allow(dead_code, unreachable_pub)]

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const NOW: i64 = 1_800_000_000;
pub const AUD: &str = "https://ferrid.example/gcp";

pub struct Signer {
    pub kid: String,
    pub enc: EncodingKey,
    pub public_pem: String,
    pub jwk: Value,
}

pub fn signer(kid: &str) -> Signer {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let enc = EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap();
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&enc, Algorithm::RS256).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    Signer { kid: kid.into(), enc, public_pem: kp.public_key_pem(), jwk }
}

impl Signer {
    pub fn jwks(&self) -> Vec<u8> {
        json!({ "keys": [self.jwk] }).to_string().into_bytes()
    }

    pub fn keys(&self) -> ferrid_jwt::KeySet {
        ferrid_jwt::KeySet::from_jwks(&self.jwks()).unwrap()
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.enc).unwrap()
    }
}

/// A `format=full` token's claims for an instance created an hour before `NOW`.
pub fn claims(aud: &str) -> Value {
    json!({
        "aud": aud, "azp": "112233445566778899001", "email": "agent@ferrid-prod.iam.gserviceaccount.com",
        "email_verified": true, "exp": NOW + 3600, "iat": NOW, "iss": "https://accounts.google.com",
        "sub": "112233445566778899001",
        "google": {"compute_engine": {
            "instance_creation_timestamp": NOW - 3600, "instance_id": "4417181624101893537",
            "instance_name": "worker-7", "project_id": "ferrid-prod", "project_number": 987654321012_i64,
            "zone": "europe-west4-b"
        }}
    })
}
