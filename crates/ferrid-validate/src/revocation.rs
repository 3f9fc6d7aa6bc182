//! Revocations a relying service has heard of, and the fail-closed freshness rule.
//!
//! A [`RevocationSet`] holds what the revocation feed (docs/revocation.md) has said:
//! revoked X.509 serials, revoked JWT `jti`s and SPIFFE-ID cut-offs. Feeds
//! ([`crate::feeds`]) apply verified SETs to it and mark it fresh on every message and
//! heartbeat. Validators ask it:
//!
//! - [`RevocationError::Stale`] when nothing was heard for longer than the staleness
//!   bound ([`DEFAULT_MAX_STALENESS`], 2 minutes, unless configured): a validator that
//!   cannot know whether a credential was revoked refuses it (fail closed);
//! - [`RevocationError::Revoked`] when a revocation covers the credential.
//!
//! The matching itself is [`ferrid_revocation::RevocationIndex`], the one matcher the
//! server and the node agent use too. Reads take a shared lock and a few hash lookups.
//! Revocations are forgotten once
//! every credential they cover has expired: at the feed's `expires_at` when it says
//! (gRPC watch), else [`RevocationSet::retention`] after the event (24 hours by
//! default: longer than any Ferrid credential lives).
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use ferrid_revocation::{JwtCredential, Revocation, RevocationIndex, X509Credential};
use ferrid_types::Serial;

use crate::jwt::VerifiedJwtSvid;
use crate::set::SetEvent;
use crate::x509::VerifiedX509Svid;

/// The default staleness bound: 2 minutes without a message or heartbeat from the feed
/// and every credential is refused. Keep it at several of the server's
/// `heartbeat_interval`s.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(120);
/// The default time a revocation without a known expiry is kept: 24 hours.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

const NEVER: i64 = i64::MIN;

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// The feed has not been heard from within the staleness bound (or ever).
    #[error(
        "revocation feed is stale (last heard {last_heard:?}, now {now}, bound {max_staleness}s): failing closed"
    )]
    Stale {
        /// When the feed was last heard (Unix seconds), if ever.
        last_heard: Option<i64>,
        /// The validator's time.
        now: i64,
        /// The bound, in seconds.
        max_staleness: i64,
    },
    /// A revocation covers the credential.
    #[error("credential revoked: {what}")]
    Revoked {
        /// What matched: `serial …`, `jti …` or `spiffe id … before …`.
        what: String,
    },
}

/// The revocations heard of, with the feed's freshness. Share it in an `Arc`.
#[derive(Debug)]
pub struct RevocationSet {
    index: RwLock<RevocationIndex>,
    last_heard: AtomicI64,
    sequence: AtomicU64,
    max_staleness: i64,
    retention: i64,
}

impl Default for RevocationSet {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_STALENESS)
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl RevocationSet {
    /// An empty set that has never heard from its feed (so every check is `Stale` until
    /// a feed delivers something), failing closed after `max_staleness` of silence.
    pub fn new(max_staleness: Duration) -> Self {
        Self {
            index: RwLock::default(),
            last_heard: AtomicI64::new(NEVER),
            sequence: AtomicU64::new(0),
            max_staleness: secs(max_staleness),
            retention: secs(DEFAULT_RETENTION),
        }
    }

    /// Keeps revocations whose expiry the feed does not say for `d` (default 24 h).
    pub fn with_retention(mut self, d: Duration) -> Self {
        self.retention = secs(d);
        self
    }

    /// The staleness bound.
    pub fn max_staleness(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.max_staleness).unwrap_or(0))
    }

    /// The retention of revocations without a known expiry.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.retention).unwrap_or(0))
    }

    /// Records that the feed spoke at `now` (a message, a heartbeat, an empty poll).
    pub fn heard(&self, now: i64) {
        self.last_heard.fetch_max(now, Ordering::SeqCst);
    }

    /// When the feed last spoke (Unix seconds).
    pub fn last_heard(&self) -> Option<i64> {
        match self.last_heard.load(Ordering::SeqCst) {
            NEVER => None,
            t => Some(t),
        }
    }

    /// The highest feed sequence applied (gRPC watch), 0 before any.
    pub fn sequence(&self) -> u64 {
        self.sequence.load(Ordering::SeqCst)
    }

    /// Records the feed's sequence.
    pub fn set_sequence(&self, seq: u64) {
        self.sequence.store(seq, Ordering::SeqCst);
    }

    /// Applies one event heard at `now`. `expires_at` is when every credential it
    /// covers has expired, when the feed says (else `retention` after the event).
    /// Heartbeats only refresh freshness.
    pub fn apply(&self, event: &SetEvent, expires_at: Option<i64>, now: i64) {
        // Without an expiry from the feed, keep it for the retention after the event
        // (for a SPIFFE-ID revocation, after its cut-off).
        let base = match &event.revocation {
            Revocation::SpiffeId { cutoff, .. } => *cutoff,
            _ => event.event_timestamp.unwrap_or(now),
        };
        let forget = expires_at.unwrap_or_else(|| base.saturating_add(self.retention));
        self.write().apply(&event.revocation, forget);
        self.heard(now);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RevocationIndex> {
        self.index.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RevocationIndex> {
        self.index.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces everything held with `events` (a feed's `reset`).
    pub fn replace_all<'a>(&self, events: impl IntoIterator<Item = (&'a SetEvent, Option<i64>)>, now: i64) {
        *self.write() = RevocationIndex::new();
        for (e, exp) in events {
            self.apply(e, exp, now);
        }
        self.heard(now);
    }

    /// Forgets revocations whose credentials have all expired by `now`.
    pub fn forget_expired(&self, now: i64) {
        self.write().prune(now);
    }

    /// How many revocations are held.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `Stale` unless the feed was heard within the bound.
    pub fn check_fresh(&self, now: i64) -> Result<(), RevocationError> {
        let last = self.last_heard.load(Ordering::SeqCst);
        if last == NEVER || now.saturating_sub(last) > self.max_staleness {
            return Err(RevocationError::Stale {
                last_heard: self.last_heard(),
                now,
                max_staleness: self.max_staleness,
            });
        }
        Ok(())
    }

    /// Checks an X.509-SVID: fresh feed, serial not revoked, not issued before its
    /// SPIFFE ID's cut-off.
    pub fn check_x509(&self, svid: &VerifiedX509Svid, now: i64) -> Result<(), RevocationError> {
        self.check_serial(&svid.serial, &svid.spiffe_id.to_string(), svid.not_before, now)
    }

    /// Checks an X.509 certificate by serial, holder and `notBefore`.
    pub fn check_serial(
        &self,
        serial: &Serial,
        spiffe_id: &str,
        not_before: i64,
        now: i64,
    ) -> Result<(), RevocationError> {
        self.check_fresh(now)?;
        let cred = X509Credential { serial, spiffe_id, not_before };
        match self.read().x509(&cred, now) {
            Some(m) => Err(RevocationError::Revoked { what: m.to_string() }),
            None => Ok(()),
        }
    }

    /// Checks a JWT-SVID or delegation token: fresh feed, `jti` not revoked, and
    /// neither its `sub` nor its newest actor (outermost `act.sub`) cut off after it
    /// was issued. A token without `iat` under a cut-off counts as issued before it.
    pub fn check_jwt(&self, svid: &VerifiedJwtSvid, now: i64) -> Result<(), RevocationError> {
        self.check_fresh(now)?;
        let actor = svid.actors.first().map(ToString::to_string);
        let cred = JwtCredential {
            jti: svid.jti.as_deref(),
            subject: &svid.subject,
            actor: actor.as_deref(),
            issued_at: svid.issued_at,
        };
        match self.read().jwt(&cred, now) {
            Some(m) => Err(RevocationError::Revoked { what: m.to_string() }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrid_types::SpiffeId;

    const NOW: i64 = 1_760_000_000;

    fn x509(serial: &str, nb: i64) -> VerifiedX509Svid {
        VerifiedX509Svid {
            spiffe_id: SpiffeId::new("spiffe://example.org/web").unwrap(),
            serial: Serial::parse(serial).unwrap(),
            not_before: nb,
            not_after: nb + 600,
        }
    }

    fn jwt(jti: &str, sub: &str, actor: Option<&str>, iat: Option<i64>) -> VerifiedJwtSvid {
        let actors: Vec<SpiffeId> = actor.map(|a| SpiffeId::new(a).unwrap()).into_iter().collect();
        VerifiedJwtSvid {
            spiffe_id: actors.first().cloned().unwrap_or_else(|| SpiffeId::new(sub).unwrap()),
            subject: sub.into(),
            actors,
            audience: vec![],
            expires_at: NOW + 300,
            issued_at: iat,
            jti: Some(jti.into()),
            issuer: None,
            task: None,
            scope: vec![],
            authority_model: None,
            subject_type: None,
            kid: "k".into(),
            claims: serde_json::Value::Null,
        }
    }

    #[test]
    fn serial_jti_and_cutoff_revoke() {
        let r = RevocationSet::default();
        r.heard(NOW);
        assert!(r.check_x509(&x509("5ab", NOW - 10), NOW).is_ok());
        r.apply(
            &SetEvent::new(
                Revocation::X509 { serial: Serial::parse("05AB").unwrap(), issuer: None, spiffe_id: None },
                Some(NOW),
            ),
            None,
            NOW,
        );
        assert!(matches!(r.check_x509(&x509("5ab", NOW - 10), NOW), Err(RevocationError::Revoked { .. })));
        assert!(r.check_x509(&x509("5ac", NOW - 10), NOW).is_ok());

        r.apply(&SetEvent::new(Revocation::Jwt { jti: "j1".into(), iss: "x".into() }, Some(NOW)), None, NOW);
        assert!(r.check_jwt(&jwt("j1", "spiffe://example.org/web", None, Some(NOW)), NOW).is_err());
        assert!(r.check_jwt(&jwt("j2", "spiffe://example.org/web", None, Some(NOW)), NOW).is_ok());

        // Cut-off: before is revoked, at or after is not; X.509 by notBefore, JWT by iat,
        // on `sub` or on the newest actor.
        let id = "spiffe://example.org/web";
        r.apply(&SetEvent::new(Revocation::SpiffeId { id: id.into(), cutoff: NOW }, None), None, NOW);
        assert!(r.check_x509(&x509("1", NOW - 1), NOW).is_err());
        assert!(r.check_x509(&x509("1", NOW), NOW).is_ok());
        assert!(r.check_jwt(&jwt("a", id, None, Some(NOW - 1)), NOW).is_err());
        assert!(r.check_jwt(&jwt("a", id, None, Some(NOW)), NOW).is_ok());
        assert!(r.check_jwt(&jwt("a", id, None, None), NOW).is_err(), "no iat: counted as before");
        assert!(r.check_jwt(&jwt("a", "alice", Some(id), Some(NOW - 1)), NOW).is_err());
        assert!(r.check_jwt(&jwt("a", "alice", Some(id), Some(NOW + 1)), NOW).is_ok());
        assert!(
            r.check_jwt(&jwt("a", "alice", Some("spiffe://example.org/other"), Some(NOW - 1)), NOW).is_ok()
        );
    }

    #[test]
    fn expired_revocations_are_forgotten() {
        let r = RevocationSet::new(Duration::from_secs(60)).with_retention(Duration::from_secs(3600));
        let ev = SetEvent::new(Revocation::Jwt { jti: "j1".into(), iss: "x".into() }, Some(NOW));
        r.apply(&ev, Some(NOW + 100), NOW);
        r.apply(&SetEvent::new(Revocation::Jwt { jti: "j2".into(), iss: "x".into() }, Some(NOW)), None, NOW);
        assert_eq!(r.len(), 2);
        r.forget_expired(NOW + 101);
        assert_eq!(r.len(), 1, "j1 forgotten at its expiry, j2 kept for the retention");
        r.forget_expired(NOW + 3601);
        assert!(r.is_empty());
    }

    #[test]
    fn a_stale_feed_fails_closed() {
        let r = RevocationSet::new(Duration::from_secs(60));
        let svid = x509("1", NOW - 10);
        assert!(matches!(r.check_x509(&svid, NOW), Err(RevocationError::Stale { last_heard: None, .. })));
        r.heard(NOW);
        assert!(r.check_x509(&svid, NOW + 60).is_ok());
        assert!(matches!(r.check_x509(&svid, NOW + 61), Err(RevocationError::Stale { .. })));
        r.apply(&SetEvent::heartbeat("3"), None, NOW + 61);
        assert!(r.check_x509(&svid, NOW + 61).is_ok());
        assert_eq!(r.last_heard(), Some(NOW + 61));
        // A reset replaces everything.
        let ev = SetEvent::new(
            Revocation::X509 { serial: Serial::parse("1").unwrap(), issuer: None, spiffe_id: None },
            None,
        );
        r.apply(&ev, None, NOW + 61);
        assert!(r.check_x509(&svid, NOW + 61).is_err());
        r.replace_all([], NOW + 62);
        assert!(r.check_x509(&svid, NOW + 62).is_ok());
    }
}
