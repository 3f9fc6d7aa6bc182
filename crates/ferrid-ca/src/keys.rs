//! Key stores for CA and JWT private keys (PKCS#8 DER).
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Mutex;

use zeroize::Zeroizing;

use crate::CaError;

/// Where CA and JWT private keys live.
pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// The key with `id`, if stored.
    fn load(&self, id: &str) -> Result<Option<Zeroizing<Vec<u8>>>, CaError>;
    /// Stores (or replaces) a key.
    fn store(&self, id: &str, pkcs8_der: &[u8]) -> Result<(), CaError>;
    /// Removes a key; absent keys are not an error.
    fn delete(&self, id: &str) -> Result<(), CaError>;
}

fn check_id(id: &str) -> Result<(), CaError> {
    if !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(CaError::KeyStore(format!("invalid key id {id:?}")))
    }
}

/// Keys in process memory only; lost on restart.
#[derive(Default)]
pub struct MemoryKeyStore {
    keys: Mutex<HashMap<String, Zeroizing<Vec<u8>>>>,
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for MemoryKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.keys.lock().map(|k| k.len()).unwrap_or(0);
        f.debug_struct("MemoryKeyStore").field("keys", &n).finish()
    }
}

impl KeyStore for MemoryKeyStore {
    fn load(&self, id: &str) -> Result<Option<Zeroizing<Vec<u8>>>, CaError> {
        check_id(id)?;
        Ok(self.keys.lock().map_err(|_| CaError::KeyStore("poisoned".into()))?.get(id).cloned())
    }

    fn store(&self, id: &str, pkcs8_der: &[u8]) -> Result<(), CaError> {
        check_id(id)?;
        self.keys
            .lock()
            .map_err(|_| CaError::KeyStore("poisoned".into()))?
            .insert(id.to_owned(), Zeroizing::new(pkcs8_der.to_vec()));
        Ok(())
    }

    fn delete(&self, id: &str) -> Result<(), CaError> {
        check_id(id)?;
        self.keys.lock().map_err(|_| CaError::KeyStore("poisoned".into()))?.remove(id);
        Ok(())
    }
}

/// Keys as files `<dir>/<id>.key` (mode 0600, directory 0700), written atomically.
#[derive(Debug)]
pub struct DiskKeyStore {
    dir: PathBuf,
}

impl DiskKeyStore {
    /// Opens (creating) the key directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, CaError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| CaError::KeyStore(format!("creating {}: {e}", dir.display())))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| CaError::KeyStore(format!("restricting {}: {e}", dir.display())))?;
        Ok(Self { dir })
    }

    fn path(&self, id: &str) -> Result<PathBuf, CaError> {
        check_id(id)?;
        Ok(self.dir.join(format!("{id}.key")))
    }
}

/// Writes `data` to `path` so that a reader sees the old content or the new, never a
/// part, and a crash leaves no half-written file: a temporary file beside it, created
/// with `mode`, synced, renamed over `path`, then the directory synced. A leftover
/// temporary file is removed first, so it cannot pass on a looser mode.
pub fn write_atomic(path: &std::path::Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| std::io::Error::other("path has no file name"))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

impl KeyStore for DiskKeyStore {
    fn load(&self, id: &str) -> Result<Option<Zeroizing<Vec<u8>>>, CaError> {
        let path = self.path(id)?;
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(Zeroizing::new(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CaError::KeyStore(format!("reading {}: {e}", path.display()))),
        }
    }

    fn store(&self, id: &str, pkcs8_der: &[u8]) -> Result<(), CaError> {
        let path = self.path(id)?;
        write_atomic(&path, pkcs8_der, 0o600)
            .map_err(|e| CaError::KeyStore(format!("writing {}: {e}", path.display())))
    }

    fn delete(&self, id: &str) -> Result<(), CaError> {
        let path = self.path(id)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CaError::KeyStore(format!("removing {}: {e}", path.display()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_content_and_ignores_a_stale_temporary_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        // A world-readable leftover from an interrupted write must not lend its mode.
        let stale = dir.path().join(".key.pem.tmp");
        std::fs::write(&stale, b"stale").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o666)).unwrap();
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!stale.exists());
    }

    fn exercise(ks: &dyn KeyStore) {
        assert!(ks.load("a").unwrap().is_none());
        ks.store("a", b"secret").unwrap();
        assert_eq!(ks.load("a").unwrap().unwrap().as_slice(), b"secret");
        ks.store("a", b"other").unwrap();
        assert_eq!(ks.load("a").unwrap().unwrap().as_slice(), b"other");
        ks.delete("a").unwrap();
        ks.delete("a").unwrap();
        assert!(ks.load("a").unwrap().is_none());
        for bad in ["../x", "a/b", "", ".hidden"] {
            assert!(ks.store(bad, b"x").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn memory_store() {
        exercise(&MemoryKeyStore::new());
        assert!(!format!("{:?}", MemoryKeyStore::new()).contains("secret"));
    }

    #[test]
    fn disk_store_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let ks = DiskKeyStore::open(dir.path().join("keys")).unwrap();
        exercise(&ks);
        ks.store("k", b"x").unwrap();
        let mode = std::fs::metadata(dir.path().join("keys/k.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(dir.path().join("keys")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
