//! A caller's `/proc/<pid>` directory, guarded against pid reuse. Shared by the
//! workload attestors that read procfs (`unix`, `k8s`).
//!
//! [`ProcessGuard::open`] reads the process's start time and its `status`, and checks
//! that the socket peer's effective uid is one of the process's uids; after the
//! attestor has read everything else, [`ProcessGuard::verify_unchanged`] reads the
//! start time again. If the caller exited and its pid was recycled in between, the
//! start times differ (or the uid does not match) and attestation fails instead of
//! describing another process.
use std::io::Read;
use std::path::{Path, PathBuf};

use ferrid_attest::{AttestError, PeerCredentials};

/// Largest procfs file read whole (`status` is about 1.5 KiB, `cgroup` under 4 KiB on
/// real systems).
pub const MAX_PROC_FILE: u64 = 64 * 1024;

/// A process seen through procfs, with its start time recorded for the pid-reuse check.
#[derive(Debug, Clone)]
pub struct ProcessGuard {
    pid: i32,
    dir: PathBuf,
    started: u64,
    status: String,
}

impl ProcessGuard {
    /// Opens `<proc_root>/<pid>` for the socket peer `peer`: records the start time,
    /// reads `status` and checks `peer.uid` against its `Uid:` line.
    ///
    /// A pid that is not positive, a process that is gone and a process owned by
    /// someone else are [`AttestError::Rejected`].
    pub fn open(proc_root: &Path, peer: PeerCredentials) -> Result<Self, AttestError> {
        if peer.pid <= 0 {
            return Err(AttestError::Rejected(format!("invalid caller pid {}", peer.pid)));
        }
        let dir = proc_root.join(peer.pid.to_string());
        let started = start_time(&dir)?;
        let status = read_proc_file(&dir.join("status"))?;
        // The peer's effective UID must be one of the process's (real, effective, saved, fs).
        if let Some(uids) = status_ids(&status, "Uid:")
            && !uids.contains(&peer.uid)
        {
            return Err(AttestError::Rejected(format!(
                "process {} now belongs to uid {}, not the caller's uid {}",
                peer.pid,
                uids.first().copied().unwrap_or_default(),
                peer.uid
            )));
        }
        Ok(Self { pid: peer.pid, dir, started, status })
    }

    /// The process's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// `<proc_root>/<pid>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The text of `/proc/<pid>/status` as read by [`ProcessGuard::open`].
    pub fn status(&self) -> &str {
        &self.status
    }

    /// Reads a file of the process directory (at most [`MAX_PROC_FILE`] bytes).
    pub fn read(&self, name: &str) -> Result<String, AttestError> {
        read_proc_file(&self.dir.join(name))
    }

    /// Fails with [`AttestError::Rejected`] if the process behind the pid is no longer
    /// the one [`ProcessGuard::open`] saw (it exited, or its pid was reused).
    pub fn verify_unchanged(&self) -> Result<(), AttestError> {
        if start_time(&self.dir)? != self.started {
            return Err(AttestError::Rejected(format!(
                "process {} exited during attestation (pid reused)",
                self.pid
            )));
        }
        Ok(())
    }
}

/// Reads a procfs file of at most [`MAX_PROC_FILE`] bytes, bytes that are not UTF-8
/// replaced. A missing file means the process is gone ([`AttestError::Rejected`]); a
/// larger one is [`AttestError::Malformed`].
pub fn read_proc_file(p: &Path) -> Result<String, AttestError> {
    let gone =
        |e: std::io::Error| AttestError::Rejected(format!("caller process is gone ({}: {e})", p.display()));
    let f = std::fs::File::open(p).map_err(gone)?;
    let mut buf = Vec::new();
    f.take(MAX_PROC_FILE + 1).read_to_end(&mut buf).map_err(gone)?;
    if buf.len() as u64 > MAX_PROC_FILE {
        return Err(AttestError::Malformed(format!("{} is larger than {MAX_PROC_FILE} bytes", p.display())));
    }
    // Lossy: a process chooses its own name (in `stat` and `status`) and cgroup names,
    // and must not make itself unattestable with bytes that are not UTF-8.
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot). The command
/// name (field 2) may hold spaces and parentheses, so parsing starts after the last `)`.
pub fn start_time(dir: &Path) -> Result<u64, AttestError> {
    let stat = read_proc_file(&dir.join("stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| AttestError::Internal("unparsable stat".into()))?;
    rest.split_whitespace()
        .nth(19)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| AttestError::Internal("stat has no start time".into()))
}

/// The numbers on the `key` line of `/proc/<pid>/status`.
pub fn status_ids(status: &str, key: &str) -> Option<Vec<u32>> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|rest| rest.split_whitespace().filter_map(|v| v.parse().ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_parsing() {
        let d = tempfile::tempdir().unwrap();
        let d = d.path();
        std::fs::write(d.join("stat"), "9 (a) b) c) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 999 x")
            .unwrap();
        assert_eq!(start_time(d).unwrap(), 999);
        std::fs::write(d.join("stat"), "garbage").unwrap();
        assert!(start_time(d).is_err());
        assert_eq!(status_ids("Groups:\t4 24 27\n", "Groups:"), Some(vec![4, 24, 27]));
        assert_eq!(status_ids("Name: x\n", "Groups:"), None);
    }

    #[test]
    fn oversized_and_missing_files() {
        let d = tempfile::tempdir().unwrap();
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'x'; usize::try_from(MAX_PROC_FILE).unwrap() + 1]).unwrap();
        assert!(matches!(read_proc_file(&big), Err(AttestError::Malformed(_))));
        std::fs::write(&big, vec![b'x'; usize::try_from(MAX_PROC_FILE).unwrap()]).unwrap();
        assert_eq!(read_proc_file(&big).unwrap().len(), usize::try_from(MAX_PROC_FILE).unwrap());
        assert!(matches!(read_proc_file(&d.path().join("nope")), Err(AttestError::Rejected(_))));
        // A process named with bytes that are not UTF-8 is still readable.
        let stat = d.path().join("stat");
        std::fs::write(&stat, b"9 (\xff\xfe) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 999 x").unwrap();
        assert_eq!(start_time(d.path()).unwrap(), 999);
    }

    #[test]
    fn guard_detects_a_changed_start_time() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("77");
        std::fs::create_dir_all(&p).unwrap();
        let stat = |t: u64| format!("77 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {t} 0 0");
        std::fs::write(p.join("stat"), stat(100)).unwrap();
        std::fs::write(p.join("status"), "Uid:\t10\t10\t10\t10\n").unwrap();
        let g = ProcessGuard::open(root.path(), PeerCredentials { pid: 77, uid: 10, gid: 10 }).unwrap();
        assert_eq!(g.pid(), 77);
        g.verify_unchanged().unwrap();
        std::fs::write(p.join("stat"), stat(101)).unwrap();
        let e = g.verify_unchanged().unwrap_err();
        assert!(e.to_string().contains("pid reused"), "{e}");
        let e = ProcessGuard::open(root.path(), PeerCredentials { pid: 77, uid: 11, gid: 10 }).unwrap_err();
        assert!(matches!(e, AttestError::Rejected(_)), "{e:?}");
    }
}
