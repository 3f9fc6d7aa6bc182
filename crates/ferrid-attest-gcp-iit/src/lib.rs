//! The `gcp_iit` node attestor: a node agent on a Compute Engine VM proves which instance
//! it runs on with the instance identity token the metadata server issues it.
//!
//! **What the agent sends.** The payload is the token itself (compact JWS, UTF-8): the
//! `format=full` identity token for this server's audience, fetched from
//! `/computeMetadata/v1/instance/service-accounts/<sa>/identity` (see [`agent`]).
//!
//! **What the server checks.**
//!
//! 1. The RS256 signature against Google's keys: a JWKS file and/or the JWKS at
//!    `https://www.googleapis.com/oauth2/v3/certs` (fetched on first use, cached for an
//!    hour, refreshed on an unknown `kid` at most every 30 s; see `ferrid-jwt`). Only
//!    RS256 is accepted: Google signs instance tokens with nothing else, so `none`, HMAC
//!    (a public key used as an HMAC secret) and every other algorithm are refused.
//! 2. `iss` is `https://accounts.google.com` (or `accounts.google.com`, which Google's
//!    OpenID documentation also allows), `aud` is this server's audience, `exp`/`iat`
//!    on the server's clock (30 s leeway).
//! 3. The token carries the `google.compute_engine` claims (a `format=standard` token
//!    does not, and is refused), and `project_id` is on the allow list.
//! 4. When `max_instance_age` is set, the instance was created no longer ago than that
//!    (`instance_creation_timestamp`).
//! 5. Trust on first use: each instance attests once (`replay_key
//!    gcp_iit:<project>:<instance_id>`, kept for ever) unless `allow_reattestation`.
//!
//! **Agent ID**: `spiffe://<td>/ferrid/agent/gcp_iit/<project_id>/<zone>/<instance_id>`.
//!
//! **Selectors** (`gcp_iit:<value>`): `project_id:<id>`, `project_number:<n>`,
//! `zone:<zone>`, `instance_name:<name>`, `instance_id:<id>`, and
//! `service_account:<email>` (the token's `email`: the service account the agent asked a
//! token of).
#![forbid(unsafe_code)]

pub mod agent;

use std::path::PathBuf;
use std::time::Duration;

use ferrid_attest::{AttestError, Attested, Challenger, NodeAttestor};
use ferrid_jwt::remote::KeySource;
use ferrid_jwt::{Expectations, IssuerKeys, JwtError, KeySet, Verifier};
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::Value;

/// The attestor's name: selector type and agent-ID segment.
pub const NAME: &str = "gcp_iit";
/// Google's JWKS for the keys that sign instance identity tokens.
pub const GOOGLE_CERTS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
/// The `iss` of instance identity tokens.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
/// The default audience agents request their token for, and the server requires.
pub const DEFAULT_AUDIENCE: &str = "ferrid-server";
/// `replay_expires_at` of trust-on-first-use records: 9999-12-31T23:59:59Z, i.e. never.
pub const TOFU_EXPIRES_AT: i64 = 253_402_300_799;

/// `[gcp_iit]` in the server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpIitConfig {
    /// Projects whose instances may attest (`project_id`s). Required and non-empty.
    pub allowed_projects: Vec<String>,
    /// The audience tokens must be issued for (default `ferrid-server`). Use a value
    /// unique to this server (e.g. its URL) so that a token minted for another service
    /// cannot be presented here.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Google's keys as a JWKS file (a saved copy of [`GOOGLE_CERTS_URL`]), checked
    /// before the remote keys.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Where to fetch Google's keys (default [`GOOGLE_CERTS_URL`]); `""` turns fetching
    /// off, leaving only `jwks_file`.
    #[serde(default = "default_jwks_url")]
    pub jwks_url: String,
    /// CA certificates (PEM) for HTTPS to `jwks_url`; the system roots when unset.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Refuse instances created longer ago than this (from the token's
    /// `instance_creation_timestamp`). Default: unset, no limit.
    #[serde(default, with = "humantime_serde")]
    pub max_instance_age: Option<Duration>,
    /// Let an instance attest again (a new agent SVID after the old one expired or the
    /// agent's state was lost). Default `false`: trust on first use, one attestation per
    /// instance ID, ever.
    #[serde(default)]
    pub allow_reattestation: bool,
}

impl Default for GcpIitConfig {
    fn default() -> Self {
        Self {
            allowed_projects: Vec::new(),
            audience: default_audience(),
            jwks_file: None,
            jwks_url: default_jwks_url(),
            ca_file: None,
            max_instance_age: None,
            allow_reattestation: false,
        }
    }
}

fn default_audience() -> String {
    DEFAULT_AUDIENCE.to_owned()
}

fn default_jwks_url() -> String {
    GOOGLE_CERTS_URL.to_owned()
}

/// The `gcp_iit` attestor.
#[derive(Debug)]
pub struct GcpIitAttestor {
    verifier: Verifier,
    allowed_projects: Vec<String>,
    max_instance_age: Option<Duration>,
    allow_reattestation: bool,
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

impl GcpIitAttestor {
    /// Reads `jwks_file` and prepares fetching from `jwks_url` (nothing is fetched until
    /// the first attestation). Errors name the configuration key at fault.
    pub fn from_config(cfg: &GcpIitConfig) -> Result<Self, String> {
        // Google's JWKS is fetched from its URL directly, not by discovery.
        let src = IssuerKeys {
            jwks_file: cfg.jwks_file.clone(),
            fetch: (!cfg.jwks_url.is_empty()).then(|| KeySource::Jwks { url: cfg.jwks_url.clone() }),
            ca_file: cfg.ca_file.clone(),
            ..IssuerKeys::default()
        };
        Self::build(cfg, |want| Verifier::new(&src, want))
    }

    /// The attestor with the given keys only: `jwks_file`, `jwks_url` and `ca_file` are
    /// ignored, nothing is ever fetched (tests, air-gapped servers).
    pub fn with_keys(cfg: &GcpIitConfig, keys: KeySet) -> Result<Self, String> {
        Self::build(cfg, |want| Verifier::with_keys(keys, want))
    }

    fn build(
        cfg: &GcpIitConfig,
        verifier: impl FnOnce(Expectations) -> Result<Verifier, String>,
    ) -> Result<Self, String> {
        // Only RS256; the issuer is checked after verification (Google uses two forms).
        let mut want = Expectations::new(None, Some(cfg.audience.clone()));
        want.algorithms = vec![Algorithm::RS256];
        let verifier = verifier(want)?;
        if cfg.allowed_projects.is_empty() {
            return Err("allowed_projects: empty; no instance could attest".into());
        }
        if let Some(bad) = cfg.allowed_projects.iter().find(|p| p.is_empty() || !valid_segment(p)) {
            return Err(format!(
                "allowed_projects: {bad:?} is not a project ID usable in an agent ID (letters, digits, '-', '.', '_')"
            ));
        }
        if cfg.audience.is_empty() {
            return Err("audience: must not be empty".into());
        }
        if cfg.max_instance_age == Some(Duration::ZERO) {
            return Err("max_instance_age: 0 would refuse every instance; leave it unset for no limit".into());
        }
        Ok(Self {
            verifier,
            allowed_projects: cfg.allowed_projects.clone(),
            max_instance_age: cfg.max_instance_age,
            allow_reattestation: cfg.allow_reattestation,
        })
    }

    async fn verify(&self, token: &str, now: i64) -> Result<Value, AttestError> {
        let v = self.verifier.verify(token, now).await.map_err(jwt_error)?;
        match v.str("iss") {
            Some(GOOGLE_ISSUER | "accounts.google.com") => Ok(v.claims),
            Some(other) => Err(AttestError::Rejected(format!(
                "identity token: issuer {other:?} is not {GOOGLE_ISSUER:?}"
            ))),
            None => Err(AttestError::Rejected("identity token: no iss claim".into())),
        }
    }
}

fn jwt_error(e: JwtError) -> AttestError {
    e.into_attest("identity token")
}

/// The instance a verified token describes.
#[derive(Debug)]
struct Instance {
    project_id: String,
    project_number: Option<String>,
    zone: String,
    instance_id: String,
    instance_name: Option<String>,
    created_at: Option<i64>,
    email: Option<String>,
}

/// A claim that Google writes as a string or a number, as a string.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn instance(claims: &Value) -> Result<Instance, AttestError> {
    let ce = claims.get("google").and_then(|g| g.get("compute_engine")).ok_or_else(|| {
        AttestError::Rejected(
            "identity token has no google.compute_engine claims (a format=standard token? the agent must request format=full)"
                .into(),
        )
    })?;
    if !ce.is_object() {
        return Err(AttestError::Rejected("identity token: google.compute_engine is not an object".into()));
    }
    let need = |name: &'static str| {
        text(ce.get(name)).ok_or_else(|| {
            AttestError::Rejected(format!("identity token: google.compute_engine.{name} is missing"))
        })
    };
    let created_at = match ce.get("instance_creation_timestamp") {
        None => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| {
            AttestError::Rejected(
                "identity token: google.compute_engine.instance_creation_timestamp is not an integer".into(),
            )
        })?),
    };
    Ok(Instance {
        project_id: need("project_id")?,
        project_number: text(ce.get("project_number")),
        zone: need("zone")?,
        instance_id: need("instance_id")?,
        instance_name: text(ce.get("instance_name")),
        created_at,
        email: text(claims.get("email")),
    })
}

#[async_trait::async_trait]
impl NodeAttestor for GcpIitAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn attest(
        &self,
        payload: &[u8],
        _challenger: &mut dyn Challenger,
        now: time::OffsetDateTime,
    ) -> Result<Attested, AttestError> {
        let token = ferrid_jwt::token_payload(payload, "identity token")?;
        let now = now.unix_timestamp();
        let claims = self.verify(token, now).await?;
        let i = instance(&claims)?;
        if !self.allowed_projects.contains(&i.project_id) {
            return Err(AttestError::Rejected(format!(
                "project {:?} is not in allowed_projects",
                i.project_id
            )));
        }
        if let Some(max) = self.max_instance_age {
            let created = i.created_at.ok_or_else(|| {
                AttestError::Rejected(
                    "identity token has no instance_creation_timestamp, and max_instance_age is set".into(),
                )
            })?;
            let age = now.saturating_sub(created);
            if age > i64::try_from(max.as_secs()).unwrap_or(i64::MAX) {
                return Err(AttestError::Rejected(format!(
                    "instance {} was created {age} s ago, over max_instance_age ({} s)",
                    i.instance_id,
                    max.as_secs()
                )));
            }
        }
        // The zone claim is the zone's name (`us-central1-a`); tolerate the
        // `projects/<n>/zones/<zone>` form of the metadata server's `zone` attribute.
        let zone = i.zone.rsplit('/').next().unwrap_or_default().to_owned();
        for (what, v) in [("project_id", &i.project_id), ("zone", &zone), ("instance_id", &i.instance_id)] {
            if !valid_segment(v) {
                return Err(AttestError::Rejected(format!(
                    "identity token: {what} {v:?} cannot be part of an agent ID (letters, digits, '-', '.', '_'; domain-scoped projects are not supported)"
                )));
            }
        }
        let mut selectors = vec![format!("project_id:{}", i.project_id)];
        if let Some(n) = &i.project_number {
            selectors.push(format!("project_number:{n}"));
        }
        selectors.push(format!("zone:{zone}"));
        if let Some(n) = &i.instance_name {
            selectors.push(format!("instance_name:{n}"));
        }
        selectors.push(format!("instance_id:{}", i.instance_id));
        if let Some(e) = &i.email {
            selectors.push(format!("service_account:{e}"));
        }
        if let Some(bad) = selectors.iter().find(|s| s.len() > 1024 || s.chars().any(char::is_control)) {
            return Err(AttestError::Rejected(format!(
                "identity token: claim {:?} is too long or has control characters",
                bad.split(':').next().unwrap_or_default()
            )));
        }
        let replay_key = format!("{NAME}:{}:{}", i.project_id, i.instance_id);
        Ok(Attested {
            agent_path: vec![i.project_id, zone, i.instance_id],
            selectors,
            can_reattest: self.allow_reattestation,
            replay_key: (!self.allow_reattestation).then_some(replay_key),
            replay_expires_at: if self.allow_reattestation { 0 } else { TOFU_EXPIRES_AT },
            evidence_expires_at: None,
        })
    }
}
