//! The `unix` workload attestor. From the kernel-reported credentials of a caller
//! (`SO_PEERCRED`) and `/proc/<pid>`, it yields selector values:
//!
//! | value | example |
//! | --- | --- |
//! | `uid:<n>`, `user:<name>` | `uid:1000`, `user:alice` |
//! | `gid:<n>`, `group:<name>` | `gid:1000`, `group:staff` |
//! | `supplementary_gid:<n>`, `supplementary_group:<name>` | one per supplementary group |
//! | `path:<binary>` | `path:/usr/bin/python3.11` |
//! | `sha256:<hex>` | digest of the running binary (opened through `/proc/<pid>/exe`) |
//!
//! Against PID reuse, the process's start time is read before and after everything
//! else, and the real user ID in `/proc/<pid>/status` must match the socket's peer
//! credentials: if the process exited and its PID was recycled meanwhile, attestation
//! fails instead of describing the wrong process ([`procfs::ProcessGuard`], which the
//! `k8s` attestor shares).
#![forbid(unsafe_code)]

pub mod procfs;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use ferrid_attest::{AttestError, PeerCredentials, WorkloadAttestor};
use sha2::{Digest, Sha256};

pub use procfs::ProcessGuard;
use procfs::status_ids;

/// Settings of the unix attestor.
#[derive(Debug, Clone)]
pub struct UnixConfig {
    /// Where procfs is mounted (tests point this elsewhere).
    pub proc_root: PathBuf,
    /// Whether to hash the caller's binary.
    pub binary_digest: bool,
    /// Binaries larger than this are not hashed (no `sha256:` selector).
    pub max_digest_bytes: u64,
}

impl Default for UnixConfig {
    fn default() -> Self {
        Self { proc_root: PathBuf::from("/proc"), binary_digest: true, max_digest_bytes: 512 * 1024 * 1024 }
    }
}

/// Digest cache key: a binary is re-hashed only when its identity or mtime changes.
type FileKey = (u64, u64, i64, i64, u64);

/// The unix workload attestor.
#[derive(Debug, Default)]
pub struct UnixAttestor {
    cfg: UnixConfig,
    digests: Mutex<HashMap<FileKey, String>>,
}

impl UnixAttestor {
    /// An attestor with `cfg`.
    pub fn new(cfg: UnixConfig) -> Self {
        Self { cfg, digests: Mutex::new(HashMap::new()) }
    }

    /// Everything, synchronously (run on a blocking thread).
    fn attest_blocking(&self, peer: PeerCredentials) -> Result<Vec<String>, AttestError> {
        let process = ProcessGuard::open(&self.cfg.proc_root, peer)?;
        let dir = process.dir();
        let status = process.status();
        let mut out = vec![format!("uid:{}", peer.uid), format!("gid:{}", peer.gid)];
        if let Ok(Some(u)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(peer.uid)) {
            out.push(format!("user:{}", u.name));
        }
        if let Ok(Some(g)) = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(peer.gid)) {
            out.push(format!("group:{}", g.name));
        }
        for gid in status_ids(status, "Groups:").unwrap_or_default() {
            out.push(format!("supplementary_gid:{gid}"));
            if let Ok(Some(g)) = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
                out.push(format!("supplementary_group:{}", g.name));
            }
        }
        let exe = dir.join("exe");
        match std::fs::read_link(&exe) {
            Ok(path) => {
                let shown = path.to_string_lossy();
                // A replaced or deleted binary shows " (deleted)": describe it, but do
                // not claim a path it no longer has.
                if !shown.ends_with(" (deleted)") {
                    out.push(format!("path:{shown}"));
                }
                if self.cfg.binary_digest
                    && let Some(d) = self.digest(&exe)?
                {
                    out.push(format!("sha256:{d}"));
                }
            }
            Err(e) => tracing::debug!(pid = peer.pid, error = %e, "binary path not readable"),
        }
        process.verify_unchanged()?;
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn digest(&self, exe: &Path) -> Result<Option<String>, AttestError> {
        use std::os::unix::fs::MetadataExt;
        let Ok(mut f) = std::fs::File::open(exe) else { return Ok(None) };
        let m = f.metadata().map_err(|e| AttestError::Internal(e.to_string()))?;
        if m.len() > self.cfg.max_digest_bytes {
            return Ok(None);
        }
        let key = (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.len());
        if let Some(d) = self.digests.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(Some(d));
        }
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n =
                f.read(&mut buf).map_err(|e| AttestError::Internal(format!("hashing the binary: {e}")))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let d = hex::encode(h.finalize());
        if let Ok(mut c) = self.digests.lock() {
            if c.len() > 4096 {
                c.clear();
            }
            c.insert(key, d.clone());
        }
        Ok(Some(d))
    }
}

#[async_trait]
impl WorkloadAttestor for UnixAttestor {
    fn name(&self) -> &'static str {
        "unix"
    }

    async fn attest(&self, peer: PeerCredentials) -> Result<Vec<String>, AttestError> {
        tokio::task::block_in_place(|| self.attest_blocking(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> PeerCredentials {
        PeerCredentials {
            pid: i32::try_from(std::process::id()).unwrap(),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn describes_this_process() {
        let a = UnixAttestor::new(UnixConfig::default());
        let sels = a.attest(me()).await.unwrap();
        let p = me();
        assert!(sels.contains(&format!("uid:{}", p.uid)));
        assert!(sels.contains(&format!("gid:{}", p.gid)));
        let exe = std::env::current_exe().unwrap();
        assert!(sels.contains(&format!("path:{}", exe.display())), "{sels:?}");
        let digest = hex::encode(Sha256::digest(std::fs::read(&exe).unwrap()));
        assert!(sels.contains(&format!("sha256:{digest}")));
        if p.uid == 0 {
            assert!(sels.contains(&"user:root".to_owned()));
        }
        // Cached second time round, same answer.
        assert_eq!(a.attest(me()).await.unwrap(), sels);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_gone_process_is_refused() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        child.wait().unwrap();
        let a = UnixAttestor::new(UnixConfig::default());
        let e = a.attest(PeerCredentials { pid, ..me() }).await.unwrap_err();
        assert!(matches!(e, AttestError::Rejected(_)), "{e:?}");
        let e = a.attest(PeerCredentials { pid: 0, ..me() }).await.unwrap_err();
        assert!(matches!(e, AttestError::Rejected(_)));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_recycled_pid_owned_by_someone_else_is_refused() {
        // A fake procfs whose process belongs to uid 4242 while the socket said 1000.
        let root = tempfile_dir();
        let p = root.join("77");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("stat"), "77 (my prog) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 123456 0 0")
            .unwrap();
        std::fs::write(p.join("status"), "Name:\tx\nUid:\t4242\t4242\t4242\t4242\nGroups:\t\n").unwrap();
        let a = UnixAttestor::new(UnixConfig { proc_root: root.clone(), ..UnixConfig::default() });
        let e = a.attest(PeerCredentials { pid: 77, uid: 1000, gid: 1000 }).await.unwrap_err();
        assert!(e.to_string().contains("4242"), "{e}");
        // The same process attested for its real owner works, and start-time parsing
        // copes with spaces and parentheses in the command name.
        let sels = a.attest(PeerCredentials { pid: 77, uid: 4242, gid: 1 }).await.unwrap();
        assert!(sels.contains(&"uid:4242".to_owned()));
        std::fs::remove_dir_all(root).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("ferrid-unix-test-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    }
}
