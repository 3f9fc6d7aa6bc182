//! The managed-identity token: an Entra ID access token that IMDS issues the VM's
//! managed identity for a resource (`/metadata/identity/oauth2/token?resource=<R>`).
use std::collections::BTreeMap;
use std::path::PathBuf;

use ferrid_attest::AttestError;
use ferrid_jwt::remote::KeySource;
use ferrid_jwt::{Expectations, IssuerKeys, JwtError, KeySet, KeySetting, KeySettingError};
use serde::Deserialize;
use serde_json::Value;

/// Entra ID's public-cloud authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The issuer base of v1 access tokens (`https://sts.windows.net/<tenant>/`).
pub const DEFAULT_V1_ISSUER_BASE: &str = "https://sts.windows.net";

/// `[azure.identity]`: require a managed-identity token as well.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The resource (`aud`) the agents request their token for, e.g. `api://ferrid` or
    /// an application ID URI of your own. Required.
    pub resource: String,
    /// Tenants (`tid`, a GUID) whose identities may attest. Required and non-empty.
    pub allowed_tenants: Vec<String>,
    /// Entra ID's keys as a JWKS file, tried first.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Fetch the keys from this JWKS URL (e.g.
    /// `https://login.microsoftonline.com/common/discovery/v2.0/keys`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Fetch each allowed tenant's keys by OIDC discovery from
    /// `<authority>/<tenant>/v2.0`. Default: on unless `jwks_file` or `jwks_url` is set.
    #[serde(default)]
    pub oidc_discovery: Option<bool>,
    /// The Entra ID authority (default `https://login.microsoftonline.com`; e.g.
    /// `https://login.microsoftonline.us` in Azure Government).
    #[serde(default = "default_authority")]
    pub authority: String,
    /// The base of v1 token issuers (default `https://sts.windows.net`).
    #[serde(default = "default_v1_issuer_base")]
    pub v1_issuer_base: String,
    /// CA certificates (PEM) for HTTPS to Entra ID; the system roots when unset.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl IdentityConfig {
    /// A configuration for `resource` and `tenants`, keys by OIDC discovery.
    pub fn new(resource: &str, tenants: &[&str]) -> Self {
        Self {
            resource: resource.into(),
            allowed_tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
            jwks_file: None,
            jwks_url: None,
            oidc_discovery: None,
            authority: default_authority(),
            v1_issuer_base: default_v1_issuer_base(),
            ca_file: None,
        }
    }
}

fn default_authority() -> String {
    DEFAULT_AUTHORITY.to_owned()
}

fn default_v1_issuer_base() -> String {
    DEFAULT_V1_ISSUER_BASE.to_owned()
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) tenant: String,
    pub(crate) object_id: String,
    pub(crate) resource_group: Option<String>,
    /// The subscription of the VM whose system-assigned identity this is.
    pub(crate) vm_subscription: Option<String>,
}

/// The verifiers of the allowed tenants' tokens.
#[derive(Debug)]
enum Keys {
    /// One for every tenant: keys given, a JWKS file and/or one JWKS URL.
    Shared(Box<ferrid_jwt::Verifier>),
    /// By OIDC discovery: one per tenant (lowercase), each with the JWKS file's keys too.
    PerTenant(BTreeMap<String, ferrid_jwt::Verifier>),
}

#[derive(Debug)]
pub(crate) struct Verifier {
    keys: Keys,
    tenants: Vec<String>,
    authority: String,
    v1_issuer_base: String,
}

/// `e` under the `identity.` key at fault: discovery URLs are built from `authority`.
fn setting_error(e: KeySettingError) -> String {
    match e.setting {
        KeySetting::Discovery => format!("identity.authority: {}", e.message),
        _ => format!("identity.{e}"),
    }
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.bytes()
            .enumerate()
            .all(|(i, b)| if [8, 13, 18, 23].contains(&i) { b == b'-' } else { b.is_ascii_hexdigit() })
}

impl Verifier {
    pub(crate) fn new(c: &IdentityConfig, keys: Option<KeySet>) -> Result<Self, String> {
        if c.resource.is_empty() {
            return Err("identity.resource: must not be empty".into());
        }
        if c.allowed_tenants.is_empty() {
            return Err("identity.allowed_tenants: empty; no identity could attest".into());
        }
        if let Some(bad) = c.allowed_tenants.iter().find(|t| !is_guid(t)) {
            return Err(format!("identity.allowed_tenants: {bad:?} is not a tenant ID (a GUID)"));
        }
        let authority = c.authority.trim_end_matches('/').to_owned();
        let mut want = Expectations::new(None, Some(c.resource.clone()));
        want.algorithms = vec![jsonwebtoken::Algorithm::RS256];
        let keys = match keys {
            Some(k) => Keys::Shared(Box::new(
                ferrid_jwt::Verifier::with_keys(k, want).map_err(|e| format!("identity: {e}"))?,
            )),
            None => {
                let files = IssuerKeys { jwks_file: c.jwks_file.clone(), ..IssuerKeys::default() };
                let local = files.read_files().map_err(setting_error)?;
                let verifier = |fetch: Option<KeySource>| {
                    ferrid_jwt::Verifier::from_parts(local.clone(), fetch, c.ca_file.clone(), want.clone())
                        .map_err(setting_error)
                };
                let discovery = c.oidc_discovery.unwrap_or(c.jwks_file.is_none() && c.jwks_url.is_none());
                match (&c.jwks_url, discovery) {
                    (Some(_), true) => {
                        return Err("identity.oidc_discovery: set it or jwks_url, not both".into());
                    }
                    (Some(url), false) => {
                        Keys::Shared(Box::new(verifier(Some(KeySource::Jwks { url: url.clone() }))?))
                    }
                    (None, true) => Keys::PerTenant(
                        c.allowed_tenants
                            .iter()
                            .map(|t| {
                                let issuer = format!("{authority}/{t}/v2.0");
                                Ok((t.to_ascii_lowercase(), verifier(Some(KeySource::Discovery { issuer }))?))
                            })
                            .collect::<Result<_, String>>()?,
                    ),
                    (None, false) if local.is_empty() => {
                        return Err("identity: no keys (set jwks_file, jwks_url or oidc_discovery)".into());
                    }
                    (None, false) => Keys::Shared(Box::new(verifier(None)?)),
                }
            }
        };
        Ok(Self {
            keys,
            tenants: c.allowed_tenants.iter().map(|t| t.to_ascii_lowercase()).collect(),
            authority,
            v1_issuer_base: c.v1_issuer_base.trim_end_matches('/').to_owned(),
        })
    }

    pub(crate) async fn verify(&self, token: &str, now: i64) -> Result<Identity, AttestError> {
        if token.len() > ferrid_jwt::MAX_TOKEN_BYTES {
            return Err(AttestError::TooLarge { limit: ferrid_jwt::MAX_TOKEN_BYTES, got: token.len() });
        }
        // The tenant decides which keys to fetch: read it (unverified) first, so that
        // tokens of other tenants never make this server fetch anything.
        let tid = peek_tenant(token)?;
        if !self.tenants.contains(&tid) {
            return Err(AttestError::Rejected(format!(
                "managed identity token: tenant {tid} is not in allowed_tenants"
            )));
        }
        let verifier = match &self.keys {
            Keys::Shared(v) => v,
            Keys::PerTenant(by_tenant) => by_tenant
                .get(&tid)
                .ok_or_else(|| AttestError::Internal(format!("no verifier for tenant {tid}")))?,
        };
        let v = verifier.verify(token, now).await.map_err(jwt_error)?;
        let claim = |n: &str| v.str(n).filter(|s| !s.is_empty()).map(str::to_owned);
        let tenant =
            claim("tid").ok_or(AttestError::Rejected("managed identity token: no tid claim".into()))?;
        if tenant.to_ascii_lowercase() != tid {
            return Err(AttestError::Rejected(
                "managed identity token: tid changed under verification".into(),
            ));
        }
        let iss = claim("iss").unwrap_or_default();
        let v1 = format!("{}/{tenant}/", self.v1_issuer_base);
        let v2 = format!("{}/{tenant}/v2.0", self.authority);
        if iss != v1 && iss != v2 {
            return Err(AttestError::Rejected(format!(
                "managed identity token: issuer {iss:?} is neither {v1:?} nor {v2:?}"
            )));
        }
        let object_id =
            claim("oid").ok_or(AttestError::Rejected("managed identity token: no oid claim".into()))?;
        let mirid = claim("xms_mirid").ok_or(AttestError::Rejected(
            "managed identity token: no xms_mirid claim (not a managed identity's token?)".into(),
        ))?;
        let (subscription, resource_group, is_vm) = parse_mirid(&mirid).ok_or_else(|| {
            AttestError::Rejected("managed identity token: xms_mirid is not an Azure resource ID".into())
        })?;
        Ok(Identity {
            tenant: tenant.to_ascii_lowercase(),
            object_id,
            resource_group: Some(resource_group),
            vm_subscription: is_vm.then_some(subscription),
        })
    }
}

/// `/subscriptions/<s>/resourcegroups/<rg>/providers/<ns>/<type>/<name>` → (s, rg,
/// whether it is a VM).
fn parse_mirid(id: &str) -> Option<(String, String, bool)> {
    let parts: Vec<&str> = id.trim_start_matches('/').split('/').collect();
    if parts.len() < 8
        || !parts[0].eq_ignore_ascii_case("subscriptions")
        || !parts[2].eq_ignore_ascii_case("resourcegroups")
        || !parts[4].eq_ignore_ascii_case("providers")
        || parts.iter().any(|p| p.is_empty())
    {
        return None;
    }
    let is_vm = parts[5].eq_ignore_ascii_case("Microsoft.Compute")
        && parts[6].eq_ignore_ascii_case("virtualMachines");
    Some((parts[1].to_ascii_lowercase(), parts[3].to_owned(), is_vm))
}

fn peek_tenant(token: &str) -> Result<String, AttestError> {
    use base64::Engine;
    let bad = |m: &str| AttestError::Malformed(format!("managed identity token: {m}"));
    let mut parts = token.split('.');
    let (Some(_), Some(body), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not a JWT"));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body.trim_end_matches('='))
        .map_err(|_| bad("claims are not base64url"))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad("claims are not JSON"))?;
    v.get("tid")
        .and_then(Value::as_str)
        .filter(|t| is_guid(t))
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| AttestError::Rejected("managed identity token: no tenant (tid) claim".into()))
}

fn jwt_error(e: JwtError) -> AttestError {
    e.into_attest("managed identity token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_parse() {
        assert_eq!(
            parse_mirid(
                "/subscriptions/ABC/resourcegroups/web-rg/providers/Microsoft.Compute/virtualMachines/vm1"
            ),
            Some(("abc".into(), "web-rg".into(), true))
        );
        assert_eq!(
            parse_mirid(
                "/subscriptions/abc/resourceGroups/id-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/agent"
            ),
            Some(("abc".into(), "id-rg".into(), false))
        );
        assert_eq!(parse_mirid("/subscriptions/abc"), None);
        assert_eq!(parse_mirid("/subscriptions//resourcegroups/x/providers/a/b/c"), None);
        assert!(is_guid("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(!is_guid("72f988bf-86f1-41af-91ab-2d7cd011db4"));
    }
}
