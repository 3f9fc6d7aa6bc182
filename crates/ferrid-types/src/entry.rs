use std::collections::BTreeMap;
use std::fmt;

use spiffe::{SpiffeId, TrustDomain};

use crate::Selector;

/// Maximum selectors on one entry.
pub const MAX_SELECTORS: usize = 64;
/// Maximum DNS names on one entry.
pub const MAX_DNS_NAMES: usize = 64;
/// Maximum metadata keys on one entry.
pub const MAX_METADATA_ENTRIES: usize = 64;

/// A registration entry's server-generated identifier (a UUID v4 string).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct EntryId(pub String);

/// Maps keyed by `EntryId` can be queried with a `&str` (the derived `Hash`, `Eq` and
/// `Ord` are the inner string's).
impl std::borrow::Borrow<str> for EntryId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A registration entry: which SPIFFE ID a workload (or node alias) gets, through
/// which parent, when which selectors are all attested.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegistrationEntry {
    /// Server-generated ID.
    pub id: EntryId,
    /// The identity issued.
    #[serde(with = "crate::serde_spiffe_id")]
    pub spiffe_id: SpiffeId,
    /// The agent (or node alias) through which it is issued.
    #[serde(with = "crate::serde_spiffe_id")]
    pub parent_id: SpiffeId,
    /// All of these must be attested for the entry to match.
    pub selectors: Vec<Selector>,
    /// X.509-SVID lifetime in seconds; 0 means the server default.
    pub x509_svid_ttl: u32,
    /// JWT-SVID lifetime in seconds; 0 means the server default.
    pub jwt_svid_ttl: u32,
    /// DNS SANs put in X.509-SVIDs issued for this entry.
    pub dns_names: Vec<String>,
    /// A hint passed to workloads to tell several identities apart.
    pub hint: String,
    /// Whether the holder may call the admin API.
    pub admin: bool,
    /// After this Unix time the entry no longer issues; 0 = never expires.
    pub expires_at: i64,
    /// Free-form metadata for later features (authority model, policy tags ...).
    pub metadata: BTreeMap<String, String>,
    /// Bumped on every update (optimistic concurrency and change streams).
    pub revision: i64,
    /// Unix time the entry was created.
    pub created_at: i64,
}

/// Why an entry was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum EntryValidationError {
    /// The SPIFFE ID is outside the server's trust domain.
    #[error("spiffe_id {id} is not in trust domain {td}")]
    ForeignSpiffeId {
        /// The requested ID.
        id: String,
        /// The server's trust domain.
        td: String,
    },
    /// The parent ID is outside the server's trust domain.
    #[error("parent_id {id} is not in trust domain {td}")]
    ForeignParentId {
        /// The requested parent.
        id: String,
        /// The server's trust domain.
        td: String,
    },
    /// The SPIFFE ID is the bare trust domain, or under the reserved `/ferrid/` path.
    #[error("spiffe_id {0} is reserved (a bare trust domain or under /ferrid/)")]
    ReservedSpiffeId(String),
    /// No selectors.
    #[error("an entry needs at least one selector")]
    NoSelectors,
    /// Too many selectors, DNS names or metadata keys.
    #[error("too many {what} (at most {max})")]
    TooMany {
        /// Which field.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// A DNS name is not a valid hostname.
    #[error("dns name {0:?} is not a valid hostname")]
    BadDnsName(String),
    /// The hint is too long or has control characters.
    #[error("hint must be at most 256 printable characters")]
    BadHint,
    /// `metadata.authority_model` is not one of the known models.
    #[error("metadata authority_model {0:?} must be delegated, bounded or autonomous")]
    BadAuthorityModel(String),
}

/// The metadata key holding an entry's [`AuthorityModel`].
pub const AUTHORITY_MODEL_KEY: &str = "authority_model";

/// How a workload (an AI agent, typically) may act, set per registration entry and
/// enforced at every issuance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthorityModel {
    /// Acts only on behalf of a principal: its credentials name the principal in `sub`
    /// and the workload in `act`, so it obtains JWT credentials only by token exchange
    /// with a subject token.
    Delegated,
    /// Acts within one run or task: its JWT credentials are bound to a task (`task`
    /// claim), recorded, and die with it.
    Bounded,
    /// Acts on its own: never receives a credential whose subject is a human.
    Autonomous,
}

impl AuthorityModel {
    /// The name used in metadata, policies and credentials.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delegated => "delegated",
            Self::Bounded => "bounded",
            Self::Autonomous => "autonomous",
        }
    }

    /// Parses a model name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "delegated" => Some(Self::Delegated),
            "bounded" => Some(Self::Bounded),
            "autonomous" => Some(Self::Autonomous),
            _ => None,
        }
    }
}

impl RegistrationEntry {
    /// Checks the entry against the rules that do not depend on the datastore.
    pub fn validate(&self, td: &TrustDomain) -> Result<(), EntryValidationError> {
        if !self.spiffe_id.is_member_of(td) {
            return Err(EntryValidationError::ForeignSpiffeId {
                id: self.spiffe_id.to_string(),
                td: td.to_string(),
            });
        }
        if !self.parent_id.is_member_of(td) {
            return Err(EntryValidationError::ForeignParentId {
                id: self.parent_id.to_string(),
                td: td.to_string(),
            });
        }
        let path = self.spiffe_id.path();
        if path.is_empty() || path == "/ferrid" || path.starts_with("/ferrid/") {
            return Err(EntryValidationError::ReservedSpiffeId(self.spiffe_id.to_string()));
        }
        if self.selectors.is_empty() {
            return Err(EntryValidationError::NoSelectors);
        }
        if self.selectors.len() > MAX_SELECTORS {
            return Err(EntryValidationError::TooMany { what: "selectors", max: MAX_SELECTORS });
        }
        if self.dns_names.len() > MAX_DNS_NAMES {
            return Err(EntryValidationError::TooMany { what: "dns names", max: MAX_DNS_NAMES });
        }
        if self.metadata.len() > MAX_METADATA_ENTRIES {
            return Err(EntryValidationError::TooMany { what: "metadata keys", max: MAX_METADATA_ENTRIES });
        }
        for name in &self.dns_names {
            if !is_valid_dns_name(name) {
                return Err(EntryValidationError::BadDnsName(name.clone()));
            }
        }
        if self.hint.len() > 256 || self.hint.chars().any(char::is_control) {
            return Err(EntryValidationError::BadHint);
        }
        if let Some(m) = self.metadata.get(AUTHORITY_MODEL_KEY)
            && AuthorityModel::parse(m).is_none()
        {
            return Err(EntryValidationError::BadAuthorityModel(m.clone()));
        }
        Ok(())
    }

    /// The entry's authority model (`metadata.authority_model`), if it has one.
    pub fn authority_model(&self) -> Option<AuthorityModel> {
        self.metadata.get(AUTHORITY_MODEL_KEY).and_then(|m| AuthorityModel::parse(m))
    }

    /// Whether the entry has expired at `now` (Unix seconds).
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at != 0 && now >= self.expires_at
    }
}

/// A hostname per RFC 1123, optionally with one leading `*.` wildcard label.
fn is_valid_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// An attested node agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentRecord {
    /// The agent's SPIFFE ID.
    #[serde(with = "crate::serde_spiffe_id")]
    pub spiffe_id: SpiffeId,
    /// The node attestor that admitted it (`join_token`, `k8s_psat` ...).
    pub attestor: String,
    /// Selectors the node attestor produced.
    pub selectors: Vec<Selector>,
    /// Serial number (hex) of the agent SVID most recently issued.
    pub svid_serial: String,
    /// NotAfter of that SVID, Unix seconds.
    pub svid_expires_at: i64,
    /// Whether the attestor allows this node to attest again.
    pub can_reattest: bool,
    /// Whether the agent has been evicted (its SVID no longer accepted).
    pub banned: bool,
    /// First attestation, Unix seconds.
    pub attested_at: i64,
    /// Last SVID renewal, Unix seconds.
    pub last_seen: i64,
}

/// A one-time join token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JoinTokenRecord {
    /// The token's public identifier (appears in the agent's SPIFFE ID).
    pub id: String,
    /// SHA-256 of the secret, hex. The secret itself is never stored.
    pub secret_sha256: String,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// Set once the token has been used.
    pub used_at: Option<i64>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
}

/// Key algorithms Ferrid can generate and accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA P-256 with SHA-256 (the default).
    #[default]
    EcP256,
    /// ECDSA P-384 with SHA-384.
    EcP384,
    /// RSA 2048 with PKCS#1 v1.5 SHA-256.
    Rsa2048,
    /// RSA 4096 with PKCS#1 v1.5 SHA-256.
    Rsa4096,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EcP256 => "ec-p256",
            Self::EcP384 => "ec-p384",
            Self::Rsa2048 => "rsa-2048",
            Self::Rsa4096 => "rsa-4096",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_model_is_validated() {
        let td = TrustDomain::new("example.org").unwrap();
        let mut e = entry();
        assert_eq!(e.authority_model(), None);
        for m in ["delegated", "bounded", "autonomous"] {
            e.metadata.insert(AUTHORITY_MODEL_KEY.into(), m.into());
            e.validate(&td).unwrap();
            assert_eq!(e.authority_model().map(AuthorityModel::as_str), Some(m));
        }
        e.metadata.insert(AUTHORITY_MODEL_KEY.into(), "rogue".into());
        assert_eq!(e.validate(&td), Err(EntryValidationError::BadAuthorityModel("rogue".into())));
    }

    fn entry() -> RegistrationEntry {
        RegistrationEntry {
            id: EntryId("e1".into()),
            spiffe_id: SpiffeId::new("spiffe://example.org/web").unwrap(),
            parent_id: SpiffeId::new("spiffe://example.org/ferrid/agent/join_token/t").unwrap(),
            selectors: vec!["unix:uid:1000".parse().unwrap()],
            x509_svid_ttl: 0,
            jwt_svid_ttl: 0,
            dns_names: vec!["web.example.org".into()],
            hint: String::new(),
            admin: false,
            expires_at: 0,
            metadata: BTreeMap::new(),
            revision: 0,
            created_at: 0,
        }
    }

    #[test]
    fn validation_rules() {
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(entry().validate(&td), Ok(()));
        let other = TrustDomain::new("other.org").unwrap();
        assert!(matches!(entry().validate(&other), Err(EntryValidationError::ForeignSpiffeId { .. })));
        let mut e = entry();
        e.selectors.clear();
        assert_eq!(e.validate(&td), Err(EntryValidationError::NoSelectors));
        let mut e = entry();
        e.spiffe_id = SpiffeId::new("spiffe://example.org/ferrid/server").unwrap();
        assert!(matches!(e.validate(&td), Err(EntryValidationError::ReservedSpiffeId(_))));
        let mut e = entry();
        e.spiffe_id = SpiffeId::new("spiffe://example.org").unwrap();
        assert!(matches!(e.validate(&td), Err(EntryValidationError::ReservedSpiffeId(_))));
        let mut e = entry();
        e.dns_names = vec!["bad_name!".into()];
        assert!(matches!(e.validate(&td), Err(EntryValidationError::BadDnsName(_))));
        let mut e = entry();
        e.dns_names = vec!["*.svc.example.org".into()];
        assert_eq!(e.validate(&td), Ok(()));
    }

    #[test]
    fn expiry() {
        let mut e = entry();
        assert!(!e.is_expired(i64::MAX));
        e.expires_at = 100;
        assert!(!e.is_expired(99));
        assert!(e.is_expired(100));
    }
}
