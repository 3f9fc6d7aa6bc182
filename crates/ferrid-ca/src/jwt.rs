//! JWT-SVID signing with aws-lc-rs directly: the key is parsed once per rotation, not
//! once per token (see docs/benchmarks.md for the figures behind this choice).
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferrid_types::KeyAlgorithm;
use serde_json::{Map, Value};

use crate::{CaError, internal};

/// A loaded JWT signing key.
pub(crate) enum JwtSigner {
    Ec(EcdsaKeyPair, &'static str),
    Rsa(RsaKeyPair),
}

impl JwtSigner {
    pub(crate) fn load(alg: KeyAlgorithm, pkcs8: &[u8]) -> Result<Self, CaError> {
        let err = |e: aws_lc_rs::error::KeyRejected| {
            CaError::KeyStore(format!("JWT key does not load as {alg}: {e}"))
        };
        Ok(match alg {
            KeyAlgorithm::EcP256 => Self::Ec(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).map_err(err)?,
                "ES256",
            ),
            KeyAlgorithm::EcP384 => Self::Ec(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8).map_err(err)?,
                "ES384",
            ),
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa4096 => {
                Self::Rsa(RsaKeyPair::from_pkcs8(pkcs8).map_err(err)?)
            }
        })
    }

    pub(crate) fn alg(&self) -> &'static str {
        match self {
            Self::Ec(_, a) => a,
            Self::Rsa(_) => "RS256",
        }
    }

    /// Signs the JWS signing input `header.payload`.
    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, CaError> {
        let rng = SystemRandom::new();
        match self {
            Self::Ec(k, _) => Ok(k.sign(&rng, input).map_err(internal)?.as_ref().to_vec()),
            Self::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig).map_err(internal)?;
                Ok(sig)
            }
        }
    }

    /// Public key as SubjectPublicKeyInfo DER.
    pub(crate) fn spki_der(&self) -> Result<Vec<u8>, CaError> {
        use aws_lc_rs::encoding::AsDer;
        match self {
            Self::Ec(k, _) => Ok(k.public_key().as_der().map_err(internal)?.as_ref().to_vec()),
            Self::Rsa(k) => Ok(k.public_key().as_der().map_err(internal)?.as_ref().to_vec()),
        }
    }
}

/// Registered claims an extra claim may not override.
const RESERVED: [&str; 7] = ["sub", "aud", "exp", "iat", "jti", "iss", "nbf"];

/// Builds and signs a compact JWS with header `{alg, kid, typ: JWT}`.
pub(crate) fn sign_token(
    signer: &JwtSigner,
    kid: &str,
    claims: Map<String, Value>,
    extra: Option<&Map<String, Value>>,
) -> Result<String, CaError> {
    sign_typed(signer, kid, "JWT", claims, extra)
}

/// Builds and signs a compact JWS with header `{alg, kid, typ}`.
pub(crate) fn sign_typed(
    signer: &JwtSigner,
    kid: &str,
    typ: &str,
    mut claims: Map<String, Value>,
    extra: Option<&Map<String, Value>>,
) -> Result<String, CaError> {
    if let Some(extra) = extra {
        for (k, v) in extra {
            if !RESERVED.contains(&k.as_str()) {
                claims.insert(k.clone(), v.clone());
            }
        }
    }
    let header = serde_json::json!({ "alg": signer.alg(), "kid": kid, "typ": typ });
    let mut token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).map_err(internal)?);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(&Value::Object(claims)).map_err(internal)?));
    let sig = signer.sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(sig));
    Ok(token)
}
