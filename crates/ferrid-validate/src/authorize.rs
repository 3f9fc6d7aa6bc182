//! Authorizers: which SPIFFE IDs a service accepts, once an SVID has validated.
//!
//! ```
//! use ferrid_validate::authorize::{self, Authorizer};
//! use ferrid_types::{SpiffeId, TrustDomain};
//! let td = TrustDomain::new("example.org").unwrap();
//! let a = authorize::path_prefix(td, "/payments/");
//! assert!(a.authorize(&SpiffeId::new("spiffe://example.org/payments/api").unwrap()).is_ok());
//! assert!(a.authorize(&SpiffeId::new("spiffe://example.org/paymentsx").unwrap()).is_err());
//! ```
use std::collections::BTreeSet;
use std::sync::Arc;

use ferrid_types::{SpiffeId, TrustDomain};

/// Why an ID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorizeError {
    /// The ID is not the one expected.
    #[error("{got} is not {want}")]
    NotExpected {
        /// The peer's ID.
        got: String,
        /// The expected ID.
        want: String,
    },
    /// The ID is not among those accepted.
    #[error("{0} is not among the accepted SPIFFE IDs")]
    NotInSet(String),
    /// The ID is in another trust domain.
    #[error("{got} is not in trust domain {want}")]
    WrongTrustDomain {
        /// The peer's ID.
        got: String,
        /// The accepted trust domain.
        want: String,
    },
    /// The ID's path does not start with the prefix.
    #[error("{got} is not under {prefix}")]
    WrongPath {
        /// The peer's ID.
        got: String,
        /// The accepted path prefix.
        prefix: String,
    },
    /// A custom authorizer refused it.
    #[error("{id} refused: {reason}")]
    Refused {
        /// The peer's ID.
        id: String,
        /// Why.
        reason: String,
    },
}

/// Decides whether a (validated) SPIFFE ID may proceed.
pub trait Authorizer: Send + Sync + 'static {
    /// `Ok` when `id` is authorized.
    fn authorize(&self, id: &SpiffeId) -> Result<(), AuthorizeError>;
}

impl<A: Authorizer + ?Sized> Authorizer for Arc<A> {
    fn authorize(&self, id: &SpiffeId) -> Result<(), AuthorizeError> {
        (**self).authorize(id)
    }
}

impl<A: Authorizer + ?Sized> Authorizer for Box<A> {
    fn authorize(&self, id: &SpiffeId) -> Result<(), AuthorizeError> {
        (**self).authorize(id)
    }
}

/// Accepts every ID (the SVID's validation against the bundle still applies).
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyId;

impl Authorizer for AnyId {
    fn authorize(&self, _: &SpiffeId) -> Result<(), AuthorizeError> {
        Ok(())
    }
}

/// Every ID (of the bundle's trust domain: validation already checked it).
pub fn any() -> AnyId {
    AnyId
}

/// Exactly one ID.
#[derive(Debug, Clone)]
pub struct Exact(SpiffeId);

impl Authorizer for Exact {
    fn authorize(&self, id: &SpiffeId) -> Result<(), AuthorizeError> {
        if *id == self.0 {
            Ok(())
        } else {
            Err(AuthorizeError::NotExpected { got: id.to_string(), want: self.0.to_string() })
        }
    }
}

/// Exactly `id`.
pub fn exact(id: SpiffeId) -> Exact {
    Exact(id)
}

/// One of a set of IDs.
#[derive(Debug, Clone)]
pub struct OneOf(BTreeSet<String>);

impl Authorizer for OneOf {
    fn authorize(&self, id: &SpiffeId) -> Result<(), AuthorizeError> {
        if self.0.contains(&id.to_string()) { Ok(()) } else { Err(AuthorizeError::NotInSet(id.to_string())) }
    }
}

/// Any of `ids`.
pub fn one_of(ids: impl IntoIterator<Item = SpiffeId>) -> OneOf {
    OneOf(ids.into_iter().map(|i| i.to_string()).collect())
}

/// Every ID of one trust domain.
#[derive(Debug, Clone)]
pub struct MemberOf(TrustDomain);

impl Authorizer for MemberOf {
    fn authorize(&self, id: &SpiffeId) -> Result<(), AuthorizeError> {
        if id.trust_domain() == &self.0 {
            Ok(())
        } else {
            Err(AuthorizeError::WrongTrustDomain { got: id.to_string(), want: self.0.to_string() })
        }
    }
}

/// Every ID of `td`.
pub fn member_of(td: TrustDomain) -> MemberOf {
    MemberOf(td)
}

/// IDs of one trust domain whose path starts with a prefix.
#[derive(Debug, Clone)]
pub struct PathPrefix {
    td: TrustDomain,
    prefix: String,
}

impl Authorizer for PathPrefix {
    fn authorize(&self, id: &SpiffeId) -> Result<(), AuthorizeError> {
        let path = id.path();
        let ok = id.trust_domain() == &self.td
            && (path == self.prefix.trim_end_matches('/')
                || path.starts_with(&self.prefix)
                    && (self.prefix.ends_with('/') || path[self.prefix.len()..].starts_with('/')));
        if ok {
            Ok(())
        } else {
            Err(AuthorizeError::WrongPath {
                got: id.to_string(),
                prefix: format!("spiffe://{}{}", self.td, self.prefix),
            })
        }
    }
}

/// IDs of `td` whose path is `prefix` or lies under it, segment-wise: `/payments`
/// accepts `/payments` and `/payments/api`, never `/paymentsx`.
pub fn path_prefix(td: TrustDomain, prefix: &str) -> PathPrefix {
    let prefix = if prefix.starts_with('/') { prefix.to_owned() } else { format!("/{prefix}") };
    PathPrefix { td, prefix }
}

/// A closure authorizer.
pub struct FromFn<F>(F);

impl<F> std::fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FromFn")
    }
}

impl<F> Authorizer for FromFn<F>
where
    F: Fn(&SpiffeId) -> Result<(), String> + Send + Sync + 'static,
{
    fn authorize(&self, id: &SpiffeId) -> Result<(), AuthorizeError> {
        (self.0)(id).map_err(|reason| AuthorizeError::Refused { id: id.to_string(), reason })
    }
}

/// Any rule, as a closure returning `Err(reason)` to refuse.
pub fn from_fn<F>(f: F) -> FromFn<F>
where
    F: Fn(&SpiffeId) -> Result<(), String> + Send + Sync + 'static,
{
    FromFn(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    #[test]
    fn each_authorizer_accepts_and_refuses() {
        let td = TrustDomain::new("example.org").unwrap();
        assert!(any().authorize(&id("spiffe://x.org/a")).is_ok());
        let e = exact(id("spiffe://example.org/web"));
        assert!(e.authorize(&id("spiffe://example.org/web")).is_ok());
        assert!(matches!(
            e.authorize(&id("spiffe://example.org/web2")),
            Err(AuthorizeError::NotExpected { .. })
        ));
        let o = one_of([id("spiffe://example.org/a"), id("spiffe://example.org/b")]);
        assert!(o.authorize(&id("spiffe://example.org/b")).is_ok());
        assert!(matches!(o.authorize(&id("spiffe://example.org/c")), Err(AuthorizeError::NotInSet(_))));
        let m = member_of(td.clone());
        assert!(m.authorize(&id("spiffe://example.org/c")).is_ok());
        assert!(matches!(
            m.authorize(&id("spiffe://other.org/c")),
            Err(AuthorizeError::WrongTrustDomain { .. })
        ));
        let p = path_prefix(td.clone(), "/payments");
        assert!(p.authorize(&id("spiffe://example.org/payments")).is_ok());
        assert!(p.authorize(&id("spiffe://example.org/payments/api")).is_ok());
        assert!(p.authorize(&id("spiffe://example.org/paymentsx")).is_err());
        assert!(p.authorize(&id("spiffe://other.org/payments/api")).is_err());
        let f = from_fn(|i: &SpiffeId| if i.path().ends_with("/ok") { Ok(()) } else { Err("not ok".into()) });
        assert!(f.authorize(&id("spiffe://example.org/a/ok")).is_ok());
        assert!(matches!(f.authorize(&id("spiffe://example.org/a/no")), Err(AuthorizeError::Refused { .. })));
        let boxed: Arc<dyn Authorizer> = Arc::new(f);
        assert!(boxed.authorize(&id("spiffe://example.org/a/ok")).is_ok());
    }
}
