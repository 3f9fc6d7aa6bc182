//! The request a policy decides, as plain Rust (and JSON) types, and its translation to
//! Cedar. The server fills these; only this module knows Cedar's request model.
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{
    Context as CedarContext, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request as CedarRequest,
    RestrictedExpression,
};
use serde::{Deserialize, Serialize};

/// One decision's input: who asks (`principal`), for what (`action`), about which
/// credential (`resource`), in which circumstances (`context`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The workload asking.
    pub principal: Principal,
    /// `issue` or `exchange`.
    pub action: Action,
    /// The credential to be minted.
    pub resource: Resource,
    /// Delegation, task and request facts; every field defaults to empty.
    #[serde(default)]
    pub context: Context,
}

/// The workload asking for a credential: Cedar entity `Ferrid::Workload`, whose entity
/// ID is `spiffe_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// Its SPIFFE ID.
    pub spiffe_id: String,
    /// Its attested selectors, each `type:value` (e.g. `unix:uid:1000`).
    #[serde(default)]
    pub selectors: Vec<String>,
    /// The attestor that vouched for it (`unix`, `k8s`, `github_actions`, …).
    #[serde(default)]
    pub attestor: String,
    /// The trust domain it was attested in.
    #[serde(default)]
    pub trust_domain: String,
}

/// What the principal asks to do: Cedar actions `Ferrid::Action::"issue"` and
/// `Ferrid::Action::"exchange"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Minting an X.509-, JWT- or WIT-SVID for a matched registration entry.
    Issue,
    /// RFC 8693 token exchange / delegation.
    Exchange,
}

impl Action {
    /// The action's Cedar name (`issue`, `exchange`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Issue => "issue",
            Action::Exchange => "exchange",
        }
    }
}

/// The kind of credential minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    /// An X.509-SVID.
    X509,
    /// A JWT-SVID.
    Jwt,
    /// A workload identity token.
    Wit,
}

impl CredentialKind {
    /// The value policies see in `resource.kind`: `x509`, `jwt` or `wit`.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::X509 => "x509",
            CredentialKind::Jwt => "jwt",
            CredentialKind::Wit => "wit",
        }
    }
}

/// The credential to be minted: Cedar entity `Ferrid::Credential`, whose entity ID is
/// `spiffe_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// The SPIFFE ID it names.
    pub spiffe_id: String,
    /// JWT/WIT audiences (empty for X.509).
    #[serde(default)]
    pub audience: Vec<String>,
    /// Lifetime in seconds (values above `i64::MAX` are seen as `i64::MAX`).
    pub ttl: u64,
    /// `x509`, `jwt` or `wit`.
    pub kind: CredentialKind,
}

/// Who holds authority when a credential acts for someone (`context.authority_model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthorityModel {
    /// No delegation model applies (`""`).
    #[default]
    #[serde(rename = "")]
    None,
    /// The subject delegated its own authority.
    Delegated,
    /// Authority bounded by a task or grant.
    Bounded,
    /// An agent acting on its own authority.
    Autonomous,
}

impl AuthorityModel {
    /// The value policies see: `delegated`, `bounded`, `autonomous` or `""`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorityModel::None => "",
            AuthorityModel::Delegated => "delegated",
            AuthorityModel::Bounded => "bounded",
            AuthorityModel::Autonomous => "autonomous",
        }
    }
}

/// Request facts that belong to neither principal nor resource. Policies see
/// `context.chain` (a set: Cedar sets are unordered) and `context.chain_depth`, which is
/// always `chain.len()` here so the two cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Context {
    /// Every actor of the delegation chain, in order (SPIFFE IDs or subjects).
    pub chain: Vec<String>,
    /// The authority model, if any.
    pub authority_model: AuthorityModel,
    /// Whom the credential acts for (`""` if nobody).
    pub subject: String,
    /// Whether `subject` is a human.
    pub subject_is_human: bool,
    /// The task the credential is for (`""` if none).
    pub task_id: String,
    /// The task's declared purpose (`""` if none).
    pub task_purpose: String,
    /// The trust domain of the issuing server.
    pub trust_domain: String,
    /// The attestor of the request.
    pub attestor: String,
    /// Scopes requested (token exchange).
    pub scope: Vec<String>,
}

static WORKLOAD: LazyLock<EntityTypeName> = LazyLock::new(|| type_name("Ferrid::Workload"));
static CREDENTIAL: LazyLock<EntityTypeName> = LazyLock::new(|| type_name("Ferrid::Credential"));
static ISSUE: LazyLock<EntityUid> = LazyLock::new(|| action_uid("issue"));
static EXCHANGE: LazyLock<EntityUid> = LazyLock::new(|| action_uid("exchange"));

fn type_name(name: &str) -> EntityTypeName {
    #[allow(clippy::expect_used)]
    EntityTypeName::from_str(name).expect("constant entity type name parses")
}

fn action_uid(name: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name("Ferrid::Action"), EntityId::new(name))
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

fn strings(v: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(v.iter().map(|s| string(s)))
}

fn long(n: u64) -> RestrictedExpression {
    RestrictedExpression::new_long(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The request translated for Cedar's authorizer.
pub(crate) struct Translated {
    pub(crate) request: CedarRequest,
    pub(crate) entities: Entities,
}

impl Request {
    /// Builds Cedar's request and entity store. Values are typed by construction, so
    /// they are not checked against the schema again here (that costs time on every
    /// decision and cannot fail); the schema has no action groups, so the action
    /// entities are not needed either.
    pub(crate) fn to_cedar(&self) -> Result<Translated, String> {
        let p = &self.principal;
        let principal_uid = EntityUid::from_type_name_and_id(WORKLOAD.clone(), EntityId::new(&p.spiffe_id));
        let principal = Entity::new(
            principal_uid.clone(),
            HashMap::from([
                ("spiffe_id".to_owned(), string(&p.spiffe_id)),
                ("selectors".to_owned(), strings(&p.selectors)),
                ("attestor".to_owned(), string(&p.attestor)),
                ("trust_domain".to_owned(), string(&p.trust_domain)),
            ]),
            HashSet::new(),
        )
        .map_err(|e| format!("principal: {e}"))?;

        let r = &self.resource;
        let resource_uid = EntityUid::from_type_name_and_id(CREDENTIAL.clone(), EntityId::new(&r.spiffe_id));
        let resource = Entity::new(
            resource_uid.clone(),
            HashMap::from([
                ("spiffe_id".to_owned(), string(&r.spiffe_id)),
                ("audience".to_owned(), strings(&r.audience)),
                ("ttl".to_owned(), long(r.ttl)),
                ("kind".to_owned(), string(r.kind.as_str())),
            ]),
            HashSet::new(),
        )
        .map_err(|e| format!("resource: {e}"))?;

        let c = &self.context;
        let context = CedarContext::from_pairs([
            ("chain".to_owned(), strings(&c.chain)),
            ("chain_depth".to_owned(), long(c.chain.len() as u64)),
            ("authority_model".to_owned(), string(c.authority_model.as_str())),
            ("subject".to_owned(), string(&c.subject)),
            ("subject_is_human".to_owned(), RestrictedExpression::new_bool(c.subject_is_human)),
            ("task_id".to_owned(), string(&c.task_id)),
            ("task_purpose".to_owned(), string(&c.task_purpose)),
            ("trust_domain".to_owned(), string(&c.trust_domain)),
            ("attestor".to_owned(), string(&c.attestor)),
            ("scope".to_owned(), strings(&c.scope)),
        ])
        .map_err(|e| format!("context: {e}"))?;

        let action = match self.action {
            Action::Issue => ISSUE.clone(),
            Action::Exchange => EXCHANGE.clone(),
        };
        let request = CedarRequest::new(principal_uid, action, resource_uid, context, None)
            .map_err(|e| format!("request: {e}"))?;
        let entities =
            Entities::from_entities([principal, resource], None).map_err(|e| format!("entities: {e}"))?;
        Ok(Translated { request, entities })
    }
}
