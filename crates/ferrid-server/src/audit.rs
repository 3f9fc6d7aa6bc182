//! The audit log (`[audit]`, `ferrid-audit`): every attestation, issuance, exchange and
//! denial on the node, exchange and admin APIs becomes a record. A credential is
//! returned only after its record is durable and sealed ([`Shared::audit`]); if the log
//! cannot take it, the call fails with `Unavailable` and returns nothing. Refusals are
//! queued without waiting ([`Shared::deny`]): they hand out nothing, and several are
//! decided on synchronous paths; they are written in the next group commit.
//!
//! Evidence, tokens and keys are never recorded: evidence only as its SHA-256.
use std::path::PathBuf;
use std::sync::Arc;

use ferrid_audit::{AuditLog, AuditRecord, RecordKind, What, Who};
use ferrid_proto::types::v1 as tpb;
use ferrid_types::{AgentRecord, Clock, RegistrationEntry};
use serde::Deserialize;
use tonic::Status;

use crate::config::ServerConfig;
use crate::state::Shared;

fn yes() -> bool {
    true
}

/// `[audit]` in the server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// Whether decisions are recorded (default `true`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The audit directory (default `<data_dir>/audit`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self { enabled: true, dir: None }
    }
}

impl AuditSection {
    /// The audit directory for a server whose data lives in `data_dir`.
    pub fn dir(&self, data_dir: &std::path::Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| data_dir.join("audit"))
    }
}

/// Opens the configured log (`None` when disabled). Refuses to start on a log that
/// does not verify.
pub(crate) async fn open(cfg: &ServerConfig, clock: Arc<dyn Clock>) -> Result<Option<AuditLog>, String> {
    if !cfg.audit.enabled {
        tracing::warn!("audit.enabled = false: issuance and denials are not recorded");
        return Ok(None);
    }
    let dir = cfg.audit.dir(&cfg.data_dir);
    AuditLog::open(&dir, clock).await.map(Some).map_err(|e| {
        format!(
            "{e} (the server does not start on an audit log that fails verification; run `ferrid audit verify --dir {}` and move the directory aside to start a new log)",
            dir.display()
        )
    })
}

fn unavailable(e: &ferrid_audit::AuditError) -> Status {
    tracing::error!(error = %e, "audit log unavailable: refusing to hand out the credential");
    Status::unavailable(format!("audit log unavailable: {e}"))
}

impl Shared {
    fn stamp(&self, mut rec: AuditRecord) -> AuditRecord {
        rec.time = self.now();
        if rec.why.decision.is_empty() {
            rec.why.decision = "allow".into();
        }
        if rec.why.policy_hash.is_none() {
            rec.why.policy_hash = Some(self.policy.hash());
        }
        rec
    }

    /// Records `rec` and returns once it is durable (at once when the log is off);
    /// `Unavailable` when the log cannot take it.
    pub(crate) async fn audit(&self, rec: AuditRecord) -> Result<(), Status> {
        self.audit_all(vec![rec]).await
    }

    /// Records several, committed together.
    pub(crate) async fn audit_all(&self, recs: Vec<AuditRecord>) -> Result<(), Status> {
        let Some(log) = &self.audit else { return Ok(()) };
        let mut pending = Vec::with_capacity(recs.len());
        for r in recs {
            pending.push(log.submit(self.stamp(r)).map_err(|e| unavailable(&e))?);
        }
        for p in pending {
            p.wait().await.map_err(|e| unavailable(&e))?;
        }
        Ok(())
    }

    /// Records a refusal (kind `denial`, decision `deny`, the status message as the
    /// reason) without waiting, and returns `status` for the caller to return.
    pub(crate) fn deny(&self, mut rec: AuditRecord, status: Status) -> Status {
        if let Some(log) = &self.audit {
            rec.kind = RecordKind::Denial;
            rec.why.decision = "deny".into();
            rec.why.reason = Some(status.message().to_owned());
            if let Err(e) = log.submit(self.stamp(rec)) {
                tracing::error!(error = %e, "could not queue a denial for the audit log");
            }
        }
        status
    }
}

/// The authority model of `entry`, as recorded.
pub(crate) fn model(entry: &RegistrationEntry) -> Option<String> {
    entry.authority_model().map(|m| m.as_str().to_owned())
}

/// A workload served by `agent` through `entry`.
pub(crate) fn entry_who(agent: &AgentRecord, entry: &RegistrationEntry) -> Who {
    Who {
        spiffe_id: entry.spiffe_id.to_string(),
        agent_id: Some(agent.spiffe_id.to_string()),
        attestor: Some(agent.attestor.clone()),
        selectors: entry.selectors.iter().map(ToString::to_string).collect(),
        evidence_sha256: None,
    }
}

/// The key that signed an X.509 certificate: its Authority Key Identifier (hex).
fn x509_signer(leaf: &[u8]) -> Option<String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(leaf).ok()?;
    cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|k| hex::encode(k.0)),
        _ => None,
    })
}

/// An X.509-SVID handed out.
pub(crate) fn x509(
    kind: RecordKind,
    who: Who,
    svid: &tpb::X509Svid,
    credential_type: &str,
    entry: Option<&RegistrationEntry>,
    now: i64,
) -> AuditRecord {
    AuditRecord {
        kind,
        who,
        what: What {
            credential_id: Some(svid.serial.clone()),
            credential_type: Some(credential_type.into()),
            spiffe_id: Some(svid.spiffe_id.clone()),
            entry_id: entry.map(|e| e.id.0.clone()),
            ttl: Some(svid.expires_at - now),
            expires_at: Some(svid.expires_at),
            authority_model: entry.and_then(model),
            ..Default::default()
        },
        key_id: svid.cert_chain.first().and_then(|c| x509_signer(c)),
        ..Default::default()
    }
}

/// A JWT-shaped credential handed out (JWT-SVID, WIT-SVID, delegation or task token).
#[allow(clippy::too_many_arguments)]
pub(crate) fn jwt(
    kind: RecordKind,
    who: Who,
    credential_type: &str,
    spiffe_id: &str,
    jti: &str,
    kid: &str,
    audience: &[String],
    issued_at: i64,
    expires_at: i64,
    entry: Option<&RegistrationEntry>,
) -> AuditRecord {
    AuditRecord {
        kind,
        who,
        what: What {
            credential_id: Some(jti.into()),
            credential_type: Some(credential_type.into()),
            spiffe_id: Some(spiffe_id.into()),
            entry_id: entry.map(|e| e.id.0.clone()),
            audience: audience.to_vec(),
            ttl: Some(expires_at - issued_at),
            expires_at: Some(expires_at),
            authority_model: entry.and_then(model),
            ..Default::default()
        },
        key_id: (!kid.is_empty()).then(|| kid.to_owned()),
        ..Default::default()
    }
}

/// A refusal about `entry` for a workload of `agent` (the reason is filled by
/// [`Shared::deny`]).
pub(crate) fn entry_denial(
    agent: &AgentRecord,
    entry: &RegistrationEntry,
    credential_type: &str,
) -> AuditRecord {
    AuditRecord {
        who: entry_who(agent, entry),
        what: What {
            credential_type: Some(credential_type.into()),
            spiffe_id: Some(entry.spiffe_id.to_string()),
            entry_id: Some(entry.id.0.clone()),
            authority_model: model(entry),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Refused evidence: who presented it is not known yet, only the attestor and the
/// evidence's digest.
pub(crate) fn evidence_denial(attestor: &str, evidence: &[u8], credential_type: Option<&str>) -> AuditRecord {
    AuditRecord {
        who: Who {
            attestor: Some(attestor.into()),
            evidence_sha256: Some(ferrid_audit::sha256_hex(evidence)),
            ..Default::default()
        },
        what: What { credential_type: credential_type.map(str::to_owned), ..Default::default() },
        ..Default::default()
    }
}

/// The policy decision's record of a denial (see [`crate::policy::decide`]).
pub(crate) fn policy_denial(
    who: &crate::policy::Who<'_>,
    credential: &str,
    kind: ferrid_policy::CredentialKind,
    action: ferrid_policy::Action,
    audience: &[String],
    ttl: Option<std::time::Duration>,
    facts: &crate::policy::Facts,
) -> AuditRecord {
    let credential_type = match (action, kind) {
        (ferrid_policy::Action::Exchange, _) => "delegation-token",
        (_, ferrid_policy::CredentialKind::X509) => "x509-svid",
        (_, ferrid_policy::CredentialKind::Wit) => "wit-svid",
        (_, _) if facts.task.is_some() => "task-token",
        _ => "jwt-svid",
    };
    AuditRecord {
        who: Who {
            spiffe_id: who.spiffe_id.clone(),
            attestor: (!who.attestor.is_empty()).then(|| who.attestor.to_owned()),
            selectors: who.selectors.clone(),
            ..Default::default()
        },
        what: What {
            credential_type: Some(credential_type.into()),
            spiffe_id: Some(credential.into()),
            audience: audience.to_vec(),
            ttl: ttl.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            delegation_chain: facts.chain.clone(),
            subject: (!facts.subject.is_empty()).then(|| facts.subject.clone()),
            authority_model: who.model.map(|m| m.as_str().to_owned()),
            task_id: facts.task.as_ref().map(|t| t.0.clone()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// An agent, as the caller.
pub(crate) fn agent_who(agent: &AgentRecord) -> Who {
    Who {
        spiffe_id: agent.spiffe_id.to_string(),
        agent_id: Some(agent.spiffe_id.to_string()),
        attestor: Some(agent.attestor.clone()),
        selectors: agent.selectors.iter().map(ToString::to_string).collect(),
        evidence_sha256: None,
    }
}

/// What node attestation established: the agent's ID, the attestor, the selectors and
/// the evidence's digest.
pub(crate) fn attested_who(
    id: &ferrid_types::SpiffeId,
    attestor: &str,
    selectors: &[String],
    evidence: &[u8],
) -> Who {
    Who {
        spiffe_id: id.to_string(),
        agent_id: None,
        attestor: Some(attestor.into()),
        selectors: selectors.to_vec(),
        evidence_sha256: Some(ferrid_audit::sha256_hex(evidence)),
    }
}

/// An agent asking for an entry it is not authorized for.
pub(crate) fn unauthorized(
    agent: &AgentRecord,
    entry_id: &str,
    credential_type: Option<&str>,
) -> AuditRecord {
    AuditRecord {
        who: agent_who(agent),
        what: What {
            credential_type: credential_type.map(str::to_owned),
            entry_id: Some(entry_id.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The `kid` in a compact JWS's header.
pub(crate) fn jwt_kid(token: &str) -> Option<String> {
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("kid")?.as_str().map(str::to_owned)
}

/// What a direct exchange (`ExchangeSvid`) handed out: one record per credential.
#[allow(clippy::too_many_arguments)]
pub(crate) fn exchanged(
    who: Who,
    entry: &RegistrationEntry,
    x509_svid: Option<&tpb::X509Svid>,
    jwt_svid: Option<&tpb::JwtSvid>,
    audience: &[String],
    now: i64,
) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    if let Some(s) = x509_svid {
        out.push(x509(RecordKind::Exchange, who.clone(), s, "x509-svid", Some(entry), now));
    }
    if let Some(s) = jwt_svid {
        let mut r = jwt(
            RecordKind::Exchange,
            who,
            "jwt-svid",
            &s.spiffe_id,
            &s.jti,
            "",
            audience,
            s.issued_at,
            s.expires_at,
            Some(entry),
        );
        r.key_id = jwt_kid(&s.token);
        out.push(r);
    }
    out
}

/// A token-exchange actor, as the caller.
pub(crate) fn actor_who(actor: &crate::delegation::Actor) -> Who {
    Who { spiffe_id: actor.id.to_string(), selectors: actor.selectors.clone(), ..Default::default() }
}

/// A refused token exchange or task token.
pub(crate) fn actor_denial(actor: &crate::delegation::Actor, credential_type: &str) -> AuditRecord {
    AuditRecord {
        who: actor_who(actor),
        what: What {
            credential_type: Some(credential_type.into()),
            spiffe_id: Some(actor.id.to_string()),
            authority_model: actor.model.map(|m| m.as_str().to_owned()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A delegation token (token exchange: `actors` is the chain, newest first) or a task
/// token (`actors` empty).
pub(crate) fn delegated(
    actor: &crate::delegation::Actor,
    subject: &str,
    audience: &[String],
    task: Option<&(String, String)>,
    actors: &[String],
    svid: &ferrid_ca::JwtSvid,
) -> AuditRecord {
    let exchange = !actors.is_empty();
    let (kind, ty) = if exchange {
        (RecordKind::Exchange, "delegation-token")
    } else {
        (RecordKind::Issuance, "task-token")
    };
    let mut r = jwt(
        kind,
        actor_who(actor),
        ty,
        &svid.spiffe_id.to_string(),
        &svid.jti,
        &svid.kid,
        audience,
        svid.issued_at,
        svid.expires_at,
        None,
    );
    r.what.subject = Some(subject.to_owned());
    if exchange {
        // Principal first, then every actor, oldest first.
        r.what.delegation_chain =
            std::iter::once(subject.to_owned()).chain(actors.iter().rev().cloned()).collect();
    }
    r.what.task_id = task.map(|t| t.0.clone());
    r.what.authority_model = actor.model.map(|m| m.as_str().to_owned());
    r
}

/// The operator on the admin socket, by user ID.
pub(crate) fn admin_who<T>(req: &tonic::Request<T>) -> Who {
    let uid = req.extensions().get::<crate::tls::UdsPeer>().and_then(|p| p.uid);
    Who {
        attestor: Some("admin_api".into()),
        selectors: uid.map(|u| format!("unix:uid:{u}")).into_iter().collect(),
        ..Default::default()
    }
}

impl Shared {
    /// Sets the audit log (`None`: off).
    pub(crate) fn with_audit(mut self, log: Option<AuditLog>) -> Self {
        self.audit = log;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kid_comes_from_the_jws_header_only() {
        use base64::Engine as _;
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","kid":"k1"}"#);
        assert_eq!(jwt_kid(&format!("{h}.e30.sig")).as_deref(), Some("k1"));
        assert_eq!(jwt_kid("not-a-jwt"), None);
    }

    #[test]
    fn audit_section_defaults_on_under_the_data_dir() {
        let base = "trust_domain = \"example.org\"\ndata_dir = \"/d\"\n";
        let on = ServerConfig::parse(base).unwrap();
        assert!(on.raw.audit.enabled);
        assert_eq!(on.raw.audit.dir(&on.raw.data_dir), PathBuf::from("/d/audit"));
        let off = ServerConfig::parse(&format!("{base}[audit]\nenabled = false\ndir = \"/a\"\n")).unwrap();
        assert!(!off.raw.audit.enabled);
        assert_eq!(off.raw.audit.dir(&off.raw.data_dir), PathBuf::from("/a"));
        assert!(ServerConfig::parse(&format!("{base}[audit]\nenable = true\n")).is_err());
    }
}
