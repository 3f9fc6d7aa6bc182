//! Conversions between wire messages and validated domain types. Everything coming off
//! the wire goes through the validating constructors of `ferrid-types`.
use ferrid_types::{AgentRecord, EntryId, RegistrationEntry, Selector, SpiffeId};

use crate::types::v1 as pb;

/// A wire message that does not describe a valid domain value.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConvertError {}

fn err(field: &'static str, reason: impl ToString) -> ConvertError {
    ConvertError { field, reason: reason.to_string() }
}

/// Wire selector → validated selector.
pub fn selector_from_proto(s: &pb::Selector) -> Result<Selector, ConvertError> {
    Selector::new(s.r#type.clone(), s.value.clone()).map_err(|e| err("selectors", e))
}

/// Selector → wire selector.
pub fn selector_to_proto(s: &Selector) -> pb::Selector {
    pb::Selector { r#type: s.kind.clone(), value: s.value.clone() }
}

/// Wire entry → domain entry (validates IDs and selectors; the server then applies the
/// trust-domain rules with [`RegistrationEntry::validate`]).
pub fn entry_from_proto(e: &pb::Entry) -> Result<RegistrationEntry, ConvertError> {
    let spiffe_id = SpiffeId::new(&e.spiffe_id).map_err(|x| err("spiffe_id", x))?;
    let parent_id = SpiffeId::new(&e.parent_id).map_err(|x| err("parent_id", x))?;
    let selectors = e.selectors.iter().map(selector_from_proto).collect::<Result<Vec<_>, _>>()?;
    let ttl = |v: i32, field| u32::try_from(v).map_err(|_| err(field, "must not be negative"));
    Ok(RegistrationEntry {
        id: EntryId(e.id.clone()),
        spiffe_id,
        parent_id,
        selectors,
        x509_svid_ttl: ttl(e.x509_svid_ttl, "x509_svid_ttl")?,
        jwt_svid_ttl: ttl(e.jwt_svid_ttl, "jwt_svid_ttl")?,
        dns_names: e.dns_names.clone(),
        hint: e.hint.clone(),
        admin: e.admin,
        expires_at: e.expires_at,
        metadata: e.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        revision: e.revision,
        created_at: e.created_at,
    })
}

/// Domain entry → wire entry.
pub fn entry_to_proto(e: &RegistrationEntry) -> pb::Entry {
    pb::Entry {
        id: e.id.0.clone(),
        spiffe_id: e.spiffe_id.to_string(),
        parent_id: e.parent_id.to_string(),
        selectors: e.selectors.iter().map(selector_to_proto).collect(),
        x509_svid_ttl: i32::try_from(e.x509_svid_ttl).unwrap_or(i32::MAX),
        jwt_svid_ttl: i32::try_from(e.jwt_svid_ttl).unwrap_or(i32::MAX),
        dns_names: e.dns_names.clone(),
        hint: e.hint.clone(),
        admin: e.admin,
        expires_at: e.expires_at,
        metadata: e.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        revision: e.revision,
        created_at: e.created_at,
    }
}

/// Agent record → wire agent.
pub fn agent_to_proto(a: &AgentRecord) -> pb::Agent {
    pb::Agent {
        spiffe_id: a.spiffe_id.to_string(),
        attestor: a.attestor.clone(),
        selectors: a.selectors.iter().map(selector_to_proto).collect(),
        svid_serial: a.svid_serial.clone(),
        svid_expires_at: a.svid_expires_at,
        can_reattest: a.can_reattest,
        banned: a.banned,
        attested_at: a.attested_at,
        last_seen: a.last_seen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trips_and_rejects_bad_ids() {
        let wire = pb::Entry {
            spiffe_id: "spiffe://example.org/web".into(),
            parent_id: "spiffe://example.org/ferrid/agent/join_token/x".into(),
            selectors: vec![pb::Selector { r#type: "unix".into(), value: "uid:1000".into() }],
            x509_svid_ttl: 60,
            ..Default::default()
        };
        let e = entry_from_proto(&wire).unwrap();
        assert_eq!(entry_to_proto(&e), wire);
        let bad = pb::Entry { spiffe_id: "spiffe://example.org/a//b".into(), ..wire.clone() };
        assert_eq!(entry_from_proto(&bad).unwrap_err().field, "spiffe_id");
        let neg = pb::Entry { x509_svid_ttl: -1, ..wire.clone() };
        assert_eq!(entry_from_proto(&neg).unwrap_err().field, "x509_svid_ttl");
        let badsel =
            pb::Entry { selectors: vec![pb::Selector { r#type: "".into(), value: "x".into() }], ..wire };
        assert_eq!(entry_from_proto(&badsel).unwrap_err().field, "selectors");
    }
}
