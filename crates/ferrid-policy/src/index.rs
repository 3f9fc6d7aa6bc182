//! Which policies can apply to a request, decided once at load so that a decision
//! evaluates a few dozen policies instead of all of them.
//!
//! Cedar evaluates every policy of a set for every request (about a microsecond each),
//! so a thousand per-service policies cost a millisecond per decision. But most such
//! policies name one action and one credential. At load, each policy is filed under
//! - the actions its scope allows (`action == …`, `action in […]`; else both), and
//! - a credential SPIFFE ID when its scope says `resource == Ferrid::Credential::"…"`,
//!   or its condition has a top-level conjunct `resource.spiffe_id == "…"` and cannot
//!   fail to evaluate (see [`cannot_error`]); failing that
//! - a workload SPIFFE ID, likewise from `principal == Ferrid::Workload::"…"` or
//!   `principal.spiffe_id == "…"`; else no key.
//!
//! A decision evaluates the action's unkeyed policies and those keyed by the request's
//! credential and workload IDs, and combines the responses as Cedar would one (see
//! `PolicySet::decide`). Skipping a policy is exact: a policy filed under another action
//! or key is not satisfied by this request, and — its scope being checked first, or its
//! condition being error-free — evaluating it could not have produced an error either.
use std::collections::HashMap;

use cedar_policy::{ActionConstraint, Policy, PrincipalConstraint, ResourceConstraint};
use serde_json::Value;

use crate::Action;

/// The policies of one action: those that may apply to any request, those that can
/// apply only to one credential SPIFFE ID, and those only to one workload SPIFFE ID.
#[derive(Default)]
pub(crate) struct Partition {
    pub(crate) unkeyed: cedar_policy::PolicySet,
    pub(crate) by_credential: HashMap<String, cedar_policy::PolicySet>,
    pub(crate) by_workload: HashMap<String, cedar_policy::PolicySet>,
}

impl Partition {
    /// The sets to evaluate for a workload and a credential ID (empty ones left out).
    pub(crate) fn sets_for<'a>(
        &'a self,
        workload: &str,
        credential: &str,
    ) -> impl Iterator<Item = &'a cedar_policy::PolicySet> {
        std::iter::once(&self.unkeyed)
            .chain(self.by_credential.get(credential))
            .chain(self.by_workload.get(workload))
            .filter(|s| !s.is_empty())
    }
}

/// What a policy is limited to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    /// One credential SPIFFE ID.
    Credential(String),
    /// One workload SPIFFE ID.
    Workload(String),
}

/// The partitions for `issue` and `exchange`.
#[derive(Default)]
pub(crate) struct Index {
    pub(crate) issue: Partition,
    pub(crate) exchange: Partition,
}

impl Index {
    /// Files every policy of a validated set (policies are reference-counted ASTs, so
    /// the copies are cheap).
    pub(crate) fn build(set: &cedar_policy::PolicySet) -> Result<Index, String> {
        let mut index = Index::default();
        for policy in set.policies() {
            let key = key(policy);
            for action in actions(policy) {
                let partition = index.partition_mut(action);
                let target = match &key {
                    Some(Key::Credential(k)) => partition.by_credential.entry(k.clone()).or_default(),
                    Some(Key::Workload(k)) => partition.by_workload.entry(k.clone()).or_default(),
                    None => &mut partition.unkeyed,
                };
                target.add(policy.clone()).map_err(|e| e.to_string())?;
            }
        }
        Ok(index)
    }

    pub(crate) fn partition(&self, action: Action) -> &Partition {
        match action {
            Action::Issue => &self.issue,
            Action::Exchange => &self.exchange,
        }
    }

    fn partition_mut(&mut self, action: Action) -> &mut Partition {
        match action {
            Action::Issue => &mut self.issue,
            Action::Exchange => &mut self.exchange,
        }
    }
}

/// The actions a policy's scope allows (the schema has no action groups, so `in` lists
/// actions themselves).
fn actions(policy: &Policy) -> Vec<Action> {
    let named = |uids: &[cedar_policy::EntityUid]| {
        [Action::Issue, Action::Exchange]
            .into_iter()
            .filter(|a| uids.iter().any(|u| u.id().unescaped() == a.as_str()))
            .collect()
    };
    match policy.action_constraint() {
        ActionConstraint::Any => vec![Action::Issue, Action::Exchange],
        ActionConstraint::Eq(uid) => named(std::slice::from_ref(&uid)),
        ActionConstraint::In(uids) => named(&uids),
    }
}

/// The credential or workload a policy is limited to, if any (the credential when both).
pub(crate) fn key(policy: &Policy) -> Option<Key> {
    // The Credential and Workload entities' IDs are their SPIFFE IDs (request.rs).
    if let ResourceConstraint::Eq(uid) = policy.resource_constraint() {
        return Some(Key::Credential(uid.id().unescaped().to_owned()));
    }
    let from_scope = match policy.principal_constraint() {
        PrincipalConstraint::Eq(uid) => Some(Key::Workload(uid.id().unescaped().to_owned())),
        _ => None,
    };
    let from_condition = (|| {
        let est = policy.to_json().ok()?;
        let conditions = est.get("conditions")?.as_array()?;
        if !conditions.iter().all(|c| c.get("body").is_some_and(cannot_error)) {
            return None;
        }
        let mut conjuncts = Vec::new();
        for c in conditions.iter().filter(|c| c.get("kind").and_then(Value::as_str) == Some("when")) {
            if let Some(body) = c.get("body") {
                flatten_and(body, &mut conjuncts);
            }
        }
        let literal = |var| conjuncts.iter().find_map(|c| spiffe_id_literal(c, var));
        literal("resource").map(Key::Credential).or_else(|| literal("principal").map(Key::Workload))
    })();
    match (from_condition, from_scope) {
        (Some(Key::Credential(k)), _) => Some(Key::Credential(k)),
        (_, Some(scope)) => Some(scope),
        (condition, None) => condition,
    }
}

fn flatten_and<'a>(e: &'a Value, out: &mut Vec<&'a Value>) {
    match e.get("&&") {
        Some(and) => {
            if let (Some(l), Some(r)) = (and.get("left"), and.get("right")) {
                flatten_and(l, out);
                flatten_and(r, out);
            }
        }
        None => out.push(e),
    }
}

/// `"…"` from `<var>.spiffe_id == "…"` or `"…" == <var>.spiffe_id`.
fn spiffe_id_literal(e: &Value, var: &str) -> Option<String> {
    let eq = e.get("==")?;
    let (l, r) = (eq.get("left")?, eq.get("right")?);
    let is_attr = |v: &Value| {
        v.get(".").is_some_and(|d| {
            d.get("attr").and_then(Value::as_str) == Some("spiffe_id")
                && d.get("left").and_then(|l| l.get("Var")).and_then(Value::as_str) == Some(var)
        })
    };
    let literal = |v: &Value| v.get("Value").and_then(Value::as_str).map(str::to_owned);
    if is_attr(l) {
        literal(r)
    } else if is_attr(r) {
        literal(l)
    } else {
        None
    }
}

/// Whether a validated expression (Cedar's JSON form) can never fail to evaluate here:
/// no arithmetic (overflow), no extension function (bad arguments), and attribute
/// access only on `principal`, `resource`, `context` or a record (an entity literal
/// might not exist). Anything not recognised counts as able to fail.
pub(crate) fn cannot_error(e: &Value) -> bool {
    let Some(obj) = e.as_object() else { return false };
    if obj.len() != 1 {
        return false;
    }
    let Some((op, arg)) = obj.iter().next() else { return false };
    let field = |name: &str| arg.get(name).is_some_and(cannot_error);
    match op.as_str() {
        "Value" | "Var" => true,
        "==" | "!=" | "<" | "<=" | ">" | ">=" | "&&" | "||" | "in" | "contains" | "containsAll"
        | "containsAny" => field("left") && field("right"),
        "!" | "isEmpty" => field("arg"),
        "like" => field("left"),
        "is" => field("left") && arg.get("in").is_none_or(cannot_error),
        "if-then-else" => field("if") && field("then") && field("else"),
        "." | "has" => arg.get("left").is_some_and(|l| {
            (l.get("Var").is_some() || l.get("Record").is_some() || l.get(".").is_some()) && cannot_error(l)
        }),
        "Set" => arg.as_array().is_some_and(|items| items.iter().all(cannot_error)),
        "Record" => arg.as_object().is_some_and(|fields| fields.values().all(cannot_error)),
        _ => false,
    }
}
