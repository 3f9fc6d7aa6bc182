//! The trust bundle: a SPIFFE bundle document (JWKS with `x509-svid` and `jwt-svid`
//! keys), a plain JWKS of the JWT keys, and PEM.
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ferrid_types::TrustDomain;
use serde_json::{Map, Value, json};
use x509_parser::prelude::*;
use x509_parser::public_key::PublicKey;

use crate::CaError;

/// A JWT signing key as published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtAuthority {
    /// The `kid`.
    pub key_id: String,
    /// SubjectPublicKeyInfo, DER.
    pub public_key_spki_der: Vec<u8>,
    /// Unix seconds after which nothing it signed is valid (0 when unknown).
    pub expires_at: i64,
}

/// One trust domain's trust bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustBundle {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// X.509 authorities (root certificates), DER.
    pub x509_authorities: Vec<Vec<u8>>,
    /// JWT authorities.
    pub jwt_authorities: Vec<JwtAuthority>,
    /// `spiffe_sequence`: increases on every change.
    pub sequence: u64,
    /// `spiffe_refresh_hint`, seconds.
    pub refresh_hint_secs: i64,
}

const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
    0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const P384_SPKI_PREFIX: [u8; 23] = [
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81,
    0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
];

fn b64u(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|&x| x != 0).unwrap_or(b.len().saturating_sub(1));
    &b[i..]
}

/// The JWK members (`kty`, `crv`/`x`/`y` or `n`/`e`) of a SubjectPublicKeyInfo.
pub(crate) fn jwk_of_spki(spki_der: &[u8]) -> Result<Map<String, Value>, CaError> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| CaError::Internal(e.to_string()))?;
    let mut m = Map::new();
    match spki.parsed().map_err(|e| CaError::Internal(e.to_string()))? {
        PublicKey::EC(point) => {
            let data = point.data();
            let (crv, n) = match data.len() {
                65 => ("P-256", 32),
                97 => ("P-384", 48),
                l => return Err(CaError::Internal(format!("unsupported EC point length {l}"))),
            };
            m.insert("kty".into(), "EC".into());
            m.insert("crv".into(), crv.into());
            m.insert("x".into(), b64u(&data[1..=n]).into());
            m.insert("y".into(), b64u(&data[1 + n..]).into());
        }
        PublicKey::RSA(rsa) => {
            m.insert("kty".into(), "RSA".into());
            m.insert("n".into(), b64u(strip_zeros(rsa.modulus)).into());
            m.insert("e".into(), b64u(strip_zeros(rsa.exponent)).into());
        }
        _ => return Err(CaError::Internal("unsupported public key type".into())),
    }
    Ok(m)
}

fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len() - 1);
        out.push(0x80 | u8::try_from(bytes.len() - skip).unwrap_or(0));
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn der_tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

fn der_uint(b: &[u8]) -> Vec<u8> {
    let b = strip_zeros(b);
    let mut body = Vec::with_capacity(b.len() + 1);
    if b.first().is_some_and(|&x| x & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(b);
    der_tlv(0x02, &body)
}

/// Rebuilds a SubjectPublicKeyInfo from JWK members.
fn spki_of_jwk(k: &Map<String, Value>) -> Result<Vec<u8>, String> {
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let s = k.get(name).and_then(Value::as_str).ok_or_else(|| format!("JWK lacks {name:?}"))?;
        URL_SAFE_NO_PAD.decode(s).map_err(|e| format!("JWK {name:?} is not base64url: {e}"))
    };
    match k.get("kty").and_then(Value::as_str) {
        Some("EC") => {
            let (x, y) = (field("x")?, field("y")?);
            let (prefix, n): (&[u8], usize) = match k.get("crv").and_then(Value::as_str) {
                Some("P-256") => (&P256_SPKI_PREFIX, 32),
                Some("P-384") => (&P384_SPKI_PREFIX, 48),
                other => return Err(format!("unsupported curve {other:?}")),
            };
            if x.len() != n || y.len() != n {
                return Err("EC coordinates have the wrong length".into());
            }
            let mut out = prefix.to_vec();
            out.push(0x04);
            out.extend_from_slice(&x);
            out.extend_from_slice(&y);
            Ok(out)
        }
        Some("RSA") => {
            let (n, e) = (field("n")?, field("e")?);
            let rsa_key = der_tlv(0x30, &[der_uint(&n), der_uint(&e)].concat());
            let mut bits = vec![0u8];
            bits.extend_from_slice(&rsa_key);
            let alg =
                [0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
            Ok(der_tlv(0x30, &[alg.to_vec(), der_tlv(0x03, &bits)].concat()))
        }
        other => Err(format!("unsupported kty {other:?}")),
    }
}

fn spki_of_cert(der: &[u8]) -> Result<Vec<u8>, CaError> {
    let (_, c) = X509Certificate::from_der(der).map_err(|e| CaError::Internal(e.to_string()))?;
    Ok(c.public_key().raw.to_vec())
}

impl TrustBundle {
    fn jwt_keys(&self) -> Result<Vec<Value>, CaError> {
        self.jwt_keys_for("jwt-svid")
    }

    fn jwt_keys_for(&self, key_use: &str) -> Result<Vec<Value>, CaError> {
        self.jwt_authorities
            .iter()
            .map(|a| {
                let mut m = jwk_of_spki(&a.public_key_spki_der)?;
                m.insert("use".into(), key_use.into());
                let kid = if key_use == "wit-svid" { crate::wit_key_id(&a.key_id) } else { a.key_id.clone() };
                m.insert("kid".into(), kid.into());
                Ok(Value::Object(m))
            })
            .collect()
    }

    /// The SPIFFE bundle document.
    pub fn to_spiffe_json(&self) -> String {
        let mut keys = Vec::new();
        for der in &self.x509_authorities {
            if let Ok(mut m) = spki_of_cert(der).and_then(|s| jwk_of_spki(&s)) {
                m.insert("use".into(), "x509-svid".into());
                m.insert("x5c".into(), json!([STANDARD.encode(der)]));
                keys.push(Value::Object(m));
            }
        }
        keys.extend(self.jwt_keys().unwrap_or_default());
        keys.extend(self.jwt_keys_for("wit-svid").unwrap_or_default());
        json!({
            "keys": keys,
            "spiffe_sequence": self.sequence,
            "spiffe_refresh_hint": self.refresh_hint_secs,
        })
        .to_string()
    }

    /// Only the JWT keys, as a plain JWKS (what the Workload API's `FetchJWTBundles` returns).
    pub fn jwt_jwks_json(&self) -> String {
        json!({ "keys": self.jwt_keys().unwrap_or_default() }).to_string()
    }

    /// The JWT keys with `use: wit-svid`, as a plain JWKS: what the Workload API's
    /// `FetchWITBundles` returns. WIT-SVIDs are signed by the JWT authorities; SPIFFE
    /// WIT-SVID §6 identifies WIT keys by that `use`.
    pub fn wit_jwks_json(&self) -> String {
        json!({ "keys": self.jwt_keys_for("wit-svid").unwrap_or_default() }).to_string()
    }

    /// The X.509 authorities as PEM certificates.
    pub fn to_pem(&self) -> String {
        self.x509_authorities
            .iter()
            .map(|der| ::pem::encode(&::pem::Pem::new("CERTIFICATE", der.clone())))
            .collect()
    }

    /// Parses a SPIFFE bundle document. Keys with another `use` are ignored; an
    /// `x509-svid` key must carry exactly one certificate; a `jwt-svid` key needs a `kid`.
    pub fn from_spiffe_json(trust_domain: TrustDomain, json: &[u8]) -> Result<Self, CaError> {
        let bad = |m: String| CaError::State(format!("bundle document: {m}"));
        if json.len() > 1 << 20 {
            return Err(bad("larger than 1 MiB".into()));
        }
        let doc: Value = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
        let obj = doc.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
        let keys =
            obj.get("keys").and_then(Value::as_array).ok_or_else(|| bad("no \"keys\" array".into()))?;
        let mut b = TrustBundle {
            trust_domain,
            x509_authorities: vec![],
            jwt_authorities: vec![],
            sequence: obj.get("spiffe_sequence").and_then(Value::as_u64).unwrap_or(0),
            refresh_hint_secs: obj.get("spiffe_refresh_hint").and_then(Value::as_i64).unwrap_or(0),
        };
        for (i, k) in keys.iter().enumerate() {
            let k = k.as_object().ok_or_else(|| bad(format!("key {i} is not an object")))?;
            match k.get("use").and_then(Value::as_str) {
                Some("x509-svid") => {
                    let x5c = k
                        .get("x5c")
                        .and_then(Value::as_array)
                        .ok_or_else(|| bad(format!("key {i} has no x5c")))?;
                    let [cert] = x5c.as_slice() else {
                        return Err(bad(format!(
                            "key {i}: x5c must hold exactly one certificate, not {}",
                            x5c.len()
                        )));
                    };
                    let der = cert
                        .as_str()
                        .and_then(|s| STANDARD.decode(s).ok())
                        .ok_or_else(|| bad(format!("key {i}: x5c is not base64")))?;
                    X509Certificate::from_der(&der)
                        .map_err(|e| bad(format!("key {i}: bad certificate: {e}")))?;
                    b.x509_authorities.push(der);
                }
                Some("jwt-svid") => {
                    let kid = k
                        .get("kid")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| bad(format!("key {i} has no kid")))?;
                    let spki = spki_of_jwk(k).map_err(|e| bad(format!("key {i}: {e}")))?;
                    b.jwt_authorities.push(JwtAuthority {
                        key_id: kid.to_owned(),
                        public_key_spki_der: spki,
                        expires_at: 0,
                    });
                }
                _ => {}
            }
        }
        Ok(b)
    }
}
