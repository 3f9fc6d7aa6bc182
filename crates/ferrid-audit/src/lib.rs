//! Ferrid's tamper-evident audit log.
//!
//! Every attestation, issuance, exchange, denial and revocation becomes one
//! [`AuditRecord`], appended to a JSON-lines file in the audit directory. Each record
//! line carries its sequence number and a hash chain link
//! `h_n = SHA-256(h_{n-1} || n as u64 big-endian || record bytes)`, and every batch of
//! records the writer commits ends with a *checkpoint* line `{size, head, time, key_id}`
//! signed (ECDSA P-256) by the audit signing key. The latest checkpoint is also kept in
//! a separate head file, so cutting records off the end of the log is detected too.
//!
//! Appends go through one writer thread that commits in groups: it takes every record
//! waiting in its queue, writes them and one checkpoint, `fdatasync`s once, and only then
//! acknowledges each caller. [`AuditLog::append`] therefore returns only when the record
//! is durable and sealed by a signed checkpoint.
//!
//! [`verify`] checks a log offline and reports every problem with its line and byte
//! offset. The format, the guarantees and the limits (a rollback of both the log and the
//! head file is only caught against a checkpoint kept elsewhere) are described in
//! `docs/audit.md`.
#![forbid(unsafe_code)]

mod key;
pub mod line;
mod log;
mod scan;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use key::{PUBLIC_KEY_FILE, SIGNING_KEY_FILE, key_id_of};
pub use line::{Checkpoint, MAX_LINE, SignedCheckpoint};
pub use log::{AuditLog, HEAD_FILE, LOG_FILE, Pending};
pub use scan::{Problem, Tail, VerifyOptions, VerifyReport, read_checkpoint_file, records, verify};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A node agent proved what it is (or a CI job's token was accepted).
    Attestation,
    /// A credential was issued.
    #[default]
    Issuance,
    /// A token was exchanged for another credential (direct SVID exchange, RFC 8693
    /// token exchange, task tokens).
    Exchange,
    /// A request was refused.
    Denial,
    /// Credentials were revoked.
    Revocation,
}

impl RecordKind {
    /// Every kind, in declaration order.
    pub const ALL: [RecordKind; 5] =
        [Self::Attestation, Self::Issuance, Self::Exchange, Self::Denial, Self::Revocation];

    /// The name used in the log (`snake_case`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attestation => "attestation",
            Self::Issuance => "issuance",
            Self::Exchange => "exchange",
            Self::Denial => "denial",
            Self::Revocation => "revocation",
        }
    }
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RecordKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown record kind {s:?} (one of {})", names.join(", "))
        })
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Who acted: the caller or the attested identity. Evidence is never recorded, only
/// its digest.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Who {
    /// The caller's or the attested SPIFFE ID.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub spiffe_id: String,
    /// The node agent that asked on a workload's behalf.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The attestor that admitted the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attestor: Option<String>,
    /// The selectors that admitted the caller (`type:value`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<String>,
    /// SHA-256 (lowercase hex) of the evidence presented, never the evidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence_sha256: Option<String>,
}

/// What was issued, exchanged or revoked.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct What {
    /// The credential's ID: an X.509 serial (hex) or a JWT `jti`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    /// `x509-svid`, `jwt-svid`, `wit-svid`, `agent-svid`, `delegation-token` or
    /// `task-token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_type: Option<String>,
    /// The credential's SPIFFE ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// The registration entry it was issued for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<String>,
    /// JWT audiences.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audience: Vec<String>,
    /// Lifetime in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    /// Expiry, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// The delegation chain, principal first, then every actor.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delegation_chain: Vec<String>,
    /// The principal a delegation token acts for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The subject token's `jti` in an exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_jti: Option<String>,
    /// The entry's authority model (`delegated`, `bounded`, `autonomous`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority_model: Option<String>,
    /// The task a task-scoped credential is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Revoked credential IDs (revocation records).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<String>,
}

/// Why: the decision and the policy set that made it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Why {
    /// `allow` or `deny`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub decision: String,
    /// Why it was denied (or any note on an allow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The hash of the active policy set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditRecord {
    /// Position in the log, from 1; assigned by the log (ignored on append).
    #[serde(skip_serializing_if = "is_zero")]
    pub seq: u64,
    /// When, Unix seconds (set by the caller from its clock).
    pub time: i64,
    /// What happened.
    pub kind: RecordKind,
    /// Who acted.
    pub who: Who,
    /// What was issued, exchanged or revoked.
    pub what: What,
    /// The decision and the policy set.
    pub why: Why,
    /// Which CA or JWT key signed the credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// Audit log errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The log or head file is not what this log wrote: it was edited, cut short or
    /// replaced. Each message names the line and byte offset.
    #[error("the audit log at {} fails verification: {}", dir.display(), problems.join("; "))]
    Tampered {
        /// The audit directory.
        dir: PathBuf,
        /// What is wrong, most important first.
        problems: Vec<String>,
    },
    /// The signing or public key is missing or unusable.
    #[error("audit signing key: {0}")]
    Key(String),
    /// A record is larger than [`MAX_LINE`] once encoded.
    #[error("an audit record of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Its encoded length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The writer stopped after an earlier failure; nothing more is appended until the
    /// log is reopened (which cuts off any unsealed tail).
    #[error("the audit log writer has failed: {0}")]
    Failed(String),
    /// The queue of records waiting for the writer is full.
    #[error("the audit log queue is full ({0} records waiting)")]
    Busy(usize),
    /// A file holds something that is not what it should.
    #[error("{0}")]
    Invalid(String),
}

impl AuditError {
    pub(crate) fn io(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Io { what, path, source }
    }
}

/// SHA-256 of `data` in lowercase hex: the digest recorded for evidence.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
