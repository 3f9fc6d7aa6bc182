//! Ferrid's runtime policy: every issuance and every token exchange is decided at
//! request time by [Cedar](https://www.cedarpolicy.com) policies.
//!
//! - The model is fixed by an embedded schema ([`SCHEMA_TEXT`], namespace `Ferrid`):
//!   principal `Ferrid::Workload`, actions `Ferrid::Action::"issue"` and
//!   `Ferrid::Action::"exchange"`, resource `Ferrid::Credential`, and a context record.
//!   Callers describe a request with the plain types of [`Request`]; only this crate
//!   knows Cedar.
//! - A [`PolicySet`] is parsed *and* validated against the schema in strict mode when it
//!   is built, so a policy naming an unknown attribute, type or action never loads.
//!   Errors name the file, line and column, and the policy.
//! - [`PolicySet::decide`] fails closed: a `forbid` beats any `permit`, nothing is
//!   allowed without a `permit`, and a request during which any policy failed to
//!   evaluate is denied, whatever the other policies said.
//! - [`PolicyEngine`] holds the active set and replaces it atomically on reload, only
//!   once the new set has fully validated; it can poll the files and reload by itself.
//! - [`run_cases`] checks a policy set against golden cases (`CASES.json`).
//!
//! docs/policy.md describes the model, the default set and the CLI.
#![forbid(unsafe_code)]

mod cases;
mod engine;
mod index;
mod request;

pub use cases::{CaseReport, CaseResult, Expect, run_cases};
pub use engine::PolicyEngine;
pub use request::{Action, AuthorityModel, Context, CredentialKind, Principal, Request, Resource};

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{Authorizer, PolicyId, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The Cedar schema every policy is validated against (Cedar's schema syntax).
pub const SCHEMA_TEXT: &str = include_str!("ferrid.cedarschema");

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    let (schema, _warnings) =
        Schema::from_cedarschema_str(SCHEMA_TEXT).expect("the embedded schema parses (tested)");
    schema
});

/// The source name of [`PolicySet::default_permit`].
pub const DEFAULT_SOURCE: &str = "<default>";

const DEFAULT_PERMIT: &str = r#"// Ferrid's default policy, in force while no [policy] is configured: every issuance
// and every exchange that passed Ferrid's structural checks is permitted.
@id("default-permit-issue")
permit(principal, action == Ferrid::Action::"issue", resource);

@id("default-permit-exchange")
permit(principal, action == Ferrid::Action::"exchange", resource);
"#;

/// One problem found while loading policies, located as precisely as Cedar allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file (or source name) the problem is in.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column (in characters), when known.
    pub column: Option<usize>,
    /// The policy concerned, when known (syntax errors have none).
    pub policy_id: Option<String>,
    /// What is wrong, with Cedar's hint when it gives one.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(id) = &self.policy_id {
            write!(f, ": policy `{id}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a policy set could not be loaded (or golden cases not read).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A directory holds no `*.cedar` file.
    #[error("{}: no *.cedar files", dir.display())]
    NoPolicyFiles {
        /// The directory.
        dir: PathBuf,
    },
    /// Syntax errors, schema violations and validator warnings (strict validation),
    /// duplicate policy IDs or templates; every problem found, in file order.
    #[error("{}", display_problems(problems))]
    Invalid {
        /// The problems, at least one.
        problems: Vec<Problem>,
    },
    /// A golden-cases document is not valid.
    #[error("cases: {0}")]
    Cases(String),
}

fn display_problems(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

/// The outcome of one decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The policies that determined the outcome: the permits that allowed it, the forbids
    /// that denied it, or, when evaluation failed, the policies that failed. Empty for a
    /// deny because no permit applied.
    pub determining_policies: Vec<String>,
    /// Evaluation errors; any error means deny.
    pub errors: Vec<String>,
    /// [`PolicySet::hash`] of the set that decided.
    pub policy_hash: String,
}

/// One policy source: a file, or text given directly.
#[derive(Debug, Clone)]
struct Source {
    /// The name used in policy IDs and in the hash: the file name, not its directory, so
    /// the same files hash alike wherever they are.
    name: String,
    /// Where it came from, for messages (the path as given).
    origin: String,
    text: String,
}

/// A validated set of Cedar policies, ready to decide.
pub struct PolicySet {
    /// Every policy (what was validated).
    policies: cedar_policy::PolicySet,
    /// The same policies, filed by action and credential ID.
    index: index::Index,
    authorizer: Authorizer,
    hash: String,
    count: usize,
}

impl fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicySet").field("policies", &self.count).field("hash", &self.hash).finish()
    }
}

impl PolicySet {
    /// Parses and validates policy text. `source_name` names it in errors, in policy IDs
    /// (`<source_name>#policy<N>` for the N-th policy, counted from 0, unless it has an
    /// `@id("…")` annotation) and in the hash.
    pub fn from_text(text: &str, source_name: &str) -> Result<PolicySet, PolicyError> {
        Self::from_sources(vec![Source {
            name: source_name.to_owned(),
            origin: source_name.to_owned(),
            text: text.to_owned(),
        }])
    }

    /// Loads a `.cedar` file, or every `*.cedar` file of a directory (not its
    /// subdirectories), in file-name order.
    pub fn load(path: impl AsRef<Path>) -> Result<PolicySet, PolicyError> {
        Self::from_sources(read_sources(path.as_ref())?)
    }

    /// The built-in set used when no `[policy]` is configured: it permits every `issue`
    /// and every `exchange` (delegation's structural checks are enforced elsewhere).
    /// Configuring policies replaces it entirely; it is not merged with them.
    pub fn default_permit() -> PolicySet {
        #[allow(clippy::expect_used)]
        Self::from_text(DEFAULT_PERMIT, DEFAULT_SOURCE).expect("the default policy validates (tested)")
    }

    fn from_sources(sources: Vec<Source>) -> Result<PolicySet, PolicyError> {
        let hash = canonical_hash(&sources);
        let mut problems = Vec::new();
        let mut set = cedar_policy::PolicySet::new();
        // Which source each policy came from, for locating validation errors.
        let mut origin_of: HashMap<PolicyId, usize> = HashMap::new();
        for (index, source) in sources.iter().enumerate() {
            let parsed = match cedar_policy::PolicySet::from_str(&source.text) {
                Ok(parsed) => parsed,
                Err(errors) => {
                    for e in errors.iter() {
                        problems.push(problem(source, None, e));
                    }
                    continue;
                }
            };
            if parsed.templates().next().is_some() {
                problems.push(Problem {
                    file: source.origin.clone(),
                    line: None,
                    column: None,
                    policy_id: None,
                    message: "templates (?principal, ?resource) are not supported; write static policies"
                        .into(),
                });
                continue;
            }
            // Policies in source order (Cedar numbers them policy0, policy1, …).
            let mut policies: Vec<_> = parsed.policies().collect();
            policies.sort_by_key(|p| {
                p.id().to_string().strip_prefix("policy").and_then(|n| n.parse::<usize>().ok())
            });
            for policy in policies {
                let id = match policy.annotation("id") {
                    Some(id) => id.to_owned(),
                    None => format!("{}#{}", source.name, policy.id()),
                };
                let id = PolicyId::new(&id);
                if let Some(&first) = origin_of.get(&id) {
                    problems.push(Problem {
                        file: source.origin.clone(),
                        line: None,
                        column: None,
                        policy_id: Some(id.to_string()),
                        message: format!("duplicate policy id (first in {})", sources[first].origin),
                    });
                    continue;
                }
                if let Err(e) = set.add(policy.new_id(id.clone())) {
                    problems.push(Problem {
                        file: source.origin.clone(),
                        line: None,
                        column: None,
                        policy_id: Some(id.to_string()),
                        message: e.to_string(),
                    });
                    continue;
                }
                origin_of.insert(id, index);
            }
        }
        if !problems.is_empty() {
            return Err(PolicyError::Invalid { problems });
        }

        let validator = Validator::new(SCHEMA.clone());
        let result = validator.validate(&set, ValidationMode::Strict);
        let locate = |id: &PolicyId, d: &dyn Diagnostic| match origin_of.get(id) {
            Some(&i) => problem(&sources[i], Some(id), d),
            None => Problem {
                file: "?".into(),
                line: None,
                column: None,
                policy_id: Some(id.to_string()),
                message: d.to_string(),
            },
        };
        // Warnings are refused too: they flag a policy that can never apply (a forbid
        // that silently protects nothing) or confusable Unicode in the text.
        let problems: Vec<Problem> = result
            .validation_errors()
            .map(|e| locate(e.policy_id(), e))
            .chain(result.validation_warnings().map(|w| locate(w.policy_id(), w)))
            .collect();
        if !problems.is_empty() {
            return Err(PolicyError::Invalid { problems: sorted(problems) });
        }
        let count = set.num_of_policies();
        let index = index::Index::build(&set).map_err(|message| PolicyError::Invalid {
            problems: vec![Problem { file: "?".into(), line: None, column: None, policy_id: None, message }],
        })?;
        Ok(PolicySet { policies: set, index, authorizer: Authorizer::new(), hash, count })
    }

    /// SHA-256 (hex) of the policy sources in file-name order: for each, its name, a NUL,
    /// its text's length in bytes as 8 little-endian bytes, then the text. Stable across
    /// reloads of identical files and across directories; recorded with every decision.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// How many policies the set holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the set holds no policy (then every request is denied).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Decides one request. Allowed only if some `permit` applies, no `forbid` applies,
    /// and no policy failed to evaluate (fail closed).
    pub fn decide(&self, request: &Request) -> Decision {
        self.decide_in(request, true)
    }

    /// Decides with the index (`indexed`), or by evaluating every policy (for tests
    /// that check the index changes no decision).
    fn decide_in(&self, request: &Request, indexed: bool) -> Decision {
        let deny = |determining_policies, errors| Decision {
            allowed: false,
            determining_policies,
            errors,
            policy_hash: self.hash.clone(),
        };
        let translated = match request.to_cedar() {
            Ok(t) => t,
            Err(e) => return deny(Vec::new(), vec![e]),
        };
        let sets: Vec<&cedar_policy::PolicySet> = if indexed {
            self.index
                .partition(request.action)
                .sets_for(&request.principal.spiffe_id, &request.resource.spiffe_id)
                .collect()
        } else {
            vec![&self.policies]
        };
        // The policies are partitioned; combine the parts' responses as Cedar would
        // combine the policies' results in one set: any error denies (fail closed, which
        // Cedar alone does not), then any satisfied forbid denies, then any satisfied
        // permit allows, else deny.
        let (mut permits, mut forbids, mut failed, mut errors) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for set in sets {
            let response = self.authorizer.is_authorized(&translated.request, set, &translated.entities);
            let diagnostics = response.diagnostics();
            for e in diagnostics.errors() {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = e;
                failed.push(e.policy_id().to_string());
                errors.push(e.to_string());
            }
            let reasons = diagnostics.reason().map(ToString::to_string);
            match response.decision() {
                cedar_policy::Decision::Allow => permits.extend(reasons),
                cedar_policy::Decision::Deny => forbids.extend(reasons),
            }
        }
        if !errors.is_empty() {
            failed.sort();
            errors.sort();
            return deny(failed, errors);
        }
        if !forbids.is_empty() || permits.is_empty() {
            forbids.sort();
            return deny(forbids, errors);
        }
        permits.sort();
        Decision { allowed: true, determining_policies: permits, errors, policy_hash: self.hash.clone() }
    }
}

fn sorted(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    problems
}

/// A problem located by the first labelled span of a Cedar diagnostic.
fn problem(source: &Source, id: Option<&PolicyId>, d: &dyn Diagnostic) -> Problem {
    let offset = d.labels().and_then(|mut labels| labels.next()).map(|l| l.offset());
    let (line, column) = match offset {
        Some(o) if o <= source.text.len() => {
            let (l, c) = line_column(&source.text, o);
            (Some(l), Some(c))
        }
        _ => (None, None),
    };
    let mut message = d.to_string();
    // The Problem names the policy already; drop Cedar's own "for policy `x`, ".
    if let Some(rest) = id.and_then(|id| message.strip_prefix(&format!("for policy `{id}`, "))) {
        message = rest.to_owned();
    }
    if let Some(help) = d.help() {
        message.push_str(&format!(" ({help})"));
    }
    Problem { file: source.origin.clone(), line, column, policy_id: id.map(ToString::to_string), message }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset;
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn canonical_hash(sources: &[Source]) -> String {
    let mut order: Vec<&Source> = sources.iter().collect();
    order.sort_by(|a, b| a.name.cmp(&b.name));
    let mut h = Sha256::new();
    for s in order {
        h.update(s.name.as_bytes());
        h.update([0u8]);
        h.update((s.text.len() as u64).to_le_bytes());
        h.update(s.text.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Reads a `.cedar` file, or a directory's `*.cedar` files in file-name order.
fn read_sources(path: &Path) -> Result<Vec<Source>, PolicyError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PolicyError::Io { path, source }
    };
    let meta = std::fs::metadata(path).map_err(io(path))?;
    let files: Vec<PathBuf> = if meta.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io(path))? {
            let entry = entry.map_err(io(path))?;
            let p = entry.path();
            // Regular files and symbolic links to them (as Kubernetes mounts ConfigMaps).
            if p.extension().is_some_and(|e| e == "cedar") && std::fs::metadata(&p).is_ok_and(|m| m.is_file())
            {
                files.push(p);
            }
        }
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        if files.is_empty() {
            return Err(PolicyError::NoPolicyFiles { dir: path.to_owned() });
        }
        files
    } else {
        vec![path.to_owned()]
    };
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).map_err(io(&p))?;
            let name =
                p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned());
            Ok(Source { name, origin: p.display().to_string(), text })
        })
        .collect()
}

/// The fingerprint of a policy path's current files: [`PolicySet::hash`] of what a load
/// would read now.
fn fingerprint(path: &Path) -> Result<(String, Vec<Source>), PolicyError> {
    let sources = read_sources(path)?;
    Ok((canonical_hash(&sources), sources))
}

#[cfg(test)]
mod tests;
