//! [`Verifier`]: one issuer's keys (a local JWKS file, fetched keys, or both) and the
//! checks its tokens must pass, built from the key settings every JWT-based attestor's
//! configuration shares ([`IssuerKeys`]).

use std::path::PathBuf;

use crate::remote::{KeySource, RemoteKeys, RemoteKeysConfig};
use crate::{Expectations, JwtError, KeySet, Verified, verify};

/// Where an issuer's verification keys come from, as an attestor's configuration
/// states them. Errors from [`Verifier::new`] name these keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssuerKeys {
    /// A JWKS file (`jwks_file`), checked before any fetched keys.
    pub jwks_file: Option<PathBuf>,
    /// PEM public keys or certificates (`public_key_files`), checked with the JWKS
    /// file's keys. Their keys have no `kid`.
    pub public_key_files: Vec<PathBuf>,
    /// Fetching: a JWKS URL (`jwks_url`), OIDC discovery from an issuer URL, or nothing.
    pub fetch: Option<KeySource>,
    /// CA certificates (PEM) for HTTPS fetches (`ca_file`); the system roots when unset.
    pub ca_file: Option<PathBuf>,
}

impl IssuerKeys {
    /// The usual rule of the attestors' `jwks_url` key: unset means OIDC discovery from
    /// `issuer`, `""` means no fetching (only `jwks_file`), anything else is the JWKS URL.
    pub fn from_settings(
        issuer: &str,
        jwks_url: Option<&str>,
        jwks_file: Option<PathBuf>,
        ca_file: Option<PathBuf>,
    ) -> Self {
        let fetch = match jwks_url {
            None => Some(KeySource::Discovery { issuer: issuer.to_owned() }),
            Some("") => None,
            Some(url) => Some(KeySource::Jwks { url: url.to_owned() }),
        };
        Self { jwks_file, public_key_files: Vec::new(), fetch, ca_file }
    }

    /// Reads the local keys: `jwks_file` (keys this verifier cannot use are skipped; a
    /// file with none left is an error) and every `public_key_files` entry. Empty when
    /// neither is set.
    pub fn read_files(&self) -> Result<KeySet, KeySettingError> {
        let mut keys = KeySet::default();
        if let Some(f) = &self.jwks_file {
            let err = |message: String| KeySettingError { setting: KeySetting::JwksFile, message };
            let text = std::fs::read(f).map_err(|e| err(format!("reading {}: {e}", f.display())))?;
            let (set, _) =
                KeySet::from_jwks_lenient(&text).map_err(|e| err(format!("{}: {e}", f.display())))?;
            if set.is_empty() {
                return Err(err(format!("{}: no usable signing keys", f.display())));
            }
            keys.extend(set);
        }
        for f in &self.public_key_files {
            let err = |message: String| KeySettingError { setting: KeySetting::PublicKeyFiles, message };
            let text = std::fs::read(f).map_err(|e| err(format!("reading {}: {e}", f.display())))?;
            keys.extend(KeySet::from_pem(&text).map_err(|e| err(format!("{}: {e}", f.display())))?);
        }
        Ok(keys)
    }
}

/// The key setting of [`IssuerKeys`] that a [`KeySettingError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySetting {
    /// [`IssuerKeys::jwks_file`].
    JwksFile,
    /// [`IssuerKeys::public_key_files`].
    PublicKeyFiles,
    /// A JWKS URL to fetch ([`KeySource::Jwks`]); also the error when there are no keys
    /// at all.
    JwksUrl,
    /// The issuer URL keys are discovered from ([`KeySource::Discovery`]).
    Discovery,
    /// [`IssuerKeys::ca_file`].
    CaFile,
}

impl KeySetting {
    /// The configuration key, as the attestors' configurations spell it.
    pub fn key(self) -> &'static str {
        match self {
            Self::JwksFile => "jwks_file",
            Self::PublicKeyFiles => "public_key_files",
            Self::JwksUrl => "jwks_url",
            Self::Discovery => "issuer (OIDC discovery)",
            Self::CaFile => "ca_file",
        }
    }
}

/// A key setting that cannot be used. Displays as `<key>: <message>`; callers whose
/// configuration names a setting differently (e.g. a discovery URL built from another
/// key) match on [`Self::setting`] and use [`Self::message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", setting.key())]
pub struct KeySettingError {
    /// Which setting is at fault.
    pub setting: KeySetting,
    /// What is wrong with it.
    pub message: String,
}

/// Verifies one issuer's tokens: against the local keys first, then (on an unknown
/// `kid` or a signature that fails under the local keys) against the fetched keys.
#[derive(Debug)]
pub struct Verifier {
    keys: KeySet,
    remote: Option<RemoteKeys>,
    want: Expectations,
}

impl Verifier {
    /// Reads the key files of `src` and prepares fetching (nothing is fetched until the
    /// first token). Errors name the configuration key at fault.
    pub fn new(src: &IssuerKeys, want: Expectations) -> Result<Self, String> {
        let keys = src.read_files().map_err(|e| e.to_string())?;
        Self::from_parts(keys, src.fetch.clone(), src.ca_file.clone(), want).map_err(|e| e.to_string())
    }

    /// A verifier with `keys` as its local keys and, when `fetch` is set, the keys
    /// fetched from there (HTTPS trusting `ca_file`, or the system roots). For key files
    /// read once and shared by several verifiers ([`IssuerKeys::read_files`]), or keys
    /// given in code. Refuses a `ca_file` without fetching, and no keys at all.
    pub fn from_parts(
        keys: KeySet,
        fetch: Option<KeySource>,
        ca_file: Option<PathBuf>,
        want: Expectations,
    ) -> Result<Self, KeySettingError> {
        let remote = match fetch {
            None => {
                if ca_file.is_some() {
                    return Err(KeySettingError {
                        setting: KeySetting::CaFile,
                        message: "only used to fetch keys, and fetching is off".into(),
                    });
                }
                None
            }
            Some(source) => {
                let setting = match source {
                    KeySource::Discovery { .. } => KeySetting::Discovery,
                    KeySource::Jwks { .. } => KeySetting::JwksUrl,
                };
                let mut rc = RemoteKeysConfig::new(source);
                rc.ca_file = ca_file;
                Some(RemoteKeys::new(rc).map_err(|e| KeySettingError {
                    setting: if matches!(e, JwtError::BadKey(_)) { KeySetting::CaFile } else { setting },
                    message: e.to_string(),
                })?)
            }
        };
        if keys.is_empty() && remote.is_none() {
            return Err(KeySettingError {
                setting: KeySetting::JwksUrl,
                message: "no keys to verify tokens with (set jwks_file, or let keys be fetched)".into(),
            });
        }
        Ok(Self { keys, remote, want })
    }

    /// A verifier with fixed keys that never fetches (tests, air-gapped servers).
    pub fn with_keys(keys: KeySet, want: Expectations) -> Result<Self, String> {
        if keys.is_empty() {
            return Err("no keys to verify tokens with".into());
        }
        Ok(Self { keys, remote: None, want })
    }

    /// What tokens must satisfy.
    pub fn expectations(&self) -> &Expectations {
        &self.want
    }

    /// The fetched-keys cache, when fetching is on.
    pub fn remote(&self) -> Option<&RemoteKeys> {
        self.remote.as_ref()
    }

    /// Verifies `token` at `now` (Unix seconds).
    pub async fn verify(&self, token: &str, now: i64) -> Result<Verified, JwtError> {
        let local = if self.keys.is_empty() {
            Err(JwtError::UnknownKey(None))
        } else {
            verify(token, &self.keys, &self.want, now)
        };
        match (local, &self.remote) {
            (Err(JwtError::UnknownKey(_) | JwtError::BadSignature), Some(r)) => {
                r.verify(token, &self.want, now).await
            }
            (r, _) => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;

    fn want() -> Expectations {
        Expectations::new(Some("https://issuer".into()), Some("ferrid".into()))
    }

    /// A P-256 key: its signing half and its public key PEM.
    fn es256() -> (EncodingKey, String) {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        (EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(), kp.public_key_pem())
    }

    fn token(enc: &EncodingKey) -> String {
        let claims =
            json!({"iss": "https://issuer", "aud": "ferrid", "sub": "s", "iat": NOW, "exp": NOW + 60});
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, enc).unwrap()
    }

    #[tokio::test]
    async fn public_key_files_are_local_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (enc_a, pem_a) = es256();
        let (enc_b, pem_b) = es256();
        let (a, b) = (dir.path().join("a.pem"), dir.path().join("b.pem"));
        std::fs::write(&a, pem_a).unwrap();
        std::fs::write(&b, pem_b).unwrap();
        let src = IssuerKeys { public_key_files: vec![a, b], ..IssuerKeys::default() };
        assert_eq!(src.read_files().unwrap().len(), 2);
        let v = Verifier::new(&src, want()).unwrap();
        assert!(v.remote().is_none());
        assert_eq!(v.verify(&token(&enc_a), NOW).await.unwrap().str("sub"), Some("s"));
        v.verify(&token(&enc_b), NOW).await.unwrap();
        assert_eq!(v.verify(&token(&es256().0), NOW).await.unwrap_err(), JwtError::BadSignature);
    }

    #[test]
    fn key_file_errors_name_the_setting_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let src = IssuerKeys { public_key_files: vec![missing.clone()], ..IssuerKeys::default() };
        let e = src.read_files().unwrap_err();
        assert_eq!(e.setting, KeySetting::PublicKeyFiles);
        assert!(e.message.starts_with(&format!("reading {}", missing.display())), "{e}");
        let e = Verifier::new(&src, want()).unwrap_err();
        assert!(e.starts_with("public_key_files: reading "), "{e}");

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let src = IssuerKeys { public_key_files: vec![junk.clone()], ..IssuerKeys::default() };
        let e = src.read_files().unwrap_err();
        assert_eq!(e.setting, KeySetting::PublicKeyFiles);
        assert!(e.to_string().starts_with(&format!("public_key_files: {}: ", junk.display())), "{e}");

        let empty = dir.path().join("empty.json");
        std::fs::write(&empty, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).unwrap();
        let src = IssuerKeys { jwks_file: Some(empty), ..IssuerKeys::default() };
        let e = src.read_files().unwrap_err();
        assert_eq!(e.setting, KeySetting::JwksFile);
        assert!(e.message.ends_with("no usable signing keys"), "{e}");
        assert!(IssuerKeys::default().read_files().unwrap().is_empty());
    }

    #[test]
    fn from_parts_refuses_no_keys_a_lone_ca_file_and_bad_urls() {
        let (_, pem) = es256();
        let keys = || KeySet::from_pem(pem.as_bytes()).unwrap();
        let e = Verifier::from_parts(KeySet::default(), None, None, want()).unwrap_err();
        assert_eq!(e.setting, KeySetting::JwksUrl);
        assert!(e.message.starts_with("no keys to verify tokens with"), "{e}");
        let e = Verifier::from_parts(keys(), None, Some("/ca.pem".into()), want()).unwrap_err();
        assert_eq!(e.setting, KeySetting::CaFile);
        let plain = |url: &str| Some(KeySource::Jwks { url: url.into() });
        let e = Verifier::from_parts(keys(), plain("http://keys.example/jwks"), None, want()).unwrap_err();
        assert_eq!(e.setting, KeySetting::JwksUrl);
        assert!(e.message.contains("scheme http is not allowed"), "{e}");
        let discovery = Some(KeySource::Discovery { issuer: "http://issuer.example".into() });
        let e = Verifier::from_parts(keys(), discovery, None, want()).unwrap_err();
        assert_eq!(e.setting, KeySetting::Discovery);
        assert!(e.to_string().starts_with("issuer (OIDC discovery): "), "{e}");
        let e = Verifier::from_parts(
            keys(),
            plain("https://keys.example/jwks"),
            Some("/nonexistent/ca.pem".into()),
            want(),
        )
        .unwrap_err();
        assert_eq!(e.setting, KeySetting::CaFile);
        assert!(e.message.contains("/nonexistent/ca.pem"), "{e}");
        // Fetched keys alone are enough; nothing is fetched yet.
        let v = Verifier::from_parts(KeySet::default(), plain("https://keys.example/jwks"), None, want())
            .unwrap();
        assert_eq!(v.remote().unwrap().fetches(), 0);
    }
}
