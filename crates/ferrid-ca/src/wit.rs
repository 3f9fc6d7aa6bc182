//! WIT-SVIDs (SPIFFE `WIT-SVID.md`, a profile of the WIMSE Workload Identity Token of
//! draft-ietf-wimse-workload-creds-02): the workload's public key checked and bound in
//! `cnf.jwk`, and fresh P-256 workload keys in JWK form for the agent.
use aws_lc_rs::encoding::AsBigEndian;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, ParsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::{CaError, internal};

/// Largest public JWK accepted, in bytes.
pub const MAX_PUBLIC_JWK_BYTES: usize = 2048;

/// JWK members that carry private or symmetric key material (RFC 7518 §6.2.2, §6.3.2,
/// §6.4; RFC 8037 `d`).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn bad(m: impl Into<String>) -> CaError {
    CaError::InvalidJwk(m.into())
}

/// Checks a workload's public JWK and returns the `cnf.jwk` to bind: rebuilt from the
/// validated members only (`kty`, `crv`, `x`, `y`, and `alg: ES256`), so nothing the
/// caller added (a `kid`, stray members) reaches the token.
///
/// Accepted: an EC P-256 public key whose point is on the curve, with no private
/// members, and an `alg` (if given) of `ES256`. Ed25519 (`OKP`) keys are refused: the
/// WIT-SVID profile (§3.2) only allows RS*/ES*/PS* for `cnf.jwk.alg`, and a WIT-SVID
/// must satisfy it to be accepted by SPIFFE validators.
pub fn validate_public_jwk(json: &str) -> Result<Map<String, Value>, CaError> {
    if json.len() > MAX_PUBLIC_JWK_BYTES {
        return Err(bad(format!("public key JWK is larger than {MAX_PUBLIC_JWK_BYTES} bytes")));
    }
    let v: Value = serde_json::from_str(json).map_err(|e| bad(format!("public key is not JSON: {e}")))?;
    let Value::Object(m) = v else {
        return Err(bad("public key JWK is not a JSON object"));
    };
    if let Some(p) = PRIVATE_MEMBERS.iter().find(|p| m.contains_key(**p)) {
        return Err(bad(format!("public key JWK has the private or symmetric member {p:?}")));
    }
    let s = |k: &str| m.get(k).and_then(Value::as_str);
    match s("kty") {
        Some("EC") => {}
        Some("OKP") if s("crv") == Some("Ed25519") => {
            return Err(bad(
                "Ed25519 keys are not allowed in a WIT-SVID (cnf.jwk.alg must be RS*, ES* or PS*; \
                 SPIFFE WIT-SVID §3.2); use EC P-256",
            ));
        }
        Some(other) => return Err(bad(format!("kty {other:?} is not supported (accepted: EC P-256)"))),
        None => return Err(bad("public key JWK has no string kty")),
    }
    if s("crv") != Some("P-256") {
        return Err(bad(format!("EC curve {:?} is not supported (accepted: P-256)", m.get("crv"))));
    }
    if let Some(alg) = m.get("alg")
        && alg.as_str() != Some("ES256")
    {
        return Err(bad(format!("alg {alg} does not fit a P-256 key (expected \"ES256\")")));
    }
    if let Some(u) = m.get("use")
        && u.as_str() != Some("sig")
    {
        return Err(bad(format!("use {u} is not \"sig\"")));
    }
    let coord = |k: &str| -> Result<Vec<u8>, CaError> {
        let v = s(k).ok_or_else(|| bad(format!("EC key has no string {k:?}")))?;
        let b = URL_SAFE_NO_PAD.decode(v).map_err(|_| bad(format!("{k:?} is not unpadded base64url")))?;
        if b.len() != 32 {
            return Err(bad(format!("{k:?} is {} bytes, P-256 coordinates are 32", b.len())));
        }
        Ok(b)
    };
    let (x, y) = (coord("x")?, coord("y")?);
    let point = [&[0x04][..], &x, &y].concat();
    ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
        .map_err(|_| bad("the EC point is not on the P-256 curve"))?;
    let mut out = Map::new();
    out.insert("kty".into(), "EC".into());
    out.insert("crv".into(), "P-256".into());
    out.insert("x".into(), URL_SAFE_NO_PAD.encode(&x).into());
    out.insert("y".into(), URL_SAFE_NO_PAD.encode(&y).into());
    out.insert("alg".into(), "ES256".into());
    Ok(out)
}

/// A fresh workload key pair for a WIT-SVID, in the JWK forms the Workload API uses.
pub struct WitKeyPair {
    /// The private key as a JWK JSON object (`kty`, `crv`, `x`, `y`, `d`, `alg`), what
    /// `FetchWITSVID` returns in `wit_svid_key`. Zeroed on drop.
    pub private_jwk: Zeroizing<String>,
    /// The public key as a JWK JSON object, what the server binds in `cnf.jwk`.
    pub public_jwk: String,
}

impl std::fmt::Debug for WitKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WitKeyPair").field("public_jwk", &self.public_jwk).finish_non_exhaustive()
    }
}

/// Generates a P-256 key pair in memory for a WIT-SVID.
pub fn generate_wit_key() -> Result<WitKeyPair, CaError> {
    let kp = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).map_err(internal)?;
    let point = kp.public_key().as_ref();
    if point.len() != 65 || point[0] != 0x04 {
        return Err(internal("unexpected P-256 public key encoding"));
    }
    let (x, y) = (URL_SAFE_NO_PAD.encode(&point[1..33]), URL_SAFE_NO_PAD.encode(&point[33..]));
    let d = kp.private_key().as_be_bytes().map_err(internal)?;
    let d = Zeroizing::new(URL_SAFE_NO_PAD.encode(d.as_ref()));
    let public_jwk =
        serde_json::json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y, "alg": "ES256" }).to_string();
    let private_jwk = Zeroizing::new(format!(
        r#"{{"kty":"EC","crv":"P-256","x":"{x}","y":"{y}","d":"{}","alg":"ES256"}}"#,
        d.as_str()
    ));
    Ok(WitKeyPair { private_jwk, public_jwk })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_validate_and_keep_private_parts_out() {
        let k = generate_wit_key().unwrap();
        let cnf = validate_public_jwk(&k.public_jwk).unwrap();
        assert_eq!(cnf["alg"], "ES256");
        assert!(!cnf.contains_key("d"));
        let private: Value = serde_json::from_str(&k.private_jwk).unwrap();
        assert_eq!(private["x"], cnf["x"]);
        assert_eq!(URL_SAFE_NO_PAD.decode(private["d"].as_str().unwrap()).unwrap().len(), 32);
        // The private JWK itself is refused as a public key.
        let e = validate_public_jwk(&k.private_jwk).unwrap_err();
        assert!(e.to_string().contains("\"d\""), "{e}");
        assert!(!format!("{k:?}").contains("\"d\""), "Debug must not print the private key");
    }

    #[test]
    fn refuses_bad_keys_with_reasons() {
        let k = generate_wit_key().unwrap();
        let mut m: Map<String, Value> = serde_json::from_str(&k.public_jwk).unwrap();
        let with = |k: &str, v: Value| {
            let mut m = m.clone();
            m.insert(k.into(), v);
            Value::Object(m).to_string()
        };
        let cases = [
            (with("crv", "P-384".into()), "curve"),
            (with("alg", "ES384".into()), "alg"),
            (with("kty", "RSA".into()), "kty"),
            (with("k", "c2VjcmV0".into()), "\"k\""),
            (with("x", "AAAA".into()), "32"),
            (with("x", URL_SAFE_NO_PAD.encode([7u8; 32]).into()), "curve"),
            (with("use", "enc".into()), "use"),
            (
                r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#.into(),
                "Ed25519",
            ),
            ("[1]".into(), "object"),
            ("{".into(), "JSON"),
            ("x".repeat(MAX_PUBLIC_JWK_BYTES + 1), "larger"),
        ];
        for (jwk, why) in cases {
            let e = validate_public_jwk(&jwk).unwrap_err();
            assert!(matches!(e, CaError::InvalidJwk(_)) && e.to_string().contains(why), "{jwk}: {e}");
            assert!(e.is_client_error());
        }
        // Extra members are dropped, not bound.
        m.insert("kid".into(), "mine".into());
        let cnf = validate_public_jwk(&Value::Object(m).to_string()).unwrap();
        assert!(!cnf.contains_key("kid"));
    }
}
