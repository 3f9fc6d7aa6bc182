//! CI and OIDC attestors: a CI job (or anything else holding an OIDC ID token from an
//! issuer the server trusts) proves what it is with that token, and exchanges it
//! directly for an SVID, without a node agent.
//!
//! Three attestors share one implementation ([`CiAttestor`]):
//!
//! - **`github_actions`**: GitHub Actions job tokens
//!   (`iss https://token.actions.githubusercontent.com`, RS256). The repository owner
//!   must be in `allowed_owners`.
//! - **`gitlab_ci`**: GitLab CI `id_tokens` (`iss https://gitlab.com` or a self-managed
//!   instance, RS256). The namespace must be in (or under) `allowed_namespaces`. The
//!   legacy `CI_JOB_JWT` (v1, no `aud`, `iss gitlab.com`) is refused unless
//!   `accept_legacy_job_jwt` is set.
//! - **`oidc`**: any issuer (`[[oidc]]`, one table per provider), with a claim →
//!   selector mapping, claims that must have given values, and a template for the
//!   caller's attested ID.
//!
//! **What the server checks**, in order: size (≤ 16 KiB), the signature against the
//! issuer's keys (a JWKS file, and/or keys fetched by OIDC discovery or from a JWKS URL,
//! cached and refreshed on an unknown `kid`, rate limited; see `ferrid-jwt`), the
//! algorithm against an allow list (never `none`, never HMAC), `iss` exactly, `aud`
//! containing the configured audience, `exp`/`nbf`/`iat` with the configured leeway,
//! then the provider's allow list or required claims.
//!
//! **Replay**: every token is accepted once. The replay key is the token's `jti`
//! (`<attestor>:<issuer>:jti:<jti>`; GitHub and GitLab always send one), or, for an
//! `oidc` issuer whose tokens carry no `jti`, the SHA-256 of the token. The host keeps
//! the record until the token's `exp` plus the leeway.
//!
//! **Selectors** (`<attestor>:<name>:<value>`; claims that are absent give no selector):
//!
//! - `github_actions`: `repository`, `repository_id`, `repository_owner`,
//!   `repository_owner_id`, `repository_visibility`, `ref`, `ref_type`, `ref_protected`,
//!   `environment`, `workflow_ref`, `job_workflow_ref`, `event_name`,
//!   `runner_environment`, `actor`, `actor_id`, `sub`.
//! - `gitlab_ci`: `project_path`, `project_id`, `namespace_path`, `namespace_id`,
//!   `job_project_path`, `job_project_id`, `ref`, `ref_type`, `ref_protected`,
//!   `pipeline_source`, `environment`, `environment_protected`, `deployment_tier`,
//!   `user_login`, `user_id`, `sub`.
//! - `oidc`: `<provider>:sub:<sub>` and `<provider>:<selector>:<value>` for each mapped
//!   claim (an array claim gives one selector per string element).
//!
//! **Attested ID** (recorded with the exchange, never issued as an SVID):
//! `spiffe://<td>/ferrid/agent/github_actions/<owner>/<repo>/<run_id>`,
//! `…/gitlab_ci/<project_path…>/<job_id>`, `…/oidc/<provider>/<template>`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use ferrid_attest::{AttestError, Attested, Challenger, NodeAttestor};
use ferrid_jwt::{Expectations, IssuerKeys, KeySet, Verified, Verifier};
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::Value;
use sha2::Digest;

/// Name of the GitHub Actions attestor.
pub const GITHUB: &str = "github_actions";
/// Name of the GitLab CI attestor.
pub const GITLAB: &str = "gitlab_ci";
/// Name of the generic OIDC attestor.
pub const OIDC: &str = "oidc";
/// GitHub Actions' token issuer (github.com; GitHub Enterprise Server uses
/// `https://<host>/_services/token`).
pub const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";
/// GitLab.com's issuer (self-managed instances use their own URL).
pub const GITLAB_ISSUER: &str = "https://gitlab.com";
/// The audience jobs request their token for by default, and the server requires.
pub const DEFAULT_AUDIENCE: &str = "ferrid-server";
/// Default clock-skew leeway on `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

fn default_audience() -> String {
    DEFAULT_AUDIENCE.to_owned()
}
fn default_leeway() -> Duration {
    DEFAULT_LEEWAY
}
fn github_issuer() -> String {
    GITHUB_ISSUER.to_owned()
}
fn gitlab_issuer() -> String {
    GITLAB_ISSUER.to_owned()
}
fn default_template() -> String {
    "{sub}".to_owned()
}

/// `[github_actions]` in the server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHubConfig {
    /// Users and organisations whose repositories' jobs may exchange tokens
    /// (`repository_owner`, compared without regard to case). Required and non-empty.
    pub allowed_owners: Vec<String>,
    /// The token issuer (default [`GITHUB_ISSUER`]).
    #[serde(default = "github_issuer")]
    pub issuer: String,
    /// The audience jobs must request (`core.getIDToken(audience)`); default
    /// `ferrid-server`. Use a value unique to this server.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// GitHub's keys as a JWKS file, checked before fetched keys.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Where to fetch keys: unset = OIDC discovery from `issuer`; `""` = never fetch
    /// (only `jwks_file`); otherwise a JWKS URL.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// CA certificates (PEM) for HTTPS fetches; the system roots when unset.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Clock-skew leeway on `exp`, `nbf` and `iat` (default 30 s).
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
}

/// `[gitlab_ci]` in the server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitLabConfig {
    /// Groups and users whose projects' jobs may exchange tokens: `namespace_path` must
    /// equal one of these or lie under it (`acme` admits `acme/platform`). Required and
    /// non-empty.
    pub allowed_namespaces: Vec<String>,
    /// The instance's issuer URL (default [`GITLAB_ISSUER`]).
    #[serde(default = "gitlab_issuer")]
    pub issuer: String,
    /// The `aud` jobs must request in `id_tokens:` (default `ferrid-server`).
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Accept the deprecated `CI_JOB_JWT` (v1), which has no `aud`: any service the
    /// job hands it to could replay it here. Off by default; `issuer` must then be the
    /// bare host (`gitlab.com`) those tokens carry.
    #[serde(default)]
    pub accept_legacy_job_jwt: bool,
    /// GitLab's keys as a JWKS file, checked before fetched keys.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Where to fetch keys: unset = OIDC discovery from `issuer`; `""` = never fetch;
    /// otherwise a JWKS URL (`https://gitlab.com/oauth/discovery/keys`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// CA certificates (PEM) for HTTPS fetches; the system roots when unset.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Clock-skew leeway on `exp`, `nbf` and `iat` (default 30 s).
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
}

/// One `[[oidc]]` provider in the server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// The provider's name: a selector prefix and attested-ID segment
    /// (`[a-z0-9_-]`, e.g. `buildkite`).
    pub name: String,
    /// The issuer (`iss`), exactly.
    pub issuer: String,
    /// The audience tokens must be issued for (default `ferrid-server`).
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Selector name → claim name (`a.b` reaches into an object). Each present claim
    /// becomes `oidc:<provider>:<selector>:<value>`; `sub` is always a selector.
    #[serde(default)]
    pub selectors: BTreeMap<String, String>,
    /// Claim name → the value it must have, or the token is refused (an allow list:
    /// e.g. `organization_id = "1234"`).
    #[serde(default)]
    pub required_claims: BTreeMap<String, String>,
    /// Set to accept tokens without `required_claims`: only for an issuer whose every
    /// token is yours (your own IdP). Default `false`.
    #[serde(default)]
    pub allow_any_tenant: bool,
    /// The attested ID's path after `oidc/<provider>/`: `{claim}` placeholders; bytes
    /// that cannot be in a SPIFFE path become `_`. Default `{sub}`.
    #[serde(default = "default_template")]
    pub id_template: String,
    /// Accepted signing algorithms (default RS256, RS384, RS512, PS256, PS384, PS512,
    /// ES256, ES384, EdDSA). `none` and HMAC are refused.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// The issuer's keys as a JWKS file, checked before fetched keys.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Where to fetch keys: unset = OIDC discovery from `issuer`; `""` = never fetch;
    /// otherwise a JWKS URL.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// CA certificates (PEM) for HTTPS fetches; the system roots when unset.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Clock-skew leeway on `exp`, `nbf` and `iat` (default 30 s).
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
}

/// Claims each flavour turns into selectors, in the order listed.
const GITHUB_SELECTORS: &[&str] = &[
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "repository_visibility",
    "ref",
    "ref_type",
    "ref_protected",
    "environment",
    "workflow_ref",
    "job_workflow_ref",
    "event_name",
    "runner_environment",
    "actor",
    "actor_id",
    "sub",
];
const GITLAB_SELECTORS: &[&str] = &[
    "project_path",
    "project_id",
    "namespace_path",
    "namespace_id",
    "job_project_path",
    "job_project_id",
    "ref",
    "ref_type",
    "ref_protected",
    "pipeline_source",
    "environment",
    "environment_protected",
    "deployment_tier",
    "user_login",
    "user_id",
    "sub",
];

#[derive(Debug)]
enum Kind {
    GitHub {
        allowed_owners: Vec<String>,
    },
    GitLab {
        allowed_namespaces: Vec<String>,
        legacy: bool,
        audience: String,
    },
    Oidc {
        provider: String,
        selectors: BTreeMap<String, String>,
        required: BTreeMap<String, String>,
        template: Vec<Piece>,
    },
}

/// A parsed `id_template`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Claim(String),
}

fn parse_template(t: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push(Piece::Text(rest[..open].to_owned()));
        }
        let close =
            rest[open..].find('}').ok_or_else(|| format!("id_template: {t:?} has an unclosed '{{'"))?;
        let name = &rest[open + 1..open + close];
        if name.is_empty() || name.contains('{') {
            return Err(format!("id_template: {t:?} has an empty or nested placeholder"));
        }
        out.push(Piece::Claim(name.to_owned()));
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("id_template: {t:?} has an unmatched '}}'"));
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_owned()));
    }
    if out.is_empty() {
        return Err("id_template: must not be empty".into());
    }
    Ok(out)
}

/// A CI or OIDC attestor (`github_actions`, `gitlab_ci` or `oidc`).
#[derive(Debug)]
pub struct CiAttestor {
    name: &'static str,
    issuer: String,
    verifier: Verifier,
    leeway: i64,
    kind: Kind,
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

fn check_common(issuer: &str, audience: &str, leeway: Duration) -> Result<i64, String> {
    if issuer.is_empty() {
        return Err("issuer: must not be empty".into());
    }
    if audience.is_empty() {
        return Err("audience: must not be empty".into());
    }
    if leeway > Duration::from_secs(300) {
        return Err(format!("leeway: {} s is more than the 300 s allowed", leeway.as_secs()));
    }
    Ok(leeway.as_secs() as i64)
}

fn verifier(keys: Option<KeySet>, src: IssuerKeys, want: Expectations) -> Result<Verifier, String> {
    match keys {
        Some(k) => Verifier::with_keys(k, want),
        None => Verifier::new(&src, want),
    }
}

fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
    names
        .iter()
        .map(|n| {
            let a: Algorithm =
                n.parse().map_err(|_| format!("algorithms: {n:?} is not a JWS algorithm name"))?;
            if matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                return Err(format!(
                    "algorithms: {n} is an HMAC algorithm; only asymmetric algorithms can be verified with an issuer's public keys"
                ));
            }
            Ok(a)
        })
        .collect()
}

impl CiAttestor {
    /// The `github_actions` attestor. With `keys`, verifies against those keys only and
    /// never fetches (tests, air-gapped servers); otherwise per `jwks_file`/`jwks_url`.
    /// Errors name the configuration key at fault.
    pub fn github(cfg: &GitHubConfig, keys: Option<KeySet>) -> Result<Self, String> {
        let leeway = check_common(&cfg.issuer, &cfg.audience, cfg.leeway)?;
        if cfg.allowed_owners.is_empty() {
            return Err("allowed_owners: empty; no job could exchange a token".into());
        }
        if let Some(bad) = cfg.allowed_owners.iter().find(|o| o.is_empty() || o.contains('/')) {
            return Err(format!("allowed_owners: {bad:?} is not a user or organisation name"));
        }
        let mut want = Expectations::new(Some(cfg.issuer.clone()), Some(cfg.audience.clone()));
        want.algorithms = vec![Algorithm::RS256];
        want.leeway = leeway;
        let src = IssuerKeys::from_settings(
            &cfg.issuer,
            cfg.jwks_url.as_deref(),
            cfg.jwks_file.clone(),
            cfg.ca_file.clone(),
        );
        Ok(Self {
            name: GITHUB,
            issuer: cfg.issuer.clone(),
            verifier: verifier(keys, src, want)?,
            leeway,
            kind: Kind::GitHub { allowed_owners: cfg.allowed_owners.clone() },
        })
    }

    /// The `gitlab_ci` attestor (see [`CiAttestor::github`] for `keys`).
    pub fn gitlab(cfg: &GitLabConfig, keys: Option<KeySet>) -> Result<Self, String> {
        let leeway = check_common(&cfg.issuer, &cfg.audience, cfg.leeway)?;
        if cfg.allowed_namespaces.is_empty() {
            return Err("allowed_namespaces: empty; no job could exchange a token".into());
        }
        if let Some(bad) =
            cfg.allowed_namespaces.iter().find(|n| n.is_empty() || n.starts_with('/') || n.ends_with('/'))
        {
            return Err(format!(
                "allowed_namespaces: {bad:?} is not a namespace path (e.g. acme or acme/platform)"
            ));
        }
        if !cfg.issuer.contains("://") && cfg.jwks_url.is_none() {
            return Err(format!(
                "jwks_url: the issuer {:?} is not a URL, so its keys cannot be discovered; set jwks_url (gitlab.com: \"https://gitlab.com/oauth/discovery/keys\") or jwks_file",
                cfg.issuer
            ));
        }
        // The audience is checked here rather than by the verifier so that a legacy
        // token (no `aud`) can be told apart from a token for another audience.
        let mut want = Expectations::new(Some(cfg.issuer.clone()), None);
        want.algorithms = vec![Algorithm::RS256];
        want.leeway = leeway;
        let src = IssuerKeys::from_settings(
            &cfg.issuer,
            cfg.jwks_url.as_deref(),
            cfg.jwks_file.clone(),
            cfg.ca_file.clone(),
        );
        Ok(Self {
            name: GITLAB,
            issuer: cfg.issuer.clone(),
            verifier: verifier(keys, src, want)?,
            leeway,
            kind: Kind::GitLab {
                allowed_namespaces: cfg.allowed_namespaces.clone(),
                legacy: cfg.accept_legacy_job_jwt,
                audience: cfg.audience.clone(),
            },
        })
    }

    /// An `oidc` provider (see [`CiAttestor::github`] for `keys`).
    pub fn oidc(cfg: &OidcProviderConfig, keys: Option<KeySet>) -> Result<Self, String> {
        let leeway = check_common(&cfg.issuer, &cfg.audience, cfg.leeway)?;
        if cfg.name.is_empty()
            || !cfg
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(format!("name: {:?} must be non-empty [a-z0-9_-]", cfg.name));
        }
        if cfg.required_claims.is_empty() && !cfg.allow_any_tenant {
            return Err(
                "required_claims: empty; on a shared issuer any tenant could match your entries. Name the claims that fence your tenant (e.g. organization_id), or set allow_any_tenant = true for an issuer only you use"
                    .into(),
            );
        }
        if [GITHUB_ISSUER, GITLAB_ISSUER].contains(&cfg.issuer.trim_end_matches('/')) {
            return Err(format!(
                "issuer: {:?} has its own attestor ([github_actions] / [gitlab_ci]) with an owner or namespace allow list; use that",
                cfg.issuer
            ));
        }
        for (sel, claim) in &cfg.selectors {
            if sel == "sub" {
                return Err("selectors: \"sub\" is reserved (every token's sub is always a selector)".into());
            }
            if sel.is_empty() || sel.contains(':') || sel.chars().any(char::is_control) {
                return Err(format!("selectors: {sel:?} is not a selector name (no ':')"));
            }
            if claim.is_empty() {
                return Err(format!("selectors.{sel}: the claim name is empty"));
            }
        }
        let template = parse_template(&cfg.id_template)?;
        let mut want = Expectations::new(Some(cfg.issuer.clone()), Some(cfg.audience.clone()));
        if !cfg.algorithms.is_empty() {
            want.algorithms = parse_algorithms(&cfg.algorithms)?;
        }
        want.leeway = leeway;
        let src = IssuerKeys::from_settings(
            &cfg.issuer,
            cfg.jwks_url.as_deref(),
            cfg.jwks_file.clone(),
            cfg.ca_file.clone(),
        );
        Ok(Self {
            name: OIDC,
            issuer: cfg.issuer.clone(),
            verifier: verifier(keys, src, want)?,
            leeway,
            kind: Kind::Oidc {
                provider: cfg.name.clone(),
                selectors: cfg.selectors.clone(),
                required: cfg.required_claims.clone(),
                template,
            },
        })
    }

    /// The issuer whose tokens this attestor verifies (the host routes tokens by `iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `oidc` provider's name; `None` for GitHub and GitLab.
    pub fn provider(&self) -> Option<&str> {
        match &self.kind {
            Kind::Oidc { provider, .. } => Some(provider),
            _ => None,
        }
    }

    /// The verifier (its fetched-key cache, for tests and metrics).
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    fn what(&self) -> String {
        match &self.kind {
            Kind::GitHub { .. } => "GitHub Actions token".into(),
            Kind::GitLab { .. } => "GitLab CI token".into(),
            Kind::Oidc { provider, .. } => format!("OIDC token ({provider})"),
        }
    }

    fn rejected(&self, why: impl std::fmt::Display) -> AttestError {
        AttestError::Rejected(format!("{}: {why}", self.what()))
    }
}

/// A claim as selector values: strings as they are, numbers and booleans as JSON
/// writes them, arrays element by element; objects and nulls give nothing.
fn claim_values(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        Some(Value::Number(n)) => vec![n.to_string()],
        Some(Value::Bool(b)) => vec![b.to_string()],
        Some(Value::Array(a)) => a.iter().flat_map(|e| claim_values(Some(e))).collect(),
        _ => Vec::new(),
    }
}

/// A claim by name, reaching into objects with dots (`a.b`).
fn claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    name.split('.').try_fold(claims, |v, part| v.get(part))
}

/// A single-valued string claim.
fn text(claims: &Value, name: &str) -> Option<String> {
    match claim(claims, name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Splits `path` on '/' into SPIFFE path segments, or says which claim is unusable.
fn segments(what: &str, path: &str) -> Result<Vec<String>, String> {
    let parts: Vec<String> = path.split('/').map(str::to_owned).collect();
    if parts.iter().all(|p| valid_segment(p)) {
        Ok(parts)
    } else {
        Err(format!(
            "{what} {path:?} cannot be part of an attested ID (letters, digits, '-', '.', '_' between '/')"
        ))
    }
}

/// `path` as SPIFFE path segments, every byte outside `[A-Za-z0-9._-]` replaced by
/// `_` and `.`/`..`/empty segments by `_`: the attested ID is recorded, never issued,
/// so a readable approximation beats refusing a token whose `sub` has `:` or `@`.
fn sanitized_segments(path: &str) -> Vec<String> {
    path.split('/')
        .map(|seg| {
            let s: String = seg
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || "-._".contains(c) { c } else { '_' })
                .collect();
            if s.is_empty() || s == "." || s == ".." { "_".to_owned() } else { s }
        })
        .collect()
}

impl CiAttestor {
    fn no_bad_claim(&self, bad: Option<String>) -> Result<(), AttestError> {
        match bad {
            None => Ok(()),
            Some(name) => Err(self.rejected(format!(
                "claim {name} has a value that cannot be a selector (empty, control characters or too long)"
            ))),
        }
    }

    fn selectors_and_path(&self, v: &Verified) -> Result<(Vec<String>, Vec<String>), AttestError> {
        let c = &v.claims;
        let need =
            |name: &'static str| text(c, name).ok_or_else(|| self.rejected(format!("no {name} claim")));
        let mut selectors = Vec::new();
        let mut bad_claim = None;
        let mut push = |name: &str, values: Vec<String>| {
            for val in values {
                let sel = format!("{name}:{val}");
                if ferrid_types::Selector::new(self.name, sel.clone()).is_ok() {
                    selectors.push(sel);
                } else {
                    bad_claim.get_or_insert_with(|| name.to_owned());
                }
            }
        };
        match &self.kind {
            Kind::GitHub { allowed_owners } => {
                let owner = need("repository_owner")?;
                if !allowed_owners.iter().any(|o| o.eq_ignore_ascii_case(&owner)) {
                    return Err(self.rejected(format!("repository owner {owner:?} is not in allowed_owners")));
                }
                let repository = need("repository")?;
                if !repository.to_ascii_lowercase().starts_with(&format!("{}/", owner.to_ascii_lowercase())) {
                    return Err(self.rejected(format!(
                        "repository {repository:?} does not belong to repository_owner {owner:?}"
                    )));
                }
                for name in GITHUB_SELECTORS {
                    push(name, claim_values(c.get(*name)));
                }
                let mut path = segments("repository", &repository).map_err(|e| self.rejected(e))?;
                path.extend(segments("run_id", &need("run_id")?).map_err(|e| self.rejected(e))?);
                self.no_bad_claim(bad_claim)?;
                Ok((selectors, path))
            }
            Kind::GitLab { allowed_namespaces, legacy, audience } => {
                match c.get("aud") {
                    None if *legacy => {}
                    None => {
                        return Err(self.rejected(
                            "no aud claim (a legacy CI_JOB_JWT? use id_tokens: with an aud, or set accept_legacy_job_jwt)",
                        ));
                    }
                    Some(aud) => {
                        let got = claim_values(Some(aud));
                        if !got.iter().any(|a| a == audience) {
                            return Err(AttestError::Rejected(format!(
                                "{}: {}",
                                self.what(),
                                ferrid_jwt::JwtError::WrongAudience { got, want: audience.clone() }
                            )));
                        }
                    }
                }
                let ns = need("namespace_path")?;
                if !allowed_namespaces.iter().any(|a| ns == *a || ns.starts_with(&format!("{a}/"))) {
                    return Err(self.rejected(format!("namespace {ns:?} is not in allowed_namespaces")));
                }
                for name in GITLAB_SELECTORS {
                    push(name, claim_values(c.get(*name)));
                }
                let mut path =
                    segments("project_path", &need("project_path")?).map_err(|e| self.rejected(e))?;
                path.extend(segments("job_id", &need("job_id")?).map_err(|e| self.rejected(e))?);
                Ok((selectors, path))
            }
            Kind::Oidc { provider, selectors: map, required, template } => {
                for (name, want) in required {
                    match text(c, name) {
                        Some(got) if got == *want => {}
                        Some(got) => {
                            return Err(self.rejected(format!(
                                "claim {name} is {got:?}, required_claims wants {want:?}"
                            )));
                        }
                        None => {
                            return Err(
                                self.rejected(format!("claim {name} (in required_claims) is missing"))
                            );
                        }
                    }
                }
                let sub = need("sub")?;
                push(&format!("{provider}:sub"), vec![sub]);
                for (sel, name) in map {
                    push(&format!("{provider}:{sel}"), claim_values(claim(c, name)));
                }
                let mut path = vec![provider.clone()];
                let mut rendered = String::new();
                for p in template {
                    match p {
                        Piece::Text(t) => rendered.push_str(t),
                        Piece::Claim(name) => rendered.push_str(&text(c, name).ok_or_else(|| {
                            self.rejected(format!("claim {name} (in id_template) is missing"))
                        })?),
                    }
                }
                path.extend(sanitized_segments(&rendered));
                self.no_bad_claim(bad_claim)?;
                Ok((selectors, path))
            }
        }
    }
}

#[async_trait::async_trait]
impl NodeAttestor for CiAttestor {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn attest(
        &self,
        payload: &[u8],
        _challenger: &mut dyn Challenger,
        now: time::OffsetDateTime,
    ) -> Result<Attested, AttestError> {
        let token = ferrid_jwt::token_payload(payload, &self.what())?;
        let now = now.unix_timestamp();
        let v = self.verifier.verify(token, now).await.map_err(|e| e.into_attest(&self.what()))?;
        let exp = v.int("exp").ok_or_else(|| self.rejected("no exp claim"))?;
        let (selectors, agent_path) = self.selectors_and_path(&v)?;
        let replay_key = match (v.str("jti"), &self.kind) {
            (Some(jti), _) if !jti.is_empty() => format!("{}:{}:jti:{jti}", self.name, self.issuer),
            (_, Kind::Oidc { .. }) => {
                // Over header and claims only: an ECDSA signature can be re-encoded
                // (s -> n - s) into a second valid token with the same content.
                let signed = token.rsplit_once('.').map_or(token, |(input, _)| input);
                format!("{}:{}:sha256:{}", self.name, self.issuer, hex::encode(sha2::Sha256::digest(signed)))
            }
            _ => return Err(self.rejected("no jti claim; the token could not be accepted only once")),
        };
        Ok(Attested {
            agent_path,
            selectors,
            can_reattest: true,
            replay_key: Some(replay_key),
            replay_expires_at: exp.saturating_add(self.leeway),
            evidence_expires_at: Some(exp),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_refuse_broken_braces() {
        assert_eq!(
            parse_template("ci/{repo}/{sub}").unwrap(),
            vec![
                Piece::Text("ci/".into()),
                Piece::Claim("repo".into()),
                Piece::Text("/".into()),
                Piece::Claim("sub".into())
            ]
        );
        for bad in ["", "{", "{}", "a}", "{a{b}}", "x/{y"] {
            assert!(parse_template(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn claims_become_selector_values() {
        let c =
            serde_json::json!({"s": "x", "n": 7, "b": true, "a": ["p", "q", 1], "o": {"k": "v"}, "e": ""});
        assert_eq!(claim_values(c.get("s")), ["x"]);
        assert_eq!(claim_values(c.get("n")), ["7"]);
        assert_eq!(claim_values(c.get("b")), ["true"]);
        assert_eq!(claim_values(c.get("a")), ["p", "q", "1"]);
        assert!(claim_values(c.get("o")).is_empty());
        assert!(claim_values(c.get("e")).is_empty());
        assert_eq!(text(&c, "o.k").as_deref(), Some("v"));
    }

    #[test]
    fn attested_paths_refuse_unusable_segments() {
        assert_eq!(segments("x", "acme/app").unwrap(), ["acme", "app"]);
        for bad in ["", "a//b", "a/../b", "a b", "user@host", "/a"] {
            assert!(segments("x", bad).is_err(), "{bad:?}");
        }
    }
}
