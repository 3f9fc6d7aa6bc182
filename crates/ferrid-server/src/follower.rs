//! Who may follow the revocation feed (docs/revocation.md, "Who may poll and watch"):
//! the one authentication rule of the SSF poll endpoint and the gRPC
//! `Revocations/Watch`, and which poll queue an authenticated caller may use.
//!
//! A follower proves an identity of this trust domain with its X.509-SVID (mutual TLS)
//! or a JWT-SVID bearer token whose audience is the server's SPIFFE ID. Either must be
//! unexpired and not revoked at the moment of the request. When both are presented
//! they must name the same SPIFFE ID.
use ferrid_tls::PeerLeaf;
use ferrid_types::SpiffeId;
use ferrid_validate::jwt::{JwtOptions, validate_jwt_svid};
use ferrid_validate::keys::JwtKeySet;
use tonic::Status;

use crate::revocation::PollReceiver;
use crate::state::Shared;

/// Seconds of clock skew tolerated on a bearer JWT-SVID (servers of one trust domain
/// mint them; their clocks are close).
const BEARER_LEEWAY: i64 = 5;

/// Why a follower is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum Refusal {
    /// No credential, or one that is not valid now: malformed, expired, revoked,
    /// forged, for another audience or trust domain (HTTP 401, gRPC `Unauthenticated`).
    Unauthenticated(String),
    /// A valid credential for an identity that may not use what it asked for (HTTP
    /// 403, gRPC `PermissionDenied`).
    Forbidden(String),
}

impl From<Refusal> for Status {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Unauthenticated(m) => Status::unauthenticated(m),
            Refusal::Forbidden(m) => Status::permission_denied(m),
        }
    }
}

fn unauthenticated(m: impl Into<String>) -> Refusal {
    Refusal::Unauthenticated(m.into())
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is
/// case-insensitive, RFC 7235 §2.1).
fn bearer(value: &[u8]) -> Result<&str, Refusal> {
    let bad = || unauthenticated("the Authorization header is not `Bearer <JWT-SVID>`");
    let v = std::str::from_utf8(value).map_err(|_| bad())?;
    let (scheme, token) = v.trim().split_once(' ').ok_or_else(bad)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(bad());
    }
    Ok(token)
}

/// The SPIFFE ID a follower proved: `leaf` is its TLS client certificate (already
/// chain-validated by the handshake), `authorization` the raw `Authorization` value.
pub(crate) fn authenticate(
    shared: &Shared,
    leaf: Option<&Result<PeerLeaf, String>>,
    authorization: Option<&[u8]>,
) -> Result<SpiffeId, Refusal> {
    let now = shared.now();
    let feed = shared.revocations.feed();
    let by_cert = match leaf {
        None => None,
        Some(Err(e)) => return Err(unauthenticated(format!("client certificate: {e}"))),
        Some(Ok(leaf)) => {
            let id = &leaf.spiffe_id;
            // The handshake checked validity when the connection opened; a kept-alive
            // connection can outlive the certificate.
            if leaf.not_after < now {
                return Err(unauthenticated(format!(
                    "the X.509-SVID for {id} (serial {}) expired at {}",
                    leaf.serial, leaf.not_after
                )));
            }
            if let Some(m) = feed.x509_revoked(&leaf.serial, &id.to_string(), leaf.not_before, now) {
                return Err(unauthenticated(format!(
                    "the X.509-SVID for {id} (serial {}) has been revoked ({m})",
                    leaf.serial
                )));
            }
            Some(id.clone())
        }
    };
    let by_token = match authorization {
        None => None,
        Some(value) => {
            let token = bearer(value)?;
            let bundle = shared.bundle();
            let keys = JwtKeySet::from_jwks(bundle.jwt_jwks_json().as_bytes())
                .map_err(|e| unauthenticated(format!("the server's JWT authorities: {e}")))?;
            let mut opts = JwtOptions::new(ferrid_types::server_id(&shared.td).to_string());
            opts.leeway = BEARER_LEEWAY;
            // A follower authenticates as itself, not on someone's behalf.
            opts.allow_delegation = false;
            let v = validate_jwt_svid(token, &keys, &shared.td, &opts, now)
                .map_err(|e| unauthenticated(format!("bearer JWT-SVID: {e}")))?;
            let jti = v.jti.as_deref().unwrap_or_default();
            if let Some(m) = feed.jwt_revoked(jti, &v.subject, None, v.issued_at, now) {
                return Err(unauthenticated(format!(
                    "the bearer JWT-SVID for {} (jti {jti:?}) has been revoked ({m})",
                    v.spiffe_id
                )));
            }
            Some(v.spiffe_id)
        }
    };
    match (by_cert, by_token) {
        (Some(c), Some(t)) if c != t => Err(unauthenticated(format!(
            "the client certificate is {c} but the bearer JWT-SVID is {t}; present one identity"
        ))),
        (Some(id), _) | (None, Some(id)) => Ok(id),
        (None, None) => Err(unauthenticated(
            "present an X.509-SVID (mutual TLS) or `Authorization: Bearer <JWT-SVID>` with the audience \
             of the server's SPIFFE ID",
        )),
    }
}

/// Whether `name` may name a poll receiver: 1 to 64 of `a-z 0-9 - _ .`.
pub(crate) fn valid_receiver(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
}

/// The poll queue `caller` uses: its own (`name` `None`, keyed by its SPIFFE ID), or
/// the named receiver configured for exactly that SPIFFE ID. The two key spaces never
/// meet.
pub(crate) fn queue_for(
    receivers: &[PollReceiver],
    name: Option<&str>,
    caller: &SpiffeId,
) -> Result<String, Refusal> {
    let Some(name) = name else {
        return Ok(format!("id:{caller}"));
    };
    match receivers.iter().find(|r| r.name == name) {
        Some(r) if &r.spiffe_id == caller => Ok(format!("name:{name}")),
        Some(_) => Err(Refusal::Forbidden(format!("{caller} may not poll the receiver {name:?}"))),
        None => Err(Refusal::Forbidden(format!(
            "no receiver {name:?} is configured ([[revocation.poll]]); {caller} may poll its own queue at /ssf/poll"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    fn receivers() -> Vec<PollReceiver> {
        vec![PollReceiver { name: "payments".into(), spiffe_id: id("spiffe://td/payments") }]
    }

    #[test]
    fn a_named_queue_belongs_to_its_configured_id() {
        assert_eq!(
            queue_for(&receivers(), Some("payments"), &id("spiffe://td/payments")),
            Ok("name:payments".into())
        );
    }

    #[test]
    fn another_id_may_not_use_a_named_queue() {
        let r = queue_for(&receivers(), Some("payments"), &id("spiffe://td/attacker"));
        assert!(matches!(&r, Err(Refusal::Forbidden(m)) if m.contains("may not poll")), "{r:?}");
    }

    #[test]
    fn an_unconfigured_name_is_forbidden() {
        let r = queue_for(&receivers(), Some("attacker"), &id("spiffe://td/attacker"));
        assert!(matches!(&r, Err(Refusal::Forbidden(m)) if m.contains("no receiver")), "{r:?}");
    }

    #[test]
    fn own_queues_are_keyed_by_caller_and_never_a_named_one() {
        let a = queue_for(&receivers(), None, &id("spiffe://td/a")).unwrap();
        assert_eq!(a, "id:spiffe://td/a");
        assert_ne!(a, queue_for(&receivers(), None, &id("spiffe://td/b")).unwrap());
        let named = queue_for(&receivers(), Some("payments"), &id("spiffe://td/payments")).unwrap();
        assert_ne!(queue_for(&receivers(), None, &id("spiffe://td/payments")).unwrap(), named);
    }

    #[test]
    fn bearer_values() {
        assert_eq!(bearer(b"Bearer abc"), Ok("abc"));
        assert_eq!(bearer(b"bearer  abc "), Ok("abc"));
        for bad in [&b"Basic abc"[..], b"Bearer", b"Bearer  ", b"abc", b"Bearer \xff"] {
            assert!(matches!(bearer(bad), Err(Refusal::Unauthenticated(_))), "{bad:?}");
        }
    }

    #[test]
    fn receiver_names() {
        assert!(valid_receiver("rp-1.payments_x"));
        for bad in ["", "A", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_receiver(bad), "{bad:?}");
        }
    }
}
