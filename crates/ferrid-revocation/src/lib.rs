//! Revocation matching, in one place (docs/revocation.md).
//!
//! A [`Revocation`] is what one Security Event Token says: one X.509-SVID by serial,
//! one JWT by `jti`, or every credential of a SPIFFE ID issued before a cut-off. A
//! [`RevocationIndex`] holds the revocations in force, each with the time after which
//! nothing it covers can still be valid (its *forget-at* time), and answers one
//! question: is this credential revoked at `now`?
//!
//! The rules, which the server's feed, the node agent and `ferrid-validate` all get
//! from here and nowhere else:
//!
//! - An X.509-SVID is revoked when its serial is revoked, or its SPIFFE ID is cut off
//!   at a time after its `notBefore`.
//! - A JWT (JWT-SVID, WIT-SVID, delegation or task token) is revoked when its `jti` is
//!   revoked, or when its `sub` or its newest actor (the outermost `act.sub`) is cut
//!   off at a time after its `iat`. A token without `iat` under a cut-off counts as
//!   issued before it.
//! - A revocation whose forget-at time is before `now` covers nothing any more: every
//!   credential it covered has expired. [`RevocationIndex::prune`] drops such
//!   revocations; answers do not depend on when pruning runs.
//!
//! Serials are compared in [`Serial`]'s canonical form, so every spelling of a serial
//! matches the same certificate.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;

use ferrid_types::Serial;

/// What one revocation (one SET) covers, or, for a heartbeat, that the feed is alive.
///
/// Exhaustive on purpose: the SET encoder and decoder (`ferrid_validate::set`) must
/// handle every kind, and a new kind should fail their build, not fall through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// One X.509-SVID, matched by serial.
    X509 {
        /// The certificate's serial.
        serial: Serial,
        /// The issuing CA's subject (RFC 4514), when the server knows it.
        issuer: Option<String>,
        /// The holder's SPIFFE ID, when the server knows it.
        spiffe_id: Option<String>,
    },
    /// One JWT, matched by `jti`.
    Jwt {
        /// The token's `jti`.
        jti: String,
        /// The token's `iss` (the server's SPIFFE ID when the token has none).
        iss: String,
    },
    /// Every credential of a SPIFFE ID issued before `cutoff`: X.509-SVIDs with
    /// `notBefore` < cutoff, JWTs whose `sub` or outermost `act.sub` is the ID with
    /// `iat` < cutoff.
    SpiffeId {
        /// The SPIFFE ID.
        id: String,
        /// The cut-off (Unix seconds).
        cutoff: i64,
    },
    /// The feed's heartbeat (SSF verification event): revokes nothing.
    Heartbeat {
        /// The feed's current sequence, as the server sent it.
        state: String,
    },
}

/// An X.509-SVID as the matcher sees it.
#[derive(Debug, Clone, Copy)]
pub struct X509Credential<'a> {
    /// Its serial.
    pub serial: &'a Serial,
    /// The SPIFFE ID of its URI SAN.
    pub spiffe_id: &'a str,
    /// Its `notBefore` (Unix seconds).
    pub not_before: i64,
}

/// A JWT as the matcher sees it.
#[derive(Debug, Clone, Copy)]
pub struct JwtCredential<'a> {
    /// Its `jti`, if it has one.
    pub jti: Option<&'a str>,
    /// Its `sub`.
    pub subject: &'a str,
    /// Its newest actor (the outermost `act.sub`), for a delegation token.
    pub actor: Option<&'a str>,
    /// Its `iat` (Unix seconds), if it has one.
    pub issued_at: Option<i64>,
}

/// What revoked a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Match {
    /// Its serial was revoked.
    Serial(Serial),
    /// Its `jti` was revoked.
    Jti(String),
    /// A SPIFFE ID it names was cut off after it was issued.
    Cutoff {
        /// The SPIFFE ID (the holder, a JWT's `sub` or its newest actor).
        id: String,
        /// The cut-off (Unix seconds).
        cutoff: i64,
    },
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Serial(s) => write!(f, "serial {s}"),
            Self::Jti(j) => write!(f, "jti {j}"),
            Self::Cutoff { id, cutoff } => write!(f, "spiffe id {id} before {cutoff}"),
        }
    }
}

/// The revocations in force. Cheap to query (hash lookups); `Clone` for copy-on-write
/// holders.
#[derive(Debug, Clone, Default)]
pub struct RevocationIndex {
    /// Serial → forget at.
    serials: HashMap<Serial, i64>,
    /// `jti` → forget at.
    jtis: HashMap<String, i64>,
    /// SPIFFE ID → its cut-offs: the (cut-off, forget at) pairs no other pair of the
    /// ID dominates, by cut-off ascending (so forget-at descending).
    cutoffs: HashMap<String, Vec<(i64, i64)>>,
}

impl RevocationIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `revocation`, in force until `forget_at` (Unix seconds; after it, nothing
    /// it covers is valid any more). A heartbeat adds nothing. Applying the same
    /// revocation again keeps the later forget-at time.
    pub fn apply(&mut self, revocation: &Revocation, forget_at: i64) {
        match revocation {
            Revocation::X509 { serial, .. } => {
                let e = self.serials.entry(serial.clone()).or_insert(forget_at);
                *e = (*e).max(forget_at);
            }
            Revocation::Jwt { jti, .. } => {
                let e = self.jtis.entry(jti.clone()).or_insert(forget_at);
                *e = (*e).max(forget_at);
            }
            Revocation::SpiffeId { id, cutoff } => {
                let pairs = self.cutoffs.entry(id.clone()).or_default();
                if pairs.iter().any(|&(c, f)| c >= *cutoff && f >= forget_at) {
                    return;
                }
                pairs.retain(|&(c, f)| !(c <= *cutoff && f <= forget_at));
                let at = pairs.partition_point(|&(c, _)| c < *cutoff);
                pairs.insert(at, (*cutoff, forget_at));
            }
            Revocation::Heartbeat { .. } => {}
        }
    }

    /// Whether the X.509-SVID is revoked at `now`, and by what.
    pub fn x509(&self, cred: &X509Credential<'_>, now: i64) -> Option<Match> {
        if self.serials.get(cred.serial).is_some_and(|f| *f >= now) {
            return Some(Match::Serial(cred.serial.clone()));
        }
        self.cutoff(cred.spiffe_id, Some(cred.not_before), now)
    }

    /// Whether the JWT is revoked at `now`, and by what.
    pub fn jwt(&self, cred: &JwtCredential<'_>, now: i64) -> Option<Match> {
        if let Some(jti) = cred.jti
            && self.jtis.get(jti).is_some_and(|f| *f >= now)
        {
            return Some(Match::Jti(jti.to_owned()));
        }
        self.cutoff(cred.subject, cred.issued_at, now)
            .or_else(|| cred.actor.and_then(|a| self.cutoff(a, cred.issued_at, now)))
    }

    /// The latest cut-off of `id` still in force at `now` that covers a credential
    /// issued at `issued` (`None`: unknown, so covered).
    fn cutoff(&self, id: &str, issued: Option<i64>, now: i64) -> Option<Match> {
        let pairs = self.cutoffs.get(id)?;
        // Forget-at descends as the cut-off ascends: the pairs still in force are a
        // prefix, and the last of them has the latest cut-off.
        let live = pairs.partition_point(|&(_, f)| f >= now);
        let &(cutoff, _) = pairs[..live].last()?;
        issued.is_none_or(|t| t < cutoff).then(|| Match::Cutoff { id: id.to_owned(), cutoff })
    }

    /// Drops every revocation whose forget-at time is before `now`.
    pub fn prune(&mut self, now: i64) {
        self.serials.retain(|_, f| *f >= now);
        self.jtis.retain(|_, f| *f >= now);
        self.cutoffs.retain(|_, pairs| {
            pairs.retain(|&(_, f)| f >= now);
            !pairs.is_empty()
        });
    }

    /// How many serials, `jti`s and cut-off SPIFFE IDs are held.
    pub fn len(&self) -> usize {
        self.serials.len() + self.jtis.len() + self.cutoffs.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.serials.is_empty() && self.jtis.is_empty() && self.cutoffs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(s: &str) -> Serial {
        Serial::parse(s).unwrap()
    }

    fn x509<'a>(serial: &'a Serial, spiffe_id: &'a str, not_before: i64) -> X509Credential<'a> {
        X509Credential { serial, spiffe_id, not_before }
    }

    fn jwt<'a>(
        jti: Option<&'a str>,
        subject: &'a str,
        actor: Option<&'a str>,
        issued_at: Option<i64>,
    ) -> JwtCredential<'a> {
        JwtCredential { jti, subject, actor, issued_at }
    }

    const WEB: &str = "spiffe://td/web";

    #[test]
    fn serials_match_in_any_spelling() {
        let mut idx = RevocationIndex::new();
        idx.apply(&Revocation::X509 { serial: serial("0F34"), issuer: None, spiffe_id: None }, 100);
        assert_eq!(
            idx.x509(&x509(&serial("f34"), "spiffe://td/a", 0), 50),
            Some(Match::Serial(serial("0f34")))
        );
        assert_eq!(idx.x509(&x509(&serial("0f35"), "spiffe://td/a", 0), 50), None);
        assert_eq!(
            idx.x509(&x509(&serial("0f34"), "spiffe://td/a", 0), 101),
            None,
            "forgotten after its expiry"
        );
        assert!(idx.x509(&x509(&serial("0f34"), "spiffe://td/a", 0), 100).is_some(), "in force at forget-at");
    }

    #[test]
    fn cutoffs_cover_what_was_issued_before() {
        let mut idx = RevocationIndex::new();
        idx.apply(&Revocation::SpiffeId { id: WEB.into(), cutoff: 200 }, 1000);
        idx.apply(&Revocation::SpiffeId { id: WEB.into(), cutoff: 150 }, 1000);
        let s = serial("01");
        assert!(idx.x509(&x509(&s, WEB, 199), 500).is_some(), "issued before the later cut-off");
        assert_eq!(idx.x509(&x509(&s, WEB, 200), 500), None, "a replacement is not covered");
        assert_eq!(idx.x509(&x509(&s, "spiffe://td/other", 0), 500), None);
        assert_eq!(
            idx.jwt(&jwt(Some("j"), WEB, None, Some(10)), 500),
            Some(Match::Cutoff { id: WEB.into(), cutoff: 200 })
        );
        assert_eq!(idx.jwt(&jwt(Some("j"), WEB, None, Some(200)), 500), None);
        assert!(idx.jwt(&jwt(Some("j"), WEB, None, None), 500).is_some(), "no iat counts as before");
        assert!(idx.jwt(&jwt(None, "alice", Some(WEB), Some(199)), 500).is_some(), "the actor was cut off");
        assert_eq!(idx.jwt(&jwt(None, "alice", Some(WEB), Some(201)), 500), None);
        assert_eq!(idx.jwt(&jwt(None, "alice", Some("spiffe://td/api"), Some(1)), 500), None);
    }

    #[test]
    fn an_earlier_cutoff_that_lives_longer_outlasts_a_later_one() {
        let mut idx = RevocationIndex::new();
        idx.apply(&Revocation::SpiffeId { id: WEB.into(), cutoff: 100 }, 200);
        idx.apply(&Revocation::SpiffeId { id: WEB.into(), cutoff: 50 }, 1000);
        let s = serial("01");
        assert!(idx.x509(&x509(&s, WEB, 99), 150).is_some());
        assert_eq!(
            idx.x509(&x509(&s, WEB, 99), 500),
            None,
            "the later cut-off is over, the earlier one does not cover 99"
        );
        assert!(idx.x509(&x509(&s, WEB, 49), 500).is_some());
        idx.prune(500);
        assert_eq!(idx.len(), 1);
        assert!(idx.x509(&x509(&s, WEB, 49), 500).is_some());
        idx.prune(1001);
        assert!(idx.is_empty());
    }

    #[test]
    fn jtis_and_heartbeats() {
        let mut idx = RevocationIndex::new();
        idx.apply(&Revocation::Heartbeat { state: "7".into() }, 100);
        assert!(idx.is_empty());
        idx.apply(&Revocation::Jwt { jti: "j1".into(), iss: "x".into() }, 100);
        idx.apply(&Revocation::Jwt { jti: "j1".into(), iss: "x".into() }, 50);
        assert_eq!(
            idx.jwt(&jwt(Some("j1"), "spiffe://td/z", None, Some(0)), 90),
            Some(Match::Jti("j1".into()))
        );
        assert_eq!(idx.jwt(&jwt(Some("j2"), "spiffe://td/z", None, Some(0)), 90), None);
        assert_eq!(idx.jwt(&jwt(None, "spiffe://td/z", None, Some(0)), 90), None);
        assert_eq!(Match::Jti("j1".into()).to_string(), "jti j1");
        assert_eq!(
            Match::Cutoff { id: WEB.into(), cutoff: 5 }.to_string(),
            "spiffe id spiffe://td/web before 5"
        );
    }
}
