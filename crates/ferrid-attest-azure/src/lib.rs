//! The `azure` node attestor: a node agent on an Azure VM proves which VM it runs on
//! with an *attested document* from the Instance Metadata Service (IMDS), bound to a
//! nonce this server chose, and optionally with its managed identity's token.
//!
//! **Exchange.**
//!
//! 1. The agent sends `{}`, or `{"token": "<managed-identity access token>"}` when it
//!    is configured with a `resource` ([`agent::initial_payload`]).
//! 2. The server verifies the token (when `[azure.identity]` is configured, the token is
//!    required; otherwise a token is refused) and challenges the agent with
//!    `{"nonce": "<10 random digits>"}`.
//! 3. The agent answers with IMDS's response to
//!    `/metadata/attested/document?api-version=2020-09-01&nonce=<nonce>` verbatim:
//!    `{"encoding": "pkcs7", "signature": "<base64 PKCS#7>"}` ([`agent::respond`]).
//! 4. The server verifies the document ([`document::verify_document_with_aia`]:
//!    signature, chain to Microsoft's roots at the document's time — fetching a missing
//!    intermediate through the signer certificate's AIA URL, [`aia`] — the signer's
//!    name), then that its `nonce` is the one it chose, that it was created in the last
//!    [`MAX_DOCUMENT_AGE`] (and has not expired), and that its `subscriptionId` is
//!    allowed.
//!
//! **Agent ID**: `spiffe://<td>/ferrid/agent/azure/<subscription_id>/<vm_id>`. The
//! subscription, not the tenant: it is in every document, so the ID does not change
//! when `[azure.identity]` is turned on or off.
//!
//! **Selectors** (`azure:<value>`): `subscription:<id>`, `vm_id:<id>`; with a
//! managed-identity token also `tenant:<tid>`, `resource_group:<rg>` (of the identity:
//! for a system-assigned identity the VM's own) and `identity:<oid>` (the identity's
//! object ID).
//!
//! **Replay.** A document answers one nonce, so a captured document is useless to
//! anyone else: each is single-use by construction. On top of that, each VM attests
//! once (trust on first use, `replay_key azure:<subscription>:<vm_id>`, kept for ever)
//! unless `allow_reattestation`; then the key is `azure:nonce:<vm_id>:<nonce>`, kept
//! until the document expires, which also refuses a repeated nonce.
#![forbid(unsafe_code)]

pub mod agent;
pub mod aia;
pub mod document;
mod identity;

use std::path::PathBuf;
use std::sync::Arc;

use ferrid_attest::{AttestError, Attested, Challenger, MAX_PAYLOAD, NodeAttestor};
use ferrid_jwt::KeySet;
use serde::Deserialize;

pub use aia::DEFAULT_AIA_ALLOWED_HOSTS;
pub use document::{
    DEFAULT_ALLOWED_NAMES, Document, Trust, parse_response, verify_document, verify_document_with_aia,
};
pub use identity::{DEFAULT_AUTHORITY, DEFAULT_V1_ISSUER_BASE, IdentityConfig};

/// The attestor's name: selector type and agent-ID segment.
pub const NAME: &str = "azure";
/// `replay_expires_at` of trust-on-first-use records: 9999-12-31T23:59:59Z, i.e. never.
pub const TOFU_EXPIRES_AT: i64 = 253_402_300_799;
/// How old (by `timeStamp.createdOn`) a document may be when it reaches the server, in
/// seconds. The nonce makes it fresh; this bounds clock skew and the chain-time check.
pub const MAX_DOCUMENT_AGE: i64 = 300;

/// `[azure]` in the server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// Subscriptions whose VMs may attest. Required and non-empty: Microsoft signs a
    /// document for every VM of every customer.
    pub allowed_subscriptions: Vec<String>,
    /// Accepted names of the signing certificate (`name` or `*.suffix`); default
    /// [`DEFAULT_ALLOWED_NAMES`].
    #[serde(default = "default_names")]
    pub allowed_names: Vec<String>,
    /// PEM roots replacing the built-in ones (Baltimore CyberTrust Root, DigiCert
    /// Global Root G2).
    #[serde(default)]
    pub roots_file: Option<PathBuf>,
    /// PEM intermediates replacing the built-in ones (Microsoft RSA TLS CA 01,
    /// Microsoft Azure TLS Issuing CA 05, both expired in 2024). IMDS documents carry
    /// the leaf only, so the issuing CA of the current IMDS certificate must be here or
    /// be fetched (`fetch_intermediates`).
    #[serde(default)]
    pub intermediates_file: Option<PathBuf>,
    /// When the signer's issuer is not among the intermediates, fetch it from the URL in
    /// the signer certificate's Authority Information Access extension (caIssuers) and
    /// verify the chain again with it; trust still comes from the roots alone. Only URLs
    /// on `aia_allowed_hosts` are fetched (5 s timeout, 16 KiB at most, no redirects
    /// elsewhere); results are cached by URL (24 h once a chain verified with them) and a
    /// URL is fetched at most once a minute ([`aia`]). Default `true`; `false`: an
    /// unknown issuer is refused (`UnknownIssuer`).
    #[serde(default = "yes")]
    pub fetch_intermediates: bool,
    /// Hosts AIA URLs may point to: `host` (the scheme's default port) or `host:port`,
    /// exact match. Default [`DEFAULT_AIA_ALLOWED_HOSTS`] (`www.microsoft.com`,
    /// `caissuers.microsoft.com`, `cacerts.digicert.com`, `cacerts.digicert.cn`,
    /// `cacerts.geotrust.com`: Microsoft's list for Azure's CAs). Must not be empty while
    /// `fetch_intermediates` is on.
    #[serde(default = "default_aia_hosts")]
    pub aia_allowed_hosts: Vec<String>,
    /// Let a VM attest again. Default `false`: trust on first use, one attestation per
    /// VM, ever.
    #[serde(default)]
    pub allow_reattestation: bool,
    /// Also require a managed-identity token (`[azure.identity]`).
    #[serde(default)]
    pub identity: Option<IdentityConfig>,
}

impl Default for AzureConfig {
    fn default() -> Self {
        Self {
            allowed_subscriptions: Vec::new(),
            allowed_names: default_names(),
            roots_file: None,
            intermediates_file: None,
            fetch_intermediates: true,
            aia_allowed_hosts: default_aia_hosts(),
            allow_reattestation: false,
            identity: None,
        }
    }
}

fn default_names() -> Vec<String> {
    DEFAULT_ALLOWED_NAMES.iter().map(|s| (*s).to_owned()).collect()
}

fn default_aia_hosts() -> Vec<String> {
    DEFAULT_AIA_ALLOWED_HOSTS.iter().map(|s| (*s).to_owned()).collect()
}

fn yes() -> bool {
    true
}

/// Chooses the nonce of each attestation.
pub type NonceSource = Arc<dyn Fn() -> String + Send + Sync>;

/// Ten random decimal digits (IMDS documents the nonce as a 10-digit string).
pub fn random_nonce() -> String {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).expect("the system RNG works");
    format!("{:010}", u64::from_le_bytes(b) % 10_000_000_000)
}

/// The `azure` attestor.
pub struct AzureAttestor {
    trust: Trust,
    /// `None` with `fetch_intermediates = false`.
    aia: Option<aia::Fetcher>,
    subscriptions: Vec<String>,
    allow_reattestation: bool,
    identity: Option<identity::Verifier>,
    nonce: NonceSource,
}

impl std::fmt::Debug for AzureAttestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureAttestor")
            .field("subscriptions", &self.subscriptions)
            .field("allow_reattestation", &self.allow_reattestation)
            .field("fetch_intermediates", &self.aia.is_some())
            .field("identity", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

fn read(key: &str, p: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{key}: reading {}: {e}", p.display()))
}

impl AzureAttestor {
    /// Reads the certificate files and prepares the identity keys (nothing is fetched
    /// until the first token). Errors begin with the configuration key at fault.
    pub fn from_config(cfg: &AzureConfig) -> Result<Self, String> {
        Self::build(cfg, None)
    }

    /// Like [`Self::from_config`], with the identity token keys given (nothing is ever
    /// fetched; the identity key settings are ignored).
    pub fn with_identity_keys(cfg: &AzureConfig, keys: KeySet) -> Result<Self, String> {
        Self::build(cfg, Some(keys))
    }

    fn build(cfg: &AzureConfig, keys: Option<KeySet>) -> Result<Self, String> {
        if cfg.allowed_subscriptions.is_empty() {
            return Err("allowed_subscriptions: empty; no VM could attest".into());
        }
        if let Some(bad) = cfg.allowed_subscriptions.iter().find(|s| !valid_segment(s)) {
            return Err(format!("allowed_subscriptions: {bad:?} is not a subscription ID"));
        }
        let roots = match &cfg.roots_file {
            Some(p) => read("roots_file", p)?,
            None => document::BUILTIN_ROOTS.as_bytes().to_vec(),
        };
        let intermediates = match &cfg.intermediates_file {
            Some(p) => read("intermediates_file", p)?,
            None => document::BUILTIN_INTERMEDIATES.as_bytes().to_vec(),
        };
        let trust = Trust::from_pem(&roots, &intermediates, &cfg.allowed_names).map_err(|e| {
            if e.starts_with("roots") {
                format!("roots_file: {e}")
            } else if e.starts_with("intermediates") {
                format!("intermediates_file: {e}")
            } else {
                e
            }
        })?;
        let aia =
            if cfg.fetch_intermediates { Some(aia::Fetcher::new(&cfg.aia_allowed_hosts)?) } else { None };
        let identity = match &cfg.identity {
            Some(c) => Some(identity::Verifier::new(c, keys)?),
            None if keys.is_some() => {
                return Err("identity: keys given but [azure.identity] is not configured".into());
            }
            None => None,
        };
        Ok(Self {
            trust,
            aia,
            subscriptions: cfg.allowed_subscriptions.iter().map(|s| s.to_ascii_lowercase()).collect(),
            allow_reattestation: cfg.allow_reattestation,
            identity,
            nonce: Arc::new(random_nonce),
        })
    }

    /// Replaces the nonce source (tests: make the server choose a recorded document's
    /// nonce).
    pub fn with_nonce_source(mut self, nonce: NonceSource) -> Self {
        self.nonce = nonce;
        self
    }

    /// The AIA fetcher (`None` with `fetch_intermediates = false`): its cache and
    /// counters.
    pub fn aia(&self) -> Option<&aia::Fetcher> {
        self.aia.as_ref()
    }
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// The agent's first message.
#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct InitialPayload {
    /// The managed identity's access token, when the agent has a `resource`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The server's challenge.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Challenge {
    /// The nonce the attested document must carry.
    pub nonce: String,
}

#[async_trait::async_trait]
impl NodeAttestor for AzureAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn attest(
        &self,
        payload: &[u8],
        challenger: &mut dyn Challenger,
        now: time::OffsetDateTime,
    ) -> Result<Attested, AttestError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(AttestError::TooLarge { limit: MAX_PAYLOAD, got: payload.len() });
        }
        let now = now.unix_timestamp();
        let first: InitialPayload = serde_json::from_slice(payload)
            .map_err(|e| AttestError::Malformed(format!("expected {{}} or {{\"token\": ...}}: {e}")))?;
        let id = match (&self.identity, &first.token) {
            (Some(v), Some(t)) => Some(v.verify(t.trim(), now).await?),
            (Some(_), None) => {
                return Err(AttestError::Rejected(
                    "this server requires a managed identity token ([azure.identity]); set resource in the agent's [azure]"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(AttestError::Rejected(
                    "the agent sent a managed identity token but this server has no [azure.identity]; remove resource from the agent's [azure]"
                        .into(),
                ));
            }
            (None, None) => None,
        };

        let nonce = (self.nonce)();
        let challenge = serde_json::to_vec(&Challenge { nonce: nonce.clone() })
            .map_err(|e| AttestError::Internal(e.to_string()))?;
        let answer = challenger.challenge(challenge).await?;
        if answer.len() > MAX_PAYLOAD {
            return Err(AttestError::TooLarge { limit: MAX_PAYLOAD, got: answer.len() });
        }
        let der = parse_response(&answer)?;
        let doc = match &self.aia {
            Some(f) => verify_document_with_aia(&der, &self.trust, None, f, now).await?,
            None => verify_document(&der, &self.trust, None)?,
        };
        if doc.nonce.as_deref() != Some(nonce.as_str()) {
            return Err(AttestError::Rejected(format!(
                "attested document: its nonce {:?} is not the one this server chose",
                doc.nonce.as_deref().unwrap_or_default()
            )));
        }
        if now > doc.expires_on + 30 {
            return Err(AttestError::Expired(format!("attested document expired at {}", doc.expires_on)));
        }
        if now > doc.created_on + MAX_DOCUMENT_AGE || doc.created_on > now + MAX_DOCUMENT_AGE {
            return Err(AttestError::Rejected(format!(
                "attested document was created at {}, more than {MAX_DOCUMENT_AGE} s from now ({now}); check the clocks",
                doc.created_on
            )));
        }
        let subscription = doc
            .subscription_id
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                AttestError::Rejected(
                    "attested document has no subscriptionId (requested with an api-version before 2019-04-30?)".into(),
                )
            })?
            .to_ascii_lowercase();
        if !self.subscriptions.contains(&subscription) {
            return Err(AttestError::Rejected(format!(
                "subscription {subscription} is not in allowed_subscriptions"
            )));
        }
        let vm_id = doc.vm_id.to_ascii_lowercase();
        if !valid_segment(&vm_id) || !valid_segment(&subscription) {
            return Err(AttestError::Rejected(
                "attested document: vmId or subscriptionId is not a valid ID segment".into(),
            ));
        }
        let mut selectors = vec![format!("subscription:{subscription}"), format!("vm_id:{vm_id}")];
        if let Some(id) = &id {
            if let Some(s) = &id.vm_subscription
                && *s != subscription
            {
                return Err(AttestError::Rejected(format!(
                    "the managed identity belongs to a VM in subscription {s}, the document to one in {subscription}"
                )));
            }
            selectors.push(format!("tenant:{}", id.tenant));
            if let Some(rg) = &id.resource_group {
                selectors.push(format!("resource_group:{rg}"));
            }
            selectors.push(format!("identity:{}", id.object_id));
        }
        if let Some(bad) = selectors.iter().find(|s| s.len() > 1024 || s.chars().any(char::is_control)) {
            return Err(AttestError::Rejected(format!(
                "claim {:?} is too long or has control characters",
                bad.split(':').next().unwrap_or_default()
            )));
        }
        let (replay_key, replay_expires_at) = if self.allow_reattestation {
            (format!("{NAME}:nonce:{vm_id}:{nonce}"), doc.expires_on)
        } else {
            (format!("{NAME}:{subscription}:{vm_id}"), TOFU_EXPIRES_AT)
        };
        Ok(Attested {
            agent_path: vec![subscription, vm_id],
            selectors,
            can_reattest: self.allow_reattestation,
            replay_key: Some(replay_key),
            replay_expires_at,
            evidence_expires_at: None,
        })
    }
}
