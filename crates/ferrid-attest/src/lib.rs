//! The node-attestor seam. A node attestor turns platform evidence (a join token, a
//! Kubernetes service-account token, a cloud instance identity document, a CI job's
//! OIDC token) into an [`Attested`] result. The host (the server) then:
//!
//! - stamps every selector with the attestor's [`NodeAttestor::name`], so an attestor
//!   can never produce another attestor's selectors;
//! - builds the agent's SPIFFE ID `spiffe://<td>/ferrid/agent/<name>/<agent_path…>`,
//!   validating each segment;
//! - enforces single use through [`Attested::replay_key`].
//!
//! Attestor crates depend on this crate and `ferrid-types` only — never on the server,
//! the datastore or the wire protocol.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

#[cfg(feature = "testkit")]
pub mod testkit;

/// Maximum evidence payload the host accepts (64 KiB).
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Lets an attestor ask the agent a question mid-attestation (for example, "sign this
/// nonce") over the attestation stream.
#[async_trait::async_trait]
pub trait Challenger: Send {
    /// Sends `challenge` and waits for the agent's answer.
    async fn challenge(&mut self, challenge: Vec<u8>) -> Result<Vec<u8>, AttestError>;
}

/// What an attestor proved about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    /// Path segments after `/ferrid/agent/<attestor>/` in the agent's SPIFFE ID.
    pub agent_path: Vec<String>,
    /// Selector values; the host prefixes them with the attestor's name.
    pub selectors: Vec<String>,
    /// Whether the same node may attest again later.
    pub can_reattest: bool,
    /// Identity of the evidence for single use: the host refuses a second attestation
    /// with the same key until [`Attested::replay_expires_at`].
    pub replay_key: Option<String>,
    /// Unix seconds until which the replay record is kept (normally the evidence's expiry).
    pub replay_expires_at: i64,
    /// When the evidence itself stops being valid (a token's `exp`), if it says. A
    /// credential exchanged directly for the evidence never outlives it.
    pub evidence_expires_at: Option<i64>,
}

/// A node attestor, hosted by the server.
#[async_trait::async_trait]
pub trait NodeAttestor: Send + Sync + std::fmt::Debug {
    /// The attestor's name, e.g. `join_token`: the selector type and the agent-ID segment.
    fn name(&self) -> &'static str;

    /// Verifies `payload` at `now`, optionally challenging the agent.
    async fn attest(
        &self,
        payload: &[u8],
        challenger: &mut dyn Challenger,
        now: time::OffsetDateTime,
    ) -> Result<Attested, AttestError>;
}

/// The kernel-reported credentials of a process connected to the agent's socket
/// (`SO_PEERCRED`), the starting point of workload attestation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Process ID.
    pub pid: i32,
    /// Effective user ID at connect time.
    pub uid: u32,
    /// Effective group ID at connect time.
    pub gid: u32,
}

/// A workload attestor, hosted by the agent: turns a caller's credentials into
/// selector values (the host prefixes them with [`WorkloadAttestor::name`]).
///
/// The agent runs every enabled workload attestor on each caller and takes the union
/// of their selectors. An attestor that has nothing to say about a process (the `k8s`
/// attestor for a process that is not in a pod container) returns
/// [`AttestError::NotApplicable`]: the host then goes on with the other attestors'
/// selectors. Any other error fails the caller's attestation as a whole, so a caller is
/// never served from a partial picture of itself (its identities would silently shrink
/// for as long as its stream stays open).
#[async_trait::async_trait]
pub trait WorkloadAttestor: Send + Sync + std::fmt::Debug {
    /// The attestor's name, e.g. `unix`: the selector type.
    fn name(&self) -> &'static str;

    /// Selector values for the process behind `peer`.
    async fn attest(&self, peer: PeerCredentials) -> Result<Vec<String>, AttestError>;
}

/// Why attestation failed. Messages never contain secrets from the evidence.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttestError {
    /// The payload cannot be parsed.
    #[error("malformed attestation data: {0}")]
    Malformed(String),
    /// The evidence is well-formed but not valid (bad signature, unknown or forged
    /// token, wrong audience, not allowed by policy).
    #[error("attestation rejected: {0}")]
    Rejected(String),
    /// The evidence has expired.
    #[error("attestation evidence expired: {0}")]
    Expired(String),
    /// The evidence was already used.
    #[error("attestation evidence replayed: {0}")]
    Replayed(String),
    /// The payload is over the size limit.
    #[error("attestation data too large: {got} bytes, the limit is {limit}")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
        /// The size received.
        got: usize,
    },
    /// A dependency (datastore, cloud API) is unavailable.
    #[error("attestation dependency unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected state.
    #[error("internal attestation error: {0}")]
    Internal(String),
    /// The evidence is outside what this attestor describes (a workload attestor asked
    /// about a process it does not cover, e.g. the `k8s` attestor and a host process).
    /// Not a failure: the host uses the other attestors' results.
    #[error("attestor does not apply: {0}")]
    NotApplicable(String),
}

impl AttestError {
    /// A short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Rejected(_) => "rejected",
            Self::Expired(_) => "expired",
            Self::Replayed(_) => "replayed",
            Self::TooLarge { .. } => "too_large",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
            Self::NotApplicable(_) => "not_applicable",
        }
    }
}

/// A challenger for attestors that use no challenges: every challenge is refused.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoChallenges;

#[async_trait::async_trait]
impl Challenger for NoChallenges {
    async fn challenge(&mut self, _challenge: Vec<u8>) -> Result<Vec<u8>, AttestError> {
        Err(AttestError::Malformed("this attestor does not use challenges".into()))
    }
}

/// The attestors a server has enabled, by name.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    by_name: BTreeMap<&'static str, Arc<dyn NodeAttestor>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an attestor; a second attestor with the same name is refused.
    pub fn register(&mut self, attestor: Arc<dyn NodeAttestor>) -> Result<(), AttestError> {
        let name = attestor.name();
        if self.by_name.contains_key(name) {
            return Err(AttestError::Internal(format!("node attestor {name:?} is registered twice")));
        }
        self.by_name.insert(name, attestor);
        Ok(())
    }

    /// The attestor called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn NodeAttestor>> {
        self.by_name.get(name).cloned()
    }

    /// Enabled attestor names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.by_name.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(&'static str);

    #[async_trait::async_trait]
    impl NodeAttestor for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        async fn attest(
            &self,
            _: &[u8],
            _: &mut dyn Challenger,
            _: time::OffsetDateTime,
        ) -> Result<Attested, AttestError> {
            Err(AttestError::Rejected("never".into()))
        }
    }

    #[test]
    fn registry_refuses_duplicates_and_lists_names() {
        let mut r = Registry::new();
        r.register(Arc::new(Fixed("b"))).unwrap();
        r.register(Arc::new(Fixed("a"))).unwrap();
        assert!(matches!(r.register(Arc::new(Fixed("a"))), Err(AttestError::Internal(_))));
        assert_eq!(r.names(), vec!["a", "b"]);
        assert!(r.get("a").is_some());
        assert!(r.get("c").is_none());
    }

    #[test]
    fn reasons_are_stable_labels() {
        let all = [
            AttestError::Malformed(String::new()),
            AttestError::Rejected(String::new()),
            AttestError::Expired(String::new()),
            AttestError::Replayed(String::new()),
            AttestError::TooLarge { limit: 1, got: 2 },
            AttestError::Unavailable(String::new()),
            AttestError::Internal(String::new()),
            AttestError::NotApplicable(String::new()),
        ];
        let labels: Vec<_> = all.iter().map(AttestError::reason).collect();
        assert_eq!(
            labels,
            [
                "malformed",
                "rejected",
                "expired",
                "replayed",
                "too_large",
                "unavailable",
                "internal",
                "not_applicable"
            ]
        );
    }

    #[tokio::test]
    async fn no_challenges_refuses() {
        assert!(NoChallenges.challenge(vec![1]).await.is_err());
    }
}
