//! Delegation: token exchange with RFC 8693 semantics, authority models and
//! task-scoped tokens.
//!
//! A workload (the *actor*, proven by its X.509-SVID over mutual TLS) presents a
//! *subject token*: an ID token from an identity provider configured here (a person),
//! or a token this server issued (a JWT-SVID, or a delegation token from an earlier
//! hop) whose audience names the actor. It receives a delegation token:
//!
//! - `sub`: the principal at the start of the chain (the person, or the first workload);
//! - `act`: `{ "sub": <actor>, "act": { "sub": <previous actor>, … } }`, the innermost
//!   being the oldest actor (RFC 8693 §4.1);
//! - `scope` only narrows from hop to hop; `may_act` in the subject token, when present,
//!   must name the actor; the chain may not exceed `max_chain_depth` actors; the
//!   lifetime never exceeds the subject token's (so never any token's in the chain);
//! - `sub_type` (`human` or `workload`), `authority_model` and `task` record what the
//!   credential is.
//!
//! Authority models (an entry's `metadata.authority_model`) are enforced here and at
//! JWT-SVID minting: `delegated` workloads get JWT credentials only by exchange,
//! `bounded` ones only for a task, `autonomous` ones never for a human subject.
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferrid_ca::JwtSvidRequest;
use ferrid_jwt::{Expectations, IssuerKeys, KeySet, Verifier};
use ferrid_proto::exchange::v1 as pb;
use ferrid_store::{DelegationRecord, TaskCredential};
use ferrid_types::{AuthorityModel, RegistrationEntry, SpiffeId};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tonic::Status;

use crate::state::Shared;

/// RFC 8693's grant type.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Token type of JWTs (RFC 8693 §3).
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Token type of OIDC ID tokens (RFC 8693 §3).
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";

fn default_depth() -> usize {
    4
}
fn default_task_ttl() -> Duration {
    Duration::from_secs(600)
}
fn yes() -> bool {
    true
}

/// `[delegation]` in the server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegationSection {
    /// Most actors in one chain (default 4).
    #[serde(default = "default_depth")]
    pub max_chain_depth: usize,
    /// Longest life of a task-scoped token (default 10 minutes).
    #[serde(default = "default_task_ttl", with = "humantime_serde")]
    pub task_ttl: Duration,
    /// Identity providers whose ID tokens are accepted as subject tokens.
    #[serde(default)]
    pub identity_providers: Vec<IdentityProvider>,
}

impl Default for DelegationSection {
    fn default() -> Self {
        Self {
            max_chain_depth: default_depth(),
            task_ttl: default_task_ttl(),
            identity_providers: Vec::new(),
        }
    }
}

/// One `[[delegation.identity_providers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProvider {
    /// A short name, for logs.
    pub name: String,
    /// The issuer (`iss`), exactly.
    pub issuer: String,
    /// The audience its ID tokens must carry (this server's client ID there).
    pub audience: String,
    /// Whether its subjects are people (default `true`): an autonomous workload never
    /// receives a credential for them.
    #[serde(default = "yes")]
    pub human: bool,
    /// Keys as a JWKS file.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Unset: OIDC discovery from `issuer`; `""`: no fetching; else a JWKS URL.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// CA certificates (PEM) for fetching keys.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// A configured identity provider, ready to verify.
#[derive(Debug)]
pub(crate) struct Idp {
    pub(crate) cfg: IdentityProvider,
    pub(crate) verifier: Verifier,
}

/// Builds the identity providers' verifiers; errors name the provider and key.
pub(crate) fn identity_providers(sec: &DelegationSection) -> Result<Vec<Arc<Idp>>, String> {
    if sec.max_chain_depth == 0 {
        return Err("max_chain_depth: must be at least 1".into());
    }
    let mut out = Vec::new();
    for (i, p) in sec.identity_providers.iter().enumerate() {
        let want = Expectations::new(Some(p.issuer.clone()), Some(p.audience.clone()));
        let keys = IssuerKeys::from_settings(
            &p.issuer,
            p.jwks_url.as_deref(),
            p.jwks_file.clone(),
            p.ca_file.clone(),
        );
        let verifier =
            Verifier::new(&keys, want).map_err(|e| format!("identity_providers[{i}] ({}): {e}", p.name))?;
        out.push(Arc::new(Idp { cfg: p.clone(), verifier }));
    }
    Ok(out)
}

/// An RFC 8693 / RFC 6749 error.
#[derive(Debug)]
pub(crate) enum OAuthError {
    InvalidRequest(String),
    InvalidGrant(String),
    InvalidTarget(String),
    InvalidScope(String),
    UnauthorizedClient(String),
    UnsupportedGrantType(String),
}

impl OAuthError {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::InvalidTarget(_) => "invalid_target",
            Self::InvalidScope(_) => "invalid_scope",
            Self::UnauthorizedClient(_) => "unauthorized_client",
            Self::UnsupportedGrantType(_) => "unsupported_grant_type",
        }
    }

    fn message(&self) -> &str {
        match self {
            Self::InvalidRequest(m)
            | Self::InvalidGrant(m)
            | Self::InvalidTarget(m)
            | Self::InvalidScope(m)
            | Self::UnauthorizedClient(m)
            | Self::UnsupportedGrantType(m) => m,
        }
    }

    /// The gRPC status: the code first in the message and in `ferrid-oauth-error`.
    pub(crate) fn into_status(self) -> Status {
        let msg = format!("{}: {}", self.code(), self.message());
        let mut s = match self {
            Self::InvalidRequest(_) | Self::UnsupportedGrantType(_) => Status::invalid_argument(msg),
            _ => Status::permission_denied(msg),
        };
        if let Ok(v) = self.code().parse() {
            s.metadata_mut().insert("ferrid-oauth-error", v);
        }
        s
    }
}

/// The caller, proven by its X.509-SVID.
#[derive(Debug, Clone)]
pub(crate) struct Actor {
    pub(crate) id: SpiffeId,
    pub(crate) model: Option<AuthorityModel>,
    /// The shortest JWT lifetime among its entries (0: the server default).
    pub(crate) jwt_ttl: u32,
    /// The selectors of its entries.
    pub(crate) selectors: Vec<String>,
}

impl Actor {
    /// The actor as a policy principal: its entries' selectors.
    pub(crate) fn who(&self) -> crate::policy::Who<'static> {
        crate::policy::Who {
            spiffe_id: self.id.to_string(),
            selectors: self.selectors.clone(),
            attestor: "",
            model: self.model,
        }
    }
}

/// The actor behind `id`: the registration entries that issue it decide its authority
/// model. Agents and the server (IDs under `/ferrid/`) are never actors.
pub(crate) fn actor(shared: &Shared, id: SpiffeId) -> Result<Actor, OAuthError> {
    if !id.is_member_of(&shared.td) || id.path().starts_with("/ferrid/") {
        return Err(OAuthError::UnauthorizedClient(format!("{id} is not a workload of this trust domain")));
    }
    let idx = shared.entries();
    let now = shared.now();
    let entries: Vec<&Arc<RegistrationEntry>> =
        idx.by_id.values().filter(|e| e.spiffe_id == id && !e.is_expired(now)).collect();
    if entries.is_empty() {
        return Err(OAuthError::UnauthorizedClient(format!("no registration entry issues {id}")));
    }
    let models: BTreeSet<Option<&'static str>> =
        entries.iter().map(|e| e.authority_model().map(AuthorityModel::as_str)).collect();
    if models.len() > 1 {
        return Err(OAuthError::UnauthorizedClient(format!(
            "the entries of {id} disagree on its authority model ({models:?}); fix them"
        )));
    }
    let model = entries[0].authority_model();
    let jwt_ttl = entries.iter().map(|e| e.jwt_svid_ttl).filter(|t| *t > 0).min().unwrap_or(0);
    let mut selectors: Vec<String> =
        entries.iter().flat_map(|e| e.selectors.iter().map(ToString::to_string)).collect();
    selectors.sort();
    selectors.dedup();
    Ok(Actor { id, model, jwt_ttl, selectors })
}

/// What a verified subject token says.
#[derive(Debug)]
struct Subject {
    sub: String,
    human: bool,
    /// The identity provider's issuer, for a person.
    principal_iss: Option<String>,
    /// The earlier actors' `act` claim, if the token is a delegation token.
    act: Option<Value>,
    scope: Option<BTreeSet<String>>,
    may_act: Option<String>,
    task: Option<(String, String)>,
    exp: i64,
    /// The token's `jti`, when it is a token of this trust domain.
    jti: Option<String>,
}

fn depth(act: Option<&Value>) -> usize {
    let mut n = 0;
    let mut cur = act;
    while let Some(a) = cur {
        n += 1;
        cur = a.get("act");
    }
    n
}

fn scope_set(v: Option<&Value>) -> Option<BTreeSet<String>> {
    v.and_then(Value::as_str).map(|s| s.split_whitespace().map(str::to_owned).collect())
}

async fn verify_subject(
    shared: &Shared,
    actor: &Actor,
    token: &str,
    token_type: &str,
    now: i64,
) -> Result<Subject, OAuthError> {
    if token.is_empty() {
        return Err(OAuthError::InvalidRequest("subject_token is required".into()));
    }
    let bad = |e: ferrid_jwt::JwtError| OAuthError::InvalidGrant(format!("subject_token: {e}"));
    let iss = ferrid_jwt::unverified_issuer(token).ok();
    if let Some(idp) = shared.idps.iter().find(|p| iss.as_deref() == Some(p.cfg.issuer.as_str())) {
        if !token_type.is_empty() && token_type != TOKEN_TYPE_ID_TOKEN && token_type != TOKEN_TYPE_JWT {
            return Err(OAuthError::InvalidRequest(format!(
                "subject_token_type {token_type:?} is not supported"
            )));
        }
        let v = idp.verifier.verify(token, now).await.map_err(bad)?;
        let sub = v
            .str("sub")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| OAuthError::InvalidGrant("subject_token: no sub claim".into()))?;
        return Ok(Subject {
            sub: sub.to_owned(),
            human: idp.cfg.human,
            principal_iss: Some(idp.cfg.issuer.clone()),
            act: None,
            scope: scope_set(v.claims.get("scope")),
            may_act: v
                .claims
                .get("may_act")
                .and_then(|m| m.get("sub"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            task: None,
            exp: v.int("exp").unwrap_or(now),
            jti: None,
        });
    }
    // Otherwise it must be a token of this trust domain, addressed to the actor.
    if !token_type.is_empty() && token_type != TOKEN_TYPE_JWT {
        return Err(OAuthError::InvalidRequest(format!(
            "subject_token_type {token_type:?}: tokens of this trust domain are {TOKEN_TYPE_JWT}"
        )));
    }
    let keys = KeySet::from_jwks(shared.bundle().jwt_jwks_json().as_bytes())
        .map_err(|e| OAuthError::InvalidGrant(format!("trust bundle: {e}")))?;
    let mut want = Expectations::new(shared.cfg.raw.ca.jwt_issuer.clone(), Some(actor.id.to_string()));
    want.leeway = 0;
    let v = ferrid_jwt::verify(token, &keys, &want, now).map_err(|e| match e {
        ferrid_jwt::JwtError::UnknownKey(_) => OAuthError::InvalidGrant(
            "subject_token: issued neither by this trust domain nor by a configured identity provider".into(),
        ),
        ferrid_jwt::JwtError::WrongAudience { .. } => OAuthError::InvalidGrant(format!(
            "subject_token: its audience does not name the caller {} (a token is exchanged by the party it was issued to)",
            actor.id
        )),
        other => bad(other),
    })?;
    let sub = v.str("sub").unwrap_or_default().to_owned();
    let jti = v.str("jti").unwrap_or_default().to_owned();
    let outer_actor = v.claims.get("act").and_then(|a| a.get("sub")).and_then(Value::as_str);
    if let Some(m) = shared.revocations.feed().jwt_revoked(&jti, &sub, outer_actor, v.int("iat"), now) {
        return Err(OAuthError::InvalidGrant(format!("subject_token (jti {jti}) has been revoked ({m})")));
    }
    let human = v.str("sub_type") == Some("human");
    Ok(Subject {
        sub,
        human,
        principal_iss: v.str("principal_iss").map(str::to_owned),
        act: v.claims.get("act").cloned(),
        scope: scope_set(v.claims.get("scope")),
        may_act: v
            .claims
            .get("may_act")
            .and_then(|m| m.get("sub"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        task: v.claims.get("task").and_then(|t| {
            Some((
                t.get("id")?.as_str()?.to_owned(),
                t.get("purpose").and_then(Value::as_str).unwrap_or("").to_owned(),
            ))
        }),
        exp: v.int("exp").unwrap_or(now),
        jti: Some(jti).filter(|j| !j.is_empty()),
    })
}

fn task_of(id: &str, purpose: &str) -> Result<Option<(String, String)>, OAuthError> {
    if id.is_empty() {
        if !purpose.is_empty() {
            return Err(OAuthError::InvalidRequest("task_purpose without task_id".into()));
        }
        return Ok(None);
    }
    if id.len() > 128
        || id.chars().any(char::is_control)
        || purpose.len() > 512
        || purpose.chars().any(char::is_control)
    {
        return Err(OAuthError::InvalidRequest(
            "task_id must be at most 128 and task_purpose at most 512 printable characters".into(),
        ));
    }
    Ok(Some((id.to_owned(), purpose.to_owned())))
}

/// What was issued.
pub(crate) struct Issued {
    pub(crate) response: pb::TokenExchangeResponse,
}

fn ttl_cap(requested: i32, entry: u32, default: Duration) -> Duration {
    let mut ttl = if entry > 0 { Duration::from_secs(u64::from(entry)) } else { default };
    if let Ok(r) = u64::try_from(requested)
        && r > 0
    {
        ttl = ttl.min(Duration::from_secs(r));
    }
    ttl
}

/// Mints and records; shared by the exchange and task-token paths.
#[allow(clippy::too_many_arguments)]
async fn mint(
    shared: &Shared,
    actor: &Actor,
    subject: &str,
    audience: &[String],
    ttl: Duration,
    claims: Map<String, Value>,
    task: Option<&(String, String)>,
    actors: Vec<String>,
    scope: Option<String>,
    parent_jti: Option<&str>,
) -> Result<Issued, Status> {
    let req = JwtSvidRequest { spiffe_id: &actor.id, audience, ttl: Some(ttl), extra_claims: Some(&claims) };
    let svid = shared.ca.mint_delegation_token(&req, subject).map_err(crate::error::ca_status)?;
    // The lineage, so that revoking this token or its subject reaches what is exchanged
    // from it later.
    shared
        .store
        .record_delegation(&DelegationRecord {
            jti: svid.jti.clone(),
            parent_jti: parent_jti.map(str::to_owned),
            subject: subject.to_owned(),
            actor: actor.id.to_string(),
            task_id: task.map(|t| t.0.clone()),
            issued_at: svid.issued_at,
            expires_at: svid.expires_at,
        })
        .await
        .map_err(crate::error::store_status)?;
    if let Some((id, purpose)) = task {
        shared
            .store
            .record_task_credential(&TaskCredential {
                task_id: id.clone(),
                jti: svid.jti.clone(),
                purpose: purpose.clone(),
                spiffe_id: actor.id.to_string(),
                subject: subject.to_owned(),
                issued_at: svid.issued_at,
                expires_at: svid.expires_at,
            })
            .await
            .map_err(crate::error::store_status)?;
    }
    let mut rec = crate::audit::delegated(actor, subject, audience, task, &actors, &svid);
    rec.what.parent_jti = parent_jti.map(str::to_owned);
    shared.audit(rec).await?;
    shared.metrics.issued.with_label_values(&["delegation"]).inc();
    tracing::info!(
        actor = %actor.id,
        subject = %subject,
        chain_depth = actors.len(),
        task = task.map(|t| t.0.as_str()).unwrap_or(""),
        jti = %svid.jti,
        "issued a delegation token"
    );
    Ok(Issued {
        response: pb::TokenExchangeResponse {
            access_token: svid.token,
            issued_token_type: TOKEN_TYPE_JWT.into(),
            token_type: "N_A".into(),
            expires_in: svid.expires_at - svid.issued_at,
            scope: scope.unwrap_or_default(),
            jti: svid.jti,
            actors,
            subject: subject.to_owned(),
        },
    })
}

fn audiences(a: &[String]) -> Result<(), OAuthError> {
    if a.is_empty() {
        return Err(OAuthError::InvalidTarget("audience: at least one is required".into()));
    }
    if a.len() > 16 || a.iter().any(|x| x.is_empty() || x.len() > 1024 || x.chars().any(char::is_control)) {
        return Err(OAuthError::InvalidTarget("audience: 1 to 16 printable values".into()));
    }
    Ok(())
}

/// RFC 8693 token exchange for `actor`.
pub(crate) async fn exchange(
    shared: &Shared,
    actor: &Actor,
    req: &pb::TokenExchangeRequest,
) -> Result<Issued, Status> {
    let now = shared.now();
    let r = check_exchange(shared, actor, req, now).await;
    let (subject, task, scope) = r.map_err(|e| {
        shared.metrics.issue_failures.with_label_values(&["delegation", e.code()]).inc();
        tracing::warn!(actor = %actor.id, error = e.code(), reason = e.message(), "token exchange refused");
        shared.deny(crate::audit::actor_denial(actor, "delegation-token"), e.into_status())
    })?;
    let ttl = ttl_cap(req.ttl, actor.jwt_ttl, shared.cfg.raw.svid.jwt_ttl)
        .min(Duration::from_secs(u64::try_from(subject.exp - now).unwrap_or(0)));
    let mut chain = vec![actor.id.to_string()];
    let mut cur = subject.act.as_ref();
    while let Some(a) = cur {
        chain.push(a.get("sub").and_then(Value::as_str).unwrap_or("").to_owned());
        cur = a.get("act");
    }
    chain.push(subject.sub.clone());
    // The principal first, then every actor, oldest first.
    chain.reverse();
    crate::policy::decide(
        shared,
        ferrid_policy::Action::Exchange,
        &actor.who(),
        &actor.id.to_string(),
        ferrid_policy::CredentialKind::Jwt,
        &req.audience,
        Some(ttl),
        crate::policy::Facts {
            chain,
            subject: subject.sub.clone(),
            subject_is_human: subject.human,
            task: task.clone(),
            scope: scope.iter().flatten().cloned().collect(),
        },
    )?;
    finish_exchange(shared, actor, req, subject, task, scope, ttl).await
}

type Checked = (Subject, Option<(String, String)>, Option<BTreeSet<String>>);

async fn check_exchange(
    shared: &Shared,
    actor: &Actor,
    req: &pb::TokenExchangeRequest,
    now: i64,
) -> Result<Checked, OAuthError> {
    {
        if req.grant_type != GRANT_TYPE {
            return Err(OAuthError::UnsupportedGrantType(format!(
                "grant_type must be {GRANT_TYPE}, not {:?}",
                req.grant_type
            )));
        }
        if !req.requested_token_type.is_empty() && req.requested_token_type != TOKEN_TYPE_JWT {
            return Err(OAuthError::InvalidRequest(format!(
                "requested_token_type {:?}: only {TOKEN_TYPE_JWT} is issued",
                req.requested_token_type
            )));
        }
        audiences(&req.audience)?;
        if req.ttl < 0 {
            return Err(OAuthError::InvalidRequest("ttl must not be negative".into()));
        }
        let subject =
            verify_subject(shared, actor, req.subject_token.trim(), &req.subject_token_type, now).await?;
        if let Some(m) = &subject.may_act
            && *m != actor.id.to_string()
        {
            return Err(OAuthError::InvalidGrant(format!(
                "the subject token's may_act names {m}, not the caller {}",
                actor.id
            )));
        }
        if subject.sub == actor.id.to_string() && subject.act.is_none() {
            return Err(OAuthError::InvalidRequest(
                "the subject token is the caller's own: there is nobody to act for".into(),
            ));
        }
        let new_depth = depth(subject.act.as_ref()) + 1;
        let max = shared.cfg.raw.delegation.max_chain_depth;
        if new_depth > max {
            return Err(OAuthError::InvalidRequest(format!(
                "the delegation chain would have {new_depth} actors; at most {max} are allowed"
            )));
        }
        match actor.model {
            Some(AuthorityModel::Autonomous) if subject.human => {
                return Err(OAuthError::InvalidGrant(format!(
                    "{} is autonomous: it never receives a credential whose subject is a person",
                    actor.id
                )));
            }
            Some(AuthorityModel::Bounded) if req.task_id.is_empty() && subject.task.is_none() => {
                return Err(OAuthError::InvalidRequest(format!(
                    "{} is bounded: its credentials are for a task (task_id is required)",
                    actor.id
                )));
            }
            _ => {}
        }
        let mut task = task_of(&req.task_id, &req.task_purpose)?;
        match (&subject.task, &task) {
            (Some(t), Some(n)) if t.0 != n.0 => {
                return Err(OAuthError::InvalidGrant(format!(
                    "the subject token is bound to task {:?}, not {:?}",
                    t.0, n.0
                )));
            }
            (Some(t), None) => task = Some(t.clone()),
            _ => {}
        }
        let requested: Option<BTreeSet<String>> =
            (!req.scope.trim().is_empty()).then(|| req.scope.split_whitespace().map(str::to_owned).collect());
        let scope = match (&subject.scope, requested) {
            (Some(have), Some(want)) => {
                let extra: Vec<&String> = want.difference(have).collect();
                if !extra.is_empty() {
                    return Err(OAuthError::InvalidScope(format!(
                        "scope may only narrow: {extra:?} is not in the subject token's scope"
                    )));
                }
                Some(want)
            }
            (Some(have), None) => Some(have.clone()),
            (None, want) => want,
        };
        if !req.may_act.is_empty() {
            SpiffeId::new(&req.may_act)
                .map_err(|e| OAuthError::InvalidRequest(format!("may_act {:?}: {e}", req.may_act)))?;
        }
        let remaining = subject.exp - now;
        if remaining < 1 {
            return Err(OAuthError::InvalidGrant("subject_token expires now".into()));
        }
        Ok((subject, task, scope))
    }
}

async fn finish_exchange(
    shared: &Shared,
    actor: &Actor,
    req: &pb::TokenExchangeRequest,
    subject: Subject,
    task: Option<(String, String)>,
    scope: Option<BTreeSet<String>>,
    ttl: Duration,
) -> Result<Issued, Status> {
    let mut act = json!({ "sub": actor.id.to_string() });
    if let Some(prev) = &subject.act {
        act["act"] = prev.clone();
    }
    let mut actors = vec![actor.id.to_string()];
    let mut cur = subject.act.as_ref();
    while let Some(a) = cur {
        actors.push(a.get("sub").and_then(Value::as_str).unwrap_or("").to_owned());
        cur = a.get("act");
    }
    let mut claims = Map::new();
    claims.insert("act".into(), act);
    claims.insert("sub_type".into(), if subject.human { "human" } else { "workload" }.into());
    if let Some(iss) = &subject.principal_iss {
        claims.insert("principal_iss".into(), iss.clone().into());
    }
    let scope_text = scope.map(|s| s.into_iter().collect::<Vec<_>>().join(" "));
    if let Some(s) = &scope_text {
        claims.insert("scope".into(), s.clone().into());
    }
    if let Some(m) = actor.model {
        claims.insert("authority_model".into(), m.as_str().into());
    }
    if let Some((id, purpose)) = &task {
        claims.insert("task".into(), json!({ "id": id, "purpose": purpose }));
    }
    if !req.may_act.is_empty() {
        claims.insert("may_act".into(), json!({ "sub": req.may_act }));
    }
    let parent = subject.jti.clone();
    mint(
        shared,
        actor,
        &subject.sub,
        &req.audience,
        ttl,
        claims,
        task.as_ref(),
        actors,
        scope_text,
        parent.as_deref(),
    )
    .await
}

/// A task-scoped token for the actor itself.
pub(crate) async fn task_token(
    shared: &Shared,
    actor: &Actor,
    req: &pb::TaskTokenRequest,
) -> Result<Issued, Status> {
    let r: Result<_, OAuthError> = (|| {
        audiences(&req.audience)?;
        if actor.model == Some(AuthorityModel::Delegated) {
            return Err(OAuthError::InvalidRequest(format!(
                "{} is delegated: it acts only for a principal, through ExchangeToken with a subject token",
                actor.id
            )));
        }
        let task = task_of(&req.task_id, &req.task_purpose)?
            .ok_or_else(|| OAuthError::InvalidRequest("task_id is required".into()))?;
        if req.ttl < 0 {
            return Err(OAuthError::InvalidRequest("ttl must not be negative".into()));
        }
        Ok(task)
    })();
    let task =
        r.map_err(|e| shared.deny(crate::audit::actor_denial(actor, "task-token"), e.into_status()))?;
    let ttl =
        ttl_cap(req.ttl, actor.jwt_ttl, shared.cfg.raw.svid.jwt_ttl).min(shared.cfg.raw.delegation.task_ttl);
    crate::policy::decide(
        shared,
        ferrid_policy::Action::Issue,
        &actor.who(),
        &actor.id.to_string(),
        ferrid_policy::CredentialKind::Jwt,
        &req.audience,
        Some(ttl),
        crate::policy::Facts { task: Some(task.clone()), ..Default::default() },
    )?;
    let mut claims = Map::new();
    claims.insert("sub_type".into(), "workload".into());
    claims.insert("task".into(), json!({ "id": task.0, "purpose": task.1 }));
    if let Some(m) = actor.model {
        claims.insert("authority_model".into(), m.as_str().into());
    }
    let sub = actor.id.to_string();
    mint(shared, actor, &sub, &req.audience, ttl, claims, Some(&task), vec![], None, None).await
}
