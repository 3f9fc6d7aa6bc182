//! The workload's side: a WPT signed with the private JWK that came with its WIT-SVID
//! (the Workload API's `wit_svid_key`).
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{self, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::WimseError;
use crate::verify::token_hash;

fn err(m: impl Into<String>) -> WimseError {
    WimseError::Signing(m.into())
}

fn member(jwk: &Value, k: &str) -> Result<Zeroizing<Vec<u8>>, WimseError> {
    let s = jwk.get(k).and_then(Value::as_str).ok_or_else(|| err(format!("private JWK has no {k:?}")))?;
    let b = URL_SAFE_NO_PAD.decode(s).map_err(|_| err(format!("private JWK {k:?} is not base64url")))?;
    if b.len() != 32 {
        return Err(err(format!("private JWK {k:?} is {} bytes, expected 32 (P-256)", b.len())));
    }
    Ok(Zeroizing::new(b))
}

/// Signs `claims` as a compact JWS with ES256 and header `{alg: ES256, typ, kid?}`,
/// using a private EC P-256 JWK (`kty`, `crv`, `x`, `y`, `d`).
pub fn sign_es256(
    private_jwk: &str,
    typ: &str,
    kid: Option<&str>,
    claims: &Value,
) -> Result<String, WimseError> {
    let jwk: Value =
        serde_json::from_str(private_jwk).map_err(|_| err("private key is not a JWK JSON object"))?;
    if jwk.get("kty").and_then(Value::as_str) != Some("EC")
        || jwk.get("crv").and_then(Value::as_str) != Some("P-256")
    {
        return Err(err("private JWK is not an EC P-256 key"));
    }
    let (x, y, d) = (member(&jwk, "x")?, member(&jwk, "y")?, member(&jwk, "d")?);
    let point = [&[0x04][..], &x, &y].concat();
    let kp = EcdsaKeyPair::from_private_key_and_public_key(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &d,
        &point,
    )
    .map_err(|_| err("private JWK does not form a valid P-256 key pair"))?;
    let mut header = json!({ "alg": "ES256", "typ": typ });
    if let Some(kid) = kid {
        header["kid"] = kid.into();
    }
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let mut token = format!("{}.{}", enc(&header), enc(claims));
    let sig = kp.sign(&SystemRandom::new(), token.as_bytes()).map_err(|_| err("ECDSA signing failed"))?;
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
    Ok(token)
}

/// Creates a WPT for one request: `aud` (the target URI, without query or fragment),
/// `exp` = `now + ttl_secs`, `iat`, a random 128-bit `jti`, and `wth` = the WIT's hash;
/// signed with the WIT-SVID's private JWK (EC P-256, what Ferrid's agent hands out).
pub fn create_wpt(
    wit: &str,
    private_jwk: &str,
    audience: &str,
    ttl_secs: i64,
    now: i64,
) -> Result<String, WimseError> {
    let mut jti = [0u8; 16];
    SystemRandom::new().fill(&mut jti).map_err(|_| err("no randomness for the jti"))?;
    let claims = json!({
        "aud": audience,
        "exp": now + ttl_secs,
        "iat": now,
        "jti": URL_SAFE_NO_PAD.encode(jti),
        "wth": token_hash(wit),
    });
    sign_es256(private_jwk, "wpt+jwt", None, &claims)
}
