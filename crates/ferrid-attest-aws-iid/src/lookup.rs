//! An optional look-up of the attesting instance through the EC2 API (what
//! `DescribeInstances` and the instance profile say about it), for selectors the
//! identity document does not carry: tags and IAM roles.
//!
//! Off by default. This crate ships no AWS client: the host plugs in an
//! [`InstanceLookup`] with [`crate::AwsIidAttestor::with_instance_lookup`]. The only
//! implementation here is [`StaticInstances`], a fixed table for tests.

use std::collections::BTreeMap;

use ferrid_attest::AttestError;

use crate::InstanceIdentity;

/// What the EC2 API says about an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceDetails {
    /// Its tags, as `(key, value)`; they become `tag:<key>:<value>` selectors.
    pub tags: Vec<(String, String)>,
    /// ARNs of the IAM roles of its instance profile; they become `iam_role:<arn>`
    /// selectors.
    pub iam_roles: Vec<String>,
}

/// Looks up an instance whose identity document verified.
#[async_trait::async_trait]
pub trait InstanceLookup: Send + Sync + std::fmt::Debug {
    /// The instance's details; `Ok(None)` when the API does not know it (terminated,
    /// or not visible to the credentials used), which refuses the attestation.
    /// Errors reaching the API are [`AttestError::Unavailable`].
    async fn describe(&self, instance: &InstanceIdentity) -> Result<Option<InstanceDetails>, AttestError>;
}

/// A fixed table of instances, by account and instance ID: a stand-in for the EC2 API
/// in tests.
#[derive(Debug, Clone, Default)]
pub struct StaticInstances {
    by_id: BTreeMap<(String, String), InstanceDetails>,
}

impl StaticInstances {
    /// An empty table: every look-up finds nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the details of `instance_id` in `account`.
    pub fn insert(&mut self, account: &str, instance_id: &str, details: InstanceDetails) -> &mut Self {
        self.by_id.insert((account.to_owned(), instance_id.to_owned()), details);
        self
    }
}

#[async_trait::async_trait]
impl InstanceLookup for StaticInstances {
    async fn describe(&self, instance: &InstanceIdentity) -> Result<Option<InstanceDetails>, AttestError> {
        Ok(self.by_id.get(&(instance.account.clone(), instance.instance_id.clone())).cloned())
    }
}
