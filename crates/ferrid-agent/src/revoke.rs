//! Revocations from the server's watch (docs/revocation.md): the agent drops every
//! cached SVID they cover and mints replacements at once where the entry still allows.
//!
//! The SETs arrive on the agent's mutually authenticated stream from its server, so
//! they are read without checking their signatures again. What they cover is decided
//! by [`ferrid_revocation::RevocationIndex`], the matcher the server and relying
//! services use.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferrid_proto::revocation::v1 as rpb;
use ferrid_revocation::{JwtCredential, RevocationIndex, X509Credential};
use ferrid_validate::set::SetEvent;

use crate::Shared;

/// The revocations in `revs`, indexed; unreadable ones are logged and skipped. Each
/// is in force until the feed's `expires_at` for it.
pub(crate) fn index(revs: &[rpb::Revocation]) -> RevocationIndex {
    let mut index = RevocationIndex::new();
    for r in revs {
        let claims = r.set.split('.').nth(1).and_then(|payload| {
            URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        });
        match claims.as_ref().map(SetEvent::from_claims) {
            Some(Ok(e)) => index.apply(&e.revocation, r.expires_at),
            Some(Err(e)) => {
                tracing::warn!(sequence = r.sequence, error = %e, "ignoring an unreadable revocation");
            }
            None => tracing::warn!(sequence = r.sequence, "ignoring a malformed revocation"),
        }
    }
    index
}

/// Marks every covered X.509-SVID revoked and due (the sync loop mints replacements
/// and drops what it cannot replace) and forgets covered JWT-SVIDs and WIT-SVIDs.
/// Returns how many credentials were affected.
pub(crate) fn apply(shared: &Shared, revs: &RevocationIndex, now: i64) -> usize {
    if revs.is_empty() {
        return 0;
    }
    let mut svids = (**shared.svids.load()).clone();
    let mut hit = 0;
    for s in svids.values_mut() {
        let id = s.spiffe_id.to_string();
        let cred = X509Credential { serial: &s.serial, spiffe_id: &id, not_before: s.not_before };
        if !s.revoked
            && let Some(m) = revs.x509(&cred, now)
        {
            tracing::warn!(spiffe_id = %id, serial = %s.serial, revoked_by = %m, "an X.509-SVID was revoked; minting a replacement");
            s.revoked = true;
            s.rotate_at = 0;
            hit += 1;
        }
    }
    if hit > 0 {
        shared.svids.store(std::sync::Arc::new(svids));
    }
    let covered = |jti: &str, sub: &str, iat: i64| {
        let cred = JwtCredential {
            jti: Some(jti).filter(|j| !j.is_empty()),
            subject: sub,
            actor: None,
            issued_at: Some(iat),
        };
        revs.jwt(&cred, now).is_some()
    };
    hit += shared.jwt_cache.forget(covered);
    hit += shared.wit_cache.forget(covered);
    hit
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrid_validate::set::Revocation;

    fn set(r: Revocation, expires_at: i64) -> rpb::Revocation {
        let claims = SetEvent::new(r, Some(10)).claims("spiffe://td/ferrid/server", "spiffe://td", "s", 10);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        rpb::Revocation { sequence: 1, set: format!("e30.{payload}.sig"), expires_at }
    }

    #[test]
    fn sets_from_the_watch_are_indexed_with_their_expiry() {
        let serial = ferrid_types::Serial::parse("0f34").unwrap();
        let idx = index(&[
            set(Revocation::X509 { serial: serial.clone(), issuer: None, spiffe_id: None }, 100),
            rpb::Revocation { sequence: 2, set: "not a jwt".into(), expires_at: 100 },
            set(Revocation::SpiffeId { id: "spiffe://td/a".into(), cutoff: 50 }, 100),
        ]);
        assert_eq!(idx.len(), 2, "the malformed one is skipped");
        let x =
            |id, nb, now| idx.x509(&X509Credential { serial: &serial, spiffe_id: id, not_before: nb }, now);
        assert!(x("spiffe://td/b", 0, 100).is_some());
        assert!(x("spiffe://td/b", 0, 101).is_none(), "past the feed's expiry");
        let other = ferrid_types::Serial::parse("01").unwrap();
        let cut =
            |nb| idx.x509(&X509Credential { serial: &other, spiffe_id: "spiffe://td/a", not_before: nb }, 60);
        assert!(cut(49).is_some());
        assert!(cut(50).is_none(), "a replacement is not covered");
    }
}
