//! Revocations from the server's watch (docs/revocation.md): the agent drops every
//! cached SVID they cover and mints replacements at once where the entry still allows.
//!
//! The SETs arrive on the agent's mutually authenticated stream from its server, so
//! they are read without checking their signatures again.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferrid_proto::revocation::v1 as rpb;
use ferrid_validate::set::{Revocation, SetEvent, normalize_serial};

use crate::Shared;

/// The revocations in `revs`; unreadable ones are logged and skipped.
pub(crate) fn events(revs: &[rpb::Revocation]) -> Vec<Revocation> {
    revs.iter()
        .filter_map(|r| {
            let payload = r.set.split('.').nth(1)?;
            let claims = URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            match claims.as_ref().map(SetEvent::from_claims) {
                Some(Ok(e)) => Some(e.revocation),
                Some(Err(e)) => {
                    tracing::warn!(sequence = r.sequence, error = %e, "ignoring an unreadable revocation");
                    None
                }
                None => {
                    tracing::warn!(sequence = r.sequence, "ignoring a malformed revocation");
                    None
                }
            }
        })
        .collect()
}

/// Whether an X.509-SVID (serial, SPIFFE ID, notBefore) is covered.
pub(crate) fn covers_x509(r: &Revocation, serial: &str, id: &str, not_before: i64) -> bool {
    match r {
        Revocation::X509 { serial_hex, .. } => normalize_serial(serial_hex) == normalize_serial(serial),
        Revocation::SpiffeId { id: rid, cutoff } => rid == id && not_before < *cutoff,
        _ => false,
    }
}

/// Whether a JWT (jti, SPIFFE ID, iat) is covered.
pub(crate) fn covers_jwt(r: &Revocation, jti: &str, id: &str, iat: i64) -> bool {
    match r {
        Revocation::Jwt { jti: rj, .. } => rj == jti,
        Revocation::SpiffeId { id: rid, cutoff } => rid == id && iat < *cutoff,
        _ => false,
    }
}

/// Marks every covered X.509-SVID revoked and due (the sync loop mints replacements
/// and drops what it cannot replace) and forgets covered JWT-SVIDs and WIT-SVIDs. Returns how many
/// credentials were affected.
pub(crate) fn apply(shared: &Shared, revs: &[Revocation]) -> usize {
    if revs.is_empty() {
        return 0;
    }
    let mut svids = (**shared.svids.load()).clone();
    let mut hit = 0;
    for s in svids.values_mut() {
        let id = s.spiffe_id.to_string();
        if !s.revoked && revs.iter().any(|r| covers_x509(r, &s.serial, &id, s.not_before)) {
            tracing::warn!(spiffe_id = %id, serial = %s.serial, "an X.509-SVID was revoked; minting a replacement");
            s.revoked = true;
            s.rotate_at = 0;
            hit += 1;
        }
    }
    if hit > 0 {
        shared.svids.store(std::sync::Arc::new(svids));
    }
    let covered = |jti: &str, id: &str, iat: i64| revs.iter().any(|r| covers_jwt(r, jti, id, iat));
    hit += shared.jwt_cache.forget(covered);
    hit += shared.wit_cache.forget(covered);
    hit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage() {
        let serial = Revocation::X509 { serial_hex: "0A:BC".into(), issuer: None, spiffe_id: None };
        assert!(covers_x509(&serial, "abc", "spiffe://td/a", 0));
        assert!(!covers_x509(&serial, "abd", "spiffe://td/a", 0));
        let cut = Revocation::SpiffeId { id: "spiffe://td/a".into(), cutoff: 100 };
        assert!(covers_x509(&cut, "1", "spiffe://td/a", 99));
        assert!(!covers_x509(&cut, "1", "spiffe://td/a", 100), "a replacement is not covered");
        assert!(!covers_x509(&cut, "1", "spiffe://td/b", 0));
        assert!(covers_jwt(&cut, "j", "spiffe://td/a", 99));
        assert!(!covers_jwt(&cut, "j", "spiffe://td/a", 100));
        let jwt = Revocation::Jwt { jti: "j1".into(), iss: "x".into() };
        assert!(covers_jwt(&jwt, "j1", "spiffe://td/z", 0));
        assert!(!covers_jwt(&jwt, "j2", "spiffe://td/z", 0));
        assert!(!covers_x509(&jwt, "j1", "spiffe://td/z", 0));
    }
}
