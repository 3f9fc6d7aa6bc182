//! Runtime policy: every issuance and every token exchange is decided by the active
//! Cedar policy set (`ferrid-policy`) at request time. Without `[policy]` the built-in
//! set permits everything the structural checks allow; with it, the configured files
//! (validated against Ferrid's schema) decide, and are reloaded when they change: a
//! file that does not validate is refused and the previous set keeps deciding. A
//! decision with evaluation errors denies (fail closed).
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferrid_policy::{
    Action, AuthorityModel as PAuth, Context, CredentialKind, PolicyEngine, PolicySet, Principal, Request,
    Resource,
};
use ferrid_types::{AuthorityModel, RegistrationEntry};
use serde::Deserialize;
use tonic::Status;

use crate::state::Shared;

fn default_reload() -> Duration {
    Duration::from_secs(5)
}

/// `[policy]` in the server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// A `.cedar` file or a directory of them.
    pub path: PathBuf,
    /// How often the files are checked for changes (default 5 s).
    #[serde(default = "default_reload", with = "humantime_serde")]
    pub reload_interval: Duration,
}

/// Loads the configured set (or the built-in one) and starts watching the files.
pub(crate) fn engine(sec: Option<&PolicySection>) -> Result<(Arc<PolicyEngine>, bool), String> {
    match sec {
        None => Ok((Arc::new(PolicyEngine::new(PolicySet::default_permit())), true)),
        Some(s) => {
            if s.reload_interval < Duration::from_secs(1) {
                return Err("reload_interval: at least 1s".into());
            }
            let set = PolicySet::load(&s.path).map_err(|e| format!("path: {e}"))?;
            tracing::info!(path = %s.path.display(), policies = set.len(), hash = set.hash(), "policy set loaded");
            let engine = Arc::new(PolicyEngine::new(set));
            Ok((engine, false))
        }
    }
}

/// Starts the reload watcher (needs the runtime).
pub(crate) fn watch(
    engine: &Arc<PolicyEngine>,
    sec: Option<&PolicySection>,
) -> Option<tokio::task::JoinHandle<()>> {
    sec.map(|s| engine.watch(s.path.clone(), s.reload_interval))
}

/// What a decision is about, beyond the principal and the credential.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    pub(crate) chain: Vec<String>,
    pub(crate) subject: String,
    pub(crate) subject_is_human: bool,
    pub(crate) task: Option<(String, String)>,
    pub(crate) scope: Vec<String>,
}

fn model(m: Option<AuthorityModel>) -> PAuth {
    match m {
        None => PAuth::None,
        Some(AuthorityModel::Delegated) => PAuth::Delegated,
        Some(AuthorityModel::Bounded) => PAuth::Bounded,
        Some(AuthorityModel::Autonomous) => PAuth::Autonomous,
    }
}

/// The principal acting: a workload's SPIFFE ID with the selectors that admitted it.
pub(crate) struct Who<'a> {
    pub(crate) spiffe_id: String,
    pub(crate) selectors: Vec<String>,
    pub(crate) attestor: &'a str,
    pub(crate) model: Option<AuthorityModel>,
}

impl<'a> Who<'a> {
    /// A workload served by an agent: its entry's ID and selectors, the agent's attestor.
    pub(crate) fn entry(e: &RegistrationEntry, attestor: &'a str) -> Self {
        Self {
            spiffe_id: e.spiffe_id.to_string(),
            selectors: e.selectors.iter().map(ToString::to_string).collect(),
            attestor,
            model: e.authority_model(),
        }
    }
}

/// Decides; `Ok(hash)` of the deciding policy set when allowed, `PermissionDenied`
/// naming the determining policies (or the errors) otherwise.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decide(
    shared: &Shared,
    action: Action,
    who: &Who<'_>,
    credential: &str,
    kind: CredentialKind,
    audience: &[String],
    ttl: Option<Duration>,
    facts: Facts,
) -> Result<String, Status> {
    if shared.policy_is_default {
        return Ok(shared.policy.hash());
    }
    let td = shared.td.to_string();
    let denial = shared
        .audit
        .as_ref()
        .map(|_| crate::audit::policy_denial(who, credential, kind, action, audience, ttl, &facts));
    let (task_id, task_purpose) = facts.task.unwrap_or_default();
    let req = Request {
        principal: Principal {
            spiffe_id: who.spiffe_id.clone(),
            selectors: who.selectors.clone(),
            attestor: who.attestor.to_owned(),
            trust_domain: td.clone(),
        },
        action,
        resource: Resource {
            spiffe_id: credential.to_owned(),
            audience: audience.to_vec(),
            ttl: ttl.map_or(0, |d| d.as_secs()),
            kind,
        },
        context: Context {
            chain: facts.chain,
            authority_model: model(who.model),
            subject: facts.subject,
            subject_is_human: facts.subject_is_human,
            task_id,
            task_purpose,
            trust_domain: td,
            attestor: who.attestor.to_owned(),
            scope: facts.scope,
        },
    };
    let d = shared.policy.decide(&req);
    if d.allowed {
        return Ok(d.policy_hash);
    }
    shared.metrics.issue_failures.with_label_values(&[kind.as_str(), "policy"]).inc();
    let why = if !d.errors.is_empty() {
        format!("policy evaluation failed, so the request is denied (fail closed): {}", d.errors.join("; "))
    } else if d.determining_policies.is_empty() {
        "no policy permits it".to_owned()
    } else {
        format!("forbidden by {}", d.determining_policies.join(", "))
    };
    tracing::warn!(
        action = action.as_str(),
        principal = %who.spiffe_id,
        credential,
        policy_hash = %d.policy_hash,
        reason = %why,
        "denied by policy"
    );
    let status = Status::permission_denied(format!(
        "denied by policy: {} {} for {credential}: {why} (policy set {})",
        who.spiffe_id,
        action.as_str(),
        &d.policy_hash[..d.policy_hash.len().min(12)]
    ));
    Err(match denial {
        Some(mut rec) => {
            rec.why.policy_hash = Some(d.policy_hash.clone());
            shared.deny(rec, status)
        }
        None => status,
    })
}
