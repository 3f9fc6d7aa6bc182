//! Trust bundles kept fresh from the SPIFFE Workload API (feature `workload-api`),
//! through the `spiffe` crate's `X509Source` and `JwtSource`: every trust domain the
//! agent sends, X.509 authorities and JWT keys together, updated whenever the agent
//! pushes a change.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferrid_validate::workload_api::WorkloadApiError> {
//! use std::sync::Arc;
//! use ferrid_validate::BundleSet;
//! use ferrid_validate::workload_api::WorkloadApiBundles;
//!
//! let bundles = Arc::new(BundleSet::new());
//! // None: the endpoint in SPIFFE_ENDPOINT_SOCKET.
//! let wl = WorkloadApiBundles::start(None, bundles.clone()).await?;
//! // `bundles` now holds every trust domain's bundle and follows updates until `wl` is dropped;
//! // pass it to the rustls verifiers, the tower layer or a revocation feed.
//! # drop(wl); Ok(()) }
//! ```
use std::sync::Arc;

use spiffe::{JwtSource, X509Source};

use crate::bundle::{BundleSet, TrustBundle};
use crate::keys::JwtKeySet;
use crate::x509::X509Bundle;

/// Why the Workload API could not provide bundles.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadApiError {
    /// Connecting to the Workload API or reading from it failed.
    #[error("workload API: {0}")]
    Source(String),
    /// The agent sent a bundle that does not validate.
    #[error("bundle of {trust_domain}: {reason}")]
    Bundle {
        /// The trust domain.
        trust_domain: String,
        /// What is wrong.
        reason: String,
    },
}

/// The Workload API's bundles, written into a [`BundleSet`] and kept current until this
/// is dropped.
pub struct WorkloadApiBundles {
    x509: X509Source,
    jwt: JwtSource,
    set: Arc<BundleSet>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for WorkloadApiBundles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadApiBundles").finish_non_exhaustive()
    }
}

impl Drop for WorkloadApiBundles {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl WorkloadApiBundles {
    /// Connects to `endpoint` (`unix:///…`; `None`: `SPIFFE_ENDPOINT_SOCKET`), writes every
    /// trust domain's bundle into `set`, and follows X.509 and JWT bundle updates.
    pub async fn start(endpoint: Option<&str>, set: Arc<BundleSet>) -> Result<Self, WorkloadApiError> {
        let err = |e: &dyn std::fmt::Display| WorkloadApiError::Source(e.to_string());
        let (x509, jwt) = match endpoint {
            Some(ep) => (
                X509Source::builder().endpoint(ep).build().await.map_err(|e| err(&e))?,
                JwtSource::builder().endpoint(ep).build().await.map_err(|e| err(&e))?,
            ),
            None => {
                (X509Source::new().await.map_err(|e| err(&e))?, JwtSource::new().await.map_err(|e| err(&e))?)
            }
        };
        refresh(&x509, &jwt, &set)?;
        let mut tasks = Vec::new();
        {
            let (x, j, s) = (x509.clone(), jwt.clone(), set.clone());
            tasks.push(tokio::spawn(async move {
                let mut updates = x.updated();
                while updates.changed().await.is_ok() {
                    if let Err(e) = refresh(&x, &j, &s) {
                        tracing::warn!(error = %e, "refused a bundle update from the Workload API");
                    }
                }
            }));
        }
        {
            let (x, j, s) = (x509.clone(), jwt.clone(), set.clone());
            tasks.push(tokio::spawn(async move {
                let mut updates = j.updated();
                while updates.changed().await.is_ok() {
                    if let Err(e) = refresh(&x, &j, &s) {
                        tracing::warn!(error = %e, "refused a bundle update from the Workload API");
                    }
                }
            }));
        }
        Ok(Self { x509, jwt, set, tasks })
    }

    /// The set being kept current.
    pub fn bundles(&self) -> Arc<BundleSet> {
        self.set.clone()
    }

    /// The X.509 source (the caller's own X.509-SVID, for a [`crate::tls::SvidResolver`]).
    pub fn x509_source(&self) -> &X509Source {
        &self.x509
    }

    /// The JWT source.
    pub fn jwt_source(&self) -> &JwtSource {
        &self.jwt
    }
}

/// Writes the current bundle of every trust domain the X.509 source knows into `set`,
/// with that trust domain's JWT keys from the JWT source. Returns how many.
pub fn refresh(x509: &X509Source, jwt: &JwtSource, set: &BundleSet) -> Result<usize, WorkloadApiError> {
    let xs = x509.bundle_set().map_err(|e| WorkloadApiError::Source(e.to_string()))?;
    let mut n = 0;
    for (td, xb) in xs.iter() {
        let bad = |reason: String| WorkloadApiError::Bundle { trust_domain: td.to_string(), reason };
        let authorities = xb.authorities().iter().map(|c| c.as_bytes().to_vec()).collect();
        let mut keys = JwtKeySet::new();
        if let Some(jb) = jwt.try_bundle_for_trust_domain(td) {
            for a in jb.jwt_authorities() {
                let jwk: serde_json::Value =
                    serde_json::from_slice(a.jwk_json()).map_err(|e| bad(format!("JWT key: {e}")))?;
                keys.insert_jwk(&jwk).map_err(|e| bad(format!("JWT key: {e}")))?;
            }
        }
        let x = X509Bundle::new(td.clone(), authorities).map_err(|e| bad(e.to_string()))?;
        set.set(TrustBundle::new(x, keys));
        n += 1;
    }
    Ok(n)
}
