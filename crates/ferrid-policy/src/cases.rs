//! Golden cases: requests with the decision a policy set must give them.
use serde::{Deserialize, Serialize};

use crate::{Decision, PolicyError, PolicySet, Request};

/// The decision a case expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The request must be allowed.
    Allow,
    /// The request must be denied.
    Deny,
}

/// One case of a `CASES.json` document (a JSON array of these).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    request: Request,
    expect: Expect,
}

/// The outcome of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// What it expected.
    pub expect: Expect,
    /// Whether the decision matched.
    pub passed: bool,
    /// The decision, with its determining policies and errors.
    pub decision: Decision,
}

/// The outcome of a cases document against one policy set.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    /// The hash of the set the cases ran against.
    pub policy_hash: String,
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Every case, in document order.
    pub results: Vec<CaseResult>,
}

impl CaseReport {
    /// Whether every case passed.
    pub fn all_passed(&self) -> bool {
        self.failed == 0
    }

    /// The cases that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CaseResult> {
        self.results.iter().filter(|r| !r.passed)
    }
}

/// Runs every case of `cases_json` (`[{"name", "request", "expect": "allow"|"deny"}]`,
/// where `request` has the JSON shape of [`Request`]) against `set`. A document that
/// does not parse, names a field that does not exist, holds no case, or repeats a name
/// is an error.
pub fn run_cases(set: &PolicySet, cases_json: &str) -> Result<CaseReport, PolicyError> {
    let cases: Vec<Case> = serde_json::from_str(cases_json).map_err(|e| PolicyError::Cases(e.to_string()))?;
    if cases.is_empty() {
        return Err(PolicyError::Cases("no cases".into()));
    }
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        if !names.insert(c.name.as_str()) {
            return Err(PolicyError::Cases(format!("duplicate case name {:?}", c.name)));
        }
    }
    let results: Vec<CaseResult> = cases
        .into_iter()
        .map(|c| {
            let decision = set.decide(&c.request);
            let passed = decision.allowed == (c.expect == Expect::Allow);
            CaseResult { name: c.name, expect: c.expect, passed, decision }
        })
        .collect();
    let passed = results.iter().filter(|r| r.passed).count();
    Ok(CaseReport { policy_hash: set.hash().to_owned(), passed, failed: results.len() - passed, results })
}
