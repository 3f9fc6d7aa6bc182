//! The audit signing key: ECDSA P-256, PKCS#8 in the audit directory (0600), its public
//! key beside it as PEM (SubjectPublicKeyInfo).
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, UnparsedPublicKey,
};

use crate::AuditError;
use crate::line::{Checkpoint, SignedCheckpoint};

/// The signing key's file name in the audit directory (PKCS#8 DER, mode 0600).
pub const SIGNING_KEY_FILE: &str = "audit-signing-key.p8";
/// The public key's file name in the audit directory (PEM).
pub const PUBLIC_KEY_FILE: &str = "audit-signing-key.pub.pem";

/// The DER prefix of a P-256 SubjectPublicKeyInfo, before the 65-byte point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
    0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A key's ID: the first 16 hex digits of SHA-256 over its SubjectPublicKeyInfo DER.
pub fn key_id_of(spki_der: &[u8]) -> String {
    crate::sha256_hex(spki_der)[..16].to_owned()
}

/// A verifying key.
#[derive(Debug, Clone)]
pub(crate) struct PublicKey {
    pub(crate) spki_der: Vec<u8>,
    pub(crate) key_id: String,
}

impl PublicKey {
    pub(crate) fn from_spki(spki_der: Vec<u8>) -> Result<Self, AuditError> {
        if spki_der.len() != P256_SPKI_PREFIX.len() + 65 || !spki_der.starts_with(&P256_SPKI_PREFIX) {
            return Err(AuditError::Key("the public key is not an ECDSA P-256 key".into()));
        }
        Ok(Self { key_id: key_id_of(&spki_der), spki_der })
    }

    /// Whether `c` is signed by this key (and names it).
    pub(crate) fn check(&self, c: &SignedCheckpoint) -> Result<(), String> {
        if c.checkpoint.key_id != self.key_id {
            return Err(format!(
                "checkpoint is signed by key {:?}, not by the audit key {}",
                c.checkpoint.key_id, self.key_id
            ));
        }
        let point = &self.spki_der[P256_SPKI_PREFIX.len()..];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
            .verify(&Checkpoint::signed_bytes(&c.body), &c.sig)
            .map_err(|_| "checkpoint signature is invalid".to_owned())
    }
}

pub(crate) fn parse_public_pem(text: &str) -> Result<PublicKey, AuditError> {
    let p = pem::parse(text).map_err(|e| AuditError::Key(format!("public key PEM: {e}")))?;
    if p.tag() != "PUBLIC KEY" {
        return Err(AuditError::Key(format!("expected a PUBLIC KEY PEM block, found {:?}", p.tag())));
    }
    PublicKey::from_spki(p.into_contents())
}

/// The signing key.
pub(crate) struct SigningKey {
    pair: EcdsaKeyPair,
    pub(crate) public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("key_id", &self.public.key_id).finish_non_exhaustive()
    }
}

impl SigningKey {
    fn from_pkcs8(der: &[u8]) -> Result<Self, AuditError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| AuditError::Key(format!("not a P-256 PKCS#8 key: {e}")))?;
        let spki = pair
            .public_key()
            .as_der()
            .map_err(|_| AuditError::Key("cannot encode the public key".into()))?
            .as_ref()
            .to_vec();
        Ok(Self { public: PublicKey::from_spki(spki)?, pair })
    }

    /// Signs a checkpoint.
    pub(crate) fn sign(&self, c: &Checkpoint) -> Result<SignedCheckpoint, AuditError> {
        let body =
            serde_json::to_vec(c).map_err(|e| AuditError::Invalid(format!("encoding checkpoint: {e}")))?;
        let sig = self
            .pair
            .sign(&SystemRandom::new(), &Checkpoint::signed_bytes(&body))
            .map_err(|_| AuditError::Key("signing a checkpoint failed".into()))?;
        Ok(SignedCheckpoint { checkpoint: c.clone(), body, sig: sig.as_ref().to_vec() })
    }

    /// The public key as PEM.
    pub(crate) fn public_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", self.public.spki_der.clone()))
    }

    /// Loads the key from `dir`, or, when the directory holds no log yet, creates it.
    /// The public key file is (re)written when missing.
    pub(crate) fn load_or_create(dir: &Path, log_is_empty: bool) -> Result<Self, AuditError> {
        let path = dir.join(SIGNING_KEY_FILE);
        let key = match fs::read(&path) {
            Ok(der) => Self::from_pkcs8(&der)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !log_is_empty {
                    return Err(AuditError::Key(format!(
                        "{} is missing but the log is not empty: its checkpoints could not be verified any more; restore the key",
                        path.display()
                    )));
                }
                let doc =
                    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                        .map_err(|_| AuditError::Key("generating a P-256 key failed".into()))?;
                write_new(&path, doc.as_ref(), 0o600)?;
                tracing::info!(path = %path.display(), "generated the audit signing key");
                Self::from_pkcs8(doc.as_ref())?
            }
            Err(e) => return Err(AuditError::io("reading", &path)(e)),
        };
        let pub_path = dir.join(PUBLIC_KEY_FILE);
        match fs::read_to_string(&pub_path) {
            Ok(text) => {
                let on_disk = parse_public_pem(&text)?;
                if on_disk.spki_der != key.public.spki_der {
                    return Err(AuditError::Key(format!(
                        "{} does not match the signing key {}",
                        pub_path.display(),
                        path.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_new(&pub_path, key.public_pem().as_bytes(), 0o644)?;
            }
            Err(e) => return Err(AuditError::io("reading", &pub_path)(e)),
        }
        Ok(key)
    }
}

/// Creates `path` (which must not exist) with `data`, synced, and syncs the directory.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), AuditError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(AuditError::io("creating", path))?;
    f.write_all(data).map_err(AuditError::io("writing", path))?;
    f.sync_all().map_err(AuditError::io("syncing", path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(AuditError::io("syncing directory", dir))
}
