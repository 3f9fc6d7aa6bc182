//! Trust bundles: the X.509 authorities and JWT keys of a trust domain, and where the
//! current ones come from.
//!
//! A [`BundleSource`] answers "what does trust domain T trust right now?". Verifiers
//! ask it on every validation, so a rotated bundle is picked up without rebuilding
//! anything. [`BundleSet`] is the in-memory implementation (static, or kept current by
//! a watcher: [`crate::feeds::bundle_endpoint`] over HTTPS, or the Workload API with
//! the `workload-api` feature).
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use ferrid_types::TrustDomain;
use serde_json::Value;

use crate::keys::{JwtKeySet, KeyError};
use crate::x509::{X509Bundle, X509Error};

/// The largest bundle document accepted (1 MiB).
pub const MAX_BUNDLE_BYTES: usize = 1 << 20;

/// One trust domain's bundle.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    /// X.509 authorities.
    pub x509: X509Bundle,
    /// JWT keys.
    pub jwt: JwtKeySet,
    /// `spiffe_sequence`, when the document had one.
    pub sequence: Option<u64>,
    /// `spiffe_refresh_hint`, when the document had one.
    pub refresh_hint: Option<Duration>,
}

/// Why a bundle document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Over [`MAX_BUNDLE_BYTES`].
    #[error("bundle document too large: {0} bytes")]
    TooLarge(usize),
    /// Not JSON, no `keys`.
    #[error("malformed bundle document: {0}")]
    Malformed(String),
    /// An `x509-svid` key without exactly one certificate in `x5c`.
    #[error("an x509-svid key must carry exactly one certificate")]
    BadX509Key,
    /// A JWT key is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// An X.509 authority is unusable.
    #[error(transparent)]
    X509(#[from] X509Error),
    /// No bundle for the trust domain.
    #[error("no bundle for trust domain {0}")]
    Unknown(String),
    /// The bundle could not be fetched.
    #[error("bundle unavailable: {0}")]
    Unavailable(String),
}

impl TrustBundle {
    /// A bundle of these halves.
    pub fn new(x509: X509Bundle, jwt: JwtKeySet) -> Self {
        Self { x509, jwt, sequence: None, refresh_hint: None }
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        self.x509.trust_domain()
    }

    /// Parses a SPIFFE bundle document (SPIFFE Trust Domain and Bundle §4; what
    /// Ferrid's server serves at `GET /bundle`): `keys` with `use: x509-svid` (one
    /// certificate in `x5c`) and `use: jwt-svid` (with `kid`); other uses are ignored.
    pub fn from_spiffe_json(trust_domain: TrustDomain, json: &[u8]) -> Result<Self, BundleError> {
        if json.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge(json.len()));
        }
        let doc: Value = serde_json::from_slice(json).map_err(|e| BundleError::Malformed(e.to_string()))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| BundleError::Malformed("no keys array".into()))?;
        let mut x509 = Vec::new();
        for k in keys {
            if k.get("use").and_then(Value::as_str) == Some("x509-svid") {
                let x5c = k.get("x5c").and_then(Value::as_array).ok_or(BundleError::BadX509Key)?;
                let [one] = x5c.as_slice() else { return Err(BundleError::BadX509Key) };
                let der = base64::engine::general_purpose::STANDARD
                    .decode(one.as_str().ok_or(BundleError::BadX509Key)?)
                    .map_err(|_| BundleError::BadX509Key)?;
                x509.push(der);
            }
        }
        let jwt_doc: Vec<&Value> =
            keys.iter().filter(|k| k.get("use").and_then(Value::as_str) == Some("jwt-svid")).collect();
        let mut jwt = JwtKeySet::new();
        for k in jwt_doc {
            jwt.insert_jwk(k)?;
        }
        Ok(Self {
            x509: X509Bundle::new(trust_domain, x509)?,
            jwt,
            sequence: doc.get("spiffe_sequence").and_then(Value::as_u64),
            refresh_hint: doc.get("spiffe_refresh_hint").and_then(Value::as_u64).map(Duration::from_secs),
        })
    }
}

/// Where the current bundle of a trust domain comes from.
pub trait BundleSource: Send + Sync + 'static {
    /// The current bundle of `td`, if known.
    fn bundle(&self, td: &TrustDomain) -> Option<Arc<TrustBundle>>;
}

impl<B: BundleSource + ?Sized> BundleSource for Arc<B> {
    fn bundle(&self, td: &TrustDomain) -> Option<Arc<TrustBundle>> {
        (**self).bundle(td)
    }
}

/// Bundles by trust domain, swapped atomically: readers never block. Static when
/// filled once; kept current when a watcher calls [`BundleSet::set`].
#[derive(Debug, Default)]
pub struct BundleSet {
    map: ArcSwap<HashMap<String, Arc<TrustBundle>>>,
}

impl BundleSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set holding `bundles`.
    pub fn of(bundles: impl IntoIterator<Item = TrustBundle>) -> Self {
        let s = Self::new();
        for b in bundles {
            s.set(b);
        }
        s
    }

    /// Adds or replaces the bundle of its trust domain.
    pub fn set(&self, bundle: TrustBundle) {
        let bundle = Arc::new(bundle);
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(bundle.trust_domain().to_string(), bundle.clone());
            m
        });
    }

    /// Removes a trust domain's bundle.
    pub fn remove(&self, td: &TrustDomain) {
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(td.as_str());
            m
        });
    }
}

impl BundleSource for BundleSet {
    fn bundle(&self, td: &TrustDomain) -> Option<Arc<TrustBundle>> {
        self.map.load().get(td.as_str()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use serde_json::json;

    #[test]
    fn spiffe_bundle_documents_parse() {
        let ca = TestCa::new("example.org");
        let doc = json!({
            "keys": [
                {"kty": "EC", "crv": "P-256", "use": "x509-svid",
                 "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4", "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
                 "x5c": [base64::engine::general_purpose::STANDARD.encode(&ca.cert_der)]},
                {"kty": "EC", "crv": "P-256", "use": "jwt-svid", "kid": "k1",
                 "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4", "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"},
                {"kty": "EC", "crv": "P-256", "use": "wit-svid", "kid": "w1",
                 "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4", "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"},
            ],
            "spiffe_sequence": 3,
            "spiffe_refresh_hint": 300,
        });
        let td = TrustDomain::new("example.org").unwrap();
        let b = TrustBundle::from_spiffe_json(td.clone(), doc.to_string().as_bytes()).unwrap();
        assert_eq!(b.x509.authorities().len(), 1);
        assert_eq!(b.jwt.kids().collect::<Vec<_>>(), ["k1"]);
        assert_eq!(b.sequence, Some(3));
        assert_eq!(b.refresh_hint, Some(Duration::from_secs(300)));
        let set = BundleSet::of([b]);
        assert!(set.bundle(&td).is_some());
        assert!(set.bundle(&TrustDomain::new("other.org").unwrap()).is_none());
        set.remove(&td);
        assert!(set.bundle(&td).is_none());
        let mut bad = doc.clone();
        bad["keys"][0]["x5c"] = json!([]);
        assert_eq!(
            TrustBundle::from_spiffe_json(td, bad.to_string().as_bytes()).unwrap_err(),
            BundleError::BadX509Key
        );
    }
}
